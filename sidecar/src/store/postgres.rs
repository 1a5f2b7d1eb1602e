//! PostgreSQL backend: for several replicas sharing one database. Admission decisions are
//! single statements (`ON CONFLICT`, conditional `UPDATE`) whose rows-affected count says who
//! won, so two sidecars racing on the same payment admit it exactly once.

use super::hot::{Claim, HotDone, HotWrite, NonceBind, BIND_NONCE, BOUND_NONCE};
use super::{
    migrator, ForkEntry, NonceBinding, PaymentStore, Presentation, RedeemPolicy, Store, StoreError,
    StoreFuture, TokenOutcome, FORK_ENTRY,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "tagged",
        include_str!("../../migrations/postgres/0002_tagged.sql"),
    ),
    (
        3,
        "payments",
        include_str!("../../migrations/postgres/0003_payments.sql"),
    ),
    (
        4,
        "reconcile",
        include_str!("../../migrations/postgres/0004_reconcile.sql"),
    ),
    (
        5,
        "admission_token",
        include_str!("../../migrations/postgres/0005_admission_token.sql"),
    ),
    (
        7,
        "passes",
        include_str!("../../migrations/postgres/0007_passes.sql"),
    ),
    (
        8,
        "refunds",
        include_str!("../../migrations/postgres/0008_refunds.sql"),
    ),
    (
        9,
        "pass_usage",
        include_str!("../../migrations/postgres/0009_pass_usage.sql"),
    ),
    (
        10,
        "claim",
        include_str!("../../migrations/postgres/0010_claim.sql"),
    ),
];

/// A pooled connection idle for longer than this is pinged before use (one round trip); one
/// in steady use is not. sqlx's default pings on every acquisition, which doubled the round
/// trips of every single-statement read and write on the paid path.
const PING_IDLE_AFTER: Duration = Duration::from_secs(5);

/// A batch of outcome reports as one statement ([`Store::record_outcomes`]): each row of the
/// `unnest` is one outcome (`$3` receipt, `$4` status, `$5` token hash) and gets exactly
/// [`super::hot::outcome_sql`]'s token-checked update for its status (`$1` max redemptions,
/// `$2` now). Answers the receipts it recorded.
const OUTCOMES: &str = "UPDATE payments AS p SET \
       state = CASE WHEN o.status < 500 THEN 'served' \
         WHEN p.redemptions >= $1 THEN 'owed' ELSE 'redeemable' END, \
       reason = CASE WHEN o.status >= 500 AND p.redemptions >= $1 \
         THEN 'redemptions_exhausted' ELSE p.reason END, \
       updated_at = $2 \
     FROM unnest($3::text[], $4::bigint[], $5::text[]) AS o (receipt, status, token) \
     WHERE p.receipt = o.receipt AND p.state = 'admitted' AND p.admission_token = o.token \
     RETURNING p.receipt";

pub struct PgStore {
    pool: PgPool,
    /// The same pool: PostgreSQL readers and writers need no separation.
    readers: PgPool,
}

impl PgStore {
    /// Connects to `url` and applies the embedded migrations. With `schema`, every table lives
    /// in that schema (created if missing), which isolates deployments and test runs.
    pub async fn open(
        url: &str,
        schema: Option<&str>,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let mut opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
        if let Some(schema) = schema {
            if schema.is_empty()
                || !schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(StoreError::Config(
                    "postgres schema must be lower-case letters, digits and _".into(),
                ));
            }
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts.clone())
                .await?;
            // Replicas starting together may race on CREATE SCHEMA (a unique violation on
            // pg_namespace even with IF NOT EXISTS): one retry sees the schema.
            let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
            if sqlx::query(&create).execute(&admin).await.is_err() {
                sqlx::query(&create).execute(&admin).await?;
            }
            admin.close().await;
            opts = opts.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            // A connection that died while idle (a server restart, a dropped route) is most
            // likely one that sat idle: those are still checked, and replaced when dead.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(opts)
            .await?;
        migrator(MIGRATIONS).run(&pool).await?;
        Ok(PgStore {
            readers: pool.clone(),
            pool,
        })
    }

    /// Runs one hot write as one autocommitted statement on the pool (concurrent commits
    /// share WAL flushes): the claim is the function `nanogate_claim` (migration 0010), the
    /// others are single statements already. One round trip each, and no transaction left
    /// open across an `.await`. The write still runs in a task of its own, so a caller that
    /// goes away (a cancelled request) cannot drop it between sending it and hearing whether
    /// it committed.
    pub(crate) async fn hot(&self, op: HotWrite) -> Result<HotDone, StoreError> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let HotWrite::Claim { nonce, entry, now } = &op {
                return Ok(HotDone::Claim(
                    Self::claim_on(&pool, nonce.as_ref(), entry, *now).await?,
                ));
            }
            let mut conn = pool.acquire().await?;
            Self::apply_hot(&mut conn, &op).await
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("a PostgreSQL write task failed: {e}")))?
    }

    /// One consumption or outcome report: a single statement ([`super::hot`]'s SQL),
    /// autocommitted. Claims never come here: they are [`Self::claim_on`].
    async fn apply_hot(
        conn: &mut sqlx::PgConnection,
        op: &HotWrite,
    ) -> Result<HotDone, StoreError> {
        use super::hot::{bind_consumption, outcome_sql, CONSUME};
        let done = match op {
            HotWrite::Claim { .. } => {
                return Err(StoreError::Query(
                    "a claim is one call of nanogate_claim, not a hot statement".into(),
                ))
            }
            HotWrite::Consume(c) => {
                bind_consumption(sqlx::query(CONSUME), c)
                    .bind(c.mechanism)
                    .bind(&c.admission_token)
                    .execute(&mut *conn)
                    .await?
            }
            HotWrite::Outcome {
                receipt,
                status,
                now,
                policy,
                token_hash,
            } => {
                let failed = *status >= 500;
                let q = outcome_sql(failed, token_hash.is_some(), false);
                let mut query = sqlx::query(&q);
                if failed {
                    query = query.bind(policy.max_redemptions);
                }
                query = query.bind(*now).bind(receipt);
                if let Some(h) = token_hash {
                    query = query.bind(h);
                }
                query.execute(&mut *conn).await?
            }
        };
        Ok(HotDone::Applied(done.rows_affected() == 1))
    }

    /// [`Store::claim`]: one call of `nanogate_claim`, which keeps the semantics of the
    /// statements it replaces ([`super::hot`]'s claim) in one implicit transaction.
    async fn claim_on(
        pool: &PgPool,
        nonce: Option<&NonceBind>,
        e: &ForkEntry,
        now: i64,
    ) -> Result<Claim, StoreError> {
        let answer: String = sqlx::query_scalar(
            "SELECT nanogate_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(nonce.map(|n| n.nonce.as_str()))
        .bind(nonce.map(|n| n.payment_key.as_str()))
        .bind(nonce.map(|n| n.expires_at))
        .bind(&e.frontier_key)
        .bind(&e.block_hash)
        .bind(&e.nonce)
        .bind(&e.owner)
        .bind(e.lease_until)
        .bind(e.expires_at)
        .bind(&e.terms)
        .bind(now)
        .fetch_one(pool)
        .await?;
        match answer.as_str() {
            "claimed" => Ok(Claim::Claimed),
            "nonce_taken" => Ok(Claim::NonceTaken),
            "frontier_taken" => Ok(Claim::FrontierTaken),
            other => Err(StoreError::Query(format!(
                "nanogate_claim answered {other:?}"
            ))),
        }
    }

    /// Drops `schema` and everything in it (test clean-up).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        let opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(())
    }
}

impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
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
            let done = sqlx::query(BIND_NONCE)
                .bind(nonce)
                .bind(payment_key)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
            if done.rows_affected() == 1 {
                return Ok(NonceBinding::Fresh);
            }
            let bound: Option<String> = sqlx::query_scalar(BOUND_NONCE)
                .bind(nonce)
                .fetch_optional(&self.readers)
                .await?;
            Ok(match bound {
                Some(k) if k == payment_key => NonceBinding::Same,
                _ => NonceBinding::Other,
            })
        })
    }

    fn nonce_binding<'a>(&'a self, nonce: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(BOUND_NONCE)
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
            let row = sqlx::query(FORK_ENTRY)
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

    fn presentation<'a>(
        &'a self,
        nonce: Option<&'a str>,
        spent_key: &'a str,
        frontier_key: &'a str,
        now: i64,
    ) -> StoreFuture<'a, Presentation> {
        Box::pin(async move {
            // One statement, one snapshot: each LEFT JOIN finds at most one row (primary keys).
            let row = sqlx::query(
                "SELECT s.payment_key AS bound_key, \
                   p.spent_key, p.receipt, p.mechanism, p.payer, p.pay_to, p.amount, \
                   p.resource, p.nonce, p.state, p.reason, p.settled_at, p.updated_at, \
                   p.lease_until, p.redemptions, \
                   f.frontier_key AS fork_frontier_key, f.block_hash AS fork_block_hash, \
                   f.nonce AS fork_nonce, f.owner AS fork_owner, \
                   f.lease_until AS fork_lease_until, f.expires_at AS fork_expires_at, \
                   f.terms AS fork_terms \
                 FROM (SELECT 1) AS one \
                 LEFT JOIN sessions s ON s.nonce = $1 \
                 LEFT JOIN payments p ON p.spent_key = $2 \
                 LEFT JOIN forks f ON f.frontier_key = $3 AND f.expires_at > $4",
            )
            .bind(nonce)
            .bind(spent_key)
            .bind(frontier_key)
            .bind(now)
            .fetch_one(&self.readers)
            .await?;
            let payment = match row.try_get::<Option<String>, _>("spent_key")? {
                Some(_) => Some(Self::payment_record(&row)?),
                None => None,
            };
            let fork = match row.try_get::<Option<String>, _>("fork_frontier_key")? {
                Some(frontier_key) => Some(ForkEntry {
                    frontier_key,
                    block_hash: row.try_get("fork_block_hash")?,
                    nonce: row.try_get("fork_nonce")?,
                    owner: row.try_get("fork_owner")?,
                    lease_until: row.try_get("fork_lease_until")?,
                    expires_at: row.try_get("fork_expires_at")?,
                    terms: row.try_get("fork_terms")?,
                }),
                None => None,
            };
            Ok(Presentation {
                nonce_binding: row.try_get("bound_key")?,
                payment,
                fork,
            })
        })
    }

    /// One statement for the batch (`OUTCOMES`) instead of one pooled connection and one
    /// statement per outcome. Each receipt's first outcome is in it, in receipt order (two
    /// batches sharing receipts lock their rows in the same order); a receipt's later
    /// outcomes are then recorded one by one, as if the batch ran in order.
    fn record_outcomes<'a>(
        &'a self,
        outcomes: &'a [TokenOutcome],
        now: i64,
        policy: RedeemPolicy,
    ) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            if outcomes.is_empty() {
                return Ok(Vec::new());
            }
            let mut seen = std::collections::HashSet::new();
            let (mut first, mut later) = (Vec::new(), Vec::new());
            for (i, o) in outcomes.iter().enumerate() {
                if seen.insert(o.receipt.as_str()) {
                    first.push(i);
                } else {
                    later.push(i);
                }
            }
            first.sort_by(|a, b| outcomes[*a].receipt.cmp(&outcomes[*b].receipt));
            let receipts: Vec<String> =
                first.iter().map(|&i| outcomes[i].receipt.clone()).collect();
            let statuses: Vec<i64> = first.iter().map(|&i| outcomes[i].status).collect();
            let tokens: Vec<String> = first
                .iter()
                .map(|&i| outcomes[i].token_hash.clone())
                .collect();
            // In a task of its own, like the hot writes: a caller that goes away cannot drop
            // the statement between sending it and hearing whether it committed.
            let pool = self.pool.clone();
            let recorded: Vec<String> = tokio::spawn(async move {
                sqlx::query_scalar(OUTCOMES)
                    .bind(policy.max_redemptions)
                    .bind(now)
                    .bind(receipts)
                    .bind(statuses)
                    .bind(tokens)
                    .fetch_all(&pool)
                    .await
            })
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("a PostgreSQL write task failed: {e}"))
            })??;
            let recorded: std::collections::HashSet<&str> =
                recorded.iter().map(String::as_str).collect();
            let mut answer = vec![false; outcomes.len()];
            for i in first {
                answer[i] = recorded.contains(outcomes[i].receipt.as_str());
            }
            for i in later {
                let o = &outcomes[i];
                answer[i] = self
                    .record_outcome_with_token(
                        &o.receipt,
                        o.status,
                        now,
                        policy,
                        Some(&o.token_hash),
                    )
                    .await?;
            }
            Ok(answer)
        })
    }

    fn fork_claim<'a>(&'a self, e: &'a ForkEntry, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = super::hot::bind_fork_claim(sqlx::query(super::hot::CLAIM_FORK), e, now)
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
                "UPDATE forks SET lease_until = $1 WHERE frontier_key = $2 AND owner = $3 \
                 AND lease_until > $4",
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
            let a = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            let b = sqlx::query("DELETE FROM forks WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            Ok(a.rows_affected() + b.rows_affected())
        })
    }
}

super::tagged::impl_tagged_store!(PgStore, sqlx::postgres::PgRow, false);
super::payments::impl_payment_store!(PgStore, sqlx::postgres::PgRow, false);
super::cursor::impl_cursor_store!(PgStore, false);
super::revenue::impl_revenue_store!(PgStore, false);
super::refunds::impl_refund_store!(PgStore, sqlx::postgres::PgRow, false);
super::passes::impl_pass_store!(PgStore, sqlx::postgres::PgRow, false);
