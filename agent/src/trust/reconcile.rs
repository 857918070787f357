//! One pass of custom CA trust: read the inputs, validate, plan, write the
//! anchors, refresh the trust store and restart the allowlisted units.
//!
//! Every step that changes the node is recorded in the state file first, so
//! a pass cut short (crash, SIGKILL, a failed D-Bus call) is finished by the
//! next one, and a pass with nothing to do makes no write, no D-Bus call, no
//! refresh and no restart.
//!
//! The restart phase is [`crate::trust::restart`]'s: it respects each
//! unit's start limit ([`crate::trust::pacing`]), and after every restart
//! job the unit's own state decides what happened.
//!
//! Owns: the order of the phases and the state file between them.
//! Boundary: no restart decision of its own (that is `restart`'s), no
//! operator sink (it says what it did in its [`Outcome`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::k8s::source::SourceState;
use crate::node::systemd::{StartLimit, Systemd, SystemdError};
use crate::time::{now_unix, rfc3339, rfc3339_us};
use crate::trust::api_secret::SecretCache;
use crate::trust::pacing::{self, PacingError};
use crate::trust::plan::{self, SourceInput};
use crate::trust::pull_trust::{
    self, Assessment, PullTrust, PullTrustError, RegistryHosts, RuntimeTrust, RUNTIME_UNIT,
};
use crate::trust::sources::{read_source, SourceSpec};
use crate::trust::state::{self, CaState, Pending, StateError};
use crate::trust::store::{Installed, TrustError, TrustStore};
use crate::trust::validate::{Finding, FindingKind, Severity};
use crate::x509::cert::{CertInfo, Fingerprint};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("refresh tool {command:?}: {source}")]
    RefreshCall {
        command: Vec<String>,
        source: SystemdError,
    },
    #[error("refresh tool {command:?} failed on the node (result {result}, exit status {status}); see `journalctl -u {unit}` on the node")]
    RefreshFailed {
        command: Vec<String>,
        unit: String,
        result: String,
        status: i32,
    },
    #[error("the trust bundle {} lacks {} CA(s) of the agent after the refresh ran ({}), even after a full rebuild; nothing is restarted. A p11-kit blocklist entry, another refresh running at the same time, or a bundle directory replaced under the agent can cause it: see `journalctl -u {unit}` on the node; the agent retries", bundle.display(), missing.len(), missing.join(", "))]
    BundleIncomplete {
        bundle: PathBuf,
        missing: Vec<String>,
        unit: String,
    },
    #[error("restart of {unit}: {source}")]
    RestartCall { unit: String, source: SystemdError },
    #[error("restart job for {unit} ended with result \"{result}\"; see `journalctl -u {unit}` on the node")]
    RestartFailed { unit: String, result: String },
    #[error("{unit} hit its start limit ({limit}) after the agent's restart and is stopped (Result=start-limit-hit); the agent resets it (ResetFailedUnit clears systemd's start counter) and starts it again at {}, with its next pass; see `journalctl -u {unit}` on the node", rfc3339_us(*.recover_at_us))]
    StartLimitHit {
        unit: String,
        limit: StartLimit,
        recover_at_us: u64,
    },
    #[error("{unit} is not restarted: a restart of dockerd without live-restore stops every container on the node ({reason}). Fix: set \"live-restore\": true in /etc/docker/daemon.json and reload dockerd, or take {unit} off restart-units")]
    RestartWouldStopContainers { unit: String, reason: String },
    #[error("{unit} is {load_state} on this node, so restarting it cannot make the new CAs effective; set restart-units to the unit that runs the container runtime here ({})", likely_runtime_units())]
    UnitMissing { unit: String, load_state: String },
    #[error("{unit} is failed (Result={result}) and was not running before the agent's restart, so the agent leaves it alone; it reads the new CAs when it starts: `systemctl reset-failed {unit} && systemctl start {unit}` on the node")]
    UnitFailed { unit: String, result: String },
    #[error("{unit} is stopped since the agent's restart hit its start limit ({limit}); the agent resets it and starts it again at {}, when its restart pacing allows", rfc3339_us(*.recover_at_us))]
    AwaitingRecovery {
        unit: String,
        limit: StartLimit,
        recover_at_us: u64,
    },
    #[error("restart job for {unit} ended \"{job_result}\", but {unit} did not start again (ActiveState={active_state}, SubState={sub_state}, Result={result}); see `journalctl -u {unit}` on the node")]
    NotActiveAfterRestart {
        unit: String,
        job_result: String,
        active_state: String,
        sub_state: String,
        result: String,
    },
    #[error(transparent)]
    History(#[from] PacingError),
    #[error(transparent)]
    PullTrust(#[from] PullTrustError),
}

impl ReconcileError {
    /// When the next pass should run, if this error knows (a unit waiting
    /// for its start limit's window); otherwise the caller's backoff.
    pub fn retry_at_us(&self) -> Option<u64> {
        match self {
            Self::StartLimitHit { recover_at_us, .. }
            | Self::AwaitingRecovery { recover_at_us, .. } => Some(*recover_at_us),
            _ => None,
        }
    }
}

/// What the agent needs to know for a pass.
#[derive(Clone, Debug)]
pub struct CaSettings {
    pub sources: Vec<SourceSpec>,
    /// The Secret read through the API, as its watch keeps it.
    pub api_secret: Option<Arc<SecretCache>>,
    /// How long after the bundle was written this node restarts units: its
    /// stable share of `restart-spread-seconds` ([`spread_offset`]).
    pub restart_delay: Duration,
    /// The allowlist: the only units ever restarted.
    pub restart_units: Vec<String>,
    /// The first spacing between two of the agent's restarts of one unit
    /// (`restart-min-spacing-seconds`; zero: none), doubling per recent
    /// restart ([`pacing::spaced_start`]).
    pub restart_spacing: Duration,
    pub max_certificates: usize,
    /// The state file, as this process sees it.
    pub state_path: PathBuf,
}

/// A restart that waits for the unit's start limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredRestart {
    pub unit: String,
    /// When it may happen, microseconds since the epoch.
    pub at_us: u64,
    pub limit: StartLimit,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub installed: Vec<CertInfo>,
    pub removed: Vec<CertInfo>,
    pub refreshed: bool,
    /// Units restarted that are active again, in a new activation.
    pub restarted: Vec<String>,
    /// For a unit restarted (or about to be), the units its restart
    /// restarts too (`RequiredBy`, `BoundBy`, `ConsistsOf`).
    pub restarted_with: Vec<(String, Vec<String>)>,
    /// Of those, units the agent started again after its own restart had
    /// driven them into `start-limit-hit`.
    pub recovered: Vec<String>,
    /// Restarts that wait for the unit's start limit.
    pub deferred: Vec<DeferredRestart>,
    /// Units with a pending restart found stopped: left stopped (they read
    /// the new CAs when they start).
    pub not_running: Vec<String>,
    /// Units whose restart the live pull trust made unnecessary.
    pub restarts_avoided: Vec<String>,
    /// Why each restarted (or deferred) runtime unit needed its restart.
    pub restart_reasons: Vec<(String, String)>,
    /// How image pulls get the custom CAs, as this pass left it.
    pub pull_trust: Option<PullTrust>,
    /// When the next pass must run (a deferred restart), microseconds since
    /// the epoch; `None`: only on a change.
    pub wake_at_us: Option<u64>,
    /// The Secret read through the API, and how its watch stood at the pass.
    pub api_source: Option<(String, SourceState)>,
    /// Time spent in the agent itself, the refresh tool, and unit restarts.
    pub agent_time: Duration,
    pub refresh_time: Duration,
    pub restart_time: Duration,
    /// The agent's anchors after the pass (as far as it got): what the
    /// fleet view's trust-set digest covers.
    pub trusted: BTreeSet<Fingerprint>,
    /// The bytes of the Secret directories' keys this pass read and acted
    /// on (key → bytes, the directories merged in configured order, the
    /// first one winning a key both have); `None` when no Secret directory
    /// is configured or one could not be read.
    pub secret_content: Option<BTreeMap<String, Vec<u8>>>,
}

impl Outcome {
    pub fn has_input_errors(&self) -> bool {
        self.findings.iter().any(Finding::is_error)
    }
}

/// What the restart phase needs to know of the pass before it.
pub(super) struct PassFacts {
    /// The agent's anchors when the pass began (hex fingerprints).
    pub(super) installed_before: BTreeSet<String>,
    /// Nothing was pending when the pass began: the units run with the
    /// bundle those anchors made.
    pub(super) settled_before: bool,
    /// What the node should trust after the pass.
    pub(super) desired: BTreeSet<String>,
    /// A desired CA has a negative serial, which Go refuses to parse.
    pub(super) desired_negative_serial: bool,
    pub(super) assessment: Assessment,
}

pub struct Reconciler<S: Systemd> {
    pub(super) store: TrustStore,
    pub(super) systemd: S,
    pub(super) settings: CaSettings,
    registry_hosts: RegistryHosts,
}

impl<S: Systemd> Reconciler<S> {
    pub fn new(store: TrustStore, systemd: S, settings: CaSettings) -> Self {
        let registry_hosts = RegistryHosts::new(store.host().clone());
        Self {
            store,
            systemd,
            settings,
            registry_hosts,
        }
    }

    pub fn store(&self) -> &TrustStore {
        &self.store
    }

    pub fn settings(&self) -> &CaSettings {
        &self.settings
    }

    /// Removes temp files left by a crash; call once at start-up.
    pub fn sweep(&self) -> Result<(), ReconcileError> {
        let n = self.store.sweep()?;
        if n > 0 {
            warn!(
                count = n,
                "removed temp files left in the anchors directory by an interrupted write"
            );
        }
        if let Some(dir) = self.settings.state_path.parent() {
            let _ = crate::node::fsutil::sweep_temp_files(dir);
        }
        Ok(())
    }

    /// One pass: plan, write the anchors, refresh, restart. Each phase that
    /// changes the node is recorded in the state file ([`Pending`]) before
    /// it runs, so a pass cut short is finished by the next one.
    pub async fn reconcile(&self) -> Result<Outcome, ReconcileError> {
        let (outcome, result) = self.reconcile_observed().await;
        result.map(|()| outcome)
    }

    /// Like [`Reconciler::reconcile`], but a failed pass still returns what
    /// it saw and did up to the failure (the anchors, the input read), which
    /// the daemon publishes beside the error.
    pub async fn reconcile_observed(&self) -> (Outcome, Result<(), ReconcileError>) {
        let mut outcome = Outcome::default();
        let result = self.reconcile_into(&mut outcome).await;
        (outcome, result)
    }

    async fn reconcile_into(&self, outcome: &mut Outcome) -> Result<(), ReconcileError> {
        let started = Instant::now();
        let now = now_unix();
        let mut st = state::load(&self.settings.state_path)?;

        let installed = self.store.installed()?;
        outcome.trusted = installed.certs.keys().copied().collect();
        let plan = self.plan(&st, &installed, now, outcome);
        let keys_changed = st.key_state() != plan.keys;
        // Pulls first: the live path makes a change effective before the
        // slow refresh, and stops trusting a removed CA at once.
        let facts = PassFacts {
            installed_before: installed.certs.keys().map(Fingerprint::hex).collect(),
            settled_before: st.pending == Pending::Nothing,
            desired: plan.desired.keys().map(Fingerprint::hex).collect(),
            desired_negative_serial: plan.desired.values().any(|d| d.cert.serial_negative),
            assessment: self.sync_pull_trust(&plan, outcome)?,
        };
        let withdrew = self.withdraw_from_old_dirs(&mut st, outcome)?;
        let anchors_changed = self.write_anchors(&plan, &installed, &mut st, outcome)? || withdrew;
        if anchors_changed {
            for fp in &plan.install {
                outcome.trusted.insert(*fp);
            }
            for fp in &plan.remove {
                outcome.trusted.remove(fp);
            }
        }
        if anchors_changed || keys_changed {
            st.set_key_state(&plan.keys);
            self.save(&st)?;
        }
        // Drift: the anchors are right but the bundle lacks some (rebuilt
        // without them by a distro upgrade or a `--fresh` run of someone
        // else's): refresh again.
        if !anchors_changed && st.pending == Pending::Nothing {
            let missing = self.missing_from_bundle(outcome)?;
            if !missing.is_empty() {
                warn!(
                    bundle = %self.store.layout().bundle_path.display(),
                    missing = %missing.join(","),
                    "the trust bundle lost CAs of the agent (rebuilt without them); refreshing it"
                );
                st.pending = Pending::Refresh;
                self.save(&st)?;
            }
        }
        self.refresh(&mut st, outcome).await?;
        self.restart_if_no_longer_live(&mut st, &facts)?;
        let already_current = self.restart(&mut st, outcome, &facts).await?;

        // The units run with the current bundle only once no restart is
        // left (a deferred one keeps the bundle they started with).
        let settled = !outcome.restarted.is_empty()
            || outcome.refreshed
            || already_current
            || !outcome.not_running.is_empty();
        if settled && st.pending == Pending::Nothing {
            st.bundle_sha256 = self.store.bundle_digest()?;
        }
        if outcome.refreshed
            || !outcome.restarted.is_empty()
            || anchors_changed
            || keys_changed
            || st.last_success.is_none()
        {
            st.last_success = Some(now);
            self.save(&st)?;
        }
        outcome.agent_time = started
            .elapsed()
            .saturating_sub(outcome.refresh_time + outcome.restart_time);
        Ok(())
    }

    /// Phase 1b: make containerd's registry host configuration hold exactly
    /// the desired CAs where the live path applies, and say how pulls get
    /// them. A failed write falls back to restarts: the agent's files are
    /// withdrawn, so nothing is trusted that should not be.
    fn sync_pull_trust(
        &self,
        plan: &plan::Plan,
        outcome: &mut Outcome,
    ) -> Result<Assessment, ReconcileError> {
        let mut assessment = self.registry_hosts.assess();
        let cas = plan
            .desired
            .iter()
            .map(|(fp, d)| (fp.hex(), &d.cert))
            .collect();
        match self.registry_hosts.sync(&assessment, &cas) {
            Ok(true) => info!(
                dir = %assessment.write_to.as_deref().or(assessment.default_dir.as_deref()).unwrap_or(std::path::Path::new("")).display(),
                cas = cas.len(),
                mode = assessment.trust.mode.as_str(),
                "containerd's registry host configuration updated: the next pull reads it"
            ),
            Ok(false) => {}
            Err(e) => {
                error!(error = %e, "the live pull trust could not be written; containerd is restarted for changes instead");
                if let Some(dir) = &assessment.default_dir {
                    self.registry_hosts.withdraw(dir)?;
                }
                assessment.trust = PullTrust {
                    mode: pull_trust::PullMode::Restart,
                    dir: None,
                    reason: Some(e.to_string()),
                    path: assessment.write_to.take(),
                    hint: None,
                };
            }
        }
        outcome.pull_trust = Some(assessment.trust.clone());
        Ok(assessment)
    }

    /// A runtime that took CAs live, while the live path no longer reaches
    /// every registry (say, an operator added a registry directory), needs
    /// its restart to trust them everywhere.
    fn restart_if_no_longer_live(
        &self,
        st: &mut CaState,
        facts: &PassFacts,
    ) -> Result<(), ReconcileError> {
        if facts.assessment.trust.is_live()
            || !self
                .settings
                .restart_units
                .iter()
                .any(|u| u == RUNTIME_UNIT)
            || matches!(&st.pending, Pending::Restart(u) if u.contains(RUNTIME_UNIT))
            || st.pending == Pending::Refresh
        {
            return Ok(());
        }
        let (history, _) = pacing::load(&pacing::history_path(&self.settings.state_path));
        let Some(rt) = history
            .units
            .get(RUNTIME_UNIT)
            .and_then(|h| h.runtime.as_ref())
        else {
            return Ok(());
        };
        if rt.activation_us.is_some()
            && pull_trust::restart_needed(rt, &facts.desired, false).is_some()
        {
            info!(unit = RUNTIME_UNIT, reason = facts.assessment.trust.reason.as_deref().unwrap_or(""), "{RUNTIME_UNIT} took CAs live that the live path no longer reaches everywhere; it is restarted");
            let mut units = match &st.pending {
                Pending::Restart(u) => u.clone(),
                _ => BTreeSet::new(),
            };
            units.insert(RUNTIME_UNIT.to_string());
            st.pending = Pending::Restart(units);
            self.save(st)?;
        }
        Ok(())
    }

    pub(super) fn save(&self, st: &CaState) -> Result<(), ReconcileError> {
        Ok(state::save(&self.settings.state_path, st)?)
    }

    /// Phase 1, pure apart from reading the inputs: what the node should
    /// trust, and every finding (logged).
    fn plan(
        &self,
        st: &CaState,
        installed: &Installed,
        now: i64,
        outcome: &mut Outcome,
    ) -> plan::Plan {
        let inputs: Vec<SourceInput> = self
            .settings
            .sources
            .iter()
            .map(|s| read_source(s, now))
            .chain(self.settings.api_secret.iter().map(|c| c.input(now)))
            .collect();
        outcome.api_source = self
            .settings
            .api_secret
            .as_ref()
            .map(|c| (c.secret().source_name(), c.state()));
        let plan = plan::plan(
            &inputs,
            &st.key_state(),
            &installed.certs,
            self.settings.max_certificates,
        );
        for input in &inputs {
            match &input.keys {
                // A source that never existed is simply empty (say, no
                // provisioning file on this node); one that provided CAs and
                // vanished is an error, and its CAs stay.
                Err(f)
                    if f.kind == FindingKind::SourceMissing
                        && !st.keys.contains_key(&input.source) =>
                {
                    let mut f = f.clone();
                    f.severity = Severity::Warning;
                    f.problem = format!(
                        "{}; nothing was installed from it",
                        f.problem.split(';').next().unwrap_or_default()
                    );
                    outcome.findings.push(f);
                }
                Err(f) => outcome.findings.push(f.clone()),
                Ok(verdicts) => outcome
                    .findings
                    .extend(verdicts.iter().flat_map(|v| v.findings.iter().cloned())),
            }
        }
        outcome.findings.extend(plan.findings.iter().cloned());
        outcome.secret_content = secret_content(
            &self.settings.sources,
            self.settings.api_secret.is_some(),
            &inputs,
        );
        for f in &outcome.findings {
            log_finding(f);
        }
        plan
    }

    /// Phase 2a: the agent's anchors in directories it wrote before and no
    /// longer uses (`trust-store.anchors-dir` changed) are removed, after
    /// recording that a refresh is pending; a directory left without any is
    /// forgotten. The current directory is remembered before anything is
    /// written to it. Whether anything was removed.
    fn withdraw_from_old_dirs(
        &self,
        st: &mut CaState,
        outcome: &mut Outcome,
    ) -> Result<bool, ReconcileError> {
        let path = state::anchor_dirs_path(&self.settings.state_path);
        let mut known = state::load_anchor_dirs(&path)?;
        let current = self.store.layout().anchors_dir.clone();
        let before = known.clone();
        known.dirs.insert(current.clone());
        let mut removed_any = false;
        let old: Vec<PathBuf> = known
            .dirs
            .iter()
            .filter(|d| **d != current)
            .cloned()
            .collect();
        for dir in old {
            // A directory this process cannot list or write (a pod sees the
            // node's root read-only, but for the current directory) is
            // kept in memory and reported: it never blocks the pass.
            let owned = match self.store.owned_in(&dir) {
                Ok(owned) => owned,
                Err(e) => {
                    warn!(dir = %dir.display(), "cannot clean the anchors directory the agent no longer uses: {e}; its anchors stay until it can");
                    continue;
                }
            };
            let mut all_removed = true;
            if !owned.is_empty() && !removed_any {
                if st.bundle_sha256.is_none() {
                    st.bundle_sha256 = self.store.bundle_digest()?;
                }
                st.pending = Pending::Refresh;
                self.save(st)?;
                removed_any = true;
            }
            for (file, cert) in &owned {
                if let Err(e) = self.store.remove_path(file) {
                    warn!(path = %file.display(), "cannot remove an anchor of the agent's own from an anchors directory it no longer uses: {e}; it stays until it can");
                    all_removed = false;
                    continue;
                }
                match cert {
                    Some(cert) => {
                        log_ca(
                            "removed CA (an anchors directory the agent no longer uses)",
                            "-",
                            cert,
                            file,
                        );
                        outcome.removed.push(cert.clone());
                    }
                    None => {
                        warn!(path = %file.display(), "removed an anchor file of the agent's own from an anchors directory it no longer uses")
                    }
                }
            }
            if all_removed {
                known.dirs.remove(&dir);
            }
        }
        if known != before {
            state::save_anchor_dirs(&path, &known)?;
        }
        Ok(removed_any)
    }

    /// Phase 2: install and remove anchors (and the agent's own damaged
    /// files), after recording that a refresh is pending. Whether anything
    /// changed.
    fn write_anchors(
        &self,
        plan: &plan::Plan,
        installed: &Installed,
        st: &mut CaState,
        outcome: &mut Outcome,
    ) -> Result<bool, ReconcileError> {
        if plan.is_noop() && installed.stray.is_empty() {
            return Ok(false);
        }
        if st.bundle_sha256.is_none() {
            // The bundle the running units started with, before we touch it.
            st.bundle_sha256 = self.store.bundle_digest()?;
        }
        st.pending = Pending::Refresh;
        self.save(st)?;
        for fp in &plan.install {
            if let Some(d) = plan.desired.get(fp) {
                let path = self.store.install(&d.cert)?;
                let keys: Vec<&str> = d.keys.iter().map(|(_, k)| k.as_str()).collect();
                log_ca("installed CA", &keys.join(","), &d.cert, &path);
                outcome.installed.push(d.cert.clone());
            }
        }
        for fp in &plan.remove {
            if let Some(cert) = installed.certs.get(fp) {
                self.store.remove(fp)?;
                let keys = removed_keys(st, fp);
                log_ca("removed CA", &keys, cert, &self.store.anchor_node_path(fp));
                outcome.removed.push(cert.clone());
            }
        }
        for path in &installed.stray {
            self.store.remove_path(path)?;
            warn!(path = %path.display(), "removed a damaged anchor file of the agent's own");
        }
        Ok(true)
    }

    /// Phase 3: run the refresh tool if one is pending; a bundle that
    /// changed makes every allowlisted unit's restart pending.
    async fn refresh(&self, st: &mut CaState, outcome: &mut Outcome) -> Result<(), ReconcileError> {
        if st.pending != Pending::Refresh {
            return Ok(());
        }
        // Before the tool runs: the running containerd may load any CA of
        // the new bundle from then on (a crash after the refresh must not
        // lose that).
        if self
            .settings
            .restart_units
            .iter()
            .any(|u| u == RUNTIME_UNIT)
        {
            let history_path = pacing::history_path(&self.settings.state_path);
            let (mut history, _) = pacing::load(&history_path);
            let h = history.units.entry(RUNTIME_UNIT.to_string()).or_default();
            let rt = h.runtime.get_or_insert_with(RuntimeTrust::default);
            rt.may_cache
                .extend(outcome.trusted.iter().map(Fingerprint::hex));
            pacing::save(&history_path, &history)?;
        }
        // The incremental run. (A full rebuild on removals would not help
        // the hooks in /etc/ca-certificates/update.d: Debian's tool reports
        // a removal to them only for a CA deselected with `!` in
        // /etc/ca-certificates.conf, never for a deleted local anchor, with
        // or without --fresh; docs/design.md, "Safety properties".)
        let t = Instant::now();
        let mut result = self.run_refresh(false).await?;
        let mut missing = self.missing_from_bundle(outcome)?;
        if !missing.is_empty() && self.full_refresh_command().is_some() {
            warn!(
                missing = missing.len(),
                "the refresh left CAs of the agent out of the bundle; rebuilding it in full"
            );
            result = self.run_refresh(true).await?;
            missing = self.missing_from_bundle(outcome)?;
        }
        outcome.refresh_time = t.elapsed();
        if !missing.is_empty() {
            // Nothing is restarted for a bundle that lacks the CAs; the
            // refresh stays pending and is retried.
            error!(
                bundle = %self.store.layout().bundle_path.display(),
                missing = %missing.join(","),
                "the trust bundle lacks CAs of the agent after the refresh"
            );
            return Err(ReconcileError::BundleIncomplete {
                bundle: self.store.layout().bundle_path.clone(),
                missing,
                unit: result.unit,
            });
        }
        outcome.refreshed = true;
        let digest = self.store.bundle_digest()?;
        info!(
            refresh_unit = %result.unit,
            bundle = %self.store.layout().bundle_path.display(),
            bundle_changed = digest != st.bundle_sha256,
            "refreshed the node trust store"
        );
        // Each unit against the bundle it last took (the common record for
        // a unit without its own): one restarted for a change that is now
        // reverted must restart again, one still deferred need not.
        let history_path = pacing::history_path(&self.settings.state_path);
        let (mut history, _) = pacing::load(&history_path);
        let mut needs = std::collections::BTreeSet::new();
        let mut history_changed = false;
        for unit in &self.settings.restart_units {
            let took = history
                .units
                .get(unit)
                .and_then(|h| h.bundle_sha256.clone())
                .or_else(|| st.bundle_sha256.clone());
            if took != digest {
                needs.insert(unit.clone());
            } else if let Some(h) = history.units.get_mut(unit) {
                // Back to the bundle it runs with: no change is waiting.
                if h.unsettled_since_us.take().is_some() {
                    history_changed = true;
                }
            }
        }
        if history_changed {
            pacing::save(&history_path, &history)?;
        }
        st.pending = if needs.is_empty() {
            Pending::Nothing
        } else {
            Pending::Restart(needs)
        };
        self.save(st)
    }

    /// Whether the trust store is as `outcome`'s pass left it: the agent's
    /// anchors are exactly the pass's, and the bundle holds them all (one
    /// directory listing and one read of the bundle; no D-Bus call).
    pub fn store_as_left(&self, outcome: &Outcome) -> bool {
        let anchors = match self.store.installed() {
            Ok(i) => i.certs.keys().copied().collect::<BTreeSet<_>>(),
            Err(_) => return false,
        };
        anchors == outcome.trusted
            && self
                .missing_from_bundle(outcome)
                .is_ok_and(|missing| missing.is_empty())
    }

    /// The refresh tool, or its full rebuild (`full`, where the family has
    /// one); a tool that fails is an error.
    async fn run_refresh(
        &self,
        full: bool,
    ) -> Result<crate::node::systemd::CommandOutcome, ReconcileError> {
        let command = match self.full_refresh_command().filter(|_| full) {
            Some(c) => c,
            None => self.store.layout().refresh_command.clone(),
        };
        let result = self.systemd.run_command(&command).await.map_err(|source| {
            ReconcileError::RefreshCall {
                command: command.clone(),
                source,
            }
        })?;
        if !result.succeeded() {
            return Err(ReconcileError::RefreshFailed {
                command,
                unit: result.unit,
                result: result.result,
                status: result.exit_status,
            });
        }
        Ok(result)
    }

    /// Debian's `update-ca-certificates --fresh`, where the refresh is
    /// Debian's own tool; `None` for other families (theirs rebuild in
    /// full every time) and for an operator's own command.
    fn full_refresh_command(&self) -> Option<Vec<String>> {
        let layout = self.store.layout();
        let debian = crate::node::distro::Family::Debian.layout();
        (layout.family == crate::node::distro::Family::Debian
            && layout.refresh_command == debian.refresh_command)
            .then(|| {
                let mut c = layout.refresh_command.clone();
                c.push("--fresh".into());
                c
            })
    }

    /// The agent's anchors (as the pass left them) that the bundle does not
    /// hold, as short fingerprints.
    fn missing_from_bundle(&self, outcome: &Outcome) -> Result<Vec<String>, ReconcileError> {
        let in_bundle = self.store.bundle_fingerprints()?;
        Ok(outcome
            .trusted
            .iter()
            .filter(|fp| !in_bundle.contains(fp))
            .map(Fingerprint::short)
            .collect())
    }
}

/// The units that run a container runtime on the node kinds the agent
/// knows, for the error of a restart unit that does not exist.
fn likely_runtime_units() -> &'static str {
    "containerd.service on most nodes; k3s.service or k3s-agent.service on k3s, rke2-server.service or rke2-agent.service on RKE2, crio.service on CRI-O nodes"
}

/// The merged bytes of the Secret sources: the Secret directories among
/// `sources` (read as `inputs`, in the same order) and, with `api`, the
/// Secret read through the API (the input after them). `None` if there is
/// none or one was not read (or is not synced).
fn secret_content(
    sources: &[SourceSpec],
    api: bool,
    inputs: &[SourceInput],
) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut merged = BTreeMap::new();
    let mut any = false;
    let dirs = sources
        .iter()
        .zip(inputs)
        .filter(|(spec, _)| matches!(spec, SourceSpec::SecretDir(_)))
        .map(|(_, input)| input);
    let api_input = inputs.get(sources.len()).filter(|_| api);
    for input in dirs.chain(api_input) {
        any = true;
        for (k, v) in input.content.as_ref()? {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    any.then_some(merged)
}

fn removed_keys(st: &CaState, fp: &crate::x509::cert::Fingerprint) -> String {
    let hex = fp.hex();
    let mut keys: Vec<&str> = st
        .keys
        .values()
        .flat_map(|m| m.iter())
        .filter(|(_, fps)| fps.contains(&hex))
        .map(|(k, _)| k.as_str())
        .collect();
    keys.dedup();
    keys.join(",")
}

fn log_ca(action: &str, key: &str, cert: &CertInfo, path: &std::path::Path) {
    info!(
        ca_key = %key,
        ca_subject = %cert.subject,
        ca_issuer = %cert.issuer,
        ca_serial = %cert.serial,
        ca_not_before = %rfc3339(cert.not_before),
        ca_not_after = %rfc3339(cert.not_after),
        ca_fingerprint = %cert.fingerprint,
        anchor = %path.display(),
        "{action} from key \"{key}\": {}",
        cert.describe()
    );
}

fn log_finding(f: &Finding) {
    match f.severity {
        Severity::Error => {
            error!(ca_key = %f.key, ca_position = f.position.unwrap_or(0), finding = ?f.kind, "{f}")
        }
        Severity::Warning => {
            warn!(ca_key = %f.key, ca_position = f.position.unwrap_or(0), finding = ?f.kind, "{f}")
        }
    }
}

#[cfg(test)]
mod tests;
