//! Benign services whose names look like tunnels by design, and the matcher for them.
//!
//! Antivirus and reputation lookups put hashes in names, DNS blocklists put reversed IPs, CDNs and
//! clouds put random tokens, reverse DNS puts 32 hex nibbles. Scoring them would bury real
//! alerts, so names under these suffixes are not scored (the assessment says which entry
//! matched). The shipped list can be turned off and extended in `[detect]`, and extended per
//! group in `[groups.detect]`.

/// The shipped list. An entry is a domain suffix matched on a label boundary (`akamaiedge.net`
/// matches `e1.a.akamaiedge.net`), or a single label starting with `_` matched anywhere in the
/// name (`_domainkey` matches `s1._domainkey.example.com`).
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
    "sorbs.net",
    "surbl.org",
    "uribl.com",
    "surriel.com",
    // Mail authentication records.
    "_domainkey",
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
    if entry.starts_with('_') && !entry.contains('.') {
        return qname
            .split('.')
            .any(|label| label.eq_ignore_ascii_case(entry));
    }
    let (q, e) = (qname.as_bytes(), entry.as_bytes());
    if q.len() < e.len() || !q[q.len() - e.len()..].eq_ignore_ascii_case(e) {
        return false;
    }
    q.len() == e.len() || q[q.len() - e.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
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
    fn underscore_labels_match_anywhere() {
        assert!(matches("_domainkey", "selector1._domainkey.example.com"));
        assert!(!matches("_domainkey", "x_domainkey.example.com"));
        assert_eq!(
            find(DEFAULT_EXCEPTIONS.iter().copied(), "s1._domainkey.acme.com"),
            Some("_domainkey")
        );
        assert_eq!(
            find(DEFAULT_EXCEPTIONS.iter().copied(), "api.openai.com"),
            None
        );
    }
}
