#!/usr/bin/env bash
# Builds node-cert-agent's OCI image without a Docker daemon, with buildah.
#
#   packaging/image.sh
#
# 1. A static release binary (packaging/static-binary.sh): glibc and OpenSSL
#    linked in, no program interpreter, no needed shared library.
# 2. The image from packaging/image/Containerfile (FROM scratch: the binary
#    and nothing else), built by buildah with the vfs driver in a private
#    storage dir, so nothing is left in /var/lib/containers.
# 3. An OCI archive at <target>/packages/node-cert-agent-image.tar of
#    docker.io/library/node-cert-agent:<version> (the DaemonSet's image).
#
# Prints the binary's size, the image's (uncompressed layer) size and the
# archive's. Installs buildah and libssl-dev from Debian's packages if
# missing. Must run as root (buildah's storage).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${EUID} -ne 0 ]]; then
  echo "image: must run as root (buildah's storage)" >&2
  exit 1
fi

if ! command -v buildah >/dev/null 2>&1; then
  echo "image: installing buildah"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends buildah
fi

version=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "node-cert-agent"))')
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out="$target_dir/packages"
mkdir -p "$out"

bin=$(packaging/static-binary.sh)

ctx=$(mktemp -d)
storage=$(mktemp -d)
cleanup() {
  buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs \
    rmi --all >/dev/null 2>&1 || true
  rm -rf "$ctx" "$storage"
}
trap cleanup EXIT
install -m 0755 "$bin" "$ctx/node-cert-agent"

# The archive's image name is the one a node's CRI resolves the DaemonSet's
# `image: node-cert-agent:<version>` to, so `ctr -n k8s.io images import`
# on a node makes it usable as it is; push it anywhere else with
# `skopeo copy oci-archive:<archive> docker://<registry>/node-cert-agent:<version>`.
tag="docker.io/library/node-cert-agent:$version"
archive="$out/node-cert-agent-image.tar"
rm -f "$archive"
b=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs)
"${b[@]}" build --quiet --isolation chroot --timestamp 0 \
  -f packaging/image/Containerfile -t "$tag" "$ctx" >/dev/null
"${b[@]}" push --quiet "$tag" "oci-archive:$archive:$tag"

# The sizes a node sees: the compressed layers it pulls, and what they unpack to.
python3 - "$archive" "$tag" "$bin" <<'PY'
import gzip, io, json, os, sys, tarfile
archive, tag, binary = sys.argv[1:]
with tarfile.open(archive) as t:
    blob = lambda d: t.extractfile("blobs/" + d.replace(":", "/")).read()
    index = json.loads(t.extractfile("index.json").read())
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    layers = manifest["layers"]
    pulled = sum(l["size"] for l in layers) + manifest["config"]["size"]
    unpacked = sum(len(gzip.decompress(blob(l["digest"]))) for l in layers)
    files = []
    for l in layers:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(l["digest"])))) as lt:
            files += [m.name for m in lt.getmembers() if not m.isdir()]
print(f"image: {tag}, {len(layers)} layer(s), files: {', '.join(files)}")
print(f"  binary    {os.path.getsize(binary):>10,} bytes")
print(f"  image     {pulled:>10,} bytes compressed (pulled), {unpacked:,} bytes unpacked")
print(f"  archive   {os.path.getsize(archive):>10,} bytes  {archive}")
PY
