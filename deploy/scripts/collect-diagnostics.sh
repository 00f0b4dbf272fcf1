#!/usr/bin/env bash
# Collects what an incident review needs into one tarball: every gateway
# pod's logs (also --previous), /health, /metrics, /admin/events and the
# running config, plus the namespace's events, objects and ConfigMaps.
# Values of secret-looking keys (token, password, secret, authorization,
# api key) are redacted in every file before it is packed, and nothing but
# the tarball is left behind (its path is the only line on stdout).
#
# When the API server is unreachable it still collects what this machine
# has (the local admin port's answers, the config and log files of a pod
# it runs in), writes the tarball and exits 3.
set -euo pipefail
usage() {
  cat <<TXT
usage: collect-diagnostics.sh [--output DIR] [--admin URL] [--namespace NS] [--context CTX]
                              [--request-timeout D] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
out=.
admin=${ULTRAGATE_ADMIN:-http://127.0.0.1:8081}
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out=${2:?--output needs a value}; shift ;;
    --admin) admin=${2:?--admin needs a value}; shift ;;
    *) rest+=("$1") ;;
  esac
  shift
done
parse_common "${rest[@]+"${rest[@]}"}"
[ ${#ARGS[@]} -eq 0 ] || misuse "unexpected argument ${ARGS[0]}"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
name=ultragate-diagnostics-$stamp
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$work/$name
mkdir -p "$dir"
kubectl_cmd

# Keeps the key, drops the value, of anything that looks like a secret.
redact() {
  sed -E 's/(("|\b)(token|password|passwd|secret|authorization|api[_-]?key|bearer)[A-Za-z0-9_.-]*"?[[:space:]]*[:=][[:space:]]*).*/\1<redacted>/I'
}
save() { # file command...
  local file=$1; shift
  if [ "$DRY_RUN" = 1 ]; then echo "would save $file from: kubectl $*"; return 0; fi
  { "${KUBECTL[@]}" "$@" 2>&1 || echo "(failed: kubectl $*)"; } | redact >"$dir/$file"
}

cluster=up
probe=$("${KUBECTL[@]}" get namespace "$NAMESPACE" -o name 2>&1) || {
  if is_unreachable "$probe"; then cluster=down; else die "kubectl get namespace $NAMESPACE: $probe"; fi
}

if [ "$cluster" = up ]; then
  save events.txt get events --sort-by=.lastTimestamp
  save objects.txt get all -o wide
  for cm in $CONFIGMAPS; do
    save "configmap-$cm.yaml" get configmap "$cm" -o yaml
  done
  pods=$("${KUBECTL[@]}" get pods -l "app=$APP" -o 'jsonpath={.items[*].metadata.name}')
  for pod in $pods; do
    save "$pod.log" logs "$pod"
    save "$pod.previous.log" logs "$pod" --previous
    save "$pod.describe.txt" describe pod "$pod"
    for path in health metrics admin/events admin/config; do
      save "$pod.${path//\//-}.txt" exec "$pod" -- curl -sS -m 5 "http://localhost:8081/$path"
    done
  done
else
  echo "$(basename "$0"): cluster unreachable ($probe); collecting what this machine has" >&2
  [ "$DRY_RUN" = 1 ] && { echo "would save the local admin port's answers and files"; exit 3; }
  echo "$probe" >"$dir/cluster-unreachable.txt"
  mkdir -p "$dir/local"
  for path in health metrics admin/events admin/config; do
    curl -sS -m 5 "$admin/$path" 2>&1 | redact >"$dir/local/${path//\//-}.txt" || true
  done
  for f in /etc/ultragate/*.toml /etc/ultragate/*.conf /var/log/ultragate/*; do
    base=$(basename "$f")
    if [ -f "$f" ] && [ -r "$f" ]; then redact <"$f" >"$dir/local/$base"; fi
  done
fi
[ "$DRY_RUN" = 1 ] && { echo "dry run: no tarball written"; exit 0; }
mkdir -p "$out"
tarball="$out/$name.tar.gz"
tar -czf "$tarball" -C "$work" "$name"
echo "$tarball"
[ "$cluster" = up ] || exit 3
