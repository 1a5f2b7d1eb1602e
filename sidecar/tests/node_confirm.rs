//! Confirmation tracking against mock nodes: WebSocket push (the latency path), reconnect and
//! resubscribe, polling fallback, forks (invariant 4: a fork published after verification must
//! not buy anything) and fail-closed unavailability (invariant 6).
#![allow(clippy::unwrap_used)]

mod node_mock;

use nanogate_protocol::nano::{BlockHash, StateBlock};
use nanogate_sidecar::node::{
    ConfirmTimings, Confirmations, NodeClient, NodeConfig, NodeError, WaitOutcome,
};
use node_mock::{
    block_info_json, closed_port, confirmation_push, genesis_key, merchant, mock_rpc, mock_ws,
    send_block, MockRpc, Reply,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn client(url: &str) -> NodeClient {
    NodeClient::new(&NodeConfig {
        rpc_urls: vec![url.to_owned()],
        ws_urls: Vec::new(),
        call_timeout: Duration::from_millis(500),
        retries: 1,
        backoff: Duration::from_millis(20),
    })
}

fn block(n: u8) -> StateBlock {
    send_block(&genesis_key(), BlockHash([n; 32]), 5, merchant())
}

/// block_info answers from a shared switch: 0 = not found, 1 = unconfirmed, 2 = confirmed.
async fn switchable_node(b: &StateBlock) -> (MockRpc, Arc<AtomicU8>) {
    let state = Arc::new(AtomicU8::new(1));
    let (s2, b2) = (state.clone(), b.clone());
    let node = mock_rpc(move |req| match req["action"].as_str() {
        Some("block_info") => match s2.load(Ordering::SeqCst) {
            0 => Reply::Json(json!({"error": "Block not found"})),
            n => Reply::Json(block_info_json(&b2, n == 2)),
        },
        Some("block_confirm") => Reply::Json(json!({"started": "1"})),
        _ => Reply::Json(json!({"error": "Unknown command"})),
    })
    .await;
    (node, state)
}

fn block_info_polls(node: &MockRpc) -> usize {
    node.requests()
        .iter()
        .filter(|r| r["action"] == "block_info")
        .count()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn confirmation_arrives_by_push_without_polling_delay() {
    let b = block(1);
    let (node, _state) = switchable_node(&b).await;
    let ws = mock_ws().await;
    let conf = Confirmations::spawn(vec![ws.url.clone()], client(&node.url));
    conf.watch_account(&merchant());
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);

    // The filter went out with JSON booleans and the merchant account.
    let subs = ws.actions("subscribe");
    let updates = ws.actions("update");
    let sub = subs.last().unwrap();
    assert_eq!(sub["topic"], "confirmation");
    assert_eq!(sub["ack"], json!(true));
    assert_eq!(sub["options"]["include_block"], json!(true));
    let mut filtered: Vec<String> = sub["options"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for u in &updates {
        for a in u["options"]["accounts_add"].as_array().unwrap() {
            filtered.push(a.as_str().unwrap().to_owned());
        }
    }
    assert!(
        filtered.contains(&merchant().to_address()),
        "{subs:?} {updates:?}"
    );

    let mut events = conf.subscribe();
    let waiter = {
        let conf = conf.clone();
        let hash = b.hash();
        tokio::spawn(async move {
            let r = conf
                .wait_confirmed(&hash, Instant::now() + Duration::from_secs(10))
                .await;
            (r, Instant::now())
        })
    };
    // Let the waiter register and do its initial check, then push.
    wait_until("initial poll", Duration::from_secs(5), || {
        block_info_polls(&node) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pushed = Instant::now();
    ws.push(confirmation_push(&b, "active_quorum"));
    let (result, done) = waiter.await.unwrap();
    let latency = done.duration_since(pushed);
    println!("WS push -> wait_confirmed returned in {latency:?}");
    match result.unwrap() {
        WaitOutcome::Confirmed(info) => {
            assert!(info.confirmed);
            assert_eq!(info.hash, b.hash());
            assert_eq!(info.contents.as_ref(), Some(&b));
            assert_eq!(info.height, 2);
            assert_eq!(info.subtype.as_deref(), Some("send"));
        }
        other => panic!("expected Confirmed, got {other:?}"),
    }
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    // Generous bound (noisy CI); the push path involves no sleeping at all, and the proof
    // that the push (not a poll) answered is that only the initial check went to the RPC.
    assert_eq!(block_info_polls(&node), 1);

    let ev = events.recv().await.unwrap();
    assert_eq!(ev.hash, b.hash());
    assert_eq!(ev.destination(), Some(merchant()));
    assert_eq!(ev.amount, 1000);
}

#[tokio::test]
async fn push_before_the_wait_is_not_lost() {
    let b = block(2);
    // A node that (still) says unconfirmed: only the remembered push can answer.
    let (node, _state) = switchable_node(&b).await;
    let ws = mock_ws().await;
    let conf = Confirmations::spawn(vec![ws.url.clone()], client(&node.url));
    let mut events = conf.subscribe();
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);
    ws.push(confirmation_push(&b, "active_quorum"));
    events.recv().await.unwrap();
    let t0 = Instant::now();
    let r = conf
        .wait_confirmed(&b.hash(), Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(r, WaitOutcome::Confirmed(_)), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn duplicate_and_inconsistent_pushes_are_filtered() {
    let (a, b) = (block(3), block(4));
    let (node, _state) = switchable_node(&a).await;
    let ws = mock_ws().await;
    let conf = Confirmations::spawn(vec![ws.url.clone()], client(&node.url));
    let mut events = conf.subscribe();
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);
    ws.push(confirmation_push(&a, "active_quorum"));
    ws.push(confirmation_push(&a, "active_confirmation_height"));
    // A message whose block does not hash to its `hash`.
    let mut forged: serde_json::Value =
        serde_json::from_str(&confirmation_push(&b, "active_quorum")).unwrap();
    forged["message"]["hash"] = json!(BlockHash([0xAB; 32]).to_hex());
    ws.push(forged.to_string());
    ws.push("not json".into());
    ws.push(json!({"topic": "confirmation", "message": {"hash": "zz"}}).to_string());
    ws.push(confirmation_push(&b, "active_quorum"));
    let first = events.recv().await.unwrap();
    let second = events.recv().await.unwrap();
    assert_eq!(first.hash, a.hash());
    assert_eq!(first.confirmation_type.as_deref(), Some("active_quorum"));
    assert_eq!(second.hash, b.hash());
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn reconnects_and_resubscribes_with_the_current_accounts() {
    let b = block(5);
    let (node, _state) = switchable_node(&b).await;
    let ws = mock_ws().await;
    let timings = ConfirmTimings {
        reconnect_min: Duration::from_millis(20),
        ..ConfirmTimings::default()
    };
    let conf = Confirmations::spawn_with(vec![ws.url.clone()], client(&node.url), timings);
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);
    // Added while connected: goes out as an update.
    conf.watch_account(&merchant());
    wait_until("accounts_add update", Duration::from_secs(5), || {
        !ws.actions("update").is_empty()
    })
    .await;
    let update = ws.actions("update").pop().unwrap();
    assert_eq!(
        update["options"]["accounts_add"],
        json!([merchant().to_address()])
    );

    let waiter = {
        let conf = conf.clone();
        let hash = b.hash();
        tokio::spawn(async move {
            conf.wait_confirmed(&hash, Instant::now() + Duration::from_secs(10))
                .await
        })
    };
    wait_until("initial poll", Duration::from_secs(5), || {
        block_info_polls(&node) >= 1
    })
    .await;
    let polls_before = block_info_polls(&node);

    let dropped = Instant::now();
    ws.drop_connections();
    ws.wait_connections(2, Duration::from_secs(5)).await;
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);
    println!("WebSocket back after {:?}", dropped.elapsed());
    let subs = ws.actions("subscribe");
    assert_eq!(subs.len(), 2);
    assert_eq!(
        subs[1]["options"]["accounts"],
        json!([merchant().to_address()]),
        "resubscribed with the current account set"
    );
    // After the reconnect the waiter re-checks the ledger (pushes may have been missed).
    wait_until("re-check after reconnect", Duration::from_secs(5), || {
        block_info_polls(&node) > polls_before
    })
    .await;

    ws.push(confirmation_push(&b, "active_quorum"));
    let r = waiter.await.unwrap().unwrap();
    assert!(matches!(r, WaitOutcome::Confirmed(_)), "{r:?}");
}

#[tokio::test]
async fn polling_fallback_when_no_websocket_is_reachable() {
    let b = block(6);
    let (node, state) = switchable_node(&b).await;
    let dead_ws = closed_port("ws").await;
    let conf = Confirmations::spawn(vec![dead_ws], client(&node.url));
    let flip_at = Duration::from_millis(700);
    let flipped = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (state, flipped) = (state.clone(), flipped.clone());
        tokio::spawn(async move {
            tokio::time::sleep(flip_at).await;
            state.store(2, Ordering::SeqCst);
            flipped.store(true, Ordering::SeqCst);
            Instant::now()
        })
    };
    let t0 = Instant::now();
    let r = conf
        .wait_confirmed(&b.hash(), Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    let done = Instant::now();
    let flip = flipper.await.unwrap();
    assert!(
        matches!(r, WaitOutcome::Confirmed(ref i) if i.confirmed),
        "{r:?}"
    );
    let after_flip = done.duration_since(flip);
    println!(
        "polling fallback: confirmed {after_flip:?} after the ledger flipped ({:?} total, {} polls)",
        t0.elapsed(),
        block_info_polls(&node)
    );
    assert!(!conf.ws_connected());
    assert!(after_flip < Duration::from_secs(2), "{after_flip:?}");
    // ~250 ms polling: a handful of polls, not a busy loop.
    let polls = block_info_polls(&node);
    assert!((2..=20).contains(&polls), "{polls} polls");
    // The block_confirm nudge went out while it was unconfirmed.
    assert!(node
        .requests()
        .iter()
        .any(|r| r["action"] == "block_confirm"));
}

#[tokio::test]
async fn vanished_block_is_missing() {
    let b = block(7);
    let (node, state) = switchable_node(&b).await;
    let conf = Confirmations::spawn(Vec::new(), client(&node.url));
    let s2 = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Rolled back: it lost a fork.
        s2.store(0, Ordering::SeqCst);
    });
    let t0 = Instant::now();
    let r = conf
        .wait_confirmed(&b.hash(), Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    println!(
        "rolled-back block reported Missing after {:?}",
        t0.elapsed()
    );
    assert_eq!(r, WaitOutcome::Missing);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn competitor_confirmation_on_the_same_root_is_missing() {
    let ours = block(8);
    // Same previous, different destination balance: a fork of ours.
    let theirs = send_block(&genesis_key(), ours.previous, 4, merchant());
    assert_ne!(ours.hash(), theirs.hash());
    let (node, _state) = switchable_node(&ours).await;
    let ws = mock_ws().await;
    let conf = Confirmations::spawn(vec![ws.url.clone()], client(&node.url));
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);

    let waiter = {
        let conf = conf.clone();
        let hash = ours.hash();
        tokio::spawn(async move {
            conf.wait_confirmed(&hash, Instant::now() + Duration::from_secs(10))
                .await
        })
    };
    // The root is learnt from the first block_info.
    wait_until("initial poll", Duration::from_secs(5), || {
        block_info_polls(&node) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    ws.push(confirmation_push(&theirs, "active_quorum"));
    let r = waiter.await.unwrap().unwrap();
    println!("competitor push -> Missing in {:?}", t0.elapsed());
    assert_eq!(r, WaitOutcome::Missing);

    // Knowing the block up front, a competitor confirmed earlier is detected at once.
    let r = conf
        .wait_block_confirmed(&ours, Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r, WaitOutcome::Missing);
}

#[tokio::test]
async fn never_confirmed_times_out_at_the_deadline() {
    let b = block(9);
    let (node, _state) = switchable_node(&b).await;
    let conf = Confirmations::spawn(Vec::new(), client(&node.url));
    let t0 = Instant::now();
    let r = conf
        .wait_confirmed(&b.hash(), Instant::now() + Duration::from_millis(600))
        .await
        .unwrap();
    let took = t0.elapsed();
    println!("timed out after {took:?}");
    assert_eq!(r, WaitOutcome::TimedOut);
    assert!(
        took >= Duration::from_millis(590) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn nothing_reachable_is_unavailable() {
    let rpc = closed_port("http").await;
    let ws = closed_port("ws").await;
    let conf = Confirmations::spawn(vec![ws], client(&rpc));
    let t0 = Instant::now();
    let r = conf
        .wait_confirmed(
            &BlockHash([1; 32]),
            Instant::now() + Duration::from_millis(600),
        )
        .await;
    println!("nothing reachable: {r:?} after {:?}", t0.elapsed());
    assert!(matches!(r, Err(NodeError::Unavailable { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn already_confirmed_returns_at_once() {
    let b = block(10);
    let (node, state) = switchable_node(&b).await;
    state.store(2, Ordering::SeqCst);
    let conf = Confirmations::spawn(Vec::new(), client(&node.url));
    let t0 = Instant::now();
    let r = conf
        .wait_confirmed(&b.hash(), Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(r, WaitOutcome::Confirmed(_)));
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn ws_failover_to_the_second_endpoint() {
    let b = block(11);
    let (node, _state) = switchable_node(&b).await;
    let dead = closed_port("ws").await;
    let ws = mock_ws().await;
    let conf = Confirmations::spawn(vec![dead, ws.url.clone()], client(&node.url));
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);
    assert_eq!(ws.connections(), 1);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_task() {
    let ws = mock_ws().await;
    let node = mock_rpc(|_| Reply::Json(json!({"error": "Block not found"}))).await;
    let conf = Confirmations::spawn(vec![ws.url.clone()], client(&node.url));
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);
    drop(conf);
    // The server sees the connection go: a further push has nobody to reach; no reconnects.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ws.connections(), 1);
}
