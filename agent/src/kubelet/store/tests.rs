//! The tests of `store`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::os::unix::fs::{symlink, MetadataExt};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::x509::testpki;

/// 2024-05-01T10:00:00Z
const T0: i64 = 1_714_557_600;

struct Node {
    dir: tempfile::TempDir,
    store: KubeletStore,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let store = KubeletStore::new(host, PathBuf::from(DEFAULT_PKI_DIR));
        Self { dir, store }
    }

    fn pki(&self) -> PathBuf {
        self.dir.path().join("var/lib/kubelet/pki")
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.pki())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

struct Pair {
    cert: X509,
    chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

fn pair(cn: &str) -> Pair {
    let ca = testpki::good_ca("kubernetes");
    let (cert, key) = testpki::leaf_with_key(&ca, cn);
    let mut chain_pem = cert.to_pem().unwrap();
    chain_pem.extend(ca.cert.to_pem().unwrap());
    Pair {
        cert,
        chain_pem,
        key_pem: key.private_key_to_pem_pkcs8().unwrap(),
    }
}

fn install(node: &Node, kind: CertKind, p: &Pair, now: i64) -> PathBuf {
    node.store
        .install(kind, &p.chain_pem, &p.key_pem, now)
        .unwrap()
}

#[test]
fn timestamped_files_of_either_kind_are_recognised() {
    assert!(is_timestamped_file(
        "kubelet-client-2026-01-02-03-04-05.pem"
    ));
    assert!(is_timestamped_file(
        "kubelet-server-2026-01-02-03-04-05.pem"
    ));
    assert!(!is_timestamped_file("kubelet-client-current.pem"));
    assert!(!is_timestamped_file("kubelet.crt"));
}

#[test]
fn install_then_current_round_trips() {
    let node = Node::new();
    let p = pair("system:node:node-1");
    let path = install(&node, CertKind::Client, &p, T0);
    assert_eq!(
        path,
        Path::new("/var/lib/kubelet/pki/kubelet-client-2024-05-01-10-00-00.pem")
    );
    let current = node.store.current(CertKind::Client).unwrap().unwrap();
    assert_eq!(current.path, path);
    assert_eq!(current.cert.to_der().unwrap(), p.cert.to_der().unwrap());
    assert_eq!(current.chain.len(), 1, "the CA follows the leaf");
    assert!(current.key_matches);
    assert!(node.store.current(CertKind::Serving).unwrap().is_none());
}

#[test]
fn sweep_leftovers_removes_only_the_agents_temp_files() {
    let node = Node::new();
    assert_eq!(node.store.sweep_leftovers().unwrap(), 0, "no pki dir yet");
    install(&node, CertKind::Client, &pair("n"), T0);
    let temp = node
        .pki()
        .join(".nca-tmp-kubelet-client-2024-05-01-10-00-00.pem-7-0");
    fs::write(&temp, b"half a key").unwrap();
    assert_eq!(node.store.sweep_leftovers().unwrap(), 1);
    assert!(!temp.exists());
    assert!(node.store.current(CertKind::Client).unwrap().is_some());
}

#[test]
fn install_creates_pki_dir_0755_and_file_0600() {
    let node = Node::new();
    install(&node, CertKind::Serving, &pair("system:node:node-1"), T0);
    assert_eq!(fs::metadata(node.pki()).unwrap().mode() & 0o7777, 0o755);
    let file = node.pki().join("kubelet-server-2024-05-01-10-00-00.pem");
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn current_link_is_relative_symlink_to_file_name() {
    let node = Node::new();
    install(&node, CertKind::Client, &pair("n"), T0);
    let link = node.pki().join("kubelet-client-current.pem");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("kubelet-client-2024-05-01-10-00-00.pem")
    );
}

#[test]
fn file_holds_certificates_then_key() {
    let node = Node::new();
    let path = install(&node, CertKind::Client, &pair("n"), T0);
    let text = fs::read_to_string(node.dir.path().join(path.strip_prefix("/").unwrap())).unwrap();
    let blocks: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-----BEGIN"))
        .collect();
    assert_eq!(
        blocks,
        [
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN PRIVATE KEY-----"
        ]
    );
}

#[test]
fn installs_keep_new_and_previous_and_remove_older() {
    let node = Node::new();
    // Files that must survive: another kind, a non-timestamped file,
    // and a newer file from another writer.
    fs::create_dir_all(node.pki()).unwrap();
    for name in [
        "kubelet-server-2020-01-01-00-00-00.pem",
        "kubelet.crt",
        "kubelet-client-2099-01-01-00-00-00.pem",
    ] {
        fs::write(node.pki().join(name), b"x").unwrap();
    }
    // An old leftover of this kind, which must go.
    fs::write(
        node.pki().join("kubelet-client-2020-01-01-00-00-00.pem"),
        b"x",
    )
    .unwrap();

    install(&node, CertKind::Client, &pair("a"), T0);
    install(&node, CertKind::Client, &pair("b"), T0 + 3600);
    assert_eq!(
        node.names(),
        [
            "kubelet-client-2024-05-01-10-00-00.pem",
            "kubelet-client-2024-05-01-11-00-00.pem",
            "kubelet-client-2099-01-01-00-00-00.pem",
            "kubelet-client-current.pem",
            "kubelet-server-2020-01-01-00-00-00.pem",
            "kubelet.crt",
        ]
    );
    install(&node, CertKind::Client, &pair("c"), T0 + 7200);
    let client_files: Vec<String> = node
        .names()
        .into_iter()
        .filter(|n| n.starts_with("kubelet-client-2024"))
        .collect();
    assert_eq!(
        client_files,
        [
            "kubelet-client-2024-05-01-11-00-00.pem",
            "kubelet-client-2024-05-01-12-00-00.pem"
        ]
    );
    let current = node.store.current(CertKind::Client).unwrap().unwrap();
    assert_eq!(
        current.path,
        Path::new("/var/lib/kubelet/pki/kubelet-client-2024-05-01-12-00-00.pem")
    );
}

#[test]
fn install_in_same_second_takes_next_second_and_keeps_first() {
    let node = Node::new();
    let first = install(&node, CertKind::Client, &pair("a"), T0);
    let second = install(&node, CertKind::Client, &pair("b"), T0);
    assert_eq!(
        second,
        Path::new("/var/lib/kubelet/pki/kubelet-client-2024-05-01-10-00-01.pem")
    );
    assert!(node
        .dir
        .path()
        .join(first.strip_prefix("/").unwrap())
        .exists());
    assert_eq!(
        node.store.current(CertKind::Client).unwrap().unwrap().path,
        second
    );
}

#[test]
fn install_refuses_key_of_another_certificate() {
    let node = Node::new();
    let p = pair("n");
    let other_key = testpki::key().private_key_to_pem_pkcs8().unwrap();
    let err = node
        .store
        .install(CertKind::Client, &p.chain_pem, &other_key, T0)
        .unwrap_err();
    assert!(matches!(err, StoreError::MatchNewKey { .. }), "{err:?}");
    assert!(!node.pki().exists(), "nothing is written for a bad pair");
}

#[test]
fn install_errors_never_show_the_key() {
    let node = Node::new();
    let p = pair("n");
    let key_text = String::from_utf8(p.key_pem.clone()).unwrap();
    let key_body = key_text.lines().nth(1).unwrap();
    let err = node
        .store
        .install(CertKind::Client, b"garbage", &p.key_pem, T0)
        .unwrap_err();
    assert!(matches!(err, StoreError::ParseNewChain { .. }), "{err:?}");
    let mut broken_key = p.key_pem.clone();
    broken_key.truncate(broken_key.len() / 2);
    let err2 = node
        .store
        .install(CertKind::Client, &p.chain_pem, &broken_key, T0)
        .unwrap_err();
    assert!(matches!(err2, StoreError::ParseNewKey { .. }), "{err2:?}");
    for e in [err, err2] {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(key_body), "key leaked: {text}");
    }
}

#[test]
fn mismatched_key_in_current_file_gives_key_matches_false() {
    let node = Node::new();
    let p = pair("n");
    fs::create_dir_all(node.pki()).unwrap();
    let mut pem = p.cert.to_pem().unwrap();
    pem.extend(testpki::key().private_key_to_pem_pkcs8().unwrap());
    fs::write(
        node.pki().join("kubelet-client-2024-05-01-10-00-00.pem"),
        pem,
    )
    .unwrap();
    symlink(
        "kubelet-client-2024-05-01-10-00-00.pem",
        node.pki().join("kubelet-client-current.pem"),
    )
    .unwrap();
    let current = node.store.current(CertKind::Client).unwrap().unwrap();
    assert!(!current.key_matches);
    assert!(format!("{current:?}").contains("<redacted>"));
}

#[test]
fn garbage_current_file_is_an_error_naming_it() {
    let node = Node::new();
    fs::create_dir_all(node.pki()).unwrap();
    fs::write(
        node.pki().join("kubelet-server-2024-05-01-10-00-00.pem"),
        b"garbage\n",
    )
    .unwrap();
    symlink(
        "kubelet-server-2024-05-01-10-00-00.pem",
        node.pki().join("kubelet-server-current.pem"),
    )
    .unwrap();
    let err = node.store.current(CertKind::Serving).unwrap_err();
    assert!(matches!(err, StoreError::ParseCert { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("/var/lib/kubelet/pki/kubelet-server-2024-05-01-10-00-00.pem"),
        "{err}"
    );
}

#[test]
fn current_file_without_key_is_an_error_naming_it() {
    let node = Node::new();
    fs::create_dir_all(node.pki()).unwrap();
    fs::write(
        node.pki().join("kubelet-client-current.pem"),
        pair("n").cert.to_pem().unwrap(),
    )
    .unwrap();
    let err = node.store.current(CertKind::Client).unwrap_err();
    assert!(matches!(err, StoreError::ParseKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains("kubelet-client-current.pem"),
        "{err}"
    );
}

#[test]
fn absent_current_is_none() {
    let node = Node::new();
    assert!(node.store.current(CertKind::Client).unwrap().is_none());
    fs::create_dir_all(node.pki()).unwrap();
    assert!(node.store.current(CertKind::Client).unwrap().is_none());
}

#[test]
fn dangling_current_link_is_none() {
    let node = Node::new();
    fs::create_dir_all(node.pki()).unwrap();
    symlink(
        "kubelet-client-2024-05-01-10-00-00.pem",
        node.pki().join("kubelet-client-current.pem"),
    )
    .unwrap();
    assert!(node.store.current(CertKind::Client).unwrap().is_none());
}

#[test]
fn current_link_always_resolves_during_installs() {
    let node = Node::new();
    install(&node, CertKind::Client, &pair("first"), T0);
    let link = node.pki().join("kubelet-client-current.pem");
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (link, stop, checks) = (link.clone(), stop.clone(), checks.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Follows the link: fails if it is missing or dangles.
                if let Err(e) = fs::read(&link) {
                    failures.push(e.to_string());
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
            failures
        })
    };
    let pairs: Vec<Pair> = (0..4).map(|i| pair(&format!("n{i}"))).collect();
    for round in 0..20 {
        let p = &pairs[round % pairs.len()];
        install(&node, CertKind::Client, p, T0 + 60 * (round as i64 + 1));
        assert!(
            fs::metadata(&link).is_ok(),
            "link resolves after round {round}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let failures = watcher.join().unwrap();
    assert!(failures.is_empty(), "link was missing: {failures:?}");
    assert!(checks.load(Ordering::Relaxed) > 0);
    assert!(
        node.store
            .current(CertKind::Client)
            .unwrap()
            .unwrap()
            .key_matches
    );
}

#[test]
fn kinds_name_their_files_and_themselves() {
    assert_eq!(
        CertKind::Client.current_file_name(),
        "kubelet-client-current.pem"
    );
    assert_eq!(
        CertKind::Serving.current_file_name(),
        "kubelet-server-current.pem"
    );
    assert_eq!(CertKind::Serving.name(), "serving");
    assert_eq!(CertKind::Client.to_string(), "kubelet-client");
}

#[test]
fn timestamped_names_are_recognised_strictly() {
    assert_eq!(
        timestamped_name(CertKind::Client, T0),
        "kubelet-client-2024-05-01-10-00-00.pem"
    );
    assert!(is_timestamped_name(
        CertKind::Client,
        "kubelet-client-2024-05-01-10-00-00.pem"
    ));
    for name in [
        "kubelet-client-current.pem",
        "kubelet-client-updated.pem",
        "kubelet-server-2024-05-01-10-00-00.pem",
        "kubelet-client-2024-05-01-10-00-0x.pem",
        "kubelet-client-2024-05-01T10-00-00.pem",
        "kubelet-client-2024-05-01-10-00-00.pem.bak",
    ] {
        assert!(!is_timestamped_name(CertKind::Client, name), "{name}");
    }
}

#[test]
fn install_refuses_time_before_1970() {
    let node = Node::new();
    let p = pair("n");
    let err = node
        .store
        .install(CertKind::Client, &p.chain_pem, &p.key_pem, -5)
        .unwrap_err();
    assert!(matches!(err, StoreError::NameNewFile { .. }), "{err:?}");
}
