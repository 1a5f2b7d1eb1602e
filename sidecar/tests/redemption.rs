//! Invariant 5 (no payment is lost): a settled payment whose upstream failed (5xx, including
//! Envoy's own 503/504 for an upstream reset or timeout) can be redeemed by presenting the same
//! payment again, a bounded number of times; one whose upstream succeeded cannot, nor one whose
//! client reset before the response headers (status 0: the upstream may have run it); while
//! the request may be in flight, a re-presentation is refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::Confirm;

async fn setup(
    payer: &nanogate_protocol::nano::PrivateKey,
    max_redemptions: u32,
) -> (nanogate_devnet::Devnet, Sidecar, Db) {
    let devnet = devnet(&[payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let mut cfg = devnet_config(&devnet, &db);
    cfg.settlement.max_redemptions = max_redemptions;
    let sidecar = Sidecar::start(&cfg).await;
    (devnet, sidecar, db)
}

#[tokio::test]
async fn upstream_failure_is_redeemed_once_then_refused_when_bound_is_reached() {
    let payer = key(40);
    let (devnet, sidecar, db) = setup(&payer, 1).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let v = sidecar.pay(&req, &p).await;
    assert_admit(&v);
    let receipt = v["receipt"].as_str().unwrap().to_owned();
    assert_eq!(sidecar.outcome(&receipt, 502).await["recorded"], true);

    let again = sidecar.pay(&req, &p).await;
    assert_admit(&again);
    assert_eq!(again["redeemed"], true);
    assert_eq!(
        again["receipt"],
        receipt.as_str(),
        "same receipt, same transaction"
    );
    assert_eq!(again["transaction"], block.hash().to_hex());

    // The retry failed too (Envoy's upstream timeout, 504), but the bound (1) is reached.
    sidecar.outcome(&receipt, 504).await;
    assert_reject(&sidecar.pay(&req, &p).await, "already_spent");
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn upstream_timeout_504_is_redeemable_within_the_bound() {
    let payer = key(41);
    let (devnet, sidecar, db) = setup(&payer, 2).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let v = sidecar.pay(&req, &p).await;
    assert_admit(&v);
    let receipt = v["receipt"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        sidecar.outcome(&receipt, 504).await;
        assert_admit(&sidecar.pay(&req, &p).await);
    }
    sidecar.outcome(&receipt, 503).await;
    assert_reject(&sidecar.pay(&req, &p).await, "already_spent");
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn upstream_success_cannot_be_redeemed() {
    let payer = key(42);
    let (devnet, sidecar, db) = setup(&payer, 3).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let v = sidecar.pay(&req, &p).await;
    assert_admit(&v);
    sidecar.outcome(v["receipt"].as_str().unwrap(), 200).await;
    assert_reject(&sidecar.pay(&req, &p).await, "already_spent");
    // A 4xx is the upstream's answer, not a failure: no redemption either.
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn pending_outcome_refuses_concurrent_reuse_duplicate_settlement() {
    let payer = key(43);
    let (devnet, sidecar, db) = setup(&payer, 3).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    assert_admit(&sidecar.pay(&req, &p).await);
    // No outcome yet: one payment never buys two concurrent responses.
    assert_reject(&sidecar.pay(&req, &p).await, "duplicate_settlement");
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn failed_payment_cannot_be_redeemed_under_another_challenge() {
    let payer = key(44);
    let (devnet, sidecar, db) = setup(&payer, 3).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let v = sidecar.pay(&req, &payment(&req, &block)).await;
    assert_admit(&v);
    sidecar.outcome(v["receipt"].as_str().unwrap(), 500).await;
    // Someone who copied the block from the ledger gets a challenge of their own: refused.
    let theirs = challenge();
    assert_reject(
        &sidecar.pay(&theirs, &payment(&theirs, &block)).await,
        "already_spent",
    );
    // The payer, with the original challenge, still can.
    assert_admit(&sidecar.pay(&req, &payment(&req, &block)).await);
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn outcome_for_unknown_receipt_is_not_recorded() {
    let (devnet, sidecar, db) = setup(&key(45), 1).await;
    let v = sidecar.outcome("no-such-receipt", 500).await;
    assert_eq!(v["ok"], true);
    assert_eq!(v["recorded"], false);
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}
