//! The one error answer of dnsward's HTTP APIs: a status and `{"error": …, "details": […]}`,
//! used by the review API ([`super::api`]) and the admin API (`crate::admin::api`) alike, with
//! the mapping of request rejections and policy-lifecycle errors to statuses.
//!
//! It lives in the review layer, not in `admin`, because `admin` mounts the review API: the
//! review may not import `admin` (see the layer table in the crate documentation).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::govern::control::ControlError;

/// An error answer: status, message and details, rendered as JSON. The rendered response
/// carries an [`ErrorDetail`] for the audit record of the request.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<String>,
}

/// What an error answer tells the audit event of its request: the message and details in one
/// line. Set on the response by [`ApiError`]'s `into_response`.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

impl ApiError {
    /// An answer with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A 400 answer.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The same answer listing `details` (every problem of a configuration, for instance).
    #[must_use]
    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// The status it answers with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = if self.details.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.message, self.details.join("; "))
        };
        let mut r = (
            self.status,
            Json(json!({ "error": self.message, "details": self.details })),
        )
            .into_response();
        r.extensions_mut().insert(ErrorDetail(detail));
        r
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // A body too large is 413 and one that is not `application/json` is 415, as HTTP has
        // them; anything else wrong with it (syntax, types, fields) is the documented 400.
        let status = match r.status() {
            s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(format!("invalid path: {}", r.body_text()))
    }
}

/// The answer for a path no route serves (instead of axum's empty 404).
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", shown_path(uri.path())),
    )
}

/// The answer for a known path asked with a method it does not serve (instead of axum's empty
/// 405). axum adds the `Allow` header.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not served at {}", shown_path(uri.path())),
    )
}

/// A request path as an error quotes it: a URI is ASCII (the rest percent-encoded), and one
/// of tens of kilobytes is cut, not echoed back and logged whole.
fn shown_path(path: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 200;
    match path.get(..MAX) {
        Some(head) if path.len() > MAX => format!("{head}… ({} bytes)", path.len()).into(),
        _ => path.into(),
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the configuration has problems; the running policy stays",
            )
            .with_details(problems.problems.iter().map(ToString::to_string).collect()),
            ControlError::Busy | ControlError::NoStore | ControlError::Proposal(_) => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            ControlError::Store(se) => {
                use crate::govern::store::StoreError as E;
                // The store's own failures (a full disk, a corrupt file) are the server's,
                // not the caller's: 500, so clients and monitoring tell them from a bad
                // request. An unknown version is 404; what cannot be done now, 409.
                let status = match &se {
                    E::Io { .. } | E::CorruptManifest { .. } | E::CorruptBlob { .. } => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    E::NoSuchVersion(_) => StatusCode::NOT_FOUND,
                    E::InvalidArgument { .. }
                    | E::BadProposal(_)
                    | E::IsProposal(_)
                    | E::NotAProposal(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::CONFLICT,
                };
                Self::new(status, se.to_string())
            }
            ControlError::Internal(m) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown_path;

    #[test]
    fn a_long_path_is_cut_in_errors() {
        assert_eq!(shown_path("/api/v1/nope"), "/api/v1/nope");
        let long = format!("/api/v1/{}", "a".repeat(20_000));
        let shown = shown_path(&long);
        assert!(shown.len() < 240, "{shown}");
        assert!(shown.ends_with("… (20008 bytes)"), "{shown}");
    }
}
