//! Hostile inputs and restart storms on real nodes. Each attack
//! is made for real against a pod-mode agent on a systemd-nspawn node that
//! already trusts a good CA, and each test fails on an agent without the
//! issue's fixes:
//!
//! - the Secret directory: `..data -> ..`; a payload that is a link out of
//!   the volume (and is never even opened); hard links, directories and
//!   world-writable files among the keys; a key link swapped back and forth
//!   for 60 s against a 1 ms debounce; a plain `ca-dir` others can write;
//! - operator-facing text: newlines, carriage returns, ANSI escapes and
//!   right-to-left marks in a subject and a key name, in the text log and in
//!   `status`'s table;
//! - certificates: a negative serial, a v1 root, one CA repeated a thousand
//!   times, a key name with a Cyrillic lookalike;
//! - restarts: ten real changes one pass apart (containerd stays up, within
//!   its start limit, and the log and metrics say what systemd did);
//!   containerd already at its start limit before the agent's restart
//!   (reported failed, never restarted); the agent's own restart driving
//!   containerd into its start limit (recovered at once: ResetFailedUnit
//!   clears systemd's start counter).
//!
//! Every test has its own node, so they run in parallel.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::agent::{agent_binary, render_tail, LogEntry, PodModeAgent, PASS_TIMEOUT};
use integration_tests::observe::{self, ContainerdState, CONTAINERD_UNIT, STATE_FILE};
use integration_tests::pki::TestCa;
use integration_tests::registry::free_port;
use integration_tests::secret_volume::payload_dir_name;
use integration_tests::{
    assert_pull_ok, preflight, secret_data, wait_until, wait_until_or_timeout, Node, TestRegistry,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use node_cert_agent::x509::testpki;
use openssl::x509::X509;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// How long a test waits for the agent's passes and restarts.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The good CA's key, installed before every attack.
const GOOD_KEY: &str = "ca1.crt";
/// How long the key-link race runs.
const RACE_FOR: Duration = Duration::from_secs(60);
/// The node's containerd start limit (Debian sets none: systemd's default).
const BURST: usize = 5;
/// The start-limit interval the storm test gives containerd: long enough
/// that ten changes one pass apart need more starts than it allows, however
/// slow this machine's refresh tool is (a pass takes 1 to 4 s here).
const STORM_INTERVAL: Duration = Duration::from_secs(60);

fn boot(scenario: &str) -> Node {
    preflight();
    Node::boot(&format!("hostile-{scenario}"))
}

/// A host directory for one test's Secret volume and what lies beside it.
fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nca-hostile-")
        .tempdir()
        .unwrap()
}

/// The log entries after the first `skip`.
fn since(agent: &PodModeAgent<'_>, skip: usize) -> Vec<LogEntry> {
    agent.logs().into_iter().skip(skip).collect()
}

/// Makes `change`, then waits for the pass that follows it; returns the log
/// entries written since just before the change.
fn change_and_wait(agent: &PodModeAgent<'_>, change: impl FnOnce()) -> Vec<LogEntry> {
    let before = agent.logs();
    let passes = integration_tests::agent::count_passes(&before);
    change();
    agent.wait_for_passes(passes + 1, PASS_TIMEOUT);
    since(agent, before.len())
}

/// A pod-mode agent on `node` with the good CA installed from the Secret
/// volume at `secret` (one refresh, one restart).
fn agent_with_good_ca<'n>(
    node: &'n Node,
    secret: &Path,
    extra: &[&str],
    good: &TestCa,
) -> PodModeAgent<'n> {
    let agent = PodModeAgent::start(node, secret, extra);
    let s = ContainerdState::of(node);
    change_and_wait(&agent, || {
        agent
            .secret()
            .publish(&secret_data(&[(GOOD_KEY, good.cert_pem().as_bytes())]));
    });
    observe::assert_trusted(node, good, "the good CA before the attack");
    s.assert_restarted_once(node, "the good CA before the attack");
    agent
}

/// Points `<dir>/..data` at `target` the way kubelet does (a link renamed
/// over it).
fn point_data_at(dir: &Path, target: &str) {
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// A payload directory name of kubelet's form, unique within the test.
fn payload_name(n: u32) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    payload_dir_name(secs, n)
}

/// Writes a payload directory `<dir>/<name>` (0755) with `files` (0644).
fn write_payload(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let payload = dir.join(name);
    std::fs::create_dir(&payload).unwrap();
    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (k, v) in files {
        std::fs::write(payload.join(k), v).unwrap();
        std::fs::set_permissions(payload.join(k), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    payload
}

/// Panics unless nothing changed on the node since `before` and `refreshes`:
/// the good CA trusted, `outside` not, no restart and no refresh.
fn assert_held(
    node: &Node,
    good: &TestCa,
    outside: &[&X509],
    before: ContainerdState,
    refreshes: usize,
    context: &str,
) {
    observe::assert_trusted(node, good, context);
    for cert in outside {
        assert!(
            !observe::bundle_has(node, cert),
            "{context}: a CA from outside the Secret directory is in the node's bundle"
        );
    }
    before.assert_not_restarted(node, context);
    assert_eq!(
        observe::refresh_runs(node).len(),
        refreshes,
        "{context}: the refresh tool ran"
    );
}

/// Error-level entries whose message contains every needle.
fn errors_naming<'e>(entries: &'e [LogEntry], needles: &[&str]) -> Vec<&'e LogEntry> {
    entries
        .iter()
        .filter(|e| e.error && needles.iter().all(|n| e.message.contains(n)))
        .collect()
}

/// Entries with the finding kind `kind` (the `finding` field) for `key`.
fn findings<'e>(entries: &'e [LogEntry], kind: &str, key: &str) -> Vec<&'e LogEntry> {
    entries
        .iter()
        .filter(|e| {
            e.field("finding").as_deref() == Some(kind) && e.ca_key().as_deref() == Some(key)
        })
        .collect()
}

/// A scrape of the agent's `/metrics` on 127.0.0.1:`port`.
fn scrape(port: u16) -> prometheus_parse::Scrape {
    let body = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("cannot scrape 127.0.0.1:{port}/metrics: {e}"));
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// `node_cert_agent_unit_restarts_total` for containerd, by `result`.
fn restart_counts(port: u16) -> BTreeMap<String, f64> {
    scrape(port)
        .samples
        .into_iter()
        .filter(|s| {
            s.metric == "node_cert_agent_unit_restarts_total"
                && s.labels.get("unit") == Some(CONTAINERD_UNIT)
        })
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("not a counter: {other:?}"),
            };
            (s.labels.get("result").unwrap_or_default().to_owned(), v)
        })
        .collect()
}

/// When systemd completed each start of containerd since `after_us`
/// (`Started containerd.service`, microseconds since the epoch).
fn containerd_start_times(node: &Node, after_us: u64) -> Vec<u64> {
    node.journal_json(&[
        "_PID=1",
        &format!("MESSAGE_ID={}", integration_tests::agent::MSG_UNIT_STARTED),
    ])
    .iter()
    .filter(|v| {
        v["UNIT"] == CONTAINERD_UNIT
            && v["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.starts_with("Started "))
    })
    .filter_map(|v| v["__REALTIME_TIMESTAMP"].as_str()?.parse::<u64>().ok())
    .filter(|&t| t > after_us)
    .collect()
}

/// Whether systemd refused a start of containerd since `after_us`.
fn start_limit_hit_since(node: &Node, after_us: u64) -> bool {
    node.journal_json(&["-u", CONTAINERD_UNIT])
        .iter()
        .filter(|v| {
            v["__REALTIME_TIMESTAMP"]
                .as_str()
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|t| t > after_us)
        })
        .any(|v| {
            v["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("Start request repeated too quickly"))
        })
}

fn now_us() -> u64 {
    node_cert_agent::time::now_us()
}

/// The agent's CA state in the node: whether a restart is still pending.
fn restart_pending(node: &Node) -> bool {
    let state: serde_json::Value = serde_json::from_slice(&node.read_file(STATE_FILE)).unwrap();
    state["restart_pending"] != serde_json::json!([]) || state["refresh_pending"] == true
}

// ---------------------------------------------------------------------------
// 1. The Secret directory, as kubelet writes it and as an attacker does not.
// ---------------------------------------------------------------------------

#[test]
fn data_pointing_at_the_parent_is_refused_and_the_parent_is_not_read() {
    let node = boot("data-parent");
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let good = TestCa::new("nca hostile good CA");
    let agent = agent_with_good_ca(&node, &secret, &[], &good);
    // Beside the Secret directory: a CA someone planted.
    let planted = TestCa::new("nca hostile planted CA");
    std::fs::write(work.path().join("planted.crt"), planted.cert_pem()).unwrap();

    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let logged = change_and_wait(&agent, || point_data_at(&secret, ".."));
    let context = "..data -> ..";
    let refused = errors_naming(&logged, &["..data points at \"..\"", "not followed"]);
    assert!(
        !refused.is_empty(),
        "{context}: no error naming the link; log:\n{}",
        render_tail(&logged, 20)
    );
    println!("{context}: {}", refused[0].message);
    assert_held(&node, &good, &[planted.cert()], before, refreshes, context);
    assert!(
        !logged.iter().any(|e| e.message.starts_with("removed CA")),
        "{context}: the good CA was removed"
    );
}

#[test]
fn a_payload_that_links_out_of_the_secret_is_refused_and_never_opened() {
    let node = boot("payload-link");
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let good = TestCa::new("nca hostile good CA");
    let agent = agent_with_good_ca(&node, &secret, &[], &good);
    // A root-only directory elsewhere (as /etc/ssl/private or another pod's
    // Secret volume would be), with a CA and a private key in it.
    let outside = work.path().join("private");
    std::fs::create_dir(&outside).unwrap();
    let other = TestCa::new("nca hostile other pod's CA");
    std::fs::write(outside.join("ca.crt"), other.cert_pem()).unwrap();
    std::fs::write(outside.join("ssl-cert-snakeoil.key"), other.key_pem()).unwrap();
    for p in [
        outside.join("ca.crt"),
        outside.join("ssl-cert-snakeoil.key"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    let watch =
        nix::sys::inotify::Inotify::init(nix::sys::inotify::InitFlags::IN_NONBLOCK).unwrap();
    watch
        .add_watch(
            &outside,
            nix::sys::inotify::AddWatchFlags::IN_OPEN | nix::sys::inotify::AddWatchFlags::IN_ACCESS,
        )
        .unwrap();

    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let name = payload_name(7);
    let logged = change_and_wait(&agent, || {
        symlink(&outside, secret.join(&name)).unwrap();
        point_data_at(&secret, &name);
    });
    let context = "a payload linked out of the Secret";
    let refused = errors_naming(&logged, &[&name, "is a link or not a directory"]);
    assert!(
        !refused.is_empty(),
        "{context}: no error naming the payload; log:\n{}",
        render_tail(&logged, 20)
    );
    println!("{context}: {}", refused[0].message);
    assert_held(&node, &good, &[other.cert()], before, refreshes, context);
    assert!(
        !logged.iter().any(|e| e.message.contains("private key")),
        "{context}: the private key was read: {}",
        render_tail(&logged, 20)
    );
    let opened: Vec<_> = match watch.read_events() {
        Ok(events) => events.into_iter().map(|e| e.name).collect(),
        Err(nix::errno::Errno::EAGAIN) => Vec::new(),
        Err(e) => panic!("inotify: {e}"),
    };
    assert!(
        opened.is_empty(),
        "{context}: the agent opened the outside directory or its files: {opened:?}"
    );
}

#[test]
fn hard_links_directories_and_world_writable_keys_are_refused() {
    let node = boot("odd-keys");
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let good = TestCa::new("nca hostile good CA");
    let agent = agent_with_good_ca(&node, &secret, &[], &good);
    let root_only = TestCa::new("nca hostile root-only CA");
    let root_only_file = work.path().join("root-only.crt");
    std::fs::write(&root_only_file, root_only.cert_pem()).unwrap();
    std::fs::set_permissions(&root_only_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let writable = TestCa::new("nca hostile world-writable CA");

    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let name = payload_name(11);
    let logged = change_and_wait(&agent, || {
        let payload = write_payload(
            &secret,
            &name,
            &[
                (GOOD_KEY, good.cert_pem().as_bytes()),
                ("open.crt", writable.cert_pem().as_bytes()),
            ],
        );
        std::fs::set_permissions(
            payload.join("open.crt"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        std::fs::hard_link(&root_only_file, payload.join("hard.crt")).unwrap();
        std::fs::create_dir(payload.join("dir.crt")).unwrap();
        point_data_at(&secret, &name);
    });
    let context = "hard link, directory and world-writable keys";
    for (kind, key, words) in [
        ("HardLink", "hard.crt", "2 hard links"),
        ("WritableByOthers", "open.crt", "mode 0666"),
        ("NotAKey", "dir.crt", "is a directory, not a key"),
    ] {
        let found = findings(&logged, kind, key);
        assert!(
            found
                .iter()
                .any(|e| e.message.contains(words) && e.message.contains("Fix:")),
            "{context}: no {kind} finding for {key} with {words:?}; log:\n{}",
            render_tail(&logged, 30)
        );
        println!("{context}: {}", found[0].message);
    }
    assert_held(
        &node,
        &good,
        &[root_only.cert(), writable.cert()],
        before,
        refreshes,
        context,
    );
}

#[test]
fn a_key_link_swapped_back_and_forth_for_a_minute_never_brings_in_a_ca_from_outside() {
    let node = boot("link-race");
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let good = TestCa::new("nca hostile good CA");
    let agent = agent_with_good_ca(&node, &secret, &["--debounce-ms", "1"], &good);
    let outside = TestCa::new("nca hostile raced-in CA");
    let outside_file = work.path().join("outside.crt");
    std::fs::write(&outside_file, outside.cert_pem()).unwrap();
    let payload = secret.join(agent.secret().current_payload().unwrap());
    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();
    let skip = agent.logs().len();

    // The racer: evil.crt is a link to the good key inside the payload one
    // moment, and to the CA outside the next, each swapped in by rename
    // (which also wakes the agent: its Secret directory changes).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let (secret, payload, outside_file) =
            (secret.clone(), payload.clone(), outside_file.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            let targets = [PathBuf::from(GOOD_KEY), outside_file];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, target) in targets.iter().enumerate() {
                    let tmp = secret.join(format!("race-{i}"));
                    let _ = std::fs::remove_file(&tmp);
                    symlink(target, &tmp).unwrap();
                    std::fs::rename(&tmp, payload.join("evil.crt")).unwrap();
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let started = Instant::now();
    let mut won = false;
    while started.elapsed() < RACE_FOR {
        std::thread::sleep(Duration::from_secs(2));
        if observe::bundle_has(&node, outside.cert()) {
            won = true;
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    let logged = since(&agent, skip);
    let passes = logged.iter().filter(|e| e.is_pass()).count();
    println!(
        "link race: {swaps} swaps and {passes} agent passes in {:?}",
        started.elapsed()
    );
    let context = format!("the key-link race ({swaps} swaps, {passes} passes)");
    assert!(!won, "{context}: the CA from outside was installed");
    assert!(
        passes >= 20,
        "{context}: the agent hardly ran; the race proves nothing"
    );
    assert!(
        !findings(&logged, "Link", "evil.crt").is_empty(),
        "{context}: no Link finding for evil.crt"
    );
    // Let the last events settle, then check nothing changed at all.
    std::thread::sleep(Duration::from_secs(2));
    assert_held(&node, &good, &[outside.cert()], before, refreshes, &context);
}

#[test]
fn a_plain_ca_dir_others_can_write_is_refused() {
    let node = boot("plain-dir");
    let work = workdir();
    let dir = work.path().join("cas");
    std::fs::create_dir(&dir).unwrap();
    let good = TestCa::new("nca hostile good CA");
    std::fs::write(dir.join(GOOD_KEY), good.cert_pem()).unwrap();
    let agent = PodModeAgent::start(&node, &dir, &[]);
    observe::assert_trusted(&node, &good, "the good CA from a plain directory");
    let before = ContainerdState::of(&node);
    let refreshes = observe::refresh_runs(&node).len();

    // A file someone else owns, in a directory only root writes.
    let foreign = TestCa::new("nca hostile foreign-owned CA");
    let logged = change_and_wait(&agent, || {
        std::fs::write(dir.join("foreign.crt"), foreign.cert_pem()).unwrap();
        nix::unistd::chown(
            &dir.join("foreign.crt"),
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
        )
        .unwrap();
    });
    let found = findings(&logged, "WritableByOthers", "foreign.crt");
    assert!(
        found.iter().any(|e| e.message.contains("owner uid 65534")),
        "a foreign-owned key: no finding; log:\n{}",
        render_tail(&logged, 20)
    );
    println!("foreign-owned key: {}", found[0].message);

    // The directory itself writable by everyone (not sticky): nothing in it.
    let planted = TestCa::new("nca hostile planted CA");
    let logged = change_and_wait(&agent, || {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(dir.join("planted.crt"), planted.cert_pem()).unwrap();
    });
    let refused = errors_naming(
        &logged,
        &["can be changed by a user other than root", "mode 0777"],
    );
    assert!(
        !refused.is_empty(),
        "a world-writable ca-dir: no error; log:\n{}",
        render_tail(&logged, 20)
    );
    println!("world-writable ca-dir: {}", refused[0].message);
    assert_held(
        &node,
        &good,
        &[foreign.cert(), planted.cert()],
        before,
        refreshes,
        "a ca-dir others can write",
    );
}

// ---------------------------------------------------------------------------
// 2. Forged lines: the text log and `status`.
// ---------------------------------------------------------------------------

/// The agent in pod mode with text logs on stdout (what `kubectl logs`
/// shows), NO_COLOR set, and a plain `--ca-dir`.
struct TextAgent {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TextAgent {
    fn start(node: &Node, ca_dir: &Path) -> TextAgent {
        let dir = workdir();
        let log = dir.path().join("agent.log");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let args: Vec<OsString> = vec![
            "run".into(),
            "--host-root".into(),
            node.root().into(),
            "--ca-dir".into(),
            ca_dir.into(),
            "--log-target".into(),
            "stdout".into(),
            "--log-format".into(),
            "text".into(),
            "--metrics-address".into(),
            "off".into(),
        ];
        let child = Command::new(agent_binary())
            .args(&args)
            .env("NO_COLOR", "1")
            .env_remove("NCA_LOG_FORMAT")
            .env_remove("NCA_LOG_TARGET")
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let agent = TextAgent {
            child,
            log,
            _dir: dir,
        };
        agent.wait_for_passes(1);
        agent
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn wait_for_passes(&self, n: usize) {
        wait_until(TIMEOUT, "the text-log agent's pass", || {
            self.text().matches("reconciled:").count() >= n
        });
    }
}

impl Drop for TextAgent {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A line forged to look like one of the agent's own (short: a CN holds at
/// most 64 characters).
const FORGED_LINE: &str = "2026-11-22T04:45:18Z  INFO FORGED";

/// Panics if `text` has a line of its own that an attacker wrote, or a
/// character that moves a terminal's cursor or turns text around.
fn assert_no_forgery(text: &str, sink: &str) {
    for line in text.lines() {
        assert!(
            !line.starts_with(FORGED_LINE) && !line.starts_with("FORGED"),
            "{sink}: a forged line: {line:?}"
        );
    }
    for c in ['\r', '\x1b', '\u{202e}'] {
        assert!(!text.contains(c), "{sink}: a raw {c:?}:\n{text:?}");
    }
}

#[test]
fn forged_subjects_and_key_names_stay_escaped_in_the_text_log_and_the_status_table() {
    let node = boot("forgery");
    let work = workdir();
    let dir = work.path().join("cas");
    std::fs::create_dir(&dir).unwrap();
    let forged_subject = TestCa::new(&format!("n\n{FORGED_LINE} by subject\r\x1b[2K\u{202e}"));
    let forged_key = format!("ca\n{FORGED_LINE} by key name\r\x1b[1A\u{202e}.crt");
    std::fs::write(dir.join("subject.crt"), forged_subject.cert_pem()).unwrap();
    std::fs::write(
        dir.join(&forged_key),
        TestCa::new("nca hostile key").cert_pem(),
    )
    .unwrap();
    let agent = TextAgent::start(&node, &dir);
    let text = agent.text();
    println!("--- the text log ---\n{text}");
    assert!(
        text.contains("installed CA from key")
            && text.contains("\\n2026-11-22T04:45:18Z  INFO FORGED"),
        "the CAs were not installed, or the newline not escaped:\n{text}"
    );
    assert_no_forgery(&text, "the text log");

    let status = Command::new(agent_binary())
        .args(["status", "--host-root"])
        .arg(node.root())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    println!("--- status ---\n{table}");
    assert!(
        table.contains("by key name") && table.contains("by subject"),
        "status lists neither CA:\n{table}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_no_forgery(&table, "the status table");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("HEALTH:")).count(),
        1,
        "{table}"
    );
}

// ---------------------------------------------------------------------------
// 3. Certificates that are legal but odd.
// ---------------------------------------------------------------------------

#[test]
fn odd_certificates_and_lookalike_key_names_are_named_for_what_they_are() {
    let node = boot("odd-certs");
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let good = TestCa::new("nca hostile good CA");
    let agent = agent_with_good_ca(&node, &secret, &[], &good);
    let negative = testpki::negative_serial_ca("nca hostile negative serial");
    let v1 = testpki::bare_v1_cert("nca hostile v1 root");
    let repeated = TestCa::new("nca hostile repeated CA")
        .cert_pem()
        .repeat(1000);
    let lookalike_key = "c\u{430}2.crt";
    let rtl_key = "ca3\u{202e}.crt";
    let logged = change_and_wait(&agent, || {
        agent.secret().publish(&secret_data(&[
            (GOOD_KEY, good.cert_pem().as_bytes()),
            ("neg.crt", testpki::pem(&negative.cert).as_bytes()),
            ("v1.crt", testpki::pem(&v1).as_bytes()),
            ("many.crt", repeated.as_bytes()),
            (
                lookalike_key,
                TestCa::new("nca hostile lookalike").cert_pem().as_bytes(),
            ),
            (
                rtl_key,
                TestCa::new("nca hostile rtl").cert_pem().as_bytes(),
            ),
        ]));
    });
    let context = "odd certificates";
    for (kind, key, words) in [
        (
            "NegativeSerial",
            "neg.crt",
            vec!["negative serial", "Go 1.23", "x509negativeserial"],
        ),
        ("V1Root", "v1.crt", vec!["v1", "root CA"]),
        (
            "DuplicateInKey",
            "many.crt",
            vec!["repeated 999 more times"],
        ),
        (
            "NonAsciiKeyName",
            lookalike_key,
            vec!["not plain ASCII", "U+0430"],
        ),
        (
            "NonAsciiKeyName",
            rtl_key,
            vec!["not plain ASCII", "U+202E"],
        ),
    ] {
        let found = findings(&logged, kind, key);
        // One finding per pass that read the key (a slow publish may make two).
        let passes = logged.iter().filter(|e| e.is_pass()).count();
        assert!(
            !found.is_empty() && found.len() <= passes,
            "{context}: want one {kind} finding for {key:?} per pass, got {} in {passes} passes; log:\n{}",
            found.len(),
            render_tail(&logged, 40)
        );
        for w in words {
            assert!(
                found[0].message.contains(w),
                "{context}: {kind} lacks {w:?}: {}",
                found[0].message
            );
        }
        println!("{context}: {}", found[0].message);
    }
    assert!(
        !logged
            .iter()
            .any(|e| e.message.contains("trusts exactly this one server")),
        "{context}: the v1 root is described as a server's certificate"
    );
    for cert in [&negative.cert, &v1] {
        assert!(
            observe::bundle_has(&node, cert),
            "{context}: {cert:?} not installed"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. Restarts that respect systemd's start limit and tell the truth.
// ---------------------------------------------------------------------------

/// A pod-mode agent with its metrics on a free port.
fn agent_with_metrics<'n>(node: &'n Node, secret: &Path) -> (PodModeAgent<'n>, u16) {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    (
        PodModeAgent::start(node, secret, &["--metrics-address", &address]),
        port,
    )
}

/// The most starts in `times` within any window of `interval`.
fn most_starts_in_a_window(times: &[u64], interval: Duration) -> usize {
    let window = u64::try_from(interval.as_micros()).unwrap();
    times
        .iter()
        .map(|&t| times.iter().filter(|&&u| u >= t && u <= t + window).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn ten_real_changes_one_pass_apart_keep_containerd_up_within_its_start_limit() {
    let node = boot("storm");
    // The agent reads the unit's own limit: 5 starts, here in a minute.
    node.write_file(
        "/etc/systemd/system/containerd.service.d/nca-start-limit.conf",
        format!(
            "[Unit]\nStartLimitBurst={BURST}\nStartLimitIntervalSec={}\n",
            STORM_INTERVAL.as_secs()
        )
        .as_bytes(),
        0o644,
    );
    node.exec_ok(&["systemctl", "daemon-reload"]);
    node.exec_ok(&["systemctl", "reset-failed", CONTAINERD_UNIT]);
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let (agent, port) = agent_with_metrics(&node, &secret);
    let t0 = now_us();
    let skip = agent.logs().len();
    let cas: Vec<TestCa> = (0..10)
        .map(|i| TestCa::new(&format!("nca storm CA {i}")))
        .collect();
    for (i, ca) in cas.iter().enumerate() {
        let key = format!("ca{i}.crt");
        change_and_wait(&agent, || {
            agent
                .secret()
                .publish(&secret_data(&[(key.as_str(), ca.cert_pem().as_bytes())]));
        });
    }
    // The last change's restart may wait for the window: until it is done.
    let settled = wait_until_or_timeout(STORM_INTERVAL + TIMEOUT, || !restart_pending(&node));
    let logged = since(&agent, skip);
    let starts = containerd_start_times(&node, t0);
    let context = format!("ten changes ({} containerd starts)", starts.len());
    assert!(
        settled,
        "{context}: a restart is still pending; log:\n{}",
        render_tail(&logged, 40)
    );
    assert!(
        node.is_active(CONTAINERD_UNIT),
        "{context}: containerd is not active"
    );
    assert!(
        !start_limit_hit_since(&node, t0),
        "{context}: containerd hit its start limit"
    );
    let most = most_starts_in_a_window(&starts, STORM_INTERVAL);
    assert!(
        most < BURST,
        "{context}: {most} starts within {STORM_INTERVAL:?}, the limit is {BURST} (with one left to others)"
    );
    assert!(starts.len() < cas.len(), "{context}: nothing was coalesced");
    // The log and the metrics say exactly what systemd did.
    let restarted: Vec<&LogEntry> = logged
        .iter()
        .filter(|e| {
            e.message
                .starts_with("restarted containerd.service; it is active again")
        })
        .collect();
    assert_eq!(
        restarted.len(),
        starts.len(),
        "{context}: the log's restarts"
    );
    let deferred = logged
        .iter()
        .filter(|e| {
            e.message
                .starts_with("restart of containerd.service deferred")
        })
        .count();
    assert!(deferred > 0, "{context}: no restart was deferred");
    let counts = restart_counts(port);
    assert_eq!(
        counts,
        BTreeMap::from([("done".to_owned(), starts.len() as f64)]),
        "{context}: the metric's results"
    );
    println!("{context}: {deferred} deferrals, metrics {counts:?}");
    // The last CA works for pulls.
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&cas[9], storage.path(), "storm/hello");
    assert_pull_ok(&node, &reg.image, &context);
}

/// Restarts containerd until systemd refuses (start-limit-hit), as a node
/// in trouble or an impatient operator would.
fn drive_containerd_into_its_start_limit(node: &Node) {
    node.exec_ok(&["systemctl", "reset-failed", CONTAINERD_UNIT]);
    // BURST + 1 restarts reach the limit; a start that fails on its own
    // in the storm (`Result=exit-code`, say a socket not yet released)
    // counts too, so a few more tries are allowed, never an endless loop.
    for _ in 0..=(3 * BURST) {
        let _ = node.systemctl(&["restart", CONTAINERD_UNIT]);
        if node.unit_property(CONTAINERD_UNIT, "Result") == "start-limit-hit" {
            return;
        }
    }
    assert_eq!(
        node.unit_property(CONTAINERD_UNIT, "Result"),
        "start-limit-hit",
        "containerd did not reach its start limit"
    );
}

#[test]
fn containerd_already_at_its_start_limit_is_reported_failed_and_never_restarted() {
    let node = boot("already-hit");
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let (agent, port) = agent_with_metrics(&node, &secret);
    drive_containerd_into_its_start_limit(&node);
    let t0 = now_us();
    let skip = agent.logs().len();
    let ca = TestCa::new("nca already-hit CA");
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let context = "containerd at its start limit before the restart";
    let needles = [
        "containerd.service is failed (Result=start-limit-hit)",
        "leaves it alone",
        "systemctl reset-failed",
    ];
    let ok = wait_until_or_timeout(TIMEOUT, || {
        errors_naming(&since(&agent, skip), &needles).len() >= 2
    });
    let logged = since(&agent, skip);
    assert!(
        ok,
        "{context}: not reported as failed (twice); log:\n{}",
        render_tail(&logged, 30)
    );
    println!("{context}: {}", errors_naming(&logged, &needles)[0].message);
    observe::assert_trusted(&node, &ca, context);
    assert!(
        !logged.iter().any(|e| e.message.starts_with("restarted ")
            || e.field("restarted").is_some_and(|r| !r.is_empty())),
        "{context}: reported as restarted; log:\n{}",
        render_tail(&logged, 30)
    );
    let counts = restart_counts(port);
    assert!(
        counts.get("done").copied().unwrap_or(0.0) == 0.0,
        "{context}: the metric says restarted: {counts:?}"
    );
    assert!(
        containerd_start_times(&node, t0).is_empty(),
        "{context}: the agent started containerd"
    );
    assert_eq!(node.unit_property(CONTAINERD_UNIT, "ActiveState"), "failed");

    // The operator brings it back: it reads the new bundle, and the agent
    // does not restart it a second time.
    let skip = agent.logs().len();
    // Taken before the operator's start, which is then the one start since
    // (its journal time may trail `systemctl start`'s return).
    let t1 = now_us();
    node.exec_ok(&["systemctl", "reset-failed", CONTAINERD_UNIT]);
    node.exec_ok(&["systemctl", "start", CONTAINERD_UNIT]);
    wait_until(TIMEOUT, "the agent sees containerd back", || {
        !restart_pending(&node)
    });
    let logged = since(&agent, skip);
    assert!(
        logged
            .iter()
            .any(|e| e.message.contains("already uses the new CAs")),
        "{context}: log after the operator's start:\n{}",
        render_tail(&logged, 20)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        containerd_start_times(&node, t1).len(),
        1,
        "{context}: restarted again after the operator's start"
    );
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "already-hit/hello");
    assert_pull_ok(&node, &reg.image, context);
}

#[test]
fn a_restart_that_drives_containerd_into_its_start_limit_is_recovered_at_once_by_a_reset() {
    let node = boot("recover");
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let (agent, port) = agent_with_metrics(&node, &secret);
    // Someone else used up the window: five starts, the agent's is the sixth.
    node.exec_ok(&["systemctl", "reset-failed", CONTAINERD_UNIT]);
    for _ in 0..BURST {
        node.restart(CONTAINERD_UNIT);
    }
    let t0 = now_us();
    let skip = agent.logs().len();
    let ca = TestCa::new("nca recover CA");
    agent
        .secret()
        .publish(&secret_data(&[("ca1.crt", ca.cert_pem().as_bytes())]));
    let context = "the agent's restart at containerd's start limit";
    let recovered = wait_until_or_timeout(TIMEOUT, || {
        since(&agent, skip).iter().any(|e| {
            e.message
                .starts_with("started containerd.service again after it hit its start limit")
        })
    });
    let logged = since(&agent, skip);
    assert!(
        recovered,
        "{context}: not recovered; log:\n{}",
        render_tail(&logged, 30)
    );
    let hit = errors_naming(&logged, &["hit its start limit", "starts it again at"]);
    assert!(
        !hit.is_empty(),
        "{context}: the start-limit-hit was not reported; log:\n{}",
        render_tail(&logged, 30)
    );
    println!("{context}: {}", hit[0].message);
    assert!(
        start_limit_hit_since(&node, t0),
        "{context}: systemd never refused a start"
    );
    assert!(
        node.is_active(CONTAINERD_UNIT),
        "{context}: containerd is not active"
    );
    assert!(
        !logged
            .iter()
            .any(|e| e.message.starts_with("restarted containerd.service")),
        "{context}: a restart was reported while containerd was down"
    );
    let counts = restart_counts(port);
    assert_eq!(
        counts,
        BTreeMap::from([
            ("done".to_owned(), 1.0),
            ("start-limit-hit".to_owned(), 1.0)
        ]),
        "{context}: the metric's results"
    );
    // Recovered by ResetFailedUnit and one start, without waiting out
    // systemd's window (the reset clears its start counter).
    let starts = containerd_start_times(&node, t0);
    assert_eq!(
        starts.len(),
        1,
        "{context}: containerd starts since the publish: {starts:?}"
    );
    let storage = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&ca, storage.path(), "recover/hello");
    assert_pull_ok(&node, &reg.image, context);
    println!("{context}: metrics {counts:?}");
}

/// Two writers fighting over the Secret: a change every pass for 8 changes,
/// with the default restart spacing (`restart-min-spacing-seconds` 2). The
/// agent's restarts of containerd are spaced (2 s after the first, then
/// doubling), changes in between share one restart, and the last set of CAs
/// is in effect at the end with nothing pending.
#[test]
fn changes_faster_than_the_restart_spacing_share_restarts() {
    let node = boot("spacing");
    let work = workdir();
    let secret = work.path().join("custom-ca-trust-secret");
    let agent = PodModeAgent::start(
        &node,
        &secret,
        &[
            "--restart-min-spacing-seconds",
            "2",
            "--metrics-address",
            "off",
        ],
    );
    let t0 = now_us();
    let cas: Vec<TestCa> = (0..8)
        .map(|i| TestCa::new(&format!("nca spacing CA {i}")))
        .collect();
    for (i, ca) in cas.iter().enumerate() {
        let key = format!("ca{i}.crt");
        change_and_wait(&agent, || {
            agent
                .secret()
                .publish(&secret_data(&[(key.as_str(), ca.cert_pem().as_bytes())]));
        });
    }
    let settled = wait_until_or_timeout(TIMEOUT, || !restart_pending(&node));
    let starts = containerd_start_times(&node, t0);
    let context = format!("8 changes ({} containerd starts)", starts.len());
    assert!(
        settled,
        "{context}: a restart is still pending:\n{}",
        render_tail(&agent.logs(), 30)
    );
    assert!(starts.len() < cas.len(), "{context}: nothing was coalesced");
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= 1_900_000,
            "{context}: two restarts {} ms apart: {starts:?}",
            (pair[1] - pair[0]) / 1000
        );
    }
    assert!(
        agent
            .logs()
            .iter()
            .any(|e| e.message.contains("restarts of a unit are spaced")),
        "{context}: no spaced restart was logged"
    );
    assert!(
        observe_bundle_has(&node, &cas[7]),
        "{context}: the last CA is not in effect"
    );
    assert!(
        node.is_active(CONTAINERD_UNIT),
        "{context}: containerd is not active"
    );
}

fn observe_bundle_has(node: &Node, ca: &TestCa) -> bool {
    integration_tests::observe::bundle_has(node, ca.cert())
}
