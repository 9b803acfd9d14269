//! Assembling a running dnsward from a configuration: the policy, the long-lived state, the
//! listeners and the admin endpoint. The binary and the integration tests both start here.

use std::sync::Arc;

use crate::admin::{self, RunningAdmin};
use crate::cache::AnswerCache;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::config_error::ConfigProblems;
use crate::contain::Containment;
use crate::control::{Control, ControlError};
use crate::detect::Detector;
use crate::events::sink::{self, EventSinkHandle};
use crate::events::{Event, EventBody, PolicyEvent};
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::server::{self, RunningServer, RunningTls};

/// Why dnsward could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration has problems.
    #[error("{0}")]
    Config(#[from] ConfigProblems),
    /// A socket or file could not be opened.
    #[error("{what}: {source}")]
    Io {
        /// What was being opened.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A running dnsward.
#[derive(Debug)]
pub struct RunningApp {
    /// The pipeline (policy, cache, events).
    pub pipeline: Arc<Pipeline>,
    /// Policy lifecycle (reload, rollback).
    pub control: Arc<Control>,
    /// DNS listeners.
    pub dns: RunningServer,
    /// DoT and DoH listeners (empty when none are configured).
    pub tls: RunningTls,
    /// The admin endpoint, if enabled.
    pub admin: Option<RunningAdmin>,
    /// The event sink.
    events: EventSinkHandle,
    /// The once-a-second upkeep task (containment expiry, table metrics).
    upkeep: tokio::task::JoinHandle<()>,
}

impl RunningApp {
    /// Start everything described by `cfg`, with the system clock.
    ///
    /// # Errors
    /// Configuration problems (all of them) or a socket/file that cannot be opened.
    pub async fn start(cfg: &Config) -> Result<Self, StartError> {
        Self::start_with_clock(cfg, SystemClock::shared()).await
    }

    /// Start with an injected clock (tests).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_with_clock(cfg: &Config, clock: SharedClock) -> Result<Self, StartError> {
        let prom = admin::prometheus();
        let _ = prom;
        let config_path = std::path::PathBuf::from(&cfg.source);
        let (policy, store) = Control::initial_policy(cfg, &config_path).map_err(|e| match e {
            ControlError::Invalid(p) => StartError::Config(p),
            other => StartError::Io {
                what: "opening the policy store".into(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        metrics::gauge!(crate::metrics::POLICY_VERSION).set(policy.version.number as f64);
        let (events, events_handle) = cfg
            .audit
            .encoder(&cfg.events)
            .and_then(|enc| sink::spawn_with_encoder(&cfg.events, enc))
            .map_err(|source| StartError::Io {
                what: "opening the event sink".into(),
                source,
            })?;
        events.emit(Event::now(
            policy.version.number,
            EventBody::Policy(PolicyEvent {
                action: "loaded".into(),
                hash: Some(policy.version.hash.clone()).filter(|h| !h.is_empty()),
                actor: None,
                message: Some(cfg.source.clone()),
            }),
        ));
        let cache = AnswerCache::new(&cfg.cache, Arc::clone(&clock));
        let settings = PipelineSettings {
            unknown_clients: cfg.server.unknown_clients,
        };
        let detector = Detector::new(&cfg.detect, Arc::clone(&clock));
        let containment = Containment::new(&cfg.containment, Arc::clone(&clock));
        let pipeline = Arc::new(Pipeline::new(
            policy,
            cache,
            events,
            settings,
            Arc::clone(&clock),
            detector,
            containment,
        ));
        let upkeep = {
            let pipeline = Arc::clone(&pipeline);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                let prom = admin::prometheus();
                loop {
                    tick.tick().await;
                    pipeline.maintenance_tick();
                    // Histogram samples pile up until drained: drain them even when nothing
                    // scrapes /metrics, so memory stays flat.
                    prom.run_upkeep();
                }
            })
        };
        let control = Arc::new(Control::attach(
            Arc::clone(&pipeline),
            cfg,
            &config_path,
            store,
        ));
        let token = cfg.admin.load_token().map_err(|source| StartError::Io {
            what: "reading admin.token_file".into(),
            source,
        })?;
        let dns = server::start(&cfg.server, Arc::clone(&pipeline))
            .await
            .map_err(|source| StartError::Io {
                what: format!("binding {:?}", cfg.server.listen),
                source,
            })?;
        let tls = server::encrypted::start(&cfg.tls, &cfg.base_dir, Arc::clone(&pipeline))
            .await
            .map_err(|e| StartError::Io {
                what: "starting the DoT/DoH listeners".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let admin = match cfg.admin.listen.parse() {
            Ok(addr) => Some(
                admin::start(addr, Arc::clone(&pipeline), Arc::clone(&control), token)
                    .await
                    .map_err(|source| StartError::Io {
                        what: format!("binding admin {}", cfg.admin.listen),
                        source,
                    })?,
            ),
            Err(_) => None,
        };
        Ok(Self {
            pipeline,
            control,
            dns,
            tls,
            admin,
            events: events_handle,
            upkeep,
        })
    }

    /// Re-read the DoT/DoH certificates, keys, client CAs and CRLs (SIGHUP). New connections
    /// use them; open ones keep theirs. A listener whose files fail keeps its running
    /// configuration, and each failure is logged.
    pub fn reload_tls(&self) {
        for e in self.tls.reload() {
            tracing::error!("TLS reload failed, keeping the running certificates: {e}");
        }
    }

    /// Stop listening, finish in-flight queries, flush events.
    pub async fn shutdown(self) {
        self.tls.shutdown(self.dns.grace()).await;
        self.dns.shutdown().await;
        self.upkeep.abort();
        // Containments that expire during shutdown are still recorded.
        self.pipeline.maintenance_tick();
        if let Some(a) = self.admin {
            a.shutdown().await;
        }
        drop(self.pipeline);
        self.events.shutdown().await;
    }
}
