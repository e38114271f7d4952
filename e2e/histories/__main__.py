"""`python -m histories` (from e2e/, as bench/histories.sh runs it): random seeds against
the real system until N histories or M minutes, every fourth on a Redis Cluster; prints
each history's figures, shrinks the failing ones, and the totals. Exits 1 on any
violation.

    python -m histories --histories 5
    python -m histories --minutes 30 [--cluster-every 4] [--shrink 6]
    python -m histories --seed 1234 [--cluster]      # one seed again
"""

import argparse
import random
import sys
import time

from histories import plan as plans
from histories import session
from histories.system import HistorySystem


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m histories")
    p.add_argument("--histories", type=int, default=0, help="how many random histories (0: until --minutes)")
    p.add_argument("--minutes", type=float, default=0, help="run random histories for this long")
    p.add_argument("--seed", type=int, action="append", help="run this seed (repeatable) instead of random ones")
    p.add_argument("--cluster", action="store_true", help="with --seed: on a Redis Cluster")
    p.add_argument("--cluster-every", type=int, default=4, help="every Nth random history runs on a Redis Cluster (0: none)")
    p.add_argument("--shrink", type=int, default=6, help="histories a failing seed may spend looking for a shorter plan")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of operations per history")
    p.add_argument("--recheck", nargs="+", metavar="DIR", help="check saved histories again (no system is started)")
    args = p.parse_args()
    if args.recheck:
        from histories.check import check
        from histories.run import History
        for d in args.recheck:
            h = History.load(d)
            violations = check(h)
            print(f"{d}: {'ok' if not violations else ''}")
            print("\n".join(f"  {v}" for v in violations))
        return 0
    if not (args.histories or args.minutes or args.seed):
        p.error("give --histories, --minutes or --seed")

    systems = {}

    def system(cluster: bool) -> HistorySystem:
        if cluster not in systems:
            print(f"==> starting the system ({'Redis Cluster' if cluster else 'single Redis'})", flush=True)
            systems[cluster] = HistorySystem(cluster)
        return systems[cluster]

    rng = random.Random()
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    totals = {"histories": 0, "operations": 0, "faults": 0, "requests": 0, "arrivals": 0, "failed": 0}
    failures = []
    try:
        n = 0
        while True:
            if args.seed:
                if n >= len(args.seed):
                    break
                seed, cluster = args.seed[n], args.cluster
            else:
                if (args.histories and n >= args.histories) or (deadline and time.monotonic() > deadline):
                    break
                seed = rng.randrange(1, 2**31)
                cluster = bool(args.cluster_every) and n % args.cluster_every == args.cluster_every - 1
            n += 1
            plan = plans.generate(seed, cluster, args.duration)
            started = time.monotonic()
            h, violations = session.run(system(cluster), plan, f"h{n}s{seed % 100000}")
            faults = sum(1 for o in plan.ops if o.kind in plans.FAULTS or o.kind == "stale")
            requests = sum(1 for e in h.events if e["kind"] in ("send", "cancel", "cancel_campaign", "retry", "pause", "resume"))
            arrivals = sum(len(v) for v in h.final.get("deliveries", {}).values()) + sum(len(v) for v in h.final.get("refused", {}).values())
            for k, v in (("histories", 1), ("operations", len(plan.ops)), ("faults", faults), ("requests", requests), ("arrivals", arrivals)):
                totals[k] += v
            verdict = "ok" if not violations else f"FAILED ({', '.join(sorted(session.kinds(violations)))})"
            print(f"history {n}: seed {seed}{' cluster' if cluster else ''}: {len(plan.ops)} operations, {faults} faults, {requests} requests, "
                  f"{arrivals} arrivals at the gateway, {time.monotonic() - started:.0f} s: {verdict}", flush=True)
            if violations:
                totals["failed"] += 1
                print(session.report(plan, violations, h), flush=True)
                if args.shrink:
                    short, short_v = session.shrink(system(cluster), plan, session.kinds(violations), args.shrink)
                    if short_v:
                        print(f"shortest failing plan found ({len(short.ops)} of {len(plan.ops)} operations):\n" + session.report(short, short_v),
                              flush=True)
                failures.append((seed, cluster))
    finally:
        for s in systems.values():
            s.stop()
    print(f"==> {totals['histories']} histories, {totals['operations']} operations, {totals['faults']} faults, {totals['requests']} requests, "
          f"{totals['arrivals']} arrivals at the gateway; {totals['failed']} failed" + (f": seeds {failures}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
