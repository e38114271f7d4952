#!/usr/bin/env bash
# Runs the whole system locally: Redis, the AWS emulator (queue, dead-letter queue,
# ledger table, IAM users), the stand-in gateway, one native worker and the edge under
# `wrangler dev` on 127.0.0.1:8787. Settings: .dev.vars (edge), .worker.env (worker).
# --real-limit for 10 per 60 s (default: the demo limit, 10 per 2 s); --gateway
# onlyfansapi for the worker to speak OnlyFansAPI.com's protocol to a local stand-in of
# the vendor; --help for ports.
# Ctrl-C stops everything it started.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$root"
install_tools
bash scripts/build-edge.sh
cargo build --locked -p worker-native --bins
exec "$PYTHON_VENV/bin/python" -m devstack.run "$@"
