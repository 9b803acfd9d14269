//! The bounded event sink: a queue the query path can always afford, and one writer task.
//!
//! The query path calls [`EventSender::emit`], which never blocks and never awaits: the queue
//! holds at most `queue` events, and when it is full the event is dropped and counted in
//! `dnsward_events_dropped_total{cause="queue_full"}`. Answering queries matters more than logging
//! them, and the drop counter tells the operator when the sink cannot keep up.
//!
//! One writer task drains the queue. It encodes each event as one line (a [`LineEncoder`]; the
//! default [`JsonLines`] writes one JSON object and `\n`), gathers every event already queued
//! into one buffer (up to [`BATCH_BYTES`]) and writes that buffer with one write call, so a busy
//! resolver costs one syscall per batch rather than per event, and a quiet one still writes each
//! event as soon as the queue is momentarily empty. Blocking file and stdout I/O runs on tokio's
//! blocking pool, never on a worker that answers queries.
//!
//! The file sink rotates by size: before a line would take `events.jsonl` past `rotate_bytes`,
//! it is renamed `events.jsonl.1` (older ones shift up to `.keep`, the oldest is removed) and a
//! new file is started, so no line is ever split across files. A write error is logged, the lines
//! it lost are counted as `dropped{cause="io"}`, any partial line is cut off the file, and the
//! writer carries on with the next batch.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Event;
use crate::config_error::ConfigProblems;
use crate::metrics::{EVENTS_DROPPED_TOTAL, EVENTS_WRITTEN_TOTAL};

/// A batch is written once it reaches this many bytes, even if more events are queued, so one
/// burst cannot hold an unbounded buffer.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Smallest accepted `rotate_bytes`: below this, rotation would churn files for every few events.
const MIN_ROTATE_BYTES: u64 = 4096;
/// Largest accepted `keep`: more rotated files than this is a retention policy for a log shipper.
const MAX_KEEP: u32 = 1000;
/// Largest accepted `queue`: the queue is memory, each event a few hundred bytes.
const MAX_QUEUE: usize = 1 << 24;

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

/// The `[events]` section.
///
/// ```toml
/// [events]
/// sink = "file"                 # "file" | "stdout" (default) | "none"
/// path = "/var/log/dnsward/events.jsonl"
/// rotate_bytes = 67108864       # 64 MiB
/// keep = 8                      # events.jsonl.1 … events.jsonl.8
/// queue = 65536                 # events waiting for the writer; more are dropped and counted
/// allowed = "sampled"           # "off" | "on" | "sampled"
/// sample_one_in = 100
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
    }
}

/// Turns each event into the bytes of one line. The writer calls it once per event, in queue
/// order and from one task, so an encoder may carry state from line to line (a hash chain over
/// the lines plugs in here).
pub trait LineEncoder: Send + 'static {
    /// Append exactly one line for `event` to `out`: a complete JSON object followed by `\n`.
    ///
    /// # Errors
    /// When the event cannot be encoded; the writer then removes anything appended, drops the
    /// event and counts it as `dropped{cause="encode"}`.
    fn encode_line(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error>;
}

/// The plain encoder: one JSON object per line.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl LineEncoder for JsonLines {
    fn encode_line(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut *out, event)?;
        out.push(b'\n');
        Ok(())
    }
}

/// The query path's handle on the event queue. Cheap to clone; every clone feeds the same queue
/// and shares the same sampling counter.
#[derive(Debug, Clone)]
pub struct EventSender {
    /// `None` for a disabled sender (sink = none, tests).
    tx: Option<mpsc::Sender<Event>>,
    /// Shared so that sampling is 1 in N across all clones, not per clone.
    sampling: Arc<Sampling>,
}

#[derive(Debug)]
struct Sampling {
    allowed: AllowedLogging,
    one_in: u64,
    seen: AtomicU64,
}

impl EventSender {
    /// Queue `event` for the writer. Never blocks, never awaits: a full queue drops the event and
    /// increments `dnsward_events_dropped_total{cause="queue_full"}` (`cause="closed"` after
    /// shutdown). Returns whether it was queued; a disabled sender returns `false` and counts
    /// nothing.
    pub fn emit(&self, event: Event) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "queue_full").increment(1);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "closed").increment(1);
                false
            }
        }
    }

    /// Whether events go anywhere at all (false for `sink = "none"`), so callers can skip
    /// building them.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether an *allowed* query should be logged now: `off` → never, `on` → always,
    /// `sampled` → one call in N (a relaxed atomic counter, so the first call logs).
    #[must_use]
    pub fn wants_allowed(&self) -> bool {
        if self.tx.is_none() {
            return false;
        }
        match self.sampling.allowed {
            AllowedLogging::Off => false,
            AllowedLogging::On => true,
            AllowedLogging::Sampled => self
                .sampling
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(self.sampling.one_in),
        }
    }

    /// A sender that discards everything (for tests and `sink = "none"`), counting nothing as
    /// dropped.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            tx: None,
            sampling: Arc::new(Sampling {
                allowed: AllowedLogging::Off,
                one_in: 1,
                seen: AtomicU64::new(0),
            }),
        }
    }
}

/// Owned by whoever shuts the server down; [`EventSinkHandle::shutdown`] drains the queue.
/// Dropping it without calling `shutdown` leaves the writer running until every sender is gone.
#[derive(Debug)]
pub struct EventSinkHandle {
    /// `None` when there is no writer (`sink = "none"`).
    writer: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl EventSinkHandle {
    /// Close the queue (later `emit`s return `false`), write everything still queued, flush and
    /// fsync; resolves when done.
    pub async fn shutdown(self) {
        let Some((stop, task)) = self.writer else {
            return;
        };
        // An error means the writer already ended (every sender dropped): nothing to stop.
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::error!(error = %e, "event writer task failed");
        }
    }
}

/// Open the sink and spawn the writer task on the current tokio runtime, with the plain
/// [`JsonLines`] encoder.
///
/// # Errors
/// When the log file cannot be opened (its directory is not created: a missing directory is a
/// configuration mistake to report), or when called outside a tokio runtime.
pub fn spawn(cfg: &EventsConfig) -> io::Result<(EventSender, EventSinkHandle)> {
    spawn_with_encoder(cfg, JsonLines)
}

/// [`spawn`] with a custom line encoder.
///
/// # Errors
/// As [`spawn`].
pub fn spawn_with_encoder(
    cfg: &EventsConfig,
    encoder: impl LineEncoder,
) -> io::Result<(EventSender, EventSinkHandle)> {
    let output = match cfg.sink {
        SinkKind::None => {
            return Ok((EventSender::disabled(), EventSinkHandle { writer: None }));
        }
        SinkKind::Stdout => Output::Stdout,
        SinkKind::File => {
            let path = cfg.path.clone().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "events: sink = \"file\" needs a path",
                )
            })?;
            let file = open_append(&path)?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            Output::File(RotatingFile {
                path,
                file: Some(file),
                size,
                rotate_bytes: cfg.rotate_bytes.max(1),
                keep: cfg.keep,
            })
        }
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    // mpsc::channel panics on 0; validate() reports it, this keeps an unvalidated config safe.
    let (tx, rx) = mpsc::channel(cfg.queue.clamp(1, MAX_QUEUE));
    let (stop_tx, stop_rx) = oneshot::channel();
    let writer = Writer {
        rx,
        encoder,
        output: Arc::new(Mutex::new(output)),
        buf: Vec::with_capacity(BATCH_BYTES),
        line_ends: Vec::new(),
        kinds: Vec::new(),
    };
    let task = runtime.spawn(writer.run(stop_rx));
    let sender = EventSender {
        tx: Some(tx),
        sampling: Arc::new(Sampling {
            allowed: cfg.allowed,
            one_in: u64::from(cfg.sample_one_in.max(1)),
            seen: AtomicU64::new(0),
        }),
    };
    Ok((
        sender,
        EventSinkHandle {
            writer: Some((stop_tx, task)),
        },
    ))
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open event log {}: {e}", path.display()),
            )
        })
}

/// The writer task's state.
struct Writer<E> {
    rx: mpsc::Receiver<Event>,
    encoder: E,
    /// Behind a mutex only so the blocking pool can borrow it; the writer is its one user.
    output: Arc<Mutex<Output>>,
    /// The batch being built: whole lines only.
    buf: Vec<u8>,
    /// End offset in `buf` of each line, so rotation can cut between lines.
    line_ends: Vec<usize>,
    /// Event kind of each line, for the written/dropped metrics.
    kinds: Vec<&'static str>,
}

impl<E: LineEncoder> Writer<E> {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut stop_armed = true;
        loop {
            let first = tokio::select! {
                event = self.rx.recv() => event,
                signal = &mut stop, if stop_armed => {
                    if signal.is_ok() {
                        // Refuse new events, then fall through to drain what is queued.
                        self.rx.close();
                    }
                    // Sender dropped without a signal: keep running until the senders go.
                    stop_armed = false;
                    continue;
                }
            };
            let Some(first) = first else { break };
            self.push(&first);
            // Take whatever is already queued, without waiting, into the same batch.
            while self.buf.len() < BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(event) => self.push(&event),
                    Err(_) => break,
                }
            }
            self.write_batch().await;
        }
        self.finish().await;
    }

    fn push(&mut self, event: &Event) {
        let before = self.buf.len();
        match self.encoder.encode_line(event, &mut self.buf) {
            Ok(()) => {
                self.line_ends.push(self.buf.len());
                self.kinds.push(event.kind());
            }
            Err(e) => {
                self.buf.truncate(before);
                tracing::warn!(error = %e, kind = event.kind(), "event could not be encoded");
                metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "encode").increment(1);
            }
        }
    }

    async fn write_batch(&mut self) {
        if self.line_ends.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let line_ends = std::mem::take(&mut self.line_ends);
        let output = Arc::clone(&self.output);
        let result = tokio::task::spawn_blocking(move || {
            let outcome = output.lock().write_lines(&buf, &line_ends);
            (outcome, buf, line_ends)
        })
        .await;
        let lines = self.kinds.len();
        let written = match result {
            Ok(((written, error), mut buf, mut line_ends)) => {
                if let Some(e) = error {
                    tracing::warn!(
                        error = %e,
                        lost = lines - written,
                        "event log write failed; continuing with the next batch"
                    );
                }
                // Keep the allocations for the next batch.
                buf.clear();
                line_ends.clear();
                self.buf = buf;
                self.line_ends = line_ends;
                written
            }
            Err(e) => {
                tracing::error!(error = %e, "event log write task failed");
                0
            }
        };
        count_by_kind(&self.kinds[..written], EVENTS_WRITTEN_TOTAL, "kind");
        let lost = lines - written;
        if lost > 0 {
            metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "io").increment(lost as u64);
        }
        self.kinds.clear();
    }

    /// Flush and fsync at the end, so a clean shutdown loses nothing that was queued.
    async fn finish(&mut self) {
        self.write_batch().await;
        let output = Arc::clone(&self.output);
        match tokio::task::spawn_blocking(move || output.lock().sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "event log sync failed at shutdown"),
            Err(e) => tracing::error!(error = %e, "event log sync task failed"),
        }
    }
}

/// One counter increment per kind present, rather than one per line.
fn count_by_kind(kinds: &[&'static str], metric: &'static str, label: &'static str) {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for kind in kinds {
        match counts.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    for (kind, n) in counts {
        metrics::counter!(metric, label => kind).increment(n);
    }
}

/// Where the writer's bytes go. All methods block: they run on the blocking pool.
enum Output {
    Stdout,
    File(RotatingFile),
}

impl Output {
    /// Write the lines of `buf` (line `i` ends at `line_ends[i]`). Returns how many lines were
    /// written in full, and the error that stopped the rest, if any.
    fn write_lines(&mut self, buf: &[u8], line_ends: &[usize]) -> (usize, Option<io::Error>) {
        match self {
            Output::Stdout => {
                let mut out = io::stdout().lock();
                match out.write_all(buf).and_then(|()| out.flush()) {
                    Ok(()) => (line_ends.len(), None),
                    // Stdout cannot be repaired or inspected: count the whole batch as lost.
                    Err(e) => (0, Some(e)),
                }
            }
            Output::File(file) => file.write_lines(buf, line_ends),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout => io::stdout().lock().flush(),
            Output::File(file) => match &file.file {
                Some(f) => f.sync_all(),
                None => Ok(()),
            },
        }
    }
}

/// `events.jsonl` plus `events.jsonl.1` … `.keep`, rotated by size between lines.
struct RotatingFile {
    path: PathBuf,
    /// `None` after a failure that left no usable file; reopened on the next batch.
    file: Option<File>,
    /// Bytes in the current file known to be whole lines.
    size: u64,
    rotate_bytes: u64,
    keep: u32,
}

impl RotatingFile {
    fn write_lines(&mut self, buf: &[u8], line_ends: &[usize]) -> (usize, Option<io::Error>) {
        let mut done = 0; // lines written
        while done < line_ends.len() {
            let start = if done == 0 { 0 } else { line_ends[done - 1] };
            if self.size > 0 && self.size + (line_ends[done] - start) as u64 > self.rotate_bytes {
                self.rotate();
            }
            // The longest run of lines that fits in the current file (at least one line, so a
            // line longer than the limit still gets a file of its own).
            let mut end_line = done + 1;
            while end_line < line_ends.len()
                && self.size + (line_ends[end_line] - start) as u64 <= self.rotate_bytes
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

    fn append(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            let file = open_append(&self.path)?;
            self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("event log is not open"));
        };
        match file.write_all(chunk) {
            Ok(()) => {
                self.size += chunk.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off any partial line so every line in the file stays a whole JSON object;
                // if even that fails, reopen next time rather than keep a file in an unknown state.
                if file.set_len(self.size).is_err() {
                    self.file = None;
                }
                Err(e)
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
        let rotated = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
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
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %self.path.display(), "event log rotation failed");
        }
        // Reopened here so the size restarts from whatever the file now holds (0 after a
        // successful rotation, the old size after a failed one).
        match open_append(&self.path) {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(file);
            }
            Err(e) => {
                tracing::warn!(error = %e, "event log could not be reopened after rotation");
            }
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
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;
    use crate::events::{EventBody, PolicyEvent, QueryEvent};

    /// Counts counters by `name{label=value}`, so tests can check what was recorded.
    #[derive(Default)]
    struct CountingRecorder {
        counters: parking_lot::Mutex<HashMap<String, Arc<AtomicU64>>>,
    }

    impl CountingRecorder {
        fn get(&self, name: &str, label: &str, value: &str) -> u64 {
            self.counters
                .lock()
                .get(&format!("{name}{{{label}={value}}}"))
                .map_or(0, |c| c.load(Ordering::Relaxed))
        }
    }

    impl Recorder for CountingRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<_> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let id = format!("{}{{{}}}", key.name(), labels.join(","));
            Counter::from_arc(Arc::clone(self.counters.lock().entry(id).or_default()))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    fn query(n: u64) -> Event {
        Event::now(
            7,
            EventBody::Query(QueryEvent {
                client: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
                agent: None,
                auth: "none".into(),
                group: Some("agents".into()),
                qname: format!("q{n}.example.com"),
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
        )
    }

    fn file_config(path: &Path) -> EventsConfig {
        EventsConfig {
            sink: SinkKind::File,
            path: Some(path.to_owned()),
            ..EventsConfig::default()
        }
    }

    fn read_events(path: &Path) -> Vec<Event> {
        let text = fs::read_to_string(path).unwrap_or_default();
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every line is one JSON event"))
            .collect()
    }

    fn latency(e: &Event) -> u64 {
        match &e.body {
            EventBody::Query(q) => q.latency_us,
            _ => u64::MAX,
        }
    }

    #[tokio::test]
    async fn events_are_written_as_json_lines_with_every_field() {
        let recorder = CountingRecorder::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (tx, handle) = spawn(&file_config(&path)).unwrap();

        let policy = Event::now(
            3,
            EventBody::Policy(PolicyEvent {
                action: "loaded".into(),
                hash: Some("ab12".into()),
                actor: None,
                message: None,
            }),
        );
        let sent = [query(1), policy, query(2)];
        for e in &sent {
            assert!(tx.emit(e.clone()));
        }
        handle.shutdown().await;

        assert_eq!(read_events(&path), sent);
        let first_line = fs::read_to_string(&path).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(first_line.lines().next().unwrap()).unwrap();
        for field in [
            "ts",
            "policy_version",
            "kind",
            "client",
            "group",
            "qname",
            "qtype",
            "protocol",
            "verdict",
            "reason",
            "rcode",
            "answers",
            "latency_us",
            "cache_hit",
            "upstream",
        ] {
            assert!(first.get(field).is_some(), "missing {field}");
        }
        assert_eq!(recorder.get(EVENTS_WRITTEN_TOTAL, "kind", "query"), 2);
        assert_eq!(recorder.get(EVENTS_WRITTEN_TOTAL, "kind", "policy"), 1);
    }

    #[tokio::test]
    async fn files_rotate_at_the_size_limit_and_keep_only_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let line_len = serde_json::to_vec(&query(10)).unwrap().len() as u64 + 1;
        let cfg = EventsConfig {
            rotate_bytes: line_len * 3,
            keep: 2,
            ..file_config(&path)
        };
        let (tx, handle) = spawn(&cfg).unwrap();
        // Ten lines of the same length: three per file, so files hold 10..12, 13..15, 16..18, 19.
        for n in 10..20 {
            assert!(tx.emit(query(n)));
            // Yield so some events go in separate batches: rotation must work across batches.
            if n % 4 == 0 {
                tokio::task::yield_now().await;
            }
        }
        handle.shutdown().await;

        let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        let numbers = |p: &Path| read_events(p).iter().map(latency).collect::<Vec<_>>();
        assert_eq!(numbers(&path), [19]);
        assert_eq!(numbers(&rotated(1)), [16, 17, 18]);
        assert_eq!(numbers(&rotated(2)), [13, 14, 15]);
        assert!(!rotated(3).exists(), "only `keep` rotated files are kept");
        for p in [path.clone(), rotated(1), rotated(2)] {
            assert!(fs::metadata(&p).unwrap().len() <= cfg.rotate_bytes);
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let recorder = CountingRecorder::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        rt.block_on(async {
            let cfg = EventsConfig {
                queue: 2,
                ..file_config(&path)
            };
            let (tx, handle) = spawn(&cfg).unwrap();
            // No await between these: the writer cannot run, so the queue fills.
            let queued: Vec<bool> = (0..5).map(|n| tx.emit(query(n))).collect();
            assert_eq!(queued, [true, true, false, false, false]);
            assert_eq!(recorder.get(EVENTS_DROPPED_TOTAL, "cause", "queue_full"), 3);

            handle.shutdown().await;
            assert!(!tx.emit(query(9)), "a closed sink queues nothing");
            assert_eq!(recorder.get(EVENTS_DROPPED_TOTAL, "cause", "closed"), 1);
        });
        assert_eq!(
            read_events(&path).iter().map(latency).collect::<Vec<_>>(),
            [0, 1]
        );
    }

    #[tokio::test]
    async fn shutdown_writes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (tx, handle) = spawn(&file_config(&path)).unwrap();
        // Far more than one batch, all queued before the writer gets to run.
        let n = 2000;
        for i in 0..n {
            assert!(tx.emit(query(i)));
        }
        handle.shutdown().await;
        let got: Vec<u64> = read_events(&path).iter().map(latency).collect();
        assert_eq!(got, (0..n).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn write_errors_are_counted_and_the_writer_keeps_going() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let recorder = CountingRecorder::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let (tx, handle) = spawn(&file_config(full)).unwrap();
        assert!(tx.emit(query(1)));
        tokio::task::yield_now().await;
        assert!(tx.emit(query(2)));
        assert!(tx.emit(query(3)));
        handle.shutdown().await;
        assert_eq!(recorder.get(EVENTS_DROPPED_TOTAL, "cause", "io"), 3);
    }

    #[tokio::test]
    async fn a_missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/events.jsonl");
        let err = spawn(&file_config(&path)).unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }

    #[test]
    fn wants_allowed_follows_the_config() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let with = |allowed, sample_one_in| EventsConfig {
                sink: SinkKind::Stdout,
                allowed,
                sample_one_in,
                ..EventsConfig::default()
            };
            let count = |tx: &EventSender| (0..1000).filter(|_| tx.wants_allowed()).count();

            let (off, _h1) = spawn(&with(AllowedLogging::Off, 100)).unwrap();
            assert_eq!(count(&off), 0);
            let (on, _h2) = spawn(&with(AllowedLogging::On, 100)).unwrap();
            assert_eq!(count(&on), 1000);
            let (sampled, _h3) = spawn(&with(AllowedLogging::Sampled, 100)).unwrap();
            // Clones share one counter: 1 in 100 overall.
            let clone = sampled.clone();
            assert_eq!(count(&sampled) + count(&clone), 20);
            assert_eq!(count(&EventSender::disabled()), 0);
        });
    }

    #[test]
    fn a_disabled_sender_discards_without_counting() {
        let recorder = CountingRecorder::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        assert!(!EventSender::disabled().emit(query(1)));
        assert!(recorder.counters.lock().is_empty());
    }

    #[tokio::test]
    async fn sink_none_spawns_nothing() {
        let cfg: EventsConfig = toml::from_str("sink = \"none\"").unwrap();
        let (tx, handle) = spawn(&cfg).unwrap();
        assert!(!tx.emit(query(1)));
        handle.shutdown().await;
    }

    #[test]
    fn config_defaults_and_validation() {
        let cfg: EventsConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, EventsConfig::default());
        assert_eq!(cfg.sink, SinkKind::Stdout);
        assert_eq!(cfg.allowed, AllowedLogging::Sampled);
        assert_eq!(
            (cfg.rotate_bytes, cfg.keep, cfg.queue),
            (64 << 20, 8, 65_536)
        );
        let mut problems = ConfigProblems::default();
        cfg.validate("events", &mut problems);
        assert!(problems.is_empty(), "{problems}");

        assert!(toml::from_str::<EventsConfig>("sinks = \"file\"").is_err());
        assert!(toml::from_str::<EventsConfig>("allowed = \"some\"").is_err());

        let bad: EventsConfig = toml::from_str(
            "sink = \"file\"\nrotate_bytes = 10\nkeep = 5000\nqueue = 0\nsample_one_in = 0",
        )
        .unwrap();
        let mut problems = ConfigProblems::default();
        bad.validate("events", &mut problems);
        let keys: Vec<_> = problems
            .problems
            .iter()
            .map(|p| p.location.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "events.path",
                "events.rotate_bytes",
                "events.keep",
                "events.queue",
                "events.sample_one_in"
            ]
        );

        let mut problems = ConfigProblems::default();
        let stray: EventsConfig = toml::from_str("path = \"/tmp/e.jsonl\"").unwrap();
        stray.validate("events", &mut problems);
        assert_eq!(problems.problems[0].location, "events.path");

        let mut problems = ConfigProblems::default();
        let missing_dir: EventsConfig =
            toml::from_str("sink = \"file\"\npath = \"/nonexistent-dir/e.jsonl\"").unwrap();
        missing_dir.validate("events", &mut problems);
        assert!(problems.problems[0].message.contains("does not exist"));
    }
}
