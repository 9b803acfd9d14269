//! Turning features and window counts into a 0–100 score with a per-feature breakdown.
//!
//! Two scores: the query score (this name alone: its *appearance*) and the domain score (this
//! client and registrable domain, or this client across domains, over three windows). A single
//! odd name never contains a client on its own, so the thresholds are compared against the
//! domain score, whose main term is the information volume the client sent
//! ([`super::volume`]), whatever the names look like; appearance adds confidence and makes the
//! volume budget run out sooner. Point weights are documented beside each term.

use super::features::{Alphabet, QueryFeatures};
use super::volume::{Budgets, volume_fraction};
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
        let mut points = Points::default();
        for &(name, p) in self.terms() {
            points.add(name, p);
        }
        points.total()
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

/// Where a score's terms go: a [`Breakdown`] (for an alert) or only their sum ([`Points`], every
/// query). Both keep a term under the same condition, so the two totals are the same number.
pub trait Terms {
    /// Adds a term when it contributes anything.
    fn add(&mut self, name: &'static str, points: f32);
}

impl Terms for Breakdown {
    fn add(&mut self, name: &'static str, points: f32) {
        Breakdown::add(self, name, points);
    }
}

/// The sum of the terms a [`Breakdown`] would keep, in the same order, without keeping them:
/// what a query's score needs when no alert is due (nearly always).
#[derive(Debug, Clone, Copy)]
pub struct Points {
    /// Sum so far (from −0.0, as `f32`'s `Sum`, so a breakdown's total is the same bits).
    sum: f32,
    /// Terms kept, to stop where a breakdown would be full.
    len: usize,
}

impl Default for Points {
    fn default() -> Self {
        Self { sum: -0.0, len: 0 }
    }
}

impl Terms for Points {
    fn add(&mut self, _name: &'static str, points: f32) {
        if points > 0.05 && self.len < MAX_TERMS {
            self.sum += points;
            self.len += 1;
        }
    }
}

impl Points {
    /// The sum, clamped to 0..=100.
    #[must_use]
    pub fn total(&self) -> u8 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped first
        let total = self.sum.round().clamp(0.0, 100.0) as u8;
        total
    }
}

/// Linear ramp from 0 at `lo` to 1 at `hi`.
#[inline]
#[must_use]
pub fn ramp(x: f32, lo: f32, hi: f32) -> f32 {
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

/// Points the volume term gives when a window's budget is used up: enough on its own to
/// throttle and sinkhole (70, 80 by default), so names that look ordinary are contained on what
/// they carry; quarantine (90) also needs appearance, answers or NXDOMAIN evidence.
pub const VOLUME_POINTS: f32 = 85.0;

/// Which of the three information-volume windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeWindow {
    /// Bursts (`short_window`).
    Short,
    /// The detection window (`window`).
    Window,
    /// Slow drips (`long_window`).
    Long,
}

impl VolumeWindow {
    /// Stable name used in breakdowns and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Window => "window",
            Self::Long => "long",
        }
    }
}

/// Everything the domain (or client-wide) score looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// The short, detection and long windows, in that order.
    pub windows: [WindowStats; 3],
    /// Budget per window, bytes (already scaled for the group and scope).
    pub budgets: Budgets,
    /// ≤ 1: prevalence of the domain across the fleet (1 = used by this client alone).
    pub prevalence: f32,
    /// The client's query rate is far above its own baseline.
    pub client_spike: bool,
    /// Breakdown term name prefix: `volume` (client, domain), `client_volume` (client-wide) or
    /// `fleet_volume` (domain-wide).
    pub scope: Scope,
}

/// Whose evidence a score is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One client's queries to one registrable domain.
    ClientDomain,
    /// One client's queries to every domain.
    Client,
    /// Every client's queries to one domain: may alert, never contains a client.
    Domain,
}

impl Scope {
    /// Stable name used in events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientDomain => "client_domain",
            Self::Client => "client",
            Self::Domain => "domain",
        }
    }

    fn term(self, w: VolumeWindow) -> &'static str {
        match (self, w) {
            (Self::ClientDomain, VolumeWindow::Short) => "volume.short",
            (Self::ClientDomain, VolumeWindow::Window) => "volume.window",
            (Self::ClientDomain, VolumeWindow::Long) => "volume.long",
            (Self::Client, VolumeWindow::Short) => "client_volume.short",
            (Self::Client, VolumeWindow::Window) => "client_volume.window",
            (Self::Client, VolumeWindow::Long) => "client_volume.long",
            (Self::Domain, VolumeWindow::Short) => "fleet_volume.short",
            (Self::Domain, VolumeWindow::Window) => "fleet_volume.window",
            (Self::Domain, VolumeWindow::Long) => "fleet_volume.long",
        }
    }
}

/// The volume measurement that counted most, for the alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VolumeTrip {
    /// The window.
    pub window: VolumeWindow,
    /// Its counts.
    pub stats: WindowStats,
    /// Effective budget: the configured one divided by the appearance and prevalence factors.
    pub budget: f32,
    /// Fraction of the budget's log range used, 0..=1.
    pub fraction: f32,
}

impl VolumeTrip {
    /// No volume measured.
    #[must_use]
    pub fn none() -> Self {
        Self {
            window: VolumeWindow::Window,
            stats: WindowStats::default(),
            budget: 0.0,
            fraction: 0.0,
        }
    }
}

/// The most [`domain_score`] gives without its volume term: pattern 40, NXDOMAIN 8, client
/// spike 6 (rounded up).
pub const MAX_POINTS_WITHOUT_VOLUME: u8 = 54;

/// The score of a (client, domain), a client or a domain over its windows.
///
/// | term | points | why |
/// |---|---|---|
/// | `volume.<window>` | ≤ 85 | novel information in names (+¼ of carrier answer bytes) against the window's budget, log scale from ⅛ budget; the fullest window counts |
/// | `pattern` | ≤ 40 | 0.4 × mean query score (byte-weighted) × confidence (0 at 2, 1 at 12 distinct subdomains) |
/// | `nxdomain` | ≤ 8 | NXDOMAIN ratio 20 % → 70 % once 10 answers are known, × evidence so far |
/// | `client_spike` | ≤ 6 | the client's rate is far above its baseline, × evidence so far |
///
/// Appearance does not gate volume; it accelerates it: bytes count `1 + high-score byte share`
/// times (up to twice), so a tunnel whose names look encoded is contained after half the bytes;
/// names carrying 32 → 96 novel bytes each double that again (benign hashes and IDs are small).
/// Prevalence (≤ 1) scales the bytes and the pattern points.
#[must_use]
pub fn domain_score(e: &Evidence) -> (u8, Breakdown, VolumeTrip) {
    let mut b = Breakdown::default();
    let trip = domain_terms(e, &mut b);
    (b.total(), b, trip)
}

/// [`domain_score`]'s total alone, without its breakdown and trip: the same number.
#[must_use]
pub fn domain_points(e: &Evidence) -> u8 {
    let mut p = Points::default();
    let _ = domain_terms(e, &mut p);
    p.total()
}

/// [`domain_score`]'s terms into `b`; returns the volume trip.
#[inline]
fn domain_terms<T: Terms>(e: &Evidence, b: &mut T) -> VolumeTrip {
    let w = &e.windows[1];
    #[allow(clippy::cast_precision_loss)] // counts well inside f32 precision for scoring
    let unique = w.unique as f32;
    let confidence = ramp(unique, 2.0, 12.0);
    let high = w.high_share.max(w.high_byte_share);
    // Names carrying much each (tunnels fill them; benign hashes and IDs stay under ~30 bytes)
    // use the budget up faster, as do names that look encoded.
    #[allow(clippy::cast_precision_loss)]
    let per_name = w.novel_bytes as f32 / (w.novel_names.max(1) as f32);
    // On a prevalent domain random-looking names are the service's design (CDN hashes), so
    // appearance accelerates less there.
    let accel = (1.0 + w.high_byte_share.clamp(0.0, 1.0) * e.prevalence)
        * (1.0 + ramp(per_name, 32.0, 96.0));
    // The fullest window; its counts are copied out once, for the trip.
    let mut best = (VolumeWindow::Window, 0.0f32);
    for (window, stats, budget) in [
        (VolumeWindow::Short, &e.windows[0], e.budgets.short),
        (VolumeWindow::Window, &e.windows[1], e.budgets.window),
        (VolumeWindow::Long, &e.windows[2], e.budgets.long),
    ] {
        let (fraction, _) = volume_fraction(stats, budget, accel, e.prevalence);
        if fraction > best.1 {
            best = (window, fraction);
        }
    }
    let (window, fraction) = best;
    let budget = match window {
        VolumeWindow::Short => e.budgets.short,
        VolumeWindow::Window => e.budgets.window,
        VolumeWindow::Long => e.budgets.long,
    };
    let mut trip = VolumeTrip {
        window,
        stats: e.windows[window as usize],
        // With no fraction (no window over its floor) the configured budget, as before.
        budget: if fraction > 0.0 {
            budget / (accel * e.prevalence)
        } else {
            budget
        },
        fraction,
    };
    // One odd name alone never contains a client: full volume points need four distinct
    // pieces of data in the window, novel names or answers that said something new (a burst
    // of two long names scores a third; a tunnel polling one name for fresh answers has many).
    #[allow(clippy::cast_precision_loss)]
    let names = ramp(
        trip.stats.novel_names.max(trip.stats.down_answers) as f32,
        1.0,
        4.0,
    );
    trip.fraction *= names;
    b.add(e.scope.term(trip.window), VOLUME_POINTS * trip.fraction);
    let evidence = high.max(trip.fraction);
    // A domain many clients use looks random by design (CDN hashes): its appearance counts
    // less, as its volume does.
    b.add(
        "pattern",
        0.4 * w.mean_score.max(w.byte_mean_score) * confidence * e.prevalence,
    );
    if w.answers >= 10 {
        #[allow(clippy::cast_precision_loss)]
        let ratio = w.nxdomain as f32 / w.answers as f32;
        b.add(
            "nxdomain",
            8.0 * ramp(ratio, 0.2, 0.7) * (0.3 + 0.7 * evidence),
        );
    }
    if e.client_spike {
        b.add("client_spike", 6.0 * evidence);
    }
    trip
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

    fn evidence(w: WindowStats) -> Evidence {
        Evidence {
            windows: [w, w, w],
            budgets: Budgets {
                short: 768.0,
                window: 1200.0,
                long: 2560.0,
            },
            prevalence: 1.0,
            client_spike: false,
            scope: Scope::ClientDomain,
        }
    }

    #[test]
    fn points_alone_are_the_breakdowns_total() {
        // Every query's score comes from `domain_points`; an alert's breakdown from
        // `domain_score`: the two must agree on every input, near every rounding edge too.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for i in 0..20_000u32 {
            #[allow(clippy::cast_precision_loss)]
            let window = |next: &mut dyn FnMut(u64) -> u64| WindowStats {
                queries: next(500),
                unique: next(40),
                payload_bytes: next(4000),
                mean_score: next(1000) as f32 / 10.0,
                high_share: next(101) as f32 / 100.0,
                high_byte_share: next(101) as f32 / 100.0,
                byte_mean_score: next(1000) as f32 / 10.0,
                answers: next(60),
                nxdomain: next(60),
                novel_bytes: next(6000),
                novel_names: next(50),
                down_bytes: next(6000),
                down_answers: next(20),
            };
            #[allow(clippy::cast_precision_loss)]
            let e = Evidence {
                windows: [window(&mut next), window(&mut next), window(&mut next)],
                budgets: Budgets {
                    short: 64.0 + next(2000) as f32,
                    window: 64.0 + next(4000) as f32,
                    long: 64.0 + next(8000) as f32,
                },
                prevalence: next(101) as f32 / 100.0,
                client_spike: i % 3 == 0,
                scope: [Scope::ClientDomain, Scope::Client, Scope::Domain][i as usize % 3],
            };
            let (total, breakdown, _) = domain_score(&e);
            assert_eq!(domain_points(&e), total, "{e:?}");
            assert_eq!(breakdown.total(), total);
        }
    }

    #[test]
    fn volume_scores_whatever_the_names_look_like() {
        let one = WindowStats {
            queries: 1,
            unique: 1,
            novel_bytes: 12,
            novel_names: 1,
            mean_score: 90.0,
            high_share: 1.0,
            ..Default::default()
        };
        assert!(domain_score(&evidence(one)).0 < 10);
        // Ordinary-looking names (score 5) carrying 1.2 KB of new information: contained.
        let words = WindowStats {
            queries: 100,
            unique: 100,
            novel_bytes: 1200,
            novel_names: 100,
            mean_score: 5.0,
            ..Default::default()
        };
        let (s, b, trip) = domain_score(&evidence(words));
        assert!(s >= 80, "{b:?}");
        assert_eq!(trip.window, VolumeWindow::Short);
        assert!(b.terms().iter().any(|t| t.0 == "volume.short"));
        // The same names carrying 100 bytes: nothing.
        let few = WindowStats {
            novel_bytes: 100,
            ..words
        };
        assert!(domain_score(&evidence(few)).0 < 20);
        // Encoded-looking names use the budget up faster.
        let encoded = WindowStats {
            novel_bytes: 400,
            mean_score: 60.0,
            byte_mean_score: 60.0,
            high_share: 1.0,
            high_byte_share: 1.0,
            ..words
        };
        let plain = WindowStats {
            novel_bytes: 400,
            ..words
        };
        assert!(domain_score(&evidence(encoded)).0 >= domain_score(&evidence(plain)).0 + 20);
        // NXDOMAIN and spikes add, named in the breakdown.
        let nx = WindowStats {
            answers: 100,
            nxdomain: 80,
            ..encoded
        };
        let mut e = evidence(nx);
        e.client_spike = true;
        let (_, b, _) = domain_score(&e);
        let names: Vec<_> = b.terms().iter().map(|t| t.0).collect();
        assert_eq!(
            names,
            ["volume.short", "pattern", "nxdomain", "client_spike"]
        );
        // Prevalence widens the budget.
        let mut wide = evidence(plain);
        wide.prevalence = 0.5;
        assert!(domain_score(&wide).0 < domain_score(&evidence(plain)).0);
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
