//! A Secret volume written the way kubelet's AtomicWriter writes it:
//!
//! ```text
//! <dir>/..2026_11_22_04_45_18.123456789/ca1.crt   payload dir (0755), files 0644
//! <dir>/..data -> ..2026_11_22_04_45_18.123456789
//! <dir>/ca1.crt -> ..data/ca1.crt                 user-visible link per key
//! ```
//!
//! Each [`SecretVolume::publish`] writes a new payload dir, points
//! `..data_tmp` at it, renames `..data_tmp` over `..data` (the single atomic
//! step), adds links for new keys, removes links for keys that are gone, and
//! deletes the old payload dir. Unlike kubelet, it always writes, even when
//! the data is unchanged (tests want the event).
//!
//! [`SecretVolume::publish_with`] calls a hook after each [`Stage`], so a test
//! can interleave another process (e.g. the agent reading the volume) with any
//! step of an update.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A Secret's data from `(key, value)` pairs, for [`SecretVolume::publish`].
pub fn secret_data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

/// The link to the current payload dir.
pub const DATA_LINK: &str = "..data";
/// The link created next to `..data` and renamed over it.
pub const DATA_TMP_LINK: &str = "..data_tmp";

/// The steps of one update, in order; see [`SecretVolume::publish_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The new payload dir is complete; `..data` still points at the old one.
    PayloadWritten,
    /// `..data_tmp` points at the new payload dir; `..data` is unchanged.
    DataTmpLinked,
    /// `..data_tmp` was renamed over `..data`: the new set is live.
    Swapped,
    /// Links for new keys exist and links for removed keys are gone.
    LinksUpdated,
    /// The old payload dir is deleted (also reported on a first publish).
    OldPayloadRemoved,
}

/// A directory laid out like a kubelet-mounted Secret volume.
#[derive(Debug, Clone)]
pub struct SecretVolume {
    dir: PathBuf,
}

impl SecretVolume {
    /// A volume at `dir` (created if missing). Nothing is published yet.
    pub fn new(dir: impl Into<PathBuf>) -> SecretVolume {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create secret volume dir {}: {e}", dir.display()));
        SecretVolume { dir }
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The payload dir name `..data` points at, if anything was published.
    pub fn current_payload(&self) -> Option<OsString> {
        std::fs::read_link(self.dir.join(DATA_LINK))
            .ok()
            .map(PathBuf::into_os_string)
    }

    /// Publishes `data` (key → decoded bytes) as the volume's new content and
    /// returns the instant just after `..data` was swapped.
    pub fn publish(&self, data: &BTreeMap<String, Vec<u8>>) -> Instant {
        self.publish_with(data, |_| {})
    }

    /// Like [`SecretVolume::publish`], calling `hook` after each [`Stage`]. The
    /// hook may block, e.g. until another process has opened the old files,
    /// to publish in the middle of someone else's read.
    pub fn publish_with(
        &self,
        data: &BTreeMap<String, Vec<u8>>,
        mut hook: impl FnMut(Stage),
    ) -> Instant {
        for key in data.keys() {
            assert!(
                !key.is_empty() && !key.contains('/') && !key.starts_with("..") && key != ".",
                "secret volume {}: invalid key {key:?} (must be a plain file name, not starting with \"..\")",
                self.dir.display()
            );
        }
        let old = self.current_payload();

        // 1. A new payload dir with the files.
        let (payload_name, payload) = self.new_payload_dir();
        for (key, bytes) in data {
            let path = payload.join(key);
            let mut f = std::fs::File::create(&path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            f.write_all(bytes)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            set_mode(&path, 0o644);
        }
        hook(Stage::PayloadWritten);

        // 2. ..data_tmp -> new payload dir (relative). A leftover from an
        //    interrupted publish is replaced.
        let tmp = self.dir.join(DATA_TMP_LINK);
        let _ = std::fs::remove_file(&tmp);
        symlink(&payload_name, &tmp).unwrap_or_else(|e| {
            panic!(
                "cannot symlink {} -> {}: {e}",
                tmp.display(),
                payload_name.to_string_lossy()
            )
        });
        hook(Stage::DataTmpLinked);

        // 3. The atomic step.
        let data_link = self.dir.join(DATA_LINK);
        std::fs::rename(&tmp, &data_link).unwrap_or_else(|e| {
            panic!(
                "cannot rename {} to {}: {e}",
                tmp.display(),
                data_link.display()
            )
        });
        let swapped = Instant::now();
        hook(Stage::Swapped);

        // 4. User-visible links: add the new keys, remove the ones gone.
        for key in data.keys() {
            let link = self.dir.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                let target = Path::new(DATA_LINK).join(key);
                symlink(&target, &link).unwrap_or_else(|e| {
                    panic!(
                        "cannot symlink {} -> {}: {e}",
                        link.display(),
                        target.display()
                    )
                });
            }
        }
        if let Some(old) = &old {
            for gone in list_names(&self.dir.join(old))
                .into_iter()
                .filter(|name| !name.to_str().is_some_and(|n| data.contains_key(n)))
            {
                let link = self.dir.join(&gone);
                std::fs::remove_file(&link)
                    .unwrap_or_else(|e| panic!("cannot remove {}: {e}", link.display()));
            }
        }
        hook(Stage::LinksUpdated);

        // 5. The old payload dir.
        if let Some(old) = old.filter(|o| *o != payload_name) {
            let old = self.dir.join(old);
            std::fs::remove_dir_all(&old)
                .unwrap_or_else(|e| panic!("cannot remove old payload {}: {e}", old.display()));
        }
        hook(Stage::OldPayloadRemoved);
        swapped
    }

    /// Creates `..<UTC YYYY_MM_DD_HH_MM_SS.nnnnnnnnn>` (mode 0755), unique:
    /// an existing name is retried with the next nanosecond.
    fn new_payload_dir(&self) -> (OsString, PathBuf) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let (secs, mut nanos) = (now.as_secs(), now.subsec_nanos());
        loop {
            let name = payload_dir_name(secs, nanos);
            let path = self.dir.join(&name);
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    set_mode(&path, 0o755);
                    return (name.into(), path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && nanos < 999_999_999 => {
                    nanos += 1;
                }
                Err(e) => panic!("cannot create payload dir {}: {e}", path.display()),
            }
        }
    }
}

/// `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` for a Unix time, in UTC.
pub fn payload_dir_name(unix_secs: u64, nanos: u32) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "..{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}.{nanos:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Howard Hinnant's algorithm, for non-negative day counts.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", path.display()));
}

fn list_names(dir: &Path) -> Vec<OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .file_name()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = list_names(dir)
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn link(p: &Path) -> String {
        std::fs::read_link(p)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn first_publish_has_kubelet_layout() {
        let t = tempfile::tempdir().unwrap();
        let vol = SecretVolume::new(t.path().join("vol"));
        vol.publish(&data(&[("ca1.crt", "one"), ("ca2.crt", "two")]));
        let dir = vol.dir();
        let payload = link(&dir.join(DATA_LINK));
        assert!(
            payload.starts_with("..") && !payload.contains('/'),
            "{payload}"
        );
        assert_eq!(
            names(dir),
            vec![
                payload.clone(),
                "..data".to_owned(),
                "ca1.crt".to_owned(),
                "ca2.crt".to_owned()
            ]
        );
        assert_eq!(link(&dir.join("ca1.crt")), "..data/ca1.crt");
        assert_eq!(std::fs::read_to_string(dir.join("ca2.crt")).unwrap(), "two");
        assert_eq!(names(&dir.join(&payload)), vec!["ca1.crt", "ca2.crt"]);
        assert_eq!(mode(&dir.join(&payload).join("ca1.crt")), 0o644);
        assert_eq!(mode(&dir.join(&payload)), 0o755);
    }

    #[test]
    fn update_swaps_payload_and_links() {
        let t = tempfile::tempdir().unwrap();
        let vol = SecretVolume::new(t.path());
        vol.publish(&data(&[("ca1.crt", "one"), ("ca2.crt", "two")]));
        let first = vol.current_payload().unwrap();
        vol.publish(&data(&[("ca2.crt", "TWO"), ("ca3.crt", "three")]));
        let second = vol.current_payload().unwrap();
        assert_ne!(first, second);
        let second = second.to_string_lossy().into_owned();
        assert_eq!(
            names(t.path()),
            vec![
                second,
                "..data".to_owned(),
                "ca2.crt".to_owned(),
                "ca3.crt".to_owned()
            ]
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("ca2.crt")).unwrap(),
            "TWO"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("ca3.crt")).unwrap(),
            "three"
        );
        assert_eq!(link(&t.path().join("ca3.crt")), "..data/ca3.crt");
    }

    #[test]
    fn republishing_the_same_data_still_makes_a_new_payload() {
        let t = tempfile::tempdir().unwrap();
        let vol = SecretVolume::new(t.path());
        let d = data(&[("ca1.crt", "one")]);
        vol.publish(&d);
        let first = vol.current_payload().unwrap();
        vol.publish(&d);
        assert_ne!(vol.current_payload().unwrap(), first);
        assert_eq!(names(t.path()).len(), 3);
    }

    #[test]
    fn hook_sees_each_stage_in_order_with_consistent_data() {
        let t = tempfile::tempdir().unwrap();
        let vol = SecretVolume::new(t.path());
        vol.publish(&data(&[("ca1.crt", "old")]));
        let read = || std::fs::read_to_string(t.path().join("ca1.crt")).unwrap();
        let mut seen = Vec::new();
        let swapped = vol.publish_with(&data(&[("ca1.crt", "new")]), |stage| {
            let expect = match stage {
                Stage::PayloadWritten | Stage::DataTmpLinked => "old",
                _ => "new",
            };
            assert_eq!(read(), expect, "at {stage:?}");
            if stage == Stage::DataTmpLinked {
                assert!(t.path().join(DATA_TMP_LINK).exists());
            }
            seen.push(stage);
        });
        assert!(swapped <= Instant::now());
        assert_eq!(
            seen,
            vec![
                Stage::PayloadWritten,
                Stage::DataTmpLinked,
                Stage::Swapped,
                Stage::LinksUpdated,
                Stage::OldPayloadRemoved
            ]
        );
        assert!(!t.path().join(DATA_TMP_LINK).exists());
    }

    #[test]
    fn removing_every_key_leaves_only_the_payload_and_data_link() {
        let t = tempfile::tempdir().unwrap();
        let vol = SecretVolume::new(t.path());
        vol.publish(&data(&[("ca1.crt", "one")]));
        vol.publish(&BTreeMap::new());
        let payload = vol
            .current_payload()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(names(t.path()), vec![payload.clone(), "..data".to_owned()]);
        assert!(names(&t.path().join(payload)).is_empty());
    }

    #[test]
    #[should_panic(expected = "invalid key \"..data\"")]
    fn rejects_keys_that_clash_with_the_layout() {
        let t = tempfile::tempdir().unwrap();
        SecretVolume::new(t.path()).publish(&data(&[("..data", "x")]));
    }

    #[test]
    fn payload_dir_names_are_utc_timestamps() {
        assert_eq!(payload_dir_name(0, 0), "..1970_01_01_00_00_00.000000000");
        // 2026-11-22T04:45:18Z
        assert_eq!(
            payload_dir_name(1_795_322_718, 123_456_789),
            "..2026_11_22_04_45_18.123456789"
        );
        // Leap day.
        assert_eq!(
            payload_dir_name(951_782_400, 5),
            "..2000_02_29_00_00_00.000000005"
        );
    }
}
