#!/usr/bin/env bash
# One deploy command per side (see deploy/README.md):
#   scripts/deploy.sh aws ENV [--param Key=Value ...] [--edge-vars FILE] [--worker-env FILE]
#   scripts/deploy.sh edge ENV [--stack NAME] [--dry-run]
# Runs deploy/deploy.py with the project's Python (boto3), installed if missing.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
if [ ! -x "$PYTHON_VENV/bin/python" ]; then
  bash "$root/scripts/install-tools.sh"
fi
exec "$PYTHON_VENV/bin/python" "$root/deploy/deploy.py" "$@"
