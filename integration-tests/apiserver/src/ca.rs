//! The cluster CA of the test API server: its own self-signed root, the
//! serving certificate, client certificates, and the kube-controller-manager
//! signer (`csrsigning`) policy for approved CSRs. Certificates are built with
//! the agent's test PKI primitives (`node_cert_agent::x509::testpki`); this
//! module chooses what kube-apiserver and kubeadm would put in them. A
//! leaf: it uses nothing of the crate (the controllers decide what to sign,
//! and hand it here).

use std::sync::Mutex;
use std::time::Duration;

pub(crate) use node_cert_agent::time::now_unix;
use node_cert_agent::x509::testpki::{self, TestCa};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private, Public};
use openssl::stack::Stack;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{
    X509Builder, X509Name, X509NameRef, X509PurposeId, X509Req, X509StoreContext, X509,
};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// Serials are positive and below 2^128, as kube-controller-manager's signer
/// draws them.
const SERIAL_BITS: i32 = 127;

/// Subject of a name as Go's `pkix.Name` reads it: every O in order, and the
/// last CN.
pub(crate) fn subject_parts(n: &X509NameRef) -> (Option<String>, Vec<String>) {
    let text = |e: &openssl::x509::X509NameEntryRef| e.data().to_string().unwrap_or_default();
    let cn = n.entries_by_nid(Nid::COMMONNAME).last().map(text);
    let orgs = n.entries_by_nid(Nid::ORGANIZATIONNAME).map(text).collect();
    (cn, orgs)
}

/// The subject alternative names a CSR asks for.
#[derive(Debug, Default, Clone)]
pub(crate) struct RequestedSans {
    pub dns: Vec<String>,
    pub ips: Vec<Vec<u8>>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

impl RequestedSans {
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty() && self.emails.is_empty() && self.uris.is_empty()
    }
}

/// A parsed, signature-checked PKCS#10 request.
pub(crate) struct ParsedCsr {
    pub req: X509Req,
    pub cn: Option<String>,
    pub orgs: Vec<String>,
    pub sans: RequestedSans,
}

/// Parses `pem` as kube-apiserver's `ParseCSR` + `CheckSignature` do. The
/// error strings follow Go's where a client could depend on them.
pub(crate) fn parse_csr(pem: &[u8]) -> Result<ParsedCsr, String> {
    let text = String::from_utf8_lossy(pem);
    let begin = "-----BEGIN CERTIFICATE REQUEST-----";
    // pem.Decode takes the first PEM block of any type; it must be a CSR.
    let first_block = text.find("-----BEGIN ");
    match first_block {
        Some(i) if text[i..].starts_with(begin) => {}
        _ => return Err("PEM block type must be CERTIFICATE REQUEST".into()),
    }
    let req =
        X509Req::from_pem(pem).map_err(|e| format!("x509: malformed certificate request ({e})"))?;
    let key = req
        .public_key()
        .map_err(|e| format!("x509: unsupported public key ({e})"))?;
    match req.verify(&key) {
        Ok(true) => {}
        _ => return Err("x509: ECDSA verification failure".into()),
    }
    let (cn, orgs) = subject_parts(req.subject_name());
    let sans = requested_sans(&req);
    Ok(ParsedCsr {
        req,
        cn,
        orgs,
        sans,
    })
}

/// Reads the SAN extension of a request by carrying its extensions over to a
/// scratch certificate (rust-openssl reads SANs only from certificates).
fn requested_sans(req: &X509Req) -> RequestedSans {
    let mut out = RequestedSans::default();
    let Ok(exts) = req.extensions() else {
        return out;
    };
    let key = testpki::key();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_pubkey(&key).unwrap();
    for ext in &exts {
        // A duplicate or odd extension only affects this scratch copy.
        let _ = b.append_extension2(ext);
    }
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let scratch = b.build();
    if let Some(names) = scratch.subject_alt_names() {
        for n in &names {
            if let Some(d) = n.dnsname() {
                out.dns.push(d.to_string());
            } else if let Some(ip) = n.ipaddress() {
                out.ips.push(ip.to_vec());
            } else if let Some(e) = n.email() {
                out.emails.push(e.to_string());
            } else if let Some(u) = n.uri() {
                out.uris.push(u.to_string());
            }
        }
    }
    out
}

/// How the signer deviates from correct issuance (a test fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IssueDeviation {
    None,
    WrongKey,
    WrongSubject,
}

/// The cluster CA: a self-signed root (CN=kubernetes, 10 years, like kubeadm).
/// Optionally a second CA signs kubelet client certificates, as
/// kube-controller-manager's `--cluster-signing-kube-apiserver-client-kubelet-*`
/// flags allow; kube-apiserver then trusts it for client auth too
/// (`--client-ca-file` holds both).
pub(crate) struct ClusterCa {
    ca: TestCa,
    store: X509Store,
    client_signer: Mutex<Option<(TestCa, X509Store)>>,
}

impl ClusterCa {
    pub fn new() -> ClusterCa {
        let now = now_unix();
        let ca = TestCa::self_signed(
            &testpki::name(&[], "kubernetes"),
            testpki::key(),
            SERIAL_BITS,
            now - HOUR,
            now + 3650 * DAY,
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .key_cert_sign(),
            true,
        );
        let mut sb = X509StoreBuilder::new().unwrap();
        sb.add_cert(ca.cert.clone()).unwrap();
        // The x509 authenticator verifies with ExtKeyUsageClientAuth.
        sb.set_purpose(X509PurposeId::SSL_CLIENT).unwrap();
        ClusterCa {
            ca,
            store: sb.build(),
            client_signer: Mutex::new(None),
        }
    }

    /// From now on, kubelet client certificates (`client auth` CSRs) are
    /// signed by `signer`, which is trusted for client auth too.
    pub fn set_client_signer(&self, signer: TestCa) {
        let mut sb = X509StoreBuilder::new().unwrap();
        sb.add_cert(signer.cert.clone()).unwrap();
        sb.set_purpose(X509PurposeId::SSL_CLIENT).unwrap();
        *self.client_signer.lock().unwrap() = Some((signer, sb.build()));
    }

    /// The CA certificate.
    pub fn cert(&self) -> &X509 {
        &self.ca.cert
    }

    pub fn cert_pem(&self) -> String {
        testpki::pem(self.cert())
    }

    /// A leaf builder for `subject` over `key`, issued by this CA.
    fn leaf_builder<T: HasPublic>(
        &self,
        subject: &X509NameRef,
        key: &PKeyRef<T>,
        not_before: i64,
        not_after: i64,
    ) -> X509Builder {
        testpki::builder(
            subject,
            self.cert().subject_name(),
            key,
            SERIAL_BITS,
            not_before,
            not_after,
        )
    }

    /// The serving certificate: CN=kube-apiserver, SANs IP:127.0.0.1 and
    /// DNS:localhost (plus the in-cluster names), EKU serverAuth.
    pub fn serving_cert(&self) -> (X509, PKey<Private>) {
        let key = testpki::key();
        let now = now_unix();
        let mut b = self.leaf_builder(
            &testpki::name(&[], "kube-apiserver"),
            &key,
            now - HOUR,
            now + 365 * DAY,
        );
        testpki::append_leaf_extensions(
            &mut b,
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment(),
            Some(ExtendedKeyUsage::new().server_auth()),
        );
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .dns("kubernetes")
            .dns("kubernetes.default")
            .dns("kubernetes.default.svc")
            .build(&b.x509v3_context(Some(self.cert()), None))
            .unwrap();
        b.append_extension(san).unwrap();
        (self.ca.sign_leaf(b), key)
    }

    /// A client certificate `CN=<cn>, O=<orgs>` valid from `not_before` to
    /// `not_after` (Unix seconds). Returns the certificate and its key.
    pub fn client_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        not_before: i64,
        not_after: i64,
    ) -> (X509, PKey<Private>) {
        let key = testpki::key();
        let mut b = self.leaf_builder(&testpki::name(orgs, cn), &key, not_before, not_after);
        testpki::append_leaf_extensions(
            &mut b,
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment(),
            Some(ExtendedKeyUsage::new().client_auth()),
        );
        (self.ca.sign_leaf(b), key)
    }

    /// Signs an approved CSR with kube-controller-manager's
    /// `PermissiveSigningPolicy`: subject and SANs from the request, every
    /// other requested extension dropped, key usages and EKUs from
    /// `spec.usages`, CA:FALSE, NotBefore = now - backdate, NotAfter = now +
    /// ttl (ttl < 8 h) or now + ttl - backdate, truncated to the CA's NotAfter.
    pub fn sign(
        &self,
        csr: &ParsedCsr,
        usages: &[String],
        ttl: Duration,
        backdate: Duration,
        deviation: IssueDeviation,
    ) -> Result<X509, String> {
        let now = now_unix();
        let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 4);
        let back = i64::try_from(backdate.as_secs()).unwrap_or(0);
        let not_before = now - back;
        let mut not_after = if ttl_s < 8 * HOUR {
            now + ttl_s
        } else {
            now + ttl_s - back
        };
        let ca_not_after = asn1_to_unix(self.cert().not_after());
        if not_after >= ca_not_after {
            not_after = ca_not_after;
        }
        if now >= ca_not_after {
            return Err(format!(
                "refusing to sign a certificate that expired in the past: NotAfter={ca_not_after}"
            ));
        }
        let wrong_key;
        let pubkey: PKey<Public> = match deviation {
            IssueDeviation::WrongKey => {
                wrong_key = testpki::key();
                PKey::public_key_from_der(&wrong_key.public_key_to_der().unwrap()).unwrap()
            }
            _ => csr.req.public_key().map_err(|e| e.to_string())?,
        };
        let subject = match deviation {
            IssueDeviation::WrongSubject => {
                testpki::name(&["system:nodes"], "system:node:wrong-subject")
            }
            _ => {
                // Copy the request's subject entries as they are.
                let mut nb = X509Name::builder().unwrap();
                for e in csr.req.subject_name().entries() {
                    nb.append_entry_by_nid(
                        e.object().nid(),
                        &e.data().to_string().unwrap_or_default(),
                    )
                    .map_err(|e| e.to_string())?;
                }
                nb.build()
            }
        };
        let signer = self.client_signer.lock().unwrap();
        let issuer = match signer.as_ref() {
            Some((other, _)) if usages.iter().any(|u| u == "client auth") => other,
            _ => &self.ca,
        };
        let mut b = testpki::builder(
            &subject,
            issuer.cert.subject_name(),
            &pubkey,
            SERIAL_BITS,
            not_before,
            not_after,
        );

        let mut ku = KeyUsage::new();
        ku.critical();
        let mut any_ku = false;
        let mut eku = ExtendedKeyUsage::new();
        let mut any_eku = false;
        for u in usages {
            match u.as_str() {
                "signing" | "digital signature" => {
                    ku.digital_signature();
                    any_ku = true;
                }
                "content commitment" => {
                    ku.non_repudiation();
                    any_ku = true;
                }
                "key encipherment" => {
                    ku.key_encipherment();
                    any_ku = true;
                }
                "key agreement" => {
                    ku.key_agreement();
                    any_ku = true;
                }
                "data encipherment" => {
                    ku.data_encipherment();
                    any_ku = true;
                }
                "cert sign" => {
                    ku.key_cert_sign();
                    any_ku = true;
                }
                "crl sign" => {
                    ku.crl_sign();
                    any_ku = true;
                }
                "encipher only" => {
                    ku.encipher_only();
                    any_ku = true;
                }
                "decipher only" => {
                    ku.decipher_only();
                    any_ku = true;
                }
                "any" => {
                    eku.other("anyExtendedKeyUsage");
                    any_eku = true;
                }
                "server auth" => {
                    eku.server_auth();
                    any_eku = true;
                }
                "client auth" => {
                    eku.client_auth();
                    any_eku = true;
                }
                "code signing" => {
                    eku.code_signing();
                    any_eku = true;
                }
                "email protection" | "s/mime" => {
                    eku.email_protection();
                    any_eku = true;
                }
                "ipsec end system" => {
                    eku.other("ipsecEndSystem");
                    any_eku = true;
                }
                "ipsec tunnel" => {
                    eku.other("ipsecTunnel");
                    any_eku = true;
                }
                "ipsec user" => {
                    eku.other("ipsecUser");
                    any_eku = true;
                }
                "timestamping" => {
                    eku.time_stamping();
                    any_eku = true;
                }
                "ocsp signing" => {
                    eku.other("OCSPSigning");
                    any_eku = true;
                }
                "microsoft sgc" => {
                    eku.ms_sgc();
                    any_eku = true;
                }
                "netscape sgc" => {
                    eku.ns_sgc();
                    any_eku = true;
                }
                other => return Err(format!("unrecognized usage values: [{other:?}]")),
            }
        }
        if any_ku {
            b.append_extension(ku.build().unwrap()).unwrap();
        }
        if any_eku {
            b.append_extension(eku.build().unwrap()).unwrap();
        }
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        if deviation != IssueDeviation::WrongSubject && !csr.sans.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for d in &csr.sans.dns {
                san.dns(d);
            }
            for ip in &csr.sans.ips {
                san.ip(&ip_text(ip));
            }
            for e in &csr.sans.emails {
                san.email(e);
            }
            for u in &csr.sans.uris {
                san.uri(u);
            }
            let ext = san
                .build(&b.x509v3_context(Some(&issuer.cert), None))
                .map_err(|e| e.to_string())?;
            b.append_extension(ext).unwrap();
        }
        Ok(issuer.sign_leaf(b))
    }

    /// Verifies a presented client chain against the cluster CA at the
    /// current time, for client auth, as the x509 authenticator does.
    pub fn verify_client(&self, leaf: &X509, chain: &[X509]) -> Result<(), String> {
        let mut untrusted = Stack::new().unwrap();
        for c in chain {
            untrusted.push(c.clone()).unwrap();
        }
        let verify = |store: &X509Store| {
            let mut ctx = X509StoreContext::new().unwrap();
            ctx.init(store, leaf, &untrusted, |c| {
                let ok = c.verify_cert()?;
                Ok((ok, c.error()))
            })
            .map_err(|e| e.to_string())
        };
        let res = verify(&self.store)?;
        if res.0 {
            return Ok(());
        }
        if let Some((_, other)) = self.client_signer.lock().unwrap().as_ref() {
            if verify(other)?.0 {
                return Ok(());
            }
        }
        Err(format!("x509: {}", res.1.error_string()))
    }
}

fn ip_text(ip: &[u8]) -> String {
    match ip.len() {
        4 => std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(ip);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => String::new(),
    }
}

pub(crate) fn asn1_to_unix(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = Asn1Time::from_unix(0).unwrap();
    let d = epoch.diff(t).unwrap();
    i64::from(d.days) * DAY + i64::from(d.secs)
}
