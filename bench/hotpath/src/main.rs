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
//! scoring on and off. Output: nanoseconds per query, best of five rounds.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsward::policy::active::ActivePolicy;
use dnsward::resolve::cache::{AnswerCache, CacheConfig};
use dnsward::clock::SystemClock;
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
fn pipeline(detect: bool, events: Option<&std::path::Path>) -> (Pipeline, Option<EventSinkHandle>) {
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
    let clock = SystemClock::shared();
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
                        black_box(r);
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

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let w1: Vec<String> = (1..=500).map(|i| format!("host{i}.bench.example")).collect();
    let w2: Vec<String> = (1..=500).map(|i| format!("x{i}.denied.example")).collect();
    let w1p: Vec<Vec<u8>> = w1.iter().enumerate().map(|(i, n)| query(i as u16, n)).collect();
    let w2p: Vec<Vec<u8>> = w2.iter().enumerate().map(|(i, n)| query(i as u16, n)).collect();
    println!("| case | scoring | ns/query |");
    println!("|---|---|---:|");
    // The event writer runs on this runtime's one worker; the loop below times the query
    // path's side of events (building and queueing them), not the writing.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let events_path = std::env::temp_dir().join(format!("dnsward-hotpath-{}.jsonl", std::process::id()));
    for (detect, events) in [(true, false), (false, false), (true, true)] {
        let (p, _sink) = pipeline(detect, events.then_some(events_path.as_path()));
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
}
