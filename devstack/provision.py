"""Creates, in the AWS emulator, what the system needs: the send queue and its
dead-letter queue (redrive policy), the ledger table (failed index, TTL), and an IAM
user whose key the edge signs with. The emulator checks that user's signatures and
policy, so a wrong key or a missing permission really fails."""

import json
from dataclasses import dataclass

import boto3

REGION = "us-east-1"
# The emulator's root key: never signature-checked, used only to set things up.
ROOT = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": REGION}
# After this many receives without a delete, SQS moves a message to the DLQ: only
# messages that crash the worker over and over.
MAX_RECEIVES = 5
FAILED_INDEX = "failed-index"


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


def provision(endpoint: str, prefix: str = "onlyfans", user: str = "edge") -> Resources:
    sqs = client("sqs", endpoint)
    dlq_url = sqs.create_queue(QueueName=f"{prefix}-messages-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"{prefix}-messages",
        Attributes={
            "VisibilityTimeout": "60",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    table = f"{prefix}-message-ledger"
    ddb = client("dynamodb", endpoint)
    ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "creatorId", "AttributeType": "S"},
            {"AttributeName": "messageId", "AttributeType": "S"},
            {"AttributeName": "failedKey", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "creatorId", "KeyType": "HASH"}, {"AttributeName": "messageId", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": FAILED_INDEX,
                "KeySchema": [{"AttributeName": "creatorId", "KeyType": "HASH"}, {"AttributeName": "failedKey", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    table_arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]

    iam = client("iam", endpoint)
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            # AWS authorizes SendMessageBatch as sqs:SendMessage; the emulator asks for
            # the batch action by its own name, so both are listed.
            {"Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:SendMessageBatch", "sqs:GetQueueAttributes"], "Resource": [queue_arn, dlq_arn]},
            {
                "Effect": "Allow",
                "Action": [
                    "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:DeleteItem",
                    "dynamodb:Query", "dynamodb:BatchWriteItem",
                ],
                "Resource": [table_arn, f"{table_arn}/index/*"],
            },
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName=f"{user}-messaging", PolicyDocument=json.dumps(policy))

    worker = f"{prefix}-worker"
    iam.create_user(UserName=worker)
    worker_key = iam.create_access_key(UserName=worker)["AccessKey"]
    worker_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    # SendMessageBatch: AWS authorizes it as sqs:SendMessage, the emulator
                    # by its own name (as for the edge above).
                    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteMessageBatch", "sqs:SendMessage",
                    "sqs:SendMessageBatch", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility",
                ],
                "Resource": [queue_arn, dlq_arn],
            },
            {
                "Effect": "Allow",
                "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"],
                "Resource": [table_arn, f"{table_arn}/index/*"],
            },
            {"Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*"},
        ],
    }
    iam.put_user_policy(UserName=worker, PolicyName=f"{worker}-messaging", PolicyDocument=json.dumps(worker_policy))
    return Resources(endpoint, queue_url, dlq_url, table, key["AccessKeyId"], key["SecretAccessKey"],
                     worker_key["AccessKeyId"], worker_key["SecretAccessKey"])
