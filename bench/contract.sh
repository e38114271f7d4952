#!/usr/bin/env bash
# A longer property-based run of the API against its OpenAPI description than the test
# command's (e2e/test_contract.py: 25 cases per route): EXAMPLES cases per route (500 by
# default) and SEED (a new one each run unless given), against the edge under
# `wrangler dev` with the AWS emulator. Prints schemathesis's summary; every exchange is
# in target/e2e-logs/schemathesis/answers.har.
#
#   bench/contract.sh [EXAMPLES=500] [SEED=...]
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$root"
install_tools
bash scripts/build-edge.sh
CONTRACT_EXAMPLES=${EXAMPLES:-500} CONTRACT_SEED=${SEED:-$RANDOM$RANDOM} \
  "$PYTHON_VENV/bin/python" -m pytest e2e/test_contract.py -q -p no:cacheprovider -s "$@" || status=$?
sed -n '/SUMMARY/,$p' target/e2e-logs/schemathesis.txt
exit "${status:-0}"
