//! The standard x402 facilitator API (`POST /verify`, `POST /settle`, `GET /supported`) and
//! `POST /v1/challenge`, which issues MAC-bound requirements for resource servers. `/verify`,
//! `/settle` and `/v1/challenge` need `Authorization: Bearer <facilitator.token>`.
//!
//! Requirements are accepted only if this sidecar issued them (a valid MAC in `extra`, as
//! `/v1/challenge` writes it) or, with `facilitator.allow_unbound = true`, if their payee is in
//! `facilitator.pay_to`. Unbound requirements get every ledger check, but nothing ties them to
//! one request: replay protection rests on the spent set alone (see sidecar/README.md).
//!
//! Status codes, as the official SDKs read them: the Python SDK (`x402` 2.25) treats any
//! status but 200 as a transport failure and loses the body; the TypeScript SDK (`@x402/core`
//! 2.27) reads `isValid`/`success` from any status. So a refusal is answered **200** with
//! `isValid: false` / `success: false` and its reason (`rate_limited` keeps `Retry-After`);
//! **400** only for a body that is not a facilitator request at all; **503** (+ `Retry-After`,
//! and the reason in the body) only when the payment cannot be decided (ledger, store or work
//! source unavailable).

use super::filter::RETRY_AFTER_SECS;
use super::guard::Limit;
use super::{body_limit, Credential, Group, Verb};
use crate::engine::work::WorkPolicy;
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
use nanogate_protocol::contract::facilitator::work;
use nanogate_protocol::contract::{
    paths, ChallengeRequest, Mechanism, Offer, Payee, ASSET_XNO, SCHEME_EXACT,
};
use nanogate_protocol::nano::parse_raw;
use nanogate_protocol::x402::{
    ErrorReason, FacilitatorRequest, PaymentRequirements, PaymentRequirementsV1,
    SettlementResponse, SupportedKind, SupportedResponse, VerifyResponse, X402_VERSION_1,
    X402_VERSION_2,
};
use serde_json::Value;

/// `/verify`, `/settle`, and `/v1/challenge` when a challenge secret is configured (without
/// one nothing could verify the challenges it issues).
pub fn routes(state: &AppState) -> Group {
    let t = state.http.request_timeout;
    let group = Group::new(state, Credential::Bearer, true)
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
        );
    if !state.facilitator.issues_challenges {
        return group;
    }
    group.route(
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

/// Why a facilitator body was not taken.
enum BodyError {
    /// Not a facilitator request at all (not JSON, or no `paymentPayload` /
    /// `paymentRequirements`): 400.
    Malformed(Rejection),
    /// A request whose requirements we cannot read: a refusal like any other (200).
    Refused(Rejection),
}

impl BodyError {
    fn into_verdict(self) -> Verdict {
        match self {
            BodyError::Malformed(r) | BodyError::Refused(r) => Verdict::Reject(r),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            BodyError::Malformed(_) => StatusCode::BAD_REQUEST,
            BodyError::Refused(_) => StatusCode::OK,
        }
    }
}

/// Reads a facilitator body: v2 requirements, or v1 ones (told apart by `maxAmountRequired`),
/// whose `resource` is the URL the payment is bound to. The payment stays JSON: the engine
/// decodes it with the same rules as a payment header.
fn read_body(body: &[u8], work: WorkPolicy) -> Result<PaymentInput, BodyError> {
    let b: FacilitatorRequest<Value, Value> = serde_json::from_slice(body).map_err(|e| {
        BodyError::Malformed(Rejection::new(
            ErrorReason::InvalidPayload,
            format!("malformed body: {e}"),
        ))
    })?;
    let bad_requirements = |e: serde_json::Error| {
        BodyError::Refused(Rejection::new(
            ErrorReason::InvalidPaymentRequirements,
            format!("paymentRequirements: {e}"),
        ))
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
        work,
    })
}

/// The status of a decided verdict: 503 when it could not be decided, else 200 (a refusal
/// included, whatever status the filter would answer; see the module docs).
fn status_of(v: &Verdict) -> StatusCode {
    match v {
        Verdict::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

/// A facilitator answer: its status, plus `Retry-After` on `rate_limited` and on 503.
fn answer<T: serde::Serialize>(status: StatusCode, v: &Verdict, body: T) -> Response {
    let mut resp = (status, Json(body)).into_response();
    let retry_after = match v {
        Verdict::Reject(r) => r.retry_after,
        Verdict::Unavailable(r) => Some(r.retry_after.unwrap_or(RETRY_AFTER_SECS)),
        Verdict::Admit(_) => None,
    };
    if let Some(s) = retry_after {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(s),
        );
    }
    resp
}

fn work_policy(state: &AppState) -> WorkPolicy {
    if state.facilitator.attach_work {
        WorkPolicy::Attach
    } else {
        WorkPolicy::Required
    }
}

async fn verify(State(state): State<AppState>, body: Bytes) -> Response {
    let input = match read_body(&body, work_policy(&state)) {
        Ok(i) => i,
        Err(e) => {
            let status = e.status();
            let v = e.into_verdict();
            if let Some(reason) = v.reason() {
                state.metrics.reject(reason.as_str());
            }
            return answer(status, &v, verify_response(&v));
        }
    };
    let v = match state.engine.verify_only(&input).await {
        Ok(payer) => {
            return Json(VerifyResponse::valid(Some(payer))).into_response();
        }
        Err(v) => v,
    };
    answer(status_of(&v), &v, verify_response(&v))
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
    let mut status = None;
    let v = match read_body(&body, work_policy(&state)) {
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
        Err(e) => {
            status = Some(e.status());
            let v = e.into_verdict();
            if let Some(reason) = v.reason() {
                state.metrics.reject(reason.as_str());
            }
            v
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
    answer(status.unwrap_or_else(|| status_of(&v)), &v, resp)
}

/// Every Nano kind with what a client needs to build its block: the asset, the send work
/// threshold of the nodes' network (a `nano:devnet` facilitator says the dev threshold), and
/// whether this facilitator attaches work itself.
async fn supported(State(state): State<AppState>) -> Json<SupportedResponse> {
    let cfg = state.engine.config();
    let network = cfg.network.clone();
    let mut extra = serde_json::Map::new();
    extra.insert(work::EXTRA_ASSET.into(), ASSET_XNO.into());
    extra.insert(
        work::EXTRA_WORK_THRESHOLD.into(),
        work::threshold_hex(cfg.node_network.thresholds().send()).into(),
    );
    let attaches = state.facilitator.attach_work && state.engine.work().is_some();
    extra.insert(
        work::EXTRA_WORK.into(),
        if attaches {
            work::OPTIONAL
        } else {
            work::REQUIRED
        }
        .into(),
    );
    let kind = |v| SupportedKind {
        x402_version: v,
        scheme: SCHEME_EXACT.into(),
        network: network.clone(),
        extra: Some(extra.clone()),
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
