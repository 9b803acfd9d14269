//! The fuzz targets' bodies, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and by the
//! stable-toolchain smoke test (`tests/fuzz_smoke.rs`), so both run exactly the same checks.

use std::sync::OnceLock;
use std::time::Instant;

use dnsward::clock::SystemClock;
use dnsward::config::Config;
use dnsward::contain::Containment;
use dnsward::detect::Detector;
use dnsward::events::sink::EventSender;
use dnsward::policy::active::ActivePolicy;
use dnsward::resolve::cache::{AnswerCache, CacheConfig};
use dnsward::serve::pipeline::{Outcome, Pipeline, PipelineSettings, Protocol, UnknownClients};
use dnsward::wire;

/// The wire parser on arbitrary bytes: never panics, and what it accepts re-parses the same
/// way after a round trip through an answer built from it.
pub fn query_parser(data: &[u8]) {
    if let Ok(q) = wire::parse_query(data) {
        let mut r = wire::start_response(&q, 0, false);
        wire::finish_response(&mut r, &q, q.max_udp_payload());
        assert_eq!(wire::question_of(&r), Some(q.question));
        let _ = wire::ttl_offsets(&r).expect("our own answers walk");
    }
}

fn pipeline() -> &'static Pipeline {
    static P: OnceLock<Pipeline> = OnceLock::new();
    P.get_or_init(|| {
        let zones = concat!(env!("CARGO_MANIFEST_DIR"), "/zones");
        let zones = if std::path::Path::new(zones).is_dir() {
            zones.to_string()
        } else {
            // Built from fuzz/, whose manifest directory is one level down.
            concat!(env!("CARGO_MANIFEST_DIR"), "/../zones").to_string()
        };
        let text = format!(
            "[upstream]\nservers=[{{address=\"127.0.0.1:9\"}}]\n[zones]\ndir=\"{zones}\"\n[[groups]]\nname=\"g\"\ncidrs=[\"127.0.0.10/32\"]\nallow=[\"*.corp.internal\"]\nblock=\"sinkhole\"\n"
        );
        let cfg = Config::from_toml(&text, "fuzz", std::path::Path::new(".")).expect("config");
        let policy = ActivePolicy::build(&cfg.policy_sections()).expect("policy");
        // One clock shared by every part, as the pipeline requires.
        let clock = SystemClock::shared();
        Pipeline::new(
            policy,
            AnswerCache::new(&CacheConfig::default(), clock.clone()),
            EventSender::disabled(),
            PipelineSettings {
                unknown_clients: UnknownClients::Refuse,
                ..Default::default()
            },
            clock.clone(),
            Detector::new(&cfg.detect, clock.clone()),
            Containment::new(&cfg.containment, clock),
        )
    })
}

/// Arbitrary bytes through the whole synchronous pipeline, from a known and an unknown client.
/// Whatever comes in, the handler must not panic, and any answer must be a DNS response that
/// echoes the query ID.
pub fn request_handler(data: &[u8]) {
    let p = pipeline();
    for src in ["127.0.0.10", "127.0.0.99"] {
        for proto in [Protocol::Udp, Protocol::Tcp] {
            if let Outcome::Reply(r) =
                p.handle_fast(data, src.parse().unwrap(), proto, Instant::now())
            {
                assert!(r.len() >= 12, "answers have a header");
                assert_eq!(&r[0..2], &data[0..2], "answers echo the ID");
                assert!(r[2] & 0x80 != 0, "answers are responses");
            }
        }
    }
}
