//! `fleet --timeout DURATION` (operator input): any bytes, never a panic;
//! what parses is more than zero and at most a week.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::fleet::duration::{parse_timeout, MAX_TIMEOUT};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_timeout(text) {
        assert!(!d.is_zero() && d <= MAX_TIMEOUT, "{text:?} gave {d:?}");
    }
});
