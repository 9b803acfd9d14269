//! The admin HTTP endpoint (metrics, health, the admin API of [`crate::admin::api`]), on loopback by
//! default.
//!
//! axum serves it because it is the well-kept, tokio-native HTTP stack and later issues add a
//! JSON API here. It runs on the same runtime as the DNS listeners but shares no locks with the
//! query path: a scrape renders the recorder's atomics.

pub mod api;
pub mod console;
pub mod redact;
pub mod token; // review console (issue 12)

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::api::ApiState;
use crate::admin::redact::MetricsLabels;
use crate::admin::token::AdminToken;
use crate::config_error::ConfigProblems;
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
        }
    }
}

impl AdminConfig {
    /// Check the section, pushing every problem.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
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
) -> std::io::Result<RunningAdmin> {
    let state = ApiState {
        pipeline,
        control,
        token,
        prom: crate::metrics::install(),
        metrics_labels,
    };
    let mut app = crate::admin::api::router(state);
    if let Some(review) = review {
        // review API + console (issue 12)
        app = app
            .merge(crate::review::api::router(review))
            .merge(console::router());
    }
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.changed().await;
            })
            .await;
    });
    Ok(RunningAdmin { addr, stop, task })
}
