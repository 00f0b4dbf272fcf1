#!/usr/bin/env bash
# The runbook's divert: point the client Service at the Node.js fallback
# (to-nodejs) or back at the gateway (back), then check that every port of
# the Service has ready endpoints, naming any that has none.
#
# It changes only the selector's `app`, as the runbook's own patch does
# (`kubectl patch service … -p '{"spec":{"selector":{"app":"nodejs-api"}}}'`):
# the live color's `traffic.ultragate.io/COLOR` key stays in the selector
# (the Node.js pods carry both colors' keys), so `back` returns to exactly
# the color that was live, after this script or after the runbook's patch.
# `back --to COLOR` returns to another. Running either twice is safe: the
# second run says there is nothing to do. Exit codes: see lib.sh.
set -euo pipefail
usage() {
  cat <<TXT
usage: divert.sh to-nodejs|back [--to blue|green] [--namespace NS] [--context CTX]
                 [--request-timeout D] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
TAKES_TO=1
parse_common "$@"
[ ${#ARGS[@]} -eq 1 ] || misuse "give one action: to-nodejs or back"
case "${ARGS[0]}" in to-nodejs|back) ;; *) misuse "unknown action ${ARGS[0]}" ;; esac

# Every port of the Service has at least one ready endpoint; else names
# the ports without and exits 1.
verify() { # app
  [ "$DRY_RUN" = 1 ] && return 0
  local app ports slices port missing=()
  app=$(service_app)
  [ "$app" = "$1" ] || die "the Service $SERVICE selects app '$app' after the patch, not '$1'"
  ports=$(kread get service "$SERVICE" -o 'jsonpath={.spec.ports[*].name}')
  # One line per EndpointSlice: its port names, then each endpoint's
  # ready condition (empty means ready).
  slices=$(kread get endpointslices -l "kubernetes.io/service-name=$SERVICE" -o \
    'jsonpath={range .items[*]}{range .ports[*]}{.name}{","}{end}{" "}{range .endpoints[*]}{.conditions.ready}{";"}{end}{"\n"}{end}')
  for port in $ports; do
    if ! awk -v p="$port" '
        { n = split($1, names, ","); has = 0
          for (i = 1; i <= n; i++) if (names[i] == p) has = 1
          m = split($2, ready, ";")
          for (i = 1; i < m; i++) if (has && ready[i] != "false") found = 1 }
        END { exit !found }' <<<"$slices"; then
      missing+=("$port")
    fi
  done
  [ ${#missing[@]} -eq 0 ] || die "after the patch these ports of the Service $SERVICE have no ready endpoint: ${missing[*]}"
}

app=$(service_app)
color=$(service_color)
case "${ARGS[0]}" in
  to-nodejs)
    if [ "$app" = "$NODEJS" ]; then
      echo "already diverted to $NODEJS (color ${color:-none} kept in the selector); nothing changed"
      exit 0
    fi
    [ "$app" = "$APP" ] || die "the Service $SERVICE selects app '$app', neither the gateway ($APP) nor $NODEJS"
    other_color "$color" >/dev/null || die "the Service $SERVICE selects color '$color', not blue or green"
    ready=$(kread get deployment "$NODEJS" -o 'jsonpath={.status.readyReplicas}')
    [ "${ready:-0}" -ge 1 ] || die "$NODEJS has no ready pods; not diverting"
    kchange patch service "$SERVICE" --type merge -p "{\"spec\":{\"selector\":{\"app\":\"$NODEJS\"}}}"
    verify "$NODEJS"
    report "diverted the Service $SERVICE to $NODEJS (color $color stays in the selector for divert.sh back)" \
      "would divert the Service $SERVICE to $NODEJS (now color $color)"
    ;;
  back)
    if [ "$app" = "$APP" ]; then
      echo "not diverted: the Service $SERVICE selects the gateway (color $color); nothing changed"
      exit 0
    fi
    target=${TO:-$color}
    [ -n "$target" ] || die "the Service $SERVICE names no color; say which with --to blue|green"
    other_color "$target" >/dev/null || die "the Service $SERVICE names color '$target', not one; say which with --to blue|green"
    ready=$(kread get deployment "$DEPLOYMENT-$target" -o 'jsonpath={.status.readyReplicas}')
    [ "${ready:-0}" -ge 1 ] || die "$DEPLOYMENT-$target has no ready pods; staying on $NODEJS"
    kchange patch service "$SERVICE" --type merge -p \
      "{\"spec\":{\"selector\":{\"app\":\"$APP\",$(color_selector "$target")}}}"
    verify "$APP"
    report "the Service $SERVICE selects the gateway again (color $target)" \
      "would point the Service $SERVICE at the gateway again (color $target)"
    ;;
esac
