#!/usr/bin/env bash
# Collects what an incident review needs into one tarball: every gateway
# pod's logs (also --previous), /health, /metrics, /admin/events and the
# running config, plus the namespace's events, objects and ConfigMap.
set -euo pipefail
usage() {
  cat <<TXT
usage: collect-diagnostics.sh [--output DIR] [--namespace NS] [--context CTX] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
out=.
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out=${2:?--output needs a value}; shift ;;
    *) rest+=("$1") ;;
  esac
  shift
done
parse_common "${rest[@]+"${rest[@]}"}"
[ ${#ARGS[@]} -eq 0 ] || misuse "unexpected argument ${ARGS[0]}"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
dir=$(mktemp -d)/ultragate-diagnostics-$stamp
mkdir -p "$dir"
save() { # file command...
  local file=$1; shift
  if [ "$DRY_RUN" = 1 ]; then kchange "$@"; return 0; fi
  kube "$@" >"$dir/$file" 2>&1 || echo "(failed: kubectl $*)" >>"$dir/$file"
}
save events.txt get events --sort-by=.lastTimestamp
save objects.txt get all -o wide
save configmap.yaml get configmap ultragate-config -o yaml
pods=$(kread get pods -l app=ultragate -o 'jsonpath={.items[*].metadata.name}')
for pod in $pods; do
  save "$pod.log" logs "$pod"
  save "$pod.previous.log" logs "$pod" --previous
  save "$pod.describe.txt" describe pod "$pod"
  for path in health metrics admin/events admin/config; do
    save "$pod.${path//\//-}.txt" exec "$pod" -- curl -sS "http://localhost:8081/$path"
  done
done
[ "$DRY_RUN" = 1 ] && exit 0
mkdir -p "$out"
tarball="$out/ultragate-diagnostics-$stamp.tar.gz"
tar -czf "$tarball" -C "$(dirname "$dir")" "$(basename "$dir")"
echo "$tarball"
