#!/usr/bin/env bash
# Balancing with one slow server, same run: three origins, one of them
# 20 ms slower (`bench origin --delay-ms 20`), behind two gateways that
# differ only in `[upstream.primary] balance` (round_robin, p2c_ewma);
# the cache is off so every request reaches a server. Each gateway gets
# the same fixed open-loop rate (`bench load`, corrected for coordinated
# omission); rounds alternate them; the report gives medians of p50/p99
# and how many requests the slow server took.
#   bash bench/scripts/balance-bench.sh [ROUNDS] [SECONDS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-10}
rate=${3:-400}
cargo build --release --locked -p ultragate -p ultragate-bench

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for i in 0 1 2; do
  delay=0
  [ "$i" = 2 ] && delay=20
  ./target/release/bench origin --listen "127.0.0.1:2810$i" --delay-ms "$delay" --name "o$i" >"$work/origin-$i.log" &
  pids+=($!)
done
for mode in round_robin:28110 p2c_ewma:28112; do
  IFS=: read -r balance port <<<"$mode"
  cat >"$work/gw-$balance.toml" <<TOML
[api_gateway]
listen = "127.0.0.1:$port"
cores = [1]
[admin]
listen = "127.0.0.1:$((port + 1))"
[upstream.primary]
servers = ["127.0.0.1:28100", "127.0.0.1:28101", "127.0.0.1:28102"]
balance = "$balance"
[cache]
enabled = false
TOML
  ULTRAGATE_LOG=warn taskset -c 1 ./target/release/ultragate --config "$work/gw-$balance.toml" &
  pids+=($!)
done
sleep 1

# Requests the slow server answered so far, by the gateway's metrics
# (admin port $1).
served() {
  curl -s "http://127.0.0.1:$1/metrics" |
    awk '/^ultragate_upstream_requests_total/ && /server="127.0.0.1:28102"/ { n += $NF } END { print n + 0 }'
}

declare -A p50 p99 slow
for r in $(seq "$rounds"); do
  for mode in round_robin:28110 p2c_ewma:28112; do
    IFS=: read -r balance port <<<"$mode"
    before=$(served $((port + 1)))
    out=$(taskset -c 0 ./target/release/bench load --url "http://127.0.0.1:$port/b?size=1024" \
      --rate "$rate" --duration "${secs}s" --connections 32 --json)
    after=$(served $((port + 1)))
    total=$(echo "$out" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
    p50[$balance]+="$(echo "$out" | sed -n 's/.*"p50_us":\([0-9]*\).*/\1/p') "
    p99[$balance]+="$(echo "$out" | sed -n 's/.*"p99_us":\([0-9]*\).*/\1/p') "
    slow[$balance]+="$(awk -v a="$after" -v b="$before" -v t="$total" 'BEGIN { printf "%.1f", t ? 100 * (a - b) / t : 0 }') "
    echo "round $r $balance: $out" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "| balance | p50 µs | p99 µs | share of the slow server |"
echo "| --- | ---: | ---: | ---: |"
for balance in round_robin p2c_ewma; do
  echo "| $balance | $(echo "${p50[$balance]}" | median) | $(echo "${p99[$balance]}" | median) | $(echo "${slow[$balance]}" | median) % |"
done
