//! Query generators that emulate real tunneling tools, for tests (unit and integration).
//!
//! Each generator turns pseudo-random payload into query names the way the tool encodes it on
//! the wire (see `shared/REFERENCE.md`): iodine (base32 or base128 over NULL / PRIVATE), dns2tcp
//! (base64 over TXT or KEY), dnscat2 (hex over TXT, CNAME, MX), DNSExfiltrator-style base64url
//! exfiltration (63-character labels over TXT), and a slow drip of one short high-entropy query
//! every few seconds. Names come out lower-case, as the wire parser hands them to the detector.
//! Deterministic: a seeded xorshift generator, no `rand` dependency.

use std::time::Duration;

/// One generated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelQuery {
    /// Query name, lower-case, no trailing dot.
    pub qname: String,
    /// Query type code.
    pub qtype: u16,
    /// Payload bytes this query carries upstream (before encoding).
    pub payload: usize,
}

/// A tool's traffic: queries and the pause between them.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Tool name for reports.
    pub tool: &'static str,
    /// The queries, in order.
    pub queries: Vec<TunnelQuery>,
    /// Time between two queries.
    pub interval: Duration,
}

/// Seeded xorshift64* generator.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator from a seed (0 is replaced by a fixed constant).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64().to_le_bytes()[0]).collect()
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8] = b"0123456789abcdef";

/// Encodes `data` with a power-of-two alphabet (bits per symbol = log2 of its length).
fn encode(data: &[u8], alphabet: &[u8]) -> String {
    let bits = alphabet.len().trailing_zeros();
    let mut out = String::new();
    let (mut acc, mut have) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        have += 8;
        while have >= bits {
            have -= bits;
            out.push(char::from(
                alphabet[((acc >> have) & ((1 << bits) - 1)) as usize],
            ));
        }
    }
    if have > 0 {
        out.push(char::from(
            alphabet[((acc << (bits - have)) & ((1 << bits) - 1)) as usize],
        ));
    }
    out.to_ascii_lowercase()
}

/// Splits `s` into dot-joined labels of at most `max` characters.
fn labels(s: &str, max: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars
        .chunks(max)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(".")
}

/// iodine downstream-polling and upstream data: `<cmd><userid><base32 data>` split in 57-char
/// labels, up to ~200 characters, alternating NULL and PRIVATE (65399), 10 queries a second.
#[must_use]
pub fn iodine_base32(domain: &str, count: usize, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let queries = (0..count)
        .map(|i| {
            let payload = 100 + usize::try_from(r.below(20)).unwrap_or(0);
            let data = encode(&r.bytes(payload), B32);
            let head = char::from(HEX[i % 16]);
            TunnelQuery {
                qname: format!("p{head}{}.{domain}", labels(&data, 57)),
                qtype: if i % 2 == 0 { 10 } else { 65399 },
                payload,
            }
        })
        .collect();
    Traffic {
        tool: "iodine base32/NULL",
        queries,
        interval: Duration::from_millis(100),
    }
}

/// iodine's Base128 encoding: 7 bits per character using letters, digits and Latin-1 bytes
/// (shown here as the characters U+00BC–U+00FD), over NULL.
#[must_use]
pub fn iodine_base128(domain: &str, count: usize, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let alphabet: Vec<char> = ('a'..='z')
        .chain('0'..='9')
        .chain((0xbcu32..=0xfd).filter_map(char::from_u32))
        .collect();
    let queries = (0..count)
        .map(|_| {
            let n = 150 + usize::try_from(r.below(30)).unwrap_or(0);
            let text: String = (0..n)
                .map(|_| alphabet[usize::try_from(r.below(alphabet.len() as u64)).unwrap_or(0)])
                .collect();
            TunnelQuery {
                qname: format!("y{}.{domain}", labels(&text, 30)),
                qtype: 10,
                payload: n * 7 / 8,
            }
        })
        .collect();
    Traffic {
        tool: "iodine base128/NULL",
        queries,
        interval: Duration::from_millis(100),
    }
}

/// dns2tcp: base64 payload in labels under `<resource>.<domain>`, TXT (or KEY when `key`),
/// 5 queries a second.
#[must_use]
pub fn dns2tcp(domain: &str, count: usize, key: bool, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let queries = (0..count)
        .map(|_| {
            let payload = 60 + usize::try_from(r.below(40)).unwrap_or(0);
            let data = encode(&r.bytes(payload), B64URL);
            TunnelQuery {
                qname: format!("{}.ssh.{domain}", labels(&data, 63)),
                qtype: if key { 25 } else { 16 },
                payload,
            }
        })
        .collect();
    Traffic {
        tool: if key {
            "dns2tcp base64/KEY"
        } else {
            "dns2tcp base64/TXT"
        },
        queries,
        interval: Duration::from_millis(200),
    }
}

/// dnscat2: hex of a header (packet id, seq) and data, dots ignored, rotating TXT, CNAME, MX;
/// 4 queries a second (its default poll is fast).
#[must_use]
pub fn dnscat2(domain: &str, count: usize, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let qtypes = [16u16, 5, 15];
    let queries = (0..count)
        .map(|i| {
            let payload = 20 + usize::try_from(r.below(60)).unwrap_or(0);
            let data = encode(&r.bytes(payload + 9), HEX);
            TunnelQuery {
                qname: format!("{}.{domain}", labels(&data, 63)),
                qtype: qtypes[i % 3],
                payload,
            }
        })
        .collect();
    Traffic {
        tool: "dnscat2 hex/TXT,CNAME,MX",
        queries,
        interval: Duration::from_millis(250),
    }
}

/// DNSExfiltrator-style file exfiltration: `<chunk>.<63-char base64url labels>`, TXT, with its
/// throttle option at 1 query a second.
#[must_use]
pub fn base64url_exfil(domain: &str, count: usize, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let queries = (0..count)
        .map(|i| {
            let payload = 140;
            let data = encode(&r.bytes(payload), B64URL);
            TunnelQuery {
                qname: format!("{i}.{}.{domain}", labels(&data, 63)),
                qtype: 16,
                payload,
            }
        })
        .collect();
    Traffic {
        tool: "base64url exfil/TXT",
        queries,
        interval: Duration::from_secs(1),
    }
}

/// A slow drip: one A query every 5 seconds carrying 16 bytes as 32 hex characters, the way a
/// patient implant leaks a secret without a tunnel tool (≈ 11 KB/h).
#[must_use]
pub fn slow_drip(domain: &str, count: usize, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let queries = (0..count)
        .map(|i| {
            let data = encode(&r.bytes(16), HEX);
            TunnelQuery {
                qname: format!("{data}.{:x}.{domain}", i % 256),
                qtype: 1,
                payload: 16,
            }
        })
        .collect();
    Traffic {
        tool: "slow drip hex/A every 5s",
        queries,
        interval: Duration::from_secs(5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_tools() {
        assert_eq!(encode(b"foobar", B32), "mzxw6ytboi");
        assert_eq!(encode(b"\xde\xad", HEX), "dead");
        assert_eq!(encode(b"foob", B64URL), "zm9vyg");
        let t = iodine_base32("t.example.com", 3, 1);
        assert!(
            t.queries
                .iter()
                .all(|q| q.qname.len() <= 253 && q.qname.ends_with(".t.example.com"))
        );
        assert!(
            t.queries
                .iter()
                .all(|q| q.qname.split('.').all(|l| l.len() <= 63))
        );
        let d = base64url_exfil("x.com", 2, 1);
        assert!(d.queries[0].qname.split('.').any(|l| l.len() == 63));
    }
}
