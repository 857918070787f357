//! RFC 3339 times, as a RenewRevocation's `notBefore` and the state files
//! carry them: any bytes, never a panic; what parses formats back to the
//! same instant.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::time::{kubeadm_date, parse_rfc3339, rfc3339};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = parse_rfc3339(text) {
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{text:?}");
        let _ = kubeadm_date(t);
    }
});
