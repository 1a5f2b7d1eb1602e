//! Credentials as a property of a route group: every route of a [`Group`] sits behind its
//! group's check, a layer that reads the headers only, so a request with a missing or wrong
//! credential is refused (401, counted) before its body is read, and a handler added to a
//! group cannot forget the check.

use super::guard::{bounded, Limit};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use nanogate_protocol::contract::headers;

/// Who may call a group's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Anyone: health, readiness, metrics, `/supported`.
    Public,
    /// The filter: `x-nanogate-secret` equal to `filter_secret`.
    FilterSecret,
    /// Resource servers and operators: `Authorization: Bearer <facilitator.token>`; always
    /// refused when no token is configured.
    Bearer,
    /// Scrapers: `Authorization: Bearer <metrics.token>` when one is configured, else anyone
    /// who reaches the metrics listener (loopback by default).
    Metrics,
}

impl Credential {
    /// Whether `headers` carry this credential.
    fn present(self, headers: &HeaderMap, state: &AppState) -> bool {
        match self {
            Credential::Public => true,
            Credential::FilterSecret => headers.get(headers::SECRET).is_some_and(|v| {
                secret_eq(v.as_bytes(), state.credentials.filter_secret.as_bytes())
            }),
            Credential::Bearer => match (
                &state.credentials.facilitator_token,
                headers.get(header::AUTHORIZATION),
            ) {
                (Some(token), Some(v)) => v
                    .as_bytes()
                    .strip_prefix(headers::BEARER_PREFIX.as_bytes())
                    .is_some_and(|t| secret_eq(t, token.as_bytes())),
                _ => false,
            },
            Credential::Metrics => match &state.credentials.metrics_token {
                None => true,
                Some(token) => headers.get(header::AUTHORIZATION).is_some_and(|v| {
                    v.as_bytes()
                        .strip_prefix(headers::BEARER_PREFIX.as_bytes())
                        .is_some_and(|t| secret_eq(t, token.as_bytes()))
                }),
            },
        }
    }

    /// The `api` label of `nanogate_auth_failures_total`.
    fn metric_label(self) -> &'static str {
        match self {
            Credential::Public => "public",
            Credential::FilterSecret => "filter",
            Credential::Bearer => "facilitator",
            Credential::Metrics => "metrics",
        }
    }
}

/// Constant-time equality of two byte strings (length is not secret).
pub(crate) fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require(
    State((state, credential)): State<(AppState, Credential)>,
    req: Request,
    next: Next,
) -> Response {
    if credential.present(req.headers(), &state) {
        if credential == Credential::FilterSecret {
            // Only matched routes reach this layer: the label is one of our paths.
            state
                .metrics
                .filter_calls
                .get_or_create(&crate::metrics::PathLabel {
                    path: req.uri().path().to_owned(),
                })
                .inc();
        }
        next.run(req).await
    } else {
        state.metrics.auth_failure(credential.metric_label());
        ApiError::Unauthorized.into_response()
    }
}

/// The methods routes are served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
        }
    }
}

/// Routes that share a credential and a place in the server (under the concurrency limit or
/// not). `routes` lists exactly what the group serves.
pub struct Group {
    pub credential: Credential,
    /// Under [`super::guard::shed_when_full`] (the APIs) or not (probes, metrics, the ledger view).
    pub shed: bool,
    pub routes: Vec<(Verb, &'static str)>,
    state: AppState,
    router: Router<AppState>,
}

impl Group {
    pub fn new(state: &AppState, credential: Credential, shed: bool) -> Group {
        Group {
            credential,
            shed,
            routes: Vec::new(),
            state: state.clone(),
            router: Router::new(),
        }
    }

    /// Serves `verb path` with `handler`, under `limit` (time and body) when given.
    pub fn route<H, T>(
        mut self,
        verb: Verb,
        path: &'static str,
        handler: H,
        limit: Option<Limit>,
    ) -> Group
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let mut method_router = on(verb.filter(), handler);
        if let Some(limit) = limit {
            method_router = bounded(method_router, &self.state, limit);
        }
        self.routes.push((verb, path));
        self.router = self.router.route(path, method_router);
        self
    }

    /// The group's router, its credential checked in front of every route.
    pub fn into_router(self) -> Router<AppState> {
        match self.credential {
            Credential::Public => self.router,
            credential => self.router.route_layer(middleware::from_fn_with_state(
                (self.state, credential),
                require,
            )),
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
