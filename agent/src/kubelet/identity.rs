//! The identity the agent talks to the API server with, and the client
//! built from it.
//!
//! Owns: the choice between the node's current client certificate (while it
//! is usable) and the bootstrap kubeconfig, and turning resolved kubeconfig
//! material into a `kube::Client`.
//!
//! Boundary: reads kubeconfigs only through kubeconfig.rs and certificates
//! only as given in ([`CurrentCert`]); writes nothing and makes no API call
//! (a client is built, not used).

use std::path::PathBuf;

use crate::config::KubeletSettings;
use crate::k8s::client::{build_client, ClientError};
use crate::k8s::kubeconfig::{self, Auth, ResolvedKubeconfig};
use crate::kubelet::facts::facts_of;
use crate::kubelet::store::CurrentCert;
use crate::node::hostroot::HostRoot;

/// Clock skew tolerated on a client certificate's notBefore, so a
/// certificate signed by an API server whose clock is a little ahead works.
const NOT_BEFORE_SKEW_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot bootstrap the kubelet client certificate: {reason}. Provide a bootstrap kubeconfig at {path} \
         (server URL, cluster CA, and a bootstrap token `<id>.<secret>` of a token in group system:bootstrappers), \
         or a valid client certificate at {pki}/kubelet-client-current.pem"
    )]
    NoBootstrap {
        path: PathBuf,
        pki: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The identity of a request made with the node's current client certificate.
pub const CURRENT: &str = "current client certificate";
/// The identity of a request made with the bootstrap kubeconfig.
pub const BOOTSTRAP: &str = "bootstrap kubeconfig";

/// Where the node's identities come from: kubelet's kubeconfig and the
/// bootstrap kubeconfig, as node paths under `host`.
#[derive(Clone, Debug)]
pub struct IdentitySource {
    host: HostRoot,
    kubeconfig: PathBuf,
    bootstrap_kubeconfig: PathBuf,
    pki_dir: PathBuf,
}

impl IdentitySource {
    pub fn new(host: HostRoot, settings: &KubeletSettings) -> Self {
        Self {
            host,
            kubeconfig: settings.kubeconfig.clone(),
            bootstrap_kubeconfig: settings.bootstrap_kubeconfig.clone(),
            pki_dir: settings.pki_dir.clone(),
        }
    }

    /// Server, CA and credentials for the API, and which identity they are:
    /// the current client cert while it is valid, else the bootstrap
    /// kubeconfig.
    pub fn choose(
        &self,
        usable_client: Option<&CurrentCert>,
    ) -> Result<(ResolvedKubeconfig, &'static str), IdentityError> {
        if let Some(current) = usable_client {
            // Server and CA from kubelet's kubeconfig, or the bootstrap one.
            let base = kubeconfig::load(&self.host, &self.kubeconfig)
                .or_else(|_| kubeconfig::load(&self.host, &self.bootstrap_kubeconfig));
            if let Ok(mut kc) = base {
                let mut cert_pem = Vec::new();
                cert_pem.extend(current.cert.to_pem().unwrap_or_default());
                for c in &current.chain {
                    cert_pem.extend(c.to_pem().unwrap_or_default());
                }
                let key_pem = current.key.private_key_to_pem_pkcs8().unwrap_or_default();
                kc.auth = Auth::ClientCert {
                    cert_pem,
                    key_pem,
                    cert_path: None,
                };
                return Ok((kc, CURRENT));
            }
        }
        match kubeconfig::load(&self.host, &self.bootstrap_kubeconfig) {
            Ok(kc) => Ok((kc, BOOTSTRAP)),
            Err(e) => Err(IdentityError::NoBootstrap {
                path: self.bootstrap_kubeconfig.clone(),
                pki: self.pki_dir.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// A client with the node's current identity (for watches), if its
    /// current client certificate is usable at `now`.
    pub fn node_client(&self, current: Option<&CurrentCert>, now: i64) -> Option<kube::Client> {
        let current = current.filter(|c| is_usable(c, now))?;
        let (kc, _) = self.choose(Some(current)).ok()?;
        build_client(&kc).ok()
    }
}

/// A client certificate works as an identity while it is unexpired and
/// matches its key.
pub fn is_usable(c: &CurrentCert, now: i64) -> bool {
    let f = facts_of(c);
    c.key_matches && f.not_before <= now + NOT_BEFORE_SKEW_SECS && f.not_after > now
}
