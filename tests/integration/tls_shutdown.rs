//! Shutdown of the encrypted listeners, held to plain TCP's rule: stop accepting, answer what
//! was already received, close; the whole within one `shutdown_grace`.
//!
//! Clients here come from 127.0.0.150-127.0.0.159. The upstream answers every query late, so
//! the requests and queries sent before the stop are still being resolved when it comes.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::harness::*;
use crate::identity::{Pki, tls_connect};

/// How late the upstream answers (under the harness's 500 ms per-attempt timeout).
const UPSTREAM_DELAY: Duration = Duration::from_millis(300);

/// DoT and DoH listeners (no client certificates) and a group for 127.0.0.150-155.
fn config(pki: &Pki) -> String {
    format!(
        r#"
[tls]
idle_timeout = "10s"
[[tls.dot]]
listen = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
[[tls.doh]]
listen = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
[[groups]]
name = "stopping"
cidrs = ["127.0.0.150/31", "127.0.0.152/30"]
allow = ["*.example"]
"#,
        cert = pki.path("server.crt").display(),
        key = pki.path("server.key").display(),
    )
}

/// A server with DoT and DoH whose `shutdown_grace` is `grace`; its DoT and DoH addresses.
async fn start(
    pki: &Pki,
    upstream: Option<SocketAddr>,
    grace: &str,
) -> (TestServer, SocketAddr, SocketAddr) {
    let s = TestServer::start_full(
        upstream,
        &config(pki),
        None,
        "127.0.0.1:0",
        &format!("shutdown_grace = \"{grace}\""),
    )
    .await;
    let tls = &s.app.as_ref().unwrap().tls;
    let (dot, doh) = (tls.dot_addrs[0], tls.doh_addrs[0]);
    (s, dot, doh)
}

/// Shut the server down on a task of its own; the task returns how long it took.
fn stop(s: &mut TestServer) -> JoinHandle<Duration> {
    let app = s.app.take().expect("running");
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        app.shutdown().await;
        started.elapsed()
    })
}

/// Wait until the upstream has been asked `n` queries.
async fn until_upstream_asked(up: &RunningUpstream, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while up.queries() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} queries reached the upstream",
            up.queries()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A DoH POST for `qname` to `doh`, and the query's ID.
fn doh_post(doh: SocketAddr, qname: &str) -> (hyper::Request<Full<Bytes>>, [u8; 2]) {
    let q = query_packet(qname, RecordType::A, false);
    let id = [q[0], q[1]];
    let req = hyper::Request::post(format!("https://127.0.0.1:{}/dns-query", doh.port()))
        .header("host", format!("127.0.0.1:{}", doh.port()))
        .header("content-type", "application/dns-message")
        .body(Full::new(Bytes::from(q)))
        .unwrap();
    (req, id)
}

/// What a DoH exchange gave: the status and the DNS answer, or the client's error.
type Exchange = Result<(u16, Option<Message>), String>;

async fn exchange(
    resp: impl std::future::Future<
        Output = Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
    >,
) -> Exchange {
    let resp = resp.await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let is_dns = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/dns-message");
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, is_dns.then(|| Message::from_vec(&body).unwrap())))
}

/// A DoH exchange's answer must be a 200 carrying the upstream's address for the query `id`.
fn assert_answered(what: &str, got: Exchange, id: [u8; 2]) {
    let (status, answer) = got.unwrap_or_else(|e| panic!("{what}: no answer ({e})"));
    assert_eq!(status, 200, "{what}");
    let m = answer.unwrap_or_else(|| panic!("{what}: no DNS answer"));
    assert_eq!(m.metadata.id, u16::from_be_bytes(id), "{what}");
    assert_eq!(a_records(&m), ["192.0.2.8"], "{what}: {m:?}");
}

/// A DoH connection over HTTP/2 from `src`: the request sender and the connection's task.
async fn h2_connect(
    pki: &Pki,
    doh: SocketAddr,
    src: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = tls_connect(&pki.client(None, &[b"h2"]), doh, src)
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

/// A DoH connection over HTTP/1.1 from `src`: the request sender and the connection's task.
async fn h1_connect(
    pki: &Pki,
    doh: SocketAddr,
    src: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = tls_connect(&pki.client(None, &[b"http/1.1"]), doh, src)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    (send, tokio::spawn(conn))
}

/// The connection task `conn` ends (the server closed the connection) within `wait`.
async fn ends_within(
    what: &str,
    conn: JoinHandle<Result<(), hyper::Error>>,
    wait: Duration,
) -> Result<(), hyper::Error> {
    tokio::time::timeout(wait, conn)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server did not close the connection"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_requests_in_flight_at_shutdown_are_answered_then_the_connections_close() {
    let pki = Pki::new();
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 8])
        .with_delay(UPSTREAM_DELAY)
        .start()
        .await;
    let (mut s, _, doh) = start(&pki, Some(up.addr), "3s").await;

    // An HTTP/1.1 keep-alive connection that has had its answer and sits idle.
    let (mut idle, idle_conn) = h1_connect(&pki, doh, "127.0.0.150").await;
    let (req, id) = doh_post(doh, "idle.stop.example");
    assert_answered(
        "the idle connection's request",
        exchange(idle.send_request(req)).await,
        id,
    );

    // Three requests on one HTTP/2 connection, one on an HTTP/1.1 connection: every name
    // distinct (no coalescing), each waiting for the late upstream when the stop comes.
    let (h2, h2_conn) = h2_connect(&pki, doh, "127.0.0.151").await;
    let mut on_h2 = Vec::new();
    for i in 0..3 {
        let (req, id) = doh_post(doh, &format!("h2-{i}.stop.example"));
        let mut send = h2.clone();
        on_h2.push((
            tokio::spawn(async move { exchange(send.send_request(req)).await }),
            id,
        ));
    }
    let (mut h1, h1_conn) = h1_connect(&pki, doh, "127.0.0.152").await;
    let (req, h1_id) = doh_post(doh, "h1.stop.example");
    let on_h1 = tokio::spawn(async move { exchange(h1.send_request(req)).await });
    until_upstream_asked(&up, 5).await;

    let stopping = stop(&mut s);
    for (i, (t, id)) in on_h2.into_iter().enumerate() {
        assert_answered(&format!("HTTP/2 request {i}"), t.await.unwrap(), id);
    }
    assert_answered("the HTTP/1.1 request", on_h1.await.unwrap(), h1_id);

    // Then every connection closes: HTTP/2 after its GOAWAY (cleanly: the client's connection
    // ends without error), HTTP/1.1 after its response, the idle one at once.
    ends_within("HTTP/2", h2_conn, Duration::from_secs(3))
        .await
        .expect("HTTP/2 ends with GOAWAY, not a reset");
    let _ = ends_within("HTTP/1.1", h1_conn, Duration::from_secs(3)).await;
    let _ = ends_within("idle HTTP/1.1", idle_conn, Duration::from_secs(3)).await;
    let took = stopping.await.unwrap();
    assert!(
        took < Duration::from_secs(2),
        "shutdown waited for the answers, not for the grace period: {took:?}"
    );
}

/// The next DoT answer on `c` within 4 s; `None` when the connection closed or nothing came.
async fn next<S: AsyncReadExt + Unpin>(c: &mut S) -> Option<Message> {
    let read = async {
        let len = c.read_u16().await.ok()?;
        let mut buf = vec![0; usize::from(len)];
        c.read_exact(&mut buf).await.ok()?;
        Message::from_vec(&buf).ok()
    };
    tokio::time::timeout(Duration::from_secs(4), read)
        .await
        .ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_queries_read_before_shutdown_are_answered_then_the_connection_closes() {
    let pki = Pki::new();
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 8])
        .with_delay(UPSTREAM_DELAY)
        .start()
        .await;
    let (mut s, dot, _) = start(&pki, Some(up.addr), "3s").await;
    let framed = |p: &[u8]| {
        let mut f = (p.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(p);
        f
    };
    // One connection with three pipelined misses, one with a single miss.
    let mut piped = tls_connect(&pki.client(None, &[]), dot, "127.0.0.153")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let q = query_packet(&format!("piped-{i}.stop.example"), RecordType::A, false);
        piped.write_all(&framed(&q)).await.unwrap();
        ids.push([q[0], q[1]]);
    }
    let mut single = tls_connect(&pki.client(None, &[]), dot, "127.0.0.154")
        .await
        .unwrap();
    let q = query_packet("single.stop.example", RecordType::A, false);
    single.write_all(&framed(&q)).await.unwrap();
    let single_id = [q[0], q[1]];
    until_upstream_asked(&up, 4).await;

    let stopping = stop(&mut s);
    // A query sent once the server is stopping is not read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let late = query_packet("late.stop.example", RecordType::A, false);
    let _ = piped.write_all(&framed(&late)).await;

    let mut got = Vec::new();
    for _ in 0..3 {
        let m = next(&mut piped)
            .await
            .expect("every pipelined query read before the stop is answered");
        assert_eq!(a_records(&m), ["192.0.2.8"]);
        got.push(m.metadata.id.to_be_bytes());
    }
    got.sort_unstable();
    ids.sort_unstable();
    assert_eq!(got, ids);
    assert!(
        next(&mut piped).await.is_none(),
        "the query sent after the stop is not answered; the connection closes"
    );
    let m = next(&mut single)
        .await
        .expect("the single query is answered");
    assert_eq!(m.metadata.id.to_be_bytes(), single_id);
    assert_eq!(a_records(&m), ["192.0.2.8"]);
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(4), single.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the connection closes once answered: {closed:?}"
    );
    let took = stopping.await.unwrap();
    assert!(
        took < Duration::from_secs(2),
        "shutdown waited for the answers, not for the grace period: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_lingering_plain_and_tls_clients_takes_one_grace_period() {
    let pki = Pki::new();
    // A grace of 2 s: one grace period is ~2 s, two (as before) ~4 s; the bounds below keep a
    // second of margin each way on a loaded machine.
    let (mut s, dot, doh) = start(&pki, None, "2s").await;
    // Clients that hold every kind of listener past the grace period: on plain TCP a frame
    // whose length arrived but not its body (a frame begun is read whole, within the 10 s
    // idle timeout); on DoT and DoH connections that never start their TLS handshake (5 s
    // handshake timeout).
    let mut plain = tcp_connect(s.tcp, "127.0.0.155").await;
    plain.write_all(&[0, 30, 0xAB]).await.unwrap();
    let _dot = tcp_connect(dot, "127.0.0.155").await;
    let _doh = tcp_connect(doh, "127.0.0.155").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let took = stop(&mut s).await.unwrap();
    assert!(
        took >= Duration::from_millis(1800),
        "the lingering clients held the drain for the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_millis(3000),
        "plain and encrypted listeners drain side by side, within one grace period: {took:?}"
    );
}
