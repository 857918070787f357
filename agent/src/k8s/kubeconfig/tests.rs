//! The tests of `kubeconfig`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::fs;

use base64::Engine as _;

use super::*;
use crate::node::hostroot::HostRoot;
use crate::x509::testpki;

const TOKEN: &str = "abcdef.0123456789abcdef";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/kubeconfig/",
            $name
        ))
    };
}

/// A node in a tempdir, with a cluster CA and a kubelet client pair.
struct Node {
    dir: tempfile::TempDir,
    host: HostRoot,
    ca_pem: Vec<u8>,
    client_cert_pem: Vec<u8>,
    client_key_pem: Vec<u8>,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let ca = testpki::good_ca("kubernetes");
        let (cert, key) = testpki::leaf_with_key(&ca, "system:node:node-1");
        Self {
            dir,
            host,
            ca_pem: ca.cert.to_pem().unwrap(),
            client_cert_pem: cert.to_pem().unwrap(),
            client_key_pem: key.private_key_to_pem_pkcs8().unwrap(),
        }
    }

    fn write(&self, node_path: &str, contents: &[u8]) {
        let p = self.dir.path().join(node_path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    /// Fills the fixture's placeholders with this node's PKI, base64'd.
    fn render(&self, fixture: &str) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        fixture
            .replace("@CA_DATA@", &b64(&self.ca_pem))
            .replace("@CLIENT_CERT_DATA@", &b64(&self.client_cert_pem))
            .replace("@CLIENT_KEY_DATA@", &b64(&self.client_key_pem))
    }

    fn install_kubeconfig(&self, node_path: &str, fixture: &str) {
        self.write(node_path, self.render(fixture).as_bytes());
    }

    fn write_ca(&self, node_path: &str) {
        self.write(node_path, &self.ca_pem);
    }

    fn write_client_pair(&self, node_path: &str) {
        let mut pem = self.client_cert_pem.clone();
        pem.extend_from_slice(&self.client_key_pem);
        self.write(node_path, &pem);
    }

    fn load(&self, node_path: &str) -> Result<ResolvedKubeconfig, KubeconfigError> {
        load(&self.host, Path::new(node_path))
    }
}

#[test]
fn aks_bootstrap_kubeconfig_gives_token_and_ca_file() {
    let node = Node::new();
    node.install_kubeconfig(
        "/var/lib/kubelet/bootstrap-kubeconfig",
        fixture!("aks-bootstrap-kubeconfig"),
    );
    node.write_ca("/etc/kubernetes/certs/ca.crt");
    let kc = node.load("/var/lib/kubelet/bootstrap-kubeconfig").unwrap();
    assert_eq!(kc.path, Path::new("/var/lib/kubelet/bootstrap-kubeconfig"));
    assert_eq!(
        kc.server,
        "https://mycluster-dns-1a2b3c4d.hcp.eastus.azmk8s.io:443"
    );
    assert_eq!(kc.ca_pem.as_deref(), Some(node.ca_pem.as_slice()));
    assert!(!kc.insecure_skip_tls_verify);
    assert!(matches!(&kc.auth, Auth::Token(t) if t == TOKEN), "{kc:?}");
}

#[test]
fn kubeadm_bootstrap_kubelet_conf_gives_token_and_ca_data() {
    let node = Node::new();
    node.install_kubeconfig(
        "/etc/kubernetes/bootstrap-kubelet.conf",
        fixture!("kubeadm-bootstrap-kubelet.conf"),
    );
    let kc = node.load("/etc/kubernetes/bootstrap-kubelet.conf").unwrap();
    assert_eq!(kc.server, "https://10.0.0.10:6443");
    assert_eq!(kc.ca_pem.as_deref(), Some(node.ca_pem.as_slice()));
    assert!(matches!(&kc.auth, Auth::Token(t) if t == TOKEN), "{kc:?}");
}

#[test]
fn kubelet_kubeconfig_reads_client_pair_from_current_pem() {
    let node = Node::new();
    node.install_kubeconfig(
        "/etc/kubernetes/kubelet.conf",
        fixture!("kubeadm-kubelet.conf"),
    );
    node.write_client_pair("/var/lib/kubelet/pki/kubelet-client-current.pem");
    let kc = node.load("/etc/kubernetes/kubelet.conf").unwrap();
    assert_eq!(kc.ca_pem.as_deref(), Some(node.ca_pem.as_slice()));
    match &kc.auth {
        Auth::ClientCert {
            cert_pem,
            key_pem,
            cert_path,
        } => {
            // Both fields name the same combined file.
            let pair = [node.client_cert_pem.clone(), node.client_key_pem.clone()].concat();
            assert_eq!(cert_pem, &pair);
            assert_eq!(key_pem, &pair);
            assert_eq!(
                cert_path.as_deref(),
                Some(Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem"))
            );
        }
        other => panic!("expected a client certificate, got {other:?}"),
    }
}

#[test]
fn kubelet_kubeconfig_follows_current_symlink_through_host_root() {
    let node = Node::new();
    node.install_kubeconfig("/var/lib/kubelet/kubeconfig", fixture!("aks-kubeconfig"));
    node.write_ca("/etc/kubernetes/certs/ca.crt");
    node.write_client_pair("/var/lib/kubelet/pki/kubelet-client-2024-05-01-10-00-00.pem");
    std::os::unix::fs::symlink(
        "kubelet-client-2024-05-01-10-00-00.pem",
        node.dir
            .path()
            .join("var/lib/kubelet/pki/kubelet-client-current.pem"),
    )
    .unwrap();
    let kc = node.load("/var/lib/kubelet/kubeconfig").unwrap();
    assert!(
        matches!(&kc.auth, Auth::ClientCert { cert_path: Some(p), .. }
            if p == Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem")),
        "{kc:?}"
    );
}

#[test]
fn inline_data_kubeconfig_decodes_every_data_field() {
    let node = Node::new();
    node.install_kubeconfig("/etc/kubernetes/admin.conf", fixture!("data-fields.conf"));
    let kc = node.load("/etc/kubernetes/admin.conf").unwrap();
    assert_eq!(kc.ca_pem.as_deref(), Some(node.ca_pem.as_slice()));
    match &kc.auth {
        Auth::ClientCert {
            cert_pem,
            key_pem,
            cert_path,
        } => {
            assert_eq!(cert_pem, &node.client_cert_pem);
            assert_eq!(key_pem, &node.client_key_pem);
            assert_eq!(cert_path, &None);
        }
        other => panic!("expected a client certificate, got {other:?}"),
    }
}

#[test]
fn kubeconfig_without_contexts_uses_first_cluster_and_user() {
    let node = Node::new();
    node.install_kubeconfig("/var/lib/kubelet/kubeconfig", fixture!("no-contexts.conf"));
    let kc = node.load("/var/lib/kubelet/kubeconfig").unwrap();
    assert_eq!(kc.server, "https://first.example:6443");
    assert!(matches!(&kc.auth, Auth::Token(t) if t == "first.token0123456"));
}

#[test]
fn relative_references_are_relative_to_the_kubeconfig_directory() {
    let node = Node::new();
    node.install_kubeconfig(
        "/etc/kubernetes/bootstrap-kubelet.conf",
        fixture!("relative-refs.conf"),
    );
    node.write_ca("/etc/kubernetes/pki/ca.crt");
    node.write(
        "/etc/kubernetes/bootstrap-token",
        format!("  {TOKEN}\n").as_bytes(),
    );
    let kc = node.load("/etc/kubernetes/bootstrap-kubelet.conf").unwrap();
    assert_eq!(kc.ca_pem.as_deref(), Some(node.ca_pem.as_slice()));
    assert!(kc.insecure_skip_tls_verify);
    assert!(
        matches!(&kc.auth, Auth::Token(t) if t == TOKEN),
        "token is trimmed"
    );
}

#[test]
fn parse_keeps_relative_references_as_written() {
    let config = parse(
        fixture!("relative-refs.conf"),
        Path::new("/etc/kubernetes/x.conf"),
    )
    .unwrap();
    assert_eq!(
        config.clusters()[0]
            .cluster
            .as_ref()
            .unwrap()
            .certificate_authority
            .as_deref(),
        Some("pki/ca.crt")
    );
    assert_eq!(
        config.users()[0]
            .auth_info
            .as_ref()
            .unwrap()
            .token_file
            .as_deref(),
        Some("bootstrap-token")
    );
}

#[test]
fn missing_kubeconfig_is_not_found() {
    let node = Node::new();
    let err = node
        .load("/var/lib/kubelet/bootstrap-kubeconfig")
        .unwrap_err();
    assert!(
        matches!(&err, KubeconfigError::NotFound { path }
        if path == Path::new("/var/lib/kubelet/bootstrap-kubeconfig")),
        "{err:?}"
    );
}

#[test]
fn missing_server_names_the_field() {
    let node = Node::new();
    node.install_kubeconfig(
        "/var/lib/kubelet/kubeconfig",
        fixture!("broken-missing-server.conf"),
    );
    let err = node.load("/var/lib/kubelet/kubeconfig").unwrap_err();
    assert!(
        matches!(err, KubeconfigError::ServerMissing { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "kubeconfig /var/lib/kubelet/kubeconfig: clusters[0].cluster.server is missing; set it to the API server's https URL"
    );
}

#[test]
fn bad_base64_key_names_field_and_hides_key() {
    let node = Node::new();
    node.install_kubeconfig(
        "/var/lib/kubelet/bootstrap-kubeconfig",
        fixture!("broken-bad-base64.conf"),
    );
    let err = node
        .load("/var/lib/kubelet/bootstrap-kubeconfig")
        .unwrap_err();
    assert!(
        matches!(err, KubeconfigError::DecodeBase64 { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "kubeconfig /var/lib/kubelet/bootstrap-kubeconfig: users[0].user.client-key-data: not valid base64 ("
        ),
        "{msg}"
    );
    assert!(
        msg.ends_with("; re-encode the key with base64 -w0"),
        "{msg}"
    );
    assert!(!msg.contains("SECRET"), "key text leaked: {msg}");
}

#[test]
fn context_naming_missing_user_lists_known_users() {
    let node = Node::new();
    node.install_kubeconfig(
        "/var/lib/kubelet/kubeconfig",
        fixture!("broken-missing-user.conf"),
    );
    let err = node.load("/var/lib/kubelet/kubeconfig").unwrap_err();
    assert!(
        matches!(err, KubeconfigError::SelectReference { kind: "user", .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "kubeconfig /var/lib/kubelet/kubeconfig: contexts[0].context.user \"kubelet\" names no user; set it to one of: \"default-auth\""
    );
}

#[test]
fn garbage_yaml_reports_line_and_column() {
    let node = Node::new();
    node.install_kubeconfig(
        "/var/lib/kubelet/kubeconfig",
        fixture!("broken-garbage.conf"),
    );
    let err = node.load("/var/lib/kubelet/kubeconfig").unwrap_err();
    assert!(matches!(err, KubeconfigError::Parse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("kubeconfig /var/lib/kubelet/kubeconfig: not a valid kubeconfig: "),
        "{msg}"
    );
    assert!(
        msg.contains("did not find expected key at line 7 column 4"),
        "{msg}"
    );
}

#[test]
fn wrong_type_is_an_error_with_field_and_line() {
    let text = "clusters:\n- name: c\n  cluster:\n    server: https://x\n    insecure-skip-tls-verify: \"yes\"\n";
    let err = parse(text, Path::new("/k")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("clusters[0].cluster.insecure-skip-tls-verify"),
        "{msg}"
    );
    assert!(msg.contains("line 5 column"), "{msg}");
}

#[test]
fn unknown_fields_and_null_lists_are_accepted() {
    let text = "apiVersion: v1\nkind: Config\npreferences: {}\nextensions: [{name: x, extension: {}}]\nclusters: null\nusers: null\ncontexts: null\n";
    let config = parse(text, Path::new("/k")).unwrap();
    assert!(
        config.clusters().is_empty() && config.users().is_empty() && config.contexts().is_empty()
    );
}

#[test]
fn entries_without_names_are_read_as_unnamed() {
    let text = "clusters:\n- cluster: {server: 'https://x'}\nusers:\n- user: {token: t.t}\n";
    let config = parse(text, Path::new("/k")).unwrap();
    assert_eq!(config.clusters()[0].name, "");
    let kc = config
        .resolve(Path::new("/k"), &mut |_, _| unreachable!())
        .unwrap();
    assert_eq!(kc.server, "https://x");
    let text = "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {token: t.t}}]\ncontexts: [{name: a, context: {user: u}}]\n";
    let err = parse(text, Path::new("/k"))
        .unwrap()
        .select(Path::new("/k"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, KubeconfigError::SelectReference { kind: "cluster", name, .. } if name.is_empty()),
        "{err:?}"
    );
    // A wrong type in an unnamed entry is still reported where it is.
    let text =
        "clusters:\n- cluster:\n    server: https://x\n    insecure-skip-tls-verify: \"yes\"\n";
    let msg = parse(text, Path::new("/k")).unwrap_err().to_string();
    assert!(msg.contains("line "), "{msg}");
}

#[test]
fn debug_output_hides_auth_provider_config_and_unmodelled_fields() {
    let text = "users: [{name: u, user: {auth-provider: {name: oidc, config: {refresh-token: supersecret}}, future-secret: alsosecret}}]\n";
    let config = parse(text, Path::new("/k")).unwrap();
    let dbg = format!("{config:?}");
    assert!(
        !dbg.contains("supersecret") && !dbg.contains("alsosecret") && dbg.contains("\"u\""),
        "{dbg}"
    );
}

#[test]
fn empty_file_says_it_is_empty() {
    let err = parse("\n  \n", Path::new("/k")).unwrap_err();
    assert!(matches!(err, KubeconfigError::Empty { .. }), "{err:?}");
}

#[test]
fn unknown_current_context_lists_contexts() {
    let node = Node::new();
    let text = fixture!("kubeadm-bootstrap-kubelet.conf").replace(
        "current-context: tls-bootstrap-token-user@kubernetes",
        "current-context: foo",
    );
    node.install_kubeconfig("/etc/kubernetes/bootstrap-kubelet.conf", &text);
    let err = node
        .load("/etc/kubernetes/bootstrap-kubelet.conf")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "kubeconfig /etc/kubernetes/bootstrap-kubelet.conf: current-context \"foo\" names no context; set current-context to one of: \"tls-bootstrap-token-user@kubernetes\""
    );
}

#[test]
fn several_contexts_without_current_context_is_ambiguous() {
    let text = "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {token: t.t}}]\ncontexts:\n- {name: a, context: {cluster: c, user: u}}\n- {name: b, context: {cluster: c, user: u}}\n";
    let config = parse(text, Path::new("/k")).unwrap();
    let err = config.select(Path::new("/k")).err().unwrap();
    assert!(
        matches!(err, KubeconfigError::SelectContext { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"a\", \"b\""), "{err}");
}

#[test]
fn user_without_credentials_says_what_to_give() {
    let text = "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: kubelet, user: {exec: {command: foo}}}]\n";
    let config = parse(text, Path::new("/k")).unwrap();
    let err = config
        .resolve(Path::new("/k"), &mut |_, _| unreachable!())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "kubeconfig /k: no credentials in user \"kubelet\" (users[0].user): give token, tokenFile, or client-certificate(-data) with client-key(-data) (exec and auth-provider plugins are not supported by the agent)"
    );
}

#[test]
fn client_cert_without_key_is_incomplete() {
    let text = "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {client-certificate: /a.pem, token: t.t}}]\n";
    let config = parse(text, Path::new("/k")).unwrap();
    let err = config
        .resolve(Path::new("/k"), &mut |_, _| unreachable!())
        .unwrap_err();
    assert!(
        matches!(
            err,
            KubeconfigError::ClientCertIncomplete {
                missing: "client-key",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn plain_http_server_is_refused() {
    let text = "clusters: [{name: c, cluster: {server: 'http://10.0.0.1:8080'}}]\nusers: [{name: u, user: {token: t.t}}]\n";
    let config = parse(text, Path::new("/k")).unwrap();
    let err = config
        .resolve(Path::new("/k"), &mut |_, _| unreachable!())
        .unwrap_err();
    assert!(
        matches!(err, KubeconfigError::ServerNotHttps { .. }),
        "{err:?}"
    );
}

#[test]
fn missing_referenced_ca_file_names_field_and_file() {
    let node = Node::new();
    node.install_kubeconfig(
        "/var/lib/kubelet/bootstrap-kubeconfig",
        fixture!("aks-bootstrap-kubeconfig"),
    );
    let err = node
        .load("/var/lib/kubelet/bootstrap-kubeconfig")
        .unwrap_err();
    assert!(
        matches!(err, KubeconfigError::ReferencedNotFound { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("clusters[0].cluster.certificate-authority refers to /etc/kubernetes/certs/ca.crt, which does not exist"),
        "{msg}"
    );
}

#[test]
fn ca_file_that_is_not_pem_names_the_file() {
    let node = Node::new();
    node.install_kubeconfig(
        "/var/lib/kubelet/bootstrap-kubeconfig",
        fixture!("aks-bootstrap-kubeconfig"),
    );
    node.write("/etc/kubernetes/certs/ca.crt", b"not a certificate\n");
    let err = node
        .load("/var/lib/kubelet/bootstrap-kubeconfig")
        .unwrap_err();
    assert!(
        matches!(err, KubeconfigError::ParseCertificate { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("(/etc/kubernetes/certs/ca.crt)"),
        "{err}"
    );
}

#[test]
fn client_key_of_another_cert_is_a_mismatch() {
    let node = Node::new();
    node.install_kubeconfig(
        "/etc/kubernetes/kubelet.conf",
        fixture!("kubeadm-kubelet.conf"),
    );
    let mut pem = node.client_cert_pem.clone();
    pem.extend_from_slice(&testpki::key().private_key_to_pem_pkcs8().unwrap());
    node.write("/var/lib/kubelet/pki/kubelet-client-current.pem", &pem);
    let err = node.load("/etc/kubernetes/kubelet.conf").unwrap_err();
    assert!(
        matches!(err, KubeconfigError::MatchClientKey { .. }),
        "{err:?}"
    );
}

#[test]
fn token_file_with_two_lines_is_refused() {
    let node = Node::new();
    node.install_kubeconfig(
        "/etc/kubernetes/bootstrap-kubelet.conf",
        fixture!("relative-refs.conf"),
    );
    node.write_ca("/etc/kubernetes/pki/ca.crt");
    node.write("/etc/kubernetes/bootstrap-token", b"abc.def\nghi.jkl\n");
    let err = node
        .load("/etc/kubernetes/bootstrap-kubelet.conf")
        .unwrap_err();
    assert!(matches!(err, KubeconfigError::ParseToken { .. }), "{err:?}");
    assert!(!err.to_string().contains("abc.def"), "token leaked: {err}");
}

#[test]
fn debug_output_redacts_token_and_key() {
    let token = Auth::Token("abcdef.supersecret".into());
    let dbg = format!("{token:?}");
    assert!(
        !dbg.contains("supersecret") && dbg.contains("<redacted>"),
        "{dbg}"
    );
    let pair = Auth::ClientCert {
        cert_pem: b"CERT".to_vec(),
        key_pem: b"-----BEGIN PRIVATE KEY-----SECRET".to_vec(),
        cert_path: None,
    };
    let dbg = format!("{pair:?}");
    assert!(
        !dbg.contains("SECRET") && dbg.contains("<redacted>"),
        "{dbg}"
    );
    let config = parse(
        "users: [{name: u, user: {token: abcdef.supersecret, client-key-data: U0VDUkVU}}]\n",
        Path::new("/k"),
    )
    .unwrap();
    let dbg = format!("{config:?}");
    assert!(
        !dbg.contains("supersecret") && !dbg.contains("U0VDUkVU"),
        "{dbg}"
    );
}
