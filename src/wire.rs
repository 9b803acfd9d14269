//! The DNS wire fast path: parsing queries and finishing answers without the generic codec.
//!
//! Every query is parsed here exactly once, into a [`Query`] that borrows the packet. The
//! parser is strict about what a query may be (one question, no compression in the question,
//! at most one OPT record) and never panics: every read is bounds-checked and every failure is a
//! [`WireError`] that says whether the packet deserves a FORMERR/NOTIMP answer or silence.
//!
//! Answers are built as byte buffers whose question section is the client's own (so 0x20 case
//! randomisation survives), with the ID and flags patched in and the OPT record appended for
//! EDNS clients. Cached answers are stored pre-encoded and only have their ID, question case and
//! TTLs patched on the way out (see [`crate::resolve::cache`]).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Size of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Largest TTL a record may carry, in seconds: 2^31 - 1 (RFC 2181 §8, which has resolvers read
/// anything larger as 0).
pub const MAX_TTL: u32 = i32::MAX as u32;
/// The UDP payload size we advertise and honour at most (DNS flag day 2020 recommendation).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// The classic UDP limit for clients without EDNS.
pub const CLASSIC_UDP_SIZE: usize = 512;

/// Record type numbers used on the fast path.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Null record (a tunnel favourite).
    pub const NULL: u16 = 10;
    /// Mail exchange.
    pub const MX: u16 = 15;
    /// Text.
    pub const TXT: u16 = 16;
    /// Key (dns2tcp's alternative carrier).
    pub const KEY: u16 = 25;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Signature (RFC 2931's SIG(0) when it signs a message).
    pub const SIG: u16 = 24;
    /// EDNS(0) pseudo-record.
    pub const OPT: u16 = 41;
    /// Transaction key (RFC 2930): a meta type, never asked for.
    pub const TKEY: u16 = 249;
    /// Transaction signature (RFC 8945): a meta type, never asked for.
    pub const TSIG: u16 = 250;
    /// Incremental zone transfer (RFC 1995).
    pub const IXFR: u16 = 251;
    /// Full zone transfer (RFC 5936).
    pub const AXFR: u16 = 252;
    /// Mailbox-related records (RFC 1035, obsolete).
    pub const MAILB: u16 = 253;
    /// Mail agent records (RFC 1035, obsolete).
    pub const MAILA: u16 = 254;
    /// Any.
    pub const ANY: u16 = 255;
}

/// Response codes used on the fast path.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;
    /// Bad EDNS version (extended rcode 16).
    pub const BADVERS: u16 = 16;

    /// The mnemonic used in events and metrics.
    #[must_use]
    pub fn name(code: u16) -> &'static str {
        match code {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            16 => "BADVERS",
            _ => "OTHER",
        }
    }
}

/// Opcodes (RFC 6895 §2.2) dnsward tells apart.
pub mod opcode {
    /// A standard query, the only one served.
    pub const QUERY: u8 = 0;
    /// A zone change notification (RFC 1996): refused, as dnsward is no secondary.
    pub const NOTIFY: u8 = 4;
    /// Dynamic update (RFC 2136): not implemented.
    pub const UPDATE: u8 = 5;
}

/// Why a packet could not be taken as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header: nothing to answer to.
    #[error("packet shorter than a DNS header")]
    TooShort,
    /// A response (QR=1): never answered, so dnsward cannot be used to reflect traffic.
    #[error("packet is a response, not a query")]
    NotAQuery,
    /// Well-formed header but the rest is malformed: answer FORMERR.
    #[error("malformed query: {0}")]
    FormErr(&'static str),
    /// An opcode other than QUERY: answer NOTIMP (REFUSED for a NOTIFY).
    #[error("opcode {0} is not implemented")]
    NotImplemented(u8),
}

impl WireError {
    /// Stable label for metrics and events.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::NotAQuery => "not_a_query",
            Self::FormErr(_) => "formerr",
            Self::NotImplemented(_) => "notimp",
        }
    }
}

/// EDNS(0) information from the query's OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size.
    pub udp_size: u16,
    /// EDNS version.
    pub version: u8,
    /// The DNSSEC OK bit.
    pub dnssec_ok: bool,
    /// The COOKIE option (RFC 7873), if the query carried one.
    pub cookie: Option<Cookie>,
    /// Whether the query carried a PADDING option (RFC 7830): over an encrypted transport its
    /// answer is padded too.
    pub padding: bool,
    /// The edns-tcp-keepalive option (RFC 7828), if the query carried one.
    pub keepalive: Keepalive,
    /// Whether the query carried an empty NSID option (RFC 5001): a request for the server's
    /// identifier.
    pub nsid: bool,
}

/// What a query's edns-tcp-keepalive option (RFC 7828) looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keepalive {
    /// No such option.
    #[default]
    Absent,
    /// The option as a client sends it: no data (RFC 7828 §3.2.1).
    Asked,
    /// The option with data (a TIMEOUT, which only a server sends): over TCP and DoT a format
    /// error, over UDP ignored (RFC 7828 §3.3.1).
    WithData,
}

/// A COOKIE option: the client cookie and, when the client has one from us, a server cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// The client cookie.
    pub client: [u8; 8],
    /// Length of the server cookie (0 when absent, else 8–32).
    pub server_len: u8,
    /// The server cookie's bytes (the first `server_len`).
    pub server: [u8; 32],
}

impl Cookie {
    /// The server cookie, if the client sent one.
    #[must_use]
    pub fn server(&self) -> Option<&[u8]> {
        (self.server_len > 0).then(|| &self.server[..usize::from(self.server_len)])
    }

    /// Parse the option data: 8 bytes of client cookie, then 0 or 8–32 bytes of server cookie.
    fn parse(data: &[u8]) -> Option<Self> {
        let (client, server) = data.split_first_chunk::<8>()?;
        if !(server.is_empty() || (8..=32).contains(&server.len())) {
            return None;
        }
        let mut out = Self {
            client: *client,
            server_len: u8::try_from(server.len()).ok()?,
            server: [0; 32],
        };
        out.server[..server.len()].copy_from_slice(server);
        Some(out)
    }
}

/// EDNS option code of NSID (RFC 5001).
pub const OPTION_NSID: u16 = 3;

/// EDNS option code of COOKIE (RFC 7873).
pub const OPTION_COOKIE: u16 = 10;

/// EDNS option code of edns-tcp-keepalive (RFC 7828).
pub const OPTION_TCP_KEEPALIVE: u16 = 11;

/// EDNS option code of PADDING (RFC 7830).
pub const OPTION_PADDING: u16 = 12;

/// EDNS option code of Extended DNS Error (RFC 8914).
pub const OPTION_EDE: u16 = 15;

/// An Extended DNS Error for an answer (RFC 8914): why it is what it is, for the client's
/// logs. Sent only to a client that used EDNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ede {
    /// INFO-CODE ([`ede`]).
    pub code: u16,
    /// EXTRA-TEXT: short, plain, never the configuration's secrets.
    pub text: &'static str,
}

/// The RFC 8914 INFO-CODEs dnsward gives.
pub mod ede {
    /// Forged Answer: a sinkhole address instead of the real one.
    pub const FORGED_ANSWER: u16 = 4;
    /// Cached Error: the answer is a SERVFAIL remembered from a recent failure (RFC 9520).
    pub const CACHED_ERROR: u16 = 13;
    /// Blocked: by the operator's policy (a group's rules, a containment).
    pub const BLOCKED: u16 = 15;
    /// Prohibited: this client may not ask (unknown, unauthenticated, quarantined).
    pub const PROHIBITED: u16 = 18;
    /// Not Authoritative: RD clear for a name outside the local zones (RFC 8914 §4.21).
    pub const NOT_AUTHORITATIVE: u16 = 20;
    /// Not Supported: a zone transfer, a class other than IN.
    pub const NOT_SUPPORTED: u16 = 21;
    /// No Reachable Authority: no upstream answered the question.
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
}

/// Answers to padded queries over encrypted transports are padded to a multiple of this many
/// bytes (RFC 8467 §4.1, the recommended block-length strategy for responses).
pub const RESPONSE_PADDING_BLOCK: usize = 468;

/// What dnsward reads of an OPT record's options.
#[derive(Default)]
struct Options {
    cookie: Option<Cookie>,
    padding: bool,
    keepalive: Keepalive,
    nsid: bool,
}

/// Read an OPT record's options: the COOKIE option, if any, whether PADDING, edns-tcp-keepalive
/// and an empty NSID option are there. A malformed option list or cookie is a format error
/// (RFC 7873 §5.2.2, RFC 6891 §7).
fn read_options(mut options: &[u8]) -> Result<Options, WireError> {
    let mut found = Options::default();
    while !options.is_empty() {
        let (head, rest) = options
            .split_first_chunk::<4>()
            .ok_or(WireError::FormErr("EDNS option truncated"))?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let data = rest
            .get(..len)
            .ok_or(WireError::FormErr("EDNS option runs past the OPT record"))?;
        match code {
            OPTION_COOKIE if found.cookie.is_none() => {
                found.cookie =
                    Some(Cookie::parse(data).ok_or(WireError::FormErr("malformed COOKIE option"))?);
            }
            OPTION_PADDING => found.padding = true,
            OPTION_TCP_KEEPALIVE => {
                found.keepalive = if data.is_empty() && found.keepalive != Keepalive::WithData {
                    Keepalive::Asked
                } else {
                    Keepalive::WithData
                };
            }
            // RFC 5001 §2.1: a request is the option with no data; anything else is not one.
            OPTION_NSID => found.nsid |= data.is_empty(),
            _ => {}
        }
        options = &rest[len..];
    }
    Ok(found)
}

/// Spare buffers per thread: the query name's `String` and the answer's `Vec` are taken from
/// here and given back (the name when its [`Query`] drops, the answer once sent,
/// [`recycle_reply`]), so a query on the hot path costs no allocation: two `malloc`/`free`
/// pairs were ~250 instructions of ~5,400 (`bench/README.md`, session 10). Bounded: a thread
/// keeps at most [`spare::KEEP`] of each, none larger than [`spare::MAX_CAPACITY`].
mod spare {
    use std::cell::RefCell;

    /// Buffers kept per thread and kind.
    pub(super) const KEEP: usize = 64;
    /// Larger buffers (a big TCP answer) go back to the allocator.
    pub(super) const MAX_CAPACITY: usize = 4096;

    thread_local! {
        static NAMES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        static REPLIES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    type Pool = std::thread::LocalKey<RefCell<Vec<Vec<u8>>>>;

    fn take(pool: &'static Pool, capacity: usize) -> Vec<u8> {
        let spare = pool
            .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
            .ok()
            .flatten();
        match spare {
            Some(mut v) => {
                v.clear();
                v.reserve(capacity);
                v
            }
            None => Vec::with_capacity(capacity),
        }
    }

    fn give(pool: &'static Pool, v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > MAX_CAPACITY {
            return;
        }
        let _ = pool.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut()
                && p.len() < KEEP
            {
                p.push(v);
            }
        });
    }

    pub(super) fn take_name(capacity: usize) -> Vec<u8> {
        take(&NAMES, capacity)
    }

    pub(super) fn give_name(v: Vec<u8>) {
        give(&NAMES, v);
    }

    pub(super) fn take_reply(capacity: usize) -> Vec<u8> {
        take(&REPLIES, capacity)
    }

    pub(super) fn give_reply(v: Vec<u8>) {
        give(&REPLIES, v);
    }
}

/// An empty buffer for an answer of about `capacity` bytes, from this thread's spares.
#[must_use]
pub fn reply_buffer(capacity: usize) -> Vec<u8> {
    spare::take_reply(capacity)
}

/// Give a sent answer's buffer back to this thread's spares ([`reply_buffer`]).
pub fn recycle_reply(buf: Vec<u8>) {
    spare::give_reply(buf);
}

/// A parsed query, borrowing the packet it came from.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The whole packet.
    pub packet: &'a [u8],
    /// Message ID.
    pub id: u16,
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// The question section as sent (name, type, class), for echoing back.
    pub question: &'a [u8],
    /// The query name, lower-case presentation form without the trailing dot (`.` for the root).
    /// Bytes outside letters, digits, `-` and `_` are escaped as `\DDD`, so a label that
    /// contains a dot can never pass for two labels.
    pub name: String,
    /// Number of labels in the name.
    pub label_count: u8,
    /// Length of the name in wire form.
    pub wire_name_len: u8,
    /// Query type.
    pub qtype: u16,
    /// Query class.
    pub qclass: u16,
    /// EDNS information, if the query had an OPT record.
    pub edns: Option<Edns>,
    /// The server cookie to send back in the answer's COOKIE option (set by the pipeline;
    /// only when the query carried a COOKIE option).
    pub response_cookie: Option<[u8; 16]>,
    /// Pad the answer (set by the pipeline: a padded query over DoT or DoH, RFC 7830 §4).
    pub pad_response: bool,
    /// The idle timeout, in units of 100 ms, to send in an edns-tcp-keepalive option (set by
    /// the pipeline: a client's query that asked for it over TCP or DoT, RFC 7828 §3.3.2).
    pub keepalive_response: Option<u16>,
    /// The server identifier to send in an NSID option (set by the pipeline: a client's query
    /// with an empty NSID option, when `server.nsid` is set; RFC 5001).
    pub nsid_response: Option<&'a [u8]>,
}

impl Drop for Query<'_> {
    fn drop(&mut self) {
        spare::give_name(std::mem::take(&mut self.name).into_bytes());
    }
}

impl Query<'_> {
    /// The largest UDP answer this client can take.
    #[must_use]
    pub fn max_udp_payload(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.udp_size.clamp(512, EDNS_UDP_SIZE)),
            None => CLASSIC_UDP_SIZE,
        }
    }

    /// Whether the DNSSEC OK bit was set.
    #[must_use]
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }
}

/// A bounds-checked reader over a packet.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.buf.get(self.pos..self.pos + 2)?;
        self.pos += 2;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.buf.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        self.pos = end;
        Some(())
    }

    /// Skip a possibly compressed name (in records after the question).
    fn skip_name(&mut self) -> Option<()> {
        loop {
            let len = self.u8()?;
            match len & 0xC0 {
                0x00 if len == 0 => return Some(()),
                0x00 => self.skip(usize::from(len))?,
                0xC0 => {
                    self.u8()?;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Each byte as it stands in a presentation-form label, lower-cased, or 0 for a byte written
/// `\DDD` (anything but letters, digits, `-` and `_`).
const PLAIN_LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        #[allow(clippy::cast_possible_truncation)] // b < 256
        let c = (b as u8).to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            t[b] = c;
        }
        b += 1;
    }
    t
};

/// Append a label's bytes to a presentation-form name, lower-cased and escaped. One pass
/// through a table, with no per-byte capacity check or `char` encoding: a label of plain bytes
/// (nearly all) is written at once, and only one holding another byte is written again escaped.
pub(crate) fn push_label(out: &mut Vec<u8>, label: &[u8]) {
    let start = out.len();
    let mut escaped = false;
    out.extend(label.iter().map(|&b| {
        let c = PLAIN_LOWER[usize::from(b)];
        escaped |= c == 0;
        c
    }));
    if !escaped {
        return;
    }
    out.truncate(start);
    for &b in label {
        let c = b.to_ascii_lowercase();
        match PLAIN_LOWER[usize::from(b)] {
            0 => out.extend_from_slice(&[b'\\', b'0' + c / 100, b'0' + c / 10 % 10, b'0' + c % 10]),
            plain => out.push(plain),
        }
    }
}

/// A presentation-form name built by [`push_label`] as text: `.` for the root (no labels).
fn name_from_bytes(mut out: Vec<u8>) -> String {
    if out.is_empty() {
        out.push(b'.');
    }
    // `push_label` writes ASCII only, so this never fails; the fallback keeps that a non-panic.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The presentation form of a checked, uncompressed wire name (its labels and the root's 0).
/// The whole name goes through [`PLAIN_LOWER`] in one pass and each length byte after the
/// first then becomes the dot it stands for; only a name with a byte to escape is built again,
/// label by label.
fn wire_name_text(wire: &[u8]) -> String {
    let body = wire
        .get(1..wire.len().saturating_sub(1))
        .unwrap_or_default();
    let mut out = spare::take_name(body.len().max(1));
    out.extend(body.iter().map(|&b| PLAIN_LOWER[usize::from(b)]));
    let mut at = usize::from(wire.first().copied().unwrap_or(0));
    while let (Some(&len), Some(dot)) = (body.get(at), out.get_mut(at)) {
        *dot = b'.';
        at += 1 + usize::from(len);
    }
    if !out.contains(&0) {
        return name_from_bytes(out);
    }
    spare::give_name(out);
    let mut at = 0;
    name_from_labels(std::iter::from_fn(|| {
        let len = usize::from(*wire.get(at)?);
        let label = wire.get(at + 1..at + 1 + len).filter(|_| len > 0)?;
        at += 1 + len;
        Some(label)
    }))
}

/// The presentation form of a name from its wire labels, in order (`.` for none).
pub(crate) fn name_from_labels<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut out = Vec::with_capacity(64);
    for label in labels {
        if !out.is_empty() {
            out.push(b'.');
        }
        push_label(&mut out, label);
    }
    name_from_bytes(out)
}

/// The presentation form used throughout dnsward (lower-case, `\DDD` escapes, no trailing dot)
/// of a name decoded by hickory.
#[must_use]
pub fn name_text(name: &hickory_proto::rr::Name) -> String {
    name_from_labels(name.iter())
}

/// The query name as a hickory [`Name`](hickory_proto::rr::Name), lower-cased, built from the
/// question's wire labels: their bytes go in as they are, with no trip through text, so a label
/// holding a dot, a backslash, a NUL or a byte above 127 stays that label. `None` only if the
/// question is not one [`parse_query`] accepted.
#[must_use]
pub fn question_name(q: &Query<'_>) -> Option<hickory_proto::rr::Name> {
    let mut labels: Vec<Vec<u8>> = Vec::with_capacity(usize::from(q.label_count));
    let mut at = 0;
    loop {
        let len = usize::from(*q.question.get(at)?);
        if len == 0 {
            break;
        }
        let label = q.question.get(at + 1..at + 1 + len)?;
        labels.push(label.to_ascii_lowercase());
        at += 1 + len;
    }
    hickory_proto::rr::Name::from_labels(labels).ok()
}

/// Why a name in presentation form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameTextError {
    /// `\` followed by one or two digits only: RFC 1035 escapes are `\DDD`.
    #[error("escape `\\{0}` needs exactly three decimal digits (\\DDD, RFC 1035 §5.1)")]
    ShortEscape(String),
    /// `\DDD` above 255.
    #[error("escape `\\{0}` is above 255")]
    EscapeTooLarge(String),
    /// The text ends with a lone backslash.
    #[error("the name ends with a lone backslash")]
    TrailingBackslash,
    /// Two dots in a row, or a leading dot.
    #[error("empty label")]
    EmptyLabel,
    /// A label of more than 63 bytes.
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    /// More than 255 bytes in wire form.
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// A character outside ASCII: a name in text is ASCII, other bytes are written `\DDD`.
    #[error("character {0:?} is not ASCII: write the name's xn-- form, or the bytes as \\DDD")]
    NotAscii(char),
}

/// Read a name in presentation form (RFC 1035 §5.1), the inverse of [`name_text`]: labels are
/// split at unescaped dots, `\DDD` is the byte with decimal value DDD, `\X` is the character X
/// itself (so `\.` is a dot inside a label). Returns the labels' bytes (case kept) and whether
/// the text ended with a dot (an absolute name). `.` alone is the root; `""` is no labels,
/// relative.
///
/// # Errors
/// A malformed escape, an empty or overlong label, an overlong name, or non-ASCII text.
pub fn parse_name_text(text: &str) -> Result<(Vec<Vec<u8>>, bool), NameTextError> {
    if text == "." {
        return Ok((Vec::new(), true));
    }
    let mut labels: Vec<Vec<u8>> = Vec::new();
    let mut label: Vec<u8> = Vec::new();
    let mut absolute = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii() {
            return Err(NameTextError::NotAscii(c));
        }
        absolute = false;
        match c {
            '.' => {
                if label.is_empty() {
                    return Err(NameTextError::EmptyLabel);
                }
                labels.push(std::mem::take(&mut label));
                absolute = true;
            }
            '\\' => match chars.next() {
                None => return Err(NameTextError::TrailingBackslash),
                Some(d) if d.is_ascii_digit() => {
                    let mut digits = String::from(d);
                    while digits.len() < 3 {
                        match chars.peek() {
                            Some(n) if n.is_ascii_digit() => {
                                digits.push(*n);
                                chars.next();
                            }
                            _ => return Err(NameTextError::ShortEscape(digits)),
                        }
                    }
                    let value: u16 = digits.parse().unwrap_or(u16::MAX);
                    let byte = u8::try_from(value)
                        .map_err(|_| NameTextError::EscapeTooLarge(digits.clone()))?;
                    label.push(byte);
                }
                Some(x) if !x.is_ascii() => return Err(NameTextError::NotAscii(x)),
                Some(x) => label.push(x as u8),
            },
            _ => label.push(c as u8),
        }
        if label.len() > 63 {
            return Err(NameTextError::LabelTooLong);
        }
    }
    if !label.is_empty() {
        labels.push(label);
    }
    let wire_len: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    if wire_len > 255 {
        return Err(NameTextError::NameTooLong);
    }
    Ok((labels, absolute))
}

/// Parse a query packet.
///
/// # Errors
/// See [`WireError`]: `TooShort` and `NotAQuery` deserve silence, the others an error answer.
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, WireError> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::TooShort);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Err(WireError::NotAQuery);
    }
    let op = ((flags >> 11) & 0x0F) as u8;
    if op != opcode::QUERY {
        return Err(WireError::NotImplemented(op));
    }
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    let ancount = u16::from_be_bytes([packet[6], packet[7]]);
    let nscount = u16::from_be_bytes([packet[8], packet[9]]);
    let arcount = u16::from_be_bytes([packet[10], packet[11]]);
    if qdcount != 1 {
        return Err(WireError::FormErr("a query must have exactly one question"));
    }
    // A query is never truncated (RFC 1035 §4.1.1: TC is set by whoever truncated an answer),
    // and carries no answer records; Unbound answers both FORMERR. Sections a query has no use
    // for are a place to put bytes, and none of them is ever passed on.
    if flags & flag::TC != 0 {
        return Err(WireError::FormErr("TC bit set in a query"));
    }
    if ancount != 0 {
        return Err(WireError::FormErr("a query has no answer records"));
    }

    let mut r = Reader {
        buf: packet,
        pos: HEADER_LEN,
    };
    let mut label_count: u8 = 0;
    loop {
        let len = r
            .u8()
            .ok_or(WireError::FormErr("question name runs past the packet"))?;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return Err(WireError::FormErr(
                "compressed or extended label in the question",
            ));
        }
        r.skip(usize::from(len))
            .ok_or(WireError::FormErr("question label runs past the packet"))?;
        if r.pos - HEADER_LEN > 255 {
            return Err(WireError::FormErr("question name longer than 255 bytes"));
        }
        label_count = label_count.saturating_add(1);
    }
    let wire_name_len = r.pos - HEADER_LEN;
    if wire_name_len > 255 {
        return Err(WireError::FormErr("question name longer than 255 bytes"));
    }
    let name = wire_name_text(&packet[HEADER_LEN..r.pos]);
    let qtype = r.u16().ok_or(WireError::FormErr("question has no type"))?;
    let qclass = r.u16().ok_or(WireError::FormErr("question has no class"))?;
    let question = &packet[HEADER_LEN..r.pos];

    // An authority record only in an IXFR query (RFC 1995 §3: the client's SOA; the query type
    // stage then refuses it, as any zone transfer); then the OPT record among the additionals.
    // An OPT anywhere else is a format error (RFC 6891 §6.1.1).
    if nscount != 0 && qtype != rtype::IXFR {
        return Err(WireError::FormErr(
            "authority records in a query other than IXFR",
        ));
    }
    for _ in 0..nscount {
        if skip_record(&mut r).ok_or(WireError::FormErr("record runs past the packet"))?
            == rtype::OPT
        {
            return Err(WireError::FormErr(
                "OPT record outside the additional section",
            ));
        }
    }
    let mut edns = None;
    for _ in 0..arcount {
        let owner_at = r.pos;
        r.skip_name()
            .ok_or(WireError::FormErr("additional record name malformed"))?;
        let rtype = r
            .u16()
            .ok_or(WireError::FormErr("additional record truncated"))?;
        let class = r
            .u16()
            .ok_or(WireError::FormErr("additional record truncated"))?;
        let ttl = r
            .u32()
            .ok_or(WireError::FormErr("additional record truncated"))?;
        let rdlen = r
            .u16()
            .ok_or(WireError::FormErr("additional record truncated"))?;
        let rdata_at = r.pos;
        r.skip(usize::from(rdlen)).ok_or(WireError::FormErr(
            "additional record data runs past the packet",
        ))?;
        if rtype != rtype::OPT {
            // TSIG and SIG(0) (RFC 8945, RFC 2931) are not supported: their signature would go
            // unchecked and the answer unsigned, which a signing client rejects anyway; any
            // other record has no meaning in a query. Unbound answers these FORMERR too.
            return Err(WireError::FormErr(
                if matches!(rtype, rtype::SIG | rtype::TSIG) {
                    "signed queries (TSIG, SIG(0)) are not supported"
                } else {
                    "an additional record other than OPT in a query"
                },
            ));
        }
        if edns.is_some() {
            return Err(WireError::FormErr("more than one OPT record"));
        }
        // RFC 6891 §6.1.2: the OPT owner MUST be the root name.
        if !is_root_name(packet, owner_at) {
            return Err(WireError::FormErr("OPT record owner is not the root"));
        }
        let rdata = packet.get(rdata_at..r.pos).unwrap_or_default();
        let version = ((ttl >> 16) & 0xFF) as u8;
        // RFC 6891 §6.1.3: a version we do not speak is answered BADVERS, whatever its
        // options hold: they are that version's, not ours to judge (a bad COOKIE in a version-1
        // query was FORMERR, which a client may take for "no EDNS at all").
        let options = if version == 0 {
            read_options(rdata)?
        } else {
            Options::default()
        };
        edns = Some(Edns {
            udp_size: class,
            version,
            dnssec_ok: ttl & 0x8000 != 0,
            cookie: options.cookie,
            padding: options.padding,
            keepalive: options.keepalive,
            nsid: options.nsid,
        });
    }

    Ok(Query {
        packet,
        id,
        rd: flags & 0x0100 != 0,
        cd: flags & 0x0010 != 0,
        question,
        name,
        label_count,
        wire_name_len: u8::try_from(wire_name_len).unwrap_or(u8::MAX),
        qtype,
        qclass,
        edns,
        response_cookie: None,
        pad_response: false,
        keepalive_response: None,
        nsid_response: None,
    })
}

/// A message's section counts (question, answer, authority, additional) and a reader past its
/// question section; `None` when the header or a question does not walk.
fn past_questions(msg: &[u8]) -> Option<([u16; 4], Reader<'_>)> {
    let header = msg.get(..HEADER_LEN)?;
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let counts = [count(4), count(6), count(8), count(10)];
    let mut r = Reader {
        buf: msg,
        pos: HEADER_LEN,
    };
    for _ in 0..counts[0] {
        r.skip_name()?;
        r.skip(4)?;
    }
    Some((counts, r))
}

/// Skip one resource record; returns its type.
fn skip_record(r: &mut Reader<'_>) -> Option<u16> {
    r.skip_name()?;
    let rtype = r.u16()?;
    r.skip(6)?;
    let rdlen = r.u16()?;
    r.skip(usize::from(rdlen))?;
    Some(rtype)
}

/// Whether the name at `at` is the root: a zero byte, or compression pointers that end at one
/// (followed a few times at most, so a pointer loop cannot hold the parser).
fn is_root_name(packet: &[u8], mut at: usize) -> bool {
    for _ in 0..4 {
        match packet.get(at..) {
            Some([0, ..]) => return true,
            Some([hi, lo, ..]) if hi & 0xC0 == 0xC0 => {
                at = usize::from(u16::from_be_bytes([hi & 0x3F, *lo]));
            }
            _ => return false,
        }
    }
    false
}

/// The offsets of every TTL field in an encoded message (OPT excluded), with the record type.
///
/// Returns `None` when the message is malformed.
#[must_use]
pub fn ttl_offsets(msg: &[u8]) -> Option<Vec<(u16, u16)>> {
    let ([_, an, ns, ar], mut r) = past_questions(msg)?;
    let rr = u32::from(an) + u32::from(ns) + u32::from(ar);
    let mut out = Vec::with_capacity(rr as usize);
    for _ in 0..rr {
        r.skip_name()?;
        let rtype = r.u16()?;
        r.skip(2)?;
        let at = u16::try_from(r.pos).ok()?;
        r.skip(4)?;
        let rdlen = r.u16()?;
        r.skip(usize::from(rdlen))?;
        if rtype != rtype::OPT {
            out.push((at, rtype));
        }
    }
    Some(out)
}

/// Feed the name at `at` to `h` in one write, compression pointers followed (a bounded number
/// of times, so a loop cannot hold the reader), in lower case: the uncompressed wire form.
/// Returns where the name ends in place (after its terminator or its first pointer).
fn feed_name(msg: &[u8], mut at: usize, h: &mut dyn std::hash::Hasher) -> Option<usize> {
    let mut end = None;
    let mut hops = 0;
    let mut name = [0u8; 255];
    let mut len = 0;
    loop {
        let n = *msg.get(at)?;
        match n & 0xC0 {
            0x00 => {
                let label = msg.get(at..=at + usize::from(n))?;
                let out = name.get_mut(len..len + label.len())?;
                out.copy_from_slice(label);
                out.make_ascii_lowercase();
                len += label.len();
                if n == 0 {
                    h.write(&name[..len]);
                    return Some(end.unwrap_or(at + 1));
                }
                at += label.len();
            }
            0xC0 => {
                let lo = *msg.get(at + 1)?;
                end.get_or_insert(at + 2);
                hops += 1;
                if hops > 127 {
                    return None;
                }
                at = usize::from(u16::from_be_bytes([n & 0x3F, lo]));
            }
            _ => return None,
        }
    }
}

/// Feed what the SOA records of `msg`'s authority section say to `h`: each one's owner and its
/// data, names decompressed and in lower case, TTL left out. The same SOA gives the same feed
/// whatever the question it was compressed against, with no decoding and no allocation (a
/// negative answer's tag for the detector, on every miss). `None` when the message does not
/// walk.
pub fn hash_soa_records(msg: &[u8], h: &mut dyn std::hash::Hasher) -> Option<()> {
    let ([_, an, ns, _], mut r) = past_questions(msg)?;
    for _ in 0..an {
        skip_record(&mut r)?;
    }
    for _ in 0..ns {
        let owner = r.pos;
        r.skip_name()?;
        let rtype = r.u16()?;
        let class = r.u16()?;
        r.skip(4)?;
        let rdlen = usize::from(r.u16()?);
        let rdata = r.pos;
        r.skip(rdlen)?;
        if rtype != self::rtype::SOA {
            continue;
        }
        feed_name(msg, owner, h)?;
        h.write_u16(class);
        let after_mname = feed_name(msg, rdata, h)?;
        let after_rname = feed_name(msg, after_mname, h)?;
        // Serial, refresh, retry, expire, minimum: what is left of the record's data, with
        // its length, so no two SOAs feed the same bytes.
        let rest = msg.get(after_rname..rdata + rdlen)?;
        h.write_usize(rest.len());
        h.write(rest);
    }
    Some(())
}

/// Header flag bits.
mod flag {
    pub const QR: u16 = 0x8000;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const CD: u16 = 0x0010;
}

/// Start an answer to `q`: header (counts zero but QDCOUNT=1) and the client's question.
#[must_use]
pub fn start_response(q: &Query<'_>, rcode: u8, authoritative: bool) -> Vec<u8> {
    let mut out = reply_buffer(HEADER_LEN + q.question.len() + 64);
    let mut flags = flag::QR | flag::RA | u16::from(rcode & 0x0F);
    if q.rd {
        flags |= flag::RD;
    }
    if q.cd {
        flags |= flag::CD;
    }
    if authoritative {
        flags |= flag::AA;
    }
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(q.question);
    out
}

/// Bytes of our OPT record without options ([`push_opt`]).
const OPT_RECORD_LEN: usize = 11;

/// Bytes of the COOKIE option we send: its code and length, 8 bytes of client cookie and 16 of
/// server cookie ([`push_cookie_option`]).
const COOKIE_OPTION_LEN: usize = 4 + 8 + 16;

/// Append a COOKIE option (client and server cookie) to the options of the OPT record that
/// ends `msg`; the caller sets the record's RDLEN.
fn push_cookie_option(msg: &mut Vec<u8>, client: &[u8; 8], server: &[u8; 16]) {
    msg.extend_from_slice(&OPTION_COOKIE.to_be_bytes());
    msg.extend_from_slice(&((COOKIE_OPTION_LEN - 4) as u16).to_be_bytes());
    msg.extend_from_slice(client);
    msg.extend_from_slice(server);
}

/// The COOKIE of a cookie-only query (RFC 7873 §5.4: no question, no records but an OPT
/// record at the root carrying a well-formed COOKIE option), a client asking only for a server
/// cookie; `None` for anything else.
#[must_use]
pub fn cookie_only_query(packet: &[u8]) -> Option<(Cookie, bool)> {
    let header = packet.get(..HEADER_LEN)?;
    // A query (QR clear), opcode QUERY, QDCOUNT = ANCOUNT = NSCOUNT = 0, ARCOUNT = 1.
    if header[2] & 0xF8 != 0 || header[4..12] != [0, 0, 0, 0, 0, 0, 0, 1] {
        return None;
    }
    let mut r = Reader {
        buf: packet,
        pos: HEADER_LEN,
    };
    let (Some(0), Some(rtype::OPT), Some(_), Some(ttl), Some(rdlen)) =
        (r.u8(), r.u16(), r.u16(), r.u32(), r.u16())
    else {
        return None;
    };
    let options = packet.get(r.pos..r.pos + usize::from(rdlen))?;
    if r.pos + usize::from(rdlen) != packet.len() || (ttl >> 16) & 0xFF != 0 {
        return None;
    }
    let cookie = read_options(options).ok()?.cookie?;
    Some((cookie, ttl & 0x8000 != 0))
}

/// The answer to a cookie-only query: NOERROR, no question, our OPT record with the client's
/// cookie and `server` (RFC 7873 §5.4), its ID and RD as asked.
#[must_use]
pub fn cookie_only_answer(
    packet: &[u8],
    client: &Cookie,
    dnssec_ok: bool,
    server: &[u8; 16],
) -> Vec<u8> {
    let mut out = reply_buffer(HEADER_LEN + OPT_RECORD_LEN + COOKIE_OPTION_LEN);
    out.extend_from_slice(&packet[..2]);
    out.push(0x80 | (packet[2] & 0x01));
    out.push(0x80);
    out.extend_from_slice(&[0; 8]);
    push_opt(&mut out, dnssec_ok, 0);
    let rdlen_at = out.len() - 2;
    push_cookie_option(&mut out, &client.client, server);
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&(COOKIE_OPTION_LEN as u16).to_be_bytes());
    out
}

/// The answer to a packet that is not a query dnsward serves (FORMERR, NOTIMP, REFUSED for a
/// NOTIFY): the header, the question when there is one plain question to echo, and an OPT
/// record when the query had one. RA is set when `recursion_available` (the sender is a client
/// of ours: recursion is available to it, whatever this packet was), as on every other answer.
///
/// Returns `None` when the packet is too short or is a response: those get no answer.
#[must_use]
pub fn header_only_error(packet: &[u8], rcode: u8, recursion_available: bool) -> Option<Vec<u8>> {
    if packet.len() < HEADER_LEN || packet[2] & 0x80 != 0 {
        return None;
    }
    let mut out = packet[..HEADER_LEN].to_vec();
    // Keep opcode and RD; set QR; clear AA, TC, Z, AD, CD; RA as the client's; set rcode.
    out[2] = (packet[2] & 0x79) | 0x80;
    out[3] = (rcode & 0x0F) | if recursion_available { 0x80 } else { 0 };
    out[4..12].fill(0);
    // What can be read of the rest: one plain question is echoed (as Unbound and BIND do for
    // NOTIMP and most FORMERRs), and a query with an OPT record gets ours (RFC 6891 §6.1.1),
    // also when that OPT record is what is wrong (outside the additional section, not owned by
    // the root, a second one, options that overrun it): RFC 6891 §7 has a FORMERR about the
    // OPT record itself carry one, so the client can tell it from a server without EDNS.
    let readable = readable_parts(packet);
    if let Some(end) = readable.question_end {
        out.extend_from_slice(&packet[HEADER_LEN..end]);
        out[5] = 1;
    }
    if let Some(dnssec_ok) = readable.opt_dnssec_ok {
        push_opt(&mut out, dnssec_ok, 0);
    }
    Some(out)
}

/// What [`header_only_error`] can read of a packet it answers.
struct ReadableParts {
    /// Where the question ends, when there is exactly one, uncompressed and complete.
    question_end: Option<usize>,
    /// The DO bit of the query's first OPT record, wherever it is and whoever owns it, when
    /// the records up to its type and TTL can be walked.
    opt_dnssec_ok: Option<bool>,
}

fn readable_parts(packet: &[u8]) -> ReadableParts {
    let mut out = ReadableParts {
        question_end: None,
        opt_dnssec_ok: None,
    };
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    let mut r = Reader {
        buf: packet,
        pos: HEADER_LEN,
    };
    for i in 0..count(4) {
        // Labels only: a compressed or extended label in a question is not echoed.
        loop {
            match r.u8() {
                Some(0) => break,
                Some(len) if len & 0xC0 == 0 && r.skip(usize::from(len)).is_some() => {}
                _ => return out,
            }
        }
        if r.skip(4).is_none() || r.pos - HEADER_LEN > 255 + 4 {
            return out;
        }
        if i == 0 && count(4) == 1 {
            out.question_end = Some(r.pos);
        }
    }
    let records = u32::from(count(6)) + u32::from(count(8)) + u32::from(count(10));
    for _ in 0..records {
        if r.skip_name().is_none() {
            return out;
        }
        let (Some(rtype), Some(_), Some(ttl), Some(rdlen)) = (r.u16(), r.u16(), r.u32(), r.u16())
        else {
            return out;
        };
        if rtype == rtype::OPT && out.opt_dnssec_ok.is_none() {
            out.opt_dnssec_ok = Some(ttl & 0x8000 != 0);
        }
        if r.skip(usize::from(rdlen)).is_none() {
            return out;
        }
    }
    out
}

/// Append an answer record whose owner is the question name (compression pointer to offset 12).
pub fn push_answer_for_qname(out: &mut Vec<u8>, rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    let len = u16::try_from(rdata.len()).unwrap_or(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&rdata[..usize::from(len)]);
    bump_count(out, 6);
}

/// The SOA a synthesised negative answer (a policy block's NXDOMAIN, a sinkhole's NODATA)
/// carries in its authority section, so that stubs and forwarders in front of dnsward cache it
/// for `ttl` (RFC 2308 §5: without an SOA a negative answer is not cached at all). Owned by the
/// question name, as AdGuard Home's are; MNAME and RNAME under `.invalid` (RFC 6761) say no
/// real zone is behind it. Call after the answer section (there is none in these answers).
pub fn push_negative_soa(out: &mut Vec<u8>, ttl: u32) {
    // MNAME dnsward.invalid., RNAME hostmaster.dnsward.invalid. (uncompressed: the RDATA is
    // then the same bytes for every answer but its last field), SERIAL 1, REFRESH 1800,
    // RETRY 900, EXPIRE 604800; MINIMUM is the TTL.
    const FIXED: &[u8] = b"\x07dnsward\x07invalid\x00\x0ahostmaster\x07dnsward\x07invalid\x00\
        \x00\x00\x00\x01\x00\x00\x07\x08\x00\x00\x03\x84\x00\x09\x3a\x80";
    const RDLEN: u16 = FIXED.len() as u16 + 4;
    out.extend_from_slice(&[0xC0, 0x0C, 0, 6, 0, 1]);
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&RDLEN.to_be_bytes());
    out.extend_from_slice(FIXED);
    out.extend_from_slice(&ttl.to_be_bytes());
    bump_count(out, 8);
}

/// An A record for the question name.
pub fn push_a(out: &mut Vec<u8>, ttl: u32, addr: Ipv4Addr) {
    push_answer_for_qname(out, rtype::A, ttl, &addr.octets());
}

/// An AAAA record for the question name.
pub fn push_aaaa(out: &mut Vec<u8>, ttl: u32, addr: Ipv6Addr) {
    push_answer_for_qname(out, rtype::AAAA, ttl, &addr.octets());
}

fn bump_count(out: &mut [u8], at: usize) {
    let n = u16::from_be_bytes([out[at], out[at + 1]]).saturating_add(1);
    out[at..at + 2].copy_from_slice(&n.to_be_bytes());
}

/// Where the authority section of an encoded message ends (the additional section starts),
/// `None` when the message is malformed.
fn additional_start(msg: &[u8]) -> Option<usize> {
    let ([_, an, ns, _], mut r) = past_questions(msg)?;
    for _ in 0..u32::from(an) + u32::from(ns) {
        r.skip_name()?;
        r.skip(8)?;
        let rdlen = r.u16()?;
        r.skip(usize::from(rdlen))?;
    }
    Some(r.pos)
}

/// Cut `msg` back to the whole records that end within `limit` bytes: a record past it, or one
/// that does not parse to its end (the partial record an encoder left when it ran out of
/// room), is dropped with every record after it, and the section counts are rewritten to what
/// is kept. True when a record was dropped (the caller sets TC); false, and `msg` unchanged,
/// when every record fits. `None` when the header or question does not parse.
pub fn keep_whole_records(msg: &mut Vec<u8>, limit: usize) -> Option<bool> {
    let ([_, an, ns, ar], mut r) = past_questions(msg)?;
    if r.pos > limit {
        return None;
    }
    let mut kept = [0u16; 3];
    let mut end = r.pos;
    let mut whole = true;
    'sections: for (i, n) in [an, ns, ar].into_iter().enumerate() {
        for _ in 0..n {
            if skip_record(&mut r).is_none() || r.pos > limit {
                whole = false;
                break 'sections;
            }
            kept[i] += 1;
            end = r.pos;
        }
    }
    if whole && end == msg.len() {
        return Some(false);
    }
    msg.truncate(end);
    for (i, at) in [6, 8, 10].into_iter().enumerate() {
        msg[at..at + 2].copy_from_slice(&kept[i].to_be_bytes());
    }
    Some(!whole)
}

/// Finish an answer for `q` in place: patch the ID, RD/CD and question case, append our OPT
/// record if the client used EDNS, and make it fit `max_len`: additional records (glue) go
/// first, without TC (RFC 2181 §9: they are not needed to answer); only when the answer and
/// authority sections alone do not fit is it truncated to the question with TC.
///
/// `msg` must start with a header and the same question as `q` (any case).
pub fn finish_response(msg: &mut Vec<u8>, q: &Query<'_>, max_len: usize) {
    finish_response_with(msg, q, max_len, None);
}

/// [`finish_response`], with an Extended DNS Error in the OPT record when the client used EDNS.
pub fn finish_response_with(msg: &mut Vec<u8>, q: &Query<'_>, max_len: usize, ede: Option<Ede>) {
    if msg.len() < HEADER_LEN + q.question.len() {
        return;
    }
    msg[0..2].copy_from_slice(&q.id.to_be_bytes());
    let mut flags = u16::from_be_bytes([msg[2], msg[3]]) | flag::QR;
    flags = (flags & !(flag::RD | flag::CD))
        | if q.rd { flag::RD } else { 0 }
        | if q.cd { flag::CD } else { 0 };
    msg[2..4].copy_from_slice(&flags.to_be_bytes());
    msg[HEADER_LEN..HEADER_LEN + q.question.len()].copy_from_slice(q.question);
    let cookie = q.edns.and_then(|e| e.cookie).zip(q.response_cookie);
    let ede = ede.filter(|_| q.edns.is_some());
    let keepalive = q.keepalive_response.filter(|_| q.edns.is_some());
    let opt_len = match (q.edns, cookie) {
        (None, _) => 0,
        (Some(_), None) => OPT_RECORD_LEN,
        (Some(_), Some(_)) => OPT_RECORD_LEN + COOKIE_OPTION_LEN,
    } + ede.map_or(0, |e| 6 + e.text.len())
        + keepalive.map_or(0, |_| 6);
    // The server identifier is a courtesy: left out of an answer it would not fit in whole,
    // rather than costing the answer its records.
    let nsid = q
        .nsid_response
        .filter(|n| q.edns.is_some() && msg.len() + opt_len + 4 + n.len() <= max_len);
    let opt_len = opt_len + nsid.map_or(0, |n| 4 + n.len());
    if msg.len() + opt_len > max_len
        && let Some(end) = additional_start(msg).filter(|end| end + opt_len <= max_len)
    {
        msg.truncate(end);
        msg[10..12].fill(0);
    }
    // Over a stream (64 KiB) there is no larger transport to retry on: the records that fit,
    // with TC. Over UDP the question alone, with TC: the client asks again over TCP.
    if msg.len() + opt_len > max_len
        && max_len >= usize::from(u16::MAX)
        && keep_whole_records(msg, max_len - opt_len) == Some(true)
    {
        let flags = u16::from_be_bytes([msg[2], msg[3]]) | flag::TC;
        msg[2..4].copy_from_slice(&flags.to_be_bytes());
    }
    if msg.len() + opt_len > max_len {
        msg.truncate(HEADER_LEN + q.question.len());
        let flags = u16::from_be_bytes([msg[2], msg[3]]) | flag::TC;
        msg[2..4].copy_from_slice(&flags.to_be_bytes());
        msg[6..12].fill(0);
    }
    if let Some(edns) = q.edns {
        push_opt(msg, edns.dnssec_ok, 0);
        // The OPT record just pushed ends with a zero RDLEN: options go after it.
        let rdlen_at = msg.len() - 2;
        if let Some((client, server)) = cookie {
            push_cookie_option(msg, &client.client, &server);
        }
        if let Some(timeout) = keepalive {
            msg.extend_from_slice(&OPTION_TCP_KEEPALIVE.to_be_bytes());
            msg.extend_from_slice(&2u16.to_be_bytes());
            msg.extend_from_slice(&timeout.to_be_bytes());
        }
        if let Some(id) = nsid {
            msg.extend_from_slice(&OPTION_NSID.to_be_bytes());
            msg.extend_from_slice(&u16::try_from(id.len()).unwrap_or(0).to_be_bytes());
            msg.extend_from_slice(id);
        }
        if let Some(e) = ede {
            msg.extend_from_slice(&OPTION_EDE.to_be_bytes());
            msg.extend_from_slice(&u16::try_from(2 + e.text.len()).unwrap_or(2).to_be_bytes());
            msg.extend_from_slice(&e.code.to_be_bytes());
            msg.extend_from_slice(e.text.as_bytes());
        }
        // RFC 7830 §4 / RFC 8467 §4.1: the whole answer to a multiple of the block, as far as
        // the client's limit allows.
        if q.pad_response && msg.len() + 4 <= max_len {
            let block = RESPONSE_PADDING_BLOCK;
            let want = (msg.len() + 4).div_ceil(block) * block;
            let pad = want.min(max_len) - msg.len() - 4;
            msg.extend_from_slice(&OPTION_PADDING.to_be_bytes());
            msg.extend_from_slice(&u16::try_from(pad).unwrap_or(0).to_be_bytes());
            msg.resize(msg.len() + pad, 0);
        }
        let rdlen = u16::try_from(msg.len() - rdlen_at - 2).unwrap_or(u16::MAX);
        msg[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }
}

/// Clear an answer's RA flag: recursion is not available to its client.
pub fn clear_recursion_available(msg: &mut [u8]) {
    if let Some(b) = msg.get_mut(3) {
        *b &= !((flag::RA & 0xFF) as u8);
    }
}

/// Give a finished answer the extended rcode `code` (RFC 6891 §6.1.3): its low 4 bits go in the
/// header, the high 8 bits in the OPT record's TTL. Returns `false`, changing nothing, when
/// `code` needs the OPT record and the message has none (or is malformed).
pub fn set_extended_rcode(msg: &mut [u8], code: u16) -> bool {
    let high = u8::try_from(code >> 4).unwrap_or(u8::MAX);
    let opt_ttl_at = if high == 0 {
        None
    } else {
        match opt_ttl_offset(msg) {
            Some(at) => Some(at),
            None => return false,
        }
    };
    let Some(flags) = msg.get_mut(3) else {
        return false;
    };
    *flags = (*flags & 0xF0) | (code & 0x0F) as u8;
    if let Some(at) = opt_ttl_at {
        msg[at] = high;
    }
    true
}

/// Offset of the OPT record's TTL (whose first byte is the extended rcode) in a message.
fn opt_ttl_offset(msg: &[u8]) -> Option<usize> {
    let ([_, an, ns, ar], mut r) = past_questions(msg)?;
    for _ in 0..u32::from(an) + u32::from(ns) + u32::from(ar) {
        r.skip_name()?;
        let rtype = r.u16()?;
        r.skip(2)?;
        let ttl_at = r.pos;
        r.skip(4)?;
        let rdlen = r.u16()?;
        r.skip(usize::from(rdlen))?;
        if rtype == rtype::OPT {
            return Some(ttl_at);
        }
    }
    None
}

/// The rcode of an answer including the OPT record's extended bits (BADVERS is 16).
#[must_use]
pub fn extended_rcode(msg: &[u8]) -> u16 {
    let high = opt_ttl_offset(msg)
        .and_then(|at| msg.get(at))
        .map_or(0, |b| u16::from(*b));
    (high << 4) | u16::from(rcode_of(msg))
}

/// Append our OPT record (payload size [`EDNS_UDP_SIZE`]) with the given extended rcode bits.
pub fn push_opt(msg: &mut Vec<u8>, dnssec_ok: bool, ext_rcode: u8) {
    msg.push(0);
    msg.extend_from_slice(&rtype::OPT.to_be_bytes());
    msg.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    msg.push(ext_rcode);
    msg.push(0); // version 0
    msg.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    msg.extend_from_slice(&0u16.to_be_bytes());
    bump_count(msg, 10);
}

/// The targets of the CNAME records among `records`, in [`name_text`]'s form (what the policy
/// and the answer check compare).
pub fn cname_targets(records: &[hickory_proto::rr::Record]) -> impl Iterator<Item = Box<str>> + '_ {
    records.iter().filter_map(|r| match &r.data {
        hickory_proto::rr::RData::CNAME(c) => Some(name_text(&c.0).into_boxed_str()),
        _ => None,
    })
}

/// A host name an SRV or MX record points at, with the record's other fields packed (SRV
/// priority, weight and port; MX preference): what the detector prices of such an answer, as it
/// prices the addresses of an A answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostTarget {
    /// The target, presentation form.
    pub name: Box<str>,
    /// The record's other fields, packed.
    pub fields: u64,
    /// Bits those fields take (48 for SRV, 16 for MX, none for PTR).
    pub field_bits: u8,
}

/// The SRV, MX and PTR targets in `records` (an answer section).
pub fn host_targets(
    records: &[hickory_proto::rr::Record],
) -> impl Iterator<Item = HostTarget> + '_ {
    records.iter().filter_map(|r| match &r.data {
        hickory_proto::rr::RData::SRV(srv) => Some(HostTarget {
            name: name_text(&srv.target).into_boxed_str(),
            fields: u64::from(srv.priority) << 32
                | u64::from(srv.weight) << 16
                | u64::from(srv.port),
            field_bits: 48,
        }),
        hickory_proto::rr::RData::MX(mx) => Some(HostTarget {
            name: name_text(&mx.exchange).into_boxed_str(),
            fields: u64::from(mx.preference),
            field_bits: 16,
        }),
        hickory_proto::rr::RData::PTR(ptr) => Some(HostTarget {
            name: name_text(&ptr.0).into_boxed_str(),
            fields: 0,
            field_bits: 0,
        }),
        _ => None,
    })
}

/// Encode a forwarding query for `name` (the client's question bytes reused) with a fresh ID.
#[must_use]
pub fn encode_upstream_query(id: u16, question: &[u8], dnssec_ok: bool, cd: bool) -> Vec<u8> {
    encode_upstream_query_as(id, question, dnssec_ok, cd, true)
}

/// [`encode_upstream_query`], with no OPT record when `edns` is false: the retry for a server
/// that answers EDNS with FORMERR ([`rejects_edns`], RFC 6891 §7). DO needs EDNS, so it goes.
#[must_use]
pub fn encode_upstream_query_as(
    id: u16,
    question: &[u8],
    dnssec_ok: bool,
    cd: bool,
    edns: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + question.len() + 11);
    out.extend_from_slice(&id.to_be_bytes());
    let flags = flag::RD | if cd { flag::CD } else { 0 };
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if edns {
        push_opt(&mut out, dnssec_ok, 0);
    }
    out
}

/// Whether `answer`, to a query with an OPT record, is a FORMERR with none: the mark of a
/// server that does not know EDNS, which RFC 6891 §7 has the requester ask again without it.
#[must_use]
pub fn rejects_edns(answer: &[u8]) -> bool {
    answer.len() >= HEADER_LEN
        && rcode_of(answer) == rcode::FORMERR
        && u16::from_be_bytes([answer[10], answer[11]]) == 0
}

/// Longest question section: a 255-byte name, type and class.
pub const MAX_QUESTION: usize = 255 + 4;

/// `question` (a question section: name, type, class) with its name's ASCII letters in lower
/// case, in `buf`; `None` when it is longer than [`MAX_QUESTION`].
///
/// The case of a name's letters is the client's to choose and carries nothing a resolver needs
/// (RFC 4343): forwarded as sent, it is a channel to the authority, one bit per letter, that
/// the tunnel detector (which prices names case-folded) does not see.
#[must_use]
pub fn lowercased_question<'b>(
    question: &[u8],
    buf: &'b mut [u8; MAX_QUESTION],
) -> Option<&'b [u8]> {
    let out = buf.get_mut(..question.len())?;
    out.copy_from_slice(question);
    lowercase_name(out);
    Some(out)
}

/// Lower-cases the ASCII letters of the uncompressed name at the start of `buf`, label by
/// label (length bytes, a compression pointer and what follows the name are left alone).
fn lowercase_name(buf: &mut [u8]) {
    let mut at = 0;
    while let Some(&len) = buf.get(at) {
        if len == 0 || len & 0xC0 != 0 {
            return;
        }
        let end = (at + 1 + usize::from(len)).min(buf.len());
        buf[at + 1..end].make_ascii_lowercase();
        at = end;
    }
}

/// The question section of a message (name, type, class), if well-formed.
#[must_use]
pub fn question_of(msg: &[u8]) -> Option<&[u8]> {
    if msg.len() < HEADER_LEN || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut r = Reader {
        buf: msg,
        pos: HEADER_LEN,
    };
    r.skip_name()?;
    r.skip(4)?;
    msg.get(HEADER_LEN..r.pos)
}

/// Case-insensitive comparison of two question sections.
#[must_use]
pub fn same_question(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b)
}

/// The rcode (4 bits) of a message header.
#[must_use]
pub fn rcode_of(msg: &[u8]) -> u8 {
    msg.get(3).map_or(0, |b| b & 0x0F)
}

/// Whether a stream frame (TCP, DoT) can be a query at all: a whole header, QR clear. Anything
/// else (an empty frame, a stray byte, a response) is a peer that does not speak DNS over that
/// stream, and the connection ends, as in Unbound; answering nothing and reading on would let
/// such frames hold the connection open past its idle timeout forever.
#[must_use]
pub fn is_query_frame(frame: &[u8]) -> bool {
    frame.len() >= HEADER_LEN && frame[2] & 0x80 == 0
}

/// Whether the TC bit is set.
#[must_use]
pub fn is_truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// The answer count of a message header.
#[must_use]
pub fn answer_count(msg: &[u8]) -> u16 {
    if msg.len() < HEADER_LEN {
        return 0;
    }
    u16::from_be_bytes([msg[6], msg[7]])
}

/// The mnemonic of a record type, e.g. `A`, `TXT`, `TYPE65399`.
#[must_use]
pub fn type_name(qtype: u16) -> String {
    // Meta types hickory has no name for.
    match qtype {
        rtype::MAILB => return "MAILB".to_string(),
        rtype::MAILA => return "MAILA".to_string(),
        rtype::TKEY => return "TKEY".to_string(),
        _ => {}
    }
    let rt = hickory_proto::rr::RecordType::from(qtype);
    match rt {
        hickory_proto::rr::RecordType::Unknown(n) => format!("TYPE{n}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn query_bytes(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut out = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        if let Some(size) = edns {
            out.push(0);
            out.extend_from_slice(&rtype::OPT.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
            out[11] = 1;
        }
        out
    }

    /// A negative answer to `qname` with `authority` (records already encoded) after it.
    fn negative_with(qname: &str, authority: &[&[u8]]) -> Vec<u8> {
        let mut msg = query_bytes(qname, rtype::A, None);
        msg[2] = 0x81;
        msg[3] = 0x83;
        msg[9] = u8::try_from(authority.len()).unwrap();
        for record in authority {
            msg.extend_from_slice(record);
        }
        msg
    }

    /// An SOA record: `owner`, `mname` and `rname` as wire names (compressed or not).
    fn soa_record(owner: &[u8], mname: &[u8], rname: &[u8], serial: u32, ttl: u32) -> Vec<u8> {
        let mut rdata = [mname, rname].concat();
        for v in [serial, 3600, 600, 86400, 60] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        let mut out = owner.to_vec();
        out.extend_from_slice(&rtype::SOA.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&rdata);
        out
    }

    fn soa_tag(msg: &[u8]) -> Option<u64> {
        let mut h = std::hash::DefaultHasher::new();
        hash_soa_records(msg, &mut h)?;
        Some(std::hash::Hasher::finish(&h))
    }

    /// The SOA's tag is what it says: the same whatever the question it was compressed
    /// against, its names' case or its TTL; another serial or another name is another tag; an
    /// NS record beside it adds nothing; a pointer loop or a cut record does not walk.
    #[test]
    fn an_soa_tag_is_its_names_and_numbers_however_encoded() {
        let plain = |name: &str| {
            let mut out = Vec::new();
            for l in name.split('.') {
                out.push(u8::try_from(l.len()).unwrap());
                out.extend_from_slice(l.as_bytes());
            }
            out.push(0);
            out
        };
        let (zone, ns, host) = (
            plain("example.com"),
            plain("ns.example.com"),
            plain("host.example.com"),
        );
        let uncompressed = negative_with("a.example.com", &[&soa_record(&zone, &ns, &host, 7, 60)]);
        // The owner points at the question's "example.com" (offset 12 + 2), the names at it.
        let mut ns_c = vec![2, b'n', b's', 0xC0, 14];
        let host_c = [4, b'h', b'o', b's', b't', 0xC0, 14];
        let compressed = negative_with(
            "b.example.com",
            &[&soa_record(&[0xC0, 14], &ns_c, &host_c, 7, 3600)],
        );
        let upper = negative_with(
            "c.example.com",
            &[&soa_record(
                &plain("EXAMPLE.com"),
                &plain("NS.example.COM"),
                &host,
                7,
                60,
            )],
        );
        let tag = soa_tag(&uncompressed).unwrap();
        assert_eq!(soa_tag(&compressed), Some(tag));
        assert_eq!(soa_tag(&upper), Some(tag));
        let serial = negative_with("a.example.com", &[&soa_record(&zone, &ns, &host, 8, 60)]);
        assert_ne!(soa_tag(&serial), Some(tag));
        let other_rname = negative_with(
            "a.example.com",
            &[&soa_record(
                &zone,
                &ns,
                &plain("data1234.example.com"),
                7,
                60,
            )],
        );
        assert_ne!(soa_tag(&other_rname), Some(tag));
        let mut ns_record = zone.clone();
        ns_record.extend_from_slice(&rtype::NS.to_be_bytes());
        ns_record.extend_from_slice(&[0, 1, 0, 0, 0, 60, 0, u8::try_from(ns.len()).unwrap()]);
        ns_record.extend_from_slice(&ns);
        let with_ns = negative_with(
            "a.example.com",
            &[&ns_record, &soa_record(&zone, &ns, &host, 7, 60)],
        );
        assert_eq!(soa_tag(&with_ns), Some(tag));
        // mname's pointer aimed at itself (it starts at the record's rdata).
        let at = compressed.len() - 20 - host_c.len() - ns_c.len() + 3;
        ns_c[4] = u8::try_from(at).unwrap();
        let looped = negative_with(
            "b.example.com",
            &[&soa_record(&[0xC0, 14], &ns_c, &host_c, 7, 3600)],
        );
        assert_eq!(soa_tag(&looped), None);
        assert_eq!(soa_tag(&uncompressed[..uncompressed.len() - 1]), None);
    }

    /// A lower-cased question is the client's with the name's letters folded: type and class
    /// bytes that happen to be ASCII letters (type 0x0041 is 'A') and the label lengths stay.
    #[test]
    fn lowercased_questions_fold_the_name_and_nothing_else() {
        let client = query_bytes("WwW.ExAmPlE.CoM", 0x4142, None);
        let question = &client[HEADER_LEN..];
        let mut buf = [0; MAX_QUESTION];
        let folded = lowercased_question(question, &mut buf).unwrap();
        let want = query_bytes("www.example.com", 0x4142, None);
        assert_eq!(folded, &want[HEADER_LEN..]);
        assert!(lowercased_question(&[1; MAX_QUESTION + 1], &mut buf).is_none());
        // A compression pointer ends the name: nothing after it is touched.
        let mut odd = vec![1, b'X', 0xC0, b'A', 0, b'Z'];
        lowercase_name(&mut odd);
        assert_eq!(odd, [1, b'x', 0xC0, b'A', 0, b'Z']);
        // A length running past the end stops at the end.
        let mut short = vec![9, b'A', b'B'];
        lowercase_name(&mut short);
        assert_eq!(short, [9, b'a', b'b']);
    }

    /// A query with an OPT record carrying `option` (code, data).
    fn query_with_option(code: u16, data: &[u8]) -> Vec<u8> {
        let mut p = query_bytes("www.example.com", rtype::A, Some(1232));
        let len = u16::try_from(data.len() + 4).unwrap();
        let at = p.len() - 2;
        p[at..].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn padded_answers_fill_468_byte_blocks_within_the_limit() {
        let p = query_with_option(OPTION_PADDING, &[0; 40]);
        let mut q = parse_query(&p).unwrap();
        assert!(q.edns.unwrap().padding);
        q.pad_response = true;
        for (limit, want) in [(65_535, 468), (400, 400)] {
            let mut answer = start_response(&q, rcode::NOERROR, false);
            push_a(&mut answer, 60, Ipv4Addr::LOCALHOST);
            finish_response(&mut answer, &q, limit);
            assert_eq!(answer.len(), want, "limit {limit}");
            let m = hickory_proto::op::Message::from_vec(&answer).unwrap();
            assert_eq!(m.answers.len(), 1);
        }
        assert!(
            !parse_query(&query_with_option(3, b"nsid"))
                .unwrap()
                .edns
                .unwrap()
                .padding
        );
    }

    #[test]
    fn cookies_are_parsed_checked_and_echoed() {
        let client = [1, 2, 3, 4, 5, 6, 7, 8];
        let p = query_with_option(OPTION_COOKIE, &client);
        let mut q = parse_query(&p).unwrap();
        let c = q.edns.unwrap().cookie.unwrap();
        assert_eq!(c.client, client);
        assert_eq!(c.server(), None);
        let mut with_server = client.to_vec();
        with_server.extend_from_slice(&[9; 16]);
        let p2 = query_with_option(OPTION_COOKIE, &with_server);
        let q2 = parse_query(&p2).unwrap();
        assert_eq!(
            q2.edns.unwrap().cookie.unwrap().server(),
            Some(&[9u8; 16][..])
        );
        for bad in [&[1u8, 2, 3][..], &[0; 12][..], &[0; 41][..]] {
            assert!(
                matches!(
                    parse_query(&query_with_option(OPTION_COOKIE, bad)),
                    Err(WireError::FormErr(_))
                ),
                "{} bytes",
                bad.len()
            );
        }
        // Other options are skipped; a truncated option list is a format error.
        assert!(
            parse_query(&query_with_option(3, b"nsid"))
                .unwrap()
                .edns
                .unwrap()
                .cookie
                .is_none()
        );
        let mut torn = query_with_option(3, b"nsid");
        let at = torn.len() - 6;
        torn[at..at + 2].copy_from_slice(&99u16.to_be_bytes());
        assert!(parse_query(&torn).is_err());
        // The answer carries the client cookie and our server cookie.
        q.response_cookie = Some([0xAB; 16]);
        let mut answer = start_response(&q, rcode::NOERROR, false);
        finish_response(&mut answer, &q, 4096);
        let m = hickory_proto::op::Message::from_vec(&answer).expect("a well-formed answer");
        assert!(m.edns.is_some(), "OPT in the answer");
        let tail = &answer[answer.len() - 28..];
        assert_eq!(&tail[..4], &[0, 10, 0, 24], "COOKIE option header");
        assert_eq!(&tail[4..12], &client);
        assert_eq!(&tail[12..], &[0xAB; 16]);
    }

    #[test]
    fn parses_a_plain_query() {
        let p = query_bytes("WWW.Example.COM", rtype::A, None);
        let q = parse_query(&p).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.rd);
        assert_eq!(q.name, "www.example.com");
        assert_eq!(q.label_count, 3);
        assert_eq!(q.qtype, rtype::A);
        assert_eq!(q.edns, None);
        assert_eq!(q.max_udp_payload(), 512);
    }

    #[test]
    fn parses_edns_and_caps_the_payload_size() {
        let p = query_bytes("example.com", rtype::TXT, Some(4096));
        let q = parse_query(&p).unwrap();
        let e = q.edns.unwrap();
        assert_eq!(e.udp_size, 4096);
        assert!(e.dnssec_ok);
        assert_eq!(q.max_udp_payload(), 1232);
    }

    #[test]
    fn escapes_odd_bytes_so_a_dotted_label_is_not_two_labels() {
        let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.push(7);
        p.extend_from_slice(b"a.b\xffcom");
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        let q = parse_query(&p).unwrap();
        assert_eq!(q.name, "a\\046b\\255com");
        assert_eq!(q.label_count, 1);
    }

    #[test]
    fn a_question_name_reads_the_same_as_built_label_by_label() {
        // The one-pass reading of the question name against `push_label` per label, over
        // names of every shape: label lengths 1–63 (a length byte that is itself a digit or
        // `-` included), upper case, bytes to escape anywhere, one label, the root.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"aZ09-_xY.";
        for case in 0..5000 {
            let mut wire = Vec::new();
            let mut labels: Vec<Vec<u8>> = Vec::new();
            let count = if case == 0 { 0 } else { 1 + next() % 5 };
            for _ in 0..count {
                let len = 1 + usize::try_from(next() % 63).unwrap();
                let label: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        if case % 3 == 0 && r % 40 == 0 {
                            u8::try_from(r >> 8 & 0xFF).unwrap()
                        } else {
                            alphabet[usize::try_from(r % 8).unwrap()]
                        }
                    })
                    .collect();
                if wire.len() + 1 + label.len() >= 255 {
                    break;
                }
                wire.push(u8::try_from(len).unwrap());
                wire.extend_from_slice(&label);
                labels.push(label);
            }
            wire.push(0);
            let mut packet = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            packet.extend_from_slice(&wire);
            packet.extend_from_slice(&[0, 1, 0, 1]);
            let q = parse_query(&packet).unwrap();
            let expect = name_from_labels(labels.iter().map(Vec::as_slice));
            assert_eq!(q.name, expect, "wire {wire:?}");
            assert_eq!(usize::from(q.label_count), labels.len());
        }
    }

    #[test]
    fn presentation_names_round_trip_every_byte() {
        // Every byte value, alone and inside a label, comes back from its escaped text.
        for b in 0..=255u8 {
            let label = [b'x', b, b'y'];
            let text = name_from_labels([&label[..]]);
            let (labels, absolute) = parse_name_text(&text).unwrap();
            assert_eq!(labels, [label.to_ascii_lowercase()], "byte {b}: {text}");
            assert!(!absolute);
        }
        let (labels, absolute) = parse_name_text("a\\.b.C\\092d.e\\000.").unwrap();
        assert_eq!(labels, [&b"a.b"[..], b"C\\d", b"e\0"]);
        assert!(absolute);
        // RFC 1035 decimal, not octal: \065 is 'A', \092 a backslash, \255 the top byte.
        assert_eq!(parse_name_text("dec\\065").unwrap().0, [b"decA".to_vec()]);
        assert_eq!(parse_name_text("\\255").unwrap().0, [vec![255]]);
        assert_eq!(parse_name_text(".").unwrap(), (Vec::new(), true));
        assert_eq!(parse_name_text("*.apps").unwrap().0[0], b"*");
    }

    #[test]
    fn malformed_presentation_names_say_why() {
        use NameTextError as E;
        for (text, want) in [
            ("q\\09", E::ShortEscape("09".into())),
            ("q\\9x", E::ShortEscape("9".into())),
            ("q\\256", E::EscapeTooLarge("256".into())),
            ("q\\", E::TrailingBackslash),
            ("a..b", E::EmptyLabel),
            (".a", E::EmptyLabel),
            ("caf\u{e9}", E::NotAscii('\u{e9}')),
        ] {
            assert_eq!(parse_name_text(text), Err(want), "{text:?}");
        }
        assert_eq!(
            parse_name_text(&"a".repeat(64)),
            Err(NameTextError::LabelTooLong)
        );
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(parse_name_text(&long), Err(NameTextError::NameTooLong));
        assert!(parse_name_text(&long[..long.len() - 2]).is_ok());
    }

    #[test]
    fn the_question_name_keeps_every_byte_of_its_labels() {
        let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in [&b"A.b\\\0\xff"[..], b"*", b"Corp"] {
            p.push(u8::try_from(label.len()).unwrap());
            p.extend_from_slice(label);
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        let q = parse_query(&p).unwrap();
        let name = question_name(&q).unwrap();
        let labels: Vec<&[u8]> = name.iter().collect();
        assert_eq!(labels, [&b"a.b\\\0\xff"[..], b"*", b"corp"]);
        assert!(name.is_fqdn());
        assert_eq!(
            name_text(&name),
            q.name,
            "the same presentation form as the parser's"
        );
        let root = query_bytes(".", rtype::NS, None);
        let q = parse_query(&root).unwrap();
        assert!(question_name(&q).unwrap().is_root());
    }

    #[test]
    fn rejects_what_is_not_a_query() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), WireError::TooShort);
        let mut p = query_bytes("example.com", 1, None);
        p[2] |= 0x80;
        assert_eq!(parse_query(&p).unwrap_err(), WireError::NotAQuery);
        let mut p = query_bytes("example.com", 1, None);
        p[2] |= 0x28; // opcode 5 (UPDATE)
        assert_eq!(parse_query(&p).unwrap_err(), WireError::NotImplemented(5));
        let mut p = query_bytes("example.com", 1, None);
        p[5] = 2;
        assert!(matches!(parse_query(&p), Err(WireError::FormErr(_))));
        let p = query_bytes("example.com", 1, None);
        assert!(matches!(
            parse_query(&p[..p.len() - 1]),
            Err(WireError::FormErr(_))
        ));
    }

    #[test]
    fn rejects_compression_in_the_question_and_overlong_names() {
        let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1];
        assert!(matches!(parse_query(&p), Err(WireError::FormErr(_))));
        p.truncate(12);
        for _ in 0..5 {
            p.push(63);
            p.extend_from_slice(&[b'a'; 63]);
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(matches!(parse_query(&p), Err(WireError::FormErr(_))));
    }

    /// An OPT record (root owner unless `owner` is given) with `version`, no options.
    fn opt_record(owner: &[u8], version: u8) -> Vec<u8> {
        let mut out = owner.to_vec();
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&1232u16.to_be_bytes());
        out.extend_from_slice(&[0, version, 0, 0, 0, 0]);
        out
    }

    #[test]
    fn an_opt_record_must_be_owned_by_the_root() {
        let mut p = query_bytes("example.com", 1, None);
        p[11] = 1;
        p.extend_from_slice(&opt_record(b"\x01x\x01y\0", 0));
        assert_eq!(
            parse_query(&p).unwrap_err(),
            WireError::FormErr("OPT record owner is not the root")
        );
        // A pointer to a non-root name (the question) is not the root either.
        let mut p = query_bytes("example.com", 1, None);
        p[11] = 1;
        p.extend_from_slice(&opt_record(&[0xC0, 12], 0));
        assert!(matches!(parse_query(&p), Err(WireError::FormErr(_))));
        // A pointer to the question name's final zero byte is the root, spelt oddly.
        let mut p = query_bytes("example.com", 1, None);
        let root_at: u8 = 12 + 13 - 1;
        p[11] = 1;
        p.extend_from_slice(&opt_record(&[0xC0, root_at], 0));
        assert!(parse_query(&p).unwrap().edns.is_some());
        // A pointer loop is not the root and does not hang.
        let mut p = query_bytes("example.com", 1, None);
        let at = u8::try_from(p.len()).unwrap();
        p[11] = 1;
        p.extend_from_slice(&opt_record(&[0xC0, at], 0));
        assert!(matches!(parse_query(&p), Err(WireError::FormErr(_))));
    }

    #[test]
    fn an_opt_record_outside_the_additional_section_is_a_format_error() {
        for (count_at, why) in [
            (7, "a query has no answer records"),
            (9, "authority records in a query other than IXFR"),
        ] {
            let mut p = query_bytes("example.com", 1, None);
            p[count_at] = 1;
            p.extend_from_slice(&opt_record(&[0], 0));
            assert_eq!(
                parse_query(&p).unwrap_err(),
                WireError::FormErr(why),
                "count at {count_at}"
            );
        }
        // An IXFR query carries the client's SOA there: parsed (then refused as a transfer);
        // an OPT there is still a format error.
        let mut p = query_bytes("example.com", 251, None);
        p[9] = 1;
        p.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_query(&p).unwrap().qtype, 251);
        let mut p = query_bytes("example.com", 251, None);
        p[9] = 1;
        p.extend_from_slice(&opt_record(&[0], 0));
        assert_eq!(
            parse_query(&p).unwrap_err(),
            WireError::FormErr("OPT record outside the additional section")
        );
    }

    /// What a query has no use for is FORMERR, as Unbound answers it: the TC bit, answer
    /// records, authority records (but IXFR's SOA), additional records other than OPT (TSIG and
    /// SIG(0) signatures included: not supported). The same query without them parses.
    #[test]
    fn sections_a_query_has_no_use_for_are_format_errors() {
        let a_record = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        let tsig = [&[0u8][..], &[0, 250, 0, 255, 0, 0, 0, 0, 0, 0]].concat();
        let sig0 = [&[0u8][..], &[0, 24, 0, 255, 0, 0, 0, 0, 0, 0]].concat();
        let with = |count_at: usize, tail: &[u8]| {
            let mut p = query_bytes("example.com", 1, None);
            p[count_at] = 1;
            p.extend_from_slice(tail);
            p
        };
        let mut tc = query_bytes("example.com", 1, None);
        tc[2] |= 0x02;
        for (what, p, why) in [
            ("TC", tc, "TC bit set in a query"),
            (
                "answer",
                with(7, &a_record),
                "a query has no answer records",
            ),
            (
                "authority",
                with(9, &a_record),
                "authority records in a query other than IXFR",
            ),
            (
                "additional A",
                with(11, &a_record),
                "an additional record other than OPT in a query",
            ),
            (
                "TSIG",
                with(11, &tsig),
                "signed queries (TSIG, SIG(0)) are not supported",
            ),
            (
                "SIG(0)",
                with(11, &sig0),
                "signed queries (TSIG, SIG(0)) are not supported",
            ),
        ] {
            assert_eq!(
                parse_query(&p).unwrap_err(),
                WireError::FormErr(why),
                "{what}"
            );
            // An error answer is still made for it: the question echoed, FORMERR.
            let r = header_only_error(&p, rcode::FORMERR, true).expect(what);
            assert_eq!(r[3] & 0x0F, rcode::FORMERR, "{what}");
            assert_eq!(&r[0..2], &p[0..2], "{what}: ID");
        }
        // The same query with only its OPT record parses, the other flags as they were.
        let mut fine = query_bytes("example.com", 1, Some(1232));
        fine[2] |= 0x04; // AA in a query: meaningless, ignored (Unbound answers it too)
        assert_eq!(parse_query(&fine).unwrap().qtype, 1);
    }

    #[test]
    fn badvers_is_split_between_the_header_and_the_opt_record() {
        let mut p = query_bytes("example.com", 1, None);
        p[11] = 1;
        p.extend_from_slice(&opt_record(&[0], 1));
        let mut q = parse_query(&p).unwrap();
        q.response_cookie = None;
        let mut r = start_response(&q, rcode::NOERROR, false);
        finish_response(&mut r, &q, 512);
        assert!(set_extended_rcode(&mut r, rcode::BADVERS));
        assert_eq!(rcode_of(&r), 0, "header rcode 0");
        assert_eq!(extended_rcode(&r), 16);
        let m = hickory_proto::op::Message::from_vec(&r).unwrap();
        let edns = m.edns.as_ref().expect("an OPT record");
        assert_eq!(edns.version(), 0, "we answer with the version we speak");
        assert_eq!(edns.rcode_high(), 1);
        // hickory names extended rcode 16 BADSIG (it shares the number with BADVERS).
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 1, "the question is echoed");
        // Without an OPT record there is nowhere to put the high bits.
        let plain = query_bytes("example.com", 1, None);
        let q = parse_query(&plain).unwrap();
        let mut r = start_response(&q, rcode::NOERROR, false);
        finish_response(&mut r, &q, 512);
        let before = r.clone();
        assert!(!set_extended_rcode(&mut r, rcode::BADVERS));
        assert_eq!(r, before);
        assert!(set_extended_rcode(&mut r, u16::from(rcode::NOTIMP)));
        assert_eq!(extended_rcode(&r), 4);
    }

    #[test]
    fn meta_types_have_names() {
        assert_eq!(type_name(rtype::AXFR), "AXFR");
        assert_eq!(type_name(rtype::IXFR), "IXFR");
        assert_eq!(type_name(rtype::MAILB), "MAILB");
        assert_eq!(type_name(rtype::MAILA), "MAILA");
        assert_eq!(type_name(65399), "TYPE65399");
    }

    #[test]
    fn a_later_edns_versions_options_are_not_judged() {
        // Version 1 with a 5-byte COOKIE (malformed under version 0): read, for BADVERS.
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01\x00");
        p.extend_from_slice(&rtype::OPT.to_be_bytes());
        p.extend_from_slice(&1232u16.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0, 9]);
        p.extend_from_slice(&OPTION_COOKIE.to_be_bytes());
        p.extend_from_slice(&5u16.to_be_bytes());
        p.extend_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(parse_query(&p).unwrap().edns.unwrap().version, 1);
        let at = p.len() - 14;
        p[at] = 0; // version 0: the cookie is malformed
        assert!(matches!(parse_query(&p), Err(WireError::FormErr(_))));
    }

    #[test]
    fn the_edns_version_is_read() {
        let mut p = query_bytes("example.com", 1, None);
        p[11] = 1;
        p.extend_from_slice(&opt_record(&[0], 1));
        assert_eq!(parse_query(&p).unwrap().edns.unwrap().version, 1);
    }

    #[test]
    fn two_opt_records_are_a_format_error() {
        let mut p = query_bytes("example.com", 1, Some(1232));
        p.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        p[11] = 2;
        assert!(matches!(parse_query(&p), Err(WireError::FormErr(_))));
    }

    #[test]
    fn response_echoes_question_case_and_appends_opt() {
        let p = query_bytes("WwW.example.com", rtype::A, Some(1232));
        let q = parse_query(&p).unwrap();
        let mut lower = query_bytes("www.example.com", rtype::A, None);
        lower[2] = 0x81;
        lower[3] = 0x80;
        lower[0] = 0;
        lower[1] = 0;
        push_a(&mut lower, 60, Ipv4Addr::new(192, 0, 2, 1));
        finish_response(&mut lower, &q, 1232);
        assert_eq!(&lower[0..2], &[0x12, 0x34]);
        assert_eq!(&lower[12..12 + q.question.len()], q.question);
        assert_eq!(answer_count(&lower), 1);
        assert_eq!(u16::from_be_bytes([lower[10], lower[11]]), 1);
        let msg = hickory_proto::op::Message::from_vec(&lower).unwrap();
        assert_eq!(msg.answers.len(), 1);
        assert!(msg.edns.is_some());
    }

    #[test]
    fn oversized_answers_are_truncated_with_tc() {
        let p = query_bytes("example.com", rtype::TXT, None);
        let q = parse_query(&p).unwrap();
        let mut r = start_response(&q, 0, false);
        for _ in 0..10 {
            push_answer_for_qname(&mut r, rtype::TXT, 60, &[100; 101]);
        }
        finish_response(&mut r, &q, q.max_udp_payload());
        assert!(is_truncated(&r));
        assert_eq!(answer_count(&r), 0);
        assert_eq!(r.len(), 12 + q.question.len());
    }

    #[test]
    fn whole_records_are_kept_and_a_partial_one_dropped() {
        let p = query_bytes("example.com", rtype::TXT, None);
        let q = parse_query(&p).unwrap();
        let mut r = start_response(&q, 0, false);
        for _ in 0..3 {
            push_answer_for_qname(&mut r, rtype::TXT, 60, &[9; 10]);
        }
        let whole = r.clone();
        let record = (whole.len() - 12 - q.question.len()) / 3;
        // Everything fits: unchanged.
        assert_eq!(keep_whole_records(&mut r, usize::MAX), Some(false));
        assert_eq!(r, whole);
        // A limit inside the third record: two kept, counted.
        assert_eq!(keep_whole_records(&mut r, whole.len() - 1), Some(true));
        assert_eq!(answer_count(&r), 2);
        assert_eq!(r.len(), whole.len() - record);
        // Counts that claim a record whose bytes stop short (an encoder out of room): the
        // partial one goes.
        let mut r = whole.clone();
        r.truncate(whole.len() - 4);
        assert_eq!(keep_whole_records(&mut r, usize::MAX), Some(true));
        assert_eq!((answer_count(&r), r.len()), (2, whole.len() - record));
        // Stray bytes after the counted records go too.
        let mut r = whole.clone();
        r.extend_from_slice(&[4, b'h', b'u', b'g']);
        assert_eq!(keep_whole_records(&mut r, usize::MAX), Some(false));
        assert_eq!(r, whole);
        // Under a datagram limit, a message past it is the question alone, with TC.
        let mut r = whole.clone();
        finish_response(&mut r, &q, whole.len() - 1);
        assert!(
            r.len() < 12 + q.question.len() + record,
            "UDP-sized: the question alone"
        );
    }

    #[test]
    fn glue_that_does_not_fit_is_dropped_without_tc() {
        // An MX answer (one record) with 40 A records of glue: over 512 bytes in all.
        let finished = |udp_size: u16| {
            let p = query_bytes("mx.example.com", rtype::MX, Some(udp_size));
            let q = parse_query(&p).unwrap();
            let mut r = start_response(&q, 0, true);
            let mx = [0, 10, 4, b'm', b'a', b'i', b'l', 0xC0, 12];
            push_answer_for_qname(&mut r, rtype::MX, 60, &mx);
            for i in 0..40u8 {
                r.extend_from_slice(&[0xC0, 12]);
                r.extend_from_slice(&rtype::A.to_be_bytes());
                r.extend_from_slice(&[0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, i]);
                bump_count(&mut r, 10);
            }
            assert!(r.len() > 512);
            finish_response(&mut r, &q, q.max_udp_payload());
            r
        };
        let r = finished(512);
        assert!(!is_truncated(&r), "the answer fits: no TC");
        assert!(r.len() <= 512);
        let m = hickory_proto::op::Message::from_vec(&r).unwrap();
        assert_eq!(m.answers.len(), 1);
        assert!(m.additionals.is_empty(), "the glue is dropped");
        assert!(m.edns.is_some(), "the OPT record is still there");
        // With room for it, the glue stays.
        let m = hickory_proto::op::Message::from_vec(&finished(4096)).unwrap();
        assert_eq!(m.additionals.len(), 40);
    }

    #[test]
    fn ttl_offsets_find_every_record() {
        let p = query_bytes("example.com", rtype::A, None);
        let q = parse_query(&p).unwrap();
        let mut r = start_response(&q, 0, false);
        push_a(&mut r, 300, Ipv4Addr::LOCALHOST);
        push_a(&mut r, 200, Ipv4Addr::LOCALHOST);
        let offs = ttl_offsets(&r).unwrap();
        assert_eq!(offs.len(), 2);
        let at = usize::from(offs[1].0);
        assert_eq!(u32::from_be_bytes(r[at..at + 4].try_into().unwrap()), 200);
    }

    #[test]
    fn header_only_errors_keep_the_id() {
        let p = query_bytes("example.com", 1, None);
        let r = header_only_error(&p, rcode::FORMERR, false).unwrap();
        assert_eq!(&r[0..2], &p[0..2]);
        assert_eq!(r[3] & 0x0F, rcode::FORMERR);
        assert!(header_only_error(&p[..4], 1, true).is_none());
    }

    #[test]
    fn only_a_question_less_query_with_just_a_cookie_is_cookie_only() {
        let cookie_only = |version: u8, trailing: &[u8]| {
            let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 1, 0];
            p.extend_from_slice(&rtype::OPT.to_be_bytes());
            p.extend_from_slice(&1232u16.to_be_bytes());
            p.extend_from_slice(&[0, version, 0x80, 0, 0, 12]);
            p.extend_from_slice(&OPTION_COOKIE.to_be_bytes());
            p.extend_from_slice(&8u16.to_be_bytes());
            p.extend_from_slice(&[7; 8]);
            p.extend_from_slice(trailing);
            p
        };
        let (c, dnssec_ok) = cookie_only_query(&cookie_only(0, &[])).unwrap();
        assert_eq!((c.client, dnssec_ok), ([7; 8], true));
        let answer = cookie_only_answer(&cookie_only(0, &[]), &c, dnssec_ok, &[9; 16]);
        let m = hickory_proto::op::Message::from_vec(&answer).unwrap();
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::NoError
        );
        assert_eq!(
            &answer[answer.len() - 28..],
            &[&[0, 10, 0, 24][..], &[7; 8], &[9; 16]].concat()[..]
        );
        assert!(
            cookie_only_query(&cookie_only(1, &[])).is_none(),
            "EDNS version 1"
        );
        assert!(
            cookie_only_query(&cookie_only(0, &[0])).is_none(),
            "trailing bytes"
        );
        let mut with_question = cookie_only(0, &[]);
        with_question[5] = 1;
        assert!(cookie_only_query(&with_question).is_none());
        assert!(cookie_only_query(&query_bytes("example.com", 1, Some(1232))).is_none());
    }

    #[test]
    fn error_answers_echo_a_plain_question_and_an_opt_record() {
        // NOTIFY (opcode 4) with EDNS and DO: question and OPT (DO kept) come back.
        let mut p = query_bytes("example.com", rtype::SOA, Some(1232));
        p[2] |= 4 << 3;
        let at = p.len() - 5;
        p[at] = 0x80;
        let r = header_only_error(&p, rcode::NOTIMP, true).unwrap();
        let m = hickory_proto::op::Message::from_vec(&r).unwrap();
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::NotImp
        );
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name().to_ascii(), "example.com.");
        assert!(m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
        // A malformed COOKIE (3 bytes): FORMERR, still with the question and an OPT record.
        let p = query_with_option(OPTION_COOKIE, &[1, 2, 3]);
        assert!(parse_query(&p).is_err());
        let m = hickory_proto::op::Message::from_vec(
            &header_only_error(&p, rcode::FORMERR, true).unwrap(),
        )
        .unwrap();
        assert_eq!(m.queries.len(), 1);
        assert!(m.edns.is_some());
        // A compressed question name or two questions: the header alone.
        let mut p = query_bytes("example.com", 1, None);
        p[12] = 0xC0;
        p[13] = 12;
        assert_eq!(
            header_only_error(&p, rcode::FORMERR, true).unwrap().len(),
            HEADER_LEN
        );
        let mut p = query_bytes("example.com", 1, None);
        p[5] = 2;
        assert_eq!(
            header_only_error(&p, rcode::FORMERR, true).unwrap().len(),
            HEADER_LEN
        );
    }

    /// edns-tcp-keepalive and NSID are read from the query; the answer carries them only as the
    /// pipeline set them, after the cookie, and within the size the answer is cut to.
    #[test]
    fn keepalive_and_nsid_options_are_read_and_answered() {
        let edns = |p: &[u8]| parse_query(p).unwrap().edns.unwrap();
        assert_eq!(
            edns(&query_with_option(OPTION_TCP_KEEPALIVE, &[])).keepalive,
            Keepalive::Asked
        );
        assert_eq!(
            edns(&query_with_option(OPTION_TCP_KEEPALIVE, &[0, 1])).keepalive,
            Keepalive::WithData
        );
        assert_eq!(
            edns(&query_bytes("a.example", 1, Some(1232))).keepalive,
            Keepalive::Absent
        );
        assert!(edns(&query_with_option(OPTION_NSID, &[])).nsid);
        assert!(!edns(&query_with_option(OPTION_NSID, b"x")).nsid);

        let p = query_with_option(OPTION_NSID, &[]);
        let mut q = parse_query(&p).unwrap();
        q.keepalive_response = Some(300);
        q.nsid_response = Some(b"eu-1");
        let mut msg = start_response(&q, rcode::NOERROR, false);
        finish_response(&mut msg, &q, 65535);
        let m = hickory_proto::op::Message::from_vec(&msg).unwrap();
        let opts = m.edns.as_ref().unwrap().options();
        use hickory_proto::rr::rdata::opt::EdnsCode;
        assert!(opts.get(EdnsCode::Keepalive).is_some(), "{opts:?}");
        assert!(opts.get(EdnsCode::NSID).is_some(), "{opts:?}");
        assert!(msg.ends_with(&[0, 11, 0, 2, 1, 44, 0, 3, 0, 4, b'e', b'u', b'-', b'1']));
        // Without EDNS in the query, no OPT record and so no option.
        let p = query_bytes("a.example", 1, None);
        let mut q = parse_query(&p).unwrap();
        q.keepalive_response = Some(300);
        q.nsid_response = Some(b"eu-1");
        let mut msg = start_response(&q, rcode::NOERROR, false);
        finish_response(&mut msg, &q, 65535);
        assert_eq!(msg.len(), p.len());
        // An identifier that would not fit the client's UDP size is left out, not the answer.
        let long = [b'n'; 480];
        let p = query_with_option(OPTION_NSID, &[]);
        let mut q = parse_query(&p).unwrap();
        q.nsid_response = Some(&long);
        let mut msg = start_response(&q, rcode::NOERROR, false);
        push_a(&mut msg, 60, Ipv4Addr::new(192, 0, 2, 1));
        finish_response(&mut msg, &q, 512);
        assert!(
            msg.len() <= 512 && !is_truncated(&msg),
            "{} bytes",
            msg.len()
        );
        assert_eq!(answer_count(&msg), 1);
        assert!(!msg.ends_with(&long));
    }

    /// RFC 6891 §7: a FORMERR about the OPT record itself carries an OPT record (the DO bit of
    /// the query's), wherever the offending one was; RA as the caller says.
    #[test]
    fn a_formerr_about_the_opt_record_carries_one() {
        let mut do_opt = opt_record(&[0], 0);
        do_opt[7] = 0x80;
        let with = |count_at: usize, tail: &[u8]| {
            let mut p = query_bytes("example.com", 1, None);
            p[count_at] = 1;
            p.extend_from_slice(tail);
            p
        };
        let mut truncated = opt_record(&[0], 0);
        truncated.truncate(truncated.len() - 2);
        truncated.extend_from_slice(&[0, 9, 0, 10]);
        for (what, p) in [
            ("in the answer section", with(7, &do_opt)),
            ("in the authority section", with(9, &do_opt)),
            (
                "owned by another name",
                with(11, &[&[1, b'x', 0][..], &do_opt[1..]].concat()),
            ),
            ("data past the packet", with(11, &truncated)),
            ("two", {
                let mut p = with(11, &do_opt);
                p[11] = 2;
                p.extend_from_slice(&opt_record(&[0], 0));
                p
            }),
        ] {
            assert!(
                matches!(parse_query(&p), Err(WireError::FormErr(_))),
                "{what}"
            );
            for ra in [true, false] {
                let r = header_only_error(&p, rcode::FORMERR, ra).unwrap();
                let m = hickory_proto::op::Message::from_vec(&r).unwrap();
                assert_eq!(m.metadata.recursion_available, ra, "{what}");
                assert_eq!(m.queries.len(), 1, "{what}");
                let expect_do = what != "data past the packet";
                assert_eq!(
                    m.edns.as_ref().map(|e| e.flags().dnssec_ok),
                    Some(expect_do),
                    "{what}"
                );
                assert_eq!(u16::from_be_bytes([r[10], r[11]]), 1, "{what}: one OPT");
            }
        }
    }
}
