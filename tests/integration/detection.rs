//! Tunnel detection and containment through a running dnsward, with emulated tunnel tools and a
//! benign corpus. Time is driven by a manual clock so each tool runs at its real pace.

use std::time::Duration;

use dnsward::clock::ManualClock;
use dnsward::detect::testgen::{self, Traffic};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::*;

fn group(name: &str, cidr: &str, monitor_only: bool) -> String {
    format!(
        r#"
[[groups]]
name = "{name}"
cidrs = ["{cidr}"]
mode = "denylist"
[groups.detect]
monitor_only = {monitor_only}
"#
    )
}

struct RunReport {
    queries_until_contained: Option<usize>,
    bytes_until_contained: usize,
    events: Vec<serde_json::Value>,
}

/// Replays `traffic` from `src` and reports when answers stopped being the upstream's.
async fn replay(traffic: &Traffic, src: &str, monitor_only: bool) -> RunReport {
    let up = FakeUpstream::new().start().await; // NXDOMAIN for everything, like a tunnel server's idle answers
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("tunnel", &format!("{src}/32"), monitor_only),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let mut contained = None;
    let mut bytes = 0;
    for (i, q) in traffic.queries.iter().enumerate() {
        let packet = raw_name_query(&q.qname, q.qtype);
        let raw = udp_raw(s.udp, src.parse().unwrap(), &packet)
            .await
            .expect("an answer");
        let m = Message::from_vec(&raw).unwrap();
        if contained.is_none() {
            if m.metadata.response_code == ResponseCode::NXDomain {
                bytes += q.payload;
            } else {
                contained = Some(i + 1);
            }
        }
        clock.advance(traffic.interval);
    }
    let events = s.stop_and_read_events().await;
    RunReport {
        queries_until_contained: contained,
        bytes_until_contained: bytes,
        events,
    }
}

fn count(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

async fn assert_contained(traffic: Traffic, src: &str, within: usize) {
    let r = replay(&traffic, src, false).await;
    eprintln!(
        "{:<28} contained after {:?} queries, {} payload bytes; {} alerts, {} containments",
        traffic.tool,
        r.queries_until_contained,
        r.bytes_until_contained,
        count(&r.events, "alert"),
        count(&r.events, "containment_started"),
    );
    let n = r
        .queries_until_contained
        .unwrap_or_else(|| panic!("{} never contained", traffic.tool));
    assert!(
        n <= within,
        "{} took {n} queries (limit {within})",
        traffic.tool
    );
    let alert = r
        .events
        .iter()
        .find(|e| e["kind"] == "alert")
        .expect("an alert event");
    assert_eq!(alert["client"], src);
    assert_eq!(alert["group"], "tunnel");
    assert!(alert["score"].as_u64().unwrap() >= 60);
    assert!(!alert["breakdown"].as_object().unwrap().is_empty());
    assert!(!alert["samples"].as_array().unwrap().is_empty());
    let started = r
        .events
        .iter()
        .find(|e| e["kind"] == "containment_started")
        .expect("containment event");
    assert_eq!(started["client"], src);
    assert!(started["until"].is_string());
    assert!(
        r.events.iter().any(|e| e["kind"] == "query"
            && ["throttle", "sinkhole", "quarantine"]
                .contains(&e["verdict"].as_str().unwrap_or(""))),
        "contained queries are logged with their verdict"
    );
}

#[tokio::test]
async fn iodine_base32_over_null_is_contained() {
    assert_contained(
        testgen::iodine_base32("tun.example", 200, 1),
        "127.0.0.61",
        40,
    )
    .await;
}

#[tokio::test]
async fn iodine_base128_over_null_is_contained() {
    assert_contained(
        testgen::iodine_base128("tun.example", 200, 2),
        "127.0.0.62",
        40,
    )
    .await;
}

#[tokio::test]
async fn dns2tcp_over_txt_and_key_is_contained() {
    assert_contained(
        testgen::dns2tcp("tun.example", 200, false, 3),
        "127.0.0.63",
        40,
    )
    .await;
    assert_contained(
        testgen::dns2tcp("tun.example", 200, true, 4),
        "127.0.0.64",
        40,
    )
    .await;
}

#[tokio::test]
async fn dnscat2_hex_is_contained() {
    assert_contained(testgen::dnscat2("tun.example", 200, 5), "127.0.0.65", 40).await;
}

#[tokio::test]
async fn base64url_exfiltration_is_contained() {
    assert_contained(
        testgen::base64url_exfil("tun.example", 200, 6),
        "127.0.0.66",
        40,
    )
    .await;
}

#[tokio::test]
async fn a_slow_drip_is_noticed_and_throttled() {
    let traffic = testgen::slow_drip("tun.example", 150, 7);
    assert_contained(traffic, "127.0.0.67", 150).await;
}

#[tokio::test]
async fn monitor_only_alerts_but_never_acts() {
    let traffic = testgen::dns2tcp("tun.example", 120, false, 8);
    let r = replay(&traffic, "127.0.0.68", true).await;
    assert_eq!(
        r.queries_until_contained, None,
        "monitor-only never changes an answer"
    );
    let alert = r
        .events
        .iter()
        .find(|e| e["kind"] == "alert")
        .expect("still alerts");
    assert_eq!(alert["monitor_only"], true);
    assert_eq!(alert["action"], "none");
    assert_eq!(count(&r.events, "containment_started"), 0);
}

#[tokio::test]
async fn a_benign_corpus_from_many_clients_raises_no_alert() {
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/benign_names.txt"
    ))
    .unwrap();
    let names: Vec<(String, u16)> = corpus
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_string();
            let qtype = match f.next().unwrap_or("A") {
                "AAAA" => 28,
                "TXT" => 16,
                "MX" => 15,
                "PTR" => 12,
                "SRV" => 33,
                "CNAME" => 5,
                "HTTPS" => 65,
                _ => 1,
            };
            Some((name, qtype))
        })
        .collect();
    assert!(names.len() >= 5000);
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 7])
        .start()
        .await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("fleet", "127.0.1.0/24", false),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    // 20 agents taking turns, ~20 queries a second in all: five minutes of a busy fleet.
    for (i, (name, qtype)) in names.iter().enumerate() {
        let src = format!("127.0.1.{}", 10 + i % 20);
        let packet = raw_name_query(name, *qtype);
        let raw = udp_raw(s.udp, src.parse().unwrap(), &packet)
            .await
            .expect("an answer");
        let m = Message::from_vec(&raw).unwrap();
        assert_ne!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "{name} refused"
        );
        clock.advance(Duration::from_millis(50));
    }
    let events = s.stop_and_read_events().await;
    let alerts: Vec<_> = events.iter().filter(|e| e["kind"] == "alert").collect();
    assert!(alerts.is_empty(), "false positives: {alerts:#?}");
    assert_eq!(count(&events, "containment_started"), 0);
    eprintln!(
        "benign corpus: {} names from 20 clients, 0 alerts",
        names.len()
    );
}

/// A tunnel that moves its data downstream in addresses: the agent polls one name whose
/// answers (TTL 0) are eight AAAA records never given before, so no query name carries
/// anything new. It is contained on the addresses alone; a poller of an unchanged AAAA set
/// (TTL 0 too), polling as often from another address, is not.
#[tokio::test]
async fn a_tunnel_in_fresh_aaaa_answers_is_contained_and_a_stable_poller_is_not() {
    let up = FakeUpstream::new()
        .with_fresh_aaaa("cmd.dl.example", 8)
        .with_aaaa("lb.stable.example", "2001:db8:7::1".parse().unwrap(), 0)
        .with_aaaa("lb.stable.example", "2001:db8:7::2".parse().unwrap(), 0)
        .start()
        .await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &(group("tunnel", "127.0.0.70/32", false) + &group("poller", "127.0.0.71/32", false)),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let upstream_answer = |m: &Message| {
        !m.answers.is_empty()
            && m.answers.iter().all(|r| match &r.data {
                hickory_proto::rr::RData::AAAA(a) => a.0.segments()[..2] == [0x2001, 0x0db8],
                _ => false,
            })
    };
    let (mut contained, mut moved) = (None, 0usize);
    for poll in 0..900usize {
        let m = udp_query(s.udp, "127.0.0.70", "cmd.dl.example", RecordType::AAAA).await;
        if contained.is_none() {
            if upstream_answer(&m) {
                moved += 16 * m.answers.len();
            } else {
                contained = Some(poll);
            }
        }
        let m = udp_query(s.udp, "127.0.0.71", "lb.stable.example", RecordType::AAAA).await;
        assert!(upstream_answer(&m), "the stable poller was answered {m:?}");
        clock.advance(Duration::from_secs(1));
    }
    let events = s.stop_and_read_events().await;
    let poll =
        contained.unwrap_or_else(|| panic!("never contained after {moved} bytes in addresses"));
    eprintln!("fresh-AAAA tunnel contained at poll {poll}, after {moved} bytes in addresses");
    assert!(moved <= 16 * 1024, "{moved} bytes moved before containment");
    let alert = events
        .iter()
        .find(|e| e["kind"] == "alert" && e["client"] == "127.0.0.70")
        .expect("an alert for the tunnel");
    assert_eq!(alert["domain"], "dl.example");
    assert!(
        alert["volume"]["answer_bytes"].as_u64().unwrap_or(0) > 0,
        "the alert says the evidence is in answers: {alert:#}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "alert" && e["client"] == "127.0.0.71"),
        "the stable poller alerted"
    );
}

/// A download in PTR answers under a reverse zone the attacker's server holds: the agent polls
/// one reverse name whose answers (TTL 0) are fresh 200-byte host names. Priced by what is new
/// in the targets, it is contained within ~16 KB; these answers counted nothing before, and
/// 487 KB came down in 15 minutes with no alert.
#[tokio::test]
async fn a_download_in_reverse_ptr_answers_is_contained() {
    let src = "127.0.0.74";
    let up = FakeUpstream::new()
        .with_fresh_ptr("66.55.in-addr.arpa")
        .start()
        .await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("rdns", &format!("{src}/32"), false),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let (mut contained, mut moved) = (None, 0usize);
    for poll in 0..600usize {
        let m = udp_query(s.udp, src, "9.77.66.55.in-addr.arpa", RecordType::PTR).await;
        let fresh = m.answers.iter().any(|r| {
            matches!(&r.data, hickory_proto::rr::RData::PTR(p) if p.0.to_ascii().contains("rdns-exfil"))
        });
        if !fresh {
            contained = Some(poll);
            break;
        }
        moved += 200;
        clock.advance(Duration::from_millis(250));
    }
    // Contained where the evidence was scored, the /16's reverse zone: another /16 under the
    // same first octet is still the upstream's to answer (it used to be the whole
    // `55.in-addr.arpa`, a /8, for one network's evidence).
    for _ in 0..3 {
        let m = udp_query(s.udp, src, "4.3.77.55.in-addr.arpa", RecordType::PTR).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
        assert!(ede_of(&m).is_none(), "{m:?}");
        let m = udp_query(s.udp, src, "8.77.66.55.in-addr.arpa", RecordType::PTR).await;
        assert!(
            m.metadata.response_code == ResponseCode::Refused || ede_of(&m).is_some(),
            "the /16 itself stays contained: {m:?}"
        );
    }
    let events = s.stop_and_read_events().await;
    let poll =
        contained.unwrap_or_else(|| panic!("never contained after {moved} bytes in PTR names"));
    eprintln!("PTR download contained at poll {poll}, after {moved} bytes");
    let started = events
        .iter()
        .find(|e| e["kind"] == "containment_started" && e["client"] == src)
        .expect("a containment");
    assert_eq!(started["domain"], "66.55.in-addr.arpa", "{started:#}");
    assert!(moved <= 24 * 1024, "{moved} bytes moved before containment");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "alert" && e["client"] == src),
        "an alert for the agent"
    );
}

/// Encoded names sent in a class dnsward refuses (CHAOS, here) go nowhere, but the agent
/// sending them is trying to tunnel: they are scored like any other, alerted, and contain the
/// agent, whose next IN query to the same domain is no longer the upstream's answer.
#[tokio::test]
async fn a_tunnel_attempt_in_a_refused_class_is_scored_and_contained() {
    let src = "127.0.0.73";
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 9])
        .start()
        .await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("tunnel", &format!("{src}/32"), false),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let traffic = testgen::iodine_base32("tun.example", 60, 11);
    for q in &traffic.queries {
        let mut packet = raw_name_query(&q.qname, 16);
        let n = packet.len();
        packet[n - 2..].copy_from_slice(&3u16.to_be_bytes()); // class CH
        let raw = udp_raw(s.udp, src.parse().unwrap(), &packet)
            .await
            .expect("an answer");
        let rcode = raw[3] & 0x0f;
        assert!(rcode == 5, "a CHAOS query got rcode {rcode}, not REFUSED");
        clock.advance(traffic.interval);
    }
    assert_eq!(up.queries(), 0, "nothing in a refused class went upstream");
    let m = udp_query(s.udp, src, "www.tun.example", RecordType::A).await;
    assert!(
        a_records(&m) != ["192.0.2.9"],
        "the agent was not contained: {m:?}"
    );
    let events = s.stop_and_read_events().await;
    let alert = events
        .iter()
        .find(|e| e["kind"] == "alert" && e["client"] == src)
        .expect("an alert for the attempt");
    assert_eq!(alert["domain"], "tun.example");
    assert!(count(&events, "containment_started") >= 1);
}

/// A service registry's SRV answers (60 services, five instances each named by a random ID)
/// asked by one agent in a burst, in enforce mode with the default thresholds: every answer
/// comes through and nothing is contained. Priced as carrier bytes, the first nine answers
/// sinkholed the domain.
#[tokio::test]
async fn a_burst_of_service_discovery_srv_answers_is_not_contained() {
    let mut up = FakeUpstream::new();
    let mut rng = 0x5e57_1ce5_u64;
    let zone = "service.dc1.sd.corp-example.com";
    for svc in 0..60 {
        let targets: Vec<(String, u16)> = (0..5)
            .map(|k| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (
                    format!("i-0{rng:016x}.node.dc1.sd.corp-example.com"),
                    20_000 + svc * 5 + k,
                )
            })
            .collect();
        up = up.with_srv(&format!("_http._tcp.svc-{svc}.{zone}"), &targets);
    }
    let up = up.start().await;
    let clock = ManualClock::new();
    let src = "127.0.0.71";
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("registry", &format!("{src}/32"), false),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    for svc in 0..60 {
        let m = udp_query(
            s.udp,
            src,
            &format!("_http._tcp.svc-{svc}.{zone}"),
            RecordType::SRV,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "svc-{svc}");
        assert_eq!(
            m.answers.len(),
            5,
            "svc-{svc}: the registry's answer, not a sinkhole's"
        );
        clock.advance(Duration::from_millis(20));
    }
    let events = s.stop_and_read_events().await;
    assert_eq!(count(&events, "containment_started"), 0);
    assert_eq!(count(&events, "alert"), 0);
}

/// A contained agent cannot launder a tunnel's names for a clean one. Agent A tunnels until
/// it is sinkholed; then, for every chunk, A asks the name first (and gets the sinkhole, so the
/// name goes nowhere) and B asks it next. The names used to count as "asked by another client"
/// for B, so B moved 27 KB unseen in an independent run. Now a name whose query went to no
/// upstream is nobody's to B, and B is contained on its own evidence within a few KB. The same
/// holds when A asks each name in class CH (refused before the containment gate, so it never
/// reached it: a second look found that way around the first fix).
#[tokio::test]
async fn a_contained_agent_cannot_launder_names_for_a_clean_one() {
    for class_ch in [false, true] {
        launder(class_ch).await;
    }
}

async fn launder(class_ch: bool) {
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("tunnel", "127.0.0.144/31", false),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let (a, b) = ("127.0.0.144", "127.0.0.145");
    let t = testgen::exfil(
        testgen::Encoding::Base32,
        &["launder-example.com"],
        64 * 1024,
        0,
        Duration::from_millis(200),
        44,
    );
    let ask = |src: &'static str, qname: String, qtype, ch: bool| {
        let server = s.udp;
        async move {
            let mut packet = raw_name_query(&qname, qtype);
            if ch {
                // The question's class, the packet's last two bytes (no OPT record).
                let n = packet.len();
                packet[n - 2..].copy_from_slice(&3u16.to_be_bytes());
            }
            let raw = udp_raw(server, src.parse().unwrap(), &packet)
                .await
                .expect("an answer");
            Message::from_vec(&raw).unwrap().metadata.response_code
        }
    };
    let mut queries = t.queries.iter();
    // A on its own until it is contained.
    let mut contained_a = false;
    for q in queries.by_ref().take(200) {
        contained_a = ask(a, q.qname.clone(), q.qtype, false).await != ResponseCode::NXDomain;
        clock.advance(t.interval);
        if contained_a {
            break;
        }
    }
    assert!(contained_a, "A is contained on its own");
    // Then A asks each name first, B next.
    let (mut through, mut b_contained) = (0usize, false);
    for q in queries {
        let _ = ask(a, q.qname.clone(), q.qtype, class_ch).await;
        if ask(b, q.qname.clone(), q.qtype, false).await != ResponseCode::NXDomain {
            b_contained = true;
            break;
        }
        through += q.payload;
        clock.advance(t.interval);
    }
    let events = s.stop_and_read_events().await;
    eprintln!(
        "laundered through B (A in class CH: {class_ch}) before it was contained: {through} B"
    );
    assert!(b_contained && through <= 4096, "{through} B through B");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "containment_started" && e["client"] == b),
        "B's containment is an event of its own"
    );
}
