#!/usr/bin/env bash
# shellcheck disable=SC2034  # read by deploy/scripts/lib.sh
# The ultra-cpp overlay's names, the defaults of the scripts in this
# folder (each runs its namesake in deploy/scripts). Sourced, not run. A
# variable already set, or --namespace, wins.
export ULTRAGATE_NAMESPACE=${ULTRAGATE_NAMESPACE:-ultra-cpp}
export ULTRAGATE_APP=${ULTRAGATE_APP:-ultra-cpp-gateway}
export ULTRAGATE_SERVICE=${ULTRAGATE_SERVICE:-ultra-cpp-gateway}
export ULTRAGATE_DEPLOYMENT=${ULTRAGATE_DEPLOYMENT:-ultra-cpp-gateway}
export ULTRAGATE_NODEJS=${ULTRAGATE_NODEJS:-nodejs-api}
export ULTRAGATE_CONFIGMAPS=${ULTRAGATE_CONFIGMAPS:-ultra-cpp-config ultra-cpp-config-blue ultra-cpp-config-green}
