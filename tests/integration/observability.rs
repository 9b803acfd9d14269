//! Events and metrics.

use hickory_proto::rr::RecordType;

use crate::common::metric_sum;
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

/// A group only the metrics test uses: the metrics registry is process-wide, so labels of its
/// own make its counts exact even with other tests running.
const METERED: &str = r#"
[[groups]]
name = "metered"
cidrs = ["127.0.0.52/32"]
allow = ["*.corp.internal", "www.example"]
"#;

/// Queries timed over `protocol` so far, by any server in this process.
fn timed(metrics: &str, protocol: &str) -> f64 {
    metric_sum(
        metrics,
        "dnsward_query_duration_seconds_count",
        &[("protocol", protocol)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_endpoint_counts_queries() {
    let up = FakeUpstream::new()
        .with_a("www.example", [192, 0, 2, 1], 300)
        .start()
        .await;
    let s = TestServer::start(Some(up.addr), METERED).await;
    let timed_before = timed(&metrics_text(&s).await, "udp");
    for _ in 0..3 {
        udp_query(s.udp, "127.0.0.52", "nope.example", RecordType::AAAA).await;
    }
    udp_query(s.udp, "127.0.0.52", "git.corp.internal", RecordType::A).await;
    // Forwarded, so its answer is cached.
    udp_query(s.udp, "127.0.0.52", "www.example", RecordType::A).await;
    let body = metrics_text(&s).await;
    let queries = |verdict: &str, qtype: &str| {
        metric_sum(
            &body,
            "dnsward_queries_total",
            &[("group", "metered"), ("verdict", verdict), ("qtype", qtype)],
        )
        .unwrap_or_else(|| panic!("no {verdict} {qtype} queries of group metered in\n{body}"))
    };
    assert_eq!(queries("block", "AAAA"), 3.0, "{body}");
    assert_eq!(queries("allow", "A"), 2.0, "{body}");
    let timed_after = timed(&body, "udp");
    assert!(
        timed_after >= timed_before + 5.0,
        "the 5 queries are timed: dnsward_query_duration_seconds_count{{protocol=\"udp\"}} went \
         from {timed_before} to {timed_after}"
    );
    // The cache gauge is set from the serving cache when /metrics is rendered; another test's
    // server rendering at the same moment may overwrite it, so ask until this one's shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body = metrics_text(&s).await;
        let entries = metric_sum(&body, "dnsward_cache_entries", &[]);
        if entries.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dnsward_cache_entries is {entries:?} with a cached answer:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let health = reqwest::get(format!("http://{}/healthz", s.admin.unwrap()))
        .await
        .unwrap();
    assert!(health.status().is_success());
}
