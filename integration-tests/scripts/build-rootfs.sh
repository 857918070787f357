#!/usr/bin/env bash
# Builds (once per machine) the Debian rootfs that test nodes boot from, one
# per release, and caches it outside the repo. Idempotent: a finished rootfs
# is reused.
#
#   integration-tests/scripts/build-rootfs.sh [RELEASE...]
#
# RELEASE is bookworm (Debian 12, containerd 1.6, systemd 252) or trixie
# (Debian 13, containerd 1.7, systemd 257); default: both. Each takes about
# 40 s to build. Prints the path of each rootfs; the harness finds them by
# release (NCA_DEBIAN_RELEASE), or NCA_ROOTFS names one directly.
#
# Bump ROOTFS_VERSION when the recipe below changes so caches are rebuilt
# (integration-tests/src/preflight.rs names the same version).
set -euo pipefail

ROOTFS_VERSION=4
CACHE_DIR=${NCA_CACHE_DIR:-/var/cache/node-cert-agent}

releases=("$@")
((${#releases[@]})) || releases=(bookworm trixie)

build() {
  local release=$1
  local root="$CACHE_DIR/rootfs-$release-v$ROOTFS_VERSION"
  if [[ -f "$root/.complete" ]]; then
    echo "rootfs: $release cached at $root"
    return 0
  fi
  local work="$root.partial" log="$CACHE_DIR/debootstrap-$release.log"
  rm -rf "$work"
  echo "rootfs: building $root (about 40 s)"
  # rpm: the packaging test installs the .rpm in a node with Debian's rpm.
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,ca-certificates,containerd,rpm \
    "$release" "$work" http://deb.debian.org/debian >"$log" 2>&1 \
    || { tail -n 30 "$log"; echo "rootfs: debootstrap of $release failed (log: $log)" >&2; return 1; }

  # containerd: default config, but the native snapshotter, because overlayfs
  # inside an nspawn container on an overlay/other fs is not reliable here.
  chroot "$work" containerd config default >"$work/etc/containerd/config.toml"
  sed -i 's/snapshotter = "overlayfs"/snapshotter = "native"/' "$work/etc/containerd/config.toml"
  grep -q 'snapshotter = "native"' "$work/etc/containerd/config.toml" \
    || { echo "rootfs: $release: could not switch containerd's CRI to the native snapshotter" >&2; return 1; }

  # The test registry is reached by a host name, never a loopback IP (containerd
  # talks plain HTTP to loopback addresses).
  echo "127.0.0.1 registry.test" >>"$work/etc/hosts"
  echo "nca-node" >"$work/etc/hostname"

  # Nothing in the node should wait for a console or a network it does not have.
  chroot "$work" systemctl mask console-getty.service getty@.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  chroot "$work" systemctl enable containerd.service >/dev/null 2>&1

  # Downloaded packages, translations and man pages: not needed in a node,
  # and every test node's overlay sits on this tree.
  rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/usr/share/locale/* "$work"/usr/share/man/*

  touch "$work/.complete"
  mv "$work" "$root"
  echo "rootfs: $release ready at $root"
}

mkdir -p "$CACHE_DIR"
for release in "${releases[@]}"; do
  case "$release" in
    bookworm | trixie) ;;
    *) echo "rootfs: unknown release $release (bookworm or trixie)" >&2; exit 2 ;;
  esac
  # Two test runs on one machine build a release once: the second waits.
  exec {lock}>"$CACHE_DIR/.build-$release.lock"
  flock "$lock"
  build "$release"
  exec {lock}>&-
done
