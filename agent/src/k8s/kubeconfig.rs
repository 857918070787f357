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

use std::path::{Path, PathBuf};
use std::{fmt, io};

use base64::Engine as _;
use kube::config::{AuthInfo, Cluster, NamedAuthInfo, NamedCluster, NamedContext};
use openssl::pkey::PKey;
use openssl::x509::X509;
use secrecy::ExposeSecret;

use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::{HostRoot, HostRootError};
use crate::x509::openssl_reason;

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

/// kubelet's kubeconfig as kubelet writes it after a TLS bootstrap: the
/// bootstrap's server and cluster CA (embedded), and `cert` (a node path,
/// kubelet's `kubelet-client-current.pem`, which holds the key too) as the
/// client certificate and key. Pure.
pub fn kubelet_kubeconfig(
    bootstrap: &ResolvedKubeconfig,
    cert: &Path,
) -> Result<String, serde_yaml::Error> {
    use base64::Engine as _;
    let mut cluster = serde_yaml::Mapping::new();
    cluster.insert("server".into(), bootstrap.server.clone().into());
    if let Some(ca) = &bootstrap.ca_pem {
        cluster.insert(
            "certificate-authority-data".into(),
            base64::engine::general_purpose::STANDARD.encode(ca).into(),
        );
    }
    if bootstrap.insecure_skip_tls_verify {
        cluster.insert("insecure-skip-tls-verify".into(), true.into());
    }
    let cert = cert.display().to_string();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": cluster}],
        "users": [{"name": "default-auth", "user": {
            "client-certificate": cert,
            "client-key": cert,
        }}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster",
            "user": "default-auth",
            "namespace": "default",
        }}],
        "current-context": "default-context",
        "preferences": {},
    });
    // A mapping of strings, numbers and booleans serializes; should it ever
    // fail, that is an error, never an empty kubeconfig on the node.
    serde_yaml::to_string(&doc)
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

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("kubeconfig {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("kubeconfig {}: cannot map it onto the host root: {source}", path.display())]
    Resolve {
        path: PathBuf,
        source: Box<HostRootError>,
    },
    #[error("kubeconfig {}: cannot read it: {source}", path.display())]
    Read { path: PathBuf, source: Box<FsError> },
    #[error("kubeconfig {}: not UTF-8 text (invalid byte at offset {offset}); rewrite it as UTF-8 YAML", path.display())]
    DecodeUtf8 { path: PathBuf, offset: usize },
    #[error("kubeconfig {}: the file is empty; write the kubeconfig there or point the agent at the right file", path.display())]
    Empty { path: PathBuf },
    #[error("kubeconfig {}: not a valid kubeconfig: {source}; fix the file so it is kubeconfig YAML as kubectl writes it", path.display())]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("kubeconfig {}: current-context {name:?} names no context; set current-context to one of: {}", path.display(), one_of(.known, "contexts"))]
    SelectCurrentContext {
        path: PathBuf,
        name: String,
        known: Vec<String>,
    },
    #[error("kubeconfig {}: current-context is not set and there are {} contexts; set current-context to one of: {}", path.display(), known.len(), one_of(.known, "contexts"))]
    SelectContext { path: PathBuf, known: Vec<String> },
    #[error("kubeconfig {}: {field} {name:?} names no {kind}; set it to one of: {}", path.display(), one_of(.known, &format!("{kind}s")))]
    SelectReference {
        path: PathBuf,
        /// e.g. `contexts[0].context.user`
        field: String,
        /// `cluster` or `user`
        kind: &'static str,
        name: String,
        known: Vec<String>,
    },
    #[error("kubeconfig {}: it has no clusters; add one under clusters with server and certificate-authority(-data)", path.display())]
    SelectCluster { path: PathBuf },
    #[error("kubeconfig {}: it has no users; add one under users with token, tokenFile, or client-certificate(-data) with client-key(-data)", path.display())]
    SelectUser { path: PathBuf },
    #[error("kubeconfig {}: {field} is missing; set it to the API server's https URL", path.display())]
    ServerMissing { path: PathBuf, field: String },
    #[error("kubeconfig {}: {field} {server:?} is not an https URL; the agent only talks TLS to the API server, use https://<host>:<port>", path.display())]
    ServerNotHttps {
        path: PathBuf,
        field: String,
        server: String,
    },
    #[error("kubeconfig {}: {field}: not valid base64 ({problem}); re-encode the {what} with base64 -w0", path.display())]
    DecodeBase64 {
        path: PathBuf,
        field: String,
        problem: String,
        /// What the field holds, for the hint ("key", "certificate", ...).
        what: &'static str,
    },
    #[error("kubeconfig {}: {field} refers to {}, which cannot be mapped onto the host root: {source}", path.display(), file.display())]
    ResolveReferenced {
        path: PathBuf,
        field: String,
        file: PathBuf,
        source: Box<HostRootError>,
    },
    #[error("kubeconfig {}: {field} refers to {}, which does not exist on the node; create it or fix the path (relative paths are relative to the kubeconfig's directory)", path.display(), file.display())]
    ReferencedNotFound {
        path: PathBuf,
        field: String,
        file: PathBuf,
    },
    #[error("kubeconfig {}: {field} refers to {}, which cannot be read: {source}", path.display(), file.display())]
    ReadReferenced {
        path: PathBuf,
        field: String,
        file: PathBuf,
        source: Box<FsError>,
    },
    #[error("kubeconfig {}: {}: holds no PEM certificate ({reason}); give the {what} in PEM (BEGIN CERTIFICATE)", path.display(), origin(.field, .file))]
    ParseCertificate {
        path: PathBuf,
        field: String,
        file: Option<PathBuf>,
        reason: String,
        what: &'static str,
    },
    #[error("kubeconfig {}: {}: holds no usable unencrypted PEM private key ({reason}); give the client key in PEM, without a passphrase", path.display(), origin(.field, .file))]
    ParseKey {
        path: PathBuf,
        field: String,
        file: Option<PathBuf>,
        reason: String,
    },
    #[error("kubeconfig {}: {cert_field} and {key_field} do not belong together: the key is not the certificate's private key; point both at the same kubelet-client-current.pem or at a matching pair", path.display())]
    MatchClientKey {
        path: PathBuf,
        cert_field: String,
        key_field: String,
    },
    #[error("kubeconfig {}: {field} has {present} but no {missing}; give {missing}(-data) too (for kubelet's own certificate both point at kubelet-client-current.pem)", path.display())]
    ClientCertIncomplete {
        path: PathBuf,
        field: String,
        present: &'static str,
        missing: &'static str,
    },
    #[error("kubeconfig {}: {}: the token {problem}; write the bearer token (<id>.<secret> for bootstrap tokens) on one line", path.display(), origin(.field, .file))]
    ParseToken {
        path: PathBuf,
        field: String,
        file: Option<PathBuf>,
        problem: &'static str,
    },
    #[error("kubeconfig {}: no credentials in user {user:?} ({field}): give token, tokenFile, or client-certificate(-data) with client-key(-data){}", path.display(), if *.uses_plugin { " (exec and auth-provider plugins are not supported by the agent)" } else { "" })]
    NoCredentials {
        path: PathBuf,
        field: String,
        user: String,
        uses_plugin: bool,
    },
}

fn one_of(known: &[String], what: &str) -> String {
    if known.is_empty() {
        format!("(none: the file has no {what})")
    } else {
        known
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn origin(field: &str, file: &Option<PathBuf>) -> String {
    match file {
        Some(file) => format!("{field} ({})", file.display()),
        None => field.to_string(),
    }
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

/// Reads the kubeconfig at `node_path` through `host` and resolves it to what
/// the agent needs.
///
/// The context is `current-context`; without one, the only context; without
/// any contexts (as some of kubelet's kubeconfigs are written), the first
/// cluster and the first user. File references are node paths, relative ones
/// relative to the kubeconfig's directory (kubectl semantics); `*-data`
/// fields win over the file fields, as in client-go.
pub fn load(host: &HostRoot, node_path: &Path) -> Result<ResolvedKubeconfig, KubeconfigError> {
    let path = node_path.to_path_buf();
    let bytes = match read_node_file(host, node_path, MAX_KUBECONFIG_BYTES) {
        Ok(bytes) => bytes,
        Err(ReadFailure::Resolve(source)) => return Err(KubeconfigError::Resolve { path, source }),
        Err(ReadFailure::NotFound) => return Err(KubeconfigError::NotFound { path }),
        Err(ReadFailure::Read(source)) => return Err(KubeconfigError::Read { path, source }),
    };
    let text = String::from_utf8(bytes).map_err(|e| KubeconfigError::DecodeUtf8 {
        path: path.clone(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    let config = parse(&text, node_path)?;
    let mut read = |field: &str, file: &Path| {
        read_node_file(host, file, MAX_REFERENCED_BYTES).map_err(|failure| match failure {
            ReadFailure::Resolve(source) => KubeconfigError::ResolveReferenced {
                path: path.clone(),
                field: field.to_string(),
                file: file.to_path_buf(),
                source,
            },
            ReadFailure::NotFound => KubeconfigError::ReferencedNotFound {
                path: path.clone(),
                field: field.to_string(),
                file: file.to_path_buf(),
            },
            ReadFailure::Read(source) => KubeconfigError::ReadReferenced {
                path: path.clone(),
                field: field.to_string(),
                file: file.to_path_buf(),
                source,
            },
        })
    };
    config.resolve(node_path, &mut read)
}

enum ReadFailure {
    Resolve(Box<HostRootError>),
    NotFound,
    Read(Box<FsError>),
}

fn read_node_file(host: &HostRoot, node_path: &Path, limit: u64) -> Result<Vec<u8>, ReadFailure> {
    let host_path = host
        .resolve(node_path)
        .map_err(|e| ReadFailure::Resolve(Box::new(e)))?;
    fsutil::read_limited(&host_path, limit).map_err(|e| match e {
        FsError::Open { ref source, .. } if source.kind() == io::ErrorKind::NotFound => {
            ReadFailure::NotFound
        }
        other => ReadFailure::Read(Box::new(other)),
    })
}

/// The cluster and user the selected context points at, with their indexes
/// for field paths in messages.
struct Selected<'a> {
    cluster_index: usize,
    /// `None`: the entry has `cluster: null` or none at all.
    cluster: Option<&'a Cluster>,
    user_index: usize,
    user: &'a NamedAuthInfo,
}

/// Where a credential comes from.
enum Origin<'a> {
    Data(&'a str),
    File(&'a str),
}

/// The decoded bytes of one field and, if they came from a file, its node path.
struct Loaded {
    field: String,
    file: Option<PathBuf>,
    bytes: Vec<u8>,
}

/// kubectl treats empty strings as unset.
fn nonempty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

fn pick<'a>(data: Option<&'a str>, file: Option<&'a str>) -> Option<Origin<'a>> {
    nonempty(data)
        .map(Origin::Data)
        .or_else(|| nonempty(file).map(Origin::File))
}

/// The cluster and user a context names ("" when it names none).
fn context_refs(context: &NamedContext) -> (&str, &str) {
    match &context.context {
        Some(c) => (c.cluster.as_str(), c.user.as_deref().unwrap_or_default()),
        None => ("", ""),
    }
}

impl Kubeconfig {
    fn select(&self, path: &Path) -> Result<Selected<'_>, KubeconfigError> {
        let contexts = self.contexts();
        let clusters = self.clusters();
        let users = self.users();
        let context_names = || contexts.iter().map(|c| c.name.clone()).collect();
        let context = match nonempty(self.current_context()) {
            Some(name) => Some(
                contexts
                    .iter()
                    .enumerate()
                    .find(|(_, c)| c.name == name)
                    .ok_or_else(|| KubeconfigError::SelectCurrentContext {
                        path: path.to_path_buf(),
                        name: name.to_string(),
                        known: context_names(),
                    })?,
            ),
            None => match contexts {
                [] => None,
                [only] => Some((0, only)),
                _ => {
                    return Err(KubeconfigError::SelectContext {
                        path: path.to_path_buf(),
                        known: context_names(),
                    })
                }
            },
        };
        let Some((ctx_index, ctx)) = context else {
            let cluster = clusters
                .first()
                .ok_or_else(|| KubeconfigError::SelectCluster {
                    path: path.to_path_buf(),
                })?;
            let user = users.first().ok_or_else(|| KubeconfigError::SelectUser {
                path: path.to_path_buf(),
            })?;
            return Ok(Selected {
                cluster_index: 0,
                cluster: cluster.cluster.as_ref(),
                user_index: 0,
                user,
            });
        };
        let (cluster_name, user_name) = context_refs(ctx);
        let (cluster_index, cluster) = clusters
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == cluster_name)
            .ok_or_else(|| KubeconfigError::SelectReference {
                path: path.to_path_buf(),
                field: format!("contexts[{ctx_index}].context.cluster"),
                kind: "cluster",
                name: cluster_name.to_string(),
                known: clusters.iter().map(|c| c.name.clone()).collect(),
            })?;
        let (user_index, user) = users
            .iter()
            .enumerate()
            .find(|(_, u)| u.name == user_name)
            .ok_or_else(|| KubeconfigError::SelectReference {
                path: path.to_path_buf(),
                field: format!("contexts[{ctx_index}].context.user"),
                kind: "user",
                name: user_name.to_string(),
                known: users.iter().map(|u| u.name.clone()).collect(),
            })?;
        Ok(Selected {
            cluster_index,
            cluster: cluster.cluster.as_ref(),
            user_index,
            user,
        })
    }

    /// Selects the context and resolves it; `read` returns the contents of a
    /// referenced node file (the caller decides how files are reached).
    fn resolve(
        &self,
        path: &Path,
        read: &mut ReadReferenced<'_>,
    ) -> Result<ResolvedKubeconfig, KubeconfigError> {
        let selected = self.select(path)?;
        let resolver = Resolver { path, read };
        resolver.resolve(&selected)
    }
}

/// Returns the contents of a referenced node file, given the field that
/// references it (for errors) and its node path.
type ReadReferenced<'a> = dyn FnMut(&str, &Path) -> Result<Vec<u8>, KubeconfigError> + 'a;

struct Resolver<'r> {
    path: &'r Path,
    read: &'r mut ReadReferenced<'r>,
}

impl Resolver<'_> {
    fn resolve(mut self, selected: &Selected<'_>) -> Result<ResolvedKubeconfig, KubeconfigError> {
        let no_cluster = Cluster::default();
        let cluster = selected.cluster.unwrap_or(&no_cluster);
        let cluster_field = format!("clusters[{}].cluster", selected.cluster_index);

        let server_field = format!("{cluster_field}.server");
        let server = nonempty(cluster.server.as_deref())
            .map(str::trim)
            .ok_or_else(|| KubeconfigError::ServerMissing {
                path: self.path.to_path_buf(),
                field: server_field.clone(),
            })?;
        if !server.to_ascii_lowercase().starts_with("https://") {
            return Err(KubeconfigError::ServerNotHttps {
                path: self.path.to_path_buf(),
                field: server_field,
                server: server.to_string(),
            });
        }

        let ca_pem = match pick(
            cluster.certificate_authority_data.as_deref(),
            cluster.certificate_authority.as_deref(),
        ) {
            Some(origin) => {
                let ca = self.load(
                    &cluster_field,
                    "certificate-authority",
                    origin,
                    "CA certificate",
                )?;
                self.check_certificate(&ca, "CA certificate")?;
                Some(ca.bytes)
            }
            None => None,
        };

        let auth = self.auth(selected.user_index, selected.user)?;
        Ok(ResolvedKubeconfig {
            path: self.path.to_path_buf(),
            server: server.to_string(),
            ca_pem,
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
            auth,
        })
    }

    /// A client certificate wins over a token when both are given: the API
    /// server's x509 authenticator runs before the token authenticator, so
    /// that is the identity the node would have anyway. `tokenFile` wins
    /// over `token`, as in client-go.
    fn auth(&mut self, index: usize, named: &NamedAuthInfo) -> Result<Auth, KubeconfigError> {
        let no_user = AuthInfo::default();
        let user = named.auth_info.as_ref().unwrap_or(&no_user);
        let user_field = format!("users[{index}].user");
        let cert = pick(
            user.client_certificate_data.as_deref(),
            user.client_certificate.as_deref(),
        );
        let key = pick(
            user.client_key_data.as_ref().map(|k| k.expose_secret()),
            user.client_key.as_deref(),
        );
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let cert = self.load(&user_field, "client-certificate", cert, "certificate")?;
                self.check_certificate(&cert, "client certificate")?;
                let key = self.load(&user_field, "client-key", key, "key")?;
                let parsed_key =
                    PKey::private_key_from_pem_passphrase(&key.bytes, b"").map_err(|e| {
                        KubeconfigError::ParseKey {
                            path: self.path.to_path_buf(),
                            field: key.field.clone(),
                            file: key.file.clone(),
                            reason: openssl_reason(&e),
                        }
                    })?;
                let matches = X509::from_pem(&cert.bytes)
                    .and_then(|c| c.public_key())
                    .map(|public| public.public_eq(&parsed_key))
                    .unwrap_or(false);
                if !matches {
                    return Err(KubeconfigError::MatchClientKey {
                        path: self.path.to_path_buf(),
                        cert_field: cert.field,
                        key_field: key.field,
                    });
                }
                Ok(Auth::ClientCert {
                    cert_pem: cert.bytes,
                    key_pem: key.bytes,
                    cert_path: cert.file,
                })
            }
            (Some(_), None) => Err(KubeconfigError::ClientCertIncomplete {
                path: self.path.to_path_buf(),
                field: user_field,
                present: "client-certificate",
                missing: "client-key",
            }),
            (None, Some(_)) => Err(KubeconfigError::ClientCertIncomplete {
                path: self.path.to_path_buf(),
                field: user_field,
                present: "client-key",
                missing: "client-certificate",
            }),
            (None, None) => self.token(&user_field, &named.name, user),
        }
    }

    fn token(
        &mut self,
        user_field: &str,
        name: &str,
        user: &AuthInfo,
    ) -> Result<Auth, KubeconfigError> {
        let (field, file, raw) = if let Some(file) = nonempty(user.token_file.as_deref()) {
            let field = format!("{user_field}.tokenFile");
            let node = self.reference(file);
            let bytes = (self.read)(&field, &node)?;
            match String::from_utf8(bytes) {
                Ok(text) => (field, Some(node), text),
                Err(_) => {
                    return Err(KubeconfigError::ParseToken {
                        path: self.path.to_path_buf(),
                        field,
                        file: Some(node),
                        problem: "is not UTF-8 text",
                    })
                }
            }
        } else if let Some(token) = nonempty(user.token.as_ref().map(|t| t.expose_secret())) {
            (format!("{user_field}.token"), None, token.to_string())
        } else {
            return Err(KubeconfigError::NoCredentials {
                path: self.path.to_path_buf(),
                field: user_field.to_string(),
                user: name.to_string(),
                uses_plugin: user.exec.is_some() || user.auth_provider.is_some(),
            });
        };
        let token = raw.trim();
        let problem = if token.is_empty() {
            Some("is empty")
        } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
            // It goes into an HTTP header; a second line or a stray space
            // would be sent as part of the token and rejected.
            Some("contains whitespace or non-ASCII characters inside it")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(KubeconfigError::ParseToken {
                path: self.path.to_path_buf(),
                field,
                file,
                problem,
            });
        }
        Ok(Auth::Token(token.to_string()))
    }

    /// Decodes `<parent>.<name>-data` or reads the file `<parent>.<name>`.
    fn load(
        &mut self,
        parent: &str,
        name: &str,
        origin: Origin<'_>,
        what: &'static str,
    ) -> Result<Loaded, KubeconfigError> {
        match origin {
            Origin::Data(data) => {
                let field = format!("{parent}.{name}-data");
                let bytes =
                    decode_base64(data).map_err(|problem| KubeconfigError::DecodeBase64 {
                        path: self.path.to_path_buf(),
                        field: field.clone(),
                        problem,
                        what,
                    })?;
                Ok(Loaded {
                    field,
                    file: None,
                    bytes,
                })
            }
            Origin::File(file) => {
                let field = format!("{parent}.{name}");
                let node = self.reference(file);
                let bytes = (self.read)(&field, &node)?;
                Ok(Loaded {
                    field,
                    file: Some(node),
                    bytes,
                })
            }
        }
    }

    /// Relative references are relative to the kubeconfig's directory.
    fn reference(&self, file: &str) -> PathBuf {
        let file = Path::new(file);
        if file.is_absolute() {
            file.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new("/")).join(file)
        }
    }

    fn check_certificate(
        &self,
        loaded: &Loaded,
        what: &'static str,
    ) -> Result<(), KubeconfigError> {
        let reason = match X509::stack_from_pem(&loaded.bytes) {
            Ok(certs) if !certs.is_empty() => return Ok(()),
            Ok(_) => "no BEGIN CERTIFICATE block".to_string(),
            Err(e) => openssl_reason(&e),
        };
        Err(KubeconfigError::ParseCertificate {
            path: self.path.to_path_buf(),
            field: loaded.field.clone(),
            file: loaded.file.clone(),
            reason,
            what,
        })
    }
}

/// Base64 as Go's `encoding/json` reads `[]byte` (standard alphabet, padded),
/// but tolerant of line breaks and spaces from wrapped `base64` output. The
/// problem never quotes the input: it may be a private key.
fn decode_base64(data: &str) -> Result<Vec<u8>, String> {
    let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| match e {
            base64::DecodeError::InvalidByte(offset, _) => {
                format!("invalid character at offset {offset}")
            }
            base64::DecodeError::InvalidLength(len) => {
                format!("{len} characters is not a valid base64 length; is it truncated?")
            }
            base64::DecodeError::InvalidLastSymbol(offset, _) => {
                format!("invalid last character at offset {offset}")
            }
            base64::DecodeError::InvalidPadding => "invalid padding".to_string(),
        })
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
