//! Step 1 of `status`: read the node (through [`HostRoot`]) and the agent's
//! state directory into [`Facts`]. It never fails as a whole: every part
//! that cannot be read is recorded as such.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{KubeletSettings, Settings};
use crate::k8s::kubeconfig::{self, Credential};
use crate::kubelet::kubelet_config::{unit_environment, EffectiveKubelet};
use crate::kubelet::store::{is_timestamped_file, CertKind};
use crate::node::distro::TrustStoreLayout;
use crate::node::fsutil;
use crate::node::hostroot::HostRoot;
use crate::node::identity::NodeIdentity;
use crate::node::lock::{probe_daemon_lock, DaemonLock};
use crate::node::procfs::{start_ticks_of, ProcessIdentity};
use crate::node::systemd::UnitExec;
use crate::ops::daemon_status::{
    read_daemon_status, DaemonStatus, DAEMON_LOCK_FILE, DAEMON_STATUS_FILE,
};
use crate::ops::inventory::MAX_FILE_BYTES;
use crate::ops::inventory::{
    gather_certificates, AnchorList, CertInventory, CertSummary, InventorySources,
};
use crate::status::liveness::{liveness, Liveness};
use crate::trust::pacing::{self, RestartHistory};
use crate::trust::plan::SourceInput;
use crate::trust::sources::{read_source, SourceSpec};
use crate::trust::state::{self, CaState, STATE_FILE};
use crate::trust::store::TrustStore;
use crate::x509::cert::Fingerprint;

/// kubeadm's names for kubelet's kubeconfigs, checked besides the configured ones.
pub const KUBEADM_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";

pub const KUBEADM_BOOTSTRAP_KUBECONFIG: &str = "/etc/kubernetes/bootstrap-kubelet.conf";

// ---------------------------------------------------------------------------
// What to look at
// ---------------------------------------------------------------------------

/// Everything [`gather`] looks at, from the settings.
#[derive(Debug, Clone)]
pub struct StatusSources {
    pub host: HostRoot,
    /// Node path of the agent's state directory.
    pub state_dir: PathBuf,
    /// The trust-store layout, or why it is unknown.
    pub layout: Result<TrustStoreLayout, String>,
    /// The CA inputs (process paths), read again to show current findings.
    pub sources: Vec<SourceSpec>,
    pub max_certificates: usize,
    /// kubelet's files and the kubelet job's settings.
    pub kubelet: KubeletSettings,
    pub node_name: Option<String>,
    /// The agent's kubelet job is on (configured, or `auto` with a kubeconfig).
    pub kubelet_job: bool,
    /// How units start their process, as systemd said (kubelet's unit and
    /// the trust job's restart allowlist); a unit systemd could not be
    /// asked about is absent.
    pub unit_execs: BTreeMap<String, UnitExec>,
    /// The trust job's restart allowlist.
    pub runtime_units: Vec<String>,
}

impl StatusSources {
    /// What `settings` point at on this node. `kubelet_job` is whether the
    /// kubelet job runs ([`KubeletSettings::job_enabled`] on this node).
    pub fn from_settings(
        settings: &Settings,
        host: HostRoot,
        layout: Result<TrustStoreLayout, String>,
        node: &NodeIdentity,
        kubelet_job: bool,
    ) -> Self {
        Self {
            state_dir: settings.state_dir.clone(),
            layout,
            sources: settings.trust.sources.clone(),
            max_certificates: settings.trust.max_certificates,
            kubelet: settings.kubelet.clone(),
            node_name: node.name.clone(),
            kubelet_job,
            host,
            unit_execs: BTreeMap::new(),
            runtime_units: settings.trust.restart_units.clone(),
        }
    }

    /// What the certificate inventory looks at (shared with `/metrics`).
    pub fn inventory(&self) -> InventorySources {
        let store = self
            .layout
            .clone()
            .map(|layout| TrustStore::new(self.host.clone(), layout));
        let anchors: AnchorList = Arc::new(move || {
            let store = store.as_ref().map_err(Clone::clone)?;
            let installed = store.installed().map_err(|e| e.to_string())?;
            Ok(installed
                .certs
                .into_iter()
                .map(|(fp, info)| (store.anchor_node_path(&fp), info))
                .collect())
        });
        InventorySources::for_node(
            self.host.clone(),
            anchors,
            is_timestamped_file,
            &self.kubelet,
        )
    }

    /// The state directory as this process sees it.
    pub fn state_dir_path(&self) -> Result<PathBuf, String> {
        self.host
            .resolve(&self.state_dir)
            .map_err(|e| e.to_string())
    }
}

/// kubelet's current certificate of one kind.
#[derive(Debug, Clone)]
pub struct KubeletCertFact {
    /// Node path of `<prefix>-current.pem`.
    pub link: PathBuf,
    /// Node path of the file it points at, its first certificate, and
    /// whether the key in it matches; `Ok(None)` if there is none.
    pub current: Result<Option<(PathBuf, CertSummary, bool)>, String>,
}

#[derive(Debug, Clone)]
pub struct KubeletFacts {
    pub node_name: Option<String>,
    /// Node path of the bootstrap kubeconfig found, if any.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Node path of kubelet's kubeconfig found, if any.
    pub kubeconfig: Option<PathBuf>,
    pub kubelet_config: PathBuf,
    pub rotate_certificates: bool,
    pub server_tls_bootstrap: bool,
    pub agent_job: bool,
    pub serving_job: bool,
    pub defer_to_kubelet_rotation: bool,
    pub client: KubeletCertFact,
    pub serving: KubeletCertFact,
    /// The serving certificate file kubelet serves (`tlsCertFile`,
    /// `--tls-cert-file`), if it names one.
    pub tls_cert_file: Option<PathBuf>,
    /// kubelet's command line was read (else its config file alone counted).
    pub command_line_known: bool,
    /// The credential kubelet's kubeconfig presents, or why it cannot be
    /// told; `None` without a kubeconfig.
    pub kubeconfig_credential: Option<Result<Credential, String>>,
}

/// Everything `status` read, unjudged.
#[derive(Debug)]
pub struct Facts {
    pub now: i64,
    pub version: String,
    /// Node path of the state directory.
    pub state_dir: PathBuf,
    pub daemon: Result<Option<DaemonStatus>, String>,
    /// Decided by [`liveness`] when there is a daemon status file.
    pub liveness: Option<Liveness>,
    pub ca_state: Result<CaState, String>,
    /// The trust job's memory of its unit restarts (empty if none).
    pub restart_history: RestartHistory,
    pub inputs: Vec<SourceInput>,
    pub max_certificates: usize,
    pub layout: Result<TrustStoreLayout, String>,
    pub bundle: Result<BTreeSet<Fingerprint>, String>,
    pub inventory: CertInventory,
    pub kubelet: KubeletFacts,
    /// Units on the restart allowlist whose environment points Go's (or
    /// OpenSSL's) root CAs elsewhere: unit, variable, value.
    pub runtime_roots: Vec<(String, String, String)>,
}

// ---------------------------------------------------------------------------
// Gathering (I/O)
// ---------------------------------------------------------------------------

/// Reads everything `status` shows. Never fails: what cannot be read is a fact too.
pub fn gather(src: &StatusSources, now: i64) -> Facts {
    let state_dir = src.state_dir_path();
    let daemon = state_dir
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|d| read_daemon_status(&d.join(DAEMON_STATUS_FILE)));
    let liveness = match &daemon {
        Ok(Some(d)) => Some(liveness(
            d,
            &ProcessIdentity::current(),
            start_ticks_of(d.process.pid),
            &state_dir.as_ref().map_or_else(
                |e| DaemonLock::Unknown(e.clone()),
                |dir| probe_daemon_lock(&dir.join(DAEMON_LOCK_FILE)),
            ),
        )),
        _ => None,
    };
    let ca_state = state_dir
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|d| state::load(&d.join(STATE_FILE)).map_err(|e| e.to_string()));
    let restart_history = state_dir
        .as_ref()
        .map(|d| pacing::load(&d.join(pacing::HISTORY_FILE)).0)
        .unwrap_or_default();
    let bundle = match &src.layout {
        Ok(layout) => TrustStore::new(src.host.clone(), layout.clone())
            .bundle_fingerprints()
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    Facts {
        now,
        version: env!("CARGO_PKG_VERSION").to_string(),
        state_dir: src.state_dir.clone(),
        daemon,
        liveness,
        ca_state,
        restart_history,
        inputs: src.sources.iter().map(|s| read_source(s, now)).collect(),
        max_certificates: src.max_certificates,
        layout: src.layout.clone(),
        bundle,
        inventory: gather_certificates(&src.inventory()),
        kubelet: gather_kubelet(src),
        runtime_roots: gather_runtime_roots(src),
    }
}

/// The variables with which a process takes its root CAs from elsewhere
/// than the OS bundle (Go's crypto/x509 and OpenSSL read both).
const ROOT_CA_VARIABLES: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];

fn gather_runtime_roots(src: &StatusSources) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for unit in &src.runtime_units {
        let Some(exec) = src.unit_execs.get(unit) else {
            continue;
        };
        let env = unit_environment(exec, |p| {
            src.host
                .resolve(p)
                .ok()
                .and_then(|h| fsutil::read_limited(&h, MAX_FILE_BYTES).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        });
        for var in ROOT_CA_VARIABLES {
            if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
                out.push((unit.clone(), var.to_string(), v.clone()));
            }
        }
    }
    out
}

fn gather_kubelet(src: &StatusSources) -> KubeletFacts {
    let exists = |p: &Path| src.host.resolve(p).is_ok_and(|h| h.exists());
    let first_existing =
        |paths: &[&Path]| paths.iter().find(|p| exists(p)).map(|p| p.to_path_buf());
    let k = &src.kubelet;
    let effective = EffectiveKubelet::read(
        &src.host,
        src.unit_execs.get(k.kubelet_unit()),
        &k.kubelet_config,
    );
    let rotation = effective.rotation;
    let cert = |kind: CertKind| {
        let store = crate::kubelet::store::KubeletStore::new(src.host.clone(), k.pki_dir.clone());
        KubeletCertFact {
            link: store.current_link(kind),
            current: store
                .current(kind)
                .map(|c| {
                    c.and_then(|c| {
                        CertSummary::of(&c.cert).map(|s| (c.path.clone(), s, c.key_matches))
                    })
                })
                .map_err(|e| e.to_string()),
        }
    };
    let kubeconfig = first_existing(&[&k.kubeconfig, Path::new(KUBEADM_KUBECONFIG)]);
    let kubeconfig_credential = kubeconfig.as_ref().map(|node_path| {
        let host_path = src.host.resolve(node_path).map_err(|e| e.to_string())?;
        let bytes = fsutil::read_limited(&host_path, MAX_FILE_BYTES)
            .map_err(|e| crate::errors::error_chain(&e))?;
        kubeconfig::credential_of(&String::from_utf8_lossy(&bytes), node_path)
            .map_err(|e| e.to_string())
    });
    KubeletFacts {
        node_name: src.node_name.clone(),
        bootstrap_kubeconfig: first_existing(&[
            &k.bootstrap_kubeconfig,
            Path::new(KUBEADM_BOOTSTRAP_KUBECONFIG),
        ]),
        kubeconfig,
        kubeconfig_credential,
        kubelet_config: effective
            .config_file
            .clone()
            .unwrap_or_else(|| "(none: kubelet's command line names no --config)".into()),
        tls_cert_file: effective.tls_cert_file.clone(),
        command_line_known: effective.command_line_known,
        rotate_certificates: rotation.client,
        server_tls_bootstrap: rotation.serving,
        agent_job: src.kubelet_job,
        serving_job: src.kubelet_job && src.kubelet.serving.is_some(),
        defer_to_kubelet_rotation: src.kubelet.defer_to_kubelet_rotation,
        client: cert(CertKind::Client),
        serving: cert(CertKind::Serving),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fs;
    use std::path::Path;

    use base64::Engine as _;

    use super::*;
    use crate::node::distro::Family;
    use crate::node::hostroot::HostRoot;
    use crate::status::schema::{CertStatus, RenewedBy};
    use crate::status::{build_report, render_table, EXIT_UNHEALTHY};
    use crate::trust::state::{self, CaState, STATE_FILE};
    use crate::trust::store::TrustStore;
    use crate::x509::cert::CertInfo;
    use crate::x509::testpki;

    fn write(root: &Path, node_path: &str, bytes: &[u8]) {
        let p = root.join(node_path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn gathers_a_node_from_a_tempdir_host_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "/etc/hostname", b"node-7\n");
        // An installed custom CA: anchor, bundle and state.
        let ca = testpki::good_ca("Tempdir Root");
        let info = CertInfo::from_der(&ca.cert.to_der().unwrap()).unwrap();
        let layout = Family::Debian.layout();
        let store = TrustStore::new(HostRoot::new(r).unwrap(), layout.clone());
        store.install(&info).unwrap();
        write(r, "/etc/ssl/certs/ca-certificates.crt", info.pem.as_bytes());
        let mut st = CaState {
            version: 1,
            ..Default::default()
        };
        st.keys.insert(
            "/secret".into(),
            BTreeMap::from([("ca1.crt".to_string(), vec![info.fingerprint.hex()])]),
        );
        fs::create_dir_all(r.join("var/lib/node-cert-agent")).unwrap();
        state::save(&r.join("var/lib/node-cert-agent").join(STATE_FILE), &st).unwrap();
        // kubeadm-style certificates: a CA, an expired leaf, a key, a kubeconfig
        // with an embedded client cert and a reference to a missing one.
        let kube_ca = testpki::good_ca("kubernetes");
        write(
            r,
            "/etc/kubernetes/pki/ca.crt",
            testpki::pem(&kube_ca.cert).as_bytes(),
        );
        write(
            r,
            "/etc/kubernetes/pki/ca.key",
            testpki::private_key_pem().as_bytes(),
        );
        let expired = testpki::ca("etcd-ca", -30, -1);
        write(
            r,
            "/etc/kubernetes/pki/etcd/ca.crt",
            testpki::pem(&expired.cert).as_bytes(),
        );
        let (client, _) = testpki::leaf_with_key(&kube_ca, "kubernetes-admin");
        let b64 = base64::engine::general_purpose::STANDARD.encode(testpki::pem(&client));
        write(
            r,
            "/etc/kubernetes/admin.conf",
            format!(
                "apiVersion: v1\nkind: Config\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {b64}\n- name: other\n  user:\n    client-certificate: pki/missing.crt\n"
            )
            .as_bytes(),
        );
        // kubelet: the current client cert through its link, an old one beside it.
        let (kcert, kkey) = testpki::leaf_with_key(&kube_ca, "system:node:node-7");
        let mut pair = testpki::pem(&kcert).into_bytes();
        pair.extend(kkey.private_key_to_pem_pkcs8().unwrap());
        write(
            r,
            "/var/lib/kubelet/pki/kubelet-client-2026-01-02-03-04-05.pem",
            &pair,
        );
        write(
            r,
            "/var/lib/kubelet/pki/kubelet-client-2025-01-02-03-04-05.pem",
            b"old",
        );
        std::os::unix::fs::symlink(
            "kubelet-client-2026-01-02-03-04-05.pem",
            r.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        write(
            r,
            "/var/lib/kubelet/config.yaml",
            b"rotateCertificates: true\n",
        );

        let settings =
            crate::config::resolve_for_status(Default::default(), Default::default()).unwrap();
        let host = HostRoot::new(r).unwrap();
        let node = NodeIdentity::read(&host, settings.kubelet.node_name.as_deref());
        let job = settings
            .kubelet
            .job_enabled(&crate::kubelet::scope::kubelet_on_node(
                &host,
                &settings.kubelet,
            ));
        let src = StatusSources::from_settings(&settings, host, Ok(layout), &node, job);
        assert_eq!(src.node_name.as_deref(), Some("node-7"));
        let facts = gather(&src, crate::time::now_unix());
        let report = build_report(&facts);

        assert_eq!(report.custom_cas.len(), 1);
        assert!(report.custom_cas[0].installed, "{:?}", report.custom_cas);
        assert_eq!(
            report.custom_cas[0].subject.as_deref(),
            Some(info.subject.as_str())
        );
        let names: Vec<&str> = report
            .node_certificates
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(
            names,
            vec![
                "/etc/kubernetes/pki/ca.crt",
                "/etc/kubernetes/pki/etcd/ca.crt",
                "/etc/kubernetes/pki/missing.crt",
                "/var/lib/kubelet/pki/kubelet-client-current.pem",
                "/etc/kubernetes/admin.conf#user:kubernetes-admin",
            ],
            "keys and superseded kubelet files are not listed"
        );
        let by_name = |n: &str| {
            report
                .node_certificates
                .iter()
                .find(|r| r.name == n)
                .unwrap()
        };
        assert_eq!(
            by_name("/etc/kubernetes/pki/etcd/ca.crt").status,
            CertStatus::Expired
        );
        assert_eq!(
            by_name("/etc/kubernetes/pki/missing.crt").status,
            CertStatus::Missing
        );
        let kubelet_row = by_name("/var/lib/kubelet/pki/kubelet-client-current.pem");
        assert_eq!(kubelet_row.renewed_by, RenewedBy::Kubelet);
        assert_eq!(
            kubelet_row.certificate_authority.as_deref(),
            Some("kubernetes")
        );
        assert!(report.kubelet.client.present);
        assert_eq!(report.kubelet.client.key_matches, Some(true));
        assert!(report.kubelet.rotate_certificates);
        assert!(!report.kubelet.tls_bootstrapping);
        let kinds: BTreeSet<&str> = report.problems.iter().map(|p| p.kind.name()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from(["expired", "missing"]),
            "{:?}",
            report.problems
        );
        assert_eq!(report.exit_code(), EXIT_UNHEALTHY);
        let t = render_table(&report);
        assert!(
            t.contains("!MISSING! /etc/kubernetes/pki/missing.crt"),
            "{t}"
        );
        assert!(t.contains("1 of 1"), "{t}");
    }
}
