//! The edge of [`crate::k8s::kubeconfig`]: read a kubeconfig and every
//! file it references through the [`HostRoot`] (with size limits), pick the
//! context kubelet would use, decode the inline `*-data` fields and check
//! that certificates and keys parse.
//!
//! Boundary: reads only; never writes, never talks to the API server, runs
//! no exec or auth-provider plugin.

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use kube::config::{AuthInfo, Cluster, NamedAuthInfo, NamedContext};
use openssl::pkey::PKey;
use openssl::x509::X509;
use secrecy::ExposeSecret;

use super::{
    parse, Auth, Kubeconfig, KubeconfigError, ResolvedKubeconfig, MAX_KUBECONFIG_BYTES,
    MAX_REFERENCED_BYTES,
};
use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::{HostRoot, HostRootError};
use crate::x509::openssl_reason;

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
pub(super) struct Selected<'a> {
    cluster_index: usize,
    /// `None`: the entry has `cluster: null` or none at all.
    cluster: Option<&'a Cluster>,
    user_index: usize,
    pub(super) user: &'a NamedAuthInfo,
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
pub(super) fn nonempty(value: Option<&str>) -> Option<&str> {
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
    pub(super) fn select(&self, path: &Path) -> Result<Selected<'_>, KubeconfigError> {
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
    pub(super) fn resolve(
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
