//! The synchronous stages that follow identification, each a named function returning
//! [`Step::Continue`] or an answer. [`SYNC_STAGES`] is their order; the module header of
//! [`super`] says why each sits where it does.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::account::{Asked, LazyNow, Report};
use super::{Outcome, Pending, Pipeline, Protocol};
use crate::contain::{ClientGate, DomainGate};
use crate::detect::{Assessment, Level, Observation, Tracked};
use crate::events::{Event, EventBody};
use crate::identity::AuthKind;
use crate::policy::active::ActivePolicy;
use crate::policy::group::{BlockAnswer, BlockKind, Decision, Group};
use crate::policy::identify::GroupId;
use crate::policy::verdict::Verdict;
use crate::wire::{self, rcode};

/// What a stage returns: go on to the next stage, or answer with this outcome.
pub type Step = ControlFlow<Outcome>;

/// A stage: reads and may add to the query's state.
pub type SyncStage = for<'a, 'p> fn(&Pipeline, &mut Admitted<'a, 'p>) -> Step;

/// The synchronous stages after identification, in the order they run.
pub const SYNC_STAGES: [(&str, SyncStage); 11] = [
    ("authentication", Pipeline::authentication),
    ("client gate", Pipeline::client_gate),
    ("tunnel scoring", Pipeline::tunnel_scoring),
    ("edns", Pipeline::edns),
    ("class", Pipeline::class),
    ("query type", Pipeline::query_type),
    ("domain gate", Pipeline::domain_gate),
    ("encrypted-dns bypass", Pipeline::encrypted_dns),
    ("policy", Pipeline::policy_decision),
    ("recursion desired", Pipeline::recursion_desired),
    ("cache", Pipeline::cache_lookup),
];

/// The stages that refuse a query for what it is (its EDNS version, class or type): its name
/// goes to no upstream for anyone, so the pipeline marks it undelivered for the next asker's
/// scoring ([`crate::detect::Detector::undelivered`]). The containment gates mark their own.
pub const REFUSE_FOR_WHAT_IT_IS: [&str; 3] = ["edns", "class", "query type"];

/// A query from a known client as it moves through the synchronous stages.
pub struct Admitted<'a, 'p> {
    /// Who asked what, for accounting.
    pub(super) asked: Asked<'a, 'p>,
    /// The client's group.
    pub(super) group: &'a Group,
    /// Its id, and the policy as shared, for work that outlives this call.
    pub(super) gid: GroupId,
    /// The policy that decides this query, shareable.
    pub(super) shared: &'a Arc<ActivePolicy>,
    /// The registrable domain of the name (borrowed from it).
    pub(super) domain: &'a str,
    /// At most one clock reading serves the stages (scoring windows, cache freshness, TTL
    /// countdown), taken on first use: a query that needs neither reads no clock.
    pub(super) now: LazyNow<'a>,
    /// The policy decision, once the policy stage has allowed the name.
    pub(super) decision: Option<Decision<'a>>,
    /// The detector states tunnel scoring updated, for the cache hit's rcode.
    pub(super) tracked: Option<Tracked>,
}

impl Pipeline {
    /// Authentication: a member of a `require_auth` group is served only with a credential
    /// (mTLS or a token), so a forged UDP source cannot speak, or get anyone contained, in its
    /// name.
    fn authentication(&self, a: &mut Admitted<'_, '_>) -> Step {
        if !a.group.require_auth || a.asked.peer.auth != AuthKind::None {
            return Step::Continue(());
        }
        let msg = wire::start_response(a.asked.q, rcode::REFUSED, false);
        let report = Report::new(Verdict::Refuse, &|| "group requires authentication".into());
        Step::Break(Outcome::Reply(self.finish(&a.asked, msg, &report)))
    }

    /// Client gate: rate limit and quarantine, keyed on the socket address alone. A
    /// quarantined client gets REFUSED until the quarantine expires or is released.
    fn client_gate(&self, a: &mut Admitted<'_, '_>) -> Step {
        match self.containment.check_client(&a.asked.peer.key) {
            ClientGate::Pass => Step::Continue(()),
            gate => Step::Break(Outcome::Reply(self.refuse_contained(&a.asked, gate))),
        }
    }

    /// EDNS: a query whose OPT record asks for an EDNS version above 0 gets BADVERS with our
    /// OPT record (version 0) and nothing else (RFC 6891 §6.1.3), so the client can retry with
    /// a version we speak. Over TCP and DoT, an edns-tcp-keepalive option with data (a TIMEOUT,
    /// which only servers send: RFC 7828 §3.2.1) gets FORMERR, as from Unbound; over UDP and
    /// DoH the option is ignored. It comes after identification and the client gate: a source
    /// in no group, a member without a required credential, or a contained client is refused
    /// (or dropped) whatever it sends, and learns nothing about what this server speaks.
    fn edns(&self, a: &mut Admitted<'_, '_>) -> Step {
        let Some(edns) = a.asked.q.edns else {
            return Step::Continue(());
        };
        if edns.version > 0 {
            let version = edns.version;
            let why = || format!("EDNS version {version} not supported");
            return Step::Break(Outcome::Reply(self.protocol_error(
                &a.asked,
                rcode::BADVERS,
                &why,
            )));
        }
        if edns.keepalive == wire::Keepalive::WithData
            && matches!(a.asked.protocol, Protocol::Tcp | Protocol::Dot)
        {
            let why = || "edns-tcp-keepalive option with data in a query".to_string();
            return Step::Break(Outcome::Reply(self.protocol_error(
                &a.asked,
                u16::from(rcode::FORMERR),
                &why,
            )));
        }
        Step::Continue(())
    }

    /// Class: only class IN is served; CHAOS (`version.bind`) and others are refused.
    fn class(&self, a: &mut Admitted<'_, '_>) -> Step {
        if a.asked.q.qclass == 1 {
            return Step::Continue(());
        }
        let msg = wire::start_response(a.asked.q, rcode::REFUSED, false);
        let report = Report::new(Verdict::Refuse, &|| "class not served".into()).ede(wire::Ede {
            code: wire::ede::NOT_SUPPORTED,
            text: "only class IN is served",
        });
        Step::Break(Outcome::Reply(self.finish(&a.asked, msg, &report)))
    }

    /// Query type: zone transfers (AXFR, IXFR) are not served, whatever the name: REFUSED, never
    /// forwarded, never answered from a local zone. The obsolete MAILA and MAILB get NOTIMP.
    /// Meta types that exist only inside messages (OPT, TKEY, TSIG and the unassigned meta range
    /// 128–248, RFC 6895 §3.1) cannot be asked for: FORMERR, as Unbound and BIND answer.
    fn query_type(&self, a: &mut Admitted<'_, '_>) -> Step {
        let q = a.asked.q;
        let msg = match q.qtype {
            wire::rtype::OPT | wire::rtype::TKEY | wire::rtype::TSIG | 128..=248 => {
                let why = || format!("meta type {} cannot be asked for", wire::type_name(q.qtype));
                self.protocol_error(&a.asked, u16::from(rcode::FORMERR), &why)
            }
            wire::rtype::AXFR | wire::rtype::IXFR => {
                let msg = wire::start_response(q, rcode::REFUSED, false);
                let why = || format!("zone transfer ({}) not served", wire::type_name(q.qtype));
                let report = Report::new(Verdict::Refuse, &why).ede(wire::Ede {
                    code: wire::ede::NOT_SUPPORTED,
                    text: "zone transfers are not served",
                });
                self.finish(&a.asked, msg, &report)
            }
            wire::rtype::MAILA | wire::rtype::MAILB => {
                let why = || format!("query type {} not implemented", wire::type_name(q.qtype));
                self.protocol_error(&a.asked, u16::from(rcode::NOTIMP), &why)
            }
            _ => return Step::Continue(()),
        };
        Step::Break(Outcome::Reply(msg))
    }

    /// Tunnel scoring on every query, allowed or not, and whatever its class, type or EDNS
    /// version: a name sent in a class or type that is refused below carries nothing out, but
    /// an agent sending encoded names that way is still trying to tunnel. It may start a
    /// containment, which then applies to this very query.
    fn tunnel_scoring(&self, a: &mut Admitted<'_, '_>) -> Step {
        let Admitted {
            asked,
            group,
            domain,
            ..
        } = a;
        let q = asked.q;
        let (assessment, tracked) = if !self.detector.is_enabled()
            || self.overrides.exception_for(&group.name, &q.name).is_some()
        {
            // Scoring off, or an operator's temporary exception: not scored at all.
            (Assessment::default(), None)
        } else {
            self.detector.observe_tracked_at(
                &Observation {
                    client: &asked.peer.key,
                    group: &group.name,
                    qname: &q.name,
                    domain,
                    qtype: q.qtype,
                    settings: &group.detect,
                },
                a.now.get(),
            )
        };
        a.tracked = tracked;
        let asked = &a.asked;
        let group = a.group;
        let domain = a.domain;
        let version = asked.policy.version.number;
        // Only evidence from a proven source address may cut a whole client off: a forged UDP
        // source could otherwise get a victim quarantined. Spoofable evidence still sinkholes
        // the offending domain for that address.
        let level = if assessment.level == Level::Quarantine && !asked.verified {
            Level::Sinkhole
        } else {
            assessment.level
        };
        if let Some(mut alert) = assessment.alert {
            // The alert says what is done, not what the score alone would have done.
            if !group.detect.monitor_only && alert.action == Level::Quarantine.as_str() {
                alert.action = level.as_str().to_string();
            }
            metrics::counter!(
                crate::metrics::ALERTS_TOTAL,
                "group" => group.name.to_string(),
                "action" => alert.action.clone()
            )
            .increment(1);
            let event = Event::now(version, EventBody::Alert((*alert).clone()));
            self.overrides
                .record_alert(event.ts.clone(), version, *alert);
            self.events.emit(event);
        }
        if level >= Level::Throttle && !group.detect.monitor_only {
            // Contained where the evidence was scored: a reverse name's network zone (the /16,
            // the IPv6 /32), not its first octet's registrable domain, which would sinkhole a
            // whole /8 for one network's evidence.
            if let Some(started) = self.containment.start(
                &asked.peer.key,
                &group.name,
                crate::detect::addresses::detection_zone(&asked.q.name, domain),
                level,
                assessment.score,
            ) {
                self.events
                    .emit(Event::now(version, EventBody::ContainmentStarted(started)));
            }
            let gate = self.containment.check_client(&asked.peer.key);
            if gate == ClientGate::Quarantined {
                if let Some(tracked) = &a.tracked {
                    self.detector.undelivered(tracked);
                }
                return Step::Break(Outcome::Reply(self.refuse_contained(asked, gate)));
            }
        }
        Step::Continue(())
    }

    /// Domain gate: a throttled (client, domain) is refused, a sinkholed one gets the sinkhole.
    fn domain_gate(&self, a: &mut Admitted<'_, '_>) -> Step {
        if self.containment.is_idle() {
            return Step::Continue(());
        }
        let q = a.asked.q;
        let domain = crate::detect::addresses::detection_zone(&q.name, a.domain);
        let gate = self
            .containment
            .check_domain(&a.asked.peer.key, &a.group.name, domain);
        if gate == DomainGate::Pass {
            return Step::Continue(());
        }
        // Contained: the name goes to no upstream, so it is not "asked by another client" for
        // the next asker's scoring ([`crate::detect::Detector::undelivered`]); else a contained
        // agent could ask each name first and a clean one ask it next, unpriced.
        if let Some(tracked) = &a.tracked {
            self.detector.undelivered(tracked);
        }
        let (verdict, msg) = match gate {
            DomainGate::Pass => return Step::Continue(()),
            DomainGate::Throttled => (
                Verdict::Throttle,
                wire::start_response(q, rcode::REFUSED, false),
            ),
            DomainGate::Sinkholed => {
                let sinkhole = BlockAnswer {
                    kind: BlockKind::Sinkhole,
                    ..a.group.block
                };
                (Verdict::Sinkhole, sinkhole.encode(q))
            }
        };
        let action = if verdict == Verdict::Sinkhole {
            "sinkholed"
        } else {
            "throttled"
        };
        let why = || format!("containment: {domain} {action}");
        let report = Report::new(verdict, &why);
        Step::Break(Outcome::Reply(self.finish(&a.asked, msg, &report)))
    }

    /// Encrypted-DNS bypass (with `[egress]` only): canaries and public resolver names get
    /// NXDOMAIN whatever the group's policy allows.
    fn encrypted_dns(&self, a: &mut Admitted<'_, '_>) -> Step {
        let Some(bypass) = self.egress.get().and_then(|h| h.bypass(&a.asked.q.name)) else {
            return Step::Continue(());
        };
        Step::Break(Outcome::Reply(
            self.encrypted_dns_bypass(&a.asked, a.group, bypass, &a.now),
        ))
    }

    /// Policy: the group's allow/deny decision; a denied name gets the group's block answer.
    fn policy_decision(&self, a: &mut Admitted<'_, '_>) -> Step {
        let decision = a.group.decide_in(&a.asked.policy.zones, &a.asked.q.name);
        if decision.is_allowed() {
            a.decision = Some(decision);
            return Step::Continue(());
        }
        // Not allowed itself but above allowed names (`corp.internal` under `*.corp.internal`,
        // `org` under `pypi.org`, the root): NODATA, since an NXDOMAIN would say nothing
        // exists below it (RFC 8020). Deny rules and other block kinds answer as configured.
        let msg = if matches!(decision, Decision::Block { rule: None })
            && a.group.block.kind == BlockKind::Nxdomain
            && a.group.allow_ancestors.hold(&a.asked.q.name)
        {
            a.group.block.encode_nodata(a.asked.q)
        } else {
            a.group.block.encode(a.asked.q)
        };
        let reason = || decision.reason();
        let report = Report::new(a.group.block.verdict(), &reason);
        Step::Break(Outcome::Reply(self.finish(&a.asked, msg, &report)))
    }

    /// Recursion desired: a query with RD clear is answered only from the local zones (built-in
    /// ones included); for any other name it is REFUSED with EDE 20, as Unbound's `allow`
    /// refuses it. The cache is shared by every group, and an RD=0 lookup is how one agent
    /// would learn, without leaving a trace upstream, which names the others resolved.
    fn recursion_desired(&self, a: &mut Admitted<'_, '_>) -> Step {
        let q = a.asked.q;
        if q.rd || a.asked.policy.zones.serves_question(&q.name, q.qtype) {
            return Step::Continue(());
        }
        let msg = wire::start_response(q, rcode::REFUSED, false);
        let why = || "recursion not desired (RD clear) for a name outside the local zones".into();
        let report = Report::new(Verdict::Refuse, &why).ede(wire::Ede {
            code: wire::ede::NOT_AUTHORITATIVE,
            text: "recursion not desired",
        });
        Step::Break(Outcome::Reply(self.finish(&a.asked, msg, &report)))
    }

    /// Cache: a hit is served inline, after the answer check for this group.
    fn cache_lookup(&self, a: &mut Admitted<'_, '_>) -> Step {
        let q = a.asked.q;
        let Some(hit) = self.cache.get_at(q, a.now.get()) else {
            return Step::Continue(());
        };
        self.cache_hits.increment(1);
        if let Some(tracked) = &a.tracked {
            self.detector
                .observe_rcode_tracked(tracked, hit.rcode == rcode::NXDOMAIN, a.now.get());
        } else if self.detector.is_enabled() {
            self.detector.observe_rcode_at(
                &a.asked.peer.key,
                &q.name,
                a.domain,
                hit.rcode == rcode::NXDOMAIN,
                a.now.get(),
            );
        }
        if let Some(problem) = self.check_answer(a.asked.policy, a.group, &q.name, &hit) {
            return Step::Break(Outcome::Reply(
                self.block_answer(&a.asked, a.group, problem, true),
            ));
        }
        let msg = hit.render(q, a.now.get(), a.asked.protocol.max_len(q));
        let reason = || {
            a.decision
                .as_ref()
                .map(Decision::reason)
                .unwrap_or_default()
        };
        let report = Report::new(Verdict::Allow, &reason)
            .cached(true)
            .via(&hit.upstream);
        let msg = self.finish_rendered(&a.asked, msg, &report);
        // Egress: cache hits refresh the group's set too. Addresses already promised long
        // enough cost a map lookup; only a new or extended element makes this hit wait (off
        // the UDP loop, as a task) for its batch, bounded by `max_wait`.
        Step::Break(match self.egress_admit(a.group, &msg) {
            None => Outcome::Reply(msg),
            Some(wait) => Outcome::Resolve(Box::new(Pending {
                packet: Vec::new(),
                peer: a.asked.peer.clone(),
                protocol: a.asked.protocol,
                received: a.asked.received,
                policy: Arc::clone(a.shared),
                group: a.gid,
                held: Some((msg, wait)),
                _permit: None,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{REFUSE_FOR_WHAT_IT_IS, SYNC_STAGES};

    /// The stages whose refusals are marked undelivered are stages by those names, before the
    /// domain gate (a rename would otherwise drop the mark silently).
    #[test]
    fn the_stages_marked_undelivered_are_stages_before_the_gate() {
        let at = |n: &str| SYNC_STAGES.iter().position(|(s, _)| *s == n);
        let gate = at("domain gate").expect("the domain gate");
        for name in REFUSE_FOR_WHAT_IT_IS {
            assert!(at(name).is_some_and(|i| i < gate), "{name}");
        }
    }

    /// The pipeline's module header lists the stages; it must match the code exactly.
    #[test]
    fn the_module_header_names_the_stages_in_code_order() {
        let header: String = include_str!("mod.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut from = 0;
        for (i, (name, _)) in SYNC_STAGES.iter().enumerate() {
            let needle = format!("{}. **{name}**", i + 1);
            let at = header[from..]
                .find(&needle)
                .unwrap_or_else(|| panic!("header does not list stage {needle:?} in order"));
            from += at + needle.len();
        }
        assert!(
            !header[from..].contains(&format!("{}. **", SYNC_STAGES.len() + 1)),
            "header lists more stages than SYNC_STAGES"
        );
    }
}
