//! Kubeconfigs (kubelet's kubeconfig, its bootstrap kubeconfig, and any
//! other), reduced to what the agent needs to reach the API server: the
//! server URL, the cluster CA and one credential.
//!
//! [`parse`] is pure: YAML text to kube's kubeconfig types
//! (`kube::config::Kubeconfig`, client-go's `Config`), read with serde_yaml
//! so that a bad file is reported with the field path, line and column.
//! [`load`] is the edge: it reads the file and every file it references
//! through [`HostRoot`] (with size limits), picks the context kubelet would
//! use, decodes the inline `*-data` fields and checks that certificates and
//! keys parse. That resolution is the agent's own, not kube's
//! `Config::from_custom_kubeconfig`: kube reads referenced files directly,
//! not through the host root, runs exec plugins, and reports errors without
//! the field that caused them.
//!
//! Boundary: this module only reads. It never writes a kubeconfig, never
//! talks to the API server, and does not run exec or auth-provider plugins.
//! Token and key material never appear in `Debug` output or error messages.

use std::fmt;
use std::path::{Path, PathBuf};

use kube::config::{NamedAuthInfo, NamedCluster, NamedContext};

mod error;
mod resolve;
mod write;

pub use error::KubeconfigError;
pub use resolve::load;
use resolve::nonempty;
pub use write::kubelet_kubeconfig;

/// Real kubeconfigs are a few KiB even with inline certificates; the cap keeps
/// a wrong path (a log, a device) from being read whole.
pub const MAX_KUBECONFIG_BYTES: u64 = 1024 * 1024;
/// Same reasoning for the CA, certificate, key and token files it references.
pub const MAX_REFERENCED_BYTES: u64 = 1024 * 1024;

/// A parsed kubeconfig file, in kube's types; unknown fields (`preferences`,
/// `extensions`, ...) are accepted, wrong types are errors. kube's
/// `AuthInfo` holds the token and the client key as `SecretString`s. This
/// wrapper's `Debug` shows names only: kube's types would print an
/// auth-provider's config (OIDC refresh tokens) and the fields they do not
/// model.
#[derive(Clone, Default)]
pub struct Kubeconfig {
    file: kube::config::Kubeconfig,
}

impl Kubeconfig {
    pub fn clusters(&self) -> &[NamedCluster] {
        &self.file.clusters
    }

    /// The `users` list (kube calls a user an `AuthInfo`, as client-go does).
    pub fn users(&self) -> &[NamedAuthInfo] {
        &self.file.auth_infos
    }

    pub fn contexts(&self) -> &[NamedContext] {
        &self.file.contexts
    }

    pub fn current_context(&self) -> Option<&str> {
        self.file.current_context.as_deref()
    }
}

/// What the agent needs from a kubeconfig to talk to the API server.
#[derive(Clone)]
pub struct ResolvedKubeconfig {
    /// Node path of the kubeconfig, for messages.
    pub path: PathBuf,
    /// The API server's https URL.
    pub server: String,
    /// Cluster CA (PEM) from `certificate-authority-data` or the
    /// `certificate-authority` file; `None` means the system's trust store.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_tls_verify: bool,
    pub auth: Auth,
}

/// Which credential a kubeconfig's selected user presents, without reading
/// any file it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `client-certificate`: a file (node path, relative ones resolved
    /// against the kubeconfig's directory).
    CertificateFile(PathBuf),
    /// `client-certificate-data`: a certificate inside the kubeconfig.
    EmbeddedCertificate,
    /// `token` or `tokenFile`.
    Token,
    /// An exec or auth-provider plugin, or nothing usable.
    Other,
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CertificateFile(p) => write!(f, "the certificate file {}", p.display()),
            Self::EmbeddedCertificate => f.write_str("an embedded client-certificate-data"),
            Self::Token => f.write_str("a token"),
            Self::Other => f.write_str("no client certificate (a plugin, or nothing)"),
        }
    }
}

/// The credential of the user the kubeconfig at `path` (its text) selects,
/// as kubelet would pick it. Pure.
pub fn credential_of(text: &str, path: &Path) -> Result<Credential, KubeconfigError> {
    let config = parse(text, path)?;
    let selected = config.select(path)?;
    let Some(user) = selected.user.auth_info.as_ref() else {
        return Ok(Credential::Other);
    };
    if nonempty(user.client_certificate_data.as_deref()).is_some() {
        return Ok(Credential::EmbeddedCertificate);
    }
    if let Some(file) = nonempty(user.client_certificate.as_deref()) {
        let dir = path.parent().unwrap_or(Path::new("/"));
        return Ok(Credential::CertificateFile(dir.join(file)));
    }
    if user.token.is_some() || nonempty(user.token_file.as_deref()).is_some() {
        return Ok(Credential::Token);
    }
    Ok(Credential::Other)
}

/// The one credential the agent presents.
#[derive(Clone)]
pub enum Auth {
    /// A bearer token (from `token`, or the trimmed contents of `tokenFile`).
    Token(String),
    /// A client certificate and its key, both PEM.
    ClientCert {
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        /// Node path of the certificate file, if it came from a file (for
        /// kubelet: `kubelet-client-current.pem`).
        cert_path: Option<PathBuf>,
    },
}

/// Parses kubeconfig YAML (pure). `path` is only used in errors. File
/// references stay exactly as written.
pub fn parse(text: &str, path: &Path) -> Result<Kubeconfig, KubeconfigError> {
    if text.trim().is_empty() {
        return Err(KubeconfigError::Empty {
            path: path.to_path_buf(),
        });
    }
    match serde_yaml::from_str(text) {
        Ok(file) => Ok(Kubeconfig { file }),
        Err(source) => match with_missing_names_filled(text) {
            Some(file) => Ok(Kubeconfig { file }),
            None => Err(KubeconfigError::Parse {
                path: path.to_path_buf(),
                source,
            }),
        },
    }
}

/// kube's types require `name` in every cluster, user and context entry and
/// `cluster` in every context, where client-go reads a missing one as ""
/// (and the agent's fallback without contexts uses the first cluster and
/// user, named or not). Such a file is read again with those filled in as "".
/// `None` when that does not apply or does not help: then the first error
/// stands, with its line and column.
fn with_missing_names_filled(text: &str) -> Option<kube::config::Kubeconfig> {
    use serde_yaml::{Mapping, Value};
    fn fill(map: &mut Mapping, key: &str) -> bool {
        if map.contains_key(key) {
            return false;
        }
        map.insert(key.into(), Value::String(String::new()));
        true
    }
    let mut doc: Value = serde_yaml::from_str(text).ok()?;
    let mut filled = false;
    for list in ["clusters", "users", "contexts"] {
        let Some(entries) = doc.get_mut(list).and_then(Value::as_sequence_mut) else {
            continue;
        };
        for entry in entries.iter_mut().filter_map(Value::as_mapping_mut) {
            filled |= fill(entry, "name");
            if list == "contexts" {
                if let Some(context) = entry.get_mut("context").and_then(Value::as_mapping_mut) {
                    filled |= fill(context, "cluster");
                }
            }
        }
    }
    if !filled {
        return None;
    }
    serde_yaml::from_value(doc).ok()
}

/// Shown instead of secrets in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Shown instead of long, non-secret data in `Debug` output.
struct Bytes(usize);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.debug_tuple("Token").field(&Redacted).finish(),
            Auth::ClientCert {
                cert_pem,
                key_pem: _,
                cert_path,
            } => f
                .debug_struct("ClientCert")
                .field("cert_pem", &Bytes(cert_pem.len()))
                .field("key_pem", &Redacted)
                .field("cert_path", cert_path)
                .finish(),
        }
    }
}

impl fmt::Debug for ResolvedKubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedKubeconfig")
            .field("path", &self.path)
            .field("server", &self.server)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| Bytes(p.len())))
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Names only: see [`Kubeconfig`].
impl fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clusters: Vec<&str> = self.clusters().iter().map(|c| c.name.as_str()).collect();
        let users: Vec<&str> = self.users().iter().map(|u| u.name.as_str()).collect();
        let contexts: Vec<&str> = self.contexts().iter().map(|c| c.name.as_str()).collect();
        f.debug_struct("Kubeconfig")
            .field("clusters", &clusters)
            .field("users", &users)
            .field("contexts", &contexts)
            .field("current_context", &self.current_context())
            .finish()
    }
}

#[cfg(test)]
mod tests;
