//! The query pipeline: the one place that orders the stages.
//!
//! ```text
//! parse → identify → client gate → class → tunnel scoring → domain gate → policy → cache
//!       → (miss) local zones → upstream → answer check → account
//! ```
//!
//! Why this order: cheap checks come first so that the traffic we refuse costs the least.
//! - **parse** ([`Pipeline::handle_fast`]): the only stage that sees raw bytes; runts and
//!   responses get silence, malformed queries FORMERR, other opcodes NOTIMP.
//! - **identify**: the socket address picks the group; unknown clients are refused (or dropped)
//!   before any other work: dnsward is never an open resolver.
//! - then the synchronous stages of [`SYNC_STAGES`], in this order:
//!   1. **client gate**: rate limit and quarantine, keyed on the socket address alone;
//!   2. **class**: only class IN is served;
//!   3. **tunnel scoring**: every query of a known client, allowed or not (an agent tunnelling
//!      through a name it may not resolve is still compromised); may start a containment that
//!      applies to this very query;
//!   4. **domain gate**: a throttled or sinkholed (client, domain) is answered here;
//!   5. **policy**: the group's allow/deny decision; a denied name gets the block answer;
//!   6. **cache**: a hit is served inline after the answer check for this group.
//! - a miss is admitted under the in-flight bounds ([`crate::resolve::inflight`]; over them it
//!   is answered SERVFAIL at once and counted as overload), then becomes a [`Pending`] resolved
//!   asynchronously ([`Pipeline::resolve`]), identical questions in flight sharing one upstream
//!   exchange: local zones
//!   (authoritative, never forwarded), then the upstreams, then the answer check (CNAME targets
//!   the group may not reach).
//! - **account** ([`account`]): every answer, whatever stage produced it, is counted in
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
use crate::detect::Detector;
use crate::events::sink::EventSender;
use crate::events::{Event, EventBody};
use crate::metrics as m;
use crate::names::registrable_domain;
use crate::policy::active::ActivePolicy;
use crate::policy::answer_check::{AnswerProblem, AnswerSource, check_answer};
use crate::policy::group::Group;
use crate::policy::identify::{GroupId, canonical};
use crate::policy::verdict::Verdict;
use crate::resolve::cache::{AnswerCache, CacheKeyRef, CachedAnswer};
use crate::resolve::inflight::{Flight, FlightKey, InflightMisses, MissPermit};
use crate::wire::{self, Query, rcode};

mod account;
mod stages;

use account::{Asked, LazyNow, Report};
pub use stages::{Admitted, SYNC_STAGES, Step, SyncStage};

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
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }

    fn max_len(self, q: &Query<'_>) -> usize {
        match self {
            Self::Udp => q.max_udp_payload(),
            Self::Tcp => usize::from(u16::MAX),
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
    /// Source address (canonical).
    client: IpAddr,
    /// Transport.
    protocol: Protocol,
    /// When it was received.
    received: Instant,
    /// The policy that admitted it; the query finishes under this version.
    policy: Arc<ActivePolicy>,
    /// The client's group.
    group: GroupId,
    /// Its in-flight slot, held until the answer is sent.
    _permit: MissPermit,
}

/// What an upstream exchange gave, shared by every miss coalesced onto it.
#[derive(Debug, Clone)]
enum Fetched {
    /// A usable answer, from this upstream.
    Answer(Arc<CachedAnswer>, Arc<str>),
    /// The upstream answered something unusable.
    Unusable(Arc<str>, Arc<str>),
    /// No upstream answered.
    Failed(Arc<str>),
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
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            unknown_clients: UnknownClients::default(),
            own_addresses: Vec::new(),
            max_inflight_misses: 4096,
            max_inflight_misses_per_client: 1024,
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
    /// Misses in flight: their bounds and the coalescing of identical questions.
    inflight: InflightMisses<Fetched>,
    latency_udp: Histogram,
    latency_tcp: Histogram,
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
        let inflight = InflightMisses::new(
            settings.max_inflight_misses,
            settings.max_inflight_misses_per_client,
        );
        Self {
            inflight,
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
            malformed_formerr: metrics::counter!(m::MALFORMED_TOTAL, "action" => "formerr"),
            malformed_dropped: metrics::counter!(m::MALFORMED_TOTAL, "action" => "dropped"),
            cache_hits: metrics::counter!(m::CACHE_HITS_TOTAL),
            cache_misses: metrics::counter!(m::CACHE_MISSES_TOTAL),
        }
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
        self.policy.store(policy);
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

    /// The event sender.
    #[must_use]
    pub fn events(&self) -> &EventSender {
        &self.events
    }

    /// Handle a packet end to end (used by TCP, tests and the fuzz target).
    pub async fn handle(&self, packet: &[u8], src: IpAddr, protocol: Protocol) -> Option<Vec<u8>> {
        match self.handle_fast(packet, src, protocol, Instant::now()) {
            Outcome::Reply(r) => Some(r),
            Outcome::Drop => None,
            Outcome::Resolve(p) => self.resolve(*p).await,
        }
    }

    /// Parse, identify, then the synchronous stages of [`SYNC_STAGES`] in order; a cache miss
    /// becomes [`Outcome::Resolve`]. Never panics, whatever the bytes.
    pub fn handle_fast(
        &self,
        packet: &[u8],
        src: IpAddr,
        protocol: Protocol,
        received: Instant,
    ) -> Outcome {
        // Parse: the only stage that sees raw bytes.
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(e) => return self.malformed_from(packet, src, e),
        };
        let client = canonical(src);
        let policy = self.policy.load();
        let asked = Asked {
            policy: &policy,
            gid: None,
            q: &q,
            client,
            protocol,
            received,
        };
        // Identify: the socket address picks the group.
        let Some(gid) = policy.clients.lookup(client) else {
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
            domain: registrable_domain(&q.name),
            now: LazyNow::new(&self.clock),
            decision: None,
        };
        for (_, stage) in SYNC_STAGES {
            if let ControlFlow::Break(outcome) = stage(self, &mut admitted) {
                return outcome;
            }
        }
        // Every stage let it through and the cache had nothing: resolve asynchronously, if
        // there is room for one more miss in flight.
        self.cache_misses.increment(1);
        let permit = match self.inflight.admit(client) {
            Ok(p) => p,
            Err(overload) => {
                let msg = wire::start_response(&q, rcode::SERVFAIL, false);
                let why = || format!("overload: {} at its bound", overload.as_str());
                let report = Report::new(Verdict::Servfail, &why);
                return Outcome::Reply(self.finish(&admitted.asked, msg, &report));
            }
        };
        let policy = arc_swap::Guard::into_inner(policy);
        Outcome::Resolve(Box::new(Pending {
            packet: packet.to_vec(),
            client,
            protocol,
            received,
            policy,
            group: gid,
            _permit: permit,
        }))
    }

    /// A packet that did not parse. With `unknown_clients = "drop"`, a source in no group
    /// gets silence for broken packets too: a FORMERR or NOTIMP would tell a scanner that a
    /// resolver listens here. The identification runs only on this error path, so well-formed
    /// queries still parse first and identify once.
    fn malformed_from(&self, packet: &[u8], src: IpAddr, e: wire::WireError) -> Outcome {
        if self.settings.unknown_clients == UnknownClients::Drop
            && self.policy.load().clients.lookup(canonical(src)).is_none()
        {
            self.malformed_dropped.increment(1);
            return Outcome::Drop;
        }
        self.malformed(packet, e)
    }

    /// The asynchronous stages: local zones, then upstreams, then the answer check.
    pub async fn resolve(&self, p: Pending) -> Option<Vec<u8>> {
        let Ok(q) = wire::parse_query(&p.packet) else {
            return None;
        };
        let policy = &p.policy;
        let group = policy.group(p.group)?;
        let reason = || group.decide(&q.name).reason();
        let ctx = Asked {
            policy,
            gid: Some(p.group),
            q: &q,
            client: p.client,
            protocol: p.protocol,
            received: p.received,
        };

        // Local zones are authoritative and never forwarded.
        if let Some(answer) = policy
            .zones
            .lookup(&q.name, hickory_proto::rr::RecordType::from(q.qtype))
        {
            let targets: Vec<Box<str>> = answer
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_proto::rr::RData::CNAME(c) => {
                        Some(wire::name_text(&c.0).into_boxed_str())
                    }
                    _ => None,
                })
                .collect();
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
            m.additionals = answer.additionals;
            let msg = match encode_with_question(&m, &q) {
                Some(b) => b,
                None => wire::start_response(&q, rcode::SERVFAIL, false),
            };
            let report = Report::new(Verdict::Allow, &reason).via(&upstream);
            return Some(self.finish(&ctx, msg, &report));
        }

        let key = FlightKey {
            key: CacheKeyRef::of(&q).to_owned_key(),
            policy_id: Arc::as_ptr(policy) as usize,
        };
        let fetched = match self.inflight.join(key) {
            Flight::Leader(leader) => {
                let fetched = self.fetch(&p, &q).await;
                leader.finish(&fetched);
                fetched
            }
            Flight::Follower(rx) => rx.await.unwrap_or_else(|_| {
                Fetched::Failed("the shared upstream exchange was abandoned".into())
            }),
        };
        match fetched {
            Fetched::Answer(answer, upstream) => {
                let nxdomain = answer.rcode == rcode::NXDOMAIN;
                self.detector
                    .observe_rcode(p.client, registrable_domain(&q.name), nxdomain);
                if let Some(problem) = self.check_answer(policy, group, &q.name, &answer) {
                    return Some(self.block_answer(&ctx, group, problem, false));
                }
                let msg = answer.render(&q, self.cache.now(), p.protocol.max_len(&q));
                let report = Report::new(Verdict::Allow, &reason).via(&upstream);
                Some(self.finish_rendered(&ctx, msg, &report))
            }
            Fetched::Unusable(upstream, why) => {
                let msg = wire::start_response(&q, rcode::SERVFAIL, false);
                let why = || format!("unusable upstream answer: {why}");
                let report = Report::new(Verdict::Servfail, &why).via(&upstream);
                Some(self.finish(&ctx, msg, &report))
            }
            Fetched::Failed(why) => {
                let msg = wire::start_response(&q, rcode::SERVFAIL, false);
                let why = || why.to_string();
                let report = Report::new(Verdict::Servfail, &why);
                Some(self.finish(&ctx, msg, &report))
            }
        }
    }

    /// The upstream exchange for a miss (the leader of its question): forward, prepare the
    /// answer and cache it.
    async fn fetch(&self, p: &Pending, q: &Query<'_>) -> Fetched {
        match p
            .policy
            .upstreams
            .resolve(&q.name, q.question, q.dnssec_ok(), q.cd)
            .await
        {
            Ok((raw, up)) => match self.cache.prepare(&raw, Arc::clone(&up.label)) {
                Ok(prepared) => {
                    // An answer fetched under a policy that a reload has since replaced may be
                    // one the reload made stale: serve it, but do not cache it.
                    if Arc::ptr_eq(&p.policy, &self.policy.load()) {
                        self.cache.insert(q, &prepared);
                    }
                    Fetched::Answer(prepared.answer, Arc::clone(&up.label))
                }
                Err(e) => Fetched::Unusable(Arc::clone(&up.label), e.to_string().into()),
            },
            Err(e) => Fetched::Failed(e.to_string().into()),
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
    }

    /// Temporary exceptions and recent alerts.
    #[must_use]
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
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

/// Encode a local-zone answer and put the client's question in it.
fn encode_with_question(m: &Message, q: &Query<'_>) -> Option<Vec<u8>> {
    // Encode with the lower-case question, then splice the client's own question bytes (same
    // length, maybe different case) over it so 0x20 case randomisation is echoed.
    let mut m = m.clone();
    let name =
        hickory_proto::rr::Name::from_ascii(if q.name == "." { "." } else { &q.name }).ok()?;
    m.queries.clear();
    m.add_query(hickory_proto::op::Query::query(
        name,
        hickory_proto::rr::RecordType::from(q.qtype),
    ));
    let mut out = m.to_vec().ok()?;
    let qlen = q.question.len();
    if out.len() < wire::HEADER_LEN + qlen {
        return None;
    }
    out[wire::HEADER_LEN..wire::HEADER_LEN + qlen].copy_from_slice(q.question);
    Some(out)
}
