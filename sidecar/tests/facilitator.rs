//! The x402 facilitator API: `/supported`, bearer auth, `/v1/challenge` + `/verify` +
//! `/settle` for MAC-bound requirements, and the unbound policy (refused by default; allowed
//! only for listed payees when `allow_unbound = true`).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::Confirm;
use nanogate_protocol::x402::{PaymentRequirements, SettlementResponse, VerifyResponse};
use serde_json::{json, Value};

async fn post(base: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut r = http().post(format!("{base}{path}")).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn body(req: &PaymentRequirements, payment: &Value) -> Value {
    json!({"x402Version": 2, "paymentPayload": payment, "paymentRequirements": req})
}

#[tokio::test]
async fn supported_lists_exact_on_the_configured_network() {
    let devnet = devnet(&[], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&devnet_config(&devnet, &db)).await;
    let v: Value = http()
        .get(format!("{}{}", sidecar.base, paths::SUPPORTED))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // (`extra` is checked in facilitator_sdk.rs.)
    let kind = &v["kinds"][0];
    assert_eq!(
        (&kind["x402Version"], &kind["scheme"], &kind["network"]),
        (&json!(2), &json!(SCHEME_EXACT), &json!(NETWORK))
    );
    assert_eq!(v["extensions"], json!([]));
    assert_eq!(v["signers"], json!({}));
    sidecar.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn facilitator_endpoints_require_the_bearer_token() {
    let devnet = devnet(&[], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&devnet_config(&devnet, &db)).await;
    for path in [paths::VERIFY, paths::SETTLE, paths::CHALLENGE] {
        for token in [None, Some("wrong-token-wrong-token")] {
            let (status, _) = post(&sidecar.base, path, token, &json!({})).await;
            assert_eq!(status, 401, "{path}");
        }
        // The filter's secret is not a facilitator credential either.
        let (status, _) = post(&sidecar.base, path, Some(FILTER_SECRET), &json!({})).await;
        assert_eq!(status, 401, "{path}");
    }
    sidecar.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn issued_challenge_verifies_and_settles_once() {
    let payer = key(80);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&devnet_config(&devnet, &db)).await;
    let (status, req) = post(
        &sidecar.base,
        paths::CHALLENGE,
        Some(TOKEN),
        &json!({"resource": RESOURCE, "amount": PRICE.to_string(), "payTo": payee().to_address()}),
    )
    .await;
    assert_eq!(status, 200, "{req}");
    let req: PaymentRequirements = serde_json::from_value(req).unwrap();
    assert!(req.extra.contains_key("mac") && req.extra.contains_key("nonce"));
    let block = good_block(&devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);

    let (status, v) = post(&sidecar.base, paths::VERIFY, Some(TOKEN), &body(&req, &p)).await;
    assert_eq!(status, 200);
    let v: VerifyResponse = serde_json::from_value(v).unwrap();
    assert!(v.is_valid, "{v:?}");
    assert_eq!(
        v.payer.as_deref(),
        Some(payer.public_key().to_address().as_str())
    );
    assert!(
        !devnet.ledger().contains(&block.hash()),
        "/verify changes nothing"
    );

    let (status, s) = post(&sidecar.base, paths::SETTLE, Some(TOKEN), &body(&req, &p)).await;
    assert_eq!(status, 200);
    let s: SettlementResponse = serde_json::from_value(s).unwrap();
    assert!(s.success, "{s:?}");
    assert_eq!(s.transaction, block.hash().to_hex());
    assert_eq!(s.network, NETWORK);

    // Settled through the facilitator: final, a second /settle or /verify is refused.
    let (_, s) = post(&sidecar.base, paths::SETTLE, Some(TOKEN), &body(&req, &p)).await;
    assert_eq!(s["success"], false);
    assert_eq!(s["errorReason"], "already_spent");
    assert_eq!(s["transaction"], "");
    let (_, v) = post(&sidecar.base, paths::VERIFY, Some(TOKEN), &body(&req, &p)).await;
    assert_eq!(v["isValid"], false);
    assert_eq!(v["invalidReason"], "already_spent");

    // A tampered copy of the issued requirements (cheaper) fails the binding.
    let mut cheap = req.clone();
    cheap.amount = (PRICE / 2).to_string();
    let block2 = good_block(&devnet, &payer, PRICE / 2, payee());
    let (_, v) = post(
        &sidecar.base,
        paths::VERIFY,
        Some(TOKEN),
        &body(&cheap, &payment(&cheap, &block2)),
    )
    .await;
    assert_eq!(v["invalidReason"], "invalid_challenge");
    sidecar.stop().await;
    devnet.shutdown().await;
}

fn unbound(amount: u128) -> PaymentRequirements {
    PaymentRequirements {
        scheme: SCHEME_EXACT.into(),
        network: NETWORK.into(),
        amount: amount.to_string(),
        asset: ASSET_XNO.into(),
        pay_to: payee().to_address(),
        max_timeout_seconds: 60,
        extra: Default::default(),
    }
}

#[tokio::test]
async fn unbound_requirements_are_refused_by_default() {
    let payer = key(81);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&devnet_config(&devnet, &db)).await;
    let req = unbound(PRICE);
    let block = good_block(&devnet, &payer, PRICE, payee());
    let (_, v) = post(
        &sidecar.base,
        paths::VERIFY,
        Some(TOKEN),
        &body(&req, &payment(&req, &block)),
    )
    .await;
    assert_eq!(v["isValid"], false);
    assert_eq!(v["invalidReason"], "invalid_payment_requirements");
    let (_, s) = post(
        &sidecar.base,
        paths::SETTLE,
        Some(TOKEN),
        &body(&req, &payment(&req, &block)),
    )
    .await;
    assert_eq!(s["success"], false);
    assert!(!devnet.ledger().contains(&block.hash()));
    sidecar.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn unbound_requirements_for_a_listed_payee_get_full_ledger_checks() {
    let payer = key(82);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let mut cfg = devnet_config(&devnet, &db);
    cfg.facilitator.allow_unbound = true;
    cfg.facilitator.pay_to = vec![payee().to_address()];
    let sidecar = Sidecar::start(&cfg).await;

    // Not a listed payee.
    let mut other = unbound(PRICE);
    other.pay_to = key(90).public_key().to_address();
    let block = good_block(&devnet, &payer, PRICE, key(90).public_key());
    let (_, v) = post(
        &sidecar.base,
        paths::VERIFY,
        Some(TOKEN),
        &body(&other, &payment(&other, &block)),
    )
    .await;
    assert_eq!(v["invalidReason"], "invalid_payment_requirements");

    // Underpayment is still caught.
    let req = unbound(PRICE);
    let under = good_block(&devnet, &payer, PRICE - 1, payee());
    let (_, v) = post(
        &sidecar.base,
        paths::VERIFY,
        Some(TOKEN),
        &body(&req, &payment(&req, &under)),
    )
    .await;
    assert_eq!(v["invalidReason"], "amount_mismatch");

    let block = good_block(&devnet, &payer, PRICE, payee());
    let (status, s) = post(
        &sidecar.base,
        paths::SETTLE,
        Some(TOKEN),
        &body(&req, &payment(&req, &block)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(s["success"], true, "{s}");
    // Replay protection rests on the spent set alone.
    let (_, s) = post(
        &sidecar.base,
        paths::SETTLE,
        Some(TOKEN),
        &body(&req, &payment(&req, &block)),
    )
    .await;
    assert_eq!(s["errorReason"], "already_spent");
    sidecar.stop().await;
    devnet.shutdown().await;
}
