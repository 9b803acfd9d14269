//! The tamper-evident event log: a hash chain over the lines of `events.jsonl`.
//!
//! A security team reads the event log to learn what an agent did; someone covering their
//! tracks would edit it. With the chain on, every line links to the line before it, so a record
//! that was modified, deleted, inserted or moved is found by [`verify`](verify()), which names the first
//! one, with its file, line, seq and what happened to it.
//!
//! # Line format
//! The [`ChainEncoder`] writes each [`Event`] as its usual JSON object with the chain fields
//! added at the top level: `seq`, `prev`, `chain` (and `key_id` when keyed) first, `seal` last,
//! the event's own fields unchanged in between, so anything that reads events still can.
//!
//! ```text
//! {"seq":41,"prev":"9f2c…","chain":"hmac-sha256","key_id":"5be0c1d2a3f4e5d6","ts":"…","policy_version":3,"kind":"query",…,"seal":"07ad…"}
//! ```
//!
//! - `seq`: 0 for the first record ever written, then one more per record, across restarts
//!   ([`ChainEncoder::resume`]) and rotations.
//! - `prev`: `H(previous line)`, the hash of the previous record's whole line without its `\n`
//!   ([`GENESIS`], 64 zeros, for seq 0).
//! - `chain`: the mode, in every line so that each rotated file stands alone: `sha256`
//!   (`H` = SHA-256) or `hmac-sha256` (`H` = HMAC-SHA256 keyed with the key file).
//! - `key_id` (keyed lines only): 16 hex digits of SHA-256 over a fixed label and the key, so a
//!   verifier holding another key reports `wrong_key` rather than "everything was modified".
//!   It tells nothing useful about a 32-byte random key.
//! - `seal`: `H(the line's bytes before ,"seal":")`, always the last field, written without
//!   spaces. It authenticates the record on its own: the newest record, which no successor links
//!   to yet, is covered too, and a modified record is caught on its own line instead of being
//!   inferred from the next one.
//!
//! # What the verifier reports
//! [`verify`](verify()) reads the files in chain order ([`rotated_files`](crate::events::reader::rotated_files)) and stops at the first problem;
//! only torn lines let it carry on (up to 100 of them), because a crash makes them and the
//! chain is checked across them. Each kind comes from a specific pattern, looking up to a few hundred records ahead:
//!
//! | kind        | pattern                                                                          |
//! |-------------|----------------------------------------------------------------------------------|
//! | `modified`  | the seal does not match, and the seq is not behind; or a record's chain fields are damaged (bad hex, seal not last); or (possible only without a key) a record was re-sealed, so the next record no longer links to it |
//! | `deleted`   | the seq jumps forward and the missing seq appears nowhere ahead                  |
//! | `inserted`  | a record the chain goes around (the next record links past it to the one before), or whose seq repeats; or a whole event with no chain fields after chained records (no crash leaves a whole object) |
//! | `reordered` | the seq jumps forward and the missing seq appears further on; or the seq goes back |
//! | `torn_line` | a line that is not a record: unterminated (a crash mid-write), or one the chain continues across (a crash, then [`ChainEncoder::resume`]) |
//! | `bad_json`  | a line that is not a record, where the chain does not continue across it         |
//! | `wrong_key` | sealed with another key, unkeyed when a key was given, or keyed when none was    |
//! | `unreadable`| a file could not be read                                                         |
//!
//! Not a problem but listed in the report (`gaps`): each verified `log_gap` record, the sink's
//! own account of a time the log could not be written and what was lost then.
//!
//! The first file may start at any seq: rotation with `keep` removes the oldest files. The
//! report says where the chain starts, so an analyst can tell "starts at 0" from "starts at
//! 812"; a gap *between* files is a deletion.
//!
//! # Keyed or not, and what each protects against
//! Unkeyed (SHA-256), the chain catches accidents and careless edits, but anyone who can write
//! the log can rebuild it: re-hash every record from the change onwards and the result verifies.
//! Such a full rebuild is undetectable without a key. Keyed (HMAC-SHA256, key in a file kept
//! apart from the log and unreadable to whoever can write the log), no record can be forged,
//! changed or re-linked without the key. Neither mode can detect that the *newest* records were
//! cut off (the log simply looks shorter) or that the *oldest* were (it looks like rotation):
//! compare the last seq with `dnsward_events_written_total`, or ship lines off the host as they
//! are written. Whoever controls the running dnsward (or root) can read the key and forge
//! records; the key protects what was written before that.
//!
//! # Write-ahead discipline
//! A record is in the file whole or detectably not at all. The sink builds each batch of
//! whole lines in memory and appends it with one `write_all` to a file opened `O_APPEND`; the
//! encoder assigns seq and `prev` in the order the lines sit in the batch, so what reaches the
//! file is always a prefix of the chain. A crash (or power loss) in the middle of a batch
//! leaves whole lines followed by at most one partial line with no `\n`, or, after a power loss,
//! a tail of NUL bytes: either way a last line that is not a record, which [`verify`](verify()) reports
//! as `torn_line`, never as a record. On restart, [`ChainEncoder::resume`] ends the torn line
//! with a `\n` (so the next record starts on a line of its own) and continues from the last
//! complete record; the fragment stays in the file, reported as `torn_line` at its position,
//! and the chain is checked across it. Events that were queued but not written were never part
//! of the chain: they are lost, as events dropped from a full queue are.
//!
//! A write *error* (disk full) is different: the sink cuts the partial line and takes the
//! batch's unwritten lines back from the chain ([`LineEncoder::rewind`]): their seqs go to the
//! next records written, so what reaches the file stays one unbroken chain. Unwritten security
//! events are kept in memory and written later; what is lost for good is accounted for by a
//! `log_gap` record, chained and sealed like any other, written first once writing works again
//! (see [`crate::events::sink`]).
//!
//! # Files
//! - this file: the `[audit]` section ([`AuditConfig`]), loading the key ([`AuditKey`]), the
//!   chain mode and the encoder the sink is given ([`AuditEncoder`]).
//! - [`chain`]: the line format, hashing and HMAC ([`ChainEncoder`]).
//! - `resume`: continuing the chain from the log after a restart ([`ChainEncoder::resume`]).
//! - [`verify`](mod@verify): checking the chain over the files ([`verify()`]).
//! - [`report`]: what verification found, for people and as JSON ([`VerifyReport`]).

pub mod chain;
pub mod report;
mod resume;
#[cfg(test)]
mod testing;
pub mod verify;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config_error::ConfigProblems;
use crate::events::Event;
use crate::events::sink::{EventsConfig, JsonLines, LineEncoder, SinkKind};

pub use chain::{ChainEncoder, ChainMark};
pub use report::{ChainPoint, LogGap, Problem, ProblemKind, VerifyReport};
pub(crate) use resume::end_torn_line;
pub use verify::verify;
pub(crate) use verify::{LineRule, NotRecord};

/// `prev` of the record with seq 0.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The shortest accepted key: 256 bits, the size of HMAC-SHA256's output.
pub const MIN_KEY_BYTES: usize = 32;

/// Prefix hashed with the key for `key_id`, so the id is never a hash of the key alone.
const KEY_ID_LABEL: &[u8] = b"dnsward audit key id\0";

/// How the chain's hashes are computed, as written in each line's `chain` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChainMode {
    /// Plain SHA-256: detects accidents and careless edits, not a determined rebuild.
    #[serde(rename = "sha256")]
    Sha256,
    /// HMAC-SHA256 with the key file's key: records cannot be forged without the key.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl ChainMode {
    /// The value of the `chain` field.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ChainMode::Sha256 => "sha256",
            ChainMode::HmacSha256 => "hmac-sha256",
        }
    }

    fn from_field(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(ChainMode::Sha256),
            "hmac-sha256" => Some(ChainMode::HmacSha256),
            _ => None,
        }
    }
}

impl fmt::Display for ChainMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The chain key, read from the key file. Its `Debug` shows the key id, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey(Vec<u8>);

impl AuditKey {
    /// A key from raw bytes. [`AuditConfig::load_key`] is the way in for configured keys: it
    /// also enforces [`MIN_KEY_BYTES`].
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The key bytes, e.g. for [`verify()`].
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `key_id` written in keyed lines: 16 hex digits.
    #[must_use]
    pub fn id(&self) -> String {
        key_id(&self.0)
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKey")
            .field("id", &self.id())
            .field("len", &self.0.len())
            .finish()
    }
}

fn key_id(key: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(KEY_ID_LABEL)
        .chain_update(key)
        .finalize();
    hex::encode(&digest[..8])
}

fn default_chain() -> bool {
    true
}

/// The audit settings for the event log (the integrator places them under `[events]` or an
/// `[audit]` section).
///
/// ```toml
/// [audit]
/// chain = true                            # hash-chain the event log (default true)
/// key_file = "/etc/dnsward/audit.key"     # HMAC key; without it the chain is unkeyed SHA-256
/// ```
///
/// Make the key with `head -c 32 /dev/urandom > audit.key` (or `openssl rand -hex 32`), owned
/// by root, readable by dnsward, writable by nobody else, and kept away from the log directory:
/// the point of the key is that whoever can write the log cannot read it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// File holding the HMAC key (at least [`MIN_KEY_BYTES`] bytes; trailing whitespace such as
    /// the newline `openssl rand -hex` writes is ignored).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Whether event lines carry the chain (default true).
    #[serde(default = "default_chain")]
    pub chain: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            chain: default_chain(),
        }
    }
}

impl AuditConfig {
    /// Check the section, pushing every problem found with its key under `at` (e.g. `audit`):
    /// the key file must be readable and hold at least [`MIN_KEY_BYTES`] bytes, and must not be
    /// writable by group or others (whoever can replace the key can forge the chain). A key
    /// readable by everyone is logged as a warning, not a problem.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        let Some(path) = &self.key_file else {
            return;
        };
        let location = format!("{at}.key_file");
        if !self.chain {
            problems.push(
                location,
                "only used when chain = true; set chain = true or remove it",
            );
            return;
        }
        match read_key(path) {
            Ok(key) if key.0.len() < MIN_KEY_BYTES => problems.push(
                &location,
                format!(
                    "{} holds {} bytes; the key must be at least {MIN_KEY_BYTES}",
                    path.display(),
                    key.0.len()
                ),
            ),
            Ok(_) => {}
            Err(e) => problems.push(&location, e.to_string()),
        }
        if let Err(e) = crate::govern::secret_file::check_configured(path) {
            problems.push(&location, e);
        }
    }

    /// Read the key, when `key_file` is set and the chain is on.
    ///
    /// # Errors
    /// When the file cannot be read or holds fewer than [`MIN_KEY_BYTES`] bytes.
    pub fn load_key(&self) -> io::Result<Option<AuditKey>> {
        let Some(path) = self.key_file.as_ref().filter(|_| self.chain) else {
            return Ok(None);
        };
        let key = read_key(path)?;
        if key.0.len() < MIN_KEY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "audit key file {} holds {} bytes; at least {MIN_KEY_BYTES} are needed",
                    path.display(),
                    key.0.len()
                ),
            ));
        }
        Ok(Some(key))
    }

    /// The line encoder for the event sink: the chain, resumed from the log file, when it is on
    /// and the sink is a file; plain JSON lines otherwise (stdout goes to a collector that
    /// re-frames lines, so a chain there could not be verified).
    ///
    /// # Errors
    /// As [`AuditConfig::load_key`] and [`ChainEncoder::resume`].
    pub fn encoder(&self, events: &EventsConfig) -> io::Result<AuditEncoder> {
        // Only a file can be verified later; stdout goes to a collector that re-frames it.
        if !self.chain || events.sink != SinkKind::File {
            return Ok(AuditEncoder::Plain(JsonLines));
        }
        let key = self.load_key()?;
        let chain = match (events.sink, &events.path) {
            (SinkKind::File, Some(path)) => ChainEncoder::resume(path, key.as_ref())?,
            _ => ChainEncoder::new(key.as_ref()),
        };
        Ok(AuditEncoder::Chained(chain))
    }
}

fn read_key(path: &Path) -> io::Result<AuditKey> {
    let path = &crate::govern::secret_file::resolve_secret_path(path).map_err(io::Error::other)?;
    let mut bytes = fs::read(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read audit key file {}: {e}", path.display()),
        )
    })?;
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    Ok(AuditKey(bytes))
}

/// The encoder [`AuditConfig::encoder`] picks, so the sink's type does not depend on the
/// configuration.
#[derive(Debug)]
pub enum AuditEncoder {
    /// One JSON object per line, no chain.
    Plain(JsonLines),
    /// The hash chain.
    Chained(ChainEncoder),
}

impl LineEncoder for AuditEncoder {
    type Mark = Option<chain::ChainMark>;

    fn mark(&self) -> Self::Mark {
        match self {
            AuditEncoder::Plain(_) => None,
            AuditEncoder::Chained(e) => Some(e.mark()),
        }
    }

    fn rewind(&mut self, mark: Self::Mark) {
        if let (AuditEncoder::Chained(e), Some(mark)) = (self, mark) {
            e.rewind(mark);
        }
    }

    fn encode_line(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            AuditEncoder::Plain(e) => e.encode_line(event, out),
            AuditEncoder::Chained(e) => e.encode_line(event, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::sink_config;
    use super::*;

    #[test]
    fn config_defaults_validation_and_key_loading() {
        use std::os::unix::fs::PermissionsExt;

        let cfg: AuditConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, AuditConfig::default());
        assert!(cfg.chain);
        assert!(toml::from_str::<AuditConfig>("keyfile = \"k\"").is_err());
        let mut problems = ConfigProblems::default();
        cfg.validate("audit", &mut problems);
        assert!(problems.is_empty());
        assert_eq!(cfg.load_key().unwrap(), None);

        let dir = tempfile::tempdir().unwrap();
        let with_key = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            AuditConfig {
                key_file: Some(path),
                chain: true,
            }
        };
        let problems_of = |cfg: &AuditConfig| {
            let mut problems = ConfigProblems::default();
            cfg.validate("audit", &mut problems);
            problems.problems
        };

        // `openssl rand -hex 32` output: 64 hex digits and a newline, which is not key.
        let good = with_key("good.key", &format!("{}\n", "ab".repeat(32)), 0o600);
        assert!(problems_of(&good).is_empty());
        assert_eq!(good.load_key().unwrap().unwrap().as_bytes().len(), 64);

        let short = with_key("short.key", "too short\n", 0o600);
        let found = problems_of(&short);
        assert_eq!(found[0].location, "audit.key_file");
        assert!(found[0].message.contains("at least 32"), "{}", found[0]);
        assert!(short.load_key().is_err());

        let writable = with_key("writable.key", &"k".repeat(32), 0o620);
        assert!(
            problems_of(&writable)[0]
                .message
                .contains("writable by group")
        );

        let missing = AuditConfig {
            key_file: Some(dir.path().join("nope.key")),
            chain: true,
        };
        assert!(problems_of(&missing)[0].message.contains("cannot read"));

        let unused = AuditConfig {
            chain: false,
            ..good.clone()
        };
        assert!(
            problems_of(&unused)[0]
                .message
                .contains("only used when chain")
        );
        assert_eq!(unused.load_key().unwrap(), None);
        let events = sink_config(&dir.path().join("events.jsonl"), 4096, 1);
        assert!(matches!(
            unused.encoder(&events).unwrap(),
            AuditEncoder::Plain(_)
        ));
    }
}
