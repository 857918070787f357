//! The CA Secret as the API server sends it: any bytes as a watch event's
//! object (JSON), decoded as kube-rs does, then through the daemon's view
//! and validation, and the Secret reference as `--ca-secret` parses it.
//! Never a panic.
#![no_main]
use k8s_openapi::api::core::v1::Secret;
use libfuzzer_sys::fuzz_target;
use node_cert_agent::config::SecretRef;
use node_cert_agent::k8s::source::SourceState;
use node_cert_agent::trust::api_secret::{input_of, view_of};

// A fixed clock, so a crash reproduces whatever the date.
const NOW: i64 = 1_795_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SecretRef::parse(text);
    }
    let Ok(secret) = serde_json::from_slice::<Secret>(data) else {
        return;
    };
    let r = SecretRef {
        namespace: "kube-system".into(),
        name: "custom-ca-trust-secret".into(),
    };
    let view = view_of(secret);
    let input = input_of(&r, Some(&view), &SourceState::Synced, NOW);
    for v in input.keys.iter().flatten() {
        for f in &v.findings {
            let _ = f.to_string();
        }
    }
});
