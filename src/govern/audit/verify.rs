//! Checking the chain over the log's files: [`verify`] reads every line through the one event-log
//! reader ([`LogLines`]), hashes it, and looks up to `LOOKAHEAD` (256) records ahead to tell the
//! kinds of problem apart (see the [parent module](super) for the table).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::PathBuf;

use serde::Deserialize;

use super::chain::{ChainFields, Hasher, SEAL_SUFFIX_LEN, parse_record};
use super::report::{ChainPoint, LogGap, Problem, ProblemKind, VerifyReport};
use super::{ChainMode, key_id};
use crate::events::reader::{LogLines, MAX_LINE_BYTES};

/// How many lines the verifier looks ahead to tell a reorder from a deletion, or an insertion
/// from a modification.
const LOOKAHEAD: usize = 256;

/// Torn lines reported before verification gives up: more than this is not a few crashes but a
/// file that is not a chain (e.g. a plain log from before the chain was turned on).
const MAX_TORN_LINES: usize = 100;

/// Bytes read from a file at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Just the seq of a line that is not a whole record.
#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// How a `log_gap` record starts its `kind` field, as the encoder writes it (inside a JSON
/// string a `"` is escaped, so only the field itself matches).
const GAP_KIND: &[u8] = b"\"kind\":\"log_gap\"";

/// The fields of a `log_gap` record the report shows.
#[derive(Deserialize)]
struct GapFields {
    kind: String,
    ts: String,
    #[serde(flatten)]
    gap: crate::events::LogGapEvent,
}

/// The gap a `log_gap` record accounts for, if `line` is one.
fn gap_of(line: &[u8]) -> Option<(String, crate::events::LogGapEvent)> {
    if !line.windows(GAP_KIND.len()).any(|w| w == GAP_KIND) {
        return None;
    }
    let fields: GapFields = serde_json::from_slice(line).ok()?;
    (fields.kind == "log_gap").then_some((fields.ts, fields.gap))
}

/// A line that is not a record (of the event log, or of the checkpoint file), as read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotRecord<'a> {
    /// Why it is not a record.
    pub why: &'a str,
    /// Whether the line ended with `\n`.
    pub terminated: bool,
    /// The record's number (an event's `seq`, a checkpoint's `n`) when the line is a JSON
    /// object with one: a record whose fields were damaged, rather than a torn line or a
    /// foreign one.
    pub number: Option<u64>,
    /// The line is a whole JSON object: no crash leaves one (a crash cuts a record short of its
    /// closing brace), so one that is not a record was written by someone else.
    pub whole: bool,
}

/// The one rule that tells a torn line (a crash mid-write, perhaps followed by a restart that
/// carried on after the last whole record) from an edit, for the event log and for the
/// checkpoint file ([`crate::govern::checkpoint`]); only the words differ.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineRule {
    /// The file, as in "at the end of the log".
    pub file: &'static str,
    /// A whole JSON object that is not a record, as in "a whole event with no chain fields".
    pub foreign: &'static str,
}

impl LineRule {
    /// The event log's words.
    pub const EVENT_LOG: LineRule = LineRule {
        file: "log",
        foreign: "event with no chain fields",
    };

    /// What `line` is: [`ProblemKind::TornLine`] when it is unterminated, or when it is
    /// neither a damaged record nor (after records) a whole JSON object and the chain carries on
    /// across it or nothing follows it; otherwise the kind of edit it shows. `across`: whether
    /// the next record follows on from the last good one (`None`: no record follows);
    /// `anchored`: a record came before; `torn_before`: torn lines reported already (past
    /// `MAX_TORN_LINES` (100) the file is not taken for a chain with crashes in it).
    pub fn judge(
        &self,
        line: &NotRecord<'_>,
        across: Option<bool>,
        anchored: bool,
        torn_before: usize,
    ) -> (ProblemKind, String) {
        let NotRecord {
            why,
            terminated,
            number,
            whole,
        } = *line;
        let (file, foreign) = (self.file, self.foreign);
        let (kind, detail) = match (terminated, across, number) {
            // A whole object that is not a record after records: no crash writes one (a file
            // from before the chain was on has no record before it).
            (true, Some(true) | None, None) if whole && anchored => (
                ProblemKind::Inserted,
                format!(
                    "a whole {foreign}, which no crash leaves: written into the {file} by \
                     something else ({why})"
                ),
            ),
            (false, _, _) => (
                ProblemKind::TornLine,
                format!("incomplete line, as a crash while writing leaves ({why})"),
            ),
            (true, Some(true), None) => (
                ProblemKind::TornLine,
                format!(
                    "not a record, and the chain continues across it, as after a crash and a \
                     restart ({why})"
                ),
            ),
            (true, None, None) => (
                ProblemKind::TornLine,
                format!(
                    "not a record, at the end of the {file}, as after a crash and a restart that \
                     wrote nothing more ({why})"
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
        if kind == ProblemKind::TornLine && torn_before >= MAX_TORN_LINES {
            return (
                ProblemKind::BadJson,
                format!(
                    "more than {MAX_TORN_LINES} lines that are not records: not a chained \
                     {file}? ({why})"
                ),
            );
        }
        (kind, detail)
    }
}

/// Check the hash chain over `paths`, given in chain order (oldest first, as
/// [`rotated_files`](crate::events::reader::rotated_files) lists them), with the key when the log is keyed. Stops at the first problem other than a
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
            gaps: Vec::new(),
            problems: Vec::new(),
        },
    };
    let mut lines = LineReader {
        paths,
        hasher: &hasher,
        file: 0,
        lines: None,
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
        /// The line is a whole JSON object: no crash leaves one (a crash cuts a record short
        /// of its closing brace), so one without chain fields was written by someone else.
        whole: bool,
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
    /// A `log_gap` record's time and account of the gap.
    gap: Option<Box<(String, crate::events::LogGapEvent)>>,
    /// The seal matches the content (under the verifier's key).
    sealed: bool,
    /// `H(line)`, what the next record's `prev` should be.
    hash: [u8; 32],
}

/// Reads the files in turn through [`LogLines`], each line at most [`MAX_LINE_BYTES`], and
/// hashes each record.
struct LineReader<'a> {
    paths: &'a [PathBuf],
    hasher: &'a Hasher,
    file: usize,
    lines: Option<LogLines<BufReader<File>>>,
}

impl LineReader<'_> {
    /// The next line, or the file index, line number and error when a file cannot be read.
    fn next_entry(&mut self) -> Result<Option<Entry>, (usize, u64, io::Error)> {
        loop {
            let Some(lines) = self.lines.as_mut() else {
                let Some(path) = self.paths.get(self.file) else {
                    return Ok(None);
                };
                let lines =
                    LogLines::open(path, READ_BUFFER_BYTES).map_err(|e| (self.file, 0, e))?;
                self.lines = Some(lines);
                continue;
            };
            // The number of the line being read, for an error in the middle of it.
            let at = lines.lines_read();
            let line = match lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    self.lines = None;
                    self.file += 1;
                    continue;
                }
                Err(e) => return Err((self.file, at, e)),
            };
            let body = if line.oversize {
                Body::NotRecord {
                    why: format!("line longer than {MAX_LINE_BYTES} bytes"),
                    terminated: line.terminated,
                    seq: None,
                    whole: false,
                }
            } else {
                match parse_record(line.bytes) {
                    Ok(fields) => {
                        let prefix = &line.bytes[..line.bytes.len() - SEAL_SUFFIX_LEN];
                        Body::Record(Record {
                            gap: gap_of(line.bytes).map(Box::new),
                            sealed: self.hasher.digest(prefix) == fields.seal,
                            hash: self.hasher.digest(line.bytes),
                            fields,
                        })
                    }
                    Err(why) => Body::NotRecord {
                        why,
                        terminated: line.terminated,
                        seq: serde_json::from_slice::<SeqOnly>(line.bytes)
                            .ok()
                            .map(|s| s.seq),
                        whole:
                            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
                                line.bytes,
                            )
                            .is_ok(),
                    },
                }
            };
            return Ok(Some(Entry {
                file: self.file,
                line: line.number,
                body,
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
                whole,
            } => {
                // Whether the next record carries on from the last good one, across this line.
                let across = match (&self.anchor, next) {
                    (_, None) => None,
                    (None, Some(_)) => Some(true),
                    (Some(a), Some(n)) => {
                        Some(n.fields.seq == a.seq.saturating_add(1) && n.fields.prev == a.hash)
                    }
                };
                let line = NotRecord {
                    why,
                    terminated: *terminated,
                    number: *seq,
                    whole: *whole,
                };
                let (kind, detail) = LineRule::EVENT_LOG.judge(
                    &line,
                    across,
                    self.anchor.is_some(),
                    self.report.problems.len(),
                );
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
        if let Some((ts, gap)) = record.gap.as_deref() {
            self.report.gaps.push(LogGap {
                at: self.point(entry, record.fields.seq),
                ts: ts.clone(),
                security_lost: gap.security_lost,
                query_lost: gap.query_lost,
                security_delayed: gap.security_delayed,
                since: gap.since.clone(),
                error: gap.error.clone(),
            });
        }
    }

    /// Report the last accepted record, which the current one shows to be bad, and take it back.
    fn blame_anchor(&mut self, kind: ProblemKind, detail: String) {
        let Some(anchor) = self.anchor.take() else {
            return;
        };
        let before = self.before_anchor.take();
        self.report.records -= 1;
        if self
            .report
            .gaps
            .last()
            .is_some_and(|g| g.at.seq == anchor.seq)
        {
            self.report.gaps.pop();
        }
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use std::fs::OpenOptions;
    use std::io::Write as _;

    use super::super::{AuditKey, ChainEncoder};
    use super::*;

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
    fn a_log_gap_record_verifies_and_is_reported() {
        let key = key();
        let mut encoder = ChainEncoder::new(Some(&key));
        let mut lines: Vec<String> = (0..3).map(|i| encode(&mut encoder, &event(i))).collect();
        let gap = crate::events::Event {
            ts: "2026-11-25T19:41:00.000000Z".into(),
            policy_version: 3,
            body: crate::events::EventBody::LogGap(crate::events::LogGapEvent {
                security_lost: 1,
                query_lost: 40,
                security_delayed: 2,
                failed_writes: 9,
                error: "No space left on device (os error 28)".into(),
                since: "2026-11-25T19:40:03.000000Z".into(),
            }),
        };
        lines.push(encode(&mut encoder, &gap));
        lines.push(encode(&mut encoder, &event(4)));
        // A query naming the kind in a string is not a gap.
        let mut tricky = event(5);
        if let crate::events::EventBody::Query(q) = &mut tricky.body {
            q.qname = "\"kind\":\"log_gap\"".into();
        }
        lines.push(encode(&mut encoder, &tricky));
        let report = check(&lines, Some(&key));
        assert!(report.ok, "{report}");
        assert_eq!(report.records, 6);
        assert_eq!(report.gaps.len(), 1, "{report}");
        let found = &report.gaps[0];
        assert_eq!((found.at.line, found.at.seq), (4, 3));
        assert_eq!(
            (
                found.security_lost,
                found.query_lost,
                found.security_delayed
            ),
            (1, 40, 2)
        );
        let text = report.to_string();
        assert!(
            text.contains(
                "events.jsonl:4 (seq 3): the log could not be written from \
                 2026-11-25T19:40:03.000000Z to 2026-11-25T19:41:00.000000Z (No space left on \
                 device (os error 28)): 1 security and 40 query event(s) lost, 2 security \
                 event(s) written late"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["gaps"][0]["query_lost"], 40);
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
    fn a_whole_event_without_chain_fields_is_inserted_not_torn() {
        let forged = r#"{"ts":"2026-12-03T10:00:00Z","policy_version":1,"kind":"policy","action":"reloaded","actor":"alice","message":"forged"}"#;
        for key in [None, Some(key())] {
            // In the middle, and at the end: no crash leaves a whole object without them.
            let mut lines = chain_lines(key.as_ref(), 6);
            lines.insert(3, forged.to_string());
            let report = check(&lines, key.as_ref());
            assert_eq!(first(&report).0, ProblemKind::Inserted, "{report}");
            assert_eq!(first(&report).1, 4, "{report}");
            let mut lines = chain_lines(key.as_ref(), 4);
            lines.push(forged.to_string());
            let report = check(&lines, key.as_ref());
            assert_eq!(first(&report).0, ProblemKind::Inserted, "{report}");
        }
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
}
