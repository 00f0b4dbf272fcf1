#!/usr/bin/env bash
# shellcheck disable=SC2034  # its variables are read by the scripts that source it
# Shared by the runbook scripts: common flags, the kubectl wrapper and the
# exit codes. Sourced, not run.
#
# Exit codes of every script:
#   0  done (or nothing to do: the cluster is already as asked)
#   1  refused, with the reason on stderr (nothing was changed by the
#      refusal itself), or a kubectl call the cluster answered with an error
#   2  misuse (unknown argument or action), with the usage
#   3  the cluster (API server) is unreachable or did not answer in time

# The deployment's names: the default overlay's, or those an overlay's
# scripts folder sets (deploy/k8s/ultra-cpp/scripts/names.sh: the
# runbook's). --namespace wins over the variable.
NAMESPACE=${ULTRAGATE_NAMESPACE:-ultragate}
# The gateway pods' `app` label.
APP=${ULTRAGATE_APP:-ultragate}
# The client-facing Service (its selector names the live color).
SERVICE=${ULTRAGATE_SERVICE:-ultragate}
# Deployments (and their HPAs) are PREFIX-blue and PREFIX-green.
DEPLOYMENT=${ULTRAGATE_DEPLOYMENT:-ultragate}
# The Node.js fallback's Deployment and `app` label.
NODEJS=${ULTRAGATE_NODEJS:-nodejs-api}
# The ConfigMaps a diagnostics tarball keeps.
CONFIGMAPS=${ULTRAGATE_CONFIGMAPS:-ultragate-config-blue ultragate-config-green ultragate-runbook ultragate-config-dpdk}
CONTEXT=""
DRY_RUN=0
FORCE=0
TO=""
# Every kubectl call gives up after this long: a hung API server must not
# hang the on-call engineer.
REQUEST_TIMEOUT=${KUBE_REQUEST_TIMEOUT:-10s}
ARGS=()

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
misuse() { echo "$(basename "$0"): $*" >&2; usage >&2; exit 2; }
unreachable() { echo "$(basename "$0"): cluster unreachable: $*" >&2; exit 3; }

# Parses the flags every script takes; the rest lands in ARGS. `--to` and
# `--force` are only accepted by scripts that set TAKES_TO / TAKES_FORCE.
parse_common() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -n|--namespace) NAMESPACE=${2:?--namespace needs a value}; shift ;;
      --context) CONTEXT=${2:?--context needs a value}; shift ;;
      --request-timeout) REQUEST_TIMEOUT=${2:?--request-timeout needs a value}; shift ;;
      --dry-run) DRY_RUN=1 ;;
      --to)
        [ "${TAKES_TO:-0}" = 1 ] || misuse "unknown argument $1"
        TO=${2:-}
        case "$TO" in blue|green) ;; *) misuse "--to takes blue or green, not '$TO'" ;; esac
        shift ;;
      --force)
        [ "${TAKES_FORCE:-0}" = 1 ] || misuse "unknown argument $1"
        FORCE=1 ;;
      -h|--help) usage; exit 0 ;;
      --*) misuse "unknown argument $1" ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

kubectl_cmd() {
  KUBECTL=(kubectl --request-timeout="$REQUEST_TIMEOUT")
  if [ -n "$CONTEXT" ]; then KUBECTL+=(--context "$CONTEXT"); fi
  KUBECTL+=(-n "$NAMESPACE")
}

# Whether kubectl's error text says the API server was not reached or
# cannot serve (exit 3), as opposed to an answer such as NotFound,
# Forbidden or Unauthorized (exit 1). The patterns are kubectl's own
# messages (gateway/tests/deploy.rs has them as kubectl prints them), never
# a bare "connection refused", which a command run by `kubectl exec` (curl
# inside a pod) prints too.
is_unreachable() {
  grep -qE "^The connection to the server .* was refused|^Unable to connect to the server|^error: (error loading config file|invalid configuration)|^Error from server \((ServiceUnavailable|Timeout)\)|^error: .*(context deadline exceeded|Client\.Timeout exceeded|TLS handshake timeout)" <<<"$1"
}

# Runs kubectl; on failure exits 3 when the cluster is unreachable, else 1
# with kubectl's message. Prints kubectl's output.
kube() {
  kubectl_cmd
  local out status=0
  out=$("${KUBECTL[@]}" "$@" 2>&1) || status=$?
  if [ "$status" -ne 0 ]; then
    if is_unreachable "$out"; then unreachable "kubectl $*: $out"; fi
    die "kubectl $* failed: $out"
  fi
  [ -z "$out" ] || printf '%s\n' "$out"
}

# A read: runs even with --dry-run, since decisions depend on it.
kread() { kube "$@"; }

# A change: with --dry-run said as "would run", otherwise run.
kchange() {
  if [ "$DRY_RUN" = 1 ]; then
    kubectl_cmd
    echo "would run: ${KUBECTL[*]} $*"
  else
    kube "$@"
  fi
}

# Says what happened, or with --dry-run what would have.
report() { # done-text would-text
  if [ "$DRY_RUN" = 1 ]; then echo "dry run: $2 (nothing changed)"; else echo "$1"; fi
}

# The apps the client Service selects: the gateway or, diverted, the
# Node.js fallback.
service_app() { kread get service "$SERVICE" -o 'jsonpath={.spec.selector.app}'; }
# The live color: the `traffic.ultragate.io/COLOR` key of the Service's
# selector (it stays there while diverted: the Node.js pods carry both
# colors' keys). Empty when it names none, both when it names both.
service_color() {
  local selector
  selector=$(kread get service "$SERVICE" -o 'jsonpath={.spec.selector}')
  grep -oE 'traffic\.ultragate\.io/(blue|green)' <<<"$selector" | cut -d/ -f2 | paste -sd' ' - || true
}
# A merge patch of the Service's selector that makes COLOR the live one.
color_selector() { # color
  local other
  other=$(other_color "$1")
  echo "\"traffic.ultragate.io/$1\":\"true\",\"traffic.ultragate.io/$other\":null"
}

other_color() { case "$1" in blue) echo green ;; green) echo blue ;; *) return 1 ;; esac; }
