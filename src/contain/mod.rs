//! Containment: per-client rate limits, and throttles, sinkholes and quarantines with expiry.
//!
//! Two checks sit in the query pipeline:
//! - [`Containment::check_client`] runs first, before policy, keyed on the socket source
//!   address (never on anything the client claims): a quarantined client gets nothing, and the
//!   optional per-client rate limit refuses floods before they cost any work.
//! - [`Containment::check_domain`] runs after scoring: a throttled (client, domain) is held to a
//!   small rate, a sinkholed domain is answered with the sinkhole for the client (or its whole
//!   group, see [`SinkholeScope`]).
//!
//! The detector's level starts containment through [`Containment::start`]; every entry expires
//! on its own ([`Containment::expire_due`], called about once a second) or is released by an
//! operator ([`Containment::release`]). Both give the events for the event log. Entries are
//! bounded by `max_entries`: when full, the entry closest to expiry makes room and its end is
//! reported by the next `expire_due`. Time comes from the injected clock, including the
//! rate limiters', so tests drive everything with a manual clock.
//!
//! With a state directory the live entries are kept in a file there
//! ([`Containment::persist_at`], see [`persist`]), so a restart or a crash does not release a
//! tunnelling agent.

pub mod overrides;
pub mod persist;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use crate::identity::ClientKey;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::config_error::{ConfigProblems, DurationRange};
use crate::detect::Level;
use crate::events::ContainmentEvent;
use crate::metrics::{CONTAINMENTS_ACTIVE, CONTAINMENTS_TOTAL};

/// `[containment]`.
///
/// ```toml
/// [containment]
/// rate_limit = { qps = 200, burst = 400 }   # per client; absent = off
/// throttle_qps = 2
/// throttle_burst = 5
/// throttle_for = "10m"
/// sinkhole_for = "30m"
/// quarantine_for = "1h"
/// sinkhole_scope = "client"                  # or "group"
/// max_entries = 10000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainConfig {
    /// Per-client rate limit on all queries, keyed on the source address. Off when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Queries per second a throttled (client, domain) may still make.
    #[serde(default = "default_throttle_qps")]
    pub throttle_qps: u32,
    /// Burst allowed on top of `throttle_qps`.
    #[serde(default = "default_throttle_burst")]
    pub throttle_burst: u32,
    /// How long a throttle lasts.
    #[serde(default = "default_throttle_for", with = "humantime_serde")]
    pub throttle_for: Duration,
    /// How long a sinkhole lasts.
    #[serde(default = "default_sinkhole_for", with = "humantime_serde")]
    pub sinkhole_for: Duration,
    /// How long a quarantine lasts.
    #[serde(default = "default_quarantine_for", with = "humantime_serde")]
    pub quarantine_for: Duration,
    /// Whether a sinkhole covers only the client that triggered it or its whole group.
    #[serde(default)]
    pub sinkhole_scope: SinkholeScope,
    /// Bound on active containment entries of all kinds.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// IPv6 clients known only by their address are contained as their whole `/ipv6_prefix`
    /// network (default 64): a host cannot escape a quarantine by moving inside its /64.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

/// A per-client rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained queries per second.
    pub qps: u32,
    /// Burst size; `qps` when absent.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Who a sinkhole covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkholeScope {
    /// Only the client whose score triggered it.
    #[default]
    Client,
    /// Every client of that client's group: a domain one agent tunnels through is cut for all.
    Group,
}

fn default_throttle_qps() -> u32 {
    2
}
fn default_throttle_burst() -> u32 {
    5
}
/// Accepted `throttle_for`, `sinkhole_for` and `quarantine_for`.
pub const CONTAINMENT_FOR: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));

/// Longest a review's "confirmed, extend containment" may extend one for, from now; so the
/// longest any containment has left (a restart takes back none that claims more).
pub const MAX_EXTEND: Duration = Duration::from_secs(30 * 86_400);

fn default_throttle_for() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_sinkhole_for() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_quarantine_for() -> Duration {
    Duration::from_secs(60 * 60)
}
fn default_ipv6_prefix() -> u8 {
    crate::identity::DEFAULT_IPV6_PREFIX
}

fn default_max_entries() -> usize {
    10_000
}

impl Default for ContainConfig {
    fn default() -> Self {
        Self {
            rate_limit: None,
            throttle_qps: default_throttle_qps(),
            throttle_burst: default_throttle_burst(),
            throttle_for: default_throttle_for(),
            sinkhole_for: default_sinkhole_for(),
            quarantine_for: default_quarantine_for(),
            sinkhole_scope: SinkholeScope::default(),
            max_entries: default_max_entries(),
            ipv6_prefix: default_ipv6_prefix(),
        }
    }
}

impl ContainConfig {
    /// Records every problem in this section; `at` is its key path (`containment`).
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        if !(1..=128).contains(&self.ipv6_prefix) {
            problems.push(
                format!("{at}.ipv6_prefix"),
                "must be between 1 and 128 (64 groups a host's /64)",
            );
        }
        if let Some(rl) = &self.rate_limit {
            if rl.qps == 0 {
                problems.push(
                    format!("{at}.rate_limit.qps"),
                    "must be at least 1 (remove rate_limit to turn it off)",
                );
            }
            if rl.burst == Some(0) {
                problems.push(format!("{at}.rate_limit.burst"), "must be at least 1");
            }
        }
        if self.throttle_qps == 0 {
            problems.push(
                format!("{at}.throttle_qps"),
                "must be at least 1 (a sinkhole is the way to stop a domain)",
            );
        }
        if self.throttle_burst == 0 {
            problems.push(format!("{at}.throttle_burst"), "must be at least 1");
        }
        for (key, d) in [
            ("throttle_for", self.throttle_for),
            ("sinkhole_for", self.sinkhole_for),
            ("quarantine_for", self.quarantine_for),
        ] {
            problems.check_duration(format!("{at}.{key}"), d, CONTAINMENT_FOR);
        }
        if !(16..=1_000_000).contains(&self.max_entries) {
            problems.push(
                format!("{at}.max_entries"),
                "must be between 16 and 1000000",
            );
        }
    }
}

/// The domain of a throttle or sinkhole that covers every name the client asks: evidence that
/// names no domain (egress drops, see `crate::egress::evidence`) contains the client as a whole.
/// Never group-wide, whatever `sinkhole_scope` says: it is one client's own evidence.
pub const EVERY_DOMAIN: &str = "*";

/// Outcome of the client-wide check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientGate {
    /// Go on.
    Pass,
    /// Over the per-client rate limit.
    RateLimited,
    /// The client is quarantined.
    Quarantined,
}

impl ClientGate {
    /// Stable reason string for events and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::RateLimited => "rate_limited",
            Self::Quarantined => "quarantine",
        }
    }
}

/// Outcome of the domain-scoped check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainGate {
    /// Go on.
    Pass,
    /// The (client, domain) is throttled and over its rate.
    Throttled,
    /// The domain is sinkholed for this client (or its group).
    Sinkholed,
}

impl DomainGate {
    /// Stable reason string for events and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Throttled => "throttle",
            Self::Sinkholed => "sinkhole",
        }
    }
}

/// One active containment, for the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveContainment {
    /// The contained client (for a group sinkhole: the client that triggered it); for an
    /// agent, the address it was last seen at.
    pub client: IpAddr,
    /// The contained agent, when keyed on a verified identity.
    pub agent: Option<String>,
    /// Its group.
    pub group: String,
    /// The domain, `None` for a quarantine.
    pub domain: Option<String>,
    /// `throttle`, `sinkhole` or `quarantine`.
    pub action: &'static str,
    /// Whether it covers the whole group (group-scoped sinkhole).
    pub group_wide: bool,
    /// Score that started it.
    pub score: u8,
    /// Seconds since it started (or was last escalated).
    pub age_secs: u64,
    /// Seconds until it expires.
    pub expires_in_secs: u64,
}

/// Adapts the injected clock to governor's clock trait, so rate limits follow a manual clock
/// in tests.
#[derive(Debug, Clone)]
struct GovernorClock(SharedClock);

impl governor::clock::Clock for GovernorClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.now()
    }
}

/// A keyed governor limiter on the injected clock.
type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, GovernorClock, NoOpMiddleware<Duration>>;

/// One containment entry.
#[derive(Debug, Clone)]
struct Entry {
    /// The client (the trigger, for group scope): an agent when verified, else an address.
    client: ClientKey,
    /// Its group.
    group: String,
    /// `None` for quarantine.
    domain: Option<String>,
    /// Throttle, Sinkhole or Quarantine.
    level: Level,
    /// Whether this is a group-wide sinkhole.
    group_wide: bool,
    /// Score that started it.
    score: u8,
    /// Clock time it started.
    started: Duration,
    /// Its age when `started` was taken: zero, except for an entry a restart took back, which
    /// started before this process's clock did.
    carried: Duration,
    /// Clock time it ends.
    until: Duration,
}

impl Entry {
    fn live(&self, now: Duration) -> bool {
        now < self.until
    }

    fn age(&self, now: Duration) -> Duration {
        now.saturating_sub(self.started)
            .saturating_add(self.carried)
    }
}

/// The tables, behind one lock: they are only touched when something is contained.
#[derive(Debug, Default)]
struct Tables {
    /// Quarantined clients.
    quarantines: HashMap<ClientKey, Entry>,
    /// Per (client, domain) throttles and sinkholes, keyed by a hash of both.
    client_domains: HashMap<u64, Entry>,
    /// Per (group, domain) sinkholes, keyed by a hash of both.
    group_domains: HashMap<u64, Entry>,
    /// Ends of entries evicted to make room, reported by the next `expire_due`.
    evicted: Vec<ContainmentEvent>,
}

impl Tables {
    fn len(&self) -> usize {
        self.quarantines.len() + self.client_domains.len() + self.group_domains.len()
    }
}

/// Rate limits and active containments. `Send + Sync`; share it behind an `Arc`.
pub struct Containment {
    /// Durations, scope, bound.
    cfg: ContainConfig,
    /// Time source.
    clock: SharedClock,
    /// Per-client limit, when configured.
    client_limiter: Option<Limiter<ClientKey>>,
    /// Per (client, domain) limit applied while throttled.
    throttle_limiter: Limiter<u64>,
    /// Keyed hasher for table keys.
    hasher: RandomState,
    /// Active entries.
    tables: RwLock<Tables>,
    /// Number of entries, read without the lock so the common case (nothing contained) is free.
    entries: AtomicUsize,
    /// Where the entries are kept across restarts (none: in memory only); held while one is
    /// written, so writes follow one another in order.
    file: Mutex<Option<std::path::PathBuf>>,
    /// Changes to the tables, counted under their write lock.
    changes: AtomicU64,
    /// The count of changes the file holds (or that were dealt with when there is none).
    saved: AtomicU64,
}

impl std::fmt::Debug for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containment")
            .field("cfg", &self.cfg)
            .field("entries", &self.entries.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Containment {
    /// Empty tables and fresh limiters.
    #[must_use]
    pub fn new(cfg: &ContainConfig, clock: SharedClock) -> Self {
        let client_limiter = cfg.rate_limit.map(|rl| {
            let quota =
                Quota::per_second(nonzero(rl.qps)).allow_burst(nonzero(rl.burst.unwrap_or(rl.qps)));
            RateLimiter::new(
                quota,
                DefaultKeyedStateStore::default(),
                GovernorClock(clock.clone()),
            )
        });
        let quota =
            Quota::per_second(nonzero(cfg.throttle_qps)).allow_burst(nonzero(cfg.throttle_burst));
        let throttle_limiter = RateLimiter::new(
            quota,
            DefaultKeyedStateStore::default(),
            GovernorClock(clock.clone()),
        );
        Self {
            cfg: cfg.clone(),
            clock,
            client_limiter,
            throttle_limiter,
            hasher: RandomState::new(),
            tables: RwLock::new(Tables::default()),
            entries: AtomicUsize::new(0),
            file: Mutex::new(None),
            changes: AtomicU64::new(0),
            saved: AtomicU64::new(0),
        }
    }

    /// Client-wide gate, before policy. Key: the verified agent, else the socket address.
    pub fn check_client(&self, client: &ClientKey) -> ClientGate {
        if self.entries.load(Ordering::Acquire) > 0 {
            let now = self.clock.now();
            if self
                .tables
                .read()
                .quarantines
                .get(client)
                .is_some_and(|e| e.live(now))
            {
                return ClientGate::Quarantined;
            }
        }
        match &self.client_limiter {
            Some(limiter) if limiter.check_key(client).is_err() => ClientGate::RateLimited,
            _ => ClientGate::Pass,
        }
    }

    /// Whether any containment is live or remembered: when none is, no check can find one
    /// (one load, for the query path to skip work before asking).
    #[inline]
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.entries.load(Ordering::Acquire) == 0
    }

    /// Domain-scoped gate, after scoring: sinkhole (client or group) first, then throttle.
    pub fn check_domain(&self, client: &ClientKey, group: &str, domain: &str) -> DomainGate {
        if self.entries.load(Ordering::Acquire) == 0 {
            return DomainGate::Pass;
        }
        let now = self.clock.now();
        let pair = self.client_key(client, domain);
        let throttled = {
            let t = self.tables.read();
            let group_sinkhole = t
                .group_domains
                .get(&self.group_key(group, domain))
                .is_some_and(|e| {
                    e.live(now) && e.group == group && e.domain.as_deref() == Some(domain)
                });
            if group_sinkhole {
                return DomainGate::Sinkholed;
            }
            // The (client, domain) entry first, then one on every domain of the client.
            let every = self.client_key(client, EVERY_DOMAIN);
            let mut throttled = None;
            for (key, d) in [(pair, domain), (every, EVERY_DOMAIN)] {
                match t.client_domains.get(&key) {
                    Some(e)
                        if e.live(now) && e.client == *client && e.domain.as_deref() == Some(d) =>
                    {
                        if e.level >= Level::Sinkhole {
                            return DomainGate::Sinkholed;
                        }
                        throttled.get_or_insert(key);
                    }
                    _ => {}
                }
            }
            throttled
        };
        if let Some(key) = throttled
            && self.throttle_limiter.check_key(&key).is_err()
        {
            DomainGate::Throttled
        } else {
            DomainGate::Pass
        }
    }

    /// Starts (or escalates) containment for `level` ≥ Throttle. Returns the
    /// `containment_started` event, or `None` when nothing changed: the level is below Throttle,
    /// or a containment at that level or above is already active (a quarantine covers every
    /// domain of the client).
    pub fn start(
        &self,
        client: &ClientKey,
        group: &str,
        domain: &str,
        level: Level,
        score: u8,
    ) -> Option<ContainmentEvent> {
        self.start_because(client, group, domain, level, score, None)
    }

    /// [`Self::start`] with the reason the event carries, when the caller's evidence explains
    /// it better than a score (egress drops: destinations, ports, counts). `domain` may be
    /// [`EVERY_DOMAIN`].
    pub fn start_because(
        &self,
        client: &ClientKey,
        group: &str,
        domain: &str,
        level: Level,
        score: u8,
        reason: Option<String>,
    ) -> Option<ContainmentEvent> {
        if level < Level::Throttle {
            return None;
        }
        let now = self.clock.now();
        let mut t = self.tables.write();
        if t.quarantines.get(client).is_some_and(|e| e.live(now)) {
            return None;
        }
        let group_wide = level == Level::Sinkhole
            && self.cfg.sinkhole_scope == SinkholeScope::Group
            && domain != EVERY_DOMAIN;
        let (duration, key) = match level {
            Level::Quarantine => (self.cfg.quarantine_for, 0),
            Level::Sinkhole if group_wide => (self.cfg.sinkhole_for, self.group_key(group, domain)),
            Level::Sinkhole => (self.cfg.sinkhole_for, self.client_key(client, domain)),
            _ => (self.cfg.throttle_for, self.client_key(client, domain)),
        };
        let pair = self.client_key(client, domain);
        let existing = match level {
            Level::Quarantine => None,
            _ if group_wide => t
                .group_domains
                .get(&key)
                .filter(|e| e.live(now))
                .map(|e| e.level),
            _ => t
                .client_domains
                .get(&key)
                .filter(|e| e.live(now))
                .map(|e| e.level),
        };
        let covered_by_group = t
            .group_domains
            .get(&self.group_key(group, domain))
            .is_some_and(|e| e.live(now) && e.group == group);
        if existing.is_some_and(|l| l >= level) || (covered_by_group && level <= Level::Sinkhole) {
            return None;
        }
        let entry = Entry {
            client: client.clone(),
            group: group.to_string(),
            domain: (level != Level::Quarantine).then(|| domain.to_string()),
            level,
            group_wide,
            score,
            started: now,
            carried: Duration::ZERO,
            until: now.saturating_add(duration),
        };
        let reason = match (reason, level) {
            (Some(r), _) => r,
            (None, Level::Quarantine) => {
                format!("score {score} for {domain} reached the quarantine threshold")
            }
            (None, _) => format!("score {score} reached the {} threshold", level.as_str()),
        };
        let event = started_event(&entry, duration, reason);
        // Make room first, so the bound holds after the insert.
        let replaces = match level {
            Level::Quarantine => t.quarantines.contains_key(client),
            _ if group_wide => t.group_domains.contains_key(&key),
            _ => t.client_domains.contains_key(&key),
        };
        if !replaces {
            while t.len() >= self.cfg.max_entries.max(1) {
                if !evict_soonest(&mut t) {
                    break;
                }
            }
        }
        match level {
            Level::Quarantine => {
                t.quarantines.insert(client.clone(), entry);
            }
            _ if group_wide => {
                // The group sinkhole supersedes the client's own throttle on that domain.
                t.client_domains.remove(&pair);
                t.group_domains.insert(key, entry);
            }
            _ => {
                t.client_domains.insert(key, entry);
            }
        }
        self.entries.store(t.len(), Ordering::Release);
        // The query path only counts the change: the upkeep tick writes the file
        // ([`Self::save`]), off this path.
        self.changed();
        publish_active(&t);
        metrics::counter!(CONTAINMENTS_TOTAL, "group" => group.to_string(), "action" => level.as_str()).increment(1);
        Some(event)
    }

    /// Operator release of everything for `client`: its quarantine, its throttles and sinkholes,
    /// and group sinkholes it triggered. One `containment_ended` event per entry. With a file
    /// ([`Self::persist_at`]) the release is written before this returns (call it off the async
    /// runtime): a restart after the operator's answer does not bring the containment back.
    pub fn release(&self, client: &ClientKey, actor: &str, reason: &str) -> Vec<ContainmentEvent> {
        let why = format!("released by {actor}: {reason}");
        let mut guard = self.tables.write();
        let t = &mut *guard;
        let mut ended = Vec::new();
        if let Some(e) = t.quarantines.remove(client) {
            ended.push(ended_event(&e, why.clone()));
        }
        for map in [&mut t.client_domains, &mut t.group_domains] {
            map.retain(|_, e| {
                if e.client == *client {
                    ended.push(ended_event(e, why.clone()));
                    false
                } else {
                    true
                }
            });
        }
        self.entries.store(t.len(), Ordering::Release);
        if !ended.is_empty() {
            self.changed();
        }
        publish_active(t);
        drop(guard);
        self.save();
        ended
    }

    /// Extend the live containments of `client` (whole-client, or on `domain`) so that each
    /// lasts at least `by` from now; returns how many were extended. Used by the review's
    /// "confirmed, extend containment" (issue 12). Written to the file, if any, before this
    /// returns, as [`Self::release`].
    pub fn extend(&self, client: &ClientKey, domain: &str, by: Duration) -> usize {
        let now = self.clock.now();
        let mut guard = self.tables.write();
        let t = &mut *guard;
        let mut n = 0;
        for e in t
            .quarantines
            .values_mut()
            .chain(t.client_domains.values_mut())
            .chain(t.group_domains.values_mut())
        {
            if e.client == *client && e.live(now) && e.domain.as_deref().is_none_or(|d| d == domain)
            {
                e.until = e.until.max(now.saturating_add(by));
                n += 1;
            }
        }
        if n > 0 {
            self.changed();
        }
        publish_active(t);
        drop(guard);
        self.save();
        n
    }

    /// Removes expired entries and returns their `containment_ended` events (and those of
    /// entries evicted to make room). Also lets the rate limiters forget idle keys, which is
    /// what bounds their memory. Call about once a second.
    pub fn expire_due(&self) -> Vec<ContainmentEvent> {
        let now = self.clock.now();
        let mut ended = Vec::new();
        if self.entries.load(Ordering::Acquire) > 0 || !self.tables.read().evicted.is_empty() {
            let mut t = self.tables.write();
            ended.append(&mut t.evicted);
            t.quarantines.retain(|_, e| keep_or_end(e, now, &mut ended));
            t.client_domains
                .retain(|_, e| keep_or_end(e, now, &mut ended));
            t.group_domains
                .retain(|_, e| keep_or_end(e, now, &mut ended));
            if !ended.is_empty() {
                self.changed();
            }
            self.entries.store(t.len(), Ordering::Release);
            publish_active(&t);
        }
        if let Some(limiter) = &self.client_limiter {
            limiter.retain_recent();
        }
        self.throttle_limiter.retain_recent();
        ended
    }

    /// Every active containment.
    #[must_use]
    pub fn active(&self) -> Vec<ActiveContainment> {
        let now = self.clock.now();
        let t = self.tables.read();
        let mut all: Vec<ActiveContainment> = t
            .quarantines
            .values()
            .chain(t.client_domains.values())
            .chain(t.group_domains.values())
            .filter(|e| e.live(now))
            .map(|e| ActiveContainment {
                client: e.client.addr,
                agent: e.client.agent.as_deref().map(str::to_string),
                group: e.group.clone(),
                domain: e.domain.clone(),
                action: e.level.as_str(),
                group_wide: e.group_wide,
                score: e.score,
                age_secs: e.age(now).as_secs(),
                expires_in_secs: e.until.saturating_sub(now).as_secs(),
            })
            .collect();
        all.sort_by(|a, b| (a.client, &a.agent, &a.domain).cmp(&(b.client, &b.agent, &b.domain)));
        all
    }

    /// Keys held by the rate limiters (bounded by `expire_due`'s housekeeping), for metrics.
    #[must_use]
    pub fn limiter_keys(&self) -> usize {
        self.client_limiter.as_ref().map_or(0, RateLimiter::len) + self.throttle_limiter.len()
    }

    /// Counts a change to the tables; called with their write lock held, so a snapshot taken
    /// under the read lock and the count read with it agree.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    fn client_key(&self, client: &ClientKey, domain: &str) -> u64 {
        self.hasher.hash_one((client, domain))
    }

    fn group_key(&self, group: &str, domain: &str) -> u64 {
        self.hasher.hash_one((group, domain))
    }
}

/// `retain` helper: keeps live entries, turns expired ones into events.
fn keep_or_end(e: &Entry, now: Duration, ended: &mut Vec<ContainmentEvent>) -> bool {
    if e.live(now) {
        true
    } else {
        ended.push(ended_event(e, "expired".to_string()));
        false
    }
}

/// Drops the entry closest to expiry; false when there is nothing to drop.
fn evict_soonest(t: &mut Tables) -> bool {
    let soonest = |m: &HashMap<u64, Entry>| {
        m.iter()
            .min_by_key(|(_, e)| e.until)
            .map(|(k, e)| (*k, e.until))
    };
    let q = t
        .quarantines
        .iter()
        .min_by_key(|(_, e)| e.until)
        .map(|(k, e)| (k.clone(), e.until));
    let c = soonest(&t.client_domains);
    let g = soonest(&t.group_domains);
    let min = [q.as_ref().map(|x| x.1), c.map(|x| x.1), g.map(|x| x.1)]
        .into_iter()
        .flatten()
        .min();
    let removed = match min {
        None => None,
        Some(m) if c.is_some_and(|x| x.1 == m) => c.and_then(|(k, _)| t.client_domains.remove(&k)),
        Some(m) if g.is_some_and(|x| x.1 == m) => g.and_then(|(k, _)| t.group_domains.remove(&k)),
        Some(_) => q.and_then(|(k, _)| t.quarantines.remove(&k)),
    };
    match removed {
        Some(e) => {
            let event = ended_event(&e, "evicted: containment table full".to_string());
            t.evicted.push(event);
            true
        }
        None => false,
    }
}

fn publish_active(t: &Tables) {
    let mut counts = [0usize; 3];
    for e in t
        .quarantines
        .values()
        .chain(t.client_domains.values())
        .chain(t.group_domains.values())
    {
        match e.level {
            Level::Throttle => counts[0] += 1,
            Level::Sinkhole => counts[1] += 1,
            _ => counts[2] += 1,
        }
    }
    for (action, n) in ["throttle", "sinkhole", "quarantine"]
        .into_iter()
        .zip(counts)
    {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(CONTAINMENTS_ACTIVE, "action" => action).set(n as f64);
    }
}

/// Wall-clock RFC 3339 time `ahead` from now, for events.
fn wall_time_in(ahead: Duration) -> String {
    let ahead = chrono::Duration::from_std(ahead).unwrap_or(chrono::Duration::zero());
    let now = chrono::Utc::now();
    // `DateTime + TimeDelta` panics past year 262143; the durations are validated to days.
    now.checked_add_signed(ahead)
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn started_event(e: &Entry, duration: Duration, reason: String) -> ContainmentEvent {
    ContainmentEvent {
        client: e.client.addr,
        agent: e.client.agent.as_deref().map(str::to_string),
        group: e.group.clone(),
        domain: e.domain.clone(),
        action: e.level.as_str().to_string(),
        score: e.score,
        until: Some(wall_time_in(duration)),
        reason,
    }
}

fn ended_event(e: &Entry, reason: String) -> ContainmentEvent {
    ContainmentEvent {
        client: e.client.addr,
        agent: e.client.agent.as_deref().map(str::to_string),
        group: e.group.clone(),
        domain: e.domain.clone(),
        action: e.level.as_str().to_string(),
        score: e.score,
        until: None,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    fn ip(n: u8) -> ClientKey {
        ClientKey::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
    }

    fn setup(cfg: &ContainConfig) -> (Containment, Arc<ManualClock>) {
        let clock = ManualClock::new();
        (Containment::new(cfg, clock.clone()), clock)
    }

    #[test]
    fn config_defaults_toml_and_validation() {
        let c: ContainConfig = toml::from_str("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, ContainConfig::default());
        let c: ContainConfig = toml::from_str(
            "rate_limit = { qps = 100 }\nsinkhole_scope = \"group\"\nthrottle_for = \"2m\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.rate_limit,
            Some(RateLimitConfig {
                qps: 100,
                burst: None
            })
        );
        assert_eq!(
            (c.sinkhole_scope, c.throttle_for),
            (SinkholeScope::Group, Duration::from_secs(120))
        );
        assert!(toml::from_str::<ContainConfig>("scope = \"group\"").is_err());
        let mut p = ConfigProblems::default();
        c.validate("containment", &mut p);
        assert!(p.is_empty(), "{p}");
        let bad = ContainConfig {
            rate_limit: Some(RateLimitConfig {
                qps: 0,
                burst: Some(0),
            }),
            throttle_qps: 0,
            quarantine_for: Duration::ZERO,
            max_entries: 1,
            ..ContainConfig::default()
        };
        bad.validate("containment", &mut p);
        let at: Vec<_> = p.problems.iter().map(|x| x.location.as_str()).collect();
        assert_eq!(
            at,
            [
                "containment.rate_limit.qps",
                "containment.rate_limit.burst",
                "containment.throttle_qps",
                "containment.quarantine_for",
                "containment.max_entries"
            ]
        );
    }

    #[test]
    fn an_ipv6_client_cannot_escape_a_quarantine_inside_its_prefix() {
        let (c, _) = setup(&ContainConfig::default());
        let at = |a: &str| ClientKey::from(a.parse::<IpAddr>().unwrap());
        assert!(
            c.start(
                &at("2001:db8:7::1"),
                "g",
                "tun.example",
                Level::Quarantine,
                95
            )
            .is_some()
        );
        assert_eq!(
            c.check_client(&at("2001:db8:7::ffff:2")),
            ClientGate::Quarantined,
            "another address in the same /64"
        );
        assert_eq!(c.check_client(&at("2001:db8:8::1")), ClientGate::Pass);
    }

    #[test]
    fn nothing_contained_passes_and_rate_limit_is_off_by_default() {
        let (c, _) = setup(&ContainConfig::default());
        for _ in 0..10_000 {
            assert_eq!(c.check_client(&ip(1)), ClientGate::Pass);
        }
        assert_eq!(c.check_domain(&ip(1), "g", "example.com"), DomainGate::Pass);
        assert!(
            c.start(&ip(1), "g", "example.com", Level::Alert, 65)
                .is_none()
        );
        assert!(c.active().is_empty());
    }

    #[test]
    fn client_rate_limit_follows_the_injected_clock() {
        let cfg = ContainConfig {
            rate_limit: Some(RateLimitConfig {
                qps: 10,
                burst: Some(20),
            }),
            ..Default::default()
        };
        let (c, clock) = setup(&cfg);
        let passed = (0..50)
            .filter(|_| c.check_client(&ip(1)) == ClientGate::Pass)
            .count();
        assert_eq!(passed, 20, "the burst passes, the rest is limited");
        assert_eq!(
            c.check_client(&ip(2)),
            ClientGate::Pass,
            "limits are per client"
        );
        clock.advance(Duration::from_millis(100));
        assert_eq!(
            c.check_client(&ip(1)),
            ClientGate::Pass,
            "one token back after 100 ms at 10 qps"
        );
        assert_eq!(c.check_client(&ip(1)), ClientGate::RateLimited);
        clock.advance(Duration::from_secs(10));
        assert!(c.limiter_keys() >= 2);
        c.expire_due();
        assert_eq!(c.limiter_keys(), 0, "idle keys are forgotten");
    }

    #[test]
    fn throttle_limits_the_pair_then_escalates_and_expires() {
        let (c, clock) = setup(&ContainConfig::default());
        let started = c.start(&ip(1), "agents", "tunnel.example", Level::Throttle, 72);
        let ev = started.unwrap_or_else(|| panic!("no event"));
        assert_eq!(
            (ev.action.as_str(), ev.domain.as_deref(), ev.score),
            ("throttle", Some("tunnel.example"), 72)
        );
        assert!(ev.until.is_some());
        assert!(
            c.start(&ip(1), "agents", "tunnel.example", Level::Throttle, 75)
                .is_none(),
            "already active"
        );
        // 5 burst then throttled; other domains and clients unaffected.
        let passed = (0..20)
            .filter(|_| c.check_domain(&ip(1), "agents", "tunnel.example") == DomainGate::Pass)
            .count();
        assert_eq!(passed, 5);
        assert_eq!(
            c.check_domain(&ip(1), "agents", "other.example"),
            DomainGate::Pass
        );
        assert_eq!(
            c.check_domain(&ip(2), "agents", "tunnel.example"),
            DomainGate::Pass
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(
            c.check_domain(&ip(1), "agents", "tunnel.example"),
            DomainGate::Pass,
            "2 qps refills"
        );
        // Escalate to sinkhole.
        let ev = c
            .start(&ip(1), "agents", "tunnel.example", Level::Sinkhole, 85)
            .unwrap_or_else(|| panic!("no escalation"));
        assert_eq!(ev.action, "sinkhole");
        assert_eq!(
            c.check_domain(&ip(1), "agents", "tunnel.example"),
            DomainGate::Sinkholed
        );
        assert!(
            c.start(&ip(1), "agents", "tunnel.example", Level::Throttle, 70)
                .is_none(),
            "lower level is covered"
        );
        assert_eq!(c.active().len(), 1);
        // Expiry after sinkhole_for (30 min).
        clock.advance(Duration::from_secs(29 * 60));
        assert!(c.expire_due().is_empty());
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            c.check_domain(&ip(1), "agents", "tunnel.example"),
            DomainGate::Pass,
            "expired entries stop at once"
        );
        let ended = c.expire_due();
        assert_eq!(ended.len(), 1);
        assert_eq!(
            (ended[0].action.as_str(), ended[0].reason.as_str()),
            ("sinkhole", "expired")
        );
        assert!(c.active().is_empty());
    }

    #[test]
    fn quarantine_blocks_the_client_until_released() {
        let (c, clock) = setup(&ContainConfig::default());
        c.start(&ip(1), "agents", "tunnel.example", Level::Throttle, 70);
        let ev = c
            .start(&ip(1), "agents", "tunnel.example", Level::Quarantine, 95)
            .unwrap_or_else(|| panic!("none"));
        assert_eq!(
            (ev.action.as_str(), ev.domain.as_deref()),
            ("quarantine", None)
        );
        assert!(ev.reason.contains("tunnel.example"));
        assert_eq!(c.check_client(&ip(1)), ClientGate::Quarantined);
        assert_eq!(c.check_client(&ip(2)), ClientGate::Pass);
        assert!(
            c.start(&ip(1), "agents", "other.example", Level::Sinkhole, 85)
                .is_none(),
            "quarantine covers it"
        );
        assert!(
            c.start(&ip(1), "agents", "tunnel.example", Level::Quarantine, 99)
                .is_none()
        );
        clock.advance(Duration::from_secs(60));
        let ended = c.release(&ip(1), "alice", "false positive");
        assert_eq!(ended.len(), 2, "quarantine and the earlier throttle");
        assert!(
            ended
                .iter()
                .all(|e| e.reason == "released by alice: false positive" && e.until.is_none())
        );
        assert_eq!(c.check_client(&ip(1)), ClientGate::Pass);
        assert!(c.active().is_empty());
        assert!(c.release(&ip(1), "alice", "again").is_empty());
        // A quarantine also expires by itself after quarantine_for (1 h).
        c.start(&ip(3), "agents", "t.example", Level::Quarantine, 91);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(c.check_client(&ip(3)), ClientGate::Pass);
        assert_eq!(c.expire_due().len(), 1);
    }

    #[test]
    fn group_scope_sinkholes_the_domain_for_the_whole_group() {
        let cfg = ContainConfig {
            sinkhole_scope: SinkholeScope::Group,
            ..Default::default()
        };
        let (c, _) = setup(&cfg);
        let ev = c
            .start(&ip(1), "agents", "tunnel.example", Level::Sinkhole, 82)
            .unwrap_or_else(|| panic!("none"));
        assert_eq!(ev.action, "sinkhole");
        assert_eq!(
            c.check_domain(&ip(2), "agents", "tunnel.example"),
            DomainGate::Sinkholed
        );
        assert_eq!(
            c.check_domain(&ip(2), "builders", "tunnel.example"),
            DomainGate::Pass
        );
        assert!(
            c.start(&ip(2), "agents", "tunnel.example", Level::Throttle, 71)
                .is_none()
        );
        let active = c.active();
        assert_eq!(active.len(), 1);
        assert!(active[0].group_wide);
        assert_eq!(c.release(&ip(1), "bob", "fixed").len(), 1);
        assert_eq!(
            c.check_domain(&ip(2), "agents", "tunnel.example"),
            DomainGate::Pass
        );
    }

    #[test]
    fn the_table_is_bounded_and_evictions_are_reported() {
        let cfg = ContainConfig {
            max_entries: 16,
            ..Default::default()
        };
        let (c, clock) = setup(&cfg);
        for i in 0..40u8 {
            assert!(
                c.start(&ip(i), "agents", "tunnel.example", Level::Throttle, 70)
                    .is_some()
            );
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(c.active().len(), 16);
        let ended = c.expire_due();
        assert_eq!(ended.len(), 24);
        assert!(ended.iter().all(|e| e.reason.starts_with("evicted")));
        // The oldest (soonest to expire) went first.
        assert_eq!(ended[0].client, ip(0).addr);
    }

    #[test]
    fn every_domain_contains_the_client_alone_on_all_names() {
        let cfg = ContainConfig {
            sinkhole_scope: SinkholeScope::Group,
            ..Default::default()
        };
        let (c, clock) = setup(&cfg);
        let ev = c
            .start_because(
                &ip(1),
                "agents",
                EVERY_DOMAIN,
                Level::Sinkhole,
                100,
                Some("egress: 20 destinations".into()),
            )
            .unwrap_or_else(|| panic!("none"));
        assert_eq!(ev.reason, "egress: 20 destinations");
        assert_eq!(ev.domain.as_deref(), Some(EVERY_DOMAIN));
        for name in ["a.example", "b.example"] {
            assert_eq!(
                c.check_domain(&ip(1), "agents", name),
                DomainGate::Sinkholed
            );
            assert_eq!(
                c.check_domain(&ip(2), "agents", name),
                DomainGate::Pass,
                "never group-wide: own evidence only"
            );
        }
        assert_eq!(c.release(&ip(1), "alice", "ok").len(), 1);
        assert_eq!(
            c.check_domain(&ip(1), "agents", "a.example"),
            DomainGate::Pass
        );
        // A throttle on every domain shares one bucket across names.
        c.start_because(&ip(3), "agents", EVERY_DOMAIN, Level::Throttle, 100, None);
        let passed = (0..20)
            .filter(|i| {
                c.check_domain(&ip(3), "agents", &format!("n{i}.example")) == DomainGate::Pass
            })
            .count();
        assert_eq!(passed, 5, "the burst, across all names");
        clock.advance(Duration::from_secs(601));
        assert_eq!(c.expire_due().len(), 1);
        assert_eq!(
            c.check_domain(&ip(3), "agents", "x.example"),
            DomainGate::Pass
        );
    }

    #[test]
    fn containment_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Containment>();
    }
}
