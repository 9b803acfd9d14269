//! Cache misses in flight: a bound on how many there are, a bound per client, and coalescing
//! of identical questions.
//!
//! Every miss holds a [`MissPermit`] from admission until its answer is sent. When
//! `max_inflight_misses` are already in flight (or the client already has
//! `max_inflight_misses_per_client`), the miss is refused at once and the caller answers
//! SERVFAIL, counted in `dnsward_overload_total{reason}`: a flood of slow misses can cost
//! neither unbounded tasks nor unbounded memory, and one client's flood leaves room for others.
//!
//! Identical questions in flight (same name, type, class, DO and CD bits, under the same policy) share one upstream exchange: the first becomes the leader
//! ([`Flight::Leader`]), the others wait for its result ([`Flight::Follower`]) and render it
//! with their own ID and question, as a cache hit is rendered. If the leader goes away without a
//! result (its task is cancelled), the waiters get an error rather than waiting forever.
//!
//! Only misses touch this module; cache hits never do. The coalescing table is split into
//! shards by key hash so concurrent misses for different names rarely share a lock, and no lock
//! is held across an await.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics::Counter;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::metrics as m;
use crate::resolve::cache::CacheKey;

/// Shards of the coalescing table.
const SHARDS: usize = 16;

/// What identical questions share: the cache key and the policy version that admitted them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlightKey {
    /// The question as the cache keys it.
    pub key: CacheKey,
    /// Identity of the policy that admitted the miss (its address, alive while the miss is):
    /// an answer fetched under one policy is not handed to a miss admitted by another.
    pub policy_id: usize,
}

/// Why a miss was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// Every in-flight slot is taken.
    Total,
    /// This client has its share in flight.
    Client,
}

impl Overload {
    /// The `reason` label and event text.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "inflight_misses",
            Self::Client => "inflight_misses_per_client",
        }
    }
}

/// Counts shared with the permits (which outlive a borrow of the table).
#[derive(Debug, Default)]
struct Counts {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// A miss's hold on an in-flight slot; released on drop.
#[derive(Debug)]
pub struct MissPermit {
    counts: Arc<Counts>,
    client: IpAddr,
}

impl Drop for MissPermit {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        let mut held = self.counts.per_client.lock();
        if let Some(n) = held.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

type Waiters<T> = Vec<oneshot::Sender<T>>;
/// One shard of the coalescing table: the followers waiting on each question in flight.
type Shard<T> = Mutex<HashMap<FlightKey, Waiters<T>>>;

/// The in-flight table: admission bounds and coalescing of identical questions. `T` is what a
/// leader hands its followers.
pub struct InflightMisses<T> {
    max_total: usize,
    max_per_client: usize,
    counts: Arc<Counts>,
    shards: Box<[Shard<T>]>,
    hasher: foldhash::fast::RandomState,
    overload_total: Counter,
    overload_client: Counter,
    coalesced: Counter,
}

impl<T> std::fmt::Debug for InflightMisses<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InflightMisses")
            .field("max_total", &self.max_total)
            .field("in_flight", &self.counts.total.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A miss's role for its question.
pub enum Flight<'a, T: Clone> {
    /// Nobody is asking this yet: do the exchange and [`Leader::finish`] with the result.
    Leader(Leader<'a, T>),
    /// Someone already is: wait for its result (an error if the leader went away).
    Follower(oneshot::Receiver<T>),
}

/// The miss doing the exchange for a question; its followers are released on
/// [`Leader::finish`] or, without a result, on drop.
pub struct Leader<'a, T: Clone> {
    table: &'a InflightMisses<T>,
    key: Option<FlightKey>,
}

impl<T: Clone> Leader<'_, T> {
    /// Hand `result` to every follower and leave the table.
    pub fn finish(mut self, result: &T) {
        for tx in self.take_waiters() {
            let _ = tx.send(result.clone());
        }
    }

    fn take_waiters(&mut self) -> Waiters<T> {
        let Some(key) = self.key.take() else {
            return Vec::new();
        };
        self.table
            .shard(&key)
            .lock()
            .remove(&key)
            .unwrap_or_default()
    }
}

impl<T: Clone> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        // Dropping the senders wakes the followers with an error.
        drop(self.take_waiters());
    }
}

impl<T: Clone> InflightMisses<T> {
    /// A table admitting at most `max_total` misses, `max_per_client` of them from one client.
    #[must_use]
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        Self {
            max_total,
            max_per_client,
            counts: Arc::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            overload_total: metrics::counter!(m::OVERLOAD_TOTAL, "reason" => Overload::Total.as_str()),
            overload_client: metrics::counter!(m::OVERLOAD_TOTAL, "reason" => Overload::Client.as_str()),
            coalesced: metrics::counter!(m::COALESCED_TOTAL),
        }
    }

    /// Misses in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.counts.total.load(Ordering::Acquire)
    }

    /// Admit a miss from `client`, or say (and count) why not.
    ///
    /// # Errors
    /// [`Overload`] when a bound is reached.
    pub fn admit(&self, client: IpAddr) -> Result<MissPermit, Overload> {
        let before = self.counts.total.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_total {
            self.counts.total.fetch_sub(1, Ordering::AcqRel);
            self.overload_total.increment(1);
            return Err(Overload::Total);
        }
        let mut held = self.counts.per_client.lock();
        let n = held.entry(client).or_insert(0);
        if *n >= self.max_per_client {
            if *n == 0 {
                held.remove(&client);
            }
            drop(held);
            self.counts.total.fetch_sub(1, Ordering::AcqRel);
            self.overload_client.increment(1);
            return Err(Overload::Client);
        }
        *n += 1;
        Ok(MissPermit {
            counts: Arc::clone(&self.counts),
            client,
        })
    }

    fn shard(&self, key: &FlightKey) -> &Shard<T> {
        // The modulo keeps the index below SHARDS, so the cast cannot truncate a used bit.
        #[allow(clippy::cast_possible_truncation)]
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        &self.shards[i]
    }

    /// Join the exchange for `key`: lead it, or follow the one already in flight.
    pub fn join(&self, key: FlightKey) -> Flight<'_, T> {
        let mut shard = self.shard(&key).lock();
        if let Some(waiters) = shard.get_mut(&key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            drop(shard);
            self.coalesced.increment(1);
            return Flight::Follower(rx);
        }
        shard.insert(key.clone(), Vec::new());
        drop(shard);
        Flight::Leader(Leader {
            table: self,
            key: Some(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> FlightKey {
        FlightKey {
            key: CacheKey {
                name: name.into(),
                qtype: 1,
                qclass: 1,
                dnssec_ok: false,
                checking_disabled: false,
            },
            policy_id: 1,
        }
    }

    #[test]
    fn admission_is_bounded_in_total_and_per_client() {
        let t: InflightMisses<u8> = InflightMisses::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = t.admit(a).unwrap();
        let _p2 = t.admit(a).unwrap();
        assert_eq!(t.admit(a).unwrap_err(), Overload::Client);
        let _p3 = t.admit(b).unwrap();
        assert_eq!(t.admit(b).unwrap_err(), Overload::Total);
        assert_eq!(t.in_flight(), 3);
        drop(p1);
        assert_eq!(t.in_flight(), 2);
        assert!(t.admit(b).is_ok(), "a released slot is free again");
    }

    #[tokio::test]
    async fn identical_questions_share_one_leader() {
        let t: InflightMisses<u32> = InflightMisses::new(10, 10);
        let Flight::Leader(leader) = t.join(key("a.example")) else {
            panic!("first is the leader");
        };
        let Flight::Follower(f1) = t.join(key("a.example")) else {
            panic!("second follows");
        };
        let Flight::Follower(f2) = t.join(key("a.example")) else {
            panic!("third follows");
        };
        assert!(
            matches!(t.join(key("b.example")), Flight::Leader(_)),
            "another name leads its own"
        );
        leader.finish(&7);
        assert_eq!(f1.await.unwrap(), 7);
        assert_eq!(f2.await.unwrap(), 7);
        assert!(
            matches!(t.join(key("a.example")), Flight::Leader(_)),
            "after finishing, the next miss leads again"
        );
    }

    #[tokio::test]
    async fn followers_of_a_vanished_leader_get_an_error() {
        let t: InflightMisses<u32> = InflightMisses::new(10, 10);
        let leader = t.join(key("a.example"));
        let Flight::Follower(f) = t.join(key("a.example")) else {
            panic!("follows");
        };
        drop(leader);
        assert!(f.await.is_err());
    }

    #[test]
    fn a_flood_of_distinct_misses_leaves_nothing_behind() {
        // Issue 13: per-miss state must not grow with the names a flood has asked.
        let t: InflightMisses<u32> = InflightMisses::new(4096, 1024);
        let client: IpAddr = "127.0.0.2".parse().unwrap();
        for round in 0..50 {
            let mut held = Vec::new();
            for i in 0..1024 {
                let permit = t.admit(client).unwrap();
                let Flight::Leader(leader) = t.join(key(&format!("n{round}-{i}.flood.example")))
                else {
                    panic!("distinct names lead");
                };
                held.push((permit, leader));
            }
            assert_eq!(t.admit(client).unwrap_err(), Overload::Client);
            for (permit, leader) in held {
                leader.finish(&0);
                drop(permit);
            }
        }
        assert_eq!(t.in_flight(), 0);
        assert!(t.counts.per_client.lock().is_empty());
        assert!(t.shards.iter().all(|s| s.lock().is_empty()));
        // The shards' tables keep their capacity, which the in-flight bound caps (1024 here,
        // spread over the shards), not the 51 200 names asked.
        let slots: usize = t.shards.iter().map(|s| s.lock().capacity()).sum();
        assert!(slots <= 4 * 1024, "{slots} slots");
    }
}
