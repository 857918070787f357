//! Restarts that respect systemd's start limit: the agent's own starts of
//! each allowlisted unit, remembered across agent restarts in
//! `<state-dir>/restart-history.json`, and the one rule of when the next
//! may happen ([`earliest_start`], pure).
//!
//! systemd fails a unit that starts more than `StartLimitBurst` times within
//! `StartLimitIntervalUSec` (`Result=start-limit-hit`; 5 in 10 s by default)
//! and leaves it stopped: for containerd that is a node outage. So the agent
//! starts a unit at most `burst - 1` times in any such interval, which
//! leaves one start for everyone else (boot, an operator, the unit's own
//! `Restart=`), and counts the unit's latest start too when it was not the
//! agent's. A change that would need a restart sooner waits, and every
//! change until then shares that one restart.
//!
//! The history also says which units the agent is bringing back
//! (`responsible`): a unit it found running before its restart that is not
//! active again yet. Only such a unit is reset and started again after a
//! start-limit-hit; a unit an operator stopped stays stopped.
//!
//! The file is separate from `ca-state.json`, whose format is kept so that
//! an older agent reads it; an unreadable history is a warning and a fresh
//! start, never a stuck agent. Written atomically, 0600.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::fsutil;
use crate::node::systemd::StartLimit;

pub const HISTORY_FILE: &str = "restart-history.json";
const HISTORY_VERSION: u32 = 1;
/// Added to the end of systemd's window before the next start: systemd
/// measures it on its own (monotonic) clock, the agent on the wall clock.
pub const WINDOW_MARGIN_US: u64 = 500_000;
/// The longest spacing between two of the agent's restarts of one unit
/// ([`spaced_start`]).
pub const SPACING_MAX_US: u64 = 60_000_000;
/// How long the agent's restarts count towards the spacing.
pub const SPACING_MEMORY_US: u64 = 120_000_000;
/// Starts kept per unit (far more than any start limit the agent meets).
const MAX_STARTS_KEPT: usize = 64;
/// A unit whose latest activation began this soon after one of the agent's
/// start requests was started by it (stopping and starting take ~100 ms).
const SAME_START_US: u64 = 1_000_000;

/// The agent's memory of its restarts of one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitHistory {
    /// The agent's own start requests (`TryRestartUnit`, `StartUnit`),
    /// microseconds since the epoch, oldest first; recorded before each call.
    #[serde(default)]
    pub starts_us: Vec<u64>,
    /// The agent found the unit running before its restart, and it is not
    /// active again yet: the agent brings it back.
    #[serde(default)]
    pub responsible: bool,
    /// When the agent saw the unit fail with `start-limit-hit` after its
    /// own start.
    #[serde(default)]
    pub limit_hit_us: Option<u64>,
    /// The next start waits until then (for `status`).
    #[serde(default)]
    pub not_before_us: Option<u64>,
    /// When the first bundle change the unit has not taken yet was
    /// written: the restart spread counts from it, so changes that keep
    /// coming never push the restart out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsettled_since_us: Option<u64>,
    /// SHA-256 of the trust bundle the unit last took (restarted with it,
    /// started after it, or left stopped to read it when it starts): a
    /// bundle change needs this unit's restart only when it differs. Per
    /// unit, so a revert restarts exactly the units that took the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_sha256: Option<String>,
    /// The unit's start limit as last read: burst and interval.
    #[serde(default)]
    pub start_limit_burst: u32,
    #[serde(default)]
    pub start_limit_interval_us: u64,
    /// What the running unit may trust of the agent's CAs (containerd
    /// only): whether a change needs its restart ([`crate::trust::pull_trust`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::trust::pull_trust::RuntimeTrust>,
}

impl UnitHistory {
    pub fn start_limit(&self) -> StartLimit {
        StartLimit {
            burst: self.start_limit_burst,
            interval_us: self.start_limit_interval_us,
        }
    }

    pub fn set_start_limit(&mut self, limit: StartLimit) {
        self.start_limit_burst = limit.burst;
        self.start_limit_interval_us = limit.interval_us;
    }

    /// Records a start request at `now`, forgetting those no window needs.
    pub fn record_start(&mut self, now: u64) {
        let keep_after = now.saturating_sub(self.start_limit_interval_us.max(1) + WINDOW_MARGIN_US);
        self.starts_us.retain(|&t| t > keep_after);
        self.starts_us.push(now);
        let excess = self.starts_us.len().saturating_sub(MAX_STARTS_KEPT);
        self.starts_us.drain(..excess);
    }

    /// The unit is active again (or somebody else took it over): nothing
    /// left for the agent to bring back.
    pub fn settled(&mut self) {
        self.responsible = false;
        self.limit_hit_us = None;
        self.not_before_us = None;
        self.unsettled_since_us = None;
    }
}

/// The agent's memory of its restarts, by unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartHistory {
    pub version: u32,
    #[serde(default)]
    pub units: BTreeMap<String, UnitHistory>,
}

#[derive(Debug, thiserror::Error)]
pub enum PacingError {
    #[error("cannot write the restart history {path}: {source}")]
    Write {
        path: PathBuf,
        source: fsutil::FsError,
    },
    #[error("cannot encode the restart history {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The history file beside the CA state file `state_path`.
pub fn history_path(state_path: &Path) -> PathBuf {
    state_path.with_file_name(HISTORY_FILE)
}

/// Loads the history; a missing file is empty, and so is one that cannot
/// be read (with the reason, for a warning): it only makes the agent
/// count its starts afresh.
pub fn load(path: &Path) -> (RestartHistory, Option<String>) {
    let fresh = RestartHistory {
        version: HISTORY_VERSION,
        ..RestartHistory::default()
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (fresh, None),
        Err(e) => return (fresh, Some(format!("cannot read {}: {e}", path.display()))),
    };
    match serde_json::from_slice::<RestartHistory>(&bytes) {
        Ok(h) if h.version == HISTORY_VERSION => (h, None),
        Ok(h) => (
            fresh,
            Some(format!(
                "{} has version {}, this agent understands {HISTORY_VERSION}",
                path.display(),
                h.version
            )),
        ),
        Err(e) => (fresh, Some(format!("{} is not valid: {e}", path.display()))),
    }
}

pub fn save(path: &Path, history: &RestartHistory) -> Result<(), PacingError> {
    let mut bytes = serde_json::to_vec_pretty(history).map_err(|source| PacingError::Encode {
        path: path.into(),
        source,
    })?;
    bytes.push(b'\n');
    fsutil::write_atomic(path, &bytes, 0o600).map_err(|source| PacingError::Write {
        path: path.into(),
        source,
    })
}

/// The earliest time (µs since the epoch) the agent may start a unit with
/// `limit` again, at `now`, given its own earlier starts `ours` and the
/// unit's latest start `latest` (its `InactiveExitTimestamp`), so that it
/// never starts the unit more than `burst - 1` times (at least once) within
/// any interval. `now` when it may start at once.
pub fn earliest_start(ours: &[u64], latest: Option<u64>, limit: StartLimit, now: u64) -> u64 {
    if limit.is_unlimited() {
        return now;
    }
    let allowed = usize::try_from(limit.burst.saturating_sub(1).max(1)).unwrap_or(usize::MAX);
    let since = now.saturating_sub(limit.interval_us);
    let mut recent: Vec<u64> = ours.iter().copied().filter(|&t| t > since).collect();
    if let Some(l) = latest.filter(|&l| l > since) {
        if !ours.iter().any(|&t| l >= t && l - t <= SAME_START_US) {
            recent.push(l);
        }
    }
    if recent.len() < allowed {
        return now;
    }
    recent.sort_unstable();
    // The start that must leave the window before one more fits.
    let oldest_counted = recent[recent.len() - allowed];
    (oldest_counted + limit.interval_us + WINDOW_MARGIN_US).max(now)
}

/// The earliest time (µs) the agent may restart a unit again after its own
/// earlier starts `ours` (oldest first), at `now`: `first` after the last
/// one, doubled for each further start within [`SPACING_MEMORY_US`], up to
/// [`SPACING_MAX_US`] (or `first`, if longer). `now` when none is recent.
/// Changes within the spacing share one restart.
pub fn spaced_start(ours: &[u64], now: u64, first: u64) -> u64 {
    let since = now.saturating_sub(SPACING_MEMORY_US);
    let recent = ours.iter().filter(|&&t| t > since).count();
    let Some(&last) = ours.iter().filter(|&&t| t > since).max() else {
        return now;
    };
    let doublings = u32::try_from(recent.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    let spacing = first
        .saturating_mul(1u64 << doublings)
        .min(SPACING_MAX_US.max(first));
    last.saturating_add(spacing).max(now)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    #[test]
    fn restarts_are_spaced_then_doubling_up_to_a_minute_and_forgotten_after_two() {
        use super::*;
        let now = 1_000_000_000_000;
        let first = 2 * S;
        assert_eq!(spaced_start(&[], now, first), now);
        // One restart 1 s ago: the next waits 1 s more.
        assert_eq!(spaced_start(&[now - S], now, first), now + S);
        // Three in the last two minutes: 8 s after the last.
        assert_eq!(
            spaced_start(&[now - 30 * S, now - 20 * S, now - 5 * S], now, first),
            now + 3 * S
        );
        // Fighting writers: a minute apart, no more.
        let many: Vec<u64> = (0..20).map(|i| now - 19 * S + i * S).collect();
        assert_eq!(spaced_start(&many, now, first), now + 60 * S);
        // Old restarts are forgotten.
        assert_eq!(spaced_start(&[now - 200 * S], now, first), now);
    }

    use super::*;

    const S: u64 = 1_000_000;
    const DEFAULT: StartLimit = StartLimit::SYSTEMD_DEFAULT;

    #[test]
    fn four_starts_in_ten_seconds_then_the_fifth_waits_for_the_first_to_leave() {
        let t0 = 1_000 * S;
        let ours = [t0, t0 + S, t0 + 2 * S];
        assert_eq!(
            earliest_start(&ours, Some(t0 + 2 * S), DEFAULT, t0 + 3 * S),
            t0 + 3 * S
        );
        let ours = [t0, t0 + S, t0 + 2 * S, t0 + 3 * S];
        assert_eq!(
            earliest_start(&ours, Some(t0 + 3 * S), DEFAULT, t0 + 4 * S),
            t0 + 10 * S + WINDOW_MARGIN_US
        );
        // Once the first has left the window, the next fits at once.
        assert_eq!(
            earliest_start(&ours, None, DEFAULT, t0 + 11 * S),
            t0 + 11 * S
        );
    }

    #[test]
    fn a_start_by_someone_else_counts_too() {
        let t0 = 1_000 * S;
        let ours = [t0, t0 + S, t0 + 2 * S];
        // The operator restarted it 2 s after the agent's last start.
        let at = earliest_start(&ours, Some(t0 + 4 * S), DEFAULT, t0 + 5 * S);
        assert_eq!(at, t0 + 10 * S + WINDOW_MARGIN_US);
        // The agent's own restart, 100 ms after its request: not counted twice.
        let at = earliest_start(&ours, Some(t0 + 2 * S + 100_000), DEFAULT, t0 + 5 * S);
        assert_eq!(at, t0 + 5 * S);
    }

    #[test]
    fn no_limit_and_old_starts_never_wait_and_a_burst_of_one_still_allows_one() {
        let t0 = 1_000 * S;
        let unlimited = StartLimit {
            burst: 0,
            interval_us: 10 * S,
        };
        assert_eq!(earliest_start(&[t0; 30], None, unlimited, t0), t0);
        assert_eq!(earliest_start(&[t0 - 60 * S; 30], None, DEFAULT, t0), t0);
        let one = StartLimit {
            burst: 1,
            interval_us: 60 * S,
        };
        assert_eq!(earliest_start(&[], None, one, t0), t0);
        assert_eq!(
            earliest_start(&[t0], None, one, t0 + S),
            t0 + 60 * S + WINDOW_MARGIN_US
        );
    }

    #[test]
    fn any_schedule_it_allows_stays_within_the_limit_in_every_window() {
        // Ask for a start every 300 ms for a minute; take what is allowed.
        let mut ours: Vec<u64> = Vec::new();
        let mut t = 1_000 * S;
        while t < 1_060 * S {
            if earliest_start(&ours, ours.last().copied(), DEFAULT, t) <= t {
                ours.push(t);
            }
            t += 300_000;
        }
        for &begin in &ours {
            let in_window = ours
                .iter()
                .filter(|&&x| x >= begin && x <= begin + DEFAULT.interval_us)
                .count();
            assert!(in_window <= 4, "{in_window} starts in 10 s from {begin}");
        }
        assert!(ours.len() >= 20, "it still restarts: {}", ours.len());
    }

    #[test]
    fn history_round_trips_and_a_broken_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HISTORY_FILE);
        let (mut h, warn) = load(&path);
        assert!(warn.is_none() && h.units.is_empty());
        let u = h.units.entry("containerd.service".into()).or_default();
        u.set_start_limit(DEFAULT);
        u.record_start(5 * S);
        u.responsible = true;
        save(&path, &h).unwrap();
        assert_eq!(load(&path).0, h);
        std::fs::write(&path, b"{broken").unwrap();
        let (h, warn) = load(&path);
        assert!(h.units.is_empty());
        assert!(warn.unwrap().contains("not valid"));
    }

    #[test]
    fn old_starts_are_forgotten() {
        let mut u = UnitHistory::default();
        u.set_start_limit(DEFAULT);
        for i in 0..100 {
            u.record_start(1_000 * S + i * S);
        }
        assert!(u.starts_us.len() <= 11, "{}", u.starts_us.len());
        assert_eq!(*u.starts_us.last().unwrap(), 1_099 * S);
    }
}
