//! One pass of custom CA trust: read the inputs, validate, plan, write the
//! anchors, refresh the trust store and restart the allowlisted units.
//!
//! Every step that changes the node is recorded in the state file first, so
//! a pass cut short (crash, SIGKILL, a failed D-Bus call) is finished by the
//! next one, and a pass with nothing to do makes no write, no D-Bus call, no
//! refresh and no restart.
//!
//! A restart respects the unit's start limit ([`crate::trust::pacing`]): one
//! that would come too soon waits (the pass says until when, and every change
//! until then shares it), and after every restart job the unit's own state
//! decides what happened: a restart succeeded only when the unit is active
//! again in a new activation. A unit the agent's restart drove into
//! `start-limit-hit` is reset and started again once systemd's window is
//! over; a unit that was stopped or failed before stays as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::k8s::source::SourceState;
use crate::node::docker::{self, LiveRestore};
use crate::node::systemd::{StartLimit, Systemd, SystemdError, UnitStatus};
use crate::trust::api_secret::SecretCache;
use crate::trust::pacing::{self, PacingError, RestartHistory};
use crate::trust::plan::{self, SourceInput};
use crate::trust::pull_trust::{
    self, Assessment, PullTrust, PullTrustError, RegistryHosts, RuntimeTrust, RUNTIME_UNIT,
};
use crate::trust::sources::{read_source, SourceSpec};
use crate::trust::state::{self, CaState, Pending, StateError};
use crate::trust::store::{Installed, TrustError, TrustStore};
use crate::trust::validate::{Finding, FindingKind, Severity};
use crate::x509::cert::{CertInfo, Fingerprint};
use crate::x509::time::{now_unix, now_us, rfc3339, rfc3339_us};

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

pub struct Reconciler<S: Systemd> {
    store: TrustStore,
    systemd: S,
    settings: CaSettings,
    registry_hosts: RegistryHosts,
}

/// What the restart phase needs to know of the pass before it.
struct PassFacts {
    /// The agent's anchors when the pass began (hex fingerprints).
    installed_before: BTreeSet<String>,
    /// Nothing was pending when the pass began: the units run with the
    /// bundle those anchors made.
    settled_before: bool,
    /// What the node should trust after the pass.
    desired: BTreeSet<String>,
    /// A desired CA has a negative serial, which Go refuses to parse.
    desired_negative_serial: bool,
    assessment: Assessment,
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

    fn save(&self, st: &CaState) -> Result<(), ReconcileError> {
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
        // or without --fresh; README "Safety properties".)
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

    /// Phase 4: restart the units whose restart is pending, within their
    /// start limits. Whether a unit was found already running with the new
    /// bundle (and so skipped).
    async fn restart(
        &self,
        st: &mut CaState,
        outcome: &mut Outcome,
        facts: &PassFacts,
    ) -> Result<bool, ReconcileError> {
        let Pending::Restart(units) = &mut st.pending else {
            return Ok(false);
        };
        // Only allowlisted units, even if an older config left others pending.
        units.retain(|u| self.settings.restart_units.contains(u));
        let pending: Vec<String> = units.iter().cloned().collect();
        let bundle_written = if pending.is_empty() {
            None
        } else {
            self.store.bundle_modified_us()?
        };
        let t = Instant::now();
        let mut already_current = false;
        let digest = if pending.is_empty() {
            None
        } else {
            self.store.bundle_digest()?
        };
        let history_path = pacing::history_path(&self.settings.state_path);
        let (mut history, unreadable) = pacing::load(&history_path);
        if let Some(why) = unreadable {
            warn!("{why}; the agent counts its restarts afresh");
        }
        let mut result = Ok(());
        for unit in pending {
            match self
                .restart_one(
                    &unit,
                    bundle_written,
                    &mut history,
                    &history_path,
                    outcome,
                    facts,
                )
                .await
            {
                Ok(Step::Deferred) => {}
                Ok(step) => {
                    already_current |= step == Step::AlreadyCurrent;
                    // It took this bundle (or reads it when it starts).
                    history.units.entry(unit.clone()).or_default().bundle_sha256 = digest.clone();
                    pacing::save(&history_path, &history)?;
                    st.pending = pending_without(&st.pending, &unit);
                    self.save(st)?;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if st.pending == Pending::Restart(Default::default()) {
            st.pending = Pending::Nothing;
        }
        outcome.restart_time = t.elapsed();
        result.map(|()| already_current)
    }

    /// One pending unit: skip it if it already runs with the new bundle or
    /// is stopped, restart it (or bring it back after a start-limit-hit of
    /// the agent's making) if its start limit allows, else defer it.
    async fn restart_one(
        &self,
        unit: &str,
        bundle_written: Option<u64>,
        history: &mut RestartHistory,
        history_path: &std::path::Path,
        outcome: &mut Outcome,
        facts: &PassFacts,
    ) -> Result<Step, ReconcileError> {
        let call_err = |source| ReconcileError::RestartCall {
            unit: unit.to_string(),
            source,
        };
        let status = self.systemd.unit_status(unit).await.map_err(call_err)?;
        if status.is_missing() {
            // Never "it reads the new CAs when it starts": it never starts.
            error!(unit = %unit, load_state = %status.load_state, "{unit} is {} on this node; its restart cannot make the new CAs effective", status.load_state);
            return Err(ReconcileError::UnitMissing {
                unit: unit.to_string(),
                load_state: status.load_state,
            });
        }
        let h = history.units.entry(unit.to_string()).or_default();
        h.set_start_limit(status.start_limit);
        // A unit that (re)started after the bundle was written already
        // reads the new CAs: say a restart job of ours failed and the
        // unit's own Restart= brought it up once the fault was gone.
        // Restarting it again would be a restart too many.
        if started_after(status.active_since(), bundle_written) {
            info!(
                unit = %unit,
                active_since = %rfc3339(micros_to_unix(status.active_since())),
                bundle_written = %rfc3339(micros_to_unix(bundle_written)),
                "{unit} (re)started after the trust bundle was written, so it already uses the new CAs; not restarting it again"
            );
            h.settled();
            if unit == RUNTIME_UNIT {
                h.runtime = Some(runtime_started_with(
                    status.active_since(),
                    &outcome.trusted,
                ));
            }
            pacing::save(history_path, history)?;
            return Ok(Step::AlreadyCurrent);
        }
        let recovering = status.is_failed() && h.responsible;
        if !status.is_running() && !recovering {
            if status.is_failed() {
                error!(unit = %unit, active_state = %status.active_state, unit_result = %status.result, "{unit} is failed and was not running before the agent's restart; left alone");
                return Err(ReconcileError::UnitFailed {
                    unit: unit.to_string(),
                    result: status.result,
                });
            }
            info!(unit = %unit, active_state = %status.active_state, sub_state = %status.sub_state, "{unit} is not running, so it is not restarted; it reads the new CAs when it starts");
            h.settled();
            pacing::save(history_path, history)?;
            outcome.not_running.push(unit.to_string());
            return Ok(Step::Stopped);
        }

        if unit == RUNTIME_UNIT && !recovering {
            match runtime_restart_needed(h, &status, facts) {
                None => {
                    info!(
                        unit = %unit,
                        dir = %facts.assessment.trust.dir.as_deref().unwrap_or(std::path::Path::new("")).display(),
                        restart_avoided = true,
                        "{unit} is not restarted: it reads the added CAs at the next pull through its registry host configuration, and holds no removed CA"
                    );
                    h.settled();
                    pacing::save(history_path, history)?;
                    outcome.restarts_avoided.push(unit.to_string());
                    return Ok(Step::Avoided);
                }
                Some(why) => {
                    info!(unit = %unit, reason = %why, "{unit} needs a restart: {why}");
                    outcome.restart_reasons.push((unit.to_string(), why));
                }
            }
        }
        let now = now_us();
        let limit = status.start_limit;
        // A unit the agent brings back from start-limit-hit is reset first
        // (`ResetFailedUnit` clears systemd's start counter too), so it may
        // start at once: waiting out the window would be outage for nothing.
        let resetting = recovering && status.hit_start_limit();
        let mut earliest = if resetting {
            // Spaced all the same, so a unit that fails at every start is
            // not reset and started at every pass.
            if self.settings.restart_spacing.is_zero() {
                now
            } else {
                pacing::spaced_start(
                    &h.starts_us,
                    now,
                    u64::try_from(self.settings.restart_spacing.as_micros()).unwrap_or(u64::MAX),
                )
            }
        } else {
            pacing::earliest_start(&h.starts_us, status.active_since(), limit, now)
        };
        // Coalescing: the agent's restarts of a unit are spaced, more so
        // the more of them came lately (two writers fighting over the
        // Secret restart it about once a minute at most).
        let spaced_until = (!resetting && !self.settings.restart_spacing.is_zero()).then(|| {
            pacing::spaced_start(
                &h.starts_us,
                now,
                u64::try_from(self.settings.restart_spacing.as_micros()).unwrap_or(u64::MAX),
            )
        });
        let spaced = spaced_until.is_some_and(|t| t > earliest);
        if let Some(t) = spaced_until {
            earliest = earliest.max(t);
        }
        // This node's place in the fleet's restart window, counted from the
        // first change the unit has not taken (kept across passes and agent
        // restarts), so a Secret that changes faster than the offset cannot
        // postpone the restart for ever.
        if let Some(w) = bundle_written {
            h.unsettled_since_us = Some(h.unsettled_since_us.map_or(w, |s| s.min(w)));
        }
        let spread_until = h
            .unsettled_since_us
            .filter(|_| !recovering && !self.settings.restart_delay.is_zero())
            .map(|w| w + self.settings.restart_delay.as_micros() as u64);
        let spread = spread_until.is_some_and(|t| t > earliest);
        if let Some(t) = spread_until {
            earliest = earliest.max(t);
        }
        if earliest > now {
            h.not_before_us = Some(earliest);
            pacing::save(history_path, history)?;
            if recovering {
                return Err(ReconcileError::AwaitingRecovery {
                    unit: unit.to_string(),
                    limit,
                    recover_at_us: earliest,
                });
            }
            if spaced && !spread {
                info!(
                    unit = %unit,
                    restart_at = %rfc3339_us(earliest),
                    "restart of {unit} deferred to {}: the agent's restarts of a unit are spaced (restart-min-spacing-seconds {}, doubling with each restart in the last 2 minutes, up to a minute); every change until then shares that one restart",
                    rfc3339_us(earliest),
                    self.settings.restart_spacing.as_secs()
                );
            } else if spread {
                info!(
                    unit = %unit,
                    restart_at = %rfc3339_us(earliest),
                    restart_delay_ms = self.settings.restart_delay.as_millis() as u64,
                    "restart of {unit} deferred to {}: this node's share of restart-spread-seconds is {} ms after the bundle was written; every change until then shares that one restart",
                    rfc3339_us(earliest),
                    self.settings.restart_delay.as_millis()
                );
            } else {
                info!(
                    unit = %unit,
                    restart_at = %rfc3339_us(earliest),
                    start_limit = %limit,
                    "restart of {unit} deferred to {}: its start limit is {limit}, and the agent leaves one start of each window to others; every change until then shares that one restart",
                    rfc3339_us(earliest)
                );
            }
            outcome.deferred.push(DeferredRestart {
                unit: unit.to_string(),
                at_us: earliest,
                limit,
            });
            outcome.wake_at_us = Some(outcome.wake_at_us.map_or(earliest, |w| w.min(earliest)));
            return Ok(Step::Deferred);
        }

        // A restart that would stop the node's containers is refused (only
        // now: a unit already current or stopped needs none).
        if unit == docker::DOCKER_UNIT && !resetting {
            if let LiveRestore::Off(reason) = docker::live_restore(self.store.host()) {
                error!(unit = %unit, reason = %reason, "{unit} is not restarted: without live-restore its restart stops every container on the node");
                return Err(ReconcileError::RestartWouldStopContainers {
                    unit: unit.to_string(),
                    reason,
                });
            }
        }
        // What else the restart restarts (kubelet with Requires=containerd
        // on some node images): said before it happens.
        let with = self.systemd.restarted_with(unit).await.unwrap_or_default();
        if !with.is_empty() {
            warn!(
                unit = %unit,
                restarted_with = %with.join(","),
                "restarting {unit} also restarts {} (they require it, are bound to it or part of it)",
                with.join(", ")
            );
            outcome.restarted_with.push((unit.to_string(), with));
        }
        let h = history.units.entry(unit.to_string()).or_default();
        // Recorded before the call: a crash in the middle still counts it.
        h.record_start(now);
        h.responsible = true;
        h.not_before_us = None;
        pacing::save(history_path, history)?;
        let job = if recovering {
            self.systemd
                .reset_failed_unit(unit)
                .await
                .map_err(call_err)?;
            self.systemd.start_unit(unit).await.map_err(call_err)?
        } else {
            self.systemd
                .try_restart_unit(unit)
                .await
                .map_err(call_err)?
        };
        let after = self.systemd.unit_status(unit).await.map_err(call_err)?;
        let h = history.units.entry(unit.to_string()).or_default();
        if after.is_active() && after.inactive_exit_us >= now {
            h.settled();
            if unit == RUNTIME_UNIT {
                h.runtime = Some(runtime_started_with(after.active_since(), &outcome.trusted));
            }
            pacing::save(history_path, history)?;
            if recovering {
                info!(unit = %unit, job_result = %job.0, active_state = %after.active_state, "started {unit} again after it hit its start limit; it is active and reads the new root CAs");
                outcome.recovered.push(unit.to_string());
            } else {
                info!(unit = %unit, job_result = %job.0, active_state = %after.active_state, "restarted {unit}; it is active again and reads the new root CAs");
            }
            outcome.restarted.push(unit.to_string());
            return Ok(Step::Restarted);
        }
        if after.hit_start_limit() {
            let hit = now_us();
            h.limit_hit_us = Some(hit);
            // The next pass resets it and starts it again at once.
            let recover_at_us = hit;
            h.not_before_us = Some(recover_at_us);
            pacing::save(history_path, history)?;
            error!(unit = %unit, job_result = %job.0, unit_result = %after.result, "{unit} hit its start limit after the agent's restart");
            return Err(ReconcileError::StartLimitHit {
                unit: unit.to_string(),
                limit: after.start_limit,
                recover_at_us,
            });
        }
        if after.active_state == "inactive" {
            // Stopped by someone between the look and the restart
            // (TryRestartUnit leaves a stopped unit alone): it stays stopped.
            info!(unit = %unit, job_result = %job.0, "{unit} was stopped during its restart, so it stays stopped; it reads the new CAs when it starts");
            h.settled();
            pacing::save(history_path, history)?;
            outcome.not_running.push(unit.to_string());
            return Ok(Step::Stopped);
        }
        pacing::save(history_path, history)?;
        if !job.is_done() {
            error!(unit = %unit, job_result = %job.0, "restart job did not succeed");
            return Err(ReconcileError::RestartFailed {
                unit: unit.to_string(),
                result: job.0,
            });
        }
        error!(unit = %unit, job_result = %job.0, active_state = %after.active_state, sub_state = %after.sub_state, unit_result = %after.result, "{unit} is not active after its restart");
        Err(not_active(unit, job, &after))
    }
}

/// This node's restart delay within a spread window: a stable fraction of
/// `window`, from the node's name (the same hash as the renewal jitter), so
/// 5,000 nodes that see one change in the same second restart over the
/// whole window, each always at the same point of it.
pub fn spread_offset(node_name: &str, window: Duration) -> Duration {
    window.mul_f64(crate::retry::stable_fraction(node_name))
}

/// The runtime's record for an activation that began with `trusted` in
/// the bundle.
fn runtime_started_with(
    activation_us: Option<u64>,
    trusted: &BTreeSet<Fingerprint>,
) -> RuntimeTrust {
    let set: BTreeSet<String> = trusted.iter().map(Fingerprint::hex).collect();
    RuntimeTrust {
        activation_us,
        started_with: set.clone(),
        may_cache: set,
    }
}

/// Whether the running containerd needs a restart for this pass's change,
/// and why; `None`: the live path made it effective. Brings the unit's
/// record up to date first: an activation the agent did not see start
/// (someone else restarted it, or the record is new) began with the
/// anchors the pass found, and may hold those and the desired ones.
fn runtime_restart_needed(
    h: &mut pacing::UnitHistory,
    status: &UnitStatus,
    facts: &PassFacts,
) -> Option<String> {
    let activation = status.active_since();
    let rt = h.runtime.get_or_insert_with(RuntimeTrust::default);
    if rt.activation_us != activation {
        let before = &facts.installed_before;
        rt.activation_us = activation;
        rt.started_with = if facts.settled_before {
            before.clone()
        } else {
            BTreeSet::new()
        };
        rt.may_cache = before.union(&facts.desired).cloned().collect();
        if !facts.settled_before {
            // No record of this containerd, and an earlier pass left a
            // change unfinished (a deferred restart, a crash, a history an
            // older agent wrote): a CA removed then is in no set here, yet
            // may be in its roots. Only a restart is sure.
            return Some(
                "the agent has no record of which CAs this containerd loaded, and an earlier change is not finished"
                    .to_string(),
            );
        }
    }
    let trust = &facts.assessment.trust;
    // A config changed since containerd started may not be the one it runs.
    let config_current = match (facts.assessment.config_modified_us, activation) {
        (Some(modified), Some(started)) => modified <= started,
        (None, _) => true,
        (Some(_), None) => false,
    };
    // Go drops a certificate it cannot parse from a `ca` file without a
    // word (a negative serial since Go 1.23): only the system roots, after
    // a restart, can be relied on for it.
    let go_refuses = facts.desired_negative_serial;
    let live = trust.is_live() && config_current && !go_refuses;
    if go_refuses && trust.is_live() {
        if let Some(why) = pull_trust::restart_needed(rt, &facts.desired, false) {
            return Some(format!("{why}; a desired CA has a negative serial number, which Go (containerd) drops from a registry's `ca` file"));
        }
    }
    let why = pull_trust::restart_needed(rt, &facts.desired, live)?;
    Some(if trust.is_live() && !config_current {
        format!("{why}; containerd's config changed since it started, so the running process may not read its registry host directory")
    } else if let (false, Some(reason)) = (live, &trust.reason) {
        format!("{why}: {reason}")
    } else {
        why
    })
}

/// The units that run a container runtime on the node kinds the agent
/// knows, for the error of a restart unit that does not exist.
fn likely_runtime_units() -> &'static str {
    "containerd.service on most nodes; k3s.service or k3s-agent.service on k3s, rke2-server.service or rke2-agent.service on RKE2, crio.service on CRI-O nodes"
}

/// What became of one pending restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The live pull trust made it unnecessary.
    Avoided,
    /// It (re)started after the bundle was written: nothing to do.
    AlreadyCurrent,
    Restarted,
    /// Not running: left stopped.
    Stopped,
    /// Waits for its start limit.
    Deferred,
}

fn not_active(
    unit: &str,
    job: crate::node::systemd::JobResult,
    after: &UnitStatus,
) -> ReconcileError {
    ReconcileError::NotActiveAfterRestart {
        unit: unit.to_string(),
        job_result: job.0,
        active_state: after.active_state.clone(),
        sub_state: after.sub_state.clone(),
        result: after.result.clone(),
    }
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

/// `pending` with `unit`'s restart done.
fn pending_without(pending: &Pending, unit: &str) -> Pending {
    match pending {
        Pending::Restart(units) => {
            let rest: BTreeSet<String> = units.iter().filter(|u| *u != unit).cloned().collect();
            if rest.is_empty() {
                Pending::Nothing
            } else {
                Pending::Restart(rest)
            }
        }
        other => other.clone(),
    }
}

/// Whether a unit active since `unit_since` (its `InactiveExitTimestamp`)
/// began that activation after the bundle was written at `bundle_written`
/// (both microseconds since the epoch): then it has read the new bundle and
/// needs no restart. Unknown times never skip a restart.
pub fn started_after(unit_since: Option<u64>, bundle_written: Option<u64>) -> bool {
    matches!((unit_since, bundle_written), (Some(since), Some(written)) if since > written)
}

/// Microseconds since the epoch as whole Unix seconds, for logs.
fn micros_to_unix(us: Option<u64>) -> i64 {
    us.map_or(0, |us| i64::try_from(us / 1_000_000).unwrap_or(i64::MAX))
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
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use super::*;

    /// The peak restarts in any one second when `nodes` nodes see one change
    /// at the same instant and each waits its [`spread_offset`] of `window`.
    fn peak_restarts_per_second(nodes: usize, window: Duration) -> usize {
        let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
        for n in 0..nodes {
            let offset = spread_offset(&format!("aks-nodepool1-{n:05}-vmss"), window);
            *per_second.entry(offset.as_secs()).or_default() += 1;
        }
        per_second.values().copied().max().unwrap_or(0)
    }

    #[test]
    fn a_60_second_spread_cuts_the_peak_of_5000_nodes_from_5000_to_under_130_per_second() {
        let without = peak_restarts_per_second(5000, Duration::ZERO);
        let with = peak_restarts_per_second(5000, Duration::from_secs(60));
        println!("5000 nodes, one change: peak containerd restarts per second: restart-spread-seconds 0: {without}, 60: {with}");
        assert_eq!(without, 5000);
        // Uniform would be 83.3 per second; allow the binomial's tail.
        assert!(with < 130, "{with}");
        // Stable per node, and within the window.
        let a = spread_offset("node-a", Duration::from_secs(60));
        assert_eq!(a, spread_offset("node-a", Duration::from_secs(60)));
        assert!(a < Duration::from_secs(60));
    }
    use crate::node::distro::Family;
    use crate::node::hostroot::HostRoot;
    use crate::node::systemd::fake::{FakeUnit, RecordingSystemd};
    use crate::x509::testpki;

    struct Node {
        root: tempfile::TempDir,
        secret: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            fs::create_dir_all(root.path().join("etc/ssl/certs")).unwrap();
            fs::write(
                root.path().join("etc/ssl/certs/ca-certificates.crt"),
                "distro\n",
            )
            .unwrap();
            Self {
                root,
                secret: tempfile::tempdir().unwrap(),
            }
        }

        fn reconciler(&self, systemd: Arc<RecordingSystemd>) -> Reconciler<Arc<RecordingSystemd>> {
            let host = HostRoot::new(self.root.path()).unwrap();
            let store = TrustStore::new(host, Family::Debian.layout());
            Reconciler::new(
                store,
                systemd,
                CaSettings {
                    sources: vec![SourceSpec::SecretDir(self.secret.path().into())],
                    api_secret: None,
                    restart_delay: std::time::Duration::ZERO,
                    restart_units: vec!["containerd.service".into()],
                    restart_spacing: std::time::Duration::ZERO,
                    max_certificates: 10,
                    state_path: self
                        .root
                        .path()
                        .join("var/lib/node-cert-agent/ca-state.json"),
                },
            )
        }

        fn put(&self, key: &str, value: &str) {
            fs::write(self.secret.path().join(key), value).unwrap();
        }

        fn bundle(&self) -> String {
            fs::read_to_string(self.root.path().join("etc/ssl/certs/ca-certificates.crt")).unwrap()
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn pem(cn: &str) -> String {
        testpki::pem(&testpki::good_ca(cn).cert)
    }

    #[test]
    fn new_ca_is_installed_refreshed_and_restarts_containerd_once() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let r = node.reconciler(fake.clone());
        let a = pem("A");
        node.put("ca1.crt", &a);
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.installed.len(), 1);
        assert!(node.bundle().contains(a.lines().nth(1).unwrap()));
        assert_eq!(fake.commands().len(), 1);
        assert_eq!(fake.restarts(), vec!["containerd.service"]);
    }

    /// `trust-store.anchors-dir` and `anchor-extension` changed: the
    /// anchors written under the old ones are the agent's still, and are
    /// removed (the old directory is remembered until it holds none).
    #[test]
    fn anchors_left_under_an_earlier_directory_or_extension_are_removed() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let a = pem("A");
        node.put("ca1.crt", &a);
        let host = HostRoot::new(node.root.path()).unwrap();
        let mut old_layout = Family::Debian.layout();
        old_layout.anchors_dir = "/usr/local/share/ca-certificates/old".into();
        old_layout.anchor_extension = "pem".into();
        // (The fake's refresh reads only the default directory: these
        // passes write their anchors, then find the bundle without them.)
        let mut r = node.reconciler(fake.clone());
        r.store = TrustStore::new(host.clone(), old_layout);
        let _ = rt().block_on(r.reconcile());
        let old_dir = node.root.path().join("usr/local/share/ca-certificates/old");
        assert_eq!(fs::read_dir(&old_dir).unwrap().count(), 1);

        // Same directory, another extension: the .pem anchor is the agent's.
        let mut pem_to_crt = Family::Debian.layout();
        pem_to_crt.anchors_dir = "/usr/local/share/ca-certificates/old".into();
        let mut r = node.reconciler(fake.clone());
        r.store = TrustStore::new(host.clone(), pem_to_crt);
        let _ = rt().block_on(r.reconcile());
        let names: Vec<String> = fs::read_dir(&old_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].ends_with(".crt"), "{names:?}");

        // Another directory: the old one is emptied and forgotten.
        let r = node.reconciler(fake.clone());
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.installed.len(), 1);
        assert_eq!(fs::read_dir(&old_dir).unwrap().count(), 0);
        assert!(node.bundle().contains(a.lines().nth(1).unwrap()));
        let dirs =
            state::load_anchor_dirs(&state::anchor_dirs_path(&r.settings.state_path)).unwrap();
        assert_eq!(
            dirs.dirs.into_iter().collect::<Vec<_>>(),
            [PathBuf::from(
                "/usr/local/share/ca-certificates/node-cert-agent"
            )]
        );
        // Settled: the next pass touches nothing.
        let commands = fake.commands().len();
        rt().block_on(r.reconcile()).unwrap();
        assert_eq!(fake.commands().len(), commands);
    }

    /// Side effects of a restart: dockerd without live-restore is never
    /// restarted (its restart stops every container); a unit that others
    /// require is restarted with a warning naming them.
    #[test]
    fn a_restart_that_would_stop_containers_is_refused_and_one_that_restarts_others_says_so() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let mut r = node.reconciler(fake.clone());
        r.settings.restart_units = vec!["docker.service".into()];
        node.put("ca1.crt", &pem("A"));
        let err = rt().block_on(r.reconcile()).unwrap_err();
        assert!(
            matches!(err, ReconcileError::RestartWouldStopContainers { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("live-restore"), "{err}");
        assert!(fake.restarts().is_empty());
        // With live-restore, containers survive: restarted.
        fs::create_dir_all(node.root.path().join("etc/docker")).unwrap();
        fs::write(
            node.root.path().join("etc/docker/daemon.json"),
            r#"{"live-restore": true}"#,
        )
        .unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec!["docker.service"]);

        // containerd, which kubelet requires on this image.
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        fake.with_unit("containerd.service", |u| {
            u.restarted_with = vec!["kubelet.service".into()];
        });
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec!["containerd.service"]);
        assert_eq!(
            out.restarted_with,
            vec![(
                "containerd.service".to_string(),
                vec!["kubelet.service".to_string()]
            )]
        );
    }

    /// Two units, one restarted and one deferred by its start limit, then
    /// the change reverted: the restarted one took the removed CA and is
    /// restarted again; the deferred one never took it and is not.
    #[test]
    fn a_revert_restarts_exactly_the_units_that_took_the_change() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let other = "other-runtime.service";
        fake.with_unit(other, |u| {
            u.start_limit = StartLimit {
                burst: 2,
                interval_us: 3_600_000_000,
            };
        });
        // Its one start of the window is used: the agent's restart waits.
        assert!(fake.external_start(other).is_done());
        let mut r = node.reconciler(fake.clone());
        r.settings.restart_units = vec![UNIT.into(), other.into()];
        node.put("ca1.crt", &pem("A"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert_eq!(out.deferred.len(), 1, "{out:?}");
        assert_eq!(out.deferred[0].unit, other);

        // Reverted before the deferred restart came.
        fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT], "{out:?}");
        assert!(out.deferred.is_empty(), "{out:?}");
        assert_eq!(fake.restarts(), vec![UNIT, UNIT]);
        let st = state::load(&r.settings().state_path).unwrap();
        assert_eq!(st.pending, Pending::Nothing);
    }

    /// Changes faster than the spacing share one restart: the second one's
    /// restart waits for `restart-min-spacing-seconds` after the first.
    #[test]
    fn restarts_are_spaced_and_changes_within_the_spacing_share_one() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let mut r = node.reconciler(fake.clone());
        r.settings.restart_spacing = std::time::Duration::from_secs(1);
        node.put("ca1.crt", &pem("A"));
        let first = now_us();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        node.put("ca2.crt", &pem("B"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.restarted.is_empty(), "{out:?}");
        let wake = out.wake_at_us.unwrap();
        assert!(wake >= first + 1_000_000, "{wake} vs {first}");
        node.put("ca3.crt", &pem("C"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.restarted.is_empty(), "{out:?}");
        sleep_until_us(wake);
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert_eq!(
            fake.restarts(),
            vec![UNIT, UNIT],
            "one restart for both changes"
        );
    }

    #[test]
    fn republish_and_agent_restarts_are_noops() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let a = pem("A");
        node.put("ca1.crt", &a);
        rt().block_on(node.reconciler(fake.clone()).reconcile())
            .unwrap();
        for _ in 0..20 {
            node.put("ca1.crt", &a);
            let out = rt()
                .block_on(node.reconciler(fake.clone()).reconcile())
                .unwrap();
            assert!(!out.refreshed && out.restarted.is_empty());
        }
        assert_eq!(
            fake.commands().len(),
            1,
            "one refresh for the one real change"
        );
        assert_eq!(
            fake.restarts().len(),
            1,
            "one restart for the one real change"
        );
    }

    #[test]
    fn bad_keys_cause_no_refresh_and_no_restart() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        rt().block_on(r.reconcile()).unwrap();
        node.put("garbage.crt", "garbage");
        node.put("key.crt", &testpki::private_key_pem());
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.has_input_errors());
        assert!(out.findings.iter().any(|f| f.key == "garbage.crt"));
        assert!(out.findings.iter().any(|f| f.key == "key.crt"));
        assert_eq!(fake.commands().len(), 1);
        assert_eq!(fake.restarts().len(), 1);
        assert!(!node.bundle().contains("PRIVATE"));
    }

    #[test]
    fn broken_replacement_keeps_the_previous_version_trusted() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let a = pem("A");
        node.put("ca1.crt", &a);
        let r = node.reconciler(fake.clone());
        rt().block_on(r.reconcile()).unwrap();
        node.put("ca1.crt", "-----BEGIN CERTIFICATE-----\nbroken\n");
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.removed.is_empty());
        assert!(node.bundle().contains(a.lines().nth(1).unwrap()));
        assert_eq!(fake.restarts().len(), 1);
    }

    #[test]
    fn removing_a_key_removes_its_ca_with_one_restart() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let (a, b) = (pem("A"), pem("B"));
        node.put("ca1.crt", &a);
        node.put("ca2.crt", &b);
        let r = node.reconciler(fake.clone());
        rt().block_on(r.reconcile()).unwrap();
        fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.removed.len(), 1);
        assert!(!node.bundle().contains(a.lines().nth(1).unwrap()));
        assert_eq!(fake.restarts().len(), 2);
    }

    #[test]
    fn failed_refresh_is_retried_by_the_next_pass_and_restarts_once() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        *fake.command_status.lock().unwrap() = 1;
        let err = rt().block_on(r.reconcile()).unwrap_err();
        assert!(
            matches!(err, ReconcileError::RefreshFailed { status: 1, .. }),
            "{err}"
        );
        assert!(fake.restarts().is_empty());
        *fake.command_status.lock().unwrap() = 0;
        // Nothing changed in the input, but the pending refresh is finished.
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.refreshed);
        assert_eq!(fake.restarts().len(), 1);
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(!out.refreshed && out.restarted.is_empty());
    }

    #[test]
    fn a_failed_pass_still_reports_the_anchors_it_wrote_and_the_input_it_read() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let a = pem("A");
        node.put("ca1.crt", &a);
        let r = node.reconciler(fake.clone());
        *fake.command_status.lock().unwrap() = 1;
        let (out, result) = rt().block_on(r.reconcile_observed());
        assert!(matches!(result, Err(ReconcileError::RefreshFailed { .. })));
        let fp = crate::x509::cert::CertInfo::from_pem(a.as_bytes())
            .unwrap()
            .fingerprint;
        assert_eq!(out.trusted, [fp].into(), "the anchor was written");
        assert_eq!(
            out.secret_content,
            Some([("ca1.crt".to_string(), a.as_bytes().to_vec())].into())
        );
        // Removing the key: the next pass reports the empty set.
        *fake.command_status.lock().unwrap() = 0;
        fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
        let (out, result) = rt().block_on(r.reconcile_observed());
        result.unwrap();
        assert!(out.trusted.is_empty());
        assert_eq!(out.secret_content, Some(Default::default()));
    }

    #[test]
    fn failed_restart_job_is_retried_without_another_refresh() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        *fake.restart_result.lock().unwrap() = Some("failed".into());
        let err = rt().block_on(r.reconcile()).unwrap_err();
        assert!(matches!(err, ReconcileError::RestartFailed { .. }), "{err}");
        *fake.restart_result.lock().unwrap() = None;
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(!out.refreshed);
        assert_eq!(out.restarted, vec!["containerd.service"]);
        assert_eq!(fake.commands().len(), 1);
    }

    #[test]
    fn a_unit_that_came_up_by_itself_after_a_failed_restart_is_not_restarted_again() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        *fake.restart_result.lock().unwrap() = Some("failed".into());
        rt().block_on(r.reconcile()).unwrap_err();
        assert_eq!(fake.restarts().len(), 1);
        // containerd's Restart=always brought it up after the bundle was written.
        let written = r.store().bundle_modified_us().unwrap().unwrap();
        fake.set_active_since("containerd.service", written + 1);
        *fake.restart_result.lock().unwrap() = None;
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.restarted.is_empty() && !out.refreshed);
        assert_eq!(fake.restarts().len(), 1, "no second restart");
        let st = state::load(&r.settings().state_path).unwrap();
        assert_eq!(st.pending, Pending::Nothing, "the restart is done");
        assert_eq!(
            st.bundle_sha256,
            r.store().bundle_digest().unwrap(),
            "the unit runs with the current bundle"
        );
    }

    #[test]
    fn a_unit_running_since_before_the_bundle_changed_is_restarted() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        fake.set_active_since("containerd.service", 1);
        node.put("ca1.crt", &pem("A"));
        let out = rt()
            .block_on(node.reconciler(fake.clone()).reconcile())
            .unwrap();
        assert_eq!(out.restarted, vec!["containerd.service"]);
        assert_eq!(fake.restarts().len(), 1);
    }

    #[test]
    fn restarts_are_skipped_only_when_the_unit_started_after_the_bundle_was_written() {
        assert!(started_after(Some(2_000_001), Some(2_000_000)));
        assert!(!started_after(Some(2_000_000), Some(2_000_000)));
        assert!(!started_after(Some(1_000_000), Some(2_000_000)));
        assert!(!started_after(None, Some(2_000_000)), "not active");
        assert!(!started_after(Some(2_000_001), None), "no bundle time");
    }

    #[test]
    fn only_allowlisted_units_are_ever_restarted() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        // A state file from an older config asks for another unit.
        let state_path = r.settings().state_path.clone();
        fs::create_dir_all(state_path.parent().unwrap()).unwrap();
        let mut st = state::load(&state_path).unwrap();
        st.pending = Pending::Restart(["sshd.service".to_string()].into());
        state::save(&state_path, &st).unwrap();
        rt().block_on(r.reconcile()).unwrap();
        assert_eq!(fake.restarts(), vec!["containerd.service"]);
    }

    #[test]
    fn missing_source_that_never_existed_is_a_warning_but_one_that_vanished_is_an_error() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let mut r = node.reconciler(fake.clone());
        r.settings
            .sources
            .push(SourceSpec::File(node.root.path().join("no-such-file.pem")));
        node.put("ca1.crt", &pem("A"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(!out.has_input_errors(), "{:?}", out.findings);
        assert_eq!(out.installed.len(), 1);
        // The Secret dir provided a CA; now it is gone: error, CA kept.
        let secret = node.secret.path().to_path_buf();
        fs::remove_dir_all(&secret).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.has_input_errors());
        assert!(out.removed.is_empty());
        assert_eq!(fake.restarts().len(), 1);
    }

    const UNIT: &str = "containerd.service";

    /// containerd's config with `config_path` set, as AKS sets it.
    fn with_certs_d(node: &Node) -> std::path::PathBuf {
        let etc = node.root.path().join("etc/containerd");
        fs::create_dir_all(&etc).unwrap();
        fs::write(
            etc.join("config.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
        )
        .unwrap();
        etc.join("certs.d")
    }

    #[test]
    fn an_added_ca_is_live_with_no_restart_and_a_removed_one_restarts_once() {
        let node = Node::new();
        let certs_d = with_certs_d(&node);
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        // containerd (re)started with this config.
        fake.set_active_since(UNIT, now_us());
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.refreshed, "the OS store is still written");
        assert_eq!(out.restarts_avoided, vec![UNIT]);
        assert!(fake.restarts().is_empty(), "{:?}", fake.restarts());
        let trust = out.pull_trust.unwrap();
        assert!(trust.is_live(), "{trust:?}");
        let bundle = fs::read_to_string(certs_d.join("_default/node-cert-agent-ca.crt")).unwrap();
        assert!(bundle.contains("BEGIN CERTIFICATE"));
        let hosts = fs::read_to_string(certs_d.join("_default/hosts.toml")).unwrap();
        assert!(
            hosts.contains("ca = \"/etc/containerd/certs.d/_default/node-cert-agent-ca.crt\""),
            "{hosts}"
        );
        // A second CA: still live. Republishes and a new agent: nothing.
        node.put("ca2.crt", &pem("B"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarts_avoided, vec![UNIT]);
        for _ in 0..3 {
            let out = rt()
                .block_on(node.reconciler(fake.clone()).reconcile())
                .unwrap();
            assert!(out.restarts_avoided.is_empty() && out.restarted.is_empty());
        }
        assert!(fake.restarts().is_empty());
        // A removal: containerd may hold B in its cached roots.
        fs::remove_file(node.secret.path().join("ca2.crt")).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert!(
            out.restart_reasons[0].1.contains("1 removed CA may be"),
            "{:?}",
            out.restart_reasons
        );
        let bundle2 = fs::read_to_string(certs_d.join("_default/node-cert-agent-ca.crt")).unwrap();
        assert_eq!(bundle2.matches("BEGIN CERTIFICATE").count(), 1);
        // Everything removed: the agent's files go, and one more restart.
        fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert!(!certs_d.join("_default").exists());
        assert_eq!(fake.restarts().len(), 2);
    }

    #[test]
    fn a_deferred_removal_restart_is_kept_when_the_history_is_lost() {
        let node = Node::new();
        with_certs_d(&node);
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        fake.set_active_since(UNIT, now_us());
        let mut r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        rt().block_on(r.reconcile()).unwrap();
        assert!(fake.restarts().is_empty(), "added live");
        // The removal's restart waits for the node's share of the spread.
        r.settings.restart_delay = std::time::Duration::from_millis(800);
        fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        let wake = out.wake_at_us.expect("deferred");
        // The restart history is lost (unreadable, or an older agent's).
        fs::remove_file(crate::trust::pacing::history_path(&r.settings().state_path)).unwrap();
        sleep_until_us(wake);
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT], "containerd may still hold A");
        assert!(out.restarts_avoided.is_empty());
    }

    #[test]
    fn a_ca_taken_live_is_cached_after_someone_elses_restart_so_its_removal_restarts() {
        let node = Node::new();
        with_certs_d(&node);
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        // containerd (re)started with this config.
        fake.set_active_since(UNIT, now_us());
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        node.put("ca2.crt", &pem("B"));
        rt().block_on(r.reconcile()).unwrap();
        assert!(fake.restarts().is_empty());
        // An operator restarts containerd: the new process loads A and B.
        assert!(fake.external_start(UNIT).is_done());
        fs::remove_file(node.secret.path().join("ca2.crt")).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
    }

    #[test]
    fn a_registry_directory_of_another_owner_brings_back_the_restart() {
        let node = Node::new();
        let certs_d = with_certs_d(&node);
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        // containerd (re)started with this config.
        fake.set_active_since(UNIT, now_us());
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        rt().block_on(r.reconcile()).unwrap();
        assert!(fake.restarts().is_empty());
        // A took effect live; a registry gets its own directory, which
        // _default does not reach: containerd needs A in its system roots.
        fs::create_dir_all(certs_d.join("registry.test_5000_")).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        let trust = out.pull_trust.unwrap();
        assert_eq!(
            trust.path.as_deref(),
            Some(std::path::Path::new(
                "/etc/containerd/certs.d/registry.test_5000_"
            ))
        );
        // Then each added CA restarts, once.
        node.put("ca2.crt", &pem("B"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert!(out.restarts_avoided.is_empty());
        assert_eq!(fake.restarts().len(), 2);
    }

    #[test]
    fn an_operators_default_hosts_file_is_untouched_and_changes_restart() {
        let node = Node::new();
        let certs_d = with_certs_d(&node);
        fs::create_dir_all(certs_d.join("_default")).unwrap();
        let theirs = b"server = \"https://mirror.example\"\n";
        fs::write(certs_d.join("_default/hosts.toml"), theirs).unwrap();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        // containerd (re)started with this config.
        fake.set_active_since(UNIT, now_us());
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert_eq!(
            fs::read(certs_d.join("_default/hosts.toml")).unwrap(),
            theirs
        );
        assert_eq!(
            fs::read_dir(certs_d.join("_default")).unwrap().count(),
            1,
            "nothing of the agent's beside it"
        );
        let trust = out.pull_trust.unwrap();
        assert_eq!(
            trust.path.as_deref(),
            Some(std::path::Path::new(
                "/etc/containerd/certs.d/_default/hosts.toml"
            ))
        );
    }

    #[test]
    fn a_config_changed_since_containerd_started_is_not_trusted_to_be_live() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        fake.set_active_since(UNIT, 1);
        with_certs_d(&node);
        node.put("ca1.crt", &pem("A"));
        let out = rt()
            .block_on(node.reconciler(fake.clone()).reconcile())
            .unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert!(
            out.restart_reasons[0]
                .1
                .contains("config changed since it started"),
            "{:?}",
            out.restart_reasons
        );
    }

    /// The fake's containerd with start limit `burst` in `interval_ms`.
    fn limit(fake: &RecordingSystemd, burst: u32, interval_ms: u64) -> StartLimit {
        let limit = StartLimit {
            burst,
            interval_us: interval_ms * 1000,
        };
        fake.with_unit(UNIT, |u| u.start_limit = limit);
        limit
    }

    fn sleep_until_us(at: u64) {
        std::thread::sleep(std::time::Duration::from_micros(
            at.saturating_sub(now_us()),
        ));
    }

    #[test]
    fn changes_faster_than_the_start_limit_share_one_deferred_restart() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        // One agent start per 1.5 s window (burst 2, one left to others).
        limit(&fake, 2, 1500);
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        let mut wake = None;
        for (key, cn) in [("ca2.crt", "B"), ("ca3.crt", "C")] {
            node.put(key, &pem(cn));
            let out = rt().block_on(r.reconcile()).unwrap();
            assert!(out.refreshed && out.restarted.is_empty(), "{out:?}");
            assert_eq!(out.deferred.len(), 1);
            assert_eq!(out.deferred[0].unit, UNIT);
            let at = out.wake_at_us.unwrap();
            assert!(at > now_us() && at <= now_us() + 2_100_000, "{at}");
            wake.get_or_insert(at);
        }
        assert_eq!(fake.restarts().len(), 1, "the changes wait together");
        let st = state::load(&r.settings().state_path).unwrap();
        assert_eq!(st.pending, Pending::Restart([UNIT.to_string()].into()));

        // A restarted agent finds the same wait in the restart history.
        let again = node.reconciler(fake.clone());
        let out = rt().block_on(again.reconcile()).unwrap();
        assert_eq!(out.wake_at_us, wake, "{out:?}");
        let report = crate::trust::pacing::load(&crate::trust::pacing::history_path(
            &r.settings().state_path,
        ))
        .0;
        assert_eq!(report.units[UNIT].not_before_us, wake);

        sleep_until_us(wake.unwrap());
        let out = rt().block_on(again.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert!(out.deferred.is_empty() && out.wake_at_us.is_none());
        assert_eq!(fake.restarts().len(), 2, "one restart for both changes");
        assert!(
            fake.unit(UNIT).active_state == "active",
            "never at the limit"
        );
        let st = state::load(&r.settings().state_path).unwrap();
        assert_eq!(st.pending, Pending::Nothing);
        assert_eq!(st.bundle_sha256, r.store().bundle_digest().unwrap());
    }

    #[test]
    fn a_restart_the_agent_drove_into_start_limit_hit_is_recovered_at_once_by_a_reset() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        limit(&fake, 3, 1000);
        // Others used up the window (the agent sees only the latest start).
        for _ in 0..3 {
            assert!(fake.external_start(UNIT).is_done());
        }
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        let err = rt().block_on(r.reconcile()).unwrap_err();
        let ReconcileError::StartLimitHit { recover_at_us, .. } = err else {
            panic!("{err}");
        };
        assert!(recovering(&r), "the agent brings it back");
        assert!(fake.unit(UNIT).active_state == "failed");
        assert_eq!(fake.restarts(), vec![UNIT]);
        // ResetFailedUnit clears systemd's counter: no window to wait out.
        assert!(recover_at_us <= now_us(), "{recover_at_us}");
        assert_eq!(err.retry_at_us(), Some(recover_at_us));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT]);
        assert_eq!(out.recovered, vec![UNIT]);
        assert_eq!(
            (fake.resets(), fake.starts()),
            (vec![UNIT.to_string()], vec![UNIT.to_string()])
        );
        assert!(fake.unit(UNIT).active_state == "active");
        assert_eq!(
            state::load(&r.settings().state_path).unwrap().pending,
            Pending::Nothing
        );
    }

    /// Whether the restart history says the agent brings containerd back
    /// from a start-limit-hit (what `status` shows as `recovering`).
    fn recovering(r: &Reconciler<Arc<RecordingSystemd>>) -> bool {
        let h = crate::trust::pacing::load(&crate::trust::pacing::history_path(
            &r.settings().state_path,
        ))
        .0;
        let u = &h.units[UNIT];
        u.responsible && u.limit_hit_us.is_some()
    }

    #[test]
    fn a_unit_failed_before_the_restart_is_reported_failed_and_never_started() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        fake.with_unit(UNIT, |u| {
            u.active_state = "failed".into();
            u.sub_state = "failed".into();
            u.result = "start-limit-hit".into();
        });
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        for _ in 0..2 {
            let err = rt().block_on(r.reconcile()).unwrap_err();
            assert!(matches!(err, ReconcileError::UnitFailed { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("Result=start-limit-hit")
                    && text.contains("systemctl reset-failed containerd.service"),
                "{text}"
            );
        }
        assert!(fake.restarts().is_empty() && fake.starts().is_empty() && fake.resets().is_empty());
        // The operator brings it back: it reads the new bundle; no restart.
        fake.set_active_since(UNIT, now_us());
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.restarted.is_empty());
        assert!(fake.restarts().is_empty());
        assert_eq!(
            state::load(&r.settings().state_path).unwrap().pending,
            Pending::Nothing
        );
    }

    #[test]
    fn a_removal_runs_the_incremental_tool_a_full_rebuild_would_not_tell_the_hooks_either() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        rt().block_on(r.reconcile()).unwrap();
        fs::remove_file(node.secret.path().join("ca1.crt")).unwrap();
        rt().block_on(r.reconcile()).unwrap();
        let tool = vec!["/usr/sbin/update-ca-certificates".to_string()];
        assert_eq!(fake.commands(), vec![tool.clone(), tool]);
    }

    #[test]
    fn a_bundle_without_the_agents_ca_after_the_refresh_is_an_error_and_restarts_nothing() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::default());
        // A refresh that leaves the agent's anchor out (a blocklist entry).
        let root = node.root.path().to_path_buf();
        *fake.on_command.lock().unwrap() = Some(Box::new(move || {
            fs::write(root.join("etc/ssl/certs/ca-certificates.crt"), "distro\n").unwrap();
        }));
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        let err = rt().block_on(r.reconcile()).unwrap_err();
        assert!(
            matches!(err, ReconcileError::BundleIncomplete { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("even after a full rebuild"),
            "{err}"
        );
        let argv: Vec<Vec<String>> = fake.commands();
        assert_eq!(argv.len(), 2, "the tool, then its full rebuild: {argv:?}");
        assert_eq!(argv[1].last().map(String::as_str), Some("--fresh"));
        assert!(fake.restarts().is_empty(), "nothing restarted");
        let st = state::load(&r.settings().state_path).unwrap();
        assert_eq!(st.pending, Pending::Refresh, "retried by the next pass");
        // The next refresh gets it right: the pass finishes with one restart.
        let root = node.root.path().to_path_buf();
        *fake.on_command.lock().unwrap() = Some(Box::new(move || {
            crate::node::systemd::fake::rebuild_debian_bundle_for_tests(&root)
        }));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.refreshed);
        assert_eq!(fake.restarts(), vec![UNIT]);
    }

    #[test]
    fn drift_is_repaired_by_the_next_pass_with_no_restart() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let r = node.reconciler(fake.clone());
        node.put("ca1.crt", &pem("A"));
        rt().block_on(r.reconcile()).unwrap();
        assert_eq!(fake.restarts().len(), 1);
        let with_a = node.bundle();
        // A bundle rebuilt without the agent's anchors (a `--fresh` run of
        // someone else's that did not see them).
        fs::write(
            node.root.path().join("etc/ssl/certs/ca-certificates.crt"),
            "distro\n",
        )
        .unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.refreshed, "refreshed again");
        assert_eq!(node.bundle(), with_a);
        assert_eq!(
            fake.restarts().len(),
            1,
            "the units run with that bundle already"
        );
        // An anchor deleted by configuration management.
        let anchors = node
            .root
            .path()
            .join("usr/local/share/ca-certificates/node-cert-agent");
        for e in fs::read_dir(&anchors).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.installed.len(), 1, "written again");
        assert_eq!(node.bundle(), with_a);
        // Nothing left to repair: a no-op.
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(!out.refreshed && out.installed.is_empty());
    }

    #[test]
    fn changes_faster_than_the_spread_never_push_the_restart_out() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let mut r = node.reconciler(fake.clone());
        r.settings.restart_delay = std::time::Duration::from_millis(1500);
        node.put("ca1.crt", &pem("A"));
        let out = rt().block_on(r.reconcile()).unwrap();
        let first = out.wake_at_us.expect("deferred by the spread");
        for (i, cn) in ["B", "C", "D"].iter().enumerate() {
            std::thread::sleep(std::time::Duration::from_millis(300));
            node.put(&format!("ca{}.crt", i + 2), &pem(cn));
            let out = rt().block_on(r.reconcile()).unwrap();
            assert!(out.restarted.is_empty());
            assert_eq!(out.wake_at_us, Some(first), "counted from the first change");
        }
        assert!(fake.restarts().is_empty());
        sleep_until_us(first);
        let out = rt().block_on(r.reconcile()).unwrap();
        assert_eq!(out.restarted, vec![UNIT], "one restart for all four");
        // The next change starts a new spread.
        node.put("ca9.crt", &pem("E"));
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.wake_at_us.unwrap() > first + 1_000_000);
    }

    #[test]
    fn a_restart_unit_that_does_not_exist_is_an_error_naming_the_likely_one() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        let mut r = node.reconciler(fake.clone());
        r.settings.restart_units = vec!["crio.service".into()];
        fake.with_unit("crio.service", |u| {
            *u = FakeUnit::stopped();
            u.load_state = "not-found".into();
        });
        node.put("ca1.crt", &pem("A"));
        for _ in 0..2 {
            let err = rt().block_on(r.reconcile()).unwrap_err();
            assert!(matches!(err, ReconcileError::UnitMissing { .. }), "{err}");
            assert_eq!(
                err.to_string(),
                "crio.service is not-found on this node, so restarting it cannot make the new CAs effective; set restart-units to the unit that runs the container runtime here (containerd.service on most nodes; k3s.service or k3s-agent.service on k3s, rke2-server.service or rke2-agent.service on RKE2, crio.service on CRI-O nodes)"
            );
        }
        let st = state::load(&r.settings().state_path).unwrap();
        assert_ne!(st.pending, Pending::Nothing, "not reported as done");
        assert!(fake.restarts().is_empty());
        // A masked unit too.
        fake.with_unit("crio.service", |u| u.load_state = "masked".into());
        let err = rt().block_on(r.reconcile()).unwrap_err();
        assert!(
            err.to_string().starts_with("crio.service is masked"),
            "{err}"
        );
    }

    #[test]
    fn a_stopped_unit_stays_stopped_and_is_not_reported_restarted() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        fake.with_unit(UNIT, |u| *u = FakeUnit::stopped());
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.restarted.is_empty());
        assert_eq!(out.not_running, vec![UNIT]);
        assert!(fake.restarts().is_empty());
        assert_eq!(fake.unit(UNIT).active_state, "inactive");
        let st = state::load(&r.settings().state_path).unwrap();
        assert_eq!(st.pending, Pending::Nothing);
    }

    #[test]
    fn a_restart_job_done_that_leaves_the_unit_down_is_not_a_restart() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        // The job ends `done`, but the unit is where it was, not restarted.
        *fake.restart_result.lock().unwrap() = Some("done".into());
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        let err = rt().block_on(r.reconcile()).unwrap_err();
        assert!(
            matches!(err, ReconcileError::NotActiveAfterRestart { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("did not start again"), "{err}");
        let st = state::load(&r.settings().state_path).unwrap();
        assert_ne!(st.pending, Pending::Nothing, "the restart is still to do");
    }

    #[test]
    fn interrupted_pass_is_finished_after_a_crash() {
        let node = Node::new();
        let fake = Arc::new(RecordingSystemd::emulating_debian(node.root.path()));
        node.put("ca1.crt", &pem("A"));
        let r = node.reconciler(fake.clone());
        // A crash after writing anchors but before the refresh: state says pending.
        let state_path = r.settings().state_path.clone();
        fs::create_dir_all(state_path.parent().unwrap()).unwrap();
        let mut st = state::load(&state_path).unwrap();
        st.pending = Pending::Refresh;
        st.bundle_sha256 = r.store().bundle_digest().unwrap();
        state::save(&state_path, &st).unwrap();
        let out = rt().block_on(r.reconcile()).unwrap();
        assert!(out.refreshed);
        assert_eq!(fake.restarts().len(), 1);
    }
}
