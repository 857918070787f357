//! Just enough DER reading to answer "is this certificate a CA?".
//!
//! The `openssl` crate exposes no getter for basicConstraints, so this walks
//! the TBSCertificate of a certificate that OpenSSL has already parsed. Every
//! read is bounds-checked; anything unexpected yields `None` and the caller
//! treats the certificate as "no basicConstraints" (that is, not a CA).

const TAG_BOOLEAN: u8 = 0x01;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT, constructed
/// OID 2.5.29.19 (id-ce-basicConstraints), content octets only.
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

/// One TLV: its tag, its content, and what follows it.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags never appear in the parts of a certificate read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The `cA` flag of the basicConstraints extension of a DER certificate:
/// `Some(true|false)` when the extension is present, `None` when it is absent
/// or the structure cannot be walked.
pub fn basic_constraints_ca(cert_der: &[u8]) -> Option<bool> {
    let (tag, cert, _) = read_tlv(cert_der)?;
    if tag != TAG_SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = read_tlv(cert)?;
    if tag != TAG_SEQUENCE {
        return None;
    }
    // Skip version, serial, signature, issuer, validity, subject, SPKI and the
    // optional unique IDs until the [3] extensions wrapper shows up.
    while !tbs.is_empty() {
        let (tag, content, rest) = read_tlv(tbs)?;
        if tag == TAG_EXTENSIONS {
            return find_basic_constraints(content);
        }
        tbs = rest;
    }
    None
}

fn find_basic_constraints(wrapper: &[u8]) -> Option<bool> {
    let (tag, mut exts, _) = read_tlv(wrapper)?;
    if tag != TAG_SEQUENCE {
        return None;
    }
    while !exts.is_empty() {
        let (tag, ext, rest) = read_tlv(exts)?;
        exts = rest;
        if tag != TAG_SEQUENCE {
            return None;
        }
        let (tag, oid, mut ext_rest) = read_tlv(ext)?;
        if tag != TAG_OID || oid != OID_BASIC_CONSTRAINTS {
            continue;
        }
        let (mut tag, mut value, after) = read_tlv(ext_rest)?;
        if tag == TAG_BOOLEAN {
            // The `critical` flag; the OCTET STRING follows it.
            ext_rest = after;
            (tag, value, _) = read_tlv(ext_rest)?;
        }
        if tag != TAG_OCTET_STRING {
            return None;
        }
        let (tag, constraints, _) = read_tlv(value)?;
        if tag != TAG_SEQUENCE {
            return None;
        }
        if constraints.is_empty() {
            // cA is DEFAULT FALSE and so omitted when false.
            return Some(false);
        }
        let (tag, flag, _) = read_tlv(constraints)?;
        return Some(tag == TAG_BOOLEAN && flag.first().is_some_and(|b| *b != 0));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::x509::testpki;

    #[test]
    fn ca_certificate_reports_ca_true() {
        let ca = testpki::ca("Root", 0, 365);
        assert_eq!(basic_constraints_ca(&ca.cert.to_der().unwrap()), Some(true));
    }

    #[test]
    fn leaf_with_ca_false_reports_false() {
        let leaf = testpki::self_signed_leaf("registry.test");
        assert_eq!(basic_constraints_ca(&leaf.to_der().unwrap()), Some(false));
    }

    #[test]
    fn certificate_without_extensions_reports_none() {
        let bare = testpki::bare_v1_cert("bare");
        assert_eq!(basic_constraints_ca(&bare.to_der().unwrap()), None);
    }

    #[test]
    fn truncated_or_garbage_input_never_panics() {
        let der = testpki::ca("Root", 0, 365).cert.to_der().unwrap();
        for cut in 0..der.len() {
            let _ = basic_constraints_ca(&der[..cut]);
        }
        assert_eq!(
            basic_constraints_ca(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(basic_constraints_ca(&[]), None);
    }
}
