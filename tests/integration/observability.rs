//! Events and metrics.

use hickory_proto::rr::RecordType;

use crate::harness::*;

const GROUP: &str = r#"
[[groups]]
name = "observed"
cidrs = ["127.0.0.50/32"]
allow = ["*.corp.internal"]
"#;

#[tokio::test]
async fn events_carry_who_what_and_why() {
    let mut s = TestServer::start(None, GROUP).await;
    udp_query(s.udp, "127.0.0.50", "api.corp.internal", RecordType::A).await;
    udp_query(s.udp, "127.0.0.50", "exfil.example", RecordType::TXT).await;
    udp_query(s.udp, "127.0.0.51", "api.corp.internal", RecordType::A).await;
    let events = s.stop_and_read_events().await;
    let queries: Vec<_> = events.iter().filter(|e| e["kind"] == "query").collect();
    assert_eq!(queries.len(), 3, "{events:#?}");
    let block = queries
        .iter()
        .find(|e| e["verdict"] == "block")
        .expect("block event");
    assert_eq!(block["client"], "127.0.0.50");
    assert_eq!(block["group"], "observed");
    assert_eq!(block["qname"], "exfil.example");
    assert_eq!(block["qtype"], "TXT");
    assert_eq!(block["reason"], "not allowlisted");
    assert_eq!(block["rcode"], "NXDOMAIN");
    assert_eq!(block["protocol"], "udp");
    assert_eq!(block["cache_hit"], false);
    assert!(block["latency_us"].is_u64());
    assert!(block["policy_version"].is_u64());
    let ts = block["ts"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.len() == 27,
        "RFC 3339 with µs: {ts}"
    );
    let refused = queries
        .iter()
        .find(|e| e["verdict"] == "refuse")
        .expect("refuse event");
    assert_eq!(refused["reason"], "unknown client");
    assert_eq!(refused["group"], serde_json::Value::Null);
    let allowed = queries
        .iter()
        .find(|e| e["verdict"] == "allow")
        .expect("allowed (allowed=on)");
    assert_eq!(allowed["upstream"], "zone:corp.internal");
    assert_eq!(allowed["answers"], 2);
}

#[tokio::test]
async fn metrics_endpoint_counts_queries() {
    let s = TestServer::start(None, GROUP).await;
    for _ in 0..3 {
        udp_query(s.udp, "127.0.0.50", "nope.example", RecordType::AAAA).await;
    }
    udp_query(s.udp, "127.0.0.50", "git.corp.internal", RecordType::A).await;
    let admin = s.admin.expect("admin endpoint");
    let body = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |needle: &str| {
        body.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {needle} in\n{body}"))
    };
    assert!(line(r#"dnsward_queries_total{group="observed",verdict="block",qtype="AAAA"}"#) >= 3.0);
    assert!(line(r#"dnsward_queries_total{group="observed",verdict="allow",qtype="A"}"#) >= 1.0);
    assert!(body.contains("dnsward_query_duration_seconds_bucket"));
    assert!(body.contains("dnsward_cache_entries"));
    let health = reqwest::get(format!("http://{admin}/healthz"))
        .await
        .unwrap();
    assert!(health.status().is_success());
}
