//! Analyst tools over the event log: who looks like a tunnel, and what is happening right now.
//!
//! The CLI's `alerts` and `tail` subcommands are thin wrappers over this module, so everything
//! here works on plain files, returns values or writes to a caller's writer, and is tested without
//! a running server.
//!
//! - [`event_files`] finds a log and its rotated predecessors, oldest first.
//! - [`load_alerts`] reads them, keeps the alerts an [`AlertsQuery`] asks for, folds them into one
//!   [`Suspect`] per (client, domain) and joins the containment events to say who is contained
//!   now; [`render_table`] and [`render_json`] present the result.
//! - [`tail`] prints the log as it grows, across rotations, as JSON lines or one readable line
//!   per event ([`TailFormat::Pretty`]).
//!
//! Reading is forgiving, because an analyst must always be able to read what is there: a line
//! that is not JSON (a torn write, a stray edit) is skipped and counted, unknown fields (`seq` and
//! `prev` of the hash chain) and unknown kinds are ignored.
//!
//! Bounds: the analysis holds one [`Suspect`] per distinct (client, domain) alerted on and one
//! containment record per contained (client, domain), never the lines themselves. `tail` holds at
//! most one partial line of [`MAX_LINE_BYTES`] (a longer one is dropped up to its newline), reads
//! at most [`READ_CHUNK_BYTES`] per step, and keeps at most `last` lines while catching up.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::{self, File, Metadata};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::events::{AlertEvent, ContainmentEvent, PolicyEvent, QueryEvent, WindowCounts};

/// Distinct samples kept per suspect.
const MAX_SAMPLES: usize = 3;
/// Longest sample shown, in characters (longer ones end in `…`).
const SAMPLE_CHARS: usize = 60;
/// Breakdown terms shown in the table's TOP FEATURES column.
const TOP_FEATURES: usize = 3;

/// Longest line `tail` will hold while waiting for its newline. Event lines are a few hundred
/// bytes; anything longer is not an event, and holding it unboundedly would let a runaway writer
/// exhaust memory. Such a line is dropped up to its newline.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Most bytes `tail` reads from the file in one step, so catching up on a large file streams
/// instead of loading it whole.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

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

/// The rotated set for the log at `current`, oldest first: `current.N` … `current.1`, then
/// `current`, only those that exist. Rotated files are found by listing the directory, so a gap
/// (a removed file, a changed `keep`) does not hide older ones, and `.10` sorts before `.9`.
#[must_use]
pub fn event_files(current: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    if let (Some(dir), Some(base)) = (current.parent(), current.file_name()) {
        let listing = if dir.as_os_str().is_empty() {
            fs::read_dir(".")
        } else {
            fs::read_dir(dir)
        };
        let prefix = format!("{}.", base.to_string_lossy());
        for entry in listing.into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|name| name.strip_prefix(&prefix))
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = current.with_file_name(&name);
            if path.is_file() {
                rotated.push((n, path));
            }
        }
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if current.is_file() {
        files.push(current.to_path_buf());
    }
    files
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
    /// Only this domain, compared on label boundaries in both directions: `example` matches
    /// alerts on `tun.example`, and `a.tun.example` matches alerts on `tun.example` (alerts name
    /// the registrable domain, so an analyst can paste any query name).
    pub domain: Option<String>,
    /// Only alerts scoring at least this. Applied per alert, so a suspect's counts cover only
    /// the alerts that reached it.
    pub min_score: Option<u8>,
    /// Most suspects returned, highest first; 0 returns all.
    pub limit: usize,
}

impl AlertsQuery {
    fn matches(
        &self,
        alert: &AlertEvent,
        ts: DateTime<Utc>,
        cutoff: Option<DateTime<Utc>>,
    ) -> bool {
        cutoff.is_none_or(|c| ts >= c)
            && self.client.is_none_or(|c| c == alert.client)
            && self
                .group
                .as_deref()
                .is_none_or(|g| g.eq_ignore_ascii_case(&alert.group))
            && self
                .domain
                .as_deref()
                .is_none_or(|d| domains_related(d, &alert.domain))
            && self.min_score.is_none_or(|m| alert.score >= m)
    }
}

/// Whether `filter` and `domain` are the same name or one is a subdomain of the other.
fn domains_related(filter: &str, domain: &str) -> bool {
    let filter = filter.trim().trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let below = |child: &str, parent: &str| {
        child
            .strip_suffix(parent)
            .is_some_and(|head| head.ends_with('.'))
    };
    !filter.is_empty() && (filter == domain || below(&domain, &filter) || below(&filter, &domain))
}

/// Whether a suspect is contained, judged from the `containment_*` events read and `now`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Containment {
    /// No containment of this client (whole) or this client and domain was read.
    None,
    /// Contained now.
    Active {
        /// `throttle`, `sinkhole` or `quarantine`.
        action: String,
        /// True for a quarantine of the whole client, false for this domain only.
        whole_client: bool,
        /// When it started.
        #[serde(serialize_with = "ser_time")]
        since: DateTime<Utc>,
        /// When it expires, if it has an expiry.
        #[serde(serialize_with = "ser_opt_time")]
        until: Option<DateTime<Utc>>,
    },
    /// Was contained, no longer is.
    Ended {
        /// `throttle`, `sinkhole` or `quarantine`.
        action: String,
        /// When it ended.
        #[serde(serialize_with = "ser_time")]
        at: DateTime<Utc>,
        /// The reason of the `containment_ended` event (`expired`, `released by alice: …`), or
        /// `expired` when its `until` passed without one being read.
        reason: String,
    },
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
    let mut scan = AlertScan::default();
    let mut suspects: HashMap<(IpAddr, Option<String>, String), Suspect> = HashMap::new();
    let mut containments = ContainmentLog::default();
    for path in files {
        let read_error = |source| AnalystError::Read {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(read_error)?);
        let mut line = Vec::new();
        let mut line_no = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(read_error)? == 0 {
                break;
            }
            line_no += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            scan.lines += 1;
            match read_event(&line) {
                Ok(LogLine::Alert(ts, alert)) => {
                    if q.matches(&alert, ts, cutoff) {
                        scan.alerts_matched += 1;
                        let key = (
                            alert.client,
                            alert.agent.clone(),
                            alert.domain.to_ascii_lowercase(),
                        );
                        match suspects.entry(key) {
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

fn parse_time(ts: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(ts)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad timestamp {ts:?}: {e}"))
}

/// The last containment event seen per (client, domain), `None` domain for a whole-client
/// quarantine.
#[derive(Default)]
struct ContainmentLog {
    by_target: HashMap<(IpAddr, Option<String>), Containment>,
}

impl ContainmentLog {
    fn started(&mut self, ts: DateTime<Utc>, c: ContainmentEvent) {
        let whole_client = c.domain.is_none();
        let key = (c.client, c.domain.map(|d| d.to_ascii_lowercase()));
        // A stronger level on the same target replaces the weaker one without an end event
        // (the containment table keeps one entry per target), so the latest start wins.
        self.by_target.insert(
            key,
            Containment::Active {
                action: c.action,
                whole_client,
                since: ts,
                until: c.until.as_deref().and_then(|u| parse_time(u).ok()),
            },
        );
    }

    fn ended(&mut self, ts: DateTime<Utc>, c: ContainmentEvent) {
        let key = (c.client, c.domain.map(|d| d.to_ascii_lowercase()));
        if let Some(Containment::Active { action, .. }) = self.by_target.get(&key)
            && *action != c.action
        {
            // The end of a level that was since replaced says nothing about the current one.
            return;
        }
        // Also recorded without a start: that was in a file rotated away, and the end still
        // tells the analyst something.
        self.by_target.insert(
            key,
            Containment::Ended {
                action: c.action,
                at: ts,
                reason: c.reason,
            },
        );
    }

    fn resolve(&self, key: &(IpAddr, Option<String>), now: DateTime<Utc>) -> Containment {
        match self.by_target.get(key) {
            Some(Containment::Active {
                action,
                until: Some(until),
                ..
            }) if *until <= now => Containment::Ended {
                action: action.clone(),
                at: *until,
                reason: "expired".to_string(),
            },
            Some(state) => state.clone(),
            None => Containment::None,
        }
    }

    /// The client's state for `domain`: an active quarantine of the whole client first, then an
    /// active containment of the domain, then whichever ended last.
    fn state(&self, client: IpAddr, domain: &str, now: DateTime<Utc>) -> Containment {
        let whole = self.resolve(&(client, None), now);
        let scoped = self.resolve(&(client, Some(domain.to_string())), now);
        match (whole, scoped) {
            (active @ Containment::Active { .. }, _) | (_, active @ Containment::Active { .. }) => {
                active
            }
            (a @ Containment::Ended { at: a_at, .. }, b @ Containment::Ended { at: b_at, .. }) => {
                if a_at > b_at {
                    a
                } else {
                    b
                }
            }
            (Containment::None, other) | (other, Containment::None) => other,
        }
    }
}

/// A fixed-width table for a terminal: one row per suspect with its samples indented below, and
/// a summary line. Times are UTC.
#[must_use]
pub fn render_table(suspects: &[Suspect]) -> String {
    const HEADERS: [&str; 9] = [
        "SCORE",
        "CLIENT",
        "GROUP",
        "DOMAIN",
        "ALERTS",
        "BYTES",
        "LAST SEEN",
        "ACTION/STATE",
        "TOP FEATURES",
    ];
    /// Columns aligned right (numbers).
    const RIGHT: [bool; 9] = [true, false, false, false, true, true, false, false, false];
    if suspects.is_empty() {
        return "no alerts matched\n".to_string();
    }
    let rows: Vec<[String; 9]> = suspects
        .iter()
        .map(|s| {
            [
                s.max_score.to_string(),
                // An agent is named by its identity; its address is where it was seen.
                s.agent.clone().unwrap_or_else(|| s.client.to_string()),
                s.group.clone(),
                s.domain.clone(),
                s.alerts.to_string(),
                human_bytes(s.bytes_estimate),
                s.last_seen.format("%m-%d %H:%M:%SZ").to_string(),
                action_state(s),
                top_features(&s.breakdown),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    let push_row = |table: &mut String, cells: &[&str]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths[i];
            if RIGHT[i] {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        table.push_str(line.trim_end());
        table.push('\n');
    };
    push_row(&mut table, &HEADERS);
    for (s, row) in suspects.iter().zip(&rows) {
        push_row(&mut table, &row.each_ref().map(String::as_str));
        if !s.samples.is_empty() {
            table.push_str("       samples: ");
            table.push_str(&s.samples.join("  "));
            table.push('\n');
        }
    }
    let alerts: u64 = suspects.iter().map(|s| s.alerts).sum();
    let contained = suspects
        .iter()
        .filter(|s| matches!(s.containment, Containment::Active { .. }))
        .count();
    let _ = writeln!(
        table,
        "{} suspect{}, {alerts} alert{}, {contained} contained now",
        suspects.len(),
        plural(suspects.len() as u64),
        plural(alerts),
    );
    table
}

/// The suspects as a pretty-printed JSON array, times in RFC 3339.
#[must_use]
pub fn render_json(suspects: &[Suspect]) -> String {
    // Cannot fail: every map key is a string and every value serialises.
    serde_json::to_string_pretty(suspects)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `alert,throttle; throttled until 19:55Z`, `…; released`, `…; expired`.
fn action_state(s: &Suspect) -> String {
    let mut cell = s.actions.join(",");
    if s.monitor_only {
        cell.push_str(" (monitor)");
    }
    let state = match &s.containment {
        Containment::None => return cell,
        Containment::Active {
            action,
            whole_client,
            until,
            ..
        } => {
            let mut state = past_tense(action);
            if *whole_client {
                state.push_str(" (whole client)");
            }
            match until {
                Some(until) if until.date_naive() == s.last_seen.date_naive() => {
                    let _ = write!(state, " until {}", until.format("%H:%MZ"));
                }
                Some(until) => {
                    let _ = write!(state, " until {}", until.format("%m-%d %H:%MZ"));
                }
                None => {}
            }
            state
        }
        Containment::Ended { reason, .. } => {
            // `released by alice: false positive` → `released by alice`: the table is for
            // scanning, the JSON has the full reason.
            reason
                .split(':')
                .next()
                .unwrap_or(reason)
                .trim()
                .to_string()
        }
    };
    format!("{cell}; {state}")
}

fn past_tense(action: &str) -> String {
    match action {
        "throttle" => "throttled".to_string(),
        "sinkhole" => "sinkholed".to_string(),
        "quarantine" => "quarantined".to_string(),
        other => other.to_string(),
    }
}

/// The top breakdown terms by points, e.g. `pattern=30 uniq=20 bytes=12`. Only the window terms
/// (which add up to the score) count; `query.*` terms explain the single query's score.
fn top_features(breakdown: &BTreeMap<String, f64>) -> String {
    let mut terms: Vec<(&str, f64)> = breakdown
        .iter()
        .filter(|(name, points)| !name.starts_with("query.") && **points > 0.0)
        .map(|(name, points)| (name.as_str(), *points))
        .collect();
    terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    terms
        .iter()
        .take(TOP_FEATURES)
        .map(|(name, points)| {
            let short = match *name {
                "unique_subdomains" => "uniq",
                "payload_bytes" => "bytes",
                "nxdomain" => "nx",
                "client_spike" => "spike",
                "fleet_wide" => "fleet",
                other => other,
            };
            format!("{short}={points:.0}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1081` → `1.1K`, small counts exact.
fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // one decimal shown
    let f = n as f64;
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}K", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", f / 1e6),
        _ => format!("{:.1}G", f / 1e9),
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

#[allow(clippy::ref_option)] // serde's serialize_with hands over `&Option<T>`
fn ser_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

/// How [`tail`] prints each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TailFormat {
    /// The line as written: one JSON object, for `jq` and log shippers.
    #[default]
    Json,
    /// One readable line per event, e.g.
    /// `19:41:40.907 block   127.0.0.1 agents  pastebin.com A  not allowlisted` or
    /// `19:41:41.002 ALERT score=74 127.0.0.61 tunnel tun.example action=throttle`.
    /// Times are the UTC time of day from `ts`; a line that is not an event is printed as is.
    Pretty,
}

/// What [`tail`] prints and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailOptions {
    /// Keep printing new lines as they are written, across rotations, until `stop`.
    pub follow: bool,
    /// Of the lines already in the file, print only the last this many (after the `kinds`
    /// filter); `None` prints them all.
    pub last: Option<usize>,
    /// Only events whose `kind` is one of these; `None` prints every line.
    pub kinds: Option<Vec<String>>,
    /// JSON as written, or one readable line.
    pub format: TailFormat,
    /// How often to look for new lines when following.
    pub poll_every: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            follow: false,
            last: None,
            kinds: None,
            format: TailFormat::Json,
            poll_every: Duration::from_millis(200),
        }
    }
}

/// Print the event log at `path` to `out`: the lines already there (or the last `opts.last`),
/// then, with `opts.follow`, each new complete line until `stop` completes.
///
/// Following polls every `opts.poll_every`. A line is printed only once its newline has been
/// written, so a write in progress is never shown torn. Rotation is followed: when `path` names
/// a different file (the sink renamed it to `.1` and started a new one) the old file is read to
/// its end and the new one from its start; when the file shrinks (truncated) it is read again
/// from the start. File reads run on tokio's blocking pool.
///
/// # Errors
/// When `path` cannot be opened at the start or read later, or writing to `out` fails. A missing
/// file during rotation is not an error: the new one is waited for.
pub async fn tail<W, S>(path: &Path, opts: &TailOptions, mut out: W, stop: S) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    S: Future,
{
    let (path, start_opts) = (path.to_path_buf(), opts.clone());
    let mut follower = tokio::task::spawn_blocking(move || LogFollower::open(path, start_opts))
        .await
        .map_err(io::Error::other)??;
    let mut stop = std::pin::pin!(stop);
    loop {
        loop {
            let (back, stepped) = tokio::task::spawn_blocking(move || {
                let mut lines = Vec::new();
                let more = follower.step(&mut lines);
                (follower, more.map(|more| (more, lines)))
            })
            .await
            .map_err(io::Error::other)?;
            follower = back;
            let (more, lines) = stepped?;
            for line in lines {
                out.write_all(line.as_bytes()).await?;
                out.write_all(b"\n").await?;
            }
            if !more {
                break;
            }
        }
        out.flush().await?;
        if !opts.follow {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            () = tokio::time::sleep(opts.poll_every) => {}
        }
    }
}

/// What identifies a file independently of its name, so a replaced file is noticed.
#[cfg(unix)]
fn file_identity(meta: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

/// Without inode numbers only truncation is detected.
#[cfg(not(unix))]
fn file_identity(_meta: &Metadata) -> Option<(u64, u64)> {
    None
}

/// The synchronous core of [`tail`]: reads whatever is new in the log, across rotations, and
/// turns complete lines into output lines.
#[derive(Debug)]
struct LogFollower {
    /// The name being followed; the file behind it changes on rotation.
    path: PathBuf,
    /// The file being read, `None` between a rotation and the new file appearing.
    file: Option<File>,
    /// Identity of `file`, compared with what `path` names now to notice rotation.
    identity: Option<(u64, u64)>,
    /// Bytes of `file` read so far, compared with its size to notice truncation.
    offset: u64,
    /// The bytes of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// Dropping the rest of a line longer than [`MAX_LINE_BYTES`] up to its newline.
    overlong: bool,
    /// While catching up with `last`: the last lines seen, printed on reaching the end.
    backlog: Option<(VecDeque<String>, usize)>,
    /// Reused read buffer.
    buf: Vec<u8>,
    /// `kinds` and `format`.
    opts: TailOptions,
}

impl LogFollower {
    fn open(path: PathBuf, opts: TailOptions) -> io::Result<Self> {
        let file = File::open(&path)?;
        let identity = file_identity(&file.metadata()?);
        Ok(Self {
            path,
            file: Some(file),
            identity,
            offset: 0,
            partial: Vec::new(),
            overlong: false,
            backlog: opts.last.map(|n| (VecDeque::with_capacity(n.min(1024)), n)),
            buf: vec![0; READ_CHUNK_BYTES],
            opts,
        })
    }

    /// Read one chunk, or check for rotation at the end of the file. Returns whether there may
    /// be more to read right away.
    fn step(&mut self, out: &mut Vec<String>) -> io::Result<bool> {
        let Some(file) = self.file.as_mut() else {
            let reopened = self.reopen()?;
            if !reopened {
                self.flush_backlog(out);
            }
            return Ok(reopened);
        };
        let n = read_some(file, &mut self.buf)?;
        if n > 0 {
            self.take(n, out);
            return Ok(true);
        }
        match fs::metadata(&self.path) {
            Ok(meta) if file_identity(&meta) != self.identity => {
                // Rotated: the writer is done with the old file (it never writes to a renamed
                // one), but it may have finished a line there since our last read, so read it to
                // its end before moving on.
                while let Some(file) = self.file.as_mut() {
                    let n = read_some(file, &mut self.buf)?;
                    if n == 0 {
                        break;
                    }
                    self.take(n, out);
                }
                // A partial line left in the old file will never be completed: the sink never
                // splits a line across files.
                self.file = None;
                return self.reopen();
            }
            Ok(meta) if meta.len() < self.offset => {
                self.file = None;
                return self.reopen();
            }
            // Renamed away and the new file not created yet: keep the old one until it is.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.flush_backlog(out);
        Ok(false)
    }

    /// Open whatever `path` names now, from its start. `false` when there is nothing there yet.
    fn reopen(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(file) => {
                self.identity = file_identity(&file.metadata()?);
                self.file = Some(file);
                self.offset = 0;
                self.partial.clear();
                self.overlong = false;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Split the first `n` bytes of the buffer into lines, holding back an unfinished one.
    fn take(&mut self, n: usize, out: &mut Vec<String>) {
        self.offset += n as u64;
        // Taken out for the loop, which needs `self` mutably; put back below.
        let buf = std::mem::take(&mut self.buf);
        let mut rest = &buf[..n];
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            if self.overlong {
                self.overlong = false;
            } else if self.partial.len() + pos > MAX_LINE_BYTES {
                self.drop_overlong();
                self.overlong = false;
            } else {
                self.partial.extend_from_slice(&rest[..pos]);
                let line = String::from_utf8_lossy(&self.partial);
                let line = line.trim_end_matches('\r');
                if !line.trim().is_empty()
                    && let Some(shown) = render_tail_line(line, &self.opts)
                {
                    match &mut self.backlog {
                        Some((lines, keep)) => {
                            lines.push_back(shown);
                            if lines.len() > *keep {
                                lines.pop_front();
                            }
                        }
                        None => out.push(shown),
                    }
                }
            }
            self.partial.clear();
            rest = &rest[pos + 1..];
        }
        if !self.overlong {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_LINE_BYTES {
                self.drop_overlong();
            }
        }
        self.buf = buf;
    }

    /// Forget the line being gathered and skip to its newline.
    fn drop_overlong(&mut self) {
        tracing::warn!(
            path = %self.path.display(),
            "dropping an event-log line longer than {MAX_LINE_BYTES} bytes"
        );
        self.partial.clear();
        self.overlong = true;
    }

    fn flush_backlog(&mut self, out: &mut Vec<String>) {
        if let Some((lines, _)) = self.backlog.take() {
            out.extend(lines);
        }
    }
}

fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Only the `kind` of a line, for the filter.
#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

/// The line to print for `line`, or `None` when the kinds filter excludes it.
fn render_tail_line(line: &str, opts: &TailOptions) -> Option<String> {
    if let Some(kinds) = &opts.kinds {
        let kind = serde_json::from_str::<KindOnly>(line).ok()?.kind;
        if !kinds.iter().any(|k| k.eq_ignore_ascii_case(&kind)) {
            return None;
        }
    }
    Some(match opts.format {
        TailFormat::Json => line.to_string(),
        TailFormat::Pretty => pretty_line(line),
    })
}

/// One readable line for an event; the line itself when it is not one.
fn pretty_line(line: &str) -> String {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let time = fields
        .get("ts")
        .and_then(Value::as_str)
        .map_or_else(|| "-".to_string(), short_time);
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or("?");
    let version = fields.get("policy_version").and_then(Value::as_u64);
    let value = Value::Object(fields.clone());
    let body = match kind {
        "query" => QueryEvent::deserialize(&value).ok().map(|q| {
            format!(
                "{:<7} {} {:<7} {} {:<2} {}",
                q.verdict,
                q.client,
                q.group.as_deref().unwrap_or("-"),
                q.qname,
                q.qtype,
                q.reason
            )
        }),
        "alert" => AlertEvent::deserialize(&value).ok().map(|a| {
            let mut s = format!(
                "ALERT score={} {} {} {} action={}",
                a.score, a.client, a.group, a.domain, a.action
            );
            if a.monitor_only {
                s.push_str(" monitor-only");
            }
            if let Some(e) = a.exception {
                let _ = write!(s, " exception={e}");
            }
            s
        }),
        "containment_started" | "containment_ended" => {
            ContainmentEvent::deserialize(&value).ok().map(|c| {
                let started = kind == "containment_started";
                let mut s = format!(
                    "{} {} {} {} {}",
                    if started { "CONTAIN" } else { "RELEASE" },
                    c.action,
                    c.client,
                    c.group,
                    c.domain.as_deref().unwrap_or("*"),
                );
                if let Some(until) = &c.until {
                    let _ = write!(s, " until {}", short_time(until));
                }
                let _ = write!(s, ": {}", c.reason);
                s
            })
        }
        "policy" => PolicyEvent::deserialize(&value).ok().map(|p| {
            let mut s = format!("POLICY {}", p.action);
            if let Some(v) = version {
                let _ = write!(s, " v{v}");
            }
            if let Some(hash) = &p.hash {
                let _ = write!(s, " hash={}", hash.get(..12).unwrap_or(hash));
            }
            if let Some(actor) = &p.actor {
                let _ = write!(s, " by {actor}");
            }
            if let Some(message) = &p.message {
                let _ = write!(s, ": {message}");
            }
            s
        }),
        _ => None,
    };
    let body = body.unwrap_or_else(|| {
        // A kind this version does not know (or a malformed one): its fields as key=value.
        let mut s = kind.to_uppercase();
        for (key, v) in &fields {
            if matches!(
                key.as_str(),
                "ts" | "kind" | "policy_version" | "seq" | "prev"
            ) {
                continue;
            }
            match v {
                Value::String(text) => {
                    let _ = write!(s, " {key}={text}");
                }
                other => {
                    let _ = write!(s, " {key}={other}");
                }
            }
        }
        s
    });
    format!("{time} {body}")
}

/// `2026-11-25T19:41:40.907123Z` → `19:41:40.907` (UTC); the input when it is not a time.
fn short_time(ts: &str) -> String {
    parse_time(ts).map_or_else(|_| ts.to_string(), |t| t.format("%H:%M:%S%.3f").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analyst")
    }

    fn now() -> DateTime<Utc> {
        parse_time("2026-11-25T20:00:00Z").unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn scan(q: &AlertsQuery) -> AlertScan {
        scan_alerts(&event_files(&fixtures().join("events.jsonl")), q, now()).unwrap()
    }

    fn keys(suspects: &[Suspect]) -> Vec<(String, &str, u64)> {
        suspects
            .iter()
            .map(|s| (s.client.to_string(), s.domain.as_str(), s.alerts))
            .collect()
    }

    #[test]
    fn event_files_lists_rotated_oldest_first_and_only_existing() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("events.jsonl");
        assert!(event_files(&current).is_empty());
        for name in [
            "events.jsonl.1",
            "events.jsonl.2",
            "events.jsonl.10",
            "events.jsonl.x",
        ] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        fs::write(dir.path().join("other.jsonl.3"), "").unwrap();
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(event_files(&current)),
            ["events.jsonl.10", "events.jsonl.2", "events.jsonl.1"]
        );
        fs::write(&current, "").unwrap();
        assert_eq!(
            names(event_files(&current)),
            [
                "events.jsonl.10",
                "events.jsonl.2",
                "events.jsonl.1",
                "events.jsonl"
            ]
        );
    }

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
        assert_eq!(domain("C3.Tun.Example."), ["tun.example"]);
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

    #[test]
    fn table_has_a_row_per_suspect_samples_and_a_summary() {
        let suspects = scan(&AlertsQuery::default()).suspects;
        let table = render_table(&suspects);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("SCORE  CLIENT"), "{table}");
        for header in [
            "GROUP",
            "DOMAIN",
            "ALERTS",
            "BYTES",
            "LAST SEEN",
            "ACTION/STATE",
            "TOP FEATURES",
        ] {
            assert!(lines[0].contains(header), "{table}");
        }
        let tun = lines
            .iter()
            .find(|l| l.contains("tun.example"))
            .unwrap_or_else(|| panic!("{table}"));
        for cell in [
            "   88  127.0.0.61",
            "tunnel",
            "2.9K",
            "11-25 19:50:00Z",
            "alert,throttle,sinkhole; sinkholed until 20:20Z",
            "pattern=41 uniq=20 bytes=18",
        ] {
            assert!(tun.contains(cell), "{cell:?} missing from {tun:?}");
        }
        let exfil = lines.iter().find(|l| l.contains("exfil.test")).unwrap();
        assert!(
            exfil.contains("none,quarantine; released by alice"),
            "{exfil}"
        );
        let drip = lines.iter().find(|l| l.contains("drip.example")).unwrap();
        assert!(drip.contains("throttle; expired"), "{drip}");
        // Columns line up: every row's DOMAIN starts where the header's does.
        let col = lines[0].find("DOMAIN").unwrap();
        assert_eq!(tun.find("tun.example"), Some(col));
        let tun_at = lines
            .iter()
            .position(|l| l.contains("tun.example"))
            .unwrap();
        assert!(
            lines[tun_at + 1]
                .trim_start()
                .starts_with("samples: c3.tun.example  q0f3a9"),
            "{table}"
        );
        assert_eq!(
            *lines.last().unwrap(),
            "5 suspects, 8 alerts, 1 contained now"
        );
        assert_eq!(render_table(&[]), "no alerts matched\n");
    }

    #[test]
    fn json_round_trips_through_serde_json() {
        let suspects = scan(&AlertsQuery::default()).suspects;
        let v: Value = serde_json::from_str(&render_json(&suspects)).unwrap();
        let tun = &v[1];
        assert_eq!(tun["client"], "127.0.0.61");
        assert_eq!(tun["max_score"], 88);
        assert_eq!(tun["last_seen"], "2026-11-25T19:50:00.000000Z");
        assert_eq!(tun["containment"]["state"], "active");
        assert_eq!(tun["containment"]["until"], "2026-11-25T20:20:00.000000Z");
        assert_eq!(v[4]["containment"]["state"], "none");
    }

    #[test]
    fn pretty_lines_read_like_the_examples() {
        let query = r#"{"ts":"2026-11-25T19:41:40.907123Z","policy_version":3,"kind":"query","client":"127.0.0.1","group":"agents","qname":"pastebin.com","qtype":"A","protocol":"udp","verdict":"block","reason":"not allowlisted","rcode":"NXDOMAIN","answers":0,"latency_us":40,"cache_hit":false,"upstream":null,"seq":7,"prev":"ab"}"#;
        assert_eq!(
            pretty_line(query),
            "19:41:40.907 block   127.0.0.1 agents  pastebin.com A  not allowlisted"
        );
        let alert = fs::read_to_string(fixtures().join("events.jsonl"))
            .unwrap()
            .lines()
            .find(|l| l.contains("\"kind\":\"alert\"") && l.contains("\"score\":88"))
            .unwrap()
            .to_string();
        assert_eq!(
            pretty_line(&alert),
            "19:50:00.000 ALERT score=88 127.0.0.61 tunnel tun.example action=sinkhole"
        );
        let admin = r#"{"ts":"2026-11-25T19:00:00Z","policy_version":3,"kind":"admin","actor":"alice","op":"release","count":2}"#;
        assert_eq!(
            pretty_line(admin),
            "19:00:00.000 ADMIN actor=alice count=2 op=release"
        );
        assert_eq!(pretty_line("not json"), "not json");
    }

    const Q: &str = r#"{"ts":"2026-11-25T19:00:00Z","policy_version":1,"kind":"query","n":1}"#;
    const A: &str = r#"{"ts":"2026-11-25T19:00:01Z","policy_version":1,"kind":"alert","n":2}"#;
    const P: &str = r#"{"ts":"2026-11-25T19:00:02Z","policy_version":1,"kind":"policy","n":3}"#;

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Step until the follower has nothing more to read right now.
    fn drain(f: &mut LogFollower) -> Vec<String> {
        let mut out = Vec::new();
        while f.step(&mut out).unwrap() {}
        out
    }

    fn follower(path: &Path, opts: TailOptions) -> LogFollower {
        LogFollower::open(path.to_path_buf(), opts).unwrap()
    }

    #[test]
    fn follower_holds_a_torn_line_until_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n{A}\n"));
        let mut f = follower(&path, TailOptions::default());
        assert_eq!(drain(&mut f), [Q, A]);
        assert!(drain(&mut f).is_empty());
        let (head, rest) = P.split_at(20);
        append(&path, head);
        assert!(drain(&mut f).is_empty(), "a torn line is not printed");
        append(&path, rest);
        assert!(drain(&mut f).is_empty());
        append(&path, "\n");
        assert_eq!(drain(&mut f), [P]);
    }

    #[test]
    fn follower_continues_into_the_new_file_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n"));
        let mut f = follower(&path, TailOptions::default());
        assert_eq!(drain(&mut f), [Q]);
        // A last line lands in the old file just before the sink renames it.
        append(&path, &format!("{A}\n"));
        fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        assert_eq!(drain(&mut f), [A], "the old file is read to its end");
        // The new file does not exist yet: nothing, no error.
        assert!(drain(&mut f).is_empty());
        append(&path, &format!("{P}\n"));
        assert_eq!(drain(&mut f), [P]);
        // Truncated in place: read again from the start.
        fs::write(&path, format!("{Q}\n")).unwrap();
        assert_eq!(drain(&mut f), [Q]);
    }

    #[test]
    fn follower_filters_kinds_and_keeps_only_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n{A}\nnot json\n{P}\n{A}\n"));
        let alerts_and_policy = TailOptions {
            kinds: Some(vec!["alert".into(), "policy".into()]),
            ..Default::default()
        };
        assert_eq!(
            drain(&mut follower(&path, alerts_and_policy.clone())),
            [A, P, A]
        );
        let last_two = TailOptions {
            last: Some(2),
            ..alerts_and_policy
        };
        let mut f = follower(&path, last_two);
        assert_eq!(drain(&mut f), [P, A]);
        // `last` applies to what was there; new lines all print.
        append(&path, &format!("{A}\n{Q}\n{A}\n"));
        assert_eq!(drain(&mut f), [A, A]);
        let everything = drain(&mut follower(&path, TailOptions::default()));
        assert_eq!(everything.len(), 8);
        assert!(everything.iter().any(|l| l == "not json"));
    }

    #[test]
    fn follower_drops_an_overlong_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        // Just over the bound when its newline arrives, and far over it.
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let longer = "y".repeat(3 * MAX_LINE_BYTES);
        append(&path, &format!("{Q}\n{long}\n{A}\n{longer}\n{P}\n"));
        let lines = drain(&mut follower(&path, TailOptions::default()));
        let lengths: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lines.len(), 3, "line lengths {lengths:?}");
        assert_eq!(lines, [Q, A, P]);
    }

    /// Read from `rx` until `want` complete lines have arrived (or time out).
    async fn read_lines(rx: &mut tokio::io::DuplexStream, want: usize) -> Vec<String> {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while text.lines().count() < want {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, rx.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("timed out with {text:?}"))
                .unwrap();
            assert!(n > 0, "tail ended early: {text:?}");
            text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        text.lines().map(str::to_string).collect()
    }

    #[tokio::test]
    async fn tail_prints_existing_lines_and_stops_without_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n{A}\n"));
        let mut out = Vec::new();
        tail(
            &path,
            &TailOptions::default(),
            &mut out,
            std::future::pending::<()>(),
        )
        .await
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{Q}\n{A}\n"));
        let missing = tail(
            &dir.path().join("nope"),
            &TailOptions::default(),
            Vec::new(),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn tail_follows_appends_and_rotation_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n"));
        let (tx, mut rx) = tokio::io::duplex(1 << 16);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = TailOptions {
            follow: true,
            kinds: Some(vec!["query".into(), "alert".into()]),
            format: TailFormat::Pretty,
            poll_every: Duration::from_millis(10),
            ..Default::default()
        };
        let task = tokio::spawn({
            let path = path.clone();
            async move { tail(&path, &opts, tx, stop_rx).await }
        });
        assert_eq!(read_lines(&mut rx, 1).await.len(), 1);
        let alert = r#"{"ts":"2026-11-25T19:41:41.002Z","policy_version":3,"kind":"alert","client":"127.0.0.61","group":"tunnel","domain":"tun.example","score":74,"breakdown":{},"window":{"window_secs":900,"queries":11,"unique_subdomains":11,"payload_bytes":1081,"nxdomain":11},"samples":[],"bytes_estimate":1081,"action":"throttle","monitor_only":false,"exception":null}"#;
        append(&path, &format!("{P}\n{alert}\n"));
        assert_eq!(
            read_lines(&mut rx, 1).await,
            ["19:41:41.002 ALERT score=74 127.0.0.61 tunnel tun.example action=throttle"]
        );
        fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        append(&path, &format!("{alert}\n"));
        assert_eq!(read_lines(&mut rx, 1).await.len(), 1);
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
