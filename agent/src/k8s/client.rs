//! `kube::Client`s built from resolved kubeconfig material: the one way
//! the agent reaches a Kubernetes API server.
//!
//! Boundary: builds clients, makes no call with them. Two kinds: the
//! node's own identity from resolved material ([`build_client`]), and an
//! operator's from their kubeconfig as kubectl reads it ([`user_client`],
//! for the `fleet` command on a workstation).

use std::time::Duration;

use base64::Engine;
use openssl::x509::X509;

use crate::k8s::kubeconfig::{Auth, ResolvedKubeconfig};

/// How long to wait for a TCP connection to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("building an API client for {server}: {reason}")]
    Build { server: String, reason: String },
}

/// An operator's client could not be built from their kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum UserClientError {
    #[error("building an API client for {server}: {reason}")]
    Build { server: String, reason: String },
    #[error("reading the kubeconfig {source_desc}: {reason}; give a readable one with --kubeconfig FILE or KUBECONFIG")]
    ReadKubeconfig { source_desc: String, reason: String },
    #[error("using {context} of the kubeconfig {source_desc}: {reason}; list the contexts with `kubectl config get-contexts` and pick one with --context NAME")]
    Context {
        context: String,
        source_desc: String,
        reason: String,
    },
}

/// Where an operator's kubeconfig came from, and what it points at.
#[derive(Debug, Clone)]
pub struct UserTarget {
    /// `--kubeconfig PATH`, `KUBECONFIG=...` or `~/.kube/config`.
    pub kubeconfig: String,
    /// The context used (`None`: the kubeconfig's current-context).
    pub context: Option<String>,
    pub server: String,
}

/// A client from an operator's kubeconfig, as kubectl picks it: the file of
/// `--kubeconfig`, else the files of `KUBECONFIG` (merged), else
/// `~/.kube/config`; the context of `--context`, else current-context.
pub async fn user_client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<(kube::Client, UserTarget), UserClientError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let source_desc = match (kubeconfig, std::env::var_os("KUBECONFIG")) {
        (Some(p), _) => format!("--kubeconfig {}", p.display()),
        (None, Some(v)) if !v.is_empty() => format!("KUBECONFIG={}", v.to_string_lossy()),
        _ => "~/.kube/config".to_string(),
    };
    let read = match kubeconfig {
        Some(p) => Kubeconfig::read_from(p),
        None => Kubeconfig::read(),
    };
    let file = read.map_err(|e| UserClientError::ReadKubeconfig {
        source_desc: source_desc.clone(),
        reason: crate::errors::error_chain(&e),
    })?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        cluster: None,
        user: None,
    };
    let context_desc = match context {
        Some(c) => format!("context {c:?}"),
        None => format!(
            "current-context {:?}",
            file.current_context.clone().unwrap_or_default()
        ),
    };
    let mut config = kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .map_err(|e| UserClientError::Context {
            context: context_desc.clone(),
            source_desc: source_desc.clone(),
            reason: crate::errors::error_chain(&e),
        })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| UserClientError::Build {
        server: server.clone(),
        reason: crate::errors::error_chain(&e),
    })?;
    Ok((
        client,
        UserTarget {
            kubeconfig: source_desc,
            context: context.map(str::to_string),
            server,
        },
    ))
}

/// A kube client from resolved kubeconfig material (no file access).
pub fn build_client(kc: &ResolvedKubeconfig) -> Result<kube::Client, ClientError> {
    let client_err = |reason: String| ClientError::Build {
        server: kc.server.clone(),
        reason,
    };
    let uri: http::Uri = kc
        .server
        .parse()
        .map_err(|e: http::uri::InvalidUri| client_err(format!("server URL is invalid: {e}")))?;
    let mut config = kube::Config::new(uri);
    if let Some(ca) = &kc.ca_pem {
        let certs = X509::stack_from_pem(ca).map_err(|e| {
            client_err(format!(
                "cluster CA does not parse: {}",
                crate::x509::openssl_reason(&e)
            ))
        })?;
        config.root_cert = Some(certs.iter().filter_map(|c| c.to_der().ok()).collect());
    }
    config.accept_invalid_certs = kc.insecure_skip_tls_verify;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match &kc.auth {
        Auth::Token(t) => config.auth_info.token = Some(t.clone().into()),
        Auth::ClientCert {
            cert_pem, key_pem, ..
        } => {
            config.auth_info.client_certificate_data = Some(b64(cert_pem));
            config.auth_info.client_key_data = Some(b64(key_pem).into());
        }
    }
    kube::Client::try_from(config).map_err(|e| client_err(e.to_string()))
}

/// A client for an identity other than the node's: the kubeconfig at
/// `kubeconfig` (a path as this process sees it; kube-rs re-reads a
/// `tokenFile` as it rotates), or without one the pod's ServiceAccount
/// (in-cluster: `KUBERNETES_SERVICE_HOST`/`_PORT` and the projected token,
/// which kubelet rotates and kube-rs re-reads).
pub async fn service_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |reason: String| ClientError::Build {
                server: format!("kubeconfig {}", path.display()),
                reason,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| err(e.to_string()))?
        }
        None => kube::Config::incluster().map_err(|e| ClientError::Build {
            server: "the in-cluster API server".into(),
            reason: format!(
                "{e}; outside a pod (host mode) set ca-secret-kubeconfig to a kubeconfig of an identity that may read the Secret"
            ),
        })?,
    };
    let mut config = config;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let server = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|e| ClientError::Build {
        server,
        reason: e.to_string(),
    })
}
