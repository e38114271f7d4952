#!/usr/bin/env bash
# Worker benchmarks (see bench/worker_bench.py): ingest cost, memory under a 1M backlog,
# limit accuracy at scale with a picture, beside the BullMQ peer's workaround.
#   bench/worker.sh ingest|memory|accuracy|all [--window-ms N --margin-ms N]
#   (env: PEER_DIR, the bullmq peer folder)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
install_tools
cargo build --release --locked -q -p worker-native --bins --example dispatch_bench
what=${1:-all}
for w in $([ "$what" = all ] && echo ingest memory accuracy || echo "$what"); do
  "$PYTHON_VENV/bin/python" "$root/bench/worker_bench.py" "$w" "${@:2}"
done
