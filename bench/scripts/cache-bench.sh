#!/usr/bin/env bash
# 1 KiB cache hits on one pinned core: ultragate against nginx proxy_cache,
# HAProxy's cache and Varnish, plus nginx `return 200` (a static responder:
# the floor of server CPU per request over loopback TCP), in the same run.
# Every server runs on core 1 (one worker/thread where the server allows);
# wrk runs pinned to core 0. Rounds alternate the targets; the table gives
# medians. Server CPU per request = (utime+stime of the server) / requests.
# A second pass offers the same constant rate to every target with
# `bench load` (open loop, corrected for coordinated omission) for the
# latency percentiles at equal load.
#   bash bench/scripts/cache-bench.sh [ROUNDS] [SECONDS] [CONNECTIONS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-6}
conns=${3:-32}
rate=${4:-15000}
pkgs=()
command -v wrk >/dev/null || pkgs+=(wrk)
command -v nginx >/dev/null || pkgs+=(nginx-light)
command -v haproxy >/dev/null || pkgs+=(haproxy)
command -v varnishd >/dev/null || pkgs+=(varnish)
if [ ${#pkgs[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
fi
cargo build --release --locked -p ultragate -p ultragate-bench

work=$(mktemp -d)
chmod 755 "$work" # nginx workers (www-data) write the cache here
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
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
mkdir -p "$work/ngx-cache"
body=$(head -c 1024 /dev/zero | tr '\0' x)
cat >"$work/nginx.conf" <<NGX
worker_processes 1;
worker_cpu_affinity 10;
daemon off;
error_log $work/nginx-error.log warn;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  proxy_cache_path $work/ngx-cache levels=1:2 keys_zone=c:10m max_size=100m inactive=60m use_temp_path=off;
  upstream origin { server 127.0.0.1:28000; keepalive 64; }
  server {
    listen 127.0.0.1:28090;
    location / {
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache c; proxy_cache_valid 200 10m;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
  server {
    listen 127.0.0.1:28091;
    location / { default_type text/plain; return 200 "$body"; }
  }
}
NGX
cat >"$work/haproxy.cfg" <<HAP
global
  nbthread 1
  cpu-map 1/1 1
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
cache c
  total-max-size 64
  max-object-size 100000
  max-age 600
frontend f
  bind 127.0.0.1:28092
  default_backend b
backend b
  http-request cache-use c
  http-response cache-store c
  http-reuse always
  server o 127.0.0.1:28000
HAP

start() { # name cmd...
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
}
taskset -c 0 ./target/release/bench origin --listen 127.0.0.1:28000 >/dev/null &
pids+=($!)
ULTRAGATE_LOG=warn start ultragate taskset -c 1 ./target/release/ultragate --config "$work/gw.toml"
start nginx taskset -c 1 nginx -c "$work/nginx.conf"
start haproxy taskset -c 1 haproxy -db -f "$work/haproxy.cfg"
start varnish taskset -c 1 varnishd -F -n "$work/varnish" -a 127.0.0.1:28093 -b 127.0.0.1:28000 -s malloc,64m \
  -p thread_pools=1 -p thread_pool_min=10 -p thread_pool_max=200
sleep 2

path='/hit?size=1024&cache=max-age%3D600'
declare -A port=([ultragate]=28080 [nginx_cache]=28090 [haproxy]=28092 [varnish]=28093 [nginx_return200]=28091)
declare -A proc=([ultragate]=ultragate [nginx_cache]=nginx [haproxy]=haproxy [varnish]=varnish [nginx_return200]=nginx)
targets=(ultragate nginx_cache haproxy varnish nginx_return200)
for t in "${targets[@]}"; do
  for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:${port[$t]}$path"; done
  curl -s -D - -o /dev/null "http://127.0.0.1:${port[$t]}$path" | grep -iE '^(x-cache|x-cache-status|age|x-varnish):' >"$work/$t.hdr" || true
done

cpu_ticks() { # all processes of a server (nginx and varnish fork workers)
  local root=$1 total=0 p
  for p in $root $(pgrep -P "$root" || true) $(for c in $(pgrep -P "$root" || true); do pgrep -P "$c" || true; done); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
jget() { grep -o "\"$1\":[0-9.]*" <<<"$2" | cut -d: -f2; }
declare -A rps p50 p99 cpu op50 op99 op999 crps
for round in $(seq 1 "$rounds"); do
  for t in "${targets[@]}"; do
    root=$(eval echo "\$pid_${proc[$t]}")
    before=$(cpu_ticks "$root")
    out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:${port[$t]}$path")
    after=$(cpu_ticks "$root")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps[$t]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    p50[$t]+="$(awk '$1=="50%" {print $2}' <<<"$out") "
    p99[$t]+="$(awk '$1=="99%" {print $2}' <<<"$out") "
    cpu[$t]+="$(awk -v d=$((after - before)) -v r="$reqs" -v hz="$hz" 'BEGIN {printf "%.2f", d / hz * 1e6 / r}') "
    json=$(./target/release/bench load --url "http://127.0.0.1:${port[$t]}$path" --closed-loop \
      --duration "${secs}s" --connections 64 --pin 0 --json)
    crps[$t]+="$(jget achieved_rate "$json") "
    json=$(./target/release/bench load --url "http://127.0.0.1:${port[$t]}$path" --rate "$rate" \
      --duration "${secs}s" --connections "$conns" --pin 0 --json)
    op50[$t]+="$(jget p50_us "$json") "
    op99[$t]+="$(jget p99_us "$json") "
    op999[$t]+="$(jget p999_us "$json") "
  done
  echo "round $round done" >&2
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
to_us() { awk '{v=$1; if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000} else if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1e6}; print v}'; }
echo "| target | req/s (wrk) | req/s (bench load, closed loop, 64 conns) | wrk p50 µs | wrk p99 µs | server CPU µs/req | p50 / p99 / p99.9 µs at $rate req/s (bench load, open loop) | hit header |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for t in "${targets[@]}"; do
  r=$(median <<<"${rps[$t]}")
  a=$(tr ' ' '\n' <<<"${p50[$t]}" | grep -v '^$' | to_us | median)
  b=$(tr ' ' '\n' <<<"${p99[$t]}" | grep -v '^$' | to_us | median)
  c=$(median <<<"${cpu[$t]}")
  h=$(tr '\r\n' ' ' <"$work/$t.hdr")
  o="$(median <<<"${op50[$t]}") / $(median <<<"${op99[$t]}") / $(median <<<"${op999[$t]}")"
  cr=$(median <<<"${crps[$t]}")
  echo "| $t | $r | ${cr%.*} | $a | $b | $c | $o | $h |"
done
echo
echo "wrk -t1 -c$conns -d${secs}s pinned to core 0, servers on core 1, median of $rounds rounds; $(nproc) cores; $(date -u +%F)"
