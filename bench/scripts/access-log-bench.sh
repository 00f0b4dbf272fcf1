#!/usr/bin/env bash
# What the access log costs on the hit path: two gateways in the same run,
# one with `[log] access = "off"`, one writing every request to a file,
# cache hits of 1 KiB over keep-alive with wrk. Server CPU per request
# (user + system of the gateway process, its writer thread included) and
# throughput, medians of ROUNDS alternating rounds.
#   bash bench/scripts/access-log-bench.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
secs=${2:-8}
command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release --locked -p ultragate -p ultragate-bench

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for mode in off:29080 on:29082; do
  name=${mode%%:*}
  port=${mode##*:}
  access=off
  [ "$name" = on ] && access="$work/access.log"
  cat >"$work/gw-$name.toml" <<TOML
[api_gateway]
listen = "127.0.0.1:$port"
cores = [1]
[admin]
listen = "127.0.0.1:$((port + 1))"
[upstream.primary]
servers = ["127.0.0.1:29000"]
[log]
access = "$access"
TOML
done

taskset -c 1 ./target/release/bench origin --listen 127.0.0.1:29000 >/dev/null &
pids+=($!)
declare -A server_pid
for name in off on; do
  ULTRAGATE_LOG=warn taskset -c 1 ./target/release/ultragate --config "$work/gw-$name.toml" &
  pids+=($!)
  server_pid[$name]=$!
done
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
path="/hit?size=1024&cache=max-age%3D3600"
for port in 29080 29082; do curl -fsS -o /dev/null "127.0.0.1:$port$path"; done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A rps cpu
for round in $(seq 1 "$rounds"); do
  for target in off:29080 on:29082; do
    name=${target%%:*}
    before=$(ticks "${server_pid[$name]}")
    out=$(taskset -c 0 wrk -t1 -c32 -d"${secs}s" "http://127.0.0.1:${target##*:}$path")
    used=$(($(ticks "${server_pid[$name]}") - before))
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu[$name]+="$(awk -v t="$used" -v hz="$hz" -v n="$total" 'BEGIN {printf "%.3f", t / hz * 1e6 / n}') "
    rps[$name]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
  done
  echo "round $round done" >&2
done
lines=$(wc -l <"$work/access.log")
off_cpu=$(median <<<"${cpu[off]}")
on_cpu=$(median <<<"${cpu[on]}")
echo "| access log | req/s (median of $rounds) | server CPU µs/req (median) | rounds (µs/req) |"
echo "| --- | ---: | ---: | --- |"
echo "| off | $(median <<<"${rps[off]}") | $off_cpu | ${cpu[off]}|"
echo "| on (file) | $(median <<<"${rps[on]}") | $on_cpu | ${cpu[on]}|"
echo
awk -v a="$off_cpu" -v b="$on_cpu" -v n="$lines" 'BEGIN {printf "access log on: %+.1f %% CPU per hit; %d lines written\n", (b / a - 1) * 100, n}'
echo "wrk -t1 -c32 -d${secs}s pinned to core 0, gateways and origin on core 1, 1 KiB cache hits ($(nproc) cores, kernel $(uname -r), $(date -u +%F))"
