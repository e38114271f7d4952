#!/usr/bin/env bash
# Installs everything the build, the local run and the tests need that a fresh
# machine lacks. Idempotent: each step is skipped when its result is present.
# Slow builds (worker-build, wasm-bindgen-cli) and the emulator's venv live in a
# cache outside the checkout (TOOLS_CACHE), keyed by version, so a fresh clone on
# the same machine reuses them.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

step() { printf '==> %s\n' "$*" >&2; }

# Debian packages: Redis (the schedule); umoci (checks the worker's OCI image, which
# deploy/image.py builds without Docker); ca-certificates (copied into that image);
# Chromium (the console's tests drive it headless with playwright-core, which would
# otherwise download a browser of its own from a host this machine cannot reach).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (apt)"
  if [ "$(id -u)" != 0 ]; then
    echo "${missing[*]} missing: install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The package starts a system instance; ours are started on free ports per run.
  (service redis-server stop || true) >/dev/null 2>&1
fi

for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    step "adding rustup component $component"
    rustup component add "$component"
  fi
done

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "adding rustup target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

mkdir -p "$TOOLS_CACHE"
if [ ! -x "$WORKER_BUILD_DIR/bin/worker-build" ]; then
  step "building worker-build $WORKER_BUILD_VERSION into $WORKER_BUILD_DIR (several minutes, once)"
  cargo install -q worker-build --version "$WORKER_BUILD_VERSION" --locked --root "$WORKER_BUILD_DIR"
fi
if [ ! -x "$WASM_BINDGEN_DIR/bin/wasm-bindgen" ]; then
  step "building wasm-bindgen-cli $WASM_BINDGEN_VERSION into $WASM_BINDGEN_DIR (several minutes, once)"
  # Not --locked: the CLI's own lockfile names a crate version the registry lacks.
  cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$WASM_BINDGEN_DIR"
fi

if [ ! -f "$PYTHON_VENV/.complete" ]; then
  step "installing the AWS emulator and test tools (devstack/requirements.txt) into $PYTHON_VENV"
  rm -rf "$PYTHON_VENV"
  python3 -m venv "$PYTHON_VENV"
  "$PYTHON_VENV/bin/pip" install -q --disable-pip-version-check -r "$root/devstack/requirements.txt"
  touch "$PYTHON_VENV/.complete"
fi

if [ ! -x "$root/node_modules/.bin/wrangler" ] || [ "$root/package-lock.json" -nt "$root/node_modules/.package-lock.json" ]; then
  step "installing npm packages (wrangler, binaryen, playwright-core, axe-core)"
  (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
fi
step "tools ready"
