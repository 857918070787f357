//! The escaping rule of every operator-facing text sink: any text in, and
//! what comes out holds no control character, bidi mark or line break.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::text::{escape, is_plain_ascii, needs_escape};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let escaped = escape(&text);
    assert!(!escaped.chars().any(needs_escape), "{escaped:?}");
    assert!(!escaped.contains('\n') && !escaped.contains('\r'));
    if is_plain_ascii(&text) {
        assert_eq!(escaped, text, "plain ASCII is left alone");
    }
});
