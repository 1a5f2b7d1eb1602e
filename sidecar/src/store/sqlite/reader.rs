//! SQLite's inline readers: the store reads of a paid request's latency path, run on the
//! calling thread with `rusqlite` connections of their own.
//!
//! sqlx runs every SQLite connection on a worker thread of its own, so each read through its
//! pool is two thread hand-offs (task → channel → connection thread → wake the task), plus as
//! many for the ping the pool makes before lending a connection (`test_before_acquire`), and a
//! payment's presentation (nonce binding, payment row, fork-set entry) is three reads. On two
//! busy cores those wake-ups cost more than the reads: a profile of the sidecar at 8 payers
//! spent half its time in the kernel switching threads, and sqlx's reader threads took 18 % of
//! its CPU; reading inline halved the sidecar's context switches per paid request (30 → 15)
//! and cut its CPU per paid request by about 14 % (`--only paid`, 8 payers, loaded machine). The reads here are primary-key point lookups (a few µs: a B-tree descent
//! through the connection's page cache); they run synchronously on the Tokio worker that asks,
//! with no hand-off at all. That is acceptable on the sidecar's multi-threaded runtime for
//! reads this short (not worth `block_in_place`, which hands the worker's queue to another
//! thread: the very wake-up this avoids). In WAL a reader never waits for the writer; it can
//! meet the busy timeout only when another process holds the file exclusively (a checkpoint
//! in `EXCLUSIVE` locking mode, a recovery after a crash), where the sqlx reader would have
//! waited just as long.
//!
//! The connections are read-only, with the pragmas of the store's sqlx writer connection (the
//! writer thread's [`Opener`], opened read-only), so the same busy timeout and cache sizes as
//! the sqlx readers. A connection is taken from a small idle list for one call and put back:
//! at most one per thread reading at a time, so the list holds about as many as the runtime
//! has workers; one opened beyond `keep` (more threads than that reading at once) is closed
//! after its call. The SQL is the store's own (the same constants the sqlx path runs); only
//! the rows are decoded here, from `rusqlite` rows. An in-memory store has none of these: its
//! database lives in the writer's shared cache, where a reader would meet table locks rather
//! than WAL snapshots, so it keeps reading through sqlx.

use super::writer::Opener;
use crate::store::hot::BOUND_NONCE;
use crate::store::payments::{PaymentRecord, PaymentState, SPENT};
use crate::store::tagged::sql;
use crate::store::{ForkEntry, StoreError, FORK_ENTRY};
use rusqlite::{Connection, OptionalExtension, Row};
use std::sync::{Mutex, PoisonError};

/// The read statements' SQLite texts, built once.
struct Texts {
    nonce_binding: String,
    fork_entry: String,
    spent: String,
}

/// Read-only connections used inline (see the module comment).
pub(super) struct Readers {
    opener: Opener,
    idle: Mutex<Vec<Connection>>,
    /// At most this many idle connections are kept.
    keep: usize,
    texts: Texts,
}

impl Readers {
    /// Readers of the database `writer` opens; opens one connection at once, so that a
    /// database the readers cannot open fails the store's start, as the sqlx pool did.
    pub(super) fn new(writer: &Opener, keep: usize) -> Result<Self, StoreError> {
        let opener = writer.read_only();
        let first = opener.open().map_err(unavailable)?;
        Ok(Readers {
            opener,
            idle: Mutex::new(vec![first]),
            keep: keep.max(1),
            texts: Texts {
                nonce_binding: sql(BOUND_NONCE, true).into_owned(),
                fork_entry: sql(FORK_ENTRY, true).into_owned(),
                spent: sql(SPENT, true).into_owned(),
            },
        })
    }

    /// Runs `read` on an idle connection (or a new one), then puts the connection back.
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection, &Texts) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => self.opener.open().map_err(unavailable)?,
        };
        let result = read(&conn, &self.texts);
        // Never keep a connection left inside a transaction (a read is one autocommit
        // statement, so this does not happen; checked so a snapshot is never held).
        if conn.is_autocommit() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < self.keep {
                idle.push(conn);
            }
        }
        result.map_err(query)
    }

    /// [`crate::store::Store::nonce_binding`].
    pub(super) fn nonce_binding(&self, nonce: &str) -> Result<Option<String>, StoreError> {
        self.with(|c, t| {
            c.prepare_cached(&t.nonce_binding)?
                .query_row([nonce], |r| r.get(0))
                .optional()
        })
    }

    /// [`crate::store::Store::fork_entry`].
    pub(super) fn fork_entry(
        &self,
        frontier_key: &str,
        now: i64,
    ) -> Result<Option<ForkEntry>, StoreError> {
        self.with(|c, t| {
            c.prepare_cached(&t.fork_entry)?
                .query_row(rusqlite::params![frontier_key, now], fork_entry)
                .optional()
        })
    }

    /// [`crate::store::PaymentStore::spent`].
    pub(super) fn spent(&self, spent_key: &str) -> Result<Option<PaymentRecord>, StoreError> {
        self.with(|c, t| {
            c.prepare_cached(&t.spent)?
                .query_row([spent_key], payment_record)
                .optional()
        })
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn query(e: rusqlite::Error) -> StoreError {
    StoreError::Query(e.to_string())
}

/// A `forks` row of [`FORK_ENTRY`].
fn fork_entry(row: &Row<'_>) -> rusqlite::Result<ForkEntry> {
    Ok(ForkEntry {
        frontier_key: row.get("frontier_key")?,
        block_hash: row.get("block_hash")?,
        nonce: row.get("nonce")?,
        owner: row.get("owner")?,
        lease_until: row.get("lease_until")?,
        expires_at: row.get("expires_at")?,
        terms: row.get("terms")?,
    })
}

/// A `payments` row of [`SPENT`] (the sqlx path's decoder is `payment_record` of
/// [`crate::store::payments::impl_payment_store`]; a test holds the two equal).
fn payment_record(row: &Row<'_>) -> rusqlite::Result<PaymentRecord> {
    let state: String = row.get("state")?;
    let Some(state) = PaymentState::parse(&state) else {
        let i = row.as_ref().column_index("state")?;
        return Err(rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown payment state {state}").into(),
        ));
    };
    Ok(PaymentRecord {
        spent_key: row.get("spent_key")?,
        receipt: row.get("receipt")?,
        mechanism: row.get("mechanism")?,
        payer: row.get("payer")?,
        pay_to: row.get("pay_to")?,
        amount: row.get("amount")?,
        resource: row.get("resource")?,
        nonce: row.get("nonce")?,
        state,
        reason: row.get("reason")?,
        settled_at: row.get("settled_at")?,
        updated_at: row.get("updated_at")?,
        lease_until: row.get("lease_until")?,
        redemptions: row.get("redemptions")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::hot::NonceBind;
    use crate::store::payments::{Consumption, RedeemPolicy, SIGNED_BLOCK};
    use crate::store::sqlite::temp_db::TempDb;
    use crate::store::sqlite::writer::COPIED_PRAGMAS;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Claim, PaymentStore, Presentation, Store};
    use std::time::{Duration, Instant};

    /// Two stores on one file: the first reads inline, the second through sqlx (as before).
    async fn both(db: &TempDb) -> (SqliteStore, SqliteStore) {
        let inline = SqliteStore::open(&db.url(), 2).await.unwrap();
        assert!(inline.inline.is_some());
        let mut sqlx = SqliteStore::open(&db.url(), 2).await.unwrap();
        sqlx.inline = None;
        (inline, sqlx)
    }

    async fn exec(store: &SqliteStore, q: &str) {
        sqlx::query(q).execute(&store.pool).await.unwrap();
    }

    fn consumption(key: &str, nonce: Option<&str>) -> Consumption {
        Consumption {
            spent_key: key.to_owned(),
            receipt: format!("receipt-{key}"),
            mechanism: SIGNED_BLOCK,
            payer: "nano_payer".into(),
            pay_to: "nano_payee".into(),
            amount: 1_000_000,
            resource: "http://api.test/r".into(),
            nonce: nonce.map(str::to_owned),
            now: 100,
            state: PaymentState::Admitted,
            lease_until: 200,
            admission_token: Some("hash".into()),
        }
    }

    fn entry(frontier: &str, nonce: Option<&str>, terms: Option<&str>) -> ForkEntry {
        ForkEntry {
            frontier_key: frontier.to_owned(),
            block_hash: format!("block-{frontier}"),
            nonce: nonce.map(str::to_owned),
            owner: "owner".into(),
            lease_until: 150,
            expires_at: 1_000,
            terms: terms.map(str::to_owned),
        }
    }

    /// Every column, set and NULL, present and absent rows: the inline answers are the sqlx
    /// path's.
    #[tokio::test]
    async fn inline_reads_answer_what_the_sqlx_readers_answer() {
        let db = TempDb::new("equal");
        let (a, b) = both(&db).await;
        // Payments: every column set; every nullable column NULL (an owed row without a
        // receipt, a nonce or a reason is not allowed, so two rows cover them).
        exec(
            &a,
            "INSERT INTO payments (spent_key, receipt, mechanism, payer, pay_to, amount, \
               resource, nonce, state, reason, settled_at, updated_at, lease_until, redemptions, \
               admission_token) VALUES \
             ('k:full', 'r-full', 'signed_block', 'nano_p', 'nano_q', \
               '340282366920938463463374607431768211455', 'http://x/ü', 'n-full', 'redeemable', \
               'why', -5, 9223372036854775807, 42, 3, 'tok'), \
             ('k:nulls', 'r-nulls', 'tagged', '', '', '0', '', NULL, 'served', NULL, 0, 0, 0, \
               0, NULL), \
             ('k:owed', NULL, 'tagged', 'nano_p', 'nano_q', '1', 'r', NULL, 'owed', 'late', \
               1, 2, 3, 4, NULL)",
        )
        .await;
        exec(
            &a,
            "INSERT INTO forks (frontier_key, block_hash, nonce, owner, lease_until, expires_at, \
               terms) VALUES ('f:full', 'h', 'n', 'o', 10, 500, 't'), \
             ('f:nulls', 'h2', NULL, 'o2', 0, 500, NULL), \
             ('f:expired', 'h3', 'n', 'o', 0, 99, 't')",
        )
        .await;
        exec(
            &a,
            "INSERT INTO sessions (nonce, payment_key, expires_at) VALUES ('n-full', 'k:full', 9)",
        )
        .await;
        for key in ["k:full", "k:nulls", "k:owed", "k:absent", "", "k:FULL"] {
            let (x, y) = (a.spent(key).await.unwrap(), b.spent(key).await.unwrap());
            assert_eq!(x, y, "spent {key}");
            assert_eq!(
                x.is_some(),
                key.starts_with("k:") && !key.contains("absent") && key != "k:FULL"
            );
        }
        for (key, now) in [
            ("f:full", 100),
            ("f:nulls", 100),
            ("f:expired", 100),
            ("f:full", 500),
            ("f:absent", 0),
        ] {
            let (x, y) = (
                a.fork_entry(key, now).await.unwrap(),
                b.fork_entry(key, now).await.unwrap(),
            );
            assert_eq!(x, y, "fork {key} at {now}");
        }
        assert!(a
            .fork_entry("f:nulls", 100)
            .await
            .unwrap()
            .unwrap()
            .terms
            .is_none());
        for nonce in ["n-full", "n-absent", "n-full' OR '1'='1"] {
            let (x, y) = (
                a.nonce_binding(nonce).await.unwrap(),
                b.nonce_binding(nonce).await.unwrap(),
            );
            assert_eq!(x, y, "nonce {nonce}");
        }
        let x = a
            .presentation(Some("n-full"), "k:full", "f:full", 100)
            .await
            .unwrap();
        let y = b
            .presentation(Some("n-full"), "k:full", "f:full", 100)
            .await
            .unwrap();
        assert_eq!(x, y);
        assert!(x.nonce_binding.is_some() && x.payment.is_some() && x.fork.is_some());
        let none = a
            .presentation(None, "k:absent", "f:absent", 100)
            .await
            .unwrap();
        assert_eq!(none, Presentation::default());
        assert_eq!(
            none,
            b.presentation(None, "k:absent", "f:absent", 100)
                .await
                .unwrap()
        );
    }

    /// What the writer thread committed is read at once: no reader keeps an old snapshot
    /// (a cached statement left un-reset would hold one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_sees_what_the_writer_thread_just_committed() {
        let db = TempDb::new("fresh");
        let store = SqliteStore::open(&db.url(), 2).await.unwrap();
        let policy = RedeemPolicy {
            max_redemptions: 1,
            window_secs: 60,
        };
        for i in 0..100 {
            let (key, nonce, frontier) = (format!("k:{i}"), format!("n{i}"), format!("f:{i}"));
            // Read first, so every statement is cached and was stepped before the write.
            let before = store
                .presentation(Some(&nonce), &key, &frontier, 100)
                .await
                .unwrap();
            assert_eq!(before, Presentation::default());
            let bind = NonceBind {
                nonce: nonce.clone(),
                payment_key: key.clone(),
                expires_at: 1_000,
            };
            let e = entry(&frontier, Some(&nonce), Some("t"));
            assert_eq!(
                store.claim(Some(&bind), &e, 100).await.unwrap(),
                Claim::Claimed
            );
            let after = store
                .presentation(Some(&nonce), &key, &frontier, 100)
                .await
                .unwrap();
            assert_eq!(after.nonce_binding.as_deref(), Some(key.as_str()));
            assert_eq!(after.fork, Some(e));
            assert!(after.payment.is_none());
            let c = consumption(&key, Some(&nonce));
            assert!(store.consume(&c).await.unwrap());
            let rec = store.spent(&key).await.unwrap().unwrap();
            assert_eq!(rec.state, PaymentState::Admitted);
            assert!(store
                .record_outcome_with_token(&c.receipt, 200, 101, policy, Some("hash"))
                .await
                .unwrap());
            let rec = store.spent(&key).await.unwrap().unwrap();
            assert_eq!((rec.state, rec.updated_at), (PaymentState::Served, 101));
        }
    }

    /// In WAL a reader never waits for a writer: a read while another connection holds a write
    /// transaction answers at once, from the last commit.
    #[tokio::test]
    async fn a_read_does_not_wait_for_an_open_write_transaction() {
        let db = TempDb::new("nowait");
        let store = SqliteStore::open(&db.url(), 2).await.unwrap();
        exec(
            &store,
            "INSERT INTO sessions (nonce, payment_key, expires_at) VALUES ('old', 'k:old', 9)",
        )
        .await;
        let w = rusqlite::Connection::open(&db.0).unwrap();
        w.execute_batch(
            "BEGIN IMMEDIATE; \
             INSERT INTO sessions (nonce, payment_key, expires_at) VALUES ('new', 'k:new', 9); \
             UPDATE sessions SET payment_key = 'k:changed' WHERE nonce = 'old';",
        )
        .unwrap();
        let t = Instant::now();
        assert_eq!(store.nonce_binding("new").await.unwrap(), None);
        assert_eq!(
            store.nonce_binding("old").await.unwrap().as_deref(),
            Some("k:old")
        );
        assert!(store.spent("k:old").await.unwrap().is_none());
        assert!(store.fork_entry("f", 0).await.unwrap().is_none());
        // The busy timeout is 10 s: anything near it would mean the read waited.
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        w.execute_batch("COMMIT").unwrap();
        assert_eq!(
            store.nonce_binding("new").await.unwrap().as_deref(),
            Some("k:new")
        );
        assert_eq!(
            store.nonce_binding("old").await.unwrap().as_deref(),
            Some("k:changed")
        );
    }

    /// A statement that fails and a row that does not decode are `StoreError::Query` on both
    /// paths, and the reader goes on working after them.
    #[tokio::test]
    async fn errors_are_the_sqlx_paths_errors() {
        let db = TempDb::new("errors");
        let (a, b) = both(&db).await;
        // An INTEGER column holding text: neither path decodes it as i64.
        exec(
            &a,
            "INSERT INTO payments (spent_key, receipt, mechanism, payer, pay_to, amount, \
               resource, state, settled_at, updated_at) VALUES ('k:bad', 'r', 'signed_block', \
               'p', 'q', '1', 'r', 'served', 'not a number', 0)",
        )
        .await;
        for s in [&a, &b] {
            let e = s.spent("k:bad").await.unwrap_err();
            assert!(matches!(e, StoreError::Query(_)), "{e:?}");
        }
        // A text column holding an integer is the same refusal on both (or the same value).
        exec(
            &a,
            "INSERT INTO forks (frontier_key, block_hash, nonce, owner, lease_until, expires_at) \
             VALUES ('f:int', 'h', 'n', 'o', 'soon', 500)",
        )
        .await;
        let (x, y) = (
            a.fork_entry("f:int", 0).await,
            b.fork_entry("f:int", 0).await,
        );
        assert!(matches!(x, Err(StoreError::Query(_))), "{x:?}");
        assert!(matches!(y, Err(StoreError::Query(_))), "{y:?}");
        // A table gone (a statement that cannot be prepared).
        exec(&a, "DROP TABLE sessions").await;
        for s in [&a, &b] {
            let e = s.nonce_binding("n").await.unwrap_err();
            assert!(matches!(e, StoreError::Query(_)), "{e:?}");
        }
        assert!(a.spent("k:absent").await.unwrap().is_none());
        assert!(a.fork_entry("f:absent", 0).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_readers_are_read_only_with_the_sqlx_readers_settings() {
        let db = TempDb::new("pragmas");
        let store = SqliteStore::open(&db.url(), 2).await.unwrap();
        let mut theirs = Vec::new();
        for name in COPIED_PRAGMAS {
            let v: i64 = sqlx::query_scalar(&format!("PRAGMA {name}"))
                .fetch_one(&store.readers)
                .await
                .unwrap();
            theirs.push(v);
        }
        let readers = store.inline.as_ref().unwrap();
        readers
            .with(|conn, _| {
                for (name, theirs) in COPIED_PRAGMAS.iter().zip(&theirs) {
                    let ours: i64 = conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?;
                    assert_eq!(ours, *theirs, "PRAGMA {name}");
                }
                let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                assert_eq!(mode, "wal");
                let e = conn
                    .execute("DELETE FROM sessions", [])
                    .expect_err("a read-only connection");
                assert!(e.to_string().contains("readonly"), "{e}");
                Ok(())
            })
            .unwrap();
    }

    /// Many threads reading at once each get a connection; afterwards at most `keep` stay.
    #[tokio::test]
    async fn concurrent_readers_each_get_a_connection_and_few_are_kept() {
        let db = TempDb::new("many");
        let store = SqliteStore::open(&db.url(), 3).await.unwrap();
        exec(
            &store,
            "INSERT INTO sessions (nonce, payment_key, expires_at) VALUES ('n', 'k', 9)",
        )
        .await;
        let readers = store.inline.as_ref().unwrap();
        std::thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let k = readers.nonce_binding("n").unwrap();
                        assert_eq!(k.as_deref(), Some("k"));
                    }
                });
            }
        });
        let kept = readers.idle.lock().unwrap().len();
        assert!((1..=3).contains(&kept), "{kept}");
    }

    #[tokio::test]
    async fn an_in_memory_store_reads_through_sqlx() {
        let store = SqliteStore::open("sqlite::memory:", 2).await.unwrap();
        assert!(store.inline.is_none());
        let bind = NonceBind {
            nonce: "n".into(),
            payment_key: "k:1".into(),
            expires_at: 1_000,
        };
        let e = entry("f:1", Some("n"), None);
        assert_eq!(
            store.claim(Some(&bind), &e, 100).await.unwrap(),
            Claim::Claimed
        );
        assert!(store.consume(&consumption("k:1", Some("n"))).await.unwrap());
        let p = store
            .presentation(Some("n"), "k:1", "f:1", 100)
            .await
            .unwrap();
        assert_eq!(p.nonce_binding.as_deref(), Some("k:1"));
        assert_eq!(p.fork, Some(e));
        assert_eq!(p.payment.unwrap().state, PaymentState::Admitted);
    }
}
