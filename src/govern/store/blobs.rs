//! Content addressing: the bytes of every file a policy read, stored once under
//! `blobs/<sha256>`, and the content hash of a whole policy ([`content_hash`]) computed from
//! the same `(path, sha256)` pairs a manifest records.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::fs::{io_err, normalise, write_atomic};
use super::{FileEntry, PolicyStore, StoreError};

/// The content hash of a policy: config at `config_path` plus `files` (e.g.
/// [`ActivePolicy::files`]), the same value [`PolicyStore::record`] would give it.
///
/// # Errors
/// A file cannot be read, or the working directory is needed and unknown.
///
/// [`ActivePolicy::files`]: crate::policy::active::ActivePolicy::files
pub fn content_hash(config_path: &Path, files: &[PathBuf]) -> io::Result<String> {
    let snapshot = PolicyFiles::read(config_path, files).map_err(|e| match e {
        StoreError::Io { source, path, .. } => {
            io::Error::new(source.kind(), format!("{}: {source}", path.display()))
        }
        other => io::Error::other(other.to_string()),
    })?;
    Ok(snapshot.hash())
}

/// The config and every file a policy read, as read now: the input to a version.
pub(super) struct PolicyFiles {
    /// Absolute, normalised config path.
    pub(super) config: PathBuf,
    /// Every file including the config, deduplicated and sorted by path, with its bytes.
    pub(super) files: Vec<(FileEntry, Vec<u8>)>,
}

impl PolicyFiles {
    pub(super) fn read(config_path: &Path, files: &[PathBuf]) -> Result<Self, StoreError> {
        let norm = |p: &Path| normalise(p).map_err(io_err("resolve", p));
        let config = norm(config_path)?;
        let mut paths = BTreeSet::new();
        paths.insert(config.clone());
        for f in files {
            paths.insert(norm(f)?);
        }
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            let sha256 = sha256_hex(&bytes);
            out.push((FileEntry { path, sha256 }, bytes));
        }
        Ok(Self { config, files: out })
    }

    pub(super) fn hash(&self) -> String {
        hash_entries(&self.config, self.files.iter().map(|(e, _)| e))
    }
}

/// `sha256("config\0" path "\0\n" then, sorted by path, path "\0" sha256 "\n")`. Paths hold
/// no NUL and hashes are fixed-length, so the encoding is unambiguous.
pub(super) fn hash_entries<'a>(
    config: &Path,
    entries: impl IntoIterator<Item = &'a FileEntry>,
) -> String {
    let mut sorted: Vec<&FileEntry> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    h.update(b"config\0");
    h.update(config.as_os_str().as_encoded_bytes());
    h.update(b"\0\n");
    for e in sorted {
        h.update(e.path.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(e.sha256.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(super) fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl PolicyStore {
    pub(super) fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blobs.join(sha256);
        // Content addressing: a present, intact blob is already right. A damaged one is
        // replaced rather than kept.
        if let Ok(existing) = fs::read(&path)
            && sha256_hex(&existing) == sha256
        {
            // Reused: touched, so pruning ([`super::prune`]) leaves it alone while the
            // manifest that is about to name it is written.
            if let Ok(f) = fs::File::options().append(true).open(&path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Ok(());
        }
        write_atomic(&self.blobs, sha256, bytes, true).map(|_| ())
    }

    pub(super) fn read_blob(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blobs.join(sha256);
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(StoreError::CorruptBlob { path, actual });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::fixture::Fixture;
    use super::super::fs::is_normal_absolute;
    use super::super::rollback::tree_matches;
    use super::super::{ACTION_LOAD, ACTION_RELOAD, StoreError};
    use super::content_hash;
    use crate::config::Config;
    use crate::policy::active::ActivePolicy;

    #[test]
    fn identical_content_is_the_same_version() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        let v1_again = fx.record(&store, ACTION_RELOAD);
        assert_eq!(v1.number, 1);
        assert_eq!(v1_again, v1);
        assert_eq!(store.history().unwrap().versions.len(), 1);
        // The pure hash agrees with the store, whatever order the files come in.
        let cfg = Config::load(&fx.config_path()).unwrap();
        let mut files = ActivePolicy::build(&cfg.policy_sections())
            .unwrap()
            .files
            .clone();
        files.reverse();
        assert_eq!(content_hash(&fx.config_path(), &files).unwrap(), v1.hash);
        assert_eq!(v1.files.len(), 3);
        assert!(v1.files.iter().all(|f| is_normal_absolute(&f.path)));
    }

    #[test]
    fn corrupt_blob_is_reported_and_a_tampered_tree_is_rebuilt() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        let config_copy = store.materialise(1).unwrap();
        // Tampering with the materialised tree is undone by the next materialise.
        fs::write(&config_copy, "garbage").unwrap();
        let tree = store.dir().join("versions/1.tree");
        fs::write(tree.join("stray.zone"), "x").unwrap();
        assert_eq!(store.materialise(1).unwrap(), config_copy);
        assert!(tree_matches(&tree, &v1));

        let blob = store.dir().join("blobs").join(&v1.files[0].sha256);
        fs::write(&blob, "not the content").unwrap();
        fs::remove_dir_all(&tree).unwrap();
        assert!(matches!(
            store.materialise(1),
            Err(StoreError::CorruptBlob { .. })
        ));
        // Recording the same content again repairs the blob.
        fs::write(&blob, "still wrong").unwrap();
        let info = fx.record(&store, ACTION_RELOAD);
        assert_eq!(info.number, 1);
        store.materialise(1).unwrap();
    }

    #[test]
    fn an_unreadable_file_is_named_and_nothing_is_recorded() {
        let fx = Fixture::new();
        let store = fx.store();
        let missing = fx.live.path().join("etc/lists/gone.txt");
        let err = store
            .record(
                &fx.config_path(),
                std::slice::from_ref(&missing),
                ACTION_LOAD,
                None,
                None,
            )
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { op: "read", path, .. } if *path == missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("gone.txt"), "{err}");
        assert!(store.latest().unwrap().is_none());
        let err = content_hash(&fx.config_path(), &[missing]).unwrap_err();
        assert!(err.to_string().contains("gone.txt"), "{err}");
    }
}
