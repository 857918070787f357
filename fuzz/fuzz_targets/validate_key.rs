//! The PEM/bundle validator: any bytes as a Secret key's value.
#![no_main]
use libfuzzer_sys::fuzz_target;

// A fixed clock, so a crash reproduces whatever the date.
const NOW: i64 = 1_795_000_000;

fuzz_target!(|data: &[u8]| {
    let verdict = node_cert_agent::trust::validate::validate_key("fuzz.crt", data, NOW);
    // Every finding must render (operators read it) and name the key.
    for f in &verdict.findings {
        assert!(f.to_string().contains("fuzz.crt"));
    }
    assert!(!(verdict.rejected && !verdict.certs.is_empty()));
});
