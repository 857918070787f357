//! `check`'s Secret manifests: any bytes as a YAML file, then every key
//! found through the daemon's own validation. Never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::trust::secret_manifest::parse_secret_manifest;
use node_cert_agent::trust::sources::validate_raw_keys;

// A fixed clock, so a crash reproduces whatever the date.
const NOW: i64 = 1_795_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (name, keys) in parse_secret_manifest(text, "fuzz.yaml").unwrap_or_default() {
        let input = validate_raw_keys(name, keys, NOW);
        for v in input.keys.iter().flatten() {
            for f in &v.findings {
                let _ = f.to_string();
            }
        }
    }
});
