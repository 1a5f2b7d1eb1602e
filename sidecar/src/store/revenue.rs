//! Revenue: the payment ledger summed per UTC day, route (the resource or scope paid for) and
//! payee account, in the store (one grouped query), for `GET /v1/admin/revenue`, the admin CLI
//! and the dashboard.

use super::payments::PaymentState;
use super::StoreFuture;

/// Which payments to sum.
#[derive(Debug, Clone)]
pub struct RevenueQuery {
    /// Only payments in this state (revenue proper is `served`: they bought a response).
    pub state: PaymentState,
    /// Settled at or after (unix seconds).
    pub since: Option<i64>,
    /// Settled before (unix seconds).
    pub until: Option<i64>,
}

/// The count and raw sum of one (day, route, payee) group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueGroup {
    /// Days since 1970-01-01 (UTC) of the settlements.
    pub day: i64,
    /// The resource (signed block) or route scope (tagged) paid for.
    pub route: String,
    /// `nano_` address (empty for rows from before the ledger kept it).
    pub pay_to: String,
    pub count: u64,
    pub raw: u128,
}

pub trait RevenueStore: Send + Sync {
    /// The groups, ordered by day, route, payee.
    fn revenue<'a>(&'a self, q: &'a RevenueQuery) -> StoreFuture<'a, Vec<RevenueGroup>>;
}

/// Implements [`RevenueStore`] for a backend struct with a `pool` field. Amounts are decimal
/// text: PostgreSQL sums them as `NUMERIC`; SQLite (no 128-bit integers) sums 12-digit limbs
/// exactly, as [`super::payments`] does for the per-state totals.
macro_rules! impl_revenue_store {
    ($store:ty, $sqlite:expr) => {
        const _: () = {
            use sqlx::Row;
            use $crate::store::payments::{from_limbs, PaymentState};
            use $crate::store::revenue::{RevenueGroup, RevenueQuery, RevenueStore};
            use $crate::store::tagged::sql;
            use $crate::store::StoreFuture;

            const SUMS_SQLITE: &str = "SUM(CAST(substr(amount, -12) AS INTEGER)) AS lo, \
                 SUM(CAST(CASE WHEN length(amount) > 12 THEN substr(amount, -24, 12) \
                   ELSE '0' END AS INTEGER)) AS mid, \
                 SUM(CAST(CASE WHEN length(amount) > 24 THEN \
                   substr(amount, 1, length(amount) - 24) ELSE '0' END AS INTEGER)) AS hi";
            const SUMS_PG: &str = "SUM(CAST(amount AS NUMERIC))::TEXT AS raw";

            impl RevenueStore for $store {
                fn revenue<'a>(
                    &'a self,
                    q: &'a RevenueQuery,
                ) -> StoreFuture<'a, Vec<RevenueGroup>> {
                    Box::pin(async move {
                        let text = format!(
                            "SELECT CAST(settled_at / 86400 AS BIGINT) AS day, \
                               resource, pay_to, COUNT(*) AS n, {} \
                             FROM payments WHERE state = $1 \
                               AND ($2 IS NULL OR settled_at >= $2) \
                               AND ($3 IS NULL OR settled_at < $3) \
                             GROUP BY 1, resource, pay_to ORDER BY 1, resource, pay_to",
                            if $sqlite { SUMS_SQLITE } else { SUMS_PG }
                        );
                        let rows = sqlx::query(&sql(&text, $sqlite))
                            .bind(PaymentState::as_str(q.state))
                            .bind(q.since)
                            .bind(q.until)
                            .fetch_all(&self.pool)
                            .await?;
                        let mut out = Vec::with_capacity(rows.len());
                        for row in &rows {
                            let raw = if $sqlite {
                                let lo: Option<i64> = row.try_get("lo")?;
                                let mid: Option<i64> = row.try_get("mid")?;
                                let hi: Option<i64> = row.try_get("hi")?;
                                from_limbs(lo.unwrap_or(0), mid.unwrap_or(0), hi.unwrap_or(0))
                            } else {
                                let raw: Option<String> = row.try_get("raw")?;
                                raw.and_then(|r| r.parse().ok()).unwrap_or(0)
                            };
                            let n: i64 = row.try_get("n")?;
                            out.push(RevenueGroup {
                                day: row.try_get("day")?,
                                route: row.try_get("resource")?,
                                pay_to: row.try_get("pay_to")?,
                                count: u64::try_from(n).unwrap_or(0),
                                raw,
                            });
                        }
                        Ok(out)
                    })
                }
            }
        };
    };
}
pub(crate) use impl_revenue_store;
