#!/usr/bin/env bash
# Prints a dev JWT (HS256, signed with JWT_SECRET from .dev.vars) for an account:
#   scripts/mint-jwt.sh creator-1 [--ttl 3600]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/tool-versions.sh
source "$root/scripts/tool-versions.sh"
cd "$root" && exec "$PYTHON_VENV/bin/python" -m devstack.mint_jwt "$@"
