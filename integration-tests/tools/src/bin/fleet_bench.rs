//! The fleet benchmark of docs/benchmarks.md ("Fleet listing"): the whole listing of 5,000 Nodes by
//! `node-cert-agent fleet` (every page, the Secret, the judgement and the
//! rendering) against the test API server, wall time per run in ms. Needs no
//! root and no node:
//!
//! `cargo build --release -p node-cert-agent && NCA_AGENT_BIN=target/release/node-cert-agent cargo run --release -p integration-tests --bin fleet_bench -- --runs 10`
//!
//! Flags: `--runs N` (default 10), `--nodes N` (default 5000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark: a failed step must stop loudly"
)]

use std::time::Instant;

use integration_tests::fleet::{Fleet, Mix};

fn main() {
    let (mut runs, mut nodes) = (10usize, 5000usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => runs = val().parse().expect("--runs N"),
            "--nodes" => nodes = val().parse().expect("--nodes N"),
            other => panic!("unknown flag {other}; flags: --runs N --nodes N"),
        }
    }
    // The mix of the tests: 80 % converged, 12 % behind, 6 % invalid input,
    // 2 % without the agent.
    let fleet = Fleet::new(nodes, |i| match i * 100 / nodes {
        0..80 => Mix::Converged,
        80..92 => Mix::Behind,
        92..98 => Mix::InputInvalid,
        _ => Mix::NoAgent,
    });
    for (format, args) in [("table", &[][..]), ("json", &["-o", "json"][..])] {
        let mut ms = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let o = fleet.run(args);
            ms.push(start.elapsed().as_millis());
            assert_eq!(
                o.status.code(),
                Some(1),
                "fleet failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(o.stdout.len() > nodes * 50, "a row per node");
        }
        ms.sort_unstable();
        println!(
            "fleet -o {format}, {nodes} Nodes, {runs} runs: median {} ms, min {} ms, max {} ms",
            ms[ms.len() / 2],
            ms[0],
            ms[ms.len() - 1]
        );
    }
}
