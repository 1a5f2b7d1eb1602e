//! SQLite backend: the default. One file, WAL journal, `synchronous=FULL` so a commit that
//! returned survives power loss.
//!
//! SQLite has one writer at a time, and the store writes through one connection at a time, so
//! writes queue in the process, never in SQLite's busy handler (which sleeps and retries).
//! The writes on a paid request's path ([`super::hot`]) go to a writer thread with a
//! connection of its own ([`writer`]) that commits every write waiting at that moment in one
//! transaction (one fsync per group) and runs the statements synchronously; every other write
//! goes through `pool`, a sqlx pool of one connection, which the writer thread holds while it
//! runs groups, so the two take turns. Reads go to their own pool (`readers`); in WAL they
//! never wait for the writer. The reads of a paid request's latency path (the presentation's
//! nonce binding, payment row and fork-set entry) skip sqlx's per-connection threads: they run
//! inline on read-only `rusqlite` connections ([`reader`]). The busy timeout stays for another
//! process holding the file (a second sidecar on the same file, `sqlite3`).

mod reader;
mod writer;

/// A database file of its own for a test, removed with its WAL and shared-memory files on drop.
#[cfg(test)]
pub(crate) mod temp_db {
    use std::path::PathBuf;

    pub(crate) struct TempDb(pub(crate) PathBuf);

    impl TempDb {
        pub(crate) fn new(name: &str) -> Self {
            let tag = nanogate_protocol::hex::encode_lower(&rand::random::<[u8; 6]>());
            let file = format!("nanogate_sqlite_{name}_{}_{tag}.db", std::process::id());
            TempDb(std::env::temp_dir().join(file))
        }

        pub(crate) fn url(&self) -> String {
            format!("sqlite://{}", self.0.display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }
}

use super::hot::{Claim, HotDone, HotWrite, NonceBind, BOUND_NONCE};
use super::payments::PaymentRecord;
use super::tagged::sql;
use super::{migrator, ForkEntry, NonceBinding, Store, StoreError, StoreFuture, FORK_ENTRY};
use reader::Readers;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;
use writer::{Opener, Writer};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "tagged",
        include_str!("../../migrations/sqlite/0002_tagged.sql"),
    ),
    (
        3,
        "payments",
        include_str!("../../migrations/sqlite/0003_payments.sql"),
    ),
    (
        4,
        "reconcile",
        include_str!("../../migrations/sqlite/0004_reconcile.sql"),
    ),
    (
        5,
        "admission_token",
        include_str!("../../migrations/sqlite/0005_admission_token.sql"),
    ),
    (
        7,
        "passes",
        include_str!("../../migrations/sqlite/0007_passes.sql"),
    ),
    (
        8,
        "refunds",
        include_str!("../../migrations/sqlite/0008_refunds.sql"),
    ),
    (
        9,
        "pass_usage",
        include_str!("../../migrations/sqlite/0009_pass_usage.sql"),
    ),
];

pub struct SqliteStore {
    /// The one writer connection.
    pool: SqlitePool,
    readers: SqlitePool,
    /// The paid path's reads, inline ([`reader`]); `None` for an in-memory database (read
    /// through `readers`, the writer's pool).
    inline: Option<Readers>,
    /// The writer thread, for the hot writes ([`writer`]).
    writer: Writer,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and applies the embedded migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            // No ping per acquire (sqlx still pings on release): a local file's connection
            // does not go stale, and the writer thread takes it for every burst of groups.
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        migrator(MIGRATIONS).run(&pool).await?;
        // An in-memory database is private to its connection: it has no separate readers.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let filename = opts.get_filename().to_owned();
        let readers = if in_memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                // As for the writer: a local file's connection does not go stale.
                .test_before_acquire(false)
                .connect_with(opts.read_only(true))
                .await?
        };
        let opener = Opener::new(&pool, filename, in_memory).await?;
        let inline = if in_memory {
            None
        } else {
            Some(Readers::new(&opener, max_connections as usize)?)
        };
        let writer = Writer::start(opener, pool.clone())?;
        Ok(SqliteStore {
            pool,
            readers,
            inline,
            writer,
        })
    }

    /// [`super::PaymentStore::spent`] on the inline readers (`None`: no inline readers).
    fn spent_inline(&self, spent_key: &str) -> Option<Result<Option<PaymentRecord>, StoreError>> {
        self.inline.as_ref().map(|r| r.spent(spent_key))
    }

    /// Runs one hot write on the writer thread; answers once its group is committed.
    pub(crate) async fn hot(&self, op: HotWrite) -> Result<HotDone, StoreError> {
        self.writer.write(op).await
    }
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn bind_nonce<'a>(
        &'a self,
        nonce: &'a str,
        payment_key: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, NonceBinding> {
        Box::pin(async move {
            let done = sqlx::query(
                "INSERT INTO sessions (nonce, payment_key, expires_at) VALUES (?, ?, ?) \
                 ON CONFLICT (nonce) DO NOTHING",
            )
            .bind(nonce)
            .bind(payment_key)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(NonceBinding::Fresh);
            }
            let bound = self.nonce_binding(nonce).await?;
            Ok(match bound {
                Some(k) if k == payment_key => NonceBinding::Same,
                _ => NonceBinding::Other,
            })
        })
    }

    fn nonce_binding<'a>(&'a self, nonce: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            if let Some(r) = &self.inline {
                return r.nonce_binding(nonce);
            }
            Ok(sqlx::query_scalar(&sql(BOUND_NONCE, true))
                .bind(nonce)
                .fetch_optional(&self.readers)
                .await?)
        })
    }

    fn fork_entry<'a>(
        &'a self,
        frontier_key: &'a str,
        now: i64,
    ) -> StoreFuture<'a, Option<ForkEntry>> {
        Box::pin(async move {
            if let Some(r) = &self.inline {
                return r.fork_entry(frontier_key, now);
            }
            let row = sqlx::query(&sql(FORK_ENTRY, true))
                .bind(frontier_key)
                .bind(now)
                .fetch_optional(&self.readers)
                .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(ForkEntry {
                frontier_key: row.try_get("frontier_key")?,
                block_hash: row.try_get("block_hash")?,
                nonce: row.try_get("nonce")?,
                owner: row.try_get("owner")?,
                lease_until: row.try_get("lease_until")?,
                expires_at: row.try_get("expires_at")?,
                terms: row.try_get("terms")?,
            }))
        })
    }

    fn fork_claim<'a>(&'a self, e: &'a ForkEntry, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let sql = super::tagged::sql(super::hot::CLAIM_FORK, true);
            let done = super::hot::bind_fork_claim(sqlx::query(&sql), e, now)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn claim<'a>(
        &'a self,
        nonce: Option<&'a NonceBind>,
        entry: &'a ForkEntry,
        now: i64,
    ) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let op = HotWrite::Claim {
                nonce: nonce.cloned(),
                entry: entry.clone(),
                now,
            };
            match self.hot(op).await? {
                HotDone::Claim(c) => Ok(c),
                HotDone::Applied(_) => Err(StoreError::Query("a claim answered as a write".into())),
            }
        })
    }

    fn fork_release<'a>(
        &'a self,
        frontier_key: &'a str,
        owner: &'a str,
        now: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE forks SET lease_until = ? WHERE frontier_key = ? AND owner = ? \
                 AND lease_until > ?",
            )
            .bind(now)
            .bind(frontier_key)
            .bind(owner)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn prune(&self, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let a = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
                .bind(now)
                .execute(&self.pool)
                .await?;
            let b = sqlx::query("DELETE FROM forks WHERE expires_at <= ?")
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(a.rows_affected() + b.rows_affected())
        })
    }
}

super::tagged::impl_tagged_store!(SqliteStore, sqlx::sqlite::SqliteRow, true);
super::payments::impl_payment_store!(
    SqliteStore,
    sqlx::sqlite::SqliteRow,
    true,
    SqliteStore::spent_inline
);
super::cursor::impl_cursor_store!(SqliteStore, true);
super::revenue::impl_revenue_store!(SqliteStore, true);
super::refunds::impl_refund_store!(SqliteStore, sqlx::sqlite::SqliteRow, true);
super::passes::impl_pass_store!(SqliteStore, sqlx::sqlite::SqliteRow, true);
