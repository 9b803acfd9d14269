//! The versioned policy store: every policy dnsward loads becomes a numbered, content-hashed
//! version kept on disk, so that a restart remembers the history and a rollback re-activates a
//! stored version exactly, even after the live files have changed.
//!
//! # On-disk layout
//! ```text
//! <state_dir>/
//!   blobs/<sha256>              the bytes of one file (config, list or zone), named by hash
//!   versions/<N>.json           manifest of version N (a serialised VersionInfo)
//!   versions/<N>.tree/...       version N materialised: each file at its ABSOLUTE path below
//!                               the tree (/etc/dnsward/dnsward.toml → <N>.tree/etc/dnsward/…)
//!   **/.tmp-*                   a write in progress (or interrupted by a crash): never read
//! ```
//!
//! # Versions
//! A version's hash is the SHA-256 of the config path, then every `(path, file sha256)` pair
//! sorted by path (see [`content_hash`]), so it does not depend on the order files were read in.
//! Paths are made absolute and normalised lexically (`.` and `..` removed without following
//! symlinks), which is exactly how paths resolve inside a materialised tree. Recording content
//! identical to the newest version returns that version instead of a new one; a rollback always
//! gets a new number recording who rolled back, why, and from/to which version.
//!
//! # Exact rollback
//! A version is materialised by copying its blobs into `versions/<N>.tree/`, mirroring the
//! original absolute paths, so relative paths in the config copy resolve to the snapshot copies.
//! [`PolicyStore::rollback`] then loads and builds that config and refuses (with
//! [`StoreError::OutsideSnapshot`]) if the rebuilt policy read any file outside the tree, which
//! is what an absolute path in the config would cause: a rollback never silently uses live data.
//! Load a snapshot with [`PolicyStore::load_snapshot`] rather than a bare config load: through
//! [`ConfigLoader::load_snapshot`] it also points a relative `events.path` (an output, not
//! policy) back at the live config directory instead of into the tree.
//!
//! # Crash safety
//! Every file is written to a `.tmp-*` name, flushed with `fsync`, then moved into place (blobs
//! by rename, manifests by hard link, which fails rather than overwrite a number another writer
//! took), and the directory is synced. Blobs are written before the manifest that names them.
//! A manifest that does not parse, whose number disagrees with its file name, whose hash does not
//! match its file list, or whose paths are not absolute and normal is reported as
//! [`StoreError::CorruptManifest`], never trusted; a blob whose bytes do not match its name is
//! [`StoreError::CorruptBlob`]. Leftover temporary files are ignored and listed by
//! [`PolicyStore::leftover_temp_files`].
//!
//! # Limits
//! - Nothing is pruned yet: manifests, blobs and materialised trees grow with every distinct
//!   version (blobs are shared, so a reload that changes one list stores one new blob).
//! - Files are read for the snapshot when [`PolicyStore::record`] is called, not when the policy
//!   was built; record right after building so the window for an edit in between is small.
//! - Only files listed in [`ActivePolicy::files`] are snapshotted. A config whose zones `dir`
//!   held no zone files snapshots no directory for it, so its rollback reports the missing dir.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config_error::ConfigProblems;
use crate::govern::control::{ConfigLoader, LoadedConfig};
use crate::policy::active::PolicyVersion;

/// Prefix of every temporary file or directory in the store; such entries are never read.
const TEMP_PREFIX: &str = ".tmp-";

/// Manifests written with the same number by concurrent writers are retried this many times
/// before giving up with [`StoreError::Busy`].
const MAX_NUMBER_RETRIES: u32 = 16;

/// `action` of a version recorded at startup.
pub const ACTION_LOAD: &str = "load";
/// `action` of a version recorded by a reload.
pub const ACTION_RELOAD: &str = "reload";
/// `action` of a version recorded by [`PolicyStore::rollback`].
pub const ACTION_ROLLBACK: &str = "rollback";

/// The `[store]` configuration: where policy versions are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// State directory holding `blobs/` and `versions/` (default `/var/lib/dnsward`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/dnsward")
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
        }
    }
}

impl StoreConfig {
    /// Check the section, pushing every problem found under the key path `at`.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        if self.state_dir.as_os_str().is_empty() {
            problems.push(format!("{at}.state_dir"), "must not be empty");
        } else if self.state_dir.is_relative() {
            // A service's working directory is an accident of how it was started; history must
            // not move with it.
            problems.push(
                format!("{at}.state_dir"),
                format!(
                    "{} is relative; use an absolute path such as /var/lib/dnsward",
                    self.state_dir.display()
                ),
            );
        }
    }
}

/// One file of a version: where it was read from and the SHA-256 (hex) of its bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute, normalised path the file was read from.
    pub path: PathBuf,
    /// SHA-256 of the bytes, lowercase hex; also the blob's name.
    pub sha256: String,
}

/// One recorded policy version (the manifest `versions/<N>.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Increasing version number, from 1.
    pub number: u64,
    /// Content hash over the config and every file (see [`content_hash`]).
    pub hash: String,
    /// When the version was recorded (RFC 3339, UTC).
    pub loaded_at: String,
    /// Who loaded it (for a rollback: the actor).
    pub author: Option<String>,
    /// Why (for a rollback: the reason).
    pub message: Option<String>,
    /// [`ACTION_LOAD`], [`ACTION_RELOAD`] or [`ACTION_ROLLBACK`].
    pub action: String,
    /// For a rollback: the version that was active before it.
    #[serde(default)]
    pub rolled_back_from: Option<u64>,
    /// For a rollback: the version whose content it re-activated.
    #[serde(default)]
    pub rolled_back_to: Option<u64>,
    /// Absolute path of the config file (also listed in `files`).
    pub config_path: PathBuf,
    /// The config and every file it pulled in, sorted by path.
    pub files: Vec<FileEntry>,
}

impl VersionInfo {
    /// The identity to stamp on an [`ActivePolicy`] built from this version.
    #[must_use]
    pub fn policy_version(&self) -> PolicyVersion {
        PolicyVersion {
            number: self.number,
            hash: self.hash.clone(),
        }
    }
}

/// A fault in the policy store. Each message names the file or version involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create directory`, …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A manifest is unreadable or inconsistent; it is not trusted.
    #[error("corrupt version manifest {}: {reason}", path.display())]
    CorruptManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob's bytes do not match its name.
    #[error("corrupt blob {}: its content hashes to {actual}", path.display())]
    CorruptBlob {
        /// The blob file.
        path: PathBuf,
        /// The hash of what is actually stored.
        actual: String,
    },
    /// No version has this number.
    #[error("no policy version {0}")]
    NoSuchVersion(u64),
    /// The store holds no version yet.
    #[error("the policy store is empty: no version has been recorded")]
    Empty,
    /// Rollback without a target, and no earlier version differs from the latest.
    #[error("nothing to roll back to: no version before {latest} has different content")]
    NothingToRollBack {
        /// The latest version.
        latest: u64,
    },
    /// A required argument was missing or invalid.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The snapshot of a version does not load or build as a policy.
    #[error("policy version {version} does not build from its snapshot: {problems}")]
    InvalidSnapshot {
        /// The version.
        version: u64,
        /// Every problem found.
        problems: ConfigProblems,
    },
    /// The policy rebuilt from a snapshot read a live file outside the snapshot, typically
    /// because the config names it by an absolute path.
    #[error(
        "policy version {version} cannot be restored exactly: it reads {} outside the snapshot \
         (an absolute path in the config?); make the path relative to the config file",
        path.display()
    )]
    OutsideSnapshot {
        /// The version.
        version: u64,
        /// The live file it would read.
        path: PathBuf,
    },
    /// The policy rebuilt from a snapshot read a different set of files than was recorded.
    #[error("policy version {version} does not rebuild exactly: {detail}")]
    SnapshotMismatch {
        /// The version.
        version: u64,
        /// Which files differ.
        detail: String,
    },
    /// Other writers kept taking the next version number.
    #[error("could not allocate a version number after {MAX_NUMBER_RETRIES} attempts")]
    Busy,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The content hash of a policy: config at `config_path` plus `files` (e.g.
/// [`ActivePolicy::files`]), the same value [`PolicyStore::record`] would give it.
///
/// # Errors
/// A file cannot be read, or the working directory is needed and unknown.
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
struct PolicyFiles {
    /// Absolute, normalised config path.
    config: PathBuf,
    /// Every file including the config, deduplicated and sorted by path, with its bytes.
    files: Vec<(FileEntry, Vec<u8>)>,
}

impl PolicyFiles {
    fn read(config_path: &Path, files: &[PathBuf]) -> Result<Self, StoreError> {
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

    fn hash(&self) -> String {
        hash_entries(&self.config, self.files.iter().map(|(e, _)| e))
    }
}

/// `sha256("config\0" path "\0\n" then, sorted by path, path "\0" sha256 "\n")`. Paths hold
/// no NUL and hashes are fixed-length, so the encoding is unambiguous.
fn hash_entries<'a>(config: &Path, entries: impl IntoIterator<Item = &'a FileEntry>) -> String {
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

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Absolute path with `.` and `..` resolved lexically: the way paths resolve inside a tree that
/// holds no symlinks, and a stable key for the same file reached two ways.
fn normalise(path: &Path) -> io::Result<PathBuf> {
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
fn is_normal_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| !matches!(c, Component::CurDir | Component::ParentDir))
}

/// Where an absolute original path lives under `tree`.
fn in_tree(tree: &Path, original: &Path) -> PathBuf {
    let mut p = tree.to_path_buf();
    for c in original.components() {
        if let Component::Normal(s) = c {
            p.push(s);
        }
    }
    p
}

fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Distinguishes temporary names made by one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(stem: &str) -> String {
    format!(
        "{TEMP_PREFIX}{stem}-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Make a rename or link in `dir` durable. Failure is ignored where directories cannot be
/// opened for syncing; the data itself was already synced.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write `bytes` to `dir/name` so that readers see either nothing or all of it. With
/// `replace == false` an existing file wins and `Ok(false)` is returned.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], replace: bool) -> Result<bool, StoreError> {
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

/// One side of a file comparison in [`PolicyStore::diff`]: path and blob hash, or absent.
type Side = Option<(PathBuf, String)>;

/// A directory of policy versions. See the module documentation for the layout.
#[derive(Debug)]
pub struct PolicyStore {
    /// Absolute state directory.
    dir: PathBuf,
    /// `dir/blobs`: file contents by hash.
    blobs: PathBuf,
    /// `dir/versions`: manifests and materialised trees.
    versions: PathBuf,
    /// Serialises number allocation and materialisation within this process; other processes
    /// are kept apart by the no-clobber manifest link.
    lock: Mutex<()>,
    /// Temporary files found at open: interrupted writes, reported and otherwise ignored.
    leftovers: Vec<PathBuf>,
}

impl PolicyStore {
    /// Open (creating if needed) the store in `dir`.
    ///
    /// # Errors
    /// The directories cannot be created or listed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir = normalise(dir).map_err(io_err("resolve", dir))?;
        let blobs = dir.join("blobs");
        let versions = dir.join("versions");
        for d in [&dir, &blobs, &versions] {
            fs::create_dir_all(d).map_err(io_err("create directory", d))?;
        }
        let mut leftovers = Vec::new();
        for d in [&blobs, &versions] {
            for entry in fs::read_dir(d).map_err(io_err("list", d))? {
                let entry = entry.map_err(io_err("list", d))?;
                if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    leftovers.push(entry.path());
                }
            }
        }
        leftovers.sort();
        Ok(Self {
            dir,
            blobs,
            versions,
            lock: Mutex::new(()),
            leftovers,
        })
    }

    /// The (absolute) state directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Temporary files found when the store was opened: writes interrupted by a crash (or in
    /// progress in another process). They are never read; an operator may delete them.
    #[must_use]
    pub fn leftover_temp_files(&self) -> &[PathBuf] {
        &self.leftovers
    }

    /// Snapshot the config at `config_path` and `files` (from [`ActivePolicy::files`]) and
    /// record a version with `action` ([`ACTION_LOAD`] or [`ACTION_RELOAD`]). If the content is
    /// identical to the newest version, that version is returned and nothing is written.
    ///
    /// # Errors
    /// A file cannot be read, the store cannot be written, `action` is not load/reload, or the
    /// newest manifest is corrupt.
    pub fn record(
        &self,
        config_path: &Path,
        files: &[PathBuf],
        action: &str,
        author: Option<&str>,
        message: Option<&str>,
    ) -> Result<VersionInfo, StoreError> {
        if action != ACTION_LOAD && action != ACTION_RELOAD {
            return Err(StoreError::InvalidArgument {
                what: "action",
                reason: format!(
                    "{action:?} is not {ACTION_LOAD:?} or {ACTION_RELOAD:?} (rollbacks go through rollback())"
                ),
            });
        }
        let snapshot = PolicyFiles::read(config_path, files)?;
        let hash = snapshot.hash();
        let _guard = self.lock.lock();
        // Blobs first: a manifest must never name a blob that a crash kept from being written.
        // Also when the content repeats, so a damaged blob of the newest version is repaired.
        for (entry, bytes) in &snapshot.files {
            self.put_blob(&entry.sha256, bytes)?;
        }
        if let Some(latest) = self.latest()?
            && latest.hash == hash
        {
            return Ok(latest);
        }
        let info = VersionInfo {
            number: 0,
            hash,
            loaded_at: now_rfc3339(),
            author: author.map(str::to_string),
            message: message.map(str::to_string),
            action: action.to_string(),
            rolled_back_from: None,
            rolled_back_to: None,
            config_path: snapshot.config,
            files: snapshot.files.into_iter().map(|(e, _)| e).collect(),
        };
        self.write_manifest(info)
    }

    /// Every version, oldest first.
    ///
    /// # Errors
    /// The directory cannot be listed, or a manifest is corrupt.
    pub fn history(&self) -> Result<Vec<VersionInfo>, StoreError> {
        self.numbers()?.into_iter().map(|n| self.get(n)).collect()
    }

    /// Version `number`.
    ///
    /// # Errors
    /// [`StoreError::NoSuchVersion`], or the manifest is unreadable or corrupt.
    pub fn get(&self, number: u64) -> Result<VersionInfo, StoreError> {
        let path = self.manifest_path(number);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchVersion(number));
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let corrupt = |reason: String| StoreError::CorruptManifest {
            path: path.clone(),
            reason,
        };
        let info: VersionInfo =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if info.number != number {
            return Err(corrupt(format!("it claims to be version {}", info.number)));
        }
        if !is_normal_absolute(&info.config_path) {
            return Err(corrupt(format!(
                "config path {} is not absolute and normal",
                info.config_path.display()
            )));
        }
        if !info.files.iter().any(|f| f.path == info.config_path) {
            return Err(corrupt("the config file is not among its files".into()));
        }
        for f in &info.files {
            // A tampered path with `..` would let materialise write outside the tree.
            if !is_normal_absolute(&f.path) {
                return Err(corrupt(format!(
                    "path {} is not absolute and normal",
                    f.path.display()
                )));
            }
            if !is_hex_sha256(&f.sha256) {
                return Err(corrupt(format!("bad sha256 for {}", f.path.display())));
            }
        }
        if hash_entries(&info.config_path, &info.files) != info.hash {
            return Err(corrupt("its hash does not match its file list".into()));
        }
        Ok(info)
    }

    /// The newest version, or `None` for an empty store.
    ///
    /// # Errors
    /// The directory cannot be listed, or the newest manifest is corrupt.
    pub fn latest(&self) -> Result<Option<VersionInfo>, StoreError> {
        match self.numbers()?.last() {
            Some(&n) => self.get(n).map(Some),
            None => Ok(None),
        }
    }

    /// A unified text diff of every file that differs between versions `a` and `b`: the config
    /// first (even if it moved), then the other files by path. Each file starts with
    /// `--- v<a> <path>` / `+++ v<b> <path>` headers; a file present on one side only is
    /// compared with `/dev/null`. Empty when the content is identical.
    ///
    /// # Errors
    /// A version is missing or corrupt, or a blob is unreadable or corrupt.
    pub fn diff(&self, a: u64, b: u64) -> Result<String, StoreError> {
        let va = self.get(a)?;
        let vb = self.get(b)?;
        let hash_of = |v: &VersionInfo, p: &Path| -> Option<String> {
            v.files
                .iter()
                .find(|f| f.path == p)
                .map(|f| f.sha256.clone())
        };
        let mut pairs: Vec<(Side, Side)> = Vec::new();
        pairs.push((
            hash_of(&va, &va.config_path).map(|h| (va.config_path.clone(), h)),
            hash_of(&vb, &vb.config_path).map(|h| (vb.config_path.clone(), h)),
        ));
        let mut others: BTreeMap<&Path, (Option<&str>, Option<&str>)> = BTreeMap::new();
        for f in va.files.iter().filter(|f| f.path != va.config_path) {
            others.entry(&f.path).or_default().0 = Some(&f.sha256);
        }
        for f in vb.files.iter().filter(|f| f.path != vb.config_path) {
            others.entry(&f.path).or_default().1 = Some(&f.sha256);
        }
        for (path, (ha, hb)) in others {
            let side = |h: Option<&str>| h.map(|h| (path.to_path_buf(), h.to_string()));
            pairs.push((side(ha), side(hb)));
        }
        let mut out = String::new();
        for (left, right) in pairs {
            if left.as_ref().map(|l| &l.1) == right.as_ref().map(|r| &r.1) {
                continue;
            }
            let label = |v: u64, side: &Side| match side {
                Some((p, _)) => format!("v{v} {}", p.display()),
                None => "/dev/null".to_string(),
            };
            let text = |side: &Side| -> Result<Option<String>, StoreError> {
                match side {
                    Some((_, h)) => Ok(String::from_utf8(self.read_blob(h)?).ok()),
                    None => Ok(Some(String::new())),
                }
            };
            let (la, lb) = (label(a, &left), label(b, &right));
            match (text(&left)?, text(&right)?) {
                (Some(ta), Some(tb)) => {
                    let d = similar::TextDiff::from_lines(&ta, &tb);
                    out.push_str(&d.unified_diff().header(&la, &lb).to_string());
                }
                _ => out.push_str(&format!("--- {la}\n+++ {lb}\nBinary files differ\n")),
            }
        }
        Ok(out)
    }

    /// Materialise version `number` into `versions/<N>.tree/` (each file at its original
    /// absolute path below the tree) and return the path of its config copy, ready for
    /// [`PolicyStore::load_snapshot`]. An existing tree is reused only if
    /// it holds exactly the version's files with the right content.
    ///
    /// # Errors
    /// The version is missing or corrupt, a blob is missing or corrupt, or the tree cannot be
    /// written.
    pub fn materialise(&self, number: u64) -> Result<PathBuf, StoreError> {
        let info = self.get(number)?;
        let _guard = self.lock.lock();
        self.materialise_locked(&info)
    }

    /// Load and compile the config of version `number` from its materialised tree
    /// (materialising it if needed) through `loader`, which re-roots policy inputs into the
    /// tree and keeps outputs such as a relative `events.path` at their live location.
    ///
    /// # Errors
    /// As [`PolicyStore::materialise`], or [`StoreError::InvalidSnapshot`] if it does not load.
    pub fn load_snapshot(
        &self,
        number: u64,
        loader: &dyn ConfigLoader,
    ) -> Result<LoadedConfig, StoreError> {
        let info = self.get(number)?;
        let config_copy = self.materialise(number)?;
        let live_name = format!("{} (version {number})", info.config_path.display());
        loader
            .load_snapshot(&config_copy, &self.tree_path(number), &live_name)
            .map_err(|problems| StoreError::InvalidSnapshot {
                version: number,
                problems,
            })
    }

    /// Roll back to version `to` — by default the newest version before the latest whose
    /// content differs from it — on behalf of `actor` for `reason`. The snapshot is
    /// materialised, loaded and built first, and must read only snapshot files; then a new
    /// version (action [`ACTION_ROLLBACK`]) is recorded with the same content, `actor` as
    /// author and `reason` as message. Returns it and the snapshot, loaded through `loader`.
    ///
    /// # Errors
    /// An empty actor or reason, an empty store, no earlier distinct version, a missing or
    /// corrupt version, a snapshot that does not build ([`StoreError::InvalidSnapshot`]) or
    /// reads live files ([`StoreError::OutsideSnapshot`]), or a write failure.
    pub fn rollback(
        &self,
        to: Option<u64>,
        actor: &str,
        reason: &str,
        loader: &dyn ConfigLoader,
    ) -> Result<(VersionInfo, LoadedConfig), StoreError> {
        for (what, value) in [("actor", actor), ("reason", reason)] {
            if value.trim().is_empty() {
                return Err(StoreError::InvalidArgument {
                    what,
                    reason: "a rollback must say who and why".into(),
                });
            }
        }
        let latest = self.latest()?.ok_or(StoreError::Empty)?;
        let target = match to {
            Some(n) => self.get(n)?,
            None => self.default_rollback_target(&latest)?,
        };
        let loaded = self.load_snapshot(target.number, loader)?;
        self.check_reads_only_snapshot(&target, &loaded.policy.files)?;
        let info = VersionInfo {
            number: 0,
            hash: target.hash.clone(),
            loaded_at: now_rfc3339(),
            author: Some(actor.to_string()),
            message: Some(reason.to_string()),
            action: ACTION_ROLLBACK.to_string(),
            rolled_back_from: Some(latest.number),
            rolled_back_to: Some(target.number),
            config_path: target.config_path.clone(),
            files: target.files.clone(),
        };
        let _guard = self.lock.lock();
        let info = self.write_manifest(info)?;
        Ok((info, loaded))
    }

    /// Check that a policy built from version `version`'s tree read only files inside the tree,
    /// and exactly the files recorded. `files` is [`ActivePolicy::files`] of that policy.
    ///
    /// # Errors
    /// [`StoreError::OutsideSnapshot`] or [`StoreError::SnapshotMismatch`].
    pub fn check_reads_only_snapshot(
        &self,
        version: &VersionInfo,
        files: &[PathBuf],
    ) -> Result<(), StoreError> {
        let tree = self.tree_path(version.number);
        let mut read = BTreeSet::new();
        for f in files {
            let Ok(rest) = lexical(f).strip_prefix(&tree).map(Path::to_path_buf) else {
                return Err(StoreError::OutsideSnapshot {
                    version: version.number,
                    path: f.clone(),
                });
            };
            read.insert(Path::new("/").join(rest));
        }
        read.insert(version.config_path.clone());
        let recorded: BTreeSet<PathBuf> = version.files.iter().map(|f| f.path.clone()).collect();
        if read != recorded {
            let extra: Vec<_> = read.difference(&recorded).map(|p| p.display()).collect();
            let missing: Vec<_> = recorded.difference(&read).map(|p| p.display()).collect();
            return Err(StoreError::SnapshotMismatch {
                version: version.number,
                detail: format!(
                    "read but not recorded: {extra:?}; recorded but not read: {missing:?}"
                ),
            });
        }
        Ok(())
    }

    fn default_rollback_target(&self, latest: &VersionInfo) -> Result<VersionInfo, StoreError> {
        // Skipping versions with the latest's content means a rollback always changes something
        // (the version just before a rollback usually has the content being rolled back from).
        for n in self.numbers()?.into_iter().rev() {
            if n >= latest.number {
                continue;
            }
            let v = self.get(n)?;
            if v.hash != latest.hash {
                return Ok(v);
            }
        }
        Err(StoreError::NothingToRollBack {
            latest: latest.number,
        })
    }

    fn manifest_path(&self, number: u64) -> PathBuf {
        self.versions.join(format!("{number}.json"))
    }

    fn tree_path(&self, number: u64) -> PathBuf {
        self.versions.join(format!("{number}.tree"))
    }

    /// Numbers of every manifest file, ascending. Only canonical `<N>.json` names count, so
    /// temporary files and trees are never mistaken for versions.
    fn numbers(&self) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.versions).map_err(io_err("list", &self.versions))? {
            let entry = entry.map_err(io_err("list", &self.versions))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(n) = stem.parse::<u64>()
                && n.to_string() == stem
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Assign the next free number to `info` and write its manifest. Caller holds `lock`.
    fn write_manifest(&self, mut info: VersionInfo) -> Result<VersionInfo, StoreError> {
        for _ in 0..MAX_NUMBER_RETRIES {
            info.number = self.numbers()?.last().map_or(1, |n| n + 1);
            let json = serde_json::to_vec_pretty(&info).map_err(|e| StoreError::Io {
                op: "serialise",
                path: self.manifest_path(info.number),
                source: io::Error::other(e),
            })?;
            let name = format!("{}.json", info.number);
            if write_atomic(&self.versions, &name, &json, false)? {
                return Ok(info);
            }
        }
        Err(StoreError::Busy)
    }

    fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blobs.join(sha256);
        // Content addressing: a present, intact blob is already right. A damaged one is
        // replaced rather than kept.
        if let Ok(existing) = fs::read(&path)
            && sha256_hex(&existing) == sha256
        {
            return Ok(());
        }
        write_atomic(&self.blobs, sha256, bytes, true).map(|_| ())
    }

    fn read_blob(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blobs.join(sha256);
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(StoreError::CorruptBlob { path, actual });
        }
        Ok(bytes)
    }

    /// Caller holds `lock`.
    fn materialise_locked(&self, info: &VersionInfo) -> Result<PathBuf, StoreError> {
        let tree = self.tree_path(info.number);
        let config_copy = in_tree(&tree, &info.config_path);
        if tree.is_dir() && tree_matches(&tree, info) {
            return Ok(config_copy);
        }
        let tmp = self
            .versions
            .join(temp_name(&format!("{}.tree", info.number)));
        let build = || -> Result<(), StoreError> {
            for f in &info.files {
                let bytes = self.read_blob(&f.sha256)?;
                let dest = in_tree(&tmp, &f.path);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
                }
                let mut file = File::create(&dest).map_err(io_err("write", &dest))?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err("write", &dest))?;
            }
            Ok(())
        };
        if let Err(e) = build() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if tree.exists() {
            fs::remove_dir_all(&tree).map_err(io_err("remove", &tree))?;
        }
        fs::rename(&tmp, &tree).map_err(|e| {
            let _ = fs::remove_dir_all(&tmp);
            io_err("write", &tree)(e)
        })?;
        sync_dir(&self.versions);
        Ok(config_copy)
    }
}

/// True when `tree` holds exactly `info`'s files (regular files only) with the right content:
/// an extra file would change what a zone directory loads.
fn tree_matches(tree: &Path, info: &VersionInfo) -> bool {
    let mut found = BTreeMap::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            return false;
        };
        for entry in entries {
            let Ok(entry) = entry else { return false };
            let Ok(kind) = entry.file_type() else {
                return false;
            };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let Ok(bytes) = fs::read(&path) else {
                    return false;
                };
                found.insert(path, sha256_hex(&bytes));
            } else {
                return false;
            }
        }
    }
    let expected: BTreeMap<PathBuf, String> = info
        .files
        .iter()
        .map(|f| (in_tree(tree, &f.path), f.sha256.clone()))
        .collect();
    found == expected
}

#[cfg(test)]
mod tests {
    use super::*;
    // Tests only: the store exercised with real configuration files.
    use crate::config::{Config, ConfigFiles};
    use crate::policy::active::ActivePolicy;

    /// A real policy in a temp dir: config, an allow list and a zones dir with one zone.
    struct Fixture {
        live: tempfile::TempDir,
        state: tempfile::TempDir,
    }

    const ZONE: &str = "$ORIGIN lab.internal.\n$TTL 300\n\
        @ 3600 IN SOA ns1.lab.internal. hostmaster.lab.internal. 1 3600 600 604800 60\n\
        @ 3600 IN NS ns1\nns1 IN A 10.9.0.53\napi IN A 10.9.0.10\n";

    impl Fixture {
        fn new() -> Self {
            let live = tempfile::tempdir().unwrap();
            let f = Self {
                live,
                state: tempfile::tempdir().unwrap(),
            };
            fs::create_dir_all(f.live.path().join("etc/lists")).unwrap();
            fs::create_dir_all(f.live.path().join("zones")).unwrap();
            f.write_config("lists/allow.txt");
            f.write("etc/lists/allow.txt", "api.lab.internal\n*.corp.example\n");
            f.write("zones/lab.internal.zone", ZONE);
            f
        }

        fn write_config(&self, allow_file: &str) {
            self.write(
                "etc/dnsward.toml",
                &format!(
                    "[upstream]\ntimeout = \"2s\"\n\n[zones]\ndir = \"../zones\"\n\n[[groups]]\nname = \"agents\"\n\
                     cidrs = [\"127.0.0.1/32\"]\nallow = [\"lab.internal\"]\n\
                     allow_files = [{allow_file:?}]\n"
                ),
            );
        }

        fn write(&self, rel: &str, text: &str) {
            fs::write(self.live.path().join(rel), text).unwrap();
        }

        fn config_path(&self) -> PathBuf {
            self.live.path().join("etc/dnsward.toml")
        }

        fn store(&self) -> PolicyStore {
            PolicyStore::open(self.state.path()).unwrap()
        }

        /// Load and build the live policy, then record it, as a reload would.
        fn record(&self, store: &PolicyStore, action: &str) -> VersionInfo {
            let cfg = Config::load(&self.config_path()).unwrap();
            let policy = ActivePolicy::build(&cfg.policy_sections()).unwrap();
            store
                .record(
                    &self.config_path(),
                    &policy.files,
                    action,
                    Some("ops"),
                    None,
                )
                .unwrap()
        }
    }

    #[test]
    fn identical_content_is_the_same_version() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        let v1_again = fx.record(&store, ACTION_RELOAD);
        assert_eq!(v1.number, 1);
        assert_eq!(v1_again, v1);
        assert_eq!(store.history().unwrap().len(), 1);
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
    fn changed_list_is_a_new_version_and_diff_shows_it() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        fx.write(
            "etc/lists/allow.txt",
            "api.lab.internal\n*.corp.example\npypi.org\n",
        );
        let v2 = fx.record(&store, ACTION_RELOAD);
        assert_eq!(v2.number, 2);
        assert_ne!(v2.hash, v1.hash);
        let diff = store.diff(1, 2).unwrap();
        let list = normalise(&fx.live.path().join("etc/lists/allow.txt")).unwrap();
        assert!(
            diff.contains(&format!("--- v1 {}", list.display())),
            "{diff}"
        );
        assert!(
            diff.contains(&format!("+++ v2 {}", list.display())),
            "{diff}"
        );
        assert!(diff.contains("\n+pypi.org\n"), "{diff}");
        // Only the changed file appears.
        assert!(!diff.contains("dnsward.toml"), "{diff}");
        assert_eq!(store.diff(2, 2).unwrap(), "");
    }

    #[test]
    fn diff_puts_the_config_first_and_handles_added_files() {
        let fx = Fixture::new();
        let store = fx.store();
        fx.record(&store, ACTION_LOAD);
        fx.write("etc/lists/extra.txt", "extra.example\n");
        fx.write_config("lists/extra.txt");
        fx.record(&store, ACTION_RELOAD);
        let diff = store.diff(1, 2).unwrap();
        let config_at = diff.find("dnsward.toml").unwrap();
        let list_at = diff.find("allow.txt").unwrap();
        assert!(config_at < list_at, "{diff}");
        assert!(diff.contains("+++ /dev/null"), "{diff}");
        assert!(diff.contains("--- /dev/null"), "{diff}");
    }

    #[test]
    fn history_is_oldest_first_and_survives_reopening() {
        let fx = Fixture::new();
        let store = fx.store();
        for (i, extra) in ["a.example", "b.example", "c.example"].iter().enumerate() {
            fx.write(
                "etc/lists/allow.txt",
                &format!("api.lab.internal\n{extra}\n"),
            );
            let action = if i == 0 { ACTION_LOAD } else { ACTION_RELOAD };
            fx.record(&store, action);
        }
        let history = store.history().unwrap();
        let numbers: Vec<u64> = history.iter().map(|v| v.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert_eq!(history[0].action, ACTION_LOAD);
        assert_eq!(history[2].action, ACTION_RELOAD);
        assert!(chrono::DateTime::parse_from_rfc3339(&history[0].loaded_at).is_ok());
        drop(store);
        let reopened = fx.store();
        assert_eq!(reopened.history().unwrap(), history);
        assert_eq!(reopened.latest().unwrap().unwrap().number, 3);
        assert_eq!(reopened.get(2).unwrap(), history[1]);
        assert!(matches!(reopened.get(9), Err(StoreError::NoSuchVersion(9))));
    }

    #[test]
    fn rollback_restores_old_content_after_live_files_changed() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        fx.write("etc/lists/allow.txt", "changed.example\n");
        fx.write(
            "zones/lab.internal.zone",
            &ZONE.replace("10.9.0.10", "10.9.9.9"),
        );
        fx.write("zones/new.internal.zone", &ZONE.replace("lab.", "new."));
        let v2 = fx.record(&store, ACTION_RELOAD);
        assert_eq!(v2.number, 2);

        let (v3, loaded) = store
            .rollback(None, "alice", "v2 broke the build agents", &ConfigFiles)
            .unwrap();
        let config_copy = store.materialise(1).unwrap();
        assert_eq!(v3.number, 3);
        assert_eq!(v3.action, ACTION_ROLLBACK);
        assert_eq!(v3.author.as_deref(), Some("alice"));
        assert_eq!(v3.message.as_deref(), Some("v2 broke the build agents"));
        assert_eq!((v3.rolled_back_from, v3.rolled_back_to), (Some(2), Some(1)));
        assert_eq!(v3.hash, v1.hash);
        assert_eq!(v3.files, v1.files);

        let tree = store.dir().join("versions/1.tree");
        assert!(config_copy.starts_with(&tree));
        let list_copy = config_copy.parent().unwrap().join("lists/allow.txt");
        assert_eq!(
            fs::read_to_string(list_copy).unwrap(),
            "api.lab.internal\n*.corp.example\n"
        );
        // The snapshot builds, reads only snapshot copies, and excludes the zone added later.
        let policy = loaded.policy;
        assert_eq!(policy.files.len(), 2);
        for f in &policy.files {
            assert!(lexical(f).starts_with(&tree), "{} is live", f.display());
        }
        let zone_copy = policy
            .files
            .iter()
            .find(|f| f.ends_with("lab.internal.zone"));
        assert!(
            fs::read_to_string(zone_copy.unwrap())
                .unwrap()
                .contains("10.9.0.10")
        );
        store.check_reads_only_snapshot(&v1, &policy.files).unwrap();
        // The live files still hold v2's content, which differs from the rolled-back latest,
        // so recording them is a new version rather than a repeat.
        assert_eq!(fx.record(&store, ACTION_RELOAD).number, 4);
    }

    #[test]
    fn rollback_to_an_explicit_version_and_default_skips_same_content() {
        let fx = Fixture::new();
        let store = fx.store();
        fx.record(&store, ACTION_LOAD);
        fx.write("etc/lists/allow.txt", "two.example\n");
        fx.record(&store, ACTION_RELOAD);
        let (v3, _) = store
            .rollback(Some(1), "bob", "test", &ConfigFiles)
            .unwrap();
        assert_eq!(v3.rolled_back_to, Some(1));
        // Latest (3) has v1's content; the newest earlier version that differs is 2.
        let (v4, _) = store.rollback(None, "bob", "undo", &ConfigFiles).unwrap();
        assert_eq!((v4.rolled_back_from, v4.rolled_back_to), (Some(3), Some(2)));
        // Latest (4) has v2's content; 3 (v1's content) differs, so it is the target.
        let (v5, _) = store.rollback(None, "bob", "again", &ConfigFiles).unwrap();
        assert_eq!(v5.rolled_back_to, Some(3));
        assert_eq!(v5.hash, store.get(1).unwrap().hash);
    }

    #[test]
    fn rollback_needs_an_actor_a_reason_and_somewhere_to_go() {
        let fx = Fixture::new();
        let store = fx.store();
        assert!(matches!(
            store.rollback(None, "a", "b", &ConfigFiles),
            Err(StoreError::Empty)
        ));
        fx.record(&store, ACTION_LOAD);
        assert!(matches!(
            store.rollback(None, "a", "b", &ConfigFiles),
            Err(StoreError::NothingToRollBack { latest: 1 })
        ));
        assert!(matches!(
            store.rollback(Some(1), " ", "b", &ConfigFiles),
            Err(StoreError::InvalidArgument { what: "actor", .. })
        ));
        assert!(matches!(
            store.rollback(Some(1), "a", "", &ConfigFiles),
            Err(StoreError::InvalidArgument { what: "reason", .. })
        ));
        assert!(matches!(
            store.rollback(Some(7), "a", "b", &ConfigFiles),
            Err(StoreError::NoSuchVersion(7))
        ));
        assert!(matches!(
            store.record(&fx.config_path(), &[], ACTION_ROLLBACK, None, None),
            Err(StoreError::InvalidArgument { what: "action", .. })
        ));
        assert_eq!(store.history().unwrap().len(), 1);
    }

    #[test]
    fn absolute_paths_in_config_are_restored_from_the_snapshot() {
        let fx = Fixture::new();
        let store = fx.store();
        let abs = fx.live.path().join("etc/lists/allow.txt");
        fx.write_config(abs.to_str().unwrap());
        fx.record(&store, ACTION_LOAD);
        let original = fs::read_to_string(&abs).unwrap();
        // The live list changes after version 1.
        fs::write(&abs, "changed.example\n").unwrap();
        fx.write_config("lists/allow.txt");
        fx.record(&store, ACTION_RELOAD);
        let (v3, _) = store
            .rollback(Some(1), "alice", "test", &ConfigFiles)
            .unwrap();
        assert_eq!(v3.rolled_back_to, Some(1));
        // The rebuilt policy reads the snapshot's copy of the absolute path, not the live file.
        let policy = store.load_snapshot(1, &ConfigFiles).unwrap().policy;
        let tree = store.dir().join("versions/1.tree");
        assert!(
            policy.files.iter().all(|f| f.starts_with(&tree)),
            "{:?}",
            policy.files
        );
        let copy = policy
            .files
            .iter()
            .find(|f| f.ends_with("etc/lists/allow.txt"))
            .unwrap();
        assert_eq!(fs::read_to_string(copy).unwrap(), original);
    }

    #[test]
    fn corrupt_or_half_written_manifests_are_reported_not_trusted() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        let versions = store.dir().join("versions");
        // An interrupted write leaves a temp file: ignored by history, listed at open.
        fs::write(versions.join(".tmp-2.json-1-0"), "{\"number\": 2, \"ha").unwrap();
        let reopened = fx.store();
        assert_eq!(reopened.history().unwrap(), std::slice::from_ref(&v1));
        assert_eq!(reopened.leftover_temp_files().len(), 1);

        // A truncated manifest under a real name is an error naming the file.
        fs::write(versions.join("2.json"), "{\"number\": 2, \"ha").unwrap();
        let err = reopened.history().unwrap_err();
        assert!(
            matches!(&err, StoreError::CorruptManifest { path, .. } if path.ends_with("2.json")),
            "{err:?}"
        );
        assert!(reopened.latest().is_err());

        // A manifest edited to point elsewhere fails its hash check.
        let mut tampered = v1.clone();
        tampered.number = 2;
        tampered.files[0].sha256 = "0".repeat(64);
        fs::write(
            versions.join("2.json"),
            serde_json::to_vec(&tampered).unwrap(),
        )
        .unwrap();
        let err = reopened.get(2).unwrap_err();
        assert!(err.to_string().contains("hash does not match"), "{err}");

        // A path escaping the tree is refused before anything is written.
        let mut escaping = v1.clone();
        escaping.number = 2;
        escaping.files[0].path = PathBuf::from("/etc/../../outside");
        fs::write(
            versions.join("2.json"),
            serde_json::to_vec(&escaping).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            reopened.materialise(2),
            Err(StoreError::CorruptManifest { .. })
        ));

        // A manifest filed under the wrong number.
        fs::write(versions.join("2.json"), serde_json::to_vec(&v1).unwrap()).unwrap();
        let err = reopened.get(2).unwrap_err();
        assert!(err.to_string().contains("claims to be version 1"), "{err}");
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
    fn relative_events_path_stays_live_after_loading_a_snapshot() {
        let fx = Fixture::new();
        let text = fs::read_to_string(fx.config_path()).unwrap();
        fx.write(
            "etc/dnsward.toml",
            &format!("[events]\nsink = \"file\"\npath = \"events.jsonl\"\n{text}"),
        );
        let store = fx.store();
        fx.record(&store, ACTION_LOAD);
        let mut cfg = Config::load(&store.materialise(1).unwrap()).unwrap();
        cfg.reroot_into_snapshot(&store.dir().join("versions/1.tree"), "v1");
        let live = normalise(&fx.live.path().join("etc/events.jsonl")).unwrap();
        assert_eq!(cfg.events.path.as_deref(), Some(live.as_path()));
        assert!(cfg.base_dir.starts_with(store.dir()));
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

    #[test]
    fn store_config_defaults_and_validation() {
        let cfg: StoreConfig = toml::from_str("").unwrap();
        assert_eq!(cfg.state_dir, Path::new("/var/lib/dnsward"));
        assert!(toml::from_str::<StoreConfig>("state = \"/x\"").is_err());
        let mut problems = ConfigProblems::default();
        cfg.validate("store", &mut problems);
        assert!(problems.is_empty());
        let rel = StoreConfig {
            state_dir: PathBuf::from("state"),
        };
        rel.validate("store", &mut problems);
        assert_eq!(problems.problems[0].location, "store.state_dir");
    }
}
