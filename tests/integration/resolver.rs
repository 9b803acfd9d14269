//! Resolution and policy behaviour through real sockets.

use std::time::Duration;

use dnsward::clock::ManualClock;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::*;

const AGENTS: &str = r#"
[[groups]]
name = "agents"
cidrs = ["127.0.0.10/32", "::1/128"]
allow = ["www.example", "*.corp.internal", "*.allowed.example", "alias.example", "bad-alias.example", "big.example", "gone.example", "nodata.example", "v6.example"]
deny = ["secrets.corp.internal"]

[[groups]]
name = "builders"
cidrs = ["127.0.0.20/32"]
allow = ["git.corp.internal"]
block = "sinkhole"
sinkhole_ipv4 = "192.0.2.99"
sinkhole_ipv6 = "2001:db8::99"

[[groups]]
name = "strict"
cidrs = ["127.0.0.30/32"]
allow = ["www.example"]
block = "refused"
"#;

fn upstream() -> FakeUpstream {
    FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .with_a("a.allowed.example", [192, 0, 2, 2], 300)
        .with_a("allowed.example", [192, 0, 2, 3], 300)
        .with_cname("alias.example", "x.allowed.example", [192, 0, 2, 4])
        .with_cname(
            "bad-alias.example",
            "tracker.evil.example",
            [203, 0, 113, 9],
        )
        .with_txt("big.example", &"x".repeat(200))
        .with_txt("big.example", &"y".repeat(200))
        .with_txt("big.example", &"z".repeat(200))
        .truncating("big.example")
        .with_a("nodata.example", [192, 0, 2, 5], 300)
        .with_aaaa("v6.example", "2001:db8::1".parse().unwrap(), 300)
}

#[tokio::test]
async fn allowed_names_are_forwarded_and_others_blocked() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let m = udp_query(s.udp, "127.0.0.10", "www.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&m), ["192.0.2.1"]);
    assert!(m.metadata.recursion_available);

    let m = udp_query(s.udp, "127.0.0.10", "not-listed.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(up.queries(), 1, "blocked names never reach the upstream");
}

/// The letters' case of a question is the client's own (0x20). With `[upstream] fold_case` it
/// goes upstream in lower case, so it cannot carry data to an authority past the detector, and
/// comes back to the client as the client wrote it, over UDP and TCP. By default questions go
/// upstream as they came.
#[tokio::test]
async fn question_case_goes_upstream_folded_and_comes_back_as_asked() {
    let up = upstream().start().await;
    let s = TestServer::start_with_upstream_extra(up.addr, AGENTS, "fold_case = true").await;
    let asked = "A.aLLoWeD.ExAmPlE";
    let answer = udp_raw(
        s.udp,
        "127.0.0.10".parse().unwrap(),
        &raw_name_query(asked, 1),
    )
    .await
    .expect("an answer");
    let m = hickory_proto::op::Message::from_vec(&answer).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&m), ["192.0.2.2"]);
    assert_eq!(m.queries[0].name().to_ascii(), format!("{asked}."));
    let tcp = tcp_raw(s.tcp, "127.0.0.10", &raw_name_query("WwW.eXaMpLe", 1))
        .await
        .expect("an answer over TCP");
    let m = hickory_proto::op::Message::from_vec(&tcp).unwrap();
    assert_eq!(a_records(&m), ["192.0.2.1"]);
    assert_eq!(m.queries[0].name().to_ascii(), "WwW.eXaMpLe.");
    assert_eq!(
        up.asked(),
        ["a.allowed.example.", "www.example."],
        "the upstream saw the names in lower case"
    );
    drop(s);
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let answer = udp_raw(
        s.udp,
        "127.0.0.10".parse().unwrap(),
        &raw_name_query("B.aLLoWeD.ExAmPlE", 1),
    )
    .await
    .expect("an answer");
    let m = hickory_proto::op::Message::from_vec(&answer).unwrap();
    assert_eq!(m.queries[0].name().to_ascii(), "B.aLLoWeD.ExAmPlE.");
    assert_eq!(
        up.asked().last().map(String::as_str),
        Some("B.aLLoWeD.ExAmPlE."),
        "by default the question went as it came"
    );
}

#[tokio::test]
async fn each_block_action_answers_as_configured() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    // builders: sinkhole. A and AAAA get the sinkhole address, other types NODATA.
    let m = udp_query(s.udp, "127.0.0.20", "www.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&m), ["192.0.2.99"]);
    assert_eq!(m.answers[0].ttl, 60);
    let m = udp_query(s.udp, "127.0.0.20", "www.example", RecordType::AAAA).await;
    assert!(matches!(&m.answers[0].data, RData::AAAA(a) if a.0.to_string() == "2001:db8::99"));
    let m = udp_query(s.udp, "127.0.0.20", "www.example", RecordType::TXT).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // strict: REFUSED.
    let m = udp_query(s.udp, "127.0.0.30", "a.allowed.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // agents: deny rule carved out of an allowed wildcard.
    let m = udp_query(s.udp, "127.0.0.10", "secrets.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn wildcards_cover_subdomains_but_not_the_apex() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let m = udp_query(s.udp, "127.0.0.10", "a.allowed.example", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.2"]);
    // The apex is not covered by *.allowed.example: blocked, with NODATA rather than NXDOMAIN,
    // since names below it are allowed (RFC 8020: an NXDOMAIN would deny them too).
    let m = udp_query(s.udp, "127.0.0.10", "allowed.example", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "apex is not covered by *.allowed.example"
    );
    assert!(m.answers.is_empty());
    let m = udp_query(s.udp, "127.0.0.10", "other.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn two_groups_see_different_answers_for_the_same_name() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let agents = udp_query(s.udp, "127.0.0.10", "api.corp.internal", RecordType::A).await;
    let builders = udp_query(s.udp, "127.0.0.20", "api.corp.internal", RecordType::A).await;
    assert_eq!(a_records(&agents), ["10.0.1.10", "10.0.1.11"]);
    assert_eq!(
        a_records(&builders),
        ["192.0.2.99"],
        "builders get the sinkhole"
    );
}

#[tokio::test]
async fn unknown_clients_are_refused() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let m = udp_query(s.udp, "127.0.0.99", "www.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    assert_eq!(up.queries(), 0);
}

#[tokio::test]
async fn ipv6_sources_match_their_group() {
    let up = upstream().start().await;
    let s = TestServer::start_with(Some(up.addr), AGENTS, None, "[::1]:0").await;
    assert!(s.udp.is_ipv6());
    let m = udp_query(s.udp, "::1", "v6.example", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(matches!(&m.answers[0].data, RData::AAAA(a) if a.0.to_string() == "2001:db8::1"));
    let m = udp_query(s.udp, "::1", "not-listed.example", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn cache_hits_skip_the_upstream_and_ttls_count_down() {
    let up = upstream().start().await;
    let clock = ManualClock::new();
    let s = TestServer::start_with(Some(up.addr), AGENTS, Some(clock.clone()), "127.0.0.1:0").await;
    let first = udp_query(s.udp, "127.0.0.10", "www.example", RecordType::A).await;
    assert_eq!(first.answers[0].ttl, 300);
    clock.advance(Duration::from_secs(120));
    let second = udp_query(s.udp, "127.0.0.10", "WWW.Example", RecordType::A).await;
    assert_eq!(up.queries(), 1, "the second answer came from the cache");
    assert_eq!(second.answers[0].ttl, 180);
    assert_eq!(a_records(&second), ["192.0.2.1"]);
    assert_eq!(
        second.queries[0].name().to_ascii(),
        "WWW.Example.",
        "question case echoed"
    );
    clock.advance(Duration::from_secs(181));
    let third = udp_query(s.udp, "127.0.0.10", "www.example", RecordType::A).await;
    assert_eq!(up.queries(), 2, "expired entries are fetched again");
    assert_eq!(third.answers[0].ttl, 300);
}

#[tokio::test]
async fn negative_answers_are_cached() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    for _ in 0..3 {
        let m = udp_query(s.udp, "127.0.0.10", "gone.example", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            m.authorities.len(),
            1,
            "SOA kept for the client's own negative caching"
        );
    }
    for _ in 0..2 {
        let m = udp_query(s.udp, "127.0.0.10", "nodata.example", RecordType::TXT).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }
    assert_eq!(up.queries(), 2);
}

#[tokio::test]
async fn upstream_down_gives_servfail_within_the_timeout() {
    // A socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = TestServer::start(Some(silent.local_addr().unwrap()), AGENTS).await;
    let m = udp_query(s.udp, "127.0.0.10", "www.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // The server keeps serving other work meanwhile.
    let m = udp_query(s.udp, "127.0.0.10", "api.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn truncated_upstream_answers_are_retried_over_tcp() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let m = tcp_query(s.tcp, "127.0.0.10", "big.example", RecordType::TXT).await;
    assert_eq!(m.answers.len(), 3, "full answer fetched over TCP");
    assert_eq!(up.udp_queries.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(up.tcp_queries.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Over UDP without EDNS the 600+ byte answer does not fit 512: TC, so the client retries.
    let packet = query_packet("big.example", RecordType::TXT, false);
    let raw = udp_raw(s.udp, "127.0.0.10".parse().unwrap(), &packet)
        .await
        .unwrap();
    let m = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn cname_to_a_name_the_group_may_not_resolve_is_blocked() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let ok = udp_query(s.udp, "127.0.0.10", "alias.example", RecordType::A).await;
    assert_eq!(a_records(&ok), ["192.0.2.4"]);
    let bad = udp_query(s.udp, "127.0.0.10", "bad-alias.example", RecordType::A).await;
    assert_eq!(bad.metadata.response_code, ResponseCode::NXDomain);
    assert!(bad.answers.is_empty());
    // Also on a cache hit.
    let bad = udp_query(s.udp, "127.0.0.10", "bad-alias.example", RecordType::A).await;
    assert_eq!(bad.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(up.queries(), 2);
}

/// A forwarded CNAME chain that loops, or runs past 16 names, leads to no address: SERVFAIL, as
/// from Unbound, not NOERROR with the links so far (which a stub reads as "no address"). A
/// chain within the bound is answered whole.
#[tokio::test]
async fn a_forwarded_cname_loop_or_overlong_chain_is_servfail() {
    let long: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("c{i}.allowed.example"),
                format!("c{}.allowed.example", i + 1),
            )
        })
        .collect();
    let long: Vec<(&str, &str)> = long.iter().map(|(o, t)| (o.as_str(), t.as_str())).collect();
    let up = upstream()
        .with_cname_links(
            "loop.allowed.example",
            &[
                ("loop.allowed.example", "loop2.allowed.example"),
                ("loop2.allowed.example", "loop.allowed.example"),
            ],
        )
        .with_cname_links("c0.allowed.example", &long)
        .start()
        .await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    for qname in ["loop.allowed.example", "c0.allowed.example"] {
        let m = udp_query(s.udp, "127.0.0.10", qname, RecordType::A).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::ServFail,
            "{qname}: {m:?}"
        );
        assert!(m.answers.is_empty(), "{qname}: {m:?}");
    }
    let ok = udp_query(s.udp, "127.0.0.10", "alias.example", RecordType::A).await;
    assert_eq!(a_records(&ok), ["192.0.2.4"]);
}

/// A forwarded chain the upstream sent out of order (the address first, the question's CNAME
/// last) reaches the client in order from the question name, fresh and from the cache: glibc's
/// `getaddrinfo` walks the section once from the question name and, given the upstream's
/// order, found "no address associated with hostname". One left open out of order is still
/// seen as open and completed.
#[tokio::test]
async fn a_forwarded_chain_out_of_order_is_served_in_order() {
    let up = upstream()
        .with_reversed_cname_chain(
            "rev.allowed.example",
            &[
                ("rev.allowed.example", "t1.allowed.example"),
                ("t1.allowed.example", "t2.allowed.example"),
            ],
            Some([1, 2, 3, 22]),
        )
        .with_reversed_cname_chain(
            "revopen.allowed.example",
            &[
                ("revopen.allowed.example", "o1.allowed.example"),
                ("o1.allowed.example", "o2.allowed.example"),
            ],
            None,
        )
        .with_a("o2.allowed.example", [1, 2, 3, 23], 300)
        .start()
        .await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let sequence = |m: &hickory_proto::op::Message| -> Vec<String> {
        m.answers
            .iter()
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect()
    };
    for round in ["fresh", "cached"] {
        let m = udp_query(s.udp, "127.0.0.10", "rev.allowed.example", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert_eq!(
            sequence(&m),
            [
                "rev.allowed.example. CNAME",
                "t1.allowed.example. CNAME",
                "t2.allowed.example. A",
            ],
            "{round}"
        );
        assert_eq!(a_records(&m), ["1.2.3.22"], "{round}");
        assert_eq!(up.queries(), 1, "{round}: the second answer is the cache's");
    }
    for round in ["fresh", "again"] {
        let m = udp_query(
            s.udp,
            "127.0.0.10",
            "revopen.allowed.example",
            RecordType::A,
        )
        .await;
        assert_eq!(
            sequence(&m),
            [
                "revopen.allowed.example. CNAME",
                "o1.allowed.example. CNAME",
                "o2.allowed.example. A",
            ],
            "{round}: {m:?}"
        );
        assert_eq!(a_records(&m), ["1.2.3.23"], "{round}");
    }
}

/// A local zone's CNAME loop (two names, a name to itself, a wildcard whose target it
/// synthesises) is SERVFAIL, as a forwarded loop is, not NOERROR with the looping links; the
/// zone's other names are served, and a chain that ends is answered whole (over UDP and TCP).
#[tokio::test]
async fn a_local_cname_loop_is_servfail_and_the_rest_of_the_zone_is_served() {
    let zone = "$ORIGIN loops.internal.\n$TTL 300\n@ IN SOA ns hm 1 2 3 4 60\n\
                loopa IN CNAME loopb\nloopb IN CNAME loopa\nself IN CNAME self\n\
                *.wild IN CNAME y.wild\nfine IN CNAME host\nhost IN A 10.7.7.7\n";
    let group = r#"
[[groups]]
name = "loops"
cidrs = ["127.0.0.64/32"]
allow = ["*.loops.internal"]
"#;
    let s = TestServer::start_with_zones(None, group, &[("loops.internal.zone", zone)]).await;
    for qname in [
        "loopa.loops.internal",
        "loopb.loops.internal",
        "self.loops.internal",
        "x.wild.loops.internal",
    ] {
        let m = udp_query(s.udp, "127.0.0.64", qname, RecordType::A).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::ServFail,
            "{qname}: {m:?}"
        );
        assert!(m.answers.is_empty(), "{qname}: {m:?}");
        let m = tcp_query(s.udp, "127.0.0.64", qname, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{qname}");
    }
    let ok = udp_query(s.udp, "127.0.0.64", "fine.loops.internal", RecordType::A).await;
    assert_eq!(a_records(&ok), ["10.7.7.7"]);
    // The CNAME itself, asked for, is data like any other.
    let m = udp_query(
        s.udp,
        "127.0.0.64",
        "self.loops.internal",
        RecordType::CNAME,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test]
async fn forwarded_answers_with_internal_addresses_are_blocked_and_logged() {
    let up = FakeUpstream::new()
        .with_a("meta.rebind.example", [169, 254, 169, 254], 300)
        .with_a("lan.rebind.example", [10, 0, 0, 5], 300)
        .with_a("loop.rebind.example", [127, 0, 0, 1], 300)
        .with_aaaa("ula.rebind.example", "fd00::5".parse().unwrap(), 300)
        .with_a("public.rebind.example", [192, 0, 2, 7], 300)
        .with_a("lan.intranet.example", [10, 0, 0, 6], 300)
        .start()
        .await;
    let groups = r#"
[[groups]]
name = "rb"
cidrs = ["127.0.0.15/32"]
mode = "denylist"
private_answers_allowed = ["intranet.example"]

[[groups]]
name = "rb-off"
cidrs = ["127.0.0.16/32"]
mode = "denylist"
block_private_answers = false
"#;
    let mut s = TestServer::start(Some(up.addr), groups).await;
    for (name, rtype) in [
        ("meta.rebind.example", RecordType::A),
        ("lan.rebind.example", RecordType::A),
        ("loop.rebind.example", RecordType::A),
        ("ula.rebind.example", RecordType::AAAA),
    ] {
        for round in ["fresh", "cached"] {
            let m = udp_query(s.udp, "127.0.0.15", name, rtype).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NXDomain,
                "{name} ({round}) is blocked"
            );
            assert!(m.answers.is_empty(), "{name} ({round})");
        }
    }
    let ok = udp_query(s.udp, "127.0.0.15", "public.rebind.example", RecordType::A).await;
    assert_eq!(a_records(&ok), ["192.0.2.7"]);
    let exempt = udp_query(s.udp, "127.0.0.15", "lan.intranet.example", RecordType::A).await;
    assert_eq!(a_records(&exempt), ["10.0.0.6"], "private_answers_allowed");
    let off = udp_query(s.udp, "127.0.0.16", "meta.rebind.example", RecordType::A).await;
    assert_eq!(
        a_records(&off),
        ["169.254.169.254"],
        "switched off per group"
    );
    // Local zones are the operator's own data: their private addresses pass.
    let zone = udp_query(s.udp, "127.0.0.15", "api.corp.internal", RecordType::A).await;
    assert_eq!(a_records(&zone), ["10.0.1.10", "10.0.1.11"]);
    let events = s.stop_and_read_events().await;
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "query" && e["qname"] == "meta.rebind.example")
        .filter(|e| e["verdict"] == "block")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 2, "{events:#?}");
    assert!(
        reasons.iter().all(|r| r.contains("169.254.169.254")),
        "the event names the address: {reasons:?}"
    );
}

#[tokio::test]
async fn local_zones_answer_authoritatively() {
    let s = TestServer::start(None, AGENTS).await;
    let m = udp_query(s.udp, "127.0.0.10", "api.corp.internal", RecordType::A).await;
    assert!(m.metadata.authoritative);
    assert_eq!(a_records(&m), ["10.0.1.10", "10.0.1.11"]);
    let m = udp_query(
        s.udp,
        "127.0.0.10",
        "nothing-here.corp.internal",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    // Policy applies to local zones too.
    let m = udp_query(s.udp, "127.0.0.10", "secrets.corp.internal", RecordType::A).await;
    assert!(!m.metadata.authoritative);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

/// An allowlist that lists neither `localhost` nor the private reverse zones still gets their
/// built-in answers (as from Unbound), recorded as allowed, not as a policy block for each
/// routine lookup; a deny rule still blocks them, and nothing goes upstream either way.
#[tokio::test]
async fn allowlist_groups_get_the_built_in_zones_unless_a_deny_rule_covers_them() {
    let group = r#"
[[groups]]
name = "strict"
cidrs = ["127.0.0.64/32"]
allow = ["api.corp.internal"]

[[groups]]
name = "no-reverse"
cidrs = ["127.0.0.65/32"]
allow = ["api.corp.internal"]
deny = ["10.in-addr.arpa", "localhost"]
"#;
    let up = upstream().start().await;
    let mut s = TestServer::start(Some(up.addr), group).await;
    let m = udp_query(s.udp, "127.0.0.64", "localhost", RecordType::A).await;
    assert_eq!(a_records(&m), ["127.0.0.1"], "{m:?}");
    assert!(m.metadata.authoritative);
    let m = udp_query(
        s.udp,
        "127.0.0.64",
        "5.0.0.10.in-addr.arpa",
        RecordType::PTR,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        m.metadata.authoritative,
        "the built-in zone's NXDOMAIN: {m:?}"
    );
    assert!(matches!(
        m.authorities.first().map(|r| &r.data),
        Some(RData::SOA(_))
    ));
    // Not every name under `arpa` or `test`: a public reverse name is still not allowlisted.
    let m = udp_query(s.udp, "127.0.0.64", "8.8.8.8.in-addr.arpa", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(!m.metadata.authoritative, "a policy block: {m:?}");
    // A deny rule wins.
    let m = udp_query(
        s.udp,
        "127.0.0.65",
        "5.0.0.10.in-addr.arpa",
        RecordType::PTR,
    )
    .await;
    assert!(!m.metadata.authoritative, "{m:?}");
    let m = udp_query(s.udp, "127.0.0.65", "localhost", RecordType::A).await;
    assert!(m.answers.is_empty(), "{m:?}");
    assert_eq!(up.queries(), 0, "{:?}", up.asked());
    let events = s.stop_and_read_events().await;
    let verdict = |client: &str, name: &str| {
        events
            .iter()
            .find(|e| e["kind"] == "query" && e["client"] == client && e["qname"] == name)
            .map(|e| (e["verdict"].clone(), e["reason"].clone()))
    };
    assert_eq!(
        verdict("127.0.0.64", "localhost"),
        Some(("allow".into(), "built-in zone".into())),
        "{events:#?}"
    );
    assert_eq!(
        verdict("127.0.0.64", "8.8.8.8.in-addr.arpa").map(|v| v.0),
        Some("block".into())
    );
    assert_eq!(
        verdict("127.0.0.65", "localhost").map(|v| v.0),
        Some("block".into())
    );
}

const DELEGATING_ZONE: &str = r#"$ORIGIN deleg.internal.
$TTL 300
@ IN SOA ns hm 1 2 3 4 60
@ IN NS ns
ns IN A 10.0.0.1
www IN A 10.0.0.2
lab IN NS ns.lab
ns.lab IN A 127.0.0.66
stale.lab IN A 10.9.9.9
"#;

/// A delegation inside a local zone (`lab NS ns.lab` with its glue) is followed: names at and
/// below the cut are asked of the delegated server (port 53 of the glue address), not answered
/// NXDOMAIN, or from records under the cut, out of the parent's file. The rest of the zone is
/// still answered here. Needs root for port 53.
#[tokio::test]
async fn a_delegation_inside_a_local_zone_is_followed_to_its_glue() {
    let child = FakeUpstream::new()
        .with_a("host.lab.deleg.internal", [10, 7, 7, 7], 300)
        .with_a("stale.lab.deleg.internal", [10, 7, 7, 8], 300);
    let child = match child.start_at("127.0.0.66:53".parse().unwrap()).await {
        Ok(c) => c,
        Err(e) => {
            crate::common::cannot_run(
                "a_delegation_inside_a_local_zone_is_followed_to_its_glue",
                &format!("cannot bind 127.0.0.66:53 (root needed): {e}"),
            );
            return;
        }
    };
    let group = r#"
[[groups]]
name = "deleg"
cidrs = ["127.0.0.67/32"]
allow = ["deleg.internal", "*.deleg.internal"]
"#;
    let s = TestServer::start_with_zones(None, group, &[("deleg.internal.zone", DELEGATING_ZONE)])
        .await;
    let m = udp_query(
        s.udp,
        "127.0.0.67",
        "host.lab.deleg.internal",
        RecordType::A,
    )
    .await;
    assert_eq!(a_records(&m), ["10.7.7.7"], "{m:?}");
    assert!(
        !m.metadata.authoritative,
        "the child's answer, forwarded: {m:?}"
    );
    let m = udp_query(
        s.udp,
        "127.0.0.67",
        "stale.lab.deleg.internal",
        RecordType::A,
    )
    .await;
    assert_eq!(
        a_records(&m),
        ["10.7.7.8"],
        "the child's data, not the parent's: {m:?}"
    );
    assert_eq!(child.queries(), 2, "{:?}", child.asked());
    let m = udp_query(s.udp, "127.0.0.67", "www.deleg.internal", RecordType::A).await;
    assert_eq!(a_records(&m), ["10.0.0.2"]);
    assert!(m.metadata.authoritative);
    assert_eq!(child.queries(), 2);
    // The DS at the cut is the parent's to answer (RFC 4035 §3.1.4.1): NODATA with the
    // parent's SOA, here, not a question for the child (whose servers may not answer it).
    let m = udp_query(s.udp, "127.0.0.67", "lab.deleg.internal", RecordType::DS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert!(m.metadata.authoritative, "{m:?}");
    assert!(m.answers.is_empty(), "{m:?}");
    assert!(
        m.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA && r.name.to_ascii() == "deleg.internal."),
        "{m:?}"
    );
    assert_eq!(child.queries(), 2, "{:?}", child.asked());
}

const MX_ZONE: &str = r#"$ORIGIN mx.internal.
$TTL 300
@ IN SOA ns hm 1 2 3 4 60
mail IN MX 10 secrets
mail IN MX 20 relay
svc IN SRV 0 0 25 secrets
secrets IN A 10.6.6.6
relay IN A 10.6.6.7
relay IN AAAA fd00::7
"#;

/// A local zone's MX and SRV answers carry their targets' addresses as additionals only for
/// targets the group may resolve: a denied host's address does not ride along with an allowed
/// name, and the answer itself (the target's name) is still given.
#[tokio::test]
async fn local_zone_additionals_carry_only_addresses_the_group_may_resolve() {
    let group = r#"
[[groups]]
name = "mx"
cidrs = ["127.0.0.63/32"]
allow = ["mail.mx.internal", "svc.mx.internal", "relay.mx.internal"]
"#;
    let s = TestServer::start_with_zones(None, group, &[("mx.internal.zone", MX_ZONE)]).await;
    let m = udp_query(s.udp, "127.0.0.63", "mail.mx.internal", RecordType::MX).await;
    assert_eq!(m.answers.len(), 2, "{m:?}");
    let extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name.to_ascii(), r.data))
        .collect();
    assert_eq!(
        extra,
        ["relay.mx.internal. 10.6.6.7", "relay.mx.internal. fd00::7"],
        "only the allowed target's addresses: {m:?}"
    );
    let m = udp_query(s.udp, "127.0.0.63", "svc.mx.internal", RecordType::SRV).await;
    assert_eq!(m.answers.len(), 1, "{m:?}");
    assert!(m.additionals.is_empty(), "{m:?}");
    // Asked directly, the denied host is blocked as before.
    let m = udp_query(s.udp, "127.0.0.63", "secrets.mx.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn queries_over_tcp_are_answered() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let m = tcp_query(s.tcp, "127.0.0.10", "www.example", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.1"]);
    let m = tcp_query(s.tcp, "127.0.0.99", "www.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

/// A group that may resolve anything but one domain: the built-in zones answer what no
/// resolver forwards (localhost, private reverse names), and a forward zone takes its names back.
const OPEN: &str = r#"
[[groups]]
name = "open"
cidrs = ["127.0.0.40/32"]
mode = "denylist"
deny = ["blocked.example"]
"#;

#[tokio::test]
async fn localhost_and_private_reverse_names_are_answered_here_unless_a_forward_zone_covers_them() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), OPEN).await;
    let m = udp_query(s.udp, "127.0.0.40", "localhost", RecordType::A).await;
    assert_eq!(a_records(&m), ["127.0.0.1"], "{m:?}");
    assert!(m.metadata.authoritative);
    let m = udp_query(s.udp, "127.0.0.40", "app.localhost", RecordType::A).await;
    assert_eq!(a_records(&m), ["127.0.0.1"], "{m:?}");
    let m = udp_query(
        s.udp,
        "127.0.0.40",
        "1.0.0.127.in-addr.arpa",
        RecordType::PTR,
    )
    .await;
    assert!(
        matches!(&m.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "localhost."),
        "{m:?}"
    );
    for name in [
        "5.0.0.10.in-addr.arpa",
        "1.1.168.192.in-addr.arpa",
        "x.invalid",
    ] {
        let m = udp_query(s.udp, "127.0.0.40", name, RecordType::PTR).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(
            matches!(m.authorities.first().map(|r| &r.data), Some(RData::SOA(_))),
            "{name}: the zone's SOA, so the NXDOMAIN is cached: {m:?}"
        );
    }
    assert_eq!(up.queries(), 0, "nothing went upstream: {:?}", up.asked());
    // A public name still goes upstream.
    let m = udp_query(s.udp, "127.0.0.40", "www.example", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.1"]);
    assert_eq!(up.queries(), 1);

    // The operator's own reverse zone, forwarded to their servers, is theirs again.
    let extra = format!(
        "{OPEN}\n[[upstream.forward]]\nzone = \"10.in-addr.arpa\"\nservers = [{{ address = \"{}\" }}]\n",
        up.addr
    );
    let s = TestServer::start(Some(up.addr), &extra).await;
    udp_query(
        s.udp,
        "127.0.0.40",
        "5.0.0.10.in-addr.arpa",
        RecordType::PTR,
    )
    .await;
    assert!(
        up.asked()
            .iter()
            .any(|n| n.eq_ignore_ascii_case("5.0.0.10.in-addr.arpa.")
                || n.eq_ignore_ascii_case("5.0.0.10.in-addr.arpa")),
        "{:?}",
        up.asked()
    );
    let m = udp_query(
        s.udp,
        "127.0.0.40",
        "1.1.168.192.in-addr.arpa",
        RecordType::PTR,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        up.queries(),
        2,
        "other private zones stay local: {:?}",
        up.asked()
    );
}

/// A query with RD clear is answered from the local zones only; for any other name, cached or
/// not, it is REFUSED with EDE 20 and nothing goes upstream, as from Unbound: the cache every
/// group shares is not a window onto what other agents resolved.
#[tokio::test]
async fn queries_without_recursion_desired_get_local_zones_only() {
    use hickory_proto::op::{Edns, Message, Query};
    let norec = |qname: &str| {
        let mut m = Message::query();
        m.metadata.recursion_desired = false;
        m.add_query(Query::query(
            hickory_proto::rr::Name::from_ascii(format!("{qname}.")).unwrap(),
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
        m.to_vec().unwrap()
    };
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    let src = "127.0.0.10".parse().unwrap();
    // Cached by another query first: still refused without RD.
    let m = udp_query(s.udp, "127.0.0.10", "www.example", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.1"]);
    for qname in ["www.example", "a.allowed.example"] {
        let r = udp_raw(s.udp, src, &norec(qname)).await.expect("an answer");
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{qname}");
        assert!(m.answers.is_empty());
        assert_eq!(ede_of(&m).map(|e| e.0), Some(20), "{qname}: {m:?}");
    }
    assert_eq!(up.queries(), 1, "{:?}", up.asked());
    // Local zones answer as ever, with RD clear in the answer too.
    let r = udp_raw(s.udp, src, &norec("api.corp.internal"))
        .await
        .expect("an answer");
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(a_records(&m), ["10.0.1.10", "10.0.1.11"]);
    assert!(m.metadata.authoritative && !m.metadata.recursion_desired);
    // A name the group may not resolve still gets the block answer, whatever RD says.
    let r = udp_raw(s.udp, src, &norec("pastebin.com"))
        .await
        .expect("an answer");
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn blocks_refusals_and_sinkholes_say_why_in_an_extended_dns_error() {
    let up = upstream().start().await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    for (src, name, qtype, want) in [
        // An allowed answer carries none.
        ("127.0.0.10", "www.example", RecordType::A, None),
        // A policy block: Blocked (15).
        (
            "127.0.0.10",
            "secrets.corp.internal",
            RecordType::A,
            Some((15, "blocked by policy")),
        ),
        (
            "127.0.0.30",
            "other.example",
            RecordType::A,
            Some((15, "blocked by policy")),
        ),
        // A sinkhole address: Forged Answer (4).
        (
            "127.0.0.20",
            "tracker.example",
            RecordType::A,
            Some((4, "sinkholed by policy")),
        ),
        // A client in no group: Prohibited (18).
        ("127.0.0.99", "www.example", RecordType::A, Some((18, ""))),
        // A zone transfer: Not Supported (21).
        (
            "127.0.0.10",
            "corp.internal",
            RecordType::AXFR,
            Some((21, "zone transfers are not served")),
        ),
    ] {
        let m = udp_query(s.udp, src, name, qtype).await;
        assert_eq!(
            m.metadata.recursion_available,
            src != "127.0.0.99",
            "{src} {name}: RA only for a client that may recurse"
        );
        assert_eq!(
            ede_of(&m),
            want.map(|(c, t)| (c, t.to_string())),
            "{src} {name} {qtype}: {m:?}"
        );
    }
    // Without EDNS there is no OPT record to carry it.
    let raw = udp_raw(
        s.udp,
        "127.0.0.10".parse().unwrap(),
        &query_packet("secrets.corp.internal", RecordType::A, false),
    )
    .await
    .unwrap();
    let m = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.edns.is_none());
}

/// What an upstream adds beside its question's answer never reaches the client: an unrelated
/// name's address in the answer section, another zone's NS in the authority section, glue with
/// a private address in the additional section; nor its AD bit (dnsward validates nothing).
/// Fresh and from the cache alike.
#[tokio::test]
async fn forwarded_answers_carry_only_their_question_chain_and_no_ad() {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .with_cname("alias.example", "x.allowed.example", [192, 0, 2, 4])
        .with_fault(Fault::Stuffed)
        .start()
        .await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    for round in ["fresh", "cached"] {
        for (qname, want) in [
            ("www.example", vec!["www.example. A"]),
            (
                "alias.example",
                vec!["alias.example. CNAME", "x.allowed.example. A"],
            ),
        ] {
            // AD and DO asked for: still no AD, from a resolver that does not validate.
            let mut packet = query_packet(qname, RecordType::A, true);
            packet[3] |= 0x20;
            let raw = udp_raw(s.udp, "127.0.0.10".parse().unwrap(), &packet)
                .await
                .expect("an answer");
            let m = hickory_proto::op::Message::from_vec(&raw).unwrap();
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{round} {qname}"
            );
            let answers: Vec<String> = m
                .answers
                .iter()
                .map(|r| format!("{} {}", r.name, r.record_type()))
                .collect();
            assert_eq!(answers, want, "{round} {qname}: the chain only");
            assert!(
                m.authorities.is_empty(),
                "{round} {qname}: {:?}",
                m.authorities
            );
            assert!(
                m.additionals.is_empty(),
                "{round} {qname}: {:?}",
                m.additionals
            );
            assert!(!m.metadata.authentic_data, "{round} {qname}: AD cleared");
        }
    }
    // Exchanges, not datagrams: a retransmission on a loaded machine is the same exchange.
    assert_eq!(up.asked().len(), 2, "the scrubbed answers were cached");
    // The counter is process-wide and other tests' upstreams run in parallel (an NXDOMAIN's
    // SOA from another zone is scrubbed too): at least this test's two per section.
    let metrics = metrics_text(&s).await;
    for section in ["answer", "authority", "additional"] {
        let prefix = format!("dnsward_upstream_records_scrubbed_total{{section=\"{section}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            count >= 2,
            "{section} counted per fetched answer:\n{metrics}"
        );
    }
}

/// A TTL with its top bit set is zero (RFC 2181 §8): served as 0 and not cached, where it was
/// clamped to a day.
#[tokio::test]
async fn a_ttl_with_its_top_bit_set_is_zero() {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 0x8000_0005)
        .start()
        .await;
    let s = TestServer::start(Some(up.addr), AGENTS).await;
    for n in 1..=2 {
        let m = udp_query(s.udp, "127.0.0.10", "www.example", RecordType::A).await;
        assert_eq!(a_records(&m), ["192.0.2.1"]);
        assert_eq!(m.answers[0].ttl, 0);
        assert_eq!(up.queries(), n, "not cached");
    }
}

const ALIAS_ZONE: &str = r#"$ORIGIN alias.internal.
$TTL 300
@ IN SOA ns.alias.internal. host.alias.internal. 1 3600 600 604800 60
out IN CNAME www.example.
cross IN CNAME api.corp.internal.
hop IN CNAME out
denied IN CNAME secrets.corp.internal.
gone IN CNAME nx.example.
rebind IN CNAME rebind.example.
"#;

/// A local zone's CNAME to a name outside that zone is followed, as a recursive resolver (and
/// Unbound's local data) does: the stub gets the target's addresses, not a bare CNAME. Through
/// the upstream (cache too), into another local zone, with the last link's rcode; a target the
/// group may not resolve, or a forwarded answer with an internal address, is blocked as any
/// other answer would be.
#[tokio::test]
async fn a_local_cname_out_of_its_zone_is_followed_to_the_target() {
    let up = upstream()
        .with_a("rebind.example", [10, 9, 9, 9], 300)
        .start()
        .await;
    let group = r#"
[[groups]]
name = "aliases"
cidrs = ["127.0.0.64/32"]
allow = ["*.alias.internal", "www.example", "*.corp.internal", "nx.example", "rebind.example"]
deny = ["secrets.corp.internal"]
"#;
    let mut s =
        TestServer::start_with_zones(Some(up.addr), group, &[("alias.internal.zone", ALIAS_ZONE)])
            .await;
    let src = "127.0.0.64";
    let chain = |m: &hickory_proto::op::Message| -> Vec<String> {
        m.answers
            .iter()
            .map(|r| format!("{} {} {}", r.name.to_ascii(), r.record_type(), r.data))
            .collect()
    };

    // Upstream: the CNAME, then the target's address; not all of it is this server's data.
    for round in 0..2 {
        let m = udp_query(s.udp, src, "out.alias.internal", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert_eq!(
            chain(&m),
            [
                "out.alias.internal. CNAME www.example.",
                "www.example. A 192.0.2.1"
            ],
            "round {round}"
        );
        assert!(!m.metadata.authoritative);
        assert!(m.metadata.recursion_available);
    }
    // The second time from the cache: one upstream exchange for the target.
    assert_eq!(
        up.asked()
            .iter()
            .filter(|n| n.starts_with("www.example"))
            .count(),
        1
    );

    // In-zone link first, then out of the zone.
    let m = udp_query(s.udp, src, "hop.alias.internal", RecordType::A).await;
    assert_eq!(
        chain(&m),
        [
            "hop.alias.internal. CNAME out.alias.internal.",
            "out.alias.internal. CNAME www.example.",
            "www.example. A 192.0.2.1"
        ]
    );

    // Into another local zone: its records, still authoritative data.
    let m = udp_query(s.udp, src, "cross.alias.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 3, "{m:?}");
    assert_eq!(a_records(&m), ["10.0.1.10", "10.0.1.11"]);
    assert!(m.metadata.authoritative);

    // The target does not exist: NXDOMAIN with the CNAME (RFC 6604).
    let m = udp_query(s.udp, src, "gone.alias.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
    assert_eq!(chain(&m), ["gone.alias.internal. CNAME nx.example."]);

    // A target the group may not resolve, and a forwarded internal address: blocked.
    let m = udp_query(s.udp, src, "denied.alias.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty(), "{m:?}");
    let m = udp_query(s.udp, src, "rebind.alias.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty(), "{m:?}");

    // Asked for the CNAME itself: not chased.
    let m = udp_query(s.udp, src, "out.alias.internal", RecordType::CNAME).await;
    assert_eq!(chain(&m), ["out.alias.internal. CNAME www.example."]);
    let events = s.stop_and_read_events().await;
    assert!(
        events.iter().any(|e| e["qname"] == "rebind.alias.internal"
            && e["reason"].as_str().is_some_and(|r| r.contains("10.9.9.9"))),
        "the block names the address: {events:?}"
    );
}
