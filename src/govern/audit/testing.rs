//! Helpers shared by the audit chain's unit tests: events, keys, chains written to files.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::chain::{ChainEncoder, Hasher, SEAL_SUFFIX_LEN, parse_record};
use super::{AuditConfig, AuditKey, ProblemKind, VerifyReport, verify};
use crate::events::sink::{EventsConfig, LineEncoder, SinkKind, spawn_with_encoder};
use crate::events::{Event, EventBody, QueryEvent};

pub(super) fn event(n: u64) -> Event {
    Event {
        ts: format!("2026-11-25T19:40:{:02}.000000Z", n % 60),
        policy_version: 3,
        body: EventBody::Query(QueryEvent {
            client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
            agent: None,
            auth: "none".into(),
            group: Some("agents".into()),
            qname: format!("host{n}.example.com"),
            qtype: "A".into(),
            protocol: "udp".into(),
            verdict: "block".into(),
            reason: "not allowlisted".into(),
            rcode: "NXDOMAIN".into(),
            answers: 0,
            latency_us: n,
            cache_hit: false,
            upstream: None,
            count: 1,
        }),
    }
}

pub(super) fn key() -> AuditKey {
    AuditKey::new(b"0123456789abcdef0123456789abcdef".to_vec())
}

pub(super) fn other_key() -> AuditKey {
    AuditKey::new(vec![0x5a; 32])
}

pub(super) fn encode(encoder: &mut ChainEncoder, event: &Event) -> String {
    let mut out = Vec::new();
    encoder.encode_line(event, &mut out).unwrap();
    assert_eq!(out.pop(), Some(b'\n'));
    String::from_utf8(out).unwrap()
}

/// `n` records of a new chain, as lines without their `\n`.
pub(super) fn chain_lines(key: Option<&AuditKey>, n: u64) -> Vec<String> {
    let mut encoder = ChainEncoder::new(key);
    (0..n).map(|i| encode(&mut encoder, &event(i))).collect()
}

pub(super) fn write_log(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(&path, text).unwrap();
    (dir, path)
}

pub(super) fn check(lines: &[String], key: Option<&AuditKey>) -> VerifyReport {
    let (_dir, path) = write_log(lines);
    verify(&[path], key.map(AuditKey::as_bytes))
}

/// Kind, line and seq of the first problem.
pub(super) fn first(report: &VerifyReport) -> (ProblemKind, u64, Option<u64>) {
    let p = report
        .first_problem()
        .unwrap_or_else(|| panic!("no problem found:\n{report}"));
    (p.kind, p.line, p.seq)
}

/// An encoder continuing after the record on `line`, as someone who can read the log but
/// (for a keyed chain) not the key would set one up.
pub(super) fn forger_after(line: &str, key: Option<&AuditKey>) -> ChainEncoder {
    let fields = parse_record(line.as_bytes()).unwrap();
    let mut forger = ChainEncoder::new(key);
    forger.next_seq = fields.seq + 1;
    forger.prev = Hasher::new(key.map(AuditKey::as_bytes)).digest(line.as_bytes());
    forger
}

/// Recompute the seal of an unkeyed line, as anyone can.
pub(super) fn reseal(line: &str) -> String {
    let prefix = &line[..line.len() - SEAL_SUFFIX_LEN];
    let seal = hex::encode(Sha256::digest(prefix.as_bytes()));
    format!("{prefix},\"seal\":\"{seal}\"}}")
}

pub(super) fn sink_config(path: &Path, rotate_bytes: u64, keep: u32) -> EventsConfig {
    EventsConfig {
        sink: SinkKind::File,
        path: Some(path.to_path_buf()),
        rotate_bytes,
        keep,
        ..EventsConfig::default()
    }
}

/// One run of the real sink with the configured encoder: start (resuming), log, shut down.
pub(super) async fn run_sink(
    events: &EventsConfig,
    audit: &AuditConfig,
    range: std::ops::Range<u64>,
) {
    let encoder = audit.encoder(events).unwrap();
    let (tx, handle) = spawn_with_encoder(events, encoder).unwrap();
    for i in range {
        assert!(tx.emit(event(i)));
        if i % 3 == 0 {
            // Let the writer run now and then, so batches vary in size.
            tokio::task::yield_now().await;
        }
    }
    handle.shutdown().await;
}
