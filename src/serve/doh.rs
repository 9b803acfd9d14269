//! DNS over HTTPS (RFC 8484): `POST` with an `application/dns-message` body, or `GET` with the
//! message base64url-encoded in `?dns=`, over HTTP/2 or HTTP/1.1 (ALPN).
//!
//! The client is identified by, in order: a bearer token (`Authorization: Bearer <JWT>`,
//! verified against the configured keys; a bad one is answered 401 and becomes an
//! `auth_refused` event), its verified client certificate, or its address. The DNS answer is
//! the pipeline's, exactly as for UDP: a refusal or block is a DNS answer inside a 200.
//!
//! On shutdown a connection takes no new request (HTTP/2: GOAWAY; HTTP/1.1: no keep-alive),
//! answers the requests it has already received, then closes, as TCP and DoT connections do
//! with the queries they have read. The server's `shutdown_grace` bounds the wait.
//!
//! A connection closes after `idle` with no request to answer; and when its client does not
//! read, after `tcp_write_timeout`, as on TCP and DoT: an answer that waits that long for the
//! client to open an HTTP/2 flow-control window for it, or a write to the client that cannot go
//! for that long. At most `max_in_flight` HTTP/2 streams are open. Each answer's HTTP/2 frames
//! go to TLS as a record of their own ([`FrameCut`]); over HTTP/2 a flush waits for the other
//! ready tasks once ([`Writes::poll_flush`]), so the answers finishing together leave in one
//! socket write.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::encrypted::ListenerContext;
use crate::identity::{AuthKind, Peer};
use crate::serve::pipeline::Protocol;

/// The DNS message media type (RFC 8484 §6).
const DNS_MESSAGE: &str = "application/dns-message";

/// Serve one DoH connection; `peer` is what the TLS layer established (certificate or address).
pub(super) async fn serve<S>(
    stream: S,
    h2: bool,
    peer: Peer,
    remote: SocketAddr,
    ctx: Arc<ListenerContext>,
    mut stop: watch::Receiver<bool>,
) where
    S: Layered + Send + 'static,
{
    let requests = Arc::new(Requests::new());
    let peer = Arc::new(peer);
    let idle = ctx.idle;
    let write_timeout = ctx.write_timeout;
    let svc_ctx = Arc::clone(&ctx);
    let svc_requests = Arc::clone(&requests);
    let service = hyper::service::service_fn(move |req| {
        let ctx = Arc::clone(&svc_ctx);
        let peer = Arc::clone(&peer);
        let working = Working::new(&svc_requests);
        async move {
            // A HEAD request gets the status and headers it would get, never a body (over
            // HTTP/2 a body on a HEAD answer is a protocol error the client resets on).
            let head = req.method() == Method::HEAD;
            let mut resp = answer(req, &peer, remote, &ctx).await;
            if head {
                *resp.body_mut() = Bytes::new();
            }
            Ok::<_, Infallible>(resp.map(|body| Outgoing::new(body, &working)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A request's head must arrive whole within `idle` of its first byte: a client trickling
    // a header a byte every few seconds held its connection (and, with enough sources, every
    // slot) forever.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle);
    // HTTP/2: at most `max_in_flight` streams open at once, as DoT's pipelining; past that a
    // new stream is refused.
    builder
        .http2()
        .max_concurrent_streams(u32::try_from(ctx.max_in_flight).unwrap_or(u32::MAX));
    let started = Instant::now();
    let blocked = Arc::new(AtomicU64::new(0));
    let io = Writes {
        inner: stream,
        started,
        blocked: Arc::clone(&blocked),
        frames: h2.then(FrameCut::default),
        unflushed: false,
        deferred: false,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    // Idle: no request being answered, and none started, for `idle`. Counted in requests, not
    // bytes: a client's PINGs do not keep an idle connection.
    // Not reading, after `write_timeout`, as on TCP and DoT: an answer made and not taken to
    // be sent for that long (over HTTP/2 it waits on flow-control windows the client opens as
    // it reads), or a write to the client that could not go for that long (its receive buffer
    // full). Checked a few times per period.
    let watchdog = async {
        let period = (idle.min(write_timeout) / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(period).await;
            let since = blocked.load(Ordering::Relaxed);
            let stuck = since != 0
                && started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(since - 1))
                    >= write_timeout;
            if stuck || requests.stalled(write_timeout) || requests.idle_for() >= idle {
                return;
            }
        }
    };
    tokio::pin!(conn, watchdog);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = &mut watchdog => return,
            // Shutdown (or the listener gone): hyper's graceful shutdown. Requests already
            // received are answered; HTTP/2 sends GOAWAY and takes no new stream, HTTP/1.1
            // closes an idle keep-alive connection at once and a busy one after its response,
            // and a connection that has not yet said which it speaks is closed. The
            // connection then ends by itself; the server's `shutdown_grace` (and the idle
            // watchdog) bound the wait.
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One HTTP request → one HTTP response carrying the DNS answer.
async fn answer(
    req: Request<Incoming>,
    peer: &Peer,
    remote: SocketAddr,
    ctx: &ListenerContext,
) -> Response<Bytes> {
    if req.uri().path() != ctx.path {
        return status(StatusCode::NOT_FOUND, "not found");
    }
    let token_peer = match bearer(&req) {
        Some(token) => match &ctx.tokens {
            Some(verifier) => match verifier.verify(token) {
                Ok(id) => Some(Peer::verified(
                    remote.ip(),
                    &id.agent,
                    AuthKind::Token,
                    id.group.as_deref(),
                )),
                Err(e) => {
                    ctx.refused(remote, AuthKind::Token, e.to_string(), None);
                    return status(StatusCode::UNAUTHORIZED, &e.to_string());
                }
            },
            None => {
                ctx.refused(
                    remote,
                    AuthKind::Token,
                    "tokens are not accepted here".into(),
                    None,
                );
                return status(StatusCode::UNAUTHORIZED, "tokens are not accepted here");
            }
        },
        None => None,
    };
    let peer = token_peer.as_ref().unwrap_or(peer);
    let packet = match *req.method() {
        Method::GET => {
            let dns = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("dns="));
            let Some(dns) = dns else {
                return status(StatusCode::BAD_REQUEST, "missing dns parameter");
            };
            // RFC 3986 §2.3: a percent-encoded unreserved character is that character (a
            // client that escapes its padding writes `%3D`).
            let Some(dns) = percent_decoded(dns) else {
                return status(StatusCode::BAD_REQUEST, "dns parameter is not base64url");
            };
            match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(dns.trim_end_matches('='))
            {
                Ok(p) => Bytes::from(p),
                Err(_) => return status(StatusCode::BAD_REQUEST, "dns parameter is not base64url"),
            }
        }
        Method::POST => {
            let media = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            // The media type, its parameters aside (`application/dns-message; charset=…`).
            let media = media.map(|m| m.split(';').next().unwrap_or("").trim());
            if media.is_none_or(|m| !m.eq_ignore_ascii_case(DNS_MESSAGE)) {
                drain(req, ctx.idle).await;
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "expected application/dns-message",
                );
            }
            // The body too, within `idle`: a body trickled a byte at a time is the same hold.
            match tokio::time::timeout(
                ctx.idle,
                Limited::new(req.into_body(), usize::from(u16::MAX)).collect(),
            )
            .await
            {
                Ok(Ok(body)) => body.to_bytes(),
                Ok(Err(_)) => return status(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                Err(_) => return status(StatusCode::REQUEST_TIMEOUT, "body not sent in time"),
            }
        }
        _ => {
            drain(req, ctx.idle).await;
            return status(StatusCode::METHOD_NOT_ALLOWED, "GET or POST");
        }
    };
    match ctx.pipeline.handle_peer(&packet, peer, Protocol::Doh).await {
        Some(dns) => {
            let cache_control = cache_control(&dns);
            let mut resp = Response::new(Bytes::from(dns));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
            resp.headers_mut().insert(CACHE_CONTROL, cache_control);
            resp
        }
        None => status(StatusCode::BAD_REQUEST, "not a DNS query"),
    }
}

/// Read and drop a refused request's body (up to a DNS message's size), so the error answer
/// ends the exchange cleanly: over HTTP/2 an unread body makes the server reset the stream
/// after its answer, which some clients (curl) report as a failure instead of the status.
/// Within `idle`, as a used body is read: a request that promises a body and never sends it
/// holds nothing.
async fn drain(req: Request<Incoming>, idle: Duration) {
    let body = Limited::new(req.into_body(), usize::from(u16::MAX)).collect();
    let _ = tokio::time::timeout(idle, body).await;
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    crate::identity::token::bearer_token(req.headers().get(AUTHORIZATION)?.to_str().ok()?)
}

fn status(code: StatusCode, text: &str) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(format!("{text}\n")));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // RFC 9110 §15.5.6: a 405 names the methods that are served.
    if code == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, POST"));
    }
    resp
}

/// How long an HTTP cache may keep a DoH answer (RFC 8484 §5.1), so that none serves it past
/// what a DNS cache would:
/// - an answer with records in its answer section: `max-age` of its smallest TTL;
/// - a negative answer (NXDOMAIN, NODATA) with an SOA in its authority section: `max-age` of
///   the SOA's MINIMUM field or its TTL, whichever is smaller (RFC 2308 §5);
/// - anything else (SERVFAIL, REFUSED, FORMERR, NOTIMP, BADVERS, a negative answer without an
///   SOA, which RFC 2308 §5 has no one cache): `no-store`. A 200 without freshness is
///   heuristically cacheable (RFC 9111 §4.2.2), so an HTTP cache could otherwise go on serving
///   a passing failure; dnsward remembers failures itself, for `upstream.failure_ttl`.
///
/// A stored answer is `private`: what dnsward answers depends on who asks (the client's group,
/// its token or certificate), so a shared HTTP cache in front must not hand one client's answer
/// to another (a name allowed for one group, asked by URL from another).
fn cache_control(msg: &[u8]) -> HeaderValue {
    match freshness(msg) {
        Some(ttl) => HeaderValue::from_str(&format!("private, max-age={ttl}"))
            .unwrap_or(HeaderValue::from_static("no-store")),
        None => HeaderValue::from_static("no-store"),
    }
}

/// The freshness lifetime [`cache_control`] gives `msg`, in seconds; `None`: not to be stored.
fn freshness(msg: &[u8]) -> Option<u32> {
    let rcode = crate::wire::extended_rcode(msg);
    if rcode != u16::from(crate::wire::rcode::NOERROR)
        && rcode != u16::from(crate::wire::rcode::NXDOMAIN)
    {
        return None;
    }
    let records = crate::wire::ttl_offsets(msg)?;
    let field = |at: usize| {
        msg.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let smallest_ttl = records
        .iter()
        .filter_map(|&(at, _)| field(usize::from(at)))
        .min();
    if crate::wire::answer_count(msg) > 0 {
        return smallest_ttl;
    }
    // Negative: the SOA's MINIMUM, the last four bytes of its data (after TTL and RDLENGTH).
    let soa_minimum = records
        .iter()
        .filter(|&&(_, rtype)| rtype == crate::wire::rtype::SOA)
        .filter_map(|&(at, _)| {
            let at = usize::from(at);
            let rdlen = usize::from(u16::from_be_bytes([*msg.get(at + 4)?, *msg.get(at + 5)?]));
            // Two names of at least a byte each, then five 32-bit fields.
            (rdlen >= 22).then_some(())?;
            field(at + 6 + rdlen - 4)
        })
        .min()?;
    Some(smallest_ttl.map_or(soa_minimum, |ttl| ttl.min(soa_minimum)))
}

/// A stream that records since when its writes have been refused (the client not reading).
struct Writes<S> {
    /// The TLS stream.
    inner: S,
    /// Reference point for `blocked`.
    started: Instant,
    /// 1 + milliseconds after `started` when a write or flush first could not go; 0 while
    /// they go.
    blocked: Arc<AtomicU64>,
    /// Over HTTP/2 (ALPN `h2`): where the answers written end, so each goes to TLS on its own.
    frames: Option<FrameCut>,
    /// Bytes were written since the last flush that went.
    unflushed: bool,
    /// This flush has already let the other ready tasks run once ([`Writes::poll_flush`]).
    deferred: bool,
}

/// Where the HTTP/2 frames a server writes end (RFC 9113 §4.1: a 9-byte header, the payload's
/// length in its first three bytes, then the type and flags), so that each answer (the frames
/// up to one that ends its stream) goes to TLS by itself, in a TLS record of its own. A client
/// that reads one record at a time and takes one answer per readable event (dnsperf's DoH)
/// then finds each answer waiting in the socket; several answers in one record left all but
/// one in its buffer with the socket quiet, and it stalled.
#[derive(Debug, Default)]
struct FrameCut {
    /// The current frame's header bytes seen so far.
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to come, once its header is whole.
    left: usize,
}

/// A frame's payload length.
fn frame_len(head: &[u8; 9]) -> usize {
    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2])
}

/// Whether a frame ends its stream: DATA or HEADERS with END_STREAM.
fn ends_stream(head: &[u8; 9]) -> bool {
    head[3] <= 1 && head[4] & 0x1 != 0
}

impl FrameCut {
    /// How many of `data`'s bytes reach the end of the next frame that ends a stream (all of
    /// them if none ends in `data`).
    fn limit(&self, data: &[u8]) -> usize {
        let (mut head, mut head_len, mut left) = (self.head, self.head_len, self.left);
        let mut at = 0;
        loop {
            if head_len < 9 {
                let need = 9 - head_len;
                if data.len() - at < need {
                    return data.len();
                }
                head[head_len..].copy_from_slice(&data[at..at + need]);
                at += need;
                left = frame_len(&head);
            }
            let end = at + left;
            if end >= data.len() {
                return data.len();
            }
            if ends_stream(&head) {
                return end;
            }
            at = end;
            head_len = 0;
            left = 0;
        }
    }

    /// `written` went.
    fn advance(&mut self, mut written: &[u8]) {
        while !written.is_empty() {
            if self.head_len < 9 {
                let n = (9 - self.head_len).min(written.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&written[..n]);
                self.head_len += n;
                written = &written[n..];
                if self.head_len == 9 {
                    let h = self.head;
                    self.left =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    if self.left == 0 {
                        self.head_len = 0;
                    }
                }
            } else {
                let n = self.left.min(written.len());
                self.left -= n;
                written = &written[n..];
                if self.left == 0 {
                    self.head_len = 0;
                }
            }
        }
    }
}

impl<S> Writes<S> {
    /// A write or flush that could not go starts the clock (if it is not running); only a
    /// flush that went stops it: a write the TLS layer buffered has not reached the client.
    fn went<T>(&self, r: &Poll<std::io::Result<T>>, flushed: bool) {
        match r {
            Poll::Pending => {
                if self.blocked.load(Ordering::Relaxed) == 0 {
                    let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.blocked.store(ms.saturating_add(1), Ordering::Relaxed);
                }
            }
            Poll::Ready(Ok(_)) if flushed => self.blocked.store(0, Ordering::Relaxed),
            Poll::Ready(_) => {}
        }
    }
}

impl<S: Layered> AsyncRead for Writes<S> {
    /// At the end of the client's stream (EOF or an error) what is written but not yet flushed
    /// goes first, as far as the socket takes it at once: HTTP may end the connection on the
    /// EOF without another flush, and an answer whose flush was deferred, or the alert TLS
    /// writes when a record from the client is bad, would be lost in the buffer under TLS.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let ended = match &r {
            Poll::Ready(Ok(())) => buf.filled().len() == before && buf.remaining() > 0,
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        };
        if ended {
            // After a bad record TLS refuses to flush (it repeats the error), but the alert it
            // wrote on its way out waits in the buffer under it.
            let flushed = match Pin::new(&mut self.inner).poll_flush(cx) {
                Poll::Ready(Ok(())) => true,
                _ => self.inner.poll_flush_below(cx).is_ready(),
            };
            if flushed {
                self.unflushed = false;
                self.deferred = false;
            }
        }
        r
    }
}

/// A stream with a buffer under it: TLS over the socket's write batch
/// ([`super::encrypted::WRITE_BATCH`]).
pub(super) trait Layered: AsyncRead + AsyncWrite + Unpin {
    /// Flush what waits in the layer below, whatever state this one is in.
    fn poll_flush_below(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Layered for tokio_rustls::server::TlsStream<IO> {
    fn poll_flush_below(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().0).poll_flush(cx)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Writes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = self.frames.as_ref().map_or(data.len(), |f| f.limit(data));
        let r = Pin::new(&mut self.inner).poll_write(cx, &data[..n]);
        if let (Poll::Ready(Ok(w)), Some(f)) = (&r, self.frames.as_mut()) {
            f.advance(&data[..*w]);
        }
        if matches!(r, Poll::Ready(Ok(w)) if w > 0) {
            self.unflushed = true;
        }
        self.went(&r, false);
        r
    }

    /// Over HTTP/2 a flush with something to send first lets the tasks already queued on this
    /// worker run once (the connection's task goes to the back of its run queue; the I/O
    /// driver is not polled in between, so answers still waiting on an upstream do not join):
    /// hyper answers each stream in a task of its own and flushes after each, so a pipelining
    /// client's answers finishing together would otherwise leave in a socket write each. When
    /// the flush is polled again it goes, with every answer made meanwhile (the records gather
    /// under TLS, [`super::encrypted`]). Flush consolidation, as Netty's
    /// `FlushConsolidationHandler`.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.frames.is_some() && self.unflushed && !self.deferred {
            self.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            self.unflushed = false;
            self.deferred = false;
        }
        self.went(&r, true);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.went(&r, true);
        r
    }
}

/// The requests a connection is answering, and when it last started or finished one; the
/// answers it has made that HTTP has not yet taken to send, and when it last took one.
struct Requests {
    state: parking_lot::Mutex<RequestsState>,
}

struct RequestsState {
    /// Requests being answered.
    working: usize,
    /// When one last started or finished.
    changed: Instant,
    /// Answers made and not yet sent (nor dropped with their stream).
    waiting: usize,
    /// When an answer was last sent, or when the first of those waiting was made.
    progress: Instant,
}

impl Requests {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: parking_lot::Mutex::new(RequestsState {
                working: 0,
                changed: now,
                waiting: 0,
                progress: now,
            }),
        }
    }

    /// How long the connection has had no request to answer nor answer to send (zero while it
    /// has one).
    fn idle_for(&self) -> Duration {
        let s = self.state.lock();
        if s.working > 0 || s.waiting > 0 {
            Duration::ZERO
        } else {
            s.changed.elapsed()
        }
    }

    /// Whether an answer has waited `limit` to be sent with none sent meanwhile. HTTP is done
    /// with a body when it could send it: over HTTP/2 when the client's flow-control windows
    /// had room (it opens them as it reads), over HTTP/1.1 when the connection's buffer had.
    fn stalled(&self, limit: Duration) -> bool {
        let s = self.state.lock();
        s.waiting > 0 && s.progress.elapsed() >= limit
    }
}

/// One request being answered, counted in its connection's [`Requests`] until dropped.
struct Working(Arc<Requests>);

impl Working {
    fn new(requests: &Arc<Requests>) -> Self {
        let mut s = requests.state.lock();
        s.working += 1;
        s.changed = Instant::now();
        drop(s);
        Self(Arc::clone(requests))
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.working = s.working.saturating_sub(1);
        s.changed = Instant::now();
    }
}

/// A response body, counted as waiting in its connection's [`Requests`] until HTTP is done
/// with it: over HTTP/2 once it could hand the body on (hyper waits for flow-control window
/// first), over HTTP/1.1 once the body is in the connection's buffer.
struct Outgoing {
    /// What is left to hand on.
    rest: Bytes,
    requests: Option<Arc<Requests>>,
}

impl Outgoing {
    fn new(body: Bytes, working: &Working) -> Self {
        let requests = Arc::clone(&working.0);
        {
            let mut s = requests.state.lock();
            if s.waiting == 0 {
                s.progress = Instant::now();
            }
            s.waiting += 1;
        }
        Self {
            rest: body,
            requests: Some(requests),
        }
    }
}

impl hyper::body::Body for Outgoing {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let all = std::mem::take(&mut self.rest);
        Poll::Ready(Some(Ok(hyper::body::Frame::data(all))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// HTTP drops a body once it has handed all of it on to be sent (over HTTP/2 only as the
/// client's windows allow: see [`Outgoing`]), or when its stream is reset. Either way it is no
/// longer waiting, and it counts as progress: a client that resets its streams to look busy
/// must keep asking (and being answered) to do so.
impl Drop for Outgoing {
    fn drop(&mut self) {
        if let Some(r) = self.requests.take() {
            let mut s = r.state.lock();
            s.waiting = s.waiting.saturating_sub(1);
            s.progress = Instant::now();
            s.changed = Instant::now();
        }
    }
}

/// `text` with its `%XX` escapes decoded (borrowed when there are none); `None` for a
/// malformed escape or bytes that are not UTF-8.
fn percent_decoded(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !text.contains('%') {
        return Some(std::borrow::Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};

    #[test]
    fn a_get_parameter_may_percent_encode_its_characters() {
        assert_eq!(percent_decoded("AAABAAAB").unwrap(), "AAABAAAB");
        assert_eq!(percent_decoded("%41AAB%3D%3d").unwrap(), "AAAB==");
        for bad in ["%4", "%zz", "AB%", "%ff"] {
            assert!(percent_decoded(bad).is_none(), "{bad}");
        }
    }
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record};

    fn answer(rcode: ResponseCode, answers: &[u32], soa: Option<(u32, u32)>) -> Vec<u8> {
        let name = Name::from_ascii("www.example.").unwrap();
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        for (i, ttl) in answers.iter().enumerate() {
            let a = A::new(192, 0, 2, u8::try_from(i).unwrap());
            m.answers
                .push(Record::from_rdata(name.clone(), *ttl, RData::A(a)));
        }
        if let Some((ttl, minimum)) = soa {
            let zone = Name::from_ascii("example.").unwrap();
            let soa = SOA::new(
                Name::from_ascii("ns.example.").unwrap(),
                Name::from_ascii("h.example.").unwrap(),
                1,
                3600,
                900,
                86400,
                minimum,
            );
            m.authorities
                .push(Record::from_rdata(zone, ttl, RData::SOA(soa)));
        }
        m.to_vec().unwrap()
    }

    /// RFC 8484 §5.1: an answer for its smallest TTL, a negative answer for no longer than its
    /// SOA's MINIMUM (nor the SOA's TTL), an error or a negative answer without SOA not at all.
    #[test]
    fn doh_freshness_follows_the_answer_the_soa_minimum_or_is_none() {
        use ResponseCode::{FormErr, NXDomain, NoError, NotImp, Refused, ServFail};
        for (what, msg, want) in [
            (
                "answer",
                answer(NoError, &[300, 30, 600], None),
                "private, max-age=30",
            ),
            (
                "zero TTL",
                answer(NoError, &[0], None),
                "private, max-age=0",
            ),
            (
                "NXDOMAIN, MINIMUM smaller",
                answer(NXDomain, &[], Some((3600, 60))),
                "private, max-age=60",
            ),
            (
                "NODATA, TTL smaller",
                answer(NoError, &[], Some((45, 900))),
                "private, max-age=45",
            ),
            (
                "NXDOMAIN without SOA",
                answer(NXDomain, &[], None),
                "no-store",
            ),
            ("SERVFAIL", answer(ServFail, &[], None), "no-store"),
            (
                "SERVFAIL with an SOA",
                answer(ServFail, &[], Some((60, 60))),
                "no-store",
            ),
            ("REFUSED", answer(Refused, &[], None), "no-store"),
            ("FORMERR", answer(FormErr, &[], None), "no-store"),
            ("NOTIMP", answer(NotImp, &[], None), "no-store"),
        ] {
            assert_eq!(cache_control(&msg), want, "{what}");
        }
        // Malformed bytes (no panic) and a header alone: nothing to keep.
        assert_eq!(cache_control(&[0; 5]), "no-store");
        assert_eq!(cache_control(&answer(NoError, &[], None)[..12]), "no-store");
    }

    #[test]
    fn http2_answers_are_cut_at_their_ends_however_the_writes_fall() {
        // SETTINGS (6 bytes), then HEADERS and DATA with END_STREAM (5), then HEADERS with
        // END_STREAM and no payload (an empty answer), then HEADERS (3) and DATA (4, END_STREAM).
        let mut wire = Vec::new();
        for (len, kind, flags) in [
            (6u8, 4u8, 0u8),
            (2, 1, 4),
            (5, 0, 1),
            (0, 1, 5),
            (3, 1, 4),
            (4, 0, 1),
        ] {
            wire.extend_from_slice(&[0, 0, len, kind, flags, 0, 0, 0, 1]);
            wire.extend(std::iter::repeat_n(7u8, usize::from(len)));
        }
        // Where a stream ends: after DATA (5), the empty HEADERS, and the last DATA.
        let ends = [15 + 11 + 14, 40 + 9, 49 + 12 + 13];
        assert_eq!(*ends.last().unwrap(), wire.len());
        for chunk in 1..=wire.len() {
            for take_at_most in [1usize, 4, 128] {
                let mut cut = FrameCut::default();
                let mut at = 0;
                let mut writes = Vec::new();
                while at < wire.len() {
                    let offered = &wire[at..wire.len().min(at + chunk)];
                    let n = cut.limit(offered).min(take_at_most);
                    assert!(n > 0);
                    cut.advance(&offered[..n]);
                    at += n;
                    writes.push(at);
                }
                // No write runs past the end of an answer.
                let mut from = 0;
                for w in &writes {
                    assert!(
                        !ends.iter().any(|e| from < *e && *e < *w),
                        "chunk {chunk}, at most {take_at_most}: {writes:?}"
                    );
                    from = *w;
                }
                if chunk == wire.len() && take_at_most == 128 {
                    // Everything offered at once: one write an answer.
                    assert_eq!(writes, ends, "chunk {chunk}");
                }
            }
        }
    }

    /// What a [`Writes`] passes down: each write's length, and `0` for a flush.
    #[derive(Default)]
    struct Recorder(Vec<usize>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.push(data.len());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.0.push(0);
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Layered for Recorder {
        fn poll_flush_below(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Wakes(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn an_http2_flush_lets_other_answers_join_it_once_then_goes() {
        for h2 in [true, false] {
            let wakes = Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0)));
            let waker = std::task::Waker::from(Arc::clone(&wakes));
            let mut cx = Context::from_waker(&waker);
            let mut w = Writes {
                inner: Recorder::default(),
                started: Instant::now(),
                blocked: Arc::new(AtomicU64::new(0)),
                frames: h2.then(FrameCut::default),
                unflushed: false,
                deferred: false,
            };
            // Nothing written: a flush goes at once.
            assert!(Pin::new(&mut w).poll_flush(&mut cx).is_ready());
            // A frame (a SETTINGS frame with no payload) written, then a flush.
            let frame = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
            assert!(Pin::new(&mut w).poll_write(&mut cx, &frame).is_ready());
            let first = Pin::new(&mut w).poll_flush(&mut cx);
            if h2 {
                // It yields once, waking its task to come back...
                assert!(first.is_pending());
                assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
                assert_eq!(
                    w.blocked.load(Ordering::Relaxed),
                    0,
                    "a yield is not a blocked write"
                );
                // ...and what is written meanwhile goes with the flush that follows.
                assert!(Pin::new(&mut w).poll_write(&mut cx, &frame).is_ready());
                assert!(Pin::new(&mut w).poll_flush(&mut cx).is_ready());
                assert_eq!(w.inner.0, vec![0, 9, 9, 0]);
                // The next answer's flush yields once again.
                assert!(Pin::new(&mut w).poll_write(&mut cx, &frame).is_ready());
                assert!(Pin::new(&mut w).poll_flush(&mut cx).is_pending());
                assert!(Pin::new(&mut w).poll_flush(&mut cx).is_ready());
                assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
            } else {
                // HTTP/1.1 answers one request at a time: nothing would join it.
                assert!(first.is_ready());
                assert_eq!(w.inner.0, vec![0, 9, 0]);
                assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
            }
        }
    }
}
