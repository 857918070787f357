//! [`Systemd`] over the system bus: `org.freedesktop.systemd1`'s Manager,
//! Unit and Service interfaces, one connection, reconnected after an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Mutex;
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::Connection;

use super::{
    CommandOutcome, JobResult, StartLimit, Systemd, SystemdError, UnitExec, UnitStatus,
    COMMAND_TIMEOUT, RESTART_TIMEOUT,
};

const DEST: &str = "org.freedesktop.systemd1";
/// Every refresh runs in a transient unit with this name pattern.
const REFRESH_UNIT_PATTERN: &str = "node-cert-agent-refresh-*";
/// The distributions' own units that rebuild the trust bundle, started by a
/// path unit on every anchor write (openSUSE's `ca-certificates.path`,
/// AKS's `update_certs.path`) or at boot (Flatcar): the agent's refresh
/// never runs beside one of them (the tools write fixed temp names), and
/// the bundle is checked only once they are done.
pub const DISTRO_REFRESH_UNITS: [&str; 3] = [
    "ca-certificates.service",
    "update_certs.service",
    "update-ca-certificates.service",
];

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
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
        let unit = format!("node-cert-agent-refresh-{}-{n}.service", process_token());
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
        // A distribution unit our anchor or bundle write started (a path
        // unit) rebuilds the bundle too: the caller checks it once that run
        // is over. One that does not finish in time does not undo ours:
        // said, and the bundle check decides.
        if let Err(e) = Self::settle_refresh_units(&manager, &unit).await {
            tracing::warn!(unit = %unit, "after the agent's refresh, the distribution's own refresh of the trust store did not finish in time: {e}");
        }
        Ok(CommandOutcome {
            unit,
            result,
            exit_status,
        })
    }
}

/// The D-Bus interface of a unit type that has a `Result` property.
fn result_interface(unit: &str) -> Option<&'static str> {
    Some(match unit.rsplit('.').next()? {
        "service" => "org.freedesktop.systemd1.Service",
        "socket" => "org.freedesktop.systemd1.Socket",
        "mount" => "org.freedesktop.systemd1.Mount",
        "swap" => "org.freedesktop.systemd1.Swap",
        "timer" => "org.freedesktop.systemd1.Timer",
        "path" => "org.freedesktop.systemd1.Path",
        "automount" => "org.freedesktop.systemd1.Automount",
        _ => return None,
    })
}

impl DbusSystemd {
    /// A proxy of `interface` on the unit object `path`, reading properties
    /// afresh on every get (a cached value would be the one before a job).
    async fn unit_proxy<'c>(
        conn: &'c Connection,
        path: OwnedObjectPath,
        interface: &'static str,
    ) -> zbus::Result<zbus::Proxy<'c>> {
        zbus::proxy::Builder::new(conn)
            .destination(DEST)?
            .path(path)?
            .interface(interface)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
    }

    /// `unit`'s object path and its `Unit` interface. LoadUnit, unlike
    /// GetUnit, answers for a unit that is not loaded too (then it is
    /// inactive, and LoadState says `not-found` or `masked`).
    async fn loaded_unit<'c>(
        conn: &'c Connection,
        unit: &str,
    ) -> Result<(OwnedObjectPath, zbus::Proxy<'c>), SystemdError> {
        let call_err = |call, source| SystemdError::Call {
            call,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let manager = ManagerProxy::new(conn)
            .await
            .map_err(|e| call_err("Manager", e))?;
        let path = manager
            .load_unit(unit)
            .await
            .map_err(|e| call_err("LoadUnit", e))?;
        let u = Self::unit_proxy(conn, path.clone(), "org.freedesktop.systemd1.Unit")
            .await
            .map_err(|e| call_err("Unit", e))?;
        Ok((path, u))
    }

    async fn unit_status_inner(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        let conn = self.connection().await?;
        let call_err = |call, source| SystemdError::Call {
            call,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let (path, u) = Self::loaded_unit(&conn, unit).await?;
        let load_state: String = u
            .get_property("LoadState")
            .await
            .map_err(|e| call_err("Get LoadState", e))?;
        let active_state: String = u
            .get_property("ActiveState")
            .await
            .map_err(|e| call_err("Get ActiveState", e))?;
        let sub_state: String = u
            .get_property("SubState")
            .await
            .map_err(|e| call_err("Get SubState", e))?;
        let inactive_exit_us: u64 = u
            .get_property("InactiveExitTimestamp")
            .await
            .map_err(|e| call_err("Get InactiveExitTimestamp", e))?;
        // Older systemd versions lack these; then systemd's defaults apply.
        let burst: Option<u32> = u.get_property("StartLimitBurst").await.ok();
        let interval_us: Option<u64> = u.get_property("StartLimitIntervalUSec").await.ok();
        let start_limit = match (burst, interval_us) {
            (Some(burst), Some(interval_us)) => StartLimit { burst, interval_us },
            _ => StartLimit::SYSTEMD_DEFAULT,
        };
        let result = match result_interface(unit) {
            Some(interface) => {
                let typed = Self::unit_proxy(&conn, path, interface)
                    .await
                    .map_err(|e| call_err("Unit type", e))?;
                typed
                    .get_property::<String>("Result")
                    .await
                    .unwrap_or_default()
            }
            None => String::new(),
        };
        Ok(UnitStatus {
            active_state,
            sub_state,
            result,
            inactive_exit_us,
            start_limit,
            load_state,
        })
    }

    async fn restarted_with_inner(&self, unit: &str) -> Result<Vec<String>, SystemdError> {
        let conn = self.connection().await?;
        let (_, u) = Self::loaded_unit(&conn, unit).await?;
        let mut out = Vec::new();
        for property in ["RequiredBy", "BoundBy", "ConsistsOf"] {
            let names: Vec<String> = u.get_property(property).await.unwrap_or_default();
            out.extend(names);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn unit_exec_inner(&self, unit: &str) -> Result<UnitExec, SystemdError> {
        let conn = self.connection().await?;
        let call_err = |call, source| SystemdError::Call {
            call,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let (path, u) = Self::loaded_unit(&conn, unit).await?;
        let load_state: String = u
            .get_property("LoadState")
            .await
            .map_err(|e| call_err("Get LoadState", e))?;
        if load_state != "loaded" || !unit.ends_with(".service") {
            return Ok(UnitExec::default());
        }
        let service = Self::unit_proxy(&conn, path, "org.freedesktop.systemd1.Service")
            .await
            .map_err(|e| call_err("Service", e))?;
        // a(sasbttttuii): path, argv, ignore-failure, then timestamps,
        // pid and status of the last run.
        type ExecEntry = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);
        let exec: Vec<ExecEntry> = service
            .get_property("ExecStart")
            .await
            .map_err(|e| call_err("Get ExecStart", e))?;
        let environment: Vec<String> = service
            .get_property("Environment")
            .await
            .map_err(|e| call_err("Get Environment", e))?;
        let environment_files: Vec<(String, bool)> = service
            .get_property("EnvironmentFiles")
            .await
            .map_err(|e| call_err("Get EnvironmentFiles", e))?;
        Ok(UnitExec {
            argv: exec.into_iter().next().map(|e| e.1).unwrap_or_default(),
            environment,
            environment_files,
        })
    }

    async fn start_inner(&self, unit: &str) -> Result<JobResult, SystemdError> {
        let conn = self.connection().await?;
        let call_err = |call, source| SystemdError::Call {
            call,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(|e| call_err("Manager", e))?;
        let mut stream = manager
            .receive_job_removed()
            .await
            .map_err(|e| call_err("AddMatch", e))?;
        let job = manager
            .start_unit(unit, "replace")
            .await
            .map_err(|e| call_err("StartUnit", e))?;
        Self::wait_job(&mut stream, &job, unit, RESTART_TIMEOUT).await
    }

    async fn reset_failed_inner(&self, unit: &str) -> Result<(), SystemdError> {
        let conn = self.connection().await?;
        let call_err = |call, source| SystemdError::Call {
            call,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        ManagerProxy::new(&conn)
            .await
            .map_err(|e| call_err("Manager", e))?
            .reset_failed_unit(unit)
            .await
            .map_err(|e| call_err("ResetFailedUnit", e))
    }
}

/// This process's part of its transient unit names: random, so names never
/// repeat across agent restarts (a pod's agent is always pid 1, and a unit
/// of the previous process may still be loaded: "unit exists").
fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut bytes = [0u8; 6];
        // No randomness (a broken RNG): the pid and the start time, which
        // still differ across restarts.
        match openssl::rand::rand_bytes(&mut bytes) {
            Ok(()) => hex::encode(bytes),
            Err(_) => format!("{}x{}", std::process::id(), crate::time::now_us()),
        }
    })
}

impl DbusSystemd {
    /// Waits until no `node-cert-agent-refresh-*` unit and none of the
    /// distribution's own refresh units ([`DISTRO_REFRESH_UNITS`]) is
    /// running or about to start, and clears the agent's finished or failed
    /// ones, so the next refresh runs alone.
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
            // The distribution's own refresh units: waited for (running, or
            // with a start job queued by their path unit), never touched.
            let distro = manager
                .list_units_by_patterns(&[], &DISTRO_REFRESH_UNITS)
                .await
                .map_err(|e| SystemdError::Call {
                    call: "ListUnitsByPatterns",
                    unit: unit.to_string(),
                    source: Box::new(e),
                })?;
            for (name, _, _, active, sub, _, _, job, ..) in distro {
                let busy = job != 0
                    || matches!(active.as_str(), "activating" | "deactivating" | "reloading")
                    || (active == "active" && matches!(sub.as_str(), "running" | "start"));
                if busy {
                    tracing::info!(unit = %name, "the distribution's own trust-store refresh {name} is running on the node; waiting for it");
                    running = true;
                }
            }
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

    async fn unit_status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        let r = self.unit_status_inner(unit).await;
        self.after_error(r).await
    }

    async fn reset_failed_unit(&self, unit: &str) -> Result<(), SystemdError> {
        let r = self.reset_failed_inner(unit).await;
        self.after_error(r).await
    }

    async fn start_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        let r = self.start_inner(unit).await;
        self.after_error(r).await
    }

    async fn unit_exec(&self, unit: &str) -> Result<UnitExec, SystemdError> {
        let r = self.unit_exec_inner(unit).await;
        self.after_error(r).await
    }

    async fn restarted_with(&self, unit: &str) -> Result<Vec<String>, SystemdError> {
        let r = self.restarted_with_inner(unit).await;
        self.after_error(r).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn transient_unit_names_carry_a_random_token_not_the_pid() {
        let token = process_token();
        assert_eq!(token.len(), 12, "{token}");
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        assert_ne!(token, std::process::id().to_string());
        assert_eq!(process_token(), token, "one token per process");
    }
}
