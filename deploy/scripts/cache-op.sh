#!/usr/bin/env bash
# Runs a cache admin call in every gateway pod, as the runbook writes it
# (curl -X POST http://localhost:8080/admin/cache/<op>), and sums up the
# JSON answers. Non-zero exit when any pod's call fails.
set -euo pipefail
usage() {
  cat <<TXT
usage: cache-op.sh clear|verify|restore|snapshot [--namespace NS] [--context CTX] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
parse_common "$@"
[ ${#ARGS[@]} -eq 1 ] || misuse "give one operation: clear, verify, restore or snapshot"
op=${ARGS[0]}
case "$op" in clear|verify|restore|snapshot) ;; *) misuse "unknown operation $op" ;; esac

pods=$(kread get pods -l app=ultragate -o 'jsonpath={.items[*].metadata.name}')
[ -n "$pods" ] || die "no gateway pods (label app=ultragate) in namespace $NAMESPACE"
failed=0
for pod in $pods; do
  if [ "$DRY_RUN" = 1 ]; then
    kchange exec "$pod" -- curl -sS -f -X POST "http://localhost:8080/admin/cache/$op"
    continue
  fi
  if answer=$(kube exec "$pod" -- curl -sS -f -X POST "http://localhost:8080/admin/cache/$op" 2>&1); then
    echo "$pod: ok $answer"
  else
    echo "$pod: FAILED $answer" >&2
    failed=$((failed + 1))
  fi
done
[ "$failed" -eq 0 ] || die "$op failed in $failed pod(s)"
echo "$op done in every gateway pod"
