//! Metric names, in one place, and the Prometheus recorder.
//!
//! Names follow Prometheus conventions: counters end in `_total`, durations are `_seconds`
//! histograms. Label values are bounded sets (group names from config, verdict strings, a fixed
//! set of query-type mnemonics) so the series count stays bounded.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Queries answered, by `group`, `verdict` and `qtype`.
pub const QUERIES_TOTAL: &str = "dnsward_queries_total";
/// Time from receipt to answer, by `protocol`.
pub const QUERY_DURATION_SECONDS: &str = "dnsward_query_duration_seconds";
/// Malformed packets, by `action` (`formerr`: answered FORMERR, NOTIMP or BADVERS; `dropped`).
pub const MALFORMED_TOTAL: &str = "dnsward_malformed_packets_total";
/// Cache lookups that found a live answer.
pub const CACHE_HITS_TOTAL: &str = "dnsward_cache_hits_total";
/// Cache lookups that found nothing live.
pub const CACHE_MISSES_TOTAL: &str = "dnsward_cache_misses_total";
/// Entries now in the cache (gauge).
pub const CACHE_ENTRIES: &str = "dnsward_cache_entries";
/// Requests sent to an upstream, by `upstream` and `transport`.
pub const UPSTREAM_REQUESTS_TOTAL: &str = "dnsward_upstream_requests_total";
/// UDP queries sent again to an upstream in a later round after its `timeout` passed without an
/// answer (same ID, at most twice a query; also counted in [`UPSTREAM_REQUESTS_TOTAL`]), by
/// `upstream`.
pub const UPSTREAM_RETRANSMITS_TOTAL: &str = "dnsward_upstream_retransmits_total";
/// 1 while an upstream is down ([`crate::resolve::upstream::DOWN_AFTER`] failed exchanges in a
/// row: one probe per query, no retransmission), else 0, by `upstream`.
pub const UPSTREAM_DOWN: &str = "dnsward_upstream_down";
/// Upstream failures, by `upstream` and `kind` (`timeout`, `io`, `mismatch`, `refused`,
/// `formerr`, `notimp`: the server's rcode for a well-formed query; `truncated`: TC over TCP;
/// `local_resources`: no socket could be opened here, EMFILE, ENFILE, ENOMEM or ENOBUFS).
pub const UPSTREAM_ERRORS_TOTAL: &str = "dnsward_upstream_errors_total";
/// Records an upstream put in an answer beyond its question's chain, dropped before the answer
/// was checked, cached or served, by `section` (`answer`, `authority`, `additional`).
pub const UPSTREAM_SCRUBBED_TOTAL: &str = "dnsward_upstream_records_scrubbed_total";
/// Upstream round-trip time, by `upstream`.
pub const UPSTREAM_DURATION_SECONDS: &str = "dnsward_upstream_duration_seconds";
/// Events written by the sink, by `kind`.
pub const EVENTS_WRITTEN_TOTAL: &str = "dnsward_events_written_total";
/// Events dropped because the sink queue was full or the sink failed, by `cause`
/// (`queue_full`, `security_queue_full`, `io`: query events not written, `security_io`:
/// security events not written, `encode`, `closed`).
pub const EVENTS_DROPPED_TOTAL: &str = "dnsward_events_dropped_total";
/// Security events held in memory because the log could not be written, to be written once it
/// can (at most `events::sink::BACKLOG_EVENTS`).
pub const EVENTS_BACKLOG: &str = "dnsward_events_backlog";
/// Rotations of the event log that failed (the file keeps growing until one works).
pub const EVENTS_ROTATION_FAILURES_TOTAL: &str = "dnsward_events_rotation_failures_total";
/// Times the event log's path no longer named the file being written and a new file was
/// started there, by `reason` (`deleted`, `replaced`).
pub const EVENTS_FILE_REOPENED_TOTAL: &str = "dnsward_events_file_reopened_total";
/// Events not logged by design (sampling), by `kind` (`unknown_client`).
pub const EVENTS_SAMPLED_OUT_TOTAL: &str = "dnsward_events_sampled_out_total";
/// TCP connections refused, by `reason` (`global_cap`, `client_cap`, `unknown_client`).
pub const TCP_REJECTED_TOTAL: &str = "dnsward_tcp_connections_rejected_total";
/// DoT and DoH connections refused at accept, by `protocol` (`dot`, `doh`) and `reason`, as
/// for TCP (`global_cap`, `client_cap`, `unknown_client`).
pub const TLS_REJECTED_TOTAL: &str = "dnsward_tls_connections_rejected_total";
/// DoT and DoH connections closed because their TLS handshake did not finish within
/// `[tls] handshake_timeout`, by `protocol`.
pub const TLS_HANDSHAKE_TIMEOUTS_TOTAL: &str = "dnsward_tls_handshake_timeouts_total";
/// Connections a listener could not accept, by `protocol` (`tcp`, `dot`, `doh`, `admin`) and
/// `kind` (`emfile`, `enfile`, `enomem`, `other`; see [`crate::resources::SocketError`]).
pub const ACCEPT_ERRORS_TOTAL: &str = "dnsward_accept_errors_total";
/// Open TCP connections (gauge).
pub const TCP_CONNECTIONS: &str = "dnsward_tcp_connections";
/// Datagrams whose handling panicked, a bug: the datagram got no answer and the listener went
/// on with the next (the panic's message is on stderr). By `listener` (`udp`).
pub const PANICS_TOTAL: &str = "dnsward_panics_total";
/// Queries answered SERVFAIL at once because a resource bound was reached, by `reason`
/// (`inflight_misses`, `inflight_misses_per_client`).
pub const OVERLOAD_TOTAL: &str = "dnsward_overload_total";
/// Cache misses that shared an identical question's upstream exchange instead of their own.
pub const COALESCED_TOTAL: &str = "dnsward_coalesced_misses_total";
/// Cache misses answered SERVFAIL at once because the same question's resolution failed
/// within `[upstream] failure_ttl` (RFC 9520), without asking an upstream.
pub const FAILURE_CACHE_HITS_TOTAL: &str = "dnsward_failure_cache_hits_total";
/// Questions whose recent resolution failure is remembered (gauge, set when scraped).
pub const FAILURE_CACHE_ENTRIES: &str = "dnsward_failure_cache_entries";
/// Admin HTTP connections closed at once because the admin connection cap was reached.
pub const ADMIN_REJECTED_TOTAL: &str = "dnsward_admin_connections_rejected_total";
/// Tunnel alerts raised, by `group` and `action`.
pub const ALERTS_TOTAL: &str = "dnsward_alerts_total";
/// Containments started, by `group` and `action`.
pub const CONTAINMENTS_TOTAL: &str = "dnsward_containments_total";
/// Active containments, by `action` (gauge).
pub const CONTAINMENTS_ACTIVE: &str = "dnsward_containments_active";
/// Keys tracked by the detector, by `table` (gauge).
pub const DETECTOR_TRACKED_KEYS: &str = "dnsward_detector_tracked_keys";
/// Keys evicted from the detector's bounded tables, by `table`.
pub const DETECTOR_EVICTIONS_TOTAL: &str = "dnsward_detector_evictions_total";
/// The active policy version (gauge).
pub const POLICY_VERSION: &str = "dnsward_policy_version";
/// Policy reloads, by `result` (`ok`, `rejected`).
pub const POLICY_RELOADS_TOTAL: &str = "dnsward_policy_reloads_total";

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder once per process and return its handle.
///
/// Call it first thing when starting ([`crate::app::RunningApp::start_with_clock`] does): the
/// `metrics` macros bind a handle to whatever recorder is global *when they run*, and the
/// pipeline, cache and listeners register their counters once at construction. A counter
/// registered before the recorder exists is bound to the no-op recorder for good and never
/// shows on `/metrics`. Later calls return the same handle.
///
/// Latency histograms get buckets from 50 µs to 5 s, fit for a resolver whose cache hits take
/// microseconds and whose upstream misses take milliseconds.
pub fn install() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding program); then
            // our handle still renders, just without the global counters.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// One line of `# HELP` for every metric dnsward records (Prometheus's linter, `promtool check
/// metrics`, asks for one); the constants' doc comments say more.
const HELP: &[(&str, &str)] = &[
    (
        QUERIES_TOTAL,
        "Queries answered, by group, verdict and qtype.",
    ),
    (
        QUERY_DURATION_SECONDS,
        "Time from receipt to answer, by protocol.",
    ),
    (
        MALFORMED_TOTAL,
        "Malformed packets, by action (formerr: answered with an error rcode; dropped).",
    ),
    (CACHE_HITS_TOTAL, "Cache lookups that found a live answer."),
    (CACHE_MISSES_TOTAL, "Cache lookups that found nothing live."),
    (CACHE_ENTRIES, "Entries in the cache."),
    (
        UPSTREAM_REQUESTS_TOTAL,
        "Requests sent to an upstream, by upstream and transport.",
    ),
    (
        UPSTREAM_RETRANSMITS_TOTAL,
        "UDP queries sent again to an upstream in a later round, its timeout passed unanswered, by upstream.",
    ),
    (
        UPSTREAM_ERRORS_TOTAL,
        "Upstream failures, by upstream and kind.",
    ),
    (
        UPSTREAM_DOWN,
        "1 while an upstream is down (failed exchanges in a row: one probe per query), by upstream.",
    ),
    (
        UPSTREAM_SCRUBBED_TOTAL,
        "Records dropped from upstream answers beyond their question's chain, by section.",
    ),
    (
        UPSTREAM_DURATION_SECONDS,
        "Upstream round-trip time, by upstream.",
    ),
    (
        EVENTS_WRITTEN_TOTAL,
        "Events written to the event sink, by kind.",
    ),
    (
        EVENTS_DROPPED_TOTAL,
        "Events lost (full queue, unwritable log, encoding), by cause.",
    ),
    (
        EVENTS_BACKLOG,
        "Security events held in memory until the event log can be written.",
    ),
    (
        EVENTS_ROTATION_FAILURES_TOTAL,
        "Event log rotations that failed.",
    ),
    (
        EVENTS_FILE_REOPENED_TOTAL,
        "Event log files started again at their path after being deleted or replaced, by reason.",
    ),
    (
        EVENTS_SAMPLED_OUT_TOTAL,
        "Events not logged by design (sampling), by kind.",
    ),
    (TCP_REJECTED_TOTAL, "TCP connections refused, by reason."),
    (
        TLS_REJECTED_TOTAL,
        "DoT and DoH connections refused at accept, by protocol and reason.",
    ),
    (
        TLS_HANDSHAKE_TIMEOUTS_TOTAL,
        "DoT and DoH connections closed for a TLS handshake past its timeout, by protocol.",
    ),
    (
        ACCEPT_ERRORS_TOTAL,
        "Connections a listener could not accept, by protocol and kind.",
    ),
    (TCP_CONNECTIONS, "Open TCP connections."),
    (
        OVERLOAD_TOTAL,
        "Queries answered SERVFAIL at once because a resource bound was reached, by reason.",
    ),
    (
        COALESCED_TOTAL,
        "Cache misses that shared an identical question's upstream exchange.",
    ),
    (
        FAILURE_CACHE_HITS_TOTAL,
        "Queries answered SERVFAIL at once because their question failed to resolve within failure_ttl.",
    ),
    (
        FAILURE_CACHE_ENTRIES,
        "Questions whose recent resolution failure is remembered.",
    ),
    (
        ADMIN_REJECTED_TOTAL,
        "Admin connections closed at once at the admin connection cap.",
    ),
    (ALERTS_TOTAL, "Tunnel alerts raised, by group and action."),
    (
        CONTAINMENTS_TOTAL,
        "Containments started, by group and action.",
    ),
    (CONTAINMENTS_ACTIVE, "Active containments, by action."),
    (
        DETECTOR_TRACKED_KEYS,
        "Keys tracked by the tunnel detector, by table.",
    ),
    (
        DETECTOR_EVICTIONS_TOTAL,
        "Keys evicted from the tunnel detector's bounded tables, by table.",
    ),
    (
        PANICS_TOTAL,
        "Datagrams whose handling panicked (a bug; no answer was sent and the listener went on), by listener.",
    ),
    (POLICY_VERSION, "The active policy version."),
    (POLICY_RELOADS_TOTAL, "Policy reloads, by result."),
    (
        AUTH_REFUSED_TOTAL,
        "Encrypted clients refused before any query (bad certificate or token), by protocol and auth.",
    ),
    (
        crate::events::notify::NOTIFY_SENT_TOTAL,
        "Notifications delivered, by sink.",
    ),
    (
        crate::events::notify::NOTIFY_FAILED_TOTAL,
        "Notifications that could not be delivered, by sink.",
    ),
    (
        crate::events::notify::NOTIFY_DROPPED_TOTAL,
        "Notifications dropped before delivery, by sink.",
    ),
    (
        crate::egress::metric_names::WRITES_TOTAL,
        "Egress set elements written (added or refreshed).",
    ),
    (
        crate::egress::metric_names::BATCHES_TOTAL,
        "Egress set batches applied, by result.",
    ),
    (
        crate::egress::metric_names::WAIT_TIMEOUTS_TOTAL,
        "Answers sent before their egress set update was in (the wait hit max_wait).",
    ),
    (
        crate::egress::metric_names::CAPPED_TOTAL,
        "Addresses not added because an answer had more than max_addresses_per_name.",
    ),
    (
        crate::egress::metric_names::UNTRACKED_TOTAL,
        "Egress elements written without being remembered (the dedupe map was full).",
    ),
    (
        crate::egress::metric_names::TRACKED,
        "Egress elements remembered for deduplication.",
    ),
    (
        crate::egress::metric_names::DENIED_TOTAL,
        "Denied connection attempts read from NFLOG, by group.",
    ),
    (
        crate::egress::metric_names::DENIED_UNATTRIBUTED_TOTAL,
        "Denied connection attempts counted against no group.",
    ),
    (
        crate::egress::metric_names::DENIED_EVICTED_TOTAL,
        "Clients' denied-flow windows dropped because the table was full.",
    ),
    (
        crate::egress::metric_names::DENIED_MALFORMED_TOTAL,
        "NFLOG messages that could not be parsed.",
    ),
];

/// Give every metric its `# HELP` line. The exporter keeps one description per name, whatever
/// the kind it is described as or recorded as.
fn describe() {
    for (name, help) in HELP {
        metrics::describe_counter!(*name, *help);
    }
}
/// Registers at zero the counters an alert rule watches for their first increase, so that
/// rule sees it: a series that first appears at 1 is no `increase()` at all. Global ones
/// (reloads, event drops by cause) and, for each group, alerts and containments by action.
/// Called at start and after every reload (a new group's series).
pub fn preregister<'a>(groups: impl Iterator<Item = &'a str>) {
    for result in ["ok", "rejected"] {
        metrics::counter!(POLICY_RELOADS_TOTAL, "result" => result).increment(0);
    }
    metrics::counter!(PANICS_TOTAL, "listener" => "udp").increment(0);
    for cause in [
        "queue_full",
        "security_queue_full",
        "closed",
        "encode",
        "io",
        "security_io",
    ] {
        metrics::counter!(EVENTS_DROPPED_TOTAL, "cause" => cause).increment(0);
    }
    for group in groups {
        for action in ["none", "alert", "throttle", "sinkhole", "quarantine"] {
            metrics::counter!(ALERTS_TOTAL, "group" => group.to_string(), "action" => action)
                .increment(0);
        }
        for action in ["throttle", "sinkhole", "quarantine"] {
            metrics::counter!(CONTAINMENTS_TOTAL, "group" => group.to_string(), "action" => action)
                .increment(0);
        }
    }
}

/// Encrypted clients refused before any query (bad certificate or token), by protocol and auth.
pub const AUTH_REFUSED_TOTAL: &str = "dnsward_auth_refused_total";
