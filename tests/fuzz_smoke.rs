//! A stable-toolchain smoke run of both fuzz targets' bodies (`fuzz/bodies.rs`, the same code
//! `cargo fuzz run` drives): a few thousand generated inputs each, bounded in time, under
//! `cargo test`. Inputs are structured mutations of real queries (flipped bits, truncations,
//! inserted bytes, compression pointers, label lengths, counts) plus random bytes, from a
//! fixed seed so a failure reproduces.

#[allow(dead_code)]
#[path = "../fuzz/bodies.rs"]
mod bodies;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CAA, CNAME, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (name, qtype, edns) in [
        ("api.corp.internal.", RecordType::A, false),
        ("git.corp.internal.", RecordType::AAAA, true),
        ("www.example.com.", RecordType::TXT, true),
        (".", RecordType::NS, false),
        ("a.b.c.d.e.f.g.corp.internal.", RecordType::ANY, true),
    ] {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            e.set_dnssec_ok(true);
            m.set_edns(e);
        }
        out.push(m.to_vec().unwrap());
    }
    out
}

/// Upstream answers: a CNAME chain with an unrelated record and glue, a negative answer with
/// its SOA and another zone's NS, TXT.
fn answer_seeds() -> Vec<Vec<u8>> {
    let n = |s: &str| Name::from_ascii(s).unwrap();
    let mut out = Vec::new();
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.metadata.recursion_available = true;
    m.metadata.authentic_data = true;
    m.add_query(Query::query(n("www.example.com."), RecordType::A));
    m.add_answer(Record::from_rdata(
        n("www.example.com."),
        300,
        RData::CNAME(CNAME(n("edge.cdn.example."))),
    ));
    m.add_answer(Record::from_rdata(
        n("edge.cdn.example."),
        60,
        RData::A(A::new(192, 0, 2, 1)),
    ));
    m.add_answer(Record::from_rdata(
        n("pypi.org."),
        60,
        RData::A(A::new(6, 6, 6, 6)),
    ));
    m.add_authority(Record::from_rdata(
        n("cdn.example."),
        60,
        RData::NS(NS(n("ns1.cdn.example."))),
    ));
    m.add_additional(Record::from_rdata(
        n("ns1.cdn.example."),
        60,
        RData::A(A::new(10, 0, 0, 1)),
    ));
    out.push(m.to_vec().unwrap());
    let mut m = Message::new(8, MessageType::Response, OpCode::Query);
    m.metadata.response_code = ResponseCode::NXDomain;
    m.add_query(Query::query(n("nope.example.com."), RecordType::TXT));
    let soa = SOA::new(
        n("ns1.example.com."),
        n("hm.example.com."),
        1,
        3600,
        600,
        86400,
        60,
    );
    m.add_authority(Record::from_rdata(n("example.com."), 600, RData::SOA(soa)));
    m.add_authority(Record::from_rdata(
        n("evil.example."),
        600,
        RData::NS(NS(n("ns.evil.example."))),
    ));
    out.push(m.to_vec().unwrap());
    let mut m = Message::new(9, MessageType::Response, OpCode::Query);
    m.add_query(Query::query(n("t.example.com."), RecordType::TXT));
    m.add_answer(Record::from_rdata(
        n("t.example.com."),
        0x8000_0001,
        RData::TXT(TXT::new(vec!["x".repeat(200), "y".repeat(100)])),
    ));
    out.push(m.to_vec().unwrap());
    // The types whose names the answer encoder compresses itself (MX, PTR, SOA, CNAME) beside
    // ones it hands to hickory (SRV, CAA), names repeated for compression to find.
    let mut m = Message::new(10, MessageType::Response, OpCode::Query);
    m.add_query(Query::query(n("Example.com."), RecordType::ANY));
    m.add_answer(Record::from_rdata(
        n("example.com."),
        60,
        RData::MX(MX::new(10, n("mail.Example.com."))),
    ));
    m.add_answer(Record::from_rdata(
        n("_imap._tcp.example.com."),
        60,
        RData::SRV(SRV::new(0, 5, 993, n("mail.example.com."))),
    ));
    m.add_answer(Record::from_rdata(
        n("example.com."),
        60,
        RData::CAA(CAA::new_issue(false, Some(n("ca.example.net.")), vec![])),
    ));
    m.add_answer(Record::from_rdata(
        n("example.com."),
        60,
        RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5)),
    ));
    m.add_answer(Record::from_rdata(
        n("5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."),
        60,
        RData::PTR(PTR(n("example.com."))),
    ));
    out.push(m.to_vec().unwrap());
    // Plain negative answers, the shape the wire path takes: hickory's (SOA names compressed
    // against the question) and one by hand, mixed case, an OPT with a COOKIE after it.
    let mut m = Message::new(11, MessageType::Response, OpCode::Query);
    m.metadata.response_code = ResponseCode::NXDomain;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(n("q7f3k9.flood.example."), RecordType::A));
    let soa = SOA::new(
        n("ns.flood.example."),
        n("hostmaster.flood.example."),
        1,
        3600,
        600,
        86400,
        60,
    );
    m.add_authority(Record::from_rdata(n("flood.example."), 60, RData::SOA(soa)));
    let hickorys = m.to_vec().unwrap();
    assert!(
        dnsward::resolve::encode::negative_from_wire(&hickorys).is_some(),
        "hickory's negative answer is one the wire path takes"
    );
    out.push(hickorys);
    let mut h = vec![0, 12, 0x85, 0xA0, 0, 1, 0, 0, 0, 1, 0, 1];
    h.extend_from_slice(b"\x04NoPe\x07Example\x03COM\x00\x00\x1c\x00\x01");
    h.extend_from_slice(&[0xC0, 17, 0, 6, 0, 1, 0, 0, 0x0e, 0x10, 0, 31]);
    h.extend_from_slice(b"\x03ns1\xC0\x11\x02hm\xC0\x11");
    for v in [1u32, 3600, 600, 86400, 300] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 12, 0, 10, 0, 8]);
    h.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(
        dnsward::resolve::encode::negative_from_wire(&h).is_some(),
        "the hand-made seed is one the wire path takes"
    );
    out.push(h);
    out
}

/// `count` inputs: mutated seeds and random bytes.
fn inputs(count: usize, seed: u64) -> Vec<Vec<u8>> {
    mutated(&seeds(), count, seed)
}

/// `count` inputs: mutations of `seeds` and random bytes.
fn mutated(seeds: &[Vec<u8>], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        if i % 5 == 4 {
            let len = rng.below(600);
            out.push((0..len).map(|_| rng.byte()).collect());
            continue;
        }
        let mut v = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(7) {
                0 if !v.is_empty() => {
                    let at = rng.below(v.len());
                    v[at] ^= 1 << rng.below(8);
                }
                1 => v.truncate(rng.below(v.len() + 1)),
                2 => {
                    let at = rng.below(v.len() + 1);
                    v.insert(at, rng.byte());
                }
                3 if v.len() > 13 => {
                    // A compression pointer somewhere in the question.
                    let at = 12 + rng.below(v.len() - 13);
                    v[at] = 0xC0 | (rng.byte() & 0x3F);
                    v[at + 1] = rng.byte();
                }
                4 if v.len() > 12 => v[12] = rng.byte(), // first label length
                5 if v.len() >= 12 => {
                    // Section counts.
                    let at = 4 + 2 * rng.below(4);
                    v[at] = rng.byte() & 3;
                    v[at + 1] = rng.byte();
                }
                _ if v.len() >= 4 => {
                    // Flags: opcode, QR, RCODE bits.
                    v[2] = rng.byte();
                    v[3] = rng.byte();
                }
                _ => {}
            }
        }
        out.push(v);
    }
    out
}

#[test]
fn query_parser_body_survives_generated_inputs() {
    for input in inputs(200_000, 0x9E37_79B9_7F4A_7C15) {
        bodies::query_parser(&input);
    }
}

#[test]
fn request_handler_body_survives_generated_inputs() {
    for input in inputs(20_000, 0xD1B5_4A32_D192_ED03) {
        bodies::request_handler(&input);
    }
}

#[test]
fn upstream_answer_body_survives_generated_inputs() {
    let seeds = answer_seeds();
    for seed in &seeds {
        bodies::upstream_answer(seed);
    }
    for input in mutated(&seeds, 50_000, 0x2545_F491_4F6C_DD1D) {
        bodies::upstream_answer(&input);
    }
}
