# Pinned tool versions and where they are cached; sourced by the other scripts.
# shellcheck shell=bash
root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
TOOLS_CACHE=${TOOLS_CACHE:-$HOME/.cache/onlyfans-messaging}
WORKER_BUILD_VERSION=0.8.7
# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/,""); print; exit}' "$root/Cargo.lock" 2>/dev/null || true)
WASM_BINDGEN_VERSION=${WASM_BINDGEN_VERSION:-0.2.130}
WORKER_BUILD_DIR=$TOOLS_CACHE/worker-build-$WORKER_BUILD_VERSION
WASM_BINDGEN_DIR=$TOOLS_CACHE/wasm-bindgen-$WASM_BINDGEN_VERSION
# The AWS emulator (MiniStack) and the Python the local run and the tests use, in one
# venv keyed by the requirements it was made from.
PYTHON_VENV=$TOOLS_CACHE/pyenv-$(sha256sum "$root/devstack/requirements.txt" | cut -c1-12)
export TOOLS_CACHE WORKER_BUILD_DIR WASM_BINDGEN_DIR PYTHON_VENV
export PATH="$WORKER_BUILD_DIR/bin:$WASM_BINDGEN_DIR/bin:$root/node_modules/.bin:$PATH"
export WASM_BINDGEN_BIN="$WASM_BINDGEN_DIR/bin/wasm-bindgen"
export WASM_OPT_BIN="$root/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$root/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
