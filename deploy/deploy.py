"""One deploy command per side (run through scripts/deploy.sh):

    deploy.py aws ENV [--param Key=Value ...] [--edge-vars FILE] [--worker-env FILE]
        Creates or updates the CloudFormation stack ENV from deploy/template.yaml, waits,
        and prints its outputs. --edge-vars writes the edge's settings (with a new access
        key of the stack's edge user) in .dev.vars format; --worker-env writes a worker's
        settings (with a new key of the worker user, CreateWorkerUser=true) for EC2 or a
        local run. Files are written 0600; no secret is printed.

    deploy.py edge ENV [--stack NAME] [--dry-run]
        Gives the edge of wrangler environment ENV its settings from the stack's outputs:
        a new access key of the edge user through `wrangler secret put` (then the user's
        older keys are deleted: the deployed edge already signs with the new one), the
        queue URLs and table as `--var`s of `wrangler deploy --env ENV`. JWT_SECRET, when
        set in the environment, is put too.

AWS credentials and region come from the usual chain (AWS_PROFILE, AWS_REGION, ...);
AWS_ENDPOINT_URL points both at an emulator (the tests do)."""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "template.yaml"


class StackFailed(RuntimeError):
    pass


def client(service: str):
    return boto3.client(service, endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def deploy_stack(cfn, name: str, parameters: dict, say=print, timeout: float = 1800) -> dict:
    """Creates or updates stack `name` and waits for it; its outputs. A failure names
    every resource that failed and why."""
    args = dict(StackName=name, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
                Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()])
    started = time.monotonic()
    try:
        previous = cfn.describe_stacks(StackName=name)["Stacks"][0].get("Parameters", [])
        exists = True
    except cfn.exceptions.ClientError as e:
        if "does not exist" not in str(e):
            raise
        exists = False
    if exists:
        # A parameter not given keeps its value (CloudFormation would reset it to the
        # default), so that an update names only what changes.
        args["Parameters"] += [{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True} for p in previous if p["ParameterKey"] not in parameters]
        try:
            cfn.update_stack(**args)
            say(f"updating stack {name}")
        except cfn.exceptions.ClientError as e:
            if "No updates are to be performed" not in str(e):
                raise
            say(f"stack {name} is up to date")
    else:
        cfn.create_stack(**args)
        say(f"creating stack {name}")
    last = None
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if status != last:
            say(f"  {status} after {time.monotonic() - started:.1f} s")
            last = status
        if not status.endswith("IN_PROGRESS"):
            break
        if time.monotonic() - started > timeout:
            raise StackFailed(f"stack {name} still {status} after {timeout:.0f} s")
        time.sleep(0.2 if time.monotonic() - started < 10 else 5)
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        failed = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}" for e in cfn.describe_stack_events(StackName=name)["StackEvents"]
                  if e.get("ResourceStatus", "").endswith("FAILED")]
        raise StackFailed(f"stack {name}: {status}; " + "; ".join(failed))
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def outputs_of(cfn, name: str) -> dict:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def aws_settings(outputs: dict, region: str) -> dict:
    """The AWS settings edge and worker share, named as in the README's tables."""
    settings = {
        "AWS_REGION": region,
        "SQS_RATE_LIMITER_QUEUE_URL": outputs["QueueUrl"],
        "SQS_RATE_LIMITER_DLQ_URL": outputs["DeadLetterQueueUrl"],
        "LEDGER_TABLE": outputs["LedgerTableName"],
    }
    if os.environ.get("AWS_ENDPOINT_URL"):
        settings["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    return settings


def write_settings(path: Path, settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# Written by scripts/deploy.sh; holds a secret key: keep it 0600.\n")
        f.writelines(f"{k}={v}\n" for k, v in settings.items())


def new_key(iam, user: str) -> dict:
    """A new access key of `user`. IAM allows two: the oldest is deleted first when two
    exist, so that a rotation always has room (the key in use is the newer one)."""
    keys = sorted(iam.list_access_keys(UserName=user)["AccessKeyMetadata"], key=lambda k: k["CreateDate"])
    if len(keys) >= 2:
        iam.delete_access_key(UserName=user, AccessKeyId=keys[0]["AccessKeyId"])
    return iam.create_access_key(UserName=user)["AccessKey"]


def parse_params(pairs) -> dict:
    params = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"--param {p!r}: expected Key=Value")
        k, v = p.split("=", 1)
        params[k] = v
    return params


def cmd_aws(a) -> None:
    cfn, iam = client("cloudformation"), client("iam")
    region = cfn.meta.region_name
    params = {"EnvironmentName": a.env, **parse_params(a.param)}
    outputs = deploy_stack(cfn, a.env, params)
    for k, v in outputs.items():
        print(f"  {k} = {v}")
    if a.edge_vars:
        key = new_key(iam, outputs["EdgeUserName"])
        write_settings(a.edge_vars, {**aws_settings(outputs, region), "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                                     "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "RATE_LIMITER_ENABLED": "true"})
        print(f"edge settings (with a new key of {outputs['EdgeUserName']}) in {a.edge_vars}")
    if a.worker_env:
        if "WorkerUserName" not in outputs:
            raise SystemExit("--worker-env needs the stack's worker user: deploy with --param CreateWorkerUser=true")
        key = new_key(iam, outputs["WorkerUserName"])
        write_settings(a.worker_env, {**aws_settings(outputs, region), "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                                      "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "RATE_LIMITER_ENABLED": "true",
                                      "ENVIRONMENT": a.env})
        print(f"worker settings (with a new key of {outputs['WorkerUserName']}; add REDIS_URL and GATEWAY_URL) in {a.worker_env}")


def wrangler(*args, stdin=None, dry_run=False) -> None:
    cmd = [str(ROOT / "node_modules" / ".bin" / "wrangler"), *args]
    shown = " ".join(a if ":" not in a or a.startswith("--") else a.split(":", 1)[0] + ":..." for a in cmd[1:])
    print(f"  wrangler {shown}")
    if not dry_run:
        subprocess.run(cmd, input=stdin, text=True, check=True, cwd=ROOT)


def cmd_edge(a) -> None:
    cfn, iam = client("cloudformation"), client("iam")
    outputs = outputs_of(cfn, a.stack or a.env)
    settings = aws_settings(outputs, cfn.meta.region_name)
    user = outputs["EdgeUserName"]
    old = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
    key = None if a.dry_run else new_key(iam, user)
    secrets = {"AWS_ACCESS_KEY_ID": key and key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key and key["SecretAccessKey"]}
    if os.environ.get("JWT_SECRET"):
        secrets["JWT_SECRET"] = os.environ["JWT_SECRET"]
    for name, value in secrets.items():
        wrangler("secret", "put", name, "--env", a.env, stdin=value, dry_run=a.dry_run)
    deploy = ["deploy", "--env", a.env]
    for k, v in settings.items():
        deploy += ["--var", f"{k}:{v}"]
    wrangler(*deploy, *(["--dry-run"] if a.dry_run else []), dry_run=False)
    if not a.dry_run:
        # The deployed edge signs with the new key now: the old ones can go.
        for key_id in old:
            if key_id != key["AccessKeyId"]:
                iam.delete_access_key(UserName=user, AccessKeyId=key_id)
        print(f"edge {a.env} deployed; {len(old)} older key(s) of {user} deleted")


def main() -> None:
    p = argparse.ArgumentParser(prog="scripts/deploy.sh", description="Deploys the AWS side (CloudFormation) or the edge (wrangler).")
    sub = p.add_subparsers(dest="side", required=True)
    aws = sub.add_parser("aws", help="create or update the CloudFormation stack ENV")
    aws.add_argument("env")
    aws.add_argument("--param", action="append", metavar="Key=Value", help="a template parameter (repeatable)")
    aws.add_argument("--edge-vars", type=Path, help="write the edge's settings, with a new key, to this file")
    aws.add_argument("--worker-env", type=Path, help="write a worker's settings, with a new key, to this file")
    edge = sub.add_parser("edge", help="set the edge's secrets from the stack and `wrangler deploy --env ENV`")
    edge.add_argument("env", help="the wrangler environment (staging, production)")
    edge.add_argument("--stack", help="the stack's name (default: ENV)")
    edge.add_argument("--dry-run", action="store_true", help="no key, no secret; `wrangler deploy --dry-run`")
    a = p.parse_args()
    try:
        {"aws": cmd_aws, "edge": cmd_edge}[a.side](a)
    except StackFailed as e:
        sys.exit(f"deploy: {e}")


if __name__ == "__main__":
    main()
