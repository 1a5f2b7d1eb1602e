//! The node module against the real devnet (nano-node RPC and WebSocket JSON, ledger rules,
//! fault injection): process outcomes, push vs polling confirmation latency, forks (invariant
//! 4: a fork published after verification must not buy anything) and RPC faults (invariant 6:
//! fail closed, visibly).
#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use nanogate_devnet::blocks;
use nanogate_devnet::{genesis_account, genesis_hash, Devnet, DevnetConfig, RpcMode};
use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey, StateBlock};
use nanogate_sidecar::node::{
    Confirmations, LedgerRejection, NodeClient, NodeConfig, NodeError, ProcessResult, WaitOutcome,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn client(urls: Vec<String>) -> NodeClient {
    NodeClient::new(&NodeConfig {
        rpc_urls: urls,
        ws_urls: Vec::new(),
        call_timeout: Duration::from_secs(2),
        retries: 2,
        backoff: Duration::from_millis(20),
    })
}

fn merchant_key() -> PrivateKey {
    PrivateKey::from_bytes([42; 32])
}

fn merchant() -> PublicKey {
    merchant_key().public_key()
}

async fn devnet() -> Devnet {
    Devnet::start(DevnetConfig::local()).await.unwrap()
}

/// A signed genesis send on the current frontier, generated off the async threads.
async fn genesis_send(net: &Devnet, to: PublicKey, amount: u128) -> StateBlock {
    // Work generation is CPU-bound (dev threshold: milliseconds).
    tokio::task::block_in_place(|| net.genesis_send(to, amount).unwrap())
}

type Arrivals = Arc<Mutex<HashMap<BlockHash, Instant>>>;

/// Subscribes a plain tokio-tungstenite client to `account`'s confirmations and records when
/// each hash arrives.
async fn raw_observer(url: &str, account: PublicKey) -> Arrivals {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let sub = serde_json::json!({"action": "subscribe", "topic": "confirmation", "ack": true,
        "options": {"accounts": [account.to_address()]}});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let arrivals: Arrivals = Arc::default();
    let a2 = arrivals.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Some(Ok(msg)) = ws.next().await {
            let now = Instant::now();
            let Message::Text(t) = msg else { continue };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
            if v["ack"] == "subscribe" {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            if let Some(h) = v["message"]["hash"].as_str() {
                if let Ok(h) = BlockHash::from_hex(h) {
                    a2.lock().unwrap().entry(h).or_insert(now);
                }
            }
        }
    });
    ready_rx.await.unwrap();
    arrivals
}

async fn wait_arrival(arrivals: &Arrivals, hash: &BlockHash) -> Instant {
    for _ in 0..500 {
        if let Some(t) = arrivals.lock().unwrap().get(hash) {
            return *t;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the bare subscriber never saw {hash}");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_version_account_and_block_info() {
    let net = devnet().await;
    let node = client(vec![net.rpc_url()]);
    let v = node.version().await.unwrap();
    assert!(v.is_network(nanogate_protocol::nano::Network::Dev), "{v:?}");
    let g = node
        .account_info(&genesis_account())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.frontier, genesis_hash());
    assert_eq!(g.balance, u128::MAX);
    assert_eq!(g.confirmed_frontier, Some(genesis_hash()));
    assert_eq!(node.account_info(&merchant()).await.unwrap(), None);
    let gb = node.block_info(&genesis_hash()).await.unwrap().unwrap();
    assert!(gb.confirmed);
    assert!(gb.contents.is_none(), "legacy open");
    assert_eq!(gb.account, genesis_account());
    assert_eq!(node.block_info(&BlockHash([1; 32])).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_process_outcomes() {
    let net = devnet().await;
    let node = client(vec![net.rpc_url()]);
    let g = genesis_key();
    let send = genesis_send(&net, merchant(), 1000).await;
    assert_eq!(
        node.process(&send).await.unwrap(),
        ProcessResult::Processed(send.hash())
    );
    let info = node.block_info(&send.hash()).await.unwrap().unwrap();
    assert_eq!(info.amount, 1000);
    assert_eq!(info.subtype.as_deref(), Some("send"));
    assert_eq!(info.contents.as_ref(), Some(&send));
    let acct = node
        .account_info(&genesis_account())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acct.frontier, send.hash());
    assert_eq!(acct.balance, u128::MAX - 1000);

    // Re-posting: Old block (not masked by a subtype), and process_or_resolve calls it done.
    assert_eq!(
        node.process(&send).await.unwrap(),
        ProcessResult::Rejected(LedgerRejection::OldBlock)
    );
    assert_eq!(
        node.process_or_resolve(&send).await.unwrap(),
        ProcessResult::Processed(send.hash())
    );

    let (fork, bad_sig, gap_prev, low_work, gap_src, unreceivable, mismatch) =
        tokio::task::block_in_place(|| {
            let fork = blocks::send(&g, send.previous, u128::MAX, merchant(), 7);
            let mut bad_sig = blocks::send(&g, send.hash(), u128::MAX - 1000, merchant(), 1);
            bad_sig.signature.0[0] ^= 1;
            let gap_prev = blocks::send(&g, BlockHash([0xAB; 32]), 10, merchant(), 1);
            let mut low_work = blocks::send(&g, send.hash(), u128::MAX - 1000, merchant(), 2);
            low_work.work = 0;
            low_work.sign(&g);
            let gap_src = blocks::open(&merchant_key(), BlockHash([0xCD; 32]), 1000);
            // The send went to the merchant, not to this account.
            let unreceivable = blocks::open(&PrivateKey::from_bytes([43; 32]), send.hash(), 1000);
            let mismatch = blocks::open(&merchant_key(), send.hash(), 999);
            (
                fork,
                bad_sig,
                gap_prev,
                low_work,
                gap_src,
                unreceivable,
                mismatch,
            )
        });
    let cases = [
        (fork, LedgerRejection::Fork),
        (bad_sig, LedgerRejection::BadSignature),
        (gap_prev, LedgerRejection::GapPrevious),
        (low_work, LedgerRejection::InsufficientWork),
        (gap_src, LedgerRejection::GapSource),
        (unreceivable, LedgerRejection::Unreceivable),
        (mismatch, LedgerRejection::BalanceMismatch),
    ];
    for (block, want) in cases {
        assert_eq!(
            node.process(&block).await.unwrap(),
            ProcessResult::Rejected(want.clone()),
            "{want:?}"
        );
    }
}

fn genesis_key() -> PrivateKey {
    nanogate_devnet::genesis_key()
}

/// Push path vs polling path on the same devnet (confirmation after 100 ms). Prints the time
/// from `process` returning to `wait_confirmed` returning, and the part beyond the devnet's
/// own confirmation delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_confirmation_by_push_and_by_polling() {
    let net = devnet().await;
    let delay = net.confirm_delay();
    let node = client(vec![net.rpc_url()]);
    let pushed = Confirmations::spawn(vec![net.ws_url()], node.clone());
    pushed.watch_account(&merchant());
    assert!(pushed.wait_ws_connected(Duration::from_secs(5)).await);
    let polled = Confirmations::spawn(Vec::new(), node.clone());
    // A bare WebSocket subscriber on the same devnet: when the push itself reaches a client.
    let arrivals = raw_observer(&net.ws_url(), merchant()).await;

    let rounds = 5;
    let mut overheads = Vec::new();
    let mut push_times = Vec::new();
    let mut poll_times = Vec::new();
    for i in 0..rounds * 2 {
        let by_push = i % 2 == 0;
        let send = genesis_send(&net, merchant(), 1000 + i as u128).await;
        assert_eq!(
            node.process(&send).await.unwrap(),
            ProcessResult::Processed(send.hash())
        );
        let t0 = Instant::now();
        let conf = if by_push { &pushed } else { &polled };
        let r = conf
            .wait_confirmed(&send.hash(), Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        let took = t0.elapsed();
        match r {
            WaitOutcome::Confirmed(info) => {
                assert!(info.confirmed);
                assert_eq!(info.hash, send.hash());
                assert_eq!(info.amount, 1000 + i as u128);
            }
            other => panic!("expected Confirmed, got {other:?}"),
        }
        if by_push {
            let done = t0 + took;
            let seen = wait_arrival(&arrivals, &send.hash()).await;
            overheads.push(done.saturating_duration_since(seen));
            push_times.push(took);
        } else {
            poll_times.push(took);
        }
    }
    let (push, poll) = (median(push_times.clone()), median(poll_times.clone()));
    println!(
        "devnet confirm delay {delay:?}; WebSocket push: median {push:?} ({:?} beyond the delay) {push_times:?}; \
         polling: median {poll:?} ({:?} beyond the delay) {poll_times:?}",
        push.saturating_sub(delay),
        poll.saturating_sub(delay)
    );
    println!(
        "push arrival at a bare WebSocket client -> wait_confirmed returned: median {:?} {overheads:?}",
        median(overheads.clone())
    );
    assert!(push < Duration::from_secs(2), "{push:?}");
    assert!(poll < Duration::from_secs(3), "{poll:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_fork_after_processing_is_missing() {
    let net = devnet().await;
    let node = client(vec![net.rpc_url()]);
    for use_ws in [true, false] {
        let conf = if use_ws {
            let c = Confirmations::spawn(vec![net.ws_url()], node.clone());
            c.watch_account(&merchant());
            assert!(c.wait_ws_connected(Duration::from_secs(5)).await);
            c
        } else {
            Confirmations::spawn(Vec::new(), node.clone())
        };
        let ours = genesis_send(&net, merchant(), 500).await;
        // The competitor spends the same frontier differently and wins the election.
        // Same previous, another amount: a competitor that spends the same frontier.
        let theirs = tokio::task::block_in_place(|| {
            blocks::send(
                &genesis_key(),
                ours.previous,
                ours.balance + 500,
                merchant(),
                100,
            )
        });
        assert_ne!(theirs.hash(), ours.hash());
        net.faults().fork_instead(ours.previous, theirs.clone());
        assert_eq!(
            node.process(&ours).await.unwrap(),
            ProcessResult::Processed(ours.hash())
        );
        let t0 = Instant::now();
        let r = conf
            .wait_confirmed(&ours.hash(), Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        println!(
            "fork ({}): {r:?} after {:?}",
            if use_ws { "WebSocket" } else { "polling" },
            t0.elapsed()
        );
        assert_eq!(r, WaitOutcome::Missing);
        assert_eq!(node.block_info(&ours.hash()).await.unwrap(), None);
        let winner = node.block_info(&theirs.hash()).await.unwrap().unwrap();
        assert!(winner.confirmed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_unconfirmed_times_out_then_confirms_when_quorum_returns() {
    let net = devnet().await;
    let node = client(vec![net.rpc_url()]);
    let conf = Confirmations::spawn(vec![net.ws_url()], node.clone());
    conf.watch_account(&merchant());
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);
    net.faults().set_confirming(false);
    let send = genesis_send(&net, merchant(), 1000).await;
    node.process(&send).await.unwrap();
    let r = conf
        .wait_confirmed(&send.hash(), Instant::now() + Duration::from_millis(800))
        .await
        .unwrap();
    assert_eq!(r, WaitOutcome::TimedOut);
    net.faults().set_confirming(true);
    let r = conf
        .wait_confirmed(&send.hash(), Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(r, WaitOutcome::Confirmed(_)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_rpc_faults_fail_closed_and_fail_over() {
    let a = devnet().await;
    let b = devnet().await;
    let node = client(vec![a.rpc_url(), b.rpc_url()]);
    let only_a = client(vec![a.rpc_url()]);

    a.faults().set_rpc(RpcMode::Fail);
    assert_eq!(node.version().await.unwrap().network, "dev");
    let err = only_a.version().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    a.faults().set_rpc(RpcMode::Refuse);
    // Give the devnet a moment to close its port.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let err = only_a.version().await.unwrap_err();
    println!("refused devnet: {err} after {:?}", t0.elapsed());
    assert!(matches!(err, NodeError::Unavailable { .. }));
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(node.version().await.unwrap().network, "dev");

    a.faults().set_rpc(RpcMode::Normal);
    let t0 = Instant::now();
    loop {
        match only_a.version().await {
            Ok(v) => {
                assert_eq!(v.network, "dev");
                break;
            }
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(5), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // Latency beyond the call timeout is a failure too (bounded).
    a.faults().set_latency(Duration::from_millis(800));
    let slow = NodeClient::new(&NodeConfig {
        rpc_urls: vec![a.rpc_url()],
        ws_urls: Vec::new(),
        call_timeout: Duration::from_millis(200),
        retries: 0,
        backoff: Duration::from_millis(10),
    });
    let t0 = Instant::now();
    assert!(slow.version().await.unwrap_err().is_unavailable());
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_work_generate_and_block_confirm() {
    let net = devnet().await;
    let node = client(vec![net.rpc_url()]);
    let root = [5u8; 32];
    let d = 0xfe00_0000_0000_0000;
    let work = node.work_generate(&root, d).await.unwrap();
    assert!(nanogate_protocol::nano::work::difficulty(&root, work) >= d);
    node.block_confirm(&genesis_hash()).await.unwrap();
    assert!(matches!(
        node.block_confirm(&BlockHash([9; 32])).await,
        Err(NodeError::Node(_))
    ));
}
