//! End-to-end behaviour of the payer against a devnet ledger and an in-test resource server.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_client::{
    build_payment, parse_challenge, select_offer, AccountInfo, JournalEntry, PayError, Payer,
    Progress, RequestSpec,
};
use nanogate_devnet::blocks;
use nanogate_protocol::nano::{BlockHash, PrivateKey, RAW_PER_XNO};
use nanogate_protocol::x402::encode_header;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn pays_once_and_returns_the_receipt() {
    let f = Fixture::start("pays-once").await;
    let before = f.balance();
    let resp = f
        .payer()
        .fetch(RequestSpec::get(f.url("/paid")))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.paid);
    assert!(resp.body_text().contains("paid content"));
    let receipt = resp.receipt.clone().unwrap();
    let payment = resp.payment.clone().unwrap();
    assert!(receipt.success);
    assert_eq!(receipt.transaction, payment.hash);
    assert!(resp.receipt_matches);
    assert!(!payment.re_presented);
    assert_eq!(payment.amount_raw, PRICE);
    // The ledger moved exactly the price, once, and the block is confirmed.
    assert_eq!(f.balance(), before - PRICE);
    let hash = BlockHash::from_hex(&payment.hash).unwrap();
    assert_eq!(f.devnet.ledger().confirmed(&hash), Some(true));
    assert_eq!(f.shop.state.settlements.load(Ordering::SeqCst), 1);
    // The journal entry is gone after the matching receipt.
    let payer = f.payer();
    assert!(payer.journal().entries().unwrap().is_empty());
    // The accepted offer went back verbatim, with the resource.
    let (name, sent) = f.shop.state.last_payment.lock().unwrap().clone().unwrap();
    assert_eq!(name, "PAYMENT-SIGNATURE");
    assert_eq!(
        sent["accepted"],
        f.shop.state.last_offer.lock().unwrap().clone().unwrap()
    );
    assert_eq!(sent["x402Version"], 2);
    assert_eq!(sent["resource"]["url"], f.url("/paid"));
    assert!(sent["payload"]["block"]["link_as_account"].is_string());
    // Progress was reported in order.
    let ev = f.events();
    let pos = |pred: &dyn Fn(&Progress) -> bool| ev.iter().position(pred).unwrap();
    let challenge = pos(&|p| matches!(p, Progress::Challenge { .. }));
    let signing = pos(&|p| matches!(p, Progress::Signing { .. }));
    let paying = pos(&|p| matches!(p, Progress::Paying { .. }));
    let confirmed = pos(&|p| matches!(p, Progress::Confirmed { .. }));
    assert!(challenge < signing && signing < paying && paying < confirmed);
    assert!(ev[challenge]
        .to_string()
        .starts_with("402: 0.001 XNO to nano_"));
}

#[tokio::test]
async fn refuses_over_max_without_signing() {
    let f = Fixture::start("over-max").await;
    let before = f.balance();
    let mut cfg = f.config();
    cfg.max_raw = RAW_PER_XNO / 10_000; // 0.0001 XNO < 0.001
    let payer = Payer::new(cfg).unwrap();
    let err = payer
        .fetch(RequestSpec::get(f.url("/paid")))
        .await
        .unwrap_err();
    match &err {
        PayError::OverMax { price, max } => {
            assert_eq!((*price, *max), (PRICE, RAW_PER_XNO / 10_000));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("0.001 XNO"), "{err}");
    assert!(err.to_string().contains("0.0001 XNO"), "{err}");
    // Nothing signed, nothing journalled, nothing sent, nothing spent.
    assert!(!f.journal_path().exists());
    assert_eq!(f.shop.state.paid_attempts.load(Ordering::SeqCst), 0);
    assert_eq!(f.balance(), before);
    assert!(!f
        .events()
        .iter()
        .any(|p| matches!(p, Progress::Signing { .. })));

    // The default maximum (0.01 XNO) also refuses a 1 XNO route.
    let err = f
        .payer()
        .fetch(RequestSpec::get(f.url("/expensive")))
        .await
        .unwrap_err();
    assert!(matches!(err, PayError::OverMax { .. }), "{err:?}");
    assert_eq!(f.balance(), before);
}

#[tokio::test]
async fn v1_body_challenge_is_paid_with_x_payment() {
    let f = Fixture::start("v1").await;
    let before = f.balance();
    let resp = f
        .payer()
        .fetch(RequestSpec::get(f.url("/v1")))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.paid && resp.receipt_matches);
    assert_eq!(f.balance(), before - PRICE);
    let (name, sent) = f.shop.state.last_payment.lock().unwrap().clone().unwrap();
    assert_eq!(name, "X-PAYMENT");
    assert_eq!(sent["x402Version"], 1);
    assert_eq!(sent["scheme"], "exact");
    assert_eq!(sent["network"], NETWORK);
    assert!(sent.get("accepted").is_none());
}

#[tokio::test]
async fn lost_response_re_presents_the_same_block_and_pays_once() {
    let f = Fixture::start("lost-response").await;
    let before = f.balance();
    f.shop
        .state
        .drop_next_paid_response
        .store(true, Ordering::SeqCst);
    let mut cfg = f.config();
    cfg.http_timeout = Duration::from_secs(3);
    let payer = Payer::new(cfg).unwrap();
    let err = payer
        .fetch(RequestSpec::get(f.url("/paid?q=1")))
        .await
        .unwrap_err();
    let first_hash = match &err {
        PayError::Http {
            hash: Some(hash), ..
        } => hash.clone(),
        other => panic!("{other:?}"),
    };
    assert!(err.to_string().contains("journalled"), "{err}");
    // The server settled it: the money moved once, and the journal still holds the block.
    assert_eq!(f.balance(), before - PRICE);
    let entries = payer.journal().entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries.values().next().unwrap().hash, first_hash);

    // The retry re-presents the same block and the same accepted offer.
    let accepted_first =
        f.shop.state.last_payment.lock().unwrap().clone().unwrap().1["accepted"].clone();
    let resp = payer
        .fetch(RequestSpec::get(f.url("/paid?q=1")))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let payment = resp.payment.clone().unwrap();
    assert!(payment.re_presented);
    assert_eq!(payment.hash, first_hash);
    assert_eq!(resp.receipt.as_ref().unwrap().transaction, first_hash);
    let accepted_again =
        f.shop.state.last_payment.lock().unwrap().clone().unwrap().1["accepted"].clone();
    assert_eq!(accepted_again, accepted_first);
    // Paid exactly once.
    assert_eq!(f.balance(), before - PRICE);
    assert_eq!(f.shop.state.settlements.load(Ordering::SeqCst), 1);
    assert!(payer.journal().entries().unwrap().is_empty());
    assert!(f
        .events()
        .iter()
        .any(|p| matches!(p, Progress::RePresenting { .. })));
}

#[tokio::test]
async fn confirmed_but_refused_is_reported_and_not_paid_again() {
    let f = Fixture::start("paid-refused").await;
    let before = f.balance();
    f.shop
        .state
        .drop_next_paid_response
        .store(true, Ordering::SeqCst);
    f.shop
        .state
        .refuse_re_presentation
        .store(true, Ordering::SeqCst);
    let mut cfg = f.config();
    cfg.http_timeout = Duration::from_secs(3);
    let payer = Payer::new(cfg).unwrap();
    let hash = payer
        .fetch(RequestSpec::get(f.url("/paid")))
        .await
        .unwrap_err()
        .block_hash()
        .unwrap()
        .to_owned();
    let err = payer
        .fetch(RequestSpec::get(f.url("/paid")))
        .await
        .unwrap_err();
    match &err {
        PayError::PaidButRefused {
            hash: h, reason, ..
        } => {
            assert_eq!(h, &hash);
            assert!(reason.contains("duplicate_settlement"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&hash));
    assert_eq!(f.balance(), before - PRICE);
    assert_eq!(f.shop.state.settlements.load(Ordering::SeqCst), 1);
    // The entry stays, so a later retry cannot pay twice either.
    assert_eq!(payer.journal().entries().unwrap().len(), 1);
}

#[tokio::test]
async fn never_published_block_is_dropped_once_the_frontier_moved_on() {
    let f = Fixture::start("stale-entry").await;
    let url = f.url("/paid");
    let payer = f.payer();
    // A journalled payment that was signed but never published…
    let stale = journal_unpublishable(&f, &payer, &url);
    // …and then the account moved on (a send elsewhere).
    let key = payer_key();
    let acct = f.devnet.ledger().account(&key.public_key()).unwrap();
    let other = PrivateKey::from_bytes([5; 32]).public_key();
    let elsewhere = blocks::send(&key, acct.frontier, acct.balance, other, 7);
    f.devnet.ledger().process(&elsewhere).unwrap();
    let before = f.balance();

    let resp = payer.fetch(RequestSpec::get(&url)).await.unwrap();
    assert_eq!(resp.status, 200);
    let payment = resp.payment.unwrap();
    assert!(!payment.re_presented);
    assert_ne!(payment.hash, stale.hash().to_hex());
    assert!(!f.devnet.ledger().contains(&stale.hash()));
    assert_eq!(f.balance(), before - PRICE);
    assert!(f.events().iter().any(
        |p| matches!(p, Progress::Note(n) if n.contains("never saw it") && n.contains("moved on"))
    ));
    assert!(payer.journal().entries().unwrap().is_empty());
}

#[tokio::test]
async fn refused_unpublished_block_on_the_same_frontier_is_paid_under_a_fresh_challenge() {
    let f = Fixture::start("same-frontier").await;
    let url = f.url("/paid");
    let payer = f.payer();
    let old = journal_unpublishable(&f, &payer, &url);
    let before = f.balance();
    let resp = payer.fetch(RequestSpec::get(&url)).await.unwrap();
    assert_eq!(resp.status, 200);
    // Same frontier, price, payee and representative: the very same block (a send is
    // deterministic), now under the server's fresh challenge.
    assert_eq!(resp.payment.unwrap().hash, old.hash().to_hex());
    let (_, sent) = f.shop.state.last_payment.lock().unwrap().clone().unwrap();
    assert_ne!(sent["accepted"], old.json["accepted"]);
    assert_eq!(
        sent["accepted"],
        f.shop.state.last_offer.lock().unwrap().clone().unwrap()
    );
    assert_eq!(f.balance(), before - PRICE);
    assert_eq!(f.shop.state.settlements.load(Ordering::SeqCst), 1);
    assert!(payer.journal().entries().unwrap().is_empty());
}

#[tokio::test]
async fn superseded_block_that_settled_later_is_reported_not_paid_a_third_time() {
    let f = Fixture::start("superseded").await;
    let url = f.url("/paid");
    let payer = f.payer();
    // A: signed on P, refused by the server, but held by someone who publishes it later.
    let a = journal_unpublishable(&f, &payer, &url);
    // B replaces A in the journal (same frontier, also refused), remembering A.
    let b = {
        let key = payer_key();
        let acct = f.devnet.ledger().account(&key.public_key()).unwrap();
        let mut blk = a.block.clone();
        blk.representative = PrivateKey::from_bytes([8; 32]).public_key();
        blk.sign(&key);
        assert_eq!(blk.previous, acct.frontier);
        let mut p = a.clone();
        p.json["payload"]["block"] = blk.to_json();
        p.block = blk;
        p
    };
    let k = nanogate_client::journal_key("GET", &url, b"");
    let mut entry = JournalEntry::new("GET", &url, b"", &b);
    entry.superseded = vec![a.hash().to_hex()];
    payer.journal().put(&k, entry).unwrap();
    // A reaches the ledger after all.
    let before = f.balance();
    f.devnet.ledger().process(&a.block).unwrap();
    assert!(
        f.devnet
            .ledger()
            .wait_confirmed(&a.hash(), Duration::from_secs(10))
            .await
    );
    let err = payer.fetch(RequestSpec::get(&url)).await.unwrap_err();
    match &err {
        PayError::PaidButRefused { hash, .. } => assert_eq!(hash, &a.hash().to_hex()),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.balance(), before - PRICE);
    assert_eq!(f.shop.state.settlements.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn published_but_unconfirmed_block_is_pending_not_paid_again() {
    let f = Fixture::start("pending").await;
    let url = f.url("/paid");
    let payer = f.payer();
    let a = journal_unpublishable(&f, &payer, &url);
    f.devnet.faults().set_confirming(false);
    f.devnet.ledger().process(&a.block).unwrap();
    let before = f.balance();
    let err = payer.fetch(RequestSpec::get(&url)).await.unwrap_err();
    match &err {
        PayError::PaymentPending { hash, .. } => assert_eq!(hash, &a.hash().to_hex()),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("retry later"), "{err}");
    assert_eq!(f.balance(), before);
    assert_eq!(payer.journal().entries().unwrap().len(), 1);
}

#[tokio::test]
async fn upstream_failure_after_paying_keeps_the_payment_for_redemption() {
    let f = Fixture::start("upstream-5xx").await;
    f.shop
        .state
        .fail_next_paid_response
        .store(true, Ordering::SeqCst);
    let payer = f.payer();
    let before = f.balance();
    let resp = payer.fetch(RequestSpec::get(f.url("/paid"))).await.unwrap();
    assert_eq!(resp.status, 502);
    let hash = resp.payment.unwrap().hash;
    assert_eq!(payer.journal().entries().unwrap().len(), 1);
    // The same request again redeems the same payment.
    let resp = payer.fetch(RequestSpec::get(f.url("/paid"))).await.unwrap();
    assert_eq!(resp.status, 200);
    let p = resp.payment.unwrap();
    assert!(p.re_presented);
    assert_eq!(p.hash, hash);
    assert_eq!(f.balance(), before - PRICE);
    assert!(payer.journal().entries().unwrap().is_empty());
}

#[tokio::test]
async fn offer_for_another_network_than_the_node_is_refused_before_signing() {
    let f = Fixture::start("network").await;
    let before = f.balance();
    let err = f
        .payer()
        .fetch(RequestSpec::get(f.url("/mainnet")))
        .await
        .unwrap_err();
    match &err {
        PayError::NetworkMismatch { offer, node } => {
            assert_eq!((offer.as_str(), node.as_str()), ("nano:mainnet", "dev"))
        }
        other => panic!("{other:?}"),
    }
    assert!(!f.journal_path().exists());
    assert_eq!(f.balance(), before);
}

#[tokio::test]
async fn concurrent_identical_requests_each_pay_exactly_once() {
    let f = Fixture::start("concurrent").await;
    let payer = f.payer();
    let before = f.balance();
    let url = f.url("/paid?same=1");
    let (a, b) = tokio::join!(
        payer.fetch(RequestSpec::get(&url)),
        payer.fetch(RequestSpec::get(&url))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.status, b.status), (200, 200));
    assert_ne!(a.payment.unwrap().hash, b.payment.unwrap().hash);
    assert_eq!(f.balance(), before - 2 * PRICE);
    assert!(payer.journal().entries().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_402s_give_clear_errors() {
    let f = Fixture::start("malformed").await;
    let payer = f.payer();
    let err = payer
        .fetch(RequestSpec::get(f.url("/bad-b64")))
        .await
        .unwrap_err();
    assert!(matches!(err, PayError::MalformedChallenge(_)), "{err:?}");
    assert!(err.to_string().contains("PAYMENT-REQUIRED header"), "{err}");
    assert!(err.to_string().contains("base64"), "{err}");

    let err = payer
        .fetch(RequestSpec::get(f.url("/no-offer")))
        .await
        .unwrap_err();
    match &err {
        PayError::NoUsableOffer { reasons } => {
            assert_eq!(reasons.len(), 2);
            assert!(reasons[0].contains("eip155:8453"));
            assert!(reasons[1].contains("extra.session"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!f.journal_path().exists());
    assert_eq!(f.shop.state.paid_attempts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn free_routes_pass_through_unpaid() {
    let f = Fixture::start("free").await;
    let resp = f
        .payer()
        .fetch(RequestSpec::get(f.url("/free")))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(!resp.paid && resp.payment.is_none());
}

#[tokio::test]
async fn node_without_rpc_control_means_local_work() {
    let f = Fixture::start("local-work").await;
    let (rpc, refused) = start_no_control_rpc(f.devnet.rpc_url()).await;
    let mut cfg = f.config();
    cfg.rpc_url = rpc;
    let before = f.balance();
    let resp = Payer::new(cfg)
        .unwrap()
        .fetch(RequestSpec::post(f.url("/paid"), b"{\"q\":1}".to_vec()))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(refused.load(Ordering::SeqCst), 1);
    assert_eq!(f.balance(), before - PRICE);
    assert!(f.events().iter().any(
        |p| matches!(p, Progress::WorkLocal { why, .. } if why.contains("RPC control is disabled"))
    ));
}

#[tokio::test]
async fn unopened_account_is_a_clear_error() {
    let f = Fixture::start("unopened").await;
    let mut cfg = f.config();
    cfg.key = PrivateKey::from_seed(&payer_seed(), 9);
    let err = Payer::new(cfg)
        .unwrap()
        .fetch(RequestSpec::get(f.url("/paid")))
        .await
        .unwrap_err();
    assert!(matches!(err, PayError::AccountNotOpened { .. }), "{err:?}");
    assert!(err.to_string().contains("not opened"), "{err}");
    assert!(!f.journal_path().exists());
}

#[tokio::test]
async fn hand_built_payment_to_another_account_buys_nothing() {
    // build_payment is public so hostile tests can craft payments: here a genuine challenge
    // echoed verbatim, but the block pays someone else.
    let f = Fixture::start("hostile").await;
    let http = reqwest::Client::new();
    let first = http.get(f.url("/paid")).send().await.unwrap();
    assert_eq!(first.status(), 402);
    let header = first.headers()["PAYMENT-REQUIRED"]
        .to_str()
        .unwrap()
        .to_owned();
    let challenge = parse_challenge(Some(&header), b"").unwrap();
    let offer = select_offer(&challenge, u128::MAX).unwrap();
    let key = payer_key();
    let acct = f.devnet.ledger().account(&key.public_key()).unwrap();
    let info = AccountInfo {
        frontier: acct.frontier,
        balance: acct.balance,
        representative: acct.representative,
    };
    let work = nanogate_protocol::nano::work::generate(
        &info.frontier.0,
        nanogate_protocol::nano::WorkThresholds::DEV.send(),
    );
    let mut requirements = offer.to_requirements();
    let honest = build_payment(&requirements, None, &info, &key, work).unwrap();
    requirements.pay_to = PrivateKey::from_bytes([6; 32]).public_key().to_address();
    let mut hostile = build_payment(&requirements, None, &info, &key, work).unwrap();
    // Keep the genuine offer in `accepted`, so only the block lies.
    hostile.accepted = honest.accepted.clone();
    let before = f.balance();
    let resp = http
        .get(f.url("/paid"))
        .header("PAYMENT-SIGNATURE", encode_header(&hostile))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let again = parse_challenge(
        resp.headers()
            .get("PAYMENT-REQUIRED")
            .and_then(|v| v.to_str().ok()),
        b"",
    )
    .unwrap();
    assert_eq!(again.error.as_deref(), Some("wrong_destination"));
    assert_eq!(f.balance(), before);
    // The honest one, built by the same function, is served.
    let resp = http
        .get(f.url("/paid"))
        .header("PAYMENT-SIGNATURE", encode_header(&honest))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(f.balance(), before - PRICE);
}

#[tokio::test]
async fn concurrent_payments_to_different_urls_are_sequenced_not_forked() {
    let f = Fixture::start("concurrent-urls").await;
    let payer = f.payer();
    let before = f.balance();
    let (a, b, c) = tokio::join!(
        payer.fetch(RequestSpec::get(f.url("/paid/a"))),
        payer.fetch(RequestSpec::get(f.url("/paid/b"))),
        payer.fetch(RequestSpec::get(f.url("/paid/c"))),
    );
    for r in [a, b, c] {
        assert_eq!(r.unwrap().status, 200);
    }
    assert_eq!(f.balance(), before - 3 * PRICE);
    assert_eq!(f.shop.state.settlements.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn waits_for_an_unconfirmed_head_block_before_signing() {
    let f = Fixture::start("unconfirmed-head").await;
    let key = payer_key();
    let acct = f.devnet.ledger().account(&key.public_key()).unwrap();
    // A representative change on the payer's account that is not confirmed yet.
    f.devnet.faults().set_confirming(false);
    let change = blocks::change(&key, acct.frontier, acct.balance, acct.representative);
    f.devnet.ledger().process(&change).unwrap();
    let faults = f.devnet.faults();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        faults.set_confirming(true);
    });
    let before = f.balance();
    let resp = f
        .payer()
        .fetch(RequestSpec::get(f.url("/paid")))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(f.balance(), before - PRICE);
    assert!(f
        .events()
        .iter()
        .any(|p| matches!(p, Progress::Note(n) if n.contains("waiting for the account's head"))));
}

#[tokio::test]
async fn v2_challenge_in_the_body_only_is_paid_with_payment_signature() {
    let f = Fixture::start("body-only").await;
    let before = f.balance();
    let resp = f
        .payer()
        .fetch(RequestSpec::get(f.url("/body-only")))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.receipt_matches);
    let (name, sent) = f.shop.state.last_payment.lock().unwrap().clone().unwrap();
    assert_eq!(name, "PAYMENT-SIGNATURE");
    assert_eq!(sent["x402Version"], 2);
    assert_eq!(f.balance(), before - PRICE);
}
