//! Information-volume detection through a running dnsward: tunnels whose names look like words,
//! CDN hashes or reverse lookups, slow drips, tunnels spread over domains, own-evidence-only
//! containment, and a day of benign traffic from 40 agents; a downstream tunnel in TXT answers
//! hopping over domains (when each is contained, and before each has given it 1 KB), and a
//! many-domain SPF/DMARC/DKIM sweep. Time is a manual clock; the fake
//! upstream answers NXDOMAIN for every name it was not given, as a tunnel server's idle answers,
//! so an NXDOMAIN answer means "forwarded upstream" and anything else means "contained".

use std::collections::BTreeMap;
use std::time::Duration;

use dnsward::clock::{Clock, ManualClock};
use dnsward::detect::testgen::{self, Encoding, Traffic};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use std::sync::Arc;

use crate::harness::*;

fn group(name: &str, cidr: &str) -> String {
    format!(
        r#"
[[groups]]
name = "{name}"
cidrs = ["{cidr}"]
mode = "denylist"
"#
    )
}

/// What a replay saw.
#[derive(Debug, Default)]
struct Leak {
    /// Payload bytes of queries answered by the upstream (forwarded).
    forwarded: usize,
    /// Queries sent.
    sent: usize,
    /// Index of the first query not forwarded.
    contained_at: Option<usize>,
}

/// Sends `t` from `src` (the clock advancing by its interval), stopping once 60 queries in a
/// row were contained: by then the sinkhole or quarantine is in force for far longer than the
/// rest would take.
async fn replay(s: &TestServer, clock: &ManualClock, src: &str, t: &Traffic) -> Leak {
    replay_rotating(s, clock, &[src.to_string()], t).await
}

async fn server(cidr: &str, upstream: &RunningUpstream, clock: &Arc<ManualClock>) -> TestServer {
    TestServer::start_with(
        Some(upstream.addr),
        &group("agents", cidr),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await
}

#[tokio::test]
async fn every_encoding_at_burst_speed_is_contained_within_4_kb() {
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let mut s = server("127.0.2.0/24", &up, &clock).await;
    let mut report = Vec::new();
    for (i, e) in Encoding::ALL.into_iter().enumerate() {
        // Each encoding from its own agent to its own domain, 20 queries a second.
        let domain = format!("exfil-{i}.example.com");
        let t = testgen::exfil(
            e,
            &[&domain],
            16 * 1024,
            0,
            Duration::from_millis(50),
            40 + i as u64,
        );
        let src = format!("127.0.2.{}", 10 + i);
        let leak = replay(&s, &clock, &src, &t).await;
        eprintln!(
            "{:24} {:5} B forwarded of 16 KB, contained at query {:?} of {}",
            e.name(),
            leak.forwarded,
            leak.contained_at,
            t.queries.len()
        );
        report.push((e.name(), leak));
    }
    let events = s.stop_and_read_events().await;
    for (name, leak) in &report {
        assert!(leak.contained_at.is_some(), "{name} never contained");
        assert!(
            leak.forwarded <= 4096,
            "{name}: {} B forwarded",
            leak.forwarded
        );
    }
    // Every alert explains its volume: whose, which window, how many bytes and names.
    let alerts: Vec<_> = events.iter().filter(|e| e["kind"] == "alert").collect();
    assert!(alerts.len() >= Encoding::ALL.len());
    for a in alerts {
        let v = &a["volume"];
        assert!(
            ["client_domain", "client"].contains(&v["scope"].as_str().unwrap_or("")),
            "{a}"
        );
        assert!(["short", "window", "long"].contains(&v["window"].as_str().unwrap_or("")));
        assert!(v["novel_bytes"].as_u64().unwrap() > 0 && v["novel_names"].as_u64().unwrap() > 0);
        assert!(v["window_secs"].as_u64().unwrap() > 0 && v["budget_bytes"].as_u64().unwrap() > 0);
    }
}

#[tokio::test]
async fn a_one_byte_a_second_word_like_drip_is_alerted_within_ten_minutes() {
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let s = server("127.0.3.0/24", &up, &clock).await;
    let src = "127.0.3.10";
    // 12 bytes every 12 s: 1 B/s, for up to 4 KB.
    let t = testgen::exfil(
        Encoding::WordLike,
        &["drip.example.com"],
        4096,
        12,
        Duration::from_secs(12),
        50,
    );
    let first_ten_minutes = Traffic {
        queries: t.queries[..50].to_vec(),
        ..t.clone()
    };
    let early = replay(&s, &clock, src, &first_ten_minutes).await;
    let api = reqwest::Client::new();
    let alerts: serde_json::Value = api
        .get(format!(
            "http://{}/api/v1/alerts?client={src}",
            s.admin.unwrap()
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = alerts.as_array().map_or(0, Vec::len);
    eprintln!("drip: {n} alerts after 600 s and {} B", early.forwarded);
    assert!(n >= 1, "no alert within 10 minutes: {alerts}");
    let rest = Traffic {
        queries: t.queries[50..].to_vec(),
        ..t
    };
    let late = if early.contained_at.is_some() {
        Leak::default()
    } else {
        replay(&s, &clock, src, &rest).await
    };
    let total = early.forwarded + late.forwarded;
    eprintln!("drip: contained after {total} B");
    assert!(
        early.contained_at.is_some() || late.contained_at.is_some(),
        "never contained"
    );
    assert!(total < 4096, "{total} B forwarded");
}

#[tokio::test]
async fn a_tunnel_spread_over_five_domains_is_contained() {
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let s = server("127.0.4.0/24", &up, &clock).await;
    let domains = [
        "exfil-a.com",
        "exfil-b.net",
        "exfil-c.org",
        "exfil-d.io",
        "exfil-e.biz",
    ];
    let t = testgen::exfil(
        Encoding::WordLike,
        &domains,
        16 * 1024,
        0,
        Duration::from_millis(50),
        51,
    );
    let leak = replay(&s, &clock, "127.0.4.10", &t).await;
    eprintln!("word-like over 5 domains: {} B forwarded", leak.forwarded);
    assert!(leak.forwarded <= 4096, "{} B", leak.forwarded);
}

#[tokio::test]
async fn one_clients_tunnel_never_contains_another_client() {
    let up = FakeUpstream::new()
        .with_a("www.shared-example.com", [192, 0, 2, 80], 0)
        .start()
        .await;
    let clock = ManualClock::new();
    let mut s = server("127.0.5.0/24", &up, &clock).await;
    let t = testgen::exfil(
        Encoding::Base32,
        &["shared-example.com"],
        8 * 1024,
        0,
        Duration::from_millis(50),
        52,
    );
    let (tunnel, innocent) = ("127.0.5.10", "127.0.5.11");
    for q in &t.queries {
        let packet = raw_name_query(&q.qname, q.qtype);
        udp_raw(s.udp, tunnel.parse().unwrap(), &packet)
            .await
            .expect("an answer");
        let m = udp_query(s.udp, innocent, "www.shared-example.com", RecordType::A).await;
        assert_eq!(
            a_records(&m),
            ["192.0.2.80"],
            "the innocent client gets its answer"
        );
        clock.advance(t.interval);
    }
    let events = s.stop_and_read_events().await;
    let contained: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "containment_started")
        .collect();
    assert!(
        contained.iter().any(|e| e["client"] == tunnel),
        "the tunnel is contained"
    );
    assert!(
        contained.iter().all(|e| e["client"] == tunnel),
        "{contained:?}"
    );
}

#[tokio::test]
async fn domainkey_and_delegated_reverse_zone_tunnels_are_contained() {
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let s = server("127.0.6.0/24", &up, &clock).await;
    for (i, t) in [
        testgen::domainkey_exfil("mail-example.com", 16 * 1024, 53),
        testgen::reverse_zone_exfil("7.10.in-addr.arpa", 16 * 1024, 54),
    ]
    .iter()
    .enumerate()
    {
        let leak = replay(&s, &clock, &format!("127.0.6.{}", 10 + i), t).await;
        eprintln!("{:40} {} B forwarded", t.tool, leak.forwarded);
        assert!(leak.contained_at.is_some(), "{} never contained", t.tool);
        assert!(leak.forwarded <= 4096, "{}: {} B", t.tool, leak.forwarded);
    }
}

/// The benign classes of `testgen::benign_fleet` (content caches with hashed names, DNSBL and
/// DKIM/SPF lookups, AV reputation hashes, telemetry IDs, cloud API job hosts, ACME, service
/// discovery, reverse DNS) from 40 agents, through the resolver, one hour of simulated time
/// (the 24-hour replay runs on the detector directly in `detect::tests`).
#[tokio::test]
async fn an_hour_of_benign_classes_from_forty_agents_raises_no_alert() {
    let up = FakeUpstream::new()
        .answering_everything([192, 0, 2, 9])
        .start()
        .await;
    let clock = ManualClock::new();
    let mut s = server("127.0.7.0/24", &up, &clock).await;
    let traffic = testgen::benign_fleet(40, 1, 77);
    let start = clock.now();
    let mut per_class: BTreeMap<&str, usize> = BTreeMap::new();
    for q in &traffic {
        let at = start + Duration::from_secs(q.at);
        if at > clock.now() {
            clock.advance(at - clock.now());
        }
        let src = format!("127.0.7.{}", 10 + q.client);
        let raw = udp_raw(
            s.udp,
            src.parse().unwrap(),
            &raw_name_query(&q.qname, q.qtype),
        )
        .await
        .expect("an answer");
        let m = Message::from_vec(&raw).unwrap();
        assert_ne!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "{} refused",
            q.qname
        );
        *per_class.entry(q.class).or_default() += 1;
    }
    let events = s.stop_and_read_events().await;
    assert_quiet(
        &events,
        &format!("benign classes through the resolver: {per_class:?}"),
    );
}

/// One agent walking 500 sequentially numbered names of one domain within a minute (`host1 …
/// host500`, `img-001.cdn …`, `api-v2-<region>-<n>`), through the resolver: each name adds a
/// few bits beyond the one before (the information floor), so every one is forwarded (the
/// fake upstream's NXDOMAIN) and nothing is alerted. Then tunnels built to exploit the floor,
/// from other agents, are still contained.
#[tokio::test]
async fn sequential_names_pass_and_tunnels_exploiting_the_floor_are_contained() {
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let mut s = server("127.0.8.0/24", &up, &clock).await;
    for (i, shape) in [
        testgen::SequentialShape::Host,
        testgen::SequentialShape::CdnImage,
        testgen::SequentialShape::RegionEndpoint,
    ]
    .into_iter()
    .enumerate()
    {
        let src = format!("127.0.8.{}", 10 + i);
        let domain = format!("seq-{i}.example.com");
        for name in testgen::sequential_names(shape, &domain, 500) {
            let raw = udp_raw(s.udp, src.parse().unwrap(), &raw_name_query(&name, 1))
                .await
                .expect("an answer");
            let m = Message::from_vec(&raw).unwrap();
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NXDomain,
                "{name} ({shape:?}) not forwarded"
            );
            clock.advance(Duration::from_millis(120));
        }
    }
    let mut leaks = Vec::new();
    for (i, t) in testgen::floor_exploits("floor-exfil.example.com", 81)
        .into_iter()
        .enumerate()
    {
        let src = format!("127.0.8.{}", 20 + i);
        let leak = replay(&s, &clock, &src, &t).await;
        eprintln!(
            "{:40} {:5} B forwarded of 16 KB, contained at query {:?}",
            t.tool, leak.forwarded, leak.contained_at
        );
        leaks.push((t.tool, leak));
    }
    let events = s.stop_and_read_events().await;
    let alerts: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["domain"].as_str().unwrap_or("").starts_with("seq-"))
        .collect();
    assert!(alerts.is_empty(), "sequential names alerted: {alerts:#?}");
    for (tool, leak) in &leaks {
        assert!(leak.contained_at.is_some(), "{tool} never contained");
        assert!(
            leak.forwarded <= 4096,
            "{tool}: {} B forwarded",
            leak.forwarded
        );
    }
}

/// Sends `t` round-robin from `sources` of one group (the clock advancing by its interval):
/// one tunnel whose data is split over several source addresses. Stops once 60 queries in a
/// row were contained (every source contained).
async fn replay_rotating(
    s: &TestServer,
    clock: &ManualClock,
    sources: &[String],
    t: &Traffic,
) -> Leak {
    let mut leak = Leak::default();
    let mut contained_in_a_row = 0;
    for (i, q) in t.queries.iter().enumerate() {
        let src = &sources[i % sources.len()];
        let packet = raw_name_query(&q.qname, q.qtype);
        let raw = udp_raw(s.udp, src.parse().unwrap(), &packet)
            .await
            .expect("an answer");
        let m = Message::from_vec(&raw).unwrap();
        leak.sent += 1;
        if m.metadata.response_code == ResponseCode::NXDomain {
            leak.forwarded += q.payload;
            contained_in_a_row = 0;
        } else {
            leak.contained_at.get_or_insert(i + 1);
            contained_in_a_row += 1;
            if contained_in_a_row >= 60 {
                break;
            }
        }
        clock.advance(t.interval);
    }
    leak
}

/// One tunnel's data split over eight source addresses of the group, each sending what one
/// source alone is contained for (1 B/s): the sources asking the same domain must not make it
/// look prevalent (a popular domain's clients ask the same names; these share none), so each
/// source's own evidence contains it about as soon as it would alone.
#[tokio::test]
async fn a_tunnel_rotated_over_eight_sources_is_contained() {
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let s = server("127.0.6.0/24", &up, &clock).await;
    let sources: Vec<String> = (10..18).map(|i| format!("127.0.6.{i}")).collect();
    for encoding in [Encoding::Base32, Encoding::WordLike] {
        // 20 bytes a query, a query every 2.5 s over all sources: 1 B/s from each source.
        let t = testgen::exfil(
            encoding,
            &["rotate.example.com"],
            24 * 1024,
            20,
            Duration::from_millis(2500),
            61,
        );
        let leak = replay_rotating(&s, &clock, &sources, &t).await;
        eprintln!(
            "{encoding:?} over 8 sources: {} B forwarded of {} queries",
            leak.forwarded, leak.sent
        );
        assert!(leak.contained_at.is_some(), "{encoding:?}: never contained");
        assert!(
            leak.forwarded <= 8 * 1024,
            "{encoding:?}: {} B",
            leak.forwarded
        );
        // The next encoding from a fresh domain's point of view: far past every window.
        clock.advance(Duration::from_secs(6 * 3600));
    }
}

/// How a [`txt_upstream`] answers a TXT question for a name: its strings (each at most 255
/// bytes), or None for NXDOMAIN.
type TxtAnswer = Arc<dyn Fn(&str) -> Option<Vec<String>> + Send + Sync>;

/// A fake upstream answering TXT questions from a function of the name, over UDP when the
/// answer fits 1,232 bytes and otherwise truncated there, so the resolver asks again over
/// TCP, as from a real server.
struct TxtUpstream {
    addr: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TxtUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The answer of a [`TxtUpstream`] to `query`.
fn txt_reply(query: &[u8], udp: bool, answer: &TxtAnswer) -> Option<Vec<u8>> {
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{SOA, TXT};
    use hickory_proto::rr::{Name, RData, Record};
    let req = Message::from_vec(query).ok()?;
    let q = req.queries.first()?.clone();
    let owner = q.name().to_lowercase().to_ascii();
    let owner = owner.trim_end_matches('.');
    let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_desired = true;
    resp.metadata.recursion_available = true;
    resp.add_query(q.clone());
    match answer(owner).filter(|_| q.query_type() == RecordType::TXT) {
        Some(strings) => {
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::TXT(TXT::new(strings)),
            ));
        }
        None => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            let zone = Name::from_ascii("example.").ok()?;
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, 60);
            resp.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
        }
    }
    let out = resp.to_vec().ok()?;
    if udp && out.len() > 1232 {
        let mut tc = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
        tc.metadata.truncation = true;
        tc.metadata.recursion_available = true;
        tc.add_query(q);
        return tc.to_vec().ok();
    }
    Some(out)
}

async fn txt_upstream(answer: TxtAnswer) -> TxtUpstream {
    txt_upstream_at("127.0.0.1", answer).await
}

/// [`txt_upstream`] on loopback address `ip`, an ephemeral port.
async fn txt_upstream_at(ip: &str, answer: TxtAnswer) -> TxtUpstream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // UDP and TCP on one port: a free UDP port's TCP twin may be taken, so try a few.
    let (udp, tcp) = {
        let mut attempt = 0;
        loop {
            let udp = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
            match tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    let _ = e;
                }
                Err(e) => panic!("no port free for both UDP and TCP: {e}"),
            }
        }
    };
    let addr = udp.local_addr().unwrap();
    let a = Arc::clone(&answer);
    let t1 = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, src)) = udp.recv_from(&mut buf).await {
            if let Some(r) = txt_reply(&buf[..n], true, &a) {
                let _ = udp.send_to(&r, src).await;
            }
        }
    });
    let t2 = tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let a = Arc::clone(&answer);
            tokio::spawn(async move {
                while let Ok(len) = s.read_u16().await {
                    let mut buf = vec![0u8; usize::from(len)];
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let Some(r) = txt_reply(&buf, false, &a) else {
                        return;
                    };
                    let mut out = u16::try_from(r.len()).unwrap().to_be_bytes().to_vec();
                    out.extend_from_slice(&r);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    TxtUpstream {
        addr,
        tasks: vec![t1, t2],
    }
}

/// The TXT strings' bytes in an answer (0: nothing came through).
fn txt_bytes(m: &Message) -> usize {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::TXT(t) => {
                Some(t.txt_data.iter().map(|s| s.len()).sum::<usize>())
            }
            _ => None,
        })
        .sum()
}

/// One TXT query over TCP from `src` on `conn` (opened again when the server closed it); None
/// when no answer came.
async fn ask_txt_tcp(
    s: &TestServer,
    src: &str,
    conn: &mut Option<tokio::net::TcpStream>,
    qname: &str,
) -> Option<Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..2 {
        if conn.is_none() {
            *conn = Some(tcp_connect(s.tcp, src).await);
        }
        let stream = conn.as_mut()?;
        let packet = raw_name_query(qname, 16);
        let mut framed = u16::try_from(packet.len()).ok()?.to_be_bytes().to_vec();
        framed.extend_from_slice(&packet);
        let answer = async {
            stream.write_all(&framed).await.ok()?;
            let len = stream.read_u16().await.ok()?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.ok()?;
            Message::from_vec(&buf).ok()
        };
        match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Some(m)) => return Some(m),
            _ => *conn = None,
        }
    }
    None
}

/// A tunnel reading ~3.9 KB of fresh data from each TXT answer (fifteen 255-byte strings, over
/// TCP), four names a second, hopping to a new registrable domain each time its domain stops
/// answering (sinkholed or throttled), as an independent audit's did: that one read ~1 MB in
/// 60 s over 43 domains, each domain contained and the client never, since answer bytes did
/// not count client-wide. Now the client is contained across domains within 48 KB read: the
/// first query to each new domain gets nothing, and an alert says the evidence is the
/// client's.
#[tokio::test]
async fn a_domain_hopping_txt_tunnel_is_contained_client_wide_within_48_kb() {
    let rng = std::sync::Mutex::new(testgen::Prng::new(0x00d0_3b1e));
    let fresh: TxtAnswer = Arc::new(move |name: &str| {
        name.starts_with("x").then(|| {
            let mut r = rng.lock().unwrap();
            (0..15)
                .map(|_| {
                    (0..255)
                        .map(|_| char::from(b'a' + u8::try_from(r.below(26)).unwrap_or(0)))
                        .collect()
                })
                .collect()
        })
    });
    let up = txt_upstream(fresh).await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("agents", "127.0.0.160/28"),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let src = "127.0.0.160";
    let mut conn = None;
    let (mut read, mut hop, mut seq, mut fresh_domain) = (0usize, 0u32, 0u32, true);
    let mut contained = false;
    while read < 1 << 20 && seq < 2000 {
        seq += 1;
        let qname = format!("x{seq:x}.dl-{hop}.com");
        let m = ask_txt_tcp(&s, src, &mut conn, &qname)
            .await
            .expect("an answer");
        let got = txt_bytes(&m);
        if got > 0 {
            read += got;
            fresh_domain = false;
        } else if fresh_domain {
            contained = true;
            break;
        } else {
            hop += 1;
            fresh_domain = true;
        }
        clock.advance(Duration::from_millis(250));
    }
    eprintln!(
        "TXT tunnel hopping domains: read {read} B over {} domains in {seq} queries, contained \
         client-wide: {contained}",
        hop + 1
    );
    assert!(
        contained,
        "read {read} B over {} domains, never contained",
        hop + 1
    );
    assert!(read <= 48 * 1024, "{read} B read before containment");
    // Every new domain after that is contained too.
    for next in 1..=5 {
        let qname = format!("x1.dl-{}.com", hop + 100 + next);
        let m = ask_txt_tcp(&s, src, &mut conn, &qname)
            .await
            .expect("an answer");
        assert_eq!(txt_bytes(&m), 0, "{qname} answered");
        clock.advance(Duration::from_millis(250));
    }
    let events = s.stop_and_read_events().await;
    assert!(
        events.iter().any(|e| e["kind"] == "alert"
            && e["client"] == src
            && e["volume"]["scope"] == "client"
            && e["volume"]["answer_bytes"].as_u64().unwrap_or(0) > 0),
        "no client-wide alert on answer bytes"
    );
}

/// TXT strings of fresh random letters, `count` strings of `len` bytes, for every name that
/// starts with `x`: a downstream tunnel's server, every answer new data.
fn fresh_txt(count: usize, len: usize, seed: u64) -> TxtAnswer {
    let rng = std::sync::Mutex::new(testgen::Prng::new(seed));
    Arc::new(move |name: &str| {
        name.starts_with('x').then(|| {
            let mut r = rng.lock().unwrap();
            (0..count)
                .map(|_| {
                    (0..len)
                        .map(|_| char::from(b'a' + u8::try_from(r.below(26)).unwrap_or(0)))
                        .collect()
                })
                .collect()
        })
    })
}

/// A TXT tunnel that moves to a new registrable domain after every `per_domain` answers,
/// before any domain has given it what looking at a domain takes, four names a second from
/// `src`; over TCP when `tcp`, else UDP. Returns (bytes read before the client got no data
/// for a name, domains used, queries), or the bytes read when `limit` was reached first.
async fn hop_early(
    s: &TestServer,
    clock: &ManualClock,
    src: &str,
    per_domain: u32,
    tcp: bool,
    limit: usize,
) -> Result<(usize, u32, u32), usize> {
    let mut conn = None;
    let (mut read, mut seq) = (0usize, 0u32);
    while read < limit {
        let (domain, qname) = (seq / per_domain, format!("x{seq:x}"));
        let qname = format!("{qname}.hop-{domain}.com");
        seq += 1;
        let got = if tcp {
            ask_txt_tcp(s, src, &mut conn, &qname)
                .await
                .map_or(0, |m| txt_bytes(&m))
        } else {
            let packet = query_packet(&qname, RecordType::TXT, true);
            udp_raw(s.udp, src.parse().unwrap(), &packet)
                .await
                .and_then(|raw| Message::from_vec(&raw).ok())
                .map_or(0, |m| txt_bytes(&m))
        };
        if got == 0 {
            return Ok((read, domain + 1, seq));
        }
        read += got;
        clock.advance(Duration::from_millis(250));
    }
    Err(read)
}

/// A TXT tunnel hopping to a new registrable domain after every one or two answers, before
/// any domain has given it 1 KB (counted), paid client-wide a 64th of each answer's
/// discounted bytes: with 3.9 KB answers (over TCP), two a domain, the detector let it read
/// ~4.6 MB before it was sinkholed, and 1.2 MB of 600-byte answers (over UDP) hopping after
/// each. A domain no other client asks counts its answers' undiscounted size client-wide:
/// through the resolver both are contained within 1.25 MB, every new domain after that is
/// contained too, and the alert says the evidence is the client's answers.
#[tokio::test]
async fn a_txt_tunnel_hopping_before_each_domains_allowance_is_contained() {
    for (what, strings, len, per_domain, tcp, src) in [
        (
            "3.9 KB TXT over TCP, two a domain",
            15,
            255,
            2,
            true,
            "127.0.0.172",
        ),
        (
            "600 B TXT over UDP, one a domain",
            3,
            195,
            1,
            false,
            "127.0.0.173",
        ),
    ] {
        let up = txt_upstream_at("127.0.0.171", fresh_txt(strings, len, 0x0170)).await;
        let clock = ManualClock::new();
        let mut s = TestServer::start_with(
            Some(up.addr),
            &group("agents", "127.0.0.172/30"),
            Some(clock.clone()),
            "127.0.0.170:0",
        )
        .await;
        let got = hop_early(&s, &clock, src, per_domain, tcp, 4 << 20).await;
        eprintln!("{what}: {got:?} (bytes read, domains, queries)");
        let (read, domains, _) =
            got.unwrap_or_else(|read| panic!("{what}: read {read} B, never contained"));
        assert!(
            read <= 1280 * 1024,
            "{what}: {read} B over {domains} domains"
        );
        // Every new domain after that is contained too: the evidence is the client's.
        let mut conn = None;
        for next in 1..=3 {
            let qname = format!("x1.hop-{}.com", domains + 100 + next);
            let m = ask_txt_tcp(&s, src, &mut conn, &qname).await;
            assert_eq!(
                m.map_or(0, |m| txt_bytes(&m)),
                0,
                "{what}: {qname} answered"
            );
            clock.advance(Duration::from_millis(250));
        }
        let events = s.stop_and_read_events().await;
        assert!(
            events.iter().any(|e| e["kind"] == "alert"
                && e["client"] == src
                && e["volume"]["scope"] == "client"
                && e["volume"]["answer_bytes"].as_u64().unwrap_or(0) > 0
                && matches!(e["action"].as_str(), Some("sinkhole" | "quarantine"))),
            "{what}: no client-wide sinkhole alert on answer bytes"
        );
    }
}

/// The apex TXT (an SPF record and a verification token), DMARC and DKIM records of `name`'s
/// domain as a mail host reads them: 90–420, 80–140 and ~420 bytes, fixed per name.
fn mail_txt(name: &str) -> Option<Vec<String>> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
    let mut r = testgen::Prng::new(h);
    let mut token = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789+/"[r.below(38) as usize]))
            .collect()
    };
    if let Some(rua) = name.strip_prefix("_dmarc.") {
        Some(vec![format!(
            "v=DMARC1; p=quarantine; pct=100; rua=mailto:dmarc-reports@{rua}{}",
            " ".repeat(h as usize % 40)
        )])
    } else if name.starts_with("selector1._domainkey.") {
        Some(vec![
            format!("v=DKIM1; k=rsa; p={}", token(200)),
            token(192),
        ])
    } else {
        let mut strings = vec![format!(
            "v=spf1 include:_spf.google.com include:spf.protection.outlook.com ip4:198.51.100.{} ~all",
            h % 250
        )];
        if h % 3 == 0 {
            strings.push(format!("google-site-verification={}", token(43)));
        }
        if h % 5 == 0 {
            strings.push(format!("MS=ms{}", token(8)));
            strings.push(format!("atlassian-domain-verification={}", token(64)));
        }
        Some(strings)
    }
}

/// A mail host checking the mail authentication (SPF in the apex TXT, DMARC, DKIM) of 300
/// different ordinary domains in 15 minutes, ~600 bytes of TXT for each, is not contained and
/// raises no alert: each domain's first answers are what looking at a domain takes.
#[tokio::test]
async fn a_many_domain_spf_dmarc_dkim_sweep_is_not_contained() {
    let up = txt_upstream(Arc::new(mail_txt)).await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("agents", "127.0.0.160/28"),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let src = "127.0.0.161";
    let mut read = 0usize;
    for domain in testgen::ordinary_domains(300, 9) {
        for qname in [
            domain.clone(),
            format!("_dmarc.{domain}"),
            format!("selector1._domainkey.{domain}"),
        ] {
            let m = udp_query(s.udp, src, &qname, RecordType::TXT).await;
            let got = txt_bytes(&m);
            assert!(got > 0, "{qname}: {:?}", m.metadata.response_code);
            read += got;
            clock.advance(Duration::from_millis(300));
        }
        clock.advance(Duration::from_millis(2100));
    }
    let events = s.stop_and_read_events().await;
    assert_quiet(
        &events,
        &format!("SPF/DMARC/DKIM sweep of 300 domains: {read} B of TXT"),
    );
}

/// No alert and no containment among `events` (benign traffic); prints what ran and the count.
fn assert_quiet(events: &[serde_json::Value], what: &str) {
    let alerts: Vec<_> = events.iter().filter(|e| e["kind"] == "alert").collect();
    eprintln!("{what}, {} alerts", alerts.len());
    assert!(alerts.is_empty(), "{what}: false alerts: {alerts:#?}");
    assert!(!events.iter().any(|e| e["kind"] == "containment_started"));
}

/// A client asking a new `<63 base32 characters>.duckdns.org` each query (a public suffix of the
/// list's private section: every such name is a registrable domain of its own, with an empty
/// subdomain part) is contained through the resolver within 4 KB, while an agent asking the apex
/// and `www` of 300 different ordinary sites in three minutes raises no alert.
#[tokio::test]
async fn data_in_registrable_labels_is_contained_and_hundreds_of_sites_are_not() {
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("agents", "127.0.0.160/28"),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let browser = "127.0.0.163";
    for domain in testgen::ordinary_domains(300, 13) {
        for qname in [domain.clone(), format!("www.{domain}")] {
            let raw = udp_raw(s.udp, browser.parse().unwrap(), &raw_name_query(&qname, 1))
                .await
                .expect("an answer");
            let m = Message::from_vec(&raw).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{qname}");
        }
        clock.advance(Duration::from_millis(600));
    }
    let mut r = testgen::Prng::new(33);
    let queries = (0..400)
        .map(|_| {
            let label = Encoding::Base32.encode(&r.bytes(39)).replace('.', "");
            testgen::TunnelQuery {
                qname: format!("{}.duckdns.org", &label[..label.len().min(63)]),
                qtype: 1,
                payload: 39,
            }
        })
        .collect();
    let t = Traffic {
        tool: "data in labels under duckdns.org",
        queries,
        interval: Duration::from_millis(100),
    };
    let leak = replay(&s, &clock, "127.0.0.162", &t).await;
    eprintln!(
        "{}: {} B forwarded, contained at query {:?}",
        t.tool, leak.forwarded, leak.contained_at
    );
    let events = s.stop_and_read_events().await;
    assert!(leak.contained_at.is_some(), "never contained");
    assert!(leak.forwarded <= 4096, "{} B forwarded", leak.forwarded);
    let browsing: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["client"] == browser)
        .collect();
    assert!(browsing.is_empty(), "{browsing:#?}");
}

/// Bursts of hundreds of distinct, ordinary names of one service from one agent within
/// seconds (a cluster's nodes, every shard of a database, service discovery, a mail host
/// checking a provider's hosts, cloud hosts named by address; scrambled order, A and AAAA or
/// MX and A, each host its own address), through the resolver: every query gets the
/// upstream's answer, none is refused or sinkholed, and nothing is alerted. A tunnel writing its data in the order of such names, from another
/// agent of the same group, is still contained within 4 KB. Loopback 127.0.0.190–.209 only.
#[tokio::test]
async fn bursts_of_structured_names_are_answered_and_a_template_tunnel_is_contained() {
    use testgen::BurstShape;
    let bursts: Vec<_> = [
        (BurstShape::Nodes, 180, 1_000),
        (BurstShape::Shards, 500, 2_000),
        (BurstShape::Services, 180, 1_000),
        (BurstShape::MailHosts, 240, 5_000),
        (BurstShape::AddressHosts, 400, 2_000),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (shape, count, millis))| {
        let domain = format!("burst-{i}.example.com");
        let queries = testgen::structured_burst(shape, &domain, count, millis, 90 + i as u64);
        (shape, count, queries)
    })
    .collect();
    // Every host its own address, as a real fan-out's answers are (new addresses of the
    // domain count as downstream information): three documentation /24s in turn.
    let mut addresses = std::collections::HashMap::new();
    let mut upstream = FakeUpstream::new().answering_everything([192, 0, 2, 77]);
    for q in bursts.iter().flat_map(|b| &b.2) {
        if q.qtype == 1 && !addresses.contains_key(&q.qname) {
            let k = addresses.len();
            let net = [[192, 0, 2], [198, 51, 100], [203, 0, 113]][k / 250 % 3];
            let ip = [net[0], net[1], net[2], u8::try_from(k % 250 + 1).unwrap()];
            upstream = upstream.with_a(&q.qname, ip, 300);
            addresses.insert(q.qname.clone(), std::net::Ipv4Addr::from(ip).to_string());
        }
    }
    let up = upstream
        .start_at("127.0.0.191:0".parse().unwrap())
        .await
        .expect("upstream on 127.0.0.191");
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &group("agents", "127.0.0.192/29"),
        Some(clock.clone()),
        "127.0.0.190:0",
    )
    .await;
    for (i, (shape, count, queries)) in bursts.iter().enumerate() {
        let src = format!("127.0.0.{}", 192 + i);
        let start = clock.now();
        for q in queries {
            let at = start + Duration::from_millis(q.at);
            if at > clock.now() {
                clock.advance(at - clock.now());
            }
            let raw = udp_raw(
                s.udp,
                src.parse().unwrap(),
                &raw_name_query(&q.qname, q.qtype),
            )
            .await
            .expect("an answer");
            let m = Message::from_vec(&raw).unwrap();
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{} type {} ({shape:?} × {count}) not answered",
                q.qname,
                q.qtype
            );
            if q.qtype == 1 {
                assert_eq!(
                    a_records(&m),
                    [addresses[&q.qname].as_str()],
                    "{} ({shape:?})",
                    q.qname
                );
            }
        }
        // The next burst starts on a fresh minute, from its own agent.
        clock.advance(Duration::from_secs(61));
    }
    // A tunnel in the order of template names: forwarded while the upstream's address comes
    // back; contained at the first answer that is not it.
    let t = testgen::template_order_exploit("order-exfil.example.com", 91);
    let (mut forwarded, mut contained_at) = (0, None);
    for (i, q) in t.queries.iter().enumerate() {
        let raw = udp_raw(
            s.udp,
            "127.0.0.199".parse().unwrap(),
            &raw_name_query(&q.qname, q.qtype),
        )
        .await
        .expect("an answer");
        let m = Message::from_vec(&raw).unwrap();
        if a_records(&m) == ["192.0.2.77"] {
            forwarded += q.payload;
        } else {
            contained_at = Some(i + 1);
            break;
        }
        clock.advance(t.interval);
    }
    eprintln!(
        "{}: {forwarded} B forwarded, contained at query {contained_at:?}",
        t.tool
    );
    let events = s.stop_and_read_events().await;
    let alerts: Vec<_> = events
        .iter()
        .filter(|e| {
            e["kind"] == "alert" && e["domain"].as_str().unwrap_or("").starts_with("burst-")
        })
        .collect();
    assert!(alerts.is_empty(), "bursts alerted: {alerts:#?}");
    assert!(
        contained_at.is_some(),
        "the template tunnel was never contained"
    );
    assert!(forwarded <= 4096, "{forwarded} B forwarded");
}
