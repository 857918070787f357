//! The kubeconfig parser: any text as a kubeconfig file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("/var/lib/kubelet/kubeconfig");
        if let Err(e) = node_cert_agent::k8s::kubeconfig::parse(text, path) {
            let _ = e.to_string();
        }
    }
});
