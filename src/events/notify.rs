//! Notifications: the `[notify]` section, and the fan-out point where the event writer hands
//! each encoded event to the webhook ([`super::webhook`]) and syslog ([`super::syslog`]) senders.
//!
//! ```toml
//! [notify]
//! allowed_hosts = ["127.0.0.1", "hooks.corp.internal"]   # webhook URLs may only name these
//!
//! [[notify.webhooks]]
//! url = "http://hooks.corp.internal:8080/dnsward"
//! format = "slack"                  # "json" (default) | "slack"
//! events = ["alert", "containment_started", "egress_denied"]   # the default
//! queue = 1000                      # pending notifications; more are dropped and counted
//! retries = 5                       # after the first attempt, on errors and 5xx/429
//! backoff = "500ms"                 # doubled per retry, at most 30 s (1ms to 30s)
//! timeout = "5s"                    # per attempt, 1ms to 5m
//!
//! [notify.syslog]
//! address = "127.0.0.1:514"
//! protocol = "udp"                  # "udp" | "tcp" (RFC 6587 octet counting)
//! facility = 10                     # authpriv
//! ```
//!
//! The writer calls [`Tap::offer`] with the line it just encoded (hash-chain fields included),
//! off the query path. `offer` never blocks: each destination has its own bounded queue, and a
//! full one drops the notification and counts it (`dnsward_notify_dropped_total{sink}`), so a
//! slow webhook can neither stall the event log nor grow memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use tokio::sync::mpsc;

use super::syslog::SyslogConfig;
use super::webhook::WebhookConfig;
use crate::config_error::ConfigProblems;

/// Notifications dropped because a destination's queue was full, by `sink`.
pub const NOTIFY_DROPPED_TOTAL: &str = "dnsward_notify_dropped_total";
/// Notifications delivered, by `sink`.
pub const NOTIFY_SENT_TOTAL: &str = "dnsward_notify_sent_total";
/// Notifications given up after every retry, by `sink`.
pub const NOTIFY_FAILED_TOTAL: &str = "dnsward_notify_failed_total";

/// The `[notify]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Hosts webhook URLs may name (exactly, as written in the URL).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// `[[notify.webhooks]]`.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// `[notify.syslog]`.
    #[serde(default)]
    pub syslog: Option<SyslogConfig>,
}

impl NotifyConfig {
    /// Check the section, pushing every problem.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate(
                &format!("{at}.webhooks[{i}]"),
                &self.allowed_hosts,
                problems,
            );
        }
        if let Some(s) = &self.syslog {
            s.validate(&format!("{at}.syslog"), problems);
        }
    }
}

/// Counters of one destination.
#[derive(Debug, Default)]
pub struct Counters {
    /// Delivered.
    pub sent: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Given up after every retry.
    pub failed: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
}

impl Counters {
    /// `(sent, dropped, failed, retries)`.
    #[must_use]
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
        )
    }
}

/// One event as handed to a destination.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The event kind (`alert`, `containment_started`, …).
    pub kind: String,
    /// The encoded JSON line, without its newline.
    pub line: Arc<str>,
}

/// A destination's inlet: which kinds it wants and its bounded queue.
#[derive(Debug, Clone)]
pub struct Inlet {
    /// Name for metrics (`webhook[0]`, `syslog`).
    pub name: String,
    /// Kinds wanted; empty means every kind.
    pub kinds: Vec<String>,
    /// The queue.
    pub tx: mpsc::Sender<Notice>,
    /// Its counters.
    pub counters: Arc<Counters>,
}

/// The fan-out point the event writer calls. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tap {
    inlets: Vec<Inlet>,
}

impl Tap {
    /// A tap feeding `inlets`.
    #[must_use]
    pub fn new(inlets: Vec<Inlet>) -> Self {
        Self { inlets }
    }

    /// Whether nothing listens.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inlets.is_empty()
    }

    /// Hand one encoded event (`line`, with or without its newline) to every destination that
    /// wants `kind`. Never blocks; a full queue drops and counts.
    pub fn offer(&self, kind: &str, line: &[u8]) {
        let mut shared: Option<Arc<str>> = None;
        for inlet in &self.inlets {
            if !inlet.kinds.is_empty() && !inlet.kinds.iter().any(|k| k == kind) {
                continue;
            }
            let line = shared
                .get_or_insert_with(|| String::from_utf8_lossy(line).trim_end_matches('\n').into())
                .clone();
            let notice = Notice {
                kind: kind.to_string(),
                line,
            };
            if inlet.tx.try_send(notice).is_err() {
                inlet.counters.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(NOTIFY_DROPPED_TOTAL, "sink" => inlet.name.clone()).increment(1);
            }
        }
    }
}

/// The running senders.
#[derive(Debug, Default)]
pub struct Notifiers {
    /// The tap to hand to the event writer.
    pub tap: Tap,
    /// Counters per destination, in config order (webhooks, then syslog).
    pub counters: Vec<(String, Arc<Counters>)>,
}

impl Notifiers {
    /// Start one task per destination of `cfg` on the current runtime. A task ends once the
    /// tap (every clone) is dropped and its queue is drained.
    #[must_use]
    pub fn start(cfg: &NotifyConfig) -> Self {
        let mut inlets = Vec::new();
        for (i, w) in cfg.webhooks.iter().enumerate() {
            inlets.push(super::webhook::spawn(format!("webhook[{i}]"), w.clone()));
        }
        if let Some(s) = &cfg.syslog {
            inlets.push(super::syslog::spawn(s.clone()));
        }
        let counters = inlets
            .iter()
            .map(|i| (i.name.clone(), Arc::clone(&i.counters)))
            .collect();
        Self {
            tap: Tap::new(inlets),
            counters,
        }
    }
}
