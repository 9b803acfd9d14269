//! What a forwarded answer may carry on to a client: the records of its question, and nothing an
//! upstream slipped in beside them.
//!
//! An upstream (or anything that can answer for it) may put records in an answer that the
//! question did not ask for: an address for an unrelated name in the answer section, `NS`
//! records and glue for another zone in the authority and additional sections, a private
//! address in the additional section. None of them are checked by a group's answer rules
//! (`block_private_answers`, the deny list for CNAME targets), which look at the question's
//! chain, and a downstream cache could take them as truth. So, as Unbound's scrubber and its
//! `minimal-responses` do, before an answer is checked, cached or served:
//!
//! - **answer section**: the question's CNAME chain only. It starts at the question name and
//!   follows each CNAME whose owner is the chain's last name (at most [`MAX_CHAIN`] names, a
//!   loop ends it); records are kept when their owner is on the chain and their type is CNAME,
//!   the question's type (any type for `ANY`) or RRSIG, and they go on in the chain's order
//!   whatever the upstream's was ([`order_by_chain`]: stub parsers such as glibc's walk the
//!   section once from the question name). A DNAME above the name is not kept
//!   (unless the question asked for that DNAME): the CNAME synthesised from it is (RFC 6672
//!   §3.2), which every stub follows, and a DNAME for `com.` kept beside it would be a rewrite
//!   of a whole tree no rule looked at, for a downstream cache to take;
//! - **authority section**: SOA and NS records only for a zone at or above the chain's last
//!   name (a negative answer's SOA, the zone's own NS); the DNSSEC records a validating client
//!   needs (NSEC, NSEC3, RRSIG: a wildcard's proofs may sit near the apex); no DS (a
//!   referral's, not an answer's); nothing else;
//! - **DNSSEC records only for DO** ([`scrub_for`]): a client that did not set DO gets no
//!   RRSIG, NSEC or NSEC3 it did not ask for by type (RFC 4035 §3.2.1);
//! - **additional section**: nothing (OPT is the resolver's own; glue is a hint no stub uses,
//!   and a place for addresses no rule looked at).
//!
//! The AD bit is cleared too: dnsward validates no DNSSEC, so it cannot say that data is
//! authentic (RFC 4035 §3.2.3, RFC 6840 §5.8), whatever its upstream said.

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The most names on a chain: the question's and up to 15 CNAME targets (BIND follows 16
/// CNAMEs; Unbound's default `max-query-restarts` is 11).
pub const MAX_CHAIN: usize = 16;

/// What [`scrub`] took out, for a metric and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scrubbed {
    /// Records dropped from the answer section.
    pub answers: usize,
    /// Records dropped from the authority section.
    pub authorities: usize,
    /// Records dropped from the additional section.
    pub additionals: usize,
    /// The answer's CNAME chain loops or runs past [`MAX_CHAIN`] names: it was made SERVFAIL.
    pub broken_chain: bool,
}

impl Scrubbed {
    /// Records dropped in all.
    #[must_use]
    pub fn total(&self) -> usize {
        self.answers + self.authorities + self.additionals
    }
}

/// Keeps in `m` only what its question asked for (see the module header) and clears AD.
/// A message without a question is left as it is (the caller does not serve one). Without
/// `dnssec_ok` (the client did not set DO) no RRSIG, NSEC or NSEC3 stays unless it is the type
/// asked for (RFC 4035 §3.2.1): an upstream that sends them anyway would hand a stub hundreds of
/// bytes a query that it never asked for and no detector prices as answer data.
pub fn scrub_for(m: &mut Message, dnssec_ok: bool) -> Scrubbed {
    let mut dropped = scrub(m);
    if !dnssec_ok {
        let qtype = m.queries.first().map(|q| q.query_type());
        let dnssec = |r: &Record| {
            matches!(
                r.record_type(),
                RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3
            ) && Some(r.record_type()) != qtype
        };
        let before = (m.answers.len(), m.authorities.len());
        m.answers.retain(|r| !dnssec(r));
        m.authorities.retain(|r| !dnssec(r));
        dropped.answers += before.0 - m.answers.len();
        dropped.authorities += before.1 - m.authorities.len();
    }
    dropped
}

/// Keeps in `m` only what its question asked for (see the module header) and clears AD.
/// A message without a question is left as it is (the caller does not serve one).
pub fn scrub(m: &mut Message) -> Scrubbed {
    m.metadata.authentic_data = false;
    let Some(question) = m.queries.first() else {
        return Scrubbed::default();
    };
    let qtype = question.query_type();
    let (chain, broken_chain) = chain(&question.name, &m.answers);
    let before = (m.answers.len(), m.authorities.len(), m.additionals.len());
    if broken_chain && qtype != RecordType::CNAME {
        // A chain that loops, or goes on past the bound, leads to no answer: a failure, as
        // from Unbound and BIND (RFC 1034 §3.6.2 has resolvers stop and fail), not NOERROR
        // with the links so far, which a stub reads as "the name has no address".
        m.metadata.response_code = hickory_proto::op::ResponseCode::ServFail;
        m.answers.clear();
        m.authorities.clear();
        m.additionals.clear();
        return Scrubbed {
            answers: before.0,
            authorities: before.1,
            additionals: before.2,
            broken_chain: true,
        };
    }
    // The chain starts at the question name: never empty.
    let last = chain.last().unwrap_or(&question.name);
    m.answers.retain(|r| {
        let t = r.record_type();
        chain.contains(&r.name)
            && (t == RecordType::CNAME
                || t == qtype
                || qtype == RecordType::ANY
                || t == RecordType::RRSIG)
    });
    order_by_chain(&mut m.answers, &chain);
    // The proofs a validator needs (NSEC, NSEC3 and their RRSIGs) may lie anywhere in the
    // signed zone, a wildcard's closest-encloser proof near the apex: kept, and priced for a
    // DO client as signed bytes (only a DO client gets them, [`scrub_for`]). DS belongs in a
    // referral, which a recursive answer is not.
    m.authorities.retain(|r| match r.record_type() {
        RecordType::SOA | RecordType::NS => r.name.zone_of(last),
        RecordType::NSEC | RecordType::NSEC3 | RecordType::RRSIG => true,
        _ => false,
    });
    m.additionals.clear();
    Scrubbed {
        answers: before.0 - m.answers.len(),
        authorities: before.1 - m.authorities.len(),
        additionals: before.2,
        broken_chain: false,
    }
}

/// Puts `answers`, each owned by a name on `chain`, in the chain's order, as Unbound serves a
/// chain: the question name's records, then its target's, and so on; at each name its CNAME
/// first, then the other types (by type code: `ANY`'s sets in one order whatever the
/// upstream's), each RRSIG right after the RRset it covers. Within an RRset the order is kept
/// (the cache puts it in canonical order). An upstream may send the chain in any order (the
/// address first, the question's CNAME last), and stub parsers walk the section once from the
/// question name: glibc's `getaddrinfo` then finds no address.
/// An answer already in order (nearly all: one name, or a chain in order) is found so in one
/// pass with no allocation, and left as it is.
fn order_by_chain(answers: &mut [Record], chain: &[Name]) {
    let key = |r: &Record| chain_key(r, chain);
    let mut last = None;
    let ordered = answers.iter().all(|r| {
        let k = key(r);
        let in_order = last.is_none_or(|l| l <= k);
        last = Some(k);
        in_order
    });
    if !ordered {
        // Stable: an RRset's records keep their order among themselves.
        answers.sort_by_cached_key(key);
    }
}

/// Where `r` goes in a chain-ordered answer section: the position of its owner on `chain`, its
/// (covered) type's rank at that name (CNAME first, an RRSIG whose covered type cannot be read
/// last), and whether it is the RRSIG after that RRset.
fn chain_key(r: &Record, chain: &[Name]) -> (usize, u32, bool) {
    let at = match chain {
        // No CNAME followed (nearly every answer): every record kept is the question name's.
        [_] => 0,
        _ => chain
            .iter()
            .position(|n| *n == r.name)
            .unwrap_or(chain.len()),
    };
    let signature = r.record_type() == RecordType::RRSIG;
    let covered = if signature {
        covered_type(r)
    } else {
        Some(r.record_type())
    };
    let rank = match covered {
        Some(RecordType::CNAME) => 0,
        Some(t) => 1 + u32::from(u16::from(t)),
        None => u32::MAX,
    };
    (at, rank, signature)
}

/// The type an RRSIG record covers (RFC 4034 §3.1: its RDATA's first two bytes), `None` for
/// another record or an RRSIG too short to say.
pub(crate) fn covered_type(r: &Record) -> Option<RecordType> {
    match &r.data {
        RData::Unknown {
            code: RecordType::RRSIG,
            rdata,
        } => match rdata.anything.as_slice() {
            [hi, lo, ..] => Some(RecordType::from(u16::from_be_bytes([*hi, *lo]))),
            _ => None,
        },
        _ => None,
    }
}

/// A question's chain of names: inline up to four (nearly every answer has one or two).
type Chain = smallvec::SmallVec<[Name; 4]>;

/// The question name and the CNAME targets that follow from it in `answers`, in order; and
/// whether the chain is broken: it loops, or a CNAME follows its [`MAX_CHAIN`]th name.
fn chain(qname: &Name, answers: &[Record]) -> (Chain, bool) {
    let mut chain = Chain::new();
    chain.push(qname.clone());
    loop {
        let last = &chain[chain.len() - 1];
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if &r.name == last => Some(c.0.clone()),
            _ => None,
        });
        match next {
            None => return (chain, false),
            Some(target) if chain.contains(&target) || chain.len() >= MAX_CHAIN => {
                return (chain, true);
            }
            Some(target) => chain.push(target),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_proto::op::{MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME, NS, SOA, TXT};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn rec(owner: &str, data: RData) -> Record {
        Record::from_rdata(name(owner), 300, data)
    }

    fn a(owner: &str, ip: [u8; 4]) -> Record {
        rec(owner, RData::A(A(Ipv4Addr::from(ip))))
    }

    fn cname(owner: &str, target: &str) -> Record {
        rec(owner, RData::CNAME(CNAME(name(target))))
    }

    fn soa(owner: &str) -> Record {
        rec(
            owner,
            RData::SOA(SOA::new(
                name("ns1.example.com."),
                name("hostmaster.example.com."),
                1,
                3600,
                600,
                86400,
                60,
            )),
        )
    }

    fn ns(owner: &str, host: &str) -> Record {
        rec(owner, RData::NS(NS(name(host))))
    }

    fn message(qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.queries.push(Query::query(name(qname), qtype));
        m
    }

    fn owners(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect()
    }

    #[test]
    fn the_answer_keeps_the_question_chain_and_drops_unrelated_records() {
        let mut m = message("www.example.com.", RecordType::A);
        m.metadata.authentic_data = true;
        m.answers = vec![
            a("unrelated.example.net.", [6, 6, 6, 8]),
            cname("www.example.com.", "edge.cdn.example."),
            // A later link before an earlier one: served in the chain's order.
            a("host.cdn.example.", [192, 0, 2, 1]),
            cname("edge.cdn.example.", "host.cdn.example."),
            // On the chain, but not the question's type.
            rec("host.cdn.example.", RData::TXT(TXT::new(vec!["x".into()]))),
            a("pypi.org.", [6, 6, 6, 6]),
        ];
        m.authorities = vec![
            ns("pypi.org.", "ns.evil.example."),
            ns("cdn.example.", "ns1.cdn.example."),
            a("ns1.cdn.example.", [10, 0, 0, 1]),
        ];
        m.additionals = vec![a("ns1.cdn.example.", [10, 9, 9, 9])];
        let dropped = scrub(&mut m);
        assert_eq!(
            owners(&m.answers),
            [
                "www.example.com. CNAME",
                "edge.cdn.example. CNAME",
                "host.cdn.example. A"
            ]
        );
        assert_eq!(owners(&m.authorities), ["cdn.example. NS"]);
        assert!(m.additionals.is_empty());
        assert!(
            !m.metadata.authentic_data,
            "dnsward validates nothing: no AD"
        );
        assert_eq!(
            dropped,
            Scrubbed {
                answers: 3,
                authorities: 2,
                additionals: 1,
                broken_chain: false,
            }
        );
    }

    /// An RRSIG over `covered`, with a distinguishing `tag` byte after the covered type.
    fn rrsig(owner: &str, covered: RecordType, tag: u8) -> Record {
        let mut rdata = u16::from(covered).to_be_bytes().to_vec();
        rdata.extend([tag; 30]);
        rec(
            owner,
            RData::Unknown {
                code: RecordType::RRSIG,
                rdata: hickory_proto::rr::rdata::NULL::with(rdata),
            },
        )
    }

    /// Owner, type and (for an A) the address's last byte or (for an RRSIG) the covered type:
    /// the order a stub walks.
    fn sequence(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => format!("{} A {}", r.name, a.0.octets()[3]),
                _ => match covered_type(r) {
                    Some(t) => format!("{} RRSIG {t}", r.name),
                    None => format!("{} {}", r.name, r.record_type()),
                },
            })
            .collect()
    }

    /// The tester's repro: the address first, the question's CNAME last. glibc walks the
    /// section once from the question name, so it found no address; the chain is served from
    /// the question name on, the final RRset last, its records in the order they came.
    #[test]
    fn an_out_of_order_chain_is_served_from_the_question_name() {
        let mut m = message("revcname.x.ext.example.", RecordType::A);
        m.answers = vec![
            a("t2.ext.example.", [1, 2, 3, 22]),
            cname("t1.ext.example.", "t2.ext.example."),
            a("t2.ext.example.", [1, 2, 3, 21]),
            cname("revcname.x.ext.example.", "t1.ext.example."),
            a("unrelated.example.", [6, 6, 6, 6]),
        ];
        let dropped = scrub_for(&mut m, false);
        assert_eq!(
            sequence(&m.answers),
            [
                "revcname.x.ext.example. CNAME",
                "t1.ext.example. CNAME",
                "t2.ext.example. A 22",
                "t2.ext.example. A 21",
            ]
        );
        assert_eq!(dropped.answers, 1, "the unrelated address still goes");
    }

    /// For a DO client each RRSIG comes right after the RRset it covers (same owner, covered
    /// type), wherever the upstream put it; at one name with two types (`ANY`) the CNAME comes
    /// first, the rest by type, each with its signatures after it.
    #[test]
    fn rrsigs_follow_the_rrset_they_cover() {
        let mut m = message("q.example.", RecordType::A);
        m.answers = vec![
            rrsig("t.example.", RecordType::A, 1),
            rrsig("q.example.", RecordType::CNAME, 2),
            a("t.example.", [192, 0, 2, 1]),
            cname("q.example.", "t.example."),
            a("t.example.", [192, 0, 2, 2]),
        ];
        scrub_for(&mut m, true);
        assert_eq!(
            sequence(&m.answers),
            [
                "q.example. CNAME",
                "q.example. RRSIG CNAME",
                "t.example. A 1",
                "t.example. A 2",
                "t.example. RRSIG A",
            ]
        );

        let mut m = message("x.example.", RecordType::ANY);
        m.answers = vec![
            rrsig("x.example.", RecordType::TXT, 1),
            rec("x.example.", RData::TXT(TXT::new(vec!["t".into()]))),
            rrsig("x.example.", RecordType::A, 2),
            a("x.example.", [192, 0, 2, 9]),
        ];
        scrub_for(&mut m, true);
        assert_eq!(
            sequence(&m.answers),
            [
                "x.example. A 9",
                "x.example. RRSIG A",
                "x.example. TXT",
                "x.example. RRSIG TXT",
            ]
        );
    }

    /// A chain already in order (the usual answer) and an answer without a CNAME are left
    /// exactly as they came, records within an RRset included.
    #[test]
    fn an_ordered_chain_is_left_as_it_came() {
        let ordered = vec![
            cname("q.example.", "t.example."),
            rrsig("q.example.", RecordType::CNAME, 1),
            a("t.example.", [192, 0, 2, 9]),
            a("t.example.", [192, 0, 2, 3]),
            rrsig("t.example.", RecordType::A, 2),
            rrsig("t.example.", RecordType::A, 3),
        ];
        let mut m = message("q.example.", RecordType::A);
        m.answers = ordered.clone();
        assert_eq!(scrub_for(&mut m, true).total(), 0);
        assert_eq!(m.answers, ordered);

        let plain = vec![
            a("q.example.", [192, 0, 2, 9]),
            a("q.example.", [192, 0, 2, 3]),
        ];
        let mut m = message("q.example.", RecordType::A);
        m.answers = plain.clone();
        scrub(&mut m);
        assert_eq!(m.answers, plain);
        // An open chain (its last target unanswered) stays open at the end, out of order or not.
        let mut m = message("q.example.", RecordType::A);
        m.answers = vec![
            cname("t1.example.", "t2.example."),
            cname("q.example.", "t1.example."),
        ];
        scrub(&mut m);
        assert_eq!(
            sequence(&m.answers),
            ["q.example. CNAME", "t1.example. CNAME"]
        );
    }

    #[test]
    fn a_dname_above_the_name_is_dropped_and_its_synthesised_cname_kept() {
        let mut m = message("www.old.example.", RecordType::A);
        m.answers = vec![
            rec(
                "old.example.",
                RData::Unknown {
                    code: RecordType::DNAME,
                    rdata: hickory_proto::rr::rdata::NULL::with(vec![0]),
                },
            ),
            cname("www.old.example.", "www.new.example."),
            a("www.new.example.", [192, 0, 2, 3]),
        ];
        scrub(&mut m);
        assert_eq!(
            owners(&m.answers),
            ["www.old.example. CNAME", "www.new.example. A"]
        );
    }

    #[test]
    fn a_negative_answer_keeps_its_own_zones_soa_only() {
        let mut m = message("nope.example.com.", RecordType::A);
        m.authorities = vec![
            soa("example.com."),
            soa("example.org."),
            ns("com.", "a.gtld."),
        ];
        scrub(&mut m);
        assert_eq!(
            owners(&m.authorities),
            ["example.com. SOA", "com. NS"],
            "a zone above the name stays (the NS of `com.` is in bailiwick), another's goes"
        );
    }

    #[test]
    fn case_and_loops_do_not_confuse_the_chain() {
        let mut m = message("WWW.Example.COM.", RecordType::A);
        m.answers = vec![
            cname("www.example.com.", "b.example.com."),
            cname("B.example.com.", "www.EXAMPLE.com."),
            a("b.example.com.", [192, 0, 2, 7]),
        ];
        assert_eq!(
            chain(&m.queries[0].name, &m.answers),
            (
                Chain::from_vec(vec![name("www.example.com."), name("b.example.com.")]),
                true
            )
        );
        let scrubbed = scrub(&mut m);
        assert!(scrubbed.broken_chain, "a loop leads nowhere");
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.answers.is_empty());
        // Asked for the CNAME itself, the loop is no concern: the record is the answer.
        let mut m = message("WWW.Example.COM.", RecordType::CNAME);
        m.answers = vec![
            cname("www.example.com.", "b.example.com."),
            cname("B.example.com.", "www.EXAMPLE.com."),
        ];
        assert!(!scrub(&mut m).broken_chain);
        assert_eq!(
            owners(&m.answers),
            ["www.example.com. CNAME", "b.example.com. CNAME"]
        );
        // Case alone is no loop.
        let mut m = message("WWW.Example.COM.", RecordType::A);
        m.answers = vec![
            cname("www.example.com.", "B.example.com."),
            a("b.example.com.", [192, 0, 2, 7]),
        ];
        assert_eq!(scrub(&mut m).total(), 0, "every record is on the chain");
    }

    #[test]
    fn any_keeps_every_type_at_the_name_and_a_chain_stops_at_its_bound() {
        let mut m = message("x.example.com.", RecordType::ANY);
        m.answers = vec![
            a("x.example.com.", [192, 0, 2, 1]),
            rec("x.example.com.", RData::TXT(TXT::new(vec!["t".into()]))),
        ];
        assert_eq!(scrub(&mut m).total(), 0);

        let mut long = message("c0.example.", RecordType::A);
        for i in 0..40 {
            long.answers.push(cname(
                &format!("c{i}.example."),
                &format!("c{}.example.", i + 1),
            ));
        }
        long.answers.push(a("c40.example.", [192, 0, 2, 9]));
        assert!(scrub(&mut long).broken_chain);
        assert_eq!(long.metadata.response_code, ResponseCode::ServFail);
        assert!(
            long.answers.is_empty(),
            "a chain past the bound is a failure"
        );
        // Up to the bound (MAX_CHAIN names, the last with the address) a chain is served whole.
        let mut at_bound = message("c0.example.", RecordType::A);
        for i in 0..MAX_CHAIN - 1 {
            at_bound.answers.push(cname(
                &format!("c{i}.example."),
                &format!("c{}.example.", i + 1),
            ));
        }
        at_bound
            .answers
            .push(a(&format!("c{}.example.", MAX_CHAIN - 1), [192, 0, 2, 9]));
        let scrubbed = scrub(&mut at_bound);
        assert!(!scrubbed.broken_chain);
        assert_eq!(at_bound.answers.len(), MAX_CHAIN, "{scrubbed:?}");
    }

    #[test]
    fn a_message_without_a_question_is_left_alone_but_loses_ad() {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.authentic_data = true;
        m.answers.push(a("x.example.", [192, 0, 2, 1]));
        assert_eq!(scrub(&mut m).total(), 0);
        assert!(!m.metadata.authentic_data);
    }

    /// Proofs stay for a DO client wherever they are (a wildcard's lie near the apex), DS never
    /// (a referral's record), and for a client without DO no RRSIG, NSEC or NSEC3 stays unless
    /// asked for by type.
    #[test]
    fn dnssec_records_stay_in_zone_and_only_for_do_clients() {
        use hickory_proto::rr::rdata::NULL;
        let raw = |owner: &str, t: RecordType| {
            rec(
                owner,
                RData::Unknown {
                    code: t,
                    rdata: NULL::with(vec![1; 40]),
                },
            )
        };
        let build = || {
            let mut m = message("gone.example.com.", RecordType::A);
            m.authorities = vec![
                soa("example.com."),
                raw("example.com.", RecordType::RRSIG),
                raw("a.example.com.", RecordType::NSEC3),
                raw("elsewhere.net.", RecordType::NSEC3),
                raw("example.com.", RecordType::DS),
            ];
            m
        };
        let mut m = build();
        scrub_for(&mut m, true);
        assert_eq!(
            owners(&m.authorities),
            [
                "example.com. SOA",
                "example.com. RRSIG",
                "a.example.com. NSEC3",
                "elsewhere.net. NSEC3"
            ]
        );
        let mut m = build();
        let dropped = scrub_for(&mut m, false);
        assert_eq!(owners(&m.authorities), ["example.com. SOA"]);
        assert_eq!(
            dropped.authorities, 4,
            "the DS, and three DNSSEC records without DO"
        );
        // Asked for by type, an RRSIG is the answer.
        let mut m = message("example.com.", RecordType::RRSIG);
        m.answers = vec![raw("example.com.", RecordType::RRSIG)];
        scrub_for(&mut m, false);
        assert_eq!(m.answers.len(), 1);
    }
}
