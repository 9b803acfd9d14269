//! The admin HTTP endpoint: Prometheus metrics and health, on loopback by default.
//!
//! axum serves it because it is the well-kept, tokio-native HTTP stack and later issues add a
//! JSON API here. It runs on the same runtime as the DNS listeners but shares no locks with the
//! query path: a scrape renders the recorder's atomics.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config_error::ConfigProblems;
use crate::pipeline::Pipeline;

/// `[admin]`: where the admin endpoint listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP endpoint (default `127.0.0.1:9153`); empty string disables it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9153".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
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
    }
}

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder once per process and return its handle.
///
/// Latency histograms get buckets from 50 µs to 5 s, fit for a resolver whose cache hits take
/// microseconds and whose upstream misses take milliseconds.
pub fn prometheus() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding program); then
            // our handle still renders, just without the global counters.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[derive(Clone)]
struct AdminState {
    prom: PrometheusHandle,
    pipeline: Arc<Pipeline>,
}

async fn metrics_page(State(s): State<AdminState>) -> impl IntoResponse {
    metrics::gauge!(crate::metrics::CACHE_ENTRIES).set(s.pipeline.cache().len() as f64);
    s.prom.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.prom.render(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
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
pub async fn start(addr: SocketAddr, pipeline: Arc<Pipeline>) -> std::io::Result<RunningAdmin> {
    let state = AdminState {
        prom: prometheus(),
        pipeline,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(state);
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
