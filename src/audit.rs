//! The tamper-evident event log: a hash chain over the lines of `events.jsonl`.
//!
//! A security team reads the event log to learn what an agent did; someone covering their
//! tracks would edit it. With the chain on, every line links to the line before it, so a record
//! that was modified, deleted, inserted or moved is found by [`verify`], which names the first
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
//! [`verify`] reads the files in chain order ([`chain_files`]) and stops at the first problem;
//! only torn lines let it carry on (up to 100 of them), because a crash makes them and the
//! chain is checked across them. Each kind comes from a specific pattern, looking up to a few hundred records ahead:
//!
//! | kind        | pattern                                                                          |
//! |-------------|----------------------------------------------------------------------------------|
//! | `modified`  | the seal does not match, and the seq is not behind; or a record's chain fields are damaged (bad hex, seal not last); or (possible only without a key) a record was re-sealed, so the next record no longer links to it |
//! | `deleted`   | the seq jumps forward and the missing seq appears nowhere ahead                  |
//! | `inserted`  | a record the chain goes around (the next record links past it to the one before), or whose seq repeats |
//! | `reordered` | the seq jumps forward and the missing seq appears further on; or the seq goes back |
//! | `torn_line` | a line that is not a record: unterminated (a crash mid-write), or one the chain continues across (a crash, then [`ChainEncoder::resume`]) |
//! | `bad_json`  | a line that is not a record, where the chain does not continue across it         |
//! | `wrong_key` | sealed with another key, unkeyed when a key was given, or keyed when none was    |
//! | `unreadable`| a file could not be read                                                         |
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
//! a tail of NUL bytes: either way a last line that is not a record, which [`verify`] reports
//! as `torn_line`, never as a record. On restart, [`ChainEncoder::resume`] ends the torn line
//! with a `\n` (so the next record starts on a line of its own) and continues from the last
//! complete record; the fragment stays in the file, reported as `torn_line` at its position,
//! and the chain is checked across it. Events that were queued but not written were never part
//! of the chain: they are lost, as events dropped from a full queue are.
//!
//! A write *error* (disk full) is different: the sink cuts the partial line and drops the
//! batch's unwritten lines, which had already been given seqs, so the file shows a seq gap that
//! [`verify`] reports as `deleted`, alongside `dnsward_events_dropped_total{cause="io"}`.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config_error::ConfigProblems;
use crate::events::Event;
use crate::events::sink::{EventsConfig, JsonLines, LineEncoder, SinkKind};

/// `prev` of the record with seq 0.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The shortest accepted key: 256 bits, the size of HMAC-SHA256's output.
pub const MIN_KEY_BYTES: usize = 32;

/// What precedes the seal's hex digits; the seal covers everything before it.
const SEAL_OPEN: &[u8] = b",\"seal\":\"";
/// `,"seal":"` + 64 hex digits + `"}`.
const SEAL_SUFFIX_LEN: usize = SEAL_OPEN.len() + 64 + 2;

/// Lines longer than this are not records (events are a few hundred bytes); the readers never
/// hold more than this of one line, so a corrupt file cannot exhaust memory.
const MAX_LINE_BYTES: usize = 1 << 20;

/// How many lines the verifier looks ahead to tell a reorder from a deletion, or an insertion
/// from a modification.
const LOOKAHEAD: usize = 256;

/// Torn lines reported before verification gives up: more than this is not a few crashes but a
/// file that is not a chain (e.g. a plain log from before the chain was turned on).
const MAX_TORN_LINES: usize = 100;

/// Bytes read per step when scanning a file backwards for its last record.
const TAIL_CHUNK: u64 = 64 * 1024;

/// Prefix hashed with the key for `key_id`, so the id is never a hash of the key alone.
const KEY_ID_LABEL: &[u8] = b"dnsward audit key id\0";

type HmacSha256 = Hmac<Sha256>;

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

    /// The key bytes, e.g. for [`verify`].
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

/// `H`: SHA-256, or HMAC-SHA256 prepared with the key once and cloned per use.
#[derive(Clone)]
enum Hasher {
    Sha256,
    Hmac(Box<HmacSha256>),
}

impl Hasher {
    fn new(key: Option<&[u8]>) -> Self {
        match key {
            None => Hasher::Sha256,
            Some(key) => Hasher::Hmac(Box::new(
                <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length"),
            )),
        }
    }

    fn mode(&self) -> ChainMode {
        match self {
            Hasher::Sha256 => ChainMode::Sha256,
            Hasher::Hmac(_) => ChainMode::HmacSha256,
        }
    }

    fn digest(&self, bytes: &[u8]) -> [u8; 32] {
        match self {
            Hasher::Sha256 => Sha256::digest(bytes).into(),
            Hasher::Hmac(mac) => {
                let mut mac = (**mac).clone();
                mac.update(bytes);
                mac.finalize().into_bytes().into()
            }
        }
    }
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

/// The [`LineEncoder`] that makes the event log a hash chain (see the module docs for the line
/// format). It keeps the next seq and the previous line's hash; the sink calls it in write order
/// from one task, so the chain follows the file.
#[derive(Clone)]
pub struct ChainEncoder {
    hasher: Hasher,
    /// Written in keyed lines; `None` when unkeyed.
    key_id: Option<String>,
    /// Seq of the next record.
    next_seq: u64,
    /// `H` of the last line written (the genesis value before the first).
    prev: [u8; 32],
}

impl fmt::Debug for ChainEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainEncoder")
            .field("mode", &self.hasher.mode())
            .field("key_id", &self.key_id)
            .field("next_seq", &self.next_seq)
            .field("prev", &hex::encode(self.prev))
            .finish()
    }
}

impl ChainEncoder {
    /// A new chain from seq 0, keyed with `key` when given.
    #[must_use]
    pub fn new(key: Option<&AuditKey>) -> Self {
        Self {
            hasher: Hasher::new(key.map(AuditKey::as_bytes)),
            key_id: key.map(AuditKey::id),
            next_seq: 0,
            prev: [0; 32],
        }
    }

    /// Continue the chain of the event log at `path` (the current file, e.g. `events.jsonl`):
    /// from its last complete record, or, when it is missing, empty or holds no record, from the
    /// newest rotated file that does. With no record anywhere the chain starts at seq 0.
    ///
    /// A torn last line (a crash mid-write) is ended with a `\n`, so the next record starts on a
    /// line of its own and the fragment stays where [`verify`] reports it. A change of key or
    /// mode, or a last record whose seal does not match, is logged as a warning: the chain
    /// continues, and [`verify`] will report the spot.
    ///
    /// # Errors
    /// When a log file exists but cannot be read, or the torn line cannot be ended.
    pub fn resume(path: &Path, key: Option<&AuditKey>) -> io::Result<Self> {
        let mut encoder = Self::new(key);
        end_torn_line(path)?;
        for file in chain_files(path).iter().rev() {
            let Some((line, record)) = last_record(file)? else {
                continue;
            };
            encoder.next_seq = record.seq.saturating_add(1);
            encoder.prev = encoder.hasher.digest(&line);
            encoder.warn_on_mismatch(file, &line, &record);
            return Ok(encoder);
        }
        Ok(encoder)
    }

    /// Seq the next record will get.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether lines are keyed.
    #[must_use]
    pub fn mode(&self) -> ChainMode {
        self.hasher.mode()
    }

    fn warn_on_mismatch(&self, file: &Path, line: &[u8], record: &ChainFields) {
        if record.mode != self.hasher.mode() || record.key_id != self.key_id {
            tracing::warn!(
                file = %file.display(),
                seq = record.seq,
                was = %record.mode,
                now = %self.hasher.mode(),
                "event chain continues with a different key or mode; verify the older records \
                 with the old key"
            );
        } else if self.hasher.digest(&line[..line.len() - SEAL_SUFFIX_LEN]) != record.seal {
            tracing::warn!(
                file = %file.display(),
                seq = record.seq,
                "the last event record does not match its seal: the log changed while dnsward \
                 was stopped? Run the chain verifier"
            );
        }
    }
}

impl LineEncoder for ChainEncoder {
    fn encode_line(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let start = out.len();
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(self.next_seq.to_string().as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        push_hex(out, &self.prev);
        out.extend_from_slice(b"\",\"chain\":\"");
        out.extend_from_slice(self.hasher.mode().as_str().as_bytes());
        out.push(b'"');
        if let Some(id) = &self.key_id {
            out.extend_from_slice(b",\"key_id\":\"");
            out.extend_from_slice(id.as_bytes());
            out.push(b'"');
        }
        let body = out.len();
        if let Err(e) = serde_json::to_writer(&mut *out, event) {
            out.truncate(start);
            return Err(e);
        }
        // The event is one JSON object: splice its fields in after ours, dropping its braces.
        if out.get(body) != Some(&b'{') || out.last() != Some(&b'}') {
            out.truncate(start);
            return Err(serde::ser::Error::custom("event is not a JSON object"));
        }
        if out.len() - body == 2 {
            out.truncate(body);
        } else {
            out[body] = b',';
            out.pop();
        }
        let seal = self.hasher.digest(&out[start..]);
        out.extend_from_slice(SEAL_OPEN);
        push_hex(out, &seal);
        out.extend_from_slice(b"\"}");
        self.prev = self.hasher.digest(&out[start..]);
        self.next_seq = self.next_seq.saturating_add(1);
        out.push(b'\n');
        Ok(())
    }
}

/// The chain fields of one line, as the verifier and `resume` read them.
#[derive(Debug)]
struct ChainFields {
    seq: u64,
    prev: [u8; 32],
    mode: ChainMode,
    key_id: Option<String>,
    seal: [u8; 32],
}

/// What serde sees; the event's own fields are ignored. Duplicate keys are an error, so an
/// event field can never shadow a chain field.
#[derive(Deserialize)]
struct RawChainFields {
    seq: u64,
    prev: String,
    chain: String,
    #[serde(default)]
    key_id: Option<String>,
    seal: String,
}

fn decode_hash(field: &str, hex_text: &str) -> Result<[u8; 32], String> {
    let mut out = [0; 32];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|_| format!("`{field}` is not 64 hex digits"))?;
    Ok(out)
}

/// Just the seq of a line that is not a whole record.
#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Read a line as a chain record, or say why it is not one.
fn parse_record(line: &[u8]) -> Result<ChainFields, String> {
    let raw: RawChainFields = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let mode = ChainMode::from_field(&raw.chain)
        .ok_or_else(|| format!("unknown chain mode {:?}", raw.chain))?;
    let prev = decode_hash("prev", &raw.prev)?;
    let seal = decode_hash("seal", &raw.seal)?;
    // The seal covers the bytes before it, so it must be the last field, written exactly as
    // the encoder writes it.
    let n = line.len();
    if n < SEAL_SUFFIX_LEN
        || !line.ends_with(b"\"}")
        || &line[n - SEAL_SUFFIX_LEN..n - 66] != SEAL_OPEN
        || &line[n - 66..n - 2] != raw.seal.as_bytes()
    {
        return Err("`seal` is not the last field".into());
    }
    Ok(ChainFields {
        seq: raw.seq,
        prev,
        mode,
        key_id: raw.key_id,
        seal,
    })
}

/// End an unterminated last line with `\n`, so the next record starts on a line of its own.
fn end_torn_line(path: &Path) -> io::Result<()> {
    let mut file = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, path)),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        tracing::warn!(
            file = %path.display(),
            "event log ends with a torn line (a crash while writing); it stays in the file and \
             the chain continues on the next line"
        );
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok(())
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The last complete line of `path` that is a chain record, with its fields.
fn last_record(path: &Path) -> io::Result<Option<(Vec<u8>, ChainFields)>> {
    let Some(mut lines) = ReverseLines::open(path).map_err(|e| with_path(e, path))? else {
        return Ok(None);
    };
    while let Some(line) = lines.next_line().map_err(|e| with_path(e, path))? {
        if let Some(line) = line
            && let Ok(record) = parse_record(&line)
        {
            return Ok(Some((line, record)));
        }
    }
    Ok(None)
}

/// The complete (`\n`-terminated) lines of a file, last first, read in chunks from the end so
/// that resuming costs one read however large the file. An unterminated tail is skipped; a line
/// longer than [`MAX_LINE_BYTES`] comes back as `None`.
struct ReverseLines {
    file: File,
    /// File offset of `pending[0]`.
    start: u64,
    /// Bytes not yet returned; they end just before the `\n` of the next line to return.
    pending: Vec<u8>,
    /// The line being gathered outgrew the limit and its bytes were let go.
    oversize: bool,
    /// The first line of the file has been returned.
    exhausted: bool,
}

impl ReverseLines {
    fn open(path: &Path) -> io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let start = file.metadata()?.len();
        let mut lines = Self {
            file,
            start,
            pending: Vec::new(),
            oversize: false,
            exhausted: false,
        };
        // What follows the last `\n`: empty for a file that ends with one, a torn line if not;
        // with no `\n` at all it is the whole file, and there are no complete lines.
        lines.next_line()?;
        Ok(Some(lines))
    }

    fn next_line(&mut self) -> io::Result<Option<Option<Vec<u8>>>> {
        loop {
            if let Some(i) = self.pending.iter().rposition(|&b| b == b'\n') {
                let line = self.pending.split_off(i + 1);
                self.pending.pop();
                return Ok(Some(self.finish_line(line)));
            }
            if self.start == 0 {
                if self.exhausted {
                    return Ok(None);
                }
                self.exhausted = true;
                let line = std::mem::take(&mut self.pending);
                return Ok(Some(self.finish_line(line)));
            }
            if self.pending.len() > MAX_LINE_BYTES {
                // Keep looking for where this line starts, without keeping its bytes.
                self.pending.clear();
                self.oversize = true;
            }
            let n = TAIL_CHUNK.min(self.start);
            self.start -= n;
            let mut chunk = vec![0; usize::try_from(n).map_err(io::Error::other)?];
            self.file.seek(SeekFrom::Start(self.start))?;
            self.file.read_exact(&mut chunk)?;
            chunk.extend_from_slice(&self.pending);
            self.pending = chunk;
        }
    }

    fn finish_line(&mut self, line: Vec<u8>) -> Option<Vec<u8>> {
        let oversize = std::mem::take(&mut self.oversize) || line.len() > MAX_LINE_BYTES;
        (!oversize).then_some(line)
    }
}

/// The files of the event log whose current file is `current`, oldest first: `current.N` …
/// `current.1`, then `current`, those that exist. This is the order [`verify`] wants.
#[must_use]
pub fn chain_files(current: &Path) -> Vec<PathBuf> {
    let dir = match current.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(name), Ok(entries)) = (
        current.file_name().and_then(|n| n.to_str()),
        fs::read_dir(dir),
    ) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(suffix) = file_name
                .to_str()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|f| f.strip_prefix('.'))
            else {
                continue;
            };
            // Exactly the sink's names: `.1`, `.2`, … (not `.01`, `.bak`).
            if let Ok(n) = suffix.parse::<u32>()
                && n > 0
                && n.to_string() == suffix
            {
                rotated.push((n, current.with_file_name(&file_name)));
            }
        }
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if current.exists() {
        files.push(current.to_path_buf());
    }
    files
}

/// What went wrong at one spot of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The record's content changed after it was written.
    Modified,
    /// Records are missing (a seq gap).
    Deleted,
    /// A record that is not part of the chain was added.
    Inserted,
    /// Records are out of seq order.
    Reordered,
    /// An incomplete line, as a crash mid-write leaves.
    TornLine,
    /// A line that is not a chain record, where the chain does not continue across it.
    BadJson,
    /// Sealed with another key, or keyed when no key was given, or the reverse.
    WrongKey,
    /// A file could not be read.
    Unreadable,
}

impl ProblemKind {
    /// The stable name, as in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Modified => "modified",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::TornLine => "torn_line",
            ProblemKind::BadJson => "bad_json",
            ProblemKind::WrongKey => "wrong_key",
            ProblemKind::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem, where it is and why it was classified so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What happened.
    pub kind: ProblemKind,
    /// The file, as given to [`verify`].
    pub file: PathBuf,
    /// Line number in that file, from 1 (0 when the file could not be opened).
    pub line: u64,
    /// The seq of the record on that line, if it is one.
    pub seq: Option<u64>,
    /// The seq the chain expected on that line, once it has started.
    pub expected_seq: Option<u64>,
    /// The evidence, in words.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.kind)?;
        match (self.seq, self.expected_seq) {
            (Some(s), Some(e)) if s != e => write!(f, " (seq {s}, expected {e})")?,
            (Some(s), _) => write!(f, " (seq {s})")?,
            (None, Some(e)) => write!(f, " (expected seq {e})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.detail)
    }
}

/// A record's place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainPoint {
    /// The file, as given to [`verify`].
    pub file: PathBuf,
    /// Line number in that file, from 1.
    pub line: u64,
    /// The record's seq.
    pub seq: u64,
}

/// What [`verify`] found. `Display` is for people; `Serialize` is for `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Every record verified and nothing else turned up.
    pub ok: bool,
    /// Verification reached the end of the last file: nothing worse than torn lines was found
    /// (`!ok && complete` means torn lines only).
    pub complete: bool,
    /// The files checked, in the order given.
    pub files: Vec<PathBuf>,
    /// The mode of the first record.
    pub mode: Option<ChainMode>,
    /// Records verified (before the first problem, if any).
    pub records: u64,
    /// Where the chain starts: seq 0, or later when rotation removed the oldest files.
    pub first: Option<ChainPoint>,
    /// The last record verified.
    pub last: Option<ChainPoint>,
    /// Torn lines, and the problem verification stopped at (always last), if any.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// The first problem found.
    #[must_use]
    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }

    /// Whether the chain starts after seq 0 (older files rotated away, or cut off).
    #[must_use]
    pub fn starts_mid_way(&self) -> bool {
        self.first.as_ref().is_some_and(|p| p.seq > 0)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} record(s) verified",
            match (self.ok, self.complete) {
                (true, _) => "OK",
                (false, true) => "TORN LINES",
                (false, false) => "FAILED",
            },
            self.records
        )?;
        if let (Some(first), Some(last)) = (&self.first, &self.last) {
            write!(f, ", seq {} to {}", first.seq, last.seq)?;
        }
        if let Some(mode) = self.mode {
            write!(f, ", {mode}")?;
        }
        writeln!(f, ", {} file(s)", self.files.len())?;
        if let Some(first) = &self.first {
            if first.seq == 0 {
                writeln!(
                    f,
                    "  chain starts at seq 0 ({}:{})",
                    first.file.display(),
                    first.line
                )?;
            } else {
                writeln!(
                    f,
                    "  chain starts mid-way at seq {} ({}:{}): older records were rotated away \
                     or removed",
                    first.seq,
                    first.file.display(),
                    first.line
                )?;
            }
        }
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        if !self.complete {
            writeln!(f, "  verification stopped at the first problem")?;
        }
        Ok(())
    }
}

/// Check the hash chain over `paths`, given in chain order (oldest first, as [`chain_files`]
/// lists them), with the key when the log is keyed. Stops at the first problem other than a
/// torn line; see the module docs for how each kind is told apart.
#[must_use]
pub fn verify(paths: &[PathBuf], key: Option<&[u8]>) -> VerifyReport {
    let hasher = Hasher::new(key);
    let mut verifier = Verifier {
        key_id: key.map(key_id),
        anchor: None,
        before_anchor: None,
        report: VerifyReport {
            ok: false,
            complete: false,
            files: paths.to_vec(),
            mode: None,
            records: 0,
            first: None,
            last: None,
            problems: Vec::new(),
        },
    };
    let mut lines = LineReader {
        paths,
        hasher: &hasher,
        file: 0,
        reader: None,
        line_no: 0,
        buf: Vec::new(),
    };
    let mut ahead: VecDeque<Entry> = VecDeque::new();
    let mut read_error = None;
    let mut stopped = false;
    loop {
        while read_error.is_none() && ahead.len() <= LOOKAHEAD {
            match lines.next_entry() {
                Ok(Some(entry)) => ahead.push_back(entry),
                Ok(None) => break,
                Err(e) => read_error = Some(e),
            }
        }
        let Some(entry) = ahead.pop_front() else {
            break;
        };
        if verifier.step(entry, &ahead) == Flow::Stop {
            stopped = true;
            break;
        }
    }
    let complete = !stopped && read_error.is_none();
    if !stopped && let Some((file, line, e)) = read_error {
        verifier.report.problems.push(Problem {
            kind: ProblemKind::Unreadable,
            file: paths[file].clone(),
            line,
            seq: None,
            expected_seq: None,
            detail: e.to_string(),
        });
    }
    let mut report = verifier.report;
    report.complete = complete;
    report.ok = complete && report.problems.is_empty();
    report
}

/// One line of the log, read and hashed.
struct Entry {
    file: usize,
    line: u64,
    body: Body,
}

enum Body {
    Record(Record),
    NotRecord {
        why: String,
        /// Whether the line ended with `\n`.
        terminated: bool,
        /// The `seq`, when the line is a JSON object with one: a record whose chain fields
        /// were damaged, rather than a torn line or a foreign one.
        seq: Option<u64>,
    },
}

impl Entry {
    fn record(&self) -> Option<&Record> {
        match &self.body {
            Body::Record(r) => Some(r),
            Body::NotRecord { .. } => None,
        }
    }
}

struct Record {
    fields: ChainFields,
    /// The seal matches the content (under the verifier's key).
    sealed: bool,
    /// `H(line)`, what the next record's `prev` should be.
    hash: [u8; 32],
}

/// Reads the files in turn, line by line, each line at most [`MAX_LINE_BYTES`].
struct LineReader<'a> {
    paths: &'a [PathBuf],
    hasher: &'a Hasher,
    file: usize,
    reader: Option<BufReader<File>>,
    line_no: u64,
    buf: Vec<u8>,
}

impl LineReader<'_> {
    /// The next line, or the file index, line number and error when a file cannot be read.
    fn next_entry(&mut self) -> Result<Option<Entry>, (usize, u64, io::Error)> {
        loop {
            let Some(reader) = self.reader.as_mut() else {
                let Some(path) = self.paths.get(self.file) else {
                    return Ok(None);
                };
                let file = File::open(path).map_err(|e| (self.file, 0, e))?;
                self.reader = Some(BufReader::new(file));
                self.line_no = 0;
                continue;
            };
            let Some(ending) = read_capped_line(reader, &mut self.buf)
                .map_err(|e| (self.file, self.line_no, e))?
            else {
                self.reader = None;
                self.file += 1;
                continue;
            };
            self.line_no += 1;
            let body = if ending.oversize {
                Body::NotRecord {
                    why: format!("line longer than {MAX_LINE_BYTES} bytes"),
                    terminated: ending.terminated,
                    seq: None,
                }
            } else {
                match parse_record(&self.buf) {
                    Ok(fields) => {
                        let prefix = &self.buf[..self.buf.len() - SEAL_SUFFIX_LEN];
                        Body::Record(Record {
                            sealed: self.hasher.digest(prefix) == fields.seal,
                            hash: self.hasher.digest(&self.buf),
                            fields,
                        })
                    }
                    Err(why) => Body::NotRecord {
                        why,
                        terminated: ending.terminated,
                        seq: serde_json::from_slice::<SeqOnly>(&self.buf)
                            .ok()
                            .map(|s| s.seq),
                    },
                }
            };
            return Ok(Some(Entry {
                file: self.file,
                line: self.line_no,
                body,
            }));
        }
    }
}

struct LineEnding {
    terminated: bool,
    oversize: bool,
}

/// Read one line into `line` without its `\n`, keeping at most [`MAX_LINE_BYTES`]; `None` at
/// the end of the file.
fn read_capped_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
) -> io::Result<Option<LineEnding>> {
    line.clear();
    let mut oversize = false;
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any.then_some(LineEnding {
                terminated: false,
                oversize,
            }));
        }
        any = true;
        let (end, used, terminated) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, i + 1, true),
            None => (buf.len(), buf.len(), false),
        };
        if line.len() + end > MAX_LINE_BYTES {
            oversize = true;
        } else {
            line.extend_from_slice(&buf[..end]);
        }
        reader.consume(used);
        if terminated {
            return Ok(Some(LineEnding {
                terminated: true,
                oversize,
            }));
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The last record accepted into the chain.
#[derive(Clone)]
struct Anchor {
    seq: u64,
    hash: [u8; 32],
    file: usize,
    line: u64,
}

struct Verifier {
    key_id: Option<String>,
    anchor: Option<Anchor>,
    /// The record accepted before `anchor`, to tell when `anchor` itself was inserted.
    before_anchor: Option<Anchor>,
    report: VerifyReport,
}

impl Verifier {
    fn step(&mut self, entry: Entry, ahead: &VecDeque<Entry>) -> Flow {
        let next = ahead.iter().find_map(Entry::record);
        let expected = self.anchor.as_ref().map(|a| a.seq.saturating_add(1));
        match &entry.body {
            Body::NotRecord {
                why,
                terminated,
                seq,
            } => {
                // Whether the next record carries on from the last good one, across this line.
                let across = match (&self.anchor, next) {
                    (_, None) => None,
                    (None, Some(_)) => Some(true),
                    (Some(a), Some(n)) => {
                        Some(n.fields.seq == a.seq.saturating_add(1) && n.fields.prev == a.hash)
                    }
                };
                let (kind, detail) = match (terminated, across, seq) {
                    (false, _, _) => (
                        ProblemKind::TornLine,
                        format!("incomplete line, as a crash while writing leaves ({why})"),
                    ),
                    (true, Some(true), None) => (
                        ProblemKind::TornLine,
                        format!(
                            "not a record, and the chain continues across it, as after a crash \
                             and a restart ({why})"
                        ),
                    ),
                    (true, None, None) => (
                        ProblemKind::TornLine,
                        format!(
                            "not a record, at the end of the log, as after a crash and a restart \
                             that wrote nothing more ({why})"
                        ),
                    ),
                    (true, Some(true), Some(_)) => (
                        ProblemKind::Inserted,
                        format!("a damaged record that the chain goes around ({why})"),
                    ),
                    (true, _, Some(_)) => (
                        ProblemKind::Modified,
                        format!("a record whose chain fields were damaged ({why})"),
                    ),
                    (true, Some(false), None) => (
                        ProblemKind::BadJson,
                        format!("not a record, and the chain does not continue across it ({why})"),
                    ),
                };
                let (kind, detail) = if kind == ProblemKind::TornLine
                    && self.report.problems.len() >= MAX_TORN_LINES
                {
                    (
                        ProblemKind::BadJson,
                        format!(
                            "more than {MAX_TORN_LINES} lines that are not records: not a \
                             chained log? ({why})"
                        ),
                    )
                } else {
                    (kind, detail)
                };
                self.problem(&entry, kind, *seq, expected, detail);
                if kind == ProblemKind::TornLine {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
            Body::Record(record) => self.check_record(&entry, record, next, ahead),
        }
    }

    fn check_record(
        &mut self,
        entry: &Entry,
        record: &Record,
        next: Option<&Record>,
        ahead: &VecDeque<Entry>,
    ) -> Flow {
        let seq = record.fields.seq;
        if let Some(why) = self.key_mismatch(&record.fields) {
            let expected = self.anchor.as_ref().map(|a| a.seq.saturating_add(1));
            self.problem(entry, ProblemKind::WrongKey, Some(seq), expected, why);
            return Flow::Stop;
        }
        let Some(anchor) = self.anchor.clone() else {
            // The first record starts the chain, at seq 0 or mid-way after rotation.
            if !record.sealed {
                self.problem(
                    entry,
                    ProblemKind::Modified,
                    Some(seq),
                    None,
                    "the seal does not match the record's content".into(),
                );
                return Flow::Stop;
            }
            if seq == 0 && record.fields.prev != [0; 32] {
                self.problem(
                    entry,
                    ProblemKind::Modified,
                    Some(seq),
                    None,
                    "seq 0 must link to the genesis value".into(),
                );
                return Flow::Stop;
            }
            self.report.mode = Some(record.fields.mode);
            self.report.first = Some(self.point(entry, seq));
            self.accept(entry, record);
            return Flow::Continue;
        };
        let expected = anchor.seq.saturating_add(1);
        let links_to_anchor =
            |r: &Record| r.sealed && r.fields.seq == expected && r.fields.prev == anchor.hash;

        if !record.sealed {
            let (kind, why) = if next.is_some_and(links_to_anchor) {
                (
                    ProblemKind::Inserted,
                    "the seal does not match, and the next record links past it to the one before",
                )
            } else if seq <= anchor.seq {
                (
                    ProblemKind::Inserted,
                    "the seal does not match, and its seq repeats or goes back",
                )
            } else {
                (
                    ProblemKind::Modified,
                    "the seal does not match the record's content",
                )
            };
            self.problem(entry, kind, Some(seq), Some(expected), why.into());
            return Flow::Stop;
        }
        if seq == expected {
            if record.fields.prev == anchor.hash {
                self.accept(entry, record);
                return Flow::Continue;
            }
            if next.is_some_and(links_to_anchor) {
                self.problem(entry, ProblemKind::Inserted, Some(seq), Some(expected),
                    "it does not link to the record before it, and the next record, with the same seq, does".into());
            } else {
                // Sealed, right seq, wrong link: the record before was changed and re-sealed,
                // which takes no key in an unkeyed chain.
                self.blame_anchor(ProblemKind::Modified, format!(
                    "the next record (line {}, seq {seq}) no longer links to this one: it was changed and re-sealed",
                    entry.line
                ));
            }
            return Flow::Stop;
        }
        if seq > expected {
            let later = ahead.iter().find(|e| {
                e.record()
                    .is_some_and(|r| r.sealed && r.fields.seq == expected)
            });
            if let Some(later) = later {
                let at = self.report.files[later.file].display().to_string();
                self.problem(
                    entry,
                    ProblemKind::Reordered,
                    Some(seq),
                    Some(expected),
                    format!(
                        "seq {seq} comes before seq {expected}, which is at {at}:{}",
                        later.line
                    ),
                );
            } else {
                let missing = if seq - expected == 1 {
                    format!("record {expected} is missing")
                } else {
                    format!(
                        "records {expected} to {} ({} records) are missing",
                        seq - 1,
                        seq - expected
                    )
                };
                let between = if entry.file != anchor.file && entry.line == 1 {
                    format!(
                        ", between {} and this file",
                        self.report.files[anchor.file].display()
                    )
                } else {
                    String::new()
                };
                self.problem(
                    entry,
                    ProblemKind::Deleted,
                    Some(seq),
                    Some(expected),
                    format!("{missing}{between}"),
                );
            }
            return Flow::Stop;
        }
        if seq == anchor.seq
            && let Some(before) = &self.before_anchor
            && before.seq.saturating_add(1) == seq
            && record.fields.prev == before.hash
        {
            // This record and the one before it share a seq and both link to the same record:
            // the genuine one is this, which the rest of the chain follows.
            self.blame_anchor(ProblemKind::Inserted, format!(
                "the next record (line {}) has the same seq and links to the record before this one",
                entry.line
            ));
        } else if seq == anchor.seq {
            self.problem(
                entry,
                ProblemKind::Inserted,
                Some(seq),
                Some(expected),
                format!("seq {seq} repeats"),
            );
        } else {
            self.problem(entry, ProblemKind::Reordered, Some(seq), Some(expected), format!(
                "seq goes back from {} to {seq}: records out of order, or files given out of order",
                anchor.seq
            ));
        }
        Flow::Stop
    }

    /// Why this record's mode or key is not the verifier's, if it is not.
    fn key_mismatch(&self, fields: &ChainFields) -> Option<String> {
        match (self.key_id.as_deref(), fields.mode) {
            (Some(ours), ChainMode::HmacSha256) => match fields.key_id.as_deref() {
                Some(theirs) if theirs == ours => None,
                Some(theirs) => Some(format!(
                    "sealed with another key (key id {theirs}; the given key's is {ours})"
                )),
                None => Some("keyed record without a key_id".into()),
            },
            (Some(_), ChainMode::Sha256) => Some(
                "the record is unkeyed (sha256) but a key was given: written without the key, or \
                 rewritten by someone without it"
                    .into(),
            ),
            (None, ChainMode::HmacSha256) => {
                Some("the record is keyed (hmac-sha256): verifying needs the key file".into())
            }
            (None, ChainMode::Sha256) => None,
        }
    }

    fn point(&self, entry: &Entry, seq: u64) -> ChainPoint {
        ChainPoint {
            file: self.report.files[entry.file].clone(),
            line: entry.line,
            seq,
        }
    }

    fn accept(&mut self, entry: &Entry, record: &Record) {
        self.before_anchor = self.anchor.replace(Anchor {
            seq: record.fields.seq,
            hash: record.hash,
            file: entry.file,
            line: entry.line,
        });
        self.report.records += 1;
        self.report.last = Some(self.point(entry, record.fields.seq));
    }

    /// Report the last accepted record, which the current one shows to be bad, and take it back.
    fn blame_anchor(&mut self, kind: ProblemKind, detail: String) {
        let Some(anchor) = self.anchor.take() else {
            return;
        };
        let before = self.before_anchor.take();
        self.report.records -= 1;
        self.report.last = before.as_ref().map(|b| ChainPoint {
            file: self.report.files[b.file].clone(),
            line: b.line,
            seq: b.seq,
        });
        if self.report.records == 0 {
            self.report.first = None;
            self.report.mode = None;
        }
        self.report.problems.push(Problem {
            kind,
            file: self.report.files[anchor.file].clone(),
            line: anchor.line,
            seq: Some(anchor.seq),
            expected_seq: before.map(|b| b.seq.saturating_add(1)),
            detail,
        });
    }

    fn problem(
        &mut self,
        entry: &Entry,
        kind: ProblemKind,
        seq: Option<u64>,
        expected_seq: Option<u64>,
        detail: String,
    ) {
        self.report.problems.push(Problem {
            kind,
            file: self.report.files[entry.file].clone(),
            line: entry.line,
            seq,
            expected_seq,
            detail,
        });
    }
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
        #[cfg(unix)]
        if let Ok(meta) = fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o022 != 0 {
                problems.push(
                    &location,
                    format!(
                        "{} is writable by group or others (mode {:o}): whoever can replace the \
                         key can forge the chain; chmod go-w",
                        path.display(),
                        mode & 0o777
                    ),
                );
            } else if mode & 0o004 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the audit key file is readable by everyone; chmod o-r"
                );
            }
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
    fn encode_line(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            AuditEncoder::Plain(e) => e.encode_line(event, out),
            AuditEncoder::Chained(e) => e.encode_line(event, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::events::sink::spawn_with_encoder;
    use crate::events::{
        AlertEvent, ContainmentEvent, EventBody, PolicyEvent, QueryEvent, WindowCounts,
    };

    fn event(n: u64) -> Event {
        Event {
            ts: format!("2026-11-25T19:40:{:02}.000000Z", n % 60),
            policy_version: 3,
            body: EventBody::Query(QueryEvent {
                client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
                agent: None,
                auth: "none".into(),
                group: Some("agents".into()),
                qname: format!("host{n}.example.com"),
                qtype: "A".into(),
                protocol: "udp".into(),
                verdict: "block".into(),
                reason: "not allowlisted".into(),
                rcode: "NXDOMAIN".into(),
                answers: 0,
                latency_us: n,
                cache_hit: false,
                upstream: None,
            }),
        }
    }

    fn key() -> AuditKey {
        AuditKey::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    fn other_key() -> AuditKey {
        AuditKey::new(vec![0x5a; 32])
    }

    fn encode(encoder: &mut ChainEncoder, event: &Event) -> String {
        let mut out = Vec::new();
        encoder.encode_line(event, &mut out).unwrap();
        assert_eq!(out.pop(), Some(b'\n'));
        String::from_utf8(out).unwrap()
    }

    /// `n` records of a new chain, as lines without their `\n`.
    fn chain_lines(key: Option<&AuditKey>, n: u64) -> Vec<String> {
        let mut encoder = ChainEncoder::new(key);
        (0..n).map(|i| encode(&mut encoder, &event(i))).collect()
    }

    fn write_log(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn check(lines: &[String], key: Option<&AuditKey>) -> VerifyReport {
        let (_dir, path) = write_log(lines);
        verify(&[path], key.map(AuditKey::as_bytes))
    }

    /// Kind, line and seq of the first problem.
    fn first(report: &VerifyReport) -> (ProblemKind, u64, Option<u64>) {
        let p = report
            .first_problem()
            .unwrap_or_else(|| panic!("no problem found:\n{report}"));
        (p.kind, p.line, p.seq)
    }

    /// An encoder continuing after the record on `line`, as someone who can read the log but
    /// (for a keyed chain) not the key would set one up.
    fn forger_after(line: &str, key: Option<&AuditKey>) -> ChainEncoder {
        let fields = parse_record(line.as_bytes()).unwrap();
        let mut forger = ChainEncoder::new(key);
        forger.next_seq = fields.seq + 1;
        forger.prev = Hasher::new(key.map(AuditKey::as_bytes)).digest(line.as_bytes());
        forger
    }

    /// Recompute the seal of an unkeyed line, as anyone can.
    fn reseal(line: &str) -> String {
        let prefix = &line[..line.len() - SEAL_SUFFIX_LEN];
        let seal = hex::encode(Sha256::digest(prefix.as_bytes()));
        format!("{prefix},\"seal\":\"{seal}\"}}")
    }

    #[test]
    fn a_clean_chain_verifies_keyed_and_unkeyed() {
        for (key, mode) in [
            (None, ChainMode::Sha256),
            (Some(key()), ChainMode::HmacSha256),
        ] {
            let report = check(&chain_lines(key.as_ref(), 10), key.as_ref());
            assert!(report.ok, "{report}");
            assert_eq!(report.records, 10);
            assert_eq!(report.mode, Some(mode));
            assert_eq!(report.first.as_ref().map(|p| (p.line, p.seq)), Some((1, 0)));
            assert_eq!(report.last.as_ref().map(|p| (p.line, p.seq)), Some((10, 9)));
            assert!(!report.starts_mid_way());
        }
        assert!(verify(&[], None).ok, "no files, nothing wrong");
    }

    #[test]
    fn lines_keep_the_event_fields_between_the_chain_fields() {
        let lines = chain_lines(None, 2);
        assert!(
            lines[0].starts_with(&format!(
                "{{\"seq\":0,\"prev\":\"{GENESIS}\",\"chain\":\"sha256\",\"ts\":"
            )),
            "{}",
            lines[0]
        );
        let link = hex::encode(Sha256::digest(lines[0].as_bytes()));
        assert!(lines[1].starts_with(&format!("{{\"seq\":1,\"prev\":\"{link}\",")));
        assert_eq!(lines[0], reseal(&lines[0]), "seal = H(bytes before it)");
        // Readers of events still read them.
        let back: Event = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(back, event(0));

        let key = key();
        let keyed = chain_lines(Some(&key), 1);
        assert_eq!(key.id().len(), 16);
        assert!(keyed[0].contains(&format!(
            "\"chain\":\"hmac-sha256\",\"key_id\":\"{}\",\"ts\":",
            key.id()
        )));
        assert!(
            !format!("{key:?}").contains("0123456789"),
            "Debug hides the key"
        );
    }

    #[test]
    fn chain_fields_never_collide_with_event_fields() {
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let containment = ContainmentEvent {
            client,
            agent: None,
            group: "g".into(),
            domain: Some("example.com".into()),
            action: "sinkhole".into(),
            score: 90,
            until: Some("2026-11-25T20:00:00Z".into()),
            reason: "score above threshold".into(),
        };
        let bodies = [
            event(1).body,
            EventBody::Alert(AlertEvent {
                client,
                agent: None,
                group: "g".into(),
                domain: "example.com".into(),
                score: 90,
                breakdown: BTreeMap::from([("entropy".into(), 40.0)]),
                window: WindowCounts::default(),
                samples: vec!["aGVsbG8.example.com".into()],
                bytes_estimate: 4096,
                action: "alert".into(),
                monitor_only: false,
                exception: None,
            }),
            EventBody::ContainmentStarted(containment.clone()),
            EventBody::ContainmentEnded(containment),
            EventBody::Policy(PolicyEvent {
                action: "reloaded".into(),
                hash: Some("ab".into()),
                actor: Some("alice".into()),
                message: None,
            }),
        ];
        let mut encoder = ChainEncoder::new(Some(&key()));
        let mut lines = Vec::new();
        for body in bodies {
            let event = Event::now(1, body);
            let json = serde_json::to_value(&event).unwrap();
            for reserved in ["seq", "prev", "chain", "key_id", "seal"] {
                assert!(
                    json.get(reserved).is_none(),
                    "{} has {reserved}",
                    event.kind()
                );
            }
            lines.push(encode(&mut encoder, &event));
        }
        let report = check(&lines, Some(&key()));
        assert!(report.ok, "{report}");
    }

    #[test]
    fn a_modified_record_is_reported_on_its_line() {
        for key in [None, Some(key())] {
            let mut lines = chain_lines(key.as_ref(), 10);
            lines[4] = lines[4].replace("\"latency_us\":4", "\"latency_us\":400");
            let report = check(&lines, key.as_ref());
            assert_eq!(
                first(&report),
                (ProblemKind::Modified, 5, Some(4)),
                "{report}"
            );
            assert_eq!(report.records, 4);
            assert_eq!(report.problems.len(), 1);

            // The newest record, which nothing links to yet, is covered by its seal.
            let mut lines = chain_lines(key.as_ref(), 10);
            lines[9] = lines[9].replace("\"verdict\":\"block\"", "\"verdict\":\"allow\"");
            let report = check(&lines, key.as_ref());
            assert_eq!(
                first(&report),
                (ProblemKind::Modified, 10, Some(9)),
                "{report}"
            );
        }
        // Unkeyed, re-sealing the change hides it from the seal, not from the next link.
        let mut lines = chain_lines(None, 10);
        lines[4] = reseal(&lines[4].replace("\"latency_us\":4", "\"latency_us\":400"));
        let report = check(&lines, None);
        assert_eq!(
            first(&report),
            (ProblemKind::Modified, 5, Some(4)),
            "{report}"
        );
        assert_eq!(report.records, 4);
    }

    #[test]
    fn a_deleted_record_is_reported_where_it_was() {
        for key in [None, Some(key())] {
            let mut lines = chain_lines(key.as_ref(), 10);
            lines.remove(4);
            let report = check(&lines, key.as_ref());
            assert_eq!(
                first(&report),
                (ProblemKind::Deleted, 5, Some(5)),
                "{report}"
            );
            assert_eq!(report.problems[0].expected_seq, Some(4));
            assert_eq!(report.records, 4);

            lines.remove(4);
            let report = check(&lines, key.as_ref());
            assert_eq!(
                first(&report),
                (ProblemKind::Deleted, 5, Some(6)),
                "{report}"
            );
            assert!(
                report.problems[0].detail.contains("records 4 to 5"),
                "{report}"
            );
        }
    }

    #[test]
    fn a_forged_record_is_reported_as_inserted() {
        // Keyed: the forger has the log, not the key. Copying the key id does not help.
        let key = key();
        let mut lines = chain_lines(Some(&key), 10);
        let forged = encode(&mut forger_after(&lines[3], Some(&other_key())), &event(99))
            .replace(&other_key().id(), &key.id());
        lines.insert(4, forged);
        let report = check(&lines, Some(&key));
        assert_eq!(
            first(&report),
            (ProblemKind::Inserted, 5, Some(4)),
            "{report}"
        );

        // Unkeyed, a forged record with correct seq, link and seal is still caught: the record
        // after it links around it.
        let mut lines = chain_lines(None, 10);
        let forged = encode(&mut forger_after(&lines[3], None), &event(99));
        lines.insert(4, forged);
        let report = check(&lines, None);
        assert_eq!(
            first(&report),
            (ProblemKind::Inserted, 5, Some(4)),
            "{report}"
        );
        assert_eq!(report.records, 4);
    }

    #[test]
    fn a_full_rebuild_is_undetectable_unkeyed_but_not_keyed() {
        let rebuild = |lines: &[String], mut forger: ChainEncoder| {
            let mut out = lines[..4].to_vec();
            out.push(encode(&mut forger, &event(99)));
            out.extend((4..10).map(|i| encode(&mut forger, &event(i))));
            out
        };
        let lines = chain_lines(None, 10);
        let rebuilt = rebuild(&lines, forger_after(&lines[3], None));
        let report = check(&rebuilt, None);
        assert!(
            report.ok,
            "the documented limit of an unkeyed chain: {report}"
        );

        let key = key();
        let lines = chain_lines(Some(&key), 10);
        let rebuilt: Vec<String> = rebuild(&lines, forger_after(&lines[3], Some(&other_key())))
            .iter()
            .map(|l| l.replace(&other_key().id(), &key.id()))
            .collect();
        let report = check(&rebuilt, Some(&key));
        assert_eq!(
            first(&report),
            (ProblemKind::Modified, 5, Some(4)),
            "{report}"
        );
    }

    #[test]
    fn moved_records_are_reordered() {
        for key in [None, Some(key())] {
            let mut lines = chain_lines(key.as_ref(), 10);
            lines.swap(4, 5);
            let report = check(&lines, key.as_ref());
            assert_eq!(
                first(&report),
                (ProblemKind::Reordered, 5, Some(5)),
                "{report}"
            );
            assert_eq!(report.problems[0].expected_seq, Some(4));
        }
        // Moved later, and moved earlier.
        let mut later = chain_lines(None, 10);
        let moved = later.remove(2);
        later.insert(7, moved);
        assert_eq!(
            first(&check(&later, None)),
            (ProblemKind::Reordered, 3, Some(3))
        );
        let mut earlier = chain_lines(None, 10);
        let moved = earlier.remove(7);
        earlier.insert(2, moved);
        assert_eq!(
            first(&check(&earlier, None)),
            (ProblemKind::Reordered, 3, Some(7))
        );
    }

    #[test]
    fn a_torn_last_line_is_reported_never_accepted() {
        for key in [None, Some(key())] {
            let lines = chain_lines(key.as_ref(), 5);
            let (_dir, path) = write_log(&lines[..4]);
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            file.write_all(&lines[4].as_bytes()[..lines[4].len() / 2])
                .unwrap();
            let report = verify(&[path], key.as_ref().map(AuditKey::as_bytes));
            assert!(!report.ok);
            assert_eq!(first(&report), (ProblemKind::TornLine, 5, None), "{report}");
            assert_eq!(report.problems[0].expected_seq, Some(4));
            assert_eq!(report.records, 4);
            assert!(report.complete, "a torn line does not stop verification");
            assert!(
                report.to_string().starts_with("TORN LINES: 4 record(s)"),
                "{report}"
            );
        }
    }

    #[test]
    fn a_record_with_damaged_chain_fields_is_modified() {
        let mut lines = chain_lines(Some(&key()), 10);
        let n = lines[4].len();
        lines[4].replace_range(n - 10..n - 9, "z");
        let report = check(&lines, Some(&key()));
        assert_eq!(
            first(&report),
            (ProblemKind::Modified, 5, Some(4)),
            "{report}"
        );
        assert!(!report.complete);
    }

    #[test]
    fn a_line_that_is_not_a_record_is_bad_json() {
        let mut lines = chain_lines(None, 5);
        lines[2] = "{\"kind\":\"query\",\"qname\":\"example.com\"}".into();
        let report = check(&lines, None);
        assert_eq!(first(&report), (ProblemKind::BadJson, 3, None), "{report}");
        assert!(
            report.problems[0].detail.contains("missing field"),
            "{report}"
        );

        // A plain log from before the chain was on: bounded, not one problem per line.
        let plain: Vec<String> = (0..300).map(|i| format!("{{\"n\":{i}}}")).collect();
        let report = check(&plain, None);
        assert_eq!(report.problems.len(), MAX_TORN_LINES + 1, "{report}");
        assert_eq!(
            report.problems.last().map(|p| p.kind),
            Some(ProblemKind::BadJson)
        );
        assert!(!report.complete);
    }

    #[test]
    fn a_wrong_or_missing_key_is_reported_at_the_first_record() {
        let lines = chain_lines(Some(&key()), 5);
        for given in [Some(other_key()), None] {
            let report = check(&lines, given.as_ref());
            assert_eq!(
                first(&report),
                (ProblemKind::WrongKey, 1, Some(0)),
                "{report}"
            );
            assert_eq!(report.records, 0);
        }
        let unkeyed = chain_lines(None, 5);
        let report = check(&unkeyed, Some(&key()));
        assert_eq!(
            first(&report),
            (ProblemKind::WrongKey, 1, Some(0)),
            "{report}"
        );
    }

    #[test]
    fn resume_ends_a_torn_line_and_continues_the_chain() {
        let key = key();
        let lines = chain_lines(Some(&key), 5);
        let (_dir, path) = write_log(&lines[..4]);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&lines[4].as_bytes()[..40]).unwrap();

        let mut encoder = ChainEncoder::resume(&path, Some(&key)).unwrap();
        assert_eq!(
            encoder.next_seq(),
            4,
            "continues after the last complete record"
        );
        assert!(
            fs::read(&path).unwrap().ends_with(b"\n"),
            "the torn line was ended"
        );
        for i in 4..7 {
            let line = encode(&mut encoder, &event(i));
            file.write_all(format!("{line}\n").as_bytes()).unwrap();
        }
        let report = verify(std::slice::from_ref(&path), Some(key.as_bytes()));
        assert_eq!(report.problems.len(), 1, "{report}");
        assert_eq!(first(&report), (ProblemKind::TornLine, 5, None));
        assert_eq!((report.records, report.last.map(|p| p.seq)), (7, Some(6)));

        // The chain is still checked past the torn line.
        let mut text = fs::read_to_string(&path).unwrap();
        text = text.replace("\"latency_us\":5", "\"latency_us\":6");
        fs::write(&path, text).unwrap();
        let report = verify(&[path], Some(key.as_bytes()));
        assert_eq!(report.problems.len(), 2, "{report}");
        assert_eq!(report.problems[1].kind, ProblemKind::Modified);
        assert_eq!(report.problems[1].seq, Some(5));
    }

    #[test]
    fn resume_falls_back_to_the_newest_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let lines = chain_lines(None, 6);
        let rotated = |n: u32| dir.path().join(format!("events.jsonl.{n}"));
        fs::write(
            rotated(2),
            format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]),
        )
        .unwrap();
        fs::write(
            rotated(1),
            format!("{}\n{}\n{}\n", lines[3], lines[4], lines[5]),
        )
        .unwrap();
        let link = Hasher::Sha256.digest(lines[5].as_bytes());

        // Missing, empty, or holding nothing but a torn line.
        for current in [None, Some(""), Some("{\"seq\":6,\"pr")] {
            if let Some(text) = current {
                fs::write(&path, text).unwrap();
            }
            let encoder = ChainEncoder::resume(&path, None).unwrap();
            assert_eq!((encoder.next_seq(), encoder.prev), (6, link));
        }
        let fresh = ChainEncoder::resume(&dir.path().join("other.jsonl"), None).unwrap();
        assert_eq!((fresh.next_seq(), fresh.prev), (0, [0; 32]));
    }

    #[test]
    fn an_oversized_line_is_skipped_by_resume_and_reported_by_verify() {
        let lines = chain_lines(None, 3);
        let (_dir, path) = write_log(&lines);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&vec![b'x'; MAX_LINE_BYTES + TAIL_CHUNK as usize * 2])
            .unwrap();
        file.write_all(b"\n").unwrap();

        let encoder = ChainEncoder::resume(&path, None).unwrap();
        assert_eq!(encoder.next_seq(), 3);
        let report = verify(&[path], None);
        assert_eq!(first(&report), (ProblemKind::TornLine, 4, None), "{report}");
        assert!(
            report.problems[0].detail.contains("longer than"),
            "{report}"
        );
        assert_eq!(report.records, 3);
    }

    #[test]
    fn chain_files_lists_rotated_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        for name in [
            "events.jsonl.1",
            "events.jsonl.2",
            "events.jsonl.10",
            "events.jsonl.01",
            "events.jsonl.bak",
            "other.jsonl.1",
        ] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(chain_files(&path)),
            ["events.jsonl.10", "events.jsonl.2", "events.jsonl.1"]
        );
        fs::write(&path, "").unwrap();
        assert_eq!(
            names(chain_files(&path)).last().map(String::as_str),
            Some("events.jsonl")
        );
    }

    fn sink_config(path: &Path, rotate_bytes: u64, keep: u32) -> EventsConfig {
        EventsConfig {
            sink: SinkKind::File,
            path: Some(path.to_path_buf()),
            rotate_bytes,
            keep,
            ..EventsConfig::default()
        }
    }

    /// One run of the real sink with the configured encoder: start (resuming), log, shut down.
    async fn run_sink(events: &EventsConfig, audit: &AuditConfig, range: std::ops::Range<u64>) {
        let encoder = audit.encoder(events).unwrap();
        let (tx, handle) = spawn_with_encoder(events, encoder).unwrap();
        for i in range {
            assert!(tx.emit(event(i)));
            if i % 3 == 0 {
                // Let the writer run now and then, so batches vary in size.
                tokio::task::yield_now().await;
            }
        }
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn the_chain_continues_across_rotation_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let key_file = dir.path().join("audit.key");
        fs::write(&key_file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let audit = AuditConfig {
            key_file: Some(key_file),
            chain: true,
        };
        let key = audit.load_key().unwrap().unwrap();
        let events = sink_config(&path, 2048, 50);

        run_sink(&events, &audit, 0..20).await;
        let files = chain_files(&path);
        assert!(files.len() >= 4, "rotated: {files:?}");
        let report = verify(&files, Some(key.as_bytes()));
        assert!(report.ok, "{report}");
        assert_eq!(report.records, 20);

        // A restart resumes where the last run stopped.
        run_sink(&events, &audit, 20..30).await;
        let files = chain_files(&path);
        let report = verify(&files, Some(key.as_bytes()));
        assert!(report.ok, "{report}");
        assert_eq!(report.records, 30);
        assert_eq!(report.last.as_ref().map(|p| p.seq), Some(29));
        assert_eq!(report.first.as_ref().map(|p| p.seq), Some(0));

        // A file missing from the middle is a deletion, reported at the start of the next.
        fs::remove_file(&files[1]).unwrap();
        let report = verify(&chain_files(&path), Some(key.as_bytes()));
        let problem = report.first_problem().expect("a gap");
        assert_eq!(problem.kind, ProblemKind::Deleted, "{report}");
        assert_eq!((&problem.file, problem.line), (&files[2], 1));
        assert!(problem.detail.contains("between"), "{report}");
    }

    #[tokio::test]
    async fn rotation_that_removed_old_files_leaves_a_chain_that_starts_mid_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let events = sink_config(&path, 2048, 2);
        run_sink(&events, &AuditConfig::default(), 0..30).await;

        let files = chain_files(&path);
        assert_eq!(files.len(), 3);
        let report = verify(&files, None);
        assert!(report.ok, "{report}");
        assert!(report.starts_mid_way());
        assert_eq!(report.last.as_ref().map(|p| p.seq), Some(29));
        assert!(report.to_string().contains("starts mid-way"), "{report}");

        let mut backwards = files;
        backwards.reverse();
        let report = verify(&backwards, None);
        assert_eq!(
            report.first_problem().map(|p| p.kind),
            Some(ProblemKind::Reordered),
            "{report}"
        );
    }

    #[test]
    fn the_report_reads_well_and_serializes() {
        let mut lines = chain_lines(Some(&key()), 10);
        lines.remove(4);
        let report = check(&lines, Some(&key()));
        let text = report.to_string();
        assert!(
            text.starts_with("FAILED: 4 record(s) verified, seq 0 to 3, hmac-sha256"),
            "{text}"
        );
        assert!(
            text.contains("events.jsonl:5: deleted (seq 5, expected 4): record 4 is missing"),
            "{text}"
        );
        assert!(text.contains("stopped at the first problem"), "{text}");

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["mode"], "hmac-sha256");
        assert_eq!(json["problems"][0]["kind"], "deleted");
        assert_eq!(json["problems"][0]["expected_seq"], 4);
        assert_eq!(json["first"]["seq"], 0);
    }

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
