//! Health (`/healthz`: the process is up), readiness (`/readyz`: the store answers and a node
//! answers `version` with the configured network, from a probe cached for
//! `server.ready_cache_secs`), Prometheus `/metrics` (with the payment ledger's count and raw
//! sum per state, read from the store on scrape) and the operator's view of the payment
//! ledger, `GET /v1/admin/payments` (bearer token; docs/payments.md).

use super::{Credential, Group, Verb};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{PaymentQuery, PaymentRecord, PaymentState};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanogate_protocol::contract::{paths, PaymentRow, PaymentsPage, ReadyBody};
use nanogate_protocol::hex;
use serde::Deserialize;
use std::time::Duration;

pub fn routes(state: &AppState) -> Group {
    Group::new(state, Credential::Public, false)
        .route(Verb::Get, paths::HEALTHZ, healthz, None)
        .route(Verb::Get, paths::READYZ, readyz, None)
}

/// `/metrics` (the metrics token when configured): with the APIs, or on its own listener
/// (`metrics.listen`).
pub fn metrics_routes(state: &AppState) -> Group {
    Group::new(state, Credential::Metrics, false).route(Verb::Get, paths::METRICS, metrics, None)
}

/// The payment ledger (bearer token).
pub fn ledger_routes(state: &AppState) -> Group {
    Group::new(state, Credential::Bearer, false).route(
        Verb::Get,
        paths::ADMIN_PAYMENTS,
        payments,
        None,
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let p = state.readiness.get(&state.engine, &state.metrics).await;
    let status = if p.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(ReadyBody {
            ready: p.ready(),
            store: p.store,
            ledger: p.ledger,
        }),
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    // One grouped query, at most every few seconds and bounded in time: scrapes from several
    // collectors cost the store nothing more, and a slow store leaves the last values.
    let now = crate::engine::unix_now();
    if state.metrics.payment_totals_due(now) {
        let totals = tokio::time::timeout(
            Duration::from_secs(2),
            state.engine.store().payment_totals(),
        )
        .await;
        match totals {
            Ok(Ok(t)) => state.metrics.set_payment_totals(&t),
            Ok(Err(e)) => tracing::debug!(error = %e, "payment totals unavailable"),
            Err(_) => tracing::debug!("payment totals timed out"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PaymentsQuery {
    state: Option<String>,
    /// The resource (signed block) or route scope (tagged) paid for.
    route: Option<String>,
    resource: Option<String>,
    payer: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The cursor is the last row's `(settled_at, spent_key)`, hex-encoded: opaque to clients.
fn encode_cursor(r: &PaymentRecord) -> String {
    hex::encode_lower(format!("{}:{}", r.settled_at, r.spent_key).as_bytes())
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let bytes = hex::decode_vec(c).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, key) = text.split_once(':')?;
    Some((at.parse().ok()?, key.to_owned()))
}

fn payment_row(r: &PaymentRecord) -> PaymentRow {
    PaymentRow {
        hash: r.hash().to_owned(),
        payer: r.payer.clone(),
        pay_to: r.pay_to.clone(),
        amount: r.amount.clone(),
        state: r.state.as_str().to_owned(),
        reason: r.reason.clone(),
        mechanism: r.mechanism.clone(),
        resource: r.resource.clone(),
        settled_at: r.settled_at,
        updated_at: r.updated_at,
        redemptions: r.redemptions,
    }
}

/// `GET /v1/admin/payments?state=&route=&payer=&since=&until=&limit=&cursor=`: one page of the
/// payment ledger, oldest settlement first, and the cursor of the next page (`null` at the end).
async fn payments(
    State(state): State<AppState>,
    Query(q): Query<PaymentsQuery>,
) -> Result<Json<PaymentsPage>, ApiError> {
    let st = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(PaymentState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(
                "state must be admitted, served, redeemable, owed, refunding or refunded".into(),
            )
        })?),
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ApiError::BadRequest("bad cursor".into()))?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 1000".into()));
    }
    let engine = &state.engine;
    let now = i64::try_from(crate::engine::unix_now()).unwrap_or(i64::MAX);
    // Show time-driven states as they are now (lease over, window over), not as of the
    // last sweep.
    if let Err(e) = engine.store().sweep(now, engine.config().redeem).await {
        tracing::debug!(error = %e, "sweep before listing payments failed");
    }
    let query = PaymentQuery {
        state: st,
        resource: q.route.or(q.resource).filter(|r| !r.is_empty()),
        payer: q.payer.filter(|p| !p.is_empty()),
        since: q.since,
        until: q.until,
        after,
        limit: limit + 1,
    };
    let mut rows = engine.store().payments(&query).await.map_err(|e| {
        tracing::warn!(error = %e, "could not list payments");
        ApiError::Unavailable("store".into())
    })?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = if more {
        rows.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(PaymentsPage {
        payments: rows.iter().map(payment_row).collect(),
        next,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_garbage_is_refused() {
        let r = PaymentRecord {
            spent_key: "nano:devnet:AB".into(),
            receipt: None,
            mechanism: "tagged".into(),
            payer: String::new(),
            pay_to: String::new(),
            amount: "1".into(),
            resource: String::new(),
            nonce: None,
            state: PaymentState::Owed,
            reason: Some("late".into()),
            settled_at: 42,
            updated_at: 42,
            lease_until: 0,
            redemptions: 0,
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&r)),
            Some((42, "nano:devnet:AB".to_owned()))
        );
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor(&hex::encode_lower(b"x:y")), None);
        assert_eq!(payment_row(&r).hash, "AB");
    }
}
