#!/usr/bin/env bash
# The README's bench command: builds the release agent, then runs the
# benchmarks (latency on a real node, no-ops, idle footprint, fleet, size)
# and prints a table. Must run as root (it boots a systemd-nspawn node).
# Flags are passed on: --runs N (default 50), --idle-minutes M (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ${EUID} -ne 0 ]]; then
  echo "bench: must run as root (it boots a systemd-nspawn node)" >&2
  exit 1
fi
integration-tests/scripts/build-rootfs.sh
integration-tests/scripts/cleanup-nodes.sh
cargo build --release -p node-cert-agent
export NCA_AGENT_BIN="$PWD/target/release/node-cert-agent"
cargo run -q -p integration-tests --bin bench -- --binary "$NCA_AGENT_BIN" "$@"
