//! What the kubelet job covers on this node: whether `mode: auto` turns it
//! on (kubelet bootstraps or holds a client certificate here), and the node
//! name it renews for.
//!
//! The name: the one in kubelet's current client certificate
//! (`CN=system:node:<name>`) wins over one derived the way kubelet derives
//! it (`node::identity`), because that is the Node kubelet is registered
//! as; an explicitly configured name that differs from it is refused. A
//! renewal never changes the name: NodeRestriction (Kubernetes 1.31 and
//! later) refuses a node that renames itself, and on older clusters kubelet
//! would register another Node once the old certificate expired.
//!
//! Boundary: reads kubelet's kubeconfigs and its current client certificate
//! through the [`HostRoot`]; the rules ([`prefer_certificate_name`],
//! [`job_node_name`], [`check_renewal_name`] and `config`'s
//! `KubeletSettings::job_enabled`) are pure.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::config::{KubeletOnNode, KubeletSettings};
use crate::k8s::kubeconfig::{self, Credential, MAX_KUBECONFIG_BYTES};
use crate::kubelet::facts::{facts_of, CertFacts};
use crate::kubelet::store::{CertKind, KubeletStore};
use crate::node::fsutil;
use crate::node::hostroot::HostRoot;
use crate::node::identity::{NameSource, NodeIdentity};

/// The CN prefix of a node's certificates (`system:node:<name>`).
pub const NODE_CN_PREFIX: &str = "system:node:";

#[derive(Debug, thiserror::Error)]
pub enum NodeNameError {
    #[error(
        "no node name: give --node-name, set NODE_NAME (the downward API's spec.nodeName in a pod), or kubelet.node-name in the config"
    )]
    Missing,
    #[error(
        "the current kubelet client certificate {} is for node {certificate:?}, but {said_by} says {name:?}; \
         the agent renews a certificate only into its own node name (NodeRestriction refuses a node that renames itself). \
         Fix: set the node name to {certificate:?} (--node-name, NODE_NAME or kubelet.node-name) or remove the setting; \
         if the node really is {name:?} now, remove {} so that kubelet's bootstrap issues a certificate for that name",
        cert.display(),
        cert.display()
    )]
    ConfiguredOtherName {
        name: String,
        said_by: NameSource,
        certificate: String,
        /// Node path of `kubelet-client-current.pem`.
        cert: PathBuf,
    },
    #[error(
        "the current kubelet client certificate {} is now for node {certificate:?}, not {name:?} as when the agent started; \
         the agent does not renew it into another node's name. Fix: restart the agent, which then renews for {certificate:?}",
        cert.display()
    )]
    CertificateRenamed {
        name: String,
        certificate: String,
        /// Node path of `kubelet-client-current.pem`.
        cert: PathBuf,
    },
}

/// `<name>` of a certificate whose CN is `system:node:<name>`.
pub fn node_name_of(facts: &CertFacts) -> Option<String> {
    facts
        .common_name
        .as_deref()
        .and_then(|cn| cn.strip_prefix(NODE_CN_PREFIX))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// The node name of kubelet's current client certificate, if there is one
/// and it names a node (expired or not: the Node keeps its name).
pub fn certificate_node_name(host: &HostRoot, settings: &KubeletSettings) -> Option<String> {
    let store = KubeletStore::new(host.clone(), settings.pki_dir.clone());
    let current = store.current(CertKind::Client).ok().flatten()?;
    node_name_of(&facts_of(&current))
}

/// `identity` with the certificate's name recorded and, unless the name
/// was configured, taking the place of the derived one. Pure.
pub fn prefer_certificate_name(
    mut identity: NodeIdentity,
    certificate: Option<String>,
) -> NodeIdentity {
    if let Some(c) = &certificate {
        if identity.source != Some(NameSource::Configured) {
            identity.name = Some(c.clone());
            identity.source = Some(NameSource::ClientCertificate);
        }
    }
    identity.certificate_name = certificate;
    identity
}

/// The node's identity: [`NodeIdentity::read`], then the current client
/// certificate's name where it has one ([`prefer_certificate_name`]). A
/// derived name that differs from the certificate's is logged: kubelet
/// would request its next certificate for the derived one.
pub fn node_identity(host: &HostRoot, settings: &KubeletSettings) -> NodeIdentity {
    let derived = NodeIdentity::read(host, settings.node_name.as_deref());
    let certificate = certificate_node_name(host, settings);
    if let (Some(c), Some(name), Some(source)) = (&certificate, &derived.name, derived.source) {
        if c != name && source != NameSource::Configured {
            warn!(
                node = %c,
                derived = %name,
                derived_from = %source,
                "the node name is {c:?}, from the current kubelet client certificate; {source} says {name:?}. The agent renews for {c:?}. If kubelet runs with --hostname-override or a cloud provider's name, nothing is wrong; otherwise kubelet would request its next certificate for {name:?}: check the node's hostname"
            );
        }
    }
    prefer_certificate_name(derived, certificate)
}

/// The name the kubelet job renews for: the identity's, unless it was
/// configured and differs from the current certificate's. Pure.
pub fn job_node_name(
    identity: &NodeIdentity,
    settings: &KubeletSettings,
) -> Result<String, NodeNameError> {
    let name = identity.name.clone().ok_or(NodeNameError::Missing)?;
    match &identity.certificate_name {
        Some(c) if *c != name => Err(NodeNameError::ConfiguredOtherName {
            name,
            said_by: identity.source.unwrap_or(NameSource::Configured),
            certificate: c.clone(),
            cert: client_link(settings),
        }),
        _ => Ok(name),
    }
}

/// Before renewing the client certificate `current` for `node_name`: a
/// certificate for another node (replaced since the agent started) is not
/// renewed into this name. One that names no node is renewed (it is not a
/// node certificate at all). Pure.
pub fn check_renewal_name(
    current: Option<&CertFacts>,
    node_name: &str,
    cert: &Path,
) -> Result<(), NodeNameError> {
    match current.and_then(node_name_of) {
        Some(c) if c != node_name => Err(NodeNameError::CertificateRenamed {
            name: node_name.to_string(),
            certificate: c,
            cert: cert.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// Node path of kubelet's `kubelet-client-current.pem`.
fn client_link(settings: &KubeletSettings) -> PathBuf {
    settings.pki_dir.join(CertKind::Client.current_file_name())
}

/// What kubelet bootstraps or holds on this node, for `mode: auto`: the
/// bootstrap kubeconfig exists, or kubelet's kubeconfig names a client
/// certificate. A kubeconfig that cannot be read holds none (logged).
pub fn kubelet_on_node(host: &HostRoot, settings: &KubeletSettings) -> KubeletOnNode {
    let exists = |p: &Path| host.resolve(p).is_ok_and(|h| h.exists());
    KubeletOnNode {
        bootstrap_kubeconfig: exists(&settings.bootstrap_kubeconfig),
        kubeconfig_client_certificate: exists(&settings.kubeconfig)
            && kubeconfig_names_client_certificate(host, &settings.kubeconfig),
    }
}

/// Whether the kubeconfig at `node_path` names a client certificate.
fn kubeconfig_names_client_certificate(host: &HostRoot, node_path: &Path) -> bool {
    let credential = host
        .resolve(node_path)
        .map_err(|e| e.to_string())
        .and_then(|p| fsutil::read_limited(&p, MAX_KUBECONFIG_BYTES).map_err(|e| e.to_string()))
        .and_then(|bytes| {
            kubeconfig::credential_of(&String::from_utf8_lossy(&bytes), node_path)
                .map_err(|e| e.to_string())
        });
    match credential {
        Ok(Credential::CertificateFile(_) | Credential::EmbeddedCertificate) => true,
        Ok(Credential::Token | Credential::Other) => false,
        Err(e) => {
            warn!(
                kubeconfig = %node_path.display(),
                "kubelet's kubeconfig {} cannot be read ({e}); kubelet.mode auto takes it as holding no client certificate",
                node_path.display()
            );
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::config::{KubeletConfig, KubeletMode};
    use crate::x509::testpki;

    fn settings(mode: KubeletMode, node_name: Option<&str>) -> KubeletSettings {
        KubeletSettings::from_file(KubeletConfig::default(), mode, node_name.map(Into::into))
    }

    fn write(root: &Path, node_path: &str, content: &[u8]) {
        let at = root.join(node_path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, content).unwrap();
    }

    /// A node with `/etc/hostname` and, if `cert_node` is given, a current
    /// kubelet client certificate for that node.
    fn node(hostname: &str, cert_node: Option<&str>) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "/etc/hostname", hostname.as_bytes());
        let host = HostRoot::new(dir.path()).unwrap();
        if let Some(n) = cert_node {
            let ca = testpki::good_ca("kubernetes");
            let (cert, key) = testpki::leaf_with_key(&ca, &format!("{NODE_CN_PREFIX}{n}"));
            let s = settings(KubeletMode::Auto, None);
            KubeletStore::new(host.clone(), s.pki_dir.clone())
                .install(
                    CertKind::Client,
                    &cert.to_pem().unwrap(),
                    &key.private_key_to_pem_pkcs8().unwrap(),
                    1_700_000_000,
                )
                .unwrap();
        }
        (dir, host)
    }

    #[test]
    fn a_hostname_that_differs_only_in_case_renews_for_the_certificates_node() {
        let (_dir, host) = node("Node-1\n", Some("node-1"));
        let s = settings(KubeletMode::Auto, None);
        let id = node_identity(&host, &s);
        assert_eq!(id.name.as_deref(), Some("node-1"));
        assert_eq!(job_node_name(&id, &s).unwrap(), "node-1");
        // Without a certificate, kubelet's own rule: lowercased.
        let (_dir, host) = node("Node-1\n", None);
        let id = node_identity(&host, &s);
        assert_eq!(job_node_name(&id, &s).unwrap(), "node-1");
        assert_eq!(id.source, Some(NameSource::HostnameFile));
    }

    #[test]
    fn the_certificates_name_wins_over_a_derived_one_and_a_configured_other_name_is_refused() {
        let (_dir, host) = node("node-1.example.test\n", Some("node-1"));
        let derived = settings(KubeletMode::Auto, None);
        let id = node_identity(&host, &derived);
        assert_eq!(id.name.as_deref(), Some("node-1"));
        assert_eq!(id.source, Some(NameSource::ClientCertificate));
        assert_eq!(job_node_name(&id, &derived).unwrap(), "node-1");

        let configured = settings(KubeletMode::Auto, Some("node-2"));
        let id = node_identity(&host, &configured);
        // The configured name stays the node's name for everything else ...
        assert_eq!(id.name.as_deref(), Some("node-2"));
        // ... but the kubelet job refuses to rename the certificate.
        let err = job_node_name(&id, &configured).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, NodeNameError::ConfiguredOtherName { .. }),
            "{text}"
        );
        for needle in [
            "\"node-1\"",
            "\"node-2\"",
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            "--node-name",
        ] {
            assert!(text.contains(needle), "{needle} missing in: {text}");
        }
        let same = settings(KubeletMode::Auto, Some("node-1"));
        assert_eq!(
            job_node_name(&node_identity(&host, &same), &same).unwrap(),
            "node-1"
        );
    }

    #[test]
    fn no_name_at_all_says_how_to_give_one() {
        let host = HostRoot::new(tempfile::tempdir().unwrap().path()).unwrap();
        let s = settings(KubeletMode::Auto, None);
        let err = job_node_name(&node_identity(&host, &s), &s).unwrap_err();
        assert!(err.to_string().contains("NODE_NAME"), "{err}");
    }

    #[test]
    fn a_certificate_replaced_by_another_nodes_is_not_renewed_into_this_name() {
        let cert = Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem");
        let facts = |cn: &str| CertFacts {
            common_name: Some(cn.into()),
            ..CertFacts::default()
        };
        assert!(check_renewal_name(Some(&facts("system:node:n1")), "n1", cert).is_ok());
        assert!(check_renewal_name(None, "n1", cert).is_ok());
        // Not a node certificate: renewing it gives the node its own.
        assert!(check_renewal_name(Some(&facts("someone")), "n1", cert).is_ok());
        let err = check_renewal_name(Some(&facts("system:node:n2")), "n1", cert).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"n2\"") && text.contains("\"n1\"") && text.contains("restart"),
            "{text}"
        );
    }

    const CLUSTER: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n";

    fn on_node(kubeconfig: Option<&str>, bootstrap: bool) -> KubeletOnNode {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(KubeletMode::Auto, None);
        if let Some(user) = kubeconfig {
            let text = format!("{CLUSTER}users:\n- name: u\n  user:\n{user}");
            write(dir.path(), "/var/lib/kubelet/kubeconfig", text.as_bytes());
        }
        if bootstrap {
            write(dir.path(), "/var/lib/kubelet/bootstrap-kubeconfig", b"x");
        }
        kubelet_on_node(&HostRoot::new(dir.path()).unwrap(), &s)
    }

    #[test]
    fn auto_turns_the_job_on_only_where_kubelet_bootstraps_or_holds_a_client_certificate() {
        let auto = settings(KubeletMode::Auto, None);
        let on = |k: Option<&str>, b: bool| auto.job_enabled(&on_node(k, b));
        // EKS: an exec plugin; elsewhere a token. Nothing to renew.
        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [eks, get-token]\n";
        assert!(!on(Some(exec), false));
        assert!(!on(Some("    token: abc\n"), false));
        assert!(!on(Some("    tokenFile: /var/run/token\n"), false));
        assert!(!on(None, false));
        assert!(!on(Some(": not yaml ["), false));
        // kubelet holds a client certificate, by file or embedded.
        assert!(on(
            Some("    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n"),
            false
        ));
        assert!(on(Some("    client-certificate-data: Zm9v\n"), false));
        // A bootstrap kubeconfig: kubelet bootstraps one.
        assert!(on(Some(exec), true));
        assert!(on(None, true));
    }
}
