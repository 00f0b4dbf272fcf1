#!/usr/bin/env bash
# The project's test command (README.md): installs what the tests need on a
# fresh Debian 12 machine, builds everything, runs every test.
set -euo pipefail
cd "$(dirname "$0")/../.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v curl >/dev/null || missing+=(curl)
# openssl s_client asks for a renegotiation in the TLS tests.
command -v openssl >/dev/null || missing+=(openssl)
command -v node >/dev/null || missing+=(nodejs)
command -v ip >/dev/null || missing+=(iproute2)
command -v shellcheck >/dev/null || missing+=(shellcheck)
# DPDK 22.11 for the DPDK data plane (dpdk-sys finds it with pkg-config).
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists libdpdk 2>/dev/null || missing+=(libdpdk-dev dpdk)
# promtool (Debian's prometheus package) checks /metrics and the alert rules.
command -v promtool >/dev/null || missing+=(prometheus)
# kubectl renders the Kustomize overlays (deploy/k8s) for the deploy and
# runbook tests; Debian's package where the machine has none.
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  # Only promtool is wanted: the Prometheus server the package may start
  # is stopped.
  as_root systemctl stop prometheus >/dev/null 2>&1 || true
fi

# The deploy tree: scripts linted, every overlay rendered by Kustomize and
# validated against a stated Kubernetes version (kubernetes-validate says
# which kinds it has no schema for: the CRDs' PodMonitor, PrometheusRule,
# NetworkAttachmentDefinition; prometheus-adapter.yaml is a rules file for
# the adapter's own ConfigMap, validated alone).
shellcheck -x deploy/scripts/*.sh deploy/k8s/ultra-cpp/scripts/run.sh deploy/k8s/ultra-cpp/scripts/names.sh \
  bench/scripts/*.sh .ci/run hugepages-setup.sh
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install -q kubernetes-validate 2>/dev/null \
    || python3 -m pip install -q --break-system-packages kubernetes-validate
fi
k8s_version=1.31.0
rendered=$(mktemp -d)
for overlay in default ultra-cpp dpdk; do
  kubectl kustomize "deploy/k8s/$overlay" >"$rendered/$overlay.yaml"
  kubernetes-validate --quiet --strict -k "$k8s_version" "$rendered/$overlay.yaml"
  echo "overlay $overlay: $(grep -c '^kind:' "$rendered/$overlay.yaml") objects valid for Kubernetes $k8s_version"
done
rm -rf "$rendered"
kubernetes-validate --quiet --strict -k "$k8s_version" deploy/k8s/monitoring/prometheus-adapter.yaml
# Alert rules: checked and unit-tested by promtool; the PrometheusRule
# carries exactly the groups of the plain rules file.
promtool check rules deploy/k8s/monitoring/alerts.rules.yml
(cd deploy/k8s/monitoring && promtool test rules alerts.test.yml)
python3 - <<'PY'
import yaml
rules = yaml.safe_load(open("deploy/k8s/monitoring/alerts.rules.yml"))
crd = yaml.safe_load(open("deploy/k8s/monitoring/prometheusrule.yaml"))
assert crd["spec"]["groups"] == rules["groups"], "prometheusrule.yaml and alerts.rules.yml differ"
print("prometheusrule.yaml matches alerts.rules.yml")
PY

# Fuzzing (dataplane/fuzz): every target for a bounded time, starting from
# the committed seeds; new inputs go to a scratch directory, a crash fails
# the run (and becomes a byte-slice regression test). cargo-fuzz needs a
# nightly toolchain, or stable with RUSTC_BOOTSTRAP=1.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi
fuzz_seconds=${FUZZ_SECONDS:-30}
(
  cd dataplane/fuzz
  "${fuzz[@]}" build -s none
  for target in $("${fuzz[@]}" list); do
    scratch=$(mktemp -d)
    echo "fuzzing $target for ${fuzz_seconds}s"
    if ! "${fuzz[@]}" run -s none "$target" "$scratch" "corpus/$target" -- \
      -max_total_time="$fuzz_seconds" -max_len=4096 >"$scratch.log" 2>&1; then
      # The panic message first (a long input's Debug print would push it
      # out of the tail), then the end of the log.
      grep -m 1 -A 2 'panicked at' "$scratch.log" || true
      tail -n 40 "$scratch.log"
      echo "fuzz target $target failed; the input is in dataplane/fuzz/artifacts/$target"
      exit 1
    fi
    grep -E '^Done [0-9]+ runs' "$scratch.log" || true
    rm -rf "$scratch" "$scratch.log"
  done
)

# Hugepages for the DPDK end-to-end test (gateway/tests/dpdk.rs): 256 x 2 MiB.
as_root ./hugepages-setup.sh --pages 256
# The DPDK data plane is built and linted too (the `dpdk` features).
dpdk_features=(--features ultragate/dpdk --features ultragate-dataplane/ring --features ultragate-bench/dpdk)
cargo clippy --workspace --all-targets --locked "${dpdk_features[@]}" -- -D warnings
cargo build --workspace --all-targets --locked "${dpdk_features[@]}"
# The end-to-end suites run on both kernel backends (a matrix row is an
# environment variable read by gateway/tests/support): io_uring with the
# whole workspace, then epoll. `uring` is explicit, so a gateway that
# cannot set up io_uring fails the row instead of passing on epoll.
ULTRAGATE_IO_BACKEND=uring cargo test --workspace --locked "${dpdk_features[@]}" \
  -- --test-threads "${TEST_THREADS:-4}"
ULTRAGATE_IO_BACKEND=epoll cargo test -p ultragate --locked \
  --test e2e --test cache --test failover --test security --test backends --test lifecycle --test observability --test routes --test tls \
  -- --test-threads "${TEST_THREADS:-4}"
# A release build has no test hooks: no `/admin/cache/corrupt`, and the
# config key that enables it is refused as unknown.
cargo build --release --locked -p ultragate
hooks=$(mktemp)
printf '[upstream.primary]\nservers = ["127.0.0.1:9"]\n\n[cache]\ntest_hooks = true\n' >"$hooks"
if ./target/release/ultragate --check-config "$hooks" 2>"$hooks.err" \
  || ! grep -q 'cache.test_hooks' "$hooks.err"; then
  echo "the release build accepted [cache] test_hooks: $(cat "$hooks.err")" >&2
  exit 1
fi
rm -f "$hooks.err"
rm -f "$hooks"
