//! What can be wrong with a kubeconfig, each error naming the file, the
//! field path and the fix. Never a token or key byte.

use std::path::PathBuf;

use crate::node::fsutil::FsError;
use crate::node::hostroot::HostRootError;

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

pub(super) fn one_of(known: &[String], what: &str) -> String {
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

pub(super) fn origin(field: &str, file: &Option<PathBuf>) -> String {
    match file {
        Some(file) => format!("{field} ({})", file.display()),
        None => field.to_string(),
    }
}
