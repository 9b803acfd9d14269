//! The review console (issue 12): one HTML page, one stylesheet and one script, embedded with
//! `include_str!` and served under `/console` on the admin listener. No build step, no CDN, no
//! framework.
//!
//! The page holds no data and needs no token to load; it asks for a token once, keeps it in
//! `sessionStorage` (gone when the tab closes) and sends it as `Authorization: Bearer` on every
//! `fetch()` to `/api/v1/review/...`; state changes are POSTs. A strict Content-Security-Policy
//! (`script-src 'self'`, no inline script or style) keeps injected markup inert.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// The stylesheet.
pub const CONSOLE_CSS: &str = include_str!("console.css");
/// The script.
pub const CONSOLE_JS: &str = include_str!("console.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Routes for `/console`, `/console/`, `/console/console.css` and `/console/console.js`.
pub fn router() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
}
