//! The daemon status file `status` reads (written by a daemon, possibly of
//! another version, possibly damaged): any bytes, never a panic; what parses
//! writes back to what parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::ops::daemon_status::parse_daemon_status;

fuzz_target!(|data: &[u8]| {
    if let Ok(status) = parse_daemon_status(data) {
        let again = serde_json::to_vec(&status).expect("a parsed status serializes");
        assert_eq!(parse_daemon_status(&again).ok(), Some(status));
    }
});
