//! The HTTP surface, assembled in one place: the filter API (shared secret), the x402
//! facilitator API, `/v1/challenge` and the operator's views (bearer token), the dashboard
//! page, and health, readiness and metrics.
//!
//! Routes come in [`Group`]s, one credential each, checked by a layer in front of the whole
//! group on the headers alone ([`auth`]): a request with a missing or wrong credential is
//! refused before its body is read, and no handler can forget the check. The APIs run under
//! [`guard`]: a time limit per request and a global concurrency limit that sheds with 503 when
//! full; health, readiness, metrics and the payment ledger view stay outside it.

pub mod admin;
pub mod auth;
pub mod dashboard;
pub mod facilitator;
pub mod filter;
pub mod guard;
pub mod passes;
pub mod refunds;
pub mod revenue;
pub mod tagged;

pub use auth::{Credential, Group, Verb};

use crate::state::AppState;
use axum::Router;

/// Body caps per endpoint: the `/v1/pay` and facilitator bodies carry a payment (its header is
/// capped at 8 KiB by the filter); the others are small.
pub mod body_limit {
    pub const PAYMENT: usize = 64 * 1024;
    pub const SESSIONS: usize = 16 * 1024;
    pub const OUTCOME: usize = 1024;
    /// A batch of outcomes: at most `MAX_OUTCOME_BATCH` (64) of one outcome's size.
    pub const OUTCOMES: usize = 64 * OUTCOME;
    pub const CHALLENGE: usize = 4 * 1024;
    /// A usage report: at most 1024 counts of about 60 bytes.
    pub const PASS_USAGE: usize = 96 * 1024;
    pub const PASS_REVOKE: usize = 1024;
}

/// Every route, grouped by credential (see [`auth`]): what [`router`] serves.
pub fn groups(state: &AppState) -> Vec<Group> {
    let mut groups = vec![
        facilitator::routes(state),
        tagged::admin_routes(state),
        facilitator::public_routes(state),
        admin::routes(state),
        admin::ledger_routes(state),
        revenue::routes(state),
        dashboard::routes(state),
        refunds::routes(state),
        passes::admin_routes(state),
    ];
    // Facilitator only (`facilitator.only`): there is no filter secret, so the filter API is
    // not mounted at all (404) rather than guarded by a credential nobody holds.
    if !state.facilitator.only {
        groups.push(filter::routes(state));
        groups.push(tagged::filter_routes(state));
        groups.push(passes::filter_routes(state));
    }
    // `/metrics` moves to its own listener when one is configured (`metrics.listen`).
    if !state.http.metrics_separate {
        groups.push(admin::metrics_routes(state));
    }
    groups
}

/// `/metrics` alone, for its own listener (`metrics.listen`).
pub fn metrics_router(state: AppState) -> Router {
    admin::metrics_routes(&state)
        .into_router()
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let (mut apis, mut rest) = (Router::new(), Router::new());
    for group in groups(&state) {
        if group.shed {
            apis = apis.merge(group.into_router());
        } else {
            rest = rest.merge(group.into_router());
        }
    }
    Router::new()
        .merge(guard::shed_when_full(apis, &state))
        .merge(rest)
        .with_state(state)
}
