//! The state every handler shares, behind axum's `State`.

use crate::engine::Engine;
use crate::metrics::Metrics;
use std::sync::Arc;

/// Credentials the APIs check. Never logged (no `Debug`).
pub struct Credentials {
    /// `x-nanogate-secret` for the filter API.
    pub filter_secret: String,
    /// `Authorization: Bearer` for the facilitator API and `/v1/challenge`; `None` = off.
    pub facilitator_token: Option<String>,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub credentials: Arc<Credentials>,
    /// maxTimeoutSeconds of challenges issued by `/v1/challenge`.
    pub challenge_max_timeout_secs: u64,
}
