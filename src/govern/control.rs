//! Policy lifecycle: load, hot reload, rollback, proposals and their apply, shared by SIGHUP,
//! the admin API, the review and the CLI.
//!
//! A reload loads and validates the whole configuration off the query path, records it as a
//! version, and only then swaps it in atomically. Queries already admitted finish under the old
//! policy (they hold an `Arc` to it); the cache, the detector's windows and active
//! containments carry over. A configuration that fails validation is rejected with every
//! problem listed, the running policy stays, and a `policy` event records the attempt.
//!
//! Settings that shape long-lived machinery (listeners, cache size, event sink, detector table
//! bounds) are read at start only; a reload that changes them says so in its event and log.
//!
//! Versions are stored in `[store] state_dir` when configured (they then survive restarts and
//! can be rolled back exactly); without it, versions are numbered in memory for this process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config_error::ConfigProblems;
use crate::events::{Event, EventBody, PolicyEvent};
use crate::govern::store::{
    ACTION_LOAD, ACTION_RELOAD, PolicyStore, StoreConfig, StoreError, VersionInfo,
};
use crate::policy::active::{ActivePolicy, PolicyVersion, ZoneChanges};
use crate::policy::deny_edit::DenyEditError;
use crate::serve::pipeline::Pipeline;

/// Why a reload or rollback did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The configuration has problems; the running policy stays.
    #[error("{0}")]
    Invalid(ConfigProblems),
    /// The version store failed or refused (unknown version, nothing to roll back to, …).
    #[error("policy store: {0}")]
    Store(#[from] StoreError),
    /// Rollback, proposals and their apply need a version store.
    #[error("rollback and policy proposals need [store] state_dir in the configuration")]
    NoStore,
    /// A reload or rollback is already running.
    #[error("another reload or rollback is in progress")]
    Busy,
    /// A proposed change cannot be made to this configuration exactly.
    #[error("cannot propose: {0}")]
    Proposal(#[from] DenyEditError),
    /// The reload task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a reload did, for its reply: the version now running, the local zones it added or
/// removed, and what the operator should know.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The version now running.
    pub version: PolicyVersion,
    /// Local zones served now and not before, and the other way round. A zone file gone from
    /// `zones.dir` is a zone removed: its names are forwarded upstream from now on.
    pub zones: ZoneChanges,
    /// Zones removed, settings that wait for a restart, secrets that were not re-read.
    pub warnings: Vec<String>,
}

impl Reloaded {
    /// The reply of both APIs: `version`, `hash`, `zones_added`, `zones_removed`, `warnings`.
    #[must_use]
    pub fn reply(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version.number,
            "hash": self.version.hash,
            "zones_added": self.zones.added,
            "zones_removed": self.zones.removed,
            "warnings": self.warnings,
        })
    }
}

/// Which stored version a rollback or apply makes the running policy.
#[derive(Debug, Clone, Copy)]
enum StoredTarget {
    /// A rollback to this version (default: the one before the current).
    Rollback(Option<u64>),
    /// An apply of this proposal.
    Apply(u64),
}

/// A configuration file, read, fully validated and compiled, as the lifecycle needs it.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The compiled policy, not yet stamped with a version.
    pub policy: ActivePolicy,
    /// A fingerprint of the settings read only at start (listeners, cache, sinks, detector
    /// bounds, store, audit), to warn when a reload tries to change them.
    pub fixed: crate::config::FixedSettings,
}

/// How the lifecycle reads configuration files.
///
/// The composed configuration implements this ([`crate::config::ConfigFiles`]). Control names
/// only the trait: `config` composes this folder's own sections (`[store]`, `[audit]`), so
/// importing it here would be a circle.
pub trait ConfigLoader: Send + Sync + std::fmt::Debug {
    /// Read `path`, validate everything `dnsward check` validates, and compile its policy.
    ///
    /// # Errors
    /// Every problem found.
    fn load(&self, path: &Path) -> Result<LoadedConfig, ConfigProblems>;

    /// Read a stored version's config copy `copy`, materialised under `tree` (files at their
    /// original absolute paths below it), and compile its policy. Policy inputs named by
    /// absolute path are re-rooted into the tree; outputs (the event log) keep their live
    /// location; `live_name` names the version in messages.
    ///
    /// # Errors
    /// Every problem found.
    fn load_snapshot(
        &self,
        copy: &Path,
        tree: &Path,
        live_name: &str,
    ) -> Result<LoadedConfig, ConfigProblems>;
}

/// The policy lifecycle of a running server.
#[derive(Debug)]
pub struct Control {
    pipeline: Arc<Pipeline>,
    config_path: PathBuf,
    store: Option<PolicyStore>,
    /// Settings fixed at start, to warn when a reload tries to change them.
    fixed: crate::config::FixedSettings,
    /// Reads configuration files (implemented by the composed config).
    loader: Box<dyn ConfigLoader>,
    /// In-memory version counter when there is no store.
    memory_version: AtomicU64,
    /// One lifecycle change at a time.
    busy: tokio::sync::Mutex<()>,
    /// Secrets re-read on every reload (the admin token); set once at start.
    reload_hook: std::sync::OnceLock<ReloadHook>,
}

/// Run at every reload, before the configuration is read: re-reads secrets such as the admin
/// token. An `Err` is logged and added to the reload's event; the reload goes on.
pub struct ReloadHook(pub Box<dyn Fn() -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadHook")
    }
}

impl Control {
    /// Stamp the first policy (`loaded`, read from `config_path`) with a version, recording it
    /// in the store when one is configured. The pipeline is attached with [`Self::attach`].
    ///
    /// # Errors
    /// A store failure.
    pub fn initial_policy(
        loaded: LoadedConfig,
        store: Option<&StoreConfig>,
        config_path: &Path,
    ) -> Result<(Arc<ActivePolicy>, Option<PolicyStore>), ControlError> {
        let mut policy = loaded.policy;
        let store = match store {
            Some(sc) => Some(PolicyStore::open(&sc.state_dir)?.keeping(sc.keep_versions)),
            None => None,
        };
        policy.version = match &store {
            Some(store) => store
                .record(
                    &abs(config_path),
                    &policy.files,
                    ACTION_LOAD,
                    None,
                    Some("startup"),
                )?
                .policy_version(),
            None => PolicyVersion {
                number: 1,
                hash: crate::govern::store::content_hash(&abs(config_path), &policy.files)
                    .unwrap_or_default(),
            },
        };
        Ok((Arc::new(policy), store))
    }

    /// Control over `pipeline`, whose policy came from [`Self::initial_policy`]; `fixed` is
    /// the start-up configuration's [`LoadedConfig::fixed`].
    #[must_use]
    pub fn attach(
        pipeline: Arc<Pipeline>,
        fixed: crate::config::FixedSettings,
        config_path: &Path,
        store: Option<PolicyStore>,
        loader: Box<dyn ConfigLoader>,
    ) -> Self {
        let number = pipeline.policy().version.number;
        Self {
            pipeline,
            config_path: abs(config_path),
            store,
            fixed,
            loader,
            memory_version: AtomicU64::new(number),
            busy: tokio::sync::Mutex::new(()),
            reload_hook: std::sync::OnceLock::new(),
        }
    }

    /// Set what every reload re-reads besides the configuration (once; later calls are ignored).
    pub fn set_reload_hook(&self, hook: ReloadHook) {
        let _ = self.reload_hook.set(hook);
    }

    /// The version store, if configured.
    #[must_use]
    pub fn store(&self) -> Option<&PolicyStore> {
        self.store.as_ref()
    }

    /// The running policy's version.
    #[must_use]
    pub fn current(&self) -> PolicyVersion {
        self.pipeline.policy().version.clone()
    }

    /// Reload the configuration file: validate completely, record, swap. Local zones that
    /// the new policy no longer serves (a zone file gone from `zones.dir`) are named in the
    /// reply, the event and a warning in the log; they are not a reason to refuse, as removing
    /// the file is how a zone is removed (list it in `zones.files` to make a missing file an
    /// error).
    ///
    /// # Errors
    /// [`ControlError::Invalid`] with every problem (the running policy stays), or a store
    /// failure.
    pub async fn reload(
        self: &Arc<Self>,
        actor: Option<&str>,
        message: Option<&str>,
    ) -> Result<Reloaded, ControlError> {
        let _guard = self.busy.try_lock().map_err(|_| ControlError::Busy)?;
        // File reads and parsing happen on the blocking pool, never on a listener's thread.
        let this = Arc::clone(self);
        let (a, m) = (actor.map(str::to_string), message.map(str::to_string));
        let result = tokio::task::spawn_blocking(move || {
            let secrets = this.reload_hook.get().and_then(|h| (h.0)().err());
            if let Some(e) = &secrets {
                tracing::warn!(error = %e, "secret not reloaded; the old one stays in force");
            }
            this.load_and_record(&this.config_path, a.as_deref(), m.as_deref())
                .map(|(p, w)| {
                    // In the log too: a SIGHUP has no reply to carry it.
                    if let Some(w) = &w {
                        tracing::warn!("{w}");
                    }
                    (p, w.into_iter().chain(secrets).collect::<Vec<_>>())
                })
        })
        .await
        .unwrap_or_else(|e| Err(ControlError::Internal(e.to_string())));
        // Whichever way it went, a policy was parsed and one of two dropped.
        release_freed_memory();
        match result {
            Ok((policy, others)) => {
                let version = policy.version.clone();
                let zones = policy.zone_changes_since(&self.pipeline.policy());
                self.pipeline.swap_policy(Arc::clone(&policy));
                crate::metrics::preregister(policy.groups.iter().map(|g| &*g.name));
                let mut warnings = Vec::new();
                if !zones.removed.is_empty() {
                    let removed = zones.removed.join(", ");
                    tracing::warn!(version = version.number, zones = %removed, "reload removed local zones: their names are forwarded upstream now");
                    warnings.push(format!(
                        "local zone(s) removed: {removed}: their names are forwarded upstream now"
                    ));
                }
                if !zones.added.is_empty() {
                    tracing::info!(version = version.number, zones = %zones.added.join(", "), "reload added local zones");
                }
                warnings.extend(others.iter().cloned());
                // The event says what changed, zones added included.
                let notes: Vec<String> = zones.describe().into_iter().chain(others).collect();
                let notes = (!notes.is_empty()).then(|| notes.join("; "));
                self.record_event("reloaded", &version, actor, join(message, notes.as_deref()));
                metrics::counter!(crate::metrics::POLICY_RELOADS_TOTAL, "result" => "ok")
                    .increment(1);
                metrics::gauge!(crate::metrics::POLICY_VERSION).set(version.number as f64);
                tracing::info!(version = version.number, hash = %version.hash, "policy reloaded");
                Ok(Reloaded {
                    version,
                    zones,
                    warnings,
                })
            }
            Err(e) => {
                let current = self.current();
                self.record_event("reload_rejected", &current, actor, Some(e.to_string()));
                metrics::counter!(crate::metrics::POLICY_RELOADS_TOTAL, "result" => "rejected")
                    .increment(1);
                tracing::warn!(error = %e, "reload rejected; the running policy stays");
                Err(e)
            }
        }
    }

    fn load_and_record(
        &self,
        path: &Path,
        actor: Option<&str>,
        message: Option<&str>,
    ) -> Result<(Arc<ActivePolicy>, Option<String>), ControlError> {
        // A config that could not start the server is rejected even though its runtime sections
        // only apply at the next restart: that restart must not fail.
        let loaded = self.loader.load(path).map_err(ControlError::Invalid)?;
        let mut policy = loaded.policy;
        policy.version = match &self.store {
            Some(store) => store
                .record(path, &policy.files, ACTION_RELOAD, actor, message)?
                .policy_version(),
            None => PolicyVersion {
                number: self.memory_version.fetch_add(1, Ordering::SeqCst) + 1,
                hash: crate::govern::store::content_hash(path, &policy.files).unwrap_or_default(),
            },
        };
        let changed = loaded.fixed.changed_from(&self.fixed);
        let warning = (!changed.is_empty()).then(|| {
            let sections: Vec<String> = changed.iter().map(|s| format!("[{s}]")).collect();
            format!(
                "{} changed and take{} effect only after a restart (a reload applies groups, zones, lists and upstreams)",
                sections.join(", "),
                if sections.len() == 1 { "s" } else { "" }
            )
        });
        let policy = Arc::new(policy);
        Ok((policy, warning))
    }

    /// Re-activate a stored version exactly (default: the one before the current).
    ///
    /// # Errors
    /// No store, unknown version, a proposal (those are applied), a snapshot that no longer
    /// builds, or a store failure.
    pub async fn rollback(
        self: &Arc<Self>,
        to: Option<u64>,
        actor: &str,
        reason: &str,
    ) -> Result<VersionInfo, ControlError> {
        self.run_stored(StoredTarget::Rollback(to), actor, reason)
            .await
    }

    /// Make proposal `number` the running policy (see [`PolicyStore::apply`]); `actor` (an
    /// admin) is the new version's author and the `applied` event's actor.
    ///
    /// # Errors
    /// No store, `number` is not a proposal or is stale, its snapshot no longer builds, or a
    /// store failure.
    pub async fn apply(
        self: &Arc<Self>,
        number: u64,
        actor: &str,
        reason: &str,
    ) -> Result<VersionInfo, ControlError> {
        self.run_stored(StoredTarget::Apply(number), actor, reason)
            .await
    }

    async fn run_stored(
        self: &Arc<Self>,
        target: StoredTarget,
        actor: &str,
        reason: &str,
    ) -> Result<VersionInfo, ControlError> {
        let _guard = self.busy.try_lock().map_err(|_| ControlError::Busy)?;
        if self.store.is_none() {
            return Err(ControlError::NoStore);
        }
        let this = Arc::clone(self);
        let (a, r) = (actor.to_string(), reason.to_string());
        let result = tokio::task::spawn_blocking(
            move || -> Result<(VersionInfo, Arc<ActivePolicy>), ControlError> {
                let (actor, reason) = (a.as_str(), r.as_str());
                let store = this.store.as_ref().ok_or(ControlError::NoStore)?;
                let loader = this.loader.as_ref();
                let (info, loaded) = match target {
                    StoredTarget::Rollback(to) => store.rollback(to, actor, reason, loader)?,
                    StoredTarget::Apply(n) => store.apply(n, actor, reason, loader)?,
                };
                let mut policy = loaded.policy;
                policy.version = info.policy_version();
                let policy = Arc::new(policy);
                Ok((info, policy))
            },
        )
        .await
        .unwrap_or_else(|e| Err(ControlError::Internal(e.to_string())));
        let (done, rejected) = match target {
            StoredTarget::Rollback(_) => ("rolled_back", "rollback_rejected"),
            StoredTarget::Apply(_) => ("applied", "apply_rejected"),
        };
        match result {
            Ok((info, policy)) => {
                let version = policy.version.clone();
                let zones = policy.zone_changes_since(&self.pipeline.policy());
                crate::metrics::preregister(policy.groups.iter().map(|g| &*g.name));
                self.pipeline.swap_policy(policy);
                if !zones.removed.is_empty() {
                    tracing::warn!(version = version.number, zones = %zones.removed.join(", "), action = done, "local zones removed: their names are forwarded upstream now");
                }
                let to = info.rolled_back_to.unwrap_or_default();
                let mut msg = match target {
                    StoredTarget::Rollback(_) => format!("rolled back to version {to}: {reason}"),
                    StoredTarget::Apply(_) => {
                        let mut m = format!(
                            "applied proposal {to} ({}): {reason}",
                            info.change.as_deref().unwrap_or("no change summary")
                        );
                        // The store, not the live file, holds the change: say so where the
                        // operator will look, or the next reload from disk would drop it.
                        let live = self.live_differs(info.number);
                        if !live.is_empty() {
                            let names: Vec<String> =
                                live.iter().map(|p| p.display().to_string()).collect();
                            m.push_str(&format!(
                                "; the live files do not have it yet ({}): write them with `dnsward policy cat {}` before the next reload or restart",
                                names.join(", "),
                                info.number
                            ));
                        }
                        m
                    }
                };
                if let Some(z) = zones.describe() {
                    msg.push_str("; ");
                    msg.push_str(&z);
                }
                self.record_event(done, &version, Some(actor), Some(msg));
                metrics::gauge!(crate::metrics::POLICY_VERSION).set(version.number as f64);
                tracing::info!(version = version.number, to = ?info.rolled_back_to, actor, action = done, "policy re-activated from the store");
                Ok(info)
            }
            Err(e) => {
                let current = self.current();
                self.record_event(rejected, &current, Some(actor), Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// The files of stored version `number` whose live copy differs or is missing (empty
    /// without a store or on a store error): after an apply, what `dnsward policy cat` must
    /// write back so that a reload or restart from disk keeps the change.
    #[must_use]
    pub fn live_differs(&self, number: u64) -> Vec<PathBuf> {
        self.store
            .as_ref()
            .and_then(|s| s.differs_from_live(number).ok())
            .unwrap_or_default()
    }

    /// Propose adding `domain` to `group`'s deny list: a new version in the store whose
    /// config is the running version's with the domain added to the group's inline `deny`
    /// (see [`crate::policy::deny_edit`]), `author` as author and `note` as message, status
    /// proposed. The running policy does not change; a `proposed` policy event naming the
    /// author goes to the (hash-chained) event log. An admin runs it with [`Self::apply`].
    ///
    /// # Errors
    /// No store, an unknown group, a domain the group already denies, a config the editor
    /// cannot edit exactly, or a store failure.
    pub fn propose_deny(
        &self,
        group: &str,
        domain: &str,
        author: &str,
        note: &str,
    ) -> Result<VersionInfo, ControlError> {
        let store = self.store.as_ref().ok_or(ControlError::NoStore)?;
        let domain = crate::names::normalise(domain);
        let running = self.pipeline.policy();
        let compiled = running
            .groups
            .iter()
            .find(|g| &*g.name == group)
            .ok_or_else(|| DenyEditError::NoGroup(group.to_string()))?;
        // Rules from deny_files count too: a proposal that changes nothing is refused.
        if let Some(rule) = compiled.deny.find_covering(&domain) {
            return Err(DenyEditError::AlreadyDenied {
                group: group.to_string(),
                domain,
                rule: rule.to_string(),
            }
            .into());
        }
        let base = store.get(running.version.number)?;
        let bytes = store.file(base.number, &base.config_path)?;
        let text =
            String::from_utf8(bytes).map_err(|_| DenyEditError::NotToml("not UTF-8".into()))?;
        let edited = crate::policy::deny_edit::add_deny(&text, group, &domain)?;
        let change = format!("deny {domain:?} in group {group:?}");
        let info = store.propose(
            base.number,
            &base.config_path,
            edited.as_bytes(),
            author,
            note,
            &change,
        )?;
        self.pipeline.events().emit(Event::now(
            running.version.number,
            EventBody::Policy(PolicyEvent {
                action: "proposed".into(),
                hash: Some(info.hash.clone()),
                actor: Some(author.to_string()),
                message: Some(format!(
                    "version {} proposes {change} against version {}: {note}",
                    info.number, base.number
                )),
            }),
        ));
        tracing::info!(version = info.number, against = base.number, author, %change, "policy change proposed");
        Ok(info)
    }

    fn record_event(
        &self,
        action: &str,
        version: &PolicyVersion,
        actor: Option<&str>,
        message: Option<String>,
    ) {
        self.pipeline.events().emit(Event::now(
            version.number,
            EventBody::Policy(PolicyEvent {
                action: action.into(),
                hash: Some(version.hash.clone()).filter(|h| !h.is_empty()),
                actor: actor.map(str::to_string),
                message,
            }),
        ));
    }
}

fn join(a: Option<&str>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (Some(x), None) | (None, Some(x)) => Some(x.to_string()),
        (None, None) => None,
    }
}

/// An absolute form of `p` (relative to the working directory), without touching the disk.
fn abs(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
    }
}

/// Give the memory a reload freed back to the system. A policy with large zones or lists is
/// hundreds of megabytes while parsed; freed, glibc keeps most of it in its arenas (the process
/// stayed at 1.9 GB after a big zone was reloaded away). Done a second after the swap, on the
/// blocking pool, once queries in flight have let go of the old policy.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn_blocking(|| {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: `malloc_trim` only returns free pages; it is safe to call at any time.
            unsafe { libc::malloc_trim(0) };
        });
    }
}
