//! Triage state per suspect (client + registrable domain): open → acknowledged → confirmed |
//! false positive | released, each step with who, when and a note.
//!
//! Durable: every transition is appended as one JSON line to `state_dir/review/triage.jsonl`
//! and `fsync`ed before the caller is answered, so an acknowledged action survives a crash.
//! Opening replays the file; a torn last line (a crash mid-write) is skipped and counted, never
//! fatal. Without a state directory the store lives in memory only (and says so).
//!
//! Bounded: at most [`MAX_SUSPECTS`] suspects are tracked (a transition for a new one beyond
//! that is refused) and each keeps its last [`MAX_HISTORY`] steps in memory; opening compacts
//! the file to the same once it holds more than [`COMPACT_AFTER`] lines and twice what is kept
//! (the hash-chained event log keeps every step).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Most suspects with a triage record.
pub const MAX_SUSPECTS: usize = 100_000;
/// Steps of history kept in memory per suspect.
pub const MAX_HISTORY: usize = 50;
/// Longest note, in bytes.
pub const MAX_NOTE: usize = 2000;
/// Lines in `triage.jsonl` before opening compacts it.
pub const COMPACT_AFTER: usize = 10_000;

/// Where a suspect is in triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TriageState {
    /// Nobody has looked yet.
    #[default]
    Open,
    /// Someone is on it.
    Acknowledged,
    /// A real tunnel or exfiltration.
    Confirmed,
    /// Not a tunnel: an exception was added and containment released.
    FalsePositive,
    /// Containment released without a verdict.
    Released,
}

impl TriageState {
    /// The name used in JSON, events and the CLI.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Confirmed => "confirmed",
            Self::FalsePositive => "false_positive",
            Self::Released => "released",
        }
    }

    /// Whether `self → to` is a step the workflow allows.
    #[must_use]
    pub fn allows(self, to: Self) -> bool {
        use TriageState::{Acknowledged, Confirmed, FalsePositive, Open, Released};
        matches!(
            (self, to),
            (Open, Acknowledged | Confirmed | FalsePositive | Released)
                | (Acknowledged, Confirmed | FalsePositive | Released)
                | (Confirmed, Released | FalsePositive)
        )
    }

    /// Whether the suspect still needs someone (shown in the queue).
    #[must_use]
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Open | Self::Acknowledged)
    }
}

/// A suspect's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SuspectKey {
    /// The client.
    pub client: IpAddr,
    /// The registrable domain.
    pub domain: String,
}

/// One step of triage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The suspect.
    #[serde(flatten)]
    pub key: SuspectKey,
    /// The client's group.
    pub group: String,
    /// State before.
    pub from: TriageState,
    /// State after.
    pub to: TriageState,
    /// Who.
    pub user: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why.
    pub note: String,
    /// What else the step did: the exception added, the containments ended, a proposal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<String>,
}

/// A suspect's triage record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TriageRecord {
    /// Current state.
    pub state: TriageState,
    /// Steps, oldest first (the last [`MAX_HISTORY`]).
    pub history: Vec<Transition>,
}

/// Why a transition was refused.
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    /// The workflow does not allow this step.
    #[error("a {from} suspect cannot become {to}", from = .from.as_str(), to = .to.as_str())]
    NotAllowed {
        /// Current state.
        from: TriageState,
        /// Asked for.
        to: TriageState,
    },
    /// Someone else moved it first.
    #[error("the suspect is {actual} now, not {expected}", actual = .actual.as_str(), expected = .expected.as_str())]
    Stale {
        /// What the caller saw.
        expected: TriageState,
        /// What it is.
        actual: TriageState,
    },
    /// The bound on tracked suspects is reached.
    #[error("too many triaged suspects (limit {MAX_SUSPECTS})")]
    Full,
    /// The step could not be made durable; nothing changed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

#[derive(Debug)]
struct Inner {
    records: HashMap<SuspectKey, TriageRecord>,
    file: Option<File>,
}

/// The triage records, durable in `state_dir/review/triage.jsonl`.
#[derive(Debug)]
pub struct TriageStore {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
    skipped: u64,
}

impl TriageStore {
    /// A store that forgets everything on restart.
    #[must_use]
    pub fn in_memory() -> Self {
        Self {
            path: None,
            inner: Mutex::new(Inner {
                records: HashMap::new(),
                file: None,
            }),
            skipped: 0,
        }
    }

    /// Open (creating if needed) `dir/triage.jsonl` and replay it.
    ///
    /// # Errors
    /// The directory or file cannot be created, opened or read.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("triage.jsonl");
        let mut records: HashMap<SuspectKey, TriageRecord> = HashMap::new();
        let mut skipped = 0;
        let mut lines = 0usize;
        if path.exists() {
            // By bytes, not `lines()`: a line cut inside a multi-byte character (a crash while
            // writing a note) is a torn line like any other, skipped and counted, not an
            // error that keeps the server from starting.
            for line in BufReader::new(File::open(&path)?).split(b'\n') {
                let line = line?;
                if line.trim_ascii().is_empty() {
                    continue;
                }
                lines += 1;
                match serde_json::from_slice::<Transition>(&line) {
                    Ok(t) => apply(&mut records, t),
                    Err(_) => skipped += 1,
                }
            }
        }
        // Compact: the file keeps only what memory keeps (the last MAX_HISTORY steps of each
        // suspect) once it holds more than twice that; every step stays in the hash-chained
        // event log as an admin event.
        let kept: usize = records.values().map(|r| r.history.len()).sum();
        if lines > COMPACT_AFTER && lines > 2 * kept {
            let mut all: Vec<&Transition> = records.values().flat_map(|r| &r.history).collect();
            all.sort_by(|a, b| a.at.cmp(&b.at));
            let mut bytes = Vec::new();
            for t in all {
                serde_json::to_writer(&mut bytes, t).map_err(io::Error::other)?;
                bytes.push(b'\n');
            }
            super::write_atomic(dir, "triage.jsonl", &bytes)?;
            skipped = 0;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A torn last line has no newline: start the next record on a fresh line.
        if file.metadata()?.len() > 0 && skipped > 0 {
            (&file).write_all(b"\n")?;
        }
        if let Some(parent) = path.parent()
            && let Ok(d) = File::open(parent)
        {
            let _ = d.sync_all();
        }
        Ok(Self {
            path: Some(path),
            inner: Mutex::new(Inner {
                records,
                file: Some(file),
            }),
            skipped,
        })
    }

    /// Where the records live, `None` in memory.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Lines skipped on open because they were not records (a torn write).
    #[must_use]
    pub fn skipped_on_open(&self) -> u64 {
        self.skipped
    }

    /// The record of `key`, if it was ever triaged.
    #[must_use]
    pub fn get(&self, key: &SuspectKey) -> Option<TriageRecord> {
        self.inner.lock().records.get(key).cloned()
    }

    /// Every record.
    #[must_use]
    pub fn all(&self) -> Vec<(SuspectKey, TriageRecord)> {
        self.inner
            .lock()
            .records
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// The state of `key` (open when never triaged).
    #[must_use]
    pub fn state(&self, key: &SuspectKey) -> TriageState {
        self.inner
            .lock()
            .records
            .get(key)
            .map_or(TriageState::Open, |r| r.state)
    }

    /// Check that `key` may go to `to` now, returning its current state. The caller does the
    /// side effects, then [`Self::commit`]s.
    ///
    /// # Errors
    /// [`TriageError::NotAllowed`] or [`TriageError::Full`].
    pub fn check(&self, key: &SuspectKey, to: TriageState) -> Result<TriageState, TriageError> {
        let inner = self.inner.lock();
        let from = inner
            .records
            .get(key)
            .map_or(TriageState::Open, |r| r.state);
        if !from.allows(to) {
            return Err(TriageError::NotAllowed { from, to });
        }
        if !inner.records.contains_key(key) && inner.records.len() >= MAX_SUSPECTS {
            return Err(TriageError::Full);
        }
        Ok(from)
    }

    /// Record `t` durably (append + fsync), then apply it.
    ///
    /// # Errors
    /// [`TriageError::Stale`] when the state moved since `t.from` was read, [`TriageError::Io`]
    /// when the line cannot be written (nothing changes then).
    pub fn commit(&self, t: Transition) -> Result<(), TriageError> {
        let mut inner = self.inner.lock();
        let actual = inner
            .records
            .get(&t.key)
            .map_or(TriageState::Open, |r| r.state);
        if actual != t.from {
            return Err(TriageError::Stale {
                expected: t.from,
                actual,
            });
        }
        if !inner.records.contains_key(&t.key) && inner.records.len() >= MAX_SUSPECTS {
            return Err(TriageError::Full);
        }
        if let (Some(file), Some(path)) = (inner.file.as_mut(), self.path.as_ref()) {
            let mut line = serde_json::to_vec(&t).map_err(|e| TriageError::Io {
                path: path.clone(),
                source: io::Error::other(e),
            })?;
            line.push(b'\n');
            file.write_all(&line)
                .and_then(|()| file.sync_data())
                .map_err(|source| TriageError::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        apply(&mut inner.records, t);
        Ok(())
    }
}

fn apply(records: &mut HashMap<SuspectKey, TriageRecord>, t: Transition) {
    let r = records
        .entry(t.key.clone())
        .or_insert_with(|| TriageRecord {
            state: TriageState::Open,
            history: Vec::new(),
        });
    r.state = t.to;
    if r.history.len() >= MAX_HISTORY {
        r.history.remove(0);
    }
    r.history.push(t);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(from: TriageState, to: TriageState, user: &str) -> Transition {
        Transition {
            key: SuspectKey {
                client: "10.0.0.1".parse().unwrap(),
                domain: "tun.example".into(),
            },
            group: "g".into(),
            from,
            to,
            user: user.into(),
            at: "2026-12-02T00:00:00Z".into(),
            note: "n".into(),
            effects: vec![],
        }
    }

    #[test]
    fn workflow_steps() {
        use TriageState::*;
        assert!(Open.allows(Acknowledged));
        assert!(Acknowledged.allows(FalsePositive));
        assert!(!Released.allows(Acknowledged));
        assert!(!FalsePositive.allows(Confirmed));
        assert!(!Acknowledged.allows(Open));
    }

    #[test]
    fn transitions_survive_reopening_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = TriageStore::open(dir.path()).unwrap();
        let t = step(TriageState::Open, TriageState::Acknowledged, "alice");
        assert_eq!(
            s.check(&t.key, TriageState::Acknowledged).unwrap(),
            TriageState::Open
        );
        s.commit(t.clone()).unwrap();
        // A stale step (someone else moved it) is refused.
        assert!(matches!(
            s.commit(step(TriageState::Open, TriageState::Released, "bob")),
            Err(TriageError::Stale { .. })
        ));
        s.commit(step(
            TriageState::Acknowledged,
            TriageState::Confirmed,
            "bob",
        ))
        .unwrap();
        drop(s);
        // A crash mid-write leaves half a line.
        let path = dir.path().join("triage.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"client\":\"10.0").unwrap();
        drop(f);
        let s = TriageStore::open(dir.path()).unwrap();
        assert_eq!(s.skipped_on_open(), 1);
        let r = s.get(&t.key).unwrap();
        assert_eq!(r.state, TriageState::Confirmed);
        assert_eq!(r.history.len(), 2);
        assert_eq!(r.history[1].user, "bob");
        s.commit(step(TriageState::Confirmed, TriageState::Released, "carol"))
            .unwrap();
        drop(s);
        let s = TriageStore::open(dir.path()).unwrap();
        assert_eq!(s.state(&t.key), TriageState::Released);
        drop(s);
        // A line cut inside a multi-byte character (a note in any language) is torn too: the
        // store opens, skips it and keeps every complete record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"note\":\"caf\xc3").unwrap();
        drop(f);
        let s = TriageStore::open(dir.path()).expect("opens past a line that is not UTF-8");
        assert_eq!(s.skipped_on_open(), 2, "the first torn line and this one");
        assert_eq!(s.state(&t.key), TriageState::Released);
    }

    #[test]
    fn a_long_file_is_compacted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triage.jsonl");
        let mut text = String::new();
        let (a, b) = (TriageState::Open, TriageState::Acknowledged);
        for i in 0..COMPACT_AFTER + 10 {
            let mut t = if i % 2 == 0 {
                step(a, b, "x")
            } else {
                step(b, a, "x")
            };
            t.at = format!("2026-12-02T00:00:00.{i:06}Z");
            text.push_str(&serde_json::to_string(&t).unwrap());
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        let s = TriageStore::open(dir.path()).unwrap();
        let r = s.get(&step(a, b, "x").key).unwrap();
        assert_eq!(r.history.len(), MAX_HISTORY);
        assert_eq!(
            r.state,
            TriageState::Open,
            "the last line was acknowledged -> open"
        );
        drop(s);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, MAX_HISTORY);
        let s = TriageStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get(&step(a, b, "x").key).unwrap().history.len(),
            MAX_HISTORY
        );
    }
}
