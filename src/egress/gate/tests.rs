//! Gate behaviour against a fake backend and a manual clock.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};
use parking_lot::Mutex;

use super::*;
use crate::clock::ManualClock;

/// Records every batch; can be slowed down or made to fail.
#[derive(Debug, Default)]
struct FakeBackend {
    batches: Mutex<Vec<Vec<Op>>>,
    delay: Mutex<Duration>,
    fail: Mutex<bool>,
}

impl SetBackend for FakeBackend {
    fn apply(&self, ops: &[Op]) -> Result<(), BackendError> {
        std::thread::sleep(*self.delay.lock());
        if *self.fail.lock() {
            return Err(BackendError::Output("injected".into()));
        }
        self.batches.lock().push(ops.to_vec());
        Ok(())
    }
    fn list(&self) -> Result<Vec<super::super::backend::SetStatus>, BackendError> {
        Ok(Vec::new())
    }
}

impl FakeBackend {
    fn elements(&self) -> Vec<(String, IpAddr, u32)> {
        self.batches
            .lock()
            .iter()
            .flatten()
            .filter_map(|o| match o {
                Op::Element {
                    set,
                    ip,
                    timeout_secs,
                } => Some((set.to_string(), *ip, *timeout_secs)),
                _ => None,
            })
            .collect()
    }
}

fn settings() -> GateSettings {
    GateSettings {
        grace: Duration::from_secs(1),
        min_lifetime: Duration::from_secs(5),
        max_addresses_per_name: 50,
        max_wait: Duration::from_millis(500),
        max_tracked: 1000,
    }
}

fn answer(ttl: u32, addrs: &[IpAddr]) -> Vec<u8> {
    let name = Name::from_ascii("svc.example.").unwrap();
    let mut m = Message::new(1, MessageType::Response, OpCode::Query);
    m.add_query(Query::query(name.clone(), RecordType::A));
    for a in addrs {
        let data = match a {
            IpAddr::V4(v4) => RData::A(rdata::A(*v4)),
            IpAddr::V6(v6) => RData::AAAA(rdata::AAAA(*v6)),
        };
        m.add_answer(Record::from_rdata(name.clone(), ttl, data));
    }
    m.to_vec().unwrap()
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

fn start(s: GateSettings) -> (Arc<Egress>, Arc<FakeBackend>, Arc<ManualClock>) {
    let backend = Arc::new(FakeBackend::default());
    let clock = ManualClock::new();
    let e = Egress::start(s, &["agents", "ci"], backend.clone(), clock.clone()).unwrap();
    (e, backend, clock)
}

#[tokio::test]
async fn start_creates_table_and_both_sets_per_group_in_one_batch() {
    let (e, b, _) = start(settings());
    let first = b.batches.lock()[0].clone();
    assert_eq!(first[0], Op::EnsureTable);
    assert_eq!(first.len(), 3);
    assert!(first.contains(&Op::EnsureSets {
        v4: "allow4_agents".into(),
        v6: "allow6_agents".into()
    }));
    e.shutdown(false);
}

#[tokio::test]
async fn a_new_address_is_written_before_the_wait_ends_and_a_repeat_costs_nothing() {
    let (e, b, _) = start(settings());
    let msg = answer(2, &[ip(1), "2001:db8::1".parse().unwrap()]);
    let wait = e
        .admit("agents", &msg)
        .expect("new addresses must be waited for");
    assert!(wait.done().await);
    assert_eq!(
        b.elements(),
        vec![
            // TTL 2 + grace 1, floored at min 5, plus an eighth (rounded up) of slack.
            ("allow4_agents".into(), ip(1), 6),
            ("allow6_agents".into(), "2001:db8::1".parse().unwrap(), 6),
        ]
    );
    // The same answer again (a cache hit at the same moment): already promised, nothing to do.
    assert!(e.admit("agents", &msg).is_none());
    // Another group gets its own elements.
    assert!(e.admit("ci", &msg).unwrap().done().await);
    assert_eq!(b.elements().len(), 4);
    // A group that is not gated is never written.
    assert!(e.admit("other", &msg).is_none());
    e.shutdown(false);
}

#[tokio::test]
async fn cache_hits_with_a_counted_down_ttl_are_free_and_a_fresh_ttl_refreshes() {
    let (e, b, clock) = start(GateSettings {
        min_lifetime: Duration::ZERO,
        ..settings()
    });
    // TTL 30 + grace 1 = 31 s promised, written as 31 + 4 (an eighth, rounded up) = 35 s.
    assert!(
        e.admit("agents", &answer(30, &[ip(1)]))
            .unwrap()
            .done()
            .await
    );
    // Within the slack a full-TTL answer (a local zone's) is still covered: t=3 promises t+34.
    clock.advance(Duration::from_secs(3));
    assert!(e.admit("agents", &answer(30, &[ip(1)])).is_none());
    // What a cache hit sends at t=10: TTL 20. Same promise (t+31): free.
    clock.advance(Duration::from_secs(7));
    assert!(e.admit("agents", &answer(20, &[ip(1)])).is_none());
    // The cache entry expired and was fetched again: TTL 30 at t=11 promises t+42 > 35: refresh.
    clock.advance(Duration::from_secs(1));
    let w = e.admit("agents", &answer(30, &[ip(1)])).expect("refresh");
    assert!(w.done().await);
    assert_eq!(
        b.elements(),
        vec![
            ("allow4_agents".into(), ip(1), 35),
            ("allow4_agents".into(), ip(1), 35),
        ]
    );
    e.shutdown(false);
}

#[tokio::test]
async fn writes_queued_while_a_batch_is_applied_go_out_together() {
    let (e, b, _) = start(settings());
    *b.delay.lock() = Duration::from_millis(100);
    let first = e.admit("agents", &answer(60, &[ip(1)])).unwrap();
    // Give the flusher time to take batch 1 and start applying it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while e.shared.queue.lock().collecting == first.batch() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let waits: Vec<_> = (2..12)
        .map(|i| e.admit("agents", &answer(60, &[ip(i)])).unwrap())
        .collect();
    assert!(waits.iter().all(|w| w.batch() == first.batch() + 1));
    // A second answer for an address already queued waits for the same batch, writes nothing.
    let dup = e.admit("agents", &answer(60, &[ip(5)])).unwrap();
    assert_eq!(dup.batch(), first.batch() + 1);
    assert!(first.done().await);
    for w in waits {
        assert!(w.done().await);
    }
    assert!(dup.done().await);
    let batches = b.batches.lock().clone();
    // start + batch 1 (one element) + batch 2 (ten elements, ip 5 once)
    assert_eq!(batches.len(), 3, "{batches:?}");
    assert_eq!(batches[2].len(), 10);
    e.shutdown(false);
}

#[tokio::test]
async fn the_wait_is_bounded() {
    let (e, b, _) = start(GateSettings {
        max_wait: Duration::from_millis(20),
        ..settings()
    });
    *b.delay.lock() = Duration::from_millis(400);
    let w = e.admit("agents", &answer(60, &[ip(1)])).unwrap();
    let t = Instant::now();
    assert!(!w.done().await, "a slow backend must not hold the answer");
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    e.shutdown(false);
}

#[tokio::test]
async fn addresses_per_answer_are_capped() {
    let (e, b, _) = start(GateSettings {
        max_addresses_per_name: 3,
        ..settings()
    });
    let addrs: Vec<IpAddr> = (1..=10).map(ip).collect();
    assert!(e.admit("agents", &answer(60, &addrs)).unwrap().done().await);
    assert_eq!(b.elements().len(), 3);
    e.shutdown(false);
}

#[tokio::test]
async fn a_failed_batch_is_forgotten_so_the_next_answer_writes_again() {
    let (e, b, _) = start(settings());
    *b.fail.lock() = true;
    let _ = e
        .admit("agents", &answer(60, &[ip(1)]))
        .unwrap()
        .done()
        .await;
    *b.fail.lock() = false;
    let w = e
        .admit("agents", &answer(60, &[ip(1)]))
        .expect("not remembered after a failure");
    assert!(w.done().await);
    assert_eq!(b.elements().len(), 1);
    e.shutdown(false);
}

#[tokio::test]
async fn a_group_switched_off_loses_both_sets_in_one_batch() {
    let (e, b, _) = start(settings());
    assert!(e.admit("ci", &answer(60, &[ip(1)])).unwrap().done().await);
    let w = e.set_groups(&["agents", "new"]).expect("changes");
    assert!(w.done().await);
    let last = b.batches.lock().last().cloned().unwrap();
    assert!(last.contains(&Op::DeleteSets {
        v4: "allow4_ci".into(),
        v6: "allow6_ci".into()
    }));
    assert!(last.contains(&Op::EnsureSets {
        v4: "allow4_new".into(),
        v6: "allow6_new".into()
    }));
    assert!(e.admit("ci", &answer(60, &[ip(1)])).is_none());
    // Switched back on: its old element is not assumed to exist.
    assert!(e.set_groups(&["agents", "ci"]).unwrap().done().await);
    assert!(e.admit("ci", &answer(60, &[ip(1)])).is_some());
    e.shutdown(false);
}

#[tokio::test]
async fn repopulate_caps_ttls_at_what_remains() {
    let (e, b, _) = start(GateSettings {
        min_lifetime: Duration::ZERO,
        ..settings()
    });
    let msg = answer(300, &[ip(9)]);
    let w = e.repopulate([("agents", "svc.example", msg.as_slice(), 12)]);
    assert!(w.unwrap().done().await);
    assert_eq!(b.elements(), vec![("allow4_agents".into(), ip(9), 15)]);
    e.shutdown(false);
}

#[tokio::test]
async fn the_dedupe_map_is_bounded() {
    let (e, b, clock) = start(GateSettings {
        max_tracked: 4,
        ..settings()
    });
    let addrs: Vec<IpAddr> = (1..=6).map(ip).collect();
    assert!(e.admit("agents", &answer(60, &addrs)).unwrap().done().await);
    assert_eq!(e.tracked(), 4);
    // Untracked addresses are written again; tracked ones are not.
    assert!(e.admit("agents", &answer(60, &addrs)).unwrap().done().await);
    assert_eq!(b.elements().len(), 8);
    // Once entries expire, a sweep makes room.
    clock.advance(Duration::from_secs(120));
    e.sweep();
    assert_eq!(e.tracked(), 0);
    e.shutdown(false);
}
