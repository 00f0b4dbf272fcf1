#!/usr/bin/env bash
# The runbook's divert: point the ultragate Service at the Node.js fallback
# (to-nodejs) or back at the gateway color it served before (back), then
# verify the selector and that the Service has endpoints.
set -euo pipefail
usage() {
  cat <<TXT
usage: divert.sh to-nodejs|back [--namespace NS] [--context CTX] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
parse_common "$@"
[ ${#ARGS[@]} -eq 1 ] || misuse "give one action: to-nodejs or back"

verify() { # app
  [ "$DRY_RUN" = 1 ] && return 0
  local app endpoints
  app=$(kread get service ultragate -o 'jsonpath={.spec.selector.app}')
  [ "$app" = "$1" ] || die "the Service selects app '$app' after the patch, not '$1'"
  endpoints=$(kread get endpoints ultragate -o 'jsonpath={.subsets[*].addresses[*].ip}')
  [ -n "$endpoints" ] || die "the Service has no endpoints after the patch"
}

case "${ARGS[0]}" in
  to-nodejs)
    ready=$(kread get deployment nodejs-api -o 'jsonpath={.status.readyReplicas}')
    [ "${ready:-0}" -ge 1 ] || die "nodejs-api has no ready pods; not diverting"
    color=$(kread get service ultragate -o 'jsonpath={.spec.selector.color}')
    kchange annotate service ultragate --overwrite "ultragate.io/diverted-from-color=${color:-blue}"
    kchange patch service ultragate --type merge -p '{"spec":{"selector":{"app":"nodejs-api","color":null}}}'
    verify nodejs-api
    echo "diverted the ultragate Service to nodejs-api (was color ${color:-blue})"
    ;;
  back)
    color=$(kread get service ultragate -o 'jsonpath={.metadata.annotations.ultragate\.io/diverted-from-color}')
    color=${color:-blue}
    kchange patch service ultragate --type merge -p "{\"spec\":{\"selector\":{\"app\":\"ultragate\",\"color\":\"$color\"}}}"
    verify ultragate
    echo "the ultragate Service selects the gateway again (color $color)"
    ;;
  *) misuse "unknown action ${ARGS[0]}" ;;
esac
