//! The kubelet certificate pass (`KubeletManager::pass`), in process and in
//! seconds: the agent's own pass against the Kubernetes API test server
//! (`nca_test_apiserver`: real authentication, `Node,RBAC` authorization
//! from upstream's default policy and the RBAC `manifests/base` ships, CSR
//! admission, auto-approval and signing), on a node root in a tempdir
//! (`HostRoot`), with the recording fake of systemd in place of the node's.
//!
//! It proves, for the client certificate:
//! - TLS bootstrap: with only a bootstrap kubeconfig, one pass files a
//!   `kubernetes.io/kube-apiserver-client-kubelet` CSR as the bootstrap
//!   token, which the controllers approve and sign; the certificate lands in
//!   kubelet's layout (a timestamped 0600 file, `kubelet-client-current.pem`
//!   linking to it), kubelet's kubeconfig is written, and kubelet is
//!   restarted exactly once;
//! - a pass with nothing due makes no CSR, restarts nothing and writes no
//!   file;
//! - a certificate past its renewal deadline (80 % of its life at the
//!   latest) is renewed with the node's own identity (`system:node:<name>`),
//!   kubelet restarted only when it cannot re-read the file in time;
//! - with the API server down, the pass reports a failure naming the
//!   server and leaves the installed files as they were; the next pass
//!   after the server is back renews.
//!
//! It needs no root, no systemd-nspawn and no systemd: an ordinary user runs
//! it with `cargo test -p integration-tests --test kubelet_pass` (only
//! `kubectl`, for `kubectl kustomize manifests/base`). The end-to-end
//! counterparts on a booted node are `kubelet.rs` and `kubelet_cluster.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use integration_tests::kubelet_node::{
    chains_to, csr_requesters, serial, subject, BOOTSTRAP_KUBECONFIG, CLIENT_LINK, KUBELET_UNIT,
    PKI, TOKEN_ID, TOKEN_SECRET,
};
use integration_tests::rbac::shipped_rbac;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use nca_test_apiserver::{ApiServer, Profile};
use node_cert_agent::config::{KubeletConfig, KubeletMode, KubeletSettings};
use node_cert_agent::k8s::failure::FailureKind;
use node_cert_agent::kubelet::manager::{
    lock_path, KubeletError, KubeletJob, KubeletManager, PassOutcome,
};
use node_cert_agent::kubelet::renewal::{self, RenewReason};
use node_cert_agent::kubelet::revocation::SourceState;
use node_cert_agent::kubelet::state::{self as kubelet_state, KUBELET_STATE_FILE};
use node_cert_agent::kubelet::store::CertKind;
use node_cert_agent::node::hostroot::HostRoot;
use node_cert_agent::node::systemd::fake::RecordingSystemd;
use node_cert_agent::time::now_unix;
use node_cert_agent::x509::cert::CertInfo;
use openssl::pkey::PKey;
use openssl::x509::X509;

/// The node the pass keeps certificates for (the test server knows it).
const NODE: &str = "pass-n1";
/// kubelet's kubeconfig (the agent's default, kubelet's layout on AKS).
const KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
/// The agent's state directory on the node (lock and kubelet state file).
const STATE_DIR: &str = "/var/lib/node-cert-agent";
/// The signer of kubelet client certificates.
const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The agent's pending key while a CSR is in flight (`store.rs`).
const PENDING_KEY: &str = "/var/lib/kubelet/pki/node-cert-agent-client.pending.key";

/// A node root in a tempdir, the test API server (a kubeadm cluster with
/// the shipped RBAC, a bootstrap token, and the Node), and the recording
/// systemd, whose `kubelet.service` runs.
struct PassNode {
    root: tempfile::TempDir,
    server: ApiServer,
    systemd: Arc<RecordingSystemd>,
}

impl PassNode {
    fn new() -> Self {
        let server = ApiServer::start_with(Profile::Kubeadm, &shipped_rbac());
        server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
        server.add_node(NODE);
        let node = Self {
            root: tempfile::tempdir().unwrap(),
            server,
            systemd: Arc::new(RecordingSystemd::default()),
        };
        node.write(
            BOOTSTRAP_KUBECONFIG,
            node.server
                .bootstrap_kubeconfig(TOKEN_ID, TOKEN_SECRET)
                .as_bytes(),
            0o600,
        );
        node
    }

    /// Where the node path `p` lies in the tempdir.
    fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p.trim_start_matches('/'))
    }

    fn write(&self, p: &str, bytes: &[u8], mode: u32) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn settings() -> KubeletSettings {
        let file = KubeletConfig {
            csr_timeout_seconds: Some(30),
            api_timeout_seconds: Some(10),
            ..KubeletConfig::default()
        };
        KubeletSettings::from_file(file, KubeletMode::On, Some(NODE.into()))
    }

    /// The pass as host mode runs it (it writes kubelet's kubeconfig after a
    /// bootstrap); a new manager is also a restarted agent.
    fn manager(&self) -> KubeletManager<Arc<RecordingSystemd>> {
        KubeletManager::new(
            HostRoot::new(self.root.path()).unwrap(),
            self.systemd.clone(),
            KubeletJob {
                settings: Self::settings(),
                node_name: NODE.into(),
                serving: None,
                lock_path: lock_path(&self.path(STATE_DIR)),
                write_kubeconfig: true,
            },
        )
    }

    /// A client certificate for the node from the cluster CA, valid from
    /// `not_before` to `not_after` (seconds from now), installed as kubelet
    /// keeps it, with kubelet's kubeconfig naming the link. Returns the
    /// certificate.
    fn install_client(&self, not_before: i64, not_after: i64) -> X509 {
        let now = SystemTime::now();
        let at = |offset: i64| {
            if offset < 0 {
                now - Duration::from_secs(offset.unsigned_abs())
            } else {
                now + Duration::from_secs(offset.unsigned_abs())
            }
        };
        let (cert, key) = self.server.issue_client_cert(
            &format!("system:node:{NODE}"),
            &["system:nodes"],
            at(not_before),
            at(not_after),
        );
        let file = "kubelet-client-2020-01-01-00-00-00.pem";
        self.write(
            &format!("{PKI}/{file}"),
            format!("{cert}{key}").as_bytes(),
            0o600,
        );
        std::os::unix::fs::symlink(file, self.path(CLIENT_LINK)).unwrap();
        let link = Path::new(CLIENT_LINK);
        self.write(
            KUBECONFIG,
            self.server.client_kubeconfig(link, link).as_bytes(),
            0o600,
        );
        X509::from_pem(cert.as_bytes()).unwrap()
    }

    /// The target of `kubelet-client-current.pem`.
    fn link_target(&self) -> String {
        std::fs::read_link(self.path(CLIENT_LINK))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The certificate `kubelet-client-current.pem` resolves to; panics
    /// unless the file also holds the private key that matches it.
    fn client_cert(&self) -> X509 {
        let pem = std::fs::read(self.path(CLIENT_LINK)).unwrap();
        let cert = X509::stack_from_pem(&pem).unwrap().remove(0);
        let key = PKey::private_key_from_pem(&pem).unwrap();
        assert!(
            cert.public_key().unwrap().public_eq(&key),
            "kubelet-client-current.pem holds a key that is not its certificate's"
        );
        cert
    }

    /// Every CSR, oldest first.
    fn csrs(&self) -> Vec<CertificateSigningRequest> {
        let mut csrs = self.server.csrs();
        csrs.sort_by_key(|c| {
            c.metadata
                .resource_version
                .as_deref()
                .and_then(|rv| rv.parse::<u64>().ok())
                .unwrap_or(0)
        });
        csrs
    }

    /// Every file, directory and link under the node path `dir`, by node
    /// path: its type, mode and modification time, and a file's SHA-256
    /// (a link's target).
    fn snapshot(&self, dir: &str) -> BTreeMap<String, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let what = if meta.file_type().is_symlink() {
                    format!("link -> {}", std::fs::read_link(&path).unwrap().display())
                } else if meta.is_dir() {
                    walk(root, &path, out);
                    "dir".to_string()
                } else {
                    let sha = openssl::sha::sha256(&std::fs::read(&path).unwrap());
                    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
                    format!("file sha256 {hex}")
                };
                out.insert(
                    format!("/{}", path.strip_prefix(root).unwrap().display()),
                    format!(
                        "{what}, mode {:o}, mtime {}.{:09}",
                        meta.mode() & 0o7777,
                        meta.mtime(),
                        meta.mtime_nsec()
                    ),
                );
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root.path(), &self.path(dir), &mut out);
        out
    }
}

/// notBefore and notAfter of `c`, Unix seconds.
fn validity(c: &X509) -> (i64, i64) {
    let info = CertInfo::from_der(&c.to_der().unwrap()).unwrap();
    (info.not_before, info.not_after)
}

/// The renewal deadline the node's fraction gives `c`.
fn deadline_of(c: &X509) -> i64 {
    let (nb, na) = validity(c);
    renewal::deadline(nb, na, renewal::renewal_fraction(NODE))
}

/// The CSR is approved, signed by `CLIENT_SIGNER`, and its certificate is
/// `installed`.
fn assert_signed_for(csr: &CertificateSigningRequest, installed: &X509) {
    assert_eq!(csr.spec.signer_name, CLIENT_SIGNER);
    let status = csr.status.as_ref().expect("a signed CSR has a status");
    let conditions = status.conditions.as_deref().unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Approved" && c.status == "True"),
        "{conditions:?}"
    );
    let issued = status.certificate.as_ref().expect("a signed CSR").0.clone();
    let issued = X509::stack_from_pem(&issued).unwrap().remove(0);
    assert_eq!(
        serial(&issued),
        serial(installed),
        "the installed certificate is the CSR's"
    );
}

/// A pass without failures.
async fn clean_pass(manager: &KubeletManager<Arc<RecordingSystemd>>) -> PassOutcome {
    let outcome = manager.pass(false).await.unwrap();
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    outcome
}

#[tokio::test]
async fn a_bootstrap_token_bootstraps_the_client_certificate_in_kubelets_layout_and_restarts_kubelet_once(
) {
    let node = PassNode::new();
    assert!(!node.path(KUBECONFIG).exists());
    assert!(!node.path(CLIENT_LINK).exists());

    let outcome = clean_pass(&node.manager()).await;

    assert_eq!(outcome.renewed, [CertKind::Client]);
    assert_eq!(outcome.reasons, [(CertKind::Client, RenewReason::Missing)]);
    // The revocations are read before the renewal, with the node's own
    // identity, which it did not have yet.
    assert_eq!(outcome.revocations, SourceState::NoIdentity);
    assert!(!outcome.monitoring_only);
    assert!(outcome.unfixable_revocations.is_empty() && outcome.unfixable_found.is_empty());
    assert_eq!(outcome.kubeconfig_mismatch, None);
    assert_eq!(outcome.serving_unused, None);

    // One CSR, filed as the bootstrap token, approved and signed.
    let cert = node.client_cert();
    let csrs = node.csrs();
    assert_eq!(csrs.len(), 1, "{csrs:?}");
    assert_eq!(
        csr_requesters(&node.server),
        [format!("system:bootstrap:{TOKEN_ID}")]
    );
    assert!(csrs[0]
        .spec
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|g| g == "system:bootstrappers")));
    assert_signed_for(&csrs[0], &cert);
    assert_eq!(
        subject(&cert),
        format!("O=system:nodes, CN=system:node:{NODE}")
    );
    assert!(chains_to(&cert, &node.server.cluster_ca_pem()));

    // kubelet's layout: a relative link to a timestamped 0600 file.
    let target = node.link_target();
    assert!(
        target.starts_with("kubelet-client-20")
            && target.ends_with(".pem")
            && !target.contains('/'),
        "{target}"
    );
    let mode = std::fs::metadata(node.path(&format!("{PKI}/{target}")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{target}");
    assert!(!node.path(PENDING_KEY).exists(), "the CSR is finished");

    // The outcome describes that certificate.
    let (nb, na) = validity(&cert);
    let client = outcome.client.expect("a client certificate after the pass");
    assert_eq!((client.not_before, client.not_after), (nb, na));
    assert_eq!(client.deadline, deadline_of(&cert));
    assert!(!client.kubelet_rotates);
    assert_eq!(outcome.next_deadline, Some(client.deadline));
    assert!(client.deadline > now_unix());

    // kubelet's kubeconfig, written as kubelet writes it: the bootstrap's
    // server and CA, the link as client certificate and key, mode 0600.
    let kubeconfig = node.path(KUBECONFIG);
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    assert_eq!(
        yaml["clusters"][0]["cluster"]["server"].as_str(),
        Some(node.server.url().as_str()),
        "{yaml:?}"
    );
    let user = &yaml["users"][0]["user"];
    assert_eq!(user["client-certificate"].as_str(), Some(CLIENT_LINK));
    assert_eq!(user["client-key"].as_str(), Some(CLIENT_LINK));
    assert!(user.get("token").is_none(), "{user:?}");

    // A bootstrap always restarts kubelet (restart_rule.rs), exactly once,
    // and nothing else; no restart is owed afterwards.
    assert_eq!(outcome.restarted, [KUBELET_UNIT]);
    assert_eq!(node.systemd.restarts(), [KUBELET_UNIT]);
    assert!(node.systemd.starts().is_empty() && node.systemd.commands().is_empty());
    let state = kubelet_state::load(&node.path(STATE_DIR).join(KUBELET_STATE_FILE)).unwrap();
    assert!(state.restart_pending.is_empty(), "{state:?}");
}

#[tokio::test]
async fn a_pass_with_nothing_due_files_no_csr_restarts_nothing_and_writes_no_file() {
    let node = PassNode::new();
    let manager = node.manager();
    let first = clean_pass(&manager).await;
    assert_eq!(first.renewed, [CertKind::Client]);
    assert_eq!(node.systemd.restarts(), [KUBELET_UNIT]);
    let before = node.snapshot("/");
    let cert = node.client_cert();
    node.server.clear_requests();

    // The same agent, and one restarted (a new manager).
    for (which, manager) in [("same agent", manager), ("restarted agent", node.manager())] {
        let outcome = clean_pass(&manager).await;
        assert!(outcome.renewed.is_empty(), "{which}: {:?}", outcome.reasons);
        assert!(outcome.restarted.is_empty(), "{which}");
        assert_eq!(outcome.revocations, SourceState::Synced, "{which}");
        assert_eq!(outcome.next_deadline, Some(deadline_of(&cert)), "{which}");
        assert_eq!(
            outcome.client.map(|c| c.deadline),
            Some(deadline_of(&cert)),
            "{which}"
        );
    }

    assert_eq!(node.csrs().len(), 1, "no CSR but the bootstrap's");
    let requests = node.server.requests();
    assert!(!requests.is_empty(), "the passes list RenewRevocations");
    for r in &requests {
        assert_ne!(r.resource, "certificatesigningrequests", "{r:?}");
        assert!(
            matches!(r.verb.as_str(), "get" | "list" | "watch"),
            "an idle pass writes nothing to the API: {r:?}"
        );
        assert_eq!(r.user, format!("system:node:{NODE}"), "{r:?}");
        assert_eq!(r.code, 200, "{r:?}");
    }
    assert_eq!(node.systemd.restarts(), [KUBELET_UNIT], "no second restart");
    assert_eq!(node.snapshot("/"), before, "a file changed");
}

/// A client certificate 90 % through its life: `lifetime` seconds long,
/// `left` of them still to go.
async fn renew_past_the_deadline(lifetime: i64, left: i64) -> (PassNode, X509, PassOutcome) {
    let node = PassNode::new();
    let old = node.install_client(left - lifetime, left);
    let old_target = node.link_target();
    let kubeconfig = std::fs::read(node.path(KUBECONFIG)).unwrap();
    let deadline = deadline_of(&old);
    assert!(deadline < now_unix(), "the old certificate is due");

    let outcome = clean_pass(&node.manager()).await;

    assert_eq!(outcome.renewed, [CertKind::Client]);
    assert_eq!(
        outcome.reasons,
        [(CertKind::Client, RenewReason::Due { deadline })]
    );
    // Read with the old certificate, still valid.
    assert_eq!(outcome.revocations, SourceState::Synced);
    // With the node's own identity, though the bootstrap token still works.
    assert_eq!(
        csr_requesters(&node.server),
        [format!("system:node:{NODE}")]
    );
    let csrs = node.csrs();
    assert!(csrs[0]
        .spec
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|g| g == "system:nodes")));
    let new = node.client_cert();
    assert_signed_for(&csrs[0], &new);
    assert_ne!(serial(&new), serial(&old));
    assert_eq!(
        subject(&new),
        format!("O=system:nodes, CN=system:node:{NODE}")
    );
    assert!(chains_to(&new, &node.server.cluster_ca_pem()));
    let target = node.link_target();
    assert_ne!(target, old_target);
    assert!(target.starts_with("kubelet-client-20"), "{target}");
    // The old file stays as the rollback target; kubelet's kubeconfig is
    // kubelet's, and untouched.
    assert!(node.path(&format!("{PKI}/{old_target}")).exists());
    assert_eq!(std::fs::read(node.path(KUBECONFIG)).unwrap(), kubeconfig);
    let client = outcome.client.unwrap();
    assert_eq!(client.not_after, validity(&new).1);
    assert_eq!(outcome.next_deadline, Some(deadline_of(&new)));
    assert!(client.deadline > now_unix());
    (node, old, outcome)
}

#[tokio::test]
async fn a_certificate_past_its_deadline_is_renewed_with_the_nodes_own_identity_and_kubelet_rereads_it(
) {
    // 1000 s left: client-go re-reads the file well before the old one ends.
    let (node, _, outcome) = renew_past_the_deadline(10_000, 1_000).await;
    assert!(outcome.restarted.is_empty(), "{:?}", outcome.restarted);
    assert!(node.systemd.restarts().is_empty());
}

#[tokio::test]
async fn a_certificate_renewed_just_before_it_ends_restarts_kubelet_once() {
    // 120 s left: the old certificate ends before client-go's next re-read.
    let (node, _, outcome) = renew_past_the_deadline(1_200, 120).await;
    assert_eq!(outcome.restarted, [KUBELET_UNIT]);
    assert_eq!(node.systemd.restarts(), [KUBELET_UNIT]);
}

#[tokio::test]
async fn with_the_api_server_down_the_pass_names_it_and_changes_no_installed_file() {
    let node = PassNode::new();
    let old = node.install_client(-9_000, 1_000);
    let manager = node.manager();
    let url = node.server.url();
    let kubelet_dir = "/var/lib/kubelet";
    let mut before = node.snapshot(kubelet_dir);
    node.server.down();

    let outcome = manager.pass(false).await.unwrap();

    let [KubeletError::Api { server, source }] = &outcome.failures[..] else {
        panic!("one API failure expected: {:?}", outcome.failures);
    };
    assert_eq!(server, &url);
    let message = outcome.failures[0].to_string();
    assert!(message.contains(&url), "{message}");
    // Classified as no answer at all (retry soon), not as a refusal.
    let failure = source.api_failure().expect("an API call failed");
    assert_eq!(failure.kind, FailureKind::Unreachable, "{failure:?}");
    assert_eq!(failure.code, None, "{failure:?}");
    assert!(!outcome.failures[0].is_auth());
    match &outcome.revocations {
        SourceState::Failing { message, forbidden } => {
            assert!(message.contains(&url), "{message}");
            assert!(!forbidden);
        }
        other => panic!("the revocations cannot be read: {other:?}"),
    }
    assert!(outcome.renewed.is_empty() && outcome.restarted.is_empty());
    assert!(node.systemd.restarts().is_empty());
    assert_eq!(outcome.client.map(|c| c.not_after), Some(validity(&old).1));
    assert!(node.server.csrs().is_empty());
    // The installed files are as they were; only the key of the request
    // to come is kept (0600), so the retry files the same CSR.
    // (The pki directory's mtime changes with it.)
    let mut after = node.snapshot(kubelet_dir);
    let pending = after
        .remove(PENDING_KEY)
        .expect("the pending key is kept for the retry");
    assert!(pending.contains("mode 600"), "{pending}");
    for snapshot in [&mut before, &mut after] {
        snapshot.remove(PKI).expect("the pki directory");
    }
    assert_eq!(after, before, "an installed file changed");
    assert_eq!(serial(&node.client_cert()), serial(&old));
    let pending_key = std::fs::read(node.path(PENDING_KEY)).unwrap();
    let pending_key = PKey::private_key_from_pem(&pending_key).unwrap();

    // Back up: the next pass renews.
    node.server.up();
    let outcome = clean_pass(&manager).await;
    assert_eq!(outcome.renewed, [CertKind::Client]);
    assert_eq!(
        csr_requesters(&node.server),
        [format!("system:node:{NODE}")]
    );
    let new = node.client_cert();
    assert_ne!(serial(&new), serial(&old));
    assert!(
        new.public_key().unwrap().public_eq(&pending_key),
        "the retry's CSR is made from the key kept during the outage"
    );
    assert!(!node.path(PENDING_KEY).exists());
}
