//! An upstream's answer on arbitrary bytes: prepared, scrubbed, hashed and rendered (body in
//! `fuzz/bodies.rs`, shared with the stable smoke test `tests/fuzz_smoke.rs`).
#![no_main]

#[allow(dead_code)] // each target uses one body
#[path = "../bodies.rs"]
mod bodies;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bodies::upstream_answer(data));
