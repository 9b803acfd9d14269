//! What [`verify`](super::verify())(super::verify()) found: the kind of each problem, where it is, and the
//! report an analyst reads (`Display`) or a script parses (`Serialize`, for `--json`).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::ChainMode;

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
    /// The file, as given to [`verify`](super::verify()).
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
    /// The file, as given to [`verify`](super::verify()).
    pub file: PathBuf,
    /// Line number in that file, from 1.
    pub line: u64,
    /// The record's seq.
    pub seq: u64,
}

/// A verified `log_gap` record: dnsward could not write the log for a while and says, in the
/// chain, what that cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogGap {
    /// Where the record is.
    pub at: ChainPoint,
    /// When writing worked again (the record's `ts`).
    pub ts: String,
    /// Security events lost for good.
    pub security_lost: u64,
    /// Query events lost.
    pub query_lost: u64,
    /// Security events written late, after the record.
    pub security_delayed: u64,
    /// When the first write failed.
    pub since: String,
    /// Why.
    pub error: String,
}

impl fmt::Display for LogGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log gap recorded at {}:{} (seq {}): the log could not be written from {} to {} \
             ({}): {} security and {} query event(s) lost, {} security event(s) written late",
            self.at.file.display(),
            self.at.line,
            self.at.seq,
            self.since,
            self.ts,
            self.error,
            self.security_lost,
            self.query_lost,
            self.security_delayed
        )
    }
}

/// What [`verify`](super::verify()) found. `Display` is for people; `Serialize` is for `--json`.
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
    /// The `log_gap` records verified: times the log could not be written, and what was lost.
    pub gaps: Vec<LogGap>,
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
        for gap in &self.gaps {
            writeln!(f, "  {gap}")?;
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

#[cfg(test)]
mod tests {
    use super::super::testing::{chain_lines, check, key};

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
}
