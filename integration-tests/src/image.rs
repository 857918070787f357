//! A tiny, valid container image built in memory: one gzip'd tar layer holding
//! one small file, an image config whose `rootfs.diff_ids` is the SHA-256 of
//! the uncompressed tar, and a Docker v2 schema 2 manifest.

use std::io::Write;

use serde_json::json;

/// Media type of the manifest [`TestImage`] builds.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Path of the single file in the layer.
pub const FILE_NAME: &str = "nca-test.txt";

/// The blobs and manifest of a one-layer image, with their digests.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The gzip'd layer tar.
    pub layer: Vec<u8>,
    /// `sha256:` digest of `layer`.
    pub layer_digest: String,
    /// `sha256:` digest of the uncompressed layer tar.
    pub diff_id: String,
    /// The image config JSON.
    pub config: Vec<u8>,
    /// `sha256:` digest of `config`.
    pub config_digest: String,
    /// The manifest JSON ([`MANIFEST_MEDIA_TYPE`]).
    pub manifest: Vec<u8>,
    /// `sha256:` digest of `manifest`; what a pull by digest names.
    pub manifest_digest: String,
}

impl TestImage {
    /// An image for this machine's platform whose one file holds `content`.
    pub fn new(content: &str) -> TestImage {
        let tar = layer_tar(content.as_bytes());
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let layer = gz.finish().unwrap();
        let layer_digest = sha256_digest(&layer);

        let config = serde_json::to_vec(&json!({
            "architecture": go_arch(),
            "os": "linux",
            "config": { "Cmd": [format!("/{FILE_NAME}")] },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": "node-cert-agent integration-tests harness" }],
        }))
        .unwrap();
        let config_digest = sha256_digest(&config);

        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "size": config.len(), "digest": config_digest },
            "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "size": layer.len(), "digest": layer_digest }],
        }))
        .unwrap();
        let manifest_digest = sha256_digest(&manifest);
        TestImage {
            layer,
            layer_digest,
            diff_id,
            config,
            config_digest,
            manifest,
            manifest_digest,
        }
    }
}

/// `sha256:<lowercase hex>` of `bytes`, as registries name blobs.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hex: String = openssl::sha::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// This machine's architecture as Go (and so containerd's platform matcher) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An uncompressed tar with the single regular file [`FILE_NAME`].
fn layer_tar(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, FILE_NAME, content).unwrap();
    b.into_inner().unwrap()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn digests_and_diff_id_are_consistent() {
        let img = TestImage::new("hello");
        assert_eq!(sha256_digest(&img.layer), img.layer_digest);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&img.layer[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(sha256_digest(&tar), img.diff_id);

        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some(FILE_NAME));
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(entries.next().is_none());

        let config: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], img.diff_id);
        let manifest: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(manifest["config"]["digest"], img.config_digest);
        assert_eq!(manifest["config"]["size"], img.config.len());
        assert_eq!(manifest["layers"][0]["digest"], img.layer_digest);
        assert_eq!(sha256_digest(&img.manifest), img.manifest_digest);
    }

    #[test]
    fn different_content_different_image() {
        assert_ne!(
            TestImage::new("a").manifest_digest,
            TestImage::new("b").manifest_digest
        );
    }
}
