//! The os-release parser: any text as /etc/os-release.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let os = node_cert_agent::node::distro::parse_os_release(text);
        assert!(!os.id.is_empty());
        let _ = node_cert_agent::node::distro::detect_family(&os);
    }
});
