#!/usr/bin/env bash
# Shows that two versions of the agent behave the same on one fixture node:
# `status -o json`, `check -o json` and every /metrics series (parsed as
# Prometheus text) are compared (integration-tests/tools/src/bin/parity.rs says what the fixture
# holds and which clock-derived values get a tolerance).
#
#   integration-tests/scripts/parity.sh [OLD_REF]
#
# OLD_REF (default: aee2dfb, the last commit before the agent was
# restructured into folders) is built in a temporary git worktree with its
# own target directory; the current tree is built as it is. Exits 0 when
# both agree. Takes a few minutes (two debug builds).
set -euo pipefail
cd "$(dirname "$0")/../.."
old_ref="${1:-aee2dfb}"

work="$(mktemp -d "${TMPDIR:-/tmp}/nca-parity-XXXXXX")"
cleanup() {
  git worktree remove --force "$work/old" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

git worktree add --detach "$work/old" "$old_ref" >/dev/null
echo "== building $old_ref"
(cd "$work/old" && CARGO_TARGET_DIR="$work/old-target" cargo build -q -p node-cert-agent)
echo "== building the current tree"
cargo build -q -p node-cert-agent -p nca-tools --bin node-cert-agent --bin parity
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
"$target/debug/parity" "$work/old-target/debug/node-cert-agent" "$target/debug/node-cert-agent"
