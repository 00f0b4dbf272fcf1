#!/usr/bin/env bash
# Checks a running gateway under a short constant load: the runbook runs
# `performance-test.sh --quick-validation` after every recovery. The
# default URL goes through the upstream path (cache and pool), not a
# locally answered health check. Exits 0 when P99 and the error rate are
# within bounds, 1 when not, 2 on misuse, 3 (--in-pod) when the cluster is
# unreachable.
#
# It runs where the load should start: on a machine next to the gateway,
# or inside a gateway pod (the image has this script as
# /usr/local/bin/performance-test.sh and bench as /usr/local/bin/bench,
# and needs nothing else). --in-pod does the latter from an operator's
# machine: `kubectl exec` into a pod of the live color, where 127.0.0.1:8080
# is that pod's own data port.
set -euo pipefail

usage() {
  cat <<TXT
usage: performance-test.sh [--quick-validation] [options]
  --quick-validation     a 5 s check at 200 req/s (the runbook's call)
  --url URL              target (default http://127.0.0.1:8080/, proxied to the upstream)
  --rate N               offered requests per second (default 500)
  --duration D           e.g. 10s (default 10s)
  --connections N        keep-alive connections (default 8)
  --max-p99-ms MS        fail when P99 is above (default 10)
  --max-error-rate R     fail when the error share is above (default 0.001)
  --dry-run              print the load it would offer and the limits, send nothing
  --bench PATH           the bench binary (default: \$BENCH, bench on PATH, or target/release/bench)
  --in-pod               run inside a pod of the live gateway color (kubectl exec), the other
                         options passed on; with --namespace NS, --context CTX, --request-timeout D
  -h, --help             this text
TXT
}

url=http://127.0.0.1:8080/
dry_run=0
rate=500
duration=10s
connections=8
max_p99_ms=10
max_error_rate=0.001
bench=${BENCH:-}
in_pod=0
pass=()
kube_flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --in-pod) in_pod=1; shift; continue ;;
    -n|--namespace|--context|--request-timeout) kube_flags+=("$1" "${2:?$1 needs a value}"); shift 2; continue ;;
  esac
  pass+=("$1")
  case "$1" in
    --quick-validation) rate=200; duration=5s ;;
    --url) url=${2:?--url needs a value}; pass+=("$2"); shift ;;
    --rate) rate=${2:?--rate needs a value}; pass+=("$2"); shift ;;
    --duration) duration=${2:?--duration needs a value}; pass+=("$2"); shift ;;
    --connections) connections=${2:?--connections needs a value}; pass+=("$2"); shift ;;
    --max-p99-ms) max_p99_ms=${2:?--max-p99-ms needs a value}; pass+=("$2"); shift ;;
    --max-error-rate) max_error_rate=${2:?--max-error-rate needs a value}; pass+=("$2"); shift ;;
    --dry-run) dry_run=1 ;;
    --bench) bench=${2:?--bench needs a value}; pass+=("$2"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "performance-test.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$in_pod" = 1 ]; then
  # shellcheck source=deploy/scripts/lib.sh
  . "$(dirname "$0")/lib.sh"
  parse_common "${kube_flags[@]+"${kube_flags[@]}"}"
  color=$(service_color)
  other_color "$color" >/dev/null || die "the Service $SERVICE names color '$color', not blue or green"
  kubectl_cmd
  echo "running in deployment/$DEPLOYMENT-$color (the live color)" >&2
  status=0
  out=$("${KUBECTL[@]}" exec "deployment/$DEPLOYMENT-$color" -- performance-test.sh "${pass[@]+"${pass[@]}"}" 2>&1) || status=$?
  printf '%s\n' "$out"
  if [ "$status" -ne 0 ] && is_unreachable "$out"; then exit 3; fi
  exit "$status"
fi
[ ${#kube_flags[@]} -eq 0 ] || { echo "performance-test.sh: ${kube_flags[0]} goes with --in-pod" >&2; usage >&2; exit 2; }
if [ "$dry_run" = 1 ]; then
  echo "dry run: would offer $rate req/s for $duration over $connections connections to $url; PASS when p99 <= $max_p99_ms ms and errors <= $max_error_rate (nothing sent)"
  exit 0
fi
if [ -z "$bench" ]; then
  if command -v bench >/dev/null; then
    bench=bench
  else
    bench="$(dirname "$0")/../../target/release/bench"
  fi
fi
[ -x "$bench" ] || command -v "$bench" >/dev/null || { echo "performance-test.sh: no bench binary at $bench (cargo build --release -p ultragate-bench)" >&2; exit 2; }

json=$("$bench" load --url "$url" --rate "$rate" --duration "$duration" --connections "$connections" --json)
field() { grep -o "\"$1\":[0-9.eE+-]*" <<<"$json" | head -1 | cut -d: -f2; }
requests=$(field requests)
errors=$(field errors)
p99_us=$(field p99_us)
verdict=$(awk -v r="$requests" -v e="$errors" -v p="$p99_us" -v mp="$max_p99_ms" -v me="$max_error_rate" '
  BEGIN {
    rate = (r > 0) ? e / r : 1
    ok = (r > 0 && p / 1000 <= mp && rate <= me)
    printf "%s requests=%d errors=%d error_rate=%.4f p99_ms=%.3f (limits: p99 <= %s ms, errors <= %s)\n", ok ? "PASS" : "FAIL", r, e, rate, p / 1000, mp, me
  }')
echo "$verdict"
[[ $verdict == PASS* ]]
