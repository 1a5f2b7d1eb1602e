//! The HTTP surface, assembled in one place: the filter API (shared secret), the x402
//! facilitator API and `/v1/challenge` (bearer token), and health, readiness and metrics.

pub mod admin;
pub mod facilitator;
pub mod filter;
pub mod tagged;

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::Router;

/// Request bodies are small JSON documents; cap them well above a payment's size.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(filter::routes())
        .merge(facilitator::routes())
        .merge(admin::routes())
        .merge(tagged::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Constant-time equality of two byte strings (length is not secret).
pub(crate) fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The filter's shared secret in `x-nanogate-secret`.
pub(crate) fn check_filter_secret(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get("x-nanogate-secret")
        .is_some_and(|v| secret_eq(v.as_bytes(), state.credentials.filter_secret.as_bytes()));
    if ok {
        Ok(())
    } else {
        state.metrics.auth_failure("filter");
        Err(ApiError::Unauthorized)
    }
}

/// `Authorization: Bearer <facilitator token>`; always refused when no token is configured.
pub(crate) fn check_bearer(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = match (
        &state.credentials.facilitator_token,
        headers.get("authorization"),
    ) {
        (Some(token), Some(v)) => v
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .is_some_and(|t| secret_eq(t, token.as_bytes())),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        state.metrics.auth_failure("facilitator");
        Err(ApiError::Unauthorized)
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
