#!/usr/bin/env bash
# The steady yardstick: instructions per warm cache hit and per proxied
# request through the per-core layer, by valgrind's callgrind (this VM has
# no hardware counters). Each test runs at ROUNDS=10000 and 20000; the
# difference over 10,000 is one request, start-up cancelled out.
#
#   bash bench/scripts/callgrind.sh [COMMIT...]
#
# With commits, each is built in a scratch worktree, so "before" and
# "after" come from one session on one machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }

measure() { # dir label
    local dir=$1 label=$2 bin
    bin=$(cd "$dir" && cargo test --release -q -p ultragate-dataplane --test endpoint_path --no-run \
        --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    for t in a_warm_cache_hit_through_the_endpoint_allocates_nothing a_proxied_request_reuses_its_pooled_connection; do
        local n=()
        for r in 10000 20000; do
            local out
            out=$(mktemp)
            # The count is what matters here; an older tree's own assertion may fail.
            ROUNDS=$r valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --exact "$t" --test-threads=1 >/dev/null 2>&1 || true
            n+=("$(sed -n 's/^summary: //p' "$out")")
            rm -f "$out"
        done
        echo "$label $t $(((n[1] - n[0]) / 10000)) instructions per request"
    done
}

if [ $# -eq 0 ]; then
    measure "$root" "$(git -C "$root" rev-parse --short HEAD)"
else
    for c in "$@"; do
        c=$(git -C "$root" rev-parse --short "$c")
        wt=$(mktemp -d)
        git -C "$root" worktree add -q --detach "$wt" "$c"
        CARGO_TARGET_DIR="$root/target/callgrind-$c" measure "$wt" "$c"
        git -C "$root" worktree remove --force "$wt"
    done
fi
