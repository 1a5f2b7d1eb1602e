//! Durable state behind one trait: the session registry (challenge nonces), the fork set
//! (in-flight payer frontiers), the payment ledger ([`payments`]: one row and one state per
//! payment, keyed `network:HASH`, which is also the spent set) and the tagged sessions.
//!
//! Every state change that decides admission is a single atomic statement or transaction
//! (`INSERT … ON CONFLICT DO NOTHING` / conditional `UPDATE`, then rows affected), never a
//! read followed by a write, so replicas sharing PostgreSQL agree (invariant 8).
//!
//! Two backends: [`sqlite::SqliteStore`] (the default: one file, WAL, `synchronous=FULL`, one
//! writer connection, readers on their own connections) and [`postgres::PgStore`] (for several
//! replicas). The writes on a paid request's path are values ([`hot`]) so that SQLite can
//! commit many of them with one fsync. Their schemas are embedded in the binary and
//! applied at start.

pub mod cursor;
pub mod hot;
pub mod passes;
pub mod payments;
pub mod postgres;
pub mod refunds;
pub mod revenue;
pub mod sqlite;
pub mod tagged;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use thiserror::Error;

pub use hot::{Claim, NonceBind};
pub use payments::{
    Consumption, OwedPayment, PaymentQuery, PaymentRecord, PaymentState, PaymentStore,
    PendingSettlement, RedeemPolicy, Retention, StateTotal,
};

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
    /// The terms the claim was made for (`amount|payTo|resource`): a takeover must match them.
    pub terms: Option<String>,
}

/// The fork-set entry of a frontier unless it expired ([`Store::fork_entry`]): `$1` the
/// frontier key, `$2` now.
pub(crate) const FORK_ENTRY: &str = "SELECT frontier_key, block_hash, nonce, owner, lease_until, \
     expires_at, terms FROM forks WHERE frontier_key = $1 AND expires_at > $2";

/// What the store holds about one presented signed block, read before anything is written: the
/// payment its challenge nonce is bound to, the block's payment-ledger row and the fork-set
/// entry on its frontier (see [`Store::presentation`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presentation {
    /// [`Store::nonce_binding`] of the nonce (`None` when there is no nonce).
    pub nonce_binding: Option<String>,
    /// [`PaymentStore::spent`] of the spent key.
    pub payment: Option<PaymentRecord>,
    /// [`Store::fork_entry`] of the frontier.
    pub fork: Option<ForkEntry>,
}

/// One outcome of a batch for [`Store::record_outcomes`]: what
/// [`PaymentStore::record_outcome_with_token`] takes for one receipt, with its own admission's
/// token hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOutcome {
    pub receipt: String,
    pub status: i64,
    pub token_hash: String,
}

/// How many outcomes of one batch [`Store::record_outcomes`] records at once by default:
/// outcomes are off the latency path, and a whole batch at once would queue up to 64 writes
/// ahead of SQLite's one writer, in front of the claims and consumptions of the payments in
/// flight.
pub const OUTCOME_BATCH_CONCURRENCY: usize = 2;

/// Every backend also implements the payment ledger ([`payments::PaymentStore`]), the
/// tagged-amount operations ([`tagged::TaggedStore`]), the reconciliation cursors
/// ([`cursor::CursorStore`]), the revenue sums ([`revenue::RevenueStore`]), the refunds of
/// owed payments ([`refunds::RefundStore`]) and the prepaid passes ([`passes::PassStore`]).
pub trait Store:
    PaymentStore
    + tagged::TaggedStore
    + cursor::CursorStore
    + revenue::RevenueStore
    + refunds::RefundStore
    + passes::PassStore
    + Send
    + Sync
    + 'static
{
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

    /// The fork-set entry for a frontier, if one has not expired at `now`.
    fn fork_entry<'a>(
        &'a self,
        frontier_key: &'a str,
        now: i64,
    ) -> StoreFuture<'a, Option<ForkEntry>>;

    /// The three reads of a presented signed block at once: [`Store::nonce_binding`] (when
    /// `nonce` is given), [`PaymentStore::spent`] and [`Store::fork_entry`]. By default three
    /// concurrent reads; PostgreSQL answers them with one statement, so a payment holds one
    /// pooled connection for one round trip instead of three.
    fn presentation<'a>(
        &'a self,
        nonce: Option<&'a str>,
        spent_key: &'a str,
        frontier_key: &'a str,
        now: i64,
    ) -> StoreFuture<'a, Presentation> {
        Box::pin(async move {
            let bound = async {
                match nonce {
                    Some(n) => self.nonce_binding(n).await,
                    None => Ok(None),
                }
            };
            let (nonce_binding, payment, fork) = tokio::try_join!(
                bound,
                self.spent(spent_key),
                self.fork_entry(frontier_key, now)
            )?;
            Ok(Presentation {
                nonce_binding,
                payment,
                fork,
            })
        })
    }

    /// [`PaymentStore::record_outcome_with_token`] for each outcome of a batch, each checked
    /// against its own token hash (a stale one refuses that outcome only): whether each was
    /// recorded, in order. By default one by one, [`OUTCOME_BATCH_CONCURRENCY`] at a time;
    /// PostgreSQL records the batch with one statement, holding one pooled connection.
    fn record_outcomes<'a>(
        &'a self,
        outcomes: &'a [TokenOutcome],
        now: i64,
        policy: RedeemPolicy,
    ) -> StoreFuture<'a, Vec<bool>> {
        use futures_util::StreamExt;
        Box::pin(async move {
            let recording: Vec<StoreFuture<'a, bool>> = outcomes
                .iter()
                .map(|o| {
                    self.record_outcome_with_token(
                        &o.receipt,
                        o.status,
                        now,
                        policy,
                        Some(&o.token_hash),
                    )
                })
                .collect();
            futures_util::stream::iter(recording)
                .buffered(OUTCOME_BATCH_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        })
    }

    /// Claims a frontier for `entry.block_hash` (atomic): succeeds when no entry exists, the
    /// existing one expired, or it is for the same block, the same nonce and the same terms and
    /// its lease ended (a re-presentation taking over a finished attempt). `true` = we own it.
    fn fork_claim<'a>(&'a self, entry: &'a ForkEntry, now: i64) -> StoreFuture<'a, bool>;

    /// The claim before a broadcast, in one transaction: binds `nonce` (if any) to its payment
    /// as [`Store::bind_nonce`] does, then claims the frontier as [`Store::fork_claim`] does.
    /// Either both happen or neither: a nonce taken by another payment or a frontier claimed
    /// by another attempt leaves no row behind.
    fn claim<'a>(
        &'a self,
        nonce: Option<&'a NonceBind>,
        entry: &'a ForkEntry,
        now: i64,
    ) -> StoreFuture<'a, Claim>;

    /// Ends `owner`'s lease on a frontier but keeps the entry until it expires, so no other
    /// block can be paid on that frontier while ours might still confirm.
    fn fork_release<'a>(
        &'a self,
        frontier_key: &'a str,
        owner: &'a str,
        now: i64,
    ) -> StoreFuture<'a, ()>;

    /// Deletes expired sessions and fork-set entries (the payment ledger has its own retention).
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
