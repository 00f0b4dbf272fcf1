#!/usr/bin/env bash
# Runs a cache admin call in every gateway pod (the runbook's
# `curl -X POST localhost:8080/admin/cache/<op>`, on the admin port 8081,
# which listens on the kernel stack in DPDK pods too), and prints a
# per-pod table of the JSON answers. Exit 1 when any pod's call fails, and
# for verify when any pod reports corrupt entries (the last line then says
# CORRUPT). Other exit codes: see lib.sh.
set -euo pipefail
usage() {
  cat <<TXT
usage: cache-op.sh clear|verify|restore|snapshot [--namespace NS] [--context CTX]
                   [--request-timeout D] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
parse_common "$@"
[ ${#ARGS[@]} -eq 1 ] || misuse "give one operation: clear, verify, restore or snapshot"
op=${ARGS[0]}
case "$op" in clear|verify|restore|snapshot) ;; *) misuse "unknown operation $op" ;; esac

pods=$(kread get pods -l "app=$APP" -o 'jsonpath={.items[*].metadata.name}')
[ -n "$pods" ] || die "no gateway pods (label app=$APP) in namespace $NAMESPACE"
# A number field of a one-line JSON answer, or "-".
field() { grep -o "\"$1\":[0-9.]*" <<<"$2" | head -1 | cut -d: -f2 || true; }

failed=0 corrupt=0 corrupt_pods=0
rows=()
for pod in $pods; do
  call=(exec "$pod" -- curl -sS -f -m 30 -X POST "http://localhost:8081/admin/cache/$op")
  if [ "$DRY_RUN" = 1 ]; then
    kchange "${call[@]}"
    continue
  fi
  kubectl_cmd
  if answer=$("${KUBECTL[@]}" "${call[@]}" 2>&1); then
    bad=$(field corrupt "$answer")
    if [ -n "$bad" ] && [ "$bad" != 0 ]; then
      state=CORRUPT
      corrupt=$((corrupt + bad))
      corrupt_pods=$((corrupt_pods + 1))
    else
      state=ok
    fi
  else
    is_unreachable "$answer" && unreachable "kubectl exec $pod: $answer"
    state=FAILED
    failed=$((failed + 1))
  fi
  rows+=("$(printf '%-40s %-8s %-8s %-8s %s' "$pod" "$state" "$(field checked "$answer")" \
    "$(field corrupt "$answer")" "${answer//$'\n'/ }")")
done
[ "$DRY_RUN" = 1 ] && { echo "dry run: would $op the cache in: $pods (nothing changed)"; exit 0; }

printf '%-40s %-8s %-8s %-8s %s\n' POD RESULT CHECKED CORRUPT ANSWER
printf '%s\n' "${rows[@]}"
if [ "$failed" -gt 0 ]; then die "$op failed in $failed pod(s)"; fi
if [ "$corrupt_pods" -gt 0 ]; then
  echo "CORRUPT: $corrupt corrupt entries in $corrupt_pods pod(s); each bypassed its cache and restored its last snapshot (see /admin/events)" >&2
  exit 1
fi
echo "$op done in every gateway pod"
