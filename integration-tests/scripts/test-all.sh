#!/usr/bin/env bash
# Runs every check and test of node-cert-agent, from a fresh machine: installs
# the Debian packages the real-node tests need, builds (once, cached outside
# the repo) the node rootfs of Debian 12, Debian 13 and Debian testing
# ("forky" today), then lint, the OCI image, unit tests, real-node tests on
# Debian 12 nodes, the CA trust, live trust and packaging suites again on
# Debian 13 nodes, the CA trust and live trust suites on Debian testing nodes
# (containerd 2.x, systemd 258+), and a short fuzz run.
# Must run as root: the integration tests boot systemd-nspawn nodes.
#
# Everything the tests start (nodes, registries, overlay mounts, agent
# processes) is recorded in this run's directory (NCA_RUN_DIR, see
# integration-tests/src/run.rs) and stopped by pid when the run ends, however
# it ends; leftovers of earlier aborted runs are stopped first
# (cleanup-nodes.sh --stale). Nothing else on the machine is touched.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ ${EUID} -ne 0 ]]; then
  echo "test-all: must run as root (the real-node tests boot systemd-nspawn containers and mount overlays)" >&2
  exit 1
fi

# buildah and libssl-dev: the OCI image (packaging/image.sh, a static binary).
# skopeo: the image test pushes the image to its registry as a user would.
# prometheus: promtool, for the alert tests (tests/alerts.rs).
packages=(systemd-container debootstrap docker-registry protobuf-compiler ca-certificates openssl buildah libssl-dev skopeo prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The manifest tests render the kustomize base with `kubectl kustomize`; any
# kubectl works (Debian's kubernetes-client does), so only add one if absent.
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if ((${#missing[@]})); then
  echo "test-all: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

integration-tests/scripts/build-rootfs.sh bookworm trixie testing

# What aborted earlier runs left behind (their owner process is gone).
integration-tests/scripts/cleanup-nodes.sh --stale

# This run's record of what it starts; cleaned up when the script exits.
runs_root=${NCA_RUNS_ROOT:-/tmp/nca-test-runs}
NCA_RUN_ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
NCA_RUN_DIR="$runs_root/$NCA_RUN_ID-$$"
export NCA_RUN_ID NCA_RUN_DIR
mkdir -p "$NCA_RUN_DIR"
stat_fields=$(sed 's/.*) //' "/proc/$$/stat")
read -ra stat_fields <<<"$stat_fields"
printf 'pid=%s\nstart=%s\n' "$$" "${stat_fields[19]}" >"$NCA_RUN_DIR/owner"
trap 'integration-tests/scripts/cleanup-nodes.sh "$NCA_RUN_DIR" >/dev/null || echo "test-all: clean-up of $NCA_RUN_DIR incomplete" >&2' EXIT
echo "test-all: run $NCA_RUN_ID (records in $NCA_RUN_DIR)"

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build the agent"
cargo build -p node-cert-agent
export NCA_AGENT_BIN="$target_dir/debug/node-cert-agent"
echo "== build the OCI image (static release binary)"
packaging/image.sh
export NCA_IMAGE_TAR="$target_dir/packages/node-cert-agent-image.tar"

failed=0
echo "== tests (unit, and real-node on Debian 12 nodes)"
NCA_DEBIAN_RELEASE=bookworm cargo test --workspace --no-fail-fast || failed=1
echo "== the CA trust, live trust and packaging suites on Debian 13 (trixie) nodes"
NCA_DEBIAN_RELEASE=trixie cargo test -p integration-tests --no-fail-fast \
  --test ca_trust --test live_trust --test packaging || failed=1
# Debian testing: containerd 2.x (a version 3 config) and a systemd that
# boots only on the unified cgroup hierarchy (the harness asks nspawn for it).
echo "== the CA trust and live trust suites on Debian testing (forky) nodes"
# Other suites for testing nodes join this run: add their `--test` to it.
NCA_DEBIAN_RELEASE=testing cargo test -p integration-tests --no-fail-fast \
  --test ca_trust --test live_trust || failed=1
if ((failed)); then
  echo "test-all: tests failed (see above)" >&2
  exit 1
fi
# The short fuzz run (30 s per target; `fuzz/run.sh 600` is the long one).
# First run: installs cargo-fuzz and builds the fuzz targets (~15 min).
echo "== fuzz (short)"
fuzz/run.sh 30
