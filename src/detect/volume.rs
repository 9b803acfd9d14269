//! Information volume: how much new information a client pushes into query names, whatever the
//! names look like.
//!
//! A tunnel has to put its data somewhere, and in DNS upstream that is the query name. However
//! the data is encoded (base32, hex, dictionary words, pronounceable syllables, hashes dressed
//! as CDN host names), every byte sent costs at least a byte of *new* name. So the detector
//! counts, per (client, registrable domain) and per client:
//! - novel names only: a name the key asked recently adds nothing ([`RecentNames`], 64 bytes),
//!   and a name another client of the fleet asked first adds nothing either
//!   ([`SharedNames`], one fixed table for the whole process) — cache-warm, popular names are
//!   not exfiltration;
//! - the information of each novel name estimated from its alphabet and structure
//!   ([`info_bits`]), not its raw length: a reversed IP address carries about 4 bytes however it
//!   is spelt, a base32 label 5 bits per character, an ordinary word 3–5;
//! - over three windows: a short one for bursts, the detection window, and a long one for slow
//!   drips ([`Budgets`]).
//!
//! Appearance (entropy, n-grams, charset, query type) no longer gates this: it only makes the
//! budget run out faster ([`volume_fraction`]'s `accel`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::features::{Alphabet, QueryFeatures};
use super::window::WindowStats;

/// Slots in a [`RecentNames`] filter.
const RECENT_SLOTS: usize = 32;

/// The last names a key asked, as 16-bit fingerprints in a two-way set-associative table
/// (64 bytes: 16 sets of two, the more recent first).
///
/// Two ways, not one slot a name: a client that asks a few names in turn for every domain
/// (`_dmarc` and `selector1._domainkey` of each mail sender) must not have two of them evict
/// each other on every query when their hashes share a slot (the hash is seeded per process,
/// so a direct-mapped table made that a one-run-in-five false alert for a mail sweep).
///
/// Answers "was this name asked recently by this key?" exactly for repeats of recent names and
/// with a 1-in-65,536 false "yes" per probe. A name pushed out by others and asked again counts
/// as novel once more; the window's distinct-name sketch corrects that over-count
/// ([`WindowStats::novel_bytes`]). Repeats cannot be used to dilute the estimate: they add no
/// information at all, rather than lowering an average.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentNames {
    /// Fingerprint per slot; 0 is empty.
    slots: [u16; RECENT_SLOTS],
}

impl RecentNames {
    /// Records the name with this hash; true when it was not among the recent names.
    #[inline]
    pub fn insert(&mut self, hash: u64) -> bool {
        let set = usize::try_from(hash % (RECENT_SLOTS / 2) as u64).unwrap_or(0) * 2;
        // Never 0, so an empty slot is never a match.
        let fp = u16::try_from(hash >> 48).unwrap_or(u16::MAX).max(1);
        let [newer, older] = &mut self.slots[set..set + 2] else {
            return true;
        };
        if *newer == fp {
            return false;
        }
        // A hit in the older way makes it the newer; a miss evicts the older.
        let novel = *older != fp;
        *older = *newer;
        *newer = fp;
        novel
    }
}

/// Which client asked a name last, fleet-wide: a fixed table of `(name tag, client tag)` words.
///
/// Lock-free (one relaxed atomic swap per query), fixed size whatever the traffic: a flood of
/// unique names only overwrites slots, it never grows the table. A false "shared" needs a
/// 40-bit tag collision.
#[derive(Debug)]
pub struct SharedNames {
    /// `name tag << 24 | client tag`; 0 is empty.
    slots: Box<[AtomicU64]>,
    /// `slots.len() - 1` (a power of two minus one).
    mask: u64,
}

/// Who asked a name last, as far as [`SharedNames`] remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastAsker {
    /// Nobody it remembers (a new name, or its slot was taken since).
    Unknown,
    /// The same client: a repeat.
    Same,
    /// Another client.
    Other,
}

/// The bit of a [`SharedNames`] word that says its client's query went to no upstream.
const UNDELIVERED: u64 = 1 << 23;
/// The bits of a [`SharedNames`] word that hold its client.
const CLIENT_BITS: u64 = UNDELIVERED - 1;

impl SharedNames {
    /// A table of `slots` entries (rounded up to a power of two, at least 1,024), 8 bytes each.
    #[must_use]
    pub fn new(slots: usize) -> Self {
        let n = slots.max(1024).next_power_of_two();
        Self {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: u64::try_from(n - 1).unwrap_or(u64::MAX),
        }
    }

    /// Records that the client with `client_hash` asked the name with `name_hash` (the full
    /// name's hash: domain and subdomain); true when a *different* client asked it last.
    /// (The detector asks [`Self::record`], which also tells a repeat apart; this is its
    /// yes/no form, kept for the table's own tests.)
    #[cfg(test)]
    pub fn asked_by_other(&self, name_hash: u64, client_hash: u64) -> bool {
        self.record(name_hash, client_hash) == LastAsker::Other
    }

    /// The slot and the word `client_hash` asking `name_hash` writes there: the name's tag
    /// above 24 bits, the client's 23 bits below, [`UNDELIVERED`] clear.
    #[inline]
    fn slot_word(&self, name_hash: u64, client_hash: u64) -> (usize, u64) {
        let slot = usize::try_from(name_hash & self.mask).unwrap_or(0);
        let tag = (name_hash >> 24) | 1; // never 0
        (slot, (tag << 24) | (client_hash & CLIENT_BITS))
    }

    /// Records that the client with `client_hash` asked the name with `name_hash`, and says
    /// who asked it last before: nobody the table remembers, this client, or another one. A
    /// last asker whose query went nowhere ([`Self::undelivered`]) is nobody to another
    /// client.
    #[inline]
    pub fn record(&self, name_hash: u64, client_hash: u64) -> LastAsker {
        let (slot, word) = self.slot_word(name_hash, client_hash);
        // Most queries repeat what the slot holds (the same client asking the same name):
        // a plain load then, no locked write to a shared line.
        let old = self.slots[slot].load(Ordering::Relaxed);
        if old & !UNDELIVERED == word {
            return LastAsker::Same;
        }
        let old = self.slots[slot].swap(word, Ordering::Relaxed);
        if old & !UNDELIVERED == word {
            LastAsker::Same
        } else if old >> 24 == word >> 24 && old & UNDELIVERED == 0 {
            LastAsker::Other
        } else {
            LastAsker::Unknown
        }
    }

    /// The query [`Self::record`] just noted for `client_hash` went to no upstream (its client
    /// is contained): the name stays this client's repeat, but to any other client it
    /// is as if nobody had asked it. Otherwise a contained client could ask each name first,
    /// get its sinkhole, and a clean one ask it next and have it counted as another's (an
    /// independent run moved 27 KB that way unseen). A plain load when there is nothing to do.
    #[inline]
    pub fn undelivered(&self, name_hash: u64, client_hash: u64) {
        let (slot, word) = self.slot_word(name_hash, client_hash);
        if self.slots[slot].load(Ordering::Relaxed) == word {
            let _ = self.slots[slot].compare_exchange(
                word,
                word | UNDELIVERED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Bytes the table takes.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.slots.len() * 8
    }
}

/// Bits of information per character for an alphabet: the most a character of it can carry.
fn alphabet_bits(a: Alphabet) -> f32 {
    match a {
        Alphabet::Empty => 0.0,
        Alphabet::Hex => 4.0,
        Alphabet::Base32 => 5.0,
        // 37 symbols; 38 with `_` (base64url once lower-cased by the wire).
        Alphabet::Alnum => 5.21,
        Alphabet::Base64 => 5.25,
        Alphabet::Binary => 7.0,
    }
}

/// log2(10): a digit carries at most this.
const DIGIT_BITS: f32 = 3.32;
/// Floor on bits per character: even a dictionary word, chosen from many, carries some.
const MIN_CHAR_BITS: f32 = 2.5;

/// Estimated information in the subdomain part of one name, in bits.
///
/// Per character, the lesser of what the alphabet allows and what the host-name trigram model
/// says it costs (ordinary words 3–5 bits, encoded data at the alphabet's maximum), but not
/// below 2.5; all-digit labels (reversed IPs, counters) at log2(10) per digit. So 40 base32
/// characters are 25 bytes, `4.3.2.1` is under 3, and `www` about 1.
#[must_use]
pub fn info_bits(f: &QueryFeatures) -> u32 {
    if f.sub_chars == 0 {
        return 0;
    }
    let max = alphabet_bits(f.alphabet);
    let per_char = f
        .ngram_bits
        .clamp(MIN_CHAR_BITS, max.max(MIN_CHAR_BITS))
        .min(max);
    #[allow(clippy::cast_precision_loss)] // names are at most a few hundred bytes
    let bits = f.numeric_chars as f32 * DIGIT_BITS
        + f.sub_chars.saturating_sub(f.numeric_chars) as f32 * per_char;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small, ≥ 0
    let rounded = bits.round() as u32;
    rounded
}

/// Bytes of novel information at which a window's volume term is full, per window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budgets {
    /// The short window (bursts).
    pub short: f32,
    /// The detection window.
    pub window: f32,
    /// The long window (slow drips).
    pub long: f32,
}

impl Budgets {
    /// Every budget times `k` (a group's `volume_scale`, the client-wide multiplier).
    #[must_use]
    pub fn scaled(self, k: f32) -> Self {
        Self {
            short: self.short * k,
            window: self.window * k,
            long: self.long * k,
        }
    }
}

/// Share of answer bytes counted as information, next to query-name bytes: the downstream
/// half of a tunnel matters, but an answer is chosen by the server, not sent by the client.
pub const DOWN_WEIGHT: f32 = 0.25;

/// A carrier answer's bytes counted in full up to here, then [`ANSWER_TAIL_DIVISOR`]-th of the
/// rest ([`carrier_answer_bytes`]).
pub const ANSWER_FULL_BYTES: u32 = 256;
/// See [`ANSWER_FULL_BYTES`].
pub const ANSWER_TAIL_DIVISOR: u32 = 16;
/// Where the discounted tail ends: an answer's bytes past this count in full again. Benign
/// big RRsets stay under it (an apex's TXT set is 2–4 KB); an answer past it is one only TCP
/// carries, and a tunnel filling 64 KB answers over TCP must not get a 15× discount.
pub const ANSWER_TAIL_END: u32 = 4096;

/// The bytes of one carrier answer (TXT, NULL, …) that count towards the downstream volume,
/// before [`DOWN_WEIGHT`]: all of the first [`ANSWER_FULL_BYTES`] (a TXT string's 255 and its
/// header), a sixteenth of the rest up to [`ANSWER_TAIL_END`], and all of what lies beyond.
///
/// A tunnel's downstream is a stream of answers (a TXT string holds at most 255 bytes; through
/// resolvers a UDP answer stays under ~1.2 KB), and the window's "pieces of data" rule wants
/// several of them: its volume is in the count of answers. A big RRset asked once, a domain's
/// apex TXT with its verification tokens (2–4 KB is common), is one such piece, not kilobytes
/// of channel: two of them in a minute, counted whole, filled a pair's short budget (768 bytes
/// at ¼) and sinkholed the domain. A tunnel filling 1 KB answers still pays ~300 bytes for
/// each, one filling 4 KB answers over TCP ~490 (its limit: 8× the answers it needed when they
/// counted whole), and one past 4 KB pays every byte beyond.
#[must_use]
pub fn carrier_answer_bytes(bytes: usize) -> u32 {
    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    bytes.min(ANSWER_FULL_BYTES)
        + (bytes.min(ANSWER_TAIL_END).saturating_sub(ANSWER_FULL_BYTES)) / ANSWER_TAIL_DIVISOR
        + bytes.saturating_sub(ANSWER_TAIL_END)
}

/// How far one window's evidence has used up its budget, 0..=1, on a log scale from an eighth
/// of the budget (0) to the whole budget (1).
///
/// `bytes` counts the novel name bytes plus [`DOWN_WEIGHT`] of the carrier answer bytes,
/// multiplied by `accel` (≥ 1: names that look encoded use the budget up faster) and by
/// `prevalence` (≤ 1: a domain many clients use, seen for long, gets more room).
#[must_use]
pub fn volume_fraction(w: &WindowStats, budget: f32, accel: f32, prevalence: f32) -> (f32, f32) {
    #[allow(clippy::cast_precision_loss)] // byte counts, scoring precision
    let bytes = (w.novel_bytes as f32 + DOWN_WEIGHT * w.down_bytes as f32) * accel * prevalence;
    let floor = budget.max(8.0) / 8.0;
    // At or under the floor the log-scale fraction is 0: most windows, most queries, so the
    // two logarithms are taken only above it (floor ≥ 1, so `bytes` > 1 there).
    let fraction = if bytes > floor {
        ((bytes / floor).log2() / 3.0).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (fraction, bytes)
}

#[cfg(test)]
mod tests {
    use super::super::features::extract;
    use super::*;

    fn bits(sub: &str) -> u32 {
        info_bits(&extract(&format!("{sub}.example.com"), sub, 1))
    }

    #[test]
    fn information_follows_alphabet_and_structure_not_length() {
        assert_eq!(bits(""), 0);
        assert!(bits("www") <= 12, "{}", bits("www"));
        // A reversed IPv4 address: about 32 bits however it is written.
        let ip = bits("123.45.67.189");
        assert!((30..=40).contains(&ip), "{ip}");
        // 32 base32 characters: 160 bits.
        let b32 = bits("mzxw6ytboi2dkmzxw6ytboi2dkmzxw6y");
        assert!((150..=165).contains(&b32), "{b32}");
        // Hex: 4 bits a character.
        assert_eq!(bits("a3f9c1"), 24);
        // Pronounceable syllables still carry bits: no encoding hides its payload.
        let words = bits("bakodufimelosa");
        assert!(words >= 35, "{words}");
    }

    #[test]
    fn recent_names_see_repeats_and_forget_old_names() {
        let mut r = RecentNames::default();
        let (a, b, c) = (
            0x1234_5678_9abc_def0,
            0x2234_5678_9abc_def0,
            0x3234_5678_9abc_def0,
        );
        assert!(r.insert(a));
        assert!(!r.insert(a));
        // Another name of the same set: both are kept, asked in turn.
        assert!(r.insert(b));
        for _ in 0..4 {
            assert!(!r.insert(a));
            assert!(!r.insert(b));
        }
        // A third pushes out the one asked least recently (a).
        assert!(r.insert(c));
        assert!(!r.insert(b));
        assert!(r.insert(a));
    }

    #[test]
    fn shared_names_tell_other_clients_apart() {
        let t = SharedNames::new(10);
        assert_eq!(t.bytes(), 1024 * 8);
        let name = 0xdead_beef_0000_0042;
        assert!(!t.asked_by_other(name, 1));
        assert!(
            !t.asked_by_other(name, 1),
            "the same client again is not another"
        );
        assert!(t.asked_by_other(name, 2));
        assert!(t.asked_by_other(name, 1));
        assert!(!t.asked_by_other(name ^ (1 << 40), 3), "another name");
    }

    #[test]
    fn shared_names_tell_a_repeat_from_a_new_name_and_another_client() {
        let t = SharedNames::new(1024);
        let name = 0x0123_4567_89ab_cdef;
        assert_eq!(t.record(name, 7), LastAsker::Unknown);
        assert_eq!(t.record(name, 7), LastAsker::Same);
        assert_eq!(t.record(name, 8), LastAsker::Other);
        assert_eq!(t.record(name, 8), LastAsker::Same);
        assert_eq!(t.record(name, 7), LastAsker::Other);
        // A name whose slot another name took since is new again.
        let other = name + (1 << 30);
        assert_eq!(t.record(other, 7), LastAsker::Unknown);
        assert_eq!(t.record(name, 7), LastAsker::Unknown);
    }

    /// A last asker whose query went nowhere is still that client's repeat, and nobody to
    /// another client; once another client's query is delivered, it is that client's.
    #[test]
    fn an_undelivered_ask_is_a_repeat_to_its_client_and_nobody_to_another() {
        let t = SharedNames::new(1024);
        let name = 0x0123_4567_89ab_cdef;
        assert_eq!(t.record(name, 7), LastAsker::Unknown);
        t.undelivered(name, 7);
        assert_eq!(t.record(name, 7), LastAsker::Same);
        assert_eq!(
            t.record(name, 8),
            LastAsker::Unknown,
            "7's ask went nowhere"
        );
        assert_eq!(t.record(name, 7), LastAsker::Other, "8's was delivered");
        // Only the client that holds the slot can mark it.
        t.undelivered(name, 8);
        assert_eq!(t.record(name, 8), LastAsker::Other);
    }

    #[test]
    fn a_big_answer_counts_its_first_256_bytes_a_sixteenth_up_to_4_kb_and_all_beyond() {
        assert_eq!(carrier_answer_bytes(0), 0);
        assert_eq!(carrier_answer_bytes(200), 200);
        assert_eq!(carrier_answer_bytes(300), 256 + 2);
        assert_eq!(carrier_answer_bytes(256), 256);
        assert_eq!(carrier_answer_bytes(2004), 256 + 109);
        assert_eq!(carrier_answer_bytes(4096), 256 + 240);
        assert_eq!(carrier_answer_bytes(65_535), 256 + 240 + (65_535 - 4096));
        assert_eq!(
            carrier_answer_bytes(usize::MAX),
            u32::MAX - 4096 + 256 + 240
        );
    }

    #[test]
    fn the_fraction_is_logarithmic_and_accelerated() {
        let w = |b: u64| WindowStats {
            novel_bytes: b,
            ..WindowStats::default()
        };
        assert!(volume_fraction(&w(100), 800.0, 1.0, 1.0).0 < 0.01);
        let half = volume_fraction(&w(283), 800.0, 1.0, 1.0).0;
        assert!((half - 0.5).abs() < 0.01, "{half}");
        assert!((volume_fraction(&w(800), 800.0, 1.0, 1.0).0 - 1.0).abs() < 1e-6);
        assert!(
            volume_fraction(&w(200), 800.0, 2.0, 1.0).0
                > volume_fraction(&w(200), 800.0, 1.0, 1.0).0
        );
        assert!(
            volume_fraction(&w(400), 800.0, 1.0, 0.5).0
                < volume_fraction(&w(400), 800.0, 1.0, 1.0).0
        );
    }
}
