#!/usr/bin/env bash
# Proxied 1 KiB GETs over keep-alive: the origin straight, ultragate, and
# nginx (proxy_pass with upstream keepalive, one worker), in the same run.
# Servers share core 1; wrk runs pinned to core 0. Rounds alternate the
# targets; the report gives the median of the rounds.
#   bash bench/scripts/proxy-bench.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-8}
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light; }
done
cargo build --release --locked -p ultragate -p ultragate-bench

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cat >"$work/gw.toml" <<TOML
[api_gateway]
listen = "127.0.0.1:28080"
cores = [1]
[admin]
listen = "127.0.0.1:28081"
[upstream.primary]
servers = ["127.0.0.1:28000"]
TOML
cat >"$work/nginx.conf" <<NGX
worker_processes 1;
worker_cpu_affinity 10;
daemon off;
error_log $work/nginx-error.log warn;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:28000; keepalive 64; }
  server {
    listen 127.0.0.1:28090;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX

taskset -c 1 ./target/release/bench origin --listen 127.0.0.1:28000 >/dev/null &
pids+=($!)
ULTRAGATE_LOG=warn taskset -c 1 ./target/release/ultragate --config "$work/gw.toml" &
pids+=($!)
taskset -c 1 nginx -c "$work/nginx.conf" &
pids+=($!)
sleep 1

declare -A rps p50 p99
for round in $(seq 1 "$rounds"); do
  for target in origin:28000 ultragate:28080 nginx:28090; do
    name=${target%%:*}
    out=$(taskset -c 0 wrk -t1 -c32 -d"${secs}s" --latency "http://127.0.0.1:${target##*:}/x?size=1024")
    rps[$name]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    p50[$name]+="$(awk '$1=="50%" {print $2}' <<<"$out") "
    p99[$name]+="$(awk '$1=="99%" {print $2}' <<<"$out") "
  done
  echo "round $round done" >&2
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
to_us() { awk '{v=$1; if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000} else if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1e6}; print v}'; }
echo "| target | req/s (median of $rounds) | p50 µs | p99 µs |"
echo "| --- | ---: | ---: | ---: |"
for name in origin ultragate nginx; do
  r=$(median <<<"${rps[$name]}")
  a=$(tr ' ' '\n' <<<"${p50[$name]}" | grep -v '^$' | to_us | median)
  b=$(tr ' ' '\n' <<<"${p99[$name]}" | grep -v '^$' | to_us | median)
  echo "| $name | $r | $a | $b |"
done
echo "wrk -t1 -c32 -d${secs}s pinned to core 0; servers on core 1 ($(nproc) cores, $(date -u +%F))"
