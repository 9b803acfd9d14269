//! Protocol edges through real sockets: OPT record checks (RFC 6891), packets built byte by
//! byte so nothing in between can tidy them up.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::metric_sum;
use crate::harness::*;

/// A group only these tests use, so its metric labels count these tests' queries alone.
const WIRE: &str = r#"
[[groups]]
name = "wire"
cidrs = ["127.0.0.61/32"]
allow = ["*.corp.internal", "corp.internal", "www.example"]
"#;

const MEMBER: &str = "127.0.0.61";
const STRANGER: &str = "127.0.0.99";

/// A query for `labels` (raw bytes, no escaping) of type `qtype`, RD set, with `an`, `ns` and
/// `ar` as the header counts; `tail` (records) follows the question.
fn packet(labels: &[&[u8]], qtype: u16, counts: [u16; 3], tail: &[u8]) -> Vec<u8> {
    let mut out = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1];
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    for l in labels {
        out.push(u8::try_from(l.len()).unwrap());
        out.extend_from_slice(l);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(tail);
    out
}

/// An OPT record owned by `owner` (wire form), EDNS `version`, no options.
fn opt(owner: &[u8], version: u8) -> Vec<u8> {
    let mut out = owner.to_vec();
    out.extend_from_slice(&41u16.to_be_bytes());
    out.extend_from_slice(&1232u16.to_be_bytes());
    out.extend_from_slice(&[0, version, 0, 0, 0, 0]);
    out
}

const API: [&[u8]; 3] = [b"api", b"corp", b"internal"];

/// The 4-bit header rcode of an answer.
fn header_rcode(r: &[u8]) -> u8 {
    r[3] & 0x0F
}

/// The answer, or `None` after `wait` of silence.
async fn udp_within(server: SocketAddr, src: &str, p: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(src.parse().unwrap(), 0))
        .await
        .unwrap();
    sock.send_to(p, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

fn formerr_count(metrics: &str) -> f64 {
    metric_sum(
        metrics,
        "dnsward_malformed_packets_total",
        &[("action", "formerr")],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn an_opt_record_not_owned_by_the_root_or_outside_the_additionals_is_formerr() {
    let s = TestServer::start(None, WIRE).await;
    let before = formerr_count(&metrics_text(&s).await);
    let non_root = packet(&API, 1, [0, 0, 1], &opt(b"\x01x\x01y\x00", 0));
    let in_answers = packet(&API, 1, [1, 0, 0], &opt(b"\x00", 0));
    let in_authority = packet(&API, 1, [0, 1, 0], &opt(b"\x00", 0));
    for (what, p) in [
        ("non-root owner", &non_root),
        ("OPT in the answer section", &in_answers),
        ("OPT in the authority section", &in_authority),
    ] {
        let r = udp_raw(s.udp, MEMBER.parse().unwrap(), p)
            .await
            .unwrap_or_else(|| panic!("{what}: an answer over UDP"));
        assert_eq!(header_rcode(&r), 1, "{what}: FORMERR over UDP");
        assert_eq!(&r[0..2], &p[0..2], "{what}: ID echoed");
        let r = tcp_raw(s.tcp, MEMBER, p)
            .await
            .unwrap_or_else(|| panic!("{what}: an answer over TCP"));
        assert_eq!(header_rcode(&r), 1, "{what}: FORMERR over TCP");
    }
    let after = formerr_count(&metrics_text(&s).await);
    assert!(
        after >= before + 6.0,
        "counted as malformed: {before} -> {after}"
    );
    // The same query with a proper OPT is answered.
    let fine = packet(&API, 1, [0, 0, 1], &opt(b"\x00", 0));
    let r = udp_raw(s.udp, MEMBER.parse().unwrap(), &fine)
        .await
        .expect("an answer");
    assert_eq!(header_rcode(&r), 0);
    assert_eq!(u16::from_be_bytes([r[6], r[7]]), 2, "both A records");
}

#[tokio::test]
async fn with_drop_a_stranger_gets_no_formerr_for_a_bad_opt() {
    let s = TestServer::start_full(
        None,
        WIRE,
        None,
        "127.0.0.1:0",
        "unknown_clients = \"drop\"",
    )
    .await;
    let p = packet(&API, 1, [0, 0, 1], &opt(b"\x01x\x00", 0));
    assert!(
        udp_within(s.udp, STRANGER, &p, Duration::from_millis(700))
            .await
            .is_none()
    );
    let r = udp_within(s.udp, MEMBER, &p, Duration::from_secs(4))
        .await
        .expect("a member learns its packet was broken");
    assert_eq!(header_rcode(&r), 1);
}
