//! Address-shaped names: the reverse trees keyed by network, and blocklist-shaped lookups.
//!
//! Two kinds of name carry an IP address rather than words, and both were budgeted wrongly:
//!
//! - **Reverse names** (`4.3.2.1.in-addr.arpa`, 32 nibbles under `ip6.arpa`). Their registrable
//!   domain is the first octet's or first nibble's zone (`10.in-addr.arpa`, `2.ip6.arpa`: the
//!   Public Suffix List has `in-addr.arpa` and `ip6.arpa`), so a host reverse-resolving its
//!   peers put every peer of 2000::/4 on one key and was sinkholed. The detector keys them by
//!   network instead ([`detection_zone`]): the /16 in `in-addr.arpa` and the /32 in `ip6.arpa`.
//!   Reverse zones are delegated on those boundaries or below (an RIR's smallest IPv6
//!   allocation is a /32, an end site gets a /48 to a /64; IPv4 reverse zones are /16s and /24s,
//!   RFC 2317 classless zones sit below a /24), so a tunnel under a delegated reverse zone has
//!   all its names under one key, while peers from many networks spread over many keys. A
//!   finer key (/24, /48) would let a zone's own labels choose the key: octets under a /16
//!   would land on 256 keys. The registrable domain itself is unchanged: policy, events,
//!   containment and the review console still see `10.in-addr.arpa`.
//! - **Blocklist lookups** (`4.3.2.1.zen.spamhaus.org`): a reversed IPv4 address (exactly four
//!   decimal labels 0–255) or a reversed IPv6 address (32 one-nibble labels) directly under a
//!   list's zone ([`address_lookup`]). A mail relay checks each sender's address against
//!   several lists within a moment, so the same address is asked under several zones: the
//!   address is one piece of information, not one per list. [`AddressLookups`] remembers, per
//!   client, which registrable domain asked each address last; an address asked under another
//!   domain just before is *corroborated*, and a client most of whose addresses are (a
//!   multi-list checker) has its lookups under zones no list names priced like the shipped
//!   lookup services' ([`super::exceptions::LOOKUP_SERVICE_SHARE`]). A tunnel writing fake
//!   addresses under its own zone alone is priced at its 32 bits a name; one that also asks
//!   each fake address under a second zone earns the discount and is held to the budgets
//!   divided by it (see the README's limits). Hash labels (32/40/64 hex) are not discounted
//!   here: under a zone no list names they are a hex tunnel's shape exactly.

use std::sync::atomic::{AtomicU64, Ordering};

use super::volume::{LastAsker, SharedNames};

/// Labels of an `in-addr.arpa` detection key below `in-addr.arpa`: a /16.
pub const V4_KEY_LABELS: usize = 2;
/// Nibble labels of an `ip6.arpa` detection key below `ip6.arpa`: a /32.
pub const V6_KEY_LABELS: usize = 8;

/// The zone the detector keys `qname` under ([`super::Detector`]'s per-key state): for a name
/// in the reverse trees, its network's zone, `b.a.in-addr.arpa` (the /16) or the first eight
/// nibbles under `ip6.arpa` (the /32), or the name itself when it is shorter; any other name's
/// registrable domain `domain`. Always a suffix of `qname` (or `domain` itself).
#[must_use]
#[inline]
pub fn detection_zone<'a>(qname: &'a str, domain: &'a str) -> &'a str {
    // One 4-byte comparison for nearly every name, inline: only `arpa` domains can be reverse.
    if !domain.ends_with("arpa") {
        return domain;
    }
    reverse_zone(qname, domain)
}

/// [`detection_zone`] for a domain ending in `arpa`.
#[inline(never)]
fn reverse_zone<'a>(qname: &'a str, domain: &'a str) -> &'a str {
    if !domain.ends_with(".arpa") && domain != "arpa" {
        return domain;
    }
    let (tree, labels) = if crate::names::is_at_or_below(qname, "in-addr.arpa") {
        ("in-addr.arpa", V4_KEY_LABELS)
    } else if crate::names::is_at_or_below(qname, "ip6.arpa") {
        ("ip6.arpa", V6_KEY_LABELS)
    } else {
        return domain;
    };
    // Walk left from the tree over `labels` labels.
    let mut start = qname.len() - tree.len();
    for _ in 0..labels {
        if start == 0 {
            break;
        }
        // `qname[..start]` ends with the dot before the zone found so far.
        let head = &qname[..start - 1];
        start = head.rfind('.').map_or(0, |dot| dot + 1);
    }
    &qname[start..]
}

/// `target`, a PTR answer's name for the reverse name `qname`, with every run of digits that is
/// one of `qname`'s decimal labels (the IPv4 address's octets) written `0`: the template an
/// ISP's or a cloud's reverse names share (`ip-1-2-3-4.pool.isp.example` for
/// `4.3.2.1.in-addr.arpa` is `ip-0-0-0-0.pool.isp.example`). Digits that are not the question's
/// stay, so data written into a target is priced as before.
#[must_use]
pub fn ptr_template(target: &str, qname: &str) -> String {
    if !qname.ends_with("in-addr.arpa") {
        return target.to_string();
    }
    let octets: Vec<&str> = qname
        .split('.')
        .take_while(|l| !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let mut out = String::with_capacity(target.len());
    let mut rest = target;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            let run = &rest[..digits];
            if octets.contains(&run) {
                out.push('0');
            } else {
                out.push_str(run);
            }
            rest = &rest[digits..];
        } else {
            let other = rest.bytes().take_while(|b| !b.is_ascii_digit()).count();
            out.push_str(&rest[..other]);
            rest = &rest[other..];
        }
    }
    out
}

/// Which family an address-shaped left part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Four decimal labels 0–255.
    V4,
    /// 32 one-hex-digit labels.
    V6,
}

/// A name that is a reversed IP address directly under a zone: `4.3.2.1.<zone>` or
/// `<32 nibbles>.<zone>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressLookup<'a> {
    /// The reversed address, as written (`4.3.2.1`).
    pub address: &'a str,
    /// The zone under it (`zen.spamhaus.org`, `in-addr.arpa`).
    pub zone: &'a str,
    /// Its family.
    pub family: Family,
}

impl AddressLookup<'_> {
    /// The most information the address can carry, bits: 32 or 128.
    #[must_use]
    pub fn max_bits(&self) -> u32 {
        match self.family {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// `qname` as a reversed address under a zone of at least two labels, if it is one: exactly
/// four decimal labels of 0–255 without leading zeros (`1.0.0.127`), or exactly 32 labels of
/// one hex digit, then the zone. Anything else (five numeric labels, `001`, `256`, a hash
/// label) is not.
#[must_use]
pub fn address_lookup(qname: &str) -> Option<AddressLookup<'_>> {
    let first = *qname.as_bytes().first()?;
    if !first.is_ascii_hexdigit() {
        return None; // nearly every name: one comparison
    }
    let bytes = qname.as_bytes();
    let zone_after = |end: usize| {
        let zone = qname.get(end + 1..)?;
        (bytes.get(end) == Some(&b'.') && zone.contains('.') && !zone.starts_with('.'))
            .then_some(zone)
    };
    // 32 nibbles: `x.` 32 times.
    if bytes.len() > 64
        && bytes[..64]
            .chunks(2)
            .all(|c| c[0].is_ascii_hexdigit() && c[1] == b'.')
        && let Some(zone) = zone_after(63)
        && !zone
            .split('.')
            .next()
            .is_some_and(|l| l.len() == 1 && l.as_bytes()[0].is_ascii_hexdigit())
    {
        return Some(AddressLookup {
            address: &qname[..63],
            zone,
            family: Family::V6,
        });
    }
    // Four octets.
    let mut at = 0;
    for i in 0..4 {
        let label_end = qname[at..].find('.').map(|p| at + p)?;
        let label = &qname[at..label_end];
        let ok = !label.is_empty()
            && label.len() <= 3
            && label.bytes().all(|b| b.is_ascii_digit())
            && (label.len() == 1 || !label.starts_with('0'))
            && label.parse::<u16>().is_ok_and(|v| v <= 255);
        if !ok {
            return None;
        }
        if i == 3 {
            let zone = zone_after(label_end)?;
            // A fifth numeric label: not an address (the tunnel's octets, a counter).
            if zone
                .split('.')
                .next()
                .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            return Some(AddressLookup {
                address: &qname[..label_end],
                zone,
                family: Family::V4,
            });
        }
        at = label_end + 1;
    }
    None
}

/// A reversed address in the reverse trees counts one part in this many of what it adds, as
/// an address in an answer does (`ANSWER_PART_BITS_PER_BYTE` in [`super`]): what a network
/// puts in its hosts' addresses (SLAAC and privacy interface identifiers) looks as random as
/// data, and a host reverse-resolving its peers asks for many of them; a tunnel through them
/// needs volume. Only full addresses: octets or labels beyond them under a delegated reverse
/// zone count in full.
pub const REVERSE_ADDRESS_SHARE: u32 = 4;

/// Slots of the per-client counters ([`AddressLookups`]): 32 KiB.
const CLIENT_SLOTS: usize = 4096;
/// Slots of the (client, address) → last domain table: 512 KiB.
const ASKED_SLOTS: usize = 1 << 16;
/// Address lookups a client must have made before its corroboration share is trusted.
const MIN_HISTORY: u64 = 4;
/// Both counters are halved when together they reach this: the share follows a client's last
/// few hundred address lookups, and corroboration banked in advance (a burst of lookups under
/// several real lists) buys at most ~500 uncorroborated first asks afterwards.
const DECAY_AT: u64 = 512;

/// What [`AddressLookups::record`] found out about one address lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corroboration {
    /// This client asked the same address under another registrable domain last.
    pub corroborated: bool,
    /// This client checks addresses against several zones: at least as many of its recent
    /// address lookups were corroborated as were first asks.
    pub checker: bool,
}

/// Per client: which registrable domain asked each address last, and how many of the client's
/// address lookups were first asks and how many corroborated. Lock-free and fixed in size
/// (544 KiB) whatever the traffic: a flood of addresses only overwrites slots, and clients
/// sharing a counter slot take it over from each other (the history starts again).
#[derive(Debug)]
pub struct AddressLookups {
    /// (client, address) → the domain that asked it last.
    asked: SharedNames,
    /// Per client slot: `tag << 48 | first << 24 | corroborated` (24-bit counters, 16-bit tag).
    clients: Box<[AtomicU64]>,
}

impl Default for AddressLookups {
    fn default() -> Self {
        Self {
            asked: SharedNames::new(ASKED_SLOTS),
            clients: (0..CLIENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl AddressLookups {
    /// Records that the client `client_hash` asked the address `address_hash` (a keyed hash of
    /// the client and the address) under the domain `domain_key`; `fresh` when the name was
    /// new for the (client, domain) (only those move the counters).
    pub fn record(
        &self,
        client_hash: u64,
        address_hash: u64,
        domain_key: u64,
        fresh: bool,
    ) -> Corroboration {
        let last = self.asked.record(address_hash, domain_key);
        let corroborated = last == LastAsker::Other;
        let slot = &self.clients[usize::try_from(client_hash % CLIENT_SLOTS as u64).unwrap_or(0)];
        let tag = (client_hash >> 48) | 1;
        let mask = (1u64 << 24) - 1;
        let mut word = slot.load(Ordering::Relaxed);
        if fresh {
            loop {
                let (mut first, mut corr) = if word >> 48 == tag {
                    ((word >> 24) & mask, word & mask)
                } else {
                    (0, 0)
                };
                if corroborated {
                    corr += 1;
                } else {
                    first += 1;
                }
                if first + corr >= DECAY_AT {
                    first /= 2;
                    corr /= 2;
                }
                let new = (tag << 48) | (first << 24) | corr;
                match slot.compare_exchange_weak(word, new, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        word = new;
                        break;
                    }
                    Err(now) => word = now,
                }
            }
        }
        let (first, corr) = if word >> 48 == tag {
            ((word >> 24) & mask, word & mask)
        } else {
            (0, 0)
        };
        Corroboration {
            corroborated,
            checker: first + corr >= MIN_HISTORY && corr >= first,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_ptr_target_is_read_as_its_template() {
        let q = "4.3.2.198.in-addr.arpa";
        for (target, want) in [
            (
                "ip-198-2-3-4.pool.isp.example",
                "ip-0-0-0-0.pool.isp.example",
            ),
            (
                "static.4.3.2.198.clients.example",
                "static.0.0.0.0.clients.example",
            ),
            (
                "c-198-2-3-4.hsd1.ca.comcast.net",
                "c-0-0-0-0.hsd1.ca.comcast.net",
            ),
            // Digits that are not the question's stay: data is priced as before.
            ("host-77-1999-5.example", "host-77-1999-5.example"),
            ("mail.example.com", "mail.example.com"),
        ] {
            assert_eq!(ptr_template(target, q), want);
        }
        assert_eq!(
            ptr_template("x-1-2.example", "1.2.ip6.arpa"),
            "x-1-2.example"
        );
    }

    use super::*;

    #[test]
    fn reverse_names_are_keyed_by_their_network() {
        let d = crate::names::registrable_domain;
        let v6 = "b.a.9.8.7.6.5.4.3.2.1.0.f.e.d.c.b.a.9.8.7.6.5.4.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(d(v6), "2.ip6.arpa");
        assert_eq!(detection_zone(v6, d(v6)), "8.b.d.0.1.0.0.2.ip6.arpa");
        let v4 = "4.3.2.10.in-addr.arpa";
        assert_eq!(d(v4), "10.in-addr.arpa");
        assert_eq!(detection_zone(v4, d(v4)), "2.10.in-addr.arpa");
        // The tunnel's octets under a /16 stay on the /16.
        let t = "12.201.7.99.3.5.7.10.in-addr.arpa";
        assert_eq!(detection_zone(t, d(t)), "7.10.in-addr.arpa");
        // Shorter names are their own key; other names keep their registrable domain.
        assert_eq!(
            detection_zone("10.in-addr.arpa", "10.in-addr.arpa"),
            "10.in-addr.arpa"
        );
        assert_eq!(
            detection_zone("in-addr.arpa", "in-addr.arpa"),
            "in-addr.arpa"
        );
        assert_eq!(
            detection_zone("2.0.0.2.ip6.arpa", "2.ip6.arpa"),
            "2.0.0.2.ip6.arpa"
        );
        assert_eq!(
            detection_zone("www.example.com", "example.com"),
            "example.com"
        );
        assert_eq!(detection_zone("x.home.arpa", "home.arpa"), "home.arpa");
    }

    #[test]
    fn address_lookups_have_the_blocklist_shape_only() {
        let a = address_lookup("4.3.2.1.zen.spamhaus.org");
        assert_eq!(
            a,
            Some(AddressLookup {
                address: "4.3.2.1",
                zone: "zen.spamhaus.org",
                family: Family::V4
            })
        );
        assert_eq!(
            address_lookup("255.0.10.127.in-addr.arpa").map(|a| a.zone),
            Some("in-addr.arpa")
        );
        let v6 =
            "b.a.9.8.7.6.5.4.3.2.1.0.f.e.d.c.b.a.9.8.7.6.5.4.8.b.d.0.1.0.0.2.origin6.asn.cymru.com";
        let a = address_lookup(v6).map(|a| (a.zone, a.family, a.address.len()));
        assert_eq!(a, Some(("origin6.asn.cymru.com", Family::V6, 63)));
        for not in [
            "256.3.2.1.bl.example",
            "04.3.2.1.bl.example",
            "5.4.3.2.1.bl.example",
            "4.3.2.bl.example",
            "4.3.2.1.example",
            "4.3.2.1.",
            "0f3a9c2e7b1d8a6f5e4d3c2b1a09f8e7.hash.cymru.com",
            "www.example.com",
            "",
        ] {
            assert_eq!(address_lookup(not), None, "{not}");
        }
    }

    #[test]
    fn corroboration_needs_another_domain_and_a_history() {
        let t = AddressLookups::default();
        let (client, other) = (0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321);
        // One zone only: never corroborated, never a checker.
        for a in 0..20u64 {
            let c = t.record(client, a, 1, true);
            assert!(!c.corroborated && !c.checker);
            assert!(!t.record(client, a, 1, false).corroborated, "a repeat");
        }
        // Each address under two domains: corroborated, and a checker once the share shows.
        let mut last = None;
        for a in 100..140u64 {
            t.record(other, a, 1, true);
            last = Some(t.record(other, a, 2, true));
        }
        assert_eq!(
            last,
            Some(Corroboration {
                corroborated: true,
                checker: true
            })
        );
        // The first client's history is its own.
        assert!(!t.record(client, 999, 1, true).checker);
        // Corroboration banked in advance (each address under ten lists) buys a bounded number
        // of lone first asks.
        let banker = 0x5555_6666_7777_8888;
        for a in 1000..3000u64 {
            for list in 1..=10 {
                t.record(banker, a, list, true);
            }
        }
        let lone = (10_000..20_000u64)
            .take_while(|a| t.record(banker, *a, 9, true).checker)
            .count();
        assert!(
            (100..=600).contains(&lone),
            "{lone} lone first asks discounted"
        );
    }
}
