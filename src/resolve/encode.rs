//! Encoding a prepared answer: hickory's `Message::to_vec` without most of its allocations.
//!
//! Every upstream answer is decoded, scrubbed and encoded again before it is cached
//! ([`crate::resolve::cache`]). hickory's encoder keeps a copy of every name suffix it writes
//! for compression (a `Vec` a label) and a `Vec` of label offsets a name, and grows its output
//! from nothing: about a dozen allocations and 7,800 instructions of a cache miss's ~65,000
//! (`bench/hotpath count w3`, callgrind). This writer compresses the same names the same way
//! (owner names, and the names in the RDATA of the RFC 1035 types that carry them: CNAME, NS,
//! PTR, MX, SOA) against earlier names by comparing the bytes already written, and hands any
//! other record's data to hickory with compression off (RFC 3597 §4: names in the data of later
//! types are never compressed; hickory does the same, though it also lets a later name point
//! into such data, which this writer does not, so a rare answer is a few bytes longer). The
//! search is bounded for an upstream's hostile names: candidates are compared only when their
//! lengths match, at most 120 names are compressed and at most [`COMPARE_BUDGET`] labels read
//! in comparisons a message. A message it cannot write (over 65,535 bytes, a name over 255) is `None`,
//! and the caller falls back on hickory.

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use smallvec::SmallVec;

/// Most candidates kept (hickory keeps up to 64 too): enough for every name of an ordinary
/// answer, and a bound on the search for a large one.
const MAX_CANDIDATES: usize = 64;

/// Names compressed at most in one message (hickory's limit too); later names are written in
/// full.
const MAX_COMPRESSED_NAMES: u32 = 120;

/// Labels one message may read looking for pointers. An upstream's answer is untrusted: names
/// built to share lengths with every candidate must not make one answer cost milliseconds
/// (this is ~100 µs). An ordinary answer reads a few dozen; past the budget names are written
/// in full (the message is still valid, only longer).
const COMPARE_BUDGET: u32 = 100_000;

/// The compression state of one message: where names (or what is left of one after its first
/// labels) were written out in full, each with its uncompressed length, for later names to
/// point at; and what is left of the limits.
struct Candidates {
    at: SmallVec<[(u16, u8); MAX_CANDIDATES]>,
    compressed: u32,
    /// Labels still to be read in comparisons ([`COMPARE_BUDGET`] to start with).
    steps: u32,
}

impl Default for Candidates {
    fn default() -> Self {
        Self {
            at: SmallVec::new(),
            compressed: 0,
            steps: COMPARE_BUDGET,
        }
    }
}

/// `m` encoded as hickory's `to_vec` would, with compression, its counts from its sections;
/// `None` when it cannot be (the caller then asks hickory, which says why).
#[must_use]
pub fn encode(m: &Message) -> Option<Vec<u8>> {
    if m.edns.is_some() || m.signature.is_some() || m.metadata.response_code.high() > 0 {
        return None;
    }
    let mut out = Vec::with_capacity(512);
    let md = &m.metadata;
    out.extend_from_slice(&md.id.to_be_bytes());
    let qr = u8::from(md.message_type == MessageType::Response);
    out.push(
        qr << 7
            | (u8::from(md.op_code) & 0x0F) << 3
            | u8::from(md.authoritative) << 2
            | u8::from(md.truncation) << 1
            | u8::from(md.recursion_desired),
    );
    out.push(
        u8::from(md.recursion_available) << 7
            | u8::from(md.authentic_data) << 5
            | u8::from(md.checking_disabled) << 4
            | md.response_code.low(),
    );
    for n in [
        m.queries.len(),
        m.answers.len(),
        m.authorities.len(),
        m.additionals.len(),
    ] {
        out.extend_from_slice(&u16::try_from(n).ok()?.to_be_bytes());
    }
    let mut seen = Candidates::default();
    for q in &m.queries {
        write_name(&mut out, &q.name, &mut seen)?;
        out.extend_from_slice(&u16::from(q.query_type).to_be_bytes());
        out.extend_from_slice(&u16::from(q.query_class).to_be_bytes());
    }
    for r in m.answers.iter().chain(&m.authorities).chain(&m.additionals) {
        write_record(&mut out, r, &mut seen)?;
        // Past the largest message there is no point going on (hickory says why).
        if out.len() > usize::from(u16::MAX) {
            return None;
        }
    }
    (out.len() <= usize::from(u16::MAX)).then_some(out)
}

fn write_record(out: &mut Vec<u8>, r: &Record, seen: &mut Candidates) -> Option<()> {
    write_name(out, &r.name, seen)?;
    out.extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(r.dns_class).to_be_bytes());
    out.extend_from_slice(&r.ttl.to_be_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    match &r.data {
        RData::A(a) => out.extend_from_slice(&a.0.octets()),
        RData::AAAA(a) => out.extend_from_slice(&a.0.octets()),
        RData::CNAME(c) => write_name(out, &c.0, seen)?,
        RData::NS(n) => write_name(out, &n.0, seen)?,
        RData::PTR(p) => write_name(out, &p.0, seen)?,
        RData::MX(mx) => {
            out.extend_from_slice(&mx.preference.to_be_bytes());
            write_name(out, &mx.exchange, seen)?;
        }
        RData::SOA(soa) => {
            write_name(out, &soa.mname, seen)?;
            write_name(out, &soa.rname, seen)?;
            out.extend_from_slice(&soa.serial.to_be_bytes());
            out.extend_from_slice(&soa.refresh.to_be_bytes());
            out.extend_from_slice(&soa.retry.to_be_bytes());
            out.extend_from_slice(&soa.expire.to_be_bytes());
            out.extend_from_slice(&soa.minimum.to_be_bytes());
        }
        // An update's empty data (RDLENGTH 0), as hickory writes it.
        RData::Update0(_) => {}
        other => {
            let mut data = Vec::new();
            let mut encoder = BinEncoder::new(&mut data);
            encoder.set_name_encoding(NameEncoding::Uncompressed);
            other.emit(&mut encoder).ok()?;
            out.extend_from_slice(&data);
        }
    }
    let len = u16::try_from(out.len() - len_at - 2).ok()?;
    out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    Some(())
}

/// Write `name`, its longest suffix already in the message as a pointer; what it writes in
/// full becomes a candidate for later names.
fn write_name(out: &mut Vec<u8>, name: &Name, seen: &mut Candidates) -> Option<()> {
    let labels: SmallVec<[&[u8]; 16]> = name.iter().collect();
    write_labels(out, &labels, seen)
}

/// [`write_name`] for a name given as its labels (root not included).
fn write_labels(out: &mut Vec<u8>, labels: &[&[u8]], seen: &mut Candidates) -> Option<()> {
    // The uncompressed length of the whole name, root byte included.
    let mut total = 1usize;
    for label in labels {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        total += 1 + label.len();
    }
    if total > 255 {
        return None;
    }
    if seen.compressed >= MAX_COMPRESSED_NAMES {
        push_labels(out, labels, total, None);
        out.push(0);
        return Some(());
    }
    seen.compressed += 1;
    // `len`: the uncompressed length of the suffix from label `i`.
    let mut len = total;
    for i in 0..labels.len() {
        let suffix = &labels[i..];
        let mut found = None;
        for &(at, at_len) in &seen.at {
            if usize::from(at_len) != len {
                continue;
            }
            if seen.steps == 0 {
                break;
            }
            if same_name_at(out, usize::from(at), suffix, &mut seen.steps) {
                found = Some(at);
                break;
            }
        }
        if let Some(at) = found {
            push_labels(out, &labels[..i], total, Some(seen));
            out.extend_from_slice(&(0xC000 | at).to_be_bytes());
            return Some(());
        }
        len -= 1 + labels[i].len();
    }
    push_labels(out, labels, total, Some(seen));
    out.push(0);
    Some(())
}

/// Write `labels` (the first of a name `total` bytes long uncompressed) in full; with `seen`,
/// each one's offset (with the length of the name from there) becomes a candidate while offsets
/// fit a pointer.
fn push_labels(
    out: &mut Vec<u8>,
    labels: &[&[u8]],
    total: usize,
    mut seen: Option<&mut Candidates>,
) {
    let mut len = total;
    for label in labels {
        if let Some(seen) = seen.as_deref_mut()
            && let Ok(at) = u16::try_from(out.len())
            && at < 0x3FFF
            && seen.at.len() < MAX_CANDIDATES
        {
            // `total` ≤ 255, so every suffix length fits.
            seen.at.push((at, u8::try_from(len).unwrap_or(u8::MAX)));
        }
        len -= 1 + label.len();
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
}

/// Whether the name written at `at` (pointers followed) is exactly `labels` (bytes compared as
/// they are, as hickory compares them).
/// Each label or pointer read costs one of `steps`; with none left the answer is no.
fn same_name_at(msg: &[u8], mut at: usize, labels: &[&[u8]], steps: &mut u32) -> bool {
    let mut next = labels.iter();
    // A candidate is always earlier than what points at it: a bounded walk.
    for _ in 0..256 {
        if *steps == 0 {
            return false;
        }
        *steps -= 1;
        let Some(&len) = msg.get(at) else {
            return false;
        };
        match len & 0xC0 {
            0x00 if len == 0 => return next.next().is_none(),
            0x00 => {
                let Some(label) = next.next() else {
                    return false;
                };
                if msg.get(at + 1..at + 1 + usize::from(len)) != Some(label) {
                    return false;
                }
                at += 1 + usize::from(len);
            }
            0xC0 => {
                let Some(&lo) = msg.get(at + 1) else {
                    return false;
                };
                at = usize::from(u16::from_be_bytes([len & 0x3F, lo]));
            }
            _ => return false,
        }
    }
    false
}

/// A negative answer re-written straight from the upstream's bytes ([`negative_from_wire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegativeWire {
    /// The message as the decode, scrub and encode path writes it, the SOA's TTL still 0.
    pub bytes: Vec<u8>,
    /// Where the SOA's TTL is in `bytes`.
    pub ttl_at: usize,
    /// The SOA record's TTL as received, 0 when its top bit was set (RFC 2181 §8).
    pub ttl: u32,
    /// The SOA's MINIMUM field.
    pub minimum: u32,
    /// The rcode: NOERROR (NODATA) or NXDOMAIN.
    pub rcode: u8,
}

/// The most common upstream answer after an address, a negative one (NXDOMAIN, or NODATA: no
/// answer records and the zone's SOA in authority), re-written without decoding it into
/// hickory's types and encoding it again: what [`crate::resolve::cache::AnswerCache::prepare_for`]
/// would make of it by that path, byte for byte (EDNS and AA dropped, RA set, AD cleared, the
/// question and the SOA's names in lower case and compressed as [`encode`] does), for about
/// half of the instructions (`bench/hotpath count w3`: 5,600 fewer a miss).
///
/// Only a message that is exactly that shape, and that hickory would decode, is taken: one
/// question of class IN, no answers, one SOA of class IN owned by the question's name or an
/// ancestor, and at most an OPT record at the root with no extended rcode, version 0 and
/// well-formed options of kinds hickory reads without checking; names read under hickory's
/// rules (pointers only to earlier names, never through a longer one, at most 250 bytes);
/// nothing after. Anything else is `None`, and the caller takes the general path, which the
/// tests and the fuzz target compare this with.
#[must_use]
pub fn negative_from_wire(msg: &[u8]) -> Option<NegativeWire> {
    const QR: u8 = 0x80;
    const TC: u8 = 0x02;
    const RD: u8 = 0x01;
    const CD: u8 = 0x10;
    let header = msg.get(..12)?;
    let (f1, f2) = (header[2], header[3]);
    let rcode = f2 & 0x0F;
    // A response, opcode QUERY, not truncated, NOERROR or NXDOMAIN (Z and AD are dropped).
    if f1 & QR == 0 || f1 & 0x78 != 0 || f1 & TC != 0 || (rcode != 0 && rcode != 3) {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 1 || count(10) > 1 {
        return None;
    }
    let u16_at = |at: usize| {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        msg.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut names = WireNames::new();
    let (qname, at) = names.read(msg, 12)?;
    let (qtype, qclass) = (u16_at(at)?, u16_at(at + 2)?);
    if qclass != 1 {
        return None;
    }
    let (owner, at) = names.read(msg, at + 4)?;
    if u16_at(at)? != 6 || u16_at(at + 2)? != 1 {
        return None;
    }
    let ttl = u32_at(at + 4)?;
    let rdata = at + 10;
    let rdlen = usize::from(u16_at(at + 8)?);
    let (mname, at) = names.read(msg, rdata)?;
    let (rname, at) = names.read(msg, at)?;
    let (qname, owner) = (names.labels(qname), names.labels(owner));
    if !is_zone_of(&owner, &qname) {
        return None;
    }
    let fields = msg.get(at..at + 20)?;
    if at + 20 != rdata + rdlen {
        return None;
    }
    let mut at = at + 20;
    if count(10) == 1 {
        // OPT: owner the root, then type, payload size, extended rcode and version (both 0:
        // hickory folds a high rcode into the message's), flags, options.
        if msg.get(at) != Some(&0) || u16_at(at + 1)? != 41 || msg.get(at + 5..at + 7)? != [0, 0] {
            return None;
        }
        let len = usize::from(u16_at(at + 9)?);
        let end = at + 11 + len;
        let mut o = at + 11;
        while o < end {
            let (code, olen) = (u16_at(o)?, usize::from(u16_at(o + 2)?));
            // NSID, DAU and client subnet are read by hickory, which may refuse them.
            if matches!(code, 3 | 5 | 8) {
                return None;
            }
            o += 4 + olen;
        }
        if o != end {
            return None;
        }
        at = end;
    }
    if at != msg.len() {
        return None;
    }
    let mut out = Vec::with_capacity(msg.len() + 8);
    out.extend_from_slice(&header[..2]);
    out.push(QR | (f1 & RD));
    out.push(0x80 | (f2 & CD) | rcode);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]);
    let mut seen = Candidates::default();
    write_labels(&mut out, &qname, &mut seen)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    write_labels(&mut out, &owner, &mut seen)?;
    out.extend_from_slice(&[0, 6, 0, 1]);
    let ttl_at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    write_labels(&mut out, &names.labels(mname), &mut seen)?;
    write_labels(&mut out, &names.labels(rname), &mut seen)?;
    out.extend_from_slice(fields);
    let rdlen = u16::try_from(out.len() - ttl_at - 6).ok()?;
    out[ttl_at + 4..ttl_at + 6].copy_from_slice(&rdlen.to_be_bytes());
    Some(NegativeWire {
        bytes: out,
        ttl_at,
        ttl: if ttl > crate::wire::MAX_TTL { 0 } else { ttl },
        minimum: u32::from_be_bytes([fields[16], fields[17], fields[18], fields[19]]),
        rcode,
    })
}

/// The names of one message read from it, pointers followed, in lower case, one after the
/// other in one buffer as length-prefixed labels without the root (no allocation, and the
/// buffer written once).
struct WireNames {
    bytes: [u8; 4 * WireNames::MOST],
    used: usize,
}

impl WireNames {
    /// Most bytes of labels a name may have here (251 on the wire with its root; hickory takes
    /// up to 255, and such rare names take the general path, as do pointer chains longer than
    /// this reader follows).
    const MOST: usize = 250;

    fn new() -> Self {
        Self {
            bytes: [0; 4 * WireNames::MOST],
            used: 0,
        }
    }

    /// Reads the name at `start`: where it is in the buffer, and where it ends in place. Under
    /// hickory's rules: a pointer aims before the labels it ends (so pointers only go back),
    /// and a name pointed at ends before the one that pointed at it. `None` for anything else,
    /// or when the buffer is full.
    fn read(&mut self, msg: &[u8], start: usize) -> Option<(std::ops::Range<usize>, usize)> {
        let first = self.used;
        let most = (first + Self::MOST).min(self.bytes.len());
        let (mut at, mut run, mut limit, mut end) = (start, start, usize::MAX, None);
        // Every step is a label of ≥ 2 bytes of a name ≤ 250, or a pointer: bounded.
        for _ in 0..256 {
            if at >= limit {
                return None;
            }
            let n = *msg.get(at)?;
            match n & 0xC0 {
                0x00 if n == 0 => {
                    return Some((first..self.used, end.unwrap_or(at + 1)));
                }
                0x00 => {
                    let label = msg.get(at..at + 1 + usize::from(n))?;
                    let to_end = self.used + label.len();
                    if to_end > most {
                        return None;
                    }
                    // One pass, no call: labels are short.
                    for (to, from) in self.bytes[self.used..to_end].iter_mut().zip(label) {
                        *to = from.to_ascii_lowercase();
                    }
                    self.used = to_end;
                    at += label.len();
                }
                0xC0 => {
                    let lo = *msg.get(at + 1)?;
                    let to = usize::from(u16::from_be_bytes([n & 0x3F, lo]));
                    if to >= run {
                        return None;
                    }
                    end.get_or_insert(at + 2);
                    (limit, run, at) = (run, to, to);
                }
                _ => return None,
            }
        }
        None
    }

    /// The labels of the name at `range`.
    fn labels(&self, range: std::ops::Range<usize>) -> SmallVec<[&[u8]; 16]> {
        let mut out = SmallVec::new();
        let mut at = range.start;
        while at < range.end {
            let n = usize::from(self.bytes[at]);
            out.push(&self.bytes[at + 1..at + 1 + n]);
            at += 1 + n;
        }
        out
    }
}

/// Whether the name `zone` is `name` or an ancestor of it (both lower case already).
fn is_zone_of(zone: &[&[u8]], name: &[&[u8]]) -> bool {
    name.len() >= zone.len() && name[name.len() - zone.len()..] == zone[..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, SRV, TXT};
    use hickory_proto::rr::{DNSClass, RecordType};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// A message with every kind of record the writer handles itself and some it hands to
    /// hickory, names repeated in every position compression can reach.
    fn sample() -> Message {
        let mut m = Message::new(0xBEEF, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.metadata.checking_disabled = true;
        m.metadata.response_code = ResponseCode::NoError;
        m.add_query(Query::query(name("www.example.com."), RecordType::A));
        m.add_answer(Record::from_rdata(
            name("www.example.com."),
            300,
            RData::CNAME(CNAME(name("edge.cdn.example.net."))),
        ));
        m.add_answer(Record::from_rdata(
            name("edge.cdn.example.net."),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.add_answer(Record::from_rdata(
            name("edge.cdn.example.net."),
            60,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ));
        m.add_answer(Record::from_rdata(
            name("example.com."),
            60,
            RData::MX(MX::new(10, name("mail.example.com."))),
        ));
        m.add_answer(Record::from_rdata(
            name("_sip._tcp.example.com."),
            60,
            RData::SRV(SRV::new(1, 2, 5060, name("sip.example.com."))),
        ));
        m.add_answer(Record::from_rdata(
            name("example.com."),
            60,
            RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
        ));
        m.add_authority(Record::from_rdata(
            name("example.com."),
            3600,
            RData::NS(NS(name("ns1.example.com."))),
        ));
        m.add_authority(Record::from_rdata(
            name("example.com."),
            3600,
            RData::SOA(SOA::new(
                name("ns1.example.com."),
                name("hostmaster.example.com."),
                7,
                3600,
                600,
                86400,
                60,
            )),
        ));
        let mut glue = Record::from_rdata(
            name("ns1.example.com."),
            3600,
            RData::A(A::new(192, 0, 2, 53)),
        );
        glue.dns_class = DNSClass::IN;
        m.add_additional(glue);
        m
    }

    /// What hickory reads back from the writer's bytes is the message it was given, and for
    /// this message the bytes are no longer than hickory's own encoding.
    #[test]
    fn the_writer_says_what_hickory_would_in_no_more_bytes() {
        let m = sample();
        let ours = encode(&m).unwrap();
        let theirs = m.to_vec().unwrap();
        let back = Message::from_vec(&ours).unwrap();
        assert_eq!(back.metadata, m.metadata);
        assert_eq!(back.queries, m.queries);
        assert_eq!(back.answers, m.answers);
        assert_eq!(back.authorities, m.authorities);
        assert_eq!(back.additionals, m.additionals);
        assert!(
            ours.len() <= theirs.len(),
            "{} > {}",
            ours.len(),
            theirs.len()
        );
        // The header is hickory's byte for byte.
        assert_eq!(ours[..12], theirs[..12]);
        // Names in SRV data are written in full (RFC 2782, RFC 3597 §4).
        let srv_target = b"\x03sip\x07example\x03com\x00";
        assert!(ours.windows(srv_target.len()).any(|w| w == srv_target));
    }

    /// Every flag and rcode lands where hickory puts it.
    #[test]
    fn header_flags_match_hickorys() {
        for bits in 0u16..256 {
            let mut m = Message::new(bits, MessageType::Query, OpCode::Query);
            let flag = |i: u16| bits & (1 << i) != 0;
            m.metadata.message_type = if flag(0) {
                MessageType::Response
            } else {
                MessageType::Query
            };
            m.metadata.op_code = if flag(1) {
                OpCode::Update
            } else {
                OpCode::Query
            };
            m.metadata.authoritative = flag(2);
            m.metadata.truncation = flag(3);
            m.metadata.recursion_desired = flag(4);
            m.metadata.recursion_available = flag(5);
            m.metadata.authentic_data = flag(6);
            m.metadata.checking_disabled = flag(7);
            m.metadata.response_code = ResponseCode::from_low(u8::try_from(bits % 16).unwrap());
            assert_eq!(encode(&m).unwrap(), m.to_vec().unwrap(), "bits {bits:#x}");
        }
    }

    /// What the writer leaves to hickory: EDNS, an extended rcode, a name too long.
    #[test]
    fn what_it_cannot_write_is_none() {
        let mut m = sample();
        m.edns = Some(Edns::new());
        assert!(encode(&m).is_none());
        let mut m = sample();
        m.metadata.response_code = ResponseCode::BADCOOKIE;
        assert!(encode(&m).is_none());
    }

    /// An upstream's names built so that every candidate has their length: the search stops at
    /// its budget, and what is written is still the message.
    #[test]
    fn hostile_names_cost_at_most_the_budget() {
        // Every suffix of a target has the length of the question's suffix at the same depth
        // and differs from it only in the last label: each comparison reads to the end.
        let long = |head: &str, tail: &str| {
            let mut n = head.to_string();
            for _ in 0..110 {
                n.push_str(".a");
            }
            n.push_str(tail);
            name(&n)
        };
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(long("q", ".evil.example."), RecordType::PTR));
        for i in 0..100 {
            m.add_answer(Record::from_rdata(
                long("q", ".evil.example."),
                60,
                RData::PTR(hickory_proto::rr::rdata::PTR(long(
                    &format!("k{i:03}"),
                    ".evil.examplf.",
                ))),
            ));
        }
        let mut seen = Candidates::default();
        let mut out = Vec::new();
        for r in &m.answers {
            write_record(&mut out, r, &mut seen).unwrap();
        }
        assert_eq!(seen.steps, 0, "the budget was reached");
        assert_eq!(seen.compressed, MAX_COMPRESSED_NAMES);
        let ours = encode(&m).expect("still written");
        assert_eq!(Message::from_vec(&ours).unwrap().answers, m.answers);
    }

    /// A pointer never aims past 0x3FFF: names written beyond it are written in full.
    #[test]
    fn compression_stops_where_pointers_cannot_reach() {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name("big.example."), RecordType::TXT));
        let chunk = "x".repeat(255);
        for _ in 0..80 {
            m.add_answer(Record::from_rdata(
                name("big.example."),
                60,
                RData::TXT(TXT::new(vec![chunk.clone()])),
            ));
        }
        m.add_answer(Record::from_rdata(
            name("late.example."),
            60,
            RData::CNAME(CNAME(name("later.example."))),
        ));
        m.add_answer(Record::from_rdata(
            name("later.example."),
            60,
            RData::CNAME(CNAME(name("late.example."))),
        ));
        let ours = encode(&m).unwrap();
        assert!(ours.len() > 0x4000);
        let back = Message::from_vec(&ours).unwrap();
        assert_eq!(back.answers, m.answers);
    }
}
