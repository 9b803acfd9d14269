//! Policy lifecycle: load, hot reload, rollback and history, shared by SIGHUP, the admin API
//! and the CLI.
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

use crate::config::Config;
use crate::config_error::ConfigProblems;
use crate::events::{Event, EventBody, PolicyEvent};
use crate::govern::store::{ACTION_LOAD, ACTION_RELOAD, PolicyStore, StoreError, VersionInfo};
use crate::policy::active::{ActivePolicy, PolicyVersion};
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
    /// Rollback needs a version store.
    #[error("rollback needs [store] state_dir in the configuration")]
    NoStore,
    /// A reload or rollback is already running.
    #[error("another reload or rollback is in progress")]
    Busy,
    /// The reload task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The policy lifecycle of a running server.
#[derive(Debug)]
pub struct Control {
    pipeline: Arc<Pipeline>,
    config_path: PathBuf,
    store: Option<PolicyStore>,
    /// Settings fixed at start, to warn when a reload tries to change them.
    fixed: String,
    /// In-memory version counter when there is no store.
    memory_version: AtomicU64,
    /// One lifecycle change at a time.
    busy: tokio::sync::Mutex<()>,
}

/// The part of a config that a reload cannot change.
fn fixed_settings(cfg: &Config) -> String {
    format!(
        "{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
        cfg.server,
        cfg.admin,
        cfg.cache,
        cfg.events,
        cfg.detect,
        cfg.containment,
        cfg.store,
        cfg.audit
    )
}

impl Control {
    /// Build the first policy from `cfg` (read from `config_path`), record it as a version, and
    /// return the policy and the control for it. The pipeline is attached with [`Self::attach`].
    ///
    /// # Errors
    /// Configuration problems or a store failure.
    pub fn initial_policy(
        cfg: &Config,
        config_path: &Path,
    ) -> Result<(Arc<ActivePolicy>, Option<PolicyStore>), ControlError> {
        let built = cfg.validate_all().map_err(ControlError::Invalid)?;
        let store = match &cfg.store {
            Some(sc) => Some(PolicyStore::open(&sc.state_dir)?),
            None => None,
        };
        let version = match &store {
            Some(store) => store
                .record(
                    &abs(config_path),
                    &built.files,
                    ACTION_LOAD,
                    None,
                    Some("startup"),
                )?
                .policy_version(),
            None => PolicyVersion {
                number: 1,
                hash: crate::govern::store::content_hash(&abs(config_path), &built.files)
                    .unwrap_or_default(),
            },
        };
        let policy =
            ActivePolicy::build_with_version(cfg, version).map_err(ControlError::Invalid)?;
        Ok((policy, store))
    }

    /// Control over `pipeline`, whose policy came from [`Self::initial_policy`].
    #[must_use]
    pub fn attach(
        pipeline: Arc<Pipeline>,
        cfg: &Config,
        config_path: &Path,
        store: Option<PolicyStore>,
    ) -> Self {
        let number = pipeline.policy().version.number;
        Self {
            pipeline,
            config_path: abs(config_path),
            store,
            fixed: fixed_settings(cfg),
            memory_version: AtomicU64::new(number),
            busy: tokio::sync::Mutex::new(()),
        }
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

    /// Reload the configuration file: validate completely, record, swap.
    ///
    /// # Errors
    /// [`ControlError::Invalid`] with every problem (the running policy stays), or a store
    /// failure.
    pub async fn reload(
        self: &Arc<Self>,
        actor: Option<&str>,
        message: Option<&str>,
    ) -> Result<PolicyVersion, ControlError> {
        let _guard = self.busy.try_lock().map_err(|_| ControlError::Busy)?;
        // File reads and parsing happen on the blocking pool, never on a listener's thread.
        let this = Arc::clone(self);
        let (a, m) = (actor.map(str::to_string), message.map(str::to_string));
        let result = tokio::task::spawn_blocking(move || {
            this.load_and_record(&this.config_path, a.as_deref(), m.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(ControlError::Internal(e.to_string())));
        match result {
            Ok((policy, warning)) => {
                let version = policy.version.clone();
                self.pipeline.swap_policy(Arc::clone(&policy));
                self.record_event(
                    "reloaded",
                    &version,
                    actor,
                    join(message, warning.as_deref()),
                );
                metrics::counter!(crate::metrics::POLICY_RELOADS_TOTAL, "result" => "ok")
                    .increment(1);
                metrics::gauge!(crate::metrics::POLICY_VERSION).set(version.number as f64);
                tracing::info!(version = version.number, hash = %version.hash, "policy reloaded");
                Ok(version)
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
        let cfg = Config::load(path).map_err(ControlError::Invalid)?;
        // A config that could not start the server is rejected even though its runtime sections
        // only apply at the next restart: that restart must not fail.
        let built = cfg.validate_all().map_err(ControlError::Invalid)?;
        let version = match &self.store {
            Some(store) => store
                .record(path, &built.files, ACTION_RELOAD, actor, message)?
                .policy_version(),
            None => PolicyVersion {
                number: self.memory_version.fetch_add(1, Ordering::SeqCst) + 1,
                hash: crate::govern::store::content_hash(path, &built.files).unwrap_or_default(),
            },
        };
        let policy =
            ActivePolicy::build_with_version(&cfg, version).map_err(ControlError::Invalid)?;
        let warning = (fixed_settings(&cfg) != self.fixed).then(|| {
            "settings outside groups/zones/upstream changed and take effect only after a restart".to_string()
        });
        Ok((policy, warning))
    }

    /// Re-activate a stored version exactly (default: the one before the current).
    ///
    /// # Errors
    /// No store, unknown version, a snapshot that no longer builds, or a store failure.
    pub async fn rollback(
        self: &Arc<Self>,
        to: Option<u64>,
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
                let (info, _config_copy) = store.rollback(to, actor, reason)?;
                let target = info.rolled_back_to.unwrap_or(info.number);
                let cfg = store.load_snapshot(target)?;
                let built = ActivePolicy::build(&cfg).map_err(ControlError::Invalid)?;
                store.check_reads_only_snapshot(&store.get(target)?, &built.files)?;
                let policy = ActivePolicy::build_with_version(&cfg, info.policy_version())
                    .map_err(ControlError::Invalid)?;
                Ok((info, policy))
            },
        )
        .await
        .unwrap_or_else(|e| Err(ControlError::Internal(e.to_string())));
        match result {
            Ok((info, policy)) => {
                let version = policy.version.clone();
                self.pipeline.swap_policy(policy);
                let msg = format!(
                    "rolled back to version {}: {reason}",
                    info.rolled_back_to.unwrap_or_default()
                );
                self.record_event("rolled_back", &version, Some(actor), Some(msg));
                metrics::gauge!(crate::metrics::POLICY_VERSION).set(version.number as f64);
                tracing::info!(version = version.number, to = ?info.rolled_back_to, actor, "policy rolled back");
                Ok(info)
            }
            Err(e) => {
                let current = self.current();
                self.record_event(
                    "rollback_rejected",
                    &current,
                    Some(actor),
                    Some(e.to_string()),
                );
                Err(e)
            }
        }
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
