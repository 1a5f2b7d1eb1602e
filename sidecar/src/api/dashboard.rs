//! `GET /dashboard`: the operator's dashboard, one self-contained HTML page (inline CSS and
//! JS, the revenue chart drawn as inline SVG, no external asset).
//!
//! The page is public because it holds no data: a browser cannot attach a bearer token to a
//! navigation. The page asks for the token (or reads it from the URL fragment, `#token=…`,
//! which browsers never send to a server, so it reaches no access log), keeps it in the tab's
//! `sessionStorage`, and calls the admin APIs with `Authorization: Bearer`; without the right
//! token every figure stays hidden behind the APIs' 401.

use super::{Credential, Group, Verb};
use crate::state::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use nanogate_protocol::contract::paths;

/// The page, kept as a file so it reads (and diffs) as HTML.
const PAGE: &str = include_str!("dashboard.html");

pub fn routes(state: &AppState) -> Group {
    Group::new(state, Credential::Public, false).route(Verb::Get, paths::DASHBOARD, page, None)
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing but the page's own inline script and style, and calls back to this
            // origin; no framing, no referrer (the fragment is never sent anyway).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
