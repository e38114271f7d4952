#!/usr/bin/env bash
# Copies the BullMQ peer (../shared/peers/bullmq, or PEER_DIR) to target/bench/bullmq
# and installs its pinned packages once; prints the folder. Used by scheduler.sh and
# worker.sh, which run the peer on their own Redis.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peer_src=${PEER_DIR:-$root/../shared/peers/bullmq}
dest=$root/target/bench/bullmq
[ -f "$peer_src/bench.mjs" ] || { echo "bench: no BullMQ peer at $peer_src (set PEER_DIR to the peers/bullmq folder)" >&2; exit 2; }
mkdir -p "$dest"
(cd "$peer_src" && tar --exclude node_modules --exclude results --exclude logs -cf - .) | (cd "$dest" && tar xf -)
(cd "$dest" && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error >&2; })
echo "$dest"
