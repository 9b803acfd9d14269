//! Security and query events: what the security team reads.
//!
//! Every block, refusal, alert and containment becomes one [`Event`], serialised as one JSON
//! object per line. Events carry who (client, group), what (name, type), why (reason, score
//! breakdown) and which policy version decided. The query path hands events to an
//! `sink::EventSender`, which never blocks: the queues are bounded, security events (everything
//! but queries) have their own queue that query logging cannot fill, and a full queue drops the
//! event and counts it in `dnsward_events_dropped_total`. When the log cannot be written (a full
//! disk), unwritten security events wait in a bounded backlog and a [`LogGapEvent`] records
//! what was lost once writing works again (see [`sink`]).
//!
//! - [`config`]: the `[events]` section.
//! - [`aggregate`]: folding of repeated identical query events into one line with a count.
//! - [`sink`]: the bounded queue and the file/stdout writer.
//! - [`rotation`]: size-based rotation of the log file and its naming rule; following a log
//!   file deleted or moved away.
//! - [`reader`]: the one reader of the log's files (which files, their lines), used by
//!   `audit verify`, `alerts`, `events tail` and the chain's resume.

pub mod aggregate;
pub mod config;
pub mod notify;
pub mod reader;
pub mod rotation;
pub mod sampling;
pub mod sink;
pub mod syslog;
pub mod webhook;
pub mod witness;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One record of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 UTC timestamp with microseconds, e.g. `2026-11-25T19:40:01.123456Z`.
    pub ts: String,
    /// The policy version that was active when this was decided (0 before any is loaded).
    pub policy_version: u64,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// An event stamped with the current wall-clock time.
    #[must_use]
    pub fn now(policy_version: u64, body: EventBody) -> Self {
        Self {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            policy_version,
            body,
        }
    }

    /// Whether this is security evidence (alert, containment, policy, admin, …) rather than a
    /// query record: such events go through the sink's priority queue.
    #[must_use]
    pub fn is_security(&self) -> bool {
        !matches!(self.body, EventBody::Query(_))
    }

    /// The `kind` tag as it appears in JSON.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match &self.body {
            EventBody::Query(_) => "query",
            EventBody::Alert(_) => "alert",
            EventBody::ContainmentStarted(_) => "containment_started",
            EventBody::ContainmentEnded(_) => "containment_ended",
            EventBody::Policy(_) => "policy",
            EventBody::Admin(_) => "admin",
            EventBody::EgressDenied(_) => "egress_denied",
            EventBody::AuthRefused(_) => "auth_refused",
            EventBody::LogGap(_) => "log_gap",
        }
    }
}

/// The kinds of event, tagged by `kind` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// A query and the verdict given to it.
    Query(QueryEvent),
    /// The tunnel detector scored a client/domain above the alert threshold.
    Alert(AlertEvent),
    /// A containment (throttle, sinkhole, quarantine) started.
    ContainmentStarted(ContainmentEvent),
    /// A containment ended (expiry or operator release).
    ContainmentEnded(ContainmentEvent),
    /// A policy was loaded, reloaded, rolled back, or a reload was rejected.
    Policy(PolicyEvent),
    /// A request to the admin API (every one is recorded).
    Admin(AdminEvent),
    /// A connection attempt the egress ruleset dropped (read from its nflog group).
    EgressDenied(EgressDeniedEvent),
    /// An encrypted client was refused before any query: a bad client certificate at the TLS
    /// handshake, or a bad bearer token.
    AuthRefused(AuthRefusedEvent),
    /// The event log could not be written for a while: written by the writer itself, first
    /// thing once writing works again, to say what was lost and why (see [`sink`]).
    LogGap(LogGapEvent),
}

/// What an event log outage cost: the first record written after the log could not be
/// written for a while. Records that could not be written never took a place in the hash
/// chain, so the chain stays whole and this record, chained and sealed like any other, is the
/// authenticated account of the gap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogGapEvent {
    /// Security events (every kind but `query`) lost for good: more than the writer's
    /// in-memory backlog holds ([`sink::BACKLOG_EVENTS`]).
    pub security_lost: u64,
    /// Query events lost.
    pub query_lost: u64,
    /// Security events that were held in memory during the outage and are written after this
    /// record (with their own, earlier, `ts`).
    pub security_delayed: u64,
    /// Write attempts that failed.
    pub failed_writes: u64,
    /// The error of the first failed write, e.g. `No space left on device (os error 28)`.
    pub error: String,
    /// When the first write failed (RFC 3339 UTC); the record's `ts` is when writing worked
    /// again.
    pub since: String,
}

/// A connection attempt to an address dnsward did not resolve for the client's group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EgressDeniedEvent {
    /// Source address of the attempt.
    pub client: IpAddr,
    /// The group whose rule dropped it (from the log prefix).
    pub group: Option<String>,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port (TCP, UDP, SCTP).
    pub port: Option<u16>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or the protocol number.
    pub proto: String,
}

/// A query and what dnsward did with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryEvent {
    /// Source address of the query (the socket's, never a client claim).
    pub client: IpAddr,
    /// The verified agent identity (SPIFFE ID, DNS name or token subject), `null` when the
    /// client is known only by its address.
    #[serde(default)]
    pub agent: Option<String>,
    /// How the agent was authenticated: `none`, `mtls` or `token`.
    #[serde(default = "auth_none")]
    pub auth: String,
    /// The client group, or `null` for an unknown client.
    pub group: Option<String>,
    /// Query name, lower-case, without the trailing dot (`.` for the root).
    pub qname: String,
    /// Query type mnemonic, e.g. `A`, `TXT`, `TYPE65399`.
    pub qtype: String,
    /// `udp`, `tcp`, `dot` or `doh`.
    pub protocol: String,
    /// Stable verdict string: `allow`, `block`, `refuse`, `sinkhole`, `throttle`, `quarantine`, `servfail`, `formerr`.
    pub verdict: String,
    /// Why: the rule that matched, `not allowlisted`, `unknown client`, …
    pub reason: String,
    /// Response code sent, e.g. `NOERROR`, `NXDOMAIN`.
    pub rcode: String,
    /// Number of records in the answer section sent.
    pub answers: u16,
    /// Time from receipt to answer, in microseconds.
    pub latency_us: u64,
    /// Whether the answer came from the cache.
    pub cache_hit: bool,
    /// The upstream that answered, if any (`zone:NAME` for local zones).
    pub upstream: Option<String>,
    /// How many queries this line stands for: 1 (omitted) for one query; more for a line that
    /// folds identical queries (same client, name, type, verdict) answered within
    /// `[events] aggregate_interval` after a first one that has its own line (see
    /// [`aggregate`]).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Counts over the detector's window for one (client, registrable domain).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCounts {
    /// Window length in seconds.
    pub window_secs: u64,
    /// Queries in the window.
    pub queries: u64,
    /// Estimated distinct subdomains in the window.
    pub unique_subdomains: u64,
    /// Estimated query-name payload bytes (the part left of the registrable domain) in the window.
    pub payload_bytes: u64,
    /// NXDOMAIN answers in the window.
    pub nxdomain: u64,
}

/// A tunneling/exfiltration alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The client that sent the queries.
    pub client: IpAddr,
    /// The verified agent identity, when the client is an authenticated agent (the detector
    /// keys its windows on it).
    #[serde(default)]
    pub agent: Option<String>,
    /// Its group.
    pub group: String,
    /// The registrable domain (eTLD+1) the queries went to.
    pub domain: String,
    /// Combined score 0–100.
    pub score: u8,
    /// How much each feature contributed, in score points.
    pub breakdown: BTreeMap<String, f64>,
    /// Counts over the window.
    pub window: WindowCounts,
    /// A few sample query names, truncated.
    pub samples: Vec<String>,
    /// Estimated bytes carried out in query names so far.
    pub bytes_estimate: u64,
    /// The action taken: `alert`, `throttle`, `sinkhole`, `quarantine` (or `none` in monitor-only mode).
    pub action: String,
    /// Whether the group is in monitor-only mode (alert, never act).
    pub monitor_only: bool,
    /// The exception that lowered the score, if any.
    pub exception: Option<String>,
    /// The volume measurement behind the score: whose queries, which window, how many novel
    /// bytes and names against what budget. Absent in alerts written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeEvidence>,
}

/// What an alert's volume term measured (see `detect::volume`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeEvidence {
    /// Whose queries: `client_domain` (this client to this domain), `client` (this client
    /// across all domains) or `domain` (every client to this domain: alert only, never
    /// contains anyone).
    pub scope: String,
    /// The window that counted most: `short`, `window` or `long`.
    pub window: String,
    /// Its length in seconds.
    pub window_secs: u64,
    /// Estimated novel information sent in query names over it, bytes.
    pub novel_bytes: u64,
    /// Distinct novel names behind it (estimate).
    pub novel_names: u64,
    /// Answer bytes returned for carrier types (TXT, NULL, CNAME, MX, ...) over it.
    pub answer_bytes: u64,
    /// The budget those bytes were measured against (after the group's scale, the domain's
    /// prevalence and the appearance factor).
    pub budget_bytes: u64,
}

/// A containment starting or ending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainmentEvent {
    /// The contained client.
    pub client: IpAddr,
    /// The contained agent, when the containment is keyed on a verified identity.
    #[serde(default)]
    pub agent: Option<String>,
    /// Its group.
    pub group: String,
    /// The domain for domain-scoped containment, `null` for whole-client quarantine.
    pub domain: Option<String>,
    /// `throttle`, `sinkhole` or `quarantine`.
    pub action: String,
    /// Score that triggered it (0 for operator actions).
    pub score: u8,
    /// RFC 3339 time it expires, if it has an expiry.
    pub until: Option<String>,
    /// Why: `score above quarantine threshold`, `expired`, `released by alice: false positive`, …
    pub reason: String,
}

/// A policy lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyEvent {
    /// `loaded`, `reloaded`, `rolled_back`, `reload_rejected`.
    pub action: String,
    /// Content hash of the policy (hex), when one was built.
    pub hash: Option<String>,
    /// Who asked, when known.
    pub actor: Option<String>,
    /// Free text: the reason given, or the validation errors of a rejected reload.
    pub message: Option<String>,
}

/// One admin API request, as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminEvent {
    /// HTTP method.
    pub method: String,
    /// Path (without the query string's token, if any).
    pub path: String,
    /// HTTP status returned.
    pub status: u16,
    /// The peer address of the request.
    pub remote: Option<String>,
    /// Whether the bearer token was valid.
    pub authenticated: bool,
    /// The actor named in the request, for changes.
    pub actor: Option<String>,
    /// What was changed: `reload`, `rollback`, `release`, `exception_added`, …
    pub action: Option<String>,
    /// Details of the change or of the error.
    pub detail: Option<String>,
}

fn auth_none() -> String {
    "none".into()
}

/// A client refused before any query was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthRefusedEvent {
    /// Source address.
    pub client: IpAddr,
    /// `dot` or `doh`.
    pub protocol: String,
    /// The credential that failed: `mtls` or `token`.
    pub auth: String,
    /// Why: `client certificate expired`, `client certificate revoked`, `token expired`, …
    pub reason: String,
    /// The agent named by the credential, when it could be read.
    pub agent: Option<String>,
}
