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
    // Every metric has its `# HELP` line right before its `# TYPE` (`promtool check metrics`
    // lints a metric without one).
    let lines: Vec<&str> = body.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                i > 0 && lines[i - 1].starts_with(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{body}"
            );
        }
    }
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

/// `[events] aggregate_interval`: a client repeating one blocked query gets its first line at
/// once and one line with the count of the rest; distinct names, other clients and other
/// types keep their own lines; and the counts add up to every query sent.
#[tokio::test]
async fn repeated_identical_blocks_fold_into_one_line_with_a_count() {
    let extra = format!("aggregate_interval = \"30s\"\n{GROUP}");
    let mut s = TestServer::start(None, &extra).await;
    for _ in 0..40 {
        let m = udp_query(s.udp, "127.0.0.50", "exfil.example", RecordType::TXT).await;
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::NXDomain
        );
    }
    for i in 0..5 {
        udp_query(
            s.udp,
            "127.0.0.50",
            &format!("n{i}.exfil.example"),
            RecordType::TXT,
        )
        .await;
    }
    udp_query(s.udp, "127.0.0.52", "exfil.example", RecordType::TXT).await;
    udp_query(s.udp, "127.0.0.50", "exfil.example", RecordType::A).await;
    // Shutdown writes the line for the folded queries (the interval has not ended).
    let events = s.stop_and_read_events().await;
    let lines = |client: &str, qname: &str, qtype: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| {
                e["kind"] == "query"
                    && e["client"] == client
                    && e["qname"] == qname
                    && e["qtype"] == qtype
            })
            .collect()
    };
    let repeated = lines("127.0.0.50", "exfil.example", "TXT");
    assert_eq!(
        repeated.len(),
        2,
        "first line + one folded line: {repeated:#?}"
    );
    assert!(
        repeated[0].get("count").is_none(),
        "the first query's line is as always"
    );
    assert_eq!(repeated[1]["count"], 39, "{repeated:#?}");
    assert_eq!(repeated[1]["verdict"], "block");
    let total: u64 = repeated
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(total, 40, "every query accounted for");
    for i in 0..5 {
        assert_eq!(
            lines("127.0.0.50", &format!("n{i}.exfil.example"), "TXT").len(),
            1
        );
    }
    // Unknown client: sampled per source, never folded into the group client's line.
    assert_eq!(lines("127.0.0.52", "exfil.example", "TXT").len(), 1);
    assert_eq!(lines("127.0.0.50", "exfil.example", "A").len(), 1);
}

/// `aggregate_interval = "0s"` writes every query on its own line.
#[tokio::test]
async fn aggregation_can_be_switched_off() {
    let extra = format!("aggregate_interval = \"0s\"\n{GROUP}");
    let mut s = TestServer::start(None, &extra).await;
    for _ in 0..10 {
        udp_query(s.udp, "127.0.0.50", "exfil.example", RecordType::TXT).await;
    }
    let events = s.stop_and_read_events().await;
    let n = events
        .iter()
        .filter(|e| e["kind"] == "query" && e["qname"] == "exfil.example")
        .inspect(|e| assert!(e.get("count").is_none()))
        .count();
    assert_eq!(n, 10);
}

/// The series an alert rule watches for a first increase exist at zero from the start (a
/// series that first appears at 1 is no `increase()`): each group's alerts and containments by
/// action, rejected reloads, event drops by cause.
#[tokio::test]
async fn alerting_series_exist_at_zero_from_the_start() {
    let group = r#"
[[groups]]
name = "zero-series-group"
cidrs = ["127.0.0.52/32"]
allow = ["*.corp.internal"]
"#;
    let s = TestServer::start(None, group).await;
    let text = metrics_text(&s).await;
    for (name, labels) in [
        (
            "dnsward_alerts_total",
            vec![("group", "zero-series-group"), ("action", "sinkhole")],
        ),
        (
            "dnsward_containments_total",
            vec![("group", "zero-series-group"), ("action", "quarantine")],
        ),
        ("dnsward_policy_reloads_total", vec![("result", "rejected")]),
        (
            "dnsward_events_dropped_total",
            vec![("cause", "security_io")],
        ),
    ] {
        assert!(
            metric_sum(&text, name, &labels).is_some(),
            "{name} {labels:?} missing:\n{}",
            text.lines()
                .filter(|l| l.starts_with(name))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// logrotate's `create` mode: the log is renamed, a new file created, and dnsward told to
/// reload; the events after it go to the new file, and the chain runs on across both.
#[tokio::test]
async fn a_reload_follows_an_event_log_moved_away() {
    let mut s = TestServer::start(None, GROUP).await;
    udp_query(s.udp, "127.0.0.50", "before.example", RecordType::A).await;
    let path = s.events_path.clone();
    let written = |p: &std::path::Path, name: &str| {
        std::fs::read_to_string(p).is_ok_and(|t| t.contains(name))
    };
    for _ in 0..500 {
        if written(&path, "before.example") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let moved = dnsward::events::rotation::rotated_path(&path, 1);
    std::fs::rename(&path, &moved).unwrap();
    std::fs::write(&path, "").unwrap();
    let _ = s
        .app
        .as_ref()
        .unwrap()
        .control
        .reload(Some("logrotate"), None)
        .await;
    udp_query(s.udp, "127.0.0.50", "after.example", RecordType::A).await;
    s.stop_and_read_events().await;

    assert!(written(&moved, "before.example"));
    assert!(!written(&moved, "after.example"));
    assert!(
        written(&path, "after.example"),
        "the new file gets the events after the reload"
    );
    let files = dnsward::events::reader::rotated_files(&path);
    assert_eq!(files, [moved, path]);
    let report = dnsward::govern::audit::verify(&files, None);
    assert!(report.ok, "{report}");
    assert!(!report.starts_mid_way(), "{report}");
}
