//! Operation: graceful shutdown finishes in-flight settlements; the binary documents every
//! option in `--help` and refuses to start without its secrets.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_devnet::Confirm;
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_settlements() {
    let payer = key(100);
    // A slow confirmation keeps the settlement in flight while we stop the server.
    let devnet = devnet(&[&payer], Confirm::AfterMs(1_500)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&devnet_config(&devnet, &db)).await;
    let req = challenge();
    let block = good_block(&devnet, &payer, PRICE, payee());
    let p = payment(&req, &block);
    let base = sidecar.base.clone();
    let paying = tokio::spawn(async move { pay_at(&base, RESOURCE, &req, &p).await });
    while sidecar.state.engine.inflight.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let engine = sidecar.state.engine.clone();
    sidecar.stop().await;
    assert_eq!(engine.inflight.count(), 0, "drained before stop returned");
    let v = paying.await.unwrap();
    assert_admit(&v);
    let rec = engine
        .store()
        .spent(&format!("{NETWORK}:{}", block.hash().to_hex()))
        .await
        .unwrap();
    assert!(rec.is_some(), "consumption recorded before exit");
    devnet.shutdown().await;
}

#[test]
fn help_lists_every_option_with_its_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_nanogate-sidecar"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "--config",
        "NANOGATE_LISTEN",
        "NANOGATE_NETWORK",
        "NANOGATE_NODE_NETWORK",
        "NANOGATE_FILTER_SECRET",
        "NANOGATE_CHALLENGE_SECRET",
        "NANOGATE_KEY_ROTATION_SECS",
        "NANOGATE_RPC_URLS",
        "NANOGATE_WS_URLS",
        "NANOGATE_DATABASE_URL",
        "NANOGATE_POSTGRES_SCHEMA",
        "NANOGATE_MAX_WAIT_SECS",
        "NANOGATE_MAX_REDEMPTIONS",
        "NANOGATE_FACILITATOR_TOKEN",
        "NANOGATE_ALLOW_UNBOUND",
        "NANOGATE_PAY_TO",
        "NANOGATE_SHUTDOWN_GRACE_SECS",
        "NANOGATE_REQUEST_TIMEOUT_SECS",
        "NANOGATE_MAX_CONCURRENT_REQUESTS",
        "NANOGATE_READY_CACHE_SECS",
        "NANOGATE_SOURCE_REFUSALS_PER_SEC",
        "NANOGATE_SOURCE_REFUSAL_BURST",
        "NANOGATE_PAYER_PRESENTATIONS_PER_SEC",
        "NANOGATE_PAYER_PRESENTATION_BURST",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
}

#[test]
fn refuses_to_start_without_secrets_and_does_not_echo_them() {
    let out = Command::new(env!("CARGO_BIN_EXE_nanogate-sidecar"))
        .env_clear()
        .env("NANOGATE_FILTER_SECRET", "tiny")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("filter_secret"), "{err}");
    assert!(!err.contains("tiny"), "{err}");
}
