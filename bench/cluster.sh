#!/usr/bin/env bash
# Cluster benchmark: the dispatch benchmark (bench/scheduler.sh's load: 1,000 accounts,
# 100,000 messages, a limit enforced but not binding, no-op gateway) on a single Redis
# with one shard and on a local Redis Cluster (3 primaries, 3 replicas on this machine,
# devstack/cluster.py) with SHARDS shards, without and with REDIS_WAIT_REPLICAS=1 (each
# take waits for its replica), run after run. Prints each run as JSON, then
# the medians: messages/s, Redis round trips per message, and how evenly the shards
# carried the messages (the busiest and the idlest shard against an even split).
#
#   bench/cluster.sh [RUNS=3] [SHARDS=16]
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
runs=${RUNS:-3}
shards=${SHARDS:-16}
work=$root/target/bench
mkdir -p "$work"
install_tools
cargo build --release --locked -q -p worker-native --example dispatch_bench

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$work/redis-$port.pid" --logfile "$work/redis-$port.log" --dir "$work"
cluster_dir=$work/cluster-$$
urls=$(cd "$root" && "$PYTHON_VENV/bin/python" -m devstack.cluster start "$cluster_dir")
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; (cd "$root" && "$PYTHON_VENV/bin/python" -m devstack.cluster stop "$cluster_dir")' EXIT
sleep 0.5

bench=$root/target/release/examples/dispatch_bench
results=$work/cluster-$(date -u +%Y%m%dT%H%M%SZ).jsonl
for r in $(seq 1 "$runs"); do
  echo "==> run $r/$runs" >&2
  "$bench" --redis "redis://127.0.0.1:$port" --accounts 1000 --messages 100000 | tee -a "$results"
  "$bench" --redis "$urls" --cluster --shards "$shards" --accounts 1000 --messages 100000 | tee -a "$results"
  "$bench" --redis "$urls" --cluster --shards "$shards" --wait-replicas 1 --accounts 1000 --messages 100000 | tee -a "$results"
done
python3 "$root/bench/cluster_summary.py" "$results"
