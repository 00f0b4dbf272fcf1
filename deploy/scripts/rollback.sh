#!/usr/bin/env bash
# Blue/green rollback of the gateway.
#   rollback.sh emergency  switch the Service to the other color if it has
#                          ready pods, else `kubectl rollout undo` the live one
#   rollback.sh switch     switch to the other color; refuse if it has no ready pods
set -euo pipefail
usage() {
  cat <<TXT
usage: rollback.sh emergency|switch [--namespace NS] [--context CTX] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
parse_common "$@"
[ ${#ARGS[@]} -eq 1 ] || misuse "give one action: emergency or switch"
action=${ARGS[0]}
case "$action" in emergency|switch) ;; *) misuse "unknown action $action" ;; esac

live=$(kread get service ultragate -o 'jsonpath={.spec.selector.color}')
case "$live" in
  blue) other=green ;;
  green) other=blue ;;
  *) die "the ultragate Service selects color '$live', not blue or green" ;;
esac
ready=$(kread get deployment "ultragate-$other" -o 'jsonpath={.status.readyReplicas}')
ready=${ready:-0}

if [ "$ready" -ge 1 ]; then
  kchange patch service ultragate --type merge -p "{\"spec\":{\"selector\":{\"app\":\"ultragate\",\"color\":\"$other\"}}}"
  if [ "$DRY_RUN" = 0 ]; then
    now=$(kread get service ultragate -o 'jsonpath={.spec.selector.color}')
    [ "$now" = "$other" ] || die "the Service still selects '$now' after the patch"
  fi
  echo "switched the ultragate Service from $live to $other ($ready ready pods)"
  exit 0
fi
if [ "$action" = switch ]; then
  die "ultragate-$other has no ready pods; not switching from $live"
fi
echo "ultragate-$other has no ready pods; rolling back ultragate-$live instead" >&2
kchange rollout undo "deployment/ultragate-$live"
kchange rollout status "deployment/ultragate-$live" --timeout=120s
echo "rolled back ultragate-$live"
