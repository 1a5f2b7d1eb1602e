//! Invariant 5 (no payment is lost): a settled payment whose upstream failed (5xx, including
//! Envoy's own 503/504 for an upstream reset or timeout) can be redeemed by presenting the same
//! payment again, a bounded number of times; one whose upstream succeeded cannot, nor one whose
//! client reset before the response headers (status 0: the upstream may have run it); while
//! the request may be in flight, a re-presentation is refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::Confirm;
use serde_json::json;

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

/// #19: an outcome counts only with the token of the payment's current admission; a missing,
/// made-up or stale token (an earlier admission's, after a redemption) is refused with 403
/// and changes nothing.
#[tokio::test]
async fn outcome_needs_the_token_of_the_current_admission() {
    let payer = key(47);
    let (devnet, sidecar, db) = setup(&payer, 2).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let first = sidecar.pay(&req, &p).await;
    assert_admit(&first);
    let receipt = first["receipt"].as_str().unwrap().to_owned();
    let first_token = first["admissionToken"].as_str().expect("token").to_owned();
    assert_eq!(first_token.len(), 64);
    let made_up = "cd".repeat(32);
    for token in [None, Some(made_up.as_str())] {
        let (code, body) = sidecar.outcome_with(&receipt, 502, token).await;
        assert_eq!(code, 403, "{token:?}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("admission"),
            "{body}"
        );
    }
    // Still admitted (nothing was recorded): a re-presentation is refused as in flight.
    assert_reject(&sidecar.pay(&req, &p).await, "duplicate_settlement");
    let (code, body) = sidecar
        .outcome_with(&receipt, 502, Some(&first_token))
        .await;
    assert_eq!((code, &body["recorded"]), (200, &json!(true)), "{body}");

    // The redemption is a new admission with a new token; the first one is stale now.
    let again = sidecar.pay(&req, &p).await;
    assert_admit(&again);
    let second_token = again["admissionToken"].as_str().expect("token").to_owned();
    assert_ne!(second_token, first_token);
    let (code, _) = sidecar
        .outcome_with(&receipt, 502, Some(&first_token))
        .await;
    assert_eq!(code, 403, "the earlier admission's token is stale");
    let (code, body) = sidecar
        .outcome_with(&receipt, 200, Some(&second_token))
        .await;
    assert_eq!((code, &body["recorded"]), (200, &json!(true)), "{body}");
    assert_reject(&sidecar.pay(&req, &p).await, "already_spent");
    let metrics = http()
        .get(format!("{}/metrics", sidecar.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("nanogate_outcomes_refused_total{reason=\"stale_token\"} 2")
            && metrics.contains("nanogate_outcomes_refused_total{reason=\"missing_token\"} 1"),
        "{metrics}"
    );
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
