//! The filter API (docs/filter-sidecar.md; bodies: `nanogate_protocol::contract`). Every
//! endpoint needs `x-nanogate-secret` (the group's credential, [`super::auth`]). `/v1/pay` always answers HTTP 200 with
//! `x-nanogate-verdict: 1`, so Envoy's own 503/504 for transport failures can never read as a
//! verdict.

use super::guard::Limit;
use super::{body_limit, Credential, Group, Verb};
use crate::engine::work::WorkPolicy;
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
use axum::Json;
use nanogate_protocol::contract::pass::PassIssued;
use nanogate_protocol::contract::{
    headers, paths, ChallengeKeyAnswer, KeyEntry, OutcomeAnswer, OutcomeBatch, OutcomeBatchAnswer,
    OutcomeRequest, PayRequest, VerdictBody, MAX_OUTCOME_BATCH,
};
use nanogate_protocol::x402::{encode_header, ErrorReason};

/// Seconds the filter should put in `Retry-After` when the ledger is unavailable.
pub const RETRY_AFTER_SECS: u64 = 2;

pub fn routes(state: &AppState) -> Group {
    let short = state.http.request_timeout;
    Group::new(state, Credential::FilterSecret, true)
        .route(
            Verb::Get,
            paths::CHALLENGE_KEY,
            challenge_key,
            Some(Limit::new(short, 0)),
        )
        .route(
            Verb::Post,
            paths::PAY,
            pay,
            Some(Limit::new(state.http.settle_timeout, body_limit::PAYMENT)),
        )
        .route(
            Verb::Post,
            paths::OUTCOME,
            outcome,
            Some(Limit::new(short, body_limit::OUTCOME)),
        )
        .route(
            Verb::Post,
            paths::OUTCOMES,
            outcomes,
            Some(Limit::new(short, body_limit::OUTCOMES)),
        )
}

async fn challenge_key(
    State(state): State<AppState>,
) -> Result<Json<ChallengeKeyAnswer>, ApiError> {
    let keys = state.engine.keys();
    let now = unix_now();
    let k = keys.current(now);
    let entry = |key_id, key: &nanogate_protocol::challenge::ChallengeKey| KeyEntry {
        key_id,
        key: key.clone(),
    };
    Ok(Json(ChallengeKeyAnswer {
        key_id: k.key_id,
        key: k.key.clone(),
        not_after: k.not_after,
        // The previous key is still honoured: a filter that starts (or restarts) just after a
        // rotation needs it to accept challenges issued before it, by itself or another replica.
        previous: keys.previous(now).map(|p| entry(p.key_id, &p.key)),
        // Older keys whose challenges may still have a redeemable payment: the filter uses them
        // only to authenticate expired challenges it forwards for redemption, never to accept a
        // fresh payment (docs/payments.md).
        retired: keys
            .retired(now, state.engine.redemption_horizon_secs())
            .iter()
            .map(|r| entry(r.key_id, &r.key))
            .collect(),
        // Pass keys: the next, the current (which mints) and every older one a live pass may
        // have been minted under (docs/passes.md).
        pass_keys: state.passes.published(now),
    }))
}

/// The verdict as the filter reads it; an admission that bought a pass carries it, in the
/// verdict and in `PAYMENT-RESPONSE`'s `extensions.pass`.
pub fn verdict_body(v: &Verdict, pass: Option<&PassIssued>) -> VerdictBody {
    match v {
        Verdict::Admit(a) => {
            let settlement = match pass {
                Some(p) => encode_header(&crate::passes::with_pass(&a.settlement, p)),
                None => encode_header(&a.settlement),
            };
            VerdictBody {
                pass: pass.cloned(),
                ..VerdictBody::admit(
                    a.receipt.clone(),
                    a.transaction.to_hex(),
                    a.payer.clone(),
                    settlement,
                    a.redeemed,
                    // Only the admitting proxy gets it: it never leaves the proxy.
                    a.admission_token.clone(),
                )
            }
        }
        Verdict::Reject(r) => {
            VerdictBody::reject(r.reason, r.message.clone(), r.status, r.retry_after)
        }
        Verdict::Unavailable(r) => {
            VerdictBody::unavailable(r.reason, r.message.clone(), RETRY_AFTER_SECS)
        }
    }
}

fn verdict_response(v: &Verdict, pass: Option<&PassIssued>) -> Response {
    let mut resp = Json(verdict_body(v, pass)).into_response();
    resp.headers_mut().insert(
        HeaderName::from_static(headers::VERDICT),
        HeaderValue::from_static(headers::VERDICT_MARKER),
    );
    resp
}

/// A pass purchase's terms must be well-formed and be what the challenge MAC bound (the
/// resource is their scope), or nothing is paid.
fn check_pass(parsed: &PayRequest) -> Result<(), String> {
    let Some(t) = &parsed.pass else {
        return Ok(());
    };
    t.check().map_err(|e| format!("pass terms: {e}"))?;
    if parsed.resource != t.scope() {
        return Err("pass terms: the resource is not the pass's scope".into());
    }
    Ok(())
}

async fn pay(State(state): State<AppState>, body: Bytes) -> Response {
    // The settlement wait is measured from here.
    let arrived = std::time::Instant::now();
    let mut parsed: PayRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            state.metrics.reject(ErrorReason::InvalidPayload.as_str());
            return verdict_response(
                &Verdict::Reject(Rejection::new(
                    ErrorReason::InvalidPayload,
                    format!("malformed /v1/pay body: {e}"),
                )),
                None,
            );
        }
    };
    if let Err(why) = check_pass(&parsed) {
        state
            .metrics
            .reject(ErrorReason::InvalidPaymentRequirements.as_str());
        return verdict_response(
            &Verdict::Reject(Rejection::new(ErrorReason::InvalidPaymentRequirements, why)),
            None,
        );
    }
    let ctx = PayContext {
        arrived,
        ..PayContext::with_upstream_timeout_ms(parsed.upstream_timeout_ms)
    };
    let source = parsed.source.as_deref().and_then(parse_source);
    let limits = state.engine.limits().clone();
    if let Err(wait) = limits.source_allowed(source) {
        state.metrics.reject(ErrorReason::RateLimited.as_str());
        return verdict_response(
            &Verdict::Reject(Rejection::rate_limited(
                wait.0,
                "too many refused payments from this client; retry later",
            )),
            None,
        );
    }
    // The filter forwards the client's header as it came; other callers may send its JSON.
    let payment = match parsed.payment_json() {
        Ok(p) => p,
        Err(e) => {
            // Counted against the source like any refused payment.
            limits.source_refused(source);
            state.metrics.reject(e.reason().as_str());
            return verdict_response(
                &Verdict::Reject(Rejection::new(
                    e.reason(),
                    format!("malformed /v1/pay body: {e}"),
                )),
                None,
            );
        }
    };
    let input = PaymentInput {
        resource: parsed.resource,
        requirements: parsed.requirements,
        payment,
        binding: BindingPolicy::Required,
        work: if parsed.attach_work {
            WorkPolicy::Attach
        } else {
            WorkPolicy::Required
        },
    };
    // Settle in its own task: a dropped connection (or the request's time limit) must not
    // cancel a settlement half-way. When the filter stopped waiting (it timed out and Envoy
    // dropped the call, so this handler is gone), an admission cannot reach it: the payment
    // becomes redeemable instead of holding a lease for a request that never runs.
    let engine = state.engine.clone();
    let (passes, metrics, pass_terms) = (state.passes.clone(), state.metrics.clone(), parsed.pass);
    let (tx, rx) = tokio::sync::oneshot::channel::<(Verdict, Option<PassIssued>)>();
    let task = tokio::spawn(async move {
        let mut verdict = engine.pay_with(&input, ctx).await;
        if matches!(verdict, Verdict::Reject(_)) {
            limits.source_refused(source);
        }
        // A bought pass is recorded before the admission is answered; if it cannot be, the
        // payment is not delivered (it stays redeemable, and its redemption records the pass).
        let mut pass = None;
        if let (Verdict::Admit(a), Some(terms)) = (&verdict, &pass_terms) {
            match passes
                .issue(engine.store().as_ref(), terms, a, unix_now())
                .await
            {
                Ok(p) => {
                    if !a.redeemed {
                        metrics.passes_sold.inc();
                    }
                    pass = Some(p);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not record a bought pass");
                    engine.undelivered(&a.receipt).await;
                    verdict = Verdict::Unavailable(Rejection::new(
                        ErrorReason::UnexpectedSettleError,
                        "the pass could not be recorded; present the payment again",
                    ));
                }
            }
        }
        if let Err((Verdict::Admit(a), _)) = tx.send((verdict, pass)) {
            engine.undelivered(&a.receipt).await;
        }
    });
    let (verdict, pass) = match rx.await {
        Ok(v) => v,
        Err(_) => {
            let e = task.await.err();
            tracing::error!(error = ?e, "settlement task failed");
            (
                Verdict::Unavailable(Rejection::new(
                    ErrorReason::UnexpectedSettleError,
                    "internal error while settling",
                )),
                None,
            )
        }
    };
    verdict_response(&verdict, pass.as_ref())
}

async fn outcome(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<OutcomeAnswer>, ApiError> {
    let o: OutcomeRequest = serde_json::from_slice(&body)
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
    Ok(Json(OutcomeAnswer { ok: true, recorded }))
}

/// A filter VM's batch of outcomes (docs/filter-sidecar.md, `POST /v1/outcomes`): each entry is
/// recorded exactly as `/v1/outcome` would record it alone, with its own admission token, so a
/// stale, missing or foreign token refuses that entry only ([`crate::engine::Engine::record_outcomes`]:
/// the store writes the entries together, SQLite's writer a few at a time, PostgreSQL in one
/// statement).
async fn outcomes(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<OutcomeBatchAnswer>, ApiError> {
    let batch: OutcomeBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed /v1/outcomes body: {e}")))?;
    if batch.outcomes.len() > MAX_OUTCOME_BATCH {
        return Err(ApiError::BadRequest(format!(
            "an outcome batch carries at most {MAX_OUTCOME_BATCH} outcomes, this one {}: \
             nothing recorded",
            batch.outcomes.len()
        )));
    }
    let reports = state
        .engine
        .record_outcomes(&batch.outcomes)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "could not record the outcomes of a batch");
            ApiError::Unavailable("store".into())
        })?;
    let mut answer = OutcomeBatchAnswer::default();
    for (o, report) in batch.outcomes.iter().zip(reports) {
        let n = match report {
            OutcomeReport::Recorded => &mut answer.recorded,
            OutcomeReport::NotAdmitted => &mut answer.not_admitted,
            OutcomeReport::Refused(_) => &mut answer.refused,
        };
        *n += 1;
        tracing::debug!(receipt = %o.receipt, status = o.status, ?report, "upstream outcome (batch)");
    }
    Ok(Json(answer))
}
