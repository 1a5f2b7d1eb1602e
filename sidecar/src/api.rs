//! The HTTP surface, assembled in one place: the filter API (shared secret), the x402
//! facilitator API and `/v1/challenge` (bearer token), and health, readiness and metrics.
//!
//! Credentials are extractors that read headers only, placed before the body in every
//! handler, so a request with a missing or wrong credential is refused before its body is
//! read. The APIs run under [`guard`]: a time limit per request and a global concurrency
//! limit that sheds with 503 when full; health, readiness and metrics stay outside it.

pub mod admin;
pub mod facilitator;
pub mod filter;
pub mod guard;
pub mod tagged;

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Router;

/// Body caps per endpoint: the `/v1/pay` and facilitator bodies carry a payment (its header is
/// capped at 8 KiB by the filter); the others are small.
pub mod body_limit {
    pub const PAYMENT: usize = 64 * 1024;
    pub const SESSIONS: usize = 16 * 1024;
    pub const OUTCOME: usize = 1024;
    pub const CHALLENGE: usize = 4 * 1024;
}

pub fn router(state: AppState) -> Router {
    let apis = Router::new()
        .merge(filter::routes(&state))
        .merge(facilitator::routes(&state))
        .merge(tagged::routes(&state));
    let apis = guard::shed_when_full(apis, &state);
    let mut router = Router::new().merge(apis).merge(admin::routes());
    if !state.http.metrics_separate {
        router = router.merge(admin::metrics_routes());
    }
    router.with_state(state)
}

/// `/metrics` alone, for its own listener (`metrics.listen`).
pub fn metrics_router(state: AppState) -> Router {
    admin::metrics_routes().with_state(state)
}

/// Constant-time equality of two byte strings (length is not secret).
pub(crate) fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The filter's shared secret in `x-nanogate-secret`, checked on the headers alone.
pub struct FilterAuth;

impl FromRequestParts<AppState> for FilterAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ok = parts
            .headers
            .get("x-nanogate-secret")
            .is_some_and(|v| secret_eq(v.as_bytes(), state.credentials.filter_secret.as_bytes()));
        if ok {
            Ok(FilterAuth)
        } else {
            state.metrics.auth_failure("filter");
            Err(ApiError::Unauthorized)
        }
    }
}

/// `Authorization: Bearer <metrics token>` when one is configured (else anyone who reaches the
/// metrics listener may scrape).
pub struct MetricsAuth;

impl FromRequestParts<AppState> for MetricsAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = &state.credentials.metrics_token else {
            return Ok(MetricsAuth);
        };
        let ok = parts
            .headers
            .get("authorization")
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|t| secret_eq(t, token.as_bytes()));
        if ok {
            Ok(MetricsAuth)
        } else {
            state.metrics.auth_failure("metrics");
            Err(ApiError::Unauthorized)
        }
    }
}

/// `Authorization: Bearer <facilitator token>`, checked on the headers alone; always refused
/// when no token is configured.
pub struct BearerAuth;

impl FromRequestParts<AppState> for BearerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ok = match (
            &state.credentials.facilitator_token,
            parts.headers.get("authorization"),
        ) {
            (Some(token), Some(v)) => v
                .as_bytes()
                .strip_prefix(b"Bearer ")
                .is_some_and(|t| secret_eq(t, token.as_bytes())),
            _ => false,
        };
        if ok {
            Ok(BearerAuth)
        } else {
            state.metrics.auth_failure("facilitator");
            Err(ApiError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::secret_eq;

    #[test]
    fn secret_comparison() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"abcd"));
    }
}
