#!/usr/bin/env bash
# Builds node-cert-agent's packages.
#
#   packaging/build.sh         the release packages: the .deb (the release
#                              binary, for Debian and Ubuntu, with their
#                              libc6/libssl3 dependencies) and the .rpm (the
#                              static release binary of the image,
#                              packaging/static-binary.sh: RPM distros ship
#                              other glibc and OpenSSL versions than the
#                              Debian machine that builds it)
#   packaging/build.sh --test  test packages of the debug binary, for the
#                              real-node packaging tests: a .deb and an .rpm,
#                              each as revision 1 and 2 (for the upgrade
#                              tests), debug info stripped, light compression
#
# Installs cargo-deb and cargo-generate-rpm first if they are missing
# (`cargo install --locked`, a few minutes once). Prints each package's path
# and size, one per line: `<path>\t<bytes> bytes\t(<size>)`.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
case "${1:-}" in
  "") ;;
  --test) mode=test ;;
  *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac

need=()
for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
  echo "build: installing ${need[*]}" >&2
  cargo install --locked "${need[@]}" >&2
fi

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out="$target_dir/packages"
mkdir -p "$out"

report() {
  for f in "$@"; do
    printf '%s\t%s bytes\t(%s)\n' "$f" "$(stat -c %s "$f")" "$(du -h "$f" | cut -f1)"
  done
}

if [[ $mode == test ]]; then
  cargo build -p node-cert-agent >&2
  # The packages take a stripped copy of the debug binary from a target dir
  # of their own (both tools map `target/release/` of the asset list to
  # <target dir>/<profile>/): the package tests need the code, not 190 MB
  # of debug info.
  pkg_target="$target_dir/packaging-test"
  mkdir -p "$pkg_target/debug"
  objcopy --strip-debug "$target_dir/debug/node-cert-agent" "$pkg_target/debug/node-cert-agent"
  built=()
  for rev in 1 2; do
    deb="$out/node-cert-agent-test-$rev.deb"
    # cargo-deb warns that the dev profile is unusual: these are test packages.
    CARGO_TARGET_DIR="$pkg_target" cargo deb -p node-cert-agent --no-build --profile dev \
      --no-strip --fast --deb-revision "$rev" -o "$deb" 2>&1 \
      | grep -v -e 'dev profile is not supported' -e 'debug symbols set' >&2 || true
    test -s "$deb"
    rpm="$out/node-cert-agent-test-$rev.rpm"
    cargo generate-rpm -p agent --target-dir "$pkg_target" --profile dev \
      --payload-compress gzip -s "release = \"$rev\"" -o "$rpm" >&2
    test -s "$rpm"
    built+=("$deb" "$rpm")
  done
  report "${built[@]}"
  exit 0
fi

cargo build -p node-cert-agent --release >&2
deb=$(cargo deb -p node-cert-agent --no-build -o "$out/")
static=$(packaging/static-binary.sh)
triple=$(basename "$(dirname "$(dirname "$static")")")
cargo generate-rpm -p agent --target-dir "$target_dir/static-build" --target "$triple" -o "$out/" >&2
rpm=$(ls -t "$out"/node-cert-agent-*.rpm | grep -v -- -test- | head -1)
report "$deb" "$rpm"
