//! The review console in a real browser (issue 12): headless Chromium driven through
//! chromedriver with fantoccini. An analyst signs in with a token, opens the queue after a
//! tunnel was contained, opens the suspect, marks it a false positive with a note, and sees the
//! exception and the release take effect: the client's next DNS query is answered again.
//! Screenshots go to `target/tmp/console_browser/` (paths printed); with
//! `DNSWARD_UPDATE_DOCS=1` one is copied to `docs/console.png` (so a test run leaves the tree
//! clean).
//!
//! Needs the Debian packages `chromium` and `chromium-driver`: under `CI=true` their absence
//! fails the test, elsewhere it is skipped with a message.

#[allow(unused_imports)]
#[path = "common/mod.rs"]
mod common;
#[allow(dead_code, unused_imports)]
#[path = "integration/harness.rs"]
mod harness;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dnsward::app::RunningApp;
use dnsward::clock::ManualClock;
use dnsward::config::Config;
use dnsward::detect::testgen;
use dnsward::review::users::hash_token_hex;
use fantoccini::{ClientBuilder, Locator};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::json;

use harness::{FakeUpstream, raw_name_query, server_cookie, udp_query, udp_raw, with_cookie};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ALICE: &str = "alice-analyst-token-0123456789abcdef012345";
const ADMIN: &str = "browser-admin-token-0123456789abcdef0123456";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, upstream: SocketAddr) -> PathBuf {
    {
        use std::os::unix::fs::PermissionsExt;
        let token = dir.join("token");
        std::fs::write(&token, ADMIN).unwrap();
        // dnsward refuses an admin token file that others can read.
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(
        dir.join("tokens"),
        format!("alice analyst {}\n", hash_token_hex(ALICE)),
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
name = "agents"
cidrs = ["127.0.0.80/28"]
allow = ["*.tun.example", "www.example"]
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

async fn answered(udp: SocketAddr, src: &str) -> bool {
    udp_query(udp, src, "www.example", RecordType::A)
        .await
        .metadata
        .response_code
        == ResponseCode::NoError
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyst_marks_a_contained_tunnel_false_positive_in_the_browser() {
    const TEST: &str = "console_browser";
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).exists() {
            common::cannot_run(
                TEST,
                &format!("{tool} is missing; apt-get install chromium chromium-driver"),
            );
            return;
        }
    }
    // dnsward with a low threshold, and a tunnel until the client is quarantined.
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::load(&config(dir.path(), up.addr)).unwrap_or_else(|p| panic!("{p}"));
    let clock = ManualClock::new();
    let app = RunningApp::start_with_clock(&cfg, clock.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let udp = app.dns.udp_addrs[0];
    let base = format!("http://{}", app.admin.as_ref().unwrap().addr);
    let traffic = testgen::iodine_base32("tun.example", 120, 11);
    let mut refused = 0;
    // The tunnel echoes its DNS Cookie: a proven source address may be quarantined.
    let mut cookie: Option<Vec<u8>> = None;
    for q in &traffic.queries {
        let packet = with_cookie(raw_name_query(&q.qname, q.qtype), [7; 8], cookie.as_deref());
        let raw = udp_raw(udp, "127.0.0.80".parse().unwrap(), &packet)
            .await
            .unwrap();
        if let Some(c) = server_cookie(&raw) {
            cookie = Some(c);
        }
        if Message::from_vec(&raw).unwrap().metadata.response_code == ResponseCode::Refused {
            refused += 1;
        }
        clock.advance(traffic.interval);
    }
    assert!(refused > 0, "the tunnel was contained");
    assert!(
        !answered(udp, "127.0.0.80").await,
        "quarantined before review"
    );
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = http
            .get(format!("{base}/api/v1/review/suspects"))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["suspects"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never queued: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // chromedriver on a loopback port, Chromium headless with a fresh profile.
    let port = free_port();
    let driver = match Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => Driver(c),
        Err(e) => {
            common::cannot_run(TEST, &format!("chromedriver does not start: {e}"));
            return;
        }
    };
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1100",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let driver_url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&driver_url)
            .await
        {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                common::cannot_run(
                    TEST,
                    &format!("no Chromium session through chromedriver: {e}"),
                );
                drop(driver);
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console_browser");
    std::fs::create_dir_all(&out).unwrap();
    let shot = |name: &'static str| {
        let client = client.clone();
        let out = out.clone();
        async move {
            let png = client.screenshot().await.unwrap();
            let path = out.join(name);
            std::fs::write(&path, png).unwrap();
            println!("screenshot: {}", path.display());
            path
        }
    };
    let wait = Duration::from_secs(15);

    // Sign in.
    client.goto(&format!("{base}/console/")).await.unwrap();
    let token = client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    shot("0-login.png").await;
    token.send_keys(ALICE).await.unwrap();
    client
        .find(Locator::Css("#login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The queue lists the contained suspect.
    let link = client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#queue a.suspect-link"))
        .await
        .unwrap();
    assert_eq!(link.text().await.unwrap(), "tun.example");
    let who = client.find(Locator::Css("#who-name")).await.unwrap();
    assert_eq!(who.text().await.unwrap(), "alice");
    let row = client.find(Locator::Css("#queue tbody tr")).await.unwrap();
    let row_text = row.text().await.unwrap();
    assert!(
        row_text.contains("127.0.0.80") && row_text.contains("quarantine"),
        "{row_text}"
    );
    shot("1-queue.png").await;
    // No token in the URL; it is in sessionStorage.
    assert!(!client.current_url().await.unwrap().as_str().contains(ALICE));
    let stored = client
        .execute(
            "return sessionStorage.getItem('dnsward.review.token')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!(ALICE));

    // Keyboard: j focuses the first suspect link (and the row is highlighted); then open it.
    client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys("j")
        .await
        .unwrap();
    let focused = client
        .execute("return document.activeElement.textContent", vec![])
        .await
        .unwrap();
    assert_eq!(focused, json!("tun.example"));
    link.click().await.unwrap();
    let note = client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#note"))
        .await
        .unwrap();
    let state = client.find(Locator::Css("#state")).await.unwrap();
    assert_eq!(state.text().await.unwrap(), "open");
    let containment = client.find(Locator::Css("#containment")).await.unwrap();
    assert!(containment.text().await.unwrap().contains("quarantine"));
    client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#chart rect.bar-names"))
        .await
        .unwrap();
    client.find(Locator::Css("#breakdown")).await.unwrap();
    shot("2-suspect.png").await;

    // False positive with a note.
    note.send_keys("Nightly vendor backup over DNS; approved by the data owner")
        .await
        .unwrap();
    client
        .find(Locator::Css("#act-false_positive"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let ok = client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#result-ok"))
        .await
        .unwrap();
    let ok_text = ok.text().await.unwrap();
    assert!(ok_text.contains("false positive by alice"), "{ok_text}");
    assert!(ok_text.contains("exception #"), "{ok_text}");
    let state = client.find(Locator::Css("#state")).await.unwrap();
    assert_eq!(state.text().await.unwrap(), "false positive");
    let ex = client.find(Locator::Css("#exceptions")).await.unwrap();
    let ex_text = ex.text().await.unwrap();
    assert!(
        ex_text.contains("tun.example in agents") && ex_text.contains("alice"),
        "{ex_text}"
    );
    let containment = client.find(Locator::Css("#containment")).await.unwrap();
    assert_eq!(containment.text().await.unwrap(), "none");
    let shot_done = shot("3-false-positive.png").await;
    // The release took effect: the client is answered again.
    assert!(
        answered(udp, "127.0.0.80").await,
        "released by the false positive"
    );
    // The queue is empty now.
    client
        .goto(&format!("{base}/console/#/queue"))
        .await
        .unwrap();
    client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#queue-empty"))
        .await
        .unwrap();
    // Agents and policy views render.
    client
        .goto(&format!("{base}/console/#/agents"))
        .await
        .unwrap();
    client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#agents tbody tr"))
        .await
        .unwrap();
    shot("4-agents.png").await;
    // Policy history with a diff: an admin adds a name to the group's allow list and reloads
    // (old admin API, legacy token); the console shows version 2 and its diff.
    let config_path = dir.path().join("dnsward.toml");
    let text = std::fs::read_to_string(&config_path).unwrap().replace(
        "allow = [\"*.tun.example\", \"www.example\"]",
        "allow = [\"*.tun.example\", \"www.example\", \"git.corp.internal\"]",
    );
    std::fs::write(&config_path, text).unwrap();
    let r = http
        .post(format!("{base}/api/v1/policy/reload"))
        .bearer_auth(ADMIN)
        .json(&json!({"actor": "bob", "message": "allow the git server"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A corrupt manifest (a disk fault) is a row of its own; the page still works.
    std::fs::write(
        dir.path().join("state/versions/3.json"),
        "{\"number\": 3, \"hash\": \n",
    )
    .unwrap();
    client
        .goto(&format!("{base}/console/#/policy"))
        .await
        .unwrap();
    let diff_button = client
        .wait()
        .at_most(wait)
        .for_element(Locator::XPath("//button[text()='Diff with 1']"))
        .await
        .unwrap();
    diff_button.click().await.unwrap();
    let diff = client
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#diff"))
        .await
        .unwrap();
    let diff_text = diff.text().await.unwrap();
    assert!(
        diff_text.contains('+') && diff_text.contains("git.corp.internal"),
        "{diff_text}"
    );
    let page = client
        .find(Locator::Css("#view"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("null") && !page.contains("undefined"),
        "{page}"
    );
    assert!(
        page.contains("allow the git server") && page.contains("bob"),
        "{page}"
    );
    assert!(
        page.contains("corrupt") && page.contains("manifest not trusted: EOF"),
        "{page}"
    );
    shot("5-policy.png").await;
    client.close().await.unwrap();
    drop(driver);
    if std::env::var_os("DNSWARD_UPDATE_DOCS").is_some_and(|v| v == "1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
        std::fs::copy(&shot_done, &docs).unwrap();
        println!("copied {} to {}", shot_done.display(), docs.display());
    }
    app.shutdown().await;
}
