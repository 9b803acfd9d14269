//! The admin HTTP endpoint (metrics, health, the admin API of [`crate::admin::api`]), on loopback by
//! default.
//!
//! axum serves it because it is the well-kept, tokio-native HTTP stack and later issues add a
//! JSON API here. It runs on the same runtime as the DNS listeners but shares no locks with the
//! query path: a scrape renders the recorder's atomics.
//!
//! It shares the process's file-descriptor limit with the DNS side, so its connections are
//! bounded: at most `max_connections` at once (more are closed at once and counted in
//! `dnsward_admin_connections_rejected_total`), a connection that has not sent a complete
//! request head within `header_read_timeout` is closed (that covers idle keep-alive connections
//! and slow-header clients alike), and no connection lives longer than `connection_timeout`.
//! The accept loop is ours (hyper's HTTP/1 connection builder under the axum router) because
//! `axum::serve` offers neither a cap nor a header timeout.

pub mod api;
pub mod console;
pub mod redact;
pub mod token; // review console (issue 12)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::admin::api::ApiState;
use crate::admin::redact::MetricsLabels;
use crate::admin::token::AdminToken;
use crate::config_error::{ConfigProblems, DurationRange};
use crate::govern::control::Control;
use crate::serve::pipeline::Pipeline;

/// `[admin]`: where the admin endpoint listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP endpoint (default `127.0.0.1:9153`); empty string disables it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// File holding the bearer token for `/api/v1` (at least 32 characters); without it the
    /// API answers 401 and only `/metrics`, `/healthz`, `/readyz` and `/openapi.yaml` work.
    /// It must be a regular file only its owner can read (`chmod 600`); `credential:NAME`
    /// reads the systemd credential `NAME` (`LoadCredential=`). Re-read on every reload.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// What `/metrics` shows without the bearer token: `redacted` (default) replaces group
    /// names and upstream addresses with stable opaque ids; `full` shows them to anyone who can
    /// reach the endpoint. With the token, labels are always in full.
    #[serde(default)]
    pub metrics_labels: MetricsLabels,
    /// Named users for the review API and console (issue 12): lines `name role sha256-hex`.
    #[serde(default)]
    pub tokens_file: Option<std::path::PathBuf>,
    /// Most simultaneous admin connections (default 64); more are closed at once.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
    /// Time a connection has to send a complete request head, also the idle limit between
    /// keep-alive requests (default 5s, 1ms to 5m).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest life of one admin connection, whatever it is doing (default 60s, 1ms to 1h).
    #[serde(default = "default_connection_timeout", with = "humantime_serde")]
    pub connection_timeout: Duration,
}

/// Accepted `header_read_timeout`: a request head takes milliseconds; minutes is a slow client.
pub const HEADER_READ_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(300));
/// Accepted `connection_timeout`: a scrape or an API call, not a session.
pub const CONNECTION_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(3600));

fn default_admin_max_connections() -> usize {
    64
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connection_timeout() -> Duration {
    Duration::from_secs(60)
}

/// The admin endpoint's connection limits (from [`AdminConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Time to send a request head (and idle time between requests).
    pub header_read_timeout: Duration,
    /// Longest life of one connection.
    pub connection_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminConfig::default().limits()
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9153".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token_file: None,
            metrics_labels: MetricsLabels::default(),
            tokens_file: None,
            max_connections: default_admin_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            connection_timeout: default_connection_timeout(),
        }
    }
}

impl AdminConfig {
    /// The connection limits, the timeouts brought into their ranges: hyper adds the header
    /// timeout to `Instant::now()` on every connection, which panics past the platform's clock.
    #[must_use]
    pub fn limits(&self) -> AdminLimits {
        AdminLimits {
            max_connections: self.max_connections,
            header_read_timeout: HEADER_READ_TIMEOUT.clamp(self.header_read_timeout),
            connection_timeout: CONNECTION_TIMEOUT.clamp(self.connection_timeout),
        }
    }

    /// Check the section, pushing every problem.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        problems.check_count(
            format!("{at}.max_connections"),
            self.max_connections,
            crate::serve::CONNECTIONS,
        );
        problems.check_duration(
            format!("{at}.header_read_timeout"),
            self.header_read_timeout,
            HEADER_READ_TIMEOUT,
        );
        problems.check_duration(
            format!("{at}.connection_timeout"),
            self.connection_timeout,
            CONNECTION_TIMEOUT,
        );
        if !self.listen.is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            problems.push(
                format!("{at}.listen"),
                format!("{:?} is not IP:port", self.listen),
            );
        }
        if let Some(path) = &self.token_file
            && let Err(e) = token::read_token(path)
        {
            problems.push(format!("{at}.token_file"), e);
        }
        // review users (issue 12)
        if let Err(p) = crate::review::users::Users::load(self.tokens_file.as_deref(), None) {
            for one in p.problems {
                problems.push(format!("{at}.tokens_file"), one.to_string());
            }
        }
    }

    /// The token, trimmed, if a token file is configured.
    ///
    /// # Errors
    /// The file cannot be read, is readable by group or others, is a symlink, or the token is
    /// shorter than [`token::MIN_TOKEN_CHARS`].
    pub fn load_token(&self) -> std::io::Result<Option<String>> {
        self.token_file
            .as_ref()
            .map(|p| token::read_token(p).map_err(std::io::Error::other))
            .transpose()
    }
}

/// A running admin endpoint.
#[derive(Debug)]
pub struct RunningAdmin {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAdmin {
    /// Stop serving.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Start the admin endpoint.
///
/// # Errors
/// When the address cannot be bound.
pub async fn start(
    addr: SocketAddr,
    pipeline: Arc<Pipeline>,
    control: Arc<Control>,
    token: Arc<AdminToken>,
    metrics_labels: MetricsLabels,
    review: Option<Arc<crate::review::Review>>,
    limits: AdminLimits,
) -> std::io::Result<RunningAdmin> {
    let state = ApiState {
        pipeline,
        control,
        token,
        prom: crate::metrics::install(),
        metrics_labels,
    };
    let unmatched = crate::admin::api::UnmatchedState {
        pipeline: Arc::clone(&state.pipeline),
        token: Arc::clone(&state.token),
        review: review.clone(),
    };
    let mut app = crate::admin::api::router(state);
    if let Some(review) = review {
        // review API + console (issue 12)
        app = app
            .merge(crate::review::api::router(review))
            .merge(console::router());
    }
    // Every answer of the endpoint is JSON with a message, an unknown path or method too, and
    // every request is audited, those no route takes too.
    let app = app
        .fallback(crate::review::api_error::not_found)
        .method_not_allowed_fallback(crate::review::api_error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            unmatched,
            crate::admin::api::audit_unmatched,
        ));
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, app, limits, stop_rx));
    Ok(RunningAdmin { addr, stop, task })
}

/// Accept admin connections under the cap and serve each with the timeouts; on stop, give open
/// connections a moment to finish, then close them.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: AdminLimits,
    mut stop: watch::Receiver<bool>,
) {
    let rejected = metrics::counter!(crate::metrics::ADMIN_REJECTED_TOTAL);
    let mut accept_errors =
        crate::resources::AcceptErrors::new("admin", listener.local_addr().ok());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: count it, say so (rate-limited),
                    // and back off instead of spinning.
                    accept_errors.failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            rejected.increment(1);
            drop(stream);
            continue;
        };
        // The API reads the peer address (audit records, loopback checks) as axum's
        // `into_make_service_with_connect_info` would provide it.
        let svc = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(ConnectInfo(peer))),
        );
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(limits.connection_timeout, conn).await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}
