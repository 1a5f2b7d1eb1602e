//! The payment engine: the steps every mechanism shares (see [`mechanism`]), then a signed
//! block's verification (see [`verify`]) and upfront settlement (see [`settle`]), or a tagged
//! session's (see [`tagged`]), producing a [`Verdict`].
//!
//! The verification order, each failure with its own reason, is documented in
//! sidecar/README.md and in the modules above.

pub mod frontier_cache;
pub(crate) mod mechanism;
pub mod reconcile;
pub mod settle;
pub mod tagged;
pub mod verify;
pub mod work;

use crate::keys::ChallengeKeys;
use crate::ledger::{Ledger, LedgerError};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::store::{
    RedeemPolicy, Retention, Store, StoreError, TokenOutcome, OUTCOME_BATCH_CONCURRENCY,
};
use futures_util::StreamExt;
use nanogate_protocol::contract::OutcomeRequest;
use nanogate_protocol::nano::{BlockHash, Network, PublicKey};
use nanogate_protocol::x402::{ErrorReason, PaymentRequirements, SettlementResponse};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Engine settings (from the sidecar's configuration).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The x402 network id we settle on, e.g. `nano:mainnet` or `nano:devnet`.
    pub network: String,
    /// The Nano network of the nodes: selects the send work threshold.
    pub node_network: Network,
    /// Upper bound on the wait for confirmation (the challenge's `validBefore` also bounds it).
    pub max_wait: Duration,
    /// How long fork-set entries and session nonces outlive their challenge's `validBefore`.
    pub fork_grace_secs: u64,
    /// Redemption bound and window (measured from settlement).
    pub redeem: RedeemPolicy,
    /// How long served and owed payments are kept.
    pub retention: Retention,
    /// Facilitator API: accept requirements without a nanogate MAC?
    pub allow_unbound: bool,
    /// Facilitator API: payees allowed for unbound requirements (and for `/v1/challenge`).
    pub pay_to_allow: Vec<PublicKey>,
}

/// When no upstream timeout comes with a payment: Envoy's default route timeout.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(15_000);
/// The longest upstream timeout a lease honours (routes may be valid for up to an hour).
pub const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3_600);
/// Added to the upstream timeout: the filter's outcome report needs a moment to arrive.
pub const LEASE_MARGIN_SECS: u64 = 5;
/// The longest challenge validity (`maxTimeoutSeconds`) the filter issues.
pub const MAX_CHALLENGE_SECS: u64 = 3_600;

/// Where a payment request came from and what it may buy (one payment, one response).
#[derive(Debug, Clone, Copy)]
pub struct PayContext {
    /// When the request arrived: the settlement wait (`max_wait`) is measured from here.
    pub arrived: std::time::Instant,
    /// The route's upstream timeout: the admission's lease is this plus a margin.
    pub upstream_timeout: Duration,
}

impl PayContext {
    pub fn now() -> Self {
        PayContext {
            arrived: std::time::Instant::now(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
        }
    }

    /// A context for a request that arrived now with the filter's `upstreamTimeoutMs`
    /// (absent: Envoy's default; bounded by [`MAX_UPSTREAM_TIMEOUT`]).
    pub fn with_upstream_timeout_ms(ms: Option<u64>) -> Self {
        let upstream_timeout = ms
            .filter(|m| *m > 0)
            .map_or(DEFAULT_UPSTREAM_TIMEOUT, Duration::from_millis)
            .min(MAX_UPSTREAM_TIMEOUT);
        PayContext {
            arrived: std::time::Instant::now(),
            upstream_timeout,
        }
    }

    /// The end of an admission's lease granted at `now` (unix seconds).
    pub fn lease_until(&self, now: u64) -> i64 {
        as_i64(
            now.saturating_add(self.upstream_timeout.as_secs())
                .saturating_add(u64::from(self.upstream_timeout.subsec_nanos() > 0))
                .saturating_add(LEASE_MARGIN_SECS),
        )
    }
}

/// How a payment's requirements must be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingPolicy {
    /// A valid nanogate MAC in `extra` is required (the filter API).
    Required,
    /// The facilitator API: MAC-bound if `extra.mac` is present, else unbound if the
    /// configuration allows it for the payee.
    Facilitator,
}

/// One payment to verify or settle.
#[derive(Debug, Clone)]
pub struct PaymentInput {
    /// The resource URL the requirements were issued for, as the caller (filter or resource
    /// server) knows it; never the client's copy.
    pub resource: String,
    /// The issued terms (plus the echoed stamp in `extra`).
    pub requirements: PaymentRequirements,
    /// The client's decoded payment (v2 `PaymentPayload` or v1 `X-PAYMENT` JSON).
    pub payment: Value,
    pub binding: BindingPolicy,
    /// Whether the seller attaches work a block lacks (see [`work`]).
    pub work: work::WorkPolicy,
}

/// A refusal: the x402 reason, human text (no secrets), and the status the filter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: ErrorReason,
    pub message: String,
    /// 402 (pay again), 400 (malformed payment) or 429 (`rate_limited`).
    pub status: u16,
    pub payer: Option<String>,
    /// Seconds to wait before presenting again (`rate_limited` only).
    pub retry_after: Option<u64>,
}

impl Rejection {
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        let status = match reason {
            ErrorReason::InvalidPayload | ErrorReason::InvalidX402Version => 400,
            ErrorReason::RateLimited => 429,
            _ => 402,
        };
        Rejection {
            reason,
            message: message.into(),
            status,
            payer: None,
            retry_after: None,
        }
    }

    /// Too many presentations: answered 429 with `Retry-After: retry_after`.
    pub fn rate_limited(retry_after: u64, message: impl Into<String>) -> Self {
        Rejection {
            retry_after: Some(retry_after.max(1)),
            ..Rejection::new(ErrorReason::RateLimited, message)
        }
    }

    pub fn with_payer(mut self, payer: &PublicKey) -> Self {
        self.payer = Some(payer.to_address());
        self
    }
}

/// A settled (or re-redeemed) payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub receipt: String,
    pub transaction: BlockHash,
    pub payer: String,
    /// For `PAYMENT-RESPONSE`.
    pub settlement: SettlementResponse,
    /// `true` when this admits a payment again after a failed upstream call.
    pub redeemed: bool,
    /// This admission's token (fresh for every admission, first or redemption): the outcome
    /// is recorded only with it. `None` for facilitator settlements, which have no outcome.
    pub admission_token: Option<String>,
}

/// What became of an outcome report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeReport {
    Recorded,
    /// Unknown receipt, or its payment is no longer admitted (reported already, or its lease
    /// ended): nothing to record.
    NotAdmitted,
    /// No token, or not the token of the payment's current admission: refused, not recorded.
    Refused(&'static str),
}

/// A fresh admission token and the hash the store keeps of it.
pub(crate) fn new_admission_token() -> (String, String) {
    let token = nanogate_protocol::hex::encode_lower(&rand::random::<[u8; 32]>());
    let hash = crate::store::payments::admission_token_hash(&token);
    (token, hash)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Admit(Box<Admission>),
    Reject(Rejection),
    /// The ledger (or the store) cannot be reached: the filter answers 503 + Retry-After.
    Unavailable(Rejection),
}

impl Verdict {
    pub fn reason(&self) -> Option<ErrorReason> {
        match self {
            Verdict::Admit(_) => None,
            Verdict::Reject(r) | Verdict::Unavailable(r) => Some(r.reason),
        }
    }
}

/// Counts settlements in flight so shutdown can drain them.
#[derive(Debug, Default)]
pub struct Inflight {
    count: AtomicUsize,
    idle: Notify,
}

pub struct InflightGuard<'a>(&'a Inflight);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Inflight {
    pub fn enter(&self) -> InflightGuard<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self)
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves when no settlement is in flight.
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) keys: ChallengeKeys,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) metrics: Arc<Metrics>,
    instance: String,
    attempts: AtomicU64,
    pub inflight: Inflight,
    /// The tagged-session mechanism's settings and followed accounts.
    pub(crate) tagged: tagged::TaggedState,
    /// Recent `account_info` answers (refusals they prove cost no node call).
    pub(crate) frontiers: frontier_cache::FrontierCache,
    /// Presentation limits per source and per payer frontier.
    pub(crate) limits: Arc<Limits>,
    /// Seller-side work (`None`: every block must carry its own).
    pub(crate) work: Option<Arc<work::WorkAttacher>>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 16 random bytes as lower hex (receipt ids, instance ids).
pub(crate) fn random_hex() -> String {
    nanogate_protocol::hex::encode_lower(&rand::random::<[u8; 16]>())
}

pub(crate) fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        keys: ChallengeKeys,
        store: Arc<dyn Store>,
        ledger: Arc<dyn Ledger>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Engine {
            cfg,
            keys,
            store,
            ledger,
            metrics,
            instance: random_hex(),
            attempts: AtomicU64::new(0),
            inflight: Inflight::default(),
            tagged: tagged::TaggedState::default(),
            frontiers: frontier_cache::FrontierCache::default(),
            limits: Arc::new(Limits::default()),
            work: None,
        }
    }

    /// Lets payments whose policy allows it have work attached (before the engine is shared).
    pub fn with_work(mut self, work: Arc<work::WorkAttacher>) -> Self {
        self.work = Some(work);
        self
    }

    pub fn work(&self) -> Option<&Arc<work::WorkAttacher>> {
        self.work.as_ref()
    }

    /// Applies presentation limits (before the engine is shared).
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Replaces the tagged-amount settings (before the engine is shared).
    pub fn with_tagged(mut self, settings: tagged::TaggedSettings) -> Self {
        self.tagged = tagged::TaggedState::new(settings);
        self
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn keys(&self) -> &ChallengeKeys {
        &self.keys
    }

    /// The pool accounts of tagged sessions followed now.
    pub fn pool_accounts(&self) -> Vec<nanogate_protocol::nano::PublicKey> {
        self.tagged.watched_accounts()
    }

    /// Every payee and pool account the sidecar follows now.
    pub fn followed_accounts(&self) -> Vec<nanogate_protocol::nano::PublicKey> {
        let mut accounts = self.tagged.watched_accounts();
        accounts.extend(self.tagged.payee_accounts().into_iter().map(|(k, _)| k));
        accounts.extend(self.cfg.pay_to_allow.iter().copied());
        accounts
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A unique owner id for one settlement attempt (fork-set leases).
    fn next_owner(&self) -> String {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.instance)
    }

    /// Records the filter's report of the upstream's status for a receipt: `admitted →
    /// served` (1..=499, and 0: the client reset before the response headers, so the upstream
    /// may have run the request) or `admitted → redeemable` (≥ 500: the upstream failed, or
    /// Envoy's own 503/504 for an upstream reset or timeout).
    ///
    /// Only with the token of the payment's current admission (what the admitting proxy got in
    /// its verdict): a caller holding the filter secret but not that token cannot turn the
    /// proxy's admission into a redeemable payment, nor mark it served.
    pub async fn record_outcome(
        &self,
        receipt: &str,
        status: u16,
        token: Option<&str>,
    ) -> Result<OutcomeReport, StoreError> {
        // A batch of one: one place judges outcomes, alone or batched.
        let one = [OutcomeRequest {
            receipt: receipt.to_owned(),
            status,
            admission_token: token.map(str::to_owned),
        }];
        self.record_outcomes(&one)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Query("a batch of one outcome got no report".into()))
    }

    /// [`Engine::record_outcome`] for each outcome of a filter VM's batch, each judged with its
    /// own admission token: the token-bearing ones written together
    /// ([`crate::store::Store::record_outcomes`]), then each one not recorded (or without a
    /// token) told apart as alone, [`OUTCOME_BATCH_CONCURRENCY`] at a time. The reports are in
    /// the batch's order.
    pub async fn record_outcomes(
        &self,
        batch: &[OutcomeRequest],
    ) -> Result<Vec<OutcomeReport>, StoreError> {
        let hashes: Vec<Option<String>> = batch
            .iter()
            .map(|o| {
                o.admission_token
                    .as_deref()
                    .map(crate::store::payments::admission_token_hash)
            })
            .collect();
        let writes: Vec<TokenOutcome> = batch
            .iter()
            .zip(&hashes)
            .filter_map(|(o, hash)| {
                Some(TokenOutcome {
                    receipt: o.receipt.clone(),
                    status: i64::from(o.status),
                    token_hash: hash.clone()?,
                })
            })
            .collect();
        let mut recorded = Vec::new();
        if !writes.is_empty() {
            let t = std::time::Instant::now();
            let done = self
                .store
                .record_outcomes(&writes, as_i64(unix_now()), self.cfg.redeem)
                .await;
            self.metrics.store_op("record_outcomes", t.elapsed());
            recorded = done?;
        }
        let mut recorded = recorded.into_iter();
        let judging: Vec<_> = batch
            .iter()
            .zip(&hashes)
            .map(|(o, hash)| {
                let written = hash.as_ref().map(|h| (h, recorded.next() == Some(true)));
                async move {
                    match written {
                        None => self.outcome_without_token(&o.receipt).await,
                        Some((_, true)) => Ok(OutcomeReport::Recorded),
                        Some((hash, false)) => self.outcome_not_recorded(&o.receipt, hash).await,
                    }
                }
            })
            .collect();
        futures_util::stream::iter(judging)
            .buffered(OUTCOME_BATCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// An outcome without a token: refused if there is an admission it could have changed;
    /// else nothing to record.
    async fn outcome_without_token(&self, receipt: &str) -> Result<OutcomeReport, StoreError> {
        if self.store.admission_token(receipt).await?.is_none() {
            return Ok(OutcomeReport::NotAdmitted);
        }
        self.metrics.outcome_refused("missing_token");
        tracing::warn!(%receipt, "outcome without an admission token refused");
        Ok(OutcomeReport::Refused("missing_token"))
    }

    /// An outcome with the token hash `hash` that was not recorded: a stale (or forged) token
    /// for an admitted payment, or nothing to do.
    async fn outcome_not_recorded(
        &self,
        receipt: &str,
        hash: &str,
    ) -> Result<OutcomeReport, StoreError> {
        match self.store.admission_token(receipt).await? {
            Some(current) if current.as_deref() != Some(hash) => {
                self.metrics.outcome_refused("stale_token");
                tracing::warn!(%receipt, "outcome with a stale admission token refused");
                Ok(OutcomeReport::Refused("stale_token"))
            }
            _ => Ok(OutcomeReport::NotAdmitted),
        }
    }

    /// The filter never received this admission (it stopped waiting): `admitted →
    /// redeemable`, so the payer's retry is served.
    pub async fn undelivered(&self, receipt: &str) {
        match self
            .store
            .release(receipt, as_i64(unix_now()), self.cfg.redeem)
            .await
        {
            Ok(true) => tracing::info!(%receipt, "admission undelivered; payment is redeemable"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, %receipt, "could not release an undelivered admission; its lease ends by itself")
            }
        }
    }

    /// How far back an expired challenge can still have a redeemable payment: the longest
    /// challenge validity, the fork grace (a claim may finish after expiry) and the window.
    pub fn redemption_horizon_secs(&self) -> u64 {
        MAX_CHALLENGE_SECS
            .saturating_add(self.cfg.fork_grace_secs)
            .saturating_add(u64::try_from(self.cfg.redeem.window_secs).unwrap_or(0))
    }

    /// Counts and wraps a rejection.
    pub(crate) fn reject(&self, r: Rejection) -> Verdict {
        tracing::debug!(reason = r.reason.as_str(), message = %r.message, "payment rejected");
        self.metrics.reject(r.reason.as_str());
        Verdict::Reject(r)
    }

    pub(crate) fn unavailable(&self, what: &str) -> Verdict {
        tracing::debug!(what, "payment cannot be decided: dependency unavailable");
        self.metrics.unavailable.inc();
        self.metrics.reject(ErrorReason::LedgerUnavailable.as_str());
        Verdict::Unavailable(Rejection::new(
            ErrorReason::LedgerUnavailable,
            format!("{what} unavailable; retry shortly"),
        ))
    }

    /// Every ledger failure fails closed as "ledger unavailable" (per-node RPC errors are
    /// counted by the node client's metrics hook).
    pub(crate) fn ledger_failed(&self, e: &LedgerError) -> Verdict {
        tracing::debug!(error = %e, "ledger call failed");
        self.unavailable("ledger")
    }

    pub(crate) fn store_failed(&self, e: &StoreError) -> Verdict {
        tracing::warn!(error = %e, "store error");
        self.unavailable("store")
    }
}

#[cfg(test)]
mod tests;
