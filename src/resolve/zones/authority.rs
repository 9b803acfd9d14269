//! Answering from local zones: the longest-matching zone, exact records, the CNAME chase inside
//! one zone, RFC 4592 wildcards, NODATA versus NXDOMAIN with the negative SOA, `ANY` as one
//! RRset, and in-zone addresses of MX/NS/SRV targets as additionals. The rules are listed in
//! the [`super`] module documentation.

use std::collections::{HashMap, HashSet};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{MAX_CNAME_CHAIN, ZoneAnswer, ZoneSet};
use crate::names::self_and_parents;
use crate::wire;

/// The wildcard label `*` in the lookup-key form of [`name_key`] (every byte outside
/// `[a-z0-9-_]` is written `\DDD`), so a wildcard owner is `\042.` + its closest encloser.
const WILDCARD_KEY_LABEL: &str = "\\042";

impl ZoneSet {
    /// Answer `qname`/`qtype` from the local zones. `qname` is the query name as labels (built
    /// from the wire, [`crate::wire::question_name`]); case does not matter. `None` means the
    /// name is not inside any local zone, so it should be forwarded. The longest-matching zone
    /// answers.
    #[must_use]
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Option<ZoneAnswer> {
        let key = name_key(qname);
        let zone_index = match self.zone_index_of(&key) {
            Some(i) => i,
            // The DS at a delegation point is the parent's (RFC 4035 §3.1.4.1).
            None if qtype == RecordType::DS => *self.cuts.get(key.as_str())?,
            None => return None,
        };
        let zone = &self.zones[zone_index];
        let mut answer = ZoneAnswer {
            zone: zone.origin.clone(),
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };

        // The name being answered: its key, and the name itself, which owns synthesised
        // (wildcard) records.
        let mut owner = qname.clone();
        owner.set_fqdn(true);
        let mut current = (key, owner);
        let mut visited: Vec<String> = Vec::new();
        for _ in 0..MAX_CNAME_CHAIN {
            match zone.resolve(&current.0, &current.1, qtype) {
                NodeAnswer::Records(records) => {
                    zone.add_target_addresses(&records, &mut answer.additionals);
                    answer.answers.extend(records);
                    break;
                }
                NodeAnswer::NoData => {
                    answer.authorities.push(zone.negative_soa.clone());
                    break;
                }
                NodeAnswer::NxDomain => {
                    answer.rcode = ResponseCode::NXDomain;
                    answer.authorities.push(zone.negative_soa.clone());
                    break;
                }
                NodeAnswer::Cname(record) => {
                    let target = match &record.data {
                        RData::CNAME(c) => c.0.clone(),
                        _ => Name::root(),
                    };
                    let target_key = name_key(&target);
                    answer.answers.push(*record);
                    visited.push(current.0);
                    // Chase only inside this zone, as an authoritative server does; the pipeline
                    // resolves a target elsewhere (`serve::pipeline::chase`).
                    let same_zone = self.zone_index_of(&target_key) == Some(zone_index);
                    if !same_zone || visited.contains(&target_key) {
                        break;
                    }
                    current = (target_key, target);
                }
            }
        }
        Some(answer)
    }

    /// Whether `qname` (a query name in the wire parser's text form) is inside a local zone,
    /// so [`ZoneSet::lookup`] answers it: a check that costs a hash probe per label and
    /// allocates nothing, for the names that are forwarded.
    #[must_use]
    pub fn serves(&self, qname: &str) -> bool {
        self.zone_index_of(qname).is_some()
    }

    /// [`Self::serves`] for a question: also the DS at one of the zones' delegation points,
    /// which the parent's side holds (RFC 4035 §3.1.4.1), not the delegated servers (they may
    /// not even answer it).
    #[must_use]
    pub fn serves_question(&self, qname: &str, qtype: u16) -> bool {
        self.serves(qname) || (qtype == u16::from(RecordType::DS) && self.cuts.contains_key(qname))
    }

    /// Index of the longest zone origin equal to or above `name`; `None` also for a name at or
    /// below a delegation inside that zone (its servers answer it, [`ZoneSet::delegations`]).
    pub(super) fn zone_index_of(&self, name: &str) -> Option<usize> {
        if self.zones.is_empty() {
            return None;
        }
        if self.cuts.is_empty() {
            return self_and_parents(name).find_map(|n| self.by_origin.get(n).copied());
        }
        // The zones whose cuts the name is at or below, on the way up (rarely more than one).
        let mut cut_by: Vec<usize> = Vec::new();
        for n in self_and_parents(name) {
            if let Some(&i) = self.by_origin.get(n) {
                return (!cut_by.contains(&i)).then_some(i);
            }
            if let Some(&z) = self.cuts.get(n) {
                cut_by.push(z);
            }
        }
        None
    }
}

/// One loaded zone.
#[derive(Debug)]
pub(super) struct Zone {
    /// Apex, lower-case, no trailing dot.
    pub(super) origin: String,
    /// The apex SOA with its TTL already lowered to the negative TTL, for NODATA/NXDOMAIN.
    pub(super) negative_soa: Record,
    /// Owner (lower-case, no trailing dot) → every record at it.
    pub(super) nodes: HashMap<Box<str>, Vec<Record>>,
    /// Names with no records but with descendants: they exist, so they answer NODATA.
    pub(super) empty_non_terminals: HashSet<Box<str>>,
}

/// A delegation found in a zone: the cut, and the in-zone addresses of its name servers (none
/// when every NS target lies outside the zone or has no A/AAAA record here).
pub(super) struct Cut {
    pub(super) name: String,
    pub(super) ns: Vec<String>,
    pub(super) addresses: Vec<std::net::IpAddr>,
}

impl Zone {
    /// Records held (the SOA included).
    pub(super) fn record_count(&self) -> usize {
        self.nodes.values().map(Vec::len).sum()
    }

    /// The zone's delegations: NS records at a name below the apex (the highest ones only:
    /// what lies under a cut is the child's), each with the addresses this zone holds for its
    /// servers (glue, or a sibling name's records).
    pub(super) fn cuts(&self) -> Vec<Cut> {
        let mut names: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(owner, records)| {
                &***owner != self.origin.as_str()
                    && records.iter().any(|r| r.record_type() == RecordType::NS)
            })
            .map(|(owner, _)| &**owner)
            .collect();
        names.sort_by_key(|n| n.len());
        let mut cuts: Vec<Cut> = Vec::new();
        for name in names {
            if cuts
                .iter()
                .any(|c| crate::names::is_at_or_below(name, &c.name))
            {
                continue;
            }
            let mut ns = Vec::new();
            let mut addresses = Vec::new();
            for r in &self.nodes[name] {
                let RData::NS(target) = &r.data else { continue };
                ns.push(name_key(&target.0));
                for a in self
                    .nodes
                    .get(name_key(&target.0).as_str())
                    .into_iter()
                    .flatten()
                {
                    match &a.data {
                        RData::A(v4) => addresses.push(std::net::IpAddr::V4(v4.0)),
                        RData::AAAA(v6) => addresses.push(std::net::IpAddr::V6(v6.0)),
                        _ => {}
                    }
                }
            }
            addresses.sort_unstable();
            addresses.dedup();
            cuts.push(Cut {
                name: name.to_string(),
                ns,
                addresses,
            });
        }
        cuts
    }

    /// Owners whose CNAME chain, followed through this zone's own names, comes back to a name
    /// already on it (`a CNAME b`, `b CNAME a`; `self CNAME self`), sorted: served, such a
    /// name is SERVFAIL, as Unbound answers a looping chain. Wildcard synthesis is not
    /// followed here (the pipeline catches those loops when asked).
    pub(super) fn cname_loops(&self) -> Vec<String> {
        let target_of = |owner: &str| {
            self.nodes.get(owner)?.iter().find_map(|r| match &r.data {
                RData::CNAME(c) => Some(name_key(&c.0)),
                _ => None,
            })
        };
        let mut loops: Vec<String> = Vec::new();
        for owner in self.nodes.keys() {
            let mut seen: Vec<String> = vec![owner.to_string()];
            let mut at = owner.to_string();
            while let Some(next) = target_of(&at) {
                if seen.contains(&next) {
                    if next == **owner {
                        loops.push(owner.to_string());
                    }
                    break;
                }
                seen.push(next.clone());
                at = next;
            }
        }
        loops.sort();
        loops
    }
}

/// What one name in a zone says about one type.
enum NodeAnswer {
    Records(Vec<Record>),
    /// Boxed: a record is large and the other outcomes are small.
    Cname(Box<Record>),
    NoData,
    NxDomain,
}

impl Zone {
    /// What `name` (its [`name_key`] is `key`) has of `qtype`.
    fn resolve(&self, key: &str, name: &Name, qtype: RecordType) -> NodeAnswer {
        // A query for the wildcard owner itself (a literal `*` label) finds it here, as an
        // existing name (RFC 4592 §2.2.1).
        let (records, synthesised) = if let Some(records) = self.nodes.get(key) {
            (records, false)
        } else if self.empty_non_terminals.contains(key) {
            return NodeAnswer::NoData;
        } else {
            match self.wildcard_for(key) {
                Wildcard::Source(records) => (records, true),
                Wildcard::EmptyNonTerminal => return NodeAnswer::NoData,
                Wildcard::None => return NodeAnswer::NxDomain,
            }
        };
        // Wildcard answers are owned by the query name (RFC 4592 §2.2.1), as its labels are.
        let owned = |r: &Record| {
            let mut r = r.clone();
            if synthesised {
                r.name = name.clone();
            }
            r
        };

        if qtype != RecordType::CNAME
            && let Some(cname) = records
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME)
        {
            return NodeAnswer::Cname(Box::new(owned(cname)));
        }
        let wanted = if qtype == RecordType::ANY {
            // RFC 8482 §4.1: one RRset; the lowest type number keeps the choice stable.
            match records
                .iter()
                .map(Record::record_type)
                .min_by_key(|t| u16::from(*t))
            {
                Some(t) => t,
                None => return NodeAnswer::NoData,
            }
        } else {
            qtype
        };
        let matching: Vec<Record> = records
            .iter()
            .filter(|r| r.record_type() == wanted)
            .map(owned)
            .collect();
        if matching.is_empty() {
            NodeAnswer::NoData
        } else {
            NodeAnswer::Records(matching)
        }
    }

    /// RFC 4592 §3.3.1: find the closest encloser of `name` (a name that exists), then look for
    /// `*.` + closest encloser.
    fn wildcard_for(&self, name: &str) -> Wildcard<'_> {
        for ancestor in self_and_parents(name).skip(1) {
            let exists = ancestor == self.origin
                || self.nodes.contains_key(ancestor)
                || self.empty_non_terminals.contains(ancestor);
            if !exists {
                if ancestor.len() <= self.origin.len() {
                    break;
                }
                continue;
            }
            let source = format!("{WILDCARD_KEY_LABEL}.{ancestor}");
            if let Some(records) = self.nodes.get(source.as_str()) {
                return Wildcard::Source(records);
            }
            if self.empty_non_terminals.contains(source.as_str()) {
                return Wildcard::EmptyNonTerminal;
            }
            break;
        }
        Wildcard::None
    }

    /// In-zone A/AAAA of the targets of MX, NS and SRV records, so a client needs no second
    /// query for a name only this zone knows.
    fn add_target_addresses(&self, records: &[Record], additionals: &mut Vec<Record>) {
        for record in records {
            let target = match &record.data {
                RData::MX(mx) => &mx.exchange,
                RData::NS(ns) => &ns.0,
                RData::SRV(srv) => &srv.target,
                _ => continue,
            };
            if let Some(node) = self.nodes.get(name_key(target).as_str()) {
                for addr in node
                    .iter()
                    .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                {
                    if !additionals.contains(addr) {
                        additionals.push(addr.clone());
                    }
                }
            }
        }
    }
}

enum Wildcard<'a> {
    Source(&'a Vec<Record>),
    EmptyNonTerminal,
    None,
}

/// The lookup key of a name: the presentation form the wire parser gives query names
/// ([`wire::name_text`]: lower-case, no trailing dot, bytes outside `[a-z0-9-_]` as decimal
/// `\DDD`), so zone owners and query names meet byte for byte and a dot inside a label can
/// never split it.
pub(super) fn name_key(name: &Name) -> String {
    wire::name_text(name)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::super::fixture::{SOA, a_addrs, example, from_texts, owners, qname};
    use super::super::{MAX_CNAME_CHAIN, ZoneSet};

    #[test]
    fn exact_match_returns_the_records() {
        let a = example()
            .lookup(&qname("api.corp.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.zone, "corp.internal");
        assert_eq!(
            a_addrs(&a.answers),
            [Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(10, 0, 1, 11)]
        );
        assert!(a.authorities.is_empty());
        assert_eq!(a.answers[0].ttl, 300);

        let aaaa = example()
            .lookup(&qname("models.corp.internal"), RecordType::AAAA)
            .unwrap();
        assert_eq!(aaaa.answers.len(), 1);
        let txt = example()
            .lookup(&qname("corp.internal"), RecordType::TXT)
            .unwrap();
        assert_eq!(txt.answers.len(), 1);
    }

    #[test]
    fn names_match_case_insensitively_and_with_a_trailing_dot() {
        let a = example()
            .lookup(&qname("API.Corp.Internal."), RecordType::A)
            .unwrap();
        assert_eq!(a.answers.len(), 2);
    }

    #[test]
    fn names_outside_every_zone_are_forwarded() {
        let set = example();
        assert!(set.serves("api.corp.internal") && set.serves("corp.internal"));
        assert!(!set.serves("example.com") && !set.serves("xcorp.internal"));
        assert!(set.lookup(&qname("example.com"), RecordType::A).is_none());
        assert!(set.lookup(&qname("internal"), RecordType::A).is_none());
        assert!(
            set.lookup(&qname("xcorp.internal"), RecordType::A)
                .is_none()
        );
        assert!(
            ZoneSet::empty()
                .lookup(&qname("api.corp.internal"), RecordType::A)
                .is_none()
        );
    }

    #[test]
    fn cname_is_chased_inside_the_zone() {
        let a = example()
            .lookup(&qname("registry.corp.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(a_addrs(&a.answers), [Ipv4Addr::new(192, 0, 2, 30)]);

        // Asking for the CNAME itself does not chase.
        let c = example()
            .lookup(&qname("registry.corp.internal"), RecordType::CNAME)
            .unwrap();
        assert_eq!(c.answers.len(), 1);

        // A target with no such type ends in NODATA, carrying the CNAME.
        let none = example()
            .lookup(&qname("registry.corp.internal"), RecordType::MX)
            .unwrap();
        assert_eq!(none.answers.len(), 1);
        assert_eq!(none.authorities.len(), 1);
    }

    #[test]
    fn cname_chains_stop_at_loops_and_other_zones() {
        let text = format!(
            "{SOA}a IN CNAME b\nb IN CNAME a\nout IN CNAME www.example.com.\n\
             gone IN CNAME missing\n"
        );
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");

        let looped = set.lookup(&qname("a.t.internal"), RecordType::A).unwrap();
        assert_eq!(looped.rcode, ResponseCode::NoError);
        assert_eq!(owners(&looped.answers), ["a.t.internal.", "b.t.internal."]);

        let out = set.lookup(&qname("out.t.internal"), RecordType::A).unwrap();
        assert_eq!(out.answers.len(), 1);
        assert!(out.authorities.is_empty());

        // RFC 6604: the rcode is that of the last link.
        let gone = set
            .lookup(&qname("gone.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(gone.rcode, ResponseCode::NXDomain);
        assert_eq!(gone.answers.len(), 1);
    }

    #[test]
    fn cname_chains_are_bounded() {
        let mut text = SOA.to_owned();
        for i in 0..20 {
            text.push_str(&format!("c{i} IN CNAME c{}\n", i + 1));
        }
        text.push_str("c20 IN A 10.0.0.1\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set.lookup(&qname("c0.t.internal"), RecordType::A).unwrap();
        assert_eq!(a.answers.len(), MAX_CNAME_CHAIN);
    }

    #[test]
    fn nodata_carries_the_soa_with_the_negative_ttl() {
        let a = example()
            .lookup(&qname("git.corp.internal"), RecordType::AAAA)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_eq!(a.authorities.len(), 1);
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        // SOA TTL 3600, MINIMUM 60.
        assert_eq!(a.authorities[0].ttl, 60);
    }

    #[test]
    fn missing_names_are_nxdomain_with_the_soa() {
        let a = example()
            .lookup(&qname("nope.corp.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert!(a.answers.is_empty());
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        let deep = example()
            .lookup(&qname("x.git.corp.internal"), RecordType::A)
            .unwrap();
        assert_eq!(deep.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn empty_non_terminals_are_nodata() {
        let set = example();
        // `_tcp.api` only has a descendant (`_https._tcp.api`).
        let ent = set
            .lookup(&qname("_tcp.api.corp.internal"), RecordType::A)
            .unwrap();
        assert_eq!(ent.rcode, ResponseCode::NoError);
        assert!(ent.answers.is_empty());
        assert_eq!(ent.authorities.len(), 1);
        // `apps` only has the wildcard below it.
        let apps = set
            .lookup(&qname("apps.corp.internal"), RecordType::A)
            .unwrap();
        assert_eq!(apps.rcode, ResponseCode::NoError);
        assert!(apps.answers.is_empty());
    }

    #[test]
    fn wildcards_synthesise_answers_owned_by_the_query_name() {
        let set = example();
        let a = set
            .lookup(&qname("agent-7.apps.corp.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a_addrs(&a.answers), [Ipv4Addr::new(10, 0, 3, 1)]);
        assert_eq!(owners(&a.answers), ["agent-7.apps.corp.internal."]);
        // Deeper names are covered too: `apps` is still the closest encloser.
        let deep = set
            .lookup(&qname("x.y.apps.corp.internal"), RecordType::A)
            .unwrap();
        assert_eq!(owners(&deep.answers), ["x.y.apps.corp.internal."]);
        // A type the wildcard lacks is NODATA, not NXDOMAIN.
        let mx = set
            .lookup(&qname("agent-7.apps.corp.internal"), RecordType::MX)
            .unwrap();
        assert_eq!(mx.rcode, ResponseCode::NoError);
        assert!(mx.answers.is_empty());
    }

    #[test]
    fn wildcards_do_not_apply_below_an_existing_closer_name() {
        let text = format!("{SOA}*.w IN A 10.0.0.1\nhost.w IN A 10.0.0.2\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        // `host.w` exists, so `x.host.w` has closest encloser `host.w` and no `*.host.w`.
        let below = set
            .lookup(&qname("x.host.w.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(below.rcode, ResponseCode::NXDomain);
        let exact = set
            .lookup(&qname("host.w.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a_addrs(&exact.answers), [Ipv4Addr::new(10, 0, 0, 2)]);
        let other = set
            .lookup(&qname("other.w.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a_addrs(&other.answers), [Ipv4Addr::new(10, 0, 0, 1)]);
    }

    #[test]
    fn wildcard_cnames_are_synthesised_and_chased() {
        let text = format!("{SOA}*.w IN CNAME target\ntarget IN A 10.0.0.9\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set
            .lookup(&qname("any.w.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(
            owners(&a.answers),
            ["any.w.t.internal.", "target.t.internal."]
        );
    }

    /// A name from raw labels, as the wire gives it.
    fn wire_name(labels: &[&[u8]]) -> hickory_proto::rr::Name {
        hickory_proto::rr::Name::from_labels(labels.iter().copied()).unwrap()
    }

    #[test]
    fn a_literal_star_query_matches_the_wildcard_owner() {
        // RFC 4592 §2.2.1: `*.apps` is a name like any other; asking for it gets its records.
        let a = example()
            .lookup(
                &wire_name(&[b"*", b"apps", b"corp", b"internal"]),
                RecordType::A,
            )
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a_addrs(&a.answers), [Ipv4Addr::new(10, 0, 3, 1)]);
        assert_eq!(a.answers[0].name.iter().next(), Some(&b"*"[..]));
        // Below it, `*.apps` is the closest encloser, and there is no `*.*.apps` (RFC 4592
        // §3.3.1): NXDOMAIN, as for any name below an existing one.
        let below = example()
            .lookup(
                &wire_name(&[b"x", b"*", b"apps", b"corp", b"internal"]),
                RecordType::A,
            )
            .unwrap();
        assert_eq!(below.rcode, ResponseCode::NXDomain);
        // A `*` that is not the first label is an ordinary byte.
        let inner = example()
            .lookup(
                &wire_name(&[b"a*b", b"apps", b"corp", b"internal"]),
                RecordType::A,
            )
            .unwrap();
        assert_eq!(a_addrs(&inner.answers), [Ipv4Addr::new(10, 0, 3, 1)]);
    }

    #[test]
    fn names_with_any_bytes_are_answered_as_themselves() {
        let set = example();
        // Not in the zone: NXDOMAIN with the SOA, whatever the bytes.
        for label in [
            &b"a\0"[..],
            b"ap\\i",
            b"\xc3\xa9t\xc3\xa9",
            b"api.corp",
            b"\"",
            b"&",
        ] {
            let a = set
                .lookup(&wire_name(&[label, b"corp", b"internal"]), RecordType::A)
                .unwrap();
            assert_eq!(a.rcode, ResponseCode::NXDomain, "{label:?}");
            assert_eq!(a.authorities.len(), 1);
        }
        // Under the wildcard: synthesised, owned by the query name byte for byte.
        for label in [&b"x@y"[..], b"x<y", b"\x8d", b"x.y", b"\0", b"\\"] {
            let a = set
                .lookup(
                    &wire_name(&[label, b"apps", b"corp", b"internal"]),
                    RecordType::A,
                )
                .unwrap();
            assert_eq!(
                a_addrs(&a.answers),
                [Ipv4Addr::new(10, 0, 3, 1)],
                "{label:?}"
            );
            let owner: Vec<&[u8]> = a.answers[0].name.iter().collect();
            assert_eq!(owner, [label, b"apps", b"corp", b"internal"]);
            assert!(a.answers[0].name.is_fqdn());
        }
    }

    #[test]
    fn escaped_owners_are_found_by_their_bytes() {
        let text = format!(
            "{SOA}esc\\.dot IN A 10.0.0.1\nq\\092r IN A 10.0.0.2\n\
             alias IN CNAME esc\\046dot\n*.w IN A 10.0.0.3\n"
        );
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        let dotted = set
            .lookup(&wire_name(&[b"esc.dot", b"t", b"internal"]), RecordType::A)
            .unwrap();
        assert_eq!(a_addrs(&dotted.answers), [Ipv4Addr::new(10, 0, 0, 1)]);
        // Two labels `esc` and `dot` are another name.
        let split = set
            .lookup(
                &wire_name(&[b"esc", b"dot", b"t", b"internal"]),
                RecordType::A,
            )
            .unwrap();
        assert_eq!(split.rcode, ResponseCode::NXDomain);
        let backslash = set
            .lookup(&wire_name(&[b"Q\\R", b"t", b"internal"]), RecordType::A)
            .unwrap();
        assert_eq!(a_addrs(&backslash.answers), [Ipv4Addr::new(10, 0, 0, 2)]);
        // A CNAME to an escaped name leads to that name, not to `esc` under `dot`.
        let chased = set
            .lookup(&qname("alias.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a_addrs(&chased.answers), [Ipv4Addr::new(10, 0, 0, 1)]);
        // The zone's own wildcard owner, asked for literally.
        let star = set
            .lookup(&wire_name(&[b"*", b"w", b"t", b"internal"]), RecordType::A)
            .unwrap();
        assert_eq!(a_addrs(&star.answers), [Ipv4Addr::new(10, 0, 0, 3)]);
    }

    /// Names at and below a delegation are not this zone's to answer (they go to the
    /// delegated servers, see `Delegation`); the apex's own NS still is.
    #[test]
    fn delegated_names_are_not_answered_from_the_parent() {
        let text =
            format!("{SOA}@ IN NS ns\nns IN A 10.0.0.4\nsub IN NS ns.sub\nns.sub IN A 10.0.0.5\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        for name in ["sub.t.internal", "ns.sub.t.internal", "x.sub.t.internal"] {
            assert!(set.lookup(&qname(name), RecordType::NS).is_none(), "{name}");
            assert!(set.lookup(&qname(name), RecordType::A).is_none(), "{name}");
        }
        let ns = set.lookup(&qname("t.internal"), RecordType::NS).unwrap();
        assert_eq!(ns.answers.len(), 1);
        assert_eq!(a_addrs(&ns.additionals), [Ipv4Addr::new(10, 0, 0, 4)]);
    }

    #[test]
    fn mx_and_srv_answers_carry_in_zone_addresses() {
        let mx = example()
            .lookup(&qname("corp.internal"), RecordType::MX)
            .unwrap();
        assert_eq!(a_addrs(&mx.additionals), [Ipv4Addr::new(10, 0, 0, 25)]);
        let srv = example()
            .lookup(&qname("_https._tcp.api.corp.internal"), RecordType::SRV)
            .unwrap();
        assert_eq!(srv.answers.len(), 1);
        assert_eq!(srv.additionals.len(), 3);
    }

    #[test]
    fn any_returns_one_rrset() {
        let set = example();
        let any = set
            .lookup(&qname("api.corp.internal"), RecordType::ANY)
            .unwrap();
        assert_eq!(a_addrs(&any.answers).len(), 2);
        assert!(any.answers.iter().all(|r| r.record_type() == RecordType::A));
        let apex = set
            .lookup(&qname("corp.internal"), RecordType::ANY)
            .unwrap();
        assert!(
            apex.answers
                .iter()
                .all(|r| r.record_type() == RecordType::NS)
        );
        let cname = set
            .lookup(&qname("registry.corp.internal"), RecordType::ANY)
            .unwrap();
        assert_eq!(cname.answers[0].record_type(), RecordType::CNAME);
    }

    #[test]
    fn the_longest_matching_zone_answers() {
        let parent = format!("{SOA}host.sub IN A 10.0.0.1\n");
        let child =
            "$ORIGIN sub.t.internal.\n@ 60 IN SOA ns hm 1 2 3 4 60\nhost 60 IN A 10.9.9.9\n";
        let (set, problems, _dir) =
            from_texts(&[("t.internal.zone", &parent), ("sub.t.internal.zone", child)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set
            .lookup(&qname("host.sub.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a.zone, "sub.t.internal");
        assert_eq!(a_addrs(&a.answers), [Ipv4Addr::new(10, 9, 9, 9)]);
    }
}
