//! Fault injection: refused and failing RPC, a WebSocket down or dropped, latency, stopped
//! confirmation, forks, and the `/admin/faults` route on both ports.

use crate::common::*;
use nanogate_devnet::{blocks, genesis_account, genesis_key, Confirm, RpcMode};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn refuse_fail_and_latency() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let faults = d.faults();
    let client = reqwest::Client::new();

    faults.set_rpc(RpcMode::Refuse);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = client
        .post(d.rpc_url())
        .json(&json!({"action": "version"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "connection refused expected, got {err}");
    let refused = tokio::net::TcpStream::connect(d.rpc_addr()).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    faults.set_rpc(RpcMode::Normal);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client
            .post(d.rpc_url())
            .json(&json!({"action": "version"}))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("RPC did not come back: {other:?}"),
        }
    }

    faults.set_rpc(RpcMode::Fail);
    let (status, _) = rpc.raw(r#"{"action":"version"}"#).await;
    assert_eq!(status, 500);
    faults.set_rpc(RpcMode::Normal);

    faults.set_latency(Duration::from_millis(300));
    let t = Instant::now();
    rpc.call(json!({"action": "block_count"})).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    faults.set_latency(Duration::ZERO);
}

#[tokio::test]
async fn stop_and_resume_confirming() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    d.faults().set_confirming(false);
    let b = genesis_send(&d, &rpc, key(1).public_key(), XNO).await;
    tokio::time::sleep(d.confirm_delay() + Duration::from_millis(300)).await;
    assert_eq!(rpc.block_info(&b.hash()).await["confirmed"], "false");
    // block_confirm does not help while the node cannot vote.
    rpc.call(json!({"action": "block_confirm", "hash": b.hash().to_hex()}))
        .await;
    tokio::time::sleep(d.confirm_delay() + Duration::from_millis(200)).await;
    assert_eq!(d.ledger().confirmed(&b.hash()), Some(false));
    let mut ws = ws_subscribe(&d, None).await;
    d.faults().set_confirming(true);
    let m = ws_next(&mut ws, d.confirm_delay() + Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(m["message"]["hash"], b.hash().to_hex());
    assert_eq!(d.ledger().confirmed(&b.hash()), Some(true));
}

#[tokio::test]
async fn never_confirm_config() {
    let d = start_with(Confirm::Never).await;
    let rpc = Rpc::new(&d);
    assert!(!d.faults().confirming());
    let b = genesis_send(&d, &rpc, key(1).public_key(), XNO).await;
    assert!(
        !d.ledger()
            .wait_confirmed(&b.hash(), Duration::from_millis(400))
            .await
    );
    d.faults().set_confirming(true);
    assert!(
        d.ledger()
            .wait_confirmed(&b.hash(), Duration::from_secs(3))
            .await
    );
}

#[tokio::test]
async fn fork_instead_rolls_back_the_processed_block() {
    // A long delay keeps the processed block visible before its election ends.
    let d = start_with(Confirm::AfterMs(1000)).await;
    let rpc = Rpc::new(&d);
    let (payee, thief) = (key(1).public_key(), key(2).public_key());
    let g = genesis_account();
    let frontier = d.ledger().frontier(&g).unwrap();
    let balance = d.ledger().balance(&g);
    let paid = blocks::send(&genesis_key(), frontier, balance, payee, XNO);
    let competitor = blocks::send(&genesis_key(), frontier, balance, thief, 2 * XNO);
    d.faults().fork_instead(frontier, competitor.clone());
    let mut ws = ws_subscribe(&d, None).await;

    // The node answers success, as a real node would for the block it saw first.
    let t = Instant::now();
    assert_eq!(rpc.process_ok(&paid).await, paid.hash());
    let info = rpc.block_info(&paid.hash()).await;
    if t.elapsed() < d.confirm_delay() / 2 {
        assert_eq!(info["confirmed"], "false");
    }
    let m = ws_next(&mut ws, d.confirm_delay() + Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(m["message"]["hash"], competitor.hash().to_hex());
    assert_eq!(m["message"]["confirmation_type"], "active_quorum");
    assert_eq!(
        rpc.block_info(&paid.hash()).await["error"],
        "Block not found"
    );
    assert_eq!(
        rpc.block_info(&competitor.hash()).await["confirmed"],
        "true"
    );
    assert_eq!(d.ledger().frontier(&g), Some(competitor.hash()));
    assert_eq!(d.ledger().balance(&g), balance - 2 * XNO);
    // The payee has nothing to receive; the thief does.
    let r = rpc
        .call(json!({"action": "receivable", "account": payee.to_address()}))
        .await;
    assert_eq!(r["blocks"], "");
    let r = rpc
        .call(json!({"action": "receivable", "account": thief.to_address()}))
        .await;
    assert_eq!(r["blocks"], json!([competitor.hash().to_hex()]));
    // The rule fired once; the paid block is now a fork of the confirmed competitor.
    assert!(d.faults().forks().is_empty());
    assert_eq!(rpc.process_err(&paid, None).await, "Fork");
}

#[tokio::test]
async fn fork_instead_also_removes_dependents() {
    let d = start_with(Confirm::AfterMs(1000)).await;
    let rpc = Rpc::new(&d);
    let a = key(1);
    let g = genesis_account();
    let frontier = d.ledger().frontier(&g).unwrap();
    let balance = d.ledger().balance(&g);
    let paid = blocks::send(&genesis_key(), frontier, balance, a.public_key(), XNO);
    let competitor = blocks::send(&genesis_key(), frontier, balance, key(2).public_key(), XNO);
    d.faults().fork_instead(frontier, competitor.clone());
    // Confirmation of the paid send is slow enough to build on it first.
    let open = blocks::open(&a, paid.hash(), XNO);
    rpc.process_ok(&paid).await;
    rpc.process_ok(&open).await;
    assert!(
        d.ledger()
            .wait_confirmed(&competitor.hash(), Duration::from_secs(3))
            .await
    );
    assert!(!d.ledger().contains(&paid.hash()));
    assert!(
        !d.ledger().contains(&open.hash()),
        "the receive of a rolled-back send goes too"
    );
    assert!(d.ledger().account(&a.public_key()).is_none());
}

#[tokio::test]
async fn admin_route_on_both_ports() {
    let d = start().await;
    let client = reqwest::Client::new();
    let rpc_admin = format!("{}/admin/faults", d.rpc_url());
    let ws_admin = format!("http://{}/admin/faults", d.ws_addr());
    let v: serde_json::Value = client
        .post(&rpc_admin)
        .json(&json!({"latency_ms": 5, "confirming": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["latency_ms"], 5);
    assert_eq!(v["confirming"], false);
    assert_eq!(d.faults().latency(), Duration::from_millis(5));
    assert!(!d.faults().confirming());

    // Refuse through the RPC port, restore through the WebSocket port.
    client
        .post(&rpc_admin)
        .json(&json!({"rpc": "refuse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(d.faults().rpc_mode(), RpcMode::Refuse);
    let v: serde_json::Value = client
        .post(&ws_admin)
        .json(&json!({"reset": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["rpc"], "normal");
    assert_eq!(v["confirming"], true);

    // A fork rule through the admin route.
    let g = genesis_account();
    let frontier = d.ledger().frontier(&g).unwrap();
    let competitor = blocks::send(
        &genesis_key(),
        frontier,
        d.ledger().balance(&g),
        key(5).public_key(),
        XNO,
    );
    let r = client
        .post(&ws_admin)
        .json(&json!({"fork_instead": {"previous": frontier.to_hex(), "competitor": competitor.to_json()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(d.faults().forks().len(), 1);
    let r = client
        .post(&ws_admin)
        .json(&json!({"rpc": "sideways"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = client
        .get(&ws_admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["forks"].as_array().unwrap().len(), 1);
}

/// The WebSocket fault the sidecar's catch-up is tested against: open connections drop, new
/// ones are refused, confirmations still happen (and are not replayed later); back up, new
/// subscriptions work again.
#[tokio::test]
async fn websocket_down_drops_and_refuses_connections_while_the_ledger_confirms() {
    use futures_util::StreamExt;
    use nanogate_devnet::WsMode;
    let d = start().await;
    let rpc = Rpc::new(&d);
    let dest = crate::common::key(77).public_key();
    let mut ws = ws_subscribe(&d, Some(json!({"accounts": [dest.to_address()]}))).await;
    d.faults().set_ws(WsMode::Down);
    assert_eq!(d.faults().status_json()["ws"], "down");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the open WebSocket is dropped");
    assert!(
        tokio_tungstenite::connect_async(d.ws_url()).await.is_err(),
        "new WebSocket connections are refused while down"
    );
    // The ledger keeps confirming meanwhile.
    let send = genesis_send(&d, &rpc, dest, 5).await;
    assert!(
        rpc.wait_confirmed(&send.hash(), Duration::from_secs(5))
            .await
    );

    d.faults()
        .apply(serde_json::from_value(json!({"ws": "normal"})).unwrap());
    let mut ws = ws_subscribe(&d, Some(json!({"accounts": [dest.to_address()]}))).await;
    let send2 = genesis_send(&d, &rpc, dest, 6).await;
    let pushed = ws_next(&mut ws, Duration::from_secs(5))
        .await
        .expect("a push");
    assert_eq!(pushed["message"]["hash"], send2.hash().to_hex());
}

/// The `account_history` calls the sidecar's reconciler makes: raw entries with `hash`,
/// `subtype` and `link`, walked forward from a cursor (`head` + `reverse`, paging by `next`)
/// and backward from the frontier (paging by `previous`).
#[tokio::test]
async fn raw_account_history_pages_forward_from_a_head_and_backward_from_the_frontier() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let k = crate::common::key(78);
    let (s1, open) = fund_and_open(&d, &rpc, &k, 10).await;
    let s2 = genesis_send(&d, &rpc, k.public_key(), 7).await;
    assert!(rpc.wait_confirmed(&s2.hash(), Duration::from_secs(5)).await);
    let recv = blocks::receive(&k, open.hash(), 10, s2.hash(), 7);
    let recv_hash = rpc.process_ok(&recv).await;
    let acc = k.public_key().to_address();

    let fwd = rpc
        .call(
            json!({"action": "account_history", "account": acc, "count": "1", "raw": "true",
                     "reverse": "true", "head": open.hash().to_hex()}),
        )
        .await;
    let h = &fwd["history"][0];
    assert_eq!(h["hash"], open.hash().to_hex());
    // nano-node names a state open block's subtype `receive` (the devnet too).
    assert_eq!(h["subtype"], "receive");
    assert_eq!(h["link"], s1.hash().to_hex());
    assert_eq!(fwd["next"], recv_hash.to_hex(), "next page: the successor");
    let fwd2 = rpc
        .call(
            json!({"action": "account_history", "account": acc, "count": "10", "raw": "true",
                     "reverse": "true", "head": recv_hash.to_hex()}),
        )
        .await;
    assert_eq!(fwd2["history"][0]["subtype"], "receive");
    assert_eq!(fwd2["history"][0]["link"], s2.hash().to_hex());
    assert!(fwd2.get("next").is_none(), "the frontier ends the walk");

    let back = rpc
        .call(json!({"action": "account_history", "account": acc, "count": "1", "raw": "true"}))
        .await;
    assert_eq!(back["history"][0]["hash"], recv_hash.to_hex());
    assert_eq!(back["previous"], open.hash().to_hex());
    let gone = rpc
        .call(
            json!({"action": "account_history", "account": acc, "count": "1", "raw": "true",
                     "head": "AB".repeat(32)}),
        )
        .await;
    assert_eq!(gone["error"], "Block not found");
}

/// Waits until the session ends; true when it ended without a close frame (a network drop).
async fn ended_without_close(ws: &mut Ws, timeout: Duration) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) => return false,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return true,
            Err(_) => panic!("the session was not dropped within {timeout:?}"),
        }
    }
}

#[tokio::test]
async fn dropped_websockets_end_every_session_and_reconnects_work_at_once() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let mut a = ws_subscribe(&d, None).await;
    let mut b = ws_subscribe(&d, None).await;

    // Both sessions end at once, as a network drop: no close frame.
    d.faults().drop_websockets();
    assert!(ended_without_close(&mut a, Duration::from_secs(5)).await);
    assert!(ended_without_close(&mut b, Duration::from_secs(5)).await);

    // Unlike `ws: down`, a reconnect works at once and sees confirmations again.
    let mut c = ws_subscribe(&d, None).await;
    let sent = genesis_send(&d, &rpc, key(1).public_key(), XNO).await;
    let m = ws_next(&mut c, d.confirm_delay() + Duration::from_secs(2))
        .await
        .expect("a confirmation after the reconnect");
    assert_eq!(m["message"]["hash"], sent.hash().to_hex());

    // Through the admin route (served on the WebSocket port too).
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/admin/faults", d.ws_addr()))
        .json(&json!({"drop_websockets": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["websocket_drops"], 2);
    assert_eq!(v["ws"], "normal");
    assert!(ended_without_close(&mut c, Duration::from_secs(5)).await);
    let mut e = ws_subscribe(&d, None).await;
    let sent = genesis_send(&d, &rpc, key(2).public_key(), XNO).await;
    let m = ws_next(&mut e, d.confirm_delay() + Duration::from_secs(2))
        .await
        .expect("a confirmation after the second reconnect");
    assert_eq!(m["message"]["hash"], sent.hash().to_hex());
}
