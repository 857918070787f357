//! The README's `bench` command (run by `integration-tests/scripts/bench.sh`):
//! latency of a CA update on a real node, no-op restarts, the idle footprint
//! of the agent, renewal spread over a fleet, and the release binary's size.
//!
//! Flags: `--runs N` (latency runs, default 50), `--idle-minutes M`
//! (default 1), `--binary PATH` (the binary whose size is reported; default
//! the agent binary under test).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark: a failed step must stop loudly"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration_tests::agent::{agent_binary, Agent, LogEntry, Mode};
use integration_tests::pki::TestCa;
use integration_tests::{cri_try_pull, cri_try_remove_image, observe, preflight, Node, Registry};
use node_cert_agent::kubelet::renewal::{deadline, renewal_fraction};

/// Pause after each containerd restart, to stay within systemd's default
/// start rate limit of the unit (5 starts per 10 s).
const START_SPACING: Duration = Duration::from_millis(2100);

struct Args {
    runs: usize,
    idle_minutes: f64,
    binary: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        runs: 50,
        idle_minutes: 1.0,
        binary: agent_binary(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{f} needs a value"));
        match f.as_str() {
            "--runs" => a.runs = val().parse().expect("--runs N"),
            "--idle-minutes" => a.idle_minutes = val().parse().expect("--idle-minutes M"),
            "--binary" => a.binary = PathBuf::from(val()),
            other => panic!("unknown flag {other}; flags: --runs N --idle-minutes M --binary PATH"),
        }
    }
    a
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row(name: &str, mut v: Vec<f64>, goal: &str) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "| {name} | {:.0} | {:.0} | {:.0} | {goal} |",
        percentile(&v, 50.0),
        percentile(&v, 95.0),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

fn field_ms(e: &LogEntry, name: &str) -> f64 {
    e.field(name)
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("pass line without {name}: {:?}", e.raw))
}

fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

/// Sum over all threads of `/proc/<pid>/task/*/status` counters, plus RSS
/// and CPU time (utime + stime, ms) of the process.
struct Footprint {
    rss_kib: u64,
    /// Anonymous memory (heap, stacks): the part not backed by the binary
    /// and its libraries' files.
    anon_kib: u64,
    cpu_ms: f64,
    ctxt: u64,
    threads: usize,
    /// Context switches per thread, by `tid comm`.
    per_thread: std::collections::BTreeMap<String, u64>,
}

fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (rss_kib, anon_kib) = (kib("VmRSS:"), kib("RssAnon:"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let clk = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let mut ctxt = 0;
    let mut threads = 0;
    let mut per_thread = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap();
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        threads += 1;
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let name = format!("{} {}", t.file_name().to_string_lossy(), comm.trim());
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                let n = v.trim().parse::<u64>().unwrap_or(0);
                ctxt += n;
                *per_thread.entry(name.clone()).or_insert(0) += n;
            }
        }
    }
    Footprint {
        rss_kib,
        anon_kib,
        cpu_ms: ticks as f64 * 1000.0 / clk,
        ctxt,
        threads,
        per_thread,
    }
}

fn fleet() -> (usize, usize) {
    const NODES: usize = 5_000;
    const LIFETIME: i64 = 365 * 86_400;
    let t0: i64 = 1_800_000_000;
    let mut ours: BTreeMap<i64, usize> = BTreeMap::new();
    let mut naive: BTreeMap<i64, usize> = BTreeMap::new();
    for i in 0..NODES {
        let name = format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250);
        // All joined within the same minute.
        let nb = t0 + (i as i64 * 60) / NODES as i64;
        let na = nb + LIFETIME;
        *ours
            .entry(deadline(nb, na, renewal_fraction(&name)) / 60)
            .or_default() += 1;
        *naive.entry(deadline(nb, na, 0.8) / 60).or_default() += 1;
    }
    (
        ours.values().copied().max().unwrap(),
        naive.values().copied().max().unwrap(),
    )
}

fn main() {
    let args = args();
    preflight();
    let mut table = vec![
        "| measure | p50 | p95 | max | goal |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];

    // --- Latency on a real node -------------------------------------------
    let node = Node::boot("bench");
    let mut agent = Agent::start(&node, Mode::Pod);
    let ca = TestCa::new("nca bench CA");
    let storage = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue_server_cert(&["registry.test"]);
    let registry = Registry::start(&cert, &key, storage.path());
    registry.push_test_image(&ca.cert_pem(), "bench/hello", "v1");
    let image = registry.reference("bench/hello:v1");
    let with_ca = data(&[("ca1.crt", ca.cert_pem().as_bytes())]);
    let without = data(&[]);
    let (mut bundle_ms, mut pull_ms) = (Vec::new(), Vec::new());
    let (mut agent_ms, mut refresh_ms, mut restart_ms) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let _ = cri_try_remove_image(&node, &image);
        let passes = agent.passes();
        let swapped = agent.secret().publish(&with_ca);
        while !observe::bundle_has(&node, ca.cert()) {
            assert!(
                swapped.elapsed() < Duration::from_secs(30),
                "run {run}: CA not in the bundle"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        bundle_ms.push(swapped.elapsed().as_secs_f64() * 1000.0);
        loop {
            if cri_try_pull(&node, &image).is_ok() {
                break;
            }
            assert!(
                swapped.elapsed() < Duration::from_secs(30),
                "run {run}: pull never worked"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        pull_ms.push(swapped.elapsed().as_secs_f64() * 1000.0);
        agent.wait_for_passes(passes + 1);
        let pass = agent
            .logs()
            .into_iter()
            .rev()
            .find(|e| e.message.starts_with("reconciled: trust set changed"))
            .expect("a changed pass");
        agent_ms.push(field_ms(&pass, "agent_ms"));
        refresh_ms.push(field_ms(&pass, "refresh_ms"));
        restart_ms.push(field_ms(&pass, "restart_ms"));
        // containerd's unit allows 5 starts in 10 s (systemd's default start
        // limit); two restarts per run stay under it with this spacing.
        std::thread::sleep(START_SPACING);
        // Back to no CA, for the next run.
        agent.publish_and_wait(&without);
        std::thread::sleep(START_SPACING);
        eprint!("\rlatency run {}/{}", run + 1, args.runs);
    }
    eprintln!();
    table.push(row("..data swap -> CA in node bundle (ms)", bundle_ms, ""));
    let pull_p95 = {
        let mut v = pull_ms.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 95.0)
    };
    table.push(row(
        "..data swap -> CRI pull succeeds (ms)",
        pull_ms,
        &format!(
            "p95 <= 1500 ({})",
            if pull_p95 <= 1500.0 { "met" } else { "MISSED" }
        ),
    ));
    let agent_p95 = {
        let mut v = agent_ms.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 95.0)
    };
    table.push(row(
        "agent's own time per pass (agent_ms)",
        agent_ms,
        &format!(
            "p95 <= 150 ({})",
            if agent_p95 <= 150.0 { "met" } else { "MISSED" }
        ),
    ));
    table.push(row("refresh tool (refresh_ms)", refresh_ms, ""));
    table.push(row("containerd restart (restart_ms)", restart_ms, ""));

    // --- No-ops -------------------------------------------------------------
    agent.publish_and_wait(&with_ca);
    let starts = observe::containerd_starts(&node);
    for _ in 0..20 {
        agent.publish_and_wait(&with_ca);
    }
    for _ in 0..5 {
        agent.restart();
    }
    let noop_restarts = observe::containerd_starts(&node) - starts;

    // --- Idle footprint -----------------------------------------------------
    let Agent::Pod(pod) = &agent else {
        unreachable!("started in pod mode")
    };
    let pid = pod.pid().expect("the agent runs");
    // Settle first: tokio's blocking-pool threads (file reads of the last
    // pass) linger 10 s after their last task before they exit.
    std::thread::sleep(Duration::from_secs(15));
    let before = footprint(pid);
    let idle = Duration::from_secs_f64(args.idle_minutes * 60.0);
    let t = Instant::now();
    std::thread::sleep(idle);
    let after = footprint(pid);
    let secs = t.elapsed().as_secs_f64();
    let cpu_ms = after.cpu_ms - before.cpu_ms;
    let ctxt = after.ctxt - before.ctxt;
    let cpu_per_hour = cpu_ms * 3600.0 / secs;
    drop(agent);
    drop(registry);

    // --- Fleet and size -----------------------------------------------------
    let (peak, naive_peak) = fleet();
    let size = std::fs::metadata(&args.binary)
        .unwrap_or_else(|e| panic!("{}: {e}", args.binary.display()))
        .len();

    println!(
        "\nnode-cert-agent bench ({} latency runs, agent {})\n",
        args.runs,
        agent_binary().display()
    );
    for l in &table {
        println!("{l}");
    }
    println!();
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| containerd restarts after 20 identical republishes + 5 agent restarts | {noop_restarts} | 0 ({}) |",
        if noop_restarts == 0 { "met" } else { "MISSED" }
    );
    println!(
        "| idle RSS | {:.1} MiB (anonymous {:.1} MiB) | <= 8 MiB ({}) |",
        after.rss_kib as f64 / 1024.0,
        after.anon_kib as f64 / 1024.0,
        if after.rss_kib <= 8 * 1024 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "| idle CPU over {:.1} min | {cpu_ms:.0} ms = {cpu_per_hour:.0} ms/hour | <= 50 ms/hour ({}) |",
        secs / 60.0,
        if cpu_per_hour <= 50.0 { "met" } else { "MISSED" }
    );
    println!(
        "| idle context switches over {:.1} min ({} threads) | {ctxt} = {:.1}/min | no periodic polling |",
        secs / 60.0,
        after.threads,
        ctxt as f64 * 60.0 / secs
    );
    let threads: Vec<String> = after
        .per_thread
        .iter()
        .map(|(t, n)| {
            let was = before.per_thread.get(t).copied();
            match was {
                Some(w) => format!("{t}: {}", n - w),
                None => format!("{t}: {n} (new thread)"),
            }
        })
        .collect();
    println!(
        "| idle context switches per thread | {} | |",
        threads.join("; ")
    );
    println!(
        "| fleet: peak CSRs/minute, 5,000 nodes joined in one minute, 1-year certs | {peak} vs {naive_peak} naive (1/{:.0}) | <= 1/50 of naive ({}) |",
        naive_peak as f64 / peak as f64,
        if peak * 50 <= naive_peak { "met" } else { "MISSED" }
    );
    println!(
        "| binary size ({}) | {:.1} MB ({size} bytes) | <= 15 MB ({}) |",
        args.binary.display(),
        size as f64 / 1e6,
        if size <= 15_000_000 { "met" } else { "MISSED" }
    );
}
