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

NAMESPACE=${NAMESPACE:-ultragate}
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

# Whether kubectl's error text says the API server was not reached (as
# opposed to an answer such as NotFound or Forbidden).
is_unreachable() {
  grep -qiE 'unable to connect to the server|connection refused|no route to host|i/o timeout|context deadline exceeded|Client\.Timeout|TLS handshake timeout|dial tcp|the server is currently unable|net/http: request canceled|EOF$' <<<"$1"
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

# The live gateway color the ultragate Service selects (empty when it
# selects no gateway color, e.g. while diverted), and the app it selects.
service_app() { kread get service ultragate -o 'jsonpath={.spec.selector.app}'; }
service_color() { kread get service ultragate -o 'jsonpath={.spec.selector.color}'; }

other_color() { case "$1" in blue) echo green ;; green) echo blue ;; *) return 1 ;; esac; }
