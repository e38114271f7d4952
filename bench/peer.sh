#!/usr/bin/env bash
# Copies a peer (../shared/peers/NAME, or PEER_DIR) to target/bench/NAME, so nothing is
# written beside the repository, and installs its pinned packages once (and, for the
# js-edge harness, its nginx AWS stub and wrk); prints the folder.
#   bench/peer.sh bullmq|js-edge
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
name=$1
src=${PEER_DIR:-$root/../shared/peers/$name}
dest=$root/target/bench/$name
[ -f "$src/package.json" ] || { echo "bench: no $name peer at $src (set PEER_DIR to the peers/$name folder)" >&2; exit 2; }
if [ "$name" = js-edge ] && { ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; }; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
fi
mkdir -p "$dest"
(cd "$src" && tar --exclude node_modules --exclude results --exclude logs -cf - .) | (cd "$dest" && tar xf -)
(cd "$dest" && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error >&2; })
echo "$dest"
