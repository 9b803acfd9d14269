//! Malformed input never takes the server down.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::common::metric_sum;
use crate::harness::*;

const GROUP: &str = r#"
[[groups]]
name = "robust"
cidrs = ["127.0.0.40/32"]
allow = ["*.corp.internal"]
"#;

#[tokio::test]
async fn malformed_packets_are_answered_or_dropped_and_the_server_keeps_serving() {
    let s = TestServer::start(None, GROUP).await;
    let src = "127.0.0.40".parse().unwrap();
    // Too short: dropped.
    assert!(udp_raw(s.udp, src, &[1, 2, 3]).await.is_none());
    // A response: dropped (no reflection).
    let mut resp = query_packet("api.corp.internal", RecordType::A, false);
    resp[2] |= 0x80;
    assert!(udp_raw(s.udp, src, &resp).await.is_none());
    // A truncated question: FORMERR with the same ID.
    let q = query_packet("api.corp.internal", RecordType::A, false);
    let r = udp_raw(s.udp, src, &q[..q.len() - 3])
        .await
        .expect("FORMERR");
    assert_eq!(&r[0..2], &q[0..2]);
    assert_eq!(r[3] & 0x0F, 1);
    // Another opcode: NOTIMP.
    let mut upd = q.clone();
    upd[2] = (upd[2] & 0x87) | (5 << 3);
    let r = udp_raw(s.udp, src, &upd).await.expect("NOTIMP");
    assert_eq!(r[3] & 0x0F, 4);
    // Garbage of every length, deterministic pseudo-random.
    let mut x: u32 = 0x1234_5678;
    for len in 0..300usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x & 0xFF) as u8
            })
            .collect();
        let sock = std::net::UdpSocket::bind("127.0.0.40:0").unwrap();
        sock.send_to(&bytes, s.udp).unwrap();
    }
    // Still serving, over UDP and TCP.
    let m = udp_query(s.udp, "127.0.0.40", "api.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let m = tcp_query(s.tcp, "127.0.0.40", "api.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn tcp_garbage_and_idle_connections_do_not_hurt() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start(None, GROUP).await;
    // A connection that sends a length and then garbage.
    let mut c = tokio::net::TcpStream::connect(s.tcp).await.unwrap();
    c.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    // A connection that sends half a length prefix and idles.
    let mut idle = tokio::net::TcpStream::connect(s.tcp).await.unwrap();
    idle.write_all(&[0]).await.unwrap();
    let m = tcp_query(s.tcp, "127.0.0.40", "git.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

/// A TCP frame that cannot be a query (empty, shorter than a header, a response) ends the
/// connection, as in Unbound: frames the server answered nothing to used to restart the idle
/// timer, so a peer sending `00 00` every few seconds held its slot forever. A real query on a
/// connection still works as before, and an answer already owed is still written.
#[tokio::test]
async fn tcp_frames_that_cannot_be_queries_end_the_connection() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_full(
        None,
        GROUP,
        None,
        "127.0.0.1:0",
        "tcp_idle_timeout = \"30s\"",
    )
    .await;
    let mut response = query_packet("api.corp.internal", RecordType::A, false);
    response[2] |= 0x80;
    let frames: [&[u8]; 4] = [&[0, 0], &[0, 1, 7], &[0, 5, 1, 2, 3, 4, 5], &[]];
    for (i, frame) in frames.iter().enumerate() {
        let mut c = tcp_connect(s.tcp, "127.0.0.40").await;
        // A good query first: answered.
        let m = tcp_ask(&mut c, "git.corp.internal", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        if frame.is_empty() {
            let mut framed = (response.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&response);
            c.write_all(&framed).await.unwrap();
        } else {
            c.write_all(frame).await.unwrap();
        }
        let started = Instant::now();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0) | Err(_))),
            "frame {i}: closed, not left to the 30 s idle timeout: {n:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let m = tcp_query(s.tcp, "127.0.0.40", "api.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

/// A second `dnsward serve` on a running server's config stops before it writes anything:
/// the state directory and the event log are locked by the running one. It used to record a
/// policy version and append a `policy loaded` line (with the running server's next sequence
/// number) before it failed to bind, so `audit verify` reported tampering; here its listeners
/// (port 0) would even have started.
#[tokio::test]
async fn a_second_server_on_the_same_state_and_event_log_stops_before_writing() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let state = tempfile::tempdir().unwrap();
    let extra = format!(
        "{GROUP}\n[store]\nstate_dir = \"{}\"\n",
        state.path().display()
    );
    let s = TestServer::start(None, &extra).await;
    let m = udp_query(s.udp, "127.0.0.40", "api.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = std::fs::read_to_string(&s.events_path).unwrap();
    let versions = std::fs::read_dir(state.path()).unwrap().count();
    let mut child = Command::new(crate::common::DNSWARD)
        .args(["serve", "--config"])
        .arg(&s.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the second server kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("another dnsward is running"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::read_to_string(&s.events_path).unwrap(),
        before,
        "nothing appended to the running server's log"
    );
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), versions);
}

/// Rejected TCP connections so far. The counter is process-wide, and only this test reaches a
/// connection cap, so its increase is this test's rejections.
fn tcp_rejected(metrics: &str) -> f64 {
    metric_sum(metrics, "dnsward_tcp_connections_rejected_total", &[]).unwrap_or(0.0)
}

#[tokio::test]
async fn tcp_connections_are_capped_and_idle_ones_closed() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The idle timeout only has to outlast the few milliseconds between the answers on the two
    // held connections and the third connection's rejection.
    let s = TestServer::start_full(
        None,
        GROUP,
        None,
        "127.0.0.1:0",
        "tcp_max_connections = 2\ntcp_idle_timeout = \"2s\"",
    )
    .await;
    let rejected_before = tcp_rejected(&metrics_text(&s).await);
    // Two connections that each got an answer: the server has taken both, so both slots are held.
    let mut a = tcp_connect(s.tcp, "127.0.0.40").await;
    let mut b = tcp_connect(s.tcp, "127.0.0.40").await;
    for conn in [&mut a, &mut b] {
        let m = tcp_ask(conn, "git.corp.internal", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }
    // The third is closed without an answer, although its query is sent at once: a connection
    // that had been taken would be answered within the idle timeout.
    let mut c = tcp_connect(s.tcp, "127.0.0.40").await;
    let packet = query_packet("git.corp.internal", RecordType::A, false);
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&packet);
    let _ = c.write_all(&framed).await; // may already fail: the server has closed it
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0) | Err(_))),
        "the third connection is closed unanswered: {n:?}"
    );
    let rejected_after = tcp_rejected(&metrics_text(&s).await);
    assert!(
        rejected_after >= rejected_before + 1.0,
        "the rejection is counted: dnsward_tcp_connections_rejected_total went from \
         {rejected_before} to {rejected_after}"
    );
    // The held ones are closed after the idle timeout.
    for conn in [&mut a, &mut b] {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0) | Err(_))),
            "idle connection closed: {n:?}"
        );
    }
    // And then there is room again.
    let m = tcp_query(s.tcp, "127.0.0.40", "git.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}
