//! `node-cert-agent uninstall`: takes the agent's custom CA trust off the
//! node. Every anchor the agent wrote is removed (and its files in
//! containerd's registry host directory, `certs.d/_default`), the distro's refresh tool
//! runs once, each allowlisted unit is restarted once (if it runs) when the
//! bundle changed, and the agent's CA state and status files go. Kubelet's
//! certificates stay: they are kubelet's, and kubelet needs them.
//!
//! Composition only: the removal is a trust pass with no inputs (the trust
//! job's plan removes every anchor that no input asks for), so it has the
//! pass's guarantees: only the agent's own files, steps recorded before they
//! run, and a failed step finished by running `uninstall` again. A running
//! daemon (host service or DaemonSet pod) would install the CAs again, so
//! `uninstall` refuses to run while one holds the daemon lock.

use std::path::{Path, PathBuf};

use node_cert_agent::node::fsutil::{self, FsError};
use node_cert_agent::node::lock::{try_daemon_lock, LockError};
use node_cert_agent::node::systemd::Systemd;
use node_cert_agent::ops::daemon_status::{DAEMON_LOCK_FILE, DAEMON_STATUS_FILE};
use node_cert_agent::trust::plan::DEFAULT_MAX_CERTIFICATES;
use node_cert_agent::trust::reconcile::{CaSettings, Outcome, ReconcileError, Reconciler};
use node_cert_agent::trust::state::STATE_FILE;
use node_cert_agent::trust::store::TrustStore;

/// The kubelet job's lock in the state directory (`kubelet::manager::lock_path`).
const KUBELET_LOCK_FILE: &str = "kubelet.lock";
/// The state directory is private to the agent, as `run` creates it.
const STATE_DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("a node-cert-agent daemon is running on this node (it holds {}): it would install the CAs again. Stop it first (`systemctl disable --now node-cert-agent.service` for the host service; for the DaemonSet, delete it or unlabel the node), then run `node-cert-agent uninstall` again", lock.display())]
    DaemonRunning { lock: PathBuf },
    #[error("cannot create the state directory {path}: {source}")]
    StateDir { path: PathBuf, source: FsError },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("removing the agent's CAs: {0}")]
    Pass(#[from] ReconcileError),
    #[error("cannot remove the agent's state file {path}: {source}")]
    RemoveState { path: PathBuf, source: FsError },
}

/// What `uninstall` did.
#[derive(Debug)]
pub struct Removal {
    pub outcome: Outcome,
    /// The state directory is gone (it held nothing but the agent's files).
    pub state_dir_removed: bool,
}

/// The agent's memory of its anchors directories (`trust::state`); the
/// uninstall pass removes the anchors in every one of them.
const ANCHOR_DIRS_FILE: &str = "anchor-dirs.json";

/// Removes the agent's anchors from `store` (refresh, restarts of
/// `restart_units`) and its state from `state_dir` (as this process sees
/// it). Holds the daemon lock throughout, so no daemon starts meanwhile.
pub async fn remove_agent_trust<S: Systemd>(
    store: TrustStore,
    systemd: S,
    restart_units: Vec<String>,
    state_dir: &Path,
) -> Result<Removal, UninstallError> {
    fsutil::ensure_dir(state_dir, STATE_DIR_MODE).map_err(|source| UninstallError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let lock_path = state_dir.join(DAEMON_LOCK_FILE);
    let Some(lock) = try_daemon_lock(&lock_path)? else {
        return Err(UninstallError::DaemonRunning { lock: lock_path });
    };
    let anchors_dir = store.anchors_dir().map_err(ReconcileError::from)?;
    let reconciler = Reconciler::new(
        store,
        systemd,
        CaSettings {
            sources: Vec::new(),
            api_secret: None,
            restart_delay: std::time::Duration::ZERO,
            restart_units,
            restart_spacing: std::time::Duration::ZERO,
            max_certificates: DEFAULT_MAX_CERTIFICATES,
            state_path: state_dir.join(STATE_FILE),
        },
    );
    reconciler.sweep()?;
    let outcome = reconciler.reconcile().await?;

    // The pass succeeded: nothing is pending, and nothing of the agent's is
    // left in the trust store, so its state has nothing left to say.
    for name in [
        STATE_FILE,
        node_cert_agent::trust::pacing::HISTORY_FILE,
        ANCHOR_DIRS_FILE,
        DAEMON_STATUS_FILE,
        KUBELET_LOCK_FILE,
    ] {
        remove_state_file(&state_dir.join(name))?;
    }
    fsutil::sweep_temp_files(state_dir).map_err(|source| UninstallError::RemoveState {
        path: state_dir.to_path_buf(),
        source,
    })?;
    remove_state_file(&lock_path)?;
    drop(lock);
    let state_dir_removed = std::fs::remove_dir(state_dir).is_ok();
    // Debian's anchors directory is the agent's own subdirectory; the other
    // families' belong to the distro and stay. An emptied directory of the
    // agent's own goes (a non-empty one, or a mount point, stays).
    if anchors_dir
        .file_name()
        .is_some_and(|n| n == "node-cert-agent")
    {
        let _ = std::fs::remove_dir(&anchors_dir);
    }
    Ok(Removal {
        outcome,
        state_dir_removed,
    })
}

fn remove_state_file(path: &Path) -> Result<(), UninstallError> {
    fsutil::remove_durable(path)
        .map(drop)
        .map_err(|source| UninstallError::RemoveState {
            path: path.to_path_buf(),
            source,
        })
}

/// The one-paragraph report `uninstall` prints.
pub fn summary(removal: &Removal, store_dir: &Path, state_dir: &Path) -> String {
    let o = &removal.outcome;
    let mut lines = Vec::new();
    if o.removed.is_empty() {
        lines.push(format!(
            "nothing to remove: no CA of node-cert-agent's in {}",
            store_dir.display()
        ));
    }
    for cert in &o.removed {
        lines.push(format!(
            "removed CA {} (sha256 {})",
            cert.subject, cert.fingerprint
        ));
    }
    if o.refreshed {
        lines.push("refreshed the node's trust store".to_owned());
    }
    for unit in &o.restarted {
        lines.push(format!("restarted {unit} (it was running)"));
    }
    lines.push(if removal.state_dir_removed {
        format!(
            "removed the agent's state directory {}",
            state_dir.display()
        )
    } else {
        format!(
            "removed the agent's state files from {} (the directory holds other files and stays)",
            state_dir.display()
        )
    });
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use node_cert_agent::node::distro::Family;
    use node_cert_agent::node::hostroot::HostRoot;
    use node_cert_agent::node::lock::try_daemon_lock;
    use node_cert_agent::node::systemd::fake::RecordingSystemd;
    use node_cert_agent::trust::sources::SourceSpec;
    use node_cert_agent::x509::testpki;

    use super::*;

    const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
    const ANCHORS: &str = "usr/local/share/ca-certificates/node-cert-agent";
    const STATE: &str = "var/lib/node-cert-agent";

    /// A Debian node root with the distro's bundle.
    fn node() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc/ssl/certs")).unwrap();
        fs::write(root.path().join(BUNDLE), "distro\n").unwrap();
        root
    }

    fn store(root: &Path) -> TrustStore {
        TrustStore::new(HostRoot::new(root).unwrap(), Family::Debian.layout())
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Installs CAs `cns` as the daemon does, from a Secret directory.
    fn install(root: &Path, fake: Arc<RecordingSystemd>, cns: &[&str]) -> Vec<String> {
        let secret = tempfile::tempdir().unwrap();
        let mut pems = Vec::new();
        for (i, cn) in cns.iter().enumerate() {
            let pem = testpki::pem(&testpki::good_ca(cn).cert);
            fs::write(secret.path().join(format!("ca{i}.crt")), &pem).unwrap();
            pems.push(pem);
        }
        let r = Reconciler::new(
            store(root),
            fake,
            CaSettings {
                sources: vec![SourceSpec::SecretDir(secret.path().into())],
                api_secret: None,
                restart_delay: std::time::Duration::ZERO,
                restart_units: vec!["containerd.service".into()],
                restart_spacing: std::time::Duration::ZERO,
                max_certificates: 10,
                state_path: root.join(STATE).join(STATE_FILE),
            },
        );
        let o = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(o.installed.len(), cns.len());
        fs::write(root.join(STATE).join(DAEMON_STATUS_FILE), "{}").unwrap();
        pems
    }

    #[test]
    fn uninstall_removes_the_agents_files_in_containerds_certs_d_and_restarts_once() {
        let root = node();
        let etc = root.path().join("etc/containerd");
        fs::create_dir_all(etc.join("certs.d/registry.example_5000_")).unwrap();
        fs::write(
            etc.join("config.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
        )
        .unwrap();
        let theirs = etc.join("certs.d/registry.example_5000_/hosts.toml");
        fs::write(&theirs, "server = \"https://registry.example:5000\"\n").unwrap();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        fake.set_active_since("containerd.service", node_cert_agent::time::now_us());
        install(root.path(), fake.clone(), &["A"]);
        let default = etc.join("certs.d/_default");
        assert!(
            default.join("hosts.toml").exists() && default.join("node-cert-agent-ca.crt").exists()
        );
        let restarts = fake.restarts().len();

        rt().block_on(remove_agent_trust(
            store(root.path()),
            fake.clone(),
            vec!["containerd.service".into()],
            &root.path().join(STATE),
        ))
        .unwrap();
        assert!(!default.exists(), "the agent's _default goes");
        assert_eq!(
            fs::read_to_string(&theirs).unwrap(),
            "server = \"https://registry.example:5000\"\n",
            "another owner's host directory stays"
        );
        assert_eq!(
            fake.restarts().len(),
            restarts + 1,
            "containerd may hold the CA"
        );
    }

    #[test]
    fn uninstall_removes_every_agent_ca_refreshes_and_restarts_once() {
        let root = node();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        let pems = install(root.path(), fake.clone(), &["A", "B"]);
        let bundle = fs::read_to_string(root.path().join(BUNDLE)).unwrap();
        assert!(pems.iter().all(|p| bundle.contains(p.trim())));
        // The distro's own local anchors are not the agent's.
        let admin = root
            .path()
            .join("usr/local/share/ca-certificates/admin.crt");
        fs::write(&admin, "an admin's CA").unwrap();
        let (restarts, commands) = (fake.restarts().len(), fake.commands().len());

        let state_dir = root.path().join(STATE);
        let removal = rt()
            .block_on(remove_agent_trust(
                store(root.path()),
                fake.clone(),
                vec!["containerd.service".into()],
                &state_dir,
            ))
            .unwrap();

        assert_eq!(removal.outcome.removed.len(), 2);
        assert!(removal.outcome.refreshed);
        assert_eq!(fake.commands().len(), commands + 1, "one refresh");
        assert_eq!(fake.restarts().len(), restarts + 1, "one restart");
        assert_eq!(fake.restarts().last().unwrap(), "containerd.service");
        assert_eq!(
            fs::read_to_string(root.path().join(BUNDLE)).unwrap(),
            "distro\n"
        );
        assert!(
            !root.path().join(ANCHORS).exists(),
            "the agent's own dir goes"
        );
        assert!(admin.exists(), "an admin's anchor stays");
        assert!(removal.state_dir_removed && !state_dir.exists());
        let text = summary(&removal, Path::new("/anchors"), Path::new("/state"));
        assert!(
            text.contains("removed CA ") && text.contains("CN=A") && text.contains("CN=B"),
            "{text}"
        );
        assert!(text.contains("restarted containerd.service"), "{text}");
    }

    #[test]
    fn uninstall_with_nothing_installed_refreshes_and_restarts_nothing() {
        let root = node();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        let state_dir = root.path().join(STATE);
        let removal = rt()
            .block_on(remove_agent_trust(
                store(root.path()),
                fake.clone(),
                vec!["containerd.service".into()],
                &state_dir,
            ))
            .unwrap();
        assert!(removal.outcome.removed.is_empty());
        assert!(fake.commands().is_empty() && fake.restarts().is_empty());
        assert!(summary(&removal, Path::new("/a"), &state_dir).starts_with("nothing to remove"));
        // Running it again is as harmless.
        rt().block_on(remove_agent_trust(
            store(root.path()),
            fake.clone(),
            vec![],
            &state_dir,
        ))
        .unwrap();
    }

    #[test]
    fn uninstall_is_refused_while_a_daemon_holds_the_lock_and_changes_nothing() {
        let root = node();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        install(root.path(), fake.clone(), &["A"]);
        let state_dir = root.path().join(STATE);
        let daemon = try_daemon_lock(&state_dir.join(DAEMON_LOCK_FILE))
            .unwrap()
            .unwrap();
        let err = rt()
            .block_on(remove_agent_trust(
                store(root.path()),
                fake.clone(),
                vec!["containerd.service".into()],
                &state_dir,
            ))
            .unwrap_err();
        assert!(matches!(err, UninstallError::DaemonRunning { .. }), "{err}");
        assert!(err.to_string().contains("Stop it first"), "{err}");
        assert_eq!(fs::read_dir(root.path().join(ANCHORS)).unwrap().count(), 1);
        assert!(state_dir.join(STATE_FILE).exists());
        drop(daemon);
    }

    #[test]
    fn a_failed_refresh_fails_uninstall_and_the_next_uninstall_finishes_it() {
        let root = node();
        let fake = Arc::new(RecordingSystemd::emulating_debian(root.path()));
        install(root.path(), fake.clone(), &["A"]);
        let state_dir = root.path().join(STATE);
        *fake.command_status.lock().unwrap() = 1;
        let err = rt()
            .block_on(remove_agent_trust(
                store(root.path()),
                fake.clone(),
                vec!["containerd.service".into()],
                &state_dir,
            ))
            .unwrap_err();
        assert!(matches!(err, UninstallError::Pass(_)), "{err}");
        assert!(
            state_dir.join(STATE_FILE).exists(),
            "the pending refresh is remembered"
        );
        let restarts = fake.restarts().len();

        *fake.command_status.lock().unwrap() = 0;
        let removal = rt()
            .block_on(remove_agent_trust(
                store(root.path()),
                fake.clone(),
                vec!["containerd.service".into()],
                &state_dir,
            ))
            .unwrap();
        assert!(removal.outcome.refreshed);
        assert_eq!(fake.restarts().len(), restarts + 1);
        assert_eq!(
            fs::read_to_string(root.path().join(BUNDLE)).unwrap(),
            "distro\n"
        );
    }
}
