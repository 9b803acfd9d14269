//! Per-thread recall of what a query name (or a client) costs to work out and always works out
//! the same: its registrable domain from the Public Suffix List (~210 instructions a name), the
//! detector's keyed hashes of its parts and of its client (SipHash, ~130–190 a call, three a
//! query). Most queries repeat a name, and come from a client, that the same thread saw a
//! moment ago.
//!
//! An entry is used only when its whole name (or client address) equals the query's and it was
//! made by the same owner (a detector, whose hashes are keyed per detector), so what comes back
//! is exactly what the computation gives: nothing here is a new hash a client could aim
//! collisions at. The slot an entry goes in is chosen by a cheap unkeyed hash; a client that
//! makes two of its names share a slot makes them miss, which costs the computation again and
//! nothing else.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest name kept (presentation form); longer names are worked out every time (tunnel names
/// are long and never repeat; ordinary names are short). 48 makes a registrable-domain entry
/// one 64-byte cache line.
pub const MAX_NAME: usize = 48;

/// A number for each owner made in this process (never 0): entries are tagged with it, so a
/// reload's new detector, with its new key, never reads the old one's values.
pub fn next_owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One kept name and its value.
#[derive(Clone, Copy)]
struct NameEntry<V> {
    /// Who made it; 0 for an empty slot.
    owner: u64,
    /// Length of the name in `name`.
    len: u8,
    /// The name's bytes.
    name: [u8; MAX_NAME],
    /// What was worked out for it.
    value: V,
}

/// A two-way set-associative table of names and values, one per thread (in a
/// `thread_local!`): a name goes in the first way of its set, the entry there moves to the
/// second, so two names sharing a set are both kept (direct-mapped, 500 names in 512 slots
/// leave only ~38 % alone in theirs: the rest miss whenever they alternate).
pub struct NameSlots<V> {
    entries: Box<[NameEntry<V>]>,
}

impl<V: Copy + Default> NameSlots<V> {
    /// A table of `slots` entries (a power of two, at least 2).
    #[must_use]
    pub fn new(slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two() && slots >= 2);
        let empty = NameEntry {
            owner: 0,
            len: 0,
            name: [0; MAX_NAME],
            value: V::default(),
        };
        Self {
            entries: vec![empty; slots].into_boxed_slice(),
        }
    }

    /// The value `owner` kept for `name`, if `check` accepts it; else `compute`'s, kept.
    pub fn get_or(
        &mut self,
        owner: u64,
        name: &[u8],
        check: impl Fn(&V) -> bool,
        compute: impl FnOnce() -> V,
    ) -> V {
        if name.len() > MAX_NAME {
            return compute();
        }
        // The product's top bits, which every input bit reaches.
        let bits = (self.entries.len() / 2).trailing_zeros();
        #[allow(clippy::cast_possible_truncation)] // under the set count
        let first = slot_hash(name).checked_shr(64 - bits).unwrap_or(0) as usize * 2;
        let hit = |e: &NameEntry<V>| {
            e.owner == owner
                && usize::from(e.len) == name.len()
                && e.name[..name.len()] == *name
                && check(&e.value)
        };
        if hit(&self.entries[first]) {
            return self.entries[first].value;
        }
        if hit(&self.entries[first + 1]) {
            return self.entries[first + 1].value;
        }
        let value = compute();
        self.entries[first + 1] = self.entries[first];
        let e = &mut self.entries[first];
        e.owner = owner;
        #[allow(clippy::cast_possible_truncation)] // at most MAX_NAME
        {
            e.len = name.len() as u8;
        }
        e.name[..name.len()].copy_from_slice(name);
        e.value = value;
        value
    }
}

/// Which set a name goes in (the top bits): its first, middle and last 8 bytes and its length,
/// mixed by one multiplication (~15 instructions; a general hash of the whole name cost ~60).
/// Names that differ only elsewhere share a set: then they miss, and are worked out again.
fn slot_hash(name: &[u8]) -> u64 {
    let len = name.len();
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&name[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let mixed = if len >= 8 {
        word(0) ^ word(len - 8).rotate_left(21) ^ word((len - 8) / 2).rotate_left(42)
    } else {
        let mut w = [0u8; 8];
        w[..len].copy_from_slice(name);
        u64::from_le_bytes(w)
    };
    (mixed ^ len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// One kept client and its value.
#[derive(Clone, Copy)]
struct ClientEntry {
    owner: u64,
    scope: Option<IpAddr>,
    value: u64,
}

/// A direct-mapped table of client addresses (the network an address-keyed client is keyed
/// on) and a `u64` each, one per thread.
pub struct ClientSlots<const N: usize> {
    entries: [ClientEntry; N],
}

impl<const N: usize> ClientSlots<N> {
    /// An empty table (`N` a power of two).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: [ClientEntry {
                owner: 0,
                scope: None,
                value: 0,
            }; N],
        }
    }

    /// The value `owner` kept for `scope`, else `compute`'s, kept. `None` (an agent identity,
    /// not keyed on an address) is computed every time.
    pub fn get_or(
        &mut self,
        owner: u64,
        scope: Option<IpAddr>,
        compute: impl FnOnce() -> u64,
    ) -> u64 {
        let Some(addr) = scope else {
            return compute();
        };
        let slot = match addr {
            IpAddr::V4(a) => a.to_bits() as usize,
            #[allow(clippy::cast_possible_truncation)] // the low bits pick the slot
            IpAddr::V6(a) => (a.to_bits() >> 64) as usize,
        } & (N - 1);
        let e = &mut self.entries[slot];
        if e.owner == owner && e.scope == scope {
            return e.value;
        }
        let value = compute();
        *e = ClientEntry {
            owner,
            scope,
            value,
        };
        value
    }
}

impl<const N: usize> Default for ClientSlots<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_answers_only_its_own_name_owner_and_check() {
        let a = next_owner();
        let b = next_owner();
        let mut slots = NameSlots::<(u64, u64)>::new(64);
        let mut calls = 0;
        let mut get = |owner: u64, name: &str, tag: u64| {
            slots.get_or(
                owner,
                name.as_bytes(),
                |v| v.1 == tag,
                || {
                    calls += 1;
                    (name.len() as u64 + 100 * owner, tag)
                },
            )
        };
        assert_eq!(get(a, "x1.example.com", 1), (14 + 100 * a, 1));
        assert_eq!(get(a, "x1.example.com", 1), (14 + 100 * a, 1));
        // Another check, another owner, another name: each worked out.
        assert_eq!(get(a, "x1.example.com", 2), (14 + 100 * a, 2));
        assert_eq!(get(b, "x1.example.com", 2), (14 + 100 * b, 2));
        assert_eq!(get(a, "x2.example.com", 2), (14 + 100 * a, 2));
        // A name too long to keep: never kept.
        let long = format!("{}.example.com", "a".repeat(60));
        get(a, &long, 1);
        get(a, &long, 1);
        assert_eq!(calls, 6);
    }

    #[test]
    fn names_sharing_a_slot_only_miss() {
        let owner = next_owner();
        let mut slots = NameSlots::<u64>::new(64);
        // Many more names than slots: every answer is still the name's own.
        for round in 0..2 {
            for i in 0..500u64 {
                let q = format!("n{i}.example.net");
                let got = slots.get_or(owner, q.as_bytes(), |_| true, || i);
                assert_eq!(got, i, "round {round}, {q}");
            }
        }
    }

    #[test]
    fn entries_are_the_sizes_the_tables_are_sized_by() {
        // `names::registrable_domain` keeps one cache line a name; the detector 88 bytes.
        assert_eq!(std::mem::size_of::<NameEntry<(u8, u8)>>(), 64);
        assert_eq!(std::mem::size_of::<NameEntry<(u64, u64, u8)>>(), 88);
    }

    #[test]
    fn numbered_names_spread_over_the_sets() {
        // Names that differ in a few bytes (a counter, an address) must not crowd a few sets:
        // taking the product's low bits did (36 of 512 sets for `host1…host500.bench.example`).
        for pattern in [
            "host{}.bench.example",
            "x{}.denied.example",
            "api{}.openai.com",
            "{}.in-addr.arpa",
            "www.example{}.com",
            "s3-{}.amazonaws.com",
        ] {
            let mut used = std::collections::HashSet::new();
            for i in 1..=500 {
                let name = pattern.replace("{}", &i.to_string());
                used.insert(slot_hash(name.as_bytes()) >> (64 - 9));
            }
            // 500 names at random in 512 sets use ~300.
            assert!(used.len() >= 250, "{pattern}: {} sets of 512", used.len());
        }
    }

    #[test]
    fn clients_are_kept_per_scope_and_owner() {
        let a = next_owner();
        let b = next_owner();
        let mut slots = ClientSlots::<16>::new();
        let v4 = |x: u8| Some(IpAddr::from([127, 0, 0, x]));
        assert_eq!(slots.get_or(a, v4(10), || 1), 1);
        assert_eq!(slots.get_or(a, v4(10), || 2), 1);
        assert_eq!(slots.get_or(b, v4(10), || 3), 3);
        // 127.0.0.26 shares 127.0.0.10's slot (16 slots): it replaces it, never reads it.
        assert_eq!(slots.get_or(b, v4(26), || 4), 4);
        assert_eq!(slots.get_or(b, v4(10), || 5), 5);
        let v6 = Some(IpAddr::from([
            0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ]));
        assert_eq!(slots.get_or(a, v6, || 6), 6);
        assert_eq!(slots.get_or(a, v6, || 7), 6);
        // Agents are never kept.
        assert_eq!(slots.get_or(a, None, || 8), 8);
        assert_eq!(slots.get_or(a, None, || 9), 9);
    }
}
