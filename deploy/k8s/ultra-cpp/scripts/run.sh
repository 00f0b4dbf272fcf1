#!/usr/bin/env bash
# The runbook's scripts at the paths it calls them by, from deploy/
# (`./k8s/ultra-cpp/scripts/rollback.sh emergency`, `performance-test.sh
# --quick-validation`): each NAME.sh here is a link to this file, which
# runs deploy/scripts/NAME.sh with the ultra-cpp overlay's names
# (names.sh). performance-test.sh runs inside a pod of the live gateway
# color (--in-pod: the image has the script and bench).
set -euo pipefail
here=$(dirname "$0")
name=$(basename "$0")
# shellcheck source=deploy/k8s/ultra-cpp/scripts/names.sh
. "$here/names.sh"
script=$here/../../../scripts/$name
if [ "$name" = run.sh ] || [ ! -f "$script" ]; then
  echo "run.sh: call it by a link named as a script of deploy/scripts" >&2
  exit 2
fi
if [ "$name" = performance-test.sh ]; then set -- --in-pod "$@"; fi
exec bash "$script" "$@"
