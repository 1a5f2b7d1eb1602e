//! The state file keeps the ledger across restarts; `--fund` funds once.

use crate::common::*;
use nanogate_devnet::{Confirm, Devnet, DevnetConfig};
use std::time::Duration;

fn temp_state(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nanogate-devnet-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.json");
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test]
async fn ledger_survives_a_restart() {
    let path = temp_state("restart");
    let payer = key(1);
    let mut cfg = DevnetConfig::local();
    cfg.state_file = Some(path.clone());
    cfg.fund = vec![(payer.public_key(), 10 * XNO)];

    let d = Devnet::start(cfg.clone()).await.unwrap();
    let rpc = Rpc::new(&d);
    let funded = d.ledger().account(&payer.public_key()).unwrap();
    assert_eq!(funded.balance, 10 * XNO);
    assert_eq!(funded.confirmed_height, 1, "funding is confirmed at start");
    // The payer can spend right away (the devnet's open is unsigned; the payer's blocks are not).
    let spend = nanogate_devnet::blocks::send(
        &payer,
        funded.frontier,
        funded.balance,
        key(2).public_key(),
        XNO,
    );
    rpc.process_ok(&spend).await;
    assert!(
        rpc.wait_confirmed(&spend.hash(), Duration::from_secs(3))
            .await
    );
    d.faults().set_confirming(false);
    let pending = genesis_send(&d, &rpc, key(3).public_key(), XNO).await;
    let count = d.ledger().block_count();
    d.shutdown().await;
    assert!(path.exists());
    assert!(!path.with_extension("json.tmp").exists());

    // Same config again: nothing is funded twice, confirmed stays confirmed, the unconfirmed
    // block gets its election after the restart.
    let d = Devnet::start(cfg).await.unwrap();
    assert_eq!(d.ledger().block_count(), count);
    assert_eq!(d.ledger().confirmed(&spend.hash()), Some(true));
    let a = d.ledger().account(&payer.public_key()).unwrap();
    assert_eq!(a.balance, 9 * XNO);
    assert_eq!(a.frontier, spend.hash());
    assert!(
        d.ledger()
            .wait_confirmed(&pending.hash(), Duration::from_secs(3))
            .await
    );
    d.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn unconfirmed_blocks_stay_unconfirmed_with_never() {
    let path = temp_state("never");
    let mut cfg = DevnetConfig::local();
    cfg.state_file = Some(path.clone());
    cfg.confirm = Confirm::Never;
    let d = Devnet::start(cfg.clone()).await.unwrap();
    let rpc = Rpc::new(&d);
    let b = genesis_send(&d, &rpc, key(1).public_key(), XNO).await;
    d.shutdown().await;
    let d = Devnet::start(cfg).await.unwrap();
    assert_eq!(d.ledger().confirmed(&b.hash()), Some(false));
    d.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_corrupt_state_file_is_an_error() {
    let path = temp_state("corrupt");
    std::fs::write(&path, b"{ nope").unwrap();
    let mut cfg = DevnetConfig::local();
    cfg.state_file = Some(path.clone());
    assert!(Devnet::start(cfg).await.is_err());
    let _ = std::fs::remove_file(&path);
}
