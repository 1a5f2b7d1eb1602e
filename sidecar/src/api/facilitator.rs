//! The standard x402 facilitator API (`POST /verify`, `POST /settle`, `GET /supported`) and
//! `POST /v1/challenge`, which issues MAC-bound requirements for resource servers. `/verify`,
//! `/settle` and `/v1/challenge` need `Authorization: Bearer <facilitator.token>`.
//!
//! Requirements are accepted only if this sidecar issued them (a valid MAC in `extra`, as
//! `/v1/challenge` writes it) or, with `facilitator.allow_unbound = true`, if their payee is in
//! `facilitator.pay_to`. Unbound requirements get every ledger check, but nothing ties them to
//! one request: replay protection rests on the spent set alone (see sidecar/README.md).

use super::guard::Limit;
use super::{body_limit, Credential, Group, Verb};
use crate::engine::{
    unix_now, BindingPolicy, PaymentInput, Rejection, Verdict, MAX_CHALLENGE_SECS,
};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanogate_protocol::challenge::EXTRA_RESOURCE;
use nanogate_protocol::contract::{paths, ChallengeRequest, Mechanism, Offer, Payee, SCHEME_EXACT};
use nanogate_protocol::nano::parse_raw;
use nanogate_protocol::x402::{
    ErrorReason, FacilitatorRequest, PaymentRequirements, PaymentRequirementsV1,
    SettlementResponse, SupportedKind, SupportedResponse, VerifyResponse, X402_VERSION_1,
    X402_VERSION_2,
};
use serde_json::Value;

pub fn routes(state: &AppState) -> Group {
    let t = state.http.request_timeout;
    Group::new(state, Credential::Bearer, true)
        .route(
            Verb::Post,
            paths::VERIFY,
            verify,
            Some(Limit::new(t, body_limit::PAYMENT)),
        )
        .route(
            Verb::Post,
            paths::SETTLE,
            settle,
            Some(Limit::new(state.http.settle_timeout, body_limit::PAYMENT)),
        )
        .route(
            Verb::Post,
            paths::CHALLENGE,
            issue_challenge,
            Some(Limit::new(t, body_limit::CHALLENGE)),
        )
}

/// `/supported` needs no credential.
pub fn public_routes(state: &AppState) -> Group {
    let limit = Limit::new(state.http.request_timeout, 0);
    Group::new(state, Credential::Public, true).route(
        Verb::Get,
        paths::SUPPORTED,
        supported,
        Some(limit),
    )
}

/// Reads a facilitator body: v2 requirements, or v1 ones (told apart by `maxAmountRequired`),
/// whose `resource` is the URL the payment is bound to. The payment stays JSON: the engine
/// decodes it with the same rules as a payment header.
fn read_body(body: &[u8]) -> Result<PaymentInput, Rejection> {
    let b: FacilitatorRequest<Value, Value> = serde_json::from_slice(body)
        .map_err(|e| Rejection::new(ErrorReason::InvalidPayload, format!("malformed body: {e}")))?;
    let bad_requirements = |e: serde_json::Error| {
        Rejection::new(
            ErrorReason::InvalidPaymentRequirements,
            format!("paymentRequirements: {e}"),
        )
    };
    let r = b.payment_requirements;
    let (requirements, resource) = if r.get("maxAmountRequired").is_some() {
        let v1: PaymentRequirementsV1 = serde_json::from_value(r).map_err(bad_requirements)?;
        (v1.to_v2(), v1.resource)
    } else {
        let v2: PaymentRequirements = serde_json::from_value(r).map_err(bad_requirements)?;
        (v2, String::new())
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

async fn verify(State(state): State<AppState>, body: Bytes) -> Response {
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

async fn settle(State(state): State<AppState>, body: Bytes) -> Response {
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
        scheme: SCHEME_EXACT.into(),
        network: network.clone(),
        extra: None,
    };
    Json(SupportedResponse {
        kinds: vec![kind(X402_VERSION_2), kind(X402_VERSION_1)],
        extensions: Vec::new(),
        signers: Default::default(),
    })
}

/// Issues MAC-bound `PaymentRequirements` (signed-block mechanism) for a resource server.
async fn issue_challenge(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<PaymentRequirements>, ApiError> {
    let req: ChallengeRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed body: {e}")))?;
    let amount = parse_raw(&req.amount)
        .ok()
        .filter(|a| *a > 0)
        .ok_or_else(|| ApiError::BadRequest("amount must be a positive raw integer".into()))?;
    let pay_to = Payee::from_address(&req.pay_to)
        .map_err(|_| ApiError::BadRequest("payTo is not a Nano address".into()))?;
    let cfg = state.engine.config();
    if !cfg.pay_to_allow.is_empty() && !cfg.pay_to_allow.contains(&pay_to.key) {
        return Err(ApiError::BadRequest(
            "payTo is not in the allow-list".into(),
        ));
    }
    let offer = Offer {
        network: &cfg.network,
        pay_to: &pay_to,
        amount,
        max_timeout_seconds: req
            .max_timeout_seconds
            .unwrap_or(state.challenge_max_timeout_secs)
            .clamp(1, MAX_CHALLENGE_SECS),
        resource: &req.resource,
        mechanism: Mechanism::SignedBlock,
    };
    let now = unix_now();
    let key = state.engine.keys().current(now);
    let mut requirements = offer.issue(&key.key, &offer.stamp(now, rand::random(), key.key_id));
    requirements
        .extra
        .insert(EXTRA_RESOURCE.into(), Value::String(req.resource.clone()));
    Ok(Json(requirements))
}
