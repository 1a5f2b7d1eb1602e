//! Store operations of the tagged-session mechanism: sessions with a
//! store-enforced unique amount per payee account, their payment and single consumption, and
//! the listing of stray payments (owed rows of the payment ledger, see [`super::payments`]).
//!
//! Uniqueness across replicas: issuing a session first claims `(pay_to, amount)` in
//! `tag_claims` with an atomic upsert that only takes over a claim whose session has expired,
//! so two open sessions on one account never share an amount. Consumption is one transaction:
//! the session's `consumed_hash` is set only if it is still empty (conditional `UPDATE`), and
//! the block is inserted into the **same** payment ledger as signed-block payments
//! (`network:HASH`, insert-if-absent), so a block can never be consumed twice, whichever
//! mechanism presents it. The exceptions to insert-if-absent, tagged rows only: a send recorded
//! `owed` by the tagged mechanism (e.g. first presented with the wrong session) that then buys
//! its own session takes that row over (`owed → admitted`), and so does the first presentation
//! of a send the watcher matched to this very session (recorded `redeemable` when it marked the
//! session paid, never redeemed: `redeemable → admitted`; the session's `consumed_hash`, set in
//! the same transaction, makes this happen once).

use super::{Consumption, StoreFuture};

/// One issued session. Amounts are raw decimal strings, `pay_to` the payee's public key hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedSession {
    /// 32 lower-hex characters (128 random bits); also the challenge nonce.
    pub id: String,
    pub pay_to: String,
    pub amount: String,
    /// What the session is for (the filter's route scope, or a pass scope); a payment is
    /// admitted only for this resource.
    pub scope: String,
    pub issued_at: i64,
    pub valid_before: i64,
    /// The confirmed send the watcher (or a presentation) matched to this session.
    pub paid_hash: Option<String>,
    pub paid_at: Option<i64>,
    /// The block that consumed this session.
    pub consumed_hash: Option<String>,
    /// Kept (for late-payment reports) until then.
    pub keep_until: i64,
}

/// A payment to a session account that bought nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrayPayment {
    pub hash: String,
    pub pay_to: String,
    pub amount: String,
    pub payer: String,
    /// `wrong_amount`, `unknown_session`, `unmatched`, `late`, `too_early`, `session_used`.
    pub reason: String,
    pub session_id: Option<String>,
    pub seen_at: i64,
}

/// The outcome of [`TaggedStore::consume_tagged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaggedConsume {
    Consumed,
    /// The block is already in the spent set (any mechanism, any replica).
    Spent,
    /// The session was already consumed by another block.
    SessionUsed,
}

pub trait TaggedStore: Send + Sync {
    /// Issues a session if its `(pay_to, amount)` is free (no open session holds it):
    /// `false` = taken, pick another tag.
    fn issue_session<'a>(&'a self, s: &'a TaggedSession, now: i64) -> StoreFuture<'a, bool>;

    fn session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<TaggedSession>>;

    /// The most recently issued session for exactly this payee and amount.
    fn session_by_amount<'a>(
        &'a self,
        pay_to: &'a str,
        amount: &'a str,
    ) -> StoreFuture<'a, Option<TaggedSession>>;

    /// Marks a session paid by `hash` unless it already is (`true` = marked now) and, in the
    /// same transaction, records the send in the payment ledger as `paid` says (`redeemable`:
    /// settled, not served yet) unless the ledger already has it. A send we know of is never
    /// in no state, even if its payer never presents it.
    fn mark_session_paid<'a>(
        &'a self,
        paid: &'a Consumption,
        session_id: &'a str,
        hash: &'a str,
    ) -> StoreFuture<'a, bool>;

    /// Consumes the session with `c.spent_key`'s block, atomically (see the module docs).
    fn consume_tagged<'a>(
        &'a self,
        c: &'a Consumption,
        session_id: &'a str,
        hash: &'a str,
    ) -> StoreFuture<'a, TaggedConsume>;

    /// The latest stray payments (owed tagged rows), newest first.
    fn strays(&self, limit: i64) -> StoreFuture<'_, Vec<StrayPayment>>;

    /// Deletes sessions past their retention and expired tag claims.
    fn prune_tagged(&self, now: i64) -> StoreFuture<'_, u64>;

    /// The payee accounts (hex keys) of sessions still open at `now` (watched after a restart).
    fn open_session_accounts(&self, now: i64) -> StoreFuture<'_, Vec<String>>;
}

/// `$1`-style SQL as the backend wants it (SQLite reads `?1`).
pub(crate) fn sql(q: &str, sqlite: bool) -> std::borrow::Cow<'_, str> {
    if sqlite {
        std::borrow::Cow::Owned(q.replace('$', "?"))
    } else {
        std::borrow::Cow::Borrowed(q)
    }
}

/// Implements [`TaggedStore`] for a backend struct with a `pool` field; the SQL is shared.
macro_rules! impl_tagged_store {
    ($store:ty, $row:ty, $sqlite:expr) => {
        const _: () = {
            use $crate::store::tagged::{
                sql, StrayPayment, TaggedConsume, TaggedSession, TaggedStore,
            };
            use $crate::store::hot::bind_consumption;
            use $crate::store::{Consumption, StoreFuture};
            use sqlx::Row;

            const SESSION_COLS: &str = "id, pay_to, amount, scope, issued_at, valid_before, \
                 paid_hash, paid_at, consumed_hash, keep_until";

            fn session_row(row: &$row) -> Result<TaggedSession, sqlx::Error> {
                Ok(TaggedSession {
                    id: row.try_get("id")?,
                    pay_to: row.try_get("pay_to")?,
                    amount: row.try_get("amount")?,
                    scope: row.try_get("scope")?,
                    issued_at: row.try_get("issued_at")?,
                    valid_before: row.try_get("valid_before")?,
                    paid_hash: row.try_get("paid_hash")?,
                    paid_at: row.try_get("paid_at")?,
                    consumed_hash: row.try_get("consumed_hash")?,
                    keep_until: row.try_get("keep_until")?,
                })
            }

            impl TaggedStore for $store {
                fn issue_session<'a>(
                    &'a self,
                    s: &'a TaggedSession,
                    now: i64,
                ) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await?;
                        let claimed = sqlx::query(&sql(
                            "INSERT INTO tag_claims (pay_to, amount, session_id, until_ts) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (pay_to, amount) DO UPDATE \
                             SET session_id = excluded.session_id, until_ts = excluded.until_ts \
                             WHERE tag_claims.until_ts <= $5",
                            $sqlite,
                        ))
                        .bind(&s.pay_to)
                        .bind(&s.amount)
                        .bind(&s.id)
                        .bind(s.valid_before)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        if claimed.rows_affected() != 1 {
                            tx.rollback().await?;
                            return Ok(false);
                        }
                        sqlx::query(&sql(
                            "INSERT INTO tagged_sessions (id, pay_to, amount, scope, issued_at, \
                             valid_before, keep_until) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                            $sqlite,
                        ))
                        .bind(&s.id)
                        .bind(&s.pay_to)
                        .bind(&s.amount)
                        .bind(&s.scope)
                        .bind(s.issued_at)
                        .bind(s.valid_before)
                        .bind(s.keep_until)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Ok(true)
                    })
                }

                fn session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<TaggedSession>> {
                    Box::pin(async move {
                        let q = format!("SELECT {SESSION_COLS} FROM tagged_sessions WHERE id = $1");
                        let row = sqlx::query(&sql(&q, $sqlite))
                            .bind(id)
                            .fetch_optional(&self.readers)
                            .await?;
                        Ok(row.as_ref().map(session_row).transpose()?)
                    })
                }

                fn session_by_amount<'a>(
                    &'a self,
                    pay_to: &'a str,
                    amount: &'a str,
                ) -> StoreFuture<'a, Option<TaggedSession>> {
                    Box::pin(async move {
                        let q = format!(
                            "SELECT {SESSION_COLS} FROM tagged_sessions \
                             WHERE pay_to = $1 AND amount = $2 ORDER BY issued_at DESC LIMIT 1"
                        );
                        let row = sqlx::query(&sql(&q, $sqlite))
                            .bind(pay_to)
                            .bind(amount)
                            .fetch_optional(&self.readers)
                            .await?;
                        Ok(row.as_ref().map(session_row).transpose()?)
                    })
                }

                fn mark_session_paid<'a>(
                    &'a self,
                    paid: &'a Consumption,
                    session_id: &'a str,
                    hash: &'a str,
                ) -> StoreFuture<'a, bool> {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await?;
                        let done = sqlx::query(&sql(
                            "UPDATE tagged_sessions SET paid_hash = $1, paid_at = $2 \
                             WHERE id = $3 AND paid_hash IS NULL",
                            $sqlite,
                        ))
                        .bind(hash)
                        .bind(paid.now)
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() != 1 {
                            tx.rollback().await?;
                            return Ok(false);
                        }
                        let record = sql(
                            "INSERT INTO payments (spent_key, receipt, mechanism, payer, pay_to, \
                               amount, resource, nonce, state, reason, settled_at, updated_at, \
                               lease_until, redemptions) \
                             VALUES ($1, $2, 'tagged', $3, $4, $5, $6, $7, $8, NULL, $9, $9, \
                               $10, 0) \
                             ON CONFLICT (spent_key) DO NOTHING",
                            $sqlite,
                        );
                        bind_consumption(sqlx::query(&record), paid)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        Ok(true)
                    })
                }

                fn consume_tagged<'a>(
                    &'a self,
                    c: &'a Consumption,
                    session_id: &'a str,
                    hash: &'a str,
                ) -> StoreFuture<'a, TaggedConsume> {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await?;
                        let used = sqlx::query(&sql(
                            "UPDATE tagged_sessions SET consumed_hash = $1, \
                               paid_hash = COALESCE(paid_hash, $1), \
                               paid_at = COALESCE(paid_at, $2) \
                             WHERE id = $3 AND consumed_hash IS NULL",
                            $sqlite,
                        ))
                        .bind(hash)
                        .bind(c.now)
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await?;
                        if used.rows_affected() != 1 {
                            tx.rollback().await?;
                            return Ok(TaggedConsume::SessionUsed);
                        }
                        let record = sql(
                            "INSERT INTO payments (spent_key, receipt, mechanism, payer, pay_to, \
                               amount, resource, nonce, state, reason, settled_at, updated_at, \
                               lease_until, redemptions, admission_token) \
                             VALUES ($1, $2, 'tagged', $3, $4, $5, $6, $7, $8, NULL, $9, $9, \
                               $10, 0, $11) \
                             ON CONFLICT (spent_key) DO UPDATE SET receipt = excluded.receipt, \
                               admission_token = excluded.admission_token, \
                               payer = excluded.payer, pay_to = excluded.pay_to, \
                               amount = excluded.amount, resource = excluded.resource, \
                               nonce = excluded.nonce, state = excluded.state, reason = NULL, \
                               settled_at = excluded.settled_at, \
                               updated_at = excluded.updated_at, \
                               lease_until = excluded.lease_until, redemptions = 0 \
                             WHERE payments.mechanism = 'tagged' AND (payments.state = 'owed' \
                               OR (payments.state = 'redeemable' AND payments.redemptions = 0 \
                                   AND payments.nonce = excluded.nonce))",
                            $sqlite,
                        );
                        let spent = bind_consumption(sqlx::query(&record), c)
                            .bind(&c.admission_token)
                            .execute(&mut *tx)
                            .await?;
                        if spent.rows_affected() != 1 {
                            tx.rollback().await?;
                            return Ok(TaggedConsume::Spent);
                        }
                        tx.commit().await?;
                        Ok(TaggedConsume::Consumed)
                    })
                }

                fn strays(&self, limit: i64) -> StoreFuture<'_, Vec<StrayPayment>> {
                    Box::pin(async move {
                        let rows = sqlx::query(&sql(
                            "SELECT spent_key, pay_to, amount, payer, reason, nonce, settled_at \
                             FROM payments WHERE state = 'owed' AND mechanism = 'tagged' \
                             ORDER BY settled_at DESC, spent_key LIMIT $1",
                            $sqlite,
                        ))
                        .bind(limit)
                        .fetch_all(&self.readers)
                        .await?;
                        let mut out = Vec::with_capacity(rows.len());
                        for row in &rows {
                            let key: String = row.try_get("spent_key")?;
                            let reason: Option<String> = row.try_get("reason")?;
                            out.push(StrayPayment {
                                hash: key.rsplit_once(':').map_or(key.as_str(), |(_, h)| h).to_owned(),
                                pay_to: row.try_get("pay_to")?,
                                amount: row.try_get("amount")?,
                                payer: row.try_get("payer")?,
                                reason: reason.unwrap_or_default(),
                                session_id: row.try_get("nonce")?,
                                seen_at: row.try_get("settled_at")?,
                            });
                        }
                        Ok(out)
                    })
                }

                fn open_session_accounts(&self, now: i64) -> StoreFuture<'_, Vec<String>> {
                    Box::pin(async move {
                        let rows = sqlx::query(&sql(
                            "SELECT DISTINCT pay_to FROM tagged_sessions WHERE valid_before > $1",
                            $sqlite,
                        ))
                        .bind(now)
                        .fetch_all(&self.readers)
                        .await?;
                        let mut out = Vec::with_capacity(rows.len());
                        for row in &rows {
                            out.push(row.try_get("pay_to")?);
                        }
                        Ok(out)
                    })
                }

                fn prune_tagged(&self, now: i64) -> StoreFuture<'_, u64> {
                    Box::pin(async move {
                        let a = sqlx::query(&sql(
                            "DELETE FROM tagged_sessions WHERE keep_until <= $1",
                            $sqlite,
                        ))
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                        let b = sqlx::query(&sql("DELETE FROM tag_claims WHERE until_ts <= $1", $sqlite))
                            .bind(now)
                            .execute(&self.pool)
                            .await?;
                        Ok(a.rows_affected() + b.rows_affected())
                    })
                }
            }
        };
    };
}
pub(crate) use impl_tagged_store;
