//! The pass endpoints (docs/passes.md): the filters' usage reports (`x-nanogate-secret`) and the
//! operator's list and revoke (bearer token).

use super::guard::Limit;
use super::{body_limit, Credential, Group, Verb};
use crate::engine::unix_now;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::passes::{PassQuery, PassRecord, PASS_STATES};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::Json;
use nanogate_protocol::contract::pass::{
    is_vm_id, PassRevokeRequest, PassRow, PassUsageAnswer, PassUsageRequest, PassesPage,
};
use nanogate_protocol::contract::paths;
use nanogate_protocol::hex;
use serde::Deserialize;

pub fn filter_routes(state: &AppState) -> Group {
    Group::new(state, Credential::FilterSecret, true).route(
        Verb::Post,
        paths::PASS_USAGE,
        usage,
        Some(Limit::new(
            state.http.request_timeout,
            body_limit::PASS_USAGE,
        )),
    )
}

pub fn admin_routes(state: &AppState) -> Group {
    Group::new(state, Credential::Bearer, false)
        .route(Verb::Get, paths::ADMIN_PASSES, list, None)
        .route(
            Verb::Post,
            paths::ADMIN_PASSES_REVOKE,
            revoke,
            Some(Limit::new(
                state.http.request_timeout,
                body_limit::PASS_REVOKE,
            )),
        )
}

fn store_down(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "pass store operation failed");
    ApiError::Unavailable("store".into())
}

async fn usage(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<PassUsageAnswer>, ApiError> {
    let report: PassUsageRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed usage report: {e}")))?;
    if !is_vm_id(&report.vm) {
        return Err(ApiError::BadRequest(
            "malformed usage report: vm must be 16 hex digits".into(),
        ));
    }
    let (answer, added) =
        crate::passes::report_usage(state.engine.store().as_ref(), &report, unix_now())
            .await
            .map_err(store_down)?;
    state.metrics.pass_usage_reports.inc();
    state.metrics.pass_requests_reported.inc_by(added);
    Ok(Json(answer))
}

fn row(r: &PassRecord, now: i64) -> PassRow {
    PassRow {
        id: r.pass.id.clone(),
        name: r.pass.name.clone(),
        group: r.pass.group.clone(),
        payer: r.pass.payer.clone(),
        transaction: r.pass.transaction.clone(),
        created_at: r.pass.created_at,
        expires_at: r.pass.expires_at,
        requests_granted: r.pass.requests_granted.and_then(|n| u32::try_from(n).ok()),
        requests_used: r.requests_used,
        revoked_at: r.revoked_at,
        state: r.state(now).to_owned(),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    group: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

/// The cursor is the last row's `(created_at, id)`, hex-encoded: opaque to clients.
fn encode_cursor(r: &PassRecord) -> String {
    hex::encode_lower(format!("{}:{}", r.pass.created_at, r.pass.id).as_bytes())
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let text = String::from_utf8(hex::decode_vec(c).ok()?).ok()?;
    let (at, id) = text.split_once(':')?;
    Some((at.parse().ok()?, id.to_owned()))
}

/// `GET /v1/admin/passes?group=&state=&limit=&after=`: newest first.
async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<PassesPage>, ApiError> {
    let st = q.state.filter(|s| !s.is_empty());
    if st.as_deref().is_some_and(|s| !PASS_STATES.contains(&s)) {
        return Err(ApiError::BadRequest(
            "state must be active, expired, exhausted or revoked".into(),
        ));
    }
    let before = match q.after.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ApiError::BadRequest("bad cursor".into()))?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 1000".into()));
    }
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let query = PassQuery {
        group: q.group.filter(|g| !g.is_empty()),
        state: st,
        limit: limit + 1,
        before,
        now,
    };
    let mut rows = state
        .engine
        .store()
        .list_passes(&query)
        .await
        .map_err(store_down)?;
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > cap;
    rows.truncate(cap);
    let next = if more {
        rows.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(PassesPage {
        passes: rows.iter().map(|r| row(r, now)).collect(),
        next,
    }))
}

/// `POST /v1/admin/passes/revoke {"id"}`: the revoked pass.
async fn revoke(State(state): State<AppState>, body: Bytes) -> Result<Json<PassRow>, ApiError> {
    let req: PassRevokeRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed revoke body: {e}")))?;
    let id = req.id.to_ascii_lowercase();
    if hex::decode_array::<16>(&id).is_err() {
        return Err(ApiError::BadRequest("id must be 32 hex digits".into()));
    }
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let r = state
        .engine
        .store()
        .revoke_pass(&id, now)
        .await
        .map_err(store_down)?
        .ok_or_else(|| ApiError::NotFound(format!("no pass {id}")))?;
    state.metrics.passes_revoked.inc();
    tracing::info!(pass = %id, group = %r.pass.group, "pass revoked");
    Ok(Json(row(&r, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        assert_eq!(
            decode_cursor(&hex::encode_lower(b"42:ab")),
            Some((42, "ab".to_owned()))
        );
        assert_eq!(decode_cursor("zz"), None);
    }
}
