//! Webhooks on security events (`[[notify.webhooks]]`): a generic JSON body or a
//! Slack-compatible `{"text": …}`, POSTed over plain HTTP to a host listed in
//! `notify.allowed_hosts`, with retries and a bounded queue (see [`super::notify`]).
//!
//! Delivery: one POST per event, in order. A connection error, a timeout, a 5xx or a 429 is
//! retried up to `retries` times, waiting `backoff`, then twice that, … (at most 30 s); any
//! other status is final. An event that exhausts its retries is counted as failed and the
//! next one is sent; an event that finds the queue full is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::notify::{Counters, Inlet, NOTIFY_FAILED_TOTAL, NOTIFY_SENT_TOTAL, Notice};
use crate::config_error::{ConfigProblems, DurationRange};

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Accepted `backoff`: the first wait, which doubling never takes past [`MAX_BACKOFF`].
pub const BACKOFF: DurationRange = DurationRange::new(Duration::from_millis(1), MAX_BACKOFF);
/// Accepted `timeout` of one attempt.
pub const TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(300));
/// Largest accepted queue.
pub const MAX_QUEUE: usize = 100_000;

/// Body format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"source": "dnsward", "kind": …, "event": {…the event…}}`.
    #[default]
    Json,
    /// `{"text": "…one line…"}` for Slack-compatible incoming webhooks.
    Slack,
}

fn default_events() -> Vec<String> {
    vec![
        "alert".into(),
        "containment_started".into(),
        "egress_denied".into(),
    ]
}
fn default_queue() -> usize {
    1000
}
fn default_retries() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// One `[[notify.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host[:port]/path`; the host must be in `notify.allowed_hosts`.
    pub url: String,
    /// Body format (default `json`).
    #[serde(default)]
    pub format: Format,
    /// Event kinds sent (default alert, containment_started, egress_denied).
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Pending notifications kept (default 1000).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Retries after the first attempt (default 5).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First wait between attempts, doubled each time (default 500 ms, 1ms to 30s).
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Per-attempt timeout (default 5 s, 1ms to 5m).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// The host part of an `http://` URL, if it is one.
fn http_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

impl WebhookConfig {
    /// Check the entry, pushing every problem.
    pub fn validate(&self, at: &str, allowed_hosts: &[String], problems: &mut ConfigProblems) {
        match http_host(&self.url) {
            None => problems.push(
                format!("{at}.url"),
                format!(
                    "{:?} is not an http:// URL without credentials (https is not supported)",
                    self.url
                ),
            ),
            Some(host) if !allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) => {
                problems.push(
                    format!("{at}.url"),
                    format!("host {host:?} is not in notify.allowed_hosts"),
                );
            }
            Some(_) => {}
        }
        if self.queue == 0 || self.queue > MAX_QUEUE {
            problems.push(format!("{at}.queue"), format!("must be 1 to {MAX_QUEUE}"));
        }
        if self.retries > 20 {
            problems.push(format!("{at}.retries"), "at most 20");
        }
        if self.events.is_empty() {
            problems.push(format!("{at}.events"), "name at least one event kind");
        }
        problems.check_duration(format!("{at}.backoff"), self.backoff, BACKOFF);
        problems.check_duration(format!("{at}.timeout"), self.timeout, TIMEOUT);
    }
}

/// The body for one event.
#[must_use]
pub fn body(format: Format, notice: &Notice) -> Value {
    let event: Value = serde_json::from_str(&notice.line).unwrap_or(Value::Null);
    match format {
        Format::Json => json!({ "source": "dnsward", "kind": notice.kind, "event": event }),
        Format::Slack => json!({ "text": summary(&notice.kind, &event) }),
    }
}

/// One human line for an event.
#[must_use]
pub fn summary(kind: &str, e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    match kind {
        "alert" => format!(
            ":rotating_light: dnsward alert: score {} for {} ({}) on {} → {}",
            e["score"],
            s("client"),
            s("group"),
            s("domain"),
            s("action")
        ),
        "containment_started" | "containment_ended" => format!(
            ":lock: dnsward {}: {} {} ({}) {}: {}",
            kind.replace('_', " "),
            s("action"),
            s("client"),
            s("group"),
            e["domain"].as_str().unwrap_or("(whole client)"),
            s("reason")
        ),
        _ => format!("dnsward {kind}: {}", e),
    }
}

/// Start the sender for one webhook; returns its inlet.
#[must_use]
pub fn spawn(name: String, cfg: WebhookConfig) -> Inlet {
    let (tx, rx) = mpsc::channel(cfg.queue.clamp(1, MAX_QUEUE));
    let counters = Arc::new(Counters::default());
    let inlet = Inlet {
        name: name.clone(),
        kinds: cfg.events.clone(),
        tx,
        counters: Arc::clone(&counters),
    };
    tokio::spawn(run(name, cfg, rx, counters));
    inlet
}

async fn run(
    name: String,
    cfg: WebhookConfig,
    mut rx: mpsc::Receiver<Notice>,
    counters: Arc<Counters>,
) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT.clamp(cfg.timeout))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(webhook = %name, error = %e, "webhook client cannot be built");
            return;
        }
    };
    while let Some(notice) = rx.recv().await {
        let body = body(cfg.format, &notice);
        let mut wait = BACKOFF.clamp(cfg.backoff);
        let mut attempt = 0;
        loop {
            let outcome = client.post(&cfg.url).json(&body).send().await;
            let retry = match &outcome {
                Ok(r) if r.status().is_success() => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(NOTIFY_SENT_TOTAL, "sink" => name.clone()).increment(1);
                    break;
                }
                Ok(r) => r.status().is_server_error() || r.status().as_u16() == 429,
                Err(_) => true,
            };
            if !retry || attempt >= cfg.retries {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(NOTIFY_FAILED_TOTAL, "sink" => name.clone()).increment(1);
                tracing::warn!(webhook = %name, kind = %notice.kind, attempts = attempt + 1,
                    outcome = ?outcome.map(|r| r.status()), "webhook delivery given up");
                break;
            }
            attempt += 1;
            counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_to_allowed_hosts() {
        assert_eq!(http_host("http://127.0.0.1:8080/x"), Some("127.0.0.1"));
        assert_eq!(http_host("http://[::1]:80/"), Some("::1"));
        assert_eq!(http_host("https://h/"), None);
        assert_eq!(http_host("http://u:p@h/"), None);
        let cfg: WebhookConfig =
            toml::from_str("url = \"http://evil.example/x\"\nqueue = 0").unwrap();
        let mut p = ConfigProblems::default();
        cfg.validate("notify.webhooks[0]", &["127.0.0.1".into()], &mut p);
        let all = p.to_string();
        assert!(
            all.contains("not in notify.allowed_hosts") && all.contains("queue"),
            "{all}"
        );
    }

    #[test]
    fn slack_body_is_one_line_of_text() {
        let n = Notice {
            kind: "alert".into(),
            line: r#"{"kind":"alert","client":"10.0.0.5","group":"agents","domain":"tun.example","score":87,"action":"quarantine"}"#.into(),
        };
        let b = body(Format::Slack, &n);
        assert_eq!(
            b["text"],
            ":rotating_light: dnsward alert: score 87 for 10.0.0.5 (agents) on tun.example → quarantine"
        );
        assert_eq!(body(Format::Json, &n)["event"]["score"], 87);
    }
}
