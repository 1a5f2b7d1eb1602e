//! The V9 send → open chain, and the WebSocket confirmation topic (filters, acks, latency).

use crate::common::*;
use nanogate_devnet::{blocks, genesis_account};
use nanogate_protocol::nano::{BlockHash, StateBlock};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Generous: CI machines are noisy. The measured latency is printed.
const SLACK: Duration = Duration::from_secs(2);

fn v9(id: &str) -> (StateBlock, String) {
    let v = vector_block(id);
    let b = StateBlock::from_json(&v["block"]).unwrap();
    let hash = v["hash"].as_str().unwrap().to_string();
    assert_eq!(b.hash().to_hex(), hash, "{id} hash");
    (b, hash)
}

/// Waits for the confirmation of `hash` on `ws`, skipping others; returns it and the latency.
async fn wait_for(ws: &mut Ws, hash: &str, since: Instant, limit: Duration) -> (Value, Duration) {
    loop {
        let left = limit.saturating_sub(since.elapsed());
        let msg = ws_next(ws, left)
            .await
            .unwrap_or_else(|| panic!("no confirmation of {hash} within {limit:?}"));
        if msg["message"]["hash"] == hash {
            return (msg, since.elapsed());
        }
    }
}

#[tokio::test]
async fn v9_send_then_open_is_accepted_and_confirmed() {
    let d = start_with(nanogate_devnet::Confirm::AfterMs(300)).await;
    let rpc = Rpc::new(&d);
    // Nothing else on the network: the V9 send builds on the fresh genesis frontier.
    let (send, send_hash) = v9("block-v9-send");
    let (open, open_hash) = v9("block-v9-open");
    let payee = open.account;
    let mut ws = ws_subscribe(
        &d,
        Some(json!({"accounts": [payee.to_address()], "include_election_info": true, "include_sideband_info": true})),
    )
    .await;
    let limit = d.confirm_delay() + SLACK;

    let t = Instant::now();
    let v = rpc.process(&send, Some("send")).await;
    assert_eq!(v, json!({ "hash": send_hash }));
    let info = rpc.block_info(&send.hash()).await;
    if t.elapsed() < d.confirm_delay() / 2 {
        assert_eq!(info["confirmed"], "false", "not confirmed before the delay");
    }
    let (msg, latency) = wait_for(&mut ws, &send_hash, t, limit).await;
    println!(
        "V9 send: WebSocket confirmation after {latency:?} (delay {:?})",
        d.confirm_delay()
    );
    assert_eq!(msg["topic"], "confirmation");
    let m = &msg["message"];
    assert_eq!(m["account"], genesis_account().to_address());
    assert_eq!(m["amount"], XNO.to_string());
    assert_eq!(m["confirmation_type"], "active_quorum");
    assert_eq!(m["block"]["subtype"], "send");
    assert_eq!(m["block"]["link_as_account"], payee.to_address());
    assert_eq!(m["sideband"]["height"], "2");
    assert!(m["election_info"]["duration"].is_string());

    let info = rpc.block_info(&send.hash()).await;
    assert_eq!(info["confirmed"], "true");
    assert_eq!(info["subtype"], "send");
    assert_eq!(info["height"], "2");
    assert_eq!(info["amount"], XNO.to_string());
    assert_eq!(info["contents"]["signature"], send.to_json()["signature"]);
    let r = rpc
        .call(json!({"action": "receivable", "account": payee.to_address(), "count": "10", "source": "true"}))
        .await;
    assert_eq!(
        r,
        json!({"blocks": {send_hash.clone(): {"amount": XNO.to_string(), "source": genesis_account().to_address()}}})
    );

    let t = Instant::now();
    let v = rpc.process(&open, Some("open")).await;
    assert_eq!(v, json!({ "hash": open_hash }));
    let (msg, latency) = wait_for(&mut ws, &open_hash, t, limit).await;
    println!("V9 open: WebSocket confirmation after {latency:?}");
    assert_eq!(msg["message"]["block"]["subtype"], "receive");
    assert_eq!(msg["message"]["account"], payee.to_address());

    let info = rpc.block_info(&open.hash()).await;
    assert_eq!(info["confirmed"], "true");
    assert_eq!(info["subtype"], "receive");
    assert_eq!(info["height"], "1");
    let acct = rpc
        .call(json!({"action": "account_info", "account": payee.to_address(), "representative": "true", "receivable": "true", "include_confirmed": "true"}))
        .await;
    assert_eq!(acct["frontier"], open_hash);
    assert_eq!(acct["confirmed_frontier"], open_hash);
    assert_eq!(acct["confirmed_height"], "1");
    assert_eq!(acct["balance"], XNO.to_string());
    assert_eq!(acct["confirmed_balance"], XNO.to_string());
    assert_eq!(acct["receivable"], "0");
    assert_eq!(acct["representative"], genesis_account().to_address());
    let bi = rpc
        .call(json!({"action": "blocks_info", "json_block": "true", "hashes": [send_hash, open_hash, "F".repeat(64)], "include_not_found": "true", "receive_hash": "true", "source": "true"}))
        .await;
    assert_eq!(bi["blocks"][&send_hash]["receive_hash"], open_hash);
    assert_eq!(
        bi["blocks"][&open_hash]["source_account"],
        genesis_account().to_address()
    );
    assert_eq!(bi["blocks_not_found"], json!(["F".repeat(64)]));
    let h = rpc
        .call(json!({"action": "account_history", "account": genesis_account().to_address(), "count": "1"}))
        .await;
    assert_eq!(h["history"][0]["hash"], send_hash);
    assert_eq!(h["history"][0]["type"], "send");
    assert_eq!(h["previous"], nanogate_devnet::genesis_hash().to_hex());
    let bal = rpc
        .call(json!({"action": "account_balance", "account": payee.to_address()}))
        .await;
    assert_eq!(
        bal,
        json!({"balance": XNO.to_string(), "pending": "0", "receivable": "0"})
    );
}

#[tokio::test]
async fn each_confirmation_arrives_within_the_delay() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let mut ws = ws_subscribe(&d, None).await;
    let mut latencies = Vec::new();
    for i in 0..10 {
        let b = d.genesis_send(key(100 + i).public_key(), XNO).unwrap();
        let t = Instant::now();
        rpc.process_ok(&b).await;
        let (_, latency) =
            wait_for(&mut ws, &b.hash().to_hex(), t, d.confirm_delay() + SLACK).await;
        latencies.push(latency);
    }
    latencies.sort();
    println!(
        "WebSocket confirmation latency over 10 sends (delay {:?}): min {:?}, median {:?}, max {:?}",
        d.confirm_delay(),
        latencies[0],
        latencies[5],
        latencies[9]
    );
    assert!(latencies[0] >= d.confirm_delay() - Duration::from_millis(5));
}

#[tokio::test]
async fn account_filters_update_unsubscribe_and_ping() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let (x, y) = (key(1).public_key(), key(2).public_key());
    let mut only_x = ws_subscribe(&d, Some(json!({"accounts": [x.to_address()]}))).await;
    let mut nothing = ws_subscribe(&d, Some(json!({}))).await;
    let mut everything = ws_subscribe(&d, None).await;
    // Booleans as strings are accepted too (nano-node reads both).
    let mut strings = ws_subscribe(
        &d,
        Some(json!({"accounts": [y.to_address()], "include_election_info": "true", "include_block": "false"})),
    )
    .await;

    let to_x = genesis_send(&d, &rpc, x, XNO).await;
    let to_y = genesis_send(&d, &rpc, y, XNO).await;
    let wait = d.confirm_delay() + SLACK;
    let m = ws_next(&mut only_x, wait).await.unwrap();
    assert_eq!(
        m["message"]["hash"],
        to_x.hash().to_hex(),
        "filter matches the destination"
    );
    let m = ws_next(&mut everything, wait).await.unwrap();
    assert_eq!(m["message"]["hash"], to_x.hash().to_hex());
    let m = ws_next(&mut everything, wait).await.unwrap();
    assert_eq!(m["message"]["hash"], to_y.hash().to_hex());
    let m = ws_next(&mut strings, wait).await.unwrap();
    assert_eq!(m["message"]["hash"], to_y.hash().to_hex());
    assert!(m["message"]["election_info"].is_object());
    assert!(m["message"].get("block").is_none());
    assert!(ws_next(&mut only_x, Duration::from_millis(300))
        .await
        .is_none());
    assert!(ws_next(&mut nothing, Duration::from_millis(100))
        .await
        .is_none());

    // The account's own blocks match too.
    let open = blocks::open(&key(1), to_x.hash(), XNO);
    rpc.process_ok(&open).await;
    let m = ws_next(&mut only_x, wait).await.unwrap();
    assert_eq!(m["message"]["hash"], open.hash().to_hex());

    // update: add y, remove x.
    ws_send(
        &mut only_x,
        json!({"action": "update", "topic": "confirmation", "ack": true, "id": "u", "options": {"accounts_add": [y.to_address()], "accounts_del": [x.to_address()]}}),
    )
    .await;
    let ack = ws_next(&mut only_x, wait).await.unwrap();
    assert_eq!(ack["ack"], "update");
    let to_x2 = genesis_send(&d, &rpc, x, 1).await;
    let to_y2 = genesis_send(&d, &rpc, y, 1).await;
    let m = ws_next(&mut only_x, wait).await.unwrap();
    assert_eq!(m["message"]["hash"], to_y2.hash().to_hex());
    let _ = to_x2;

    // ping
    ws_send(&mut nothing, json!({"action": "ping", "id": 7})).await;
    let pong = ws_next(&mut nothing, wait).await.unwrap();
    assert_eq!(pong["ack"], "pong");
    assert_eq!(pong["id"], 7);
    assert!(pong["time"].as_str().unwrap().parse::<u64>().is_ok());

    // unsubscribe
    ws_send(
        &mut everything,
        json!({"action": "unsubscribe", "topic": "confirmation", "ack": true}),
    )
    .await;
    // Drain what was already queued until the ack.
    loop {
        let m = ws_next(&mut everything, wait).await.unwrap();
        if m["ack"] == "unsubscribe" {
            break;
        }
    }
    genesis_send(&d, &rpc, y, 1).await;
    assert!(ws_next(
        &mut everything,
        d.confirm_delay() + Duration::from_millis(300)
    )
    .await
    .is_none());
}

#[tokio::test]
async fn block_confirm_reannounces_a_confirmed_block() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let mut ws = ws_subscribe(&d, None).await;
    let mut quorum_only =
        ws_subscribe(&d, Some(json!({"confirmation_type": "active_quorum"}))).await;
    let b = genesis_send(&d, &rpc, key(1).public_key(), XNO).await;
    let wait = d.confirm_delay() + SLACK;
    let m = ws_next(&mut ws, wait).await.unwrap();
    assert_eq!(m["message"]["confirmation_type"], "active_quorum");
    assert!(ws_next(&mut quorum_only, wait).await.is_some());
    let v = rpc
        .call(json!({"action": "block_confirm", "hash": b.hash().to_hex()}))
        .await;
    assert_eq!(v, json!({"started": "1"}));
    let m = ws_next(&mut ws, wait).await.unwrap();
    assert_eq!(m["message"]["hash"], b.hash().to_hex());
    assert_eq!(
        m["message"]["confirmation_type"],
        "active_confirmation_height"
    );
    assert!(ws_next(&mut quorum_only, Duration::from_millis(300))
        .await
        .is_none());
    let v = rpc
        .call(json!({"action": "block_confirm", "hash": BlockHash([9; 32]).to_hex()}))
        .await;
    assert_eq!(v["error"], "Block not found");
}

#[tokio::test]
async fn receivable_shapes_and_confirmation_gate() {
    let d = start_with(nanogate_devnet::Confirm::Never).await;
    let rpc = Rpc::new(&d);
    let x = key(1).public_key();
    let s1 = genesis_send(&d, &rpc, x, 3).await;
    let s2 = genesis_send(&d, &rpc, x, 5).await;
    let acc = x.to_address();
    // Unconfirmed sends are hidden by default.
    let r = rpc
        .call(json!({"action": "receivable", "account": acc, "count": "10"}))
        .await;
    assert_eq!(r, json!({"blocks": ""}));
    let r = rpc
        .call(json!({"action": "receivable", "account": acc, "include_only_confirmed": "false"}))
        .await;
    let mut expected = vec![s1.hash().to_hex(), s2.hash().to_hex()];
    expected.sort();
    assert_eq!(r, json!({ "blocks": expected }));
    let r = rpc
        .call(json!({"action": "receivable", "account": acc, "include_only_confirmed": false, "threshold": "4"}))
        .await;
    assert_eq!(r, json!({"blocks": {s2.hash().to_hex(): "5"}}));
    let r = rpc
        .call(json!({"action": "pending", "account": acc, "include_only_confirmed": "false", "sorting": "true", "count": "1"}))
        .await;
    assert_eq!(
        r,
        json!({"blocks": {s2.hash().to_hex(): "5"}, "deprecated": "1"})
    );
    let r = rpc
        .call(json!({"action": "accounts_receivable", "accounts": [acc, genesis_account().to_address()], "include_only_confirmed": "false", "source": "true"}))
        .await;
    assert_eq!(
        r["blocks"][&acc][s1.hash().to_hex()]["source"],
        genesis_account().to_address()
    );
    assert!(r["blocks"].get(genesis_account().to_address()).is_none());
    let r = rpc
        .call(json!({"action": "receivable_exists", "hash": s1.hash().to_hex(), "include_only_confirmed": "false"}))
        .await;
    assert_eq!(r, json!({"exists": "1"}));
    let info = rpc
        .call(json!({"action": "account_info", "account": genesis_account().to_address()}))
        .await;
    assert_eq!(info["confirmation_height"], "1");
    assert_eq!(
        info["confirmation_height_frontier"],
        nanogate_devnet::genesis_hash().to_hex()
    );
    assert!(info.get("confirmed_frontier").is_none());
    let bal = rpc
        .call(json!({"action": "account_balance", "account": genesis_account().to_address()}))
        .await;
    assert_eq!(
        bal["balance"],
        u128::MAX.to_string(),
        "confirmed balance by default"
    );
    assert_eq!(
        rpc.call(json!({"action": "account_info", "account": acc}))
            .await["error"],
        "Account not found"
    );
}

#[tokio::test]
async fn misc_actions() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let v = rpc.call(json!({"action": "version"})).await;
    assert_eq!(v["network"], "dev");
    assert_eq!(
        v["network_identifier"],
        nanogate_devnet::genesis_hash().to_hex()
    );
    let v = rpc.call(json!({"action": "block_count"})).await;
    assert_eq!(v, json!({"count": "1", "unchecked": "0", "cemented": "1"}));
    let root = nanogate_devnet::genesis_hash().to_hex();
    let v = rpc
        .call(json!({"action": "work_generate", "hash": root, "difficulty": "fe00000000000000"}))
        .await;
    let work = v["work"].as_str().unwrap().to_string();
    assert_eq!(v["hash"], root);
    let v = rpc
        .call(json!({"action": "work_validate", "hash": root, "work": work, "difficulty": "fe00000000000000"}))
        .await;
    assert_eq!(v["valid"], "1");
    assert_eq!(v["valid_receive"], "1");
    let v = rpc
        .call(json!({"action": "work_validate", "hash": root, "work": "0000000000000000"}))
        .await;
    assert_eq!(v["valid_all"], "0");
    assert!(v.get("valid").is_none());
    let v = rpc
        .call(json!({"action": "work_generate", "hash": root, "difficulty": "ffffffffffffffff"}))
        .await;
    assert_eq!(
        v["error"],
        "Difficulty above config limit or below publish threshold"
    );
}
