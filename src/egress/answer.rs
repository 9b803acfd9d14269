//! Reading the A and AAAA records (address and TTL) out of a wire-format DNS answer.
//!
//! The pipeline hands over the exact bytes it is about to send, so what the firewall allows is
//! what the client was told: after the CNAME-target check, with the TTL the client sees (a
//! cache hit's TTL is already counted down). Bounded and panic-free on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// One address from an answer section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerAddress {
    /// The address.
    pub ip: IpAddr,
    /// Its record's TTL in seconds.
    pub ttl: u32,
}

/// The A/AAAA records of the answer section of `msg`, in order. Records of other types (CNAME
/// links of a chain) are skipped; a truncated or malformed message yields the records before
/// the damage.
pub fn addresses(msg: &[u8]) -> impl Iterator<Item = AnswerAddress> + '_ {
    AnswerIter::new(msg)
}

struct AnswerIter<'a> {
    msg: &'a [u8],
    pos: usize,
    left: u16,
}

impl<'a> AnswerIter<'a> {
    fn new(msg: &'a [u8]) -> Self {
        let mut it = Self {
            msg,
            pos: HEADER_LEN,
            left: 0,
        };
        if msg.len() < HEADER_LEN {
            return it;
        }
        let qd = u16::from_be_bytes([msg[4], msg[5]]);
        for _ in 0..qd {
            match skip_name(msg, it.pos) {
                Some(p) if p + 4 <= msg.len() => it.pos = p + 4,
                _ => return it,
            }
        }
        it.left = u16::from_be_bytes([msg[6], msg[7]]);
        it
    }
}

impl Iterator for AnswerIter<'_> {
    type Item = AnswerAddress;

    fn next(&mut self) -> Option<AnswerAddress> {
        while self.left > 0 {
            self.left -= 1;
            let p = skip_name(self.msg, self.pos)?;
            let fixed = self.msg.get(p..p + 10)?;
            let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
            let class = u16::from_be_bytes([fixed[2], fixed[3]]);
            let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
            let rdata = self.msg.get(p + 10..p + 10 + rdlen)?;
            self.pos = p + 10 + rdlen;
            if class != CLASS_IN {
                continue;
            }
            let ip = match (rtype, rdata.len()) {
                (TYPE_A, 4) => IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
                (TYPE_AAAA, 16) => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(rdata);
                    IpAddr::V6(Ipv6Addr::from(b))
                }
                _ => continue,
            };
            // RFC 2181: a TTL with the top bit set means zero.
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
            return Some(AnswerAddress { ip, ttl });
        }
        None
    }
}

/// The offset just past the name starting at `pos` (a pointer ends a name).
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    // 128 labels is more than a 255-byte name can hold: a bound against garbage.
    for _ in 0..128 {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xC0 => return (pos + 2 <= msg.len()).then_some(pos + 2),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};

    fn answer() -> Vec<u8> {
        let name = Name::from_ascii("www.example.com.").unwrap();
        let target = Name::from_ascii("edge.cdn.example.net.").unwrap();
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name,
            300,
            RData::CNAME(rdata::CNAME(target.clone())),
        ));
        m.add_answer(Record::from_rdata(
            target.clone(),
            20,
            RData::A(rdata::A(Ipv4Addr::new(198, 18, 0, 1))),
        ));
        m.add_answer(Record::from_rdata(
            target,
            25,
            RData::AAAA(rdata::AAAA("2001:db8::1".parse().unwrap())),
        ));
        m.to_vec().unwrap()
    }

    #[test]
    fn addresses_of_a_cname_chain_are_read_with_their_ttls() {
        let got: Vec<_> = addresses(&answer()).collect();
        assert_eq!(
            got,
            vec![
                AnswerAddress {
                    ip: "198.18.0.1".parse().unwrap(),
                    ttl: 20
                },
                AnswerAddress {
                    ip: "2001:db8::1".parse().unwrap(),
                    ttl: 25
                },
            ]
        );
    }

    #[test]
    fn every_truncation_and_corruption_is_survived() {
        let full = answer();
        for cut in 0..full.len() {
            let n = addresses(&full[..cut]).count();
            assert!(n <= 2);
        }
        for i in 0..full.len() {
            let mut bad = full.clone();
            bad[i] ^= 0xFF;
            let _ = addresses(&bad).count();
        }
    }
}
