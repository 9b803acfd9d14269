//! Checkpoints: signed records of the event log's head and tail, kept apart from the log, so
//! that a missing head is explained and a cut tail is detected.
//!
//! The hash chain ([`crate::govern::audit`]) proves the records it has are whole and in order,
//! but the log alone cannot show that its *newest* records were cut off (after a restart the
//! chain resumes from whatever is now last) or tell rotation from removal of the *oldest*. So
//! the event sink hands a [`CheckpointWriter`] (a [`LogWitness`]):
//!
//! - before rotation deletes a file, that file's last line (`cause = "rotation"`): the log's
//!   first record must then be the one right after it;
//! - every `[events] checkpoint_interval` and at shutdown, after an fsync, the last line
//!   written (`cause = "periodic"` / `"shutdown"`): that line must still be in the log.
//!
//! # Record format
//! One JSON object per line in the checkpoint file (default `checkpoints.jsonl` in
//! `[store] state_dir`):
//!
//! ```text
//! {"n":7,"ts":"…","cause":"periodic","file":null,"log":"/var/log/dnsward/events.jsonl","seq":41,"line_hash":"9f2c…","security_dropped":0,"query_dropped":0,"chain":"hmac-sha256","key_id":"5be0…","prev":"07ad…","seal":"e1b4…"}
//! ```
//!
//! - `n`: 0 for the first checkpoint, one more each time (across restarts);
//! - `seq`: the `seq` of the witnessed log line (absent when the log is not chained);
//! - `line_hash`: SHA-256 of the witnessed line without its `\n` (`null`: the file was empty);
//! - `file`: the rotated file that was dropped (rotation checkpoints);
//! - `log`: the live log file the checkpoint is for (absolute; absent in checkpoints written
//!   before it was recorded, which are taken to be for the log being verified): one checkpoint
//!   file can outlive a change of `[events] path`, and the checkpoints of the old log are not
//!   compared with the new one (`audit verify` lists them as for another log), while the
//!   switch itself stays in the sealed, linked sequence;
//! - `security_dropped`, `query_dropped`: events the sink lost since start, from full queues
//!   or because the log could not be written;
//! - `prev`: `H(previous checkpoint line)`, so removing a checkpoint breaks the links;
//! - `seal`: `H(the line's bytes before ,"seal":")`, last; `H` is HMAC-SHA256 keyed with the
//!   audit key when one is configured (`chain = "hmac-sha256"`), SHA-256 otherwise.
//!
//! Without a key the checkpoints catch accidents and careless truncation; with a key nobody
//! without it can write a checkpoint that verifies. Kept on the same disk as the log they still
//! catch a cut tail followed by a restart; kept where whoever can write the log cannot write
//! (another directory or host), they catch deliberate deletion too.
//!
//! [`verify_checkpoints`] reads the checkpoint file and the log and reports, per checkpoint,
//! whether the log agrees ([`verify_checkpoint`]).
//!
//! # A crash while writing
//! A checkpoint is one `write_all` of its line and `\n`; a crash can leave it torn (no `\n`).
//! The file is treated as the event log is: on open, [`CheckpointWriter`] ends a torn last
//! line with `\n` (the fragment stays) and continues after the last line that is a checkpoint,
//! with a warning for the lines it skipped; [`verify_checkpoints`] judges a line that is not a
//! checkpoint by the event log's rule (the one [`crate::govern::audit::verify`] applies):
//! `torn_line` when it is unterminated or the checkpoints continue across it (the next one
//! links to the one before it), otherwise tampering (`unreadable`, `forged`, and
//! `checkpoints_removed` for the checkpoint that links to what is gone). So a torn line never
//! hides a checkpoint that a later one links to; cutting the *last* checkpoint looks like a
//! crash, and is reported as a torn line, never accepted.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::reader::{LogLines, ReverseLines};
use crate::events::rotation::open_append;
use crate::events::witness::{LogWitness, SinkTally, WitnessCause};
use crate::govern::audit::{AuditKey, LineRule, NotRecord, ProblemKind, end_torn_line};

/// The checkpoint file's name in `[store] state_dir` when no path is configured.
pub const DEFAULT_FILE_NAME: &str = "checkpoints.jsonl";

const SEAL_OPEN: &str = ",\"seal\":\"";

/// How a line that is not a checkpoint is judged: the event log's rule
/// ([`LineRule::judge`]), in the checkpoint file's words.
const LINE_RULE: LineRule = LineRule {
    file: "checkpoint file",
    foreign: "JSON object that is not a checkpoint",
};

/// Bytes read from the checkpoint file at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Lines longer than this are not checkpoints or events.
const MAX_LINE_BYTES: usize = 1 << 20;

type HmacSha256 = Hmac<Sha256>;

/// Where checkpoints go: the configured path, else `checkpoints.jsonl` in the store's state
/// directory, else `<events path>.checkpoints` next to the log.
#[must_use]
pub fn checkpoint_path(
    configured: Option<&Path>,
    state_dir: Option<&Path>,
    events_path: &Path,
) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(dir) = state_dir {
        return dir.join(DEFAULT_FILE_NAME);
    }
    let mut name = events_path.as_os_str().to_owned();
    name.push(".checkpoints");
    PathBuf::from(name)
}

/// One checkpoint record (the `seal` is checked when reading, not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Number of this checkpoint, from 0.
    pub n: u64,
    /// When it was written (RFC 3339 UTC).
    pub ts: String,
    /// `rotation`, `periodic` or `shutdown`.
    pub cause: String,
    /// The dropped file (rotation).
    pub file: Option<String>,
    /// The live log file this checkpoint is for; `None` in checkpoints written before it was
    /// recorded (taken to be for the log being verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Seq of the witnessed line, when the log is chained.
    pub seq: Option<u64>,
    /// SHA-256 (hex) of the witnessed line; `None` when there was none.
    pub line_hash: Option<String>,
    /// Security events lost since the sink started (a full queue, or not written).
    pub security_dropped: u64,
    /// Query events lost since the sink started (a full queue, or not written).
    pub query_dropped: u64,
    /// `sha256` or `hmac-sha256`.
    pub chain: String,
    /// The audit key's id, when keyed.
    pub key_id: Option<String>,
    /// `H` of the previous checkpoint line (64 zeros for the first).
    pub prev: String,
}

#[derive(Clone)]
enum Hasher {
    Sha256,
    Hmac(Box<HmacSha256>),
}

impl Hasher {
    fn new(key: Option<&[u8]>) -> Self {
        match key {
            None => Hasher::Sha256,
            Some(k) => Hasher::Hmac(Box::new(
                <HmacSha256 as Mac>::new_from_slice(k).expect("HMAC takes keys of any length"),
            )),
        }
    }

    fn mode(&self) -> &'static str {
        match self {
            Hasher::Sha256 => "sha256",
            Hasher::Hmac(_) => "hmac-sha256",
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

#[derive(Deserialize)]
struct SeqOnly {
    seq: Option<u64>,
}

/// The `seq` field of a log line, if it is a chained record.
fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<SeqOnly>(line).ok()?.seq
}

fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// A checkpoint line: the record and where its seal starts (`,"seal":"`), or why it is not one.
fn parse_checkpoint(line: &[u8]) -> Result<(Checkpoint, usize), String> {
    let cp = serde_json::from_slice::<Checkpoint>(line)
        .map_err(|e| format!("not a checkpoint record: {e}"))?;
    // A JSON document is UTF-8.
    let text = std::str::from_utf8(line).map_err(|e| e.to_string())?;
    let at = text.rfind(SEAL_OPEN).ok_or("no seal")?;
    Ok((cp, at))
}

/// The end of a checkpoint file, as a writer resumes it.
struct Tail {
    /// The last line that is a checkpoint, and its `n`.
    last: Option<(Vec<u8>, u64)>,
    /// Lines after it that are not checkpoints.
    skipped: u64,
}

/// The end of the checkpoint file at `path`, read backwards (as the event log's chain
/// resumes).
fn read_tail(path: &Path) -> io::Result<Tail> {
    let mut tail = Tail {
        last: None,
        skipped: 0,
    };
    let Some(mut lines) = ReverseLines::open(path)? else {
        return Ok(tail);
    };
    while let Some(line) = lines.next_line()? {
        if let Some(line) = line
            && let Ok((cp, _)) = parse_checkpoint(&line)
        {
            tail.last = Some((line, cp.n));
            break;
        }
        tail.skipped += 1;
    }
    Ok(tail)
}

/// Appends checkpoints to the checkpoint file; the sink's [`LogWitness`].
pub struct CheckpointWriter {
    path: PathBuf,
    /// The live log file witnessed, absolute.
    log: String,
    hasher: Hasher,
    key_id: Option<String>,
    next_n: u64,
    prev: [u8; 32],
}

impl fmt::Debug for CheckpointWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("path", &self.path)
            .field("mode", &self.hasher.mode())
            .field("next_n", &self.next_n)
            .finish_non_exhaustive()
    }
}

impl CheckpointWriter {
    /// Continue the checkpoint file at `path` (created 0600, never through a symlink) for the
    /// event log `log`, sealing with `key` when given: after its last checkpoint, as the event
    /// log's chain resumes ([`ChainEncoder::resume`]). A torn last line (a crash mid-write) is
    /// ended with a `\n` and stays, for `audit verify` to report as a torn line; lines after the
    /// last checkpoint are skipped with a warning, and the next checkpoint links to that one.
    ///
    /// # Errors
    /// The file cannot be opened or read, or the torn line cannot be ended.
    ///
    /// [`ChainEncoder::resume`]: crate::govern::audit::ChainEncoder::resume
    pub fn open(path: &Path, key: Option<&AuditKey>, log: &Path) -> io::Result<Self> {
        drop(open_append(path, 0o600)?);
        end_torn_line(path, "checkpoint file")?;
        let hasher = Hasher::new(key.map(AuditKey::as_bytes));
        let tail = read_tail(path)?;
        let (next_n, prev) = match &tail.last {
            Some((line, n)) => (n.saturating_add(1), hasher.digest(line)),
            None => (0, [0; 32]),
        };
        if tail.skipped > 0 {
            tracing::warn!(
                file = %path.display(),
                lines = tail.skipped,
                next = next_n,
                "the checkpoint file ends with lines that are not checkpoints (a crash while \
                 writing?); they stay in the file and the checkpoints continue after the last \
                 readable one"
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            log: std::path::absolute(log)?.display().to_string(),
            hasher,
            key_id: key.map(AuditKey::id),
            next_n,
            prev,
        })
    }

    /// The line for a checkpoint of `last_line`, sealed, without `\n`.
    fn line(&self, cause: &WitnessCause, last_line: Option<&[u8]>, tally: SinkTally) -> Vec<u8> {
        let cp = Checkpoint {
            n: self.next_n,
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            cause: cause.as_str().to_string(),
            file: match cause {
                WitnessCause::Rotation { dropped } => Some(dropped.display().to_string()),
                _ => None,
            },
            log: Some(self.log.clone()),
            seq: last_line.and_then(seq_of),
            line_hash: last_line.map(line_hash),
            security_dropped: tally.security_dropped,
            query_dropped: tally.query_dropped,
            chain: self.hasher.mode().to_string(),
            key_id: self.key_id.clone(),
            prev: hex::encode(self.prev),
        };
        let mut line = serde_json::to_vec(&cp).expect("a checkpoint always serializes");
        line.pop(); // the closing brace
        line.extend_from_slice(SEAL_OPEN.as_bytes());
        let seal = self.hasher.digest(&line[..line.len() - SEAL_OPEN.len()]);
        line.extend_from_slice(hex::encode(seal).as_bytes());
        line.extend_from_slice(b"\"}");
        line
    }
}

impl LogWitness for CheckpointWriter {
    fn witness(
        &mut self,
        cause: &WitnessCause,
        last_line: Option<&[u8]>,
        tally: SinkTally,
    ) -> io::Result<()> {
        let line = self.line(cause, last_line, tally);
        let mut file = open_append(&self.path, 0o600)?;
        let mut with_newline = line.clone();
        with_newline.push(b'\n');
        file.write_all(&with_newline)?;
        file.sync_data()?;
        self.prev = self.hasher.digest(&line);
        self.next_n += 1;
        Ok(())
    }
}

/// What is wrong, found by [`verify_checkpoints`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointProblemKind {
    /// A checkpoint's seal does not match: modified or forged.
    Forged,
    /// Sealed with another key, or keyed when none was given, or the reverse.
    WrongKey,
    /// A checkpoint is missing or out of order (`n` or `prev` does not follow).
    CheckpointsRemoved,
    /// The log ends before a record a checkpoint saw written.
    TailTruncated,
    /// The log holds a different record at a checkpointed seq (cut, then resumed or edited).
    Rewritten,
    /// The log starts later than the last rotation checkpoint explains.
    HeadMissing,
    /// A file could not be read, or a line is not a checkpoint where no crash explains it
    /// (see `TornLine`).
    Unreadable,
    /// A line that is not a checkpoint, as a crash while writing leaves: unterminated, or one the
    /// checkpoints continue across (a crash, then a restart), by the event log's rule (see
    /// [`crate::govern::audit::verify`]). Not a sign of tampering, but the checkpoint it held
    /// is lost.
    TornLine,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointProblem {
    /// What.
    pub kind: CheckpointProblemKind,
    /// The checkpoint it concerns, if any.
    pub n: Option<u64>,
    /// In words.
    pub detail: String,
}

impl fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match self.n {
            Some(n) => write!(f, "checkpoint {n}: {kind}: {}", self.detail),
            None => write!(f, "{kind}: {}", self.detail),
        }
    }
}

/// What the log holds, as far as checkpoints care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// Seq of the first record.
    pub first_seq: Option<u64>,
    /// Seq of the last record.
    pub last_seq: Option<u64>,
    /// SHA-256 (hex) of each line, with its seq: only for hashes asked about.
    pub found: HashMap<String, Option<u64>>,
    /// Hash of the line with each asked-about seq.
    pub at_seq: HashMap<u64, String>,
}

impl LogSummary {
    /// Read the log files (oldest first, as `audit::chain_files` lists them), noting the
    /// lines whose hash or seq the `checkpoints` name.
    ///
    /// # Errors
    /// A file cannot be read.
    pub fn read(files: &[PathBuf], checkpoints: &[Checkpoint]) -> io::Result<Self> {
        let hashes: std::collections::HashSet<&str> = checkpoints
            .iter()
            .filter_map(|c| c.line_hash.as_deref())
            .collect();
        let seqs: std::collections::HashSet<u64> =
            checkpoints.iter().filter_map(|c| c.seq).collect();
        let mut summary = LogSummary::default();
        for path in files {
            let reader = BufReader::new(File::open(path)?);
            for line in reader.split(b'\n') {
                let line = line?;
                if line.len() > MAX_LINE_BYTES {
                    continue;
                }
                let hash = line_hash(&line);
                let seq = seq_of(&line);
                if let Some(s) = seq {
                    summary.first_seq.get_or_insert(s);
                    summary.last_seq = Some(s);
                    if seqs.contains(&s) {
                        summary.at_seq.insert(s, hash.clone());
                    }
                }
                if hashes.contains(hash.as_str()) {
                    summary.found.insert(hash, seq);
                }
            }
        }
        Ok(summary)
    }
}

/// What the log says about one checkpoint: `Ok(())` when they agree, otherwise the problem.
/// A rotation checkpoint agrees when its record is gone from the log (deleted by rotation) or
/// still there; a periodic or shutdown one when its record is still in the log, or older than
/// the log's first record (rotated away since).
///
/// # Errors
/// The problem found.
pub fn verify_checkpoint(cp: &Checkpoint, log: &LogSummary) -> Result<(), CheckpointProblem> {
    let problem = |kind, detail: String| CheckpointProblem {
        kind,
        n: Some(cp.n),
        detail,
    };
    let Some(hash) = &cp.line_hash else {
        return Ok(());
    };
    if log.found.contains_key(hash) || cp.cause == "rotation" {
        return Ok(());
    }
    match (cp.seq, log.first_seq, log.last_seq) {
        (Some(seq), Some(first), _) if seq < first => Ok(()),
        (Some(seq), _, last) if last.is_none_or(|l| seq > l) => Err(problem(
            CheckpointProblemKind::TailTruncated,
            format!(
                "at {} ({}) record seq {seq} had been written, but the log ends at {}: \
                 its newest records were cut off",
                cp.ts,
                cp.cause,
                last.map_or_else(|| "no record".to_string(), |l| format!("seq {l}"))
            ),
        )),
        (Some(seq), _, _) => Err(problem(
            CheckpointProblemKind::Rewritten,
            format!(
                "record seq {seq} in the log is not the one written by {} ({}): the log was \
                 cut and the chain resumed from an earlier record, or the record was replaced",
                cp.ts, cp.cause
            ),
        )),
        (None, _, _) => Err(problem(
            CheckpointProblemKind::TailTruncated,
            format!(
                "the line checkpointed at {} ({}) is no longer in the log",
                cp.ts, cp.cause
            ),
        )),
    }
}

/// What [`verify_checkpoints`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    /// Every checkpoint verified and the log agrees with all of them.
    pub ok: bool,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// How the log's head is explained: `starts at seq 0`, `rotated away up to seq N
    /// (checkpoint n)`, or `null` when it is not.
    pub head: Option<String>,
    /// The last checkpoint's number, seq and time.
    pub last: Option<Checkpoint>,
    /// Security events the sink reported lost, per the last checkpoint.
    pub security_dropped: u64,
    /// Checkpoints for other log files (written before `[events] path` changed), not
    /// compared with this log: one entry per such file, in checkpoint order.
    pub other_logs: Vec<OtherLog>,
    /// Problems, in checkpoint order.
    pub problems: Vec<CheckpointProblem>,
}

impl CheckpointReport {
    /// Whether every problem is a torn line (a crash mid-write), none a sign of tampering.
    #[must_use]
    pub fn torn_lines_only(&self) -> bool {
        !self.problems.is_empty()
            && self
                .problems
                .iter()
                .all(|p| p.kind == CheckpointProblemKind::TornLine)
    }
}

/// Checkpoints in the file that were written for another event log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OtherLog {
    /// That log's path, as recorded.
    pub log: String,
    /// Whether a file is still at that path.
    pub exists: bool,
    /// How many checkpoints name it.
    pub checkpoints: u64,
    /// The first and last of them.
    pub first_n: u64,
    /// The last of them.
    pub last_n: u64,
}

/// Whether a checkpoint that recorded `recorded` as its log is for the log file `current`:
/// the same absolute path, or both resolve to the same file. A checkpoint from before the log
/// was recorded (`None`) counts as for it.
fn is_for_log(recorded: Option<&str>, current: &Path) -> bool {
    let Some(recorded) = recorded else {
        return true;
    };
    let recorded = Path::new(recorded);
    if std::path::absolute(current).is_ok_and(|c| c == recorded) {
        return true;
    }
    matches!(
        (recorded.canonicalize(), current.canonicalize()),
        (Ok(a), Ok(b)) if a == b
    )
}

impl fmt::Display for CheckpointReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checkpoints: {}, {} read",
            if self.ok {
                "OK"
            } else if self.torn_lines_only() {
                "TORN LINES"
            } else {
                "FAILED"
            },
            self.checkpoints
        )?;
        if let Some(head) = &self.head {
            writeln!(f, "  head: {head}")?;
        }
        if let Some(last) = &self.last {
            writeln!(
                f,
                "  last checkpoint {} at {} ({}): seq {}",
                last.n,
                last.ts,
                last.cause,
                last.seq.map_or_else(|| "-".to_string(), |s| s.to_string())
            )?;
        }
        if self.security_dropped > 0 {
            writeln!(
                f,
                "  the sink reported {} security event(s) lost (a full queue, or a log that could \
                 not be written)",
                self.security_dropped
            )?;
        }
        for o in &self.other_logs {
            let range = if o.first_n == o.last_n {
                format!("checkpoint {}", o.first_n)
            } else {
                format!("checkpoints {}-{}", o.first_n, o.last_n)
            };
            writeln!(
                f,
                "  not compared: {} checkpoint(s) for another log, {} ({range}{})",
                o.checkpoints,
                o.log,
                if o.exists { "" } else { "; no file there now" }
            )?;
        }
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Read and check the checkpoint file at `path`: each seal with `key` (the audit key's bytes,
/// when the log is keyed), the `n`/`prev` links; then compare each checkpoint with the log
/// `files` (oldest first, as `audit::chain_files` lists them).
#[must_use]
pub fn verify_checkpoints(path: &Path, files: &[PathBuf], key: Option<&[u8]>) -> CheckpointReport {
    let mut report = CheckpointReport::default();
    let checkpoints = match read_checkpoints(path, key, &mut report.problems) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(CheckpointProblem {
                kind: CheckpointProblemKind::Unreadable,
                n: None,
                detail: format!("{}: {e}", path.display()),
            });
            return report;
        }
    };
    report.checkpoints = checkpoints.len() as u64;
    report.last = checkpoints.last().cloned();
    // The sink's tally restarts with it, whatever log it writes: the largest seen.
    report.security_dropped = checkpoints
        .iter()
        .map(|c| c.security_dropped)
        .max()
        .unwrap_or(0);
    // Only this log's checkpoints are compared with it: the file outlives a change of
    // `[events] path`, and an old log's records are not this one's.
    let checkpoints: Vec<Checkpoint> = match files.last() {
        None => checkpoints,
        Some(current) => {
            let (mine, others): (Vec<_>, Vec<_>) = checkpoints
                .into_iter()
                .partition(|c| is_for_log(c.log.as_deref(), current));
            for cp in others {
                let log = cp.log.clone().unwrap_or_default();
                match report.other_logs.iter_mut().find(|o| o.log == log) {
                    Some(o) => {
                        o.checkpoints += 1;
                        o.last_n = cp.n;
                    }
                    None => report.other_logs.push(OtherLog {
                        exists: Path::new(&log).exists(),
                        log,
                        checkpoints: 1,
                        first_n: cp.n,
                        last_n: cp.n,
                    }),
                }
            }
            mine
        }
    };
    let log = match LogSummary::read(files, &checkpoints) {
        Ok(l) => l,
        Err(e) => {
            report.problems.push(CheckpointProblem {
                kind: CheckpointProblemKind::Unreadable,
                n: None,
                detail: format!("reading the log: {e}"),
            });
            return report;
        }
    };
    for cp in &checkpoints {
        if let Err(p) = verify_checkpoint(cp, &log) {
            report.problems.push(p);
        }
    }
    // The head: seq 0, or right after the newest rotation checkpoint.
    let rotated_to = checkpoints
        .iter()
        .filter(|c| c.cause == "rotation")
        .filter_map(|c| c.seq.map(|s| (s, c.n)))
        .max();
    report.head = match (log.first_seq, rotated_to) {
        (Some(0), _) => Some("starts at seq 0".to_string()),
        (Some(first), Some((seq, n))) if first <= seq + 1 => Some(format!(
            "records up to seq {seq} were rotated away (checkpoint {n})"
        )),
        (Some(first), _) => {
            report.problems.push(CheckpointProblem {
                kind: CheckpointProblemKind::HeadMissing,
                n: rotated_to.map(|(_, n)| n),
                detail: format!(
                    "the log starts at seq {first}, but {}: its oldest records were removed",
                    rotated_to.map_or_else(
                        || "no rotation checkpoint explains it".to_string(),
                        |(s, _)| format!("rotation only accounts for records up to seq {s}")
                    )
                ),
            });
            None
        }
        (None, _) => None,
    };
    report.ok = report.problems.is_empty();
    report
}

/// The checkpoint check `audit verify` runs for the log `files` (oldest first): against
/// `explicit` when given, else against `<current log>.checkpoints` beside the log when that
/// exists; `None` when there is nothing to check against.
#[must_use]
pub fn verify_for_log(
    files: &[PathBuf],
    explicit: Option<&Path>,
    key: Option<&[u8]>,
) -> Option<CheckpointReport> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let beside = checkpoint_path(None, None, files.last()?);
            if !beside.exists() {
                return None;
            }
            beside
        }
    };
    Some(verify_checkpoints(&path, files, key))
}

/// One line of the checkpoint file, as read.
enum CheckpointLine {
    Checkpoint {
        cp: Box<Checkpoint>,
        /// Its seal matches its content (under the verifier's key).
        sealed: bool,
        /// `H(line)`, what the next checkpoint's `prev` should be.
        hash: [u8; 32],
    },
    NotCheckpoint {
        why: String,
        terminated: bool,
        /// Its `n`, when it is a JSON object with one.
        n: Option<u64>,
        /// It is a whole JSON object.
        whole: bool,
    },
}

/// Just the `n` of a line that is not a whole checkpoint.
#[derive(Deserialize)]
struct NOnly {
    n: u64,
}

/// Read every checkpoint, pushing torn-line, seal, key and link problems.
fn read_checkpoints(
    path: &Path,
    key: Option<&[u8]>,
    problems: &mut Vec<CheckpointProblem>,
) -> io::Result<Vec<Checkpoint>> {
    let hasher = Hasher::new(key);
    let key_id = key.map(|k| AuditKey::new(k.to_vec()).id());
    // (line number, line): each line is judged against the next checkpoint after it.
    let mut lines: Vec<(u64, CheckpointLine)> = Vec::new();
    let mut reader = LogLines::open(path, READ_BUFFER_BYTES)?;
    while let Some(line) = reader.next_line()? {
        let parsed = if line.oversize {
            Err(format!("line longer than {MAX_LINE_BYTES} bytes"))
        } else {
            parse_checkpoint(line.bytes)
        };
        let body = match parsed {
            Ok((cp, at)) => {
                let seal = &line.bytes[at + SEAL_OPEN.len()..];
                let seal = seal.strip_suffix(b"\"}").unwrap_or(seal);
                CheckpointLine::Checkpoint {
                    sealed: hex::encode(hasher.digest(&line.bytes[..at])).as_bytes() == seal,
                    hash: hasher.digest(line.bytes),
                    cp: Box::new(cp),
                }
            }
            Err(why) => CheckpointLine::NotCheckpoint {
                why,
                terminated: line.terminated,
                n: serde_json::from_slice::<NOnly>(line.bytes)
                    .ok()
                    .map(|o| o.n),
                whole: serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
                    line.bytes,
                )
                .is_ok(),
            },
        };
        lines.push((line.number, body));
    }
    // The index of the first checkpoint after each line, if any.
    let mut next_checkpoint = vec![None; lines.len()];
    let mut after = None;
    for (i, (_, body)) in lines.iter().enumerate().rev() {
        next_checkpoint[i] = after;
        if matches!(body, CheckpointLine::Checkpoint { .. }) {
            after = Some(i);
        }
    }
    let mut out: Vec<Checkpoint> = Vec::new();
    let mut prev = [0u8; 32];
    let mut torn = 0;
    for (i, (number, body)) in lines.iter().enumerate() {
        let (cp, sealed, hash) = match body {
            CheckpointLine::NotCheckpoint {
                why,
                terminated,
                n,
                whole,
            } => {
                // Whether the next checkpoint follows on from the last one, across this line.
                let across = match (out.last(), next_checkpoint[i].map(|j| &lines[j].1)) {
                    (_, None) => None,
                    (None, Some(_)) => Some(true),
                    (Some(last), Some(CheckpointLine::Checkpoint { cp: next, .. })) => {
                        Some(next.n == last.n.saturating_add(1) && next.prev == hex::encode(prev))
                    }
                    (Some(_), Some(CheckpointLine::NotCheckpoint { .. })) => Some(false),
                };
                let line = NotRecord {
                    why,
                    terminated: *terminated,
                    number: *n,
                    whole: *whole,
                };
                let (kind, detail) = LINE_RULE.judge(&line, across, !out.is_empty(), torn);
                let kind = match kind {
                    ProblemKind::TornLine => {
                        torn += 1;
                        CheckpointProblemKind::TornLine
                    }
                    ProblemKind::Modified => CheckpointProblemKind::Forged,
                    _ => CheckpointProblemKind::Unreadable,
                };
                problems.push(CheckpointProblem {
                    kind,
                    n: *n,
                    detail: format!("{}:{number}: {detail}", path.display()),
                });
                continue;
            }
            CheckpointLine::Checkpoint { cp, sealed, hash } => (cp, *sealed, hash),
        };
        if cp.chain != hasher.mode() || cp.key_id != key_id {
            problems.push(CheckpointProblem {
                kind: CheckpointProblemKind::WrongKey,
                n: Some(cp.n),
                detail: format!(
                    "sealed {} (key id {}), checked {} (key id {})",
                    cp.chain,
                    cp.key_id.as_deref().unwrap_or("-"),
                    hasher.mode(),
                    key_id.as_deref().unwrap_or("-")
                ),
            });
            return Ok(out);
        }
        if !sealed {
            problems.push(CheckpointProblem {
                kind: CheckpointProblemKind::Forged,
                n: Some(cp.n),
                detail: "the seal does not match: the checkpoint was modified or forged".into(),
            });
        }
        // The writer numbers a new file from 0 and never prunes it: a file whose first
        // checkpoint is a later one lost its head.
        let expected_n = out.last().map_or(0, |c| c.n + 1);
        if out.is_empty() && cp.n != 0 {
            problems.push(CheckpointProblem {
                kind: CheckpointProblemKind::CheckpointsRemoved,
                n: Some(cp.n),
                detail: format!(
                    "the file starts at checkpoint {}: checkpoints 0 to {} were removed",
                    cp.n,
                    cp.n - 1
                ),
            });
        } else if cp.n != expected_n || (!out.is_empty() && cp.prev != hex::encode(prev)) {
            problems.push(CheckpointProblem {
                kind: CheckpointProblemKind::CheckpointsRemoved,
                n: Some(cp.n),
                detail: format!(
                    "expected checkpoint {expected_n} linked to the one before; checkpoints \
                     were removed, reordered or altered"
                ),
            });
        }
        prev = *hash;
        out.push((**cp).clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::new(vec![7; 32])
    }

    fn log_line(seq: u64) -> Vec<u8> {
        format!("{{\"seq\":{seq},\"kind\":\"query\",\"n\":\"x{seq}\"}}").into_bytes()
    }

    fn write_log(dir: &Path, name: &str, seqs: std::ops::Range<u64>) -> PathBuf {
        let path = dir.join(name);
        let mut text = Vec::new();
        for s in seqs {
            text.extend(log_line(s));
            text.push(b'\n');
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn periodic_checkpoints_catch_a_cut_tail_and_a_resumed_chain() {
        let dir = tempfile::tempdir().unwrap();
        let cps = dir.path().join("cp.jsonl");
        let mut w =
            CheckpointWriter::open(&cps, Some(&key()), &dir.path().join("events.jsonl")).unwrap();
        w.witness(
            &WitnessCause::Periodic,
            Some(&log_line(9)),
            SinkTally::default(),
        )
        .unwrap();
        // The whole log: fine.
        let log = write_log(dir.path(), "events.jsonl", 0..10);
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
        assert!(r.ok, "{r}");
        assert_eq!(r.head.as_deref(), Some("starts at seq 0"));
        // Cut after seq 6: the tail is missing.
        let log = write_log(dir.path(), "events.jsonl", 0..7);
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
        assert!(!r.ok);
        assert_eq!(
            r.problems[0].kind,
            CheckpointProblemKind::TailTruncated,
            "{r}"
        );
        // Cut, then a restart resumed the chain and wrote a new seq 9: rewritten.
        let mut text = std::fs::read(&log).unwrap();
        for s in 7..12 {
            text.extend(format!("{{\"seq\":{s},\"kind\":\"policy\"}}\n").bytes());
        }
        std::fs::write(&log, text).unwrap();
        let r = verify_checkpoints(&cps, &[log], Some(key().as_bytes()));
        assert_eq!(r.problems[0].kind, CheckpointProblemKind::Rewritten, "{r}");
    }

    #[test]
    fn a_checkpoint_file_whose_head_was_cut_is_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let cps = dir.path().join("cp.jsonl");
        let log = write_log(dir.path(), "events.jsonl", 0..10);
        let mut w = CheckpointWriter::open(&cps, Some(&key()), &log).unwrap();
        for s in [3, 6, 9] {
            w.witness(
                &WitnessCause::Periodic,
                Some(&log_line(s)),
                SinkTally::default(),
            )
            .unwrap();
        }
        drop(w);
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
        assert!(r.ok, "{r}");
        // The first checkpoint deleted: the rest still link to each other, but the file starts
        // past 0, which the writer never does.
        let text = std::fs::read_to_string(&cps).unwrap();
        let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        std::fs::write(&cps, rest).unwrap();
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
        assert!(!r.ok, "{r}");
        assert_eq!(
            r.problems[0].kind,
            CheckpointProblemKind::CheckpointsRemoved,
            "{r}"
        );
        assert!(
            r.problems[0].detail.contains("starts at checkpoint 1"),
            "{r}"
        );
    }

    #[test]
    fn a_rotation_checkpoint_explains_the_missing_head_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let cps = dir.path().join("cp.jsonl");
        let mut w = CheckpointWriter::open(&cps, None, &dir.path().join("events.jsonl")).unwrap();
        let dropped = WitnessCause::Rotation {
            dropped: dir.path().join("events.jsonl.2"),
        };
        w.witness(&dropped, Some(&log_line(4)), SinkTally::default())
            .unwrap();
        let log = write_log(dir.path(), "events.jsonl", 5..9);
        let r = verify_checkpoints(&cps, &[log], None);
        assert!(r.ok, "{r}");
        assert!(r.head.unwrap().contains("up to seq 4"));
        // Records 5 and 6 removed as well: more than rotation explains.
        let log = write_log(dir.path(), "events.jsonl", 7..9);
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), None);
        assert_eq!(
            r.problems[0].kind,
            CheckpointProblemKind::HeadMissing,
            "{r}"
        );
        // No checkpoint at all: a log that starts mid-way is unexplained.
        let none = dir.path().join("none.jsonl");
        std::fs::write(&none, "").unwrap();
        let r = verify_checkpoints(&none, &[log], None);
        assert_eq!(r.problems[0].kind, CheckpointProblemKind::HeadMissing);
    }

    #[test]
    fn checkpoints_are_sealed_linked_and_resume_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let cps = dir.path().join("cp.jsonl");
        let log = write_log(dir.path(), "events.jsonl", 0..5);
        for s in [1, 2] {
            let mut w = CheckpointWriter::open(&cps, Some(&key()), &log).unwrap();
            w.witness(
                &WitnessCause::Periodic,
                Some(&log_line(s)),
                SinkTally::default(),
            )
            .unwrap();
            w.witness(
                &WitnessCause::Shutdown,
                Some(&log_line(s + 1)),
                SinkTally {
                    security_dropped: 3,
                    query_dropped: 0,
                },
            )
            .unwrap();
        }
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
        assert!(r.ok, "{r}");
        assert_eq!(r.checkpoints, 4);
        assert_eq!(r.last.as_ref().map(|c| c.n), Some(3));
        assert_eq!(r.security_dropped, 3);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&cps).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        // Another key, or none: wrong_key.
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), None);
        assert_eq!(r.problems[0].kind, CheckpointProblemKind::WrongKey);

        // Edit one (seq 2 → 1) without the key: forged. Remove one: the links break.
        let text = std::fs::read_to_string(&cps).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let edited = text.replacen("\"seq\":2", "\"seq\":1", 1);
        std::fs::write(&cps, &edited).unwrap();
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
        assert_eq!(r.problems[0].kind, CheckpointProblemKind::Forged, "{r}");
        std::fs::write(&cps, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
        let r = verify_checkpoints(&cps, &[log], Some(key().as_bytes()));
        assert_eq!(
            r.problems[0].kind,
            CheckpointProblemKind::CheckpointsRemoved,
            "{r}"
        );
    }

    /// One run of the real sink, chained and keyed, with checkpoints: start (resuming), log
    /// `range` as security events, shut down.
    async fn run_sink(events: &Path, cps: &Path, range: std::ops::Range<u64>) {
        use crate::events::sink::{EventsConfig, SinkKind, spawn_with_witness};
        use crate::events::{Event, EventBody, PolicyEvent};
        use crate::govern::audit::ChainEncoder;
        let cfg = EventsConfig {
            sink: SinkKind::File,
            path: Some(events.to_path_buf()),
            rotate_bytes: 4096,
            keep: 1,
            ..EventsConfig::default()
        };
        let encoder = ChainEncoder::resume(events, Some(&key())).unwrap();
        let witness = CheckpointWriter::open(cps, Some(&key()), events).unwrap();
        let (tx, handle) = spawn_with_witness(&cfg, encoder, Some(Box::new(witness))).unwrap();
        for i in range {
            let body = EventBody::Policy(PolicyEvent {
                action: "reloaded".into(),
                hash: None,
                actor: Some(format!("actor-{i}")),
                message: Some("x".repeat(100)),
            });
            assert!(tx.emit(Event::now(i, body)));
            if i % 5 == 0 {
                tokio::task::yield_now().await;
            }
        }
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn the_sink_checkpoints_rotation_and_shutdown_and_a_cut_tail_is_found_after_restart() {
        use crate::events::reader::rotated_files as chain_files;
        use crate::govern::audit::verify;
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let cps = dir.path().join("checkpoints.jsonl");
        // Enough to rotate several times with keep = 1: the oldest records are deleted.
        run_sink(&events, &cps, 0..200).await;
        let files = chain_files(&events);
        let chain = verify(&files, Some(key().as_bytes()));
        assert!(chain.ok && chain.starts_mid_way(), "{chain}");
        let r = verify_checkpoints(&cps, &files, Some(key().as_bytes()));
        assert!(r.ok, "{r}");
        assert!(r.head.as_deref().unwrap().contains("rotated away"), "{r}");
        assert_eq!(r.last.as_ref().unwrap().cause, "shutdown");
        assert_eq!(r.last.as_ref().unwrap().seq, Some(199));

        // Cut the last record off, then restart: the chain itself verifies again...
        let text = std::fs::read_to_string(&events).unwrap();
        let keep: Vec<&str> = text.lines().collect();
        assert!(!keep.is_empty(), "the live file holds the newest records");
        let cut: String = keep[..keep.len() - 1]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&events, cut).unwrap();
        run_sink(&events, &cps, 200..202).await;
        let files = chain_files(&events);
        assert!(verify(&files, Some(key().as_bytes())).ok);
        // ...but the checkpoint written at the first shutdown does not match any more.
        let r = verify_checkpoints(&cps, &files, Some(key().as_bytes()));
        assert!(!r.ok);
        assert!(
            r.problems
                .iter()
                .any(|p| p.kind == CheckpointProblemKind::Rewritten),
            "{r}"
        );
    }

    #[tokio::test]
    async fn a_changed_log_path_keeps_one_checkpoint_file_and_each_log_verifies() {
        use crate::events::reader::rotated_files as chain_files;
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.jsonl");
        let new = dir.path().join("new.jsonl");
        let cps = dir.path().join("checkpoints.jsonl");
        // `[events] path` changed between two runs; the checkpoint file (in `state_dir`) did not.
        run_sink(&old, &cps, 0..30).await;
        run_sink(&new, &cps, 0..3).await;
        let key = key();
        // The new log verifies: the old log's checkpoints are listed, not compared with it.
        let r = verify_checkpoints(&cps, &chain_files(&new), Some(key.as_bytes()));
        assert!(r.ok, "{r}");
        assert_eq!(r.head.as_deref(), Some("starts at seq 0"), "{r}");
        assert_eq!(r.other_logs.len(), 1, "{r}");
        assert_eq!(r.other_logs[0].log, old.display().to_string());
        assert!(r.other_logs[0].exists);
        assert!(r.to_string().contains("for another log"), "{r}");
        // So does the old one, against its own checkpoints only.
        let r = verify_checkpoints(&cps, &chain_files(&old), Some(key.as_bytes()));
        assert!(r.ok, "{r}");
        assert_eq!(r.other_logs[0].log, new.display().to_string());
        // A cut tail in the old log is still found.
        let text = std::fs::read_to_string(&old).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cut: String = lines[..lines.len() - 1]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&old, cut).unwrap();
        let r = verify_checkpoints(&cps, &chain_files(&old), Some(key.as_bytes()));
        assert!(
            r.problems
                .iter()
                .any(|p| p.kind == CheckpointProblemKind::TailTruncated),
            "{r}"
        );
        // Deleted: its checkpoints say so when the new log is verified.
        for f in chain_files(&old) {
            std::fs::remove_file(f).unwrap();
        }
        let r = verify_checkpoints(&cps, &chain_files(&new), Some(key.as_bytes()));
        assert!(r.ok && !r.other_logs[0].exists, "{r}");
        assert!(r.to_string().contains("no file there now"), "{r}");
    }

    #[tokio::test]
    async fn periodic_checkpoints_name_the_last_line_written_while_running() {
        use crate::events::sink::{EventsConfig, SinkKind, spawn_with_witness};
        use crate::events::{Event, EventBody, PolicyEvent};
        use crate::govern::audit::ChainEncoder;
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let cps = dir.path().join("checkpoints.jsonl");
        let cfg = EventsConfig {
            sink: SinkKind::File,
            path: Some(events.clone()),
            checkpoint_interval: std::time::Duration::from_millis(100),
            ..EventsConfig::default()
        };
        let witness = CheckpointWriter::open(&cps, None, &events).unwrap();
        let (tx, handle) =
            spawn_with_witness(&cfg, ChainEncoder::new(None), Some(Box::new(witness))).unwrap();
        for i in 0..5 {
            let body = EventBody::Policy(PolicyEvent {
                action: "reloaded".into(),
                hash: None,
                actor: None,
                message: None,
            });
            assert!(tx.emit(Event::now(i, body)));
        }
        // Poll (the writer runs on its own schedule) until a periodic checkpoint names seq 4.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&cps).unwrap_or_default();
            if text.contains("\"cause\":\"periodic\"") && text.contains("\"seq\":4,") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no periodic checkpoint: {text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Quiet: no new periodic checkpoints while nothing is written.
        let count = || std::fs::read_to_string(&cps).unwrap().lines().count();
        let before = count();
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(count(), before);
        // The server still runs: a checkpoint taken now verifies against the live log.
        let r = verify_checkpoints(&cps, std::slice::from_ref(&events), None);
        assert!(r.ok, "{r}");
        handle.shutdown().await;
    }

    /// One run of a keyed writer on `cps`: open (resuming), `count` periodic checkpoints of
    /// log lines from `seq` on. Returns the number the first of them got.
    fn run_writer(cps: &Path, log: &Path, seq: u64, count: u64) -> u64 {
        let mut w = CheckpointWriter::open(cps, Some(&key()), log).unwrap();
        let first = w.next_n;
        for s in seq..seq + count {
            w.witness(
                &WitnessCause::Periodic,
                Some(&log_line(s)),
                SinkTally::default(),
            )
            .unwrap();
        }
        first
    }

    fn kinds(r: &CheckpointReport) -> Vec<CheckpointProblemKind> {
        r.problems.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn a_torn_last_checkpoint_is_a_torn_line_and_the_checkpoints_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let cps = dir.path().join("cp.jsonl");
        let log = write_log(dir.path(), "events.jsonl", 0..10);
        let verify =
            || verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
        assert_eq!(run_writer(&cps, &log, 0, 3), 0);
        assert!(verify().ok);
        // A crash while writing checkpoint 2: its last 40 bytes and the `\n` never made it.
        let bytes = std::fs::read(&cps).unwrap();
        std::fs::write(&cps, &bytes[..bytes.len() - 41]).unwrap();
        let r = verify();
        assert_eq!(kinds(&r), [CheckpointProblemKind::TornLine], "{r}");
        assert!(r.torn_lines_only() && !r.ok, "{r}");
        assert!(
            r.to_string().starts_with("checkpoints: TORN LINES, 2 read"),
            "{r}"
        );
        assert!(
            r.problems[0].detail.contains("cp.jsonl:3: incomplete line"),
            "{r}"
        );

        // Restart: the torn line is ended, numbering goes on after the last whole checkpoint.
        assert_eq!(run_writer(&cps, &log, 3, 2), 2);
        let text = std::fs::read_to_string(&cps).unwrap();
        assert_eq!(
            text.lines().count(),
            5,
            "the new checkpoints start a line: {text}"
        );
        // Restart again: the chain goes on (it used to restart at 0 here).
        assert_eq!(run_writer(&cps, &log, 5, 1), 4);
        let r = verify();
        assert_eq!(kinds(&r), [CheckpointProblemKind::TornLine], "{r}");
        assert!(
            r.problems[0]
                .detail
                .contains("cp.jsonl:3: not a record, and the chain continues across it"),
            "{r}"
        );
        assert_eq!((r.checkpoints, r.last.as_ref().map(|c| c.n)), (5, Some(4)));
        assert!(
            r.to_string().starts_with("checkpoints: TORN LINES, 5 read"),
            "{r}"
        );
    }

    #[test]
    fn junk_after_the_last_checkpoint_does_not_restart_the_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let cps = dir.path().join("cp.jsonl");
        let log = write_log(dir.path(), "events.jsonl", 0..10);
        run_writer(&cps, &log, 0, 2);
        let mut file = std::fs::OpenOptions::new().append(true).open(&cps).unwrap();
        file.write_all(b"junk\n\0\0\0\0\n").unwrap();
        assert_eq!(run_writer(&cps, &log, 2, 1), 2);
        let r = verify_checkpoints(&cps, &[log], Some(key().as_bytes()));
        assert_eq!(
            kinds(&r),
            [
                CheckpointProblemKind::TornLine,
                CheckpointProblemKind::TornLine
            ],
            "{r}"
        );
        assert_eq!(r.last.map(|c| c.n), Some(2));
    }

    /// Only a crash's pattern is a torn line: a line where a checkpoint was, or a whole object,
    /// or a damaged checkpoint is reported as tampering wherever it is, and a cut checkpoint is
    /// a torn line only when nothing links to it (as the event log's rule has it).
    #[test]
    fn a_line_that_hides_a_checkpoint_is_tampering_not_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let cps = dir.path().join("cp.jsonl");
        let log = write_log(dir.path(), "events.jsonl", 0..10);
        run_writer(&cps, &log, 0, 4);
        let text = std::fs::read_to_string(&cps).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let check = |replace: &str| {
            let mut edited = lines.clone();
            edited[2] = replace;
            std::fs::write(&cps, format!("{}\n", edited.join("\n"))).unwrap();
            let r = verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
            assert!(!r.ok && !r.torn_lines_only(), "{replace}: {r}");
            assert!(r.to_string().starts_with("checkpoints: FAILED"), "{r}");
            r
        };
        // Checkpoint 2 cut short (a "torn" line in the middle), or replaced with junk:
        // checkpoint 3 links to it, so it was not a crash.
        let cut = &lines[2][..lines[2].len() - 40];
        for replace in [cut, "junk"] {
            let r = check(replace);
            assert_eq!(
                kinds(&r),
                [
                    CheckpointProblemKind::Unreadable,
                    CheckpointProblemKind::CheckpointsRemoved
                ],
                "{r}"
            );
            assert!(
                r.problems[0].detail.contains("does not continue across it"),
                "{r}"
            );
        }
        // A whole JSON object, even one the chain continues across: no crash writes one.
        let mut edited = lines.clone();
        edited.insert(2, "{\"n\":\"x\"}");
        std::fs::write(&cps, format!("{}\n", edited.join("\n"))).unwrap();
        let r = verify_checkpoints(&cps, std::slice::from_ref(&log), Some(key().as_bytes()));
        assert_eq!(kinds(&r), [CheckpointProblemKind::Unreadable], "{r}");
        assert!(
            r.problems[0].detail.contains("which no crash leaves"),
            "{r}"
        );
        // A checkpoint whose fields were damaged (it still has its `n`).
        let damaged = lines[2].replace("\"prev\":", "\"prev\":1,\"x\":");
        let r = check(&damaged);
        assert_eq!(r.problems[0].kind, CheckpointProblemKind::Forged, "{r}");
        assert_eq!(r.problems[0].n, Some(2), "{r}");
        // The last checkpoint cut: indistinguishable from a crash, so a torn line, reported
        // (never OK) and the one before it still checked.
        let cut = &lines[3][..lines[3].len() - 40];
        std::fs::write(
            &cps,
            format!("{}\n{}\n{}\n{cut}", lines[0], lines[1], lines[2]),
        )
        .unwrap();
        let r = verify_checkpoints(&cps, &[log], Some(key().as_bytes()));
        assert_eq!(kinds(&r), [CheckpointProblemKind::TornLine], "{r}");
        assert_eq!(r.last.map(|c| c.n), Some(2));
    }

    #[test]
    fn the_default_path_prefers_the_state_dir() {
        let ev = Path::new("/var/log/dnsward/events.jsonl");
        assert_eq!(
            checkpoint_path(None, Some(Path::new("/var/lib/dnsward")), ev),
            Path::new("/var/lib/dnsward/checkpoints.jsonl")
        );
        assert_eq!(
            checkpoint_path(None, None, ev),
            Path::new("/var/log/dnsward/events.jsonl.checkpoints")
        );
        assert_eq!(
            checkpoint_path(Some(Path::new("/x")), Some(Path::new("/y")), ev),
            Path::new("/x")
        );
    }
}
