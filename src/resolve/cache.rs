//! The answer cache, owned by dnsward and sitting on the hot path.
//!
//! Answers are stored pre-encoded (without the OPT record), so a hit is a copy plus a few
//! patches: ID, the client's question case, each TTL counted down, and an OPT record for EDNS
//! clients. A hit never touches the upstream client. The cache is bounded in bytes (entries are
//! weighed by their encoded size plus overhead) and evicts with quick_cache's CLOCK-Pro policy.
//!
//! TTLs are clamped to `[min_ttl, max_ttl]` when stored, and rewritten in the stored bytes, so
//! the TTL a client sees always counts down to zero at the moment the entry expires. Negative
//! answers (NXDOMAIN and NODATA) are cached per RFC 2308 for `min(SOA TTL, SOA MINIMUM)`,
//! capped by `negative_max_ttl`; a negative answer without an SOA is not cached. SERVFAIL and
//! other errors are never cached.
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
use crate::config_error::ConfigProblems;
use crate::wire::{self, Query, rcode, rtype};

/// `[cache]`: the answer cache's bounds and TTL clamps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether to cache at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Upper bound on the memory the cached answers may use, in bytes (default 64 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Shortest time an answer is kept (default 0s: honour the upstream TTL).
    #[serde(default, with = "humantime_serde")]
    pub min_ttl: Duration,
    /// Longest time an answer is kept (default 1 day).
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Longest time a negative answer is kept (default 1 hour, RFC 2308's suggestion is 1–3 h).
    #[serde(default = "default_negative_max_ttl", with = "humantime_serde")]
    pub negative_max_ttl: Duration,
}

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

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        CacheKeyRef::from_parts(
            &self.name,
            self.qtype,
            self.qclass,
            self.dnssec_ok,
            self.checking_disabled,
        )
        .hash(state);
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

impl quick_cache::Equivalent<CacheKey> for CacheKeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.name == &*key.name
            && self.qtype == key.qtype
            && self.qclass == key.qclass
            && self.dnssec_ok == key.dnssec_ok
            && self.checking_disabled == key.checking_disabled
    }
}

/// An answer ready to be served again.
#[derive(Debug)]
pub struct CachedAnswer {
    /// The encoded answer without OPT, TTLs as stored.
    bytes: Box<[u8]>,
    /// Offsets of every TTL field in `bytes`.
    ttl_offsets: Box<[u16]>,
    /// Clock time when stored.
    stored_at: Duration,
    /// Clock time when it expires.
    expires_at: Duration,
    /// Response code.
    pub rcode: u8,
    /// Records in the answer section.
    pub answers: u16,
    /// Targets of CNAMEs in the answer, for per-group answer checks.
    pub cname_targets: Box<[Box<str>]>,
    /// A and AAAA addresses in the answer, for answer checks and egress.
    pub addresses: Box<[IpAddr]>,
    /// Which upstream answered.
    pub upstream: Arc<str>,
}

impl CachedAnswer {
    /// Whether it is still fresh at `now`.
    #[must_use]
    pub fn is_fresh(&self, now: Duration) -> bool {
        now < self.expires_at
    }

    /// Render for `q` at `now`: TTLs counted down, ID/question/OPT patched, truncated to `max_len`.
    #[must_use]
    pub fn render(&self, q: &Query<'_>, now: Duration, max_len: usize) -> Vec<u8> {
        let elapsed =
            u32::try_from(now.saturating_sub(self.stored_at).as_secs()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(self.bytes.len() + 11);
        out.extend_from_slice(&self.bytes);
        for &off in &*self.ttl_offsets {
            let at = usize::from(off);
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
        let left = self.expires_at.saturating_sub(now).as_secs();
        (&self.bytes, u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// Approximate memory used by this entry.
    fn weight(&self) -> u64 {
        let names: usize = self.cname_targets.iter().map(|n| n.len() + 16).sum();
        let addresses = self.addresses.len() * std::mem::size_of::<IpAddr>();
        (self.bytes.len() + self.ttl_offsets.len() * 2 + names + addresses + 160) as u64
    }
}

/// Weighs entries by their approximate size in bytes.
#[derive(Debug, Clone, Copy)]
struct ByteWeighter;

impl quick_cache::Weighter<CacheKey, Arc<CachedAnswer>> for ByteWeighter {
    fn weight(&self, key: &CacheKey, val: &Arc<CachedAnswer>) -> u64 {
        key.name.len() as u64 + val.weight()
    }
}

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
    store: Option<quick_cache::sync::Cache<CacheKey, Arc<CachedAnswer>, ByteWeighter>>,
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
            // Assume ~300 bytes per entry to size the shards.
            let estimated = usize::try_from(cfg.max_bytes / 300)
                .unwrap_or(1 << 20)
                .max(64);
            quick_cache::sync::Cache::with_weighter(estimated, cfg.max_bytes, ByteWeighter)
        });
        Self {
            store,
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
        let key = CacheKeyRef::of(q);
        let hit = store.get(&key)?;
        if hit.is_fresh(now) {
            Some(hit)
        } else {
            store.remove(&key);
            None
        }
    }

    /// Store a prepared answer for `q`.
    pub fn insert(&self, q: &Query<'_>, prepared: &Prepared) {
        if let Some(store) = self.store.as_ref().filter(|_| prepared.cacheable) {
            store.insert(
                CacheKeyRef::of(q).to_owned_key(),
                Arc::clone(&prepared.answer),
            );
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
            StaleAnswers::Under(zones) => store.retain(|key, _| {
                !zones
                    .iter()
                    .any(|zone| crate::names::is_at_or_below(&key.name, zone))
            }),
        }
        before.saturating_sub(store.len())
    }

    /// Every answer still fresh at `now` (keys and `Arc`s cloned; a snapshot, entries may come
    /// and go meanwhile). For rare whole-cache work such as a reload, never the query path.
    #[must_use]
    pub fn fresh_entries(&self, now: Duration) -> Vec<(CacheKey, Arc<CachedAnswer>)> {
        self.store.as_ref().map_or_else(Vec::new, |store| {
            store.iter().filter(|(_, a)| a.is_fresh(now)).collect()
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
        let mut m = Message::from_vec(msg).map_err(|e| PrepareError::Decode(e.to_string()))?;
        self.prepare_message(&mut m, upstream)
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
        m.edns = None;
        m.signature = None;
        m.metadata.recursion_available = true;
        let code = m.metadata.response_code.low();
        let cname_targets: Box<[Box<str>]> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(c) => Some(wire::name_text(&c.0).into_boxed_str()),
                _ => None,
            })
            .collect();
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
        let (lifetime, cacheable) = if code != rcode::NOERROR && code != rcode::NXDOMAIN {
            (0, false)
        } else if negative {
            match soa_ttl {
                Some(t) => (t.clamp(min, secs(self.cfg.negative_max_ttl).max(min)), true),
                None => (0, false),
            }
        } else {
            let t = m
                .answers
                .iter()
                .filter(|r| r.record_type() != RecordType::OPT)
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0);
            (t.clamp(min, max), true)
        };
        let bytes = m
            .to_vec()
            .map_err(|e| PrepareError::Encode(e.to_string()))?;
        let mut bytes = bytes.into_boxed_slice();
        let offsets = wire::ttl_offsets(&bytes)
            .ok_or_else(|| PrepareError::Encode("re-encoded answer does not walk".into()))?;
        for &(off, rt) in &offsets {
            let at = usize::from(off);
            let field = &mut bytes[at..at + 4];
            let ttl = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
            let clamped = if negative && rt == rtype::SOA {
                lifetime
            } else {
                ttl.clamp(min, max)
            };
            field.copy_from_slice(&clamped.to_be_bytes());
        }
        let now = self.clock.now();
        let answer = CachedAnswer {
            bytes,
            ttl_offsets: offsets.iter().map(|(o, _)| *o).collect(),
            stored_at: now,
            expires_at: now + Duration::from_secs(u64::from(lifetime)),
            rcode: code,
            answers,
            cname_targets,
            addresses,
            upstream,
        };
        Ok(Prepared {
            answer: Arc::new(answer),
            cacheable: cacheable && lifetime > 0,
        })
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
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
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = ResponseCode::NXDomain;
        let name = Name::from_ascii("nope.example.com.").unwrap();
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
        let prepared = cache
            .prepare(&upstream_answer(300, false), "u".into())
            .unwrap();
        assert!(prepared.cacheable);
        cache.insert(&q, &prepared);
        clock.advance(Duration::from_secs(100));
        let hit = cache.get(&q).expect("fresh hit");
        let out = hit.render(&q, clock.now(), 512);
        assert_eq!(&out[0..2], &[0x12, 0x34]);
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
}
