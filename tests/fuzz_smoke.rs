//! A stable-toolchain smoke run of both fuzz targets' bodies (`fuzz/bodies.rs`, the same code
//! `cargo fuzz run` drives): a few thousand generated inputs each, bounded in time, under
//! `cargo test`. Inputs are structured mutations of real queries (flipped bits, truncations,
//! inserted bytes, compression pointers, label lengths, counts) plus random bytes, from a
//! fixed seed so a failure reproduces.

#[allow(dead_code)]
#[path = "../fuzz/bodies.rs"]
mod bodies;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

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

/// `count` inputs: mutated seeds and random bytes.
fn inputs(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let seeds = seeds();
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
