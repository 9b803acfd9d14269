//! Name templates: what a name built from a fixed pattern and a few small fields adds, whatever
//! order the names come in.
//!
//! The information floor ([`super::floor`]) codes a name against the key's last four names, so
//! it prices a *walk* (`shard-000`, `shard-001`, …) at a couple of bits a name but a *fan-out*
//! in any other order (`shard-517`, `shard-042`, … as an agent resolving every shard of a
//! service at once asks them, or `node-c07` after `node-a12`) at what each name's difference
//! from the last costs: 7–16 bits, and 180 such names in a second throttled their client
//! (`benign_bursts_of_structured_names_are_not_contained` in `tests.rs`). Yet the whole burst
//! says little: one pattern and the range of each field. This module prices that:
//! - a name's *skeleton* is its subdomain part with each field taken out, a field being a run
//!   of digits (≤ [`MAX_DIGITS`]) or a run of one or two letters joined to a digit run in one
//!   token (`a` in `node-a12`, `mx` in `mx2`) while that leaves at most [`MAX_FIELDS`], else
//!   digit runs alone, one a token; `shard-017.db` is `shard-#.db` with field 17,
//!   `node-a12.cluster` is `node-##.cluster` with fields (a, 12), `n3.r7.dc2` is `n#.r#.dc#`;
//! - per (client, domain) the last [`SLOTS`] skeletons are kept ([`Templates`], 196 bytes), each
//!   with the range (lowest, highest) of each of its ≤ [`MAX_FIELDS`] fields and how many
//!   novel names used it;
//! - a name whose skeleton is kept costs what a *set* of values says, not a sequence: a field
//!   value outside its range costs log2(distance) + 1 bits (extending a counter is what a
//!   counter step costs in the floor); values inside the ranges cost log2(space / names), the
//!   space being the product of the ranges, plus [`ORDER_BITS`]. A burst through every host of
//!   a 500-host range costs ~3.5 bits a name (~220 bytes) instead of ~12 (~750);
//! - only while the space stays small ([`DENSE_SPACE`]): the fields of a real fan-out are a
//!   counter or a short ID from a small range, while data fills a large space. A skeleton
//!   whose space is larger (a hash, a timestamp, a counter stepped by payload) is priced by the
//!   floor alone, as before; so is a skeleton seen for the first time.
//!
//! The floor and the template each give an estimate; the cheaper wins (never below the
//! floor's minimum). What is not counted: the *order* in which a client first visits the names
//! of a small space, beyond [`ORDER_BITS`] a name. A tunnel writing data in that order moves
//! ~log2(space) − 1.4 bits a name for about half of that counted, and a space holds at most
//! [`DENSE_SPACE`] distinct names before the tunnel needs a new skeleton (whose first names the
//! floor prices); the order in which a client *repeats* names was never counted either
//! (`docs/detection.md`, limits).

/// Skeletons kept per (client, domain).
pub const SLOTS: usize = 8;
/// Fields a skeleton may have; a name with more (a hex hash alternates letters and digits)
/// has no template.
pub const MAX_FIELDS: usize = 4;
/// Longest digit run read as a field (a value fits in a `u16` once it is at most 65,535).
pub const MAX_DIGITS: usize = 5;
/// Longest letter run read as a field (when joined to a digit run in one token).
pub const MAX_LETTERS: usize = 2;
/// Largest space (product of the fields' ranges) priced as a set: about what a service's hosts,
/// shards or pages span. A tunnel cannot write more than log2 of it in a name.
pub const DENSE_SPACE: u32 = 1024;
/// Bits every name under a template costs on top of what its values say: part of the order
/// in which a client visits a space, and that no distinct name is free.
pub const ORDER_BITS: f32 = 2.0;
/// Longest subdomain part looked at: structured host names are short, and tunnels fill names.
const MAX_NAME: usize = 64;

/// One kept skeleton: its hash, how many novel names used it, and each field's range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Template {
    /// Hash of the skeleton; 0 is an empty slot.
    skeleton: u32,
    /// Novel names priced under it (saturating).
    names: u16,
    /// Lowest value of each field.
    lo: [u16; MAX_FIELDS],
    /// Highest value of each field.
    hi: [u16; MAX_FIELDS],
}

/// The last [`SLOTS`] skeletons of one (client, domain), replaced in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    /// The skeletons.
    slots: [Template; SLOTS],
    /// The slot a new skeleton goes to next.
    turn: u8,
}

/// A name read as a skeleton and field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Hash of the skeleton (never 0), field count included.
    skeleton: u32,
    /// Fields used.
    fields: usize,
    /// Their values.
    values: [u16; MAX_FIELDS],
}

impl Templates {
    /// Bits the subdomain part `sub` adds as one more name of a template this key used, and
    /// records it; `None` when it has no template, its skeleton is new, or its space is not
    /// small. Call it for novel names only.
    pub fn novel_bits(&mut self, sub: &[u8]) -> Option<f32> {
        let shape = shape(sub)?;
        let Some(t) = self.slots.iter_mut().find(|t| t.skeleton == shape.skeleton) else {
            let slot = usize::from(self.turn) % SLOTS;
            self.turn = u8::try_from((slot + 1) % SLOTS).unwrap_or(0);
            self.slots[slot] = Template {
                skeleton: shape.skeleton,
                names: 1,
                lo: shape.values,
                hi: shape.values,
            };
            return None;
        };
        let (mut extend, mut inside) = (0.0f32, 1.0f32);
        for i in 0..shape.fields {
            let v = shape.values[i];
            let (lo, hi) = (t.lo[i], t.hi[i]);
            if v < lo {
                extend += step_bits(lo - v);
                t.lo[i] = v;
            } else if v > hi {
                extend += step_bits(v - hi);
                t.hi[i] = v;
            } else {
                inside *= f32::from(hi - lo) + 1.0;
            }
        }
        let space = (0..shape.fields)
            .map(|i| u32::from(t.hi[i] - t.lo[i]) + 1)
            .fold(1u32, u32::saturating_mul);
        let names = t.names;
        t.names = t.names.saturating_add(1);
        if space > DENSE_SPACE {
            return None;
        }
        // log2(C(space, k)) grows by about log2(space / k) + 1.44 with the k-th value: the
        // 1.44 is in ORDER_BITS.
        let values = (inside / f32::from(names)).log2().max(0.0);
        Some(extend + values + ORDER_BITS)
    }
}

/// log2(d + 1) + 1: moving a field `d` past its range (a counter's step in [`super::floor`]).
fn step_bits(d: u16) -> f32 {
    (f32::from(d) + 1.0).log2() + 1.0
}

/// A token's character class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Digit,
    Letter,
}

/// Reads `sub` as a skeleton and fields: short letter runs beside digits are fields when that
/// leaves at most [`MAX_FIELDS`] (`node-c07`), else only the digit runs are (`n3.r7.dc2` is
/// `n#.r#.dc#`); `None` when it is too long, has a byte other than letters, digits, `.`, `-`
/// and `_`, more than [`MAX_FIELDS`] digit runs, a digit run longer than [`MAX_DIGITS`] or over
/// 65,535, or no field at all. Which letters are fields depends on the name's structure alone,
/// so names of one template get one skeleton.
fn shape(sub: &[u8]) -> Option<Shape> {
    if sub.is_empty() || sub.len() > MAX_NAME {
        return None;
    }
    // Every field is or sits beside a digit run, and every digit run is a field or ends the
    // reading: no digit, or more runs than fields, is no template either way (a random
    // name's usual case, told in one pass).
    let mut runs = 0;
    let mut in_digits = false;
    for c in sub {
        let digit = c.is_ascii_digit();
        runs += usize::from(digit && !in_digits);
        in_digits = digit;
    }
    if runs == 0 || runs > MAX_FIELDS {
        return None;
    }
    read_shape(sub, true).or_else(|| read_shape(sub, false))
}

/// [`shape`], with short letter runs beside digits as fields or not (then a token may hold
/// one digit run only).
fn read_shape(sub: &[u8], letter_fields: bool) -> Option<Shape> {
    // FNV-1a over the skeleton: literal bytes, and a marker per field.
    let mut hash: u32 = 0x811c_9dc5;
    let mut mix = |b: u8| {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    };
    let mut values = [0u16; MAX_FIELDS];
    let mut fields = 0usize;
    let mut end = 0;
    for token in sub.split(|c| matches!(c, b'.' | b'-' | b'_')) {
        let has_digit = token.iter().any(u8::is_ascii_digit);
        // With letters as the skeleton, one number a token (`dc2`, not `a3f9c1`: a hex hash's
        // letters would make a skeleton of their own and its digits a small space).
        let mut numbers = 0;
        let mut at = 0;
        while at < token.len() {
            let class = match token[at] {
                b'0'..=b'9' => Class::Digit,
                b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
                _ => return None,
            };
            let len = token[at..]
                .iter()
                .take_while(|c| match class {
                    Class::Digit => c.is_ascii_digit(),
                    Class::Letter => c.is_ascii_alphabetic(),
                })
                .count();
            let run = &token[at..at + len];
            at += len;
            let value = match class {
                Class::Digit if !letter_fields && numbers > 0 => return None,
                Class::Digit if len <= MAX_DIGITS => {
                    numbers += 1;
                    let v = run.iter().fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
                    Some(u16::try_from(v).ok()?)
                }
                Class::Digit => return None,
                Class::Letter if letter_fields && has_digit && len <= MAX_LETTERS => {
                    Some(run.iter().fold(0u16, |v, c| {
                        v * 26 + u16::from(c.to_ascii_lowercase() - b'a')
                    }))
                }
                Class::Letter => None,
            };
            match value {
                Some(v) => {
                    if fields == MAX_FIELDS {
                        return None;
                    }
                    values[fields] = v;
                    fields += 1;
                    mix(match class {
                        Class::Digit => 1,
                        Class::Letter => 2,
                    });
                }
                None => run.iter().for_each(|c| mix(c.to_ascii_lowercase())),
            }
        }
        // The separator (or the end, 0): `a-1` and `a.1` are two skeletons.
        end += token.len();
        mix(sub.get(end).copied().unwrap_or(0));
        end += 1;
    }
    if fields == 0 {
        return None;
    }
    mix(u8::try_from(fields).unwrap_or(0));
    Some(Shape {
        skeleton: hash.max(1),
        fields,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(t: &mut Templates, sub: &str) -> Option<f32> {
        t.novel_bits(sub.as_bytes())
    }

    /// The one-pass check before reading a name changes no answer.
    #[test]
    fn the_digit_run_check_changes_nothing() {
        let alphabet = b"ab0123456789z.-_x";
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut shaped = 0;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = 1 + usize::try_from(state % 24).unwrap();
            let name: Vec<u8> = (0..len)
                .map(|i| alphabet[usize::try_from((state >> (i % 56)) % 17).unwrap()])
                .collect();
            let slow = read_shape(&name, true).or_else(|| read_shape(&name, false));
            assert_eq!(shape(&name), slow, "{}", String::from_utf8_lossy(&name));
            shaped += usize::from(slow.is_some());
        }
        assert!(
            (1_000..19_000).contains(&shaped),
            "{shaped}: both kinds seen"
        );
    }

    #[test]
    fn skeletons_take_out_counters_and_short_ids() {
        let s = |x: &str| shape(x.as_bytes());
        assert_eq!(
            s("shard-017.db").map(|x| (x.fields, x.values[0])),
            Some((1, 17))
        );
        assert_eq!(
            s("shard-017.db").map(|x| x.skeleton),
            s("shard-942.db").map(|x| x.skeleton)
        );
        assert_ne!(
            s("shard-017.db").map(|x| x.skeleton),
            s("shards-017.db").map(|x| x.skeleton)
        );
        let n = s("node-c12.cluster").expect("a template");
        assert_eq!((n.fields, n.values[0], n.values[1]), (2, 2, 12));
        assert_eq!(Some(n.skeleton), s("node-a07.cluster").map(|x| x.skeleton));
        // Words and long letter runs are the skeleton; names without a field have no template.
        assert!(s("www").is_none() && s("api.eu-west").is_none());
        assert_eq!(s("tenant27.mail").map(|x| x.fields), Some(1));
        // A cloud host name spelling its address: four fields.
        assert_eq!(s("ip-10-0-3-17.compute").map(|x| x.fields), Some(4));
        // Too many fields with the letters: the digits alone.
        let n = s("n3.r7.dc2").expect("a template");
        assert_eq!((n.fields, n.values[..3].to_vec()), (3, vec![3, 7, 2]));
        assert_eq!(Some(n.skeleton), s("n9.r0.dc4").map(|x| x.skeleton));
        assert_ne!(Some(n.skeleton), s("m9.r0.dc4").map(|x| x.skeleton));
        // Hashes, long numbers and encoded data do not have one either.
        for x in ["a3f9c1", "1234567", "12.201.7.99.3", "a=b"] {
            assert!(s(x).is_none(), "{x}");
        }
        // Base32 with a few digits has one, but its letters make a new skeleton every name.
        assert_ne!(
            s("mzxw6ytboi2dk").map(|x| x.skeleton),
            s("q3kzxwytbfi2dk").map(|x| x.skeleton)
        );
        assert!(s(&"a1".repeat(40)).is_none());
    }

    #[test]
    fn a_fan_out_over_a_small_range_costs_a_few_bits_a_name_in_any_order() {
        let mut t = Templates::default();
        // 500 hosts (25 letters × 20 numbers) in a scrambled order.
        let mut order: Vec<u32> = (0..500).collect();
        let mut x = 7u32;
        for i in (1..order.len()).rev() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            order.swap(i, (x >> 8) as usize % (i + 1));
        }
        let mut total = 0.0;
        for i in order {
            let name = format!(
                "node-{}{:02}.cluster",
                char::from(b'a' + (i / 20) as u8),
                i % 20
            );
            total += bits(&mut t, &name).unwrap_or(20.0);
        }
        assert!(total / 500.0 < 5.0, "{} bits a name", total / 500.0);
    }

    #[test]
    fn large_spaces_and_new_skeletons_are_left_to_the_floor() {
        let mut t = Templates::default();
        assert_eq!(bits(&mut t, "shard-1.db"), None, "a new skeleton");
        assert!(bits(&mut t, "shard-2.db").is_some());
        // A counter stepped by payload leaves the small space: no estimate.
        assert_eq!(bits(&mut t, "shard-3000.db"), None);
        assert_eq!(bits(&mut t, "shard-4.db"), None);
        // Extending a range pays for the step.
        let mut t = Templates::default();
        bits(&mut t, "page-10");
        let step = bits(&mut t, "page-300").unwrap_or(0.0);
        assert!(step >= 9.0, "{step}");
        // Eight skeletons are kept; a ninth replaces the oldest.
        let mut t = Templates::default();
        for s in [
            "a-1", "b-1", "c-1", "d-1", "e-1", "f-1", "g-1", "h-1", "i-1",
        ] {
            assert_eq!(bits(&mut t, s), None);
        }
        assert_eq!(bits(&mut t, "a-2"), None, "replaced");
        assert!(bits(&mut t, "i-2").is_some());
    }
}
