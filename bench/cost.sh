#!/usr/bin/env bash
# What a delivered message costs, metered (DynamoDB units from the emulator's answers,
# SQS and Workers requests, edge CPU) and priced from bench/prices.json: single
# messages, campaigns of each size, a retry and a cancel (see bench/cost.py).
#   bench/cost.sh [--sizes 100,1000,10000] [--singles 20] [--content-chars 2000]
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
install_tools
bash "$root/scripts/build-edge.sh"
cargo build --release --locked -q -p worker-native --bins
exec "$PYTHON_VENV/bin/python" "$root/bench/cost.py" "$@"
