//! Crash-safe file primitives for the policy store: temporary names, `fsync`, atomic placement
//! (rename to replace, hard link to refuse a clobber), directory sync, and the lexical path
//! helpers that map an absolute original path into a materialised tree.
//!
//! Nothing here knows about versions or blobs; [`super::blobs`], [`super::manifest`] and
//! [`super::rollback`] build on these.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

/// Prefix of every temporary file or directory in the store; such entries are never read.
pub(super) const TEMP_PREFIX: &str = ".tmp-";

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Absolute path with `.` and `..` resolved lexically: the way paths resolve inside a tree that
/// holds no symlinks, and a stable key for the same file reached two ways.
pub(super) fn normalise(path: &Path) -> io::Result<PathBuf> {
    Ok(lexical(&std::path::absolute(path)?))
}

/// `path` with `.` and `..` resolved lexically, without touching the disk.
#[must_use]
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// True for an absolute path with no `.` or `..`: safe to mirror under a tree.
pub(super) fn is_normal_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| !matches!(c, Component::CurDir | Component::ParentDir))
}

/// Where an absolute original path lives under `tree`.
pub(super) fn in_tree(tree: &Path, original: &Path) -> PathBuf {
    let mut p = tree.to_path_buf();
    for c in original.components() {
        if let Component::Normal(s) = c {
            p.push(s);
        }
    }
    p
}

/// Distinguishes temporary names made by one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) fn temp_name(stem: &str) -> String {
    format!(
        "{TEMP_PREFIX}{stem}-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Make a rename or link in `dir` durable. Failure is ignored where directories cannot be
/// opened for syncing; the data itself was already synced.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write `bytes` to `dir/name` so that readers see either nothing or all of it. With
/// `replace == false` an existing file wins and `Ok(false)` is returned.
pub(super) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    replace: bool,
) -> Result<bool, StoreError> {
    let tmp = dir.join(temp_name(name));
    let dest = dir.join(name);
    let write = || -> io::Result<()> {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    let placed = if replace {
        fs::rename(&tmp, &dest).map(|()| true)
    } else {
        // A hard link fails if `dest` exists, unlike rename: no writer clobbers another.
        let linked = match fs::hard_link(&tmp, &dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(&tmp);
        linked
    };
    let placed = placed.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("write", &dest)(e)
    })?;
    sync_dir(dir);
    Ok(placed)
}
