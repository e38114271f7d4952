#!/usr/bin/env bash
# Builds the edge Worker (Rust -> wasm + JS shim) into edge/build/ with worker-build,
# using the pinned tools from scripts/install-tools.sh. wrangler runs this as its
# [build] command. A build newer than every source is reused; EDGE_SKIP_BUILD=1 reuses
# any existing build (tests build once, then start `wrangler dev` without rebuilding).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
out="$root/edge/build/index_bg.wasm"
if [ -f "$out" ] && [ -f "$root/edge/build/index.js" ]; then
  if [ "${EDGE_SKIP_BUILD:-}" = 1 ] || [ -z "$(cd "$root" && find edge/src edge/js edge/openapi.json console shared/src edge/Cargo.toml shared/Cargo.toml Cargo.toml Cargo.lock -newer "$out" -print -quit)" ]; then
    exit 0
  fi
fi
for tool in "$WORKER_BUILD_DIR/bin/worker-build" "$WASM_BINDGEN_BIN" "$WASM_OPT_BIN" "$ESBUILD_BIN"; do
  if [ ! -x "$tool" ]; then
    echo "build-edge: $tool is missing; run scripts/install-tools.sh first" >&2
    exit 1
  fi
done
cd "$root/edge"
exec worker-build --release
