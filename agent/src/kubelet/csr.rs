//! Getting a kubelet certificate through the Kubernetes CSR API
//! (`certificates.k8s.io/v1`), and checking what comes back before anything
//! is installed. The API is reached only through the `kube::Client` given in;
//! key generation and checks are pure apart from randomness.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509NameBuilder, X509ReqBuilder, X509StoreContext, X509};

pub use crate::config::KeyType;
use crate::x509::name::common_name;
use crate::x509::openssl_reason;

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// Tolerated clock skew between the node and the signer for notBefore.
const NOT_BEFORE_SKEW_SECS: i64 = 300;

/// Which kubelet certificate is requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    Client,
    Serving { dns: Vec<String>, ips: Vec<IpAddr> },
}

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("generating a {key_type:?} key: {reason}")]
    GenerateKey { key_type: KeyType, reason: String },
    #[error("building the certificate request for node {node}: {reason}")]
    BuildRequest { node: String, reason: String },
    #[error("the kubelet-serving certificate needs at least one DNS name or IP address; set kubelet.serving-dns or kubelet.serving-ips")]
    NoServingNames,
    #[error("creating the CertificateSigningRequest: {source}")]
    Create { source: kube::Error },
    #[error("{call}: the API server did not answer within {timeout:?}")]
    NoAnswer {
        call: &'static str,
        timeout: Duration,
    },
    #[error("the API server throttled the CSR (429){}", retry_after.map(|d| format!("; it asks to retry after {d:?}")).unwrap_or_default())]
    Throttled { retry_after: Option<Duration> },
    #[error("CertificateSigningRequest {name} was denied ({reason}): {message}")]
    Denied {
        name: String,
        reason: String,
        message: String,
    },
    #[error("CertificateSigningRequest {name} failed ({reason}): {message}")]
    Failed {
        name: String,
        reason: String,
        message: String,
    },
    #[error("CertificateSigningRequest {name} got no certificate within {timeout:?}; is the kubelet CSR approver running?")]
    Timeout { name: String, timeout: Duration },
    #[error("watching CertificateSigningRequest {name}: {reason}")]
    Watch { name: String, reason: String },
    #[error("the issued certificate from CSR {name} is unusable: {reason}; it was discarded")]
    Rejected { name: String, reason: String },
}

impl CsrError {
    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after } => *retry_after,
            _ => None,
        }
    }
}

pub fn generate_key(key_type: KeyType) -> Result<PKey<Private>, CsrError> {
    let err = |e: openssl::error::ErrorStack| CsrError::GenerateKey {
        key_type,
        reason: openssl_reason(&e),
    };
    let ec = |nid| -> Result<PKey<Private>, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(nid)?;
        PKey::from_ec_key(EcKey::generate(&group)?)
    };
    match key_type {
        KeyType::EcdsaP256 => ec(Nid::X9_62_PRIME256V1).map_err(err),
        KeyType::EcdsaP384 => ec(Nid::SECP384R1).map_err(err),
        KeyType::Rsa2048 => Rsa::generate(2048).and_then(PKey::from_rsa).map_err(err),
        KeyType::Rsa4096 => Rsa::generate(4096).and_then(PKey::from_rsa).map_err(err),
    }
}

/// A PEM PKCS#10 request with subject `O=system:nodes, CN=system:node:<node>`.
pub fn build_request(
    key: &PKey<Private>,
    node: &str,
    purpose: &Purpose,
) -> Result<Vec<u8>, CsrError> {
    let err = |e: openssl::error::ErrorStack| CsrError::BuildRequest {
        node: node.to_string(),
        reason: openssl_reason(&e),
    };
    let mut name = X509NameBuilder::new().map_err(err)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "system:nodes")
        .map_err(err)?;
    name.append_entry_by_nid(Nid::COMMONNAME, &format!("system:node:{node}"))
        .map_err(err)?;
    let name = name.build();
    let mut req = X509ReqBuilder::new().map_err(err)?;
    req.set_version(0).map_err(err)?;
    req.set_subject_name(&name).map_err(err)?;
    req.set_pubkey(key).map_err(err)?;
    if let Purpose::Serving { dns, ips } = purpose {
        if dns.is_empty() && ips.is_empty() {
            return Err(CsrError::NoServingNames);
        }
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        for ip in ips {
            san.ip(&ip.to_string());
        }
        let ext = san.build(&req.x509v3_context(None)).map_err(err)?;
        let mut stack = Stack::new().map_err(err)?;
        stack.push(ext).map_err(err)?;
        req.add_extensions(&stack).map_err(err)?;
    }
    req.sign(key, MessageDigest::sha256()).map_err(err)?;
    req.build().to_pem().map_err(err)
}

/// The CSR object: signer and usages per purpose (kube-controller-manager
/// approves and signs only requests of exactly this shape).
pub fn csr_object(
    request_pem: Vec<u8>,
    purpose: &Purpose,
    key_type: KeyType,
    expiration_seconds: Option<i32>,
) -> CertificateSigningRequest {
    let (signer, usage) = match purpose {
        Purpose::Client => (CLIENT_SIGNER, "client auth"),
        Purpose::Serving { .. } => (SERVING_SIGNER, "server auth"),
    };
    let mut usages = vec!["digital signature".to_string()];
    // Key encipherment only makes sense for RSA key exchange.
    if key_type.is_rsa() {
        usages.push("key encipherment".to_string());
    }
    usages.push(usage.to_string());
    CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-cert-agent-".to_string()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem),
            signer_name: signer.to_string(),
            usages: Some(usages),
            expiration_seconds,
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    }
}

/// Creates the CSR (the request bounded by `api_timeout`) and waits until it
/// holds a certificate (PEM), is denied or failed, or `timeout` passes.
/// Returns the CSR's name with the PEM.
pub async fn submit_and_wait(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    api_timeout: Duration,
    timeout: Duration,
) -> Result<(String, Vec<u8>), CsrError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let params = PostParams::default();
    let create = tokio::time::timeout(api_timeout, api.create(&params, csr));
    let Ok(created) = create.await else {
        return Err(CsrError::NoAnswer {
            call: "creating the CertificateSigningRequest",
            timeout: api_timeout,
        });
    };
    let created = match created {
        Ok(c) => c,
        Err(kube::Error::Api(status)) if status.code == 429 => {
            // A Status carries retryAfterSeconds; API Priority and Fairness
            // answers in plain text, and then our own backoff applies.
            let secs = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0);
            return Err(CsrError::Throttled {
                retry_after: secs.map(|s| Duration::from_secs(u64::from(s))),
            });
        }
        Err(source) => return Err(CsrError::Create { source }),
    };
    let name = created.metadata.name.clone().unwrap_or_default();
    if let Some(result) = outcome(&name, &created) {
        return result.map(|pem| (name, pem));
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let wait = async {
        let mut stream = watcher(api, config).boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    if let Some(result) = outcome(&name, &obj) {
                        return result;
                    }
                }
                Ok(_) => {}
                // The watcher retries by itself; a hard error ends the wait.
                Err(e) => {
                    return Err(CsrError::Watch {
                        name: name.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        Err(CsrError::Watch {
            name: name.clone(),
            reason: "the watch ended".into(),
        })
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r.map(|pem| (name, pem)),
        Err(_) => Err(CsrError::Timeout { name, timeout }),
    }
}

/// `Some` once the CSR is finished one way or the other.
fn outcome(name: &str, csr: &CertificateSigningRequest) -> Option<Result<Vec<u8>, CsrError>> {
    let status = csr.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        if c.status != "True" && !c.status.is_empty() {
            continue;
        }
        let reason = c.reason.clone().unwrap_or_default();
        let message = c.message.clone().unwrap_or_default();
        match c.type_.as_str() {
            "Denied" => {
                return Some(Err(CsrError::Denied {
                    name: name.into(),
                    reason,
                    message,
                }))
            }
            "Failed" => {
                return Some(Err(CsrError::Failed {
                    name: name.into(),
                    reason,
                    message,
                }))
            }
            _ => {}
        }
    }
    status
        .certificate
        .as_ref()
        .filter(|c| !c.0.is_empty())
        .map(|c| Ok(c.0.clone()))
}

/// Checks an issued certificate before it may replace anything: it parses,
/// matches `key`, carries the requested subject, chains to the cluster CA and
/// is inside its validity window.
pub fn verify_issued(
    csr_name: &str,
    chain_pem: &[u8],
    key: &PKey<Private>,
    node: &str,
    cluster_ca_pem: Option<&[u8]>,
    now: i64,
) -> Result<X509, CsrError> {
    let reject = |reason: String| CsrError::Rejected {
        name: csr_name.to_string(),
        reason,
    };
    let chain = X509::stack_from_pem(chain_pem)
        .map_err(|e| reject(format!("it does not parse ({})", openssl_reason(&e))))?;
    let leaf = chain
        .first()
        .cloned()
        .ok_or_else(|| reject("it holds no certificate".into()))?;
    let leaf_key = leaf.public_key().map_err(|e| reject(openssl_reason(&e)))?;
    if !leaf_key.public_eq(key) {
        return Err(reject(
            "it was issued for a different key than the one requested".into(),
        ));
    }
    let cn = common_name(leaf.subject_name());
    let orgs: Vec<String> = leaf
        .subject_name()
        .entries_by_nid(Nid::ORGANIZATIONNAME)
        .filter_map(|e| e.data().to_string().ok())
        .collect();
    let expected = format!("system:node:{node}");
    if cn.as_deref() != Some(expected.as_str()) || orgs != ["system:nodes"] {
        return Err(reject(format!(
            "its subject is CN={}, O={}, not CN={expected}, O=system:nodes",
            cn.unwrap_or_default(),
            orgs.join("+")
        )));
    }
    let info =
        crate::x509::cert::CertInfo::from_pem(chain_pem).map_err(|e| reject(e.to_string()))?;
    if info.not_before > now + NOT_BEFORE_SKEW_SECS || info.not_after <= now {
        return Err(reject(format!(
            "it is valid from {} to {}, which does not include now ({})",
            crate::x509::time::rfc3339(info.not_before),
            crate::x509::time::rfc3339(info.not_after),
            crate::x509::time::rfc3339(now)
        )));
    }
    let ca_pem = cluster_ca_pem.ok_or_else(|| reject("the kubeconfig names no cluster CA to check it against; set certificate-authority(-data)".into()))?;
    let cas = X509::stack_from_pem(ca_pem).map_err(|e| {
        reject(format!(
            "the cluster CA does not parse ({})",
            openssl_reason(&e)
        ))
    })?;
    let mut store = X509StoreBuilder::new().map_err(|e| reject(openssl_reason(&e)))?;
    for ca in cas {
        store.add_cert(ca).map_err(|e| reject(openssl_reason(&e)))?;
    }
    let store = store.build();
    let mut intermediates = Stack::new().map_err(|e| reject(openssl_reason(&e)))?;
    for c in chain.iter().skip(1) {
        intermediates
            .push(c.clone())
            .map_err(|e| reject(openssl_reason(&e)))?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| reject(openssl_reason(&e)))?;
    let verdict = ctx
        .init(&store, &leaf, &intermediates, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().error_string().to_string()))
        })
        .map_err(|e| reject(openssl_reason(&e)))?;
    if !verdict.0 {
        return Err(reject(format!(
            "it does not chain to the cluster CA ({})",
            verdict.1
        )));
    }
    Ok(leaf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::x509::{X509Builder, X509Req};

    use super::*;
    use crate::x509::testpki;
    use crate::x509::time::now_unix;

    /// Signs `req_pem` with `ca` the way a kubelet signer would.
    fn sign(ca: &testpki::TestCa, req_pem: &[u8], lifetime_days: i64) -> Vec<u8> {
        let req = X509Req::from_pem(req_pem).unwrap();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(req.subject_name()).unwrap();
        b.set_issuer_name(ca.cert.subject_name()).unwrap();
        b.set_pubkey(&req.public_key().unwrap()).unwrap();
        b.set_not_before(&Asn1Time::from_unix(now_unix() - 60).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(now_unix() + lifetime_days * 86_400).unwrap())
            .unwrap();
        b.sign(&ca.key, MessageDigest::sha256()).unwrap();
        b.build().to_pem().unwrap()
    }

    #[test]
    fn client_request_has_the_kubelet_subject_and_no_sans() {
        let key = generate_key(KeyType::EcdsaP256).unwrap();
        let pem = build_request(&key, "n1", &Purpose::Client).unwrap();
        let req = X509Req::from_pem(&pem).unwrap();
        assert_eq!(
            crate::x509::name::name_to_string(req.subject_name()),
            "O=system:nodes, CN=system:node:n1"
        );
        assert!(req.extensions().map(|e| e.len()).unwrap_or(0) == 0);
        assert!(req.verify(&req.public_key().unwrap()).unwrap());
    }

    #[test]
    fn usages_add_key_encipherment_only_for_rsa() {
        let o = csr_object(vec![], &Purpose::Client, KeyType::EcdsaP256, None);
        assert_eq!(o.spec.usages.unwrap(), ["digital signature", "client auth"]);
        assert_eq!(o.spec.signer_name, CLIENT_SIGNER);
        let o = csr_object(vec![], &Purpose::Client, KeyType::Rsa2048, Some(3600));
        assert_eq!(
            o.spec.usages.unwrap(),
            ["digital signature", "key encipherment", "client auth"]
        );
        assert_eq!(o.spec.expiration_seconds, Some(3600));
        let o = csr_object(
            vec![],
            &Purpose::Serving {
                dns: vec!["n1".into()],
                ips: vec![],
            },
            KeyType::EcdsaP384,
            None,
        );
        assert_eq!(o.spec.signer_name, SERVING_SIGNER);
        assert_eq!(o.spec.usages.unwrap(), ["digital signature", "server auth"]);
    }

    #[test]
    fn serving_request_needs_a_name() {
        let key = generate_key(KeyType::EcdsaP256).unwrap();
        let err = build_request(
            &key,
            "n1",
            &Purpose::Serving {
                dns: vec![],
                ips: vec![],
            },
        )
        .unwrap_err();
        assert!(matches!(err, CsrError::NoServingNames));
    }

    #[test]
    fn every_key_type_generates() {
        for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let key = generate_key(kt).unwrap();
            build_request(&key, "n1", &Purpose::Client).unwrap();
        }
    }

    #[test]
    fn properly_issued_certificate_is_accepted() {
        let ca = testpki::good_ca("cluster");
        let key = generate_key(KeyType::EcdsaP256).unwrap();
        let issued = sign(
            &ca,
            &build_request(&key, "n1", &Purpose::Client).unwrap(),
            1,
        );
        let ca_pem = ca.cert.to_pem().unwrap();
        verify_issued("csr-1", &issued, &key, "n1", Some(&ca_pem), now_unix()).unwrap();
    }

    #[test]
    fn certificate_for_another_key_subject_ca_or_time_is_rejected() {
        let ca = testpki::good_ca("cluster");
        let ca_pem = ca.cert.to_pem().unwrap();
        let key = generate_key(KeyType::EcdsaP256).unwrap();
        let other_key = generate_key(KeyType::EcdsaP256).unwrap();
        let now = now_unix();

        let wrong_key = sign(
            &ca,
            &build_request(&other_key, "n1", &Purpose::Client).unwrap(),
            1,
        );
        let e = verify_issued("c", &wrong_key, &key, "n1", Some(&ca_pem), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("different key"), "{e}");

        let wrong_subject = sign(
            &ca,
            &build_request(&key, "n2", &Purpose::Client).unwrap(),
            1,
        );
        let e = verify_issued("c", &wrong_subject, &key, "n1", Some(&ca_pem), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("system:node:n2"), "{e}");

        let rogue = testpki::good_ca("rogue");
        let wrong_ca = sign(
            &rogue,
            &build_request(&key, "n1", &Purpose::Client).unwrap(),
            1,
        );
        let e = verify_issued("c", &wrong_ca, &key, "n1", Some(&ca_pem), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not chain"), "{e}");

        let good = sign(
            &ca,
            &build_request(&key, "n1", &Purpose::Client).unwrap(),
            1,
        );
        let e = verify_issued("c", &good, &key, "n1", Some(&ca_pem), now + 3 * 86_400)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not include now"), "{e}");

        let e = verify_issued("c", b"garbage", &key, "n1", Some(&ca_pem), now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not parse") || e.contains("no certificate"),
            "{e}"
        );
    }
}
