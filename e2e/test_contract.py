"""Property-based tests of the API against its own OpenAPI description
(`edge/openapi.json`) with schemathesis: requests generated from the description, valid
and not, sent to the edge under `wrangler dev` with the emulator behind it; every answer
must have a status the description lists for its route, a body matching its schema,
never a 5xx and never a secret. A bounded run here (`CONTRACT_EXAMPLES` cases per
route, 25 by default, a fixed seed: `CONTRACT_SEED`); a longer one is `bench/contract.sh`."""

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import BASE, JWT_SECRET, LOGS, account, edge_settings, start_edge, token
from devstack import stack

SPEC = Path(stack.ROOT) / "edge" / "openapi.json"
# What every answer must satisfy. Not `positive_data_acceptance`: a valid request may
# still be refused for what the description cannot say (an id of another account is
# 404, a retry of a message that did not fail is 409); those statuses are described.
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,missing_required_header,unsupported_method"


def run_schemathesis(base_url, tok, examples, report_dir, seed, extra=()):
    """One schemathesis run against `base_url` with `tok`, every exchange written to
    `report_dir/answers.har`; (exit code, output). One worker thread: CPython 3.11's AST
    constructor keeps its recursion depth in state the threads share, so hypothesis's
    `ast.parse` of its filters in two threads at once can fail with "AST constructor
    recursion depth mismatch" (python/cpython#106905) — a failure of the tool, not of the edge."""
    cmd = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(Path(__file__).parent / "schemathesis.toml"),
           "run", str(SPEC), "--url", base_url,
           "--header", f"Authorization: Bearer {tok}", "--max-examples", str(examples), "--seed", seed,
           "--checks", CHECKS, "--workers", "1", "--request-timeout", "30", "--no-color",
           "--report", "har", "--report-har-path", str(report_dir / "answers.har"), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    return out.returncode, out.stdout + out.stderr


def test_generated_requests_get_documented_answers_and_no_secret(aws):
    # An edge of its own without the per-account API-call limits (one token sends every
    # generated request; its 429s would hide the answers under test).
    part, edge = start_edge("edge-contract", edge_settings(aws, API_CALL_LIMITS="false"))
    report = LOGS / "schemathesis"
    report.mkdir(parents=True, exist_ok=True)
    try:
        code, output = run_schemathesis(edge.url + BASE, token(account(), exp_in=3600), int(os.environ.get("CONTRACT_EXAMPLES", "25")), report,
                                        seed=os.environ.get("CONTRACT_SEED", "20261202"))
    finally:
        part.stop()
    (LOGS / "schemathesis.txt").write_text(output)
    assert code == 0, output[-6000:]
    har = json.loads((report / "answers.har").read_text())
    answers = [e["response"] for e in har["log"]["entries"]]
    assert len(answers) >= 100, f"only {len(answers)} requests made"
    statuses = sorted({a["status"] for a in answers})
    assert all(s < 500 for s in statuses), statuses
    bodies = "\n".join(a.get("content", {}).get("text", "") or "" for a in answers)
    secrets = [JWT_SECRET, aws.secret_access_key, aws.worker_secret]
    leaked = [s[:4] + "…" for s in secrets if s and s in bodies]
    assert not leaked, f"secrets in answers: {leaked}"
    print(f"figure: schemathesis requests = {len(answers)}, statuses = {statuses}")
