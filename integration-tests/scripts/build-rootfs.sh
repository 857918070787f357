#!/usr/bin/env bash
# Builds (once per machine) the Debian bookworm rootfs that every test node boots
# from, and caches it outside the repo. Idempotent: a finished rootfs is reused.
# Bump ROOTFS_VERSION when the recipe below changes so caches are rebuilt.
set -euo pipefail

ROOTFS_VERSION=3
CACHE_DIR=${NCA_CACHE_DIR:-/var/cache/node-cert-agent}
ROOT="$CACHE_DIR/rootfs-bookworm-v$ROOTFS_VERSION"

if [[ -f "$ROOT/.complete" ]]; then
  echo "rootfs: cached at $ROOT"
  exit 0
fi

mkdir -p "$CACHE_DIR"
work="$ROOT.partial"
rm -rf "$work"
echo "rootfs: building $ROOT (about a minute)"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,ca-certificates,containerd \
  bookworm "$work" http://deb.debian.org/debian >"$CACHE_DIR/debootstrap.log" 2>&1 \
  || { tail -n 30 "$CACHE_DIR/debootstrap.log"; echo "rootfs: debootstrap failed (log: $CACHE_DIR/debootstrap.log)" >&2; exit 1; }

# containerd: default config, but the native snapshotter, because overlayfs
# inside an nspawn container on an overlay/other fs is not reliable here.
chroot "$work" containerd config default >"$work/etc/containerd/config.toml"
sed -i 's/snapshotter = "overlayfs"/snapshotter = "native"/' "$work/etc/containerd/config.toml"

# The test registry is reached by a host name, never a loopback IP (containerd
# talks plain HTTP to loopback addresses).
echo "127.0.0.1 registry.test" >>"$work/etc/hosts"
echo "nca-node" >"$work/etc/hostname"

# Nothing in the node should wait for a console or a network it does not have.
chroot "$work" systemctl mask console-getty.service getty@.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
chroot "$work" systemctl enable containerd.service >/dev/null 2>&1

touch "$work/.complete"
mv "$work" "$ROOT"
echo "rootfs: ready at $ROOT"
