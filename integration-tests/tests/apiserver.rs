//! The test API server behaves like kube-apiserver (plus the
//! kube-controller-manager CSR controllers): checked with a plain HTTPS
//! client and with kube-rs (the agent's client), asserting outcomes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must panic loudly"
)]

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use futures_util::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use nca_test_apiserver::{ApiServer, Profile, Rbac, Throttle};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Name, X509ReqBuilder, X509StoreContext, X509};
use reqwest::blocking::{Client as Http, Response};
use serde_json::{json, Value};

const CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const TOKEN_ID: &str = "abcdef";
const TOKEN_SECRET: &str = "0123456789abcdef";

fn key() -> PKey<Private> {
    let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
}

/// A PEM CSR with subject `O=<orgs>, CN=<cn>` and optional DNS SANs.
fn csr_pem(key: &PKey<Private>, cn: &str, orgs: &[&str], dns: &[&str]) -> String {
    let mut n = X509Name::builder().unwrap();
    for o in orgs {
        n.append_entry_by_nid(Nid::ORGANIZATIONNAME, o).unwrap();
    }
    n.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let n = n.build();
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_pubkey(key).unwrap();
    if !dns.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        let ext = san.build(&b.x509v3_context(None)).unwrap();
        let mut exts = Stack::new().unwrap();
        exts.push(ext).unwrap();
        b.add_extensions(&exts).unwrap();
    }
    b.sign(key, MessageDigest::sha256()).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

fn node_csr_pem(key: &PKey<Private>, node: &str) -> String {
    csr_pem(key, &format!("system:node:{node}"), &["system:nodes"], &[])
}

fn csr_body(pem: &str, signer: &str, usages: &[&str], expiration: Option<i32>) -> Value {
    let mut spec = json!({
        "request": base64::engine::general_purpose::STANDARD.encode(pem),
        "signerName": signer,
        "usages": usages,
    });
    if let Some(e) = expiration {
        spec["expirationSeconds"] = json!(e);
    }
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "csr-"},
        "spec": spec,
    })
}

fn typed_csr(name: &str, pem: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.as_bytes().to_vec()),
            signer_name: CLIENT_KUBELET.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        status: None,
    }
}

/// A reqwest client trusting the cluster CA, optionally with a client cert.
fn http(server: &ApiServer, identity: Option<(&str, &str)>) -> Http {
    // No idle connections kept: each request is its own connection, so a
    // fault knob (drop, down/up) acts on exactly the request it is set for,
    // never on a pooled connection the server closed meanwhile (seen once as
    // IncompleteMessage on the first request after `up()`).
    let mut b = Http::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(server.cluster_ca_pem().as_bytes()).unwrap(),
        )
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pkcs8_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn bearer(r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
    r.header("Authorization", format!("Bearer {TOKEN_ID}.{TOKEN_SECRET}"))
}

fn json_of(r: Response) -> (u16, Value) {
    let code = r.status().as_u16();
    let body = r.bytes().unwrap();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (code, v)
}

/// A JSON request body (reqwest's `json` feature is not enabled).
trait JsonBody {
    fn json(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::blocking::RequestBuilder {
    fn json(self, v: &Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

fn csr_url(server: &ApiServer) -> String {
    format!(
        "{}/apis/certificates.k8s.io/v1/certificatesigningrequests",
        server.url()
    )
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_cert(server: &ApiServer, name: &str) -> X509 {
    let csr = wait_for("a signed certificate", Duration::from_secs(10), || {
        server.csr(name).filter(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.certificate.as_ref())
                .is_some()
        })
    });
    X509::from_pem(&csr.status.unwrap().certificate.unwrap().0).unwrap()
}

fn chains_to(ca_pem: &str, cert: &X509) -> bool {
    let ca = X509::from_pem(ca_pem.as_bytes()).unwrap();
    let mut sb = X509StoreBuilder::new().unwrap();
    sb.add_cert(ca).unwrap();
    let store = sb.build();
    let mut ctx = X509StoreContext::new().unwrap();
    ctx.init(&store, cert, &Stack::new().unwrap(), |c| c.verify_cert())
        .unwrap()
}

fn subject(cert: &X509) -> (String, Vec<String>) {
    let n = cert.subject_name();
    let get = |nid| {
        n.entries_by_nid(nid)
            .map(|e| e.data().as_slice().to_vec())
            .map(|b| String::from_utf8(b).unwrap())
            .collect::<Vec<_>>()
    };
    (
        get(Nid::COMMONNAME).pop().unwrap_or_default(),
        get(Nid::ORGANIZATIONNAME),
    )
}

fn conditions(c: &CertificateSigningRequest) -> Vec<(String, String, String)> {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            (
                c.type_,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
            )
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn kube_client(yaml: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// A node's kubeconfig in the kubelet layout: one PEM file with the client
/// certificate and key, referenced by both fields.
fn node_kubeconfig(server: &ApiServer, dir: &std::path::Path, node: &str) -> String {
    let now = SystemTime::now();
    let (cert, key) = server.issue_client_cert(
        &format!("system:node:{node}"),
        &["system:nodes"],
        now - Duration::from_secs(600),
        now + Duration::from_secs(3600),
    );
    let path = dir.join("kubelet-client-current.pem");
    std::fs::write(&path, format!("{cert}{key}")).unwrap();
    server.client_kubeconfig(&path, &path)
}

fn kube_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn bootstrap_token_gets_a_signed_client_cert_over_plain_https() {
    let server = ApiServer::start();
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    let k = key();
    let body = csr_body(
        &node_csr_pem(&k, "n1"),
        CLIENT_KUBELET,
        &["digital signature", "client auth"],
        Some(3600),
    );
    let (code, created) = json_of(
        bearer(http(&server, None).post(csr_url(&server)))
            .json(&body)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201, "{created}");
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("csr-") && name.len() == 9,
        "generateName: {name}"
    );
    assert_eq!(created["kind"], "CertificateSigningRequest");
    assert_eq!(created["apiVersion"], "certificates.k8s.io/v1");
    assert_eq!(created["spec"]["username"], "system:bootstrap:abcdef");
    assert_eq!(
        created["spec"]["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated"
        ])
    );
    assert!(created
        .get("status")
        .is_none_or(|s| s.get("certificate").is_none()));

    let cert = wait_cert(&server, &name);
    let csr = server.csr(&name).unwrap();
    assert_eq!(
        conditions(&csr),
        vec![(
            "Approved".to_string(),
            "AutoApproved".to_string(),
            "Auto approving kubelet client certificate after SubjectAccessReview.".to_string()
        )]
    );
    assert_eq!(
        subject(&cert),
        (
            "system:node:n1".to_string(),
            vec!["system:nodes".to_string()]
        )
    );
    assert!(chains_to(&server.cluster_ca_pem(), &cert));
    assert!(cert.public_key().unwrap().public_eq(&k));
    assert!(cert.subject_alt_names().is_none());
    // 1 h requested; NotBefore backdated 5 min; short certs are not cut.
    let life = cert.not_before().diff(cert.not_after()).unwrap();
    assert_eq!(
        i64::from(life.days) * 86400 + i64::from(life.secs),
        3600 + 300
    );

    // GET by name returns the certificate base64-encoded in JSON.
    let (code, got) = json_of(
        bearer(http(&server, None).get(format!("{}/{name}", csr_url(&server))))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200);
    let pem = base64::engine::general_purpose::STANDARD
        .decode(got["status"]["certificate"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        X509::from_pem(&pem).unwrap().to_der().unwrap(),
        cert.to_der().unwrap()
    );
}

#[test]
fn node_renews_its_own_name_with_kube_rs_and_watch_sees_added_then_modified() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig(&server, dir.path(), "n1");
    assert!(
        kubeconfig.contains("client-certificate: ")
            && kubeconfig.contains("kubelet-client-current.pem")
    );
    rt().block_on(async {
        let client = kube_client(&kubeconfig).await;
        let api: Api<CertificateSigningRequest> = Api::all(client);
        let start_rv = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let k = key();
        let wp = WatchParams::default()
            .fields("metadata.name=renew-n1")
            .timeout(20);
        let mut stream = api.watch(&wp, &start_rv).await.unwrap().boxed();
        let created = api
            .create(
                &PostParams::default(),
                &typed_csr("renew-n1", &node_csr_pem(&k, "n1")),
            )
            .await
            .unwrap();
        assert_eq!(created.spec.username.as_deref(), Some("system:node:n1"));
        let mut seen = vec![];
        let mut cert = None;
        while cert.is_none() {
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            match ev {
                WatchEvent::Added(c) => seen.push(("ADDED", conditions(&c).len())),
                WatchEvent::Modified(c) => {
                    seen.push(("MODIFIED", conditions(&c).len()));
                    cert = c.status.and_then(|s| s.certificate);
                }
                WatchEvent::Bookmark(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, [("ADDED", 0), ("MODIFIED", 1), ("MODIFIED", 1)]);
        let cert = X509::from_pem(&cert.unwrap().0).unwrap();
        assert!(cert.public_key().unwrap().public_eq(&k));
        let csr = api.get("renew-n1").await.unwrap();
        assert_eq!(
            conditions(&csr)[0].2,
            "Auto approving self kubelet client certificate after SubjectAccessReview."
        );
    });
    // The watch named the CSR: the request log has it for RBAC review.
    let reqs = server.requests();
    let w = reqs.iter().find(|r| r.verb == "watch").unwrap();
    assert_eq!(
        (
            w.group.as_str(),
            w.resource.as_str(),
            w.name.as_str(),
            w.user.as_str(),
            w.code
        ),
        (
            "certificates.k8s.io",
            "certificatesigningrequests",
            "renew-n1",
            "system:node:n1",
            200
        )
    );
    let c = reqs.iter().find(|r| r.verb == "create").unwrap();
    assert_eq!(
        (c.resource.as_str(), c.code),
        ("certificatesigningrequests", 201)
    );
}

#[test]
fn a_node_asking_for_another_nodes_name_stays_pending() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig(&server, dir.path(), "n1");
    rt().block_on(async {
        let api: Api<CertificateSigningRequest> = Api::all(kube_client(&kubeconfig).await);
        api.create(
            &PostParams::default(),
            &typed_csr("n1-for-n2", &node_csr_pem(&key(), "n2")),
        )
        .await
        .unwrap();
    });
    // The controllers resync every second: give them two rounds.
    std::thread::sleep(Duration::from_millis(2200));
    let csr = server.csr("n1-for-n2").unwrap();
    assert!(conditions(&csr).is_empty(), "{:?}", conditions(&csr));
    assert!(csr.status.and_then(|s| s.certificate).is_none());
}

#[test]
fn invalid_csrs_are_422_naming_the_field() {
    let server = ApiServer::start();
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    let c = http(&server, None);
    let pem = node_csr_pem(&key(), "n1");
    let post = |body: &Value| json_of(bearer(c.post(csr_url(&server))).json(body).send().unwrap());
    let causes = |v: &Value| -> Vec<String> {
        v["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect()
    };
    let usages = ["digital signature", "client auth"];

    let (code, st) = post(&csr_body(&pem, CLIENT_KUBELET, &usages, Some(599)));
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        (
            st["kind"].as_str(),
            st["reason"].as_str(),
            st["code"].as_i64()
        ),
        (Some("Status"), Some("Invalid"), Some(422))
    );
    assert_eq!(causes(&st), ["spec.expirationSeconds"]);
    assert_eq!(st["details"]["causes"][0]["reason"], "FieldValueInvalid");
    assert!(st["message"].as_str().unwrap().contains(
        "is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"
    ));
    assert_eq!(st["details"]["kind"], "CertificateSigningRequest");
    assert_eq!(st["details"]["group"], "certificates.k8s.io");

    let (code, st) = post(&csr_body(
        &pem,
        CLIENT_KUBELET,
        &["digital signature", "client auth", "flying"],
        None,
    ));
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["spec.usages[2]".to_string()])
    );
    assert_eq!(
        st["details"]["causes"][0]["reason"],
        "FieldValueNotSupported"
    );
    let (code, st) = post(&csr_body(
        &pem,
        CLIENT_KUBELET,
        &["client auth", "client auth"],
        None,
    ));
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["spec.usages[1]".to_string()])
    );
    let (code, st) = post(&csr_body(&pem, CLIENT_KUBELET, &[], None));
    assert_eq!((code, causes(&st)), (422, vec!["spec.usages".to_string()]));
    let (code, st) = post(&csr_body(&pem, "", &usages, None));
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["spec.signerName".to_string()])
    );
    let (code, st) = post(&csr_body(&pem, "kubelet", &usages, None));
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["spec.signerName".to_string()])
    );
    let (code, st) = post(&csr_body(
        &pem,
        "kubernetes.io/legacy-unknown",
        &usages,
        None,
    ));
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["spec.signerName".to_string()])
    );
    let (code, st) = post(&csr_body("not a pem", CLIENT_KUBELET, &usages, None));
    assert_eq!((code, causes(&st)), (422, vec!["spec.request".to_string()]));
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("PEM block type must be CERTIFICATE REQUEST"));
    // A request whose signature does not verify.
    let mut der = openssl::x509::X509Req::from_pem(pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    let (code, st) = post(&csr_body(&tampered, CLIENT_KUBELET, &usages, None));
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["spec.request".to_string()]),
        "{st}"
    );
    // No name and no generateName.
    let mut nameless = csr_body(&pem, CLIENT_KUBELET, &usages, None);
    nameless["metadata"] = json!({});
    let (code, st) = post(&nameless);
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["metadata.name".to_string()])
    );
    let (code, st) = post(&csr_body(&pem, "example.com/Not_A_Label", &usages, None));
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["spec.signerName".to_string()])
    );
    let mut bad_label = csr_body(&pem, CLIENT_KUBELET, &usages, None);
    bad_label["metadata"]["labels"] = json!({"-bad": "x"});
    let (code, st) = post(&bad_label);
    assert_eq!(
        (code, causes(&st)),
        (422, vec!["metadata.labels".to_string()])
    );
    // Unknown fields: accepted by default (fieldValidation=Warn), 400 when Strict.
    let mut extra = csr_body(&pem, CLIENT_KUBELET, &usages, None);
    extra["spec"]["colour"] = json!("blue");
    let strict = format!("{}?fieldValidation=Strict", csr_url(&server));
    let (code, st) = json_of(bearer(c.post(&strict)).json(&extra).send().unwrap());
    assert_eq!(
        (code, st["message"].as_str()),
        (
            400,
            Some("CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: strict decoding error: unknown field \"spec.colour\"")
        )
    );
    // A body of another kind is a 400.
    let mut wrong_kind = csr_body(&pem, CLIENT_KUBELET, &usages, None);
    wrong_kind["kind"] = json!("Pod");
    let (code, st) = post(&wrong_kind);
    assert_eq!((code, st["reason"].as_str()), (400, Some("BadRequest")));
    // 409 on a taken name.
    let mut named = csr_body(&pem, CLIENT_KUBELET, &usages, None);
    named["metadata"] = json!({"name": "taken"});
    assert_eq!(post(&named).0, 201);
    let (code, st) = post(&named);
    assert_eq!((code, st["reason"].as_str()), (409, Some("AlreadyExists")));
    assert_eq!(
        st["message"],
        "certificatesigningrequests.certificates.k8s.io \"taken\" already exists"
    );
    // 404 with the real message.
    let (code, st) = json_of(
        bearer(c.get(format!("{}/missing", csr_url(&server))))
            .send()
            .unwrap(),
    );
    assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(
        st["message"],
        "certificatesigningrequests.certificates.k8s.io \"missing\" not found"
    );
    assert!(server.csrs().len() == 1, "nothing invalid was stored");
}

/// kube-apiserver accepts client-kubelet CSRs with a wrong subject, SANs or
/// usages (its validation does not look at them); kube-controller-manager
/// never auto-approves them, and its signer marks an approved one Failed.
#[test]
fn kubelet_client_csrs_the_signer_rejects_stay_pending_or_fail() {
    let server = ApiServer::start();
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    let c = http(&server, None);
    let usages = ["digital signature", "client auth"];
    let cases = [
        (
            "wrong-org",
            csr_pem(&key(), "system:node:n1", &["example"], &[]),
            &usages[..],
            "subject organization is not system:nodes",
        ),
        (
            "wrong-cn",
            csr_pem(&key(), "n1", &["system:nodes"], &[]),
            &usages[..],
            "subject common name does not begin with system:node:",
        ),
        (
            "with-san",
            csr_pem(&key(), "system:node:n1", &["system:nodes"], &["n1.example"]),
            &usages[..],
            "DNS subjectAltNames are not allowed",
        ),
        (
            "server-usage",
            node_csr_pem(&key(), "n1"),
            &["digital signature", "server auth"][..],
            "usages did not match [client auth digital signature key encipherment]",
        ),
    ];
    for (name, pem, u, _) in &cases {
        let mut body = csr_body(pem, CLIENT_KUBELET, u, None);
        body["metadata"] = json!({"name": name});
        let (code, st) = json_of(bearer(c.post(csr_url(&server))).json(&body).send().unwrap());
        assert_eq!(code, 201, "{name}: {st}");
    }
    std::thread::sleep(Duration::from_millis(1200));
    for (name, _, _, msg) in &cases {
        assert!(
            conditions(&server.csr(name).unwrap()).is_empty(),
            "{name} must stay pending"
        );
        assert!(server.approve(name));
        let failed = wait_for("Failed", Duration::from_secs(5), || {
            let c = conditions(&server.csr(name).unwrap());
            c.iter().find(|c| c.0 == "Failed").cloned()
        });
        assert_eq!(
            failed,
            (
                "Failed".to_string(),
                "SignerValidationFailure".to_string(),
                msg.to_string()
            )
        );
        assert!(server
            .csr(name)
            .unwrap()
            .status
            .unwrap()
            .certificate
            .is_none());
    }
}

#[test]
fn kubelet_serving_csrs_are_never_auto_approved_and_sign_after_approval() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig(&server, dir.path(), "n1");
    rt().block_on(async {
        let api: Api<CertificateSigningRequest> = Api::all(kube_client(&kubeconfig).await);
        let mut csr = typed_csr(
            "serving-n1",
            &csr_pem(&key(), "system:node:n1", &["system:nodes"], &["n1.example"]),
        );
        csr.spec.signer_name = "kubernetes.io/kubelet-serving".into();
        csr.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
        api.create(&PostParams::default(), &csr).await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(1200));
    assert!(conditions(&server.csr("serving-n1").unwrap()).is_empty());
    assert!(server.approve("serving-n1"));
    let cert = wait_cert(&server, "serving-n1");
    let sans = cert.subject_alt_names().unwrap();
    assert_eq!(sans.iter().next().unwrap().dnsname(), Some("n1.example"));
    assert_eq!(
        conditions(&server.csr("serving-n1").unwrap())[0].1,
        "KubectlApprove"
    );
}

#[test]
fn authentication_failures_are_401_and_rbac_denials_are_403() {
    let server = ApiServer::start();
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    server.add_node("n1");
    server.add_node("n2");
    let nodes = format!("{}/api/v1/nodes", server.url());

    // No credentials.
    let (code, st) = json_of(http(&server, None).get(&nodes).send().unwrap());
    assert_eq!(code, 401);
    assert_eq!(
        st,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    // Unknown token, wrong secret, malformed token.
    for t in [
        "zzzzzz.0123456789abcdef",
        "abcdef.0123456789abcdeX",
        "abcdef.ffffffffffffffff",
        "garbage",
    ] {
        let r = http(&server, None)
            .get(&nodes)
            .header("Authorization", format!("Bearer {t}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{t}");
    }
    // An expired client certificate from the cluster CA.
    let now = SystemTime::now();
    let (c, k) = server.issue_client_cert(
        "system:node:n1",
        &["system:nodes"],
        now - Duration::from_secs(7200),
        now - Duration::from_secs(60),
    );
    assert_eq!(
        http(&server, Some((&c, &k)))
            .get(format!("{nodes}/n1"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    // A certificate from another CA.
    let other = integration_tests::pki::TestCa::new("other");
    let (oc, ok) = other.issue_server_cert(&["system:node:n1"]);
    assert_eq!(
        http(&server, Some((&oc, &ok)))
            .get(format!("{nodes}/n1"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    // An expired bootstrap token.
    server.add_bootstrap_token_with(
        "oldtok",
        "0123456789abcdef",
        &[],
        Some(now - Duration::from_secs(1)),
    );
    let r = http(&server, None)
        .get(&nodes)
        .header("Authorization", "Bearer oldtok.0123456789abcdef")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A bootstrapper may not list nodes.
    let (code, st) = json_of(bearer(http(&server, None).get(&nodes)).send().unwrap());
    assert_eq!(code, 403);
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(
        st["message"],
        "nodes is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    assert_eq!(st["details"], json!({"kind": "nodes"}));
    // ...nor create events.
    let (code, st) = json_of(
        bearer(http(&server, None).post(format!(
            "{}/apis/events.k8s.io/v1/namespaces/default/events",
            server.url()
        )))
        .json(&json!({}))
        .send()
        .unwrap(),
    );
    assert_eq!(code, 403);
    assert_eq!(st["message"], "events.events.k8s.io is forbidden: User \"system:bootstrap:abcdef\" cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"default\"");

    // A node reads Node objects (the Node authorizer allows get on nodes).
    let (nc, nk) = server.issue_client_cert(
        "system:node:n1",
        &["system:nodes"],
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    );
    let node_http = http(&server, Some((&nc, &nk)));
    let (code, n) = json_of(node_http.get(format!("{nodes}/n1")).send().unwrap());
    assert_eq!(code, 200);
    assert_eq!(
        (n["kind"].as_str(), n["metadata"]["name"].as_str()),
        (Some("Node"), Some("n1"))
    );
    assert!(n["metadata"]["uid"].as_str().unwrap().len() == 36);
    // But not delete CSRs.
    let (code, st) = json_of(
        node_http
            .delete(format!("{}/x", csr_url(&server)))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 403);
    assert_eq!(st["message"], "certificatesigningrequests.certificates.k8s.io \"x\" is forbidden: User \"system:node:n1\" cannot delete resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope");
    // Node identity through kube-rs: its own Node only (the Node
    // authorizer with AuthorizeNodeWithSelectors), a list only by name.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig(&server, dir.path(), "n1");
    rt().block_on(async {
        let api: Api<Node> = Api::all(kube_client(&kubeconfig).await);
        let n = api.get("n1").await.unwrap();
        assert!(n.metadata.uid.is_some());
        let e = kube_status(api.get("n2").await.unwrap_err());
        assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
        assert_eq!(e.message, "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot get resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot read 'n2', only its own Node object");
        let e = kube_status(api.list(&ListParams::default()).await.unwrap_err());
        assert_eq!(e.message, "nodes is forbidden: User \"system:node:n1\" cannot list resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot read all nodes, only its own Node object");
        let own = api
            .list(&ListParams::default().fields("metadata.name=n1"))
            .await
            .unwrap();
        assert_eq!(own.items.len(), 1);
        // A Node that does not exist yet may be read by its node (kubelet
        // does before registering): 404, not 403.
        let kc9 = node_kubeconfig(&server, dir.path(), "n9");
        let api9: Api<Node> = Api::all(kube_client(&kc9).await);
        let e = kube_status(api9.get("n9").await.unwrap_err());
        assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    });

    // Anonymous auth on: no credentials become system:anonymous (403, not 401).
    server.set_anonymous_auth(true);
    let (code, st) = json_of(http(&server, None).get(&nodes).send().unwrap());
    assert_eq!(code, 403);
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("User \"system:anonymous\" cannot list"));
    assert_eq!(
        http(&server, None)
            .get(format!("{}/version", server.url()))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn discovery_and_version_work_with_kube_rs() {
    let server = ApiServer::start();
    rt().block_on(async {
        let client = kube_client(&server.admin_kubeconfig()).await;
        let v = client.apiserver_version().await.unwrap();
        assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));
        let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
        let (ar, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk(RR_GROUP, "v1", "RenewRevocation"))
            .unwrap();
        assert_eq!(ar.plural, "renewrevocations");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        assert!(discovery.has_group("certificates.k8s.io"));
        assert!(discovery.has_group("events.k8s.io"));
        assert!(
            !discovery.has_group("nodecert.dev"),
            "the old group is not served"
        );
        let groups = client.list_api_groups_aggregated().await.unwrap();
        assert!(groups
            .items
            .iter()
            .any(|g| g.metadata.as_ref().and_then(|m| m.name.as_deref()) == Some(RR_GROUP)));
    });
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    for p in [
        "/version",
        "/api",
        "/apis",
        "/api/v1",
        "/apis/certificates.microsoft.com/v1",
        "/apis/certificates.k8s.io/v1",
        "/apis/events.k8s.io/v1",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} not requested: {paths:?}");
    }
}

/// The documented RenewRevocation group.
const RR_GROUP: &str = "certificates.microsoft.com";

fn revocation_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(RR_GROUP, "v1", "RenewRevocation"),
        "renewrevocations",
    )
}

/// A ClusterRole that lets the nodes read RenewRevocations, as a manifest
/// would ship it (the test server grants only what such objects grant).
const NODES_READ_REVOCATIONS: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: renewrevocations-reader}
rules:
- apiGroups: ["certificates.microsoft.com"]
  resources: ["renewrevocations"]
  verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: nodes-read-renewrevocations}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: renewrevocations-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}
"#;

#[test]
fn kube_runtime_watcher_sees_revocations_as_a_node_only_where_rbac_grants_it() {
    let rbac = Rbac::from_yaml(NODES_READ_REVOCATIONS).unwrap();
    let server = ApiServer::start_with(Profile::Kubeadm, &rbac);
    server.set_bookmark_interval(Duration::from_millis(200));
    server
        .add_revocation("kube-system", json!({"metadata": {"name": "before"}, "spec": {"revocations": [{"kind": "Group", "group": "system:nodes"}]}}))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig(&server, dir.path(), "n1");
    rt().block_on(async {
        let ar = revocation_resource();
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&kubeconfig).await, "kube-system", &ar);
        let mut stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).boxed();
        let mut names = vec![];
        let mut added = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !names.contains(&"after".to_string()) {
            let ev = tokio::time::timeout_at(deadline, stream.next()).await.unwrap().unwrap().unwrap();
            match ev {
                kube::runtime::watcher::Event::InitApply(o) | kube::runtime::watcher::Event::Apply(o) => {
                    names.push(o.metadata.name.clone().unwrap());
                    if o.metadata.name.as_deref() == Some("after") {
                        assert_eq!(o.data["spec"]["revocations"][0]["serialNumber"], "0A1B");
                        assert_eq!(o.data["spec"]["revocations"][0]["description"], "one entry");
                        assert_eq!(o.data["spec"]["description"], "bad batch");
                    }
                }
                kube::runtime::watcher::Event::InitDone if !added => {
                    added = true;
                    server
                        .add_revocation("kube-system", json!({"apiVersion": "certificates.microsoft.com/v1", "kind": "RenewRevocation", "metadata": {"name": "after"}, "spec": {"description": "bad batch", "revocations": [{"kind": "serialnumber", "description": "one entry", "serialNumber": "0A1B", "notBefore": "2025-01-01T00:00:00Z"}]}}))
                        .unwrap();
                    // Another namespace's object is not in this watch.
                    server
                        .add_revocation("default", json!({"metadata": {"name": "elsewhere"}, "spec": {}}))
                        .unwrap();
                }
                _ => {}
            }
        }
        assert_eq!(names, ["before", "after"]);
    });
    // The streaming-list strategy (sendInitialEvents): initial ADDED events,
    // then the BOOKMARK annotated k8s.io/initial-events-end ends Init; here
    // across all namespaces.
    rt().block_on(async {
        let api: Api<DynamicObject> =
            Api::all_with(kube_client(&kubeconfig).await, &revocation_resource());
        let cfg = kube::runtime::watcher::Config::default().streaming_lists();
        let mut stream = kube::runtime::watcher(api, cfg).boxed();
        let mut initial = vec![];
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            match ev {
                kube::runtime::watcher::Event::InitApply(o) => {
                    initial.push(o.metadata.name.unwrap());
                }
                kube::runtime::watcher::Event::InitDone => break,
                _ => {}
            }
        }
        initial.sort();
        assert_eq!(initial, ["after", "before", "elsewhere"]);
    });
    let reqs = server.requests();
    assert!(reqs.iter().any(|r| r.verb == "watch"
        && r.path == "/apis/certificates.microsoft.com/v1/renewrevocations"
        && r.query.contains("sendInitialEvents=true")
        && r.query.contains("resourceVersionMatch=NotOlderThan")
        && r.code == 200));
    let list = reqs.iter().find(|r| r.verb == "list").unwrap();
    let watch = reqs.iter().find(|r| r.verb == "watch").unwrap();
    for r in [list, watch] {
        assert_eq!(
            (
                r.group.as_str(),
                r.resource.as_str(),
                r.namespace.as_str(),
                r.user.as_str(),
                r.code
            ),
            (
                RR_GROUP,
                "renewrevocations",
                "kube-system",
                "system:node:n1",
                200
            )
        );
    }
    assert!(
        watch.query.contains("allowWatchBookmarks=true"),
        "{}",
        watch.query
    );
    // Without that binding a node may not read them: the Node authorizer's
    // rules have no custom resource.
    let bare = ApiServer::start_with(
        Profile::Kubeadm,
        &rbac.without("ClusterRoleBinding", "nodes-read-renewrevocations"),
    );
    let kubeconfig = node_kubeconfig(&bare, dir.path(), "n1");
    rt().block_on(async {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&kubeconfig).await, "kube-system", &revocation_resource());
        let e = kube_status(api.list(&ListParams::default()).await.unwrap_err());
        assert_eq!(e.code, 403);
        assert_eq!(e.message, "renewrevocations.certificates.microsoft.com is forbidden: User \"system:node:n1\" cannot list resource \"renewrevocations\" in API group \"certificates.microsoft.com\" in the namespace \"kube-system\"");
    });
    // The schema rejects bad entries (422) and prunes unknown fields.
    let err = server
        .add_revocation(
            "kube-system",
            json!({"metadata": {"name": "bad"}, "spec": {"revocations": [{"kind": "CN"}]}}),
        )
        .unwrap_err();
    assert_eq!(
        err,
        "RenewRevocation.certificates.microsoft.com \"bad\" is invalid: [spec.revocations[0].kind: Unsupported value: \"CN\": supported values: \"serialnumber\", \"Group\", \"DNS\", \"IP\", <nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation]"
    );
    let err = server
        .add_revocation(
            "kube-system",
            json!({"metadata": {"name": "bad"}, "spec": {"revocations": [{"kind": "DNS"}]}}),
        )
        .unwrap_err();
    assert!(
        err.ends_with(
            "spec.revocations[0]: Invalid value: \"object\": dns is required when kind is DNS"
        ),
        "{err}"
    );
    let pruned = server.add_revocation("kube-system", json!({"metadata": {"name": "pruned"}, "spec": {"revocations": [{"kind": "IP", "ip": "10.0.0.1", "junk": 1}]}})).unwrap();
    assert!(pruned["spec"]["revocations"][0].get("junk").is_none());
    assert_eq!(
        server
            .add_revocation("nope", json!({"metadata": {"name": "x"}, "spec": {}}))
            .unwrap_err(),
        "namespaces \"nope\" not found"
    );
}

#[test]
fn watch_semantics_expired_rv_bookmarks_and_label_selectors() {
    let server = ApiServer::start();
    server.set_bookmark_interval(Duration::from_millis(100));
    server
        .add_revocation(
            "kube-system",
            json!({"metadata": {"name": "a", "labels": {"team": "x"}}, "spec": {}}),
        )
        .unwrap();
    let old_rv = server.resource_version();
    server
        .add_revocation(
            "kube-system",
            json!({"metadata": {"name": "b"}, "spec": {}}),
        )
        .unwrap();
    let admin = server.admin_kubeconfig();
    rt().block_on(async {
        let api: Api<DynamicObject> =
            Api::all_with(kube_client(&admin).await, &revocation_resource());
        // Resuming from a retained revision replays what came after it.
        let mut s = api
            .watch(&WatchParams::default().timeout(5), &old_rv.to_string())
            .await
            .unwrap()
            .boxed();
        match s.next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("b")),
            other => panic!("{other:?}"),
        }
        // Bookmarks carry the current revision.
        let wp = WatchParams::default().timeout(5).labels("team=x");
        assert!(wp.bookmarks, "kube-rs asks for bookmarks by default");
        let mut s = api
            .watch(&wp, &server.resource_version().to_string())
            .await
            .unwrap()
            .boxed();
        match tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Bookmark(b) => assert_eq!(
                b.metadata.resource_version,
                server.resource_version().to_string()
            ),
            other => panic!("{other:?}"),
        }
        // After compaction the old revision is gone: an ERROR event, 410 Expired.
        server.compact();
        let mut s = api
            .watch(&WatchParams::default().timeout(5), &old_rv.to_string())
            .await
            .unwrap()
            .boxed();
        match s.next().await.unwrap().unwrap() {
            WatchEvent::Error(st) => {
                assert_eq!((st.code, st.reason.as_str()), (410, "Expired"));
                assert!(
                    st.message
                        .starts_with(&format!("too old resource version: {old_rv} (")),
                    "{}",
                    st.message
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(s.next().await.is_none(), "the stream ends after the error");
        // List with a label selector and pagination.
        let all = api
            .list(&ListParams::default().labels("team=x"))
            .await
            .unwrap();
        assert_eq!(all.items.len(), 1);
        let p1 = api.list(&ListParams::default().limit(1)).await.unwrap();
        assert_eq!(p1.items.len(), 1);
        let token = p1.metadata.continue_.clone().unwrap();
        assert_eq!(p1.metadata.remaining_item_count, Some(1));
        let p2 = api
            .list(&ListParams::default().limit(1).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(p2.items[0].metadata.name.as_deref(), Some("b"));
        assert!(p2.metadata.continue_.is_none());
        // Unsupported field selector: 400.
        let e = kube_status(
            api.list(&ListParams::default().fields("spec.x=1"))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "field label not supported: spec.x")
        );
    });
    // Built-in list items carry no apiVersion/kind on the wire; CRD items do.
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    let (_, l) = json_of(
        bearer(http(&server, None).get(csr_url(&server)))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (l["kind"].as_str(), l["apiVersion"].as_str()),
        (
            Some("CertificateSigningRequestList"),
            Some("certificates.k8s.io/v1")
        )
    );
}

#[test]
fn events_core_v1_as_a_node_and_events_k8s_io_through_the_kube_runtime_recorder() {
    // The service account's Events permission, as a manifest would grant it.
    let rbac = Rbac::from_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: events-writer, namespace: default}
rules:
- {apiGroups: ["events.k8s.io"], resources: ["events"], verbs: ["create", "patch"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: nca-events, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: events-writer}
subjects:
- {kind: ServiceAccount, name: node-cert-agent, namespace: kube-system}
"#,
    )
    .unwrap();
    let server = ApiServer::start_with(Profile::Kubeadm, &rbac);
    server.add_node("n1");
    let now = SystemTime::now();
    let (nc, nk) = server.issue_client_cert(
        "system:node:n1",
        &["system:nodes"],
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    );
    let node_http = http(&server, Some((&nc, &nk)));
    let core_url = format!("{}/api/v1/namespaces/default/events", server.url());
    let ev = json!({
        "metadata": {"name": "n1.renewed"},
        "involvedObject": {"kind": "Node", "name": "n1", "uid": "n1"},
        "reason": "CertificateRenewed", "message": "renewed", "type": "Normal",
        "source": {"component": "node-cert-agent", "host": "n1"},
    });
    let (code, created) = json_of(node_http.post(&core_url).json(&ev).send().unwrap());
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "default");
    // A cluster-scoped object's event in another namespace is invalid.
    let (code, st) = json_of(node_http.post(format!("{}/api/v1/namespaces/kube-public/events", server.url())).json(&json!({"metadata": {"name": "x"}, "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "R"})).send().unwrap());
    assert_eq!(
        (code, st["details"]["causes"][0]["field"].as_str()),
        (422, Some("involvedObject.namespace"))
    );
    // An unknown namespace is a 404.
    let (code, st) = json_of(
        node_http
            .post(format!("{}/api/v1/namespaces/nope/events", server.url()))
            .json(&ev)
            .send()
            .unwrap(),
    );
    assert_eq!(
        (code, st["message"].as_str()),
        (404, Some("namespaces \"nope\" not found"))
    );

    // events.k8s.io/v1 via kube-runtime's Recorder, for the service account
    // the RoleBinding names.
    let token = server.add_service_account_token("kube-system", "node-cert-agent");
    rt().block_on(async {
        let client = kube_client(&server.token_kubeconfig(&token)).await;
        let recorder =
            kube::runtime::events::Recorder::new(client, "nodecert.dev/node-cert-agent".into());
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some("n1".into()),
            ..Default::default()
        };
        let e = kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: "RenewalFailed".into(),
            note: Some("denied".into()),
            action: "Renew".into(),
            secondary: None,
        };
        recorder.publish(&e, &reference).await.unwrap();
        recorder.publish(&e, &reference).await.unwrap(); // a PATCH adding series
    });
    let events = server.events();
    assert_eq!(events.len(), 2);
    let v1 = events
        .iter()
        .find(|e| e.event.reason.as_deref() == Some("RenewalFailed"))
        .unwrap();
    assert_eq!(
        v1.event.reporting_component.as_deref(),
        Some("nodecert.dev/node-cert-agent")
    );
    assert_eq!(v1.raw["series"]["count"], 2);
    let methods: Vec<(String, u16)> = server
        .requests()
        .iter()
        .filter(|r| r.group == "events.k8s.io")
        .map(|r| (r.verb.clone(), r.code))
        .collect();
    assert_eq!(
        methods,
        [("create".to_string(), 201), ("patch".to_string(), 200)]
    );

    // A node may not write events.k8s.io events (the Node authorizer grants core events only).
    let (code, _) = json_of(
        node_http
            .post(format!(
                "{}/apis/events.k8s.io/v1/namespaces/default/events",
                server.url()
            ))
            .json(&json!({}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 403);
    // Strict events.k8s.io validation for an allowed user.
    rt().block_on(async {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(kube_client(&server.admin_kubeconfig()).await, "default");
        let bad = k8s_openapi::api::events::v1::Event {
            metadata: ObjectMeta {
                name: Some("bad".into()),
                ..Default::default()
            },
            event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            )),
            type_: Some("Sideways".into()),
            ..Default::default()
        };
        let e = kube_status(api.create(&PostParams::default(), &bad).await.unwrap_err());
        assert_eq!(e.code, 422);
        let fields: Vec<String> = e
            .details
            .unwrap()
            .causes
            .iter()
            .map(|c| c.field.clone())
            .collect();
        assert_eq!(
            fields,
            [
                // Required, then IsQualifiedName's two messages for "".
                "reportingController",
                "reportingController",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "type"
            ]
        );
    });
}

#[test]
fn fault_knobs_throttle_fail_drop_delay_down_up() {
    let server = ApiServer::start();
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    let c = http(&server, None);
    let list = || bearer(c.get(csr_url(&server))).send();

    server.throttle_next(1, 7, Throttle::Apf);
    let r = list().unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["Retry-After"], "7");
    assert_eq!(
        r.text().unwrap(),
        "Too many requests, please try again later.\n"
    );
    server.throttle_next(1, 2, Throttle::Status);
    let r = list().unwrap();
    assert_eq!(r.headers()["Retry-After"], "2");
    let (code, st) = json_of(r);
    assert_eq!(
        (
            code,
            st["reason"].as_str(),
            st["details"]["retryAfterSeconds"].as_i64()
        ),
        (429, Some("TooManyRequests"), Some(2))
    );
    assert_eq!(list().unwrap().status().as_u16(), 200);

    server.fail_next(2, 503);
    let (code, st) = json_of(list().unwrap());
    assert_eq!(
        (code, st["reason"].as_str()),
        (503, Some("ServiceUnavailable"))
    );
    assert_eq!(list().unwrap().status().as_u16(), 503);
    server.fail_next(1, 500);
    let (code, st) = json_of(list().unwrap());
    assert_eq!((code, st["reason"].as_str()), (500, Some("InternalError")));
    assert_eq!(list().unwrap().status().as_u16(), 200);

    server.drop_next(1);
    let e = list().unwrap_err();
    assert!(!e.is_status() && !e.is_timeout(), "{e:?}");
    assert_eq!(server.requests().last().unwrap().code, 0);
    assert_eq!(list().unwrap().status().as_u16(), 200);

    server.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(list().unwrap().status().as_u16(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    server.set_delay(Duration::ZERO);

    // Down: refused, and an open watch is cut. Up: served again.
    let admin = server.admin_kubeconfig();
    rt().block_on(async {
        let api: Api<CertificateSigningRequest> = Api::all(kube_client(&admin).await);
        let mut s = api
            .watch(&WatchParams::default().timeout(30), "0")
            .await
            .unwrap()
            .boxed();
        server.down();
        assert!(!server.is_up());
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.next().await {
                    None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "the watch must end when the server goes down"
        );
    });
    let e = list().unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    server.up();
    assert!(server.is_up());
    assert_eq!(list().unwrap().status().as_u16(), 200);
}

#[test]
fn csr_fault_knobs_deny_never_approve_wrong_key_wrong_subject_lifetime() {
    let server = ApiServer::start();
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    let c = http(&server, None);
    let create = |k: &PKey<Private>, exp: Option<i32>| -> String {
        let body = csr_body(
            &node_csr_pem(k, "n1"),
            CLIENT_KUBELET,
            &["digital signature", "client auth"],
            exp,
        );
        let (code, v) = json_of(bearer(c.post(csr_url(&server))).json(&body).send().unwrap());
        assert_eq!(code, 201);
        v["metadata"]["name"].as_str().unwrap().to_string()
    };

    server.deny_next_csr("PolicyDenied", "nodes in pool x may not renew");
    let denied = create(&key(), None);
    let d = wait_for("Denied", Duration::from_secs(5), || {
        let cs = conditions(&server.csr(&denied).unwrap());
        (!cs.is_empty()).then_some(cs)
    });
    assert_eq!(
        d,
        vec![(
            "Denied".to_string(),
            "PolicyDenied".to_string(),
            "nodes in pool x may not renew".to_string()
        )]
    );
    assert!(server
        .csr(&denied)
        .unwrap()
        .status
        .unwrap()
        .certificate
        .is_none());
    // Only the next one: the following CSR is approved.
    let ok = create(&key(), None);
    wait_cert(&server, &ok);

    server.deny_all_csrs(Some(("Nope", "all denied")));
    let d2 = create(&key(), None);
    wait_for("Denied", Duration::from_secs(5), || {
        conditions(&server.csr(&d2).unwrap())
            .first()
            .filter(|c| c.0 == "Denied")
            .cloned()
    });
    server.deny_all_csrs(None);

    server.set_auto_approve(false);
    let pending = create(&key(), None);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(conditions(&server.csr(&pending).unwrap()).is_empty());
    // Back on, the approver catches up with the pending CSR.
    server.set_auto_approve(true);
    wait_cert(&server, &pending);

    server.issue_wrong_key(1);
    let k = key();
    let wrong = create(&k, None);
    let cert = wait_cert(&server, &wrong);
    assert!(
        !cert.public_key().unwrap().public_eq(&k),
        "issued for a different key"
    );
    assert!(chains_to(&server.cluster_ca_pem(), &cert));

    server.issue_wrong_subject(1);
    let k = key();
    let ws = create(&k, None);
    let cert = wait_cert(&server, &ws);
    assert_eq!(subject(&cert).0, "system:node:wrong-subject");
    assert!(cert.public_key().unwrap().public_eq(&k));

    // Lifetimes: min(expirationSeconds, max); a test may go below 10 min.
    server.set_cert_lifetime(Duration::from_secs(120));
    server.set_backdate(Duration::ZERO);
    let short = create(&key(), Some(3600));
    let cert = wait_cert(&server, &short);
    let life = cert.not_before().diff(cert.not_after()).unwrap();
    assert_eq!(i64::from(life.days) * 86400 + i64::from(life.secs), 120);
    server.set_cert_lifetime(Duration::from_secs(24 * 3600));
    let ten = create(&key(), Some(600));
    let cert = wait_cert(&server, &ten);
    let life = cert.not_before().diff(cert.not_after()).unwrap();
    assert_eq!(i64::from(life.secs), 600);
}

/// Runs `kubectl` with `kubeconfig`; returns (success, stdout, stderr).
fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run kubectl ({e}): install it (`apt-get install kubernetes-client` on Debian)")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl apply` of the documented RenewRevocation (the example in
/// `manifests/examples/`), as an admin: the server dry run stores nothing,
/// the real apply stores it, a re-apply changes nothing, an edited file is
/// sent as a JSON merge patch, and an unknown field is refused by the
/// server's strict field validation with upstream's message.
#[test]
fn kubectl_applies_the_documented_renew_revocation_dry_run_then_for_real() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("admin.kubeconfig");
    std::fs::write(&kc, server.admin_kubeconfig()).unwrap();
    // The kubectl that runs (a dispatcher may pick one for the server's
    // version): from v1.25 on it asks the server for strict field
    // validation; before, the server's default (Warn) applies.
    let (ok, version, err) = kubectl(&kc, &["version", "--client", "-o", "json"]);
    assert!(ok, "{err}");
    let version: Value = serde_json::from_str(&version).unwrap();
    println!("kubectl {}", version["clientVersion"]["gitVersion"]);
    let minor: u32 = version["clientVersion"]["minor"]
        .as_str()
        .unwrap()
        .trim_end_matches('+')
        .parse()
        .unwrap();
    let strict = minor >= 25;
    let example_path =
        integration_tests::agent::workspace_dir().join("manifests/examples/renewrevocation.yaml");
    let example = example_path.to_str().unwrap();
    let log = |server: &ApiServer| {
        for r in server.requests() {
            println!("{} {}?{} -> {}", r.method, r.path, r.query, r.code);
        }
        server.clear_requests();
    };

    let (ok, out, err) = kubectl(&kc, &["apply", "--dry-run=server", "-f", example]);
    log(&server);
    assert!(ok, "kubectl apply --dry-run=server failed:\n{out}{err}");
    assert_eq!(
        out.trim(),
        "renewrevocation.certificates.microsoft.com/my-renew-revocation created (server dry run)"
    );
    assert!(server.revocations().is_empty(), "a dry run stores nothing");

    let (ok, out, err) = kubectl(&kc, &["apply", "-f", example]);
    let reqs = server.requests();
    log(&server);
    assert!(ok, "kubectl apply failed:\n{out}{err}");
    assert_eq!(
        out.trim(),
        "renewrevocation.certificates.microsoft.com/my-renew-revocation created"
    );
    let post = reqs.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(
        post.path,
        "/apis/certificates.microsoft.com/v1/namespaces/kube-system/renewrevocations"
    );
    assert_eq!(
        post.query.contains("fieldValidation=Strict"),
        strict,
        "{}",
        post.query
    );
    let stored = server.revocations();
    assert_eq!(stored.len(), 1);
    let rr = &stored[0];
    assert_eq!(rr["metadata"]["namespace"], "kube-system");
    assert_eq!(rr["spec"]["revocations"].as_array().unwrap().len(), 5);
    assert_eq!(
        rr["spec"]["revocations"][1]["description"],
        "Revoke the certificates of every node issued before this date"
    );
    assert!(rr["metadata"]["annotations"]
        .get("kubectl.kubernetes.io/last-applied-configuration")
        .is_some());

    let (ok, out, err) = kubectl(&kc, &["apply", "-f", example]);
    let reqs = server.requests();
    log(&server);
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.trim(),
        "renewrevocation.certificates.microsoft.com/my-renew-revocation unchanged"
    );
    assert!(
        reqs.iter().all(|r| r.method == "GET"),
        "no write when unchanged"
    );

    // An edited file: a JSON merge patch (no strategic merge for a CR).
    let text = std::fs::read_to_string(&example_path).unwrap();
    let edited = dir.path().join("edited.yaml");
    std::fs::write(
        &edited,
        text.replace("My list of renew revocations", "My edited list"),
    )
    .unwrap();
    let rv_before = server.revocations()[0]["metadata"]["resourceVersion"].clone();
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", edited.to_str().unwrap()]);
    let reqs = server.requests();
    log(&server);
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.trim(),
        "renewrevocation.certificates.microsoft.com/my-renew-revocation configured"
    );
    let patch = reqs.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.code, 200);
    assert_eq!(
        patch.query.contains("fieldValidation=Strict"),
        strict,
        "{}",
        patch.query
    );
    let after = &server.revocations()[0];
    assert_eq!(after["spec"]["description"], "My edited list");
    assert_ne!(after["metadata"]["resourceVersion"], rv_before);
    assert_eq!(after["metadata"]["generation"], 2);

    // An unknown field: refused on create with upstream's message, or
    // (older kubectl) accepted with the server's warning.
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        text.replace("name: my-renew-revocation", "name: typo")
            .replace(
                "description: Revoke the certificate with this serial number",
                "descripton: Revoke the certificate with this serial number",
            ),
    )
    .unwrap();
    let (ok, out, err) = kubectl(
        &kc,
        &["apply", "--dry-run=server", "-f", typo.to_str().unwrap()],
    );
    log(&server);
    if strict {
        assert!(!ok, "{out}");
        assert!(
            err.contains("RenewRevocation in version \"v1\" cannot be handled as a RenewRevocation: strict decoding error: unknown field \"spec.revocations[0].descripton\""),
            "{err}"
        );
    } else {
        assert!(ok, "{out}{err}");
        assert!(
            err.contains("Warning: unknown field \"spec.revocations[0].descripton\""),
            "{err}"
        );
    }
}

/// A client certificate identity `CN=<cn>, O=<orgs>` for reqwest.
fn identity(server: &ApiServer, cn: &str, orgs: &[&str]) -> Http {
    let now = SystemTime::now();
    let (c, k) = server.issue_client_cert(
        cn,
        orgs,
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    );
    http(server, Some((&c, &k)))
}

fn with_token(
    r: reqwest::blocking::RequestBuilder,
    token: &str,
) -> reqwest::blocking::RequestBuilder {
    r.header("Authorization", format!("Bearer {token}"))
}

const RBAC_CASES: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: revocation-reader, namespace: kube-system}
rules:
- apiGroups: ["certificates.microsoft.com"]
  resources: ["renewrevocations"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: agent-reads-revocations, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: revocation-reader}
subjects:
- {kind: ServiceAccount, name: agent}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-n1-reader}
rules:
- apiGroups: [""]
  resources: ["nodes"]
  resourceNames: ["n1"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: viewer-reads-n1}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-n1-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: ghost}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ghost-binding}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: not-shipped}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: ghost}
"#;

#[test]
fn rbac_from_yaml_scopes_roles_to_their_namespace_and_resource_names_to_named_requests() {
    let server = ApiServer::start_with(Profile::Kubeadm, &Rbac::from_yaml(RBAC_CASES).unwrap());
    server.add_node("n1");
    server.add_node("n2");
    server
        .add_revocation(
            "kube-system",
            json!({"metadata": {"name": "r"}, "spec": {}}),
        )
        .unwrap();
    let rr = |ns: &str| {
        format!(
            "{}/apis/certificates.microsoft.com/v1/namespaces/{ns}/renewrevocations",
            server.url()
        )
    };
    // A RoleBinding's ServiceAccount subject without a namespace is the
    // binding's namespace; the Role applies there only.
    let token = server.add_service_account_token("kube-system", "agent");
    let c = http(&server, None);
    let code = |r: reqwest::blocking::RequestBuilder| r.send().unwrap().status().as_u16();
    assert_eq!(code(with_token(c.get(rr("kube-system")), &token)), 200);
    assert_eq!(
        code(with_token(
            c.get(format!("{}/r", rr("kube-system"))),
            &token
        )),
        200
    );
    assert_eq!(code(with_token(c.get(rr("default")), &token)), 403);
    let all = format!(
        "{}/apis/certificates.microsoft.com/v1/renewrevocations",
        server.url()
    );
    assert_eq!(code(with_token(c.get(&all), &token)), 403);
    let other = server.add_service_account_token("default", "agent");
    assert_eq!(code(with_token(c.get(rr("kube-system")), &other)), 403);

    // resourceNames: get by name; list and watch only with the matching
    // metadata.name field selector.
    let viewer = identity(&server, "viewer", &[]);
    let nodes = format!("{}/api/v1/nodes", server.url());
    assert_eq!(code(viewer.get(format!("{nodes}/n1"))), 200);
    assert_eq!(code(viewer.get(format!("{nodes}/n2"))), 403);
    assert_eq!(code(viewer.get(&nodes)), 403);
    let (c1, l) = json_of(
        viewer
            .get(format!("{nodes}?fieldSelector=metadata.name%3Dn1"))
            .send()
            .unwrap(),
    );
    assert_eq!((c1, l["items"].as_array().unwrap().len()), (200, 1));
    assert_eq!(
        code(viewer.get(format!("{nodes}?fieldSelector=metadata.name%3Dn2"))),
        403
    );
    assert_eq!(
        code(viewer.get(format!(
            "{nodes}?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dn1"
        ))),
        200
    );
    // A binding to a role that does not exist is the RBAC reason of a 403.
    let ghost = identity(&server, "ghost", &[]);
    let (code, st) = json_of(ghost.get(format!("{nodes}/n2")).send().unwrap());
    assert_eq!(code, 403);
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .ends_with(": RBAC: clusterrole.rbac.authorization.k8s.io \"not-shipped\" not found"),
        "{st}"
    );
}

#[test]
fn the_shipped_manifests_render_into_rbac_the_server_takes() {
    let shipped = integration_tests::rbac::shipped_rbac();
    assert!(
        shipped
            .objects()
            .iter()
            .any(|(kind, ns, _)| kind == "RoleBinding" && ns == "kube-system"),
        "{:?}",
        shipped.objects()
    );
    let server = ApiServer::start_with(Profile::Kubeadm, &shipped);
    let (code, _) = json_of(
        http(&server, None)
            .get(format!("{}/api/v1/nodes", server.url()))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 401);
}

#[test]
fn with_its_own_approver_a_cluster_leaves_kubelet_client_csrs_pending_until_approved() {
    let server = ApiServer::start_with(Profile::OwnApprover, &Rbac::default());
    server.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET);
    let body = csr_body(
        &node_csr_pem(&key(), "n1"),
        CLIENT_KUBELET,
        &["digital signature", "client auth"],
        None,
    );
    let (code, created) = json_of(
        bearer(http(&server, None).post(csr_url(&server)))
            .json(&body)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201, "{created}");
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(2200));
    assert!(
        conditions(&server.csr(&name).unwrap()).is_empty(),
        "no auto-approval"
    );
    assert!(server.approve(&name));
    wait_cert(&server, &name);
    // A token outside kubeadm's group may not file a CSR at all.
    server.add_bootstrap_token_with("plaint", "0123456789abcdef", &[], None);
    let r = http(&server, None)
        .post(csr_url(&server))
        .header("Authorization", "Bearer plaint.0123456789abcdef")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

fn patch_req(c: &Http, url: &str, content_type: &str, body: &Value) -> (u16, Value) {
    json_of(
        c.patch(url)
            .header("Content-Type", content_type)
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .unwrap(),
    )
}

const SMP: &str = "application/strategic-merge-patch+json";
const MERGE: &str = "application/merge-patch+json";

#[test]
fn node_restriction_limits_a_node_to_its_own_node_and_kubelets_labels() {
    let server = ApiServer::start();
    server.add_node("n1");
    server.add_node("n2");
    let node = identity(&server, "system:node:n1", &["system:nodes"]);
    let admin = identity(&server, "kubernetes-admin", &["system:masters"]);
    let n1 = format!("{}/api/v1/nodes/n1", server.url());
    let n2 = format!("{}/api/v1/nodes/n2", server.url());

    // Labels of other domains and kubelet's own: allowed.
    let (code, n) = patch_req(
        &node,
        &n1,
        MERGE,
        &json!({"metadata": {"labels": {"node-cert-agent.dev/enabled": "true", "node.kubernetes.io/instance-type": "m"}}}),
    );
    assert_eq!(code, 200, "{n}");
    assert_eq!(
        n["metadata"]["labels"]["node-cert-agent.dev/enabled"],
        "true"
    );
    for (label, msg) in [
        (
            "node-role.kubernetes.io/worker",
            "nodes \"n1\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/worker",
        ),
        (
            "node-restriction.kubernetes.io/pool",
            "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pool",
        ),
    ] {
        let (code, st) = patch_req(&node, &n1, SMP, &json!({"metadata": {"labels": {label: "x"}}}));
        assert_eq!((code, st["message"].as_str()), (403, Some(msg)));
    }
    // An admin may set them; the node may then not remove them.
    let (code, _) = patch_req(
        &admin,
        &n1,
        MERGE,
        &json!({"metadata": {"labels": {"node-role.kubernetes.io/worker": ""}}}),
    );
    assert_eq!(code, 200);
    let (code, _) = patch_req(
        &node,
        &n1,
        MERGE,
        &json!({"metadata": {"labels": {"node-role.kubernetes.io/worker": null}}}),
    );
    assert_eq!(code, 403);
    // Another node's object, and through the status subresource too.
    let (code, st) = patch_req(
        &node,
        &n2,
        MERGE,
        &json!({"metadata": {"labels": {"a": "b"}}}),
    );
    assert_eq!(
        (code, st["message"].as_str()),
        (
            403,
            Some("nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"")
        )
    );
    let (code, _) = patch_req(
        &node,
        &format!("{n2}/status"),
        SMP,
        &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    assert_eq!(code, 403);
    // Registering: only its own Node, and only with labels it may set.
    let nodes = format!("{}/api/v1/nodes", server.url());
    let n3 = identity(&server, "system:node:n3", &["system:nodes"]);
    let (code, st) = json_of(
        n3.post(&nodes)
            .json(&json!({"metadata": {"name": "n4"}}))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (code, st["message"].as_str()),
        (
            403,
            Some("nodes \"n4\" is forbidden: node \"n3\" is not allowed to modify node \"n4\"")
        )
    );
    let (code, st) = json_of(
        n3.post(&nodes)
            .json(&json!({"metadata": {"name": "n3", "labels": {"node-role.kubernetes.io/x": ""}}}))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (code, st["message"].as_str()),
        (403, Some("nodes \"n3\" is forbidden: node \"n3\" is not allowed to set the following labels: node-role.kubernetes.io/x"))
    );
    let (code, _) = json_of(
        n3.post(&nodes)
            .json(&json!({"metadata": {"name": "n3", "labels": {"kubernetes.io/hostname": "n3"}}}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201);
    // Taints are the admin's.
    let (code, st) = patch_req(
        &node,
        &n1,
        MERGE,
        &json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(
        (code, st["message"].as_str()),
        (
            403,
            Some("nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints")
        )
    );

    // nodes/status: a strategic merge patch as kubelet sends it merges the
    // conditions by type and cannot change the spec.
    let rv = server.resource_version();
    let (code, n) = patch_req(
        &node,
        &format!("{n1}/status"),
        SMP,
        &json!({"spec": {"unschedulable": true}, "status": {
        "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}],
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"}
        ]}}),
    );
    assert_eq!(code, 200, "{n}");
    let conds = n["status"]["conditions"].as_array().unwrap();
    assert_eq!(
        conds
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("Ready", "False"), ("MemoryPressure", "False")]
    );
    assert_eq!(
        conds[0]["message"], "kubelet is posting ready status",
        "merged, not replaced"
    );
    assert!(
        n["spec"].get("unschedulable").is_none(),
        "the status subresource keeps the spec"
    );
    assert!(server.resource_version() > rv);
    // The main resource keeps the status.
    let (code, n) = patch_req(&node, &n1, MERGE, &json!({"status": {"conditions": []}}));
    assert_eq!(code, 200);
    assert_eq!(n["status"]["conditions"].as_array().unwrap().len(), 2);
    // A patch that changes nothing writes nothing.
    let rv = server.resource_version();
    let (code, _) = patch_req(
        &node,
        &n1,
        MERGE,
        &json!({"metadata": {"labels": {"node-cert-agent.dev/enabled": "true"}}}),
    );
    assert_eq!((code, server.resource_version()), (200, rv));
    // A stale resourceVersion is a conflict; server-side apply is not served.
    let (code, st) = patch_req(
        &node,
        &n1,
        MERGE,
        &json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}),
    );
    assert_eq!((code, st["reason"].as_str()), (409, Some("Conflict")));
    let r = node
        .patch(&n1)
        .header("Content-Type", "application/apply-patch+yaml")
        .body("metadata: {labels: {x: y}}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // kube-rs's status patch (what kubelet-like clients use).
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig(&server, dir.path(), "n1");
    rt().block_on(async {
        let api: Api<Node> = Api::all(kube_client(&kubeconfig).await);
        let patched = api
            .patch_status(
                "n1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}})),
            )
            .await
            .unwrap();
        let ready = patched
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    });
}

#[test]
fn events_with_an_event_time_need_the_reporting_fields_and_at_most_1024_bytes_of_message() {
    let server = ApiServer::start();
    let node = identity(&server, "system:node:n1", &["system:nodes"]);
    let url = format!("{}/api/v1/namespaces/default/events", server.url());
    let ev = |name: &str, message: &str, reporting: bool| {
        let mut e = json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "Node", "name": "n1"},
            "reason": "CertificateRenewed", "message": message, "type": "Normal",
            "eventTime": "2026-01-01T00:00:00.000000Z",
        });
        if reporting {
            e["reportingComponent"] = json!("node-cert-agent");
            e["reportingInstance"] = json!("n1");
            e["action"] = json!("Renew");
        }
        e
    };
    let long = "x".repeat(1025);
    let (code, st) = json_of(node.post(&url).json(&ev("a", &long, false)).send().unwrap());
    assert_eq!(code, 422, "{st}");
    let fields: Vec<&str> = st["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "reportingComponent",
            "reportingComponent",
            "reportingComponent",
            "reportingInstance",
            "action",
            "message"
        ]
    );
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("message: Invalid value: \"\": can have at most 1024 characters"));
    let (code, st) = json_of(node.post(&url).json(&ev("b", &long, true)).send().unwrap());
    assert_eq!(
        (code, st["details"]["causes"][0]["field"].as_str()),
        (422, Some("message"))
    );
    let (code, st) = json_of(
        node.post(&url)
            .json(&ev("c", &long[..1024], true))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201, "{st}");
    // Without an eventTime (the legacy form) the limits do not apply.
    let mut legacy = ev("d", &long, false);
    legacy.as_object_mut().unwrap().remove("eventTime");
    let (code, st) = json_of(node.post(&url).json(&legacy).send().unwrap());
    assert_eq!(code, 201, "{st}");
}

#[test]
fn custom_resource_writes_take_dry_run_field_validation_namespaces_and_their_patch_types() {
    let server = ApiServer::start();
    let admin = identity(&server, "kubernetes-admin", &["system:masters"]);
    let coll = |ns: &str| {
        format!(
            "{}/apis/certificates.microsoft.com/v1/namespaces/{ns}/renewrevocations",
            server.url()
        )
    };
    let obj = |name: &str| {
        json!({"apiVersion": "certificates.microsoft.com/v1", "kind": "RenewRevocation",
            "metadata": {"name": name},
            "spec": {"revocations": [{"kind": "IP", "ip": "10.0.0.1", "colour": "blue"}]}})
    };
    let post = |url: String, body: &Value| admin.post(url).json(body).send().unwrap();

    let r = post(
        format!("{}?fieldValidation=Strict", coll("kube-system")),
        &obj("a"),
    );
    let (code, st) = json_of(r);
    assert_eq!(
        (code, st["message"].as_str()),
        (400, Some("RenewRevocation in version \"v1\" cannot be handled as a RenewRevocation: strict decoding error: unknown field \"spec.revocations[0].colour\""))
    );
    let r = post(coll("kube-system"), &obj("a"));
    assert_eq!(
        r.headers()["Warning"],
        "299 - \"unknown field \\\"spec.revocations[0].colour\\\"\""
    );
    let (code, created) = json_of(r);
    assert_eq!(code, 201);
    assert!(created["spec"]["revocations"][0].get("colour").is_none());
    assert_eq!(created["metadata"]["generation"], 1);
    let r = post(
        format!("{}?fieldValidation=Ignore", coll("kube-system")),
        &obj("b"),
    );
    assert!(r.headers().get("Warning").is_none());
    assert_eq!(r.status().as_u16(), 201);
    // A dry run is answered like a create and stores nothing.
    let (code, _) = json_of(post(
        format!("{}?dryRun=All", coll("kube-system")),
        &obj("dry"),
    ));
    assert_eq!(code, 201);
    assert_eq!(server.revocations().len(), 2);
    // Namespaces: it must exist, and match the URL's.
    let (code, st) = json_of(post(coll("nope"), &obj("c")));
    assert_eq!(
        (code, st["message"].as_str()),
        (404, Some("namespaces \"nope\" not found"))
    );
    let mut other = obj("c");
    other["metadata"]["namespace"] = json!("default");
    let (code, _) = json_of(post(coll("kube-system"), &other));
    assert_eq!(code, 400);
    // Listed across namespaces; not served at a cluster-scoped item path.
    let (code, l) = json_of(
        admin
            .get(format!(
                "{}/apis/certificates.microsoft.com/v1/renewrevocations",
                server.url()
            ))
            .send()
            .unwrap(),
    );
    assert_eq!((code, l["items"].as_array().unwrap().len()), (200, 2));
    assert_eq!(l["kind"], "RenewRevocationList");
    let r = admin
        .get(format!(
            "{}/apis/certificates.microsoft.com/v1/renewrevocations/a",
            server.url()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // PATCH: merge and JSON patches, validated; no strategic merge patch.
    let a = format!("{}/a", coll("kube-system"));
    let (code, st) = patch_req(&admin, &a, SMP, &json!({"spec": {}}));
    assert_eq!(
        (code, st["message"].as_str()),
        (415, Some("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json"))
    );
    let (code, st) = patch_req(
        &admin,
        &a,
        MERGE,
        &json!({"spec": {"revocations": [{"kind": "DNS"}]}}),
    );
    assert_eq!(code, 422, "{st}");
    let (code, p) = patch_req(&admin, &a, MERGE, &json!({"spec": {"description": "why"}}));
    assert_eq!((code, p["metadata"]["generation"].as_i64()), (200, Some(2)));
    let (code, p) = patch_req(
        &admin,
        &a,
        "application/json-patch+json",
        &json!([{"op": "replace", "path": "/spec/revocations/0/ip", "value": "10.0.0.2"}]),
    );
    assert_eq!(
        (code, p["spec"]["revocations"][0]["ip"].as_str()),
        (200, Some("10.0.0.2"))
    );
    let (code, st) = patch_req(
        &admin,
        &format!("{a}?fieldValidation=Strict"),
        MERGE,
        &json!({"spec": {"extra": 1}}),
    );
    assert_eq!(
        (code, st["message"].as_str()),
        (
            400,
            Some("strict decoding error: unknown field \"spec.extra\"")
        )
    );
    let (code, st) = patch_req(
        &admin,
        &a,
        MERGE,
        &json!({"metadata": {"resourceVersion": "2"}, "spec": {"description": "x"}}),
    );
    assert_eq!((code, st["reason"].as_str()), (409, Some("Conflict")));
    let (code, st) = patch_req(&admin, &a, MERGE, &json!({"metadata": {"name": "z"}}));
    assert_eq!(
        (code, st["message"].as_str()),
        (
            400,
            Some("the name of the object (z) does not match the name on the URL (a)")
        )
    );
    let r = admin.delete(&a).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(server.revocations().len(), 1);
}

/// A pod bound to `node` as the scheduler and kubelet leave it.
fn pod_on(
    ns: &str,
    name: &str,
    node: &str,
    phase: &str,
    extra: Value,
) -> k8s_openapi::api::core::v1::Pod {
    let mut v = json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example:5000/app:1"}]},
        "status": {"phase": phase},
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            let into = o.entry(k.clone()).or_insert(json!({}));
            for (kk, xx) in x.as_object().unwrap() {
                into[kk] = xx.clone();
            }
        }
    }
    serde_json::from_value(v).unwrap()
}

fn names_of(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn pods_are_read_as_kube_apiserver_serves_them_and_a_node_lists_only_its_own() {
    let server = ApiServer::start();
    server.add_namespace("shop");
    server.set_pod(pod_on(
        "shop",
        "a",
        "n1",
        "Pending",
        json!({"spec": {"hostNetwork": true}, "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}]}}),
    ));
    server.set_pod(pod_on("shop", "b", "n2", "Pending", json!({})));
    server.set_pod(pod_on("default", "c", "n1", "Running", json!({})));
    let node = identity(&server, "system:node:n1", &["system:nodes"]);
    let admin = identity(&server, "kubernetes-admin", &["system:masters"]);
    let get =
        |c: &Http, path: &str| json_of(c.get(format!("{}{path}", server.url())).send().unwrap());

    // The node's own pods in every namespace, from the watch cache.
    let (code, list) = get(
        &node,
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&resourceVersion=0&resourceVersionMatch=NotOlderThan",
    );
    assert_eq!(code, 200, "{list}");
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (Some("PodList"), Some("v1"))
    );
    assert!(
        list["metadata"]["resourceVersion"].as_str().is_some(),
        "{list}"
    );
    assert_eq!(names_of(&list), ["default/c", "shop/a"]);
    let item = &list["items"][1];
    assert!(
        item.get("kind").is_none() && item.get("apiVersion").is_none(),
        "{item}"
    );
    assert_eq!(item["status"]["podIP"], "10.0.0.5");
    // ... and in one namespace.
    let (code, list) = get(
        &node,
        "/api/v1/namespaces/shop/pods?fieldSelector=spec.nodeName%3Dn1",
    );
    assert_eq!(code, 200, "{list}");
    assert_eq!(names_of(&list), ["shop/a"]);

    // Without the selector, with another node's, or by name: refused by
    // the Node authorizer (no pod is in its graph here), with its reason.
    for (path, reason) in [
        (
            "/api/v1/pods",
            "can only list/watch pods with spec.nodeName field selector",
        ),
        (
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2",
            "can only list/watch pods with spec.nodeName field selector",
        ),
        (
            "/api/v1/namespaces/shop/pods/a",
            "no relationship found between node 'n1' and this object",
        ),
    ] {
        let (code, status) = get(&node, path);
        assert_eq!(code, 403, "{path}: {status}");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.contains("User \"system:node:n1\" cannot"),
            "{message}"
        );
        assert!(message.ends_with(reason), "{path}: {message}");
    }

    // The field labels of v1 Pods (spec.host is the old name of
    // spec.nodeName); anything else is a 400.
    for (selector, expected) in [
        ("spec.host%3Dn1", vec!["default/c", "shop/a"]),
        ("status.phase%3DRunning", vec!["default/c"]),
        ("spec.hostNetwork%3Dtrue", vec!["shop/a"]),
        ("status.podIP%3D10.0.0.5", vec!["shop/a"]),
        ("spec.nodeName!%3Dn1", vec!["shop/b"]),
        (
            "metadata.namespace%3Dshop,spec.nodeName%3Dn2",
            vec!["shop/b"],
        ),
    ] {
        let (code, list) = get(&admin, &format!("/api/v1/pods?fieldSelector={selector}"));
        assert_eq!(code, 200, "{selector}: {list}");
        assert_eq!(names_of(&list), expected, "{selector}");
    }
    let (code, status) = get(&admin, "/api/v1/pods?fieldSelector=spec.containers%3Dapp");
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["reason"], "BadRequest");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("field label not supported: spec.containers"),
        "{status}"
    );

    // The stored pod, as an admin reads it, and discovery.
    let (code, a) = get(&admin, "/api/v1/namespaces/shop/pods/a");
    assert_eq!(code, 200, "{a}");
    assert_eq!(
        (a["kind"].as_str(), a["spec"]["nodeName"].as_str()),
        (Some("Pod"), Some("n1"))
    );
    let (_, resources) = get(&admin, "/api/v1");
    let pods = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .cloned()
        .unwrap();
    assert_eq!(
        (pods["kind"].as_str(), pods["namespaced"].as_bool()),
        (Some("Pod"), Some(true))
    );

    // Writes are not served here (tests put pods with `set_pod`).
    let (code, _) = json_of(
        admin
            .post(format!("{}/api/v1/namespaces/shop/pods", server.url()))
            .json(&json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "app", "image": "x"}]}}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 405);
    let (code, _) = json_of(
        admin
            .delete(format!("{}/api/v1/namespaces/shop/pods/a", server.url()))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 405);
    assert!(server.node("n1").is_none(), "pods need no Node here");
}
