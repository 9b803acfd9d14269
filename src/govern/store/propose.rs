//! Proposed versions: a stored version's files with one file edited, recorded with status
//! `proposed` so that history, diffs and audits show the change and its author before it runs,
//! and [`PolicyStore::apply`], through which an admin makes one the running policy.

use std::collections::BTreeMap;
use std::path::Path;

use super::blobs::{hash_entries, sha256_hex};
use super::manifest::now_rfc3339;
use super::rollback::check_who_and_why;
use super::{
    ACTION_APPLY, ACTION_PROPOSE, FileEntry, PolicyStore, StoreError, VersionInfo, VersionStatus,
};
use crate::govern::control::{ConfigLoader, LoadedConfig};

/// Longest accepted one-line change description, in bytes.
const MAX_CHANGE_BYTES: usize = 512;

impl PolicyStore {
    /// The bytes of `path` as version `number` recorded them.
    ///
    /// # Errors
    /// The version is missing or corrupt, it has no such file, or the blob is unreadable or
    /// corrupt.
    pub fn file(&self, number: u64, path: &Path) -> Result<Vec<u8>, StoreError> {
        let info = self.get(number)?;
        let entry = info.files.iter().find(|f| f.path == path).ok_or_else(|| {
            StoreError::InvalidArgument {
                what: "path",
                reason: format!("version {number} has no file {}", path.display()),
            }
        })?;
        self.read_blob(&entry.sha256)
    }

    /// Record a proposal: version `against`'s files with `path` (one of them) replaced by
    /// `bytes`, `author` as author, `message` (why) as message and `change` (what, one line)
    /// as its change. Nothing runs: the version has status [`VersionStatus::Proposed`]. The
    /// same proposal made twice (same base, same content) returns the first.
    ///
    /// # Errors
    /// An empty author, message or change, `against` missing, itself a proposal, or without
    /// `path`, content identical to `against`, or a write failure.
    pub fn propose(
        &self,
        against: u64,
        path: &Path,
        bytes: &[u8],
        author: &str,
        message: &str,
        change: &str,
    ) -> Result<VersionInfo, StoreError> {
        check_who_and_why(author, message, "a proposal")?;
        if change.trim().is_empty() || change.len() > MAX_CHANGE_BYTES || change.contains('\n') {
            return Err(StoreError::InvalidArgument {
                what: "change",
                reason: format!("one line of 1 to {MAX_CHANGE_BYTES} bytes"),
            });
        }
        let base = self.get(against)?;
        if base.status == VersionStatus::Proposed {
            return Err(StoreError::BadProposal(format!(
                "version {against} is itself a proposal; propose against a version that ran"
            )));
        }
        let sha256 = sha256_hex(bytes);
        let mut files: Vec<FileEntry> = base.files.clone();
        let entry = files.iter_mut().find(|f| f.path == path).ok_or_else(|| {
            StoreError::BadProposal(format!(
                "version {against} does not read {}",
                path.display()
            ))
        })?;
        if entry.sha256 == sha256 {
            return Err(StoreError::BadProposal(format!(
                "the edit leaves {} as version {against} has it",
                path.display()
            )));
        }
        entry.sha256.clone_from(&sha256);
        let hash = hash_entries(&base.config_path, &files);
        let _guard = self.lock.lock();
        // The blob before the manifest that names it, as for every version.
        self.put_blob(&sha256, bytes)?;
        for n in self.numbers()?.into_iter().rev() {
            let v = self.get(n)?;
            if v.status == VersionStatus::Proposed
                && v.hash == hash
                && v.proposed_against == Some(against)
            {
                return Ok(v);
            }
        }
        let info = VersionInfo {
            number: 0,
            hash,
            loaded_at: now_rfc3339(),
            author: Some(author.to_string()),
            message: Some(message.to_string()),
            action: ACTION_PROPOSE.to_string(),
            status: VersionStatus::Proposed,
            rolled_back_from: None,
            rolled_back_to: None,
            proposed_against: Some(against),
            change: Some(change.to_string()),
            config_path: base.config_path.clone(),
            files,
        };
        self.write_manifest(info)
    }

    /// Make proposal `number` the running policy on behalf of `actor` (an admin) for `reason`:
    /// its snapshot is materialised, loaded and built, must read only snapshot files, and a
    /// new version (action [`ACTION_APPLY`], `rolled_back_to` = the proposal) is recorded.
    /// Refused when the newest version that ran no longer has the content the proposal edits
    /// (applying it would undo that change).
    ///
    /// # Errors
    /// An empty actor or reason, `number` missing or not a proposal
    /// ([`StoreError::NotAProposal`]), a stale proposal ([`StoreError::StaleProposal`]), a
    /// snapshot that does not build or reads live files, or a write failure.
    pub fn apply(
        &self,
        number: u64,
        actor: &str,
        reason: &str,
        loader: &dyn ConfigLoader,
    ) -> Result<(VersionInfo, LoadedConfig), StoreError> {
        check_who_and_why(actor, reason, "an apply")?;
        let proposal = self.get(number)?;
        if proposal.status != VersionStatus::Proposed {
            return Err(StoreError::NotAProposal(number));
        }
        let latest = self.latest_applied()?.ok_or(StoreError::Empty)?;
        let against = proposal.proposed_against.unwrap_or_default();
        let base_hash = self.get(against).map(|b| b.hash).unwrap_or_default();
        if base_hash != latest.hash {
            return Err(StoreError::StaleProposal {
                proposal: number,
                against,
                active: latest.number,
            });
        }
        self.reactivate(&latest, &proposal, actor, reason, ACTION_APPLY, loader)
    }
}

impl PolicyStore {
    /// The files of version `number` whose live copy (at the recorded path) is missing or
    /// differs. After an apply (or a rollback) this is what an operator must write back for a
    /// reload or restart from the live files to keep the change: `dnsward policy cat`.
    ///
    /// # Errors
    /// The version is missing or corrupt.
    pub fn differs_from_live(&self, number: u64) -> Result<Vec<std::path::PathBuf>, StoreError> {
        let info = self.get(number)?;
        Ok(info
            .files
            .iter()
            .filter(|f| std::fs::read(&f.path).map_or(true, |b| sha256_hex(&b) != f.sha256))
            .map(|f| f.path.clone())
            .collect())
    }
}

/// For each proposal in `history`, the first version that applied it.
#[must_use]
pub fn applied_proposals(history: &[VersionInfo]) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for v in history.iter().filter(|v| v.action == ACTION_APPLY) {
        if let Some(p) = v.rolled_back_to {
            out.entry(p).or_insert(v.number);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::super::{
        ACTION_APPLY, ACTION_LOAD, ACTION_PROPOSE, ACTION_RELOAD, StoreError, VersionStatus,
    };
    use super::applied_proposals;
    use crate::config::ConfigFiles;

    fn edited(fx: &Fixture) -> String {
        std::fs::read_to_string(fx.config_path()).unwrap().replace(
            "allow = [\"lab.internal\"]",
            "allow = [\"lab.internal\"]\ndeny = [\"bad.example\"]",
        )
    }

    #[test]
    fn a_proposal_is_recorded_not_run_and_apply_makes_it_run() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        let text = edited(&fx);
        let p = store
            .propose(
                1,
                &v1.config_path,
                text.as_bytes(),
                "alice",
                "tunnel",
                "deny bad.example",
            )
            .unwrap();
        assert_eq!(
            (p.number, p.status, p.action.as_str()),
            (2, VersionStatus::Proposed, ACTION_PROPOSE)
        );
        assert_eq!(
            (p.author.as_deref(), p.proposed_against),
            (Some("alice"), Some(1))
        );
        // The same proposal again is the same version.
        let again = store
            .propose(
                1,
                &v1.config_path,
                text.as_bytes(),
                "bob",
                "again",
                "deny bad.example",
            )
            .unwrap();
        assert_eq!(again.number, 2);
        // The running policy is still version 1; a reload of unchanged files is version 1.
        assert_eq!(store.latest_applied().unwrap().unwrap().number, 1);
        assert_eq!(fx.record(&store, ACTION_RELOAD).number, 1);
        assert!(
            store
                .diff(1, 2)
                .unwrap()
                .contains("+deny = [\"bad.example\"]")
        );
        assert_eq!(store.file(2, &v1.config_path).unwrap(), text.as_bytes());
        // A proposal is neither a rollback target nor a default one.
        assert!(matches!(
            store.rollback(Some(2), "root", "x", &ConfigFiles),
            Err(StoreError::IsProposal(2))
        ));
        assert!(matches!(
            store.rollback(None, "root", "x", &ConfigFiles),
            Err(StoreError::NothingToRollBack { latest: 1 })
        ));
        assert!(matches!(
            store.apply(1, "root", "x", &ConfigFiles),
            Err(StoreError::NotAProposal(1))
        ));
        let (v3, loaded) = store
            .apply(2, "root", "confirmed tunnel", &ConfigFiles)
            .unwrap();
        assert_eq!(
            (v3.number, v3.action.as_str(), v3.status),
            (3, ACTION_APPLY, VersionStatus::Applied)
        );
        assert_eq!((v3.rolled_back_from, v3.rolled_back_to), (Some(1), Some(2)));
        assert_eq!(v3.hash, p.hash);
        assert!(
            loaded.policy.groups[0]
                .deny
                .find_covering("x.bad.example")
                .is_some()
        );
        assert_eq!(
            applied_proposals(&store.history().unwrap().versions).get(&2),
            Some(&3)
        );
        // The live file never changed: the store says so, it is not silently rewritten.
        assert!(
            !std::fs::read_to_string(fx.config_path())
                .unwrap()
                .contains("bad.example")
        );
        drop(store);
        let reopened = fx.store();
        assert_eq!(reopened.get(2).unwrap(), p);
        assert_eq!(reopened.latest_applied().unwrap().unwrap().number, 3);
    }

    #[test]
    fn a_stale_or_empty_proposal_is_refused() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        let text = edited(&fx);
        let same = std::fs::read(fx.config_path()).unwrap();
        assert!(matches!(
            store.propose(1, &v1.config_path, &same, "alice", "x", "nothing"),
            Err(StoreError::BadProposal(_))
        ));
        assert!(matches!(
            store.propose(1, &v1.config_path, text.as_bytes(), "", "x", "y"),
            Err(StoreError::InvalidArgument { what: "actor", .. })
        ));
        assert!(matches!(
            store.propose(
                1,
                std::path::Path::new("/nope"),
                text.as_bytes(),
                "a",
                "x",
                "y"
            ),
            Err(StoreError::BadProposal(_))
        ));
        let p = store
            .propose(
                1,
                &v1.config_path,
                text.as_bytes(),
                "alice",
                "x",
                "deny bad.example",
            )
            .unwrap();
        assert!(matches!(
            store.propose(p.number, &v1.config_path, b"x", "alice", "x", "y"),
            Err(StoreError::BadProposal(_))
        ));
        // The live list changes and is reloaded: the proposal would undo that.
        fx.write("etc/lists/allow.txt", "api.lab.internal\n");
        let v3 = fx.record(&store, ACTION_RELOAD);
        assert_eq!(v3.number, 3);
        let err = store.apply(2, "root", "x", &ConfigFiles).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::StaleProposal {
                    proposal: 2,
                    against: 1,
                    active: 3
                }
            ),
            "{err}"
        );
        assert_eq!(store.history().unwrap().versions.len(), 3);
    }
}
