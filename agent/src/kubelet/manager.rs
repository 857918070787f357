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
use openssl::x509::X509;
use tracing::{error, info, warn};

pub use crate::config::KubeletSettings;
use crate::errors::error_chain;
use crate::k8s::client::{build_client, ClientError};
use crate::k8s::kubeconfig::{self, KubeconfigError, ResolvedKubeconfig};
use crate::kubelet::csr::{self, CsrError, Purpose};
use crate::kubelet::facts::facts_of;
use crate::kubelet::facts::CertFacts;
use crate::kubelet::identity::{self, IdentityError, IdentitySource};
use crate::kubelet::kubelet_config::EffectiveKubelet;
use crate::kubelet::node_facts::NodeFacts;
use crate::kubelet::renewal::{
    self, Decision, FirstSeen, RenewReason, RevocationContext, Unsatisfiable,
};
use crate::kubelet::restart_rule;
use crate::kubelet::revocation::{self, Revocation, RevocationCache, SourceState};
use crate::kubelet::scope::{self, NodeNameError};
use crate::kubelet::state::{
    self as kubelet_state, KubeletState, KubeletStateError, RevocationRecords, SeenRecord,
    KUBELET_REVOCATIONS_FILE, KUBELET_STATE_FILE,
};
use crate::kubelet::store::{CertKind, CurrentCert, KubeletStore, StoreError};
use crate::node::fsutil::{self, FsError};
use crate::node::hostroot::{HostRoot, HostRootError};
use crate::node::lock::{lock_exclusive, LockError};
use crate::node::systemd::{Systemd, SystemdError, UnitExec};
use crate::time::{now_unix, parse_rfc3339, rfc3339};
use crate::x509::cert::CertInfo;

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

/// What the job learned of the RenewRevocation entries, each kept while it
/// stands unchanged in a complete list:
///
/// - when each was first seen to match a current certificate (renewal.rs's
///   [`FirstSeen`]): the node renews at its share of the revocation spread
///   after that, however often the pass runs in between, or the agent
///   restarts;
/// - per certificate, those no new certificate can satisfy (renewal.rs's
///   [`Unsatisfiable`]): a revocation without notBefore can match every
///   certificate this node can get (say, a whole group), and renewing for
///   it again would be a CSR storm, so it is reported instead and the
///   certificate renewed at its deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RevocationMemory {
    first_seen: FirstSeen,
    /// By [`slot`].
    unsatisfiable: [Unsatisfiable; 2],
}

impl RevocationMemory {
    /// From the file; a time that does not parse is skipped (seen afresh).
    fn from_records(records: &RevocationRecords) -> Self {
        let first_seen = FirstSeen::from_entries(
            records
                .seen
                .iter()
                .filter_map(|s| Some((s.entry.clone(), parse_rfc3339(&s.first_seen)?)))
                .collect(),
        );
        let unsatisfiable = [CertKind::Client, CertKind::Serving].map(|kind| {
            Unsatisfiable::from_entries(
                records
                    .unsatisfiable
                    .get(kind.name())
                    .cloned()
                    .unwrap_or_default(),
            )
        });
        Self {
            first_seen,
            unsatisfiable,
        }
    }

    fn to_records(&self) -> RevocationRecords {
        RevocationRecords {
            seen: self
                .first_seen
                .entries()
                .iter()
                .map(|(entry, at)| SeenRecord {
                    entry: entry.clone(),
                    first_seen: rfc3339(*at),
                })
                .collect(),
            unsatisfiable: [CertKind::Client, CertKind::Serving]
                .into_iter()
                .filter(|kind| !self.unsatisfiable[slot(*kind)].entries().is_empty())
                .map(|kind| {
                    (
                        kind.name().to_string(),
                        self.unsatisfiable[slot(kind)].entries().to_vec(),
                    )
                })
                .collect(),
            ..RevocationRecords::default()
        }
    }

    fn merge(&mut self, other: &Self) {
        self.first_seen.merge(&other.first_seen);
        for (mine, theirs) in self.unsatisfiable.iter_mut().zip(&other.unsatisfiable) {
            mine.merge(theirs);
        }
    }

    /// Forgets what a complete list no longer holds unchanged.
    fn retain_listed(&mut self, listed: &[Revocation]) {
        self.first_seen.retain_listed(listed);
        for known in &mut self.unsatisfiable {
            known.retain_listed(listed);
        }
    }

    /// The decision's view for certificate `kind`.
    fn context(&self, kind: CertKind, spread: Duration) -> RevocationContext<'_> {
        RevocationContext {
            unsatisfiable: &self.unsatisfiable[slot(kind)],
            first_seen: &self.first_seen,
            spread,
        }
    }
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

    /// After a renewal of `kind`: the listed entries that the certificate
    /// just issued matches cannot be satisfied by renewing. Each is said
    /// once, when found, and not renewed for again.
    fn learn_unsatisfiable(
        &self,
        kind: CertKind,
        revocations: &[Revocation],
        now: i64,
        outcome: &mut PassOutcome,
    ) {
        let Some(issued) = self.read_current(kind).as_ref().map(facts_of) else {
            return;
        };
        let found =
            self.with_memory(|m| m.unsatisfiable[slot(kind)].learn(revocations, &issued, now));
        let next = rfc3339(renewal::deadline(
            issued.not_before,
            issued.not_after,
            renewal::renewal_fraction(&self.node_name),
        ));
        for r in found {
            let label = r.label();
            let why = match &r.not_before {
                None => "without a notBefore it revokes every certificate this node can get".to_string(),
                Some(cutoff) => format!(
                    "its notBefore {cutoff} has passed, yet the new certificate counts as issued before it (its notBefore {} plus the {} s by which kube-controller-manager's signer backdates): the signer's clock is behind, or it backdates by more",
                    rfc3339(issued.not_before),
                    revocation::SIGNER_BACKDATE
                ),
            };
            error!(
                cert = kind.name(),
                revocation = %label,
                next_renewal = %next,
                "the kubelet {} certificate issued just now matches {label} too: {why}, so renewing again cannot help. The agent does not renew for it again while the entry stands unchanged, and renews the certificate at its normal deadline {next}. Give the entry a notBefore (only certificates issued before it are revoked) or narrow it",
                kind.name()
            );
            if !outcome.unfixable_found.contains(&label) {
                outcome.unfixable_found.push(label);
            }
        }
    }

    /// The unsatisfiable entries the current certificates match, by label.
    fn standing_unsatisfiable(&self) -> Vec<String> {
        let mut labels = Vec::new();
        let memory = self.memory();
        for kind in [CertKind::Client, CertKind::Serving] {
            let known = &memory.unsatisfiable[slot(kind)];
            if known.entries().is_empty() {
                continue;
            }
            let Some(facts) = self.read_current(kind).as_ref().map(facts_of) else {
                continue;
            };
            for r in known.matching(&facts) {
                let label = r.label();
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
        }
        labels
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

    fn memory(&self) -> RevocationMemory {
        self.with_memory(|m| m.clone())
    }

    fn with_memory<T>(&self, f: impl FnOnce(&mut RevocationMemory) -> T) -> T {
        // A panic while holding it leaves plain data behind: still the best
        // knowledge there is.
        let mut memory = self
            .revocation_memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut memory)
    }

    /// Joins what the revocation file holds into what this process knows,
    /// and returns it as read (`None`: unreadable, so it is written again).
    /// Memory stays the reference: a file that cannot be read or written
    /// costs at most one renewal after a restart of the agent, never a
    /// renewal per pass.
    fn recall_revocations(&self) -> Option<RevocationMemory> {
        match kubelet_state::load_revocations(&self.revocations_path()) {
            Ok(records) => {
                let kept = RevocationMemory::from_records(&records);
                self.with_memory(|m| m.merge(&kept));
                Some(kept)
            }
            Err(e) => {
                warn!("{e}");
                None
            }
        }
    }

    /// Writes what this process knows to the revocation file, when it
    /// differs from what the file held (`kept`).
    fn keep_revocations(&self, kept: Option<&RevocationMemory>) {
        let memory = self.memory();
        if kept == Some(&memory) {
            return;
        }
        let path = self.revocations_path();
        if let Err(e) = kubelet_state::save_revocations(&path, &memory.to_records()) {
            warn!(
                path = %path.display(),
                "{e}; what the agent learned of the RenewRevocations is kept in memory only: after a restart of the agent a revoked certificate may be renewed once more"
            );
        }
    }

    fn revocations_path(&self) -> PathBuf {
        self.lock_path.with_file_name(KUBELET_REVOCATIONS_FILE)
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

    async fn renew(
        &self,
        kind: CertKind,
        purpose: &Purpose,
        usable_client: Option<&CurrentCert>,
        now: i64,
        kubelet: &EffectiveKubelet,
        kubelet_version: Option<(u32, u32)>,
    ) -> Result<(), KubeletError> {
        let (kc, identity) = self.identity.choose(usable_client)?;
        let client = build_client(&kc)?;
        // The key of a CSR still in flight (a retry, or an agent restarted
        // while it waited) is used again: the same key names the same CSR.
        let key = match self.store.pending_key(kind)? {
            Some(key) => key,
            None => {
                let key = csr::generate_key(self.settings.key_type)?;
                self.store.save_pending_key(kind, &key)?;
                key
            }
        };
        let request = csr::build_request(&key, &self.node_name, purpose)?;
        let usages = csr::usages_of(purpose, self.settings.key_type);
        let name = csr::csr_name(&key, &self.node_name, &usages)?;
        let object = csr::csr_object(
            &name,
            request,
            purpose,
            self.settings.key_type,
            self.settings.expiration_seconds,
        );
        info!(cert = kind.name(), csr = %name, identity, server = %kc.server, "requesting a kubelet {} certificate with CertificateSigningRequest {name}", kind.name());
        let waited = csr::submit_and_wait(
            &client,
            &object,
            &key,
            self.settings.api_timeout,
            self.settings.csr_timeout,
        )
        .await;
        let (csr_name, chain_pem) = match waited {
            Ok(ok) => ok,
            Err(source) => {
                if source.ends_the_request() {
                    // The next attempt files a new request with a new key.
                    self.store.remove_pending_key(kind)?;
                }
                return Err(KubeletError::Api {
                    server: kc.server.clone(),
                    source,
                });
            }
        };
        let verified = match csr::verify_issued(
            &csr_name,
            &chain_pem,
            &key,
            &self.node_name,
            kc.ca_pem.as_deref(),
            now_unix(),
        ) {
            Ok(v) => v,
            Err(e) => {
                self.store.remove_pending_key(kind)?;
                return Err(e.into());
            }
        };
        if let Some(w) = &verified.chain_warning {
            warn!(
                cert = kind.name(),
                csr = %csr_name,
                "the kubelet {} certificate from CSR {csr_name}: {w}; installed anyway, as kubelet does (some clusters sign kubelet certificates with another CA than the API server's)",
                kind.name()
            );
        }
        let key_pem = key
            .private_key_to_pem_pkcs8()
            .map_err(|e| CsrError::Rejected {
                name: csr_name.clone(),
                reason: crate::x509::openssl_reason(&e),
            })?;
        // Whether kubelet picks the new file up itself (restart_rule.rs).
        let facts = self.restart_facts(kind, identity, usable_client, kubelet, kubelet_version);
        let restart_reason = restart_rule::restart_reason(kind, &facts, now_unix());
        match &restart_reason {
            Some(why) => info!(
                cert = kind.name(),
                units = %self.settings.restart_units.join(", "),
                "kubelet is restarted for the new {} certificate: {why}",
                kind.name()
            ),
            None => info!(
                cert = kind.name(),
                "no kubelet restart for the new {} certificate: kubelet re-reads the file itself ({})",
                kind.name(),
                match kind {
                    CertKind::Client => "client-go re-reads its kubeconfig's certificate files every 5 minutes",
                    CertKind::Serving => "kubelet 1.31 and later reload tlsCertFile",
                }
            ),
        }
        // Recorded before the certificate becomes current: whatever stops
        // the agent now, the next pass restarts kubelet for it. A failed
        // install takes it back: kubelet has nothing new to read, and every
        // retry would otherwise restart it again.
        let state_path = self.state_path();
        let before = kubelet_state::load(&state_path)?;
        if restart_reason.is_some() {
            let mut state = before.clone();
            state
                .restart_pending
                .extend(self.settings.restart_units.iter().cloned());
            kubelet_state::save(&state_path, &state)?;
        }
        let path = match self.store.install(kind, &chain_pem, &key_pem, now) {
            Ok(path) => path,
            Err(e) => {
                self.withdraw_restart(kind, &verified.leaf, &before);
                return Err(e.into());
            }
        };
        self.store.remove_pending_key(kind)?;
        if kind == CertKind::Client && identity == identity::BOOTSTRAP {
            self.write_kubelet_kubeconfig(&kc)?;
        }
        let info = verified
            .leaf
            .to_der()
            .ok()
            .and_then(|d| CertInfo::from_der(&d).ok());
        if let Some(info) = info {
            let next = renewal::deadline(
                info.not_before,
                info.not_after,
                renewal::renewal_fraction(&self.node_name),
            );
            info!(
                cert = kind.name(),
                csr = %csr_name,
                subject = %info.subject,
                serial = %info.serial,
                not_after = %rfc3339(info.not_after),
                next_renewal = %rfc3339(next),
                path = %path.display(),
                "installed a new kubelet {} certificate from CSR {csr_name}: {}; next renewal at {}",
                kind.name(),
                info.describe(),
                rfc3339(next)
            );
        }
        Ok(())
    }

    /// What [`restart_rule::restart_reason`] looks at for a new
    /// certificate of `kind`.
    fn restart_facts(
        &self,
        kind: CertKind,
        identity: &str,
        usable_client: Option<&CurrentCert>,
        kubelet: &EffectiveKubelet,
        kubelet_version: Option<(u32, u32)>,
    ) -> restart_rule::RestartFacts {
        match kind {
            CertKind::Client => {
                let bootstrapped = identity == identity::BOOTSTRAP;
                let kubeconfig_absent = self
                    .host
                    .resolve(&self.settings.kubeconfig)
                    .map_or(true, |p| std::fs::symlink_metadata(p).is_err());
                restart_rule::RestartFacts {
                    bootstrapped,
                    kubeconfig_written: bootstrapped && self.write_kubeconfig && kubeconfig_absent,
                    // With its own rotation, kubelet's client uses the
                    // certificate manager's certificate, not the files.
                    kubelet_reads_the_file: !kubelet.rotation.client
                        && !kubeconfig_absent
                        && self.kubeconfig_mismatch().is_none(),
                    old_not_after: usable_client.map(|c| facts_of(c).not_after),
                    ..Default::default()
                }
            }
            CertKind::Serving => {
                let link = self.store.current_link(CertKind::Serving);
                restart_rule::RestartFacts {
                    // With serverTLSBootstrap, kubelet serves its own.
                    kubelet_reads_the_file: !kubelet.rotation.serving
                        && kubelet.tls_cert_file.as_deref() == Some(link.as_path()),
                    old_not_after: self
                        .read_current(CertKind::Serving)
                        .as_ref()
                        .map(|c| facts_of(c).not_after),
                    kubelet_version,
                    serving_reload_gate: kubelet.serving_reload_gate,
                    ..Default::default()
                }
            }
        }
    }

    /// The serving certificate's purpose: its names (configured, or the
    /// Node's addresses, which it then follows), and kubelet's version from
    /// the Node (one GET per pass with the serving certificate on).
    async fn serving_purpose(
        &self,
    ) -> Result<(Purpose, Option<NodeFacts>, Option<(u32, u32)>), KubeletError> {
        let (dns, ips) = self.serving.clone().unwrap_or_default();
        let node = self.read_node().await;
        let version = node.as_ref().ok().and_then(|n| n.kubelet_version);
        if !dns.is_empty() || !ips.is_empty() {
            return Ok((Purpose::Serving { dns, ips }, None, version));
        }
        let reason = match node {
            Ok(n) if !n.has_no_names() => {
                let purpose = Purpose::Serving {
                    dns: n.dns.clone(),
                    ips: n.ips.clone(),
                };
                return Ok((purpose, Some(n), version));
            }
            Ok(_) => "its status.addresses hold no IP or DNS name".to_string(),
            Err(reason) => reason,
        };
        Err(KubeletError::NodeAddresses {
            node: self.node_name.clone(),
            reason,
        })
    }

    /// The node's own Node, read as the node (its current client
    /// certificate): its addresses and kubelet's version, or why not.
    async fn read_node(&self) -> Result<NodeFacts, String> {
        let Some(client) = self.node_client() else {
            return Err("the node has no usable client certificate to read it with".into());
        };
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        match tokio::time::timeout(self.settings.api_timeout, api.get(&self.node_name)).await {
            Ok(Ok(node)) => Ok(NodeFacts::of(&node)),
            Ok(Err(e)) => Err(format!("GET Node {}: {e}", self.node_name)),
            Err(_) => Err(format!(
                "GET Node {} took longer than {} s",
                self.node_name,
                self.settings.api_timeout.as_secs()
            )),
        }
    }

    /// After a failed install of `issued`: the kubelet state as it was
    /// before (`before`), so no restart is owed for it, unless `issued`
    /// became current all the same.
    fn withdraw_restart(&self, kind: CertKind, issued: &X509, before: &KubeletState) {
        let current = self.read_current(kind);
        let installed = current.is_some_and(|c| c.cert.to_der().ok() == issued.to_der().ok());
        if installed {
            return;
        }
        if let Err(e) = kubelet_state::save(&self.state_path(), before) {
            error!(
                cert = kind.name(),
                "the new kubelet {} certificate was not installed, but the restart recorded for it could not be withdrawn ({e}): the next pass restarts {} once without a new certificate",
                kind.name(),
                self.settings.restart_units.join(", ")
            );
        }
    }

    /// After a bootstrap, kubelet's kubeconfig as kubelet itself writes it
    /// (the bootstrap's server and CA, and `kubelet-client-current.pem` as
    /// client certificate and key), when the job is told to (host mode) and
    /// the file is absent. An existing kubeconfig is never touched.
    fn write_kubelet_kubeconfig(&self, bootstrap: &ResolvedKubeconfig) -> Result<(), KubeletError> {
        if !self.write_kubeconfig {
            return Ok(());
        }
        let node_path = &self.settings.kubeconfig;
        let host = self.host.resolve(node_path)?;
        if std::fs::symlink_metadata(&host).is_ok() {
            return Ok(());
        }
        let cert = self.store.current_link(CertKind::Client);
        let yaml = kubeconfig::kubelet_kubeconfig(bootstrap, &cert).map_err(|e| {
            KubeletError::RenderKubeconfig {
                path: node_path.clone(),
                reason: e.to_string(),
            }
        })?;
        if let Some(dir) = host.parent() {
            fsutil::ensure_dir(dir, 0o755).map_err(|source| KubeletError::WriteKubeconfig {
                path: node_path.clone(),
                source: Box::new(source),
            })?;
        }
        fsutil::write_atomic(&host, yaml.as_bytes(), 0o600).map_err(|source| {
            KubeletError::WriteKubeconfig {
                path: node_path.clone(),
                source: Box::new(source),
            }
        })?;
        info!(kubeconfig = %node_path.display(), client_certificate = %cert.display(), "wrote kubelet's kubeconfig {} after the bootstrap, as kubelet does: server and CA of the bootstrap kubeconfig, client certificate {}", node_path.display(), cert.display());
        Ok(())
    }

    /// Restarts the units a newly installed certificate still waits for
    /// (recorded in the kubelet state file), and clears them once done.
    async fn finish_restarts(&self, outcome: &mut PassOutcome) -> Result<(), KubeletError> {
        let path = self.state_path();
        let mut state = kubelet_state::load(&path)?;
        // Only allowlisted units, even if an older config left others.
        state
            .restart_pending
            .retain(|u| self.settings.restart_units.contains(u));
        let pending: Vec<String> = state.restart_pending.iter().cloned().collect();
        for unit in pending {
            let job = self
                .systemd
                .try_restart_unit(&unit)
                .await
                .map_err(|source| KubeletError::Restart {
                    unit: unit.clone(),
                    source,
                })?;
            if !job.is_done() {
                return Err(KubeletError::RestartFailed {
                    unit: unit.clone(),
                    result: job.0,
                });
            }
            info!(unit = %unit, job_result = %job.0, "restarted unit (if it was running) so it uses the new certificate");
            state.restart_pending.remove(&unit);
            kubelet_state::save(&path, &state)?;
            outcome.restarted.push(unit);
        }
        Ok(())
    }

    /// The RenewRevocation entries: the daemon's watched view when there is
    /// one (its state goes into the outcome), else one list with the node's
    /// identity (`renew`). A failure leaves the list empty (revocations only
    /// ever add renewals) and is reported, never silent.
    async fn revocations(&self, now: i64, outcome: &mut PassOutcome) -> Vec<Revocation> {
        if let Some(cache) = &self.revocation_cache {
            outcome.revocations = cache.state();
            return cache.entries();
        }
        let current = self.read_current(CertKind::Client);
        let Some(current) = current.filter(|c| identity::is_usable(c, now)) else {
            outcome.revocations = SourceState::NoIdentity;
            return Vec::new();
        };
        let Ok((kc, _)) = self.identity.choose(Some(&current)) else {
            outcome.revocations = SourceState::NoIdentity;
            return Vec::new();
        };
        let namespace = &self.settings.revocation_namespace;
        let failed = |message: String, forbidden: bool| {
            warn!(server = %kc.server, "{message}");
            SourceState::Failing { message, forbidden }
        };
        let client = match build_client(&kc) {
            Ok(c) => c,
            Err(e) => {
                outcome.revocations = failed(format!("cannot read RenewRevocations: {e}"), false);
                return Vec::new();
            }
        };
        let timeout = self.settings.api_timeout;
        match tokio::time::timeout(timeout, revocation::list_revocations(&client, namespace)).await
        {
            Ok(Ok(list)) => {
                outcome.revocations = SourceState::Synced;
                list
            }
            Ok(Err(e)) => {
                let forbidden = e.api_failure().is_some_and(|f| f.is_auth());
                outcome.revocations = failed(
                    format!(
                        "cannot read RenewRevocations in {namespace} from {}: {}",
                        kc.server,
                        error_chain(&e)
                    ),
                    forbidden,
                );
                Vec::new()
            }
            Err(_) => {
                outcome.revocations = failed(
                    format!(
                        "cannot read RenewRevocations in {namespace} from {}: the API server did not answer within {timeout:?}",
                        kc.server
                    ),
                    false,
                );
                Vec::new()
            }
        }
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

#[cfg(test)]
mod tests;
