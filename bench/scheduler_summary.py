"""Summarizes bench/scheduler.sh: medians of our dispatch and BullMQ's raw scenario;
exits non-zero when a figure is missing, a run delivered a message twice or missed one,
or a goal is missed (>= 30,000 messages/s, >= 1.5x BullMQ; under the credential's limit:
never over it in any window, >= 95% of its rate, every account within one turn of an
even share of the first half of the sends)."""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goals import Goals  # noqa: E402


def main(path: str) -> None:
    goals = Goals("bench/scheduler.sh")
    ours, bull, credential = [], [], []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            scenario = r.get("scenario")
            (ours if scenario == "our-dispatch" else credential if scenario == "our-dispatch-credential-limit" else bull).append(r)
    goals.at_least("our runs", len(ours), 1)
    goals.at_least("BullMQ runs", len(bull), 1)
    for i, r in enumerate(ours, 1):
        goals.equal(f"run {i}: messages delivered", r.get("delivered"), r.get("messages"))
        goals.equal(f"run {i}: distinct messages delivered", r.get("distinctDelivered"), r.get("messages"))
    rate = statistics.median(r["dispatchMessagesPerSec"] for r in ours) if ours else None
    bull_rate = statistics.median(r["jobsPerSec"] for r in bull) if bull and all("jobsPerSec" in r for r in bull) else None
    if ours:
        trips = statistics.median(r["dispatchRoundTripsPerMessage"] for r in ours)
        all_trips = statistics.median(r["roundTripsPerMessage"] for r in ours)
        print(f"ours:   {rate:.0f} messages/s dispatched (per-account limit enforced, {ours[0].get('marginMs', 0)} ms margin), "
              f"{trips:.4f} Redis round trips per message dispatched, {all_trips:.3f} with enqueue (batches of 10)")
    if bull_rate:
        print(f"BullMQ: {bull_rate:.0f} jobs/s (raw, no per-account limit)")
    goals.at_least("our messages/s dispatched", rate, 30_000)
    goals.at_least("ratio ours/BullMQ", round(rate / bull_rate, 2) if rate and bull_rate else None, 1.5)
    for r in credential:
        name = f"credential {r['credentialMax']}/{r['credentialWindowMs']} ms, {r['accounts']} accounts"
        print(f"{name}: worst window {r['worstWindow']} (limit {r['credentialMax']}), {r['sendsPerSec']:.0f} sends/s (limit's rate "
              f"{r['limitPerSec']:.0f}), first-half shares {r['firstHalfShareMinOverEven']:.2f}-{r['firstHalfShareMaxOverEven']:.2f} of even, "
              f"{r['dispatchRoundTripsPerMessage']:.1f} Redis round trips per message")
        goals.equal(f"{name}: messages delivered once", (r["delivered"], r["distinctDelivered"]), (r["messages"], r["messages"]))
        goals.at_most(f"{name}: worst window", r["worstWindow"], r["credentialMax"])
        goals.at_least(f"{name}: rate over the limit's", round(r["sendsPerSec"] / r["limitPerSec"], 3), 0.95)
        even = r["messages"] / r["accounts"] / 2
        goals.at_least(f"{name}: least share", round(r["firstHalfShareMinOverEven"] * even), round(even) - 1)
        goals.at_most(f"{name}: most share", round(r["firstHalfShareMaxOverEven"] * even), round(even) + 1)
    goals.finish()


if __name__ == "__main__":
    main(sys.argv[1])
