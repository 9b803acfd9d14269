use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use super::*;
use crate::clock::ManualClock;

/// A context over a fixed table: `10.0.0.0/24` is gated group `agents`, `10.0.1.0/24` gated
/// monitor-only group `watched`, `fd00::/64`.. IPv6 in `agents`; anything else is no group.
#[derive(Default)]
struct FakeContext {
    contained: Mutex<Vec<(ClientKey, String, Level, String)>>,
}

impl DeniedContext for FakeContext {
    fn version(&self) -> u64 {
        7
    }

    fn attribute(&self, src: IpAddr) -> Option<Attributed> {
        let (group, monitor_only) = match src {
            IpAddr::V4(a) if a.octets()[..3] == [10, 0, 0] => ("agents", false),
            IpAddr::V4(a) if a.octets()[..3] == [10, 0, 1] => ("watched", true),
            IpAddr::V6(a) if a.segments()[0] == 0xfd00 => ("agents", false),
            _ => return None,
        };
        Some(Attributed {
            group: group.into(),
            key: ClientKey::from(src),
            monitor_only,
        })
    }

    fn contain(
        &self,
        key: &ClientKey,
        group: &str,
        level: Level,
        reason: String,
    ) -> Option<ContainmentEvent> {
        self.contained
            .lock()
            .push((key.clone(), group.into(), level, reason.clone()));
        Some(ContainmentEvent {
            client: key.addr,
            agent: None,
            group: group.into(),
            domain: Some("*".into()),
            action: level.as_str().into(),
            score: 100,
            until: None,
            reason,
        })
    }
}

fn settings(action: DeniedAction) -> EvidenceSettings {
    EvidenceSettings {
        alert_after: 100,
        contain_after: 3,
        window: Duration::from_secs(60),
        action,
    }
}

fn drop_of(group: &str, src: &str, dst: &str, port: u16) -> DroppedPacket {
    DroppedPacket {
        prefix: format!("dnsward-egress {group}: "),
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        port: Some(port),
        proto: "tcp".into(),
    }
}

fn kinds(bodies: &[EventBody]) -> Vec<&'static str> {
    bodies
        .iter()
        .map(|b| match b {
            EventBody::EgressDenied(_) => "egress_denied",
            EventBody::Alert(_) => "alert",
            EventBody::ContainmentStarted(_) => "containment_started",
            _ => "other",
        })
        .collect()
}

#[test]
fn distinct_destinations_not_retries_contain_the_client_with_its_evidence() {
    let clock = ManualClock::new();
    let ctx = FakeContext::default();
    let mut ev = DeniedEvidence::new(settings(DeniedAction::Sinkhole), clock.clone());
    // One blocked address retried many times, on several ports: never contained.
    for port in [80, 443, 8080, 80, 443, 22, 23, 24, 25, 26, 27, 28] {
        let out = ev.observe(&ctx, &drop_of("agents", "10.0.0.5", "198.19.0.1", port));
        assert_eq!(kinds(&out), ["egress_denied"]);
    }
    // Two more distinct destinations: the third distinct one contains it.
    assert_eq!(
        kinds(&ev.observe(&ctx, &drop_of("agents", "10.0.0.5", "198.19.0.2", 443))),
        ["egress_denied"]
    );
    let out = ev.observe(&ctx, &drop_of("agents", "10.0.0.5", "198.19.0.3", 8443));
    assert_eq!(
        kinds(&out),
        ["egress_denied", "alert", "containment_started"]
    );
    let contained = ctx.contained.lock().clone();
    assert_eq!(contained.len(), 1);
    let (key, group, level, reason) = &contained[0];
    assert_eq!(key, &ClientKey::from("10.0.0.5".parse::<IpAddr>().unwrap()));
    assert_eq!((group.as_str(), *level), ("agents", Level::Sinkhole));
    for needle in [
        "3 distinct addresses",
        "within 60s",
        "14 attempts",
        "198.19.0.1:22/tcp,23/tcp,24/tcp,25/tcp,26/tcp,80/tcp,443/tcp,8080/tcp",
        "198.19.0.3:8443/tcp",
    ] {
        assert!(reason.contains(needle), "{needle:?} not in {reason}");
    }
    let EventBody::Alert(alert) = &out[1] else {
        unreachable!()
    };
    assert_eq!(alert.action, "sinkhole");
    assert_eq!(alert.breakdown["egress_denied_destinations"], 3.0);
    assert_eq!(alert.samples.len(), 3);
    // Once per window; a new window counts afresh.
    let out = ev.observe(&ctx, &drop_of("agents", "10.0.0.5", "198.19.0.4", 1));
    assert_eq!(kinds(&out), ["egress_denied"]);
    clock.advance(Duration::from_secs(60));
    for d in ["198.19.0.7", "198.19.0.8"] {
        ev.observe(&ctx, &drop_of("agents", "10.0.0.5", d, 1));
    }
    assert_eq!(ctx.contained.lock().len(), 1, "new window starts at zero");
    ev.observe(&ctx, &drop_of("agents", "10.0.0.5", "198.19.0.9", 1));
    assert_eq!(ctx.contained.lock().len(), 2);
}

#[test]
fn one_clients_drops_never_contain_another() {
    let clock = ManualClock::new();
    let ctx = FakeContext::default();
    let mut ev = DeniedEvidence::new(settings(DeniedAction::Throttle), clock);
    // Three clients each reach two destinations: 6 distinct in the group, none contained.
    for src in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        for d in ["198.19.0.1", "198.19.0.2"] {
            ev.observe(&ctx, &drop_of("agents", src, d, 443));
        }
    }
    assert!(ctx.contained.lock().is_empty());
    ev.observe(&ctx, &drop_of("agents", "10.0.0.2", "198.19.0.3", 443));
    let contained = ctx.contained.lock().clone();
    assert_eq!(contained.len(), 1);
    assert_eq!(contained[0].0.addr, "10.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(contained[0].2, Level::Throttle);
}

#[test]
fn ipv6_clients_are_counted_by_their_64() {
    let clock = ManualClock::new();
    let ctx = FakeContext::default();
    let mut ev = DeniedEvidence::new(settings(DeniedAction::Throttle), clock);
    for (src, d) in [
        ("fd00::1", "2001:db8::1"),
        ("fd00::2", "2001:db8::2"),
        ("fd00::ffff:3", "2001:db8::3"),
    ] {
        ev.observe(&ctx, &drop_of("agents", src, d, 443));
    }
    assert_eq!(ev.tracked(), 1, "one /64, one client");
    assert_eq!(ctx.contained.lock().len(), 1);
}

#[test]
fn only_attributable_drops_count() {
    let clock = ManualClock::new();
    let ctx = FakeContext::default();
    let mut ev = DeniedEvidence::new(settings(DeniedAction::Throttle), clock);
    for d in ["198.19.0.1", "198.19.0.2", "198.19.0.3", "198.19.0.4"] {
        // Outside every gated group's CIDRs.
        let out = ev.observe(&ctx, &drop_of("agents", "192.0.2.9", d, 443));
        assert_eq!(kinds(&out), ["egress_denied"], "still an event");
        // Logged by another group's rule than the one whose CIDRs hold the source.
        ev.observe(&ctx, &drop_of("builders", "10.0.0.9", d, 443));
        // No group in the prefix at all.
        let mut p = drop_of("agents", "10.0.0.9", d, 443);
        p.prefix = "something else".into();
        ev.observe(&ctx, &p);
    }
    assert!(ctx.contained.lock().is_empty());
    assert_eq!(ev.tracked(), 0);
}

#[test]
fn monitor_only_groups_and_alert_only_alert_without_containing() {
    let clock = ManualClock::new();
    let ctx = FakeContext::default();
    let mut ev = DeniedEvidence::new(settings(DeniedAction::Quarantine), clock.clone());
    let alerts_of = |out: &[EventBody]| -> Vec<AlertEvent> {
        out.iter()
            .filter_map(|b| match b {
                EventBody::Alert(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    };
    let mut out = Vec::new();
    for d in ["198.19.0.1", "198.19.0.2", "198.19.0.3", "198.19.0.4"] {
        out.extend(ev.observe(&ctx, &drop_of("watched", "10.0.1.7", d, 443)));
    }
    let alerts = alerts_of(&out);
    assert_eq!(alerts.len(), 1, "the threshold alerts once");
    assert_eq!(
        (alerts[0].action.as_str(), alerts[0].monitor_only),
        ("alert", true)
    );
    assert!(!kinds(&out).contains(&"containment_started"));
    // alert-only, with a count alert first (after 2 drops) and the threshold alert later.
    let mut s = settings(DeniedAction::AlertOnly);
    s.alert_after = 2;
    let mut ev = DeniedEvidence::new(s, clock);
    let mut out = Vec::new();
    for d in [
        "198.19.0.1",
        "198.19.0.2",
        "198.19.0.3",
        "198.19.0.4",
        "198.19.0.5",
    ] {
        out.extend(ev.observe(&ctx, &drop_of("agents", "10.0.0.7", d, 443)));
    }
    let alerts = alerts_of(&out);
    assert_eq!(
        alerts.len(),
        2,
        "the count alert and the threshold alert, once each"
    );
    assert_eq!(alerts[1].breakdown["egress_denied_destinations"], 3.0);
    assert!(
        alerts
            .iter()
            .all(|a| a.action == "alert" && !a.monitor_only)
    );
    assert!(ctx.contained.lock().is_empty());
}

#[test]
fn the_client_table_is_bounded() {
    let clock = ManualClock::new();
    let ctx = FakeContext::default();
    let mut s = settings(DeniedAction::Throttle);
    s.contain_after = 1000;
    let mut ev = DeniedEvidence::new(s, clock.clone());
    // More /64s than the table holds.
    for i in 0..(MAX_CLIENTS + 100) {
        let src = IpAddr::V6(std::net::Ipv6Addr::new(
            0xfd00,
            0,
            0,
            u16::try_from(i).unwrap(),
            0,
            0,
            0,
            1,
        ));
        let mut p = drop_of("agents", "fd00::1", "198.19.0.1", 1);
        p.src = src;
        ev.observe(&ctx, &p);
        if i % 1000 == 0 {
            clock.advance(Duration::from_millis(1));
        }
    }
    assert!(ev.tracked() <= MAX_CLIENTS);
    // A client's destinations are bounded by contain_after, the listed ones by LISTED, their
    // ports by MAX_PORTS.
    let mut p = drop_of("agents", "10.0.0.1", "198.19.0.1", 1);
    for i in 0..2000u16 {
        p.port = Some(i);
        p.dst = IpAddr::from([198, 19, (i % 8) as u8, (i / 8) as u8]);
        ev.observe(&ctx, &p);
    }
    p.dst = IpAddr::from([198, 19, 0, 0]);
    for port in 0..100 {
        p.port = Some(port);
        ev.observe(&ctx, &p);
    }
    let w = &ev.clients[&ClientKey::from("10.0.0.1".parse::<IpAddr>().unwrap())];
    assert_eq!(w.dests.len(), 1000);
    assert_eq!(w.listed.len(), LISTED);
    assert_eq!(w.listed[0].0, p.dst, "listed in the order seen");
    assert_eq!(w.listed[0].1.len(), MAX_PORTS);
}

#[test]
fn the_context_is_object_safe_and_shareable() {
    let ctx: Arc<dyn DeniedContext> = Arc::new(FakeContext::default());
    assert_eq!(ctx.version(), 7);
}
