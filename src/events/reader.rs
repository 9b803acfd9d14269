//! The one reader of the event log's files: which files make up the log, and their lines.
//!
//! `dnsward audit verify`, `dnsward alerts`, `dnsward events tail` and the audit chain's resume
//! all read the log through this module, so they agree on which files belong to it and on what a
//! line is.
//!
//! - [`rotated_files`] lists the current file and its rotated predecessors, oldest first.
//!   A rotated file is named exactly as the sink names it: `events.jsonl.N` with `N` a decimal
//!   number from 1 without leading zeros. `events.jsonl.01`, `events.jsonl.0` and
//!   `events.jsonl.bak` are not part of the log (the sink never writes them; they are an
//!   operator's copies), and a gap in the numbers does not hide older files.
//! - [`LogLines`] reads lines forwards. A line is the bytes up to `\n`. The last line of a file
//!   without its `\n` is *torn* (a crash mid-write) and is returned as such by
//!   [`LogLines::next_line`], or held back by [`LogLines::next_complete_line`] for a reader that
//!   waits for the writer to finish it (`tail -f`).
//! - [`ReverseLines`] reads the complete lines of a file last first, for resuming the chain from
//!   the end of a large file with one read.
//!
//! Bounds: no reader holds more than [`MAX_LINE_BYTES`] of one line. A longer line is not an
//! event (events are a few hundred bytes); its bytes are let go as they are read and it comes
//! back marked *oversize* (forwards) or as `None` (backwards), so a corrupt or runaway file
//! cannot exhaust memory.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Longest line a reader holds. Event lines are a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Bytes read per step when scanning a file backwards.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The rotation number of a file named `name` beside the current file `current_name`: `N` for
/// exactly `current_name.N` as the sink writes it (`N` ≥ 1, decimal, no leading zeros).
#[must_use]
pub fn rotation_number(current_name: &str, name: &str) -> Option<u32> {
    let suffix = name.strip_prefix(current_name)?.strip_prefix('.')?;
    let canonical = !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_digit())
        && !suffix.starts_with('0');
    if !canonical {
        return None;
    }
    suffix.parse::<u32>().ok()
}

/// The event log whose current file is `current`, oldest first: `current.N` … `current.1`, then
/// `current`, only the regular files that exist. Rotated files are found by listing the
/// directory, so a gap (a removed file, a changed `keep`) does not hide older ones, and `.10`
/// sorts before `.9`. See [`rotation_number`] for which names count.
#[must_use]
pub fn rotated_files(current: &Path) -> Vec<PathBuf> {
    let dir = match current.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(current_name), Ok(entries)) = (
        current.file_name().and_then(|n| n.to_str()),
        fs::read_dir(dir),
    ) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(n) = file_name
                .to_str()
                .and_then(|name| rotation_number(current_name, name))
            else {
                continue;
            };
            let path = current.with_file_name(&file_name);
            if path.is_file() {
                rotated.push((n, path));
            }
        }
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if current.is_file() {
        files.push(current.to_path_buf());
    }
    files
}

/// One line read by [`LogLines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1 for the first line of the file.
    pub number: u64,
    /// The line without its `\n`; empty when `oversize`.
    pub bytes: &'a [u8],
    /// Whether the line ended with `\n`; `false` only for a torn last line.
    pub terminated: bool,
    /// The line was longer than the reader's limit; its bytes were let go.
    pub oversize: bool,
}

impl Line<'_> {
    /// Whether the line is empty or only whitespace (readers skip those).
    #[must_use]
    pub fn is_blank(&self) -> bool {
        !self.oversize && self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

/// The lines of one file (or any [`BufRead`]), forwards, each held to a bounded length.
#[derive(Debug)]
pub struct LogLines<R> {
    reader: R,
    /// The bytes of the line being gathered (at most `max`).
    line: Vec<u8>,
    /// The line being gathered outgrew `max`.
    oversize: bool,
    /// Some byte of the line being gathered has been read (an oversize line keeps none).
    started: bool,
    /// The line in `line` was handed out; clear it before gathering the next.
    handed_out: bool,
    /// Lines handed out so far.
    number: u64,
    /// Bytes taken from `reader` so far.
    consumed: u64,
    max: usize,
}

impl LogLines<BufReader<File>> {
    /// The lines of the file at `path`, read through a buffer of `capacity` bytes.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path, capacity: usize) -> io::Result<Self> {
        Ok(Self::new(BufReader::with_capacity(
            capacity,
            File::open(path)?,
        )))
    }
}

impl<R: BufRead> LogLines<R> {
    /// Lines of `reader`, at most [`MAX_LINE_BYTES`] each.
    pub fn new(reader: R) -> Self {
        Self::with_limit(reader, MAX_LINE_BYTES)
    }

    /// Lines of `reader`, at most `max` bytes each.
    pub fn with_limit(reader: R, max: usize) -> Self {
        Self {
            reader,
            line: Vec::new(),
            oversize: false,
            started: false,
            handed_out: false,
            number: 0,
            consumed: 0,
            max,
        }
    }

    /// Lines handed out so far: the number of the last one.
    #[must_use]
    pub fn lines_read(&self) -> u64 {
        self.number
    }

    /// Bytes taken from the reader so far (complete lines, plus a held-back partial line).
    #[must_use]
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The next line; at the end of the input, the torn last line if there is one
    /// (`terminated: false`), then `None`.
    ///
    /// # Errors
    /// When reading fails.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        let terminated = self.gather()?;
        if !terminated && !self.started {
            return Ok(None);
        }
        Ok(Some(self.hand_out(terminated)))
    }

    /// The next complete line, or `None` at the end of the input. A partial last line is kept
    /// and completed by later calls once its writer has appended the rest (the reader is read
    /// again after it returned end of input, as a `File` allows).
    ///
    /// # Errors
    /// When reading fails.
    pub fn next_complete_line(&mut self) -> io::Result<Option<Line<'_>>> {
        if self.gather()? {
            Ok(Some(self.hand_out(true)))
        } else {
            Ok(None)
        }
    }

    /// Read into the current line up to its `\n` (`true`) or the end of the input (`false`).
    fn gather(&mut self) -> io::Result<bool> {
        if std::mem::take(&mut self.handed_out) {
            self.line.clear();
            self.oversize = false;
            self.started = false;
        }
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(false);
            }
            let (end, used, terminated) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1, true),
                None => (buf.len(), buf.len(), false),
            };
            if self.oversize || self.line.len() + end > self.max {
                // Keep reading to the line's end without keeping its bytes.
                self.oversize = true;
                self.line.clear();
            } else {
                self.line.extend_from_slice(&buf[..end]);
            }
            self.started = true;
            self.reader.consume(used);
            self.consumed += used as u64;
            if terminated {
                return Ok(true);
            }
        }
    }

    fn hand_out(&mut self, terminated: bool) -> Line<'_> {
        self.handed_out = true;
        self.number += 1;
        Line {
            number: self.number,
            bytes: &self.line,
            terminated,
            oversize: self.oversize,
        }
    }
}

/// The complete (`\n`-terminated) lines of a file, last first, read in chunks from the end so
/// that finding the last record costs one read however large the file. An unterminated tail is
/// skipped; a line longer than [`MAX_LINE_BYTES`] comes back as `None`.
#[derive(Debug)]
pub struct ReverseLines {
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
    /// The lines of the file at `path`; `None` when there is no such file.
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub fn open(path: &Path) -> io::Result<Option<Self>> {
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

    /// The line before the last one returned: `Some(None)` for an oversize line, `None` when
    /// the first line of the file has been returned.
    ///
    /// # Errors
    /// When reading fails.
    pub fn next_line(&mut self) -> io::Result<Option<Option<Vec<u8>>>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[PathBuf]) -> Vec<String> {
        files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Every line of `text` as (bytes, terminated, oversize), read with a `max`-byte limit
    /// through a small buffer so lines straddle buffer refills.
    fn lines(text: &[u8], max: usize) -> Vec<(String, bool, bool)> {
        let mut reader = LogLines::with_limit(BufReader::with_capacity(4, text), max);
        let mut out = Vec::new();
        let mut number = 0;
        while let Some(line) = reader.next_line().unwrap() {
            number += 1;
            assert_eq!(line.number, number);
            out.push((
                String::from_utf8_lossy(line.bytes).into_owned(),
                line.terminated,
                line.oversize,
            ));
        }
        assert_eq!(reader.consumed(), text.len() as u64);
        out
    }

    #[test]
    fn rotation_numbers_are_exactly_the_sinks_names() {
        assert_eq!(rotation_number("events.jsonl", "events.jsonl.1"), Some(1));
        assert_eq!(rotation_number("events.jsonl", "events.jsonl.10"), Some(10));
        for not_rotated in [
            "events.jsonl",
            "events.jsonl.",
            "events.jsonl.0",
            "events.jsonl.01",
            "events.jsonl.+1",
            "events.jsonl.1.gz",
            "events.jsonl.bak",
            "events.jsonl1",
            "other.jsonl.1",
            "events.jsonl.99999999999",
        ] {
            assert_eq!(
                rotation_number("events.jsonl", not_rotated),
                None,
                "{not_rotated}"
            );
        }
    }

    #[test]
    fn event_files_lists_rotated_oldest_first_and_only_existing() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("events.jsonl");
        assert!(rotated_files(&current).is_empty());
        for name in [
            "events.jsonl.1",
            "events.jsonl.2",
            "events.jsonl.10",
            "events.jsonl.x",
        ] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        fs::write(dir.path().join("other.jsonl.3"), "").unwrap();
        // A directory with a rotated name is not a file of the log.
        fs::create_dir(dir.path().join("events.jsonl.4")).unwrap();
        assert_eq!(
            names(&rotated_files(&current)),
            ["events.jsonl.10", "events.jsonl.2", "events.jsonl.1"]
        );
        fs::write(&current, "").unwrap();
        assert_eq!(
            names(&rotated_files(&current)),
            [
                "events.jsonl.10",
                "events.jsonl.2",
                "events.jsonl.1",
                "events.jsonl"
            ]
        );
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
        assert_eq!(
            names(&rotated_files(&path)),
            ["events.jsonl.10", "events.jsonl.2", "events.jsonl.1"]
        );
        fs::write(&path, "").unwrap();
        assert_eq!(
            names(&rotated_files(&path)).last().map(String::as_str),
            Some("events.jsonl")
        );
    }

    #[test]
    fn leading_zero_names_and_gaps_follow_the_sinks_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        // `.3` and `.1` with `.2` missing (removed by hand, or `keep` changed); `.01` and `.03`
        // are copies the sink never wrote and would otherwise duplicate `.1` and `.3`.
        for name in [
            "events.jsonl.3",
            "events.jsonl.1",
            "events.jsonl.01",
            "events.jsonl.03",
        ] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        fs::write(&path, "").unwrap();
        assert_eq!(
            names(&rotated_files(&path)),
            ["events.jsonl.3", "events.jsonl.1", "events.jsonl"]
        );
        // A relative current file lists its own directory.
        let relative = Path::new("no-such-dnsward-log.jsonl");
        assert!(rotated_files(relative).is_empty());
    }

    #[test]
    fn lines_come_back_whole_with_their_numbers() {
        assert_eq!(
            lines(b"one\n\ntwo words\n", 64),
            [
                ("one".into(), true, false),
                (String::new(), true, false),
                ("two words".into(), true, false),
            ]
        );
        assert!(lines(b"", 64).is_empty());
    }

    #[test]
    fn a_torn_last_line_is_returned_unterminated() {
        assert_eq!(
            lines(b"{\"a\":1}\n{\"b\":", 64),
            [
                ("{\"a\":1}".into(), true, false),
                ("{\"b\":".into(), false, false),
            ]
        );
    }

    #[test]
    fn an_oversize_line_is_marked_and_its_bytes_let_go() {
        let text = b"short\n0123456789abc\nexactly10!\nlast";
        assert_eq!(
            lines(text, 10),
            [
                ("short".into(), true, false),
                (String::new(), true, true),
                ("exactly10!".into(), true, false),
                ("last".into(), false, false),
            ]
        );
        // A torn line that is also oversize is both.
        assert_eq!(lines(b"0123456789abc", 10), [(String::new(), false, true)]);
        let mut reader = LogLines::with_limit(BufReader::with_capacity(4, &b"  \n"[..]), 10);
        assert!(reader.next_line().unwrap().unwrap().is_blank());
    }

    #[test]
    fn complete_lines_wait_for_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        fs::write(&path, "first\nsec").unwrap();
        let mut reader = LogLines::open(&path, 4).unwrap();
        assert_eq!(
            reader.next_complete_line().unwrap().unwrap().bytes,
            b"first"
        );
        assert_eq!(reader.next_complete_line().unwrap(), None);
        assert_eq!(reader.next_complete_line().unwrap(), None, "still torn");
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        io::Write::write_all(&mut file, b"ond\nthird\n").unwrap();
        let line = reader.next_complete_line().unwrap().unwrap();
        assert_eq!((line.number, line.bytes), (2, &b"second"[..]));
        assert_eq!(
            reader.next_complete_line().unwrap().unwrap().bytes,
            b"third"
        );
        assert_eq!(reader.next_complete_line().unwrap(), None);
        assert_eq!(reader.consumed(), 19);
    }

    #[test]
    fn reverse_lines_skip_a_torn_tail_and_oversize_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let long = "x".repeat(MAX_LINE_BYTES + 2 * TAIL_CHUNK as usize);
        fs::write(&path, format!("a\n{long}\nb\ntorn")).unwrap();
        let mut lines = ReverseLines::open(&path).unwrap().unwrap();
        assert_eq!(lines.next_line().unwrap(), Some(Some(b"b".to_vec())));
        assert_eq!(lines.next_line().unwrap(), Some(None), "oversize");
        assert_eq!(lines.next_line().unwrap(), Some(Some(b"a".to_vec())));
        assert_eq!(lines.next_line().unwrap(), None);
        assert!(
            ReverseLines::open(&dir.path().join("missing"))
                .unwrap()
                .is_none()
        );
    }
}
