//! Health (`/healthz`: the process is up), readiness (`/readyz`: the store answers and a node
//! answers `version` with the configured network) and Prometheus `/metrics`.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let engine = &state.engine;
    let bound = Duration::from_secs(3);
    let store_ok = matches!(
        tokio::time::timeout(bound, engine.store().ping()).await,
        Ok(Ok(()))
    );
    let want = engine.config().node_network.rpc_name();
    let ledger_ok = matches!(
        tokio::time::timeout(bound, engine.ledger().network()).await,
        Ok(Ok(ref n)) if n == want
    );
    let status = if store_ok && ledger_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": store_ok && ledger_ok, "store": store_ok, "ledger": ledger_ok })),
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
