//! Facts about processes from `/proc`: enough to recognise a process again
//! ([`ProcessIdentity`]) across pid reuse and pid namespaces.
//!
//! Boundary: reads `/proc` of this process's own pid namespace only; the
//! decision whether a daemon runs is `status`'.

use serde::{Deserialize, Serialize};

/// Enough to recognise a process again: its pid is only meaningful in its
/// pid namespace, and only until it exits (pids are reused), so its start
/// time and the kernel's boot time come with it. (The boot time, `btime` of
/// `/proc/stat`, rather than `boot_id`: systemd-nspawn overmounts `boot_id`
/// per container, and a hardened unit may see the kernel's instead.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessIdentity {
    pub pid: u32,
    /// `readlink /proc/self/ns/pid`, e.g. `pid:[4026531836]`.
    pub pid_namespace: Option<String>,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
    pub start_ticks: Option<u64>,
    /// `btime` of `/proc/stat`: the kernel's boot time, Unix seconds.
    pub boot_time: Option<i64>,
}

impl ProcessIdentity {
    /// This process, as `/proc` shows it.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|p| p.display().to_string()),
            start_ticks: start_ticks_of(pid),
            boot_time: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_boot_time(&s)),
        }
    }
}

/// The `btime` line of `/proc/stat`.
fn parse_boot_time(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Start time of `pid` in this process's pid namespace, if it exists.
pub fn start_ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards: field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_are_read_after_the_command_name() {
        let stat =
            "77 (node cert) agent) S 1 77 77 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100";
        assert_eq!(parse_start_ticks(stat), Some(98765));
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert!(ProcessIdentity::current().boot_time.is_some());
        assert!(start_ticks_of(std::process::id()).is_some());
    }
}
