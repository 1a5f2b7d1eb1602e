//! The payment ledger (docs/payments.md): one row per payment, keyed by its spent key
//! `network:HASH`, in exactly one state.
//!
//! ```text
//!            consume ──► admitted ──outcome 1..=499 or 0──► served
//!   (late) consume ──►      │  ▲ ──outcome ≥ 500 / lease over / verdict undelivered──► redeemable
//!                           │  └──────────────── redeem (within the window) ◄──────────┘
//!   stray / too late ──► owed ◄──── window over (settled_at + redeem window) ── redeemable
//! ```
//!
//! The row's existence is the spent set: inserting it is the atomic insert-if-absent that makes
//! a payment buy at most once across replicas (invariant 8). Every transition is one
//! conditional `UPDATE … WHERE state = <from>` whose rows-affected count says whether it
//! happened, never a read followed by a write; the states themselves are a `CHECK` constraint.
//! One SQL text serves both backends ([`impl_payment_store`]).

use super::StoreFuture;
use nanogate_protocol::contract::Mechanism;

/// The state of a payment. Stored as its [`as_str`](PaymentState::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PaymentState {
    /// It bought a request that may still be in flight at the upstream (until `lease_until`).
    Admitted,
    /// It bought a response.
    Served,
    /// Settled, not served: the payer presents the same payment again and is served, until
    /// `settled_at + redeem_window_secs`.
    Redeemable,
    /// It cannot buy anything; listed (payer, amount, reason, time) for a refund.
    Owed,
    /// Its refund (a signed send back to the payer) is recorded and being published
    /// (docs/refunds.md).
    Refunding,
    /// Its refund is confirmed on the ledger.
    Refunded,
}

impl PaymentState {
    pub const ALL: [PaymentState; 6] = [
        PaymentState::Admitted,
        PaymentState::Served,
        PaymentState::Redeemable,
        PaymentState::Owed,
        PaymentState::Refunding,
        PaymentState::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Admitted => "admitted",
            PaymentState::Served => "served",
            PaymentState::Redeemable => "redeemable",
            PaymentState::Owed => "owed",
            PaymentState::Refunding => "refunding",
            PaymentState::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// `mechanism` of a signed-block payment (we broadcast the client's block).
pub const SIGNED_BLOCK: &str = Mechanism::SignedBlock.ledger_name();
/// `mechanism` of a tagged-session payment (the client broadcast a send), and of any other
/// send to a pool account.
pub const TAGGED: &str = Mechanism::TaggedSession.ledger_name();

/// Why a payment is owed (the `reason` column).
pub mod owed {
    /// A settled payment that was not redeemed within the window after its settlement.
    pub const REDEEM_WINDOW_PASSED: &str = "redeem_window_passed";
    /// A block confirmed after its challenge expired, presented after the window.
    pub const LATE: &str = "late";
    /// A payment whose request failed at the upstream after it had used every redemption
    /// (`settlement.max_redemptions`): it cannot buy the response any more.
    pub const REDEMPTIONS_EXHAUSTED: &str = "redemptions_exhausted";
}

/// The state a payment that was not served goes to: `redeemable`, or `owed`
/// (`redemptions_exhausted`) once it has used every redemption. `$1` is `max_redemptions`;
/// the reason column follows the same rule.
pub(crate) const NOT_SERVED: &str =
    "state = CASE WHEN redemptions >= $1 THEN 'owed' ELSE 'redeemable' END, \
     reason = CASE WHEN redemptions >= $1 THEN 'redemptions_exhausted' ELSE reason END";

/// The `payments` columns a [`PaymentRecord`] is read from, as a literal (for `concat!`).
macro_rules! payment_cols {
    () => {
        "spent_key, receipt, mechanism, payer, pay_to, amount, resource, nonce, state, reason, \
         settled_at, updated_at, lease_until, redemptions"
    };
}

/// The `payments` columns a [`PaymentRecord`] is read from.
pub(crate) const PAYMENT_COLS: &str = payment_cols!();

/// The ledger row of a spent key ([`PaymentStore::spent`]): `$1` the spent key.
pub(crate) const SPENT: &str = concat!(
    "SELECT ",
    payment_cols!(),
    " FROM payments WHERE spent_key = $1"
);

/// One payment-ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub spent_key: String,
    /// `None` only for owed payments that never bought anything.
    pub receipt: Option<String>,
    pub mechanism: String,
    /// `nano_` address.
    pub payer: String,
    /// `nano_` address (empty for rows migrated from before the ledger kept it).
    pub pay_to: String,
    /// Raw, decimal.
    pub amount: String,
    /// The resource (signed block) or route scope (tagged) it was paid for.
    pub resource: String,
    /// The challenge nonce (signed block) or session id (tagged); `None` for unbound
    /// facilitator requirements and unmatched sends.
    pub nonce: Option<String>,
    pub state: PaymentState,
    pub reason: Option<String>,
    pub settled_at: i64,
    pub updated_at: i64,
    /// While `admitted`: the request may be in flight at the upstream until then.
    pub lease_until: i64,
    pub redemptions: i64,
}

impl PaymentRecord {
    /// The block hash (the part of the spent key after the network).
    pub fn hash(&self) -> &str {
        self.spent_key
            .rsplit_once(':')
            .map_or(self.spent_key.as_str(), |(_, h)| h)
    }
}

/// What [`PaymentStore::consume`] records: a settled payment, with its first state.
#[derive(Debug, Clone)]
pub struct Consumption {
    pub spent_key: String,
    pub receipt: String,
    pub mechanism: &'static str,
    pub payer: String,
    pub pay_to: String,
    pub amount: u128,
    pub resource: String,
    pub nonce: Option<String>,
    pub now: i64,
    /// `Admitted` (the filter forwards now), `Served` (facilitator settlements: final at once)
    /// or `Redeemable` (settled after the filter stopped waiting).
    pub state: PaymentState,
    /// For `Admitted`: the end of the request's lease.
    pub lease_until: i64,
    /// For `Admitted` by the filter: the hash of the admission's token ([`admission_token_hash`]),
    /// without which no outcome is recorded.
    pub admission_token: Option<String>,
}

/// What the store keeps of an admission token: its BLAKE2b-256, hex.
pub fn admission_token_hash(token: &str) -> String {
    nanogate_protocol::hex::encode_lower(&nanogate_protocol::nano::blake2b_256(&[token.as_bytes()]))
}

/// A payment that cannot buy anything (a stray send, a payment confirmed too late).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedPayment {
    pub spent_key: String,
    pub mechanism: &'static str,
    pub payer: String,
    pub pay_to: String,
    pub amount: String,
    pub resource: String,
    pub nonce: Option<String>,
    pub reason: String,
    pub now: i64,
}

/// When a redeemable payment may be redeemed (invariant 5).
#[derive(Debug, Clone, Copy)]
pub struct RedeemPolicy {
    /// How many re-redemptions a payment allows.
    pub max_redemptions: i64,
    /// Seconds after settlement during which a payment not served stays redeemable.
    pub window_secs: i64,
}

/// How long finished rows are kept (docs/payments.md, "Retention").
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// `served` rows, after their last change.
    pub served_secs: i64,
    /// `owed` rows, after their last change.
    pub owed_secs: i64,
}

/// A filter for [`PaymentStore::payments`]; pages are ordered by `(settled_at, spent_key)`.
#[derive(Debug, Clone, Default)]
pub struct PaymentQuery {
    pub state: Option<PaymentState>,
    pub resource: Option<String>,
    pub payer: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Continue after this `(settled_at, spent_key)`.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// Count and raw sum of the payments in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTotal {
    pub state: PaymentState,
    pub count: u64,
    pub raw: u128,
}

/// A signed block that was broadcast but not confirmed within the wait: tracked until it
/// confirms (then recorded redeemable) or `track_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSettlement {
    pub spent_key: String,
    /// The block's JSON (nano-node form).
    pub block: String,
    pub payer: String,
    pub pay_to: String,
    pub amount: String,
    pub resource: String,
    pub nonce: Option<String>,
    pub track_until: i64,
}

pub trait PaymentStore: Send + Sync {
    /// The ledger row of `spent_key`, if any.
    fn spent<'a>(&'a self, spent_key: &'a str) -> StoreFuture<'a, Option<PaymentRecord>>;

    /// Records a settled payment, insert-if-absent on the spent key. `false` = the payment is
    /// already recorded (by any replica, in any state).
    fn consume<'a>(&'a self, c: &'a Consumption) -> StoreFuture<'a, bool>;

    /// `redeemable → admitted` (also `admitted` whose lease ended, which is redeemable), if the
    /// window since settlement is open and the bound not reached; a new lease, and no admission
    /// token (no outcome report is accepted: see [`PaymentStore::redeem_with_token`]).
    fn redeem<'a>(
        &'a self,
        receipt: &'a str,
        policy: RedeemPolicy,
        now: i64,
        lease_until: i64,
    ) -> StoreFuture<'a, bool> {
        self.redeem_with_token(receipt, policy, now, lease_until, None)
    }

    /// [`PaymentStore::redeem`], the new admission's token hash replacing the previous one.
    fn redeem_with_token<'a>(
        &'a self,
        receipt: &'a str,
        policy: RedeemPolicy,
        now: i64,
        lease_until: i64,
        token_hash: Option<&'a str>,
    ) -> StoreFuture<'a, bool>;

    /// `admitted → served` (status 1..=499, or 0: the client reset before the response headers)
    /// or `admitted → redeemable` (status ≥ 500; `owed` once every redemption is used).
    /// `false` = unknown receipt or not admitted. No token check: for the sidecar's own
    /// transitions; reports from the filter go through [`PaymentStore::record_outcome_with_token`].
    fn record_outcome<'a>(
        &'a self,
        receipt: &'a str,
        status: i64,
        now: i64,
        policy: RedeemPolicy,
    ) -> StoreFuture<'a, bool> {
        self.record_outcome_with_token(receipt, status, now, policy, None)
    }

    /// [`PaymentStore::record_outcome`] only if the current admission's token hash is
    /// `token_hash` (`None`: no check).
    fn record_outcome_with_token<'a>(
        &'a self,
        receipt: &'a str,
        status: i64,
        now: i64,
        policy: RedeemPolicy,
        token_hash: Option<&'a str>,
    ) -> StoreFuture<'a, bool>;

    /// The token hash of the receipt's current admission: `None` = no such receipt or not
    /// `admitted`; `Some(None)` = admitted without a token.
    fn admission_token<'a>(&'a self, receipt: &'a str) -> StoreFuture<'a, Option<Option<String>>>;

    /// `admitted → redeemable` (or `owed` once every redemption is used): the filter never
    /// received the admission (it stopped waiting).
    fn release<'a>(
        &'a self,
        receipt: &'a str,
        now: i64,
        policy: RedeemPolicy,
    ) -> StoreFuture<'a, bool>;

    /// Records an owed payment once per spent key (`true` = new).
    fn record_owed<'a>(&'a self, o: &'a OwedPayment) -> StoreFuture<'a, bool>;

    /// Time-driven transitions: `admitted` whose lease ended → `redeemable` (or `owed` once
    /// every redemption is used); `redeemable` whose window ended → `owed`
    /// (`redeem_window_passed`).
    fn sweep(&self, now: i64, policy: RedeemPolicy) -> StoreFuture<'_, u64>;

    /// One page of payments, oldest settlement first.
    fn payments<'a>(&'a self, q: &'a PaymentQuery) -> StoreFuture<'a, Vec<PaymentRecord>>;

    /// Count and raw sum per state (states without payments are left out).
    fn payment_totals(&self) -> StoreFuture<'_, Vec<StateTotal>>;

    /// Starts (or refreshes) tracking a broadcast block.
    fn add_pending<'a>(&'a self, p: &'a PendingSettlement) -> StoreFuture<'a, ()>;

    /// Blocks still tracked at `now`.
    fn pending(&self, now: i64) -> StoreFuture<'_, Vec<PendingSettlement>>;

    fn remove_pending<'a>(&'a self, spent_key: &'a str) -> StoreFuture<'a, ()>;

    /// Whether `hash` (hex) is a signed-block payment: claimed in the fork set (we broadcast
    /// it, or are about to), tracked, or recorded as one. The tagged matcher skips such sends.
    fn is_signed_block<'a>(&'a self, spent_key: &'a str, hash: &'a str) -> StoreFuture<'a, bool>;

    /// Deletes `served` and `owed` rows past their retention and pending rows past tracking.
    fn prune_payments(&self, now: i64, keep: Retention) -> StoreFuture<'_, u64>;

    /// Folds stray payments kept before the payment ledger existed into owed rows.
    fn fold_legacy_strays<'a>(&'a self, network: &'a str) -> StoreFuture<'a, u64>;
}

/// Adds three 12-digit limbs (as summed by SQLite) into a raw amount.
pub(crate) fn from_limbs(lo: i64, mid: i64, hi: i64) -> u128 {
    const LIMB: u128 = 1_000_000_000_000;
    let c = |v: i64| u128::try_from(v).unwrap_or(0);
    c(hi)
        .saturating_mul(LIMB * LIMB)
        .saturating_add(c(mid).saturating_mul(LIMB))
        .saturating_add(c(lo))
}

/// Implements [`PaymentStore`] for a backend struct with a `pool` field; the SQL is shared
/// (`$n` parameters, rewritten to `?n` for SQLite). A fourth argument, a function
/// `(&Store, spent_key) -> Option<Result<Option<PaymentRecord>, StoreError>>`, may answer
/// [`PaymentStore::spent`] without the sqlx readers (`None`: ask them; SQLite's inline
/// readers, `super::sqlite::reader`).
macro_rules! impl_payment_store {
    ($store:ty, $row:ty, $sqlite:expr) => {
        $crate::store::payments::impl_payment_store!(
            $store,
            $row,
            $sqlite,
            |_: &$store, _: &str| -> Option<
                Result<Option<$crate::store::PaymentRecord>, $crate::store::StoreError>,
            > { None }
        );
    };
    ($store:ty, $row:ty, $sqlite:expr, $spent_inline:expr) => {
        const _: () = {
            use $crate::store::payments::{
                from_limbs, owed, Consumption, OwedPayment, PaymentQuery, PaymentRecord, NOT_SERVED,
                PaymentState, PaymentStore, PendingSettlement, RedeemPolicy, Retention,
                StateTotal,
            };
            use $crate::store::hot::HotWrite;
            use $crate::store::tagged::sql;
            use $crate::store::StoreFuture;
            use sqlx::Row;

            const COLS: &str = $crate::store::payments::PAYMENT_COLS;

            fn record(row: &$row) -> Result<PaymentRecord, sqlx::Error> {
                <$store>::payment_record(row)
            }

            impl $store {
                /// A `payments` row (the columns [`COLS`] names) as a record; also read by
                /// the backends' own queries that join it.
                pub(crate) fn payment_record(row: &$row) -> Result<PaymentRecord, sqlx::Error> {
                let state: String = row.try_get("state")?;
                Ok(PaymentRecord {
                    spent_key: row.try_get("spent_key")?,
                    receipt: row.try_get("receipt")?,
                    mechanism: row.try_get("mechanism")?,
                    payer: row.try_get("payer")?,
                    pay_to: row.try_get("pay_to")?,
                    amount: row.try_get("amount")?,
                    resource: row.try_get("resource")?,
                    nonce: row.try_get("nonce")?,
                    state: PaymentState::parse(&state).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown payment state {state}").into())
                    })?,
                    reason: row.try_get("reason")?,
                    settled_at: row.try_get("settled_at")?,
                    updated_at: row.try_get("updated_at")?,
                    lease_until: row.try_get("lease_until")?,
                    redemptions: row.try_get("redemptions")?,
                })
            }
            }

            fn pending_row(row: &$row) -> Result<PendingSettlement, sqlx::Error> {
                Ok(PendingSettlement {
                    spent_key: row.try_get("spent_key")?,
                    block: row.try_get("block")?,
                    payer: row.try_get("payer")?,
                    pay_to: row.try_get("pay_to")?,
                    amount: row.try_get("amount")?,
                    resource: row.try_get("resource")?,
                    nonce: row.try_get("nonce")?,
                    track_until: row.try_get("track_until")?,
                })
            }

            impl PaymentStore for $store {
                fn spent<'a>(
                    &'a self,
                    spent_key: &'a str,
                ) -> StoreFuture<'a, Option<PaymentRecord>> {
                    Box::pin(async move {
                        if let Some(read) = ($spent_inline)(self, spent_key) {
                            return read;
                        }
                        let q = $crate::store::payments::SPENT;
                        let row = sqlx::query(&sql(q, $sqlite))
                            .bind(spent_key)
                            .fetch_optional(&self.readers)
                            .await?;
                        Ok(row.as_ref().map(record).transpose()?)
                    })
                }

                fn consume<'a>(&'a self, c: &'a Consumption) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        Ok(self.hot(HotWrite::Consume(c.clone())).await?.applied())
                    })
                }

                fn redeem_with_token<'a>(
                    &'a self,
                    receipt: &'a str,
                    p: RedeemPolicy,
                    now: i64,
                    lease_until: i64,
                    token_hash: Option<&'a str>,
                ) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        let done = sqlx::query(&sql(
                            "UPDATE payments SET state = 'admitted', \
                               redemptions = redemptions + 1, lease_until = $1, updated_at = $2, \
                               admission_token = $6 \
                             WHERE receipt = $3 AND redemptions < $4 AND settled_at + $5 > $2 \
                               AND (state = 'redeemable' \
                                    OR (state = 'admitted' AND lease_until <= $2))",
                            $sqlite,
                        ))
                        .bind(lease_until)
                        .bind(now)
                        .bind(receipt)
                        .bind(p.max_redemptions)
                        .bind(p.window_secs)
                        .bind(token_hash)
                        .execute(&self.pool)
                        .await?;
                        Ok(done.rows_affected() == 1)
                    })
                }

                fn record_outcome_with_token<'a>(
                    &'a self,
                    receipt: &'a str,
                    status: i64,
                    now: i64,
                    policy: RedeemPolicy,
                    token_hash: Option<&'a str>,
                ) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        let op = HotWrite::Outcome {
                            receipt: receipt.to_owned(),
                            status,
                            now,
                            policy,
                            token_hash: token_hash.map(str::to_owned),
                        };
                        Ok(self.hot(op).await?.applied())
                    })
                }

                fn admission_token<'a>(
                    &'a self,
                    receipt: &'a str,
                ) -> StoreFuture<'a, Option<Option<String>>> {
                    Box::pin(async move {
                        let row = sqlx::query(&sql(
                            "SELECT admission_token FROM payments \
                             WHERE receipt = $1 AND state = 'admitted'",
                            $sqlite,
                        ))
                        .bind(receipt)
                        .fetch_optional(&self.readers)
                        .await?;
                        Ok(row
                            .map(|r| r.try_get::<Option<String>, _>("admission_token"))
                            .transpose()?)
                    })
                }

                fn release<'a>(
                    &'a self,
                    receipt: &'a str,
                    now: i64,
                    policy: RedeemPolicy,
                ) -> StoreFuture<'a, bool> {
                    // Not served: the same transition as an upstream 5xx, with no token check.
                    self.record_outcome_with_token(receipt, 500, now, policy, None)
                }

                fn record_owed<'a>(&'a self, o: &'a OwedPayment) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        let done = sqlx::query(&sql(
                            "INSERT INTO payments (spent_key, receipt, mechanism, payer, pay_to, \
                               amount, resource, nonce, state, reason, settled_at, updated_at) \
                             VALUES ($1, NULL, $2, $3, $4, $5, $6, $7, 'owed', $8, $9, $9) \
                             ON CONFLICT (spent_key) DO NOTHING",
                            $sqlite,
                        ))
                        .bind(&o.spent_key)
                        .bind(o.mechanism)
                        .bind(&o.payer)
                        .bind(&o.pay_to)
                        .bind(&o.amount)
                        .bind(&o.resource)
                        .bind(&o.nonce)
                        .bind(&o.reason)
                        .bind(o.now)
                        .execute(&self.pool)
                        .await?;
                        Ok(done.rows_affected() == 1)
                    })
                }

                fn sweep(&self, now: i64, policy: RedeemPolicy) -> StoreFuture<'_, u64> {
                    let window_secs = policy.window_secs;
                    Box::pin(async move {
                        let a = sqlx::query(&sql(
                            &format!(
                                "UPDATE payments SET {NOT_SERVED}, updated_at = $2 \
                                 WHERE state = 'admitted' AND lease_until <= $2"
                            ),
                            $sqlite,
                        ))
                        .bind(policy.max_redemptions)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                        let b = sqlx::query(&sql(
                            "UPDATE payments SET state = 'owed', reason = $1, updated_at = $2 \
                             WHERE state = 'redeemable' AND settled_at + $3 <= $2",
                            $sqlite,
                        ))
                        .bind(owed::REDEEM_WINDOW_PASSED)
                        .bind(now)
                        .bind(window_secs)
                        .execute(&self.pool)
                        .await?;
                        Ok(a.rows_affected() + b.rows_affected())
                    })
                }

                fn payments<'a>(
                    &'a self,
                    q: &'a PaymentQuery,
                ) -> StoreFuture<'a, Vec<PaymentRecord>> {
                    Box::pin(async move {
                        // Absent filters are NULL parameters, so the text stays one statement.
                        let text = format!(
                            "SELECT {COLS} FROM payments \
                             WHERE ($1 IS NULL OR state = $1) \
                               AND ($2 IS NULL OR resource = $2) \
                               AND ($3 IS NULL OR payer = $3) \
                               AND ($4 IS NULL OR settled_at >= $4) \
                               AND ($5 IS NULL OR settled_at < $5) \
                               AND ($6 IS NULL OR settled_at > $6 \
                                    OR (settled_at = $6 AND spent_key > $7)) \
                             ORDER BY settled_at, spent_key LIMIT $8"
                        );
                        let (after_at, after_key) = match &q.after {
                            Some((t, k)) => (Some(*t), Some(k.clone())),
                            None => (None, None),
                        };
                        let rows = sqlx::query(&sql(&text, $sqlite))
                            .bind(q.state.map(PaymentState::as_str))
                            .bind(&q.resource)
                            .bind(&q.payer)
                            .bind(q.since)
                            .bind(q.until)
                            .bind(after_at)
                            .bind(after_key)
                            .bind(q.limit)
                            .fetch_all(&self.readers)
                            .await?;
                        let mut out = Vec::with_capacity(rows.len());
                        for row in &rows {
                            out.push(record(row)?);
                        }
                        Ok(out)
                    })
                }

                fn payment_totals(&self) -> StoreFuture<'_, Vec<StateTotal>> {
                    Box::pin(async move {
                        let mut out = Vec::new();
                        if $sqlite {
                            // SQLite has no 128-bit integers: sum 12-digit limbs exactly.
                            let rows = sqlx::query(
                                "SELECT state, COUNT(*) AS n, \
                                   SUM(CAST(substr(amount, -12) AS INTEGER)) AS lo, \
                                   SUM(CAST(CASE WHEN length(amount) > 12 THEN \
                                     substr(amount, -24, 12) \
                                     ELSE '0' END AS INTEGER)) AS mid, \
                                   SUM(CAST(CASE WHEN length(amount) > 24 THEN \
                                     substr(amount, 1, length(amount) - 24) \
                                     ELSE '0' END AS INTEGER)) AS hi \
                                 FROM payments GROUP BY state",
                            )
                            .fetch_all(&self.readers)
                            .await?;
                            for row in &rows {
                                let state: String = row.try_get("state")?;
                                let Some(state) = PaymentState::parse(&state) else {
                                    continue;
                                };
                                let n: i64 = row.try_get("n")?;
                                let lo: Option<i64> = row.try_get("lo")?;
                                let mid: Option<i64> = row.try_get("mid")?;
                                let hi: Option<i64> = row.try_get("hi")?;
                                out.push(StateTotal {
                                    state,
                                    count: u64::try_from(n).unwrap_or(0),
                                    raw: from_limbs(
                                        lo.unwrap_or(0),
                                        mid.unwrap_or(0),
                                        hi.unwrap_or(0),
                                    ),
                                });
                            }
                        } else {
                            let rows = sqlx::query(
                                "SELECT state, COUNT(*) AS n, \
                                   SUM(CAST(amount AS NUMERIC))::TEXT AS raw \
                                 FROM payments GROUP BY state",
                            )
                            .fetch_all(&self.readers)
                            .await?;
                            for row in &rows {
                                let state: String = row.try_get("state")?;
                                let Some(state) = PaymentState::parse(&state) else {
                                    continue;
                                };
                                let n: i64 = row.try_get("n")?;
                                let raw: Option<String> = row.try_get("raw")?;
                                out.push(StateTotal {
                                    state,
                                    count: u64::try_from(n).unwrap_or(0),
                                    raw: raw.and_then(|r| r.parse().ok()).unwrap_or(0),
                                });
                            }
                        }
                        Ok(out)
                    })
                }

                fn add_pending<'a>(&'a self, p: &'a PendingSettlement) -> StoreFuture<'a, ()> {
                    Box::pin(async move {
                        sqlx::query(&sql(
                            "INSERT INTO pending_settlements (spent_key, block, payer, pay_to, \
                               amount, resource, nonce, track_until) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                             ON CONFLICT (spent_key) DO UPDATE SET track_until = excluded.track_until \
                             WHERE pending_settlements.track_until < excluded.track_until",
                            $sqlite,
                        ))
                        .bind(&p.spent_key)
                        .bind(&p.block)
                        .bind(&p.payer)
                        .bind(&p.pay_to)
                        .bind(&p.amount)
                        .bind(&p.resource)
                        .bind(&p.nonce)
                        .bind(p.track_until)
                        .execute(&self.pool)
                        .await?;
                        Ok(())
                    })
                }

                fn pending(&self, now: i64) -> StoreFuture<'_, Vec<PendingSettlement>> {
                    Box::pin(async move {
                        let rows = sqlx::query(&sql(
                            "SELECT spent_key, block, payer, pay_to, amount, resource, nonce, \
                               track_until FROM pending_settlements WHERE track_until > $1",
                            $sqlite,
                        ))
                        .bind(now)
                        .fetch_all(&self.readers)
                        .await?;
                        let mut out = Vec::with_capacity(rows.len());
                        for row in &rows {
                            out.push(pending_row(row)?);
                        }
                        Ok(out)
                    })
                }

                fn remove_pending<'a>(&'a self, spent_key: &'a str) -> StoreFuture<'a, ()> {
                    Box::pin(async move {
                        sqlx::query(&sql(
                            "DELETE FROM pending_settlements WHERE spent_key = $1",
                            $sqlite,
                        ))
                        .bind(spent_key)
                        .execute(&self.pool)
                        .await?;
                        Ok(())
                    })
                }

                fn is_signed_block<'a>(
                    &'a self,
                    spent_key: &'a str,
                    hash: &'a str,
                ) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        let found: Option<i32> = sqlx::query_scalar(&sql(
                            "SELECT 1 FROM forks WHERE block_hash = $1 \
                             UNION ALL SELECT 1 FROM pending_settlements WHERE spent_key = $2 \
                             UNION ALL SELECT 1 FROM payments \
                               WHERE spent_key = $2 AND mechanism = 'signed_block' \
                             LIMIT 1",
                            $sqlite,
                        ))
                        .bind(hash)
                        .bind(spent_key)
                        .fetch_optional(&self.readers)
                        .await?;
                        Ok(found.is_some())
                    })
                }

                fn prune_payments(&self, now: i64, keep: Retention) -> StoreFuture<'_, u64> {
                    Box::pin(async move {
                        let a = sqlx::query(&sql(
                            "DELETE FROM payments WHERE (state = 'served' AND updated_at <= $1) \
                               OR (state IN ('owed', 'refunded') AND updated_at <= $2)",
                            $sqlite,
                        ))
                        .bind(now.saturating_sub(keep.served_secs))
                        .bind(now.saturating_sub(keep.owed_secs))
                        .execute(&self.pool)
                        .await?;
                        // A refund outlives nothing but its payment.
                        sqlx::query(
                            "DELETE FROM refunds WHERE spent_key NOT IN \
                               (SELECT spent_key FROM payments)",
                        )
                        .execute(&self.pool)
                        .await?;
                        let b = sqlx::query(&sql(
                            "DELETE FROM pending_settlements WHERE track_until <= $1",
                            $sqlite,
                        ))
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                        Ok(a.rows_affected() + b.rows_affected())
                    })
                }

                fn fold_legacy_strays<'a>(&'a self, network: &'a str) -> StoreFuture<'a, u64> {
                    Box::pin(async move {
                        let exists: Option<i32> = sqlx::query_scalar(if $sqlite {
                            "SELECT 1 FROM sqlite_master WHERE type = 'table' \
                             AND name = 'legacy_stray_payments'"
                        } else {
                            "SELECT 1 FROM information_schema.tables \
                             WHERE table_schema = current_schema() \
                             AND table_name = 'legacy_stray_payments'"
                        })
                        .fetch_optional(&self.readers)
                        .await?;
                        if exists.is_none() {
                            return Ok(0);
                        }
                        let mut tx = self.pool.begin().await?;
                        let done = sqlx::query(&sql(
                            "INSERT INTO payments (spent_key, receipt, mechanism, payer, pay_to, \
                               amount, resource, nonce, state, reason, settled_at, updated_at) \
                             SELECT $1 || ':' || hash, NULL, 'tagged', payer, pay_to, amount, '', \
                               session_id, 'owed', reason, seen_at, seen_at \
                             FROM legacy_stray_payments WHERE true ON CONFLICT (spent_key) DO NOTHING",
                            $sqlite,
                        ))
                        .bind(network)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query("DROP TABLE legacy_stray_payments")
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        Ok(done.rows_affected())
                    })
                }
            }
        };
    };
}
pub(crate) use impl_payment_store;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limbs_add_up_to_the_raw_sum() {
        assert_eq!(from_limbs(1, 0, 0), 1);
        let raw: u128 = 123_456_789_012_345_678_901_234_567_890_123;
        let s = raw.to_string();
        let n = s.len();
        let lo: i64 = s[n - 12..].parse().unwrap();
        let mid: i64 = s[n - 24..n - 12].parse().unwrap();
        let hi: i64 = s[..n - 24].parse().unwrap();
        assert_eq!(from_limbs(lo, mid, hi), raw);
    }
}
