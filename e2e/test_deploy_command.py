"""The deploy command where production differs from the emulator's happy path (issue 23):
the edge's key rotated in one Worker version with no window where the edge holds a key
id without its secret, old keys deactivated before they are deleted, and an aborted
rotation never costing the key the edge signs with; a failed first create
(ROLLBACK_COMPLETE) retried; a stack deleted with its users' keys; the worker image
labelled with the architecture of what it packs.

Real wrangler cannot reach Cloudflare here: the command is pointed (WRANGLER) at a
stand-in that records its arguments and stdin and answers as wrangler does. AWS is the
emulator, which checks signatures and refuses an inactive key. It does not track key
use (get_access_key_last_used says "never used" of every key): where the decision
depends on it, the test gives the command IAM's answer as AWS would."""

import json
import os
import platform
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.exceptions import ClientError

from harness import own_emulator, LOGS
from devstack import provision as prov
from devstack import stack

ROOT = stack.ROOT
DEPLOY = ["bash", str(ROOT / "scripts" / "deploy.sh")]
NO_NETWORK = {"GatewayUrl": "http://127.0.0.1/unused/{accountId}/{recipientId}", "RedisUrl": "redis://127.0.0.1:6379"}

STANDIN = '''
"""Stands in for wrangler: records argv and (for `secret`) stdin, answers as wrangler 4 does."""
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if args[:1] == ["secret"] else None
with open(os.environ["WRANGLER_RECORD"], "a") as f:
    f.write(json.dumps({"argv": args, "stdin": stdin}) + "\\n")
if os.environ.get("WRANGLER_FAIL") and " ".join(args).startswith(os.environ["WRANGLER_FAIL"]):
    print("X [ERROR] A request to the Cloudflare API failed. Authentication error [code: 10000]", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["secret", "bulk"]:
    secrets = json.loads(stdin)
    for name in secrets:
        print(f"Successfully created secret for key: {name}")
    print(f"{len(secrets)} secrets successfully uploaded")
'''


@pytest.fixture(scope="module")
def emulator_url():
    """An emulator of this module's own."""
    yield from own_emulator("deploy-command-ministack.log")


@pytest.fixture
def deploy_command(emulator_url, tmp_path):
    """Runs scripts/deploy.sh against the emulator with the wrangler stand-in; returns
    the run and the wrangler calls it made ({"argv", "stdin"})."""
    standin = tmp_path / "wrangler"
    standin.write_text(f"#!{sys.executable}\n{STANDIN}")
    standin.chmod(0o755)

    def run(*args, **env):
        record = tmp_path / f"wrangler-{uuid.uuid4().hex[:6]}.jsonl"
        full = {**os.environ, "AWS_ENDPOINT_URL": emulator_url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1", "WRANGLER": str(standin), "WRANGLER_RECORD": str(record)}
        full.pop("JWT_SECRET", None)
        done = subprocess.run([*DEPLOY, *args], capture_output=True, text=True, env={**full, **env}, stdin=subprocess.DEVNULL, timeout=600)
        calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
        for call in calls:  # test_secrets.py checks that no log holds them
            if call["argv"][:2] == ["secret", "bulk"]:
                stack.record_secrets(json.loads(call["stdin"]))
            elif call["stdin"]:
                stack.record_secret(call["stdin"])  # `secret put`: the value alone
        return done, calls

    return run


def new_stack(emulator_url, prefix: str, **params) -> dict:
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    outputs = prov.deploy.deploy_stack(prov.client("cloudformation", emulator_url), name,
                                       {"EnvironmentName": name, **NO_NETWORK, **params}, say=lambda _: None)
    return {"name": name, **outputs}


def keys_of(emulator_url, user: str) -> dict:
    """{key id: status} of the user, as IAM says."""
    return {k["AccessKeyId"]: k["Status"] for k in prov.client("iam", emulator_url).list_access_keys(UserName=user)["AccessKeyMetadata"]}


def signs(emulator_url, key_id: str, secret: str, queue_url: str) -> str:
    """The emulator's answer to a call signed with the key: ok, or its error code."""
    sqs = boto3.client("sqs", endpoint_url=emulator_url, region_name="us-east-1", aws_access_key_id=key_id, aws_secret_access_key=secret)
    try:
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


def uploaded(calls) -> dict:
    """The secrets of the run's one `wrangler secret bulk`, after checking it made no other
    secret call."""
    secret_calls = [c for c in calls if c["argv"][:1] == ["secret"]]
    assert [c["argv"][:2] for c in secret_calls] == [["secret", "bulk"]], [c["argv"] for c in calls]
    return json.loads(secret_calls[0]["stdin"])


def test_the_edge_key_rotates_in_one_version_and_the_old_key_is_deactivated_then_deleted(emulator_url, deploy_command):
    """`secret put` per secret deployed a version with the new key id and the old
    secret. Now: one `secret bulk` with both parts (and JWT_SECRET), before the code's
    deploy; the key signs; the older key is deactivated (refused, still listed), and
    deleted by the run after."""
    s = new_stack(emulator_url, "rot")
    user = s["EdgeUserName"]

    first, calls = deploy_command("edge", "production", "--stack", s["name"], JWT_SECRET="rotation-jwt-0123456789abcdef0123456789")
    assert first.returncode == 0, first.stdout + first.stderr
    secrets = uploaded(calls)
    assert set(secrets) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "JWT_SECRET"}, "both key parts and JWT_SECRET in one version"
    bulk = next(c for c in calls if c["argv"][:2] == ["secret", "bulk"])
    assert bulk["argv"][2:] == ["--env", "production"], "the secrets on stdin, never on the command line"
    assert [c["argv"][0] for c in calls] == ["secret", "deploy"], "uploaded before the code is deployed"
    deploy_vars = calls[1]["argv"]
    assert deploy_vars[:3] == ["deploy", "--env", "production"] and f"SQS_RATE_LIMITER_QUEUE_URL:{s['QueueUrl']}" in deploy_vars
    k1 = secrets["AWS_ACCESS_KEY_ID"]
    assert keys_of(emulator_url, user) == {k1: "Active"}
    assert signs(emulator_url, k1, secrets["AWS_SECRET_ACCESS_KEY"], s["QueueUrl"]) == "ok", "the uploaded key signs a real call"
    for value in secrets.values():
        if value != k1:
            assert value not in first.stdout + first.stderr, "no secret printed"

    second, calls = deploy_command("edge", "production", "--stack", s["name"])
    assert second.returncode == 0, second.stdout + second.stderr
    rotated = uploaded(calls)
    k2 = rotated["AWS_ACCESS_KEY_ID"]
    assert set(rotated) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} and k2 != k1
    assert keys_of(emulator_url, user) == {k1: "Inactive", k2: "Active"}, "the old key deactivated, not deleted"
    assert signs(emulator_url, k1, secrets["AWS_SECRET_ACCESS_KEY"], s["QueueUrl"]) == "InvalidClientTokenId"
    assert signs(emulator_url, k2, rotated["AWS_SECRET_ACCESS_KEY"], s["QueueUrl"]) == "ok"
    assert k1 in second.stdout and "deactivated" in second.stdout

    third, calls = deploy_command("edge", "production", "--stack", s["name"])
    assert third.returncode == 0, third.stdout + third.stderr
    k3 = uploaded(calls)["AWS_ACCESS_KEY_ID"]
    assert keys_of(emulator_url, user) == {k2: "Inactive", k3: "Active"}, "the key inactive at the start of the run is deleted"
    assert f"deleted key {k1}" in third.stdout


def test_an_aborted_rotation_never_deletes_the_key_the_edge_signs_with(emulator_url, deploy_command, tmp_path):
    """Aborted after its key was made (here: wrangler fails on the upload): the edge
    still signs with the old key, and the next run (edge, or aws --edge-vars) must not
    delete it. The emulator says neither key was ever used, so IAM cannot tell them
    apart: the command stops, names both, deletes neither; the operator's way out
    (deactivate the unused one) then works."""
    s = new_stack(emulator_url, "abo")
    user = s["EdgeUserName"]
    first, calls = deploy_command("edge", "production", "--stack", s["name"])
    assert first.returncode == 0, first.stdout + first.stderr
    deployed = uploaded(calls)
    k1 = deployed["AWS_ACCESS_KEY_ID"]

    aborted, calls = deploy_command("edge", "production", "--stack", s["name"], WRANGLER_FAIL="secret bulk")
    assert aborted.returncode != 0
    k2 = json.loads(calls[0]["stdin"])["AWS_ACCESS_KEY_ID"]
    assert "secret bulk failed" in aborted.stderr and k1 in aborted.stderr and k2 in aborted.stderr, aborted.stderr
    assert [c["argv"][0] for c in calls] == ["secret"], "no deploy after a failed upload"
    assert keys_of(emulator_url, user) == {k1: "Active", k2: "Active"}, "nothing deactivated: which key is uploaded is not certain"

    again, calls = deploy_command("edge", "production", "--stack", s["name"])
    assert again.returncode != 0 and not calls, again.stdout + again.stderr
    assert k1 in again.stderr and k2 in again.stderr and "update-access-key" in again.stderr, again.stderr
    vars_file = tmp_path / "edge.vars"
    via_aws, _ = deploy_command("aws", s["name"], "--edge-vars", str(vars_file))
    assert via_aws.returncode != 0 and k1 in via_aws.stderr, via_aws.stdout + via_aws.stderr
    assert not vars_file.exists()
    assert keys_of(emulator_url, user) == {k1: "Active", k2: "Active"}, "neither key deleted"
    assert signs(emulator_url, k1, deployed["AWS_SECRET_ACCESS_KEY"], s["QueueUrl"]) == "ok", "the edge's key still signs"

    # The way out the message gives: deactivate the key not in use, run again.
    prov.client("iam", emulator_url).update_access_key(UserName=user, AccessKeyId=k2, Status="Inactive")
    fixed, calls = deploy_command("edge", "production", "--stack", s["name"])
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    k3 = uploaded(calls)["AWS_ACCESS_KEY_ID"]
    assert keys_of(emulator_url, user) == {k1: "Inactive", k3: "Active"}


class IamAsAws:
    """The emulator's IAM, with get_access_key_last_used answering as AWS does for keys
    that signed requests (the emulator tracks no use)."""

    def __init__(self, iam, used: set, aged: frozenset = frozenset()):
        self.iam, self.used, self.aged = iam, used, aged

    def __getattr__(self, name):
        return getattr(self.iam, name)

    def list_access_keys(self, **kw):
        """The keys, those in `aged` created two days ago (a run aborted yesterday)."""
        answer = self.iam.list_access_keys(**kw)
        for k in answer["AccessKeyMetadata"]:
            if k["AccessKeyId"] in self.aged:
                k["CreateDate"] = datetime.now(timezone.utc) - timedelta(days=2)
        return answer

    def get_access_key_last_used(self, AccessKeyId):
        answer = self.iam.get_access_key_last_used(AccessKeyId=AccessKeyId)
        if AccessKeyId in self.used and "LastUsedDate" not in answer["AccessKeyLastUsed"]:
            answer["AccessKeyLastUsed"].update(LastUsedDate=datetime.now(timezone.utc), ServiceName="sqs", Region="us-east-1")
        return answer


def test_of_two_active_keys_the_one_iam_says_was_never_used_is_the_one_deleted(emulator_url):
    """The key-making step the edge and `aws --edge-vars` share, on IAM's answers: the
    deployed key signed requests, the aborted run's never did. The old rule deleted the
    oldest key, which is the deployed one."""
    s = new_stack(emulator_url, "dec")
    user, iam = s["EdgeUserName"], prov.client("iam", emulator_url)
    deployed = iam.create_access_key(UserName=user)["AccessKey"]
    stack.record_secret(deployed["SecretAccessKey"])
    assert signs(emulator_url, deployed["AccessKeyId"], deployed["SecretAccessKey"], s["QueueUrl"]) == "ok"
    reported = "LastUsedDate" in iam.get_access_key_last_used(AccessKeyId=deployed["AccessKeyId"])["AccessKeyLastUsed"]
    aborted = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]  # the aborted run's, never used
    used = set() if reported else {deployed["AccessKeyId"]}

    # Made a moment ago, it may have signed requests IAM has not recorded yet: kept.
    with pytest.raises(Exception) as young:
        prov.deploy.new_key(IamAsAws(iam, used), user)
    assert aborted in str(young.value) and "less than 1 day old" in str(young.value), young.value
    assert keys_of(emulator_url, user) == {deployed["AccessKeyId"]: "Active", aborted: "Active"}

    made = prov.deploy.new_key(IamAsAws(iam, used, frozenset({aborted})), user)
    stack.record_secret(made["SecretAccessKey"])
    assert keys_of(emulator_url, user) == {deployed["AccessKeyId"]: "Active", made["AccessKeyId"]: "Active"}, f"{aborted} goes, not the deployed key"

    # Both used: IAM cannot tell which one the edge signs with; nothing is deleted.
    with pytest.raises(Exception) as stopped:
        prov.deploy.new_key(IamAsAws(iam, {deployed["AccessKeyId"], made["AccessKeyId"]}), user)
    assert deployed["AccessKeyId"] in str(stopped.value) and made["AccessKeyId"] in str(stopped.value) and "both have signed requests" in str(stopped.value)
    assert keys_of(emulator_url, user) == {deployed["AccessKeyId"]: "Active", made["AccessKeyId"]: "Active"}


def test_a_failed_first_create_is_deleted_and_created_again(emulator_url, deploy_command):
    """A first create that fails leaves the stack ROLLBACK_COMPLETE, which CloudFormation
    can only delete: the retry deletes it (saying so) and creates the stack."""
    name = f"ret{uuid.uuid4().hex[:6]}"
    # Subnets that do not exist: the Redis subnet group fails, the create rolls back.
    failed, _ = deploy_command("aws", name, "--param", f"GatewayUrl={NO_NETWORK['GatewayUrl']}",
                               "--param", "VpcId=vpc-0000000000000000a", "--param", "SubnetIds=subnet-0000000a,subnet-0000000b")
    assert failed.returncode != 0 and "RedisSubnets" in failed.stderr, failed.stdout + failed.stderr
    cfn = prov.client("cloudformation", emulator_url)
    rolled_back = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert rolled_back["StackStatus"] == "ROLLBACK_COMPLETE"

    retried, _ = deploy_command("aws", name, "--param", f"GatewayUrl={NO_NETWORK['GatewayUrl']}", "--param", f"RedisUrl={NO_NETWORK['RedisUrl']}")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "ROLLBACK_COMPLETE" in retried.stdout and "deleting it to create it again" in retried.stdout
    assert retried.stdout.index("DELETE_COMPLETE") < retried.stdout.index("CREATE_COMPLETE")
    created = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert created["StackStatus"] == "CREATE_COMPLETE" and created["StackId"] != rolled_back["StackId"]


def test_delete_removes_the_users_keys_then_the_stack(emulator_url, deploy_command, tmp_path):
    """IAM refuses to delete a user with access keys, and the stack's deletion would stop
    half-way: `delete` deletes them first (edge and worker users), then the stack."""
    name = f"del{uuid.uuid4().hex[:6]}"
    made, _ = deploy_command("aws", name, "--param", f"GatewayUrl={NO_NETWORK['GatewayUrl']}", "--param", f"RedisUrl={NO_NETWORK['RedisUrl']}",
                             "--param", "CreateWorkerUser=true", "--edge-vars", str(tmp_path / "e.vars"), "--worker-env", str(tmp_path / "w.env"))
    assert made.returncode == 0, made.stdout + made.stderr
    stack.record_secrets(stack.read_vars(tmp_path / "e.vars"))
    stack.record_secrets(stack.read_vars(tmp_path / "w.env"))
    users = (f"{name}-edge", f"{name}-worker")
    keys = {u: keys_of(emulator_url, u) for u in users}
    assert all(len(k) == 1 for k in keys.values()), keys
    cfn, iam = prov.client("cloudformation", emulator_url), prov.client("iam", emulator_url)

    unconfirmed, _ = deploy_command("delete", name)
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr
    assert cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert {u: keys_of(emulator_url, u) for u in users} == keys, "nothing deleted unconfirmed"

    deleted, _ = deploy_command("delete", name, "--yes")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    for user, user_keys in keys.items():
        assert f"deleted key {next(iter(user_keys))} of {user}" in deleted.stdout
        with pytest.raises(ClientError, match="NoSuchEntity"):
            iam.get_user(UserName=user)
    assert "DELETE_COMPLETE after" in deleted.stdout, "the deletion's progress shown"
    with pytest.raises(ClientError, match="does not exist"):
        cfn.describe_stacks(StackName=name)
    table = f"{name}-message-ledger"
    if table in prov.client("dynamodb", emulator_url).list_tables()["TableNames"]:
        assert "LedgerTable" in deleted.stdout, "a retained table is named"


def test_a_stack_whose_deletion_iam_refused_is_deleted_by_the_command(emulator_url, deploy_command):
    """The emulator refuses as IAM does: a plain deletion of a stack whose edge user has
    a key ends DELETE_FAILED, which a deploy cannot update; `delete` finishes it."""
    s = new_stack(emulator_url, "dlf")
    stack.record_secret(prov.client("iam", emulator_url).create_access_key(UserName=s["EdgeUserName"])["AccessKey"]["SecretAccessKey"])
    cfn = prov.client("cloudformation", emulator_url)
    with pytest.raises(Exception, match="must delete access keys first"):
        prov.deploy.delete_and_wait(cfn, cfn.describe_stacks(StackName=s["name"])["Stacks"][0], say=lambda _: None, timeout=60)
    assert cfn.describe_stacks(StackName=s["name"])["Stacks"][0]["StackStatus"] == "DELETE_FAILED"
    retried, _ = deploy_command("aws", s["name"])
    assert retried.returncode != 0 and f"scripts/deploy.sh delete {s['name']}" in retried.stderr, retried.stdout + retried.stderr
    deleted, _ = deploy_command("delete", s["name"], "--yes")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    with pytest.raises(ClientError, match="does not exist"):
        cfn.describe_stacks(StackName=s["name"])

HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())
ELF_MACHINE = {"amd64": 62, "arm64": 183}


def image(binary, out, *args):
    return subprocess.run([sys.executable, str(ROOT / "deploy" / "image.py"), "--binary", str(binary), "--out", str(out), "--tag", "t", *args],
                          capture_output=True, text=True)


def image_arch(out) -> str:
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return json.loads((out / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())["architecture"]


@pytest.mark.skipif(HOST_ARCH is None, reason=f"image.py builds on amd64 and arm64, not {platform.machine()}")
def test_the_image_is_labelled_with_the_architecture_of_the_binary_it_packs(tmp_path):
    """A label that does not match the binary makes a task that cannot start (exec
    format error). Any binary linked with glibc makes an image: this machine's `true`."""
    host_binary = shutil.which("true")
    built = image(host_binary, tmp_path / "default")
    assert built.returncode == 0, built.stderr
    assert image_arch(tmp_path / "default") == HOST_ARCH
    chosen = image(host_binary, tmp_path / "chosen", "--arch", HOST_ARCH)
    assert chosen.returncode == 0 and image_arch(tmp_path / "chosen") == HOST_ARCH, chosen.stderr

    other = next(a for a in ELF_MACHINE if a != HOST_ARCH)
    mislabelled = image(host_binary, tmp_path / "mislabelled", "--arch", other)
    assert mislabelled.returncode != 0 and f"is an {HOST_ARCH} binary, and the image would be {other}" in mislabelled.stderr, mislabelled.stderr
    # A binary built for the other architecture (its ELF header's machine changed).
    foreign = tmp_path / "foreign"
    data = bytearray(open(host_binary, "rb").read())
    data[18:20] = ELF_MACHINE[other].to_bytes(2, "little")
    foreign.write_bytes(data)
    refused = image(foreign, tmp_path / "foreign-image")
    assert refused.returncode != 0 and f"{foreign} is an {other} binary, and the image would be {HOST_ARCH}" in refused.stderr, refused.stderr
    # Its image needs that architecture's libraries, which this machine does not have.
    cross = image(foreign, tmp_path / "cross", "--arch", other)
    assert cross.returncode != 0 and f"build the {other} image on an {other} machine" in cross.stderr, cross.stderr
    assert not (tmp_path / "foreign-image").exists() and not (tmp_path / "cross").exists()


def test_an_update_of_a_stack_made_by_the_earlier_template_keeps_its_redis_and_needs_a_new_image(emulator_url, tmp_path, monkeypatch):
    """A stack made before `RedisEngine` existed: a routine update must not turn its
    Redis OSS into Valkey (a new parameter takes its default; an engine change cannot be
    undone), and, with Redis created and workers on ECS, must bring a worker image that
    reads `REDIS_AUTH_TOKEN` (the old one would connect without the token)."""
    earlier = (ROOT / "deploy" / "template.yaml").read_text()
    start = earlier.index("  RedisEngine:\n")
    earlier = earlier[:start] + earlier[earlier.index("  AssignPublicIp:\n"):]  # the parameter as it was: absent
    earlier = earlier.replace("!Ref RedisEngine", "redis").replace("!FindInMap [RedisEngines, redis, Version]", '"7.0"').replace(
        "!FindInMap [RedisEngines, redis, Family]", "redis7")
    assert "RedisEngine " not in earlier.replace("RedisEngines", "")
    old_template = tmp_path / "template.yaml"
    old_template.write_text(earlier)
    cfn, ec2 = prov.client("cloudformation", emulator_url), prov.client("ec2", emulator_url)
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    name = f"upg{uuid.uuid4().hex[:6]}"
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/worker-native:"
    params = {"EnvironmentName": name, "GatewayUrl": NO_NETWORK["GatewayUrl"], "WorkerImage": image + "old", "DesiredWorkers": 0,
              "VpcId": vpc, "SubnetIds": ",".join(subnets)}
    monkeypatch.setattr(prov.deploy, "TEMPLATE", old_template)
    prov.deploy.deploy_stack(cfn, name, params, say=lambda _: None)
    monkeypatch.setattr(prov.deploy, "TEMPLATE", ROOT / "deploy" / "template.yaml")

    with pytest.raises(prov.deploy.DeployError) as refused:
        prov.deploy.deploy_stack(cfn, name, {"RateLimitMax": 20}, say=lambda _: None)
    assert "--param WorkerImage" in str(refused.value) and "REDIS_AUTH_TOKEN" in str(refused.value)
    prov.deploy.deploy_stack(cfn, name, {"WorkerImage": image + "new"}, say=lambda _: None)
    updated = {p["ParameterKey"]: p["ParameterValue"] for p in cfn.describe_stacks(StackName=name)["Stacks"][0]["Parameters"]}
    assert updated["RedisEngine"] == "redis" and updated["WorkerImage"] == image + "new"
