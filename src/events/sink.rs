//! The bounded event sink: a queue the query path can always afford, and one writer task.
//!
//! The query path calls [`EventSender::emit`], which never blocks and never awaits. There are
//! two bounded queues: query events go to one (`queue` events), security events (alerts,
//! containments, policy and admin records, auth refusals: everything but queries) to the other
//! (`security_queue`). The writer always takes what the security queue holds first, so a flood
//! of queries can neither fill the security queue nor delay it. A full queue drops the event
//! and counts it in `dnsward_events_dropped_total{cause="queue_full"}` (queries) or
//! `{cause="security_queue_full"}` (security events, also logged as an error and carried in
//! the next checkpoint's tally). Emit never blocks even then: the producer of a security event
//! is often the query path itself (an alert is raised while answering), and a resolver that
//! stalls its answers because its disk is slow fails open for every client, not only the
//! attacker; a full security queue means the disk cannot keep up with the rare kind of event,
//! which the counter, the error log and the checkpoint make visible.
//!
//! The file is fsynced every `fsync_interval` (default 1 s) when something was written, on
//! rotation and at shutdown: a crash or power loss loses at most the lines written in the last
//! `fsync_interval`, plus whatever was still queued. With a [`LogWitness`] (see
//! [`super::witness`]) the writer also hands it the last line written every
//! `checkpoint_interval`, after an fsync, and at shutdown.
//!
//! One writer task drains the queue. Woken by a query event, it lets the burst gather for 50 ms
//! (a security event is written at once), then
//! encodes each event as one line (a [`LineEncoder`]; the default [`JsonLines`] writes one JSON
//! object and `\n`), gathers the queued events into buffers (up to [`BATCH_EVENTS`] each,
//! security events taken first, written in `ts` order) and writes each buffer with one write
//! call, so a busy resolver costs one wakeup per 50 ms and one syscall per batch rather than
//! per event, and a quiet one still writes each query event within 50 ms. Blocking file and stdout I/O runs on tokio's
//! blocking pool, never on a worker that answers queries.
//!
//! The file sink rotates by size (see [`super::rotation`]): before a line would take
//! `events.jsonl` past `rotate_bytes`, it is renamed `events.jsonl.1` (older ones shift up to
//! `.keep`, the oldest is removed) and a new file is started, so no line is ever split across
//! files (a failed rotation is retried no sooner than 5 s later, then 10, 20, … up to a minute).
//! About once a second, and on a reopen request ([`EventSender::reopen_log`], sent by a
//! reload), the file sink checks that the path still names the file it writes: a log deleted
//! or moved away (logrotate's `create` mode) is followed by a new file at the path, the chain
//! continuing in it as it does across rotation.
//!
//! # Write errors (a full disk)
//!
//! A batch that cannot be written (in full or in part) has its partial line cut off the file,
//! and the lines that did not make it are taken back from the encoder
//! ([`LineEncoder::rewind`]): a record that was not written never takes a seq in the hash
//! chain, so what is written stays one unbroken chain. Of the events not written, security
//! events go to an in-memory backlog (at most [`BACKLOG_EVENTS`]) that is written first in the
//! following batches, and retried every second when nothing else arrives; query events, and
//! security events beyond the backlog, are lost: counted in
//! `dnsward_events_dropped_total{cause="io"}` (queries) or `{cause="security_io"}` (security
//! events) and in the checkpoints' `query_dropped` / `security_dropped`. The first record
//! written once writing works again is a `log_gap` event ([`super::LogGapEvent`]) saying how
//! many events were lost, how many were delayed, since when, and the error. The failure is
//! logged once at once, then at most every 5 s with counts, and once when it ends;
//! [`EventSender::log_failing`] (`/readyz`) reports it meanwhile.

use super::config::MAX_QUEUE;
pub use super::config::{AllowedLogging, EventsConfig, FileMode, SinkKind};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Event;
use super::aggregate::{Aggregator, Fold};
use super::rotation::{RotatingFile, SharedWitness};
use super::sampling::UnknownClientSampler;
use super::witness::{LogWitness, SinkTally, WitnessCause};
use crate::metrics::{
    EVENTS_BACKLOG, EVENTS_DROPPED_TOTAL, EVENTS_SAMPLED_OUT_TOTAL, EVENTS_WRITTEN_TOTAL,
};

/// A batch is written once it reaches this many bytes, even if more events are queued, so one
/// burst cannot hold an unbounded buffer.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Most events taken into one batch (a few hundred bytes each: about [`BATCH_BYTES`]).
pub const BATCH_EVENTS: usize = 256;

/// How long the writer lets query events gather after the first one of a burst before
/// writing. Security events (alerts, containments, admin actions) cut the wait short: they
/// are written as soon as they arrive, with whatever queries are queued.
const LINGER: Duration = Duration::from_millis(50);

/// Most batches written per wakeup before the writer looks at its timers again.
const MAX_BATCHES_PER_WAKE: usize = 64;

/// Most security events kept in memory while the log cannot be written, to be written once it
/// can; more are lost (and counted). A few hundred bytes to a few KiB each.
pub const BACKLOG_EVENTS: usize = 4096;

/// How often the writer tries again while the log cannot be written and nothing new arrives.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// While the log cannot be written, at most one warning this often (the first at once).
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Turns each event into the bytes of one line. The writer calls it once per event, in queue
/// order and from one task, so an encoder may carry state from line to line (a hash chain over
/// the lines plugs in here).
pub trait LineEncoder: Send + 'static {
    /// The encoder's state between two lines (for the hash chain: the next seq and the
    /// previous line's hash).
    type Mark: Send + 'static;

    /// Append exactly one line for `event` to `out`: a complete JSON object followed by `\n`.
    ///
    /// # Errors
    /// When the event cannot be encoded; the writer then removes anything appended, drops the
    /// event and counts it as `dropped{cause="encode"}`.
    fn encode_line(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error>;

    /// The state before the next line. The writer takes one before each line it encodes.
    fn mark(&self) -> Self::Mark;

    /// Go back to `mark`, taken before the first of some lines that were encoded but could not
    /// be written: they are not in the log, so the next line encoded takes the place of the
    /// first of them (in the hash chain: its seq and `prev`).
    fn rewind(&mut self, mark: Self::Mark);
}

/// The plain encoder: one JSON object per line.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl LineEncoder for JsonLines {
    type Mark = ();

    fn mark(&self) {}

    fn rewind(&mut self, (): ()) {}

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
    /// `None` for a disabled sender (sink = none, tests). Query events.
    tx: Option<mpsc::Sender<Event>>,
    /// Everything but query events: the priority path.
    security_tx: Option<mpsc::Sender<Event>>,
    /// Shared so that sampling is 1 in N across all clones, not per clone.
    sampling: Arc<Sampling>,
    /// Folding of repeated identical query events (`None`: `aggregate_interval = 0s`, or a
    /// disabled sender).
    aggregator: Option<Arc<Aggregator>>,
    /// Shared with the writer: whether the log is failing, and reopen requests.
    status: Arc<LogStatus>,
}

/// What the writer tells the rest of the server about the log, and what it is asked.
#[derive(Debug, Default)]
struct LogStatus {
    /// The last write failed and none has worked since.
    failing: AtomicBool,
    /// Set to ask the file sink to check its path before the next write (a reload).
    reopen: Arc<AtomicBool>,
    /// Failure warnings logged (tests: tracing's per-thread capture is not reliable while
    /// other tests log from other threads).
    #[cfg(test)]
    failure_warnings: AtomicU64,
    /// Recovery warnings logged.
    #[cfg(test)]
    recovery_warnings: AtomicU64,
}

#[derive(Debug)]
struct Sampling {
    allowed: AllowedLogging,
    one_in: u64,
    seen: AtomicU64,
    /// Unknown sources' query budget.
    unknown: Mutex<UnknownClientSampler>,
    /// Refused credentials' budget per source (TLS and token refusals, unauthenticated admin
    /// requests): as many a minute as an unknown source's queries.
    refused: Mutex<UnknownClientSampler>,
    /// Drops since start, for checkpoints.
    tally: Arc<Tally>,
}

/// Drops since start (full queues, and events the writer could not write), shared with the
/// writer for checkpoints.
#[derive(Debug, Default)]
struct Tally {
    security_dropped: AtomicU64,
    query_dropped: AtomicU64,
}

impl Tally {
    fn snapshot(&self) -> SinkTally {
        SinkTally {
            security_dropped: self.security_dropped.load(Ordering::Relaxed),
            query_dropped: self.query_dropped.load(Ordering::Relaxed),
        }
    }
}

impl EventSender {
    /// Queue `event` for the writer. Never blocks, never awaits: a full queue drops the event and
    /// increments `dnsward_events_dropped_total{cause="queue_full"}` (`cause="closed"` after
    /// shutdown). Returns whether it was queued; a disabled sender returns `false` and counts
    /// nothing.
    pub fn emit(&self, event: Event) -> bool {
        let security = event.is_security();
        let (Some(tx), Some(security_tx)) = (&self.tx, &self.security_tx) else {
            return false;
        };
        let tx = if security { security_tx } else { tx };
        match tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(e)) if security => {
                let n = self
                    .sampling
                    .tally
                    .security_dropped
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "security_queue_full")
                    .increment(1);
                // Logged at 1, 2, 4, 8, …: visible without flooding the diagnostics.
                if n.is_power_of_two() {
                    tracing::error!(
                        kind = e.kind(),
                        dropped = n,
                        "security event queue full: security events are being lost"
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.sampling
                    .tally
                    .query_dropped
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "queue_full").increment(1);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "closed").increment(1);
                false
            }
        }
    }

    /// Queue the event of a query of kind `key` (a hash of everything that makes two query
    /// events identical but their time) received at `received`, unless it folds into an
    /// identical one within `aggregate_interval` (see [`super::aggregate`]): then it is only
    /// counted, and `build` is not called. Returns whether a line was queued.
    pub fn emit_query(
        &self,
        key: u64,
        received: std::time::Instant,
        build: impl Fn() -> Event,
    ) -> bool {
        let Some(agg) = &self.aggregator else {
            return self.emit(build());
        };
        let (fold, summary) = agg.offer(key, received, &build);
        if let Some(summary) = summary {
            self.emit(summary);
        }
        match fold {
            Fold::Folded => false,
            Fold::Log => self.emit(build()),
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

    /// Whether a query event from the unknown source `client` should be logged now (`now` on
    /// the pipeline's clock): the first `unknown_client_per_minute` per source per minute are;
    /// the rest are counted in `dnsward_events_sampled_out_total{kind="unknown_client"}`.
    #[must_use]
    pub fn wants_unknown_client(&self, client: IpAddr, now: Duration) -> bool {
        if self.tx.is_none() {
            return false;
        }
        let admitted = self.sampling.unknown.lock().admit(client, now);
        if !admitted {
            metrics::counter!(EVENTS_SAMPLED_OUT_TOTAL, "kind" => "unknown_client").increment(1);
        }
        admitted
    }

    /// Whether a refusal of `client`'s credentials (`kind`: `auth_refused`, `admin_refused`)
    /// should be logged now: the first `unknown_client_per_minute` per source per minute are,
    /// the rest are counted in `dnsward_events_sampled_out_total{kind}`. Anyone who can reach
    /// a listener can present a bad certificate or token as fast as it likes; logging each
    /// would rotate real evidence (containments, admin changes) out of the log in minutes.
    #[must_use]
    pub fn wants_refused(&self, kind: &'static str, client: IpAddr) -> bool {
        if self.tx.is_none() {
            return false;
        }
        // Minutes of wall time: only which minute a refusal falls in matters.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let admitted = self.sampling.refused.lock().admit(client, now);
        if !admitted {
            metrics::counter!(EVENTS_SAMPLED_OUT_TOTAL, "kind" => kind).increment(1);
        }
        admitted
    }

    /// Whether the event log is failing: its last write failed (a full disk, an I/O error)
    /// and none has worked since, so events are being held in memory or lost. `/readyz`
    /// reports it.
    #[must_use]
    pub fn log_failing(&self) -> bool {
        self.status.failing.load(Ordering::Relaxed)
    }

    /// Ask the file sink to check, before its next write, that the log's path still names the
    /// file it writes, and to start a new file there if not (the log was deleted, or moved
    /// away by logrotate's `create` mode). It also checks on its own about once a second; a
    /// reload asks at once.
    pub fn reopen_log(&self) {
        self.status.reopen.store(true, Ordering::Relaxed);
    }

    /// A sender that discards everything (for tests and `sink = "none"`), counting nothing as
    /// dropped.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            tx: None,
            security_tx: None,
            sampling: Arc::new(Sampling::new(AllowedLogging::Off, 1, 0)),
            aggregator: None,
            status: Arc::new(LogStatus::default()),
        }
    }
}

impl Sampling {
    fn new(allowed: AllowedLogging, one_in: u32, unknown_per_minute: u32) -> Self {
        Self {
            allowed,
            one_in: u64::from(one_in.max(1)),
            seen: AtomicU64::new(0),
            unknown: Mutex::new(UnknownClientSampler::new(unknown_per_minute)),
            refused: Mutex::new(UnknownClientSampler::new(unknown_per_minute)),
            tally: Arc::new(Tally::default()),
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
    spawn_with_extras(cfg, encoder, None, None)
}

/// [`spawn_with_encoder`] with a [`LogWitness`] for the file sink: told the last line of each
/// file rotation deletes, and the last line written every `checkpoint_interval` and at
/// shutdown. Ignored for other sinks.
///
/// # Errors
/// As [`spawn`].
pub fn spawn_with_witness(
    cfg: &EventsConfig,
    encoder: impl LineEncoder,
    witness: Option<Box<dyn LogWitness>>,
) -> io::Result<(EventSender, EventSinkHandle)> {
    spawn_with_extras(cfg, encoder, witness, None)
}

/// The sink with both extras: the checkpoint witness and the notification tap.
///
/// # Errors
/// As [`spawn`].
pub fn spawn_with_extras(
    cfg: &EventsConfig,
    encoder: impl LineEncoder,
    witness: Option<Box<dyn LogWitness>>,
    tap: Option<super::notify::Tap>,
) -> io::Result<(EventSender, EventSinkHandle)> {
    let setup = Setup::new(cfg, witness);
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
            Output::File(
                RotatingFile::open_with(
                    path,
                    cfg.rotate_bytes,
                    cfg.keep,
                    cfg.file_mode.bits(),
                    setup.witness.clone(),
                    Arc::clone(&setup.tally),
                )?
                .reopen_on(Arc::clone(&setup.status.reopen)),
            )
        }
    };
    start(cfg, setup, encoder, tap, output, BACKLOG_EVENTS)
}

/// What the sender, the writer and the output share.
struct Setup {
    sampling: Arc<Sampling>,
    witness: Option<SharedWitness>,
    tally: Arc<dyn Fn() -> SinkTally + Send + Sync>,
    status: Arc<LogStatus>,
}

impl Setup {
    fn new(cfg: &EventsConfig, witness: Option<Box<dyn LogWitness>>) -> Self {
        let sampling = Arc::new(Sampling::new(
            cfg.allowed,
            cfg.sample_one_in,
            cfg.unknown_client_per_minute,
        ));
        let witness: Option<SharedWitness> = match cfg.sink {
            SinkKind::File => witness.map(|w| Arc::new(Mutex::new(w))),
            _ => None,
        };
        let tally = {
            let t = Arc::clone(&sampling.tally);
            Arc::new(move || t.snapshot()) as Arc<dyn Fn() -> SinkTally + Send + Sync>
        };
        Self {
            sampling,
            witness,
            tally,
            status: Arc::new(LogStatus::default()),
        }
    }
}

/// Spawn the writer on `output`, keeping at most `backlog_limit` unwritten security events.
fn start(
    cfg: &EventsConfig,
    setup: Setup,
    encoder: impl LineEncoder,
    tap: Option<super::notify::Tap>,
    output: Output,
    backlog_limit: usize,
) -> io::Result<(EventSender, EventSinkHandle)> {
    let Setup {
        sampling,
        witness,
        tally,
        status,
    } = setup;
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    // mpsc::channel panics on 0; validate() reports it, this keeps an unvalidated config safe.
    let (tx, rx) = mpsc::channel(cfg.queue.clamp(1, MAX_QUEUE));
    let (security_tx, security_rx) = mpsc::channel(cfg.security_queue.clamp(1, MAX_QUEUE));
    let (stop_tx, stop_rx) = oneshot::channel();
    let aggregator = (!cfg.aggregate_interval.is_zero())
        .then(|| Arc::new(Aggregator::new(cfg.aggregate_interval)));
    let writer = Writer {
        aggregator: aggregator.clone(),
        rx,
        security_rx,
        encoder,
        output: Arc::new(Mutex::new(output)),
        buf: Vec::with_capacity(BATCH_BYTES),
        line_ends: Vec::new(),
        lines: Vec::new(),
        fsync_interval: cfg.fsync_interval,
        checkpoint_interval: cfg.checkpoint_interval,
        witness,
        tally,
        drops: Arc::clone(&sampling.tally),
        status: Arc::clone(&status),
        unsynced: false,
        last_line: None,
        last_checkpointed: None,
        tap: tap.filter(|t| !t.is_empty()), // notifications (issue 12)
        backlog: VecDeque::new(),
        backlog_limit,
        outage: None,
        policy_version: 0,
        warn: WarnLimiter::new(WARN_EVERY),
        failure_warned: false,
        security_loss_unlogged: false,
    };
    let task = runtime.spawn(writer.run(stop_rx));
    let sender = EventSender {
        tx: Some(tx),
        security_tx: Some(security_tx),
        sampling,
        aggregator,
        status,
    };
    Ok((
        sender,
        EventSinkHandle {
            writer: Some((stop_tx, task)),
        },
    ))
}

/// The writer task's state.
struct Writer<E: LineEncoder> {
    /// Query events.
    rx: mpsc::Receiver<Event>,
    /// Security events: always taken first.
    security_rx: mpsc::Receiver<Event>,
    encoder: E,
    /// Behind a mutex only so the blocking pool can borrow it; the writer is its one user.
    output: Arc<Mutex<Output>>,
    /// The batch being built: whole lines only.
    buf: Vec<u8>,
    /// End offset in `buf` of each line, so rotation can cut between lines.
    line_ends: Vec<usize>,
    /// The event of each line in `buf`, where it came from and the encoder's state before it:
    /// what to take back, keep or count when the write fails.
    lines: Vec<Line<E::Mark>>,
    /// How often written lines are fsynced (zero: after every batch).
    fsync_interval: Duration,
    /// How often the witness gets the last line written.
    checkpoint_interval: Duration,
    /// The checkpoint writer, if any (file sink only).
    witness: Option<SharedWitness>,
    /// What the sink dropped, for the witness.
    tally: Arc<dyn Fn() -> SinkTally + Send + Sync>,
    /// The same counts, for the writer to add its own losses to.
    drops: Arc<Tally>,
    /// Whether the log is failing, for `/readyz`.
    status: Arc<LogStatus>,
    /// Lines were written since the last fsync.
    unsynced: bool,
    /// The last line written (without `\n`), for checkpoints.
    last_line: Option<Vec<u8>>,
    /// The line the last checkpoint named: a quiet log gets no new periodic checkpoint, so the
    /// checkpoint file grows with activity, not with time.
    last_checkpointed: Option<Vec<u8>>,
    /// Where encoded lines are also handed (webhooks, syslog; issue 12).
    tap: Option<super::notify::Tap>,
    /// The query path's folding table: the writer writes its due lines every interval and
    /// all of them at shutdown.
    aggregator: Option<Arc<Aggregator>>,
    /// Security events that could not be written, oldest first: written first in the next
    /// batches.
    backlog: VecDeque<Event>,
    /// Most events `backlog` holds ([`BACKLOG_EVENTS`]).
    backlog_limit: usize,
    /// Since the last write failed and until one works again: what was lost, for the
    /// `log_gap` record and the warnings.
    outage: Option<Outage>,
    /// The newest policy version seen in an event, for the `log_gap` record.
    policy_version: u64,
    /// Warnings of failed writes: the first at once, then at most one per [`WARN_EVERY`], across
    /// outages (at the edge of a full disk a small `log_gap` record may fit and the next
    /// batch not, many times over).
    warn: WarnLimiter,
    /// The last warning logged was of a failure: its end is logged too (and only then).
    failure_warned: bool,
    /// Security events were lost since the last warning: the next one is an error.
    security_loss_unlogged: bool,
}

/// One line of the batch being written.
struct Line<M> {
    event: Event,
    origin: Origin,
    /// The encoder's state before this line.
    mark: M,
}

/// Where a line of the batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The `log_gap` record of an outage: made again for each attempt, never kept.
    Gap,
    /// The backlog of security events not yet written.
    Backlog,
    /// The queues (or the folding table).
    New,
}

/// A time the log could not be written: from the first failed write to the first that works.
#[derive(Debug)]
struct Outage {
    /// RFC 3339 time of the first failed write.
    since: String,
    /// The first error.
    error: String,
    /// Failed write attempts.
    failed_writes: u64,
    /// Security events lost for good (the backlog was full).
    security_lost: u64,
    /// Query events lost.
    query_lost: u64,
}

impl Outage {
    fn new(error: &io::Error) -> Self {
        Self {
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            error: error.to_string(),
            failed_writes: 0,
            security_lost: 0,
            query_lost: 0,
        }
    }

    /// The `log_gap` record, were writing to work now with `delayed` security events to
    /// write after it.
    fn record(&self, delayed: usize, policy_version: u64) -> Event {
        Event::now(
            policy_version,
            super::EventBody::LogGap(super::LogGapEvent {
                security_lost: self.security_lost,
                query_lost: self.query_lost,
                security_delayed: delayed as u64,
                failed_writes: self.failed_writes,
                error: self.error.clone(),
                since: self.since.clone(),
            }),
        )
    }
}

/// Lets a repeated warning through at once, then at most once per `every`, counting what it
/// held back.
#[derive(Debug)]
struct WarnLimiter {
    every: Duration,
    last: Option<std::time::Instant>,
    held: u64,
}

impl WarnLimiter {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            held: 0,
        }
    }

    /// Whether to log the occurrence at `now`; if so, how many were held back since the last
    /// one logged.
    fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// What woke the writer.
enum Wake {
    /// An event (and whether it came from the security queue), or `None` when both queues
    /// are closed and empty.
    Event(Option<Box<Event>>, bool),
    /// Time to fsync.
    Sync,
    /// Time for a checkpoint.
    Checkpoint,
    /// Time to write the lines of folded queries whose interval ended.
    Fold,
    /// Time to try again: the log could not be written, or a backlog is left.
    Retry,
    /// Keep waiting (a stop signal was handled).
    Nothing,
}

impl<E: LineEncoder> Writer<E> {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut stop_armed = true;
        let mut security_open = true;
        let mut query_open = true;
        let mut sync_tick = tokio::time::interval(
            self.fsync_interval
                .clamp(Duration::from_millis(1), super::config::MAX_FSYNC_INTERVAL),
        );
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Validated to at most a day; clamped anyway, as tokio's interval adds the period to
        // an instant and would panic on a period past the platform's clock.
        let checkpoint_every = self
            .checkpoint_interval
            .min(super::config::CHECKPOINT_INTERVAL.max)
            .max(Duration::from_millis(1));
        let mut checkpoint_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + checkpoint_every,
            checkpoint_every,
        );
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let checkpoints = self.witness.is_some();
        let fold_every = self
            .aggregator
            .as_ref()
            .map_or(Duration::from_secs(3600), |a| a.interval())
            .min(Duration::from_secs(3600)); // validated to at most 60s; as above
        let mut fold_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + fold_every, fold_every);
        fold_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let folding = self.aggregator.is_some();
        let mut retry_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + RETRY_EVERY, RETRY_EVERY);
        retry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retrying = self.outage.is_some() || !self.backlog.is_empty();
            let wake = tokio::select! {
                // In this order: stop, timers, then security before queries, so a queue full
                // of queries never delays an alert.
                biased;
                signal = &mut stop, if stop_armed => {
                    if signal.is_ok() {
                        // Refuse new events, then fall through to drain what is queued.
                        self.rx.close();
                        self.security_rx.close();
                    }
                    // Sender dropped without a signal: keep running until the senders go.
                    stop_armed = false;
                    Wake::Nothing
                }
                // The timers before the queues: they are ready once per interval, and a steady
                // flood of events must not postpone fsyncs and checkpoints.
                _ = sync_tick.tick(), if self.unsynced => Wake::Sync,
                _ = checkpoint_tick.tick(), if checkpoints => Wake::Checkpoint,
                _ = fold_tick.tick(), if folding => Wake::Fold,
                _ = retry_tick.tick(), if retrying => Wake::Retry,
                event = self.security_rx.recv(), if security_open => match event {
                    Some(e) => Wake::Event(Some(Box::new(e)), true),
                    None => { security_open = false; Wake::Event(None, true) }
                },
                event = self.rx.recv(), if query_open => match event {
                    Some(e) => Wake::Event(Some(Box::new(e)), false),
                    None => { query_open = false; Wake::Event(None, false) }
                },
            };
            match wake {
                Wake::Nothing => {}
                Wake::Sync => self.sync().await,
                Wake::Checkpoint => self.checkpoint(WitnessCause::Periodic).await,
                Wake::Fold => self.write_folded(false).await,
                Wake::Retry => {
                    self.write_events(Vec::new()).await;
                    if self.fsync_interval.is_zero() {
                        self.sync().await;
                    }
                }
                Wake::Event(None, _) => {
                    if !security_open && !query_open {
                        break;
                    }
                }
                Wake::Event(Some(first), security) => {
                    // Let a burst of queries gather for a moment before writing: the query
                    // path's sends then wake this task (and the blocking pool) at most once
                    // per LINGER, not once per event. A lone query event still reaches the file
                    // within LINGER; a security event ends the wait at once.
                    let mut early = None;
                    if !security {
                        tokio::select! {
                            () = tokio::time::sleep(LINGER) => {}
                            Some(e) = self.security_rx.recv(), if security_open => early = Some(e),
                        }
                    }
                    let mut first = Some(*first);
                    for _ in 0..MAX_BATCHES_PER_WAKE {
                        // Take whatever is queued, security events first, into the batch;
                        // then write the batch in time order, so the file reads
                        // chronologically unless queries are backlogged by more than a batch
                        // (security events then go ahead of older queries: sort by `ts` to
                        // read across batches).
                        let mut batch: Vec<Event> =
                            first.take().into_iter().chain(early.take()).collect();
                        while batch.len() < BATCH_EVENTS {
                            match self.security_rx.try_recv() {
                                Ok(event) => batch.push(event),
                                Err(_) => match self.rx.try_recv() {
                                    Ok(event) => batch.push(event),
                                    Err(_) => break,
                                },
                            }
                        }
                        if batch.is_empty() && self.backlog.is_empty() {
                            break;
                        }
                        // Stable: equal stamps keep security events first. RFC 3339 UTC
                        // stamps with fixed precision sort as text.
                        batch.sort_by(|a, b| a.ts.cmp(&b.ts));
                        let full = batch.len() == BATCH_EVENTS;
                        self.write_events(batch).await;
                        if self.fsync_interval.is_zero() {
                            self.sync().await;
                        }
                        // Go on while the queues are full, or a backlog is left and the log
                        // takes writes again.
                        if !full && (self.backlog.is_empty() || self.outage.is_some()) {
                            break;
                        }
                    }
                }
            }
        }
        self.finish().await;
    }

    /// Write `events` as one batch, after the `log_gap` record of an outage and up to a
    /// batch of the backlog.
    async fn write_events(&mut self, events: Vec<Event>) {
        if let Some(outage) = &self.outage {
            let gap = outage.record(self.backlog.len(), self.policy_version);
            self.push(gap, Origin::Gap);
        }
        let retry = self.backlog.len().min(BATCH_EVENTS);
        let retried: Vec<Event> = self.backlog.drain(..retry).collect();
        for event in retried {
            self.push(event, Origin::Backlog);
        }
        for event in events {
            self.push(event, Origin::New);
        }
        self.write_batch().await;
    }

    fn push(&mut self, event: Event, origin: Origin) {
        let before = self.buf.len();
        let mark = self.encoder.mark();
        match self.encoder.encode_line(&event, &mut self.buf) {
            Ok(()) => {
                // Notified once, when first encoded: not again when retried from the backlog
                // (nor the gap record, made again for each attempt; it is offered once written).
                if origin == Origin::New
                    && let Some(tap) = &self.tap
                {
                    tap.offer(event.kind(), &self.buf[before..]); // notifications (issue 12)
                }
                if origin == Origin::New {
                    self.policy_version = self.policy_version.max(event.policy_version);
                }
                self.line_ends.push(self.buf.len());
                self.lines.push(Line {
                    event,
                    origin,
                    mark,
                });
            }
            Err(e) => {
                self.buf.truncate(before);
                self.encoder.rewind(mark);
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
        let (written, error) = match result {
            Ok(((written, error), mut buf, mut line_ends)) => {
                if written > 0 {
                    let start = if written == 1 {
                        0
                    } else {
                        line_ends[written - 2]
                    };
                    let end = line_ends[written - 1] - 1;
                    self.last_line = Some(buf[start..end].to_vec());
                    self.unsynced = true;
                    // The gap record is notified once it is in the log.
                    if self.lines[0].origin == Origin::Gap
                        && let Some(tap) = &self.tap
                    {
                        tap.offer("log_gap", &buf[..line_ends[0]]);
                    }
                }
                // Keep the allocations for the next batch.
                buf.clear();
                line_ends.clear();
                self.buf = buf;
                self.line_ends = line_ends;
                (written, error)
            }
            Err(e) => {
                tracing::error!(error = %e, "event log write task failed");
                (0, Some(io::Error::other(e.to_string())))
            }
        };
        let mut lines = std::mem::take(&mut self.lines);
        let unwritten = lines.split_off(written.min(lines.len()));
        let kinds: Vec<&'static str> = lines.iter().map(|l| l.event.kind()).collect();
        count_by_kind(&kinds, EVENTS_WRITTEN_TOTAL, "kind");
        if written > 0 && self.outage.is_some() {
            self.outage_ended(lines[0].origin == Origin::Gap);
        }
        lines.clear();
        self.lines = lines;
        if !unwritten.is_empty() {
            let error = error.unwrap_or_else(|| io::Error::other("not written"));
            self.write_failed(&error, unwritten);
        }
    }

    /// Some lines of the batch were not written: take them back from the chain, keep the
    /// security events for later (as many as the backlog holds), count the rest as lost.
    fn write_failed(&mut self, error: &io::Error, unwritten: Vec<Line<E::Mark>>) {
        let mut unwritten = unwritten.into_iter();
        let Some(Line {
            event,
            origin,
            mark,
        }) = unwritten.next()
        else {
            return;
        };
        self.encoder.rewind(mark);
        let mut retried = Vec::new();
        let (mut security_lost, mut query_lost) = (0_u64, 0_u64);
        for (event, origin) in
            std::iter::once((event, origin)).chain(unwritten.map(|l| (l.event, l.origin)))
        {
            match origin {
                Origin::Gap => {}
                // Back to the front of the backlog, where they came from.
                Origin::Backlog => retried.push(event),
                Origin::New if event.is_security() => {
                    if self.backlog.len() + retried.len() < self.backlog_limit {
                        self.backlog.push_back(event);
                    } else {
                        security_lost += 1;
                    }
                }
                Origin::New => query_lost += 1,
            }
        }
        for event in retried.into_iter().rev() {
            self.backlog.push_front(event);
        }
        if query_lost > 0 {
            metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "io").increment(query_lost);
            self.drops
                .query_dropped
                .fetch_add(query_lost, Ordering::Relaxed);
        }
        if security_lost > 0 {
            metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "security_io")
                .increment(security_lost);
            self.drops
                .security_dropped
                .fetch_add(security_lost, Ordering::Relaxed);
        }
        metrics::gauge!(EVENTS_BACKLOG).set(self.backlog.len() as f64);
        self.status.failing.store(true, Ordering::Relaxed);
        let backlog = self.backlog.len();
        let outage = self.outage.get_or_insert_with(|| Outage::new(error));
        outage.failed_writes += 1;
        outage.security_lost += security_lost;
        outage.query_lost += query_lost;
        self.security_loss_unlogged |= security_lost > 0;
        let Some(held) = self.warn.allow(std::time::Instant::now()) else {
            return;
        };
        self.failure_warned = true;
        #[cfg(test)]
        self.status.failure_warnings.fetch_add(1, Ordering::Relaxed);
        if std::mem::take(&mut self.security_loss_unlogged) {
            tracing::error!(
                error = %error,
                backlog,
                security_lost = outage.security_lost,
                query_lost = outage.query_lost,
                since = %outage.since,
                "event log cannot be written and the backlog of security events is full: \
                 security events are being lost"
            );
        } else if outage.failed_writes == 1 {
            tracing::warn!(
                error = %error,
                backlog,
                query_lost,
                unlogged_failures = held,
                "event log write failed: security events are kept in memory and retried, query \
                 events are lost while it fails"
            );
        } else {
            tracing::warn!(
                error = %error,
                failed_writes = outage.failed_writes,
                backlog,
                security_lost = outage.security_lost,
                query_lost = outage.query_lost,
                since = %outage.since,
                "event log still cannot be written"
            );
        }
    }

    /// A write worked after some failed: the gap record (if `recorded`) is in the log.
    fn outage_ended(&mut self, recorded: bool) {
        let Some(outage) = self.outage.take() else {
            return;
        };
        self.status.failing.store(false, Ordering::Relaxed);
        metrics::gauge!(EVENTS_BACKLOG).set(self.backlog.len() as f64);
        if !std::mem::take(&mut self.failure_warned) {
            // Its failure was not logged either (rate-limited): the log_gap record tells.
            return;
        }
        #[cfg(test)]
        self.status
            .recovery_warnings
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            since = %outage.since,
            error = %outage.error,
            failed_writes = outage.failed_writes,
            security_lost = outage.security_lost,
            query_lost = outage.query_lost,
            backlog = self.backlog.len(),
            recorded,
            "event log can be written again; a log_gap record accounts for what was lost"
        );
    }

    /// fsync what was written.
    async fn sync(&mut self) {
        self.unsynced = false;
        let output = Arc::clone(&self.output);
        match tokio::task::spawn_blocking(move || output.lock().sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "event log sync failed"),
            Err(e) => tracing::error!(error = %e, "event log sync task failed"),
        }
    }

    /// fsync, then hand the witness the last line written: a checkpoint never names a line
    /// that a crash could still take away.
    async fn checkpoint(&mut self, cause: WitnessCause) {
        let Some(witness) = self.witness.clone() else {
            return;
        };
        if cause == WitnessCause::Periodic && self.last_line == self.last_checkpointed {
            return;
        }
        self.last_checkpointed.clone_from(&self.last_line);
        self.unsynced = false;
        let output = Arc::clone(&self.output);
        let last = self.last_line.clone();
        let tally = (self.tally)();
        let result = tokio::task::spawn_blocking(move || {
            output.lock().sync()?;
            witness.lock().witness(&cause, last.as_deref(), tally)
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "event log checkpoint not written"),
            Err(e) => tracing::error!(error = %e, "event log checkpoint task failed"),
        }
    }

    /// Write the lines for folded queries: those whose interval ended, or all of them.
    async fn write_folded(&mut self, all: bool) {
        let Some(agg) = &self.aggregator else {
            return;
        };
        let mut due = agg.take_due(std::time::Instant::now(), all);
        while !due.is_empty() {
            let rest = due.split_off(due.len().min(BATCH_EVENTS));
            self.write_events(due).await;
            due = rest;
        }
    }

    /// Flush and fsync at the end, so a clean shutdown loses nothing that was queued and the
    /// log takes; then the shutdown checkpoint.
    async fn finish(&mut self) {
        self.write_batch().await;
        self.write_folded(true).await;
        // The backlog and the gap record, while the log takes writes.
        while self.outage.is_some() || !self.backlog.is_empty() {
            self.write_events(Vec::new()).await;
            if self.outage.is_some() {
                break;
            }
        }
        let lost = self.backlog.len() as u64;
        if lost > 0 {
            self.backlog.clear();
            metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => "security_io").increment(lost);
            metrics::gauge!(EVENTS_BACKLOG).set(0.0);
            self.drops
                .security_dropped
                .fetch_add(lost, Ordering::Relaxed);
            tracing::error!(
                lost,
                "shutting down while the event log cannot be written: security events held in \
                 memory are lost"
            );
        }
        if self.witness.is_some() {
            self.checkpoint(WitnessCause::Shutdown).await;
        } else {
            self.sync().await;
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
    /// A disk whose failures a test scripts: given the batch, returns what `write_lines` would.
    #[cfg(test)]
    Scripted(Box<ScriptedWrite>),
}

#[cfg(test)]
type ScriptedWrite = dyn FnMut(&[u8], &[usize]) -> (usize, Option<io::Error>) + Send;

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
            #[cfg(test)]
            Output::Scripted(write) => write(buf, line_ends),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout => io::stdout().lock().flush(),
            Output::File(file) => file.sync(),
            #[cfg(test)]
            Output::Scripted(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;
    use std::net::{IpAddr, Ipv4Addr};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;
    use crate::events::{EventBody, PolicyEvent, QueryEvent};
    use std::path::{Path, PathBuf};

    use crate::config_error::ConfigProblems;

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
                count: 1,
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

        // Queued together, they are written in time order (the policy event was made first).
        let mut expected = sent.to_vec();
        expected.sort_by(|a, b| a.ts.cmp(&b.ts));
        assert_eq!(read_events(&path), expected);
        let first_line = fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(
            first_line
                .lines()
                .find(|l| l.contains("\"query\""))
                .unwrap(),
        )
        .unwrap();
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

    fn alert(n: u64) -> Event {
        Event::now(
            n,
            EventBody::Policy(PolicyEvent {
                action: format!("security-{n}"),
                hash: None,
                actor: None,
                message: None,
            }),
        )
    }

    #[test]
    fn query_floods_cannot_starve_or_delay_security_events() {
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
                queue: 4,
                security_queue: 2,
                ..file_config(&path)
            };
            let (tx, handle) = spawn(&cfg).unwrap();
            // The query queue is full (and overflowing) before the security events arrive.
            let queued: Vec<bool> = (0..6).map(|n| tx.emit(query(n))).collect();
            assert_eq!(queued, [true, true, true, true, false, false]);
            assert!(tx.emit(alert(100)), "a security event still gets in");
            assert!(tx.emit(alert(101)));
            // Its own queue full: dropped, and counted under its own cause.
            assert!(!tx.emit(alert(102)));
            assert_eq!(
                recorder.get(EVENTS_DROPPED_TOTAL, "cause", "security_queue_full"),
                1
            );
            assert_eq!(recorder.get(EVENTS_DROPPED_TOTAL, "cause", "queue_full"), 2);
            handle.shutdown().await;
        });
        let numbers = |path: &Path| -> Vec<u64> {
            read_events(path)
                .iter()
                .map(|e| match &e.body {
                    EventBody::Policy(_) => e.policy_version,
                    EventBody::Query(q) => q.latency_us,
                    _ => u64::MAX,
                })
                .collect()
        };
        // One batch: written in time order.
        assert_eq!(numbers(&path), [0, 1, 2, 3, 100, 101]);

        // A backlog of queries several batches long: the security event that arrives after it
        // is still written in the first batch.
        let path = dir.path().join("backlog.jsonl");
        rt.block_on(async {
            let (tx, handle) = spawn(&file_config(&path)).unwrap();
            for n in 0..1000 {
                assert!(tx.emit(query(n)));
            }
            assert!(tx.emit(alert(5000)));
            handle.shutdown().await;
        });
        let written = numbers(&path);
        assert_eq!(written.len(), 1001);
        let at = written.iter().position(|&n| n == 5000).unwrap();
        assert!(
            at < BATCH_EVENTS,
            "written at line {at}, behind older queries"
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

        let bad: EventsConfig = toml::from_str(
            "security_queue = 0\nfsync_interval = \"2m\"\ncheckpoint_interval = \"0s\"\n\
             checkpoint_path = \"/tmp/cp\"",
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
                "events.security_queue",
                "events.fsync_interval",
                "events.checkpoint_interval",
                "events.checkpoint_path"
            ]
        );
        let modes: EventsConfig = toml::from_str("file_mode = \"0640\"").unwrap();
        assert_eq!(modes.file_mode.bits(), 0o640);
        assert!(toml::from_str::<EventsConfig>("file_mode = \"0666\"").is_err());

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

    /// A disk a test fills and empties: whole lines go to `data` while `room` (in lines)
    /// lasts; the first line that does not fit fails with ENOSPC, as a full file system does
    /// (the file sink cuts a partial line off, so only whole lines ever stay).
    #[derive(Clone, Default)]
    struct ScriptedDisk {
        data: Arc<parking_lot::Mutex<Vec<u8>>>,
        room: Arc<AtomicU64>,
        /// When not `u64::MAX`: `room` at the start of each attempt (the edge of a full disk,
        /// where a line or so fits each time).
        refill: Arc<AtomicU64>,
        attempts: Arc<AtomicU64>,
    }

    impl ScriptedDisk {
        fn new() -> Self {
            let disk = Self::default();
            disk.room.store(u64::MAX, Ordering::SeqCst);
            disk.refill.store(u64::MAX, Ordering::SeqCst);
            disk
        }

        fn output(&self) -> Output {
            let disk = self.clone();
            Output::Scripted(Box::new(move |buf: &[u8], ends: &[usize]| {
                disk.attempts.fetch_add(1, Ordering::SeqCst);
                let refill = disk.refill.load(Ordering::SeqCst);
                if refill != u64::MAX {
                    disk.room.store(refill, Ordering::SeqCst);
                }
                let mut start = 0;
                for (i, &end) in ends.iter().enumerate() {
                    if disk.room.load(Ordering::SeqCst) == 0 {
                        return (i, Some(io::Error::from_raw_os_error(libc::ENOSPC)));
                    }
                    disk.room.fetch_sub(1, Ordering::SeqCst);
                    disk.data.lock().extend_from_slice(&buf[start..end]);
                    start = end;
                }
                (ends.len(), None)
            }))
        }

        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.data.lock().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }

        /// Verify what was written as one chain.
        fn verify(
            &self,
            key: &crate::govern::audit::AuditKey,
        ) -> crate::govern::audit::VerifyReport {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events.jsonl");
            fs::write(&path, &*self.data.lock()).unwrap();
            crate::govern::audit::verify(&[path], Some(key.as_bytes()))
        }
    }

    /// A sink over `disk` with the keyed hash chain.
    fn chained_sink(
        disk: &ScriptedDisk,
        backlog: usize,
        witness: Option<Box<dyn LogWitness>>,
    ) -> (EventSender, EventSinkHandle, crate::govern::audit::AuditKey) {
        let key = crate::govern::audit::AuditKey::new(vec![7; 32]);
        let cfg = EventsConfig {
            sink: SinkKind::File,
            path: Some(PathBuf::from("/nonexistent/scripted.jsonl")),
            aggregate_interval: Duration::ZERO,
            ..EventsConfig::default()
        };
        let encoder = crate::govern::audit::ChainEncoder::new(Some(&key));
        let (tx, handle) = start(
            &cfg,
            Setup::new(&cfg, witness),
            encoder,
            None,
            disk.output(),
            backlog,
        )
        .unwrap();
        (tx, handle, key)
    }

    /// Wait (up to 10 s) until `done` holds.
    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn field(line: &str, name: &str) -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(line).unwrap()[name].clone()
    }

    #[tokio::test]
    async fn a_full_disk_keeps_the_chain_whole_and_a_gap_record_says_what_was_lost() {
        let recorder = CountingRecorder::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let disk = ScriptedDisk::new();
        let (tx, handle, key) = chained_sink(&disk, BACKLOG_EVENTS, None);

        for n in 0..3 {
            assert!(tx.emit(query(n)));
        }
        wait_until("3 lines are written", || disk.lines().len() == 3).await;

        // Room for two more lines, then the disk is full: one batch of five is written in
        // part. Then a batch that fails in full.
        disk.room.store(2, Ordering::SeqCst);
        for n in 10..13 {
            assert!(tx.emit(query(n)));
        }
        assert!(tx.emit(alert(100)));
        assert!(tx.emit(alert(101)));
        wait_until("the first failure", || tx.log_failing()).await;
        let attempts = disk.attempts.load(Ordering::SeqCst);
        assert!(tx.emit(query(20)));
        assert!(tx.emit(alert(102)));
        wait_until("a second attempt", || {
            disk.attempts.load(Ordering::SeqCst) > attempts
        })
        .await;
        let written_before = disk.lines().len();
        assert_eq!(written_before, 5);

        // Space comes back: with nothing new queued, the retry writes the gap record and the
        // backlog.
        disk.room.store(u64::MAX, Ordering::SeqCst);
        wait_until("writing works again", || !tx.log_failing()).await;
        assert!(tx.emit(query(30)));
        handle.shutdown().await;

        // One unbroken chain: nothing that failed took a seq.
        let report = disk.verify(&key);
        assert!(report.ok, "{report}");
        assert_eq!(report.gaps.len(), 1, "{report}");
        let lines = disk.lines();
        assert_eq!(report.records, lines.len() as u64);
        let kinds: Vec<String> = lines
            .iter()
            .map(|l| field(l, "kind").as_str().unwrap().to_string())
            .collect();
        let gap_at = kinds
            .iter()
            .position(|k| k == "log_gap")
            .expect("a log_gap record");
        assert_eq!(
            gap_at, written_before,
            "the first record after the outage: {kinds:?}"
        );
        let gap = &lines[gap_at];
        // Which two of the first batch made it depends on their `ts` order; everything but
        // the two lines written and the security events was lost.
        let written_queries = lines[3..gap_at]
            .iter()
            .filter(|l| field(l, "kind") == "query")
            .count() as u64;
        let written_security = 2 - written_queries;
        assert_eq!(field(gap, "query_lost"), 3 - written_queries + 1);
        assert_eq!(field(gap, "security_lost"), 0);
        assert_eq!(field(gap, "security_delayed"), 3 - written_security);
        assert!(field(gap, "failed_writes").as_u64().unwrap() >= 2, "{gap}");
        assert!(
            field(gap, "error")
                .as_str()
                .unwrap()
                .contains("No space left on device"),
            "{gap}"
        );
        assert!(field(gap, "since").as_str().unwrap() < field(gap, "ts").as_str().unwrap());
        // Every security event is in the log, after the gap record if it was delayed.
        for n in [100, 101, 102] {
            let action = format!("security-{n}");
            assert!(
                lines.iter().any(|l| field(l, "action") == action.as_str()),
                "{action} missing: {kinds:?}"
            );
        }
        assert_eq!(kinds.last().map(String::as_str), Some("query"));
        assert_eq!(
            recorder.get(EVENTS_DROPPED_TOTAL, "cause", "io"),
            3 - written_queries + 1
        );
        assert_eq!(
            recorder.get(EVENTS_DROPPED_TOTAL, "cause", "security_io"),
            0
        );
        assert_eq!(recorder.get(EVENTS_WRITTEN_TOTAL, "kind", "policy"), 3);
        assert_eq!(recorder.get(EVENTS_WRITTEN_TOTAL, "kind", "log_gap"), 1);
    }

    /// Records the tally of each checkpoint.
    struct TallyRecorder(Arc<parking_lot::Mutex<Vec<SinkTally>>>);

    impl LogWitness for TallyRecorder {
        fn witness(
            &mut self,
            _: &WitnessCause,
            _: Option<&[u8]>,
            tally: SinkTally,
        ) -> io::Result<()> {
            self.0.lock().push(tally);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_backlog_is_bounded_and_what_it_cannot_hold_is_counted_as_security_dropped() {
        let recorder = CountingRecorder::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let disk = ScriptedDisk::new();
        let tallies = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let witness: Box<dyn LogWitness> = Box::new(TallyRecorder(Arc::clone(&tallies)));
        let (tx, handle, key) = chained_sink(&disk, 3, Some(witness));

        disk.room.store(0, Ordering::SeqCst);
        for n in 0..5 {
            assert!(tx.emit(alert(n)));
        }
        assert!(tx.emit(query(9)));
        wait_until("the failure", || tx.log_failing()).await;
        assert_eq!(
            recorder.get(EVENTS_DROPPED_TOTAL, "cause", "security_io"),
            2
        );
        assert_eq!(recorder.get(EVENTS_DROPPED_TOTAL, "cause", "io"), 1);

        disk.room.store(u64::MAX, Ordering::SeqCst);
        wait_until("writing works again", || !tx.log_failing()).await;
        handle.shutdown().await;

        let report = disk.verify(&key);
        assert!(report.ok, "{report}");
        let lines = disk.lines();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert_eq!(field(&lines[0], "kind"), "log_gap");
        assert_eq!(field(&lines[0], "security_lost"), 2);
        assert_eq!(field(&lines[0], "query_lost"), 1);
        assert_eq!(field(&lines[0], "security_delayed"), 3);
        // The oldest are kept, in their order.
        let kept: Vec<_> = lines[1..].iter().map(|l| field(l, "action")).collect();
        assert_eq!(kept, ["security-0", "security-1", "security-2"]);
        // The checkpoint carries the loss.
        let last = *tallies.lock().last().expect("a shutdown checkpoint");
        assert_eq!((last.security_dropped, last.query_dropped), (2, 1));
    }

    #[tokio::test]
    async fn a_backlog_the_log_never_takes_is_counted_lost_at_shutdown() {
        let recorder = CountingRecorder::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let disk = ScriptedDisk::new();
        disk.room.store(0, Ordering::SeqCst);
        let (tx, handle, _key) = chained_sink(&disk, 10, None);
        for n in 0..4 {
            assert!(tx.emit(alert(n)));
        }
        wait_until("the failure", || tx.log_failing()).await;
        assert_eq!(
            recorder.get(EVENTS_DROPPED_TOTAL, "cause", "security_io"),
            0
        );
        handle.shutdown().await;
        assert_eq!(
            recorder.get(EVENTS_DROPPED_TOTAL, "cause", "security_io"),
            4
        );
        assert!(disk.lines().is_empty());
    }

    #[tokio::test]
    async fn a_failing_log_warns_once_then_at_most_every_few_seconds() {
        let disk = ScriptedDisk::new();
        disk.room.store(0, Ordering::SeqCst);
        let (tx, handle, _key) = chained_sink(&disk, BACKLOG_EVENTS, None);
        let started = std::time::Instant::now();
        let warnings = |tx: &EventSender| {
            (
                tx.status.failure_warnings.load(Ordering::Relaxed),
                tx.status.recovery_warnings.load(Ordering::Relaxed),
            )
        };
        // Twenty failed batches within a second or two: one warning.
        for n in 0..20 {
            assert!(tx.emit(alert(n)));
            let before = disk.attempts.load(Ordering::SeqCst);
            wait_until("an attempt", || {
                disk.attempts.load(Ordering::SeqCst) > before
            })
            .await;
        }
        assert_eq!(warnings(&tx).0, 1);
        disk.room.store(u64::MAX, Ordering::SeqCst);
        wait_until("writing works again", || !tx.log_failing()).await;
        assert_eq!(
            warnings(&tx),
            (1, 1),
            "the end of a failure that was logged is logged"
        );
        assert_eq!(disk.lines().len(), 21);

        // The edge of a full disk: one line fits per attempt, so each batch writes the gap
        // record of the last outage and fails on the next line, over and over. Still a warning
        // or two, not one per outage.
        disk.refill.store(1, Ordering::SeqCst);
        for n in 0..20 {
            assert!(tx.emit(query(n)));
            assert!(tx.emit(query(n + 100)));
            let before = disk.attempts.load(Ordering::SeqCst);
            wait_until("an attempt", || {
                disk.attempts.load(Ordering::SeqCst) > before
            })
            .await;
        }
        disk.refill.store(u64::MAX, Ordering::SeqCst);
        disk.room.store(u64::MAX, Ordering::SeqCst);
        wait_until("writing works again", || !tx.log_failing()).await;
        let (failures, recoveries) = warnings(&tx);
        handle.shutdown().await;
        // One failure warning per 5 s (this takes 2 or 3), each recovery after one logged.
        let most = 1 + started.elapsed().as_secs() / 5;
        assert!(
            (1..=most).contains(&failures),
            "{failures} failure warnings"
        );
        assert_eq!(recoveries, failures);
        // Every outage has its gap record.
        let gaps = disk
            .lines()
            .iter()
            .filter(|l| field(l, "kind") == "log_gap")
            .count();
        assert!(gaps >= 20, "{gaps} gap records");
    }

    #[test]
    fn the_warning_limiter_lets_one_through_per_interval_and_counts_the_rest() {
        let mut limiter = WarnLimiter::new(Duration::from_secs(5));
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(limiter.allow(at(0)), Some(0));
        assert_eq!(limiter.allow(at(1)), None);
        assert_eq!(limiter.allow(at(4)), None);
        assert_eq!(limiter.allow(at(5)), Some(2));
        assert_eq!(limiter.allow(at(6)), None);
        assert_eq!(limiter.allow(at(20)), Some(1));
    }

    #[tokio::test]
    async fn a_log_moved_away_is_followed_to_a_new_file_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let key = crate::govern::audit::AuditKey::new(vec![7; 32]);
        let cfg = file_config(&path);
        let encoder = crate::govern::audit::ChainEncoder::new(Some(&key));
        let (tx, handle) = spawn_with_encoder(&cfg, encoder).unwrap();
        for n in 0..3 {
            assert!(tx.emit(query(n)));
        }
        wait_until("3 lines are written", || read_events(&path).len() == 3).await;
        // logrotate's `create` mode: rename, create a new file, signal (here: the reload's
        // request).
        let moved = super::super::rotation::rotated_path(&path, 1);
        fs::rename(&path, &moved).unwrap();
        fs::write(&path, "").unwrap();
        tx.reopen_log();
        for n in 3..6 {
            assert!(tx.emit(query(n)));
        }
        handle.shutdown().await;
        let numbers = |p: &Path| read_events(p).iter().map(latency).collect::<Vec<_>>();
        assert_eq!(numbers(&moved), [0, 1, 2]);
        assert_eq!(numbers(&path), [3, 4, 5]);
        let report = crate::govern::audit::verify(
            &super::super::reader::rotated_files(&path),
            Some(key.as_bytes()),
        );
        assert!(report.ok, "{report}");
        assert_eq!(report.records, 6);
    }
}
