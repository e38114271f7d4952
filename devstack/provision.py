"""Provisions the AWS emulator by deploying `deploy/template.yaml`, the same
CloudFormation template production uses, so every local run and test run exercises it.
Then what the emulator lacks, through the APIs (each said where it is done): the
ledger's TTL, the IAM users' access keys, and the batch SQS actions the emulator
authorizes by their own names. The emulator checks the users' signatures and policies,
so a wrong key or a missing permission really fails."""

import json
from dataclasses import dataclass, field

import boto3

from deploy import deploy
from devstack import stack

REGION = "us-east-1"
# The emulator's root key: never signature-checked, used only to set things up.
ROOT = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": REGION}


@dataclass
class Resources:
    endpoint: str
    queue_url: str
    dlq_url: str
    table: str
    access_key_id: str
    secret_access_key: str
    worker_key_id: str = ""
    worker_secret: str = ""
    outputs: dict = field(default_factory=dict)  # the stack's outputs

    def _settings(self, key_id: str, secret: str) -> dict:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "SQS_RATE_LIMITER_QUEUE_URL": self.queue_url,
            "SQS_RATE_LIMITER_DLQ_URL": self.dlq_url,
            "LEDGER_TABLE": self.table,
        }

    def edge_vars(self) -> dict:
        """The edge's AWS settings (names as in the README's configuration tables)."""
        return self._settings(self.access_key_id, self.secret_access_key)

    def worker_env(self) -> dict:
        """The worker's AWS settings, with its own IAM user."""
        return self._settings(self.worker_key_id, self.worker_secret)


def client(service: str, endpoint: str, **creds):
    return boto3.client(service, endpoint_url=endpoint, **(creds or ROOT))


# What the emulator authorizes differently from AWS, added to the users here and never
# to the template: it asks for the SQS batch calls by their own names (AWS authorizes
# them as the single calls), and it does not evaluate the `cloudwatch:namespace`
# condition that pins the worker's PutMetricData to its namespace (it denies instead).
def emulator_gaps(worker: bool) -> str:
    statements = [{"Effect": "Allow", "Action": ["sqs:SendMessageBatch", "sqs:DeleteMessageBatch"], "Resource": "*"}]
    if worker:
        statements.append({"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def provision(endpoint: str, prefix: str = "onlyfans") -> Resources:
    # The deploy command's own code (keys are made through the API, as it does: the
    # template never holds a key, and the emulator lacks AWS::IAM::AccessKey anyway).
    outputs = deploy.deploy_stack(client("cloudformation", endpoint), prefix, {
        "EnvironmentName": prefix,
        # The local parts are not AWS resources: Redis and the gateway are given to the
        # worker by its own settings, and no ECS service runs here.
        "GatewayUrl": "http://127.0.0.1/unused/{accountId}/{recipientId}",
        "RedisUrl": "redis://127.0.0.1:6379",
        "CreateWorkerUser": "true",
    }, say=lambda _: None)
    ddb = client("dynamodb", endpoint)
    # The emulator ignores the template's TimeToLiveSpecification.
    ddb.update_time_to_live(TableName=outputs["LedgerTableName"], TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    iam = client("iam", endpoint)
    keys = {}
    for user in (outputs["EdgeUserName"], outputs["WorkerUserName"]):
        iam.put_user_policy(UserName=user, PolicyName="emulator-gaps", PolicyDocument=emulator_gaps(worker=user == outputs["WorkerUserName"]))
        keys[user] = deploy.new_key(iam, user)
    edge, worker = keys[outputs["EdgeUserName"]], keys[outputs["WorkerUserName"]]
    stack.record_secret(edge["SecretAccessKey"], worker["SecretAccessKey"])
    return Resources(endpoint, outputs["QueueUrl"], outputs["DeadLetterQueueUrl"], outputs["LedgerTableName"],
                     edge["AccessKeyId"], edge["SecretAccessKey"], worker["AccessKeyId"], worker["SecretAccessKey"], outputs)
