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
//! # Proposals
//! A proposed version ([`VersionStatus::Proposed`], action [`ACTION_PROPOSE`]) is the running
//! version's files with one file edited, recorded by an author (an analyst) and never run by
//! itself: the store's notion of the running policy ([`PolicyStore::latest_applied`]), the
//! "same content" check of [`PolicyStore::record`] and rollbacks all skip proposals. An admin
//! makes one run with [`PolicyStore::apply`], which records a new version (action
//! [`ACTION_APPLY`]) and refuses a proposal whose base is no longer the running content.
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
//! [`StoreError::CorruptManifest`], never trusted (the history lists it as corrupt, with the
//! other versions, rather than failing); a blob whose bytes do not match its name is
//! [`StoreError::CorruptBlob`]. Leftover temporary files are ignored and listed by
//! [`PolicyStore::leftover_temp_files`].
//!
//! # Limits
//! - Versions beyond `[store] keep_versions` (default 200; `0` keeps all) are pruned after each
//!   new one ([`prune`]): the oldest manifests and their trees go, then the blobs no remaining
//!   manifest names. The running version and pending proposals are always kept.
//! - Files are read for the snapshot when [`PolicyStore::record`] is called, not when the policy
//!   was built; record right after building so the window for an edit in between is small.
//! - Only files listed in [`ActivePolicy::files`] are snapshotted. A config whose zones `dir`
//!   held no zone files snapshots no directory for it, so its rollback reports the missing dir.
//!
//! # Files
//! - `fs`: temporary names, `fsync`, atomic placement, lexical path helpers.
//! - `blobs`: content-addressed file bytes and [`content_hash`].
//! - `manifest`: [`VersionInfo`] manifests: number allocation, reading and validation.
//! - `rollback`: materialised trees, snapshot loading, [`PolicyStore::rollback`] and
//!   [`PolicyStore::diff`].
//! - `propose`: proposed versions ([`PolicyStore::propose`]: a version's files with one file
//!   edited, recorded with status `proposed`, never running) and [`PolicyStore::apply`].
//!
//! May import the foundation modules, `policy` (a policy's version identity) and
//! [`crate::govern::control`] (the [`ConfigLoader`] a snapshot is loaded through). It must not
//! import the composed `crate::config`: `config` composes this module's [`StoreConfig`]. Test
//! modules may, to exercise the store with real configuration files.
//!
//! [`ConfigLoader`]: crate::govern::control::ConfigLoader
//! [`ConfigLoader::load_snapshot`]: crate::govern::control::ConfigLoader::load_snapshot
//! [`ActivePolicy::files`]: crate::policy::active::ActivePolicy::files

mod blobs;
#[cfg(test)]
mod fixture;
mod fs;
mod manifest;
mod propose;
mod prune;
mod rollback;

use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::Deserialize;

pub use blobs::content_hash;
pub use fs::lexical;
pub use manifest::{CorruptVersion, FileEntry, History, HistoryEntry, VersionInfo, VersionStatus};
pub use propose::applied_proposals;

use blobs::PolicyFiles;
use fs::{TEMP_PREFIX, io_err, normalise};
use manifest::now_rfc3339;

use crate::config_error::ConfigProblems;

/// Manifests written with the same number by concurrent writers are retried this many times
/// before giving up with [`StoreError::Busy`].
const MAX_NUMBER_RETRIES: u32 = 16;

/// `action` of a version recorded at startup.
pub const ACTION_LOAD: &str = "load";
/// `action` of a version recorded by a reload.
pub const ACTION_RELOAD: &str = "reload";
/// `action` of a version recorded by [`PolicyStore::rollback`].
pub const ACTION_ROLLBACK: &str = "rollback";
/// `action` of a proposed version ([`PolicyStore::propose`]); its status is
/// [`VersionStatus::Proposed`].
pub const ACTION_PROPOSE: &str = "propose";
/// `action` of a version recorded by [`PolicyStore::apply`]: a proposal made the running policy.
pub const ACTION_APPLY: &str = "apply";

/// The `[store]` configuration: where policy versions are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// State directory holding `blobs/` and `versions/` (default `/var/lib/dnsward`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Versions kept (default 200; `0` keeps every version). Older ones are pruned after each
    /// new version, with the blobs only they named; the running version and pending proposals
    /// stay whatever their age.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: usize,
}

fn default_keep_versions() -> usize {
    200
}

/// Fewest versions `keep_versions` may keep (other than `0`, all): a rollback needs somewhere
/// to go, and a day of hourly list updates should still be there.
pub const MIN_KEEP_VERSIONS: usize = 10;

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/dnsward")
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
            keep_versions: default_keep_versions(),
        }
    }
}

impl StoreConfig {
    /// Check the section, pushing every problem found under the key path `at`.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        if self.keep_versions != 0 && self.keep_versions < MIN_KEEP_VERSIONS {
            problems.push(
                format!("{at}.keep_versions"),
                format!(
                    "{} is below {MIN_KEEP_VERSIONS}; keep at least {MIN_KEEP_VERSIONS} versions, or 0 for all",
                    self.keep_versions
                ),
            );
        }
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
        } else if self.state_dir.exists() && !self.state_dir.is_dir() {
            // Created when missing; something else in its place fails only at start.
            problems.push(
                format!("{at}.state_dir"),
                format!("{} exists and is not a directory", self.state_dir.display()),
            );
        } else if let Some(parent) = self
            .state_dir
            .ancestors()
            .skip(1)
            .find(|a| a.exists())
            .filter(|a| !a.is_dir())
        {
            problems.push(
                format!("{at}.state_dir"),
                format!("{} is not a directory", parent.display()),
            );
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
    /// Rollback to a version whose content is the running policy's: nothing would change.
    #[error(
        "version {to} has the content already running (version {latest}): nothing to roll back"
    )]
    AlreadyRunning {
        /// The version asked for.
        to: u64,
        /// The latest version, which runs.
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
    /// A rollback named a proposal, which runs only through an apply.
    #[error(
        "policy version {0} is a proposal that never ran; apply it (`dnsward policy apply {0}`) \
         rather than rolling back to it"
    )]
    IsProposal(u64),
    /// An apply named a version that is not a proposal.
    #[error("policy version {0} is not a proposal; roll back to it instead")]
    NotAProposal(u64),
    /// A proposal was made against content that is no longer the running policy: applying it
    /// would undo what changed since.
    #[error(
        "proposal {proposal} edits version {against}, but version {active} is now the running \
         policy with different content; propose the change again against it"
    )]
    StaleProposal {
        /// The proposal.
        proposal: u64,
        /// The version it edits.
        against: u64,
        /// The version that ran last.
        active: u64,
    },
    /// A proposal's edit does not fit the version it edits.
    #[error("cannot propose: {0}")]
    BadProposal(String),
    /// Other writers kept taking the next version number.
    #[error("could not allocate a version number after {MAX_NUMBER_RETRIES} attempts")]
    Busy,
}

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
    /// Versions kept when a new one is written (`None`: all); see [`prune`].
    keep: Option<usize>,
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
            std::fs::create_dir_all(d).map_err(io_err("create directory", d))?;
        }
        let mut leftovers = Vec::new();
        for d in [&blobs, &versions] {
            for entry in std::fs::read_dir(d).map_err(io_err("list", d))? {
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
            keep: None,
        })
    }

    /// Keep at most `keep` versions (`0`: all), pruning the oldest after each new version
    /// ([`prune`]). A store opened only to read (the CLI's history) prunes nothing.
    #[must_use]
    pub fn keeping(mut self, keep: usize) -> Self {
        self.keep = (keep > 0).then_some(keep);
        self
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
    ///
    /// [`ActivePolicy::files`]: crate::policy::active::ActivePolicy::files
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
        // Against the newest version that ran: a pending proposal with this content is not
        // the running policy, so it is not returned as if it were.
        // A corrupt newest manifest (a crash, a disk fault, an edit) must not keep the server
        // from starting or reloading: it cannot be the running policy's record, so a new
        // version is written after it (history still names the corrupt file).
        let latest = match self.latest_applied() {
            Ok(latest) => latest,
            Err(e @ StoreError::CorruptManifest { .. }) => {
                tracing::warn!(error = %e, "policy store: recording a new version after a corrupt one");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(latest) = latest
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
            status: VersionStatus::Applied,
            rolled_back_from: None,
            rolled_back_to: None,
            proposed_against: None,
            change: None,
            config_path: snapshot.config,
            files: snapshot.files.into_iter().map(|(e, _)| e).collect(),
        };
        self.write_manifest(info)
    }

    /// Every version, oldest first. A corrupt manifest ([`StoreError::CorruptManifest`]) is
    /// listed in [`History::corrupt`] rather than failing the whole history: the other versions
    /// stay visible, to diff and roll back to.
    ///
    /// # Errors
    /// The directory or a manifest cannot be read.
    pub fn history(&self) -> Result<History, StoreError> {
        let mut history = History::default();
        for number in self.numbers()? {
            match self.get(number) {
                Ok(v) => history.versions.push(v),
                Err(StoreError::CorruptManifest { reason, .. }) => {
                    history.corrupt.push(CorruptVersion {
                        number,
                        corrupt: reason,
                    });
                }
                // Pruned since the directory was listed.
                Err(StoreError::NoSuchVersion(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(history)
    }

    /// The newest version that ran (any status but [`VersionStatus::Proposed`]): what a
    /// running server last loaded, reloaded, rolled back to or applied. `None` for an empty store.
    ///
    /// # Errors
    /// The directory cannot be listed, or a manifest is corrupt.
    pub fn latest_applied(&self) -> Result<Option<VersionInfo>, StoreError> {
        for n in self.numbers()?.into_iter().rev() {
            let v = self.get(n)?;
            if v.status != VersionStatus::Proposed {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The newest version (possibly a proposal), or `None` for an empty store.
    ///
    /// # Errors
    /// The directory cannot be listed, or the newest manifest is corrupt.
    pub fn latest(&self) -> Result<Option<VersionInfo>, StoreError> {
        match self.numbers()?.last() {
            Some(&n) => self.get(n).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::StoreConfig;
    use crate::config_error::ConfigProblems;

    #[test]
    fn a_state_dir_that_is_a_file_or_under_one_is_a_check_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        for (path, ok) in [
            (dir.path().join("new/state"), true),
            (dir.path().to_path_buf(), true),
            (file.clone(), false),
            (file.join("state"), false),
        ] {
            let mut problems = ConfigProblems::default();
            StoreConfig {
                state_dir: path.clone(),
                ..StoreConfig::default()
            }
            .validate("store", &mut problems);
            assert_eq!(problems.is_empty(), ok, "{}: {problems:?}", path.display());
        }
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
            ..StoreConfig::default()
        };
        rel.validate("store", &mut problems);
        assert_eq!(problems.problems[0].location, "store.state_dir");
        assert_eq!(cfg.keep_versions, 200);
        for (keep, ok) in [(0, true), (9, false), (10, true), (100_000, true)] {
            let mut problems = ConfigProblems::default();
            StoreConfig {
                keep_versions: keep,
                ..StoreConfig::default()
            }
            .validate("store", &mut problems);
            assert_eq!(problems.is_empty(), ok, "{keep}: {problems:?}");
            if !ok {
                assert_eq!(problems.problems[0].location, "store.keep_versions");
            }
        }
    }
}
