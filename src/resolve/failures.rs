//! Resolution-failure caching (RFC 9520): a question whose resolution just failed is answered
//! SERVFAIL at once for `[upstream] failure_ttl` (default 5 s, as Unbound), instead of costing
//! every retry and every other client asking it another upstream exchange and the full timeout.
//!
//! What is recorded (by the pipeline, only for the miss that led the upstream exchange): no
//! upstream answered ([`FailureKind::NoAnswer`]: timeouts, closed ports, and servers that
//! refused or could not answer the question), an upstream answered SERVFAIL
//! ([`FailureKind::Servfail`]), or its answer could not be used ([`FailureKind::Unusable`]).
//! Never recorded: failures of this host (no socket could be opened here,
//! `kind="local_resources"`), an exchange abandoned because its client went away, an overload
//! refusal, and failures fetched under a policy a reload has since replaced. A reload empties
//! the table (its upstreams or zones may have changed).
//!
//! A question that keeps failing is remembered longer each time (RFC 9520 §3.2's back-off):
//! when it fails again soon after its failure ran out (within as long again as it was
//! remembered), its time doubles, up to `[upstream] failure_ttl_max` (default the larger of
//! 60 s and `failure_ttl`, at most 5 min, RFC 2308's cap). Any usable answer for it ends the
//! streak ([`FailureCache::forget`]), so a question back after an outage starts again at
//! `failure_ttl`; the longest a recovered question can still be answered SERVFAIL is the time
//! its last failure was given, at most `failure_ttl_max`.
//!
//! Keyed by the question as the answer cache keys it (name, type, class, DO and CD bits): the
//! policy stages have already run before a miss gets here, so a recorded failure is only ever
//! told to a client whose group may ask that question. The table holds at most
//! [`FAILURE_CACHE_ENTRIES`] questions and evicts the oldest when full; its key is a keyed hash
//! of the question, and each entry keeps the question itself, so a hash collision costs a
//! lookup, never a wrong SERVFAIL. Only cache misses consult it, and while it is empty (no
//! recent failure) a lookup is one atomic load.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics::Counter;
use parking_lot::Mutex;

use crate::config_error::DurationRange;
use crate::metrics as m;
use crate::resolve::cache::{CacheKey, CacheKeyRef};

/// Most questions whose failure is remembered at once. Full, the table asks the allocator for
/// 3.3 MB with every name 253 bytes long and 1.4 MB with 20-byte names (measured with a
/// counting allocator: the names, the hash table, the order list). Unbound remembers 10,000
/// hosts in its infrastructure cache.
pub const FAILURE_CACHE_ENTRIES: usize = 8192;

/// Accepted `[upstream] failure_ttl`: RFC 9520 §3.2 asks for at least 1 s and at most 5 min;
/// 0 turns failure caching off.
pub const FAILURE_TTL: DurationRange = DurationRange::up_to(Duration::from_secs(300));

/// Why a question's resolution failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No upstream gave an answer (timeouts, closed ports, some REFUSED, FORMERR, …).
    NoAnswer,
    /// Every upstream asked answered with an rcode that is no answer for a client (REFUSED,
    /// FORMERR, NOTIMP, …): this one, the last.
    Rejected(u8),
    /// An upstream answered SERVFAIL.
    Servfail,
    /// An upstream's answer could not be used (did not decode or re-encode).
    Unusable,
}

impl FailureKind {
    /// For the answer's event reason.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoAnswer => "no upstream answered",
            Self::Rejected(crate::wire::rcode::REFUSED) => "upstream answered REFUSED",
            Self::Rejected(crate::wire::rcode::FORMERR) => "upstream answered FORMERR",
            Self::Rejected(crate::wire::rcode::NOTIMP) => "upstream answered NOTIMP",
            Self::Rejected(_) => "upstream answered with an error",
            Self::Servfail => "upstream answered SERVFAIL",
            Self::Unusable => "unusable upstream answer",
        }
    }
}

/// One remembered failure.
#[derive(Debug)]
struct Entry {
    /// The question, compared on every lookup.
    key: CacheKey,
    /// Until when (the pipeline's clock) it is answered SERVFAIL at once.
    until: Duration,
    /// How long it was given (`until` less the time of the failure): the next failure soon
    /// after gets twice this.
    ttl: Duration,
    /// Until when the entry is kept (`until` plus `ttl`): a failure before then continues the
    /// streak.
    keep_until: Duration,
    kind: FailureKind,
    /// Its place in [`Table::order`].
    seq: u64,
}

/// The table behind the lock: entries by keyed hash, and their insertion order (oldest first)
/// for eviction. Entries are kept for different times (the back-off), so an expired entry
/// behind a longer-lived older one waits for it, or for eviction when the table is full.
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<u64, Entry, BuildHasherDefault<KeyedHash>>,
    /// (hash, seq) of each insertion; an item whose entry was since replaced or removed no
    /// longer matches its entry's `seq` and is skipped.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
}

impl Table {
    /// Drop the oldest insertion; true when it was still a live entry.
    fn pop_oldest(&mut self) -> bool {
        let Some((hash, seq)) = self.order.pop_front() else {
            return false;
        };
        if self.entries.get(&hash).is_some_and(|e| e.seq == seq) {
            self.entries.remove(&hash);
            return true;
        }
        false
    }

    /// Whether the oldest insertion is stale (replaced, removed) or past keeping at `now`.
    fn oldest_is_done(&self, now: Duration) -> bool {
        self.order.front().is_some_and(|(hash, seq)| {
            self.entries
                .get(hash)
                .is_none_or(|e| e.seq != *seq || e.keep_until <= now)
        })
    }
}

/// The table's hasher: its keys are already keyed hashes, used as they are.
#[derive(Debug, Default)]
struct KeyedHash(u64);

impl Hasher for KeyedHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (a key); fold anything else in case.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// The bounded table of recent resolution failures.
pub struct FailureCache {
    capacity: usize,
    /// Entries in the table, readable without the lock (the empty fast path).
    len: AtomicUsize,
    table: Mutex<Table>,
    /// Seeds the keyed question hash (random per process: nobody can aim collisions).
    seed: foldhash::fast::RandomState,
    hits: Counter,
}

impl std::fmt::Debug for FailureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for FailureCache {
    fn default() -> Self {
        Self::new(FAILURE_CACHE_ENTRIES)
    }
}

impl FailureCache {
    /// A table remembering at most `capacity` questions (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
            table: Mutex::new(Table::default()),
            seed: foldhash::fast::RandomState::default(),
            hits: metrics::counter!(m::FAILURE_CACHE_HITS_TOTAL),
        }
    }

    /// The keyed hash of a question: the name hashed once under the seed, the type, class and
    /// bits folded in (distinct for distinct ones; a collision only costs a lookup).
    fn hash(&self, key: CacheKeyRef<'_>) -> u64 {
        let (name, qtype, qclass, dnssec_ok, checking_disabled) = key.parts();
        let rest = (u64::from(qtype) << 32)
            | (u64::from(qclass) << 16)
            | (u64::from(dnssec_ok) << 1)
            | u64::from(checking_disabled);
        self.seed.hash_one(name) ^ rest.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// The failure remembered for `key` at `now`, if any (counted as a hit).
    #[must_use]
    pub fn get(&self, key: CacheKeyRef<'_>, now: Duration) -> Option<FailureKind> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let hash = self.hash(key);
        let mut table = self.table.lock();
        let entry = table.entries.get(&hash)?;
        if entry.key.as_key_ref() != key {
            return None;
        }
        if entry.until <= now {
            // Ran out: asked again. Kept a while for the streak, unless past that too.
            if entry.keep_until <= now {
                table.entries.remove(&hash);
                self.len.store(table.entries.len(), Ordering::Relaxed);
            }
            return None;
        }
        let kind = entry.kind;
        drop(table);
        self.hits.increment(1);
        Some(kind)
    }

    /// Remember that `key` failed (`kind`) at `now`, for `base`, or, when it failed again
    /// soon after its last failure ran out, for twice that failure's time, at most `max`;
    /// returns the time given. The oldest entry goes when full.
    pub fn insert(
        &self,
        key: CacheKeyRef<'_>,
        kind: FailureKind,
        now: Duration,
        base: Duration,
        max: Duration,
    ) -> Duration {
        let hash = self.hash(key);
        let mut table = self.table.lock();
        let ttl = match table.entries.get(&hash) {
            Some(e) if e.key.as_key_ref() == key && now < e.keep_until => {
                if now < e.until {
                    // Still remembered (two leaders under two policies): no longer for it.
                    e.ttl
                } else {
                    e.ttl.saturating_mul(2).min(max)
                }
            }
            _ => base,
        }
        .max(base);
        while table.oldest_is_done(now) {
            table.pop_oldest();
        }
        // Full (or, after replacements, an order list twice the capacity): the oldest go.
        while !table.order.is_empty()
            && ((!table.entries.contains_key(&hash) && table.entries.len() >= self.capacity)
                || table.order.len() >= 2 * self.capacity)
        {
            table.pop_oldest();
        }
        let seq = table.next_seq;
        table.next_seq += 1;
        table.order.push_back((hash, seq));
        let until = now.saturating_add(ttl);
        table.entries.insert(
            hash,
            Entry {
                key: key.to_owned_key(),
                until,
                ttl,
                keep_until: until.saturating_add(ttl),
                kind,
                seq,
            },
        );
        self.len.store(table.entries.len(), Ordering::Relaxed);
        ttl
    }

    /// Forget `key`'s failures: it was answered, and a failure after this starts the back-off
    /// again at `failure_ttl`.
    pub fn forget(&self, key: CacheKeyRef<'_>) {
        if self.is_empty() {
            return;
        }
        let hash = self.hash(key);
        let mut table = self.table.lock();
        if table
            .entries
            .get(&hash)
            .is_some_and(|e| e.key.as_key_ref() == key)
        {
            table.entries.remove(&hash);
            self.len.store(table.entries.len(), Ordering::Relaxed);
        }
    }

    /// Forget every failure (a reload: upstreams or zones may have changed).
    pub fn clear(&self) {
        let mut table = self.table.lock();
        table.entries.clear();
        table.order.clear();
        self.len.store(0, Ordering::Relaxed);
    }

    /// Questions remembered now (expired ones included until they are looked up or evicted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when nothing is remembered: one atomic load, for the miss path to skip the table.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> CacheKey {
        CacheKey {
            name: name.into(),
            qtype: 1,
            qclass: 1,
            dnssec_ok: false,
            checking_disabled: false,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_failure_is_remembered_for_its_ttl_and_only_for_its_question() {
        let t = FailureCache::new(16);
        assert!(t.get(key("a.example").as_key_ref(), S).is_none());
        t.insert(
            key("a.example").as_key_ref(),
            FailureKind::NoAnswer,
            S,
            5 * S,
            5 * S,
        );
        assert_eq!(
            t.get(key("a.example").as_key_ref(), 2 * S),
            Some(FailureKind::NoAnswer)
        );
        assert!(t.get(key("b.example").as_key_ref(), 2 * S).is_none());
        let mut other_type = key("a.example");
        other_type.qtype = 28;
        assert!(t.get(other_type.as_key_ref(), 2 * S).is_none());
        let mut cd = key("a.example");
        cd.checking_disabled = true;
        assert!(
            t.get(cd.as_key_ref(), 2 * S).is_none(),
            "a CD query may succeed where checking failed"
        );
        assert!(t.get(key("a.example").as_key_ref(), 6 * S).is_none());
        assert!(!t.is_empty(), "kept as long again, for the back-off");
        assert!(t.get(key("a.example").as_key_ref(), 11 * S).is_none());
        assert!(t.is_empty(), "an entry found past keeping is removed");
    }

    #[test]
    fn a_full_table_evicts_the_oldest() {
        let t = FailureCache::new(4);
        for i in 0..10 {
            t.insert(
                key(&format!("n{i}.example")).as_key_ref(),
                FailureKind::Servfail,
                S,
                59 * S,
                59 * S,
            );
            assert!(t.len() <= 4);
        }
        for i in 0..6 {
            assert!(
                t.get(key(&format!("n{i}.example")).as_key_ref(), S)
                    .is_none()
            );
        }
        for i in 6..10 {
            assert!(
                t.get(key(&format!("n{i}.example")).as_key_ref(), S)
                    .is_some()
            );
        }
    }

    #[test]
    fn expired_entries_make_room_and_repeated_failures_do_not_grow_the_order() {
        let t = FailureCache::new(4);
        for round in 0..1000u64 {
            let now = Duration::from_secs(round * 10);
            for name in ["a.example", "b.example", "c.example"] {
                t.insert(
                    key(name).as_key_ref(),
                    FailureKind::NoAnswer,
                    now,
                    5 * S,
                    5 * S,
                );
                // The same failure again before it expires (two leaders under two policies).
                t.insert(
                    key(name).as_key_ref(),
                    FailureKind::NoAnswer,
                    now,
                    5 * S,
                    5 * S,
                );
            }
            let table = t.table.lock();
            assert!(table.entries.len() <= 4);
            assert!(table.order.len() <= 8, "{}", table.order.len());
        }
        t.clear();
        assert!(t.is_empty());
        assert!(t.get(key("a.example").as_key_ref(), S).is_none());
    }

    /// RFC 9520 §3.2: a question failing again right after its failure ran out is remembered
    /// twice as long, up to the cap; a failure while one is still remembered, a failure long
    /// after, or an answer in between starts again at the base.
    #[test]
    fn a_question_that_keeps_failing_is_remembered_longer_up_to_the_cap() {
        let t = FailureCache::new(16);
        let a = key("a.example");
        let fail = |at: u64| {
            t.insert(
                a.as_key_ref(),
                FailureKind::Servfail,
                Duration::from_secs(at),
                5 * S,
                20 * S,
            )
        };
        assert_eq!(fail(0), 5 * S);
        assert_eq!(fail(3), 5 * S, "still remembered: not longer (until 8 s)");
        assert!(t.get(a.as_key_ref(), 9 * S).is_none(), "ran out at 8 s");
        assert_eq!(fail(9), 10 * S, "failed again: doubled");
        assert!(t.get(a.as_key_ref(), 18 * S).is_some());
        assert_eq!(fail(20), 20 * S);
        assert_eq!(fail(41), 20 * S, "capped");
        t.forget(a.as_key_ref());
        assert!(t.is_empty());
        assert_eq!(fail(60), 5 * S, "answered in between: from the base again");
        assert_eq!(
            fail(100),
            5 * S,
            "long after (kept until 70 s): from the base again"
        );
        t.forget(key("b.example").as_key_ref());
        assert_eq!(t.len(), 1, "forgetting another question leaves this one");
    }
}
