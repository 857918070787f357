//! What every node *should* have: the input digest of the live Secret and
//! the trust-set digest that the agent's own validation and planning
//! (`trust::sources`, `trust::plan`) make of it and of the provisioning
//! files. Pure: the Secret's data and the already-read files in, an
//! [`Expected`] out.

use std::collections::BTreeMap;

use crate::fleet::schema;
use crate::trust::plan::{self, KeyState, SourceInput};
use crate::trust::sources::{self, RawKey};
use crate::trust::validate::Finding;

/// The fleet's expected state.
#[derive(Debug, Clone)]
pub struct Expected {
    /// `namespace/name` of the Secret read.
    pub secret: String,
    /// False when the Secret does not exist (then no Secret CAs are expected).
    pub secret_found: bool,
    /// [`schema::input_digest`] of the Secret's data.
    pub input_digest: String,
    /// [`schema::trust_set_digest`] of the planned set.
    pub trust_set_digest: String,
    pub ca_count: usize,
    /// Findings of the validation and the planning (errors: keys a node
    /// refuses; it then keeps its last good CAs).
    pub findings: Vec<Finding>,
}

impl Expected {
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.is_error()).count()
    }
}

/// The expected state for the Secret `secret` (`None`: it does not exist)
/// and the provisioning inputs `ca_files` (as `trust::sources::read_source`
/// read them), at time `now`, with the agent's `max_certificates`.
pub fn expected(
    secret: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    ca_files: Vec<SourceInput>,
    max_certificates: usize,
    now: i64,
) -> Expected {
    let empty = BTreeMap::new();
    let entries = data.unwrap_or(&empty);
    let raw = entries
        .iter()
        .map(|(k, v)| RawKey {
            key: k.clone(),
            content: Ok(v.clone()),
        })
        .collect();
    let mut inputs = vec![sources::validate_raw_keys(
        format!("secret {secret}"),
        raw,
        now,
    )];
    inputs.extend(ca_files);
    let planned = plan::plan(
        &inputs,
        &KeyState::new(),
        &BTreeMap::new(),
        max_certificates,
    );
    let mut findings: Vec<Finding> = inputs
        .iter()
        .flat_map(|i| match &i.keys {
            Err(f) => vec![f.clone()],
            Ok(vs) => vs.iter().flat_map(|v| v.findings.iter().cloned()).collect(),
        })
        .collect();
    findings.extend(planned.findings.iter().cloned());
    Expected {
        secret: secret.to_string(),
        secret_found: data.is_some(),
        input_digest: schema::input_digest(entries),
        trust_set_digest: schema::trust_set_digest(planned.desired.keys()),
        ca_count: planned.desired.len(),
        findings,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::time::now_unix;
    use crate::x509::testpki;

    #[test]
    fn a_valid_secret_plans_its_cas_and_a_bad_key_is_a_finding() {
        let ca = testpki::good_ca("fleet expected CA");
        let pem = testpki::pem(&ca.cert);
        let data: BTreeMap<String, Vec<u8>> = [
            ("ca1.crt".to_string(), pem.clone().into_bytes()),
            ("bad.crt".to_string(), b"not a certificate".to_vec()),
        ]
        .into();
        let e = expected("kube-system/s", Some(&data), vec![], 10, now_unix());
        assert!(e.secret_found);
        assert_eq!(e.ca_count, 1);
        assert_eq!(e.input_digest, schema::input_digest(&data));
        let fp = crate::x509::cert::CertInfo::from_pem(pem.as_bytes())
            .unwrap()
            .fingerprint;
        assert_eq!(e.trust_set_digest, schema::trust_set_digest([&fp]));
        assert_eq!(e.errors(), 1, "{:?}", e.findings);
    }

    #[test]
    fn a_missing_secret_expects_nothing() {
        let e = expected("kube-system/s", None, vec![], 10, now_unix());
        assert!(!e.secret_found);
        assert_eq!(e.ca_count, 0);
        assert_eq!(e.trust_set_digest, schema::trust_set_digest([]));
        assert_eq!(e.input_digest, schema::input_digest(&BTreeMap::new()));
    }
}
