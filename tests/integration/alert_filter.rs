//! One alert filter: `GET /api/v1/alerts` on a running server and `dnsward alerts` over the
//! event log select the same alerts for the same filter, on the same fixture alerts.

use std::collections::BTreeMap;
use std::path::Path;

use dnsward::cli::alerts::{AlertsQuery, scan_alerts};
use dnsward::events::reader::rotated_files;
use dnsward::events::{Event, EventBody};
use serde_json::Value;

use crate::harness::TestServer;

/// (client, domain) → number of alerts.
type Counts = BTreeMap<(String, String), u64>;

const GROUPS: &str = r#"
[[groups]]
name = "agents"
cidrs = ["127.0.0.60/30"]
allow = ["*.corp.internal"]
"#;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analyst/events.jsonl")
}

#[tokio::test]
async fn the_api_and_the_cli_select_the_same_alerts() {
    let mut s = TestServer::start(None, GROUPS).await;
    let files = rotated_files(&fixture());
    assert_eq!(
        files.len(),
        2,
        "the fixture and its rotated file: {files:?}"
    );

    // The fixture's alerts (those with a timestamp the CLI accepts) into the server's recent
    // alerts, as the pipeline records them.
    let overrides = s.app.as_ref().unwrap().pipeline.overrides();
    let mut recorded = 0;
    for file in &files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let Ok(event) = serde_json::from_str::<Event>(line) else {
                continue;
            };
            if let EventBody::Alert(alert) = event.body
                && chrono::DateTime::parse_from_rfc3339(&event.ts).is_ok()
            {
                overrides.record_alert(event.ts, event.policy_version, alert);
                recorded += 1;
            }
        }
    }
    assert_eq!(recorded, 8, "fixture alerts");

    let admin = s.admin.unwrap();
    let http = reqwest::Client::new();
    let api = async |query: &str| -> Counts {
        let r = http
            .get(format!("http://{admin}/api/v1/alerts?{query}"))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{query}");
        let body: Value = r.json().await.unwrap();
        let mut counts = Counts::new();
        for a in body.as_array().unwrap() {
            let key = (
                a["client"].as_str().unwrap().to_string(),
                a["domain"].as_str().unwrap().to_string(),
            );
            *counts.entry(key).or_default() += 1;
        }
        counts
    };
    let cli = |q: &AlertsQuery| -> Counts {
        scan_alerts(&files, q, chrono::Utc::now())
            .unwrap()
            .suspects
            .into_iter()
            .map(|s| ((s.client.to_string(), s.domain), s.alerts))
            .collect()
    };

    let domain = |d: &str| AlertsQuery {
        domain: Some(d.to_string()),
        ..AlertsQuery::default()
    };
    for (filter, expected) in [
        ("tun.example", 3),
        ("Tun.Example.", 3),
        ("example", 6),
        ("un.example", 0),
        ("c3.tun.example", 0),
        ("exfil.test", 2),
        ("test", 2),
    ] {
        let from_api = api(&format!("domain={filter}")).await;
        let from_cli = cli(&domain(filter));
        assert_eq!(from_api, from_cli, "--domain {filter}");
        assert_eq!(
            from_cli.values().sum::<u64>(),
            expected,
            "--domain {filter}: {from_cli:?}"
        );
    }
    // The other filters are the same predicate too.
    let by_group = AlertsQuery {
        group: Some("AGENTS".into()),
        ..AlertsQuery::default()
    };
    assert_eq!(api("group=AGENTS").await, cli(&by_group));
    assert!(!cli(&by_group).is_empty());
    let combined = AlertsQuery {
        client: Some("127.0.0.61".parse().unwrap()),
        min_score: Some(70),
        domain: Some("example".into()),
        ..AlertsQuery::default()
    };
    assert_eq!(
        api("client=127.0.0.61&min_score=70&domain=example").await,
        cli(&combined)
    );
    assert!(!cli(&combined).is_empty());
    s.stop_and_read_events().await;
}
