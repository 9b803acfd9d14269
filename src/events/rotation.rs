//! Size-based rotation of the event log file: `events.jsonl` plus `events.jsonl.1` …
//! `events.jsonl.<keep>`, newest first.
//!
//! Before a line would take the live file past `rotate_bytes`, the rotated files shift up one
//! number (the one numbered `keep` is removed), the live file becomes `.1` and a new live file
//! is started, so no line is ever split across files. `keep = 0` keeps no rotated file: the live
//! file is simply restarted. [`rotated_path`] is the naming rule; the writer task in
//! [`super::sink`] owns the queue and batching and hands whole lines to `RotatingFile`.
//!
//! Before rotation deletes a file, its last whole line goes to the [`LogWitness`], if there is
//! one, so a verifier can tell "rotated away" from "cut off".
//!
//! A rotation that fails (an unwritable directory) leaves the lines in the live file, which
//! then grows past `rotate_bytes`; it is tried again no sooner than [`ROTATE_RETRY_MIN`] later,
//! the wait doubling per failure up to [`ROTATE_RETRY_MAX`], each failure logged once and
//! counted in `dnsward_events_rotation_failures_total`.
//!
//! About once a second ([`PATH_CHECK_EVERY`]), and at once when asked (a reload), the writer
//! checks that the path still names the file it writes (device and inode). When the file was
//! deleted, or moved away and perhaps replaced (logrotate's `create` mode), it starts writing
//! at the path again: the file there, or a new one. The chain simply continues in it, as it
//! does across rotation; lines written to a deleted file before this check are gone with it,
//! and `audit verify` shows the hole.
//!
//! Event files are opened with `O_NOFOLLOW` (a symlink planted at the log's path is refused,
//! never written through) and get mode 0600, or 0640 with `file_mode = "0640"`, whatever the
//! umask.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::witness::{LogWitness, SinkTally, WitnessCause};
use crate::metrics::{EVENTS_FILE_REOPENED_TOTAL, EVENTS_ROTATION_FAILURES_TOTAL};

/// A witness shared by the writer (periodic checkpoints) and rotation (dropped heads).
pub type SharedWitness = Arc<Mutex<Box<dyn LogWitness>>>;

/// Longest line [`last_line`] looks back for: event lines are far shorter.
const MAX_TAIL_LINE: u64 = 1 << 20;

/// The wait before trying a failed rotation again, doubled per failure...
pub const ROTATE_RETRY_MIN: Duration = Duration::from_secs(5);
/// ... up to this.
pub const ROTATE_RETRY_MAX: Duration = Duration::from_secs(60);

/// How often the writer checks that the log's path still names the file it writes.
pub const PATH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The name of rotated file number `n` (1 = newest) of the log at `path`: `path` with `.n`
/// appended, e.g. `events.jsonl.1`.
#[must_use]
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.to_path_buf().into_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Open `path` for appending, creating it with `mode`; never through a symlink. The mode is set
/// on the open file as well, so the umask cannot widen or narrow it.
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    let named = |e: io::Error| {
        let hint = if e.raw_os_error() == Some(libc::ELOOP) {
            " (it is a symlink; event files are never written through one)"
        } else {
            ""
        };
        io::Error::new(
            e.kind(),
            format!("cannot open event log {}: {e}{hint}", path.display()),
        )
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(named)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(named)?;
    Ok(file)
}

/// The last whole line of the file at `path`, without its `\n` (a torn tail after it is
/// skipped); `None` when it holds none. Looks back at most 1 MiB.
///
/// # Errors
/// The file cannot be read.
pub fn last_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(MAX_TAIL_LINE + 1);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;
    let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
        return Ok(None);
    };
    tail.truncate(end);
    let begin = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if begin == 0 && start > 0 {
        return Ok(None);
    }
    Ok(Some(tail.split_off(begin)))
}

/// `events.jsonl` plus `events.jsonl.1` … `.keep`, rotated by size between lines.
pub(super) struct RotatingFile {
    path: PathBuf,
    /// `None` after a failure that left no usable file; reopened on the next batch.
    file: Option<File>,
    /// Bytes in the current file known to be whole lines.
    size: u64,
    rotate_bytes: u64,
    keep: u32,
    /// Mode of files it creates.
    mode: u32,
    /// Told the last line of each file before rotation deletes it.
    witness: Option<SharedWitness>,
    /// What the sink has dropped so far, for the witness.
    tally: Arc<dyn Fn() -> SinkTally + Send + Sync>,
    /// After a failed rotation: no new attempt before this.
    rotate_retry_at: Option<Instant>,
    /// The wait after the next failed rotation.
    rotate_backoff: Duration,
    /// When the path was last compared with the open file (every [`PATH_CHECK_EVERY`]).
    path_checked: Instant,
    /// Set by a reload: compare before the next write.
    reopen: Arc<AtomicBool>,
    /// Reopening at the path failed and was logged; logged again only once it worked.
    reopen_failed: bool,
    /// A failed write left a partial line that could not be cut off: the length to cut the
    /// file back to before anything else is written to it.
    cut_to: Option<u64>,
}

impl RotatingFile {
    /// Open (creating if needed) `path` for appending; its current length counts towards
    /// `rotate_bytes`. `rotate_bytes` is at least 1.
    ///
    /// # Errors
    /// The file cannot be opened; the message names it.
    #[cfg(test)]
    pub(super) fn open(path: PathBuf, rotate_bytes: u64, keep: u32) -> io::Result<Self> {
        Self::open_with(
            path,
            rotate_bytes,
            keep,
            0o600,
            None,
            Arc::new(SinkTally::default),
        )
    }

    /// [`Self::open`] with the file `mode`, a witness for dropped files and the sink's tally.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub(super) fn open_with(
        path: PathBuf,
        rotate_bytes: u64,
        keep: u32,
        mode: u32,
        witness: Option<SharedWitness>,
        tally: Arc<dyn Fn() -> SinkTally + Send + Sync>,
    ) -> io::Result<Self> {
        let file = open_append(&path, mode)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path,
            file: Some(file),
            size,
            rotate_bytes: rotate_bytes.max(1),
            keep,
            mode,
            witness,
            tally,
            rotate_retry_at: None,
            rotate_backoff: ROTATE_RETRY_MIN,
            path_checked: Instant::now(),
            reopen: Arc::new(AtomicBool::new(false)),
            reopen_failed: false,
            cut_to: None,
        })
    }

    /// Check the path before the next write whenever `flag` is set (and clear it).
    pub(super) fn reopen_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.reopen = flag;
        self
    }

    /// Write the lines of `buf` (line `i` ends at `line_ends[i]`), rotating between lines.
    /// Returns how many lines were written in full, and the error that stopped the rest.
    pub(super) fn write_lines(
        &mut self,
        buf: &[u8],
        line_ends: &[usize],
    ) -> (usize, Option<io::Error>) {
        self.follow_path();
        let mut done = 0; // lines written
        while done < line_ends.len() {
            let start = if done == 0 { 0 } else { line_ends[done - 1] };
            let (line, limit) = ((line_ends[done] - start) as u64, self.rotate_bytes);
            let over = |size: u64| size > 0 && size + line > limit;
            if over(self.size) && self.rotation_due() {
                self.rotate();
            }
            // Rotation failed, or waits for its retry: the current file takes the rest.
            let stuck = over(self.size);
            // The longest run of lines that fits in the current file (at least one line, so a
            // line longer than the limit still gets a file of its own).
            let mut end_line = done + 1;
            while end_line < line_ends.len()
                && (stuck || self.size + (line_ends[end_line] - start) as u64 <= self.rotate_bytes)
            {
                end_line += 1;
            }
            let chunk = &buf[start..line_ends[end_line - 1]];
            if let Err(e) = self.append(chunk) {
                return (done, Some(e));
            }
            done = end_line;
        }
        (done, None)
    }

    /// `fsync` the current file, if one is open.
    pub(super) fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.sync_all(),
            None => Ok(()),
        }
    }

    fn append(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            let file = open_append(&self.path, self.mode)?;
            self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(file);
            self.cut_to = None;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("event log is not open"));
        };
        // A partial line left by an earlier failure: no line may be written after it, or it
        // would run into that line.
        if let Some(len) = self.cut_to {
            file.set_len(len)?;
            self.cut_to = None;
        }
        match file.write_all(chunk) {
            Ok(()) => {
                self.size += chunk.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off any partial line so every line in the file stays a whole JSON object;
                // if even that fails, try again before the next write.
                if file.set_len(self.size).is_err() {
                    self.cut_to = Some(self.size);
                }
                Err(e)
            }
        }
    }

    /// Whether a rotation may be tried now (none failed, or its retry time has come).
    fn rotation_due(&self) -> bool {
        self.rotate_retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// About once a second, or when asked: if the path no longer names the open file (it was
    /// deleted, or moved away), start writing at the path again.
    fn follow_path(&mut self) {
        let asked = self.reopen.swap(false, Ordering::Relaxed);
        if !asked && self.path_checked.elapsed() < PATH_CHECK_EVERY {
            return;
        }
        self.path_checked = Instant::now();
        // Without an open file the next write opens the path anyway.
        let Some(open) = self.file.as_ref().and_then(|f| f.metadata().ok()) else {
            return;
        };
        let reason = match fs::symlink_metadata(&self.path) {
            Ok(at) if at.dev() == open.dev() && at.ino() == open.ino() => return,
            Ok(_) => "replaced",
            Err(e) if e.kind() == io::ErrorKind::NotFound => "deleted",
            Err(e) => {
                if !self.reopen_failed {
                    tracing::warn!(error = %e, path = %self.path.display(), "cannot check the event log's path");
                    self.reopen_failed = true;
                }
                return;
            }
        };
        match open_append(&self.path, self.mode) {
            Ok(file) => {
                if let Some(old) = self.file.take()
                    && let Err(e) = old.sync_all()
                {
                    tracing::warn!(error = %e, "event log sync before reopening failed");
                }
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(file);
                self.cut_to = None;
                self.reopen_failed = false;
                metrics::counter!(EVENTS_FILE_REOPENED_TOTAL, "reason" => reason).increment(1);
                if reason == "deleted" {
                    tracing::warn!(
                        path = %self.path.display(),
                        "the event log file being written was deleted: a new one is started at \
                         its path and the chain continues in it; the records in the deleted file \
                         are gone"
                    );
                } else {
                    tracing::warn!(
                        path = %self.path.display(),
                        "the event log file being written was moved away or replaced \
                         (logrotate?): writing continues in the file now at its path, the chain \
                         continuing"
                    );
                }
            }
            Err(e) => {
                if !self.reopen_failed {
                    tracing::warn!(
                        error = %e,
                        reason,
                        "the event log file being written was {reason}, and none can be opened \
                         at its path: writing continues in the old file"
                    );
                    self.reopen_failed = true;
                }
            }
        }
    }

    /// Shift `path.N` → `path.N+1` (dropping the oldest), `path` → `path.1`, start a new file.
    /// A failed rename is logged and writing continues in the current file: a file too big is
    /// better than lost events.
    fn rotate(&mut self) {
        if let Some(f) = self.file.take()
            && let Err(e) = f.sync_all()
        {
            tracing::warn!(error = %e, "event log sync before rotation failed");
        }
        let rotated = |n: u32| rotated_path(&self.path, n);
        let dropped = if self.keep == 0 {
            self.path.clone()
        } else {
            rotated(self.keep)
        };
        self.witness_drop(&dropped);
        let result = (|| -> io::Result<()> {
            if self.keep == 0 {
                return fs::remove_file(&self.path);
            }
            remove_if_exists(&rotated(self.keep))?;
            for n in (1..self.keep).rev() {
                rename_if_exists(&rotated(n), &rotated(n + 1))?;
            }
            fs::rename(&self.path, rotated(1))
        })();
        match result {
            Ok(()) => {
                self.rotate_retry_at = None;
                self.rotate_backoff = ROTATE_RETRY_MIN;
            }
            Err(e) => {
                metrics::counter!(EVENTS_ROTATION_FAILURES_TOTAL).increment(1);
                let wait = self.rotate_backoff;
                self.rotate_retry_at = Some(Instant::now() + wait);
                self.rotate_backoff = (wait * 2).min(ROTATE_RETRY_MAX);
                tracing::warn!(
                    error = %e,
                    path = %self.path.display(),
                    retry_in = ?wait,
                    "event log rotation failed; writing continues in the current file, which \
                     grows past rotate_bytes until a rotation works"
                );
            }
        }
        // Reopened here so the size restarts from whatever the file now holds (0 after a
        // successful rotation, the old size after a failed one).
        match open_append(&self.path, self.mode) {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(file);
            }
            Err(e) => {
                tracing::warn!(error = %e, "event log could not be reopened after rotation");
            }
        }
    }

    /// Tell the witness the last line of `dropped`, which rotation is about to delete.
    fn witness_drop(&self, dropped: &Path) {
        let Some(witness) = &self.witness else {
            return;
        };
        let line = match last_line(dropped) {
            Ok(line) => line,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(error = %e, file = %dropped.display(), "cannot read the head being rotated away");
                None
            }
        };
        let cause = WitnessCause::Rotation {
            dropped: dropped.to_path_buf(),
        };
        if let Err(e) = witness
            .lock()
            .witness(&cause, line.as_deref(), (self.tally)())
        {
            tracing::error!(error = %e, "rotation checkpoint not written");
        }
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_append_the_number_to_the_whole_file_name() {
        assert_eq!(
            rotated_path(Path::new("/var/log/dnsward/events.jsonl"), 1),
            Path::new("/var/log/dnsward/events.jsonl.1")
        );
        assert_eq!(rotated_path(Path::new("log"), 12), Path::new("log.12"));
    }

    /// What the witness was told: the dropped file (or cause) and the line.
    type Seen = Arc<Mutex<Vec<(String, Option<Vec<u8>>)>>>;

    struct Recorder(Seen);

    impl LogWitness for Recorder {
        fn witness(
            &mut self,
            cause: &WitnessCause,
            last_line: Option<&[u8]>,
            _: SinkTally,
        ) -> io::Result<()> {
            let what = match cause {
                WitnessCause::Rotation { dropped } => dropped.display().to_string(),
                other => other.as_str().to_string(),
            };
            self.0.lock().push((what, last_line.map(<[u8]>::to_vec)));
            Ok(())
        }
    }

    #[test]
    fn rotation_tells_the_witness_the_last_line_of_the_file_it_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let witness: SharedWitness = Arc::new(Mutex::new(Box::new(Recorder(Arc::clone(&seen)))));
        let mut file = RotatingFile::open_with(
            path.clone(),
            8,
            1,
            0o600,
            Some(witness),
            Arc::new(SinkTally::default),
        )
        .unwrap();
        // Files: [aaa bbb] → .1, [ccc ddd] → .1 (deleting the first), [eee].
        assert_eq!(
            file.write_lines(b"aaa\nbbb\nccc\nddd\neee\n", &[4, 8, 12, 16, 20])
                .0,
            5
        );
        let seen = seen.lock().clone();
        let dropped = rotated_path(&path, 1).display().to_string();
        // The first rotation finds no `.1` to delete; the second deletes [aaa bbb].
        assert_eq!(seen, [(dropped, Some(b"bbb".to_vec()))]);
    }

    #[test]
    fn event_files_are_private_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        drop(open_append(&path, 0o600).unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // An existing file with a wider mode is narrowed.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_append(&path, 0o640).unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = open_append(&link, 0o600).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn last_line_skips_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "one\ntwo\nthr").unwrap();
        assert_eq!(last_line(&path).unwrap(), Some(b"two".to_vec()));
        fs::write(&path, "one\n").unwrap();
        assert_eq!(last_line(&path).unwrap(), Some(b"one".to_vec()));
        fs::write(&path, "").unwrap();
        assert_eq!(last_line(&path).unwrap(), None);
    }

    #[test]
    fn a_rotating_file_cuts_between_lines_and_keeps_only_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut file = RotatingFile::open(path.clone(), 8, 1).unwrap();
        // Four 4-byte lines: two fit per 8-byte file.
        let buf = b"aaa\nbbb\nccc\nddd\n";
        assert_eq!(file.write_lines(buf, &[4, 8, 12, 16]).0, 4);
        file.sync().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "ccc\nddd\n");
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 1)).unwrap(),
            "aaa\nbbb\n"
        );
        file.write_lines(b"eee\n", &[4]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "eee\n");
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 1)).unwrap(),
            "ccc\nddd\n"
        );
        assert!(!rotated_path(&path, 2).exists(), "keep = 1 keeps one");
    }

    /// A file whose rotation fails: `events.jsonl.1` is a directory with a file in it, which
    /// neither removal nor rename can replace (even as root, unlike a read-only directory).
    fn blocked_rotation(keep: u32) -> (tempfile::TempDir, PathBuf, RotatingFile, Seen) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let blocker = rotated_path(&path, 1);
        fs::create_dir(&blocker).unwrap();
        fs::write(blocker.join("x"), "x").unwrap();
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let witness: SharedWitness = Arc::new(Mutex::new(Box::new(Recorder(Arc::clone(&seen)))));
        let file = RotatingFile::open_with(
            path.clone(),
            8,
            keep,
            0o600,
            Some(witness),
            Arc::new(SinkTally::default),
        )
        .unwrap();
        (dir, path, file, seen)
    }

    #[test]
    fn a_failed_rotation_waits_before_it_is_tried_again() {
        let (_dir, path, mut file, seen) = blocked_rotation(1);
        // Ten 4-byte lines against an 8-byte limit, one write each: rotation is due before
        // every line from the third on, but after the first failure it is not tried again
        // until the wait is over (each attempt tells the witness first).
        for _ in 0..10 {
            let (n, e) = file.write_lines(b"aaa\n", &[4]);
            assert_eq!((n, e.map(|e| e.to_string())), (1, None));
        }
        assert_eq!(seen.lock().len(), 1, "one attempt, not one per line");
        assert_eq!(
            fs::read(&path).unwrap().len(),
            40,
            "the live file takes the lines"
        );
        let wait = file.rotate_retry_at.unwrap() - Instant::now();
        assert!(wait > ROTATE_RETRY_MIN - Duration::from_secs(1) && wait <= ROTATE_RETRY_MIN);

        // A batch of lines is written whole too, in one write.
        let (n, e) = file.write_lines(b"bbb\nccc\nddd\n", &[4, 8, 12]);
        assert_eq!((n, e.is_none()), (3, true));
        assert_eq!(seen.lock().len(), 1);

        // Each failure doubles the wait, up to a minute.
        let mut waits = Vec::new();
        for _ in 0..5 {
            file.rotate_retry_at = Some(Instant::now() - Duration::from_millis(1));
            file.write_lines(b"eee\n", &[4]);
            waits.push((file.rotate_retry_at.unwrap() - Instant::now()).as_secs() + 1);
        }
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        assert_eq!(seen.lock().len(), 6);

        // Once the way is clear, the next due attempt rotates and the wait starts over.
        fs::remove_dir_all(rotated_path(&path, 1)).unwrap();
        file.rotate_retry_at = Some(Instant::now() - Duration::from_millis(1));
        file.write_lines(b"fff\n", &[4]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "fff\n");
        assert_eq!(fs::read(rotated_path(&path, 1)).unwrap().len(), 72);
        assert_eq!(
            (file.rotate_retry_at, file.rotate_backoff),
            (None, ROTATE_RETRY_MIN)
        );
    }

    #[test]
    fn a_deleted_log_is_started_again_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut file = RotatingFile::open(path.clone(), 1 << 20, 1).unwrap();
        file.write_lines(b"aaa\n", &[4]);
        fs::remove_file(&path).unwrap();
        // Within a second of the last check, the write still goes to the open file...
        file.write_lines(b"bbb\n", &[4]);
        assert!(!path.exists());
        // ... and the next check finds the path empty and starts a new file there.
        file.path_checked = Instant::now() - PATH_CHECK_EVERY;
        file.write_lines(b"ccc\n", &[4]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "ccc\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The size restarts with the new file.
        assert_eq!(file.size, 4);
    }

    #[test]
    fn a_log_moved_away_is_followed_at_once_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let asked = Arc::new(AtomicBool::new(false));
        let mut file = RotatingFile::open(path.clone(), 1 << 20, 1)
            .unwrap()
            .reopen_on(Arc::clone(&asked));
        file.write_lines(b"aaa\n", &[4]);
        let moved = dir.path().join("events.jsonl-20261201");
        fs::rename(&path, &moved).unwrap();
        fs::write(&path, "").unwrap();
        // Until the check, lines follow the renamed file (the same open file)...
        file.write_lines(b"bbb\n", &[4]);
        // ... and a reload's request checks before the next write, not a second later.
        asked.store(true, Ordering::Relaxed);
        file.write_lines(b"ccc\n", &[4]);
        assert!(!asked.load(Ordering::Relaxed));
        assert_eq!(fs::read_to_string(&moved).unwrap(), "aaa\nbbb\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "ccc\n");
        // The same file: nothing to do.
        asked.store(true, Ordering::Relaxed);
        file.write_lines(b"ddd\n", &[4]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "ccc\nddd\n");
    }

    #[test]
    fn a_partial_line_that_could_not_be_cut_is_cut_before_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut file = RotatingFile::open(path.clone(), 1 << 20, 1).unwrap();
        file.write_lines(b"aaa\n", &[4]);
        // What a failed write leaves when even cutting it off failed.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":1,\"pr")
            .unwrap();
        file.cut_to = Some(4);
        assert_eq!(file.write_lines(b"bbb\n", &[4]).0, 1);
        assert_eq!(fs::read_to_string(&path).unwrap(), "aaa\nbbb\n");
        assert_eq!(file.cut_to, None);
    }
}
