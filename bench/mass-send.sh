#!/usr/bin/env bash
# Mass messages of 1, 100 and 1,000 recipients through the real parts: the edge's AWS
# calls, wall time and CPU per request; Redis bytes per waiting recipient; how fast
# the worker schedules them; keys left after sending (see bench/mass_send.py).
#   bench/mass-send.sh [--content-chars 2000] [--runs 5] [--max 1000]
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
install_tools
bash "$root/scripts/build-edge.sh"
cargo build --release --locked -q -p worker-native --bins
exec "$PYTHON_VENV/bin/python" "$root/bench/mass_send.py" "$@"
