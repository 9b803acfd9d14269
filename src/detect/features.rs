//! Per-query features of a name: cheap, computed on the stack, no allocation.
//!
//! Everything here looks at the part of the name left of the registrable domain (the part a
//! tunnel controls) and at the query type. The numbers feed [`super::score`].

use super::ngram;

/// `NULL` (RFC 1035): iodine's favourite carrier, almost never legitimate.
pub const QTYPE_NULL: u16 = 10;
/// A.
pub const QTYPE_A: u16 = 1;
/// AAAA.
pub const QTYPE_AAAA: u16 = 28;
/// PTR.
pub const QTYPE_PTR: u16 = 12;
/// `KEY`: dns2tcp's alternative carrier.
pub const QTYPE_KEY: u16 = 25;
/// `TXT`: the most common carrier (dns2tcp, dnscat2, DNSExfiltrator, dnstt).
pub const QTYPE_TXT: u16 = 16;
/// `CNAME`, used as a carrier by dnscat2 and iodine.
pub const QTYPE_CNAME: u16 = 5;
/// `MX`, used as a carrier by dnscat2 and iodine.
pub const QTYPE_MX: u16 = 15;
/// `SRV`, one of iodine's carriers.
pub const QTYPE_SRV: u16 = 33;
/// `ANY`.
pub const QTYPE_ANY: u16 = 255;
/// First type of the private-use range (iodine's `PRIVATE` is 65399).
pub const QTYPE_PRIVATE_FIRST: u16 = 65280;
/// Last type of the private-use range.
pub const QTYPE_PRIVATE_LAST: u16 = 65534;

/// Which alphabet the subdomain characters fit in: decides the maximum possible entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// Nothing to look at.
    Empty,
    /// `0-9a-f` only (dnscat2, hashes): at most 4 bits per character.
    Hex,
    /// `a-z2-7` only (base32: iodine, dnstt): at most 5 bits.
    Base32,
    /// Letters, digits and `-` (ordinary host names).
    Alnum,
    /// Letters, digits, `-` and `_`: base64url once the wire parser has lower-cased it.
    Base64,
    /// Bytes no host name uses (`=`, `+`, `/`, non-ASCII: base64, base128, raw binary).
    Binary,
}

impl Alphabet {
    /// Number of symbols in the alphabet.
    #[must_use]
    pub fn size(self) -> u32 {
        match self {
            Self::Empty => 1,
            Self::Hex => 16,
            Self::Base32 => 32,
            Self::Alnum => 37,
            Self::Base64 => 38,
            Self::Binary => 64,
        }
    }
}

/// What one query name looks like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryFeatures {
    /// Length of the whole name in bytes.
    pub name_len: usize,
    /// Length of the part left of the registrable domain, dots included.
    pub sub_len: usize,
    /// Characters of that part, dots excluded.
    pub sub_chars: usize,
    /// Labels in that part.
    pub labels: usize,
    /// Longest label in that part.
    pub longest_label: usize,
    /// Shannon entropy of the part's characters (dots ignored, as dnscat2 ignores them), bits.
    pub entropy_bits: f32,
    /// Entropy divided by its maximum `log2(min(chars, alphabet size))`: 0..=1. A fixed bit
    /// threshold misses hex (max 4 bits) and every label of 16 characters or fewer (max 4 bits).
    pub entropy_norm: f32,
    /// The narrowest alphabet the characters fit in.
    pub alphabet: Alphabet,
    /// Share of digits among the characters.
    pub digit_ratio: f32,
    /// Average cost under the host-name trigram model, bits per character (0 when empty).
    pub ngram_bits: f32,
    /// Score points for the query type alone (0 for A/AAAA).
    pub qtype_points: u8,
    /// Characters in labels made of digits only (reversed IP addresses, counters): they carry
    /// at most log2(10) bits each, which the information estimate ([`super::volume`]) uses.
    pub numeric_chars: usize,
}

/// Score points for carrying a query of this type: NULL and private types are iodine's, KEY is
/// dns2tcp's, TXT everyone's; CNAME, MX and SRV are used by iodine and dnscat2 as carriers.
#[must_use]
pub fn qtype_points(qtype: u16) -> u8 {
    match qtype {
        QTYPE_NULL => 25,
        QTYPE_PRIVATE_FIRST..=QTYPE_PRIVATE_LAST => 25,
        QTYPE_KEY => 20,
        QTYPE_TXT | QTYPE_ANY => 12,
        QTYPE_CNAME | QTYPE_MX => 6,
        QTYPE_SRV => 3,
        _ => 0,
    }
}

/// Whether `qtype` is one clients ask in ordinary use (addresses, mail, service discovery,
/// DNSSEC, certificates, text). Any other type on a name is a choice among ~65,000 values: a
/// query type new for a (client, name) counts [`QTYPE_CHOICE_BITS`] of new information, so a
/// tunnel that writes its data into the type it asks (a NODATA with the same SOA each time,
/// otherwise free) pays for it.
#[must_use]
pub fn is_common_qtype(qtype: u16) -> bool {
    matches!(
        qtype,
        1 | 2
            | 5
            | 6
            | 12
            | 13
            | 15
            | 16
            | 28
            | 29
            | 33
            | 35
            | 37
            | 39
            | 43
            | 44
            | 46
            | 47
            | 48
            | 50
            | 51
            | 52
            | 53
            | 59
            | 60
            | 61
            | 64
            | 65
            | 99
            | 255
            | 256
            | 257
    )
}

/// Bits a query type off [`is_common_qtype`]'s list adds when it is new for the (client, name).
pub const QTYPE_CHOICE_BITS: u32 = 16;

/// Whether a positive answer to `qtype` for `qname` counts its bytes as downstream data: every
/// type but A and AAAA (their new addresses count instead) and PTR in the reverse trees. Not
/// only the types whose queries score ([`qtype_points`]): HTTPS/SVCB parameters (`ech`,
/// unknown keys), CAA, OPENPGPKEY, TLSA, NAPTR, URI and any other record data carry whatever
/// their server puts there, and counted nothing, a poller moved a megabyte in five minutes
/// through HTTPS answers unseen. PTR under `in-addr.arpa` and `ip6.arpa` is priced by its
/// targets instead ([`priced_by_targets`]); a PTR anywhere else is a 255-byte name of its
/// server's choosing, and counts.
#[must_use]
pub fn answer_carries_bytes(qtype: u16, qname: &str) -> bool {
    match qtype {
        QTYPE_A | QTYPE_AAAA => false,
        QTYPE_PTR => !crate::names::is_reverse_name(qname),
        _ => true,
    }
}

/// Whether a positive answer to `qtype` for `qname` is priced by the host names it gives (what
/// is new in them to the domain, as CNAME targets are) rather than by its bytes: SRV and MX
/// (plus their numbers), and PTR in the reverse trees. A monitoring sweep of a /24 is hundreds
/// of fresh host names in seconds under one reverse zone, most of each name (`static.isp.net`)
/// given before, so it pays a few bytes a name; a reverse zone's server answering one name
/// with fresh 200-byte names each time (TTL 0) pays for each (487 KB had moved unseen in 15
/// minutes when these answers counted nothing).
#[must_use]
pub fn priced_by_targets(qtype: u16, qname: &str) -> bool {
    match qtype {
        QTYPE_SRV | QTYPE_MX => true,
        QTYPE_PTR => crate::names::is_reverse_name(qname),
        _ => false,
    }
}

/// Computes the features of `qname` whose subdomain part is `sub` (see
/// [`crate::names::subdomain_part`]).
#[must_use]
pub fn extract(qname: &str, sub: &str, qtype: u16) -> QueryFeatures {
    let mut counts = [0u16; 256];
    // The distinct characters, in order of first appearance: the entropy sum visits only these.
    let mut distinct = [0u8; 256];
    let mut n_distinct = 0usize;
    let (mut chars, mut digits, mut labels, mut longest, mut cur) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut all_hex, mut all_b32, mut all_alnum, mut all_b64) = (true, true, true, true);
    // Digits in the label being read, to tell all-digit labels.
    let (mut numeric_chars, mut label_digits) = (0usize, 0usize);
    for &b in sub.as_bytes() {
        if b == b'.' {
            if cur > 0 {
                labels += 1;
                if label_digits == cur {
                    numeric_chars += cur;
                }
            }
            label_digits = 0;
            longest = longest.max(cur);
            cur = 0;
            continue;
        }
        cur += 1;
        chars += 1;
        let c = b.to_ascii_lowercase();
        let slot = &mut counts[usize::from(c)];
        if *slot == 0 {
            distinct[n_distinct] = c;
            n_distinct += 1;
        }
        *slot = slot.saturating_add(1);
        let digit = c.is_ascii_digit();
        digits += usize::from(digit);
        label_digits += usize::from(digit);
        all_hex &= digit || (b'a'..=b'f').contains(&c);
        all_b32 &= c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c);
        all_alnum &= c.is_ascii_lowercase() || digit || c == b'-';
        all_b64 &= c.is_ascii_lowercase() || digit || c == b'-' || c == b'_';
    }
    if cur > 0 {
        labels += 1;
        if label_digits == cur {
            numeric_chars += cur;
        }
    }
    longest = longest.max(cur);
    let alphabet = if chars == 0 {
        Alphabet::Empty
    } else if all_hex {
        Alphabet::Hex
    } else if all_b32 {
        Alphabet::Base32
    } else if all_alnum {
        Alphabet::Alnum
    } else if all_b64 {
        Alphabet::Base64
    } else {
        Alphabet::Binary
    };
    let (entropy_bits, entropy_norm) = entropy(&counts, &distinct[..n_distinct], chars, alphabet);
    #[allow(clippy::cast_precision_loss)] // names are at most a few hundred bytes
    let digit_ratio = if chars == 0 {
        0.0
    } else {
        digits as f32 / chars as f32
    };
    QueryFeatures {
        name_len: qname.len(),
        sub_len: sub.len(),
        sub_chars: chars,
        labels,
        longest_label: longest,
        entropy_bits,
        entropy_norm,
        alphabet,
        digit_ratio,
        ngram_bits: if chars == 0 {
            0.0
        } else {
            ngram::bits_per_char(sub)
        },
        qtype_points: qtype_points(qtype),
        numeric_chars,
    }
}

/// `c · log2(c)` for the counts a name can have (a wire name has at most 255 bytes; escaped
/// presentation bytes can push a count past that, and are computed directly).
static C_LOG2_C: std::sync::LazyLock<[f32; 256]> = std::sync::LazyLock::new(|| {
    let mut t = [0.0f32; 256];
    for (c, v) in t.iter_mut().enumerate().skip(1) {
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let x = (c as f64 * (c as f64).log2()) as f32;
        *v = x;
    }
    t
});

#[inline]
fn c_log2_c(c: u16) -> f32 {
    match C_LOG2_C.get(usize::from(c)) {
        Some(v) => *v,
        None => f32::from(c) * f32::from(c).log2(),
    }
}

/// Shannon entropy in bits per character, and the same normalised by its maximum for this
/// many characters drawn from this alphabet: `log2(min(n, |alphabet|))`.
///
/// Computed as `log2(n) − Σ c·log2(c) / n` over the `distinct` characters' counts `c`, which is
/// `−Σ p·log2(p)` without a logarithm per character.
#[allow(clippy::cast_precision_loss)] // counts are at most a few hundred
fn entropy(counts: &[u16; 256], distinct: &[u8], n: usize, alphabet: Alphabet) -> (f32, f32) {
    if n < 2 {
        return (0.0, 0.0);
    }
    let total = n as f32;
    let sum: f32 = distinct
        .iter()
        .map(|&b| c_log2_c(counts[usize::from(b)]))
        .sum();
    let bits = (total.log2() - sum / total).max(0.0);
    let max_symbols = u32::try_from(n)
        .unwrap_or(u32::MAX)
        .min(alphabet.size())
        .max(2);
    let max_bits = (max_symbols as f32).log2();
    (bits, (bits / max_bits).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(sub: &str) -> QueryFeatures {
        extract(&format!("{sub}.example.com"), sub, 1)
    }

    #[test]
    fn entropy_is_normalised_by_the_alphabet_and_length() {
        // 32 distinct hex digits: 4 bits/char, the hex maximum, although far below 4.5 bits.
        let hex = f("0123456789abcdef0123456789abcdef");
        assert_eq!(hex.alphabet, Alphabet::Hex);
        assert!((hex.entropy_bits - 4.0).abs() < 0.01);
        assert!(hex.entropy_norm > 0.99);
        // base32 alphabet, every symbol once: 5 bits of 5.
        let b32 = f("abcdefghijklmnopqrstuvwxyz234567");
        assert_eq!(b32.alphabet, Alphabet::Base32);
        assert!(b32.entropy_norm > 0.99);
        // base64 (lower-cased by the wire parser, with `_`): wide alphabet.
        let b64 = f("qmfzzty0igvuy29kzwqgcgf5bg9hzc_tb3jl_x");
        assert_eq!(b64.alphabet, Alphabet::Base64);
        assert!(b64.entropy_norm > 0.8);
        assert_eq!(f("a+b/c=").alphabet, Alphabet::Binary);
        // A short label of 8 distinct characters is at its maximum, 3 bits, not 4.5.
        let short = f("k3v9x2q8");
        assert!((short.entropy_bits - 3.0).abs() < 0.01);
        assert!(short.entropy_norm > 0.99);
        // A repetitive label is low.
        assert!(f("aaaaaaaaaaaaaaab").entropy_norm < 0.3);
    }

    #[test]
    fn character_classes_and_shape() {
        let x = f("www.cdn-1.eu");
        assert_eq!(x.alphabet, Alphabet::Alnum);
        assert_eq!(x.labels, 3);
        assert_eq!(x.longest_label, 5);
        assert_eq!(x.sub_chars, 10);
        assert_eq!(x.sub_len, 12);
        assert_eq!(x.numeric_chars, 0);
        assert_eq!(f("4.32.1.100").numeric_chars, 7);
        assert_eq!(f("a1.22.b").numeric_chars, 2);
        assert!((f("12ab").digit_ratio - 0.5).abs() < 1e-6);
        assert_eq!(f("").alphabet, Alphabet::Empty);
        assert!(f("").ngram_bits.abs() < f32::EPSILON);
        assert_eq!(f("_domainkey").alphabet, Alphabet::Base64);
        assert_eq!(f("\u{e9}t\u{e9}").alphabet, Alphabet::Binary);
    }

    #[test]
    fn ngram_likelihood_separates_hostnames_from_random_strings() {
        assert!(f("files").ngram_bits + 2.0 < f("kzq8x3vm2b7t").ngram_bits);
        assert!(f("registry").ngram_bits + 2.0 < f("0f3a9c2e7b1d").ngram_bits);
    }

    #[test]
    fn query_types_carry_risk() {
        assert_eq!(qtype_points(1), 0);
        assert_eq!(qtype_points(28), 0);
        assert_eq!(qtype_points(QTYPE_NULL), 25);
        assert_eq!(qtype_points(65399), 25);
        assert!(qtype_points(QTYPE_KEY) > qtype_points(QTYPE_TXT));
        assert!(qtype_points(QTYPE_TXT) > qtype_points(QTYPE_CNAME));
        assert!(qtype_points(QTYPE_MX) > 0 && qtype_points(QTYPE_ANY) > 0);
    }

    #[test]
    fn arbitrary_bytes_do_not_panic() {
        let weird = "\u{0}\u{ff}..\\\u{7f}.\u{e9}";
        let x = extract(weird, weird, 65535);
        assert!(x.entropy_norm.is_finite() && x.ngram_bits.is_finite());
    }
}
