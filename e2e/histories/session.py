"""Running plans: one history (carried out, checked, saved under
target/e2e-logs/histories/<name>/), and the search for a shorter plan that fails the
same way (`shrink`: each attempt is a whole history again, so it is given a budget)."""

import json
import time

from histories import plan as plans
from histories.check import check
from histories.run import Driver
from histories.system import HistorySystem


def run(system: HistorySystem, plan: plans.Plan, name: str):
    """Carries `plan` out and checks it: (history, violations)."""
    h = Driver(system, plan, name).run()
    violations = check(h)
    out = system.home / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(h.to_json(), indent=1, default=str))
    (out / "final.json").write_text(json.dumps(h.final, indent=1, default=str))
    (out / "violations.txt").write_text("\n".join(map(str, violations)) + "\n")
    return h, violations


def kinds(violations) -> set:
    return {v.kind for v in violations}


def shrink(system: HistorySystem, plan: plans.Plan, wanted: set, budget: int, say=print):
    """Drops operations while the history still shows one of the `wanted` violations:
    the faults one by one, then halves and quarters of the rest. At most `budget`
    histories. Returns the shortest failing plan found and its violations."""
    best, best_v = plan, None
    tried = 0

    def attempt(candidate):
        nonlocal tried
        tried += 1
        _, v = run(system, candidate, f"shrink{plan.seed % 10000}-{tried}")
        return v if kinds(v) & wanted else None

    def chunks(ops, parts):
        size = max(1, len(ops) // parts)
        return [ops[i:i + size] for i in range(0, len(ops), size)]

    for parts in (2, 4):
        others = [o for o in best.ops if o.kind not in plans.FAULTS and o.kind not in ("snapshot", "stale")]
        for chunk in chunks(others, parts):
            if tried >= budget:
                return best, best_v
            candidate = best.without({o.n for o in chunk})
            v = attempt(candidate)
            if v:
                best, best_v = candidate, v
                say(f"  shrunk to {len(best.ops)} operations")
    for op in [o for o in best.ops if o.kind in plans.FAULTS or o.kind in ("snapshot", "stale")]:
        if tried >= budget:
            break
        candidate = best.without({op.n})
        v = attempt(candidate)
        if v:
            best, best_v = candidate, v
            say(f"  shrunk to {len(best.ops)} operations (without {op.describe()})")
    return best, best_v


def report(plan: plans.Plan, violations, h=None) -> str:
    lines = [f"seed {plan.seed} ({'cluster' if plan.cluster else 'single Redis'}), features: {', '.join(plan.features)}"]
    if h is not None:
        lines.append(f"accounts {', '.join(h.accounts)}; prefix {h.prefix}; started {time.strftime('%H:%M:%S', time.localtime(h.started_ms / 1000))}")
    lines += ["plan:"] + [f"  {o.describe()}" for o in plan.ops]
    by_kind = {}
    for v in violations:
        by_kind.setdefault(v.kind, []).append(v)
    lines.append(f"violations ({len(violations)}):")
    for kind, vs in sorted(by_kind.items()):
        lines += [f"  {v}" for v in vs[:6]]
        if len(vs) > 6:
            lines.append(f"  ... and {len(vs) - 6} more [{kind}]")
    return "\n".join(lines)
