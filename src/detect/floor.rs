//! The information floor: what a query name *adds*, given the names its (client, registrable
//! domain) sent just before.
//!
//! [`super::volume::info_bits`] prices a name on its own. A client that walks through
//! `host1 … host500`, `img-001.cdn … img-500.cdn` or `shard-0042.api` names sends hundreds of
//! distinct names a minute, each priced at 2–4 bytes alone, yet the stream as a whole carries
//! little: each name is the previous one with a counter moved on. Paxson et al. (2013) bound what
//! a DNS stream can carry by compressing it; this is the cheap, bounded-memory version of that
//! idea, front/back coding against a few recent names:
//! - per (client, domain) a ring of the last [`RING`] novel subdomain parts (≤ [`KEPT`] bytes
//!   each, [`RecentSubdomains`], 200 bytes);
//! - a new name is coded against each of them: the longest common prefix and suffix are free,
//!   the middle costs what its characters carry at the name's own rate (its `info_bits` per
//!   character), plus the position of the change when it is inside the name (the change's place
//!   is a choice too), plus log2([`RING`]) bits for choosing a reference other than the last;
//! - when the middle is a run of digits in both names (a counter moved on), it costs
//!   log2(|difference| + 1) + 1 bits, never more than log2(10) a digit: `host124` after
//!   `host123` costs 2 bits; a counter stepped by payload bytes pays for the payload;
//! - the cheapest reference wins, never above the name's own estimate and never below
//!   [`MIN_NAME_BITS`]: no distinct name is free.
//!
//! Two more estimates, the cheapest winning: a name of a small template the key used (counters
//! and short IDs in a small range, [`super::template`]) costs what one more member of that set
//! says, in any order; and the changed middle may be priced as whole labels, a label the key
//! asked recently at [`LABEL_BITS`] ([`RecentLabels`]).
//!
//! Limits: only the last four names are references, so a client enumerating names in random
//! order pays for the order unless their template is small (the order is information: a tunnel
//! could use it); a name longer than
//! [`KEPT`] is coded by its last [`KEPT`] bytes and pays in full for the rest (an `ip6.arpa`
//! nibble name's shared network prefix is free, a GUID before a fixed region and service
//! label pays for the GUID). What a tunnel cannot
//! hide is what it sends: a payload after a shared prefix is a middle and is counted in full.

use super::template::Templates;

/// Recent names kept per (client, domain).
pub const RING: usize = 4;
/// Bytes of a subdomain part kept (its last ones); a longer name is coded by them and pays in
/// full for the bytes before.
pub const KEPT: usize = 48;
/// Bits every distinct name costs at least, whatever it shares with recent ones.
pub const MIN_NAME_BITS: u32 = 2;
/// Bits for naming which recent name a new one is coded against (log2 of [`RING`]); the most
/// recent is free.
const REFERENCE_BITS: f32 = 2.0;
/// log2(10): the most a digit carries.
const DIGIT_BITS: f32 = 3.32;
/// Longest digit run read as a number (fits in a `u64`).
const MAX_RUN: usize = 18;

/// The last [`RING`] novel subdomain parts of one (client, domain), newest at `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentSubdomains {
    /// The names' bytes, each left-aligned.
    names: [[u8; KEPT]; RING],
    /// Their lengths; 0 is an empty slot.
    lens: [u8; RING],
    /// Slot of the newest name.
    head: u8,
    /// Labels of the key's recent names: a label asked before (`staging` in
    /// `payments.staging.svc` after `orders.staging.svc`) costs which one it is, not its
    /// characters.
    labels: RecentLabels,
    /// The key's recent name templates: a fan-out over a small range costs what the set of
    /// names says, in any order ([`super::template`]).
    templates: Templates,
}

impl Default for RecentSubdomains {
    fn default() -> Self {
        Self {
            names: [[0; KEPT]; RING],
            lens: [0; RING],
            head: 0,
            labels: RecentLabels::default(),
            templates: Templates::default(),
        }
    }
}

impl RecentSubdomains {
    /// Bits the subdomain part `sub` adds given the recent names, then remembers it.
    ///
    /// `alone_bits` is the name's own estimate ([`super::volume::info_bits`]) and `sub_chars`
    /// its characters without dots (the estimate's per-character rate is `alone_bits /
    /// sub_chars`). Call it for names that are novel for the key; repeats add nothing anyway.
    pub fn novel_bits(&mut self, sub: &str, alone_bits: u32, sub_chars: usize) -> u32 {
        let s = sub.as_bytes();
        let bits = self.estimate(s, alone_bits, sub_chars);
        self.remember(s);
        for label in s.split(|c| *c == b'.') {
            self.labels.insert(label);
        }
        // One more name of a template this key used (`shard-517` after `shard-042`): what the
        // set of its values says, whatever their order, when that is cheaper.
        match self.templates.novel_bits(s) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small, ≥ 0
            Some(t) => bits.min((t.round() as u32).max(MIN_NAME_BITS)),
            None => bits,
        }
    }

    /// The cheapest coding of `s` against a recent name, clamped to
    /// `MIN_NAME_BITS..=alone_bits`.
    fn estimate(&self, s: &[u8], alone_bits: u32, sub_chars: usize) -> u32 {
        if alone_bits <= MIN_NAME_BITS {
            return alone_bits;
        }
        #[allow(clippy::cast_precision_loss)] // names are short
        let rate = alone_bits as f32 / sub_chars.max(1) as f32;
        // A name longer than KEPT is coded by its last KEPT bytes, where a zone's fixed labels
        // sit (a region and service, an ip6.arpa network prefix); the bytes before them are
        // priced in full at the name's rate, so nothing a tunnel puts there is discounted.
        let (head, tail) = s.split_at(s.len().saturating_sub(KEPT));
        #[allow(clippy::cast_precision_loss)]
        let head_bits = head.iter().filter(|c| **c != b'.').count() as f32 * rate;
        #[allow(clippy::cast_precision_loss)]
        let mut best = alone_bits as f32;
        // The middle's cost for the last (start, end) seen: names unrelated to `s` all leave
        // it whole, and it is priced once instead of once a reference.
        let mut memo = None;
        for age in 0..RING {
            let slot = (usize::from(self.head) + RING - age) % RING;
            let len = usize::from(self.lens[slot]);
            if len == 0 {
                continue;
            }
            let reference = if age == 0 { 0.0 } else { REFERENCE_BITS };
            let r = &self.names[slot][..len];
            let cost = head_bits + reference + coded_bits(tail, r, rate, &self.labels, &mut memo);
            best = best.min(cost);
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small, ≥ 0
        let rounded = best.round() as u32;
        rounded.clamp(MIN_NAME_BITS, alone_bits.max(MIN_NAME_BITS))
    }

    /// Makes `s` (its last [`KEPT`] bytes) the newest recent name.
    fn remember(&mut self, s: &[u8]) {
        let s = &s[s.len().saturating_sub(KEPT)..];
        if s.is_empty() {
            return;
        }
        let slot = (usize::from(self.head) + 1) % RING;
        self.names[slot][..s.len()].copy_from_slice(s);
        self.lens[slot] = u8::try_from(s.len()).unwrap_or(0);
        self.head = u8::try_from(slot).unwrap_or(0);
    }
}

/// Labels a key's recent-label filter holds ([`RecentLabels`]): 16 sets of 4.
const LABEL_SLOTS: usize = 64;
/// Ways per set of [`RecentLabels`].
const LABEL_WAYS: usize = 4;
/// Bits a label found among the key's recent labels costs: which of [`LABEL_SLOTS`] it is.
const LABEL_BITS: f32 = 6.0;

/// The labels of a key's recent novel names, as 16-bit fingerprints in a 4-way set-associative
/// table (128 bytes), each set keeping its most recently asked labels.
///
/// Service discovery and fan-outs recombine a few words (`<service>.<namespace>.svc`): a label
/// asked before is one of [`LABEL_SLOTS`], [`LABEL_BITS`] bits, however long. Only labels with
/// a letter are kept (numbers are counters, [`counter_step`], or data: octets), so a label
/// costs at most log2 of what the table holds, the price of choosing among them; a tunnel
/// writing its data as labels from a small vocabulary pays that, and one with a larger
/// vocabulary misses the table and pays for characters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecentLabels {
    /// Fingerprints, [`LABEL_WAYS`] a set, most recent first; 0 is empty.
    slots: [u16; LABEL_SLOTS],
}

impl Default for RecentLabels {
    fn default() -> Self {
        Self {
            slots: [0; LABEL_SLOTS],
        }
    }
}

impl RecentLabels {
    /// The label's set (its first slot) and fingerprint (never 0); `None` for a label without
    /// a letter.
    fn key(label: &[u8]) -> Option<(usize, u16)> {
        if !label.iter().any(u8::is_ascii_alphabetic) {
            return None;
        }
        // FNV-1a: a few bytes, not keyed (a collision only prices a label at LABEL_BITS).
        let h = label.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, c| {
            (h ^ u64::from(*c)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let sets = (LABEL_SLOTS / LABEL_WAYS) as u64;
        let set = usize::try_from(h % sets).unwrap_or(0) * LABEL_WAYS;
        Some((set, u16::try_from(h >> 48).unwrap_or(u16::MAX).max(1)))
    }

    fn contains(&self, label: &[u8]) -> bool {
        Self::key(label).is_some_and(|(set, fp)| self.slots[set..set + LABEL_WAYS].contains(&fp))
    }

    /// Makes the label its set's most recent, pushing out the set's oldest if it is new.
    fn insert(&mut self, label: &[u8]) {
        if let Some((set, fp)) = Self::key(label) {
            let ways = &mut self.slots[set..set + LABEL_WAYS];
            let at = ways.iter().position(|w| *w == fp).unwrap_or(LABEL_WAYS - 1);
            ways[..=at].rotate_right(1);
            ways[0] = fp;
        }
    }
}

/// Bits of the middle `s[start..end]` as whole labels: the labels it touches, each at
/// [`LABEL_BITS`] when the key asked it recently, else its characters at `rate`.
fn label_bits(s: &[u8], start: usize, end: usize, rate: f32, labels: &RecentLabels) -> f32 {
    let lo = s[..start]
        .iter()
        .rposition(|c| *c == b'.')
        .map_or(0, |i| i + 1);
    let hi = s[end..]
        .iter()
        .position(|c| *c == b'.')
        .map_or(s.len(), |i| end + i);
    s[lo..hi]
        .split(|c| *c == b'.')
        .map(|label| {
            #[allow(clippy::cast_precision_loss)]
            let chars = label.len() as f32 * rate;
            if labels.contains(label) {
                chars.min(LABEL_BITS)
            } else {
                chars
            }
        })
        .sum()
}

/// Bits to code `s` as `r` with its middle replaced: what the common prefix and suffix leave
/// (the middle's characters, or its whole labels when the key asked them recently).
/// `memo` holds the middle's cost for one (start, end) of `s` across calls with the same `s`.
fn coded_bits(
    s: &[u8],
    r: &[u8],
    rate: f32,
    labels: &RecentLabels,
    memo: &mut Option<(usize, usize, f32)>,
) -> f32 {
    let lcp = s.iter().zip(r).take_while(|(a, b)| a == b).count();
    let room = s.len().min(r.len()) - lcp;
    let lcs = s
        .iter()
        .rev()
        .zip(r.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let (start, end, r_end) = (lcp, s.len() - lcs, r.len() - lcs);
    if start == end && r_end == start {
        return 0.0; // the same name
    }
    if let Some(bits) = counter_step(s, r, start, end, r_end) {
        return bits;
    }
    // A change inside the name also says where it is.
    #[allow(clippy::cast_precision_loss)]
    let position = if start > 0 && end < s.len() {
        ((s.len() + 1) as f32).log2()
    } else {
        0.0
    };
    let bits = match *memo {
        Some((a, b, bits)) if (a, b) == (start, end) => bits,
        _ => {
            let middle = s[start..end].iter().filter(|c| **c != b'.').count();
            #[allow(clippy::cast_precision_loss)]
            let chars = middle as f32 * rate;
            let bits = if middle == 0 {
                0.0
            } else {
                chars.min(label_bits(s, start, end, rate, labels))
            };
            *memo = Some((start, end, bits));
            bits
        }
    };
    bits + position
}

/// When the change from `r` to `s` is one run of digits moved on (`host123` → `host124`,
/// `img-009` → `img-010`), its cost: log2(|difference| + 1) + 1, at most log2(10) a digit.
fn counter_step(s: &[u8], r: &[u8], start: usize, end: usize, r_end: usize) -> Option<f32> {
    // Widen the change to the whole digit run around it; the names agree before `start`.
    let mut lo = start;
    while lo > 0 && s[lo - 1].is_ascii_digit() {
        lo -= 1;
    }
    let mut hi = end;
    while hi < s.len() && s[hi].is_ascii_digit() {
        hi += 1;
    }
    let mut r_hi = r_end;
    while r_hi < r.len() && r[r_hi].is_ascii_digit() {
        r_hi += 1;
    }
    let (run, r_run) = (&s[lo..hi], r.get(lo..r_hi)?);
    let digits = |x: &[u8]| !x.is_empty() && x.len() <= MAX_RUN && x.iter().all(u8::is_ascii_digit);
    if !digits(run) || !digits(r_run) || s[hi..] != r[r_hi..] {
        return None;
    }
    let value = |x: &[u8]| x.iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
    #[allow(clippy::cast_precision_loss)] // a rounded bit count is all that is needed
    let step = (value(run).abs_diff(value(r_run)) as f64 + 1.0).log2() as f32 + 1.0;
    #[allow(clippy::cast_precision_loss)]
    let most = run.len() as f32 * DIGIT_BITS;
    Some(step.min(most))
}

#[cfg(test)]
mod tests {
    use super::super::features::extract;
    use super::super::volume::info_bits;
    use super::*;

    /// Feeds the names in order; returns (bits each name was priced alone, bits added).
    fn run(names: &[&str]) -> Vec<(u32, u32)> {
        let mut ring = RecentSubdomains::default();
        names
            .iter()
            .map(|sub| {
                let f = extract(&format!("{sub}.example.com"), sub, 1);
                let alone = info_bits(&f);
                (alone, ring.novel_bits(sub, alone, f.sub_chars))
            })
            .collect()
    }

    /// [`RecentSubdomains::estimate`] as it was before the middle's cost was remembered
    /// across references: priced afresh for each.
    fn estimate_afresh(
        ring: &RecentSubdomains,
        s: &[u8],
        alone_bits: u32,
        sub_chars: usize,
    ) -> u32 {
        if alone_bits <= MIN_NAME_BITS {
            return alone_bits;
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = alone_bits as f32 / sub_chars.max(1) as f32;
        let (head, tail) = s.split_at(s.len().saturating_sub(KEPT));
        #[allow(clippy::cast_precision_loss)]
        let head_bits = head.iter().filter(|c| **c != b'.').count() as f32 * rate;
        #[allow(clippy::cast_precision_loss)]
        let mut best = alone_bits as f32;
        for age in 0..RING {
            let slot = (usize::from(ring.head) + RING - age) % RING;
            let len = usize::from(ring.lens[slot]);
            if len == 0 {
                continue;
            }
            let reference = if age == 0 { 0.0 } else { REFERENCE_BITS };
            let r = &ring.names[slot][..len];
            best = best
                .min(head_bits + reference + coded_bits(tail, r, rate, &ring.labels, &mut None));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rounded = best.round() as u32;
        rounded.clamp(MIN_NAME_BITS, alone_bits.max(MIN_NAME_BITS))
    }

    /// Remembering the middle's cost changes no price: random, structured and shared-part
    /// names against every state of the ring.
    #[test]
    fn the_remembered_middle_changes_nothing() {
        let mut ring = RecentSubdomains::default();
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let parts = [
            "api",
            "shard-07",
            "x9",
            "eu",
            "q7f3k9z2m4w8",
            "img-009",
            "a.b",
        ];
        for i in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let name = match i % 3 {
                0 => format!("{:x}", state >> (i % 40)),
                1 => format!(
                    "{}.{}",
                    parts[usize::try_from(state % 7).unwrap()],
                    parts[i % 7]
                ),
                _ => format!(
                    "host{}.{}",
                    state % 1000,
                    parts[usize::try_from(state % 5).unwrap()]
                ),
            };
            let f = extract(&format!("{name}.example.com"), &name, 1);
            let alone = info_bits(&f);
            let afresh = estimate_afresh(&ring, name.as_bytes(), alone, f.sub_chars);
            assert_eq!(
                ring.estimate(name.as_bytes(), alone, f.sub_chars),
                afresh,
                "{name}"
            );
            ring.novel_bits(&name, alone, f.sub_chars);
        }
    }

    #[test]
    fn a_counter_moving_on_costs_a_few_bits() {
        let names: Vec<String> = (1..=500).map(|i| format!("host{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = run(&names);
        let total: u32 = r.iter().map(|x| x.1).sum();
        let alone: u32 = r.iter().map(|x| x.0).sum();
        assert!(total <= 500 * 3, "{total} bits for 500 sequential names");
        assert!(alone >= 500 * 12, "{alone}");
        // Zero-padded counters, a suffix after the counter, interior changes.
        for (a, b) in [
            ("img-009.cdn", "img-010.cdn"),
            ("shard-0041.api", "shard-0042.api"),
        ] {
            let r = run(&[a, b]);
            assert!(r[1].1 <= 3, "{a} → {b}: {r:?}");
        }
    }

    #[test]
    fn nothing_is_free_and_nothing_costs_more_than_alone() {
        let r = run(&["www", "www1"]);
        assert!(r[1].1 >= MIN_NAME_BITS);
        // Unrelated names: priced alone.
        let r = run(&["mzxw6ytboi2dkmzx", "q3k9zt0xwe7v1bfa"]);
        assert_eq!(r[1].1, r[1].0);
        for (alone, added) in run(&["a", "b1", "b2", "c-7", "x.y.z"]) {
            assert!(added <= alone.max(MIN_NAME_BITS));
        }
    }

    #[test]
    fn a_payload_after_a_shared_prefix_is_counted() {
        // `<seq>-<payload>` under one long prefix: the payload is the middle.
        let r = run(&[
            "session-7f3a-0001-mzxw6ytboi2dkmzxw6",
            "session-7f3a-0002-q3k9zt0xwe7v1bfaop",
        ]);
        let (alone, added) = r[1];
        assert!(
            added * 10 >= alone * 5,
            "payload counted {added} of {alone} bits"
        );
        // Payload carried in a counter's steps is paid for by the size of the steps.
        let r = run(&["host1000", "host1217"]);
        assert!(r[1].1 >= 8, "{r:?}");
        // Alternating between two stems does not hide the payload either.
        let r = run(&["eu-a3f9c1", "us-77b0e2", "eu-0c4d5e", "us-9e8f7a"]);
        for (alone, added) in &r[2..] {
            assert!(added * 10 >= alone * 6, "{r:?}");
        }
    }

    #[test]
    fn long_names_are_coded_by_their_tail_and_pay_for_their_head() {
        let long = "a".repeat(KEPT + 1);
        let mut ring = RecentSubdomains::default();
        assert_eq!(ring.novel_bits(&long, 100, long.len()), 100);
        assert_eq!(usize::from(ring.lens[usize::from(ring.head)]), KEPT);
        // The same tail again: only the head byte is paid for (clamped to the minimum).
        assert_eq!(ring.novel_bits(&long, 100, long.len()), MIN_NAME_BITS);
        // IPv6 reverse names of one /64 (63 bytes each): the shared prefix at the end is
        // free, the interface identifier (16 nibbles, 8 bytes) is paid for.
        let ptr = |iid: u64| {
            let mut nibbles: Vec<String> = format!("20010db8aaaa0001{iid:016x}")
                .chars()
                .map(String::from)
                .collect();
            nibbles.reverse();
            nibbles.join(".")
        };
        let names: Vec<String> = [
            0x1a2b_3c4d_5e6f_7081_u64,
            0x9f8e_7d6c_5b4a_3921,
            0x0badc0ffee123457,
        ]
        .into_iter()
        .map(ptr)
        .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = run(&names);
        assert!(r[0].1 == r[0].0, "the first is priced alone: {r:?}");
        for (alone, added) in &r[1..] {
            assert!(
                *added <= alone * 6 / 10 && *added >= 40,
                "a new host of the same network: {added} of {alone} bits"
            );
        }
        // A payload ahead of a fixed 48-byte tail pays for all of it.
        let tail = "x".repeat(KEPT);
        let mut ring = RecentSubdomains::default();
        let first = format!("q7f3k9z2m4w8.{tail}");
        let second = format!("p1r6t0v5y3b2.{tail}");
        ring.novel_bits(&first, 200, first.len() - 1);
        let added = ring.novel_bits(&second, 200, second.len() - 1);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let head_share = (200.0 * 12.0 / (second.len() - 1) as f32) as u32;
        assert!(added >= head_share, "{added} < {head_share}");
    }
}
