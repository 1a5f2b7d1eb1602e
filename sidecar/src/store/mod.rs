//! Durable state behind one trait: the session registry (challenge nonces), the spent set
//! (consumed block hashes keyed `network:HASH`), the fork set (in-flight payer frontiers) and
//! receipts (outcome and redemption count per admitted payment).
//!
//! Every state change that decides admission is a single atomic statement or transaction
//! (`INSERT … ON CONFLICT DO NOTHING` / conditional `UPDATE`, then rows affected), never a
//! read followed by a write, so replicas sharing PostgreSQL agree (invariant 8).
//!
//! Two backends: [`sqlite::SqliteStore`] (the default: one file, WAL, `synchronous=FULL`) and
//! [`postgres::PgStore`] (for several replicas). Their schemas are embedded in the binary and
//! applied at start.

pub mod cursor;
pub mod postgres;
pub mod sqlite;
pub mod tagged;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use thiserror::Error;

/// A boxed future so the trait stays object-safe (`Arc<dyn Store>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store query failed: {0}")]
    Query(String),
    #[error("store migration failed: {0}")]
    Migrate(String),
    #[error("store configuration: {0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Query(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e.to_string())
    }
}

/// The result of binding a challenge nonce to a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceBinding {
    /// First use: the nonce is now bound to this payment.
    Fresh,
    /// The nonce was already bound to this very payment (a re-presentation).
    Same,
    /// The nonce is bound to another payment.
    Other,
}

/// A fork-set entry: the one attempt in flight (or recently tried) on a payer's frontier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEntry {
    pub frontier_key: String,
    pub block_hash: String,
    pub nonce: Option<String>,
    pub owner: String,
    /// Until when the owner is actively settling; afterwards the same block (same challenge)
    /// may be taken over by a re-presentation.
    pub lease_until: i64,
    /// Until when the entry blocks other blocks on the same frontier.
    pub expires_at: i64,
}

/// A consumed payment and its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpentRecord {
    pub spent_key: String,
    pub receipt: String,
    pub payer: String,
    pub amount: String,
    pub consumed_at: i64,
    pub nonce: Option<String>,
    /// The upstream's status as reported by the filter (`0` = timeout); `None` = not reported.
    pub outcome: Option<i64>,
    pub redemptions: i64,
    pub admitted_at: i64,
    pub valid_before: i64,
}

/// What [`Store::consume`] records.
#[derive(Debug, Clone)]
pub struct Consumption {
    pub spent_key: String,
    pub receipt: String,
    pub payer: String,
    pub amount: u128,
    pub nonce: Option<String>,
    pub now: i64,
    pub valid_before: i64,
    /// The outcome recorded at once: `Some(200)` makes the settlement final (facilitator
    /// settlements, which have no outcome report); `None` waits for the filter's report.
    pub outcome: Option<i64>,
}

/// When a receipt may be redeemed again (invariant 5).
#[derive(Debug, Clone, Copy)]
pub struct RedeemPolicy {
    /// How many re-redemptions after failed upstream calls a payment allows.
    pub max_redemptions: i64,
    /// After this many seconds without an outcome report, the upstream call counts as failed.
    pub outcome_grace_secs: i64,
}

/// Every backend also implements the tagged-amount operations ([`tagged::TaggedStore`]).
pub trait Store: tagged::TaggedStore + cursor::CursorStore + Send + Sync + 'static {
    /// Which backend ("sqlite" or "postgres"), for metrics and logs.
    fn kind(&self) -> &'static str;

    /// The store answers a trivial query.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Binds `nonce` to `payment_key` at first use (atomic insert-if-absent).
    fn bind_nonce<'a>(
        &'a self,
        nonce: &'a str,
        payment_key: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, NonceBinding>;

    /// The payment a nonce is bound to, if any (read-only, for `/verify`).
    fn nonce_binding<'a>(&'a self, nonce: &'a str) -> StoreFuture<'a, Option<String>>;

    /// The consumption record of `spent_key`, if it was consumed.
    fn spent<'a>(&'a self, spent_key: &'a str) -> StoreFuture<'a, Option<SpentRecord>>;

    /// The fork-set entry for a frontier, if one has not expired at `now`.
    fn fork_entry<'a>(
        &'a self,
        frontier_key: &'a str,
        now: i64,
    ) -> StoreFuture<'a, Option<ForkEntry>>;

    /// Claims a frontier for `entry.block_hash` (atomic): succeeds when no entry exists, the
    /// existing one expired, or it is for the same block and the same nonce and its lease
    /// ended (a re-presentation taking over a finished attempt). `true` = we own it now.
    fn fork_claim<'a>(&'a self, entry: &'a ForkEntry, now: i64) -> StoreFuture<'a, bool>;

    /// Ends `owner`'s lease on a frontier but keeps the entry until it expires, so no other
    /// block can be paid on that frontier while ours might still confirm.
    fn fork_release<'a>(
        &'a self,
        frontier_key: &'a str,
        owner: &'a str,
        now: i64,
    ) -> StoreFuture<'a, ()>;

    /// Records a consumption and its receipt in one transaction, insert-if-absent on the
    /// spent key. `false` = the payment was already consumed (by any replica).
    fn consume<'a>(&'a self, c: &'a Consumption) -> StoreFuture<'a, bool>;

    /// Redeems a receipt again if the policy allows it (atomic conditional update).
    fn redeem<'a>(
        &'a self,
        receipt: &'a str,
        policy: RedeemPolicy,
        now: i64,
    ) -> StoreFuture<'a, bool>;

    /// Records the upstream's status for a receipt that has none yet. `false` = unknown
    /// receipt or already reported.
    fn record_outcome<'a>(&'a self, receipt: &'a str, status: i64) -> StoreFuture<'a, bool>;

    /// Deletes expired sessions and fork-set entries (never spent entries or receipts).
    fn prune(&self, now: i64) -> StoreFuture<'_, u64>;
}

/// Opens the store named by `database_url` (`sqlite:` or `postgres:`), creating the schema.
/// `pg_schema` isolates a PostgreSQL deployment (or a test run) in its own schema.
pub async fn open(
    database_url: &str,
    pg_schema: Option<&str>,
    max_connections: u32,
) -> Result<Arc<dyn Store>, StoreError> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(database_url, max_connections).await?,
        ))
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(Arc::new(
            postgres::PgStore::open(database_url, pg_schema, max_connections).await?,
        ))
    } else {
        Err(StoreError::Config(
            "database_url must start with sqlite: or postgres:".into(),
        ))
    }
}

/// The embedded migrations for one backend, as an sqlx [`sqlx::migrate::Migrator`].
pub(crate) fn migrator(
    sql: &'static [(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;
    let migrations: Vec<Migration> = sql
        .iter()
        .map(|(v, d, s)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                Cow::Borrowed(*s),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}
