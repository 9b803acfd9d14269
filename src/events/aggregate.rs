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
//! - when the interval is over (the writer's periodic flush, the next identical query after
//!   it, a slot needed for another kind, or shutdown), one more line is written for them: a
//!   copy of the second query's event with `count` = how many queries it stands for, stamped
//!   with the time of the first query it counts;
//! - a kind that stays active (at least one identical query in each interval) goes on being
//!   counted: one line per interval with its count, and nothing logged or built per query;
//!   a kind quiet for a whole interval starts over, its next query logged at once.
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

/// Slots per set: a kind may take any slot of its set, so a few kinds whose hashes pick the
/// same set still fold (with one slot per kind, ~60 of 500 busy kinds would share a slot and
/// log, and build, a line per query).
const WAYS: usize = 4;

/// Sets in the table.
const SETS: usize = SLOTS / WAYS;

/// One kind of query being folded.
#[derive(Debug, Default)]
struct Slot {
    /// The kind's hash (0: empty).
    key: u64,
    /// When the kind's current interval started.
    since: Option<Instant>,
    /// Queries folded since the last line for this kind.
    folded: u64,
    /// The event written for the folded queries (built at the kind's first folded query and
    /// kept while the kind stays active).
    template: Option<Box<Event>>,
    /// When the first query counted in this interval arrived, for a template built in an
    /// earlier one (its own stamp is older).
    stamp: Option<chrono::DateTime<chrono::Utc>>,
}

impl Slot {
    /// Counts one more identical query, building the template if there is none yet.
    fn fold(&mut self, build: impl FnOnce() -> Event) {
        if self.template.is_none() {
            self.template = Some(Box::new(build()));
        } else if self.folded == 0 {
            self.stamp = Some(chrono::Utc::now());
        }
        self.folded += 1;
    }

    /// The line for the queries folded so far, if any; the slot keeps its template.
    fn summary(&mut self) -> Option<Event> {
        let n = std::mem::take(&mut self.folded);
        let stamp = self.stamp.take();
        if n == 0 {
            return None;
        }
        let mut event = (**self.template.as_ref()?).clone();
        if let Some(stamp) = stamp {
            event.ts = stamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        }
        if let EventBody::Query(q) = &mut event.body {
            q.count = n;
        }
        Some(event)
    }

    /// The line for the queries folded so far, if any; leaves the slot empty.
    fn close(&mut self) -> Option<Event> {
        let summary = self.summary();
        *self = Self::default();
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
    /// The interval.
    interval: Duration,
    /// The slots, in sets of [`WAYS`].
    sets: Box<[Mutex<[Slot; WAYS]>]>,
}

impl Aggregator {
    /// A table folding over `interval` (must not be zero: then there is no aggregator).
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            sets: (0..SETS)
                .map(|_| Mutex::new(std::array::from_fn(|_| Slot::default())))
                .collect(),
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
        let mut set = self.sets[set_index(key)].lock();
        // The kind's slot, else an empty one, else the one whose interval started longest ago.
        let way = set.iter().position(|s| s.key == key).unwrap_or_else(|| {
            set.iter()
                .enumerate()
                .min_by_key(|(_, s)| (s.key != 0, s.since))
                .map_or(0, |(i, _)| i)
        });
        let slot = &mut set[way];
        if slot.key == key {
            let fresh = slot
                .since
                .is_some_and(|since| at.saturating_duration_since(since) < self.interval);
            if fresh {
                slot.fold(build);
                return (Fold::Folded, None);
            }
            if slot.folded > 0 {
                // Still active when its interval ended (before the writer's flush got to it):
                // the line for the interval that ended, and this query opens the next one.
                let summary = slot.summary();
                slot.since = Some(at);
                slot.fold(build);
                return (Fold::Folded, summary);
            }
        }
        // A new kind, one quiet for a whole interval, or another kind taking the slot (whose
        // folded queries get their line first): logged at once.
        let summary = slot.close();
        slot.key = key;
        slot.since = Some(at);
        (Fold::Log, summary)
    }

    /// Lines for every kind whose interval ended by `now` (or all of them, with `all`), for
    /// the writer's periodic flush and for shutdown. A kind with queries in the interval that
    /// ended goes on being counted from `now`; one without is forgotten.
    pub fn take_due(&self, now: Instant, all: bool) -> Vec<Event> {
        let mut out = Vec::new();
        for set in &*self.sets {
            let mut set = set.lock();
            for slot in set.iter_mut() {
                Self::flush_slot(slot, now, all, self.interval, &mut out);
            }
        }
        out
    }

    /// [`Self::take_due`] for one slot.
    fn flush_slot(
        slot: &mut Slot,
        now: Instant,
        all: bool,
        interval: Duration,
        out: &mut Vec<Event>,
    ) {
        if slot.key == 0 {
            return;
        }
        let due = all
            || slot
                .since
                .is_none_or(|since| now.saturating_duration_since(since) >= interval);
        if !due {
            return;
        }
        if slot.folded > 0 && !all {
            out.extend(slot.summary());
            slot.since = Some(now);
        } else {
            out.extend(slot.close());
        }
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
        // their line, and the kind, still active, goes on being counted without a rebuild.
        let (fold, summary) = agg.offer(42, t0 + Duration::from_millis(1500), || {
            built += 1;
            event("x.example")
        });
        assert!(matches!(fold, Fold::Folded));
        assert_eq!(summary.as_ref().map(count), Some(9));
        assert_eq!(built, 1);
        let all = agg.take_due(t0 + Duration::from_secs(2), true);
        assert_eq!(all.iter().map(count).sum::<u64>(), 1);
        // Quiet for a whole interval: the kind starts over, logged at once.
        let (fold, summary) = agg.offer(42, t0 + Duration::from_secs(9), || event("x.example"));
        assert!(matches!(fold, Fold::Log) && summary.is_none());
    }

    #[test]
    fn an_active_kind_costs_one_line_an_interval_and_one_build() {
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
                event("busy.example")
            });
            lines.extend(summary);
            logged += u64::from(matches!(fold, Fold::Log));
        }
        lines.extend(agg.take_due(t0 + Duration::from_secs(10), true));
        assert_eq!(logged, 1, "only the first query is logged at once");
        assert_eq!(
            built, 1,
            "the template is built once while the kind stays active"
        );
        assert!((4..=6).contains(&lines.len()), "{} lines", lines.len());
        assert_eq!(lines.iter().map(count).sum::<u64>() + logged, sent);
        // The first line carries the template's own stamp; later ones are stamped when their
        // interval's first query arrived, not with the template's old time.
        assert_eq!(lines[0].ts, event("busy.example").ts);
        assert!(lines[1..].iter().all(|e| e.ts != lines[0].ts), "{lines:#?}");
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
