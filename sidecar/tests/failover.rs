//! Invariant 6 (fail closed, visibly): failover to a second node when the first refuses, a
//! clear `ledger_unavailable` verdict when every node is down, and readiness that says so.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::{Confirm, RpcMode};
use serde_json::Value;

/// A loopback URL on which nothing listens (connection refused).
async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test]
async fn failover_to_second_node_when_the_first_refuses() {
    let payer = key(50);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let cfg = config(
        vec![dead_url().await, devnet.rpc_url()],
        vec![devnet.ws_url()],
        &db,
    );
    let sidecar = Sidecar::start(&cfg).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    assert_admit(&sidecar.pay(&req, &payment(&req, &block)).await);
    let ready = http()
        .get(format!("{}{}", sidecar.base, paths::READYZ))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http()
        .get(format!("{}{}", sidecar.base, paths::METRICS))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nanogate_rpc_errors_total{node=\"127.0.0.1:"),
        "{metrics}"
    );
    assert!(metrics.contains("nanogate_payments_settled_total 1"));
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn all_nodes_down_fails_closed_ledger_unavailable() {
    let payer = key(51);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let cfg = config(
        vec![dead_url().await, devnet.rpc_url()],
        vec![devnet.ws_url()],
        &db,
    );
    let sidecar = Sidecar::start(&cfg).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    devnet.faults().set_rpc(RpcMode::Refuse);
    let v = sidecar.pay(&req, &payment(&req, &block)).await;
    assert_eq!(verdict(&v), "unavailable", "{v}");
    assert_eq!(reason(&v), "ledger_unavailable");
    assert!(v["retryAfter"].as_u64().unwrap() >= 1);
    assert!(
        !devnet.ledger().contains(&block.hash()),
        "nothing admitted, nothing sent"
    );

    let ready = http()
        .get(format!("{}{}", sidecar.base, paths::READYZ))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ledger"], false);
    assert_eq!(body["store"], true);
    let health = http()
        .get(format!("{}{}", sidecar.base, paths::HEALTHZ))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the process is still up");

    // Nodes back: the same payment settles (the nonce is bound to it, nothing was claimed).
    devnet.faults().set_rpc(RpcMode::Normal);
    assert_admit(&sidecar.pay(&req, &payment(&req, &block)).await);
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn failing_nodes_answering_500_are_unavailable_too() {
    let payer = key(52);
    let devnet = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&devnet_config(&devnet, &db)).await;
    devnet.faults().set_rpc(RpcMode::Fail);
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let v = sidecar.pay(&req, &payment(&req, &block)).await;
    assert_eq!(verdict(&v), "unavailable", "{v}");
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}

#[tokio::test]
async fn readiness_refuses_a_node_on_another_network() {
    let devnet = devnet(&[], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let mut cfg = devnet_config(&devnet, &db);
    cfg.node_network = "beta".into();
    let sidecar = Sidecar::start(&cfg).await;
    let ready = http()
        .get(format!("{}{}", sidecar.base, paths::READYZ))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}
