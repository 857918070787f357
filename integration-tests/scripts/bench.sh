#!/usr/bin/env bash
# The bench command (CONTRIBUTING.md "Benchmarks"; its figures are in
# docs/benchmarks.md): builds the release agent, then runs the
# benchmarks (latency on a real node, no-ops, idle footprint, fleet, size)
# and prints a table. Must run as root (it boots a systemd-nspawn node).
# Flags are passed on: --runs N (default 50), --idle-minutes M (default 1).
# --static (first flag) benches the OCI image's static binary instead of the
# release binary of the .deb/.rpm (it runs packaging/image.sh first).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ${EUID} -ne 0 ]]; then
  echo "bench: must run as root (it boots a systemd-nspawn node)" >&2
  exit 1
fi
integration-tests/scripts/build-rootfs.sh bookworm
# Leftovers of aborted earlier runs only (see cleanup-nodes.sh); the bench's
# own node is torn down by the harness.
integration-tests/scripts/cleanup-nodes.sh --stale
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [[ ${1:-} == --static ]]; then
  shift
  packaging/image.sh
  export NCA_AGENT_BIN="$target_dir/static-build/$(rustc -vV | sed -n 's/^host: //p')/release/node-cert-agent"
else
  cargo build --release -p node-cert-agent
  export NCA_AGENT_BIN="$target_dir/release/node-cert-agent"
fi
cargo run -q -p nca-tools --bin bench -- --binary "$NCA_AGENT_BIN" "$@"
