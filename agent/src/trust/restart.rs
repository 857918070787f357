//! The restart phase of a trust pass: the state machine that takes each
//! pending unit to "restarted", "already current", "avoided" (the live pull
//! trust made it effective), "stopped" or "deferred", within its start
//! limit ([`crate::trust::pacing`]), spaced, spread across the fleet, and
//! brought back after a start-limit-hit of the agent's own making.
//!
//! Owns: which pending unit is restarted, when, and what its state after
//! the job means. Boundary: it restarts only allowlisted units (the pass
//! hands it `CaState::pending`), never writes anchors or the bundle (that
//! is [`crate::trust::reconcile`]'s), and talks to systemd only through the
//! `Systemd` trait.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::node::docker::{self, LiveRestore};
use crate::node::systemd::{Systemd, UnitStatus};
use crate::time::{now_us, rfc3339, rfc3339_us};
use crate::trust::pacing::{self, RestartHistory};
use crate::trust::pull_trust::{self, RuntimeTrust, RUNTIME_UNIT};
use crate::trust::reconcile::{DeferredRestart, Outcome, PassFacts, ReconcileError, Reconciler};
use crate::trust::state::{CaState, Pending};
use crate::x509::cert::Fingerprint;

impl<S: Systemd> Reconciler<S> {
    /// Phase 4: restart the units whose restart is pending, within their
    /// start limits. Whether a unit was found already running with the new
    /// bundle (and so skipped).
    pub(super) async fn restart(
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
