"""Mass messages through the real parts (the edge under `wrangler dev`, the AWS
emulator behind a proxy that counts calls, Redis, a release worker, the gateway stub):
for 1, 100 and 1,000 recipients (and `--max` more), what one `POST /send` costs the
edge — AWS calls, wall time, and CPU of the wrangler process group (workerd included,
median of `--runs`) — then, with the account paused so that its messages wait in the
schedule, the Redis bytes per waiting recipient (`INFO memory`, the second of two mass
messages of that size, so that what the first call left in transient buffers does not
count), how fast the worker fans the campaign out (its messages' ledger items written and the campaign put on the
schedule: messages per second), and whether every key of the finished messages is
removed once they are sent. A `--max` above 1,000 sets the edge's MAX_RECIPIENTS.

Then the edge's own CPU per request (`workerd-user`, µs) for 1, 1,000 and `--max`
recipients, through the js-edge peer's load harness (`--body`; wrangler dev with the
inspector off, an nginx AWS stub, wrk), which counts CPU far finer than the process
group's 10 ms ticks.

    bench/mass-send.sh [--content-chars 2000] [--runs 5] [--max 1000] [--harness-seconds 10]

The goals are those of the campaigns issue (a 1,000-recipient send: at most 4 AWS
calls and 3x a single send's CPU; at most 200 bytes of Redis per waiting recipient;
the key count back to where it was): it exits 1 on a miss (bench/goals.py).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("WORKER_PROFILE", "release")
from devstack import provision as prov  # noqa: E402
from devstack import stack  # noqa: E402
from devstack.faultproxy import FaultProxy  # noqa: E402
from devstack.mint_jwt import mint  # noqa: E402
from goals import Goals  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
BASE = "/api/onlyfans/messaging"


def group_cpu_ms(pgid: int) -> float:
    """CPU time (user + system) of every process in the group, in ms."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total * 1000 / hz


def redis_keys(port: int) -> set:
    return set(subprocess.run(["redis-cli", "-p", str(port), "--scan"], capture_output=True, text=True, check=True).stdout.split())


def redis_info(port: int) -> tuple[int, int]:
    """(used_memory bytes, key count)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "memory"], capture_output=True, text=True, check=True).stdout
    used = int(next(line.split(":")[1] for line in out.splitlines() if line.startswith("used_memory:")))
    keys = int(subprocess.run(["redis-cli", "-p", str(port), "DBSIZE"], capture_output=True, text=True, check=True).stdout.strip())
    return used, keys


def harness_cpu_us(n: int, a, out: Path):
    """The edge's CPU µs per `POST /send` of `n` recipients under the peer's harness."""
    peer = subprocess.run(["bash", str(ROOT / "bench" / "peer.sh"), "js-edge"], capture_output=True, text=True, check=True).stdout.strip()
    body = out / f"harness-body-{n}.json"
    recipients = {"recipientIds": [f"fan-{i}" for i in range(n)]} if n > 1 else {"recipientId": "fan-0"}
    body.write_text(json.dumps({**recipients, "content": "x" * a.content_chars}))
    vars_file = out / "harness.vars"
    vars_file.write_text((ROOT / "bench" / "edge.vars").read_text() + f"MAX_RECIPIENTS={max(a.max, 1000)}\n")
    log = out / f"harness-{n}.txt"
    with open(log, "w") as f:
        subprocess.run(["./bench.sh", str(ROOT), "--vars", str(vars_file), "--runner", "api", "--body", str(body), "-d", f"{a.harness_seconds}s",
                        "--startup-timeout", "900", "--out", str(out / f"harness-{n}")], cwd=peer, env={**os.environ, "EDGE_SKIP_BUILD": "1"},
                       stdout=f, stderr=subprocess.STDOUT, check=False)
    text = log.read_text()
    cpu = re.search(r"workerd-user=(\d+)", text)
    bad = [int(x) for x in re.findall(r"non_expected=(\d+)", text)]
    if not cpu or not bad or sum(bad):
        print(f"harness run for {n} recipients failed or answered other than 202: see {log}", file=sys.stderr)
        return None
    return int(cpu.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content-chars", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--max", type=int, default=1000, help="the largest mass message (MAX_RECIPIENTS must allow it)")
    p.add_argument("--harness-seconds", type=int, default=10, help="wrk duration of each harness run (0: skip the harness)")
    p.add_argument("--out", type=Path, default=ROOT / "target" / "bench")
    a = p.parse_args()
    out = a.out / f"mass-send-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    out.mkdir(parents=True, exist_ok=True)
    goals = Goals("bench/mass-send.sh")
    parts = []
    try:
        aws_port = stack.free_port()
        parts.append(stack.start_ministack(aws_port, out / "ministack.log"))
        aws = prov.provision(f"http://127.0.0.1:{aws_port}", prefix="mass")
        proxy = FaultProxy(aws.endpoint)
        redis_port, gw_port, edge_port, health = (stack.free_port() for _ in range(4))
        parts.append(stack.start_redis(redis_port, out / "redis.log"))
        parts.append(stack.start_gateway_stub(gw_port, out / "gateway-stub.log"))
        vars_file = out / "edge.vars"
        stack.write_vars(vars_file, {**aws.edge_vars(), "AWS_ENDPOINT_URL": proxy.url, "JWT_SECRET": SECRET, "RATE_LIMITER_ENABLED": "true",
                                     "API_CALL_LIMITS": "false", "MAX_RECIPIENTS": str(max(a.max, 1000))})
        edge = stack.start_edge(edge_port, vars_file, out / "edge.log")
        parts.append(edge)
        url = f"http://127.0.0.1:{edge_port}{BASE}"
        content = "x" * a.content_chars

        def send(account, n):
            body = {"content": content, **({"recipientIds": [f"fan-{i}" for i in range(n)]} if n > 1 else {"recipientId": "fan-0"})}
            r = requests.post(url + "/send", json=body, headers={"authorization": f"Bearer {mint(account, SECRET, 3600)}"}, timeout=120)
            assert r.status_code == 202, r.text
            return r.json()

        sizes = sorted({1, 100, 1000, a.max})
        edge_rows = {}
        for n in sizes:
            calls, cpu, wall = [], [], []
            for run in range(a.runs):
                account = f"bench-{n}-{run}-{uuid.uuid4().hex[:6]}"
                before_calls, before_cpu, t0 = len(proxy.calls), group_cpu_ms(edge.proc.pid), time.monotonic()
                send(account, n)
                wall.append((time.monotonic() - t0) * 1000)
                cpu.append(group_cpu_ms(edge.proc.pid) - before_cpu)
                calls.append(len(proxy.calls) - before_calls)
            edge_rows[n] = {"recipients": n, "awsCalls": statistics.median(calls), "wallMs": round(statistics.median(wall), 1),
                            "cpuMs": round(statistics.median(cpu), 1)}
            print(json.dumps({"edge": edge_rows[n]}), flush=True)
        # The queue is drained of what the edge measurements sent before the worker runs.
        sqs = prov.client("sqs", aws.endpoint)
        sqs.purge_queue(QueueUrl=aws.queue_url)

        worker_env = {**stack.worker_settings(aws.worker_env(), redis_port, f"http://127.0.0.1:{gw_port}", "mass"),
                      "SQS_WAIT_SECONDS": "1", "METRICS_ENABLED": "false", "RUST_LOG": "warn", "HEALTH_PORT": str(health)}
        worker = stack.start_worker(worker_env, out / "worker.log", health)
        parts.append(worker)
        account = f"bench-redis-{uuid.uuid4().hex[:6]}"
        tok = mint(account, SECRET, 3600)
        requests.post(url + "/account/pause", headers={"authorization": f"Bearer {tok}"}, timeout=30).raise_for_status()
        time.sleep(1)  # the pause reaches the worker through the queue
        base_memory, base_keys = redis_info(redis_port)
        base_names = redis_keys(redis_port)
        n = a.max

        def schedule(answer):
            """Waits until the worker has put every message of `answer` on the schedule."""
            def waiting():
                # A campaign waits as a list of its messages (one schedule entry per message before).
                key = f"mass:cr:{answer['campaignId']}" if "campaignId" in answer else f"mass:q:{account}"
                kind = "LLEN" if "campaignId" in answer else "ZCARD"
                return int(subprocess.run(["redis-cli", "-p", str(redis_port), kind, key], capture_output=True, text=True).stdout.strip() or 0)
            deadline = time.monotonic() + 300
            while waiting() < n:
                assert time.monotonic() < deadline, f"only {waiting()} of {n} scheduled within 300 s"
                time.sleep(0.05)

        # Two mass messages: the first warms Redis up (its call's arguments and Lua's
        # garbage stay allocated a while and would count); the second's memory is what
        # its waiting messages hold, its time the fan-out rate.
        first = send(account, n)
        schedule(first)
        time.sleep(3)
        warm_memory, _ = redis_info(redis_port)
        t0 = time.monotonic()
        answer = send(account, n)
        schedule(answer)
        scheduled_s = time.monotonic() - t0
        time.sleep(3)
        memory, keys = redis_info(redis_port)
        per_recipient = (memory - warm_memory) / n
        ids = {m["messageId"] for sent in (first, answer) for m in sent["messages"]}
        requests.post(url + "/account/resume", headers={"authorization": f"Bearer {tok}"}, timeout=30).raise_for_status()
        # Sent at 10 a minute this would take hours: let them go at once through an override
        # (burst 1: a burst keeps a log of the account's last sends, its own key).
        subprocess.run(["redis-cli", "-p", str(redis_port), "HSET", "mass:limits", account, "100000 1000 1"], check=True, capture_output=True)
        deadline = time.monotonic() + 300
        while len({d["messageId"] for d in requests.get(f"http://127.0.0.1:{gw_port}/deliveries", timeout=30).json()} & ids) < len(ids):
            assert time.monotonic() < deadline, "not all delivered within 300 s"
            time.sleep(0.5)
        time.sleep(2)  # outcomes recorded, leases completed, the account out of `ready` (due again at once)
        subprocess.run(["redis-cli", "-p", str(redis_port), "HDEL", "mass:limits", account], check=True, capture_output=True)
        _, keys_after = redis_info(redis_port)
        left = sorted(redis_keys(redis_port) - base_names)
        worker_row = {"keysLeft": left[:10], "recipients": n, "redisBytesPerWaitingRecipient": round(per_recipient), "fannedOutPerSecond": round(n / scheduled_s),
                      "keysBefore": base_keys, "keysWhileWaiting": keys, "keysAfterSent": keys_after}
        print(json.dumps({"worker": worker_row}), flush=True)
    finally:
        for part in reversed(parts):
            part.stop()
    harness = {n: harness_cpu_us(n, a, out) for n in sorted({1, 1000, a.max})} if a.harness_seconds else {}
    for n, us in harness.items():
        print(json.dumps({"harness": {"recipients": n, "workerCpuUsPerRequest": us}}), flush=True)
    result = {"benchmark": "mass-send", "contentChars": a.content_chars, "edge": list(edge_rows.values()), "worker": worker_row,
              "harnessCpuUs": harness}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    goals.at_most("AWS calls of a 1,000-recipient send", edge_rows[1000]["awsCalls"], 4)
    # The wrangler group's CPU counts in 10 ms ticks and includes wrangler's own work:
    # printed above; the goal is on the harness's count of the edge's worker alone.
    # Without the harness (--harness-seconds 0) the figure is missing, and so is the goal:
    # a miss, never a pass.
    ratio = round(harness[1000] / harness[1], 2) if harness.get(1000) and harness.get(1) else None
    goals.at_most("edge CPU of a 1,000-recipient send vs a single send (harness, workerd-user)", ratio, 3)
    goals.at_most("Redis bytes per waiting recipient", worker_row["redisBytesPerWaitingRecipient"], 200)
    goals.at_most("keys left after every message was sent, over the start", keys_after - base_keys, 0)
    goals.finish()


if __name__ == "__main__":
    main()
