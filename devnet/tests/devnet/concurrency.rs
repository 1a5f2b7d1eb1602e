//! Many clients at once keep the ledger consistent; racing forks on one account: one wins.

use crate::common::*;
use nanogate_devnet::{blocks, genesis_account, genesis_key, DevnetConfig};
use nanogate_protocol::nano::BlockHash;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_senders_keep_the_ledger_consistent() {
    const ACCOUNTS: u32 = 8;
    const SENDS: u32 = 5;
    let payers: Vec<_> = (0..ACCOUNTS).map(|i| key(200 + i)).collect();
    let mut cfg = DevnetConfig::local();
    cfg.fund = payers.iter().map(|k| (k.public_key(), 100 * XNO)).collect();
    let d = nanogate_devnet::Devnet::start(cfg).await.unwrap();
    let sink = key(999).public_key();
    // Pre-build every chain (work generation is CPU-bound), then fire all at once.
    let chains: Vec<Vec<_>> = payers
        .iter()
        .map(|k| {
            let a = d.ledger().account(&k.public_key()).unwrap();
            let (mut prev, mut bal) = (a.frontier, a.balance);
            (0..SENDS)
                .map(|_| {
                    let b = blocks::send(k, prev, bal, sink, XNO);
                    prev = b.hash();
                    bal -= XNO;
                    b
                })
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for chain in chains {
        let rpc = Rpc::new(&d);
        tasks.push(tokio::spawn(async move {
            let mut last = BlockHash::ZERO;
            for b in chain {
                last = rpc.process_ok(&b).await;
            }
            last
        }));
    }
    let mut lasts = Vec::new();
    for t in tasks {
        lasts.push(t.await.unwrap());
    }
    for (k, last) in payers.iter().zip(&lasts) {
        let a = d.ledger().account(&k.public_key()).unwrap();
        assert_eq!(a.frontier, *last);
        assert_eq!(a.balance, (100 - SENDS as u128) * XNO);
        assert_eq!(a.block_count, 1 + SENDS as u64);
    }
    // genesis + ACCOUNTS × (fund send + open) + ACCOUNTS × SENDS
    assert_eq!(
        d.ledger().block_count(),
        1 + 2 * ACCOUNTS as u64 + (ACCOUNTS * SENDS) as u64
    );
    let rpc = Rpc::new(&d);
    let r = rpc
        .call(serde_json::json!({"action": "receivable", "account": sink.to_address(), "include_only_confirmed": "false", "threshold": "1"}))
        .await;
    assert_eq!(
        r["blocks"].as_object().unwrap().len(),
        (ACCOUNTS * SENDS) as usize
    );
    for last in &lasts {
        assert!(
            d.ledger()
                .wait_confirmed(last, Duration::from_secs(5))
                .await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_forks_on_one_account_exactly_one_wins() {
    const RACERS: u32 = 16;
    let d = start().await;
    let g = genesis_account();
    let frontier = d.ledger().frontier(&g).unwrap();
    let balance = d.ledger().balance(&g);
    let forks: Vec<_> = (0..RACERS)
        .map(|i| {
            blocks::send(
                &genesis_key(),
                frontier,
                balance,
                key(300 + i).public_key(),
                XNO,
            )
        })
        .collect();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS as usize));
    let mut tasks = Vec::new();
    for b in forks {
        let rpc = Rpc::new(&d);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            rpc.process(&b, None).await
        }));
    }
    let mut wins = Vec::new();
    for t in tasks {
        let v = t.await.unwrap();
        if let Some(h) = v["hash"].as_str() {
            wins.push(h.to_string());
        } else {
            assert_eq!(v["error"], "Fork", "{v}");
        }
    }
    assert_eq!(wins.len(), 1, "exactly one fork wins: {wins:?}");
    assert_eq!(d.ledger().frontier(&g).unwrap().to_hex(), wins[0]);
    assert_eq!(d.ledger().balance(&g), balance - XNO);
    assert_eq!(d.ledger().block_count(), 2);
}
