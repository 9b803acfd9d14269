//! Syslog (RFC 5424) as a second event sink, for SIEMs that do not tail files
//! (`[notify.syslog]`, see [`super::notify`]).
//!
//! Each event is one message: `<PRI>1 TIMESTAMP HOSTNAME dnsward PROCID KIND - JSON`, where the
//! timestamp is the event's own, MSGID its kind and MSG the event line exactly as written to the
//! log (hash-chain fields included). Over UDP one datagram per message (cut at
//! [`MAX_UDP_MESSAGE`] bytes); over TCP RFC 6587 octet counting (`LEN SP MESSAGE`), with a
//! reconnect (backoff up to 30 s) after a failed write; the message in hand is retried once
//! on the new connection. The queue is bounded like the webhooks'.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::notify::{Counters, Inlet, NOTIFY_FAILED_TOTAL, NOTIFY_SENT_TOTAL, Notice};
use crate::config_error::ConfigProblems;

/// Largest UDP message sent (longer ones are cut).
pub const MAX_UDP_MESSAGE: usize = 8192;

/// Transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// One datagram per message (RFC 5426).
    #[default]
    Udp,
    /// Octet-counted frames on one connection (RFC 6587).
    Tcp,
}

fn default_facility() -> u8 {
    10
}
fn default_queue() -> usize {
    10_000
}

/// `[notify.syslog]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Collector `IP:port`.
    pub address: String,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Facility 0–23 (default 10, authpriv).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// Event kinds sent; empty (the default) sends every kind.
    #[serde(default)]
    pub events: Vec<String>,
    /// Pending messages kept (default 10000).
    #[serde(default = "default_queue")]
    pub queue: usize,
}

impl SyslogConfig {
    /// Check the section, pushing every problem.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        if self.address.parse::<SocketAddr>().is_err() {
            problems.push(
                format!("{at}.address"),
                format!("{:?} is not IP:port", self.address),
            );
        }
        if self.facility > 23 {
            problems.push(format!("{at}.facility"), "must be 0 to 23");
        }
        if self.queue == 0 || self.queue > 1_000_000 {
            problems.push(format!("{at}.queue"), "must be 1 to 1000000");
        }
    }
}

/// Severity for an event kind: alerts, containments and denials are warnings, admin actions
/// notices, the rest informational.
#[must_use]
pub fn severity(kind: &str) -> u8 {
    match kind {
        "alert" | "containment_started" | "egress_denied" => 4,
        "containment_ended" | "admin" | "policy" => 5,
        _ => 6,
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() { "-".into() } else { name }
}

/// The RFC 5424 message for one event.
#[must_use]
pub fn format_message(facility: u8, host: &str, pid: u32, notice: &Notice) -> String {
    let ts = serde_json::from_str::<serde_json::Value>(&notice.line)
        .ok()
        .and_then(|v| v["ts"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    let msgid: String = notice
        .kind
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    format!(
        "<{}>1 {ts} {host} dnsward {pid} {} - {}",
        u16::from(facility) * 8 + u16::from(severity(&notice.kind)),
        if msgid.is_empty() { "-" } else { &msgid },
        notice.line
    )
}

/// Start the syslog sender; returns its inlet.
#[must_use]
pub fn spawn(cfg: SyslogConfig) -> Inlet {
    let (tx, rx) = mpsc::channel(cfg.queue.clamp(1, 1_000_000));
    let counters = Arc::new(Counters::default());
    let inlet = Inlet {
        name: "syslog".into(),
        kinds: cfg.events.clone(),
        tx,
        counters: Arc::clone(&counters),
    };
    tokio::spawn(run(cfg, rx, counters));
    inlet
}

async fn run(cfg: SyslogConfig, mut rx: mpsc::Receiver<Notice>, counters: Arc<Counters>) {
    let Ok(addr) = cfg.address.parse::<SocketAddr>() else {
        return;
    };
    let host = hostname();
    let pid = std::process::id();
    let mut udp: Option<UdpSocket> = None;
    let mut tcp: Option<TcpStream> = None;
    let mut backoff = Duration::from_millis(200);
    while let Some(notice) = rx.recv().await {
        let msg = format_message(cfg.facility, &host, pid, &notice);
        let ok = match cfg.protocol {
            Protocol::Udp => {
                if udp.is_none() {
                    let bind: SocketAddr = if addr.is_ipv4() {
                        "0.0.0.0:0".parse().unwrap_or(addr)
                    } else {
                        "[::]:0".parse().unwrap_or(addr)
                    };
                    udp = UdpSocket::bind(bind).await.ok();
                }
                let bytes = &msg.as_bytes()[..msg.len().min(MAX_UDP_MESSAGE)];
                match &udp {
                    Some(s) => s.send_to(bytes, addr).await.is_ok(),
                    None => false,
                }
            }
            Protocol::Tcp => {
                let frame = format!("{} {msg}", msg.len());
                let mut sent = false;
                for _ in 0..2 {
                    if tcp.is_none() {
                        match TcpStream::connect(addr).await {
                            Ok(s) => {
                                tcp = Some(s);
                                backoff = Duration::from_millis(200);
                            }
                            Err(_) => {
                                counters.retries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(30));
                                continue;
                            }
                        }
                    }
                    if let Some(s) = tcp.as_mut() {
                        if s.write_all(frame.as_bytes()).await.is_ok() {
                            sent = true;
                            break;
                        }
                        tcp = None;
                        counters.retries.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent
            }
        };
        if ok {
            counters.sent.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(NOTIFY_SENT_TOTAL, "sink" => "syslog").increment(1);
        } else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(NOTIFY_FAILED_TOTAL, "sink" => "syslog").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_header_from_the_event() {
        let n = Notice {
            kind: "alert".into(),
            line: r#"{"ts":"2026-12-02T13:00:00.123456Z","kind":"alert","score":80}"#.into(),
        };
        let m = format_message(10, "host1", 42, &n);
        assert_eq!(
            m,
            r#"<84>1 2026-12-02T13:00:00.123456Z host1 dnsward 42 alert - {"ts":"2026-12-02T13:00:00.123456Z","kind":"alert","score":80}"#
        );
        assert!(!hostname().contains(' '));
    }
}
