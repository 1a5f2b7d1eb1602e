//! The node RPC client against in-test mock nodes: failover, fail-closed unavailability,
//! nano-node / RsNano quirks, and `process` outcome mapping (invariant 6: fail closed,
//! visibly; invariant 4: settle before serving, so `process` outcomes must never be guessed).
#![allow(clippy::unwrap_used)]

mod node_mock;

use nanogate_protocol::nano::BlockHash;
use nanogate_sidecar::node::{
    redact_url, LedgerRejection, NodeClient, NodeConfig, NodeError, NodeMetrics, ProcessResult,
};
use node_mock::{block_info_json, closed_port, genesis_key, merchant, mock_rpc, send_block, Reply};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cfg(urls: Vec<String>) -> NodeConfig {
    NodeConfig {
        rpc_urls: urls,
        ws_urls: Vec::new(),
        call_timeout: Duration::from_millis(500),
        retries: 2,
        backoff: Duration::from_millis(20),
    }
}

fn version_json() -> Value {
    json!({
        "rpc_version": "1", "store_version": "24", "protocol_version": "21",
        "node_vendor": "RsNano 2.0", "store_vendor": "lmdb-rkv 0.14.0", "network": "dev",
        "network_identifier": "04270D7F11C4B2B472F2854C5A59F2A7E84226CE9ED799DE75744BD7D85FC9D9",
        "build_info": "TODO get buildinfo"
    })
}

#[derive(Default)]
struct Recorder {
    errors: Mutex<Vec<(String, String)>>,
    latencies: Mutex<Vec<(String, f64)>>,
}

impl NodeMetrics for Recorder {
    fn on_rpc_error(&self, node_url: &str, action: &str) {
        self.errors
            .lock()
            .unwrap()
            .push((node_url.to_owned(), action.to_owned()));
    }
    fn on_rpc_latency(&self, action: &str, secs: f64) {
        self.latencies
            .lock()
            .unwrap()
            .push((action.to_owned(), secs));
    }
}

#[tokio::test]
async fn failover_when_first_node_refuses_connection() {
    let dead = closed_port("http").await;
    let good = mock_rpc(|_| Reply::Json(version_json())).await;
    let rec = Arc::new(Recorder::default());
    let client =
        NodeClient::new(&cfg(vec![dead.clone(), good.url.clone()])).with_metrics(rec.clone());
    let t0 = Instant::now();
    let v = client.version().await.unwrap();
    println!("failover past a refused port took {:?}", t0.elapsed());
    assert_eq!(v.network, "dev");
    assert_eq!(v.node_vendor, "RsNano 2.0");
    assert!(v.is_network(nanogate_protocol::nano::Network::Dev));
    assert!(!v.is_network(nanogate_protocol::nano::Network::Live));
    assert_eq!(good.hits(), 1);
    assert_eq!(
        rec.errors.lock().unwrap().as_slice(),
        &[(dead.clone(), "version".to_owned())]
    );
    assert_eq!(rec.latencies.lock().unwrap().len(), 1);

    // The healthy node is now preferred: the dead one is not tried again.
    client.version().await.unwrap();
    assert_eq!(rec.errors.lock().unwrap().len(), 1);
    assert_eq!(good.hits(), 2);
}

#[tokio::test]
async fn failover_on_http_500_non_json_and_non_object() {
    let five = mock_rpc(|_| Reply::Status(500, "boom".into())).await;
    let unprocessable = mock_rpc(|_| Reply::Status(422, "Failed to deserialize".into())).await;
    let text = mock_rpc(|_| Reply::Text("<html>proxy error</html>".into())).await;
    let array = mock_rpc(|_| Reply::Json(json!([1, 2]))).await;
    let good = mock_rpc(|_| Reply::Json(version_json())).await;
    let rec = Arc::new(Recorder::default());
    let client = NodeClient::new(&cfg(vec![
        five.url.clone(),
        unprocessable.url.clone(),
        text.url.clone(),
        array.url.clone(),
        good.url.clone(),
    ]))
    .with_metrics(rec.clone());
    assert_eq!(client.version().await.unwrap().network, "dev");
    for m in [&five, &unprocessable, &text, &array, &good] {
        assert_eq!(m.hits(), 1, "{}", m.url);
    }
    assert_eq!(rec.errors.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn all_nodes_refusing_is_unavailable_quickly() {
    let a = closed_port("http").await;
    let b = closed_port("http").await;
    let client = NodeClient::new(&cfg(vec![a, b]));
    let t0 = Instant::now();
    let err = client.version().await.unwrap_err();
    let took = t0.elapsed();
    println!("all refused: {err} after {took:?}");
    match err {
        NodeError::Unavailable { tried, ref last } => {
            assert_eq!(tried, 6, "2 nodes x (1 + 2 retries)");
            assert!(!last.is_empty());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(err.is_unavailable());
    // 20 + 40 ms of backoff plus six refused connects: generous bound.
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn hanging_nodes_are_bounded_by_the_call_timeout() {
    let hang = mock_rpc(|_| Reply::Hang).await;
    let mut c = cfg(vec![hang.url.clone()]);
    c.call_timeout = Duration::from_millis(200);
    c.retries = 1;
    let client = NodeClient::new(&c);
    let t0 = Instant::now();
    let err = client.block_info(&BlockHash([1; 32])).await.unwrap_err();
    let took = t0.elapsed();
    println!("hanging node: {err} after {took:?}");
    assert!(
        matches!(err, NodeError::Unavailable { tried: 2, .. }),
        "{err:?}"
    );
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn no_nodes_configured_is_unavailable() {
    let client = NodeClient::new(&cfg(vec![]));
    assert!(matches!(
        client.version().await,
        Err(NodeError::Unavailable { tried: 0, .. })
    ));
}

#[tokio::test]
async fn node_error_answers_are_not_failed_over() {
    let a = mock_rpc(|_| Reply::Json(json!({"error": "RPC control is disabled"}))).await;
    let b = mock_rpc(|_| Reply::Json(json!({"work": "0000000000000000"}))).await;
    let client = NodeClient::new(&cfg(vec![a.url.clone(), b.url.clone()]));
    let err = client.work_generate(&[1; 32], 1).await.unwrap_err();
    assert_eq!(err, NodeError::Node("RPC control is disabled".into()));
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn account_info_quirks_nano_node_and_rsnano() {
    let g = genesis_key().public_key();
    let frontier = "04270d7f11c4b2b472f2854c5a59f2a7e84226ce9ed799de75744bd7d85fc9d9";
    // nano-node without include_confirmed support: confirmation_height_frontier only,
    // lower-case hex, "" for an empty member.
    let old_style = mock_rpc(move |req| {
        Reply::Json(json!({
            "frontier": frontier, "open_block": frontier, "representative_block": frontier,
            "balance": "340282366920938463463374607431768211455", "modified_timestamp": "0",
            "block_count": "1", "account_version": "0",
            "confirmation_height": "1", "confirmation_height_frontier": frontier,
            "representative": req["account"].clone(), "pending": "0", "receivable": "0",
            "weight": ""
        }))
    })
    .await;
    let client = NodeClient::new(&cfg(vec![old_style.url.clone()]));
    let info = client.account_info(&g).await.unwrap().unwrap();
    let want = BlockHash::from_hex(frontier).unwrap();
    assert_eq!(info.frontier, want);
    assert_eq!(info.confirmed_frontier, Some(want));
    assert_eq!(info.confirmed_balance, None);
    assert_eq!(info.confirmed_height, Some(1));
    assert_eq!(info.balance, u128::MAX);
    assert_eq!(info.block_count, 1);
    assert_eq!(info.representative, Some(g));
    // Booleans go out as strings (RsNano rejects JSON booleans in RPC).
    let req = old_style.last_request().unwrap();
    assert_eq!(req["action"], "account_info");
    assert_eq!(req["account"], g.to_address());
    assert_eq!(req["include_confirmed"], "true");
    assert_eq!(req["representative"], "true");

    // The recorded RsNano answer: confirmed_* present, no confirmation_height_frontier.
    let rsnano = mock_rpc(|_| {
        Reply::Json(json!({"frontier": "04270D7F11C4B2B472F2854C5A59F2A7E84226CE9ED799DE75744BD7D85FC9D9", "open_block": "04270D7F11C4B2B472F2854C5A59F2A7E84226CE9ED799DE75744BD7D85FC9D9", "representative_block": "04270D7F11C4B2B472F2854C5A59F2A7E84226CE9ED799DE75744BD7D85FC9D9", "balance": "340282366920938463463374607431768211455", "modified_timestamp": "0", "block_count": "1", "account_version": "0", "confirmation_height": "1", "confirmed_height": "1", "confirmed_frontier": "04270D7F11C4B2B472F2854C5A59F2A7E84226CE9ED799DE75744BD7D85FC9D9", "representative": "nano_3e3j5tkog48pnny9dmfzj1r16pg8t1e76dz5tmac6iq689wyjfpiij4txtdo", "weight": "340282366920938463463374607431768211455", "pending": "0", "receivable": "0", "confirmed_balance": "340282366920938463463374607431768211455", "confirmed_pending": "0", "confirmed_receivable": "0", "confirmed_representative": "nano_3e3j5tkog48pnny9dmfzj1r16pg8t1e76dz5tmac6iq689wyjfpiij4txtdo"}))
    })
    .await;
    let client = NodeClient::new(&cfg(vec![rsnano.url.clone()]));
    let info = client.account_info(&g).await.unwrap().unwrap();
    assert_eq!(info.confirmed_frontier, Some(want));
    assert_eq!(info.confirmed_balance, Some(u128::MAX));
    assert_eq!(info.representative, Some(g));

    // Unopened account.
    let missing = mock_rpc(|_| Reply::Json(json!({"error": "Account not found"}))).await;
    let client = NodeClient::new(&cfg(vec![missing.url.clone()]));
    assert_eq!(client.account_info(&merchant()).await.unwrap(), None);

    // Garbage in a required field is a protocol error, not a panic.
    let garbage = mock_rpc(|_| Reply::Json(json!({"frontier": "xyz", "balance": "-1"}))).await;
    let client = NodeClient::new(&cfg(vec![garbage.url.clone()]));
    assert!(matches!(
        client.account_info(&g).await,
        Err(NodeError::Protocol(_))
    ));
}

#[tokio::test]
async fn block_info_quirks() {
    let key = genesis_key();
    let prev =
        BlockHash::from_hex("04270D7F11C4B2B472F2854C5A59F2A7E84226CE9ED799DE75744BD7D85FC9D9")
            .unwrap();
    let block = send_block(&key, prev, 5, merchant());
    let hash = block.hash();
    let b2 = block.clone();
    let node = mock_rpc(move |req| {
        let h = req["hash"].as_str().unwrap_or_default().to_owned();
        if h == b2.hash().to_hex() {
            Reply::Json(block_info_json(&b2, true))
        } else if h == "04270D7F11C4B2B472F2854C5A59F2A7E84226CE9ED799DE75744BD7D85FC9D9" {
            // The dev genesis: a legacy open (no state contents), JSON-boolean `confirmed`.
            Reply::Json(json!({"block_account": "nano_3e3j5tkog48pnny9dmfzj1r16pg8t1e76dz5tmac6iq689wyjfpiij4txtdo", "amount": "340282366920938463463374607431768211455", "balance": "340282366920938463463374607431768211455", "height": "1", "local_timestamp": "0", "successor": "0000000000000000000000000000000000000000000000000000000000000000", "confirmed": true, "contents": {"type": "open", "account": "nano_3e3j5tkog48pnny9dmfzj1r16pg8t1e76dz5tmac6iq689wyjfpiij4txtdo", "source": "B0311EA55708D6A53C75CDBF88300259C6D018522FE3D4D0A242E431F9E8B6D0", "representative": "nano_3e3j5tkog48pnny9dmfzj1r16pg8t1e76dz5tmac6iq689wyjfpiij4txtdo", "signature": "ECDA914373A2F0CA1296475BAEE40500A7F0A7AD72A5A80C81D7FAB7F6C802B2CC7DB50F5DD0FB25B2EF11761FA7344A158DD5A700B21BD47DE5BD0F63153A02", "work": "7B42A00EE91D5810"}}))
        } else {
            Reply::Json(json!({"error": "Block not found"}))
        }
    })
    .await;
    let client = NodeClient::new(&cfg(vec![node.url.clone()]));
    let info = client.block_info(&hash).await.unwrap().unwrap();
    assert!(info.confirmed);
    assert_eq!(info.account, key.public_key());
    assert_eq!(info.amount, 1000);
    assert_eq!(info.balance, 5);
    assert_eq!(info.height, 2);
    assert_eq!(info.subtype.as_deref(), Some("send"));
    assert_eq!(info.contents.as_ref(), Some(&block));
    assert_eq!(info.local_timestamp, 1795630013);
    assert_eq!(info.successor, None);
    let req = node.last_request().unwrap();
    assert_eq!(req["json_block"], "true");

    let genesis = client.block_info(&prev).await.unwrap().unwrap();
    assert!(genesis.confirmed);
    assert!(genesis.contents.is_none());
    assert_eq!(genesis.height, 1);

    assert_eq!(client.block_info(&BlockHash([1; 32])).await.unwrap(), None);
}

#[tokio::test]
async fn block_info_with_contents_of_another_block_is_refused() {
    let key = genesis_key();
    let a = send_block(&key, BlockHash([1; 32]), 5, merchant());
    let b = send_block(&key, BlockHash([2; 32]), 5, merchant());
    let node = mock_rpc(move |_| Reply::Json(block_info_json(&b, true))).await;
    let client = NodeClient::new(&cfg(vec![node.url.clone()]));
    assert!(matches!(
        client.block_info(&a.hash()).await,
        Err(NodeError::Protocol(_))
    ));
}

#[tokio::test]
async fn process_maps_every_rejection_string() {
    let table: &[(&str, LedgerRejection)] = &[
        ("Old block", LedgerRejection::OldBlock),
        ("Fork", LedgerRejection::Fork),
        ("Bad signature", LedgerRejection::BadSignature),
        ("Gap previous block", LedgerRejection::GapPrevious),
        ("Gap source block", LedgerRejection::GapSource),
        (
            "Block work is less than threshold",
            LedgerRejection::InsufficientWork,
        ),
        (
            "Block work is insufficient",
            LedgerRejection::InsufficientWork,
        ),
        (
            "Balance and amount delta do not match",
            LedgerRejection::BalanceMismatch,
        ),
        ("Unreceivable", LedgerRejection::Unreceivable),
        (
            "Negative spend",
            LedgerRejection::Other("Negative spend".into()),
        ),
        (
            "Invalid block balance for given subtype",
            LedgerRejection::Other("Invalid block balance for given subtype".into()),
        ),
        (
            "Block attempts to open the burn account",
            LedgerRejection::Other("Block attempts to open the burn account".into()),
        ),
    ];
    let answer = Arc::new(Mutex::new(String::new()));
    let a2 = answer.clone();
    let node = mock_rpc(move |_| Reply::Json(json!({"error": a2.lock().unwrap().clone()}))).await;
    let client = NodeClient::new(&cfg(vec![node.url.clone()]));
    let block = send_block(&genesis_key(), BlockHash([9; 32]), 1, merchant());
    for (text, want) in table {
        *answer.lock().unwrap() = (*text).to_owned();
        let got = client.process(&block).await.unwrap();
        assert_eq!(got, ProcessResult::Rejected(want.clone()), "{text}");
    }
    assert!(LedgerRejection::GapSource.is_gap());
    assert!(!LedgerRejection::Fork.is_gap());
    // Sent without subtype (so Old block / Fork are not masked), with json_block as a string.
    let req = node.last_request().unwrap();
    assert_eq!(req["action"], "process");
    assert_eq!(req["json_block"], "true");
    assert!(req.get("subtype").is_none(), "{req}");
    assert_eq!(req["block"]["link"], hex_upper(&merchant().0));
    assert_eq!(node.hits(), table.len(), "process is never retried");
}

fn hex_upper(b: &[u8]) -> String {
    nanogate_protocol::hex::encode_upper(b)
}

#[tokio::test]
async fn process_success_checks_the_hash() {
    let block = send_block(&genesis_key(), BlockHash([9; 32]), 1, merchant());
    let h = block.hash().to_hex().to_lowercase();
    let node = mock_rpc(move |_| Reply::Json(json!({"hash": h}))).await;
    let client = NodeClient::new(&cfg(vec![node.url.clone()]));
    assert_eq!(
        client.process(&block).await.unwrap(),
        ProcessResult::Processed(block.hash())
    );
    let liar = mock_rpc(|_| Reply::Json(json!({"hash": "AB".repeat(32)}))).await;
    let client = NodeClient::new(&cfg(vec![liar.url.clone()]));
    assert!(matches!(
        client.process(&block).await,
        Err(NodeError::Protocol(_))
    ));
}

#[tokio::test]
async fn process_fails_over_only_when_nothing_was_sent() {
    let block = send_block(&genesis_key(), BlockHash([9; 32]), 1, merchant());
    let h = block.hash().to_hex();
    let good = mock_rpc(move |_| Reply::Json(json!({"hash": h}))).await;

    // Refused connection: nothing reached the node, the next node gets it.
    let dead = closed_port("http").await;
    let client = NodeClient::new(&cfg(vec![dead, good.url.clone()]));
    assert_eq!(
        client.process(&block).await.unwrap(),
        ProcessResult::Processed(block.hash())
    );
    assert_eq!(good.hits(), 1);

    // Timeout: the first node may have applied it; never re-sent elsewhere.
    let hang = mock_rpc(|_| Reply::Hang).await;
    let mut c = cfg(vec![hang.url.clone(), good.url.clone()]);
    c.call_timeout = Duration::from_millis(200);
    let client = NodeClient::new(&c);
    let t0 = Instant::now();
    let err = client.process(&block).await.unwrap_err();
    println!("process timeout: {err} after {:?}", t0.elapsed());
    assert!(err.is_unavailable());
    assert_eq!(hang.hits(), 1);
    assert_eq!(good.hits(), 1, "not re-sent after a timeout");

    // HTTP 500: an answer came back; not re-sent either.
    let five = mock_rpc(|_| Reply::Status(500, "boom".into())).await;
    let client = NodeClient::new(&cfg(vec![five.url.clone(), good.url.clone()]));
    assert!(client.process(&block).await.unwrap_err().is_unavailable());
    assert_eq!(five.hits(), 1);
    assert_eq!(good.hits(), 1);
}

#[tokio::test]
async fn process_or_resolve_asks_block_info_after_an_unknown_outcome() {
    let block = send_block(&genesis_key(), BlockHash([9; 32]), 1, merchant());
    let b2 = block.clone();
    // The node applies the block but the answer is lost (HTTP 502 from a proxy).
    let node = mock_rpc(move |req| match req["action"].as_str() {
        Some("process") => Reply::Status(502, "bad gateway".into()),
        Some("block_info") => Reply::Json(block_info_json(&b2, false)),
        _ => Reply::Json(json!({"error": "Unknown command"})),
    })
    .await;
    let client = NodeClient::new(&cfg(vec![node.url.clone()]));
    assert_eq!(
        client.process_or_resolve(&block).await.unwrap(),
        ProcessResult::Processed(block.hash())
    );
    // "Old block" with the block present is a success too.
    let b3 = block.clone();
    let node = mock_rpc(move |req| match req["action"].as_str() {
        Some("process") => Reply::Json(json!({"error": "Old block"})),
        _ => Reply::Json(block_info_json(&b3, true)),
    })
    .await;
    let client = NodeClient::new(&cfg(vec![node.url.clone()]));
    assert_eq!(
        client.process_or_resolve(&block).await.unwrap(),
        ProcessResult::Processed(block.hash())
    );
}

#[tokio::test]
async fn work_generate_accepts_rsnano_decimal_difficulty_and_checks_work() {
    let root = [3u8; 32];
    let difficulty = 0xff00_0000_0000_0000u64;
    let work = nanogate_protocol::nano::work::generate(&root, difficulty);
    let reached = nanogate_protocol::nano::work::difficulty(&root, work);
    // RsNano: upper-case work, decimal difficulty.
    let node = mock_rpc(move |_| {
        Reply::Json(json!({
            "work": format!("{work:016X}"),
            "difficulty": reached.to_string(),
            "multiplier": "1.5",
            "hash": hex_upper(&root),
        }))
    })
    .await;
    let client = NodeClient::new(&cfg(vec![node.url.clone()]));
    assert_eq!(client.work_generate(&root, difficulty).await.unwrap(), work);
    let req = node.last_request().unwrap();
    assert_eq!(req["difficulty"], "ff00000000000000");
    assert_eq!(req["hash"], hex_upper(&root));

    // Work that does not reach the difficulty is refused.
    let bad =
        mock_rpc(|_| Reply::Json(json!({"work": "0000000000000000", "difficulty": "0"}))).await;
    let client = NodeClient::new(&cfg(vec![bad.url.clone()]));
    assert!(matches!(
        client.work_generate(&root, u64::MAX - 1).await,
        Err(NodeError::Protocol(_))
    ));
}

#[tokio::test]
async fn block_confirm_and_errors() {
    let node = mock_rpc(|req| {
        if req["hash"] == "01".repeat(32) {
            Reply::Json(json!({"started": "1"}))
        } else {
            Reply::Json(json!({"error": "Block not found"}))
        }
    })
    .await;
    let client = NodeClient::new(&cfg(vec![node.url.clone()]));
    client.block_confirm(&BlockHash([1; 32])).await.unwrap();
    assert_eq!(
        client.block_confirm(&BlockHash([2; 32])).await,
        Err(NodeError::Node("Block not found".into()))
    );
}

#[tokio::test]
async fn clones_share_the_preferred_node() {
    let dead = closed_port("http").await;
    let good = mock_rpc(|_| Reply::Json(version_json())).await;
    let rec = Arc::new(Recorder::default());
    let a = NodeClient::new(&cfg(vec![dead, good.url.clone()])).with_metrics(rec.clone());
    let b = a.clone();
    a.version().await.unwrap();
    b.version().await.unwrap();
    assert_eq!(rec.errors.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn errors_and_logs_name_nodes_without_credentials() {
    assert_eq!(
        redact_url("https://user:pw@node.example:7076/rpc?key=abc"),
        "https://node.example:7076"
    );
    assert_eq!(redact_url("ws://127.0.0.1:47000"), "ws://127.0.0.1:47000");
    let dead = closed_port("http").await;
    let client = NodeClient::new(&cfg(vec![format!("{dead}/rpc?key=sekrit")]));
    let err = client.version().await.unwrap_err();
    assert!(err.is_unavailable());
    assert!(!err.to_string().contains("sekrit"), "{err}");
    assert!(!format!("{client:?}").contains("sekrit"));
}
