//! Governance through a running server: the admin API (auth, validation, releases, exceptions,
//! reload, rollback, history, HTML page), hot reload under load, and bad reloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dnsward::clock::ManualClock;
use dnsward::detect::testgen;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::harness::*;

fn groups(allow: &str) -> String {
    format!(
        r#"
[[groups]]
name = "gov"
cidrs = ["127.0.0.70/31", "127.0.0.72/32"]
allow = [{allow}]
[groups.detect]
alert = 30
throttle = 40
sinkhole = 50
quarantine = 60
"#
    )
}

fn store_section(dir: &std::path::Path) -> String {
    format!("[store]\nstate_dir = \"{}\"\n", dir.display())
}

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(s: &TestServer) -> Self {
        Self {
            base: format!("http://{}", s.admin.unwrap()),
            token: s.token.clone(),
            http: reqwest::Client::new(),
        }
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn api_requires_the_token_and_validates_input() {
    let mut s = TestServer::start(None, &groups("\"*.corp.internal\"")).await;
    let api = Api::new(&s);
    let http = reqwest::Client::new();
    // No token, wrong token: 401 with a JSON error.
    let r = http
        .get(format!("{}/api/v1/alerts", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("token"));
    let r = http
        .get(format!("{}/api/v1/policy", api.base))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Open endpoints.
    assert_eq!(
        http.get(format!("{}/healthz", api.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let openapi = http
        .get(format!("{}/openapi.yaml", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(openapi.contains("/api/v1/quarantines/release"));
    // Bad inputs: 400 with useful messages.
    for (path, needle) in [
        ("/api/v1/alerts?since=forever", "since"),
        ("/api/v1/alerts?client=not-an-ip", "client"),
        ("/api/v1/alerts?min_score=101", "min_score"),
        ("/api/v1/alerts?bogus=1", "bogus"),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    for (path, body, needle) in [
        (
            "/api/v1/quarantines/release",
            json!({"client": "x", "actor": "a", "reason": "r"}),
            "client",
        ),
        (
            "/api/v1/quarantines/release",
            json!({"client": "127.0.0.70", "actor": "", "reason": "r"}),
            "actor",
        ),
        (
            "/api/v1/quarantines/release",
            json!({"client": "127.0.0.70"}),
            "JSON",
        ),
        (
            "/api/v1/exceptions",
            json!({"group": "nope", "domain": "x.example", "expires_in": "1h", "actor": "a", "reason": "r"}),
            "group",
        ),
        (
            "/api/v1/exceptions",
            json!({"group": "gov", "domain": "bad..name", "expires_in": "1h", "actor": "a", "reason": "r"}),
            "domain",
        ),
        (
            "/api/v1/exceptions",
            json!({"group": "gov", "domain": "x.example", "expires_in": "90d", "actor": "a", "reason": "r"}),
            "expires_in",
        ),
        // An exception covers everything under it: never a single label (a TLD, `_domainkey`),
        // as `[detect] exceptions` in the configuration.
        (
            "/api/v1/exceptions",
            json!({"group": "gov", "domain": "com", "expires_in": "1h", "actor": "a", "reason": "r"}),
            "single label",
        ),
        (
            "/api/v1/exceptions",
            json!({"group": "gov", "domain": "_domainkey.", "expires_in": "1h", "actor": "a", "reason": "r"}),
            "single label",
        ),
        (
            "/api/v1/policy/reload",
            json!({"message": "no actor"}),
            "JSON",
        ),
        // Control characters: an actor is one line; a reason or message may break lines but
        // holds nothing that drives a terminal.
        (
            "/api/v1/quarantines/release",
            json!({"client": "127.0.0.70", "actor": "eve\u{1b}[2J", "reason": "r"}),
            "actor contains the control character U+001B",
        ),
        (
            "/api/v1/quarantines/release",
            json!({"client": "127.0.0.70", "actor": "eve\nroot", "reason": "r"}),
            "one line",
        ),
        (
            "/api/v1/exceptions",
            json!({"group": "gov", "domain": "x.example", "expires_in": "1h", "actor": "a", "reason": "ok\u{7}"}),
            "reason contains the control character U+0007",
        ),
        (
            "/api/v1/policy/reload",
            json!({"actor": "a", "message": "looks fine\u{202e}"}),
            "message contains the control character U+202E",
        ),
        // An array is no object, though serde would read one into the fields in order.
        (
            "/api/v1/policy/reload",
            json!(["arraybob", "via array"]),
            "expected a JSON object",
        ),
        (
            "/api/v1/quarantines/release",
            json!(["127.0.0.70", "a", "r"]),
            "expected a JSON object",
        ),
    ] {
        let (status, resp) = api.post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {resp}");
        assert!(
            resp["error"].as_str().unwrap().contains(needle),
            "{path} {body}: {resp}"
        );
    }
    let (status, _) = api
        .post(
            "/api/v1/quarantines/release",
            json!({"client": "127.0.0.70", "actor": "a", "reason": "r"}),
        )
        .await;
    assert_eq!(status, 404, "nothing to release");
    // An unknown path or a method a path does not serve: the same JSON error, not an empty page.
    for (method, path, status, needle) in [
        (
            "GET",
            "/api/v1/nonexistent",
            404,
            "no such endpoint: /api/v1/nonexistent",
        ),
        ("GET", "/api/v1/review/nope", 404, "no such endpoint"),
        (
            "DELETE",
            "/api/v1/policy",
            405,
            "DELETE is not served at /api/v1/policy",
        ),
        ("GET", "/api/v1/policy/reload", 405, "GET is not served"),
    ] {
        let r = http
            .request(method.parse().unwrap(), format!("{}{path}", api.base))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{method} {path}: {body}"
        );
    }
    // Every request is audited, unauthenticated ones included.
    let events = s.stop_and_read_events().await;
    let admin: Vec<_> = events.iter().filter(|e| e["kind"] == "admin").collect();
    assert!(
        admin
            .iter()
            .any(|e| e["status"] == 401 && e["authenticated"] == false)
    );
    assert!(
        admin
            .iter()
            .any(|e| e["status"] == 400 && e["path"] == "/api/v1/alerts")
    );
    assert!(admin.len() >= 14, "{} admin events", admin.len());
}

/// How the tunnel's queries reach dnsward.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Plain UDP: the source address is not proven.
    Udp,
    /// UDP echoing the DNS Cookie from each answer: the source address is proven.
    UdpWithCookie,
    /// TCP: the source address is proven by the handshake.
    Tcp,
}

async fn tunnel_until_contained(s: &TestServer, clock: &ManualClock, src: &str) -> usize {
    tunnel_via(s, clock, src, Via::Tcp).await
}

/// Send an iodine-like tunnel from `src`; returns how many queries were refused.
async fn tunnel_via(s: &TestServer, clock: &ManualClock, src: &str, via: Via) -> usize {
    let traffic = testgen::iodine_base32("tun.example", 120, 11);
    let mut refused = 0;
    let mut cookie: Option<Vec<u8>> = None;
    let client_cookie = [0x5a; 8];
    for q in &traffic.queries {
        let packet = raw_name_query(&q.qname, q.qtype);
        let raw = match via {
            Via::Udp => udp_raw(s.udp, src.parse().unwrap(), &packet).await,
            Via::UdpWithCookie => {
                let packet = with_cookie(packet, client_cookie, cookie.as_deref());
                let raw = udp_raw(s.udp, src.parse().unwrap(), &packet).await;
                if let Some(c) = raw.as_deref().and_then(server_cookie) {
                    cookie = Some(c);
                }
                raw
            }
            Via::Tcp => tcp_raw(s.tcp, src, &packet).await,
        }
        .unwrap();
        if Message::from_vec(&raw).unwrap().metadata.response_code == ResponseCode::Refused {
            refused += 1;
        }
        clock.advance(traffic.interval);
    }
    refused
}

/// A group whose tunnel thresholds reach quarantine, with `www.example` allowed.
async fn quarantine_server(clock: &Arc<ManualClock>) -> (RunningUpstream, TestServer) {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .answering_everything([192, 0, 2, 9])
        .start()
        .await;
    let s = TestServer::start_with(
        Some(up.addr),
        &groups("\"*.tun.example\", \"www.example\""),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    (up, s)
}

#[tokio::test]
async fn spoofable_udp_evidence_never_quarantines_the_source_address() {
    let clock = ManualClock::new();
    let (_up, mut s) = quarantine_server(&clock).await;
    // The same tunnel that gets a TCP client quarantined, sent over plain UDP: anyone can forge
    // that source address, so it may only contain the tunnel domain for it.
    tunnel_via(&s, &clock, "127.0.0.70", Via::Udp).await;
    let m = udp_query(s.udp, "127.0.0.70", "www.example", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "the (possibly framed) address keeps its other names"
    );
    let contained = udp_query(s.udp, "127.0.0.70", "zz9.tun.example", RecordType::A).await;
    assert!(
        contained.metadata.response_code != ResponseCode::NoError
            || a_records(&contained) == ["0.0.0.0"],
        "the tunnel domain is contained: {contained:?}"
    );
    let events = s.stop_and_read_events().await;
    let started: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "containment_started")
        .collect();
    assert!(!started.is_empty(), "contained at all");
    assert!(
        started.iter().all(|e| e["action"] != "quarantine"),
        "{started:#?}"
    );
    // The alerts say what was done: the scores reached quarantine, the action did not.
    let alerts: Vec<_> = events.iter().filter(|e| e["kind"] == "alert").collect();
    assert!(
        alerts.iter().any(|e| e["score"].as_u64() >= Some(60)),
        "the tunnel scored at the quarantine level: {alerts:#?}"
    );
    assert!(
        alerts.iter().all(|e| e["action"] != "quarantine"),
        "{alerts:#?}"
    );
}

#[tokio::test]
async fn a_udp_client_that_echoes_its_dns_cookie_is_proven_and_can_be_quarantined() {
    let clock = ManualClock::new();
    let (_up, s) = quarantine_server(&clock).await;
    assert!(tunnel_via(&s, &clock, "127.0.0.70", Via::UdpWithCookie).await > 0);
    let m = udp_query(s.udp, "127.0.0.70", "www.example", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "a proven source is quarantined"
    );
}

#[tokio::test]
async fn releases_and_exceptions_take_effect_on_the_next_query_and_are_audited() {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .start()
        .await;
    let clock = ManualClock::new();
    let mut s = TestServer::start_with(
        Some(up.addr),
        &groups("\"*.tun.example\", \"www.example\""),
        Some(clock.clone()),
        "127.0.0.1:0",
    )
    .await;
    let api = Api::new(&s);
    // A tunnel from .70 gets the client quarantined.
    assert!(tunnel_until_contained(&s, &clock, "127.0.0.70").await > 0);
    let m = udp_query(s.udp, "127.0.0.70", "www.example", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "quarantined: everything refused"
    );
    let (status, active) = api.get("/api/v1/quarantines").await;
    assert_eq!(status, 200);
    assert!(
        active
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client"] == "127.0.0.70" && c["action"] == "quarantine"),
        "{active}"
    );
    let (status, alerts) = api
        .get("/api/v1/alerts?client=127.0.0.70&min_score=30&since=1h")
        .await;
    assert_eq!(status, 200);
    assert!(!alerts.as_array().unwrap().is_empty());
    assert!(alerts[0]["breakdown"].is_object());
    // The HTML page shows it. Opened with the token in its URL, it sends no referrer, is not
    // cached or framed, and runs no script.
    let page = reqwest::get(format!("{}/?token={}", api.base, api.token))
        .await
        .unwrap();
    let header = |name: &str| {
        page.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-frame-options"), "DENY");
    assert!(header("content-security-policy").starts_with("default-src 'none'"));
    let page = page.text().await.unwrap();
    assert!(
        page.contains("id=\"containments\"")
            && page.contains("127.0.0.70")
            && page.contains("tun.example"),
        "{page}"
    );
    assert!(page.contains("Policy version <b>1</b>"));
    // Release: the very next query is answered.
    let (status, body) = api.post("/api/v1/quarantines/release", json!({"client": "127.0.0.70", "actor": "alice", "reason": "false positive, vendor sync"})).await;
    assert_eq!(status, 200, "{body}");
    let m = udp_query(s.udp, "127.0.0.70", "www.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    // A temporary exception for the domain: the same tunnel pattern from .71 is not scored.
    let (status, body) = api.post("/api/v1/exceptions", json!({"group": "gov", "domain": "tun.example", "expires_in": "2h", "actor": "bob", "reason": "approved data sync"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(tunnel_until_contained(&s, &clock, "127.0.0.71").await, 0);
    let (_, list) = api.get("/api/v1/exceptions").await;
    assert_eq!(list[0]["actor"], "bob");
    let events = s.stop_and_read_events().await;
    assert!(events.iter().any(|e| e["kind"] == "containment_ended"
        && e["reason"].as_str().unwrap_or("").contains("alice")));
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "admin" && e["action"] == "release" && e["actor"] == "alice")
    );
    assert!(
        events.iter().any(|e| e["kind"] == "admin"
            && e["action"] == "exception_added"
            && e["actor"] == "bob")
    );
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "alert" && e["client"] == "127.0.0.71")
    );
}

#[tokio::test]
async fn bad_reloads_are_rejected_and_the_old_policy_keeps_answering() {
    let mut s = TestServer::start(None, &groups("\"api.corp.internal\"")).await;
    let api = Api::new(&s);
    let good = std::fs::read_to_string(&s.config_path).unwrap();
    let bad_variants = [
        good.replace("[[groups]]", "[[groups]\n"), // syntax error
        good.replace("127.0.0.72/32", "127.0.0.300/32"), // bad CIDR
        good.replace(
            "[groups.detect]",
            "allow_files = [\"missing.txt\"]\n[groups.detect]",
        ), // missing list
        // Durations past any bound: accepted once, then every forwarded query panicked adding
        // the timeout to `Instant::now()`; the TTL went on the wire as 4294967295.
        good.replace(
            "servers = []",
            "servers = []\ntimeout = \"18446744073709551615s\"",
        ),
        good.replace(
            "[groups.detect]",
            "block_ttl = \"18446744073709551615s\"\n[groups.detect]",
        ),
    ];
    for bad in &bad_variants {
        std::fs::write(&s.config_path, bad).unwrap();
        let (status, body) = api
            .post("/api/v1/policy/reload", json!({"actor": "ci"}))
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(!body["details"].as_array().unwrap().is_empty(), "{body}");
        assert_ne!(*bad, good, "the variant changed nothing");
        let m = udp_query(s.udp, "127.0.0.70", "api.corp.internal", RecordType::A).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "old policy still answering"
        );
        let (_, p) = api.get("/api/v1/policy").await;
        assert_eq!(p["version"], 1);
    }
    let events = s.stop_and_read_events().await;
    let rejected = events
        .iter()
        .filter(|e| e["kind"] == "policy" && e["action"] == "reload_rejected")
        .count();
    assert_eq!(rejected, bad_variants.len());
}

#[tokio::test]
async fn a_rejected_reload_quotes_only_excerpts_of_the_files_it_names() {
    let mut s = TestServer::start(None, &groups("\"api.corp.internal\"")).await;
    let api = Api::new(&s);
    let dir = s.config_path.parent().unwrap().to_path_buf();
    // Files that are not lists: a shadow-like file and a 64-digit token (as `admin.token` in
    // the review, whose one label is too long to be a name).
    let secret = "5f2b8c0e9a7d4163b2e1f0a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9";
    std::fs::write(dir.join("secret.token"), format!("{secret}\n")).unwrap();
    let mut shadow = String::new();
    for i in 0..26 {
        shadow.push_str(&format!(
            "user{i}:$y$j9T$abcdefgh$SECRETHASH{i:02}SECRETHASH:20228:0:99999:7:::\n"
        ));
    }
    std::fs::write(dir.join("shadow"), &shadow).unwrap();
    let good = std::fs::read_to_string(&s.config_path).unwrap();
    std::fs::write(
        &s.config_path,
        good.replace(
            "[groups.detect]",
            "allow_files = [\"shadow\", \"secret.token\"]\n[groups.detect]",
        ),
    )
    .unwrap();
    let (status, body) = api
        .post("/api/v1/policy/reload", json!({"actor": "ci"}))
        .await;
    assert_eq!(status, 422, "{body}");
    let details: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    // A few problems per file with file:line and an excerpt, the rest counted.
    let per_file = |name: &str| {
        details
            .iter()
            .filter(|d| d.contains(&format!("/{name}")))
            .count()
    };
    assert_eq!(per_file("shadow"), 6, "{body}");
    assert_eq!(per_file("secret.token"), 1, "{body}");
    assert!(
        details.iter().any(|d| d.ends_with(
            "/shadow:1: \"user0:$y$j9T$abcdefgh$SE\"…: character \":\" is not allowed in a name"
        )),
        "{body}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("/shadow: 21 more problem(s), not shown, on line(s) 6, 7")),
        "{body}"
    );
    assert!(
        details.iter().any(|d| d.ends_with(
            "/secret.token:1: \"5f2b8c0e9a7d4163b2e1f0a9\"…: a label is 64 bytes long, the limit is 63"
        )),
        "{body}"
    );
    let events = s.stop_and_read_events().await;
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "policy" && e["action"] == "reload_rejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    for text in [body.to_string(), rejected[0].to_string()] {
        assert!(!text.contains("SECRETHASH"), "{text}");
        assert!(!text.contains(&secret[..25]), "the token leaked: {text}");
    }
}

#[tokio::test]
async fn a_zone_file_gone_from_the_zone_dir_is_named_by_the_reload() {
    // Review D4: a zone file moved away between reloads used to pass without a word, and its
    // names were then forwarded upstream.
    let upstream = FakeUpstream::new()
        .answering_everything([203, 0, 113, 5])
        .start()
        .await;
    let mut s = TestServer::start(Some(upstream.addr), &groups("\"*.corp.internal\"")).await;
    let api = Api::new(&s);
    // A zone directory of our own: corp.internal (shipped) and lab.corp.internal.
    let dir = s.config_path.parent().unwrap().join("zones");
    std::fs::create_dir(&dir).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    std::fs::copy(
        shipped.join("corp.internal.zone"),
        dir.join("corp.internal.zone"),
    )
    .unwrap();
    let lab = "$ORIGIN lab.corp.internal.\n$TTL 300\n@ IN SOA ns hm 1 3600 600 86400 60\nbox IN A 10.7.0.1\n";
    std::fs::write(dir.join("lab.corp.internal.zone"), lab).unwrap();
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let shipped_line = format!("dir = \"{}\"", shipped.display());
    assert!(text.contains(&shipped_line), "{text}");
    std::fs::write(
        &s.config_path,
        text.replace(&shipped_line, &format!("dir = \"{}\"", dir.display())),
    )
    .unwrap();
    let ask = |name: &'static str| {
        let udp = s.udp;
        async move { a_records(&udp_query(udp, "127.0.0.70", name, RecordType::A).await) }
    };
    let (status, body) = api
        .post("/api/v1/policy/reload", json!({"actor": "ci"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["zones_added"], json!(["lab.corp.internal"]), "{body}");
    assert_eq!(body["zones_removed"], json!([]), "{body}");
    assert_eq!(body["warnings"], json!([]), "{body}");
    assert_eq!(ask("box.lab.corp.internal").await, ["10.7.0.1"]);
    let local = ask("api.corp.internal").await;
    assert_ne!(local, ["203.0.113.5"], "answered from the zone");

    // An editor's rename, a half-done deployment: the file leaves the directory.
    std::fs::rename(
        dir.join("corp.internal.zone"),
        dir.join("corp.internal.zone.bak"),
    )
    .unwrap();
    let (status, body) = api
        .post(
            "/api/v1/policy/reload",
            json!({"actor": "ci", "message": "tidy"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["zones_removed"], json!(["corp.internal"]), "{body}");
    assert_eq!(body["zones_added"], json!([]), "{body}");
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains(
            "local zone(s) removed: corp.internal: their names are forwarded upstream now"
        ),
        "{body}"
    );
    // What the warning says is what happens; the other zone stays.
    assert_eq!(ask("api.corp.internal").await, ["203.0.113.5"]);
    assert_eq!(ask("box.lab.corp.internal").await, ["10.7.0.1"]);

    let events = s.stop_and_read_events().await;
    let reloads: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "policy" && e["action"] == "reloaded")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(
        reloads,
        [
            "local zone(s) added: lab.corp.internal",
            "tidy; local zone(s) removed: corp.internal (their names are forwarded upstream now)"
        ],
        "{events:#?}"
    );
}

#[tokio::test]
async fn reload_and_rollback_switch_answers_and_keep_history() {
    let state = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}{}",
        store_section(state.path()),
        groups("\"api.corp.internal\"")
    );
    let mut s = TestServer::start(None, &extra).await;
    let api = Api::new(&s);
    let q = |name: &'static str| {
        let udp = s.udp;
        async move {
            udp_query(udp, "127.0.0.70", name, RecordType::A)
                .await
                .metadata
                .response_code
        }
    };
    assert_eq!(q("git.corp.internal").await, ResponseCode::NXDomain);
    // v2 allows git too.
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    std::fs::write(
        &s.config_path,
        text.replace(
            "\"api.corp.internal\"",
            "\"api.corp.internal\", \"git.corp.internal\"",
        ),
    )
    .unwrap();
    let (status, body) = api
        .post(
            "/api/v1/policy/reload",
            json!({"actor": "carol", "message": "allow git"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(
        q("git.corp.internal").await,
        ResponseCode::NoError,
        "new policy after the swap"
    );
    // Reloading identical content keeps the version.
    let (_, body) = api
        .post("/api/v1/policy/reload", json!({"actor": "carol"}))
        .await;
    assert_eq!(body["version"], 2);
    // Roll back to v1 even though the file on disk still says v2.
    let (status, body) = api
        .post(
            "/api/v1/policy/rollback",
            json!({"to": 1, "actor": "dave", "reason": "git mirror leaked"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rolled_back_to"], 1);
    // A version that does not exist is 404, not a bad request (a store that cannot write is
    // the server's fault, 500, and neither is the caller's 400).
    let (status, body) = api
        .post(
            "/api/v1/policy/rollback",
            json!({"to": 999, "actor": "dave", "reason": "x"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        q("git.corp.internal").await,
        ResponseCode::NXDomain,
        "v1 exactly again"
    );
    let (_, history) = api.get("/api/v1/policy/history").await;
    let h = history.as_array().unwrap();
    assert_eq!(h.len(), 3, "{history}");
    assert_eq!(h[2]["author"], "dave");
    let diff = reqwest::Client::new()
        .get(format!("{}/api/v1/policy/diff?a=1&b=2", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        diff.contains("+") && diff.contains("git.corp.internal"),
        "{diff}"
    );
    // An unknown version is 404, as for apply and rollback.
    let missing = reqwest::Client::new()
        .get(format!("{}/api/v1/policy/diff?a=1&b=99", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let events = s.stop_and_read_events().await;
    let stamps: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "query")
        .map(|e| e["policy_version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        stamps,
        [1, 2, 3],
        "every event carries the version that decided it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_query_and_give_no_wrong_answer() {
    let state = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}{}",
        store_section(state.path()),
        groups("\"api.corp.internal\"")
    );
    let s = TestServer::start(None, &extra).await;
    let api = Api::new(&s);
    let v1 = std::fs::read_to_string(&s.config_path).unwrap();
    let v2 = v1.replace(
        "\"api.corp.internal\"",
        "\"api.corp.internal\", \"git.corp.internal\"",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, lost, wrong) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut load = Vec::new();
    for i in 0..3 {
        let (stop, sent, lost, wrong) = (stop.clone(), sent.clone(), lost.clone(), wrong.clone());
        let udp = s.udp;
        load.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind(format!("127.0.0.{}:0", 70 + i))
                .await
                .unwrap();
            let mut buf = vec![0u8; 1500];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                n += 1;
                let name = if n.is_multiple_of(2) {
                    "api.corp.internal"
                } else {
                    "git.corp.internal"
                };
                let packet = query_packet(name, RecordType::A, false);
                sock.send_to(&packet, udp).await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
                    Ok(Ok((len, _))) => {
                        let m = Message::from_vec(&buf[..len]).unwrap();
                        let ok = match name {
                            // Allowed in every version.
                            "api.corp.internal" => {
                                m.metadata.response_code == ResponseCode::NoError
                                    && m.answers.len() == 2
                            }
                            // Allowed (answer) or not (NXDOMAIN, no answer) depending on the version.
                            _ => {
                                (m.metadata.response_code == ResponseCode::NoError
                                    && m.answers.len() == 1)
                                    || (m.metadata.response_code == ResponseCode::NXDomain
                                        && m.answers.is_empty())
                            }
                        };
                        if !ok || m.metadata.id != u16::from_be_bytes([packet[0], packet[1]]) {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for round in 0..12u32 {
        std::fs::write(
            &s.config_path,
            if round.is_multiple_of(2) { &v2 } else { &v1 },
        )
        .unwrap();
        let (status, body) = api
            .post("/api/v1/policy/reload", json!({"actor": "load-test"}))
            .await;
        assert_eq!(status, 200, "{body}");
        // Let the load run under this version for a few dozen queries (not for a fixed time).
        let from = sent.load(Ordering::Relaxed);
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        while sent.load(Ordering::Relaxed) < from + 30 {
            assert!(
                tokio::time::Instant::now() < until,
                "the load stopped sending"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if round == 6 {
            let (status, body) = api
                .post(
                    "/api/v1/policy/rollback",
                    json!({"actor": "load-test", "reason": "drill"}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    // End on v2, then check the switch is visible.
    std::fs::write(&s.config_path, &v2).unwrap();
    api.post("/api/v1/policy/reload", json!({"actor": "load-test"}))
        .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let m = udp_query(s.udp, "127.0.0.70", "git.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let (sent, lost, wrong) = (
        sent.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
    );
    eprintln!(
        "reload under load: {sent} queries, {lost} lost, {wrong} wrong, 13 reloads and a rollback"
    );
    assert!(sent > 100);
    assert_eq!(lost, 0);
    assert_eq!(wrong, 0);
}

#[tokio::test]
async fn a_reload_drops_cached_answers_that_its_new_zones_and_forwards_change() {
    let first = FakeUpstream::new()
        .with_a("svc.lab.example", [192, 0, 2, 1], 3600)
        .with_a("www.newzone.example", [192, 0, 2, 1], 3600)
        .with_a("keep.other.example", [192, 0, 2, 1], 3600)
        .start()
        .await;
    let second = FakeUpstream::new()
        .with_a("svc.lab.example", [192, 0, 2, 2], 3600)
        .start()
        .await;
    let extra = r#"
[[groups]]
name = "r"
cidrs = ["127.0.0.74/32"]
mode = "denylist"
"#;
    let s = TestServer::start(Some(first.addr), extra).await;
    let api = Api::new(&s);
    let ask = |name: &'static str| {
        let udp = s.udp;
        async move { a_records(&udp_query(udp, "127.0.0.74", name, RecordType::A).await) }
    };
    for name in [
        "svc.lab.example",
        "www.newzone.example",
        "keep.other.example",
    ] {
        assert_eq!(ask(name).await, ["192.0.2.1"], "{name}");
    }
    let cached_before = first.queries();
    assert_eq!(ask("svc.lab.example").await, ["192.0.2.1"]);
    assert_eq!(first.queries(), cached_before, "answered from the cache");

    // The reload forwards lab.example elsewhere and adds a local zone for newzone.example.
    let dir = s.config_path.parent().unwrap().to_path_buf();
    std::fs::write(
        dir.join("newzone.example.zone"),
        "$ORIGIN newzone.example.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n\
         @ IN NS ns\nns IN A 10.9.0.53\nwww IN A 10.9.0.80\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let text = text.replace(
        "[zones]\n",
        "[zones]\nfiles = [{ path = \"newzone.example.zone\" }]\n",
    ) + &format!(
        "\n[[upstream.forward]]\nzone = \"lab.example\"\nservers = [{{ address = \"{}\" }}]\n",
        second.addr
    );
    std::fs::write(&s.config_path, text).unwrap();
    let (status, body) = api
        .post("/api/v1/policy/reload", json!({"actor": "test"}))
        .await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(
        ask("svc.lab.example").await,
        ["192.0.2.2"],
        "the re-pointed forward zone answers at once, not after the cached TTL"
    );
    assert_eq!(
        ask("www.newzone.example").await,
        ["10.9.0.80"],
        "the new local zone answers at once"
    );
    let before = first.queries();
    assert_eq!(ask("keep.other.example").await, ["192.0.2.1"]);
    assert_eq!(first.queries(), before, "unaffected names stay cached");
}

/// Requests refused for want of a token are recorded up to `unknown_client_per_minute` (10)
/// per source a minute and only counted beyond: anyone on the host can send them faster than
/// rotation keeps evidence (20,000 in six seconds filled the log). Authenticated requests are
/// all recorded, whatever came before them.
#[tokio::test]
async fn unauthenticated_admin_requests_are_recorded_ten_a_minute_and_counted_beyond() {
    let mut s = TestServer::start(None, &groups("\"*.corp.internal\"")).await;
    let api = Api::new(&s);
    let http = reqwest::Client::new();
    for _ in 0..60 {
        let r = http
            .get(format!("{}/api/v1/policy", api.base))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    for _ in 0..3 {
        assert_eq!(api.get("/api/v1/policy").await.0, 200);
    }
    let metrics = metrics_text(&s).await;
    let events = s.stop_and_read_events().await;
    let admin: Vec<_> = events.iter().filter(|e| e["kind"] == "admin").collect();
    let refused = admin.iter().filter(|e| e["status"] == 401).count();
    let ok = admin
        .iter()
        .filter(|e| e["status"] == 200 && e["path"] == "/api/v1/policy")
        .count();
    // Ten a minute: twenty if the sixty requests straddled a minute's turn.
    assert!(
        refused == 10 || refused == 20,
        "{refused} refusals recorded"
    );
    assert!(
        metrics.contains(&format!(
            "dnsward_events_sampled_out_total{{kind=\"admin_refused\"}} {}",
            60 - refused
        )),
        "{metrics}"
    );
    assert_eq!(ok, 3, "every authenticated request recorded");
}

/// The authentication scheme is case-insensitive (RFC 7235 §2.1): `bearer` and `BEARER` carry
/// the token as `Bearer` does; another scheme does not.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let s = TestServer::start(None, &groups("\"*.corp.internal\"")).await;
    let api = Api::new(&s);
    let http = reqwest::Client::new();
    for (scheme, want) in [
        ("Bearer", 200),
        ("bearer", 200),
        ("BEARER", 200),
        ("Basic", 401),
    ] {
        let r = http
            .get(format!("{}/api/v1/policy", api.base))
            .header("authorization", format!("{scheme} {}", api.token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{scheme}");
    }
}

/// A JSON body sent as another media type is 415, one over the limit 413 (HTTP's own codes),
/// a malformed one 400, each a JSON error.
#[tokio::test]
async fn json_bodies_of_the_wrong_type_or_size_get_415_and_413() {
    let s = TestServer::start(None, &groups("\"*.corp.internal\"")).await;
    let api = Api::new(&s);
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/policy/reload", api.base);
    for (ctype, body, want) in [
        ("text/plain", "{\"actor\":\"ops\"}".to_string(), 415),
        (
            "application/json",
            format!("{{\"actor\":\"{}\"}}", "x".repeat(10 << 20)),
            413,
        ),
        ("application/json", "{\"actor\":".to_string(), 400),
    ] {
        let r = http
            .post(&url)
            .bearer_auth(&api.token)
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{ctype}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("JSON")),
            "{v}"
        );
    }
}

/// A reload that also changes settings read only at start applies its policy and names the
/// sections that wait for a restart, so the operator knows which edit did not take.
#[tokio::test]
async fn a_reload_names_the_sections_that_wait_for_a_restart() {
    let s = TestServer::start(None, &groups("\"api.corp.internal\"")).await;
    let api = Api::new(&s);
    let good = std::fs::read_to_string(&s.config_path).unwrap();
    let (status, body) = api
        .post("/api/v1/policy/reload", json!({"actor": "ci"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["warnings"], json!([]), "nothing changed: {body}");
    std::fs::write(
        &s.config_path,
        format!("{good}\n[cache]\nmax_bytes = 1048576\n")
            .replace("[groups.detect]", "[groups.detect]\nmonitor_only = true"),
    )
    .unwrap();
    let (status, body) = api
        .post("/api/v1/policy/reload", json!({"actor": "ci"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains("[cache] changed and takes effect only after a restart"),
        "{body}"
    );
    assert!(!warnings.contains("[server]"), "{body}");
}
