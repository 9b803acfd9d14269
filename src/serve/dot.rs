//! DNS over TLS (RFC 7858): length-prefixed DNS messages on a TLS connection.
//!
//! Queries on one connection are pipelined (RFC 7766 §6.2.1.1): each is started as soon as it
//! is read and its answer is written when ready, so answers may go out of order (clients match
//! them by ID). At most `max_in_flight` queries per connection are being worked on; beyond that
//! the connection is not read until one finishes, so one client cannot queue unbounded work.
//! The connection closes after the idle timeout without a new query, on EOF, on shutdown
//! (in-flight answers are still written: each within the upstream's timeout, at shutdown
//! within the idle timeout), or when a write takes
//! longer than `tcp_write_timeout`: a client that asks and never reads would otherwise hold
//! its connection slot for good (the reader waits for room to queue an answer and never
//! reaches its idle timeout).
//!
//! Answers ready together (up to [`WRITE_BATCH_ANSWERS`], about 8 KiB) are written as a TLS
//! record each and flushed once: the records gather under TLS ([`super::encrypted`]) and leave
//! in one socket write. A pipelining client costs about half the system calls a query it did
//! when each answer was its own write (`bench/encrypted.sh`, session 19); a client with one
//! query in flight is flushed each answer as before. The write timeout bounds each batch.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::encrypted::ListenerContext;
use crate::identity::Peer;
use crate::serve::pipeline::{Outcome, Protocol};

/// At most this many answers (and about [`super::encrypted::WRITE_BATCH`] bytes) are written
/// before a flush.
const WRITE_BATCH_ANSWERS: usize = 32;

/// Serve one DoT connection from `peer`.
pub(super) async fn serve<S>(
    stream: S,
    peer: Peer,
    ctx: &ListenerContext,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(ctx.max_in_flight);
    let write_timeout = ctx.write_timeout;
    let writer = tokio::spawn(async move {
        while let Some(framed) = rx.recv().await {
            // The answers ready now go out with this one: a TLS record each, one flush (one
            // socket write) for them all. The batch as a whole must leave within the timeout.
            let batch = async {
                wr.write_all(&framed).await?;
                let mut queued = framed.len();
                for _ in 1..WRITE_BATCH_ANSWERS {
                    // Past the buffer's size the records go to the socket anyway.
                    if queued >= super::encrypted::WRITE_BATCH {
                        break;
                    }
                    let Ok(more) = rx.try_recv() else { break };
                    wr.write_all(&more).await?;
                    queued += more.len();
                }
                wr.flush().await
            };
            match tokio::time::timeout(write_timeout, batch).await {
                Ok(Ok(())) => {}
                // A write error, or a client that has not read for `write_timeout`: the
                // receiver goes, and with it the reader (`tx.closed()`).
                _ => return,
            }
        }
        let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
    });
    let slots = Arc::new(Semaphore::new(ctx.max_in_flight));
    let peer = Arc::new(peer);
    let mut resolving = JoinSet::new();
    let mut buf = Vec::with_capacity(512);
    loop {
        // Bound the work in flight before reading more.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let len = tokio::select! {
            r = tokio::time::timeout(ctx.idle, rd.read_u16()) => match r {
                Ok(Ok(len)) => len,
                _ => break, // idle timeout, EOF or error
            },
            _ = stop.changed() => break,
            () = tx.closed() => break, // the writer gave up
        };
        buf.resize(usize::from(len), 0);
        match tokio::time::timeout(ctx.idle, rd.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        if !crate::wire::is_query_frame(&buf) {
            super::tcp::not_a_query_frame();
            break;
        }
        while resolving.try_join_next().is_some() {}
        match ctx
            .pipeline
            .handle_fast_peer(&buf, &peer, Protocol::Dot, Instant::now())
        {
            Outcome::Reply(answer) => {
                if let Some(f) = super::tcp::framed(&answer)
                    && tx.send(f).await.is_err()
                {
                    break;
                }
                drop(slot);
            }
            Outcome::Drop => drop(slot),
            Outcome::Resolve(pending) => {
                let pipeline = Arc::clone(&ctx.pipeline);
                let tx = tx.clone();
                resolving.spawn(async move {
                    if let Some(answer) = pipeline.resolve(*pending).await
                        && let Some(f) = super::tcp::framed(&answer)
                    {
                        let _ = tx.send(f).await;
                    }
                    drop(slot);
                });
            }
        }
    }
    // Answers already being worked on still go out, each bounded by the upstream's timeout,
    // as on plain TCP: a connection with a query outstanding is not idle (RFC 7766 §6.2.3).
    // At shutdown they have the idle timeout. (They had it always, and an answer slower than
    // twice the idle timeout was dropped with the connection.)
    let drain = async { while resolving.join_next().await.is_some() {} };
    let stopping = *stop.borrow();
    if stopping {
        let _ = tokio::time::timeout(ctx.idle, drain).await;
    } else {
        tokio::select! {
            () = drain => {}
            _ = async {
                let _ = stop.changed().await;
                tokio::time::sleep(ctx.idle).await;
            } => {}
        }
    }
    resolving.abort_all();
    drop(tx);
    let _ = writer.await;
}
