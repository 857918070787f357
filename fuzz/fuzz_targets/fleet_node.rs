//! A Node as the API serves it to the `fleet` command (its annotations and
//! conditions are anyone's with `patch nodes`): any bytes, never a panic,
//! through reading, judging and both renderings; a node is in sync only
//! when its digests are the expected ones.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::fleet::expected::expected;
use node_cert_agent::fleet::observed::NodeFacts;
use node_cert_agent::fleet::report::Report;

fuzz_target!(|data: &[u8]| {
    let Ok(node) = serde_json::from_slice::<k8s_openapi::api::core::v1::Node>(data) else {
        return;
    };
    let facts = NodeFacts::of_node(&node);
    let e = expected("kube-system/custom-ca-trust-secret", None, vec![], 10, 0);
    let report = Report::new(e.clone(), [facts.clone()], 0, None);
    let _ = report.table();
    let _ = report.json().map(|v| v.to_string());
    if report.rows[0].in_sync() {
        let a = facts.agent.expect("an in-sync node has the agent");
        assert_eq!(a.input_digest.as_deref(), Some(e.input_digest.as_str()));
        assert_eq!(a.trust_set_digest.as_deref(), Some(e.trust_set_digest.as_str()));
    }
});
