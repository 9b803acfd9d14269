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

/// Reads `data` as a stream of bits, `n` at a time (zero-padded at the end).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Option<usize> {
        if self.at >= self.data.len() * 8 {
            return None;
        }
        let mut v = 0usize;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8).copied().unwrap_or(0);
            v = (v << 1) | usize::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(v)
    }
}

/// Pronounceable syllables: 4 bits choose a consonant, 2 a vowel (3 bits a character), so the
/// names look like words (`bakodufi`) and score low on entropy and n-grams.
#[must_use]
pub fn syllables(data: &[u8]) -> String {
    const C: &[u8] = b"bdfghklmnprstvwz";
    const V: &[u8] = b"aeio";
    let mut bits = Bits { data, at: 0 };
    let mut out = String::new();
    while let Some(c) = bits.take(4) {
        out.push(char::from(C[c]));
        out.push(char::from(V[bits.take(2).unwrap_or(0)]));
    }
    out
}

/// Base36 (`0-9a-z`): each 8 bytes as a 13-character number.
#[must_use]
pub fn base36(data: &[u8]) -> String {
    const A: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = String::new();
    for chunk in data.chunks(8) {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        let mut n = u64::from_le_bytes(buf);
        for _ in 0..13 {
            out.push(char::from(A[usize::try_from(n % 36).unwrap_or(0)]));
            n /= 36;
        }
    }
    out
}

/// 64 short English words: 6 bits a word.
const WORDS: [&str; 64] = [
    "apple", "river", "stone", "cloud", "green", "tiger", "house", "light", "music", "paper",
    "table", "water", "bread", "chair", "dream", "earth", "field", "glass", "heart", "index",
    "juice", "knife", "lemon", "metal", "night", "ocean", "piano", "queen", "radio", "sugar",
    "train", "uncle", "voice", "whale", "yacht", "zebra", "amber", "blaze", "coral", "delta",
    "ember", "frost", "grape", "haven", "ivory", "jewel", "karma", "lunar", "maple", "noble",
    "olive", "pearl", "quilt", "raven", "solar", "tulip", "ultra", "vivid", "wheat", "xenon",
    "young", "zesty", "alpha", "bravo",
];

/// Dictionary words, 6 bits each, joined by `-` in labels of up to three words.
#[must_use]
pub fn dictionary_words(data: &[u8]) -> String {
    let mut bits = Bits { data, at: 0 };
    let mut words = Vec::new();
    while let Some(w) = bits.take(6) {
        words.push(WORDS[w]);
    }
    words
        .chunks(3)
        .map(|c| c.join("-"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Which encoding a generic exfiltration stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Pronounceable syllables in 16-character labels.
    WordLike,
    /// One short hex label per query, shaped like a CDN host name (`a3f9c1.<domain>`).
    CdnHash,
    /// Classic base32 in long labels.
    Base32,
    /// Base36 in long labels.
    Base36,
    /// Base64url (lower-cased by the wire) in long labels.
    Base64Url,
    /// Hex split over many 4-character labels.
    HexSplit,
    /// Dictionary words.
    Dictionary,
    /// Decimal octets, like a reversed IP address but longer (`12.201.7.99.3...`).
    Octets,
}

impl Encoding {
    /// Every encoding, for tests that try them all.
    pub const ALL: [Self; 8] = [
        Self::WordLike,
        Self::CdnHash,
        Self::Base32,
        Self::Base36,
        Self::Base64Url,
        Self::HexSplit,
        Self::Dictionary,
        Self::Octets,
    ];

    /// Name for reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::WordLike => "word-like syllables",
            Self::CdnHash => "CDN-hash-like hex",
            Self::Base32 => "base32",
            Self::Base36 => "base36",
            Self::Base64Url => "base64url",
            Self::HexSplit => "hex split over labels",
            Self::Dictionary => "dictionary words",
            Self::Octets => "decimal octets",
        }
    }

    /// Payload bytes per query at which names stay ordinary-sized for this encoding.
    #[must_use]
    pub fn chunk(self) -> usize {
        match self {
            Self::CdnHash => 3,
            Self::WordLike | Self::Dictionary => 12,
            Self::Octets => 8,
            Self::HexSplit => 16,
            _ => 30,
        }
    }

    /// The subdomain part carrying `data`.
    #[must_use]
    pub fn encode(self, data: &[u8]) -> String {
        match self {
            Self::WordLike => labels(&syllables(data), 16),
            Self::CdnHash => encode(data, HEX),
            Self::Base32 => labels(&encode(data, B32), 52),
            Self::Base36 => labels(&base36(data), 52),
            Self::Base64Url => labels(&encode(data, B64URL), 52),
            Self::HexSplit => labels(&encode(data, HEX), 4),
            Self::Dictionary => dictionary_words(data),
            Self::Octets => data.iter().map(u8::to_string).collect::<Vec<_>>().join("."),
        }
    }
}

/// Generic exfiltration: `total` payload bytes in chunks of `chunk` bytes (0: the encoding's
/// own), one A query per chunk under `<sub>.<domain>` (`domains` are used in turn), `interval`
/// apart. Each query also carries a sequence number folded into the data, as real tools do,
/// so no two names repeat.
#[must_use]
pub fn exfil(
    encoding: Encoding,
    domains: &[&str],
    total: usize,
    chunk: usize,
    interval: Duration,
    seed: u64,
) -> Traffic {
    let mut r = Prng::new(seed);
    let chunk = if chunk == 0 { encoding.chunk() } else { chunk };
    let n = total.div_ceil(chunk);
    let queries = (0..n)
        .map(|i| {
            let data = r.bytes(chunk);
            let domain = domains[i % domains.len().max(1)];
            TunnelQuery {
                qname: format!("{}.{domain}", encoding.encode(&data)),
                qtype: 1,
                payload: chunk,
            }
        })
        .collect();
    Traffic {
        tool: encoding.name(),
        queries,
        interval,
    }
}

/// Hides the payload in DKIM-looking names: `<base32>._domainkey.<domain>` TXT.
#[must_use]
pub fn domainkey_exfil(domain: &str, total: usize, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let queries = (0..total.div_ceil(20))
        .map(|_| TunnelQuery {
            qname: format!("{}._domainkey.{domain}", encode(&r.bytes(20), B32)),
            qtype: 16,
            payload: 20,
        })
        .collect();
    Traffic {
        tool: "base32 under _domainkey",
        queries,
        interval: Duration::from_millis(100),
    }
}

/// A tunnel under one delegated reverse zone (`<x>.<y>.10.in-addr.arpa` delegated to the
/// attacker): payload as decimal octets, PTR queries, like reverse lookups of odd addresses.
#[must_use]
pub fn reverse_zone_exfil(zone: &str, total: usize, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let queries = (0..total.div_ceil(12))
        .map(|_| TunnelQuery {
            qname: format!("{}.{zone}", Encoding::Octets.encode(&r.bytes(12))),
            qtype: 12,
            payload: 12,
        })
        .collect();
    Traffic {
        tool: "octets under a delegated reverse zone",
        queries,
        interval: Duration::from_millis(100),
    }
}

/// The reversed nibble form of an IPv6 address's 32 nibbles (`b.a.9.8. … .2`), no zone.
#[must_use]
pub fn reversed_nibbles(addr: u128) -> String {
    let hex = format!("{addr:032x}");
    let mut nibbles: Vec<String> = hex.chars().map(String::from).collect();
    nibbles.reverse();
    nibbles.join(".")
}

/// A tunnel under one delegated IPv6 reverse zone (the /48 `prefix48`, its first 48 bits, held
/// by the attacker): 10 payload bytes a name in the 80 bits below the /48, PTR queries, like
/// reverse lookups of peers of that network.
#[must_use]
pub fn ipv6_reverse_zone_exfil(prefix48: u64, total: usize, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let queries = (0..total.div_ceil(10))
        .map(|_| {
            let low = r
                .bytes(10)
                .iter()
                .fold(0u128, |v, b| (v << 8) | u128::from(*b));
            let addr = (u128::from(prefix48 & 0xffff_ffff_ffff) << 80) | low;
            TunnelQuery {
                qname: format!("{}.ip6.arpa", reversed_nibbles(addr)),
                qtype: 12,
                payload: 10,
            }
        })
        .collect();
    Traffic {
        tool: "nibbles under a delegated ip6.arpa /48",
        queries,
        interval: Duration::from_millis(100),
    }
}

/// A tunnel dressed as blocklist lookups: 4 payload bytes a name as a fake reversed IPv4
/// address (`d.c.b.a.<zone>`, every octet 0–255) under the attacker's own zone, A queries.
/// With `mimic`, each fake address is also asked under that real list first, as a mail relay
/// checking a sender against several lists would (those queries carry no new payload).
#[must_use]
pub fn fake_reversed_ip_exfil(
    zone: &str,
    mimic: Option<&str>,
    total: usize,
    interval: Duration,
    seed: u64,
) -> Traffic {
    let mut r = Prng::new(seed);
    let mut queries = Vec::new();
    for _ in 0..total.div_ceil(4) {
        let b = r.bytes(4);
        let ip = format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
        if let Some(list) = mimic {
            queries.push(TunnelQuery {
                qname: format!("{ip}.{list}"),
                qtype: 1,
                payload: 0,
            });
        }
        queries.push(TunnelQuery {
            qname: format!("{ip}.{zone}"),
            qtype: 1,
            payload: 4,
        });
    }
    Traffic {
        tool: if mimic.is_some() {
            "fake reversed IPs, each also asked under a real list"
        } else {
            "fake reversed IPs under its own zone"
        },
        queries,
        interval,
    }
}

/// A mail relay (Postfix postscreen/smtpd-like): `per_sec` new senders a second for `secs`
/// seconds, each sender's address (fresh and random: the worst case, no repeats) checked
/// against every zone of `lists` by reversed IPv4, in order, within the second. One client.
#[must_use]
pub fn dnsbl_relay(lists: &[&str], per_sec: u64, secs: u64, seed: u64) -> Vec<BenignQuery> {
    let mut r = Prng::new(seed);
    let mut out = Vec::new();
    for t in 0..secs {
        for _ in 0..per_sec {
            // A public unicast sender: first octet 1–223, not 10 or 127.
            let b = r.next_u64().to_le_bytes();
            let first = 1 + (b[0] % 222);
            let first = if first == 10 || first == 127 {
                first + 1
            } else {
                first
            };
            let ip = format!("{}.{}.{}.{first}", b[3], b[2], b[1]);
            for list in lists {
                out.push(BenignQuery {
                    at: t,
                    client: 0,
                    class: "dnsbl",
                    qname: format!("{ip}.{list}"),
                    qtype: 1,
                });
            }
        }
    }
    out
}

/// Where [`sshd_ipv6_peers`]' peers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    /// Half from random /32s of 2000::/3, half from one /48.
    Mixed,
    /// All from one /48 (random /64 subnets in it, random privacy interface identifiers).
    OneSite,
    /// All from random /32s of 2000::/3.
    Global,
}

/// An sshd-like host (`UseDNS yes`) or a log pipeline enriching addresses, reverse-resolving
/// its peers: `per_min` distinct new peers a minute for `mins` minutes, from where `peers`
/// says, PTR queries. One client.
#[must_use]
pub fn sshd_ipv6_peers(per_min: u64, mins: u64, peers: Peers, seed: u64) -> Vec<BenignQuery> {
    let mut r = Prng::new(seed);
    let site48: u128 = 0x2001_0db8_7a00 << 80;
    let mut out = Vec::new();
    for m in 0..mins {
        for i in 0..per_min {
            let random = (u128::from(r.next_u64()) << 64) | u128::from(r.next_u64());
            let global = match peers {
                Peers::Mixed => i % 2 == 0,
                Peers::OneSite => false,
                Peers::Global => true,
            };
            let addr = if global {
                // Global unicast 2000::/3 with random bits below.
                (random & !(0b111 << 125)) | (0b001 << 125)
            } else {
                site48 | (random & ((1 << 80) - 1))
            };
            out.push(BenignQuery {
                at: m * 60 + i * 60 / per_min.max(1),
                client: 0,
                class: "reverse-dns",
                qname: format!("{}.ip6.arpa", reversed_nibbles(addr)),
                qtype: 12,
            });
        }
    }
    out
}

/// The same for IPv4 peers: `per_min` distinct new peers a minute from random public
/// networks, PTR queries under `in-addr.arpa`.
#[must_use]
pub fn sshd_ipv4_peers(per_min: u64, mins: u64, seed: u64) -> Vec<BenignQuery> {
    let mut r = Prng::new(seed);
    let mut out = Vec::new();
    for m in 0..mins {
        for i in 0..per_min {
            let b = r.next_u64().to_le_bytes();
            let first = 1 + (b[0] % 223);
            out.push(BenignQuery {
                at: m * 60 + i * 60 / per_min.max(1),
                client: 0,
                class: "reverse-dns",
                qname: format!("{}.{}.{}.{first}.in-addr.arpa", b[3], b[2], b[1]),
                qtype: 12,
            });
        }
    }
    out
}

/// One query and the answer its server gives: the downstream half, for tests of answer bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Query name, lower-case, no trailing dot.
    pub qname: String,
    /// Query type code.
    pub qtype: u16,
    /// Whether the answer is NXDOMAIN.
    pub nxdomain: bool,
    /// Records in its answer section (0: a negative answer, its data in the SOA).
    pub answers: u16,
    /// Its bytes after the question.
    pub bytes: usize,
    /// What its records say, as a tag: two answers with one tag say the same.
    pub tag: u64,
    /// The A and AAAA addresses in its answer section.
    pub addresses: Vec<std::net::IpAddr>,
    /// The CNAME targets in its answer section.
    pub cname_targets: Vec<String>,
    /// Data bytes it carries to the client (a tunnel's downstream; 0 for benign answers).
    pub payload: usize,
}

/// How a downstream tunnel puts its data in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownCarrier {
    /// TXT answers of this many bytes (a TXT string holds 255; big ones are several).
    Txt(usize),
    /// NULL answers of this many bytes (iodine's downstream).
    Null(usize),
    /// An A query answered by a chain of this many CNAMEs, each target 52 base32 characters
    /// of data under the tunnel's domain, then one fixed address.
    CnameChain(usize),
    /// AAAA answers of this many random addresses (16 bytes of data each).
    ManyAaaa(usize),
    /// NXDOMAIN whose SOA carries the data: two 63-character base32 labels in its names.
    NegativeSoa,
}

impl DownCarrier {
    /// Name for reports.
    #[must_use]
    pub fn name(self) -> String {
        match self {
            Self::Txt(n) => format!("TXT {n} B"),
            Self::Null(n) => format!("NULL {n} B"),
            Self::CnameChain(n) => format!("CNAME chain of {n}"),
            Self::ManyAaaa(n) => format!("{n} AAAA"),
            Self::NegativeSoa => "data in a negative answer's SOA".to_string(),
        }
    }
}

/// A tunnel that reads its data from answers, asking counter names (`1a.<domain>`: a few bits
/// each) under one registrable domain, and moving to a new one when told ([`Self::hop`]: the
/// caller hops when the current domain is contained, as the audit's tunnel hopped each time
/// its domain was sinkholed). Every answer is fresh data.
#[derive(Debug, Clone)]
pub struct HoppingDownstream {
    carrier: DownCarrier,
    r: Prng,
    seq: u64,
    hops: u64,
    domain: String,
}

impl HoppingDownstream {
    /// A tunnel through `carrier`, starting on its first domain.
    #[must_use]
    pub fn new(carrier: DownCarrier, seed: u64) -> Self {
        Self {
            carrier,
            r: Prng::new(seed),
            seq: 0,
            hops: 0,
            domain: Self::domain_for(seed, 0),
        }
    }

    /// Its `n`th domain: low-information labels (`dl-4-17.com`), so the hop itself costs
    /// nothing in names and only the answers are measured.
    fn domain_for(seed: u64, n: u64) -> String {
        let tld = ["com", "net", "org", "io"][usize::try_from(n % 4).unwrap_or(0)];
        format!("dl-{}-{n}.{tld}", seed % 10)
    }

    /// The registrable domain it uses now.
    #[must_use]
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Domains used so far, the current one included.
    #[must_use]
    pub fn domains_used(&self) -> u64 {
        self.hops + 1
    }

    /// Moves to a new registrable domain.
    pub fn hop(&mut self) {
        self.hops += 1;
        self.domain = Self::domain_for(self.r.next_u64(), self.hops);
    }

    /// The next query and its answer.
    pub fn next_exchange(&mut self) -> Exchange {
        self.seq += 1;
        let qname = format!("{:x}.{}", self.seq, self.domain);
        let tag = self.r.next_u64();
        let mut e = Exchange {
            qname,
            qtype: 16,
            nxdomain: false,
            answers: 1,
            bytes: 0,
            tag,
            addresses: Vec::new(),
            cname_targets: Vec::new(),
            payload: 0,
        };
        match self.carrier {
            DownCarrier::Txt(n) | DownCarrier::Null(n) => {
                e.qtype = if matches!(self.carrier, DownCarrier::Txt(_)) {
                    16
                } else {
                    10
                };
                e.answers = u16::try_from(n.div_ceil(256).max(1)).unwrap_or(u16::MAX);
                e.bytes = n;
                // The record header, and a length byte per TXT string.
                e.payload = n.saturating_sub(12 + n / 256);
            }
            DownCarrier::CnameChain(k) => {
                e.qtype = 1;
                e.answers = u16::try_from(k + 1).unwrap_or(u16::MAX);
                for _ in 0..k {
                    let data = encode(&self.r.bytes(32), B32);
                    e.cname_targets
                        .push(format!("{}.{}", labels(&data, 63), self.domain));
                }
                e.addresses.push(std::net::IpAddr::from([192, 0, 2, 53]));
                e.bytes = e.cname_targets.iter().map(|t| t.len() + 14).sum::<usize>() + 16;
                e.payload = 32 * k;
            }
            DownCarrier::ManyAaaa(k) => {
                e.qtype = 28;
                e.answers = u16::try_from(k).unwrap_or(u16::MAX);
                for _ in 0..k {
                    let hi = u128::from(self.r.next_u64());
                    let lo = u128::from(self.r.next_u64());
                    e.addresses
                        .push(std::net::IpAddr::from((hi << 64 | lo).to_be_bytes()));
                }
                e.bytes = 28 * k;
                e.payload = 16 * k;
            }
            DownCarrier::NegativeSoa => {
                e.qtype = 1;
                e.nxdomain = true;
                e.answers = 0;
                let mname = encode(&self.r.bytes(39), B32);
                let rname = encode(&self.r.bytes(39), B32);
                e.bytes = 12 + mname.len() + rname.len() + 2 * (self.domain.len() + 2) + 22;
                e.payload = 78;
            }
        }
        e
    }
}

/// Well-known registrable domains of the public web, as an agent browsing for its task meets
/// them.
const KNOWN_SITES: &[&str] = &[
    "github.com",
    "ycombinator.com",
    "bbc.co.uk",
    "wikipedia.org",
    "stackoverflow.com",
    "python.org",
    "rust-lang.org",
    "crates.io",
    "docs.rs",
    "npmjs.com",
    "pypi.org",
    "mozilla.org",
    "nytimes.com",
    "theguardian.com",
    "washingtonpost.com",
    "reuters.com",
    "bloomberg.com",
    "ft.com",
    "economist.com",
    "cnn.com",
    "bbc.com",
    "lemonde.fr",
    "spiegel.de",
    "elpais.com",
    "corriere.it",
    "nhk.or.jp",
    "abc.net.au",
    "cbc.ca",
    "google.com",
    "youtube.com",
    "microsoft.com",
    "apple.com",
    "amazon.com",
    "cloudflare.com",
    "fastly.com",
    "akamai.com",
    "digitalocean.com",
    "heroku.com",
    "vercel.com",
    "netlify.com",
    "gitlab.com",
    "bitbucket.org",
    "atlassian.com",
    "slack.com",
    "zoom.us",
    "dropbox.com",
    "box.com",
    "salesforce.com",
    "oracle.com",
    "ibm.com",
    "intel.com",
    "nvidia.com",
    "amd.com",
    "arxiv.org",
    "nature.com",
    "sciencedirect.com",
    "springer.com",
    "acm.org",
    "ieee.org",
    "medium.com",
    "substack.com",
    "wordpress.com",
    "blogspot.com",
    "tumblr.com",
    "reddit.com",
    "twitter.com",
    "linkedin.com",
    "facebook.com",
    "instagram.com",
    "pinterest.com",
    "imdb.com",
    "netflix.com",
    "spotify.com",
    "twitch.tv",
    "steampowered.com",
    "ebay.com",
    "etsy.com",
    "shopify.com",
    "stripe.com",
    "paypal.com",
    "visa.com",
    "mastercard.com",
    "booking.com",
    "airbnb.com",
    "tripadvisor.com",
    "expedia.com",
    "weather.com",
    "openstreetmap.org",
    "archive.org",
    "gutenberg.org",
    "w3.org",
    "ietf.org",
    "iana.org",
    "letsencrypt.org",
    "kernel.org",
    "debian.org",
    "ubuntu.com",
    "redhat.com",
    "fedoraproject.org",
    "archlinux.org",
    "docker.com",
    "kubernetes.io",
    "hashicorp.com",
    "terraform.io",
    "grafana.com",
    "prometheus.io",
    "elastic.co",
    "mongodb.com",
    "postgresql.org",
    "mysql.com",
    "sqlite.org",
    "jetbrains.com",
    "visualstudio.com",
    "golang.org",
    "nodejs.org",
    "deno.land",
    "typescriptlang.org",
    "reactjs.org",
    "vuejs.org",
    "angular.io",
    "svelte.dev",
    "tailwindcss.com",
    "getbootstrap.com",
];

/// `n` distinct real-looking registrable domains: the well-known ones, then brand-like names
/// made of one or two common words under common suffixes (`riverstone.com`, `olive-music.co.uk`).
#[must_use]
pub fn ordinary_domains(n: usize, seed: u64) -> Vec<String> {
    let mut r = Prng::new(seed);
    let mut out: Vec<String> = KNOWN_SITES
        .iter()
        .take(n)
        .map(|s| (*s).to_string())
        .collect();
    let suffixes = [
        "com", "net", "org", "io", "co.uk", "de", "fr", "com.au", "ca", "nl",
    ];
    let mut seen: std::collections::HashSet<String> = out.iter().cloned().collect();
    while out.len() < n {
        let a = WORDS[usize::try_from(r.below(64)).unwrap_or(0)];
        let b = WORDS[usize::try_from(r.below(64)).unwrap_or(0)];
        let tld = suffixes[usize::try_from(r.below(suffixes.len() as u64)).unwrap_or(0)];
        let name = match r.below(4) {
            0 => format!("{a}.{tld}"),
            1 => format!("{a}-{b}.{tld}"),
            _ => format!("{a}{b}.{tld}"),
        };
        if seen.insert(name.clone()) {
            out.push(name);
        }
    }
    out
}

/// What a browsing agent is answered for one site: for `www` and up to two more hosts (`static`,
/// `api`, `cdn`, `img`, `login`), A (one or two addresses of the site's /24, a third of sites
/// behind a CDN CNAME), AAAA (of its /64, server-style interface identifiers) and HTTPS (an
/// `alpn`/hints record of 90–220 bytes, or for two sites in five NODATA with the zone's SOA).
#[must_use]
pub fn browse_site(domain: &str, r: &mut Prng) -> Vec<Exchange> {
    let extra = ["static", "api", "cdn", "img", "login"];
    let mut hosts = vec!["www".to_string()];
    for _ in 0..r.below(3) {
        hosts.push(extra[usize::try_from(r.below(5)).unwrap_or(0)].to_string());
    }
    hosts.dedup();
    let net = r.next_u64().to_le_bytes();
    let cdn = r.below(3) == 0;
    let https = r.below(5) >= 2;
    let soa_tag = r.next_u64();
    let mut out = Vec::new();
    for host in hosts {
        let qname = format!("{host}.{domain}");
        let n = 1 + usize::try_from(r.below(2)).unwrap_or(0);
        let v4: Vec<std::net::IpAddr> = (0..n)
            .map(|_| {
                std::net::IpAddr::from([
                    net[0].max(1),
                    net[1],
                    net[2],
                    u8::try_from(r.below(250) + 2).unwrap_or(2),
                ])
            })
            .collect();
        let targets = if cdn {
            vec![format!("{qname}.cdn.cloudflare.net")]
        } else {
            Vec::new()
        };
        out.push(Exchange {
            qname: qname.clone(),
            qtype: 1,
            nxdomain: false,
            answers: u16::try_from(v4.len() + targets.len()).unwrap_or(1),
            bytes: 16 * v4.len() + targets.iter().map(|t| t.len() + 14).sum::<usize>(),
            tag: r.next_u64(),
            addresses: v4,
            cname_targets: targets,
            payload: 0,
        });
        let prefix = u128::from(u64::from_le_bytes(net)) | 0x2001_0000_0000_0000;
        let v6: Vec<std::net::IpAddr> = (0..n)
            .map(|_| {
                std::net::IpAddr::from(
                    (prefix << 64 | u128::from(r.below(0x200) + 1)).to_be_bytes(),
                )
            })
            .collect();
        out.push(Exchange {
            qname: qname.clone(),
            qtype: 28,
            nxdomain: false,
            answers: u16::try_from(v6.len()).unwrap_or(1),
            bytes: 28 * v6.len(),
            tag: r.next_u64(),
            addresses: v6,
            cname_targets: Vec::new(),
            payload: 0,
        });
        let (answers, bytes, tag) = if https {
            (
                1,
                90 + usize::try_from(r.below(130)).unwrap_or(0),
                r.next_u64(),
            )
        } else {
            (0, 80 + domain.len() * 2, soa_tag)
        };
        out.push(Exchange {
            qname,
            qtype: 65,
            nxdomain: false,
            answers,
            bytes,
            tag,
            addresses: Vec::new(),
            cname_targets: Vec::new(),
            payload: 0,
        });
    }
    out
}

/// A mail check's first two answers for `domain`: its apex TXT (an SPF record of 60–450 bytes
/// among verification tokens; one domain in `big_one_in` a 1.5–4 KB set) and `_dmarc` TXT
/// (80–200 bytes).
fn spf_and_dmarc(domain: &str, big_one_in: u64, r: &mut Prng) -> Vec<Exchange> {
    let below = |n: u64, r: &mut Prng| usize::try_from(r.below(n)).unwrap_or(0);
    let apex = if r.below(big_one_in) == 0 {
        1500 + below(2500, r)
    } else {
        60 + below(390, r)
    };
    vec![
        txt(domain.to_string(), apex, r),
        txt(format!("_dmarc.{domain}"), 80 + below(120, r), r),
    ]
}

/// One TXT answer of `bytes` bytes for `qname` (a mail check's or a crawler's record).
fn txt(qname: String, bytes: usize, r: &mut Prng) -> Exchange {
    Exchange {
        qname,
        qtype: 16,
        nxdomain: false,
        answers: 1,
        bytes,
        tag: r.next_u64(),
        addresses: Vec::new(),
        cname_targets: Vec::new(),
        payload: 0,
    }
}

/// What a mail host (or an agent auditing mail set-ups) is answered checking one domain's mail
/// authentication: its apex TXT (an SPF record of 60–450 bytes among verification tokens; one
/// domain in ten a big 1.5–4 KB set), `_dmarc` TXT (80–200 bytes), a DKIM key at
/// `selector1._domainkey` (400–460 bytes; NXDOMAIN with the zone's SOA for three in ten) and
/// MX (60–120 bytes).
#[must_use]
pub fn mail_auth_check(domain: &str, r: &mut Prng) -> Vec<Exchange> {
    let below = |n: u64, r: &mut Prng| usize::try_from(r.below(n)).unwrap_or(0);
    let mut out = spf_and_dmarc(domain, 10, r);
    let dkim = format!("selector1._domainkey.{domain}");
    if r.below(10) < 3 {
        out.push(Exchange {
            nxdomain: true,
            answers: 0,
            bytes: 80 + 2 * domain.len(),
            ..txt(dkim, 0, r)
        });
    } else {
        out.push(txt(dkim, 400 + below(60, r), r));
    }
    out.push(Exchange {
        qtype: 15,
        ..txt(domain.to_string(), 60 + below(60, r), r)
    });
    out
}

/// What a crawler (or an agent auditing sites' set-ups) is answered reading one site's
/// modern records: HTTPS at the apex and at `www` with an ECH config, alpn and address hints
/// (300–500 bytes each, as a CDN-fronted site's), `_mta-sts` TXT (`v=STSv1; id=…`, 40–70
/// bytes; NXDOMAIN with the zone's SOA for three sites in four) and `_dmarc` TXT (80–200
/// bytes). Every answer is the site's own: nothing in it is shared with another site.
#[must_use]
pub fn ech_crawl_site(domain: &str, r: &mut Prng) -> Vec<Exchange> {
    let below = |n: u64, r: &mut Prng| usize::try_from(r.below(n)).unwrap_or(0);
    let record = |qname: String, qtype: u16, bytes: usize, r: &mut Prng| Exchange {
        qname,
        qtype,
        nxdomain: false,
        answers: 1,
        bytes,
        tag: r.next_u64(),
        addresses: Vec::new(),
        cname_targets: Vec::new(),
        payload: 0,
    };
    let mut out = vec![
        record(domain.to_string(), 65, 300 + below(200, r), r),
        record(format!("www.{domain}"), 65, 300 + below(200, r), r),
    ];
    let mta_sts = format!("_mta-sts.{domain}");
    if r.below(4) == 0 {
        out.push(record(mta_sts, 16, 40 + below(30, r), r));
    } else {
        out.push(Exchange {
            nxdomain: true,
            answers: 0,
            bytes: 80 + 2 * domain.len(),
            ..record(mta_sts, 16, 0, r)
        });
    }
    out.push(record(
        format!("_dmarc.{domain}"),
        16,
        80 + below(120, r),
        r,
    ));
    out
}

/// What a mail server is answered checking one inbound message's sender domain: its apex TXT
/// (an SPF record of 60–450 bytes among verification tokens; one domain in twenty a 1.5–4 KB
/// set), `_dmarc` TXT (80–200 bytes) and the DKIM key of the message's selector (a 2048-bit
/// key, 400–460 bytes, under one of a few common selectors; NXDOMAIN with the zone's SOA for
/// one in five).
#[must_use]
pub fn inbound_sender_check(domain: &str, r: &mut Prng) -> Vec<Exchange> {
    const SELECTORS: [&str; 6] = ["selector1", "google", "k1", "s1", "default", "mail"];
    let below = |n: u64, r: &mut Prng| usize::try_from(r.below(n)).unwrap_or(0);
    let mut out = spf_and_dmarc(domain, 20, r);
    let selector = SELECTORS[below(SELECTORS.len() as u64, r)];
    let dkim = format!("{selector}._domainkey.{domain}");
    if r.below(5) == 0 {
        out.push(Exchange {
            nxdomain: true,
            answers: 0,
            bytes: 80 + 2 * domain.len(),
            ..txt(dkim, 0, r)
        });
    } else {
        out.push(txt(dkim, 400 + below(60, r), r));
    }
    out
}

/// One query from one client of a benign replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenignQuery {
    /// Seconds since the start of the replay.
    pub at: u64,
    /// Client index, 0-based.
    pub client: u32,
    /// The benign class, for reports.
    pub class: &'static str,
    /// Query name.
    pub qname: String,
    /// Query type code.
    pub qtype: u16,
}

/// Zipf-like pick from `0..n`: small indices are popular, as with real content.
fn zipf(r: &mut Prng, n: u64) -> u64 {
    // The square of a uniform number in 0..1 leans towards 0; cubing leans harder.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let x = {
        let u = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (u * u * u * n as f64) as u64
    };
    x.min(n.saturating_sub(1))
}

/// A reversed IPv4 address; senders come from a pool with repeats (the same relays write
/// again), a third of them new.
fn reversed_ip(r: &mut Prng) -> String {
    let ip = if r.below(3) == 0 {
        r.next_u64()
    } else {
        zipf(r, 3000).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    let b = ip.to_le_bytes();
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

/// The benign classes of [`benign_fleet`], with what each client does.
pub const BENIGN_CLASSES: [&str; 9] = [
    "content-cache",
    "dnsbl",
    "av-reputation",
    "telemetry",
    "cloud-api",
    "acme",
    "dkim-spf",
    "service-discovery",
    "reverse-dns",
];

/// Benign traffic with random-looking names from `clients` clients over `hours` hours, in time
/// order. Rates are per client and deliberately busy:
/// - `content-cache`: every client, one fetch per 20 s of `<base32 origin hash>.c.content-cache-example.net`,
///   origins Zipf-popular over 5,000 (the class that gave false alerts before);
/// - `dnsbl`: every fourth client is a mail filter: one message per 10 s, each checked against
///   `zen.spamhaus.org` and `b.barracudacentral.org` by reversed IP, plus its DKIM/SPF TXT;
/// - `av-reputation`: every client, one lookup per 60 s: `<40 hex>.<v>.sophosxl.net`,
///   `<32 hex>.avqs.mcafee.com`, mostly popular files;
/// - `telemetry`: every client, one event per 2 min `<uuid hex>.events.telemetry-example.com`;
/// - `cloud-api`: every client, per 30 s a call to one of its jobs' hosts
///   `job-<20 alnum>.<region>.api.cloud-example.com` (a new job every 10 min);
/// - `acme`: every client, `_acme-challenge.<host>` TXT a few times an hour;
/// - `service-discovery`: every client, `_<svc>._tcp.<domain>` SRV every 30 s;
/// - `reverse-dns`: every client, PTR of a peer in 10.0.0.0/16 every 30 s.
#[must_use]
pub fn benign_fleet(clients: u32, hours: u64, seed: u64) -> Vec<BenignQuery> {
    let mut r = Prng::new(seed);
    let mut out = Vec::new();
    let end = hours * 3600;
    let regions = ["us-east-1", "eu-west-1", "ap-south-1"];
    let services = [
        "_ldap",
        "_kerberos",
        "_sip",
        "_xmpp-client",
        "_imaps",
        "_etcd-server",
    ];
    for client in 0..clients {
        // Each client's own jobs, hosts and start offset.
        let offset = r.below(20);
        let mut job = format!("job-{}", &base36(&r.bytes(16))[..20]);
        let mut t = offset;
        while t < end {
            let push = |out: &mut Vec<BenignQuery>, at: u64, class, qname: String, qtype| {
                out.push(BenignQuery {
                    at,
                    client,
                    class,
                    qname,
                    qtype,
                });
            };
            // Every 10 s tick of this client's own clock, decide what happens this tick.
            let k = t - offset;
            if k.is_multiple_of(20) {
                // A real digest of the origin: no two origins' hashes share a prefix or a
                // suffix beyond chance (the information floor would rightly discount one).
                let origin = zipf(&mut r, 5000);
                let hash = encode(&Prng::new(origin + 1).bytes(20), B32);
                push(
                    &mut out,
                    t,
                    "content-cache",
                    format!("{}.c.content-cache-example.net", &hash[..32]),
                    1,
                );
            }
            if client % 4 == 0 {
                let ip = reversed_ip(&mut r);
                push(&mut out, t, "dnsbl", format!("{ip}.zen.spamhaus.org"), 1);
                push(
                    &mut out,
                    t,
                    "dnsbl",
                    format!("{ip}.b.barracudacentral.org"),
                    1,
                );
                let sender = zipf(&mut r, 400);
                let selector = ["s1", "google", "selector1", "k1", "default"]
                    [usize::try_from(sender % 5).unwrap_or(0)];
                push(
                    &mut out,
                    t,
                    "dkim-spf",
                    format!("{selector}._domainkey.sender{sender}.example"),
                    16,
                );
                push(
                    &mut out,
                    t,
                    "dkim-spf",
                    format!("sender{sender}.example"),
                    16,
                );
            }
            if k.is_multiple_of(60) {
                let file = zipf(&mut r, 20_000)
                    .wrapping_mul(0x2545_f491_4f6c_dd1d)
                    .to_le_bytes();
                let hex = encode(&[file.as_slice(), &file, &file].concat(), HEX);
                if r.below(2) == 0 {
                    push(
                        &mut out,
                        t,
                        "av-reputation",
                        format!("{}.4.sophosxl.net", &hex[..40]),
                        1,
                    );
                } else {
                    push(
                        &mut out,
                        t,
                        "av-reputation",
                        format!("{}.avqs.mcafee.com", &hex[..32]),
                        1,
                    );
                }
            }
            if k.is_multiple_of(120) {
                let id = encode(&r.bytes(16), HEX);
                push(
                    &mut out,
                    t,
                    "telemetry",
                    format!("{id}.events.telemetry-example.com"),
                    1,
                );
            }
            if k.is_multiple_of(600) {
                job = format!("job-{}", &base36(&r.bytes(16))[..20]);
            }
            if k.is_multiple_of(30) {
                let region = regions[usize::try_from(r.below(3)).unwrap_or(0)];
                push(
                    &mut out,
                    t,
                    "cloud-api",
                    format!("{job}.{region}.api.cloud-example.com"),
                    1,
                );
                let svc = services[usize::try_from(r.below(6)).unwrap_or(0)];
                push(
                    &mut out,
                    t,
                    "service-discovery",
                    format!("{svc}._tcp.corp-example.com"),
                    33,
                );
                let peer = r.below(1 << 16).to_le_bytes();
                push(
                    &mut out,
                    t,
                    "reverse-dns",
                    format!("{}.{}.0.10.in-addr.arpa", peer[0], peer[1]),
                    12,
                );
            }
            if k.is_multiple_of(1200) {
                let host = ["www", "api", "mail", "git"][usize::try_from(r.below(4)).unwrap_or(0)];
                push(
                    &mut out,
                    t,
                    "acme",
                    format!("_acme-challenge.{host}.corp-example.com"),
                    16,
                );
            }
            t += 10;
        }
    }
    out.sort_by_key(|q| (q.at, q.client));
    out
}

/// One client walking through `count` sequentially numbered names of one domain, `interval`
/// apart, in the given shape (`{}` is the number): `host{}` (`host1 … host500`), `img-{:03}`
/// style via [`SequentialShape`]. The low-information enumeration the information floor
/// ([`super::floor`]) is for.
#[must_use]
pub fn sequential_names(shape: SequentialShape, domain: &str, count: usize) -> Vec<String> {
    (1..=count)
        .map(|i| {
            let sub = match shape {
                SequentialShape::Host => format!("host{i}"),
                SequentialShape::CdnImage => format!("img-{i:03}.cdn"),
                SequentialShape::RegionEndpoint => {
                    let region = ["eu-west-1", "us-east-2", "ap-south-1", "sa-east-1"][i % 4];
                    format!("api-v2-{region}-{}", i / 4)
                }
            };
            format!("{sub}.{domain}")
        })
        .collect()
}

/// Shapes of [`sequential_names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequentialShape {
    /// `host1`, `host2`, ...
    Host,
    /// `img-001.cdn`, `img-002.cdn`, ...
    CdnImage,
    /// `api-v2-eu-west-1-0`, `api-v2-us-east-2-0`, ... (four regions in turn, then the next
    /// instance number).
    RegionEndpoint,
}

/// The benign classes of [`enumerating_fleet`].
pub const ENUMERATING_CLASSES: [&str; 3] = ["shard-crawler", "sharded-api", "region-endpoints"];

/// Benign clients that enumerate numbered names, from `clients` clients over `hours` hours:
/// - `shard-crawler`: every hour each client crawls 300 numbered shards of a site,
///   `page-0001.b<client>.crawl-example.org` … `page-0300`, 10 a second, with an index page
///   `www.crawl-example.org` after every 20th;
/// - `sharded-api`: every 10 s a call to the shard owning a random key,
///   `shard-<0000..0255>.api.shardstore-example.com` (random order: the shard number is fresh
///   information, a byte a call);
/// - `region-endpoints`: every 30 s one of 4 regions × 8 instances
///   `api-v2-<region>-<n>.svc.cloud-example.net`.
#[must_use]
pub fn enumerating_fleet(clients: u32, hours: u64, seed: u64) -> Vec<BenignQuery> {
    let mut r = Prng::new(seed);
    let mut out = Vec::new();
    let end = hours * 3600;
    let regions = ["eu-west-1", "us-east-2", "ap-south-1", "sa-east-1"];
    for client in 0..clients {
        let offset = r.below(60);
        let mut push = |at: u64, class, qname: String| {
            out.push(BenignQuery {
                at,
                client,
                class,
                qname,
                qtype: 1,
            });
        };
        let mut crawl = offset;
        while crawl < end {
            for page in 1..=300u64 {
                let at = crawl + page / 10;
                push(
                    at,
                    "shard-crawler",
                    format!("page-{page:04}.b{client}.crawl-example.org"),
                );
                if page % 20 == 0 {
                    push(at, "shard-crawler", "www.crawl-example.org".to_string());
                }
            }
            crawl += 3600;
        }
        let mut t = offset;
        while t < end {
            push(
                t,
                "sharded-api",
                format!("shard-{:04}.api.shardstore-example.com", r.below(256)),
            );
            if (t - offset).is_multiple_of(30) {
                let region = regions[usize::try_from(r.below(4)).unwrap_or(0)];
                push(
                    t,
                    "region-endpoints",
                    format!("api-v2-{region}-{}.svc.cloud-example.net", r.below(8)),
                );
            }
            t += 10;
        }
    }
    out.sort_by_key(|q| (q.at, q.client));
    out
}

/// Shapes of [`structured_burst`]: one agent fanning out over many hosts of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstShape {
    /// Every shard of a database by key: `shard-<000..>.db.<domain>`.
    Shards,
    /// Nodes of a cluster, a letter and two digits: `node-<a..y><00..19>.cluster.<domain>`.
    Nodes,
    /// A crawler's pages: `page-<n>.docs.<domain>`.
    Pages,
    /// Kubernetes-style service discovery, 20 service names × namespaces:
    /// `<service>.<namespace>.svc.<domain>`.
    Services,
    /// Numbered services in numbered namespaces: `svc-<n>.ns-<m>.svc.<domain>`.
    NumberedServices,
    /// A mail host checking a provider's hosts: `mx<0..2>.tenant<n>.mail.<domain>`, MX then A.
    MailHosts,
    /// A CDN's asset hosts per region: `assets<n>-<region>.cdn.<domain>`.
    CdnAssets,
    /// Cloud hosts named by their private address: `ip-10-0-<n>-<m>.compute.<domain>`.
    AddressHosts,
    /// Servers by node, rack and data centre: `n<0..9>.r<0..9>.dc<n>.<domain>`.
    Racks,
}

impl BurstShape {
    /// Every shape, for tests that try them all.
    pub const ALL: [Self; 9] = [
        Self::Shards,
        Self::Nodes,
        Self::Pages,
        Self::Services,
        Self::NumberedServices,
        Self::MailHosts,
        Self::CdnAssets,
        Self::AddressHosts,
        Self::Racks,
    ];

    /// The `i`-th distinct subdomain part of this shape.
    #[must_use]
    pub fn name(self, i: usize) -> String {
        const SERVICES: [&str; 20] = [
            "orders",
            "payments",
            "users",
            "auth",
            "catalog",
            "search",
            "cart",
            "checkout",
            "inventory",
            "shipping",
            "billing",
            "email",
            "notify",
            "reports",
            "metrics",
            "gateway",
            "frontend",
            "backend",
            "cache",
            "queue",
        ];
        const NAMESPACES: [&str; 25] = [
            "prod", "staging", "dev", "shop", "infra", "data", "ml", "web", "api", "ops",
            "payments", "identity", "search", "media", "mobile", "partner", "audit", "edge",
            "batch", "stream", "legacy", "sandbox", "qa", "perf", "tools",
        ];
        const REGIONS: [&str; 8] = ["eu", "us", "ap", "sa", "af", "me", "ca", "au"];
        match self {
            Self::Shards => format!("shard-{i:03}.db"),
            Self::Nodes => format!(
                "node-{}{:02}.cluster",
                char::from(b'a' + u8::try_from(i / 20 % 26).unwrap_or(0)),
                i % 20
            ),
            Self::Pages => format!("page-{}.docs", i + 1),
            Self::Services => format!("{}.{}.svc", SERVICES[i % 20], NAMESPACES[i / 20 % 25]),
            Self::NumberedServices => format!("svc-{}.ns-{}.svc", i % 30, i / 30),
            Self::MailHosts => format!("mx{}.tenant{}.mail", i % 3, i / 3),
            Self::CdnAssets => format!("assets{}-{}.cdn", i % 64, REGIONS[i / 64 % 8]),
            Self::AddressHosts => format!("ip-10-0-{}-{}.compute", i / 200, i % 200 + 4),
            Self::Racks => format!("n{}.r{}.dc{}", i % 10, i / 10 % 10, i / 100),
        }
    }
}

/// One agent resolving `count` distinct names of `shape` under `domain` within `millis`
/// milliseconds (`at` in milliseconds), in a scrambled order (a fan-out's parallel lookups, or
/// keys that pick shards at random), each name asked for A and AAAA (MX and A for
/// [`BurstShape::MailHosts`]). Few bits a name: a pattern and small fields.
#[must_use]
pub fn structured_burst(
    shape: BurstShape,
    domain: &str,
    count: usize,
    millis: u64,
    seed: u64,
) -> Vec<BenignQuery> {
    let mut r = Prng::new(seed);
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..order.len()).rev() {
        let j = usize::try_from(r.below(u64::try_from(i + 1).unwrap_or(1))).unwrap_or(0);
        order.swap(i, j);
    }
    let types: [u16; 2] = if shape == BurstShape::MailHosts {
        [15, 1]
    } else {
        [1, 28]
    };
    let step = millis / u64::try_from(count.max(1)).unwrap_or(1);
    order
        .into_iter()
        .enumerate()
        .flat_map(|(k, i)| {
            let qname = format!("{}.{domain}", shape.name(i));
            let at = u64::try_from(k).unwrap_or(0) * step;
            types.map(|qtype| BenignQuery {
                at,
                client: 0,
                class: "structured-burst",
                qname: qname.clone(),
                qtype,
            })
        })
        .collect()
}

/// A tunnel that writes its data in the order it first asks the names of small templates
/// ([`super::template`]): a random permutation of `n<0..1023>-<label>` (about 8.6 bits a name
/// in the order), then the next template (`<label>` changes), 20 queries a second, 16 KB in
/// all. One payload byte is credited per query.
#[must_use]
pub fn template_order_exploit(domain: &str, seed: u64) -> Traffic {
    let mut r = Prng::new(seed);
    let mut queries = Vec::new();
    let mut template = 0u32;
    while queries.len() < 16 * 1024 {
        let mut order: Vec<u32> = (0..1024).collect();
        for i in (1..order.len()).rev() {
            let j = usize::try_from(r.below(u64::try_from(i + 1).unwrap_or(1))).unwrap_or(0);
            order.swap(i, j);
        }
        let label = syllables(&template.to_le_bytes()[..2]);
        queries.extend(order.into_iter().map(|v| TunnelQuery {
            qname: format!("n{v}-{label}.{domain}"),
            qtype: 1,
            payload: 1,
        }));
        template += 1;
    }
    Traffic {
        tool: "payload in the order of a template's names",
        queries,
        interval: Duration::from_millis(50),
    }
}

/// Tunnels built to exploit the information floor ([`super::floor`]), 16 KB each at 20
/// queries a second under `domain`:
/// - `<seq>-<payload>` after a long shared prefix: `sync-4f1c-00042-<syllables>`, 6 bytes a
///   query in word-like syllables;
/// - payload in alternating names: two stems (`eu-cache-`, `us-cache-`) in turn, 3 bytes of
///   hex each, so every name shares its stem with the one before last;
/// - payload in a counter's steps: `host<n>` where n grows by 1 + one payload byte.
#[must_use]
pub fn floor_exploits(domain: &str, seed: u64) -> Vec<Traffic> {
    let mut r = Prng::new(seed);
    let total = 16 * 1024;
    let seq_prefix = (0..total / 6)
        .map(|i| TunnelQuery {
            qname: format!("sync-4f1c-{i:05}-{}.{domain}", syllables(&r.bytes(6))),
            qtype: 1,
            payload: 6,
        })
        .collect();
    let alternating = (0..total / 3)
        .map(|i| TunnelQuery {
            qname: format!(
                "{}-cache-{}.{domain}",
                if i % 2 == 0 { "eu" } else { "us" },
                encode(&r.bytes(3), HEX)
            ),
            qtype: 1,
            payload: 3,
        })
        .collect();
    let mut n = 1000u64;
    let steps = (0..total)
        .map(|_| {
            n += 1 + u64::from(r.bytes(1)[0]);
            TunnelQuery {
                qname: format!("host{n}.{domain}"),
                qtype: 1,
                payload: 1,
            }
        })
        .collect();
    let interval = Duration::from_millis(50);
    vec![
        Traffic {
            tool: "<seq>-<payload> after a shared prefix",
            queries: seq_prefix,
            interval,
        },
        Traffic {
            tool: "payload in alternating names",
            queries: alternating,
            interval,
        },
        Traffic {
            tool: "payload in a counter's steps",
            queries: steps,
            interval,
        },
    ]
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
        assert_eq!(syllables(&[0x00, 0xff]), "bagoza");
        assert_eq!(base36(&[1]).len(), 13);
        assert_eq!(dictionary_words(&[0, 0, 0]), "apple-apple-apple.apple");
        for e in Encoding::ALL {
            let t = exfil(
                e,
                &["a.example", "b.example"],
                300,
                0,
                Duration::from_millis(50),
                1,
            );
            assert!(
                t.queries.iter().all(|q| q.qname.len() <= 253
                    && q.qname.split('.').all(|l| !l.is_empty() && l.len() <= 63)),
                "{}",
                e.name()
            );
            assert_eq!(
                t.queries.iter().map(|q| q.payload).sum::<usize>(),
                300usize.div_ceil(e.chunk()) * e.chunk()
            );
        }
        let b = benign_fleet(8, 1, 3);
        assert!(b.windows(2).all(|w| w[0].at <= w[1].at));
        for class in BENIGN_CLASSES {
            assert!(b.iter().any(|q| q.class == class), "{class}");
        }
    }
}
