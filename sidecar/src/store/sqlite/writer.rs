//! SQLite's writer thread: the hot writes ([`crate::store::hot`]) of a paid request, in groups.
//!
//! One OS thread owns a connection of its own (rusqlite, the `libsqlite3-sys` that sqlx links)
//! and runs each group synchronously: `BEGIN IMMEDIATE`, every waiting write with cached
//! prepared statements, one `COMMIT` (one fsync). Through sqlx each statement was a round trip
//! to the connection's worker thread (task → channel → thread → oneshot → wake), a few hundred
//! µs on a loaded machine, and a group of N writes paid N of them before its commit; here a
//! statement costs its execution and the group one hand-off each way.
//!
//! The other writes (admin, prune, passes, refunds, …) stay on the store's sqlx writer pool of
//! one. The two never write at the same time: while it runs groups the thread holds that pool's
//! one connection (`token`), so sqlx writes wait for it in the process, as they waited for
//! each other before, and neither side ever meets SQLite's busy handler (which sleeps 1 ms and
//! more). The thread gives the token back whenever its queue is empty, and after
//! [`MAX_HELD_GROUPS`] groups in a row so a busy paid path cannot starve the sqlx writers (the
//! pool's waiters are served in order, the thread queues behind them).
//!
//! The connection gets the pragmas of the sqlx writer connection (read from it at start:
//! `synchronous=FULL`, the busy timeout, foreign keys, cache sizes); the journal mode (WAL) is
//! the file's. An in-memory database is opened by its shared-cache name, so the thread writes
//! the same database as the pool.

use crate::store::hot::{
    outcome_sql, Claim, HotDone, HotWrite, BIND_NONCE, BOUND_NONCE, CLAIM_FORK, CONSUME,
    UNBIND_NONCE,
};
use crate::store::tagged::sql;
use crate::store::StoreError;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};
use std::path::PathBuf;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// At most this many hot writes share one commit (bounds the transaction, not the queue).
pub(super) const MAX_GROUP: usize = 256;

/// Groups run back to back before the thread lets the sqlx writers in.
const MAX_HELD_GROUPS: usize = 4;

/// The sqlx writer connection's settings the thread's connection copies (integer pragmas).
pub(super) const COPIED_PRAGMAS: &[&str] = &[
    "synchronous",
    "busy_timeout",
    "foreign_keys",
    "cache_size",
    "mmap_size",
    "temp_store",
    "wal_autocheckpoint",
    "journal_size_limit",
];

type Reply = oneshot::Sender<Result<HotDone, StoreError>>;
type Job = (HotWrite, Reply);

/// The handle to the writer thread; the thread ends when it is dropped.
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

/// How to open (and reopen) the thread's connection.
#[derive(Clone)]
pub(super) struct Opener {
    path: PathBuf,
    flags: OpenFlags,
    pragmas: Vec<(&'static str, i64)>,
}

impl Opener {
    /// The database `pool` writes: `filename` as sqlx opened it (a shared-cache name when
    /// `in_memory`), with the pragmas of `pool`'s connection.
    pub(super) async fn new(
        pool: &SqlitePool,
        filename: PathBuf,
        in_memory: bool,
    ) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        let mut pragmas = Vec::with_capacity(COPIED_PRAGMAS.len());
        for name in COPIED_PRAGMAS {
            // Some have no value for an in-memory database (`mmap_size`): nothing to copy.
            let value: Option<i64> = sqlx::query_scalar(&format!("PRAGMA {name}"))
                .fetch_optional(&mut *conn)
                .await?;
            pragmas.extend(value.map(|v| (*name, v)));
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if in_memory {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        Ok(Opener {
            path: filename,
            flags,
            pragmas,
        })
    }

    /// The same database with the same pragmas, opened read-only (the inline readers,
    /// [`super::reader`]; not for an in-memory database).
    pub(super) fn read_only(&self) -> Opener {
        Opener {
            path: self.path.clone(),
            flags: (self.flags - OpenFlags::SQLITE_OPEN_READ_WRITE)
                | OpenFlags::SQLITE_OPEN_READ_ONLY,
            pragmas: self.pragmas.clone(),
        }
    }

    pub(super) fn open(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_with_flags(&self.path, self.flags)?;
        for (name, value) in &self.pragmas {
            // Some pragmas answer with a row, some do not: step once, ignore it.
            conn.prepare(&format!("PRAGMA {name} = {value}"))?
                .query([])?
                .next()?;
        }
        // Every statement of a group, cached (BEGIN, COMMIT, ROLLBACK and the hot writes').
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }
}

/// The SQLite texts of the hot writes, built once.
struct Texts {
    bind_nonce: String,
    bound_nonce: String,
    unbind_nonce: String,
    claim_fork: String,
    consume: String,
    /// By (failed, token): `[served, served+token, failed, failed+token]`.
    outcome: [String; 4],
}

impl Texts {
    fn new() -> Self {
        let outcome = |failed, token| outcome_sql(failed, token, true);
        Texts {
            bind_nonce: sql(BIND_NONCE, true).into_owned(),
            bound_nonce: sql(BOUND_NONCE, true).into_owned(),
            unbind_nonce: sql(UNBIND_NONCE, true).into_owned(),
            claim_fork: sql(CLAIM_FORK, true).into_owned(),
            consume: sql(CONSUME, true).into_owned(),
            outcome: [
                outcome(false, false),
                outcome(false, true),
                outcome(true, false),
                outcome(true, true),
            ],
        }
    }
}

impl Writer {
    /// Opens the thread's connection and starts the thread. `token` is the sqlx writer pool
    /// (see the module comment). Called inside the Tokio runtime the store serves.
    pub(super) fn start(opener: Opener, token: SqlitePool) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel();
        spawn(opener, jobs, token)?;
        Ok(Writer { queue })
    }

    /// Runs one hot write; answers once its group is committed (or failed).
    pub(super) async fn write(&self, op: HotWrite) -> Result<HotDone, StoreError> {
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the SQLite writer thread stopped".into());
        self.queue.send((op, reply)).map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

/// Opens the connection and starts the thread on `jobs`; it ends when every sender is gone.
fn spawn(
    opener: Opener,
    jobs: mpsc::Receiver<Job>,
    token: SqlitePool,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let conn = opener.open().map_err(query_error)?;
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            // sqlx returns a pool connection to its pool in a task: give it the runtime.
            let _rt = rt.enter();
            run(Some(conn), &opener, &jobs, &token, &rt);
        })
        .map_err(|e| StoreError::Unavailable(format!("no SQLite writer thread: {e}")))
}

fn query_error(e: rusqlite::Error) -> StoreError {
    StoreError::Query(e.to_string())
}

/// The thread: takes every write waiting, runs them as one group, answers each, until the
/// store is dropped. `conn` is `None` after a connection had to be given up (reopened at the
/// next group).
fn run(
    mut conn: Option<Connection>,
    opener: &Opener,
    jobs: &mpsc::Receiver<Job>,
    pool: &SqlitePool,
    rt: &tokio::runtime::Handle,
) {
    let texts = Texts::new();
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut token: Option<PoolConnection<Sqlite>> = None;
    let mut held = 0;
    loop {
        let first = match jobs.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Empty) => {
                // Idle: let the sqlx writers in, sleep until a write comes.
                token = None;
                held = 0;
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if held >= MAX_HELD_GROUPS {
            token = None;
            held = 0;
        }
        let results = (|| {
            if token.is_none() {
                token = Some(match pool.try_acquire() {
                    Some(c) => c,
                    None => rt.block_on(pool.acquire())?,
                });
            }
            held += 1;
            if conn.is_none() {
                conn = Some(opener.open().map_err(query_error)?);
            }
            let Some(c) = conn.as_ref() else {
                return Err(StoreError::Unavailable(
                    "no SQLite writer connection".into(),
                ));
            };
            let results = run_group(c, &texts, &group);
            if !c.is_autocommit() {
                // ROLLBACK failed: never keep a connection inside a transaction.
                tracing::warn!(
                    "the SQLite writer connection is stuck in a transaction; reopening it"
                );
                conn = None;
            }
            results.map_err(query_error)
        })();
        match results {
            Ok(results) => {
                for ((_, reply), r) in group.drain(..).zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = group.len(), "SQLite group commit failed");
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }
}

/// One group in one transaction: `Ok` = committed, with each write's own result. A write that
/// decides against itself (a claim refused) leaves no rows ([`crate::store::hot`]); a statement
/// that fails, or the commit failing, rolls the whole group back.
fn run_group(
    conn: &Connection,
    texts: &Texts,
    group: &[Job],
) -> Result<Vec<HotDone>, rusqlite::Error> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let body = (|| {
        let mut results = Vec::with_capacity(group.len());
        for (op, _) in group {
            results.push(apply(conn, texts, op)?);
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(results)
    })();
    if body.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut s| s.execute([]))
        {
            tracing::warn!(error = %e, "SQLite rollback failed");
        }
    }
    body
}

/// One hot write's statements: the SQL of [`crate::store::hot`], as PostgreSQL runs it.
fn apply(conn: &Connection, t: &Texts, op: &HotWrite) -> Result<HotDone, rusqlite::Error> {
    match op {
        HotWrite::Claim {
            nonce,
            entry: e,
            now,
        } => {
            // Whether this claim inserted the nonce binding (to undo below).
            let mut bound_here = false;
            if let Some(n) = nonce {
                bound_here = conn.prepare_cached(&t.bind_nonce)?.execute(params![
                    n.nonce,
                    n.payment_key,
                    n.expires_at
                ])? == 1;
                if !bound_here {
                    let bound: Option<String> = conn
                        .prepare_cached(&t.bound_nonce)?
                        .query_row(params![n.nonce], |r| r.get(0))
                        .optional()?;
                    if bound.as_deref() != Some(n.payment_key.as_str()) {
                        return Ok(HotDone::Claim(Claim::NonceTaken));
                    }
                }
            }
            let claimed = conn.prepare_cached(&t.claim_fork)?.execute(params![
                e.frontier_key,
                e.block_hash,
                e.nonce,
                e.owner,
                e.lease_until,
                e.expires_at,
                now,
                e.terms
            ])? == 1;
            if claimed {
                return Ok(HotDone::Claim(Claim::Claimed));
            }
            // Refused: undo the binding this claim made, in the same transaction (nobody else
            // has seen it), so it leaves no trace without a savepoint.
            if let (true, Some(n)) = (bound_here, nonce) {
                conn.prepare_cached(&t.unbind_nonce)?
                    .execute(params![n.nonce])?;
            }
            Ok(HotDone::Claim(Claim::FrontierTaken))
        }
        HotWrite::Consume(c) => {
            // In `CONSUME`'s order: `bind_consumption`'s ten, then mechanism and token.
            let done = conn.prepare_cached(&t.consume)?.execute(params![
                c.spent_key,
                c.receipt,
                c.payer,
                c.pay_to,
                c.amount.to_string(),
                c.resource,
                c.nonce,
                c.state.as_str(),
                c.now,
                c.lease_until,
                c.mechanism,
                c.admission_token
            ])?;
            Ok(HotDone::Applied(done == 1))
        }
        HotWrite::Outcome {
            receipt,
            status,
            now,
            policy,
            token_hash,
        } => {
            let failed = *status >= 500;
            let text = &t.outcome[usize::from(failed) * 2 + usize::from(token_hash.is_some())];
            let mut stmt = conn.prepare_cached(text)?;
            let done = match (failed, token_hash) {
                (true, Some(h)) => {
                    stmt.execute(params![policy.max_redemptions, now, receipt, h])?
                }
                (true, None) => stmt.execute(params![policy.max_redemptions, now, receipt])?,
                (false, Some(h)) => stmt.execute(params![now, receipt, h])?,
                (false, None) => stmt.execute(params![now, receipt])?,
            };
            Ok(HotDone::Applied(done == 1))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::payments::{Consumption, PaymentState, SIGNED_BLOCK};
    use crate::store::sqlite::temp_db::TempDb;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{PaymentStore, Store};
    use std::sync::Arc;

    fn consumption(key: &str) -> Consumption {
        Consumption {
            spent_key: key.to_owned(),
            receipt: format!("receipt-{key}"),
            mechanism: SIGNED_BLOCK,
            payer: "nano_payer".into(),
            pay_to: "nano_payee".into(),
            amount: 1_000_000,
            resource: "http://api.test/r".into(),
            nonce: None,
            now: 100,
            state: PaymentState::Admitted,
            lease_until: 200,
            admission_token: None,
        }
    }

    async fn payments(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM payments")
            .fetch_one(&store.readers)
            .await
            .unwrap()
    }

    /// Makes inserting the payment `bad` fail (a statement error inside a group).
    async fn refuse_bad(store: &SqliteStore) {
        sqlx::query(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON payments WHEN NEW.spent_key = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .execute(&store.pool)
        .await
        .unwrap();
    }

    fn job(op: HotWrite) -> (Job, oneshot::Receiver<Result<HotDone, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        ((op, reply), answer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_fails_its_whole_group_and_every_write_hears_it() {
        let db = TempDb::new("group_fails");
        let store = SqliteStore::open(&db.url(), 2).await.unwrap();
        refuse_bad(&store).await;
        // All three wait in the queue before the thread starts: one group.
        let (queue, jobs) = mpsc::channel();
        let mut answers = Vec::new();
        for key in ["a", "bad", "c"] {
            let (j, answer) = job(HotWrite::Consume(consumption(key)));
            queue.send(j).unwrap();
            answers.push(answer);
        }
        drop(queue);
        let opener = Opener::new(&store.pool, db.0.clone(), false).await.unwrap();
        let thread = spawn(opener, jobs, store.pool.clone()).unwrap();
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        for answer in answers {
            let e = answer.await.unwrap().unwrap_err();
            assert!(e.to_string().contains("refused by the test"), "{e}");
        }
        assert_eq!(payments(&store).await, 0, "the group was rolled back");
    }

    #[tokio::test]
    async fn a_failed_group_leaves_the_connection_outside_a_transaction() {
        let db = TempDb::new("rollback");
        let store = SqliteStore::open(&db.url(), 2).await.unwrap();
        refuse_bad(&store).await;
        let opener = Opener::new(&store.pool, db.0.clone(), false).await.unwrap();
        let conn = opener.open().unwrap();
        let texts = Texts::new();
        let (good, _a) = job(HotWrite::Consume(consumption("a")));
        let (bad, _b) = job(HotWrite::Consume(consumption("bad")));
        assert!(run_group(&conn, &texts, &[good, bad]).is_err());
        assert!(conn.is_autocommit());
        let (good, _c) = job(HotWrite::Consume(consumption("c")));
        let done = run_group(&conn, &texts, &[good]).unwrap();
        assert_eq!(done, [HotDone::Applied(true)]);
        drop(conn);
        assert_eq!(payments(&store).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_hot_writes_from_many_tasks_all_commit() {
        let db = TempDb::new("many");
        let store = Arc::new(SqliteStore::open(&db.url(), 2).await.unwrap());
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let c = consumption(&format!("k{i}"));
                    let fresh = store.consume(&c).await.unwrap();
                    let served = store
                        .record_outcome_with_token(
                            &c.receipt,
                            200,
                            101,
                            crate::store::RedeemPolicy {
                                max_redemptions: 1,
                                window_secs: 60,
                            },
                            None,
                        )
                        .await
                        .unwrap();
                    fresh && served
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(payments(&store).await, 300);
        let served: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE state = 'served'")
                .fetch_one(&store.readers)
                .await
                .unwrap();
        assert_eq!(served, 300);
    }

    /// With no busy timeout on either connection, a write of one while the other is in a
    /// transaction fails at once (SQLITE_BUSY): the thread and the sqlx writer pool must take
    /// turns in the process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_writer_thread_and_the_sqlx_writers_take_turns() {
        let db = TempDb::new("turns");
        let store = Arc::new(SqliteStore::open(&db.url(), 2).await.unwrap());
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&store.pool)
            .await
            .unwrap();
        let opener = Opener::new(&store.pool, db.0.clone(), false).await.unwrap();
        assert!(opener.pragmas.contains(&("busy_timeout", 0)));
        let writer = Arc::new(Writer::start(opener, store.pool.clone()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (store, writer) = (store.clone(), writer.clone());
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    let c = consumption(&format!("k{i}"));
                    writer.write(HotWrite::Consume(c)).await.map(|_| ())
                } else {
                    store
                        .bind_nonce(&format!("n{i}"), "p", 1000)
                        .await
                        .map(|_| ())
                }
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(payments(&store).await, 100);
    }

    #[tokio::test]
    async fn the_writer_connection_has_the_pools_settings() {
        let db = TempDb::new("pragmas");
        let store = SqliteStore::open(&db.url(), 2).await.unwrap();
        let opener = Opener::new(&store.pool, db.0.clone(), false).await.unwrap();
        let conn = opener.open().unwrap();
        for name in COPIED_PRAGMAS {
            let ours: i64 = conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .unwrap();
            let pools: i64 = sqlx::query_scalar(&format!("PRAGMA {name}"))
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(ours, pools, "PRAGMA {name}");
        }
        let get = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .unwrap()
        };
        assert_eq!(get("journal_mode"), r#"Text("wal")"#);
        assert_eq!(get("synchronous"), "Integer(2)", "FULL");
        assert_eq!(get("foreign_keys"), "Integer(1)");
    }

    #[tokio::test]
    async fn an_in_memory_store_writes_and_reads_one_database() {
        let store = SqliteStore::open("sqlite::memory:", 2).await.unwrap();
        assert!(store.consume(&consumption("a")).await.unwrap());
        assert!(!store.consume(&consumption("a")).await.unwrap(), "spent");
        assert_eq!(payments(&store).await, 1);
    }
}
