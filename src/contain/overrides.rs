//! Operator overrides that live outside the policy file: time-limited detection exceptions
//! added through the admin API, and the bounded log of recent alerts the API and the HTML page
//! show.
//!
//! Both are bounded: at most [`MAX_EXCEPTIONS`] live exceptions (adding more is refused with a
//! clear error; adding one for a group and domain that has one extends it, and one can be
//! removed by id) and the last [`MAX_RECENT_ALERTS`] alerts (the oldest is forgotten; the event
//! log keeps them all). With a state directory the exceptions are kept in a file there
//! ([`Overrides::persist_at`]), written whole on every change, so a restart keeps them: a
//! suspect triaged as a false positive is not contained again after a restart. The query path reads the exception list only when it is non-empty
//! (an atomic count), so an idle feature costs one load.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::events::AlertEvent;
use crate::names::self_and_parents;

/// Most live temporary exceptions.
pub const MAX_EXCEPTIONS: usize = 10_000;
/// Alerts kept in memory for the API.
pub const MAX_RECENT_ALERTS: usize = 10_000;

/// A time-limited exception: no tunnel scoring for `domain` (and below) in `group`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TempException {
    /// Id for removal and audit.
    pub id: u64,
    /// The group it applies to.
    pub group: String,
    /// Domain suffix (matched on label boundaries).
    pub domain: String,
    /// Who added it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// RFC 3339 expiry.
    pub expires: String,
    /// Clock time of expiry.
    #[serde(skip, default)]
    until: Duration,
}

/// The exceptions' file: the next id to give and the list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    next_id: u64,
    exceptions: Vec<TempException>,
}

/// [`Persisted`], written from the live list.
#[derive(Serialize)]
struct PersistedRef<'a> {
    next_id: u64,
    exceptions: &'a [TempException],
}

/// Why an exception was not added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverrideError {
    /// The table is full.
    #[error("too many temporary exceptions (limit {MAX_EXCEPTIONS}); remove some first")]
    Full,
}

/// A recent alert with when it happened.
#[derive(Debug, Clone, Serialize)]
pub struct RecentAlert {
    /// RFC 3339 time.
    pub ts: String,
    /// Policy version that was active.
    pub policy_version: u64,
    /// The alert.
    #[serde(flatten)]
    pub alert: AlertEvent,
    /// Clock time, for `since` filters.
    #[serde(skip)]
    pub at: Duration,
}

/// Temporary exceptions and recent alerts.
#[derive(Debug)]
pub struct Overrides {
    clock: SharedClock,
    exceptions: RwLock<Vec<TempException>>,
    /// Where the exceptions are kept across restarts (none: in memory only).
    file: Mutex<Option<std::path::PathBuf>>,
    /// The last snapshot taken, and the last written ([`Self::save`]).
    generation: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
    live: AtomicUsize,
    next_id: AtomicUsize,
    alerts: Mutex<VecDeque<RecentAlert>>,
}

impl Overrides {
    /// Empty overrides on `clock`.
    #[must_use]
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            exceptions: RwLock::new(Vec::new()),
            file: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            written: std::sync::atomic::AtomicU64::new(0),
            live: AtomicUsize::new(0),
            next_id: AtomicUsize::new(1),
            alerts: Mutex::new(VecDeque::new()),
        }
    }

    /// Keep the exceptions in `path` from now on, first taking back the ones it holds that
    /// have not expired (by wall-clock time: the process clock starts again at a restart).
    /// Returns how many were taken back. A file that cannot be read or parsed is an error: the
    /// caller says so and carries on with none; the file is first moved aside
    /// (`<name>.bad-<unix seconds>`), so what it held is kept for the operator rather than
    /// overwritten at the next change.
    ///
    /// # Errors
    /// The file exists but cannot be read or is not an exception list.
    pub fn persist_at(&self, path: std::path::PathBuf) -> Result<usize, String> {
        let restored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Persisted>(&bytes)
                .map_err(|e| format!("{}: not an exception list: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
        let restored = match restored {
            Ok(r) => r,
            Err(why) => {
                let secs = chrono::Utc::now().timestamp();
                let aside = path.with_extension(format!("json.bad-{secs}"));
                let moved = std::fs::rename(&path, &aside);
                *self.file.lock() = Some(path);
                return Err(match moved {
                    Ok(()) => format!("{why}; moved aside to {}", aside.display()),
                    Err(e) => format!("{why}; could not move it aside ({e})"),
                });
            }
        };
        *self.file.lock() = Some(path);
        // Ids are never reused, an expired or removed exception's neither: the audit log
        // names them.
        self.next_id.fetch_max(
            usize::try_from(restored.next_id).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
        let wall = chrono::Utc::now();
        let now = self.clock.now();
        let mut list = self.exceptions.write();
        for mut e in restored.exceptions {
            self.next_id.fetch_max(
                usize::try_from(e.id)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
                Ordering::Relaxed,
            );
            let Some(left) = chrono::DateTime::parse_from_rfc3339(&e.expires)
                .ok()
                .and_then(|t| (t.with_timezone(&chrono::Utc) - wall).to_std().ok())
            else {
                continue;
            };
            if left.is_zero() || list.len() >= MAX_EXCEPTIONS {
                continue;
            }
            e.until = now.saturating_add(left);
            list.push(e);
        }
        self.live.store(list.len(), Ordering::Release);
        Ok(list.len())
    }

    /// The list as it will be written, taken while its lock is held (with a generation, so an
    /// older snapshot never overwrites a newer one); `None` without a file.
    fn snapshot(&self, list: &[TempException]) -> Option<(u64, Vec<u8>)> {
        self.file.lock().as_ref()?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        match serde_json::to_vec_pretty(&PersistedRef {
            next_id: self.next_id.load(Ordering::Relaxed) as u64,
            exceptions: list,
        }) {
            Ok(b) => Some((generation, b)),
            Err(e) => {
                tracing::warn!(error = %e, "exceptions not saved");
                None
            }
        }
    }

    /// Write a snapshot to the file: whole, atomically, after the list's lock is released (the
    /// query path reads the list; it never waits on this disk's fsyncs). A failure is logged;
    /// the exceptions stay in force in memory.
    fn save(&self, snapshot: Option<(u64, Vec<u8>)>) {
        let Some((generation, bytes)) = snapshot else {
            return;
        };
        let file = self.file.lock();
        let Some(path) = file.as_deref() else {
            return;
        };
        if generation <= self.written.load(Ordering::Acquire) {
            return; // a newer list is on disk already
        }
        match crate::config_error::write_file_atomic(path, &bytes) {
            Ok(()) => self.written.store(generation, Ordering::Release),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "exceptions not saved: they hold until a restart only");
            }
        }
    }

    /// Add an exception for `ttl`. One already live for the same group and domain is extended
    /// instead (to the later expiry; the actor and reason become this one's), keeping its id:
    /// the table holds one entry per group and domain.
    ///
    /// # Errors
    /// [`OverrideError::Full`] when the table is at its bound.
    pub fn add_exception(
        &self,
        group: &str,
        domain: &str,
        ttl: Duration,
        actor: &str,
        reason: &str,
    ) -> Result<TempException, OverrideError> {
        let mut list = self.exceptions.write();
        let now = self.clock.now();
        list.retain(|e| e.until > now);
        let domain = crate::names::normalise(domain);
        let wall = chrono::Utc::now();
        let expires = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| wall.checked_add_signed(ttl))
            .unwrap_or(wall)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let until = now.saturating_add(ttl);
        let e = if let Some(e) = list
            .iter_mut()
            .find(|e| e.group == group && e.domain == domain)
        {
            if until > e.until {
                e.until = until;
                e.expires = expires;
            }
            e.actor = actor.to_string();
            e.reason = reason.to_string();
            e.clone()
        } else {
            if list.len() >= MAX_EXCEPTIONS {
                return Err(OverrideError::Full);
            }
            let e = TempException {
                id: self.next_id.fetch_add(1, Ordering::Relaxed) as u64,
                group: group.to_string(),
                domain,
                actor: actor.to_string(),
                reason: reason.to_string(),
                created: wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                expires,
                until,
            };
            list.push(e.clone());
            e
        };
        self.live.store(list.len(), Ordering::Release);
        let snapshot = self.snapshot(&list);
        drop(list);
        self.save(snapshot);
        Ok(e)
    }

    /// Remove the exception `id`; returns it, or `None` when there is no live one.
    pub fn remove_exception(&self, id: u64) -> Option<TempException> {
        let mut list = self.exceptions.write();
        let now = self.clock.now();
        list.retain(|e| e.until > now);
        let at = list.iter().position(|e| e.id == id)?;
        let e = list.remove(at);
        self.live.store(list.len(), Ordering::Release);
        let snapshot = self.snapshot(&list);
        drop(list);
        self.save(snapshot);
        Some(e)
    }

    /// Live exceptions.
    #[must_use]
    pub fn exceptions(&self) -> Vec<TempException> {
        let now = self.clock.now();
        self.exceptions
            .read()
            .iter()
            .filter(|e| e.until > now)
            .cloned()
            .collect()
    }

    /// The live exception covering `qname` for `group`, if any.
    #[must_use]
    pub fn exception_for(&self, group: &str, qname: &str) -> Option<String> {
        if self.live.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = self.clock.now();
        let list = self.exceptions.read();
        self_and_parents(qname).find_map(|suffix| {
            list.iter()
                .find(|e| e.until > now && e.group == group && e.domain == suffix)
                .map(|e| {
                    format!(
                        "temporary exception #{} for {} by {}",
                        e.id, e.domain, e.actor
                    )
                })
        })
    }

    /// Drop expired exceptions (called by the upkeep tick).
    pub fn expire(&self) {
        if self.live.load(Ordering::Acquire) == 0 {
            return;
        }
        let now = self.clock.now();
        let mut list = self.exceptions.write();
        list.retain(|e| e.until > now);
        self.live.store(list.len(), Ordering::Release);
    }

    /// Remember an alert for the API.
    pub fn record_alert(&self, ts: String, policy_version: u64, alert: AlertEvent) {
        let mut q = self.alerts.lock();
        if q.len() >= MAX_RECENT_ALERTS {
            q.pop_front();
        }
        q.push_back(RecentAlert {
            ts,
            policy_version,
            alert,
            at: self.clock.now(),
        });
    }

    /// Recent alerts matching the filters, newest first.
    #[must_use]
    pub fn alerts(&self, filter: &AlertFilter) -> Vec<RecentAlert> {
        let now = self.clock.now();
        self.alerts
            .lock()
            .iter()
            .rev()
            .filter(|a| filter.since.is_none_or(|s| now.saturating_sub(a.at) <= s))
            .filter(|a| filter.matches(&a.alert))
            .take(filter.limit.unwrap_or(1000))
            .cloned()
            .collect()
    }
}

/// Filters for [`Overrides::alerts`] (`GET /api/v1/alerts`); `dnsward alerts` applies the same
/// [`AlertFilter::matches`] to the event log, so both select the same alerts.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only alerts this recent.
    pub since: Option<Duration>,
    /// Only this client.
    pub client: Option<IpAddr>,
    /// Only this group (case-insensitive).
    pub group: Option<String>,
    /// Only this domain and names below it (see [`domain_matches`]).
    pub domain: Option<String>,
    /// Only scores at least this.
    pub min_score: Option<u8>,
    /// At most this many (default 1000).
    pub limit: Option<usize>,
}

impl AlertFilter {
    /// Whether `alert` passes the client, group, domain and score filters. `since` and `limit`
    /// are left to the caller: the API counts time on its clock and alerts, the CLI counts time
    /// from the events' timestamps and suspects.
    #[must_use]
    pub fn matches(&self, alert: &AlertEvent) -> bool {
        self.client.is_none_or(|c| c == alert.client)
            && self
                .group
                .as_deref()
                .is_none_or(|g| g.eq_ignore_ascii_case(&alert.group))
            && self
                .domain
                .as_deref()
                .is_none_or(|d| domain_matches(d, &alert.domain))
            && self.min_score.is_none_or(|m| alert.score >= m)
    }
}

/// Whether the domain filter `filter` selects an alert on `domain`: the same name or a name
/// below it, on label boundaries (`example` selects `tun.example`, not `myexample`), ignoring
/// case and a trailing dot. An empty filter selects nothing.
#[must_use]
pub fn domain_matches(filter: &str, domain: &str) -> bool {
    let filter = filter.trim();
    let filter = filter.strip_suffix('.').unwrap_or(filter);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if filter.is_empty() || domain.len() < filter.len() {
        return false;
    }
    let (head, tail) = domain.split_at(domain.len() - filter.len());
    tail.eq_ignore_ascii_case(filter) && (head.is_empty() || head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn exceptions_cover_subdomains_of_their_group_and_expire() {
        let clock = ManualClock::new();
        let o = Overrides::new(clock.clone());
        assert_eq!(o.exception_for("g", "x.vendor.example"), None);
        o.add_exception(
            "g",
            "vendor.example",
            Duration::from_secs(60),
            "alice",
            "AV lookups",
        )
        .unwrap();
        assert!(o.exception_for("g", "a.b.vendor.example").is_some());
        assert!(o.exception_for("g", "vendor.example").is_some());
        assert_eq!(o.exception_for("other", "a.vendor.example"), None);
        assert_eq!(o.exception_for("g", "notvendor.example"), None);
        clock.advance(Duration::from_secs(61));
        assert_eq!(o.exception_for("g", "a.vendor.example"), None);
        o.expire();
        assert!(o.exceptions().is_empty());
    }

    /// One entry per group and domain (a second add extends it and keeps its id), removal by
    /// id, and the table kept in a file: a restart takes back the live ones, with the time
    /// they had left, and not the expired ones.
    #[test]
    fn exceptions_are_one_per_domain_removable_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exceptions.json");
        let clock = ManualClock::new();
        let o = Overrides::new(clock.clone());
        assert_eq!(o.persist_at(path.clone()), Ok(0));
        let hour = Duration::from_secs(3600);
        let a = o
            .add_exception("g", "vendor.example", hour, "alice", "AV")
            .unwrap();
        let again = o
            .add_exception("g", "Vendor.Example.", 2 * hour, "bob", "AV, longer")
            .unwrap();
        assert_eq!(again.id, a.id);
        assert_eq!((again.actor.as_str(), o.exceptions().len()), ("bob", 1));
        // A shorter second add does not shorten it.
        let short = o.add_exception("g", "vendor.example", Duration::from_secs(60), "c", "x");
        assert_eq!(short.unwrap().expires, again.expires);
        let other = o
            .add_exception("h", "vendor.example", hour, "alice", "AV")
            .unwrap();
        let brief = o
            .add_exception("g", "brief.example", Duration::from_secs(2), "alice", "x")
            .unwrap();
        assert_ne!(other.id, a.id);
        assert_eq!(o.exceptions().len(), 3);

        // A restart: a new table on a fresh clock, from the file.
        std::thread::sleep(Duration::from_millis(2100));
        let restarted = Overrides::new(ManualClock::new());
        assert_eq!(
            restarted.persist_at(path.clone()),
            Ok(2),
            "the expired one is not taken back"
        );
        assert!(restarted.exception_for("g", "x.vendor.example").is_some());
        assert!(restarted.exception_for("g", "x.brief.example").is_none());
        assert_eq!(restarted.remove_exception(brief.id), None);
        let removed = restarted.remove_exception(a.id).unwrap();
        assert_eq!(removed.domain, "vendor.example");
        assert!(restarted.exception_for("g", "x.vendor.example").is_none());
        assert_eq!(restarted.remove_exception(a.id), None);
        // New ids do not reuse old ones.
        let next = restarted
            .add_exception("g", "new.example", hour, "a", "b")
            .unwrap();
        assert!(next.id > brief.id);
        let third = Overrides::new(ManualClock::new());
        assert_eq!(third.persist_at(path.clone()), Ok(2));
        assert!(third.exception_for("g", "x.vendor.example").is_none());
        assert!(third.exception_for("h", "x.vendor.example").is_some());

        // A file that is not a list is reported; the table starts empty and works.
        std::fs::write(&path, "garbage").unwrap();
        let broken = Overrides::new(ManualClock::new());
        let err = broken.persist_at(path.clone()).unwrap_err();
        assert!(
            err.contains("not an exception list") && err.contains("moved aside"),
            "{err}"
        );
        // What it held is kept for the operator, not overwritten at the next change.
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".bad-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read_to_string(aside[0].path()).unwrap(), "garbage");
        broken
            .add_exception("g", "v.example", hour, "a", "b")
            .unwrap();
        assert_eq!(Overrides::new(ManualClock::new()).persist_at(path), Ok(1));
    }

    #[test]
    fn the_domain_filter_selects_the_name_and_below_on_label_boundaries() {
        assert!(domain_matches("tun.example", "tun.example"));
        assert!(domain_matches("Tun.Example.", "tun.example"));
        assert!(domain_matches("example", "tun.example"));
        assert!(domain_matches("example", "a.b.example."));
        assert!(
            !domain_matches("un.example", "tun.example"),
            "label boundary"
        );
        assert!(
            !domain_matches("c3.tun.example", "tun.example"),
            "not above"
        );
        assert!(!domain_matches("", "tun.example"));
        assert!(!domain_matches(".", "tun.example"));
        assert!(!domain_matches("tun.example", "example"));
    }

    #[test]
    fn the_filter_checks_every_field_given() {
        let alert = AlertEvent {
            client: "127.0.0.61".parse().unwrap(),
            agent: None,
            group: "Agents".into(),
            domain: "tun.example".into(),
            score: 70,
            breakdown: std::collections::BTreeMap::new(),
            window: crate::events::WindowCounts::default(),
            samples: Vec::new(),
            bytes_estimate: 0,
            volume: None,
            action: "alert".into(),
            monitor_only: false,
            exception: None,
        };
        assert!(AlertFilter::default().matches(&alert));
        let all = AlertFilter {
            client: Some(alert.client),
            group: Some("agents".into()),
            domain: Some("example".into()),
            min_score: Some(70),
            ..AlertFilter::default()
        };
        assert!(all.matches(&alert));
        for miss in [
            AlertFilter {
                client: Some("127.0.0.62".parse().unwrap()),
                ..all.clone()
            },
            AlertFilter {
                group: Some("other".into()),
                ..all.clone()
            },
            AlertFilter {
                domain: Some("other.example".into()),
                ..all.clone()
            },
            AlertFilter {
                min_score: Some(71),
                ..all.clone()
            },
        ] {
            assert!(!miss.matches(&alert), "{miss:?}");
        }
    }
}
