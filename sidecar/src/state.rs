//! The state every handler shares, behind axum's `State`.

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::passes::PassKeys;
use crate::readiness::Readiness;
use std::sync::Arc;
use std::time::Duration;

/// Credentials the APIs check. Never logged (no `Debug`).
pub struct Credentials {
    /// `x-nanogate-secret` for the filter API.
    pub filter_secret: String,
    /// `Authorization: Bearer` for the facilitator API and `/v1/challenge`; `None` = off.
    pub facilitator_token: Option<String>,
    /// `Authorization: Bearer` for `/metrics`; `None` = open to whoever reaches its listener.
    pub metrics_token: Option<String>,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub credentials: Arc<Credentials>,
    /// maxTimeoutSeconds of challenges issued by `/v1/challenge`.
    pub challenge_max_timeout_secs: u64,
    pub http: HttpSettings,
    pub readiness: Arc<Readiness>,
    /// The pass keys (docs/passes.md).
    pub passes: Arc<PassKeys>,
}

/// How the HTTP server protects itself (`[server]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Time limit of a request, body included.
    pub request_timeout: Duration,
    /// Time limit of a settlement request (`/v1/pay`, `/settle`): it waits for confirmation.
    pub settle_timeout: Duration,
    /// Requests handled at once before new ones are shed with 503.
    pub max_concurrent: usize,
    /// `/metrics` is served on a listener of its own ([`crate::api::metrics_router`]), not
    /// with the APIs.
    pub metrics_separate: bool,
}
