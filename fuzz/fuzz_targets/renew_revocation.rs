//! A listed RenewRevocation: any bytes as the JSON of one object of the
//! list, read as kube reads a list item (a `DynamicObject`), converted as
//! the agent converts it, and every entry matched against a fixed
//! certificate's facts, then through the renewal decision.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::kubelet::facts::CertFacts;
use node_cert_agent::kubelet::renewal;
use node_cert_agent::kubelet::revocation::RenewRevocation;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = serde_json::from_slice::<kube::core::DynamicObject>(data) else {
        return;
    };
    let revocation = match RenewRevocation::try_from(object) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let facts = CertFacts {
        serial: "5F2A910C".into(),
        common_name: Some("system:node:node-1".into()),
        organizations: vec!["system:nodes".into()],
        dns_names: vec!["node-1.pool-a.example.internal".into()],
        ips: vec!["10.240.0.17"
            .parse()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())],
        not_before: 1_767_225_600,
        not_after: 1_767_225_600 + 365 * 86_400,
        key_matches: true,
    };
    let entries = revocation.entries();
    for entry in &entries {
        let _ = entry.label();
        if let Err(e) = entry.matches(&facts) {
            let _ = e.to_string();
        }
    }
    let (decision, _bad) = renewal::decide(Some(&facts), "node-1", facts.not_before + 10, &entries);
    if let renewal::Decision::RenewNow(reason) = decision {
        let _ = reason.to_string();
    }
});
