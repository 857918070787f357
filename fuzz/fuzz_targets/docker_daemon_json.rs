//! Docker's /etc/docker/daemon.json (operator input on the node): any bytes
//! judged for live-restore as the trust job judges them before a restart
//! of docker.service.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::node::docker::{parse_live_restore, LiveRestore};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let LiveRestore::Off(why) = parse_live_restore(&text) {
        assert!(why.contains("daemon.json"));
    }
});
