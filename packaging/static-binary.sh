#!/usr/bin/env bash
# Builds node-cert-agent as a static release binary and prints its path:
# glibc and OpenSSL linked in (+crt-static, OPENSSL_STATIC=1 against
# Debian's libssl-dev), for the host's target so build scripts and proc
# macros stay dynamic. Refuses a binary with a program interpreter or a
# needed shared library.
#
#   packaging/static-binary.sh
#
# Used by packaging/image.sh (the scratch image) and packaging/build.sh (the
# .rpm: RPM distros ship other glibc and OpenSSL versions than the Debian
# machine that builds it, so the package carries a binary that needs none).
# Installs libssl-dev from Debian's packages if missing (as root). Build
# output goes to stderr; stdout is the path alone.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -e /usr/lib/x86_64-linux-gnu/libssl.a ]]; then
  echo "static-binary: installing libssl-dev" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libssl-dev >&2
fi

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
triple=$(rustc -vV | sed -n 's/^host: //p')

echo "static-binary: building the static release binary ($triple)" >&2
# Without a rustc wrapper, in a target directory of its own: built through
# sccache, the binary came out with libcrypto.so.3 as a needed library and
# no program interpreter (so it cannot run), where the same build without
# sccache links OpenSSL statically; and cargo does not rebuild when only
# the wrapper changes.
static_dir="$target_dir/static-build"
env -u RUSTC_WRAPPER -u CARGO_BUILD_RUSTC_WRAPPER CARGO_TARGET_DIR="$static_dir" \
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" OPENSSL_STATIC=1 \
  cargo build -p node-cert-agent --release --target "$triple" >&2
bin="$static_dir/$triple/release/node-cert-agent"
# A static-pie binary keeps a dynamic section for its own relocations, but
# has no program interpreter and needs no shared library.
if readelf -l "$bin" | grep -q 'INTERP' || readelf -d "$bin" | grep -q '(NEEDED)'; then
  echo "static-binary: $bin is dynamically linked; refusing it" >&2
  readelf -d "$bin" | grep '(NEEDED)' >&2 || true
  exit 1
fi
echo "$bin"
