//! The answer cache, owned by dnsward and sitting on the hot path.
//!
//! Answers are stored pre-encoded (without the OPT record), so a hit is a copy plus a few
//! patches: ID, the client's question case, each TTL counted down, and an OPT record for EDNS
//! clients. A hit never touches the upstream client. The cache is bounded in bytes and evicts with
//! quick_cache's CLOCK-Pro policy.
//!
//! The bound is real heap (issue 13): each entry is weighed by what its allocations really take
//! (glibc chunk sizes: request + 8-byte header, rounded up to 16, at least 32) plus its share of
//! quick_cache's own tables (slab slot, hash slot, ghost entries, growth slack), so a full
//! 64 MiB cache holds about 64 MiB of heap. `tests/cache_memory.rs` measures this with a counting
//! allocator. The layout keeps an entry to two allocations: the store's key is a keyed 64-bit
//! hash of the question (no name copy; the stored answer's own question section is compared on
//! every hit, so a hash collision costs a miss, never a wrong answer), and the answer's bytes and
//! TTL offsets share one block.
//!
//! TTLs are clamped to `[min_ttl, max_ttl]` when stored, and rewritten in the stored bytes, so
//! the TTL a client sees always counts down to zero at the moment the entry expires. Negative
//! answers (NXDOMAIN and NODATA) are cached per RFC 2308 for `min(SOA TTL, SOA MINIMUM)`,
//! capped by `negative_max_ttl`; a negative answer without an SOA is not cached. SERVFAIL and
//! other errors are never cached here (a failed resolution is remembered for a few seconds in
//! its own table, [`crate::resolve::failures`]).
//!
//! The cache is shared by every group: the policy stage runs before it, and the CNAME chain of a
//! cached answer is kept beside it so the answer-check stage can apply each group's policy on
//! hits as well as misses.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use serde::Deserialize;

use crate::clock::SharedClock;
use crate::config_error::{ConfigProblems, DurationRange};
use crate::resolve::scrub;
use crate::wire::{self, Query, rcode, rtype};

/// `[cache]`: the answer cache's bounds and TTL clamps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether to cache at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Upper bound on the heap the cached answers may use, in bytes (default 64 MiB): each
    /// entry counts what its allocations and its share of the cache's tables really take.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Shortest time an answer is kept (default 0s: honour the upstream TTL; at most 1d).
    #[serde(default, with = "humantime_serde")]
    pub min_ttl: Duration,
    /// Longest time an answer is kept (default 1 day, at most 7d).
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Longest time a negative answer is kept (default 1 hour, RFC 2308's suggestion is 1–3 h;
    /// at most 1d).
    #[serde(default = "default_negative_max_ttl", with = "humantime_serde")]
    pub negative_max_ttl: Duration,
}

/// Accepted `min_ttl`: raising every TTL past a day keeps changed records wrong for days.
pub const CACHE_MIN_TTL: DurationRange = DurationRange::up_to(Duration::from_secs(86_400));
/// Accepted `max_ttl`: a week, as BIND's `max-cache-ttl` default (RFC 2181 §8 allows 2^31-1 s,
/// which no cache should keep an answer for).
pub const CACHE_MAX_TTL: DurationRange = DurationRange::up_to(Duration::from_secs(7 * 86_400));
/// Accepted `negative_max_ttl`: RFC 2308 §5 finds more than a day problematic.
pub const CACHE_NEGATIVE_MAX_TTL: DurationRange = DurationRange::up_to(Duration::from_secs(86_400));

fn default_true() -> bool {
    true
}
fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_ttl() -> Duration {
    Duration::from_secs(86_400)
}
fn default_negative_max_ttl() -> Duration {
    Duration::from_secs(3_600)
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: default_max_bytes(),
            min_ttl: Duration::ZERO,
            max_ttl: default_max_ttl(),
            negative_max_ttl: default_negative_max_ttl(),
        }
    }
}

impl CacheConfig {
    /// Check the section, pushing every problem.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        problems.check_duration(format!("{at}.min_ttl"), self.min_ttl, CACHE_MIN_TTL);
        problems.check_duration(format!("{at}.max_ttl"), self.max_ttl, CACHE_MAX_TTL);
        problems.check_duration(
            format!("{at}.negative_max_ttl"),
            self.negative_max_ttl,
            CACHE_NEGATIVE_MAX_TTL,
        );
        if self.min_ttl > self.max_ttl {
            problems.push(format!("{at}.min_ttl"), "min_ttl is larger than max_ttl");
        }
        if self.enabled && self.max_bytes < 64 * 1024 {
            problems.push(
                format!("{at}.max_bytes"),
                "max_bytes must be at least 65536",
            );
        }
    }
}

/// Cache key: the question, lower-cased, plus the DO bit (answers with DNSSEC records differ)
/// and the CD bit (an answer fetched with checking disabled may be bogus data a validating
/// upstream would have refused: it must never be served to a client that wants checking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Query name, lower-case presentation form.
    pub name: Box<str>,
    /// Query type.
    pub qtype: u16,
    /// Query class.
    pub qclass: u16,
    /// DNSSEC OK bit.
    pub dnssec_ok: bool,
    /// Checking Disabled bit.
    pub checking_disabled: bool,
}

impl CacheKey {
    /// The borrowed form, to compare with or hash like a lookup's key.
    #[must_use]
    pub fn as_key_ref(&self) -> CacheKeyRef<'_> {
        CacheKeyRef::from_parts(
            &self.name,
            self.qtype,
            self.qclass,
            self.dnssec_ok,
            self.checking_disabled,
        )
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_key_ref().hash(state);
    }
}

/// A borrowed cache key, so lookups do not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKeyRef<'a> {
    name: &'a str,
    qtype: u16,
    qclass: u16,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl<'a> CacheKeyRef<'a> {
    fn from_parts(
        name: &'a str,
        qtype: u16,
        qclass: u16,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> Self {
        Self {
            name,
            qtype,
            qclass,
            dnssec_ok,
            checking_disabled,
        }
    }

    /// The key for a query.
    #[must_use]
    pub fn of(q: &'a Query<'_>) -> Self {
        Self::from_parts(&q.name, q.qtype, q.qclass, q.dnssec_ok(), q.cd)
    }

    /// Name, type, class, DO and CD.
    #[must_use]
    pub fn parts(&self) -> (&'a str, u16, u16, bool, bool) {
        (
            self.name,
            self.qtype,
            self.qclass,
            self.dnssec_ok,
            self.checking_disabled,
        )
    }

    /// An owned key.
    #[must_use]
    pub fn to_owned_key(&self) -> CacheKey {
        CacheKey {
            name: self.name.into(),
            qtype: self.qtype,
            qclass: self.qclass,
            dnssec_ok: self.dnssec_ok,
            checking_disabled: self.checking_disabled,
        }
    }
}

/// The store's key for a question: a 62-bit keyed hash of name, type and class, with the DO and
/// CD bits in the low two bits verbatim (so answers for different bits can never be confused,
/// even by a collision). Names that collide share a slot: the later insert replaces the earlier
/// entry, and a lookup checks the stored question ([`CachedAnswer::answers_question`]).
type StoreKey = u64;

/// Hashes a [`StoreKey`] for quick_cache's table: the key is already a keyed hash, so this only
/// spreads the DO/CD bits (murmur3's bijective finaliser, so distinct keys stay distinct).
#[derive(Debug, Clone, Copy, Default)]
struct StoreKeyHasher;

impl std::hash::BuildHasher for StoreKeyHasher {
    type Hasher = StoreKeyHash;
    fn build_hasher(&self) -> StoreKeyHash {
        StoreKeyHash(0)
    }
}

/// The hasher [`StoreKeyHasher`] builds.
#[derive(Debug, Clone, Copy)]
struct StoreKeyHash(u64);

impl Hasher for StoreKeyHash {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (a `StoreKey`); fold anything else in case.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// An answer ready to be served again.
#[derive(Debug)]
pub struct CachedAnswer {
    /// The encoded answer without OPT, TTLs as stored (`msg_len` bytes), followed by the offset
    /// of every TTL field in it (native-endian `u16`s): one allocation instead of two.
    data: Box<[u8]>,
    /// Clock time when stored, in milliseconds (8 bytes instead of a 16-byte `Duration`).
    stored_at_ms: u64,
    /// Seconds from `stored_at_ms` until it expires.
    lifetime: u32,
    /// Real heap bytes this entry costs in the cache (see [`weigh`]); fixed at preparation
    /// because quick_cache requires an entry's weight to stay the same.
    weight: u32,
    /// Length of the message part of `data`.
    msg_len: u16,
    /// Encoded bytes of its RRSIG, NSEC and NSEC3 records (a DO client's answer; saturating),
    /// which the detector prices beside an address answer.
    pub signed_bytes: u16,
    /// Records in the answer section.
    pub answers: u16,
    /// Response code.
    pub rcode: u8,
    /// Targets of CNAMEs in the answer, for per-group answer checks (empty: no allocation).
    pub cname_targets: Box<[Box<str>]>,
    /// A and AAAA addresses in the answer, for answer checks and egress (empty: no allocation).
    pub addresses: Box<[IpAddr]>,
    /// Which upstream answered (shared with every answer from that upstream).
    pub upstream: Arc<str>,
}

impl CachedAnswer {
    /// Whether it is still fresh at `now`.
    #[must_use]
    pub fn is_fresh(&self, now: Duration) -> bool {
        now < Duration::from_millis(self.stored_at_ms)
            + Duration::from_secs(u64::from(self.lifetime))
    }

    /// The SRV and MX targets of its answer section, for the detector: read from the stored
    /// message when asked (fresh SRV and MX answers only), so no entry carries a field for
    /// them (one more would take every entry's block past its 112-byte malloc chunk).
    #[must_use]
    pub fn host_targets(&self) -> Vec<wire::HostTarget> {
        hickory_proto::op::Message::from_vec(self.message())
            .map(|m| wire::host_targets(&m.answers).collect())
            .unwrap_or_default()
    }

    /// The stored message (TTLs as stored).
    fn message(&self) -> &[u8] {
        &self.data[..usize::from(self.msg_len)]
    }

    /// Offsets of every TTL field in [`Self::message`].
    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.data[usize::from(self.msg_len)..]
            .chunks_exact(2)
            .map(|b| usize::from(u16::from_ne_bytes([b[0], b[1]])))
    }

    /// Feeds what this answer says into `h`: the stored message after its ID, TTLs included
    /// (TTLs can carry data too), so two fetches of an unchanged answer feed the same bytes
    /// (the tunnel detector counts only answers that say something new).
    pub fn hash_content(&self, h: &mut dyn Hasher) {
        let msg = self.message();
        h.write(&msg[msg.len().min(2)..]);
    }

    /// As [`Self::hash_content`] without the TTLs: what the answer's records say. A caching
    /// upstream counts TTLs down, so two fetches of an unchanged record differ in them alone.
    /// A negative answer (no answer records) is hashed by its rcode and authority records:
    /// what it says is its zone's SOA (owned by the apex), the same for every name of the zone.
    pub fn hash_records(&self, h: &mut dyn Hasher) {
        let msg = self.message();
        if self.answers == 0 {
            // The names decompressed: the stored bytes compress the SOA's names against the
            // question's, so the same SOA is other bytes under another name. Only for a
            // negative answer fresh from upstream (the miss path). Read from the wire: decoding
            // it again with hickory was 13 % of a miss's instructions.
            h.write_u8(self.rcode);
            if wire::hash_soa_records(msg, h).is_none() {
                // An SOA the walk cannot read (one with no data, which hickory keeps as an
                // empty record): the bytes as they are, so such answers count as new data.
                h.write_u8(0xFF);
                h.write(msg.get(2..).unwrap_or_default());
            }
            return;
        }
        let mut at = msg.len().min(2);
        let mut ttls: Vec<usize> = self.ttl_offsets().collect();
        ttls.sort_unstable();
        for ttl in ttls {
            if let Some(part) = msg.get(at..ttl) {
                h.write(part);
            }
            at = at.max(ttl + 4);
        }
        h.write(msg.get(at..).unwrap_or_default());
    }

    /// Whether this answer is for `q`'s question: name (ASCII case ignored, RFC 4343), type and
    /// class. The store is keyed by a hash, so this is what makes a collision harmless.
    #[must_use]
    pub fn answers_question(&self, q: &Query<'_>) -> bool {
        let asked = q.question;
        let Some(stored) = self
            .message()
            .get(wire::HEADER_LEN..wire::HEADER_LEN + asked.len())
        else {
            return false;
        };
        let name_len = asked.len().saturating_sub(4);
        stored[..name_len].eq_ignore_ascii_case(&asked[..name_len])
            && stored[name_len..] == asked[name_len..]
    }

    /// The question name in dnsward's presentation form (as [`Query::name`]).
    fn question_name(&self) -> String {
        let msg = self.message();
        let mut at = wire::HEADER_LEN;
        wire::name_from_labels(std::iter::from_fn(|| {
            let len = usize::from(*msg.get(at)?);
            if len == 0 || len & 0xC0 != 0 {
                return None;
            }
            let label = msg.get(at + 1..at + 1 + len)?;
            at += 1 + len;
            Some(label)
        }))
    }

    /// Render for `q` at `now`: TTLs counted down, ID/question/OPT patched, truncated to `max_len`.
    #[must_use]
    pub fn render(&self, q: &Query<'_>, now: Duration, max_len: usize) -> Vec<u8> {
        // In u64 milliseconds: a u128 division (`as_millis`) is a library call per answer.
        let now_ms = now
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(now.subsec_millis()));
        let elapsed =
            u32::try_from(now_ms.saturating_sub(self.stored_at_ms) / 1000).unwrap_or(u32::MAX);
        let msg = self.message();
        let mut out = wire::reply_buffer(msg.len() + 11);
        out.extend_from_slice(msg);
        for at in self.ttl_offsets() {
            if let Some(field) = out.get_mut(at..at + 4) {
                let ttl = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
                field.copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
            }
        }
        wire::finish_response(&mut out, q, max_len);
        out
    }

    /// The stored wire answer (TTLs as stored, not counted down) and the seconds it has left
    /// at `now`: what replaying the cache needs (the egress sets of a group that became gated).
    #[must_use]
    pub fn stored(&self, now: Duration) -> (&[u8], u32) {
        let expires = Duration::from_millis(self.stored_at_ms)
            + Duration::from_secs(u64::from(self.lifetime));
        let left = expires.saturating_sub(now).as_secs();
        (self.message(), u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// Bytes of the stored message after its question: what the client is given (scrubbed,
    /// without OPT), as the detector counts it.
    #[must_use]
    pub fn body_len(&self) -> usize {
        let msg = self.message();
        wire::question_of(msg).map_or(0, |q| msg.len().saturating_sub(wire::HEADER_LEN + q.len()))
    }

    /// Real heap bytes used by this entry in the cache.
    #[must_use]
    pub fn weight(&self) -> u64 {
        u64::from(self.weight)
    }
}

/// What glibc's malloc really takes for a block of `n` bytes: an 8-byte header, rounded up to
/// 16, at least 32 (mimalloc and jemalloc size classes are within a few bytes of this for the
/// sizes an entry uses). Nothing is allocated for `n == 0`.
const fn chunk(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        let c = (n + 8 + 15) & !15;
        if c < 32 { 32 } else { c }
    }
}

/// quick_cache's own cost per resident entry, beyond the entry's allocations: its slab slot
/// (key, value pointer, state and list links: 40 bytes) and hash-table slot (a 4-byte token and
/// a control byte at ≤ 7/8 load), times the slack of tables that grow by doubling (×1.5 on
/// average), plus the ghost entries CLOCK-Pro keeps for recently evicted keys (up to half as
/// many as residents, each a slab and a hash slot). Calibrated against the counting allocator in
/// `tests/cache_memory.rs`.
const TABLE_BYTES_PER_ENTRY: usize = 128;

/// The weight of an entry: the `Arc` block holding the [`CachedAnswer`], its data block, the
/// CNAME target and address lists, and [`TABLE_BYTES_PER_ENTRY`].
fn weigh(data_len: usize, cname_targets: &[Box<str>], addresses: &[IpAddr]) -> u32 {
    // The Arc's block: two counters and the struct.
    let arc = chunk(2 * std::mem::size_of::<usize>() + std::mem::size_of::<CachedAnswer>());
    let names = chunk(std::mem::size_of_val(cname_targets))
        + cname_targets.iter().map(|n| chunk(n.len())).sum::<usize>();
    let total = arc
        + chunk(data_len)
        + names
        + chunk(std::mem::size_of_val(addresses))
        + TABLE_BYTES_PER_ENTRY;
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// Weighs entries by the real heap bytes they use.
#[derive(Debug, Clone, Copy)]
struct ByteWeighter;

impl quick_cache::Weighter<StoreKey, Arc<CachedAnswer>> for ByteWeighter {
    fn weight(&self, _key: &StoreKey, val: &Arc<CachedAnswer>) -> u64 {
        val.weight()
    }
}

/// The store: hashed questions to shared answers.
type Store = quick_cache::sync::Cache<
    StoreKey,
    Arc<CachedAnswer>,
    ByteWeighter,
    StoreKeyHasher,
    quick_cache::sync::DefaultLifecycle<StoreKey, Arc<CachedAnswer>>,
>;

/// What an upstream answer becomes when prepared for the cache and the client.
#[derive(Debug)]
pub struct Prepared {
    /// The answer, ready to render.
    pub answer: Arc<CachedAnswer>,
    /// Whether it may be cached (false for errors and negative answers without SOA).
    pub cacheable: bool,
}

/// Why an upstream answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The upstream's bytes do not decode.
    #[error("upstream answer does not decode: {0}")]
    Decode(String),
    /// Re-encoding failed.
    #[error("upstream answer does not re-encode: {0}")]
    Encode(String),
}

/// Which cached answers a policy change made stale: the cache is consulted before local zones
/// and upstreams, so an answer cached under the old routing would outlive a reload by up to
/// its TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleAnswers {
    /// Nothing that was cached would be answered differently.
    None,
    /// Everything (the default upstreams changed).
    All,
    /// Answers for these zones and the names below them (a local zone appeared, a forward
    /// zone was added, removed or re-pointed).
    Under(Vec<Box<str>>),
}

/// The bounded answer cache.
pub struct AnswerCache {
    /// The store; `None` when caching is disabled.
    store: Option<Store>,
    /// Seeds the keyed question hash (random per cache, so nobody can aim collisions).
    key_seed: foldhash::fast::RandomState,
    /// TTL clamps.
    cfg: CacheConfig,
    /// Time source for TTL countdown.
    clock: SharedClock,
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("entries", &self.len())
            .finish()
    }
}

impl AnswerCache {
    /// A cache with the given bounds.
    #[must_use]
    pub fn new(cfg: &CacheConfig, clock: SharedClock) -> Self {
        let store = cfg.enabled.then(|| {
            // ~300 real bytes per entry (a flood's NXDOMAIN answer) sizes the shards and the
            // ghost list (half as many ghosts as estimated entries).
            let estimated = usize::try_from(cfg.max_bytes / 300)
                .unwrap_or(1 << 20)
                .max(64);
            quick_cache::sync::Cache::with(
                estimated,
                cfg.max_bytes,
                ByteWeighter,
                StoreKeyHasher,
                quick_cache::sync::DefaultLifecycle::default(),
            )
        });
        Self {
            store,
            key_seed: foldhash::fast::RandomState::default(),
            cfg: cfg.clone(),
            clock,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Current clock time.
    #[must_use]
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// A fresh answer for `q`, if cached.
    #[must_use]
    pub fn get(&self, q: &Query<'_>) -> Option<Arc<CachedAnswer>> {
        self.get_at(q, self.clock.now())
    }

    /// A fresh answer for `q` at `now`, a reading of this cache's clock the caller already took.
    #[must_use]
    pub fn get_at(&self, q: &Query<'_>, now: Duration) -> Option<Arc<CachedAnswer>> {
        let store = self.store.as_ref()?;
        let key = self.store_key(q);
        let hit = store.get(&key)?;
        if !hit.answers_question(q) {
            // Another question with the same hash: a miss (its insert will replace this one).
            None
        } else if hit.is_fresh(now) {
            Some(hit)
        } else {
            store.remove(&key);
            None
        }
    }

    /// The store's key for `q` (see [`StoreKey`]).
    fn store_key(&self, q: &Query<'_>) -> StoreKey {
        use std::hash::BuildHasher;
        let h = self.key_seed.hash_one((&*q.name, q.qtype, q.qclass));
        (h << 2) | u64::from(q.dnssec_ok()) | (u64::from(q.cd) << 1)
    }

    /// Store a prepared answer for `q`.
    pub fn insert(&self, q: &Query<'_>, prepared: &Prepared) {
        if let Some(store) = self.store.as_ref().filter(|_| prepared.cacheable) {
            store.insert(self.store_key(q), Arc::clone(&prepared.answer));
        }
    }

    /// Drop cached answers that a policy change made stale; returns how many went.
    pub fn invalidate(&self, stale: &StaleAnswers) -> usize {
        let Some(store) = self.store.as_ref() else {
            return 0;
        };
        let before = store.len();
        match stale {
            StaleAnswers::None => return 0,
            StaleAnswers::All => store.clear(),
            StaleAnswers::Under(zones) => store.retain(|_, answer| {
                let name = answer.question_name();
                !zones
                    .iter()
                    .any(|zone| crate::names::is_at_or_below(&name, zone))
            }),
        }
        before.saturating_sub(store.len())
    }

    /// Every answer still fresh at `now`, with its question name (`Arc`s cloned; a snapshot, entries may come
    /// and go meanwhile). For rare whole-cache work such as a reload, never the query path.
    #[must_use]
    pub fn fresh_entries(&self, now: Duration) -> Vec<(String, Arc<CachedAnswer>)> {
        self.store.as_ref().map_or_else(Vec::new, |store| {
            store
                .iter()
                .filter(|(_, a)| a.is_fresh(now))
                .map(|(_, a)| (a.question_name(), a))
                .collect()
        })
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.store.as_ref().map_or(0, quick_cache::sync::Cache::len)
    }

    /// True when empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes used (the cache's own weight accounting).
    #[must_use]
    pub fn weight(&self) -> u64 {
        self.store
            .as_ref()
            .map_or(0, quick_cache::sync::Cache::weight)
    }

    /// Drop every entry.
    pub fn clear(&self) {
        if let Some(store) = &self.store {
            store.clear();
        }
    }

    /// Turn an upstream (or local-zone) message into a servable, possibly cacheable answer:
    /// OPT and TSIG removed, TTLs clamped, negative TTL computed, CNAME targets collected.
    ///
    /// # Errors
    /// When the bytes do not decode or re-encode.
    pub fn prepare(&self, msg: &[u8], upstream: Arc<str>) -> Result<Prepared, PrepareError> {
        self.prepare_for(msg, upstream, true)
    }

    /// As [`Self::prepare`], for a client that did (`dnssec_ok`) or did not set DO: without
    /// it, the DNSSEC records it did not ask for by type are dropped ([`scrub::scrub_for`]).
    ///
    /// # Errors
    /// As [`Self::prepare`].
    pub fn prepare_for(
        &self,
        msg: &[u8],
        upstream: Arc<str>,
        dnssec_ok: bool,
    ) -> Result<Prepared, PrepareError> {
        // A plain negative answer (most misses of a random-subdomain flood, a search list's
        // expansions, AAAA of IPv4-only hosts) straight from the wire: the same bytes as below,
        // without hickory's decode and our encode (~5,600 instructions a miss fewer).
        if let Some(n) = crate::resolve::encode::negative_from_wire(msg) {
            return Ok(self.prepare_negative(n, upstream));
        }
        self.prepare_decoded_for(msg, upstream, dnssec_ok)
    }

    /// [`Self::prepare_for`] always by decoding the message (what the wire path is compared
    /// with in tests and fuzzing).
    ///
    /// # Errors
    /// When the message does not decode or re-encode.
    #[doc(hidden)]
    pub fn prepare_decoded_for(
        &self,
        msg: &[u8],
        upstream: Arc<str>,
        dnssec_ok: bool,
    ) -> Result<Prepared, PrepareError> {
        let mut m = Message::from_vec(msg).map_err(|e| PrepareError::Decode(e.to_string()))?;
        self.prepare_message_for(&mut m, upstream, dnssec_ok)
    }

    /// A negative answer read by [`crate::resolve::encode::negative_from_wire`], stored as
    /// [`Self::prepare_message_for`] stores it: the SOA's TTL is the negative lifetime (the
    /// lower of its TTL and MINIMUM, within the configured bounds, RFC 2308 §5).
    fn prepare_negative(
        &self,
        n: crate::resolve::encode::NegativeWire,
        upstream: Arc<str>,
    ) -> Prepared {
        let min = secs(self.cfg.min_ttl);
        let lifetime = n
            .ttl
            .min(n.minimum)
            .clamp(min, secs(self.cfg.negative_max_ttl).max(min));
        let mut bytes = n.bytes;
        let msg_len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        bytes[n.ttl_at..n.ttl_at + 4].copy_from_slice(&lifetime.to_be_bytes());
        // Sized exactly, as the general path sizes it (a long-lived block, not a shrunk one
        // leaving a sliver free beside it): the message, then its TTL offsets (one here).
        let mut data = Vec::with_capacity(bytes.len() + 2);
        data.extend_from_slice(&bytes);
        drop(bytes);
        data.extend_from_slice(&u16::try_from(n.ttl_at).unwrap_or(u16::MAX).to_ne_bytes());
        let data = data.into_boxed_slice();
        let weight = weigh(data.len(), &[], &[]);
        Prepared {
            answer: Arc::new(CachedAnswer {
                data,
                stored_at_ms: u64::try_from(self.clock.now().as_millis()).unwrap_or(u64::MAX),
                lifetime,
                weight,
                msg_len,
                signed_bytes: 0,
                answers: 0,
                rcode: n.rcode,
                cname_targets: Box::default(),
                addresses: Box::default(),
                upstream,
            }),
            cacheable: lifetime > 0,
        }
    }

    /// As [`Self::prepare`], from a decoded message.
    ///
    /// # Errors
    /// When the message does not re-encode.
    pub fn prepare_message(
        &self,
        m: &mut Message,
        upstream: Arc<str>,
    ) -> Result<Prepared, PrepareError> {
        self.prepare_message_for(m, upstream, true)
    }

    /// As [`Self::prepare_for`], from a decoded message.
    ///
    /// # Errors
    /// When the message does not re-encode.
    pub fn prepare_message_for(
        &self,
        m: &mut Message,
        upstream: Arc<str>,
        dnssec_ok: bool,
    ) -> Result<Prepared, PrepareError> {
        m.edns = None;
        m.signature = None;
        m.metadata.recursion_available = true;
        // dnsward is not the authority for what it forwards (RFC 1035 §4.1.1): the upstream's
        // AA is cleared, as Unbound and BIND forwarders do. Local zones set their own.
        m.metadata.authoritative = false;
        // Only the question's chain goes on, and no AD ([`scrub`]): before the addresses and
        // CNAME targets the answer checks and egress read are collected below.
        let dropped = scrub::scrub_for(m, dnssec_ok);
        if dropped.total() > 0 {
            for (section, n) in [
                ("answer", dropped.answers),
                ("authority", dropped.authorities),
                ("additional", dropped.additionals),
            ] {
                if n > 0 {
                    metrics::counter!(crate::metrics::UPSTREAM_SCRUBBED_TOTAL, "section" => section)
                        .increment(n as u64);
                }
            }
        }
        // A TTL with its top bit set is zero (RFC 2181 §8), not a day after clamping.
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
            if r.ttl > wire::MAX_TTL {
                r.ttl = 0;
            }
        }
        let code = m.metadata.response_code.low();
        if code != rcode::NOERROR && code != rcode::NXDOMAIN {
            // A SERVFAIL says the answer could not be had: no records go with it.
            m.answers.clear();
            m.authorities.clear();
        }
        // The stored question is overwritten with the client's at render; lower-cased here,
        // the lower-cased owners below compress against it and come out in the client's case.
        for q in &mut m.queries {
            lower(&mut q.name);
        }
        normalise_rrsets(&mut m.answers);
        normalise_rrsets(&mut m.authorities);
        let signed_bytes = {
            use hickory_proto::serialize::binary::BinEncodable as _;
            let n: usize = m
                .answers
                .iter()
                .chain(m.authorities.iter())
                .filter(|r| {
                    matches!(
                        r.record_type(),
                        RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3
                    )
                })
                .map(|r| r.to_bytes().map_or(0, |b| b.len()))
                .sum();
            u16::try_from(n).unwrap_or(u16::MAX)
        };
        let cname_targets: Box<[Box<str>]> = wire::cname_targets(&m.answers).collect();
        let addresses: Box<[IpAddr]> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        let answers = u16::try_from(m.answers.len()).unwrap_or(u16::MAX);
        let min = secs(self.cfg.min_ttl);
        let max = secs(self.cfg.max_ttl).max(min);
        let negative = code == rcode::NXDOMAIN || (code == rcode::NOERROR && m.answers.is_empty());
        let soa_ttl = m.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        });
        let negative_lifetime =
            soa_ttl.map(|t| t.clamp(min, secs(self.cfg.negative_max_ttl).max(min)));
        // A CNAME chain that ends without the type asked (NODATA after the chain, RFC 2308
        // §5) is negative at its end: the SOA there says for how long, as for a plain NODATA.
        let negative_tail = negative
            || (code == rcode::NOERROR
                && negative_lifetime.is_some()
                && m.queries.first().is_some_and(|q| {
                    let qtype = q.query_type();
                    qtype != RecordType::ANY && !m.answers.iter().any(|r| r.record_type() == qtype)
                }));
        // A chain the upstream left open (its last CNAME's target unanswered, and no SOA
        // saying the target has no data): the pipeline asks for the rest on each query, so the
        // part is not cached on its own, or a hit would serve the bare CNAME.
        let open_chain = code == rcode::NOERROR
            && negative_lifetime.is_none()
            && m.queries
                .first()
                .is_some_and(|q| !matches!(q.query_type(), RecordType::CNAME | RecordType::ANY))
            && matches!(
                m.answers.last().map(|r| &r.data),
                Some(RData::CNAME(c)) if !m.answers.iter().any(|r| r.name == c.0)
            );
        let (lifetime, cacheable) = if code != rcode::NOERROR && code != rcode::NXDOMAIN {
            (0, false)
        } else if negative {
            match negative_lifetime {
                Some(t) => (t, true),
                None => (0, false),
            }
        } else {
            let t = m
                .answers
                .iter()
                .filter(|r| r.record_type() != RecordType::OPT)
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0)
                .clamp(min, max);
            let t = match negative_lifetime {
                Some(n) if negative_tail => t.min(n),
                _ => t,
            };
            (t, true)
        };
        // Our own writer (no allocation a name); hickory for what it cannot write.
        let mut bytes = match crate::resolve::encode::encode(m) {
            Some(bytes) => bytes,
            None => m
                .to_vec()
                .map_err(|e| PrepareError::Encode(e.to_string()))?,
        };
        let msg_len = u16::try_from(bytes.len())
            .map_err(|_| PrepareError::Encode("re-encoded answer over 65535 bytes".into()))?;
        let offsets = wire::ttl_offsets(&bytes)
            .ok_or_else(|| PrepareError::Encode("re-encoded answer does not walk".into()))?;
        for &(off, rt) in &offsets {
            let at = usize::from(off);
            let field = &mut bytes[at..at + 4];
            let ttl = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
            let clamped = if negative_tail && rt == rtype::SOA {
                negative_lifetime.unwrap_or(lifetime)
            } else {
                ttl.clamp(min, max)
            };
            field.copy_from_slice(&clamped.to_be_bytes());
        }
        // The TTL offsets follow the message in the same block, sized exactly.
        let mut data = Vec::with_capacity(bytes.len() + 2 * offsets.len());
        data.extend_from_slice(&bytes);
        drop(bytes);
        for &(off, _) in &offsets {
            data.extend_from_slice(&off.to_ne_bytes());
        }
        let data = data.into_boxed_slice();
        let weight = weigh(data.len(), &cname_targets, &addresses);
        let answer = CachedAnswer {
            data,
            stored_at_ms: u64::try_from(self.clock.now().as_millis()).unwrap_or(u64::MAX),
            lifetime,
            weight,
            msg_len,
            signed_bytes,
            answers,
            rcode: code,
            cname_targets,
            addresses,
            upstream,
        };
        Ok(Prepared {
            answer: Arc::new(answer),
            cacheable: cacheable && lifetime > 0 && !open_chain,
        })
    }
}

/// What an upstream chooses beyond an RRset's data carries nothing a client needs, and passed
/// on it is a channel no detector prices (70 A records' TTLs and order moved 1.4 KB/s past the
/// scoring). So, in each RRset (records of one owner, type and class, wherever they stood; an
/// RRSIG's set is the signatures of one covered type, RFC 4034 §3, so each stays after the
/// RRset it covers, where [`scrub`] put it):
/// every TTL becomes the set's lowest (RFC 2181 §5.2: a resolver treats an RRset's TTLs as
/// their minimum anyway); its records are put together, where its first one stood, in the
/// canonical order of their data (RFC 4034 §6.3: the same answer is then the same bytes, so the
/// detector sees an unchanged answer as unchanged); owner names and the names inside CNAME, NS,
/// PTR, MX, SRV and SOA data are lower-cased (their case was a few bits a name; RFC 4034 §6.2
/// lower-cases the same names, so signatures still verify).
fn normalise_rrsets(records: &mut Vec<hickory_proto::rr::Record>) {
    use hickory_proto::serialize::binary::BinEncodable as _;
    use std::collections::HashMap;
    for r in records.iter_mut() {
        lower(&mut r.name);
        match &mut r.data {
            RData::CNAME(c) => lower(&mut c.0),
            RData::NS(n) => lower(&mut n.0),
            RData::PTR(p) => lower(&mut p.0),
            RData::MX(mx) => lower(&mut mx.exchange),
            RData::SRV(srv) => lower(&mut srv.target),
            RData::SOA(soa) => {
                lower(&mut soa.mname);
                lower(&mut soa.rname);
            }
            _ => {}
        }
    }
    if records.len() < 2 {
        return;
    }
    let mut sets: Vec<Vec<hickory_proto::rr::Record>> = Vec::new();
    let mut index: HashMap<(String, RecordType, Option<RecordType>, u16), usize> = HashMap::new();
    for r in records.drain(..) {
        let key = (
            wire::name_text(&r.name),
            r.record_type(),
            scrub::covered_type(&r),
            u16::from(r.dns_class),
        );
        let i = *index.entry(key).or_insert_with(|| {
            sets.push(Vec::new());
            sets.len() - 1
        });
        sets[i].push(r);
    }
    for mut set in sets {
        if set.len() > 1 {
            let ttl = set.iter().map(|r| r.ttl).min().unwrap_or(0);
            for r in &mut set {
                r.ttl = ttl;
            }
            set.sort_by_cached_key(|r| r.data.to_bytes().unwrap_or_default());
        }
        records.extend(set);
    }
}

/// `name` in lower case, rebuilt only when it has an upper-case letter (most names have none).
fn lower(name: &mut hickory_proto::rr::Name) {
    if name.iter().any(|l| l.iter().any(u8::is_ascii_uppercase)) {
        *name = name.to_lowercase();
    }
}

/// A configured TTL clamp in seconds, never past what RFC 2181 §8 lets a TTL be.
fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs())
        .unwrap_or(u32::MAX)
        .min(crate::wire::MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::wire::tests::query_bytes;
    use hickory_proto::op::{MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use hickory_proto::rr::{Name, Record};

    fn upstream_answer(ttl: u32, with_cname: bool) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        let name = Name::from_ascii("www.example.com.").unwrap();
        m.add_query(hickory_proto::op::Query::query(name.clone(), RecordType::A));
        if with_cname {
            let target = Name::from_ascii("edge.CDN.example.net.").unwrap();
            m.add_answer(Record::from_rdata(
                name,
                ttl,
                RData::CNAME(CNAME(target.clone())),
            ));
            m.add_answer(Record::from_rdata(
                target,
                ttl + 100,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        } else {
            m.add_answer(Record::from_rdata(
                name,
                ttl,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        }
        m.to_vec().unwrap()
    }

    fn nxdomain(soa_ttl: u32, minimum: u32) -> Vec<u8> {
        nxdomain_for("nope.example.com.", soa_ttl, minimum)
    }

    fn nxdomain_for(qname: &str, soa_ttl: u32, minimum: u32) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = ResponseCode::NXDomain;
        let name = Name::from_ascii(qname).unwrap();
        m.add_query(hickory_proto::op::Query::query(name, RecordType::A));
        let zone = Name::from_ascii("example.com.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, minimum);
        m.add_authority(Record::from_rdata(zone, soa_ttl, RData::SOA(soa)));
        m.to_vec().unwrap()
    }

    fn ttls(resp: &[u8]) -> Vec<u32> {
        let m = Message::from_vec(resp).unwrap();
        m.answers
            .iter()
            .chain(m.authorities.iter())
            .map(|r| r.ttl)
            .collect()
    }

    #[test]
    fn hits_count_ttls_down_and_expire() {
        let clock = ManualClock::new();
        let cache = AnswerCache::new(&CacheConfig::default(), clock.clone());
        let p = query_bytes("WWW.example.com", rtype::A, None);
        let q = wire::parse_query(&p).unwrap();
        assert!(cache.get(&q).is_none());
        // The upstream's AA is not passed on: dnsward is not the authority for it.
        let mut authoritative = upstream_answer(300, false);
        authoritative[2] |= 0x04;
        let prepared = cache.prepare(&authoritative, "u".into()).unwrap();
        assert!(prepared.cacheable);
        cache.insert(&q, &prepared);
        clock.advance(Duration::from_secs(100));
        let hit = cache.get(&q).expect("fresh hit");
        let out = hit.render(&q, clock.now(), 512);
        assert_eq!(&out[0..2], &[0x12, 0x34]);
        assert_eq!(out[2] & 0x04, 0, "AA cleared");
        assert_eq!(
            &out[12..12 + q.question.len()],
            q.question,
            "client's case echoed"
        );
        assert_eq!(ttls(&out), vec![200]);
        clock.advance(Duration::from_secs(200));
        assert!(cache.get(&q).is_none(), "expired at TTL");
    }

    #[test]
    fn an_answer_fetched_with_checking_disabled_is_not_served_to_a_validating_client() {
        let clock = ManualClock::new();
        let cache = AnswerCache::new(&CacheConfig::default(), clock.clone());
        let mut cd = query_bytes("www.example.com", rtype::A, None);
        cd[3] |= 0x10; // CD
        let cd_q = wire::parse_query(&cd).unwrap();
        assert!(cd_q.cd);
        let plain = query_bytes("www.example.com", rtype::A, None);
        let plain_q = wire::parse_query(&plain).unwrap();
        let prepared = cache
            .prepare(&upstream_answer(300, false), "u".into())
            .unwrap();
        cache.insert(&cd_q, &prepared);
        assert!(
            cache.get(&cd_q).is_some(),
            "a CD=1 client gets the CD=1 answer"
        );
        assert!(
            cache.get(&plain_q).is_none(),
            "a CD=0 client must not get data fetched with checking disabled"
        );
    }

    #[test]
    fn ttls_are_clamped_and_the_cname_chain_is_kept() {
        let clock = ManualClock::new();
        let cfg = CacheConfig {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(3600),
            ..CacheConfig::default()
        };
        let cache = AnswerCache::new(&cfg, clock.clone());
        let prepared = cache
            .prepare(&upstream_answer(5, true), "u".into())
            .unwrap();
        assert_eq!(
            &*prepared.answer.cname_targets,
            &["edge.cdn.example.net".into()]
        );
        let p = query_bytes("www.example.com", rtype::A, None);
        let q = wire::parse_query(&p).unwrap();
        assert_eq!(
            ttls(&prepared.answer.render(&q, clock.now(), 512)),
            vec![60, 105]
        );
        let prepared = cache
            .prepare(&upstream_answer(100_000, false), "u".into())
            .unwrap();
        assert_eq!(
            ttls(&prepared.answer.render(&q, clock.now(), 512)),
            vec![3600]
        );
    }

    #[test]
    fn a_negative_answer_says_its_soa_whatever_the_name_and_its_body_is_what_follows_the_question()
    {
        let cache = AnswerCache::new(&CacheConfig::default(), ManualClock::new());
        let records = |msg: &[u8]| {
            let p = cache.prepare(msg, "u".into()).unwrap();
            let mut h = std::hash::DefaultHasher::new();
            p.answer.hash_records(&mut h);
            (h.finish(), p.answer.body_len(), p.answer.message().len())
        };
        let (a, body, len) = records(&nxdomain_for("one.example.com.", 600, 60));
        let (b, ..) = records(&nxdomain_for("another-name.example.com.", 600, 60));
        let (c, ..) = records(&nxdomain_for("one.example.com.", 600, 61));
        assert_eq!(a, b, "the same SOA, whatever the name");
        assert_ne!(a, c, "another SOA");
        assert_eq!(
            body,
            len - wire::HEADER_LEN - "one.example.com.".len() - 1 - 4
        );
        // A positive answer's records still include its name.
        let (p1, ..) = records(&upstream_answer(300, false));
        assert_ne!(p1, a);
    }

    #[test]
    fn negative_answers_use_the_soa_minimum() {
        let clock = ManualClock::new();
        let cache = AnswerCache::new(&CacheConfig::default(), clock.clone());
        let prepared = cache.prepare(&nxdomain(900, 300), "u".into()).unwrap();
        assert!(prepared.cacheable);
        let p = query_bytes("nope.example.com", rtype::A, None);
        let q = wire::parse_query(&p).unwrap();
        cache.insert(&q, &prepared);
        clock.advance(Duration::from_secs(299));
        let hit = cache.get(&q).unwrap();
        assert_eq!(hit.rcode, rcode::NXDOMAIN);
        assert_eq!(ttls(&hit.render(&q, clock.now(), 512)), vec![1]);
        clock.advance(Duration::from_secs(1));
        assert!(cache.get(&q).is_none());
    }

    /// A CNAME chain ending in NODATA (RFC 2308 §5): the SOA at its end gives its lifetime and
    /// is served with the smaller of its TTL and MINIMUM, as a plain NODATA's is; the chain's
    /// CNAME keeps its own TTL. An answer of the type asked is not touched.
    #[test]
    fn a_cname_chain_ending_in_nodata_lives_as_long_as_its_soa_minimum() {
        use hickory_proto::rr::rdata::CNAME;
        let clock = ManualClock::new();
        let cache = AnswerCache::new(&CacheConfig::default(), clock.clone());
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        let alias = Name::from_ascii("alias.example.com.").unwrap();
        let target = Name::from_ascii("target.example.com.").unwrap();
        m.add_query(hickory_proto::op::Query::query(
            alias.clone(),
            RecordType::TXT,
        ));
        m.add_answer(Record::from_rdata(alias, 600, RData::CNAME(CNAME(target))));
        let zone = Name::from_ascii("example.com.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, 45);
        m.add_authority(Record::from_rdata(zone, 3600, RData::SOA(soa)));
        let prepared = cache.prepare(&m.to_vec().unwrap(), "u".into()).unwrap();
        assert!(prepared.cacheable);
        let p = query_bytes("alias.example.com", rtype::TXT, None);
        let q = wire::parse_query(&p).unwrap();
        cache.insert(&q, &prepared);
        assert_eq!(
            ttls(&cache.get(&q).unwrap().render(&q, clock.now(), 512)),
            [600, 45]
        );
        clock.advance(Duration::from_secs(45));
        assert!(cache.get(&q).is_none(), "gone with the negative part");
    }

    #[test]
    fn errors_and_soa_less_negatives_are_not_cached() {
        let cache = AnswerCache::new(&CacheConfig::default(), ManualClock::new());
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = ResponseCode::ServFail;
        assert!(
            !cache
                .prepare(&m.to_vec().unwrap(), "u".into())
                .unwrap()
                .cacheable
        );
        m.metadata.response_code = ResponseCode::NXDomain;
        assert!(
            !cache
                .prepare(&m.to_vec().unwrap(), "u".into())
                .unwrap()
                .cacheable
        );
        assert!(cache.prepare(&[1, 2, 3], "u".into()).is_err());
    }

    #[test]
    fn an_answer_stored_under_a_colliding_key_is_never_served_for_another_question() {
        // The store is keyed by a hash; simulate a collision by storing www.example.com's
        // answer under another question's key.
        let cache = AnswerCache::new(&CacheConfig::default(), ManualClock::new());
        let prepared = cache
            .prepare(&upstream_answer(300, false), "u".into())
            .unwrap();
        let other = query_bytes("www.example.org", rtype::A, None);
        let other_q = wire::parse_query(&other).unwrap();
        cache.insert(&other_q, &prepared);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&other_q).is_none(), "question checked on a hit");
        let aaaa = query_bytes("www.example.com", rtype::AAAA, None);
        assert!(
            !prepared
                .answer
                .answers_question(&wire::parse_query(&aaaa).unwrap())
        );
        let mixed = query_bytes("wWw.ExAmple.COM", rtype::A, None);
        assert!(
            prepared
                .answer
                .answers_question(&wire::parse_query(&mixed).unwrap())
        );
    }

    #[test]
    fn invalidation_by_zone_reads_the_name_from_the_stored_question() {
        let cache = AnswerCache::new(&CacheConfig::default(), ManualClock::new());
        let www = query_bytes("www.example.com", rtype::A, None);
        let www_q = wire::parse_query(&www).unwrap();
        let prepared = cache
            .prepare(&upstream_answer(300, false), "u".into())
            .unwrap();
        cache.insert(&www_q, &prepared);
        assert_eq!(prepared.answer.question_name(), "www.example.com");
        let nope = query_bytes("nope.example.com", rtype::A, None);
        let nope_q = wire::parse_query(&nope).unwrap();
        cache.insert(
            &nope_q,
            &cache.prepare(&nxdomain(900, 300), "u".into()).unwrap(),
        );
        assert_eq!(
            cache.invalidate(&StaleAnswers::Under(vec!["www.example.com".into()])),
            1
        );
        assert!(cache.get(&www_q).is_none());
        assert!(cache.get(&nope_q).is_some());
        assert_eq!(
            cache.invalidate(&StaleAnswers::Under(vec!["example.com".into()])),
            1
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn an_entry_weighs_its_allocations_in_malloc_chunks() {
        assert_eq!(
            (chunk(0), chunk(1), chunk(24), chunk(25), chunk(120)),
            (0, 32, 32, 48, 128)
        );
        let cache = AnswerCache::new(&CacheConfig::default(), ManualClock::new());
        let plain = cache
            .prepare(&upstream_answer(300, false), "u".into())
            .unwrap();
        let a = &plain.answer;
        // One A record for www.example.com: 12 + 21 + 16 bytes of message, one TTL offset.
        assert_eq!(a.data.len(), 49 + 2);
        let arc = chunk(16 + std::mem::size_of::<CachedAnswer>());
        let addresses = chunk(std::mem::size_of::<IpAddr>());
        assert_eq!(
            a.weight(),
            (arc + 64 + addresses + TABLE_BYTES_PER_ENTRY) as u64
        );
        // The Arc block is kept within one 112-byte chunk.
        assert!(arc <= 112, "{arc}");
        let chained = cache
            .prepare(&upstream_answer(300, true), "u".into())
            .unwrap();
        assert!(
            chained.answer.weight() > a.weight() + 2 * 32,
            "CNAME target list and name counted"
        );
    }

    #[test]
    fn memory_stays_within_the_byte_bound() {
        let cfg = CacheConfig {
            max_bytes: 256 * 1024,
            ..CacheConfig::default()
        };
        let cache = AnswerCache::new(&cfg, ManualClock::new());
        let prepared = cache
            .prepare(&upstream_answer(300, false), "u".into())
            .unwrap();
        for i in 0..20_000 {
            let p = query_bytes(&format!("n{i}.example.com"), rtype::A, None);
            let q = wire::parse_query(&p).unwrap();
            cache.insert(&q, &prepared);
        }
        assert!(
            cache.weight() <= cfg.max_bytes,
            "{} > {}",
            cache.weight(),
            cfg.max_bytes
        );
        assert!(cache.len() < 20_000);
    }

    /// What an upstream chooses beyond the data is not passed on: an RRset's TTLs become its
    /// lowest, its records come in canonical order (the same answer is the same bytes, so the
    /// detector sees it unchanged), names are lower-cased,
    /// a SERVFAIL carries no records, and a client without DO gets no RRSIG/NSEC/NSEC3 it did
    /// not ask for (a DO client gets the in-zone ones, counted in `signed_bytes`).
    #[test]
    fn upstream_choices_beyond_the_data_are_not_passed_on() {
        use hickory_proto::rr::rdata::NULL;
        let cache = AnswerCache::new(&CacheConfig::default(), ManualClock::new());
        let sig = |owner: &Name, len: usize| {
            Record::from_rdata(
                owner.clone(),
                300,
                RData::Unknown {
                    code: RecordType::RRSIG,
                    rdata: NULL::with(vec![0xAB; len]),
                },
            )
        };
        let build = |code: ResponseCode| {
            let mut m = Message::new(7, MessageType::Response, OpCode::Query);
            m.metadata.response_code = code;
            let name = Name::from_ascii("www.example.com.").unwrap();
            let target = Name::from_ascii("Edge.CDN.Example.NET.").unwrap();
            m.add_query(hickory_proto::op::Query::query(name.clone(), RecordType::A));
            m.add_answer(Record::from_rdata(
                name,
                300,
                RData::CNAME(CNAME(target.clone())),
            ));
            for i in (0..16u8).rev() {
                // TTLs 100 + i and a reversed order: bits of the upstream's choosing.
                m.add_answer(Record::from_rdata(
                    target.clone(),
                    100 + u32::from(i),
                    RData::A(A::new(192, 0, 2, i)),
                ));
                if i == 7 {
                    m.add_answer(sig(&target, 200));
                }
            }
            m.to_vec().unwrap()
        };
        let q = query_bytes("www.example.com", rtype::A, None);
        let q = wire::parse_query(&q).unwrap();
        let decode =
            |p: &Prepared| Message::from_vec(&p.answer.render(&q, Duration::ZERO, 65535)).unwrap();
        let mut orders = std::collections::HashSet::new();
        for _ in 0..8 {
            let m = decode(
                &cache
                    .prepare_for(&build(ResponseCode::NoError), "u".into(), false)
                    .unwrap(),
            );
            let cname = m.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) => Some(c.0.to_ascii()),
                _ => None,
            });
            assert_eq!(cname.as_deref(), Some("edge.cdn.example.net."));
            let a: Vec<(u32, std::net::Ipv4Addr)> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some((r.ttl, a.0)),
                    _ => None,
                })
                .collect();
            assert_eq!(a.len(), 16);
            assert!(a.iter().all(|(ttl, _)| *ttl == 100), "{a:?}");
            assert!(
                m.answers
                    .iter()
                    .all(|r| r.record_type() != RecordType::RRSIG),
                "no DO, no RRSIG: {m:?}"
            );
            orders.insert(a.iter().map(|(_, ip)| ip.octets()[3]).collect::<Vec<_>>());
        }
        assert_eq!(orders.len(), 1, "one order for one answer");
        assert_eq!(
            orders.into_iter().next().unwrap(),
            (0..16).collect::<Vec<u8>>(),
            "canonical, not the upstream's"
        );
        let tag = |p: &Prepared| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            p.answer.hash_content(&mut h);
            h.finish()
        };
        assert_eq!(
            tag(&cache
                .prepare_for(&build(ResponseCode::NoError), "u".into(), false)
                .unwrap()),
            tag(&cache
                .prepare_for(&build(ResponseCode::NoError), "u".into(), false)
                .unwrap()),
            "the same answer hashes alike"
        );

        let p = cache
            .prepare_for(&build(ResponseCode::NoError), "u".into(), true)
            .unwrap();
        let m = decode(&p);
        assert_eq!(
            m.answers
                .iter()
                .filter(|r| r.record_type() == RecordType::RRSIG)
                .count(),
            1,
            "a DO client gets it"
        );
        assert!(p.answer.signed_bytes >= 200, "{}", p.answer.signed_bytes);
        let p = cache
            .prepare_for(&build(ResponseCode::NoError), "u".into(), false)
            .unwrap();
        assert_eq!(p.answer.signed_bytes, 0);

        let m = decode(
            &cache
                .prepare_for(&build(ResponseCode::ServFail), "u".into(), true)
                .unwrap(),
        );
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.answers.is_empty() && m.authorities.is_empty(), "{m:?}");
    }

    /// A chain the upstream sent out of order is stored and served in order from the question
    /// name, each RRSIG after the RRset it covers (normalising the RRsets keeps that: an
    /// RRSIG's set is one covered type's); one left open out of order is still open, so not
    /// cached on its own (the pipeline completes it).
    #[test]
    fn an_out_of_order_chain_is_stored_in_order_and_an_open_one_stays_open() {
        use hickory_proto::rr::rdata::{NULL, TXT};
        let cache = AnswerCache::new(&CacheConfig::default(), ManualClock::new());
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let sig = |owner: &str, covered: RecordType| {
            let mut rdata = u16::from(covered).to_be_bytes().to_vec();
            rdata.extend([0xAB; 40]);
            Record::from_rdata(
                n(owner),
                300,
                RData::Unknown {
                    code: RecordType::RRSIG,
                    rdata: NULL::with(rdata),
                },
            )
        };
        let cname = |o: &str, t: &str| Record::from_rdata(n(o), 300, RData::CNAME(CNAME(n(t))));
        let a = |o: &str, last: u8| Record::from_rdata(n(o), 300, RData::A(A::new(1, 2, 3, last)));
        let build = |qname: &str, qtype: RecordType, answers: Vec<Record>| {
            let mut m = Message::new(7, MessageType::Response, OpCode::Query);
            m.add_query(hickory_proto::op::Query::query(n(qname), qtype));
            m.answers = answers;
            m.to_vec().unwrap()
        };
        let sequence = |p: &Prepared, qname: &str, qtype: u16| {
            let q = query_bytes(qname, qtype, Some(1232));
            let q = wire::parse_query(&q).unwrap();
            let m = Message::from_vec(&p.answer.render(&q, Duration::ZERO, 65535)).unwrap();
            m.answers
                .iter()
                .map(|r| match scrub::covered_type(r) {
                    Some(t) => format!("{} RRSIG {t}", r.name),
                    None => format!("{} {}", r.name, r.record_type()),
                })
                .collect::<Vec<_>>()
        };

        let reversed = build(
            "revcname.x.ext.example.",
            RecordType::A,
            vec![
                sig("t2.ext.example.", RecordType::A),
                a("t2.ext.example.", 22),
                cname("t1.ext.example.", "t2.ext.example."),
                sig("revcname.x.ext.example.", RecordType::CNAME),
                cname("revcname.x.ext.example.", "t1.ext.example."),
            ],
        );
        let p = cache.prepare_for(&reversed, "u".into(), true).unwrap();
        assert!(p.cacheable);
        assert_eq!(
            sequence(&p, "revcname.x.ext.example", rtype::A),
            [
                "revcname.x.ext.example. CNAME",
                "revcname.x.ext.example. RRSIG CNAME",
                "t1.ext.example. CNAME",
                "t2.ext.example. A",
                "t2.ext.example. RRSIG A",
            ]
        );

        let any = build(
            "x.example.",
            RecordType::ANY,
            vec![
                a("x.example.", 9),
                sig("x.example.", RecordType::A),
                Record::from_rdata(n("x.example."), 300, RData::TXT(TXT::new(vec!["t".into()]))),
                sig("x.example.", RecordType::TXT),
            ],
        );
        let p = cache.prepare_for(&any, "u".into(), true).unwrap();
        assert_eq!(
            sequence(&p, "x.example", 255),
            [
                "x.example. A",
                "x.example. RRSIG A",
                "x.example. TXT",
                "x.example. RRSIG TXT",
            ]
        );

        // Left open (t2 unanswered, no SOA), the links in reverse: still open.
        let open = build(
            "revcname.x.ext.example.",
            RecordType::A,
            vec![
                cname("t1.ext.example.", "t2.ext.example."),
                cname("revcname.x.ext.example.", "t1.ext.example."),
            ],
        );
        let p = cache.prepare_for(&open, "u".into(), false).unwrap();
        assert!(!p.cacheable, "an open chain is not cached on its own");
        assert_eq!(
            sequence(&p, "revcname.x.ext.example", rtype::A),
            ["revcname.x.ext.example. CNAME", "t1.ext.example. CNAME"]
        );
    }

    /// What the two paths stored, field by field.
    fn same_prepared(a: &Prepared, b: &Prepared) -> Result<(), String> {
        let (x, y) = (&a.answer, &b.answer);
        let fields = |p: &CachedAnswer| {
            format!(
                "data {:02x?} stored {} lifetime {} weight {} len {} signed {} answers {} rcode {} \
                 cnames {:?} addrs {:?} upstream {}",
                p.data,
                p.stored_at_ms,
                p.lifetime,
                p.weight,
                p.msg_len,
                p.signed_bytes,
                p.answers,
                p.rcode,
                p.cname_targets,
                p.addresses,
                p.upstream
            )
        };
        let (fx, fy) = (fields(x), fields(y));
        if fx != fy || a.cacheable != b.cacheable {
            return Err(format!("{fx} {}\n{fy} {}", a.cacheable, b.cacheable));
        }
        Ok(())
    }

    /// An upstream's negative answer written by hand, the way servers do and do not compress:
    /// `q` the question name, `owner`/`mname`/`rname` the SOA's names, each either a pointer to
    /// the question's suffix at a label (`Ptr(n)`: after `n` labels) or written out.
    #[derive(Clone, Copy)]
    enum N<'a> {
        Text(&'a str),
        Ptr(usize),
    }

    fn wire_name(out: &mut Vec<u8>, n: N<'_>, q: &str) {
        match n {
            N::Text(t) => {
                for l in t.split('.').filter(|l| !l.is_empty()) {
                    out.push(u8::try_from(l.len()).unwrap());
                    out.extend_from_slice(l.as_bytes());
                }
                out.push(0);
            }
            N::Ptr(labels) => {
                let skip: usize = q.split('.').take(labels).map(|l| l.len() + 1).sum();
                out.extend_from_slice(
                    &(0xC000u16 | u16::try_from(12 + skip).unwrap()).to_be_bytes(),
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hand_negative(
        flags: [u8; 2],
        q: &str,
        qtype: u16,
        owner: N<'_>,
        mname: N<'_>,
        rname: N<'_>,
        ttl: u32,
        minimum: u32,
        opt: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut m = vec![
            0x12,
            0x34,
            flags[0],
            flags[1],
            0,
            1,
            0,
            0,
            0,
            1,
            0,
            u8::from(opt.is_some()),
        ];
        wire_name(&mut m, N::Text(q), q);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        wire_name(&mut m, owner, q);
        m.extend_from_slice(&[0, 6, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        let len_at = m.len();
        m.extend_from_slice(&[0, 0]);
        wire_name(&mut m, mname, q);
        wire_name(&mut m, rname, q);
        for v in [2_026_120_501u32, 3600, 600, 86400, minimum] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        let rdlen = u16::try_from(m.len() - len_at - 2).unwrap();
        m[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        if let Some(opt) = opt {
            m.extend_from_slice(opt);
        }
        m
    }

    /// A plain negative answer is stored straight from the wire exactly as the decoding path
    /// stores it, whatever the upstream's compression, case, flags, TTLs and EDNS; and a
    /// message of any other shape takes the decoding path.
    #[test]
    fn negative_answers_from_the_wire_are_what_decoding_makes_of_them() {
        let clock = ManualClock::new();
        let cfg = CacheConfig::default();
        let cache = AnswerCache::new(&cfg, clock.clone());
        let cookie_opt: &[u8] = &[
            0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 28, 0, 10, 0, 24, 1, 2, 3, 4, 5, 6, 7, 8, 9,
            10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        ];
        let bare_opt: &[u8] = &[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0];
        let mut taken = 0;
        for q in [
            "nope.Example.COM",
            "a.b.c.example.com",
            "example.com",
            "x",
            "",
        ] {
            let labels = q.split('.').count();
            let apex = labels.saturating_sub(2);
            let apex_text = q.split('.').skip(apex).collect::<Vec<_>>().join(".");
            let upper_apex = apex_text.to_uppercase();
            let owners = [N::Ptr(apex), N::Text(&upper_apex), N::Text("")];
            let mnames = [
                N::Text("NS1.example.com"),
                N::Ptr(apex),
                N::Text("ns.other.net"),
            ];
            let rnames = [N::Text("hostmaster.example.com"), N::Text("")];
            let mut combos = Vec::new();
            for o in owners {
                for m in mnames {
                    for r in rnames {
                        combos.push((o, m, r));
                    }
                }
            }
            for (i, (owner, mname, rname)) in combos.into_iter().enumerate() {
                for flags in [
                    [0x81, 0x83],
                    [0x85, 0xA3],
                    [0x80, 0x80],
                    [0x81, 0x90],
                    [0x84, 0x70],
                ] {
                    let (ttl, minimum) = [(3600, 60), (30, 900), (0x8000_0000, 60), (7, 0)][i % 4];
                    let opt = [None, Some(cookie_opt), Some(bare_opt)][i % 3];
                    let qtype = [1u16, 28, 65, 255, 16][i % 5];
                    let msg =
                        hand_negative(flags, q, qtype, owner, mname, rname, ttl, minimum, opt);
                    let fast = crate::resolve::encode::negative_from_wire(&msg);
                    let slow = cache.prepare_decoded_for(&msg, "u".into(), false).unwrap();
                    let got = cache.prepare_for(&msg, "u".into(), false).unwrap();
                    same_prepared(&got, &slow)
                        .unwrap_or_else(|e| panic!("{q} case {i} {flags:x?}:\n{e}"));
                    assert!(fast.is_some(), "{q} case {i} {flags:x?}: not taken");
                    taken += 1;
                }
            }
        }
        // Every owner above is the question's zone or an ancestor (`.` is one of everything).
        assert_eq!(taken, 5 * 18 * 5);

        // Shapes the wire path leaves alone, each still prepared as the decoding path does.
        let good = hand_negative(
            [0x81, 0x83],
            "nope.example.com",
            1,
            N::Ptr(1),
            N::Text("ns1.example.com"),
            N::Ptr(1),
            3600,
            60,
            None,
        );
        assert!(crate::resolve::encode::negative_from_wire(&good).is_some());
        // Taken, and the same: a pointer to a pointer (RNAME to the owner's, which points into
        // the question), and an empty option beside a NSID-free OPT.
        for (what, m) in [
            ("a pointer to a pointer", {
                let mut m = good.clone();
                m[63..65].copy_from_slice(&[0xC0, 34]);
                m
            }),
            ("an empty option", {
                let mut m = good.clone();
                m[11] = 1;
                m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 4, 0, 12, 0, 0]);
                m
            }),
        ] {
            assert!(
                crate::resolve::encode::negative_from_wire(&m).is_some(),
                "{what}"
            );
            let (a, b) = (
                cache.prepare_for(&m, "u".into(), true).unwrap(),
                cache.prepare_decoded_for(&m, "u".into(), true).unwrap(),
            );
            same_prepared(&a, &b).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut with = |what: &'static str, f: &dyn Fn(&mut Vec<u8>)| {
            let mut m = good.clone();
            f(&mut m);
            cases.push((what, m));
        };
        with("truncated", &|m| m[2] |= 0x02);
        with("a query, not a response", &|m| m[2] &= 0x7F);
        with("opcode", &|m| m[2] |= 0x10);
        with("SERVFAIL", &|m| m[3] = 0x82);
        with("an answer count", &|m| m[7] = 1);
        with("two authority records", &|m| m[9] = 2);
        with("class CH question", &|m| {
            let at = 12 + 18 + 2;
            m[at + 1] = 3;
        });
        with("trailing bytes", &|m| m.push(0));
        with("cut short", &|m| {
            m.pop();
        });
        with("extended rcode in OPT", &|m| {
            m[11] = 1;
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 1, 0, 0, 0, 0, 0]);
        });
        with("client subnet option", &|m| {
            m[11] = 1;
            m.extend_from_slice(&[
                0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 8, 0, 8, 0, 4, 0, 1, 24, 0,
            ]);
        });
        with("SOA of class CH", &|m| m[39] = 3);
        with("RDLENGTH one more than the data", &|m| m[45] += 1);
        with("label type 0x40", &|m| m[34] = 0x40);
        with("OPT version 1", &|m| {
            m[11] = 1;
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 1, 0, 0, 0, 0]);
        });
        with("OPT owner not the root", &|m| {
            m[11] = 1;
            m.extend_from_slice(&[1, b'a', 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        });
        with("OPT with a cut option", &|m| {
            m[11] = 1;
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 3, 0, 10, 0]);
        });
        with("two OPT records", &|m| {
            m[11] = 2;
            for _ in 0..2 {
                m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
            }
        });
        with("a forward pointer", &|m| {
            // The owner's pointer aimed at itself.
            let at = 12 + 18 + 4;
            let here = u16::try_from(at).unwrap();
            m[at..at + 2].copy_from_slice(&(0xC000 | here).to_be_bytes());
        });
        cases.push((
            "an SOA of a sibling zone",
            hand_negative(
                [0x81, 0x83],
                "nope.example.com",
                1,
                N::Text("example.net"),
                N::Text("ns1.example.net"),
                N::Text("h.example.net"),
                3600,
                60,
                None,
            ),
        ));
        for (what, msg) in &cases {
            assert!(
                crate::resolve::encode::negative_from_wire(msg).is_none(),
                "{what}: taken"
            );
            match (
                cache.prepare_for(msg, "u".into(), true),
                cache.prepare_decoded_for(msg, "u".into(), true),
            ) {
                (Ok(a), Ok(b)) => same_prepared(&a, &b).unwrap_or_else(|e| panic!("{what}: {e}")),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{what}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }
}
