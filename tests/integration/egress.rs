//! DNS-gated egress through real sockets, without root: `[egress] nft` points at a stand-in
//! script that records each JSON batch it is fed (and can be slow), so the tests see exactly
//! what dnsward would hand to nftables and when. The real `nft` path is covered by
//! `tests/egress_e2e.rs` in network namespaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::*;

/// A stand-in for `nft`: appends every batch (stdin) to `log` as one line, after `delay`.
fn fake_nft(dir: &Path, delay: &str) -> (PathBuf, PathBuf) {
    let log = dir.join("nft-batches.log");
    let script = dir.join("fake-nft");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# dnsward test stand-in for nft\nsleep {delay}\ncat >> {log:?}\necho >> {log:?}\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

fn config(nft: &Path, max_wait: &str) -> String {
    format!(
        r#"
[egress]
nft = {nft:?}
read_denied = false
max_wait = "{max_wait}"

[[groups]]
name = "agents"
cidrs = ["127.0.0.10/32"]
allow = ["*.corp.internal", "www.example", "dns.google"]

[[groups]]
name = "ungated"
cidrs = ["127.0.0.20/32"]
allow = ["*.corp.internal"]
egress = false
"#
    )
}

fn batches(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test]
async fn an_answer_is_sent_only_after_its_addresses_are_in_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let (nft, log) = fake_nft(dir.path(), "0.3");
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .start()
        .await;
    let s = TestServer::start(Some(up.addr), &config(&nft, "1s")).await;

    // A local-zone answer (two A records): held until the batch is written.
    let t = Instant::now();
    let m = udp_query(s.udp, "127.0.0.10", "api.corp.internal", RecordType::A).await;
    let waited = t.elapsed();
    assert_eq!(a_records(&m).len(), 2);
    let written = batches(&log);
    assert!(
        written.contains("10.0.1.10") && written.contains("10.0.1.11"),
        "answer arrived before its batch was written ({waited:?}): {written}"
    );
    assert!(written.contains("allow4_agents"), "{written}");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");

    // The same answer again: already in the set, no write, no wait.
    let before = batches(&log).lines().count();
    let t = Instant::now();
    let _ = udp_query(s.udp, "127.0.0.10", "api.corp.internal", RecordType::A).await;
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(batches(&log).lines().count(), before);

    // Upstream answers: the miss, then a cache hit, which writes nothing new.
    let _ = udp_query(s.udp, "127.0.0.10", "www.example", RecordType::A).await;
    assert!(batches(&log).contains("192.0.2.1"));
    let before = batches(&log).lines().count();
    let m = udp_query(s.udp, "127.0.0.10", "www.example", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.1"]);
    assert_eq!(batches(&log).lines().count(), before);

    // A group with `egress = false` never writes.
    let _ = udp_query(s.udp, "127.0.0.20", "models.corp.internal", RecordType::A).await;
    assert!(!batches(&log).contains("10.0.2.20"));
}

#[tokio::test]
async fn a_slow_firewall_delays_answers_by_at_most_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (nft, log) = fake_nft(dir.path(), "2");
    let s = TestServer::start(None, &config(&nft, "50ms")).await;
    let t = Instant::now();
    let m = udp_query(s.udp, "127.0.0.10", "git.corp.internal", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.30"]);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // The write still happens (after the answer).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !batches(&log).contains("192.0.2.30") {
        assert!(Instant::now() < deadline, "the write never happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn encrypted_dns_canaries_and_resolvers_are_nxdomain_whatever_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (nft, _log) = fake_nft(dir.path(), "0");
    let mut s = TestServer::start(None, &config(&nft, "50ms")).await;
    for name in [
        "use-application-dns.net",
        "mask.icloud.com",
        "mask-h2.icloud.com",
    ] {
        let m = udp_query(s.udp, "127.0.0.10", name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    // Allowed by the group's own allowlist, blocked anyway.
    let m = udp_query(s.udp, "127.0.0.10", "dns.google", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let _ = udp_query(s.udp, "127.0.0.10", "dns.google", RecordType::HTTPS).await;
    let events = s.stop_and_read_events().await;
    let blocked: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "query" && e["qname"] == "dns.google")
        .collect();
    assert_eq!(blocked.len(), 2);
    assert!(blocked.iter().all(|e| {
        e["verdict"] == "block"
            && e["reason"]
                .as_str()
                .unwrap()
                .starts_with("encrypted-dns bypass")
    }));
    let alerts: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["breakdown"]["encrypted_dns_bypass"].is_number())
        .collect();
    assert_eq!(alerts.len(), 1, "one alert per client and name: {alerts:?}");
    assert_eq!(alerts[0]["domain"], "dns.google");
    // Canaries raise no alert (browsers ask them routinely).
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "alert" && e["domain"] == "use-application-dns.net")
    );
}

#[tokio::test]
async fn a_reload_that_switches_a_group_off_deletes_its_sets_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (nft, log) = fake_nft(dir.path(), "0");
    let s = TestServer::start(None, &config(&nft, "1s")).await;
    let _ = udp_query(s.udp, "127.0.0.10", "git.corp.internal", RecordType::A).await;
    assert!(batches(&log).contains("192.0.2.30"));
    s.edit_config_and_reload(|text| {
        text.replace(
            "allow = [\"*.corp.internal\", \"www.example\", \"dns.google\"]",
            "allow = [\"*.corp.internal\", \"www.example\", \"dns.google\"]\negress = false",
        )
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = loop {
        let all = batches(&log);
        if let Some(line) = all
            .lines()
            .rev()
            .find(|l| l.contains("\"delete\"") && l.contains("\"set\""))
        {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no set deletion batch: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let doc: serde_json::Value = serde_json::from_str(&last).unwrap();
    let deleted: Vec<&str> = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["delete"]["set"]["name"].as_str())
        .collect();
    assert_eq!(deleted, ["allow4_agents", "allow6_agents"]);
    // Its answers no longer write anything.
    let before = batches(&log).lines().count();
    let _ = udp_query(
        s.udp,
        "127.0.0.10",
        "pypi-mirror.corp.internal",
        RecordType::A,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(batches(&log).lines().count(), before);
}

/// Every `(set, address, timeout)` the batches in `log` added.
fn added_elements(log: &Path) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for line in batches(log).lines().filter(|l| !l.trim().is_empty()) {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for cmd in doc["nftables"].as_array().into_iter().flatten() {
            let e = &cmd["add"]["element"];
            for el in e["elem"].as_array().into_iter().flatten() {
                if let (Some(set), Some(val), Some(t)) = (
                    e["name"].as_str(),
                    el["elem"]["val"].as_str(),
                    el["elem"]["timeout"].as_u64(),
                ) {
                    out.push((set.to_string(), val.to_string(), t));
                }
            }
        }
    }
    out
}

/// A reload that gates a group fills its sets from what is cached and its policy lets it see,
/// with what is left of each TTL, before any new query: its agents keep reaching the addresses
/// they were already given.
#[tokio::test]
async fn a_reload_that_gates_a_group_fills_its_sets_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (nft, log) = fake_nft(dir.path(), "0");
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .with_a("other.example", [192, 0, 2, 2], 300)
        .with_a("never.example", [192, 0, 2, 9], 300)
        .start()
        .await;
    let cfg = format!(
        r#"
[egress]
nft = {nft:?}
read_denied = false
max_wait = "1s"

[[groups]]
name = "agents"
cidrs = ["127.0.0.10/32"]
allow = ["never.example"]

[[groups]]
name = "later"
cidrs = ["127.0.0.20/32"]
allow = ["www.example", "other.example"]
egress = false
"#
    );
    let s = TestServer::start(Some(up.addr), &cfg).await;
    for name in ["www.example", "other.example"] {
        let m = udp_query(s.udp, "127.0.0.20", name, RecordType::A).await;
        assert_eq!(a_records(&m).len(), 1, "{name}");
    }
    // Cached too, but "later" may not resolve it: it must not reach its address after the reload.
    let _ = udp_query(s.udp, "127.0.0.10", "never.example", RecordType::A).await;
    assert!(
        !added_elements(&log)
            .iter()
            .any(|(set, ..)| set == "allow4_later"),
        "an ungated group wrote"
    );
    s.edit_config_and_reload(|text| text.replace("egress = false\n", ""))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let later: Vec<(String, u64)> = loop {
        let later: Vec<(String, u64)> = added_elements(&log)
            .into_iter()
            .filter(|(set, ..)| set == "allow4_later")
            .map(|(_, ip, t)| (ip, t))
            .collect();
        if later.len() >= 2 {
            break later;
        }
        assert!(
            Instant::now() < deadline,
            "sets not filled: {}",
            batches(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut ips: Vec<&str> = later.iter().map(|(ip, _)| ip.as_str()).collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips, ["192.0.2.1", "192.0.2.2"], "{later:?}");
    // TTL 300 (minus what passed) + 30 s grace + an eighth of slack, never more.
    assert!(
        later.iter().all(|(_, t)| *t > 300 && *t <= 330 + 42),
        "{later:?}"
    );
    // The set's creation is the first command that names it (same queue, so it comes first).
    let all = batches(&log);
    let first = all
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|d| d["nftables"].as_array().cloned().unwrap_or_default())
        .find(|c| c.to_string().contains("allow4_later"))
        .unwrap();
    assert_eq!(first["add"]["set"]["name"], "allow4_later", "{all}");
}

/// Denied drops, fed through the real pipeline as the nflog reader would feed them (the reader
/// itself needs root: `tests/egress_e2e.rs`): attribution by the policy in force, containment of
/// that client alone on every name, monitor-only and ungated groups never contained, and an
/// analyst's release lifts it.
#[tokio::test]
async fn denied_drops_contain_their_own_client_through_the_pipeline() {
    use dnsward::egress::config::DeniedAction;
    use dnsward::egress::denied::DroppedPacket;
    use dnsward::egress::evidence::{DeniedEvidence, EvidenceSettings};
    use dnsward::events::EventBody;

    let dir = tempfile::tempdir().unwrap();
    let (nft, _log) = fake_nft(dir.path(), "0");
    let cfg = format!(
        r#"
[egress]
nft = {nft:?}
read_denied = false

[[groups]]
name = "agents"
cidrs = ["127.0.0.10/32", "127.0.0.11/32"]
allow = ["*.corp.internal"]

[[groups]]
name = "watched"
cidrs = ["127.0.0.30/32"]
allow = ["*.corp.internal"]
[groups.detect]
monitor_only = true

[[groups]]
name = "ungated"
cidrs = ["127.0.0.20/32"]
allow = ["*.corp.internal"]
egress = false
"#
    );
    let s = TestServer::start(None, &cfg).await;
    let pipeline = std::sync::Arc::clone(&s.app.as_ref().unwrap().pipeline);
    let settings = |action| EvidenceSettings {
        alert_after: 100,
        contain_after: 3,
        window: Duration::from_secs(60),
        action,
    };
    let mut evidence =
        DeniedEvidence::new(settings(DeniedAction::Sinkhole), pipeline.clock().clone());
    let sweep = |evidence: &mut DeniedEvidence, group: &str, src: &str| -> Vec<EventBody> {
        (1..=3u8)
            .flat_map(|i| {
                let p = DroppedPacket {
                    prefix: format!("dnsward-egress {group}: "),
                    src: src.parse().unwrap(),
                    dst: std::net::IpAddr::from([198, 19, 0, 20 + i]),
                    port: Some(443),
                    proto: "tcp".into(),
                };
                evidence.observe(&*pipeline, &p)
            })
            .collect()
    };
    let started = |bodies: &[EventBody]| {
        bodies
            .iter()
            .filter(|b| matches!(b, EventBody::ContainmentStarted(_)))
            .count()
    };
    // Ungated and monitor-only groups: never contained (the latter alerts).
    assert_eq!(started(&sweep(&mut evidence, "ungated", "127.0.0.20")), 0);
    let watched = sweep(&mut evidence, "watched", "127.0.0.30");
    assert_eq!(started(&watched), 0);
    assert!(
        watched
            .iter()
            .any(|b| matches!(b, EventBody::Alert(a) if a.monitor_only && a.group == "watched"))
    );
    // A drop logged by the agents' rule from a source the policy puts elsewhere: nobody's.
    assert_eq!(started(&sweep(&mut evidence, "agents", "127.0.0.30")), 0);
    // The agent: sinkholed on every name; its neighbour in the group is answered.
    let bodies = sweep(&mut evidence, "agents", "127.0.0.10");
    assert_eq!(started(&bodies), 1, "{bodies:?}");
    for name in ["git.corp.internal", "api.corp.internal"] {
        let m = udp_query(s.udp, "127.0.0.10", name, RecordType::A).await;
        assert_eq!(a_records(&m), ["0.0.0.0"], "{name}");
    }
    let m = udp_query(s.udp, "127.0.0.11", "git.corp.internal", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.30"]);
    for src in ["127.0.0.20", "127.0.0.30"] {
        let m = udp_query(s.udp, src, "git.corp.internal", RecordType::A).await;
        assert_eq!(a_records(&m), ["192.0.2.30"], "{src}");
    }
    // An analyst's release lifts it at once.
    let ended = pipeline.release(
        &pipeline.client_key("127.0.0.10".parse().unwrap()),
        "alice",
        "known scanner test",
    );
    assert_eq!(ended.len(), 1);
    let m = udp_query(s.udp, "127.0.0.10", "git.corp.internal", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.30"]);

    // With `quarantine` (for operators who vouch for their sources) the client is REFUSED.
    let mut evidence =
        DeniedEvidence::new(settings(DeniedAction::Quarantine), pipeline.clock().clone());
    assert_eq!(started(&sweep(&mut evidence, "agents", "127.0.0.11")), 1);
    let m = udp_query(s.udp, "127.0.0.11", "git.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = udp_query(s.udp, "127.0.0.10", "git.corp.internal", RecordType::A).await;
    assert_eq!(a_records(&m), ["192.0.2.30"]);
}
