//! The kubelet certificate pass: decide (renewal.rs, with the entries of
//! revocation.rs), obtain (csr.rs, with the identity of identity.rs), check,
//! install (store.rs), restart kubelet (node::systemd).
//!
//! One pass looks at the client certificate (and the serving one, opt-in),
//! renews what is due, and returns when the next pass is needed. When kubelet
//! rotates its own client certificate, the agent only monitors it. A pass
//! holds `<state-dir>/kubelet.lock`, so the daemon and `node-cert-agent
//! renew` never renew at the same time.
//!
//! Boundary: this module sequences the others and owns no format, file
//! layout or API call of its own; it depends only on the leaf modules
//! `x509`, `node` and `config` outside `kubelet`.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::Flock;
use tracing::{error, info, warn};

use self::revocations::RevocationMemory;
pub use crate::config::KubeletSettings;
use crate::errors::error_chain;
use crate::k8s::client::ClientError;
use crate::k8s::kubeconfig::{self, KubeconfigError};
use crate::kubelet::csr::{CsrError, Purpose};
use crate::kubelet::facts::facts_of;
use crate::kubelet::facts::CertFacts;
use crate::kubelet::identity::{self, IdentityError, IdentitySource};
use crate::kubelet::kubelet_config::EffectiveKubelet;
use crate::kubelet::node_facts::NodeFacts;
use crate::kubelet::renewal::{self, Decision, RenewReason};
use crate::kubelet::revocation::{Revocation, RevocationCache, SourceState};
use crate::kubelet::scope::{self, NodeNameError};
use crate::kubelet::state::{KubeletStateError, KUBELET_STATE_FILE};
use crate::kubelet::store::{CertKind, CurrentCert, KubeletStore, StoreError};
use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::{HostRoot, HostRootError};
use crate::node::lock::{lock_exclusive, LockError};
use crate::node::systemd::{Systemd, SystemdError, UnitExec};
use crate::time::{now_unix, rfc3339};

/// The longest sleep between passes, so a clock jump (suspend, NTP step) is
/// noticed within this time even when nothing else wakes the agent.
pub const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// What the kubelet job works with on this node.
#[derive(Clone, Debug)]
pub struct KubeletJob {
    pub settings: KubeletSettings,
    pub node_name: String,
    /// The serving certificate's DNS names and IPs, when it is on.
    pub serving: Option<(Vec<String>, Vec<IpAddr>)>,
    /// The lock file shared with `renew`, as this process sees it. The
    /// kubelet state file lives beside it.
    pub lock_path: PathBuf,
    /// Write kubelet's kubeconfig after a bootstrap when it is absent, as
    /// kubelet does (host mode: a pod sees kubelet's directory read-only).
    pub write_kubeconfig: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    HostRoot(#[from] HostRootError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("API server {server}: {source}")]
    Api { server: String, source: CsrError },
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
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("building an API client for {server}: {reason}")]
    Client { server: String, reason: String },
    #[error("cannot render kubelet's kubeconfig {path}: {reason}; nothing was written")]
    RenderKubeconfig { path: PathBuf, reason: String },
    #[error("cannot take the serving certificate's names from Node {node}: {reason}; the serving certificate is not renewed until it can (or set kubelet.serving.dns/ips)")]
    NodeAddresses { node: String, reason: String },
    #[error("restart of {unit} after installing the new certificate: {source}")]
    Restart { unit: String, source: SystemdError },
    #[error("restart job for {unit} ended with result \"{result}\"; see `journalctl -u {unit}` on the node")]
    RestartFailed { unit: String, result: String },
    #[error("the kubelet lock (shared with `node-cert-agent renew`): {0}")]
    Lock(LockError),
    #[error(transparent)]
    State(#[from] KubeletStateError),
    #[error("cannot write kubelet's kubeconfig {}: {source}", path.display())]
    WriteKubeconfig { path: PathBuf, source: Box<FsError> },
    #[error(transparent)]
    NodeName(#[from] NodeNameError),
}

impl From<IdentityError> for KubeletError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::NoBootstrap { path, pki, reason } => {
                Self::NoBootstrap { path, pki, reason }
            }
            IdentityError::Client(e) => e.into(),
        }
    }
}

impl From<ClientError> for KubeletError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Build { server, reason } => Self::Client { server, reason },
        }
    }
}

impl KubeletError {
    /// How long the API server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Csr(e) | Self::Api { source: e, .. } => e.retry_after(),
            _ => None,
        }
    }

    /// A 401 or 403: retrying soon cannot help, only credentials or RBAC.
    pub fn is_auth(&self) -> bool {
        match self {
            Self::Csr(e) | Self::Api { source: e, .. } => {
                e.api_failure().is_some_and(|f| f.is_auth())
            }
            _ => false,
        }
    }
}

/// What a pass found and did.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// Unix time of the next scheduled renewal, if any certificate is managed.
    pub next_deadline: Option<i64>,
    pub renewed: Vec<CertKind>,
    /// Units restarted for new certificates (after a renewal of this pass,
    /// or one an interrupted pass installed).
    pub restarted: Vec<String>,
    /// What failed, certificate by certificate; the others went on.
    pub failures: Vec<KubeletError>,
    /// How the RenewRevocations could be read.
    pub revocations: SourceState,
    /// Why each renewal happened, in the order of `renewed`.
    pub reasons: Vec<(CertKind, RenewReason)>,
    /// RenewRevocation entries (labels) that no new certificate can
    /// satisfy (one issued in a renewal matched them too) and that the
    /// certificates current after the pass match: reported after every pass
    /// while they stand, never a reason to renew. The certificates are still
    /// renewed at their normal deadlines.
    pub unfixable_revocations: Vec<String>,
    /// Those of `unfixable_revocations` found in this pass, to announce
    /// once (the log says so when they are found); the others were
    /// announced by an earlier pass.
    pub unfixable_found: Vec<String>,
    pub monitoring_only: bool,
    /// The client certificate current after the pass, if there is one.
    pub client: Option<ClientTimes>,
    /// kubelet's kubeconfig presents another credential than the client
    /// certificate the agent renews (what it presents instead), so kubelet
    /// never reads the renewed one; `None` when it matches, is absent, or
    /// kubelet renews its own certificate.
    pub kubeconfig_mismatch: Option<KubeconfigMismatch>,
    /// The serving certificate the agent renews is not the one kubelet
    /// serves; `None` when it is, or the serving certificate is off.
    pub serving_unused: Option<ServingUnused>,
}

/// The opt-in serving certificate is renewed, but kubelet does not serve
/// it: its `tlsCertFile` names another file, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingUnused {
    /// Node path of `kubelet-server-current.pem`.
    pub renewed: PathBuf,
    /// What kubelet serves instead (`None`: its own, self-signed or
    /// bootstrapped, from its cert directory).
    pub kubelet_serves: Option<PathBuf>,
    /// kubelet requests its serving certificate itself.
    pub kubelet_rotates: bool,
}

/// What kubelet's kubeconfig presents, and the link the agent renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigMismatch {
    pub uses: String,
    /// Node path of `kubelet-client-current.pem`.
    pub renewed: PathBuf,
}

/// When the current client certificate expires and is due for renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimes {
    pub not_before: i64,
    pub not_after: i64,
    /// Its renewal deadline (Unix seconds).
    pub deadline: i64,
    /// kubelet rotates it itself (`rotateCertificates`, deferred to): the
    /// agent only monitors it, and kubelet's own deadline applies.
    pub kubelet_rotates: bool,
}

pub struct KubeletManager<S: Systemd> {
    host: HostRoot,
    identity: IdentitySource,
    store: KubeletStore,
    systemd: S,
    settings: KubeletSettings,
    node_name: String,
    serving: Option<(Vec<String>, Vec<IpAddr>)>,
    lock_path: PathBuf,
    write_kubeconfig: bool,
    /// The daemon's watched RenewRevocations; `None` lists them per pass.
    revocation_cache: Option<Arc<RevocationCache>>,
    /// What the job learned of the RenewRevocation entries
    /// ([`RevocationMemory`]), also kept in
    /// `<state-dir>/kubelet-revocations.json` so a restart of the agent
    /// renews nothing again.
    revocation_memory: std::sync::Mutex<RevocationMemory>,
    /// The kubelet unit's command line and environment as systemd last
    /// told them: kept, so a D-Bus outage changes no decision.
    kubelet_exec: std::sync::Mutex<Option<UnitExec>>,
}

impl<S: Systemd> KubeletManager<S> {
    pub fn new(host: HostRoot, systemd: S, job: KubeletJob) -> Self {
        let store = KubeletStore::new(host.clone(), job.settings.pki_dir.clone());
        let identity = IdentitySource::new(host.clone(), &job.settings);
        Self {
            host,
            identity,
            store,
            systemd,
            settings: job.settings,
            node_name: job.node_name,
            serving: job.serving,
            lock_path: job.lock_path,
            write_kubeconfig: job.write_kubeconfig,
            revocation_cache: None,
            revocation_memory: std::sync::Mutex::new(RevocationMemory::default()),
            kubelet_exec: std::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &KubeletSettings {
        &self.settings
    }

    /// The node whose certificates this manager keeps.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The job as given to [`KubeletManager::new`], for a second manager
    /// of the same node (the event sink's identity source).
    pub fn job(&self) -> KubeletJob {
        KubeletJob {
            settings: self.settings.clone(),
            node_name: self.node_name.clone(),
            serving: self.serving.clone(),
            lock_path: self.lock_path.clone(),
            write_kubeconfig: self.write_kubeconfig,
        }
    }

    /// Reads RenewRevocations from `cache` (kept current by the daemon's
    /// watch) instead of listing them every pass.
    pub fn with_revocation_cache(mut self, cache: Arc<RevocationCache>) -> Self {
        self.revocation_cache = Some(cache);
        self
    }

    /// kubelet's effective settings: its unit's command line (over
    /// D-Bus; the last answer if systemd cannot be asked now), its config
    /// file and drop-ins.
    pub async fn effective_kubelet(&self) -> EffectiveKubelet {
        let unit = self.settings.kubelet_unit();
        let exec = match self.systemd.unit_exec(unit).await {
            Ok(exec) => {
                if let Ok(mut kept) = self.kubelet_exec.lock() {
                    *kept = Some(exec.clone());
                }
                Some(exec)
            }
            Err(e) => {
                let kept = self.kubelet_exec.lock().ok().and_then(|k| k.clone());
                warn!(
                    unit,
                    "cannot read {unit}'s command line over D-Bus ({e}); {}",
                    if kept.is_some() {
                        "kubelet's flags as last read count"
                    } else {
                        "only kubelet's config file counts until it can"
                    }
                );
                kept
            }
        };
        EffectiveKubelet::read(&self.host, exec.as_ref(), &self.settings.kubelet_config)
    }

    fn lock(&self) -> Result<Flock<File>, KubeletError> {
        lock_exclusive(&self.lock_path).map_err(KubeletError::Lock)
    }

    /// One pass over the managed certificates. `force` renews now.
    ///
    /// Each certificate is its own unit of work: the client certificate
    /// first, then the serving one with the newest client identity. A
    /// certificate that was installed always gets its kubelet restart,
    /// whatever happens to the other one; the failures are returned in the
    /// outcome. Only a failure to take the lock fails the whole pass.
    pub async fn pass(&self, force: bool) -> Result<PassOutcome, KubeletError> {
        let _lock = self.lock()?;
        // A renewal killed mid-write leaves its temp file: clear it now that
        // no other writer of ours can be in flight.
        match self.store.sweep_leftovers() {
            Ok(0) => {}
            Ok(n) => {
                info!(pki_dir = %self.store.dir().display(), "removed {n} leftover temp file(s) of an interrupted renewal")
            }
            Err(e) => warn!("{e}"),
        }
        let now = now_unix();
        let mut outcome = PassOutcome::default();
        // A restart an interrupted pass owed kubelet comes first.
        if let Err(e) = self.finish_restarts(&mut outcome).await {
            outcome.failures.push(e);
        }
        let revocations = self.revocations(now, &mut outcome).await;
        let kubelet = self.effective_kubelet().await;
        // What another process (`renew`, or this agent before a restart)
        // learned, joined with what this one knows.
        let kept = self.recall_revocations();
        if outcome.revocations == SourceState::Synced {
            self.with_memory(|m| m.retain_listed(&revocations));
        }

        // The Node's addresses (the serving certificate's names, unless
        // configured) and kubelet's version: one GET per pass, only with
        // the serving certificate on.
        let mut kinds = vec![CertKind::Client];
        if self.serving.is_some() {
            kinds.push(CertKind::Serving);
        }
        for kind in kinds {
            // The serving certificate's names: configured, or the Node's
            // addresses, read (with kubelet's version) after the client
            // certificate is settled, so a bootstrap in this pass can read.
            let (purpose, follow, kubelet_version) = match kind {
                CertKind::Client => (Purpose::Client, None, None),
                CertKind::Serving => match self.serving_purpose().await {
                    Ok(p) => p,
                    Err(e) => {
                        outcome.failures.push(e);
                        continue;
                    }
                },
            };
            // The newest client certificate: one renewed a moment ago is
            // the serving CSR's identity.
            let client_current = self.read_current(CertKind::Client);
            let current = if kind == CertKind::Client {
                client_current.clone()
            } else {
                self.read_current(kind)
            };
            let Some(reason) = self.due(
                kind,
                &kubelet,
                follow.as_ref(),
                current.as_ref(),
                force,
                now,
                &revocations,
                &mut outcome,
            ) else {
                continue;
            };
            if kind == CertKind::Client {
                let facts = current.as_ref().map(facts_of);
                let link = self.store.current_link(kind);
                if let Err(e) = scope::check_renewal_name(facts.as_ref(), &self.node_name, &link) {
                    error!(cert = kind.name(), "{e}");
                    outcome.failures.push(e.into());
                    continue;
                }
            }
            info!(cert = kind.name(), reason = %reason, "renewing the kubelet {} certificate: {reason}", kind.name());
            let usable_client = client_current
                .as_ref()
                .filter(|c| identity::is_usable(c, now));
            if let Err(e) = self
                .renew(
                    kind,
                    &purpose,
                    usable_client,
                    now,
                    &kubelet,
                    kubelet_version,
                )
                .await
            {
                error!(
                    cert = kind.name(),
                    "renewing the kubelet {} certificate failed: {}",
                    kind.name(),
                    error_chain(&e)
                );
                outcome.failures.push(e);
                continue;
            }
            self.learn_unsatisfiable(kind, &revocations, now_unix(), &mut outcome);
            outcome.reasons.push((kind, reason.clone()));
            outcome.renewed.push(kind);
            // kubelet reads its certificates at start: restart it now, so a
            // renewal never waits on (or is lost with) the next certificate.
            if let Err(e) = self.finish_restarts(&mut outcome).await {
                outcome.failures.push(e);
            }
        }
        // The new certificates set the next deadline (a revocation that
        // takes effect later may come first).
        for kind in &outcome.renewed {
            if let Some(d) = self.next_renewal(*kind, &revocations) {
                outcome.next_deadline = Some(outcome.next_deadline.map_or(d, |x| x.min(d)));
            }
        }
        // A first sighting is kept while the entry matches a current
        // certificate; then what was learned goes to the state directory.
        let current: Vec<CertFacts> = [CertKind::Client, CertKind::Serving]
            .into_iter()
            .filter_map(|kind| self.read_current(kind).as_ref().map(facts_of))
            .collect();
        self.with_memory(|m| m.first_seen.retain_matching(&current));
        self.keep_revocations(kept.as_ref());
        let kubelet_rotates = self.settings.defer_to_kubelet_rotation && kubelet.rotation.client;
        outcome.serving_unused = self.serving.as_ref().and_then(|_| {
            let link = self.store.current_link(CertKind::Serving);
            (kubelet.tls_cert_file.as_deref() != Some(link.as_path())).then(|| ServingUnused {
                renewed: link,
                kubelet_serves: kubelet.tls_cert_file.clone(),
                kubelet_rotates: kubelet.rotation.serving,
            })
        });
        if !kubelet_rotates {
            outcome.kubeconfig_mismatch = self.kubeconfig_mismatch();
        }
        outcome.unfixable_revocations = self.standing_unsatisfiable();
        outcome.client = self
            .read_current(CertKind::Client)
            .as_ref()
            .map(facts_of)
            .map(|f| ClientTimes {
                not_before: f.not_before,
                not_after: f.not_after,
                kubelet_rotates,
                deadline: renewal::deadline(
                    f.not_before,
                    f.not_after,
                    renewal::renewal_fraction(&self.node_name),
                ),
            });
        Ok(outcome)
    }

    /// Why the certificate `kind` is to be renewed now, if it is; else its
    /// deadline joins `outcome.next_deadline`.
    #[allow(clippy::too_many_arguments, reason = "one pass's inputs")]
    fn due(
        &self,
        kind: CertKind,
        kubelet: &EffectiveKubelet,
        names: Option<&NodeFacts>,
        current: Option<&CurrentCert>,
        force: bool,
        now: i64,
        revocations: &[Revocation],
        outcome: &mut PassOutcome,
    ) -> Option<RenewReason> {
        let facts = current.map(facts_of);
        if let Some(f) = &facts {
            self.with_memory(|m| m.first_seen.note(revocations, f, now));
        }
        let memory = self.memory();
        let known = &memory.unsatisfiable[slot(kind)];
        let (decision, bad) = renewal::decide_except(
            facts.as_ref(),
            &self.node_name,
            now,
            revocations,
            memory.context(kind, self.settings.revocation_spread),
        );
        for (r, e) in bad {
            warn!(revocation = %r.label(), "ignoring a RenewRevocation entry: {e}");
        }
        let mut schedule = |deadline: i64| {
            outcome.next_deadline =
                Some(outcome.next_deadline.map_or(deadline, |d| d.min(deadline)));
        };
        // A serving certificate named after the Node's addresses follows
        // them, as kubelet's certificate manager does.
        let names_changed = names
            .zip(facts.as_ref())
            .and_then(|(n, f)| n.differs_from(f))
            .map(|(has, wants)| RenewReason::NamesChanged { has, wants });
        let reason = match (decision, names_changed) {
            _ if force => RenewReason::Forced,
            (Decision::RenewNow(reason), _) => reason,
            (_, Some(changed)) => changed,
            (Decision::RenewAt { deadline, .. }, None) if deadline <= now => {
                RenewReason::Due { deadline }
            }
            (
                Decision::RenewRevokedAt {
                    at,
                    label,
                    deadline,
                },
                None,
            ) => {
                let spread_s = self.settings.revocation_spread.as_secs();
                info!(
                    cert = kind.name(),
                    revocation = %label,
                    renew_at = %rfc3339(at),
                    deadline = %rfc3339(deadline),
                    spread_s,
                    "kubelet {} certificate is revoked ({label}); renewing it at {}: this node's share of the {spread_s} s revocation spread (kubelet.revocation-spread-seconds) after the revocation was seen or took effect, so that the nodes it revokes do not all renew at once; never later than its normal deadline {}",
                    kind.name(),
                    rfc3339(at),
                    rfc3339(deadline)
                );
                schedule(at);
                return None;
            }
            (Decision::RenewAt { deadline, fraction }, None) => {
                let standing: Vec<String> = facts
                    .as_ref()
                    .map(|f| known.matching(f).map(Revocation::label).collect())
                    .unwrap_or_default();
                let not_after = facts
                    .as_ref()
                    .map(|f| rfc3339(f.not_after))
                    .unwrap_or_default();
                if standing.is_empty() {
                    info!(
                        cert = kind.name(),
                        deadline = %rfc3339(deadline),
                        fraction = format!("{fraction:.3}"),
                        not_after = %not_after,
                        "kubelet {} certificate is healthy; renewal scheduled at {} ({:.1} % of its lifetime)",
                        kind.name(),
                        rfc3339(deadline),
                        fraction * 100.0
                    );
                } else {
                    let labels = standing.join("; ");
                    info!(
                        cert = kind.name(),
                        deadline = %rfc3339(deadline),
                        fraction = format!("{fraction:.3}"),
                        not_after = %not_after,
                        revocations = %labels,
                        "kubelet {} certificate matches {labels}, which no new certificate can avoid; renewal scheduled at its normal deadline {} ({:.1} % of its lifetime)",
                        kind.name(),
                        rfc3339(deadline),
                        fraction * 100.0
                    );
                }
                schedule(deadline);
                return None;
            }
        };
        let kubelet_owns = match kind {
            CertKind::Client => kubelet.rotation.client,
            CertKind::Serving => kubelet.rotation.serving,
        };
        if !force && self.settings.defer_to_kubelet_rotation && kubelet_owns {
            outcome.monitoring_only = true;
            let setting = match kind {
                CertKind::Client => "rotateCertificates / --rotate-certificates",
                CertKind::Serving => "serverTLSBootstrap / --rotate-server-certificates",
            };
            warn!(
                cert = kind.name(),
                reason = %reason,
                kubelet_config = %kubelet.config_file.as_deref().map_or("(none: kubelet's command line names no --config)".into(), |p| p.display().to_string()),
                "kubelet rotates its own {} certificate ({setting}); node-cert-agent only monitors it and does not renew: {reason}",
                kind.name()
            );
            return None;
        }
        Some(reason)
    }

    /// When the certificate `kind` (just renewed) is to be renewed next:
    /// its deadline, or the time a revocation it still matches makes it due.
    fn next_renewal(&self, kind: CertKind, revocations: &[Revocation]) -> Option<i64> {
        let facts = self.read_current(kind).as_ref().map(facts_of)?;
        let now = now_unix();
        self.with_memory(|m| m.first_seen.note(revocations, &facts, now));
        let memory = self.memory();
        let (decision, _) = renewal::decide_except(
            Some(&facts),
            &self.node_name,
            now,
            revocations,
            memory.context(kind, self.settings.revocation_spread),
        );
        Some(match decision {
            Decision::RenewNow(_) => now,
            Decision::RenewAt { deadline, .. } => deadline,
            Decision::RenewRevokedAt { at, .. } => at,
        })
    }

    fn read_current(&self, kind: CertKind) -> Option<CurrentCert> {
        match self.store.current(kind) {
            Ok(c) => c,
            Err(e) => {
                warn!(
                    cert = kind.name(),
                    "the current kubelet {} certificate is unreadable and will be replaced: {e}",
                    kind.name()
                );
                None
            }
        }
    }

    fn state_path(&self) -> PathBuf {
        self.lock_path.with_file_name(KUBELET_STATE_FILE)
    }

    /// What kubelet's kubeconfig presents instead of the client certificate
    /// link the agent renews, if it presents something else. An absent
    /// kubeconfig is no mismatch (kubelet writes it after its bootstrap).
    fn kubeconfig_mismatch(&self) -> Option<KubeconfigMismatch> {
        let node_path = &self.settings.kubeconfig;
        let host = self.host.resolve(node_path).ok()?;
        let bytes = fsutil::read_limited(&host, MAX_KUBECONFIG_BYTES).ok()?;
        let renewed = self.store.current_link(CertKind::Client);
        let uses = match kubeconfig::credential_of(&String::from_utf8_lossy(&bytes), node_path) {
            Ok(kubeconfig::Credential::CertificateFile(p)) if p == renewed => return None,
            Ok(other) => other.to_string(),
            Err(e) => format!("nothing readable ({e})"),
        };
        Some(KubeconfigMismatch { uses, renewed })
    }

    /// The bootstrap and kubelet kubeconfigs as this process sees them.
    pub fn kubeconfig_paths(&self) -> Vec<PathBuf> {
        [
            &self.settings.bootstrap_kubeconfig,
            &self.settings.kubeconfig,
        ]
        .into_iter()
        .filter_map(|p| self.host.resolve(p).ok())
        .collect()
    }

    /// A client with the node's current identity, for watches.
    pub fn node_client(&self) -> Option<kube::Client> {
        let current = self.read_current(CertKind::Client);
        self.identity.node_client(current.as_ref(), now_unix())
    }
}

/// A kubeconfig larger than this is not kubelet's.
const MAX_KUBECONFIG_BYTES: u64 = 1024 * 1024;

/// The index of `kind`'s entry in the manager's per-certificate state.
fn slot(kind: CertKind) -> usize {
    match kind {
        CertKind::Client => 0,
        CertKind::Serving => 1,
    }
}

/// Where the lock lives for a given state dir (a process path).
pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("kubelet.lock")
}

mod renew;
mod revocations;
#[cfg(test)]
mod tests;
