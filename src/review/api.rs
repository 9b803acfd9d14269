//! The review's JSON API under `/api/v1/review/`, with per-user roles; the console
//! (`crate::admin::console`) is its browser client.
//!
//! Authentication is `Authorization: Bearer <token>` only (never a query string, so no token
//! lands in a URL, a log or a Referer); a token is a user of [`super::users`]. Reads need
//! `viewer`, triage needs `analyst`, policy reload/rollback/apply and tokens need `admin`; a missing
//! or unknown token is 401, a role too low 403. State changes only by POST with a JSON body,
//! which a cross-site form cannot send with the header, so the console is CSRF-safe.
//!
//! Every request is one `admin` event in the event log (the hash chain covers it) with the
//! user as actor, and for changes what changed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};

use crate::admin::api::Object;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::api_error::{ApiError, ErrorDetail};
use super::triage::TriageError;
use super::users::{Role, User, require};
use super::{ActionError, Review, TransitionRequest};
use crate::events::{AdminEvent, Event, EventBody};
use crate::govern::store::HistoryEntry;

impl From<super::users::Forbidden> for ApiError {
    fn from(f: super::users::Forbidden) -> Self {
        Self::new(StatusCode::FORBIDDEN, f.to_string())
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let status = match &e {
            ActionError::Invalid(_) => StatusCode::BAD_REQUEST,
            ActionError::Unknown(..) => StatusCode::NOT_FOUND,
            ActionError::Triage(TriageError::Io { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            ActionError::Triage(TriageError::Full) => StatusCode::INSUFFICIENT_STORAGE,
            ActionError::Triage(_) | ActionError::Conflict(_) => StatusCode::CONFLICT,
        };
        Self::new(status, e.to_string())
    }
}

/// What a handler tells the audit record.
#[derive(Debug, Clone)]
struct Note {
    action: Option<String>,
    detail: String,
}

fn noted(mut r: Response, action: &str, detail: String) -> Response {
    r.extensions_mut().insert(Note {
        action: Some(action.to_string()),
        detail,
    });
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    crate::identity::token::bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

type Shared = Arc<Review>;

async fn auth_and_audit(State(r): State<Shared>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let user = bearer(req.headers()).and_then(|t| r.authenticate(t));
    let mut response = match &user {
        Some(u) => {
            req.extensions_mut().insert(u.clone());
            next.run(req).await
        }
        None => {
            let msg = if r.has_users() {
                "missing or wrong bearer token"
            } else {
                "the review API is disabled: set admin.token_file or admin.tokens_file"
            };
            let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    };
    let note = response.extensions().get::<Note>().cloned().or_else(|| {
        let e = response.extensions().get::<ErrorDetail>()?;
        Some(Note {
            action: None,
            detail: e.0.clone(),
        })
    });
    let event = AdminEvent {
        method,
        path,
        status: response.status().as_u16(),
        remote,
        authenticated: user.is_some(),
        actor: user.map(|u| u.name),
        action: note.as_ref().and_then(|n| n.action.clone()),
        detail: note.map(|n| n.detail),
    };
    let version = r.pipeline().policy().version.number;
    r.pipeline()
        .events()
        .emit(Event::now(version, EventBody::Admin(event)));
    response.extensions_mut().insert(crate::admin::api::Audited);
    response
}

/// The review API, for merging into the admin router.
pub fn router(review: Arc<Review>) -> Router {
    Router::new()
        .route("/api/v1/review/whoami", get(whoami))
        .route("/api/v1/review/suspects", get(list))
        .route("/api/v1/review/suspects/{client}/{domain}", get(show))
        .route(
            "/api/v1/review/suspects/{client}/{domain}/transition",
            post(transition),
        )
        .route("/api/v1/review/agents", get(agents))
        .route("/api/v1/review/exceptions", get(exceptions))
        .route(
            "/api/v1/review/exceptions/{id}",
            axum::routing::delete(exception_remove),
        )
        .route("/api/v1/review/proposals", get(proposals))
        .route("/api/v1/review/policy/history", get(history))
        .route("/api/v1/review/policy/diff", get(diff))
        .route("/api/v1/review/policy/reload", post(reload))
        .route("/api/v1/review/policy/rollback", post(rollback))
        .route("/api/v1/review/policy/apply", post(apply))
        .route("/api/v1/review/tokens", get(tokens))
        .route("/api/v1/review/tokens/reload", post(tokens_reload))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&review),
            auth_and_audit,
        ))
        .with_state(review)
}

async fn whoami(Extension(u): Extension<User>) -> Response {
    Json(json!({ "user": u.name, "role": u.role })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// `pending` (default: open and acknowledged) or `all`.
    state: Option<String>,
    client: Option<String>,
}

/// A client address as the events and the containment table write it: an IPv4-mapped IPv6
/// address (`::ffff:10.0.0.5`) is the IPv4 address, as the transition already took it (the
/// list and one suspect's view did not find it).
fn parse_client(text: &str) -> Result<IpAddr, ApiError> {
    text.parse()
        .map(crate::policy::identify::canonical)
        .map_err(|_| ApiError::bad_request(format!("client: {text:?} is not an IP address")))
}

async fn list(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&u, Role::Viewer)?;
    let Query(q) = q?;
    let client = q.client.as_deref().map(parse_client).transpose()?;
    let all = match q.state.as_deref() {
        None | Some("pending") => false,
        Some("all") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state: {other:?} is not pending or all"
            )));
        }
    };
    let r2 = Arc::clone(&r);
    let items = tokio::task::spawn_blocking(move || r2.suspects(client, None))
        .await
        .unwrap_or_default();
    let items: Vec<_> = items
        .into_iter()
        .filter(|i| all || i.state.is_pending())
        .collect();
    Ok(Json(json!({ "suspects": items })).into_response())
}

async fn show(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    require(&u, Role::Viewer)?;
    let Path((client, domain)) = path?;
    let client = parse_client(&client)?;
    let domain = crate::names::normalise(&domain);
    let r2 = Arc::clone(&r);
    let d2 = domain.clone();
    let found = tokio::task::spawn_blocking(move || r2.suspect(client, &d2))
        .await
        .ok()
        .flatten();
    let Some((item, record, timeline)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no alert for {client} on {domain}"),
        ));
    };
    let exceptions: Vec<_> = r
        .pipeline()
        .overrides()
        .exceptions()
        .into_iter()
        .filter(|e| e.group == item.suspect.group && e.domain == domain)
        .collect();
    Ok(Json(json!({
        "suspect": item,
        "history": record.map(|r| r.history).unwrap_or_default(),
        "timeline": timeline,
        "exceptions": exceptions,
    }))
    .into_response())
}

async fn transition(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<Object<TransitionRequest>>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&u, Role::Analyst)?;
    let Path((client, domain)) = path?;
    let client = parse_client(&client)?;
    let Json(Object(req)) = body?;
    let r2 = Arc::clone(&r);
    let u2 = u.clone();
    let t = tokio::task::spawn_blocking(move || r2.transition(&u2, client, &domain, &req))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let detail = format!(
        "{} on {} ({}): {} -> {}: {}{}",
        t.key.client,
        t.key.domain,
        t.group,
        t.from.as_str(),
        t.to.as_str(),
        t.note,
        if t.effects.is_empty() {
            String::new()
        } else {
            format!(" [{}]", t.effects.join("; "))
        }
    );
    let action = format!("triage_{}", t.to.as_str());
    Ok(noted(Json(t).into_response(), &action, detail))
}

async fn agents(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
) -> Result<Response, ApiError> {
    require(&u, Role::Viewer)?;
    let v = tokio::task::spawn_blocking(move || r.agents())
        .await
        .unwrap_or_default();
    Ok(Json(v).into_response())
}

async fn exceptions(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
) -> Result<Response, ApiError> {
    require(&u, Role::Viewer)?;
    Ok(Json(r.pipeline().overrides().exceptions()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveExceptionBody {
    reason: String,
}

/// An analyst ends an exception early (one added by a false positive, or by the admin API).
async fn exception_remove(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
    id: Result<Path<u64>, PathRejection>,
    body: Result<Json<Object<RemoveExceptionBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&u, Role::Analyst)?;
    let Path(id) = id?;
    let Json(Object(b)) = body?;
    check_reason(&b.reason)?;
    let (response, detail) =
        crate::admin::api::remove_exception(r.pipeline(), id, &b.reason).await?;
    Ok(noted(response, "exception_removed", detail))
}

async fn proposals(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
) -> Result<Response, ApiError> {
    require(&u, Role::Viewer)?;
    let list = r
        .proposals()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(list).into_response())
}

async fn history(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
) -> Result<Response, ApiError> {
    require(&u, Role::Viewer)?;
    let v = r.pipeline().policy().version.number;
    match r.control().store() {
        Some(store) => {
            let h = store
                .history()
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            // A proposal shows the version that applied it, if any; a corrupt manifest is an
            // entry `{"number", "corrupt"}`.
            let applied = crate::govern::store::applied_proposals(&h.versions);
            let versions: Vec<serde_json::Value> = h
                .entries()
                .into_iter()
                .map(|entry| {
                    let mut j = serde_json::to_value(entry).unwrap_or_default();
                    if let HistoryEntry::Version(info) = entry
                        && let Some(n) = applied.get(&info.number)
                    {
                        j["applied_in"] = json!(n);
                    }
                    j
                })
                .collect();
            Ok(Json(json!({ "active": v, "versions": versions })).into_response())
        }
        None => Ok(Json(json!({ "active": v, "versions": [], "note": "no [store] configured: history is not kept" })).into_response()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    a: u64,
    b: u64,
}

async fn diff(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&u, Role::Viewer)?;
    let Query(q) = q?;
    policy_diff(r.control(), q.a, q.b)
}

/// The unified diff between two stored policy versions, as text: one answer for the admin and
/// the review APIs.
pub(crate) fn policy_diff(
    control: &crate::govern::control::Control,
    a: u64,
    b: u64,
) -> Result<Response, ApiError> {
    let store = control
        .store()
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "diff needs [store] state_dir"))?;
    // The one status mapping: an unknown version is 404, as everywhere else.
    let text = store
        .diff(a, b)
        .map_err(|e| ApiError::from(crate::govern::control::ControlError::Store(e)))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    #[serde(default)]
    message: Option<String>,
}

async fn reload(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
    body: Result<Json<Object<ReloadBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&u, Role::Admin)?;
    let Json(Object(b)) = body?;
    crate::admin::api::check_message(b.message.as_deref())?;
    let done = r
        .control()
        .reload(Some(&u.name), b.message.as_deref())
        .await?;
    Ok(noted(
        Json(done.reply()).into_response(),
        "reload",
        format!("now version {}", done.version.number),
    ))
}

/// A reason is said, bounded and holds no control character but line breaks and tabs: the
/// admin API's check, so both APIs accept the same reasons.
fn check_reason(reason: &str) -> Result<(), ApiError> {
    crate::admin::api::require("reason", reason)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    to: Option<u64>,
    reason: String,
}

async fn rollback(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
    body: Result<Json<Object<RollbackBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&u, Role::Admin)?;
    let Json(Object(b)) = body?;
    check_reason(&b.reason)?;
    let info = r.control().rollback(b.to, &u.name, &b.reason).await?;
    let detail = crate::admin::api::rollback_detail(&info, &b.reason);
    Ok(noted(Json(info).into_response(), "rollback", detail))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    version: u64,
    reason: String,
}

/// An admin makes a proposed version the running policy, as its author.
async fn apply(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
    body: Result<Json<Object<ApplyBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&u, Role::Admin)?;
    let Json(Object(b)) = body?;
    check_reason(&b.reason)?;
    let info = r.control().apply(b.version, &u.name, &b.reason).await?;
    let (body, detail) = applied(r.control(), &info, b.version, &b.reason);
    Ok(noted(Json(body).into_response(), "apply", detail))
}

async fn tokens(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
) -> Result<Response, ApiError> {
    require(&u, Role::Admin)?;
    Ok(Json(r.users()).into_response())
}

async fn tokens_reload(
    State(r): State<Shared>,
    Extension(u): Extension<User>,
) -> Result<Response, ApiError> {
    require(&u, Role::Admin)?;
    match r.reload_users() {
        Ok(list) => {
            let detail = format!("{} users", list.len());
            Ok(noted(Json(list).into_response(), "tokens_reloaded", detail))
        }
        Err(p) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the tokens file has problems; the old tokens stay",
        )
        .with_details(p.problems.iter().map(ToString::to_string).collect())),
    }
}

/// The answer to an applied proposal and its audit detail, for both APIs that apply one. The
/// change lives in the store; the answer lists the live files that still lack it until they
/// are written back (`dnsward policy cat N --write-back`).
pub(crate) fn applied(
    control: &crate::govern::control::Control,
    info: &crate::govern::store::VersionInfo,
    proposal: u64,
    reason: &str,
) -> (serde_json::Value, String) {
    let detail = format!(
        "version {} applies proposal {} ({}): {}",
        info.number,
        proposal,
        info.change.as_deref().unwrap_or("-"),
        reason
    );
    let mut body = serde_json::to_value(info).unwrap_or_default();
    body["live_differs"] = json!(control.live_differs(info.number));
    (body, detail)
}
