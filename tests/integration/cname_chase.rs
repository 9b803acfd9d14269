//! A local zone's CNAME out of its zone is chased like an ordinary miss for its target: the
//! failures remembered (RFC 9520) are consulted first, and the exchange for the target is
//! shared with every identical question in flight. Before, the chase fetched its target
//! directly: a local alias to a dead name waited out the upstream budget on every query, and
//! each of a burst of queries for the alias cost an upstream exchange of its own.
//!
//! Everything here listens on 127.0.0.212 (dnsward, its admin, the fake upstream) and asks from
//! 127.0.0.213.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::*;

const HOST: &str = "127.0.0.212";
const CLIENT: &str = "127.0.0.213";

const GROUP: &str = r#"
[[groups]]
name = "chasers"
cidrs = ["127.0.0.213/32"]
allow = ["*.alias.internal", "*.example"]
"#;

const ZONE: &str = r#"$ORIGIN alias.internal.
$TTL 300
@ IN SOA ns.alias.internal. host.alias.internal. 1 3600 600 604800 60
dead IN CNAME dead.example.
slow IN CNAME slow.example.
"#;

/// Well under the 300 ms the upstream is given: an answer this fast asked no upstream.
const AT_ONCE: Duration = Duration::from_millis(250);

/// One query from the client: the answer, its bytes, how long it took.
async fn ask(server: SocketAddr, qname: &str) -> (Message, Vec<u8>, Duration) {
    let started = Instant::now();
    let packet = query_packet(qname, RecordType::A, true);
    let raw = udp_raw(server, CLIENT.parse().unwrap(), &packet)
        .await
        .unwrap_or_else(|| panic!("{qname}: no answer"));
    let elapsed = started.elapsed();
    (Message::from_vec(&raw).expect("decodes"), raw, elapsed)
}

/// Whether the answer carries Extended DNS Error 13 (Cached Error).
fn says_cached_error(raw: &[u8]) -> bool {
    says_ede(raw, 13)
}

/// Whether the answer carries Extended DNS Error `code` (option 15, its info code first).
fn says_ede(raw: &[u8], code: u8) -> bool {
    raw.windows(6)
        .any(|w| w[0..2] == [0, 15] && w[4..6] == [0, code])
}

fn times_asked(up: &RunningUpstream, qname: &str) -> usize {
    up.asked()
        .iter()
        .filter(|n| n.trim_end_matches('.').eq_ignore_ascii_case(qname))
        .count()
}

async fn start(up: &RunningUpstream) -> TestServer {
    let section = format!(
        "servers = [{{ address = \"{}\", timeout = \"300ms\" }}]\ntimeout = \"300ms\"\nfailure_ttl = \"5s\"",
        up.addr
    );
    TestServer::start_on(HOST, &section, GROUP, &[("alias.internal.zone", ZONE)]).await
}

/// The alias's target does not resolve: the first query waits for the upstream in vain, and
/// the alias's later queries (and the target's own) are answered SERVFAIL at once, EDE 13,
/// with no other upstream exchange, while the failure is remembered.
#[tokio::test]
async fn a_local_alias_to_a_failing_target_does_not_ask_upstream_on_every_query() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 66])
        .with_fault(Fault::BlackHole)
        .start_on(HOST.parse().unwrap())
        .await;
    let s = start(&up).await;
    let (m, raw, first) = ask(s.udp, "dead.alias.internal").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    assert!(first >= AT_ONCE, "the first query waited: {first:?}");
    // Why, as for an ordinary miss no upstream answered: EDE 22, No Reachable Authority.
    assert!(says_ede(&raw, 22), "EDE 22 on the first failure: {m:?}");
    assert_eq!(times_asked(&up, "dead.example"), 1);
    for _ in 0..3 {
        let (m, raw, elapsed) = ask(s.udp, "dead.alias.internal").await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
        assert!(says_cached_error(&raw), "EDE 13, Cached Error: {m:?}");
        assert!(elapsed < AT_ONCE, "answered at once: {elapsed:?}");
    }
    let (m, raw, _) = ask(s.udp, "dead.example").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(says_cached_error(&raw), "the target's own question too");
    assert_eq!(
        times_asked(&up, "dead.example"),
        1,
        "one exchange for the target while its failure is remembered"
    );
}

/// A burst of queries for the alias (and the target's own) while the target's answer is on
/// its way: one upstream exchange, every query answered with the chain.
#[tokio::test]
async fn a_burst_of_queries_for_a_local_alias_shares_one_exchange_for_the_target() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 12])
        .with_delay(Duration::from_millis(200))
        .start_on(HOST.parse().unwrap())
        .await;
    let s = start(&up).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let server = s.udp;
        let qname = if i == 5 {
            "slow.example"
        } else {
            "slow.alias.internal"
        };
        tasks.push(tokio::spawn(async move { ask(server, qname).await }));
    }
    for t in tasks {
        let (m, _, _) = t.await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert_eq!(a_records(&m), ["192.0.2.12"]);
    }
    assert_eq!(
        times_asked(&up, "slow.example"),
        1,
        "one upstream exchange for the target"
    );
}

/// With RD clear (RFC 1034 §4.3.1) a local alias's chain stops where the local data does, as
/// from Unbound: the target is neither forwarded nor read from the cache every group shares
/// (whose TTL would tell when another agent asked for it). The same query with RD set is
/// chased as ever.
#[tokio::test]
async fn without_recursion_desired_a_local_alias_is_not_chased_out_of_the_local_zones() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 13])
        .start_on(HOST.parse().unwrap())
        .await;
    let s = start(&up).await;
    let norec = |qname: &str| {
        let mut m = Message::from_vec(&query_packet(qname, RecordType::A, true)).unwrap();
        m.metadata.recursion_desired = false;
        m.to_vec().unwrap()
    };
    let client = CLIENT.parse().unwrap();
    // Never asked: nothing is forwarded for it.
    let raw = udp_raw(s.udp, client, &norec("dead.alias.internal"))
        .await
        .expect("an answer");
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(m.answers.len(), 1, "the CNAME alone: {m:?}");
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    assert!(m.metadata.authoritative, "all of it is local data");
    assert_eq!(times_asked(&up, "dead.example"), 0, "{:?}", up.asked());
    // Cached by a query with RD set: still not shown without it.
    let (m, _, _) = ask(s.udp, "slow.alias.internal").await;
    assert_eq!(a_records(&m), ["192.0.2.13"]);
    let raw = udp_raw(s.udp, client, &norec("slow.alias.internal"))
        .await
        .expect("an answer");
    let m = Message::from_vec(&raw).unwrap();
    assert!(a_records(&m).is_empty(), "the cached target: {m:?}");
    assert_eq!(m.answers.len(), 1, "{m:?}");
    assert_eq!(times_asked(&up, "slow.example"), 1);
}

/// A forwarded answer whose chain the upstream left open (an authoritative server or a
/// delegation answers a CNAME out of its zones and stops there) is completed as a recursive
/// resolver completes it: the target through the cache and the upstreams, under the same rules
/// (a target the group may not resolve is blocked). Before, the client got the bare CNAME, which
/// a stub does not follow. The open part is not cached on its own, so a second query gets the
/// whole chain again.
#[tokio::test]
async fn an_open_chain_from_upstream_is_completed() {
    let up = FakeUpstream::new()
        .with_cname_links("open.example", &[("open.example", "target.example")])
        .with_a("target.example", [192, 0, 2, 14], 300)
        .with_cname_links("leaves.example", &[("leaves.example", "elsewhere.test")])
        .with_a("elsewhere.test", [192, 0, 2, 15], 300)
        .start_on(HOST.parse().unwrap())
        .await;
    let s = start(&up).await;
    for round in 0..2 {
        let (m, _, _) = ask(s.udp, "open.example").await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert_eq!(a_records(&m), ["192.0.2.14"], "round {round}: {m:?}");
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    }
    assert_eq!(
        times_asked(&up, "target.example"),
        1,
        "the target is cached"
    );
    // A target outside what the group may resolve is the group's block, not its address.
    let (m, _, _) = ask(s.udp, "leaves.example").await;
    assert!(a_records(&m).is_empty(), "{m:?}");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
    assert_eq!(times_asked(&up, "elsewhere.test"), 0);
}
