//! The operator's figures beyond the ledger listing (bearer token): `GET /v1/admin/revenue`
//! (the ledger summed per UTC day, route and payee, in the store) and `GET /v1/admin/overview`
//! (health, per-state totals, pool usage). docs/operate.md describes both.

use super::{Credential, Group, Verb};
use crate::calendar::civil_day;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::revenue::RevenueQuery;
use crate::store::PaymentState;
use axum::extract::{Query, State};
use axum::Json;
use nanogate_protocol::contract::{
    paths, Overview, PoolUsage, ReadyBody, RevenueAnswer, RevenueRow, StateTotalRow,
};
use nanogate_protocol::nano::format_xno;
use serde::Deserialize;

pub fn routes(state: &AppState) -> Group {
    Group::new(state, Credential::Bearer, false)
        .route(Verb::Get, paths::ADMIN_REVENUE, revenue, None)
        .route(Verb::Get, paths::ADMIN_OVERVIEW, overview, None)
}

#[derive(Deserialize)]
struct RevenueParams {
    state: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
}

/// `GET /v1/admin/revenue?state=served&since=&until=`: counts and sums per (day, route, payee).
async fn revenue(
    State(state): State<AppState>,
    Query(q): Query<RevenueParams>,
) -> Result<Json<RevenueAnswer>, ApiError> {
    let st = match q.state.as_deref() {
        None | Some("") => PaymentState::Served,
        Some(s) => PaymentState::parse(s).ok_or_else(|| {
            ApiError::BadRequest("state must be admitted, served, redeemable or owed".into())
        })?,
    };
    let engine = &state.engine;
    let now = i64::try_from(crate::engine::unix_now()).unwrap_or(i64::MAX);
    // The same time-driven states the listing shows.
    if let Err(e) = engine.store().sweep(now, engine.config().redeem).await {
        tracing::debug!(error = %e, "sweep before summing revenue failed");
    }
    let groups = engine
        .store()
        .revenue(&RevenueQuery {
            state: st,
            since: q.since,
            until: q.until,
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "could not sum revenue");
            ApiError::Unavailable("store".into())
        })?;
    let (mut count, mut raw) = (0u64, 0u128);
    let rows = groups
        .into_iter()
        .map(|g| {
            count = count.saturating_add(g.count);
            raw = raw.saturating_add(g.raw);
            RevenueRow {
                day: civil_day(g.day),
                route: g.route,
                pay_to: g.pay_to,
                count: g.count,
                raw: g.raw.to_string(),
                xno: format_xno(g.raw),
            }
        })
        .collect();
    Ok(Json(RevenueAnswer {
        state: st.as_str().to_owned(),
        rows,
        count,
        raw: raw.to_string(),
        xno: format_xno(raw),
    }))
}

/// `GET /v1/admin/overview`.
async fn overview(State(state): State<AppState>) -> Result<Json<Overview>, ApiError> {
    let engine = &state.engine;
    let now = i64::try_from(crate::engine::unix_now()).unwrap_or(i64::MAX);
    let probe = state.readiness.get(engine, &state.metrics).await;
    let unavailable = |e: crate::store::StoreError| {
        tracing::warn!(error = %e, "overview: store unavailable");
        ApiError::Unavailable("store".into())
    };
    let totals = engine.store().payment_totals().await.map_err(unavailable)?;
    let accounts = engine
        .store()
        .open_session_accounts(now)
        .await
        .map_err(unavailable)?;
    Ok(Json(Overview {
        network: engine.config().network.clone(),
        store_kind: engine.store().kind().to_owned(),
        health: ReadyBody {
            ready: probe.ready(),
            store: probe.store,
            ledger: probe.ledger,
        },
        payments: totals
            .iter()
            .map(|t| StateTotalRow {
                state: t.state.as_str().to_owned(),
                count: t.count,
                raw: t.raw.to_string(),
                xno: format_xno(t.raw),
            })
            .collect(),
        pools: PoolUsage {
            accounts_in_use: u64::try_from(accounts.len()).unwrap_or(u64::MAX),
        },
        now,
    }))
}
