"""What a delivered message costs the ledger, metered: `bench/cost.py --check` runs the
whole system (its own emulator, edge, a worker of this build, Redis, the gateway stub)
behind metering proxies, sends single messages and campaigns of 100 and 2,000
recipients, and fails when a campaign message's write units grow with the campaign's
size (more than 10 % from 100 to 2,000) or a case exceeds its ceiling (bench/cost.py,
`CEILINGS`). The units are the emulator's answers to `ReturnConsumedCapacity`, not an
estimate."""

import json
import os
import subprocess
import sys

from devstack import stack
from harness import LOGS, figure

ROOT = stack.ROOT


def test_a_campaign_message_costs_the_same_at_100_and_2000_recipients():
    out = LOGS / "cost"
    env = {**os.environ, "WORKER_PROFILE": os.environ.get("WORKER_PROFILE", "debug")}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "cost.py"), "--sizes", "100,2000", "--singles", "10", "--cases", "single,campaign",
                          "--check", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    print(run.stdout[-4000:], run.stderr[-4000:])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    [result] = [json.loads(p.read_text()) for p in out.glob("cost-*/result.json")]
    per_message = {r["case"]: r["writeUnits"] for r in result["rows"]}
    assert set(per_message) == {"single", "campaign-100", "campaign-2000"}, per_message
    figure("write_units_per_message", **{case.replace("-", "_"): units for case, units in per_message.items()})
