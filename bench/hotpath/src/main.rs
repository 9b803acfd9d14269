//! Times `Pipeline::handle_fast` in-process, without sockets: the userspace share of a query.
//!
//! The dnsperf runs in `bench/run.sh` measure everything, but on loopback the kernel's share is
//! most of it and moves with the machine's load; this isolates what dnsward's own code costs per
//! query, so a change of a few hundred nanoseconds is visible.
//!
//! ```sh
//! cargo run --release --manifest-path bench/hotpath/Cargo.toml -- [seconds-per-case]
//! ```
//!
//! Cases: W1 (500 cached allowed names), W2 (500 names denied by policy), each with tunnel
//! scoring on and off; W3's cache side (preparing a flood's NXDOMAIN answer and inserting it
//! into a full default-size cache, evicting as it goes). Output: nanoseconds per query (per
//! insert for W3), best of five rounds.
//!
//! `count w1|w2|few|w3 ROUNDS` runs one case a fixed number of times for callgrind (see
//! [`count_case`] and [`count_misses`]; `w3` is the whole miss path over a real UDP exchange).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsward::policy::active::ActivePolicy;
use dnsward::resolve::cache::{AnswerCache, CacheConfig};
use dnsward::clock::{ManualClock, SharedClock, SystemClock};
use dnsward::config::Config;
use dnsward::contain::Containment;
use dnsward::detect::Detector;
use dnsward::events::sink::{EventSender, EventSinkHandle};
use dnsward::serve::pipeline::{Outcome, Pipeline, PipelineSettings};
use dnsward::serve::pipeline::UnknownClients;
use dnsward::wire;

/// A plain query for `name` A (no EDNS: what dnsperf sends by default).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut out = vec![(id >> 8) as u8, id as u8, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.extend_from_slice(&[0, 0, 1, 0, 1]);
    out
}

/// The pipeline with scoring on or off; with `events`, a file sink (every block written,
/// allowed queries sampled one in 100) instead of a disabled sender.
fn pipeline(
    detect: bool,
    events: Option<&std::path::Path>,
    clock: SharedClock,
) -> (Pipeline, Option<EventSinkHandle>) {
    let events_toml = match events {
        Some(path) => format!("[events]\nsink=\"file\"\npath={:?}\nkeep=1\n", path.display().to_string()),
        None => String::new(),
    };
    let text = format!(
        "{events_toml}[upstream]\nservers=[{{address=\"127.0.0.1:9\"}}]\n[detect]\nenabled={detect}\n\
         [[groups]]\nname=\"bench\"\ncidrs=[\"127.0.0.0/8\"]\nallow=[\"*.bench.example\"]\nblock=\"nxdomain\"\n[groups.detect]\nmonitor_only=true\n"
    );
    let cfg = Config::from_toml(&text, "hotpath", std::path::Path::new(".")).expect("config");
    let policy = ActivePolicy::build(&cfg.policy_sections()).expect("policy");
    let (sender, handle) = match events {
        Some(_) => {
            let (s, h) = dnsward::events::sink::spawn(&cfg.events).expect("event sink");
            (s, Some(h))
        }
        None => (EventSender::disabled(), None),
    };
    let p = Pipeline::new(
        policy,
        AnswerCache::new(&CacheConfig::default(), Arc::clone(&clock)),
        sender,
        PipelineSettings {
            unknown_clients: UnknownClients::Refuse,
            ..Default::default()
        },
        Arc::clone(&clock),
        Detector::new(&cfg.detect, Arc::clone(&clock)),
        Containment::new(&cfg.containment, clock),
    );
    (p, handle)
}

/// Fill the cache with an A answer for every name, as the upstream would have given.
fn warm(p: &Pipeline, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let packet = query(1, name);
        let q = wire::parse_query(&packet).expect("query");
        let mut answer = wire::start_response(&q, wire::rcode::NOERROR, false);
        wire::push_a(
            &mut answer,
            3600,
            std::net::Ipv4Addr::new(198, 51, 100, (i % 250) as u8 + 1),
        );
        let prepared = p.cache().prepare(&answer, "up".into()).expect("prepare");
        p.cache().insert(&q, &prepared);
    }
}

fn time_case(p: &Pipeline, packets: &[Vec<u8>], expect_rcode: u8, secs: f64) -> f64 {
    let src = "127.0.0.1".parse().unwrap();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs_f64(secs / 5.0) {
            let now = Instant::now();
            for packet in packets {
                match p.handle_udp_batched(black_box(packet), src, now) {
                    Outcome::Reply(r) => {
                        debug_assert_eq!(wire::rcode_of(&r), expect_rcode);
                        // As the UDP loop does once the batch is sent.
                        wire::recycle_reply(black_box(r));
                    }
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
            n += packets.len() as u64;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

/// The W3 upstream's answer for `q`: NXDOMAIN with flood.example's SOA (negative TTL 60 s).
fn flood_nxdomain(q: &wire::Query<'_>) -> Vec<u8> {
    fn push_name(out: &mut Vec<u8>, name: &str) {
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }
    let mut out = wire::start_response(q, wire::rcode::NXDOMAIN, false);
    out[9] = 1; // NSCOUNT
    push_name(&mut out, "flood.example");
    out.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0x0e, 0x10]);
    let mut rdata = Vec::new();
    push_name(&mut rdata, "ns.flood.example");
    push_name(&mut rdata, "hostmaster.flood.example");
    for v in [1u32, 3600, 600, 86400, 60] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    out
}

/// W3's cache side: prepare + insert of a new name's answer into a full default cache.
fn time_flood_inserts(secs: f64) -> f64 {
    let cache = AnswerCache::new(&CacheConfig::default(), SystemClock::shared());
    // More distinct names than the cache holds, so it evicts on every insert once full.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let packets: Vec<Vec<u8>> = (0..300_000)
        .map(|i| {
            let mut name = String::new();
            for _ in 0..16 + i % 17 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                name.push(char::from(
                    b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize],
                ));
            }
            query(1, &format!("{name}.flood.example"))
        })
        .collect();
    let answers: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| flood_nxdomain(&wire::parse_query(p).expect("query")))
        .collect();
    let up: Arc<str> = "up".into();
    let mut insert = |i: usize| {
        let q = wire::parse_query(&packets[i]).expect("query");
        let prepared = cache
            .prepare(black_box(&answers[i]), Arc::clone(&up))
            .expect("prepare");
        assert!(prepared.cacheable);
        cache.insert(&q, &prepared);
    };
    (0..packets.len()).for_each(&mut insert);
    let mut best = f64::MAX;
    let mut i = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs_f64(secs / 5.0) {
            for _ in 0..1000 {
                insert(i);
                i = (i + 1) % packets.len();
            }
            n += 1000;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

/// `count w1|w2|few ROUNDS` (and `count w3 ROUNDS`, [`count_misses`]): exactly ROUNDS × 500 queries of one case, scoring on, then exit; for
/// `perf stat -e instructions:u` or callgrind, whose count per query (the difference between two
/// ROUNDS, divided by the queries between them) does not move with the machine's load as time
/// does. The pipeline's clock is a manual one moved 10 µs a query (100k q/s), so the windows
/// advance the same way in every run, however slowly the instrumented process goes: the count
/// is the same for the same build (under the system clock it moved by ±50 under callgrind).
fn count_case(p: &Pipeline, clock: &ManualClock, packets: &[Vec<u8>], rounds: u64) {
    let src = "127.0.0.1".parse().unwrap();
    let now = Instant::now();
    for _ in 0..rounds {
        for packet in packets {
            clock.advance(Duration::from_micros(10));
            // The reply's buffer goes back for the next, as the UDP loop does once it is sent.
            if let Outcome::Reply(r) = black_box(p.handle_udp_batched(black_box(packet), src, now)) {
                wire::recycle_reply(r);
            }
        }
    }
}

/// `count w3 ROUNDS`: ROUNDS × 500 unique flood names, each a cache miss forwarded over real
/// UDP to an in-process upstream (a thread answering NXDOMAIN with flood.example's SOA), one at a
/// time on a current-thread runtime: the whole miss path (scoring, the upstream exchange,
/// preparing and caching the answer, rendering it) except the listener's socket calls. The
/// upstream thread's own work is in the count too, the same for every build.
fn count_misses(rounds: u64) {
    let up = std::net::UdpSocket::bind("127.0.0.1:0").expect("upstream socket");
    let up_addr = up.local_addr().expect("upstream address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = up.recv_from(&mut buf) {
            if let Ok(q) = wire::parse_query(&buf[..n]) {
                let _ = up.send_to(&flood_nxdomain(&q), from);
            }
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let clock = ManualClock::new();
    let text = format!(
        "[upstream]\nservers=[{{address=\"{up_addr}\"}}]\n[[groups]]\nname=\"flood\"\ncidrs=[\"127.0.0.0/8\"]\n\
         allow=[\"*.flood.example\"]\nblock=\"nxdomain\"\n[groups.detect]\nmonitor_only=true\n"
    );
    let cfg = Config::from_toml(&text, "hotpath", std::path::Path::new(".")).expect("config");
    let policy = ActivePolicy::build(&cfg.policy_sections()).expect("policy");
    let shared: SharedClock = clock.clone();
    let p = Pipeline::new(
        policy,
        AnswerCache::new(&CacheConfig::default(), Arc::clone(&shared)),
        EventSender::disabled(),
        PipelineSettings {
            unknown_clients: UnknownClients::Refuse,
            ..Default::default()
        },
        Arc::clone(&shared),
        Detector::new(&cfg.detect, Arc::clone(&shared)),
        Containment::new(&cfg.containment, shared),
    );
    let src = "127.0.0.1".parse().unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut answered = 0u64;
    for i in 0..rounds * 500 {
        let mut name = String::new();
        for _ in 0..16 + i % 17 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            name.push(char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize]));
        }
        let packet = query(i as u16, &format!("{name}.flood.example"));
        clock.advance(Duration::from_micros(10));
        match p.handle_udp_batched(&packet, src, Instant::now()) {
            Outcome::Resolve(pending) => {
                if let Some(r) = rt.block_on(p.resolve(*pending)) {
                    assert_eq!(wire::rcode_of(&r), wire::rcode::NXDOMAIN);
                    answered += 1;
                    // As the UDP listener does once the answer is sent.
                    wire::recycle_reply(r);
                }
            }
            other => panic!("expected a miss, got {other:?}"),
        }
    }
    assert_eq!(answered, rounds * 500);
}

/// The runtime the event writer runs on: one worker, beside the thread that times queries.
fn events_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    let w1: Vec<String> = (1..=500).map(|i| format!("host{i}.bench.example")).collect();
    let w2: Vec<String> = (1..=500).map(|i| format!("x{i}.denied.example")).collect();
    let w1p: Vec<Vec<u8>> = w1.iter().enumerate().map(|(i, n)| query(i as u16, n)).collect();
    let w2p: Vec<Vec<u8>> = w2.iter().enumerate().map(|(i, n)| query(i as u16, n)).collect();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("count") {
        let rounds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
        if args.get(2).map(String::as_str) == Some("w3") {
            count_misses(rounds);
            return;
        }
        // `HOTPATH_EVENTS=1`: events to a file (every block, allowed sampled), as run.sh runs
        // the server; the writer runs on its own runtime thread (not counted per query here
        // only if it keeps up; it is counted in the process's total).
        let events_path = std::env::temp_dir().join(format!("dnsward-hotpath-count-{}.jsonl", std::process::id()));
        let rt = events_runtime();
        let _enter = rt.enter();
        let events = std::env::var_os("HOTPATH_EVENTS").is_some();
        let clock = ManualClock::new();
        let (p, _sink) = pipeline(true, events.then_some(events_path.as_path()), clock.clone());
        warm(&p, &w1);
        match args.get(2).map(String::as_str) {
            Some("w2") => count_case(&p, &clock, &w2p, rounds),
            // A client repeating a handful of names: too little new information for any window
            // to reach the volume floor, as most real clients most of the time.
            Some("few") => count_case(&p, &clock, &w1p[..8], rounds * 500 / 8),
            _ => count_case(&p, &clock, &w1p, rounds),
        }
        return;
    }
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    println!("| case | scoring | ns/query |");
    println!("|---|---|---:|");
    // The event writer runs on this runtime's one worker; the loop below times the query
    // path's side of events (building and queueing them), not the writing.
    let rt = events_runtime();
    let _enter = rt.enter();
    let events_path = std::env::temp_dir().join(format!("dnsward-hotpath-{}.jsonl", std::process::id()));
    for (detect, events) in [(true, false), (false, false), (true, true)] {
        let (p, _sink) = pipeline(detect, events.then_some(events_path.as_path()), SystemClock::shared());
        warm(&p, &w1);
        let on = match (detect, events) {
            (true, false) => "on",
            (false, _) => "off",
            (true, true) => "on, events to a file",
        };
        let t1 = time_case(&p, &w1p, wire::rcode::NOERROR, secs);
        println!("| W1 cached allowed | {on} | {t1:.0} |");
        let t2 = time_case(&p, &w2p, wire::rcode::NXDOMAIN, secs);
        println!("| W2 denied by policy | {on} | {t2:.0} |");
    }
    for suffix in ["", ".1"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", events_path.display()));
    }
    let t3 = time_flood_inserts(secs);
    println!("| W3 cache side: prepare + insert into a full cache | - | {t3:.0} |");
}
