#!/usr/bin/env bash
# Prepares a host for ultragate's DPDK data plane: reserves hugepages (2 MiB
# or 1 GiB, all NUMA nodes or one), mounts hugetlbfs, checks IOMMU and
# vfio-pci, and optionally binds a NIC to vfio-pci with dpdk-devbind.py.
# Idempotent: running it again with the same arguments changes nothing.
#   hugepages-setup.sh --pages 512                  # 512 x 2 MiB on every node
#   hugepages-setup.sh --pages 4 --size 1G --node 0
#   hugepages-setup.sh --bind 0000:3b:00.1          # also bind a NIC
#   hugepages-setup.sh --check                      # report only, change nothing
set -euo pipefail

usage() {
  cat <<TXT
usage: hugepages-setup.sh [--pages N] [--size 2M|1G] [--node N] [--mount DIR] [--bind PCI] [--check]
  --pages N     pages to reserve (default 512); per node with --node, else spread over all nodes
  --size S      page size: 2M (default) or 1G
  --node N      reserve on NUMA node N only
  --mount DIR   hugetlbfs mount point (default /dev/hugepages)
  --bind PCI    bind this PCI device to vfio-pci (needs dpdk-devbind.py from the dpdk package)
  --check       only report the current state; exit 1 when it is not ready for DPDK
  -h, --help    this text
TXT
}

pages=512
size=2M
node=""
mountpoint=/dev/hugepages
bind=""
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pages) pages=${2:?--pages needs a value}; shift ;;
    --size) size=${2:?--size needs a value}; shift ;;
    --node) node=${2:?--node needs a value}; shift ;;
    --mount) mountpoint=${2:?--mount needs a value}; shift ;;
    --bind) bind=${2:?--bind needs a value}; shift ;;
    --check) check=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "hugepages-setup.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$size" in
  2M) kb=2048 ;;
  1G) kb=1048576 ;;
  *) echo "hugepages-setup.sh: --size must be 2M or 1G, not $size" >&2; exit 2 ;;
esac
[[ $pages =~ ^[0-9]+$ ]] || { echo "hugepages-setup.sh: --pages must be a number" >&2; exit 2; }

sysfs=/sys/kernel/mm/hugepages/hugepages-${kb}kB
[ -d "$sysfs" ] || { echo "hugepages-setup.sh: this kernel has no ${size} hugepages ($sysfs missing)" >&2; exit 1; }

nodes() {
  if [ -n "$node" ]; then
    echo "$node"
  else
    for d in /sys/devices/system/node/node[0-9]*; do [ -d "$d" ] && basename "$d" | sed 's/node//'; done
  fi
}
node_file() { echo "/sys/devices/system/node/node$1/hugepages/hugepages-${kb}kB/nr_hugepages"; }

report() {
  echo "hugepages ${size}: total $(cat "$sysfs/nr_hugepages"), free $(cat "$sysfs/free_hugepages")"
  for n in $(nodes); do
    f=$(node_file "$n")
    [ -r "$f" ] && echo "  node $n: $(cat "$f")"
  done
  if mount | grep -q " $mountpoint type hugetlbfs"; then
    echo "hugetlbfs: mounted on $mountpoint"
  else
    echo "hugetlbfs: not mounted on $mountpoint"
  fi
  if [ -n "$(ls -A /sys/kernel/iommu_groups 2>/dev/null)" ]; then
    echo "IOMMU: enabled ($(find /sys/kernel/iommu_groups -mindepth 1 -maxdepth 1 | wc -l) groups)"
  else
    echo "IOMMU: off (vfio-pci needs intel_iommu=on or amd_iommu=on, or vfio's no-IOMMU mode; virtual devices such as net_tap do not)"
  fi
  if [ -d /sys/bus/pci/drivers/vfio-pci ] || grep -q '^vfio_pci ' /proc/modules 2>/dev/null; then
    echo "vfio-pci: loaded"
  else
    echo "vfio-pci: not loaded"
  fi
}

if [ "$check" = 1 ]; then
  report
  total=$(cat "$sysfs/nr_hugepages")
  [ "$total" -gt 0 ] && mount | grep -q " $mountpoint type hugetlbfs" && exit 0
  echo "not ready for DPDK: reserve hugepages and mount hugetlbfs (run without --check as root)" >&2
  exit 1
fi

[ "$(id -u)" -eq 0 ] || { echo "hugepages-setup.sh: must run as root (or use --check)" >&2; exit 1; }

node_list=$(nodes)
count=$(wc -w <<<"$node_list")
per_node=$(( (pages + count - 1) / count ))
for n in $node_list; do
  f=$(node_file "$n")
  want=$per_node
  [ -n "$node" ] && want=$pages
  have=$(cat "$f")
  if [ "$have" -lt "$want" ]; then
    echo "$want" >"$f"
    got=$(cat "$f")
    if [ "$got" -lt "$want" ]; then
      echo "hugepages-setup.sh: the kernel gave $got of $want ${size} pages on node $n (memory fragmented or too little; reserve at boot with hugepages=N)" >&2
      exit 1
    fi
    echo "node $n: $have -> $got ${size} pages"
  else
    echo "node $n: $have ${size} pages already (wanted $want)"
  fi
done

mkdir -p "$mountpoint"
if ! mount | grep -q " $mountpoint type hugetlbfs"; then
  mount -t hugetlbfs -o "pagesize=$size" nodev "$mountpoint" || { echo "hugepages-setup.sh: cannot mount hugetlbfs on $mountpoint" >&2; exit 1; }
  echo "mounted hugetlbfs on $mountpoint"
fi

if [ -n "$bind" ]; then
  command -v dpdk-devbind.py >/dev/null || { echo "hugepages-setup.sh: --bind needs dpdk-devbind.py (apt-get install dpdk)" >&2; exit 1; }
  modprobe vfio-pci || { echo "hugepages-setup.sh: cannot load vfio-pci" >&2; exit 1; }
  if dpdk-devbind.py --status-dev net | grep -q "^$bind .*drv=vfio-pci"; then
    echo "$bind: already bound to vfio-pci"
  else
    dpdk-devbind.py --bind=vfio-pci "$bind"
    echo "$bind: bound to vfio-pci"
  fi
fi
report
