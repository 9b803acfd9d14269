//! Continuing the chain after a restart: [`ChainEncoder::resume`] finds the last complete
//! record of the log (the current file, else the newest rotated file holding one), ends a torn
//! last line, and carries on from that record's seq and hash.
//!
//! The last record is found by reading the file backwards
//! ([`ReverseLines`](crate::events::reader::ReverseLines)), so resuming costs one read however
//! large the file.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::AuditKey;
use super::chain::{ChainEncoder, ChainFields, SEAL_SUFFIX_LEN, parse_record};
use crate::events::reader::{ReverseLines, rotated_files};

impl ChainEncoder {
    /// Continue the chain of the event log at `path` (the current file, e.g. `events.jsonl`):
    /// from its last complete record, or, when it is missing, empty or holds no record, from the
    /// newest rotated file that does. With no record anywhere the chain starts at seq 0.
    ///
    /// A torn last line (a crash mid-write) is ended with a `\n`, so the next record starts on a
    /// line of its own and the fragment stays where [`verify`](super::verify()) reports it. A change of key or
    /// mode, or a last record whose seal does not match, is logged as a warning: the chain
    /// continues, and [`verify`](super::verify()) will report the spot.
    ///
    /// # Errors
    /// When a log file exists but cannot be read, or the torn line cannot be ended.
    pub fn resume(path: &Path, key: Option<&AuditKey>) -> io::Result<Self> {
        let mut encoder = Self::new(key);
        end_torn_line(path, "event log")?;
        for file in rotated_files(path).iter().rev() {
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

/// End an unterminated last line of the file at `path` (`what`: "event log", "checkpoint
/// file", for the warning) with `\n`, so the next record starts on a line of its own; the
/// fragment stays, for the verifier to report as a torn line. Nothing to do for a missing or
/// empty file.
///
/// # Errors
/// The file cannot be read or the `\n` cannot be written.
pub(crate) fn end_torn_line(path: &Path, what: &str) -> io::Result<()> {
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
            "{what} ends with a torn line (a crash while writing); it stays in the file and \
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write as _;

    use super::super::testing::{
        chain_lines, encode, event, first, key, run_sink, sink_config, write_log,
    };
    use super::super::{AuditConfig, ProblemKind, verify};
    use super::*;
    use crate::events::reader::MAX_LINE_BYTES;

    /// The backward reader's chunk size: the oversize line spans several chunks.
    const TAIL_CHUNK: u64 = 64 * 1024;
    use super::super::chain::Hasher;

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
        let files = rotated_files(&path);
        assert!(files.len() >= 4, "rotated: {files:?}");
        let report = verify(&files, Some(key.as_bytes()));
        assert!(report.ok, "{report}");
        assert_eq!(report.records, 20);

        // A restart resumes where the last run stopped.
        run_sink(&events, &audit, 20..30).await;
        let files = rotated_files(&path);
        let report = verify(&files, Some(key.as_bytes()));
        assert!(report.ok, "{report}");
        assert_eq!(report.records, 30);
        assert_eq!(report.last.as_ref().map(|p| p.seq), Some(29));
        assert_eq!(report.first.as_ref().map(|p| p.seq), Some(0));

        // A file missing from the middle is a deletion, reported at the start of the next.
        fs::remove_file(&files[1]).unwrap();
        let report = verify(&rotated_files(&path), Some(key.as_bytes()));
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

        let files = rotated_files(&path);
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
}
