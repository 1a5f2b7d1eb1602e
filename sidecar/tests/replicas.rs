//! Invariant 8 (replicas agree) and durability: two sidecars sharing one PostgreSQL admit the
//! same payment exactly once; a restart keeps the spent set (SQLite and PostgreSQL); the
//! store's consumption and fork claims are atomic under concurrency.
//!
//! PostgreSQL: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test); every test
//! works in its own schema and drops it at the end.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::Confirm;
use nanogate_sidecar::store::{self, Consumption, ForkEntry, Store};
use std::sync::Arc;

async fn open(db: &Db) -> Arc<dyn Store> {
    store::open(&db.url(), db.schema().as_deref(), 8)
        .await
        .expect("store opens")
}

#[tokio::test]
async fn replay_across_replicas_admits_once() {
    let payers: Vec<_> = (60..66).map(key).collect();
    let refs: Vec<_> = payers.iter().collect();
    let devnet = devnet(&refs, Confirm::AfterMs(20)).await;
    let db = Db::postgres();
    let cfg = devnet_config(&devnet, &db);
    let a = Sidecar::start(&cfg).await;
    let b = Sidecar::start(&cfg).await;
    let mut admitted = 0;
    for payer in &payers {
        let req = challenge();
        let block = good_block(&devnet, payer, PRICE, payee());
        let p = payment(&req, &block);
        // The same payment at both replicas at the same moment.
        let (va, vb) = tokio::join!(a.pay(&req, &p), b.pay(&req, &p));
        let admits = [&va, &vb].iter().filter(|v| verdict(v) == "admit").count();
        assert_eq!(admits, 1, "exactly one admit: {va} / {vb}");
        let loser = if verdict(&va) == "admit" { &vb } else { &va };
        assert_eq!(verdict(loser), "reject", "{loser}");
        // Which check stops the loser depends on where it was when the winner claimed: the
        // fork set, the ledger's moved frontier, or the spent set.
        assert!(
            [
                "duplicate_settlement",
                "duplicate_frontier",
                "stale_frontier",
                "already_spent"
            ]
            .contains(&reason(loser)),
            "{loser}"
        );
        println!("winner/loser: {} / {}", verdict(&va), reason(loser));
        admitted += admits;
    }
    assert_eq!(admitted, payers.len());
    a.stop().await;
    b.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_consumption_on_shared_postgres_inserts_once() {
    let db = Db::postgres();
    let s1 = open(&db).await;
    let s2 = open(&db).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { s1.clone() } else { s2.clone() };
        tasks.push(tokio::spawn(async move {
            s.consume(&Consumption {
                spent_key: "nano:devnet:SAMEHASH".into(),
                receipt: format!("receipt-{i}"),
                mechanism: SIGNED_BLOCK,
                payer: "nano_x".into(),
                pay_to: "nano_y".into(),
                amount: 1,
                resource: "r".into(),
                nonce: None,
                now: 1,
                state: store::PaymentState::Admitted,
                lease_until: 20,
                admission_token: None,
            })
            .await
            .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    db.cleanup().await;
}

async fn fork_claims_are_exclusive(db: Db) {
    let s1 = open(&db).await;
    let s2 = open(&db).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { s1.clone() } else { s2.clone() };
        tasks.push(tokio::spawn(async move {
            let e = ForkEntry {
                frontier_key: "nano:devnet:ACCOUNT:PREV".into(),
                block_hash: format!("HASH{i}"),
                nonce: Some(format!("nonce{i}")),
                owner: format!("owner{i}"),
                lease_until: 1_000,
                expires_at: 2_000,
                terms: None,
            };
            s.fork_claim(&e, 10).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    // After expiry the frontier can be claimed again.
    let e = ForkEntry {
        frontier_key: "nano:devnet:ACCOUNT:PREV".into(),
        block_hash: "LATER".into(),
        nonce: None,
        owner: "later".into(),
        lease_until: 3_000,
        expires_at: 4_000,
        terms: None,
    };
    assert!(!s1.fork_claim(&e, 1_999).await.unwrap());
    assert!(s1.fork_claim(&e, 2_000).await.unwrap());
    // The same block with the same (absent) nonce takes its claim over once the lease lapsed
    // (NULL is not distinct from NULL, on either backend); another nonce does not.
    let retry = ForkEntry {
        owner: "retry".into(),
        lease_until: 3_500,
        ..e.clone()
    };
    assert!(!s2.fork_claim(&retry, 2_999).await.unwrap(), "lease held");
    assert!(s2.fork_claim(&retry, 3_000).await.unwrap(), "lease lapsed");
    let other = ForkEntry {
        nonce: Some("nonce".into()),
        owner: "other".into(),
        ..e.clone()
    };
    assert!(
        !s1.fork_claim(&other, 3_600).await.unwrap(),
        "another nonce"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn fork_claims_are_exclusive_on_postgres() {
    fork_claims_are_exclusive(Db::postgres()).await;
}

#[tokio::test]
async fn fork_claims_are_exclusive_on_sqlite() {
    fork_claims_are_exclusive(Db::sqlite()).await;
}

async fn restart_keeps_the_spent_set(db: Db) {
    let payer = key(70);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let cfg = devnet_config(&devnet, &db);
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let first = Sidecar::start(&cfg).await;
    let v = first.pay(&req, &p).await;
    assert_admit(&v);
    first.outcome(v["receipt"].as_str().unwrap(), 200).await;
    first.stop().await;

    // A new process over the same database: the payment stays consumed.
    let second = Sidecar::start(&cfg).await;
    assert_reject(&second.pay(&req, &p).await, "already_spent");
    let req2 = challenge();
    assert_reject(
        &second.pay(&req2, &payment(&req2, &block)).await,
        "already_spent",
    );
    let rec = second
        .state
        .engine
        .store()
        .spent(&format!("{NETWORK}:{}", block.hash().to_hex()))
        .await
        .unwrap()
        .expect("spent entry survives");
    assert_eq!(rec.state, store::PaymentState::Served);
    second.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn restart_keeps_the_spent_set_sqlite() {
    restart_keeps_the_spent_set(Db::sqlite()).await;
}

#[tokio::test]
async fn restart_keeps_the_spent_set_postgres() {
    restart_keeps_the_spent_set(Db::postgres()).await;
}

#[tokio::test]
async fn schema_is_created_at_start_and_reopening_is_idempotent() {
    for db in [Db::sqlite(), Db::postgres()] {
        let s = open(&db).await;
        s.ping().await.unwrap();
        drop(s);
        let s = open(&db).await;
        assert!(s.spent("nano:devnet:NONE").await.unwrap().is_none());
        assert_eq!(s.prune(i64::MAX).await.unwrap(), 0);
        db.cleanup().await;
    }
}

async fn prune_keeps_the_spent_set(db: Db) {
    let s = open(&db).await;
    assert_eq!(
        s.bind_nonce("n1", "nano:devnet:H1", 5).await.unwrap(),
        store::NonceBinding::Fresh
    );
    assert_eq!(
        s.bind_nonce("n1", "nano:devnet:H1", 5).await.unwrap(),
        store::NonceBinding::Same
    );
    assert_eq!(
        s.bind_nonce("n1", "nano:devnet:H2", 5).await.unwrap(),
        store::NonceBinding::Other
    );
    let e = ForkEntry {
        frontier_key: "k".into(),
        block_hash: "H1".into(),
        nonce: Some("n1".into()),
        owner: "o".into(),
        lease_until: 3,
        expires_at: 5,
        terms: None,
    };
    assert!(s.fork_claim(&e, 1).await.unwrap());
    assert!(s
        .consume(&Consumption {
            spent_key: "nano:devnet:H1".into(),
            receipt: "r1".into(),
            mechanism: SIGNED_BLOCK,
            payer: "nano_x".into(),
            pay_to: "nano_y".into(),
            amount: 7,
            resource: "r".into(),
            nonce: Some("n1".into()),
            now: 1,
            state: store::PaymentState::Admitted,
            lease_until: 20,
            admission_token: None,
        })
        .await
        .unwrap());
    assert_eq!(
        s.prune(10).await.unwrap(),
        2,
        "one nonce and one fork entry"
    );
    assert!(s.nonce_binding("n1").await.unwrap().is_none());
    assert!(s.fork_entry("k", 0).await.unwrap().is_none());
    assert!(
        s.spent("nano:devnet:H1").await.unwrap().is_some(),
        "the payment ledger has its own retention"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn prune_keeps_the_spent_set_sqlite() {
    prune_keeps_the_spent_set(Db::sqlite()).await;
}

#[tokio::test]
async fn prune_keeps_the_spent_set_postgres() {
    prune_keeps_the_spent_set(Db::postgres()).await;
}
