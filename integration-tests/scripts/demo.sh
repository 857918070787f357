#!/usr/bin/env bash
# The main job on a throwaway local node: a pull from a private registry fails,
# the CA is published in the Secret, node-cert-agent installs it and restarts
# containerd, and the pull succeeds. Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ${EUID} -ne 0 ]]; then
  echo "demo: must run as root (it boots a systemd-nspawn node)" >&2
  exit 1
fi
packages=(systemd-container debootstrap docker-registry protobuf-compiler)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
integration-tests/scripts/build-rootfs.sh bookworm
cargo build -q -p node-cert-agent
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export NCA_AGENT_BIN="$target_dir/debug/node-cert-agent"
cargo run -q -p nca-tools --bin demo
