#!/usr/bin/env bash
# Shared by the runbook scripts: common flags and the kubectl wrapper.
# Sourced, not run.

NAMESPACE=${NAMESPACE:-ultragate}
CONTEXT=""
DRY_RUN=0
ARGS=()

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
misuse() { echo "$(basename "$0"): $*" >&2; usage >&2; exit 2; }

# Parses the flags every script takes; the rest lands in ARGS.
parse_common() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -n|--namespace) NAMESPACE=${2:?--namespace needs a value}; shift ;;
      --context) CONTEXT=${2:?--context needs a value}; shift ;;
      --dry-run) DRY_RUN=1 ;;
      -h|--help) usage; exit 0 ;;
      --*) misuse "unknown argument $1" ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

kube() {
  local cmd=(kubectl)
  if [ -n "$CONTEXT" ]; then cmd+=(--context "$CONTEXT"); fi
  cmd+=(-n "$NAMESPACE" "$@")
  "${cmd[@]}"
}

# A read: runs even with --dry-run, since decisions depend on it.
kread() { kube "$@"; }

# A change: printed with --dry-run, run otherwise.
kchange() {
  if [ "$DRY_RUN" = 1 ]; then
    local cmd=(kubectl)
    if [ -n "$CONTEXT" ]; then cmd+=(--context "$CONTEXT"); fi
    echo "+ ${cmd[*]} -n $NAMESPACE $*"
  else
    kube "$@"
  fi
}
