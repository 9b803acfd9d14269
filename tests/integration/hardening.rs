//! Issue 9 hardening of the serving path: unknown clients get nothing (not even FORMERR) with
//! `unknown_clients = "drop"`, the TCP listener cannot be starved, misses are bounded and
//! coalesced, and the admin endpoint caps its connections.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::*;

const GROUP: &str = r#"
[[groups]]
name = "hardened"
cidrs = ["127.0.0.50/32", "127.0.0.51/32"]
allow = ["*.corp.internal", "*.example"]
"#;

/// One datagram from `src`, and whatever comes back within `wait` (None: silence).
async fn udp_within(
    server: SocketAddr,
    src: &str,
    packet: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(src.parse().unwrap(), 0))
        .await
        .unwrap();
    sock.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn with_drop_unknown_sources_get_no_formerr_or_notimp() {
    let s = TestServer::start_full(
        None,
        GROUP,
        None,
        "127.0.0.1:0",
        "unknown_clients = \"drop\"",
    )
    .await;
    let q = query_packet("api.corp.internal", RecordType::A, false);
    let broken = &q[..q.len() - 3];
    let mut notimp = q.clone();
    notimp[2] = (notimp[2] & 0x87) | (5 << 3);
    let wait = Duration::from_millis(700);
    // A known client still learns its packet was broken.
    let r = udp_within(s.udp, "127.0.0.50", broken, Duration::from_secs(4))
        .await
        .expect("a known client gets FORMERR");
    assert_eq!(r[3] & 0x0F, 1);
    let r = udp_within(s.udp, "127.0.0.50", &notimp, Duration::from_secs(4))
        .await
        .expect("a known client gets NOTIMP");
    assert_eq!(r[3] & 0x0F, 4);
    // An unknown one learns nothing, not even that a resolver listens here.
    assert!(
        udp_within(s.udp, "127.0.0.99", broken, wait)
            .await
            .is_none()
    );
    assert!(
        udp_within(s.udp, "127.0.0.99", &notimp, wait)
            .await
            .is_none()
    );
    assert!(udp_within(s.udp, "127.0.0.99", &q, wait).await.is_none());
    // Over TCP as well.
    let m = tcp_query(s.tcp, "127.0.0.50", "api.corp.internal", RecordType::A).await;
    assert_ne!(m.metadata.response_code, ResponseCode::FormErr);
}
