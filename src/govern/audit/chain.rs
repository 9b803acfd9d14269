//! The chain's line format and hashing: [`ChainEncoder`] writes each event as a record linked
//! to the one before it (`seq`, `prev`, `chain`, `key_id`, `seal`; see the [parent
//! module](super) for the format), and `parse_record` reads a line back as one.
//!
//! `H` is SHA-256 unkeyed or HMAC-SHA256 keyed (`Hasher`); the key is prepared once and the
//! prepared state cloned per hash.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{AuditKey, ChainMode};
use crate::events::Event;
use crate::events::sink::LineEncoder;

/// What precedes the seal's hex digits; the seal covers everything before it.
pub(super) const SEAL_OPEN: &[u8] = b",\"seal\":\"";
/// `,"seal":"` + 64 hex digits + `"}`.
pub(super) const SEAL_SUFFIX_LEN: usize = SEAL_OPEN.len() + 64 + 2;

type HmacSha256 = Hmac<Sha256>;

/// `H`: SHA-256, or HMAC-SHA256 prepared with the key once and cloned per use.
#[derive(Clone)]
pub(super) enum Hasher {
    /// Unkeyed.
    Sha256,
    /// Keyed, the key already absorbed.
    Hmac(Box<HmacSha256>),
}

impl Hasher {
    pub(super) fn new(key: Option<&[u8]>) -> Self {
        match key {
            None => Hasher::Sha256,
            Some(key) => Hasher::Hmac(Box::new(
                <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length"),
            )),
        }
    }

    pub(super) fn mode(&self) -> ChainMode {
        match self {
            Hasher::Sha256 => ChainMode::Sha256,
            Hasher::Hmac(_) => ChainMode::HmacSha256,
        }
    }

    pub(super) fn digest(&self, bytes: &[u8]) -> [u8; 32] {
        match self {
            Hasher::Sha256 => Sha256::digest(bytes).into(),
            Hasher::Hmac(mac) => {
                let mut mac = (**mac).clone();
                mac.update(bytes);
                mac.finalize().into_bytes().into()
            }
        }
    }
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

/// The [`LineEncoder`] that makes the event log a hash chain (see the module docs for the line
/// format). It keeps the next seq and the previous line's hash; the sink calls it in write order
/// from one task, so the chain follows the file.
#[derive(Clone)]
pub struct ChainEncoder {
    pub(super) hasher: Hasher,
    /// Written in keyed lines; `None` when unkeyed.
    pub(super) key_id: Option<String>,
    /// Seq of the next record.
    pub(super) next_seq: u64,
    /// `H` of the last line written (the genesis value before the first).
    pub(super) prev: [u8; 32],
}

impl fmt::Debug for ChainEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainEncoder")
            .field("mode", &self.hasher.mode())
            .field("key_id", &self.key_id)
            .field("next_seq", &self.next_seq)
            .field("prev", &hex::encode(self.prev))
            .finish()
    }
}

impl ChainEncoder {
    /// A new chain from seq 0, keyed with `key` when given.
    #[must_use]
    pub fn new(key: Option<&AuditKey>) -> Self {
        Self {
            hasher: Hasher::new(key.map(AuditKey::as_bytes)),
            key_id: key.map(AuditKey::id),
            next_seq: 0,
            prev: [0; 32],
        }
    }

    /// Seq the next record will get.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether lines are keyed.
    #[must_use]
    pub fn mode(&self) -> ChainMode {
        self.hasher.mode()
    }
}

/// Where a [`ChainEncoder`] stands between two lines: the next seq and the previous line's
/// hash. The sink takes one before each line and returns to the one before the first line it
/// could not write, so a record that never reached the file never takes a place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainMark {
    next_seq: u64,
    prev: [u8; 32],
}

impl LineEncoder for ChainEncoder {
    type Mark = ChainMark;

    fn mark(&self) -> ChainMark {
        ChainMark {
            next_seq: self.next_seq,
            prev: self.prev,
        }
    }

    fn rewind(&mut self, mark: ChainMark) {
        self.next_seq = mark.next_seq;
        self.prev = mark.prev;
    }

    fn encode_line(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let start = out.len();
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(self.next_seq.to_string().as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        push_hex(out, &self.prev);
        out.extend_from_slice(b"\",\"chain\":\"");
        out.extend_from_slice(self.hasher.mode().as_str().as_bytes());
        out.push(b'"');
        if let Some(id) = &self.key_id {
            out.extend_from_slice(b",\"key_id\":\"");
            out.extend_from_slice(id.as_bytes());
            out.push(b'"');
        }
        let body = out.len();
        if let Err(e) = serde_json::to_writer(&mut *out, event) {
            out.truncate(start);
            return Err(e);
        }
        // The event is one JSON object: splice its fields in after ours, dropping its braces.
        if out.get(body) != Some(&b'{') || out.last() != Some(&b'}') {
            out.truncate(start);
            return Err(serde::ser::Error::custom("event is not a JSON object"));
        }
        if out.len() - body == 2 {
            out.truncate(body);
        } else {
            out[body] = b',';
            out.pop();
        }
        let seal = self.hasher.digest(&out[start..]);
        out.extend_from_slice(SEAL_OPEN);
        push_hex(out, &seal);
        out.extend_from_slice(b"\"}");
        self.prev = self.hasher.digest(&out[start..]);
        self.next_seq = self.next_seq.saturating_add(1);
        out.push(b'\n');
        Ok(())
    }
}

/// The chain fields of one line, as the verifier and `resume` read them.
#[derive(Debug)]
pub(super) struct ChainFields {
    pub(super) seq: u64,
    pub(super) prev: [u8; 32],
    pub(super) mode: ChainMode,
    pub(super) key_id: Option<String>,
    pub(super) seal: [u8; 32],
}

/// What serde sees; the event's own fields are ignored. Duplicate keys are an error, so an
/// event field can never shadow a chain field.
#[derive(Deserialize)]
struct RawChainFields {
    seq: u64,
    prev: String,
    chain: String,
    #[serde(default)]
    key_id: Option<String>,
    seal: String,
}

fn decode_hash(field: &str, hex_text: &str) -> Result<[u8; 32], String> {
    let mut out = [0; 32];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|_| format!("`{field}` is not 64 hex digits"))?;
    Ok(out)
}

/// Read a line as a chain record, or say why it is not one.
pub(super) fn parse_record(line: &[u8]) -> Result<ChainFields, String> {
    let raw: RawChainFields = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let mode = ChainMode::from_field(&raw.chain)
        .ok_or_else(|| format!("unknown chain mode {:?}", raw.chain))?;
    let prev = decode_hash("prev", &raw.prev)?;
    let seal = decode_hash("seal", &raw.seal)?;
    // The seal covers the bytes before it, so it must be the last field, written exactly as
    // the encoder writes it.
    let n = line.len();
    if n < SEAL_SUFFIX_LEN
        || !line.ends_with(b"\"}")
        || &line[n - SEAL_SUFFIX_LEN..n - 66] != SEAL_OPEN
        || &line[n - 66..n - 2] != raw.seal.as_bytes()
    {
        return Err("`seal` is not the last field".into());
    }
    Ok(ChainFields {
        seq: raw.seq,
        prev,
        mode,
        key_id: raw.key_id,
        seal,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    use super::super::GENESIS;
    use super::super::testing::{chain_lines, check, encode, event, key, reseal};
    use super::*;
    use crate::events::{AlertEvent, ContainmentEvent, EventBody, PolicyEvent, WindowCounts};

    #[test]
    fn lines_keep_the_event_fields_between_the_chain_fields() {
        let lines = chain_lines(None, 2);
        assert!(
            lines[0].starts_with(&format!(
                "{{\"seq\":0,\"prev\":\"{GENESIS}\",\"chain\":\"sha256\",\"ts\":"
            )),
            "{}",
            lines[0]
        );
        let link = hex::encode(Sha256::digest(lines[0].as_bytes()));
        assert!(lines[1].starts_with(&format!("{{\"seq\":1,\"prev\":\"{link}\",")));
        assert_eq!(lines[0], reseal(&lines[0]), "seal = H(bytes before it)");
        // Readers of events still read them.
        let back: Event = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(back, event(0));

        let key = key();
        let keyed = chain_lines(Some(&key), 1);
        assert_eq!(key.id().len(), 16);
        assert!(keyed[0].contains(&format!(
            "\"chain\":\"hmac-sha256\",\"key_id\":\"{}\",\"ts\":",
            key.id()
        )));
        assert!(
            !format!("{key:?}").contains("0123456789"),
            "Debug hides the key"
        );
    }

    #[test]
    fn chain_fields_never_collide_with_event_fields() {
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let containment = ContainmentEvent {
            client,
            agent: None,
            group: "g".into(),
            domain: Some("example.com".into()),
            action: "sinkhole".into(),
            score: 90,
            until: Some("2026-11-25T20:00:00Z".into()),
            reason: "score above threshold".into(),
        };
        let bodies = [
            event(1).body,
            EventBody::Alert(AlertEvent {
                client,
                agent: None,
                group: "g".into(),
                domain: "example.com".into(),
                score: 90,
                breakdown: BTreeMap::from([("entropy".into(), 40.0)]),
                window: WindowCounts::default(),
                samples: vec!["aGVsbG8.example.com".into()],
                bytes_estimate: 4096,
                volume: None,
                action: "alert".into(),
                monitor_only: false,
                exception: None,
            }),
            EventBody::ContainmentStarted(containment.clone()),
            EventBody::ContainmentEnded(containment),
            EventBody::Policy(PolicyEvent {
                action: "reloaded".into(),
                hash: Some("ab".into()),
                actor: Some("alice".into()),
                message: None,
            }),
        ];
        let mut encoder = ChainEncoder::new(Some(&key()));
        let mut lines = Vec::new();
        for body in bodies {
            let event = Event::now(1, body);
            let json = serde_json::to_value(&event).unwrap();
            for reserved in ["seq", "prev", "chain", "key_id", "seal"] {
                assert!(
                    json.get(reserved).is_none(),
                    "{} has {reserved}",
                    event.kind()
                );
            }
            lines.push(encode(&mut encoder, &event));
        }
        let report = check(&lines, Some(&key()));
        assert!(report.ok, "{report}");
    }
}
