//! The review (issue 12) through a running server: every role boundary of the review API, every
//! triage transition with its side effects (exception + release, extension, deny proposal),
//! persistence across a restart, and the audit events naming the user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dnsward::app::RunningApp;
use dnsward::clock::ManualClock;
use dnsward::config::Config;
use dnsward::detect::testgen;
use dnsward::review::users::hash_token_hex;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::harness::*;

pub const ADMIN: &str = "review-admin-token-0123456789abcdef0123456789";
pub const ALICE: &str = "alice-analyst-token-0123456789abcdef012345";
pub const CAROL: &str = "carol-viewer-token-0123456789abcdef0123456";

/// A dnsward for review tests: events, state and tokens in `dir`, so a second start on the same
/// `dir` is a restart.
pub struct ReviewServer {
    pub app: Option<RunningApp>,
    pub udp: SocketAddr,
    pub base: String,
    pub events_path: PathBuf,
}

pub fn review_config(dir: &Path, upstream: SocketAddr) -> PathBuf {
    crate::harness::write_secret(&dir.join("token"), ADMIN);
    std::fs::write(
        dir.join("tokens"),
        format!(
            "# review users\nalice analyst {}\ncarol viewer {}\n",
            hash_token_hex(ALICE),
            hash_token_hex(CAROL)
        ),
    )
    .unwrap();
    let zones = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones");
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
udp_workers = 2
[admin]
listen = "127.0.0.1:0"
token_file = "token"
tokens_file = "tokens"
[upstream]
servers = [{{ address = "{upstream}", timeout = "500ms" }}]
timeout = "1s"
[zones]
dir = "{zones}"
[events]
sink = "file"
path = "{events}"
allowed = "on"
[store]
state_dir = "{state}"
[[groups]]
name = "rev"
cidrs = ["127.0.0.80/28"]
allow = ["*.tun.example", "*.tun2.example", "www.example"]
[groups.detect]
alert = 30
throttle = 40
sinkhole = 50
quarantine = 60
"#,
        zones = zones.display(),
        events = dir.join("events.jsonl").display(),
        state = dir.join("state").display(),
    );
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl ReviewServer {
    pub async fn start(
        dir: &Path,
        upstream: SocketAddr,
        clock: std::sync::Arc<ManualClock>,
    ) -> Self {
        let path = review_config(dir, upstream);
        let cfg = Config::load(&path).unwrap_or_else(|p| panic!("{p}"));
        let app = RunningApp::start_with_clock(&cfg, clock)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            udp: app.dns.udp_addrs[0],
            base: format!("http://{}", app.admin.as_ref().unwrap().addr),
            app: Some(app),
            events_path: dir.join("events.jsonl"),
        }
    }

    /// Start on `dir` as it is (a restart that keeps a config edited since).
    pub async fn start_existing(dir: &Path, clock: std::sync::Arc<ManualClock>) -> Self {
        let path = dir.join("dnsward.toml");
        let cfg = Config::load(&path).unwrap_or_else(|p| panic!("{p}"));
        let app = RunningApp::start_with_clock(&cfg, clock)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            udp: app.dns.udp_addrs[0],
            base: format!("http://{}", app.admin.as_ref().unwrap().addr),
            app: Some(app),
            events_path: dir.join("events.jsonl"),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    pub async fn get(&self, token: Option<&str>, path: &str) -> (u16, Value) {
        let mut r = reqwest::Client::new().get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Wait until the queue (as `token`) lists `client` on `domain` (the event writer is
    /// asynchronous); returns the item.
    pub async fn wait_for_suspect(&self, client: &str, domain: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self
                .get(Some(CAROL), "/api/v1/review/suspects?state=all")
                .await;
            assert_eq!(status, 200, "{body}");
            if let Some(s) = body["suspects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["client"] == client && s["domain"] == domain)
            {
                return s.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{client} on {domain} never queued: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Send a base32 tunnel to `domain` from `src`, advancing the clock; returns refused answers.
pub async fn tunnel(udp: SocketAddr, clock: &ManualClock, src: &str, domain: &str) -> usize {
    let traffic = testgen::iodine_base32(domain, 120, 11);
    let mut refused = 0;
    // The tunnel echoes its DNS Cookie, so its source address is proven and dnsward may
    // quarantine it (spoofable UDP evidence only sinkholes the domain).
    let mut cookie: Option<Vec<u8>> = None;
    for q in &traffic.queries {
        let packet = with_cookie(raw_name_query(&q.qname, q.qtype), [7; 8], cookie.as_deref());
        let raw = udp_raw(udp, src.parse().unwrap(), &packet).await.unwrap();
        if let Some(c) = server_cookie(&raw) {
            cookie = Some(c);
        }
        if Message::from_vec(&raw).unwrap().metadata.response_code == ResponseCode::Refused {
            refused += 1;
        }
        clock.advance(traffic.interval);
    }
    refused
}

pub async fn answered(udp: SocketAddr, src: &str) -> bool {
    udp_query(udp, src, "www.example", RecordType::A)
        .await
        .metadata
        .response_code
        == ResponseCode::NoError
}

/// A review server on a fresh directory with an upstream that answers nothing in particular:
/// the upstream, the directory and the server.
async fn plain_server() -> (RunningUpstream, tempfile::TempDir, ReviewServer) {
    let up = FakeUpstream::new().start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = ReviewServer::start(dir.path(), up.addr, ManualClock::new()).await;
    (up, dir, s)
}

/// A review server on a fresh directory whose `client` has tunnelled to `tun.example` (and
/// been contained) and is in the queue: the upstream, the directory, the clock and the server.
async fn with_suspect(
    client: &str,
) -> (
    RunningUpstream,
    tempfile::TempDir,
    std::sync::Arc<ManualClock>,
    ReviewServer,
) {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let s = ReviewServer::start(dir.path(), up.addr, clock.clone()).await;
    assert!(tunnel(s.udp, &clock, client, "tun.example").await > 0);
    s.wait_for_suspect(client, "tun.example").await;
    (up, dir, clock, s)
}

fn step(to: &str, note: &str) -> Value {
    json!({ "to": to, "note": note })
}

const T80: &str = "/api/v1/review/suspects/127.0.0.80/tun.example/transition";
const T81: &str = "/api/v1/review/suspects/127.0.0.81/tun2.example/transition";

#[tokio::test]
async fn roles_transitions_side_effects_restart_and_audit() {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut s = ReviewServer::start(dir.path(), up.addr, clock.clone()).await;
    assert!(tunnel(s.udp, &clock, "127.0.0.80", "tun.example").await > 0);
    assert!(!answered(s.udp, "127.0.0.80").await, "quarantined");
    let item = s.wait_for_suspect("127.0.0.80", "tun.example").await;
    assert_eq!(item["state"], "open");
    assert_eq!(item["group"], "rev");
    assert!(item["max_score"].as_u64().unwrap() >= 60, "{item}");
    assert!(
        item["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "quarantine")
    );

    // Authentication: no token, an unknown token, a token in the query string: 401.
    assert_eq!(s.get(None, "/api/v1/review/suspects").await.0, 401);
    assert_eq!(
        s.get(Some("nope-nope-nope"), "/api/v1/review/suspects")
            .await
            .0,
        401
    );
    assert_eq!(
        s.get(None, &format!("/api/v1/review/suspects?token={CAROL}"))
            .await
            .0,
        401
    );
    let (_, me) = s.get(Some(ALICE), "/api/v1/review/whoami").await;
    assert_eq!(me, json!({"user": "alice", "role": "analyst"}));
    let (_, me) = s.get(Some(ADMIN), "/api/v1/review/whoami").await;
    assert_eq!(me, json!({"user": "admin", "role": "admin"}));

    // Role boundaries: a viewer reads but cannot triage or release; an analyst cannot reload,
    // roll back or see the tokens; the admin can.
    let (status, body) = s.post(CAROL, T80, step("released", "viewer tries")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("carol is viewer"));
    assert_eq!(s.post(CAROL, T80, step("acknowledged", "x")).await.0, 403);
    let (status, body) = s
        .post(ALICE, "/api/v1/review/policy/reload", json!({}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        s.post(
            ALICE,
            "/api/v1/review/policy/rollback",
            json!({"reason": "x"})
        )
        .await
        .0,
        403
    );
    assert_eq!(s.get(Some(ALICE), "/api/v1/review/tokens").await.0, 403);
    assert_eq!(
        s.post(ALICE, "/api/v1/review/tokens/reload", json!({}))
            .await
            .0,
        403
    );
    assert_eq!(
        s.post(CAROL, "/api/v1/review/policy/reload", json!({}))
            .await
            .0,
        403
    );
    // The pre-existing admin API still takes only the admin token.
    assert_eq!(
        reqwest::Client::new()
            .post(format!("{}/api/v1/policy/reload", s.base))
            .bearer_auth(ALICE)
            .json(&json!({"actor": "alice"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let (status, users) = s.get(Some(ADMIN), "/api/v1/review/tokens").await;
    assert_eq!(status, 200);
    assert_eq!(users.as_array().unwrap().len(), 3, "{users}");
    assert!(
        !users.to_string().contains(&hash_token_hex(ALICE)),
        "hashes are never shown"
    );
    let (status, body) = s
        .post(
            ADMIN,
            "/api/v1/review/policy/reload",
            json!({"message": "no change"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for path in [
        "/api/v1/review/agents",
        "/api/v1/review/policy/history",
        "/api/v1/review/exceptions",
        "/api/v1/review/proposals",
    ] {
        assert_eq!(s.get(Some(CAROL), path).await.0, 200, "{path}");
    }

    // Input checks: empty note, unknown state, a step the workflow refuses, an unknown suspect.
    assert_eq!(s.post(ALICE, T80, step("acknowledged", "  ")).await.0, 400);
    assert_eq!(s.post(ALICE, T80, step("escalated", "x")).await.0, 400);
    assert_eq!(s.post(ALICE, T80, step("open", "x")).await.0, 400);
    // A note may have paragraphs, not terminal controls.
    let (status, body) = s
        .post(ALICE, T80, step("acknowledged", "ok\u{1b}]0;pwned\u{7}"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("U+001B"), "{body}");
    assert_eq!(
        s.post(
            ALICE,
            "/api/v1/review/suspects/127.0.0.99/tun.example/transition",
            step("acknowledged", "x")
        )
        .await
        .0,
        404
    );

    // open -> acknowledged (a stale `expect` is refused), then -> confirmed with an extension
    // and a deny-list proposal.
    let (status, t) = s
        .post(
            ALICE,
            T80,
            json!({"to": "acknowledged", "note": "looking", "expect": "open"}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        (t["from"].as_str(), t["to"].as_str(), t["user"].as_str()),
        (Some("open"), Some("acknowledged"), Some("alice"))
    );
    let (status, body) = s
        .post(
            ALICE,
            T80,
            json!({"to": "confirmed", "note": "x", "expect": "open"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        s.post(ALICE, T80, step("acknowledged", "again")).await.0,
        409
    );
    let (status, t) = s
        .post(
            ALICE,
            T80,
            json!({"to": "confirmed", "note": "real iodine", "extend": "6h", "propose_deny": true}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    let effects = t["effects"].to_string();
    assert!(
        effects.contains("extended ") && !effects.contains("extended 0"),
        "{effects}"
    );
    assert!(effects.contains("proposed policy version 2"), "{effects}");
    let (_, quarantines) = s.get(Some(ADMIN), "/api/v1/quarantines").await;
    assert!(
        quarantines[0]["expires_in_secs"].as_u64().unwrap() >= 6 * 3600 - 5,
        "{quarantines}"
    );
    let (_, proposals) = s.get(Some(CAROL), "/api/v1/review/proposals").await;
    assert_eq!(proposals[0]["author"], "alice");
    assert_eq!(proposals[0]["status"], "proposed");
    assert_eq!(
        proposals[0]["change"],
        "deny \"tun.example\" in group \"rev\""
    );
    assert!(
        !answered(s.udp, "127.0.0.80").await,
        "confirmed: still contained"
    );
    // The policy is not changed by a proposal: it is a second, proposed version.
    let (_, history) = s.get(Some(CAROL), "/api/v1/review/policy/history").await;
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    assert_eq!(history["active"], 1, "{history}");
    // confirmed -> released: the client is answered again.
    let (status, t) = s.post(ALICE, T80, step("released", "agent rebuilt")).await;
    assert_eq!(status, 200, "{t}");
    assert!(
        t["effects"].to_string().contains("released quarantine"),
        "{t}"
    );
    assert!(answered(s.udp, "127.0.0.80").await);
    assert_eq!(s.post(ALICE, T80, step("acknowledged", "x")).await.0, 409);

    // A second client: open -> false_positive adds the exception and releases in one action.
    assert!(tunnel(s.udp, &clock, "127.0.0.81", "tun2.example").await > 0);
    s.wait_for_suspect("127.0.0.81", "tun2.example").await;
    assert!(!answered(s.udp, "127.0.0.81").await);
    let (status, t) = s
        .post(
            ALICE,
            T81,
            json!({"to": "false_positive", "note": "vendor backup sync", "exception_days": 3}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert!(
        answered(s.udp, "127.0.0.81").await,
        "released with the false positive"
    );
    let (_, ex) = s.get(Some(CAROL), "/api/v1/review/exceptions").await;
    let ex = ex.as_array().unwrap();
    assert!(
        ex.iter().any(|e| e["domain"] == "tun2.example"
            && e["group"] == "rev"
            && e["actor"] == "alice"
            && e["reason"] == "vendor backup sync"),
        "{ex:?}"
    );
    // The exception works: the same traffic from the same client is no longer contained.
    assert_eq!(tunnel(s.udp, &clock, "127.0.0.81", "tun2.example").await, 0);
    // The queue no longer lists either (default: pending only).
    let (_, pending) = s.get(Some(CAROL), "/api/v1/review/suspects").await;
    assert!(
        pending["suspects"].as_array().unwrap().is_empty(),
        "{pending}"
    );

    // Restart on the same state: the triage records are still there.
    s.stop().await;
    let mut s = ReviewServer::start(dir.path(), up.addr, ManualClock::new()).await;
    let (status, shown) = s
        .get(
            Some(CAROL),
            "/api/v1/review/suspects/127.0.0.80/tun.example",
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["suspect"]["state"], "released");
    // A path that does not decode: the API's JSON error, not a plain-text page.
    let (status, bad) = s.get(Some(CAROL), "/api/v1/review/suspects/%00/%ff").await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid path")),
        "{bad}"
    );
    let steps: Vec<(&str, &str)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["to"].as_str().unwrap(), h["user"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("acknowledged", "alice"),
            ("confirmed", "alice"),
            ("released", "alice")
        ]
    );
    assert!(!shown["timeline"]["items"].as_array().unwrap().is_empty());
    assert!(!shown["timeline"]["series"].as_array().unwrap().is_empty());
    let item = s.wait_for_suspect("127.0.0.81", "tun2.example").await;
    assert_eq!(item["state"], "false_positive");
    s.stop().await;

    // Audit: every transition is an admin event with the user, in the (chained) event log.
    let events: Vec<Value> = std::fs::read_to_string(&s.events_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for action in [
        "triage_acknowledged",
        "triage_confirmed",
        "triage_released",
        "triage_false_positive",
    ] {
        assert!(
            events.iter().any(|e| e["kind"] == "admin"
                && e["action"] == action
                && e["actor"] == "alice"
                && e["status"] == 200),
            "no {action} by alice"
        );
    }
    assert!(events.iter().any(|e| e["kind"] == "admin"
        && e["status"] == 403
        && e["actor"] == "carol"
        && e["path"] == T80));
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "admin" && e["action"] == "reload" && e["actor"] == "admin")
    );
    assert!(events.iter().any(|e| {
        e["kind"] == "containment_ended"
            && e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("released by alice: vendor backup sync")
    }));
}

#[tokio::test]
async fn the_review_cli_lists_shows_and_triages_over_the_api() {
    use dnsward::review::cli::{ReviewCommand, run};
    let (_up, _dir, _clock, mut s) = with_suspect("127.0.0.82").await;
    let list = run(
        &s.base,
        CAROL,
        &ReviewCommand::List {
            all: false,
            client: None,
            json: false,
        },
    )
    .await;
    assert_eq!(list.status, 0, "{}", list.text);
    assert!(
        list.text.contains("127.0.0.82 tun.example")
            && list.text.contains("open")
            && list.text.contains("quarantine"),
        "{}",
        list.text
    );
    let show = run(
        &s.base,
        CAROL,
        &ReviewCommand::Show {
            client: "127.0.0.82".into(),
            domain: "tun.example".into(),
            json: false,
        },
    )
    .await;
    assert_eq!(show.status, 0, "{}", show.text);
    assert!(
        show.text.contains("score") && show.text.contains("breakdown:"),
        "{}",
        show.text
    );
    // A viewer is refused (exit 1, the API's reason); an unreachable API is exit 2.
    let refused = run(
        &s.base,
        CAROL,
        &ReviewCommand::Ack {
            client: "127.0.0.82".into(),
            domain: "tun.example".into(),
            note: "x".into(),
        },
    )
    .await;
    assert_eq!(refused.status, 1);
    assert!(
        refused.text.starts_with("403: carol is viewer"),
        "{}",
        refused.text
    );
    let ack = run(
        &s.base,
        ALICE,
        &ReviewCommand::Ack {
            client: "127.0.0.82".into(),
            domain: "tun.example".into(),
            note: "on it".into(),
        },
    )
    .await;
    assert_eq!(ack.status, 0, "{}", ack.text);
    assert_eq!(
        ack.text,
        "127.0.0.82 on tun.example: open -> acknowledged by alice"
    );
    let again = run(
        &s.base,
        ALICE,
        &ReviewCommand::Ack {
            client: "127.0.0.82".into(),
            domain: "tun.example".into(),
            note: "x".into(),
        },
    )
    .await;
    assert_eq!(again.status, 1, "{}", again.text);
    let fp = run(
        &s.base,
        ALICE,
        &ReviewCommand::FalsePositive {
            client: "127.0.0.82".into(),
            domain: "tun.example".into(),
            note: "backup".into(),
            days: Some(2),
        },
    )
    .await;
    assert_eq!(fp.status, 0, "{}", fp.text);
    assert!(
        fp.text.contains("exception #") && fp.text.contains("released quarantine"),
        "{}",
        fp.text
    );
    assert!(answered(s.udp, "127.0.0.82").await);
    let empty = run(
        &s.base,
        ALICE,
        &ReviewCommand::List {
            all: false,
            client: None,
            json: false,
        },
    )
    .await;
    assert_eq!(empty.text, "no suspects to review");
    s.stop().await;
    let down = run(
        &s.base,
        ALICE,
        &ReviewCommand::List {
            all: true,
            client: None,
            json: true,
        },
    )
    .await;
    assert_eq!(down.status, 2, "{}", down.text);
}

#[tokio::test]
async fn without_an_event_file_the_queue_comes_from_the_alerts_in_memory() {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = review_config(dir.path(), up.addr);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("sink = \"file\"", "sink = \"none\"")
        .lines()
        .filter(|l| !l.starts_with("path = "))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(&path).unwrap_or_else(|p| panic!("{p}"));
    let clock = ManualClock::new();
    let app = RunningApp::start_with_clock(&cfg, clock.clone())
        .await
        .unwrap();
    let s = ReviewServer {
        udp: app.dns.udp_addrs[0],
        base: format!("http://{}", app.admin.as_ref().unwrap().addr),
        app: Some(app),
        events_path: dir.path().join("events.jsonl"),
    };
    assert!(tunnel(s.udp, &clock, "127.0.0.83", "tun.example").await > 0);
    let item = s.wait_for_suspect("127.0.0.83", "tun.example").await;
    assert!(item["max_score"].as_u64().unwrap() >= 60, "{item}");
    assert!(
        item["breakdown"].as_object().is_some_and(|b| !b.is_empty()),
        "{item}"
    );
    assert!(!item["samples"].as_array().unwrap().is_empty(), "{item}");
    let (status, t) = s
        .post(
            ALICE,
            "/api/v1/review/suspects/127.0.0.83/tun.example/transition",
            step("released", "checked"),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert!(answered(s.udp, "127.0.0.83").await);
    assert!(!s.events_path.exists(), "no event file was written");
    let mut s = s;
    s.stop().await;
}

#[tokio::test]
async fn two_analysts_acting_at_once_get_one_step_and_one_refusal() {
    let (_up, _dir, _clock, mut s) = with_suspect("127.0.0.84").await;
    let path = "/api/v1/review/suspects/127.0.0.84/tun.example/transition";
    let fp = json!({"to": "false_positive", "note": "mine", "exception_days": 1});
    let rel = step("released", "no, mine");
    let (a, b) = tokio::join!(s.post(ALICE, path, fp), s.post(ADMIN, path, rel));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (_, shown) = s
        .get(
            Some(CAROL),
            "/api/v1/review/suspects/127.0.0.84/tun.example",
        )
        .await;
    assert_eq!(shown["history"].as_array().unwrap().len(), 1, "{shown}");
    // The same suspect by its IPv4-mapped address, in one view and in the list.
    let (status, mapped) = s
        .get(
            Some(CAROL),
            "/api/v1/review/suspects/::ffff:127.0.0.84/tun.example",
        )
        .await;
    assert_eq!(status, 200, "{mapped}");
    assert_eq!(mapped["history"], shown["history"]);
    let (_, listed) = s
        .get(
            Some(CAROL),
            "/api/v1/review/suspects?state=all&client=::ffff:127.0.0.84",
        )
        .await;
    assert_eq!(listed["suspects"].as_array().unwrap().len(), 1, "{listed}");
    // Only the winner's effects happened: at most one exception.
    let (_, ex) = s.get(Some(CAROL), "/api/v1/review/exceptions").await;
    assert!(ex.as_array().unwrap().len() <= 1, "{ex}");
    s.stop().await;
}

/// The groups' deny list through review: an analyst's "confirmed" with a deny proposal is a
/// proposed policy version (author, status, diff) that changes nothing until an admin applies
/// it; the roles hold at each step, the proposal survives a restart, and the chained event log
/// names both users.
#[tokio::test]
async fn a_confirmed_deny_proposal_is_a_policy_version_an_admin_applies() {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .with_a("www.tun.example", [192, 0, 2, 7], 300)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut s = ReviewServer::start(dir.path(), up.addr, clock.clone()).await;
    assert!(tunnel(s.udp, &clock, "127.0.0.80", "tun.example").await > 0);
    s.wait_for_suspect("127.0.0.80", "tun.example").await;
    // Another client of the group, not contained, resolves names under the domain.
    let rcode = |udp: SocketAddr| async move {
        udp_query(udp, "127.0.0.83", "www.tun.example", RecordType::A)
            .await
            .metadata
            .response_code
    };
    assert_eq!(rcode(s.udp).await, ResponseCode::NoError);

    let confirm =
        json!({"to": "confirmed", "note": "iodine from the build agent", "propose_deny": true});
    let (status, body) = s.post(CAROL, T80, confirm.clone()).await;
    assert_eq!(status, 403, "a viewer cannot confirm: {body}");
    let (status, t) = s.post(ALICE, T80, confirm).await;
    assert_eq!(status, 200, "{t}");
    assert!(
        t["effects"]
            .to_string()
            .contains("proposed policy version 2 to deny tun.example in group rev"),
        "{t}"
    );

    // History: version 2 is proposed by alice with her note; version 1 still runs.
    let (_, history) = s.get(Some(CAROL), "/api/v1/review/policy/history").await;
    assert_eq!(history["active"], 1, "{history}");
    let v2 = &history["versions"][1];
    assert_eq!(
        (&v2["number"], &v2["status"], &v2["action"], &v2["author"]),
        (
            &json!(2),
            &json!("proposed"),
            &json!("propose"),
            &json!("alice")
        ),
        "{history}"
    );
    assert_eq!(v2["message"], "iodine from the build agent");
    assert_eq!(v2["proposed_against"], 1);
    assert!(v2.get("applied_in").is_none(), "{v2}");
    let (_, proposals) = s.get(Some(CAROL), "/api/v1/review/proposals").await;
    assert_eq!(proposals[0]["number"], 2, "{proposals}");
    assert_eq!(
        proposals[0]["change"],
        "deny \"tun.example\" in group \"rev\""
    );
    // The diff against the running version is the one deny line.
    let diff = reqwest::Client::new()
        .get(format!("{}/api/v1/review/policy/diff?a=1&b=2", s.base))
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(changed, ["+deny = [\"tun.example\"]"], "{diff}");
    eprintln!("$ dnsward policy diff 1 2\n{diff}");
    // Not applied: the same query is still answered.
    assert_eq!(rcode(s.udp).await, ResponseCode::NoError);

    // Role boundary: an analyst cannot apply; nobody rolls back to a proposal.
    let apply = json!({"version": 2, "reason": "confirmed tunnel, deny the domain"});
    let (status, body) = s
        .post(ALICE, "/api/v1/review/policy/apply", apply.clone())
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = s
        .post(
            ADMIN,
            "/api/v1/review/policy/rollback",
            json!({"to": 2, "reason": "x"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("is a proposal"),
        "{body}"
    );
    let (status, body) = s
        .post(
            ADMIN,
            "/api/v1/review/policy/rollback",
            json!({"to": 1, "reason": "x\u{202e}y"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("reason contains"),
        "{body}"
    );
    assert_eq!(rcode(s.udp).await, ResponseCode::NoError);

    // A restart keeps the proposal pending and version 1 running (the same files are not a
    // new version).
    s.stop().await;
    let mut s = ReviewServer::start(dir.path(), up.addr, clock.clone()).await;
    let (_, history) = s.get(Some(CAROL), "/api/v1/review/policy/history").await;
    assert_eq!(history["active"], 1, "{history}");
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    assert_eq!(history["versions"][1]["status"], "proposed");
    assert_eq!(rcode(s.udp).await, ResponseCode::NoError);

    // The admin applies it: version 3, authored by the admin; the query is now blocked with
    // the group's block answer (NXDOMAIN by default).
    let (status, v3) = s
        .post(ADMIN, "/api/v1/review/policy/apply", apply.clone())
        .await;
    assert_eq!(status, 200, "{v3}");
    assert_eq!(
        (
            &v3["number"],
            &v3["action"],
            &v3["author"],
            &v3["rolled_back_to"]
        ),
        (&json!(3), &json!("apply"), &json!("admin"), &json!(2)),
        "{v3}"
    );
    assert_eq!(rcode(s.udp).await, ResponseCode::NXDomain);
    // The change is in the store; the live config does not have it yet, and the answer says so.
    let config_path = std::fs::canonicalize(dir.path().join("dnsward.toml")).unwrap();
    assert_eq!(
        v3["live_differs"],
        json!([config_path.display().to_string()]),
        "{v3}"
    );
    let other = udp_query(s.udp, "127.0.0.83", "www.example", RecordType::A).await;
    assert_eq!(other.metadata.response_code, ResponseCode::NoError);
    let (_, history) = s.get(Some(CAROL), "/api/v1/review/policy/history").await;
    assert_eq!(history["active"], 3, "{history}");
    assert_eq!(history["versions"][1]["applied_in"], 3, "{history}");
    // The admin API (shared token) lists the same history with statuses.
    let (_, admin_history) = s.get(Some(ADMIN), "/api/v1/policy/history").await;
    assert_eq!(admin_history[1]["status"], "proposed", "{admin_history}");
    assert_eq!(admin_history[2]["status"], "applied", "{admin_history}");
    // A second apply of the same proposal changes nothing more but is allowed only while its
    // base is running: it is not (version 3 runs version 2's content), so it is refused, as a
    // conflict with the running policy (409), not a malformed request.
    let (status, body) = s.post(ADMIN, "/api/v1/review/policy/apply", apply).await;
    assert_eq!(status, 409, "{body}");
    s.stop().await;

    // The CLI shows the proposal with its author and status.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["policy", "history", "--config"])
        .arg(dir.path().join("dnsward.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown with --nocapture: the real output the docs quote.
    eprintln!("$ dnsward policy history\n{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("2 "))
        .unwrap();
    assert!(
        row.contains("propose→1") && row.contains("applied in 3") && row.contains("alice"),
        "{text}"
    );

    // Written back to the live config, the applied version is what a restart loads (the same
    // content: still version 3, still blocked).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["policy", "cat", "3", "--write-back", "--config"])
        .arg(dir.path().join("dnsward.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = std::fs::read_to_string(dir.path().join("dnsward.toml")).unwrap();
    assert!(
        live.contains("deny = [\"tun.example\"]") && live.contains("[groups.detect]"),
        "{live}"
    );
    let mut s = ReviewServer::start_existing(dir.path(), clock.clone()).await;
    let (_, history) = s.get(Some(CAROL), "/api/v1/review/policy/history").await;
    assert_eq!(history["active"], 3, "{history}");
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        3,
        "{history}"
    );
    assert_eq!(rcode(s.udp).await, ResponseCode::NXDomain);
    s.stop().await;

    // Audit: the chained log verifies and names alice for the proposal, admin for the apply.
    let files = dnsward::events::reader::rotated_files(&s.events_path);
    let report = dnsward::govern::audit::verify(&files, None);
    assert!(report.ok, "{:?}", report.first_problem());
    let events: Vec<Value> = std::fs::read_to_string(&s.events_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |kind: &str, action: &str, actor: &str| {
        events
            .iter()
            .any(|e| e["kind"] == kind && e["action"] == action && e["actor"] == actor)
    };
    assert!(has("policy", "proposed", "alice"));
    assert!(has("admin", "triage_confirmed", "alice"));
    assert!(has("policy", "applied", "admin"));
    assert!(has("admin", "apply", "admin"));
    assert!(!has("admin", "apply", "alice"));
    assert!(events.iter().any(|e| e["kind"] == "admin"
        && e["status"] == 403
        && e["actor"] == "alice"
        && e["path"] == "/api/v1/review/policy/apply"));
}

/// One corrupt version manifest (a disk fault, an edit) does not take the policy history down:
/// both APIs and `dnsward policy history` list the readable versions and the corrupt one as
/// such; a rollback to it is refused by name, one to another version works.
#[tokio::test]
async fn a_corrupt_version_manifest_is_listed_and_the_rest_of_the_history_is_served() {
    let (_up, dir, mut s) = plain_server().await;
    // Version 2: one more allowed name.
    let config = dir.path().join("dnsward.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"www.example\"]", "\"www.example\", \"git.example\"]");
    std::fs::write(&config, text).unwrap();
    let (status, body) = s
        .post(
            ADMIN,
            "/api/v1/review/policy/reload",
            json!({"message": "allow git"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
    // Version 2's manifest is cut short; the restart records version 3 after it.
    std::fs::write(
        dir.path().join("state/versions/2.json"),
        "{\"number\": 2, \"hash\": \n",
    )
    .unwrap();
    let mut s = ReviewServer::start_existing(dir.path(), ManualClock::new()).await;

    let (status, history) = s.get(Some(ADMIN), "/api/v1/policy/history").await;
    assert_eq!(status, 200, "{history}");
    let numbers: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["number"])
        .collect();
    assert_eq!(numbers, [&json!(1), &json!(2), &json!(3)], "{history}");
    assert!(
        history[1]["corrupt"].as_str().unwrap().contains("EOF"),
        "{history}"
    );
    assert_eq!(history[2]["action"], "load", "{history}");
    assert!(history[2]["hash"].is_string(), "{history}");
    let (status, review) = s.get(Some(CAROL), "/api/v1/review/policy/history").await;
    assert_eq!(status, 200, "{review}");
    assert_eq!(review["active"], 3, "{review}");
    assert_eq!(review["versions"][1]["corrupt"], history[1]["corrupt"]);
    assert_eq!(review["versions"][0]["action"], "load", "{review}");
    let (status, proposals) = s.get(Some(CAROL), "/api/v1/review/proposals").await;
    assert_eq!((status, proposals), (200, json!([])));

    // The readable versions still diff and roll back; the corrupt one is refused by name.
    let diff = reqwest::Client::new()
        .get(format!("{}/api/v1/review/policy/diff?a=1&b=3", s.base))
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        diff.contains("+allow") && diff.contains("git.example"),
        "{diff}"
    );
    let (status, body) = s
        .post(
            ADMIN,
            "/api/v1/review/policy/rollback",
            json!({"to": 2, "reason": "x"}),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("corrupt version manifest") && error.contains("2.json"),
        "{body}"
    );
    let (status, body) = s
        .post(
            ADMIN,
            "/api/v1/review/policy/rollback",
            json!({"to": 1, "reason": "git not needed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;

    // The CLI: a row for the corrupt version among the others, and the same JSON.
    let history = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dnsward"));
        cmd.args(["policy", "history", "--config"]).arg(&config);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let text = history(false);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 5, "a header and four versions: {text}");
    assert!(
        rows[2].trim_start().starts_with("2 ")
            && rows[2].contains("corrupt")
            && rows[2].contains("versions/2.json: EOF"),
        "{text}"
    );
    assert!(rows[4].contains("rollback→1"), "{text}");
    let json: Value = serde_json::from_str(&history(true)).unwrap();
    assert_eq!(json[1]["number"], 2);
    assert!(json[1]["corrupt"].is_string(), "{json}");
    assert_eq!(json[3]["rolled_back_to"], 1, "{json}");
}

/// One admin token for both APIs: rotating `admin.token_file` by either reload (the policy
/// reload, the review's tokens reload) revokes the old token on both at once, and a token file
/// the admin API would refuse (too short, empty) is refused by the tokens reload too, keeping
/// the running token.
#[tokio::test]
async fn rotating_the_admin_token_revokes_the_old_one_on_both_apis() {
    const NEXT: &str = "rotated-admin-token-0123456789abcdef0123456789";
    const THIRD: &str = "third-admin-token-0123456789abcdef0123456789ab";
    let (_up, dir, mut s) = plain_server().await;
    let admin_api = |token: &str| {
        reqwest::Client::new()
            .get(format!("{}/api/v1/policy", s.base))
            .bearer_auth(token.to_string())
            .send()
    };
    // The admin API's policy reload, as `token`.
    let admin_reload = |token: &str| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/policy/reload", s.base))
            .bearer_auth(token.to_string())
            .json(&json!({"actor": "ops"}))
            .send()
    };
    let whoami = "/api/v1/review/whoami";
    assert_eq!(s.get(Some(ADMIN), whoami).await.0, 200);

    // Rotated by the admin API's policy reload: the review API follows at once.
    crate::harness::write_secret(&dir.path().join("token"), NEXT);
    let r = admin_reload(ADMIN).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    assert_eq!(s.get(Some(ADMIN), whoami).await.0, 401, "old token revoked");
    let (status, me) = s.get(Some(NEXT), whoami).await;
    assert_eq!((status, me["user"].as_str()), (200, Some("admin")), "{me}");
    assert_eq!(admin_api(ADMIN).await.unwrap().status().as_u16(), 401);
    assert_eq!(admin_api(NEXT).await.unwrap().status().as_u16(), 200);

    // Rotated by the review's tokens reload: the admin API follows at once.
    crate::harness::write_secret(&dir.path().join("token"), THIRD);
    let (status, users) = s
        .post(NEXT, "/api/v1/review/tokens/reload", json!({}))
        .await;
    assert_eq!(status, 200, "{users}");
    assert_eq!(admin_api(NEXT).await.unwrap().status().as_u16(), 401);
    assert_eq!(admin_api(THIRD).await.unwrap().status().as_u16(), 200);
    assert_eq!(s.get(Some(NEXT), whoami).await.0, 401);

    // A token the admin API refuses is refused here too; the running one stays.
    for bad in ["short", ""] {
        crate::harness::write_secret(&dir.path().join("token"), bad);
        let (status, body) = s
            .post(THIRD, "/api/v1/review/tokens/reload", json!({}))
            .await;
        assert_eq!(status, 422, "{bad:?}: {body}");
        assert!(body.to_string().contains("at least 32"), "{body}");
        assert_eq!(s.get(Some(THIRD), whoami).await.0, 200);
        if !bad.is_empty() {
            assert_eq!(s.get(Some(bad), whoami).await.0, 401);
        }
        let (_, users) = s.get(Some(THIRD), "/api/v1/review/tokens").await;
        assert_eq!(
            users[0]["user"].as_str().or(users[0]["name"].as_str()),
            Some("admin"),
            "{users}"
        );
    }
    // A user's token written as the admin token: the reload goes on without it (a warning),
    // the running admin token stays and the user keeps its role.
    crate::harness::write_secret(&dir.path().join("token"), CAROL);
    let r = admin_reload(THIRD).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("token of a user"), "{body}");
    let (_, me) = s.get(Some(CAROL), whoami).await;
    assert_eq!(me["role"], "viewer", "{me}");
    assert_eq!(admin_api(THIRD).await.unwrap().status().as_u16(), 200);
    assert_eq!(admin_api(CAROL).await.unwrap().status().as_u16(), 401);
    s.stop().await;
}

/// The review API's reload message is held to the admin API's rules (at most 1024 bytes, no
/// terminal controls): an unbounded message went into the policy history and an event line
/// past the audit reader's line cap, and `audit verify` stopped there for good. A rollback's
/// audit detail names the version it re-activates as a number.
#[tokio::test]
async fn the_review_reload_message_is_bounded_and_a_rollback_is_recorded_plainly() {
    let (_up, dir, mut s) = plain_server().await;
    let reload = "/api/v1/review/policy/reload";
    for bad in [
        "m".repeat(1500),
        "clear\u{1b}[2J".to_string(),
        "nul\u{0}".to_string(),
    ] {
        let (status, body) = s.post(ADMIN, reload, json!({ "message": bad })).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("message"),
            "{body}"
        );
    }
    // The same content keeps version 1, so a rollback to it has nothing to do: 409, nothing
    // recorded.
    let (status, body) = s
        .post(ADMIN, reload, json!({ "message": "m".repeat(1024) }))
        .await;
    assert_eq!(status, 200, "{body}");
    let rollback = "/api/v1/review/policy/rollback";
    let (status, body) = s
        .post(ADMIN, rollback, json!({ "reason": "back", "to": 1 }))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already running"),
        "{body}"
    );
    let config = dir.path().join("dnsward.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n# version 2\n")).unwrap();
    let (status, body) = s.post(ADMIN, reload, json!({ "message": "two" })).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .post(ADMIN, rollback, json!({ "reason": "back", "to": 1 }))
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&s.events_path).unwrap_or_default();
        if log.contains("re-activates") || tokio::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(log.contains("re-activates version 1: back"), "{log}");
    assert!(!log.contains("Some("), "{log}");
    assert!(!log.contains(&"m".repeat(1025)));
    s.stop().await;
}

/// A request no route takes is audited too (404, or 405 with `Allow`), naming who sent it;
/// without a token, anything under `/api/` is 401 whether the route exists or not.
#[tokio::test]
async fn unmatched_requests_are_audited_and_need_a_token_to_tell_404_from_405() {
    let (_up, _dir, mut s) = plain_server().await;
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut r = reqwest::Client::new().request(method, format!("{}{path}", s.base));
        if let Some(t) = token {
            r = r.bearer_auth(t.to_string());
        }
        r.send()
    };
    use reqwest::Method;
    for (method, path) in [
        (Method::DELETE, "/api/v1/policy"),
        (Method::GET, "/api/v1/policy/reload"),
        (Method::GET, "/api/v1/secret-stuff"),
    ] {
        let r = send(method.clone(), path, None).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{method} {path}");
        assert!(r.headers().contains_key("www-authenticate"));
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    let r = send(Method::DELETE, "/api/v1/policy", Some(ADMIN))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.headers()["allow"].to_str().unwrap().contains("GET"));
    let r = send(Method::GET, "/api/v1/secret-stuff", Some(ADMIN))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = send(Method::GET, "/api/v1/review/nothing-here", Some(ALICE))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let admin_events = loop {
        let events: Vec<Value> = std::fs::read_to_string(&s.events_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["kind"] == "admin")
            .collect();
        if events.len() >= 6 || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = serde_json::to_string(&admin_events).unwrap();
    let find = |method: &str, path: &str, status: u64| {
        admin_events
            .iter()
            .find(|e| e["method"] == method && e["path"] == path && e["status"] == status)
    };
    let deleted = find("DELETE", "/api/v1/policy", 405).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(deleted["actor"], "admin", "{deleted}");
    assert_eq!(deleted["authenticated"], true);
    assert!(find("GET", "/api/v1/secret-stuff", 404).is_some(), "{text}");
    let alice = find("GET", "/api/v1/review/nothing-here", 404).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(alice["actor"], "alice");
    assert!(find("DELETE", "/api/v1/policy", 401).is_some(), "{text}");
    s.stop().await;
}

/// A false positive's exception outlives a restart (it was kept in memory only: after one the
/// agent was contained again while its suspect stayed closed, out of the queue), an exception
/// can be removed by id on either API (audited), and a second exception for the same group and
/// domain extends the first rather than taking another slot.
#[tokio::test]
async fn exceptions_survive_a_restart_and_can_be_removed() {
    let (_up, dir, _clock, mut s) = with_suspect("127.0.0.85").await;
    let (status, t) = s
        .post(
            ALICE,
            "/api/v1/review/suspects/127.0.0.85/tun.example/transition",
            json!({"to": "false_positive", "note": "backup sync", "exception_days": 2}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    s.stop().await;

    let clock = ManualClock::new();
    let mut s = ReviewServer::start_existing(dir.path(), clock.clone()).await;
    let (_, ex) = s.get(Some(CAROL), "/api/v1/review/exceptions").await;
    let list = ex.as_array().unwrap();
    assert_eq!(list.len(), 1, "{ex}");
    assert_eq!(list[0]["domain"], "tun.example");
    let id = list[0]["id"].as_u64().unwrap();
    assert_eq!(
        tunnel(s.udp, &clock, "127.0.0.85", "tun.example").await,
        0,
        "the false positive's exception holds after the restart"
    );

    // The admin API's add for the same group and domain extends it: still one, same id.
    let admin = reqwest::Client::new();
    let r = admin
        .post(format!("{}/api/v1/exceptions", s.base))
        .bearer_auth(ADMIN)
        .json(&json!({"group": "rev", "domain": "tun.example", "expires_in": "3d", "actor": "ops", "reason": "longer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let added: Value = r.json().await.unwrap();
    assert_eq!(added["id"].as_u64(), Some(id), "{added}");
    let (_, ex) = s.get(Some(CAROL), "/api/v1/review/exceptions").await;
    assert_eq!(ex.as_array().unwrap().len(), 1, "{ex}");

    // Removal: a viewer may not; an analyst may, once; the admin API answers 404 after.
    let remove = |token: &'static str, body: Value| {
        reqwest::Client::new()
            .delete(format!("{}/api/v1/review/exceptions/{id}", s.base))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    assert_eq!(
        remove(CAROL, json!({"reason": "x"}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    let r = remove(ALICE, json!({"reason": "the vendor sync ended"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        remove(ALICE, json!({"reason": "again"}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    let r = admin
        .delete(format!("{}/api/v1/exceptions/{id}", s.base))
        .bearer_auth(ADMIN)
        .json(&json!({"actor": "ops", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let (_, ex) = s.get(Some(CAROL), "/api/v1/review/exceptions").await;
    assert!(ex.as_array().unwrap().is_empty(), "{ex}");
    s.stop().await;

    // Removed stays removed across a restart.
    let mut s = ReviewServer::start_existing(dir.path(), ManualClock::new()).await;
    let (_, ex) = s.get(Some(CAROL), "/api/v1/review/exceptions").await;
    assert!(ex.as_array().unwrap().is_empty(), "{ex}");
    let log = std::fs::read_to_string(&s.events_path).unwrap();
    assert!(
        log.contains("\"action\":\"exception_removed\"") && log.contains("\"actor\":\"alice\""),
        "the removal is audited"
    );
    s.stop().await;
}

/// A body declared larger than any route takes is refused at once (413, JSON, audited) rather
/// than waited for: the connection sat until `connection_timeout` (60 s) for bytes that never
/// came.
#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, _dir, mut s) = plain_server().await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.write_all(
        format!(
            "POST /api/v1/policy/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: 99999999999999\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut head))
        .await
        .expect("an answer without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("at most 2097152"), "{text}");
    s.stop().await;
    let log = std::fs::read_to_string(&s.events_path).unwrap();
    assert!(log.contains("\"status\":413"), "audited");
}

/// Containments outlive a restart (they were kept in memory only: after one a quarantined
/// tunnelling agent resolved again and the API listed nothing): the quarantine comes back with
/// the time it had left, an extension with its own, the client stays refused, and a release on
/// the restarted server is kept across the next restart.
#[tokio::test]
async fn containments_survive_a_restart_and_a_release_is_kept() {
    let (_up, dir, _clock, mut s) = with_suspect("127.0.0.86").await;
    assert!(!answered(s.udp, "127.0.0.86").await);
    let (status, t) = s
        .post(
            ALICE,
            "/api/v1/review/suspects/127.0.0.86/tun.example/transition",
            json!({"to": "confirmed", "note": "real iodine", "extend": "6h"}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    // Written by the upkeep tick, not only at a clean shutdown: a crash keeps it too.
    let file = dir.path().join("state/containments.json");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains("127.0.0.86")) {
        assert!(tokio::time::Instant::now() < deadline, "never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;

    let clock = ManualClock::new();
    let mut s = ReviewServer::start_existing(dir.path(), clock.clone()).await;
    let (status, q) = s.get(Some(ADMIN), "/api/v1/quarantines").await;
    assert_eq!(status, 200, "{q}");
    let quarantine = q
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == "127.0.0.86" && c["action"] == "quarantine")
        .unwrap_or_else(|| panic!("the quarantine is back: {q}"));
    assert_eq!(quarantine["group"], "rev");
    let left = quarantine["expires_in_secs"].as_u64().unwrap();
    assert!((6 * 3600 - 60..=6 * 3600 + 5).contains(&left), "{q}");
    assert!(
        !answered(s.udp, "127.0.0.86").await,
        "still refused after the restart"
    );
    assert!(answered(s.udp, "127.0.0.87").await, "a neighbour is not");

    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/quarantines/release", s.base))
        .bearer_auth(ADMIN)
        .json(&json!({"client": "127.0.0.86", "actor": "ops", "reason": "cleaned"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(answered(s.udp, "127.0.0.86").await);
    s.stop().await;

    let mut s = ReviewServer::start_existing(dir.path(), ManualClock::new()).await;
    let (_, q) = s.get(Some(ADMIN), "/api/v1/quarantines").await;
    assert!(
        !q.to_string().contains("127.0.0.86"),
        "released stays released: {q}"
    );
    assert!(answered(s.udp, "127.0.0.86").await);
    s.stop().await;
}

/// A hand-edited exceptions file is checked at a restart as the admin API checks a request:
/// what the API refuses (a single label, 30 days and more, an unknown group, an invalid name,
/// control characters, an id no server gives) does not come back, and new ids neither wrap
/// nor repeat one in the file.
#[tokio::test]
async fn a_hand_edited_exceptions_file_is_checked_at_a_restart() {
    let (_up, dir, mut s) = plain_server().await;
    s.stop().await;
    let wall = |secs: i64| {
        (chrono::Utc::now() + chrono::Duration::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let ex = |id: u64, group: &str, domain: &str, actor: &str, expires: String| {
        json!({"id": id, "group": group, "domain": domain, "actor": actor, "reason": "r",
               "created": wall(-60), "expires": expires})
    };
    let file = json!({"next_id": 6, "exceptions": [
        ex(5, "rev", "com", "a", wall(3600)),
        ex(6, "rev", "x.example", "a", "2099-12-05T04:42:20Z".into()),
        ex(7, "ghost", "bad..name", "a\u{1b}[31m", wall(3600)),
        ex(8, "rev", "kept.example", "ops", wall(3600)),
        ex(u64::MAX, "rev", "wrap.example", "ops", wall(3600)),
    ]});
    std::fs::write(dir.path().join("state/exceptions.json"), file.to_string()).unwrap();

    let mut s = ReviewServer::start_existing(dir.path(), ManualClock::new()).await;
    let (status, list) = s.get(Some(ADMIN), "/api/v1/exceptions").await;
    assert_eq!(status, 200, "{list}");
    let domains: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["domain"].as_str().unwrap())
        .collect();
    assert_eq!(domains, ["kept.example"], "{list}");
    let admin = reqwest::Client::new();
    let mut ids = Vec::new();
    for domain in ["a.example", "b.example"] {
        let r = admin
            .post(format!("{}/api/v1/exceptions", s.base))
            .bearer_auth(ADMIN)
            .json(&json!({"group": "rev", "domain": domain, "expires_in": "1h", "actor": "ops", "reason": "r"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_u64().unwrap());
    }
    assert_eq!(ids, [9, 10], "after every id in the file, no wrap");
    s.stop().await;
}
