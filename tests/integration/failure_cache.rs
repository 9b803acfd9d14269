//! Resolution-failure caching (RFC 9520): once a question's resolution has failed, the same
//! question is answered SERVFAIL at once (EDE 13, Cached Error) for `[upstream] failure_ttl`,
//! without another upstream exchange; other questions still go upstream, and after the TTL the
//! question is asked again.
//!
//! The harness gives each upstream server 500 ms and the whole query 1 s.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::*;

const GROUP: &str = r#"
[[groups]]
name = "failcache"
cidrs = ["127.0.0.160/29"]
allow = ["*.example"]
"#;

/// Below the 500 ms the upstream is given (an answer that asked it waits all of them against a
/// black hole): an answer this fast asked no upstream. Generous, for a loaded machine.
const AT_ONCE: Duration = Duration::from_millis(450);
/// Nearly the 500 ms the upstream is given: an answer this slow waited for it.
const WAITED: Duration = Duration::from_millis(400);

/// One query from `src` over UDP (with EDNS): the decoded answer, its bytes, how long it took.
async fn ask(server: SocketAddr, src: &str, qname: &str) -> (Message, Vec<u8>, Duration) {
    let started = Instant::now();
    let packet = query_packet(qname, RecordType::A, true);
    let raw = udp_raw(server, src.parse().unwrap(), &packet)
        .await
        .unwrap_or_else(|| panic!("{qname}: no answer"));
    let elapsed = started.elapsed();
    (Message::from_vec(&raw).expect("decodes"), raw, elapsed)
}

/// Whether the answer carries Extended DNS Error 13 (Cached Error): an EDE option (code 15)
/// whose INFO-CODE is 13.
fn says_cached_error(raw: &[u8]) -> bool {
    raw.windows(6)
        .any(|w| w[0..2] == [0, 15] && w[4..6] == [0, 13])
}

/// How many times the upstream was asked `qname`.
fn times_asked(up: &RunningUpstream, qname: &str) -> usize {
    up.asked()
        .iter()
        .filter(|n| n.trim_end_matches('.').eq_ignore_ascii_case(qname))
        .count()
}

#[tokio::test]
async fn a_failed_question_is_answered_servfail_at_once_until_its_failure_ttl_ends() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .with_fault(Fault::BlackHole)
        .start()
        .await;
    let mut s = TestServer::start_with_upstream_extra(up.addr, GROUP, "failure_ttl = \"1s\"").await;

    // The first asking waits for the upstream, in vain.
    let (m, raw, first) = ask(s.udp, "127.0.0.160", "gone.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(first >= WAITED, "the first asking waited: {first:?}");
    assert!(
        !says_cached_error(&raw),
        "the first failure is no cached one"
    );
    assert!(
        raw.windows(6)
            .any(|w| w[0..2] == [0, 15] && w[4..6] == [0, 22]),
        "the first failure says why: EDE 22 (No Reachable Authority)"
    );
    assert_eq!(times_asked(&up, "gone.example"), 1);

    // A stub's retry, and another client asking the same: SERVFAIL at once, nothing sent.
    for src in ["127.0.0.160", "127.0.0.161"] {
        let (m, raw, again) = ask(s.udp, src, "gone.example").await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{src}");
        assert!(again < AT_ONCE, "{src}: answered after {again:?}");
        assert!(says_cached_error(&raw), "{src}: EDE 13 (Cached Error)");
    }
    assert_eq!(
        times_asked(&up, "gone.example"),
        1,
        "the upstream saw one exchange for the name"
    );

    // Another name still goes upstream.
    let (m, _, other) = ask(s.udp, "127.0.0.160", "other.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        other >= WAITED,
        "another name waited for the upstream: {other:?}"
    );
    assert_eq!(times_asked(&up, "other.example"), 1);

    let metrics = metrics_text(&s).await;
    let hits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dnsward_failure_cache_hits_total "))
        .unwrap_or_else(|| panic!("no failure cache counter in\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(hits >= 2.0, "{hits}");

    // After the TTL the name is asked again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (m, _, later) = ask(s.udp, "127.0.0.160", "gone.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(later >= WAITED, "after the TTL it waited again: {later:?}");
    assert_eq!(times_asked(&up, "gone.example"), 2);

    let events = s.stop_and_read_events().await;
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "query" && e["qname"].as_str() == Some("gone.example"))
        .map(|e| {
            assert_eq!(e["verdict"], "servfail", "{e}");
            e["reason"].as_str().unwrap()
        })
        .collect();
    let cached = reasons
        .iter()
        .filter(|r| **r == "failure cached: no upstream answered")
        .count();
    assert_eq!(cached, 2, "{reasons:?}");
    assert_eq!(reasons.len(), 4, "{reasons:?}");
}

#[tokio::test]
async fn answers_flow_again_after_the_failure_ttl_once_the_upstream_recovers() {
    let down = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .with_fault(Fault::BlackHole)
        .start()
        .await;
    let addr = down.addr;
    let s = TestServer::start_with_upstream_extra(addr, GROUP, "failure_ttl = \"1s\"").await;
    let (m, _, _) = ask(s.udp, "127.0.0.162", "back.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);

    // The upstream recovers on the same address.
    drop(down);
    let deadline = Instant::now() + Duration::from_secs(5);
    let up = loop {
        match FakeUpstream::new()
            .answering_everything([192, 0, 2, 7])
            .start_at(addr)
            .await
        {
            Ok(up) => break up,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot take {addr} again: {e}"),
        }
    };

    // Within the TTL the failure still stands, and the recovered upstream is not asked.
    let (m, raw, elapsed) = ask(s.udp, "127.0.0.162", "back.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(says_cached_error(&raw));
    assert!(elapsed < AT_ONCE, "{elapsed:?}");
    assert_eq!(times_asked(&up, "back.example"), 0);

    // After it, the answer flows.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (m, _, _) = ask(s.udp, "127.0.0.162", "back.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&m), ["192.0.2.7"]);
    assert_eq!(times_asked(&up, "back.example"), 1);
}

#[tokio::test]
async fn an_upstream_servfail_is_remembered_as_a_failure() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .with_fault(Fault::ServFail)
        .start()
        .await;
    let s = TestServer::start_with_upstream_extra(up.addr, GROUP, "failure_ttl = \"1s\"").await;
    let (m, raw, _) = ask(s.udp, "127.0.0.163", "broken.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(!says_cached_error(&raw));
    for _ in 0..3 {
        let (m, raw, _) = ask(s.udp, "127.0.0.163", "broken.example").await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(says_cached_error(&raw));
    }
    assert_eq!(times_asked(&up, "broken.example"), 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (m, _, _) = ask(s.udp, "127.0.0.163", "broken.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(times_asked(&up, "broken.example"), 2);
}

#[tokio::test]
async fn a_failure_ttl_of_0s_asks_the_upstream_every_time() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .with_fault(Fault::BlackHole)
        .start()
        .await;
    let s = TestServer::start_with_upstream_extra(up.addr, GROUP, "failure_ttl = \"0s\"").await;
    for round in 1..=2 {
        let (m, raw, elapsed) = ask(s.udp, "127.0.0.164", "never.example").await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(!says_cached_error(&raw));
        assert!(elapsed >= WAITED, "{round}: {elapsed:?}");
        assert_eq!(times_asked(&up, "never.example"), round);
    }
}

#[tokio::test]
async fn a_reload_forgets_the_failures_of_the_old_upstreams() {
    let down = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .with_fault(Fault::BlackHole)
        .start()
        .await;
    let good = FakeUpstream::new()
        .answering_everything([192, 0, 2, 8])
        .start()
        .await;
    let s = TestServer::start_with_upstream_extra(down.addr, GROUP, "failure_ttl = \"5m\"").await;
    let (m, _, _) = ask(s.udp, "127.0.0.165", "moved.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let (_, raw, _) = ask(s.udp, "127.0.0.165", "moved.example").await;
    assert!(says_cached_error(&raw), "remembered before the reload");

    // The operator points dnsward at a working upstream.
    s.edit_config_and_reload(|text| text.replace(&down.addr.to_string(), &good.addr.to_string()))
        .await;

    let (m, _, _) = ask(s.udp, "127.0.0.165", "moved.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&m), ["192.0.2.8"]);
}
