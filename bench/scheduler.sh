#!/usr/bin/env bash
# Scheduler benchmark: our dispatch path (the worker's own schedule and dispatcher,
# no-op gateway, no SQS) with 1,000 accounts and a backlog of 100,000 messages whose
# limit is enforced (with the default 1% margin) but does not bind, back to back with
# the BullMQ peer's raw scenario (no per-account limit at all) on the same Redis. Prints
# each run as JSON, then the medians: messages/s, Redis round trips per message, and
# the ratio to BullMQ. Then the gateway credential's limit binding (every account
# through one API key): 1,000 accounts × 5 under 1,000 a second, 100 × 30 under 200 a
# second: the most sends in any window (never over), the rate against the limit's and
# the accounts' shares of the first half of the sends.
#
#   bench/scheduler.sh [RUNS=3]               (env: PEER_DIR, the bullmq peer folder)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
runs=${RUNS:-3}
work=$root/target/bench
install_tools
peer=$(bash "$root/bench/peer.sh" bullmq)
cargo build --release --locked -q -p worker-native --example dispatch_bench

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$work/redis-$port.pid" --logfile "$work/redis-$port.log" --dir "$work"
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true' EXIT
sleep 0.5

results=$work/scheduler-$(date -u +%Y%m%dT%H%M%SZ).jsonl
for r in $(seq 1 "$runs"); do
  echo "==> run $r/$runs" >&2
  "$root/target/release/examples/dispatch_bench" --redis "redis://127.0.0.1:$port" --accounts 1000 --messages 100000 | tee -a "$results"
  (cd "$peer" && node bench.mjs --scenario=raw --concurrency=16 --port="$port" --n=100000 --accounts=1000) | tail -1 | tee -a "$results"
done
echo "==> the credential's limit binding" >&2
"$root/target/release/examples/dispatch_bench" --redis "redis://127.0.0.1:$port" --accounts 1000 --messages 5000 --credential 1000/1000 | tee -a "$results"
"$root/target/release/examples/dispatch_bench" --redis "redis://127.0.0.1:$port" --accounts 100 --messages 3000 --credential 200/1000 | tee -a "$results"
python3 "$root/bench/scheduler_summary.py" "$results"
