//! Shared pieces of the agent's integration tests: a node in a tempdir
//! with the crate's recording fake of systemd (`node::systemd::fake`, from
//! the `testing` feature), and kubelet's AtomicWriter layout.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers, not every test uses every one"
)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use node_cert_agent::node::distro::Family;
use node_cert_agent::node::hostroot::HostRoot;
use node_cert_agent::node::systemd::fake::RecordingSystemd;
use node_cert_agent::trust::reconcile::{CaSettings, Reconciler};
use node_cert_agent::trust::sources::SourceSpec;
use node_cert_agent::trust::store::TrustStore;

/// A Debian node in a tempdir and one mounted Secret directory.
pub struct Node {
    pub root: tempfile::TempDir,
    pub secret: tempfile::TempDir,
    pub fake: Arc<RecordingSystemd>,
    generation: Mutex<u32>,
}

impl Node {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc/ssl/certs")).unwrap();
        fs::write(
            root.path().join("etc/ssl/certs/ca-certificates.crt"),
            "distro\n",
        )
        .unwrap();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        Self {
            root,
            secret: tempfile::tempdir().unwrap(),
            fake,
            generation: Mutex::new(0),
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.root
            .path()
            .join("var/lib/node-cert-agent/ca-state.json")
    }

    pub fn reconciler(&self, restart_units: &[&str]) -> Reconciler<Arc<RecordingSystemd>> {
        let host = HostRoot::new(self.root.path()).unwrap();
        Reconciler::new(
            TrustStore::new(host, Family::Debian.layout()),
            self.fake.clone(),
            CaSettings {
                sources: vec![SourceSpec::SecretDir(self.secret.path().into())],
                api_secret: None,
                restart_delay: std::time::Duration::ZERO,
                restart_units: restart_units.iter().map(|u| u.to_string()).collect(),
                restart_spacing: std::time::Duration::ZERO,
                max_certificates: 10,
                state_path: self.state_path(),
            },
        )
    }

    pub fn anchors_dir(&self) -> PathBuf {
        self.root
            .path()
            .join("usr/local/share/ca-certificates/node-cert-agent")
    }

    pub fn bundle(&self) -> String {
        fs::read_to_string(self.root.path().join("etc/ssl/certs/ca-certificates.crt")).unwrap()
    }

    /// Publishes a new payload the way kubelet's AtomicWriter does and
    /// returns the payload directory (to add entries that are not files).
    pub fn publish(&self, keys: &[(&str, &[u8])]) -> PathBuf {
        let mut g = self.generation.lock().unwrap();
        *g += 1;
        let dir = self.secret.path();
        let payload = format!("..2026_11_22_04_45_{:02}.000000001", *g);
        write_payload(&dir.join(&payload), keys);
        self.swap_data(&payload);
        for (k, _) in keys {
            let link = dir.join(k);
            if fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{k}"), &link).unwrap();
            }
        }
        dir.join(payload)
    }

    /// A payload directory for the next generation, not yet visible.
    pub fn stage(&self, keys: &[(&str, &[u8])]) -> PathBuf {
        let mut g = self.generation.lock().unwrap();
        *g += 1;
        let payload = self
            .secret
            .path()
            .join(format!("..2026_11_22_04_45_{:02}.000000001", *g));
        write_payload(&payload, keys);
        payload
    }

    /// Makes a staged payload the current one.
    pub fn swap_data(&self, payload: &str) {
        let dir = self.secret.path();
        let _ = fs::remove_file(dir.join("..data_tmp"));
        symlink(payload, dir.join("..data_tmp")).unwrap();
        fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `agent/tests/data/corpus/<rel>`.
pub fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corpus")
        .join(rel)
}

/// A payload directory with `keys`, with kubelet's modes (0755, files 0644)
/// set explicitly: another test of this process may have changed the umask
/// (`security.rs` does), and the agent refuses group- or world-writable keys.
fn write_payload(payload: &std::path::Path, keys: &[(&str, &[u8])]) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir(payload).unwrap();
    fs::set_permissions(payload, fs::Permissions::from_mode(0o755)).unwrap();
    for (k, v) in keys {
        let file = payload.join(k);
        fs::write(&file, v).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    }
}
