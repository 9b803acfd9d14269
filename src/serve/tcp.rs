//! The TCP listener (RFC 7766), hardened against starvation.
//!
//! A connection is identified from its peer address *before* it may take a slot: a client in
//! no group never holds one of the `tcp_max_connections` slots. With `unknown_clients = "drop"`
//! its connection is closed at once; with `refuse` it gets a short-lived slot from a small
//! separate pool ([`UNKNOWN_SLOTS`] per listener, at most [`UNKNOWN_SLOTS_PER_SOURCE`] per
//! source), REFUSED for its query and those it pipelined with it within [`UNKNOWN_DEADLINE`],
//! and is closed. A known client then
//! takes a per-client slot (`tcp_max_connections_per_client`, so one agent cannot hold every
//! connection) and a global one.
//!
//! On a connection, queries are answered as they finish, possibly out of order (RFC 7766 §6.2.1.1
//! allows it; clients match answers by ID), with at most `tcp_max_pipelined` in flight: past that
//! the connection is simply not read until an answer has been written. Every write has a
//! deadline (`tcp_write_timeout`): a client that never reads its answers loses its connection,
//! and with it the slots, instead of holding them forever.
//!
//! A connection reads through a 4 KiB buffer, so the queries a client pipelines come in one
//! system call, and answers what the synchronous stages settle (cache hits, policy denials,
//! refusals, meta queries) on its own task; the rest (cache misses, local zones) gets a task
//! each. The answers ready together go in one write of up to about 8 KiB (plus one answer),
//! and `tcp_write_timeout` bounds each such write. dnsperf over TCP on 500 cached names:
//! 3.26 → 0.50 system calls and 17.5–21.8 → 6.7–7.5 µs of CPU a query (`bench/encrypted.sh`,
//! session 19), when each answer was a write, each query two reads and a task.
//!
//! A failed `accept` (out of file descriptors and the like) is counted in
//! `dnsward_accept_errors_total{protocol, kind}` and logged, rate-limited ([`crate::resources`]);
//! the listener retries after a short pause.
//!
//! On shutdown a connection reads no new query; the queries already read are answered (their
//! writes bounded as any other), then it closes. The server's `shutdown_grace` bounds the wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::slots::{
    ClientSlots, Rejections, UNKNOWN_DEADLINE, UNKNOWN_SLOTS, UNKNOWN_SLOTS_PER_SOURCE,
    accept_next, stranger_key,
};
use crate::metrics as m;
use crate::policy::identify::canonical;
use crate::resources::AcceptErrors;
use crate::serve::pipeline::{Outcome, Pipeline, Protocol, UnknownClients};

/// The TCP limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Idle time after which a connection is closed.
    pub idle: Duration,
    /// Longest time one write (the answers ready together) may take.
    pub write_timeout: Duration,
    /// Most connections one client address may hold.
    pub per_client: usize,
    /// Most queries in flight on one connection.
    pub pipelined: usize,
    /// What clients in no group get.
    pub unknown: UnknownClients,
}

/// Accept connections until `stop` changes, then wait for the open ones.
pub(super) async fn accept_loop(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    conns: Arc<Semaphore>,
    limits: TcpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let rejected = Rejections::new(m::TCP_REJECTED_TOTAL, None);
    let mut accept_errors = AcceptErrors::new("tcp", listener.local_addr().ok());
    let open = metrics::gauge!(m::TCP_CONNECTIONS);
    let clients = Arc::new(ClientSlots::default());
    let unknown_slots = Arc::new(Semaphore::new(UNKNOWN_SLOTS));
    let unknown_sources = Arc::new(ClientSlots::default());
    let mut handlers = JoinSet::new();
    while let Some((stream, peer)) =
        accept_next(&listener, &mut stop, &mut handlers, &mut accept_errors).await
    {
        // Identify first: a client in no group never takes a slot.
        let client = canonical(peer.ip());
        if pipeline.policy().clients.lookup(client).is_none() {
            if limits.unknown == UnknownClients::Drop {
                rejected.unknown_client.increment(1);
                drop(stream);
                continue;
            }
            // At most its share of the small pool: one stranger cannot take every REFUSED.
            // Counted apart from members' connections, so an address a reload moves out of
            // its group gets its REFUSED while its old connections close.
            let share = limits.per_client.min(UNKNOWN_SLOTS_PER_SOURCE);
            let Some(source_slot) = unknown_sources.try_take(stranger_key(client), share) else {
                rejected.client_cap.increment(1);
                drop(stream);
                continue;
            };
            let Ok(permit) = Arc::clone(&unknown_slots).try_acquire_owned() else {
                rejected.unknown_client.increment(1);
                drop(stream);
                continue;
            };
            let pipeline = Arc::clone(&pipeline);
            handlers.spawn(async move {
                let _ = tokio::time::timeout(UNKNOWN_DEADLINE, refuse_one(stream, peer, &pipeline))
                    .await;
                drop(permit);
                drop(source_slot);
            });
            continue;
        }
        let Some(client_slot) = clients.try_take(client, limits.per_client) else {
            rejected.client_cap.increment(1);
            drop(stream);
            continue;
        };
        let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
            rejected.global_cap.increment(1);
            drop(stream);
            continue;
        };
        let pipeline = Arc::clone(&pipeline);
        let stop = stop.clone();
        let open = open.clone();
        handlers.spawn(async move {
            open.increment(1.0);
            serve(stream, peer, pipeline, limits, stop).await;
            open.decrement(1.0);
            drop(permit);
            drop(client_slot);
        });
    }
    while handlers.join_next().await.is_some() {}
}

/// Read one framed query from `stream`.
async fn read_query(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> bool {
    let Ok(len) = stream.read_u16().await else {
        return false;
    };
    buf.resize(usize::from(len), 0);
    stream.read_exact(buf).await.is_ok()
}

/// Counts a stream frame that cannot be a query ([`crate::wire::is_query_frame`]); the caller
/// closes the connection.
pub(super) fn not_a_query_frame() {
    metrics::counter!(crate::metrics::MALFORMED_TOTAL, "action" => "dropped").increment(1);
}

/// Frame an answer with its two-byte length (None if it cannot be framed).
pub(super) fn framed(answer: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(answer.len() + 2);
    append_framed(&mut out, answer).then_some(out)
}

/// Append `answer` to `out` with its two-byte length prefix; false (nothing appended) if it is
/// too long to frame.
fn append_framed(out: &mut Vec<u8>, answer: &[u8]) -> bool {
    let Ok(n) = u16::try_from(answer.len()) else {
        return false;
    };
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(answer);
    true
}

/// Bytes a connection's reader takes from the socket at once.
const READ_BUFFER: usize = 4 * 1024;

/// Bytes of ready answers gathered into one write.
const WRITE_BATCH: usize = 8 * 1024;

/// Queries of an unknown client's connection answered REFUSED: the ones it pipelined with its
/// first (RFC 7766 §6.2.1.1), up to this many.
const UNKNOWN_QUERIES: usize = 16;
/// How long after an answer an unknown client's next pipelined query may take to arrive.
const UNKNOWN_NEXT_QUERY: std::time::Duration = std::time::Duration::from_millis(100);

/// An unknown client's connection: its query and those it pipelined with it (up to
/// [`UNKNOWN_QUERIES`], each arriving within [`UNKNOWN_NEXT_QUERY`] of the last answer), each
/// answered REFUSED (the pipeline's answer and accounting for clients in no group); then the
/// connection is closed in order (FIN after the answers, what the client sent beyond them read
/// and discarded briefly), so a close never resets the answers away. The caller bounds the
/// time. (It answered the first query only and closed with the rest unread: a reset, and the
/// pipelined queries unanswered.)
async fn refuse_one(stream: TcpStream, peer: SocketAddr, pipeline: &Pipeline) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let mut buf = Vec::with_capacity(512);
    for n in 0..UNKNOWN_QUERIES {
        let read = read_query(&mut rd, &mut buf);
        let got = if n == 0 {
            read.await
        } else {
            tokio::time::timeout(UNKNOWN_NEXT_QUERY, read)
                .await
                .unwrap_or(false)
        };
        if !got {
            break;
        }
        if let Some(answer) = pipeline.handle(&buf, peer.ip(), Protocol::Tcp).await
            && let Some(out) = framed(&answer)
            && wr.write_all(&out).await.is_err()
        {
            return;
        }
    }
    let _ = wr.shutdown().await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(UNKNOWN_NEXT_QUERY, async {
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Serve one connection of a known client: a reader that answers what the synchronous stages
/// settle itself and gives every other query a task (at most `pipelined` in flight), and a
/// writer that sends answers as they finish, those ready together in one write.
///
/// When `stop` changes the reader reads no further query, but the queries already read are
/// finished and their answers written (each write within `write_timeout`, as always); then the
/// connection closes. The server's `shutdown_grace` bounds the whole.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    pipeline: Arc<Pipeline>,
    limits: TcpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    // Queries a client pipelines arrive together; one read takes them all (the length prefix
    // and the message were two reads a query).
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let in_flight = Arc::new(Semaphore::new(limits.pipelined.max(1)));
    // An answer travels with the permit of its query: the permit is released only once the
    // answer has been written, so unread answers count against the pipelining bound.
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, OwnedSemaphorePermit)>(limits.pipelined.max(1));
    let read_loop = async move {
        let mut queries = JoinSet::new();
        let mut buf = Vec::with_capacity(512);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&in_flight).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                Some(_) = queries.join_next(), if !queries.is_empty() => continue,
                _ = stop.changed() => break,
            };
            // Reap finished query tasks without waiting.
            while queries.try_join_next().is_some() {}
            // Idle timeout, EOF, error or shutdown ends reading; queries in flight still get
            // answers. Shutdown is only noticed between frames: a frame whose length has
            // arrived is read whole (as on DoT), and nothing else ever cancels a read halfway
            // through a frame.
            let len = tokio::select! {
                r = tokio::time::timeout(limits.idle, rd.read_u16()) => match r {
                    Ok(Ok(len)) => len,
                    _ => break,
                },
                _ = stop.changed() => break,
            };
            buf.resize(usize::from(len), 0);
            match tokio::time::timeout(limits.idle, rd.read_exact(&mut buf)).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
            if !crate::wire::is_query_frame(&buf) {
                not_a_query_frame();
                break;
            }
            // Answered here when the synchronous stages settle it (a cache hit, a denial): its
            // answer joins the others ready for the writer. The rest gets a task.
            match pipeline.handle_fast(&buf, peer.ip(), Protocol::Tcp, Instant::now()) {
                Outcome::Reply(answer) => {
                    if tx.send((answer, permit)).await.is_err() {
                        break;
                    }
                }
                Outcome::Drop => drop(permit),
                Outcome::Resolve(pending) => {
                    let pipeline = Arc::clone(&pipeline);
                    let tx = tx.clone();
                    queries.spawn(async move {
                        if let Some(answer) = pipeline.resolve(*pending).await {
                            let _ = tx.send((answer, permit)).await;
                        }
                    });
                }
            }
        }
        while queries.join_next().await.is_some() {}
    };
    let write_loop = async move {
        let mut out = Vec::with_capacity(512);
        let mut permits = Vec::new();
        while let Some(first) = rx.recv().await {
            // The answers ready now go in one write with this one (up to WRITE_BATCH bytes).
            out.clear();
            let mut next = Some(first);
            while let Some((answer, permit)) = next.take() {
                if append_framed(&mut out, &answer) {
                    permits.push(permit);
                }
                if out.len() < WRITE_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if out.is_empty() {
                continue;
            }
            match tokio::time::timeout(limits.write_timeout, wr.write_all(&out)).await {
                Ok(Ok(())) => permits.clear(),
                // A client that does not read its answers loses the connection.
                _ => return,
            }
            if out.capacity() > 4 * WRITE_BATCH {
                out = Vec::with_capacity(512);
            }
        }
    };
    tokio::pin!(read_loop, write_loop);
    tokio::select! {
        // The reader first, so the writer sees at once what it has just answered (polled in
        // random order, the writer could go first, find nothing, and the answer would wait for
        // the task's next turn on the worker).
        biased;
        () = &mut read_loop => {
            // Reading is over (shutdown included) and every query has finished: write what is
            // left, then close.
            let _ = tokio::time::timeout(limits.write_timeout.saturating_mul(2), write_loop).await;
        }
        () = &mut write_loop => {}
    }
}
