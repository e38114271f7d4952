"""The infrastructure code against the emulator: the CloudFormation template (linted,
deployed whole, read back), the deploy command end to end (a message sent through an
edge and a worker configured from the stack's outputs, delivered), every alarm and
dashboard widget checked against the metrics the worker really published, the worker
image built here and run as its task definition says, and the edge's production
environment through `wrangler deploy --dry-run`."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from harness import own_emulator, Edge, LOGS, token, wait_for
from devstack import provision as prov
from devstack import stack

ROOT = stack.ROOT
TEMPLATE = ROOT / "deploy" / "template.yaml"
NAMESPACE = "Huntaze/OnlyFans"

UNUSED_GATEWAY = "http://127.0.0.1:9/unused/{accountId}/{recipientId}"  # a worker that never gets to send


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) read as plain values."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode)
    else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node)))


def template():
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


class CfnTagged(yaml.SafeLoader):
    """YAML with CloudFormation's short tags kept as their long forms ({"Ref": ..},
    {"Fn::If": [..]}), for reading what a condition chooses."""


CfnTagged.add_multi_constructor("!", lambda loader, suffix, node: {("Ref" if suffix == "Ref" else f"Fn::{suffix}"): (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode)
    else loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node, deep=True))})


def resolved(value, conditions):
    """`value` of the template with each `Fn::If` chosen by `conditions` (name: bool)
    and `AWS::NoValue` left out, as CloudFormation would."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        name, yes, no = value["Fn::If"]
        return resolved(yes if conditions[name] else no, conditions)
    if isinstance(value, dict):
        return {k: resolved(v, conditions) for k, v in value.items() if resolved(v, conditions) != {"Ref": "AWS::NoValue"}}
    if isinstance(value, list):
        return [r for r in (resolved(v, conditions) for v in value) if r != {"Ref": "AWS::NoValue"}]
    return value


def tagged_template():
    return yaml.load(TEMPLATE.read_text(), Loader=CfnTagged)


def worker_settings_known():
    """Every setting the worker reads, from its own --help."""
    out = subprocess.run([str(stack.binary("worker-native")), "--help"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()[0].isupper()} | {"AWS_REGION"}


@pytest.fixture(scope="module")
def emulator_url():
    """An emulator of this module's own (the session's is provisioned already)."""
    yield from own_emulator("deploy-ministack.log")


def test_cfn_lint_finds_no_error():
    out = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True)
    # cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational.
    assert out.returncode & 2 == 0, out.stdout + out.stderr


def test_alarms_reach_their_topic_and_the_dead_letter_alarm_counts_the_queue_itself():
    """What the emulator accepts and AWS would not act on (issue 23): CloudWatch cannot
    publish to a topic encrypted with the AWS-managed SNS key, so no alarm would notify
    anyone; and an alarm on a metric only the worker publishes goes silent (missing
    data, not breaching) when no worker runs, which is when dead letters matter."""
    resources = template()["Resources"]
    key = resources["AlarmTopic"]["Properties"].get("KmsMasterKeyId")
    assert key is None or not str(key).startswith("alias/aws/"), f"the alarm topic's key {key} is one CloudWatch cannot use"
    dlq = resources["DeadLettersAlarm"]["Properties"]
    assert (dlq["Namespace"], dlq["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible"), dlq
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": "DeadLetterQueue.QueueName"}], dlq["Dimensions"]
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert all(a.get("AlarmActions") for a in alarms), "every alarm notifies"


def test_the_task_reads_each_secret_from_its_own_secret_so_that_rotations_work():
    """A secret copied into another at deploy time is never refreshed by CloudFormation:
    rotating the gateway token or the Redis auth token would never reach the workers.
    Each is injected from its source secret when a task starts (issue 23, point 3)."""
    tagged = tagged_template()
    resources = tagged["Resources"]
    [container] = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    for created, given in ((True, True), (False, False)):
        conditions = {"CreateRedis": created, "HasGatewayToken": given}
        secrets = {s["Name"]: s["ValueFrom"] for s in resolved(container["Secrets"], conditions)}
        env = {e["Name"]: e["Value"] for e in resolved(container["Environment"], conditions)}
        if created:
            assert secrets["REDIS_AUTH_TOKEN"] == {"Ref": "RedisAuthToken"} and "REDIS_URL" in env, (secrets, env)
        else:
            assert secrets["REDIS_URL"] == {"Ref": "RedisUrlSecret"} and "REDIS_URL" not in env, (secrets, env)
        assert ("GATEWAY_TOKEN" in secrets) == given and secrets.get("GATEWAY_TOKEN", {"Ref": "GatewayTokenSecretArn"}) == {"Ref": "GatewayTokenSecretArn"}
        readable = resolved(resources["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]["Resource"], conditions)
        assert sorted(map(str, readable)) == sorted(map(str, secrets.values())), "the execution role reads exactly the task's secrets"
    # The one dynamic reference left is the auth token ElastiCache is created with.
    assert TEMPLATE.read_text().count("{{resolve:secretsmanager") == 1
    assert "resolve:secretsmanager" in str(resources["Redis"]["Properties"]["AuthToken"])


def test_networking_redis_eviction_and_first_deploys_as_aws_needs_them():
    """What the emulator accepts either way (issue 23, points 4, 9, 10): tasks without a
    public IP reach the internet only through NAT (said in the parameter, and the
    gateway endpoints spare its per-GB charge); a first create that rolls back leaves no
    table to block the retry; Redis never evicts the schedule's keys, and an alarm says
    when memory runs short; the edge cannot write to the dead-letter queue."""
    doc = template()
    params, resources = doc["Parameters"], doc["Resources"]
    net = resources["Service"]["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert net["AssignPublicIp"] == "AssignPublicIp" and params["AssignPublicIp"]["Default"] == "DISABLED"
    assert "NAT" in params["AssignPublicIp"]["Description"]
    for name, service in (("DynamoDbEndpoint", "dynamodb"), ("S3Endpoint", "s3")):
        endpoint = resources[name]
        assert endpoint["Condition"] == "HasRouteTables" and endpoint["Properties"]["VpcEndpointType"] == "Gateway"
        assert endpoint["Properties"]["ServiceName"].endswith(f".{service}")
    assert resources["LedgerTable"]["DeletionPolicy"] == "RetainExceptOnCreate" and resources["LedgerTable"]["UpdateReplacePolicy"] == "Retain"
    group = resources["RedisParameters"]["Properties"]
    assert group["Properties"] == {"maxmemory-policy": "noeviction"}
    assert resources["Redis"]["Properties"]["CacheParameterGroupName"] == "RedisParameters"
    memory = [resources[n]["Properties"] for n in ("RedisMemoryAlarm", "RedisReplicaMemoryAlarm")]
    assert {(m["Namespace"], m["MetricName"]) for m in memory} == {("AWS/ElastiCache", "DatabaseMemoryUsagePercentage")}
    assert sorted(m["Dimensions"][0]["Value"][-3:] for m in memory) == ["001", "002"], "both nodes: the primary moves on a failover"
    assert all(m["AlarmActions"] and m["Threshold"] <= 90 for m in memory)
    edge = resources["EdgeUser"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    writers = [s["Resource"] for s in edge if "sqs:SendMessage" in s["Action"]]
    assert writers == ["SendQueue.Arn"], writers
    assert params["WorkerArchitecture"]["AllowedValues"] == ["X86_64", "ARM64"]
    assert resources["TaskDefinition"]["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "WorkerArchitecture"


def test_a_stack_that_needs_a_network_without_one_is_refused_before_anything_is_created(emulator_url):
    """Redis created (no RedisUrl) without a VpcId: refused by the template's rule at
    once, naming the parameter, rather than half-created and rolled back."""
    cfn = prov.client("cloudformation", emulator_url)
    with pytest.raises(Exception) as refused:
        prov.deploy.deploy_stack(cfn, "nonet", {"EnvironmentName": "nonet", "GatewayUrl": "https://g.example/{accountId}/{recipientId}"}, say=lambda _: None)
    assert "VpcId" in str(refused.value), refused.value
    assert not [s for s in cfn.list_stacks()["StackSummaries"] if s["StackName"] == "nonet" and s["StackStatus"] != "DELETE_COMPLETE"]


def test_the_runbooks_fixed_cost_counts_every_part_and_is_the_scripts():
    """The fixed monthly cost is counted from the template and the price table, not
    typed (issue 23): the runbook's table is what `bench/fixed_cost.py` prints, and it
    counts what a real deployment pays (the NAT gateways, Container Insights, the
    secrets, the logs) besides tasks and Redis."""
    printed = subprocess.run([sys.executable, str(ROOT / "bench" / "fixed_cost.py")], capture_output=True, text=True, check=True).stdout.strip()
    runbook = (ROOT / "deploy" / "README.md").read_text()
    shown = runbook.split("<!-- fixed-cost:begin -->\n", 1)[1].split("\n<!-- fixed-cost:end -->", 1)[0].strip()
    assert shown == printed, "regenerate the runbook's table: python bench/fixed_cost.py"
    header = printed.splitlines()[0]
    for part in ("Fargate", "ElastiCache", "NAT gateways", "Secrets Manager", "custom metrics", "Container Insights", "alarms"):
        assert part in header, part
    alarms = [k for k, v in template()["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"]
    assert "logs" in printed and f"{len(alarms)} alarm metrics" in printed, "each of the template's alarms counted"


def test_the_redrive_procedure_names_its_destination():
    """The worker moves unreadable bodies to the DLQ itself: SQS knows no source queue
    for them, so a move task without a destination fails for them (issue 23, point 8;
    the emulator has no move tasks). And `RedriveAllowPolicy` limits which queues may
    use the DLQ, not move tasks."""
    runbook = (ROOT / "deploy" / "README.md").read_text()
    section = runbook.split("## Redriving the dead-letter queue", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in section.splitlines() if line.startswith("aws sqs start-message-move-task")]
    assert commands and all("--destination-arn" in c for c in commands), commands
    assert "it does not limit\nmove tasks" in section or "does not limit move tasks" in " ".join(section.split())
    # The worker does send to the DLQ itself (what makes the destination necessary).
    assert "sqs:SendMessage" in str(template()["Resources"]["WorkerPolicy"]["Properties"]["PolicyDocument"])


def test_the_whole_stack_deploys_and_reads_back_as_the_worker_needs(emulator_url):
    """With workers on ECS and Redis created: every resource, read back from the emulator."""
    ec2 = prov.client("ec2", emulator_url)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    routes = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    stack.record_secret("gw-s3cret")
    token_arn = prov.client("secretsmanager", emulator_url).create_secret(Name="full/gateway-token", SecretString="gw-s3cret")["ARN"]
    started = time.monotonic()
    outputs = prov.deploy.deploy_stack(prov.client("cloudformation", emulator_url), "full", {
        "EnvironmentName": "full", "WorkerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/worker-native:1", "DesiredWorkers": 0,
        "GatewayUrl": "https://gateway.example.com/{accountId}/{recipientId}", "GatewayTokenSecretArn": token_arn,
        "VpcId": vpc, "SubnetIds": ",".join(subnets), "PrivateRouteTableIds": routes, "AlarmEmail": "ops@example.com"}, say=lambda _: None)
    seconds = time.monotonic() - started
    LOGS.joinpath("figures.jsonl").open("a").write(json.dumps({"test": "template_deploy", "seconds": round(seconds, 2)}) + "\n")

    sqs = prov.client("sqs", emulator_url)
    q = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["All"])["Attributes"]
    # Visibility above the worker's default lease (GATEWAY_TIMEOUT 10 s + 20 s).
    assert int(q["VisibilityTimeout"]) > 30 and q["ReceiveMessageWaitTimeSeconds"] == "20" and q["SqsManagedSseEnabled"] == "true"
    assert json.loads(q["RedrivePolicy"]) == {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": 5}
    assert dlq["MessageRetentionPeriod"] == str(14 * 86400) and json.loads(dlq["RedriveAllowPolicy"])["sourceQueueArns"] == [q["QueueArn"]]

    table = prov.client("dynamodb", emulator_url).describe_table(TableName=outputs["LedgerTableName"])["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["creatorId", "messageId"]
    indexes = {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]] for i in table["GlobalSecondaryIndexes"]}
    assert indexes == {"failed-index": ["creatorId", "failedKey"], "waiting-index": ["waitShard", "messageId"]}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    declared = template()["Resources"]["LedgerTable"]
    assert declared["DeletionPolicy"] == "RetainExceptOnCreate" and declared["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
    assert declared["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}  # the attribute the edge writes

    redis = prov.client("elasticache", emulator_url).describe_replication_groups()["ReplicationGroups"]
    [group] = [g for g in redis if "full" in g.get("Description", "") or "full" in g["ReplicationGroupId"]]
    assert group["AutomaticFailover"] == "enabled" and group["TransitEncryptionEnabled"] and group["AtRestEncryptionEnabled"]
    assert group.get("Engine", "valkey") == "valkey", group
    elasticache = prov.client("elasticache", emulator_url)
    [member] = elasticache.describe_cache_clusters(CacheClusterId=group["MemberClusters"][0])["CacheClusters"]
    parameters = elasticache.describe_cache_parameters(CacheParameterGroupName=member["CacheParameterGroup"]["CacheParameterGroupName"])["Parameters"]
    assert {p["ParameterName"]: p.get("ParameterValue") for p in parameters}["maxmemory-policy"] == "noeviction"
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
    assert sorted(e["ServiceName"].rsplit(".", 1)[1] for e in endpoints) == ["dynamodb", "s3"] and all(e["RouteTableIds"] == [routes] for e in endpoints)

    ecs = prov.client("ecs", emulator_url)
    # The emulator cannot run the service (its tasks need Docker, and it passes a
    # DesiredCount taken from a parameter on as a string): deployed here with
    # DesiredWorkers=0, the task definition alone; the service is checked as declared.
    service = template()["Resources"]["Service"]
    assert service["Condition"] == "RunService" and service["Properties"]["DesiredCount"] == "DesiredWorkers"
    net = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert net["AssignPublicIp"] == "AssignPublicIp" and net["Subnets"] == "SubnetIds"
    assert service["Properties"]["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    task = ecs.describe_task_definition(taskDefinition="full-worker")["taskDefinition"]
    [c] = task["containerDefinitions"]
    env = {e["name"]: e["value"] for e in c["environment"]}
    grace = int(env["SHUTDOWN_GRACE"].rstrip("s"))
    assert c["stopTimeout"] > grace, "ECS must wait for the worker's shutdown grace"
    assert c["user"] == "10001:10001" and task["networkMode"] == "awsvpc" and task["requiresCompatibilities"] == ["FARGATE"]
    assert task["taskRoleArn"] != task["executionRoleArn"]
    assert c["logConfiguration"]["logDriver"] == "awslogs"
    # The emulator reads secrets and the health check back as {}: the template's are checked.
    [declared_container] = template()["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    [tagged_container] = tagged_template()["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    created = {"CreateRedis": True, "HasGatewayToken": True}
    secrets = {s["Name"] for s in resolved(tagged_container["Secrets"], created)}
    assert declared_container["HealthCheck"]["Command"] == ["CMD", "/worker-native", "healthcheck"]
    # Every setting the task gives is one the worker reads (no drift between the two).
    names = set(env) | secrets
    assert names <= worker_settings_known(), names - worker_settings_known()
    assert secrets == {"REDIS_AUTH_TOKEN", "GATEWAY_TOKEN"} and not secrets & set(env)
    assert env["REDIS_URL"].startswith("rediss://") and "@" not in env["REDIS_URL"], "the address alone: the token is a secret of its own"
    assert env["ENVIRONMENT"] == "full" and env["RATE_LIMITER_ENABLED"] == "true"
    assert "gw-s3cret" not in json.dumps(task, default=str), "the token stays in Secrets Manager"

    alarms = {a["AlarmName"] for a in prov.client("cloudwatch", emulator_url).describe_alarms()["MetricAlarms"]}
    assert {f"full-{n}" for n in ("dead-letters", "oldest-message", "failed-messages", "send-latency-p99", "scheduled-backlog", "webhook-backlog")} <= alarms
    workers_alarm = template()["Resources"]["WorkersAlarm"]["Properties"]
    assert (workers_alarm["Namespace"], workers_alarm["MetricName"]) == ("ECS/ContainerInsights", "RunningTaskCount")
    assert [d["Name"] for d in workers_alarm["Dimensions"]] == ["ClusterName", "ServiceName"]


def watched_metrics(cloudwatch, environment):
    """(namespace, name, dimensions) of every alarm of `environment` and every metric of
    its dashboard."""
    out = set()
    for a in cloudwatch.describe_alarms(AlarmNamePrefix=f"{environment}-")["MetricAlarms"]:
        out.add((a["Namespace"], a["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in a["Dimensions"]))))
    body = json.loads(cloudwatch.get_dashboard(DashboardName=f"{environment}-messaging")["DashboardBody"])
    for widget in body["widgets"]:
        for m in widget["properties"]["metrics"]:
            namespace, name, *dims = [part for part in m if not isinstance(part, dict)]  # a trailing dict: the line's options
            out.add((namespace, name, tuple(sorted(zip(dims[::2], dims[1::2])))))
    return out


def test_deploy_command_end_to_end_and_no_alarm_watches_an_unpublished_metric(emulator_url, tmp_path):
    """scripts/deploy.sh aws against the emulator; an edge and a worker configured from
    what it wrote send a message to delivery; then every alarm and widget must watch a
    metric the worker published with exactly that namespace and dimensions, or an AWS
    metric of this stack's queue."""
    env_name = f"e2e{uuid.uuid4().hex[:6]}"
    edge_vars, worker_env = tmp_path / "edge.vars", tmp_path / "worker.env"
    deploy_env = {**os.environ, "AWS_ENDPOINT_URL": emulator_url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "deploy.sh"), "aws", env_name,
                          "--param", "GatewayUrl=http://127.0.0.1/unused/{accountId}/{recipientId}", "--param", "RedisUrl=redis://127.0.0.1:6379",
                          "--param", "CreateWorkerUser=true", "--edge-vars", str(edge_vars), "--worker-env", str(worker_env)],
                         capture_output=True, text=True, env=deploy_env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "CREATE_COMPLETE" in run.stdout and "QueueUrl" in run.stdout
    assert oct(edge_vars.stat().st_mode & 0o777) == "0o600" and oct(worker_env.stat().st_mode & 0o777) == "0o600"
    edge_settings, worker_settings = stack.read_vars(edge_vars), stack.read_vars(worker_env)
    stack.record_secrets(edge_settings)  # the keys the deploy command made
    stack.record_secrets(worker_settings)
    assert edge_settings["AWS_SECRET_ACCESS_KEY"] not in run.stdout + run.stderr, "no secret printed"
    iam = prov.client("iam", emulator_url)
    for user, worker in ((f"{env_name}-edge", False), (f"{env_name}-worker", True)):
        iam.put_user_policy(UserName=user, PolicyName="emulator-gaps", PolicyDocument=prov.emulator_gaps(worker))
    prov.client("dynamodb", emulator_url).update_time_to_live(TableName=edge_settings["LEDGER_TABLE"], TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})

    parts = []
    try:
        redis_port, gw_port, health = stack.free_port(), stack.free_port(), stack.free_port()
        parts.append(stack.start_redis(redis_port, LOGS / "deploy-redis.log"))
        parts.append(stack.start_gateway_stub(gw_port, LOGS / "deploy-gateway.log"))
        gateway = f"http://127.0.0.1:{gw_port}"
        parts.append(stack.start_worker({**worker_settings, "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "METRICS_INTERVAL": "1s",
                                         "GATEWAY_URL": f"{gateway}/accounts/{{accountId}}/messages/{{recipientId}}", "SQS_WAIT_SECONDS": "1"},
                                        LOGS / "deploy-worker.log", health))
        vars_file = LOGS / "deploy-edge.vars"
        stack.write_vars(vars_file, {**edge_settings, "JWT_SECRET": "deploy-secret-0123456789abcdef0123456789"})
        edge_port = stack.free_port()
        parts.append(stack.start_edge(edge_port, vars_file, LOGS / "deploy-edge.log"))
        edge = Edge(f"http://127.0.0.1:{edge_port}")
        account = f"deployed-{uuid.uuid4().hex[:6]}"
        r = edge.call("POST", "/send", token(account, secret="deploy-secret-0123456789abcdef0123456789"), {"recipientId": "fan-1", "content": "hi"})
        assert r.status_code == 202, r.text
        mid = r.json()["messageId"]
        wait_for(lambda: any(d["messageId"] == mid for d in requests.get(gateway + "/deliveries", timeout=5).json()), 30, "delivered")
        cloudwatch = prov.client("cloudwatch", emulator_url)
        ours = lambda: {(m["Namespace"], m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
                        for m in cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"]}
        wait_for(lambda: len([m for m in ours() if ("Environment", env_name) in m[2]]) >= 8, 20, "the worker's metrics flushed")
    finally:
        for p in reversed(parts):
            p.stop()
    # An update names only what changes; the other parameters keep their values.
    again = subprocess.run(["bash", str(ROOT / "scripts" / "deploy.sh"), "aws", env_name, "--param", "RateLimitMax=20"],
                           capture_output=True, text=True, env=deploy_env)
    assert again.returncode == 0, again.stdout + again.stderr
    params = {p["ParameterKey"]: p["ParameterValue"] for p in prov.client("cloudformation", emulator_url).describe_stacks(StackName=env_name)["Stacks"][0]["Parameters"]}
    assert params["RateLimitMax"] == "20" and params["GatewayUrl"] == "http://127.0.0.1/unused/{accountId}/{recipientId}"
    # The edge side from the same outputs (dry run: no Cloudflare account here).
    edge_run = subprocess.run(["bash", str(ROOT / "scripts" / "deploy.sh"), "edge", "production", "--stack", env_name, "--dry-run"],
                              capture_output=True, text=True, env={**deploy_env, "EDGE_SKIP_BUILD": "1"})
    assert edge_run.returncode == 0, edge_run.stdout + edge_run.stderr
    assert "wrangler secret bulk --env production" in edge_run.stdout and "secret put" not in edge_run.stdout, "both key parts in one version"
    for name in ("SQS_RATE_LIMITER_QUEUE_URL", "SQS_RATE_LIMITER_DLQ_URL", "LEDGER_TABLE", "AWS_REGION"):
        assert f"env.{name} " in edge_run.stdout, f"{name} not given to the edge"
    assert "--dry-run: exiting now" in edge_run.stdout
    published = ours()
    watched = watched_metrics(cloudwatch, env_name)
    assert watched, "alarms and dashboard read back"
    queues = {edge_settings[k].rsplit("/", 1)[1] for k in ("SQS_RATE_LIMITER_QUEUE_URL", "SQS_RATE_LIMITER_DLQ_URL")}
    for namespace, name, dims in watched:
        if namespace == NAMESPACE:
            assert (namespace, name, dims) in published, f"{name} {dims} is watched but never published"
        elif namespace == "AWS/SQS":
            assert len(dims) == 1 and dims[0][0] == "QueueName" and dims[0][1] in queues, (name, dims)
        else:
            pytest.fail(f"{namespace} {name}: a metric no test can check")  # ECS alarms exist only with workers on ECS


def test_the_worker_image_runs_as_its_task_definition_says(emulator_url, tmp_path):
    """Built here without Docker (deploy/image.py), unpacked by an independent OCI tool
    (umoci), then run from its own root file system as its own user: ready, healthy by
    its own health check command, and exit 0 on SIGTERM."""
    out = tmp_path / "image"
    built = subprocess.run([sys.executable, str(ROOT / "deploy" / "image.py"), "--binary", str(stack.binary("worker-native")),
                            "--out", str(out), "--tag", "test"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    bundle = tmp_path / "bundle"
    unpacked = subprocess.run(["umoci", "unpack", "--image", f"{out}:test", str(bundle)], capture_output=True, text=True)
    assert unpacked.returncode == 0, unpacked.stderr
    spec = json.loads((bundle / "config.json").read_text())
    [declared] = template()["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    uid, gid = (int(x) for x in declared["User"].split(":"))
    assert (spec["process"]["user"]["uid"], spec["process"]["user"]["gid"]) == (uid, gid)
    assert spec["process"]["args"] == ["/worker-native"]
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((out / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())["config"]
    assert config["Healthcheck"]["Test"] == declared["HealthCheck"]["Command"]
    assert config["StopSignal"] == "SIGTERM" and config["User"] == declared["User"]
    health_port = int(dict(e.split("=", 1) for e in config["Env"])["HEALTH_PORT"])

    rootfs = bundle / "rootfs"
    assert not (rootfs / "bin" / "sh").exists(), "no shell in the image"
    aws = prov.provision(emulator_url, prefix=f"img{uuid.uuid4().hex[:4]}")
    redis_port = stack.free_port()
    redis = stack.start_redis(redis_port, LOGS / "image-redis.log")
    # As the container runtime would: the image's root, user, entrypoint and environment.
    env = {**dict(e.split("=", 1) for e in config["Env"]), **aws.worker_env(), "RATE_LIMITER_ENABLED": "true",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "SQS_WAIT_SECONDS": "1", "GATEWAY_URL": UNUSED_GATEWAY}
    chroot = [shutil.which("chroot"), f"--userspec={config['User']}", str(rootfs)]
    log = open(LOGS / "image-worker.log", "wb")
    proc = subprocess.Popen([*chroot, *config["Entrypoint"]], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        check = [*chroot, *config["Healthcheck"]["Test"][1:]]
        wait_for(lambda: subprocess.run(check, env={"HEALTH_PORT": str(health_port)}, capture_output=True).returncode == 0, 30,
                 "the image's health check passing")
        assert requests.get(f"http://127.0.0.1:{health_port}/readyz", timeout=5).json() == {"ready": True, "redis": True, "sqs": True}
        # Liveness, not readiness: cut off from Redis (a failover), the worker is not
        # ready but alive, and ECS must not replace it for that.
        redis.stop()
        wait_for(lambda: requests.get(f"http://127.0.0.1:{health_port}/readyz", timeout=5).status_code == 503, 20, "not ready without Redis")
        assert subprocess.run(check, env={"HEALTH_PORT": str(health_port)}, capture_output=True).returncode == 0, "alive without Redis"
        redis = stack.start_redis(redis_port, LOGS / "image-redis-again.log")
        wait_for(lambda: requests.get(f"http://127.0.0.1:{health_port}/readyz", timeout=5).status_code == 200, 30, "ready again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "exit 0 after SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
        redis.stop()
        log.close()
    assert subprocess.run(check, env={"HEALTH_PORT": str(health_port)}, capture_output=True).returncode == 1, "unhealthy once stopped"
    layer = out / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    LOGS.joinpath("figures.jsonl").open("a").write(json.dumps({"test": "worker_image", "layer_gzip_bytes": layer.stat().st_size}) + "\n")
    with tarfile.open(layer) as t:
        assert {"worker-native", "etc/ssl/certs/ca-certificates.crt", "etc/passwd"} <= set(t.getnames())


def test_the_edge_production_environment_builds():
    out = subprocess.run([str(ROOT / "node_modules" / ".bin" / "wrangler"), "deploy", "--dry-run", "--env", "production",
                          "--outdir", str(LOGS / "edge-dry-run")], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "WRANGLER_SEND_METRICS": "false", "EDGE_SKIP_BUILD": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "--dry-run: exiting now" in out.stdout
    assert "production-message-ledger" in out.stdout and "SEND_RATE_LIMITER" in out.stdout


def self_signed_ca_and_server(directory: Path):
    """A CA and a server certificate for localhost and 127.0.0.1, as PEM files."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca")).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(2).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "server.crt").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_the_worker_reaches_redis_over_tls_with_an_auth_token(emulator_url, tmp_path):
    """As the template's ElastiCache (in-transit encryption, auth token): `rediss://`,
    the server's certificate checked against the trusted roots, the token required."""
    self_signed_ca_and_server(tmp_path)
    stack.record_secret("tls-token-123")
    port = stack.free_port()
    redis = stack.Part("redis-tls", ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                                     "--tls-cert-file", str(tmp_path / "server.crt"), "--tls-key-file", str(tmp_path / "server.key"),
                                     "--tls-auth-clients", "no", "--requirepass", "tls-token-123", "--save", "", "--appendonly", "no"],
                       LOGS / "redis-tls.log")
    aws = prov.provision(emulator_url, prefix=f"tls{uuid.uuid4().hex[:4]}")
    base = {**aws.worker_env(), "RATE_LIMITER_ENABLED": "true", "SQS_WAIT_SECONDS": "1", "GATEWAY_URL": UNUSED_GATEWAY}
    try:
        wait_for(lambda: stack.port_taken(port), 10, "Redis listening with TLS")
        # The first as the template gives them: the address in REDIS_URL, the token
        # apart in REDIS_AUTH_TOKEN (injected from its own secret).
        for url, auth, trusted, ready in ((f"rediss://localhost:{port}", {"REDIS_AUTH_TOKEN": "tls-token-123"}, True, True),
                                          (f"rediss://:tls-token-123@localhost:{port}", {}, True, True),
                                          (f"rediss://:wrong-token@localhost:{port}", {}, True, False),
                                          (f"rediss://localhost:{port}", {"REDIS_AUTH_TOKEN": "wrong-token"}, True, False),
                                          (f"rediss://:tls-token-123@localhost:{port}", {}, False, False)):
            health = stack.free_port()
            env = {**base, "REDIS_URL": url, **auth, "HEALTH_PORT": str(health), **({"SSL_CERT_FILE": str(tmp_path / "ca.crt")} if trusted else {})}
            worker = stack.Part("worker-tls", [str(stack.binary("worker-native"))], LOGS / "worker-tls.log", env)
            try:
                worker.wait_http(f"http://127.0.0.1:{health}/healthz", timeout=30)
                got = lambda: requests.get(f"http://127.0.0.1:{health}/readyz", timeout=10).json()["redis"]
                if ready:
                    wait_for(got, 15, "ready over TLS")
                else:
                    time.sleep(2)  # given time to connect, it must still not be ready
                    assert got() is False, (url.split("@")[0].split(":")[-1], trusted)
            finally:
                worker.stop()
    finally:
        redis.stop()
    assert "tls-token-123" not in (LOGS / "worker-tls.log").read_text(), "the token never logged"
