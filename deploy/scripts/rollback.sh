#!/usr/bin/env bash
# Blue/green switch of the gateway behind the client Service (ultragate, or
# the overlay's name: lib.sh).
#
#   rollback.sh emergency [--to COLOR] [--force]
#       The live color is bad: switch to the other one. Without --to, the
#       color that is not live; refused when the live color is itself the
#       result of an emergency switch from that color (running it twice
#       never flips back; --force does). When the other color has no ready
#       pod at all, `kubectl rollout undo` of the live one instead.
#   rollback.sh switch [--to COLOR]
#       A planned switch (a release, or a config change rolled through the
#       idle color first): refused unless the other color is fully ready.
#
# Before switching, the other color is scaled to the live color's replica
# count and waited for (at most --wait, default 120s): a switch never puts
# ten pods' traffic on one. Exit codes: see lib.sh (0 done, 1 refused,
# 2 misuse, 3 cluster unreachable).
set -euo pipefail
usage() {
  cat <<TXT
usage: rollback.sh emergency|switch [--to blue|green] [--force] [--wait DURATION]
                   [--namespace NS] [--context CTX] [--request-timeout D] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
TAKES_TO=1
TAKES_FORCE=1
wait_for=120s
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wait) wait_for=${2:?--wait needs a value}; shift ;;
    *) rest+=("$1") ;;
  esac
  shift
done
parse_common "${rest[@]+"${rest[@]}"}"
[ ${#ARGS[@]} -eq 1 ] || misuse "give one action: emergency or switch"
action=${ARGS[0]}
case "$action" in emergency|switch) ;; *) misuse "unknown action $action" ;; esac

app=$(service_app)
[ "$app" = "$APP" ] || die "the Service $SERVICE selects app '$app' (diverted?); run divert.sh back first"
live=$(service_color)
other_color "$live" >/dev/null || die "the Service $SERVICE selects color '$live', not blue or green"
from=$(kread get service "$SERVICE" -o 'jsonpath={.metadata.annotations.ultragate\.io/emergency-from}')
target=${TO:-$(other_color "$live")}

if [ "$target" = "$live" ]; then
  [ "$FORCE" = 1 ] || die "$DEPLOYMENT-$live is already live; nothing to switch"
  echo "$DEPLOYMENT-$live is already live (--force: nothing to do)"
  exit 0
fi
if [ "$action" = emergency ] && [ -z "$TO" ] && [ "$from" = "$target" ] && [ "$FORCE" = 0 ]; then
  die "$DEPLOYMENT-$live went live by an emergency switch from $target; not switching back (use --to $target --force)"
fi

want=$(kread get deployment "$DEPLOYMENT-$live" -o 'jsonpath={.spec.replicas}')
want=${want:-1}
have=$(kread get deployment "$DEPLOYMENT-$target" -o 'jsonpath={.spec.replicas}')
have=${have:-0}
ready() {
  local r
  r=$(kread get deployment "$DEPLOYMENT-$target" -o 'jsonpath={.status.readyReplicas}')
  echo "${r:-0}"
}

if [ "$have" -lt "$want" ]; then
  kchange scale "deployment/$DEPLOYMENT-$target" --replicas="$want"
fi
if [ "$DRY_RUN" = 0 ] && [ "$(ready)" -lt "$want" ]; then
  echo "waiting up to $wait_for for $DEPLOYMENT-$target to have $want ready pods" >&2
  # A timeout here is not fatal: what is ready decides below.
  kubectl_cmd
  "${KUBECTL[@]}" rollout status "deployment/$DEPLOYMENT-$target" --timeout="$wait_for" >&2 || true
fi
now_ready=$(ready)

if [ "$DRY_RUN" = 0 ] && [ "$now_ready" -lt "$want" ]; then
  if [ "$now_ready" -lt 1 ]; then
    [ "$action" = emergency ] || die "$DEPLOYMENT-$target has no ready pods; not switching from $live"
    echo "$DEPLOYMENT-$target has no ready pods; rolling back $DEPLOYMENT-$live instead" >&2
    kchange rollout undo "deployment/$DEPLOYMENT-$live"
    kchange rollout status "deployment/$DEPLOYMENT-$live" --timeout="$wait_for"
    echo "rolled back $DEPLOYMENT-$live"
    exit 0
  fi
  [ "$FORCE" = 1 ] || die "$DEPLOYMENT-$target has $now_ready of $want pods ready; not switching from $live (--force switches anyway)"
fi

if [ "$action" = emergency ]; then mark="\"$live\""; else mark=null; fi
kchange patch service "$SERVICE" --type merge -p \
  "{\"metadata\":{\"annotations\":{\"ultragate.io/emergency-from\":$mark}},\"spec\":{\"selector\":{\"app\":\"$APP\",$(color_selector "$target")}}}"
if [ "$DRY_RUN" = 0 ]; then
  now=$(service_color)
  [ "$now" = "$target" ] || die "the Service still selects '$now' after the patch"
fi
report "switched the Service $SERVICE from $live to $target ($now_ready ready pods)" \
  "would switch the Service $SERVICE from $live to $target (scaled to $want pods first)"
