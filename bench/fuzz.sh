#!/usr/bin/env bash
# Fuzzes the project's parsers with cargo fuzz (libFuzzer, nightly toolchain): each
# target in fuzz/ for SECONDS (60 by default), starting from its committed seed corpus
# (fuzz/corpus/<target>; what a run adds goes to target/fuzz-corpus, not into the
# repository). Prints per target the executions run, the corpus size and whether it
# crashed; exits 1 if one did (the crashing input is in fuzz/artifacts/<target>/).
# Not part of the test command: a crash found here is fixed with a regression test in
# the ordinary suite.
#
#   bench/fuzz.sh [SECONDS=60] [TARGET...]
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
seconds=${1:-60}
shift || true
cd "$root/fuzz"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
summary=()
failed=0
for t in "${targets[@]}"; do
  work=$root/target/fuzz-corpus/$t
  mkdir -p "$work"
  log=$root/target/fuzz-$t.log
  echo "==> $t for ${seconds}s" >&2
  if cargo +nightly fuzz run -O "$t" "$work" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    verdict="no crash"
  else
    verdict="CRASHED (see $log and fuzz/artifacts/$t/)"
    failed=1
  fi
  runs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | awk '{print $2}' | tail -1)
  [ -n "$runs" ] || runs=$(grep -Eo '#[0-9]+' "$log" | tail -1 | tr -d '#')
  summary+=("$(printf '%-18s %12s executions  corpus %5s  %s' "$t" "${runs:-?}" "$(ls "$work" | wc -l)" "$verdict")")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
