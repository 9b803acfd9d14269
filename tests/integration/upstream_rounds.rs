//! Retry rounds over the upstream servers: a query is sent to each server in turn, healthiest
//! first, and again (same ID) in later rounds, while every exchange already open may still
//! answer; the whole is bounded by `[upstream] timeout`. A lost datagram to the first server is
//! sent again while a black-holed second one is tried, a late answer from the first server is
//! taken, a server is sent one query at most three times (RFC 9520 §3.1), and once every server
//! is down a query fails after one per-server timeout, not the whole budget.
//!
//! Everything here listens on 127.0.0.210 (dnsward, its admin, the fake upstreams) and asks from
//! 127.0.0.211. Timing bounds are generous (a loaded two-core machine): they tell "answered in
//! a round or two" from "waited out the 3 s budget".

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::*;

const HOST: &str = "127.0.0.210";
const CLIENT: &str = "127.0.0.211";

const GROUP: &str = r#"
[[groups]]
name = "rounds"
cidrs = ["127.0.0.211/32"]
allow = ["*.example"]
"#;

/// The overall budget every test here configures.
const BUDGET: Duration = Duration::from_secs(3);
/// Well under the budget: an answer this fast did not wait it out.
const WELL_UNDER: Duration = Duration::from_millis(2_000);

fn host() -> IpAddr {
    HOST.parse().unwrap()
}

/// An `[upstream]` section with these servers, each given `per_server`, and a 3 s budget.
fn upstream_section(servers: &[SocketAddr], per_server: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("{{ address = \"{a}\", timeout = \"{per_server}\" }}"))
        .collect();
    format!(
        "servers = [{}]\ntimeout = \"{}s\"\nfailure_ttl = \"0s\"",
        list.join(", "),
        BUDGET.as_secs()
    )
}

/// A fake upstream on the host answering every name with 192.0.2.`last`, with `fault`.
async fn fake(last: u8, fault: Fault) -> RunningUpstream {
    FakeUpstream::new()
        .answering_everything([192, 0, 2, last])
        .with_fault(fault)
        .start_on(host())
        .await
}

/// dnsward on the host, forwarding to `servers` in this order, 300 ms each, 3 s in all.
async fn serve(servers: &[SocketAddr]) -> TestServer {
    TestServer::start_on(HOST, &upstream_section(servers, "300ms"), GROUP, &[]).await
}

/// One query from the client: the answer and how long it took.
async fn ask(server: SocketAddr, qname: &str) -> (Message, Duration) {
    let started = Instant::now();
    let packet = query_packet(qname, RecordType::A, true);
    let raw = udp_raw(server, CLIENT.parse().unwrap(), &packet)
        .await
        .unwrap_or_else(|| panic!("{qname}: no answer"));
    (Message::from_vec(&raw).expect("decodes"), started.elapsed())
}

/// The first server loses the query's datagram and the second never answers: the first is sent
/// the query again in the next round and answers, well inside the budget. Before rounds the
/// first server was given up after its timeout and the black hole had the rest of the budget:
/// SERVFAIL after 3 s.
#[tokio::test]
async fn a_datagram_lost_by_the_first_server_is_sent_again_while_the_second_is_tried() {
    let lossy = fake(10, Fault::LoseFirstUdp).await;
    let hole = fake(66, Fault::BlackHole).await;
    let s = serve(&[lossy.addr, hole.addr]).await;
    let (m, elapsed) = ask(s.udp, "lost-once.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), ["192.0.2.10"]);
    assert!(elapsed < WELL_UNDER, "answered after {elapsed:?}");
    assert_eq!(
        lossy.udp_queries.load(Ordering::SeqCst),
        2,
        "the query, lost, and its retransmission"
    );
    assert_eq!(
        lossy.asked().len(),
        1,
        "one exchange: the same ID sent twice"
    );
    assert_eq!(
        hole.asked().len(),
        1,
        "the second server was tried meanwhile"
    );
    let metrics = metrics_text(&s).await;
    let label = format!("udp://{}", lossy.addr);
    assert_eq!(
        crate::common::metric_sum(
            &metrics,
            "dnsward_upstream_retransmits_total",
            &[("upstream", &label)]
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// The first server answers after twice its timeout, the second never: the first server's
/// exchange stays open while the second is tried, and its late answer is taken. Before, the
/// first exchange was dropped at its timeout: SERVFAIL after the whole budget.
#[tokio::test]
async fn a_late_answer_from_a_server_already_passed_over_is_taken() {
    let slow = FakeUpstream::new()
        .answering_everything([192, 0, 2, 11])
        .with_delay(Duration::from_millis(600))
        .start_on(host())
        .await;
    let hole = fake(66, Fault::BlackHole).await;
    let s = serve(&[slow.addr, hole.addr]).await;
    let (m, elapsed) = ask(s.udp, "late.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), ["192.0.2.11"]);
    assert!(elapsed < WELL_UNDER, "answered after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(500),
        "the slow server's answer: {elapsed:?}"
    );
    assert_eq!(
        hole.asked().len(),
        1,
        "the second server was tried meanwhile"
    );
}

/// A sole server keeps the whole budget (its late answer still counts), but is sent the query
/// at most three times (the query and two retransmissions, backing off), not once every
/// timeout: ten datagrams for a 300 ms timeout and a 3 s budget before.
#[tokio::test]
async fn a_sole_black_hole_is_sent_a_query_three_times_and_waited_on_for_the_whole_budget() {
    let hole = fake(66, Fault::BlackHole).await;
    let s = serve(&[hole.addr]).await;
    let (m, elapsed) = ask(s.udp, "sole-hole.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    assert!(
        elapsed >= BUDGET - Duration::from_millis(300),
        "a sole server has the whole budget: {elapsed:?}"
    );
    assert_eq!(hole.asked().len(), 1, "one exchange");
    assert_eq!(
        hole.udp_queries.load(Ordering::SeqCst),
        3,
        "the query and two retransmissions"
    );
}

/// Every server black-holed: the first queries wait out the budget and mark the servers down;
/// from then on a query probes them all at once and fails after one per-server timeout, well
/// under the 3 s budget. Each server is still probed by every query, so one that comes back is
/// heard at once.
#[tokio::test]
async fn with_every_server_down_a_query_fails_after_one_server_timeout_not_the_budget() {
    let a = fake(66, Fault::BlackHole).await;
    let b = fake(66, Fault::BlackHole).await;
    let s = serve(&[a.addr, b.addr]).await;
    // Three failed exchanges in a row mark a server down: three names at once.
    let first: Vec<_> = (0..3)
        .map(|i| {
            let server = s.udp;
            tokio::spawn(async move { ask(server, &format!("first-{i}.example")).await })
        })
        .collect();
    for t in first {
        let (m, elapsed) = t.await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(
            elapsed >= BUDGET - Duration::from_millis(300),
            "not yet known down: the whole budget ({elapsed:?})"
        );
    }
    let metrics = metrics_text(&s).await;
    for up in [&a, &b] {
        let label = format!("udp://{}", up.addr);
        assert_eq!(
            crate::common::metric_sum(&metrics, "dnsward_upstream_down", &[("upstream", &label)]),
            Some(1.0),
            "{label} is shown down: {metrics}"
        );
    }
    let (asked_a, asked_b) = (a.asked().len(), b.asked().len());
    let (m, elapsed) = ask(s.udp, "later.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(elapsed < WELL_UNDER, "failed after {elapsed:?}");
    assert_eq!(
        (a.asked().len(), b.asked().len()),
        (asked_a + 1, asked_b + 1),
        "each server is still probed"
    );
}

/// A server that answers FORMERR has failed outright for that question: the next server is
/// tried at once, and later rounds do not ask it again.
#[tokio::test]
async fn a_server_that_failed_outright_is_not_asked_again_in_later_rounds() {
    let formerr = fake(66, Fault::FormErr).await;
    let lossy = fake(13, Fault::LoseFirstUdp).await;
    let s = serve(&[formerr.addr, lossy.addr]).await;
    let (m, elapsed) = ask(s.udp, "formerr-then-lost.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), ["192.0.2.13"]);
    assert!(elapsed < WELL_UNDER, "answered after {elapsed:?}");
    assert_eq!(
        formerr.udp_queries.load(Ordering::SeqCst),
        2,
        "asked with EDNS, then without (RFC 6891 §7): its second FORMERR ended its part"
    );
    assert_eq!(
        lossy.udp_queries.load(Ordering::SeqCst),
        2,
        "lost, then sent again"
    );
}

/// Servers that answer REFUSED did answer: the client's SERVFAIL says so in its EDE 22 (RFC
/// 8914 §4.23: the authorities "potentially refused to reply"), and the remembered failure
/// says so too. Before, both said "no upstream answered", sending the operator to look for a
/// network fault. A server that was silent still reads "no upstream answered".
#[tokio::test]
async fn servers_that_refuse_are_named_in_the_servfail_not_called_silent() {
    let a = fake(68, Fault::Refused).await;
    let b = fake(69, Fault::Refused).await;
    let mut s = TestServer::start_on(
        HOST,
        &upstream_section(&[a.addr, b.addr], "300ms")
            .replace("failure_ttl = \"0s\"", "failure_ttl = \"5s\""),
        GROUP,
        &[],
    )
    .await;
    let (m, elapsed) = ask(s.udp, "refused.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    assert!(elapsed < WELL_UNDER, "failed after {elapsed:?}");
    assert_eq!(
        ede_of(&m),
        Some((22, "upstream answered REFUSED".to_string())),
        "{m:?}"
    );
    let asked = || {
        (
            a.udp_queries.load(Ordering::SeqCst),
            b.udp_queries.load(Ordering::SeqCst),
        )
    };
    assert_eq!(asked(), (1, 1));
    // Remembered (RFC 9520): the next ask is answered from the failure cache, EDE 13, and
    // the event's reason names the refusal.
    let (m, _) = ask(s.udp, "refused.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede_of(&m).map(|e| e.0), Some(13), "{m:?}");
    assert_eq!(asked(), (1, 1));
    let reasons: Vec<String> = s
        .stop_and_read_events()
        .await
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    for want in [
        "no upstream would answer: REFUSED (2 tried)",
        "failure cached: upstream answered REFUSED",
    ] {
        assert!(reasons.iter().any(|r| r == want), "{want:?} in {reasons:?}");
    }

    // One refuses, the other never answers: not every server answered, so "no upstream
    // answered" stands, and the reason counts the refusal.
    let hole = fake(70, Fault::BlackHole).await;
    let s = serve(&[a.addr, hole.addr]).await;
    let (m, _) = ask(s.udp, "refused-or-silent.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    assert_eq!(
        ede_of(&m),
        Some((22, "no upstream answered".to_string())),
        "{m:?}"
    );
}

/// A server that does not know EDNS answers FORMERR without an OPT record: it is asked again
/// without one (RFC 6891 §7), as from Unbound, and its answer is the client's; for a while
/// after, it is asked without EDNS first. Before, the
/// name was SERVFAIL (and the failure remembered) for every client.
#[tokio::test]
async fn a_server_that_rejects_edns_is_asked_again_without_it() {
    let old = fake(67, Fault::FormErrOnEdns).await;
    let s = serve(&[old.addr]).await;
    let (m, _) = ask(s.udp, "old-server.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), ["192.0.2.67"]);
    assert!(
        m.edns.is_some(),
        "the client's answer keeps its own OPT record"
    );
    assert_eq!(
        old.udp_queries.load(Ordering::SeqCst),
        2,
        "{:?}",
        old.asked()
    );
    // Remembered: the next question goes without EDNS first, one exchange.
    let (m, _) = ask(s.udp, "old-server-again.example").await;
    assert_eq!(a_records(&m), ["192.0.2.67"]);
    assert_eq!(
        old.udp_queries.load(Ordering::SeqCst),
        3,
        "{:?}",
        old.asked()
    );
}

/// The first server answers SERVFAIL (its validator or its path to the authority is broken),
/// the second resolves: the client gets the second's answer, as Unbound asks the next
/// forwarder. Before, the first server's SERVFAIL was the answer. With the second server a
/// black hole instead, the SERVFAIL comes after that server's own timeout, not the budget.
#[tokio::test]
async fn a_servfail_from_one_server_is_asked_of_the_next() {
    let broken = fake(12, Fault::ServFail).await;
    let good = FakeUpstream::new()
        .answering_everything([192, 0, 2, 13])
        .start_on(host())
        .await;
    let s = serve(&[broken.addr, good.addr]).await;
    let (m, elapsed) = ask(s.udp, "validated-elsewhere.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), ["192.0.2.13"]);
    assert!(elapsed < WELL_UNDER, "answered after {elapsed:?}");
    assert_eq!(broken.asked().len(), 1);
    assert_eq!(good.asked().len(), 1);
    let metrics = metrics_text(&s).await;
    let label = format!("udp://{}", broken.addr);
    assert_eq!(
        crate::common::metric_sum(
            &metrics,
            "dnsward_upstream_errors_total",
            &[("upstream", &label), ("kind", "servfail")]
        ),
        Some(1.0),
        "{metrics}"
    );

    // SERVFAIL and a black hole: the SERVFAIL, once the other had its timeout.
    let broken = fake(12, Fault::ServFail).await;
    let hole = fake(66, Fault::BlackHole).await;
    let s = serve(&[broken.addr, hole.addr]).await;
    let (m, elapsed) = ask(s.udp, "broken-everywhere.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    assert!(elapsed < WELL_UNDER, "answered after {elapsed:?}");
    assert_eq!(hole.asked().len(), 1, "the other server was asked once");
}

/// A server that sends each answer twice (a duplicated datagram, or a retransmission answered
/// twice): the first copy is taken and the second, late, is counted as `kind="late"`. Before,
/// it was counted as `kind="mismatch"`, the count that tells of spoofed answers.
#[tokio::test]
async fn a_second_copy_of_an_answer_is_late_not_a_mismatch() {
    let twice = fake(10, Fault::AnswerTwice).await;
    let s = serve(&[twice.addr]).await;
    let (m, _) = ask(s.udp, "twice.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(a_records(&m), ["192.0.2.10"]);
    let label = format!("udp://{}", twice.addr);
    let kind = |metrics: &str, kind: &str| {
        crate::common::metric_sum(
            metrics,
            "dnsward_upstream_errors_total",
            &[("upstream", &label), ("kind", kind)],
        )
        .unwrap_or(0.0)
    };
    let started = Instant::now();
    let mut metrics = metrics_text(&s).await;
    while kind(&metrics, "late") < 1.0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = metrics_text(&s).await;
    }
    assert_eq!(kind(&metrics, "late"), 1.0, "{metrics}");
    assert_eq!(kind(&metrics, "mismatch"), 0.0, "{metrics}");
}
