#!/usr/bin/env bash
# Proxied 1 KiB GETs over keep-alive, all targets in the same run: the
# origin straight, ultragate on io_uring, ultragate on epoll, and nginx
# (proxy_pass with upstream keepalive, one worker pinned like the gateway).
# The servers (and the origin behind them) share core 1; the load runs
# pinned to core 0. Rounds alternate the targets; the report gives medians.
#   1. throughput: wrk -t1 -c32, as fast as each target answers;
#   2. latency at the same offered rate for every target: `bench load`,
#      open loop corrected for coordinated omission, at RATE_SHARE % of
#      nginx's median throughput from step 1.
#   bash bench/scripts/proxy-bench.sh [ROUNDS] [SECONDS]
# BASELINE=/path/to/an/older/ultragate adds that binary on both backends
# (targets baseline-io_uring and baseline-epoll), for before/after figures
# from the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-8}
rate_share=${RATE_SHARE:-70}
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light; }
done
cargo build --release --locked -p ultragate -p ultragate-bench

work=$(mktemp -d)
pids=()
cleanup() {
  # nginx's master stops its worker on SIGTERM (SIGKILL would orphan it).
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# name:backend:port:binary of every gateway under test.
gateways=(ultragate-io_uring:uring:28080:./target/release/ultragate ultragate-epoll:epoll:28082:./target/release/ultragate)
if [ -n "${BASELINE:-}" ]; then
  gateways+=(baseline-io_uring:uring:28084:"$BASELINE" baseline-epoll:epoll:28086:"$BASELINE")
fi
for gw in "${gateways[@]}"; do
  IFS=: read -r _ backend port _ <<<"$gw"
  cat >"$work/gw-$port.toml" <<TOML
[api_gateway]
listen = "127.0.0.1:$port"
cores = [1]
io_backend = "$backend"
[admin]
listen = "127.0.0.1:$((port + 1))"
[upstream.primary]
servers = ["127.0.0.1:28000"]
TOML
done
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
declare -A server_pid
for gw in "${gateways[@]}"; do
  IFS=: read -r name _ port bin <<<"$gw"
  ULTRAGATE_LOG=warn taskset -c 1 "$bin" --config "$work/gw-$port.toml" &
  pids+=($!)
  server_pid[$name]=$!
done
taskset -c 1 nginx -c "$work/nginx.conf" &
pids+=($!)
sleep 1
server_pid[nginx]=$(pgrep -P "$(cat "$work/nginx.pid")")
server_pid[origin]=${pids[0]}
# CPU time a server used, in clock ticks (user + system).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
targets=(origin:28000)
for gw in "${gateways[@]}"; do
  IFS=: read -r name _ port _ <<<"$gw"
  curl -fsS "127.0.0.1:$((port + 1))/health" | grep -o '"backend":"[a-z_]*"' >&2
  targets+=("$name:$port")
done
targets+=(nginx:28090)
path="/x?size=1024"
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
to_us() { awk '{v=$1; if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000} else if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1e6}; print v}'; }

declare -A rps cpu p50 p99 fp50 fp99 ferr
for round in $(seq 1 "$rounds"); do
  for target in "${targets[@]}"; do
    name=${target%%:*}
    before=$(ticks "${server_pid[$name]}")
    out=$(taskset -c 0 wrk -t1 -c32 -d"${secs}s" --latency "http://127.0.0.1:${target##*:}$path")
    used=$(($(ticks "${server_pid[$name]}") - before))
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu[$name]+="$(awk -v t="$used" -v hz="$hz" -v n="$total" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}') "
    rps[$name]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    p50[$name]+="$(awk '$1=="50%" {print $2}' <<<"$out" | to_us) "
    p99[$name]+="$(awk '$1=="99%" {print $2}' <<<"$out" | to_us) "
  done
  echo "throughput round $round done" >&2
done
nginx_rps=$(median <<<"${rps[nginx]}")
rate=$(awk -v r="$nginx_rps" -v s="$rate_share" 'BEGIN {printf "%d", r * s / 100}')
echo "fixed rate: $rate req/s ($rate_share % of nginx's $nginx_rps)" >&2
for round in $(seq 1 "$rounds"); do
  for target in "${targets[@]:1}"; do
    name=${target%%:*}
    out=$(./target/release/bench load --pin 0 --connections 32 --rate "$rate" --duration "${secs}s" \
      --json --url "http://127.0.0.1:${target##*:}$path")
    fp50[$name]+="$(grep -o '"p50_us":[0-9.]*' <<<"$out" | cut -d: -f2) "
    fp99[$name]+="$(grep -o '"p99_us":[0-9.]*' <<<"$out" | cut -d: -f2) "
    ferr[$name]+="$(grep -o '"errors":[0-9]*' <<<"$out" | cut -d: -f2) "
  done
  echo "fixed-rate round $round done" >&2
done

echo "| target | req/s (wrk, median of $rounds) | vs nginx | server CPU µs/req | p50 µs | p99 µs | p50 µs at $rate req/s | p99 µs at $rate req/s | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for target in "${targets[@]}"; do
  name=${target%%:*}
  r=$(median <<<"${rps[$name]}")
  ratio=$(awk -v a="$r" -v b="$nginx_rps" 'BEGIN {printf "%.2f×", a / b}')
  if [ "$name" = origin ]; then
    fixed="| – | – | –"
  else
    fixed="| $(median <<<"${fp50[$name]}") | $(median <<<"${fp99[$name]}") | $(tr ' ' '\n' <<<"${ferr[$name]}" | awk '{s+=$1} END {print s+0}')"
  fi
  echo "| $name | $r | $ratio | $(median <<<"${cpu[$name]}") | $(median <<<"${p50[$name]}") | $(median <<<"${p99[$name]}") $fixed |"
done
echo
echo "Server CPU: user + system time of the gateway process (nginx: its worker; origin: itself) over the wrk run, per request; the origin's own CPU is not in the proxies' figures."
echo "wrk -t1 -c32 -d${secs}s and \`bench load --connections 32 --rate $rate --duration ${secs}s\` pinned to core 0; servers and the origin on core 1 ($(nproc) cores, kernel $(uname -r), $(date -u +%F))"
