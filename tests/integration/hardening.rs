//! Hardening of the governance surface (issue 9): secrets only their owner can read, the token
//! only where it belongs, bounded inputs, what `/metrics` tells a stranger, and event files
//! that cannot be redirected.

use std::os::unix::fs::PermissionsExt;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::harness::*;

const GROUP: &str = r#"
[[groups]]
name = "hardened-secret-group"
cidrs = ["127.0.0.90/32"]
allow = ["*.corp.internal"]
"#;

fn api(s: &TestServer, path: &str) -> String {
    format!("http://{}{path}", s.admin.expect("admin endpoint"))
}

/// `dnsward check` on the harness's config after `token` got `mode`.
fn check_with_token_mode(s: &TestServer, mode: u32) -> std::process::Output {
    let token = s.config_path.with_file_name("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["check", "--config"])
        .arg(&s.config_path)
        .output()
        .unwrap()
}

#[tokio::test]
async fn check_refuses_a_token_file_others_can_read() {
    let s = TestServer::start(None, GROUP).await;
    let ok = check_with_token_mode(&s, 0o600);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for mode in [0o644, 0o640] {
        let out = check_with_token_mode(&s, mode);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "mode {mode:o} accepted: {text}");
        assert!(
            text.contains("admin.token_file") && text.contains("chmod 600"),
            "{text}"
        );
    }
    // A symlink to a good file is refused too.
    let token = s.config_path.with_file_name("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let real = s.config_path.with_file_name("token.real");
    std::fs::rename(&token, &real).unwrap();
    std::os::unix::fs::symlink(&real, &token).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["check", "--config"])
        .arg(&s.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("symlink"));
}

#[tokio::test]
async fn a_query_string_token_opens_only_the_html_page() {
    let s = TestServer::start(None, GROUP).await;
    let http = reqwest::Client::new();
    let t = &s.token;
    let page = http
        .get(api(&s, &format!("/?token={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    for path in ["/api/v1/policy", "/api/v1/alerts", "/api/v1/quarantines"] {
        let r = http
            .get(api(&s, &format!("{path}?token={t}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let r = http
        .post(api(&s, &format!("/api/v1/policy/reload?token={t}")))
        .json(&json!({"actor": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The same calls with the header work.
    let r = http
        .get(api(&s, "/api/v1/policy"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn a_reload_rereads_the_token() {
    let s = TestServer::start(None, GROUP).await;
    let http = reqwest::Client::new();
    let old = s.token.clone();
    let new = "rotated-token-fedcba9876543210fedcba9876543210";
    write_secret(&s.config_path.with_file_name("token"), new);
    let r = http
        .post(api(&s, "/api/v1/policy/reload"))
        .bearer_auth(&old)
        .json(&json!({"actor": "alice", "message": "rotate the token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let status = |tok: &str| {
        let req = http
            .get(api(&s, "/api/v1/policy"))
            .bearer_auth(tok.to_string());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&old).await, 401, "the old token still works");
    assert_eq!(status(new).await, 200);

    // A token file made world-readable is not taken (the reload is rejected, as `check`
    // would reject the file): the token in force stays.
    let path = s.config_path.with_file_name("token");
    std::fs::write(&path, "insecure-token-0123456789abcdef0123456789").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = http
        .post(api(&s, "/api/v1/policy/reload"))
        .bearer_auth(new)
        .json(&json!({"actor": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("chmod 600"), "{body}");
    assert_eq!(status(new).await, 200);
    assert_eq!(
        status("insecure-token-0123456789abcdef0123456789").await,
        401
    );
}

#[tokio::test]
async fn reload_fields_have_a_length_cap() {
    let mut s = TestServer::start(None, GROUP).await;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let req = http
            .post(api(&s, "/api/v1/policy/reload"))
            .bearer_auth(s.token.clone())
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(json!({"actor": "alice", "message": "x".repeat(1_200_000)})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("message"),
        "{body}"
    );
    let (status, _) = post(json!({"actor": "a".repeat(600)})).await;
    assert_eq!(status, 400);
    let (status, body) = post(json!({"actor": "alice", "message": "m".repeat(1024)})).await;
    assert_eq!(status, 200, "{body}");
    let events = s.stop_and_read_events().await;
    assert!(
        events
            .iter()
            .filter(|e| e["kind"] == "policy")
            .all(|e| e["message"].as_str().is_none_or(|m| m.len() <= 2048)),
        "an oversized message reached the log"
    );
}

#[tokio::test]
async fn metrics_without_the_token_hide_group_names() {
    let s = TestServer::start(None, GROUP).await;
    udp_query(s.udp, "127.0.0.90", "api.corp.internal", RecordType::A).await;
    let open = reqwest::get(api(&s, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(open.contains("dnsward_queries_total{"), "{open}");
    assert!(!open.contains("hardened-secret-group"), "{open}");
    let full = metrics_text(&s).await;
    assert!(full.contains("group=\"hardened-secret-group\""), "{full}");
}

#[tokio::test]
async fn event_files_are_private_and_never_followed_through_a_symlink() {
    let mut s = TestServer::start(None, GROUP).await;
    udp_query(s.udp, "127.0.0.90", "api.corp.internal", RecordType::A).await;
    let events = s.stop_and_read_events().await;
    assert!(!events.is_empty());
    let mode = std::fs::metadata(&s.events_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "events file mode {mode:o}");

    // A symlink planted where the log goes: the server refuses to start rather than write
    // through it.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "").unwrap();
    let path = dir.path().join("events.jsonl");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let cfg = dnsward::events::sink::EventsConfig {
        sink: dnsward::events::sink::SinkKind::File,
        path: Some(path),
        ..Default::default()
    };
    let err = dnsward::events::sink::spawn(&cfg).unwrap_err();
    assert!(err.to_string().contains("events.jsonl"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
}

#[tokio::test]
async fn unknown_client_queries_are_sampled_and_counted() {
    let extra = format!("unknown_client_per_minute = 3\n{GROUP}");
    let mut s = TestServer::start(None, &extra).await;
    let sampled = |m: &str| {
        crate::common::metric_sum(
            m,
            "dnsward_events_sampled_out_total",
            &[("kind", "unknown_client")],
        )
        .unwrap_or(0.0)
    };
    let before = sampled(&metrics_text(&s).await);
    for i in 0..20 {
        udp_query(
            s.udp,
            "127.0.0.99",
            &format!("q{i}.corp.internal"),
            RecordType::A,
        )
        .await;
    }
    // A known client is not sampled.
    for i in 0..5 {
        udp_query(
            s.udp,
            "127.0.0.90",
            &format!("k{i}.corp.internal"),
            RecordType::A,
        )
        .await;
    }
    let after = sampled(&metrics_text(&s).await);
    assert!(after - before >= 17.0, "sampled out {before} → {after}");
    let events = s.stop_and_read_events().await;
    let unknown = events
        .iter()
        .filter(|e| e["kind"] == "query" && e["client"] == "127.0.0.99")
        .count();
    assert_eq!(unknown, 3, "first 3 per source per minute are logged");
    let known = events
        .iter()
        .filter(|e| e["kind"] == "query" && e["client"] == "127.0.0.90")
        .count();
    assert_eq!(known, 5);
}

#[tokio::test]
async fn a_cut_tail_followed_by_a_restart_is_caught_by_the_checkpoints() {
    use dnsward::events::reader::rotated_files as chain_files;
    use dnsward::govern::audit::verify;
    use dnsward::govern::checkpoint::{CheckpointProblemKind, verify_for_log};

    let mut s = TestServer::start(None, GROUP).await;
    for i in 0..5 {
        udp_query(
            s.udp,
            "127.0.0.90",
            &format!("c{i}.corp.internal"),
            RecordType::A,
        )
        .await;
    }
    let events = s.stop_and_read_events().await;
    assert!(events.len() >= 6, "{events:#?}");
    // The shutdown checkpoint went beside the log (no [store] here) and agrees with it.
    let files = chain_files(&s.events_path);
    let report = verify_for_log(&files, None, None).expect("checkpoints beside the log");
    assert!(report.ok, "{report}");
    assert_eq!(report.last.as_ref().unwrap().cause, "shutdown");

    // Cut the newest two records, then restart the server from the same configuration.
    let text = std::fs::read_to_string(&s.events_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut: String = lines[..lines.len() - 2]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&s.events_path, cut).unwrap();
    let cfg = dnsward::config::Config::load(&s.config_path).unwrap();
    let app = dnsward::app::RunningApp::start(&cfg).await.unwrap();
    let udp = app.dns.udp_addrs[0];
    udp_query(udp, "127.0.0.90", "after.corp.internal", RecordType::A).await;
    app.shutdown().await;

    // The chain alone verifies (it resumed from the new last record)...
    let files = chain_files(&s.events_path);
    assert!(verify(&files, None).ok);
    // ...the checkpoints do not.
    let report = verify_for_log(&files, None, None).unwrap();
    assert!(!report.ok, "{report}");
    assert!(
        report.problems.iter().any(|p| matches!(
            p.kind,
            CheckpointProblemKind::Rewritten | CheckpointProblemKind::TailTruncated
        )),
        "{report}"
    );
}
