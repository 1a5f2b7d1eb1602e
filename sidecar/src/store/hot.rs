//! The writes on a paid request's path, as values: the claim before the broadcast (nonce
//! binding and fork-set claim, one transaction), the consumption after the confirmation and
//! the outcome report. One SQL text serves both backends (the constants below); how they are
//! committed is the backend's business:
//!
//! - SQLite has one writer. A single writer thread (`super::sqlite::writer`) takes every hot
//!   write that is waiting, runs them in one `BEGIN IMMEDIATE` transaction and commits them
//!   together: one fsync for the whole group (group commit), statements run synchronously on
//!   its own connection, and it takes turns with the other writes in the process, so no
//!   busy-handler sleeps.
//! - PostgreSQL runs each as one autocommitted statement on the pool ([`super::postgres`]):
//!   the claim is the function `nanogate_claim` (migration 0010: these statements, in this
//!   order, inside the function), so each hot write is one round trip on one connection;
//!   concurrent commits already share WAL flushes.
//!
//! Either way each write is atomic on its own and its caller hears the result only after the
//! commit that made it durable. A write that decides "no" leaves nothing behind (a refused
//! claim deletes the nonce binding it made a statement earlier), so SQLite's group needs no
//! savepoints: each write is one to three statements on the writer connection, and a statement
//! that fails fails its whole group (rolled back, every write in it told so).

use super::payments::{Consumption, RedeemPolicy, NOT_SERVED};
use super::tagged::sql;
use super::ForkEntry;

// The hot writes' SQL, with PostgreSQL's `$n` placeholders (SQLite reads `?n`: [`sql`]).

/// Binds a nonce at first use: `$1` nonce, `$2` payment key, `$3` expiry.
pub(crate) const BIND_NONCE: &str = "INSERT INTO sessions (nonce, payment_key, expires_at) \
     VALUES ($1, $2, $3) ON CONFLICT (nonce) DO NOTHING";
/// The payment a nonce is bound to: `$1` nonce.
pub(crate) const BOUND_NONCE: &str = "SELECT payment_key FROM sessions WHERE nonce = $1";
/// Undoes a refused claim's own binding: `$1` nonce.
pub(crate) const UNBIND_NONCE: &str = "DELETE FROM sessions WHERE nonce = $1";
/// Records a consumption: `$1`–`$10` as [`bind_consumption`] binds them, `$11` the mechanism,
/// `$12` the admission token.
pub(crate) const CONSUME: &str = "INSERT INTO payments (spent_key, receipt, mechanism, payer, \
       pay_to, amount, resource, nonce, state, settled_at, updated_at, lease_until, \
       admission_token) \
     VALUES ($1, $2, $11, $3, $4, $5, $6, $7, $8, $9, $9, $10, $12) \
     ON CONFLICT (spent_key) DO NOTHING";

/// Binds a [`Consumption`]'s ledger fields as `$1`–`$10` (spent key, receipt, payer, payee,
/// amount, resource, nonce, state, now, lease end), the order every statement that writes one
/// into `payments` takes them ([`CONSUME`] and the tagged mechanism's, [`super::tagged`]);
/// each statement binds what else it needs after them.
pub(crate) fn bind_consumption<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    c: &'q Consumption,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(&c.spent_key)
        .bind(&c.receipt)
        .bind(&c.payer)
        .bind(&c.pay_to)
        .bind(c.amount.to_string())
        .bind(&c.resource)
        .bind(&c.nonce)
        .bind(c.state.as_str())
        .bind(c.now)
        .bind(c.lease_until)
}

/// The fork-set claim: `$1`–`$6` the entry (frontier, block, nonce, owner, lease, expiry),
/// `$7` now, `$8` the terms. The SQLite writer's claim and both backends' `Store::fork_claim`
/// run this text; PostgreSQL's claim runs the same statement inside `nanogate_claim`
/// (migration 0010). `IS NOT DISTINCT FROM` is SQLite's `IS` (an alternative spelling since
/// 3.39; sqlx and rusqlite link the bundled 3.46).
pub(crate) const CLAIM_FORK: &str = "INSERT INTO forks (frontier_key, block_hash, nonce, owner, \
       lease_until, expires_at, terms) \
     VALUES ($1, $2, $3, $4, $5, $6, $8) \
     ON CONFLICT (frontier_key) DO UPDATE SET \
       block_hash = excluded.block_hash, nonce = excluded.nonce, \
       owner = excluded.owner, lease_until = excluded.lease_until, \
       expires_at = excluded.expires_at, terms = excluded.terms \
     WHERE forks.expires_at <= $7 \
        OR (forks.block_hash = excluded.block_hash \
            AND forks.nonce IS NOT DISTINCT FROM excluded.nonce \
            AND (forks.terms IS NULL OR forks.terms = excluded.terms) \
            AND forks.lease_until <= $7)";

/// Binds [`CLAIM_FORK`]'s parameters for `e` at `now` (both backends' `Store::fork_claim`).
pub(crate) fn bind_fork_claim<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    e: &'q super::ForkEntry,
    now: i64,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(&e.frontier_key)
        .bind(&e.block_hash)
        .bind(&e.nonce)
        .bind(&e.owner)
        .bind(e.lease_until)
        .bind(e.expires_at)
        .bind(now)
        .bind(&e.terms)
}

/// The outcome report. Failed (status ≥ 500): `$1` max redemptions, `$2` now, `$3` receipt,
/// `$4` token hash; served: `$1` now, `$2` receipt, `$3` token hash. The token is checked
/// only when the admission had one (`token`).
pub(crate) fn outcome_sql(failed: bool, token: bool, sqlite: bool) -> String {
    let q = match (failed, token) {
        (true, true) => format!(
            "UPDATE payments SET {NOT_SERVED}, updated_at = $2 \
             WHERE receipt = $3 AND state = 'admitted' AND admission_token = $4"
        ),
        (true, false) => format!(
            "UPDATE payments SET {NOT_SERVED}, updated_at = $2 \
             WHERE receipt = $3 AND state = 'admitted'"
        ),
        (false, true) => "UPDATE payments SET state = 'served', updated_at = $1 \
             WHERE receipt = $2 AND state = 'admitted' AND admission_token = $3"
            .to_owned(),
        (false, false) => "UPDATE payments SET state = 'served', updated_at = $1 \
             WHERE receipt = $2 AND state = 'admitted'"
            .to_owned(),
    };
    sql(&q, sqlite).into_owned()
}

/// A nonce binding to make in the same transaction as a fork-set claim.
#[derive(Debug, Clone)]
pub struct NonceBind {
    pub nonce: String,
    /// The payment (`network:HASH`) the nonce is bound to.
    pub payment_key: String,
    pub expires_at: i64,
}

/// What [`super::Store::claim`] decided. Anything but `Claimed` leaves no trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The nonce (if any) is bound to this payment and we own the frontier.
    Claimed,
    /// The nonce is bound to another payment.
    NonceTaken,
    /// The frontier is claimed by another block or attempt (see [`super::Store::fork_claim`]).
    FrontierTaken,
}

/// One hot write.
#[derive(Debug, Clone)]
pub(crate) enum HotWrite {
    Claim {
        nonce: Option<NonceBind>,
        entry: ForkEntry,
        now: i64,
    },
    Consume(Consumption),
    /// `admitted → served` (status < 500) or `→ redeemable`/`owed` (status ≥ 500, and the
    /// filter never receiving its admission: `release`).
    Outcome {
        receipt: String,
        status: i64,
        now: i64,
        policy: RedeemPolicy,
        token_hash: Option<String>,
    },
}

/// A hot write's result (a refused claim has already undone its own rows, so SQLite's group
/// just goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HotDone {
    Claim(Claim),
    /// Rows affected == 1.
    Applied(bool),
}

impl HotDone {
    pub(crate) fn applied(self) -> bool {
        matches!(self, HotDone::Applied(true))
    }
}
