"""Summarizes bench/cluster.sh: the medians of the single Redis and the cluster runs,
side by side; exits non-zero when a figure is missing or a run delivered a message
twice or missed one (the cluster's speed on one shared machine is reported, not
judged: its nodes share the cores that a real cluster's would not)."""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goals import Goals  # noqa: E402


def main(path: str) -> None:
    goals = Goals("bench/cluster.sh")
    runs = {"single": [], "cluster": [], "cluster+WAIT": []}
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line)
            runs[r["redis"] + ("+WAIT" if r.get("waitReplicas") else "")].append(r)
    for kind, rs in runs.items():
        goals.at_least(f"{kind} runs", len(rs), 1)
        for i, r in enumerate(rs, 1):
            goals.equal(f"{kind} run {i}: distinct messages delivered", r["distinctDelivered"], r["messages"])
            goals.equal(f"{kind} run {i}: messages delivered", r["delivered"], r["messages"])
    med = {k: {f: statistics.median(r[f] for r in rs) for f in ("dispatchMessagesPerSec", "dispatchRoundTripsPerMessage", "roundTripsPerMessage", "shardMaxOverEven", "shardMinOverEven")} for k, rs in runs.items() if rs}
    for kind, m in med.items():
        shards = runs[kind][0]["shards"]
        print(f"{kind:12} {shards:3} shard(s): {m['dispatchMessagesPerSec']:.0f} messages/s dispatched, "
              f"{m['dispatchRoundTripsPerMessage']:.4f} round trips per message dispatched ({m['roundTripsPerMessage']:.3f} with enqueue), "
              f"shards from {m['shardMinOverEven']:.2f}x to {m['shardMaxOverEven']:.2f}x an even share")
    for kind in ("cluster", "cluster+WAIT"):
        if kind in med and "single" in med:
            print(f"{kind}/single: {med[kind]['dispatchMessagesPerSec'] / med['single']['dispatchMessagesPerSec']:.2f}x messages/s")
    goals.finish()


if __name__ == "__main__":
    main(sys.argv[1])
