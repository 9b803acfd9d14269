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

/// An upstream's answer on arbitrary bytes (what a spoofer or a tunnel's authority can send
/// through the upstream): prepared for the cache (decoded, scrubbed, re-encoded), hashed as the
/// detector hashes it, and rendered for the question it carries. Never panics; what is kept
/// walks, and the rendered answer echoes the asking query's ID.
pub fn upstream_answer(data: &[u8]) {
    encoder_round_trip(data);
    static CACHE: OnceLock<AnswerCache> = OnceLock::new();
    let cache =
        CACHE.get_or_init(|| AnswerCache::new(&CacheConfig::default(), SystemClock::shared()));
    negative_wire_path(data);
    let Ok(prepared) = cache.prepare(data, "fuzz".into()) else {
        return;
    };
    let a = &prepared.answer;
    let mut h = std::hash::DefaultHasher::new();
    a.hash_content(&mut h);
    a.hash_records(&mut h);
    let (stored, _) = a.stored(cache.now());
    assert!(a.body_len() <= stored.len());
    let _ = wire::ttl_offsets(stored).expect("a prepared answer walks");
    let _ = hickory_proto::op::Message::from_vec(stored).expect("a prepared answer decodes");
    // The question it answers, asked by a client (ID 0x5a5a), if it is one a client can ask.
    let Some(question) = wire::question_of(stored) else {
        return;
    };
    let mut query = vec![0x5a, 0x5a, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(question);
    if let Ok(q) = wire::parse_query(&query) {
        let r = a.render(&q, cache.now(), 512);
        assert_eq!(&r[0..2], &[0x5a, 0x5a], "the asking query's ID");
        assert!(
            r.len() <= 512 || r[2] & 0x02 != 0,
            "fits or says it was cut"
        );
    }
}

/// A negative answer the wire path takes ([`dnsward::resolve::encode::negative_from_wire`]) is
/// one the decoding path takes too, and both store the same answer.
fn negative_wire_path(data: &[u8]) {
    if dnsward::resolve::encode::negative_from_wire(data).is_none() {
        return;
    }
    // A clock that stands still: both answers stored at the same moment.
    static CACHE: OnceLock<AnswerCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        AnswerCache::new(&CacheConfig::default(), dnsward::clock::ManualClock::new())
    });
    let now = cache.now();
    let fast = cache
        .prepare_for(data, "fuzz".into(), false)
        .expect("the wire path");
    let slow = cache
        .prepare_decoded_for(data, "fuzz".into(), false)
        .expect("what the wire path takes, the decoding path takes");
    let (a, b) = (&fast.answer, &slow.answer);
    let (x, _) = a.stored(now);
    assert_eq!(
        a.stored(now),
        b.stored(now),
        "the stored message and its lifetime"
    );
    assert_eq!(a.weight(), b.weight());
    assert_eq!(
        (a.rcode, a.answers, a.signed_bytes, fast.cacheable),
        (b.rcode, b.answers, b.signed_bytes, slow.cacheable)
    );
    assert!(b.cname_targets.is_empty() && b.addresses.is_empty());
    assert_eq!(a.body_len(), b.body_len());
    // Served to a client: the same bytes (the TTL offsets stored after the message included).
    if let Some(question) = wire::question_of(x) {
        let mut query = vec![0x5a, 0x5a, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(question);
        if let Ok(q) = wire::parse_query(&query) {
            assert_eq!(a.render(&q, now, 512), b.render(&q, now, 512));
        }
    }
}

/// dnsward's answer encoder ([`dnsward::resolve::encode`]) against hickory's on whatever hickory
/// decodes: what it writes decodes to what hickory's own encoding of the message decodes to.
fn encoder_round_trip(data: &[u8]) {
    use hickory_proto::op::Message;
    let Ok(mut m) = Message::from_vec(data) else {
        return;
    };
    m.edns = None;
    m.signature = None;
    let Some(ours) = dnsward::resolve::encode::encode(&m) else {
        return;
    };
    let ours = Message::from_vec(&ours).expect("what the encoder writes decodes");
    if let Ok(theirs) = m.to_vec().map(|b| Message::from_vec(&b)) {
        let theirs = theirs.expect("hickory's own encoding decodes");
        assert_eq!(ours.metadata, theirs.metadata);
        assert_eq!(ours.queries, theirs.queries);
        assert_eq!(ours.answers, theirs.answers);
        assert_eq!(ours.authorities, theirs.authorities);
        assert_eq!(ours.additionals, theirs.additionals);
    }
}
