//! The facilitator API as the official x402 SDKs read it: `/supported` carries what a client
//! needs to build its block (`extra`), a refusal is HTTP 200 with its reason (the Python SDK
//! reads no other status), 400 only for a body that is not a facilitator request, 503 with the
//! reason and `Retry-After` when the payment cannot be decided; the facilitator-only mode that
//! needs no filter secrets; and seller-side work (`facilitator.attach_work`), bounded per payer.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::{Confirm, RpcMode};
use nanogate_protocol::nano::work::difficulty;
use nanogate_protocol::nano::{Network, PrivateKey, StateBlock};
use nanogate_protocol::x402::PaymentRequirements;
use nanogate_sidecar::config::Config;
use serde_json::{json, Value};

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn post_raw(base: &str, path: &str, body: Vec<u8>) -> Answer {
    let resp = http()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

async fn post(base: &str, path: &str, req: &PaymentRequirements, payment: &Value) -> Answer {
    let body = json!({"x402Version": 2, "paymentPayload": payment, "paymentRequirements": req});
    post_raw(base, path, serde_json::to_vec(&body).unwrap()).await
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

/// A sidecar accepting unbound requirements for [`payee`] (what a stock SDK server sends).
fn unbound_config(devnet: &nanogate_devnet::Devnet, db: &Db) -> Config {
    let mut cfg = devnet_config(devnet, db);
    cfg.facilitator.allow_unbound = true;
    cfg.facilitator.pay_to = vec![payee().to_address()];
    cfg
}

async fn supported(base: &str) -> Value {
    http()
        .get(format!("{base}{}", paths::SUPPORTED))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A correct payment without valid work: work below even the devnet's entry threshold, so the
/// node refuses the block unless work is attached (the work field is not signed: the block
/// stays validly signed). A fixed zero would meet the dev send threshold for one root in 1024.
fn workless_block(devnet: &nanogate_devnet::Devnet, payer: &PrivateKey) -> StateBlock {
    let mut block = good_block(devnet, payer, PRICE, payee());
    let entry = Network::Dev.thresholds().entry();
    block.work = (0..)
        .find(|w| difficulty(&block.root(), *w) < entry)
        .unwrap();
    assert!(block.signature_valid());
    block
}

#[tokio::test]
async fn supported_carries_the_work_threshold_of_the_nodes_network() {
    let devnet = devnet(&[], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&devnet_config(&devnet, &db)).await;
    let v = supported(&sidecar.base).await;
    let kinds = v["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 2, "{v}");
    for kind in kinds {
        assert_eq!(kind["scheme"], SCHEME_EXACT);
        assert_eq!(kind["network"], NETWORK);
        // The dev network's send threshold, not mainnet's (clients would ask the node for
        // work it refuses to generate).
        assert_eq!(
            kind["extra"],
            json!({"asset": "XNO", "workThreshold": "ffc0000000000000", "work": "required"}),
            "{v}"
        );
    }
    sidecar.stop().await;

    let mut cfg = devnet_config(&devnet, &db);
    cfg.facilitator.attach_work = true;
    let sidecar = Sidecar::start(&cfg).await;
    let v = supported(&sidecar.base).await;
    assert_eq!(v["kinds"][0]["extra"]["work"], "optional", "{v}");
    sidecar.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn a_refusal_is_200_with_its_reason_and_only_a_malformed_body_is_400() {
    let payer = key(101);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&unbound_config(&devnet, &db)).await;
    let req = unbound(PRICE);
    // A payment without a block: the Python SDK turned the former 400 into "Facilitator
    // verify failed (400)", losing the reason.
    let no_block = json!({"x402Version": 2, "accepted": req, "payload": {}});
    let v = post(&sidecar.base, paths::VERIFY, &req, &no_block).await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["isValid"], false);
    assert_eq!(v.body["invalidReason"], "invalid_payload");
    let s = post(&sidecar.base, paths::SETTLE, &req, &no_block).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["success"], false);
    assert_eq!(s.body["errorReason"], "invalid_payload");
    // Requirements we cannot read are a refusal too.
    let mut bad = serde_json::to_value(&req).unwrap();
    bad["amount"] = json!(12);
    let body = json!({"x402Version": 2, "paymentPayload": no_block, "paymentRequirements": bad});
    let v = post_raw(
        &sidecar.base,
        paths::VERIFY,
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["invalidReason"], "invalid_payment_requirements");
    // Underpayment: 200, amount_mismatch.
    let under = good_block(&devnet, &payer, PRICE - 1, payee());
    let v = post(&sidecar.base, paths::VERIFY, &req, &payment(&req, &under)).await;
    assert_eq!(
        (v.status, v.body["invalidReason"].as_str()),
        (200, Some("amount_mismatch"))
    );
    // Not a facilitator request at all: 400, still with a body naming the reason.
    for raw in [&b"not json"[..], b"{}", b"{\"x402Version\":2}"] {
        for path in [paths::VERIFY, paths::SETTLE] {
            let a = post_raw(&sidecar.base, path, raw.to_vec()).await;
            assert_eq!(a.status, 400, "{path} {}", String::from_utf8_lossy(raw));
            let reason = if path == paths::VERIFY {
                "invalidReason"
            } else {
                "errorReason"
            };
            assert_eq!(a.body[reason], "invalid_payload", "{}", a.body);
        }
    }
    sidecar.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn an_undecidable_payment_is_503_with_its_reason_and_retry_after() {
    let payer = key(102);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&unbound_config(&devnet, &db)).await;
    let req = unbound(PRICE);
    let block = good_block(&devnet, &payer, PRICE, payee());
    devnet.faults().set_rpc(RpcMode::Refuse);
    let v = post(&sidecar.base, paths::VERIFY, &req, &payment(&req, &block)).await;
    assert_eq!(v.status, 503, "{}", v.body);
    assert!(v.retry_after.is_some());
    assert_eq!(v.body["isValid"], false);
    assert_eq!(v.body["invalidReason"], "ledger_unavailable");
    let s = post(&sidecar.base, paths::SETTLE, &req, &payment(&req, &block)).await;
    assert_eq!(s.status, 503, "{}", s.body);
    assert!(s.retry_after.is_some());
    assert_eq!(s.body["errorReason"], "ledger_unavailable");
    assert!(!devnet.ledger().contains(&block.hash()));
    // The same payment settles once the node is back: nothing was lost.
    devnet.faults().set_rpc(RpcMode::Normal);
    let s = post(&sidecar.base, paths::SETTLE, &req, &payment(&req, &block)).await;
    assert_eq!(
        (s.status, &s.body["success"]),
        (200, &json!(true)),
        "{}",
        s.body
    );
    sidecar.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn facilitator_only_needs_no_filter_secrets_and_serves_no_filter_api() {
    let payer = key(103);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let mut cfg = unbound_config(&devnet, &db);
    cfg.filter_secret = None;
    cfg.challenge_secret = None;
    // Without the mode, the secrets are still required.
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("filter_secret"), "{err}");
    cfg.facilitator.only = true;
    cfg.validate().unwrap();
    // The mode needs the facilitator token, and without a challenge secret, unbound requirements.
    let mut no_token = cfg.clone();
    no_token.facilitator.token = None;
    let err = no_token.validate().unwrap_err().to_string();
    assert!(err.contains("facilitator.token"), "{err}");
    let mut bound_only = cfg.clone();
    bound_only.facilitator.allow_unbound = false;
    let err = bound_only.validate().unwrap_err().to_string();
    assert!(err.contains("allow_unbound"), "{err}");

    // Without a challenge secret the pass keys, like the challenge keys, come from random bytes:
    // never from an empty, public secret.
    let store = nanogate_sidecar::store::sqlite::SqliteStore::open("sqlite::memory:", 1)
        .await
        .unwrap();
    let state = nanogate_sidecar::server::state_with(
        &cfg,
        std::sync::Arc::new(store),
        std::sync::Arc::new(nanogate_sidecar::ledger::fake::FakeLedger::new()),
        std::sync::Arc::new(nanogate_sidecar::metrics::Metrics::new()),
    )
    .unwrap();
    let published = state.passes.published(1_700_000_000);
    assert!(!published.is_empty());
    for entry in published {
        let public = nanogate_protocol::contract::pass::PassKey::derive(b"", entry.key_id);
        assert_ne!(
            entry.key, public,
            "pass key {} from an empty secret",
            entry.key_id
        );
    }

    let sidecar = Sidecar::start(&cfg).await;
    // The filter API and /v1/challenge are not served at all, whatever secret is sent (an
    // empty one included).
    for path in [
        paths::PAY,
        paths::OUTCOME,
        paths::SESSIONS,
        paths::CHALLENGE,
    ] {
        for secret in ["", FILTER_SECRET] {
            let r = http()
                .post(format!("{}{path}", sidecar.base))
                .header(headers::SECRET, secret)
                .bearer_auth(TOKEN)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{path}");
        }
    }
    let r = http()
        .get(format!("{}{}", sidecar.base, paths::CHALLENGE_KEY))
        .header(headers::SECRET, "")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A requirement with a forged MAC is not taken for one we issued (no key is known).
    let mut forged = challenge();
    forged.pay_to = payee().to_address();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let v = post(
        &sidecar.base,
        paths::VERIFY,
        &forged,
        &payment(&forged, &block),
    )
    .await;
    assert_eq!(v.body["isValid"], false, "{}", v.body);
    // The facilitator API works.
    let req = unbound(PRICE);
    let s = post(&sidecar.base, paths::SETTLE, &req, &payment(&req, &block)).await;
    assert_eq!(
        (s.status, &s.body["success"]),
        (200, &json!(true)),
        "{}",
        s.body
    );
    assert!(devnet.ledger().contains(&block.hash()));
    sidecar.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn without_attach_work_a_block_without_work_is_refused() {
    let payer = key(104);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&unbound_config(&devnet, &db)).await;
    let req = unbound(PRICE);
    let block = workless_block(&devnet, &payer);
    let s = post(&sidecar.base, paths::SETTLE, &req, &payment(&req, &block)).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.body["errorReason"], "insufficient_work", "{}", s.body);
    assert!(!devnet.ledger().contains(&block.hash()));
    sidecar.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn the_seller_attaches_work_after_every_other_check_within_the_payer_bound() {
    let payer = key(105);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let mut cfg = unbound_config(&devnet, &db);
    cfg.facilitator.attach_work = true;
    let per_payer = cfg.work.per_payer_per_min;
    let sidecar = Sidecar::start(&cfg).await;
    let req = unbound(PRICE);

    // A block failing another check costs no work and no allowance: the underpayment is
    // refused for what it is, as many times as the payer's allowance, and afterwards.
    for _ in 0..=per_payer {
        let mut under = good_block(&devnet, &payer, PRICE - 1, payee());
        under.work = workless_block(&devnet, &payer).work;
        let s = post(&sidecar.base, paths::SETTLE, &req, &payment(&req, &under)).await;
        assert_eq!(s.body["errorReason"], "amount_mismatch", "{}", s.body);
    }

    // /verify accepts a block without work (read-only: it generates none).
    let block = workless_block(&devnet, &payer);
    let v = post(&sidecar.base, paths::VERIFY, &req, &payment(&req, &block)).await;
    assert_eq!(v.body["isValid"], true, "{}", v.body);

    // Settlement attaches work: the devnet, which checks work, takes the block under the
    // hash the payer signed.
    for i in 0..per_payer {
        let block = workless_block(&devnet, &payer);
        let s = post(&sidecar.base, paths::SETTLE, &req, &payment(&req, &block)).await;
        assert_eq!(s.body["success"], true, "payment {i}: {}", s.body);
        assert_eq!(s.body["transaction"], block.hash().to_hex());
        assert!(devnet.ledger().contains(&block.hash()));
    }
    // The payer's allowance for the minute is used up: refused with a wait, nothing lost.
    let block = workless_block(&devnet, &payer);
    let s = post(&sidecar.base, paths::SETTLE, &req, &payment(&req, &block)).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["errorReason"], "rate_limited", "{}", s.body);
    assert!(s.retry_after.is_some());
    assert!(!devnet.ledger().contains(&block.hash()));
    // The same payer with its own work is not bounded.
    let own = good_block(&devnet, &payer, PRICE, payee());
    let s = post(&sidecar.base, paths::SETTLE, &req, &payment(&req, &own)).await;
    assert_eq!(s.body["success"], true, "{}", s.body);
    sidecar.stop().await;
    devnet.shutdown().await;
}
