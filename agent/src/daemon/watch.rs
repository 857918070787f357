//! inotify for the CA inputs: which directories to watch for each source,
//! and which paths in their events concern it.

use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use tracing::warn;

use crate::trust::sources::SourceSpec;

/// What to watch for one source: the directory to add, and which paths in
/// its events concern the source.
pub struct WatchSpec {
    pub dir: PathBuf,
    pub relevant: Box<dyn Fn(&Path) -> bool + Send>,
}

pub fn watch_specs(sources: &[SourceSpec]) -> Vec<WatchSpec> {
    let mut specs = Vec::new();
    for source in sources {
        match source {
            SourceSpec::SecretDir(dir) => {
                // The dir itself sees the `..data` swap; its parent sees the
                // dir appear or be replaced.
                let d = dir.clone();
                specs.push(WatchSpec {
                    dir: dir.clone(),
                    relevant: Box::new(move |p| p.starts_with(&d)),
                });
                if let Some(parent) = dir.parent() {
                    let d = dir.clone();
                    specs.push(WatchSpec {
                        dir: parent.to_path_buf(),
                        relevant: Box::new(move |p| p == d),
                    });
                }
            }
            SourceSpec::File(file) => {
                if let Some(parent) = file.parent() {
                    let f = file.clone();
                    specs.push(WatchSpec {
                        dir: parent.to_path_buf(),
                        relevant: Box::new(move |p| p == f),
                    });
                }
            }
        }
    }
    specs
}

/// What to watch of the node's trust store, so drift is repaired within
/// seconds with no polling: the agent's own anchors in `anchors_dir` (one
/// deleted by configuration management) and the bundle file (rebuilt
/// without the agent's CAs by a distro upgrade or a `--fresh` run), both
/// as this process sees them. The agent's own writes wake one more pass,
/// which finds nothing to do.
pub fn store_specs(
    anchors_dir: &Path,
    bundle: &Path,
    anchor_prefix: &'static str,
) -> Vec<WatchSpec> {
    let mut specs = Vec::new();
    let dir = anchors_dir.to_path_buf();
    specs.push(WatchSpec {
        dir: anchors_dir.to_path_buf(),
        relevant: Box::new(move |p| {
            p.parent() == Some(dir.as_path())
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(anchor_prefix))
        }),
    });
    if let Some(parent) = bundle.parent() {
        let b = bundle.to_path_buf();
        specs.push(WatchSpec {
            dir: parent.to_path_buf(),
            relevant: Box::new(move |p| p == b),
        });
    }
    specs
}

pub fn ensure_watches(
    watcher: &mut notify::RecommendedWatcher,
    dirs: &[PathBuf],
    watched: &mut std::collections::BTreeSet<PathBuf>,
) {
    for dir in dirs {
        if watched.contains(dir) && dir.is_dir() {
            continue;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir.clone());
            }
            Err(e) => {
                watched.remove(dir);
                warn!(path = %dir.display(), "cannot watch {}: {e}; changes there are seen once it exists and a parent changes", dir.display());
            }
        }
    }
}
