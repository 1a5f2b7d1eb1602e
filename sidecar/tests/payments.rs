//! The payment ledger's states and transitions (docs/payments.md), enforced by the store, on
//! SQLite and PostgreSQL alike: every transition is a conditional update from one state, so an
//! illegal one changes nothing; the states themselves are a CHECK constraint.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_sidecar::store::payments::admission_token_hash;
use nanogate_sidecar::store::{
    self, Consumption, OwedPayment, PaymentQuery, PaymentState, RedeemPolicy, Retention, Store,
};
use std::sync::Arc;

const WINDOW: i64 = 600;
const POLICY: RedeemPolicy = RedeemPolicy {
    max_redemptions: 2,
    window_secs: WINDOW,
};

async fn open(db: &Db) -> Arc<dyn Store> {
    store::open(&db.url(), db.schema().as_deref(), 4)
        .await
        .expect("store opens")
}

fn consumption(n: u32, state: PaymentState, now: i64, lease_until: i64) -> Consumption {
    Consumption {
        spent_key: format!("nano:devnet:HASH{n}"),
        receipt: format!("receipt{n}"),
        mechanism: SIGNED_BLOCK,
        payer: format!("nano_payer{}", n % 3),
        pay_to: "nano_payee".into(),
        amount: 1_000_000_000_000_000_000_000_000_000_000 + u128::from(n),
        resource: format!("http://api.test/r{}", n % 2),
        nonce: Some(format!("nonce{n}")),
        now,
        state,
        lease_until,
        admission_token: None,
    }
}

async fn state(s: &Arc<dyn Store>, n: u32) -> Option<PaymentState> {
    s.spent(&format!("nano:devnet:HASH{n}"))
        .await
        .expect("store")
        .map(|r| r.state)
}

async fn transitions_are_conditional_on_the_state(db: Db) {
    let s = open(&db).await;
    let now = 10_000;
    // consume: insert-if-absent, whatever state the first insert chose.
    assert!(s
        .consume(&consumption(1, PaymentState::Admitted, now, now + 20))
        .await
        .unwrap());
    assert!(!s
        .consume(&consumption(1, PaymentState::Redeemable, now, 0))
        .await
        .unwrap());
    assert_eq!(state(&s, 1).await, Some(PaymentState::Admitted));

    // admitted with a running lease: never redeemed.
    assert!(!s
        .redeem("receipt1", POLICY, now + 19, now + 40)
        .await
        .unwrap());
    // outcome 0 (client reset) and 1..=499: served; served takes no further outcome.
    assert!(s
        .record_outcome("receipt1", 0, now + 1, POLICY)
        .await
        .unwrap());
    assert_eq!(state(&s, 1).await, Some(PaymentState::Served));
    assert!(!s
        .record_outcome("receipt1", 502, now + 2, POLICY)
        .await
        .unwrap());
    assert!(!s.release("receipt1", now + 2, POLICY).await.unwrap());
    assert!(!s
        .redeem("receipt1", POLICY, now + 30, now + 50)
        .await
        .unwrap());
    assert_eq!(state(&s, 1).await, Some(PaymentState::Served));

    // ≥ 500: redeemable; redeem → admitted with a new lease, counted.
    s.consume(&consumption(2, PaymentState::Admitted, now, now + 20))
        .await
        .unwrap();
    assert!(s
        .record_outcome("receipt2", 504, now + 1, POLICY)
        .await
        .unwrap());
    assert_eq!(state(&s, 2).await, Some(PaymentState::Redeemable));
    assert!(!s
        .record_outcome("receipt2", 200, now + 1, POLICY)
        .await
        .unwrap());
    assert!(s
        .redeem("receipt2", POLICY, now + 2, now + 22)
        .await
        .unwrap());
    let rec = s.spent("nano:devnet:HASH2").await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.redemptions, rec.lease_until),
        (PaymentState::Admitted, 1, now + 22)
    );
    // A concurrent second redemption of the same payment loses.
    assert!(!s
        .redeem("receipt2", POLICY, now + 3, now + 23)
        .await
        .unwrap());

    // release: admitted → redeemable (the filter never got the admission); only from admitted.
    assert!(s.release("receipt2", now + 4, POLICY).await.unwrap());
    assert!(!s.release("receipt2", now + 4, POLICY).await.unwrap());
    assert!(s
        .redeem("receipt2", POLICY, now + 5, now + 25)
        .await
        .unwrap());
    // The bound (2 re-redemptions) is reached: not served once more, the payment can buy
    // nothing any more and is owed, never left redeemable.
    assert!(s.release("receipt2", now + 6, POLICY).await.unwrap());
    assert!(!s
        .redeem("receipt2", POLICY, now + 7, now + 27)
        .await
        .unwrap());
    let rec = s.spent("nano:devnet:HASH2").await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.reason.as_deref(), rec.redemptions),
        (PaymentState::Owed, Some("redemptions_exhausted"), 2)
    );

    // The window is measured from settlement, nothing else.
    s.consume(&consumption(3, PaymentState::Redeemable, now, 0))
        .await
        .unwrap();
    assert!(!s
        .redeem("receipt3", POLICY, now + WINDOW, now + WINDOW + 20)
        .await
        .unwrap());
    assert!(s
        .redeem("receipt3", POLICY, now + WINDOW - 1, now + WINDOW + 20)
        .await
        .unwrap());

    // An admitted payment whose lease ended counts as redeemable.
    s.consume(&consumption(4, PaymentState::Admitted, now, now + 20))
        .await
        .unwrap();
    assert!(s
        .redeem("receipt4", POLICY, now + 20, now + 40)
        .await
        .unwrap());

    // owed: recorded once, no receipt, nothing moves it (but a tagged consumption, below).
    let owed = OwedPayment {
        spent_key: "nano:devnet:HASH5".into(),
        mechanism: SIGNED_BLOCK,
        payer: "nano_payer".into(),
        pay_to: "nano_payee".into(),
        amount: "5".into(),
        resource: "http://api.test/r1".into(),
        nonce: None,
        reason: "late".into(),
        now,
    };
    assert!(s.record_owed(&owed).await.unwrap());
    assert!(!s.record_owed(&owed).await.unwrap());
    assert!(!s
        .consume(&consumption(5, PaymentState::Admitted, now, now + 20))
        .await
        .unwrap());
    let rec = s.spent("nano:devnet:HASH5").await.unwrap().unwrap();
    assert_eq!(rec.state, PaymentState::Owed);
    assert_eq!(rec.receipt, None);
    assert_eq!(rec.reason.as_deref(), Some("late"));
    db.cleanup().await;
}

/// An outcome from the filter counts only with the hash of the current admission's token; a
/// redemption replaces it.
async fn outcomes_need_the_current_admission_token(db: Db) {
    let s = open(&db).await;
    let now = 10_000;
    let (first, second) = (
        admission_token_hash("first"),
        admission_token_hash("second"),
    );
    let mut c = consumption(1, PaymentState::Admitted, now, now + 20);
    c.admission_token = Some(first.clone());
    assert!(s.consume(&c).await.unwrap());
    assert_eq!(
        s.admission_token("receipt1").await.unwrap(),
        Some(Some(first.clone()))
    );
    for wrong in [second.as_str(), "", "00"] {
        assert!(!s
            .record_outcome_with_token("receipt1", 502, now + 1, POLICY, Some(wrong))
            .await
            .unwrap());
    }
    assert_eq!(state(&s, 1).await, Some(PaymentState::Admitted));
    assert!(s
        .record_outcome_with_token("receipt1", 502, now + 1, POLICY, Some(&first))
        .await
        .unwrap());
    assert_eq!(
        s.admission_token("receipt1").await.unwrap(),
        None,
        "not admitted"
    );
    assert!(s
        .redeem_with_token("receipt1", POLICY, now + 2, now + 30, Some(&second))
        .await
        .unwrap());
    assert!(!s
        .record_outcome_with_token("receipt1", 200, now + 3, POLICY, Some(&first))
        .await
        .unwrap());
    assert!(s
        .record_outcome_with_token("receipt1", 200, now + 3, POLICY, Some(&second))
        .await
        .unwrap());
    assert_eq!(state(&s, 1).await, Some(PaymentState::Served));
    db.cleanup().await;
}

#[tokio::test]
async fn outcomes_need_the_current_admission_token_sqlite() {
    outcomes_need_the_current_admission_token(Db::sqlite()).await;
}

#[tokio::test]
async fn outcomes_need_the_current_admission_token_postgres() {
    outcomes_need_the_current_admission_token(Db::postgres()).await;
}

/// A batch of outcomes (`Store::record_outcomes`; one statement on PostgreSQL) records each
/// outcome only with its own admission's current token, exactly as one by one: the stale
/// tokens, the unknown receipt and the repeated receipt record nothing; a failure with every
/// redemption used makes the payment owed.
async fn a_batch_of_outcomes_records_only_the_current_tokens(db: Db) {
    let s = open(&db).await;
    let now = 20_000;
    let policy = RedeemPolicy {
        max_redemptions: 1,
        window_secs: WINDOW,
    };
    let token = |n: u32, round: u32| admission_token_hash(&format!("token{n}.{round}"));
    for n in 1..=5 {
        let mut c = consumption(n, PaymentState::Admitted, now, now + 20);
        c.admission_token = Some(token(n, 0));
        assert!(s.consume(&c).await.unwrap());
    }
    // Payment 5 failed once and was redeemed: its first token is stale, its only redemption used.
    assert!(s
        .record_outcome_with_token("receipt5", 502, now + 1, policy, Some(&token(5, 0)))
        .await
        .unwrap());
    assert!(s
        .redeem_with_token("receipt5", policy, now + 2, now + 30, Some(&token(5, 1)))
        .await
        .unwrap());
    let outcome = |n: u32, status: i64, token_hash: String| store::TokenOutcome {
        receipt: format!("receipt{n}"),
        status,
        token_hash,
    };
    let batch = [
        outcome(1, 200, token(1, 0)),
        outcome(2, 502, token(2, 1)),
        outcome(3, 502, token(3, 0)),
        outcome(1, 502, token(1, 0)),
        outcome(4, 200, token(3, 0)),
        outcome(9, 200, token(9, 0)),
        outcome(5, 503, token(5, 0)),
        outcome(5, 504, token(5, 1)),
    ];
    assert_eq!(
        s.record_outcomes(&batch, now + 3, policy).await.unwrap(),
        [true, false, true, false, false, false, false, true]
    );
    assert_eq!(state(&s, 1).await, Some(PaymentState::Served));
    assert_eq!(state(&s, 2).await, Some(PaymentState::Admitted), "stale");
    assert_eq!(state(&s, 3).await, Some(PaymentState::Redeemable));
    assert_eq!(state(&s, 4).await, Some(PaymentState::Admitted), "foreign");
    let five = s.spent("nano:devnet:HASH5").await.unwrap().unwrap();
    assert_eq!(five.state, PaymentState::Owed);
    assert_eq!(five.reason.as_deref(), Some("redemptions_exhausted"));
    assert_eq!(five.updated_at, now + 3);
    assert!(s
        .record_outcomes(&[], now, policy)
        .await
        .unwrap()
        .is_empty());
    db.cleanup().await;
}

#[tokio::test]
async fn a_batch_of_outcomes_records_only_the_current_tokens_sqlite() {
    a_batch_of_outcomes_records_only_the_current_tokens(Db::sqlite()).await;
}

#[tokio::test]
async fn a_batch_of_outcomes_records_only_the_current_tokens_postgres() {
    a_batch_of_outcomes_records_only_the_current_tokens(Db::postgres()).await;
}

/// A consumption's fields land in their own columns (the statement binds them by position).
async fn a_consumption_is_recorded_field_for_field(db: Db) {
    let s = open(&db).await;
    let mut c = consumption(7, PaymentState::Admitted, 1_000, 1_030);
    c.admission_token = Some(admission_token_hash("token7"));
    assert!(s.consume(&c).await.unwrap());
    let r = s.spent(&c.spent_key).await.unwrap().expect("recorded");
    assert_eq!(r.receipt.as_deref(), Some(c.receipt.as_str()));
    assert_eq!(r.mechanism, c.mechanism);
    assert_eq!(r.payer, c.payer);
    assert_eq!(r.pay_to, c.pay_to);
    assert_eq!(r.amount, c.amount.to_string());
    assert_eq!(r.resource, c.resource);
    assert_eq!(r.nonce, c.nonce);
    assert_eq!(r.state, c.state);
    assert_eq!((r.settled_at, r.updated_at), (c.now, c.now));
    assert_eq!(r.lease_until, c.lease_until);
    assert_eq!(
        s.admission_token(&c.receipt).await.unwrap(),
        Some(c.admission_token.clone())
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_consumption_is_recorded_field_for_field_sqlite() {
    a_consumption_is_recorded_field_for_field(Db::sqlite()).await;
}

#[tokio::test]
async fn a_consumption_is_recorded_field_for_field_postgres() {
    a_consumption_is_recorded_field_for_field(Db::postgres()).await;
}

#[tokio::test]
async fn transitions_are_conditional_on_the_state_sqlite() {
    transitions_are_conditional_on_the_state(Db::sqlite()).await;
}

#[tokio::test]
async fn transitions_are_conditional_on_the_state_postgres() {
    transitions_are_conditional_on_the_state(Db::postgres()).await;
}

async fn sweep_applies_lease_and_window(db: Db) {
    let s = open(&db).await;
    let now = 50_000;
    // Lease running, lease over, redeemable in the window, redeemable past it.
    s.consume(&consumption(1, PaymentState::Admitted, now, now + 20))
        .await
        .unwrap();
    s.consume(&consumption(2, PaymentState::Admitted, now - 100, now - 75))
        .await
        .unwrap();
    s.consume(&consumption(3, PaymentState::Redeemable, now - 599, 0))
        .await
        .unwrap();
    s.consume(&consumption(4, PaymentState::Redeemable, now - 600, 0))
        .await
        .unwrap();
    assert_eq!(s.sweep(now, POLICY).await.unwrap(), 2);
    assert_eq!(state(&s, 1).await, Some(PaymentState::Admitted));
    assert_eq!(state(&s, 2).await, Some(PaymentState::Redeemable));
    assert_eq!(state(&s, 3).await, Some(PaymentState::Redeemable));
    let rec = s.spent("nano:devnet:HASH4").await.unwrap().unwrap();
    assert_eq!(rec.state, PaymentState::Owed);
    assert_eq!(rec.reason.as_deref(), Some("redeem_window_passed"));
    // An owed payment never becomes redeemable again.
    assert!(!s.redeem("receipt4", POLICY, now, now + 20).await.unwrap());
    db.cleanup().await;
}

#[tokio::test]
async fn sweep_applies_lease_and_window_sqlite() {
    sweep_applies_lease_and_window(Db::sqlite()).await;
}

#[tokio::test]
async fn sweep_applies_lease_and_window_postgres() {
    sweep_applies_lease_and_window(Db::postgres()).await;
}

async fn unknown_states_are_refused_by_the_schema(db: Db) {
    let s = open(&db).await;
    s.consume(&consumption(1, PaymentState::Admitted, 1, 2))
        .await
        .unwrap();
    drop(s);
    let bogus =
        "UPDATE payments SET state = 'refunded_twice' WHERE spent_key = 'nano:devnet:HASH1'";
    let no_receipt = "UPDATE payments SET receipt = NULL WHERE spent_key = 'nano:devnet:HASH1'";
    match &db {
        Db::Sqlite(_) => {
            let pool = sqlx::SqlitePool::connect(&db.url()).await.unwrap();
            assert!(sqlx::query(bogus).execute(&pool).await.is_err());
            assert!(sqlx::query(no_receipt).execute(&pool).await.is_err());
        }
        Db::Postgres { url, schema } => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let bogus = bogus.replace("payments", &format!("{schema}.payments"));
            let no_receipt = no_receipt.replace("payments", &format!("{schema}.payments"));
            assert!(sqlx::query(&bogus).execute(&pool).await.is_err());
            assert!(sqlx::query(&no_receipt).execute(&pool).await.is_err());
        }
    }
    db.cleanup().await;
}

#[tokio::test]
async fn unknown_states_are_refused_by_the_schema_sqlite() {
    unknown_states_are_refused_by_the_schema(Db::sqlite()).await;
}

#[tokio::test]
async fn unknown_states_are_refused_by_the_schema_postgres() {
    unknown_states_are_refused_by_the_schema(Db::postgres()).await;
}

async fn listing_totals_and_retention(db: Db) {
    let s = open(&db).await;
    let now = 1_000_000;
    for n in 0..7u32 {
        s.consume(&consumption(
            n,
            PaymentState::Admitted,
            now + i64::from(n),
            now + 100,
        ))
        .await
        .unwrap();
    }
    for n in 0..3u32 {
        assert!(s
            .record_outcome(&format!("receipt{n}"), 200, now + 10, POLICY)
            .await
            .unwrap());
    }
    // Totals: exact raw sums (beyond 64 bits) per state.
    let totals = s.payment_totals().await.unwrap();
    let served = totals
        .iter()
        .find(|t| t.state == PaymentState::Served)
        .unwrap();
    assert_eq!(served.count, 3);
    assert_eq!(
        served.raw,
        3 * 1_000_000_000_000_000_000_000_000_000_000 + 3
    );
    let admitted = totals
        .iter()
        .find(|t| t.state == PaymentState::Admitted)
        .unwrap();
    assert_eq!(admitted.count, 4);

    // Paging with a cursor walks every row once, in settlement order.
    let mut seen = Vec::new();
    let mut q = PaymentQuery {
        limit: 3,
        ..PaymentQuery::default()
    };
    loop {
        let page = s.payments(&q).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        q.after = Some((last.settled_at, last.spent_key.clone()));
        seen.extend(page.into_iter().map(|r| r.spent_key));
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen[0], "nano:devnet:HASH0");
    // Filters: state, payer, resource, time.
    let q = PaymentQuery {
        state: Some(PaymentState::Served),
        payer: Some("nano_payer1".into()),
        limit: 10,
        ..PaymentQuery::default()
    };
    let rows = s.payments(&q).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].spent_key, "nano:devnet:HASH1");
    let q = PaymentQuery {
        resource: Some("http://api.test/r0".into()),
        since: Some(now + 2),
        until: Some(now + 6),
        limit: 10,
        ..PaymentQuery::default()
    };
    let keys: Vec<String> = s
        .payments(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.spent_key)
        .collect();
    assert_eq!(keys, vec!["nano:devnet:HASH2", "nano:devnet:HASH4"]);

    // Retention: served rows go after their retention, admitted/redeemable never.
    let keep = Retention {
        served_secs: 100,
        owed_secs: 1_000,
    };
    assert_eq!(s.prune_payments(now + 109, keep).await.unwrap(), 0);
    assert_eq!(s.prune_payments(now + 110, keep).await.unwrap(), 3);
    assert_eq!(state(&s, 0).await, None);
    assert_eq!(state(&s, 3).await, Some(PaymentState::Admitted));
    db.cleanup().await;
}

#[tokio::test]
async fn listing_totals_and_retention_sqlite() {
    listing_totals_and_retention(Db::sqlite()).await;
}

#[tokio::test]
async fn listing_totals_and_retention_postgres() {
    listing_totals_and_retention(Db::postgres()).await;
}

#[tokio::test]
async fn old_spent_receipts_and_strays_keep_their_meaning_after_the_migration() {
    // A database written by the previous version (schema 0001 + 0002).
    let db = Db::sqlite();
    {
        let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", db.url()))
            .await
            .unwrap();
        for sql in [
            include_str!("../migrations/sqlite/0001_init.sql"),
            include_str!("../migrations/sqlite/0002_tagged.sql"),
            "INSERT INTO spent VALUES ('nano:devnet:OK', 'r-ok', 'nano_a', '5', 100);
             INSERT INTO receipts VALUES ('r-ok', 'nano:devnet:OK', 'n1', 200, 0, 100, 220);
             INSERT INTO spent VALUES ('nano:devnet:FAIL', 'r-fail', 'nano_a', '6', 100);
             INSERT INTO receipts VALUES ('r-fail', 'nano:devnet:FAIL', 'n2', 502, 0, 100, 220);
             INSERT INTO spent VALUES ('nano:devnet:WAIT', 'r-wait', 'nano_a', '7', 100);
             INSERT INTO receipts VALUES ('r-wait', 'nano:devnet:WAIT', 'n3', NULL, 0, 100, 220);
             INSERT INTO stray_payments VALUES ('STRAY', 'nano_b', '9', 'nano_c', 'wrong_amount', 's1', 150);",
        ] {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let s = open(&db).await;
    assert_eq!(s.fold_legacy_strays("nano:devnet").await.unwrap(), 1);
    assert_eq!(s.fold_legacy_strays("nano:devnet").await.unwrap(), 0);
    let get = |k: &'static str| {
        let s = s.clone();
        async move { s.spent(k).await.unwrap().unwrap() }
    };
    assert_eq!(get("nano:devnet:OK").await.state, PaymentState::Served);
    assert_eq!(
        get("nano:devnet:FAIL").await.state,
        PaymentState::Redeemable
    );
    let wait = get("nano:devnet:WAIT").await;
    assert_eq!(wait.state, PaymentState::Admitted);
    assert_eq!(wait.lease_until, 225);
    let stray = get("nano:devnet:STRAY").await;
    assert_eq!(stray.state, PaymentState::Owed);
    assert_eq!(stray.reason.as_deref(), Some("wrong_amount"));
    assert_eq!(
        (stray.payer.as_str(), stray.amount.as_str()),
        ("nano_c", "9")
    );
    db.cleanup().await;
}
