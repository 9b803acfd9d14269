//! Accounting, the last stage every answer passes: count it in
//! `dnsward_queries_total{group,verdict,qtype}`, time it, and log it as an event (every verdict
//! but `allow`, or allowed ones when configured; for unknown clients, the first
//! `[events] unknown_client_per_minute` per source per minute). Also the answers that several stages give
//! (refusals, block answers for CNAME targets, malformed packets, unknown clients), so each is
//! built and accounted in one place.

use std::net::IpAddr;
use std::time::Instant;

use super::{Outcome, Pipeline, Protocol, UnknownClients};
use crate::clock::SharedClock;
use crate::contain::ClientGate;
use crate::events::{Event, EventBody, QueryEvent};
use crate::identity::Peer;
use crate::policy::active::ActivePolicy;
use crate::policy::answer_check::AnswerProblem;
use crate::policy::group::Group;
use crate::policy::identify::GroupId;
use crate::policy::verdict::Verdict;
use crate::resolve::cache::CacheKeyRef;
use crate::wire::{self, Query, WireError, rcode};

/// What the stage that answered reports about the answer, for metrics and the event.
pub(super) struct Report<'a> {
    /// The outcome.
    verdict: Verdict,
    /// Why, rendered only when an event is written.
    reason: &'a dyn Fn() -> String,
    /// Served from the cache.
    cache_hit: bool,
    /// Where the answer came from (upstream label or `zone:<name>`).
    upstream: Option<&'a str>,
    /// The rcode with its extended bits, when the header's 4 bits do not tell it (BADVERS).
    rcode: Option<u16>,
    /// The Extended DNS Error the answer carries, when not the verdict's own
    /// ([`Report::default_ede`]).
    ede: Option<wire::Ede>,
}

impl<'a> Report<'a> {
    /// A report of `verdict` for `reason`, not from the cache, from no upstream.
    pub(super) fn new(verdict: Verdict, reason: &'a dyn Fn() -> String) -> Self {
        Self {
            verdict,
            reason,
            cache_hit: false,
            upstream: None,
            rcode: None,
            ede: Self::default_ede(verdict),
        }
    }

    /// What an answer of `verdict` tells an EDNS client (RFC 8914): a policy block, a
    /// sinkhole's forged address, a refusal of this client.
    fn default_ede(verdict: Verdict) -> Option<wire::Ede> {
        use wire::{Ede, ede};
        let (code, text) = match verdict {
            Verdict::Block => (ede::BLOCKED, "blocked by policy"),
            Verdict::Sinkhole => (ede::FORGED_ANSWER, "sinkholed by policy"),
            Verdict::Throttle => (ede::BLOCKED, "rate limited"),
            Verdict::Quarantine => (ede::PROHIBITED, "client quarantined"),
            Verdict::Refuse => (ede::PROHIBITED, ""),
            _ => return None,
        };
        Some(Ede { code, text })
    }

    /// The answer carries `ede` instead of the verdict's own Extended DNS Error.
    pub(super) fn ede(mut self, ede: wire::Ede) -> Self {
        self.ede = Some(ede);
        self
    }

    /// The answer's full rcode is `rcode` (extended bits included).
    pub(super) fn rcode(mut self, rcode: u16) -> Self {
        self.rcode = Some(rcode);
        self
    }

    /// Whether the answer came from the cache.
    pub(super) fn cached(mut self, cache_hit: bool) -> Self {
        self.cache_hit = cache_hit;
        self
    }

    /// The answer came from `upstream`.
    pub(super) fn via(mut self, upstream: &'a str) -> Self {
        self.upstream = Some(upstream);
        self
    }
}

impl Pipeline {
    pub(super) fn refuse_contained(&self, ctx: &Asked<'_, '_>, gate: ClientGate) -> Vec<u8> {
        let (verdict, why) = match gate {
            ClientGate::Quarantined => (Verdict::Quarantine, "client quarantined"),
            _ => (Verdict::Throttle, "client rate limit"),
        };
        let msg = wire::start_response(ctx.q, rcode::REFUSED, false);
        let reason = || why.to_string();
        let report = Report::new(verdict, &reason);
        self.finish(ctx, msg, &report)
    }

    /// The answer to a packet that did not parse as a query; RA set for a client of ours
    /// (`known`), as on all its answers.
    pub(super) fn malformed(&self, packet: &[u8], e: WireError, known: bool) -> Outcome {
        let code = match e {
            WireError::TooShort | WireError::NotAQuery => {
                self.malformed_dropped.increment(1);
                return Outcome::Drop;
            }
            WireError::FormErr(_) => rcode::FORMERR,
            // A NOTIFY (RFC 1996) is understood, but this server is no secondary to be told of
            // a zone's change: REFUSED, as from Unbound. UPDATE, STATUS, IQUERY and the
            // unassigned opcodes: NOTIMP.
            WireError::NotImplemented(wire::opcode::NOTIFY) => rcode::REFUSED,
            WireError::NotImplemented(_) => rcode::NOTIMP,
        };
        self.malformed_formerr.increment(1);
        match wire::header_only_error(packet, code, known) {
            Some(r) => Outcome::Reply(r),
            None => Outcome::Drop,
        }
    }

    /// A known client's well-formed query that is answered with a protocol error (`code`:
    /// BADVERS, NOTIMP, FORMERR for a keepalive option with data): counted with the malformed
    /// packets (`action="formerr"`), and accounted and logged with verdict `formerr`, like a
    /// FORMERR.
    pub(super) fn protocol_error(
        &self,
        ctx: &Asked<'_, '_>,
        code: u16,
        why: &dyn Fn() -> String,
    ) -> Vec<u8> {
        let mut msg = wire::start_response(ctx.q, (code & 0x0F) as u8, false);
        wire::finish_response(&mut msg, ctx.q, ctx.protocol.max_len(ctx.q));
        // The high bits live in the OPT record finish_response appended: BADVERS is only given
        // to queries that had one.
        wire::set_extended_rcode(&mut msg, code);
        self.malformed_formerr.increment(1);
        let report = Report::new(Verdict::Formerr, why).rcode(code);
        self.finish_rendered(ctx, msg, &report)
    }

    pub(super) fn unknown_client(&self, ctx: &Asked<'_, '_>) -> Outcome {
        let reason = || "unknown client".to_string();
        match self.settings.unknown_clients {
            UnknownClients::Refuse => {
                let mut msg = wire::start_response(ctx.q, rcode::REFUSED, false);
                // Recursion is not available to this client (as BIND answers a client its ACLs
                // refuse).
                wire::clear_recursion_available(&mut msg);
                Outcome::Reply(self.finish(ctx, msg, &Report::new(Verdict::Refuse, &reason)))
            }
            UnknownClients::Drop => {
                let _ = self.finish(ctx, Vec::new(), &Report::new(Verdict::Drop, &reason));
                Outcome::Drop
            }
        }
    }

    /// SERVFAIL at once, with EDE 13 (Cached Error, RFC 8914 §4.14), for a question whose
    /// resolution failed within `[upstream] failure_ttl` (RFC 9520); `None` for any other.
    /// Kept out of line: the miss path that finds no recent failure stays as small as it was.
    #[inline(never)]
    pub(super) fn failure_cached(&self, ctx: &Asked<'_, '_>, now: &LazyNow<'_>) -> Option<Vec<u8>> {
        let kind = self.failures.get(CacheKeyRef::of(ctx.q), now.get())?;
        let msg = wire::start_response(ctx.q, rcode::SERVFAIL, false);
        let why = || format!("failure cached: {}", kind.as_str());
        // A cache hit in the event (so it never folds into the line of the failure it
        // repeats), though not in `dnsward_cache_hits_total`, which counts answers.
        let report = Report::new(Verdict::Servfail, &why)
            .cached(true)
            .ede(wire::Ede {
                code: wire::ede::CACHED_ERROR,
                text: "resolution failed recently",
            });
        Some(self.finish(ctx, msg, &report))
    }

    /// The group's block answer for an answer that failed the answer check.
    pub(super) fn block_answer(
        &self,
        ctx: &Asked<'_, '_>,
        group: &Group,
        problem: AnswerProblem<'_>,
        cache_hit: bool,
    ) -> Vec<u8> {
        let msg = group.block.encode(ctx.q);
        let why = || problem.to_string();
        let report = Report::new(group.block.verdict(), &why).cached(cache_hit);
        self.finish(ctx, msg, &report)
    }

    /// Egress: the set update an allowed answer needs, if any (`None` when the group is not
    /// gated or every address is already in its set for long enough).
    pub(super) fn egress_admit(&self, group: &Group, msg: &[u8]) -> Option<crate::egress::Wait> {
        if !group.egress {
            return None;
        }
        self.egress.get()?.gate.admit(&group.name, msg)
    }

    /// Egress for the asynchronous paths: wait (boundedly) for the update, then hand the answer
    /// back to be sent.
    pub(super) async fn egress_admitted(&self, group: &Group, msg: Vec<u8>) -> Vec<u8> {
        if let Some(wait) = self.egress_admit(group, &msg) {
            let _ = wait.done().await;
        }
        msg
    }

    /// Answer a canary or a public encrypted-DNS resolver name with NXDOMAIN; resolver names also
    /// raise an alert (quieted per client and name).
    pub(super) fn encrypted_dns_bypass(
        &self,
        ctx: &Asked<'_, '_>,
        group: &Group,
        bypass: crate::egress::bypass::Bypass<'_>,
        now: &LazyNow<'_>,
    ) -> Vec<u8> {
        use crate::egress::bypass::Bypass;
        if matches!(bypass, Bypass::Resolver(_))
            && self.egress.get().is_some_and(|h| {
                h.encrypted_dns
                    .as_ref()
                    .is_some_and(|e| e.should_alert(ctx.client, &ctx.q.name, now.get()))
            })
        {
            let alert = crate::events::AlertEvent {
                client: ctx.client,
                agent: ctx.peer.key.agent_name().map(str::to_string),
                group: group.name.to_string(),
                domain: ctx.q.name.clone(),
                score: 100,
                breakdown: std::collections::BTreeMap::from([(
                    "encrypted_dns_bypass".to_string(),
                    100.0,
                )]),
                window: crate::events::WindowCounts::default(),
                samples: vec![ctx.q.name.clone()],
                bytes_estimate: 0,
                volume: None,
                action: "block".into(),
                monitor_only: false,
                exception: None,
            };
            self.events.emit(Event::now(
                ctx.policy.version.number,
                EventBody::Alert(alert),
            ));
        }
        let msg = wire::start_response(ctx.q, rcode::NXDOMAIN, false);
        let why = || bypass.reason();
        self.finish(ctx, msg, &Report::new(Verdict::Block, &why))
    }

    /// Finish a freshly built answer (patch ID, OPT, truncation), then account for it.
    pub(super) fn finish(
        &self,
        ctx: &Asked<'_, '_>,
        mut msg: Vec<u8>,
        report: &Report<'_>,
    ) -> Vec<u8> {
        if !msg.is_empty() {
            let max_len = ctx.protocol.max_len(ctx.q);
            wire::finish_response_with(&mut msg, ctx.q, max_len, report.ede);
        }
        self.finish_rendered(ctx, msg, report)
    }

    /// Stage "events": count, time and (for non-allow verdicts, or when configured) log.
    pub(super) fn finish_rendered(
        &self,
        ctx: &Asked<'_, '_>,
        msg: Vec<u8>,
        report: &Report<'_>,
    ) -> Vec<u8> {
        let Asked {
            policy,
            gid,
            q,
            client,
            peer,
            protocol,
            received,
            ..
        } = *ctx;
        let verdict = report.verdict;
        let group = gid.and_then(|g| policy.group(g));
        match gid.and_then(|g| policy.counters.get(usize::from(g))) {
            Some(c) => c.count(verdict, q.qtype),
            None => policy.unknown_counters.count(verdict, q.qtype),
        }
        if ctx.timed {
            let elapsed = received.elapsed().as_secs_f64();
            match protocol {
                Protocol::Udp => self.latency_udp.record(elapsed),
                Protocol::Tcp => self.latency_tcp.record(elapsed),
                Protocol::Dot => self.latency_dot.record(elapsed),
                Protocol::Doh => self.latency_doh.record(elapsed),
            }
        }
        // Unknown sources are sampled per source and minute: anyone can send from an address no
        // group owns, and a flood of those must not push real evidence out of the log.
        let log = self.events.is_enabled()
            && match gid {
                None => self
                    .events
                    .wants_unknown_client(client, self.clock.at(received)),
                Some(_) => verdict != Verdict::Allow || self.events.wants_allowed(),
            };
        if log {
            let rc = if msg.is_empty() {
                None
            } else {
                Some(
                    report
                        .rcode
                        .unwrap_or_else(|| u16::from(wire::rcode_of(&msg))),
                )
            };
            // Everything that makes two query lines identical but their time: repeats of it
            // within `[events] aggregate_interval` are folded into one line with a count. The
            // hasher is seeded per process (a fixed seed would let a client compute names whose
            // lines fold into another query's); each field is one write, the small ones packed
            // into one word with the variable-length fields' lengths, so no two different
            // field lists write the same bytes.
            let key = {
                use std::hash::{BuildHasher, Hasher};
                let agent = peer.key.agent_name();
                let mut h = self.fold_seed.build_hasher();
                match client {
                    std::net::IpAddr::V4(a) => h.write_u32(a.to_bits()),
                    std::net::IpAddr::V6(a) => h.write_u128(a.to_bits()),
                }
                h.write(q.name.as_bytes());
                h.write(agent.unwrap_or_default().as_bytes());
                h.write(report.upstream.unwrap_or_default().as_bytes());
                let lengths = q.name.len() as u64
                    | (agent.map_or(0, |a| a.len() as u64 + 1) << 16)
                    | (report.upstream.map_or(0, |u| u.len() as u64 + 1) << 32)
                    | ((protocol as u64) << 48)
                    | (u64::from(client.is_ipv6()) << 56);
                let small = u64::from(q.qtype)
                    | (u64::from(gid.map_or(u16::MAX, |g| g)) << 16)
                    | (u64::from(rc.map_or(u16::MAX, |r| r)) << 32)
                    | ((verdict.index() as u64) << 48)
                    | (u64::from(report.cache_hit) << 56);
                h.write_u64(lengths);
                h.write_u64(small);
                h.write_u64(policy.version.number);
                h.finish()
            };
            let build = || {
                let elapsed = received.elapsed();
                let event = QueryEvent {
                    client,
                    agent: peer.key.agent_name().map(str::to_string),
                    auth: peer.auth.as_str().to_string(),
                    group: group.map(|g| g.name.to_string()),
                    qname: q.name.to_string(),
                    qtype: wire::type_name(q.qtype),
                    protocol: protocol.as_str().to_string(),
                    verdict: verdict.as_str().to_string(),
                    reason: (report.reason)(),
                    rcode: rc.map_or_else(|| "NONE".to_string(), |rc| rcode::name(rc).to_string()),
                    answers: wire::answer_count(&msg),
                    latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                    cache_hit: report.cache_hit,
                    upstream: report.upstream.map(str::to_string),
                    count: 1,
                };
                Event::now(policy.version.number, EventBody::Query(event))
            };
            self.events.emit_query(key, received, build);
        }
        msg
    }
}

/// Who asked what, how, when, and under which policy: the context every answer is accounted
/// in (metrics, latency, the query event).
#[derive(Clone, Copy)]
pub(super) struct Asked<'a, 'p> {
    /// The policy that decides this query.
    pub(super) policy: &'a ActivePolicy,
    /// The client's group; `None` for an unknown client.
    pub(super) gid: Option<GroupId>,
    /// The query.
    pub(super) q: &'a Query<'p>,
    /// Source address (canonical).
    pub(super) client: IpAddr,
    /// Who asked: the address and the verified agent, if any.
    pub(super) peer: &'a Peer,
    /// Transport.
    pub(super) protocol: Protocol,
    /// When it was received.
    pub(super) received: Instant,
    /// Whether the source address is proven (TCP, a valid DNS Cookie): only such evidence
    /// may quarantine a whole client.
    pub(super) verified: bool,
    /// Whether the answer's latency is recorded when it is accounted (false: the UDP listener
    /// times its whole batch).
    pub(super) timed: bool,
}

/// One reading of the pipeline's clock, taken the first time a stage asks for it: the clock's
/// value at the moment the query was received (no clock read for the real clock).
pub(super) struct LazyNow<'a> {
    /// The clock to read.
    clock: &'a SharedClock,
    /// When the query was received.
    received: Instant,
    /// The reading, once taken.
    at: std::cell::Cell<Option<std::time::Duration>>,
}

impl<'a> LazyNow<'a> {
    pub(super) fn new(clock: &'a SharedClock, received: Instant) -> Self {
        Self {
            clock,
            received,
            at: std::cell::Cell::new(None),
        }
    }

    pub(super) fn get(&self) -> std::time::Duration {
        if let Some(at) = self.at.get() {
            return at;
        }
        let at = self.clock.at(self.received);
        self.at.set(Some(at));
        at
    }
}
