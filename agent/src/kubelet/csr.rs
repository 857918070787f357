//! Getting a kubelet certificate through the Kubernetes CSR API
//! (`certificates.k8s.io/v1`), and checking what comes back before anything
//! is installed. The API is reached only through the `kube::Client` given in;
//! key generation and checks are pure apart from randomness.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
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
use tracing::{debug, info};

use crate::k8s::failure::ApiFailure;
use crate::k8s::watch::{self, Change};
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
    #[error("CertificateSigningRequest {name} got no certificate within {timeout:?}; is the kubelet CSR approver running? (kube-controller-manager approves kubelet client CSRs only with kubeadm's auto-approve bindings, and never serving CSRs: approve it with `kubectl certificate approve {name}`)")]
    Timeout { name: String, timeout: Duration },
    #[error("CertificateSigningRequest {name} was deleted while the agent waited for its certificate ({noticed}); the next attempt files a new one")]
    Deleted {
        name: String,
        /// How the agent learnt it: a watch event, or a relist without it.
        noticed: &'static str,
    },
    #[error("CertificateSigningRequest {name} was deleted and created again while the agent waited for its certificate (uid {found}, not {filed}): it is not the agent's request, and the next attempt files a new one with a new key")]
    Replaced {
        name: String,
        /// The uid of the CSR the agent filed (or found as its own).
        filed: String,
        /// The uid of the CSR now under that name.
        found: String,
    },
    #[error("CertificateSigningRequest {name} exists but is not the agent's request for this key ({reason}); delete it with `kubectl delete csr {name}`")]
    Incompatible { name: String, reason: String },
    #[error("reading CertificateSigningRequest {name}: {source}")]
    Get { name: String, source: kube::Error },
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

    /// The API call's failure, when an API call failed.
    pub fn api_failure(&self) -> Option<ApiFailure> {
        match self {
            Self::Create { source } | Self::Get { source, .. } => Some(ApiFailure::of(source)),
            _ => None,
        }
    }

    /// Whether the pending key must be thrown away: the CSR made from it is
    /// finished without a certificate (denied, failed, deleted, or not ours).
    pub fn ends_the_request(&self) -> bool {
        matches!(
            self,
            Self::Denied { .. }
                | Self::Failed { .. }
                | Self::Deleted { .. }
                | Self::Replaced { .. }
                | Self::Incompatible { .. }
                | Self::Rejected { .. }
        )
    }
}

/// The CSR's name, derived from its key, subject and usages as kubelet
/// names its bootstrap CSRs (`node-csr-<digest>`): the same key always gives
/// the same name, so a retry (or a restarted agent) finds its own pending
/// CSR instead of filing another one.
pub fn csr_name(key: &PKey<Private>, node: &str, usages: &[String]) -> Result<String, CsrError> {
    let err = |e: openssl::error::ErrorStack| CsrError::BuildRequest {
        node: node.to_string(),
        reason: openssl_reason(&e),
    };
    let public = key.public_key_to_der().map_err(err)?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    // Each part base64url-encoded and ended by '|', a byte base64url never
    // has: two different inputs can never write the same bytes.
    let mut input = String::new();
    for part in [
        public.as_slice(),
        format!("system:node:{node}").as_bytes(),
        b"system:nodes",
    ]
    .into_iter()
    .chain(usages.iter().map(String::as_bytes))
    {
        input.push_str(&b64(part));
        input.push('|');
    }
    Ok(format!(
        "node-csr-{}",
        b64(&openssl::sha::sha256(input.as_bytes()))
    ))
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

/// The key usages a CSR of `purpose` asks for.
pub fn usages_of(purpose: &Purpose, key_type: KeyType) -> Vec<String> {
    let usage = match purpose {
        Purpose::Client => "client auth",
        Purpose::Serving { .. } => "server auth",
    };
    let mut usages = vec!["digital signature".to_string()];
    // Key encipherment only makes sense for RSA key exchange.
    if key_type.is_rsa() {
        usages.push("key encipherment".to_string());
    }
    usages.push(usage.to_string());
    usages
}

/// The CSR object named `name`: signer and usages per purpose
/// (kube-controller-manager approves and signs only requests of exactly this
/// shape).
pub fn csr_object(
    name: &str,
    request_pem: Vec<u8>,
    purpose: &Purpose,
    key_type: KeyType,
    expiration_seconds: Option<i32>,
) -> CertificateSigningRequest {
    let signer = match purpose {
        Purpose::Client => CLIENT_SIGNER,
        Purpose::Serving { .. } => SERVING_SIGNER,
    };
    let usages = usages_of(purpose, key_type);
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
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

/// Files the CSR (each API request bounded by `api_timeout`) and waits until
/// it holds a certificate (PEM), is denied, failed or gone, or `timeout`
/// passes. A CSR of that name that exists already is this key's own pending
/// request (see [`csr_name`]): it is checked to be compatible and waited on,
/// so retries never pile up CSRs. The wait survives what client-go's
/// `WaitForCertificate` survives: a 410 or a dropped connection relists.
/// The CSR is followed by the uid the API gave it at create (or get): a
/// Deleted event, a relist without it, or a CSR of another uid under its
/// name ends the wait at once (see [`Followed`]). Returns the CSR's name
/// with the PEM.
pub async fn submit_and_wait(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    key: &PKey<Private>,
    api_timeout: Duration,
    timeout: Duration,
) -> Result<(String, Vec<u8>), CsrError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let name = csr.metadata.name.clone().unwrap_or_default();
    let bounded = |call: &'static str| {
        move |_| CsrError::NoAnswer {
            call,
            timeout: api_timeout,
        }
    };
    let create = tokio::time::timeout(api_timeout, api.create(&PostParams::default(), csr))
        .await
        .map_err(bounded("creating the CertificateSigningRequest"))?;
    let created = match create {
        Ok(c) => c,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = tokio::time::timeout(api_timeout, api.get(&name))
                .await
                .map_err(bounded("reading the existing CertificateSigningRequest"))?
                .map_err(|source| CsrError::Get {
                    name: name.clone(),
                    source,
                })?;
            ensure_compatible(&name, &existing, csr, key)?;
            info!(csr = %name, "found this key's own pending CertificateSigningRequest {name}; waiting for it instead of filing another");
            existing
        }
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
    if let Some(result) = outcome(&name, &created) {
        return result.map(|pem| (name, pem));
    }
    let followed = Followed::new(&name, created.metadata.uid.clone());
    match tokio::time::timeout(timeout, wait_for(api, followed)).await {
        Ok(r) => r.map(|pem| (name, pem)),
        Err(_) => Err(CsrError::Timeout { name, timeout }),
    }
}

/// Watches the CSR until it is finished or gone. Watch errors (410 Gone, a
/// dropped connection, a restarting API server) are waited out with the
/// watches' one retry schedule ([`crate::k8s::watch`]); the caller's timeout
/// bounds the wait.
async fn wait_for(
    api: Api<CertificateSigningRequest>,
    mut followed: Followed,
) -> Result<Vec<u8>, CsrError> {
    let name = followed.name.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watch::changes(move || watcher(api.clone(), config.clone()).boxed()).boxed();
    while let Some(change) = changes.next().await {
        let events = match change {
            Change::Listed { objects, .. } => std::iter::once(watcher::Event::Init)
                .chain(objects.into_iter().map(watcher::Event::InitApply))
                .chain(std::iter::once(watcher::Event::InitDone))
                .collect(),
            Change::Applied(obj) => vec![watcher::Event::Apply(obj)],
            Change::Deleted(obj) => vec![watcher::Event::Delete(obj)],
            Change::Failed { failure, .. } if failure.is_auth() => {
                // Only new credentials or RBAC fix it: waiting out the
                // timeout would only hide why.
                return Err(CsrError::Watch {
                    name,
                    reason: failure.to_string(),
                });
            }
            Change::Failed {
                failure, retry_in, ..
            } => {
                debug!(csr = %name, retry_in_ms = retry_in.as_millis() as u64, "watching CertificateSigningRequest {name}: {failure}; relisting");
                Vec::new()
            }
        };
        for event in events {
            if let Some(result) = followed.on(event) {
                return result;
            }
        }
    }
    Err(CsrError::Watch {
        name,
        reason: "the watch ended".into(),
    })
}

/// The one CSR a wait follows: its name and the uid the API gave it. Judges
/// each watcher event (pure): `Some` once the CSR is finished or gone.
/// A CSR is gone when a Deleted event comes, when a (re)list does not hold
/// it (it was deleted while the watch was down), or when the object under
/// its name has another uid (deleted and created again, say by someone
/// filing the same name): such an object is never taken for it.
#[derive(Debug)]
struct Followed {
    name: String,
    /// `None` when the API gave none (a real API server always does): then
    /// the uid is not compared.
    uid: Option<String>,
    /// During a (re)list: whether it held the CSR so far.
    listed: bool,
}

impl Followed {
    fn new(name: &str, uid: Option<String>) -> Self {
        Self {
            name: name.to_string(),
            uid,
            listed: false,
        }
    }

    fn on(
        &mut self,
        event: watcher::Event<CertificateSigningRequest>,
    ) -> Option<Result<Vec<u8>, CsrError>> {
        match event {
            watcher::Event::Init => {
                self.listed = false;
                None
            }
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                if obj.metadata.name.as_deref() != Some(self.name.as_str()) {
                    return None;
                }
                if let (Some(filed), Some(found)) = (&self.uid, &obj.metadata.uid) {
                    if filed != found {
                        return Some(Err(CsrError::Replaced {
                            name: self.name.clone(),
                            filed: filed.clone(),
                            found: found.clone(),
                        }));
                    }
                }
                self.listed = true;
                outcome(&self.name, &obj)
            }
            watcher::Event::InitDone if !self.listed => Some(Err(CsrError::Deleted {
                name: self.name.clone(),
                noticed: "a relist of it found none",
            })),
            watcher::Event::InitDone => None,
            watcher::Event::Delete(_) => Some(Err(CsrError::Deleted {
                name: self.name.clone(),
                noticed: "the watch said so",
            })),
        }
    }
}

/// Whether `existing` (a CSR of the name this key gives) is the request we
/// would file: same signer and usages, and a request for this key and
/// subject, as kubelet checks before it waits on a CSR it finds.
fn ensure_compatible(
    name: &str,
    existing: &CertificateSigningRequest,
    ours: &CertificateSigningRequest,
    key: &PKey<Private>,
) -> Result<(), CsrError> {
    let incompatible = |reason: String| CsrError::Incompatible {
        name: name.to_string(),
        reason,
    };
    if existing.spec.signer_name != ours.spec.signer_name {
        return Err(incompatible(format!(
            "its signer is {}, not {}",
            existing.spec.signer_name, ours.spec.signer_name
        )));
    }
    let sorted = |u: &Option<Vec<String>>| {
        let mut u = u.clone().unwrap_or_default();
        u.sort();
        u
    };
    if sorted(&existing.spec.usages) != sorted(&ours.spec.usages) {
        return Err(incompatible("its usages differ".into()));
    }
    let req = openssl::x509::X509Req::from_pem(&existing.spec.request.0).map_err(|e| {
        incompatible(format!(
            "its request does not parse ({})",
            openssl_reason(&e)
        ))
    })?;
    let public = req
        .public_key()
        .map_err(|e| incompatible(openssl_reason(&e)))?;
    if !public.public_eq(key) {
        return Err(incompatible(
            "it requests a certificate for another key".into(),
        ));
    }
    let ours_req = openssl::x509::X509Req::from_pem(&ours.spec.request.0)
        .map_err(|e| incompatible(openssl_reason(&e)))?;
    let subject =
        |r: &openssl::x509::X509ReqRef| crate::x509::name::name_to_string(r.subject_name());
    if subject(&req) != subject(&ours_req) {
        return Err(incompatible(format!(
            "its subject is {}, not {}",
            subject(&req),
            subject(&ours_req)
        )));
    }
    Ok(())
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

/// An issued certificate that may be installed.
#[derive(Debug)]
pub struct Verified {
    pub leaf: X509,
    /// Set when it does not chain to the kubeconfig's cluster CA: why, with
    /// both issuers. kubelet installs such a certificate (some clusters sign
    /// kubelet certificates with another CA than the API server's), and so
    /// does the agent, with a warning.
    pub chain_warning: Option<String>,
}

/// Checks an issued certificate the way kubelet does before it may replace
/// anything: it parses, matches `key`, carries the requested subject and is
/// inside its validity window. Whether it chains to the kubeconfig's cluster
/// CA is reported, not required.
pub fn verify_issued(
    csr_name: &str,
    chain_pem: &[u8],
    key: &PKey<Private>,
    node: &str,
    cluster_ca_pem: Option<&[u8]>,
    now: i64,
) -> Result<Verified, CsrError> {
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
            crate::time::rfc3339(info.not_before),
            crate::time::rfc3339(info.not_after),
            crate::time::rfc3339(now)
        )));
    }
    let chain_warning = match cluster_ca_pem {
        Some(ca_pem) => chain_problem(&leaf, &chain, ca_pem),
        None => None,
    };
    Ok(Verified {
        leaf,
        chain_warning,
    })
}

/// Why `leaf` (with the intermediates of `chain`) does not chain to the CAs
/// of `ca_pem`, naming both issuers; `None` when it does.
fn chain_problem(leaf: &X509, chain: &[X509], ca_pem: &[u8]) -> Option<String> {
    let issuer = crate::x509::name::name_to_string(leaf.issuer_name());
    let cas = match X509::stack_from_pem(ca_pem) {
        Ok(cas) if !cas.is_empty() => cas,
        Ok(_) => return Some("the kubeconfig's cluster CA holds no certificate".into()),
        Err(e) => {
            return Some(format!(
                "the kubeconfig's cluster CA does not parse ({})",
                openssl_reason(&e)
            ))
        }
    };
    let ca_names = cas
        .iter()
        .map(|c| crate::x509::name::name_to_string(c.subject_name()))
        .collect::<Vec<_>>()
        .join("; ");
    let verdict = (|| -> Result<(bool, String), openssl::error::ErrorStack> {
        let mut store = X509StoreBuilder::new()?;
        for ca in &cas {
            store.add_cert(ca.clone())?;
        }
        let store = store.build();
        let mut intermediates = Stack::new()?;
        for c in chain.iter().skip(1) {
            intermediates.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(&store, leaf, &intermediates, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().error_string().to_string()))
        })
    })();
    match verdict {
        Ok((true, _)) => None,
        Ok((false, why)) => Some(format!(
            "it is issued by \"{issuer}\" and does not chain to the kubeconfig's cluster CA \"{ca_names}\" ({why})"
        )),
        Err(e) => Some(format!(
            "it could not be checked against the kubeconfig's cluster CA \"{ca_names}\" ({})",
            openssl_reason(&e)
        )),
    }
}

#[cfg(test)]
mod tests;
