//! Who can authenticate, and the credentials tests hand out: bootstrap
//! tokens (as `kubeadm token create` makes them), service-account tokens
//! (and their expiry), client certificates from the cluster CA, anonymous
//! authentication, and kubeconfigs for each (bootstrap, kubelet, token,
//! cluster admin). What an identity may do is `access.rs`'s.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::auth::{self, UserInfo};
use crate::writes::new_uid;
use crate::{ApiServer, BootstrapToken, KUBEADM_NODE_TOKEN_GROUP};

/// Seconds since the epoch (negative before it).
fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap(),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap(),
    }
}

impl ApiServer {
    /// Registers a bootstrap token `<id>.<secret>` as `kubeadm token
    /// create` makes it: a `bootstrap-token-<id>` Secret with
    /// `usage-bootstrap-authentication` and `auth-extra-groups:
    /// system:bootstrappers:kubeadm:default-node-token`
    /// ([`KUBEADM_NODE_TOKEN_GROUP`], the group kubeadm's bindings name).
    pub fn add_bootstrap_token(&self, id: &str, secret: &str) {
        self.add_bootstrap_token_with(id, secret, &[KUBEADM_NODE_TOKEN_GROUP], None);
    }

    /// Like [`ApiServer::add_bootstrap_token`], with exactly these
    /// `auth-extra-groups` (none: the token is only in
    /// `system:bootstrappers`, which kubeadm's bindings do not name) and an
    /// optional expiration. As upstream, a token with a group that is not
    /// `system:bootstrappers:<[a-z0-9:-]>` does not authenticate.
    pub fn add_bootstrap_token_with(
        &self,
        id: &str,
        secret: &str,
        extra_groups: &[&str],
        expires: Option<SystemTime>,
    ) {
        assert!(
            auth::parse_bootstrap_token(&format!("{id}.{secret}")).is_some(),
            "bootstrap token must match [a-z0-9]{{6}}.[a-z0-9]{{16}}"
        );
        self.state().bootstrap_tokens.insert(
            id.to_string(),
            BootstrapToken {
                secret: secret.to_string(),
                extra_groups: extra_groups.iter().map(|s| s.to_string()).collect(),
                expires_unix: expires.map(unix),
            },
        );
    }

    /// Creates a service-account bearer token for
    /// `system:serviceaccount:<ns>:<name>` (groups `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>`, `system:authenticated`).
    pub fn add_service_account_token(&self, namespace: &str, name: &str) -> String {
        let mut b = [0u8; 24];
        openssl::rand::rand_bytes(&mut b).unwrap();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        self.state().sa_tokens.insert(
            token.clone(),
            UserInfo {
                name: format!("system:serviceaccount:{namespace}:{name}"),
                uid: new_uid(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".into(),
                ],
            },
        );
        token
    }

    /// Test-only knob: the service-account token `token` has expired (a
    /// bound token past its `expirationSeconds`, after kubelet rotated the
    /// projected file): from now on requests presenting it are 401
    /// Unauthorized, as the real server's token authenticator answers them.
    /// Panics when no such token was issued, so a typo fails the test.
    pub fn expire_service_account_token(&self, token: &str) {
        assert!(
            self.state().sa_tokens.remove(token).is_some(),
            "ApiServer::expire_service_account_token: no such token"
        );
    }

    /// Issues a client certificate `CN=<cn>, O=<orgs>` from the cluster CA,
    /// valid from `not_before` to `not_after`. Returns `(cert_pem, key_pem)`.
    pub fn issue_client_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> (String, String) {
        let (c, k) = self
            .shared
            .ca
            .client_cert(cn, orgs, unix(not_before), unix(not_after));
        (
            String::from_utf8(c.to_pem().unwrap()).unwrap(),
            String::from_utf8(k.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        )
    }

    /// Anonymous authentication (off by default): requests without
    /// credentials become `system:anonymous` instead of a 401.
    pub fn set_anonymous_auth(&self, on: bool) {
        self.state().anonymous = on;
    }

    fn kubeconfig(&self, user_name: &str, user_yaml: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.cluster_ca_pem());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    certificate-authority-data: {ca}\n    server: {url}\ncontexts:\n- name: {user_name}@kubernetes\n  context:\n    cluster: kubernetes\n    user: {user_name}\ncurrent-context: {user_name}@kubernetes\npreferences: {{}}\nusers:\n- name: {user_name}\n  user:\n{user_yaml}",
            url = self.url()
        )
    }

    /// A bootstrap kubeconfig (as `/var/lib/kubelet/bootstrap-kubeconfig`):
    /// cluster CA data, server URL, user `kubelet-bootstrap` with `token`.
    pub fn bootstrap_kubeconfig(&self, token_id: &str, token_secret: &str) -> String {
        self.kubeconfig(
            "kubelet-bootstrap",
            &format!("    token: {token_id}.{token_secret}\n"),
        )
    }

    /// A kubelet kubeconfig (as `/etc/kubernetes/kubelet.conf`): user
    /// `default-auth` with `client-certificate` and `client-key` files (the
    /// kubelet layout points both at `kubelet-client-current.pem`).
    pub fn client_kubeconfig(&self, cert_path: &Path, key_path: &Path) -> String {
        self.kubeconfig(
            "default-auth",
            &format!(
                "    client-certificate: {}\n    client-key: {}\n",
                cert_path.display(),
                key_path.display()
            ),
        )
    }

    /// A kubeconfig with a bearer token (e.g. a service-account token).
    pub fn token_kubeconfig(&self, token: &str) -> String {
        self.kubeconfig("token-user", &format!("    token: {token}\n"))
    }

    /// A cluster-admin kubeconfig (`CN=kubernetes-admin, O=system:masters`,
    /// embedded certificate data).
    pub fn admin_kubeconfig(&self) -> String {
        let now = SystemTime::now();
        let (cert, key) = self.issue_client_cert(
            "kubernetes-admin",
            &["system:masters"],
            now - Duration::from_secs(3600),
            now + Duration::from_secs(24 * 3600),
        );
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.kubeconfig(
            "kubernetes-admin",
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&cert),
                b64(&key)
            ),
        )
    }
}
