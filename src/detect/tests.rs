//! Detector behaviour, driven by a manual clock.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::testgen::{self, Traffic};
use super::*;
use crate::clock::{Clock, ManualClock};
use crate::names::registrable_domain;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn detector(cfg: &DetectConfig) -> (Detector, Arc<ManualClock>) {
    let clock = ManualClock::new();
    (Detector::new(cfg, clock.clone()), clock)
}

fn observe(
    d: &Detector,
    client: IpAddr,
    qname: &str,
    qtype: u16,
    settings: &GroupDetectConfig,
) -> Assessment {
    d.observe(&Observation {
        client: &ClientKey::from(client),
        group: "agents",
        qname,
        domain: registrable_domain(qname),
        qtype,
        settings,
    })
}

/// Where each level was first reached while replaying a tool's traffic.
#[derive(Debug, Default)]
struct Reached {
    /// (queries, payload bytes) at the first assessment at or above each level.
    at: [Option<(usize, usize)>; 5],
    alerts: Vec<AlertEvent>,
}

fn replay(t: &Traffic, settings: &GroupDetectConfig) -> Reached {
    let (d, clock) = detector(&DetectConfig::default());
    let mut r = Reached::default();
    let mut bytes = 0;
    for (i, q) in t.queries.iter().enumerate() {
        let a = observe(&d, ip(7), &q.qname, q.qtype, settings);
        d.observe_rcode(&ClientKey::from(ip(7)), registrable_domain(&q.qname), false);
        bytes += q.payload;
        for level in [
            Level::Alert,
            Level::Throttle,
            Level::Sinkhole,
            Level::Quarantine,
        ] {
            let slot = &mut r.at[level as usize];
            if a.level >= level && slot.is_none() {
                *slot = Some((i + 1, bytes));
            }
        }
        r.alerts.extend(a.alert.map(|b| *b));
        clock.advance(t.interval);
    }
    r
}

fn tools() -> Vec<Traffic> {
    vec![
        testgen::iodine_base32("t.tunnel-example.com", 400, 1),
        testgen::iodine_base128("t.tunnel-example.com", 400, 2),
        testgen::dns2tcp("tun.tunnel-example.net", 400, false, 3),
        testgen::dns2tcp("tun.tunnel-example.net", 400, true, 4),
        testgen::dnscat2("c2.tunnel-example.org", 400, 5),
        testgen::base64url_exfil("x.tunnel-example.io", 400, 6),
        testgen::slow_drip("drip-example.com", 400, 7),
    ]
}

#[test]
fn every_tunnel_tool_is_caught_and_contained() {
    let settings = GroupDetectConfig::default();
    for t in tools() {
        let r = replay(&t, &settings);
        let show = |l: Level| {
            r.at[l as usize].map_or_else(
                || "never".to_string(),
                |(q, b)| format!("{q} queries/{b} B"),
            )
        };
        println!(
            "{:28} alert: {:22} throttle: {:22} sinkhole: {:22} quarantine: {}",
            t.tool,
            show(Level::Alert),
            show(Level::Throttle),
            show(Level::Sinkhole),
            show(Level::Quarantine)
        );
        let (alert_q, _) = r.at[Level::Alert as usize].unwrap_or((usize::MAX, 0));
        let (throttle_q, _) = r.at[Level::Throttle as usize].unwrap_or((usize::MAX, 0));
        // The slow drip is one query every 5 s: it needs minutes of evidence, not seconds.
        let (alert_max, contain_max) = if t.tool.starts_with("slow") {
            (60, 150)
        } else {
            (20, 50)
        };
        assert!(
            alert_q <= alert_max,
            "{}: alert after {alert_q} queries",
            t.tool
        );
        assert!(
            throttle_q <= contain_max,
            "{}: throttle after {throttle_q} queries",
            t.tool
        );
        let first = &r.alerts[0];
        assert!(["alert", "throttle", "sinkhole", "quarantine"].contains(&first.action.as_str()));
        assert!(
            !first.samples.is_empty() && first.samples.iter().all(|s| s.chars().count() <= 100)
        );
        assert!(
            first.breakdown.keys().any(|k| k.contains("volume.")),
            "{:?}",
            first.breakdown
        );
        let volume = first
            .volume
            .as_ref()
            .unwrap_or_else(|| panic!("no volume evidence"));
        assert!(volume.novel_bytes > 0 && volume.window_secs > 0 && volume.budget_bytes > 0);
        assert!(first.window.unique_subdomains > 0 && first.bytes_estimate > 0);
        assert!(!first.monitor_only);
    }
}

#[test]
fn fast_tunnels_reach_quarantine() {
    let settings = GroupDetectConfig::default();
    for t in tools().into_iter().filter(|t| !t.tool.starts_with("slow")) {
        let r = replay(&t, &settings);
        let (q, _) = r.at[Level::Quarantine as usize].unwrap_or((usize::MAX, 0));
        assert!(q <= 400, "{}: quarantine after {q}", t.tool);
    }
}

#[test]
fn monitor_only_computes_levels_but_acts_on_nothing() {
    let settings = GroupDetectConfig {
        monitor_only: true,
        ..GroupDetectConfig::default()
    };
    let r = replay(
        &testgen::iodine_base32("t.tunnel-example.com", 200, 9),
        &settings,
    );
    assert!(r.at[Level::Quarantine as usize].is_some());
    assert!(!r.alerts.is_empty());
    assert!(
        r.alerts
            .iter()
            .all(|a| a.action == "none" && a.monitor_only)
    );
}

#[test]
fn alert_cadence_first_crossing_rise_and_interval() {
    let cfg = DetectConfig {
        alert_interval: Duration::from_secs(60),
        ..DetectConfig::default()
    };
    let (d, clock) = detector(&cfg);
    // Thresholds far apart so each level is held for a while.
    let settings = GroupDetectConfig {
        alert: 40,
        throttle: 75,
        sinkhole: 99,
        quarantine: 100,
        ..Default::default()
    };
    let t = testgen::dnscat2("c2.tunnel-example.org", 600, 11);
    let mut emitted = Vec::new();
    for (i, q) in t.queries.iter().enumerate() {
        let a = observe(&d, ip(1), &q.qname, q.qtype, &settings);
        if let Some(alert) = a.alert {
            emitted.push((i, clock.now(), a.level, alert));
        }
        clock.advance(Duration::from_millis(250));
    }
    assert!(emitted.len() >= 3, "{}", emitted.len());
    // The first alert is the first crossing; later ones either rise in level or wait 60 s.
    assert_eq!(emitted[0].2, Level::Alert);
    for pair in emitted.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        assert!(
            next.2 > prev.2 || next.1 - prev.1 >= Duration::from_secs(60),
            "{:?} then {:?}",
            prev.2,
            next.2
        );
    }
    // 600 queries over 150 s at the same level: at most one repeat per minute, plus rises.
    assert!(emitted.len() <= 6);
    assert!(emitted.iter().any(|e| e.2 == Level::Throttle));
}

#[test]
fn exceptions_take_appearance_points_but_not_volume() {
    let cfg = DetectConfig {
        exceptions: vec!["Corp-AV.example.".into()],
        ..DetectConfig::default()
    };
    let (d, clock) = detector(&cfg);
    let settings = GroupDetectConfig {
        exceptions: vec!["telemetry.example.net".into()],
        ..Default::default()
    };
    for (i, (domain, expect)) in [
        ("e1.a.akamaiedge.net", "akamaiedge.net"),
        ("x.corp-av.example", "corp-av.example"),
        ("t.telemetry.example.net", "telemetry.example.net"),
    ]
    .into_iter()
    .enumerate()
    {
        let client = ip(20 + u32::try_from(i).unwrap_or(0));
        let mut top = Level::None;
        for q in testgen::iodine_base32(domain, 100, 3).queries {
            let a = observe(&d, client, &q.qname, q.qtype, &settings);
            assert_eq!(a.exception.as_deref(), Some(expect));
            assert_eq!(a.query_score, 0, "no appearance points");
            top = top.max(a.level);
            clock.advance(Duration::from_millis(100));
        }
        // A tunnel under an excepted suffix is still caught by what it sends.
        assert!(top >= Level::Throttle, "{domain}: {top:?}");
    }
    // The group exception belongs to that group only.
    let other = GroupDetectConfig::default();
    let q = &testgen::iodine_base32("t.telemetry.example.net", 1, 3).queries[0];
    assert!(
        observe(&d, ip(3), &q.qname, q.qtype, &other)
            .exception
            .is_none()
    );
    assert!(observe(&d, ip(3), &q.qname, q.qtype, &other).query_score > 0);
    // Labels never match anywhere: `_domainkey` under an attacker's domain is scored.
    let a = observe(
        &d,
        ip(3),
        "mzxw6ytboi2dkmzxw6ytb._domainkey.attacker.example",
        16,
        &other,
    );
    assert!(a.exception.is_none() && a.query_score > 0);
    // The shipped list can be turned off.
    let (bare, _) = detector(&DetectConfig {
        default_exceptions: false,
        ..DetectConfig::default()
    });
    assert!(
        observe(&bare, ip(2), "e1.a.akamaiedge.net", 1, &other)
            .exception
            .is_none()
    );
}

#[test]
fn windows_expire_with_the_clock() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut last = Assessment::default();
    for q in testgen::dns2tcp("tun.tunnel-example.net", 200, false, 5).queries {
        last = observe(&d, ip(4), &q.qname, q.qtype, &settings);
        clock.advance(Duration::from_millis(200));
    }
    assert!(last.level >= Level::Throttle);
    // Half a window later the previous half still counts.
    clock.advance(Duration::from_secs(7 * 60));
    assert!(observe(&d, ip(4), "www.tunnel-example.net", 1, &settings).level >= Level::Alert);
    // A full long window of quiet later, an ordinary query starts from nothing.
    clock.advance(Duration::from_secs(3 * 3600 + 60));
    let a = observe(&d, ip(4), "www.tunnel-example.net", 1, &settings);
    assert_eq!((a.level, a.domain_score), (Level::None, 0));
}

#[test]
fn nxdomain_ratio_adds_points() {
    let settings = GroupDetectConfig::default();
    let run = |nx: bool| {
        let (d, clock) = detector(&DetectConfig::default());
        let mut a = Assessment::default();
        for q in testgen::slow_drip("drip-example.com", 12, 8).queries {
            a = observe(&d, ip(5), &q.qname, q.qtype, &settings);
            d.observe_rcode(&ClientKey::from(ip(5)), "drip-example.com", nx);
            clock.advance(Duration::from_secs(5));
        }
        a
    };
    let (with_nx, without) = (run(true), run(false));
    assert!(
        with_nx.score > without.score,
        "{} vs {}",
        with_nx.score,
        without.score
    );
    // An answer alone never creates state.
    let (d, _) = detector(&DetectConfig::default());
    d.observe_rcode(&ClientKey::from(ip(6)), "never-asked.example", true);
    assert_eq!(d.tracked_keys(), 0);
}

#[test]
fn client_volume_spike_is_noticed() {
    let mut c = ClientState::default();
    for minute in 0..10 {
        for _ in 0..20 {
            assert!(!c.count(minute));
        }
    }
    let spiking = (0..400).map(|_| c.count(10)).filter(|s| *s).count();
    assert!(spiking > 200);
    // Idle minutes decay the baseline rather than keeping it forever.
    let mut idle = ClientState {
        minute: 0,
        count: 0,
        baseline: 100.0,
        minutes_seen: 10,
        ..ClientState::default()
    };
    idle.count(30);
    assert!(idle.baseline < 1.0);
}

#[test]
fn a_flood_of_unique_names_stays_within_the_bounds() {
    let cfg = DetectConfig {
        max_client_domains: 4096,
        max_domains: 2048,
        max_clients: 256,
        ..DetectConfig::default()
    };
    let bound = cfg.max_client_domains + cfg.max_domains + cfg.max_clients;
    let (d, clock) = detector(&cfg);
    let settings = GroupDetectConfig::default();
    let mut r = testgen::Prng::new(42);
    let tunnel = testgen::iodine_base32("t.tunnel-example.com", 2000, 1);
    let mut tunnel_level = Level::None;
    for i in 0..200_000u32 {
        // Unique random names under unique random registrable domains, from 1,000 sources.
        let name = format!("{:016x}.{:012x}.com", r.next_u64(), r.next_u64() >> 16);
        observe(&d, ip(1000 + i % 1000), &name, 1, &settings);
        if i % 100 == 0 {
            // Meanwhile a tunnel keeps going from one client.
            let q = &tunnel.queries[(i / 100) as usize % tunnel.queries.len()];
            tunnel_level = observe(&d, ip(1), &q.qname, q.qtype, &settings).level;
        }
        if i % 1000 == 0 {
            clock.advance(Duration::from_millis(300));
            assert!(d.tracked_keys() <= bound);
        }
    }
    println!(
        "tracked keys after 200k unique names: {} (bound {bound})",
        d.tracked_keys()
    );
    assert!(d.tracked_keys() <= bound);
    assert!(d.pairs.len() <= cfg.max_client_domains && d.domains.len() <= cfg.max_domains);
    // The flood is one-off keys; the tunnel's key is hot and survives it.
    assert!(tunnel_level >= Level::Throttle, "{tunnel_level:?}");
}

fn qtype_code(mnemonic: &str) -> u16 {
    match mnemonic {
        "AAAA" => 28,
        "TXT" => 16,
        "MX" => 15,
        "CNAME" => 5,
        "SRV" => 33,
        "PTR" => 12,
        "NS" => 2,
        "HTTPS" => 65,
        "CAA" => 257,
        _ => 1,
    }
}

#[test]
fn benign_names_from_many_clients_raise_no_alert() {
    let fixture = include_str!("../../tests/fixtures/benign_names.txt");
    let names: Vec<(&str, u16)> = fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            (
                parts.next().unwrap_or(""),
                qtype_code(parts.next().unwrap_or("A")),
            )
        })
        .collect();
    assert!(names.len() >= 5000, "{} names", names.len());
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let clients = 20u32;
    let mut r = testgen::Prng::new(7);
    // Each client resolves the whole list in its own order (a busy host), ~2 queries/s each:
    // that is 40 minutes, longer than the window, with repeats of popular names.
    let mut orders: Vec<Vec<usize>> = (0..clients)
        .map(|_| {
            let mut v: Vec<usize> = (0..names.len()).collect();
            for i in (1..v.len()).rev() {
                v.swap(i, usize::try_from(r.below(i as u64 + 1)).unwrap_or(0));
            }
            v
        })
        .collect();
    let (mut alerts, mut worst) = (Vec::new(), (0u8, String::new()));
    let started = std::time::Instant::now();
    for step in 0..names.len() {
        for (c, order) in orders.iter_mut().enumerate() {
            let idx = if step % 5 == 4 {
                order[step / 5]
            } else {
                order[step]
            }; // repeats
            let (name, qtype) = names[idx];
            let client = ip(100 + u32::try_from(c).unwrap_or(0));
            let a = observe(&d, client, name, qtype, &settings);
            d.observe_rcode(&ClientKey::from(client), registrable_domain(name), false);
            if a.score > worst.0 {
                worst = (a.score, name.to_string());
            }
            alerts.extend(a.alert.map(|b| *b));
        }
        clock.advance(Duration::from_millis(500));
    }
    let per_query = started.elapsed() / (u32::try_from(names.len()).unwrap_or(1) * clients);
    println!(
        "benign replay: {} names x {clients} clients, highest score {} ({}), {per_query:?} per query",
        names.len(),
        worst.0,
        worst.1
    );
    assert!(
        alerts.is_empty(),
        "{} alerts, first: {:?}",
        alerts.len(),
        alerts.first()
    );
}

#[test]
fn disabled_detector_does_nothing() {
    let (d, _) = detector(&DetectConfig {
        enabled: false,
        ..DetectConfig::default()
    });
    let q = &testgen::iodine_base32("t.tunnel-example.com", 1, 1).queries[0];
    assert_eq!(
        observe(&d, ip(1), &q.qname, q.qtype, &GroupDetectConfig::default()),
        Assessment::default()
    );
    assert_eq!(d.tracked_keys(), 0);
}

#[test]
fn detector_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Detector>();
}

#[test]
fn exfiltration_spread_over_many_clients_is_seen_fleet_wide() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let t = testgen::base64url_exfil("x.tunnel-example.io", 120, 12);
    let mut fleet_alert = None;
    // 60 agents each send only 2 queries: no single (client, domain) has enough evidence.
    for (i, q) in t.queries.iter().enumerate() {
        let client = ip(500 + u32::try_from(i % 60).unwrap_or(0));
        let a = observe(&d, client, &q.qname, q.qtype, &settings);
        assert!(
            a.level < Level::Throttle,
            "{:?}: nobody is contained",
            a.level
        );
        if fleet_alert.is_none() {
            fleet_alert = a.alert.map(|alert| (i + 1, alert));
        }
        clock.advance(Duration::from_secs(1));
    }
    let (after, alert) = fleet_alert.unwrap_or_else(|| panic!("no alert"));
    println!("spread over 60 clients: alert after {after} queries");
    let volume = alert.volume.unwrap_or_else(|| panic!("no volume evidence"));
    assert_eq!(volume.scope, "domain");
    assert_eq!(alert.action, "alert", "fleet evidence only alerts");
    assert!(
        alert
            .breakdown
            .keys()
            .any(|k| k.starts_with("fleet_volume.")),
        "{:?}",
        alert.breakdown
    );
    assert!(after <= 100);
}

#[test]
fn alerts_carry_what_an_analyst_needs() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut first = None;
    for q in testgen::dnscat2("c2.tunnel-example.org", 50, 13).queries {
        let a = observe(&d, ip(9), &q.qname, q.qtype, &settings);
        d.observe_rcode(&ClientKey::from(ip(9)), "tunnel-example.org", true);
        if first.is_none() {
            first = a.alert;
        }
        clock.advance(Duration::from_millis(250));
    }
    let a = first.unwrap_or_else(|| panic!("no alert"));
    assert_eq!(
        (a.client, a.group.as_str(), a.domain.as_str()),
        (ip(9), "agents", "tunnel-example.org")
    );
    assert_eq!(a.window.window_secs, 900);
    assert!(a.window.queries >= 3, "{:?}", a.window);
    assert!(a.window.nxdomain >= 1, "{:?}", a.window);
    // An estimate from a 64-register sketch: two of the first few names can share a register
    // (once in a few hundred runs here, with the per-process hash key).
    assert!(a.window.unique_subdomains >= 2, "{:?}", a.window);
    assert!(a.window.payload_bytes > 50 && a.bytes_estimate > 50);
    // The volume that tripped it: whose, which window, how many bytes and names.
    let v = a
        .volume
        .clone()
        .unwrap_or_else(|| panic!("no volume evidence"));
    assert_eq!(v.scope, "client_domain");
    assert!(["short", "window", "long"].contains(&v.window.as_str()));
    assert!(v.novel_bytes > 50 && v.novel_names >= 3 && v.budget_bytes > 0);
    assert!((1..=3).contains(&a.samples.len()));
    assert!(a.breakdown.keys().any(|k| k.starts_with("query.")));
    let window_points: f64 = a
        .breakdown
        .iter()
        .filter(|(k, _)| !k.starts_with("query."))
        .map(|(_, v)| v)
        .sum();
    assert!(
        (window_points - f64::from(a.score)).abs() <= 1.0,
        "{window_points} vs {}",
        a.score
    );
    // The first alert names the level reached (byte-weighted scoring can cross several
    // thresholds at once).
    assert!(
        ["alert", "throttle", "sinkhole", "quarantine"].contains(&a.action.as_str()),
        "{}",
        a.action
    );
    assert_eq!((a.monitor_only, a.exception.clone()), (false, None));
    // It serialises as the event log expects.
    let json = serde_json::to_string(&crate::events::EventBody::Alert(*a)).unwrap_or_default();
    assert!(json.starts_with("{\"kind\":\"alert\""));
}

/// Replays `t` from `client` on `d`; returns (bytes sent before the level reached `Throttle`,
/// first alert's (queries, seconds), the highest level).
fn run_on(
    d: &Detector,
    clock: &ManualClock,
    client: IpAddr,
    t: &Traffic,
) -> (usize, Option<(usize, Duration)>, Level) {
    let settings = GroupDetectConfig::default();
    let started = clock.now();
    let (mut bytes, mut contained, mut alert, mut top) = (0, false, None, Level::None);
    for (i, q) in t.queries.iter().enumerate() {
        let a = observe(d, client, &q.qname, q.qtype, &settings);
        d.observe_rcode(&ClientKey::from(client), registrable_domain(&q.qname), true);
        if a.level >= Level::Alert && alert.is_none() {
            alert = Some((i + 1, clock.now() - started));
        }
        contained |= a.level >= Level::Throttle;
        if !contained {
            bytes += q.payload;
        }
        top = top.max(a.level);
        clock.advance(t.interval);
    }
    (bytes, alert, top)
}

#[test]
fn every_encoding_at_burst_speed_is_contained_within_4_kb() {
    for e in testgen::Encoding::ALL {
        let (d, clock) = detector(&DetectConfig::default());
        let t = testgen::exfil(
            e,
            &["exfil-example.com"],
            16 * 1024,
            0,
            Duration::from_millis(50),
            21,
        );
        let (bytes, alert, top) = run_on(&d, &clock, ip(30), &t);
        println!(
            "{:28} contained after {bytes:5} B, alert after {alert:?}, top {top:?}",
            e.name()
        );
        assert!(top >= Level::Sinkhole, "{}: {top:?}", e.name());
        assert!(bytes <= 4096, "{}: {bytes} B before containment", e.name());
    }
}

#[test]
fn a_one_byte_a_second_drip_is_alerted_within_ten_minutes() {
    for e in [
        testgen::Encoding::WordLike,
        testgen::Encoding::Dictionary,
        testgen::Encoding::Base64Url,
        testgen::Encoding::CdnHash,
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        // 1 B/s: a chunk every `chunk` seconds, for an hour.
        let chunk = e.chunk();
        let secs = u64::try_from(chunk).unwrap_or(1);
        let t = testgen::exfil(
            e,
            &["drip-example.com"],
            3600,
            chunk,
            Duration::from_secs(secs),
            22,
        );
        let (bytes, alert, top) = run_on(&d, &clock, ip(31), &t);
        println!(
            "drip {:24} alert after {alert:?}, contained after {bytes} B, top {top:?}",
            e.name()
        );
        let (_, after) = alert.unwrap_or_else(|| panic!("{}: never alerted", e.name()));
        assert!(
            after <= Duration::from_secs(600),
            "{}: alert after {after:?}",
            e.name()
        );
        assert!(
            top >= Level::Throttle && bytes < 4096,
            "{}: {bytes} B, {top:?}",
            e.name()
        );
    }
}

#[test]
fn a_tunnel_spread_over_five_domains_or_two_names_per_domain_is_contained() {
    let domains = [
        "exfil-a.com",
        "exfil-b.net",
        "exfil-c.org",
        "exfil-d.io",
        "exfil-e.biz",
    ];
    let (d, clock) = detector(&DetectConfig::default());
    let t = testgen::exfil(
        testgen::Encoding::WordLike,
        &domains,
        16 * 1024,
        0,
        Duration::from_millis(50),
        23,
    );
    let (bytes, _, top) = run_on(&d, &clock, ip(32), &t);
    println!("word-like over 5 domains: contained after {bytes} B, top {top:?}");
    assert!(
        top >= Level::Throttle && bytes <= 4096,
        "{bytes} B, {top:?}"
    );
    // 500 domains, two names each: nothing per pair, the client-wide budget catches it.
    let many: Vec<String> = (0..500).map(|i| format!("exfil-{i}.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (d, clock) = detector(&DetectConfig::default());
    let t = testgen::exfil(
        testgen::Encoding::Base36,
        &many,
        16 * 1024,
        0,
        Duration::from_millis(50),
        24,
    );
    let (bytes, _, top) = run_on(&d, &clock, ip(33), &t);
    println!("base36 over 500 domains: contained after {bytes} B, top {top:?}");
    assert!(
        top >= Level::Throttle && bytes <= 4096,
        "{bytes} B, {top:?}"
    );
}

/// A tunnel writing at most 4 bytes a name (8 hex characters, under the client-wide per-name
/// allowance of an ordinary host label), spread over 50 or 200 registrable domains at 2 and 5
/// queries a second: per domain it stays far under the window's budget, and client-wide the
/// allowance was forgiven for every name, so it moved ~29 KB an hour unseen. The allowance now
/// holds for a domain's first few novel names only; past them each name counts in full.
/// Meanwhile an agent whose ordinary host names reach past that many under several domains
/// (40 services under each of 6 internal domains, in 10 minutes) is not contained.
#[test]
fn small_payloads_spread_over_many_domains_are_contained() {
    let settings = GroupDetectConfig::default();
    for (domains, every_ms) in [(50usize, 500u64), (200, 500), (50, 200)] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut r = testgen::Prng::new(41);
        let (mut sent, mut contained) = (0usize, None);
        for i in 0..20_000usize {
            let label: String = r.bytes(4).iter().map(|b| format!("{b:02x}")).collect();
            let qname = format!("{label}.spread-{}.com", i % domains);
            let a = observe(&d, ip(70), &qname, 1, &settings);
            d.observe_rcode(&ClientKey::from(ip(70)), registrable_domain(&qname), false);
            if a.level >= Level::Throttle {
                contained = Some(clock.now());
                break;
            }
            sent += 4;
            clock.advance(Duration::from_millis(every_ms));
        }
        println!(
            "4 B a name over {domains} domains every {every_ms} ms: throttled at {contained:?} \
             after {sent} B"
        );
        assert!(
            contained.is_some_and(|at| at <= Duration::from_secs(30 * 60)) && sent <= 12 * 1024,
            "{domains} domains every {every_ms} ms: {sent} B, {contained:?}"
        );
    }

    let services = [
        "auth",
        "billing",
        "orders",
        "users",
        "search",
        "catalog",
        "payments",
        "inventory",
        "shipping",
        "notify",
        "reports",
        "metrics",
        "gateway",
        "config",
        "sessions",
        "profile",
        "pricing",
        "reviews",
        "cart",
        "checkout",
    ];
    let (d, clock) = detector(&DetectConfig::default());
    let mut worst = (Level::None, 0u8, String::new());
    for round in 0..4 {
        for domain in [
            "corp-a.com",
            "corp-b.net",
            "corp-c.io",
            "corp-d.org",
            "corp-e.dev",
            "corp-f.cloud",
        ] {
            for service in services {
                let host = if round % 2 == 0 { "api" } else { "db" };
                let qname = format!("{service}-{host}{round}.{domain}");
                let a = observe(&d, ip(71), &qname, 1, &settings);
                if a.score > worst.1 {
                    worst = (a.level, a.score, qname.clone());
                }
                clock.advance(Duration::from_millis(1200));
            }
        }
    }
    println!(
        "internal services: highest score {} ({:?}) at {}",
        worst.1, worst.0, worst.2
    );
    assert!(worst.0 < Level::Alert, "{worst:?}");
}

#[test]
fn one_clients_tunnel_never_contains_another_client() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let t = testgen::exfil(
        testgen::Encoding::Base32,
        &["shared-example.com"],
        16 * 1024,
        0,
        Duration::from_millis(50),
        25,
    );
    for q in &t.queries {
        observe(&d, ip(40), &q.qname, q.qtype, &settings);
        // Meanwhile other clients ask ordinary names of the same domain.
        for other in 41..44 {
            let a = observe(&d, ip(other), "www.shared-example.com", 1, &settings);
            assert!(
                a.level < Level::Throttle,
                "{:?} for an innocent client",
                a.level
            );
        }
        clock.advance(t.interval);
    }
    let a = observe(&d, ip(40), &t.queries[0].qname, 1, &settings);
    assert!(a.level >= Level::Sinkhole);
}

#[test]
fn domainkey_and_delegated_reverse_zone_tunnels_are_contained() {
    for t in [
        testgen::domainkey_exfil("mail-example.com", 16 * 1024, 26),
        testgen::reverse_zone_exfil("7.10.in-addr.arpa", 16 * 1024, 27),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let (bytes, _, top) = run_on(&d, &clock, ip(34), &t);
        println!("{:40} contained after {bytes} B, top {top:?}", t.tool);
        assert!(
            top >= Level::Sinkhole && bytes <= 4096,
            "{}: {bytes} B, {top:?}",
            t.tool
        );
    }
}

#[test]
fn benign_classes_from_forty_clients_over_a_day_raise_no_alert() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let traffic = testgen::benign_fleet(40, 24, 11);
    let mut worst: std::collections::BTreeMap<&str, (u8, String)> =
        std::collections::BTreeMap::new();
    let mut alerts = Vec::new();
    let start = clock.now();
    for q in &traffic {
        let at = start + Duration::from_secs(q.at);
        if at > clock.now() {
            clock.advance(at - clock.now());
        }
        let client = ip(200 + q.client);
        let a = observe(&d, client, &q.qname, q.qtype, &settings);
        d.observe_rcode(
            &ClientKey::from(client),
            registrable_domain(&q.qname),
            q.class == "dnsbl",
        );
        if let Some(al) = &a.alert {
            if alerts.is_empty() {
                println!("first alert at {} s", q.at);
            }
            let _ = al;
        }
        let w = worst.entry(q.class).or_default();
        if a.score > w.0 {
            *w = (a.score, q.qname.clone());
        }
        alerts.extend(a.alert.map(|b| *b));
    }
    println!(
        "benign classes, 40 clients, 24 h, {} queries; per-class maximum score:",
        traffic.len()
    );
    for (class, (score, name)) in &worst {
        println!("  {class:18} {score:3}  {name}");
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in &alerts {
        let scope = a.volume.as_ref().map_or("", |v| v.scope.as_str());
        if seen.insert((a.domain.clone(), scope.to_string())) {
            println!(
                "ALERT {} {} {} {:?} {:?}",
                a.client, a.domain, a.score, a.breakdown, a.volume
            );
        }
    }
    assert!(
        alerts.is_empty(),
        "{} alerts, first: {:?}",
        alerts.len(),
        alerts.first()
    );
}

#[test]
fn state_per_tracked_key_is_small_and_fixed() {
    // Each table entry is this state behind an `Arc<Mutex<_>>`, plus the cache's key and
    // bookkeeping (~48 bytes); samples add at most 3 × 100 bytes to suspicious pairs only.
    let (pair, client, domain) = (
        std::mem::size_of::<PairState>(),
        std::mem::size_of::<ClientState>(),
        std::mem::size_of::<DomainState>(),
    );
    println!("bytes per key: client_domain {pair}, client {client}, domain {domain}");
    // The pair's 328 bytes of name templates and recent labels (the floor's) included, and
    // the 20 bytes of its points memo (as the client's).
    assert!(
        pair <= 1440 && client <= 910 && domain <= 1100,
        "{pair} {client} {domain}"
    );
}

/// Replays benign queries in time order from clients `ip(base + client)`; returns the alerts
/// and, per class, the highest score and the name that reached it.
fn replay_benign(
    d: &Detector,
    clock: &ManualClock,
    base: u32,
    traffic: &[testgen::BenignQuery],
) -> (
    Vec<AlertEvent>,
    std::collections::BTreeMap<&'static str, (u8, String)>,
) {
    let settings = GroupDetectConfig::default();
    let mut worst: std::collections::BTreeMap<&str, (u8, String)> =
        std::collections::BTreeMap::new();
    let mut alerts = Vec::new();
    let start = clock.now();
    for q in traffic {
        let at = start + Duration::from_secs(q.at);
        if at > clock.now() {
            clock.advance(at - clock.now());
        }
        let client = ip(base + q.client);
        let a = observe(d, client, &q.qname, q.qtype, &settings);
        d.observe_rcode(
            &ClientKey::from(client),
            registrable_domain(&q.qname),
            false,
        );
        let w = worst.entry(q.class).or_default();
        if a.score > w.0 {
            *w = (a.score, q.qname.clone());
        }
        alerts.extend(a.alert.map(|b| *b));
    }
    (alerts, worst)
}

/// One client's cycle through 500 sequential names, starting at `at` seconds, 120 ms apart
/// (all 500 within a minute).
fn sequential_cycle(shape: testgen::SequentialShape, at: u64) -> Vec<testgen::BenignQuery> {
    testgen::sequential_names(shape, "example.com", 500)
        .into_iter()
        .enumerate()
        .map(|(i, qname)| testgen::BenignQuery {
            at: at * 1000 + 120 * i as u64,
            client: 0,
            class: "sequential",
            qname,
            qtype: 1,
        })
        .collect()
}

/// [`replay_benign`] for queries whose `at` is in milliseconds.
fn replay_millis(
    d: &Detector,
    clock: &ManualClock,
    traffic: &[testgen::BenignQuery],
) -> (Vec<AlertEvent>, u8) {
    let settings = GroupDetectConfig::default();
    let (mut alerts, mut top) = (Vec::new(), 0);
    let start = clock.now();
    for q in traffic {
        let at = start + Duration::from_millis(q.at);
        if at > clock.now() {
            clock.advance(at - clock.now());
        }
        let a = observe(d, ip(300), &q.qname, q.qtype, &settings);
        d.observe_rcode(&ClientKey::from(ip(300)), "example.com", false);
        top = top.max(a.score);
        alerts.extend(a.alert.map(|b| *b));
    }
    (alerts, top)
}

#[test]
fn five_hundred_sequential_names_in_a_minute_raise_no_alert() {
    use testgen::SequentialShape;
    for shape in [
        SequentialShape::Host,
        SequentialShape::CdnImage,
        SequentialShape::RegionEndpoint,
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let (alerts, top) = replay_millis(&d, &clock, &sequential_cycle(shape, 0));
        println!("500 sequential names in a minute, {shape:?}: max score {top}");
        assert!(alerts.is_empty(), "{shape:?}: {:?}", alerts.first());
        assert!(top < 50, "{shape:?}: score {top}");
    }
}

#[test]
fn five_hundred_sequential_names_every_minute_for_a_day_raise_no_alert() {
    let (d, clock) = detector(&DetectConfig::default());
    let mut top = 0;
    // Minute by minute, so the day is never held in memory at once.
    for minute in 0..24 * 60 {
        let cycle = sequential_cycle(testgen::SequentialShape::Host, 0);
        let (alerts, t) = replay_millis(&d, &clock, &cycle);
        assert!(alerts.is_empty(), "minute {minute}: {:?}", alerts.first());
        top = top.max(t);
        let next = Duration::from_secs(60 * (minute + 1));
        let elapsed = clock.now();
        if next > elapsed {
            clock.advance(next - elapsed);
        }
    }
    println!("500 sequential names every minute for 24 h: max score {top}");
    assert!(top < 50, "score {top}");
}

#[test]
fn enumerating_classes_from_forty_clients_over_a_day_raise_no_alert() {
    let (d, clock) = detector(&DetectConfig::default());
    let traffic = testgen::enumerating_fleet(40, 24, 12);
    let (alerts, worst) = replay_benign(&d, &clock, 400, &traffic);
    println!(
        "enumerating classes, 40 clients, 24 h, {} queries; per-class maximum score:",
        traffic.len()
    );
    for (class, (score, name)) in &worst {
        println!("  {class:18} {score:3}  {name}");
    }
    for class in testgen::ENUMERATING_CLASSES {
        assert!(worst.contains_key(class), "{class} not replayed");
    }
    assert!(
        alerts.is_empty(),
        "{} alerts, first: {:?}",
        alerts.len(),
        alerts.first()
    );
}

#[test]
fn tunnels_exploiting_the_information_floor_are_contained_within_4_kb() {
    for t in testgen::floor_exploits("floor-exfil-example.com", 28) {
        let (d, clock) = detector(&DetectConfig::default());
        let (bytes, alert, top) = run_on(&d, &clock, ip(35), &t);
        println!(
            "{:40} contained after {bytes:5} B, alert after {alert:?}, top {top:?}",
            t.tool
        );
        assert!(
            top >= Level::Sinkhole && bytes <= 4096,
            "{}: {bytes} B, {top:?}",
            t.tool
        );
    }
}

/// A client cycling through more names than its (client, domain) filter holds asks the same
/// names again: the second round adds no information (the fleet-wide table remembers who asked
/// each name last), while a new client asking them is still counted.
#[test]
fn a_client_cycling_through_hundreds_of_names_repeats_them() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let names: Vec<String> = (0..300)
        .map(|i| format!("svc-{i}.cycle-example.com"))
        .collect();
    let novel_total = |client: u32| {
        let key = ClientKey::from(ip(client));
        let pair = d.pair_key(d.hasher.hash_one(&key), d.domain_key("cycle-example.com"));
        d.pairs.get(pair).map(|p| p.lock().novel_bits_total)
    };
    for n in &names {
        observe(&d, ip(1), n, 1, &settings);
        clock.advance(Duration::from_millis(10));
    }
    let first = novel_total(1).expect("tracked");
    assert!(first > 0);
    for n in &names {
        observe(&d, ip(1), n, 1, &settings);
        clock.advance(Duration::from_millis(10));
    }
    // The fleet-wide table is direct-mapped (256 k slots, keyed hash): two of the 300 names
    // share a slot in about one process in six, and the one overwritten counts as new again.
    // Nothing more than that may come back.
    let second = novel_total(1).expect("tracked");
    assert!(
        second - first <= first / 20,
        "the second round is repeats: {first} bits, then {} more",
        second - first
    );
    // Another client asking the names asks names another client asked first: not its own
    // information either, but it is not a repeat of its own.
    observe(&d, ip(2), &names[0], 1, &settings);
    assert_eq!(novel_total(2), Some(0));
}

/// Downstream bytes count only for an answer that says something new to its client: a poller
/// re-fetching an unchanged record (TTL 0, as service discovery serves) is given nothing; a
/// changed answer, an answer alternating with one seen before (a choice among answers carries
/// data), and another client's first answer all count.
#[test]
fn only_answers_that_say_something_new_count_as_downstream_bytes() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let name = "_api._tcp.poll-example.com";
    let down = |client: u32| {
        let key = ClientKey::from(ip(client));
        let pair = d.pair_key(d.hasher.hash_one(&key), d.domain_key("poll-example.com"));
        d.pairs
            .get(pair)
            .map(|p| p.lock().windows.0[1].volume_stats().down_bytes)
    };
    let answer = |client: u32, qtype: u16, content: &'static [u8]| {
        d.observe_answer_at(
            &ClientKey::from(ip(client)),
            name,
            "poll-example.com",
            qtype,
            &FreshAnswer {
                nxdomain: false,
                answers: 1,
                bytes: 200,
                content: &|h: &mut dyn Hasher| h.write(content),
                records: &|h: &mut dyn Hasher| h.write(content),
                addresses: &[],
                cname_targets: &[],
                host_targets: &[],
                signed_bytes: 0,
            },
            clock.now(),
        );
    };
    for client in [1, 2] {
        observe(&d, ip(client), name, 33, &settings);
    }
    answer(1, 33, b"srv set one"); // SRV: a carrier type
    assert_eq!(down(1), Some(200), "a first answer is new");
    for _ in 0..20 {
        clock.advance(Duration::from_secs(1));
        observe(&d, ip(1), name, 33, &settings);
        answer(1, 33, b"srv set one");
    }
    assert_eq!(down(1), Some(200), "the same answer again says nothing new");
    answer(2, 33, b"srv set one");
    assert_eq!(
        down(2),
        Some(200),
        "each client is charged for its own first answer"
    );
    answer(1, 33, b"srv set two");
    assert_eq!(down(1), Some(400), "a changed answer counts");
    answer(1, 33, b"srv set one");
    assert_eq!(
        down(1),
        Some(600),
        "going back to an earlier answer counts too"
    );
    // Not a carrier type: nothing, whatever the content.
    answer(1, 1, b"fresh a record");
    assert_eq!(down(1), Some(600));
}

/// Client-wide evidence is one suspect: a client spreading names over hundreds of domains is
/// contained on it, and raises an alert per level reached and per alert interval, not one for
/// every new domain its queries touch after the budget ran out.
#[test]
fn client_wide_evidence_alerts_once_per_level_not_once_per_domain() {
    let many: Vec<String> = (0..500).map(|i| format!("spread-{i}.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let t = testgen::exfil(
        testgen::Encoding::Base36,
        &many,
        16 * 1024,
        0,
        Duration::from_millis(50),
        24,
    );
    let (mut alerts, mut client_alerts, mut top, mut contained_domains) =
        (0, 0, Level::None, std::collections::HashSet::new());
    for q in &t.queries {
        let a = observe(&d, ip(34), &q.qname, q.qtype, &settings);
        top = top.max(a.level);
        if a.level >= Level::Throttle {
            contained_domains.insert(registrable_domain(&q.qname).to_string());
        }
        if let Some(alert) = &a.alert {
            alerts += 1;
            if alert.volume.as_ref().is_some_and(|v| v.scope == "client") {
                client_alerts += 1;
            }
            // The window counts are the alerting query's (client, domain), scored or not.
            assert!(alert.window.queries >= 1, "{alert:?}");
        }
        clock.advance(t.interval);
    }
    println!(
        "{} queries over {} domains: top {top:?}, {} domains contained, {alerts} alerts \
         ({client_alerts} client-wide)",
        t.queries.len(),
        many.len(),
        contained_domains.len()
    );
    assert!(top >= Level::Throttle, "{top:?}");
    assert!(
        contained_domains.len() > 20,
        "each new domain is still contained"
    );
    assert!(client_alerts >= 1);
    // At most one per level (alert, throttle, sinkhole, quarantine) within the alert interval.
    assert!(alerts <= 4, "{alerts} alerts");
}

/// A small deterministic generator for the answer tests.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One query for `qname` from `client`, then its answer fresh from upstream with `addresses`
/// and `targets`; the query's assessment.
fn ask_and_answer(
    d: &Detector,
    client: u32,
    qname: &str,
    qtype: u16,
    addresses: &[IpAddr],
    targets: &[Box<str>],
    settings: &GroupDetectConfig,
) -> Assessment {
    let a = observe(d, ip(client), qname, qtype, settings);
    d.observe_answer_at(
        &ClientKey::from(ip(client)),
        qname,
        registrable_domain(qname),
        qtype,
        &FreshAnswer {
            nxdomain: false,
            answers: 1,
            bytes: 40 + 16 * addresses.len(),
            content: &|h: &mut dyn Hasher| h.write_usize(addresses.len()),
            records: &|h: &mut dyn Hasher| h.write_usize(addresses.len()),
            addresses,
            cname_targets: targets,
            host_targets: &[],
            signed_bytes: 0,
        },
        d.clock.now(),
    );
    a
}

/// A tunnel that polls one name whose TTL is 0 and reads its data from the addresses of fresh
/// AAAA answers moves nothing in names. The addresses new to the domain are its data, and a
/// changed answer is a piece of data like a novel name: it is contained, whether it fills
/// whole addresses or only interface identifiers under one /64, and whether it speaks AAAA or A.
#[test]
fn a_tunnel_polling_one_name_for_fresh_addresses_is_contained() {
    let settings = GroupDetectConfig::default();
    for (what, qtype, per_answer) in [
        ("whole AAAA addresses", 28u16, 8usize),
        ("interface identifiers under one /64", 28, 8),
        ("A addresses", 1, 8),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut reached = None;
        let mut moved = 0usize;
        for poll in 0..600 {
            let addresses: Vec<IpAddr> = (0..per_answer)
                .map(|_| {
                    let r = xorshift(&mut rng);
                    match (qtype, what.starts_with("interface")) {
                        (1, _) => IpAddr::from(u32::try_from(r >> 32).unwrap_or(0).to_be_bytes()),
                        (_, true) => IpAddr::from(
                            (0x2001_0db8_0000_0001_u128 << 64 | u128::from(r)).to_be_bytes(),
                        ),
                        _ => IpAddr::from(
                            (u128::from(r) << 64 | u128::from(xorshift(&mut rng))).to_be_bytes(),
                        ),
                    }
                })
                .collect();
            let a = ask_and_answer(
                &d,
                1,
                "cmd.dl-example.net",
                qtype,
                &addresses,
                &[],
                &settings,
            );
            if a.level >= Level::Sinkhole {
                reached = Some(poll);
                break;
            }
            moved += if what.starts_with("interface") {
                8
            } else if qtype == 1 {
                4
            } else {
                16
            } * per_answer;
            clock.advance(Duration::from_secs(1));
        }
        let Some(poll) = reached else {
            panic!(
                "{what}: polling one name once a second for 10 minutes ({moved} bytes in addresses) was never sinkholed"
            );
        };
        println!("{what}: sinkholed at poll {poll}, after {moved} bytes in addresses");
    }
}

/// A carrier-type tunnel polling one name for fresh TXT answers is contained too: one name,
/// but every answer is new data.
#[test]
fn a_tunnel_polling_one_name_for_fresh_txt_is_contained() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut reached = None;
    for poll in 0u64..600 {
        let a = observe(&d, ip(1), "poll.dl-example.net", 16, &settings);
        if a.level >= Level::Sinkhole {
            reached = Some(poll);
            break;
        }
        d.observe_answer_at(
            &ClientKey::from(ip(1)),
            "poll.dl-example.net",
            "dl-example.net",
            16,
            &FreshAnswer {
                nxdomain: false,
                answers: 1,
                bytes: 200,
                content: &|h: &mut dyn Hasher| h.write_u64(poll),
                records: &|h: &mut dyn Hasher| h.write_u64(poll),
                addresses: &[],
                cname_targets: &[],
                host_targets: &[],
                signed_bytes: 0,
            },
            clock.now(),
        );
        clock.advance(Duration::from_secs(1));
    }
    assert!(
        reached.is_some(),
        "200 new bytes a second through one TXT name for 10 minutes was never sinkholed"
    );
}

/// What networks put in addresses is not a tunnel: a CDN rotating subsets of its pool, an
/// object store handing out one address of a large pool every few seconds, service discovery
/// answering TTL 0 in a new order every time, a dual-stack pool over many /64s, an agent
/// resolving hundreds of hosts of one IPv6 /64 (each interface identifier new) or of one IPv4
/// range, CDN names chained through CNAMEs: none of them alerts.
#[test]
fn addresses_and_cname_chains_of_ordinary_services_do_not_alert() {
    let settings = GroupDetectConfig::default();
    let (d, clock) = detector(&DetectConfig::default());
    let mut rng = 0x0fed_cba9_8765_4321u64;
    let pool: Vec<IpAddr> = (0..32u32)
        .map(|i| IpAddr::from((0xc633_6400u32 + (i / 16) * 256 + i % 16 + 1).to_be_bytes()))
        .collect();
    let mut worst = (Level::None, 0u8, String::new());
    let mut note = |a: Assessment, what: &str| {
        if a.score > worst.1 {
            worst = (a.level, a.score, what.to_string());
        }
    };
    // Three hours, one second a step.
    for t in 0u64..3 * 3600 {
        // CDN: TTL 20, four of 32 addresses in two /24s, CNAME chain to the CDN's edge name.
        if t % 20 == 0 {
            let start = usize::try_from(xorshift(&mut rng) % 32).unwrap_or(0);
            let addrs: Vec<IpAddr> = (0..4).map(|k| pool[(start + k * 7) % 32]).collect();
            let targets: Vec<Box<str>> = vec![
                "www.shop-example.com.edgekey-example.net".into(),
                "e4711.a.edge-example.net".into(),
            ];
            note(
                ask_and_answer(
                    &d,
                    1,
                    "www.shop-example.com",
                    1,
                    &addrs,
                    &targets,
                    &settings,
                ),
                "cdn",
            );
        }
        // Object store: TTL 5, one address from a pool spread over a few /16s.
        if t % 5 == 0 {
            let r = xorshift(&mut rng);
            let net = [0x34d8_0000u32, 0x34d9_0000, 0x0305_0000, 0x36e7_0000][(r % 4) as usize];
            let addr =
                IpAddr::from((net | u32::try_from((r >> 8) & 0xffff).unwrap_or(0)).to_be_bytes());
            note(
                ask_and_answer(&d, 1, "s3.store-example.com", 1, &[addr], &[], &settings),
                "object store",
            );
        }
        // Service discovery (Consul serves TTL 0, shuffled): five instances, asked three
        // times a second, every answer in another order.
        for k in 0..3u64 {
            let mut inst: Vec<IpAddr> = (1..=5u32)
                .map(|i| IpAddr::from((0x0a63_0000u32 + i).to_be_bytes()))
                .collect();
            let spin = usize::try_from((t * 3 + k) % 5).unwrap_or(0);
            inst.rotate_left(spin);
            if (t + k) % 2 == 0 {
                inst.swap(0, 1);
            }
            note(
                ask_and_answer(
                    &d,
                    1,
                    "api.service.disc-example.com",
                    1,
                    &inst,
                    &[],
                    &settings,
                ),
                "shuffled TTL-0 service discovery",
            );
        }
        // Dual stack, TTL 5: four AAAA of a large pool spread over many /64s of one /48,
        // server-style interface identifiers.
        if t % 5 == 0 {
            let v6: Vec<IpAddr> = (0..4)
                .map(|_| {
                    let r = xorshift(&mut rng);
                    let net = 0x2001_0db8_00aa_0000_u128 | u128::from(r & 0xffff);
                    IpAddr::from((net << 64 | u128::from((r >> 16) & 0xff)).to_be_bytes())
                })
                .collect();
            note(
                ask_and_answer(&d, 1, "objects.dual-example.com", 28, &v6, &[], &settings),
                "dual-stack pool",
            );
        }
        // In the first 15 minutes: 450 hosts of one /64 (AAAA, random interface identifiers,
        // CNAMEs to per-host names under a CDN), one every two seconds; and 450 of one IPv4
        // range.
        if t < 900 && t % 2 == 0 {
            let n = t / 2;
            let host = format!("node{n}.fleet-example.org");
            let v6 = IpAddr::from(
                (0x2001_0db8_0042_0001_u128 << 64 | u128::from(xorshift(&mut rng))).to_be_bytes(),
            );
            let target: Box<str> = format!("node{n}.fleet-example.org.cdn-example.net").into();
            note(
                ask_and_answer(&d, 1, &host, 28, &[v6], &[target], &settings),
                "hosts of one /64",
            );
            let v4 =
                IpAddr::from((0x0a40_0000u32 + u32::try_from(n).unwrap_or(0) * 3).to_be_bytes());
            note(
                ask_and_answer(
                    &d,
                    1,
                    &format!("vm{n}.lab-example.org"),
                    1,
                    &[v4],
                    &[],
                    &settings,
                ),
                "hosts of one IPv4 range",
            );
        }
        clock.advance(Duration::from_secs(1));
    }
    println!("highest score {} ({:?}) from {}", worst.1, worst.0, worst.2);
    assert!(
        worst.0 < Level::Alert,
        "{:?} at {} from {}",
        worst.0,
        worst.1,
        worst.2
    );
}

/// A carrier-type record fetched fresh once a minute (its TTL, through a caching upstream
/// that counts TTLs down) differs from the last answer only in its TTLs: it is one name and
/// one piece of data, and three hours of it never alert, however many bytes it has.
#[test]
fn a_carrier_poller_whose_answers_differ_only_in_ttls_never_alerts() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut worst = 0u8;
    for minute in 0u64..180 {
        let a = observe(&d, ip(1), "_dmarc.mail-example.org", 16, &settings);
        worst = worst.max(a.score);
        d.observe_answer_at(
            &ClientKey::from(ip(1)),
            "_dmarc.mail-example.org",
            "mail-example.org",
            16,
            &FreshAnswer {
                nxdomain: false,
                answers: 1,
                bytes: 300,
                content: &|h: &mut dyn Hasher| h.write_u64(60 - minute % 7),
                records: &|h: &mut dyn Hasher| h.write(b"v=DMARC1; p=reject"),
                addresses: &[],
                cname_targets: &[],
                host_targets: &[],
                signed_bytes: 0,
            },
            clock.now(),
        );
        clock.advance(Duration::from_secs(60));
    }
    assert!(worst < 60, "score {worst}");
}

/// A tunnel that moves one byte an answer, in the last octet of an A record under one /24,
/// asking counter names (`1.dl-example.net`, `2.…`: a few bits each) five times a second, is
/// contained within ten minutes: the names pay a few bits each, and every new address at least
/// a byte.
#[test]
fn a_byte_an_answer_in_the_last_octet_is_contained() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut rng = 0x5eed_u64;
    let mut seen = std::collections::HashSet::new();
    let mut reached = None;
    for i in 0u32..3000 {
        let name = format!("{i}.dl-example.net");
        // A fresh octet while there are any; the network (198.51.100.0/24) is known after the
        // first answer.
        let mut octet = u8::try_from(xorshift(&mut rng) & 0xff).unwrap_or(0);
        while seen.len() < 256 && !seen.insert(octet) {
            octet = octet.wrapping_add(1);
        }
        let addr = IpAddr::from([198, 51, 100, octet]);
        let a = ask_and_answer(&d, 1, &name, 1, &[addr], &[], &settings);
        if a.level >= Level::Throttle {
            reached = Some(i);
            break;
        }
        if seen.len() == 256 {
            seen.clear();
        }
        clock.advance(Duration::from_millis(200));
    }
    let i = reached.unwrap_or_else(|| panic!("never contained in 3,000 queries"));
    println!("contained at query {i}");
}

#[test]
fn a_kubernetes_agent_with_ndots_5_raises_no_alert() {
    // A pod's resolver (ndots:5, search `<ns>.svc.cluster.local svc.cluster.local
    // cluster.local`) tries every external name under the three search domains first: each
    // distinct host the agent reaches becomes three names under `cluster.local`, NXDOMAIN,
    // then the name itself. A busy agent reaching 180 distinct hosts in 9 minutes (A and AAAA)
    // is ordinary, not a tunnel into `cluster.local`.
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let hosts = [
        "api", "www", "cdn", "auth", "login", "static", "assets", "storage", "files", "registry",
        "docs", "status", "events", "metrics", "upload",
    ];
    let domains = [
        "github.com",
        "openai.com",
        "pypi.org",
        "npmjs.org",
        "docker.io",
        "amazonaws.com",
        "googleapis.com",
        "slack.com",
        "atlassian.net",
        "datadoghq.com",
        "sentry.io",
        "cloudflare.com",
    ];
    let client = ip(90);
    let key = ClientKey::from(client);
    let mut worst = (0u8, String::new());
    let mut alerts = Vec::new();
    for (i, (h, dom)) in hosts
        .iter()
        .flat_map(|h| domains.iter().map(move |d| (h, d)))
        .enumerate()
    {
        let name = format!("{h}.{dom}");
        let tries = [
            format!("{name}.agents.svc.cluster.local"),
            format!("{name}.svc.cluster.local"),
            format!("{name}.cluster.local"),
            name.clone(),
        ];
        for (j, q) in tries.iter().enumerate() {
            for qtype in [1, 28] {
                let a = observe(&d, client, q, qtype, &settings);
                d.observe_rcode(&key, registrable_domain(q), j < 3);
                if a.score > worst.0 {
                    worst = (a.score, q.clone());
                }
                alerts.extend(a.alert.map(|b| *b));
            }
        }
        let _ = i;
        clock.advance(Duration::from_secs(3));
    }
    println!("worst score {} at {}", worst.0, worst.1);
    for a in &alerts {
        println!(
            "ALERT {} {} {:?} {:?}",
            a.domain, a.score, a.breakdown, a.volume
        );
    }
    assert!(alerts.is_empty(), "{} alerts", alerts.len());
    assert!(worst.0 < 30, "worst score {} at {}", worst.0, worst.1);

    // Without `cluster.local` as a search domain the same traffic is a false tunnel (the
    // mechanism, not luck, keeps it quiet).
    let cfg = DetectConfig {
        search_domains: Vec::new(),
        ..DetectConfig::default()
    };
    let (d, clock) = detector(&cfg);
    let mut top = 0;
    for (h, dom) in hosts
        .iter()
        .flat_map(|h| domains.iter().map(move |d| (h, d)))
    {
        for q in [
            format!("{h}.{dom}.agents.svc.cluster.local"),
            format!("{h}.{dom}.svc.cluster.local"),
            format!("{h}.{dom}.cluster.local"),
        ] {
            top = top.max(observe(&d, client, &q, 1, &settings).score);
        }
        clock.advance(Duration::from_secs(3));
    }
    assert!(top >= 60, "without the search domain: {top}");

    // A tunnel under the search domain whose names are not expansions of public names is
    // still measured and contained.
    let (d, clock) = detector(&DetectConfig::default());
    let t = testgen::iodine_base32("t.agents.svc.cluster.local", 400, 9);
    let mut level = Level::None;
    for q in &t.queries {
        level = level.max(observe(&d, ip(91), &q.qname, q.qtype, &settings).level);
        clock.advance(t.interval);
    }
    assert_eq!(level, Level::Quarantine);
}

#[test]
fn a_new_detector_on_the_same_thread_keys_names_with_its_own_hashes() {
    // Query names' and clients' keyed hashes are recalled per thread ([`crate::recall`]). A
    // second detector (a reload's, with a new key) asking for the same name and client on this
    // thread must compute its own: `forget` hashes afresh, so it finds the state only if
    // `observe` keyed it with this detector's hashes.
    let settings = GroupDetectConfig::default();
    let (old, _) = detector(&DetectConfig::default());
    let (new, _) = detector(&DetectConfig::default());
    for d in [&old, &new, &old, &new] {
        observe(d, ip(7), "www.recall.example", 1, &settings);
        observe(d, ip(7), "api.recall.example", 1, &settings);
    }
    assert_eq!(new.tracked_keys_by_table().map(|(_, n)| n), [1, 1, 1]);
    new.forget(&ClientKey::from(ip(7)), &["recall.example"]);
    assert_eq!(
        new.tracked_keys_by_table().map(|(_, n)| n),
        [0, 1, 0],
        "forget found the pair and the client under this detector's own keys"
    );
    assert_eq!(old.tracked_keys_by_table().map(|(_, n)| n), [1, 1, 1]);
}

/// Beside an address answer, a DO client's RRSIG/NSEC/NSEC3 bytes are downstream data: the
/// same records again are free, a first answer has an allowance of about one large signature,
/// and a changed answer to the same question (a tunnel polling one name) counts in full. A
/// negative answer to an A query counts as any type's does: its SOA when it changed.
#[test]
fn signatures_beside_addresses_and_negative_address_answers_count() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let down = || {
        let key = ClientKey::from(ip(1));
        let pair = d.pair_key(d.hasher.hash_one(&key), d.domain_key("sig-example.com"));
        d.pairs
            .get(pair)
            .map_or(0, |p| p.lock().windows.0[1].volume_stats().down_bytes)
    };
    let addr = [IpAddr::from([192, 0, 2, 7])];
    let answer = |qname: &str, signed_bytes: usize, sig: &'static [u8]| {
        d.observe_answer_at(
            &ClientKey::from(ip(1)),
            qname,
            "sig-example.com",
            1,
            &FreshAnswer {
                nxdomain: false,
                answers: 2,
                bytes: 20 + signed_bytes,
                content: &|h: &mut dyn Hasher| h.write(sig),
                records: &|h: &mut dyn Hasher| h.write(sig),
                addresses: &addr,
                cname_targets: &[],
                host_targets: &[],
                signed_bytes,
            },
            clock.now(),
        );
    };
    observe(&d, ip(1), "www.sig-example.com", 1, &settings);
    answer("www.sig-example.com", 110, b"ecdsa sig");
    let first = down();
    assert!(
        first < 16,
        "one ordinary signature is within the allowance: {first}"
    );
    answer("www.sig-example.com", 110, b"ecdsa sig");
    assert_eq!(down(), first, "the same signature again is free");
    answer("www.sig-example.com", 900, b"fresh blob 1");
    assert!(
        down() >= first + 256,
        "a changed signature counts: {}",
        down()
    );
    let before = down();
    observe(&d, ip(1), "x1.sig-example.com", 1, &settings);
    answer("x1.sig-example.com", 900, b"fresh blob 2");
    assert!(
        down() >= before + 256,
        "a first answer's bytes beyond the allowance count: {}",
        down()
    );

    // Negative answers to A queries: the first and every changed SOA count; the same is free.
    let negative = |qname: &str, soa: &'static [u8]| {
        d.observe_answer_at(
            &ClientKey::from(ip(1)),
            qname,
            "sig-example.com",
            1,
            &FreshAnswer {
                nxdomain: true,
                answers: 0,
                bytes: 90,
                content: &|h: &mut dyn Hasher| h.write(soa),
                records: &|h: &mut dyn Hasher| h.write(soa),
                addresses: &[],
                cname_targets: &[],
                host_targets: &[],
                signed_bytes: 0,
            },
            clock.now(),
        );
    };
    let before = down();
    negative("n1.sig-example.com", b"soa a");
    assert_eq!(down(), before + 90);
    negative("n2.sig-example.com", b"soa a");
    assert_eq!(down(), before + 90, "the same SOA again is free");
    negative("n3.sig-example.com", b"soa with data in it");
    assert_eq!(down(), before + 180, "a changed SOA counts");
}

/// A client that reads a few domains' big TXT RRsets (apex verification tokens, 1.5–4 KB each)
/// and then looks up ordinary hosts there (each a new address: pieces of data) is not a
/// downstream channel: big answers count their first 256 bytes and a sixteenth of the rest.
/// Two of them in a minute, counted whole, sinkholed the domain (score 86).
#[test]
fn a_few_big_txt_rrsets_and_ordinary_lookups_never_alert() {
    let settings = GroupDetectConfig::default();
    for (what, sizes) in [
        ("two big TXT", vec![2004usize, 1493]),
        ("three big TXT", vec![4000, 3000, 2500]),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut worst = 0u8;
        for (i, &bytes) in sizes.iter().enumerate() {
            let qname = if i == 0 {
                "big-example.com".to_string()
            } else {
                format!("txt{i}.big-example.com")
            };
            let a = observe(&d, ip(1), &qname, 16, &settings);
            worst = worst.max(a.score);
            d.observe_answer_at(
                &ClientKey::from(ip(1)),
                &qname,
                "big-example.com",
                16,
                &FreshAnswer {
                    nxdomain: false,
                    answers: 1,
                    bytes,
                    content: &|h: &mut dyn Hasher| h.write_usize(bytes),
                    records: &|h: &mut dyn Hasher| h.write_usize(bytes),
                    addresses: &[],
                    cname_targets: &[],
                    host_targets: &[],
                    signed_bytes: 0,
                },
                clock.now(),
            );
            clock.advance(Duration::from_secs(2));
        }
        for (i, host) in ["www", "api", "mail", "cdn", "status", "docs"]
            .iter()
            .enumerate()
        {
            let addr = IpAddr::from([203, 0, 113, 10 + u8::try_from(i).unwrap_or(0)]);
            let a = ask_and_answer(
                &d,
                1,
                &format!("{host}.big-example.com"),
                1,
                &[addr],
                &[],
                &settings,
            );
            worst = worst.max(a.score);
            clock.advance(Duration::from_secs(2));
        }
        assert!(worst < 60, "{what}: score {worst}");
    }
}

/// Record data that is not an address carries whatever its server puts there: a poller reading
/// fresh HTTPS parameters (an `ech` blob), CAA or OPENPGPKEY answers, whether it asks counter
/// names or one name with TTL 0, is contained as a TXT poller is. These answers counted
/// nothing, and one moved 1.4 MB in five minutes unseen.
#[test]
fn fresh_record_data_of_any_type_counts_as_downstream() {
    let settings = GroupDetectConfig::default();
    for (what, qtype, counter_names) in [
        ("HTTPS, counter names", 65u16, true),
        ("HTTPS, one name", 65, false),
        ("CAA, counter names", 257, true),
        ("OPENPGPKEY, one name", 61, false),
        // PTR outside the reverse trees: a name of its server's choosing.
        ("PTR, counter names", 12, true),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut contained = None;
        for i in 0u32..600 {
            let qname = if counter_names {
                format!("{i}.s7.cfg-poll.com")
            } else {
                "cfg.cfg-poll.com".to_string()
            };
            let a = observe(&d, ip(1), &qname, qtype, &settings);
            if a.level >= Level::Throttle {
                contained = Some(i);
                break;
            }
            d.observe_answer_at(
                &ClientKey::from(ip(1)),
                &qname,
                "cfg-poll.com",
                qtype,
                &FreshAnswer {
                    nxdomain: false,
                    answers: 1,
                    bytes: 914,
                    content: &|h: &mut dyn Hasher| h.write_u32(i),
                    records: &|h: &mut dyn Hasher| h.write_u32(i),
                    addresses: &[],
                    cname_targets: &[],
                    host_targets: &[],
                    signed_bytes: 0,
                },
                clock.now(),
            );
            clock.advance(Duration::from_millis(200));
        }
        let i = contained.unwrap_or_else(|| panic!("{what}: never contained in 600 answers"));
        assert!(i <= 60, "{what}: contained only at answer {i}");
    }
}

/// A negative answer (NXDOMAIN, NODATA) says what its zone's SOA says, the same for every
/// name: an agent asking HTTPS for a hundred hosts of one domain that has none (browsers ask
/// HTTPS for every host) is not a downstream channel. A tunnel writing its data into the SOA of
/// its negative answers (a new SOA each time) is counted, and contained.
#[test]
fn negative_answers_count_only_when_their_soa_says_something_new() {
    let settings = GroupDetectConfig::default();
    for (what, fresh_soa) in [("the zone's SOA", false), ("a fresh SOA each time", true)] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut worst = Level::None;
        for i in 0u32..200 {
            let qname = format!("host{i}.many-hosts.com");
            worst = worst.max(observe(&d, ip(1), &qname, 65, &settings).level);
            d.observe_answer_at(
                &ClientKey::from(ip(1)),
                &qname,
                "many-hosts.com",
                65,
                &FreshAnswer {
                    nxdomain: false,
                    answers: 0,
                    bytes: 240,
                    content: &|h: &mut dyn Hasher| h.write_u32(i),
                    records: &|h: &mut dyn Hasher| {
                        if fresh_soa {
                            h.write_u32(i);
                        } else {
                            h.write(b"many-hosts.com SOA ns1 hostmaster 7 3600 600 86400 60");
                        }
                    },
                    addresses: &[],
                    cname_targets: &[],
                    host_targets: &[],
                    signed_bytes: 0,
                },
                clock.now(),
            );
            clock.advance(Duration::from_millis(300));
        }
        if fresh_soa {
            assert!(worst >= Level::Throttle, "{what}: only {worst:?}");
        } else {
            assert!(worst < Level::Alert, "{what}: {worst:?}");
        }
    }
}

/// Lookup services (antivirus reputation, DNS blocklists) are questions to the vendor's own
/// servers: an engine checking five new file hashes a second for a minute after an install,
/// ESET's base32 lookups, and a mail relay checking every message's sender against three
/// Spamhaus lists are never contained; their names count at a 32nd. A tunnel of the same
/// shape under a domain the operator excepted is still contained (exceptions are not
/// bypasses), as is one under a lookup service's look-alike.
#[test]
fn lookup_service_bursts_are_not_contained_but_look_alikes_are() {
    let settings = GroupDetectConfig::default();
    let hex = |r: &mut u64, n: usize| -> String {
        (0..n)
            .map(|_| {
                char::from(b"0123456789abcdef"[usize::try_from(xorshift(r) % 16).unwrap_or(0)])
            })
            .collect()
    };
    let b32 = |r: &mut u64, n: usize| -> String {
        (0..n)
            .map(|_| {
                char::from(
                    b"abcdefghijklmnopqrstuvwxyz234567"
                        [usize::try_from(xorshift(r) % 32).unwrap_or(0)],
                )
            })
            .collect()
    };
    let run = |d: &Detector,
               clock: &ManualClock,
               names: &mut dyn FnMut(u32) -> Vec<String>,
               step_ms: u64,
               count: u32| {
        let mut worst = Level::None;
        let mut at = None;
        for i in 0..count {
            for name in names(i) {
                let a = observe(d, ip(1), &name, 1, &settings);
                if a.level > worst {
                    worst = a.level;
                    at = Some(i);
                }
            }
            clock.advance(Duration::from_millis(step_ms));
        }
        (worst, at)
    };
    // Five new hashes a second for a minute: Sophos SHA-1 and McAfee MD5 names.
    let (d, clock) = detector(&DetectConfig::default());
    let mut r = 0x5eed_u64;
    let (worst, at) = run(
        &d,
        &clock,
        &mut |i| {
            if i % 2 == 0 {
                vec![format!("{}.4.sophosxl.net", hex(&mut r, 40))]
            } else {
                vec![format!("{}.avts.mcafee.com", hex(&mut r, 32))]
            }
        },
        200,
        300,
    );
    assert!(
        worst < Level::Throttle,
        "antivirus burst: {worst:?} at {at:?}"
    );
    // ESET: two 26-character base32 labels, three a second for a minute.
    let (d, clock) = detector(&DetectConfig::default());
    let (worst, at) = run(
        &d,
        &clock,
        &mut |_| vec![format!("{}.{}.a.e5.sk", b32(&mut r, 26), b32(&mut r, 26))],
        333,
        180,
    );
    assert!(worst < Level::Throttle, "eset burst: {worst:?} at {at:?}");
    // A mail relay: ten messages a minute for ten minutes, each checked against zen (the
    // sending IP), DBL (two domains) and HBL (the sender's address hashed, base32).
    let (d, clock) = detector(&DetectConfig::default());
    let (worst, at) = run(
        &d,
        &clock,
        &mut |i| {
            let o = xorshift(&mut r).to_be_bytes();
            vec![
                format!("{}.{}.{}.{}.zen.spamhaus.org", o[0], o[1], o[2], o[3]),
                format!("sender{i}-{}.com.dbl.spamhaus.org", hex(&mut r, 4)),
                format!("link{}.net.dbl.spamhaus.org", hex(&mut r, 6)),
                format!("{}._email.hbl.dq.spamhaus.net", b32(&mut r, 32)),
            ]
        },
        6_000,
        100,
    );
    assert!(worst < Level::Alert, "mail relay: {worst:?} at {at:?}");
    // The same antivirus-shaped burst under an operator's own exception, and under a
    // look-alike of a lookup service, is still contained.
    let own = DetectConfig {
        exceptions: vec!["corp-av.example".into()],
        ..DetectConfig::default()
    };
    for (what, cfg, suffix) in [
        ("operator exception", own, "corp-av.example"),
        (
            "look-alike",
            DetectConfig::default(),
            "sophosxl.net.attacker.example",
        ),
    ] {
        let (d, clock) = detector(&cfg);
        let (worst, at) = run(
            &d,
            &clock,
            &mut |_| vec![format!("{}.{suffix}", hex(&mut r, 40))],
            200,
            300,
        );
        assert!(worst >= Level::Throttle, "{what}: only {worst:?} ({at:?})");
    }
}

/// Managed clusters add the cloud's own suffixes to a pod's search list: EKS
/// `<region>.compute.internal` (`ec2.internal` in us-east-1), AKS
/// `<id>.<x>.internal.cloudapp.net`, GKE `<zone>.c.<project>.internal`, `c.<project>.internal`
/// and `google.internal`. Under the default `search_domains` (GKE's project suffix added, as
/// the README says) their expansions are queries, not data: a pod reaching a hundred hosts in
/// as many seconds raises no alert (with `cluster.local` alone EKS's pods were sinkholed on
/// `compute.internal` within four minutes, and each new host then resolved to the sinkhole
/// from its first expansion).
#[test]
fn managed_cluster_search_suffixes_are_search_domains_by_default() {
    let settings = GroupDetectConfig::default();
    for (cloud, suffixes) in [
        ("eks", vec!["us-west-2.compute.internal", "ec2.internal"]),
        (
            "gke",
            vec![
                "us-central1-a.c.my-project.internal",
                "c.my-project.internal",
                "google.internal",
            ],
        ),
        (
            "aks",
            vec!["bx0kq4lz3f2ezmgmzdlfkcnd0d.gx.internal.cloudapp.net"],
        ),
    ] {
        let mut cfg = DetectConfig::default();
        if cloud == "gke" {
            cfg.search_domains.push("c.my-project.internal".into());
        }
        let (d, clock) = detector(&cfg);
        let client = ip(91);
        let key = ClientKey::from(client);
        let hosts = [
            "api", "www", "cdn", "auth", "static", "assets", "storage", "docs", "status", "upload",
        ];
        let domains = [
            "github.com",
            "openai.com",
            "pypi.org",
            "azureedge.net",
            "googleapis.com",
            "slack.com",
            "sentry.io",
            "cloudflare.com",
            "example-shop.com",
            "news-site.org",
        ];
        let mut worst = (0u8, String::new());
        for (h, dom) in hosts
            .iter()
            .flat_map(|h| domains.iter().map(move |d| (h, d)))
        {
            let name = format!("{h}.{dom}");
            let mut tries: Vec<String> = [
                "agents.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ]
            .iter()
            .chain(suffixes.iter())
            .map(|s| format!("{name}.{s}"))
            .collect();
            tries.push(name.clone());
            let last = tries.len() - 1;
            for (j, q) in tries.iter().enumerate() {
                let a = observe(&d, client, q, 1, &settings);
                d.observe_rcode(&key, registrable_domain(q), j < last);
                if a.score > worst.0 {
                    worst = (a.score, q.clone());
                }
            }
            clock.advance(Duration::from_secs(1));
        }
        assert!(worst.0 < 60, "{cloud}: score {} at {}", worst.0, worst.1);
    }
}

/// The query type as a channel: one name asked with random types off the common list (each
/// answered NODATA with the same SOA, which costs nothing) is contained within a few minutes at
/// 10 q/s; a client asking the common types of one name (addresses, mail, HTTPS, CAA, TXT) over
/// and over adds nothing, and never alerts.
#[test]
fn random_query_types_on_one_name_count_and_common_ones_do_not() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut x = 0x1234_5678_u64;
    let mut reached = None;
    for i in 0..3000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let qtype = 256 + u16::try_from(x % 65_000).unwrap_or(0);
        let a = observe(&d, ip(1), "t.typechan-example.com", qtype, &settings);
        if a.level >= Level::Alert {
            reached = Some(i);
            break;
        }
        clock.advance(Duration::from_millis(100));
    }
    let reached = reached.expect("random types on one name alert");
    assert!(reached < 1800, "alerted after {reached} queries");

    let (d, clock) = detector(&DetectConfig::default());
    let mut worst = 0u8;
    for i in 0..3000usize {
        let qtype = [1u16, 28, 15, 65, 257, 16, 64, 6][i % 8];
        let a = observe(&d, ip(1), "www.common-example.com", qtype, &settings);
        worst = worst.max(a.score);
        clock.advance(Duration::from_millis(100));
    }
    assert!(worst < 60, "score {worst}");
}

/// Replays one client's benign queries (`at` in seconds) as the pipeline reports them: the
/// query, then its answer's rcode into the states it updated (`nxdomain` says which answers
/// were NXDOMAIN, by query index). Returns the highest level and the first query (index,
/// name) that reached it.
fn replay_tracked(
    d: &Detector,
    clock: &ManualClock,
    client: IpAddr,
    traffic: &[testgen::BenignQuery],
    nxdomain: &dyn Fn(usize) -> bool,
) -> (Level, u8, Option<(usize, String)>) {
    let settings = GroupDetectConfig::default();
    let start = clock.now();
    let key = ClientKey::from(client);
    let (mut top, mut score, mut at) = (Level::None, 0, None);
    for (i, q) in traffic.iter().enumerate() {
        let when = start + Duration::from_secs(q.at);
        if when > clock.now() {
            clock.advance(when - clock.now());
        }
        let obs = Observation {
            client: &key,
            group: "agents",
            qname: &q.qname,
            domain: registrable_domain(&q.qname),
            qtype: q.qtype,
            settings: &settings,
        };
        let (a, tracked) = d.observe_tracked_at(&obs, clock.now());
        if let Some(t) = tracked {
            d.observe_rcode_tracked(&t, nxdomain(i), clock.now());
        }
        score = score.max(a.score);
        if a.level > top {
            top = a.level;
            at = Some((i, q.qname.clone()));
        }
    }
    (top, score, at)
}

/// An sshd-like host reverse-resolving ~8 new IPv6 peers a minute for an hour (half from
/// random /32s, half from one /48 with random /64s and privacy identifiers), a third of them
/// without a PTR (NXDOMAIN), is never contained. Every nibble name's registrable domain is its
/// first nibble's zone (`2.ip6.arpa`): keyed by that, they were one key and the host was
/// sinkholed within minutes; keyed by /32, the random peers spread over many keys, and the
/// one /48's peers pay for what their addresses add.
#[test]
fn an_sshd_host_reverse_resolving_ipv6_and_ipv4_peers_for_an_hour_is_not_contained() {
    for (what, traffic) in [
        (
            "ipv6",
            testgen::sshd_ipv6_peers(8, 60, testgen::Peers::Mixed, 41),
        ),
        (
            "ipv6 one /48",
            testgen::sshd_ipv6_peers(8, 60, testgen::Peers::OneSite, 48),
        ),
        ("ipv4", testgen::sshd_ipv4_peers(8, 60, 42)),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let (top, score, at) = replay_tracked(&d, &clock, ip(50), &traffic, &|i| i % 3 == 0);
        println!("sshd {what}: top {top:?}, score {score}, at {at:?}");
        assert!(top < Level::Throttle, "sshd {what}: {top:?} at {at:?}");
    }
}

/// A log pipeline enriching 30 new peer addresses a minute for an hour with their PTR names,
/// from networks all over: IPv6 peers from random /32s, IPv4 peers from random /8s and from
/// 10.0.0.0/8. Keyed by first nibble or octet (`2.ip6.arpa`, `10.in-addr.arpa`) each was one
/// key that filled its budget; keyed by /32 and /16 they spread over many.
#[test]
fn a_pipeline_reverse_resolving_peers_from_many_networks_is_not_contained() {
    let internal: Vec<testgen::BenignQuery> = testgen::sshd_ipv4_peers(30, 60, 52)
        .into_iter()
        .map(|mut q| {
            // The same peers' addresses moved into 10.0.0.0/8: `d.c.b.10.in-addr.arpa`.
            let labels: Vec<&str> = q.qname.split('.').collect();
            q.qname = format!("{}.{}.{}.10.in-addr.arpa", labels[0], labels[1], labels[2]);
            q
        })
        .collect();
    for (what, traffic) in [
        (
            "ipv6 /32s",
            testgen::sshd_ipv6_peers(30, 60, testgen::Peers::Global, 51),
        ),
        ("ipv4 10/8", internal),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let (top, score, at) = replay_tracked(&d, &clock, ip(57), &traffic, &|i| i % 3 == 0);
        println!("pipeline {what}: top {top:?}, score {score}, at {at:?}");
        assert!(top < Level::Throttle, "pipeline {what}: {top:?} at {at:?}");
    }
}

/// A Postfix-like relay checking 2 new senders a second (fresh random addresses, no repeats)
/// against four blocklists for ten minutes, nearly every answer NXDOMAIN, is never throttled
/// or sinkholed: with the shipped lists, with four lists on no list at all (the sender's
/// address asked under several lists is one address, not four), and with the sender's PTR and
/// one unlisted list.
#[test]
fn a_relay_checking_two_senders_a_second_against_four_lists_is_not_contained() {
    for lists in [
        &[
            "dnsbl.sorbs.net",
            "psbl.surriel.com",
            "bl.0spam.org",
            "ix.dnsbl.manitu.net",
        ][..],
        &[
            "rbl.mailguard-example.net",
            "dnsbl.spamtrap-example.org",
            "bl.junkfilter-example.com",
            "combined.listwatch-example.io",
        ],
        // The sender's PTR, then one list no one wrote down.
        &["in-addr.arpa", "rbl.mailguard-example.net"],
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let traffic = testgen::dnsbl_relay(lists, 2, 600, 43);
        let (top, score, at) = replay_tracked(&d, &clock, ip(51), &traffic, &|i| i % 50 != 0);
        println!("relay {}: top {top:?}, score {score}, at {at:?}", lists[0]);
        assert!(
            top < Level::Throttle,
            "relay {}: {top:?} at {at:?}",
            lists[0]
        );
    }
}

/// One exchange from a generator: the query from `client`, then its answer fresh from
/// upstream; the query's assessment.
fn exchange(
    d: &Detector,
    client: u32,
    e: &testgen::Exchange,
    settings: &GroupDetectConfig,
) -> Assessment {
    let a = observe(d, ip(client), &e.qname, e.qtype, settings);
    answer_exchange(d, client, e);
    a
}

/// The answer half of [`exchange`] alone.
fn answer_exchange(d: &Detector, client: u32, e: &testgen::Exchange) {
    let targets: Vec<Box<str>> = e.cname_targets.iter().map(|t| t.as_str().into()).collect();
    d.observe_answer_at(
        &ClientKey::from(ip(client)),
        &e.qname,
        registrable_domain(&e.qname),
        e.qtype,
        &FreshAnswer {
            nxdomain: e.nxdomain,
            answers: e.answers,
            bytes: e.bytes,
            content: &|h: &mut dyn Hasher| h.write_u64(e.tag),
            records: &|h: &mut dyn Hasher| h.write_u64(e.tag),
            addresses: &e.addresses,
            cname_targets: &targets,
            host_targets: &[],
            signed_bytes: 0,
        },
        d.clock.now(),
    );
}

/// Bytes of downstream data a [`testgen::HoppingDownstream`] tunnel read before its client was
/// contained client-wide: it asks four names a second, each answered with fresh data, and hops
/// to a new registrable domain whenever its domain is sinkholed. Contained client-wide: the
/// first query to a new domain is already sinkholed. Returns (bytes read, domains used), or
/// None when it read `limit` bytes uncontained.
fn hopping_downstream_until_contained(
    carrier: testgen::DownCarrier,
    limit: usize,
    seed: u64,
) -> Option<(usize, u64)> {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut tunnel = testgen::HoppingDownstream::new(carrier, seed);
    let (mut moved, mut fresh_domain) = (0usize, true);
    while moved < limit {
        let e = tunnel.next_exchange();
        let a = observe(&d, ip(50), &e.qname, e.qtype, &settings);
        if a.level >= Level::Sinkhole {
            if fresh_domain {
                return Some((moved, tunnel.domains_used()));
            }
            tunnel.hop();
            fresh_domain = true;
        } else {
            answer_exchange(&d, 50, &e);
            moved += e.payload;
            fresh_domain = false;
        }
        clock.advance(Duration::from_millis(250));
    }
    None
}

/// A tunnel reading its data from answers, hopping to a new registrable domain each time the
/// last one is sinkholed, is contained client-wide within 32 KB of downstream data, whatever
/// carries it: big TXT answers (an audit's tunnel moved ~1 MB in 60 s over 43 domains with
/// 3.9 KB TXT answers, each domain sinkholed, the client never), NULL, CNAME chains, many AAAA
/// records, or data in a negative answer's SOA. Answer bytes counted only per (client, domain)
/// and per domain, so the client-wide evidence never saw them.
#[test]
fn a_domain_hopping_downstream_tunnel_is_contained_client_wide() {
    use testgen::DownCarrier;
    for (i, carrier) in [
        DownCarrier::Txt(3900),
        DownCarrier::Txt(1000),
        DownCarrier::Null(1100),
        DownCarrier::CnameChain(8),
        DownCarrier::ManyAaaa(40),
        DownCarrier::NegativeSoa,
    ]
    .into_iter()
    .enumerate()
    {
        let got = hopping_downstream_until_contained(carrier, 1 << 20, 90 + i as u64);
        println!("{:32} {got:?}", carrier.name());
        let (moved, domains) =
            got.unwrap_or_else(|| panic!("{}: read 1 MB, never contained", carrier.name()));
        assert!(
            moved <= 32 * 1024,
            "{}: {moved} B over {domains} domains before containment",
            carrier.name()
        );
    }
}

/// [`run_on`] reporting each answer's rcode (NXDOMAIN) into the states its query updated, as
/// the pipeline does; returns (payload bytes sent before the level reached `Throttle`, the
/// highest level).
fn run_tracked(d: &Detector, clock: &ManualClock, client: IpAddr, t: &Traffic) -> (usize, Level) {
    let settings = GroupDetectConfig::default();
    let key = ClientKey::from(client);
    let (mut bytes, mut contained, mut top) = (0, false, Level::None);
    for q in &t.queries {
        let obs = Observation {
            client: &key,
            group: "agents",
            qname: &q.qname,
            domain: registrable_domain(&q.qname),
            qtype: q.qtype,
            settings: &settings,
        };
        let (a, tracked) = d.observe_tracked_at(&obs, clock.now());
        if let Some(tracked) = tracked {
            d.observe_rcode_tracked(&tracked, true, clock.now());
        }
        contained |= a.level >= Level::Throttle;
        if !contained {
            bytes += q.payload;
        }
        top = top.max(a.level);
        clock.advance(t.interval);
    }
    (bytes, top)
}

/// Tunnels under delegated reverse zones stay on one key when reverse names are keyed by
/// network (/16 in `in-addr.arpa`, /32 in `ip6.arpa`): octets under a /16 or a /24, and
/// nibbles under an IPv6 /48 (10 bytes a name), are contained within 4 KB.
#[test]
fn reverse_zone_tunnels_keyed_by_network_are_contained_within_4_kb() {
    for t in [
        testgen::reverse_zone_exfil("7.10.in-addr.arpa", 16 * 1024, 44),
        testgen::reverse_zone_exfil("9.7.10.in-addr.arpa", 16 * 1024, 45),
        testgen::ipv6_reverse_zone_exfil(0x2001_0db8_4242, 16 * 1024, 46),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let (bytes, top) = run_tracked(&d, &clock, ip(52), &t);
        println!("{:40} contained after {bytes} B, top {top:?}", t.tool);
        assert!(
            top >= Level::Sinkhole && bytes <= 4096,
            "{}: {bytes} B, {top:?}",
            t.tool
        );
    }
}

/// A tunnel writing 4 bytes a name as fake reversed IPv4 addresses under its own zone, ten
/// names a second, is contained within 2 KB: an address-shaped name under a zone no list
/// names, asked under no other list, is priced at its 32 bits. One that also asks each fake
/// address under a real list first (as a relay would) earns the lookup discount, and is
/// contained within the bound stated below.
#[test]
fn a_tunnel_of_fake_reversed_ips_is_contained() {
    let (d, clock) = detector(&DetectConfig::default());
    let t = testgen::fake_reversed_ip_exfil(
        "bl.tunnel-example.net",
        None,
        16 * 1024,
        Duration::from_millis(100),
        47,
    );
    let (bytes, top) = run_tracked(&d, &clock, ip(53), &t);
    println!("{:52} contained after {bytes} B, top {top:?}", t.tool);
    assert!(
        top >= Level::Sinkhole && bytes <= 2048,
        "{bytes} B, {top:?}"
    );
    // The mimic: each fake address asked under zen.spamhaus.org first, then under its own
    // zone, ten addresses a second. Its own zone's names are corroborated, so they count at
    // a 32nd: it moved 8.9 KB before it was throttled (within the 12 KB asserted), where the
    // tunnel above moved 420 B. That is the price of a general blocklist mechanism: a relay's
    // lookups under lists no one wrote down look exactly like this.
    let (d, clock) = detector(&DetectConfig::default());
    let t = testgen::fake_reversed_ip_exfil(
        "bl.tunnel-example.net",
        Some("zen.spamhaus.org"),
        64 * 1024,
        Duration::from_millis(50),
        49,
    );
    let (bytes, top) = run_tracked(&d, &clock, ip(54), &t);
    println!("{:52} contained after {bytes} B, top {top:?}", t.tool);
    assert!(
        top >= Level::Throttle && bytes <= 12 * 1024,
        "{bytes} B, {top:?}"
    );
}

/// Team Cymru's malware hash registry and IP-to-ASN lookups are lookup services: a scanner
/// checking three new file hashes a second for a minute, then one every 10 s for nine more
/// (MD5 and SHA-1), and a log pipeline
/// enriching two new addresses a second with their origin and peer ASNs (TXT) are not
/// contained; the same hashes under a zone no list names are (a hex tunnel's shape exactly).
#[test]
fn cymru_hash_and_asn_lookups_are_not_contained_unlisted_hashes_are() {
    let mut r = testgen::Prng::new(50);
    let hex = |r: &mut testgen::Prng, n: usize| -> String {
        r.bytes(n).iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut hashes = Vec::new();
    let mut asn = Vec::new();
    let mut unlisted = Vec::new();
    for t in 0..600 {
        // Three a second for the first minute (a scan after an install), then one every 10 s.
        let n = if t < 60 { 3 } else { u32::from(t % 10 == 0) };
        for i in 0..n {
            let h = if i == 0 {
                hex(&mut r, 20)
            } else {
                hex(&mut r, 16)
            };
            unlisted.push(testgen::BenignQuery {
                at: t,
                client: 0,
                class: "hash",
                qname: format!("{h}.hash.lookup-example.net"),
                qtype: 16,
            });
            hashes.push(testgen::BenignQuery {
                at: t,
                client: 0,
                class: "hash",
                qname: format!("{h}.hash.cymru.com"),
                qtype: 16,
            });
        }
        for _ in 0..2 {
            let b = r.bytes(4);
            let ip = format!("{}.{}.{}.{}", b[0], b[1], b[2], 1 + b[3] % 223);
            for zone in ["origin.asn.cymru.com", "peer.asn.cymru.com"] {
                asn.push(testgen::BenignQuery {
                    at: t,
                    client: 0,
                    class: "asn",
                    qname: format!("{ip}.{zone}"),
                    qtype: 16,
                });
            }
        }
    }
    for (what, traffic) in [("mhr", &hashes), ("asn", &asn)] {
        let (d, clock) = detector(&DetectConfig::default());
        let (top, score, at) = replay_tracked(&d, &clock, ip(55), traffic, &|i| i % 4 != 0);
        println!("cymru {what}: top {top:?}, score {score}, at {at:?}");
        assert!(top < Level::Throttle, "cymru {what}: {top:?} at {at:?}");
    }
    let (d, clock) = detector(&DetectConfig::default());
    let (top, _, at) = replay_tracked(&d, &clock, ip(56), &unlisted, &|_| true);
    assert!(top >= Level::Sinkhole, "unlisted hashes: {top:?} at {at:?}");
}

/// An operator's release (`forget`) names the registrable domain (`10.in-addr.arpa`), while
/// the reverse names' evidence is kept under their network's key (`7.10.in-addr.arpa`): the
/// network keys that alerted before the release start afresh, so the released client is not
/// contained again on its next reverse lookup.
#[test]
fn a_release_of_a_reverse_domain_forgets_its_network_keys() {
    let (d, clock) = detector(&DetectConfig::default());
    let t = testgen::reverse_zone_exfil("7.10.in-addr.arpa", 4 * 1024, 53);
    let (_, top) = run_tracked(&d, &clock, ip(58), &t);
    assert!(top >= Level::Sinkhole, "{top:?}");
    let settings = GroupDetectConfig::default();
    let next = "9.8.7.10.in-addr.arpa";
    assert!(observe(&d, ip(58), next, 12, &settings).level >= Level::Throttle);
    clock.advance(Duration::from_secs(1));
    d.forget(&ClientKey::from(ip(58)), &["10.in-addr.arpa"]);
    let a = observe(&d, ip(58), "9.8.7.10.in-addr.arpa", 12, &settings);
    assert_eq!(a.level, Level::None, "after the release: {a:?}");
}

/// Ordinary many-domain traffic with its answers is not contained on the client-wide
/// downstream evidence: an agent browsing 400 different sites in 18 minutes (A, AAAA, HTTPS
/// for each host, CDN CNAMEs), and a mail host checking the mail authentication of 300
/// domains in 15 minutes (apex TXT with SPF, one in ten a 1.5–4 KB set; DMARC; DKIM keys;
/// MX).
#[test]
fn browsing_many_sites_and_a_mail_auth_sweep_are_not_contained() {
    let settings = GroupDetectConfig::default();
    for (what, count, every_ms) in [
        ("browsing", 400usize, 0u64),
        ("mail authentication sweep", 300, 2800),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut r = testgen::Prng::new(7);
        let mut worst = (Level::None, 0u8, String::new());
        for (i, domain) in testgen::ordinary_domains(count, 8).iter().enumerate() {
            let exchanges = if what == "browsing" {
                testgen::browse_site(domain, &mut r)
            } else {
                testgen::mail_auth_check(domain, &mut r)
            };
            for e in &exchanges {
                let a = exchange(&d, 51, e, &settings);
                if a.score > worst.1 {
                    worst = (a.level, a.score, e.qname.clone());
                }
                clock.advance(Duration::from_millis(50));
            }
            // Browsing: the first 60 sites within a minute, then one every 3 s.
            let pause = match (every_ms, i) {
                (0, 0..60) => 1000,
                (0, _) => 3000,
                (ms, _) => ms,
            };
            clock.advance(Duration::from_millis(pause));
        }
        println!(
            "{what}: highest score {} ({:?}) at {}",
            worst.1, worst.0, worst.2
        );
        assert!(worst.0 < Level::Alert, "{what}: {worst:?}");
    }
}

/// Under a public suffix anyone may register names in (`duckdns.org`, `github.io`: the public
/// suffix list's private section) the registrable domain of `<63 random characters>.duckdns.org`
/// is the whole name, so its subdomain part is empty: a client asking a new such name each
/// query moves its data in the registrable label, which counted nothing (one new registrable
/// domain a query, each seen once). The label of a domain new to the client counts client-wide,
/// and the client is contained within 4 KB.
#[test]
fn data_in_registrable_labels_under_a_public_suffix_is_contained() {
    let settings = GroupDetectConfig::default();
    for suffix in ["duckdns.org", "github.io"] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut r = testgen::Prng::new(31);
        let (mut sent, mut contained) = (0usize, None);
        for i in 0..2000 {
            // 39 bytes as 63 base32 characters.
            let label = testgen::Encoding::Base32.encode(&r.bytes(39));
            let label = label.replace('.', "");
            let qname = format!("{}.{suffix}", &label[..label.len().min(63)]);
            assert_eq!(registrable_domain(&qname), qname);
            let a = observe(&d, ip(60), &qname, 1, &settings);
            d.observe_rcode(&ClientKey::from(ip(60)), &qname, true);
            if a.level >= Level::Sinkhole {
                contained = Some(i);
                break;
            }
            sent += 39;
            clock.advance(Duration::from_millis(100));
        }
        println!("<label>.{suffix}: sinkholed at query {contained:?}, after {sent} B");
        assert!(
            contained.is_some() && sent <= 4096,
            "{suffix}: {sent} B, {contained:?}"
        );
    }
}

/// Hundreds of ordinary sites (`github.com`, `ycombinator.com`, `bbc.co.uk`, …, brand-like
/// names of one or two words) are as many new registrable domains, each label counted beyond
/// what a brand name carries: an agent asking the apex and `www` of 500 different sites in five
/// minutes, a few personal names under `duckdns.org` among them, raises no alert.
#[test]
fn hundreds_of_ordinary_registrable_domains_raise_no_alert() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut domains = testgen::ordinary_domains(500, 12);
    domains.extend(
        [
            "myhomeserver",
            "johns-nas",
            "family-photos",
            "pihole-garage",
        ]
        .iter()
        .map(|l| format!("{l}.duckdns.org")),
    );
    let mut worst = (0u8, String::new());
    for domain in &domains {
        for qname in [domain.clone(), format!("www.{domain}")] {
            for qtype in [1, 28] {
                let a = observe(&d, ip(61), &qname, qtype, &settings);
                d.observe_rcode(&ClientKey::from(ip(61)), domain, false);
                if a.score > worst.0 {
                    worst = (a.score, qname.clone());
                }
                assert!(a.level < Level::Alert, "{qname}: {a:?}");
            }
        }
        clock.advance(Duration::from_millis(600));
    }
    println!("{} domains: highest score {worst:?}", domains.len());
}

/// What one answer adds client-wide: a [`CLIENT_DOWN_SHARE`]th of its counted bytes while its
/// domain's counted bytes stay within the allowance, every byte of the undiscounted size past
/// it; from a private domain, within the allowance, a [`CLIENT_PRIVATE_DOWN_SHARE`]th of its
/// undiscounted size when that is more.
#[test]
fn answer_bytes_count_client_wide_a_share_within_a_domains_allowance_and_in_full_past_it() {
    #[allow(clippy::cast_precision_loss)]
    let (share, private_share_of) = (CLIENT_DOWN_SHARE as f32, CLIENT_PRIVATE_DOWN_SHARE as f32);
    let close = |got: f32, want: f32| assert!((got - want).abs() < 0.01, "{got} != {want}");
    let shared = |pair_down, down, full| client_down_bytes(pair_down, down, full, 0.0);
    close(shared(0, 0, 0), 0.0);
    // A first 500-byte answer: within the allowance.
    close(shared(500, 500, 500), 500.0 / share);
    // A 4 KB answer (counted 496) that crosses it after 1,004: 20 counted bytes within (at the
    // share), the rest of its 4,000 bytes in full.
    #[allow(clippy::cast_precision_loss)]
    let crossing = 20.0 / share + (4000 * 476 / 496) as f32;
    close(shared(1500, 496, 4000), crossing);
    // Past it: the whole answer, undiscounted.
    close(shared(3000, 483, 3900), 3900.0);
    // `full` is never below what was counted.
    close(shared(5000, 200, 0), 200.0);
    // A private domain: a 3.9 KB answer (counted 483) within the allowance counts its 3,900
    // bytes at the private share, not its 483 at the other; a 200-byte one the more of the two.
    let private = |pair_down, down, full| client_down_bytes(pair_down, down, full, 1.0);
    close(private(483, 483, 3900), 3900.0 / private_share_of);
    close(
        private(200, 200, 200),
        (200.0 / share).max(200.0 / private_share_of),
    );
    // Past the allowance nothing changes.
    close(private(3000, 483, 3900), 3900.0);
    // Half private: halfway between.
    close(
        client_down_bytes(483, 483, 3900, 0.5),
        (483.0 / share + 3900.0 / private_share_of) / 2.0,
    );
    // Private up to two clients, shared from sixteen.
    close(private_share(0), 1.0);
    close(private_share(1), 1.0);
    close(private_share(2), 1.0);
    assert!(private_share(4) < 0.7 && private_share(4) > 0.6);
    close(private_share(16), 0.0);
}

/// Bytes of downstream data a [`testgen::HoppingDownstream`] tunnel read before its client was
/// contained (sinkhole or better on any query), when it hops to a new registrable domain after
/// every `per_domain` answers whether or not that domain was contained: before any domain
/// has given it what looking at a domain takes. One name every `interval`. Returns (bytes
/// read, domains used, level reached), or None when it read `limit` bytes uncontained.
fn hopping_early_until_contained(
    carrier: testgen::DownCarrier,
    per_domain: usize,
    interval: Duration,
    limit: usize,
    seed: u64,
) -> Option<(usize, u64, Level)> {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut tunnel = testgen::HoppingDownstream::new(carrier, seed);
    let (mut moved, mut on_domain) = (0usize, 0usize);
    while moved < limit {
        if on_domain == per_domain {
            tunnel.hop();
            on_domain = 0;
        }
        let e = tunnel.next_exchange();
        let a = observe(&d, ip(70), &e.qname, e.qtype, &settings);
        if a.level >= Level::Sinkhole {
            return Some((moved, tunnel.domains_used(), a.level));
        }
        answer_exchange(&d, 70, &e);
        moved += e.payload;
        on_domain += 1;
        clock.advance(interval);
    }
    None
}

/// A tunnel reading its data from answers that moves to a new registrable domain after every
/// one or two answers, before any domain has given it 1 KB (counted), paid client-wide only a
/// 64th of each answer's counted bytes (the big-answer discount included): at four answers a
/// second it read 1.2 MB of 600-byte TXT answers, 2.5 MB of 1.5 KB ones and 4.6 MB of 3.9 KB
/// ones before it was sinkholed, and with many AAAA records or CNAME chains more than 8 MB.
/// A domain no other client asks counts its answers' undiscounted size client-wide, so
/// whatever the answer size and hop rate the client is sinkholed within a bounded total:
/// ~0.8–1.1 MB at this rate for answers of 600 bytes and more. A channel of small answers
/// (eight AAAA, 128 bytes of data each) moves ~0.5 KB/s, under what the detection window
/// contains, and is sinkholed by the long window (~8 MB, after ~4 hours); so is one reading
/// 600-byte answers once a second (~12.5 MB, after ~6 hours). At one 3.9 KB answer a second
/// it is sinkholed within the detection window (~0.9 MB).
#[test]
fn a_tunnel_hopping_domains_before_each_allowance_is_contained_within_a_bounded_total() {
    use testgen::DownCarrier;
    const FAST: usize = 1280 * 1024;
    const SLOW: usize = 16 << 20;
    let (quick, second) = (Duration::from_millis(250), Duration::from_secs(1));
    let mut worst = 0;
    for (i, (carrier, per_domain, interval, bound)) in [
        (DownCarrier::Txt(600), 1, quick, FAST),
        (DownCarrier::Txt(600), 2, quick, FAST),
        (DownCarrier::Txt(1500), 1, quick, FAST),
        (DownCarrier::Txt(1500), 2, quick, FAST),
        (DownCarrier::Txt(3900), 1, quick, FAST),
        (DownCarrier::Txt(3900), 2, quick, FAST),
        (DownCarrier::Null(1100), 1, quick, FAST),
        (DownCarrier::ManyAaaa(40), 1, quick, FAST),
        (DownCarrier::Txt(3900), 2, second, FAST),
        (DownCarrier::Txt(600), 1, second, SLOW),
        (DownCarrier::ManyAaaa(8), 2, quick, SLOW),
        (DownCarrier::CnameChain(4), 1, quick, SLOW),
    ]
    .into_iter()
    .enumerate()
    {
        let got =
            hopping_early_until_contained(carrier, per_domain, interval, SLOW, 120 + i as u64);
        println!(
            "{:24} hop every {per_domain}, every {interval:?}: {got:?}",
            carrier.name()
        );
        let (moved, domains, _) = got.unwrap_or_else(|| {
            panic!(
                "{} hopping every {per_domain}: read {SLOW} B, never contained",
                carrier.name()
            )
        });
        if bound == FAST {
            worst = worst.max(moved);
        }
        assert!(
            moved <= bound,
            "{} hopping every {per_domain}: {moved} B over {domains} domains",
            carrier.name()
        );
    }
    println!("most read before containment, answers of 600 bytes and more: {worst} B");
}

/// One client reading TXT and HTTPS records of hundreds of distinct domains no other client
/// asks, in fifteen minutes: what the pricing of private domains' answers by their size must
/// leave alone. A crawler reading 450 sites' HTTPS records with ECH configs (300–500 bytes, at
/// the apex and `www`), `_mta-sts` and `_dmarc`; a mail server checking SPF, DMARC and the DKIM
/// key of 300 inbound senders (under six common selectors). Each is ~1 KB of private answers
/// a domain, 260–470 KB in all: no alert. Prints each class's highest score.
#[test]
fn one_client_reading_records_of_hundreds_of_private_domains_raises_no_alert() {
    let settings = GroupDetectConfig::default();
    type Class = fn(&str, &mut testgen::Prng) -> Vec<testgen::Exchange>;
    for (what, count, class) in [
        (
            "ECH/MTA-STS/DMARC crawl",
            450usize,
            testgen::ech_crawl_site as Class,
        ),
        ("inbound sender checks", 300, testgen::inbound_sender_check),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut r = testgen::Prng::new(17);
        // Spread evenly over 15 minutes, a few answers a domain 50 ms apart.
        let pause = Duration::from_millis(900_000 / count as u64 - 200);
        let (mut worst, mut read) = ((Level::None, 0u8, String::new()), 0usize);
        for domain in testgen::ordinary_domains(count, 21) {
            for e in &class(&domain, &mut r) {
                let a = exchange(&d, 52, e, &settings);
                read += e.bytes;
                if a.score > worst.1 {
                    worst = (a.level, a.score, e.qname.clone());
                }
                clock.advance(Duration::from_millis(50));
            }
            clock.advance(pause);
        }
        println!(
            "{what}: {count} domains, {read} B of answers, highest score {} ({:?}) at {}",
            worst.1, worst.0, worst.2
        );
        assert!(worst.0 < Level::Alert, "{what}: {worst:?}");
    }
}

/// One agent resolving hundreds of distinct, ordinary names of one service within seconds, in
/// a scrambled order (shards by key, a cluster's nodes, a crawler's pages, service discovery,
/// a mail host's provider hosts, a CDN's asset hosts), each for A and AAAA: a pattern and small
/// fields, a few bits a name; none is throttled. Before name templates and recent labels ([`template`],
/// [`floor`]) these were priced by their difference from the last few names (7–25 bits each):
/// 500 shards or nodes, or 180 service names, throttled their client.
#[test]
fn benign_bursts_of_structured_names_are_not_contained() {
    use testgen::BurstShape;
    let cases = [
        (BurstShape::Shards, 500, 2_000),
        (BurstShape::Nodes, 500, 5_000),
        (BurstShape::Nodes, 180, 1_000),
        (BurstShape::Pages, 400, 4_000),
        (BurstShape::Services, 180, 1_000),
        (BurstShape::Services, 240, 2_000),
        (BurstShape::NumberedServices, 300, 1_000),
        (BurstShape::MailHosts, 240, 5_000),
        (BurstShape::CdnAssets, 500, 2_000),
        (BurstShape::AddressHosts, 400, 2_000),
        (BurstShape::Racks, 300, 1_000),
    ];
    let mut failures = Vec::new();
    for (seed, (shape, count, millis)) in cases.into_iter().enumerate() {
        let (d, clock) = detector(&DetectConfig::default());
        let burst = testgen::structured_burst(shape, "example.com", count, millis, seed as u64);
        let (alerts, top) = replay_millis(&d, &clock, &burst);
        println!("{shape:?}: {count} names in {millis} ms, top score {top}");
        // Never throttled (70); the templates' shapes stay under the alert (60) too. Service
        // names recombined from words are priced per label (6 bits each), not per field, and
        // 240 of them in two seconds alert (61) without being contained.
        let words = shape == BurstShape::Services;
        if top >= 70 || (!words && (top >= 60 || !alerts.is_empty())) {
            failures.push(format!("{shape:?} × {count}: score {top}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Data written in the order a client first asks the names of small templates (the one thing
/// templates do not price beyond [`template::ORDER_BITS`]): contained within 4 KB.
#[test]
fn a_tunnel_in_the_order_of_template_names_is_contained_within_4_kb() {
    let (d, clock) = detector(&DetectConfig::default());
    let t = testgen::template_order_exploit("order-exfil-example.com", 29);
    let (bytes, alert, top) = run_on(&d, &clock, ip(36), &t);
    println!(
        "{} contained after {bytes} B, alert after {alert:?}, top {top:?}",
        t.tool
    );
    assert!(
        top >= Level::Sinkhole && bytes <= 4096,
        "{bytes} B, {top:?}"
    );
}

/// One SRV query from `client` for `qname`, then its answer fresh from upstream with `targets`
/// (5 bytes of fields and ~36 bytes of name each on the wire); the query's assessment.
fn ask_srv(
    d: &Detector,
    client: u32,
    qname: &str,
    targets: &[crate::wire::HostTarget],
    settings: &GroupDetectConfig,
) -> Assessment {
    let a = observe(d, ip(client), qname, features::QTYPE_SRV, settings);
    let set = |h: &mut dyn Hasher| {
        for t in targets {
            h.write(t.name.as_bytes());
            h.write_u64(t.fields);
        }
    };
    d.observe_answer_at(
        &ClientKey::from(ip(client)),
        qname,
        registrable_domain(qname),
        features::QTYPE_SRV,
        &FreshAnswer {
            nxdomain: false,
            answers: u16::try_from(targets.len()).unwrap(),
            bytes: 12 + targets.iter().map(|t| 18 + t.name.len()).sum::<usize>(),
            content: &set,
            records: &set,
            addresses: &[],
            cname_targets: &[],
            host_targets: targets,
            signed_bytes: 0,
        },
        d.clock.now(),
    );
    a
}

fn srv_target(name: String, port: u16) -> crate::wire::HostTarget {
    crate::wire::HostTarget {
        name: name.into_boxed_str(),
        fields: u64::from(1u16) << 32 | u64::from(1u16) << 16 | u64::from(port),
        field_bits: 48,
    }
}

/// Service discovery over SRV (a Consul-style registry: 60 services polled every 10 s, five
/// instances each named by a random ID and port, a rolling deploy of one service every five
/// minutes) is priced by what is new in its targets, as an address answer is, and never
/// alerts; its first answers were carrier bytes, and nine of them sinkholed the domain in
/// 0.1 s. A tunnel writing fresh
/// targets and ports into the SRV answers of one polled name is still sinkholed.
#[test]
fn srv_answers_are_priced_by_their_targets_discovery_passes_a_srv_tunnel_does_not() {
    let settings = GroupDetectConfig::default();
    let (d, clock) = detector(&DetectConfig::default());
    let zone = "service.dc1.sd.corp-example.com";
    let instance = |svc: usize, k: usize, epoch: u64| {
        let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ (svc as u64) << 20 ^ (k as u64) << 8 ^ epoch;
        format!("i-0{:016x}.node.dc1.sd.corp-example.com", xorshift(&mut h))
    };
    let mut worst = Level::None;
    for round in 0u64..90 {
        // A rolling deploy every five minutes (30 rounds) replaces one service's five
        // instances.
        for svc in 0..60 {
            let targets: Vec<_> = (0..5)
                .map(|k| {
                    let epoch = u64::from(round >= 30 * (svc as u64 + 1));
                    srv_target(instance(svc, k, epoch), 20_000 + (svc * 5 + k) as u16)
                })
                .collect();
            let qname = format!("_http._tcp.svc-{svc}.{zone}");
            let a = ask_srv(&d, 1, &qname, &targets, &settings);
            worst = worst.max(a.level);
            clock.advance(Duration::from_millis(10));
        }
        clock.advance(Duration::from_millis(10_000 - 600));
    }
    assert!(
        worst < Level::Alert,
        "15 minutes of SRV service discovery reached {worst:?}"
    );

    let (d, clock) = detector(&DetectConfig::default());
    let mut rng = 0x0bad_5eed_u64;
    let mut reached = None;
    for poll in 0..600 {
        let targets: Vec<_> = (0..8)
            .map(|_| {
                let r = xorshift(&mut rng);
                srv_target(format!("{r:016x}.dl-example.net"), (r >> 48) as u16)
            })
            .collect();
        if ask_srv(&d, 1, "_x._tcp.poll.dl-example.net", &targets, &settings).level
            >= Level::Sinkhole
        {
            reached = Some(poll);
            break;
        }
        clock.advance(Duration::from_secs(1));
    }
    let poll = reached
        .expect("an SRV tunnel polling one name (8 fresh targets a second) was never sinkholed");
    println!(
        "SRV tunnel sinkholed at poll {poll} ({} bytes in targets and ports)",
        poll * 8 * 10
    );
}

/// One PTR query from `client` for `qname`, then its answer fresh from upstream naming
/// `target`; the query's assessment.
fn ask_ptr(
    d: &Detector,
    client: u32,
    qname: &str,
    target: &str,
    settings: &GroupDetectConfig,
) -> Assessment {
    let a = observe(d, ip(client), qname, features::QTYPE_PTR, settings);
    let targets = [crate::wire::HostTarget {
        name: target.into(),
        fields: 0,
        field_bits: 0,
    }];
    let set = |h: &mut dyn Hasher| h.write(target.as_bytes());
    d.observe_answer_at(
        &ClientKey::from(ip(client)),
        qname,
        registrable_domain(qname),
        features::QTYPE_PTR,
        &FreshAnswer {
            nxdomain: false,
            answers: 1,
            bytes: 12 + target.len() + 2,
            content: &set,
            records: &set,
            addresses: &[],
            cname_targets: &[],
            host_targets: &targets,
            signed_bytes: 0,
        },
        d.clock.now(),
    );
    a
}

/// Team Cymru's IP-to-ASN lookups, a shipped lookup service, one every 5 s for an hour (and
/// one a second for ten minutes) with their ~60-byte TXT answers, each followed by the ASN's
/// description (`AS<n>.asn.cymru.com`): the answers are the vendor's own data, which no client
/// and no one else's server chooses, and count nothing; the client is never contained. Counted in full they
/// sinkholed it in 5 minutes. A TXT download of the same size from a zone of the client's own
/// choosing is still contained.
#[test]
fn a_lookup_services_answers_are_priced_at_its_share() {
    let settings = GroupDetectConfig::default();
    let ask = |d: &Detector, client: u32, qname: &str, text: &str| {
        let a = observe(d, ip(client), qname, features::QTYPE_TXT, &settings);
        let set = |h: &mut dyn Hasher| h.write(text.as_bytes());
        d.observe_answer_at(
            &ClientKey::from(ip(client)),
            qname,
            registrable_domain(qname),
            features::QTYPE_TXT,
            &FreshAnswer {
                nxdomain: false,
                answers: 1,
                bytes: 12 + text.len() + 1,
                content: &set,
                records: &set,
                addresses: &[],
                cname_targets: &[],
                host_targets: &[],
                signed_bytes: 0,
            },
            d.clock.now(),
        );
        a.level
    };
    for (every, count) in [
        (Duration::from_secs(5), 720u32),
        (Duration::from_secs(1), 600),
    ] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut rng = 0xc1_u64;
        let mut worst = Level::None;
        for _ in 0..count {
            let r = xorshift(&mut rng);
            let (a, b, c) = (r & 0xff, (r >> 8) & 0xff, (r >> 16) & 0xff);
            let qname = format!("{c}.{b}.{a}.origin.asn.cymru.com");
            let text = format!(
                "{} | {a}.{b}.{c}.0/24 | US | arin | 20{:02}-0{}-1{}",
                (r >> 24) % 400_000,
                (r >> 44) % 25,
                1 + (r >> 50) % 9,
                (r >> 56) % 10
            );
            worst = worst.max(ask(&d, 1, &qname, &text));
            // The usual second step: the ASN's description.
            let asn = (r >> 24) % 400_000;
            let desc = format!(
                "{asn} | US | arin | 2001-0{}-01 | EXAMPLE-AS{asn}, US",
                1 + asn % 9
            );
            worst = worst.max(ask(&d, 1, &format!("as{asn}.asn.cymru.com"), &desc));
            clock.advance(every);
        }
        assert!(
            worst < Level::Throttle,
            "Cymru lookups every {every:?} reached {worst:?}"
        );
    }
    // The same answers from a zone the client chose: a download, contained.
    let (d, clock) = detector(&DetectConfig::default());
    let mut rng = 0xc2_u64;
    let mut worst = Level::None;
    for i in 0..720u32 {
        let r = xorshift(&mut rng);
        let text = format!("{r:016x}{:016x}{:016x}", xorshift(&mut rng), r ^ 7);
        worst = worst.max(ask(&d, 2, &format!("q{i}.cmd.dl-example.net"), &text));
        clock.advance(Duration::from_secs(1));
    }
    assert!(
        worst >= Level::Sinkhole,
        "a TXT download reached only {worst:?}"
    );
}

/// PTR answers in the reverse trees are priced by what is new in their target names, as SRV
/// targets are. A reverse zone's server answering one polled name (or a few hundred names in
/// turn) with fresh 200-byte names each time is sinkholed within ~16 KB, as a CNAME target
/// download is (the same quarter weight: what is new in a host name); when these
/// answers counted nothing, 487 KB came down one agent's PTR queries in 15 minutes with no
/// alert. A monitoring host sweeping a /24 every minute for 15 minutes, its ISP's templated
/// names (`host-1-2-3-4.static.isp-example.net`) given the same each time, is not alerted.
#[test]
fn reverse_ptr_answers_are_priced_by_their_targets() {
    let settings = GroupDetectConfig::default();
    let (d, clock) = detector(&DetectConfig::default());
    let mut worst = Level::None;
    for _round in 0..15 {
        for host in 1..=254u32 {
            let qname = format!("{host}.77.51.198.in-addr.arpa");
            let target = format!("host-198-51-77-{host}.static.isp-example.net");
            worst = worst.max(ask_ptr(&d, 1, &qname, &target, &settings).level);
            clock.advance(Duration::from_millis(200));
        }
        clock.advance(Duration::from_millis(60_000 - 254 * 200));
    }
    assert!(
        worst < Level::Alert,
        "a /24 sweep a minute reached {worst:?}"
    );

    // A /22 swept in 75 s (13.5 names a second), each named by the ISP's template with its
    // address: the template is paid for once. Priced name by name it reached 91.
    let (d, clock) = detector(&DetectConfig::default());
    let mut worst = Level::None;
    for c in 0..4u32 {
        for host in 0..254u32 {
            let qname = format!("{host}.{}.51.198.in-addr.arpa", 76 + c);
            let target = format!("ip-198-51-{}-{host}.pool.broadband.isp-example.net", 76 + c);
            worst = worst.max(ask_ptr(&d, 3, &qname, &target, &settings).level);
            clock.advance(Duration::from_millis(74));
        }
    }
    assert!(worst < Level::Throttle, "a /22 sweep reached {worst:?}");

    for names in [1u32, 254] {
        let (d, clock) = detector(&DetectConfig::default());
        let mut rng = 0x9e37_u64 + u64::from(names);
        let mut reached = None;
        for poll in 0..4000u32 {
            let qname = format!("{}.66.55.in-addr.arpa", 1 + poll % names);
            let labels: Vec<String> = (0..4)
                .map(|_| {
                    let mut l = String::new();
                    while l.len() < 55 {
                        l.push_str(&format!("{:013x}", xorshift(&mut rng) >> 12));
                    }
                    l.truncate(55);
                    l
                })
                .collect();
            let target = format!("{}.rdns-exfil.net", labels.join("."));
            if ask_ptr(&d, 2, &qname, &target, &settings).level >= Level::Sinkhole {
                reached = Some(poll);
                break;
            }
            clock.advance(Duration::from_millis(250));
        }
        let poll = reached.unwrap_or_else(|| {
            panic!("fresh PTR names under {names} reverse names were never sinkholed")
        });
        let moved = poll as usize * 4 * 55;
        println!("{names} reverse names: sinkholed after {moved} B");
        assert!(moved <= 24_576, "{names} names: sinkholed after {moved} B");
    }
}

/// An antivirus engine checking file hashes against a vendor not on the shipped list (five new
/// SHA-1s a second for two minutes after an install, then one a minute for half an hour) is
/// contained at once: an exception takes away appearance only. Named in `[detect]
/// lookup_services`, the zone is priced as the shipped lookup services are (a 32nd of its
/// information) and the engine is never alerted, while a tunnel elsewhere from the same client
/// is still contained. (Sustained at five a second, it reaches the window's budget in about
/// four minutes, as a shipped lookup service does.)
#[test]
fn an_operator_named_lookup_service_is_priced_as_the_shipped_ones() {
    let hash = |i: u64| {
        let mut s = 0x5eed_0000_u64 ^ i;
        format!(
            "{:016x}{:016x}{:08x}",
            xorshift(&mut s),
            xorshift(&mut s),
            xorshift(&mut s) as u32
        )
    };
    let run = |cfg: &DetectConfig| {
        let (d, clock) = detector(cfg);
        let settings = GroupDetectConfig::default();
        let mut top = Level::None;
        for i in 0..630u64 {
            let a = observe(
                &d,
                ip(7),
                &format!("{}.avlookup.vendorx.example", hash(i)),
                16,
                &settings,
            );
            top = top.max(a.level);
            // Five a second for two minutes (an install), then one a minute.
            clock.advance(Duration::from_millis(if i < 600 { 200 } else { 60_000 }));
        }
        (top, d, clock)
    };
    let excepted = DetectConfig {
        exceptions: vec!["avlookup.vendorx.example".into()],
        ..DetectConfig::default()
    };
    let (top, _, _) = run(&excepted);
    assert!(top >= Level::Throttle, "an exception alone: {top:?}");
    let named = DetectConfig {
        lookup_services: vec!["avlookup.vendorx.example".into()],
        ..DetectConfig::default()
    };
    let (top, d, clock) = run(&named);
    assert!(top < Level::Alert, "a named lookup service: {top:?}");
    // The same client tunnelling elsewhere is still contained.
    let settings = GroupDetectConfig::default();
    let mut tunnel = Level::None;
    for q in testgen::iodine_base32("t.exfil.example", 200, 5).queries {
        tunnel = tunnel.max(observe(&d, ip(7), &q.qname, q.qtype, &settings).level);
        clock.advance(Duration::from_millis(100));
    }
    assert!(tunnel >= Level::Sinkhole, "{tunnel:?}");
}

/// Resolver and latency measurement beacons ask a fresh random label per probe of the vendor's
/// own zone (`<32 hex>.clo.footprintdns.com` from Microsoft 365 and Edge, `<uuid>.is-cf.
/// cloudflareresolve.com` behind 1.1.1.1/help): a nonce, not data. At 15 probes a minute an
/// independent run had them sinkholed within 45 s; they are shipped lookup services now.
#[test]
fn measurement_beacons_are_not_contained() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let mut s = 0xbeac_0000_u64;
    let mut top = Level::None;
    for i in 0..300u64 {
        let (a, b) = (xorshift(&mut s), xorshift(&mut s));
        let qname = if i % 2 == 0 {
            format!("{a:016x}{b:016x}.clo.footprintdns.com")
        } else {
            format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}.is-cf.cloudflareresolve.com",
                a >> 32,
                a & 0xffff,
                (a >> 16) & 0xfff,
                b & 0xfff,
                b >> 16
            )
        };
        top = top.max(observe(&d, ip(8), &qname, 1, &settings).level);
        clock.advance(Duration::from_secs(4));
    }
    assert!(top < Level::Alert, "{top:?}");
}

/// A crawler: one agent asks 12 host names under each of 200 sites in an hour (words, shard
/// numbers, regions, a CDN edge's short hex tag), more than the 8 a domain's client-wide
/// allowance covers (`CLIENT_ALLOWANCE_NAMES`). Their bits past the allowance count
/// client-wide in full, and stay far under an alert.
#[test]
fn a_crawler_with_many_hosts_per_site_raises_no_alert() {
    let (d, clock) = detector(&DetectConfig::default());
    let settings = GroupDetectConfig::default();
    let regions = ["us-east-1", "eu-west-2", "ap-south-1", "sa-east-1"];
    let mut r = testgen::Prng::new(12);
    let mut worst = (Level::None, 0u8, String::new());
    for (i, site) in testgen::ordinary_domains(200, 11).iter().enumerate() {
        // Ordinary words, shard numbers, regions and a CDN edge's short hex tag.
        let hosts = [
            "www".to_string(),
            "static".to_string(),
            "api".to_string(),
            "login".to_string(),
            format!("cdn{}", r.below(8)),
            format!("img{}", r.below(4)),
            format!("api-{}", regions[usize::try_from(r.below(4)).unwrap_or(0)]),
            format!("edge-{:04x}", r.below(0x10000)),
            format!("media-{:03}", r.below(1000)),
            "blog".to_string(),
            "docs".to_string(),
            "shop".to_string(),
        ];
        for host in hosts {
            let qname = format!("{host}.{site}");
            let a = observe(
                &d,
                ip(90),
                &qname,
                if i % 2 == 0 { 1 } else { 28 },
                &settings,
            );
            if a.score > worst.1 {
                worst = (a.level, a.score, qname);
            }
            clock.advance(Duration::from_millis(1500));
        }
    }
    println!(
        "crawler: highest score {} ({:?}) at {}",
        worst.1, worst.0, worst.2
    );
    assert!(worst.0 < Level::Alert, "{worst:?}");
}
