#!/usr/bin/env bash
# The main job end to end: the test origin (:8000) as primary, the Node.js
# fallback (:3005), and ultragate in front (:8080 data, :8081 admin), with
# sample requests. Stops everything it started on exit.
# Then 5 s of load and the failover drill, and a summary.
#   bash bench/scripts/demo.sh              # runs until Ctrl-C
#   bash bench/scripts/demo.sh --seconds 5  # runs 5 s, then stops
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=0
if [ "${1:-}" = "--seconds" ]; then seconds=${2:?--seconds needs a value}; fi

command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
# The gateway is built with its DPDK data plane, which the drill's DPDK
# fault uses (on a tap in a network namespace, without hugepages). The
# drill's gateway also has the test hooks its cache-corruption fault uses
# (`POST /admin/cache/corrupt`, `[cache] test_hooks`): that build goes to
# its own target directory, so target/release/ultragate stays a
# production build.
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
pkg-config --exists libdpdk 2>/dev/null \
  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libdpdk-dev dpdk; }
cargo build --release --workspace --locked --features ultragate/dpdk
hooks=target/test-hooks
cargo build --release --locked -p ultragate --features dpdk,test-hooks --target-dir "$hooks"

logs=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs were in $logs"
}
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1; see $logs" >&2
  exit 1
}

./target/release/bench origin --listen 127.0.0.1:8000 >"$logs/origin.log" 2>&1 &
pids+=($!)
PORT=3005 HOST=127.0.0.1 node deploy/nodejs-api/server.js >"$logs/nodejs-api.log" 2>&1 &
pids+=($!)
wait_port 8000
wait_port 3005
./target/release/ultragate --config deploy/gateway.toml >"$logs/ultragate.log" 2>&1 &
pids+=($!)
wait_port 8080
wait_port 8081

show() {
  echo "\$ $*"
  "$@"
  echo
}
# A request's status line and the fields that say what the gateway did.
fields() {
  echo "\$ curl -si '$1'"
  curl -s -D - -o /dev/null "$1" | grep -iE '^(HTTP/|x-cache|cache-status|age|x-served-by)' | tr -d '\r'
  echo
}
metric() {
  curl -s http://127.0.0.1:8081/metrics | awk -v s="$1" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'
}
echo "== ultragate demo: origin :8000, nodejs-api :3005, gateway :8080 (admin :8081) =="
show curl -s -i "http://127.0.0.1:8080/hello?size=32"
echo "-- the same cacheable page twice: a MISS that is stored, then a HIT from the gateway's cache --"
fields "http://127.0.0.1:8080/cached?size=64&cache=max-age%3D60"
fields "http://127.0.0.1:8080/cached?size=64&cache=max-age%3D60"
show curl -s -i "http://127.0.0.1:8080/stream?chunked=1&size=16"
show curl -s -i "http://127.0.0.1:8080/broken?garbage=1"
show curl -s -f http://127.0.0.1:8080/health/ready
show curl -s -f http://127.0.0.1:3005/health
echo "== 5 s of load at 2000 req/s through the gateway (bench load: open loop, corrected for coordinated omission) =="
./target/release/bench load --url "http://127.0.0.1:8080/page?size=1024&cache=max-age%3D60" \
  --rate 2000 --duration 5s --connections 16 | tee "$logs/load.txt"
echo
echo "== failover drill: faults under load (its own gateway, origin and fallback on ports 21800-21803; the DPDK fault in a network namespace) =="
drill=ok
./target/release/bench drill --gateway "$hooks/release/ultragate" --log "$logs/drill-gateway.log" \
  >"$logs/drill.txt" 2>"$logs/drill-stderr.log" || drill=failed
echo "(the drill's gateway logs to $logs/drill-gateway.log)"
echo
hits=$(metric 'ultragate_cache_responses_total{result="hit"}')
misses=$(metric 'ultragate_cache_responses_total{result="miss"}')
stale=$(metric 'ultragate_cache_responses_total{result="stale"}')
echo "== summary =="
echo "gateway :8080 in front of the test origin :8000, Node.js fallback :3005"
grep -E "achieved|p99 " "$logs/load.txt" | sed 's/^/load: /'
awk -v h="$hits" -v m="$misses" -v s="$stale" 'BEGIN {
  t = h + m + s
  printf "cache: %d hits, %d misses, %d stale; hit ratio %.1f %%\n", h, m, s, t ? 100 * h / t : 0
}'
echo "failover drill: $drill"
grep -E '^\|' "$logs/drill.txt" || true
sed -n '/^What the times are made of/,$p' "$logs/drill.txt" | grep -v '^gateway log' || true
[ "$drill" = ok ] || { echo "drill errors:"; cat "$logs/drill-stderr.log"; }
echo
cat <<TXT
Try:
  curl -i 'http://127.0.0.1:8080/anything?size=1024'            # 1 KiB through the gateway
  curl -i 'http://127.0.0.1:8080/x?cache=max-age%3D60&status=404'  # shaped by the test origin
  curl -i http://127.0.0.1:8080/admin/config                      # admin from loopback on the data port
  curl -i http://127.0.0.1:8081/health/live                       # admin port
  curl -i http://127.0.0.1:3005/api/items                         # the Node.js fallback
Logs: $logs
TXT
if [ "$seconds" -gt 0 ]; then
  sleep "$seconds"
else
  echo "Ctrl-C stops everything."
  while sleep 3600; do :; done
fi
