"""Summarizes bench/scheduler.sh: medians of our dispatch and BullMQ's raw scenario."""

import json
import statistics
import sys


def main(path: str) -> None:
    ours, bull = [], []
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        (ours if r.get("scenario") == "our-dispatch" else bull).append(r)
    rate = statistics.median(r["dispatchMessagesPerSec"] for r in ours)
    trips = statistics.median(r["dispatchRoundTripsPerMessage"] for r in ours)
    all_trips = statistics.median(r["roundTripsPerMessage"] for r in ours)
    margin = ours[0].get("marginMs", 0)
    print(f"ours:   {rate:.0f} messages/s dispatched (per-account limit enforced, {margin} ms margin), "
          f"{trips:.4f} Redis round trips per message dispatched, {all_trips:.3f} with enqueue (batches of 10)")
    if bull:
        keys = [k for k in ("jobsPerSec", "throughput", "rate", "jobs_per_sec") if k in bull[0]]
        if keys:
            b = statistics.median(r[keys[0]] for r in bull)
            print(f"BullMQ: {b:.0f} jobs/s (raw, no per-account limit); ratio ours/BullMQ = {rate / b:.2f} (goal >= 1.5)")
        else:
            print("BullMQ:", json.dumps(bull[-1])[:400])


if __name__ == "__main__":
    main(sys.argv[1])
