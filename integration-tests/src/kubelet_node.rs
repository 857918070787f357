//! A node set up for the agent's kubelet certificate job: a stand-in
//! `kubelet.service`, a bootstrap kubeconfig for the Kubernetes API test
//! server, and the agent in pod mode with `kubelet.mode: on`; plus what a
//! scenario checks afterwards: kubelet's `kubelet-client-current.pem` must
//! resolve to a certificate and the key that matches it.

use std::path::PathBuf;
use std::time::Duration;

use nca_test_apiserver::{ApiServer, Profile, Rbac};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::agent::{render_tail, PodModeAgent};
use crate::node::Node;

/// kubelet's pki directory.
pub const PKI: &str = "/var/lib/kubelet/pki";
/// The link kubelet reads its client certificate and key through.
pub const CLIENT_LINK: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
/// The bootstrap kubeconfig the fixture writes.
pub const BOOTSTRAP_KUBECONFIG: &str = "/var/lib/kubelet/bootstrap-kubeconfig";
/// The unit the agent restarts after a renewal.
pub const KUBELET_UNIT: &str = "kubelet.service";
/// The bootstrap token's id and secret.
pub const TOKEN_ID: &str = "abcdef";
/// See [`TOKEN_ID`].
pub const TOKEN_SECRET: &str = "0123456789abcdef";
/// The node name the agent is configured with (and the API server knows).
pub const NODE_NAME: &str = "n1";
/// How long [`KubeletFixture::wait_for_client_cert`] waits.
pub const CERT_TIMEOUT: Duration = Duration::from_secs(60);

/// A node with a stand-in kubelet, a bootstrap kubeconfig, and an API server.
#[derive(Debug)]
pub struct KubeletFixture {
    /// The node (booted on [`KubeletFixture::new`]).
    pub node: Node,
    /// The API server the bootstrap kubeconfig points at.
    pub server: ApiServer,
    config: tempfile::TempDir,
    secret: tempfile::TempDir,
}

impl KubeletFixture {
    /// `kubectl ARGS` as the test server's cluster admin.
    pub fn kubectl_admin(&self, args: &[&str]) -> std::process::Output {
        kubectl_with(&self.server.admin_kubeconfig(), args)
    }

    /// `kubectl ARGS` as the node itself: kubelet's client certificate and
    /// key, as the agent obtained them (`kubelet-client-current.pem`).
    pub fn kubectl_as_node(&self, args: &[&str]) -> std::process::Output {
        let pem = self.node.host_path(CLIENT_LINK);
        kubectl_with(&self.server.client_kubeconfig(&pem, &pem), args)
    }

    /// Starts an API server as a kubeadm cluster with the RBAC that
    /// `manifests/base` ships, with the bootstrap token and node
    /// [`NODE_NAME`], boots a node named after `name`, and gives it a running
    /// stand-in `kubelet.service` and the bootstrap kubeconfig.
    pub fn new(name: &str) -> KubeletFixture {
        KubeletFixture::with_cluster(name, Profile::Kubeadm, &crate::rbac::shipped_rbac())
    }

    /// Like [`KubeletFixture::new`], with the API server's authorization from
    /// `profile` and `rbac` (and nothing else).
    pub fn with_cluster(name: &str, profile: Profile, rbac: &Rbac) -> KubeletFixture {
        let server = ApiServer::start_with(profile, rbac);
        server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
        server.add_node(NODE_NAME);
        let node = Node::boot(name);
        node.write_file(
            "/etc/systemd/system/kubelet.service",
            b"[Unit]\nDescription=stand-in kubelet for node-cert-agent tests\n[Service]\nExecStart=/bin/sleep infinity\n",
            0o644,
        );
        node.systemctl(&["daemon-reload"]);
        node.exec_ok(&["systemctl", "start", KUBELET_UNIT]);
        node.write_file(
            BOOTSTRAP_KUBECONFIG,
            server
                .bootstrap_kubeconfig(TOKEN_ID, TOKEN_SECRET)
                .as_bytes(),
            0o600,
        );
        KubeletFixture {
            node,
            server,
            config: tempfile::tempdir().expect("a temp dir for the agent's config"),
            secret: tempfile::tempdir().expect("a temp dir for the Secret volume"),
        }
    }

    /// Writes the agent's config (Node publications unspread, kubelet job
    /// on, node [`NODE_NAME`], a 60 s CSR timeout unless `extra_kubelet_yaml` sets one, then
    /// `extra_kubelet_yaml` inside `kubelet:`) and
    /// returns its path.
    pub fn config_path(&self, extra_kubelet_yaml: &str) -> PathBuf {
        let path = self.config.path().join("config.yaml");
        // A 60 s CSR timeout unless the extra lines set their own.
        let timeout = if extra_kubelet_yaml.contains("csr-timeout-seconds") {
            ""
        } else {
            "  csr-timeout-seconds: 60\n"
        };
        // Revocation renewals at once, unless the extra lines spread them
        // (the default spread, 300 s, would put n1's renewal 121 s out).
        let spread = if extra_kubelet_yaml.contains("revocation-spread-seconds") {
            ""
        } else {
            "  revocation-spread-seconds: 0\n"
        };
        // Node publications at once (the default spreads them over 30 s;
        // the publisher's unit test covers that).
        let yaml = format!(
            "fleet-publish-spread-seconds: 0\nkubelet:\n  mode: on\n  node-name: {NODE_NAME}\n{timeout}{spread}{extra_kubelet_yaml}"
        );
        std::fs::write(&path, yaml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Starts the pod-mode agent with [`KubeletFixture::config_path`] and
    /// waits for its first CA pass.
    pub fn start_agent(&self, extra_kubelet_yaml: &str) -> PodModeAgent<'_> {
        let cfg = self.config_path(extra_kubelet_yaml);
        let cfg = cfg.to_str().expect("temp paths are UTF-8");
        PodModeAgent::start(&self.node, self.secret.path(), &["--config", cfg])
    }

    /// Like [`KubeletFixture::start_agent`], serving `/metrics`, `/healthz`
    /// and `/readyz` at `address`.
    pub fn start_agent_with_metrics(
        &self,
        extra_kubelet_yaml: &str,
        address: &str,
    ) -> PodModeAgent<'_> {
        let cfg = self.config_path(extra_kubelet_yaml);
        let cfg = cfg.to_str().expect("temp paths are UTF-8");
        PodModeAgent::start(
            &self.node,
            self.secret.path(),
            &["--config", cfg, "--metrics-address", address],
        )
    }

    /// `node-cert-agent status -o json` of the node (pod mode: the node's
    /// root as host root, the agent's config): its exit code and report.
    pub fn status_json(&self) -> (i32, serde_json::Value) {
        let out = std::process::Command::new(crate::agent::agent_binary())
            .args(["status", "-o", "json", "--host-root"])
            .arg(self.node.root())
            .arg("--config")
            .arg(self.config.path().join("config.yaml"))
            .output()
            .expect("status runs");
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status -o json is not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    /// The certificate `kubelet-client-current.pem` resolves to, if any.
    pub fn client_cert(&self) -> Option<X509> {
        if !self.node.exists(CLIENT_LINK) {
            return None;
        }
        X509::stack_from_pem(&self.node.read_file(CLIENT_LINK))
            .ok()?
            .into_iter()
            .next()
    }

    /// Waits up to [`CERT_TIMEOUT`] until the client certificate satisfies
    /// `cond`; panics with the agent's log otherwise.
    pub fn wait_for_client_cert(
        &self,
        agent: &PodModeAgent<'_>,
        what: &str,
        cond: impl Fn(&X509) -> bool,
    ) -> X509 {
        let mut found = None;
        let ok = crate::wait::wait_until_or_timeout(CERT_TIMEOUT, || {
            found = self.client_cert().filter(|c| cond(c));
            found.is_some()
        });
        assert!(
            ok,
            "timed out waiting for {what}; agent log:\n{}",
            render_tail(&agent.logs(), 30)
        );
        found.expect("the wait succeeded")
    }

    /// The stand-in kubelet's MainPID.
    pub fn kubelet_pid(&self) -> u32 {
        self.node.main_pid(KUBELET_UNIT)
    }
}

/// The certificate's serial number in hex (OpenSSL's spelling).
pub fn serial(c: &X509) -> String {
    c.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .expect("a serial number converts to hex")
}

/// The subject as `O=..., CN=...`, in certificate order.
pub fn subject(c: &X509) -> String {
    c.subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                e.data().to_string().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `c` is signed by the CA certificate `ca_pem`.
pub fn chains_to(c: &X509, ca_pem: &str) -> bool {
    let ca = X509::from_pem(ca_pem.as_bytes()).expect("the CA PEM parses");
    let key = ca.public_key().expect("a CA certificate has a public key");
    c.verify(&key).unwrap_or(false)
}

/// Who created each CSR, oldest first.
pub fn csr_requesters(server: &ApiServer) -> Vec<String> {
    let mut csrs = server.csrs();
    csrs.sort_by_key(|c| {
        c.metadata
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse::<u64>().ok())
            .unwrap_or(0)
    });
    csrs.into_iter()
        .map(|c| c.spec.username.unwrap_or_default())
        .collect()
}

/// What `kubelet-client-current.pem` resolves to.
#[derive(Debug)]
pub struct ClientLink {
    /// The link's target (a file name in [`PKI`]).
    pub target: String,
    /// The file's certificate.
    pub cert: X509,
    /// The file's private key, which matches `cert`.
    pub key: PKey<Private>,
}

/// Why `kubelet-client-current.pem` is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkProblem {
    /// `link-missing`, `link-dangling` or `link-mismatch`.
    pub kind: &'static str,
    /// What was found.
    pub detail: String,
}

/// Checks [`CLIENT_LINK`]: it must be a link to a file in [`PKI`] holding a
/// certificate and the private key that matches it.
pub fn client_link(node: &Node) -> Result<ClientLink, LinkProblem> {
    let problem = |kind, detail| Err(LinkProblem { kind, detail });
    let Some(target) = node.read_link(CLIENT_LINK) else {
        return problem("link-missing", format!("{CLIENT_LINK} is not a link"));
    };
    let path = node.host_path(&format!("{PKI}/{target}"));
    let Ok(bytes) = std::fs::read(&path) else {
        return problem("link-dangling", format!("{CLIENT_LINK} -> {target}"));
    };
    let cert = X509::stack_from_pem(&bytes)
        .ok()
        .and_then(|c| c.into_iter().next());
    let key = PKey::private_key_from_pem(&bytes).ok();
    match (cert, key) {
        (Some(cert), Some(key)) if cert.public_key().is_ok_and(|public| public.public_eq(&key)) => {
            Ok(ClientLink { target, cert, key })
        }
        (c, k) => problem(
            "link-mismatch",
            format!(
                "{target}: certificate {}, key {} (or they do not match)",
                if c.is_some() { "present" } else { "missing" },
                if k.is_some() { "present" } else { "missing" },
            ),
        ),
    }
}

/// `kubectl ARGS` with `kubeconfig` (its YAML, written to a temp file).
pub fn kubectl_with(kubeconfig: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl (the test command installs it): {e}"))
}
