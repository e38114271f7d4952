#!/usr/bin/env bash
# Where the edge's CPU goes on POST /send: a V8 CPU profile of our Worker under
# `wrangler dev` (inspector on) while wrk sends, against the peer harness's nginx AWS
# stub; prints self and inclusive time per function and keeps the .cpuprofile (open it
# in Chrome DevTools). Run bench/edge.sh first (it installs and copies the harness).
#
#   bench/edge-profile.sh [SECONDS=10]
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
seconds=${1:-10}
harness=$root/target/bench/js-edge
out=$root/target/bench/profile-$(date -u +%Y%m%dT%H%M%SZ)
[ -x "$harness/bench.sh" ] || { echo "edge-profile: run bench/edge.sh first (it sets up $harness)" >&2; exit 1; }
mkdir -p "$out" /tmp/aws-stub
bash "$root/scripts/build-edge.sh"
stub_port=$(free_port); port=$(free_port); inspector_port=$(free_port)

sed "s/127\.0\.0\.1:4599/127.0.0.1:$stub_port/" "$harness/aws-stub.conf" > "$out/aws-stub.conf"
setsid nginx -p /tmp/aws-stub/ -e /tmp/aws-stub/error.log -c "$out/aws-stub.conf" </dev/null >"$out/stub.log" 2>&1 &
stub=$!
trap 'kill -TERM -- -$stub 2>/dev/null || true' EXIT
sed "s#^AWS_ENDPOINT_URL=.*#AWS_ENDPOINT_URL=http://127.0.0.1:$stub_port#" "$root/bench/edge.vars" > "$out/edge.vars"
secret=$(sed -n 's/^JWT_SECRET=//p' "$out/edge.vars")
token=$(python3 "$harness/mint_jwt.py" "$secret" bench-creator 3600)
cat > "$out/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
wrk.body = [==[{"recipientId":"fan-12345","content":"Hey! Thanks for subscribing. Here is a little welcome gift, check your messages for the full set.","priority":3,"mediaUrls":["https://cdn.example.com/media/welcome-1.jpg","https://cdn.example.com/media/welcome-2.jpg"],"metadata":{"campaign":"welcome","source":"bench"}}]==]
LUA
cd "$root"
EDGE_SKIP_BUILD=1 WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
  node "$root/bench/edge_profile.mjs" "$root/wrangler.toml" "$out/edge.vars" "$port" "$inspector_port" \
  "$out/post.lua" /api/onlyfans/messaging/send "$seconds" "$out/send.cpuprofile" | tee "$out/summary.txt"
echo "profile: $out/send.cpuprofile"
