#!/usr/bin/env bash
# Edge benchmark: our Rust edge and the JS peer (jose + aws4fetch) through the same
# harness (the peer's bench.sh: wrangler dev with the inspector off, an nginx AWS stub,
# wrk), several runs alternating, then the median worker CPU µs per POST /send of each,
# the ratio, the gzip size of both bundles and the time to the first 202 after start.
#
#   bench/edge.sh [RUNS=3] [DURATION=10s]        (env: PEER_DIR, the js-edge peer folder)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
runs=${RUNS:-3}
duration=${DURATION:-10s}
work=$root/target/bench
out=$work/edge-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$work" "$out"

install_tools
peer=$(bash "$root/bench/peer.sh" js-edge)
bash "$root/scripts/build-edge.sh"

for r in $(seq 1 "$runs"); do
  for who in js rust; do
    echo "==> run $r/$runs: $who"
    if [ "$who" = js ]; then
      (cd "$peer" && ./bench.sh . --runner api --bundle -d "$duration" --out "$out/js-$r") > "$out/js-$r.txt" 2>&1
    else
      (cd "$peer" && EDGE_SKIP_BUILD=1 ./bench.sh "$root" --vars "$root/bench/edge.vars" --runner api --bundle -d "$duration" --startup-timeout 900 --out "$out/rust-$r") > "$out/rust-$r.txt" 2>&1
    fi
  done
done
python3 "$root/bench/edge_summary.py" "$out" "$runs"
