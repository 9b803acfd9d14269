//! What the review reads from the event log beyond the suspects of
//! [`crate::review::suspects::load_alerts`]: one client's timeline on one domain (with a
//! names/bytes-over-time series for the chart) and the per-client agents view.
//!
//! Reading is forgiving like the analyst's: lines that are not JSON are skipped. Bounded: the
//! timeline keeps the last [`MAX_TIMELINE`] items, the series at most [`MAX_BUCKETS`] buckets,
//! the agents view at most [`MAX_AGENTS`] clients and [`RECENT_VERDICTS`] verdicts each.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// Timeline items kept (the newest).
pub const MAX_TIMELINE: usize = 500;
/// Buckets of the chart series.
pub const MAX_BUCKETS: usize = 60;
/// Clients in the agents view.
pub const MAX_AGENTS: usize = 10_000;
/// Verdicts remembered per client.
pub const RECENT_VERDICTS: usize = 20;

/// One line of a suspect's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineItem {
    /// RFC 3339 time.
    pub ts: String,
    /// `query`, `alert`, `containment_started`, `containment_ended`.
    pub kind: String,
    /// Query name (queries), or the domain.
    pub name: String,
    /// Query type, verdict, score, action…: a short summary.
    pub summary: String,
}

/// One bucket of the chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    /// Start of the bucket (RFC 3339).
    pub start: String,
    /// Queries to the domain in the bucket.
    pub names: u64,
    /// Bytes of query name left of the domain in the bucket.
    pub bytes: u64,
}

/// A suspect's timeline and series.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Timeline {
    /// Newest last.
    pub items: Vec<TimelineItem>,
    /// Items left out because of the bound.
    pub omitted: u64,
    /// Names and bytes over time.
    pub series: Vec<Bucket>,
    /// Bucket width in seconds.
    pub bucket_secs: i64,
}

fn lines(files: &[PathBuf], mut each: impl FnMut(&Value)) {
    for path in files {
        let Ok(f) = File::open(path) else { continue };
        // By bytes: a line that is not UTF-8 (torn, or damaged) is skipped, not the end of
        // the file.
        for line in BufReader::new(f).split(b'\n') {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                each(&v);
            }
        }
    }
}

fn under(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.'))
}

/// The timeline of `client` on `domain` from `files` (oldest first).
#[must_use]
pub fn timeline(files: &[PathBuf], client: IpAddr, domain: &str) -> Timeline {
    let client_s = client.to_string();
    let mut items: VecDeque<TimelineItem> = VecDeque::new();
    let mut omitted = 0;
    let mut points: Vec<(DateTime<Utc>, u64)> = Vec::new();
    lines(files, |v| {
        if v["client"].as_str() != Some(client_s.as_str()) {
            return;
        }
        let kind = v["kind"].as_str().unwrap_or("");
        let ts = v["ts"].as_str().unwrap_or("").to_string();
        let item = match kind {
            "query" => {
                let qname = v["qname"].as_str().unwrap_or("");
                if !under(qname, domain) {
                    return;
                }
                if let Ok(t) = DateTime::parse_from_rfc3339(&ts) {
                    let payload = qname.len().saturating_sub(domain.len() + 1) as u64;
                    if points.len() < 1_000_000 {
                        points.push((t.with_timezone(&Utc), payload));
                    }
                }
                TimelineItem {
                    ts,
                    kind: kind.into(),
                    name: qname.into(),
                    summary: {
                        let mut s = format!(
                            "{} {} {} ({})",
                            v["qtype"].as_str().unwrap_or(""),
                            v["verdict"].as_str().unwrap_or(""),
                            v["rcode"].as_str().unwrap_or(""),
                            v["reason"].as_str().unwrap_or("")
                        );
                        // A line folding identical queries (`[events] aggregate_interval`).
                        if let Some(n) = v["count"].as_u64().filter(|n| *n > 1) {
                            s.push_str(&format!(" ×{n}"));
                        }
                        s
                    },
                }
            }
            "alert" if v["domain"].as_str() == Some(domain) => TimelineItem {
                ts,
                kind: kind.into(),
                name: domain.into(),
                summary: format!(
                    "score {} → {}",
                    v["score"],
                    v["action"].as_str().unwrap_or("")
                ),
            },
            "containment_started" | "containment_ended"
                if v["domain"].is_null() || v["domain"].as_str() == Some(domain) =>
            {
                TimelineItem {
                    ts,
                    kind: kind.into(),
                    name: v["domain"].as_str().unwrap_or("(whole client)").into(),
                    summary: format!(
                        "{}: {}",
                        v["action"].as_str().unwrap_or(""),
                        v["reason"].as_str().unwrap_or("")
                    ),
                }
            }
            _ => return,
        };
        if items.len() >= MAX_TIMELINE {
            items.pop_front();
            omitted += 1;
        }
        items.push_back(item);
    });
    let (series, bucket_secs) = series(&points);
    Timeline {
        items: items.into(),
        omitted,
        series,
        bucket_secs,
    }
}

fn series(points: &[(DateTime<Utc>, u64)]) -> (Vec<Bucket>, i64) {
    let (Some(first), Some(last)) = (
        points.iter().map(|p| p.0).min(),
        points.iter().map(|p| p.0).max(),
    ) else {
        return (Vec::new(), 1);
    };
    let span = (last - first).num_seconds().max(1);
    let width = (span / MAX_BUCKETS as i64 + 1).max(1);
    let n = (span / width + 1) as usize;
    let mut buckets: Vec<Bucket> = (0..n.min(MAX_BUCKETS + 1))
        .map(|i| Bucket {
            start: (first + chrono::Duration::seconds(i as i64 * width))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            names: 0,
            bytes: 0,
        })
        .collect();
    for (t, bytes) in points {
        let i = (((*t - first).num_seconds()) / width) as usize;
        let last = buckets.len() - 1;
        if let Some(b) = buckets.get_mut(i.min(last)) {
            b.names += 1;
            b.bytes += bytes;
        }
    }
    (buckets, width)
}

/// One client in the agents view.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Agent {
    /// The client.
    pub client: String,
    /// Its group as of its latest event.
    pub group: Option<String>,
    /// Queries read per verdict.
    pub verdicts: BTreeMap<String, u64>,
    /// The latest verdicts, newest last: `verdict qname`.
    pub recent: VecDeque<String>,
    /// Alerts read.
    pub alerts: u64,
    /// Time of its latest event.
    pub last_seen: String,
}

/// Per-client summary of `files`.
#[must_use]
pub fn agents(files: &[PathBuf]) -> Vec<Agent> {
    let mut by: HashMap<String, Agent> = HashMap::new();
    lines(files, |v| {
        let Some(client) = v["client"].as_str() else {
            return;
        };
        let kind = v["kind"].as_str().unwrap_or("");
        if !matches!(kind, "query" | "alert") {
            return;
        }
        if !by.contains_key(client) && by.len() >= MAX_AGENTS {
            return;
        }
        let a = by.entry(client.to_string()).or_insert_with(|| Agent {
            client: client.to_string(),
            ..Agent::default()
        });
        if let Some(g) = v["group"].as_str() {
            a.group = Some(g.to_string());
        }
        a.last_seen = v["ts"].as_str().unwrap_or("").to_string();
        if kind == "alert" {
            a.alerts += 1;
            return;
        }
        let verdict = v["verdict"].as_str().unwrap_or("?").to_string();
        *a.verdicts.entry(verdict.clone()).or_default() += 1;
        if a.recent.len() >= RECENT_VERDICTS {
            a.recent.pop_front();
        }
        a.recent
            .push_back(format!("{verdict} {}", v["qname"].as_str().unwrap_or("")));
    });
    let mut all: Vec<Agent> = by.into_values().collect();
    all.sort_by(|a, b| a.client.cmp(&b.client));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn timeline_keeps_the_clients_names_under_the_domain_and_buckets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = File::create(&path).unwrap();
        for (i, (client, qname)) in [
            ("10.0.0.1", "aaaa.tun.example"),
            ("10.0.0.1", "bbbbbbbb.tun.example"),
            ("10.0.0.2", "cccc.tun.example"),
            ("10.0.0.1", "www.other.example"),
        ]
        .iter()
        .enumerate()
        {
            writeln!(f, r#"{{"ts":"2026-12-02T10:00:0{i}Z","kind":"query","client":"{client}","group":"g","qname":"{qname}","qtype":"TXT","verdict":"allow","rcode":"NOERROR","reason":"r"}}"#).unwrap();
        }
        writeln!(f, "not json").unwrap();
        writeln!(f, r#"{{"ts":"2026-12-02T10:00:05Z","kind":"alert","client":"10.0.0.1","group":"g","domain":"tun.example","score":70,"action":"quarantine"}}"#).unwrap();
        drop(f);
        let t = timeline(
            std::slice::from_ref(&path),
            "10.0.0.1".parse().unwrap(),
            "tun.example",
        );
        assert_eq!(t.items.len(), 3, "{:?}", t.items);
        assert_eq!(t.items[2].kind, "alert");
        let names: u64 = t.series.iter().map(|b| b.names).sum();
        let bytes: u64 = t.series.iter().map(|b| b.bytes).sum();
        assert_eq!((names, bytes), (2, 12));
        let a = agents(&[path]);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].verdicts["allow"], 3);
        assert_eq!(a[0].alerts, 1);
    }
}
