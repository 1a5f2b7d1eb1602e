//! Invariant 5 (no payment is lost): a settled payment whose upstream failed (5xx, including
//! Envoy's own 503/504 for an upstream reset or timeout) can be redeemed by presenting the same
//! payment again, a bounded number of times; one whose upstream succeeded cannot, nor one whose
//! client reset before the response headers (status 0: the upstream may have run it); while
//! the request may be in flight, a re-presentation is refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::Confirm;
use serde_json::{json, Value};

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

/// `POST /v1/outcomes` (a filter VM's batch).
async fn outcome_batch(sidecar: &Sidecar, outcomes: Value) -> (u16, Value) {
    let resp = http()
        .post(format!(
            "{}{}",
            sidecar.base,
            nanogate_protocol::contract::paths::OUTCOMES
        ))
        .header(nanogate_protocol::contract::headers::SECRET, FILTER_SECRET)
        .json(&json!({ "outcomes": outcomes }))
        .send()
        .await
        .expect("outcome batch");
    let code = resp.status().as_u16();
    (code, resp.json().await.expect("outcome batch json"))
}

/// #15, invariant 10 through the batch: each entry of a batched outcome report counts only
/// with the token of its own payment's current admission. A stale, missing or foreign token
/// records nothing for that entry while the others are recorded; a batch over the cap is
/// refused whole, saying why.
async fn a_batch_records_only_the_entries_with_their_admissions_current_token(db: Db) {
    let (a, b, c) = (key(48), key(49), key(50));
    let devnet = devnet(&[&a, &b, &c], Confirm::AfterMs(20)).await;
    let mut cfg = devnet_config(&devnet, &db);
    cfg.settlement.max_redemptions = 2;
    let sidecar = Sidecar::start(&cfg).await;
    let mut admitted = Vec::new();
    for payer in [&a, &b, &c] {
        let req = challenge();
        let p = payment(&req, &good_block(&devnet, payer, PRICE, payee()));
        let v = sidecar.pay(&req, &p).await;
        assert_admit(&v);
        let receipt = v["receipt"].as_str().unwrap().to_owned();
        let token = v["admissionToken"].as_str().unwrap().to_owned();
        admitted.push((req, p, receipt, token));
    }
    let [(ra, pa, a_receipt, a_token), (rb, pb, b_receipt, b_first), (rc, pc, c_receipt, c_token)] =
        <[_; 3]>::try_from(admitted).unwrap();

    // Over the cap: refused whole with a clear error, even its good first entry.
    let mut long = vec![json!({"receipt": a_receipt, "status": 200, "admissionToken": a_token})];
    long.extend((0..64).map(|i| json!({"receipt": format!("r{i}"), "status": 200})));
    let (code, body) = outcome_batch(&sidecar, json!(long)).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("at most 64"),
        "{body}"
    );
    assert_reject(&sidecar.pay(&ra, &pa).await, "duplicate_settlement");

    // B's first admission failed upstream (reported alone, at once) and was redeemed: its
    // first token is stale now.
    let (code, _) = sidecar.outcome_with(&b_receipt, 502, Some(&b_first)).await;
    assert_eq!(code, 200);
    let again = sidecar.pay(&rb, &pb).await;
    assert_admit(&again);
    let b_second = again["admissionToken"].as_str().unwrap().to_owned();

    let (code, body) = outcome_batch(
        &sidecar,
        json!([
            {"receipt": a_receipt, "status": 200, "admissionToken": a_token},
            {"receipt": b_receipt, "status": 502, "admissionToken": b_first},
            {"receipt": c_receipt, "status": 502},
            {"receipt": c_receipt, "status": 502, "admissionToken": a_token},
            {"receipt": "no-such-receipt", "status": 200, "admissionToken": c_token},
        ]),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"recorded": 1, "notAdmitted": 1, "refused": 3}),
        "stale, missing and foreign tokens refused; the unknown receipt has nothing to record"
    );
    assert_reject(&sidecar.pay(&ra, &pa).await, "already_spent");
    assert_reject(&sidecar.pay(&rb, &pb).await, "duplicate_settlement");
    assert_reject(&sidecar.pay(&rc, &pc).await, "duplicate_settlement");

    // With their current tokens the same entries are recorded.
    let (code, body) = outcome_batch(
        &sidecar,
        json!([
            {"receipt": b_receipt, "status": 200, "admissionToken": b_second},
            {"receipt": c_receipt, "status": 502, "admissionToken": c_token},
        ]),
    )
    .await;
    assert_eq!(
        (code, body),
        (200, json!({"recorded": 2, "notAdmitted": 0, "refused": 0}))
    );
    assert_reject(&sidecar.pay(&rb, &pb).await, "already_spent");
    assert_admit(&sidecar.pay(&rc, &pc).await);
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_batch_records_only_the_entries_with_their_admissions_current_token_sqlite() {
    a_batch_records_only_the_entries_with_their_admissions_current_token(Db::sqlite()).await;
}

/// The same on PostgreSQL, where the batch's token-bearing entries are one statement.
#[tokio::test]
async fn a_batch_records_only_the_entries_with_their_admissions_current_token_postgres() {
    a_batch_records_only_the_entries_with_their_admissions_current_token(Db::postgres()).await;
}
