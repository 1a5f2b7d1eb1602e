//! The payment ledger through the sidecar's HTTP API against the in-process devnet: late
//! settlement is never lost, an expired challenge's payment is admitted or owed, and operators
//! see every payment (`/v1/admin/payments`, `/metrics`).

mod common;

use common::*;
use nanogate_devnet::{Confirm, Devnet};
use nanogate_protocol::challenge::{self, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::nano::StateBlock;
use nanogate_protocol::x402::{encode_bytes, encode_header, PaymentRequirements, MAX_HEADER_BYTES};
use nanogate_sidecar::config::Config;
use nanogate_sidecar::keys::ChallengeKeys;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The shipped settlement defaults (the harness shortens the wait; these scenarios are about it).
fn shipped(d: &Devnet, db: &Db) -> Config {
    let mut cfg = devnet_config(d, db);
    cfg.settlement = Config::default().settlement;
    cfg
}

async fn admin_payments(sc: &Sidecar, query: &str) -> Value {
    let r = http()
        .get(format!("{}{}?{query}", sc.base, paths::ADMIN_PAYMENTS))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("payments");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

/// The row of `hash` in the admin listing.
async fn row(sc: &Sidecar, hash: &str) -> Option<Value> {
    let v = admin_payments(sc, "limit=1000").await;
    v["payments"]
        .as_array()?
        .iter()
        .find(|p| p["hash"] == json!(hash))
        .cloned()
}

/// A genuine challenge issued at `issued` (with that time's key) and valid until `valid_before`.
fn challenge_issued(issued: u64, valid_before: u64) -> PaymentRequirements {
    let keys = ChallengeKeys::new(CHALLENGE_SECRET.as_bytes().to_vec(), 300);
    let k = keys.current(issued);
    let stamp = ChallengeStamp {
        valid_before,
        nonce: rand::random(),
        key_id: k.key_id,
    };
    let terms = ChallengeTerms {
        network: NETWORK,
        scheme: SCHEME_EXACT,
        asset: ASSET_XNO,
        pay_to: payee(),
        amount: PRICE,
        resource: RESOURCE,
        mechanism: Mechanism::SignedBlock,
    };
    PaymentRequirements {
        scheme: SCHEME_EXACT.into(),
        network: NETWORK.into(),
        amount: PRICE.to_string(),
        asset: ASSET_XNO.into(),
        pay_to: payee().to_address(),
        max_timeout_seconds: valid_before.saturating_sub(issued),
        extra: challenge::extra(&k.key, &terms, &stamp),
    }
}

/// The state a presentation made while `req` was valid leaves: its nonce bound to `block`
/// (constructed directly: reaching it over HTTP means waiting out the challenge).
async fn bind_in_time(sc: &Sidecar, req: &PaymentRequirements, block: &StateBlock) {
    let nonce = req.extra["nonce"].as_str().expect("nonce");
    let key = format!("{NETWORK}:{}", block.hash().to_hex());
    let b = sc
        .state
        .engine
        .store()
        .bind_nonce(nonce, &key, i64::try_from(now()).unwrap_or(0) + 600)
        .await
        .expect("store");
    assert_eq!(b, nanogate_sidecar::store::NonceBinding::Fresh);
}

#[tokio::test]
async fn settlement_finishing_after_the_filter_stopped_waiting_is_redeemable_at_once() {
    // The ledger confirms after 3 s; the filter (here: the HTTP client) gives up
    // after 1 s. The settlement finishes in its task; its admission cannot reach anyone, so the
    // payment is recorded redeemable and the payer's retry is served at once, by the same
    // payment (before: `duplicate_settlement` for 120 s, then `challenge_expired`).
    let payer = key(60);
    let d = devnet(&[&payer], Confirm::AfterMs(3_000)).await;
    let db = Db::sqlite();
    let sc = Sidecar::start(&shipped(&d, &db)).await;
    let req = challenge();
    let block = good_block(&d, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let gave_up = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client")
        .post(format!("{}{}", sc.base, paths::PAY))
        .header(headers::SECRET, FILTER_SECRET)
        .json(&json!({"resource": RESOURCE, "requirements": req, "payment": p}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client stopped waiting");
    assert!(
        d.ledger()
            .wait_confirmed(&block.hash(), Duration::from_secs(20))
            .await
    );
    let hash = block.hash().to_hex();
    let deadline = Instant::now() + Duration::from_secs(20);
    while row(&sc, &hash).await.map(|r| r["state"].clone()) != Some(json!("redeemable")) {
        assert!(Instant::now() < deadline, "{:?}", row(&sc, &hash).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = sc.pay(&req, &p).await;
    assert_admit(&v);
    assert_eq!(v["redeemed"], true);
    sc.outcome(v["receipt"].as_str().unwrap_or(""), 200).await;
    assert_reject(&sc.pay(&req, &p).await, "already_spent");
    let r = row(&sc, &hash).await.expect("row");
    assert_eq!(r["state"], "served");
    assert_eq!(r["redemptions"], 1);
    sc.stop().await;
    d.shutdown().await;
}

#[tokio::test]
async fn block_confirmed_after_the_wait_is_recorded_redeemable_and_survives_a_restart() {
    // The ledger stops confirming; the 8 s wait ends with `block_not_confirmed`.
    // The sidecar restarts meanwhile; when the ledger confirms, the restarted sidecar (which
    // resumed tracking the block) records it redeemable, and the payer is served once.
    let payer = key(61);
    let d = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let cfg = shipped(&d, &db);
    let sc = Sidecar::start(&cfg).await;
    let req = challenge();
    let block = good_block(&d, &payer, PRICE, payee());
    let p = payment(&req, &block);
    d.faults().set_confirming(false);
    assert_reject(&sc.pay(&req, &p).await, "block_not_confirmed");
    sc.stop().await;
    let sc = Sidecar::start(&cfg).await;
    d.faults().set_confirming(true);
    let hash = block.hash().to_hex();
    let deadline = Instant::now() + Duration::from_secs(30);
    while row(&sc, &hash).await.map(|r| r["state"].clone()) != Some(json!("redeemable")) {
        assert!(Instant::now() < deadline, "{:?}", row(&sc, &hash).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = sc.pay(&req, &p).await;
    assert_admit(&v);
    assert_eq!(v["redeemed"], true);
    assert_reject(&sc.pay(&req, &p).await, "duplicate_settlement");
    sc.stop().await;
    d.shutdown().await;
}

#[tokio::test]
async fn block_confirmed_after_its_challenge_expired_is_admitted_or_owed() {
    // Scenario 2 (sidecar side): the payer presented the block in time (the nonce is bound to
    // it), the block reached the ledger (e.g. broadcast by the payer's wallet after our wait
    // ended, with no tracker running) and confirmed; the payer presents it under its challenge
    // after validBefore. Paid in time (seen before validBefore + the
    // fork grace): recorded and admitted. Paid too late: recorded owed, listed for a refund.
    let a = key(62);
    let b = key(63);
    let d = devnet(&[&a, &b], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sc = Sidecar::start(&shipped(&d, &db)).await;
    let t = now();

    let in_time = challenge_issued(t - 150, t - 30);
    let block = good_block(&d, &a, PRICE, payee());
    bind_in_time(&sc, &in_time, &block).await;
    d.ledger().process(&block).expect("processed");
    assert!(
        d.ledger()
            .wait_confirmed(&block.hash(), Duration::from_secs(10))
            .await
    );
    let p = payment(&in_time, &block);
    let v = sc.pay(&in_time, &p).await;
    assert_admit(&v);
    sc.outcome(v["receipt"].as_str().unwrap_or(""), 200).await;
    assert_reject(&sc.pay(&in_time, &p).await, "already_spent");

    let too_late = challenge_issued(t - 300, t - 100);
    let block = good_block(&d, &b, PRICE, payee());
    bind_in_time(&sc, &too_late, &block).await;
    d.ledger().process(&block).expect("processed");
    assert!(
        d.ledger()
            .wait_confirmed(&block.hash(), Duration::from_secs(10))
            .await
    );
    let p = payment(&too_late, &block);
    assert_reject(&sc.pay(&too_late, &p).await, "challenge_expired");
    let r = row(&sc, &block.hash().to_hex()).await.expect("owed row");
    assert_eq!(r["state"], "owed");
    assert_eq!(r["reason"], "late");
    assert_eq!(r["payer"], json!(b.public_key().to_address()));
    assert_eq!(r["amount"], json!(PRICE.to_string()));
    sc.stop().await;
    d.shutdown().await;
}

#[tokio::test]
async fn operators_list_payments_by_state_and_see_counts_and_sums_in_metrics() {
    let payers: Vec<_> = (64..68).map(key).collect();
    let refs: Vec<_> = payers.iter().collect();
    let d = devnet(&refs, Confirm::AfterMs(20)).await;
    let db = Db::postgres();
    let sc = Sidecar::start(&shipped(&d, &db)).await;
    let mut receipts = Vec::new();
    for payer in &payers {
        let req = challenge();
        let block = good_block(&d, payer, PRICE, payee());
        let v = sc.pay(&req, &payment(&req, &block)).await;
        assert_admit(&v);
        receipts.push(v["receipt"].as_str().unwrap_or("").to_owned());
    }
    sc.outcome(&receipts[0], 200).await;
    sc.outcome(&receipts[1], 0).await;
    sc.outcome(&receipts[2], 503).await;

    // No token, no listing.
    let r = http()
        .get(format!("{}{}", sc.base, paths::ADMIN_PAYMENTS))
        .send()
        .await
        .expect("payments");
    assert_eq!(r.status(), 401);

    let served = admin_payments(&sc, "state=served").await;
    assert_eq!(served["payments"].as_array().map(Vec::len), Some(2));
    assert_eq!(served["next"], Value::Null);
    let p = &served["payments"][0];
    for field in [
        "hash",
        "payer",
        "payTo",
        "amount",
        "state",
        "reason",
        "mechanism",
        "resource",
        "settledAt",
        "updatedAt",
        "redemptions",
    ] {
        assert!(p.get(field).is_some(), "{field} missing in {p}");
    }
    assert_eq!(p["payTo"], json!(payee().to_address()));
    assert_eq!(p["resource"], RESOURCE);
    assert_eq!(p["mechanism"], SIGNED_BLOCK);
    let one = payers[3].public_key().to_address();
    let mine = admin_payments(&sc, &format!("payer={one}&route={RESOURCE}")).await;
    assert_eq!(mine["payments"][0]["state"], "admitted");
    // Paging: 4 payments, 3 per page.
    let first = admin_payments(&sc, "limit=3").await;
    assert_eq!(first["payments"].as_array().map(Vec::len), Some(3));
    let cursor = first["next"].as_str().expect("a next page").to_owned();
    let second = admin_payments(&sc, &format!("limit=3&cursor={cursor}")).await;
    assert_eq!(second["payments"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["next"], Value::Null);
    let r = http()
        .get(format!("{}{}?limit=5000", sc.base, paths::ADMIN_PAYMENTS))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("payments");
    assert_eq!(r.status(), 400);

    let text = http()
        .get(format!("{}{}", sc.base, paths::METRICS))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        text.contains("nanogate_payments{state=\"served\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("nanogate_payments{state=\"redeemable\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("nanogate_payments{state=\"admitted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("nanogate_payments{state=\"owed\"} 0"),
        "{text}"
    );
    let raw: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("nanogate_payments_raw{state=\"served\"} "))
        .and_then(|v| v.parse().ok())
        .expect("raw sum of served payments");
    assert_eq!(raw, 2.0 * PRICE as f64);
    sc.stop().await;
    d.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn challenge_key_lists_retired_keys_and_a_pay_holds_the_routes_upstream_timeout() {
    let payer = key(68);
    let d = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sc = Sidecar::start(&shipped(&d, &db)).await;

    // Retired keys: older than the previous one, within the redemption horizon (3600 + 60 +
    // 600 s with the defaults, 300 s periods), each the key the sidecar derives for its id.
    let v: Value = http()
        .get(format!("{}{}", sc.base, paths::CHALLENGE_KEY))
        .header(headers::SECRET, FILTER_SECRET)
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    let previous = v["previous"]["keyId"].as_u64().expect("previous");
    let retired = v["retired"].as_array().expect("retired");
    assert!((13..=15).contains(&retired.len()), "{v}");
    let keys = ChallengeKeys::new(CHALLENGE_SECRET.as_bytes().to_vec(), 300);
    for (i, r) in retired.iter().enumerate() {
        let id = r["keyId"].as_u64().expect("keyId");
        assert_eq!(id, previous - 1 - i as u64, "newest first, contiguous");
        assert_eq!(r["key"], json!(keys.current(id * 300).key.to_hex()));
    }

    // The lease of an admission is the upstream timeout the filter sends, plus 5 s.
    let req = challenge();
    let block = good_block(&d, &payer, PRICE, payee());
    let v: Value = http()
        .post(format!("{}{}", sc.base, paths::PAY))
        .header(headers::SECRET, FILTER_SECRET)
        .json(&json!({"resource": RESOURCE, "requirements": req,
            "payment": payment(&req, &block), "upstreamTimeoutMs": 300_000}))
        .send()
        .await
        .expect("pay")
        .json()
        .await
        .expect("json");
    assert_admit(&v);
    let rec = sc
        .state
        .engine
        .store()
        .spent(&format!("{NETWORK}:{}", block.hash().to_hex()))
        .await
        .expect("store")
        .expect("row");
    assert!(rec.lease_until >= rec.settled_at + 305, "{rec:?}");
    assert!(rec.lease_until <= rec.settled_at + 306, "{rec:?}");
    sc.stop().await;
    d.shutdown().await;
}

/// `POST /v1/pay` with `body`, as the filter calls it: the verdict.
async fn pay_body(sc: &Sidecar, body: &Value) -> Value {
    let resp = http()
        .post(format!("{}{}", sc.base, paths::PAY))
        .header(headers::SECRET, FILTER_SECRET)
        .json(body)
        .send()
        .await
        .expect("pay");
    assert_eq!(resp.status(), 200, "verdicts are always HTTP 200");
    resp.json().await.expect("verdict json")
}

#[tokio::test]
async fn a_forwarded_payment_header_is_read_as_sent_and_a_mutated_one_is_refused_saying_why() {
    // The filter forwards the client's `PAYMENT-SIGNATURE` value as it came (`paymentHeader`).
    // Whatever reaches the sidecar in that field (oversized, not base64, not JSON, or sent
    // beside a decoded `payment`) is refused with a reason that names the problem, and costs
    // the payer nothing: the genuine header then buys one admission, and only one.
    let payer = key(64);
    let d = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sc = Sidecar::start(&devnet_config(&d, &db)).await;
    let req = challenge();
    let block = good_block(&d, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let genuine = encode_header(&p);
    let body =
        |header: &str| json!({"resource": RESOURCE, "requirements": req, "paymentHeader": header});

    let oversized = "A".repeat(MAX_HEADER_BYTES + 1);
    let mut not_base64 = genuine.clone();
    not_base64.replace_range(10..11, "*");
    let not_json = encode_bytes(&serde_json::to_vec(&p).expect("json")[..40]);
    for (what, header, says) in [
        ("oversized", oversized.as_str(), "over the 8192-byte cap"),
        ("not base64", not_base64.as_str(), "not base64"),
        ("not JSON", not_json.as_str(), "not JSON"),
    ] {
        let v = pay_body(&sc, &body(header)).await;
        assert_reject(&v, "invalid_payload");
        assert_eq!(v["status"], 400, "{what}: {v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {v}");
    }
    let mut both = body(&genuine);
    both["payment"] = p.clone();
    let v = pay_body(&sc, &both).await;
    assert_reject(&v, "invalid_payload");
    assert_eq!(v["status"], 400, "{v}");
    assert!(
        v["message"].as_str().unwrap_or_default().contains("both"),
        "{v}"
    );
    let neither = json!({"resource": RESOURCE, "requirements": req});
    assert_reject(&pay_body(&sc, &neither).await, "invalid_payload");

    // None of that touched the payment: the genuine header is admitted, once.
    let v = pay_body(&sc, &body(&genuine)).await;
    assert_admit(&v);
    assert_reject(
        &pay_body(&sc, &body(&genuine)).await,
        "duplicate_settlement",
    );
    // The decoded form of the same payment is the same payment.
    assert_reject(&sc.pay(&req, &p).await, "duplicate_settlement");
    sc.stop().await;
    d.shutdown().await;
}
