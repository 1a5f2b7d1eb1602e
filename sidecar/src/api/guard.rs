//! The server's self-protection, as tower layers: a time limit per request (body included, so
//! a slow client cannot hold a slot for long), a body cap per endpoint, and a global
//! concurrency limit that sheds new requests with an immediate 503 + `Retry-After` when full,
//! instead of queueing them.

use crate::metrics::Metrics;
use crate::state::AppState;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{BoxError, Router};
use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Duration;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;
use tower::ServiceBuilder;

/// `Retry-After` on a shed request: load passes quickly, retry soon.
pub const SHED_RETRY_AFTER_SECS: u64 = 1;

fn error_response(metrics: &Metrics, err: &BoxError) -> Response {
    if err.is::<Overloaded>() {
        metrics.requests_shed.inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, SHED_RETRY_AFTER_SECS.to_string())],
            "overloaded; retry shortly",
        )
            .into_response();
    }
    if err.is::<Elapsed>() {
        metrics.requests_timed_out.inc();
        return (StatusCode::REQUEST_TIMEOUT, "request took too long").into_response();
    }
    tracing::warn!(error = %err, "request failed in a middleware");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

fn on_error(metrics: Arc<Metrics>) -> impl Fn(BoxError) -> Ready<Response> + Clone {
    move |err| ready(error_response(&metrics, &err))
}

/// `apis` under one concurrency limit (one semaphore for every route): a request that finds
/// it full is answered 503 at once.
pub fn shed_when_full(apis: Router<AppState>, state: &AppState) -> Router<AppState> {
    apis.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(on_error(state.metrics.clone())))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(
                state.http.max_concurrent.max(1),
            )),
    )
}

/// A route's time limit (which covers reading the body) and body cap.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub timeout: Duration,
    pub body: usize,
}

impl Limit {
    pub fn new(timeout: Duration, body: usize) -> Limit {
        Limit { timeout, body }
    }
}

/// A route under its [`Limit`].
pub fn bounded(
    route: MethodRouter<AppState>,
    state: &AppState,
    limit: Limit,
) -> MethodRouter<AppState> {
    route
        .layer::<_, std::convert::Infallible>(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(on_error(state.metrics.clone())))
                .timeout(limit.timeout),
        )
        .layer(DefaultBodyLimit::max(limit.body))
}
