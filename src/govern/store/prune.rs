//! Retention: after each new version the store keeps the newest `keep_versions` (`[store]`,
//! default 200), the running version and every pending (not yet applied) proposal with the
//! version it edits, and removes the rest: each
//! pruned version's manifest, then its materialised tree, then the blobs that no remaining
//! manifest names. Without it the store grew with every distinct version for good (a list
//! refreshed hourly and reloaded is a new blob an hour).
//!
//! Pruning never fails the version being written: a file that cannot be removed is logged
//! and tried again after the next version. While any manifest is corrupt no blob is removed
//! (what it names is unknown), and the corrupt manifest itself stays for whoever investigates.
//! A blob is removed only when it has not been written or reused for [`BLOB_GRACE`]: another
//! process may have just put one for a manifest it is about to write (a reused blob is
//! touched by [`PolicyStore::put_blob`] for that reason).
//!
//! A pruned version is gone from `policy history`, `diff` and `rollback` (which say "no such
//! version"); the events it decided still carry its number and hash, and the event log, not
//! the store, is the record of what ran.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::time::{Duration, SystemTime};

use super::fs::{TEMP_PREFIX, sync_dir};
use super::manifest::VersionStatus;
use super::{PolicyStore, VersionInfo};

/// How long an unreferenced blob is left alone after it was last written or reused.
pub(super) const BLOB_GRACE: Duration = Duration::from_secs(600);

impl PolicyStore {
    /// Prune versions beyond the retention (see the module). Caller holds `lock`.
    pub(super) fn prune_locked(&self) {
        let Some(keep) = self.keep else { return };
        let Ok(numbers) = self.numbers() else { return };
        if numbers.len() <= keep {
            return;
        }
        let infos: Vec<(u64, Option<VersionInfo>)> =
            numbers.iter().map(|&n| (n, self.get(n).ok())).collect();
        let any_corrupt = infos.iter().any(|(_, i)| i.is_none());
        let newest_kept = numbers[numbers.len() - keep];
        let running = infos
            .iter()
            .rev()
            .filter_map(|(_, i)| i.as_ref())
            .find(|i| i.status != VersionStatus::Proposed)
            .map(|i| i.number);
        // A proposal stays while pending, with the version it edits (an apply compares the
        // running content with that version's). Once applied, the version that applied it
        // holds its content, and the proposal ages out like any other version.
        let readable: Vec<VersionInfo> = infos.iter().filter_map(|(_, i)| i.clone()).collect();
        let applied = super::applied_proposals(&readable);
        let pending: HashSet<u64> = readable
            .iter()
            .filter(|v| v.status == VersionStatus::Proposed && !applied.contains_key(&v.number))
            .flat_map(|v| [Some(v.number), v.proposed_against].into_iter().flatten())
            .collect();
        let mut pruned = Vec::new();
        let mut kept_blobs: HashSet<&str> = HashSet::new();
        for (n, info) in &infos {
            let Some(info) = info else { continue };
            let keep_it = *n >= newest_kept || Some(*n) == running || pending.contains(n);
            if keep_it {
                kept_blobs.extend(info.files.iter().map(|f| f.sha256.as_str()));
                continue;
            }
            // The manifest first: once it is gone the version is gone, whatever of its tree
            // a crash leaves (trees are only ever read through their manifest).
            match fs::remove_file(self.manifest_path(*n)) {
                Ok(()) => pruned.push(*n),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(version = n, error = %e, "policy store: cannot prune version");
                    kept_blobs.extend(info.files.iter().map(|f| f.sha256.as_str()));
                    continue;
                }
            }
            let tree = self.tree_path(*n);
            if let Err(e) = fs::remove_dir_all(&tree)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %tree.display(), error = %e, "policy store: cannot remove a pruned version's tree");
            }
        }
        if pruned.is_empty() {
            return;
        }
        sync_dir(&self.versions);
        let blobs_removed = if any_corrupt {
            tracing::warn!("policy store: a corrupt manifest is present; no blob is pruned");
            0
        } else {
            self.remove_unnamed_blobs(&kept_blobs)
        };
        tracing::info!(
            versions = pruned.len(),
            oldest = pruned.first().copied().unwrap_or(0),
            newest = pruned.last().copied().unwrap_or(0),
            blobs = blobs_removed,
            keep,
            "policy store: pruned versions beyond keep_versions"
        );
    }

    /// Remove every blob not in `named` and untouched for [`BLOB_GRACE`]; how many went.
    fn remove_unnamed_blobs(&self, named: &HashSet<&str>) -> usize {
        let Ok(entries) = fs::read_dir(&self.blobs) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX)
                || !super::blobs::is_hex_sha256(name)
                || named.contains(name)
            {
                continue;
            }
            let idle = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok());
            if idle.is_some_and(|d| d >= BLOB_GRACE) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.blobs);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::SystemTime;

    use super::super::fixture::Fixture;
    use super::super::{ACTION_RELOAD, StoreError};
    use super::BLOB_GRACE;

    /// Age every blob past the grace, as if written long ago.
    fn age_blobs(dir: &std::path::Path) {
        let old = SystemTime::now() - BLOB_GRACE * 2;
        for e in fs::read_dir(dir.join("blobs")).unwrap().flatten() {
            fs::File::open(e.path()).unwrap().set_modified(old).unwrap();
        }
    }

    fn blob_count(dir: &std::path::Path) -> usize {
        fs::read_dir(dir.join("blobs")).unwrap().count()
    }

    #[test]
    fn the_oldest_versions_go_with_their_trees_and_blobs_and_the_running_one_stays() {
        let fx = Fixture::new();
        let store = fx.store().keeping(10);
        let mut last = None;
        for i in 0..25 {
            // Each version has its own allow list (one new blob each).
            fx.write(
                "etc/lists/allow.txt",
                &format!("api.lab.internal\nhost{i}.example\n"),
            );
            let v = fx.record(&store, ACTION_RELOAD);
            if i == 2 {
                store.materialise(v.number).unwrap();
            }
            age_blobs(store.dir());
            last = Some(v);
        }
        let history = store.history().unwrap().versions;
        let numbers: Vec<u64> = history.iter().map(|v| v.number).collect();
        assert_eq!(numbers, (16..=25).collect::<Vec<_>>());
        assert!(matches!(store.get(3), Err(StoreError::NoSuchVersion(3))));
        assert!(
            !store.tree_path(3).exists(),
            "a pruned version's tree goes too"
        );
        // Kept: the config and zone (shared) and the ten kept lists; the 15 others are gone.
        assert_eq!(blob_count(store.dir()), 12);
        // Every kept version still rolls back exactly: nothing it names was removed.
        for v in &history {
            store.materialise(v.number).unwrap();
        }
        assert_eq!(store.latest_applied().unwrap(), last);
        // Numbers go on from the newest, never reusing a pruned one.
        fx.write("etc/lists/allow.txt", "api.lab.internal\n");
        assert_eq!(fx.record(&store, ACTION_RELOAD).number, 26);
    }

    #[test]
    fn fresh_blobs_a_corrupt_manifest_and_an_unlimited_store_keep_what_they_name() {
        let fx = Fixture::new();
        let store = fx.store().keeping(10);
        for i in 0..12 {
            fx.write("etc/lists/allow.txt", &format!("h{i}.example\n"));
            fx.record(&store, ACTION_RELOAD);
        }
        // Versions 1 and 2 were pruned, but their blobs are younger than the grace: another
        // process may be about to name them.
        assert_eq!(store.history().unwrap().versions.len(), 10);
        assert_eq!(blob_count(store.dir()), 2 + 12);

        // A corrupt manifest: versions are still pruned (never the corrupt one), no blob is.
        fs::write(store.dir().join("versions/3.json"), "{").unwrap();
        age_blobs(store.dir());
        fx.write("etc/lists/allow.txt", "h12.example\n");
        fx.record(&store, ACTION_RELOAD);
        assert!(store.dir().join("versions/3.json").exists());
        assert_eq!(blob_count(store.dir()), 2 + 13);

        // keep_versions = 0: nothing is pruned.
        let all = fx.store().keeping(0);
        fs::remove_file(store.dir().join("versions/3.json")).unwrap();
        for i in 0..12 {
            fx.write("etc/lists/allow.txt", &format!("again{i}.example\n"));
            fx.record(&all, ACTION_RELOAD);
        }
        assert_eq!(all.history().unwrap().versions.len(), 10 - 1 + 1 + 12);
    }

    #[test]
    fn the_running_version_and_pending_proposals_outlive_the_window() {
        let fx = Fixture::new();
        let store = fx.store().keeping(10);
        let running = fx.record(&store, ACTION_RELOAD);
        let config = fs::read_to_string(fx.config_path()).unwrap();
        // Twelve proposals against it, none applied: the running version is now older than
        // the newest ten, and must stay (it is what a restart and a rollback start from).
        for i in 0..12 {
            let edited = format!("{config}\n# proposal {i}\n");
            store
                .propose(
                    running.number,
                    &running.config_path,
                    edited.as_bytes(),
                    "alice",
                    "why",
                    "a change",
                )
                .unwrap();
        }
        let numbers: Vec<u64> = store
            .history()
            .unwrap()
            .versions
            .iter()
            .map(|v| v.number)
            .collect();
        assert_eq!(numbers, (1..=13).collect::<Vec<_>>(), "nothing pruned");
        assert_eq!(
            store.latest_applied().unwrap().unwrap().number,
            running.number
        );
        // The last proposal is applied (version 14): it is no longer pending.
        let (applied, _) = store
            .apply(13, "admin", "approved", &crate::config::ConfigFiles)
            .unwrap();
        assert_eq!(applied.number, 14);
        // Reloads push the proposals out of the window; they stay while pending.
        for i in 0..12 {
            fx.write("etc/lists/allow.txt", &format!("later{i}.example\n"));
            fx.record(&store, ACTION_RELOAD);
        }
        let history = store.history().unwrap().versions;
        let proposals = history
            .iter()
            .filter(|v| v.status == super::super::VersionStatus::Proposed)
            .count();
        assert_eq!(proposals, 11, "the pending ones; the applied one aged out");
        assert!(matches!(store.get(13), Err(StoreError::NoSuchVersion(13))));
        // Version 1 is no longer running, but the pending proposals edit it: it stays.
        assert_eq!(store.get(1).unwrap().number, 1);
        assert!(matches!(store.get(14), Err(StoreError::NoSuchVersion(14))));
        assert_eq!(history.len(), 11 + 1 + 10);
    }
}
