//! What `/metrics` discloses to a scraper without the admin token.
//!
//! The endpoint listens on loopback, where agents on the same host can reach it too. Group
//! names (which say how the fleet is organised) and upstream addresses (where the resolver
//! forwards) are worth hiding from them. With `metrics_labels = "redacted"` (the default) an
//! unauthenticated scrape sees each `group` and `upstream` label value replaced by a stable
//! opaque id (`h` + 8 hex digits of its SHA-256); metric names, label keys and the number of
//! series are unchanged, so scrapers and alert rules that do not match on those values keep
//! working. A scrape with the bearer token sees everything. The id hides a name from someone
//! who does not know it; it does not stop someone from confirming a guess.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The `[admin] metrics_labels` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsLabels {
    /// Without the token, `group` and `upstream` values are replaced by opaque ids.
    #[default]
    Redacted,
    /// Everything in full, to anyone who can reach the endpoint (the old behaviour).
    Full,
}

/// Label keys whose values are redacted.
const SENSITIVE: [&str; 2] = ["group", "upstream"];

/// The opaque id of a label value.
#[must_use]
pub fn opaque_id(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    format!("h{}", hex::encode(&digest[..4]))
}

/// Prometheus text with every sensitive label value replaced by its [`opaque_id`].
#[must_use]
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with('#') {
            out.push_str(line);
            continue;
        }
        let Some(open) = line.find('{') else {
            out.push_str(line);
            continue;
        };
        out.push_str(&line[..=open]);
        let mut rest = &line[open + 1..];
        // key="value" pairs up to the closing brace; values may hold escaped quotes.
        loop {
            let Some(eq) = rest.find("=\"") else {
                out.push_str(rest);
                break;
            };
            let key = rest[..eq].trim_start_matches([',', ' ']);
            out.push_str(&rest[..eq + 2]);
            let value_start = eq + 2;
            let bytes = rest.as_bytes();
            let mut i = value_start;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            let i = i.min(bytes.len());
            let value = &rest[value_start..i];
            if SENSITIVE.contains(&key) {
                out.push_str(&opaque_id(value));
            } else {
                out.push_str(value);
            }
            rest = &rest[i..];
            if !rest.starts_with("\",") {
                out.push_str(rest);
                break;
            }
            out.push_str("\",");
            rest = &rest[2..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_upstream_values_become_opaque_ids() {
        let text = "# TYPE dnsward_queries_total counter\n\
            dnsward_queries_total{group=\"payments-agents\",verdict=\"allow\",qtype=\"A\"} 3\n\
            dnsward_upstream_requests_total{upstream=\"10.0.0.53:53\",transport=\"udp\"} 7\n\
            dnsward_cache_entries 4\n\
            weird{detail=\"a\\\"b\",group=\"x\"} 1\n";
        let got = redact(text);
        assert!(
            !got.contains("payments-agents") && !got.contains("10.0.0.53"),
            "{got}"
        );
        assert!(got.contains(&format!(
            "dnsward_queries_total{{group=\"{}\",verdict=\"allow\",qtype=\"A\"}} 3\n",
            opaque_id("payments-agents")
        )));
        assert!(got.contains(&format!(
            "{{upstream=\"{}\",transport=\"udp\"}} 7\n",
            opaque_id("10.0.0.53:53")
        )));
        assert!(got.contains("dnsward_cache_entries 4\n"));
        assert!(got.contains(&format!(
            "weird{{detail=\"a\\\"b\",group=\"{}\"}} 1\n",
            opaque_id("x")
        )));
        assert!(got.starts_with("# TYPE dnsward_queries_total counter\n"));
        assert_eq!(got.lines().count(), text.lines().count());
        assert_eq!(opaque_id("a"), opaque_id("a"));
        assert_ne!(opaque_id("a"), opaque_id("b"));
    }

    #[test]
    fn the_default_is_redacted() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default)]
            m: MetricsLabels,
        }
        let t: T = toml::from_str("").unwrap();
        assert_eq!(t.m, MetricsLabels::Redacted);
        let t: T = toml::from_str("m = \"full\"").unwrap();
        assert_eq!(t.m, MetricsLabels::Full);
    }
}
