//! Refund states (docs/refunds.md) enforced by the store, on SQLite and PostgreSQL alike: an
//! owed payment's refund is recorded once, with its block, in the same transaction that moves
//! it out of `owed`; a block pays one refund; and the states join the schema's CHECK.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_sidecar::store::payments::TAGGED;
use nanogate_sidecar::store::refunds::Refund;
use nanogate_sidecar::store::{self, OwedPayment, PaymentState, Retention, Store};
use std::sync::Arc;

async fn open(db: &Db) -> Arc<dyn Store> {
    store::open(&db.url(), db.schema().as_deref(), 4)
        .await
        .expect("store opens")
}

fn owed(n: u32, now: i64) -> OwedPayment {
    OwedPayment {
        spent_key: format!("nano:devnet:OWED{n}"),
        mechanism: TAGGED,
        payer: format!("nano_payer{n}"),
        pay_to: "nano_payee".into(),
        amount: format!("{}", 1000 + n),
        resource: String::new(),
        nonce: None,
        reason: "unmatched".into(),
        now,
    }
}

fn refund(n: u32, block: &str, signed: bool) -> Refund {
    Refund {
        spent_key: format!("nano:devnet:OWED{n}"),
        block_hash: block.into(),
        block: signed.then(|| format!("{{\"block\":\"{block}\"}}")),
        source: "nano_payee".into(),
        destination: format!("nano_payer{n}"),
        amount: format!("{}", 1000 + n),
        created_at: 0,
        confirmed_at: None,
    }
}

async fn state(s: &Arc<dyn Store>, n: u32) -> PaymentState {
    s.spent(&format!("nano:devnet:OWED{n}"))
        .await
        .unwrap()
        .unwrap()
        .state
}

async fn a_refund_is_recorded_once_and_a_block_pays_one(db: Db) {
    let s = open(&db).await;
    let now = 50_000;
    for n in 1..=3 {
        assert!(s.record_owed(&owed(n, now)).await.unwrap());
    }
    // owed → refunding with the signed block; never twice.
    assert!(s.begin_refund(&refund(1, "B1", true), now).await.unwrap());
    assert_eq!(state(&s, 1).await, PaymentState::Refunding);
    assert!(!s.begin_refund(&refund(1, "B1X", true), now).await.unwrap());
    assert_eq!(
        s.refund("nano:devnet:OWED1")
            .await
            .unwrap()
            .unwrap()
            .block_hash,
        "B1",
        "the first recorded block stays the refund"
    );
    // A block already paying one refund pays no other: the payment stays owed.
    assert!(!s.begin_refund(&refund(2, "B1", true), now).await.unwrap());
    assert_eq!(state(&s, 2).await, PaymentState::Owed);
    assert!(!s
        .record_wallet_refund(&refund(2, "B1", false), now)
        .await
        .unwrap());
    assert_eq!(state(&s, 2).await, PaymentState::Owed);
    let in_flight = s.refunds_in_flight().await.unwrap();
    assert_eq!(in_flight.len(), 1);
    assert_eq!(in_flight[0].block.as_deref(), Some("{\"block\":\"B1\"}"));
    // refunding → refunded once; a wallet refund goes owed → refunded directly.
    assert!(s.finish_refund("nano:devnet:OWED1", now + 1).await.unwrap());
    assert!(!s.finish_refund("nano:devnet:OWED1", now + 2).await.unwrap());
    assert_eq!(state(&s, 1).await, PaymentState::Refunded);
    assert!(s.refunds_in_flight().await.unwrap().is_empty());
    assert!(s
        .record_wallet_refund(&refund(2, "B2", false), now)
        .await
        .unwrap());
    assert_eq!(state(&s, 2).await, PaymentState::Refunded);
    assert!(!s.begin_refund(&refund(2, "B2Y", true), now).await.unwrap());
    assert_eq!(
        s.refund_by_block("B2").await.unwrap().unwrap().spent_key,
        "nano:devnet:OWED2"
    );
    // Counted per state.
    let totals = s.payment_totals().await.unwrap();
    let count = |st| totals.iter().find(|t| t.state == st).map_or(0, |t| t.count);
    assert_eq!(count(PaymentState::Refunded), 2);
    assert_eq!(count(PaymentState::Owed), 1);
    // Refunded rows and their refunds go with the owed retention.
    let keep = Retention {
        served_secs: 10,
        owed_secs: 10,
    };
    s.prune_payments(now + 100, keep).await.unwrap();
    assert!(s.refund("nano:devnet:OWED1").await.unwrap().is_none());
    assert!(s.spent("nano:devnet:OWED3").await.unwrap().is_none());
    db.cleanup().await;
}

#[tokio::test]
async fn a_refund_is_recorded_once_and_a_block_pays_one_sqlite() {
    a_refund_is_recorded_once_and_a_block_pays_one(Db::sqlite()).await;
}

#[tokio::test]
async fn a_refund_is_recorded_once_and_a_block_pays_one_postgres() {
    a_refund_is_recorded_once_and_a_block_pays_one(Db::postgres()).await;
}

#[tokio::test]
async fn a_bad_wallet_seed_stops_the_start_with_a_clear_error() {
    let db = Db::sqlite();
    let mut cfg = config(vec!["http://127.0.0.1:9".into()], vec![], &db);
    let file = std::env::temp_dir().join(unique("nanogate-seed"));
    std::fs::write(&file, "secret-but-not-a-seed").unwrap();
    cfg.wallet.seed_file = Some(file.clone());
    let e = nanogate_sidecar::server::open_state(&cfg)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("64 hex digits"), "{e}");
    assert!(!e.contains("secret-but-not-a-seed"), "{e}");
    std::fs::remove_file(&file).unwrap();
    db.cleanup().await;
}
