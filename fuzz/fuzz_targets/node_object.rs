//! A Node as the API returns it to the publisher at start: any bytes as the
//! JSON of a Node, decoded as kube decodes it (k8s-openapi's `Node`), then
//! what the agent takes from it (its own label, annotations and
//! conditions) and the publication planned from that.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::fleet::publish::{desired, observed, plan, Published};

fuzz_target!(|data: &[u8]| {
    let Ok(node) = serde_json::from_slice::<k8s_openapi::api::core::v1::Node>(data) else {
        return;
    };
    let seen = observed(&node, &Published::empty("node-1"));
    let want = desired(None, None, &seen, "0.0.0");
    let writes = plan(&seen, &want, 1_767_225_600);
    let _ = writes.is_empty();
});
