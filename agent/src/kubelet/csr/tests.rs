//! The tests of `csr`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use openssl::asn1::Asn1Time;
use openssl::x509::{X509Builder, X509Req};

use super::*;
use crate::time::now_unix;
use crate::x509::testpki;

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

/// Files a client CSR for a new key with the fake answering `answer`,
/// and waits at most `timeout` for it.
async fn file_and_wait(
    answer: crate::kubelet::fake_api::CsrAnswer,
    timeout: Duration,
) -> Result<(String, Vec<u8>), CsrError> {
    use crate::kubelet::fake_api::{FakeApi, NODE};
    let api = FakeApi::start(3600);
    api.set_csr_answer(answer);
    let mut config = kube::Config::new(api.server().parse().unwrap());
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config).unwrap();
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let usages = usages_of(&Purpose::Client, KeyType::EcdsaP256);
    let name = csr_name(&key, NODE, &usages).unwrap();
    let request = build_request(&key, NODE, &Purpose::Client).unwrap();
    let csr = csr_object(&name, request, &Purpose::Client, KeyType::EcdsaP256, None);
    submit_and_wait(&client, &csr, &key, Duration::from_secs(5), timeout).await
}

#[tokio::test]
async fn a_csr_deleted_before_the_watch_lists_it_ends_the_wait_at_once_not_at_the_timeout() {
    let started = std::time::Instant::now();
    let timeout = Duration::from_secs(6);
    let e = file_and_wait(
        crate::kubelet::fake_api::CsrAnswer::DeletedWhilePending,
        timeout,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, CsrError::Deleted { noticed, .. } if noticed.contains("relist")),
        "{e}"
    );
    assert!(e.ends_the_request());
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    assert!(
        e.to_string().contains("the next attempt files a new one"),
        "{e}"
    );
}

#[tokio::test]
async fn a_csr_deleted_and_filed_again_under_its_name_is_not_taken_for_ours() {
    use crate::kubelet::fake_api::{CsrAnswer, FILED_UID, REFILED_UID};
    let e = file_and_wait(CsrAnswer::RecreatedAndSigned, Duration::from_secs(6))
        .await
        .map(|(name, _)| name)
        .expect_err("the certificate of another CSR of the same name was taken");
    assert!(
        matches!(&e, CsrError::Replaced { filed, found, .. }
            if filed == FILED_UID && found == REFILED_UID),
        "{e}"
    );
    assert!(e.ends_the_request());
    let text = e.to_string();
    assert!(
        text.contains("deleted and created again") && text.contains(REFILED_UID),
        "{text}"
    );
}

#[tokio::test]
async fn a_pending_csr_of_our_uid_is_waited_for_until_the_timeout() {
    let e = file_and_wait(
        crate::kubelet::fake_api::CsrAnswer::Pending,
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, CsrError::Timeout { .. }), "{e}");
}

fn with_uid(uid: &str, signed: bool) -> CertificateSigningRequest {
    let mut csr = csr_object(
        "node-csr-a",
        vec![],
        &Purpose::Client,
        KeyType::EcdsaP256,
        None,
    );
    csr.metadata.uid = Some(uid.into());
    if signed {
        csr.status = Some(
            k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus {
                certificate: Some(ByteString(b"PEM".to_vec())),
                conditions: None,
            },
        );
    }
    csr
}

#[test]
fn the_followed_csr_is_gone_on_a_delete_a_relist_without_it_or_another_uid() {
    use watcher::Event as W;
    let followed = || Followed::new("node-csr-a", Some("u1".into()));
    // A watch event of another uid under the name.
    let mut f = followed();
    let r = f.on(W::Apply(with_uid("u2", true))).unwrap();
    assert!(matches!(r, Err(CsrError::Replaced { .. })), "{r:?}");
    // A Deleted event.
    let mut f = followed();
    let r = f.on(W::Delete(with_uid("u1", false))).unwrap();
    assert!(matches!(r, Err(CsrError::Deleted { .. })), "{r:?}");
    // A relist: with it, the wait goes on; without it, it is gone.
    let mut f = followed();
    assert!(f.on(W::Init).is_none());
    assert!(f.on(W::InitApply(with_uid("u1", false))).is_none());
    assert!(f.on(W::InitDone).is_none());
    assert!(f.on(W::Init).is_none());
    let r = f.on(W::InitDone).unwrap();
    assert!(matches!(r, Err(CsrError::Deleted { .. })), "{r:?}");
    // Ours, signed: its certificate.
    let mut f = followed();
    assert_eq!(
        f.on(W::Apply(with_uid("u1", true))).unwrap().unwrap(),
        b"PEM"
    );
    // No uid known: not compared.
    let mut f = Followed::new("node-csr-a", None);
    assert!(f.on(W::Apply(with_uid("u2", true))).unwrap().is_ok());
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
fn the_csr_name_follows_the_key_only() {
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let usages = usages_of(&Purpose::Client, KeyType::EcdsaP256);
    let a = csr_name(&key, "n1", &usages).unwrap();
    assert_eq!(
        a,
        csr_name(&key, "n1", &usages).unwrap(),
        "same key, same name"
    );
    assert!(a.starts_with("node-csr-") && a.len() < 64, "{a}");
    let other = generate_key(KeyType::EcdsaP256).unwrap();
    assert_ne!(a, csr_name(&other, "n1", &usages).unwrap());
    assert_ne!(a, csr_name(&key, "n2", &usages).unwrap());
    let serving = usages_of(
        &Purpose::Serving {
            dns: vec!["n1".into()],
            ips: vec![],
        },
        KeyType::EcdsaP256,
    );
    assert_ne!(a, csr_name(&key, "n1", &serving).unwrap());
    assert!(a[9..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
}

#[test]
fn usages_add_key_encipherment_only_for_rsa() {
    let o = csr_object(
        "node-csr-a",
        vec![],
        &Purpose::Client,
        KeyType::EcdsaP256,
        None,
    );
    assert_eq!(o.spec.usages.unwrap(), ["digital signature", "client auth"]);
    assert_eq!(o.spec.signer_name, CLIENT_SIGNER);
    let o = csr_object(
        "node-csr-a",
        vec![],
        &Purpose::Client,
        KeyType::Rsa2048,
        Some(3600),
    );
    assert_eq!(
        o.spec.usages.unwrap(),
        ["digital signature", "key encipherment", "client auth"]
    );
    assert_eq!(o.spec.expiration_seconds, Some(3600));
    let o = csr_object(
        "node-csr-a",
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
fn every_key_type_generates_the_key_it_names() {
    use openssl::nid::Nid;
    for (kt, curve, rsa_bits) in [
        (KeyType::EcdsaP256, Some(Nid::X9_62_PRIME256V1), None),
        (KeyType::EcdsaP384, Some(Nid::SECP384R1), None),
        (KeyType::Rsa2048, None, Some(2048)),
    ] {
        let key = generate_key(kt).unwrap();
        match (curve, rsa_bits) {
            (Some(nid), _) => {
                let ec = key.ec_key().unwrap();
                assert_eq!(ec.group().curve_name(), Some(nid), "{kt:?}");
            }
            (_, Some(bits)) => assert_eq!(key.rsa().unwrap().size() * 8, bits, "{kt:?}"),
            _ => unreachable!(),
        }
        let bytes = build_request(&key, "n1", &Purpose::Client).unwrap();
        let req = openssl::x509::X509Req::from_pem(&bytes)
            .or_else(|_| openssl::x509::X509Req::from_der(&bytes))
            .unwrap();
        assert!(req.verify(&req.public_key().unwrap()).unwrap(), "{kt:?}");
        assert!(req.public_key().unwrap().public_eq(&key), "{kt:?}");
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
    let v = verify_issued("csr-1", &issued, &key, "n1", Some(&ca_pem), now_unix()).unwrap();
    assert!(v.chain_warning.is_none(), "{:?}", v.chain_warning);
}

#[test]
fn certificate_for_another_key_subject_or_time_is_rejected_and_another_ca_warned_about() {
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
    // kubelet installs a certificate of another signer: so does the
    // agent, warning with both issuers.
    let v = verify_issued("c", &wrong_ca, &key, "n1", Some(&ca_pem), now).unwrap();
    let w = v.chain_warning.unwrap();
    assert!(
        w.contains("does not chain") && w.contains("CN=rogue") && w.contains("CN=cluster"),
        "{w}"
    );

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
