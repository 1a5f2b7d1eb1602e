//! The standard x402 facilitator API (`POST /verify`, `POST /settle`, `GET /supported`) and
//! `POST /v1/challenge`, which issues MAC-bound requirements for resource servers. `/verify`,
//! `/settle` and `/v1/challenge` need `Authorization: Bearer <facilitator.token>`.
//!
//! Requirements are accepted only if this sidecar issued them (a valid MAC in `extra`, as
//! `/v1/challenge` writes it) or, with `facilitator.allow_unbound = true`, if their payee is in
//! `facilitator.pay_to`. Unbound requirements get every ledger check, but nothing ties them to
//! one request: replay protection rests on the spent set alone (see sidecar/README.md).

use super::guard::bounded;
use super::{body_limit, BearerAuth};
use crate::engine::{unix_now, BindingPolicy, PaymentInput, Rejection, Verdict};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nanogate_protocol::challenge::{self, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::nano::{parse_raw, PublicKey};
use nanogate_protocol::x402::{
    ErrorReason, PaymentRequirements, SettlementResponse, SupportedKind, SupportedResponse,
    VerifyResponse, X402_VERSION_1, X402_VERSION_2,
};
use serde::Deserialize;
use serde_json::Value;

pub fn routes(state: &AppState) -> Router<AppState> {
    let t = state.http.request_timeout;
    Router::new()
        .route(
            "/verify",
            bounded(post(verify), state, t, body_limit::PAYMENT),
        )
        .route(
            "/settle",
            bounded(
                post(settle),
                state,
                state.http.settle_timeout,
                body_limit::PAYMENT,
            ),
        )
        .route("/supported", bounded(get(supported), state, t, 0))
        .route(
            "/v1/challenge",
            bounded(post(issue_challenge), state, t, body_limit::CHALLENGE),
        )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FacilitatorBody {
    payment_payload: Value,
    payment_requirements: Value,
}

/// Reads a facilitator body (v2 requirements, or v1 with `maxAmountRequired` + `resource`).
fn read_body(body: &[u8]) -> Result<PaymentInput, Rejection> {
    let bad = |m: String| Rejection::new(ErrorReason::InvalidPayload, m);
    let b: FacilitatorBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed body: {e}")))?;
    let r = &b.payment_requirements;
    let (requirements, resource) = if let Some(max) = r.get("maxAmountRequired") {
        let s = |k: &str| {
            r.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let req = PaymentRequirements {
            scheme: s("scheme"),
            network: s("network"),
            amount: max.as_str().unwrap_or_default().to_owned(),
            asset: s("asset"),
            pay_to: s("payTo"),
            max_timeout_seconds: r
                .get("maxTimeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            extra: r
                .get("extra")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        };
        (req, s("resource"))
    } else {
        let req: PaymentRequirements = serde_json::from_value(b.payment_requirements.clone())
            .map_err(|e| {
                Rejection::new(
                    ErrorReason::InvalidPaymentRequirements,
                    format!("paymentRequirements: {e}"),
                )
            })?;
        (req, String::new())
    };
    Ok(PaymentInput {
        resource,
        requirements,
        payment: b.payment_payload,
        binding: BindingPolicy::Facilitator,
    })
}

fn status_of(v: &Verdict) -> StatusCode {
    match v {
        Verdict::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Verdict::Reject(r) if r.status == 400 => StatusCode::BAD_REQUEST,
        Verdict::Reject(r) if r.status == 429 => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::OK,
    }
}

/// A facilitator answer: its status, plus `Retry-After` on a 429.
fn answer<T: serde::Serialize>(v: &Verdict, body: T) -> Response {
    let mut resp = (status_of(v), Json(body)).into_response();
    if let Verdict::Reject(Rejection {
        retry_after: Some(s),
        ..
    }) = v
    {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(*s),
        );
    }
    resp
}

async fn verify(State(state): State<AppState>, _auth: BearerAuth, body: Bytes) -> Response {
    let input = match read_body(&body) {
        Ok(i) => i,
        Err(r) => {
            state.metrics.reject(r.reason.as_str());
            let v = Verdict::Reject(r);
            return answer(&v, verify_response(&v));
        }
    };
    let v = match state.engine.verify_only(&input).await {
        Ok(payer) => {
            return Json(VerifyResponse::valid(Some(payer))).into_response();
        }
        Err(v) => v,
    };
    answer(&v, verify_response(&v))
}

fn verify_response(v: &Verdict) -> VerifyResponse {
    match v {
        Verdict::Admit(a) => VerifyResponse::valid(Some(a.payer.clone())),
        Verdict::Reject(r) | Verdict::Unavailable(r) => {
            let mut resp = VerifyResponse::invalid(r.reason, r.payer.clone());
            resp.invalid_message = Some(r.message.clone());
            resp
        }
    }
}

async fn settle(State(state): State<AppState>, _auth: BearerAuth, body: Bytes) -> Response {
    let network = state.engine.config().network.clone();
    let v = match read_body(&body) {
        Ok(input) => {
            let engine = state.engine.clone();
            match tokio::spawn(async move { engine.pay(&input).await }).await {
                Ok(v) => v,
                Err(_) => Verdict::Unavailable(Rejection::new(
                    ErrorReason::UnexpectedSettleError,
                    "internal error while settling",
                )),
            }
        }
        Err(r) => {
            state.metrics.reject(r.reason.as_str());
            Verdict::Reject(r)
        }
    };
    let resp = match &v {
        Verdict::Admit(a) => a.settlement.clone(),
        Verdict::Reject(r) | Verdict::Unavailable(r) => {
            let mut s = SettlementResponse::failure(r.reason, network, r.payer.clone());
            s.error_message = Some(r.message.clone());
            s
        }
    };
    answer(&v, resp)
}

async fn supported(State(state): State<AppState>) -> Json<SupportedResponse> {
    let network = state.engine.config().network.clone();
    let kind = |v| SupportedKind {
        x402_version: v,
        scheme: "exact".into(),
        network: network.clone(),
        extra: None,
    };
    Json(SupportedResponse {
        kinds: vec![kind(X402_VERSION_2), kind(X402_VERSION_1)],
        extensions: Vec::new(),
        signers: Default::default(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChallengeRequest {
    /// The resource URL the payment will buy.
    resource: String,
    /// Raw amount, decimal string.
    amount: String,
    pay_to: String,
    max_timeout_seconds: Option<u64>,
}

/// Issues MAC-bound `PaymentRequirements` (signed-block mechanism) for a resource server.
async fn issue_challenge(
    State(state): State<AppState>,
    _auth: BearerAuth,
    body: Bytes,
) -> Result<Json<PaymentRequirements>, ApiError> {
    let req: ChallengeRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed body: {e}")))?;
    let amount = parse_raw(&req.amount)
        .ok()
        .filter(|a| *a > 0)
        .ok_or_else(|| ApiError::BadRequest("amount must be a positive raw integer".into()))?;
    let pay_to = PublicKey::from_address(&req.pay_to)
        .map_err(|_| ApiError::BadRequest("payTo is not a Nano address".into()))?;
    let cfg = state.engine.config();
    if !cfg.pay_to_allow.is_empty() && !cfg.pay_to_allow.contains(&pay_to) {
        return Err(ApiError::BadRequest(
            "payTo is not in the allow-list".into(),
        ));
    }
    let timeout = req
        .max_timeout_seconds
        .unwrap_or(state.challenge_max_timeout_secs)
        .clamp(1, 3_600);
    let now = unix_now();
    let key = state.engine.keys().current(now);
    let stamp = ChallengeStamp {
        valid_before: now.saturating_add(timeout),
        nonce: rand::random(),
        key_id: key.key_id,
    };
    let terms = ChallengeTerms {
        network: &cfg.network,
        scheme: "exact",
        asset: "XNO",
        pay_to,
        amount,
        resource: &req.resource,
        mechanism: Mechanism::SignedBlock,
    };
    let mut extra = challenge::extra(&key.key, &terms, &stamp);
    extra.insert("resource".into(), Value::String(req.resource.clone()));
    Ok(Json(PaymentRequirements {
        scheme: "exact".into(),
        network: cfg.network.clone(),
        amount: amount.to_string(),
        asset: "XNO".into(),
        pay_to: pay_to.to_address(),
        max_timeout_seconds: timeout,
        extra,
    }))
}
