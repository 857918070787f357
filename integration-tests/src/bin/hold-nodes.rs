//! A test process that dies without tearing anything down, for
//! `tests/cleanup.rs`: boots one node and starts one registry (each
//! recorded in this process's run, as every test's are, see
//! `integration_tests::run`), prints one JSON line naming them, and then
//! sleeps until it is killed. A SIGKILL leaves both running, as an aborted
//! test run does; `scripts/cleanup-nodes.sh` must then stop exactly those.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helper: a failed step must stop loudly"
)]

use std::io::Write;
use std::time::Duration;

use integration_tests::pki::TestCa;
use integration_tests::{preflight, run, Node, Registry};

fn main() {
    preflight();
    let node = Node::boot("hold");
    let ca = TestCa::new("nca hold-nodes CA");
    let (cert, key) = ca.issue_server_cert(&["registry.test"]);
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(&cert, &key, storage.path());
    let line = serde_json::json!({
        "runDir": run::run_dir(),
        "runId": run::run_id(),
        "node": node.name(),
        "nodeInit": node.pid(),
        "nodeDir": node.dir(),
        "registry": registry.pid(),
        "registryLog": registry.log_path(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
    drop(out);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
