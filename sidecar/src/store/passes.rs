//! Prepaid passes (`passes`, migration 0007; docs/passes.md): recorded when their payment is
//! admitted, counted from the filters' usage reports, listed and revoked by the operator.
//!
//! Recording is `INSERT … ON CONFLICT (payment) DO NOTHING` then a read of the payment's row (so
//! replicas racing on one payment record one pass). A count is one transaction (migration 0009):
//! the pass row locked, the reporting VM's running total kept if higher (`pass_usage`), then the
//! pass's total set to the sum of its VMs' and its exhaustion marked together.

use super::StoreFuture;

/// A pass to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPass {
    pub id: String,
    /// The paying payment's ledger key (`network:HASH`).
    pub payment: String,
    pub name: String,
    pub group: String,
    pub payer: String,
    pub transaction: String,
    pub key_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub requests_granted: Option<i64>,
}

/// A recorded pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassRecord {
    pub pass: NewPass,
    pub requests_used: i64,
    pub exhausted_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl PassRecord {
    /// `revoked`, `exhausted`, `expired` or `active`, in that precedence.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.exhausted_at.is_some() {
            "exhausted"
        } else if self.pass.expires_at <= now {
            "expired"
        } else {
            "active"
        }
    }
}

/// The states `GET /v1/admin/passes?state=` filters on.
pub const PASS_STATES: [&str; 4] = ["active", "expired", "exhausted", "revoked"];

/// A page of passes, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassQuery {
    pub group: Option<String>,
    /// One of [`PASS_STATES`].
    pub state: Option<String>,
    pub limit: i64,
    /// Passes created before this `(created_at, id)` only.
    pub before: Option<(i64, String)>,
    pub now: i64,
}

pub trait PassStore: Send + Sync {
    /// Records the pass unless its payment already has one; returns the payment's pass.
    fn record_pass<'a>(&'a self, p: &'a NewPass) -> StoreFuture<'a, PassRecord>;

    /// Records that filter VM `vm` has served `seen` requests on a pass since it started (kept
    /// only if higher than what it reported before, so a report repeated after a lost answer
    /// counts once), sets the pass's total to the sum over its VMs and marks it exhausted once
    /// that reaches its grant. Returns `(total, requests added by this report)`, `None` for an
    /// unknown id.
    fn add_pass_usage<'a>(
        &'a self,
        id: &'a str,
        vm: &'a str,
        seen: i64,
        now: i64,
    ) -> StoreFuture<'a, Option<(i64, i64)>>;

    /// Unexpired passes to refuse: `(exhausted ids, revoked ids)`, newest first, at most
    /// `limit` each.
    fn refused_passes(&self, now: i64, limit: i64) -> StoreFuture<'_, (Vec<String>, Vec<String>)>;

    fn list_passes<'a>(&'a self, q: &'a PassQuery) -> StoreFuture<'a, Vec<PassRecord>>;

    /// Revokes a pass (the first revocation's time stays); `None` for an unknown id.
    fn revoke_pass<'a>(&'a self, id: &'a str, now: i64) -> StoreFuture<'a, Option<PassRecord>>;
}

/// The SQL condition of a state (`$1` is `now`).
fn state_condition(state: &str) -> &'static str {
    match state {
        "revoked" => "revoked_at IS NOT NULL",
        "exhausted" => "revoked_at IS NULL AND exhausted_at IS NOT NULL",
        "expired" => "revoked_at IS NULL AND exhausted_at IS NULL AND expires_at <= $1",
        _ => "revoked_at IS NULL AND exhausted_at IS NULL AND expires_at > $1",
    }
}

/// The `WHERE` clause of a [`PassQuery`]: `$1` now, `$2` group (`''`: any), `$3`/`$4` the
/// cursor (`$4` `''`: none). Every parameter appears whatever the query (PostgreSQL refuses
/// parameters a statement does not use).
pub(crate) fn list_where(q: &PassQuery) -> String {
    let mut w = String::from(
        "WHERE CAST($1 AS BIGINT) IS NOT NULL AND ($2 = '' OR group_name = $2) \
         AND ($4 = '' OR created_at < $3 OR (created_at = $3 AND id < $4))",
    );
    if let Some(s) = &q.state {
        w.push_str(" AND ");
        w.push_str(state_condition(s));
    }
    w
}

pub(crate) const PASS_COLUMNS: &str = "id, payment, name, group_name, payer, transaction_hash, \
     key_id, created_at, expires_at, requests_granted, requests_used, exhausted_at, revoked_at";

/// Implements [`PassStore`] for a backend struct with a `pool` field; the SQL is shared.
macro_rules! impl_pass_store {
    ($store:ty, $row:ty, $sqlite:expr) => {
        const _: () = {
            use sqlx::Row;
            use $crate::store::passes::{
                list_where, NewPass, PassQuery, PassRecord, PassStore, PASS_COLUMNS,
            };
            use $crate::store::tagged::sql;
            use $crate::store::{StoreError, StoreFuture};

            fn record(row: &$row) -> Result<PassRecord, StoreError> {
                Ok(PassRecord {
                    pass: NewPass {
                        id: row.try_get("id")?,
                        payment: row.try_get("payment")?,
                        name: row.try_get("name")?,
                        group: row.try_get("group_name")?,
                        payer: row.try_get("payer")?,
                        transaction: row.try_get("transaction_hash")?,
                        key_id: row.try_get("key_id")?,
                        created_at: row.try_get("created_at")?,
                        expires_at: row.try_get("expires_at")?,
                        requests_granted: row.try_get("requests_granted")?,
                    },
                    requests_used: row.try_get("requests_used")?,
                    exhausted_at: row.try_get("exhausted_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            }

            impl PassStore for $store {
                fn record_pass<'a>(&'a self, p: &'a NewPass) -> StoreFuture<'a, PassRecord> {
                    Box::pin(async move {
                        sqlx::query(&sql(
                            "INSERT INTO passes (id, payment, name, group_name, payer, \
                             transaction_hash, key_id, created_at, expires_at, requests_granted) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                             ON CONFLICT (payment) DO NOTHING",
                            $sqlite,
                        ))
                        .bind(&p.id)
                        .bind(&p.payment)
                        .bind(&p.name)
                        .bind(&p.group)
                        .bind(&p.payer)
                        .bind(&p.transaction)
                        .bind(p.key_id)
                        .bind(p.created_at)
                        .bind(p.expires_at)
                        .bind(p.requests_granted)
                        .execute(&self.pool)
                        .await?;
                        let row = sqlx::query(&sql(
                            &format!("SELECT {PASS_COLUMNS} FROM passes WHERE payment = $1"),
                            $sqlite,
                        ))
                        .bind(&p.payment)
                        .fetch_one(&self.pool)
                        .await?;
                        record(&row)
                    })
                }

                fn add_pass_usage<'a>(
                    &'a self,
                    id: &'a str,
                    vm: &'a str,
                    seen: i64,
                    now: i64,
                ) -> StoreFuture<'a, Option<(i64, i64)>> {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await?;
                        // The pass row is locked first (PostgreSQL; SQLite has one writer), so
                        // two VMs' reports on one pass sum each other's rows, never a stale set.
                        let lock = if $sqlite { "" } else { " FOR UPDATE" };
                        let before: Option<(i64,)> = sqlx::query_as(&sql(
                            &format!("SELECT requests_used FROM passes WHERE id = $1{lock}"),
                            $sqlite,
                        ))
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let Some((before,)) = before else {
                            return Ok(None);
                        };
                        sqlx::query(&sql(
                            "INSERT INTO pass_usage (pass, vm, seen) VALUES ($1, $2, $3) \
                             ON CONFLICT (pass, vm) DO UPDATE SET seen = CASE \
                               WHEN excluded.seen > pass_usage.seen THEN excluded.seen \
                               ELSE pass_usage.seen END",
                            $sqlite,
                        ))
                        .bind(id)
                        .bind(vm)
                        .bind(seen)
                        .execute(&mut *tx)
                        .await?;
                        let (after,): (i64,) = sqlx::query_as(&sql(
                            "UPDATE passes SET \
                             requests_used = (SELECT SUM(seen) FROM pass_usage WHERE pass = $1), \
                             exhausted_at = CASE WHEN exhausted_at IS NULL \
                               AND requests_granted IS NOT NULL \
                               AND (SELECT SUM(seen) FROM pass_usage WHERE pass = $1) \
                                 >= requests_granted THEN $2 \
                               ELSE exhausted_at END \
                             WHERE id = $1 RETURNING requests_used",
                            $sqlite,
                        ))
                        .bind(id)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Ok(Some((after, after - before)))
                    })
                }

                fn refused_passes(
                    &self,
                    now: i64,
                    limit: i64,
                ) -> StoreFuture<'_, (Vec<String>, Vec<String>)> {
                    Box::pin(async move {
                        let exhausted: Vec<(String,)> = sqlx::query_as(&sql(
                            "SELECT id FROM passes WHERE exhausted_at IS NOT NULL \
                             AND expires_at > $1 ORDER BY exhausted_at DESC LIMIT $2",
                            $sqlite,
                        ))
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                        let revoked: Vec<(String,)> = sqlx::query_as(&sql(
                            "SELECT id FROM passes WHERE revoked_at IS NOT NULL \
                             AND expires_at > $1 ORDER BY revoked_at DESC LIMIT $2",
                            $sqlite,
                        ))
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                        Ok((
                            exhausted.into_iter().map(|r| r.0).collect(),
                            revoked.into_iter().map(|r| r.0).collect(),
                        ))
                    })
                }

                fn list_passes<'a>(
                    &'a self,
                    q: &'a PassQuery,
                ) -> StoreFuture<'a, Vec<PassRecord>> {
                    Box::pin(async move {
                        let text = format!(
                            "SELECT {PASS_COLUMNS} FROM passes {} \
                             ORDER BY created_at DESC, id DESC LIMIT $5",
                            list_where(q)
                        );
                        let (before_at, before_id) = q.before.clone().unwrap_or_default();
                        let rows = sqlx::query(&sql(&text, $sqlite))
                            .bind(q.now)
                            .bind(q.group.clone().unwrap_or_default())
                            .bind(before_at)
                            .bind(before_id)
                            .bind(q.limit)
                            .fetch_all(&self.pool)
                            .await?;
                        rows.iter().map(record).collect()
                    })
                }

                fn revoke_pass<'a>(
                    &'a self,
                    id: &'a str,
                    now: i64,
                ) -> StoreFuture<'a, Option<PassRecord>> {
                    Box::pin(async move {
                        sqlx::query(&sql(
                            "UPDATE passes SET revoked_at = COALESCE(revoked_at, $1) \
                             WHERE id = $2",
                            $sqlite,
                        ))
                        .bind(now)
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                        let row = sqlx::query(&sql(
                            &format!("SELECT {PASS_COLUMNS} FROM passes WHERE id = $1"),
                            $sqlite,
                        ))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.as_ref().map(record).transpose()
                    })
                }
            }
        };
    };
}
pub(crate) use impl_pass_store;
