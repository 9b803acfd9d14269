//! Configuration problems, collected rather than returned one at a time.
//!
//! Every stage validates its own section and pushes each problem it finds into a
//! [`ConfigProblems`], tagged with where it was found (a TOML key path, or `file:line`), so that
//! `dnsward check` and a reload can report every problem at once.

use std::fmt;
use std::time::Duration;

/// One problem found in the configuration or a file it pulls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a TOML key path such as `groups[1].cidrs[0]`, or `path/to/file:12`.
    pub location: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Locations hold file names and messages may quote files: neither may drive a
        // terminal or break a log line.
        write!(
            f,
            "{}: {}",
            crate::printable::escaped(&self.location),
            crate::printable::escaped(&self.message)
        )
    }
}

/// Every problem found while loading and validating a configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigProblems {
    /// The problems, in the order they were found.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigProblems {
    /// Record a problem at `location`.
    pub fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            location: location.into(),
            message: message.into(),
        });
    }

    /// True when nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Number of problems recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// Check a duration setting against its accepted range (both ends included), recording
    /// `key: must be between MIN and MAX, got VALUE` (`must be at most MAX, got VALUE` when 0 is
    /// allowed) when it is outside. Returns whether it was inside.
    pub fn check_duration(
        &mut self,
        key: impl Into<String>,
        value: Duration,
        range: DurationRange,
    ) -> bool {
        if range.contains(value) {
            return true;
        }
        self.push(
            key,
            format!("must be {range}, got {}", short_duration(value)),
        );
        false
    }

    /// Check a count setting against `min..=max`, recording `key: must be between MIN and MAX,
    /// got VALUE` when it is outside. Returns whether it was inside.
    pub fn check_count(
        &mut self,
        key: impl Into<String>,
        value: usize,
        (min, max): (usize, usize),
    ) -> bool {
        if (min..=max).contains(&value) {
            return true;
        }
        self.push(key, format!("must be between {min} and {max}, got {value}"));
        false
    }

    /// `Ok(value)` when no problems were recorded, otherwise `Err(self)`.
    ///
    /// # Errors
    /// Returns the collected problems when there is at least one.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// The accepted values of a duration setting, both ends included: every duration the
/// configuration takes has one, so that no value can overflow the arithmetic that turns it into
/// a deadline (`Instant::now() + timeout` panics past the platform's clock) or put a TTL on the
/// wire that RFC 2181 §8 has resolvers read as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// Shortest accepted value.
    pub min: Duration,
    /// Longest accepted value.
    pub max: Duration,
}

impl DurationRange {
    /// From `min` to `max`.
    #[must_use]
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// From zero to `max`.
    #[must_use]
    pub const fn up_to(max: Duration) -> Self {
        Self::new(Duration::ZERO, max)
    }

    /// Whether `value` is accepted.
    #[must_use]
    pub fn contains(&self, value: Duration) -> bool {
        self.min <= value && value <= self.max
    }

    /// `value` brought into the range: for run-time code that must not trust that validation
    /// ran.
    #[must_use]
    pub fn clamp(&self, value: Duration) -> Duration {
        value.clamp(self.min, self.max)
    }
}

impl fmt::Display for DurationRange {
    /// `between 1ms and 5m`, or `at most 1d` when zero is accepted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min.is_zero() {
            write!(f, "at most {}", short_duration(self.max))
        } else {
            write!(
                f,
                "between {} and {}",
                short_duration(self.min),
                short_duration(self.max)
            )
        }
    }
}

/// A duration as a configuration would write it: in the largest unit that divides it (`1ms`,
/// `5m`, `7d`, `18446744073709551615s`), else as humantime writes it (`1ms 500us`).
fn short_duration(d: Duration) -> String {
    const UNITS: [(u128, &str); 5] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let ms = d.as_millis();
    if ms > 0 && d.subsec_nanos().is_multiple_of(1_000_000) {
        for (unit, name) in UNITS {
            if ms.is_multiple_of(unit) {
                return format!("{}{name}", ms / unit);
            }
        }
    }
    humantime::format_duration(d).to_string()
}

/// Most problems reported in full for one file read line by line (a list, a zone, a users file);
/// the file's later problems are summed up by line number only. With [`EXCERPT_CHARS`] per
/// quote, no problem list can carry more than a few short fragments of any file, even a file
/// that is not what the configuration says (`allow_files = ["/etc/shadow"]`).
pub const PROBLEMS_PER_FILE: usize = 5;

/// Longest message of one file problem, in characters, when its text comes from elsewhere (a
/// parser's error may quote what it read); longer ones are cut.
pub const FILE_MESSAGE_CHARS: usize = 160;

/// Most line numbers named in the summary of a file's unreported problems.
const SUMMARY_LINES: usize = 10;

pub use crate::printable::EXCERPT_CHARS;

/// The start of a line (or of a word on it) as a problem may quote it: at most
/// [`EXCERPT_CHARS`] characters, escaped, in quotes.
#[must_use]
pub fn excerpt(text: &str) -> String {
    crate::printable::excerpt(text, EXCERPT_CHARS)
}

/// A message from another parser (hickory's zone parser, say), which may quote what it read:
/// every word is cut to [`EXCERPT_CHARS`] characters and control characters are escaped.
#[must_use]
pub fn clipped(message: &str) -> String {
    message
        .split(' ')
        .map(|word| match word.char_indices().nth(EXCERPT_CHARS) {
            Some((i, _)) => format!("{}…", crate::printable::escaped(&word[..i])),
            None => crate::printable::escaped(word).into_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The problems of one file read line by line, pushed to a [`ConfigProblems`] with a bound:
/// the first [`PROBLEMS_PER_FILE`] in full (`path:line: message`, messages cut at
/// [`FILE_MESSAGE_CHARS`] and escaped), the rest as one summary naming their lines, added when
/// this is dropped. Quote the file only through [`excerpt`].
#[derive(Debug)]
pub struct FileProblems<'a> {
    /// The file, as locations name it.
    file: String,
    /// Where the problems go.
    problems: &'a mut ConfigProblems,
    /// Problems reported in full so far.
    shown: usize,
    /// Lines of the problems not reported in full (the first [`SUMMARY_LINES`]).
    more_lines: Vec<usize>,
    /// True when more lines had problems than `more_lines` names.
    lines_cut: bool,
    /// Problems not reported in full.
    more: usize,
}

impl<'a> FileProblems<'a> {
    /// Collect the problems of `file` into `problems`.
    pub fn new(file: impl Into<String>, problems: &'a mut ConfigProblems) -> Self {
        Self {
            file: file.into(),
            problems,
            shown: 0,
            more_lines: Vec::new(),
            lines_cut: false,
            more: 0,
        }
    }

    /// A problem on 1-based `line`.
    pub fn push(&mut self, line: usize, message: impl AsRef<str>) {
        let location = format!("{}:{line}", self.file);
        self.add(Some(line), location, message.as_ref());
    }

    /// A problem about the whole file (no line).
    pub fn push_file(&mut self, message: impl AsRef<str>) {
        let location = self.file.clone();
        self.add(None, location, message.as_ref());
    }

    /// Problems another reader found in this file (located `file:line` or `file`), in order,
    /// under the same bound.
    pub fn absorb(&mut self, found: ConfigProblems) {
        for p in found.problems {
            let line = p
                .location
                .strip_prefix(self.file.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|n| n.parse().ok());
            self.add(line, p.location, &p.message);
        }
    }

    fn add(&mut self, line: Option<usize>, location: String, message: &str) {
        if self.shown >= PROBLEMS_PER_FILE {
            self.more += 1;
            if let Some(line) = line
                && self.more_lines.last() != Some(&line)
            {
                if self.more_lines.len() < SUMMARY_LINES {
                    self.more_lines.push(line);
                } else {
                    self.lines_cut = true;
                }
            }
            return;
        }
        self.shown += 1;
        let cut = message
            .char_indices()
            .nth(FILE_MESSAGE_CHARS)
            .map(|(i, _)| i);
        let mut message =
            crate::printable::escaped(cut.map_or(message, |i| &message[..i])).into_owned();
        if cut.is_some() {
            message.push('…');
        }
        self.problems.push(location, message);
    }

    /// Problems pushed so far, shown or not.
    #[must_use]
    pub fn count(&self) -> usize {
        self.shown + self.more
    }
}

impl Drop for FileProblems<'_> {
    fn drop(&mut self) {
        if self.more == 0 {
            return;
        }
        let mut lines: Vec<String> = self.more_lines.iter().map(usize::to_string).collect();
        if self.lines_cut {
            lines.push("…".into());
        }
        let message = if self.more_lines.is_empty() {
            format!("{} more problem(s), not shown", self.more)
        } else {
            format!(
                "{} more problem(s), not shown, on line(s) {}",
                self.more,
                lines.join(", ")
            )
        };
        self.problems.push(self.file.clone(), message);
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// The most a list file (`allow_files`, `deny_files`) may hold: 64 MiB (a million-line hosts
/// file is ~30 MB).
pub const MAX_LIST_FILE: u64 = 64 << 20;
/// The most a zone file may hold: 64 MiB.
pub const MAX_ZONE_FILE: u64 = 64 << 20;
/// The most a configuration file may hold: 16 MiB.
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

/// The most a secret, key or token-keys file may hold: 4 MiB (certificates, CA bundles and
/// CRLs may take [`MAX_LIST_FILE`]).
pub const MAX_SMALL_FILE: u64 = 4 << 20;

/// Read a file someone configured, as bytes: it must be a regular file on a disk filesystem
/// and at most `max` bytes. A FIFO would block the reader forever and `/dev/zero` would fill
/// memory; a kernel interface under `/proc`, `/sys` or a tracing or debug filesystem says it is
/// a regular file of size 0 and then blocks (`/proc/kmsg`, `trace_pipe`) or consumes what it
/// reads: each is refused with a message. The file is opened without blocking and checked
/// through the opened descriptor, so it cannot be swapped between the check and the read.
///
/// # Errors
/// A message for the file's problem, without its path (the caller's key or path says which).
pub fn read_regular_file(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    // Refused before opening: opening a FIFO for reading blocks until a writer comes, and
    // opening some devices has effects.
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let file = open_nonblocking(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    if let Some(kind) = pseudo_filesystem(&file) {
        return Err(format!(
            "is a kernel interface on {kind}, not a file: reading it may block or consume it"
        ));
    }
    if meta.len() > max {
        return Err(format!(
            "is {} bytes, over the limit of {max} bytes for such a file",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                "would block: not a file that can be read now".to_string()
            }
            _ => e.to_string(),
        })?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "grew past the limit of {max} bytes while being read"
        ));
    }
    Ok(bytes)
}

/// Write `bytes` to `path` so that readers see the old file or all of the new one: a temporary
/// file beside it, fsync, rename, directory fsync.
///
/// # Errors
/// The write, sync or rename failed (the temporary file is removed).
pub fn write_file_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write().and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn not_regular(meta: &std::fs::Metadata) -> String {
    if meta.is_dir() {
        "is a directory, not a file".to_string()
    } else {
        "is not a regular file (a device, FIFO or socket)".to_string()
    }
}

fn open_nonblocking(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

/// The name of the kernel pseudo-filesystem `file` is on, if it is on one.
#[cfg(target_os = "linux")]
fn pseudo_filesystem(file: &std::fs::File) -> Option<&'static str> {
    use std::os::fd::AsRawFd;
    // SAFETY: `statfs` is plain data, written whole by `fstatfs` on success, and the
    // descriptor is open for the whole call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &raw mut st) } != 0 {
        return None;
    }
    // The magic numbers of linux/magic.h. `f_type`'s width differs between targets.
    #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss)]
    let kind = st.f_type as u64 & 0xffff_ffff;
    Some(match kind {
        0x9fa0 => "procfs",
        0x6265_6572 => "sysfs",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x7363_6673 => "securityfs",
        0x6367_7270 | 0x0027_e0eb => "cgroupfs",
        0x6e73_6673 => "nsfs",
        0x4249_4e4d => "binfmt_misc",
        0xcafe_4a11 => "bpffs",
        _ => return None,
    })
}

#[cfg(not(target_os = "linux"))]
fn pseudo_filesystem(_file: &std::fs::File) -> Option<&'static str> {
    None
}

/// Read a text file someone configured: it must be a regular file (a FIFO would block the
/// reader forever, `/dev/zero` would fill memory: both are refused before they are opened),
/// at most `max` bytes, and UTF-8 (the message names the line of the first byte that is not).
///
/// # Errors
/// A message for the file's problem, without its path (the caller's key or path says which).
pub fn read_text_file(path: &std::path::Path, max: u64) -> Result<String, String> {
    let bytes = read_regular_file(path, max)?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        format!("line {line}: not UTF-8 (byte {at} of the file)")
    })?;
    // A byte-order mark, as Windows editors save UTF-8: not part of the first line's text (an
    // invisible character that would make the first name or key an error).
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let bom = dir.path().join("bom.txt");
        std::fs::write(&bom, "\u{feff}a.example\r\nb.example\r\n").unwrap();
        let text = read_text_file(&bom, 1024).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), ["a.example", "b.example"]);
        // Only a leading one: elsewhere it is text, and the name check says so.
        std::fs::write(&bom, "a.example\n\u{feff}b.example\n").unwrap();
        assert!(read_text_file(&bom, 1024).unwrap().contains('\u{feff}'));
    }

    #[test]
    fn configured_files_must_be_regular_bounded_and_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.txt");
        std::fs::write(&ok, "a.example\nb.example\n").unwrap();
        assert_eq!(read_text_file(&ok, 100).unwrap(), "a.example\nb.example\n");
        // Devices and FIFOs are refused before they are opened (a FIFO would block forever).
        let dev = read_text_file(std::path::Path::new("/dev/zero"), MAX_LIST_FILE);
        assert!(dev.unwrap_err().contains("not a regular file"));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(
                read_text_file(&fifo, 100)
                    .unwrap_err()
                    .contains("not a regular file")
            );
        }
        assert!(
            read_text_file(dir.path(), 100)
                .unwrap_err()
                .contains("directory")
        );
        // Kernel interfaces claim to be regular files of size 0, then block (`/proc/kmsg`,
        // `trace_pipe`) or consume what is read: refused by their filesystem, unread, and a
        // symlink to one too. `check` and a reload hung on `/proc/kmsg` for good.
        #[cfg(target_os = "linux")]
        for path in [
            "/proc/self/status",
            "/proc/kmsg",
            "/sys/kernel/tracing/trace_pipe",
        ] {
            let path = std::path::Path::new(path);
            // Absent, or masked by a container (`/dev/null` bound over `/proc/kmsg`).
            if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let err = read_text_file(path, MAX_LIST_FILE).unwrap_err();
            assert!(
                err.contains("kernel interface"),
                "{}: {err}",
                path.display()
            );
            let link = dir.path().join("link");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(path, &link).unwrap();
            assert!(
                read_regular_file(&link, MAX_LIST_FILE)
                    .unwrap_err()
                    .contains("kernel interface")
            );
        }
        // Over the limit: refused from its size, not read.
        let big = dir.path().join("big.txt");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_LIST_FILE + 1)
            .unwrap();
        assert!(
            read_text_file(&big, MAX_LIST_FILE)
                .unwrap_err()
                .contains("over the limit")
        );
        // Not UTF-8: the line says where.
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, b"one\ntwo\nca\xc3\n").unwrap();
        assert!(
            read_text_file(&bad, 100)
                .unwrap_err()
                .starts_with("line 3: not UTF-8")
        );
    }

    #[test]
    fn a_file_reports_a_few_problems_in_full_and_sums_up_the_rest() {
        let mut problems = ConfigProblems::default();
        {
            let mut file = FileProblems::new("/etc/shadow", &mut problems);
            for line in 1..=30 {
                file.push(
                    line,
                    format!("{}: not a name", excerpt("root:*:20228:0:99999:7:::")),
                );
            }
            assert_eq!(file.count(), 30);
        }
        assert_eq!(problems.len(), PROBLEMS_PER_FILE + 1, "{problems}");
        assert_eq!(problems.problems[0].location, "/etc/shadow:1");
        assert_eq!(
            problems.problems[0].message,
            "\"root:*:20228:0:99999:7::\"…: not a name"
        );
        let summary = &problems.problems[PROBLEMS_PER_FILE];
        assert_eq!(summary.location, "/etc/shadow");
        assert_eq!(
            summary.message,
            "25 more problem(s), not shown, on line(s) 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, …"
        );
    }

    #[test]
    fn a_duration_out_of_its_range_names_the_key_the_range_and_the_value() {
        let ms = Duration::from_millis;
        let mut p = ConfigProblems::default();
        let range = DurationRange::new(ms(1), Duration::from_secs(300));
        assert!(p.check_duration("a", ms(1), range));
        assert!(p.check_duration("a", Duration::from_secs(300), range));
        assert!(!p.check_duration("b", Duration::from_secs(301), range));
        assert!(!p.check_duration("c", Duration::ZERO, range));
        let day = DurationRange::up_to(Duration::from_secs(86_400));
        assert!(p.check_duration("d", Duration::ZERO, day));
        assert!(!p.check_duration("e", Duration::from_secs(u64::MAX), day));
        let text: Vec<String> = p.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "b: must be between 1ms and 5m, got 301s",
                "c: must be between 1ms and 5m, got 0s",
                "e: must be at most 1d, got 18446744073709551615s",
            ]
        );
        assert_eq!(
            DurationRange::new(ms(1500), Duration::from_secs(7 * 86_400)).to_string(),
            "between 1500ms and 7d"
        );
        assert_eq!(range.clamp(Duration::MAX), Duration::from_secs(300));
        assert_eq!(range.clamp(Duration::ZERO), ms(1));
    }

    #[test]
    fn other_parsers_messages_quote_only_short_words() {
        assert_eq!(
            clipped("record type string unknown: 5f2b8c0e9a7d4163b2e1f0a9c8d7e6f5"),
            "record type string unknown: 5f2b8c0e9a7d4163b2e1f0a9…"
        );
        assert_eq!(clipped("bad\u{1b}[0m x"), "bad\\u001b[0m x");
    }

    #[test]
    fn long_or_hostile_messages_are_cut_and_escaped() {
        let mut problems = ConfigProblems::default();
        FileProblems::new("z.zone", &mut problems)
            .push(3, format!("x\u{1b}[2J{}", "y".repeat(500)));
        let m = &problems.problems[0].message;
        assert!(m.starts_with("x\\u001b[2Jyyy"), "{m}");
        assert!(m.ends_with('…'));
        assert!(m.chars().count() < FILE_MESSAGE_CHARS + 12, "{m}");
        // Nothing more than what was pushed: no summary.
        assert_eq!(problems.len(), 1);
        let mut p = ConfigProblems::default();
        p.push("a\u{7}.txt:1", "bad\nname");
        assert_eq!(p.problems[0].to_string(), "a\\u0007.txt:1: bad\\nname");
    }
}
