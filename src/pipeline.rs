//! The query pipeline: the one place that orders the stages.
//!
//! ```text
//! listener → parse → identify → rate limit / quarantine → policy → tunnel scoring
//!          → cache → local zones / upstream → answer checks → events
//! ```
//!
//! Cheap checks come first so that the traffic we refuse costs the least. Everything up to and
//! including the cache is synchronous ([`Pipeline::handle_fast`]): the UDP listener answers
//! those queries inline without spawning a task. Only cache misses become a [`Pending`] that is
//! resolved asynchronously ([`Pipeline::resolve`]).
//!
//! Outcomes such as "blocked" or "refused" are verdicts with stable reason strings, not errors;
//! every one is counted in `dnsward_queries_total{group,verdict,qtype}` and every verdict but
//! `allow` becomes an event.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode};
use metrics::{Counter, Histogram};

use crate::active_policy::{ActivePolicy, verdict_index};
use crate::answer_check::forbidden_target;
use crate::cache::AnswerCache;
use crate::clock::SharedClock;
use crate::contain::{ClientGate, Containment, DomainGate};
use crate::detect::{Detector, Level, Observation};
use crate::events::sink::EventSender;
use crate::events::{Event, EventBody, QueryEvent};
use crate::identify::{GroupId, canonical};
use crate::identity::{AuthKind, Peer};
use crate::metrics as m;
use crate::names::registrable_domain;
use crate::overrides::Overrides;
use crate::policy::{BlockAnswer, BlockKind, Group};
use crate::server::UnknownClients;
use crate::wire::{self, Query, WireError, rcode};

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
}

/// Pipeline-wide settings that are not part of the swappable policy.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
    /// What unknown clients get.
    pub unknown_clients: UnknownClients,
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

/// What the last stages report about an answer, for metrics and the event.
struct Report<'a> {
    verdict: &'static str,
    reason: &'a dyn Fn() -> String,
    cache_hit: bool,
    upstream: Option<&'a str>,
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
        Self {
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

    /// The policy in force now.
    #[must_use]
    pub fn policy(&self) -> Arc<ActivePolicy> {
        self.policy.load_full()
    }

    /// Swap in a new policy; queries already admitted finish under the old one.
    pub fn swap_policy(&self, policy: Arc<ActivePolicy>) {
        self.policy.store(policy);
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
        self.handle_peer(packet, &Peer::address(src), protocol)
            .await
    }

    /// Handle a packet from an identified peer end to end (DoT, DoH).
    pub async fn handle_peer(
        &self,
        packet: &[u8],
        peer: &Peer,
        protocol: Protocol,
    ) -> Option<Vec<u8>> {
        match self.handle_fast_peer(packet, peer, protocol, Instant::now()) {
            Outcome::Reply(r) => Some(r),
            Outcome::Drop => None,
            Outcome::Resolve(p) => self.resolve(*p).await,
        }
    }

    /// The synchronous stages for a client known only by its address (UDP, TCP).
    pub fn handle_fast(
        &self,
        packet: &[u8],
        src: IpAddr,
        protocol: Protocol,
        received: Instant,
    ) -> Outcome {
        self.handle_fast_peer(packet, &Peer::address(src), protocol, received)
    }

    /// The synchronous stages, in order. Never panics, whatever the bytes.
    pub fn handle_fast_peer(
        &self,
        packet: &[u8],
        peer: &Peer,
        protocol: Protocol,
        received: Instant,
    ) -> Outcome {
        // Parse: the only stage that sees raw bytes. Responses and runts get silence (no
        // reflection); malformed queries get FORMERR, other opcodes NOTIMP.
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(e) => return self.malformed(packet, e),
        };
        let client = canonical(peer.addr());
        let key = &peer.key;
        let policy = self.policy.load();

        // Identify: a verified token's group claim, else the verified agent's identity
        // pattern, else the socket address picks the group (an identity wins over an address).
        // Unknown clients are refused before any other work: dnsward is never an open resolver.
        let mut ctx = Asked {
            policy: &policy,
            gid: None,
            q: &q,
            client,
            peer,
            protocol,
            received,
        };
        let Some(gid) = policy.identify(peer) else {
            return self.unknown_client(&ctx);
        };
        let Some(group) = policy.group(gid) else {
            return Outcome::Drop;
        };
        ctx.gid = Some(gid);

        // Authentication required: a member of such a group is only served with a credential,
        // so a forged UDP source cannot speak (or get anyone quarantined) in its name.
        if group.require_auth && peer.auth == AuthKind::None {
            let msg = wire::start_response(&q, rcode::REFUSED, false);
            let report = Report {
                verdict: "refuse",
                reason: &|| "group requires authentication".into(),
                cache_hit: false,
                upstream: None,
            };
            return Outcome::Reply(self.finish(&ctx, msg, &report));
        }

        // Rate limit / quarantine: keyed on the verified agent when there is one (neighbours on
        // the same host are not affected, and moving address does not escape), else on the
        // socket address. A quarantined client gets nothing but REFUSED until the quarantine
        // expires or an operator releases it.
        let gate = self.containment.check_client(key);
        if gate != ClientGate::Pass {
            return Outcome::Reply(self.refuse_contained(&ctx, gate));
        }

        // Only class IN is served; CHAOS (`version.bind`) and others are refused.
        if q.qclass != 1 {
            let msg = wire::start_response(&q, rcode::REFUSED, false);
            let report = Report {
                verdict: "refuse",
                reason: &|| "class not served".into(),
                cache_hit: false,
                upstream: None,
            };
            return Outcome::Reply(self.finish(&ctx, msg, &report));
        }

        // Policy: allow/deny for this group.
        let decision = group.decide(&q.name);

        // At most one clock reading serves the stages below (scoring windows, cache freshness,
        // TTL countdown): the detector and the cache run on this same clock. Taken on first use,
        // so a query that needs neither (denied, with scoring off) reads no clock.
        let now = LazyNow::new(&self.clock);

        // Tunnel scoring runs on every query, allowed or not: an agent trying to tunnel through
        // a name it may not resolve is still a compromised agent. It may start a containment,
        // which then applies to this very query.
        let domain = registrable_domain(&q.name);
        let assessment = if !self.detector.is_enabled()
            || self.overrides.exception_for(&group.name, &q.name).is_some()
        {
            // Scoring off, or an operator's temporary exception: not scored at all.
            crate::detect::Assessment::default()
        } else {
            self.detector.observe_at(
                &Observation {
                    client: key,
                    group: &group.name,
                    qname: &q.name,
                    domain,
                    qtype: q.qtype,
                    settings: &group.detect,
                },
                now.get(),
            )
        };
        if let Some(alert) = assessment.alert {
            let event = Event::now(policy.version.number, EventBody::Alert(alert.clone()));
            self.overrides
                .record_alert(event.ts.clone(), policy.version.number, alert);
            self.events.emit(event);
        }
        if assessment.level >= Level::Throttle && !group.detect.monitor_only {
            if let Some(started) =
                self.containment
                    .start(key, &group.name, domain, assessment.level, assessment.score)
            {
                self.events.emit(Event::now(
                    policy.version.number,
                    EventBody::ContainmentStarted(started),
                ));
            }
            let gate = self.containment.check_client(key);
            if gate == ClientGate::Quarantined {
                return Outcome::Reply(self.refuse_contained(&ctx, gate));
            }
        }
        match self.containment.check_domain(key, &group.name, domain) {
            DomainGate::Pass => {}
            DomainGate::Throttled => {
                let msg = wire::start_response(&q, rcode::REFUSED, false);
                let why = || format!("tunnel containment: {domain} throttled");
                let report = Report {
                    verdict: "throttle",
                    reason: &why,
                    cache_hit: false,
                    upstream: None,
                };
                return Outcome::Reply(self.finish(&ctx, msg, &report));
            }
            DomainGate::Sinkholed => {
                let sinkhole = BlockAnswer {
                    kind: BlockKind::Sinkhole,
                    ..group.block
                };
                let msg = sinkhole.encode(&q);
                let why = || format!("tunnel containment: {domain} sinkholed");
                let report = Report {
                    verdict: "sinkhole",
                    reason: &why,
                    cache_hit: false,
                    upstream: None,
                };
                return Outcome::Reply(self.finish(&ctx, msg, &report));
            }
        }

        if !decision.is_allowed() {
            let msg = group.block.encode(&q);
            let reason = || decision.reason();
            let report = Report {
                verdict: group.block.verdict(),
                reason: &reason,
                cache_hit: false,
                upstream: None,
            };
            return Outcome::Reply(self.finish(&ctx, msg, &report));
        }

        // Cache: a hit is served inline, after the answer check for this group.
        if let Some(hit) = self.cache.get_at(&q, now.get()) {
            self.cache_hits.increment(1);
            if self.detector.is_enabled() {
                self.detector.observe_rcode_at(
                    key,
                    domain,
                    hit.rcode == rcode::NXDOMAIN,
                    now.get(),
                );
            }
            if let Some(target) = forbidden_target(group, &hit.cname_targets) {
                return Outcome::Reply(self.block_target(&ctx, group, target, true));
            }
            let msg = hit.render(&q, now.get(), protocol.max_len(&q));
            let reason = || decision.reason();
            let report = Report {
                verdict: "allow",
                reason: &reason,
                cache_hit: true,
                upstream: Some(&hit.upstream),
            };
            return Outcome::Reply(self.finish_rendered(&ctx, msg, &report));
        }
        self.cache_misses.increment(1);
        let policy = arc_swap::Guard::into_inner(policy);
        Outcome::Resolve(Box::new(Pending {
            packet: packet.to_vec(),
            peer: peer.clone(),
            protocol,
            received,
            policy,
            group: gid,
        }))
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
            client: p.peer.addr(),
            peer: &p.peer,
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
            if let Some(target) = forbidden_target(group, &targets) {
                return Some(self.block_target(&ctx, group, target, false));
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
            let report = Report {
                verdict: "allow",
                reason: &reason,
                cache_hit: false,
                upstream: Some(&upstream),
            };
            return Some(self.finish(&ctx, msg, &report));
        }

        match policy
            .upstreams
            .resolve(&q.name, q.question, q.dnssec_ok(), q.cd)
            .await
        {
            Ok((raw, up)) => match self.cache.prepare(&raw, Arc::clone(&up.label)) {
                Ok(prepared) => {
                    self.cache.insert(&q, &prepared);
                    let nxdomain = prepared.answer.rcode == rcode::NXDOMAIN;
                    self.detector
                        .observe_rcode(&p.peer.key, registrable_domain(&q.name), nxdomain);
                    if let Some(target) = forbidden_target(group, &prepared.answer.cname_targets) {
                        return Some(self.block_target(&ctx, group, target, false));
                    }
                    let msg = prepared
                        .answer
                        .render(&q, self.cache.now(), p.protocol.max_len(&q));
                    let report = Report {
                        verdict: "allow",
                        reason: &reason,
                        cache_hit: false,
                        upstream: Some(&up.label),
                    };
                    Some(self.finish_rendered(&ctx, msg, &report))
                }
                Err(e) => {
                    let msg = wire::start_response(&q, rcode::SERVFAIL, false);
                    let why = || format!("unusable upstream answer: {e}");
                    let report = Report {
                        verdict: "servfail",
                        reason: &why,
                        cache_hit: false,
                        upstream: Some(&up.label),
                    };
                    Some(self.finish(&ctx, msg, &report))
                }
            },
            Err(e) => {
                let msg = wire::start_response(&q, rcode::SERVFAIL, false);
                let why = || e.to_string();
                let report = Report {
                    verdict: "servfail",
                    reason: &why,
                    cache_hit: false,
                    upstream: None,
                };
                Some(self.finish(&ctx, msg, &report))
            }
        }
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

    fn refuse_contained(&self, ctx: &Asked<'_, '_>, gate: ClientGate) -> Vec<u8> {
        let (verdict, why) = match gate {
            ClientGate::Quarantined => ("quarantine", "client quarantined"),
            _ => ("throttle", "client rate limit"),
        };
        let msg = wire::start_response(ctx.q, rcode::REFUSED, false);
        let reason = || why.to_string();
        let report = Report {
            verdict,
            reason: &reason,
            cache_hit: false,
            upstream: None,
        };
        self.finish(ctx, msg, &report)
    }

    fn malformed(&self, packet: &[u8], e: WireError) -> Outcome {
        let code = match e {
            WireError::TooShort | WireError::NotAQuery => {
                self.malformed_dropped.increment(1);
                return Outcome::Drop;
            }
            WireError::FormErr(_) => rcode::FORMERR,
            WireError::NotImplemented(_) => rcode::NOTIMP,
        };
        self.malformed_formerr.increment(1);
        match wire::header_only_error(packet, code) {
            Some(r) => Outcome::Reply(r),
            None => Outcome::Drop,
        }
    }

    fn unknown_client(&self, ctx: &Asked<'_, '_>) -> Outcome {
        let report = Report {
            verdict: "refuse",
            reason: &|| "unknown client".into(),
            cache_hit: false,
            upstream: None,
        };
        match self.settings.unknown_clients {
            UnknownClients::Refuse => {
                let msg = wire::start_response(ctx.q, rcode::REFUSED, false);
                Outcome::Reply(self.finish(ctx, msg, &report))
            }
            UnknownClients::Drop => {
                let report = Report {
                    verdict: "drop",
                    ..report
                };
                let _ = self.finish(ctx, Vec::new(), &report);
                Outcome::Drop
            }
        }
    }

    fn block_target(
        &self,
        ctx: &Asked<'_, '_>,
        group: &Group,
        target: &str,
        cache_hit: bool,
    ) -> Vec<u8> {
        let msg = group.block.encode(ctx.q);
        let why = || format!("CNAME target {target} not allowed");
        let report = Report {
            verdict: group.block.verdict(),
            reason: &why,
            cache_hit,
            upstream: None,
        };
        self.finish(ctx, msg, &report)
    }

    /// Finish a freshly built answer (patch ID, OPT, truncation), then account for it.
    fn finish(&self, ctx: &Asked<'_, '_>, mut msg: Vec<u8>, report: &Report<'_>) -> Vec<u8> {
        if !msg.is_empty() {
            wire::finish_response(&mut msg, ctx.q, ctx.protocol.max_len(ctx.q));
        }
        self.finish_rendered(ctx, msg, report)
    }

    /// Stage "events": count, time and (for non-allow verdicts, or when configured) log.
    fn finish_rendered(&self, ctx: &Asked<'_, '_>, msg: Vec<u8>, report: &Report<'_>) -> Vec<u8> {
        let Asked {
            policy,
            gid,
            q,
            client,
            peer,
            protocol,
            received,
        } = *ctx;
        let verdict = verdict_index(report.verdict);
        let group = gid.and_then(|g| policy.group(g));
        match gid.and_then(|g| policy.counters.get(usize::from(g))) {
            Some(c) => c.count(verdict, q.qtype),
            None => policy.unknown_counters.count(verdict, q.qtype),
        }
        let elapsed = received.elapsed();
        match protocol {
            Protocol::Udp => self.latency_udp.record(elapsed.as_secs_f64()),
            Protocol::Tcp => self.latency_tcp.record(elapsed.as_secs_f64()),
            Protocol::Dot => self.latency_dot.record(elapsed.as_secs_f64()),
            Protocol::Doh => self.latency_doh.record(elapsed.as_secs_f64()),
        }
        if self.events.is_enabled() && (report.verdict != "allow" || self.events.wants_allowed()) {
            let rc = if msg.is_empty() {
                "NONE".to_string()
            } else {
                rcode::name(u16::from(wire::rcode_of(&msg))).to_string()
            };
            let event = QueryEvent {
                client,
                agent: peer.key.agent_name().map(str::to_string),
                auth: peer.auth.as_str().to_string(),
                group: group.map(|g| g.name.to_string()),
                qname: q.name.clone(),
                qtype: wire::type_name(q.qtype),
                protocol: protocol.as_str().to_string(),
                verdict: report.verdict.to_string(),
                reason: (report.reason)(),
                rcode: rc,
                answers: wire::answer_count(&msg),
                latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                cache_hit: report.cache_hit,
                upstream: report.upstream.map(str::to_string),
            };
            self.events
                .emit(Event::now(policy.version.number, EventBody::Query(event)));
        }
        msg
    }

    /// The clock the pipeline runs on.
    #[must_use]
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }
}

/// Who asked what, how, when, and under which policy: the context every answer is accounted
/// in (metrics, latency, the query event).
#[derive(Clone, Copy)]
struct Asked<'a, 'p> {
    /// The policy that decides this query.
    policy: &'a ActivePolicy,
    /// The client's group; `None` for an unknown client.
    gid: Option<GroupId>,
    /// The query.
    q: &'a Query<'p>,
    /// Source address (canonical).
    client: IpAddr,
    /// Who asked: the address and the verified agent, if any.
    peer: &'a Peer,
    /// Transport.
    protocol: Protocol,
    /// When it was received.
    received: Instant,
}

/// One reading of the pipeline's clock, taken the first time a stage asks for it.
struct LazyNow<'a> {
    /// The clock to read.
    clock: &'a SharedClock,
    /// The reading, once taken.
    at: std::cell::Cell<Option<std::time::Duration>>,
}

impl<'a> LazyNow<'a> {
    fn new(clock: &'a SharedClock) -> Self {
        Self {
            clock,
            at: std::cell::Cell::new(None),
        }
    }

    fn get(&self) -> std::time::Duration {
        if let Some(at) = self.at.get() {
            return at;
        }
        let at = self.clock.now();
        self.at.set(Some(at));
        at
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
