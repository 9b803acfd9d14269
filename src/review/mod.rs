//! Human review (issue 12): named users with roles, triage of suspects with a durable record,
//! the JSON API under `/api/v1/review/` that the console and `dnsward review` use.
//!
//! - [`users`]: the tokens file, roles and the one role check, [`users::require`].
//! - [`triage`]: open → acknowledged → confirmed | false positive | released, durable in
//!   `state_dir/review/triage.jsonl`.
//! - [`log`]: timelines and the agents view, read from the event log.
//! - [`api`]: the HTTP endpoints (and the console assets of [`crate::admin::console`]).
//! - [`api_error`]: the JSON error answer shared with the admin API.
//! - [`cli`]: `dnsward review …` over the API.
//!
//! A transition's side effects happen in the same action: "false positive" adds a scoped
//! exception (this registrable domain, this group, N days) and releases the client; "released"
//! releases; "confirmed" may extend the containment and may propose adding the domain to the group's
//! deny list: a new policy version in the store with the analyst as author and status
//! `proposed`, which runs only when an admin applies it (never applied silently). Each
//! transition is one `admin` event in the hash-chained event log naming the user.

pub mod api;
pub mod api_error;
pub mod cli;
pub mod containment_log;
pub mod log;
pub mod suspects;
pub mod triage;
pub mod users;

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::admin::token::AdminToken;
use crate::config_error::ConfigProblems;
use crate::contain::overrides::{AlertFilter, RecentAlert};
use crate::events::sink::SinkKind;
use crate::events::{Event, EventBody};
use crate::govern::control::Control;
use crate::review::suspects::{self as analyst, AlertsQuery, Suspect};
use crate::serve::pipeline::Pipeline;
use triage::{SuspectKey, Transition, TriageError, TriageRecord, TriageState, TriageStore};
use users::{User, Users};

/// Default length of a false positive's exception, in days.
pub const DEFAULT_EXCEPTION_DAYS: u32 = 7;
/// Longest exception a false positive may add, in days (the overrides' own bound).
pub const MAX_EXCEPTION_DAYS: u32 = 30;
/// Most proposals listed (newest first).
pub const MAX_PROPOSALS: usize = 1000;

/// Why the review could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReviewOpenError {
    /// The tokens file has problems.
    #[error("{0}")]
    Users(#[from] ConfigProblems),
    /// The triage store cannot be opened.
    #[error("opening the triage store in {}: {source}", path.display())]
    Store {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why a triage action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The input is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No alert names this suspect.
    #[error("no alert for {0} on {1}")]
    Unknown(IpAddr, String),
    /// The workflow refused the step.
    #[error(transparent)]
    Triage(#[from] TriageError),
    /// An exception could not be added.
    #[error("{0}")]
    Conflict(String),
}

/// A triage action as asked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// The state to move to (not `open`).
    pub to: TriageState,
    /// Why (required, at most 2000 bytes).
    pub note: String,
    /// The state the asker saw; a different current state is refused (409).
    #[serde(default)]
    pub expect: Option<TriageState>,
    /// False positive: exception length in days (default 7, 1–30).
    #[serde(default)]
    pub exception_days: Option<u32>,
    /// Confirmed: make the containment last at least this long from now (e.g. `24h`).
    #[serde(default)]
    pub extend: Option<String>,
    /// Confirmed: write a proposal to add the domain to the group's deny list.
    #[serde(default)]
    pub propose_deny: bool,
}

/// A suspect as the queue shows it.
#[derive(Debug, Clone, Serialize)]
pub struct QueueItem {
    /// From the event log (score, breakdown, samples, counts).
    #[serde(flatten)]
    pub suspect: Suspect,
    /// Triage state.
    pub state: TriageState,
    /// Who moved it last, when.
    pub last_step: Option<Transition>,
    /// Active containments of the client that cover this domain (live, from the tables).
    pub active: Vec<crate::contain::ActiveContainment>,
}

/// The review: users, triage records, and what it needs to act.
pub struct Review {
    pipeline: Arc<Pipeline>,
    control: Arc<Control>,
    users: RwLock<Users>,
    tokens_file: Option<PathBuf>,
    /// `admin.token_file`'s token, user `admin`: the admin API's own, so one reload rotates it
    /// for both.
    admin_token: Option<Arc<AdminToken>>,
    triage: TriageStore,
    events_path: Option<PathBuf>,
    /// One transition at a time, so two analysts acting at once cannot both do a step's side
    /// effects (the second sees the first's state and is refused).
    acting: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for Review {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Review")
            .field("triage", &self.triage.path())
            .field("events_path", &self.events_path)
            .finish_non_exhaustive()
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Write `bytes` to `dir/name` atomically ([`crate::config_error::write_file_atomic`]).
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    crate::config_error::write_file_atomic(&dir.join(name), bytes)
}

/// The parts of the configuration the review reads (the composed configuration lends them;
/// the review never imports it, since `config` composes `admin`, which mounts the review).
#[derive(Debug, Clone, Copy)]
pub struct ReviewSections<'a> {
    /// `admin.tokens_file`: named users.
    pub tokens_file: Option<&'a Path>,
    /// `admin.token_file`'s token as the admin API holds it: user `admin`.
    pub admin_token: Option<&'a Arc<AdminToken>>,
    /// `[store]`: where triage records live.
    pub store: Option<&'a crate::govern::store::StoreConfig>,
    /// `[events]`: where the log is.
    pub events: &'a crate::events::sink::EventsConfig,
}

impl Review {
    /// Open the review for a running dnsward: users from `admin.tokens_file` and
    /// `admin.token_file`, triage records from `store.state_dir/review/` (in memory without a
    /// store), the event log from `events.path`.
    ///
    /// # Errors
    /// The tokens file has problems or the state directory cannot be used.
    pub fn open(
        sections: ReviewSections<'_>,
        pipeline: Arc<Pipeline>,
        control: Arc<Control>,
    ) -> Result<Self, ReviewOpenError> {
        let tokens_file = sections.tokens_file.map(Path::to_path_buf);
        let admin_token = sections.admin_token.cloned();
        let users = Users::load(
            tokens_file.as_deref(),
            admin_token.as_ref().and_then(|t| t.digest()),
        )?;
        let triage = match sections.store {
            Some(store) => {
                let dir = store.state_dir.join("review");
                let triage = TriageStore::open(&dir).map_err(|source| ReviewOpenError::Store {
                    path: dir.clone(),
                    source,
                })?;
                if triage.skipped_on_open() > 0 {
                    tracing::warn!(
                        skipped = triage.skipped_on_open(),
                        "triage.jsonl: skipped lines that are not records (an interrupted write)"
                    );
                }
                triage
            }
            None => TriageStore::in_memory(),
        };
        let events_path = (sections.events.sink == SinkKind::File)
            .then(|| sections.events.path.clone())
            .flatten();
        Ok(Self {
            pipeline,
            control,
            users: RwLock::new(users),
            tokens_file,
            admin_token,
            triage,
            events_path,
            acting: parking_lot::Mutex::new(()),
        })
    }

    /// The user a bearer token belongs to.
    #[must_use]
    pub fn authenticate(&self, token: &str) -> Option<User> {
        // Both are looked at whatever the token, so which one matched does not show in time.
        let admin = self.admin_token.as_ref().is_some_and(|t| t.matches(token));
        let user = self.users.read().authenticate(token);
        if admin { Some(legacy_admin()) } else { user }
    }

    /// Whether any token is configured (otherwise every call is 401).
    #[must_use]
    pub fn has_users(&self) -> bool {
        self.admin_token.as_ref().is_some_and(|t| t.is_enabled()) || !self.users.read().is_empty()
    }

    /// Re-read the tokens file and the admin token, checking both before either changes; on
    /// problems the old users and the old admin token stay.
    ///
    /// # Errors
    /// The problems of the new files.
    pub fn reload_users(&self) -> Result<Vec<User>, ConfigProblems> {
        let token = match self.admin_token.as_ref().map(|t| t.read()).transpose() {
            Ok(t) => t.flatten(),
            Err(e) => {
                let mut p = ConfigProblems::default();
                p.push("admin.token_file", e);
                return Err(p);
            }
        };
        // A token held without a file (embedding, tests) is checked against the users too.
        let admin_digest = token
            .as_deref()
            .map(crate::review::users::hash_token)
            .or_else(|| self.admin_token.as_ref().and_then(|t| t.digest()));
        let users = Users::load(self.tokens_file.as_deref(), admin_digest)?;
        if let (Some(holder), Some(token)) = (&self.admin_token, &token) {
            holder.install(token);
        }
        *self.users.write() = users;
        Ok(self.users())
    }

    /// Whether `token` is some user's in the tokens file: the admin token must not be (it
    /// would give that user the admin role, and the next start would refuse the files).
    #[must_use]
    pub fn is_a_users_token(&self, token: &str) -> bool {
        self.users
            .read()
            .holds(&crate::review::users::hash_token(token))
    }

    /// Every user (names and roles), the admin token's first.
    #[must_use]
    pub fn users(&self) -> Vec<User> {
        let mut list = Vec::new();
        if self.admin_token.as_ref().is_some_and(|t| t.is_enabled()) {
            list.push(legacy_admin());
        }
        list.extend(self.users.read().list());
        list
    }

    /// The pipeline.
    #[must_use]
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Policy lifecycle.
    #[must_use]
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Where triage records are kept (`None`: memory only).
    #[must_use]
    pub fn triage_path(&self) -> Option<&Path> {
        self.triage.path()
    }

    fn event_files(&self) -> Vec<PathBuf> {
        self.events_path
            .as_deref()
            .map(crate::events::reader::rotated_files)
            .unwrap_or_default()
    }

    /// Suspects from the event log (`events.sink = "file"`; otherwise from the alerts kept in
    /// memory since start), with their triage state, highest score first.
    #[must_use]
    pub fn suspects(&self, client: Option<IpAddr>, domain: Option<&str>) -> Vec<QueueItem> {
        let q = AlertsQuery {
            client,
            domain: domain.map(str::to_string),
            ..AlertsQuery::default()
        };
        let suspects = if self.events_path.is_some() {
            analyst::load_alerts(&self.event_files(), &q, chrono::Utc::now()).unwrap_or_default()
        } else {
            // No log file to read (`events.sink` is stdout or none): the alerts kept in memory
            // since start, folded the same way.
            fold_recent(self.pipeline.overrides().alerts(&AlertFilter {
                client,
                domain: domain.map(str::to_string),
                limit: Some(crate::contain::overrides::MAX_RECENT_ALERTS),
                ..AlertFilter::default()
            }))
        };
        let active = self.pipeline.containment().active();
        suspects
            .into_iter()
            .filter(|s| domain.is_none_or(|d| s.domain == d))
            .map(|s| {
                let key = SuspectKey {
                    client: s.client,
                    domain: s.domain.clone(),
                };
                let record = self.triage.get(&key);
                let mut state = record.as_ref().map_or(TriageState::Open, |r| r.state);
                let last_step = record.and_then(|r| r.history.last().cloned());
                // A released suspect that alerts again after its release is open again.
                if state == TriageState::Released
                    && last_step.as_ref().is_some_and(|t| {
                        chrono::DateTime::parse_from_rfc3339(&t.at)
                            .is_ok_and(|at| s.last_seen > at + chrono::Duration::seconds(1))
                    })
                {
                    state = TriageState::Open;
                }
                let active = active
                    .iter()
                    .filter(|c| {
                        c.client == s.client && c.domain.as_deref().is_none_or(|d| d == s.domain)
                    })
                    .cloned()
                    .collect();
                QueueItem {
                    suspect: s,
                    state,
                    last_step,
                    active,
                }
            })
            .collect()
    }

    /// One suspect with its triage record and timeline.
    #[must_use]
    pub fn suspect(
        &self,
        client: IpAddr,
        domain: &str,
    ) -> Option<(QueueItem, Option<TriageRecord>, log::Timeline)> {
        let item = self
            .suspects(Some(client), Some(domain))
            .into_iter()
            .next()?;
        let record = self.triage.get(&SuspectKey {
            client,
            domain: domain.to_string(),
        });
        let timeline = log::timeline(&self.event_files(), client, domain);
        Some((item, record, timeline))
    }

    /// The agents view: per client from the event log, with its live containments.
    #[must_use]
    pub fn agents(&self) -> serde_json::Value {
        let active = self.pipeline.containment().active();
        let agents: Vec<serde_json::Value> = log::agents(&self.event_files())
            .into_iter()
            .map(|a| {
                let mine: Vec<_> = active
                    .iter()
                    .filter(|c| c.client.to_string() == a.client)
                    .collect();
                let mut v = serde_json::to_value(&a).unwrap_or_default();
                v["active"] = serde_json::to_value(mine).unwrap_or_default();
                v
            })
            .collect();
        serde_json::json!({ "agents": agents, "active": active })
    }

    /// Move a suspect, doing the step's side effects in the same action. Returns the recorded
    /// transition.
    ///
    /// # Errors
    /// Bad input, an unknown suspect, a step the workflow refuses, or a failed write.
    pub fn transition(
        &self,
        user: &User,
        client: IpAddr,
        domain: &str,
        req: &TransitionRequest,
    ) -> Result<Transition, ActionError> {
        let client = crate::policy::identify::canonical(client);
        let domain = crate::names::normalise(domain);
        let note = req.note.trim();
        if note.is_empty() {
            return Err(ActionError::Invalid("note must not be empty".into()));
        }
        if note.len() > triage::MAX_NOTE {
            return Err(ActionError::Invalid(format!(
                "note is longer than {} bytes",
                triage::MAX_NOTE
            )));
        }
        if let Some(why) = crate::printable::rejected_char(note, true) {
            return Err(ActionError::Invalid(format!("note {why}")));
        }
        if req.to == TriageState::Open {
            return Err(ActionError::Invalid(
                "to must be acknowledged, confirmed, false_positive or released".into(),
            ));
        }
        let days = req.exception_days.unwrap_or(DEFAULT_EXCEPTION_DAYS);
        if !(1..=MAX_EXCEPTION_DAYS).contains(&days) {
            return Err(ActionError::Invalid(format!(
                "exception_days must be between 1 and {MAX_EXCEPTION_DAYS}"
            )));
        }
        let extend = req
            .extend
            .as_deref()
            .map(|t| {
                humantime::parse_duration(t)
                    .ok()
                    .filter(|d| *d >= Duration::from_secs(60) && *d <= crate::contain::MAX_EXTEND)
                    .ok_or_else(|| {
                        ActionError::Invalid(format!(
                            "extend: {t:?} is not a duration between 1m and 30d"
                        ))
                    })
            })
            .transpose()?;
        if (extend.is_some() || req.propose_deny) && req.to != TriageState::Confirmed {
            return Err(ActionError::Invalid(
                "extend and propose_deny go with to = confirmed".into(),
            ));
        }
        let _one_at_a_time = self.acting.lock();
        let item = self
            .suspects(Some(client), Some(&domain))
            .into_iter()
            .next()
            .ok_or_else(|| ActionError::Unknown(client, domain.clone()))?;
        let group = item.suspect.group.clone();
        let key = SuspectKey {
            client,
            domain: domain.clone(),
        };
        // The queue's view: a released suspect alerting again is open.
        let from = item.state;
        if !from.allows(req.to) {
            return Err(TriageError::NotAllowed { from, to: req.to }.into());
        }
        if let Some(expect) = req.expect
            && expect != from
        {
            return Err(TriageError::Stale {
                expected: expect,
                actual: from,
            }
            .into());
        }
        let stored_from = self.triage.state(&key);
        let mut effects = Vec::new();
        let version = self.pipeline.policy().version.number;
        let release = |effects: &mut Vec<String>| {
            let ended = self
                .pipeline
                .release(&self.pipeline.client_key(client), &user.name, note);
            for e in &ended {
                effects.push(format!(
                    "released {} {}",
                    e.action,
                    e.domain.as_deref().unwrap_or("(whole client)")
                ));
                self.pipeline
                    .events()
                    .emit(Event::now(version, EventBody::ContainmentEnded(e.clone())));
            }
        };
        match req.to {
            TriageState::FalsePositive => {
                if let Some(why) = crate::names::exception_problem(&domain) {
                    return Err(ActionError::Invalid(format!(
                        "no exception can be made for this suspect's domain: {why}"
                    )));
                }
                let e = self
                    .pipeline
                    .overrides()
                    .add_exception(
                        &group,
                        &domain,
                        Duration::from_secs(u64::from(days) * 86_400),
                        &user.name,
                        note,
                    )
                    .map_err(|e| ActionError::Conflict(e.to_string()))?;
                effects.push(format!(
                    "exception #{} for {} in group {} until {}",
                    e.id, e.domain, e.group, e.expires
                ));
                release(&mut effects);
            }
            TriageState::Released => release(&mut effects),
            TriageState::Confirmed => {
                if req.propose_deny {
                    // A proposed policy version, authored by the analyst; it runs only when an
                    // admin applies it. First, so that a refused proposal changes nothing.
                    let v = self
                        .control
                        .propose_deny(&group, &domain, &user.name, note)
                        .map_err(|e| ActionError::Conflict(e.to_string()))?;
                    effects.push(format!(
                        "proposed policy version {} to deny {domain} in group {group} (apply: dnsward policy apply {})",
                        v.number, v.number
                    ));
                }
                if let Some(by) = extend {
                    let n = self.pipeline.containment().extend(
                        &self.pipeline.client_key(client),
                        &domain,
                        by,
                    );
                    effects.push(format!(
                        "extended {n} containments to at least {}",
                        humantime::format_duration(by)
                    ));
                }
            }
            TriageState::Acknowledged | TriageState::Open => {}
        }
        let t = Transition {
            key,
            group,
            from: stored_from,
            to: req.to,
            user: user.name.clone(),
            at: now_rfc3339(),
            note: note.to_string(),
            effects,
        };
        self.triage.commit(t.clone())?;
        Ok(t)
    }

    /// Proposed policy versions (from "confirmed" with a deny proposal), newest first, each
    /// with the version that applied it (`applied_in`, absent while pending).
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn proposals(&self) -> Result<Vec<serde_json::Value>, crate::govern::store::StoreError> {
        let Some(store) = self.control.store() else {
            return Ok(Vec::new());
        };
        // A corrupt manifest is not known to be a proposal: the history lists it.
        let history = store.history()?.versions;
        let applied = crate::govern::store::applied_proposals(&history);
        Ok(history
            .iter()
            .rev()
            .filter(|v| v.status == crate::govern::store::VersionStatus::Proposed)
            .take(MAX_PROPOSALS)
            .map(|v| {
                let mut j = serde_json::to_value(v).unwrap_or_default();
                j["applied_in"] = serde_json::json!(applied.get(&v.number));
                j
            })
            .collect())
    }
}

/// Fold in-memory alerts (newest first) into suspects like the analyst does with the log:
/// highest score first, then latest.
fn fold_recent(alerts: Vec<RecentAlert>) -> Vec<Suspect> {
    let mut by: std::collections::HashMap<(IpAddr, String), Suspect> =
        std::collections::HashMap::new();
    for a in alerts.into_iter().rev() {
        let ts = chrono::DateTime::parse_from_rfc3339(&a.ts)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| chrono::Utc::now());
        let alert = a.alert;
        let s = by
            .entry((alert.client, alert.domain.clone()))
            .or_insert_with(|| Suspect {
                client: alert.client,
                agent: alert.agent.clone(),
                domain: alert.domain.clone(),
                group: alert.group.clone(),
                alerts: 0,
                max_score: 0,
                breakdown: std::collections::BTreeMap::new(),
                first_seen: ts,
                last_seen: ts,
                window: alert.window.clone(),
                bytes_estimate: 0,
                actions: Vec::new(),
                monitor_only: alert.monitor_only,
                exception: None,
                samples: Vec::new(),
                containment: analyst::Containment::None,
            });
        s.alerts += 1;
        s.last_seen = ts;
        s.group = alert.group;
        s.window = alert.window;
        s.monitor_only = alert.monitor_only;
        s.exception = alert.exception;
        s.bytes_estimate = s.bytes_estimate.max(alert.bytes_estimate);
        if !s.actions.contains(&alert.action) {
            s.actions.push(alert.action);
        }
        if alert.score >= s.max_score {
            s.max_score = alert.score;
            s.breakdown = alert.breakdown;
        }
        for sample in alert.samples.into_iter().rev() {
            s.samples.retain(|x| *x != sample);
            s.samples.insert(0, sample);
        }
        s.samples.truncate(3);
    }
    let mut out: Vec<Suspect> = by.into_values().collect();
    out.sort_by(|a, b| {
        b.max_score
            .cmp(&a.max_score)
            .then(b.last_seen.cmp(&a.last_seen))
    });
    out
}

/// The user the admin token authenticates as.
fn legacy_admin() -> User {
    User {
        name: crate::review::users::LEGACY_ADMIN.into(),
        role: crate::review::users::Role::Admin,
    }
}
