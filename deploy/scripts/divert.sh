#!/usr/bin/env bash
# The runbook's divert: point the ultragate Service at the Node.js fallback
# (to-nodejs) or back at the gateway color it served before (back), then
# verify the selector and that the Service has endpoints.
#
# to-nodejs records the live color in the Service's annotation only when
# not already diverted (running it twice keeps what the first run saved);
# back restores exactly that color and removes the record (or takes
# --to COLOR when there is none). Running either twice is safe: the
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
ANNOTATION='ultragate.io/diverted-from-color'

verify() { # app
  [ "$DRY_RUN" = 1 ] && return 0
  local app endpoints
  app=$(service_app)
  [ "$app" = "$1" ] || die "the Service selects app '$app' after the patch, not '$1'"
  endpoints=$(kread get endpoints ultragate -o 'jsonpath={.subsets[*].addresses[*].ip}')
  [ -n "$endpoints" ] || die "the Service has no endpoints after the patch"
}

app=$(service_app)
saved=$(kread get service ultragate -o "jsonpath={.metadata.annotations.${ANNOTATION//./\\.}}")
case "${ARGS[0]}" in
  to-nodejs)
    if [ "$app" = nodejs-api ]; then
      echo "already diverted to nodejs-api (from color ${saved:-unknown}); nothing changed"
      exit 0
    fi
    [ "$app" = ultragate ] || die "the Service selects app '$app', neither the gateway nor nodejs-api"
    color=$(service_color)
    other_color "$color" >/dev/null || die "the Service selects color '$color', not blue or green"
    ready=$(kread get deployment nodejs-api -o 'jsonpath={.status.readyReplicas}')
    [ "${ready:-0}" -ge 1 ] || die "nodejs-api has no ready pods; not diverting"
    # One patch: the saved color and the selector change together.
    kchange patch service ultragate --type merge -p \
      "{\"metadata\":{\"annotations\":{\"$ANNOTATION\":\"$color\"}},\"spec\":{\"selector\":{\"app\":\"nodejs-api\",\"color\":null}}}"
    verify nodejs-api
    report "diverted the ultragate Service to nodejs-api (was color $color)" \
      "would divert the ultragate Service to nodejs-api (now color $color)"
    ;;
  back)
    if [ "$app" = ultragate ]; then
      echo "not diverted: the Service selects the gateway (color $(service_color)); nothing changed"
      exit 0
    fi
    color=${TO:-$saved}
    [ -n "$color" ] || die "no saved color on the Service (annotation $ANNOTATION); say which with --to blue|green"
    other_color "$color" >/dev/null || die "the saved color '$color' is not blue or green; say which with --to"
    ready=$(kread get deployment "ultragate-$color" -o 'jsonpath={.status.readyReplicas}')
    [ "${ready:-0}" -ge 1 ] || die "ultragate-$color has no ready pods; staying on nodejs-api"
    kchange patch service ultragate --type merge -p \
      "{\"metadata\":{\"annotations\":{\"$ANNOTATION\":null}},\"spec\":{\"selector\":{\"app\":\"ultragate\",\"color\":\"$color\"}}}"
    verify ultragate
    report "the ultragate Service selects the gateway again (color $color)" \
      "would point the ultragate Service at the gateway again (color $color)"
    ;;
esac
