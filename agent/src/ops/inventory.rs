//! The node's certificate inventory: the agent's anchors and every node
//! certificate (`/etc/kubernetes/pki`, kubelet's pki dir, the client
//! certificates of kubeconfigs), read through [`HostRoot`]. `status` lists
//! it and `/metrics` exports it, so both always show the same certificates.
//!
//! Boundary: reads only; never writes, never judges health (that is
//! `status`').

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use openssl::x509::{X509Ref, X509};

use crate::config::KubeletSettings;
use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::HostRoot;
use crate::x509::cert::{CertInfo, Fingerprint};
use crate::x509::name::name_fields;

/// Directories whose certificates are listed, besides kubelet's pki dir.
pub const NODE_CERT_DIRS: [&str; 2] = ["/etc/kubernetes/pki", "/etc/kubernetes/certs"];

/// kubeadm's kubeconfigs (`*.conf`) live here.
pub const KUBECONFIG_DIR: &str = "/etc/kubernetes";

/// Subdirectories below a scanned directory (kubeadm has `pki/etcd/`).
const MAX_SCAN_DEPTH: usize = 4;

/// A node with more files than this in its pki dirs is not a node we understand.
const MAX_SCAN_FILES: usize = 2000;

/// Certificates and kubeconfigs are small; the cap keeps a stray large file
/// from being read whole.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

const PEM_CERT_MARKER: &[u8] = b"-----BEGIN CERTIFICATE-----";

// ---------------------------------------------------------------------------
// Facts
// ---------------------------------------------------------------------------

/// Lists the agent's anchors: each one's node path and certificate, or why
/// they cannot be listed. The trust job's store provides it.
pub type AnchorList = Arc<dyn Fn() -> Result<Vec<(PathBuf, CertInfo)>, String> + Send + Sync>;

/// What the inventory looks at.
#[derive(Clone)]
pub struct InventorySources {
    pub host: HostRoot,
    pub anchors: AnchorList,
    /// Whether a file name of kubelet's pki dir is a timestamped
    /// certificate file (listed through its `-current.pem` link instead).
    pub superseded: fn(&str) -> bool,
    /// Node paths of the directories whose certificates are listed.
    pub cert_dirs: Vec<PathBuf>,
    /// Node path of kubelet's pki dir: its superseded timestamped files are
    /// skipped, the ones in use are listed through their `-current.pem` links.
    pub pki_dir: PathBuf,
    /// Node paths of kubelet's kubeconfigs (besides kubeadm's `*.conf`).
    pub kubeconfigs: Vec<PathBuf>,
}

impl std::fmt::Debug for InventorySources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventorySources")
            .field("host", &self.host)
            .field("cert_dirs", &self.cert_dirs)
            .field("pki_dir", &self.pki_dir)
            .field("kubeconfigs", &self.kubeconfigs)
            .finish_non_exhaustive()
    }
}

impl InventorySources {
    /// The node's certificate directories, kubelet's pki dir and kubeconfigs.
    pub fn for_node(
        host: HostRoot,
        anchors: AnchorList,
        superseded: fn(&str) -> bool,
        kubelet: &KubeletSettings,
    ) -> Self {
        let mut cert_dirs: Vec<PathBuf> = NODE_CERT_DIRS.iter().map(PathBuf::from).collect();
        if !cert_dirs.contains(&kubelet.pki_dir) {
            cert_dirs.push(kubelet.pki_dir.clone());
        }
        Self {
            host,
            anchors,
            superseded,
            cert_dirs,
            pki_dir: kubelet.pki_dir.clone(),
            kubeconfigs: vec![
                kubelet.kubeconfig.clone(),
                kubelet.bootstrap_kubeconfig.clone(),
            ],
        }
    }
}

/// The facts about one certificate that status and metrics show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// `(short name, value)` in name order: `CN`, `O`, `OU`, `C`, `ST`, `L`...
    pub subject_fields: Vec<(String, String)>,
    pub issuer_fields: Vec<(String, String)>,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial_hex: String,
    /// Decimal, as x509-certificate-exporter labels it.
    pub serial_decimal: String,
    pub not_before: i64,
    pub not_after: i64,
    pub fingerprint: Fingerprint,
}

impl CertSummary {
    pub fn of(cert: &X509Ref) -> Option<Self> {
        let der = cert.to_der().ok()?;
        let info = CertInfo::from_der(&der).ok()?;
        let serial_decimal = cert
            .serial_number()
            .to_bn()
            .ok()?
            .to_dec_str()
            .ok()?
            .to_string();
        Some(Self {
            subject_fields: name_fields(cert.subject_name()),
            issuer_fields: name_fields(cert.issuer_name()),
            subject: info.subject,
            issuer: info.issuer,
            serial_hex: info.serial,
            serial_decimal,
            not_before: info.not_before,
            not_after: info.not_after,
            fingerprint: info.fingerprint,
        })
    }

    /// The first value of field `short` (`CN`, `O`, ...) of the subject.
    pub fn subject_field(&self, short: &str) -> Option<&str> {
        field(&self.subject_fields, short)
    }

    pub fn issuer_field(&self, short: &str) -> Option<&str> {
        field(&self.issuer_fields, short)
    }
}

fn field<'a>(fields: &'a [(String, String)], short: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == short)
        .map(|(_, v)| v.as_str())
}

/// One of the agent's anchors in the trust store.
#[derive(Debug, Clone)]
pub struct AnchorFact {
    /// Node path of the anchor file.
    pub path: PathBuf,
    pub cert: CertSummary,
    pub info: CertInfo,
}

/// Where a listed certificate was found in a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    /// `user`, as x509-certificate-exporter's `embedded_kind`.
    pub kind: &'static str,
    /// The user's name, as its `embedded_key`.
    pub name: String,
}

/// What reading one listed certificate gave.
#[derive(Debug, Clone)]
pub enum NodeCertRead {
    Ok(CertSummary),
    /// A kubeconfig refers to it, and it does not exist.
    Missing {
        referenced_by: PathBuf,
    },
    Unreadable(String),
}

/// One listed node certificate.
#[derive(Debug, Clone)]
pub struct NodeCertFact {
    /// Node path of the file (the kubeconfig, for an embedded certificate).
    pub path: PathBuf,
    pub embedded: Option<Embedded>,
    /// 1-based position of the certificate in its file or field.
    pub index: usize,
    pub read: NodeCertRead,
}

impl NodeCertFact {
    /// The CERTIFICATE column: the node path, `#user:<name>` for a kubeconfig's
    /// embedded client certificate, ` [n]` for the n-th one of a file.
    pub fn name(&self) -> String {
        let mut s = self.path.display().to_string();
        if let Some(e) = &self.embedded {
            let _ = write!(s, "#{}:{}", e.kind, e.name);
        }
        if self.index > 1 {
            let _ = write!(s, " [{}]", self.index);
        }
        s
    }
}

/// The certificates status and metrics list.
#[derive(Debug, Clone)]
pub struct CertInventory {
    pub anchors: Result<BTreeMap<Fingerprint, AnchorFact>, String>,
    pub node_certs: Vec<NodeCertFact>,
}

/// The agent's anchors and every node certificate: what `status` lists and
/// `/metrics` exports.
pub fn gather_certificates(src: &InventorySources) -> CertInventory {
    let anchors = (src.anchors)().map(|list| {
        list.into_iter()
            .filter_map(|(path, info)| {
                let cert = X509::from_pem(info.pem.as_bytes()).ok()?;
                Some((
                    info.fingerprint,
                    AnchorFact {
                        path,
                        cert: CertSummary::of(&cert)?,
                        info,
                    },
                ))
            })
            .collect()
    });
    CertInventory {
        anchors,
        node_certs: gather_node_certs(src),
    }
}

fn gather_node_certs(src: &InventorySources) -> Vec<NodeCertFact> {
    let mut files: BTreeMap<PathBuf, Vec<NodeCertFact>> = BTreeMap::new();
    let mut budget = MAX_SCAN_FILES;
    for dir in &src.cert_dirs {
        let skip = (*dir == src.pki_dir).then_some(src.superseded);
        scan_dir(&src.host, dir, 0, skip, &mut budget, &mut files);
    }
    // kubeconfigs: kubeadm's *.conf, and kubelet's own (configured paths).
    let mut kubeconfigs: BTreeSet<PathBuf> = BTreeSet::new();
    if let Ok(dir) = src.host.resolve(Path::new(KUBECONFIG_DIR)) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".conf") {
                    kubeconfigs.insert(Path::new(KUBECONFIG_DIR).join(name));
                }
            }
        }
    }
    kubeconfigs.extend(src.kubeconfigs.iter().cloned());
    let mut embedded = Vec::new();
    for kc in &kubeconfigs {
        read_kubeconfig_certs(&src.host, kc, &mut files, &mut embedded);
    }
    let mut out: Vec<NodeCertFact> = files.into_values().flatten().collect();
    out.extend(embedded);
    out
}

fn scan_dir(
    host: &HostRoot,
    dir: &Path,
    depth: usize,
    skip: Option<fn(&str) -> bool>,
    budget: &mut usize,
    files: &mut BTreeMap<PathBuf, Vec<NodeCertFact>>,
) {
    let Ok(host_dir) = host.resolve(dir) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&host_dir) else {
        return;
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let name_str = name.to_string_lossy();
        // Private keys hold no certificate: not even read.
        if name_str.starts_with(fsutil::TEMP_PREFIX)
            || name_str.ends_with(".key")
            || skip.is_some_and(|superseded| superseded(&name_str))
        {
            continue;
        }
        let node_path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(host_dir.join(&name)) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_SCAN_DEPTH {
                scan_dir(host, &node_path, depth + 1, skip, budget, files);
            }
            continue;
        }
        if let Some(facts) = read_cert_file(host, &node_path, None) {
            files.insert(node_path, facts);
        }
    }
}

/// The certificates of one file; `None` if it holds no PEM certificate at
/// all (a key, a README), or is not a regular file. A dangling link, or a
/// file that `referenced_by` names and that is missing, is `Missing`.
fn read_cert_file(
    host: &HostRoot,
    node_path: &Path,
    referenced_by: Option<&Path>,
) -> Option<Vec<NodeCertFact>> {
    let one = |read| {
        Some(vec![NodeCertFact {
            path: node_path.to_path_buf(),
            embedded: None,
            index: 1,
            read,
        }])
    };
    let host_path = match host.resolve(node_path) {
        Ok(p) => p,
        Err(e) => return one(NodeCertRead::Unreadable(e.to_string())),
    };
    let missing = |by: &Path| {
        one(NodeCertRead::Missing {
            referenced_by: by.to_path_buf(),
        })
    };
    match std::fs::metadata(&host_path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A `-current.pem` link that dangles is missing; so is a file a
            // kubeconfig names.
            let dangling = std::fs::symlink_metadata(host.resolve_nofollow(node_path).ok()?)
                .is_ok_and(|m| m.file_type().is_symlink());
            return match referenced_by {
                Some(by) => missing(by),
                None if dangling => missing(node_path),
                None => None,
            };
        }
        Err(e) => return one(NodeCertRead::Unreadable(e.to_string())),
    }
    let bytes = match fsutil::read_limited(&host_path, MAX_FILE_BYTES) {
        Ok(b) => b,
        Err(e) => return one(NodeCertRead::Unreadable(e.to_string())),
    };
    if !contains(&bytes, PEM_CERT_MARKER) {
        return match referenced_by {
            Some(_) => one(NodeCertRead::Unreadable(
                "holds no PEM certificate".to_string(),
            )),
            None => None,
        };
    }
    Some(certs_of_pem(&bytes, node_path, None))
}

fn certs_of_pem(bytes: &[u8], path: &Path, embedded: Option<Embedded>) -> Vec<NodeCertFact> {
    let fact = |index, read| NodeCertFact {
        path: path.to_path_buf(),
        embedded: embedded.clone(),
        index,
        read,
    };
    match X509::stack_from_pem(bytes) {
        Ok(stack) if !stack.is_empty() => stack
            .iter()
            .enumerate()
            .map(|(i, c)| {
                fact(
                    i + 1,
                    CertSummary::of(c).map_or_else(
                        || NodeCertRead::Unreadable("unreadable certificate fields".into()),
                        NodeCertRead::Ok,
                    ),
                )
            })
            .collect(),
        Ok(_) => vec![fact(
            1,
            NodeCertRead::Unreadable("holds no PEM certificate".into()),
        )],
        Err(e) => vec![fact(
            1,
            NodeCertRead::Unreadable(format!(
                "damaged PEM certificate ({})",
                crate::x509::openssl_reason(&e)
            )),
        )],
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Client certificates of a kubeconfig: embedded ones become entries of
/// their own, referenced files join `files` (as `Missing` when absent).
fn read_kubeconfig_certs(
    host: &HostRoot,
    node_path: &Path,
    files: &mut BTreeMap<PathBuf, Vec<NodeCertFact>>,
    embedded: &mut Vec<NodeCertFact>,
) {
    let Ok(host_path) = host.resolve(node_path) else {
        return;
    };
    let bytes = match fsutil::read_limited(&host_path, MAX_FILE_BYTES) {
        Ok(b) => b,
        Err(FsError::Open { ref source, .. }) if source.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            embedded.push(NodeCertFact {
                path: node_path.to_path_buf(),
                embedded: None,
                index: 1,
                read: NodeCertRead::Unreadable(e.to_string()),
            });
            return;
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let Ok(config) = crate::k8s::kubeconfig::parse(&text, node_path) else {
        // Not a kubeconfig (another *.conf): nothing to list.
        return;
    };
    let dir = node_path.parent().unwrap_or(Path::new("/"));
    for user in config.users() {
        let Some(auth) = &user.auth_info else {
            continue;
        };
        if let Some(data) = auth
            .client_certificate_data
            .as_deref()
            .filter(|d| !d.is_empty())
        {
            let e = Embedded {
                kind: "user",
                name: user.name.clone(),
            };
            let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(compact) {
                Ok(pem) => embedded.extend(certs_of_pem(&pem, node_path, Some(e))),
                Err(err) => embedded.push(NodeCertFact {
                    path: node_path.to_path_buf(),
                    embedded: Some(e),
                    index: 1,
                    read: NodeCertRead::Unreadable(format!(
                        "client-certificate-data is not base64 ({err})"
                    )),
                }),
            }
        } else if let Some(file) = auth.client_certificate.as_deref().filter(|f| !f.is_empty()) {
            add_referenced(host, &dir.join(file), node_path, files);
        }
    }
    for cluster in config.clusters() {
        if let Some(file) = cluster
            .cluster
            .as_ref()
            .and_then(|c| c.certificate_authority.as_deref())
            .filter(|f| !f.is_empty())
        {
            add_referenced(host, &dir.join(file), node_path, files);
        }
    }
}

/// A certificate file a kubeconfig names, unless it is listed already.
fn add_referenced(
    host: &HostRoot,
    referenced: &Path,
    kubeconfig: &Path,
    files: &mut BTreeMap<PathBuf, Vec<NodeCertFact>>,
) {
    if let std::collections::btree_map::Entry::Vacant(slot) = files.entry(referenced.to_path_buf())
    {
        if let Some(facts) = read_cert_file(host, referenced, Some(kubeconfig)) {
            slot.insert(facts);
        }
    }
}
