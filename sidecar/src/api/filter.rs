//! The filter API (docs/filter-sidecar.md). Every endpoint needs `x-nanogate-secret`.
//! `/v1/pay` always answers HTTP 200 with `x-nanogate-verdict: 1`, so Envoy's own 503/504 for
//! transport failures can never read as a verdict.

use super::{check_filter_secret, MAX_BODY_BYTES};
use crate::engine::{unix_now, BindingPolicy, PayContext, PaymentInput, Rejection, Verdict};
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
    // Older keys whose challenges may still have a redeemable payment: the filter uses them
    // only to authenticate expired challenges it forwards for redemption, never to accept a
    // fresh payment (docs/payments.md).
    let retired: Vec<Value> = keys
        .retired(unix_now(), state.engine.redemption_horizon_secs())
        .iter()
        .map(|r| json!({"keyId": r.key_id, "key": r.key.to_hex()}))
        .collect();
    body["retired"] = Value::Array(retired);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayBody {
    resource: String,
    requirements: PaymentRequirements,
    payment: Value,
    /// The route's upstream timeout: the admission's lease (absent: Envoy's default, 15 s).
    #[serde(default)]
    upstream_timeout_ms: Option<u64>,
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
    // The settlement wait is measured from here.
    let arrived = std::time::Instant::now();
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
    let ctx = PayContext {
        arrived,
        ..PayContext::with_upstream_timeout_ms(parsed.upstream_timeout_ms)
    };
    let input = PaymentInput {
        resource: parsed.resource,
        requirements: parsed.requirements,
        payment: parsed.payment,
        binding: BindingPolicy::Required,
    };
    // Settle in its own task: a dropped connection must not cancel a settlement half-way. When
    // the filter stopped waiting (it timed out and Envoy dropped the call, so this handler is
    // gone), an admission cannot reach it: the payment becomes redeemable instead of holding
    // a lease for a request that never runs.
    let engine = state.engine.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<Verdict>();
    let task = tokio::spawn(async move {
        let verdict = engine.pay_with(&input, ctx).await;
        if let Err(Verdict::Admit(a)) = tx.send(verdict) {
            engine.undelivered(&a.receipt).await;
        }
    });
    let verdict = match rx.await {
        Ok(v) => v,
        Err(_) => {
            let e = task.await.err();
            tracing::error!(error = ?e, "settlement task failed");
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
