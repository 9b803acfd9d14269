//! The query pipeline: the one place that orders the stages.
//!
//! ```text
//! parse → identify → client gate → edns → class → query type → tunnel scoring
//!       → domain gate → policy → cache → (miss) local zones → upstream → answer check → account
//! ```
//!
//! Why this order: cheap checks come first so that the traffic we refuse costs the least.
//! - **parse** ([`Pipeline::handle_fast`]): the only stage that sees raw bytes; runts and
//!   responses get silence, malformed queries FORMERR (among them an OPT record owned by
//!   anything but the root, outside the additional section, or a second one; the TC bit,
//!   answer records, authority records outside IXFR, additional records other than OPT, TSIG
//!   and SIG(0) included), a NOTIFY REFUSED and other opcodes NOTIMP (RA set for a client in
//!   a group, as on all its answers).
//! - **identify**: a verified token's group claim, else the verified agent's identity, else
//!   the socket address picks the group; unknown clients are refused (or dropped)
//!   before any other work: dnsward is never an open resolver.
//! - then the synchronous stages of [`SYNC_STAGES`], in this order:
//!   1. **authentication**: a member of a `require_auth` group without a credential (mTLS or a
//!      token) is refused;
//!   2. **client gate**: rate limit and quarantine, keyed on the verified agent when there is
//!      one, else on the socket address (never on anything the client merely claims);
//!   3. **tunnel scoring**: every query of a known client, allowed or not (an agent tunnelling
//!      through a name it may not resolve is still compromised), whatever its class, type or
//!      EDNS version (the next three stages refuse some of those: nothing goes out, but
//!      encoded names sent that way are still an attempt); may start a containment that
//!      applies to this very query;
//!   4. **edns**: an EDNS version above 0 gets BADVERS (RFC 6891 §6.1.3), an
//!      edns-tcp-keepalive option with data over TCP or DoT FORMERR (RFC 7828). Only here,
//!      after identification and the client gate: sources in no group, members without a
//!      required credential and contained clients are refused whatever they send;
//!   5. **class**: only class IN is served;
//!   6. **query type**: zone transfers (AXFR, IXFR) are REFUSED, MAILA/MAILB get NOTIMP;
//!      never forwarded, never answered from a zone;
//!   7. **domain gate**: a throttled or sinkholed (client, domain) is answered here;
//!   8. **encrypted-dns bypass** (with `[egress]` only): the vendors' canaries and public
//!      DoH/DoT resolver names get NXDOMAIN whatever the group's policy allows, so an agent
//!      cannot switch to a resolver the egress sets would never see;
//!   9. **policy**: the group's allow/deny decision (the built-in zones' names, `localhost`
//!      and the private reverse zones, pass an allowlist; a deny rule blocks them); a denied
//!      name gets the block answer;
//!   10. **recursion desired**: a query with RD clear is REFUSED (EDE 20) unless a local
//!       zone answers its name, as Unbound does: no cache snooping of other agents' lookups;
//!   11. **cache**: a hit is served inline after the answer check for this group.
//! - a miss whose question's resolution failed within `[upstream] failure_ttl`
//!   ([`crate::resolve::failures`], RFC 9520) is answered SERVFAIL at once (EDE 13, Cached
//!   Error) without asking an upstream; only misses consult that table.
//! - a miss is admitted under the in-flight bounds ([`crate::resolve::inflight`]; over them it
//!   is answered SERVFAIL at once and counted as overload), then becomes a [`Pending`] resolved
//!   asynchronously ([`Pipeline::resolve`]), identical questions in flight sharing one upstream
//!   exchange: local zones
//!   (authoritative, never forwarded; a CNAME out of the zone is chased, its target a miss like
//!   any other, failures remembered and exchange shared: `chase.rs`), then the upstreams, then
//!   the answer check (CNAME targets the group may not reach).
//! - **egress** (with `[egress]`): every allowed answer (cache hit, local zone, upstream) puts
//!   its addresses into the group's firewall sets *before* it is sent, waiting at most
//!   `egress.max_wait`; a cache hit whose addresses are already in the set for long enough
//!   costs a map lookup and stays inline, one that must write becomes a held [`Pending`].
//! - **account** (`account.rs`): every answer, whatever stage produced it, is counted in
//!   `dnsward_queries_total{group,verdict,qtype}`, timed, and (for every verdict but `allow`,
//!   or when configured) logged as an event.
//!
//! Each synchronous stage is a named function that returns [`Step::Continue`] or an answer
//! ([`Step::Break`]); [`SYNC_STAGES`] lists them and a test checks that this header names them
//! in the same order. The UDP listener answers everything up to the cache inline without
//! spawning a task. Outcomes such as "blocked" or "refused" are [`Verdict`]s, not errors.

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode};
use metrics::{Counter, Histogram};
use serde::Deserialize;

use crate::clock::SharedClock;
use crate::contain::Containment;
use crate::contain::overrides::Overrides;
use crate::detect::{Detector, FreshAnswer};
use crate::events::sink::EventSender;
use crate::events::{Event, EventBody};
use crate::identity::{AuthKind, ClientKey, Peer};
use crate::metrics as m;
use crate::names::registrable_domain;
use crate::policy::active::ActivePolicy;
use crate::policy::answer_check::{AnswerProblem, AnswerSource, check_answer};
use crate::policy::group::Group;
use crate::policy::identify::{GroupId, canonical};
use crate::policy::verdict::Verdict;
use crate::resolve::cache::{AnswerCache, CacheKeyRef, CachedAnswer};
use crate::resolve::failures::{FailureCache, FailureKind};
use crate::resolve::inflight::{Flight, FlightKey, InflightMisses, MissPermit};
use crate::resolve::upstream::UpstreamError;
use crate::serve::cookie::{CookieCheck, CookieSecret};
use crate::wire::{self, Query, rcode};

mod account;
mod chase;
mod egress;
mod stages;

use account::{Asked, LazyNow, Report};
use chase::ChaseStop;
pub use stages::{Admitted, REFUSE_FOR_WHAT_IT_IS, SYNC_STAGES, Step, SyncStage};

/// What clients in no group get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownClients {
    /// REFUSED (default): the client learns it is not served.
    #[default]
    Refuse,
    /// Silence.
    Drop,
}

/// Transport a query arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP: answers are truncated to the client's payload size.
    Udp,
    /// TCP: answers up to 65535 bytes.
    Tcp,
    /// DNS over TLS (RFC 7858).
    Dot,
    /// DNS over HTTPS (RFC 8484).
    Doh,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Dot => "dot",
            Self::Doh => "doh",
        }
    }

    fn max_len(self, q: &Query<'_>) -> usize {
        match self {
            Self::Udp => q.max_udp_payload(),
            Self::Tcp | Self::Dot | Self::Doh => usize::from(u16::MAX),
        }
    }
}

/// What the synchronous part of the pipeline decided.
#[derive(Debug)]
pub enum Outcome {
    /// Send this answer.
    Reply(Vec<u8>),
    /// Send nothing (not a query, or too broken to answer).
    Drop,
    /// A cache miss: resolve it asynchronously.
    Resolve(Box<Pending>),
}

/// A query that needs the local zones or an upstream.
#[derive(Debug)]
pub struct Pending {
    /// The packet, owned so the work can move to another task.
    packet: Vec<u8>,
    /// Who sent it: source address (canonical) and verified agent, if any.
    peer: Peer,
    /// Transport.
    protocol: Protocol,
    /// When it was received.
    received: Instant,
    /// The policy that admitted it; the query finishes under this version.
    policy: Arc<ActivePolicy>,
    /// The client's group.
    group: GroupId,
    /// An answer already decided (a cache hit) that waits only for its egress set update.
    held: Option<(Vec<u8>, crate::egress::Wait)>,
    /// A miss's in-flight slot, held until the answer is sent (none for a held answer).
    _permit: Option<MissPermit>,
}

/// What an upstream exchange gave, shared by every miss coalesced onto it.
#[derive(Debug, Clone)]
enum Fetched {
    /// A usable answer from this upstream, and the size of the upstream's message after the
    /// question (the downstream half of a possible tunnel).
    Answer(Arc<CachedAnswer>, Arc<str>, usize),
    /// The upstream answered something unusable.
    Unusable(Arc<str>, Arc<str>),
    /// No upstream answered: why, and the EXTRA-TEXT of the client's EDE 22.
    Failed(Arc<str>, &'static str),
}

/// Pipeline-wide settings that are not part of the swappable policy.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// What unknown clients get.
    pub unknown_clients: UnknownClients,
    /// The resolver's own listening addresses: a forwarded answer pointing at one of them is
    /// a rebinding attempt (see [`crate::policy::answer_check`]).
    pub own_addresses: Vec<IpAddr>,
    /// Most cache misses in flight at once (`server.max_inflight_misses`).
    pub max_inflight_misses: usize,
    /// Most cache misses in flight from one client (`server.max_inflight_misses_per_client`).
    pub max_inflight_misses_per_client: usize,
    /// IPv6 clients known by address are one client per this prefix
    /// (`containment.ipv6_prefix`).
    pub ipv6_prefix: u8,
    /// The server identifier sent to a client's empty NSID option (`server.nsid`, RFC 5001);
    /// `None`: none is sent.
    pub nsid: Option<Box<[u8]>>,
    /// The idle timeout of TCP connections (`server.tcp_idle_timeout`), told to a TCP client
    /// that sends edns-tcp-keepalive (RFC 7828).
    pub tcp_idle: std::time::Duration,
    /// The idle timeout of DoT connections (`tls.idle_timeout`), told likewise over DoT.
    pub dot_idle: std::time::Duration,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            unknown_clients: UnknownClients::default(),
            own_addresses: Vec::new(),
            max_inflight_misses: 4096,
            max_inflight_misses_per_client: 1024,
            ipv6_prefix: crate::identity::DEFAULT_IPV6_PREFIX,
            nsid: None,
            tcp_idle: std::time::Duration::from_secs(10),
            dot_idle: std::time::Duration::from_secs(10),
        }
    }
}

/// The query pipeline with its long-lived state (cache, event sender, metrics).
pub struct Pipeline {
    /// The active policy; swapped atomically on reload.
    policy: ArcSwap<ActivePolicy>,
    /// The answer cache, shared by all groups and kept across reloads.
    cache: AnswerCache,
    /// Where events go; never blocks.
    events: EventSender,
    /// Settings.
    settings: PipelineSettings,
    /// Time source; the same clock as the cache's and the detector's, so one reading per query
    /// serves all of them.
    clock: SharedClock,
    /// Tunnel scoring; its windows survive reloads.
    detector: Detector,
    /// Rate limits, sinkholes and quarantines; they survive reloads.
    containment: Containment,
    /// Temporary exceptions and recent alerts (admin API).
    overrides: Overrides,
    /// The DNS Cookie secret: proof of a UDP client's source address.
    cookies: CookieSecret,
    /// Seed of the query-event fold keys (`account.rs`), random per process.
    fold_seed: foldhash::fast::RandomState,
    /// Unix time (seconds) at the clock's zero: a server cookie's timestamp is Unix time (RFC
    /// 9018 §4.3), advanced by the monotonic clock so a wall-clock step cannot expire cookies.
    cookie_epoch: u64,
    /// DNS-gated egress, when `[egress]` is configured: set once at start.
    egress: std::sync::OnceLock<crate::egress::EgressHook>,
    /// Misses in flight: their bounds and the coalescing of identical questions.
    inflight: InflightMisses<Fetched>,
    /// Questions whose resolution failed within `[upstream] failure_ttl` (RFC 9520).
    failures: FailureCache,
    latency_udp: Histogram,
    latency_tcp: Histogram,
    latency_dot: Histogram,
    latency_doh: Histogram,
    malformed_formerr: Counter,
    malformed_dropped: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline over `policy`. `clock` must be the clock `cache` and `detector` were built
    /// with: the pipeline reads it once per query and hands that reading to both.
    #[must_use]
    pub fn new(
        policy: Arc<ActivePolicy>,
        cache: AnswerCache,
        events: EventSender,
        settings: PipelineSettings,
        clock: SharedClock,
        detector: Detector,
        containment: Containment,
    ) -> Self {
        let overrides = Overrides::new(Arc::clone(&clock));
        let cookies = CookieSecret::random().unwrap_or_else(|e| {
            // The OS random source failing is near impossible; std's hasher keys come from it
            // too, but are the best remaining secret.
            tracing::warn!(error = %e, "no OS randomness for the DNS Cookie secret");
            let seed =
                std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), received_key());
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            key[8..].copy_from_slice(&seed.rotate_left(32).to_be_bytes());
            CookieSecret::from_key(key)
        });
        let inflight = InflightMisses::new(
            settings.max_inflight_misses,
            settings.max_inflight_misses_per_client,
        );
        let cookie_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(clock.now())
            .as_secs();
        Self {
            cookies,
            cookie_epoch,
            fold_seed: foldhash::fast::RandomState::default(),
            egress: std::sync::OnceLock::new(),
            inflight,
            failures: FailureCache::default(),
            policy: ArcSwap::new(policy),
            cache,
            events,
            settings,
            clock,
            overrides,
            detector,
            containment,
            latency_udp: metrics::histogram!(m::QUERY_DURATION_SECONDS, "protocol" => "udp"),
            latency_tcp: metrics::histogram!(m::QUERY_DURATION_SECONDS, "protocol" => "tcp"),
            latency_dot: metrics::histogram!(m::QUERY_DURATION_SECONDS, "protocol" => "dot"),
            latency_doh: metrics::histogram!(m::QUERY_DURATION_SECONDS, "protocol" => "doh"),
            malformed_formerr: metrics::counter!(m::MALFORMED_TOTAL, "action" => "formerr"),
            malformed_dropped: metrics::counter!(m::MALFORMED_TOTAL, "action" => "dropped"),
            cache_hits: metrics::counter!(m::CACHE_HITS_TOTAL),
            cache_misses: metrics::counter!(m::CACHE_MISSES_TOTAL),
        }
    }

    /// Turn on DNS-gated egress (once, at start): allowed answers feed the group's sets, and the
    /// encrypted-DNS canaries and resolver names are answered NXDOMAIN.
    pub fn attach_egress(&self, hook: crate::egress::EgressHook) {
        let _ = self.egress.set(hook);
    }

    /// The egress hook, when configured.
    #[must_use]
    pub fn egress(&self) -> Option<&crate::egress::EgressHook> {
        self.egress.get()
    }

    /// The policy in force now.
    #[must_use]
    pub fn policy(&self) -> Arc<ActivePolicy> {
        self.policy.load_full()
    }

    /// Swap in a new policy; queries already admitted finish under the old one.
    ///
    /// Cached answers the new policy would give differently (a new local zone, a re-pointed
    /// forward zone, new default upstreams) are dropped, so a reload takes effect at once
    /// rather than after their TTLs.
    pub fn swap_policy(&self, policy: Arc<ActivePolicy>) {
        let stale = {
            let old = self.policy.load();
            policy.stale_answers_since(&old)
        };
        if let Some(hook) = self.egress.get() {
            // Groups removed or switched off lose their sets (one batch); new ones get theirs
            // queued before any of their answers can be.
            let gated: Vec<&str> = policy
                .groups
                .iter()
                .filter(|g| g.egress)
                .map(|g| &*g.name)
                .collect();
            let newly: Vec<&str> = gated
                .iter()
                .copied()
                .filter(|g| !hook.gate.gates(g))
                .collect();
            drop(hook.gate.set_groups(&gated));
            self.repopulate_egress(&policy, &newly, &stale);
        }
        self.policy.store(policy);
        // The failures were those of the old upstreams and zones (and failure_ttl).
        self.failures.clear();
        let dropped = self.cache.invalidate(&stale);
        if dropped > 0 {
            tracing::info!(
                dropped,
                ?stale,
                "reload: dropped cached answers it made stale"
            );
        }
    }

    /// The answer cache.
    #[must_use]
    pub fn cache(&self) -> &AnswerCache {
        &self.cache
    }

    /// The recent resolution failures (RFC 9520).
    #[must_use]
    pub fn failures(&self) -> &FailureCache {
        &self.failures
    }

    /// The event sender.
    #[must_use]
    pub fn events(&self) -> &EventSender {
        &self.events
    }

    /// Handle a packet end to end (used by TCP, tests and the fuzz target).
    pub async fn handle(&self, packet: &[u8], src: IpAddr, protocol: Protocol) -> Option<Vec<u8>> {
        self.handle_peer(
            packet,
            &Peer::address_scoped(src, self.settings.ipv6_prefix),
            protocol,
        )
        .await
    }

    /// Handle a packet from an identified peer end to end (DoH; tests).
    ///
    /// A miss's resolution is boxed: its future is large (upstream exchanges, CNAME chasing),
    /// and inline it would make this future, and every task that holds one (a DoH request's),
    /// as large, copied whole when the task is spawned even when the answer comes from the
    /// cache.
    pub async fn handle_peer(
        &self,
        packet: &[u8],
        peer: &Peer,
        protocol: Protocol,
    ) -> Option<Vec<u8>> {
        match self.handle_fast_peer(packet, peer, protocol, Instant::now()) {
            Outcome::Reply(r) => Some(r),
            Outcome::Drop => None,
            Outcome::Resolve(p) => Box::pin(self.resolve(*p)).await,
        }
    }

    /// [`Self::handle_fast_peer`] for a client known only by its address (UDP, TCP).
    pub fn handle_fast(
        &self,
        packet: &[u8],
        src: IpAddr,
        protocol: Protocol,
        received: Instant,
    ) -> Outcome {
        self.handle_fast_peer(
            packet,
            &Peer::address_scoped(src, self.settings.ipv6_prefix),
            protocol,
            received,
        )
    }

    /// [`Pipeline::handle_fast`] for one datagram of a UDP batch: the answers given inline
    /// are not timed one by one; the listener times the whole batch once it is sent, with
    /// [`Pipeline::record_udp_batch_latency`] (one clock read per batch instead of per query).
    /// Answers resolved later (cache misses) are timed as usual.
    pub fn handle_udp_batched(&self, packet: &[u8], src: IpAddr, received: Instant) -> Outcome {
        self.handle_inner(
            packet,
            &Peer::address_scoped(src, self.settings.ipv6_prefix),
            Protocol::Udp,
            received,
            false,
        )
    }

    /// Record `n` UDP answers given inline from one batch, `elapsed` after it was received.
    pub fn record_udp_batch_latency(&self, elapsed: std::time::Duration, n: usize) {
        if n > 0 {
            self.latency_udp.record_many(elapsed.as_secs_f64(), n);
        }
    }

    /// Parse, identify, then the synchronous stages of [`SYNC_STAGES`] in order; a cache miss
    /// becomes [`Outcome::Resolve`]. Never panics, whatever the bytes.
    pub fn handle_fast_peer(
        &self,
        packet: &[u8],
        peer: &Peer,
        protocol: Protocol,
        received: Instant,
    ) -> Outcome {
        self.handle_inner(packet, peer, protocol, received, true)
    }

    /// [`Pipeline::handle_fast_peer`]; `timed`: whether the answer's latency is recorded here
    /// (false when the caller times a whole batch).
    fn handle_inner(
        &self,
        packet: &[u8],
        peer: &Peer,
        protocol: Protocol,
        received: Instant,
        timed: bool,
    ) -> Outcome {
        // Parse: the only stage that sees raw bytes. Used where it lies in the `Result` (a
        // ~200-byte `Query` moved out of it was a copy a query).
        let mut parsed = wire::parse_query(packet);
        let q = match &mut parsed {
            Ok(q) => q,
            Err(e) => return self.malformed_from(packet, peer, *e),
        };
        let client = canonical(peer.addr());
        let now = LazyNow::new(&self.clock, received);
        // An authenticated agent, TCP, or a valid DNS Cookie proves who is asking.
        let verified = self.check_source(q, client, protocol, &now) || peer.auth != AuthKind::None;
        let policy = self.policy.load();
        // Identify: a verified token's group claim, else the verified agent's identity
        // pattern, else the socket address picks the group (an identity wins over an address).
        let identified = policy.identify(peer);
        if identified.is_some() && q.edns.is_some() {
            self.edns_answer_options(q, protocol);
        }
        let asked = Asked {
            policy: &policy,
            gid: None,
            q,
            client,
            peer,
            protocol,
            received,
            verified,
            timed,
        };
        let Some(gid) = identified else {
            return self.unknown_client(&asked);
        };
        let Some(group) = policy.group(gid) else {
            return Outcome::Drop;
        };
        let mut admitted = Admitted {
            asked: Asked {
                gid: Some(gid),
                ..asked
            },
            group,
            gid,
            shared: &policy,
            domain: registrable_domain(&q.name),
            now,
            decision: None,
            tracked: None,
        };
        for (name, stage) in SYNC_STAGES {
            if let ControlFlow::Break(outcome) = stage(self, &mut admitted) {
                // Refused for what the query is (its EDNS version, class or type): its name
                // goes to no upstream, for anyone, so it is not "asked by another client" for
                // the next asker's scoring (a contained agent would otherwise ask each name
                // in class CH first, for a clean one to ask next, unpriced). The gates that
                // contain mark their own refusals.
                if REFUSE_FOR_WHAT_IT_IS.contains(&name)
                    && let Some(tracked) = &admitted.tracked
                {
                    self.detector.undelivered(tracked);
                }
                return outcome;
            }
        }
        // Every stage let it through and the cache had nothing: resolve asynchronously, if
        // there is room for one more miss in flight.
        self.cache_misses.increment(1);
        // The same question failed a moment ago (RFC 9520): SERVFAIL at once, no upstream.
        // With no recent failure (the usual case) this is one atomic load.
        if !self.failures.is_empty()
            && let Some(msg) = self.failure_cached(&admitted.asked, &admitted.now)
        {
            return Outcome::Reply(msg);
        }
        let permit = match self.inflight.admit(client) {
            Ok(p) => p,
            Err(overload) => {
                let msg = wire::start_response(q, rcode::SERVFAIL, false);
                let why = || format!("overload: {} at its bound", overload.as_str());
                let report = Report::new(Verdict::Servfail, &why);
                return Outcome::Reply(self.finish(&admitted.asked, msg, &report));
            }
        };
        let policy = arc_swap::Guard::into_inner(policy);
        Outcome::Resolve(Box::new(Pending {
            packet: packet.to_vec(),
            peer: peer.clone(),
            protocol,
            received,
            policy,
            group: gid,
            held: None,
            _permit: Some(permit),
        }))
    }

    /// A packet that did not parse. With `unknown_clients = "drop"`, a source in no group
    /// gets silence for broken packets too: a FORMERR or NOTIMP would tell a scanner that a
    /// resolver listens here. The identification runs only on this error path, so well-formed
    /// queries still parse first and identify once.
    fn malformed_from(&self, packet: &[u8], peer: &Peer, e: wire::WireError) -> Outcome {
        let known = std::cell::OnceCell::new();
        let known = || *known.get_or_init(|| self.policy.load().identify(peer).is_some());
        // A cookie-only query (no question, RFC 7873 §5.4) from a client of ours: its server
        // cookie, NOERROR. From anyone else it stays a FORMERR (or silence).
        if let Some((cookie, dnssec_ok)) = wire::cookie_only_query(packet)
            && known()
        {
            let secs = self.cookie_time(self.clock.now());
            let (_, server) = self.cookies.check(Some(&cookie), peer.key.addr, secs);
            if let Some(server) = server {
                return Outcome::Reply(wire::cookie_only_answer(
                    packet, &cookie, dnssec_ok, &server,
                ));
            }
        }
        if self.settings.unknown_clients == UnknownClients::Drop && !known() {
            self.malformed_dropped.increment(1);
            return Outcome::Drop;
        }
        self.malformed(packet, e, known())
    }

    /// The asynchronous stages: local zones, then upstreams, then the answer check.
    pub async fn resolve(&self, p: Pending) -> Option<Vec<u8>> {
        if let Some((msg, wait)) = p.held {
            let _ = wait.done().await;
            return Some(msg);
        }
        let Ok(mut q) = wire::parse_query(&p.packet) else {
            return None;
        };
        if q.edns.is_some() {
            self.edns_answer_options(&mut q, p.protocol);
        }
        let verified = self.check_source(
            &mut q,
            p.peer.addr(),
            p.protocol,
            &LazyNow::new(&self.clock, p.received),
        ) || p.peer.auth != AuthKind::None;
        let policy = &p.policy;
        let group = policy.group(p.group)?;
        let reason = || group.decide_in(&policy.zones, &q.name).reason();
        let ctx = Asked {
            policy,
            gid: Some(p.group),
            q: &q,
            client: p.peer.addr(),
            peer: &p.peer,
            protocol: p.protocol,
            received: p.received,
            verified,
            timed: true,
        };

        // Local zones are authoritative and never forwarded. The name is built from the
        // question's wire labels (only for a name inside a zone), never re-read from text, so
        // a label holding any byte (a dot, a backslash, NUL, a byte above 127) is looked up and
        // echoed as itself.
        let local = if policy.zones.serves_question(&q.name, q.qtype) {
            let Some(qname) = wire::question_name(&q) else {
                // Unreachable for a question parse_query accepted; answered, not forwarded.
                let msg = wire::start_response(&q, rcode::SERVFAIL, false);
                let why = || "question name unreadable".to_string();
                return Some(self.finish(&ctx, msg, &Report::new(Verdict::Servfail, &why)));
            };
            policy
                .zones
                .lookup(&qname, hickory_proto::rr::RecordType::from(q.qtype))
                .map(|answer| (answer, qname))
        } else {
            None
        };
        if let Some((answer, qname)) = local {
            let targets: Vec<Box<str>> = wire::cname_targets(&answer.answers).collect();
            if let Some(problem) = check_answer(
                group,
                &q.name,
                &targets,
                &[],
                AnswerSource::Trusted,
                &self.settings.own_addresses,
            ) {
                return Some(self.block_answer(&ctx, group, problem, false));
            }
            let upstream = format!("zone:{}", answer.zone);
            let mut m = Message::new(q.id, MessageType::Response, OpCode::Query);
            m.metadata.authoritative = true;
            m.metadata.recursion_available = true;
            m.metadata.response_code = answer.rcode;
            m.answers = answer.answers;
            m.authorities = answer.authorities;
            // The in-zone addresses of MX/NS/SRV targets, only for names the group may resolve:
            // an address is the same disclosure in the additional section as in the answer (a
            // denied host's address rode along with an allowed MX; a sinkholed group got the
            // real address of a target it is sinkholed for).
            m.additionals = answer
                .additionals
                .into_iter()
                .filter(|r| group.decide(&wire::name_text(&r.name)).is_allowed())
                .collect();
            // A CNAME out of the zone: the rest of the chain, as a recursive resolver answers.
            if let Err(stop) = self.chase_local_cname(&p, &q, policy, group, &mut m).await {
                return Some(self.chase_stopped(&ctx, group, stop, &upstream));
            }
            let msg = match encode_with_question(m, qname, &q) {
                Some(b) => b,
                None => wire::start_response(&q, rcode::SERVFAIL, false),
            };
            let msg = {
                // Scoped: the report is not `Send` and must not live across the await.
                let report = Report::new(Verdict::Allow, &reason).via(&upstream);
                self.finish(&ctx, msg, &report)
            };
            return Some(self.egress_admitted(group, msg).await);
        }

        match self.fetch_coalesced(&p, &q).await {
            Fetched::Answer(answer, upstream, answer_bytes) => {
                let nxdomain = answer.rcode == rcode::NXDOMAIN;
                let host_targets = if crate::detect::features::priced_by_targets(q.qtype, &q.name) {
                    answer.host_targets()
                } else {
                    Vec::new()
                };
                // Fresh from upstream: what is new in it is the downstream half of a tunnel
                // (cache hits carry nothing new).
                self.detector.observe_answer_at(
                    &p.peer.key,
                    &q.name,
                    registrable_domain(&q.name),
                    q.qtype,
                    &FreshAnswer {
                        nxdomain,
                        bytes: answer_bytes,
                        answers: answer.answers,
                        content: &|h| answer.hash_content(h),
                        records: &|h| answer.hash_records(h),
                        addresses: &answer.addresses,
                        cname_targets: &answer.cname_targets,
                        host_targets: &host_targets,
                        signed_bytes: usize::from(answer.signed_bytes),
                    },
                    self.clock.now(),
                );
                if let Some(problem) = self.check_answer(policy, group, &q.name, &answer) {
                    return Some(self.block_answer(&ctx, group, problem, false));
                }
                // A chain the upstream left open (an authoritative server, a delegation, that
                // does not follow a CNAME out of its zones): the rest of it, as a recursive
                // resolver answers; such an answer is not cached on its own
                // ([`crate::resolve::cache`]), so every query of the alias gets here.
                if q.rd
                    && answer.rcode == rcode::NOERROR
                    && !answer.cname_targets.is_empty()
                    // Only CNAMEs in the answer (a closed chain has its target's records too):
                    // the usual CNAME answer is not decoded again.
                    && usize::from(answer.answers) == answer.cname_targets.len()
                    && let Some(out) = self
                        .complete_open_chain(&p, &q, &ctx, group, &answer, &upstream, &reason)
                        .await
                {
                    return Some(out);
                }
                let msg = answer.render(&q, self.cache.now(), p.protocol.max_len(&q));
                let msg = {
                    // Scoped: the report is not `Send` and must not live across the await.
                    let report = Report::new(Verdict::Allow, &reason).via(&upstream);
                    self.finish_rendered(&ctx, msg, &report)
                };
                Some(self.egress_admitted(group, msg).await)
            }
            Fetched::Unusable(upstream, why) => {
                let msg = wire::start_response(&q, rcode::SERVFAIL, false);
                let why = || format!("unusable upstream answer: {why}");
                let report = Report::new(Verdict::Servfail, &why).via(&upstream);
                Some(self.finish(&ctx, msg, &report))
            }
            Fetched::Failed(why, text) => {
                let msg = wire::start_response(&q, rcode::SERVFAIL, false);
                let why = || why.to_string();
                // Why, for the client's logs (RFC 8914): no upstream gave an answer, or every
                // one refused to.
                let report = Report::new(Verdict::Servfail, &why).ede(wire::Ede {
                    code: wire::ede::NO_REACHABLE_AUTHORITY,
                    text,
                });
                Some(self.finish(&ctx, msg, &report))
            }
        }
    }

    /// The answer to `q` when `answer`, forwarded, ends in a CNAME whose target it does not
    /// answer: the chain completed ([`Self::chase_local_cname`]), or the block or SERVFAIL its
    /// chase ended in. `None` when the chain is not open (the usual CNAME answer).
    #[allow(clippy::too_many_arguments)]
    async fn complete_open_chain(
        &self,
        p: &Pending,
        q: &Query<'_>,
        ctx: &Asked<'_, '_>,
        group: &Group,
        answer: &CachedAnswer,
        upstream: &str,
        reason: &(dyn Fn() -> String + Sync),
    ) -> Option<Vec<u8>> {
        let rendered = answer.render(q, self.cache.now(), usize::from(u16::MAX));
        let mut m = Message::from_vec(&rendered).ok()?;
        if !chase::is_open(&m, hickory_proto::rr::RecordType::from(q.qtype)) {
            return None;
        }
        // The client's OPT record is added when the answer is finished.
        m.edns = None;
        if let Err(stop) = self
            .chase_local_cname(p, q, ctx.policy, group, &mut m)
            .await
        {
            return Some(self.chase_stopped(ctx, group, stop, upstream));
        }
        let qname = wire::question_name(q)?;
        let msg = encode_with_question(m, qname, q)
            .unwrap_or_else(|| wire::start_response(q, rcode::SERVFAIL, false));
        let msg = {
            let report = Report::new(Verdict::Allow, reason).via(upstream);
            self.finish(ctx, msg, &report)
        };
        Some(self.egress_admitted(group, msg).await)
    }

    /// The answer for a chase that stopped: the group's block for a target it may not resolve
    /// or an internal address, else SERVFAIL saying why.
    fn chase_stopped(
        &self,
        ctx: &Asked<'_, '_>,
        group: &Group,
        stop: ChaseStop,
        upstream: &str,
    ) -> Vec<u8> {
        if let Some(problem) = stop.problem() {
            return self.block_answer(ctx, group, problem, false);
        }
        let msg = wire::start_response(ctx.q, rcode::SERVFAIL, false);
        let why = || format!("the CNAME's target: {stop}");
        let mut report = Report::new(Verdict::Servfail, &why).via(upstream);
        match stop {
            ChaseStop::FailureCached(_) => {
                report = report.ede(wire::Ede {
                    code: wire::ede::CACHED_ERROR,
                    text: "resolution failed recently",
                });
            }
            ChaseStop::Unreachable(_, text) => {
                report = report.ede(wire::Ede {
                    code: wire::ede::NO_REACHABLE_AUTHORITY,
                    text,
                });
            }
            _ => {}
        }
        self.finish(ctx, msg, &report)
    }

    /// The upstream exchange for `q`, shared with every identical question in flight under the
    /// same policy: led here, or followed (the leader's result, an error if it went away).
    async fn fetch_coalesced(&self, p: &Pending, q: &Query<'_>) -> Fetched {
        let key = FlightKey {
            key: CacheKeyRef::of(q).to_owned_key(),
            policy_id: Arc::as_ptr(&p.policy) as usize,
        };
        match self.inflight.join(key) {
            Flight::Leader(leader) => {
                let fetched = self.fetch(p, q).await;
                leader.finish(&fetched);
                fetched
            }
            Flight::Follower(rx) => rx.await.unwrap_or_else(|_| {
                Fetched::Failed(
                    "the shared upstream exchange was abandoned".into(),
                    "no upstream answered",
                )
            }),
        }
    }

    /// The upstream exchange for a miss (the leader of its question): forward, prepare the
    /// answer and cache it.
    async fn fetch(&self, p: &Pending, q: &Query<'_>) -> Fetched {
        // With `[upstream] fold_case` the name goes upstream in lower case: the letters' case
        // is the client's to choose and would otherwise reach a tunnel's authority unseen (the
        // client still gets its own case back).
        let mut folded = [0; wire::MAX_QUESTION];
        let question = if p.policy.upstreams.fold_case() {
            wire::lowercased_question(q.question, &mut folded).unwrap_or(q.question)
        } else {
            q.question
        };
        match p
            .policy
            .upstreams
            .resolve(&q.name, question, q.dnssec_ok(), q.cd)
            .await
        {
            Ok((raw, up)) => {
                match self
                    .cache
                    .prepare_for(&raw, Arc::clone(&up.label), q.dnssec_ok())
                {
                    Ok(prepared) => {
                        if prepared.answer.rcode == rcode::SERVFAIL {
                            self.remember_failure(p, q, FailureKind::Servfail);
                        } else {
                            // Answered: a later failure starts the back-off again.
                            self.failures.forget(CacheKeyRef::of(q));
                        }
                        // An answer fetched under a policy that a reload has since replaced may be
                        // one the reload made stale: serve it, but do not cache it.
                        if Arc::ptr_eq(&p.policy, &self.policy.load()) {
                            self.cache.insert(q, &prepared);
                        }
                        // What the client is given (scrubbed, no OPT), not what the upstream sent.
                        let answer_bytes = prepared.answer.body_len();
                        Fetched::Answer(prepared.answer, Arc::clone(&up.label), answer_bytes)
                    }
                    Err(e) => {
                        self.remember_failure(p, q, FailureKind::Unusable);
                        Fetched::Unusable(Arc::clone(&up.label), e.to_string().into())
                    }
                }
            }
            Err(e) => {
                // Only the upstreams' failures are remembered: not this host's (no socket),
                // not the absence of any upstream.
                match e {
                    UpstreamError::Exhausted { tried } if tried > 0 => {
                        self.remember_failure(p, q, FailureKind::NoAnswer);
                    }
                    UpstreamError::Rejected {
                        tried,
                        rejected,
                        rcode,
                    } => {
                        let kind = if rejected >= tried {
                            FailureKind::Rejected(rcode)
                        } else {
                            FailureKind::NoAnswer
                        };
                        self.remember_failure(p, q, kind);
                    }
                    _ => {}
                }
                Fetched::Failed(e.to_string().into(), e.ede_text())
            }
        }
    }

    /// Remember that `q`'s resolution failed, for `[upstream] failure_ttl` (longer when it keeps
    /// failing, up to `failure_ttl_max`): unless that is
    /// zero, or a reload replaced the policy it was fetched under.
    fn remember_failure(&self, p: &Pending, q: &Query<'_>, kind: FailureKind) {
        let upstreams = &p.policy.upstreams;
        let ttl = upstreams.failure_ttl();
        if ttl.is_zero() || !Arc::ptr_eq(&p.policy, &self.policy.load()) {
            return;
        }
        let now = self.clock.now();
        self.failures.insert(
            CacheKeyRef::of(q),
            kind,
            now,
            ttl,
            upstreams.failure_ttl_max(),
        );
    }

    /// A server cookie's time at `now` (this pipeline's clock): the low 32 bits of Unix time,
    /// compared in serial-number arithmetic (RFC 9018 §4.3).
    fn cookie_time(&self, now: std::time::Duration) -> u32 {
        #[allow(clippy::cast_possible_truncation)]
        let secs = self.cookie_epoch.wrapping_add(now.as_secs()) as u32;
        secs
    }

    /// Whether the query provably came from its source address (TCP, or a valid DNS Cookie),
    /// and what its answer's OPT record carries: the server cookie, and padding.
    fn check_source(
        &self,
        q: &mut Query<'_>,
        client: IpAddr,
        protocol: Protocol,
        now: &LazyNow<'_>,
    ) -> bool {
        // A padded query over an encrypted transport gets a padded answer (RFC 7830 §4); in
        // the clear padding hides nothing.
        q.pad_response =
            matches!(protocol, Protocol::Dot | Protocol::Doh) && q.edns.is_some_and(|e| e.padding);
        let Some(cookie) = q.edns.and_then(|e| e.cookie) else {
            return protocol == Protocol::Tcp;
        };
        let secs = self.cookie_time(now.get());
        let (check, answer) = self.cookies.check(Some(&cookie), client, secs);
        q.response_cookie = answer;
        protocol == Protocol::Tcp || check == CookieCheck::Verified
    }

    /// What a client's answer adds to its OPT record at the query's request, besides the
    /// cookie and padding ([`Self::check_source`]): only for clients in a group (a source in no
    /// group learns neither the server's identity nor its timeouts).
    /// - edns-tcp-keepalive (RFC 7828): over TCP and DoT, the connection's idle timeout in
    ///   units of 100 ms (§3.3.2). Over UDP the option is ignored (§3.3.1); over DoH too: HTTP
    ///   manages that connection, not DNS. One with data over TCP or DoT gets FORMERR (the
    ///   `edns` stage).
    /// - NSID (RFC 5001): `server.nsid`, when set, to an empty NSID option.
    fn edns_answer_options<'q>(&'q self, q: &mut Query<'q>, protocol: Protocol) {
        let Some(edns) = q.edns else { return };
        if edns.keepalive == wire::Keepalive::Asked {
            let idle = match protocol {
                Protocol::Tcp => Some(self.settings.tcp_idle),
                Protocol::Dot => Some(self.settings.dot_idle),
                Protocol::Udp | Protocol::Doh => None,
            };
            q.keepalive_response =
                idle.map(|d| u16::try_from(d.as_millis() / 100).unwrap_or(u16::MAX));
        }
        if edns.nsid {
            q.nsid_response = self.settings.nsid.as_deref();
        }
    }

    /// The answer check for an upstream answer (cached or fresh) to `qname`.
    fn check_answer<'a>(
        &self,
        policy: &ActivePolicy,
        group: &Group,
        qname: &str,
        answer: &'a CachedAnswer,
    ) -> Option<AnswerProblem<'a>> {
        let source = if policy.upstreams.is_forward_zone_name(qname) {
            AnswerSource::Trusted
        } else {
            AnswerSource::Forwarded
        };
        check_answer(
            group,
            qname,
            &answer.cname_targets,
            &answer.addresses,
            source,
            &self.settings.own_addresses,
        )
    }

    /// Periodic upkeep (about once a second): end expired containments, publish table sizes.
    pub fn maintenance_tick(&self) {
        let version = self.policy.load().version.number;
        for ended in self.containment.expire_due() {
            self.events
                .emit(Event::now(version, EventBody::ContainmentEnded(ended)));
        }
        self.detector.publish_metrics();
        self.overrides.expire();
        if let Some(hook) = self.egress.get() {
            hook.gate.sweep();
        }
    }

    /// Temporary exceptions and recent alerts.
    #[must_use]
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// The key an address-only client is contained and scored under (IPv6 by its prefix).
    #[must_use]
    pub fn client_key(&self, addr: IpAddr) -> ClientKey {
        ClientKey::address(addr, self.settings.ipv6_prefix)
    }

    /// An operator's release of `client`: every containment of it ends, and the detector
    /// forgets the evidence behind them (its client-wide state and its state on the contained
    /// domains), so the next query starts from a clean slate instead of re-containing it.
    pub fn release(
        &self,
        client: &ClientKey,
        actor: &str,
        reason: &str,
    ) -> Vec<crate::events::ContainmentEvent> {
        let ended = self.containment.release(client, actor, reason);
        let domains: Vec<&str> = ended.iter().filter_map(|e| e.domain.as_deref()).collect();
        self.detector.forget(client, &domains);
        ended
    }

    /// The containment table (for the admin API).
    #[must_use]
    pub fn containment(&self) -> &Containment {
        &self.containment
    }

    /// The clock the pipeline runs on.
    #[must_use]
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }
}

/// Something that differs between processes, for the fallback cookie secret.
fn received_key() -> (u32, Instant) {
    (std::process::id(), Instant::now())
}

/// Encode a local-zone answer and put the client's question in it. `qname` is the question
/// name lower-cased ([`wire::question_name`]).
fn encode_with_question(
    mut m: Message,
    qname: hickory_proto::rr::Name,
    q: &Query<'_>,
) -> Option<Vec<u8>> {
    // Encode with the lower-case question (the owners of the answer compress against it),
    // then splice the client's own question bytes (same length, maybe different case) over it
    // so 0x20 case randomisation is echoed.
    m.queries.clear();
    m.add_query(hickory_proto::op::Query::query(
        qname,
        hickory_proto::rr::RecordType::from(q.qtype),
    ));
    let mut out = m.to_vec().ok()?;
    // Past 64 KiB hickory's encoder sets TC and stops mid-record, the counts still claiming
    // the records it did not finish: keep the whole ones.
    if wire::is_truncated(&out) {
        let len = out.len();
        wire::keep_whole_records(&mut out, len)?;
    }
    let qlen = q.question.len();
    if out.len() < wire::HEADER_LEN + qlen {
        return None;
    }
    out[wire::HEADER_LEN..wire::HEADER_LEN + qlen].copy_from_slice(q.question);
    Some(out)
}
