//! Every send to a signed-block payee account ends in one state (issue #12), against the
//! in-process devnet: a send that did not come through the sidecar (a direct payment, a block
//! the client broadcast itself and never presented) is caught up from the ledger and listed
//! owed, while the signed-block payments the sidecar settles are never listed owed, even when
//! the reconciler looks at them while their presentation is still in flight.

mod common;

use common::*;
use nanogate_devnet::{Confirm, Devnet, WsMode};
use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey};
use nanogate_sidecar::config::Config;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The shipped settlement defaults: the settle window (`max_wait_secs + 5`) is the grace an
/// in-flight presentation has over the reconciler, so it is what these scenarios are about.
fn shipped(d: &Devnet, db: &Db) -> Config {
    let mut cfg = devnet_config(d, db);
    cfg.settlement = Config::default().settlement;
    cfg
}

/// The row of `hash` in `GET /v1/admin/payments?{query}`.
async fn listed(sc: &Sidecar, query: &str, hash: &BlockHash) -> Option<Value> {
    let r = http()
        .get(format!("{}{}?{query}", sc.base, paths::ADMIN_PAYMENTS))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("payments");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["payments"]
        .as_array()?
        .iter()
        .find(|p| p["hash"] == json!(hash.to_hex()))
        .cloned()
}

/// Waits (up to `limit`) until `hash` is listed owed.
async fn owed_within(sc: &Sidecar, hash: &BlockHash, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(row) = listed(sc, "state=owed&limit=1000", hash).await {
            return Some(row);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A send of `amount` from `from` to `to`, broadcast by its owner (not presented), confirmed.
async fn direct_send(d: &Devnet, from: &PrivateKey, to: PublicKey, amount: u128) -> BlockHash {
    let block = good_block(d, from, amount, to);
    let hash = d.ledger().process(&block).expect("devnet accepts the send");
    assert!(
        d.ledger()
            .wait_confirmed(&hash, Duration::from_secs(10))
            .await
    );
    hash
}

/// Pays `payee()` through the sidecar with a signed block and reports a 200 outcome.
async fn pay_and_serve(sc: &Sidecar, d: &Devnet, payer: &PrivateKey) -> BlockHash {
    let req = challenge();
    let block = good_block(d, payer, PRICE, payee());
    let v = sc.pay(&req, &payment(&req, &block)).await;
    assert_admit(&v);
    sc.outcome(v["receipt"].as_str().unwrap_or(""), 200).await;
    block.hash()
}

/// A WebSocket outage: the node drops the connection; the sidecar reconnects and reconciles.
async fn websocket_gap(d: &Devnet) {
    d.faults().set_ws(WsMode::Down);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_direct_send_to_a_signed_block_payee_is_listed_owed_and_the_payment_stays_served() {
    // Hostile: someone pays the payee account directly, while the WebSocket is down (so only
    // the reconciler after the reconnect can see it). Before, sends to signed-block payees that
    // did not come through the sidecar were never seen: neither owed nor anything.
    let payer = key(70);
    let stranger = key(71);
    let d = devnet(&[&payer, &stranger], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sc = Sidecar::start(&shipped(&d, &db)).await;
    let paid = pay_and_serve(&sc, &d, &payer).await;

    websocket_gap(&d).await;
    let direct = direct_send(&d, &stranger, payee(), 4_242).await;
    d.faults().set_ws(WsMode::Normal);

    // Judged after the settle window (13 s); the reconnect triggers the pass.
    let row = owed_within(&sc, &direct, Duration::from_secs(60))
        .await
        .expect("the direct send is listed owed");
    assert_eq!(row["reason"], "unmatched", "{row}");
    assert_eq!(row["mechanism"], SIGNED_BLOCK, "{row}");
    assert_eq!(row["payer"], json!(stranger.public_key().to_address()));
    assert_eq!(row["payTo"], json!(payee().to_address()), "{row}");
    assert_eq!(row["amount"], "4242", "{row}");

    let ours = listed(&sc, "limit=1000", &paid).await.expect("payment row");
    assert_eq!(ours["state"], "served", "{ours}");
    assert!(listed(&sc, "state=owed&limit=1000", &paid).await.is_none());
    sc.stop().await;
    d.shutdown().await;
}

#[tokio::test]
async fn a_payment_in_flight_when_the_reconciler_sees_it_is_served_never_owed() {
    // The race: the ledger confirms a signed-block payment 3 s after the sidecar broadcasts
    // it, while the WebSocket is down; the reconnect's reconcile pass finds the confirmed send
    // on the ledger while its presentation is still in flight (or just recorded). It is a
    // payment of ours (claimed before the broadcast): admitted and served, never listed owed,
    // however many passes look at it afterwards.
    let payer = key(72);
    let d = devnet(&[&payer], Confirm::AfterMs(3_000)).await;
    let db = Db::sqlite();
    let sc = Sidecar::start(&shipped(&d, &db)).await;
    let first = pay_and_serve(&sc, &d, &payer).await;

    websocket_gap(&d).await;
    let req = challenge();
    let block = good_block(&d, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let base = sc.base.clone();
    let in_flight = tokio::spawn(async move { pay_at(&base, RESOURCE, &req, &p).await });
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    d.faults().set_ws(WsMode::Normal);
    let v = in_flight.await.expect("presentation");
    assert_admit(&v);
    sc.outcome(v["receipt"].as_str().unwrap_or(""), 200).await;

    // Past the settle window (13 s), and once more after another reconnect's pass.
    tokio::time::sleep(Duration::from_secs(15)).await;
    websocket_gap(&d).await;
    d.faults().set_ws(WsMode::Normal);
    // A send made afterwards and never presented is listed owed: the judgments did run.
    let marker = direct_send(&d, &payer, payee(), 7).await;
    assert!(owed_within(&sc, &marker, Duration::from_secs(60))
        .await
        .is_some());
    for h in [first, block.hash()] {
        let row = listed(&sc, "limit=1000", &h).await.expect("payment row");
        assert_eq!(row["state"], "served", "{row}");
        assert!(
            listed(&sc, "state=owed&limit=1000", &h).await.is_none(),
            "a signed-block payment listed owed: {row}"
        );
    }
    sc.stop().await;
    d.shutdown().await;
}

#[tokio::test]
async fn a_block_its_client_broadcast_itself_is_refused_and_listed_owed_not_lost() {
    // A client broadcasts its block itself, then presents it: the sidecar refuses a block
    // already on the ledger (it cannot know whether it bought something elsewhere). The money
    // reached the payee, so the send is listed owed once the settle window has passed.
    let payer = key(73);
    let d = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sc = Sidecar::start(&shipped(&d, &db)).await;
    pay_and_serve(&sc, &d, &payer).await;
    let req = challenge();
    let block = good_block(&d, &payer, PRICE, payee());
    let hash = direct_send(&d, &payer, payee(), PRICE).await;
    assert_eq!(hash, block.hash());
    assert_reject(
        &sc.pay(&req, &payment(&req, &block)).await,
        "duplicate_settlement",
    );
    let row = owed_within(&sc, &hash, Duration::from_secs(60))
        .await
        .expect("the self-broadcast block is listed owed");
    assert_eq!(row["reason"], "unmatched", "{row}");
    sc.stop().await;
    d.shutdown().await;
}

#[tokio::test]
async fn a_send_to_a_payee_made_while_the_sidecar_is_down_is_owed_after_the_restart_postgres() {
    // The payee is known from the payment ledger (its first payment), not from any setting:
    // a restarted sidecar reads it from the store and catches up on what it missed.
    let payer = key(74);
    let stranger = key(75);
    let d = devnet(&[&payer, &stranger], Confirm::AfterMs(20)).await;
    let db = Db::postgres();
    let cfg = shipped(&d, &db);
    let sc = Sidecar::start(&cfg).await;
    let paid = pay_and_serve(&sc, &d, &payer).await;
    sc.stop().await;

    let direct = direct_send(&d, &stranger, payee(), 999).await;

    let sc = Sidecar::start(&cfg).await;
    let row = owed_within(&sc, &direct, Duration::from_secs(60))
        .await
        .expect("the send made while the sidecar was down is listed owed");
    assert_eq!(row["reason"], "unmatched", "{row}");
    let ours = listed(&sc, "limit=1000", &paid).await.expect("payment row");
    assert_eq!(ours["state"], "served", "{ours}");
    sc.stop().await;
    d.shutdown().await;
    db.cleanup().await;
}
