//! Benign services whose names look like tunnels by design, and the matcher for them.
//!
//! Antivirus and reputation lookups put hashes in names, DNS blocklists put reversed IPs, CDNs and
//! clouds put random tokens, reverse DNS puts 32 hex nibbles. Their names lose their appearance
//! points (the assessment says which entry matched), but an exception is not a bypass: the names
//! still count towards the information-volume budgets ([`super::volume`]), so a tunnel under an
//! excepted suffix is still caught by what it sends. Entries are matched as suffixes on a label
//! boundary only, never as a label anywhere in the name (`_domainkey` anywhere would let
//! `<payload>._domainkey.attacker.example` through). The shipped list can be turned off and
//! extended in `[detect]`, and extended per group in `[groups.detect]`.

use std::collections::HashMap;

/// The shipped list. An entry is a domain suffix matched on a label boundary (`akamaiedge.net`
/// matches `e1.a.akamaiedge.net`).
pub const DEFAULT_EXCEPTIONS: &[&str] = &[
    // Antivirus and reputation lookups (hashes in the name).
    "sophosxl.net",
    "sophosxl.com",
    "avqs.mcafee.com",
    "avts.mcafee.com",
    "gti.mcafee.com",
    "e5.sk",
    // DNS blocklists queried by reversed IP or by domain.
    "spamhaus.org",
    "spamhaus.net",
    "barracudacentral.org",
    "spamcop.net",
    "surbl.org",
    "uribl.com",
    "surriel.com",
    "abuseat.org",
    "dnswl.org",
    "mailspike.net",
    "sorbs.net",
    "0spam.org",
    "uceprotect.net",
    "s5h.net",
    "manitu.net",
    "junkemailfilter.com",
    "blocklist.de",
    "nordspam.com",
    "abusix.zone",
    "interserver.net",
    // Team Cymru: the malware hash registry and IP-to-ASN lookups.
    "cymru.com",
    // Resolver and latency measurement beacons: a fresh random label per probe, answered by
    // the vendor's own servers (Microsoft 365 / Edge client latency, Cloudflare's resolver
    // check behind 1.1.1.1/help).
    "clo.footprintdns.com",
    "cloudflareresolve.com",
    // Reverse DNS: IPv6 nibble names are 32 hex labels.
    "in-addr.arpa",
    "ip6.arpa",
    // CDN and cloud host names with random tokens.
    "akamaiedge.net",
    "akamai.net",
    "akamaized.net",
    "akamaihd.net",
    "edgekey.net",
    "edgesuite.net",
    "cloudfront.net",
    "amazonaws.com",
    "core.windows.net",
    "azureedge.net",
    "azurefd.net",
    "trafficmanager.net",
    "fastly.net",
    "googlevideo.com",
    "1e100.net",
];

/// The shipped entries that are lookup services: antivirus and reputation lookups and DNS
/// blocklists, whose names are questions put to the vendor's own authoritative servers (a
/// file's hash, a sender's address or domain) and whose zones no one else can be delegated.
/// What a client writes in these names reaches that vendor and nobody else, so their names
/// count towards the volume budgets at [`LOOKUP_SERVICE_SHARE`] of their information instead
/// of all of it: an antivirus engine checking five new files a second after an install, or a
/// mail relay checking each message's sender against three lists, is not contained for it,
/// and a client flooding a reputation service with names is still seen. Reverse DNS and CDN
/// entries keep counting in full: reverse zones are delegated to address holders (a tunnel can
/// have one), and appearance is all those entries are about.
pub const LOOKUP_SERVICES: &[&str] = &[
    // Antivirus and reputation lookups: zones the vendor runs for nothing else.
    "sophosxl.net",
    "sophosxl.com",
    "avqs.mcafee.com",
    "avts.mcafee.com",
    "gti.mcafee.com",
    "e5.sk",
    // DNS blocklists: the list zones themselves, not their operators' whole domains.
    "zen.spamhaus.org",
    "sbl.spamhaus.org",
    "xbl.spamhaus.org",
    "pbl.spamhaus.org",
    "sbl-xbl.spamhaus.org",
    "dbl.spamhaus.org",
    "zrd.spamhaus.org",
    "dq.spamhaus.net",
    "b.barracudacentral.org",
    "bl.spamcop.net",
    "multi.surbl.org",
    "multi.uribl.com",
    "cbl.abuseat.org",
    "list.dnswl.org",
    "bl.mailspike.net",
    "rep.mailspike.net",
    "black.uribl.com",
    "grey.uribl.com",
    "red.uribl.com",
    "dnsbl.sorbs.net",
    "psbl.surriel.com",
    "bl.0spam.org",
    "rbl.0spam.org",
    "dnsbl-1.uceprotect.net",
    "dnsbl-2.uceprotect.net",
    "dnsbl-3.uceprotect.net",
    "all.s5h.net",
    "ix.dnsbl.manitu.net",
    "hostkarma.junkemailfilter.com",
    "bl.blocklist.de",
    "dbl.nordspam.com",
    "bl.nordspam.com",
    "combined.mail.abusix.zone",
    "rbl.interserver.net",
    // Team Cymru: MHR (`<md5|sha1 hex>.hash.cymru.com`) and IP to ASN (`4.3.2.1.origin`,
    // `<nibbles>.origin6`, `4.3.2.1.peer`).
    "hash.cymru.com",
    // `AS<n>.asn.cymru.com` (the ASN's description, the usual second step after an origin
    // lookup) and `origin`, `origin6`, `peer` below it.
    "asn.cymru.com",
    // Measurement beacons: each probe's random label is a nonce only the vendor's servers see.
    "clo.footprintdns.com",
    "is-cf.cloudflareresolve.com",
];

/// The share of a lookup service's name information that counts as volume: one part in this
/// many ([`LOOKUP_SERVICES`]).
pub const LOOKUP_SERVICE_SHARE: u32 = 32;

/// Whether `qname`, covered by an exception, is a question to a lookup service: at or below
/// one of [`LOOKUP_SERVICES`], on a label boundary (`1.2.3.4.zen.spamhaus.org`, never
/// `zen.spamhaus.org.attacker.example`). The list zones are matched, not their operators'
/// whole domains: a lapsed or repurposed name elsewhere under `spamhaus.org` gets no discount.
#[must_use]
pub fn is_lookup_service(qname: &str) -> bool {
    let name = qname.strip_suffix('.').unwrap_or(qname);
    LOOKUP_SERVICES.iter().any(|zone| {
        name.len() > zone.len()
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.'
            && name[name.len() - zone.len()..].eq_ignore_ascii_case(zone)
    })
}

/// A compiled exception list: answers [`find`] over the same entries with a few hash lookups
/// (one per parent of the name) instead of a scan of every entry.
#[derive(Debug, Clone, Default)]
pub struct ExceptionSet {
    /// The entries as given, in order: the answer is the first entry (in this order) that
    /// matches, exactly as [`find`] over the list.
    entries: Vec<String>,
    /// Lower-cased suffix entries (trailing dot dropped) → index of their first occurrence.
    suffixes: HashMap<String, usize, foldhash::fast::FixedState>,
    /// Indices of entries the maps cannot represent (empty labels): checked one by one.
    scan: Vec<usize>,
}

impl ExceptionSet {
    /// Compiles `entries` (any case, with or without a trailing dot).
    #[must_use]
    pub fn new(entries: Vec<String>) -> Self {
        let mut set = Self {
            entries,
            ..Self::default()
        };
        for (i, entry) in set.entries.iter().enumerate() {
            let e = entry.strip_suffix('.').unwrap_or(entry);
            if e.is_empty() {
                continue; // never matches
            }
            let key = e.to_ascii_lowercase();
            if key.starts_with('.') || key.contains("..") {
                set.scan.push(i);
            } else {
                set.suffixes.entry(key).or_insert(i);
            }
        }
        set
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(String::as_str)
    }

    /// The first entry that `qname` (lower-case, no trailing dot) falls under; the same answer
    /// as [`find`] over [`Self::entries`].
    #[must_use]
    pub fn find(&self, qname: &str) -> Option<&str> {
        if qname.bytes().any(|b| b.is_ascii_uppercase()) {
            // The maps hold lower-case keys; mixed case is not what the pipeline passes.
            return find(self.entries(), qname);
        }
        let mut best: Option<usize> = None;
        let mut keep = |i: usize| best = Some(best.map_or(i, |b| b.min(i)));
        // One pass over the bytes: at each dot, the suffix that starts after it.
        if !self.suffixes.is_empty() {
            if let Some(&i) = self.suffixes.get(qname) {
                keep(i);
            }
            for (at, _) in qname.bytes().enumerate().filter(|(_, b)| *b == b'.') {
                if let Some(&i) = self.suffixes.get(&qname[at + 1..]) {
                    keep(i);
                }
            }
        }
        for &i in &self.scan {
            if matches(&self.entries[i], qname) {
                keep(i);
            }
        }
        best.map(|i| self.entries[i].as_str())
    }
}

/// Returns the entry of `list` that `qname` falls under, if any.
///
/// `qname` is lower-case without a trailing dot; entries are compared ignoring ASCII case and a
/// trailing dot, so operator-written entries need no normalising pass.
pub fn find<'a, I>(list: I, qname: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    list.into_iter().find(|entry| matches(entry, qname))
}

/// Whether one entry covers `qname`.
#[must_use]
pub fn matches(entry: &str, qname: &str) -> bool {
    let entry = entry.strip_suffix('.').unwrap_or(entry);
    if entry.is_empty() {
        return false;
    }
    let (q, e) = (qname.as_bytes(), entry.as_bytes());
    if q.len() < e.len() || !q[q.len() - e.len()..].eq_ignore_ascii_case(e) {
        return false;
    }
    q.len() == e.len() || q[q.len() - e.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_lookup_service_is_under_a_shipped_exception() {
        for s in LOOKUP_SERVICES {
            assert!(
                DEFAULT_EXCEPTIONS
                    .iter()
                    .any(|e| s == e || s.ends_with(&format!(".{e}"))),
                "{s}"
            );
            assert!(is_lookup_service(&format!("x.{s}")));
            assert!(is_lookup_service(&format!("X.{}.", s.to_uppercase())));
            assert!(!is_lookup_service(s), "the zone's own apex is no question");
        }
        assert!(is_lookup_service("2.0.0.127.zen.spamhaus.org"));
        assert!(is_lookup_service(
            "0f3a9c2e7b1d8a6f5e4d3c2b1a09f8e7.hash.cymru.com"
        ));
        assert!(is_lookup_service("4.3.2.1.origin.asn.cymru.com"));
        assert!(
            !is_lookup_service("x.www.cymru.com"),
            "Team Cymru's other names"
        );
        assert!(
            !is_lookup_service("x.www.spamhaus.org"),
            "the operator's other names"
        );
        assert!(!is_lookup_service("x.zen.spamhaus.org.attacker.example"));
        assert!(!is_lookup_service("xzen.spamhaus.org"));
        assert!(
            !is_lookup_service("1.2.3.4.in-addr.arpa"),
            "reverse zones are delegated"
        );
        assert!(!is_lookup_service("d111.cloudfront.net"));
    }
    use super::*;

    #[test]
    fn suffixes_match_on_label_boundaries() {
        assert!(matches("akamaiedge.net", "e123.a.akamaiedge.net"));
        assert!(matches("akamaiedge.net", "akamaiedge.net"));
        assert!(!matches("akamaiedge.net", "evilakamaiedge.net"));
        assert!(matches("Example.COM.", "a.example.com"));
        assert!(!matches("", "a.example.com"));
        assert!(matches("avqs.mcafee.com", "0.0.1.abc.avqs.mcafee.com"));
        assert!(!matches("avqs.mcafee.com", "x.mcafee.com"));
    }

    #[test]
    fn the_compiled_set_answers_like_the_scan() {
        let mut list: Vec<String> = DEFAULT_EXCEPTIONS
            .iter()
            .map(|e| (*e).to_string())
            .collect();
        list.extend(
            [
                "Zen.Spamhaus.org.",
                "_Dmarc",
                "",
                ".",
                ".odd.example",
                "akamaiedge.net",
            ]
            .map(String::from),
        );
        let set = ExceptionSet::new(list.clone());
        for q in [
            "e1.a.akamaiedge.net",
            "akamaiedge.net",
            "evilakamaiedge.net",
            "1.2.3.4.zen.spamhaus.org",
            "s1._domainkey.acme.com",
            "_dmarc.acme.com",
            "x._dmarc._domainkey.acme.com",
            "a.odd.example",
            "x..odd.example",
            "api.openai.com",
            ".",
            "",
            "a.b\\046c.spamcop.net",
            "Mixed.Case.E5.sk",
        ] {
            assert_eq!(set.find(q), find(list.iter().map(String::as_str), q), "{q}");
        }
    }

    #[test]
    fn labels_never_match_anywhere() {
        // A label entry is a suffix like any other: it matches only a name ending in it.
        assert!(!matches("_domainkey", "selector1._domainkey.example.com"));
        assert!(matches(
            "_domainkey.example.com",
            "selector1._domainkey.example.com"
        ));
        assert!(!matches(
            "_domainkey.example.com",
            "payload._domainkey.attacker.example"
        ));
        assert_eq!(
            find(DEFAULT_EXCEPTIONS.iter().copied(), "s1._domainkey.acme.com"),
            None
        );
        assert_eq!(
            find(DEFAULT_EXCEPTIONS.iter().copied(), "api.openai.com"),
            None
        );
    }
}
