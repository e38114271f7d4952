"""The history checker: features meeting each other, checked the way Jepsen and
FoundationDB-style simulation check systems, over the real parts.

From a seed, `plan` generates a random interleaving of operations (single sends,
campaigns with and without `sendAt`, cancels, retries of failed messages, pause and
resume, SQS duplicates) and faults (worker kill -9, SIGTERM and SIGSTOP, Redis
FLUSHALL and restarts from a stale snapshot, cluster failovers, ledger and queue faults
through the fault proxy) over a few accounts at a compressed limit. `run` carries the
plan out against the real system (`system`: the edge under `wrangler dev`, worker
processes, Redis or a Redis Cluster, the AWS emulator and the gateway stub) and records
the history: every request and answer, every fault, then everything the system says
at the end. `check` holds the promises against the history (the limit, nothing lost,
sent or canceled but never both, duplicates only where documented, the API and the
ledger agreeing, no key left in Redis). `shrink` looks for a shorter plan that fails
the same way. Used by `e2e/test_histories.py` (fixed seeds) and `bench/histories.sh`
(random ones, `python -m histories`).
"""
