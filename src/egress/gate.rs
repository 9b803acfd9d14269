//! The gate: turns allowed answers into set writes, remembers what the sets hold, batches the
//! writes on a background thread and lets an answer wait (boundedly) for its batch.
//!
//! Hot path ([`Egress::admit`]): one lookup of the group, one pass over the answer's A/AAAA
//! records, one short lock of the `held` map. An address whose element is already promised for
//! at least as long as this answer needs (`now + TTL + grace`) costs nothing more: no write, no
//! wait — the common case for cache hits, because a hit's TTL counts down as time passes, so its
//! promise stays the same. Only a new or extended promise queues a write and returns a [`Wait`].
//!
//! Batching: writes go into one queue; a single flusher thread takes *everything* queued, applies
//! it as one backend transaction, then publishes the batch number. While a batch is being
//! applied the next one fills up, so the number of `nft` runs grows with time, not with load.
//! An answer that needs an address which another answer already queued waits for that same batch
//! instead of writing it again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::Counter;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::answer;
use super::backend::{BackendError, Op, SetBackend};
use super::config::{EgressConfig, set4_name, set6_name};
use super::metric_names as mn;
use crate::clock::SharedClock;

/// The longest timeout ever written, whatever the TTL says.
const MAX_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// Most seconds of slack added to a written timeout.
const MAX_SLACK_SECS: u64 = 60;
/// How often a full `held` map may be swept for expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Timing and bounds, taken from [`EgressConfig`].
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    /// Added to every TTL.
    pub grace: Duration,
    /// Shortest timeout written.
    pub min_lifetime: Duration,
    /// Most addresses per answer.
    pub max_addresses_per_name: usize,
    /// Longest wait for a batch.
    pub max_wait: Duration,
    /// Bound of the `held` map.
    pub max_tracked: usize,
}

impl From<&EgressConfig> for GateSettings {
    fn from(c: &EgressConfig) -> Self {
        Self {
            grace: c.grace,
            min_lifetime: c.min_lifetime,
            max_addresses_per_name: c.max_addresses_per_name,
            max_wait: c.max_wait,
            max_tracked: c.max_tracked,
        }
    }
}

/// A gated group's sets.
#[derive(Debug, Clone)]
struct GroupSets {
    /// Stable number of the group name (keys of the `held` map), kept across reloads.
    slot: u32,
    /// IPv4 set name.
    v4: Arc<str>,
    /// IPv6 set name.
    v6: Arc<str>,
}

/// What a set is known to hold for one (group, address).
#[derive(Debug, Clone, Copy)]
struct Held {
    /// When the element expires (clock time).
    expiry: Duration,
    /// The batch that writes (or wrote) it.
    batch: u64,
}

/// The `held` map and its sweep time.
#[derive(Debug, Default)]
struct HeldMap {
    /// (group slot, address) → what the set holds.
    map: HashMap<(u32, IpAddr), Held, foldhash::fast::RandomState>,
    /// Last sweep of expired entries.
    last_sweep: Duration,
}

/// The write queue.
#[derive(Debug)]
struct Queue {
    /// Operations of the batch being collected.
    ops: Vec<Op>,
    /// Number of the batch being collected (the first is 1).
    collecting: u64,
    /// No more batches: the flusher drains and stops.
    closed: bool,
}

/// State shared with the flusher thread.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    held: Mutex<HeldMap>,
    /// The last batch applied (or given up on): waits complete when it reaches their batch.
    flushed: watch::Sender<u64>,
    backend: Arc<dyn SetBackend>,
}

/// Why egress could not start.
#[derive(Debug, thiserror::Error)]
#[error("creating the egress table and sets: {0}")]
pub struct StartError(#[from] pub BackendError);

/// The egress gate. Shared by the pipeline (admit), the policy swap (groups) and the app
/// (start, shutdown).
pub struct Egress {
    settings: GateSettings,
    clock: SharedClock,
    /// Gated groups by name; replaced on reload.
    groups: ArcSwap<HashMap<Box<str>, GroupSets>>,
    /// Slot numbers ever handed out, by group name (bounded by the number of group names seen).
    slots: Mutex<HashMap<Box<str>, u32>>,
    shared: Arc<Shared>,
    flushed: watch::Receiver<u64>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    writes: Counter,
    capped: Counter,
    untracked: Counter,
    wait_timeouts: Counter,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("settings", &self.settings)
            .field("groups", &self.groups.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A pending set update an answer may wait for. Dropping it does not cancel the write.
#[derive(Debug)]
#[must_use = "an answer should wait for its firewall update before it is sent"]
pub struct Wait {
    rx: watch::Receiver<u64>,
    batch: u64,
    max: Duration,
    timeouts: Counter,
}

impl Wait {
    /// Wait until the batch is applied, at most the configured `max_wait`. Returns whether it
    /// was applied in time (a timeout is counted in `dnsward_egress_wait_timeouts_total`).
    pub async fn done(mut self) -> bool {
        let batch = self.batch;
        let ok = matches!(
            tokio::time::timeout(self.max, self.rx.wait_for(|b| *b >= batch)).await,
            Ok(Ok(_))
        );
        if !ok {
            self.timeouts.increment(1);
        }
        ok
    }

    /// The batch this waits for (tests).
    #[must_use]
    pub fn batch(&self) -> u64 {
        self.batch
    }
}

impl Egress {
    /// Create or adopt the table and the sets of `groups` (one transaction, synchronously, so
    /// a backend that does not work stops the start), then start the flusher thread.
    ///
    /// # Errors
    /// The backend rejected the first batch.
    pub fn start(
        settings: GateSettings,
        groups: &[&str],
        backend: Arc<dyn SetBackend>,
        clock: SharedClock,
    ) -> Result<Arc<Self>, StartError> {
        let (tx, rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                ops: Vec::new(),
                collecting: 1,
                closed: false,
            }),
            wake: Condvar::new(),
            held: Mutex::new(HeldMap::default()),
            flushed: tx,
            backend,
        });
        let egress = Arc::new(Self {
            settings,
            clock,
            groups: ArcSwap::from_pointee(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            shared: Arc::clone(&shared),
            flushed: rx,
            flusher: Mutex::new(None),
            writes: metrics::counter!(mn::WRITES_TOTAL),
            capped: metrics::counter!(mn::CAPPED_TOTAL),
            untracked: metrics::counter!(mn::UNTRACKED_TOTAL),
            wait_timeouts: metrics::counter!(mn::WAIT_TIMEOUTS_TOTAL),
        });
        let mut first = vec![Op::EnsureTable];
        let map = egress.group_map(groups);
        first.extend(map.values().map(|g| Op::EnsureSets {
            v4: Arc::clone(&g.v4),
            v6: Arc::clone(&g.v6),
        }));
        shared.backend.apply(&first)?;
        egress.groups.store(Arc::new(map));
        let thread = std::thread::Builder::new()
            .name("egress-flush".into())
            .spawn(move || flush_loop(&shared))
            .map_err(|e| {
                StartError(BackendError::Spawn {
                    program: "egress flusher thread".into(),
                    source: e,
                })
            })?;
        *egress.flusher.lock() = Some(thread);
        Ok(egress)
    }

    fn group_map(&self, groups: &[&str]) -> HashMap<Box<str>, GroupSets> {
        let mut slots = self.slots.lock();
        groups
            .iter()
            .map(|name| {
                let next = u32::try_from(slots.len()).unwrap_or(u32::MAX);
                let slot = *slots.entry((*name).into()).or_insert(next);
                let sets = GroupSets {
                    slot,
                    v4: set4_name(name).into(),
                    v6: set6_name(name).into(),
                };
                ((*name).into(), sets)
            })
            .collect()
    }

    /// Whether `group` is gated.
    #[must_use]
    pub fn gates(&self, group: &str) -> bool {
        self.groups.load().contains_key(group)
    }

    /// Make the addresses in `answer` (wire format, as sent to a client of `group`) reachable for
    /// that group for TTL + grace. `None`: nothing to wait for (group not gated, no addresses,
    /// or every address already promised long enough and written). `Some`: the answer should
    /// wait for [`Wait::done`] before it is sent.
    pub fn admit(&self, group: &str, answer: &[u8]) -> Option<Wait> {
        let groups = self.groups.load();
        let sets = groups.get(group)?;
        self.admit_to(sets, answer, None)
    }

    fn admit_to(&self, sets: &GroupSets, answer: &[u8], ttl_cap: Option<u32>) -> Option<Wait> {
        let s = &self.settings;
        let mut addrs = answer::addresses(answer).peekable();
        addrs.peek()?;
        let now = self.clock.now();
        let flushed = *self.flushed.borrow();
        let mut wait_for = 0;
        let mut fresh: Vec<((u32, IpAddr), Duration, Op)> = Vec::new();
        // One lock of `held` for check, enqueue and record: a failed batch's cleanup (which
        // takes this lock) can then never run between queueing an element and recording it.
        let mut held = self.shared.held.lock();
        {
            for (i, a) in addrs.enumerate() {
                if i >= s.max_addresses_per_name {
                    self.capped.increment(1);
                    break;
                }
                let ttl = Duration::from_secs(u64::from(ttl_cap.map_or(a.ttl, |c| a.ttl.min(c))));
                // Saturating: `grace` is validated to a day, but this runs on the query path.
                let promised = now.saturating_add(ttl).saturating_add(s.grace);
                let key = (sets.slot, a.ip);
                if let Some(h) = held.map.get(&key)
                    && h.expiry >= promised
                {
                    if h.batch > flushed {
                        wait_for = wait_for.max(h.batch);
                    }
                    continue;
                }
                let lifetime = ttl
                    .saturating_add(s.grace)
                    .max(s.min_lifetime)
                    .min(MAX_LIFETIME);
                // Whole seconds, rounded up: the kernel never expires it before `promised`. Plus
                // an eighth (at most a minute) of slack, so that an answer sent with its full TTL
                // every time (local zones, fresh upstream answers) is rewritten at most every
                // eighth of its lifetime instead of every second.
                let secs = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
                let secs = secs + secs.div_ceil(8).min(MAX_SLACK_SECS);
                let op = Op::Element {
                    set: Arc::clone(if a.ip.is_ipv4() { &sets.v4 } else { &sets.v6 }),
                    ip: a.ip,
                    timeout_secs: u32::try_from(secs).unwrap_or(u32::MAX),
                };
                fresh.push((key, now + Duration::from_secs(secs), op));
            }
        }
        if !fresh.is_empty() {
            self.writes.increment(fresh.len() as u64);
            let batch = self.enqueue(fresh.iter().map(|(_, _, op)| op.clone()));
            self.remember(
                &mut held,
                fresh.iter().map(|(k, e, _)| (*k, *e)),
                batch,
                now,
            );
            wait_for = wait_for.max(batch);
        }
        drop(held);
        (wait_for > flushed).then(|| Wait {
            rx: self.flushed.clone(),
            batch: wait_for,
            max: s.max_wait,
            timeouts: self.wait_timeouts.clone(),
        })
    }

    /// Queue operations into the batch being collected; returns its number. Lock order: `held`
    /// (when the caller holds it) before `queue`; the flusher never holds both.
    fn enqueue(&self, ops: impl IntoIterator<Item = Op>) -> u64 {
        let mut q = self.shared.queue.lock();
        q.ops.extend(ops);
        let batch = q.collecting;
        drop(q);
        self.shared.wake.notify_one();
        batch
    }

    fn remember(
        &self,
        held: &mut HeldMap,
        entries: impl Iterator<Item = ((u32, IpAddr), Duration)>,
        batch: u64,
        now: Duration,
    ) {
        for (key, expiry) in entries {
            if held.map.len() >= self.settings.max_tracked && !held.map.contains_key(&key) {
                if now.saturating_sub(held.last_sweep) >= SWEEP_EVERY {
                    held.map.retain(|_, h| h.expiry > now);
                    held.last_sweep = now;
                }
                if held.map.len() >= self.settings.max_tracked {
                    // Still full of live promises: written, but not remembered, so the next
                    // answer for it writes again. Costs writes, never correctness.
                    self.untracked.increment(1);
                    continue;
                }
            }
            held.map.insert(key, Held { expiry, batch });
        }
    }

    /// Fill the sets from remembered answers (the answer cache): `(group, name, answer bytes,
    /// remaining TTL)`. Each answer is admitted as if just sent, with its TTL capped at the
    /// remaining one. The caller decides which answers each group may see (its policy).
    /// Returns the wait for the last batch, if anything was written.
    pub fn repopulate<'a, I>(&self, entries: I) -> Option<Wait>
    where
        I: IntoIterator<Item = (&'a str, &'a str, &'a [u8], u32)>,
    {
        let groups = self.groups.load();
        let mut last = None;
        for (group, _name, bytes, remaining) in entries {
            if let Some(sets) = groups.get(group)
                && let Some(w) = self.admit_to(sets, bytes, Some(remaining))
            {
                last = Some(w);
            }
        }
        last
    }

    /// Make the gated groups exactly `gated` (after a reload): sets of groups no longer gated
    /// are emptied and deleted in one batch, sets of new groups are created. Returns the wait
    /// for that batch, if there was anything to do.
    pub fn set_groups(&self, gated: &[&str]) -> Option<Wait> {
        let old = self.groups.load_full();
        let new = self.group_map(gated);
        let mut ops = Vec::new();
        let mut gone = Vec::new();
        for (name, g) in old.iter() {
            if !new.contains_key(name) {
                ops.push(Op::DeleteSets {
                    v4: Arc::clone(&g.v4),
                    v6: Arc::clone(&g.v6),
                });
                gone.push(g.slot);
            }
        }
        for (name, g) in &new {
            if !old.contains_key(name) {
                ops.push(Op::EnsureSets {
                    v4: Arc::clone(&g.v4),
                    v6: Arc::clone(&g.v6),
                });
            }
        }
        if ops.is_empty() {
            return None;
        }
        // New groups' sets are queued before any of their elements can be (same queue).
        let batch = self.enqueue(ops);
        self.groups.store(Arc::new(new));
        if !gone.is_empty() {
            // A group switched back on later must not believe its old elements are still there.
            self.shared
                .held
                .lock()
                .map
                .retain(|(slot, _), _| !gone.contains(slot));
        }
        Some(Wait {
            rx: self.flushed.clone(),
            batch,
            max: Duration::from_secs(5),
            timeouts: self.wait_timeouts.clone(),
        })
    }

    /// Forget remembered elements that have expired and publish the map size (upkeep tick).
    pub fn sweep(&self) {
        let now = self.clock.now();
        let mut held = self.shared.held.lock();
        held.map.retain(|_, h| h.expiry > now);
        held.last_sweep = now;
        metrics::gauge!(mn::TRACKED).set(held.map.len() as f64);
    }

    /// Number of remembered (group, address) elements.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.shared.held.lock().map.len()
    }

    /// The backend (for `status`).
    #[must_use]
    pub fn backend(&self) -> &Arc<dyn SetBackend> {
        &self.shared.backend
    }

    /// Stop the flusher after it applied what is queued; with `delete_sets`, the sets of every
    /// gated group are deleted in a last batch (otherwise they stay, so connections and
    /// recently resolved addresses keep working across a restart).
    pub fn shutdown(&self, delete_sets: bool) {
        if delete_sets {
            let groups = self.groups.load();
            let _ = self.enqueue(groups.values().map(|g| Op::DeleteSets {
                v4: Arc::clone(&g.v4),
                v6: Arc::clone(&g.v6),
            }));
        }
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.flusher.lock().take() {
            let _ = t.join();
        }
    }
}

/// The flusher thread: take everything queued, apply it as one batch, publish its number.
fn flush_loop(shared: &Shared) {
    let applied_ok = metrics::counter!(mn::BATCHES_TOTAL, "result" => "ok");
    let failed = metrics::counter!(mn::BATCHES_TOTAL, "result" => "error");
    loop {
        let (ops, batch) = {
            let mut q = shared.queue.lock();
            while q.ops.is_empty() && !q.closed {
                shared.wake.wait(&mut q);
            }
            if q.ops.is_empty() && q.closed {
                return;
            }
            let batch = q.collecting;
            q.collecting += 1;
            (std::mem::take(&mut q.ops), batch)
        };
        let mut result = shared.backend.apply(&ops);
        if result.is_err() && ops.iter().any(|o| matches!(o, Op::DeleteSets { .. })) {
            // A set that the operator's rules reference cannot be deleted (EBUSY): empty it
            // instead, in the same all-or-nothing way, so the group still loses access at once.
            let softer: Vec<Op> = ops
                .iter()
                .map(|o| match o {
                    Op::DeleteSets { v4, v6 } => Op::FlushSets {
                        v4: Arc::clone(v4),
                        v6: Arc::clone(v6),
                    },
                    other => other.clone(),
                })
                .collect();
            result = shared.backend.apply(&softer);
        }
        match result {
            Ok(()) => applied_ok.increment(1),
            Err(e) => {
                failed.increment(1);
                tracing::warn!(error = %e, ops = ops.len(), "egress set update failed");
                // Forget what this batch promised, so the next answer writes it again.
                shared.held.lock().map.retain(|_, h| h.batch != batch);
            }
        }
        shared.flushed.send_replace(batch);
    }
}

#[cfg(test)]
mod tests;
