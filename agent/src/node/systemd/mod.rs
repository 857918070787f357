//! The one boundary to systemd: restart a unit, run a command on the node,
//! ask how a unit stands (its state, its last result, its start limit),
//! clear a failed unit and start it.
//!
//! [`Systemd`] is the trait the jobs use; [`dbus::DbusSystemd`] implements it
//! over the system bus (`org.freedesktop.systemd1`), so it works the same on
//! the host and from a pod that has the node's bus socket. Running the
//! refresh tool as a transient unit makes it run in the node's own root with
//! the node's own binaries, and never through a shell. [`fake`] is a
//! recording fake for tests (the `testing` feature), kept beside the trait so
//! that every test uses the same one.
//!
//! Boundary: this module knows systemd's D-Bus API, not what the agent wants
//! from it; which units may be restarted is the callers' allowlist.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

pub mod dbus;
#[cfg(any(test, feature = "testing"))]
pub mod fake;

pub use dbus::DbusSystemd;

/// How long a unit restart may take before it is reported as hung.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the refresh tool may run (it takes about a second).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The result systemd gives a finished job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobResult(pub String);

impl JobResult {
    pub fn is_done(&self) -> bool {
        self.0 == "done"
    }
}

/// A unit's start rate limit (`StartLimitBurst` starts within
/// `StartLimitIntervalUSec`); a sixth start within systemd's default 10 s
/// fails the unit with `Result=start-limit-hit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartLimit {
    pub burst: u32,
    pub interval_us: u64,
}

impl StartLimit {
    /// systemd's own defaults (`DefaultStartLimitBurst=5`,
    /// `DefaultStartLimitIntervalSec=10s`): what the agent assumes when it
    /// cannot read a unit's own values.
    pub const SYSTEMD_DEFAULT: StartLimit = StartLimit {
        burst: 5,
        interval_us: 10_000_000,
    };

    /// A burst or an interval of 0 turns rate limiting off.
    pub fn is_unlimited(&self) -> bool {
        self.burst == 0 || self.interval_us == 0
    }
}

impl std::fmt::Display for StartLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unlimited() {
            return f.write_str("no start limit");
        }
        write!(
            f,
            "{} starts in {}",
            self.burst,
            crate::time::short_span_us(self.interval_us)
        )
    }
}

/// How a unit stands, as systemd says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitStatus {
    /// `ActiveState`: `active`, `reloading`, `inactive`, `failed`,
    /// `activating`, `deactivating`.
    pub active_state: String,
    /// `SubState`: `running`, `dead`, `failed`, `auto-restart`, ...
    pub sub_state: String,
    /// The unit type's `Result` (`success`, `exit-code`,
    /// `start-limit-hit`, ...); empty for a type without one.
    pub result: String,
    /// `InactiveExitTimestamp`: when the unit's current (or last)
    /// activation began, microseconds since the epoch; 0 if never.
    pub inactive_exit_us: u64,
    pub start_limit: StartLimit,
    /// `LoadState`: `loaded`, `not-found`, `masked`, `bad-setting`,
    /// `error`, ... A unit that is not `loaded` does not run here.
    pub load_state: String,
}

impl UnitStatus {
    /// systemd has no such unit, or it is masked (or broken): it cannot be
    /// what runs the CAs' consumer on this node.
    pub fn is_missing(&self) -> bool {
        matches!(
            self.load_state.as_str(),
            "not-found" | "masked" | "bad-setting" | "error"
        )
    }

    /// Active (or reloading): it runs.
    pub fn is_active(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "reloading")
    }

    /// Active, activating (an automatic restart included) or deactivating:
    /// what `TryRestartUnit` restarts. Inactive and failed units it leaves.
    pub fn is_running(&self) -> bool {
        !matches!(self.active_state.as_str(), "inactive" | "failed")
    }

    pub fn is_failed(&self) -> bool {
        self.active_state == "failed"
    }

    /// systemd refused to start it again: too many starts too fast.
    pub fn hit_start_limit(&self) -> bool {
        self.result == "start-limit-hit"
    }

    /// When its current activation began, if it is active.
    pub fn active_since(&self) -> Option<u64> {
        (self.is_active() && self.inactive_exit_us > 0).then_some(self.inactive_exit_us)
    }
}

/// How a service unit starts its process, as systemd holds it: the
/// unexpanded command line of its first `ExecStart=` (the `$VAR` and
/// `${VAR}` references are expanded by systemd at exec time, and by
/// `kubelet::kubelet_config` for the agent) and its environment settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitExec {
    /// `ExecStart`'s first entry: argv, program name first. Empty when the
    /// unit has none (not a service, or not loaded).
    pub argv: Vec<String>,
    /// `Environment`: `NAME=value` assignments, in order.
    pub environment: Vec<String>,
    /// `EnvironmentFiles`: each file, and whether it may be missing (`-`).
    pub environment_files: Vec<(String, bool)>,
}

/// How a command run on the node ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The transient unit it ran in, whose journal holds its output.
    pub unit: String,
    /// systemd's `Result` for the service: `success`, `exit-code`, ...
    pub result: String,
    pub exit_status: i32,
}

impl CommandOutcome {
    pub fn succeeded(&self) -> bool {
        self.result == "success" && self.exit_status == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot connect to the system bus at {address}: {source}; check that the node's D-Bus socket is mounted and this process runs as root")]
    Connect {
        address: String,
        source: Box<zbus::Error>,
    },
    #[error("D-Bus call {call} for unit {unit} failed: {source}")]
    Call {
        call: &'static str,
        unit: String,
        source: Box<zbus::Error>,
    },
    #[error("lost the connection to the system bus at {address} (D-Bus call {call} for unit {unit}: {source}); the next attempt reconnects")]
    ConnectionLost {
        address: String,
        call: &'static str,
        unit: String,
        source: Box<zbus::Error>,
    },
    #[error("job for unit {unit} did not finish within {timeout:?}")]
    JobTimeout { unit: String, timeout: Duration },
    #[error("the system bus closed while waiting for the job of unit {unit}")]
    StreamEnded { unit: String },
}

/// What the agent needs from systemd. Implemented over D-Bus, and by a
/// recording fake in tests.
pub trait Systemd: Send + Sync {
    /// Restarts `unit` if it is running (`TryRestartUnit`, mode `replace`) and
    /// waits for the job's result. A stopped unit stays stopped.
    fn try_restart_unit(
        &self,
        unit: &str,
    ) -> impl Future<Output = Result<JobResult, SystemdError>> + Send;

    /// Runs `argv` (absolute program path first) on the node as a transient
    /// oneshot unit and waits for it to exit.
    fn run_command(
        &self,
        argv: &[String],
    ) -> impl Future<Output = Result<CommandOutcome, SystemdError>> + Send;

    /// How `unit` stands: its states, `Result`, `InactiveExitTimestamp` and
    /// start limit (a unit that is not loaded is `inactive`).
    fn unit_status(
        &self,
        unit: &str,
    ) -> impl Future<Output = Result<UnitStatus, SystemdError>> + Send;

    /// Clears `unit`'s failed state (`ResetFailedUnit`); this also resets
    /// its start rate limit counter.
    fn reset_failed_unit(
        &self,
        unit: &str,
    ) -> impl Future<Output = Result<(), SystemdError>> + Send;

    /// Starts `unit` (`StartUnit`, mode `replace`) and waits for the job's
    /// result.
    fn start_unit(
        &self,
        unit: &str,
    ) -> impl Future<Output = Result<JobResult, SystemdError>> + Send;

    /// How service `unit` starts its process (`ExecStart`, `Environment`,
    /// `EnvironmentFiles`); empty for a unit that is not loaded.
    fn unit_exec(&self, unit: &str) -> impl Future<Output = Result<UnitExec, SystemdError>> + Send;

    /// The units a restart of `unit` restarts (or stops) too: its
    /// `RequiredBy`, `BoundBy` and `ConsistsOf` (units `PartOf` it).
    fn restarted_with(
        &self,
        unit: &str,
    ) -> impl Future<Output = Result<Vec<String>, SystemdError>> + Send;
}

/// The bus address: `DBUS_SYSTEM_BUS_ADDRESS` if set, else the node's socket
/// resolved under the host root.
pub fn bus_address(env: &HashMap<String, String>, socket_path: &std::path::Path) -> String {
    match env.get("DBUS_SYSTEM_BUS_ADDRESS") {
        Some(a) if !a.is_empty() => a.clone(),
        _ => format!("unix:path={}", socket_path.display()),
    }
}

impl<T: Systemd> Systemd for std::sync::Arc<T> {
    async fn try_restart_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        self.as_ref().try_restart_unit(unit).await
    }

    async fn run_command(&self, argv: &[String]) -> Result<CommandOutcome, SystemdError> {
        self.as_ref().run_command(argv).await
    }

    async fn unit_status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        self.as_ref().unit_status(unit).await
    }

    async fn reset_failed_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.as_ref().reset_failed_unit(unit).await
    }

    async fn unit_exec(&self, unit: &str) -> Result<UnitExec, SystemdError> {
        self.as_ref().unit_exec(unit).await
    }

    async fn restarted_with(&self, unit: &str) -> Result<Vec<String>, SystemdError> {
        self.as_ref().restarted_with(unit).await
    }

    async fn start_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        self.as_ref().start_unit(unit).await
    }
}
