#!/usr/bin/env bash
# Soak benchmark (bench/soak.py): the whole system at a steady load for MINUTES (30 by
# default), sampling the worker's RSS, Redis's memory and keys and the ledger's waiting
# messages; writes target/bench/soak/samples.jsonl and soak.png.
#   bench/soak.sh [--minutes 30] [--accounts 20] [--every 10]
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
install_tools
cargo build --release --locked -q -p worker-native --bins
"$PYTHON_VENV/bin/python" "$root/bench/soak.py" "$@"
