//! node-cert-agent under test, in both of its deployment modes, on a real
//! [`Node`]:
//!
//! - [`HostModeAgent`]: the binary and the shipped units installed in the node,
//!   started by the node's systemd; it logs to the node's journal, and its
//!   Secret is a kubelet-style volume at [`HOST_SECRET_DIR`] in the node.
//! - [`PodModeAgent`]: the binary run on the host the way a DaemonSet pod runs
//!   it, with the node's root as `--host-root` (what the pod sees at `/host`,
//!   the node's D-Bus socket included) and its Secret volume outside the node;
//!   its logs (`kubectl logs`) go to a file.
//!
//! [`Agent`] wraps either, so a scenario is written once for both modes.
//! Synchronisation is by the agent's own log: every pass ends with one
//! `reconciled: ...` line, so a test publishes, then waits for one more pass
//! ([`Agent::publish_and_wait`]) before it asserts anything.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::cmd;
use crate::node::Node;
use crate::run::Record;
use crate::secret_volume::SecretVolume;

/// The agent's binary inside a host-mode node.
pub const NODE_BINARY: &str = "/usr/bin/node-cert-agent";
/// The host-mode config file.
pub const HOST_CONFIG: &str = "/etc/node-cert-agent/config.yaml";
/// The host-mode Secret volume (a Secret synced to the node by kubelet).
pub const HOST_SECRET_DIR: &str = "/etc/node-cert-agent/secret";
/// The provisioning file (PEM certificates separated by blank lines).
pub const PROVISIONING_FILE: &str = "/etc/node-cert-agent/custom-ca.pem";
/// The long-running host-mode unit.
pub const AGENT_UNIT: &str = "node-cert-agent.service";
/// The host-mode unit that installs the provisioning CAs before containerd.
pub const PROVISION_UNIT: &str = "node-cert-agent-provision.service";
/// The agent's `SYSLOG_IDENTIFIER` in the journal.
pub const SYSLOG_IDENTIFIER: &str = "node-cert-agent";
/// Prefix of the transient units the agent runs the refresh tool in.
pub const REFRESH_UNIT_PREFIX: &str = "node-cert-agent-refresh-";
/// The message every pass of the agent ends with (`reconciled: no change`,
/// `reconciled: trust set changed`).
pub const PASS_PREFIX: &str = "reconciled:";
/// The agent's default debounce (`debounce-ms: 100`): a pass starts once
/// its inputs have been quiet this long. The harness never changes it.
pub const AGENT_DEBOUNCE: Duration = Duration::from_millis(100);
/// A publish faster than this is one burst of events for the agent, hence
/// exactly one pass that reads the new `..data`: half the debounce, leaving
/// the other half for the delivery of inotify events.
pub const ONE_BURST_PUBLISH: Duration = Duration::from_millis(50);
/// How long [`Agent::publish_and_wait`] waits for a possible second pass
/// after a slow publish.
pub const SECOND_PASS_WAIT: Duration = Duration::from_secs(5);
/// How long [`Agent::wait_for_passes`] waits by default.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a pod-mode agent gets to exit after SIGTERM before it is killed
/// (longer than its own 20 s drain of a pass in flight).
pub const POD_STOP_TIMEOUT: Duration = Duration::from_secs(25);

/// systemd's `MESSAGE_ID` for `Starting <unit>...` (a start job begins).
pub const MSG_UNIT_STARTING: &str = "7d4958e842da4a758f6c1cdc7b36dcc5";
/// systemd's `MESSAGE_ID` for `Started <unit>` / `Finished <unit>` (a start
/// job completed).
pub const MSG_UNIT_STARTED: &str = "39f53479d3a045ac8e11786248231fbf";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the integration-tests crate lives in the workspace")
        .to_owned()
}

/// The agent binary under test: `$NCA_AGENT_BIN`, else
/// `<workspace>/target/debug/node-cert-agent`. Panics, saying how to build
/// it, if it does not exist: the tests never skip.
pub fn agent_binary() -> PathBuf {
    let (path, from) = match std::env::var_os("NCA_AGENT_BIN").filter(|v| !v.is_empty()) {
        Some(p) => (PathBuf::from(p), "$NCA_AGENT_BIN"),
        None => (
            workspace_dir().join("target/debug/node-cert-agent"),
            "the default path",
        ),
    };
    assert!(
        path.is_file(),
        "node-cert-agent binary not found at {} ({from}): run `cargo build -p node-cert-agent` \
         in {} first, or point NCA_AGENT_BIN at a built binary",
        path.display(),
        workspace_dir().display()
    );
    path
}

/// `<workspace>/systemd/<name>`: a shipped unit or config file.
pub fn shipped_file(name: &str) -> PathBuf {
    let path = workspace_dir().join("systemd").join(name);
    assert!(path.is_file(), "shipped file {} is missing", path.display());
    path
}

/// A host-mode config (YAML) with these Secret dirs and provisioning files,
/// restarting containerd.service.
pub fn host_config(ca_dirs: &[&str], ca_files: &[&str]) -> String {
    let mut y = String::new();
    for (key, list) in [("ca-dir", ca_dirs), ("ca-file", ca_files)] {
        if list.is_empty() {
            continue;
        }
        y.push_str(key);
        y.push_str(":\n");
        for item in list {
            y.push_str("  - ");
            y.push_str(&serde_json::to_string(item).expect("a string serialises"));
            y.push('\n');
        }
    }
    y.push_str("restart-unit:\n  - containerd.service\n");
    // Unspaced restarts, as for the pod-mode agent.
    y.push_str("restart-min-spacing-seconds: 0\n");
    y
}

/// `node_path` (absolute) under `root`, a node's root directory on the host.
fn under(root: &Path, node_path: &str) -> PathBuf {
    assert!(
        node_path.starts_with('/'),
        "node path {node_path:?} must be absolute"
    );
    root.join(node_path.trim_start_matches('/'))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", path.display()));
}

fn copy_file(from: &Path, to: &Path, mode: u32) {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", to.display()));
}

/// Installs the host-mode agent into the node root `root` (a directory on
/// the host: the overlay before boot, or [`Node::root`] of a running node):
/// the binary at [`NODE_BINARY`] (0755), both shipped units in
/// `/etc/systemd/system/`, and `config_yaml` at [`HOST_CONFIG`]. Enables
/// nothing; see [`enable_unit_offline`].
pub fn install_files(root: &Path, config_yaml: &str) {
    copy_file(&agent_binary(), &under(root, NODE_BINARY), 0o755);
    for unit in [AGENT_UNIT, PROVISION_UNIT] {
        copy_file(
            &shipped_file(unit),
            &under(root, &format!("/etc/systemd/system/{unit}")),
            0o644,
        );
    }
    write_file(&under(root, HOST_CONFIG), config_yaml.as_bytes(), 0o644);
}

/// Enables `unit` (installed in the root's `/etc/systemd/system/`) without a
/// running systemd, as `systemctl --root=<root> enable` does: one
/// `<target>.wants/<unit>` symlink per `WantedBy=` of its `[Install]` section.
pub fn enable_unit_offline(root: &Path, unit: &str) {
    let unit_path = format!("/etc/systemd/system/{unit}");
    let text = std::fs::read_to_string(under(root, &unit_path))
        .unwrap_or_else(|e| panic!("cannot read {unit_path} under {}: {e}", root.display()));
    let wanted_by = wanted_by(&text);
    assert!(
        !wanted_by.is_empty(),
        "{unit} has no WantedBy= in its [Install] section: cannot enable it"
    );
    for target in wanted_by {
        let link = under(root, &format!("/etc/systemd/system/{target}.wants/{unit}"));
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&unit_path, &link)
            .unwrap_or_else(|e| panic!("cannot symlink {} -> {unit_path}: {e}", link.display()));
    }
}

/// The `WantedBy=` targets of a unit file's `[Install]` section.
fn wanted_by(unit_text: &str) -> Vec<String> {
    let mut section = "";
    let mut targets = Vec::new();
    for line in unit_text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            section = line;
        } else if section == "[Install]" {
            if let Some(v) = line.strip_prefix("WantedBy=") {
                targets.extend(v.split_whitespace().map(str::to_owned));
            }
        }
    }
    targets
}

/// One line of the agent's log: a journal entry (host mode) or a JSON line
/// of its stdout (pod mode).
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `MESSAGE` / `message`, or the raw line if it was not JSON.
    pub message: String,
    /// Logged at error level (`PRIORITY=3` / `"level":"ERROR"`).
    pub error: bool,
    /// The whole entry.
    pub raw: Value,
}

impl LogEntry {
    /// Field `name` (any case: journald upper-cases them, JSON logs do not),
    /// as a string.
    pub fn field(&self, name: &str) -> Option<String> {
        let obj = self.raw.as_object()?;
        [
            name.to_owned(),
            name.to_ascii_uppercase(),
            name.to_ascii_lowercase(),
        ]
        .iter()
        .find_map(|k| obj.get(k))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// `CA_KEY` / `ca_key`: the key a finding or an installed CA concerns.
    pub fn ca_key(&self) -> Option<String> {
        self.field("ca_key")
    }

    /// Whether this is the end of a pass (`reconciled: ...`).
    pub fn is_pass(&self) -> bool {
        self.message.starts_with(PASS_PREFIX)
    }

    fn from_journal(v: Value) -> LogEntry {
        let get = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        LogEntry {
            message: get("MESSAGE").unwrap_or_default(),
            error: get("PRIORITY").is_some_and(|p| p.parse::<u8>().is_ok_and(|p| p <= 3)),
            raw: v,
        }
    }

    fn from_json_line(line: &str) -> LogEntry {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => {
                let get = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
                LogEntry {
                    message: get("message").unwrap_or_default(),
                    error: get("level").is_some_and(|l| l.eq_ignore_ascii_case("error")),
                    raw: v,
                }
            }
            _ => LogEntry {
                message: line.to_owned(),
                error: false,
                raw: Value::String(line.to_owned()),
            },
        }
    }
}

/// Renders the last `n` entries for panic messages.
pub fn render_tail(entries: &[LogEntry], n: usize) -> String {
    entries[entries.len().saturating_sub(n)..]
        .iter()
        .map(|e| {
            let key = e
                .ca_key()
                .map(|k| format!(" [key {k}]"))
                .unwrap_or_default();
            format!(
                "{}{key} {}",
                if e.error { "ERROR" } else { "     " },
                e.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The agent as a systemd service of the node, installed from the shipped
/// units. It logs to the node's journal.
#[derive(Debug)]
pub struct HostModeAgent<'n> {
    node: &'n Node,
    secret: SecretVolume,
    /// When the harness last started the unit, for [`HostModeAgent::restart`]
    /// to stay within systemd's start rate limit.
    last_start: std::cell::Cell<Option<Instant>>,
}

impl<'n> HostModeAgent<'n> {
    /// Installs the binary, both shipped units and `config_yaml` into the
    /// running node, creates the Secret volume at [`HOST_SECRET_DIR`]
    /// (written from the host through [`Node::root`]), then
    /// `systemctl enable --now node-cert-agent.service` and waits for its
    /// first pass.
    pub fn install(node: &'n Node, config_yaml: &str) -> HostModeAgent<'n> {
        install_files(&node.root(), config_yaml);
        let secret = SecretVolume::new(node.host_path(HOST_SECRET_DIR));
        node.exec_ok(&["systemctl", "daemon-reload"]);
        node.exec_ok(&["systemctl", "enable", "--now", AGENT_UNIT]);
        let agent = HostModeAgent {
            node,
            secret,
            last_start: std::cell::Cell::new(Some(Instant::now())),
        };
        agent.wait_for_passes(1, PASS_TIMEOUT);
        agent
    }

    /// The agent of a node it was installed in before boot (see
    /// [`install_files`]), whose Secret volume is `secret_dir` in the node.
    /// Waits for nothing.
    pub fn attach(node: &'n Node, secret_dir: &str) -> HostModeAgent<'n> {
        HostModeAgent {
            node,
            secret: SecretVolume::new(node.host_path(secret_dir)),
            last_start: std::cell::Cell::new(None),
        }
    }

    /// The node it runs on.
    pub fn node(&self) -> &'n Node {
        self.node
    }

    /// The Secret volume it watches.
    pub fn secret(&self) -> &SecretVolume {
        &self.secret
    }

    /// The agent's journal entries (`journalctl -u node-cert-agent -o json`,
    /// entries with `SYSLOG_IDENTIFIER=node-cert-agent`), oldest first.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.node
            .journal_json(&["-u", AGENT_UNIT])
            .into_iter()
            .filter(|v| {
                v.get("SYSLOG_IDENTIFIER").and_then(Value::as_str) == Some(SYSLOG_IDENTIFIER)
            })
            .map(LogEntry::from_journal)
            .collect()
    }

    /// Waits until the agent logged at least `n` passes in all; returns how
    /// long that took.
    pub fn wait_for_passes(&self, n: usize, timeout: Duration) -> Duration {
        wait_for_passes(n, timeout, "host", || self.logs(), || self.diagnostics())
    }

    /// `systemctl restart node-cert-agent.service`, then waits for the first
    /// pass of the new process.
    ///
    /// systemd refuses a start beyond `StartLimitBurst` starts within
    /// `StartLimitIntervalSec` (default 5 in 10 s), manual restarts included,
    /// so back-to-back restarts are spaced by interval / burst: a pace that
    /// limit always allows.
    pub fn restart(&self) {
        if let Some(last) = self.last_start.get() {
            let spacing = self.start_limit_spacing();
            let since = last.elapsed();
            if since < spacing {
                std::thread::sleep(spacing - since);
            }
        }
        let passes = count_passes(&self.logs());
        let pid = self.node.main_pid(AGENT_UNIT);
        self.last_start.set(Some(Instant::now()));
        self.node.exec_ok(&["systemctl", "restart", AGENT_UNIT]);
        let new_pid = self.node.main_pid(AGENT_UNIT);
        assert!(
            new_pid != 0 && new_pid != pid,
            "node {}: {AGENT_UNIT} MainPID {pid} -> {new_pid} after `systemctl restart`",
            self.node.name()
        );
        self.wait_for_passes(passes + 1, PASS_TIMEOUT);
    }

    /// `StartLimitIntervalUSec / StartLimitBurst` of the unit, plus a margin.
    fn start_limit_spacing(&self) -> Duration {
        let interval = self
            .node
            .unit_property(AGENT_UNIT, "StartLimitIntervalUSec");
        let burst = self.node.unit_property(AGENT_UNIT, "StartLimitBurst");
        let interval = parse_systemd_timespan(&interval).unwrap_or_else(|| {
            panic!("{AGENT_UNIT}: cannot parse StartLimitIntervalUSec={interval:?}")
        });
        let burst: u32 = burst
            .parse()
            .unwrap_or_else(|e| panic!("{AGENT_UNIT}: StartLimitBurst={burst:?}: {e}"));
        if burst == 0 {
            return Duration::ZERO;
        }
        interval / burst + Duration::from_millis(100)
    }

    fn diagnostics(&self) -> String {
        let status = self
            .node
            .systemctl(&["status", "--no-pager", "-n", "0", AGENT_UNIT]);
        format!(
            "--- systemctl status {AGENT_UNIT} ---\n{}",
            String::from_utf8_lossy(&status.stdout).trim_end()
        )
    }
}

/// The agent run on the host as a DaemonSet pod runs it:
/// `node-cert-agent run --host-root <node root> --ca-dir <secret dir>
/// --log-target stdout --log-format json`, stdout and stderr to a log file.
/// Dropping it sends SIGTERM, then SIGKILL if it does not exit.
#[derive(Debug)]
pub struct PodModeAgent<'n> {
    node: &'n Node,
    secret: SecretVolume,
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
    /// Holds the log file, and the Secret volume when [`Agent::start`] made it.
    dirs: Vec<tempfile::TempDir>,
    /// The run's record of the agent process (see [`crate::run`]), so an
    /// aborted run's clean-up stops it too.
    record: Option<Record>,
}

impl<'n> PodModeAgent<'n> {
    /// Starts the agent on the host against `node`, watching the Secret volume
    /// at `secret_dir_on_host` (created if missing), with `extra_args` after
    /// the standard ones; waits for its first pass.
    pub fn start(
        node: &'n Node,
        secret_dir_on_host: &Path,
        extra_args: &[&str],
    ) -> PodModeAgent<'n> {
        let secret = SecretVolume::new(secret_dir_on_host);
        let dir = tempfile::Builder::new()
            .prefix("nca-pod-agent-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the agent's log: {e}"));
        let log = dir.path().join("agent.log");
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--host-root".into(),
            node.root().into_os_string(),
            "--ca-dir".into(),
            secret_dir_on_host.as_os_str().to_owned(),
            "--log-target".into(),
            "stdout".into(),
            "--log-format".into(),
            "json".into(),
        ];
        // Restarts unspaced, so a scenario's consecutive changes each get
        // their restart at once (the spacing has its own tests), unless the
        // scenario sets it.
        if !extra_args.contains(&"--restart-min-spacing-seconds") {
            args.extend(["--restart-min-spacing-seconds".into(), "0".into()]);
        }
        args.extend(extra_args.iter().map(OsString::from));
        let mut agent = PodModeAgent {
            node,
            secret,
            args,
            log,
            child: None,
            dirs: vec![dir],
            record: None,
        };
        agent.spawn();
        agent.wait_for_passes(1, PASS_TIMEOUT);
        agent
    }

    fn spawn(&mut self) {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup {}: {e}", self.log.display()));
        let mut c = Command::new(agent_binary());
        c.args(&self.args)
            .env_remove("NCA_LOG_TARGET")
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let shown = cmd::display(&c);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
        match self.record.as_mut() {
            Some(record) => record.replace_process("main", child.id()),
            None => {
                let mut record = Record::new("process", &format!("pod-agent-{}", child.id()));
                record.set_process("main", child.id());
                self.record = Some(record);
            }
        }
        self.child = Some(child);
    }

    /// The node it manages.
    pub fn node(&self) -> &'n Node {
        self.node
    }

    /// The Secret volume it watches.
    pub fn secret(&self) -> &SecretVolume {
        &self.secret
    }

    /// The log file (what `kubectl logs` would show).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The host pid of the running agent process, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log, one entry per line, oldest first.
    pub fn logs(&self) -> Vec<LogEntry> {
        read_json_log(&self.log)
    }

    /// Waits until the agent logged at least `n` passes in all (all runs of
    /// it: the log is appended to across restarts).
    pub fn wait_for_passes(&self, n: usize, timeout: Duration) -> Duration {
        wait_for_passes(n, timeout, "pod", || self.logs(), || self.diagnostics())
    }

    /// SIGTERM, wait for the exit, start it again with the same arguments,
    /// and wait for the first pass of the new process.
    pub fn restart(&mut self) {
        let passes = count_passes(&self.logs());
        let status = self.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "pod-mode agent exited with {status:?} on SIGTERM\n--- {} ---\n{}",
            self.log.display(),
            cmd::tail_file(&self.log, 20)
        );
        self.spawn();
        self.wait_for_passes(passes + 1, PASS_TIMEOUT);
    }

    /// SIGTERM, then SIGKILL after [`POD_STOP_TIMEOUT`]; returns the exit
    /// status if it exited by itself.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < POD_STOP_TIMEOUT {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        eprintln!(
            "harness: warning: pod-mode agent (pid {pid}) did not exit within {POD_STOP_TIMEOUT:?} of SIGTERM; killing it"
        );
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn diagnostics(&self) -> String {
        let state = match &self.child {
            None => "not running".to_owned(),
            Some(c) => format!("pid {}", c.id()),
        };
        format!("pod-mode agent: {state}; log {}", self.log.display())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for PodModeAgent<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "harness: pod-mode agent torn down during a panic; its log ({}) ended with:\n{}",
                self.log.display(),
                cmd::tail_file(&self.log, 30)
            );
        }
        self.stop();
    }
}

/// A systemd time span as `systemctl show` prints it (`10s`, `1min 30s`,
/// `500ms`, `0`).
fn parse_systemd_timespan(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for part in s.split_whitespace() {
        let split = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        let (num, unit) = part.split_at(split);
        let n: u64 = num.parse().ok()?;
        total += match unit {
            "" | "s" => Duration::from_secs(n),
            "us" => Duration::from_micros(n),
            "ms" => Duration::from_millis(n),
            "min" => Duration::from_secs(60 * n),
            "h" => Duration::from_secs(3600 * n),
            "d" => Duration::from_secs(86_400 * n),
            _ => return None,
        };
    }
    Some(total)
}

/// A pod-mode log file (`--log-format json` on stdout), one entry per line,
/// oldest first; empty if the file does not exist yet.
pub fn read_json_log(path: &Path) -> Vec<LogEntry> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(LogEntry::from_json_line)
        .collect()
}

/// How many passes (`reconciled: ...` lines) `entries` hold.
pub fn count_passes(entries: &[LogEntry]) -> usize {
    entries.iter().filter(|e| e.is_pass()).count()
}

fn wait_for_passes(
    n: usize,
    timeout: Duration,
    mode: &str,
    logs: impl Fn() -> Vec<LogEntry>,
    diagnostics: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        let entries = logs();
        if count_passes(&entries) >= n {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            panic!(
                "timed out after {timeout:?} waiting for the {mode}-mode agent's pass #{n} \
                 (it logged {} `{PASS_PREFIX}` lines)\n{}\n--- agent log (last 40) ---\n{}",
                count_passes(&entries),
                diagnostics(),
                render_tail(&entries, 40)
            );
        }
        std::thread::sleep(crate::wait::POLL_INTERVAL);
    }
}

/// Which way the agent is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A systemd service of the node ([`HostModeAgent`]).
    Host,
    /// A DaemonSet pod ([`PodModeAgent`]).
    Pod,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Host => "host",
            Mode::Pod => "pod",
        })
    }
}

/// The agent in either mode, for scenarios written once for both.
#[derive(Debug)]
pub enum Agent<'n> {
    /// See [`HostModeAgent`].
    Host(HostModeAgent<'n>),
    /// See [`PodModeAgent`].
    Pod(PodModeAgent<'n>),
}

impl<'n> Agent<'n> {
    /// Starts the agent on `node` in `mode` with a Secret volume as its only
    /// input (host: [`HOST_SECRET_DIR`] in the node; pod: a fresh temp dir on
    /// the host) and waits for its first pass.
    pub fn start(node: &'n Node, mode: Mode) -> Agent<'n> {
        match mode {
            Mode::Host => Agent::Host(HostModeAgent::install(
                node,
                &host_config(&[HOST_SECRET_DIR], &[]),
            )),
            Mode::Pod => {
                let dir = tempfile::Builder::new()
                    .prefix("nca-pod-secret-")
                    .tempdir()
                    .unwrap_or_else(|e| panic!("cannot create a temp dir for the Secret: {e}"));
                let secret = dir.path().join("custom-ca-trust-secret");
                let mut agent = PodModeAgent::start(node, &secret, &[]);
                agent.dirs.push(dir);
                Agent::Pod(agent)
            }
        }
    }

    /// Host or pod.
    pub fn mode(&self) -> Mode {
        match self {
            Agent::Host(_) => Mode::Host,
            Agent::Pod(_) => Mode::Pod,
        }
    }

    /// The node it manages.
    pub fn node(&self) -> &'n Node {
        match self {
            Agent::Host(a) => a.node(),
            Agent::Pod(a) => a.node(),
        }
    }

    /// The Secret volume it watches.
    pub fn secret(&self) -> &SecretVolume {
        match self {
            Agent::Host(a) => a.secret(),
            Agent::Pod(a) => a.secret(),
        }
    }

    /// Its log entries so far, oldest first.
    pub fn logs(&self) -> Vec<LogEntry> {
        match self {
            Agent::Host(a) => a.logs(),
            Agent::Pod(a) => a.logs(),
        }
    }

    /// How many passes it has logged so far.
    pub fn passes(&self) -> usize {
        count_passes(&self.logs())
    }

    /// Waits (up to [`PASS_TIMEOUT`]) until it has logged `n` passes in all.
    pub fn wait_for_passes(&self, n: usize) -> Duration {
        match self {
            Agent::Host(a) => a.wait_for_passes(n, PASS_TIMEOUT),
            Agent::Pod(a) => a.wait_for_passes(n, PASS_TIMEOUT),
        }
    }

    /// Publishes `data` in the Secret volume and waits for the pass that
    /// follows. Returns the instant of the `..data` swap and the log entries
    /// written since just before the publish (the pass's findings, installs,
    /// removals, restarts, and its `reconciled:` line).
    ///
    /// A publish that took longer than [`ONE_BURST_PUBLISH`] (the test thread
    /// was descheduled in the middle of it) may have been split by the
    /// agent's debounce into two passes, the first of which may have read the
    /// old `..data`; then this also waits (up to [`SECOND_PASS_WAIT`]) for a
    /// second pass, so that the caller never asserts on the wrong one.
    pub fn publish_and_wait(&self, data: &BTreeMap<String, Vec<u8>>) -> (Instant, Vec<LogEntry>) {
        let before = self.logs();
        let passes = count_passes(&before);
        let start = Instant::now();
        let swapped = self.secret().publish(data);
        let publish_time = start.elapsed();
        self.wait_for_passes(passes + 1);
        if publish_time >= ONE_BURST_PUBLISH {
            let second = crate::wait::wait_until_or_timeout(SECOND_PASS_WAIT, || {
                self.passes() >= passes + 2
            });
            eprintln!(
                "harness: note: ({} mode) publish took {publish_time:?} (>= {ONE_BURST_PUBLISH:?});                  {} second pass",
                self.mode(),
                if second { "saw a" } else { "no" }
            );
        }
        let after = self.logs();
        // The journal and the log file only grow, so the new entries follow
        // the old ones.
        (swapped, after[before.len().min(after.len())..].to_vec())
    }

    /// Restarts the agent (host: `systemctl restart`; pod: SIGTERM and start
    /// again) and waits for the first pass of the new process.
    pub fn restart(&mut self) {
        match self {
            Agent::Host(a) => a.restart(),
            Agent::Pod(a) => {
                if let Some(status) = a.exited() {
                    panic!(
                        "pod-mode agent had already exited ({status}) before the restart\n--- {} ---\n{}",
                        a.log.display(),
                        cmd::tail_file(&a.log, 30)
                    );
                }
                a.restart();
            }
        }
    }

    /// The last `n` log entries, rendered for messages.
    pub fn log_tail(&self, n: usize) -> String {
        render_tail(&self.logs(), n)
    }
}

#[cfg(test)]
mod tests;
