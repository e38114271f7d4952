"""Soak: the whole system as the run command starts it (Redis, the AWS emulator, the
gateway stub, a release worker, the edge under `wrangler dev`; the compressed limit of
10 per 2 s) at a steady load for a given time, sampling every `--every` seconds the
worker's RSS, Redis's memory and key count, and the ledger's waiting messages (its
waiting index, counted). They must stay flat: the benchmark fails when the second
half's mean of any grows more than 25% over the first half's, or when a message sent
early in the run is still waiting at its end. Writes the samples (JSON lines) and a
PNG of them over time.

    python bench/soak.py [--minutes 30] [--accounts 20] [--every 10] [--out target/bench/soak]

Each account sends a message every 250 ms (its limit takes one per 200 ms), a campaign
of 20 every fifth minute, through the edge with its own token (the edge's per-account
API-call limits off, as for any load test).
"""

import argparse
import json
import os
import sys
import threading
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
from devstack.mint_jwt import mint  # noqa: E402
from devstack.system import LocalSystem, Ports  # noqa: E402
from devstack.windows import max_in_window  # noqa: E402
from goals import Goals  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def redis_figures(port: int) -> tuple[float, int]:
    import subprocess
    info = subprocess.run(["redis-cli", "-p", str(port), "INFO", "memory"], capture_output=True, text=True, check=True).stdout
    used = next(int(l.split(":")[1]) for l in info.splitlines() if l.startswith("used_memory:"))
    keys = int(subprocess.run(["redis-cli", "-p", str(port), "DBSIZE"], capture_output=True, text=True, check=True).stdout.strip())
    return used / 2**20, keys


def ledger_waiting(ddb, table: str) -> int:
    """Messages the ledger says are waiting: the sparse waiting index, counted shard by shard."""
    total = 0
    for shard in (f"w{i:x}" for i in range(16)):
        kwargs = {"TableName": table, "IndexName": "waiting-index", "KeyConditionExpression": "waitShard = :s",
                  "ExpressionAttributeValues": {":s": {"S": shard}}, "Select": "COUNT"}
        while True:
            r = ddb.query(**kwargs)
            total += r["Count"]
            if "LastEvaluatedKey" not in r:
                break
            kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]
    return total


class Load:
    """Each account's sender: a message every `period` s, a campaign every `campaign_every` s."""

    def __init__(self, api: str, secret: str, accounts: int, period=0.25, campaign_every=300):
        self.api, self.stop, self.sent, self.errors = api, threading.Event(), [], []
        self.threads = [threading.Thread(target=self._run, args=(f"soak-{uuid.uuid4().hex[:6]}-{i}", secret, period, campaign_every), daemon=True) for i in range(accounts)]
        for t in self.threads:
            t.start()

    def _run(self, account, secret, period, campaign_every):
        session = requests.Session()
        session.headers["authorization"] = f"Bearer {mint(account, secret, 24 * 3600)}"
        n, next_campaign, next_at = 0, time.monotonic() + campaign_every, time.monotonic()
        while not self.stop.is_set():
            body = {"recipientId": f"{account}-fan-{n}", "content": f"soak {n}"}
            if time.monotonic() >= next_campaign:
                body = {"recipientIds": [f"{account}-c{n}-{k}" for k in range(20)], "content": "soak campaign"}
                next_campaign += campaign_every
            try:
                r = session.post(f"{self.api}/send", json=body, timeout=30)
                if r.status_code == 202:
                    a = r.json()
                    self.sent.extend((time.monotonic(), m["messageId"]) for m in a.get("messages", [a]))
                else:
                    self.errors.append(r.status_code)
            except requests.RequestException as e:
                self.errors.append(type(e).__name__)
            n += 1
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def plot(samples, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [(s["t"] - samples[0]["t"]) / 60 for s in samples]
    panels = [("workerRssMiB", "worker RSS (MiB)"), ("redisMemoryMiB", "Redis used memory (MiB)"),
              ("redisKeys", "Redis keys"), ("ledgerWaiting", "ledger: messages waiting")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 10), sharex=True)
    for ax, (key, label) in zip(axes, panels):
        ax.plot(t, [s[key] for s in samples], marker=".", linewidth=1)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(f"soak: {len(samples)} samples over {t[-1]:.1f} min, {samples[-1]['delivered']} messages delivered")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--accounts", type=int, default=20)
    ap.add_argument("--every", type=float, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "bench" / "soak")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    goals = Goals("bench/soak.sh")
    home = args.out / "home"
    home.mkdir(parents=True, exist_ok=True)
    # A load test: the edge's per-account API-call limits (60 sends a minute) off.
    (home / ".dev.vars").write_text((ROOT / ".dev.vars.example").read_text() + '\nAPI_CALL_LIMITS="false"\n')
    system = LocalSystem(Ports.free(), home)
    system.start(say=lambda s: print(s, file=sys.stderr))
    samples, load = [], None
    try:
        ddb = prov.client("dynamodb", system.resources.endpoint)
        secret = system.edge_settings["JWT_SECRET"]
        load = Load(system.api, secret, args.accounts)
        started = time.monotonic()
        with open(args.out / "samples.jsonl", "w") as f:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.every)
                memory, keys = redis_figures(system.ports.redis)
                delivered = len(requests.get(system.gateway + "/deliveries", timeout=60).json())
                s = {"t": time.time(), "workerRssMiB": round(rss_mib(system.parts["worker"].proc.pid), 1), "redisMemoryMiB": round(memory, 2),
                     "redisKeys": keys, "ledgerWaiting": ledger_waiting(ddb, system.resources.table), "sent": len(load.sent), "delivered": delivered,
                     "edgeErrors": len(load.errors)}
                samples.append(s)
                f.write(json.dumps(s) + "\n")
                f.flush()
                print(json.dumps(s), file=sys.stderr)
        load.finish()
        # Everything accepted in the first half has long been delivered by the end.
        early = {mid for t, mid in load.sent if t - started < args.minutes * 30}
        records = requests.get(system.gateway + "/deliveries", timeout=60).json()
        refused = requests.get(system.gateway + "/refused", timeout=60).json()
        got = {d["messageId"] for d in records}
    finally:
        if load:
            load.finish()
        system.stop()
    plot(samples, args.out / "soak.png")
    half = len(samples) // 2
    summary = {"minutes": args.minutes, "samples": len(samples), "accepted": len(load.sent), "delivered": samples[-1]["delivered"],
               "edgeErrors": len(load.errors), "png": str(args.out / "soak.png")}
    for key in ("workerRssMiB", "redisMemoryMiB", "redisKeys", "ledgerWaiting"):
        first, second = [s[key] for s in samples[:half]], [s[key] for s in samples[half:]]
        summary[key] = {"start": samples[0][key], "end": samples[-1][key], "firstHalfMean": round(sum(first) / len(first), 2), "secondHalfMean": round(sum(second) / len(second), 2)}
        # Flat: the second half no more than a quarter above the first (and a little slack
        # for what is near zero).
        goals.at_most(f"{key}: second half mean over the first's", round(summary[key]["secondHalfMean"] / max(summary[key]["firstHalfMean"], 1), 2), 1.25)
    goals.equal("messages of the first half not delivered by the end", len(early - got), 0)
    goals.equal("messages delivered more than once", len(records) - len(got), 0)
    # The limit at the gateway, every account, refused sends included (they reached it).
    limit = system.limit
    sends = {}
    for d in records + refused:
        sends.setdefault(d["accountId"], []).append(datetime.fromisoformat(d["receivedAt"].replace("Z", "+00:00")).timestamp() * 1000)
    summary["worstWindowCount"] = max((max_in_window(t, limit["window_ms"]) for t in sends.values()), default=None)
    goals.at_most("worst rolling-window count of an account", summary["worstWindowCount"], limit["max"])
    goals.equal("edge errors", len(load.errors), 0)
    print(json.dumps(summary, indent=1))
    goals.finish()


if __name__ == "__main__":
    main()
