//! The test run's record of what it started on this machine, so that
//! clean-up after an aborted run stops exactly that and nothing else.
//!
//! A *run* is one `test-all.sh` (which creates the run directory, exports
//! `NCA_RUN_DIR` and `NCA_RUN_ID`, and cleans the run up when it ends), or,
//! without those variables, one test process (which then makes its own run
//! directory under [`runs_root`] and removes it once its last record is gone).
//!
//! Every node, registry, mount and long-lived host process the harness
//! starts gets a [`Record`]: one `<kind>-<name>.rec` file of `key=value`
//! lines in the run directory, written *before* the thing it describes
//! exists where that is possible (a mount point, a cgroup, a directory) and
//! right after the process is spawned otherwise (its pid, with the process
//! start time from `/proc/<pid>/stat`, so a reused pid is never taken for it).
//! The run directory's `owner` file names the run's owner process the same
//! way. `integration-tests/scripts/cleanup-nodes.sh` reads these files: it
//! stops recorded processes by pid (only while the start time matches),
//! unmounts recorded mount points, removes recorded cgroups and directories,
//! and never matches a pattern against the machine's process list.
//!
//! Boundary: this module writes and removes records; it never stops anything.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where runs without `NCA_RUN_DIR` keep their directories (`NCA_RUNS_ROOT`
/// overrides it; test-all.sh and cleanup-nodes.sh use the same default).
pub const DEFAULT_RUNS_ROOT: &str = "/tmp/nca-test-runs";
/// The file in a run directory that names the run's owner process.
pub const OWNER_FILE: &str = "owner";
/// The extension of record files.
pub const RECORD_EXT: &str = "rec";

/// This process's run: its directory and id.
#[derive(Debug)]
struct Run {
    dir: PathBuf,
    id: String,
    /// This process made the directory (no `NCA_RUN_DIR`), so it removes it
    /// once its last record is gone.
    own_dir: bool,
    /// Records of this process still present; guards the directory removal.
    live: Mutex<usize>,
}

static RUN: OnceLock<Run> = OnceLock::new();

/// `$NCA_RUNS_ROOT`, or [`DEFAULT_RUNS_ROOT`].
pub fn runs_root() -> PathBuf {
    std::env::var_os("NCA_RUNS_ROOT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_RUNS_ROOT), PathBuf::from)
}

fn run() -> &'static Run {
    RUN.get_or_init(|| {
        let id = std::env::var("NCA_RUN_ID")
            .ok()
            .filter(|v| is_run_id(v))
            .unwrap_or_else(new_run_id);
        match std::env::var_os("NCA_RUN_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
                    panic!("cannot create the run directory {}: {e}", dir.display())
                });
                Run {
                    dir,
                    id,
                    own_dir: false,
                    live: Mutex::new(0),
                }
            }
            None => Run {
                dir: runs_root().join(format!("{id}-{}", std::process::id())),
                id,
                own_dir: true,
                live: Mutex::new(0),
            },
        }
    })
}

/// The run's id: six lowercase hex digits, part of every machine name the
/// harness gives, so one run's nodes are told from another's at a glance.
pub fn run_id() -> &'static str {
    &run().id
}

/// The run directory (created with the first record).
pub fn run_dir() -> &'static Path {
    &run().dir
}

fn is_run_id(s: &str) -> bool {
    s.len() == 6
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// A fresh id from the clock and the pid (unique enough: it names runs
/// that also carry their owner's pid).
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let digest = openssl::sha::sha256(format!("{nanos}-{}", std::process::id()).as_bytes());
    digest[..3].iter().map(|b| format!("{b:02x}")).collect()
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`, clock ticks
/// since boot): with the pid, what identifies a process for its lifetime.
/// `None` when no such process runs; a zombie (dead, not yet reaped by its
/// parent) does not run.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X") | None) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// One recorded resource: `<run dir>/<kind>-<name>.rec`. Removed on drop
/// (call [`Record::keep`] when what it describes could not be cleaned up,
/// so the run's clean-up tries again).
#[derive(Debug)]
pub struct Record {
    path: PathBuf,
    lines: Vec<(String, String)>,
    keep: bool,
}

impl Record {
    /// Starts the record of a `kind` (`node`, `registry`, `process`) named
    /// `name` (unique within the run).
    pub fn new(kind: &str, name: &str) -> Record {
        let run = run();
        ensure_run_dir(run);
        if let Ok(mut live) = run.live.lock() {
            *live += 1;
        }
        let mut record = Record {
            path: run.dir.join(format!("{kind}-{name}.{RECORD_EXT}")),
            lines: Vec::new(),
            keep: false,
        };
        record.set("kind", kind);
        record.set("name", name);
        record
    }

    /// Adds `key=value` (a key may repeat, as `cgroup` and `mount` do) and
    /// writes the record.
    pub fn set(&mut self, key: &str, value: impl std::fmt::Display) {
        let value = value.to_string();
        assert!(
            !value.contains('\n') && !key.contains(['=', '\n']),
            "record {}: {key}={value:?} cannot be written as one line",
            self.path.display()
        );
        self.lines.push((key.to_owned(), value));
        self.write();
    }

    /// Adds a process: `<key>_pid` and `<key>_start` (see [`start_time`]).
    pub fn set_process(&mut self, key: &str, pid: u32) {
        let start = start_time(pid).unwrap_or(0);
        self.set(&format!("{key}_pid"), pid);
        self.set(&format!("{key}_start"), start);
    }

    /// Replaces every `key` line with one `key=value`.
    pub fn replace(&mut self, key: &str, value: impl std::fmt::Display) {
        self.lines.retain(|(k, _)| k != key);
        self.set(key, value);
    }

    /// Drops every `key` line.
    pub fn unset(&mut self, key: &str) {
        self.lines.retain(|(k, _)| k != key);
        self.write();
    }

    /// Replaces the `<key>_pid` and `<key>_start` lines.
    pub fn replace_process(&mut self, key: &str, pid: u32) {
        let (p, s) = (format!("{key}_pid"), format!("{key}_start"));
        self.lines.retain(|(k, _)| *k != p && *k != s);
        self.set_process(key, pid);
    }

    /// Leaves the file in place when dropped: what it describes is not
    /// (all) gone.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self) {
        let mut text = String::new();
        for (k, v) in &self.lines {
            text.push_str(k);
            text.push('=');
            text.push_str(v);
            text.push('\n');
        }
        let tmp = self.path.with_extension("rec.tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            panic!("cannot write the run record {}: {e}", self.path.display());
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let run = run();
        if !self.keep {
            if let Err(e) = std::fs::remove_file(&self.path) {
                eprintln!(
                    "harness: warning: cannot remove the run record {}: {e}",
                    self.path.display()
                );
            }
        }
        let Ok(mut live) = run.live.lock() else {
            return;
        };
        *live = live.saturating_sub(1);
        if *live == 0 && run.own_dir && !self.keep && only_owner_left(&run.dir) {
            let _ = std::fs::remove_file(run.dir.join(OWNER_FILE));
            let _ = std::fs::remove_dir(&run.dir);
        }
    }
}

/// Creates the run directory and, for a directory of this process, its
/// owner file: made in a temporary directory renamed into place, so that
/// clean-up never sees a run of this process without its owner.
fn ensure_run_dir(run: &Run) {
    if run.dir.is_dir() {
        return;
    }
    if !run.own_dir {
        std::fs::create_dir_all(&run.dir).unwrap_or_else(|e| {
            panic!("cannot create the run directory {}: {e}", run.dir.display())
        });
        return;
    }
    let parent = run.dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    let tmp = tempfile::Builder::new()
        .prefix(".nca-run-")
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("cannot create a run directory in {}: {e}", parent.display()));
    let me = std::process::id();
    let text = format!("pid={me}\nstart={}\n", start_time(me).unwrap_or(0));
    let owner = tmp.path().join(OWNER_FILE);
    std::fs::write(&owner, text)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", owner.display()));
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, &run.dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            run.dir.is_dir(),
            "cannot create the run directory {}: {e}",
            run.dir.display()
        );
    }
}

fn only_owner_left(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .all(|e| e.file_name() == OWNER_FILE)
    })
}

/// The `key=value` lines of a record or owner file, in order.
pub fn parse_record(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_stable_and_pids_without_a_process_have_none() {
        let me = std::process::id();
        let t = start_time(me).expect("our own start time");
        assert_eq!(start_time(me), Some(t));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn run_ids_are_six_hex_digits() {
        let id = new_run_id();
        assert!(is_run_id(&id), "{id}");
        assert!(!is_run_id("ABCDEF") && !is_run_id("abc") && !is_run_id("abcdeg"));
    }

    #[test]
    fn a_record_lists_its_lines_and_goes_with_its_owner() {
        let mut r = Record::new("test", &format!("unit-{}", std::process::id()));
        r.set("dir", "/tmp/x");
        r.set_process("main", std::process::id());
        r.set("cgroup", "/a");
        r.set("cgroup", "/b");
        r.replace_process("main", std::process::id());
        let text = std::fs::read_to_string(r.path()).unwrap();
        let lines = parse_record(&text);
        assert_eq!(lines[0], ("kind".into(), "test".into()));
        let cgroups: Vec<&str> = lines
            .iter()
            .filter(|(k, _)| k == "cgroup")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cgroups, ["/a", "/b"]);
        assert_eq!(lines.iter().filter(|(k, _)| k == "main_pid").count(), 1);
        let path = r.path().to_owned();
        drop(r);
        assert!(!path.exists());
    }
}
