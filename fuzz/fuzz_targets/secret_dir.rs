//! A Secret directory written by someone hostile: the input builds a small
//! tree (files, links, hard links, directories, modes, any `..data`
//! target) beside a file outside it, then the agent reads the directory.
//! Never a panic, and never a byte of the outside file among the keys.
#![no_main]
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use node_cert_agent::trust::sources::read_secret_dir;

/// What the outside file holds: a CA, so it would be worth installing.
const OUTSIDE: &[u8] = include_bytes!("../../agent/tests/data/corpus/certs/issuer-ca.pem");
const PAYLOAD: &str = "..2026_11_22_04_45_18.123456789";

static RUN: AtomicU64 = AtomicU64::new(0);

/// A name from the input: a small alphabet with dots, a newline, a
/// right-to-left mark and a Cyrillic letter; never empty, `.` or `..`.
fn name(bytes: &[u8]) -> String {
    const ALPHABET: [&str; 8] = ["a", "c", ".", "crt", "\n", "\u{202e}", "\u{430}", "_"];
    let mut s: String = bytes.iter().map(|b| ALPHABET[usize::from(*b) % 8]).collect();
    if s.is_empty() || s == "." || s == ".." {
        s.push('k');
    }
    s
}

/// Takes a length-prefixed chunk of at most `max` bytes.
fn take<'a>(data: &mut &'a [u8], max: usize) -> &'a [u8] {
    let Some((&len, rest)) = data.split_first() else {
        return &[];
    };
    let n = usize::from(len).min(max).min(rest.len());
    let (chunk, rest) = rest.split_at(n);
    *data = rest;
    chunk
}

fn build(base: &Path, mut data: &[u8]) -> PathBuf {
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.pem"), OUTSIDE).unwrap();
    let dir = base.join("secret");
    let payload = dir.join(PAYLOAD);
    std::fs::create_dir_all(&payload).unwrap();
    let _ = symlink(PAYLOAD, dir.join("..data"));
    let mut last: Option<PathBuf> = None;
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        let entry = payload.join(name(take(&mut data, 8)));
        let _ = match op % 7 {
            0 => std::fs::write(&entry, take(&mut data, 200)),
            1 => symlink(outside.join("secret.pem"), &entry),
            2 => std::fs::hard_link(outside.join("secret.pem"), &entry),
            3 => std::fs::create_dir(&entry),
            4 => {
                let target: Vec<u8> = take(&mut data, 40).iter().copied().filter(|b| *b != 0).collect();
                let _ = std::fs::remove_file(dir.join("..data"));
                symlink(std::ffi::OsStr::new(std::str::from_utf8(&target).unwrap_or("..")), dir.join("..data"))
            }
            5 => symlink(&outside, &entry),
            _ => {
                let mode = u32::from(take(&mut data, 1).first().copied().unwrap_or(0)) | 0o400;
                // Not through a link: the outside file stays as it is.
                match &last {
                    Some(p) if !p.is_symlink() => {
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                    }
                    _ => Ok(()),
                }
            }
        };
        last = Some(entry);
    }
    dir
}

fuzz_target!(|data: &[u8]| {
    let base = std::env::temp_dir().join(format!(
        "nca-fuzz-secret-dir-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let dir = build(&base, data);
    if let Ok(keys) = read_secret_dir(&dir) {
        for k in &keys {
            if let Ok(bytes) = &k.content {
                assert!(bytes.as_slice() != OUTSIDE, "read the outside file as key {:?}", k.key);
            }
            if let Err(f) = &k.content {
                let _ = f.to_string();
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
});
