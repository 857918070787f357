//! A real node: Debian with systemd, D-Bus and containerd, booted by
//! `systemd-nspawn` on a fresh overlay of the cached rootfs.
//!
//! The node shares the host network. Its full filesystem view, including its
//! private `/run` tmpfs, is at `/proc/<pid>/root` ([`Node::root`]), which is what
//! a DaemonSet pod sees at `/host`. Commands run inside it with
//! `nsenter -t <pid> -a` and the node's own binaries, never through a shell.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroup::NodeCgroups;
use crate::cmd;
use crate::overlay::Overlay;
use crate::run::Record;

/// How long [`Node::boot`] waits for containerd to be active.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// `PATH` for commands run inside the node.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The containerd socket, as seen inside the node.
pub const CONTAINERD_SOCK: &str = "/run/containerd/containerd.sock";

/// Makes machine names unique within the test process.
static NEXT_NODE: AtomicU32 = AtomicU32::new(0);
/// Makes temporary file names of [`Node::write_file`] unique.
static NEXT_TMP: AtomicU32 = AtomicU32::new(0);

/// A booted node. Dropping it tears it down on every path, panics included:
/// SIGKILL to the node's init (which ends its whole pid namespace), wait for
/// nspawn, unmount the overlay, remove the node's directory.
#[derive(Debug)]
pub struct Node {
    name: String,
    dir: PathBuf,
    console: PathBuf,
    overlay: Option<Overlay>,
    nspawn: Option<Child>,
    pid: u32,
    /// The node's own cgroups (see [`crate::cgroup`]); removed after nspawn.
    cgroups: Option<NodeCgroups>,
    /// The run's record of this node (see [`crate::run`]): its directory,
    /// overlay mount, cgroups, nspawn and init processes. Removed once the
    /// node is fully torn down.
    record: Option<Record>,
}

impl Node {
    /// Boots a node whose machine name starts with `name` (made unique per
    /// process and call, so tests can run concurrently) and waits until
    /// `containerd.service` is active and its socket exists.
    ///
    /// Panics, with the last lines of the node's console, if that takes longer
    /// than [`BOOT_TIMEOUT`].
    pub fn boot(name: &str) -> Node {
        Node::boot_with(name, |_| {})
    }

    /// Like [`Node::boot`], but first calls `setup` with the node's root
    /// directory on the host (the overlay's merged dir), before nspawn starts:
    /// for files the node must have from its very first boot, such as units
    /// enabled offline (see [`crate::agent::enable_unit_offline`]).
    pub fn boot_with(name: &str, setup: impl FnOnce(&Path)) -> Node {
        Node::boot_inner(name, &[], setup)
    }

    /// Like [`Node::boot`], for a node whose containerd runs containers (runc):
    /// the node may use the kernel keyring (`runc` gives each container a
    /// session keyring; nspawn's default system call filter refuses it), and
    /// the cgroup v1 controllers nspawn mounts read-only are made writable in
    /// the node (runc creates a cgroup per container in each of them).
    pub fn boot_for_containers(name: &str) -> Node {
        Node::boot_for_containers_with(name, |_| {})
    }

    /// [`Node::boot_for_containers`] with a `setup` before boot, as in
    /// [`Node::boot_with`].
    pub fn boot_for_containers_with(name: &str, setup: impl FnOnce(&Path)) -> Node {
        let node = Node::boot_inner(
            name,
            &["--system-call-filter=@keyring", "--capability=all"],
            setup,
        );
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", node.pid))
            .unwrap_or_else(|e| panic!("node {}: cannot read its mountinfo: {e}", node.name));
        for line in mounts.lines() {
            // `<id> <parent> <dev> <root> <mount point> <options> ... - cgroup ...`
            let fields: Vec<&str> = line.split(' ').collect();
            let is_v1_cgroup = line.contains(" - cgroup cgroup ");
            if let (true, Some(point), Some(opts)) = (is_v1_cgroup, fields.get(4), fields.get(5)) {
                if opts.split(',').any(|o| o == "ro") {
                    node.exec_ok(&["mount", "-o", "remount,bind,rw", point]);
                }
            }
        }
        node
    }

    fn boot_inner(name: &str, nspawn_args: &[&str], setup: impl FnOnce(&Path)) -> Node {
        crate::preflight::preflight();
        let machine = machine_name(name);
        let base = std::env::var_os("NCA_WORK_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix(&format!("nca-{machine}-"))
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("cannot create a node directory in {}: {e}", base.display()))
            .keep();
        let console = dir.join("console.log");
        let mut record = Record::new("node", &machine);
        record.set("dir", dir.display());
        record.set("mount", dir.join("merged").display());
        // From here on, `node`'s Drop cleans up whatever has been set up.
        let mut node = Node {
            name: machine,
            dir,
            console,
            overlay: None,
            nspawn: None,
            pid: 0,
            cgroups: None,
            record: Some(record),
        };
        let overlay = Overlay::mount(&crate::preflight::rootfs_path(), &node.dir);
        let merged = overlay.merged().to_owned();
        node.overlay = Some(overlay);
        setup(&merged);
        // The boot timeout counts from here: setup time is not boot time.
        let start = Instant::now();

        let log = File::create(&node.console)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", node.console.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup {}: {e}", node.console.display()));
        // nspawn must start in the node's own cgroups, before it looks at its
        // cgroup: a tiny host shell joins them, then execs nspawn (same pid).
        let cgroup_dirs = NodeCgroups::dirs_for(&node.name);
        if let Some(record) = node.record.as_mut() {
            for dir in &cgroup_dirs {
                record.set("cgroup", dir.display());
            }
        }
        let cgroups = NodeCgroups::create(cgroup_dirs);
        let procs_files = cgroups.procs_files();
        node.cgroups = Some(cgroups);
        let mut nspawn = Command::new("/bin/sh");
        nspawn_env(&mut nspawn)
            .arg("-c")
            .arg(r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#)
            .arg("nca-node-cgroup")
            .args(&procs_files)
            .args(["--", "systemd-nspawn"])
            .arg("-D")
            .arg(&merged)
            .args(["--boot", "--register=no", "--keep-unit", "-M", &node.name])
            .args(nspawn_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let shown = cmd::display(&nspawn);
        let child = nspawn
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
        if let Some(record) = node.record.as_mut() {
            record.set_process("nspawn", child.id());
        }
        node.nspawn = Some(child);

        node.pid = node.wait_for_init(start);
        let pid = node.pid;
        if let Some(record) = node.record.as_mut() {
            record.set_process("init", pid);
        }
        let sock = node.root().join(CONTAINERD_SOCK.trim_start_matches('/'));
        loop {
            node.assert_nspawn_running();
            if node.is_active("containerd") && sock.exists() {
                break;
            }
            if start.elapsed() > BOOT_TIMEOUT {
                let status = node.systemctl(&["status", "--no-pager", "containerd"]);
                panic!(
                    "node {}: containerd not active with {} present after {BOOT_TIMEOUT:?}\n\
                     --- systemctl status containerd ---\n{}\n--- console ({}) ---\n{}",
                    node.name,
                    sock.display(),
                    String::from_utf8_lossy(&status.stdout).trim_end(),
                    node.console.display(),
                    node.console_tail(40)
                );
            }
            std::thread::sleep(crate::wait::POLL_INTERVAL);
        }
        node
    }

    /// Waits for nspawn's child to have become the node's systemd; returns its pid.
    fn wait_for_init(&mut self, start: Instant) -> u32 {
        loop {
            self.assert_nspawn_running();
            if let Some(pid) = self.find_init() {
                if read_trimmed(&format!("/proc/{pid}/comm")).as_deref() == Some("systemd") {
                    return pid;
                }
            }
            if start.elapsed() > BOOT_TIMEOUT {
                panic!(
                    "node {}: nspawn's child never became systemd within {BOOT_TIMEOUT:?}\n--- console ---\n{}",
                    self.name,
                    self.console_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child process of nspawn (the node's init), if there is one.
    fn find_init(&self) -> Option<u32> {
        child_of(self.nspawn.as_ref()?.id())
    }

    fn assert_nspawn_running(&mut self) {
        let Some(child) = self.nspawn.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.nspawn = None;
            panic!(
                "node {}: systemd-nspawn exited early: {status}\n--- console ({}) ---\n{}",
                self.name,
                self.console.display(),
                self.console_tail(40)
            );
        }
    }

    /// The machine name (also the node's hostname).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host pid of the node's init (systemd).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `/proc/<pid>/root`: the node's root as the host (or a pod with the
    /// node's `/` at `/host`) sees it, `/run` included.
    ///
    /// Beware: absolute symlinks inside the node resolve against the *caller's*
    /// root when followed through this path. [`Node::read_file`] and friends
    /// run inside the node and do not have that problem.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// `node_path` (absolute, inside the node) under [`Node::root`].
    pub fn host_path(&self, node_path: &str) -> PathBuf {
        self.root()
            .join(absolute(node_path).trim_start_matches('/'))
    }

    /// The node's host directory: overlay `upper`, `work`, `merged`, and the
    /// console log. Removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file nspawn's console output goes to.
    pub fn console_log(&self) -> &Path {
        &self.console
    }

    /// The last `n` lines of the node's console output.
    pub fn console_tail(&self, n: usize) -> String {
        cmd::tail_file(&self.console, n)
    }

    fn nsenter(&self, argv: &[&str]) -> Command {
        assert!(
            !argv.is_empty(),
            "node {}: exec of an empty argv",
            self.name
        );
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-a", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", NODE_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        c
    }

    /// Runs `argv` inside the node (all its namespaces, its own binaries, no
    /// shell) and returns its output whatever the exit status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        cmd::run(&mut self.nsenter(argv))
    }

    /// Like [`Node::exec`], but panics with the exit status, stderr and stdout
    /// unless the command succeeds.
    pub fn exec_ok(&self, argv: &[&str]) -> Output {
        let out = self.exec(argv);
        if !out.status.success() {
            panic!(
                "{}",
                cmd::describe_output(
                    &format!("node {}: `{}` failed", self.name, argv.join(" ")),
                    &out
                )
            );
        }
        out
    }

    /// Like [`Node::exec_ok`], with `input` on the command's stdin.
    pub fn exec_ok_with_stdin(&self, argv: &[&str], input: &[u8]) -> Output {
        let mut c = self.nsenter(argv);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("node {}: `{}`", self.name, argv.join(" "));
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("{shown}: cannot start: {e}"));
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let out = std::thread::scope(|s| {
            let writer = s.spawn(move || stdin.write_all(input));
            let out = child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("{shown}: cannot wait: {e}"));
            if let Ok(Err(e)) = writer.join() {
                panic!(
                    "{shown}: writing stdin failed: {e}; {}",
                    cmd::describe_output("exit", &out)
                );
            }
            out
        });
        if !out.status.success() {
            panic!("{}", cmd::describe_output(&format!("{shown} failed"), &out));
        }
        out
    }

    /// Writes `bytes` to `node_path` inside the node with permissions `mode`,
    /// creating parent directories. The file is replaced atomically (written
    /// to a temporary name in the same directory, then renamed).
    pub fn write_file(&self, node_path: &str, bytes: &[u8], mode: u32) {
        let path = absolute(node_path);
        let parent = Path::new(path)
            .parent()
            .and_then(Path::to_str)
            .unwrap_or("/");
        let tmp = format!(
            "{path}.nca-harness-tmp{}",
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        );
        self.exec_ok(&["mkdir", "-p", "--", parent]);
        self.exec_ok_with_stdin(&["dd", &format!("of={tmp}"), "status=none"], bytes);
        self.exec_ok(&["chmod", &format!("{mode:o}"), "--", &tmp]);
        self.exec_ok(&["mv", "-fT", "--", &tmp, path]);
    }

    /// The contents of `node_path` inside the node; panics if it cannot be read.
    pub fn read_file(&self, node_path: &str) -> Vec<u8> {
        self.exec_ok(&["cat", "--", absolute(node_path)]).stdout
    }

    /// Removes the file (or symlink) `node_path`; no error if it is absent.
    pub fn remove_file(&self, node_path: &str) {
        self.exec_ok(&["rm", "-f", "--", absolute(node_path)]);
    }

    /// Whether `node_path` exists inside the node (following symlinks, so a
    /// dangling link does not exist).
    pub fn exists(&self, node_path: &str) -> bool {
        self.exec(&["test", "-e", absolute(node_path)])
            .status
            .success()
    }

    /// The target of the symlink `node_path`, or `None` if it is not a symlink.
    pub fn read_link(&self, node_path: &str) -> Option<String> {
        let out = self.exec(&["readlink", "--", absolute(node_path)]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// Runs `systemctl ARGS` in the node; returns its output whatever the status.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let argv: Vec<&str> = std::iter::once("systemctl")
            .chain(args.iter().copied())
            .collect();
        self.exec(&argv)
    }

    /// `systemctl show -p PROP --value UNIT`, trimmed.
    pub fn unit_property(&self, unit: &str, prop: &str) -> String {
        let out = self.exec_ok(&["systemctl", "show", "-p", prop, "--value", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn unit_property_u32(&self, unit: &str, prop: &str) -> u32 {
        let v = self.unit_property(unit, prop);
        v.parse().unwrap_or_else(|e| {
            panic!(
                "node {}: {unit} property {prop}={v:?} is not a number: {e}",
                self.name
            )
        })
    }

    /// The unit's `MainPID` (node pid namespace; 0 when not running).
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.unit_property_u32(unit, "MainPID")
    }

    /// The unit's `NRestarts` (automatic restarts by `Restart=`, not manual ones).
    pub fn n_restarts(&self, unit: &str) -> u32 {
        self.unit_property_u32(unit, "NRestarts")
    }

    /// Whether `systemctl is-active UNIT` says `active`.
    pub fn is_active(&self, unit: &str) -> bool {
        let out = self.systemctl(&["is-active", unit]);
        String::from_utf8_lossy(&out.stdout).trim() == "active"
    }

    /// `systemctl restart UNIT` (waits for the job), then panics unless the
    /// unit is active.
    pub fn restart(&self, unit: &str) {
        self.exec_ok(&["systemctl", "restart", unit]);
        assert!(
            self.is_active(unit),
            "node {}: {unit} is not active right after `systemctl restart {unit}`",
            self.name
        );
    }

    /// Runs `journalctl -o json --no-pager ARGS` in the node and parses each entry.
    pub fn journal_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let argv: Vec<&str> = ["journalctl", "-o", "json", "--no-pager"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let out = self.exec_ok(&argv);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "node {}: `{}` printed a non-JSON line ({e}): {l}",
                        self.name,
                        argv.join(" ")
                    )
                })
            })
            .collect()
    }

    /// [`crate::wait_until`], with the node's name in the timeout message.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl FnMut() -> bool,
    ) -> Duration {
        crate::wait::wait_until(timeout, &format!("{what} (node {})", self.name), cond)
    }

    /// Tears the node down; called by Drop. Problems are printed, not raised,
    /// so that a teardown during a panic does not abort the test process.
    fn teardown(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            let nspawn_pid = nspawn.id();
            let kill_init = |pid: Option<u32>| {
                // Only while it is still nspawn's child: never a recycled pid.
                if let Some(pid) = pid.filter(|&p| p != 0 && parent_pid(p) == Some(nspawn_pid)) {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            };
            kill_init(Some(self.pid));
            kill_init(child_of(nspawn_pid));
            if !wait_child(&mut nspawn, Duration::from_secs(15)) {
                eprintln!(
                    "harness: warning: node {}: nspawn (pid {nspawn_pid}) still running 15 s after its init was killed; killing it",
                    self.name
                );
                kill_init(child_of(nspawn_pid));
                let _ = nspawn.kill();
                let _ = nspawn.wait();
            }
        }
        if let Some(mut cgroups) = self.cgroups.take() {
            if let Err(e) = cgroups.remove() {
                eprintln!("harness: warning: node {}: {e}", self.name);
                if let Some(record) = self.record.as_mut() {
                    record.keep();
                }
            }
        }
        if let Some(mut overlay) = self.overlay.take() {
            if let Err(e) = overlay.unmount() {
                eprintln!(
                    "harness: warning: node {}: {e}; leaving {} (its run record stays, for cleanup-nodes.sh)",
                    self.name,
                    self.dir.display()
                );
                if let Some(record) = self.record.as_mut() {
                    record.keep();
                }
                return;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "harness: warning: node {}: cannot remove {}: {e}",
                self.name,
                self.dir.display()
            );
        }
        self.record = None;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "harness: node {} torn down during a panic; its console ({}) ended with:\n{}",
                self.name,
                self.console.display(),
                self.console_tail(30)
            );
        }
        self.teardown();
    }
}

/// `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY`: set to `1` in the environment of
/// `systemd-nspawn`, it gives the container a unified (cgroup2) hierarchy
/// even where the host has the legacy one.
pub const NSPAWN_UNIFIED_HIERARCHY_ENV: &str = "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY";

/// Sets, on `c` (which runs `systemd-nspawn`, or a shell that execs it), the
/// environment nspawn needs for this run's nodes: for a release whose systemd
/// refuses the legacy cgroup hierarchy (systemd 258 and later, see
/// [`crate::preflight::nspawn_unified_hierarchy`]),
/// `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`. Other releases keep the hierarchy
/// nspawn picks by itself. For every command that starts nspawn on the rootfs.
pub fn nspawn_env(c: &mut Command) -> &mut Command {
    if crate::preflight::nspawn_unified_hierarchy() {
        c.env(NSPAWN_UNIFIED_HIERARCHY_ENV, "1");
    }
    c
}

/// A short machine name that is unique per run, process and call:
/// `<sanitized prefix of name>-<run id>-<test process pid>-<counter>` (at
/// most 40 chars; the run id is [`crate::run::run_id`]).
pub(crate) fn machine_name(name: &str) -> String {
    let mut prefix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(14)
        .collect();
    prefix = prefix.trim_matches('-').to_owned();
    if prefix.is_empty() {
        prefix = "node".to_owned();
    }
    let n = NEXT_NODE.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{}-{n}",
        crate::run::run_id(),
        std::process::id()
    )
}

/// Panics unless `node_path` is absolute; returns it.
fn absolute(node_path: &str) -> &str {
    assert!(
        node_path.starts_with('/'),
        "node path {node_path:?} must be absolute"
    );
    node_path
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// A child process of `parent` (found by scanning `/proc`), if any.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| parent_pid(pid) == Some(parent))
}

/// Waits up to `timeout` for `child` to exit; true if it did.
fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names_are_short_unique_and_hostname_safe() {
        let a = machine_name("A very_long Test::name with spaces and more");
        let b = machine_name("A very_long Test::name with spaces and more");
        assert_ne!(a, b);
        assert!(a.len() <= 40, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        assert!(machine_name("::").starts_with("node-"));
        assert!(
            a.contains(&format!(
                "-{}-{}-",
                crate::run::run_id(),
                std::process::id()
            )),
            "{a}"
        );
    }

    #[test]
    fn parent_pid_of_self_is_our_parent() {
        let me = std::process::id();
        assert_eq!(parent_pid(me), Some(std::os::unix::process::parent_id()));
    }
}
