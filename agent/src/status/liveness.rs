//! Whether the daemon that wrote a status file still runs, and how that was
//! decided: by pid and start time in the same pid namespace and boot, by
//! its lock elsewhere. Pure: facts in, a [`Liveness`] out.

use crate::node::lock::DaemonLock;
use crate::node::procfs::ProcessIdentity;
use crate::ops::daemon_status::{DaemonStatus, DAEMON_LOCK_FILE};
use crate::time::rfc3339;

/// Two readings of the kernel's boot time this close are the same boot.
const BOOT_TIME_SLACK_SECS: i64 = 2;

/// Whether the daemon that wrote a status file runs, and how that was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub running: bool,
    /// `pid`, `lock`, `stopped` or `none`.
    pub check: &'static str,
    pub detail: String,
}

/// Decides whether the daemon behind `d` is alive. Pure.
///
/// - It wrote `stoppedAt` on a clean stop: not running.
/// - Same pid namespace and boot as this process (host mode seen from a node
///   shell, or `kubectl exec` into the agent's pod): authoritative, by pid
///   *and* start time, so a reused pid is not mistaken for the daemon.
///   `pid_start_ticks` is the start time of `d`'s pid as this process sees it.
/// - Otherwise (a pod's agent seen from a node shell: its pid means nothing
///   here): the daemon's lock, which the running daemon holds.
pub fn liveness(
    d: &DaemonStatus,
    me: &ProcessIdentity,
    pid_start_ticks: Option<u64>,
    lock: &DaemonLock,
) -> Liveness {
    if let Some(at) = d.stopped_at {
        return Liveness {
            running: false,
            check: "stopped",
            detail: format!("stopped at {}", rfc3339(at)),
        };
    }
    // `btime` is derived from the clock, so a clock step moves it a little;
    // a mismatch only means falling back to the lock.
    let same_boot = match (d.process.boot_time, me.boot_time) {
        (Some(a), Some(b)) => (a - b).abs() <= BOOT_TIME_SLACK_SECS,
        _ => false,
    };
    let same_namespace = d.process.pid_namespace.is_some()
        && d.process.pid_namespace == me.pid_namespace
        && same_boot;
    if same_namespace && d.process.start_ticks.is_some() {
        let alive = pid_start_ticks.is_some() && pid_start_ticks == d.process.start_ticks;
        return Liveness {
            running: alive,
            check: "pid",
            detail: if alive {
                format!("pid {} is alive", d.process.pid)
            } else {
                format!(
                    "pid {} is gone (the daemon exited without stopping cleanly)",
                    d.process.pid
                )
            },
        };
    }
    let pid = d.process.pid;
    match lock {
        DaemonLock::Held => Liveness {
            running: true,
            check: "lock",
            detail: format!("pid {pid} in another pid namespace; it holds {DAEMON_LOCK_FILE}"),
        },
        DaemonLock::Free => Liveness {
            running: false,
            check: "lock",
            detail: format!(
                "pid {pid} in another pid namespace is gone: nothing holds {DAEMON_LOCK_FILE} \
                 (the daemon exited without stopping cleanly)"
            ),
        },
        DaemonLock::Unknown(why) => Liveness {
            running: false,
            check: "none",
            detail: format!(
                "pid {pid} in another pid namespace; cannot tell whether it runs: {why}"
            ),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::fs;

    use super::*;
    use crate::node::procfs::start_ticks_of;
    use crate::ops::daemon_status::{
        read_daemon_status, write_daemon_status, AgentMode, DAEMON_STATUS_FILE, SCHEMA_VERSION,
    };

    const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

    #[test]
    fn liveness_by_pid_in_the_same_namespace_and_by_lock_elsewhere() {
        let me = ProcessIdentity {
            pid: 1,
            pid_namespace: Some("pid:[1]".into()),
            start_ticks: Some(5),
            boot_time: Some(1_700_000_000),
        };
        let mut d = DaemonStatus {
            process: ProcessIdentity {
                pid: 77,
                pid_namespace: Some("pid:[1]".into()),
                start_ticks: Some(1234),
                boot_time: Some(1_700_000_001),
            },
            heartbeat_at: NOW,
            ..Default::default()
        };
        let held = DaemonLock::Held;
        let free = DaemonLock::Free;
        assert!(liveness(&d, &me, Some(1234), &free).running, "pid decides");
        let reused = liveness(&d, &me, Some(9999), &held);
        assert!(!reused.running, "a reused pid is not the daemon");
        assert_eq!(reused.check, "pid");
        assert!(!liveness(&d, &me, None, &held).running);
        // Another boot: the pid means nothing, the lock decides.
        d.process.boot_time = Some(1_600_000_000);
        assert_eq!(liveness(&d, &me, Some(1234), &held).check, "lock");
        d.process.boot_time = Some(1_700_000_001);
        // Another namespace: the lock decides.
        d.process.pid_namespace = Some("pid:[2]".into());
        assert!(liveness(&d, &me, None, &held).running);
        let gone = liveness(&d, &me, None, &free);
        assert!(!gone.running && gone.check == "lock", "{gone:?}");
        let unknown = liveness(&d, &me, None, &DaemonLock::Unknown("no file".into()));
        assert!(!unknown.running && unknown.check == "none", "{unknown:?}");
        assert!(unknown.detail.contains("no file"), "{unknown:?}");
        d.stopped_at = Some(NOW);
        assert_eq!(liveness(&d, &me, Some(1234), &held).check, "stopped");
    }

    #[test]
    fn daemon_status_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DAEMON_STATUS_FILE);
        let d = DaemonStatus {
            schema_version: SCHEMA_VERSION,
            version: "0.1.0".into(),
            mode: AgentMode::Pod,
            process: ProcessIdentity::current(),
            started_at: NOW,
            heartbeat_at: NOW,
            next_renewal: Some(NOW + 10),
            ..Default::default()
        };
        write_daemon_status(&path, &d).unwrap();
        assert_eq!(read_daemon_status(&path).unwrap(), Some(d.clone()));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"heartbeatAt\""), "{text}");
        assert!(text.contains("\"mode\": \"pod\""), "{text}");
        // This very process, seen from itself, is alive by pid.
        let live = liveness(
            &d,
            &ProcessIdentity::current(),
            start_ticks_of(d.process.pid),
            &DaemonLock::Free,
        );
        assert!(live.running && live.check == "pid", "{live:?}");
    }
}
