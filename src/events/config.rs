//! `[events]`: where events go, how the file rotates, what is sampled, how often it is synced.
//! The section type lives here, next to the sink that reads it; `config.rs` only composes it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config_error::{ConfigProblems, DurationRange};

/// Smallest accepted `rotate_bytes`: below this, rotation would churn files for every few events.
const MIN_ROTATE_BYTES: u64 = 4096;
/// Largest accepted `keep`: more rotated files than this is a retention policy for a log shipper.
const MAX_KEEP: u32 = 1000;
/// Largest accepted `queue`: the queue is memory, each event a few hundred bytes.
pub(super) const MAX_QUEUE: usize = 1 << 24;

/// Where events go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Append to `path`, rotating by size.
    File,
    /// One line per event on standard output: the default, because systemd, Docker and
    /// Kubernetes already collect stdout. Diagnostics (tracing) must then go to stderr.
    #[default]
    Stdout,
    /// Discard events (nothing is counted as dropped).
    None,
}

/// Which *allowed* queries are logged. Blocks, refusals, alerts and containments are always
/// logged whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowedLogging {
    /// Never.
    Off,
    /// Every one: a full audit trail, at the cost of one line per query.
    On,
    /// One in `sample_one_in`: the default, enough for an analyst to see what normal traffic
    /// looks like without a line per query.
    #[default]
    Sampled,
}

fn default_rotate_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_keep() -> u32 {
    8
}
fn default_queue() -> usize {
    65_536
}
fn default_sample_one_in() -> u32 {
    100
}
fn default_security_queue() -> usize {
    65_536
}
fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_unknown_client_per_minute() -> u32 {
    10
}
fn default_aggregate_interval() -> Duration {
    Duration::from_secs(1)
}
/// Longest accepted `aggregate_interval`: longer would hide when a repeated block happened.
const MAX_AGGREGATE_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest accepted non-zero `aggregate_interval`: the writer flushes folded lines on it.
const MIN_AGGREGATE_INTERVAL: Duration = Duration::from_millis(1);
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(60)
}

/// Longest accepted `fsync_interval`: the bound on what a crash can lose.
pub(crate) const MAX_FSYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Accepted `checkpoint_interval`: at least 1s, as each checkpoint costs an fsync of two files;
/// at most a day, or the log's tail would go that long without a witness.
pub const CHECKPOINT_INTERVAL: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(86_400));

/// Mode of the event files dnsward creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum FileMode {
    /// Owner only (default).
    #[default]
    #[serde(rename = "0600")]
    OwnerOnly,
    /// Owner, and the group reads (a log shipper in the group).
    #[serde(rename = "0640")]
    GroupReadable,
}

impl FileMode {
    /// The permission bits.
    #[must_use]
    pub fn bits(self) -> u32 {
        match self {
            FileMode::OwnerOnly => 0o600,
            FileMode::GroupReadable => 0o640,
        }
    }
}

/// The `[events]` section.
///
/// ```toml
/// [events]
/// sink = "file"                 # "file" | "stdout" (default) | "none"
/// path = "/var/log/dnsward/events.jsonl"
/// rotate_bytes = 67108864       # 64 MiB
/// keep = 8                      # events.jsonl.1 … events.jsonl.8
/// queue = 65536                 # query events waiting for the writer; more are dropped and counted
/// security_queue = 65536        # alerts, containments, policy, admin: written first
/// allowed = "sampled"           # "off" | "on" | "sampled"
/// sample_one_in = 100
/// unknown_client_per_minute = 10 # query events logged per unknown source per minute
/// fsync_interval = "1s"         # a crash loses at most this much of written lines
/// file_mode = "0600"            # or "0640"
/// checkpoint_interval = "1m"    # signed checkpoints of the log's tail (file sink)
/// checkpoint_path = "/var/lib/dnsward/checkpoints.jsonl" # default: [store] state_dir
/// aggregate_interval = "1s"     # identical query events folded into one line with a count
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Where events go (default `stdout`).
    #[serde(default)]
    pub sink: SinkKind,
    /// The log file for `sink = "file"`. Its directory must exist; a relative path is relative
    /// to the working directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Rotate the file before it would grow past this many bytes (default 64 MiB).
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotated files kept (default 8); 0 keeps none (the file is simply restarted).
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Capacity of the queue between the query path and the writer (default 65536 events).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Which allowed queries are logged (default `sampled`).
    #[serde(default)]
    pub allowed: AllowedLogging,
    /// With `allowed = "sampled"`, log one allowed query in this many (default 100).
    #[serde(default = "default_sample_one_in")]
    pub sample_one_in: u32,
    /// Capacity of the security events' own queue (default 65536 events).
    #[serde(default = "default_security_queue")]
    pub security_queue: usize,
    /// Query events logged per unknown source address per minute (default 10); the rest are
    /// counted in `dnsward_events_sampled_out_total{kind="unknown_client"}`.
    #[serde(default = "default_unknown_client_per_minute")]
    pub unknown_client_per_minute: u32,
    /// How often the file is fsynced when something was written (default 1s, at most 60s;
    /// `0s` after every batch): the most a crash or power loss can take of written lines.
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Mode of the event files (default `"0600"`; `"0640"` lets the group read).
    #[serde(default)]
    pub file_mode: FileMode,
    /// How often a signed checkpoint of the log's tail is written (default 1m, 1s to 1d; file
    /// sink only).
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Where checkpoints go; default `checkpoints.jsonl` in `[store] state_dir`, else
    /// `<path>.checkpoints` next to the log. Keep it where whoever can write the log cannot.
    #[serde(default)]
    pub checkpoint_path: Option<PathBuf>,
    /// Identical query events (same client, name, type, verdict, …) within this interval after
    /// a first one are written as one line with `count` (default 1s, at most 60s; `0s` writes
    /// every query on its own line). See [`super::aggregate`].
    #[serde(default = "default_aggregate_interval", with = "humantime_serde")]
    pub aggregate_interval: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            sink: SinkKind::default(),
            path: None,
            rotate_bytes: default_rotate_bytes(),
            keep: default_keep(),
            queue: default_queue(),
            allowed: AllowedLogging::default(),
            sample_one_in: default_sample_one_in(),
            security_queue: default_security_queue(),
            unknown_client_per_minute: default_unknown_client_per_minute(),
            fsync_interval: default_fsync_interval(),
            file_mode: FileMode::default(),
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_path: None,
            aggregate_interval: default_aggregate_interval(),
        }
    }
}

impl EventsConfig {
    /// Check the section, pushing every problem found with its key under `at` (e.g. `events`).
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        match (&self.sink, &self.path) {
            (SinkKind::File, None) => {
                problems.push(format!("{at}.path"), "required when sink = \"file\"");
            }
            (SinkKind::File, Some(path)) => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    problems.push(
                        format!("{at}.path"),
                        format!("directory {} does not exist", dir.display()),
                    );
                } else if path.is_dir() {
                    problems.push(
                        format!("{at}.path"),
                        format!(
                            "{} is a directory: name the log file in it (e.g. {})",
                            path.display(),
                            path.join("events.jsonl").display()
                        ),
                    );
                }
            }
            (_, Some(_)) => problems.push(
                format!("{at}.path"),
                "only used when sink = \"file\"; set sink = \"file\" or remove it",
            ),
            (_, None) => {}
        }
        if self.rotate_bytes < MIN_ROTATE_BYTES {
            problems.push(
                format!("{at}.rotate_bytes"),
                format!("must be at least {MIN_ROTATE_BYTES}"),
            );
        }
        if self.keep > MAX_KEEP {
            problems.push(format!("{at}.keep"), format!("must be at most {MAX_KEEP}"));
        }
        if self.queue == 0 || self.queue > MAX_QUEUE {
            problems.push(
                format!("{at}.queue"),
                format!("must be between 1 and {MAX_QUEUE}"),
            );
        }
        if self.sample_one_in == 0 {
            problems.push(format!("{at}.sample_one_in"), "must be at least 1");
        }
        if self.security_queue == 0 || self.security_queue > MAX_QUEUE {
            problems.push(
                format!("{at}.security_queue"),
                format!("must be between 1 and {MAX_QUEUE}"),
            );
        }
        if self.fsync_interval > MAX_FSYNC_INTERVAL {
            problems.push(
                format!("{at}.fsync_interval"),
                "must be at most 60s: it bounds what a crash can lose",
            );
        }
        problems.check_duration(
            format!("{at}.checkpoint_interval"),
            self.checkpoint_interval,
            CHECKPOINT_INTERVAL,
        );
        if !self.aggregate_interval.is_zero() && self.aggregate_interval < MIN_AGGREGATE_INTERVAL {
            problems.push(
                format!("{at}.aggregate_interval"),
                "must be 0s (no folding) or at least 1ms",
            );
        }
        if self.aggregate_interval > MAX_AGGREGATE_INTERVAL {
            problems.push(
                format!("{at}.aggregate_interval"),
                "must be at most 60s (0s writes every query on its own line)",
            );
        }
        if self.checkpoint_path.is_some() && self.sink != SinkKind::File {
            problems.push(
                format!("{at}.checkpoint_path"),
                "only used when sink = \"file\"",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_log_path_that_is_a_directory_is_a_check_problem() {
        let dir = tempfile::tempdir().unwrap();
        for (path, ok) in [
            (dir.path().join("events.jsonl"), true),
            (dir.path().to_path_buf(), false),
        ] {
            let cfg = EventsConfig {
                sink: SinkKind::File,
                path: Some(path.clone()),
                ..EventsConfig::default()
            };
            let mut problems = ConfigProblems::default();
            cfg.validate("events", &mut problems);
            assert_eq!(problems.is_empty(), ok, "{}: {problems:?}", path.display());
        }
    }
}
