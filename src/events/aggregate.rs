//! Folding of repeated identical query events: one line per (client, name, type, verdict) and
//! interval instead of one per query, with the count of what was folded.
//!
//! A client that hammers a blocked name (a misconfigured agent retrying, a tunnel tool pinned
//! on a refused domain) would otherwise write a line per query: at resolver rates that is
//! hundreds of megabytes a minute of the same line, and rotation then deletes the older
//! security evidence to make room for it. Within `[events] aggregate_interval` (default 1 s):
//!
//! - the **first** query of a kind is logged at once, as always;
//! - identical queries after it (same client and agent, group, name, type, protocol, verdict,
//!   response code and policy version) are only counted;
//! - when the interval is over (the next identical query after it, the writer's periodic
//!   flush, a slot needed for another kind, or shutdown), one more line is written for them: a
//!   copy of the second query's event with `count` = how many queries it stands for.
//!
//! So every query is accounted for (the sum of `count` over the lines, `count` being 1 when
//! absent), and a name asked once is logged exactly as before. Distinct names are never
//! folded: a tunnel's unique names each keep their own line.
//!
//! The table is fixed-size ([`SLOTS`] slots, each behind its own lock, chosen by the key's
//! hash), so memory is bounded whatever the traffic; two kinds that share a slot just fold
//! less. Folding uses the time the query was received ([`Instant`]), not the pipeline's clock:
//! it is about log volume, never about detection.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Event, EventBody};

/// Slots in the table (a power of two).
pub const SLOTS: usize = 4096;

/// One kind of query being folded.
#[derive(Debug, Default)]
struct Slot {
    /// The kind's hash (0: empty).
    key: u64,
    /// When the kind's interval started (its first logged query).
    since: Option<Instant>,
    /// Queries folded since the last line for this kind.
    folded: u64,
    /// The event written for the folded queries (built at the first folded one).
    template: Option<Box<Event>>,
}

impl Slot {
    /// The line for the queries folded so far, if any; leaves the slot with none.
    fn take_summary(&mut self) -> Option<Event> {
        let n = std::mem::take(&mut self.folded);
        let mut event = *self.template.take()?;
        if n == 0 {
            return None;
        }
        if let EventBody::Query(q) = &mut event.body {
            q.count = n;
        }
        Some(event)
    }
}

/// What [`Aggregator::offer`] decided.
#[derive(Debug)]
pub enum Fold {
    /// Log this query: a first of its kind in the interval.
    Log,
    /// Counted: nothing to write now.
    Folded,
}

/// The folding table.
#[derive(Debug)]
pub struct Aggregator {
    /// The interval.
    interval: Duration,
    /// The slots.
    slots: Box<[Mutex<Slot>]>,
}

impl Aggregator {
    /// A table folding over `interval` (must not be zero: then there is no aggregator).
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: (0..SLOTS).map(|_| Mutex::new(Slot::default())).collect(),
        }
    }

    /// The interval.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A query of kind `key` (a hash of everything that makes two query events identical but
    /// their time) received at `at`. `build` makes its event, and is called only when one is
    /// needed. Also returns the line for an earlier interval's folded queries, if one is due
    /// now: it is to be written before this query's.
    pub fn offer(
        &self,
        key: u64,
        at: Instant,
        build: impl FnOnce() -> Event,
    ) -> (Fold, Option<Event>) {
        let key = key.max(1);
        let mut slot = self.slots[slot_index(key)].lock();
        let fresh = slot
            .since
            .is_some_and(|since| at.saturating_duration_since(since) < self.interval);
        if slot.key == key && fresh {
            if slot.folded == 0 {
                slot.template = Some(Box::new(build()));
            }
            slot.folded += 1;
            return (Fold::Folded, None);
        }
        // A new interval for this kind, or another kind taking the slot: the folded queries
        // of what was there get their line first.
        let summary = slot.take_summary();
        slot.key = key;
        slot.since = Some(at);
        (Fold::Log, summary)
    }

    /// Lines for every kind whose interval ended by `now` (or all of them, with `all`), for
    /// the writer's periodic flush and for shutdown.
    pub fn take_due(&self, now: Instant, all: bool) -> Vec<Event> {
        let mut out = Vec::new();
        for slot in &*self.slots {
            let mut slot = slot.lock();
            if slot.folded == 0 {
                continue;
            }
            let due = all
                || slot
                    .since
                    .is_none_or(|since| now.saturating_duration_since(since) >= self.interval);
            if due {
                // The kind starts over: its next query is logged at once.
                slot.key = 0;
                slot.since = None;
                out.extend(slot.take_summary());
            }
        }
        out
    }
}

/// The slot for `key`: the high bits, which a multiplicative hash mixes best.
fn slot_index(key: u64) -> usize {
    #[allow(clippy::cast_possible_truncation)]
    let i = (key >> 52) as usize;
    i & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::events::QueryEvent;

    fn event(name: &str) -> Event {
        Event {
            ts: "2026-12-02T00:00:00.000000Z".into(),
            policy_version: 1,
            body: EventBody::Query(QueryEvent {
                client: IpAddr::V4(Ipv4Addr::LOCALHOST),
                agent: None,
                auth: "none".into(),
                group: Some("agents".into()),
                qname: name.into(),
                qtype: "A".into(),
                protocol: "udp".into(),
                verdict: "block".into(),
                reason: "not allowlisted".into(),
                rcode: "NXDOMAIN".into(),
                answers: 0,
                latency_us: 1,
                cache_hit: false,
                upstream: None,
                count: 1,
            }),
        }
    }

    fn count(e: &Event) -> u64 {
        match &e.body {
            EventBody::Query(q) => q.count,
            _ => panic!("not a query event"),
        }
    }

    #[test]
    fn first_is_logged_repeats_are_counted_and_summarised_when_the_interval_ends() {
        let agg = Aggregator::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let (fold, summary) = agg.offer(42, t0, || event("x.example"));
        assert!(matches!(fold, Fold::Log) && summary.is_none());
        let mut built = 0;
        for i in 1..=9 {
            let (fold, summary) = agg.offer(42, t0 + Duration::from_millis(i * 10), || {
                built += 1;
                event("x.example")
            });
            assert!(matches!(fold, Fold::Folded) && summary.is_none());
        }
        assert_eq!(
            built, 1,
            "the event is built once per interval, not per repeat"
        );
        // Nothing is due before the interval ends.
        assert!(
            agg.take_due(t0 + Duration::from_millis(500), false)
                .is_empty()
        );
        // The next identical query after the interval: logged, with the 9 folded ones first.
        let (fold, summary) =
            agg.offer(42, t0 + Duration::from_millis(1500), || event("x.example"));
        assert!(matches!(fold, Fold::Log));
        assert_eq!(summary.as_ref().map(count), Some(9));
    }

    #[test]
    fn periodic_flush_and_shutdown_account_for_every_query() {
        let agg = Aggregator::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let mut logged = 0u64;
        for i in 0..100u64 {
            // Two kinds interleaved.
            let key = 1 + (i % 2);
            if let (Fold::Log, _) = agg.offer(key << 60, t0, || event("y.example")) {
                logged += 1;
            }
        }
        assert_eq!(logged, 2);
        let due = agg.take_due(t0 + Duration::from_secs(2), false);
        assert_eq!(due.iter().map(count).sum::<u64>() + logged, 100);
        assert!(agg.take_due(t0 + Duration::from_secs(3), true).is_empty());
        // After a flush the kind starts over: its next query is logged at once.
        let (fold, _) = agg.offer(1 << 60, t0 + Duration::from_secs(3), || event("y.example"));
        assert!(matches!(fold, Fold::Log));
        agg.offer(1 << 60, t0 + Duration::from_secs(3), || event("y.example"));
        let all = agg.take_due(t0 + Duration::from_secs(3), true);
        assert_eq!(all.iter().map(count).sum::<u64>(), 1);
    }

    #[test]
    fn a_kind_taking_the_slot_writes_the_folded_ones_first() {
        let agg = Aggregator::new(Duration::from_secs(60));
        let t0 = Instant::now();
        // Same slot (same high bits), different keys.
        let a = 7u64 << 52 | 1;
        let b = 7u64 << 52 | 2;
        agg.offer(a, t0, || event("a.example"));
        agg.offer(a, t0, || event("a.example"));
        agg.offer(a, t0, || event("a.example"));
        let (fold, summary) = agg.offer(b, t0, || event("b.example"));
        assert!(matches!(fold, Fold::Log));
        let summary = summary.expect("a's folded queries");
        assert_eq!(count(&summary), 2);
        assert!(matches!(&summary.body, EventBody::Query(q) if q.qname == "a.example"));
    }
}
