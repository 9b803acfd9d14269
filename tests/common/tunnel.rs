//! What the real-tunnel tests (dns2tcp, iodine) share: the addresses of the chain
//! `client → dnsward → tunnel server`, dnsward's configuration for it, and reading and
//! reporting the events a run left behind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

/// The tunnel zone. Under `example.com` (not a special-use TLD that resolvers answer locally),
/// so its registrable domain, the key the detector scores, is [`TUNNEL_DOMAIN`].
pub const TUNNEL_ZONE: &str = "tun.example.com";
/// The registrable domain of [`TUNNEL_ZONE`].
pub const TUNNEL_DOMAIN: &str = "example.com";
/// dnsward's listening address. Both tunnel clients ask port 53 of their resolver, and nothing
/// else, so dnsward binds port 53 here (which needs root).
pub const RESOLVER_IP: &str = "127.0.0.2";
/// The tunnel server's address.
pub const TUNNEL_SERVER_IP: &str = "127.0.0.3";
/// The address the tunnel client's queries come from (the kernel's source for 127.0.0.2), i.e.
/// the client dnsward puts in the group and names in its events.
pub const CLIENT_IP: &str = "127.0.0.1";
/// The dnsward group of the tunnelling client, as it appears in events and metric labels.
pub const GROUP: &str = "tunnel-client";
/// Verdicts of queries answered by a containment rather than by the tunnel server.
pub const CONTAINED_VERDICTS: [&str; 3] = ["throttle", "sinkhole", "quarantine"];

/// Whether a query event was answered by a containment.
pub fn is_contained(query: &Value) -> bool {
    CONTAINED_VERDICTS
        .iter()
        .any(|v| query["verdict"].as_str() == Some(v))
}

/// Writes dnsward's configuration for one run into `dir` and returns (config, events file):
/// [`RESOLVER_IP`]`:53`, admin on a free loopback port, [`TUNNEL_ZONE`] forwarded to
/// `tunnel_server`, per-second re-alerts (for a score timeline), the default containment, and
/// one allowlist group for [`CLIENT_IP`] that may resolve only the tunnel zone, enforcing or in
/// monitor-only mode. `log_allowed` logs every query, not just the blocked and contained ones.
pub fn dnsward_config(
    dir: &Path,
    tunnel_server: &str,
    monitor_only: bool,
    log_allowed: bool,
) -> (PathBuf, PathBuf) {
    let events = dir.join("events.jsonl");
    let allowed = if log_allowed { "on" } else { "off" };
    let text = format!(
        r#"
[server]
listen = ["{RESOLVER_IP}:53"]
unknown_clients = "refuse"

[admin]
listen = "127.0.0.1:0"
# These tests read group labels from /metrics without a token.
metrics_labels = "full"

[upstream]
timeout = "2s"
# Only the forward zone below is ever asked; this default upstream is a loopback discard port.
servers = [{{ address = "127.0.0.1:9", protocol = "udp", timeout = "1s" }}]

[[upstream.forward]]
zone = "{TUNNEL_ZONE}"
servers = [{{ address = "{tunnel_server}" }}]

[events]
sink = "file"
path = {events:?}
allowed = "{allowed}"

[detect]
# Re-alert every second while the score stays high, for the report's score timeline.
# Scoring itself is unchanged.
alert_interval = "1s"

[containment]
throttle_qps = 2
throttle_burst = 5
throttle_for = "10m"
sinkhole_for = "30m"
quarantine_for = "1h"

[[groups]]
name = "{GROUP}"
cidrs = ["{CLIENT_IP}/32"]
mode = "allowlist"
allow = ["*.{TUNNEL_ZONE}", "{TUNNEL_ZONE}"]
block = "nxdomain"

[groups.detect]
monitor_only = {monitor_only}
alert = 60
throttle = 70
sinkhole = 80
quarantine = 90
"#
    );
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, text).expect("writing the dnsward config");
    (path, events)
}

/// The events one run left, and when the run's tunnel client started (to place them in time).
#[derive(Debug)]
pub struct RunEvents {
    pub all: Vec<Value>,
    pub started_at: SystemTime,
}

impl RunEvents {
    pub fn read(path: &Path, started_at: SystemTime) -> Self {
        Self {
            all: super::read_events(path),
            started_at,
        }
    }

    /// The events written so far by a dnsward still running: a line it is still writing is
    /// left out.
    pub fn peek(path: &Path, started_at: SystemTime) -> Self {
        let all = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Self { all, started_at }
    }

    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.all.iter().filter(|e| e["kind"] == kind).collect()
    }

    /// Alerts for the client about the tunnel's registrable domain (or the zone itself).
    pub fn tunnel_alerts(&self) -> Vec<&Value> {
        self.of_kind("alert")
            .into_iter()
            .filter(|e| {
                e["client"] == CLIENT_IP
                    && (e["domain"] == TUNNEL_DOMAIN || e["domain"] == TUNNEL_ZONE)
            })
            .collect()
    }

    /// The client's logged queries (all of them only with `log_allowed`).
    pub fn client_queries(&self) -> Vec<&Value> {
        self.of_kind("query")
            .into_iter()
            .filter(|e| e["client"] == CLIENT_IP)
            .collect()
    }

    /// The client's queries answered by a containment.
    pub fn contained_queries(&self) -> Vec<&Value> {
        self.client_queries()
            .into_iter()
            .filter(|q| is_contained(q))
            .collect()
    }

    /// `containment_started` events for the client in its group.
    pub fn containments(&self) -> Vec<&Value> {
        self.of_kind("containment_started")
            .into_iter()
            .filter(|e| e["client"] == CLIENT_IP && e["group"] == GROUP)
            .collect()
    }

    /// The monitor-only run's verdict: dnsward alerted on the tunnel without acting
    /// (`monitor_only: true`, `action: "none"`) and contained nothing.
    pub fn assert_alerted_without_acting(&self) {
        assert!(
            self.tunnel_alerts()
                .iter()
                .any(|a| a["monitor_only"] == true && a["action"] == "none"),
            "no monitor-only alert (action \"none\") for {CLIENT_IP} and {TUNNEL_DOMAIN}; \
             events:\n{:#?}",
            self.all
        );
        assert!(
            self.of_kind("containment_started").is_empty() && self.contained_queries().is_empty(),
            "monitor_only must never contain; events:\n{:#?}",
            self.all
        );
    }

    /// The enforcing run's verdict: dnsward alerted, contained the client of `tool`, and
    /// answered some of its queries from the containment. Returns the containment events.
    pub fn assert_contained(&self, tool: &str) -> Vec<&Value> {
        assert!(
            !self.tunnel_alerts().is_empty(),
            "no alert for {CLIENT_IP} and {TUNNEL_DOMAIN} when enforcing; events:\n{:#?}",
            self.all
        );
        let started = self.containments();
        assert!(
            !started.is_empty(),
            "dnsward never contained the {tool} client; see the report above for its scores"
        );
        assert!(
            !self.contained_queries().is_empty(),
            "containment started but no query was answered by it (no verdict in \
             {CONTAINED_VERDICTS:?}); containment events: {started:#?}"
        );
        started
    }

    /// Seconds from the start to an event's `ts` (negative: before it).
    pub fn since_start(&self, event: &Value) -> Option<f64> {
        let ts = chrono::DateTime::parse_from_rfc3339(event["ts"].as_str()?).ok()?;
        Some(match SystemTime::from(ts).duration_since(self.started_at) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        })
    }

    /// The report's alert lines: how many, the first few and the highest, the score timeline.
    pub fn report_alerts(&self, r: &mut String) {
        let alerts = self.tunnel_alerts();
        let max = alerts
            .iter()
            .max_by_key(|a| a["score"].as_u64().unwrap_or(0));
        let _ = writeln!(
            r,
            "alerts for the tunnel domain: {} (max score {})",
            alerts.len(),
            max.map_or("-".into(), |a| a["score"].to_string())
        );
        let shown = alerts.iter().take(3).map(|a| ("alert", a));
        for (what, a) in shown.chain(max.map(|a| ("highest", a))) {
            let _ = writeln!(
                r,
                "  {what} at {:+.2}s: score {} action {} monitor_only {} window {} breakdown {}",
                self.since_start(a).unwrap_or(f64::NAN),
                a["score"],
                a["action"],
                a["monitor_only"],
                a["window"],
                a["breakdown"]
            );
        }
        if let Some(a) = alerts.first() {
            let _ = writeln!(r, "  samples: {}", a["samples"]);
        }
        let timeline: Vec<String> = alerts
            .iter()
            .map(|a| {
                format!(
                    "{:+.1}s:{}",
                    self.since_start(a).unwrap_or(f64::NAN),
                    a["score"]
                )
            })
            .collect();
        let _ = writeln!(r, "  score timeline: {}", timeline.join(" "));
    }

    /// The report's containment lines: when the first step started and what had got through by
    /// then (`through_before(event, seconds since start)`), then the later steps.
    pub fn report_containments(
        &self,
        r: &mut String,
        through_before: impl Fn(&Value, f64) -> String,
    ) {
        let containments = self.containments();
        let Some(first) = containments.first() else {
            let _ = writeln!(r, "no containment_started event");
            return;
        };
        let at = self.since_start(first).unwrap_or(f64::NAN);
        let _ = writeln!(
            r,
            "containment started {at:+.2}s after the start, {}: {first}",
            through_before(first, at)
        );
        for c in containments.iter().skip(1) {
            let _ = writeln!(r, "  then: {c}");
        }
    }

    /// The report's last line: events by kind.
    pub fn report_kinds(&self, r: &mut String) {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.all {
            *kinds.entry(e["kind"].as_str().unwrap_or("?")).or_default() += 1;
        }
        let _ = writeln!(r, "events by kind: {kinds:?}");
    }
}

/// `dnsward_queries_total` of the tunnel group, summed over query types, by verdict.
pub fn queries_by_verdict(metrics: &str) -> BTreeMap<String, u64> {
    let mut by_verdict = BTreeMap::new();
    for (labels, value) in super::metric_samples(metrics, "dnsward_queries_total") {
        if labels.get("group").map(String::as_str) != Some(GROUP) {
            continue;
        }
        let verdict = labels.get("verdict").cloned().unwrap_or_else(|| "?".into());
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let value = value as u64;
        *by_verdict.entry(verdict).or_insert(0) += value;
    }
    by_verdict
}
