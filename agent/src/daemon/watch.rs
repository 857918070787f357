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
