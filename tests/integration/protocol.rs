//! Protocol edges through real sockets: OPT record checks (RFC 6891), packets built byte by
//! byte so nothing in between can tidy them up.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::metric_sum;
use crate::harness::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// A group only these tests use, so its metric labels count these tests' queries alone.
const WIRE: &str = r#"
[[groups]]
name = "wire"
cidrs = ["127.0.0.61/32"]
allow = ["*.corp.internal", "corp.internal", "www.example"]
"#;

const MEMBER: &str = "127.0.0.61";
const STRANGER: &str = "127.0.0.99";

const API: [&[u8]; 3] = [b"api", b"corp", b"internal"];

/// The 4-bit header rcode of an answer.
pub fn header_rcode(r: &[u8]) -> u8 {
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

/// `p` from the member gets FORMERR with its ID over UDP and over TCP; the UDP answer.
async fn formerr_over_udp_and_tcp(s: &TestServer, what: &str, p: &[u8]) -> Vec<u8> {
    let r = udp_raw(s.udp, MEMBER.parse().unwrap(), p)
        .await
        .unwrap_or_else(|| panic!("{what}: an answer over UDP"));
    assert_eq!(header_rcode(&r), 1, "{what}: FORMERR over UDP");
    assert_eq!(&r[0..2], &p[0..2], "{what}: ID echoed");
    let t = tcp_raw(s.tcp, MEMBER, p)
        .await
        .unwrap_or_else(|| panic!("{what}: an answer over TCP"));
    assert_eq!(header_rcode(&t), 1, "{what}: FORMERR over TCP");
    r
}

#[tokio::test]
async fn a_malformed_opt_record_is_formerr_with_our_opt_record() {
    let s = TestServer::start(None, WIRE).await;
    let before = formerr_count(&metrics_text(&s).await);
    let non_root = raw_query(&API, 1, [0, 0, 1], &opt_record(b"\x01x\x01y\x00", 0));
    let in_answers = raw_query(&API, 1, [1, 0, 0], &opt_record(b"\x00", 0));
    let in_authority = raw_query(&API, 1, [0, 1, 0], &opt_record(b"\x00", 0));
    let two = raw_query(
        &API,
        1,
        [0, 0, 2],
        &[opt_record(b"\x00", 0), opt_record(b"\x00", 0)].concat(),
    );
    // A COOKIE option whose length runs past the OPT record's data.
    let mut overrun = opt_record(b"\x00", 0);
    let at = overrun.len() - 2;
    overrun[at..].copy_from_slice(&12u16.to_be_bytes());
    overrun.extend_from_slice(&[0, 10, 0, 40]);
    overrun.extend_from_slice(&[7; 8]);
    let overrun = raw_query(&API, 1, [0, 0, 1], &overrun);
    let cases = [
        ("non-root owner", &non_root),
        ("OPT in the answer section", &in_answers),
        ("OPT in the authority section", &in_authority),
        ("two OPT records", &two),
        ("an option past the OPT record", &overrun),
    ];
    for (what, p) in cases {
        let r = formerr_over_udp_and_tcp(&s, what, p).await;
        // RFC 6891 §7: a FORMERR about the OPT record itself carries ours, so the client can
        // tell it from a server without EDNS (Unbound sends none for an OPT outside the
        // additionals); RA set, as on every answer to a client of ours.
        let m = hickory_proto::op::Message::from_vec(&r).unwrap_or_else(|e| panic!("{what}: {e}"));
        let edns = m
            .edns
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: an OPT record"));
        assert_eq!(edns.version(), 0, "{what}");
        assert_eq!(
            u16::from_be_bytes([r[10], r[11]]),
            1,
            "{what}: our OPT only"
        );
        assert!(m.answers.is_empty() && m.authorities.is_empty(), "{what}");
        assert!(m.metadata.recursion_available, "{what}: RA");
        assert_eq!(m.queries.len(), 1, "{what}: the question echoed");
    }
    let after = formerr_count(&metrics_text(&s).await);
    assert!(
        after >= before + 2.0 * cases.len() as f64,
        "counted as malformed: {before} -> {after}"
    );
    // A source in no group gets the FORMERR (and its OPT) without RA: recursion is not
    // available to it.
    let r = udp_within(s.udp, STRANGER, &non_root, Duration::from_secs(4))
        .await
        .expect("an answer");
    assert_eq!((header_rcode(&r), r[3] & 0x80), (1, 0));
    assert_eq!(u16::from_be_bytes([r[10], r[11]]), 1);
    // The same query with a proper OPT is answered.
    let fine = raw_query(&API, 1, [0, 0, 1], &opt_record(b"\x00", 0));
    let r = udp_raw(s.udp, MEMBER.parse().unwrap(), &fine)
        .await
        .expect("an answer");
    assert_eq!(header_rcode(&r), 0);
    assert_eq!(u16::from_be_bytes([r[6], r[7]]), 2, "both A records");
}

/// What a query has no use for gets FORMERR, as Unbound answers it, over UDP and TCP: the TC
/// bit, an answer record, an authority record (IXFR's SOA aside), an additional record other
/// than OPT, a TSIG or SIG(0) signature (not supported). Each is counted as malformed; the
/// plain query right after is answered.
#[tokio::test]
async fn sections_a_query_has_no_use_for_are_formerr() {
    let s = TestServer::start(None, WIRE).await;
    let before = formerr_count(&metrics_text(&s).await);
    let a_record = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
    let tsig = [&[0u8][..], &[0, 250, 0, 255, 0, 0, 0, 0, 0, 0]].concat();
    let sig0 = [&[0u8][..], &[0, 24, 0, 255, 0, 0, 0, 0, 0, 0]].concat();
    let mut tc = raw_query(&API, 1, [0, 0, 0], &[]);
    tc[2] |= 0x02;
    let cases = [
        ("TC bit", tc),
        ("answer record", raw_query(&API, 1, [1, 0, 0], &a_record)),
        ("authority record", raw_query(&API, 1, [0, 1, 0], &a_record)),
        (
            "additional A record",
            raw_query(&API, 1, [0, 0, 1], &a_record),
        ),
        ("TSIG", raw_query(&API, 1, [0, 0, 1], &tsig)),
        ("SIG(0)", raw_query(&API, 1, [0, 0, 1], &sig0)),
    ];
    for (what, p) in &cases {
        let r = formerr_over_udp_and_tcp(&s, what, p).await;
        assert_eq!(r[2] & 0x02, 0, "{what}: the answer is not truncated");
        assert_eq!(&r[6..10], &[0, 0, 0, 0], "{what}: no records echoed");
    }
    let after = formerr_count(&metrics_text(&s).await);
    assert!(
        after >= before + 2.0 * cases.len() as f64,
        "counted as malformed: {before} -> {after}"
    );
    let fine = raw_query(&API, 1, [0, 0, 0], &[]);
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
    let p = raw_query(&API, 1, [0, 0, 1], &opt_record(b"\x01x\x00", 0));
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

/// Checks an answer is BADVERS as RFC 6891 §6.1.3 has it: header rcode 0, our OPT record
/// (version 0) carrying extended rcode 1, no records but the OPT, the question echoed.
pub fn assert_badvers(r: &[u8], query: &[u8], what: &str) {
    assert_eq!(&r[0..2], &query[0..2], "{what}: ID echoed");
    assert_eq!(header_rcode(r), 0, "{what}: header rcode 0");
    assert_eq!(dnsward::wire::extended_rcode(r), 16, "{what}: BADVERS");
    let m = hickory_proto::op::Message::from_vec(r).expect("a well-formed answer");
    let edns = m.edns.as_ref().expect("an OPT record");
    assert_eq!(edns.version(), 0, "{what}: our OPT says version 0");
    assert_eq!(edns.rcode_high(), 1, "{what}: extended rcode bits");
    assert!(m.answers.is_empty() && m.authorities.is_empty(), "{what}");
    assert_eq!(
        u16::from_be_bytes([r[10], r[11]]),
        1,
        "{what}: only the OPT"
    );
    let question = dnsward::wire::question_of(query).unwrap();
    assert_eq!(
        dnsward::wire::question_of(r),
        Some(question),
        "{what}: the question echoed as sent"
    );
}

#[tokio::test]
async fn an_edns_version_above_zero_gets_badvers_over_udp_and_tcp() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .start()
        .await;
    let mut s = TestServer::start(Some(up.addr), WIRE).await;
    // Mixed case: the question comes back as sent.
    let local: [&[u8]; 3] = [b"ApI", b"corp", b"INTERNAL"];
    let forwarded: [&[u8]; 2] = [b"www", b"example"];
    for version in [1, 255] {
        for labels in [&local[..], &forwarded[..]] {
            let p = raw_query(labels, 1, [0, 0, 1], &opt_record(b"\x00", version));
            let what = format!("version {version} UDP");
            let r = udp_raw(s.udp, MEMBER.parse().unwrap(), &p)
                .await
                .expect("an answer");
            assert_badvers(&r, &p, &what);
            let r = tcp_raw(s.tcp, MEMBER, &p).await.expect("an answer");
            assert_badvers(&r, &p, &format!("version {version} TCP"));
        }
    }
    assert_eq!(up.queries(), 0, "nothing was forwarded");
    // Version 0 is answered as usual.
    let p = raw_query(&local, 1, [0, 0, 1], &opt_record(b"\x00", 0));
    let r = udp_raw(s.udp, MEMBER.parse().unwrap(), &p).await.unwrap();
    assert_eq!(dnsward::wire::extended_rcode(&r), 0);
    assert_eq!(u16::from_be_bytes([r[6], r[7]]), 2);
    // A source in no group is refused as before: BADVERS would tell it a resolver is here.
    let p = raw_query(&API, 1, [0, 0, 1], &opt_record(b"\x00", 1));
    let r = udp_raw(s.udp, STRANGER.parse().unwrap(), &p).await.unwrap();
    assert_eq!(dnsward::wire::extended_rcode(&r), 5, "REFUSED");

    let metrics = metrics_text(&s).await;
    assert_eq!(
        metric_sum(
            &metrics,
            "dnsward_queries_total",
            &[("group", "wire"), ("verdict", "formerr")]
        ),
        Some(8.0),
        "{metrics}"
    );
    let events = s.stop_and_read_events().await;
    let badvers: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "query" && e["rcode"] == "BADVERS")
        .collect();
    assert!(!badvers.is_empty(), "{events:#?}");
    for e in &badvers {
        assert_eq!(e["verdict"], "formerr", "{e}");
        assert_eq!(e["group"], "wire", "{e}");
        assert_eq!(e["answers"], 0, "{e}");
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.starts_with("EDNS version "), "{e}");
    }
}

#[tokio::test]
async fn zone_transfers_are_refused_never_forwarded_maila_mailb_notimp_and_meta_types_formerr() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .start()
        .await;
    let mut s = TestServer::start(Some(up.addr), WIRE).await;
    let zone: [&[u8]; 2] = [b"corp", b"internal"];
    let forwarded: [&[u8]; 2] = [b"www", b"example"];
    // A real IXFR query carries the client's SOA in its authority section.
    let soa = {
        let mut rr = vec![0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 60];
        let rdata = [&[0u8][..], &[0], &[0, 0, 0, 1], &[0; 16]].concat();
        rr.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        rr.extend_from_slice(&rdata);
        rr
    };
    for labels in [&zone[..], &forwarded[..]] {
        for (qtype, counts, tail, expect) in [
            (252, [0, 0, 0], &[][..], 5u16),
            (251, [0, 1, 0], &soa[..], 5),
            (253, [0, 0, 0], &[][..], 4),
            (254, [0, 0, 0], &[][..], 4),
            // Meta types (RFC 6895 §3.1): OPT, TKEY, TSIG, the unassigned meta range.
            (41, [0, 0, 0], &[][..], 1),
            (249, [0, 0, 0], &[][..], 1),
            (250, [0, 0, 0], &[][..], 1),
            (128, [0, 0, 0], &[][..], 1),
            (248, [0, 0, 0], &[][..], 1),
        ] {
            let p = raw_query(labels, qtype, counts, tail);
            let what = format!("type {qtype} for {labels:?}");
            for (proto, r) in [
                ("udp", udp_raw(s.udp, MEMBER.parse().unwrap(), &p).await),
                ("tcp", tcp_raw(s.tcp, MEMBER, &p).await),
            ] {
                let r = r.unwrap_or_else(|| panic!("{what} over {proto}: an answer"));
                assert_eq!(
                    dnsward::wire::extended_rcode(&r),
                    expect,
                    "{what} over {proto}"
                );
                assert_eq!(r[2] & 0x04, 0, "{what} over {proto}: not authoritative");
                assert_eq!(&r[6..10], &[0, 0, 0, 0], "{what} over {proto}: no records");
                assert_eq!(
                    dnsward::wire::question_of(&r),
                    dnsward::wire::question_of(&p),
                    "{what} over {proto}: question echoed"
                );
            }
        }
    }
    assert_eq!(
        up.queries(),
        0,
        "no transfer or meta query reached the upstream"
    );
    // The zone still answers ordinary types.
    let p = raw_query(&zone, 6, [0, 0, 0], &[]);
    let r = udp_raw(s.udp, MEMBER.parse().unwrap(), &p).await.unwrap();
    assert_eq!((header_rcode(&r), u16::from_be_bytes([r[6], r[7]])), (0, 1));
    // A stranger's transfer gets the unknown-client REFUSED, as any of its queries.
    let p = raw_query(&zone, 252, [0, 0, 0], &[]);
    let r = tcp_raw(s.tcp, STRANGER, &p).await.unwrap();
    assert_eq!(header_rcode(&r), 5);

    let events = s.stop_and_read_events().await;
    let of = |qtype: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == "query" && e["group"] == "wire" && e["qtype"] == qtype)
            .collect::<Vec<_>>()
    };
    for e in of("AXFR").into_iter().chain(of("IXFR")) {
        assert_eq!(e["verdict"], "refuse", "{e}");
        assert_eq!(e["rcode"], "REFUSED", "{e}");
        assert!(
            e["reason"].as_str().unwrap().starts_with("zone transfer ("),
            "{e}"
        );
    }
    assert!(
        !of("AXFR").is_empty() && !of("IXFR").is_empty(),
        "{events:#?}"
    );
    assert!(
        !of("MAILA").is_empty() && !of("MAILB").is_empty(),
        "{events:#?}"
    );
    for e in of("MAILA").into_iter().chain(of("MAILB")) {
        assert_eq!(
            (&e["verdict"], &e["rcode"]),
            (&"formerr".into(), &"NOTIMP".into()),
            "{e}"
        );
    }
    for t in ["OPT", "TKEY", "TSIG", "TYPE128", "TYPE248"] {
        let meta = of(t);
        assert!(!meta.is_empty(), "{t}: {events:#?}");
        for e in meta {
            assert_eq!(
                (&e["verdict"], &e["rcode"]),
                (&"formerr".into(), &"FORMERR".into()),
                "{e}"
            );
            assert!(
                e["reason"].as_str().unwrap().starts_with("meta type "),
                "{e}"
            );
        }
    }
}

/// A zone whose owners use RFC 1035 escapes: `\DDD` is decimal.
const ESC_ZONE: &str = r#"$ORIGIN esc.internal.
$TTL 300
@ IN SOA ns hm 1 2 3 4 60
esc\.dot IN A 10.9.9.1
dec\065 IN A 10.9.9.65
q\092r IN A 10.9.9.92
alias IN CNAME esc\046dot
"#;

const ESC_GROUP: &str = r#"
[[groups]]
name = "escapes"
cidrs = ["127.0.0.62/32"]
allow = ["*.corp.internal", "*.esc.internal"]
deny = ["secrets.corp.internal"]
"#;

/// One query for `labels` over UDP and TCP from the escapes group's member; both answers
/// must agree. Returns the UDP answer, raw.
async fn both_transports(s: &TestServer, labels: &[&[u8]], qtype: u16) -> Vec<u8> {
    let p = raw_query(labels, qtype, [0, 0, 0], &[]);
    let udp = udp_raw(s.udp, "127.0.0.62".parse().unwrap(), &p)
        .await
        .unwrap_or_else(|| panic!("{labels:?}: a UDP answer"));
    let tcp = tcp_raw(s.tcp, "127.0.0.62", &p)
        .await
        .unwrap_or_else(|| panic!("{labels:?}: a TCP answer"));
    assert_eq!(udp, tcp, "{labels:?}: UDP and TCP agree");
    assert_eq!(
        dnsward::wire::question_of(&udp),
        dnsward::wire::question_of(&p),
        "{labels:?}: the question echoed byte for byte"
    );
    udp
}

/// The A records of a raw answer.
fn a_of(r: &[u8]) -> Vec<String> {
    a_records(&hickory_proto::op::Message::from_vec(r).expect("a well-formed answer"))
}

#[tokio::test]
async fn names_with_escaped_bytes_are_answered_from_local_zones_never_servfail() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 1])
        .start()
        .await;
    let mut s =
        TestServer::start_with_zones(Some(up.addr), ESC_GROUP, &[("esc.internal.zone", ESC_ZONE)])
            .await;
    let apps: [&[u8]; 3] = [b"apps", b"corp", b"internal"];
    let under = |first: &'static [u8], rest: &[&'static [u8]]| {
        std::iter::once(first)
            .chain(rest.iter().copied())
            .collect::<Vec<_>>()
    };

    // A literal `*` label is the wildcard owner itself (RFC 4592): its records.
    let r = both_transports(&s, &under(b"*", &apps), 1).await;
    assert_eq!(
        (header_rcode(&r), a_of(&r)),
        (0, vec!["10.0.3.1".to_string()])
    );

    // Under the wildcard, any bytes: synthesised, owned by the name as asked (0x20 case kept).
    for first in [
        &b"x.y"[..],
        b"x@y",
        b"x<y",
        b"\x8d",
        b"\0",
        b"a\\b",
        b"AgEnT-7",
    ] {
        let labels = under(first, &apps);
        let r = both_transports(&s, &labels, 1).await;
        assert_eq!(header_rcode(&r), 0, "{first:?}");
        assert_eq!(a_of(&r), ["10.0.3.1"], "{first:?}");
        let m = hickory_proto::op::Message::from_vec(&r).unwrap();
        let owner: Vec<&[u8]> = m.answers[0].name.iter().collect();
        assert_eq!(
            owner, labels,
            "{first:?}: owner is the query name, case included"
        );
    }

    // Not in the zone: NXDOMAIN with the SOA, not SERVFAIL.
    for first in [
        &b"a\0"[..],
        b"ap\\i",
        b"\xc3\xa9t\xc3\xa9",
        b"api.corp",
        b"\"",
    ] {
        let labels = under(first, &[b"corp", b"internal"]);
        let r = both_transports(&s, &labels, 1).await;
        assert_eq!(header_rcode(&r), 3, "{first:?}: NXDOMAIN");
        assert_eq!(u16::from_be_bytes([r[8], r[9]]), 1, "{first:?}: the SOA");
    }

    // Zone-file escapes are decimal: `dec\065` is `deca` (0x20 case echoed), not `dec5`.
    let r = both_transports(&s, &[b"DeCa", b"esc", b"internal"], 1).await;
    assert_eq!(a_of(&r), ["10.9.9.65"]);
    let r = both_transports(&s, &[b"dec5", b"esc", b"internal"], 1).await;
    assert_eq!(header_rcode(&r), 3);
    let r = both_transports(&s, &[b"q\\r", b"esc", b"internal"], 1).await;
    assert_eq!(a_of(&r), ["10.9.9.92"]);
    // A dot inside a label is one label: `esc\.dot` exists, `esc` under `dot` does not.
    let r = both_transports(&s, &[b"esc.dot", b"esc", b"internal"], 1).await;
    assert_eq!(a_of(&r), ["10.9.9.1"]);
    let r = both_transports(&s, &[b"esc", b"dot", b"esc", b"internal"], 1).await;
    assert_eq!(header_rcode(&r), 3);
    let r = both_transports(&s, &[b"alias", b"esc", b"internal"], 1).await;
    assert_eq!(
        a_of(&r),
        ["10.9.9.1"],
        "the CNAME leads to the dotted label"
    );

    // Policy sees labels, not text: `secrets.corp` + `internal` is not below corp.internal
    // (blocked as not allowlisted), `x.secrets` under corp.internal is not below the denied
    // secrets.corp.internal (allowed; the zone says NXDOMAIN).
    let r = both_transports(&s, &[b"secrets.corp", b"internal"], 1).await;
    assert_eq!(header_rcode(&r), 3);
    let r = both_transports(&s, &[b"x.secrets", b"corp", b"internal"], 1).await;
    assert_eq!(header_rcode(&r), 3);
    let r = both_transports(&s, &[b"secrets", b"corp", b"internal"], 1).await;
    assert_eq!(header_rcode(&r), 3);
    assert_eq!(up.queries(), 0, "local names never reach the upstream");

    let events = s.stop_and_read_events().await;
    let queries: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "query" && e["group"] == "escapes")
        .collect();
    assert!(
        queries.iter().all(|e| e["rcode"] != "SERVFAIL"),
        "{queries:#?}"
    );
    let by_name = |qname: &str| {
        queries
            .iter()
            .find(|e| e["qname"] == qname)
            .unwrap_or_else(|| panic!("no event for {qname}: {queries:#?}"))
    };
    let star = by_name("\\042.apps.corp.internal");
    assert_eq!(
        (&star["verdict"], &star["rcode"], &star["upstream"]),
        (
            &"allow".into(),
            &"NOERROR".into(),
            &"zone:corp.internal".into()
        )
    );
    let dotted = by_name("x\\046y.apps.corp.internal");
    assert_eq!(dotted["answers"], 1);
    let outside = by_name("secrets\\046corp.internal");
    assert_eq!(
        (&outside["verdict"], &outside["reason"]),
        (&"block".into(), &"not allowlisted".into())
    );
    let inside = by_name("x\\046secrets.corp.internal");
    assert_eq!(inside["verdict"], "allow", "{inside}");
    let denied = by_name("secrets.corp.internal");
    assert_eq!(denied["verdict"], "block", "{denied}");
}

/// A server cookie's timestamp is Unix time (RFC 9018 §4.3), not the process's uptime: another
/// server sharing the secret, or one restarted, reads it the same.
#[tokio::test]
async fn server_cookies_carry_unix_time() {
    let s = TestServer::start(None, WIRE).await;
    let packet = with_cookie(raw_name_query("www.corp.internal", 1), [3; 8], None);
    let raw = udp_raw(s.udp, MEMBER.parse().unwrap(), &packet)
        .await
        .expect("an answer");
    let server = server_cookie(&raw).expect("a server cookie");
    assert_eq!(server[0], 1, "version 1");
    let stamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    #[allow(clippy::cast_possible_truncation)]
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    assert!(
        unix.wrapping_sub(stamp) <= 5,
        "timestamp {stamp}, Unix time {unix}"
    );
}

/// A cookie-only query (no question, an OPT record with a COOKIE: RFC 7873 §5.4) from a client
/// of ours gets NOERROR and a server cookie it can use next; a stranger gets no cookie.
#[tokio::test]
async fn a_cookie_only_query_gets_a_server_cookie() {
    let s = TestServer::start(None, WIRE).await;
    let header_only = vec![0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    let packet = with_cookie(header_only, [5; 8], None);
    let raw = udp_raw(s.udp, MEMBER.parse().unwrap(), &packet)
        .await
        .expect("an answer");
    let m = hickory_proto::op::Message::from_vec(&raw).expect("a well-formed answer");
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NoError,
        "{m:?}"
    );
    assert_eq!(&raw[0..2], &[0x12, 0x34]);
    assert!(m.queries.is_empty() && m.answers.is_empty());
    let server = server_cookie(&raw).expect("a server cookie");
    // The cookie works: a query echoing it is answered as from a proven source (no fresh one).
    let q = with_cookie(
        raw_name_query("www.corp.internal", 1),
        [5; 8],
        Some(&server),
    );
    let again = udp_raw(s.udp, MEMBER.parse().unwrap(), &q).await.unwrap();
    assert_eq!(
        server_cookie(&again).as_deref(),
        Some(&server[..]),
        "the same cookie comes back"
    );
    // A source in no group gets no cookie.
    let raw = udp_raw(s.udp, STRANGER.parse().unwrap(), &packet)
        .await
        .expect("an answer");
    assert!(server_cookie(&raw).is_none());
    assert_ne!(
        hickory_proto::op::Message::from_vec(&raw)
            .unwrap()
            .metadata
            .response_code,
        hickory_proto::op::ResponseCode::NoError
    );
}

fn dig_runnable(test: &str) -> bool {
    crate::common::tools_runnable(test, &["dig"], "-v", "bind9-dnsutils")
}

/// RFC 7828 with dig: over TCP, a member's `+keepalive` is answered with the TCP idle timeout
/// (`server.tcp_idle_timeout`, 7 s here) in the option; a keepalive option with data (a
/// TIMEOUT, which only servers send) is FORMERR, carrying our OPT record, as from Unbound.
/// Over UDP the option is ignored, data or not (§3.3.1); a source in no group learns nothing.
#[tokio::test]
async fn tcp_keepalive_is_answered_with_the_idle_timeout_over_tcp_only() {
    if !dig_runnable("tcp_keepalive_is_answered_with_the_idle_timeout_over_tcp_only") {
        return;
    }
    let s =
        TestServer::start_full(None, WIRE, None, "127.0.0.1:0", "tcp_idle_timeout = \"7s\"").await;
    let name = "api.corp.internal";
    let out = dig(s.tcp, MEMBER, &["+tcp", "+keepalive"], name, "A").await;
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("; TCP KEEPALIVE: 7.0 secs"), "{out}");
    let out = dig(s.tcp, MEMBER, &["+tcp"], name, "A").await;
    assert!(
        out.contains("status: NOERROR") && !out.contains("KEEPALIVE"),
        "{out}"
    );
    let out = dig(s.tcp, MEMBER, &["+tcp", "+ednsopt=11:0001"], name, "A").await;
    assert!(out.contains("status: FORMERR"), "{out}");
    assert!(out.contains("; EDNS: version: 0"), "{out}");
    assert!(!out.contains("KEEPALIVE"), "{out}");
    for args in [&["+keepalive"][..], &["+ednsopt=11:0001"]] {
        let out = dig(s.udp, MEMBER, args, name, "A").await;
        assert!(out.contains("status: NOERROR"), "UDP {args:?}: {out}");
        assert!(!out.contains("KEEPALIVE"), "UDP {args:?}: {out}");
    }
    let out = dig(s.tcp, STRANGER, &["+tcp", "+keepalive"], name, "A").await;
    assert!(
        out.contains("status: REFUSED") && !out.contains("KEEPALIVE"),
        "{out}"
    );
}

/// RFC 5001 with dig: `server.nsid` set, a member's `+nsid` gets it, over UDP and TCP; a
/// source in no group does not; unset (the default), no one does.
#[tokio::test]
async fn nsid_is_sent_to_members_only_when_set() {
    if !dig_runnable("nsid_is_sent_to_members_only_when_set") {
        return;
    }
    let s =
        TestServer::start_full(None, WIRE, None, "127.0.0.1:0", "nsid = \"dnsward-eu-1\"").await;
    let name = "api.corp.internal";
    for (server, args) in [(s.udp, &["+nsid"][..]), (s.tcp, &["+nsid", "+tcp"])] {
        let out = dig(server, MEMBER, args, name, "A").await;
        assert!(out.contains("status: NOERROR"), "{args:?}: {out}");
        assert!(
            out.contains("; NSID: 64 6e 73 77 61 72 64 2d 65 75 2d 31 (\"dnsward-eu-1\")"),
            "{args:?}: {out}"
        );
    }
    let out = dig(s.udp, MEMBER, &[], name, "A").await;
    assert!(!out.contains("NSID"), "not asked: {out}");
    let out = dig(s.udp, STRANGER, &["+nsid"], name, "A").await;
    assert!(
        out.contains("status: REFUSED") && !out.contains("NSID"),
        "{out}"
    );
    let unset = TestServer::start(None, WIRE).await;
    let out = dig(unset.udp, MEMBER, &["+nsid"], name, "A").await;
    assert!(
        out.contains("status: NOERROR") && !out.contains("NSID"),
        "{out}"
    );
}

/// Opcodes other than QUERY, with dig, as Unbound answers them but for RA: NOTIFY gets
/// REFUSED (dnsward is no secondary to be told of a change), UPDATE and STATUS NOTIMP; each with
/// the question and our OPT record, and RA set for a member (recursion is available to it,
/// as on all its answers; Unbound clears it on NOTIMP), clear for a source in no group.
#[tokio::test]
async fn notify_is_refused_and_update_not_implemented_with_ra_for_members() {
    if !dig_runnable("notify_is_refused_and_update_not_implemented_with_ra_for_members") {
        return;
    }
    let s = TestServer::start(None, WIRE).await;
    for (opcode, status) in [
        ("notify", "REFUSED"),
        ("update", "NOTIMP"),
        ("status", "NOTIMP"),
    ] {
        for (server, transport) in [(s.udp, "+notcp"), (s.tcp, "+tcp")] {
            let what = format!("{opcode} {transport}");
            let args = [transport, &format!("+opcode={opcode}")[..]];
            let out = dig(server, MEMBER, &args, "corp.internal", "SOA").await;
            assert!(out.contains(&format!("status: {status}")), "{what}: {out}");
            assert!(out.contains("; EDNS: version: 0"), "{what}: {out}");
            let flags = dig_flags(&out);
            assert!(
                flags.contains(&"qr") && flags.contains(&"ra"),
                "{what}: {out}"
            );
            assert!(!flags.contains(&"aa"), "{what}: {out}");
        }
        let args = ["+notcp", &format!("+opcode={opcode}")[..]];
        let out = dig(s.udp, STRANGER, &args, "corp.internal", "SOA").await;
        assert!(
            out.contains(&format!("status: {status}")),
            "stranger {opcode}: {out}"
        );
        assert!(!dig_flags(&out).contains(&"ra"), "stranger {opcode}: {out}");
    }
}

/// A query for `api.corp.internal` padded (RFC 7830) to `total` bytes.
fn padded_query(total: usize) -> Vec<u8> {
    let mut m = hickory_proto::op::Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("api.corp.internal.").unwrap(),
        hickory_proto::rr::RecordType::A,
    ));
    let mut p = m.to_vec().unwrap();
    p[11] = 1; // ARCOUNT 1: the OPT record
    let pad = total - p.len() - 11 - 4;
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    p.extend_from_slice(&u16::try_from(pad + 4).unwrap().to_be_bytes());
    p.extend_from_slice(&12u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(pad).unwrap().to_be_bytes());
    p.extend(std::iter::repeat_n(0u8, pad));
    assert_eq!(p.len(), total);
    p
}

/// A UDP query longer than the receive buffer (4,096 bytes) is dropped and counted as
/// malformed: its cut-off prefix was parsed and answered FORMERR, a valid query reported as a
/// bad one. The same query over TCP is answered, and one of 4,096 bytes over UDP too.
#[tokio::test]
async fn a_udp_query_longer_than_the_buffer_is_dropped_not_answered_formerr() {
    let s = TestServer::start(None, WIRE).await;
    let dropped = |text: &str| {
        metric_sum(
            text,
            "dnsward_malformed_packets_total",
            &[("action", "dropped")],
        )
        .unwrap_or(0.0)
    };
    let fits = udp_within(s.udp, MEMBER, &padded_query(4096), Duration::from_secs(2))
        .await
        .expect("a 4,096-byte query is answered");
    assert_eq!(header_rcode(&fits), 0);
    let before = dropped(&metrics_text(&s).await);
    let long = padded_query(4200);
    assert!(
        udp_within(s.udp, MEMBER, &long, Duration::from_millis(700))
            .await
            .is_none(),
        "no FORMERR for a query cut short by the buffer"
    );
    let after = dropped(&metrics_text(&s).await);
    assert!(after >= before + 1.0, "{before} -> {after}");
    let t = tcp_raw(s.tcp, MEMBER, &long)
        .await
        .expect("answered over TCP");
    assert_eq!(header_rcode(&t), 0);
}

/// A client in no group that pipelines queries on TCP gets REFUSED for each (RFC 7766
/// §6.2.1.1), then an orderly close (EOF), not a reset: only the first was answered, and the
/// close with the rest unread reset the connection.
#[tokio::test]
async fn a_stranger_pipelining_over_tcp_gets_refused_for_each_query_then_eof() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(None, WIRE).await;
    let mut c = tcp_connect(s.tcp, STRANGER).await;
    let mut out = Vec::new();
    for id in [0x1111u16, 0x2222, 0x3333] {
        let mut q = raw_query(&API, 1, [0, 0, 0], &[]);
        q[..2].copy_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&u16::try_from(q.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&q);
    }
    c.write_all(&out).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let len = tokio::time::timeout(Duration::from_secs(3), c.read_u16())
            .await
            .expect("an answer in time")
            .expect("an answer, not a reset");
        let mut r = vec![0; usize::from(len)];
        c.read_exact(&mut r).await.unwrap();
        assert_eq!(header_rcode(&r), 5, "REFUSED");
        ids.push(u16::from_be_bytes([r[0], r[1]]));
    }
    assert_eq!(ids, [0x1111, 0x2222, 0x3333]);
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut rest)).await;
    assert!(
        matches!(end, Ok(Ok(0))),
        "an orderly close after the answers: {end:?}"
    );
}

/// A name that is not allowed but has allowed names below it (the root, `internal` above
/// `corp.internal`, `example` above `www.example`) gets NODATA with the SOA, not NXDOMAIN: an
/// NXDOMAIN says nothing exists below the name (RFC 8020), and a downstream cache taking it at
/// its word would hide the allowed names. Other denied names are still NXDOMAIN, and both
/// carry EDE 15 (Blocked).
#[tokio::test]
async fn a_denied_parent_of_allowed_names_is_nodata_not_nxdomain() {
    let s = TestServer::start(None, WIRE).await;
    for (name, rcode) in [
        (".", ResponseCode::NoError),
        ("internal", ResponseCode::NoError),
        ("example", ResponseCode::NoError),
        ("other.example", ResponseCode::NXDomain),
        ("com", ResponseCode::NXDomain),
        ("pastebin.com", ResponseCode::NXDomain),
    ] {
        let m = udp_query(s.udp, MEMBER, name, RecordType::NS).await;
        assert_eq!(m.metadata.response_code, rcode, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        assert!(
            m.authorities
                .iter()
                .any(|r| r.record_type() == RecordType::SOA),
            "{name}: a negative answer with its SOA"
        );
    }
}

/// A local answer too big for any DNS message (5,000 A records, 300 long TXT records): over
/// TCP the client gets the whole records that fit in 64 KiB with TC, a message that decodes to
/// its end, with or without EDNS and a cookie. Before, hickory's encoder stopped mid-record
/// past 64 KiB: 11 stray bytes after the last record without EDNS, a partial TXT record before
/// the OPT record with it (dnspython: `TrailingJunk`, `FormError`), and with a cookie the
/// question alone with TC, which over TCP leaves the client nothing to retry on.
#[tokio::test]
async fn a_local_answer_past_64_kib_is_cut_on_a_record_boundary() {
    let mut zone = String::from("$ORIGIN big.internal.\n$TTL 300\n@ IN SOA ns hm 1 2 3 4 60\n");
    for i in 0..5000u32 {
        zone.push_str(&format!(
            "huge IN A 10.{}.{}.{}\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    let long = "x".repeat(250);
    for i in 0..300 {
        zone.push_str(&format!("bigtxt IN TXT \"{long}\" \"{i}\"\n"));
    }
    let group = r#"
[[groups]]
name = "big"
cidrs = ["127.0.0.63/32"]
allow = ["*.big.internal"]
"#;
    let s = TestServer::start_with_zones(None, group, &[("big.internal.zone", &zone)]).await;
    for (qname, qtype) in [
        ("huge.big.internal", RecordType::A),
        ("bigtxt.big.internal", RecordType::TXT),
    ] {
        for (how, packet) in [
            ("no EDNS", query_packet(qname, qtype, false)),
            ("EDNS", query_packet(qname, qtype, true)),
            (
                "EDNS and a cookie",
                with_cookie(query_packet(qname, qtype, false), [7; 8], None),
            ),
        ] {
            let raw = tcp_raw(s.udp, "127.0.0.63", &packet)
                .await
                .unwrap_or_else(|| panic!("{qname} {how}: no answer"));
            let m = hickory_proto::op::Message::from_vec(&raw).unwrap_or_else(|e| {
                panic!("{qname} {how}: {} bytes do not decode: {e}", raw.len())
            });
            assert!(m.metadata.truncation, "{qname} {how}: TC");
            assert!(
                m.answers.len() > 100,
                "{qname} {how}: the records that fit, not the question alone: {}",
                m.answers.len()
            );
            assert!(
                m.answers.iter().all(|r| r.record_type() == qtype),
                "{qname} {how}"
            );
            assert_eq!(
                records_end(&raw),
                Some(raw.len()),
                "{qname} {how}: the counted records end where the message does"
            );
            assert_eq!(m.edns.is_some(), how != "no EDNS", "{qname} {how}");
        }
    }
}

/// Where the records a message's header counts end, walked by hand (hickory's decoder does not
/// mind bytes after them); `None` when a record runs past the end.
fn records_end(raw: &[u8]) -> Option<usize> {
    let count = |i: usize| usize::from(u16::from_be_bytes([raw[i], raw[i + 1]]));
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *raw.get(at)?;
            if len == 0 {
                return Some(at + 1);
            }
            if len & 0xC0 == 0xC0 {
                return Some(at + 2);
            }
            at += 1 + usize::from(len);
        }
    };
    let mut at = 12;
    for _ in 0..count(4) {
        at = skip_name(at)? + 4;
    }
    for _ in 0..count(6) + count(8) + count(10) {
        at = skip_name(at)? + 8;
        let rdlen = usize::from(u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]));
        at += 2 + rdlen;
        if at > raw.len() {
            return None;
        }
    }
    Some(at)
}
