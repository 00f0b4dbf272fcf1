#!/usr/bin/env bash
# What one CPU of the Node.js fallback carries: deploy/nodejs-api pinned to
# core 1, `bench load` pinned to core 0, open loop (corrected for
# coordinated omission) at rising rates, ROUNDS times each; reports the
# median P99 per rate and the highest rate up to which every median stays
# within the runbook's 10 ms (a shared machine's spikes move single runs
# both ways; the median of a few does not). That rate per
# CPU sizes the fallback's HPA floor in deploy/k8s/base/nodejs-api (README,
# "Node.js fallback sizing").
#   ROUNDS=3 bash bench/scripts/nodejs-sizing.sh [SECONDS] [RATE...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
rounds=${ROUNDS:-3}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(3000 5000 7000 9000 11000 13000 15000 20000)
cargo build --release --locked -p ultragate-bench
port=39005
PORT=$port HOST=127.0.0.1 taskset -c 1 node deploy/nodejs-api/server.js >/dev/null &
node_pid=$!
trap 'kill "$node_pid" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
url=http://127.0.0.1:$port/api/items
# Warm the JIT.
./target/release/bench load --url "$url" --closed-loop --duration 3s --connections 16 --pin 0 >/dev/null
best=0
failed=0
printf '%-8s %-12s %s\n' RATE P99_MS_MEDIAN "P99_MS (each round)"
for rate in "${rates[@]}"; do
  p99s=()
  for _ in $(seq "$rounds"); do
    json=$(./target/release/bench load --url "$url" --rate "$rate" --duration "${secs}s" --connections 16 --pin 0 --json)
    p99s+=("$(grep -o '"p99_us":[0-9.]*' <<<"$json" | cut -d: -f2)")
  done
  median=$(printf '%s\n' "${p99s[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  each=$(printf '%s\n' "${p99s[@]}" | awk '{ printf "%.2f ", $1 / 1000 }')
  printf '%-8s %-12s %s\n' "$rate" "$(awk -v p="$median" 'BEGIN { printf "%.2f", p / 1000 }')" "$each"
  if [ "$failed" = 0 ] && awk -v p="$median" 'BEGIN { exit !(p <= 10000) }'; then best=$rate; else failed=1; fi
done
echo "P99 <= 10 ms (median of $rounds) up to $best req/s on one CPU"
