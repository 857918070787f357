//! What the renewal decision and the revocation matching know about a
//! kubelet certificate ([`CertFacts`]), and how they are read from it.
//!
//! Pure: a parsed certificate in, facts out. Boundary: no files, no clock,
//! no API; deciding what the facts mean is renewal.rs's and revocation.rs's.

use std::net::IpAddr;

use openssl::nid::Nid;
use openssl::x509::X509;

use crate::kubelet::store::CurrentCert;
use crate::x509::cert::CertInfo;
use crate::x509::name::common_name;

/// What the renewal logic needs to know about the current certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertFacts {
    /// Upper-case hex without separators or leading zeros.
    pub serial: String,
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: i64,
    pub not_after: i64,
    pub key_matches: bool,
}

/// Normalises a hex serial: no `:`, no leading zeros, upper case.
pub fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The facts of the certificate kubelet uses now.
pub fn facts_of(c: &CurrentCert) -> CertFacts {
    facts_of_x509(&c.cert, c.key_matches)
}

/// The facts of `cert`; `key_matches` says whether its private key is the
/// one stored with it.
pub fn facts_of_x509(cert: &X509, key_matches: bool) -> CertFacts {
    let info = cert.to_der().ok().and_then(|d| CertInfo::from_der(&d).ok());
    let organizations = cert
        .subject_name()
        .entries_by_nid(Nid::ORGANIZATIONNAME)
        .filter_map(|e| e.data().to_string().ok())
        .collect();
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    for san in cert.subject_alt_names().into_iter().flatten() {
        if let Some(d) = san.dnsname() {
            dns_names.push(d.to_string());
        }
        if let Some(raw) = san.ipaddress() {
            match raw.len() {
                4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(raw).unwrap_or_default())),
                16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(raw).unwrap_or_default())),
                _ => {}
            }
        }
    }
    CertFacts {
        serial: info
            .as_ref()
            .map(|i| normalize_serial(&i.serial))
            .unwrap_or_default(),
        common_name: common_name(cert.subject_name()),
        organizations,
        dns_names,
        ips,
        not_before: info.as_ref().map(|i| i.not_before).unwrap_or(0),
        not_after: info.as_ref().map(|i| i.not_after).unwrap_or(0),
        key_matches,
    }
}

#[cfg(test)]
impl CertFacts {
    /// A node client certificate's facts for tests: serial `0A1B`, valid
    /// for 100,000 s from 1,000,000, one DNS name and one IP.
    pub fn example(node: &str) -> Self {
        Self {
            serial: "0A1B".into(),
            common_name: Some(format!("system:node:{node}")),
            organizations: vec!["system:nodes".into()],
            dns_names: vec!["node1.eu.example.com".into()],
            ips: vec![std::net::IpAddr::from([10, 0, 0, 7])],
            not_before: 1_000_000,
            not_after: 1_000_000 + 100_000,
            key_matches: true,
        }
    }
}
