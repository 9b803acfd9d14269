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

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::persist::{Restored, move_aside};
use crate::clock::SharedClock;
use crate::config_error::DurationRange;
use crate::events::AlertEvent;
use crate::names::self_and_parents;

/// Most live temporary exceptions.
pub const MAX_EXCEPTIONS: usize = 10_000;
/// Alerts kept in memory for the API.
pub const MAX_RECENT_ALERTS: usize = 10_000;
/// How long an exception may be added for (the admin API's `expires_in`); a restart takes back
/// none with more time left than the longest.
pub const EXCEPTION_TTL: DurationRange =
    DurationRange::new(Duration::from_secs(60), Duration::from_secs(30 * 86_400));

/// Why an exception for `group` and `domain` (normalised, see [`crate::names::normalise`]) by
/// `actor` because of `reason` cannot be added, or `None`. The admin API checks a request with
/// it before anything changes, and [`Overrides::persist_at`] each exception it takes back from
/// its file: an edited file does not put in force what the API refuses. `group_exists` says
/// whether the running policy has the group; `reason_max` bounds the reason (the admin API's
/// reasons are at most [`crate::printable::MAX_FIELD_BYTES`], the review's notes, which become
/// a false positive's exception's reason, a little more).
#[must_use]
pub fn exception_problem(
    group: &str,
    group_exists: bool,
    domain: &str,
    actor: &str,
    reason: &str,
    reason_max: usize,
) -> Option<String> {
    use crate::printable::{MAX_FIELD_BYTES, required_field_problem};
    if let Some(why) = required_field_problem("actor", actor, MAX_FIELD_BYTES)
        .or_else(|| required_field_problem("reason", reason, reason_max))
    {
        return Some(why);
    }
    if !group_exists {
        return Some(format!("group {group:?} does not exist"));
    }
    crate::names::exception_problem(domain).map(|why| format!("domain: {why}"))
}

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
    /// Every id has been given (only a hand-edited `next_id` in the exceptions' file gets
    /// here: one id a millisecond would take half a billion years).
    #[error(
        "no exception ids are left (next_id in the state directory's exceptions.json is at its \
         limit); ids are never reused, so no exception can be added"
    )]
    IdsExhausted,
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
    /// The next id to give, changed under the list's write lock. `u64::MAX` is never given: it
    /// stands for "none left", and adding is then refused ([`OverrideError::IdsExhausted`])
    /// rather than wrapping to ids in use or saturating to one id given twice: ids name
    /// exceptions in the audit log and in removals.
    next_id: AtomicU64,
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
            next_id: AtomicU64::new(1),
            alerts: Mutex::new(VecDeque::new()),
        }
    }

    /// Keep the exceptions in `path` from now on, first taking back the ones it holds that
    /// have not expired (by wall-clock time: the process clock starts again at a restart).
    /// Each is checked as the admin API checks a new one ([`exception_problem`], with
    /// `group_exists` saying whether the running policy has a group, and no more time left
    /// than [`EXCEPTION_TTL`] allows); one that fails, or repeats an id or a group and domain,
    /// is dropped with the reason in [`Restored::dropped`]. A file that cannot be read or
    /// parsed is an error: the caller says so and carries on with none; the file is first
    /// moved aside (`<name>.bad-<unix seconds>`), so what it held is kept for the operator
    /// rather than overwritten at the next change.
    ///
    /// # Errors
    /// The file exists but cannot be read or is not an exception list.
    pub fn persist_at(
        &self,
        path: std::path::PathBuf,
        group_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Restored, String> {
        let restored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Persisted>(&bytes)
                .map_err(|e| format!("{}: not an exception list: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
        let restored = match restored {
            Ok(r) => r,
            Err(why) => {
                let why = move_aside(&path, &why);
                *self.file.lock() = Some(path);
                return Err(why);
            }
        };
        *self.file.lock() = Some(path);
        let reason_max = crate::printable::MAX_FIELD_BYTES.max(crate::review::triage::MAX_NOTE);
        let wall = chrono::Utc::now();
        let now = self.clock.now();
        let mut out = Restored::default();
        let mut list = self.exceptions.write();
        // Ids are never reused, an expired, removed or dropped exception's neither: the audit
        // log names them. The file's `next_id` stands unless an id in it is higher.
        let mut next_id = restored.next_id.max(self.next_id.load(Ordering::Relaxed));
        let mut ids = HashSet::new();
        for mut e in restored.exceptions {
            let what = format!(
                "exception #{} for {} in group {}",
                e.id,
                crate::printable::excerpt(&e.domain, 64),
                crate::printable::excerpt(&e.group, 64)
            );
            if e.id == 0 || e.id == u64::MAX {
                out.dropped
                    .push(format!("{what} dropped: not an id dnsward gives"));
                continue;
            }
            next_id = next_id.max(e.id + 1);
            e.domain = crate::names::normalise(&e.domain);
            let left = match chrono::DateTime::parse_from_rfc3339(&e.expires) {
                Ok(t) => (t.with_timezone(&chrono::Utc) - wall)
                    .to_std()
                    .ok()
                    .filter(|l| !l.is_zero()),
                Err(err) => {
                    out.dropped.push(format!(
                        "{what} dropped: expires is not an RFC 3339 time ({err})"
                    ));
                    continue;
                }
            };
            let Some(left) = left else {
                out.expired += 1;
                continue;
            };
            let why = if !ids.insert(e.id) {
                Some("a second exception with this id".to_string())
            } else if let Some(why) = exception_problem(
                &e.group,
                group_exists(&e.group),
                &e.domain,
                &e.actor,
                &e.reason,
                reason_max,
            ) {
                Some(why)
            } else if let Err(err) = chrono::DateTime::parse_from_rfc3339(&e.created) {
                Some(format!("created is not an RFC 3339 time ({err})"))
            } else if left > EXCEPTION_TTL.max {
                Some(format!(
                    "it expires at {}, more than {} from now",
                    crate::printable::excerpt(&e.expires, 40),
                    humantime::format_duration(EXCEPTION_TTL.max)
                ))
            } else if list
                .iter()
                .any(|x| x.group == e.group && x.domain == e.domain)
            {
                Some("a second exception for this group and domain".to_string())
            } else if list.len() >= MAX_EXCEPTIONS {
                Some(format!("over the limit of {MAX_EXCEPTIONS} exceptions"))
            } else {
                None
            };
            if let Some(why) = why {
                out.dropped.push(format!("{what} dropped: {why}"));
                continue;
            }
            e.until = now.saturating_add(left);
            list.push(e);
        }
        self.next_id.store(next_id, Ordering::Relaxed);
        self.live.store(list.len(), Ordering::Release);
        out.restored = list.len();
        Ok(out)
    }

    /// The list as it will be written, taken while its lock is held (with a generation, so an
    /// older snapshot never overwrites a newer one); `None` without a file.
    fn snapshot(&self, list: &[TempException]) -> Option<(u64, Vec<u8>)> {
        self.file.lock().as_ref()?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        match serde_json::to_vec_pretty(&PersistedRef {
            next_id: self.next_id.load(Ordering::Relaxed),
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
            // Under the list's write lock: nothing else gives an id meanwhile.
            let id = self.next_id.load(Ordering::Relaxed);
            if id == u64::MAX {
                return Err(OverrideError::IdsExhausted);
            }
            self.next_id.store(id + 1, Ordering::Relaxed);
            let e = TempException {
                id,
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
        assert_eq!(
            o.persist_at(path.clone(), &|_| true).map(|r| r.restored),
            Ok(0)
        );
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
            restarted
                .persist_at(path.clone(), &|_| true)
                .map(|r| r.restored),
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
        assert_eq!(
            third
                .persist_at(path.clone(), &|_| true)
                .map(|r| r.restored),
            Ok(2)
        );
        assert!(third.exception_for("g", "x.vendor.example").is_none());
        assert!(third.exception_for("h", "x.vendor.example").is_some());

        // A file that is not a list is reported; the table starts empty and works.
        std::fs::write(&path, "garbage").unwrap();
        let broken = Overrides::new(ManualClock::new());
        let err = broken
            .persist_at(path.clone(), &|_| true)
            .map(|r| r.restored)
            .unwrap_err();
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
        assert_eq!(
            Overrides::new(ManualClock::new())
                .persist_at(path, &|_| true)
                .map(|r| r.restored),
            Ok(1)
        );
    }

    /// What a restart takes back is checked as the admin API checks a new exception: values
    /// it refuses (a single label, more than 30 days, an unknown group, a bad name, control
    /// characters), repeated ids and repeated group and domain are dropped, each with why; the
    /// rest are in force, and new ids come after every id the file names.
    #[test]
    fn a_restart_takes_back_only_exceptions_the_api_would_accept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exceptions.json");
        let wall = |secs: i64| {
            (chrono::Utc::now() + chrono::Duration::seconds(secs))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let ex = |id: u64, group: &str, domain: &str, actor: &str, expires: String| {
            serde_json::json!({"id": id, "group": group, "domain": domain, "actor": actor,
                "reason": "r", "created": wall(-60), "expires": expires})
        };
        let long_note = "a review note of some length. ".repeat(50);
        let mut from_review = ex(9, "agents", "review.example", "alice", wall(3600));
        from_review["reason"] = serde_json::json!(long_note);
        let mut bad_reason = ex(10, "agents", "reason.example", "a", wall(3600));
        bad_reason["reason"] = serde_json::json!("ok\u{7}");
        let file = serde_json::json!({"next_id": 3, "exceptions": [
            ex(4, "agents", "Vendor.Example.", "alice", wall(3600)),
            ex(5, "agents", "com", "a", wall(3600)),
            ex(6, "agents", "x.example", "a", "2099-12-05T04:42:20Z".into()),
            ex(7, "ghost", "y.example", "a", wall(3600)),
            ex(8, "agents", "bad..name", "a", wall(3600)),
            ex(14, "agents", "z.example", "a\u{1b}[31m", wall(3600)),
            from_review,
            bad_reason,
            ex(4, "agents", "other.example", "a", wall(3600)),
            ex(11, "agents", "vendor.example", "bob", wall(3600)),
            ex(12, "agents", "old.example", "a", wall(-10)),
            ex(40, "ghost", "gone.example", "a", wall(3600)),
            ex(u64::MAX, "agents", "max.example", "a", wall(3600)),
            ex(0, "agents", "zero.example", "a", wall(3600)),
            ex(13, "agents", "when.example", "a", "tomorrow".into()),
        ]});
        std::fs::write(&path, file.to_string()).unwrap();
        let o = Overrides::new(ManualClock::new());
        let r = o.persist_at(path.clone(), &|g| g == "agents").unwrap();
        let text = r.dropped.join("\n");
        assert_eq!((r.restored, r.expired), (2, 1), "{text}");
        for why in [
            "#5 for \"com\" in group \"agents\" dropped: domain: \"com\" is a single label",
            "#6 for \"x.example\" in group \"agents\" dropped: it expires at \"2099-12-05T04:42:20Z\", more than 30days from now",
            "#7 for \"y.example\" in group \"ghost\" dropped: group \"ghost\" does not exist",
            "#8 for \"bad..name\" in group \"agents\" dropped: domain: empty label",
            "#14 for \"z.example\" in group \"agents\" dropped: actor contains the control character U+001B",
            "#10 for \"reason.example\" in group \"agents\" dropped: reason contains the control character U+0007",
            "#4 for \"other.example\" in group \"agents\" dropped: a second exception with this id",
            "#11 for \"vendor.example\" in group \"agents\" dropped: a second exception for this group and domain",
            "#40 for \"gone.example\" in group \"ghost\" dropped: group \"ghost\" does not exist",
            "#18446744073709551615 for \"max.example\" in group \"agents\" dropped: not an id dnsward gives",
            "#0 for \"zero.example\" in group \"agents\" dropped: not an id dnsward gives",
            "#13 for \"when.example\" in group \"agents\" dropped: expires is not an RFC 3339 time",
        ] {
            assert!(text.contains(why), "{why:?} in\n{text}");
        }
        assert_eq!(r.dropped.len(), 12, "{text}");
        let live = o.exceptions();
        let ids: Vec<u64> = live.iter().map(|e| e.id).collect();
        assert_eq!(ids, [4, 9], "{live:?}");
        assert_eq!(
            live[0].domain, "vendor.example",
            "normalised as the API does"
        );
        assert!(o.exception_for("agents", "a.vendor.example").is_some());
        assert!(o.exception_for("agents", "x.com").is_none());
        assert!(o.exception_for("ghost", "a.y.example").is_none());
        // Past every id the file names, a dropped one's too (the audit log may name it); the
        // out-of-range id is not one dnsward gave, so it does not count.
        let next = o
            .add_exception("agents", "new.example", Duration::from_secs(60), "a", "b")
            .unwrap();
        assert_eq!(next.id, 41);
    }

    /// Ids never wrap: when the last is given, adding is refused with a clear error (an id
    /// given twice would make removals and the audit log ambiguous).
    #[test]
    fn exception_ids_never_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exceptions.json");
        let expires = (chrono::Utc::now() + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let last = u64::MAX - 1;
        std::fs::write(
            &path,
            serde_json::json!({"next_id": 1, "exceptions": [{"id": last, "group": "g",
                "domain": "a.example", "actor": "a", "reason": "r", "created": expires,
                "expires": expires}]})
            .to_string(),
        )
        .unwrap();
        let o = Overrides::new(ManualClock::new());
        assert_eq!(
            o.persist_at(path.clone(), &|_| true).map(|r| r.restored),
            Ok(1)
        );
        let hour = Duration::from_secs(3600);
        assert_eq!(
            o.add_exception("g", "b.example", hour, "a", "r"),
            Err(OverrideError::IdsExhausted)
        );
        assert!(
            OverrideError::IdsExhausted
                .to_string()
                .contains("no exception ids are left")
        );
        // The one there is can still be extended and removed.
        assert_eq!(
            o.add_exception("g", "a.example", 2 * hour, "a", "r")
                .map(|e| e.id),
            Ok(last)
        );
        assert!(o.remove_exception(last).is_some());
        assert_eq!(
            o.add_exception("g", "b.example", hour, "a", "r"),
            Err(OverrideError::IdsExhausted),
            "and stays refused across a restart"
        );
        let again = Overrides::new(ManualClock::new());
        assert_eq!(again.persist_at(path, &|_| true).map(|r| r.restored), Ok(0));
        assert_eq!(
            again.add_exception("g", "b.example", hour, "a", "r"),
            Err(OverrideError::IdsExhausted)
        );
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
