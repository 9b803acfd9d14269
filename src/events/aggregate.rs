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
//!   response code, upstream and policy version) are only counted;
//! - when the interval is over (the writer's periodic flush, the next identical query after
//!   it, a slot needed for another kind, or shutdown), one more line is written for them: a
//!   copy of the first counted query's event (its time, latency and upstream) with `count` =
//!   how many queries it stands for;
//! - a kind that stays active (at least one identical query in each interval) goes on being
//!   counted: one line per interval with its count, one event built per interval and
//!   nothing logged or built per query; a kind quiet for a whole interval starts over, its
//!   next query logged at once.
//!
//! So every query is accounted for (the sum of `count` over the lines, `count` being 1 when
//! absent), and a name asked once is logged exactly as before. Distinct names are never
//! folded: a tunnel's unique names each keep their own line.
//!
//! The table is fixed-size ([`SLOTS`] slots in sets of [`WAYS`], each set behind its own lock
//! and chosen by the key's hash), so memory is bounded whatever the traffic; kinds that
//! outnumber their set's slots just fold less. A set keeps what every query reads (the keys,
//! the interval starts and counts) in one 128-byte block, so a lookup reads two adjacent
//! cache lines (which the hardware fetches together) instead of one or more per slot. Folding
//! uses the time the query was received ([`Instant`]), not the pipeline's clock: it is about
//! log volume, never about detection.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Event, EventBody};

/// Slots in the table (a power of two).
pub const SLOTS: usize = 4096;

/// Slots per set: a kind may take any slot of its set, so a few kinds whose hashes pick the
/// same set still fold (with one slot per kind, ~60 of 500 busy kinds would share a slot and
/// log, and build, a line per query).
const WAYS: usize = 4;

/// Sets in the table.
const SETS: usize = SLOTS / WAYS;

/// One set of [`WAYS`] slots, field by field so that the keys, the interval starts and the
/// counts follow the lock in one 128-byte block (`repr(C)` keeps that order).
#[derive(Debug, Default)]
#[repr(C)]
struct Set {
    /// Each slot's kind (0: empty).
    keys: [u64; WAYS],
    /// When each slot's current interval started: microseconds since the table's epoch, plus
    /// one (0: not started).
    since: [u64; WAYS],
    /// Queries folded since the slot's last line.
    folded: [u32; WAYS],
    /// The event for each slot's folded queries: the first folded query's, built when it
    /// arrives and taken by the interval's line.
    templates: [Option<Box<Event>>; WAYS],
}

/// A set and its lock, aligned so that they fill one 128-byte block (two cache lines the
/// hardware fetches together) and no set straddles another's.
#[derive(Debug, Default)]
#[repr(align(128))]
struct LockedSet(Mutex<Set>);

impl Set {
    /// Counts one more identical query in `way`, building its event if this is the first one
    /// of the interval (the caller keeps the count below `u32::MAX`).
    fn fold(&mut self, way: usize, build: impl FnOnce() -> Event) {
        if self.templates[way].is_none() {
            self.templates[way] = Some(Box::new(build()));
        }
        self.folded[way] += 1;
    }

    /// The line for the queries folded in `way` so far, if any; the slot stays.
    fn summary(&mut self, way: usize) -> Option<Event> {
        let n = std::mem::take(&mut self.folded[way]);
        let template = self.templates[way].take();
        // A count always has its event (built before the count moves) and vice versa.
        debug_assert_eq!(n > 0, template.is_some(), "a count without its event");
        let mut event = *template?;
        if n == 0 {
            return None;
        }
        if let EventBody::Query(q) = &mut event.body {
            q.count = u64::from(n);
        }
        Some(event)
    }

    /// The line for the queries folded in `way` so far, if any; leaves the slot empty.
    fn close(&mut self, way: usize) -> Option<Event> {
        let summary = self.summary(way);
        self.keys[way] = 0;
        self.since[way] = 0;
        summary
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
    /// The interval, as configured.
    interval: Duration,
    /// The interval in microseconds, rounded up (at least 1).
    interval_us: u64,
    /// Where the sets' interval starts count from.
    epoch: Instant,
    /// The sets.
    sets: Box<[LockedSet]>,
}

impl Aggregator {
    /// A table folding over `interval` (must not be zero: then there is no aggregator).
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            interval_us: u64::try_from(interval.as_nanos().div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1),
            epoch: Instant::now(),
            sets: (0..SETS).map(|_| LockedSet::default()).collect(),
        }
    }

    /// The interval.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// `at` as a set's interval start: microseconds since the epoch, plus one.
    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX)
            .min(u64::MAX - 1)
            + 1
    }

    /// Whether an interval started at `since` (a [`Self::stamp`], 0 for none) has ended at
    /// `now` (another stamp).
    fn ended(&self, since: u64, now: u64) -> bool {
        since == 0 || now.saturating_sub(since) >= self.interval_us
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
        let now = self.stamp(at);
        let mut set = self.sets[set_index(key)].0.lock();
        // The kind's slot, else an empty one, else the one whose interval started longest ago.
        let way = set.keys.iter().position(|&k| k == key).unwrap_or_else(|| {
            (0..WAYS)
                .min_by_key(|&i| (set.keys[i] != 0, set.since[i]))
                .unwrap_or(0)
        });
        if set.keys[way] == key {
            if !self.ended(set.since[way], now) && set.folded[way] < u32::MAX {
                set.fold(way, build);
                return (Fold::Folded, None);
            }
            if set.folded[way] > 0 {
                // Still active when its interval ended (before the writer's flush got to it),
                // or its count is full: the line for what was counted, and this query opens
                // the next interval. Its event is built first, so that a failing build cannot
                // lose the line already due.
                let event = build();
                let summary = set.summary(way);
                set.since[way] = now;
                set.fold(way, || event);
                return (Fold::Folded, summary);
            }
        }
        // A new kind, one quiet for a whole interval, or another kind taking the slot (whose
        // folded queries get their line first): logged at once.
        let summary = set.close(way);
        set.keys[way] = key;
        set.since[way] = now;
        (Fold::Log, summary)
    }

    /// Lines for every kind whose interval ended by `now` (or all of them, with `all`), for
    /// the writer's periodic flush and for shutdown. A kind with queries in the interval that
    /// ended goes on being counted from `now`; one without is forgotten.
    pub fn take_due(&self, now: Instant, all: bool) -> Vec<Event> {
        let now = self.stamp(now);
        let mut out = Vec::new();
        for set in &*self.sets {
            let mut set = set.0.lock();
            for way in 0..WAYS {
                if set.keys[way] == 0 || !(all || self.ended(set.since[way], now)) {
                    continue;
                }
                if set.folded[way] > 0 && !all {
                    out.extend(set.summary(way));
                    set.since[way] = now;
                } else {
                    out.extend(set.close(way));
                }
            }
        }
        out
    }
}

/// The set for `key`: the high bits, which a multiplicative hash mixes best.
fn set_index(key: u64) -> usize {
    #[allow(clippy::cast_possible_truncation)]
    let i = (key >> 54) as usize;
    i & (SETS - 1)
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
        // The next identical query after the interval, before any flush: the 9 folded ones get
        // their line, and the kind, still active, goes on being counted: this query is the
        // first of the next line, whose event is its own.
        let (fold, summary) = agg.offer(42, t0 + Duration::from_millis(1500), || {
            built += 1;
            event("x.example")
        });
        assert!(matches!(fold, Fold::Folded));
        assert_eq!(summary.as_ref().map(count), Some(9));
        assert_eq!(built, 2);
        let all = agg.take_due(t0 + Duration::from_secs(2), true);
        assert_eq!(all.iter().map(count).sum::<u64>(), 1);
        // Quiet for a whole interval: the kind starts over, logged at once.
        let (fold, summary) = agg.offer(42, t0 + Duration::from_secs(9), || event("x.example"));
        assert!(matches!(fold, Fold::Log) && summary.is_none());
    }

    #[test]
    fn an_active_kind_costs_one_line_and_one_build_an_interval() {
        let agg = Aggregator::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let (mut logged, mut lines, mut built, mut sent) = (0u64, Vec::new(), 0, 0u64);
        let mut next_flush = t0 + Duration::from_secs(1);
        for i in 0..500u64 {
            let at = t0 + Duration::from_millis(i * 10);
            if at >= next_flush {
                lines.extend(agg.take_due(at, false));
                next_flush = at + Duration::from_secs(1);
            }
            sent += 1;
            let (fold, summary) = agg.offer(5, at, || {
                built += 1;
                // Each query's own event: its latency tells which query it was.
                let mut e = event("busy.example");
                if let EventBody::Query(q) = &mut e.body {
                    q.latency_us = i;
                }
                e
            });
            lines.extend(summary);
            logged += u64::from(matches!(fold, Fold::Log));
        }
        lines.extend(agg.take_due(t0 + Duration::from_secs(10), true));
        assert_eq!(logged, 1, "only the first query is logged at once");
        assert!((4..=6).contains(&lines.len()), "{} lines", lines.len());
        assert_eq!(
            built,
            lines.len(),
            "one event built per line, none per query"
        );
        assert_eq!(lines.iter().map(count).sum::<u64>() + logged, sent);
        // Each line is the event of the first query it counts (its time, latency and
        // upstream), not a copy of an earlier interval's.
        let mut first = 1;
        for line in &lines {
            let EventBody::Query(q) = &line.body else {
                panic!("not a query event")
            };
            assert_eq!(q.latency_us, first, "{lines:#?}");
            first += q.count;
        }
    }

    #[test]
    fn a_quiet_kind_is_forgotten_and_logged_again() {
        let agg = Aggregator::new(Duration::from_secs(1));
        let t0 = Instant::now();
        // Logged once, never repeated: the flush after its interval forgets it, writing nothing.
        assert!(matches!(
            agg.offer(3, t0, || event("q.example")).0,
            Fold::Log
        ));
        assert!(agg.take_due(t0 + Duration::from_secs(2), false).is_empty());
        assert!(matches!(
            agg.offer(3, t0 + Duration::from_secs(2), || event("q.example"))
                .0,
            Fold::Log
        ));
        // Logged, then quiet past its interval with no flush in between: logged again at once.
        let t1 = t0 + Duration::from_secs(2);
        assert!(matches!(
            agg.offer(3, t1 + Duration::from_millis(1500), || event("q.example")),
            (Fold::Log, None)
        ));
    }

    #[test]
    fn a_full_count_gets_its_line_and_counting_goes_on() {
        let agg = Aggregator::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let key = 11u64 << 54;
        agg.offer(key, t0, || event("full.example"));
        agg.offer(key, t0, || event("full.example"));
        {
            let mut set = agg.sets[set_index(key)].0.lock();
            let way = set.keys.iter().position(|&k| k == key).expect("slot");
            set.folded[way] = u32::MAX - 1;
        }
        // The count reaches u32::MAX, then the next query gets the full line out and opens a
        // new count: nothing is lost and nothing wraps.
        let (fold, summary) = agg.offer(key, t0, || event("full.example"));
        assert!(matches!(fold, Fold::Folded) && summary.is_none());
        let (fold, summary) = agg.offer(key, t0, || event("full.example"));
        assert!(matches!(fold, Fold::Folded));
        assert_eq!(summary.as_ref().map(count), Some(u64::from(u32::MAX)));
        let rest = agg.take_due(t0, true);
        assert_eq!(rest.iter().map(count).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_sub_microsecond_interval_still_folds() {
        let agg = Aggregator::new(Duration::from_nanos(500));
        assert_eq!(agg.interval(), Duration::from_nanos(500));
        let t0 = Instant::now();
        assert!(matches!(
            agg.offer(1, t0, || event("n.example")).0,
            Fold::Log
        ));
        assert!(matches!(
            agg.offer(1, t0, || event("n.example")).0,
            Fold::Folded
        ));
    }

    #[test]
    fn a_set_and_its_lock_fill_one_block() {
        assert_eq!(std::mem::size_of::<LockedSet>(), 128);
        assert_eq!(std::mem::align_of::<LockedSet>(), 128);
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
        // After a shutdown flush the kind starts over: its next query is logged at once.
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
        // Same set (same high bits), different keys: four kinds fold side by side.
        let kind = |i: u64| 7u64 << 54 | i;
        let names = [
            "a.example",
            "b.example",
            "c.example",
            "d.example",
            "e.example",
        ];
        for (i, name) in names.iter().take(WAYS).enumerate() {
            for _ in 0..3 {
                let at = t0 + Duration::from_millis(i as u64);
                let (_, summary) = agg.offer(kind(i as u64), at, || event(name));
                assert!(summary.is_none(), "{name}: the set has room");
            }
        }
        // A fifth takes the slot whose interval started first, a's: a's folded ones come first.
        let (fold, summary) = agg.offer(kind(9), t0 + Duration::from_millis(9), || event(names[4]));
        assert!(matches!(fold, Fold::Log));
        let summary = summary.expect("a's folded queries");
        assert_eq!(count(&summary), 2);
        assert!(matches!(&summary.body, EventBody::Query(q) if q.qname == "a.example"));
        // The others were not disturbed.
        let all = agg.take_due(t0 + Duration::from_secs(1), true);
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|e| count(e) == 2));
    }
}
