//! Running out of local resources: a socket that cannot be accepted or opened because this
//! process is out of file descriptors (`EMFILE`), the system's file table is full (`ENFILE`) or
//! the kernel has no memory for it (`ENOMEM`, `ENOBUFS`). Such a failure says nothing about the
//! client or the upstream, and has one fix, on this host; it is named as such in metrics, logs
//! and events.
//!
//! A listener's failed accepts ([`AcceptErrors`]) are counted in
//! `dnsward_accept_errors_total{protocol, kind}` and logged: the first at once, as a WARN naming
//! the error and its likely fix, then at most one a minute per listener, with the count since
//! the last.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metrics::Counter;

/// Why a socket could not be accepted or opened, as a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketError {
    /// `EMFILE`: this process holds as many descriptors as its limit allows.
    Emfile,
    /// `ENFILE`: the system-wide file table is full.
    Enfile,
    /// `ENOMEM` or `ENOBUFS`: no kernel memory for the socket.
    Enomem,
    /// Anything else (a connection aborted before it was accepted, a closed port, …).
    Other,
}

impl SocketError {
    /// Every kind, in label order.
    pub const ALL: [Self; 4] = [Self::Emfile, Self::Enfile, Self::Enomem, Self::Other];

    /// The kind of `e`.
    #[must_use]
    pub fn of(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE) => Self::Emfile,
            Some(libc::ENFILE) => Self::Enfile,
            Some(libc::ENOMEM | libc::ENOBUFS) => Self::Enomem,
            _ => Self::Other,
        }
    }

    /// The metric label: `emfile`, `enfile`, `enomem` or `other`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Emfile => "emfile",
            Self::Enfile => "enfile",
            Self::Enomem => "enomem",
            Self::Other => "other",
        }
    }

    /// True when the failure is this host's lack of descriptors or memory.
    #[must_use]
    pub fn is_local_resources(self) -> bool {
        self != Self::Other
    }

    /// What the failure means here and what usually fixes it (empty for [`Self::Other`]).
    #[must_use]
    pub fn remedy(self) -> &'static str {
        match self {
            Self::Emfile => {
                "dnsward is out of file descriptors: raise its open-file limit (LimitNOFILE= in the systemd unit, ulimit -n / prlimit --nofile from a shell) or lower the connection bounds"
            }
            Self::Enfile => {
                "the system's file table is full: raise fs.file-max (sysctl) or find the process holding the descriptors"
            }
            Self::Enomem => "the kernel has no memory for another socket",
            Self::Other => "",
        }
    }
}

impl std::fmt::Display for SocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Emfile => "EMFILE, out of file descriptors",
            Self::Enfile => "ENFILE, the system's file table is full",
            Self::Enomem => "ENOMEM, no kernel memory for a socket",
            Self::Other => "a socket error",
        })
    }
}

/// How often a listener logs failed accepts after the first.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A rate limit on a repeated warning: the first at once, then at most one per `interval`,
/// each with the number of failures since the one before.
#[derive(Debug)]
struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    unreported: u64,
}

impl Throttle {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            unreported: 0,
        }
    }

    /// One more failure at `now`: `Some(n)` when it is to be logged, `n` counting it and the
    /// failures not logged since the last report.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// One listener's failed accepts: counted by kind, logged rate-limited.
#[derive(Debug)]
pub struct AcceptErrors {
    protocol: &'static str,
    listener: Option<SocketAddr>,
    counters: [Counter; 4],
    throttle: Throttle,
}

impl AcceptErrors {
    /// The counters of the listener bound at `listener`, serving `protocol` (`tcp`, `dot`,
    /// `doh`, `admin`).
    #[must_use]
    pub fn new(protocol: &'static str, listener: Option<SocketAddr>) -> Self {
        Self {
            protocol,
            listener,
            counters: SocketError::ALL.map(|k| {
                metrics::counter!(crate::metrics::ACCEPT_ERRORS_TOTAL, "protocol" => protocol, "kind" => k.label())
            }),
            throttle: Throttle::new(ACCEPT_LOG_INTERVAL),
        }
    }

    /// Count `e` and log it if the rate limit allows.
    pub fn failed(&mut self, e: &std::io::Error) {
        let kind = SocketError::of(e);
        self.counters[kind as usize].increment(1);
        let first = self.throttle.last.is_none();
        if let Some(failures) = self.throttle.failed(Instant::now()) {
            let listener = self
                .listener
                .map_or_else(|| "?".to_string(), |a| a.to_string());
            let remedy = match kind.remedy() {
                "" => String::new(),
                r => format!("; {r}"),
            };
            let count = if first {
                "further failures are logged at most once a minute and all counted in dnsward_accept_errors_total".to_string()
            } else {
                format!("{failures} failed accepts since the last warning")
            };
            tracing::warn!(
                protocol = self.protocol,
                %listener,
                kind = kind.label(),
                failures,
                "cannot accept connections: {e}{remedy} ({count})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_are_told_apart_from_the_rest() {
        let kind = |errno| SocketError::of(&std::io::Error::from_raw_os_error(errno));
        assert_eq!(kind(libc::EMFILE), SocketError::Emfile);
        assert_eq!(kind(libc::ENFILE), SocketError::Enfile);
        assert_eq!(kind(libc::ENOMEM), SocketError::Enomem);
        assert_eq!(kind(libc::ENOBUFS), SocketError::Enomem);
        assert_eq!(kind(libc::ECONNABORTED), SocketError::Other);
        assert_eq!(
            SocketError::of(&std::io::Error::other("not from the OS")),
            SocketError::Other
        );
        let labels: Vec<&str> = SocketError::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels, ["emfile", "enfile", "enomem", "other"]);
        for (i, k) in SocketError::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "counters are indexed by kind");
            assert_eq!(k.is_local_resources(), *k != SocketError::Other);
        }
        assert!(SocketError::Emfile.remedy().contains("LimitNOFILE"));
        assert!(SocketError::Emfile.remedy().contains("ulimit -n"));
    }

    #[test]
    fn the_first_failure_is_logged_then_one_a_minute_with_the_count() {
        let mut t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.failed(t0), Some(1), "the first at once");
        for s in 1..60 {
            assert_eq!(t.failed(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(
            t.failed(t0 + Duration::from_secs(60)),
            Some(60),
            "a minute later, with every failure since"
        );
        assert_eq!(t.failed(t0 + Duration::from_secs(61)), None);
        // Quiet for long: the next failure is logged at once, with the one held back.
        assert_eq!(t.failed(t0 + Duration::from_secs(600)), Some(2));
    }
}
