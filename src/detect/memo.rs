//! A memo of each name's appearance: what the detector computes from the name alone (its
//! appearance score, whether an exception covers it, its information bits and lengths), so a
//! name asked again — by this client or any other — costs a table read instead of feature
//! extraction, n-gram costs and an exception lookup.
//!
//! The appearance is a pure function of (name, query type, the exceptions in force): the
//! memo's key hashes all three (the group's own exceptions through the group's name, when it
//! has any), with the detector's per-process keyed hasher, so a client cannot aim names at a
//! chosen slot. The table is direct-mapped and fixed-size ([`SLOTS`] slots of 16 bytes:
//! 256 KiB), lock-free: each slot is a key word and a value word, and the value carries 16
//! bits of its own key, so a reader that races a writer sees either a miss or a value written
//! for its key (a 2⁻¹⁶ chance of a mixed pair whose low key bits also match its slot — one
//! query then gets another name's appearance; its volume, which decides containment, is
//! counted from the name itself either way). Whatever does not fit the packing (names over
//! 255 characters or 65 535 bits) is simply never memoised.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in the memo (a power of two).
pub const SLOTS: usize = 1 << 14;

/// What the detector knows about a name from the name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appearance {
    /// The query's own score, 0–100 (0 under an exception).
    pub score: u8,
    /// Whether an exception covers the name.
    pub exception: bool,
    /// Information bits of the subdomain part taken alone.
    pub bits: u32,
    /// Bytes of the subdomain part.
    pub sub_len: u32,
    /// Characters of the subdomain part that carry information (dots excluded).
    pub sub_chars: u32,
}

impl Appearance {
    /// Pack into a value word tagged with `key`'s high bits; `None` when a field is too large.
    fn pack(self, key: u64) -> Option<u64> {
        if self.score > 127 || self.bits > 0xffff || self.sub_len > 0xff || self.sub_chars > 0xff {
            return None;
        }
        Some(
            (key >> 48) << 48
                | u64::from(self.score) << 41
                | u64::from(self.exception) << 40
                | u64::from(self.bits) << 24
                | u64::from(self.sub_len) << 16
                | u64::from(self.sub_chars) << 8
                | 1, // never 0: 0 is an empty slot
        )
    }

    fn unpack(v: u64) -> Self {
        #[allow(clippy::cast_possible_truncation)] // masked to the field's width
        Self {
            score: ((v >> 41) & 0x7f) as u8,
            exception: (v >> 40) & 1 == 1,
            bits: ((v >> 24) & 0xffff) as u32,
            sub_len: ((v >> 16) & 0xff) as u32,
            sub_chars: ((v >> 8) & 0xff) as u32,
        }
    }
}

/// The memo table.
pub struct AppearanceMemo {
    /// (key, value) words per slot.
    slots: Box<[(AtomicU64, AtomicU64)]>,
}

impl std::fmt::Debug for AppearanceMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppearanceMemo")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Default for AppearanceMemo {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl AppearanceMemo {
    fn slot(&self, key: u64) -> &(AtomicU64, AtomicU64) {
        #[allow(clippy::cast_possible_truncation)] // masked to the table size
        &self.slots[(key as usize) & (SLOTS - 1)]
    }

    /// The memoised appearance of `key`, if any.
    #[must_use]
    pub fn get(&self, key: u64) -> Option<Appearance> {
        let (k, v) = self.slot(key);
        if k.load(Ordering::Relaxed) != key {
            return None;
        }
        let v = v.load(Ordering::Relaxed);
        (v != 0 && v >> 48 == key >> 48).then(|| Appearance::unpack(v))
    }

    /// Remember `a` for `key` (replacing whatever the slot held).
    pub fn put(&self, key: u64, a: Appearance) {
        let Some(v) = a.pack(key) else {
            return;
        };
        let (k, slot_v) = self.slot(key);
        slot_v.store(v, Ordering::Relaxed);
        k.store(key, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(score: u8, bits: u32) -> Appearance {
        Appearance {
            score,
            exception: score == 0,
            bits,
            sub_len: 30,
            sub_chars: 28,
        }
    }

    #[test]
    fn remembers_and_replaces_per_slot() {
        let m = AppearanceMemo::default();
        let k1 = 0xdead_beef_0000_0001_u64;
        assert_eq!(m.get(k1), None);
        m.put(k1, a(77, 140));
        assert_eq!(m.get(k1), Some(a(77, 140)));
        // Another key in the same slot replaces it; the first is then a miss, never a wrong hit.
        let k2 = 0x1234_5678_0000_0001_u64;
        m.put(k2, a(0, 3));
        assert_eq!(m.get(k2), Some(a(0, 3)));
        assert_eq!(m.get(k1), None);
    }

    #[test]
    fn values_that_do_not_fit_are_not_memoised() {
        let m = AppearanceMemo::default();
        m.put(5, a(90, 70_000));
        assert_eq!(m.get(5), None);
        let long = Appearance {
            sub_len: 300,
            ..a(10, 10)
        };
        m.put(6, long);
        assert_eq!(m.get(6), None);
    }
}
