"""Benchmarks of the native worker with real parts (Redis, the AWS emulator, the gateway
stub, release worker processes). One subcommand each, printing its figures as JSON:

    ingest     10,000 messages through SQS: SQS and DynamoDB calls per message
    memory     peak RSS of a worker with 1,000,000 messages in the Redis backlog
    accuracy   1,000 accounts x 30 messages at 10 per 2 s through 3 workers: worst
               rolling-window count, span against the ideal, and a PNG of the sends;
               then the BullMQ peer's per-account workaround with the same load.
               With --ledger the messages come through SQS with their ledger items
               (as the edge writes them) and the workers record every outcome.

    python bench/worker_bench.py ingest|memory|accuracy [--out DIR] [--window-ms N --margin-ms N] [--accounts N] [--ledger]

Each exits non-zero when a figure is missing, a message was delivered twice or not at
all, or a goal is missed (bench/goals.py).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("WORKER_PROFILE", "release")
from devstack import provision as prov  # noqa: E402
from devstack import stack  # noqa: E402
from goals import Goals  # noqa: E402


class Parts:
    def __init__(self, out: Path):
        self.out, self.parts = out, []
        self.aws_port, self.redis_port, self.gw_port = stack.free_port(), stack.free_port(), stack.free_port()
        self.parts.append(stack.start_ministack(self.aws_port, out / "ministack.log"))
        self.aws = prov.provision(f"http://127.0.0.1:{self.aws_port}", prefix="bench")
        self.parts.append(stack.start_redis(self.redis_port, out / "redis.log"))
        self.parts.append(stack.start_gateway_stub(self.gw_port, out / "gateway-stub.log"))
        self.gw = f"http://127.0.0.1:{self.gw_port}"

    def worker(self, name, prefix, **env):
        health = stack.free_port()
        settings = {
            **stack.worker_settings(self.aws.worker_env(), self.redis_port, self.gw, prefix.rstrip(":")),
            "SQS_WAIT_SECONDS": "1", "METRICS_ENABLED": "false", "RUST_LOG": "warn", **env,
        }
        part = stack.start_worker(settings, self.out / f"{name}.log", health)
        part.health = health
        self.parts.append(part)
        return part

    def load(self, prefix, accounts, messages):
        cmd = [str(ROOT / "target/release/examples/dispatch_bench"), "--redis", f"redis://127.0.0.1:{self.redis_port}",
               "--accounts", str(accounts), "--messages", str(messages), "--load-only", prefix]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    def stop(self):
        for p in reversed(self.parts):
            p.stop()


def stats(worker):
    return requests.get(f"http://127.0.0.1:{worker.health}/stats", timeout=10).json()


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.25)


def through_sqs(parts: Parts, accounts: int, n: int, account_major=False):
    """Queues `n` messages of `accounts` accounts as the edge does: each ledger item
    written first, then the queue message. The messages, in queue order."""
    sqs = prov.client("sqs", parts.aws.endpoint)
    ddb = prov.client("dynamodb", parts.aws.endpoint)
    now = datetime.utcnow().isoformat(timespec="milliseconds") + "Z"
    per = n // accounts
    owner = (lambda i: i // per) if account_major else (lambda i: i % accounts)
    msgs = [{"id": str(uuid.UUID(int=(int(time.time() * 1000) << 80) | (0x7 << 76) | (2 << 62) | (i << 16) | 1)),
             "creatorId": f"acct-{owner(i)}", "recipientId": f"fan-{i}", "content": "hello", "priority": 5,
             "mediaUrls": [], "metadata": {}, "acceptedAt": now, "generation": 0} for i in range(n)]
    for i in range(0, n, 25):
        ddb.batch_write_item(RequestItems={parts.aws.table: [{"PutRequest": {"Item": {
            "creatorId": {"S": m["creatorId"]}, "messageId": {"S": m["id"]}, "status": {"S": "queued"}, "attempts": {"N": "0"},
            "recipientId": {"S": m["recipientId"]}, "content": {"S": m["content"]}, "priority": {"N": "5"}, "acceptedAt": {"S": now}}}}
            for m in msgs[i:i + 25]]})
    for i in range(0, n, 10):
        sqs.send_message_batch(QueueUrl=parts.aws.queue_url, Entries=[{"Id": str(j), "MessageBody": json.dumps(m)} for j, m in enumerate(msgs[i:i + 10])])
    return msgs


def delivered(parts: Parts):
    return requests.get(parts.gw + "/deliveries", timeout=60).json()


def check_deliveries(goals: Goals, deliveries, expected: int) -> None:
    goals.equal("messages delivered", len(deliveries), expected)
    goals.equal("distinct messages delivered", len({d["messageId"] for d in deliveries}), expected)


def check_ledger(goals: Goals, parts: Parts, msgs) -> None:
    """Every item recorded `sent`, and each account's summary counting exactly that."""
    ddb = prov.client("dynamodb", parts.aws.endpoint)
    by_account = {}
    for m in msgs:
        by_account.setdefault(m["creatorId"], []).append(m["id"])
    sent = counted = 0
    for account, ids in by_account.items():
        items = ddb.query(TableName=parts.aws.table, KeyConditionExpression="creatorId = :c",
                          ExpressionAttributeValues={":c": {"S": account}}, ConsistentRead=True)["Items"]
        sent += sum(1 for i in items if i["messageId"]["S"] in set(ids) and i["status"]["S"] == "sent")
        summary = next((i for i in items if i["messageId"]["S"] == "#summary"), {})
        counted += int(summary.get("sent", {}).get("N", 0)) if int(summary.get("queued", {}).get("N", 0)) == 0 else 0
    goals.equal("ledger items recorded sent", sent, len(msgs))
    goals.equal("summary counters: sent, nothing left queued", counted, len(msgs))


def ingest(parts: Parts, goals: Goals, n=10_000):
    msgs = through_sqs(parts, 100, n)
    started = time.monotonic()
    w = parts.worker("ingest-worker", "ing:", RATE_LIMIT_MAX="100000", RATE_LIMIT_WINDOW="1s")
    wait(lambda: stats(w)["messagesFinished"] >= n, 300, "ingest of 10,000 messages")
    s = stats(w)
    check_deliveries(goals, delivered(parts), n)
    check_ledger(goals, parts, msgs)
    sqs_per = round(s["sqsCalls"] / n, 3)
    goals.at_most("SQS calls per message", sqs_per, 0.3)
    return {"benchmark": "ingest", "messages": n, "seconds": round(time.monotonic() - started, 1),
            "sqsCallsPerMessage": sqs_per, "dynamodbCallsPerMessage": round(s["dynamodbCalls"] / n, 3),
            "redisRoundTripsPerMessage": round(s["redisRoundTrips"] / n, 3), "goal": "sqsCallsPerMessage <= 0.3"}


def rss_kib(pid):
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def memory(parts: Parts, goals: Goals, n=1_000_000, accounts=10_000, seconds=20):
    loaded = parts.load("mem:", accounts, n)
    w = parts.worker("memory-worker", "mem:", LEDGER_ENABLED="false")  # the real limit: 10 per 60 s per account
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(rss_kib(w.proc.pid))
        time.sleep(0.5)
    s = stats(w)
    goals.equal("backlog loaded", loaded.get("loaded"), n)
    goals.at_least("messages sent while sampled", s["messagesFinished"], 1)
    goals.at_most("peak RSS MiB", round(max(h for _, h in samples) / 1024, 1), 64)
    return {"benchmark": "memory", "backlog": loaded["loaded"], "accounts": accounts, "sampledSeconds": seconds,
            "sentWhileSampled": s["messagesFinished"], "rssMiB": round(samples[-1][0] / 1024, 1),
            "peakRssMiB": round(max(h for _, h in samples) / 1024, 1), "goal": "a few tens of MB"}


def accuracy(parts: Parts, goals: Goals, out: Path, window, margin, accounts=1000, ledger=False, per=30, workers=3, maximum=10):
    # The peer is ready before anything runs, so that a missing one stops at once.
    got = subprocess.run(["bash", str(ROOT / "bench/peer.sh"), "bullmq"], stdout=subprocess.PIPE, text=True)
    if got.returncode != 0:
        raise SystemExit(2)  # peer.sh said why
    peer = got.stdout.strip()
    if ledger:
        # Account after account, so that each account's messages reach the schedule
        # together (the emulator ingests ~200 messages/s).
        msgs = through_sqs(parts, accounts, accounts * per, account_major=True)
    else:
        # Straight into the schedule: at 1,000 accounts the emulator would be the bottleneck.
        parts.load("acc:", accounts, accounts * per)
    started = time.monotonic()
    # The margin is against delivery jitter, which is absolute: on this 2-vCPU machine, with
    # 1,000 accounts due together every 200 ms, a send can reach the gateway ~60 ms later
    # than the one 10 before it, so a compressed 2 s window needs a 75 ms margin (3.75%);
    # at the real 60 s window the default 1% is 600 ms (--window-ms 60000 --margin-ms 600).
    # With the ledger every message is claimed before its slot: through the emulator on this
    # machine a claim transaction takes up to ~600 ms under this load (DynamoDB: ~10 ms), so
    # the claim lead is set to cover it, as a deployment sets it to its ledger's latency.
    claim = {"CLAIM_LEAD": "800ms"} if ledger else {}
    ws = [parts.worker(f"accuracy-worker-{i}", "acc:", RATE_LIMIT_MAX=str(maximum), RATE_LIMIT_WINDOW=f"{window}ms",
                       RATE_LIMIT_MARGIN=f"{margin}ms", LEDGER_ENABLED=str(ledger).lower(), **claim) for i in range(workers)]
    total = accounts * per
    wait(lambda: sum(stats(w)["messagesFinished"] for w in ws) >= total, 600, "delivery of the backlog")
    deliveries = delivered(parts)
    check_deliveries(goals, deliveries, total)
    if ledger:
        check_ledger(goals, parts, msgs)
    by_account = {}
    for d in deliveries:
        by_account.setdefault(d["accountId"], []).append(datetime.fromisoformat(d["receivedAt"].replace("Z", "+00:00")).timestamp() * 1000)
    ideal = (per - 1) * window / maximum
    first = min(min(t) for t in by_account.values())
    finish = sorted(max(t) - first for t in by_account.values())
    worst, ratios, tight = 0, [], []
    for times in by_account.values():
        times.sort()
        # How far apart any `maximum + 1` consecutive sends are, at the gateway.
        tight.extend(times[k + maximum] - times[k] for k in range(len(times) - maximum))
        j = 0
        for i in range(len(times)):
            while times[i] - times[j] >= window:
                j += 1
            worst = max(worst, i - j + 1)
        ratios.append((times[-1] - times[0]) / ideal)
    ratios.sort()
    # The ideal plus the margins the limit adds (one per `maximum` sends), plus 1%; at the
    # real window (60 s and more) the margins cost 0.7% and the README's goal is 1.01x.
    span_goal = 1.01 if window >= 60_000 else round((ideal + (per - 1) // maximum * margin) / ideal + 0.01, 4)
    goals.at_most("worst rolling-window count", worst, maximum)
    goals.at_most("span vs ideal, slowest account", round(ratios[-1], 4), span_goal)
    plot(by_account, out / "limit-accuracy.png", window, maximum)
    return {"benchmark": "accuracy", "accounts": accounts, "perAccount": per, "workers": workers, "delivered": len(deliveries),
            "distinctDelivered": len({d['messageId'] for d in deliveries}), "seconds": round(time.monotonic() - started, 1),
            "worstWindowCount": worst, "spanVsIdealMedian": round(ratios[len(ratios) // 2], 4), "spanVsIdealMax": round(ratios[-1], 4),
            "tightestSpanOfMaxPlus1Ms": round(min(tight), 1), "spansOfMaxPlus1UnderWindow": sum(t < window for t in tight),
            "finishAfterStartVsIdealMedian": round(finish[len(finish) // 2] / ideal, 4),
            "marginMs": margin, "ledgerEnabled": ledger, "png": str(out / "limit-accuracy.png"),
            "goal": f"worst <= {maximum}, span <= {span_goal}x ideal (the margins, +1%)",
            "bullmqWorkaround": bullmq_workaround(parts, peer, accounts, per, window, maximum, ideal)}


def bullmq_workaround(parts: Parts, peer, accounts, per, window, maximum, ideal):
    """The BullMQ peer's per-account workaround (a sliding-log limiter checked by each job,
    over-limit jobs moved to delayed) with the same load on the same Redis. Its worker
    does not record per-account spans, so its figure is each account's finish after the
    worker started, as ours is beside it."""
    cmd = ["node", "bench.mjs", "--scenario=peraccount", f"--accounts={accounts}", f"--jobs-per-account={per}",
           f"--acct-max={maximum}", f"--acct-window-ms={window}", "--order=interleaved", "--no-baseline",
           f"--port={parts.redis_port}"]
    r = json.loads(subprocess.run(cmd, cwd=peer, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    w = r["worstInWindow"]
    return {"completed": r["completed"], "seconds": round(r["totalMs"] / 1000, 1),
            "worstWindowCountAdmitted": w["admitted"]["worst"], "worstWindowCountSent": w["sent"]["worst"],
            "accountsOverAtSend": w["sent"]["accountsOver"], "worstWindowCountCompleted": w["completed"]["worst"],
            "finishAfterStartVsIdealMedian": round(r["perAccountFinishMs"]["p50"] / ideal, 4),
            "redisRoundTripsPerJob": round(r["clientCmds"] / r["n"], 2)}


def plot(by_account, path, window, maximum, shown=6):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(by_account)[:shown]
    t0 = min(min(by_account[n]) for n in names)
    fig, ax = plt.subplots(figsize=(12, 0.9 * shown + 1.5))
    for row, name in enumerate(names):
        xs = [(t - t0) / 1000 for t in by_account[name]]
        ax.vlines(xs, row - 0.35, row + 0.35, color="tab:blue", linewidth=1.2)
        first = xs[0]
        # The window after the account's first send: never more than `maximum` ticks in it.
        ax.axvspan(first, first + window / 1000, ymin=(row + 0.1) / shown, ymax=(row + 0.9) / shown, color="tab:orange", alpha=0.15)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("seconds since the first send")
    ax.set_title(f"Each tick a send (gateway receive time); shaded: one {window / 1000:g} s window, at most {maximum} sends in any such window")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["ingest", "memory", "accuracy"])
    p.add_argument("--out", type=Path, default=ROOT / "target" / "bench")
    p.add_argument("--window-ms", type=int, default=2000, help="accuracy: the limit's window (10 sends per window)")
    p.add_argument("--margin-ms", type=int, default=75, help="accuracy: RATE_LIMIT_MARGIN")
    p.add_argument("--accounts", type=int, default=1000, help="accuracy: accounts (30 messages each)")
    p.add_argument("--ledger", action="store_true", help="accuracy: through SQS with the ledger on")
    a = p.parse_args()
    goals = Goals(f"bench/worker.sh {a.what}")
    out = a.out / f"{a.what}-{datetime.utcnow():%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    parts = Parts(out)
    try:
        result = {"ingest": lambda: ingest(parts, goals), "memory": lambda: memory(parts, goals),
                  "accuracy": lambda: accuracy(parts, goals, out, window=a.window_ms, margin=a.margin_ms, accounts=a.accounts, ledger=a.ledger)}[a.what]()
    finally:
        parts.stop()
    print(json.dumps(result))
    (out / "result.json").write_text(json.dumps(result, indent=1))
    goals.finish()


if __name__ == "__main__":
    main()
