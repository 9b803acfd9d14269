//! The hook through which the event log's head and tail are witnessed somewhere else.
//!
//! Rotation removes the oldest file and a crash or an intruder can cut the newest records; in
//! both cases the log alone just looks shorter. A [`LogWitness`] is told, before rotation drops
//! a file, what that file's last line was, and, every `checkpoint_interval` and at shutdown
//! (after an fsync), what the last line written is. The governance layer implements it
//! (`govern::checkpoint`) by appending signed checkpoint records to a file kept apart from
//! the log; `audit verify` compares them with what the log still holds.

use std::io;
use std::path::PathBuf;

/// Why the witness is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessCause {
    /// Rotation is about to delete `dropped`; the line given is its last whole line.
    Rotation {
        /// The file about to be deleted.
        dropped: PathBuf,
    },
    /// The periodic checkpoint; the line given is the last one written, already fsynced.
    Periodic,
    /// The sink is shutting down; the line given is the last one written, already fsynced.
    Shutdown,
}

impl WitnessCause {
    /// The stable name written in checkpoint records.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            WitnessCause::Rotation { .. } => "rotation",
            WitnessCause::Periodic => "periodic",
            WitnessCause::Shutdown => "shutdown",
        }
    }
}

/// What the sink lost since it started, so a checkpoint also records missing evidence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkTally {
    /// Security events (everything but queries) dropped because their queue was full, or
    /// because the log could not be written and the in-memory backlog was full (or the sink
    /// shut down with it unwritten).
    pub security_dropped: u64,
    /// Query events dropped because their queue was full or the log could not be written.
    pub query_dropped: u64,
}

/// Receives the log's head and tail lines. Called from the blocking pool, one call at a time.
pub trait LogWitness: Send + 'static {
    /// Record that `last_line` (without its `\n`; `None` when the file held no whole line) was
    /// the last line of the log at this point.
    ///
    /// # Errors
    /// When the record cannot be written; the sink logs it and carries on.
    fn witness(
        &mut self,
        cause: &WitnessCause,
        last_line: Option<&[u8]>,
        tally: SinkTally,
    ) -> io::Result<()>;
}
