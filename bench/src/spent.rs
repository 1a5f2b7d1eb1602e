//! The spent set at size: insert-if-absent (`Store::consume`, one durable transaction each, as
//! the sidecar does per payment) and lookup (`Store::spent`) rates through the sidecar's own
//! store, first at a small size (the baseline) and then after a bulk fill to the target size.
//!
//! The spent set is the payment ledger (`payments`, docs/payments.md): a payment is spent
//! once its row exists. The bulk fill writes random 256-bit keys (as block hashes are)
//! straight into that table with set-based SQL, as rows in state `served` with the very
//! columns and values [`consumption`] has `Store::consume` write, in key order so that it
//! takes minutes, because filling 10 million rows one durable transaction at a time would
//! take hours; the timed operations all go through the `Store` trait with fresh random keys.

use anyhow::{anyhow, Context, Result};
use nanogate_sidecar::store::{self, Consumption, Store};
use sqlx::Connection;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rates at one size.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    pub entries: u64,
    /// New keys: insert succeeds (one durable transaction each).
    pub insert_per_s: f64,
    pub insert_p99: Duration,
    /// Existing keys: insert-if-absent refuses.
    pub dup_per_s: f64,
    /// Lookups of existing keys.
    pub hit_per_s: f64,
    pub hit_p99: Duration,
    /// Lookups of absent keys.
    pub miss_per_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct SpentResult {
    pub backend: &'static str,
    pub small: Rates,
    pub large: Rates,
    pub fill_secs: f64,
    pub version: String,
    /// Resident memory of the process holding the store (this driver: the sidecar's own
    /// `Store` code and pools) after the timed operations on the small and on the large table.
    pub rss_small: u64,
    pub rss_large: u64,
}

fn random_key() -> String {
    format!(
        "nano:devnet:{}",
        nanogate_protocol::hex::encode_upper(&rand::random::<[u8; 32]>())
    )
}

// What every bench payment is (timed `consume` and bulk fill alike): a signed-block payment
// that was served, as a facilitator settlement is recorded (no lease, no admission token).
const MECHANISM: &str = store::payments::SIGNED_BLOCK;
const STATE: store::PaymentState = store::PaymentState::Served;
const PAYER: &str = "nano_bench";
const PAY_TO: &str = "nano_bench_payee";
const AMOUNT: u128 = 1000;
const RESOURCE: &str = "http://bench/paid";

/// Unix seconds, as the sidecar stamps `settled_at` / `updated_at`.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn consumption(key: String) -> Consumption {
    Consumption {
        // As the sidecar makes them: 128 random bits, lower-case hex.
        receipt: nanogate_protocol::hex::encode_lower(&rand::random::<[u8; 16]>()),
        spent_key: key,
        mechanism: MECHANISM,
        payer: PAYER.into(),
        pay_to: PAY_TO.into(),
        amount: AMOUNT,
        resource: RESOURCE.into(),
        nonce: None,
        now: now(),
        state: STATE,
        lease_until: 0,
        admission_token: None,
    }
}

/// The columns and values `Store::consume` writes for [`consumption`], for a bulk fill from a
/// set of upper-case hex keys `h`: `$1` mechanism, `$2` payer, `$3` payee, `$4` amount,
/// `$5` resource, `$6` state, `$7` now. The receipt is the first 128 bits of the key in lower
/// case (the form of a receipt, and in key order, so every index is appended to in order).
const FILL_COLUMNS: &str = "(spent_key, receipt, mechanism, payer, pay_to, amount, resource, \
     nonce, state, settled_at, updated_at, lease_until, admission_token)";
const FILL_VALUES: &str = "'nano:devnet:' || h, lower(substr(h, 1, 32)), $1, $2, $3, $4, $5, \
     NULL, $6, $7, $7, 0, NULL";

fn bind_fill<'q, DB: sqlx::Database>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(MECHANISM.to_string())
        .bind(PAYER.to_string())
        .bind(PAY_TO.to_string())
        .bind(AMOUNT.to_string())
        .bind(RESOURCE.to_string())
        .bind(STATE.as_str().to_string())
        .bind(now())
}

/// Times `f` over up to `count` operations or `budget`, whichever ends first.
async fn timed<F, Fut>(count: usize, budget: Duration, mut f: F) -> Result<(f64, Duration)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = Instant::now();
    let mut lat = Vec::with_capacity(count);
    for i in 0..count {
        if started.elapsed() > budget {
            break;
        }
        let t = Instant::now();
        f(i).await?;
        lat.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    lat.sort();
    Ok((
        lat.len() as f64 / elapsed.as_secs_f64(),
        crate::stats::percentile(&lat, 0.99),
    ))
}

async fn measure(
    store: &Arc<dyn Store>,
    entries: u64,
    existing: &[String],
    ops: usize,
    budget: Duration,
) -> Result<Rates> {
    // The bulk-filled rows must be what `consume` writes: the store reads one of each back the
    // same but for the key, the receipt and the time.
    let fresh = random_key();
    anyhow::ensure!(
        store.consume(&consumption(fresh.clone())).await?,
        "a fresh key was refused"
    );
    let same = |r: Option<store::PaymentRecord>| {
        r.map(|r| store::PaymentRecord {
            spent_key: String::new(),
            receipt: r.receipt.map(|x| x.len().to_string()),
            settled_at: 0,
            updated_at: 0,
            ..r
        })
    };
    let (consumed, filled) = (store.spent(&fresh).await?, store.spent(&existing[0]).await?);
    anyhow::ensure!(
        consumed.is_some() && same(consumed.clone()) == same(filled.clone()),
        "bulk-filled row {filled:?} differs from a consumed one {consumed:?}"
    );
    // Untimed warm-up: connections, statement caches and the first pages.
    for i in 0..100 {
        store.consume(&consumption(random_key())).await?;
        store.spent(&existing[i % existing.len()]).await?;
    }
    let (insert_per_s, insert_p99) = timed(ops, budget, |_| {
        let s = store.clone();
        async move {
            let ok = s.consume(&consumption(random_key())).await?;
            anyhow::ensure!(ok, "a fresh key was refused");
            Ok(())
        }
    })
    .await?;
    let (dup_per_s, _) = timed(ops, budget, |i| {
        let s = store.clone();
        let key = existing[i % existing.len()].clone();
        async move {
            let ok = s.consume(&consumption(key)).await?;
            anyhow::ensure!(!ok, "a spent key was admitted twice");
            Ok(())
        }
    })
    .await?;
    let lookups = ops * 10;
    let (hit_per_s, hit_p99) = timed(lookups, budget, |i| {
        let s = store.clone();
        let key = existing[i % existing.len()].clone();
        async move {
            anyhow::ensure!(s.spent(&key).await?.is_some(), "existing key not found");
            Ok(())
        }
    })
    .await?;
    let (miss_per_s, _) = timed(lookups, budget, |_| {
        let s = store.clone();
        async move {
            anyhow::ensure!(s.spent(&random_key()).await?.is_none(), "random key found");
            Ok(())
        }
    })
    .await?;
    Ok(Rates {
        entries,
        insert_per_s,
        insert_p99,
        dup_per_s,
        hit_per_s,
        hit_p99,
        miss_per_s,
    })
}

// ---------------------------------------------------------------- SQLite

/// Bulk-fills `rows` random keys through a connection of its own, closed before the store is
/// timed, and leaves them durable in the database file: the timed operations must pay neither
/// for the fill's memory nor for its writes.
///
/// The fill runs with `synchronous=OFF`, so nothing of it reaches the disk until the kernel
/// writes it back; at 10M that is gigabytes of dirty pages, and the first `synchronous=FULL`
/// checkpoint of a timed insert then waited seconds for them (the 0.34× insert rate at 10M
/// with a p99 of 0.58 ms: a few inserts took the time). So the WAL is checkpointed into the
/// database file, truncated, and the file fsynced here, inside `fill_secs`.
///
/// The page cache is 64 MiB, not more: key-ordered inserts append to every index, so a small
/// cache loses nothing, and it was 1 GB, which the process kept (1.2 GiB RSS in the result
/// for "the process holding the store", none of it the store's).
pub async fn sqlite_fill(url: &str, path: &Path, rows: u64) -> Result<()> {
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;
    let mut conn = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::from_str(url)?
            .pragma("cache_size", "-65536")
            .pragma("synchronous", "OFF"),
    )
    .await?;
    // Random keys, inserted in key order (see FILL_VALUES): minutes instead of an hour of
    // random B-tree inserts at 10M.
    let mut tx = conn.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE fill AS WITH RECURSIVE c(x) AS \
         (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT hex(randomblob(32)) AS h FROM c",
    )
    .bind(rows as i64)
    .execute(&mut *tx)
    .await?;
    // SQLite numbers its parameters `?N`, as the sidecar's store rewrites them.
    let insert = format!(
        "INSERT INTO payments {FILL_COLUMNS} SELECT {FILL_VALUES} FROM fill ORDER BY h \
         ON CONFLICT DO NOTHING"
    )
    .replace('$', "?");
    bind_fill(sqlx::query(&insert)).execute(&mut *tx).await?;
    sqlx::query("DROP TABLE fill").execute(&mut *tx).await?;
    tx.commit().await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let file = std::fs::File::open(path).with_context(|| format!("open {path:?}"))?;
    file.sync_all().with_context(|| format!("fsync {path:?}"))?;
    Ok(())
}

async fn sqlite_sample(conn: &mut sqlx::SqliteConnection, n: usize) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT spent_key FROM payments WHERE rowid IN \
         (SELECT abs(random()) % (SELECT MAX(rowid) FROM payments) + 1 FROM \
          (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT x FROM c))",
    )
    .bind(n as i64)
    .fetch_all(conn)
    .await?)
}

pub async fn sqlite(
    work: &Path,
    small: u64,
    large: u64,
    ops: usize,
    budget: Duration,
) -> Result<SpentResult> {
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;
    let path = work.join("spent-bench.db");
    let rm = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    rm();
    let url = format!("sqlite://{}", path.display());
    let store = store::open(&url, None, 8)
        .await
        .map_err(|e| anyhow!("open {url}: {e}"))?;
    // For the version, the samples and the count (a default page cache).
    let mut conn =
        sqlx::SqliteConnection::connect_with(&SqliteConnectOptions::from_str(&url)?).await?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await?;
    sqlite_fill(&url, &path, small).await?;
    let sample = sqlite_sample(&mut conn, 10_000).await?;
    let small_rates = measure(&store, small, &sample, ops, budget).await?;
    let rss_small = crate::stack::rss_bytes(std::process::id()).unwrap_or(0);
    let t = Instant::now();
    sqlite_fill(&url, &path, large.saturating_sub(small)).await?;
    let fill_secs = t.elapsed().as_secs_f64();
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments")
        .fetch_one(&mut conn)
        .await?;
    let sample = sqlite_sample(&mut conn, 10_000).await?;
    let large_rates = measure(&store, entries as u64, &sample, ops, budget).await?;
    let rss_large = crate::stack::rss_bytes(std::process::id()).unwrap_or(0);
    drop(conn);
    drop(store);
    rm();
    Ok(SpentResult {
        backend: "SQLite",
        small: small_rates,
        large: large_rates,
        fill_secs,
        version: format!("SQLite {version}"),
        rss_small,
        rss_large,
    })
}

// ---------------------------------------------------------------- PostgreSQL

async fn pg_fill(conn: &mut sqlx::PgConnection, schema: &str, rows: u64) -> Result<()> {
    // As for SQLite: random keys inserted in key order (see FILL_VALUES). `$8` is the count.
    let mut tx = conn.begin().await?;
    for set in [
        "SET LOCAL synchronous_commit = off",
        "SET LOCAL work_mem = '256MB'",
    ] {
        sqlx::query(set).execute(&mut *tx).await?;
    }
    bind_fill(sqlx::query(&format!(
        "WITH k AS MATERIALIZED (SELECT upper(md5(random()::text) || md5(random()::text)) AS h \
                FROM generate_series(1, $8)) \
         INSERT INTO \"{schema}\".payments {FILL_COLUMNS} \
         SELECT {FILL_VALUES} FROM k ORDER BY h ON CONFLICT DO NOTHING"
    )))
    .bind(rows as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query(&format!("VACUUM ANALYZE \"{schema}\".payments"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn pg_sample_any(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    n: usize,
) -> Result<Vec<String>> {
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{schema}\".payments"))
        .fetch_one(&mut *conn)
        .await?;
    let pct = ((n as f64 * 2.0 / total.max(1) as f64) * 100.0).min(100.0);
    Ok(sqlx::query_scalar(&format!(
        "SELECT spent_key FROM \"{schema}\".payments TABLESAMPLE BERNOULLI({pct}) LIMIT $1"
    ))
    .bind(n as i64)
    .fetch_all(&mut *conn)
    .await?)
}

pub async fn postgres(
    url: &str,
    small: u64,
    large: u64,
    ops: usize,
    budget: Duration,
) -> Result<SpentResult> {
    let schema = format!("ng_bench_{}", std::process::id());
    let store = store::open(url, Some(&schema), 8)
        .await
        .map_err(|e| anyhow!("open PostgreSQL at {url}: {e}"))?;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .with_context(|| format!("connect {url}"))?;
    let result = async {
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?;
        pg_fill(&mut conn, &schema, small).await?;
        let sample = pg_sample_any(&mut conn, &schema, 10_000).await?;
        anyhow::ensure!(!sample.is_empty(), "no sample keys");
        let small_rates = measure(&store, small, &sample, ops, budget).await?;
        let rss_small = crate::stack::rss_bytes(std::process::id()).unwrap_or(0);
        let t = Instant::now();
        pg_fill(&mut conn, &schema, large.saturating_sub(small)).await?;
        let fill_secs = t.elapsed().as_secs_f64();
        let entries: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{schema}\".payments"))
                .fetch_one(&mut conn)
                .await?;
        let sample = pg_sample_any(&mut conn, &schema, 10_000).await?;
        anyhow::ensure!(!sample.is_empty(), "no sample keys");
        let large_rates = measure(&store, entries as u64, &sample, ops, budget).await?;
        let rss_large = crate::stack::rss_bytes(std::process::id()).unwrap_or(0);
        Ok(SpentResult {
            backend: "PostgreSQL",
            small: small_rates,
            large: large_rates,
            fill_secs,
            version: format!("PostgreSQL {version}"),
            rss_small,
            rss_large,
        })
    }
    .await;
    drop(store);
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await;
    result
}
