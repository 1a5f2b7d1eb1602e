//! Conformance: the node client and the confirmation tracker fed the answers a real RsNano 2.0
//! dev node gave (`tests/vectors/rsnano-dev-transcript.json`). Every recorded answer the
//! client can meet must parse to the right typed outcome, and nothing we send may carry a JSON
//! boolean (RsNano answers HTTP 422 to those).
#![allow(clippy::unwrap_used)]

mod node_mock;

use nanogate_protocol::nano::{BlockHash, PublicKey, StateBlock};
use nanogate_sidecar::node::{
    Confirmations, LedgerRejection, NodeClient, NodeConfig, NodeError, ProcessResult, WaitOutcome,
};
use node_mock::{mock_rpc, mock_ws, Reply};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn transcript() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/rsnano-dev-transcript.json"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path} is required but cannot be read: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn entry<'a>(t: &'a Value, run: &str, label: &str) -> &'a Value {
    t[run]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["label"] == label)
        .unwrap_or_else(|| panic!("no `{label}` in {run}"))
}

/// A mock that answers whatever recorded exchange the test selects.
struct Replay {
    current: Arc<Mutex<Value>>,
    node: node_mock::MockRpc,
}

impl Replay {
    async fn start() -> Self {
        let current = Arc::new(Mutex::new(Value::Null));
        let c2 = current.clone();
        let node = mock_rpc(move |_| {
            let e = c2.lock().unwrap().clone();
            let status = e["http_status"].as_u64().unwrap_or(200) as u16;
            match (&e["response"], status) {
                (Value::String(s), _) => Reply::Status(status, s.clone()),
                (v, 200) => Reply::Json(v.clone()),
                (v, s) => Reply::Status(s, v.to_string()),
            }
        })
        .await;
        Replay { current, node }
    }

    fn play(&self, e: &Value) {
        *self.current.lock().unwrap() = e.clone();
    }

    fn client(&self) -> NodeClient {
        NodeClient::new(&NodeConfig {
            rpc_urls: vec![self.node.url.clone()],
            ws_urls: Vec::new(),
            call_timeout: Duration::from_secs(2),
            retries: 0,
            backoff: Duration::from_millis(10),
        })
    }
}

fn no_json_booleans(v: &Value) -> bool {
    match v {
        Value::Bool(_) => false,
        Value::Array(a) => a.iter().all(no_json_booleans),
        Value::Object(o) => o.values().all(no_json_booleans),
        _ => true,
    }
}

fn block_of(e: &Value) -> StateBlock {
    StateBlock::from_json(&e["request"]["block"]).unwrap()
}

#[tokio::test]
async fn rsnano_transcript_rpc_answers_parse() {
    let t = transcript();
    let r = Replay::start().await;
    let client = r.client();
    let send_hash =
        BlockHash::from_hex(t["synthetic_chain"]["send_hash"].as_str().unwrap()).unwrap();
    let genesis = PublicKey::from_address(
        "nano_3e3j5tkog48pnny9dmfzj1r16pg8t1e76dz5tmac6iq689wyjfpiij4txtdo",
    )
    .unwrap();
    let payee =
        PublicKey::from_hex(t["synthetic_chain"]["payee_public_key"].as_str().unwrap()).unwrap();

    r.play(entry(&t, "run1", "version"));
    let v = client.version().await.unwrap();
    assert!(v.is_network(nanogate_protocol::nano::Network::Dev));
    assert_eq!(v.node_vendor, "RsNano 2.0");

    r.play(entry(&t, "run1", "account_info"));
    let a = client.account_info(&genesis).await.unwrap().unwrap();
    assert_eq!(a.balance, u128::MAX);
    assert_eq!(a.confirmed_frontier, Some(a.frontier));
    assert_eq!(a.confirmed_balance, Some(u128::MAX));
    assert_eq!(a.confirmed_height, Some(1));
    assert_eq!(a.block_count, 1);

    r.play(entry(&t, "run1", "account_info unopened"));
    assert_eq!(client.account_info(&payee).await.unwrap(), None);

    r.play(entry(&t, "run1", "block_info genesis"));
    let g = client.block_info(&a.frontier).await.unwrap().unwrap();
    assert!(g.confirmed && g.contents.is_none() && g.height == 1);

    r.play(entry(&t, "run1", "block_info unknown"));
    assert_eq!(client.block_info(&BlockHash([1; 32])).await.unwrap(), None);

    for (label, want) in [
        ("process bad signature", LedgerRejection::BadSignature),
        ("process zero work", LedgerRejection::InsufficientWork),
        (
            "process open before send (gap source)",
            LedgerRejection::GapSource,
        ),
        (
            "process wrong subtype",
            LedgerRejection::Other("Invalid block balance for given subtype".into()),
        ),
    ] {
        let e = entry(&t, "run1", label);
        r.play(e);
        assert_eq!(
            client.process(&block_of(e)).await.unwrap(),
            ProcessResult::Rejected(want),
            "{label}"
        );
    }
    for (label, want) in [
        (
            "process send again, no subtype (old)",
            LedgerRejection::OldBlock,
        ),
        ("process fork, no subtype", LedgerRejection::Fork),
        (
            "process gap previous (work for other root)",
            LedgerRejection::InsufficientWork,
        ),
    ] {
        let e = entry(&t, "run2", label);
        r.play(e);
        assert_eq!(
            client.process(&block_of(e)).await.unwrap(),
            ProcessResult::Rejected(want),
            "{label}"
        );
    }

    let e = entry(&t, "run1", "process send");
    r.play(e);
    assert_eq!(
        client.process(&block_of(e)).await.unwrap(),
        ProcessResult::Processed(send_hash)
    );

    r.play(entry(&t, "run1", "block_info send (immediately)"));
    let b = client.block_info(&send_hash).await.unwrap().unwrap();
    assert!(!b.confirmed);
    assert_eq!(b.amount, 1_000_000_000_000_000_000_000_000_000_000);
    assert_eq!(b.subtype.as_deref(), Some("send"));
    assert_eq!(
        b.contents.as_ref().map(StateBlock::link_as_key),
        Some(payee)
    );

    r.play(entry(&t, "run1", "block_info send (confirmed)"));
    assert!(
        client
            .block_info(&send_hash)
            .await
            .unwrap()
            .unwrap()
            .confirmed
    );

    // RsNano prints work upper-case and difficulty in decimal.
    let e = entry(&t, "run1", "work_generate");
    r.play(e);
    let root = BlockHash::from_hex(e["request"]["hash"].as_str().unwrap()).unwrap();
    let work = client
        .work_generate(&root.0, 0xfe00_0000_0000_0000)
        .await
        .unwrap();
    assert_eq!(work, 0xE067_9FA1_E45C_D730);

    r.play(entry(&t, "run1", "block_confirm"));
    client.block_confirm(&send_hash).await.unwrap();

    // RsNano's HTTP 422 plain-text answer counts as a failed node, not as an answer.
    r.play(entry(&t, "run1", "unknown action"));
    let err = client
        .raw_call(serde_json::json!({"action": "frobnicate"}))
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Unavailable { .. }), "{err:?}");

    for req in r.node.requests() {
        assert!(
            no_json_booleans(&req),
            "JSON boolean sent to the RPC: {req}"
        );
    }
}

#[tokio::test]
async fn rsnano_transcript_websocket_messages_confirm_waiters() {
    let t = transcript();
    let messages = entry(&t, "run1", "ws messages")["response"]
        .as_array()
        .unwrap()
        .clone();
    let send_hash =
        BlockHash::from_hex(t["synthetic_chain"]["send_hash"].as_str().unwrap()).unwrap();
    let open_hash =
        BlockHash::from_hex(t["synthetic_chain"]["open_hash"].as_str().unwrap()).unwrap();
    let r = Replay::start().await;
    // The node still says "unconfirmed": only the pushes can confirm.
    r.play(entry(&t, "run1", "block_info send (immediately)"));
    let ws = mock_ws().await;
    let conf = Confirmations::spawn(vec![ws.url.clone()], r.client());
    let payee =
        PublicKey::from_hex(t["synthetic_chain"]["payee_public_key"].as_str().unwrap()).unwrap();
    conf.watch_account(&payee);
    assert!(conf.wait_ws_connected(Duration::from_secs(5)).await);
    // Our subscribe is the recorded one in substance: JSON booleans, account filter.
    let sub = ws.actions("subscribe").pop().unwrap();
    let recorded = &entry(&t, "run1", "ws subscribe")["request"];
    assert_eq!(sub["topic"], recorded["topic"]);
    assert_eq!(sub["ack"], recorded["ack"]);
    assert_eq!(
        sub["options"]["include_sideband_info"],
        recorded["options"]["include_sideband_info"]
    );

    let mut events = conf.subscribe();
    let waiter = {
        let conf = conf.clone();
        tokio::spawn(async move {
            conf.wait_confirmed(&send_hash, Instant::now() + Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for m in &messages {
        ws.push(m.to_string());
    }
    match waiter.await.unwrap().unwrap() {
        WaitOutcome::Confirmed(info) => {
            assert_eq!(info.hash, send_hash);
            assert_eq!(info.height, 2);
            assert_eq!(info.amount, 1_000_000_000_000_000_000_000_000_000_000);
            assert_eq!(info.subtype.as_deref(), Some("send"));
            assert_eq!(info.contents.map(|b| b.link_as_key()), Some(payee));
        }
        other => panic!("expected Confirmed, got {other:?}"),
    }
    // Three messages, one a duplicate (block_confirm re-announce): two events.
    let first = events.recv().await.unwrap();
    let second = events.recv().await.unwrap();
    assert_eq!((first.hash, second.hash), (send_hash, open_hash));
    assert_eq!(first.destination(), Some(payee));
    assert_eq!(second.subtype.as_deref(), Some("receive"));
    assert_eq!(second.destination(), None);
    assert_eq!(first.time_ms, Some(1795630013504));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(events.try_recv().is_err());
}
