#!/usr/bin/env bash
# Runs every test: formatting and lints, the host unit tests of all crates, the schedule
# tests on one Redis and on a Redis Cluster, then the end-to-end suite against the edge
# under `wrangler dev` and the AWS emulator (each part started on free ports and stopped
# by process group), the history checker's fixed seeds among it. Installs what is
# missing first.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$root"
install_tools

echo "==> formatting and lints (cargo fmt --check, clippy -D warnings)"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> the fuzz targets still build (cargo check; bench/fuzz.sh runs them)"
cargo check --manifest-path fuzz/Cargo.toml --bins --locked

echo "==> host tests (cargo test)"
cargo test --workspace --locked

echo "==> the schedule and credential tests again, on a local Redis Cluster (3 primaries, 3 replicas, 4 shards)"
cluster_dir=$root/target/redis-cluster
rm -rf "$cluster_dir"
cluster_urls=$("$PYTHON_VENV/bin/python" -m devstack.cluster start "$cluster_dir")
trap '"$PYTHON_VENV/bin/python" -m devstack.cluster stop "$cluster_dir"' EXIT
TEST_REDIS_CLUSTER=$cluster_urls TEST_SCHEDULE_SHARDS=4 cargo test --locked -p worker-native --test schedule --test credential
"$PYTHON_VENV/bin/python" -m devstack.cluster stop "$cluster_dir"
trap - EXIT

echo "==> the edge's JS glue (node --test)"
node --test edge/js/

echo "==> building the edge Worker and the native worker"
bash scripts/build-edge.sh
cargo build --locked -p worker-native --bins

echo "==> end-to-end tests (wrangler dev, worker processes, Redis, AWS emulator, gateway stub)"
"$PYTHON_VENV/bin/python" -m pytest e2e -q -p no:cacheprovider "$@"
if [ -f target/e2e-logs/figures.jsonl ]; then
  echo "==> measured figures (target/e2e-logs/figures.jsonl)"
  cat target/e2e-logs/figures.jsonl
fi
