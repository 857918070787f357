#!/usr/bin/env bash
# Builds node-cert-agent's packages.
#
#   packaging/build.sh             release binary (lto), then the .deb and the .rpm
#   packaging/build.sh --test-deb  a .deb of the debug binary (no release build),
#                                  for the real-node packaging test
#
# Installs cargo-deb and cargo-generate-rpm first if they are missing
# (`cargo install --locked`, a few minutes once). Prints each package's path
# and size.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
case "${1:-}" in
  "") ;;
  --test-deb) mode=test ;;
  *) echo "usage: $0 [--test-deb]" >&2; exit 2 ;;
esac

need=()
for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
  echo "build: installing ${need[*]}"
  cargo install --locked "${need[@]}"
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out="$target_dir/packages"
mkdir -p "$out"

report() {
  for f in "$@"; do
    printf '%s\t%s bytes\t(%s)\n' "$f" "$(stat -c %s "$f")" "$(du -h "$f" | cut -f1)"
  done
}

if [[ $mode == test ]]; then
  cargo build -p node-cert-agent
  deb="$out/node-cert-agent-test.deb"
  # cargo-deb warns that the dev profile is unusual: this package is only
  # for the test. --fast: light compression of the large debug binary.
  cargo deb -p node-cert-agent --no-build --profile dev --no-strip --fast -o "$deb" 2>&1 \
    | grep -v -e 'dev profile is not supported' -e 'debug symbols set' || true
  test -s "$deb"
  report "$deb"
  exit 0
fi

cargo build -p node-cert-agent --release
deb=$(cargo deb -p node-cert-agent --no-build -o "$out/")
rpm_dir="$out"
cargo generate-rpm -p agent -o "$rpm_dir/"
rpm=$(ls -t "$rpm_dir"/node-cert-agent-*.rpm | head -1)
report "$deb" "$rpm"
