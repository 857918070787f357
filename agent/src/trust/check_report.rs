//! The schema of `check --output json` (documented in docs/json.md,
//! "check"): the typed report of a lint of CA inputs, built from the same
//! verdicts and plan the daemon uses. Pure.
//!
//! Owns: the report's types, their serialised names, and the key status
//! words (`ok`, `partly used`, `REFUSED`) the table prints too. Boundary:
//! reads nothing and judges nothing; the judging is `validate`'s and
//! `plan`'s. A field renamed here changes the documented JSON, which
//! `agent/tests/json_contract.rs` pins.

use serde::Serialize;

use crate::time::rfc3339;
use crate::trust::plan::SourceInput;
use crate::trust::validate::{Finding, FindingKind, KeyVerdict, Severity};
use crate::x509::cert::CertInfo;

/// The version of this schema.
pub const SCHEMA_VERSION: u32 = 1;

/// What `check --output json` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub schema_version: u32,
    pub sources: Vec<SourceReport>,
    /// The findings of the inputs taken together (duplicates across keys,
    /// too many certificates).
    pub findings: Vec<FindingReport>,
    pub summary: Summary,
}

/// One input: a Secret directory, a provisioning file, a Secret of a
/// manifest, or the live Secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    pub source: String,
    /// The input as a whole could not be read; then `keys` is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<FindingReport>,
    pub keys: Vec<KeyReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyReport {
    pub key: String,
    /// [`key_status`].
    pub status: &'static str,
    pub certificates: Vec<CertificateReport>,
    pub findings: Vec<FindingReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateReport {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingReport {
    /// `error` or `warning`.
    pub severity: &'static str,
    pub kind: FindingKind,
    pub key: String,
    pub position: Option<usize>,
    pub problem: String,
    pub fix: String,
    /// The whole sentence, as the table prints it.
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub distinct_certificates: usize,
    pub errors: usize,
    pub warnings: usize,
    pub valid: bool,
}

impl CheckReport {
    /// The report of `inputs`, with the findings of the inputs taken
    /// together (`totals`) and the number of distinct certificates the plan
    /// would trust.
    pub fn new(inputs: &[SourceInput], totals: &[Finding], distinct: usize) -> Self {
        let sources: Vec<SourceReport> = inputs.iter().map(SourceReport::of).collect();
        let findings: Vec<FindingReport> = totals.iter().map(FindingReport::of).collect();
        let all = sources
            .iter()
            .flat_map(|s| {
                s.error
                    .iter()
                    .chain(s.keys.iter().flat_map(|k| k.findings.iter()))
            })
            .chain(findings.iter());
        let (mut errors, mut warnings) = (0, 0);
        for f in all {
            if f.severity == "error" {
                errors += 1;
            } else {
                warnings += 1;
            }
        }
        Self {
            schema_version: SCHEMA_VERSION,
            sources,
            findings,
            summary: Summary {
                distinct_certificates: distinct,
                errors,
                warnings,
                valid: errors == 0,
            },
        }
    }

    /// The JSON, one line, its object keys in sorted order (as every
    /// earlier version printed them).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        Ok(serde_json::to_value(self)?.to_string())
    }
}

impl SourceReport {
    fn of(input: &SourceInput) -> Self {
        match &input.keys {
            Err(f) => Self {
                source: input.source.clone(),
                error: Some(FindingReport::of(f)),
                keys: Vec::new(),
            },
            Ok(verdicts) => Self {
                source: input.source.clone(),
                error: None,
                keys: verdicts.iter().map(KeyReport::of).collect(),
            },
        }
    }
}

impl KeyReport {
    fn of(v: &KeyVerdict) -> Self {
        Self {
            key: v.key.clone(),
            status: key_status(v),
            certificates: v.certs.iter().map(CertificateReport::of).collect(),
            findings: v.findings.iter().map(FindingReport::of).collect(),
        }
    }
}

impl CertificateReport {
    fn of(c: &CertInfo) -> Self {
        Self {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            serial: c.serial.clone(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            sha256: c.fingerprint.hex(),
        }
    }
}

impl FindingReport {
    fn of(f: &Finding) -> Self {
        Self {
            severity: match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            kind: f.kind,
            key: f.key.clone(),
            position: f.position,
            problem: f.problem.clone(),
            fix: f.fix.clone(),
            message: f.to_string(),
        }
    }
}

/// A key's status word: `REFUSED` (nothing of it is used), `partly used`
/// (some certificates are, with errors), `ok`.
pub fn key_status(v: &KeyVerdict) -> &'static str {
    if v.rejected {
        "REFUSED"
    } else if v.has_errors() {
        "partly used"
    } else {
        "ok"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use crate::contract::assert_contract;
    use crate::trust::plan::{self, KeyState};
    use crate::trust::sources::{validate_raw_keys, RawKey};
    use crate::x509::testpki;

    #[test]
    fn the_json_is_the_documented_schema() {
        let pem = testpki::pem(&testpki::good_ca("Contract").cert);
        let keys = vec![
            RawKey {
                key: "ca1.crt".into(),
                content: Ok(pem.clone().into_bytes()),
            },
            RawKey {
                key: "bad.crt".into(),
                content: Ok(b"not a certificate".to_vec()),
            },
        ];
        let mut inputs = vec![validate_raw_keys(
            "secret.yaml".into(),
            keys,
            crate::time::now_unix(),
        )];
        inputs.push(SourceInput {
            source: "/missing".into(),
            keys: Err(Finding::error(
                FindingKind::SourceMissing,
                "/missing",
                None,
                "does not exist",
                "create it",
            )),
            content: None,
        });
        let total = plan::plan(&inputs, &KeyState::new(), &Default::default(), 10);
        let report = CheckReport::new(&inputs, &total.findings, total.desired.len());
        let v: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_contract(
            &v,
            &[
                "schemaVersion",
                "sources",
                "sources[].source",
                "sources[].error",
                "sources[].error.severity",
                "sources[].error.kind",
                "sources[].error.key",
                "sources[].error.position",
                "sources[].error.problem",
                "sources[].error.fix",
                "sources[].error.message",
                "sources[].keys",
                "sources[].keys[].key",
                "sources[].keys[].status",
                "sources[].keys[].certificates",
                "sources[].keys[].certificates[].subject",
                "sources[].keys[].certificates[].issuer",
                "sources[].keys[].certificates[].serial",
                "sources[].keys[].certificates[].notBefore",
                "sources[].keys[].certificates[].notAfter",
                "sources[].keys[].certificates[].sha256",
                "sources[].keys[].findings",
                "sources[].keys[].findings[].severity",
                "sources[].keys[].findings[].kind",
                "sources[].keys[].findings[].key",
                "sources[].keys[].findings[].position",
                "sources[].keys[].findings[].problem",
                "sources[].keys[].findings[].fix",
                "sources[].keys[].findings[].message",
                "findings",
                "summary",
                "summary.distinctCertificates",
                "summary.errors",
                "summary.warnings",
                "summary.valid",
            ],
            "check",
        );
        let key = |name: &str| {
            v["sources"][0]["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["key"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(key("ca1.crt")["status"], "ok");
        assert_eq!(key("bad.crt")["status"], "REFUSED");
        assert_eq!(key("bad.crt")["findings"][0]["kind"], "NoCertificate");
        assert_eq!(v["sources"][1]["error"]["kind"], "SourceMissing");
        assert_eq!(v["summary"]["errors"], 2);
        assert_eq!(v["summary"]["valid"], false);
    }

    #[test]
    fn every_finding_kind_has_its_documented_name() {
        // The names are output: a variant renamed must not rename them.
        for (kind, name) in [
            (FindingKind::DoubleBase64, "DoubleBase64"),
            (FindingKind::PrivateKey, "PrivateKey"),
            (FindingKind::NotCaSelfSigned, "NotCaSelfSigned"),
            (FindingKind::SourceMissing, "SourceMissing"),
            (FindingKind::HiddenKey, "HiddenKey"),
        ] {
            assert_eq!(kind.name(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
    }
}
