//! The one boundary to systemd: restart a unit, run a command on the node,
//! ask since when a unit has been active.
//!
//! Both go over D-Bus to `org.freedesktop.systemd1` (NODE-FACTS §4), so they
//! work the same on the host and from a pod that has the node's bus socket.
//! Running the refresh tool as a transient unit makes it run in the node's
//! own root with the node's own binaries, and never through a shell.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Mutex;
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::Connection;

/// How long a unit restart may take before it is reported as hung.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the refresh tool may run (it takes about a second).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

const DEST: &str = "org.freedesktop.systemd1";
/// Every refresh runs in a transient unit with this name pattern.
const REFRESH_UNIT_PATTERN: &str = "node-cert-agent-refresh-*";

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    #[allow(clippy::type_complexity, reason = "the D-Bus signature a(ssssssouso)")]
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<
        Vec<(
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        )>,
    >;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

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

/// [`Systemd`] over the system bus.
pub struct DbusSystemd {
    address: String,
    conn: Mutex<Option<Connection>>,
}

static UNIT_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DbusSystemd {
    /// `address` is a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`.
    /// Nothing connects until the first call, so a no-op never touches the bus.
    pub fn new(address: String) -> Self {
        Self {
            address,
            conn: Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<Connection, SystemdError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let connect_err = |source| SystemdError::Connect {
            address: self.address.clone(),
            source: Box::new(source),
        };
        let conn = zbus::connection::Builder::address(self.address.as_str())
            .map_err(connect_err)?
            .build()
            .await
            .map_err(connect_err)?;
        ManagerProxy::new(&conn)
            .await
            .map_err(connect_err)?
            .subscribe()
            .await
            .map_err(connect_err)?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets a connection after an error, so the next call reconnects.
    async fn reset(&self) {
        *self.conn.lock().await = None;
    }

    async fn wait_job(
        stream: &mut JobRemovedStream,
        job: &OwnedObjectPath,
        unit: &str,
        timeout: Duration,
    ) -> Result<JobResult, SystemdError> {
        let wait = async {
            while let Some(signal) = stream.next().await {
                if let Ok(args) = signal.args() {
                    if args.job.as_str() == job.as_str() {
                        return Ok(JobResult(args.result.clone()));
                    }
                }
            }
            Err(SystemdError::StreamEnded {
                unit: unit.to_string(),
            })
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SystemdError::JobTimeout {
                unit: unit.to_string(),
                timeout,
            })?
    }

    async fn try_restart_inner(&self, unit: &str) -> Result<JobResult, SystemdError> {
        let conn = self.connection().await?;
        let call_err = |call, source| SystemdError::Call {
            call,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(|e| call_err("Manager", e))?;
        // Subscribe to JobRemoved before the job exists, so it cannot be missed.
        let mut stream = manager
            .receive_job_removed()
            .await
            .map_err(|e| call_err("AddMatch", e))?;
        let job = manager
            .try_restart_unit(unit, "replace")
            .await
            .map_err(|e| call_err("TryRestartUnit", e))?;
        Self::wait_job(&mut stream, &job, unit, RESTART_TIMEOUT).await
    }

    async fn run_command_inner(&self, argv: &[String]) -> Result<CommandOutcome, SystemdError> {
        let conn = self.connection().await?;
        let n = UNIT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let unit = format!("node-cert-agent-refresh-{}-{n}.service", std::process::id());
        let call_err = |call, source| SystemdError::Call {
            call,
            unit: unit.clone(),
            source: Box::new(source),
        };
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(|e| call_err("Manager", e))?;
        // Never two refresh tools at once: update-ca-certificates writes one
        // fixed temp bundle, and two runs corrupt it. A run left by an agent
        // that was killed (or by another agent on the node) is waited for.
        Self::settle_refresh_units(&manager, &unit).await?;
        let program = argv.first().cloned().unwrap_or_default();
        let exec = vec![(program, argv.to_vec(), false)];
        let properties: Vec<(&str, Value<'_>)> = vec![
            (
                "Description",
                Value::from("node-cert-agent: refresh the OS trust store"),
            ),
            ("Type", Value::from("oneshot")),
            // Keep the unit after exit so its exit status can be read.
            ("RemainAfterExit", Value::from(true)),
            ("ExecStart", Value::from(exec)),
        ];
        let mut stream = manager
            .receive_job_removed()
            .await
            .map_err(|e| call_err("AddMatch", e))?;
        let job = manager
            .start_transient_unit(&unit, "fail", &properties, &[])
            .await
            .map_err(|e| call_err("StartTransientUnit", e))?;
        Self::wait_job(&mut stream, &job, &unit, COMMAND_TIMEOUT).await?;

        let path = manager
            .get_unit(&unit)
            .await
            .map_err(|e| call_err("GetUnit", e))?;
        let service = zbus::Proxy::new(&conn, DEST, path, "org.freedesktop.systemd1.Service")
            .await
            .map_err(|e| call_err("Service", e))?;
        let result: String = service
            .get_property("Result")
            .await
            .map_err(|e| call_err("Get Result", e))?;
        let exit_status: i32 = service
            .get_property("ExecMainStatus")
            .await
            .map_err(|e| call_err("Get ExecMainStatus", e))?;
        // Clean up: a failed unit stays loaded until reset, a good one until stopped.
        if result == "success" {
            let _ = manager.stop_unit(&unit, "replace").await;
        } else {
            let _ = manager.reset_failed_unit(&unit).await;
        }
        Ok(CommandOutcome {
            unit,
            result,
            exit_status,
        })
    }
}

impl DbusSystemd {
    async fn unit_active_since_inner(&self, unit: &str) -> Result<Option<u64>, SystemdError> {
        let conn = self.connection().await?;
        let call_err = |call, source| SystemdError::Call {
            call,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(|e| call_err("Manager", e))?;
        // LoadUnit, unlike GetUnit, answers for a unit that is not loaded too
        // (then it is inactive).
        let path = manager
            .load_unit(unit)
            .await
            .map_err(|e| call_err("LoadUnit", e))?;
        let unit_proxy: zbus::Proxy<'_> = zbus::proxy::Builder::new(&conn)
            .destination(DEST)
            .and_then(|b| b.path(path))
            .and_then(|b| b.interface("org.freedesktop.systemd1.Unit"))
            .map_err(|e| call_err("Unit", e))?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| call_err("Unit", e))?;
        let state: String = unit_proxy
            .get_property("ActiveState")
            .await
            .map_err(|e| call_err("Get ActiveState", e))?;
        if state != "active" {
            return Ok(None);
        }
        let since: u64 = unit_proxy
            .get_property("InactiveExitTimestamp")
            .await
            .map_err(|e| call_err("Get InactiveExitTimestamp", e))?;
        Ok((since > 0).then_some(since))
    }
}

impl DbusSystemd {
    /// Waits until no `node-cert-agent-refresh-*` unit is running, and clears
    /// finished or failed ones, so the next refresh runs alone.
    async fn settle_refresh_units(
        manager: &ManagerProxy<'_>,
        unit: &str,
    ) -> Result<(), SystemdError> {
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            let units = manager
                .list_units_by_patterns(&[], &[REFRESH_UNIT_PATTERN])
                .await
                .map_err(|e| SystemdError::Call {
                    call: "ListUnitsByPatterns",
                    unit: unit.to_string(),
                    source: Box::new(e),
                })?;
            let mut running = false;
            for (name, _, _, active, sub, ..) in units {
                match (active.as_str(), sub.as_str()) {
                    ("activating" | "deactivating" | "reloading", _)
                    | ("active", "running" | "start") => running = true,
                    ("active", _) => {
                        let _ = manager.stop_unit(&name, "replace").await;
                    }
                    ("failed", _) => {
                        let _ = manager.reset_failed_unit(&name).await;
                    }
                    _ => {}
                }
            }
            if !running {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(SystemdError::JobTimeout {
                    unit: REFRESH_UNIT_PATTERN.to_string(),
                    timeout: COMMAND_TIMEOUT,
                });
            }
            tracing::info!("an earlier refresh of the trust store is still running on the node; waiting for it");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl DbusSystemd {
    /// After a failed call: forgets the connection, so the next call
    /// reconnects, and names a broken connection as such (a bus that went
    /// away under a connected agent shows up as an I/O error of any call).
    async fn after_error<T>(&self, r: Result<T, SystemdError>) -> Result<T, SystemdError> {
        let Err(e) = r else { return r };
        if matches!(e, SystemdError::JobTimeout { .. }) {
            return Err(e);
        }
        self.reset().await;
        Err(match e {
            SystemdError::Call { call, unit, source }
                if matches!(*source, zbus::Error::InputOutput(_)) =>
            {
                SystemdError::ConnectionLost {
                    address: self.address.clone(),
                    call,
                    unit,
                    source,
                }
            }
            other => other,
        })
    }
}

impl Systemd for DbusSystemd {
    async fn try_restart_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        let r = self.try_restart_inner(unit).await;
        self.after_error(r).await
    }

    async fn run_command(&self, argv: &[String]) -> Result<CommandOutcome, SystemdError> {
        let r = self.run_command_inner(argv).await;
        self.after_error(r).await
    }

    async fn unit_active_since(&self, unit: &str) -> Result<Option<u64>, SystemdError> {
        let r = self.unit_active_since_inner(unit).await;
        self.after_error(r).await
    }
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

/// A recording fake for unit tests: it records every call and answers as told.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[derive(Default)]
    pub struct RecordingSystemd {
        pub restarts: StdMutex<Vec<String>>,
        pub commands: StdMutex<Vec<Vec<String>>>,
        /// When set, restarts answer with this job result.
        pub restart_result: StdMutex<Option<String>>,
        /// When set, commands exit with this status.
        pub command_status: StdMutex<i32>,
        /// How long each command takes (awaited, so the runtime stays free).
        pub command_delay: StdMutex<Duration>,
        /// Run on every command, to emulate the refresh tool's effect.
        #[allow(clippy::type_complexity, reason = "a test hook")]
        pub on_command: StdMutex<Option<Box<dyn Fn() + Send>>>,
        /// What `unit_active_since` answers (`None`: not active).
        pub active_since: StdMutex<Option<u64>>,
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
        pub fn commands(&self) -> usize {
            self.commands.lock().map(|g| g.len()).unwrap_or_default()
        }
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
            let result = self.restart_result.lock().ok().and_then(|g| g.clone());
            Ok(JobResult(result.unwrap_or_else(|| "done".into())))
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

        async fn unit_active_since(&self, _unit: &str) -> Result<Option<u64>, SystemdError> {
            Ok(self.active_since.lock().ok().and_then(|g| *g))
        }
    }
}
