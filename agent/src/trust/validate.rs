//! Validation of one CA input (a Secret key or a provisioning file), key by key.
//!
//! Pure: bytes in, a [`KeyVerdict`] out. Reading files is `sources`' job and
//! deciding what to install is `plan`'s. Every [`Finding`] names the key, the
//! certificate's position in it, what is wrong and how to fix it.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;

use crate::time::rfc3339;
use crate::x509::cert::{CertInfo, Fingerprint};
use crate::x509::pem::{scan_pem, PemScan};

/// Largest input accepted, per key or file (a Kubernetes Secret holds at most 1 MiB).
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// What kind of problem a finding reports; tests and metrics match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    Empty,
    TooLarge,
    Binary,
    DerNotPem,
    DoubleBase64,
    PrivateKey,
    NoCertificate,
    UnsupportedBlock,
    Unparsable,
    CrlfNormalized,
    BomRemoved,
    NotCaSelfSigned,
    NotCa,
    Expired,
    NotYetValid,
    DuplicateInKey,
    /// A negative serial number: Go's crypto/x509 refuses such certificates.
    NegativeSerial,
    /// An X.509 v1 self-signed certificate: a root CA to TLS libraries.
    V1Root,
    TooManyCertificates,
    Unreadable,
    /// A key that is a symbolic link: never followed.
    Link,
    /// A key with more than one hard link: refused without being read.
    HardLink,
    /// A key, directory or file a user other than root can change.
    WritableByOthers,
    /// A Secret directory whose `..data` or payload is not kubelet's layout.
    BadLayout,
    /// A key name that is not plain printable ASCII.
    NonAsciiKeyName,
    /// The configured directory or file does not exist.
    SourceMissing,
    /// The source exists but cannot be read consistently.
    SourceUnavailable,
    /// An entry of a Secret directory that is not a file.
    NotAKey,
    /// A Secret key whose name starts with a dot: a hidden file, not read.
    HiddenKey,
}

impl FindingKind {
    /// The kind's name in `check --output json` (`kind`) and in logs: part
    /// of the documented output, so it is spelt out here rather than taken
    /// from the variant's name, which a rename would change silently.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::TooLarge => "TooLarge",
            Self::Binary => "Binary",
            Self::DerNotPem => "DerNotPem",
            Self::DoubleBase64 => "DoubleBase64",
            Self::PrivateKey => "PrivateKey",
            Self::NoCertificate => "NoCertificate",
            Self::UnsupportedBlock => "UnsupportedBlock",
            Self::Unparsable => "Unparsable",
            Self::CrlfNormalized => "CrlfNormalized",
            Self::BomRemoved => "BomRemoved",
            Self::NotCaSelfSigned => "NotCaSelfSigned",
            Self::NotCa => "NotCa",
            Self::Expired => "Expired",
            Self::NotYetValid => "NotYetValid",
            Self::DuplicateInKey => "DuplicateInKey",
            Self::NegativeSerial => "NegativeSerial",
            Self::V1Root => "V1Root",
            Self::TooManyCertificates => "TooManyCertificates",
            Self::Unreadable => "Unreadable",
            Self::Link => "Link",
            Self::HardLink => "HardLink",
            Self::WritableByOthers => "WritableByOthers",
            Self::BadLayout => "BadLayout",
            Self::NonAsciiKeyName => "NonAsciiKeyName",
            Self::SourceMissing => "SourceMissing",
            Self::SourceUnavailable => "SourceUnavailable",
            Self::NotAKey => "NotAKey",
            Self::HiddenKey => "HiddenKey",
        }
    }
}

impl serde::Serialize for FindingKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// One problem found in the input, in words an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    /// The key (Secret key name or provisioning file path) it concerns.
    pub key: String,
    /// 1-based position of the certificate inside the key, when it concerns one.
    pub position: Option<usize>,
    pub problem: String,
    pub fix: String,
}

impl Finding {
    pub fn error(
        kind: FindingKind,
        key: &str,
        position: Option<usize>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            kind,
            key: key.to_string(),
            position,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn warning(
        kind: FindingKind,
        key: &str,
        position: Option<usize>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(kind, key, position, problem, fix)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}: key \"{}\"", self.key)?;
        if let Some(pos) = self.position {
            write!(f, ", certificate {pos}")?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.fix.is_empty() {
            write!(f, ". Fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// The outcome of validating one key.
#[derive(Clone, Debug)]
pub struct KeyVerdict {
    pub key: String,
    /// Certificates to trust from this key, in input order, without duplicates.
    pub certs: Vec<CertInfo>,
    pub findings: Vec<Finding>,
    /// The key as a whole is refused: its last good version stays installed.
    pub rejected: bool,
}

impl KeyVerdict {
    fn rejected(key: &str, finding: Finding) -> Self {
        Self {
            key: key.to_string(),
            certs: Vec::new(),
            findings: vec![finding],
            rejected: true,
        }
    }

    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(Finding::is_error)
    }
}

const FIX_PEM: &str = "put one or more PEM certificates (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----) in this key";

/// The error for a value of `size` bytes, over [`MAX_INPUT_BYTES`] (the
/// readers refuse such a key without reading it all).
pub fn too_large(key: &str, size: u64) -> Finding {
    Finding::error(
        FindingKind::TooLarge,
        key,
        None,
        format!("the value is {size} bytes, over the limit of {MAX_INPUT_BYTES} bytes (1 MiB)"),
        "keep only the CA certificates in this key; a CA bundle is a few KiB",
    )
}

/// Validates one key's bytes at time `now` (Unix seconds).
pub fn validate_key(key: &str, bytes: &[u8], now: i64) -> KeyVerdict {
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return KeyVerdict::rejected(key, too_large(key, bytes.len() as u64));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return KeyVerdict::rejected(
            key,
            Finding::error(
                FindingKind::Empty,
                key,
                None,
                "the value is empty",
                format!("{FIX_PEM}, or delete the key"),
            ),
        );
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if !t.contains('\0') => t,
        _ => return KeyVerdict::rejected(key, binary_finding(key, bytes)),
    };

    let mut findings = Vec::new();
    // A UTF-8 byte order mark (Notepad's default) is harmless: drop it, warn.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            findings.push(Finding::warning(
                FindingKind::BomRemoved,
                key,
                None,
                "the value starts with a UTF-8 byte order mark (BOM); it was removed",
                "save the file as UTF-8 without BOM",
            ));
            rest
        }
        None => text,
    };
    let normalized;
    let text = if text.contains('\r') {
        findings.push(Finding::warning(
            FindingKind::CrlfNormalized,
            key,
            None,
            "the value has CRLF (Windows) line breaks; they were normalised to LF",
            "save the file with LF line breaks",
        ));
        normalized = text.replace("\r\n", "\n").replace('\r', "\n");
        normalized.as_str()
    } else {
        text
    };

    let blocks = match scan_pem(text) {
        PemScan::Blocks(blocks) => blocks,
        PemScan::Truncated { label, position } => {
            findings.push(Finding::error(
                FindingKind::Unparsable,
                key,
                Some(position),
                format!(
                    "the PEM block \"{label}\" has no matching END line; the value looks truncated"
                ),
                "copy the whole certificate, from its BEGIN line to its END line",
            ));
            return reject_with(key, findings);
        }
    };

    if let Some(block) = blocks.iter().find(|b| b.label.contains("PRIVATE KEY")) {
        // Refuse the whole key and say nothing of its content: never echo key material.
        findings.push(Finding::error(
            FindingKind::PrivateKey,
            key,
            None,
            format!("the value contains a private key (a \"{}\" block); the whole key is refused and nothing from it is written anywhere", block.label),
            "remove the private key from this Secret key; a trust store needs only the CA certificate, and the private key should be rotated if it was shared",
        ));
        return reject_with(key, findings);
    }

    if blocks.is_empty() {
        findings.push(no_pem_finding(key, text));
        return reject_with(key, findings);
    }

    let mut certs: Vec<CertInfo> = Vec::new();
    // Fingerprint -> (first position, repeats): a repeat is skipped before
    // it is judged, and all repeats of one certificate are one warning.
    let mut seen: BTreeMap<Fingerprint, (usize, usize)> = BTreeMap::new();
    for (index, block) in blocks.iter().enumerate() {
        let position = index + 1;
        if block.label != "CERTIFICATE" {
            findings.push(unsupported_block(key, position, block.label));
            return reject_with(key, findings);
        }
        let der = match base64::engine::general_purpose::STANDARD.decode(block.body.as_bytes()) {
            Ok(der) => der,
            Err(e) => {
                findings.push(Finding::error(
                    FindingKind::Unparsable,
                    key,
                    Some(position),
                    format!("the certificate's base64 body is damaged ({e})"),
                    "copy the certificate again; the lines between BEGIN and END must be intact",
                ));
                return reject_with(key, findings);
            }
        };
        let fingerprint = Fingerprint::of_der(&der);
        if let Some((_, repeats)) = seen.get_mut(&fingerprint) {
            *repeats += 1;
            continue;
        }
        seen.insert(fingerprint, (position, 0));
        let info = match CertInfo::from_der(&der) {
            Ok(info) => info,
            Err(e) => {
                findings.push(Finding::error(
                    FindingKind::Unparsable,
                    key,
                    Some(position),
                    format!("the certificate does not parse: {e}"),
                    "check it with `openssl x509 -noout -text -in FILE` and replace it with an intact copy",
                ));
                return reject_with(key, findings);
            }
        };
        if let Some(finding) = check_cert(key, position, &info, now) {
            let skip = finding.is_error();
            findings.push(finding);
            if skip {
                continue;
            }
        }
        if info.serial_negative {
            findings.push(Finding::warning(
                FindingKind::NegativeSerial,
                key,
                Some(position),
                format!("\"{}\" has a negative serial number ({}); it is installed, but Go programs (containerd, kubelet) built with Go 1.23 or later refuse to parse such a certificate unless GODEBUG=x509negativeserial=1 is set, so pulls through it may still fail", info.subject, info.serial),
                "reissue the CA with a positive serial number",
            ));
        }
        if info.not_before > now {
            findings.push(Finding::warning(
                FindingKind::NotYetValid,
                key,
                Some(position),
                format!("\"{}\" is not valid until {}; it is installed and TLS will accept it from then on", info.subject, rfc3339(info.not_before)),
                "check the clock of the machine that issued it if this is unexpected",
            ));
        }
        certs.push(info);
    }
    let mut repeated: Vec<(usize, Fingerprint, usize)> = seen
        .into_iter()
        .filter(|(_, (_, repeats))| *repeats > 0)
        .map(|(fp, (first, repeats))| (first, fp, repeats))
        .collect();
    repeated.sort();
    for (first, fp, repeats) in repeated {
        findings.push(Finding::warning(
            FindingKind::DuplicateInKey,
            key,
            Some(first),
            format!(
                "this certificate (SHA256 {}) is repeated {repeats} more time{} in the same key; it is used once",
                fp.short(),
                if repeats == 1 { "" } else { "s" }
            ),
            "remove the duplicates",
        ));
    }

    if certs.is_empty() {
        // Every certificate was skipped: keep the key's last good version.
        return reject_with(key, findings);
    }
    KeyVerdict {
        key: key.to_string(),
        certs,
        findings,
        rejected: false,
    }
}

/// Errors that skip one certificate (expired, non-CA leaf) or warn about it.
fn check_cert(key: &str, position: usize, info: &CertInfo, now: i64) -> Option<Finding> {
    if info.not_after < now {
        return Some(Finding::error(
            FindingKind::Expired,
            key,
            Some(position),
            format!(
                "\"{}\" expired at {}; it is skipped",
                info.subject,
                rfc3339(info.not_after)
            ),
            "replace it with the CA's current certificate",
        ));
    }
    if info.is_ca != Some(true) {
        if info.self_signed && info.version == 1 {
            return Some(Finding::warning(
                FindingKind::V1Root,
                key,
                Some(position),
                format!("\"{}\" is a self-signed X.509 v1 certificate: it has no extensions, so nothing in it says whether it is a CA; OpenSSL and Go accept a self-signed v1 certificate in the trust store as a root CA, so it is installed and trusts every certificate it signed", info.subject),
                "if you can, reissue it as a v3 CA certificate (basicConstraints CA:TRUE); if it is a server's own certificate, consider trusting its issuing CA instead",
            ));
        }
        if info.self_signed {
            return Some(Finding::warning(
                FindingKind::NotCaSelfSigned,
                key,
                Some(position),
                format!("\"{}\" is a self-signed certificate, not a CA; it is trusted, which trusts exactly this one server", info.subject),
                "prefer the CA that issued the server's certificate, if there is one",
            ));
        }
        return Some(Finding::error(
            FindingKind::NotCa,
            key,
            Some(position),
            format!("\"{}\" is not a CA and not self-signed (issued by \"{}\"); it is skipped", info.subject, info.issuer),
            "publish the CA certificate that issued it (the root, or the intermediate CA), not the server's own certificate",
        ));
    }
    None
}

fn reject_with(key: &str, findings: Vec<Finding>) -> KeyVerdict {
    KeyVerdict {
        key: key.to_string(),
        certs: Vec::new(),
        findings,
        rejected: true,
    }
}

fn binary_finding(key: &str, bytes: &[u8]) -> Finding {
    if bytes.first() == Some(&0x30) && CertInfo::from_der(bytes).is_ok() {
        return Finding::error(
            FindingKind::DerNotPem,
            key,
            None,
            "the value is a DER (binary) certificate, not PEM",
            "convert it with `openssl x509 -inform DER -in ca.der -out ca.crt` and publish ca.crt",
        );
    }
    if bytes.first() == Some(&0x30) {
        return Finding::error(
            FindingKind::DerNotPem,
            key,
            None,
            "the value is binary DER data (perhaps a PKCS#7 or PKCS#12 bundle), not a PEM certificate",
            "extract the CA certificates as PEM, e.g. `openssl pkcs7 -inform DER -print_certs -in bundle.p7b`",
        );
    }
    Finding::error(
        FindingKind::Binary,
        key,
        None,
        "the value is binary data (it has NUL bytes or is not UTF-8), not a PEM certificate",
        FIX_PEM,
    )
}

fn no_pem_finding(key: &str, text: &str) -> Finding {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(compact.trim_end_matches('=').as_bytes())
        });
    if let Ok(decoded) = decoded {
        if decoded.windows(11).any(|w| w == b"-----BEGIN ") {
            return Finding::error(
                FindingKind::DoubleBase64,
                key,
                None,
                "the value is base64 of a PEM: it was base64-encoded twice",
                "decode once: in the Secret's `data:` the PEM must be base64-encoded exactly once (or put the plain PEM under `stringData:`)",
            );
        }
        if CertInfo::from_der(&decoded).is_ok() {
            return Finding::error(
                FindingKind::NoCertificate,
                key,
                None,
                "the value is a base64 DER certificate without PEM armour",
                "wrap it in -----BEGIN CERTIFICATE----- / -----END CERTIFICATE----- lines",
            );
        }
    }
    Finding::error(
        FindingKind::NoCertificate,
        key,
        None,
        "no PEM certificate found in the value",
        FIX_PEM,
    )
}

fn unsupported_block(key: &str, position: usize, label: &str) -> Finding {
    let fix = match label {
        "PKCS7" => "extract the certificates with `openssl pkcs7 -print_certs -in bundle.p7b` and publish them as PEM".to_string(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => "this is a CSR; publish the CA certificate instead".to_string(),
        "TRUSTED CERTIFICATE" => "convert it to a plain certificate with `openssl x509 -in FILE -out ca.crt`".to_string(),
        _ => "keep only CERTIFICATE blocks in this key".to_string(),
    };
    Finding::error(
        FindingKind::UnsupportedBlock,
        key,
        Some(position),
        format!("the PEM block is \"{label}\", not \"CERTIFICATE\"; the key is refused"),
        fix,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::time::now_unix;
    use crate::x509::testpki;

    fn kinds(v: &KeyVerdict) -> Vec<FindingKind> {
        v.findings.iter().map(|f| f.kind).collect()
    }

    fn good_pem() -> String {
        testpki::pem(&testpki::good_ca("Good Root").cert)
    }

    #[test]
    fn valid_ca_is_accepted_without_findings() {
        let v = validate_key("ca1.crt", good_pem().as_bytes(), now_unix());
        assert!(!v.rejected);
        assert!(v.findings.is_empty(), "{:?}", v.findings);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(v.certs[0].subject, "O=node-cert-agent tests, CN=Good Root");
    }

    #[test]
    fn bundle_with_comments_and_blank_lines_yields_every_cert() {
        let input = format!("# old root\n{}\n\n# new root\n{}\n", good_pem(), good_pem());
        let v = validate_key("roots.crt", input.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 2);
    }

    #[test]
    fn empty_value_is_an_error_naming_the_key() {
        for input in [&b""[..], b"\n  \n"] {
            let v = validate_key("empty.crt", input, now_unix());
            assert!(v.rejected);
            assert_eq!(kinds(&v), vec![FindingKind::Empty]);
            let text = v.findings[0].to_string();
            assert!(
                text.contains("key \"empty.crt\"") && text.contains("Fix:"),
                "{text}"
            );
        }
    }

    #[test]
    fn garbage_text_is_an_error() {
        let v = validate_key("junk.crt", b"hello, this is not a certificate", now_unix());
        assert!(v.rejected);
        assert_eq!(kinds(&v), vec![FindingKind::NoCertificate]);
    }

    #[test]
    fn binary_garbage_is_an_error() {
        let v = validate_key("bin.crt", &[0xff, 0xfe, 0x00, 0x01, 0x80], now_unix());
        assert!(v.rejected);
        assert_eq!(kinds(&v), vec![FindingKind::Binary]);
        let v = validate_key("nul.crt", b"-----BEGIN CERTIFICATE-----\0", now_unix());
        assert_eq!(kinds(&v), vec![FindingKind::Binary]);
    }

    #[test]
    fn der_certificate_gets_a_conversion_hint() {
        let der = testpki::good_ca("Der").cert.to_der().unwrap();
        let v = validate_key("ca.der", &der, now_unix());
        assert_eq!(kinds(&v), vec![FindingKind::DerNotPem]);
        assert!(v.findings[0].fix.contains("openssl x509 -inform DER"));
    }

    #[test]
    fn truncated_pem_is_an_error_with_position() {
        let pem = good_pem();
        let cut = &pem[..pem.len() / 2];
        let input = format!("{}{}", good_pem(), cut);
        let v = validate_key("cut.crt", input.as_bytes(), now_unix());
        assert!(v.rejected);
        assert_eq!(kinds(&v), vec![FindingKind::Unparsable]);
        assert_eq!(v.findings[0].position, Some(2));
    }

    #[test]
    fn damaged_base64_body_is_an_error() {
        let pem = good_pem().replacen("MII", "M!I", 1);
        let v = validate_key("bad64.crt", pem.as_bytes(), now_unix());
        assert!(v.rejected);
        assert_eq!(kinds(&v), vec![FindingKind::Unparsable]);
    }

    #[test]
    fn well_formed_base64_that_is_not_a_certificate_is_an_error() {
        let input = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let v = validate_key("fake.crt", input.as_bytes(), now_unix());
        assert!(v.rejected);
        assert_eq!(kinds(&v), vec![FindingKind::Unparsable]);
        assert_eq!(v.findings[0].position, Some(1));
    }

    #[test]
    fn crlf_is_accepted_normalised_and_warned() {
        let input = good_pem().replace('\n', "\r\n");
        let v = validate_key("win.crt", input.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(kinds(&v), vec![FindingKind::CrlfNormalized]);
        assert_eq!(v.findings[0].severity, Severity::Warning);
        assert!(!v.certs[0].pem.contains('\r'));
    }

    #[test]
    fn utf8_bom_is_removed_with_a_warning() {
        let input = format!("\u{feff}{}", good_pem());
        let v = validate_key("bom.crt", input.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert!(v.findings[0].problem.contains("byte order mark"));
    }

    #[test]
    fn double_base64_is_an_error_that_says_decode_once() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(good_pem());
        let v = validate_key("twice.crt", encoded.as_bytes(), now_unix());
        assert!(v.rejected);
        assert_eq!(kinds(&v), vec![FindingKind::DoubleBase64]);
        assert!(v.findings[0].fix.starts_with("decode once"));
    }

    #[test]
    fn private_key_refuses_the_whole_key_and_never_echoes_it() {
        let key_pem = testpki::private_key_pem();
        let input = format!("{}{}", good_pem(), key_pem);
        let v = validate_key("leak.crt", input.as_bytes(), now_unix());
        assert!(v.rejected);
        assert!(
            v.certs.is_empty(),
            "no certificate of a key holding a private key is used"
        );
        assert_eq!(kinds(&v), vec![FindingKind::PrivateKey]);
        let body_line = key_pem.lines().nth(1).unwrap();
        assert!(!v.findings[0].to_string().contains(body_line));
    }

    #[test]
    fn rsa_and_ec_private_key_labels_are_refused_too() {
        for label in ["RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"] {
            let input = format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
            let v = validate_key("k", input.as_bytes(), now_unix());
            assert_eq!(kinds(&v), vec![FindingKind::PrivateKey], "{label}");
        }
    }

    #[test]
    fn self_signed_leaf_is_a_warning_and_trusted() {
        let leaf = testpki::pem(&testpki::self_signed_leaf("registry.test"));
        let v = validate_key("registry.crt", leaf.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(kinds(&v), vec![FindingKind::NotCaSelfSigned]);
        assert_eq!(v.findings[0].severity, Severity::Warning);
    }

    #[test]
    fn leaf_issued_by_another_ca_is_an_error_and_skipped() {
        let ca = testpki::good_ca("Issuer");
        let leaf = testpki::pem(&testpki::leaf_signed_by(&ca, "server"));
        let v = validate_key("leaf.crt", leaf.as_bytes(), now_unix());
        assert!(
            v.rejected,
            "a key whose only certificate is skipped keeps its last good version"
        );
        assert_eq!(kinds(&v), vec![FindingKind::NotCa]);
        assert_eq!(v.findings[0].position, Some(1));
    }

    #[test]
    fn leaf_next_to_its_ca_skips_the_leaf_and_keeps_the_ca() {
        let ca = testpki::good_ca("Issuer");
        let leaf = testpki::pem(&testpki::leaf_signed_by(&ca, "server"));
        let input = format!("{}{}", leaf, testpki::pem(&ca.cert));
        let v = validate_key("chain.crt", input.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(v.certs[0].is_ca, Some(true));
        assert_eq!(kinds(&v), vec![FindingKind::NotCa]);
        assert!(v.has_errors());
    }

    #[test]
    fn expired_ca_is_skipped_with_an_error() {
        let expired = testpki::pem(&testpki::ca("Old", -30, -1).cert);
        let input = format!("{}{}", expired, good_pem());
        let v = validate_key("rot.crt", input.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(kinds(&v), vec![FindingKind::Expired]);
        assert!(v.findings[0].is_error());
        assert_eq!(v.findings[0].position, Some(1));
    }

    #[test]
    fn not_yet_valid_ca_is_installed_with_a_warning() {
        let future = testpki::pem(&testpki::ca("Future", 2, 30).cert);
        let v = validate_key("future.crt", future.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(kinds(&v), vec![FindingKind::NotYetValid]);
        assert_eq!(v.findings[0].severity, Severity::Warning);
    }

    #[test]
    fn over_one_mib_is_an_error() {
        let mut big = good_pem().into_bytes();
        big.resize(MAX_INPUT_BYTES as usize + 1, b'\n');
        let v = validate_key("huge.crt", &big, now_unix());
        assert!(v.rejected);
        assert_eq!(kinds(&v), vec![FindingKind::TooLarge]);
    }

    #[test]
    fn pkcs7_block_is_refused_with_a_conversion_hint() {
        let input = "-----BEGIN PKCS7-----\nMIIB\n-----END PKCS7-----\n";
        let v = validate_key("bundle.p7b", input.as_bytes(), now_unix());
        assert!(v.rejected);
        assert_eq!(kinds(&v), vec![FindingKind::UnsupportedBlock]);
        assert!(v.findings[0].fix.contains("openssl pkcs7"));
    }

    #[test]
    fn a_ca_repeated_thousands_of_times_is_one_warning_with_the_count() {
        let pem = good_pem();
        let expired = testpki::pem(&testpki::ca("Old", -30, -1).cert);
        let input = format!("{}{}{}", pem.repeat(1000), expired.repeat(3), pem);
        let v = validate_key("many.crt", input.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(
            kinds(&v),
            vec![
                FindingKind::Expired,
                FindingKind::DuplicateInKey,
                FindingKind::DuplicateInKey
            ],
            "{:?}",
            v.findings
        );
        assert_eq!(v.findings[1].position, Some(1));
        assert!(
            v.findings[1].problem.contains("repeated 1000 more times"),
            "{}",
            v.findings[1]
        );
        assert_eq!(v.findings[2].position, Some(1001));
        assert!(
            v.findings[2].problem.contains("repeated 2 more times"),
            "{}",
            v.findings[2]
        );
    }

    #[test]
    fn a_negative_serial_is_installed_with_a_warning_naming_gos_behaviour() {
        let pem = testpki::pem(&testpki::negative_serial_ca("Negative").cert);
        let v = validate_key("neg.crt", pem.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert!(v.certs[0].serial_negative);
        assert_eq!(kinds(&v), vec![FindingKind::NegativeSerial]);
        let text = v.findings[0].to_string();
        assert!(
            text.contains("Go 1.23")
                && text.contains("x509negativeserial")
                && text.contains("-1092"),
            "{text}"
        );
    }

    #[test]
    fn a_self_signed_v1_certificate_is_described_as_a_root() {
        let v1 = testpki::pem(&testpki::bare_v1_cert("Old Root"));
        let v = validate_key("v1.crt", v1.as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(v.certs[0].version, 1);
        assert_eq!(kinds(&v), vec![FindingKind::V1Root]);
        let text = v.findings[0].to_string();
        assert!(text.contains("v1") && text.contains("root CA"), "{text}");
        assert!(!text.contains("exactly this one server"), "{text}");
    }

    #[test]
    fn duplicate_inside_one_key_is_installed_once() {
        let pem = good_pem();
        let v = validate_key("dup.crt", format!("{pem}{pem}").as_bytes(), now_unix());
        assert!(!v.rejected);
        assert_eq!(v.certs.len(), 1);
        assert_eq!(kinds(&v), vec![FindingKind::DuplicateInKey]);
    }

    #[test]
    fn written_pem_is_reencoded_not_copied_from_input() {
        let input = format!("junk before\n{}junk after\n", good_pem());
        let v = validate_key("noisy.crt", input.as_bytes(), now_unix());
        assert!(!v.certs[0].pem.contains("junk"));
        assert!(v.certs[0].pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    }
}
