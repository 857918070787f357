//! The tests of `sources`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use super::*;
use crate::time::now_unix;
use crate::trust::secret_manifest::read_secret_manifest;
use crate::x509::testpki;

/// Publishes `keys` the way kubelet's AtomicWriter does.
fn publish(dir: &Path, generation: u32, keys: &[(&str, &[u8])]) {
    let payload = format!("..2026_11_22_04_45_{generation:02}.000000001");
    fs::create_dir(dir.join(&payload)).unwrap();
    for (k, v) in keys {
        fs::write(dir.join(&payload).join(k), v).unwrap();
    }
    let _ = fs::remove_file(dir.join("..data_tmp"));
    symlink(&payload, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (k, _) in keys {
        let link = dir.join(k);
        if fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{k}"), &link).unwrap();
        }
    }
}

#[test]
fn reads_exactly_the_keys_data_points_at() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ca1.crt", b"one"), ("ca2.crt", b"two")]);
    // A stale user-visible link and a dotfile must not count.
    symlink("..data/gone.crt", dir.path().join("gone.crt")).unwrap();
    fs::write(dir.path().join(".hidden"), b"x").unwrap();
    let keys = read_secret_dir(dir.path()).unwrap();
    let names: Vec<_> = keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(names, ["ca1.crt", "ca2.crt"]);
    assert_eq!(keys[1].content.as_ref().unwrap(), b"two");
}

#[test]
fn a_dot_key_in_the_payload_is_reported_not_read_and_a_plain_dirs_dotfile_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ca1.crt", b"one"), (".ca2.crt", b"two")]);
    let keys = read_secret_dir(dir.path()).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].key, ".ca2.crt");
    let finding = keys[1].content.as_ref().unwrap_err();
    assert_eq!(finding.kind, FindingKind::HiddenKey);
    assert!(!finding.is_error(), "a warning: {finding}");
    assert!(
        finding
            .to_string()
            .contains("rename the key to \"ca2.crt\""),
        "{finding}"
    );
    let input = read_source(&SourceSpec::SecretDir(dir.path().to_owned()), 0);
    let verdicts = input.keys.unwrap();
    assert!(verdicts[1].rejected && verdicts[1].certs.is_empty());

    let plain = tempfile::tempdir().unwrap();
    fs::write(plain.path().join("ca1.crt"), b"one").unwrap();
    fs::write(plain.path().join(".keep"), b"").unwrap();
    let keys = read_secret_dir(plain.path()).unwrap();
    assert_eq!(
        keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["ca1.crt"]
    );
}

#[test]
fn a_new_payload_replaces_the_old_key_set() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ca1.crt", b"one")]);
    publish(dir.path(), 2, &[("ca2.crt", b"two")]);
    let keys = read_secret_dir(dir.path()).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key, "ca2.crt");
}

#[test]
fn half_written_payload_is_invisible_until_the_swap() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ca1.crt", b"one")]);
    // Step 1 of an update: a new payload dir exists, ..data not yet swapped.
    fs::create_dir(dir.path().join("..2026_11_22_04_45_09.000000001")).unwrap();
    fs::write(
        dir.path().join("..2026_11_22_04_45_09.000000001/ca1.crt"),
        b"half",
    )
    .unwrap();
    let keys = read_secret_dir(dir.path()).unwrap();
    assert_eq!(keys[0].content.as_ref().unwrap(), b"one");
}

#[test]
fn swap_in_the_middle_of_a_read_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ca1.crt", b"one")]);
    let name = fs::read_link(dir.path().join("..data")).unwrap();
    // Simulate the read seeing generation 1's listing, then a swap and the
    // old payload's deletion before the key was read.
    let top = DirHandle::open(dir.path()).unwrap();
    let payload = top.open_dir(name.as_os_str()).unwrap();
    let listed = match read_keys(&payload, dir.path(), true, own_uid()) {
        Ok(keys) => keys,
        Err(_) => panic!("the first read failed"),
    };
    assert_eq!(listed[0].content.as_ref().unwrap(), b"one");
    publish(dir.path(), 2, &[("ca1.crt", b"two")]);
    fs::remove_dir_all(dir.path().join(&name)).unwrap();
    assert!(matches!(
        read_keys(&payload, dir.path(), true, own_uid()),
        Err(ReadKeysError::Vanished) | Ok(_)
    ));
    // The full read notices and returns only the new generation.
    let keys = read_secret_dir(dir.path()).unwrap();
    assert_eq!(keys[0].content.as_ref().unwrap(), b"two");
}

#[test]
fn link_leading_outside_the_dir_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"not yours").unwrap();
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ok.crt", b"x")]);
    let payload = dir
        .path()
        .join(fs::read_link(dir.path().join("..data")).unwrap());
    symlink(outside.path().join("secret"), payload.join("evil.crt")).unwrap();
    let keys = read_secret_dir(dir.path()).unwrap();
    let evil = keys.iter().find(|k| k.key == "evil.crt").unwrap();
    let finding = evil.content.as_ref().unwrap_err();
    assert_eq!(finding.kind, FindingKind::Link);
    assert!(finding.to_string().contains("evil.crt"));
}

/// The payload as the next generation, not yet visible (AtomicWriter's
/// step 1), at `..2026_11_22_04_45_<generation>.000000001`.
fn payload_path(dir: &Path) -> PathBuf {
    dir.join(fs::read_link(dir.join("..data")).unwrap())
}

/// Points `..data` at `target`, as kubelet's rename does.
fn point_data_at(dir: &Path, target: &str) {
    let _ = fs::remove_file(dir.join("..data_tmp"));
    symlink(target, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
}

#[test]
fn data_pointing_at_the_parent_is_refused_and_the_parent_is_not_read() {
    let parent = tempfile::tempdir().unwrap();
    fs::write(parent.path().join("planted.crt"), b"planted").unwrap();
    let dir = parent.path().join("secret");
    fs::create_dir(&dir).unwrap();
    publish(&dir, 1, &[("ca1.crt", b"one")]);
    for target in [
        "..",
        "../secret",
        "/etc",
        "..2026_11_22_04_45_01.000000001/..",
    ] {
        point_data_at(&dir, target);
        let err = read_secret_dir(&dir).unwrap_err();
        assert!(
            matches!(err, SourceError::BadDataLink { .. }),
            "{target}: {err}"
        );
        let input = read_source(&SourceSpec::SecretDir(dir.clone()), 0);
        let f = input.keys.unwrap_err();
        assert_eq!(f.kind, FindingKind::BadLayout, "{target}");
        assert!(
            f.to_string().contains("stay installed") && f.to_string().contains("Fix:"),
            "{f}"
        );
    }
}

#[test]
fn a_payload_that_is_a_link_is_refused_and_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("root-only.crt"), b"secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ca1.crt", b"one")]);
    // A name of kubelet's form, but a link to a directory elsewhere.
    symlink(
        outside.path(),
        dir.path().join("..2026_11_22_04_45_09.000000002"),
    )
    .unwrap();
    point_data_at(dir.path(), "..2026_11_22_04_45_09.000000002");
    let err = read_secret_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, SourceError::PayloadNotADirectory { .. }),
        "{err}"
    );
}

#[test]
fn a_link_inside_the_payload_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ca1.crt", b"one")]);
    symlink("ca1.crt", payload_path(dir.path()).join("ca2.crt")).unwrap();
    let keys = read_secret_dir(dir.path()).unwrap();
    let f = keys[1].content.as_ref().unwrap_err();
    assert_eq!(
        (keys[1].key.as_str(), f.kind),
        ("ca2.crt", FindingKind::Link)
    );
    assert!(f.problem.contains("\"ca1.crt\""), "names the target: {f}");
}

#[test]
fn a_hard_link_is_refused_without_being_read() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("root-only"), b"secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ok.crt"), b"x").unwrap();
    fs::hard_link(
        outside.path().join("root-only"),
        dir.path().join("evil.crt"),
    )
    .unwrap();
    let keys = read_secret_dir(dir.path()).unwrap();
    let evil = keys.iter().find(|k| k.key == "evil.crt").unwrap();
    let f = evil.content.as_ref().unwrap_err();
    assert_eq!(f.kind, FindingKind::HardLink);
    assert!(f.problem.contains("2 hard links"), "{f}");
}

#[test]
fn files_and_directories_others_can_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ok.crt"), b"x").unwrap();
    fs::write(dir.path().join("open.crt"), b"y").unwrap();
    fs::set_permissions(
        dir.path().join("open.crt"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let keys = read_secret_dir(dir.path()).unwrap();
    let open = keys.iter().find(|k| k.key == "open.crt").unwrap();
    let f = open.content.as_ref().unwrap_err();
    assert_eq!(f.kind, FindingKind::WritableByOthers);
    assert!(
        f.problem.contains("mode 0666") && f.fix.contains("0644"),
        "{f}"
    );
    assert!(keys
        .iter()
        .find(|k| k.key == "ok.crt")
        .unwrap()
        .content
        .is_ok());

    // The directory itself group-writable: nothing in it is read.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o770)).unwrap();
    let err = read_secret_dir(dir.path()).unwrap_err();
    assert!(matches!(err, SourceError::Unsafe { .. }), "{err}");
    let f = read_source(&SourceSpec::SecretDir(dir.path().into()), 0)
        .keys
        .unwrap_err();
    assert_eq!(f.kind, FindingKind::WritableByOthers);
    assert!(f.to_string().contains("mode 0770"), "{f}");

    // Sticky, like /tmp and kubelet's tmpfs volumes: each entry decides.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(read_secret_dir(dir.path()).is_ok());
}

#[test]
fn a_world_writable_provisioning_file_or_its_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom-ca.pem");
    fs::write(&path, testpki::pem(&testpki::good_ca("P").cert)).unwrap();
    assert!(read_source(&SourceSpec::File(path.clone()), now_unix())
        .keys
        .is_ok());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o646)).unwrap();
    let f = read_source(&SourceSpec::File(path.clone()), now_unix())
        .keys
        .unwrap_err();
    assert_eq!(f.kind, FindingKind::WritableByOthers, "{f}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::hard_link(&path, dir.path().join("second-name")).unwrap();
    let f = read_source(&SourceSpec::File(path.clone()), now_unix())
        .keys
        .unwrap_err();
    assert_eq!(f.kind, FindingKind::HardLink, "{f}");
}

#[test]
fn a_directory_named_like_a_key_gets_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &[("ca1.crt", b"one")]);
    fs::create_dir(payload_path(dir.path()).join("dir.crt")).unwrap();
    let verdicts = read_source(&SourceSpec::SecretDir(dir.path().into()), 0)
        .keys
        .unwrap();
    let v = verdicts.iter().find(|v| v.key == "dir.crt").unwrap();
    assert_eq!(v.findings[0].kind, FindingKind::NotAKey);
    assert!(!v.findings[0].is_error() && v.rejected);
    assert!(v.findings[0]
        .to_string()
        .contains("is a directory, not a key"));
}

#[test]
fn a_key_name_that_is_not_plain_ascii_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let pem = testpki::pem(&testpki::good_ca("Lookalike").cert);
    publish(
        dir.path(),
        1,
        &[
            ("c\u{430}1.crt", pem.as_bytes()),
            ("ca\u{202e}2.crt", pem.as_bytes()),
        ],
    );
    let verdicts = read_source(&SourceSpec::SecretDir(dir.path().into()), now_unix())
        .keys
        .unwrap();
    for v in &verdicts {
        assert!(!v.rejected, "still installed: {v:?}");
        assert_eq!(v.findings[0].kind, FindingKind::NonAsciiKeyName);
        assert!(!v.findings[0].is_error());
    }
    let problem = |k: &str| {
        verdicts.iter().find(|v| v.key == k).unwrap().findings[0]
            .problem
            .clone()
    };
    assert!(problem("c\u{430}1.crt").contains("U+0430"));
    assert!(problem("ca\u{202e}2.crt").contains("U+202E"));
}

#[test]
fn payload_names_are_kubelets_form_only() {
    for ok in [
        "..2026_11_22_04_45_18.123456789",
        "..1970_01_01_00_00_00.0",
        "..2026_11_22_04_45_18.4294967295",
    ] {
        assert!(is_payload_name(ok.as_bytes()), "{ok}");
    }
    for bad in [
        "..",
        "../x",
        "..data",
        "...",
        "..2026_11_22_04_45_18.",
        "..2026_11_22_04_45_18.12/..",
        "..2026_11_22_04_45_18.1a",
        "..2026-11-22_04_45_18.1",
        "/..2026_11_22_04_45_18.1",
        "..2026_11_22_04_45_18.123456789012345678901",
        "2026_11_22_04_45_18.1",
    ] {
        assert!(!is_payload_name(bad.as_bytes()), "{bad}");
    }
}

#[test]
fn plain_directory_without_data_link_is_read_directly() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.crt"), b"A").unwrap();
    let keys = read_secret_dir(dir.path()).unwrap();
    assert_eq!(keys.len(), 1);
}

#[test]
fn missing_dir_is_a_source_error_that_keeps_state() {
    let input = read_source(
        &SourceSpec::SecretDir("/nonexistent/nca".into()),
        now_unix(),
    );
    let finding = input.keys.unwrap_err();
    assert_eq!(finding.kind, FindingKind::SourceMissing);
    assert!(finding.problem.contains("/nonexistent/nca"));
}

#[test]
fn provisioning_file_with_blank_line_separated_pems_is_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = testpki::pem(&testpki::good_ca("A").cert);
    let b = testpki::pem(&testpki::good_ca("B").cert);
    let path = dir.path().join("custom-ca.pem");
    fs::write(&path, format!("{a}\n{b}")).unwrap();
    let input = read_source(&SourceSpec::File(path.clone()), now_unix());
    let verdicts = input.keys.unwrap();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].certs.len(), 2);
    assert_eq!(verdicts[0].key, path.display().to_string());
}

#[test]
fn oversized_key_reports_its_size() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("big.crt"), vec![b'a'; 5 * 1024 * 1024]).unwrap();
    let input = read_source(&SourceSpec::SecretDir(dir.path().into()), now_unix());
    let verdict = &input.keys.unwrap()[0];
    assert_eq!(verdict.findings[0].kind, FindingKind::TooLarge);
}

#[test]
fn secret_manifest_keys_are_read_from_data_and_string_data() {
    let dir = tempfile::tempdir().unwrap();
    let pem = testpki::pem(&testpki::good_ca("Manifest").cert);
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: custom-ca-trust-secret\n  namespace: kube-system\ndata:\n  ca1.crt: {}\n  twice.crt: {}\nstringData:\n  ca2.crt: |\n{}\n",
        b64(pem.as_bytes()),
        b64(b64(pem.as_bytes()).as_bytes()),
        pem.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    );
    let path = dir.path().join("secret.yaml");
    fs::write(&path, yaml).unwrap();
    let secrets = read_secret_manifest(&path).unwrap().unwrap();
    assert_eq!(secrets.len(), 1);
    assert!(secrets[0]
        .0
        .contains("Secret kube-system/custom-ca-trust-secret"));
    let input = validate_raw_keys(secrets[0].0.clone(), secrets[0].1.clone_keys(), now_unix());
    let verdicts = input.keys.unwrap();
    let by_key = |k: &str| verdicts.iter().find(|v| v.key == k).unwrap();
    assert!(!by_key("ca1.crt").rejected);
    assert!(!by_key("ca2.crt").rejected);
    assert_eq!(
        by_key("twice.crt").findings[0].kind,
        FindingKind::DoubleBase64
    );
}

#[test]
fn a_pem_file_is_not_a_secret_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    fs::write(&path, testpki::pem(&testpki::good_ca("A").cert)).unwrap();
    assert!(read_secret_manifest(&path).unwrap().is_none());
}

trait CloneKeys {
    fn clone_keys(&self) -> Vec<RawKey>;
}
impl CloneKeys for Vec<RawKey> {
    fn clone_keys(&self) -> Vec<RawKey> {
        self.iter()
            .map(|k| RawKey {
                key: k.key.clone(),
                content: k.content.clone(),
            })
            .collect()
    }
}
