//! The operator's refund and pocketing endpoints (bearer token; docs/refunds.md).

use super::{Credential, Group, Verb};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wallet::pocket::followed_accounts;
use crate::wallet::Wallet;
use axum::extract::State;
use axum::Json;
use nanogate_protocol::contract::paths;
use nanogate_protocol::contract::refunds::{
    MarkRefundedRequest, PocketAnswer, ReceivableAnswer, RefundRequest, RefundRow, RefundsAnswer,
    SweepAnswer,
};
use std::sync::Arc;

/// Outside the shed group and its request time limit: a refund waits for its confirmation
/// (bounded by the wallet's wait) and operators call these one at a time.
pub fn routes(state: &AppState) -> Group {
    Group::new(state, Credential::Bearer, false)
        .route(Verb::Post, paths::ADMIN_REFUNDS, refund, None)
        .route(Verb::Post, paths::ADMIN_REFUNDS_MARK, mark, None)
        .route(Verb::Get, paths::ADMIN_RECEIVABLE, receivable, None)
        .route(Verb::Post, paths::ADMIN_POCKET, pocket, None)
        .route(Verb::Post, paths::ADMIN_SWEEP, sweep, None)
}

fn wallet(state: &AppState) -> Result<&Arc<Wallet>, ApiError> {
    state
        .wallet
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no node client for the wallet".into()))
}

async fn refund(
    State(state): State<AppState>,
    Json(req): Json<RefundRequest>,
) -> Result<Json<RefundsAnswer>, ApiError> {
    let w = wallet(&state)?;
    Ok(Json(w.refund(&state.engine, &req.payments).await?))
}

async fn mark(
    State(state): State<AppState>,
    Json(req): Json<MarkRefundedRequest>,
) -> Result<Json<RefundRow>, ApiError> {
    let w = wallet(&state)?;
    Ok(Json(
        w.mark_refunded(&state.engine, &req.payment, &req.block)
            .await?,
    ))
}

async fn receivable(State(state): State<AppState>) -> Result<Json<ReceivableAnswer>, ApiError> {
    let w = wallet(&state)?;
    let accounts = w.receivable(&followed_accounts(&state.engine)).await;
    Ok(Json(ReceivableAnswer { accounts }))
}

async fn pocket(State(state): State<AppState>) -> Result<Json<PocketAnswer>, ApiError> {
    let w = wallet(&state)?;
    if !w.signing() {
        return Err(ApiError::Conflict(
            "no wallet seed configured: the sidecar signs no receive blocks \
             (GET /v1/admin/receivable lists what is receivable)"
                .into(),
        ));
    }
    Ok(Json(
        w.pocket(&state.engine, &followed_accounts(&state.engine))
            .await,
    ))
}

async fn sweep(State(state): State<AppState>) -> Result<Json<SweepAnswer>, ApiError> {
    let w = wallet(&state)?;
    let Some(treasury) = w.settings().treasury else {
        return Err(ApiError::Conflict(
            "no wallet.treasury configured: nowhere to sweep to".into(),
        ));
    };
    if !w.signing() {
        return Err(ApiError::Conflict(
            "no wallet seed configured: the sidecar signs no sweep".into(),
        ));
    }
    Ok(Json(w.sweep(&state.engine, treasury).await))
}
