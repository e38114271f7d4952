#!/usr/bin/env bash
# The history checker on random seeds (e2e/histories): random interleavings of
# operations and faults against the real system, every fourth on a Redis Cluster, each
# checked against the system's promises; a failing seed is shrunk and printed with its
# history. Prints each history's figures and the totals (histories, operations, faults,
# requests, arrivals at the gateway); exits 1 on any violation.
#
#   bench/histories.sh N            N random histories
#   bench/histories.sh --minutes M  for M minutes
#   bench/histories.sh --seed S     one seed again (--cluster: on a Redis Cluster)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
install_tools
bash "$root/scripts/build-edge.sh"
cargo build --locked -q -p worker-native --bins
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
  set -- --histories "$1" "${@:2}"
fi
cd "$root/e2e"
exec "$PYTHON_VENV/bin/python" -m histories "$@"
