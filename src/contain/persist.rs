//! Live containments kept across restarts: a quarantined agent is not released by a restart or
//! a crash.
//!
//! With `[store] state_dir`, [`Containment::persist_at`] first takes back the entries the file
//! holds, then keeps the file up to date. It is written whole and atomically (a temporary file
//! and a rename, as the exceptions' file), by [`Containment::save`]: at once for an operator's
//! release or extension, and by the once-a-second upkeep tick for what the query path started
//! and what expired, so a query that starts a containment never waits on the disk (it only
//! counts the change).
//!
//! Times are wall-clock RFC 3339, since the containment clock starts again with the process; an
//! entry comes back with the time it had left and its age. What comes back is checked by the
//! rules entries are made by (a known action, a well-formed domain, a parseable client, at most
//! `max_entries`, no more time left than [`MAX_EXTEND`]); an entry that fails is dropped with
//! the reason, one that expired while dnsward was down is dropped silently, and a file that is
//! not a containment list is moved aside (see [`move_aside`]): never a refusal to start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Containment, EVERY_DOMAIN, Entry, MAX_EXTEND, Tables, publish_active};
use crate::detect::Level;
use crate::identity::ClientKey;

/// What a restart took back from a state file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Entries put back in force.
    pub restored: usize,
    /// Entries that expired while dnsward was down, dropped without a word.
    pub expired: usize,
    /// Entries refused, each with why (the caller logs them).
    pub dropped: Vec<String>,
}

/// Moves a state file that cannot be read or parsed aside (`<name>.bad-<unix seconds>`), so
/// what it held is kept for the operator rather than overwritten at the next change; returns
/// `why` with what became of the file.
#[must_use]
pub fn move_aside(path: &Path, why: &str) -> String {
    let secs = chrono::Utc::now().timestamp();
    let ext = path
        .extension()
        .map_or_else(String::new, |e| format!("{}.", e.to_string_lossy()));
    let aside = path.with_extension(format!("{ext}bad-{secs}"));
    match std::fs::rename(path, &aside) {
        Ok(()) => format!("{why}; moved aside to {}", aside.display()),
        Err(e) => format!("{why}; could not move it aside ({e})"),
    }
}

/// The file: the list, each entry read on its own so one bad entry drops only itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    containments: Vec<serde_json::Value>,
}

/// [`Saved`], written from the tables.
#[derive(Serialize)]
struct SavedRef<'a> {
    containments: &'a [SavedEntry],
}

/// One entry as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedEntry {
    /// The source address (for an agent, where it was last seen). An address-keyed client is
    /// keyed again from it with the configured `ipv6_prefix`, as the query path keys it: an
    /// IPv6 client is contained as its whole /64 (by default) again, and if the prefix was
    /// changed meanwhile the entry follows the new one, which is the key queries and the
    /// release API now compute (a key on the old prefix would match neither).
    client: String,
    /// The verified agent identity it is keyed on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    group: String,
    /// `None` for a quarantine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    /// `throttle`, `sinkhole` or `quarantine`.
    action: String,
    #[serde(default)]
    group_wide: bool,
    score: u8,
    /// RFC 3339.
    started: String,
    /// RFC 3339.
    expires: String,
}

/// Longest agent identity or group name taken back (a SPIFFE ID is at most 2048 bytes).
const MAX_NAME_BYTES: usize = 2048;

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_time(field: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!(
                "{field} {} is not an RFC 3339 time ({e})",
                crate::printable::excerpt(text, 40)
            )
        })
}

impl Containment {
    /// Keep the live containments in `path` from now on, first taking back those it holds
    /// that have not expired (by wall-clock time). `group_exists` says whether the running
    /// policy has a group. A file that cannot be read or parsed is an error: it is moved
    /// aside, the caller says so and carries on with none.
    ///
    /// Call before the listeners start, so no query from a contained client gets through.
    ///
    /// # Errors
    /// The file exists but cannot be read or is not a containment list.
    pub fn persist_at(
        &self,
        path: PathBuf,
        group_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Restored, String> {
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Saved>(&bytes)
                .map_err(|e| format!("{}: not a containment list: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
        let saved = match saved {
            Ok(s) => s,
            Err(why) => {
                let why = move_aside(&path, &why);
                *self.file.lock() = Some(path);
                return Err(why);
            }
        };
        let wall = chrono::Utc::now();
        let now = self.clock.now();
        let mut out = Restored::default();
        let mut entries = Vec::new();
        for (i, value) in saved.containments.into_iter().enumerate() {
            let checked = serde_json::from_value::<SavedEntry>(value)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    let what = describe(&s);
                    self.check(s, wall, now, group_exists)
                        .map_err(|why| format!("{what}: {why}"))
                });
            match checked {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => out.expired += 1,
                Err(why) => out.dropped.push(format!("containment {i} dropped: {why}")),
            }
        }
        // The bound holds as it does live: the entries closest to expiry give way.
        entries.sort_by_key(|e| std::cmp::Reverse(e.until));
        let mut guard = self.tables.write();
        let t = &mut *guard;
        for e in entries {
            let domain = e.domain.as_deref().unwrap_or_default();
            let (taken, key) = match e.level {
                Level::Quarantine => (t.quarantines.contains_key(&e.client), 0),
                _ if e.group_wide => {
                    let key = self.group_key(&e.group, domain);
                    (t.group_domains.contains_key(&key), key)
                }
                _ => {
                    let key = self.client_key(&e.client, domain);
                    (t.client_domains.contains_key(&key), key)
                }
            };
            if taken {
                out.dropped.push(format!(
                    "{} dropped: a second entry for the same client, domain and action",
                    describe_entry(&e)
                ));
                continue;
            }
            if t.len() >= self.cfg.max_entries.max(1) {
                out.dropped.push(format!(
                    "{} dropped: over containment.max_entries ({})",
                    describe_entry(&e),
                    self.cfg.max_entries
                ));
                continue;
            }
            match e.level {
                Level::Quarantine => {
                    t.quarantines.insert(e.client.clone(), e);
                }
                _ if e.group_wide => {
                    t.group_domains.insert(key, e);
                }
                _ => {
                    t.client_domains.insert(key, e);
                }
            }
            out.restored += 1;
        }
        if !out.dropped.is_empty() || out.expired > 0 {
            // The next upkeep tick writes the file without them.
            self.changed();
        }
        self.entries.store(t.len(), Ordering::Release);
        publish_active(t);
        drop(guard);
        *self.file.lock() = Some(path);
        Ok(out)
    }

    /// `s` as a live entry, by the rules entries are made by; `Ok(None)` when it has expired.
    fn check(
        &self,
        s: SavedEntry,
        wall: chrono::DateTime<chrono::Utc>,
        now: Duration,
        group_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Option<Entry>, String> {
        let level = match s.action.as_str() {
            "throttle" => Level::Throttle,
            "sinkhole" => Level::Sinkhole,
            "quarantine" => Level::Quarantine,
            other => {
                return Err(format!(
                    "unknown action {}",
                    crate::printable::excerpt(other, 24)
                ));
            }
        };
        let addr: IpAddr = s.client.parse().map_err(|_| {
            format!(
                "client {} is not an IP address",
                crate::printable::excerpt(&s.client, 48)
            )
        })?;
        let client = match &s.agent {
            Some(agent) => {
                if let Some(why) =
                    crate::printable::required_field_problem("agent", agent, MAX_NAME_BYTES)
                {
                    return Err(why);
                }
                ClientKey::agent(agent, addr)
            }
            None => ClientKey::address(addr, self.cfg.ipv6_prefix),
        };
        if let Some(why) =
            crate::printable::required_field_problem("group", &s.group, MAX_NAME_BYTES)
        {
            return Err(why);
        }
        match (level, s.domain.as_deref()) {
            (Level::Quarantine, Some(_)) => return Err("a quarantine names no domain".into()),
            (Level::Quarantine, None) => {}
            (_, None) => return Err(format!("a {} names a domain", level.as_str())),
            (_, Some(EVERY_DOMAIN)) if s.group_wide => {
                return Err("a containment of every domain is never group-wide".into());
            }
            (_, Some(EVERY_DOMAIN)) => {}
            (_, Some(d)) => {
                if let Some(why) = crate::names::query_name_problem(d) {
                    return Err(format!("domain: {why}"));
                }
            }
        }
        if s.group_wide && level != Level::Sinkhole {
            return Err(format!("a {} is never group-wide", level.as_str()));
        }
        if s.score > 100 {
            return Err(format!("score {} is over 100", s.score));
        }
        // A group-wide sinkhole of a group the policy no longer has is dropped: it is keyed on
        // the group's name and covers no client now, and a group added later under that name
        // is another group. An entry on one client stays, whatever became of its group: it is
        // kept under the client, who is contained for what it did, and an edit of the groups
        // must not release a tunnelling agent (the name stays in the API as it was).
        if s.group_wide && !group_exists(&s.group) {
            return Err(format!(
                "group {:?} is no longer in the policy, so its group-wide sinkhole covers no one",
                s.group
            ));
        }
        let expires = parse_time("expires", &s.expires)?;
        let started = parse_time("started", &s.started)?;
        if started > expires {
            return Err("it started after it expires".into());
        }
        let Ok(left) = (expires - wall).to_std() else {
            return Ok(None);
        };
        if left.is_zero() {
            return Ok(None);
        }
        if left > MAX_EXTEND {
            return Err(format!(
                "it expires at {}, more than {} from now (the longest a containment lasts)",
                s.expires,
                humantime::format_duration(MAX_EXTEND)
            ));
        }
        let carried = (wall - started).to_std().unwrap_or(Duration::ZERO);
        Ok(Some(Entry {
            client,
            group: s.group,
            domain: s.domain,
            level,
            group_wide: s.group_wide,
            score: s.score,
            started: now,
            carried,
            until: now.saturating_add(left),
        }))
    }

    /// Whether there are changes the file does not hold yet (the upkeep tick then calls
    /// [`Self::save`] off the async runtime).
    #[must_use]
    pub fn save_pending(&self) -> bool {
        self.changes.load(Ordering::Acquire) != self.saved.load(Ordering::Acquire)
    }

    /// Write the live entries to the file, whole and atomically, if they changed since the
    /// last write; does nothing without a file. Blocks on the disk: call it off the async
    /// runtime. A failure is logged and the entries stay in force in memory; the next change
    /// writes again.
    pub fn save(&self) {
        if !self.save_pending() {
            return;
        }
        let file = self.file.lock();
        let (generation, list) = {
            let t = self.tables.read();
            let generation = self.changes.load(Ordering::Acquire);
            let list = file.as_ref().map(|_| self.snapshot(&t));
            (generation, list)
        };
        let (Some(path), Some(list)) = (file.as_deref(), list) else {
            self.saved.store(generation, Ordering::Release);
            return;
        };
        if generation == self.saved.load(Ordering::Acquire) {
            return;
        }
        let written = serde_json::to_vec_pretty(&SavedRef {
            containments: &list,
        })
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::config_error::write_file_atomic(path, &bytes));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "containments not saved: a restart now would lose the changes since the last write");
        }
        self.saved.store(generation, Ordering::Release);
    }

    /// The live entries as written, wall-clock times taken now.
    fn snapshot(&self, t: &Tables) -> Vec<SavedEntry> {
        let now = self.clock.now();
        let wall = chrono::Utc::now();
        let at = |d: Duration, ahead: bool| {
            let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
            let t = if ahead {
                wall.checked_add_signed(d)
            } else {
                wall.checked_sub_signed(d)
            };
            rfc3339(t.unwrap_or(wall))
        };
        t.quarantines
            .values()
            .chain(t.client_domains.values())
            .chain(t.group_domains.values())
            .filter(|e| e.live(now))
            .map(|e| SavedEntry {
                client: e.client.addr.to_string(),
                agent: e.client.agent_name().map(str::to_string),
                group: e.group.clone(),
                domain: e.domain.clone(),
                action: e.level.as_str().to_string(),
                group_wide: e.group_wide,
                score: e.score,
                started: at(e.age(now), false),
                // Rounded up to the second: never released early by the rounding.
                expires: at(
                    e.until
                        .saturating_sub(now)
                        .saturating_add(Duration::from_millis(999)),
                    true,
                ),
            })
            .collect()
    }
}

/// A short description of an entry read from the file, for a warning.
fn describe(s: &SavedEntry) -> String {
    format!(
        "{} of {} on {}",
        crate::printable::excerpt(&s.action, 24),
        crate::printable::excerpt(s.agent.as_deref().unwrap_or(&s.client), 64),
        crate::printable::excerpt(s.domain.as_deref().unwrap_or("every domain"), 64),
    )
}

fn describe_entry(e: &Entry) -> String {
    format!(
        "{} of {} on {}",
        e.level.as_str(),
        crate::printable::excerpt(&e.client.to_string(), 64),
        crate::printable::excerpt(e.domain.as_deref().unwrap_or("every domain"), 64),
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;
    use crate::contain::{ClientGate, ContainConfig, DomainGate, SinkholeScope};

    fn ip(n: u8) -> ClientKey {
        ClientKey::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
    }

    fn v6(a: &str) -> ClientKey {
        ClientKey::from(a.parse::<IpAddr>().unwrap())
    }

    fn group_scope() -> ContainConfig {
        ContainConfig {
            sinkhole_scope: SinkholeScope::Group,
            ..ContainConfig::default()
        }
    }

    fn every_group(_: &str) -> bool {
        true
    }

    /// A process's containment on `path`, as a restart makes it: a fresh clock, the file read.
    fn restart(cfg: &ContainConfig, path: &Path) -> (Containment, Arc<ManualClock>, Restored) {
        let clock = ManualClock::new();
        let c = Containment::new(cfg, clock.clone());
        let r = c
            .persist_at(path.to_path_buf(), &|g| g == "agents")
            .unwrap_or_else(|e| panic!("{e}"));
        (c, clock, r)
    }

    fn wall_in(secs: i64) -> String {
        rfc3339(chrono::Utc::now() + chrono::Duration::seconds(secs))
    }

    /// Every kind of entry comes back from the file with the time it had left and its age, and
    /// behaves as it did: refused, sinkholed (for the client, for its group, on every domain),
    /// throttled; listed; released for good.
    #[test]
    fn live_containments_survive_a_restart_with_their_time_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containments.json");
        let cfg = group_scope();
        let (c, clock, r) = restart(&cfg, &path);
        assert_eq!(r, Restored::default(), "no file yet");
        let agent = ClientKey::agent("spiffe://t/agents/a", "10.0.0.3".parse().unwrap());
        assert!(
            c.start(&ip(1), "agents", "tun.example", Level::Quarantine, 95)
                .is_some()
        );
        assert!(
            c.start(&ip(2), "agents", "tun2.example", Level::Sinkhole, 85)
                .is_some()
        );
        assert!(
            c.start_because(&ip(4), "agents", EVERY_DOMAIN, Level::Sinkhole, 100, None)
                .is_some()
        );
        // A name with a byte the query path escapes.
        assert!(
            c.start(&agent, "agents", "a\\046b.example", Level::Throttle, 72)
                .is_some()
        );
        assert!(
            c.start(
                &v6("2001:db8:7::1"),
                "agents",
                "t.example",
                Level::Quarantine,
                91
            )
            .is_some()
        );
        // The query path only counts the change; the upkeep tick writes.
        assert!(c.save_pending());
        assert!(!path.exists(), "no write on the query path");
        clock.advance(Duration::from_secs(300));
        c.save();
        assert!(!c.save_pending());
        let before = c.active();
        assert_eq!(before.len(), 5);

        let (c2, clock2, r) = restart(&cfg, &path);
        assert_eq!((r.restored, r.expired, r.dropped.len()), (5, 0, 0), "{r:?}");
        let after = c2.active();
        assert_eq!(after.len(), 5);
        for (a, b) in before.iter().zip(&after) {
            assert_eq!(
                (a.client, &a.agent, &a.group, &a.domain, a.action),
                (b.client, &b.agent, &b.group, &b.domain, b.action)
            );
            assert_eq!((a.group_wide, a.score), (b.group_wide, b.score));
            assert!(
                a.expires_in_secs.abs_diff(b.expires_in_secs) <= 2,
                "{a:?} {b:?}"
            );
            assert!(a.age_secs.abs_diff(b.age_secs) <= 2, "{a:?} {b:?}");
        }
        assert_eq!(c2.check_client(&ip(1)), ClientGate::Quarantined);
        assert_eq!(c2.check_client(&ip(5)), ClientGate::Pass);
        assert_eq!(
            c2.check_client(&v6("2001:db8:7::ffff:2")),
            ClientGate::Quarantined,
            "the whole /64 again"
        );
        assert_eq!(c2.check_client(&v6("2001:db8:8::1")), ClientGate::Pass);
        assert_eq!(
            c2.check_domain(&ip(9), "agents", "tun2.example"),
            DomainGate::Sinkholed,
            "group-wide"
        );
        assert_eq!(
            c2.check_domain(&ip(4), "agents", "any.example"),
            DomainGate::Sinkholed,
            "every domain"
        );
        let moved = ClientKey::agent("spiffe://t/agents/a", "10.0.0.99".parse().unwrap());
        let passed = (0..20)
            .filter(|_| c2.check_domain(&moved, "agents", "a\\046b.example") == DomainGate::Pass)
            .count();
        assert_eq!(passed, 5, "the agent is throttled wherever it is");

        // A release is written at once: it stays released after the next restart.
        assert_eq!(c2.release(&ip(1), "alice", "fixed").len(), 1);
        assert!(!c2.save_pending());
        let (c3, _, r) = restart(&cfg, &path);
        assert_eq!(r.restored, 4);
        assert_eq!(c3.check_client(&ip(1)), ClientGate::Pass);
        // Expiry ends restored entries as it ends live ones, and is written by the next save.
        clock2.advance(Duration::from_secs(3600));
        assert_eq!(c2.expire_due().len(), 4);
        assert!(c2.save_pending());
        c2.save();
        let (c4, _, r) = restart(&cfg, &path);
        assert_eq!(r, Restored::default());
        assert!(c4.active().is_empty());
    }

    /// What a restart takes back is checked as entries are made: each bad one is dropped with
    /// why, expired ones silently, and the rest are in force.
    #[test]
    fn a_restart_drops_entries_that_could_not_have_been_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containments.json");
        let ok = |client: &str, action: &str, domain: Option<&str>| {
            json!({"client": client, "group": "agents", "domain": domain, "action": action,
                   "score": 90, "started": wall_in(-60), "expires": wall_in(3600)})
        };
        let with = |mut v: serde_json::Value, k: &str, x: serde_json::Value| {
            v[k] = x;
            v
        };
        let entries = vec![
            ok("10.0.0.1", "quarantine", None),
            with(
                ok("10.0.0.2", "quarantine", None),
                "expires",
                json!(wall_in(-5)),
            ),
            ok("10.0.0.3", "ban", Some("x.example")),
            ok("not-an-address", "quarantine", None),
            ok("10.0.0.4", "sinkhole", Some("bad..name")),
            ok("10.0.0.4", "sinkhole", Some("a\u{1b}[31m.example")),
            ok("10.0.0.5", "quarantine", Some("x.example")),
            ok("10.0.0.5", "throttle", None),
            with(
                ok("10.0.0.6", "quarantine", None),
                "expires",
                json!("2099-12-05T04:42:20Z"),
            ),
            with(ok("10.0.0.6", "quarantine", None), "expires", json!("soon")),
            with(
                ok("10.0.0.7", "quarantine", None),
                "agent",
                json!("a\u{1b}[2J"),
            ),
            with(ok("10.0.0.7", "quarantine", None), "score", json!(200)),
            with(ok("10.0.0.7", "quarantine", None), "score", json!("high")),
            with(ok("10.0.0.7", "quarantine", None), "colour", json!("red")),
            with(
                ok("10.0.0.7", "throttle", Some("x.example")),
                "group_wide",
                json!(true),
            ),
            ok("10.0.0.1", "quarantine", None),
            // A group-wide sinkhole of a group gone from the policy covers no one: dropped. A
            // containment of one client of that group stays: it is the client's.
            with(
                with(
                    ok("10.0.0.8", "sinkhole", Some("gone.example")),
                    "group_wide",
                    json!(true),
                ),
                "group",
                json!("ghost"),
            ),
            with(
                ok("10.0.0.9", "sinkhole", Some("kept.example")),
                "group",
                json!("ghost"),
            ),
            with(
                ok("10.0.0.10", "sinkhole", Some("all.example")),
                "group_wide",
                json!(true),
            ),
        ];
        std::fs::write(&path, json!({ "containments": entries }).to_string()).unwrap();
        let (c, _, r) = restart(&ContainConfig::default(), &path);
        let text = r.dropped.join("\n");
        assert_eq!((r.restored, r.expired), (3, 1), "{text}");
        for why in [
            "unknown action \"ban\"",
            "client \"not-an-address\" is not an IP address",
            "domain: empty label",
            "domain: character \"\\u001b\" is not allowed",
            "a quarantine names no domain",
            "a throttle names a domain",
            "more than 30days from now",
            "expires \"soon\" is not an RFC 3339 time",
            "agent contains the control character U+001B",
            "score 200 is over 100",
            "invalid type",
            "unknown field `colour`",
            "a throttle is never group-wide",
            "a second entry for the same client",
            "group \"ghost\" is no longer in the policy",
        ] {
            assert!(text.contains(why), "{why:?} in\n{text}");
        }
        assert_eq!(r.dropped.len(), 15, "{text}");
        assert_eq!(c.check_client(&ip(1)), ClientGate::Quarantined);
        assert_eq!(c.check_client(&ip(6)), ClientGate::Pass);
        assert_eq!(
            c.check_domain(&ip(9), "ghost", "kept.example"),
            DomainGate::Sinkholed
        );
        assert_eq!(
            c.check_domain(&ip(11), "agents", "all.example"),
            DomainGate::Sinkholed
        );
        assert_eq!(
            c.check_domain(&ip(11), "ghost", "gone.example"),
            DomainGate::Pass
        );
        // The file is written again without what was dropped.
        assert!(c.save_pending());
        c.save();
        let (_, _, r) = restart(&ContainConfig::default(), &path);
        assert_eq!((r.restored, r.expired, r.dropped.len()), (3, 0, 0), "{r:?}");
    }

    /// At most `max_entries` come back, those with the most time left; a file that is not a
    /// list is moved aside and the table starts empty and works.
    #[test]
    fn the_bound_holds_and_a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containments.json");
        let entries: Vec<_> = (0..20)
            .map(|i| {
                json!({"client": format!("10.0.1.{i}"), "group": "agents", "domain": "t.example",
                       "action": "throttle", "score": 70, "started": wall_in(-60),
                       "expires": wall_in(600 + i * 60)})
            })
            .collect();
        std::fs::write(&path, json!({ "containments": entries }).to_string()).unwrap();
        let cfg = ContainConfig {
            max_entries: 16,
            ..ContainConfig::default()
        };
        let (c, _, r) = restart(&cfg, &path);
        assert_eq!((r.restored, r.dropped.len()), (16, 4), "{r:?}");
        assert!(r.dropped[0].contains("max_entries"), "{r:?}");
        let kept: Vec<_> = c.active().iter().map(|a| a.client.to_string()).collect();
        assert!(!kept.contains(&"10.0.1.3".to_string()), "{kept:?}");
        assert!(kept.contains(&"10.0.1.4".to_string()), "{kept:?}");

        std::fs::write(&path, "{\"containments\": [").unwrap();
        let c = Containment::new(&cfg, ManualClock::new());
        let err = c.persist_at(path.clone(), &every_group).unwrap_err();
        assert!(
            err.contains("not a containment list") && err.contains("moved aside"),
            "{err}"
        );
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("containments.json.bad-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(c.active().is_empty());
        c.start(&ip(1), "agents", "t.example", Level::Quarantine, 95);
        c.save();
        let (c, _, r) = restart(&cfg, &path);
        assert_eq!(r.restored, 1);
        assert_eq!(c.check_client(&ip(1)), ClientGate::Quarantined);
    }

    #[test]
    fn without_a_file_nothing_is_written_and_nothing_stays_pending() {
        let c = Containment::new(&ContainConfig::default(), ManualClock::new());
        c.start(&ip(1), "agents", "t.example", Level::Quarantine, 95);
        assert!(c.save_pending());
        c.save();
        assert!(!c.save_pending());
    }
}
