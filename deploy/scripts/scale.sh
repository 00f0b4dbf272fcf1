#!/usr/bin/env bash
# The runbook's memory relief and stop, held against the autoscaler.
#
#   scale.sh blue|green|all N
#       Scales the color's Deployment to N pods and holds it there: its
#       HPA's minReplicas and maxReplicas are both set to N (the range it
#       had is saved on the HPA, once). A bare `kubectl scale` holds only
#       while the load per pod stays under the HPA's target.
#       N = 0 (the runbook's "stop processing") needs no hold: an HPA
#       leaves a Deployment scaled to zero alone until it is scaled up.
#   scale.sh blue|green|all release
#       Gives the HPA its saved range back; the autoscaler decides again.
#
# Exit codes: see lib.sh (0 done or nothing to do, 1 refused, 2 misuse,
# 3 cluster unreachable).
set -euo pipefail
usage() {
  cat <<TXT
usage: scale.sh blue|green|all N|release [--namespace NS] [--context CTX]
                [--request-timeout D] [--dry-run]
TXT
}
# shellcheck source=deploy/scripts/lib.sh
. "$(dirname "$0")/lib.sh"
parse_common "$@"
[ ${#ARGS[@]} -eq 2 ] || misuse "give a color (blue, green or all) and a count or release"
case "${ARGS[0]}" in
  blue|green) colors=("${ARGS[0]}") ;;
  all) colors=(blue green) ;;
  *) misuse "unknown color ${ARGS[0]}" ;;
esac
what=${ARGS[1]}
case "$what" in release) ;; *[!0-9]*|'') misuse "the count must be a number or release, not '$what'" ;; esac
ANNOTATION='ultragate.io/held-from'

for color in "${colors[@]}"; do
  name=$DEPLOYMENT-$color
  saved=$(kread get hpa "$name" -o "jsonpath={.metadata.annotations.${ANNOTATION//./\\.}}")
  if [ "$what" = release ]; then
    if [ -z "$saved" ]; then
      echo "$name is not held; nothing changed"
      continue
    fi
    min=${saved%-*}
    max=${saved#*-}
    kchange patch hpa "$name" --type merge -p \
      "{\"metadata\":{\"annotations\":{\"$ANNOTATION\":null}},\"spec\":{\"minReplicas\":$min,\"maxReplicas\":$max}}"
    report "$name: the autoscaler decides again (minReplicas $min, maxReplicas $max)" \
      "would give $name's HPA its range back (minReplicas $min, maxReplicas $max)"
    continue
  fi
  if [ "$what" -gt 0 ]; then
    if [ -z "$saved" ]; then
      min=$(kread get hpa "$name" -o 'jsonpath={.spec.minReplicas}')
      max=$(kread get hpa "$name" -o 'jsonpath={.spec.maxReplicas}')
      saved="${min:-1}-$max"
    fi
    kchange patch hpa "$name" --type merge -p \
      "{\"metadata\":{\"annotations\":{\"$ANNOTATION\":\"$saved\"}},\"spec\":{\"minReplicas\":$what,\"maxReplicas\":$what}}"
  fi
  kchange scale "deployment/$name" --replicas="$what"
  if [ "$what" -gt 0 ]; then
    report "$name: $what pods, held (scale.sh $color release gives the HPA its range ${saved} back)" \
      "would scale $name to $what pods and hold its HPA there"
  else
    report "$name: scaled to 0; its HPA leaves it there until it is scaled up" \
      "would scale $name to 0"
  fi
done
