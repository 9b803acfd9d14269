//! Upstream faults (issue 9): an upstream that is down, black-holes queries, is slow, answers
//! garbage, the wrong ID or question, truncates forever (or over TCP too), resets TCP
//! mid-answer, or rejects every query with FORMERR or NOTIMP. Whatever it
//! does, every client gets an answer within the configured budget (1 s here), a healthy second
//! upstream takes over, and nothing hangs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::*;

const GROUP: &str = r#"
[[groups]]
name = "faults"
cidrs = ["127.0.0.60/32"]
allow = ["*.example"]
"#;

/// The overall upstream budget the harness configures, plus room for a loaded test machine.
const BUDGET: Duration = Duration::from_millis(1_000);
const SLACK: Duration = Duration::from_millis(1_500);

/// Every way an upstream can fail, with a name for messages.
async fn faulty_upstreams() -> Vec<(&'static str, Option<RunningUpstream>, SocketAddr)> {
    let mut out = Vec::new();
    // Down: a port nobody listens on (bound, then closed).
    let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    out.push(("down", None, gone_addr));
    let slow = FakeUpstream::new()
        .answering_everything([192, 0, 2, 66])
        .with_delay(3 * Duration::from_millis(500))
        .start()
        .await;
    let addr = slow.addr;
    // Past the whole budget (a sole server has all of it, its query sent again meanwhile).
    out.push(("slow (3x timeout, beyond the budget)", Some(slow), addr));
    for (what, fault) in [
        ("black hole", Fault::BlackHole),
        ("garbage", Fault::Garbage),
        ("wrong id", Fault::WrongId),
        ("wrong question", Fault::WrongQuestion),
        ("truncated forever", Fault::TruncatedForever),
        ("tcp reset mid-answer", Fault::TcpResetMidAnswer),
        ("truncated over tcp too", Fault::TruncatedOverTcp),
        ("formerr for every query", Fault::FormErr),
        ("notimp for every query", Fault::NotImp),
        ("an rcode no stub knows, records and all", Fault::OddRcode),
    ] {
        let up = FakeUpstream::new()
            .answering_everything([192, 0, 2, 66])
            .with_fault(fault)
            .start()
            .await;
        let addr = up.addr;
        out.push((what, Some(up), addr));
    }
    out
}

/// Ask `count` different names at once from the group's client; each answer and its time.
async fn ask_many(
    server: SocketAddr,
    prefix: &str,
    count: usize,
) -> Vec<(ResponseCode, Vec<String>, Duration)> {
    let mut tasks = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i}.example");
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let packet = query_packet(&name, RecordType::A, true);
            let raw = udp_raw(server, "127.0.0.60".parse().unwrap(), &packet).await;
            let elapsed = started.elapsed();
            let m = raw.map(|r| hickory_proto::op::Message::from_vec(&r).expect("decodes"));
            match m {
                Some(m) => (m.metadata.response_code, a_records(&m), elapsed),
                None => (ResponseCode::Unknown(999), Vec::new(), elapsed),
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_faulty_sole_upstream_gives_servfail_within_the_budget() {
    for (what, _up, addr) in faulty_upstreams().await {
        let s = TestServer::start_upstreams(&[addr], GROUP, None, "127.0.0.1:0", "").await;
        for (rcode, ips, elapsed) in ask_many(s.udp, "sole", 10).await {
            assert_eq!(
                rcode,
                ResponseCode::ServFail,
                "{what}: SERVFAIL, got {rcode:?} {ips:?}"
            );
            assert!(
                elapsed < BUDGET + SLACK,
                "{what}: answered after {elapsed:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_faulty_first_upstream_fails_over_to_the_healthy_second() {
    let good = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .start()
        .await;
    for (what, _up, addr) in faulty_upstreams().await {
        let s =
            TestServer::start_upstreams(&[addr, good.addr], GROUP, None, "127.0.0.1:0", "").await;
        for (rcode, ips, elapsed) in ask_many(s.udp, "failover", 10).await {
            assert_eq!(
                rcode,
                ResponseCode::NoError,
                "{what}: answered by the second upstream"
            );
            assert_eq!(
                ips,
                ["192.0.2.1"],
                "{what}: only the healthy upstream's answer"
            );
            assert!(
                elapsed < BUDGET + SLACK,
                "{what}: answered after {elapsed:?}"
            );
        }
    }
}

#[tokio::test]
async fn spoofed_upstream_answers_are_dropped_and_counted() {
    let good = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .start()
        .await;
    for fault in [Fault::WrongId, Fault::WrongQuestion] {
        let bad = FakeUpstream::new()
            .answering_everything([192, 0, 2, 66])
            .with_fault(fault)
            .start()
            .await;
        let s = TestServer::start_upstreams(&[bad.addr, good.addr], GROUP, None, "127.0.0.1:0", "")
            .await;
        let m = udp_query(s.udp, "127.0.0.60", "spoof.example", RecordType::A).await;
        assert_eq!(
            a_records(&m),
            ["192.0.2.1"],
            "{fault:?}: the spoofed answer is not used"
        );
        let text = metrics_text(&s).await;
        let label = format!("udp://{}", bad.addr);
        let mismatched = crate::common::metric_sum(
            &text,
            "dnsward_upstream_errors_total",
            &[("upstream", &label), ("kind", "mismatch")],
        )
        .unwrap_or(0.0);
        assert!(
            mismatched >= 1.0,
            "{fault:?}: the mismatch is counted ({mismatched})"
        );
    }
}

/// A sole upstream has the whole budget: a lost datagram is sent again after the server's
/// timeout (same ID, counted in `dnsward_upstream_retransmits_total`), and a slow server whose
/// answer comes after its timeout but inside the budget is still heard. Both were SERVFAIL
/// after one timeout (500 ms here) with half the budget (1 s) unspent.
#[tokio::test]
async fn a_sole_upstream_gets_the_whole_budget_and_a_lost_query_is_sent_again() {
    let lossy = FakeUpstream::new()
        .answering_everything([192, 0, 2, 67])
        .with_fault(Fault::LoseFirstUdp)
        .start()
        .await;
    let s = TestServer::start_upstreams(&[lossy.addr], GROUP, None, "127.0.0.1:0", "").await;
    let m = udp_query(s.udp, "127.0.0.60", "lost-once.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), ["192.0.2.67"]);
    assert_eq!(
        lossy.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the query, lost, and its retransmission"
    );
    assert_eq!(
        lossy.asked().len(),
        1,
        "one exchange: the same ID sent twice"
    );
    let metrics = metrics_text(&s).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dnsward_upstream_retransmits_total{")
                && l.contains(&lossy.addr.to_string())
                && l.ends_with(" 1")),
        "{metrics}"
    );

    let slow = FakeUpstream::new()
        .answering_everything([192, 0, 2, 68])
        .with_delay(Duration::from_millis(700))
        .start()
        .await;
    let s = TestServer::start_upstreams(&[slow.addr], GROUP, None, "127.0.0.1:0", "").await;
    let started = Instant::now();
    let m = udp_query(s.udp, "127.0.0.60", "slow.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), ["192.0.2.68"]);
    assert!(started.elapsed() >= Duration::from_millis(600));
}
