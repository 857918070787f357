#!/usr/bin/env bash
# Runs every check and test of node-cert-agent, from a fresh machine: installs
# the Debian packages the real-node tests need, builds (once, cached outside
# the repo) the node rootfs, then lint, the OCI image, unit tests, real-node
# tests and a short fuzz run.
# Must run as root: the integration tests boot systemd-nspawn nodes.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ ${EUID} -ne 0 ]]; then
  echo "test-all: must run as root (the real-node tests boot systemd-nspawn containers and mount overlays)" >&2
  exit 1
fi

# buildah and libssl-dev: the OCI image (packaging/image.sh, a static binary).
# prometheus: promtool, for the alert tests (tests/alerts.rs).
packages=(systemd-container debootstrap docker-registry protobuf-compiler ca-certificates openssl buildah libssl-dev prometheus)
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

integration-tests/scripts/build-rootfs.sh

# Leftovers of an aborted earlier run would hold overlay mounts; clear them.
integration-tests/scripts/cleanup-nodes.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build the agent"
cargo build -p node-cert-agent
export NCA_AGENT_BIN="$PWD/target/debug/node-cert-agent"
echo "== build the OCI image (static release binary)"
packaging/image.sh
NCA_IMAGE_TAR="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/packages/node-cert-agent-image.tar"
export NCA_IMAGE_TAR
echo "== tests (unit and real-node)"
cargo test --workspace --no-fail-fast
# The short fuzz run (30 s per target; `fuzz/run.sh 600` is the long one).
# First run: installs cargo-fuzz and builds the fuzz targets (~15 min).
echo "== fuzz (short)"
fuzz/run.sh 30
