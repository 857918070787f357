//! A recording fake of [`Systemd`] for tests (unit tests, `agent/tests` and
//! `integration-tests`, through the `testing` feature): it records every
//! call, answers as told, and otherwise behaves as systemd does for what
//! the agent relies on: `TryRestartUnit` restarts a running unit and leaves
//! an inactive or failed one alone (its job still ends `done`); every start
//! counts against the unit's start limit, and one start too many fails the
//! unit with `Result=start-limit-hit`; `ResetFailedUnit` clears that.

use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use super::{CommandOutcome, JobResult, StartLimit, Systemd, SystemdError, UnitExec, UnitStatus};
use crate::time::now_us;

/// One unit as the fake keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeUnit {
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
    pub inactive_exit_us: u64,
    /// No limit unless a test sets one.
    pub start_limit: StartLimit,
    /// `loaded` unless a test says otherwise (`not-found`, `masked`).
    pub load_state: String,
    /// How it starts its process (empty unless a test sets it).
    pub exec: UnitExec,
    /// Units its restart restarts too (none unless a test sets them).
    pub restarted_with: Vec<String>,
    /// systemd's rate limiter: when the current window began, and the
    /// starts in it.
    window: Option<(u64, u32)>,
}

impl Default for FakeUnit {
    /// Running since long before any test's bundle was written.
    fn default() -> Self {
        Self {
            active_state: "active".into(),
            sub_state: "running".into(),
            result: "success".into(),
            inactive_exit_us: 1,
            start_limit: StartLimit {
                burst: 0,
                interval_us: 0,
            },
            load_state: "loaded".into(),
            exec: UnitExec::default(),
            restarted_with: Vec::new(),
            window: None,
        }
    }
}

impl FakeUnit {
    /// A stopped unit (`inactive`/`dead`).
    pub fn stopped() -> Self {
        Self {
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            ..Self::default()
        }
    }

    /// systemd's `ratelimit_below`: whether one more start at `now` is
    /// allowed, counting it.
    fn allow_start(&mut self, now: u64) -> bool {
        if self.start_limit.is_unlimited() {
            return true;
        }
        match &mut self.window {
            Some((begin, n)) if now <= *begin + self.start_limit.interval_us => {
                if *n < self.start_limit.burst {
                    *n += 1;
                    true
                } else {
                    false
                }
            }
            _ => {
                self.window = Some((now, 1));
                true
            }
        }
    }

    /// A start at `now`: active again, or failed at the start limit.
    /// Returns the job's result.
    fn start(&mut self, now: u64) -> JobResult {
        if !self.allow_start(now) {
            self.active_state = "failed".into();
            self.sub_state = "failed".into();
            self.result = "start-limit-hit".into();
            return JobResult("failed".into());
        }
        self.active_state = "active".into();
        self.sub_state = "running".into();
        self.result = "success".into();
        self.inactive_exit_us = now;
        JobResult("done".into())
    }

    fn status(&self) -> UnitStatus {
        UnitStatus {
            active_state: self.active_state.clone(),
            sub_state: self.sub_state.clone(),
            result: self.result.clone(),
            inactive_exit_us: self.inactive_exit_us,
            start_limit: self.start_limit,
            load_state: self.load_state.clone(),
        }
    }
}

#[derive(Default)]
pub struct RecordingSystemd {
    /// Every `TryRestartUnit`, by unit.
    pub restarts: StdMutex<Vec<String>>,
    /// Every `StartUnit`, by unit.
    pub starts: StdMutex<Vec<String>>,
    /// Every `ResetFailedUnit`, by unit.
    pub resets: StdMutex<Vec<String>>,
    pub commands: StdMutex<Vec<Vec<String>>>,
    /// When set, restarts and starts answer with this job result and change
    /// nothing.
    pub restart_result: StdMutex<Option<String>>,
    /// When set, commands exit with this status.
    pub command_status: StdMutex<i32>,
    /// How long each command takes (awaited, so the runtime stays free).
    pub command_delay: StdMutex<Duration>,
    /// Run on every command, to emulate the refresh tool's effect.
    #[allow(clippy::type_complexity, reason = "a test hook")]
    pub on_command: StdMutex<Option<Box<dyn Fn() + Send>>>,
    /// The units; one not in here is [`FakeUnit::default`] (running).
    pub units: StdMutex<BTreeMap<String, FakeUnit>>,
}

impl RecordingSystemd {
    /// A fake whose commands rebuild `<root>/etc/ssl/certs/ca-certificates.crt`
    /// from a fixed distro part plus the agent's Debian anchors, as
    /// `update-ca-certificates` does.
    pub fn emulating_debian(root: &std::path::Path) -> Self {
        let root = root.to_path_buf();
        let fake = Self::default();
        if let Ok(mut hook) = fake.on_command.lock() {
            *hook = Some(Box::new(move || rebuild_debian_bundle(&root)));
        }
        fake
    }

    pub fn restarts(&self) -> Vec<String> {
        self.restarts.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn starts(&self) -> Vec<String> {
        self.starts.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn resets(&self) -> Vec<String> {
        self.resets.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Every command run so far, as argv.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.commands.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Changes `unit` (created running if the fake has not seen it).
    pub fn with_unit(&self, unit: &str, change: impl FnOnce(&mut FakeUnit)) {
        if let Ok(mut units) = self.units.lock() {
            change(units.entry(unit.to_string()).or_default());
        }
    }

    /// `unit` as the fake has it now.
    pub fn unit(&self, unit: &str) -> FakeUnit {
        self.units
            .lock()
            .ok()
            .and_then(|u| u.get(unit).cloned())
            .unwrap_or_default()
    }

    /// `unit` active since `us` (its `InactiveExitTimestamp`).
    pub fn set_active_since(&self, unit: &str, us: u64) {
        self.with_unit(unit, |u| {
            u.active_state = "active".into();
            u.sub_state = "running".into();
            u.inactive_exit_us = us;
        });
    }

    /// A start of `unit` by someone else (boot, an operator, `Restart=`):
    /// it counts against the start limit too.
    pub fn external_start(&self, unit: &str) -> JobResult {
        let now = now_us();
        let mut result = JobResult("done".into());
        self.with_unit(unit, |u| result = u.start(now));
        result
    }

    fn forced_result(&self) -> Option<JobResult> {
        self.restart_result
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .map(JobResult)
    }
}

/// What [`RecordingSystemd::emulating_debian`]'s refresh does, for tests
/// that install their own command hook.
pub fn rebuild_debian_bundle_for_tests(root: &std::path::Path) {
    rebuild_debian_bundle(root)
}

fn rebuild_debian_bundle(root: &std::path::Path) {
    let mut bundle = String::from("distro\n");
    if let Ok(entries) =
        std::fs::read_dir(root.join("usr/local/share/ca-certificates/node-cert-agent"))
    {
        let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            bundle.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
    }
    let dir = root.join("etc/ssl/certs");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("ca-certificates.crt"), bundle);
}

impl Systemd for RecordingSystemd {
    async fn try_restart_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        if let Ok(mut g) = self.restarts.lock() {
            g.push(unit.to_string());
        }
        if let Some(forced) = self.forced_result() {
            return Ok(forced);
        }
        let now = now_us();
        let mut result = JobResult("done".into());
        self.with_unit(unit, |u| {
            // A stopped or failed unit stays as it is; the job is `done`.
            if u.status().is_running() {
                result = u.start(now);
            }
        });
        Ok(result)
    }

    async fn run_command(&self, argv: &[String]) -> Result<CommandOutcome, SystemdError> {
        if let Ok(mut g) = self.commands.lock() {
            g.push(argv.to_vec());
        }
        let delay = self.command_delay.lock().map(|g| *g).unwrap_or_default();
        tokio::time::sleep(delay).await;
        if let Ok(hook) = self.on_command.lock() {
            if let Some(f) = hook.as_ref() {
                f();
            }
        }
        let status = self.command_status.lock().map(|g| *g).unwrap_or(0);
        Ok(CommandOutcome {
            unit: "fake.service".into(),
            result: if status == 0 {
                "success".into()
            } else {
                "exit-code".into()
            },
            exit_status: status,
        })
    }

    async fn unit_status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        Ok(self.unit(unit).status())
    }

    async fn unit_exec(&self, unit: &str) -> Result<UnitExec, SystemdError> {
        Ok(self.unit(unit).exec)
    }

    async fn restarted_with(&self, unit: &str) -> Result<Vec<String>, SystemdError> {
        Ok(self.unit(unit).restarted_with)
    }

    async fn reset_failed_unit(&self, unit: &str) -> Result<(), SystemdError> {
        if let Ok(mut g) = self.resets.lock() {
            g.push(unit.to_string());
        }
        self.with_unit(unit, |u| {
            if u.active_state == "failed" {
                u.active_state = "inactive".into();
                u.sub_state = "dead".into();
                u.result = "success".into();
            }
            u.window = None;
        });
        Ok(())
    }

    async fn start_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        if let Ok(mut g) = self.starts.lock() {
            g.push(unit.to_string());
        }
        if let Some(forced) = self.forced_result() {
            return Ok(forced);
        }
        let now = now_us();
        let mut result = JobResult("done".into());
        self.with_unit(unit, |u| {
            if !u.status().is_active() {
                result = u.start(now);
            }
        });
        Ok(result)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_hits_the_start_limit_as_systemd_does() {
        let fake = RecordingSystemd::default();
        let unit = "containerd.service";
        fake.with_unit(unit, |u| {
            u.start_limit = StartLimit {
                burst: 2,
                interval_us: 60_000_000,
            }
        });
        assert!(fake.try_restart_unit(unit).await.unwrap().is_done());
        assert!(fake.try_restart_unit(unit).await.unwrap().is_done());
        assert_eq!(fake.try_restart_unit(unit).await.unwrap().0, "failed");
        let st = fake.unit_status(unit).await.unwrap();
        assert!(st.is_failed() && st.hit_start_limit());
        // TryRestartUnit does nothing on a failed unit, and says `done`.
        assert!(fake.try_restart_unit(unit).await.unwrap().is_done());
        assert!(fake.unit_status(unit).await.unwrap().is_failed());
        fake.reset_failed_unit(unit).await.unwrap();
        assert!(fake.start_unit(unit).await.unwrap().is_done());
        assert!(fake.unit_status(unit).await.unwrap().is_active());
    }
}
