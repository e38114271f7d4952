#!/usr/bin/env bash
# Worker benchmarks (see bench/worker_bench.py): ingest cost, memory under a 1M backlog,
# limit accuracy at scale with a picture, beside the BullMQ peer's workaround.
#   bench/worker.sh ingest|memory|accuracy|all [--window-ms N --margin-ms N]
#   (env: PEER_DIR, the bullmq peer folder)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/install-tools.sh"
# shellcheck source=scripts/tool-versions.sh
source "$root/scripts/tool-versions.sh"
cargo build --release --locked -q -p worker-native --bins --example dispatch_bench
what=${1:-all}
for w in $([ "$what" = all ] && echo ingest memory accuracy || echo "$what"); do
  "$PYTHON_VENV/bin/python" "$root/bench/worker_bench.py" "$w" "${@:2}"
done
