//! The one boundary to systemd: restart a unit, run a command on the node,
//! ask since when a unit has been active.
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

    /// When `unit`'s current activation began (its `InactiveExitTimestamp`,
    /// microseconds since the epoch) if the unit is active now; `None` if it
    /// is not active, not loaded, or systemd does not know the time.
    fn unit_active_since(
        &self,
        unit: &str,
    ) -> impl Future<Output = Result<Option<u64>, SystemdError>> + Send;
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

    async fn unit_active_since(&self, unit: &str) -> Result<Option<u64>, SystemdError> {
        self.as_ref().unit_active_since(unit).await
    }
}
