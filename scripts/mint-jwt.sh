#!/usr/bin/env bash
# Prints a dev JWT (HS256, signed with JWT_SECRET from .dev.vars) for an account:
#   scripts/mint-jwt.sh creator-1 [--ttl 3600]
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$root" && exec "$PYTHON_VENV/bin/python" -m devstack.mint_jwt "$@"
