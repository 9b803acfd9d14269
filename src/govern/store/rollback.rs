//! Exact rollback: materialising a version into `versions/<N>.tree/` from its blobs, loading
//! that snapshot through a [`ConfigLoader`], checking the rebuilt policy read only snapshot
//! files, recording the rollback as a new version, and the text diff between two versions.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::blobs::sha256_hex;
use super::fs::{in_tree, io_err, lexical, sync_dir, temp_name};
use super::manifest::now_rfc3339;
use super::{ACTION_ROLLBACK, PolicyStore, StoreError, VersionInfo, VersionStatus};
use crate::govern::control::{ConfigLoader, LoadedConfig};

/// One side of a file comparison in [`PolicyStore::diff`]: path and blob hash, or absent.
type Side = Option<(PathBuf, String)>;

impl PolicyStore {
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

    /// Roll back to version `to` — by default the newest version before the latest that ran
    /// whose content differs from it, proposals skipped — on behalf of `actor` for `reason`.
    /// A proposal is never a rollback target ([`StoreError::IsProposal`]): it runs through
    /// [`PolicyStore::apply`]. The snapshot is
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
        check_who_and_why(actor, reason, "a rollback")?;
        let latest = self.latest_applied()?.ok_or(StoreError::Empty)?;
        let target = match to {
            Some(n) => self.get(n)?,
            None => self.default_rollback_target(&latest)?,
        };
        if target.status == VersionStatus::Proposed {
            // Making a proposal run is an apply, recorded and audited as such, with its check
            // that nothing changed since it was proposed.
            return Err(StoreError::IsProposal(target.number));
        }
        // A version recorded only to say nothing changed is noise in the history an auditor
        // reads; the caller is told instead (409 from the APIs).
        if target.hash == latest.hash {
            return Err(StoreError::AlreadyRunning {
                to: target.number,
                latest: latest.number,
            });
        }
        self.reactivate(&latest, &target, actor, reason, ACTION_ROLLBACK, loader)
    }

    /// Load `target`'s snapshot, check it reads only snapshot files, and record a new version
    /// with its content and `action` (rollback or apply), `latest` being the version it
    /// replaces.
    pub(super) fn reactivate(
        &self,
        latest: &VersionInfo,
        target: &VersionInfo,
        actor: &str,
        reason: &str,
        action: &str,
        loader: &dyn ConfigLoader,
    ) -> Result<(VersionInfo, LoadedConfig), StoreError> {
        let loaded = self.load_snapshot(target.number, loader)?;
        self.check_reads_only_snapshot(target, &loaded.policy.files)?;
        let info = VersionInfo {
            number: 0,
            hash: target.hash.clone(),
            loaded_at: now_rfc3339(),
            author: Some(actor.to_string()),
            message: Some(reason.to_string()),
            action: action.to_string(),
            status: VersionStatus::Applied,
            rolled_back_from: Some(latest.number),
            rolled_back_to: Some(target.number),
            proposed_against: None,
            change: target.change.clone(),
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
    ///
    /// [`ActivePolicy::files`]: crate::policy::active::ActivePolicy::files
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
            if v.hash != latest.hash && v.status != VersionStatus::Proposed {
                return Ok(v);
            }
        }
        Err(StoreError::NothingToRollBack {
            latest: latest.number,
        })
    }

    pub(super) fn tree_path(&self, number: u64) -> PathBuf {
        self.versions.join(format!("{number}.tree"))
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

/// Refuse an empty actor or reason: every change of the running policy says who and why.
pub(super) fn check_who_and_why(actor: &str, reason: &str, what: &str) -> Result<(), StoreError> {
    for (field, value) in [("actor", actor), ("reason", reason)] {
        if value.trim().is_empty() {
            return Err(StoreError::InvalidArgument {
                what: field,
                reason: format!("{what} must say who and why"),
            });
        }
    }
    Ok(())
}

/// True when `tree` holds exactly `info`'s files (regular files only) with the right content:
/// an extra file would change what a zone directory loads.
pub(super) fn tree_matches(tree: &Path, info: &VersionInfo) -> bool {
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
    use std::fs;

    use super::super::fixture::{Fixture, ZONE};
    use super::super::fs::{lexical, normalise};
    use super::super::{ACTION_LOAD, ACTION_RELOAD, ACTION_ROLLBACK, StoreError};
    use crate::config::{Config, ConfigFiles};

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
        // To the running version, or another with its content: nothing to do, nothing recorded.
        for to in [5, 3, 1] {
            assert!(matches!(
                store.rollback(Some(to), "bob", "again", &ConfigFiles),
                Err(StoreError::AlreadyRunning { latest: 5, .. })
            ));
        }
        assert_eq!(store.history().unwrap().versions.len(), 5);
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
        assert_eq!(store.history().unwrap().versions.len(), 1);
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
}
