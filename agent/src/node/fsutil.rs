//! Atomic, durable file operations on already-resolved paths.
//!
//! Every change the agent makes to a node must either happen completely or
//! not at all, and must survive a power loss once reported done: a half-written
//! CA bundle or kubelet certificate can take a node off the cluster. So writes
//! go through a temp file in the same directory that is fsynced and renamed
//! over the target, and every directory entry change is followed by an fsync
//! of the directory.
//!
//! Boundary: callers pass paths that are already mapped through
//! `hostroot::HostRoot`; this module does no node-path translation and makes no
//! decisions about which files the agent owns.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;

/// Name prefix of temp files; anything starting with it in a directory the
/// agent writes to is a leftover from a crash and may be swept.
pub const TEMP_PREFIX: &str = ".nca-tmp-";

/// Attempts at finding an unused temp name; a collision only happens with
/// leftovers from a previous process that had the same pid.
const TEMP_NAME_ATTEMPTS: usize = 16;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot write {path:?}: it has no file name")]
    NoFileName { path: PathBuf },
    #[error("cannot write {path:?}: creating temp file {temp:?} failed")]
    CreateTemp {
        path: PathBuf,
        temp: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path:?}: writing temp file {temp:?} failed")]
    Write {
        path: PathBuf,
        temp: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path:?}: setting mode {mode:#o} on temp file {temp:?} failed")]
    Chmod {
        path: PathBuf,
        temp: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path:?}: fsync of temp file {temp:?} failed")]
    Fsync {
        path: PathBuf,
        temp: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot replace {path:?}: renaming {temp:?} over it failed")]
    Rename {
        path: PathBuf,
        temp: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot make the change to {path:?} durable: fsync of directory {dir:?} failed")]
    FsyncDir {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot point symlink {path:?} at {target:?}: creating temp symlink {temp:?} failed")]
    CreateTempSymlink {
        path: PathBuf,
        target: PathBuf,
        temp: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path:?}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create directory {path:?}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set mode {mode:#o} on new directory {path:?}")]
    ChmodDir {
        path: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot use {path:?} as a directory: something else exists there")]
    NotADirectory { path: PathBuf },
    #[error("cannot inspect {path:?}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list directory {path:?}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {path:?} for reading")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "refusing to read {path:?}: it is not a regular file (a directory, FIFO, socket or device)"
    )]
    NotARegularFile { path: PathBuf },
    #[error("refusing to read {path:?}: it is {size} bytes or more, the limit is {limit} bytes")]
    ReadTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
}

/// Directory holding `path`'s entry; "" (a bare relative name) means cwd.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Same directory as `path`, so the final rename never crosses filesystems.
fn temp_path_for(path: &Path) -> Result<PathBuf, FsError> {
    let name = path.file_name().ok_or_else(|| FsError::NoFileName {
        path: path.to_path_buf(),
    })?;
    let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp_name = std::ffi::OsString::from(TEMP_PREFIX);
    temp_name.push(name);
    temp_name.push(format!("-{}-{}", std::process::id(), counter));
    Ok(parent_dir(path).join(temp_name))
}

fn fsync_dir(path: &Path, dir: &Path) -> Result<(), FsError> {
    let err = |source| FsError::FsyncDir {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    };
    File::open(dir).map_err(err)?.sync_all().map_err(err)
}

/// Writes `contents` to `path` atomically and durably with exactly `mode`.
///
/// Via a temp file in the same directory (`TEMP_PREFIX` + file name + `-pid-counter`),
/// created `O_CREAT|O_EXCL|O_CLOEXEC`, fchmod'ed (so the umask does not
/// matter), fsynced, renamed over `path`; then the directory is fsynced. On
/// failure before the rename the temp file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    let (temp, mut file) = create_temp_file(path)?;
    if let Err(e) = fill_temp_file(path, &temp, &mut file, contents, mode) {
        drop(file);
        // Best effort: the original error is what the operator needs; a
        // leftover temp file is swept on the next start.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    drop(file);
    if let Err(source) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(FsError::Rename {
            path: path.to_path_buf(),
            temp,
            source,
        });
    }
    fsync_dir(path, &parent_dir(path))
}

fn create_temp_file(path: &Path) -> Result<(PathBuf, File), FsError> {
    let mut attempt = 0;
    loop {
        let temp = temp_path_for(path)?;
        // 0o600 until fchmod: the content must never be visible with a wider
        // mode than requested, even for an instant.
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlag::O_CLOEXEC.bits())
            .open(&temp);
        match opened {
            Ok(file) => return Ok((temp, file)),
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMP_NAME_ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(source) => {
                return Err(FsError::CreateTemp {
                    path: path.to_path_buf(),
                    temp,
                    source,
                })
            }
        }
    }
}

fn fill_temp_file(
    path: &Path,
    temp: &Path,
    file: &mut File,
    contents: &[u8],
    mode: u32,
) -> Result<(), FsError> {
    file.write_all(contents).map_err(|source| FsError::Write {
        path: path.to_path_buf(),
        temp: temp.to_path_buf(),
        source,
    })?;
    // File::set_permissions is fchmod on the open descriptor.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|source| FsError::Chmod {
            path: path.to_path_buf(),
            temp: temp.to_path_buf(),
            mode,
            source,
        })?;
    file.sync_all().map_err(|source| FsError::Fsync {
        path: path.to_path_buf(),
        temp: temp.to_path_buf(),
        source,
    })
}

/// Atomically points `link` at `target`: a temp symlink in the same directory
/// is renamed over `link` (replacing a file or symlink, never a directory),
/// then the directory is fsynced.
pub fn replace_symlink_atomic(link: &Path, target: &Path) -> Result<(), FsError> {
    let mut attempt = 0;
    let temp = loop {
        let temp = temp_path_for(link)?;
        match symlink(target, &temp) {
            Ok(()) => break temp,
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMP_NAME_ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(source) => {
                return Err(FsError::CreateTempSymlink {
                    path: link.to_path_buf(),
                    target: target.to_path_buf(),
                    temp,
                    source,
                })
            }
        }
    };
    if let Err(source) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        return Err(FsError::Rename {
            path: link.to_path_buf(),
            temp,
            source,
        });
    }
    fsync_dir(link, &parent_dir(link))
}

/// Removes a file or symlink (the link itself, never its target) and fsyncs
/// its directory. `Ok(false)` if it did not exist.
pub fn remove_durable(path: &Path) -> Result<bool, FsError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(FsError::Remove {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    fsync_dir(path, &parent_dir(path))?;
    Ok(true)
}

/// Creates `path` and any missing parents, each with exactly `mode` (not
/// filtered by the umask). `Ok` if it already exists as a directory (a
/// symlink to one counts); existing directories keep their mode.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<(), FsError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(FsError::NotADirectory {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FsError::Stat {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    // Parents first, so every directory we create gets `mode` and a fsynced
    // entry in its parent.
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            ensure_dir(parent, mode)?;
        }
    }
    match DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        // Lost a race with another creator: fine if it made a directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return match fs::metadata(path) {
                Ok(meta) if meta.is_dir() => Ok(()),
                _ => Err(FsError::NotADirectory {
                    path: path.to_path_buf(),
                }),
            };
        }
        Err(source) => {
            return Err(FsError::CreateDir {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    // mkdir's mode is filtered by the umask; set it explicitly.
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|source| {
        FsError::ChmodDir {
            path: path.to_path_buf(),
            mode,
            source,
        }
    })?;
    fsync_dir(path, &parent_dir(path))
}

/// Removes leftover temp files and symlinks (names starting with
/// [`TEMP_PREFIX`]) in `dir`, returning how many. A missing `dir` is `Ok(0)`.
///
/// Only for startup or while no write to `dir` is in flight: it cannot tell a
/// crash leftover from a temp file another thread is writing right now.
pub fn sweep_temp_files(dir: &Path) -> Result<usize, FsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(FsError::ReadDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|source| FsError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        // A directory with our prefix was not made by us; leave it alone.
        let file_type = entry.file_type().map_err(|source| FsError::Stat {
            path: path.clone(),
            source,
        })?;
        if file_type.is_dir() {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(FsError::Remove { path, source }),
        }
    }
    if removed > 0 {
        fsync_dir(dir, dir)?;
    }
    Ok(removed)
}

/// Reads `path` but refuses one larger than `limit` bytes without reading it
/// all. The size is checked up front and the read is capped, so files that
/// report no size (procfs) or grow while being read are bounded too.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, FsError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer. Only regular
    // files are read; a FIFO, socket or device is refused before any read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|source| FsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| FsError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(FsError::NotARegularFile {
            path: path.to_path_buf(),
        });
    }
    let size = meta.len();
    if size > limit {
        return Err(FsError::ReadTooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    let mut buf = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| FsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let read = u64::try_from(buf.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Err(FsError::ReadTooLarge {
            path: path.to_path_buf(),
            size: read,
            limit,
        });
    }
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_writes_content_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.pem");
        let b = dir.path().join("b.key");
        write_atomic(&a, b"hello", 0o644).unwrap();
        write_atomic(&b, b"secret", 0o600).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"hello");
        assert_eq!(fs::read(&b).unwrap(), b"secret");
        assert_eq!(mode_of(&a), 0o644);
        assert_eq!(mode_of(&b), 0o600);
    }

    /// The umask is process-wide and other tests run concurrently, so the
    /// umask part runs in a child process: this test re-runs the test binary
    /// with only `umask_child` selected and an env var that arms it.
    #[test]
    fn write_atomic_mode_ignores_umask() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "node::fsutil::tests::umask_child",
                "--test-threads=1",
            ])
            .env("NCA_FSUTIL_UMASK_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "child did not run: {stdout}");
    }

    #[test]
    fn umask_child() {
        use nix::sys::stat::{umask, Mode};
        if std::env::var_os("NCA_FSUTIL_UMASK_CHILD").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        umask(Mode::from_bits_truncate(0o077));
        write_atomic(&p, b"x", 0o644).unwrap();
        assert_eq!(mode_of(&p), 0o644);
        let d = dir.path().join("d1/d2");
        ensure_dir(&d, 0o755).unwrap();
        assert_eq!(mode_of(&d), 0o755);
        assert_eq!(mode_of(&dir.path().join("d1")), 0o755);
        umask(Mode::empty());
        write_atomic(&p, b"x", 0o600).unwrap();
        assert_eq!(mode_of(&p), 0o600);
    }

    #[test]
    fn write_atomic_overwrites_existing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"old old old").unwrap();
        write_atomic(&p, b"new", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn write_atomic_leaves_no_temp_after_success() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"1", 0o644).unwrap();
        write_atomic(&p, b"2", 0o644).unwrap();
        assert_eq!(names_in(dir.path()), vec!["f".to_string()]);
    }

    #[test]
    fn write_atomic_missing_parent_fails_without_side_effects() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing/f");
        let err = write_atomic(&p, b"x", 0o644).unwrap_err();
        assert!(matches!(err, FsError::CreateTemp { .. }), "{err:?}");
        assert!(err.to_string().contains("missing/f"), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn write_atomic_parent_is_file_fails_without_side_effects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"orig").unwrap();
        let err = write_atomic(&file.join("f"), b"x", 0o644).unwrap_err();
        assert!(matches!(err, FsError::CreateTemp { .. }), "{err:?}");
        assert_eq!(fs::read(&file).unwrap(), b"orig");
        assert_eq!(names_in(dir.path()), vec!["file".to_string()]);
    }

    #[test]
    fn write_atomic_rename_failure_keeps_original_and_removes_temp() {
        // The target is a non-empty directory, so the temp file can be
        // created and written but the rename over it must fail.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"keep").unwrap();
        let err = write_atomic(&target, b"x", 0o644).unwrap_err();
        assert!(matches!(err, FsError::Rename { .. }), "{err:?}");
        assert_eq!(names_in(dir.path()), vec!["target".to_string()]);
        assert_eq!(fs::read(target.join("inside")).unwrap(), b"keep");
    }

    #[test]
    fn write_atomic_refuses_path_without_file_name() {
        let err = write_atomic(Path::new("/"), b"x", 0o644).unwrap_err();
        assert!(matches!(err, FsError::NoFileName { .. }), "{err:?}");
    }

    #[test]
    fn replace_symlink_atomic_creates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        replace_symlink_atomic(&link, Path::new("v1")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("v1"));
        replace_symlink_atomic(&link, Path::new("v2")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("v2"));
        assert_eq!(names_in(dir.path()), vec!["current".to_string()]);
    }

    #[test]
    fn replace_symlink_atomic_replaces_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("f");
        fs::write(&link, b"x").unwrap();
        replace_symlink_atomic(&link, Path::new("/target")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("/target"));
    }

    #[test]
    fn replace_symlink_atomic_refuses_directory_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("d");
        fs::create_dir(&link).unwrap();
        fs::write(link.join("inside"), b"x").unwrap();
        let err = replace_symlink_atomic(&link, Path::new("t")).unwrap_err();
        assert!(matches!(err, FsError::Rename { .. }), "{err:?}");
        assert_eq!(names_in(dir.path()), vec!["d".to_string()]);
    }

    #[test]
    fn remove_durable_absent_is_false() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!remove_durable(&dir.path().join("nope")).unwrap());
    }

    #[test]
    fn remove_durable_present_is_true() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"x").unwrap();
        assert!(remove_durable(&p).unwrap());
        assert!(!p.exists());
    }

    #[test]
    fn remove_durable_removes_symlink_not_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        fs::write(&target, b"x").unwrap();
        symlink(&target, &link).unwrap();
        assert!(remove_durable(&link).unwrap());
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"x");
    }

    #[test]
    fn remove_durable_refuses_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        let err = remove_durable(&d).unwrap_err();
        assert!(matches!(err, FsError::Remove { .. }), "{err:?}");
        assert!(d.is_dir());
    }

    #[test]
    fn ensure_dir_creates_parents_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b/c");
        ensure_dir(&d, 0o750).unwrap();
        assert!(d.is_dir());
        assert_eq!(mode_of(&d), 0o750);
        assert_eq!(mode_of(&dir.path().join("a")), 0o750);
    }

    #[test]
    fn ensure_dir_existing_dir_is_ok_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, Permissions::from_mode(0o700)).unwrap();
        ensure_dir(&d, 0o755).unwrap();
        assert_eq!(mode_of(&d), 0o700);
    }

    #[test]
    fn ensure_dir_refuses_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"x").unwrap();
        let err = ensure_dir(&f, 0o755).unwrap_err();
        assert!(matches!(err, FsError::NotADirectory { .. }), "{err:?}");
    }

    #[test]
    fn sweep_temp_files_removes_only_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}a.pem-1-0")), b"x").unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}b.pem-1-1")), b"x").unwrap();
        symlink("nowhere", dir.path().join(format!("{TEMP_PREFIX}link-1-2"))).unwrap();
        fs::create_dir(dir.path().join(format!("{TEMP_PREFIX}dir"))).unwrap();
        fs::write(dir.path().join("keep.pem"), b"x").unwrap();
        assert_eq!(sweep_temp_files(dir.path()).unwrap(), 3);
        assert_eq!(
            names_in(dir.path()),
            vec![format!("{TEMP_PREFIX}dir"), "keep.pem".to_string()]
        );
        assert_eq!(sweep_temp_files(dir.path()).unwrap(), 0);
    }

    #[test]
    fn sweep_temp_files_missing_dir_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(sweep_temp_files(&dir.path().join("nope")).unwrap(), 0);
    }

    #[test]
    fn read_limited_reads_within_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"12345").unwrap();
        assert_eq!(read_limited(&p, 5).unwrap(), b"12345");
    }

    #[test]
    fn read_limited_refuses_over_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"123456").unwrap();
        let err = read_limited(&p, 5).unwrap_err();
        match &err {
            FsError::ReadTooLarge { size, limit, .. } => {
                assert_eq!((*size, *limit), (6, 5));
            }
            other => panic!("expected ReadTooLarge, got {other:?}"),
        }
        assert!(err.to_string().contains("limit is 5 bytes"), "{err}");
    }

    #[test]
    fn read_limited_bounds_files_without_size() {
        // procfs reports size 0; the capped read must still enforce the limit.
        let err = read_limited(Path::new("/proc/self/maps"), 1).unwrap_err();
        assert!(matches!(err, FsError::ReadTooLarge { .. }), "{err:?}");
    }

    #[test]
    fn read_limited_missing_file_is_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_limited(&dir.path().join("nope"), 10).unwrap_err();
        assert!(matches!(err, FsError::Open { .. }), "{err:?}");
    }

    #[test]
    fn read_limited_refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read_limited(&fifo, 1024).unwrap_err();
        assert!(matches!(err, FsError::NotARegularFile { .. }), "{err:?}");
        assert!(matches!(
            read_limited(dir.path(), 1024).unwrap_err(),
            FsError::NotARegularFile { .. }
        ));
    }
}
