//! A bounded, sharded, concurrent table of per-key detector state.
//!
//! Built on `quick_cache` (S3-FIFO-like eviction): a key seen once sits in a small probation
//! queue and is evicted first, so a flood of one-off keys (random registrable domains, spoofed
//! sources) cannot push out the keys that are queried again and again, such as a live tunnel's.
//! The number of resident keys never exceeds the configured bound; every eviction is counted in
//! `dnsward_detector_evictions_total{table}`. Keys are 64-bit hashes from a per-process keyed
//! hasher, so state costs no key allocation and nobody can aim collisions.

use std::convert::Infallible;
use std::sync::Arc;

use parking_lot::Mutex;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, UnitWeighter};

use crate::metrics::DETECTOR_EVICTIONS_TOTAL;

/// Counts evictions for one named table.
#[derive(Debug, Clone, Copy)]
pub struct EvictionCounter {
    /// Metric label.
    table: &'static str,
}

impl<V> Lifecycle<u64, V> for EvictionCounter {
    type RequestState = ();

    fn on_evict(&self, _state: &mut Self::RequestState, _key: u64, _val: V) {
        metrics::counter!(DETECTOR_EVICTIONS_TOTAL, "table" => self.table).increment(1);
    }
}

/// Bounded map from key hash to shared, locked state.
pub struct BoundedTable<V> {
    /// Metric label: `client_domain`, `domain` or `client`.
    name: &'static str,
    /// The bound, as configured.
    bound: usize,
    /// The entries.
    cache: Cache<u64, Arc<Mutex<V>>, UnitWeighter, DefaultHashBuilder, EvictionCounter>,
}

impl<V> std::fmt::Debug for BoundedTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedTable")
            .field("name", &self.name)
            .field("bound", &self.bound)
            .field("len", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl<V> BoundedTable<V> {
    /// A table holding at most `bound` keys (at least 1).
    #[must_use]
    pub fn new(name: &'static str, bound: usize) -> Self {
        let bound = bound.max(1);
        // quick_cache rounds each shard's capacity up; choose a shard count that divides the
        // bound's capacity evenly so the total never exceeds it, and keep ≥ 32 keys per shard.
        let mut shards = 16usize;
        while shards > 1 && bound / shards < 32 {
            shards /= 2;
        }
        let capacity = (bound / shards).max(1) * shards;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(capacity)
            .weight_capacity(u64::try_from(capacity).unwrap_or(u64::MAX))
            .shards(shards)
            .build();
        let cache = match options {
            Ok(o) => Cache::with_options(
                o,
                UnitWeighter,
                DefaultHashBuilder::default(),
                EvictionCounter { table: name },
            ),
            // Unreachable with the values above; fall back to quick_cache's own sizing.
            Err(_) => Cache::with(
                capacity,
                u64::try_from(capacity).unwrap_or(u64::MAX),
                UnitWeighter,
                DefaultHashBuilder::default(),
                EvictionCounter { table: name },
            ),
        };
        Self { name, bound, cache }
    }

    /// The state for `key`, created with `make` when absent.
    pub fn get_or_insert(&self, key: u64, make: impl FnOnce() -> V) -> Arc<Mutex<V>> {
        let Ok(state) = self
            .cache
            .get_or_insert_with(&key, || Ok::<_, Infallible>(Arc::new(Mutex::new(make()))));
        state
    }

    /// The state for `key`, if tracked.
    #[must_use]
    pub fn get(&self, key: u64) -> Option<Arc<Mutex<V>>> {
        self.cache.get(&key)
    }

    /// Stop tracking `key`.
    pub fn remove(&self, key: u64) {
        self.cache.remove(&key);
    }

    /// Keys now tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Metric label of this table.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }
}
