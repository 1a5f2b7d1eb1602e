//! The filter API (docs/filter-sidecar.md). Every endpoint needs `x-nanogate-secret`.
//! `/v1/pay` always answers HTTP 200 with `x-nanogate-verdict: 1`, so Envoy's own 503/504 for
//! transport failures can never read as a verdict.

use super::guard::bounded;
use super::{body_limit, FilterAuth};
use crate::engine::{
    unix_now, BindingPolicy, OutcomeReport, PayContext, PaymentInput, Rejection, Verdict,
};
use crate::error::ApiError;
use crate::limits::parse_source;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nanogate_protocol::x402::{encode_header, ErrorReason, PaymentRequirements};
use serde::Deserialize;
use serde_json::{json, Value};

pub const VERDICT_HEADER: &str = "x-nanogate-verdict";
/// Seconds the filter should put in `Retry-After` when the ledger is unavailable.
pub const RETRY_AFTER_SECS: u64 = 2;

pub fn routes(state: &AppState) -> Router<AppState> {
    let short = state.http.request_timeout;
    Router::new()
        .route(
            "/v1/challenge-key",
            bounded(get(challenge_key), state, short, 0),
        )
        .route(
            "/v1/pay",
            bounded(
                post(pay),
                state,
                state.http.settle_timeout,
                body_limit::PAYMENT,
            ),
        )
        .route(
            "/v1/outcome",
            bounded(post(outcome), state, short, body_limit::OUTCOME),
        )
}

async fn challenge_key(
    State(state): State<AppState>,
    _auth: FilterAuth,
) -> Result<Json<Value>, ApiError> {
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
    /// The client's address as the filter sees it (Envoy's `source.address`), for the
    /// per-source limit.
    #[serde(default)]
    source: Option<String>,
}

/// The verdict as the filter reads it.
pub fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Admit(a) => {
            let mut v = json!({
                "verdict": "admit",
                "receipt": a.receipt,
                "transaction": a.transaction.to_hex(),
                "payer": a.payer,
                "paymentResponse": encode_header(&a.settlement),
                "redeemed": a.redeemed,
            });
            // Only the admitting proxy gets it: it never leaves the proxy.
            if let Some(t) = &a.admission_token {
                v["admissionToken"] = json!(t);
            }
            v
        }
        Verdict::Reject(r) => {
            let mut v = json!({
                "verdict": "reject",
                "reason": r.reason.as_str(),
                "message": r.message,
                "status": r.status,
            });
            if let Some(s) = r.retry_after {
                v["retryAfter"] = json!(s);
            }
            v
        }
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

async fn pay(State(state): State<AppState>, _auth: FilterAuth, body: Bytes) -> Response {
    // The settlement wait is measured from here.
    let arrived = std::time::Instant::now();
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
    let source = parsed.source.as_deref().and_then(parse_source);
    let limits = state.engine.limits().clone();
    if let Err(wait) = limits.source_allowed(source) {
        state.metrics.reject(ErrorReason::RateLimited.as_str());
        return verdict_response(&Verdict::Reject(Rejection::rate_limited(
            wait.0,
            "too many refused payments from this client; retry later",
        )));
    }
    let input = PaymentInput {
        resource: parsed.resource,
        requirements: parsed.requirements,
        payment: parsed.payment,
        binding: BindingPolicy::Required,
    };
    // Settle in its own task: a dropped connection (or the request's time limit) must not
    // cancel a settlement half-way. When the filter stopped waiting (it timed out and Envoy
    // dropped the call, so this handler is gone), an admission cannot reach it: the payment
    // becomes redeemable instead of holding a lease for a request that never runs.
    let engine = state.engine.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<Verdict>();
    let task = tokio::spawn(async move {
        let verdict = engine.pay_with(&input, ctx).await;
        if matches!(verdict, Verdict::Reject(_)) {
            limits.source_refused(source);
        }
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
#[serde(rename_all = "camelCase")]
struct OutcomeBody {
    receipt: String,
    status: u16,
    /// The token of the admission this outcome is for (from its verdict).
    #[serde(default)]
    admission_token: Option<String>,
}

async fn outcome(
    State(state): State<AppState>,
    _auth: FilterAuth,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let o: OutcomeBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed /v1/outcome body: {e}")))?;
    let report = state
        .engine
        .record_outcome(&o.receipt, o.status, o.admission_token.as_deref())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "could not record an outcome");
            ApiError::Unavailable("store".into())
        })?;
    let recorded = match report {
        OutcomeReport::Recorded => true,
        OutcomeReport::NotAdmitted => false,
        OutcomeReport::Refused(why) => {
            return Err(ApiError::Forbidden(format!(
                "outcome not recorded ({why}): only the admission's own token (from its \
                 verdict) reports its outcome"
            )))
        }
    };
    tracing::debug!(receipt = %o.receipt, status = o.status, recorded, "upstream outcome");
    Ok(Json(json!({ "ok": true, "recorded": recorded })))
}
