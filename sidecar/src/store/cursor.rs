//! Reconciliation cursors (`reconcile_cursors`): how far the sidecar has caught up with each
//! watched payee account's own chain, so a restart resumes where it stopped instead of
//! re-reading the account's history or skipping what happened while it was down.

use super::StoreFuture;

/// One account's cursor. `account` and `head` are hex (public key, block hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileCursor {
    pub account: String,
    /// The last block of the account's chain already handled; `None` before the first pass.
    pub head: Option<String>,
    /// Sends first seen before this (unix s) are older than anything we issued for the account.
    pub since: i64,
}

pub trait CursorStore: Send + Sync {
    fn cursor<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<ReconcileCursor>>;

    /// Creates the cursor unless the account has one (`true` = created).
    fn init_cursor<'a>(&'a self, c: &'a ReconcileCursor, now: i64) -> StoreFuture<'a, bool>;

    /// Moves the account's cursor to `head` (`None`: start again from `since`).
    fn advance_cursor<'a>(
        &'a self,
        account: &'a str,
        head: Option<&'a str>,
        now: i64,
    ) -> StoreFuture<'a, ()>;

    /// The payee accounts of signed-block payments (`nano_` addresses, as the ledger keeps
    /// them), each with the earliest time the sidecar is known to have followed it: its first
    /// recorded payment, or `now` for an account only tracked (`pending_settlements`) so far.
    fn signed_block_payees(&self, now: i64) -> StoreFuture<'_, Vec<(String, i64)>>;
}

/// Implements [`CursorStore`] for a backend struct with a `pool` field; the SQL is shared.
macro_rules! impl_cursor_store {
    ($store:ty, $sqlite:expr) => {
        const _: () = {
            use sqlx::Row;
            use $crate::store::cursor::{CursorStore, ReconcileCursor};
            use $crate::store::tagged::sql;
            use $crate::store::StoreFuture;

            impl CursorStore for $store {
                fn cursor<'a>(
                    &'a self,
                    account: &'a str,
                ) -> StoreFuture<'a, Option<ReconcileCursor>> {
                    Box::pin(async move {
                        let row = sqlx::query(&sql(
                            "SELECT account, head, since_ts FROM reconcile_cursors \
                             WHERE account = $1",
                            $sqlite,
                        ))
                        .bind(account)
                        .fetch_optional(&self.pool)
                        .await?;
                        let Some(row) = row else { return Ok(None) };
                        Ok(Some(ReconcileCursor {
                            account: row.try_get("account")?,
                            head: row.try_get("head")?,
                            since: row.try_get("since_ts")?,
                        }))
                    })
                }

                fn init_cursor<'a>(
                    &'a self,
                    c: &'a ReconcileCursor,
                    now: i64,
                ) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        let done = sqlx::query(&sql(
                            "INSERT INTO reconcile_cursors (account, head, since_ts, updated_at) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (account) DO NOTHING",
                            $sqlite,
                        ))
                        .bind(&c.account)
                        .bind(&c.head)
                        .bind(c.since)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                        Ok(done.rows_affected() == 1)
                    })
                }

                fn advance_cursor<'a>(
                    &'a self,
                    account: &'a str,
                    head: Option<&'a str>,
                    now: i64,
                ) -> StoreFuture<'a, ()> {
                    Box::pin(async move {
                        sqlx::query(&sql(
                            "UPDATE reconcile_cursors SET head = $1, updated_at = $2 \
                             WHERE account = $3",
                            $sqlite,
                        ))
                        .bind(head)
                        .bind(now)
                        .bind(account)
                        .execute(&self.pool)
                        .await?;
                        Ok(())
                    })
                }

                fn signed_block_payees(&self, now: i64) -> StoreFuture<'_, Vec<(String, i64)>> {
                    Box::pin(async move {
                        let rows: Vec<(String, i64)> = sqlx::query_as(&sql(
                            "SELECT pay_to, MIN(since) FROM ( \
                               SELECT pay_to, MIN(settled_at) AS since FROM payments \
                                 WHERE mechanism = 'signed_block' AND pay_to <> '' \
                                 GROUP BY pay_to \
                               UNION ALL SELECT pay_to, CAST($1 AS BIGINT) AS since \
                                 FROM pending_settlements \
                             ) known GROUP BY pay_to",
                            $sqlite,
                        ))
                        .bind(now)
                        .fetch_all(&self.pool)
                        .await?;
                        Ok(rows)
                    })
                }
            }
        };
    };
}
pub(crate) use impl_cursor_store;
