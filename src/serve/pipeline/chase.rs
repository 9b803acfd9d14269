//! A local zone's CNAME whose target is outside that zone, or a forwarded answer whose chain
//! its upstream left open: the rest of the chain.
//!
//! A local zone answers like an authoritative server and chases a CNAME only inside its own
//! zone. To its clients, though, dnsward is the recursive resolver (RA set): a stub asking
//! `registry.corp.internal` that gets only `registry.corp.internal CNAME
//! mirror.vendor.example` has no address and asks no one else (glibc does not follow a CNAME
//! with another query). So, as Unbound does for local data with a CNAME, the target is resolved
//! here: from another local zone, or through the cache and the upstreams, and its records are
//! appended; the answer's rcode is the last link's (RFC 6604). A target outside every local
//! zone is a miss like any other: the failures remembered are consulted first (a target that
//! just failed is answered SERVFAIL at once, EDE 13, not asked again on every query of the
//! alias, RFC 9520), and its upstream exchange is shared with every identical question in
//! flight, the alias's other queries and the target's own.
//!
//! A query with RD clear (RFC 1034 §4.3.1) gets the chain only as far as the local zones go:
//! its targets are not looked up in the shared cache or forwarded.
//!
//! Every target on the way must be a name the client's group may resolve (the answer check's
//! CNAME rule), and a forwarded answer for it goes through the same address check as any other
//! forwarded answer. The chain is bounded by [`MAX_CNAME_CHAIN`] links in all.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::{Fetched, Pending, Pipeline};
use crate::policy::active::ActivePolicy;
use crate::policy::answer_check::{AnswerProblem, AnswerSource, check_answer};
use crate::policy::group::Group;
use crate::resolve::cache::CacheKeyRef;
use crate::resolve::failures::FailureKind;
use crate::resolve::zones::MAX_CNAME_CHAIN;
use crate::wire::{self, Query};

/// Why a chase ended without completing the chain.
#[derive(Debug)]
pub(super) enum ChaseStop {
    /// A target on the way is one the group may not resolve.
    Forbidden(String),
    /// A forwarded answer for a target holds an internal address.
    Private(IpAddr),
    /// The target's resolution failed.
    Failed(Arc<str>),
    /// No upstream answered for the target (EDE 22 with this text, as for an ordinary miss).
    Unreachable(Arc<str>, &'static str),
    /// The target's resolution failed a moment ago and is not asked again yet (RFC 9520).
    FailureCached(FailureKind),
}

impl std::fmt::Display for ChaseStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self, self.problem()) {
            (_, Some(problem)) => write!(f, "{problem}"),
            (Self::Failed(why) | Self::Unreachable(why, _), None) => write!(f, "{why}"),
            (Self::FailureCached(kind), None) => write!(f, "failure cached: {}", kind.as_str()),
            _ => Ok(()),
        }
    }
}

impl ChaseStop {
    /// The answer check's problem, for the block answer.
    pub(super) fn problem(&self) -> Option<AnswerProblem<'_>> {
        match self {
            Self::Forbidden(t) => Some(AnswerProblem::ForbiddenTarget(t)),
            Self::Private(ip) => Some(AnswerProblem::PrivateAddress(*ip)),
            Self::Failed(_) | Self::Unreachable(..) | Self::FailureCached(_) => None,
        }
    }
}

/// Whether `m`'s CNAME chain is open: [`open_target`] has a target, and no SOA says the name
/// at its end has no data of the type (a NODATA after the chain is a complete answer).
pub(super) fn is_open(m: &Message, qtype: RecordType) -> bool {
    open_target(m, qtype).is_some()
        && !m
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
}

/// The target `m`'s chain stopped at, if it must be chased: a NOERROR answer to a question of
/// another type than CNAME (or ANY), whose last record is a CNAME that nothing in the answer
/// answers.
fn open_target(m: &Message, qtype: RecordType) -> Option<Name> {
    if m.metadata.response_code != ResponseCode::NoError
        || matches!(qtype, RecordType::CNAME | RecordType::ANY)
    {
        return None;
    }
    let RData::CNAME(c) = &m.answers.last()?.data else {
        return None;
    };
    let target = c.0.clone();
    let answered = m.answers.iter().any(|r| r.name == target);
    (!answered).then_some(target)
}

/// The target [`chase_local_cname`](Pipeline::chase_local_cname) follows next, `None` when the
/// chain is complete; a chain whose last CNAME points back at a name on it is a loop.
fn next_link(m: &Message, qtype: RecordType) -> Result<Option<Name>, ChaseStop> {
    if let Some(target) = open_target(m, qtype) {
        return Ok(Some(target));
    }
    match m.answers.last().map(|r| &r.data) {
        Some(RData::CNAME(c))
            if m.metadata.response_code == ResponseCode::NoError
                && !matches!(qtype, RecordType::CNAME | RecordType::ANY) =>
        {
            Err(ChaseStop::Failed(
                format!("CNAME loop at {}", wire::name_text(&c.0)).into(),
            ))
        }
        _ => Ok(None),
    }
}

impl Pipeline {
    /// Complete `m`, a local zone's answer to `q`, when its CNAME chain leaves the zone (see
    /// the module doc). `m` is left as it was when nothing needs chasing; on `Err` the caller
    /// answers with a block (a forbidden target, an internal address) or SERVFAIL.
    pub(super) async fn chase_local_cname(
        &self,
        p: &Pending,
        q: &Query<'_>,
        policy: &ActivePolicy,
        group: &Group,
        m: &mut Message,
    ) -> Result<(), ChaseStop> {
        let qtype = RecordType::from(q.qtype);
        let mut links = m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .count();
        let mut seen: Vec<Name> = m.answers.iter().map(|r| r.name.clone()).collect();
        while let Some(target) = next_link(m, qtype)? {
            // A loop, or a chain past the bound: SERVFAIL, as from Unbound (and as a forwarded
            // answer's loop is, `scrub`); a stub given the links so far would follow them again.
            if seen.contains(&target) {
                return Err(ChaseStop::Failed(
                    format!("CNAME loop at {}", wire::name_text(&target)).into(),
                ));
            }
            if links >= MAX_CNAME_CHAIN {
                return Err(ChaseStop::Failed(
                    format!("CNAME chain longer than {MAX_CNAME_CHAIN} links").into(),
                ));
            }
            let text = wire::name_text(&target);
            if !group.decide(&text).is_allowed() {
                return Err(ChaseStop::Forbidden(text));
            }
            seen.push(target.clone());
            if policy.zones.serves(&text) {
                let Some(answer) = policy.zones.lookup(&target, qtype) else {
                    return Ok(());
                };
                let targets: Vec<Box<str>> = wire::cname_targets(&answer.answers).collect();
                if let Some(AnswerProblem::ForbiddenTarget(t)) = check_answer(
                    group,
                    &text,
                    &targets,
                    &[],
                    AnswerSource::Trusted,
                    &self.settings.own_addresses,
                ) {
                    return Err(ChaseStop::Forbidden(t.to_string()));
                }
                links += targets.len();
                m.metadata.response_code = answer.rcode;
                m.answers.extend(answer.answers);
                m.authorities = answer.authorities;
                m.additionals.extend(
                    answer
                        .additionals
                        .into_iter()
                        .filter(|r| group.decide(&wire::name_text(&r.name)).is_allowed()),
                );
                continue;
            }
            // Outside every local zone, and the client asked for no recursion (RD clear): the
            // chain as far as the local data goes, as from Unbound. Neither the upstreams nor
            // the cache (which every group shares, and whose TTLs tell when another client
            // asked) are consulted for it.
            if !q.rd {
                return Ok(());
            }
            // Outside every local zone: the cache, else the upstreams, as a question of its own.
            let mut question = Vec::with_capacity(text.len() + 6);
            for label in target.iter() {
                // A `Name`'s labels are 1 to 63 bytes.
                question.push(u8::try_from(label.len()).unwrap_or(63));
                question.extend_from_slice(label);
            }
            question.push(0);
            question.extend_from_slice(&q.qtype.to_be_bytes());
            question.extend_from_slice(&1u16.to_be_bytes());
            let packet = wire::encode_upstream_query(q.id, &question, q.dnssec_ok(), q.cd);
            let Ok(tq) = wire::parse_query(&packet) else {
                return Err(ChaseStop::Failed(
                    "the CNAME target is not a usable name".into(),
                ));
            };
            // As an ordinary miss for the target: the cache, the failures remembered (RFC
            // 9520: a target that just failed is not asked again on every query of the alias),
            // then one exchange shared with every identical question in flight.
            let now = self.clock.now();
            let answer = match self.cache.get_at(&tq, now) {
                Some(hit) => hit,
                None => {
                    if !self.failures.is_empty()
                        && let Some(kind) = self.failures.get(CacheKeyRef::of(&tq), now)
                    {
                        return Err(ChaseStop::FailureCached(kind));
                    }
                    match self.fetch_coalesced(p, &tq).await {
                        Fetched::Answer(answer, _, _) => answer,
                        Fetched::Unusable(_, why) => return Err(ChaseStop::Failed(why)),
                        Fetched::Failed(why, text) => {
                            return Err(ChaseStop::Unreachable(why, text));
                        }
                    }
                }
            };
            if let Some(problem) = self.check_answer(policy, group, &tq.name, &answer) {
                return Err(match problem {
                    AnswerProblem::ForbiddenTarget(t) => ChaseStop::Forbidden(t.to_string()),
                    AnswerProblem::PrivateAddress(ip) => ChaseStop::Private(ip),
                });
            }
            let rendered = answer.render(&tq, self.cache.now(), usize::from(u16::MAX));
            let Ok(fetched) = Message::from_vec(&rendered) else {
                return Err(ChaseStop::Failed(
                    "the CNAME target's answer did not decode".into(),
                ));
            };
            // Part of the answer is no longer this server's own data.
            m.metadata.authoritative = false;
            m.metadata.response_code = fetched.metadata.response_code;
            m.answers.extend(fetched.answers);
            m.authorities = fetched.authorities;
            // The upstream's answer is the whole rest of the chain.
            return Ok(());
        }
        Ok(())
    }
}
