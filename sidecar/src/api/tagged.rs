//! Tagged-amount sessions: `POST /v1/sessions` (filter secret) hands the filter a batch of
//! pre-issued sessions for its pool; `GET /v1/admin/stray` (bearer token) lists stray payments.

use super::guard::bounded;
use super::{body_limit, BearerAuth, FilterAuth};
use crate::engine::tagged::{IssueError, SessionRequest};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use nanogate_protocol::nano::{parse_raw, PublicKey};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes(state: &AppState) -> Router<AppState> {
    let t = state.http.request_timeout;
    Router::new()
        .route(
            "/v1/sessions",
            bounded(post(sessions), state, t, body_limit::SESSIONS),
        )
        .route("/v1/admin/stray", bounded(get(stray), state, t, 0))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionsBody {
    count: usize,
    /// The route scope the sessions are for (the MAC's resource).
    scope: String,
    /// The route's price, raw.
    price: String,
    /// The payee pool (`nano_` addresses).
    pay_to: Vec<String>,
    validity_seconds: u64,
}

async fn sessions(
    State(state): State<AppState>,
    _auth: FilterAuth,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: SessionsBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed /v1/sessions body: {e}")))?;
    let price = parse_raw(&b.price)
        .map_err(|_| ApiError::BadRequest("price must be a raw integer".into()))?;
    let mut pay_to = Vec::with_capacity(b.pay_to.len());
    for a in &b.pay_to {
        pay_to.push(
            PublicKey::from_address(a)
                .map_err(|_| ApiError::BadRequest("payTo lists an invalid address".into()))?,
        );
    }
    let req = SessionRequest {
        count: b.count,
        scope: b.scope,
        price,
        pay_to,
        validity_secs: b.validity_seconds,
    };
    let issued = state
        .engine
        .issue_sessions(&req)
        .await
        .map_err(|e| match e {
            IssueError::Invalid(m) => ApiError::BadRequest(m),
            IssueError::Store(e) => {
                tracing::warn!(error = %e, "could not issue sessions");
                ApiError::Unavailable("store".into())
            }
        })?;
    let sessions: Vec<Value> = issued
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "payTo": s.pay_to.to_address(),
                "amount": s.amount.to_string(),
                "tag": s.tag.to_string(),
                "validBefore": s.valid_before,
                "keyId": s.key_id,
                "mac": s.mac,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

#[derive(Deserialize)]
struct StrayQuery {
    limit: Option<i64>,
}

async fn stray(
    State(state): State<AppState>,
    _auth: BearerAuth,
    Query(q): Query<StrayQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let list = state.engine.store().strays(limit).await.map_err(|e| {
        tracing::warn!(error = %e, "could not list stray payments");
        ApiError::Unavailable("store".into())
    })?;
    Ok(Json(json!({ "stray": list })))
}
