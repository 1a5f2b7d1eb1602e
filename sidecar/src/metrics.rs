//! Prometheus metrics, served at `/metrics`. Labels carry reason codes, node labels (an index
//! or host, never a URL with credentials), store operations and API names; never keys,
//! secrets, payers or hashes.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: String,
}

/// A payment state (`admitted`, `served`, `redeemable`, `owed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: String,
}

/// The payment gauges are read from the store at most this often (seconds).
pub const PAYMENT_TOTALS_EVERY_SECS: u64 = 5;

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub payments_settled: Counter,
    pub payments_redeemed: Counter,
    pub rejections: Family<ReasonLabel, Counter>,
    pub unavailable: Counter,
    pub verify_seconds: Histogram,
    pub settlement_seconds: Histogram,
    pub confirmation_seconds: Histogram,
    pub rpc_errors: Family<NodeLabel, Counter>,
    pub store_seconds: HistFamily<OpLabel>,
    pub auth_failures: Family<ApiLabel, Counter>,
    pub rpc_seconds: HistFamily<OpLabel>,
    pub confirmation_pushes: Counter,
    pub confirmation_polls: Counter,
    /// Payments to tagged-session accounts that bought nothing, by reason.
    pub stray_payments: Family<ReasonLabel, Counter>,
    /// Payments in the ledger, by state (refreshed from the store on scrape).
    pub payments: Family<StateLabel, Gauge>,
    /// Raw sum of the payments in each state (a float: exact up to 2^53 raw, then rounded).
    pub payments_raw: Family<StateLabel, Gauge<f64, AtomicU64>>,
    /// When the payment gauges were last read from the store (unix seconds).
    payments_read_at: AtomicU64,
    /// Refusals answered from the frontier cache (node calls saved).
    pub frontier_cache_refusals: Counter,
    /// Requests shed because the concurrency limit was full.
    pub requests_shed: Counter,
    /// Requests that ran past their time limit.
    pub requests_timed_out: Counter,
    /// Readiness probes that queried the store and the node (not answered from the cache).
    pub readiness_probes: Counter,
    /// Outcome reports refused for a missing or stale admission token, by reason.
    pub outcomes_refused: Family<ReasonLabel, Counter>,
    /// Passes bought (recorded with their payment; a redemption is not counted again).
    pub passes_sold: Counter,
    /// Pass usage reports received from filter VMs.
    pub pass_usage_reports: Counter,
    /// Requests served on counted passes, as reported.
    pub pass_requests_reported: Counter,
    /// Passes revoked by the operator.
    pub passes_revoked: Counter,
    /// Authenticated calls to the filter API, by path (the filter's traffic to the sidecar).
    pub filter_calls: Family<PathLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nanogate");
        let m = Metrics {
            payments_settled: Counter::default(),
            payments_redeemed: Counter::default(),
            rejections: Family::default(),
            unavailable: Counter::default(),
            verify_seconds: latency_histogram(),
            settlement_seconds: latency_histogram(),
            confirmation_seconds: latency_histogram(),
            rpc_errors: Family::default(),
            store_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            auth_failures: Family::default(),
            rpc_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            confirmation_pushes: Counter::default(),
            confirmation_polls: Counter::default(),
            stray_payments: Family::default(),
            payments: Family::default(),
            payments_raw: Family::default(),
            payments_read_at: AtomicU64::new(0),
            frontier_cache_refusals: Counter::default(),
            requests_shed: Counter::default(),
            requests_timed_out: Counter::default(),
            readiness_probes: Counter::default(),
            outcomes_refused: Family::default(),
            passes_sold: Counter::default(),
            pass_usage_reports: Counter::default(),
            pass_requests_reported: Counter::default(),
            passes_revoked: Counter::default(),
            filter_calls: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "passes_sold",
            "Prepaid passes bought",
            m.passes_sold.clone(),
        );
        registry.register(
            "pass_usage_reports",
            "Pass usage reports received from filter VMs",
            m.pass_usage_reports.clone(),
        );
        registry.register(
            "pass_requests_reported",
            "Requests served on counted passes, as the filters reported them",
            m.pass_requests_reported.clone(),
        );
        registry.register(
            "passes_revoked",
            "Passes revoked by the operator",
            m.passes_revoked.clone(),
        );
        registry.register(
            "filter_calls",
            "Authenticated filter API calls, by path",
            m.filter_calls.clone(),
        );
        registry.register(
            "outcomes_refused",
            "Outcome reports refused (not recorded) for a missing or stale admission token",
            m.outcomes_refused.clone(),
        );
        registry.register(
            "payments_settled",
            "Payments settled (confirmed and consumed)",
            m.payments_settled.clone(),
        );
        registry.register(
            "payments_redeemed",
            "Settled payments redeemed again after a failed upstream call",
            m.payments_redeemed.clone(),
        );
        registry.register(
            "rejections",
            "Payments rejected, by x402 reason",
            m.rejections.clone(),
        );
        registry.register(
            "ledger_unavailable",
            "Verdicts of ledger (or store) unavailable",
            m.unavailable.clone(),
        );
        registry.register(
            "verify_seconds",
            "Time to verify a payment (structure to ledger checks)",
            m.verify_seconds.clone(),
        );
        registry.register(
            "settlement_seconds",
            "Time from verified payment to recorded consumption",
            m.settlement_seconds.clone(),
        );
        registry.register(
            "confirmation_seconds",
            "Time from process to confirmation on the ledger",
            m.confirmation_seconds.clone(),
        );
        registry.register(
            "rpc_errors",
            "Nano RPC errors, by node",
            m.rpc_errors.clone(),
        );
        registry.register(
            "store_seconds",
            "Store operation latency, by operation",
            m.store_seconds.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for a missing or wrong credential, by API",
            m.auth_failures.clone(),
        );
        registry.register(
            "rpc_seconds",
            "Nano RPC latency of answered calls, by action",
            m.rpc_seconds.clone(),
        );
        registry.register(
            "confirmation_pushes",
            "Confirmations received by WebSocket push",
            m.confirmation_pushes.clone(),
        );
        registry.register(
            "confirmation_polls",
            "Confirmation waits that fell back to a block_info poll",
            m.confirmation_polls.clone(),
        );
        registry.register(
            "stray_payments",
            "Payments to tagged-session accounts that bought nothing (wrong amount, unknown, late, too early), by reason",
            m.stray_payments.clone(),
        );
        registry.register(
            "payments",
            "Payments in the payment ledger, by state (admitted, served, redeemable, owed)",
            m.payments.clone(),
        );
        registry.register(
            "payments_raw",
            "Sum of the payments in the payment ledger in raw, by state",
            m.payments_raw.clone(),
        );
        registry.register(
            "frontier_cache_refusals",
            "Payments refused from the short account_info cache, without a node call",
            m.frontier_cache_refusals.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests answered 503 at once because the concurrency limit was full",
            m.requests_shed.clone(),
        );
        registry.register(
            "requests_timed_out",
            "Requests answered 408 because they ran past their time limit (slow body or handler)",
            m.requests_timed_out.clone(),
        );
        registry.register(
            "readiness_probes",
            "Readiness probes of the store and the node (/readyz answers from the last probe)",
            m.readiness_probes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Whether the payment gauges should be read from the store again at `now` (at most every
    /// [`PAYMENT_TOTALS_EVERY_SECS`]); claims the refresh when they should.
    pub fn payment_totals_due(&self, now: u64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.payments_read_at.load(Ordering::Acquire);
        now.saturating_sub(last) >= PAYMENT_TOTALS_EVERY_SECS
            && self
                .payments_read_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Sets the per-state gauges (every state, zero when absent).
    pub fn set_payment_totals(&self, totals: &[crate::store::StateTotal]) {
        for state in crate::store::PaymentState::ALL {
            let t = totals.iter().find(|t| t.state == state);
            let label = StateLabel {
                state: state.as_str().to_owned(),
            };
            let count = t.map_or(0, |t| i64::try_from(t.count).unwrap_or(i64::MAX));
            self.payments.get_or_create(&label).set(count);
            // Precision loss above 2^53 raw is acceptable for a gauge; the exact sums are in
            // the admin API.
            #[allow(clippy::cast_precision_loss)]
            let raw = t.map_or(0.0, |t| t.raw as f64);
            self.payments_raw.get_or_create(&label).set(raw);
        }
    }

    pub fn outcome_refused(&self, reason: &str) {
        self.outcomes_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn reject(&self, reason: &str) {
        self.rejections
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn store_op(&self, op: &str, elapsed: Duration) {
        self.store_seconds
            .get_or_create(&OpLabel { op: op.to_owned() })
            .observe(elapsed.as_secs_f64());
    }

    pub fn rpc_error(&self, node: &str) {
        self.rpc_errors
            .get_or_create(&NodeLabel {
                node: node.to_owned(),
            })
            .inc();
    }

    pub fn auth_failure(&self, api: &str) {
        self.auth_failures
            .get_or_create(&ApiLabel {
                api: api.to_owned(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
