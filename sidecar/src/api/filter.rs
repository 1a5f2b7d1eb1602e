//! The filter API (docs/filter-sidecar.md). Every endpoint needs `x-nanogate-secret`.
//! `/v1/pay` always answers HTTP 200 with `x-nanogate-verdict: 1`, so Envoy's own 503/504 for
//! transport failures can never read as a verdict.

use super::{check_filter_secret, MAX_BODY_BYTES};
use crate::engine::{unix_now, BindingPolicy, PaymentInput, Rejection, Verdict};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nanogate_protocol::x402::{encode_header, ErrorReason, PaymentRequirements};
use serde::Deserialize;
use serde_json::{json, Value};

pub const VERDICT_HEADER: &str = "x-nanogate-verdict";
/// Seconds the filter should put in `Retry-After` when the ledger is unavailable.
pub const RETRY_AFTER_SECS: u64 = 2;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/challenge-key", get(challenge_key))
        .route("/v1/pay", post(pay))
        .route("/v1/outcome", post(outcome))
}

async fn challenge_key(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_filter_secret(&state, &headers)?;
    let keys = state.engine.keys();
    let k = keys.current(unix_now());
    let mut body = json!({
        "keyId": k.key_id,
        "key": k.key.to_hex(),
        "notAfter": k.not_after,
    });
    // The previous key is still honoured: a filter that starts (or restarts) just after a
    // rotation needs it to accept challenges issued before it, by itself or another replica.
    if let Some(p) = keys.previous(unix_now()) {
        body["previous"] = json!({"keyId": p.key_id, "key": p.key.to_hex()});
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
struct PayBody {
    resource: String,
    requirements: PaymentRequirements,
    payment: Value,
}

/// The verdict as the filter reads it.
pub fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Admit(a) => json!({
            "verdict": "admit",
            "receipt": a.receipt,
            "transaction": a.transaction.to_hex(),
            "payer": a.payer,
            "paymentResponse": encode_header(&a.settlement),
            "redeemed": a.redeemed,
        }),
        Verdict::Reject(r) => json!({
            "verdict": "reject",
            "reason": r.reason.as_str(),
            "message": r.message,
            "status": r.status,
        }),
        Verdict::Unavailable(r) => json!({
            "verdict": "unavailable",
            "reason": r.reason.as_str(),
            "message": r.message,
            "retryAfter": RETRY_AFTER_SECS,
        }),
    }
}

fn verdict_response(v: &Verdict) -> Response {
    let mut resp = Json(verdict_json(v)).into_response();
    resp.headers_mut().insert(
        HeaderName::from_static(VERDICT_HEADER),
        HeaderValue::from_static("1"),
    );
    resp
}

async fn pay(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = check_filter_secret(&state, &headers) {
        return e.into_response();
    }
    if body.len() > MAX_BODY_BYTES {
        return verdict_response(&Verdict::Reject(Rejection::new(
            ErrorReason::InvalidPayload,
            "request body too large",
        )));
    }
    let parsed: PayBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            state.metrics.reject(ErrorReason::InvalidPayload.as_str());
            return verdict_response(&Verdict::Reject(Rejection::new(
                ErrorReason::InvalidPayload,
                format!("malformed /v1/pay body: {e}"),
            )));
        }
    };
    let input = PaymentInput {
        resource: parsed.resource,
        requirements: parsed.requirements,
        payment: parsed.payment,
        binding: BindingPolicy::Required,
    };
    // Settle in its own task: a dropped connection must not cancel a settlement half-way.
    let engine = state.engine.clone();
    let verdict = match tokio::spawn(async move { engine.pay(&input).await }).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "settlement task failed");
            Verdict::Unavailable(Rejection::new(
                ErrorReason::UnexpectedSettleError,
                "internal error while settling",
            ))
        }
    };
    verdict_response(&verdict)
}

#[derive(Deserialize)]
struct OutcomeBody {
    receipt: String,
    status: u16,
}

async fn outcome(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_filter_secret(&state, &headers)?;
    let o: OutcomeBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed /v1/outcome body: {e}")))?;
    let recorded = state
        .engine
        .record_outcome(&o.receipt, o.status)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "could not record an outcome");
            ApiError::Unavailable("store".into())
        })?;
    tracing::debug!(receipt = %o.receipt, status = o.status, recorded, "upstream outcome");
    Ok(Json(json!({ "ok": true, "recorded": recorded })))
}
