//! Version manifests: [`VersionInfo`] as written to `versions/<N>.json`, the allocation of the
//! next number (no writer clobbers another's), and the checks a manifest must pass before it is
//! trusted (its number, absolute normal paths, hex hashes, a hash matching its file list).

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::blobs::{hash_entries, is_hex_sha256};
use super::fs::{io_err, is_normal_absolute, write_atomic};
#[cfg(doc)]
use super::{
    ACTION_APPLY, ACTION_LOAD, ACTION_PROPOSE, ACTION_RELOAD, ACTION_ROLLBACK, content_hash,
};
use super::{MAX_NUMBER_RETRIES, PolicyStore, StoreError};
#[cfg(doc)]
use crate::policy::active::ActivePolicy;
use crate::policy::active::PolicyVersion;

/// One file of a version: where it was read from and the SHA-256 (hex) of its bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute, normalised path the file was read from.
    pub path: PathBuf,
    /// SHA-256 of the bytes, lowercase hex; also the blob's name.
    pub sha256: String,
}

/// Whether a version ever ran: recorded when it was loaded, or proposed for an admin to apply.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Recorded as it became the running policy (load, reload, rollback, apply). Manifests
    /// written before proposals existed have no `status` and read as this.
    #[default]
    Applied,
    /// Proposed (by an analyst); it runs only once an admin applies it, which records a new
    /// version with action [`ACTION_APPLY`].
    Proposed,
}

impl VersionStatus {
    /// The name used in JSON and tables.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Proposed => "proposed",
        }
    }
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
    /// [`ACTION_LOAD`], [`ACTION_RELOAD`], [`ACTION_ROLLBACK`], [`ACTION_PROPOSE`] or
    /// [`ACTION_APPLY`].
    pub action: String,
    /// [`VersionStatus::Proposed`] for a proposal that never ran by itself; `applied` otherwise.
    #[serde(default)]
    pub status: VersionStatus,
    /// For a rollback or an apply: the version that was active before it.
    #[serde(default)]
    pub rolled_back_from: Option<u64>,
    /// For a rollback: the version whose content it re-activated; for an apply: the proposal.
    #[serde(default)]
    pub rolled_back_to: Option<u64>,
    /// For a proposal: the version it edits (the one active when it was proposed). Applying it
    /// is refused once the active content differs, so an apply never undoes a later change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_against: Option<u64>,
    /// For a proposal: the change in one line (`deny "x.example" in group "agents"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
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

/// A manifest in `versions/` that is not trusted ([`StoreError::CorruptManifest`]): listed in
/// the history by its number, with why, so that one bad file does not hide the others.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CorruptVersion {
    /// The number in its file name (`versions/<N>.json`).
    pub number: u64,
    /// Why it is not trusted.
    pub corrupt: String,
}

/// Every version in the store ([`PolicyStore::history`]), oldest first: those whose manifests
/// are sound, and those whose manifests are not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The versions whose manifests passed every check.
    pub versions: Vec<VersionInfo>,
    /// The manifests that did not.
    pub corrupt: Vec<CorruptVersion>,
}

/// One entry of [`History::entries`]. In JSON a version is its manifest and a corrupt one is
/// `{"number": N, "corrupt": "why"}`.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum HistoryEntry<'a> {
    /// A sound version.
    Version(&'a VersionInfo),
    /// A manifest that is not trusted.
    Corrupt(&'a CorruptVersion),
}

impl HistoryEntry<'_> {
    /// The version number.
    #[must_use]
    pub fn number(&self) -> u64 {
        match self {
            Self::Version(v) => v.number,
            Self::Corrupt(c) => c.number,
        }
    }
}

impl History {
    /// Sound and corrupt versions together, oldest first.
    #[must_use]
    pub fn entries(&self) -> Vec<HistoryEntry<'_>> {
        let mut out: Vec<HistoryEntry<'_>> = self
            .versions
            .iter()
            .map(HistoryEntry::Version)
            .chain(self.corrupt.iter().map(HistoryEntry::Corrupt))
            .collect();
        out.sort_by_key(HistoryEntry::number);
        out
    }
}

pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl PolicyStore {
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

    pub(super) fn manifest_path(&self, number: u64) -> PathBuf {
        self.versions.join(format!("{number}.json"))
    }

    /// Numbers of every manifest file, ascending. Only canonical `<N>.json` names count, so
    /// temporary files and trees are never mistaken for versions.
    pub(super) fn numbers(&self) -> Result<Vec<u64>, StoreError> {
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
    pub(super) fn write_manifest(&self, mut info: VersionInfo) -> Result<VersionInfo, StoreError> {
        for _ in 0..MAX_NUMBER_RETRIES {
            info.number = self.numbers()?.last().map_or(1, |n| n + 1);
            let json = serde_json::to_vec_pretty(&info).map_err(|e| StoreError::Io {
                op: "serialise",
                path: self.manifest_path(info.number),
                source: io::Error::other(e),
            })?;
            let name = format!("{}.json", info.number);
            if write_atomic(&self.versions, &name, &json, false)? {
                self.prune_locked();
                return Ok(info);
            }
        }
        Err(StoreError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::super::fixture::Fixture;
    use super::super::{ACTION_LOAD, ACTION_RELOAD, StoreError};

    /// Versions 1 to 3: a load, then two reloads, each with another allow-list entry.
    fn record_three(fx: &Fixture, store: &super::super::PolicyStore) {
        for (i, extra) in ["a.example", "b.example", "c.example"].iter().enumerate() {
            fx.write(
                "etc/lists/allow.txt",
                &format!("api.lab.internal\n{extra}\n"),
            );
            fx.record(store, if i == 0 { ACTION_LOAD } else { ACTION_RELOAD });
        }
    }

    #[test]
    fn history_is_oldest_first_and_survives_reopening() {
        let fx = Fixture::new();
        let store = fx.store();
        record_three(&fx, &store);
        let history = store.history().unwrap().versions;
        let numbers: Vec<u64> = history.iter().map(|v| v.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert_eq!(history[0].action, ACTION_LOAD);
        assert_eq!(history[2].action, ACTION_RELOAD);
        assert!(chrono::DateTime::parse_from_rfc3339(&history[0].loaded_at).is_ok());
        drop(store);
        let reopened = fx.store();
        assert_eq!(reopened.history().unwrap().versions, history);
        assert_eq!(reopened.latest().unwrap().unwrap().number, 3);
        assert_eq!(reopened.get(2).unwrap(), history[1]);
        assert!(matches!(reopened.get(9), Err(StoreError::NoSuchVersion(9))));
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
        assert_eq!(
            reopened.history().unwrap().versions,
            std::slice::from_ref(&v1)
        );
        assert_eq!(reopened.leftover_temp_files().len(), 1);

        // A truncated manifest under a real name is an error naming the file, and listed as
        // corrupt by the history.
        fs::write(versions.join("2.json"), "{\"number\": 2, \"ha").unwrap();
        let err = reopened.get(2).unwrap_err();
        assert!(
            matches!(&err, StoreError::CorruptManifest { path, .. } if path.ends_with("2.json")),
            "{err:?}"
        );
        assert!(reopened.latest().is_err());
        let history = reopened.history().unwrap();
        assert_eq!(history.versions, std::slice::from_ref(&v1));
        assert_eq!(history.corrupt.len(), 1);
        assert_eq!(history.corrupt[0].number, 2);

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
    fn a_corrupt_manifest_is_listed_in_the_history_and_the_others_still_are() {
        let fx = Fixture::new();
        let store = fx.store();
        record_three(&fx, &store);
        let versions = store.dir().join("versions");
        fs::write(versions.join("2.json"), "{\"number\": 2, \"hash\": \n").unwrap();
        let history = store.history().unwrap();
        let numbers: Vec<u64> = history.versions.iter().map(|v| v.number).collect();
        assert_eq!(numbers, [1, 3]);
        assert_eq!(history.corrupt.len(), 1, "{history:?}");
        assert_eq!(history.corrupt[0].number, 2);
        assert!(history.corrupt[0].corrupt.contains("EOF"), "{history:?}");
        // In order, and in JSON as `{"number", "corrupt"}` among the manifests.
        let entries: Vec<u64> = history.entries().iter().map(|e| e.number()).collect();
        assert_eq!(entries, [1, 2, 3]);
        let json = serde_json::to_value(history.entries()).unwrap();
        assert_eq!(json[0]["action"], ACTION_LOAD);
        assert_eq!(
            json[1],
            serde_json::json!({"number": 2, "corrupt": history.corrupt[0].corrupt})
        );
        assert_eq!(json[2]["number"], 3);
        // The others still diff; the corrupt one is still refused by name.
        assert!(store.diff(1, 3).unwrap().contains("c.example"));
        let err = store.diff(1, 2).unwrap_err();
        assert!(
            matches!(&err, StoreError::CorruptManifest { path, .. } if path.ends_with("2.json")),
            "{err:?}"
        );
        assert!(matches!(
            store.materialise(2),
            Err(StoreError::CorruptManifest { .. })
        ));
    }

    #[test]
    fn a_corrupt_newest_manifest_does_not_keep_a_version_from_being_recorded() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        let versions = store.dir().join("versions");
        for garbage in [&b"{}"[..], b"\xff", b"{\"number\": 2, \"ha"] {
            fs::write(versions.join("2.json"), garbage).unwrap();
            let reopened = fx.store();
            // What a restart does: record the configuration it starts with.
            let v3 = fx.record(&reopened, ACTION_LOAD);
            assert_eq!(v3.number, 3, "after the corrupt version 2");
            assert_eq!(v3.hash, v1.hash);
            fs::remove_file(versions.join("3.json")).unwrap();
        }
    }

    #[test]
    fn manifests_written_before_proposals_read_as_applied() {
        let fx = Fixture::new();
        let store = fx.store();
        let v1 = fx.record(&store, ACTION_LOAD);
        // A manifest as earlier releases wrote it: no status, proposal or change fields.
        let mut old = serde_json::to_value(&v1).unwrap();
        let obj = old.as_object_mut().unwrap();
        obj.remove("status");
        obj.insert("number".into(), 2.into());
        assert!(!obj.contains_key("proposed_against") && !obj.contains_key("change"));
        let versions = store.dir().join("versions");
        fs::write(versions.join("2.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        let v2 = store.get(2).unwrap();
        assert_eq!(v2.status, super::VersionStatus::Applied);
        assert_eq!(store.latest_applied().unwrap().unwrap().number, 2);
    }
}
