#!/usr/bin/env bash
# Builds (once per machine) the Debian rootfs that test nodes boot from, one
# per release, and caches it outside the repo. Idempotent: a finished rootfs
# is reused.
#
#   integration-tests/scripts/build-rootfs.sh [RELEASE...]
#
# RELEASE is bookworm (Debian 12, containerd 1.6, systemd 252), trixie
# (Debian 13, containerd 1.7, systemd 257) or testing (Debian testing, "forky"
# today: containerd 2.1, systemd 262); default: bookworm and trixie. bookworm
# and trixie take about 40 s to build, testing about 2 min. Prints the path of
# each rootfs; the harness finds them by release (NCA_DEBIAN_RELEASE), or
# NCA_ROOTFS names one directly. A testing rootfs is named by the suite
# (rootfs-testing-vN), and is whatever testing was on the day it was built.
#
# Bump ROOTFS_VERSION when the recipe below changes so caches are rebuilt
# (integration-tests/src/preflight.rs names the same version).
set -euo pipefail

ROOTFS_VERSION=4
CACHE_DIR=${NCA_CACHE_DIR:-/var/cache/node-cert-agent}

releases=("$@")
((${#releases[@]})) || releases=(bookworm trixie)

DEBOOTSTRAP_SCRIPTS=/usr/share/debootstrap/scripts

# The values of KEY, unquoted, in the tables of a containerd config (TOML)
# whose header line is HEADER (`[table]` or `[[array.of.tables]]`, compared
# without whitespace):  toml_values FILE KEY HEADER...
toml_values() {
  local file=$1 key=$2
  shift 2
  local IFS=$'\n'
  awk -v key="$key" -v headers="$*" '
    BEGIN { n = split(headers, h, "\n"); for (i = 1; i <= n; i++) wanted[h[i]] = 1 }
    /^[[:space:]]*\[/ { t = $0; gsub(/[[:space:]]/, "", t); in_table = (t in wanted); next }
    in_table && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      v = $0
      sub(/^[^=]*=[[:space:]]*/, "", v)
      gsub(/["'"'"'[:space:]]/, "", v)
      print v
    }
  ' "$file"
}

# The CRI plugin's table of image settings: in a version 2 config
# (containerd 1.x), and in a version 3 one (containerd 2.x).
CRI_V2_TABLE='[plugins."io.containerd.grpc.v1.cri".containerd]'
CRI_V3_TABLE="[plugins.'io.containerd.cri.v1.images']"
# containerd 2.x's transfer service: the snapshotters it unpacks into.
TRANSFER_UNPACK_TABLE="[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]"

build() {
  local release=$1
  local root="$CACHE_DIR/rootfs-$release-v$ROOTFS_VERSION"
  if [[ -f "$root/.complete" ]]; then
    echo "rootfs: $release cached at $root"
    return 0
  fi
  local work="$root.partial" log="$CACHE_DIR/debootstrap-$release.log"
  rm -rf "$work"
  echo "rootfs: building $root (about 40 s; testing about 2 min)"
  # debootstrap knows a suite by its script. An older debootstrap has none for
  # a newer suite name (e.g. Debian 12's has `testing` but no `forky`); every
  # Debian suite uses the same script, `sid`, so name it explicitly then.
  local script=()
  if [[ ! -e "$DEBOOTSTRAP_SCRIPTS/$release" ]]; then
    [[ -f "$DEBOOTSTRAP_SCRIPTS/sid" ]] \
      || { echo "rootfs: debootstrap has no script for $release, nor $DEBOOTSTRAP_SCRIPTS/sid" >&2; return 1; }
    script=("$DEBOOTSTRAP_SCRIPTS/sid")
  fi
  # rpm: the packaging test installs the .rpm in a node with Debian's rpm.
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,ca-certificates,containerd,rpm \
    "$release" "$work" http://deb.debian.org/debian "${script[@]}" >"$log" 2>&1 \
    || { tail -n 30 "$log"; echo "rootfs: debootstrap of $release failed (log: $log)" >&2; return 1; }

  # containerd: default config, but the native snapshotter, because overlayfs
  # inside an nspawn container on an overlay/other fs is not reliable here.
  # containerd 1.x prints a version 2 config (`snapshotter = "overlayfs"`, the
  # CRI's in $CRI_V2_TABLE); 2.x a version 3 one (`snapshotter = 'overlayfs'`,
  # the CRI's in $CRI_V3_TABLE). Everything else, config_path included, stays
  # as containerd prints it.
  local config="$work/etc/containerd/config.toml"
  chroot "$work" containerd config default >"$config"
  sed -i -E "s/^([[:space:]]*snapshotter = )([\"'])overlayfs([\"'])[[:space:]]*\$/\1\2native\3/" "$config"
  toml_values "$config" snapshotter "$CRI_V2_TABLE" "$CRI_V3_TABLE" | grep -qx native \
    || { echo "rootfs: $release: could not switch containerd's CRI to the native snapshotter" \
      "(its CRI snapshotter is now: $(toml_values "$config" snapshotter "$CRI_V2_TABLE" "$CRI_V3_TABLE"))" >&2; return 1; }
  # containerd 2.x's CRI pulls through the transfer service, which unpacks
  # only into the snapshotters its unpack_config lists (none printed: then the
  # platform's default, overlayfs), so a CRI pull for the native snapshotter
  # fails with "unable to initialize unpacker: no unpack platforms defined".
  # List native for this platform. (containerd 1.x's CRI pulls by itself.)
  if grep -qx "version = 3" "$config"; then
    local arch
    arch=$(chroot "$work" dpkg --print-architecture)
    printf "\n%s\n  platform = 'linux/%s'\n  snapshotter = 'native'\n" "$TRANSFER_UNPACK_TABLE" "$arch" >>"$config"
    toml_values "$config" snapshotter "$TRANSFER_UNPACK_TABLE" | grep -qx native \
      || { echo "rootfs: $release: could not make containerd's transfer service unpack into the native snapshotter" >&2; return 1; }
  fi
  # containerd must accept the result.
  chroot "$work" containerd --config /etc/containerd/config.toml config dump >/dev/null \
    || { echo "rootfs: $release: containerd rejects $config" >&2; return 1; }

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
    bookworm | trixie | testing) ;;
    *) echo "rootfs: unknown release $release (bookworm, trixie or testing)" >&2; exit 2 ;;
  esac
  # Two test runs on one machine build a release once: the second waits.
  exec {lock}>"$CACHE_DIR/.build-$release.lock"
  flock "$lock"
  build "$release"
  exec {lock}>&-
done
