//! Turning features and window counts into a 0–100 score with a per-feature breakdown.
//!
//! Two scores: the query score (this name alone) and the domain score (this client and
//! registrable domain over the window). A single odd name should never contain a client on its
//! own, so the thresholds are compared against the domain score, which needs several distinct
//! suspicious names before it climbs: one high-entropy name is evidence, a stream of them to one
//! domain is a tunnel. Point weights are documented beside each term.

use super::features::{Alphabet, QueryFeatures};
use super::window::WindowStats;

/// A query whose own score is at least this counts as "high" in the window.
pub const HIGH_QUERY_SCORE: u8 = 40;

/// Most terms in either breakdown.
const MAX_TERMS: usize = 8;

/// Feature name → points, without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Breakdown {
    /// The terms, in the order they were added.
    terms: [(&'static str, f32); MAX_TERMS],
    /// How many of `terms` are in use.
    len: usize,
}

impl Breakdown {
    /// Adds a term when it contributes anything.
    pub fn add(&mut self, name: &'static str, points: f32) {
        if points > 0.05 && self.len < MAX_TERMS {
            self.terms[self.len] = (name, points);
            self.len += 1;
        }
    }

    /// The terms in use.
    #[must_use]
    pub fn terms(&self) -> &[(&'static str, f32)] {
        &self.terms[..self.len]
    }

    /// Sum of the terms, clamped to 0..=100.
    #[must_use]
    pub fn total(&self) -> u8 {
        let sum: f32 = self.terms().iter().map(|(_, p)| p).sum();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped first
        let total = sum.round().clamp(0.0, 100.0) as u8;
        total
    }

    /// The breakdown for an alert: rounded to a tenth of a point.
    #[must_use]
    pub fn to_map(&self) -> std::collections::BTreeMap<String, f64> {
        self.terms()
            .iter()
            .map(|(k, v)| ((*k).to_string(), (f64::from(*v) * 10.0).round() / 10.0))
            .collect()
    }
}

/// Linear ramp from 0 at `lo` to 1 at `hi`.
#[inline]
fn ramp(x: f32, lo: f32, hi: f32) -> f32 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// How random the subdomain looks, 0..=1: mostly the trigram model (ordinary labels cost
/// 3–5 bits per character, encoded data 7–8.5), backed by normalised entropy.
#[must_use]
pub fn randomness(f: &QueryFeatures) -> f32 {
    if f.sub_chars == 0 {
        return 0.0;
    }
    0.65 * ramp(f.ngram_bits, 4.8, 7.0) + 0.35 * ramp(f.entropy_norm, 0.75, 0.95)
}

/// The score of one query on its own, with its breakdown.
///
/// | term | points | why |
/// |---|---|---|
/// | `randomness` | ≤ 45 | encoded payload; weighted by length, as short labels cannot be judged |
/// | `length` | ≤ 15 | subdomain part from 30 to 120 bytes: tunnels fill names |
/// | `long_label` | ≤ 10 | longest label from 24 to 52 bytes (community rule: > 52) |
/// | `charset` | 5–8 | a long hex-only, base32-with-digits or non-hostname-bytes part |
/// | `digits` | 5 | a long part with 25–75 % digits: encoded data, not words |
/// | `qtype` | ≤ 25 | NULL/PRIVATE 25, KEY 20, TXT/ANY 12, CNAME/MX 6, SRV 3 |
#[must_use]
pub fn query_score(f: &QueryFeatures) -> (u8, Breakdown) {
    let mut b = Breakdown::default();
    #[allow(clippy::cast_precision_loss)] // name lengths
    let (chars, sub_len, longest) = (f.sub_chars as f32, f.sub_len as f32, f.longest_label as f32);
    b.add("randomness", 45.0 * randomness(f) * ramp(chars, 6.0, 24.0));
    b.add("length", 15.0 * ramp(sub_len, 30.0, 120.0));
    b.add("long_label", 10.0 * ramp(longest, 24.0, 52.0));
    let long = f.sub_chars >= 16;
    let charset = match f.alphabet {
        Alphabet::Hex if long => 8.0,
        Alphabet::Base32 if long && f.digit_ratio > 0.05 => 5.0,
        // Bytes no host name has: base64 with `+/=`, base128, raw binary.
        Alphabet::Binary if long => 8.0,
        _ => 0.0,
    };
    b.add("charset", charset);
    if long && (0.25..=0.75).contains(&f.digit_ratio) {
        b.add("digits", 5.0);
    }
    b.add("qtype", f32::from(f.qtype_points));
    (b.total(), b)
}

/// Extra context for the domain score beyond the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DomainContext {
    /// The client's query rate is far above its own baseline.
    pub client_spike: bool,
}

/// The score of a (client, domain) or a domain over its window.
///
/// | term | points | why |
/// |---|---|---|
/// | `pattern` | ≤ 65 | 0.65 × mean query score × confidence (0 at 2, 1 at 12 distinct subdomains) |
/// | `unique_subdomains` | ≤ 20 | 8 → 200 distinct subdomains (log), × share of high-scoring queries |
/// | `payload_bytes` | ≤ 20 | 256 B → 4 KB of name payload in the window (log), × that share |
/// | `nxdomain` | ≤ 10 | NXDOMAIN ratio 20 % → 70 % once 10 answers are known |
/// | `client_spike` | ≤ 8 | the client's rate is far above its baseline, × that share |
#[must_use]
pub fn domain_score(w: &WindowStats, ctx: DomainContext) -> (u8, Breakdown) {
    let mut b = Breakdown::default();
    #[allow(clippy::cast_precision_loss)] // counts well inside f32 precision for scoring
    let (unique, bytes) = (w.unique as f32, w.payload_bytes as f32);
    let confidence = ramp(unique, 2.0, 12.0);
    // Byte-weighted views as well as per-query ones: a tunnel interleaves short polls and acks
    // with its long data queries, and it is the long ones that carry the data.
    b.add(
        "pattern",
        0.65 * w.mean_score.max(w.byte_mean_score) * confidence,
    );
    let high = w.high_share.max(w.high_byte_share);
    b.add(
        "unique_subdomains",
        20.0 * high * ramp(unique.max(1.0).log2(), 8f32.log2(), 200f32.log2()),
    );
    b.add(
        "payload_bytes",
        20.0 * high * ramp(bytes.max(1.0).log2(), 256f32.log2(), 4096f32.log2()),
    );
    if w.answers >= 10 {
        #[allow(clippy::cast_precision_loss)]
        let ratio = w.nxdomain as f32 / w.answers as f32;
        b.add(
            "nxdomain",
            10.0 * ramp(ratio, 0.2, 0.7) * (0.3 + 0.7 * high),
        );
    }
    if ctx.client_spike {
        b.add("client_spike", 8.0 * high);
    }
    (b.total(), b)
}

#[cfg(test)]
mod tests {
    use super::super::features::extract;
    use super::*;

    fn qs(sub: &str, qtype: u16) -> u8 {
        query_score(&extract(&format!("{sub}.example.com"), sub, qtype)).0
    }

    #[test]
    fn ordinary_names_score_low_and_tunnel_names_high() {
        assert!(qs("www", 1) < 5);
        assert!(qs("", 1) == 0);
        assert!(qs("api.eu-west-1", 28) < 15);
        assert!(qs("generativelanguage", 1) < 20);
        let iodine = "aaqbaib2ybkamaqabgaaaaaaaaaaaaaabqaaaaabaaaaaaaaaaaaaaaaaaaaaaaaa.bvhmzxw4ytboj2gk5ltnfxgozlsfzsgk3tbo4ytanbqgiydcmrtgqzdsmzv";
        assert!(
            qs(iodine, 10) >= 70,
            "iodine NULL scores {}",
            qs(iodine, 10)
        );
        let hex = "0f3a9c2e7b1d8a6f5e4d3c2b1a09f8e7d6c5b4a3";
        assert!(qs(hex, 1) >= 50, "40 hex chars score {}", qs(hex, 1));
        assert!(qs(hex, 16) > qs(hex, 1));
    }

    #[test]
    fn domain_score_needs_many_distinct_suspicious_names() {
        let one = WindowStats {
            queries: 1,
            unique: 1,
            payload_bytes: 60,
            mean_score: 90.0,
            high_share: 1.0,
            ..Default::default()
        };
        assert!(domain_score(&one, DomainContext::default()).0 < 10);
        let many = WindowStats {
            queries: 200,
            unique: 200,
            payload_bytes: 20_000,
            mean_score: 90.0,
            high_share: 1.0,
            ..Default::default()
        };
        let (s, b) = domain_score(&many, DomainContext::default());
        assert!(s >= 90, "{b:?}");
        // Many distinct but ordinary names (a CDN, a crawler): low.
        let benign = WindowStats {
            queries: 300,
            unique: 300,
            payload_bytes: 3000,
            mean_score: 8.0,
            high_share: 0.0,
            answers: 300,
            nxdomain: 10,
            ..Default::default()
        };
        assert!(domain_score(&benign, DomainContext { client_spike: true }).0 < 10);
        // NXDOMAIN ratio and spikes add, named in the breakdown.
        let nx = WindowStats {
            answers: 100,
            nxdomain: 80,
            ..many
        };
        let (_, b) = domain_score(&nx, DomainContext { client_spike: true });
        let names: Vec<_> = b.terms().iter().map(|t| t.0).collect();
        assert_eq!(
            names,
            [
                "pattern",
                "unique_subdomains",
                "payload_bytes",
                "nxdomain",
                "client_spike"
            ]
        );
        assert!(b.to_map().contains_key("nxdomain"));
    }

    #[test]
    fn breakdown_total_is_clamped() {
        let mut b = Breakdown::default();
        for _ in 0..20 {
            b.add("x", 30.0);
        }
        assert_eq!(b.total(), 100);
        assert_eq!(b.terms().len(), MAX_TERMS);
    }
}
