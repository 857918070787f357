//! Crash consistency on a real node: the pod-mode agent is SIGKILLed at
//! random points during CA updates (the anchor writes, the refresh tool run,
//! the containerd restart) and during kubelet certificate renewals, and after
//! every kill and again after every restart the node's invariants are checked.
//!
//! `NCA_CRASH_UPDATES` (default 60) sets the number of CA updates, and
//! `NCA_CRASH_RENEWALS` (default 20) the number of killed renewals; the
//! long run of docs/benchmarks.md uses 500. `NCA_CRASH_SEED` replays a run (the seed is
//! printed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::agent::{agent_binary, render_tail, LogEntry, PASS_PREFIX, PASS_TIMEOUT};
use integration_tests::kubelet_node::{self, PKI};
use integration_tests::observe::{self, DEBIAN_BUNDLE, STATE_FILE};
use integration_tests::pki::{sha256_fingerprint, TestCa};
use integration_tests::{preflight, Node, SecretVolume};
use nca_test_apiserver::ApiServer;
use openssl::x509::X509;

/// A small deterministic PRNG (xorshift64*), seeded from the clock or
/// `NCA_CRASH_SEED`, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("NCA_CRASH_SEED")
            .ok()
            .map(|s| s.parse::<u64>().expect("NCA_CRASH_SEED must be a u64"))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("crash: seed {seed} (NCA_CRASH_SEED={seed} replays it)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a count: {e}")),
        Err(_) => default,
    }
}

/// The agent as a DaemonSet pod runs it, started and SIGKILLed by the test.
struct KillableAgent {
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl KillableAgent {
    fn new(node: &Node, secret: &Path, extra: &[&str]) -> KillableAgent {
        let dir = tempfile::Builder::new()
            .prefix("nca-crash-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("agent.log");
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--host-root".into(),
            node.root().into_os_string(),
            "--ca-dir".into(),
            secret.as_os_str().to_owned(),
            "--log-target".into(),
            "stdout".into(),
            "--log-format".into(),
            "json".into(),
            "--metrics-address".into(),
            "off".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        KillableAgent {
            args,
            log,
            child: None,
            _dir: dir,
        }
    }

    fn spawn(&mut self) {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let err = out.try_clone().unwrap();
        self.child = Some(
            Command::new(agent_binary())
                .args(&self.args)
                .env_remove("NCA_LOG_TARGET")
                .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap(),
        );
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "the agent exited by itself ({status}) before the kill\n{}",
                    render_tail(&self.logs(), 30)
                );
            }
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn logs(&self) -> Vec<LogEntry> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(log_entry)
            .collect()
    }
}

impl Drop for KillableAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- agent log (last 40) ---\n{}",
                render_tail(&self.logs(), 40)
            );
        }
        self.sigkill();
    }
}

/// One line of the agent's JSON log (or a raw line of its stderr).
fn log_entry(line: &str) -> LogEntry {
    let raw = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::Value::String(line.to_owned()));
    let get = |k: &str| {
        raw.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    LogEntry {
        message: get("message").unwrap_or_else(|| line.to_owned()),
        error: get("level").is_some_and(|l| l.eq_ignore_ascii_case("error")),
        raw: raw.clone(),
    }
}

/// Entries of the log after the first `skip`.
fn since(agent: &KillableAgent, skip: usize) -> Vec<LogEntry> {
    let all = agent.logs();
    all[skip.min(all.len())..].to_vec()
}

/// Starts the agent and waits until its first pass without an error; returns
/// false (after logging why) when it did not converge in [`PASS_TIMEOUT`].
fn restart_and_converge(agent: &mut KillableAgent, violations: &mut Violations) -> bool {
    let skip = agent.logs().len();
    agent.spawn();
    let start = Instant::now();
    loop {
        let new = since(agent, skip);
        if let Some(pass) = new.iter().position(|e| e.message.starts_with(PASS_PREFIX)) {
            let errors: Vec<_> = new[..=pass].iter().filter(|e| e.error).collect();
            if !errors.is_empty() {
                violations.add(
                    "restart-pass-error",
                    format!("first pass after the restart logged errors: {errors:?}"),
                );
            }
            return true;
        }
        if start.elapsed() > PASS_TIMEOUT {
            violations.add(
                "no-convergence",
                format!(
                    "no pass within {PASS_TIMEOUT:?} of the restart\n{}",
                    render_tail(&new, 30)
                ),
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Default)]
struct Violations {
    by_kind: BTreeMap<&'static str, usize>,
    first: Vec<String>,
}

impl Violations {
    fn add(&mut self, kind: &'static str, detail: String) {
        *self.by_kind.entry(kind).or_default() += 1;
        if self.first.len() < 10 {
            eprintln!("crash: violation {kind}: {detail}");
            self.first.push(format!("{kind}: {detail}"));
        }
    }

    fn total(&self) -> usize {
        self.by_kind.values().sum()
    }
}

/// Checks the owned anchors: each parses as exactly one certificate named
/// after its fingerprint. Returns the fingerprints and the temp files seen.
fn check_anchors(node: &Node, v: &mut Violations) -> (BTreeSet<String>, Vec<String>) {
    let seen = observe::agent_anchors(node);
    for p in seen.problems {
        v.add(p.kind, p.detail);
    }
    (seen.fingerprints, seen.temps)
}

/// The bundle's certificates split into (distro count, pool fingerprints).
fn bundle_split(node: &Node, pool: &BTreeSet<String>) -> (usize, BTreeSet<String>) {
    let fps = observe::bundle_certs(node, DEBIAN_BUNDLE)
        .iter()
        .map(sha256_fingerprint)
        .collect::<Vec<_>>();
    let ours: BTreeSet<String> = fps.iter().filter(|f| pool.contains(*f)).cloned().collect();
    (
        fps.len() - fps.iter().filter(|f| pool.contains(*f)).count(),
        ours,
    )
}

fn check_state(node: &Node, v: &mut Violations) {
    let path = node.host_path(STATE_FILE);
    match std::fs::read(&path) {
        Ok(b) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&b) {
                v.add("state-unparsable", format!("{e}"));
            }
        }
        Err(e) => v.add("state-missing", format!("{}: {e}", path.display())),
    }
}

/// How many of the agent's refresh-tool units are still loaded and active
/// (a SIGKILL of the agent does not stop them: they are the node's units).
fn refresh_units_in_flight(node: &Node) -> usize {
    let out = node.exec(&[
        "systemctl",
        "list-units",
        "--no-legend",
        "--plain",
        "--state=activating,active",
        "node-cert-agent-refresh-*",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn sigkill_during_ca_updates_keeps_the_trust_store_consistent() {
    preflight();
    let updates = env_count("NCA_CRASH_UPDATES", 60);
    let mut rng = Rng::from_env();
    let node = Node::boot("crash-ca");
    // The test restarts containerd far faster than any real node would (a kill
    // per update); systemd's default start limit (5 in 10 s) would fail those
    // restart jobs. That is a property of the test's pace, not of the agent.
    node.write_file(
        "/etc/systemd/system/containerd.service.d/nca-crash-test.conf",
        b"[Unit]\nStartLimitIntervalSec=0\n",
        0o644,
    );
    node.systemctl(&["daemon-reload"]);
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_path = secret_dir.path().join("custom-ca-trust-secret");
    let secret = SecretVolume::new(&secret_path);
    let cas: Vec<TestCa> = (0..4)
        .map(|i| TestCa::new(&format!("nca crash CA {i}")))
        .collect();
    let pool: BTreeSet<String> = cas.iter().map(|c| sha256_fingerprint(c.cert())).collect();
    let distro = bundle_split(&node, &pool).0;
    assert!(
        distro > 50,
        "the node's bundle has only {distro} distro CAs"
    );

    let mut agent = KillableAgent::new(&node, &secret_path, &[]);
    let mut v = Violations::default();
    restart_and_converge(&mut agent, &mut v);

    let keys = ["ca1.crt", "ca2.crt", "ca3.crt"];
    let mut previous: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut temps_after_kill = 0usize;
    let mut kills_during_refresh = 0usize;
    let started = Instant::now();
    for i in 0..updates {
        // A new content: 1-3 keys, each holding one CA of the pool (adds,
        // removes and replaces keys from one update to the next).
        let data = loop {
            let n = 1 + rng.below(3) as usize;
            let d: BTreeMap<String, Vec<u8>> = (0..n)
                .map(|k| {
                    let ca = &cas[rng.below(cas.len() as u64) as usize];
                    (keys[k].to_owned(), ca.cert_pem().into_bytes())
                })
                .collect();
            if d != previous {
                break d;
            }
        };
        let desired: BTreeSet<String> = data
            .values()
            .map(|pem| sha256_fingerprint(&X509::from_pem(pem).unwrap()))
            .collect();
        previous = data.clone();
        secret.publish(&data);
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        agent.sigkill();
        if refresh_units_in_flight(&node) > 0 {
            kills_during_refresh += 1;
        }

        // After the kill: anchors parse, state parses, distro CAs intact.
        let (_, temps) = check_anchors(&node, &mut v);
        temps_after_kill += temps.len();
        check_state(&node, &mut v);
        let (d, _) = bundle_split(&node, &pool);
        if d != distro {
            v.add(
                "distro-cas-lost",
                format!("update {i}: {d} distro CAs, {distro} at the start"),
            );
        }

        // After the restart converged: exactly the desired CAs, no temp files.
        if !restart_and_converge(&mut agent, &mut v) {
            continue;
        }
        let (anchors, temps) = check_anchors(&node, &mut v);
        if !temps.is_empty() {
            v.add(
                "temp-left",
                format!("update {i}: {temps:?} after the restart"),
            );
        }
        if anchors != desired {
            v.add(
                "anchors-not-desired",
                format!("update {i}: anchors {anchors:?}, desired {desired:?}"),
            );
        }
        check_state(&node, &mut v);
        let (d, ours) = bundle_split(&node, &pool);
        if d != distro {
            v.add(
                "distro-cas-lost",
                format!("update {i}: {d} distro CAs after the restart, {distro} at the start"),
            );
        }
        if ours != desired {
            v.add(
                "bundle-not-desired",
                format!("update {i}: bundle has {ours:?}, desired {desired:?}"),
            );
        }
    }
    println!(
        "crash (CA): {updates} updates with a SIGKILL each in {:.0?}; kills with the refresh tool still running: {kills_during_refresh}; temp files seen right after kills: {temps_after_kill}; violations: {} {:?}",
        started.elapsed(),
        v.total(),
        v.by_kind
    );
    assert_eq!(v.total(), 0, "violations: {:?}\n{:#?}", v.by_kind, v.first);
}

// ---------------------------------------------------------------------------
// Kubelet renewals killed at random points
// ---------------------------------------------------------------------------

/// Checks `kubelet-client-current.pem`: it must resolve to a file whose
/// certificate matches its key.
fn check_client_link(node: &Node, v: &mut Violations, when: &str) {
    if let Err(p) = kubelet_node::client_link(node) {
        v.add(p.kind, format!("{when}: {}", p.detail));
    }
}

fn renew(node: &Node, cfg: &Path, force: bool) -> Command {
    let mut c = Command::new(agent_binary());
    c.arg("renew");
    if force {
        c.arg("--force");
    }
    c.args(["--log-target", "stdout", "--config"])
        .arg(cfg)
        .arg("--host-root")
        .arg(node.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn sigkill_during_kubelet_renewals_never_breaks_the_current_link() {
    preflight();
    let kills = env_count("NCA_CRASH_RENEWALS", 20);
    let mut rng = Rng::from_env();
    let server = ApiServer::start();
    server.add_bootstrap_token("abcdef", "0123456789abcdef");
    server.add_node("n1");
    let node = Node::boot("crash-kubelet");
    node.write_file(
        "/etc/systemd/system/kubelet.service",
        b"[Unit]\nDescription=stand-in kubelet\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    node.systemctl(&["daemon-reload"]);
    node.exec_ok(&["systemctl", "start", "kubelet.service"]);
    node.write_file(
        "/var/lib/kubelet/bootstrap-kubeconfig",
        server
            .bootstrap_kubeconfig("abcdef", "0123456789abcdef")
            .as_bytes(),
        0o600,
    );
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = cfgdir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "kubelet:\n  mode: on\n  node-name: n1\n  csr-timeout-seconds: 60\n",
    )
    .unwrap();

    // The first certificate, uninterrupted; then how long one renewal takes.
    let out = renew(&node, &cfg, true).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let t = Instant::now();
    let out = renew(&node, &cfg, true).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let one = t.elapsed();
    println!("crash (kubelet): one `renew --force` takes {one:?}");

    let mut v = Violations::default();
    let mut temps_after_kill = 0usize;
    let mut completed_before_kill = 0usize;
    let started = Instant::now();
    for i in 0..kills {
        let mut child = renew(&node, &cfg, true).spawn().unwrap();
        // Random points over a whole renewal (and a bit beyond).
        let max = (one.as_millis() as u64 * 12 / 10).max(50);
        std::thread::sleep(Duration::from_millis(rng.below(max)));
        if child.try_wait().unwrap().is_some() {
            completed_before_kill += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        check_client_link(&node, &mut v, &format!("kill {i}"));
        temps_after_kill += observe::temp_files(&node, PKI).len();

        // The "restart": a renewal run to completion.
        let out = renew(&node, &cfg, true).output().unwrap();
        if !out.status.success() {
            v.add(
                "renew-after-kill-failed",
                format!(
                    "kill {i}: {}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        check_client_link(&node, &mut v, &format!("after kill {i}"));
        let temps = observe::temp_files(&node, PKI);
        if !temps.is_empty() {
            v.add("temp-left", format!("after kill {i}: {temps:?} in {PKI}"));
        }
    }
    println!(
        "crash (kubelet): {kills} killed renewals ({completed_before_kill} had finished before the kill) in {:.0?}; temp files right after kills: {temps_after_kill}; violations: {} {:?}",
        started.elapsed(),
        v.total(),
        v.by_kind
    );
    assert_eq!(v.total(), 0, "violations: {:?}\n{:#?}", v.by_kind, v.first);
}
