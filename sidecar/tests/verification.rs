//! Every rejection reason of the filter API, each named for the attack it stops, against an
//! in-process devnet and a SQLite store. Invariants: 1 (nothing unpaid passes), 2 (never trust
//! the client's copy), 3 (compare keys; exact amounts), 4 (settle before serving).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::Confirm;
use nanogate_protocol::challenge::{self, ChallengeKey, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::nano::work::difficulty;
use nanogate_protocol::nano::{BlockHash, Network, PublicKey};
use nanogate_sidecar::store::ForkEntry;
use serde_json::{json, Value};
use std::time::Duration;

struct Env {
    devnet: nanogate_devnet::Devnet,
    sidecar: Sidecar,
    db: Db,
}

async fn env(
    payers: &[&nanogate_protocol::nano::PrivateKey],
    confirm: Confirm,
    max_wait: u64,
) -> Env {
    let devnet = devnet(payers, confirm).await;
    let db = Db::sqlite();
    let mut cfg = devnet_config(&devnet, &db);
    cfg.settlement.max_wait_secs = max_wait;
    let sidecar = Sidecar::start(&cfg).await;
    Env {
        devnet,
        sidecar,
        db,
    }
}

impl Env {
    async fn done(self) {
        self.sidecar.stop().await;
        self.devnet.shutdown().await;
        self.db.cleanup().await;
    }
}

#[tokio::test]
async fn honest_payment_is_admitted_with_a_receipt() {
    let payer = key(1);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    let t = std::time::Instant::now();
    let v = e.sidecar.pay(&req, &payment(&req, &block)).await;
    println!(
        "settled in {:?} (includes devnet confirmation delay 20 ms)",
        t.elapsed()
    );
    assert_admit(&v);
    assert_eq!(v["transaction"], block.hash().to_hex());
    assert_eq!(v["payer"], payer.public_key().to_address());
    assert_eq!(e.devnet.ledger().confirmed(&block.hash()), Some(true));
    // The PAYMENT-RESPONSE header decodes to a successful settlement.
    let header: nanogate_protocol::x402::SettlementResponse =
        nanogate_protocol::x402::decode_header(
            v["paymentResponse"].as_str().unwrap(),
            nanogate_protocol::x402::MAX_HEADER_BYTES,
        )
        .unwrap();
    assert!(header.success);
    assert_eq!(header.transaction, block.hash().to_hex());
    assert_eq!(header.network, NETWORK);
    e.done().await;
}

#[tokio::test]
async fn missing_or_wrong_filter_secret_is_401() {
    let e = env(&[], Confirm::AfterMs(20), 5).await;
    for secret in [None, Some("wrong-secret-wrong-secret")] {
        let mut r = http()
            .post(format!("{}{}", e.sidecar.base, paths::PAY))
            .json(&json!({}));
        if let Some(s) = secret {
            r = r.header(headers::SECRET, s);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().get(headers::VERDICT).is_none());
        let resp = http()
            .get(format!("{}{}", e.sidecar.base, paths::CHALLENGE_KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let metrics = http()
        .get(format!("{}{}", e.sidecar.base, paths::METRICS))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("nanogate_auth_failures_total{api=\"filter\"}"));
    assert!(!metrics.contains(FILTER_SECRET) && !metrics.contains(CHALLENGE_SECRET));
    e.done().await;
}

#[tokio::test]
async fn challenge_key_is_current_and_mints_accepted_challenges() {
    let payer = key(2);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let k: Value = http()
        .get(format!("{}{}", e.sidecar.base, paths::CHALLENGE_KEY))
        .header(headers::SECRET, FILTER_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = k["keyId"].as_u64().unwrap();
    assert!(k["notAfter"].as_u64().unwrap() > now());
    let key = ChallengeKey::from_hex(k["key"].as_str().unwrap()).unwrap();
    // The filter mints with the fetched key; the sidecar accepts it.
    let mut req = challenge();
    let stamp = ChallengeStamp {
        valid_before: now() + 60,
        nonce: rand::random(),
        key_id,
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
    req.extra = challenge::extra(&key, &terms, &stamp);
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    assert_admit(&e.sidecar.pay(&req, &payment(&req, &block)).await);
    e.done().await;
}

#[tokio::test]
async fn forged_challenge_is_refused_invalid_challenge() {
    let payer = key(3);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    // A MAC the attacker made up.
    let mut req = challenge();
    req.extra.insert("mac".into(), json!("00".repeat(32)));
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "invalid_challenge",
    );
    // A MAC under a key not derived from our master secret.
    let mut req = challenge();
    let stamp = ChallengeStamp {
        valid_before: now() + 60,
        nonce: rand::random(),
        key_id: req.extra["keyId"].as_u64().unwrap(),
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
    req.extra = challenge::extra(
        &ChallengeKey::derive(b"attacker's own secret!!", stamp.key_id),
        &terms,
        &stamp,
    );
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "invalid_challenge",
    );
    // No stamp at all.
    let mut req = challenge();
    req.extra.clear();
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "invalid_challenge",
    );
    assert!(
        !e.devnet.ledger().contains(&block.hash()),
        "nothing was broadcast"
    );
    e.done().await;
}

#[tokio::test]
async fn mutated_amount_is_refused_invalid_challenge() {
    let payer = key(4);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    // The client was challenged for PRICE, edits its copy to PRICE/10 and pays that; the filter
    // rebuilds the terms from its route (PRICE) with the echoed stamp: the MAC fails.
    let cheap = challenge_for(RESOURCE, PRICE / 10, payee(), 60);
    let mut rebuilt = cheap.clone();
    rebuilt.amount = PRICE.to_string();
    let block = good_block(&e.devnet, &payer, PRICE / 10, payee());
    assert_reject(
        &e.sidecar.pay(&rebuilt, &payment(&cheap, &block)).await,
        "invalid_challenge",
    );
    // Same with a mutated payee.
    let mut rebuilt = challenge();
    let attacker = key(99).public_key();
    let stamp_only = rebuilt.extra.clone();
    rebuilt.pay_to = attacker.to_address();
    rebuilt.extra = stamp_only;
    let block = good_block(&e.devnet, &payer, PRICE, attacker);
    assert_reject(
        &e.sidecar.pay(&rebuilt, &payment(&rebuilt, &block)).await,
        "invalid_challenge",
    );
    e.done().await;
}

#[tokio::test]
async fn expired_challenge_is_refused_challenge_expired() {
    let payer = key(5);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge_for(RESOURCE, PRICE, payee(), 0);
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "challenge_expired",
    );
    e.done().await;
}

#[tokio::test]
async fn challenge_under_a_retired_key_is_refused_invalid_challenge() {
    let payer = key(6);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let old_id = now() / 300 - 2;
    let stamp = ChallengeStamp {
        valid_before: now() + 60,
        nonce: rand::random(),
        key_id: old_id,
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
    let mut req = challenge();
    req.extra = challenge::extra(
        &ChallengeKey::derive(CHALLENGE_SECRET.as_bytes(), old_id),
        &terms,
        &stamp,
    );
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "invalid_challenge",
    );
    e.done().await;
}

#[tokio::test]
async fn cross_route_challenge_is_refused_resource_mismatch() {
    let payer = key(7);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    // A genuine challenge for a cheap route, presented on the paid route at the same price.
    let cheap_url = "http://api.test/cheap";
    let other = challenge_for(cheap_url, PRICE, payee(), 60);
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    let mut p = payment(&other, &block);
    p["resource"]["url"] = json!(cheap_url);
    // The filter rebuilds from the paid route's config and the request URL (RESOURCE).
    assert_reject(&e.sidecar.pay(&other, &p).await, "resource_mismatch");
    e.done().await;
}

#[tokio::test]
async fn nonce_reused_for_another_payment_is_refused_invalid_challenge() {
    let payer = key(8);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let first = good_block(&e.devnet, &payer, PRICE, payee());
    assert_admit(&e.sidecar.pay(&req, &payment(&req, &first)).await);
    // The same challenge (nonce) cannot buy a second request with another payment.
    let second = good_block(&e.devnet, &payer, PRICE, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &second)).await,
        "invalid_challenge",
    );
    e.done().await;
}

#[tokio::test]
async fn wrong_destination_is_refused_wrong_destination() {
    let payer = key(9);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let block = good_block(&e.devnet, &payer, PRICE, key(98).public_key());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "wrong_destination",
    );
    e.done().await;
}

#[tokio::test]
async fn link_as_account_spoof_is_refused_wrong_destination() {
    let payer = key(10);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    // Signed `link` pays the attacker; the unsigned `link_as_account` claims the payee.
    let block = good_block(&e.devnet, &payer, PRICE, key(97).public_key());
    let mut p = payment(&req, &block);
    p["payload"]["block"]["link_as_account"] = json!(payee().to_address());
    assert_reject(&e.sidecar.pay(&req, &p).await, "wrong_destination");
    e.done().await;
}

#[tokio::test]
async fn bad_signature_is_refused_invalid_signature() {
    let payer = key(11);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let mut block = good_block(&e.devnet, &payer, PRICE, payee());
    block.signature.0[0] ^= 1;
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "invalid_signature",
    );
    // Signed by someone else for the payer's account.
    let mut block = good_block(&e.devnet, &payer, PRICE, payee());
    block.sign(&key(96));
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "invalid_signature",
    );
    e.done().await;
}

#[tokio::test]
async fn cheap_work_is_refused_insufficient_work() {
    let payer = key(12);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let mut block = good_block(&e.devnet, &payer, PRICE, payee());
    let threshold = Network::Dev.thresholds().send();
    block.work = (0u64..)
        .find(|w| difficulty(&block.root(), *w) < threshold)
        .unwrap();
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "insufficient_work",
    );
    e.done().await;
}

#[tokio::test]
async fn block_on_an_old_frontier_is_refused_stale_frontier() {
    let payer = key(13);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let (frontier, balance) = head(&e.devnet, &payer);
    let req = challenge();
    let spent_first = good_block(&e.devnet, &payer, PRICE, payee());
    assert_admit(&e.sidecar.pay(&req, &payment(&req, &spent_first)).await);
    // Built on the frontier before the payer's last send.
    let req = challenge();
    let stale = send_block(&payer, frontier, balance - PRICE * 2, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &stale)).await,
        "stale_frontier",
    );
    // Built on a previous that never existed.
    let req = challenge();
    let bogus = send_block(&payer, BlockHash([7; 32]), balance - PRICE, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &bogus)).await,
        "stale_frontier",
    );
    // An account that was never opened.
    let req = challenge();
    let ghost = send_block(&key(95), BlockHash([8; 32]), 0, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &ghost)).await,
        "stale_frontier",
    );
    e.done().await;
}

#[tokio::test]
async fn underpay_is_refused_amount_mismatch() {
    let payer = key(14);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let block = good_block(&e.devnet, &payer, PRICE - 1, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "amount_mismatch",
    );
    e.done().await;
}

#[tokio::test]
async fn overpay_is_refused_amount_mismatch() {
    let payer = key(15);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let block = good_block(&e.devnet, &payer, PRICE + 1, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "amount_mismatch",
    );
    // A "send" that raises the balance (a receive in disguise) is no payment either.
    let (frontier, balance) = head(&e.devnet, &payer);
    let req = challenge();
    let up = send_block(&payer, frontier, balance + PRICE, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &up)).await,
        "amount_mismatch",
    );
    e.done().await;
}

#[tokio::test]
async fn another_block_in_flight_on_the_frontier_is_refused_duplicate_frontier() {
    let payer = key(16);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    // Another replica holds the frontier for a competing block.
    let now = now() as i64;
    let entry = ForkEntry {
        frontier_key: format!(
            "{NETWORK}:{}:{}",
            block.account.to_hex(),
            block.previous.to_hex()
        ),
        block_hash: BlockHash([9; 32]).to_hex(),
        nonce: None,
        owner: "other-replica".into(),
        lease_until: now + 30,
        expires_at: now + 60,
        terms: None,
    };
    assert!(e
        .sidecar
        .state
        .engine
        .store()
        .fork_claim(&entry, now)
        .await
        .unwrap());
    let req = challenge();
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "duplicate_frontier",
    );
    assert!(!e.devnet.ledger().contains(&block.hash()));
    e.done().await;
}

#[tokio::test]
async fn replay_of_a_consumed_block_is_refused_already_spent() {
    let payer = key(17);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    let v = e.sidecar.pay(&req, &payment(&req, &block)).await;
    assert_admit(&v);
    e.sidecar.outcome(v["receipt"].as_str().unwrap(), 200).await;
    // Same challenge, same block.
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "already_spent",
    );
    // A fresh challenge with the already consumed block (e.g. copied from the ledger).
    let req2 = challenge();
    assert_reject(
        &e.sidecar.pay(&req2, &payment(&req2, &block)).await,
        "already_spent",
    );
    e.done().await;
}

#[tokio::test]
async fn fork_published_after_verification_buys_nothing_fork_lost() {
    let payer = key(18);
    let e = env(&[&payer], Confirm::AfterMs(50), 5).await;
    let (frontier, balance) = head(&e.devnet, &payer);
    let req = challenge();
    let block = send_block(&payer, frontier, balance - PRICE, payee());
    // The payer races a conflicting send to itself on the same previous, and it wins.
    let competitor = send_block(&payer, frontier, balance - PRICE, key(94).public_key());
    e.devnet.faults().fork_instead(frontier, competitor.clone());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &block)).await,
        "fork_lost",
    );
    assert_eq!(e.devnet.ledger().confirmed(&competitor.hash()), Some(true));
    assert_ne!(e.devnet.ledger().confirmed(&block.hash()), Some(true));
    e.done().await;
}

#[tokio::test]
async fn unconfirmed_block_is_refused_block_not_confirmed_then_redeemable_once_confirmed() {
    let payer = key(19);
    let e = env(&[&payer], Confirm::Never, 1).await;
    let req = challenge();
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    assert_reject(&e.sidecar.pay(&req, &p).await, "block_not_confirmed");
    assert!(
        e.devnet.ledger().contains(&block.hash()),
        "the block was broadcast"
    );
    // While unconfirmed, no other block on that frontier can be paid (the frontier moved, and
    // the fork-set entry stays).
    let req2 = challenge();
    let (frontier, balance) = (
        block.previous,
        e.devnet.ledger().balance(&payer.public_key()) + PRICE,
    );
    let mut rival = send_block(&payer, frontier, balance - PRICE, payee());
    rival.representative = key(93).public_key();
    rival.sign(&payer);
    assert_ne!(rival.hash(), block.hash());
    let v = e.sidecar.pay(&req2, &payment(&req2, &rival)).await;
    assert_eq!(verdict(&v), "reject");
    assert!(
        ["duplicate_frontier", "stale_frontier"].contains(&reason(&v)),
        "{v}"
    );
    // The block confirms later; presenting the same payment again admits it, once.
    e.devnet.faults().set_confirming(true);
    assert!(
        e.devnet
            .ledger()
            .wait_confirmed(&block.hash(), Duration::from_secs(10))
            .await
    );
    let v = e.sidecar.pay(&req, &p).await;
    assert_admit(&v);
    assert_reject(&e.sidecar.pay(&req, &p).await, "duplicate_settlement");
    e.done().await;
}

#[tokio::test]
async fn malformed_payments_are_refused_with_their_own_reasons() {
    let payer = key(20);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    let good = payment(&req, &block);

    let mut p = good.clone();
    p["payload"]["block"]["balance"] = json!("-5");
    let v = e.sidecar.pay(&req, &p).await;
    assert_reject(&v, "invalid_payload");
    assert_eq!(v["status"], 400);

    let mut p = good.clone();
    p["payload"] = json!({"blok": {}});
    assert_reject(&e.sidecar.pay(&req, &p).await, "invalid_payload");

    assert_reject(
        &e.sidecar.pay(&req, &json!("not an object")).await,
        "invalid_payload",
    );

    let mut p = good.clone();
    p["x402Version"] = json!(3);
    assert_reject(&e.sidecar.pay(&req, &p).await, "invalid_x402_version");

    let mut p = good.clone();
    p["accepted"]["scheme"] = json!("upto");
    assert_reject(&e.sidecar.pay(&req, &p).await, "invalid_scheme");

    let mut p = good.clone();
    p["accepted"]["network"] = json!("nano:mainnet");
    assert_reject(&e.sidecar.pay(&req, &p).await, "invalid_network");

    let mut r = req.clone();
    r.asset = "USDC".into();
    assert_reject(
        &e.sidecar.pay(&r, &good).await,
        "invalid_payment_requirements",
    );

    // A malformed /v1/pay body is still a verdict (never a bare error the filter could misread).
    let resp = http()
        .post(format!("{}{}", e.sidecar.base, paths::PAY))
        .header(headers::SECRET, FILTER_SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[headers::VERDICT], headers::VERDICT_MARKER);
    let v: Value = resp.json().await.unwrap();
    assert_reject(&v, "invalid_payload");

    // None of that broadcast anything, and the honest payment still goes through.
    assert!(!e.devnet.ledger().contains(&block.hash()));
    assert_admit(&e.sidecar.pay(&req, &good).await);
    e.done().await;
}

#[tokio::test]
async fn v1_x_payment_is_accepted() {
    let payer = key(21);
    let e = env(&[&payer], Confirm::AfterMs(20), 5).await;
    let req = challenge();
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    let p = json!({"x402Version": 1, "scheme": SCHEME_EXACT, "network": NETWORK,
                   "payload": {"block": block.to_json()}});
    assert_admit(&e.sidecar.pay(&req, &p).await);
    let _ = PublicKey::ZERO;
    e.done().await;
}

#[tokio::test]
async fn block_sent_in_time_but_confirmed_after_expiry_is_still_admitted_once() {
    let payer = key(22);
    let e = env(&[&payer], Confirm::Never, 5).await;
    // Short validity: the wait for confirmation is cut by the challenge's validBefore.
    let req = challenge_for(RESOURCE, PRICE, payee(), 2);
    let valid_before = req.extra["validBefore"].as_u64().unwrap();
    let block = good_block(&e.devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    assert_reject(&e.sidecar.pay(&req, &p).await, "block_not_confirmed");
    while now() <= valid_before {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    e.devnet.faults().set_confirming(true);
    assert!(
        e.devnet
            .ledger()
            .wait_confirmed(&block.hash(), Duration::from_secs(10))
            .await
    );
    // The expired challenge buys nothing new ...
    let (frontier, balance) = head(&e.devnet, &payer);
    let other = send_block(&payer, frontier, balance - PRICE, payee());
    assert_reject(
        &e.sidecar.pay(&req, &payment(&req, &other)).await,
        "invalid_challenge",
    );
    // ... but the payment it carried in time is not lost: admitted once.
    assert_admit(&e.sidecar.pay(&req, &p).await);
    e.done().await;
}
