//! The suite's clean-up (`scripts/cleanup-nodes.sh`, which test-all.sh runs
//! with `--stale` before the tests and on its own run when it ends) stops
//! only what the harness recorded for the runs it is given, by pid, and
//! leaves everything else on the machine alone.
//!
//! The scenario, on real processes:
//! - an *unrelated* nspawn container and an *unrelated* `docker-registry`
//!   run first; both look like the harness's own (the container has
//!   `--register=no` and "nca" in its name, the registry "nca" in its
//!   arguments), which is what the old pattern-matching clean-up killed;
//! - run A (a live test process, `hold-nodes`) holds a node and a registry;
//! - run B (another `hold-nodes`) is SIGKILLed, so its node and registry are
//!   left behind, as after an aborted run;
//! - `cleanup-nodes.sh --stale` stops B's leftovers, and only those: B's
//!   node init, nspawn, overlay mount, cgroups, node directory, registry and
//!   run directory are gone; A's node and registry and both unrelated
//!   processes still run;
//! - `cleanup-nodes.sh <A's run dir>` (what test-all.sh does at its end)
//!   stops A's, and the unrelated container and registry still run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use integration_tests::agent::workspace_dir;
use integration_tests::cgroup::NodeCgroups;
use integration_tests::registry::free_port;
use integration_tests::run::{parse_record, start_time, RECORD_EXT};
use integration_tests::{preflight, rootfs_path, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a `hold-nodes` helper may take to boot its node and registry.
const HELPER_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether the process `pid` that started at `start` still runs.
fn alive(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

/// A process of this test, SIGKILLed (with what it started as its
/// children, where noted) on drop.
struct Owned {
    child: Child,
    start: u64,
}

impl Owned {
    fn spawn(c: &mut Command) -> Owned {
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {c:?}: {e}"));
        let start = start_time(child.id()).unwrap();
        Owned { child, start }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&self) -> bool {
        alive(self.pid(), self.start)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An nspawn container the harness knows nothing about: the cached rootfs,
/// read-only, running `sleep`, in cgroups of its own.
struct UnrelatedContainer {
    name: String,
    nspawn: Owned,
    cgroups: Option<NodeCgroups>,
    cgroup_dirs: Vec<PathBuf>,
}

impl UnrelatedContainer {
    fn start() -> UnrelatedContainer {
        let name = format!("nca-unrelated-{}", std::process::id());
        let cgroup_dirs = NodeCgroups::dirs_for(&name);
        let cgroups = NodeCgroups::create(cgroup_dirs.clone());
        let mut c = Command::new("/bin/sh");
        integration_tests::node::nspawn_env(&mut c)
            .arg("-c")
            .arg(r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#)
            .arg("unrelated-cgroup")
            .args(cgroups.procs_files())
            .args(["--", "systemd-nspawn", "--quiet", "--register=no", "--keep-unit"])
            .arg("--read-only")
            .arg("-D")
            .arg(rootfs_path())
            .args(["-M", &name, "/bin/sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let nspawn = Owned::spawn(&mut c);
        let container = UnrelatedContainer {
            name,
            nspawn,
            cgroups: Some(cgroups),
            cgroup_dirs,
        };
        wait_until(
            Duration::from_secs(30),
            "the unrelated container's sleep",
            || container.payload().is_some(),
        );
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", container.nspawn.pid())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.contains("systemd-nspawn")
                && cmdline.contains("--register=no")
                && cmdline.contains("nca"),
            "the unrelated container must look like a harness node to a pattern match: {cmdline}"
        );
        container
    }

    /// The container's process (nspawn's child), if it runs.
    fn payload(&self) -> Option<u32> {
        let parent = self.nspawn.pid();
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rfind(')')
                        .and_then(|i| s[i + 1..].split_whitespace().nth(1).map(str::to_owned))
                        == Some(parent.to_string())
                })
            })
    }

    fn alive(&self) -> bool {
        self.nspawn.alive() && self.payload().is_some()
    }
}

impl Drop for UnrelatedContainer {
    fn drop(&mut self) {
        if let Some(pid) = self.payload() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        self.nspawn.kill();
        integration_tests::unbooted::remove_propagate_dir(&self.name);
        if let Some(mut cgroups) = self.cgroups.take() {
            if let Err(e) = cgroups.remove() {
                eprintln!("cleanup test: {e}");
            }
        }
    }
}

/// A `docker-registry` the harness knows nothing about, with "nca" in its
/// arguments (plain HTTP: nobody pulls from it).
struct UnrelatedRegistry {
    process: Owned,
    _dir: tempfile::TempDir,
}

impl UnrelatedRegistry {
    fn start() -> UnrelatedRegistry {
        let dir = tempfile::Builder::new()
            .prefix("nca-unrelated-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let mut c = Command::new("docker-registry");
        c.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Owned::spawn(&mut c);
        wait_until(
            Duration::from_secs(20),
            "the unrelated registry to listen",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        UnrelatedRegistry { process, _dir: dir }
    }
}

/// What a `hold-nodes` helper started, from its JSON line and its records.
struct Held {
    helper: Owned,
    run_dir: PathBuf,
    node_init: (u32, u64),
    nspawn: (u32, u64),
    node_dir: PathBuf,
    mount: PathBuf,
    cgroups: Vec<PathBuf>,
    registry: (u32, u64),
    registry_dir: PathBuf,
}

impl Held {
    /// Starts `hold-nodes` in its own run under `runs_root`.
    fn start(runs_root: &Path) -> Held {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hold-nodes"));
        c.env("NCA_RUNS_ROOT", runs_root)
            .env_remove("NCA_RUN_DIR")
            .env_remove("NCA_RUN_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut helper = Owned::spawn(&mut c);
        let stdout = helper.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(HELPER_TIMEOUT)
            .expect("hold-nodes did not report its node and registry in time");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("hold-nodes printed {line:?}: {e}"));
        let path = |k: &str| PathBuf::from(v[k].as_str().unwrap());
        let run_dir = path("runDir");
        assert!(run_dir.starts_with(runs_root), "{}", run_dir.display());
        let records: Vec<Vec<(String, String)>> = std::fs::read_dir(&run_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == RECORD_EXT))
            .map(|e| parse_record(&std::fs::read_to_string(e.path()).unwrap()))
            .collect();
        let of_kind = |kind: &str| {
            records
                .iter()
                .find(|r| r.iter().any(|(k, v)| k == "kind" && v == kind))
                .unwrap_or_else(|| panic!("no {kind} record in {}", run_dir.display()))
                .clone()
        };
        let get = |r: &[(String, String)], key: &str| -> String {
            r.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("record without {key}: {r:?}"))
        };
        let process = |r: &[(String, String)], key: &str| -> (u32, u64) {
            (
                get(r, &format!("{key}_pid")).parse().unwrap(),
                get(r, &format!("{key}_start")).parse().unwrap(),
            )
        };
        let node = of_kind("node");
        let registry = of_kind("registry");
        let held = Held {
            helper,
            run_dir,
            node_init: process(&node, "init"),
            nspawn: process(&node, "nspawn"),
            node_dir: PathBuf::from(get(&node, "dir")),
            mount: PathBuf::from(get(&node, "mount")),
            cgroups: node
                .iter()
                .filter(|(k, _)| k == "cgroup")
                .map(|(_, v)| PathBuf::from(v))
                .collect(),
            registry: process(&registry, "main"),
            registry_dir: PathBuf::from(get(&registry, "dir")),
        };
        assert_eq!(held.node_init.0, v["nodeInit"].as_u64().unwrap() as u32);
        assert_eq!(held.registry.0, v["registry"].as_u64().unwrap() as u32);
        assert_eq!(held.node_dir, path("nodeDir"));
        assert!(!held.cgroups.is_empty());
        assert!(held.running(), "hold-nodes' node and registry run");
        held
    }

    /// Its node (init and nspawn) and its registry all run, with their
    /// overlay mounted and their cgroups and directories in place.
    fn running(&self) -> bool {
        alive(self.node_init.0, self.node_init.1)
            && alive(self.nspawn.0, self.nspawn.1)
            && alive(self.registry.0, self.registry.1)
            && is_mounted(&self.mount)
            && self.cgroups.iter().all(|c| c.is_dir())
            && self.node_dir.is_dir()
            && self.registry_dir.is_dir()
    }

    /// Everything it started is gone, its run directory included.
    fn assert_gone(&self, context: &str) {
        assert!(
            !alive(self.node_init.0, self.node_init.1),
            "{context}: node init still runs"
        );
        assert!(
            !alive(self.nspawn.0, self.nspawn.1),
            "{context}: nspawn still runs"
        );
        assert!(
            !alive(self.registry.0, self.registry.1),
            "{context}: registry still runs"
        );
        assert!(
            !is_mounted(&self.mount),
            "{context}: {} still mounted",
            self.mount.display()
        );
        for c in &self.cgroups {
            assert!(
                !c.exists(),
                "{context}: cgroup {} still exists",
                c.display()
            );
        }
        assert!(
            !self.node_dir.exists(),
            "{context}: {} still exists",
            self.node_dir.display()
        );
        assert!(
            !self.registry_dir.exists(),
            "{context}: {} still exists",
            self.registry_dir.display()
        );
        assert!(
            !self.run_dir.exists(),
            "{context}: {} still exists",
            self.run_dir.display()
        );
    }

    /// SIGKILL, as when a test run is aborted: nothing is torn down.
    fn abort(&mut self) {
        self.helper.kill();
    }
}

fn cleanup(runs_root: &Path, args: &[&str]) {
    let script = workspace_dir().join("integration-tests/scripts/cleanup-nodes.sh");
    let out = Command::new(&script)
        .args(args)
        .env("NCA_RUNS_ROOT", runs_root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    println!(
        "cleanup-nodes.sh {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "cleanup-nodes.sh {args:?}: {}",
        out.status
    );
}

#[test]
fn clean_up_stops_only_the_recorded_leftovers_of_its_own_runs() {
    preflight();
    let unrelated_node = UnrelatedContainer::start();
    let unrelated_registry = UnrelatedRegistry::start();
    let runs_root = tempfile::Builder::new()
        .prefix("nca-cleanup-test-runs-")
        .tempdir()
        .unwrap();

    let mut live = Held::start(runs_root.path());
    let mut aborted = Held::start(runs_root.path());
    assert_ne!(live.run_dir, aborted.run_dir, "one run directory per run");
    aborted.abort();
    assert!(
        aborted.running(),
        "a SIGKILLed run leaves its node and registry behind"
    );

    // Before a run: the leftovers of aborted runs, and nothing else.
    cleanup(runs_root.path(), &["--stale"]);
    aborted.assert_gone("after --stale");
    assert!(
        live.running(),
        "--stale stopped the node or registry of a live run"
    );
    assert!(
        unrelated_node.alive(),
        "--stale stopped an unrelated nspawn container"
    );
    assert!(
        unrelated_node.cgroup_dirs.iter().all(|d| d.is_dir()),
        "--stale removed an unrelated container's cgroup"
    );
    assert!(
        unrelated_registry.process.alive(),
        "--stale stopped an unrelated registry"
    );

    // At the end of a run: that run's own, and nothing else.
    cleanup(runs_root.path(), &[live.run_dir.to_str().unwrap()]);
    live.assert_gone("after cleaning up its run");
    assert!(
        live.helper.alive(),
        "the run's owner itself is not the clean-up's to stop"
    );
    assert!(
        unrelated_node.alive(),
        "the clean-up stopped an unrelated nspawn container"
    );
    assert!(
        unrelated_registry.process.alive(),
        "the clean-up stopped an unrelated registry"
    );
    live.abort();

    // Nothing is left to do, and doing it again is harmless.
    cleanup(runs_root.path(), &["--stale"]);
    assert!(unrelated_node.alive() && unrelated_registry.process.alive());
    assert_eq!(std::fs::read_dir(runs_root.path()).unwrap().count(), 0);
}
