//! Refunds of owed payments (docs/refunds.md): the `refunds` table and the payment states
//! `refunding` and `refunded`.
//!
//! ```text
//!   owed ──begin (signed send recorded)──► refunding ──confirmed on the ledger──► refunded
//!   owed ──mark (operator's send checked on the ledger)─────────────────────────► refunded
//! ```
//!
//! The intent (the exact signed block and its hash) is written in the same transaction that
//! takes the payment out of `owed`, before anything is published: a refund is built once, and
//! after a crash the same block is published again (the ledger takes an identical block once).
//! Each transition is conditional on the state it leaves, so two operators (or replicas)
//! refunding at once refund once.

use super::StoreFuture;

/// A refund: the send that pays an owed payment back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The owed payment's spent key.
    pub spent_key: String,
    /// Hex hash of the refund's send block.
    pub block_hash: String,
    /// The signed send (nano-node JSON) when the sidecar signed it; `None` when the operator's
    /// wallet sent it.
    pub block: Option<String>,
    /// `nano_` address the refund is sent from (the payment's payee).
    pub source: String,
    /// `nano_` address it is sent to (the payment's payer).
    pub destination: String,
    /// Raw, decimal.
    pub amount: String,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
}

pub trait RefundStore: Send + Sync {
    /// `owed → refunding`, recording `r` (with its signed block) in the same transaction.
    /// `false` = the payment is not owed (any more): nothing recorded.
    fn begin_refund<'a>(&'a self, r: &'a Refund, now: i64) -> StoreFuture<'a, bool>;

    /// `refunding → refunded` once the refund's block is confirmed. `false` = not refunding.
    fn finish_refund<'a>(&'a self, spent_key: &'a str, now: i64) -> StoreFuture<'a, bool>;

    /// `owed → refunded` with a send the operator's wallet made (already checked confirmed on
    /// the ledger). `false` = the payment is not owed, or the block already pays a refund.
    fn record_wallet_refund<'a>(&'a self, r: &'a Refund, now: i64) -> StoreFuture<'a, bool>;

    /// The refund of a payment, if one was begun or recorded.
    fn refund<'a>(&'a self, spent_key: &'a str) -> StoreFuture<'a, Option<Refund>>;

    /// The refund a block pays, if any.
    fn refund_by_block<'a>(&'a self, block_hash: &'a str) -> StoreFuture<'a, Option<Refund>>;

    /// Refunds begun and not yet confirmed (payments in `refunding`).
    fn refunds_in_flight(&self) -> StoreFuture<'_, Vec<Refund>>;
}

/// Implements [`RefundStore`] for a backend struct with a `pool` field; the SQL is shared.
macro_rules! impl_refund_store {
    ($store:ty, $row:ty, $sqlite:expr) => {
        const _: () = {
            use sqlx::Row;
            use $crate::store::refunds::{Refund, RefundStore};
            use $crate::store::tagged::sql;
            use $crate::store::StoreFuture;

            const COLS: &str = "r.spent_key, r.block_hash, r.block, r.source, r.destination, \
                 r.amount, r.created_at, r.confirmed_at";

            fn refund_row(row: &$row) -> Result<Refund, sqlx::Error> {
                Ok(Refund {
                    spent_key: row.try_get("spent_key")?,
                    block_hash: row.try_get("block_hash")?,
                    block: row.try_get("block")?,
                    source: row.try_get("source")?,
                    destination: row.try_get("destination")?,
                    amount: row.try_get("amount")?,
                    created_at: row.try_get("created_at")?,
                    confirmed_at: row.try_get("confirmed_at")?,
                })
            }

            impl $store {
                /// `owed → to` and the refund row, in one transaction.
                async fn leave_owed(
                    &self,
                    r: &Refund,
                    to: &str,
                    now: i64,
                    confirmed_at: Option<i64>,
                ) -> Result<bool, sqlx::Error> {
                    let mut tx = self.pool.begin().await?;
                    let moved = sqlx::query(&sql(
                        "UPDATE payments SET state = $1, updated_at = $2 \
                         WHERE spent_key = $3 AND state = 'owed'",
                        $sqlite,
                    ))
                    .bind(to)
                    .bind(now)
                    .bind(&r.spent_key)
                    .execute(&mut *tx)
                    .await?;
                    if moved.rows_affected() != 1 {
                        return Ok(false);
                    }
                    let inserted = sqlx::query(&sql(
                        "INSERT INTO refunds (spent_key, block_hash, block, source, destination, \
                           amount, created_at, confirmed_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                        $sqlite,
                    ))
                    .bind(&r.spent_key)
                    .bind(&r.block_hash)
                    .bind(&r.block)
                    .bind(&r.source)
                    .bind(&r.destination)
                    .bind(&r.amount)
                    .bind(now)
                    .bind(confirmed_at)
                    .execute(&mut *tx)
                    .await?;
                    if inserted.rows_affected() != 1 {
                        // The block already pays another refund (or a stale row remains):
                        // the transaction is dropped, the payment stays owed.
                        return Ok(false);
                    }
                    tx.commit().await?;
                    Ok(true)
                }
            }

            impl RefundStore for $store {
                fn begin_refund<'a>(&'a self, r: &'a Refund, now: i64) -> StoreFuture<'a, bool> {
                    Box::pin(async move { Ok(self.leave_owed(r, "refunding", now, None).await?) })
                }

                fn finish_refund<'a>(
                    &'a self,
                    spent_key: &'a str,
                    now: i64,
                ) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await?;
                        let moved = sqlx::query(&sql(
                            "UPDATE payments SET state = 'refunded', updated_at = $1 \
                             WHERE spent_key = $2 AND state = 'refunding'",
                            $sqlite,
                        ))
                        .bind(now)
                        .bind(spent_key)
                        .execute(&mut *tx)
                        .await?;
                        if moved.rows_affected() != 1 {
                            return Ok(false);
                        }
                        sqlx::query(&sql(
                            "UPDATE refunds SET confirmed_at = $1 WHERE spent_key = $2",
                            $sqlite,
                        ))
                        .bind(now)
                        .bind(spent_key)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Ok(true)
                    })
                }

                fn record_wallet_refund<'a>(
                    &'a self,
                    r: &'a Refund,
                    now: i64,
                ) -> StoreFuture<'a, bool> {
                    Box::pin(
                        async move { Ok(self.leave_owed(r, "refunded", now, Some(now)).await?) },
                    )
                }

                fn refund<'a>(&'a self, spent_key: &'a str) -> StoreFuture<'a, Option<Refund>> {
                    Box::pin(async move {
                        let row = sqlx::query(&sql(
                            &format!("SELECT {COLS} FROM refunds r WHERE r.spent_key = $1"),
                            $sqlite,
                        ))
                        .bind(spent_key)
                        .fetch_optional(&self.pool)
                        .await?;
                        Ok(row.as_ref().map(refund_row).transpose()?)
                    })
                }

                fn refund_by_block<'a>(
                    &'a self,
                    block_hash: &'a str,
                ) -> StoreFuture<'a, Option<Refund>> {
                    Box::pin(async move {
                        let row = sqlx::query(&sql(
                            &format!("SELECT {COLS} FROM refunds r WHERE r.block_hash = $1"),
                            $sqlite,
                        ))
                        .bind(block_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                        Ok(row.as_ref().map(refund_row).transpose()?)
                    })
                }

                fn refunds_in_flight(&self) -> StoreFuture<'_, Vec<Refund>> {
                    Box::pin(async move {
                        let rows = sqlx::query(&format!(
                                                    "SELECT {COLS} FROM refunds r JOIN payments p \
                               ON p.spent_key = r.spent_key \
                             WHERE p.state = 'refunding' ORDER BY r.created_at, r.spent_key"
                                                ))
                        .fetch_all(&self.pool)
                        .await?;
                        let mut out = Vec::with_capacity(rows.len());
                        for row in &rows {
                            out.push(refund_row(row)?);
                        }
                        Ok(out)
                    })
                }
            }
        };
    };
}
pub(crate) use impl_refund_store;
