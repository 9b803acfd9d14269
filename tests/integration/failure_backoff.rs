//! Failure-cache back-off (RFC 9520 §3.2): a question that fails again right after its failure
//! ran out is remembered twice as long, up to `[upstream] failure_ttl_max`, so a question
//! failing for good costs its upstream fewer and fewer exchanges.
//!
//! Everything here listens on 127.0.0.214 (dnsward, its admin, the fake upstream) and asks from
//! 127.0.0.215.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::*;

const HOST: &str = "127.0.0.214";
const CLIENT: &str = "127.0.0.215";

const GROUP: &str = r#"
[[groups]]
name = "backoff"
cidrs = ["127.0.0.215/32"]
allow = ["*.example"]
"#;

async fn ask(server: SocketAddr, qname: &str) -> (Message, Vec<u8>) {
    let packet = query_packet(qname, RecordType::A, true);
    let raw = udp_raw(server, CLIENT.parse().unwrap(), &packet)
        .await
        .unwrap_or_else(|| panic!("{qname}: no answer"));
    (Message::from_vec(&raw).expect("decodes"), raw)
}

/// Whether the answer carries Extended DNS Error 13 (Cached Error).
fn says_cached_error(raw: &[u8]) -> bool {
    raw.windows(6)
        .any(|w| w[0..2] == [0, 15] && w[4..6] == [0, 13])
}

/// `failure_ttl = 1s`: remembered 1 s after the first failure, 2 s after the second. Without
/// the back-off the question asked 1.2 s after its second failure went upstream again.
#[tokio::test]
async fn a_question_that_keeps_failing_is_remembered_twice_as_long_each_time() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 66])
        .with_fault(Fault::BlackHole)
        .start_on(HOST.parse().unwrap())
        .await;
    let section = format!(
        "servers = [{{ address = \"{}\", timeout = \"200ms\" }}]\ntimeout = \"200ms\"\nfailure_ttl = \"1s\"\nfailure_ttl_max = \"4s\"",
        up.addr
    );
    let s = TestServer::start_on(HOST, &section, GROUP, &[]).await;
    let asked = || up.asked().len();
    let pause = Duration::from_millis(1_200);

    let (m, raw) = ask(s.udp, "dead.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(!says_cached_error(&raw));
    assert_eq!(asked(), 1);

    // Past the first failure's 1 s: asked again, failing again (now remembered 2 s).
    tokio::time::sleep(pause).await;
    let (_, raw) = ask(s.udp, "dead.example").await;
    assert!(!says_cached_error(&raw), "1 s ran out: asked again");
    assert_eq!(asked(), 2);

    // 1.2 s later: still remembered.
    tokio::time::sleep(pause).await;
    let (m, raw) = ask(s.udp, "dead.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        says_cached_error(&raw),
        "the second failure is remembered 2 s"
    );
    assert_eq!(asked(), 2);

    // 2.4 s after it: asked again.
    tokio::time::sleep(pause).await;
    let (_, raw) = ask(s.udp, "dead.example").await;
    assert!(!says_cached_error(&raw), "2 s ran out: asked again");
    assert_eq!(asked(), 3);
}
