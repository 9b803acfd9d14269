//! Who looks like a tunnel, from the event log: the suspects `dnsward alerts` and the review
//! console list.
//!
//! [`load_alerts`] reads the log's files (listed by
//! [`crate::events::reader::rotated_files`], read through
//! [`LogLines`]), keeps the alerts an [`AlertsQuery`] asks for, folds them into one [`Suspect`]
//! per (client, domain) and joins the containment events to say who is contained now;
//! `dnsward alerts` (`cli/alerts.rs`) and the review console present the result. The alert filter is the
//! admin API's own ([`AlertFilter::matches`]), so `dnsward alerts --domain X` and
//! `GET /api/v1/alerts?domain=X` select the same alerts.
//!
//! Reading is forgiving, because an analyst must always be able to read what is there: a line
//! that is not JSON (a torn write, a stray edit, a line over
//! [`MAX_LINE_BYTES`]) is skipped and counted, unknown
//! fields (`seq` and `prev` of the hash chain) and unknown kinds are ignored.
//!
//! Bounds: the analysis holds one [`Suspect`] per distinct (client, domain) alerted on and one
//! containment record per contained (client, domain), never the lines themselves.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use super::containment_log::Containment;
use super::containment_log::{ContainmentLog, ser_time};
use crate::contain::overrides::AlertFilter;
use crate::events::reader::{LogLines, MAX_LINE_BYTES};
use crate::events::{AlertEvent, ContainmentEvent, WindowCounts};

/// Distinct samples kept per suspect.
const MAX_SAMPLES: usize = 3;
/// Longest sample shown, in characters (longer ones end in `…`).
const SAMPLE_CHARS: usize = 60;

/// Bytes read from an event file at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A fault reading the event log. A malformed line is not an error: it is skipped and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalystError {
    /// An event file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A duration such as `--since` did not parse.
    #[error("invalid duration {input:?} (expected e.g. 30m, 1h, 2d): {source}")]
    Duration {
        /// What was given.
        input: String,
        /// Why it did not parse.
        source: humantime::DurationError,
    },
}

/// Parse a look-back duration such as `30m`, `1h`, `2d` or `1h 30m`.
///
/// # Errors
/// [`AnalystError::Duration`] when `input` is not a duration.
pub fn parse_duration(input: &str) -> Result<Duration, AnalystError> {
    humantime::parse_duration(input.trim()).map_err(|source| AnalystError::Duration {
        input: input.to_string(),
        source,
    })
}

/// Which alerts [`load_alerts`] keeps. Every filter given must match; `Default` keeps all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertsQuery {
    /// Only alerts at most this long before `now` (inclusive).
    pub since: Option<Duration>,
    /// Only this client.
    pub client: Option<IpAddr>,
    /// Only this group (case-insensitive).
    pub group: Option<String>,
    /// Only this domain and names below it, on label boundaries: `example` matches alerts on
    /// `tun.example` (the admin API's rule, [`domain_matches`](crate::contain::overrides::domain_matches)).
    pub domain: Option<String>,
    /// Only alerts scoring at least this. Applied per alert, so a suspect's counts cover only
    /// the alerts that reached it.
    pub min_score: Option<u8>,
    /// Most suspects returned, highest first; 0 returns all.
    pub limit: usize,
}

impl AlertsQuery {
    /// The client, group, domain and score filters, as the admin API applies them.
    fn filter(&self) -> AlertFilter {
        AlertFilter {
            since: None,
            client: self.client,
            group: self.group.clone(),
            domain: self.domain.clone(),
            min_score: self.min_score,
            limit: None,
        }
    }
}

/// One client's alerts on one domain, folded together for an analyst.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suspect {
    /// The client that sent the queries.
    pub client: IpAddr,
    /// The verified agent identity, when the alerts were keyed on one.
    pub agent: Option<String>,
    /// The registrable domain they went to.
    pub domain: String,
    /// The client's group, as of the latest alert.
    pub group: String,
    /// Alerts that matched the query.
    pub alerts: u64,
    /// The highest score among them.
    pub max_score: u8,
    /// The score breakdown of the highest-scoring alert (the latest one on a tie).
    pub breakdown: BTreeMap<String, f64>,
    /// Time of the first matching alert.
    #[serde(serialize_with = "ser_time")]
    pub first_seen: DateTime<Utc>,
    /// Time of the latest matching alert.
    #[serde(serialize_with = "ser_time")]
    pub last_seen: DateTime<Utc>,
    /// Window counts of the latest alert.
    pub window: WindowCounts,
    /// Estimated bytes carried out in query names: the largest estimate (each alert reports
    /// its running total).
    pub bytes_estimate: u64,
    /// Distinct actions taken, in the order first taken (e.g. `alert`, `throttle`, `sinkhole`).
    pub actions: Vec<String>,
    /// Whether the latest alert was in monitor-only mode.
    pub monitor_only: bool,
    /// The exception that lowered the latest alert's score, if any.
    pub exception: Option<String>,
    /// Up to three distinct sample query names, newest first, at most 60 characters each.
    pub samples: Vec<String>,
    /// Whether the client is contained now, for this domain or as a whole.
    pub containment: Containment,
}

impl Suspect {
    fn new(ts: DateTime<Utc>, alert: AlertEvent) -> Self {
        let mut suspect = Self {
            client: alert.client,
            agent: alert.agent.clone(),
            domain: alert.domain.to_ascii_lowercase(),
            group: String::new(),
            alerts: 0,
            max_score: 0,
            breakdown: BTreeMap::new(),
            first_seen: ts,
            last_seen: ts,
            window: WindowCounts::default(),
            bytes_estimate: 0,
            actions: Vec::new(),
            monitor_only: false,
            exception: None,
            samples: Vec::new(),
            containment: Containment::None,
        };
        suspect.absorb(ts, alert);
        suspect
    }

    fn absorb(&mut self, ts: DateTime<Utc>, alert: AlertEvent) {
        self.alerts += 1;
        self.first_seen = self.first_seen.min(ts);
        self.bytes_estimate = self.bytes_estimate.max(alert.bytes_estimate);
        if !self.actions.contains(&alert.action) {
            self.actions.push(alert.action.clone());
        }
        // Lines arrive oldest first, so a later line wins a tie on time or score.
        let latest = ts >= self.last_seen;
        let mut fresh: Vec<String> = Vec::with_capacity(alert.samples.len());
        for sample in &alert.samples {
            let sample = truncate_chars(sample, SAMPLE_CHARS);
            if !fresh.contains(&sample) {
                fresh.push(sample);
            }
        }
        if latest {
            self.samples.retain(|s| !fresh.contains(s));
            self.samples.splice(0..0, fresh);
        } else {
            for sample in fresh {
                if !self.samples.contains(&sample) {
                    self.samples.push(sample);
                }
            }
        }
        self.samples.truncate(MAX_SAMPLES);
        if alert.score >= self.max_score {
            self.max_score = alert.score;
            self.breakdown = alert.breakdown;
        }
        if latest {
            self.last_seen = ts;
            self.group = alert.group;
            self.window = alert.window;
            self.monitor_only = alert.monitor_only;
            self.exception = alert.exception;
        }
    }
}

/// What [`scan_alerts`] found, with the counts a CLI reports beside the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertScan {
    /// The suspects, highest score first.
    pub suspects: Vec<Suspect>,
    /// Non-empty lines read.
    pub lines: u64,
    /// Alert events that matched the query.
    pub alerts_matched: u64,
    /// Lines skipped because they are not events (not JSON, no `ts`/`kind`, a bad timestamp, a
    /// malformed alert or containment).
    pub skipped: u64,
    /// Where the first skipped line is and why, e.g. `events.jsonl.1:7: expected value at …`.
    pub first_skipped: Option<String>,
}

/// Read `files` (oldest first), keep the alerts `q` asks for and fold them into suspects, sorted
/// by max score, then latest alert, both descending. Lines that are not events are skipped and
/// logged once as a warning with their count; use [`scan_alerts`] for the count itself.
///
/// # Errors
/// [`AnalystError::Read`] when a file cannot be opened or read.
pub fn load_alerts(
    files: &[PathBuf],
    q: &AlertsQuery,
    now: DateTime<Utc>,
) -> Result<Vec<Suspect>, AnalystError> {
    let scan = scan_alerts(files, q, now)?;
    if scan.skipped > 0 {
        tracing::warn!(
            skipped = scan.skipped,
            first = scan.first_skipped.as_deref().unwrap_or(""),
            "skipped event-log lines that are not events"
        );
    }
    Ok(scan.suspects)
}

/// [`load_alerts`] with the line counts.
///
/// # Errors
/// [`AnalystError::Read`] when a file cannot be opened or read.
pub fn scan_alerts(
    files: &[PathBuf],
    q: &AlertsQuery,
    now: DateTime<Utc>,
) -> Result<AlertScan, AnalystError> {
    let cutoff = q
        .since
        .and_then(|s| chrono::Duration::from_std(s).ok())
        .and_then(|s| now.checked_sub_signed(s));
    let filter = q.filter();
    let mut scan = AlertScan::default();
    let mut suspects: HashMap<(IpAddr, Option<String>, String), Suspect> = HashMap::new();
    let mut containments = ContainmentLog::default();
    for path in files {
        let read_error = |source| AnalystError::Read {
            path: path.clone(),
            source,
        };
        let mut lines = LogLines::open(path, READ_BUFFER_BYTES).map_err(read_error)?;
        while let Some(line) = lines.next_line().map_err(read_error)? {
            if line.is_blank() {
                continue;
            }
            let line_no = line.number;
            scan.lines += 1;
            let event = if line.oversize {
                Err(format!("line longer than {MAX_LINE_BYTES} bytes"))
            } else {
                read_event(line.bytes)
            };
            match event {
                Ok(LogLine::Alert(ts, alert)) => {
                    if cutoff.is_none_or(|c| ts >= c) && filter.matches(&alert) {
                        scan.alerts_matched += 1;
                        match suspects.entry((
                            alert.client,
                            alert.agent.clone(),
                            alert.domain.to_ascii_lowercase(),
                        )) {
                            Entry::Occupied(mut e) => e.get_mut().absorb(ts, alert),
                            Entry::Vacant(e) => {
                                e.insert(Suspect::new(ts, alert));
                            }
                        }
                    }
                }
                Ok(LogLine::Started(ts, c)) => containments.started(ts, c),
                Ok(LogLine::Ended(ts, c)) => containments.ended(ts, c),
                Ok(LogLine::Other) => {}
                Err(why) => {
                    scan.skipped += 1;
                    if scan.first_skipped.is_none() {
                        scan.first_skipped = Some(format!("{}:{line_no}: {why}", path.display()));
                    }
                }
            }
        }
    }
    let mut suspects: Vec<Suspect> = suspects.into_values().collect();
    for s in &mut suspects {
        s.containment = containments.state(s.client, &s.domain, now);
    }
    suspects.sort_by(|a, b| {
        b.max_score
            .cmp(&a.max_score)
            .then(b.last_seen.cmp(&a.last_seen))
            .then(a.client.cmp(&b.client))
            .then(a.domain.cmp(&b.domain))
    });
    if q.limit > 0 {
        suspects.truncate(q.limit);
    }
    scan.suspects = suspects;
    Ok(scan)
}

/// The fields every event line has that the analysis needs before choosing a type.
#[derive(Deserialize)]
struct LineHead {
    ts: String,
    kind: String,
}

/// An event line as the analysis sees it.
enum LogLine {
    Alert(DateTime<Utc>, AlertEvent),
    Started(DateTime<Utc>, ContainmentEvent),
    Ended(DateTime<Utc>, ContainmentEvent),
    /// Queries, policy changes and kinds this version does not know.
    Other,
}

fn read_event(line: &[u8]) -> Result<LogLine, String> {
    let head: LineHead = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let parsed = match head.kind.as_str() {
        "alert" => LogLine::Alert(
            parse_time(&head.ts)?,
            serde_json::from_slice(line).map_err(|e| format!("alert: {e}"))?,
        ),
        "containment_started" => LogLine::Started(
            parse_time(&head.ts)?,
            serde_json::from_slice(line).map_err(|e| format!("containment_started: {e}"))?,
        ),
        "containment_ended" => LogLine::Ended(
            parse_time(&head.ts)?,
            serde_json::from_slice(line).map_err(|e| format!("containment_ended: {e}"))?,
        ),
        _ => LogLine::Other,
    };
    Ok(parsed)
}

pub(crate) fn parse_time(ts: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(ts)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad timestamp {ts:?}: {e}"))
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Helpers shared by the analyst views' unit tests: the fixture log and its clock.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};

    use chrono::{DateTime, Utc};

    use super::{AlertScan, AlertsQuery, Suspect, parse_time, scan_alerts};
    use crate::events::reader::rotated_files;

    pub(crate) fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analyst")
    }

    pub(crate) fn now() -> DateTime<Utc> {
        parse_time("2026-11-25T20:00:00Z").unwrap()
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn scan(q: &AlertsQuery) -> AlertScan {
        scan_alerts(&rotated_files(&fixtures().join("events.jsonl")), q, now()).unwrap()
    }

    pub(crate) fn keys(suspects: &[Suspect]) -> Vec<(String, &str, u64)> {
        suspects
            .iter()
            .map(|s| (s.client.to_string(), s.domain.as_str(), s.alerts))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::testing::*;
    use super::*;

    #[test]
    fn suspects_fold_alerts_across_rotated_files_and_skip_junk() {
        let scan = scan(&AlertsQuery::default());
        // The junk line, a truncated alert and an alert with a bad timestamp.
        assert_eq!(scan.skipped, 3, "{:?}", scan.first_skipped);
        assert!(
            scan.first_skipped
                .as_deref()
                .is_some_and(|s| s.contains("events.jsonl.1:")),
            "{:?}",
            scan.first_skipped
        );
        assert_eq!(scan.alerts_matched, 8);
        // Max score, then latest alert, both descending: .63 and .64 tie on 74.
        assert_eq!(
            keys(&scan.suspects),
            [
                ("127.0.0.62".to_string(), "exfil.test", 2),
                ("127.0.0.61".to_string(), "tun.example", 3),
                ("127.0.0.63".to_string(), "drip.example", 1),
                ("127.0.0.64".to_string(), "slow.example", 1),
                ("127.0.0.61".to_string(), "other.example", 1),
            ]
        );
        let tun = &scan.suspects[1];
        assert_eq!(tun.max_score, 88);
        assert_eq!(tun.group, "tunnel");
        assert_eq!(tun.breakdown.get("pattern"), Some(&41.0));
        assert_eq!(tun.actions, ["alert", "throttle", "sinkhole"]);
        assert_eq!(tun.bytes_estimate, 2900);
        assert_eq!(tun.window.queries, 30, "window of the latest alert");
        assert_eq!(tun.first_seen, parse_time("2026-11-25T19:30:00Z").unwrap());
        assert_eq!(tun.last_seen, parse_time("2026-11-25T19:50:00Z").unwrap());
        // Three distinct, newest first, truncated to 60 characters.
        assert_eq!(tun.samples.len(), 3);
        assert_eq!(tun.samples[0], "c3.tun.example");
        assert!(
            tun.samples
                .iter()
                .all(|s| s.chars().count() <= SAMPLE_CHARS)
        );
        assert!(tun.samples.iter().any(|s| s.ends_with('…')));
    }

    #[test]
    fn containment_state_is_joined_per_client_and_domain() {
        let scan = scan(&AlertsQuery::default());
        let state = |client: &str, domain: &str| {
            scan.suspects
                .iter()
                .find(|s| s.client == ip(client) && s.domain == domain)
                .unwrap()
                .containment
                .clone()
        };
        // Throttled, then escalated to a sinkhole that runs past `now`.
        assert_eq!(
            state("127.0.0.61", "tun.example"),
            Containment::Active {
                action: "sinkhole".into(),
                whole_client: false,
                since: parse_time("2026-11-25T19:50:00.5Z").unwrap(),
                until: Some(parse_time("2026-11-25T20:20:00Z").unwrap()),
            }
        );
        // The same client's other domain was never contained.
        assert_eq!(state("127.0.0.61", "other.example"), Containment::None);
        // Quarantined as a whole, then released by an operator.
        assert!(matches!(
            state("127.0.0.62", "exfil.test"),
            Containment::Ended { action, reason, .. }
                if action == "quarantine" && reason == "released by alice: false positive"
        ));
        // Its `until` passed without an end event being read.
        assert_eq!(
            state("127.0.0.63", "drip.example"),
            Containment::Ended {
                action: "throttle".into(),
                at: parse_time("2026-11-25T19:15:00Z").unwrap(),
                reason: "expired".into(),
            }
        );
        // Before the release, the quarantine of the whole client shows on each of its domains.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        let fixture = fs::read_to_string(fixtures().join("events.jsonl")).unwrap();
        let head: Vec<&str> = fixture.lines().take(4).collect();
        fs::write(&log, head.join("\n")).unwrap();
        let before = scan_alerts(&[log], &AlertsQuery::default(), now()).unwrap();
        assert!(matches!(
            &before.suspects[0].containment,
            Containment::Active { action, whole_client: true, until: Some(_), .. }
                if action == "quarantine"
        ));
    }

    #[test]
    fn filters_select_alerts() {
        let hour = AlertsQuery {
            since: Some(parse_duration("1h").unwrap()),
            ..Default::default()
        };
        // 19:00 is exactly an hour before `now`: included.
        assert_eq!(
            keys(&scan(&hour).suspects),
            [
                ("127.0.0.62".to_string(), "exfil.test", 1),
                ("127.0.0.61".to_string(), "tun.example", 3),
                ("127.0.0.63".to_string(), "drip.example", 1),
            ]
        );
        let client = AlertsQuery {
            client: Some(ip("127.0.0.61")),
            ..Default::default()
        };
        assert_eq!(
            keys(&scan(&client).suspects),
            [
                ("127.0.0.61".to_string(), "tun.example", 3),
                ("127.0.0.61".to_string(), "other.example", 1),
            ]
        );
        let domain = |d: &str| {
            let q = AlertsQuery {
                domain: Some(d.into()),
                ..Default::default()
            };
            scan(&q)
                .suspects
                .iter()
                .map(|s| s.domain.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(domain("tun.example"), ["tun.example"]);
        assert_eq!(domain("Tun.Example."), ["tun.example"]);
        // The API's rule: a filter selects its name and below, never a name above it.
        assert!(domain("c3.tun.example").is_empty());
        assert_eq!(
            domain("example"),
            [
                "tun.example",
                "drip.example",
                "slow.example",
                "other.example"
            ]
        );
        assert!(domain("un.example").is_empty());
        let min = AlertsQuery {
            min_score: Some(80),
            ..Default::default()
        };
        let found = scan(&min).suspects;
        assert_eq!(
            keys(&found),
            [
                ("127.0.0.62".to_string(), "exfil.test", 1),
                ("127.0.0.61".to_string(), "tun.example", 1),
            ]
        );
        let group = AlertsQuery {
            group: Some("AGENTS".into()),
            limit: 1,
            ..Default::default()
        };
        assert_eq!(
            keys(&scan(&group).suspects),
            [("127.0.0.62".to_string(), "exfil.test", 2)]
        );
        let combined = AlertsQuery {
            since: Some(Duration::from_secs(3600)),
            client: Some(ip("127.0.0.61")),
            min_score: Some(70),
            ..Default::default()
        };
        assert_eq!(
            keys(&scan(&combined).suspects),
            [("127.0.0.61".to_string(), "tun.example", 2)]
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86_400)
        );
        assert_eq!(parse_duration(" 1h ").unwrap(), Duration::from_secs(3600));
        let err = parse_duration("soon").unwrap_err();
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load_alerts(
            &[PathBuf::from("/nonexistent/events.jsonl")],
            &AlertsQuery::default(),
            now(),
        )
        .unwrap_err();
        assert!(matches!(err, AnalystError::Read { .. }), "{err}");
    }
}
