#!/usr/bin/env bash
# Checks a running gateway under a short constant load: the runbook runs
# `performance-test.sh --quick-validation` after every recovery. The
# default URL goes through the upstream path (cache and pool), not a
# locally answered health check. Exits 0 when P99 and the error rate are
# within bounds, 1 when not, 2 on misuse.
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
while [ $# -gt 0 ]; do
  case "$1" in
    --quick-validation) rate=200; duration=5s ;;
    --url) url=${2:?--url needs a value}; shift ;;
    --rate) rate=${2:?--rate needs a value}; shift ;;
    --duration) duration=${2:?--duration needs a value}; shift ;;
    --connections) connections=${2:?--connections needs a value}; shift ;;
    --max-p99-ms) max_p99_ms=${2:?--max-p99-ms needs a value}; shift ;;
    --max-error-rate) max_error_rate=${2:?--max-error-rate needs a value}; shift ;;
    --dry-run) dry_run=1 ;;
    --bench) bench=${2:?--bench needs a value}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "performance-test.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
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
