//! `node-cert-agent status`: what an operator in a node shell needs to know
//! about this node's trust and identity, with or without the daemon running.
//!
//! Three steps, so the middle one can be tested with fixed data:
//! 1. [`gather`] reads the node (through [`HostRoot`]) and the agent's state
//!    directory into [`Facts`]; it never fails as a whole, every unreadable
//!    part is recorded as such.
//! 2. [`build_report`] turns facts into a [`StatusReport`], including the
//!    health verdict ([`StatusReport::problems`]). Pure.
//! 3. [`render_table`] and [`render_json`] print it. Pure.
//!
//! The daemon publishes its own view (last pass, last error, next renewal)
//! in `<state-dir>/daemon-status.json` ([`DaemonStatus`]); see
//! [`liveness`] for how `status` decides whether that daemon still runs.
//! The certificate inventory ([`gather_certificates`]) is shared with the
//! metrics endpoint, so `/metrics` lists exactly the certificates `status` does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use openssl::x509::{X509NameRef, X509Ref, X509};
use serde::{Deserialize, Serialize};

use crate::config::{KubeletMode, Settings};
use crate::kubelet::manager::{
    DEFAULT_BOOTSTRAP_KUBECONFIG, DEFAULT_KUBECONFIG, DEFAULT_KUBELET_CONFIG, DEFAULT_PKI_DIR,
};
use crate::kubelet::renewal;
use crate::kubelet::store::CertKind;
use crate::node::distro::TrustStoreLayout;
use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::HostRoot;
use crate::trust::plan::{self, SourceInput};
use crate::trust::sources::{read_source, SourceSpec};
use crate::trust::state::{self, CaState, STATE_FILE};
use crate::trust::store::TrustStore;
use crate::trust::validate::{Finding, FindingKind, Severity};
use crate::x509::cert::{rfc3339, CertInfo, Fingerprint};

/// The daemon's view, in the state directory.
pub const DAEMON_STATUS_FILE: &str = "daemon-status.json";
/// Version of the `--output json` schema and of [`DaemonStatus`]. Fields are
/// only ever added within a version.
pub const SCHEMA_VERSION: u32 = 1;
/// Held (flock, exclusive) by the running daemon for its whole life, in the
/// state directory. The kernel drops it when the process ends, however it
/// ends, so `status` in any pid namespace (a node shell looking at a pod's
/// agent) tells a live daemon without a heartbeat.
pub const DAEMON_LOCK_FILE: &str = "daemon.lock";
/// Two readings of the kernel's boot time this close are the same boot.
const BOOT_TIME_SLACK_SECS: i64 = 2;
/// A certificate in the last tenth of its lifetime, with nothing that renews
/// it, makes the node unhealthy.
pub const EXPIRING_FRACTION: f64 = 0.10;
/// Directories whose certificates are listed, besides kubelet's pki dir.
pub const NODE_CERT_DIRS: [&str; 2] = ["/etc/kubernetes/pki", "/etc/kubernetes/certs"];
/// kubeadm's kubeconfigs (`*.conf`) live here.
pub const KUBECONFIG_DIR: &str = "/etc/kubernetes";
/// kubeadm's names for kubelet's kubeconfigs, checked besides the configured ones.
pub const KUBEADM_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
pub const KUBEADM_BOOTSTRAP_KUBECONFIG: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
/// Subdirectories below a scanned directory (kubeadm has `pki/etcd/`).
const MAX_SCAN_DEPTH: usize = 4;
/// A node with more files than this in its pki dirs is not a node we understand.
const MAX_SCAN_FILES: usize = 2000;
/// Certificates and kubeconfigs are small; the cap keeps a stray large file
/// from being read whole.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
const PEM_CERT_MARKER: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Exit code of `status` when everything is healthy.
pub const EXIT_HEALTHY: u8 = 0;
/// Exit code when something is expired, invalid, failing or expiring unrenewed.
pub const EXIT_UNHEALTHY: u8 = 1;
/// Exit code when `status` itself could not run (bad flags or config).
pub const EXIT_STATUS_ERROR: u8 = 2;

// ---------------------------------------------------------------------------
// The daemon's status file
// ---------------------------------------------------------------------------

/// How the agent is deployed, as the daemon knows it (host root `/` or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    #[default]
    Host,
    Pod,
}

impl AgentMode {
    pub fn of_host_root(root: &Path) -> Self {
        if root == Path::new("/") {
            Self::Host
        } else {
            Self::Pod
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Pod => "pod",
        }
    }
}

/// What the running daemon says about itself; written atomically at start,
/// after every CA pass and kubelet pass, and once more (with `stoppedAt`)
/// when it stops cleanly. Times are Unix seconds; `heartbeat_at` is when it
/// was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub schema_version: u32,
    pub version: String,
    pub mode: AgentMode,
    pub process: ProcessIdentity,
    pub started_at: i64,
    pub heartbeat_at: i64,
    #[serde(default)]
    pub stopped_at: Option<i64>,
    pub ca_job: bool,
    pub kubelet_job: bool,
    #[serde(default)]
    pub last_ca_pass: Option<i64>,
    #[serde(default)]
    pub last_ca_error: Option<String>,
    #[serde(default)]
    pub last_kubelet_pass: Option<i64>,
    #[serde(default)]
    pub last_kubelet_error: Option<String>,
    #[serde(default)]
    pub next_renewal: Option<i64>,
    #[serde(default)]
    pub metrics_address: Option<String>,
    /// RenewRevocation entries that matched a kubelet certificate in the
    /// last kubelet pass (renewed for, or unfixable).
    #[serde(default)]
    pub revocation_matches: Vec<String>,
}

/// Enough to recognise a process again: its pid is only meaningful in its
/// pid namespace, and only until it exits (pids are reused), so its start
/// time and the kernel's boot time come with it. (The boot time, `btime` of
/// `/proc/stat`, rather than `boot_id`: systemd-nspawn overmounts `boot_id`
/// per container, and a hardened unit may see the kernel's instead.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessIdentity {
    pub pid: u32,
    /// `readlink /proc/self/ns/pid`, e.g. `pid:[4026531836]`.
    pub pid_namespace: Option<String>,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
    pub start_ticks: Option<u64>,
    /// `btime` of `/proc/stat`: the kernel's boot time, Unix seconds.
    pub boot_time: Option<i64>,
}

impl ProcessIdentity {
    /// This process, as `/proc` shows it.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|p| p.display().to_string()),
            start_ticks: start_ticks_of(pid),
            boot_time: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_boot_time(&s)),
        }
    }
}

/// The `btime` line of `/proc/stat`.
fn parse_boot_time(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Start time of `pid` in this process's pid namespace, if it exists.
pub fn start_ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards: field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot write the daemon status file {path}: {source}")]
    WriteDaemonStatus { path: PathBuf, source: FsError },
    #[error("cannot encode the daemon status for {path}: {source}")]
    EncodeDaemonStatus {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot encode the status report as JSON: {source}")]
    EncodeReport { source: serde_json::Error },
}

/// Writes `status` to `path` (a process path) atomically, mode 0644: it
/// holds no secret, and the state directory (0700) guards it anyway.
pub fn write_daemon_status(path: &Path, status: &DaemonStatus) -> Result<(), StatusError> {
    let mut bytes =
        serde_json::to_vec_pretty(status).map_err(|source| StatusError::EncodeDaemonStatus {
            path: path.into(),
            source,
        })?;
    bytes.push(b'\n');
    fsutil::write_atomic(path, &bytes, 0o644).map_err(|source| StatusError::WriteDaemonStatus {
        path: path.into(),
        source,
    })
}

/// Whether the daemon that wrote a status file runs, and how that was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub running: bool,
    /// `pid`, `lock`, `stopped` or `none`.
    pub check: &'static str,
    pub detail: String,
}

/// The daemon's lock ([`DAEMON_LOCK_FILE`]) as `status` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonLock {
    /// A process holds it: the daemon runs.
    Held,
    /// Nobody holds it: no daemon runs.
    Free,
    /// It cannot be tested (missing, unreadable): why.
    Unknown(String),
}

/// Tests the daemon's lock at `path` without waiting (a shared lock, dropped
/// at once).
pub fn probe_daemon_lock(path: &Path) -> DaemonLock {
    use nix::fcntl::{Flock, FlockArg};
    let file = match fsutil::open_lock_file(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return DaemonLock::Unknown(format!("{} does not exist", path.display()))
        }
        Err(e) => return DaemonLock::Unknown(format!("cannot open {}: {e}", path.display())),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => DaemonLock::Free,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => DaemonLock::Held,
        Err((_, e)) => {
            DaemonLock::Unknown(format!("cannot test the lock on {}: {e}", path.display()))
        }
    }
}

/// Takes the daemon's lock at `path` (created 0644 if missing) without
/// waiting: `Ok(None)` if another process holds it.
pub fn try_daemon_lock(path: &Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, String> {
    use nix::fcntl::{Flock, FlockArg};
    let file = fsutil::open_lock_file(path, true)
        .map_err(|e| format!("cannot open the daemon lock {}: {e}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(format!(
            "cannot take the daemon lock {}: {e}",
            path.display()
        )),
    }
}

/// Decides whether the daemon behind `d` is alive. Pure.
///
/// - It wrote `stoppedAt` on a clean stop: not running.
/// - Same pid namespace and boot as this process (host mode seen from a node
///   shell, or `kubectl exec` into the agent's pod): authoritative, by pid
///   *and* start time, so a reused pid is not mistaken for the daemon.
///   `pid_start_ticks` is the start time of `d`'s pid as this process sees it.
/// - Otherwise (a pod's agent seen from a node shell: its pid means nothing
///   here): the daemon's lock, which the running daemon holds.
pub fn liveness(
    d: &DaemonStatus,
    me: &ProcessIdentity,
    pid_start_ticks: Option<u64>,
    lock: &DaemonLock,
) -> Liveness {
    if let Some(at) = d.stopped_at {
        return Liveness {
            running: false,
            check: "stopped",
            detail: format!("stopped at {}", rfc3339(at)),
        };
    }
    // `btime` is derived from the clock, so a clock step moves it a little;
    // a mismatch only means falling back to the lock.
    let same_boot = match (d.process.boot_time, me.boot_time) {
        (Some(a), Some(b)) => (a - b).abs() <= BOOT_TIME_SLACK_SECS,
        _ => false,
    };
    let same_namespace = d.process.pid_namespace.is_some()
        && d.process.pid_namespace == me.pid_namespace
        && same_boot;
    if same_namespace && d.process.start_ticks.is_some() {
        let alive = pid_start_ticks.is_some() && pid_start_ticks == d.process.start_ticks;
        return Liveness {
            running: alive,
            check: "pid",
            detail: if alive {
                format!("pid {} is alive", d.process.pid)
            } else {
                format!(
                    "pid {} is gone (the daemon exited without stopping cleanly)",
                    d.process.pid
                )
            },
        };
    }
    let pid = d.process.pid;
    match lock {
        DaemonLock::Held => Liveness {
            running: true,
            check: "lock",
            detail: format!("pid {pid} in another pid namespace; it holds {DAEMON_LOCK_FILE}"),
        },
        DaemonLock::Free => Liveness {
            running: false,
            check: "lock",
            detail: format!(
                "pid {pid} in another pid namespace is gone: nothing holds {DAEMON_LOCK_FILE} \
                 (the daemon exited without stopping cleanly)"
            ),
        },
        DaemonLock::Unknown(why) => Liveness {
            running: false,
            check: "none",
            detail: format!(
                "pid {pid} in another pid namespace; cannot tell whether it runs: {why}"
            ),
        },
    }
}

// ---------------------------------------------------------------------------
// What to look at
// ---------------------------------------------------------------------------

/// Node paths of kubelet's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletPaths {
    pub bootstrap_kubeconfig: PathBuf,
    pub kubeconfig: PathBuf,
    pub pki_dir: PathBuf,
    pub kubelet_config: PathBuf,
}

/// Everything [`gather`] looks at, from the settings.
#[derive(Debug, Clone)]
pub struct StatusSources {
    pub host: HostRoot,
    /// Node path of the agent's state directory.
    pub state_dir: PathBuf,
    /// The trust-store layout, or why it is unknown.
    pub layout: Result<TrustStoreLayout, String>,
    /// The CA inputs (process paths), read again to show current findings.
    pub sources: Vec<SourceSpec>,
    pub max_certificates: usize,
    pub kubelet: KubeletPaths,
    pub node_name: Option<String>,
    /// The agent's kubelet job is on (configured, or `auto` with a kubeconfig).
    pub kubelet_job: bool,
    /// ... and it renews the serving certificate too.
    pub serving_job: bool,
    pub defer_to_kubelet_rotation: bool,
    /// Node paths of the directories whose certificates are listed.
    pub cert_dirs: Vec<PathBuf>,
}

impl StatusSources {
    /// What `settings` point at, with the kubelet defaults `run` uses.
    pub fn from_settings(
        settings: &Settings,
        host: HostRoot,
        layout: Result<TrustStoreLayout, String>,
    ) -> Self {
        let k = &settings.kubelet;
        let kubelet = KubeletPaths {
            bootstrap_kubeconfig: k
                .bootstrap_kubeconfig
                .clone()
                .unwrap_or_else(|| DEFAULT_BOOTSTRAP_KUBECONFIG.into()),
            kubeconfig: k
                .kubeconfig
                .clone()
                .unwrap_or_else(|| DEFAULT_KUBECONFIG.into()),
            pki_dir: k.pki_dir.clone().unwrap_or_else(|| DEFAULT_PKI_DIR.into()),
            kubelet_config: k
                .kubelet_config
                .clone()
                .unwrap_or_else(|| DEFAULT_KUBELET_CONFIG.into()),
        };
        let exists = |p: &Path| host.resolve(p).is_ok_and(|h| h.exists());
        let kubelet_job = match settings.kubelet_mode {
            KubeletMode::On => true,
            KubeletMode::Off => false,
            KubeletMode::Auto => {
                exists(&kubelet.bootstrap_kubeconfig) || exists(&kubelet.kubeconfig)
            }
        };
        let node_name = settings.node_name.clone().or_else(|| {
            host.resolve(Path::new("/etc/hostname"))
                .ok()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        });
        let mut cert_dirs: Vec<PathBuf> = NODE_CERT_DIRS.iter().map(PathBuf::from).collect();
        if !cert_dirs.contains(&kubelet.pki_dir) {
            cert_dirs.push(kubelet.pki_dir.clone());
        }
        Self {
            state_dir: settings.state_dir.clone(),
            layout,
            sources: settings.sources.clone(),
            max_certificates: settings.max_certificates,
            kubelet_job,
            serving_job: kubelet_job && k.serving.as_ref().is_some_and(|s| s.enabled),
            defer_to_kubelet_rotation: k.defer_to_kubelet_rotation.unwrap_or(true),
            node_name,
            kubelet,
            cert_dirs,
            host,
        }
    }

    /// The state directory as this process sees it.
    pub fn state_dir_path(&self) -> Result<PathBuf, String> {
        self.host
            .resolve(&self.state_dir)
            .map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Facts
// ---------------------------------------------------------------------------

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

fn name_fields(name: &X509NameRef) -> Vec<(String, String)> {
    name.entries()
        .map(|e| {
            (
                e.object().nid().short_name().unwrap_or("?").to_string(),
                e.data()
                    .to_string()
                    .unwrap_or_else(|_| "<unprintable>".to_string()),
            )
        })
        .collect()
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

/// kubelet's current certificate of one kind.
#[derive(Debug, Clone)]
pub struct KubeletCertFact {
    /// Node path of `<prefix>-current.pem`.
    pub link: PathBuf,
    /// Node path of the file it points at, its first certificate, and
    /// whether the key in it matches; `Ok(None)` if there is none.
    pub current: Result<Option<(PathBuf, CertSummary, bool)>, String>,
}

#[derive(Debug, Clone)]
pub struct KubeletFacts {
    pub node_name: Option<String>,
    /// Node path of the bootstrap kubeconfig found, if any.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Node path of kubelet's kubeconfig found, if any.
    pub kubeconfig: Option<PathBuf>,
    pub kubelet_config: PathBuf,
    pub rotate_certificates: bool,
    pub server_tls_bootstrap: bool,
    pub agent_job: bool,
    pub serving_job: bool,
    pub defer_to_kubelet_rotation: bool,
    pub client: KubeletCertFact,
    pub serving: KubeletCertFact,
}

/// Everything `status` read, unjudged.
#[derive(Debug)]
pub struct Facts {
    pub now: i64,
    pub version: String,
    /// Node path of the state directory.
    pub state_dir: PathBuf,
    pub daemon: Result<Option<DaemonStatus>, String>,
    /// Decided by [`liveness`] when there is a daemon status file.
    pub liveness: Option<Liveness>,
    pub ca_state: Result<CaState, String>,
    pub inputs: Vec<SourceInput>,
    pub max_certificates: usize,
    pub layout: Result<TrustStoreLayout, String>,
    pub bundle: Result<BTreeSet<Fingerprint>, String>,
    pub inventory: CertInventory,
    pub kubelet: KubeletFacts,
}

// ---------------------------------------------------------------------------
// Gathering (I/O)
// ---------------------------------------------------------------------------

/// Reads everything `status` shows. Never fails: what cannot be read is a fact too.
pub fn gather(src: &StatusSources, now: i64) -> Facts {
    let state_dir = src.state_dir_path();
    let daemon = state_dir
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|d| read_daemon_status(&d.join(DAEMON_STATUS_FILE)));
    let liveness = match &daemon {
        Ok(Some(d)) => Some(liveness(
            d,
            &ProcessIdentity::current(),
            start_ticks_of(d.process.pid),
            &state_dir.as_ref().map_or_else(
                |e| DaemonLock::Unknown(e.clone()),
                |dir| probe_daemon_lock(&dir.join(DAEMON_LOCK_FILE)),
            ),
        )),
        _ => None,
    };
    let ca_state = state_dir
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|d| state::load(&d.join(STATE_FILE)).map_err(|e| e.to_string()));
    let bundle = match &src.layout {
        Ok(layout) => TrustStore::new(src.host.clone(), layout.clone())
            .bundle_fingerprints()
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    Facts {
        now,
        version: env!("CARGO_PKG_VERSION").to_string(),
        state_dir: src.state_dir.clone(),
        daemon,
        liveness,
        ca_state,
        inputs: src.sources.iter().map(|s| read_source(s, now)).collect(),
        max_certificates: src.max_certificates,
        layout: src.layout.clone(),
        bundle,
        inventory: gather_certificates(src),
        kubelet: gather_kubelet(src),
    }
}

fn read_daemon_status(path: &Path) -> Result<Option<DaemonStatus>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{} is not a daemon status file: {e}", path.display()))
}

/// The agent's anchors and every node certificate: what `status` lists and
/// `/metrics` exports.
pub fn gather_certificates(src: &StatusSources) -> CertInventory {
    let anchors = match &src.layout {
        Ok(layout) => {
            let store = TrustStore::new(src.host.clone(), layout.clone());
            store
                .installed()
                .map(|installed| {
                    installed
                        .certs
                        .iter()
                        .filter_map(|(fp, info)| {
                            let cert = X509::from_pem(info.pem.as_bytes()).ok()?;
                            Some((
                                *fp,
                                AnchorFact {
                                    path: store.anchor_node_path(fp),
                                    cert: CertSummary::of(&cert)?,
                                    info: info.clone(),
                                },
                            ))
                        })
                        .collect()
                })
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.clone()),
    };
    CertInventory {
        anchors,
        node_certs: gather_node_certs(src),
    }
}

fn gather_node_certs(src: &StatusSources) -> Vec<NodeCertFact> {
    let mut files: BTreeMap<PathBuf, Vec<NodeCertFact>> = BTreeMap::new();
    let mut budget = MAX_SCAN_FILES;
    for dir in &src.cert_dirs {
        let skip_rotated = *dir == src.kubelet.pki_dir;
        scan_dir(&src.host, dir, 0, skip_rotated, &mut budget, &mut files);
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
    kubeconfigs.insert(src.kubelet.kubeconfig.clone());
    kubeconfigs.insert(src.kubelet.bootstrap_kubeconfig.clone());
    let mut embedded = Vec::new();
    for kc in &kubeconfigs {
        read_kubeconfig_certs(&src.host, kc, &mut files, &mut embedded);
    }
    let mut out: Vec<NodeCertFact> = files.into_values().flatten().collect();
    out.extend(embedded);
    out
}

/// Whether `name` is one of kubelet's timestamped certificate files
/// (`kubelet-client-2026-01-02-03-04-05.pem`): superseded ones stay on disk,
/// and the one in use is listed through its `-current.pem` link.
fn is_rotated_kubelet_file(name: &str) -> bool {
    [CertKind::Client, CertKind::Serving].iter().any(|k| {
        name.strip_prefix(k.prefix())
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".pem"))
            .is_some_and(|stamp| {
                stamp.len() == 19 && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            })
    })
}

fn scan_dir(
    host: &HostRoot,
    dir: &Path,
    depth: usize,
    skip_rotated: bool,
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
            || (skip_rotated && is_rotated_kubelet_file(&name_str))
        {
            continue;
        }
        let node_path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(host_dir.join(&name)) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_SCAN_DEPTH {
                scan_dir(host, &node_path, depth + 1, skip_rotated, budget, files);
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
                crate::x509::cert::openssl_reason(&e)
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
    let Ok(config) = crate::kubelet::kubeconfig::parse(&text, node_path) else {
        // Not a kubeconfig (another *.conf): nothing to list.
        return;
    };
    let dir = node_path.parent().unwrap_or(Path::new("/"));
    for user in &config.users {
        if let Some(data) = user
            .user
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
        } else if let Some(file) = user
            .user
            .client_certificate
            .as_deref()
            .filter(|f| !f.is_empty())
        {
            add_referenced(host, &dir.join(file), node_path, files);
        }
    }
    for cluster in &config.clusters {
        if let Some(file) = cluster
            .cluster
            .certificate_authority
            .as_deref()
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

fn gather_kubelet(src: &StatusSources) -> KubeletFacts {
    let exists = |p: &Path| src.host.resolve(p).is_ok_and(|h| h.exists());
    let first_existing =
        |paths: &[&Path]| paths.iter().find(|p| exists(p)).map(|p| p.to_path_buf());
    let k = &src.kubelet;
    let (rotate_certificates, server_tls_bootstrap) = src
        .host
        .resolve(&k.kubelet_config)
        .ok()
        .and_then(|p| fsutil::read_limited(&p, MAX_FILE_BYTES).ok())
        .map(|b| kubelet_config_flags(&String::from_utf8_lossy(&b)))
        .unwrap_or((false, false));
    let cert = |kind: CertKind| {
        let store = crate::kubelet::store::KubeletStore::new(src.host.clone(), k.pki_dir.clone());
        KubeletCertFact {
            link: store.current_link(kind),
            current: store
                .current(kind)
                .map(|c| {
                    c.and_then(|c| {
                        CertSummary::of(&c.cert).map(|s| (c.path.clone(), s, c.key_matches))
                    })
                })
                .map_err(|e| e.to_string()),
        }
    };
    KubeletFacts {
        node_name: src.node_name.clone(),
        bootstrap_kubeconfig: first_existing(&[
            &k.bootstrap_kubeconfig,
            Path::new(KUBEADM_BOOTSTRAP_KUBECONFIG),
        ]),
        kubeconfig: first_existing(&[&k.kubeconfig, Path::new(KUBEADM_KUBECONFIG)]),
        kubelet_config: k.kubelet_config.clone(),
        rotate_certificates,
        server_tls_bootstrap,
        agent_job: src.kubelet_job,
        serving_job: src.serving_job,
        defer_to_kubelet_rotation: src.defer_to_kubelet_rotation,
        client: cert(CertKind::Client),
        serving: cert(CertKind::Serving),
    }
}

/// `rotateCertificates` and `serverTLSBootstrap` of kubelet's config file.
pub fn kubelet_config_flags(text: &str) -> (bool, bool) {
    let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return (false, false);
    };
    let flag = |k: &str| v.get(k).and_then(serde_yaml::Value::as_bool) == Some(true);
    (flag("rotateCertificates"), flag("serverTLSBootstrap"))
}

// ---------------------------------------------------------------------------
// The report (pure)
// ---------------------------------------------------------------------------

/// What `status --output json` prints. Stable: see README "Operating it".
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub schema_version: u32,
    pub generated_at: String,
    pub healthy: bool,
    pub exit_code: u8,
    pub problems: Vec<Problem>,
    pub agent: AgentReport,
    pub custom_cas: Vec<CaRow>,
    pub trust_store: TrustStoreReport,
    pub kubelet: KubeletReport,
    pub node_certificates: Vec<NodeCertRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemKind {
    Expired,
    /// In the last [`EXPIRING_FRACTION`] of its lifetime, and nothing renews it.
    Expiring,
    /// An input finding of error severity, or a certificate that cannot be read.
    Invalid,
    /// The daemon's last pass failed.
    Failing,
    /// An expected certificate is missing, and nothing will create it.
    Missing,
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Expiring => "expiring",
            Self::Invalid => "invalid",
            Self::Failing => "failing",
            Self::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub kind: ProblemKind,
    /// What it concerns: a CA key, a certificate path, or `agent`.
    pub subject: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    pub version: String,
    pub running: bool,
    /// How `running` was decided: `pid`, `lock`, `stopped` or `none`.
    pub running_check: String,
    pub running_detail: String,
    pub pid: Option<u32>,
    /// `host` or `pod`, as the daemon reported; `null` if it never ran.
    pub mode: Option<String>,
    pub started_at: Option<String>,
    pub last_reconcile: Option<String>,
    pub last_error: Option<String>,
    pub last_kubelet_pass: Option<String>,
    pub last_kubelet_error: Option<String>,
    pub next_renewal: Option<String>,
    pub metrics_address: Option<String>,
    /// Revocations that matched a kubelet certificate in the daemon's last
    /// kubelet pass.
    pub revocation_matches: Vec<String>,
    pub state_dir: String,
    /// Why the state or daemon status file could not be read, if so.
    pub state_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingReport {
    /// `error` or `warning`.
    pub severity: String,
    pub problem: String,
    pub fix: String,
}

/// One certificate of one CA key (or a key without a usable certificate).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaRow {
    pub source: String,
    pub key: String,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    /// Full SHA-256 fingerprint of the DER (the table shows 16 hex digits).
    pub sha256: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub residual_seconds: Option<i64>,
    /// The agent's anchor file for it exists.
    pub anchor_present: bool,
    /// The node's trust bundle holds it.
    pub in_bundle: bool,
    /// Both: the node trusts it.
    pub installed: bool,
    pub findings: Vec<FindingReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustStoreReport {
    pub family: Option<String>,
    pub anchors_dir: Option<String>,
    pub bundle_path: Option<String>,
    /// The agent's CAs (anchors present), and how many of them the bundle holds.
    pub agent_cas: usize,
    pub agent_cas_in_bundle: usize,
    pub error: Option<String>,
}

/// Who renews a certificate before it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RenewedBy {
    NodeCertAgent,
    Kubelet,
    None,
}

impl RenewedBy {
    pub fn name(self) -> &'static str {
        match self {
            Self::NodeCertAgent => "node-cert-agent",
            Self::Kubelet => "kubelet",
            Self::None => "-",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletCertReport {
    /// `client` or `serving`.
    pub kind: String,
    /// Node path of `<prefix>-current.pem`.
    pub path: String,
    pub present: bool,
    /// The file the link points at.
    pub file: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub residual_seconds: Option<i64>,
    /// When node-cert-agent renews it (its deadline for this node name).
    pub next_renewal: Option<String>,
    pub renewed_by: RenewedBy,
    pub key_matches: Option<bool>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletReport {
    pub node_name: Option<String>,
    /// A bootstrap kubeconfig is present.
    pub tls_bootstrapping: bool,
    pub bootstrap_kubeconfig: Option<String>,
    pub kubeconfig: Option<String>,
    pub kubelet_config: String,
    /// kubelet's config says `rotateCertificates: true`.
    pub rotate_certificates: bool,
    /// kubelet's config says `serverTLSBootstrap: true`.
    pub server_tls_bootstrap: bool,
    /// node-cert-agent's kubelet job is on.
    pub agent_job: bool,
    pub client: KubeletCertReport,
    pub serving: KubeletCertReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CertStatus {
    Ok,
    Expiring,
    Expired,
    NotYetValid,
    Missing,
    Unreadable,
}

impl CertStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Expiring => "EXPIRING",
            Self::Expired => "EXPIRED",
            Self::NotYetValid => "NOT YET VALID",
            Self::Missing => "!MISSING!",
            Self::Unreadable => "UNREADABLE",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertRow {
    /// The CERTIFICATE column.
    pub name: String,
    /// Node path of the file (of the kubeconfig, for an embedded one).
    pub path: String,
    /// `user:<name>` for a kubeconfig's embedded client certificate.
    pub embedded: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// The issuer's CN (kubeadm's CERTIFICATE AUTHORITY column).
    pub certificate_authority: Option<String>,
    /// Decimal, as x509-certificate-exporter's `serial_number` label.
    pub serial_number: Option<String>,
    pub sha256: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub residual_seconds: Option<i64>,
    pub status: CertStatus,
    pub renewed_by: RenewedBy,
    pub error: Option<String>,
}

impl StatusReport {
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }
}

/// Whether a certificate valid over `[nb, na]` is in the last
/// [`EXPIRING_FRACTION`] of its lifetime at `now` (and not expired yet).
pub fn is_expiring(nb: i64, na: i64, now: i64) -> bool {
    let lifetime = (na - nb).max(0) as f64;
    now < na && ((na - now) as f64) < lifetime * EXPIRING_FRACTION
}

fn cert_status(nb: i64, na: i64, now: i64) -> CertStatus {
    if na <= now {
        CertStatus::Expired
    } else if nb > now {
        CertStatus::NotYetValid
    } else if is_expiring(nb, na, now) {
        CertStatus::Expiring
    } else {
        CertStatus::Ok
    }
}

fn finding_report(f: &Finding) -> FindingReport {
    FindingReport {
        severity: match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
        .to_string(),
        problem: match f.position {
            Some(p) => format!("certificate {p}: {}", f.problem),
            None => f.problem.clone(),
        },
        fix: f.fix.clone(),
    }
}

/// The current findings per (source, key), as the daemon's pass would log
/// them: a source that never existed and never provided CAs is a warning.
fn findings_by_key(facts: &Facts, state: &CaState) -> BTreeMap<(String, String), Vec<Finding>> {
    let mut out: BTreeMap<(String, String), Vec<Finding>> = BTreeMap::new();
    for input in &facts.inputs {
        match &input.keys {
            Err(f) => {
                let mut f = f.clone();
                if f.kind == FindingKind::SourceMissing && !state.keys.contains_key(&input.source) {
                    f.severity = Severity::Warning;
                    f.problem = format!(
                        "{}; nothing was installed from it",
                        f.problem.split(';').next().unwrap_or_default()
                    );
                }
                out.entry((input.source.clone(), f.key.clone()))
                    .or_default()
                    .push(f);
            }
            Ok(verdicts) => {
                for v in verdicts {
                    out.entry((input.source.clone(), v.key.clone()))
                        .or_default()
                        .extend(v.findings.iter().cloned());
                }
            }
        }
    }
    out
}

fn ca_rows(facts: &Facts, problems: &mut Vec<Problem>) -> Vec<CaRow> {
    let state = facts.ca_state.clone().unwrap_or_default();
    let anchors = facts.inventory.anchors.as_ref().ok();
    let bundle = facts.bundle.as_ref().ok();
    let mut findings = findings_by_key(facts, &state);
    // The plan's own findings: too many certificates (over all inputs), or a
    // key whose last good version is gone from the trust store.
    if !facts.inputs.is_empty() {
        let installed: BTreeMap<Fingerprint, CertInfo> = anchors
            .map(|a| a.iter().map(|(fp, a)| (*fp, a.info.clone())).collect())
            .unwrap_or_default();
        let p = plan::plan(
            &facts.inputs,
            &state.key_state(),
            &installed,
            facts.max_certificates,
        );
        for f in p.findings {
            let source = state
                .keys
                .iter()
                .find(|(_, keys)| keys.contains_key(&f.key))
                .map(|(s, _)| s.clone())
                .unwrap_or_else(|| String::from("(all inputs)"));
            findings.entry((source, f.key.clone())).or_default().push(f);
        }
    }
    // The current inputs' certificates by (source, key), for keys the daemon
    // has not installed (yet).
    let mut input_certs: BTreeMap<(String, String), Vec<CertInfo>> = BTreeMap::new();
    for input in &facts.inputs {
        if let Ok(verdicts) = &input.keys {
            for v in verdicts {
                input_certs
                    .entry((input.source.clone(), v.key.clone()))
                    .or_default()
                    .extend(v.certs.iter().cloned());
            }
        }
    }
    let mut rows = Vec::new();
    let mut seen: BTreeSet<(String, String, Option<Fingerprint>)> = BTreeSet::new();
    let mut push = |source: &str,
                    key: &str,
                    fp: Option<Fingerprint>,
                    from_input: Option<&CertInfo>,
                    rows: &mut Vec<CaRow>| {
        if !seen.insert((source.to_string(), key.to_string(), fp)) {
            return;
        }
        let anchor = fp.and_then(|fp| anchors.and_then(|a| a.get(&fp)));
        let (subject, issuer, serial, nb, na) = match (anchor, from_input) {
            (Some(a), _) => (
                Some(a.cert.subject.clone()),
                Some(a.cert.issuer.clone()),
                Some(a.cert.serial_hex.clone()),
                Some(a.cert.not_before),
                Some(a.cert.not_after),
            ),
            (None, Some(c)) => (
                Some(c.subject.clone()),
                Some(c.issuer.clone()),
                Some(c.serial.clone()),
                Some(c.not_before),
                Some(c.not_after),
            ),
            (None, None) => (None, None, None, None, None),
        };
        let in_bundle = fp.is_some_and(|fp| bundle.is_some_and(|b| b.contains(&fp)));
        rows.push(CaRow {
            source: source.to_string(),
            key: key.to_string(),
            subject,
            issuer,
            serial,
            sha256: fp.map(|f| f.hex()),
            not_before: nb.map(rfc3339),
            not_after: na.map(rfc3339),
            residual_seconds: na.map(|na| na - facts.now),
            anchor_present: anchor.is_some(),
            in_bundle,
            installed: anchor.is_some() && in_bundle,
            findings: Vec::new(),
        });
    };
    // What the daemon installed (last good versions), then what the inputs
    // hold now, then keys that only have findings.
    for (source, keys) in &state.keys {
        for (key, fps) in keys {
            for fp in fps.iter().filter_map(|h| Fingerprint::from_hex(h)) {
                push(source, key, Some(fp), None, &mut rows);
            }
        }
    }
    for ((source, key), certs) in &input_certs {
        for c in certs {
            push(source, key, Some(c.fingerprint), Some(c), &mut rows);
        }
    }
    for (source, key) in findings.keys() {
        if !rows.iter().any(|r| &r.source == source && &r.key == key) {
            push(source, key, None, None, &mut rows);
        }
    }
    for row in &mut rows {
        if let Some(fs) = findings.get(&(row.source.clone(), row.key.clone())) {
            row.findings = fs.iter().map(finding_report).collect();
            for f in fs.iter().filter(|f| f.is_error()) {
                let problem = Problem {
                    kind: ProblemKind::Invalid,
                    subject: format!("custom CA key {}", row.key),
                    message: f.to_string(),
                };
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
        if let (Some(na), true) = (row.residual_seconds, row.anchor_present) {
            let nb = row
                .not_before
                .as_deref()
                .and_then(renewal::parse_rfc3339)
                .unwrap_or(facts.now);
            let na = facts.now + na;
            let subject = format!("custom CA key {}", row.key);
            let what = row.subject.clone().unwrap_or_default();
            if na <= facts.now {
                problems.push(Problem {
                    kind: ProblemKind::Expired,
                    subject,
                    message: format!(
                        "the installed CA \"{what}\" expired at {}; publish its successor in the Secret",
                        rfc3339(na)
                    ),
                });
            } else if is_expiring(nb, na, facts.now) {
                problems.push(Problem {
                    kind: ProblemKind::Expiring,
                    subject,
                    message: format!(
                        "the installed CA \"{what}\" expires at {} (under {:.0} % of its lifetime left) and nothing renews it; publish its successor in the Secret",
                        rfc3339(na),
                        EXPIRING_FRACTION * 100.0
                    ),
                });
            }
        }
    }
    rows
}

fn kubelet_report(
    facts: &Facts,
    daemon_running: Option<&DaemonStatus>,
) -> (KubeletReport, RenewedBy, RenewedBy) {
    let k = &facts.kubelet;
    let agent_job = daemon_running.map_or(k.agent_job, |d| d.kubelet_job);
    let client_by = if agent_job && !(k.defer_to_kubelet_rotation && k.rotate_certificates) {
        RenewedBy::NodeCertAgent
    } else if k.rotate_certificates {
        RenewedBy::Kubelet
    } else {
        RenewedBy::None
    };
    let serving_by = if agent_job && k.serving_job {
        RenewedBy::NodeCertAgent
    } else if k.server_tls_bootstrap {
        RenewedBy::Kubelet
    } else {
        RenewedBy::None
    };
    let fraction = k.node_name.as_deref().map(renewal::renewal_fraction);
    let cert = |kind: CertKind, fact: &KubeletCertFact, by: RenewedBy| {
        let mut r = KubeletCertReport {
            kind: kind.name().to_string(),
            path: fact.link.display().to_string(),
            present: false,
            file: None,
            subject: None,
            issuer: None,
            serial: None,
            not_before: None,
            not_after: None,
            residual_seconds: None,
            next_renewal: None,
            renewed_by: by,
            key_matches: None,
            error: None,
        };
        match &fact.current {
            Ok(Some((file, s, key_matches))) => {
                r.present = true;
                r.file = Some(file.display().to_string());
                r.subject = Some(s.subject.clone());
                r.issuer = Some(s.issuer.clone());
                r.serial = Some(s.serial_hex.clone());
                r.not_before = Some(rfc3339(s.not_before));
                r.not_after = Some(rfc3339(s.not_after));
                r.residual_seconds = Some(s.not_after - facts.now);
                r.key_matches = Some(*key_matches);
                if by == RenewedBy::NodeCertAgent {
                    r.next_renewal =
                        fraction.map(|f| rfc3339(renewal::deadline(s.not_before, s.not_after, f)));
                }
            }
            Ok(None) => {}
            Err(e) => r.error = Some(e.clone()),
        }
        r
    };
    (
        KubeletReport {
            node_name: k.node_name.clone(),
            tls_bootstrapping: k.bootstrap_kubeconfig.is_some(),
            bootstrap_kubeconfig: k
                .bootstrap_kubeconfig
                .as_ref()
                .map(|p| p.display().to_string()),
            kubeconfig: k.kubeconfig.as_ref().map(|p| p.display().to_string()),
            kubelet_config: k.kubelet_config.display().to_string(),
            rotate_certificates: k.rotate_certificates,
            server_tls_bootstrap: k.server_tls_bootstrap,
            agent_job,
            client: cert(CertKind::Client, &k.client, client_by),
            serving: cert(CertKind::Serving, &k.serving, serving_by),
        },
        client_by,
        serving_by,
    )
}

fn node_cert_rows(
    facts: &Facts,
    kubelet: &KubeletReport,
    problems: &mut Vec<Problem>,
) -> Vec<NodeCertRow> {
    let renewed_by = |path: &Path| {
        for c in [&kubelet.client, &kubelet.serving] {
            if Path::new(&c.path) == path || c.file.as_deref().map(Path::new) == Some(path) {
                return c.renewed_by;
            }
        }
        RenewedBy::None
    };
    let mut rows = Vec::new();
    for fact in &facts.inventory.node_certs {
        let by = if fact.embedded.is_some() {
            RenewedBy::None
        } else {
            renewed_by(&fact.path)
        };
        let mut row = NodeCertRow {
            name: fact.name(),
            path: fact.path.display().to_string(),
            embedded: fact
                .embedded
                .as_ref()
                .map(|e| format!("{}:{}", e.kind, e.name)),
            subject: None,
            issuer: None,
            certificate_authority: None,
            serial_number: None,
            sha256: None,
            not_before: None,
            not_after: None,
            residual_seconds: None,
            status: CertStatus::Ok,
            renewed_by: by,
            error: None,
        };
        match &fact.read {
            NodeCertRead::Ok(s) => {
                row.subject = Some(s.subject.clone());
                row.issuer = Some(s.issuer.clone());
                row.certificate_authority = s.issuer_field("CN").map(str::to_string);
                row.serial_number = Some(s.serial_decimal.clone());
                row.sha256 = Some(s.fingerprint.hex());
                row.not_before = Some(rfc3339(s.not_before));
                row.not_after = Some(rfc3339(s.not_after));
                row.residual_seconds = Some(s.not_after - facts.now);
                row.status = cert_status(s.not_before, s.not_after, facts.now);
                match row.status {
                    CertStatus::Expired => problems.push(Problem {
                        kind: ProblemKind::Expired,
                        subject: row.name.clone(),
                        message: format!(
                            "\"{}\" expired at {}{}",
                            s.subject,
                            rfc3339(s.not_after),
                            match by {
                                RenewedBy::None => String::new(),
                                other => format!("; {} should have renewed it", other.name()),
                            }
                        ),
                    }),
                    CertStatus::Expiring if by == RenewedBy::None => problems.push(Problem {
                        kind: ProblemKind::Expiring,
                        subject: row.name.clone(),
                        message: format!(
                            "\"{}\" expires at {} (under {:.0} % of its lifetime left) and nothing on this node renews it",
                            s.subject,
                            rfc3339(s.not_after),
                            EXPIRING_FRACTION * 100.0
                        ),
                    }),
                    _ => {}
                }
            }
            NodeCertRead::Missing { referenced_by } => {
                row.status = CertStatus::Missing;
                row.error = Some(if referenced_by == &fact.path {
                    "the link points at a file that does not exist".to_string()
                } else {
                    format!("{} refers to it", referenced_by.display())
                });
                if by == RenewedBy::None {
                    problems.push(Problem {
                        kind: ProblemKind::Missing,
                        subject: row.name.clone(),
                        message: format!(
                            "missing ({}), and nothing on this node creates it",
                            row.error.as_deref().unwrap_or_default()
                        ),
                    });
                }
            }
            NodeCertRead::Unreadable(e) => {
                row.status = CertStatus::Unreadable;
                row.error = Some(e.clone());
                problems.push(Problem {
                    kind: ProblemKind::Invalid,
                    subject: row.name.clone(),
                    message: format!("cannot be read: {e}"),
                });
            }
        }
        rows.push(row);
    }
    rows
}

/// Judges the facts. Pure.
pub fn build_report(facts: &Facts) -> StatusReport {
    let mut problems = Vec::new();
    let daemon = facts.daemon.as_ref().ok().and_then(Option::as_ref);
    let live = facts.liveness.clone().unwrap_or(Liveness {
        running: false,
        check: "none",
        detail: "no daemon status file: the daemon has not run on this node".to_string(),
    });
    let running_daemon = daemon.filter(|_| live.running);

    if let Some(d) = daemon {
        for (what, err) in [
            ("CA trust", &d.last_ca_error),
            ("kubelet certificate", &d.last_kubelet_error),
        ] {
            if let Some(e) = err {
                problems.push(Problem {
                    kind: ProblemKind::Failing,
                    subject: "agent".to_string(),
                    message: format!("the daemon's last {what} pass failed: {e}"),
                });
            }
        }
    }
    let custom_cas = ca_rows(facts, &mut problems);
    let (kubelet, _, _) = kubelet_report(facts, running_daemon);
    let node_certificates = node_cert_rows(facts, &kubelet, &mut problems);

    let state = facts.ca_state.as_ref().ok();
    let last_reconcile = daemon
        .and_then(|d| d.last_ca_pass)
        .or_else(|| state.and_then(|s| s.last_success));
    let next_renewal = running_daemon
        .and_then(|d| d.next_renewal)
        .map(rfc3339)
        .or_else(|| {
            [&kubelet.client, &kubelet.serving]
                .iter()
                .filter_map(|c| c.next_renewal.clone())
                .min()
        });
    let state_error = [facts.ca_state.as_ref().err(), facts.daemon.as_ref().err()]
        .into_iter()
        .flatten()
        .next()
        .cloned();
    let agent = AgentReport {
        version: facts.version.clone(),
        running: live.running,
        running_check: live.check.to_string(),
        running_detail: live.detail.clone(),
        pid: daemon.map(|d| d.process.pid),
        mode: daemon.map(|d| d.mode.name().to_string()),
        started_at: daemon.map(|d| rfc3339(d.started_at)),
        last_reconcile: last_reconcile.map(rfc3339),
        last_error: daemon.and_then(|d| d.last_ca_error.clone()),
        last_kubelet_pass: daemon.and_then(|d| d.last_kubelet_pass).map(rfc3339),
        last_kubelet_error: daemon.and_then(|d| d.last_kubelet_error.clone()),
        next_renewal,
        metrics_address: daemon.and_then(|d| d.metrics_address.clone()),
        revocation_matches: daemon
            .map(|d| d.revocation_matches.clone())
            .unwrap_or_default(),
        state_dir: facts.state_dir.display().to_string(),
        state_error,
    };
    let trust_store = match &facts.layout {
        Ok(l) => {
            let anchors = facts.inventory.anchors.as_ref().ok();
            let count = anchors.map_or(0, BTreeMap::len);
            let in_bundle = match (anchors, facts.bundle.as_ref().ok()) {
                (Some(a), Some(b)) => a.keys().filter(|fp| b.contains(fp)).count(),
                _ => 0,
            };
            TrustStoreReport {
                family: Some(l.family.name().to_string()),
                anchors_dir: Some(l.anchors_dir.display().to_string()),
                bundle_path: Some(l.bundle_path.display().to_string()),
                agent_cas: count,
                agent_cas_in_bundle: in_bundle,
                error: facts
                    .inventory
                    .anchors
                    .as_ref()
                    .err()
                    .or(facts.bundle.as_ref().err())
                    .cloned(),
            }
        }
        Err(e) => TrustStoreReport {
            family: None,
            anchors_dir: None,
            bundle_path: None,
            agent_cas: 0,
            agent_cas_in_bundle: 0,
            error: Some(e.clone()),
        },
    };
    let healthy = problems.is_empty();
    StatusReport {
        schema_version: SCHEMA_VERSION,
        generated_at: rfc3339(facts.now),
        healthy,
        exit_code: if healthy {
            EXIT_HEALTHY
        } else {
            EXIT_UNHEALTHY
        },
        problems,
        agent,
        custom_cas,
        trust_store,
        kubelet,
        node_certificates,
    }
}

// ---------------------------------------------------------------------------
// Rendering (pure)
// ---------------------------------------------------------------------------

pub fn render_json(report: &StatusReport) -> Result<String, StatusError> {
    let mut s = serde_json::to_string_pretty(report)
        .map_err(|source| StatusError::EncodeReport { source })?;
    s.push('\n');
    Ok(s)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// kubeadm's date format, `Jan 02, 2006 15:04 UTC`.
pub fn kubeadm_date(unix: i64) -> String {
    let t = rfc3339(unix);
    // YYYY-MM-DDTHH:MM:SSZ
    let month: usize = t.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    format!(
        "{} {}, {} {} UTC",
        MONTHS[month.clamp(1, 12) - 1],
        t.get(8..10).unwrap_or("??"),
        t.get(0..4).unwrap_or("????"),
        t.get(11..16).unwrap_or("??:??")
    )
}

/// kubeadm's RESIDUAL TIME: `<invalid>` once expired, then `59s`, `59m`,
/// `23h`, `364d`, `9y` (Kubernetes' ShortHumanDuration).
pub fn short_duration(secs: i64) -> String {
    if secs < -1 {
        "<invalid>".to_string()
    } else if secs < 0 {
        "0s".to_string()
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h", secs / 3600)
    } else if secs < 86_400 * 365 {
        format!("{}d", secs / 86_400)
    } else {
        format!("{}y", secs / (86_400 * 365))
    }
}

/// Left-aligned columns separated by three spaces, like kubeadm's tables.
fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("   ");
            }
            s.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            s.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, &mut headers.iter().copied());
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

fn dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn date_of(rfc: Option<&str>) -> String {
    rfc.and_then(renewal::parse_rfc3339)
        .map(kubeadm_date)
        .unwrap_or_else(|| "-".to_string())
}

fn kv(out: &mut String, pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        let _ = writeln!(out, "  {k:<w$}   {v}");
    }
}

/// The report as an operator reads it in a node shell.
pub fn render_table(r: &StatusReport) -> String {
    let mut out = String::new();
    let a = &r.agent;
    out.push_str("AGENT\n");
    let running = if a.running {
        format!("running ({})", a.running_detail)
    } else {
        format!("not running ({})", a.running_detail)
    };
    kv(
        &mut out,
        &[
            ("version", a.version.clone()),
            ("daemon", running),
            ("mode", dash(a.mode.as_deref())),
            ("started", date_of(a.started_at.as_deref())),
            ("last reconcile", date_of(a.last_reconcile.as_deref())),
            ("last error", dash(a.last_error.as_deref())),
            ("last kubelet pass", date_of(a.last_kubelet_pass.as_deref())),
            ("last kubelet error", dash(a.last_kubelet_error.as_deref())),
            ("next renewal", date_of(a.next_renewal.as_deref())),
            (
                "revocations (last pass)",
                if a.revocation_matches.is_empty() {
                    "-".to_string()
                } else {
                    a.revocation_matches.join("; ")
                },
            ),
            ("metrics", dash(a.metrics_address.as_deref())),
            ("state dir", a.state_dir.clone()),
        ],
    );
    if let Some(e) = &a.state_error {
        let _ = writeln!(out, "  state error: {e}");
    }

    out.push_str("\nCUSTOM CAS\n");
    if r.custom_cas.is_empty() {
        out.push_str("  (none installed and no CA input configured)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .custom_cas
            .iter()
            .map(|c| {
                let finding = c
                    .findings
                    .first()
                    .map(|f| {
                        let more = if c.findings.len() > 1 {
                            format!(" (+{} more)", c.findings.len() - 1)
                        } else {
                            String::new()
                        };
                        format!("{}: {}{more}", f.severity, f.problem)
                    })
                    .unwrap_or_else(|| "-".to_string());
                vec![
                    c.key.clone(),
                    dash(c.subject.as_deref()),
                    c.sha256
                        .as_deref()
                        .map(|s| s.chars().take(16).collect())
                        .unwrap_or_else(|| "-".to_string()),
                    date_of(c.not_after.as_deref()),
                    c.residual_seconds
                        .map(short_duration)
                        .unwrap_or_else(|| "-".to_string()),
                    yes_no(c.installed).to_string(),
                    finding,
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "KEY",
                "SUBJECT",
                "SHA-256",
                "EXPIRES",
                "RESIDUAL TIME",
                "INSTALLED",
                "FINDING",
            ],
            &rows,
        );
    }

    out.push_str("\nTRUST STORE\n");
    let t = &r.trust_store;
    kv(
        &mut out,
        &[
            ("family", dash(t.family.as_deref())),
            ("anchors dir", dash(t.anchors_dir.as_deref())),
            ("bundle", dash(t.bundle_path.as_deref())),
            (
                "agent CAs in bundle",
                format!("{} of {}", t.agent_cas_in_bundle, t.agent_cas),
            ),
        ],
    );
    if let Some(e) = &t.error {
        let _ = writeln!(out, "  error: {e}");
    }

    out.push_str("\nKUBELET CERTIFICATES\n");
    let k = &r.kubelet;
    kv(
        &mut out,
        &[
            ("node name", dash(k.node_name.as_deref())),
            (
                "TLS bootstrapping",
                match &k.bootstrap_kubeconfig {
                    Some(p) => format!("enabled ({p})"),
                    None => "disabled (no bootstrap kubeconfig)".to_string(),
                },
            ),
            (
                "kubelet self-rotation",
                format!(
                    "client {} (rotateCertificates), serving {} (serverTLSBootstrap) in {}",
                    yes_no(k.rotate_certificates),
                    yes_no(k.server_tls_bootstrap),
                    k.kubelet_config
                ),
            ),
            (
                "node-cert-agent job",
                if k.agent_job { "on" } else { "off" }.to_string(),
            ),
        ],
    );
    let rows: Vec<Vec<String>> = [&k.client, &k.serving]
        .iter()
        .map(|c| {
            if !c.present {
                return vec![
                    c.kind.clone(),
                    c.error
                        .as_ref()
                        .map(|e| format!("UNREADABLE: {e}"))
                        .unwrap_or_else(|| format!("none ({})", c.path)),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    c.renewed_by.name().to_string(),
                ];
            }
            vec![
                c.kind.clone(),
                dash(c.subject.as_deref()),
                dash(c.issuer.as_deref()),
                date_of(c.not_after.as_deref()),
                c.residual_seconds
                    .map(short_duration)
                    .unwrap_or_else(|| "-".to_string()),
                match (&c.next_renewal, c.renewed_by) {
                    (Some(n), _) => date_of(Some(n)),
                    (None, RenewedBy::Kubelet) => "by kubelet (70-90 % of lifetime)".to_string(),
                    _ => "-".to_string(),
                },
                c.renewed_by.name().to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "CERT",
            "SUBJECT",
            "ISSUER",
            "EXPIRES",
            "RESIDUAL TIME",
            "NEXT RENEWAL",
            "RENEWED BY",
        ],
        &rows,
    );

    out.push_str("\nNODE CERTIFICATES\n");
    if r.node_certificates.is_empty() {
        out.push_str("  (none under /etc/kubernetes or kubelet's pki dir)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .node_certificates
            .iter()
            .map(|n| {
                if n.status == CertStatus::Missing {
                    return vec![
                        format!("!MISSING! {}", n.name),
                        String::new(),
                        String::new(),
                        String::new(),
                        n.renewed_by.name().to_string(),
                        n.status.name().to_string(),
                    ];
                }
                vec![
                    n.name.clone(),
                    date_of(n.not_after.as_deref()),
                    n.residual_seconds
                        .map(short_duration)
                        .unwrap_or_else(|| "-".to_string()),
                    dash(n.certificate_authority.as_deref()),
                    n.renewed_by.name().to_string(),
                    match (&n.error, n.status) {
                        (Some(e), _) => format!("{}: {e}", n.status.name()),
                        (None, s) => s.name().to_string(),
                    },
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "CERTIFICATE",
                "EXPIRES",
                "RESIDUAL TIME",
                "CERTIFICATE AUTHORITY",
                "RENEWED BY",
                "STATUS",
            ],
            &rows,
        );
    }

    out.push('\n');
    if r.healthy {
        out.push_str("HEALTH: ok\n");
    } else {
        let _ = writeln!(
            out,
            "HEALTH: UNHEALTHY ({} problem{})",
            r.problems.len(),
            if r.problems.len() == 1 { "" } else { "s" }
        );
        for p in &r.problems {
            let _ = writeln!(out, "  - {} {}: {}", p.kind.name(), p.subject, p.message);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::node::distro::Family;
    use crate::x509::testpki;
    use std::fs;

    const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

    fn summary(cn: &str, nb: i64, na: i64) -> CertSummary {
        CertSummary {
            subject: format!("CN={cn}"),
            issuer: "CN=kubernetes".into(),
            subject_fields: vec![("CN".into(), cn.into())],
            issuer_fields: vec![("CN".into(), "kubernetes".into())],
            serial_hex: "0A".into(),
            serial_decimal: "10".into(),
            not_before: nb,
            not_after: na,
            fingerprint: Fingerprint::of_der(cn.as_bytes()),
        }
    }

    fn no_kubelet() -> KubeletFacts {
        KubeletFacts {
            node_name: Some("node-1".into()),
            bootstrap_kubeconfig: None,
            kubeconfig: None,
            kubelet_config: DEFAULT_KUBELET_CONFIG.into(),
            rotate_certificates: false,
            server_tls_bootstrap: false,
            agent_job: false,
            serving_job: false,
            defer_to_kubelet_rotation: true,
            client: KubeletCertFact {
                link: "/var/lib/kubelet/pki/kubelet-client-current.pem".into(),
                current: Ok(None),
            },
            serving: KubeletCertFact {
                link: "/var/lib/kubelet/pki/kubelet-server-current.pem".into(),
                current: Ok(None),
            },
        }
    }

    /// A node with one installed custom CA (key ca1.crt), nothing else.
    fn facts_with_ca(ca: CertSummary) -> Facts {
        let fp = ca.fingerprint;
        let mut state = CaState {
            last_success: Some(NOW - 60),
            ..Default::default()
        };
        state.keys.insert(
            "/etc/node-cert-agent/secret".into(),
            BTreeMap::from([("ca1.crt".to_string(), vec![fp.hex()])]),
        );
        Facts {
            now: NOW,
            version: "0.1.0".into(),
            state_dir: "/var/lib/node-cert-agent".into(),
            daemon: Ok(None),
            liveness: None,
            ca_state: Ok(state),
            inputs: Vec::new(),
            max_certificates: 10,
            layout: Ok(Family::Debian.layout()),
            bundle: Ok(BTreeSet::from([fp])),
            inventory: CertInventory {
                anchors: Ok(BTreeMap::from([(
                    fp,
                    AnchorFact {
                        path: format!(
                            "/usr/local/share/ca-certificates/node-cert-agent/node-cert-agent-{}.crt",
                            fp.hex()
                        )
                        .into(),
                        info: CertInfo::from_der(&testpki::good_ca("x").cert.to_der().unwrap())
                            .unwrap(),
                        cert: ca,
                    },
                )])),
                node_certs: Vec::new(),
            },
            kubelet: no_kubelet(),
        }
    }

    fn healthy_ca() -> CertSummary {
        summary("Corp Root", NOW - 86_400 * 365, NOW + 86_400 * 365 * 9)
    }

    #[test]
    fn installed_ca_is_healthy_and_listed_with_its_short_fingerprint() {
        let ca = healthy_ca();
        let report = build_report(&facts_with_ca(ca.clone()));
        assert!(report.healthy, "{:?}", report.problems);
        assert_eq!(report.exit_code(), EXIT_HEALTHY);
        assert_eq!(report.custom_cas.len(), 1);
        let row = &report.custom_cas[0];
        assert!(row.installed && row.anchor_present && row.in_bundle);
        assert_eq!(row.key, "ca1.crt");
        assert_eq!(report.trust_store.agent_cas_in_bundle, 1);
        let table = render_table(&report);
        assert!(table.contains(&ca.fingerprint.short()), "{table}");
        assert!(table.contains("CN=Corp Root"), "{table}");
        assert!(table.contains("Jan 13, 2036 08:00 UTC"), "{table}");
        let row = table.lines().find(|l| l.starts_with("ca1.crt")).unwrap();
        let cells: Vec<&str> = row
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            vec![
                "ca1.crt",
                "CN=Corp Root",
                ca.fingerprint.short().as_str(),
                "Jan 13, 2036 08:00 UTC",
                "9y",
                "yes",
                "-"
            ],
            "{table}"
        );
        assert!(table.contains("HEALTH: ok"), "{table}");
        assert!(
            table.contains("not running (no daemon status file"),
            "{table}"
        );
    }

    #[test]
    fn ca_missing_from_the_bundle_is_not_installed() {
        let mut f = facts_with_ca(healthy_ca());
        f.bundle = Ok(BTreeSet::new());
        let report = build_report(&f);
        assert!(!report.custom_cas[0].installed);
        assert!(report.custom_cas[0].anchor_present);
        assert_eq!(report.trust_store.agent_cas_in_bundle, 0);
        assert!(render_table(&report).contains("0 of 1"));
    }

    #[test]
    fn expired_or_expiring_ca_makes_the_node_unhealthy() {
        let expired = summary("Old Root", NOW - 1000, NOW - 10);
        let r = build_report(&facts_with_ca(expired));
        assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
        assert_eq!(r.problems[0].kind, ProblemKind::Expired);
        // 5 % of its life left.
        let expiring = summary("Tired Root", NOW - 950, NOW + 50);
        let r = build_report(&facts_with_ca(expiring));
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].kind, ProblemKind::Expiring);
        // 20 % left: fine.
        let ok = summary("Fine Root", NOW - 800, NOW + 200);
        assert!(build_report(&facts_with_ca(ok)).healthy);
    }

    #[test]
    fn input_error_is_shown_on_its_key_and_is_unhealthy() {
        let mut f = facts_with_ca(healthy_ca());
        f.inputs = vec![SourceInput {
            source: "/etc/node-cert-agent/secret".into(),
            keys: Ok(vec![crate::trust::validate::validate_key(
                "bad.crt",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                NOW,
            )]),
        }];
        let r = build_report(&f);
        assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
        let bad = r.custom_cas.iter().find(|c| c.key == "bad.crt").unwrap();
        assert!(!bad.installed && bad.subject.is_none());
        assert_eq!(bad.findings[0].severity, "error");
        assert!(r
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Invalid && p.subject.contains("bad.crt")));
        let table = render_table(&r);
        assert!(table.contains("bad.crt"), "{table}");
        assert!(table.contains("error: "), "{table}");
    }

    #[test]
    fn a_source_that_never_existed_is_only_a_warning() {
        let mut f = facts_with_ca(healthy_ca());
        f.inputs = vec![read_source(
            &SourceSpec::File("/nonexistent/custom-ca.pem".into()),
            NOW,
        )];
        let r = build_report(&f);
        assert!(r.healthy, "{:?}", r.problems);
        let row = r
            .custom_cas
            .iter()
            .find(|c| c.key == "/nonexistent/custom-ca.pem")
            .unwrap();
        assert_eq!(row.findings[0].severity, "warning");
    }

    #[test]
    fn daemon_error_is_failing() {
        let mut f = facts_with_ca(healthy_ca());
        let d = DaemonStatus {
            schema_version: SCHEMA_VERSION,
            version: "0.1.0".into(),
            process: ProcessIdentity {
                pid: 42,
                ..Default::default()
            },
            started_at: NOW - 600,
            heartbeat_at: NOW - 5,
            ca_job: true,
            last_ca_pass: Some(NOW - 5),
            last_ca_error: Some("refresh tool failed".into()),
            ..Default::default()
        };
        f.liveness = Some(liveness(
            &d,
            &ProcessIdentity::default(),
            None,
            &DaemonLock::Held,
        ));
        f.daemon = Ok(Some(d));
        let r = build_report(&f);
        assert!(r.agent.running, "lock held");
        assert_eq!(r.agent.running_check, "lock");
        assert_eq!(r.agent.last_error.as_deref(), Some("refresh tool failed"));
        assert_eq!(r.problems[0].kind, ProblemKind::Failing);
        assert_eq!(r.exit_code(), EXIT_UNHEALTHY);
        let t = render_table(&r);
        assert!(
            t.contains("running (pid 42 in another pid namespace; it holds daemon.lock)"),
            "{t}"
        );
    }

    #[test]
    fn liveness_by_pid_in_the_same_namespace_and_by_lock_elsewhere() {
        let me = ProcessIdentity {
            pid: 1,
            pid_namespace: Some("pid:[1]".into()),
            start_ticks: Some(5),
            boot_time: Some(1_700_000_000),
        };
        let mut d = DaemonStatus {
            process: ProcessIdentity {
                pid: 77,
                pid_namespace: Some("pid:[1]".into()),
                start_ticks: Some(1234),
                boot_time: Some(1_700_000_001),
            },
            heartbeat_at: NOW,
            ..Default::default()
        };
        let held = DaemonLock::Held;
        let free = DaemonLock::Free;
        assert!(liveness(&d, &me, Some(1234), &free).running, "pid decides");
        let reused = liveness(&d, &me, Some(9999), &held);
        assert!(!reused.running, "a reused pid is not the daemon");
        assert_eq!(reused.check, "pid");
        assert!(!liveness(&d, &me, None, &held).running);
        // Another boot: the pid means nothing, the lock decides.
        d.process.boot_time = Some(1_600_000_000);
        assert_eq!(liveness(&d, &me, Some(1234), &held).check, "lock");
        d.process.boot_time = Some(1_700_000_001);
        // Another namespace: the lock decides.
        d.process.pid_namespace = Some("pid:[2]".into());
        assert!(liveness(&d, &me, None, &held).running);
        let gone = liveness(&d, &me, None, &free);
        assert!(!gone.running && gone.check == "lock", "{gone:?}");
        let unknown = liveness(&d, &me, None, &DaemonLock::Unknown("no file".into()));
        assert!(!unknown.running && unknown.check == "none", "{unknown:?}");
        assert!(unknown.detail.contains("no file"), "{unknown:?}");
        d.stopped_at = Some(NOW);
        assert_eq!(liveness(&d, &me, Some(1234), &held).check, "stopped");
    }

    #[test]
    fn the_daemon_lock_is_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DAEMON_LOCK_FILE);
        assert!(
            matches!(probe_daemon_lock(&path), DaemonLock::Unknown(w) if w.contains("does not exist"))
        );
        let lock = try_daemon_lock(&path).unwrap().expect("free");
        assert_eq!(probe_daemon_lock(&path), DaemonLock::Held);
        assert!(try_daemon_lock(&path).unwrap().is_none(), "a second daemon");
        drop(lock);
        assert_eq!(probe_daemon_lock(&path), DaemonLock::Free);
        assert!(try_daemon_lock(&path).unwrap().is_some());
    }

    #[test]
    fn start_ticks_are_read_after_the_command_name() {
        let stat =
            "77 (node cert) agent) S 1 77 77 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100";
        assert_eq!(parse_start_ticks(stat), Some(98765));
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert!(ProcessIdentity::current().boot_time.is_some());
        assert!(start_ticks_of(std::process::id()).is_some());
    }

    fn node_cert(path: &str, read: NodeCertRead) -> NodeCertFact {
        NodeCertFact {
            path: path.into(),
            embedded: None,
            index: 1,
            read,
        }
    }

    #[test]
    fn node_certificates_in_kubeadm_style() {
        let mut f = facts_with_ca(healthy_ca());
        f.inventory.node_certs = vec![
            node_cert(
                "/etc/kubernetes/pki/ca.crt",
                NodeCertRead::Ok(summary("kubernetes", NOW - 86_400, NOW + 86_400 * 3649)),
            ),
            node_cert(
                "/etc/kubernetes/pki/apiserver.crt",
                NodeCertRead::Ok(summary("kube-apiserver", NOW - 86_400 * 400, NOW - 3600)),
            ),
            node_cert(
                "/etc/kubernetes/pki/front-proxy-client.crt",
                NodeCertRead::Ok(summary("front-proxy-client", NOW - 86_400, NOW + 82_800)),
            ),
            node_cert(
                "/etc/kubernetes/pki/sa.crt",
                NodeCertRead::Missing {
                    referenced_by: "/etc/kubernetes/admin.conf".into(),
                },
            ),
        ];
        let r = build_report(&f);
        let t = render_table(&r);
        assert!(
            t.contains("CERTIFICATE                                  EXPIRES                  RESIDUAL TIME   CERTIFICATE AUTHORITY   RENEWED BY   STATUS"),
            "{t}"
        );
        assert!(t.contains("/etc/kubernetes/pki/ca.crt"), "{t}");
        assert!(t.contains("   9y   "), "{t}");
        assert!(t.contains("<invalid>"), "{t}");
        assert!(t.contains("EXPIRED"), "{t}");
        assert!(t.contains("23h"), "{t}");
        assert!(t.contains("!MISSING! /etc/kubernetes/pki/sa.crt"), "{t}");
        let kinds: Vec<_> = r.problems.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            vec![ProblemKind::Expired, ProblemKind::Missing],
            "{:?}",
            r.problems
        );
        assert!(t.contains("HEALTH: UNHEALTHY (2 problems)"), "{t}");
    }

    #[test]
    fn kubelet_certificate_with_a_renewal_path_is_not_a_problem_when_expiring() {
        let mut f = facts_with_ca(healthy_ca());
        // 5 % of its lifetime left.
        let client = summary("system:node:node-1", NOW - 950, NOW + 50);
        f.kubelet.agent_job = true;
        f.kubelet.bootstrap_kubeconfig = Some(DEFAULT_BOOTSTRAP_KUBECONFIG.into());
        f.kubelet.client.current = Ok(Some((
            "/var/lib/kubelet/pki/kubelet-client-2027-01-15-07-45-00.pem".into(),
            client.clone(),
            true,
        )));
        f.inventory.node_certs = vec![node_cert(
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            NodeCertRead::Ok(client.clone()),
        )];
        let r = build_report(&f);
        assert!(r.healthy, "{:?}", r.problems);
        assert_eq!(r.kubelet.client.renewed_by, RenewedBy::NodeCertAgent);
        assert_eq!(r.node_certificates[0].status, CertStatus::Expiring);
        assert_eq!(r.node_certificates[0].renewed_by, RenewedBy::NodeCertAgent);
        let deadline = renewal::deadline(
            client.not_before,
            client.not_after,
            renewal::renewal_fraction("node-1"),
        );
        assert_eq!(r.kubelet.client.next_renewal, Some(rfc3339(deadline)));
        assert_eq!(r.agent.next_renewal, Some(rfc3339(deadline)));
        // Without the job and without kubelet rotation, the same cert is a problem.
        f.kubelet.agent_job = false;
        let r = build_report(&f);
        assert_eq!(r.problems[0].kind, ProblemKind::Expiring);
        // kubelet's own rotation is a renewal path too.
        f.kubelet.rotate_certificates = true;
        let r = build_report(&f);
        assert!(r.healthy);
        assert_eq!(r.kubelet.client.renewed_by, RenewedBy::Kubelet);
        let t = render_table(&r);
        assert!(
            t.contains("enabled (/var/lib/kubelet/bootstrap-kubeconfig)"),
            "{t}"
        );
        assert!(t.contains("by kubelet (70-90 % of lifetime)"), "{t}");
    }

    #[test]
    fn json_has_the_documented_schema() {
        let r = build_report(&facts_with_ca(healthy_ca()));
        let v: serde_json::Value = serde_json::from_str(&render_json(&r).unwrap()).unwrap();
        assert_eq!(v["schemaVersion"], 1);
        assert_eq!(v["healthy"], true);
        assert_eq!(v["exitCode"], 0);
        for key in [
            "generatedAt",
            "problems",
            "agent",
            "customCas",
            "trustStore",
            "kubelet",
            "nodeCertificates",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        let ca = &v["customCas"][0];
        for key in [
            "source",
            "key",
            "subject",
            "sha256",
            "notBefore",
            "notAfter",
            "residualSeconds",
            "anchorPresent",
            "inBundle",
            "installed",
            "findings",
        ] {
            assert!(ca.get(key).is_some(), "customCas[0] lacks {key}: {ca}");
        }
        assert_eq!(ca["installed"], true);
        assert_eq!(v["agent"]["running"], false);
        assert_eq!(v["agent"]["runningCheck"], "none");
        assert_eq!(v["trustStore"]["family"], "debian");
        assert_eq!(v["kubelet"]["client"]["renewedBy"], "none");
    }

    #[test]
    fn durations_and_dates_read_like_kubeadm() {
        assert_eq!(short_duration(-5), "<invalid>");
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(3599), "59m");
        assert_eq!(short_duration(86_399), "23h");
        assert_eq!(short_duration(86_400 * 364), "364d");
        assert_eq!(short_duration(86_400 * 365 * 10), "10y");
        assert_eq!(kubeadm_date(1_136_214_240), "Jan 02, 2006 15:04 UTC");
    }

    #[test]
    fn rotated_kubelet_files_are_recognised() {
        assert!(is_rotated_kubelet_file(
            "kubelet-client-2026-01-02-03-04-05.pem"
        ));
        assert!(is_rotated_kubelet_file(
            "kubelet-server-2026-01-02-03-04-05.pem"
        ));
        assert!(!is_rotated_kubelet_file("kubelet-client-current.pem"));
        assert!(!is_rotated_kubelet_file("kubelet.crt"));
    }

    fn write(root: &Path, node_path: &str, bytes: &[u8]) {
        let p = root.join(node_path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn gathers_a_node_from_a_tempdir_host_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "/etc/hostname", b"node-7\n");
        // An installed custom CA: anchor, bundle and state.
        let ca = testpki::good_ca("Tempdir Root");
        let info = CertInfo::from_der(&ca.cert.to_der().unwrap()).unwrap();
        let layout = Family::Debian.layout();
        let store = TrustStore::new(HostRoot::new(r).unwrap(), layout.clone());
        store.install(&info).unwrap();
        write(r, "/etc/ssl/certs/ca-certificates.crt", info.pem.as_bytes());
        let mut st = CaState {
            version: 1,
            ..Default::default()
        };
        st.keys.insert(
            "/secret".into(),
            BTreeMap::from([("ca1.crt".to_string(), vec![info.fingerprint.hex()])]),
        );
        fs::create_dir_all(r.join("var/lib/node-cert-agent")).unwrap();
        state::save(&r.join("var/lib/node-cert-agent").join(STATE_FILE), &st).unwrap();
        // kubeadm-style certificates: a CA, an expired leaf, a key, a kubeconfig
        // with an embedded client cert and a reference to a missing one.
        let kube_ca = testpki::good_ca("kubernetes");
        write(
            r,
            "/etc/kubernetes/pki/ca.crt",
            testpki::pem(&kube_ca.cert).as_bytes(),
        );
        write(
            r,
            "/etc/kubernetes/pki/ca.key",
            testpki::private_key_pem().as_bytes(),
        );
        let expired = testpki::ca("etcd-ca", -30, -1);
        write(
            r,
            "/etc/kubernetes/pki/etcd/ca.crt",
            testpki::pem(&expired.cert).as_bytes(),
        );
        let (client, _) = testpki::leaf_with_key(&kube_ca, "kubernetes-admin");
        let b64 = base64::engine::general_purpose::STANDARD.encode(testpki::pem(&client));
        write(
            r,
            "/etc/kubernetes/admin.conf",
            format!(
                "apiVersion: v1\nkind: Config\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {b64}\n- name: other\n  user:\n    client-certificate: pki/missing.crt\n"
            )
            .as_bytes(),
        );
        // kubelet: the current client cert through its link, an old one beside it.
        let (kcert, kkey) = testpki::leaf_with_key(&kube_ca, "system:node:node-7");
        let mut pair = testpki::pem(&kcert).into_bytes();
        pair.extend(kkey.private_key_to_pem_pkcs8().unwrap());
        write(
            r,
            "/var/lib/kubelet/pki/kubelet-client-2026-01-02-03-04-05.pem",
            &pair,
        );
        write(
            r,
            "/var/lib/kubelet/pki/kubelet-client-2025-01-02-03-04-05.pem",
            b"old",
        );
        std::os::unix::fs::symlink(
            "kubelet-client-2026-01-02-03-04-05.pem",
            r.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        write(
            r,
            "/var/lib/kubelet/config.yaml",
            b"rotateCertificates: true\n",
        );

        let settings =
            crate::config::resolve_for_status(Default::default(), Default::default()).unwrap();
        let src = StatusSources::from_settings(&settings, HostRoot::new(r).unwrap(), Ok(layout));
        assert_eq!(src.node_name.as_deref(), Some("node-7"));
        let facts = gather(&src, crate::x509::cert::now_unix());
        let report = build_report(&facts);

        assert_eq!(report.custom_cas.len(), 1);
        assert!(report.custom_cas[0].installed, "{:?}", report.custom_cas);
        assert_eq!(
            report.custom_cas[0].subject.as_deref(),
            Some(info.subject.as_str())
        );
        let names: Vec<&str> = report
            .node_certificates
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(
            names,
            vec![
                "/etc/kubernetes/pki/ca.crt",
                "/etc/kubernetes/pki/etcd/ca.crt",
                "/etc/kubernetes/pki/missing.crt",
                "/var/lib/kubelet/pki/kubelet-client-current.pem",
                "/etc/kubernetes/admin.conf#user:kubernetes-admin",
            ],
            "keys and superseded kubelet files are not listed"
        );
        let by_name = |n: &str| {
            report
                .node_certificates
                .iter()
                .find(|r| r.name == n)
                .unwrap()
        };
        assert_eq!(
            by_name("/etc/kubernetes/pki/etcd/ca.crt").status,
            CertStatus::Expired
        );
        assert_eq!(
            by_name("/etc/kubernetes/pki/missing.crt").status,
            CertStatus::Missing
        );
        let kubelet_row = by_name("/var/lib/kubelet/pki/kubelet-client-current.pem");
        assert_eq!(kubelet_row.renewed_by, RenewedBy::Kubelet);
        assert_eq!(
            kubelet_row.certificate_authority.as_deref(),
            Some("kubernetes")
        );
        assert!(report.kubelet.client.present);
        assert_eq!(report.kubelet.client.key_matches, Some(true));
        assert!(report.kubelet.rotate_certificates);
        assert!(!report.kubelet.tls_bootstrapping);
        let kinds: BTreeSet<&str> = report.problems.iter().map(|p| p.kind.name()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from(["expired", "missing"]),
            "{:?}",
            report.problems
        );
        assert_eq!(report.exit_code(), EXIT_UNHEALTHY);
        let t = render_table(&report);
        assert!(
            t.contains("!MISSING! /etc/kubernetes/pki/missing.crt"),
            "{t}"
        );
        assert!(t.contains("1 of 1"), "{t}");
    }

    #[test]
    fn daemon_status_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DAEMON_STATUS_FILE);
        let d = DaemonStatus {
            schema_version: SCHEMA_VERSION,
            version: "0.1.0".into(),
            mode: AgentMode::Pod,
            process: ProcessIdentity::current(),
            started_at: NOW,
            heartbeat_at: NOW,
            next_renewal: Some(NOW + 10),
            ..Default::default()
        };
        write_daemon_status(&path, &d).unwrap();
        assert_eq!(read_daemon_status(&path).unwrap(), Some(d.clone()));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"heartbeatAt\""), "{text}");
        assert!(text.contains("\"mode\": \"pod\""), "{text}");
        // This very process, seen from itself, is alive by pid.
        let live = liveness(
            &d,
            &ProcessIdentity::current(),
            start_ticks_of(d.process.pid),
            &DaemonLock::Free,
        );
        assert!(live.running && live.check == "pid", "{live:?}");
    }
}
