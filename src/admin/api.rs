//! The admin API (JSON over HTTP, loopback by default) and the one-page HTML view.
//!
//! Every `/api/v1/...` request needs `Authorization: Bearer <token>`, the token being read from
//! `admin.token_file`; only `GET /` (the HTML page, opened from a browser) also takes
//! `?token=`: a token in a URL ends up in histories and logs, and no state-changing or JSON
//! endpoint may be driven from a link. `/healthz`, `/readyz`, `/metrics` and `/openapi.yaml`
//! are open (the endpoint listens on loopback unless told otherwise); `/metrics` redacts
//! group names and upstream addresses for callers without the token (see
//! [`crate::admin::redact`]).
//! Every request, allowed or not, is written to the event log as an `admin` event with its
//! status and, for changes, the actor and what changed.
//!
//! Inputs are validated before anything changes; errors are 4xx with a JSON body
//! `{"error": "...", "details": [...]}`. The contract is `docs/openapi.yaml`, served at
//! `/openapi.yaml`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::admin::redact::{self, MetricsLabels};
use crate::admin::token::AdminToken;
use crate::contain::overrides::AlertFilter;
use crate::events::{AdminEvent, Event, EventBody};
use crate::govern::control::Control;
use crate::review::api_error::{ApiError, ErrorDetail};
use crate::serve::pipeline::Pipeline;

/// A request body that must be a JSON object: serde reads a struct from an array too,
/// positionally (`["bob", "why"]` posted as a reload's `{actor, message}` was taken), which no
/// client means; an array is refused as any other wrong type is.
#[derive(Debug)]
pub(crate) struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(std::marker::PhantomData))
            .map(Object)
    }
}

/// The OpenAPI description, checked in and served as is.
pub const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

/// Shared state of the admin endpoint.
#[derive(Clone)]
pub struct ApiState {
    /// The query pipeline (policy, containment, overrides, events).
    pub pipeline: Arc<Pipeline>,
    /// Policy lifecycle.
    pub control: Arc<Control>,
    /// The bearer token (replaced on reload); without one the API is disabled (every call is
    /// 401).
    pub token: Arc<AdminToken>,
    /// The Prometheus recorder.
    pub prom: PrometheusHandle,
    /// What `/metrics` shows without the token.
    pub metrics_labels: MetricsLabels,
}

/// Whether the request was authenticated, for handlers that show more to the token holder.
#[derive(Debug, Clone, Copy)]
struct Authenticated(bool);

/// What a handler tells the audit record.
#[derive(Debug, Clone)]
struct AuditNote {
    actor: Option<String>,
    action: Option<String>,
    detail: Option<String>,
}

fn noted(mut r: Response, actor: &str, action: &str, detail: String) -> Response {
    r.extensions_mut().insert(AuditNote {
        actor: Some(actor.to_string()),
        action: Some(action.to_string()),
        detail: Some(detail),
    });
    r
}

/// The token the request presents: the `Authorization: Bearer` header, or, for the HTML page
/// only (`page_query`), a `token=` query parameter.
fn presented_token<'a>(headers: &'a HeaderMap, page_query: Option<&'a str>) -> Option<&'a str> {
    if let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return crate::identity::token::bearer_token(h);
    }
    page_query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
}

/// Set on every answer of a matched route by the middleware that audits it; an answer without
/// it came from the router's fallbacks (an unknown path, a method the path does not take) and
/// is audited by [`audit_unmatched`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Audited;

/// What [`audit_unmatched`] needs: who may see which routes exist, and where events go.
#[derive(Clone)]
pub struct UnmatchedState {
    /// The query pipeline (its event log and policy version).
    pub pipeline: Arc<Pipeline>,
    /// The admin token.
    pub token: Arc<AdminToken>,
    /// The review's users, when the review API is mounted.
    pub review: Option<Arc<crate::review::Review>>,
}

/// The largest request body any route takes (axum's default body limit, 2 MiB).
pub const MAX_BODY_BYTES: u64 = 2 << 20;

/// Longest path written into the audit record of an unmatched request, in bytes.
const UNMATCHED_PATH_BYTES: usize = 256;

/// The outermost layer: a request no route took (404, or 405 for a method the path does not
/// take) is audited like every other request, and under `/api/` it needs a token first
/// (401), so the set of routes and their methods cannot be mapped without one.
pub async fn audit_unmatched(
    State(s): State<UnmatchedState>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let remote_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let user = presented_token(req.headers(), None).and_then(|t| {
        if s.token.matches(t) {
            Some(crate::review::users::LEGACY_ADMIN.to_string())
        } else {
            s.review
                .as_ref()
                .and_then(|r| r.authenticate(t))
                .map(|u| u.name)
        }
    });
    // A body declared larger than any request takes is refused before it is waited for (the
    // connection would otherwise sit until `connection_timeout` for bytes that never come).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .filter(|&n| n > MAX_BODY_BYTES);
    let mut response = if let Some(n) = declared {
        let mut r = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the JSON body is declared {n} bytes; at most {MAX_BODY_BYTES} are accepted"),
        )
        .into_response();
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        r
    } else {
        let response = next.run(req).await;
        // The console's static files are matched routes without an audit record of their own.
        if response.extensions().get::<Audited>().is_some()
            || !matches!(
                response.status(),
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            )
        {
            return response;
        }
        response
    };
    if declared.is_none() && user.is_none() && (path.starts_with("/api/") || path == "/") {
        response = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    // Unauthenticated requests are sampled per source, as refused ones are on matched routes:
    // a scanner's paths are not worth a log line each.
    if user.is_none()
        && remote_addr.is_some_and(|a| {
            !s.pipeline
                .events()
                .wants_refused("admin_refused", crate::policy::identify::canonical(a.ip()))
        })
    {
        return response;
    }
    let mut path = path;
    if path.len() > UNMATCHED_PATH_BYTES {
        let mut end = UNMATCHED_PATH_BYTES;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
        path.push('…');
    }
    let event = AdminEvent {
        method,
        path,
        status: response.status().as_u16(),
        remote: remote_addr.map(|a| a.to_string()),
        authenticated: user.is_some(),
        actor: user,
        action: None,
        detail: response
            .extensions()
            .get::<ErrorDetail>()
            .map(|e| e.0.clone()),
    };
    let version = s.pipeline.policy().version.number;
    s.pipeline
        .events()
        .emit(Event::now(version, EventBody::Admin(event)));
    response
}

async fn audit_and_auth(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let remote_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let remote = remote_addr.map(|a| a.to_string());
    let needs_auth = path.starts_with("/api/") || path == "/";
    let html_page = path == "/" && req.method() == axum::http::Method::GET;
    let page_query = if html_page { req.uri().query() } else { None };
    let authenticated =
        presented_token(req.headers(), page_query).is_some_and(|p| s.token.matches(p));
    req.extensions_mut().insert(Authenticated(authenticated));
    let mut response = if needs_auth && !authenticated {
        let msg = if !s.token.is_enabled() {
            "the admin API is disabled: set admin.token_file"
        } else {
            "missing or wrong bearer token"
        };
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        r
    } else {
        next.run(req).await
    };
    // Scrapes and health checks are too frequent and too boring to audit. Requests refused
    // for want of a token are recorded up to `unknown_client_per_minute` per source a minute
    // (the rest counted): anyone on the host can send them faster than rotation keeps evidence.
    let refused_unsampled = response.status() == StatusCode::UNAUTHORIZED
        && remote_addr.is_some_and(|a| {
            !s.pipeline
                .events()
                .wants_refused("admin_refused", crate::policy::identify::canonical(a.ip()))
        });
    if !refused_unsampled
        && (needs_auth || !matches!(path.as_str(), "/metrics" | "/healthz" | "/readyz"))
    {
        let note = response
            .extensions()
            .get::<AuditNote>()
            .cloned()
            .or_else(|| {
                let e = response.extensions().get::<ErrorDetail>()?;
                Some(AuditNote {
                    actor: None,
                    action: None,
                    detail: Some(e.0.clone()),
                })
            });
        let event = AdminEvent {
            method,
            path,
            status: response.status().as_u16(),
            remote,
            authenticated,
            actor: note.as_ref().and_then(|n| n.actor.clone()),
            action: note.as_ref().and_then(|n| n.action.clone()),
            detail: note.and_then(|n| n.detail),
        };
        let version = s.pipeline.policy().version.number;
        s.pipeline
            .events()
            .emit(Event::now(version, EventBody::Admin(event)));
    }
    response.extensions_mut().insert(Audited);
    response
}

/// The router for the admin endpoint.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .route(
            "/openapi.yaml",
            get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }),
        )
        .route("/", get(html_page))
        .route("/api/v1/policy", get(policy_current))
        .route("/api/v1/policy/history", get(policy_history))
        .route("/api/v1/policy/diff", get(policy_diff))
        .route("/api/v1/policy/reload", post(policy_reload))
        .route("/api/v1/policy/rollback", post(policy_rollback))
        .route("/api/v1/policy/apply", post(policy_apply))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/quarantines", get(quarantines))
        .route("/api/v1/quarantines/release", post(release))
        .route(
            "/api/v1/exceptions",
            get(exceptions_list).post(exception_add),
        )
        .route("/api/v1/exceptions/{id}", delete(exception_remove))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit_and_auth,
        ))
        .with_state(state)
}

/// Ready: a policy is loaded and listeners are up (this answers at all), and the event log is
/// being written. While it cannot be (a full disk), 503 with `"event_log": "failing"`: the
/// resolver still answers, but the evidence of what it answers is being held in memory or lost.
async fn readyz(State(s): State<ApiState>) -> Response {
    let v = s.pipeline.policy().version.clone();
    if s.pipeline.events().log_failing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "policy_version": v.number, "event_log": "failing" })),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        Json(json!({ "ready": true, "policy_version": v.number, "event_log": "ok" })),
    )
        .into_response()
}

async fn metrics_page(
    State(s): State<ApiState>,
    axum::Extension(Authenticated(authenticated)): axum::Extension<Authenticated>,
) -> impl IntoResponse {
    metrics::gauge!(crate::metrics::CACHE_ENTRIES).set(s.pipeline.cache().len() as f64);
    metrics::gauge!(crate::metrics::FAILURE_CACHE_ENTRIES).set(s.pipeline.failures().len() as f64);
    s.prom.run_upkeep();
    let text = s.prom.render();
    let text = if authenticated || s.metrics_labels == MetricsLabels::Full {
        text
    } else {
        redact::redact(&text)
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[derive(Serialize)]
struct PolicySummary {
    version: u64,
    hash: String,
    groups: Vec<GroupSummary>,
    zones: Vec<String>,
}

#[derive(Serialize)]
struct GroupSummary {
    name: String,
    cidrs: Vec<String>,
    mode: String,
    allow_rules: usize,
    deny_rules: usize,
    monitor_only: bool,
}

async fn policy_current(State(s): State<ApiState>) -> Json<PolicySummary> {
    let p = s.pipeline.policy();
    Json(PolicySummary {
        version: p.version.number,
        hash: p.version.hash.clone(),
        groups: p
            .groups
            .iter()
            .map(|g| GroupSummary {
                name: g.name.to_string(),
                cidrs: g.cidrs.iter().map(ToString::to_string).collect(),
                mode: format!("{:?}", g.mode).to_lowercase(),
                allow_rules: g.allow.len(),
                deny_rules: g.deny.len(),
                monitor_only: g.detect.monitor_only,
            })
            .collect(),
        zones: p.zones.origins().map(str::to_string).collect(),
    })
}

async fn policy_history(State(s): State<ApiState>) -> Result<Response, ApiError> {
    match s.control.store() {
        Some(store) => {
            let h = store
                .history()
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            // A corrupt manifest is an entry `{"number", "corrupt"}` among the versions.
            Ok(Json(h.entries()).into_response())
        }
        None => {
            let v = s.control.current();
            Ok(Json(json!([{ "number": v.number, "hash": v.hash, "note": "no [store] configured: history is not kept" }])).into_response())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    a: u64,
    b: u64,
}

async fn policy_diff(
    State(s): State<ApiState>,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    crate::review::api::policy_diff(&s.control, q.a, q.b)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    actor: String,
    #[serde(default)]
    message: Option<String>,
}

/// Longest accepted `actor` and `reason`, in bytes.
pub(crate) use crate::printable::MAX_FIELD_BYTES;
/// Longest accepted reload `message`, in bytes: it is stored in the policy history and in an
/// event line, and an event line past the audit reader's line cap cannot be verified.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `value` is said (not blank) and passes [`cap`] at [`MAX_FIELD_BYTES`]; the review API's
/// reasons go through it too.
pub(crate) fn require(field: &str, value: &str) -> Result<(), ApiError> {
    crate::printable::required_field_problem(field, value, MAX_FIELD_BYTES)
        .map_or(Ok(()), |why| Err(ApiError::bad_request(why)))
}

/// `value` is at most `max` bytes and holds no control character: an actor or a client is one
/// line; a reason or a message may have line breaks and tabs, nothing else that drives a
/// terminal (the CLI and console escape them on display, but a record should say what it
/// means). See [`crate::printable::field_problem`].
fn cap(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    crate::printable::field_problem(field, value, max)
        .map_or(Ok(()), |why| Err(ApiError::bad_request(why)))
}

/// A reload's `message` passes [`cap`] at [`MAX_MESSAGE_BYTES`]; the review API's reload
/// checks it here too.
pub(crate) fn check_message(message: Option<&str>) -> Result<(), ApiError> {
    message.map_or(Ok(()), |m| cap("message", m, MAX_MESSAGE_BYTES))
}

/// A rollback's audit detail, for both APIs: `version N re-activates version M: reason`.
pub(crate) fn rollback_detail(info: &crate::govern::store::VersionInfo, reason: &str) -> String {
    match info.rolled_back_to {
        Some(to) => format!(
            "version {} re-activates version {to}: {reason}",
            info.number
        ),
        None => format!("version {}: {reason}", info.number),
    }
}

async fn policy_reload(
    State(s): State<ApiState>,
    body: Result<Json<Object<ReloadBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(Object(b)) = body?;
    require("actor", &b.actor)?;
    check_message(b.message.as_deref())?;
    let done = s
        .control
        .reload(Some(&b.actor), b.message.as_deref())
        .await?;
    let number = done.version.number;
    let r = Json(done.reply()).into_response();
    Ok(noted(
        r,
        &b.actor,
        "reload",
        format!("now version {number}"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    to: Option<u64>,
    actor: String,
    reason: String,
}

async fn policy_rollback(
    State(s): State<ApiState>,
    body: Result<Json<Object<RollbackBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(Object(b)) = body?;
    require("actor", &b.actor)?;
    require("reason", &b.reason)?;
    let info = s.control.rollback(b.to, &b.actor, &b.reason).await?;
    let detail = rollback_detail(&info, &b.reason);
    Ok(noted(
        Json(info).into_response(),
        &b.actor,
        "rollback",
        detail,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    version: u64,
    actor: String,
    reason: String,
}

async fn policy_apply(
    State(s): State<ApiState>,
    body: Result<Json<Object<ApplyBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(Object(b)) = body?;
    require("actor", &b.actor)?;
    require("reason", &b.reason)?;
    let info = s.control.apply(b.version, &b.actor, &b.reason).await?;
    let (body, detail) = crate::review::api::applied(&s.control, &info, b.version, &b.reason);
    Ok(noted(Json(body).into_response(), &b.actor, "apply", detail))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    since: Option<String>,
    client: Option<String>,
    group: Option<String>,
    domain: Option<String>,
    min_score: Option<u16>,
    limit: Option<usize>,
}

fn parse_duration(field: &str, text: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(text).map_err(|e| {
        ApiError::bad_request(format!(
            "{field}: {text:?} is not a duration like 30m, 1h or 2d ({e})"
        ))
    })
}

async fn alerts(
    State(s): State<ApiState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let since = q
        .since
        .as_deref()
        .map(|t| parse_duration("since", t))
        .transpose()?;
    let client = q
        .client
        .as_deref()
        .map(|c| {
            c.parse::<IpAddr>()
                .map_err(|_| ApiError::bad_request(format!("client: {c:?} is not an IP address")))
        })
        .transpose()?;
    let min_score = match q.min_score {
        Some(m) if m > 100 => {
            return Err(ApiError::bad_request("min_score must be between 0 and 100"));
        }
        m => m.and_then(|m| u8::try_from(m).ok()),
    };
    if q.limit == Some(0) || q.limit.is_some_and(|l| l > 10_000) {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let filter = AlertFilter {
        since,
        client,
        group: q.group,
        domain: q.domain.map(|d| crate::names::normalise(&d)),
        min_score,
        limit: q.limit,
    };
    Ok(Json(s.pipeline.overrides().alerts(&filter)).into_response())
}

async fn quarantines(State(s): State<ApiState>) -> Response {
    Json(s.pipeline.containment().active()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    client: String,
    actor: String,
    reason: String,
}

async fn release(
    State(s): State<ApiState>,
    body: Result<Json<Object<ReleaseBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(Object(b)) = body?;
    // An IP address releases that address; an agent identity (a SPIFFE ID, a certificate DNS
    // name, a token subject with a scheme or a dot) releases that agent wherever it is.
    require("client", &b.client)?;
    let client = match b.client.parse::<IpAddr>() {
        Ok(ip) => s.pipeline.client_key(ip),
        Err(_)
            if (b.client.contains(':') || b.client.contains('.'))
                && !b.client.ends_with('*')
                && crate::policy::identities::validate_pattern(&b.client).is_ok() =>
        {
            crate::identity::ClientKey::agent(
                &b.client,
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            )
        }
        Err(_) => {
            return Err(ApiError::bad_request(format!(
                "client: {:?} is not an IP address or an agent identity",
                b.client
            )));
        }
    };
    require("actor", &b.actor)?;
    require("reason", &b.reason)?;
    // On the blocking pool: the release is written to the state directory with its fsyncs.
    let ended = {
        let (p, key) = (Arc::clone(&s.pipeline), client.clone());
        let (actor, reason) = (b.actor.clone(), b.reason.clone());
        tokio::task::spawn_blocking(move || p.release(&key, &actor, &reason))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    };
    if ended.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no active containment for {client}"),
        ));
    }
    let version = s.pipeline.policy().version.number;
    for e in &ended {
        s.pipeline
            .events()
            .emit(Event::now(version, EventBody::ContainmentEnded(e.clone())));
    }
    let detail = format!(
        "released {client} ({} containments): {}",
        ended.len(),
        b.reason
    );
    Ok(noted(
        Json(json!({ "released": ended })).into_response(),
        &b.actor,
        "release",
        detail,
    ))
}

async fn exceptions_list(State(s): State<ApiState>) -> Response {
    Json(s.pipeline.overrides().exceptions()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionBody {
    group: String,
    domain: String,
    /// How long, e.g. `2h` (1 minute to 30 days).
    expires_in: String,
    actor: String,
    reason: String,
}

async fn exception_add(
    State(s): State<ApiState>,
    body: Result<Json<Object<ExceptionBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(Object(b)) = body?;
    let policy = s.pipeline.policy();
    let domain = crate::names::normalise(&b.domain);
    // The same checks a restart makes of each exception it takes back from the state file.
    if let Some(why) = crate::contain::overrides::exception_problem(
        &b.group,
        policy.groups.iter().any(|g| *g.name == *b.group),
        &domain,
        &b.actor,
        &b.reason,
        MAX_FIELD_BYTES,
    ) {
        return Err(ApiError::bad_request(why));
    }
    let ttl = parse_duration("expires_in", &b.expires_in)?;
    if !crate::contain::overrides::EXCEPTION_TTL.contains(ttl) {
        return Err(ApiError::bad_request(
            "expires_in must be between 1m and 30d",
        ));
    }
    // On the blocking pool: the change is written to the state directory with its fsyncs.
    let pipeline = Arc::clone(&s.pipeline);
    let (group, actor, reason) = (b.group.clone(), b.actor.clone(), b.reason.clone());
    let e = tokio::task::spawn_blocking(move || {
        pipeline
            .overrides()
            .add_exception(&group, &domain, ttl, &actor, &reason)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    let detail = format!(
        "exception #{} for {} in group {} until {}: {}",
        e.id, e.domain, e.group, e.expires, b.reason
    );
    Ok(noted(
        (StatusCode::CREATED, Json(e)).into_response(),
        &b.actor,
        "exception_added",
        detail,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveExceptionBody {
    actor: String,
    reason: String,
}

async fn exception_remove(
    State(s): State<ApiState>,
    id: Result<Path<u64>, PathRejection>,
    body: Result<Json<Object<RemoveExceptionBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let Json(Object(b)) = body?;
    require("actor", &b.actor)?;
    require("reason", &b.reason)?;
    let (response, detail) = remove_exception(&s.pipeline, id, &b.reason).await?;
    Ok(noted(response, &b.actor, "exception_removed", detail))
}

/// Remove exception `id` for both APIs: its JSON and the audit detail, or 404. On the
/// blocking pool: the change is written to the state directory with its fsyncs.
pub(crate) async fn remove_exception(
    pipeline: &Arc<Pipeline>,
    id: u64,
    reason: &str,
) -> Result<(Response, String), ApiError> {
    let p = Arc::clone(pipeline);
    let e = tokio::task::spawn_blocking(move || p.overrides().remove_exception(id))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no live exception #{id}")))?;
    let detail = format!(
        "exception #{} for {} in group {} removed: {reason}",
        e.id, e.domain, e.group
    );
    Ok((Json(e).into_response(), detail))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The overview page's headers: it may be opened with `?token=` in its URL, so no referrer
/// (the token would go to any link's site), no caching, no framing, and no script at all.
const PAGE_HEADERS: [(header::HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

async fn html_page(State(s): State<ApiState>) -> Response {
    (PAGE_HEADERS, overview_html(&s)).into_response()
}

fn overview_html(s: &ApiState) -> Html<String> {
    let p = s.pipeline.policy();
    let active = s.pipeline.containment().active();
    let alerts = s.pipeline.overrides().alerts(&AlertFilter {
        limit: Some(50),
        ..AlertFilter::default()
    });
    let mut html = String::with_capacity(8192);
    html.push_str(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>dnsward</title><style>",
    );
    html.push_str("body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}.score{font-weight:bold;color:#b00}code{font-size:12px}");
    html.push_str("</style></head><body><h1>dnsward</h1>");
    html.push_str(&format!(
        "<p id=\"policy\">Policy version <b>{}</b> <code>{}</code> · {} groups</p>",
        p.version.number,
        esc(&p.version.hash.chars().take(16).collect::<String>()),
        p.groups.len()
    ));
    html.push_str(&format!("<h2>Active containments ({})</h2><table id=\"containments\"><tr><th>client</th><th>group</th><th>domain</th><th>action</th><th>score</th><th>expires in</th></tr>", active.len()));
    for c in &active {
        let v = serde_json::to_value(c).unwrap_or_default();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}s</td></tr>",
            esc(&v["client"].to_string().replace('"', "")),
            esc(v["group"].as_str().unwrap_or("")),
            esc(v["domain"].as_str().unwrap_or("(whole client)")),
            esc(v["action"].as_str().unwrap_or("")),
            v["score"],
            v["expires_in_secs"],
        ));
    }
    html.push_str("</table>");
    html.push_str(&format!("<h2>Last alerts ({})</h2><table id=\"alerts\"><tr><th>time</th><th>score</th><th>client</th><th>group</th><th>domain</th><th>action</th><th>top features</th><th>sample</th></tr>", alerts.len()));
    for a in &alerts {
        let mut terms: Vec<(&String, &f64)> = a
            .alert
            .breakdown
            .iter()
            .filter(|(k, _)| !k.starts_with("query."))
            .collect();
        terms.sort_by(|x, y| y.1.total_cmp(x.1));
        let top: Vec<String> = terms
            .iter()
            .take(3)
            .map(|(k, v)| format!("{k}={v:.0}"))
            .collect();
        html.push_str(&format!(
            "<tr><td>{}</td><td class=\"score\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&a.ts),
            a.alert.score,
            a.alert.client,
            esc(&a.alert.group),
            esc(&a.alert.domain),
            esc(&a.alert.action),
            esc(&top.join(" ")),
            esc(a.alert.samples.first().map_or("", String::as_str)),
        ));
    }
    html.push_str("</table></body></html>");
    Html(html)
}
