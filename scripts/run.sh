#!/usr/bin/env bash
# Runs the system locally: the AWS emulator (queue, dead-letter queue, ledger table and
# the edge's IAM user created in it) and the edge under `wrangler dev` on
# 127.0.0.1:8787, with settings in .dev.vars. Ctrl-C stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-tools.sh
# shellcheck source=scripts/tool-versions.sh
source scripts/tool-versions.sh
bash scripts/build-edge.sh
exec "$PYTHON_VENV/bin/python" -m devstack.run "$@"
