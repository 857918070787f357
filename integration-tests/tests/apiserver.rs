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
use nca_test_apiserver::{ApiServer, PolicyRule, Subject, Throttle};
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
        json!(["system:bootstrappers", "system:authenticated"])
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
            Some("strict decoding error: unknown field \"spec.colour\"")
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
    // Node identity through kube-rs: get own Node.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig(&server, dir.path(), "n1");
    rt().block_on(async {
        let api: Api<Node> = Api::all(kube_client(&kubeconfig).await);
        let n = api.get("n1").await.unwrap();
        assert!(n.metadata.uid.is_some());
        let e = kube_status(api.get("n9").await.unwrap_err());
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
            .resolve_gvk(&GroupVersionKind::gvk(
                "nodecert.dev",
                "v1alpha1",
                "RenewRevocation",
            ))
            .unwrap();
        assert_eq!(ar.plural, "renewrevocations");
        assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
        assert!(discovery.has_group("certificates.k8s.io"));
        assert!(discovery.has_group("events.k8s.io"));
        let groups = client.list_api_groups_aggregated().await.unwrap();
        assert!(groups
            .items
            .iter()
            .any(|g| g.metadata.as_ref().and_then(|m| m.name.as_deref()) == Some("nodecert.dev")));
    });
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    for p in [
        "/version",
        "/api",
        "/apis",
        "/api/v1",
        "/apis/nodecert.dev/v1alpha1",
        "/apis/certificates.k8s.io/v1",
        "/apis/events.k8s.io/v1",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} not requested: {paths:?}");
    }
}

fn revocation_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nodecert.dev", "v1alpha1", "RenewRevocation"),
        "renewrevocations",
    )
}

#[test]
fn kube_runtime_watcher_sees_revocations_as_a_node() {
    let server = ApiServer::start();
    server.set_bookmark_interval(Duration::from_millis(200));
    server
        .add_revocation(json!({"metadata": {"name": "before"}, "spec": {"revocations": [{"kind": "Group", "group": "system:nodes"}]}}))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig(&server, dir.path(), "n1");
    rt().block_on(async {
        let ar = revocation_resource();
        let api: Api<DynamicObject> = Api::all_with(kube_client(&kubeconfig).await, &ar);
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
                        assert_eq!(o.data["spec"]["description"], "bad batch");
                    }
                }
                kube::runtime::watcher::Event::InitDone if !added => {
                    added = true;
                    server
                        .add_revocation(json!({"apiVersion": "nodecert.dev/v1alpha1", "kind": "RenewRevocation", "metadata": {"name": "after"}, "spec": {"description": "bad batch", "revocations": [{"kind": "serialnumber", "serialNumber": "0A1B", "notBefore": "2025-01-01T00:00:00Z"}]}}))
                        .unwrap();
                }
                _ => {}
            }
        }
        assert_eq!(names, ["before", "after"]);
    });
    // The streaming-list strategy (sendInitialEvents): initial ADDED events,
    // then the BOOKMARK annotated k8s.io/initial-events-end ends Init.
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
        assert_eq!(initial, ["after", "before"]);
    });
    let reqs = server.requests();
    assert!(reqs.iter().any(|r| r.verb == "watch"
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
                r.user.as_str(),
                r.code
            ),
            ("nodecert.dev", "renewrevocations", "system:node:n1", 200)
        );
    }
    assert!(
        watch.query.contains("allowWatchBookmarks=true"),
        "{}",
        watch.query
    );
    // Without the project's binding, a node may not read them.
    server.revoke("node-cert-agent:renewrevocations-reader");
    rt().block_on(async {
        let api: Api<DynamicObject> =
            Api::all_with(kube_client(&kubeconfig).await, &revocation_resource());
        let e = kube_status(api.list(&ListParams::default()).await.unwrap_err());
        assert_eq!(e.code, 403);
    });
    // The schema rejects bad entries (422) and prunes unknown fields.
    let err = server
        .add_revocation(
            json!({"metadata": {"name": "bad"}, "spec": {"revocations": [{"kind": "CN"}]}}),
        )
        .unwrap_err();
    assert!(
        err.contains("spec.revocations[0].kind: Unsupported value: \"CN\""),
        "{err}"
    );
    let pruned = server.add_revocation(json!({"metadata": {"name": "pruned"}, "spec": {"revocations": [{"kind": "IP", "ip": "10.0.0.1", "junk": 1}]}})).unwrap();
    assert!(pruned["spec"]["revocations"][0].get("junk").is_none());
}

#[test]
fn watch_semantics_expired_rv_bookmarks_and_label_selectors() {
    let server = ApiServer::start();
    server.set_bookmark_interval(Duration::from_millis(100));
    server
        .add_revocation(json!({"metadata": {"name": "a", "labels": {"team": "x"}}, "spec": {}}))
        .unwrap();
    let old_rv = server.resource_version();
    server
        .add_revocation(json!({"metadata": {"name": "b"}, "spec": {}}))
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
    let server = ApiServer::start();
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

    // events.k8s.io/v1 via kube-runtime's Recorder, for a service account granted it.
    let token = server.add_service_account_token("kube-system", "node-cert-agent");
    server.grant(
        "nca-events",
        Subject::User("system:serviceaccount:kube-system:node-cert-agent".into()),
        vec![PolicyRule::resource(
            &["create", "patch"],
            &["events.k8s.io"],
            &["events"],
        )],
    );
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
