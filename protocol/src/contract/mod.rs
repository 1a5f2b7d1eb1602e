//! The filter ↔ sidecar contract in code: every path, header, literal and body the two ends
//! exchange, defined once (prose: `docs/filter-sidecar.md`).
//!
//! * [`paths`] and [`headers`]: where requests go and the `x-nanogate-*` header names.
//! * [`SCHEME_EXACT`], [`ASSET_XNO`], [`Mechanism`]: the literals every offer carries.
//! * [`Offer`]: one offer's terms, from which both the challenge MAC input
//!   ([`crate::challenge::ChallengeTerms`]) and the `accepts[]` entry
//!   ([`crate::x402::PaymentRequirements`]) are built, so the two cannot drift apart.
//! * [`network`]: which x402 network ids nanogate accepts.
//! * [`pay`]: `/v1/pay` (request, verdict and how the filter reads it), `/v1/outcome` and its
//!   batch, `/v1/outcomes`.
//! * [`keys`]: `/v1/challenge-key`. [`sessions`]: `/v1/sessions` and the tagged offer's extras.
//! * [`facilitator`]: `/v1/challenge` (the facilitator's bodies proper are in [`crate::x402`]).
//! * [`admin`]: the payment ledger page, revenue, the overview and the error body.
//! * [`refunds`]: refunds of owed payments and pocketing.
//! * [`pass`]: prepaid passes: the offer's `extra.pass`, the token, the cookie, the usage
//!   reports and the operator's pass API.
//!
//! Wire compatibility: field names and shapes here are what both ends sent before these types
//! existed; the tests beside each type parse that exact JSON. Readers are as lenient as the
//! filter always was where it matters (a malformed optional field is ignored, not fatal), and
//! nothing here pulls in more than `serde`/`serde_json`, so the filter module stays small.

pub mod admin;
pub mod facilitator;
pub mod keys;
pub mod network;
mod offer;
pub mod pass;
pub mod pay;
pub mod refunds;
pub mod sessions;

pub use admin::{
    ErrorBody, Overview, PaymentRow, PaymentsPage, PoolUsage, ReadyBody, RevenueAnswer, RevenueRow,
    StateTotalRow,
};
pub use facilitator::ChallengeRequest;
pub use keys::{ChallengeKeyAnswer, KeyEntry, MAX_RETIRED_KEYS};
pub use network::{check_network, NetworkError};
pub use offer::{Mechanism, Offer, Payee, UnknownMechanism};
pub use pay::{
    read_pay_answer, OutcomeAnswer, OutcomeBatch, OutcomeBatchAnswer, OutcomeRequest, PayAnswer,
    PayRequest, PaySourceError, Verdict, VerdictBody, VerdictKind, MAX_OUTCOME_BATCH,
};
pub use sessions::{
    parse_sessions, route_scope, NanoSession, SessionOffer, SessionsAnswer, SessionsRequest,
    SCOPE_PREFIX,
};

/// The only x402 scheme nanogate offers and accepts.
pub const SCHEME_EXACT: &str = "exact";
/// The only asset: Nano, amounts in raw (10^-30 XNO).
pub const ASSET_XNO: &str = "XNO";

/// Request paths of the sidecar's HTTP surface.
pub mod paths {
    // The filter API (`x-nanogate-secret`).
    /// `GET`: the challenge keys ([`super::ChallengeKeyAnswer`]).
    pub const CHALLENGE_KEY: &str = "/v1/challenge-key";
    /// `POST` [`super::PayRequest`] → [`super::VerdictBody`].
    pub const PAY: &str = "/v1/pay";
    /// `POST` [`super::OutcomeRequest`] → [`super::OutcomeAnswer`].
    pub const OUTCOME: &str = "/v1/outcome";
    /// `POST` [`super::OutcomeBatch`] → [`super::OutcomeBatchAnswer`].
    pub const OUTCOMES: &str = "/v1/outcomes";
    /// `POST` [`super::SessionsRequest`] → [`super::SessionsAnswer`].
    pub const SESSIONS: &str = "/v1/sessions";
    /// `POST` [`super::pass::PassUsageRequest`] → [`super::pass::PassUsageAnswer`].
    pub const PASS_USAGE: &str = "/v1/passes/usage";

    // The x402 facilitator API (bearer token, except `/supported`).
    /// `POST` `FacilitatorRequest` → `VerifyResponse`.
    pub const VERIFY: &str = "/verify";
    /// `POST` `FacilitatorRequest` → `SettlementResponse`.
    pub const SETTLE: &str = "/settle";
    /// `GET` → `SupportedResponse` (public).
    pub const SUPPORTED: &str = "/supported";
    /// `POST`: MAC-bound requirements for a resource server.
    pub const CHALLENGE: &str = "/v1/challenge";

    // The operator's API (bearer token).
    /// `GET`: one page of the payment ledger.
    pub const ADMIN_PAYMENTS: &str = "/v1/admin/payments";
    /// `GET`: stray payments (the older view of `owed` ones).
    pub const ADMIN_STRAY: &str = "/v1/admin/stray";
    /// `GET`: the ledger summed per day, route and payee ([`super::RevenueAnswer`]).
    pub const ADMIN_REVENUE: &str = "/v1/admin/revenue";
    /// `GET`: health, per-state totals and pool usage at a glance ([`super::Overview`]).
    pub const ADMIN_OVERVIEW: &str = "/v1/admin/overview";
    /// `GET` (public: a static page holding no data; it calls the APIs above with the token
    /// the operator types in or passes in the URL fragment).
    pub const DASHBOARD: &str = "/dashboard";
    /// `POST`: refund owed payments ([`super::refunds::RefundsAnswer`]).
    pub const ADMIN_REFUNDS: &str = "/v1/admin/refunds";
    /// `POST`: record a refund the operator's wallet sent, checked on the ledger.
    pub const ADMIN_REFUNDS_MARK: &str = "/v1/admin/refunds/mark";
    /// `GET`: receivable sends per followed account.
    pub const ADMIN_RECEIVABLE: &str = "/v1/admin/receivable";
    /// `POST`: publish receive blocks for them (with a payee key).
    pub const ADMIN_POCKET: &str = "/v1/admin/pocket";
    /// `POST`: send the pool accounts' balances to the treasury (with a payee key).
    pub const ADMIN_SWEEP: &str = "/v1/admin/sweep";
    /// `GET`: one page of passes ([`super::pass::PassesPage`]).
    pub const ADMIN_PASSES: &str = "/v1/admin/passes";
    /// `POST` [`super::pass::PassRevokeRequest`] → [`super::pass::PassRow`].
    pub const ADMIN_PASSES_REVOKE: &str = "/v1/admin/passes/revoke";

    // Public probes.
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";

    /// The filter API: every path the filter calls, with the filter secret (a mesh's policy
    /// must let the filter's proxies reach each of them).
    pub const FILTER: &[&str] = &[CHALLENGE_KEY, PAY, OUTCOME, OUTCOMES, SESSIONS, PASS_USAGE];

    /// Every path above (the sidecar's tests check each is served, behind its credential).
    pub const ALL: &[&str] = &[
        CHALLENGE_KEY,
        PAY,
        OUTCOME,
        OUTCOMES,
        SESSIONS,
        PASS_USAGE,
        VERIFY,
        SETTLE,
        SUPPORTED,
        CHALLENGE,
        ADMIN_PAYMENTS,
        ADMIN_STRAY,
        ADMIN_REVENUE,
        ADMIN_OVERVIEW,
        DASHBOARD,
        ADMIN_REFUNDS,
        ADMIN_REFUNDS_MARK,
        ADMIN_RECEIVABLE,
        ADMIN_POCKET,
        ADMIN_SWEEP,
        ADMIN_PASSES,
        ADMIN_PASSES_REVOKE,
        HEALTHZ,
        READYZ,
        METRICS,
    ];
}

/// x402 discovery, answered by the filter (filter/README.md, "Discovery").
pub mod discovery {
    /// `GET`: the paid resources of the host and their prices, from the filter's configuration.
    pub const WELL_KNOWN: &str = "/.well-known/x402";
    /// The x402 v2 discovery extension's key in a 402's `extensions` (`{info, schema}`).
    pub const BAZAAR: &str = "bazaar";
}

/// Header names (lower case, as HTTP/2 and Envoy carry them) and fixed values.
pub mod headers {
    /// The filter's shared secret, on every filter API call.
    pub const SECRET: &str = "x-nanogate-secret";
    /// Set to [`VERDICT_MARKER`] on every `/v1/pay` answer the sidecar itself wrote, so an
    /// answer Envoy synthesized (503/504) never reads as a verdict.
    pub const VERDICT: &str = "x-nanogate-verdict";
    pub const VERDICT_MARKER: &str = "1";
    /// The paying block's hash, added by the filter to an admitted request for the upstream.
    pub const TRANSACTION: &str = "x-nanogate-transaction";
    /// The payer's pass token ([`super::pass::HEADER`]); stripped before the upstream.
    pub const PASS: &str = super::pass::HEADER;
    /// The request header a browser sends its pass cookies in (`nanogate-pass-<group>`); the
    /// filter removes those cookies from it before the upstream.
    pub const COOKIE: &str = "cookie";
    /// Scheme prefix of the facilitator and admin APIs' `authorization` header.
    pub const BEARER_PREFIX: &str = "Bearer ";
}

/// Largest sidecar answer the filter reads (bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
