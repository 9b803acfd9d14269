//! The wire parser on arbitrary bytes: never panics, and what it accepts re-parses the same
//! way after a round trip through an answer built from it.
#![no_main]

use dnsward::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = wire::parse_query(data) {
        let mut r = wire::start_response(&q, 0, false);
        wire::finish_response(&mut r, &q, q.max_udp_payload());
        assert_eq!(wire::question_of(&r), Some(q.question));
        let _ = wire::ttl_offsets(&r).expect("our own answers walk");
    }
});
