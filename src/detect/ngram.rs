//! Character trigram likelihood of a label against ordinary host names.
//!
//! Tunnels put encoded bytes in labels; encoded bytes do not look like words. Following Born and
//! Gustafson, each label is scored by its average cost in bits per character under a trigram
//! model of real host names. Ordinary labels (`api`, `files`, `generativelanguage`) cost about
//! 3–5 bits per character; hex, base32 and base64 strings cost 7–8.5.
//!
//! The model is the 64,000-byte table `ngram_costs.bin`, trained offline by
//! `tools/train_ngram.py` from `tools/ngram_corpus.txt` (≈15,000 host names taken from the URLs in
//! installed Debian, PyPI and crates.io packages, the Public Suffix List of the Debian
//! `publicsuffix` package, and botocore's endpoint list; see the script for details). The table
//! holds `-log2 P(c | a b)` in sixteenths of a bit for every symbol triple.

/// Symbols in the model: `^` (label boundary), a–z, 0–9, `-`, `_`, and one for anything else.
pub const SYMBOLS: usize = 40;

/// The trained table, indexed `(a * 40 + b) * 40 + c`.
static COSTS: &[u8; SYMBOLS * SYMBOLS * SYMBOLS] = include_bytes!("ngram_costs.bin");

/// Cost units per bit in [`COSTS`].
const SCALE: f32 = 16.0;

/// The model symbol of one byte of a (lower-case) name.
#[inline]
#[must_use]
pub fn symbol(b: u8) -> usize {
    match b {
        b'a'..=b'z' => 1 + usize::from(b - b'a'),
        b'A'..=b'Z' => 1 + usize::from(b - b'A'),
        b'0'..=b'9' => 27 + usize::from(b - b'0'),
        b'-' => 37,
        b'_' => 38,
        _ => 39,
    }
}

/// Total cost of `label` (one label, no dots) in sixteenths of a bit, and the number of
/// predictions made (characters + the end of the label).
#[inline]
#[must_use]
pub fn label_cost(label: &[u8]) -> (u32, u32) {
    let (mut a, mut b) = (0usize, 0usize);
    let mut total = 0u32;
    for &ch in label {
        let c = symbol(ch);
        total += u32::from(COSTS[(a * SYMBOLS + b) * SYMBOLS + c]);
        a = b;
        b = c;
    }
    total += u32::from(COSTS[(a * SYMBOLS + b) * SYMBOLS]);
    let predictions = u32::try_from(label.len())
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    (total, predictions)
}

/// Average bits per character of a dotted name part under the model (0 for an empty part).
#[must_use]
pub fn bits_per_char(part: &str) -> f32 {
    let (mut total, mut n) = (0u32, 0u32);
    for label in part.split('.').filter(|l| !l.is_empty()) {
        let (t, p) = label_cost(label.as_bytes());
        total = total.saturating_add(t);
        n = n.saturating_add(p);
    }
    if n == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)] // sums of a few hundred small integers
    let avg = total as f32 / n as f32;
    avg / SCALE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_host_labels_cost_less_than_random_strings() {
        let real = [
            "pythonhosted",
            "registry",
            "generativelanguage",
            "static",
            "api",
            "huggingface",
        ];
        let random = [
            "k3v9x2q8zt7m4p1w",
            "0f3a9c2e7b1d8a6f",
            "mzxw6ytboi3tmnrt",
            "x9_qz-7kf2ab8vle",
        ];
        let worst_real = real.iter().map(|l| bits_per_char(l)).fold(0.0f32, f32::max);
        let best_random = random
            .iter()
            .map(|l| bits_per_char(l))
            .fold(f32::MAX, f32::min);
        assert!(worst_real < 5.5, "real labels cost up to {worst_real}");
        assert!(best_random > 6.5, "random labels cost from {best_random}");
        assert!(worst_real + 1.5 < best_random);
    }

    #[test]
    fn empty_and_odd_input_does_not_panic() {
        assert!(bits_per_char("").abs() < f32::EPSILON);
        assert!(bits_per_char("...").abs() < f32::EPSILON);
        assert!(bits_per_char("\u{e9}\u{0}\\.x").is_finite());
    }
}
