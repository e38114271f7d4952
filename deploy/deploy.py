"""One deploy command per side (run through scripts/deploy.sh):

    deploy.py aws ENV [--param Key=Value ...] [--edge-vars FILE] [--worker-env FILE]
        Creates or updates the CloudFormation stack ENV from deploy/template.yaml, waits,
        and prints its outputs. A stack whose first create failed (ROLLBACK_COMPLETE:
        nothing of it runs, and CloudFormation allows it no update, only a deletion) is
        deleted and created again. --edge-vars writes the edge's settings (with a new
        access key of the stack's edge user) in .dev.vars format; --worker-env writes a
        worker's settings (with a new key of the worker user, CreateWorkerUser=true) for
        EC2 or a local run. Files are written 0600; no secret is printed.

    deploy.py edge ENV [--stack NAME] [--dry-run]
        Gives the edge of wrangler environment ENV its settings from the stack's outputs,
        rotating its AWS key with no moment where the edge holds one part of a key
        without the other: a new key of the edge user, proven by a signed call before
        anything uses it; both its parts (and JWT_SECRET, when set in the environment)
        uploaded in ONE Worker version (`wrangler secret bulk`, on stdin); then
        `wrangler deploy --env ENV` with the queue URLs and table as `--var`s; then the
        user's older keys are deactivated, not deleted: a key something else still used
        can be reactivated. The next run deletes them.

    deploy.py delete ENV [--yes]
        Deletes the stack ENV and waits: first the access keys of its IAM users (IAM
        refuses to delete a user that has keys, and the stack's deletion would stop
        half-way, DELETE_FAILED), then the stack. What the template retains (the ledger
        table) stays, and is named.

Keys. IAM allows a user two. Before a key is made, the user's inactive keys (left by an
earlier rotation) are deleted. If two active keys remain, a run was aborted after making
its key; IAM decides which goes: the one never used (get_access_key_last_used) is the
aborted run's, since every key this command deploys has first signed a call. Two keys
both used, or both never used, cannot be told apart from IAM: the command stops, names
them and says what to do, rather than delete the key the edge may sign with.

AWS credentials and region come from the usual chain (AWS_PROFILE, AWS_REGION, ...);
AWS_ENDPOINT_URL points both at an emulator (the tests do). WRANGLER names the wrangler
binary (default node_modules/.bin/wrangler; the tests give a stand-in, as Cloudflare is
out of their reach)."""

import argparse
import json
from datetime import datetime, timedelta, timezone
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "template.yaml"
# How long a new key may take to be accepted: IAM is eventually consistent, and a key
# fresh from CreateAccessKey is refused (InvalidClientTokenId) for a few seconds.
KEY_PROPAGATION_SECONDS = 60


class DeployError(RuntimeError):
    """A failure the command explains itself: printed without a traceback."""


class StackFailed(DeployError):
    pass


class KeyConflict(DeployError):
    pass


def client(service: str):
    return boto3.client(service, endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


# ---- stacks -------------------------------------------------------------------------

def stack_of(cfn, name: str) -> dict | None:
    """The stack `name` (or stack id) as CloudFormation describes it; None when there is none."""
    try:
        return cfn.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as e:
        if "does not exist" not in str(e):
            raise
        return None


def wait_for(cfn, stack_id: str, say, started: float, timeout: float) -> dict | None:
    """Polls the stack until its operation ends, saying each status it passes; the
    stack's last description, None once it is gone (deleted)."""
    last = None
    while True:
        stack = stack_of(cfn, stack_id)
        status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
        if status != last:
            say(f"  {status} after {time.monotonic() - started:.1f} s")
            last = status
        if not status.endswith("IN_PROGRESS"):
            return stack if status != "DELETE_COMPLETE" else None
        if time.monotonic() - started > timeout:
            raise StackFailed(f"stack {stack_id} still {status} after {timeout:.0f} s")
        time.sleep(0.2 if time.monotonic() - started < 10 else 5)


def failures(cfn, stack_id: str) -> str:
    """Every resource that failed in the stack's last operation, and why."""
    failed = []
    for e in cfn.describe_stack_events(StackName=stack_id)["StackEvents"]:  # newest first
        if e.get("ResourceType") == "AWS::CloudFormation::Stack" and e.get("ResourceStatus") in (
                "CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "DELETE_IN_PROGRESS") and e.get("ResourceStatusReason") == "User Initiated":
            break  # where the last operation began
        if e.get("ResourceStatus", "").endswith("FAILED"):
            failed.append(f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}")
    return "; ".join(reversed(failed))


def delete_and_wait(cfn, stack: dict, say, timeout: float) -> list[str]:
    """Deletes the stack and waits until it is gone; the resources it retained."""
    started = time.monotonic()
    cfn.delete_stack(StackName=stack["StackId"])
    if wait_for(cfn, stack["StackId"], say, started, timeout) is not None:
        raise StackFailed(f"stack {stack['StackName']}: DELETE_FAILED; {failures(cfn, stack['StackId'])}")
    try:
        events = cfn.describe_stack_events(StackName=stack["StackId"])["StackEvents"]
    except ClientError:
        return []  # not every CloudFormation keeps a deleted stack's events
    return sorted({f"{e['LogicalResourceId']} ({e.get('PhysicalResourceId')})" for e in events
                   if e.get("ResourceStatus") == "DELETE_SKIPPED"})


def deploy_stack(cfn, name: str, parameters: dict, say=print, timeout: float = 1800) -> dict:
    """Creates or updates stack `name` and waits for it; its outputs. A failure names
    every resource that failed and why."""
    args = dict(StackName=name, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
                Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()])
    started = time.monotonic()
    stack = stack_of(cfn, name)
    if stack and stack["StackStatus"] == "ROLLBACK_COMPLETE":
        # Only a failed create ends so (a failed update ends UPDATE_ROLLBACK_COMPLETE):
        # everything it made is rolled back, and CloudFormation allows the stack
        # nothing but a deletion. Without this every retry of a first deploy would fail.
        say(f"stack {name} is ROLLBACK_COMPLETE: its first create failed and was rolled back, so nothing of it runs;"
            " deleting it to create it again")
        kept = delete_and_wait(cfn, stack, say, timeout)
        if kept:
            say(f"  retained by the failed create (may block this one): {', '.join(kept)}")
        stack = None
    elif stack and stack["StackStatus"] == "UPDATE_ROLLBACK_FAILED":
        raise StackFailed(f"stack {name} is UPDATE_ROLLBACK_FAILED: an update failed and so did its rollback; fix what failed "
                          f"({failures(cfn, stack['StackId'])}), then `aws cloudformation continue-update-rollback --stack-name {name}` "
                          "(with --resources-to-skip for a resource that cannot go back), then deploy again")
    elif stack and stack["StackStatus"] in ("ROLLBACK_FAILED", "DELETE_FAILED"):
        raise StackFailed(f"stack {name} is {stack['StackStatus']}: CloudFormation allows it only a deletion "
                          f"(`scripts/deploy.sh delete {name}`, then deploy again); what failed: {failures(cfn, stack['StackId'])}")
    if stack:
        parameters = upgrade_parameters(cfn, stack, parameters)
        args["Parameters"] = [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()]
        # A parameter not given keeps its value (CloudFormation would reset it to the
        # default), so that an update names only what changes.
        args["Parameters"] += [{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
                               for p in stack.get("Parameters", []) if p["ParameterKey"] not in parameters]
        try:
            cfn.update_stack(**args)
            say(f"updating stack {name}")
        except ClientError as e:
            if "No updates are to be performed" not in str(e):
                raise
            say(f"stack {name} is up to date")
        stack_id = stack["StackId"]
    else:
        stack_id = cfn.create_stack(**args)["StackId"]
        say(f"creating stack {name}")
    stack = wait_for(cfn, stack_id, say, started, timeout)
    status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        retry = "; fix that and run again (the rolled-back stack is deleted and created anew)" if status == "ROLLBACK_COMPLETE" else ""
        raise StackFailed(f"stack {name}: {status}; {failures(cfn, stack_id)}{retry}")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def upgrade_parameters(cfn, stack: dict, parameters: dict) -> dict:
    """What an update of a stack made by the template before 2026-12-06 (it has no
    `RedisEngine` parameter) must add, so that it changes nothing by surprise: its Redis
    stays Redis OSS (a new parameter takes its default, Valkey, and an engine change
    cannot be undone); and, with Redis created and workers on ECS, the update must bring
    a worker image of this version, which reads the auth token apart from the URL
    (`REDIS_AUTH_TOKEN`): the old image would connect without it and every task fail."""
    previous = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    if "RedisEngine" in previous:
        return parameters
    resources = {r["LogicalResourceId"] for r in cfn.describe_stack_resources(StackName=stack["StackId"])["StackResources"]}
    parameters = {"RedisEngine": "redis", **parameters}
    if "Redis" in resources and "TaskDefinition" in resources and "WorkerImage" not in parameters:
        raise DeployError(
            f"stack {stack['StackName']} was made by an earlier template: this one gives the workers Redis's auth token apart "
            "from its URL (REDIS_AUTH_TOKEN, read from its own secret so that rotations reach them), which workers built "
            "before it do not read. Push an image of this version and name it in this update: --param WorkerImage=...")
    return parameters


def outputs_of(cfn, name: str) -> dict:
    stack = stack_of(cfn, name)
    if stack is None:
        raise DeployError(f"no stack {name}: deploy it first (scripts/deploy.sh aws {name})")
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


# ---- access keys ----------------------------------------------------------------------

# How old a never-used key must be before it is taken for an aborted run's: IAM
# documents no delay for recording a key's use, so a key that signed its first calls a
# moment ago (a rerun right after an upload that failed late, a key `aws --edge-vars`
# handed out) may still show none.
UNUSED_KEY_AGE = timedelta(days=1)


def last_used(iam, key_id: str):
    """When IAM says the key last signed a request; None if never."""
    return iam.get_access_key_last_used(AccessKeyId=key_id)["AccessKeyLastUsed"].get("LastUsedDate")


def make_room(iam, user: str, who: str, say=print, dry_run: bool = False) -> None:
    """Deletes what may go so that `user` can have one more key (IAM allows two): its
    inactive keys (an earlier rotation deactivated them), then, of two active keys, the
    one never used (an aborted run's). Raises KeyConflict when IAM cannot tell which of
    two active keys `who` signs with. With `dry_run`, only says what it would delete."""
    verb = "would delete" if dry_run else "deleted"
    keys = sorted(iam.list_access_keys(UserName=user)["AccessKeyMetadata"], key=lambda k: k["CreateDate"])
    for k in keys:
        if k["Status"] != "Active":
            if not dry_run:
                iam.delete_access_key(UserName=user, AccessKeyId=k["AccessKeyId"])
            say(f"{verb} key {k['AccessKeyId']} of {user}: inactive since an earlier rotation")
    active = [k for k in keys if k["Status"] == "Active"]
    if len(active) < 2:
        return
    used = {k["AccessKeyId"]: last_used(iam, k["AccessKeyId"]) for k in active}
    never = [k for k in active if used[k["AccessKeyId"]] is None]
    now = datetime.now(timezone.utc)
    if len(never) == 1 and now - never[0]["CreateDate"] >= UNUSED_KEY_AGE:
        key_id = never[0]["AccessKeyId"]
        if not dry_run:
            iam.delete_access_key(UserName=user, AccessKeyId=key_id)
        say(f"{verb} key {key_id} of {user}: active but never used, left by an aborted run")
        return
    listed = "\n".join(f"  {k['AccessKeyId']}: created {k['CreateDate']:%Y-%m-%d %H:%M:%S %Z}, "
                       + (f"last used {used[k['AccessKeyId']]:%Y-%m-%d %H:%M:%S %Z}" if used[k["AccessKeyId"]] else "never used")
                       for k in active)
    if len(never) == 1:
        why = (f"{never[0]['AccessKeyId']} shows no use, but it is less than {UNUSED_KEY_AGE.days} day old and IAM may not have "
               f"recorded its first requests yet")
    elif never:
        why = ("neither has signed a request, or IAM has not recorded it yet. Once requests have reached "
               f"{who}, the key in use is the one that shows a use")
    else:
        why = f"both have signed requests. The key in use is the one whose last use keeps advancing while {who} takes requests"
    raise KeyConflict(
        f"{user} has two active access keys and IAM allows no third:\n{listed}\n"
        f"IAM cannot tell which one is in use by {who}, so neither is deleted: {why} "
        "(`aws iam get-access-key-last-used --access-key-id ID`). Deactivate the other:\n"
        f"  aws iam update-access-key --user-name {user} --access-key-id ID --status Inactive\n"
        "check that nothing fails (`--status Active` undoes it), then run this again: it deletes the inactive key first.")


def new_key(iam, user: str, who: str = "its holder", say=print) -> dict:
    """A new access key of `user`, made room for by make_room (never deleting a key
    that may be in use)."""
    make_room(iam, user, who, say)
    return iam.create_access_key(UserName=user)["AccessKey"]


def prove_key(iam, user: str, key: dict, queue_url: str, region: str, say=print,
              timeout: float = KEY_PROPAGATION_SECONDS) -> None:
    """A call signed with `key` (SQS GetQueueAttributes on the stack's queue, which the
    edge's policy allows) until AWS accepts it. A key AWS still refuses after `timeout`
    is deleted (nothing uses it yet) and the run stops."""
    sqs = boto3.client("sqs", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, region_name=region,
                       aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    started = time.monotonic()
    while True:
        try:
            sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
            say(f"  key {key['AccessKeyId']} signs: SQS accepted a call after {time.monotonic() - started:.1f} s")
            return
        except ClientError as e:
            error = e.response.get("Error", {})
            if time.monotonic() - started > timeout:
                iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
                raise DeployError(f"the new key {key['AccessKeyId']} of {user} was still refused after {timeout:.0f} s "
                                  f"({error.get('Code')}: {error.get('Message')}); it is deleted and nothing was switched to it")
            time.sleep(2)


# ---- the commands ----------------------------------------------------------------------

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
        key = new_key(iam, outputs["EdgeUserName"], who="the edge")
        write_settings(a.edge_vars, {**aws_settings(outputs, region), "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                                     "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "RATE_LIMITER_ENABLED": "true"})
        print(f"edge settings (with a new key of {outputs['EdgeUserName']}) in {a.edge_vars}")
    if a.worker_env:
        if "WorkerUserName" not in outputs:
            raise SystemExit("--worker-env needs the stack's worker user: deploy with --param CreateWorkerUser=true")
        key = new_key(iam, outputs["WorkerUserName"], who="the workers")
        write_settings(a.worker_env, {**aws_settings(outputs, region), "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                                      "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "RATE_LIMITER_ENABLED": "true",
                                      "ENVIRONMENT": a.env})
        print(f"worker settings (with a new key of {outputs['WorkerUserName']}; add REDIS_URL and GATEWAY_URL) in {a.worker_env}")


def wrangler(*args, stdin=None, capture=False) -> str:
    """Runs wrangler from the repository root; its output when `capture` (shown too,
    indented). `stdin` is how secrets reach it: never an argument (other users of the
    machine see those), never a file left behind."""
    cmd = [os.environ.get("WRANGLER") or str(ROOT / "node_modules" / ".bin" / "wrangler"), *args]
    shown = " ".join(a if ":" not in a or a.startswith("--") else a.split(":", 1)[0] + ":..." for a in cmd[1:])
    print(f"  wrangler {shown}", flush=True)
    out = subprocess.run(cmd, input=stdin, text=True, cwd=ROOT,
                         stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None)
    if capture:
        print("\n".join(f"    {line}" for line in out.stdout.splitlines() if line.strip()), flush=True)
    if out.returncode != 0:
        command = " ".join(a for a in args[:2] if not a.startswith("-"))
        raise DeployError(f"wrangler {command} failed (exit {out.returncode})")
    return out.stdout or ""


def upload_secrets(env: str, secrets: dict) -> None:
    """All of `secrets` in one version of the Worker: `wrangler secret bulk` reads them as
    JSON on stdin. (`secret put` makes one version per secret, and the version between
    two holds the new key id with the old secret: every signature fails.)"""
    out = wrangler("secret", "bulk", "--env", env, stdin=json.dumps(secrets), capture=True)  # it prints names, never values
    # wrangler exits 0 when it read nothing ("No content found") or was told not to create
    # the Worker: only its count of what it uploaded says the version holds the new key.
    if f"{len(secrets)} secrets successfully uploaded" not in out:
        raise DeployError(f"wrangler secret bulk did not report uploading {len(secrets)} secrets (its output above)")


def cmd_edge(a) -> None:
    cfn, iam = client("cloudformation"), client("iam")
    outputs = outputs_of(cfn, a.stack or a.env)
    region = cfn.meta.region_name
    settings = aws_settings(outputs, region)
    user = outputs["EdgeUserName"]
    deploy = ["deploy", "--env", a.env]
    for k, v in settings.items():
        deploy += ["--var", f"{k}:{v}"]
    names = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] + (["JWT_SECRET"] if os.environ.get("JWT_SECRET") else [])
    if a.dry_run:
        conflict = None
        try:
            make_room(iam, user, "the edge", dry_run=True)
        except KeyConflict as e:
            conflict = e
        print(f"would create a key of {user}, check that it signs, then:")
        print(f"  wrangler secret bulk --env {a.env}  (on stdin: {', '.join(names)})")
        wrangler(*deploy, "--dry-run")
        print(f"would deactivate the older active keys of {user}")
        if conflict:
            raise DeployError(f"a real run would stop here: {conflict}")
        return

    key = new_key(iam, user, who="the edge")
    print(f"new key {key['AccessKeyId']} of {user}")
    prove_key(iam, user, key, outputs["QueueUrl"], region)
    secrets = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    if os.environ.get("JWT_SECRET"):
        secrets["JWT_SECRET"] = os.environ["JWT_SECRET"]
    older = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
             if k["AccessKeyId"] != key["AccessKeyId"] and k["Status"] == "Active"]
    try:
        upload_secrets(a.env, secrets)
    except DeployError as e:
        if not older:
            raise DeployError(f"{e}; run again (the next run replaces the new key {key['AccessKeyId']})") from None
        # Whether wrangler failed before or after its upload is not certain: both keys
        # stay active, and the operator finds which one the edge signs with.
        raise DeployError(
            f"{e}. Whether it uploaded the new key {key['AccessKeyId']} before failing is not certain: it stays active, and so "
            f"does {', '.join(older)}. The edge signs with the key whose last use keeps advancing while it takes requests "
            "(`aws iam get-access-key-last-used --access-key-id ID`; the new key's shows this run's check). Deactivate the "
            f"other (aws iam update-access-key --user-name {user} --access-key-id ID --status Inactive) and run again.") from None
    # From here the deployed edge signs with the new key (the upload made a version of
    # the code already deployed, with the new secrets).
    failed = None
    try:
        wrangler(*deploy)
    except DeployError as e:
        failed = e
    # Even when the deploy failed: the edge runs its previous code with the new key. The
    # old keys are deactivated after the deploy's seconds, in which requests started
    # before the upload have finished; the next run deletes them.
    for key_id in older:
        iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    if older:
        print(f"older key(s) of {user} deactivated: {', '.join(older)} (the next run deletes them; "
              f"`aws iam update-access-key --user-name {user} --access-key-id ID --status Active` undoes it)")
    if failed:
        raise DeployError(f"{failed}: the edge runs its previous code, with the new key; fix what wrangler said and run again")
    print(f"edge {a.env} deployed, signing with key {key['AccessKeyId']} of {user}")


def cmd_delete(a) -> None:
    cfn, iam = client("cloudformation"), client("iam")
    stack = stack_of(cfn, a.env)
    if stack is None:
        raise DeployError(f"no stack {a.env}")
    if not a.yes:
        if not sys.stdin.isatty():
            raise DeployError(f"deleting stack {a.env} and its users' keys cannot be undone: pass --yes")
        if input(f"delete stack {a.env}, and the access keys of its users? type its name to confirm: ").strip() != a.env:
            raise DeployError("not confirmed; nothing deleted")
    started = time.monotonic()
    users = [r["PhysicalResourceId"] for r in cfn.describe_stack_resources(StackName=stack["StackId"])["StackResources"]
             if r["ResourceType"] == "AWS::IAM::User" and r.get("PhysicalResourceId")]
    for user in users:
        try:
            keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        except iam.exceptions.NoSuchEntityException:
            continue
        for k in keys:
            iam.delete_access_key(UserName=user, AccessKeyId=k["AccessKeyId"])
            print(f"deleted key {k['AccessKeyId']} of {user} ({k['Status'].lower()})")
    print(f"deleting stack {a.env}")
    kept = delete_and_wait(cfn, stack, print, timeout=a.timeout)
    print(f"stack {a.env} deleted in {time.monotonic() - started:.0f} s"
          + (f"; retained (delete them yourself if meant): {', '.join(kept)}" if kept else ""))


def main() -> None:
    p = argparse.ArgumentParser(prog="scripts/deploy.sh", description="Deploys (or deletes) the AWS side (CloudFormation), or deploys the edge (wrangler).")
    sub = p.add_subparsers(dest="side", required=True)
    aws = sub.add_parser("aws", help="create or update the CloudFormation stack ENV")
    aws.add_argument("env")
    aws.add_argument("--param", action="append", metavar="Key=Value", help="a template parameter (repeatable)")
    aws.add_argument("--edge-vars", type=Path, help="write the edge's settings, with a new key, to this file")
    aws.add_argument("--worker-env", type=Path, help="write a worker's settings, with a new key, to this file")
    edge = sub.add_parser("edge", help="rotate the edge's key (one `wrangler secret bulk`) and `wrangler deploy --env ENV`")
    edge.add_argument("env", help="the wrangler environment (staging, production)")
    edge.add_argument("--stack", help="the stack's name (default: ENV)")
    edge.add_argument("--dry-run", action="store_true", help="no key, no secret; what would be deleted; `wrangler deploy --dry-run`")
    delete = sub.add_parser("delete", help="delete the stack ENV, its users' access keys first")
    delete.add_argument("env")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the deletion (default 1800)")
    a = p.parse_args()
    try:
        {"aws": cmd_aws, "edge": cmd_edge, "delete": cmd_delete}[a.side](a)
    except DeployError as e:
        sys.exit(f"deploy: {e}")


if __name__ == "__main__":
    main()
