//! Revenue sums (`RevenueStore`, `GET /v1/admin/revenue`) on SQLite and PostgreSQL alike:
//! grouped per UTC day, route and payee, exact beyond 64 bits (SQLite sums 12-digit limbs,
//! PostgreSQL `NUMERIC`), one state at a time, within `since`/`until`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_sidecar::store::revenue::{RevenueGroup, RevenueQuery};
use nanogate_sidecar::store::{self, Consumption, OwedPayment, PaymentState, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

const DAY: i64 = 86_400;
/// A UTC midnight (2026-12-05).
const MIDNIGHT: i64 = 20_792 * DAY;

async fn open(db: &Db) -> Arc<dyn Store> {
    store::open(&db.url(), db.schema().as_deref(), 4)
        .await
        .expect("store opens")
}

struct Paid {
    at: i64,
    route: &'static str,
    payee: &'static str,
    amount: u128,
    state: PaymentState,
}

fn script() -> Vec<Paid> {
    let big = u128::MAX / 3; // 39 digits: all three limbs
    let mut v = Vec::new();
    for (i, amount) in [XNO, XNO / 1000, big, 7, big, 1_000_000_000_000]
        .into_iter()
        .enumerate()
    {
        let i = i64::try_from(i).unwrap();
        v.push(Paid {
            // Two days, the last second of the first one included.
            at: MIDNIGHT + if i % 2 == 0 { DAY - 1 } else { DAY + i },
            route: if i % 3 == 0 {
                "http://api.test/a"
            } else {
                "http://api.test/b"
            },
            payee: if i < 4 { "nano_payee1" } else { "nano_payee2" },
            amount,
            state: PaymentState::Served,
        });
    }
    for (state, amount) in [(PaymentState::Redeemable, 11), (PaymentState::Admitted, 13)] {
        v.push(Paid {
            at: MIDNIGHT + 5,
            route: "http://api.test/a",
            payee: "nano_payee1",
            amount,
            state,
        });
    }
    v
}

async fn record(s: &Arc<dyn Store>, n: usize, p: &Paid) {
    s.consume(&Consumption {
        spent_key: format!("nano:devnet:REV{n}"),
        receipt: format!("rev-receipt{n}"),
        mechanism: SIGNED_BLOCK,
        payer: "nano_payer".into(),
        pay_to: p.payee.into(),
        amount: p.amount,
        resource: p.route.into(),
        nonce: None,
        now: p.at,
        state: p.state,
        lease_until: p.at + 10,
        admission_token: None,
    })
    .await
    .unwrap();
}

fn expected(paid: &[Paid], state: PaymentState, since: Option<i64>) -> Vec<RevenueGroup> {
    let mut m: BTreeMap<(i64, &str, &str), (u64, u128)> = BTreeMap::new();
    for p in paid {
        if p.state != state || since.is_some_and(|s| p.at < s) {
            continue;
        }
        let e = m
            .entry((p.at.div_euclid(DAY), p.route, p.payee))
            .or_default();
        e.0 += 1;
        e.1 += p.amount;
    }
    m.into_iter()
        .map(|((day, route, pay_to), (count, raw))| RevenueGroup {
            day,
            route: route.into(),
            pay_to: pay_to.into(),
            count,
            raw,
        })
        .collect()
}

async fn revenue_groups_per_day_route_and_payee(db: Db) {
    let s = open(&db).await;
    let paid = script();
    for (n, p) in paid.iter().enumerate() {
        record(&s, n, p).await;
    }
    s.record_owed(&OwedPayment {
        spent_key: "nano:devnet:REVOWED".into(),
        mechanism: TAGGED,
        payer: "nano_payer".into(),
        pay_to: "nano_pool".into(),
        amount: "17".into(),
        resource: String::new(),
        nonce: None,
        reason: "late".into(),
        now: MIDNIGHT + 3,
    })
    .await
    .unwrap();
    let q = |state, since, until| RevenueQuery {
        state,
        since,
        until,
    };
    let served = s
        .revenue(&q(PaymentState::Served, None, None))
        .await
        .unwrap();
    assert_eq!(served, expected(&paid, PaymentState::Served, None));
    assert_eq!(served.first().map(|g| g.day), Some(MIDNIGHT / DAY));
    assert!(served.iter().any(|g| g.raw > u128::from(u64::MAX)));
    // One state at a time.
    let owed = s.revenue(&q(PaymentState::Owed, None, None)).await.unwrap();
    assert_eq!(owed.len(), 1);
    assert_eq!(
        (owed[0].count, owed[0].raw, owed[0].route.as_str()),
        (1, 17, "")
    );
    assert_eq!(
        s.revenue(&q(PaymentState::Redeemable, None, None))
            .await
            .unwrap(),
        expected(&paid, PaymentState::Redeemable, None)
    );
    // `since` included, `until` excluded: the second day only, then nothing.
    let day2 = MIDNIGHT + DAY;
    assert_eq!(
        s.revenue(&q(PaymentState::Served, Some(day2), None))
            .await
            .unwrap(),
        expected(&paid, PaymentState::Served, Some(day2))
    );
    assert!(s
        .revenue(&q(PaymentState::Served, None, Some(MIDNIGHT)))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn revenue_groups_per_day_route_and_payee_sqlite() {
    revenue_groups_per_day_route_and_payee(Db::sqlite()).await;
}

#[tokio::test]
async fn revenue_groups_per_day_route_and_payee_postgres() {
    revenue_groups_per_day_route_and_payee(Db::postgres()).await;
}
