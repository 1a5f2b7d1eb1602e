//! Tagged-amount sessions: `POST /v1/sessions` (filter secret) hands the filter a batch of
//! pre-issued sessions for its pool; `GET /v1/admin/stray` (bearer token) lists stray payments.

use super::guard::Limit;
use super::{body_limit, Credential, Group, Verb};
use crate::engine::tagged::{IssueError, SessionRequest};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::Json;
use nanogate_protocol::contract::{paths, SessionOffer, SessionsAnswer, SessionsRequest};
use nanogate_protocol::nano::{parse_raw, PublicKey};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn filter_routes(state: &AppState) -> Group {
    let limit = Limit::new(state.http.request_timeout, body_limit::SESSIONS);
    Group::new(state, Credential::FilterSecret, true).route(
        Verb::Post,
        paths::SESSIONS,
        sessions,
        Some(limit),
    )
}

pub fn admin_routes(state: &AppState) -> Group {
    let limit = Limit::new(state.http.request_timeout, 0);
    Group::new(state, Credential::Bearer, true).route(
        Verb::Get,
        paths::ADMIN_STRAY,
        stray,
        Some(limit),
    )
}

async fn sessions(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<SessionsAnswer>, ApiError> {
    let b: SessionsRequest = serde_json::from_slice(&body)
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
    let sessions = issued
        .into_iter()
        .map(|s| SessionOffer {
            id: s.id,
            pay_to: s.pay_to.to_address(),
            amount: s.amount,
            tag: s.tag,
            valid_before: s.valid_before,
            key_id: s.key_id,
            mac: s.mac,
        })
        .collect();
    Ok(Json(SessionsAnswer { sessions }))
}

#[derive(Deserialize)]
struct StrayQuery {
    limit: Option<i64>,
}

async fn stray(
    State(state): State<AppState>,
    Query(q): Query<StrayQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let list = state.engine.store().strays(limit).await.map_err(|e| {
        tracing::warn!(error = %e, "could not list stray payments");
        ApiError::Unavailable("store".into())
    })?;
    Ok(Json(json!({ "stray": list })))
}
