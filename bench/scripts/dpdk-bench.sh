#!/usr/bin/env bash
# The DPDK data plane next to the io_uring one, same run, cache hits of
# 1 KiB over keep-alive, the gateway's data thread pinned to core 1 and
# the load to core 0:
#   1. net_ring: `bench ring`, the DPDK path with no kernel at all (a
#      client smoltcp stack on a ring port pair, in process, --no-huge);
#   2. net_tap, in a network namespace this script creates: `bench load`
#      against the DPDK address (client → kernel → tap → DPDK → smoltcp),
#      and against an io_uring gateway in the same namespace.
# Needs root, hugepages (hugepages-setup.sh) and libdpdk-dev.
#   bash bench/scripts/dpdk-bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
ns=ugbench$$
tap=ugbt$$
cargo build --release --locked -p ultragate --features dpdk
cargo build --release --locked -p ultragate-bench --features dpdk
./hugepages-setup.sh --pages 256 >/dev/null

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
inns() { ip netns exec "$ns" "$@"; }
inns ip link set lo up

path='/x?size=1024&cache=max-age%3D600'
inns taskset -c 1 ./target/release/bench origin --listen 127.0.0.1:28000 >/dev/null &
pids+=($!)
sleep 0.5
echo "net_ring (no kernel between client and gateway):" >&2
ring=$(inns ./target/release/bench ring --requests 300000 --path "$path" 2>/dev/null | tail -1)
echo "$ring" >&2

cat >"$work/dpdk.toml" <<TOML
[api_gateway]
listen = "127.0.0.1:28180"
enable_dpdk = true
cores = [1]
[admin]
listen = "127.0.0.1:28181"
[upstream.primary]
servers = ["127.0.0.1:28000"]
[dpdk]
eal_args = ["--vdev=net_tap0,iface=$tap", "--no-pci"]
address = "10.213.0.2/24"
listen_port = 8080
TOML
cat >"$work/uring.toml" <<TOML
[api_gateway]
listen = "127.0.0.1:28080"
cores = [1]
io_backend = "uring"
[admin]
listen = "127.0.0.1:28081"
[upstream.primary]
servers = ["127.0.0.1:28000"]
TOML
ULTRAGATE_LOG=warn inns ./target/release/ultragate --config "$work/dpdk.toml" 2>"$work/dpdk.log" &
pids+=($!)
ULTRAGATE_LOG=warn inns ./target/release/ultragate --config "$work/uring.toml" &
pids+=($!)
for _ in $(seq 100); do inns ip link show "$tap" >/dev/null 2>&1 && break; sleep 0.1; done
inns ip addr add 10.213.0.1/24 dev "$tap"
inns ip link set "$tap" up
sleep 1
inns curl -fsS -o /dev/null "http://10.213.0.2:8080$path"
inns curl -fsS -o /dev/null "http://127.0.0.1:28080$path"

load() {
  inns ./target/release/bench load --pin 0 --connections 32 --duration "${secs}s" --json --url "$1" "${@:2}"
}
field() { grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }
declare -A max cp50 cp99 p99
for target in "dpdk-tap http://10.213.0.2:8080$path" "io_uring http://127.0.0.1:28080$path"; do
  name=${target%% *}
  out=$(load "${target#* }" --closed-loop)
  max[$name]=$(field achieved_rate <<<"$out" | cut -d. -f1)
  cp50[$name]=$(field p50_us <<<"$out")
  cp99[$name]=$(field p99_us <<<"$out")
done
a=${max[io_uring]} b=${max[dpdk-tap]}
rate=$(((a < b ? a : b) * 6 / 10))
for target in "dpdk-tap http://10.213.0.2:8080$path" "io_uring http://127.0.0.1:28080$path"; do
  name=${target%% *}
  out=$(load "${target#* }" --rate "$rate")
  p99[$name]=$(field p99_us <<<"$out")
done

echo "| path | req/s (closed loop, 32 conns) | p50 µs | p99 µs | p99 µs at $rate req/s (open loop) |"
echo "| --- | ---: | ---: | ---: | ---: |"
echo "| DPDK over net_ring (bench ring) | $(field req_per_s <<<"$ring") | $(field p50_us <<<"$ring") | $(field p99_us <<<"$ring") | – |"
for name in dpdk-tap io_uring; do
  echo "| $name | ${max[$name]} | ${cp50[$name]} | ${cp99[$name]} | ${p99[$name]} |"
done
echo
echo "Gateway data thread on core 1 with the origin; load on core 0 ($(nproc) cores, kernel $(uname -r), $(date -u +%F))."
