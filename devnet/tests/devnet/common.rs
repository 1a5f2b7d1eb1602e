//! Shared test helpers: a JSON-RPC client, a WebSocket client, keys and vector loading.

use futures_util::{SinkExt, StreamExt};
use nanogate_devnet::{blocks, Confirm, Devnet, DevnetConfig};
use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey, StateBlock};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub const XNO: u128 = 1_000_000_000_000_000_000_000_000_000_000;

pub async fn start() -> Devnet {
    start_with(Confirm::AfterMs(100)).await
}

pub async fn start_with(confirm: Confirm) -> Devnet {
    let mut cfg = DevnetConfig::local();
    cfg.confirm = confirm;
    Devnet::start(cfg).await.unwrap()
}

/// A deterministic test key.
pub fn key(i: u32) -> PrivateKey {
    PrivateKey::from_seed(&[7; 32], i)
}

#[derive(Clone)]
pub struct Rpc {
    client: reqwest::Client,
    url: String,
}

impl Rpc {
    pub fn new(devnet: &Devnet) -> Self {
        Rpc {
            client: reqwest::Client::new(),
            url: devnet.rpc_url(),
        }
    }

    /// POSTs a request; asserts HTTP 200 and a JSON body.
    pub async fn call(&self, req: Value) -> Value {
        let resp = self.client.post(&self.url).json(&req).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {req}");
        resp.json().await.unwrap()
    }

    pub async fn raw(&self, body: &str) -> (u16, String) {
        let resp = self
            .client
            .post(&self.url)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// `process` with json_block; returns the whole answer.
    pub async fn process(&self, block: &StateBlock, subtype: Option<&str>) -> Value {
        let mut req = json!({"action": "process", "json_block": "true", "block": block.to_json()});
        if let Some(st) = subtype {
            req["subtype"] = Value::from(st);
        }
        self.call(req).await
    }

    /// `process` expected to succeed; returns the hash.
    pub async fn process_ok(&self, block: &StateBlock) -> BlockHash {
        let v = self.process(block, None).await;
        let h = v["hash"]
            .as_str()
            .unwrap_or_else(|| panic!("process failed: {v}"));
        let h = BlockHash::from_hex(h).unwrap();
        assert_eq!(h, block.hash());
        h
    }

    /// `process` expected to fail; returns the error string.
    pub async fn process_err(&self, block: &StateBlock, subtype: Option<&str>) -> String {
        let v = self.process(block, subtype).await;
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error, got {v}"))
            .to_string()
    }

    pub async fn block_info(&self, hash: &BlockHash) -> Value {
        self.call(json!({"action": "block_info", "json_block": "true", "hash": hash.to_hex()}))
            .await
    }

    pub async fn wait_confirmed(&self, hash: &BlockHash, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.block_info(hash).await["confirmed"] == "true" {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Genesis sends `amount` to `dest` on the current frontier (built and processed).
pub async fn genesis_send(devnet: &Devnet, rpc: &Rpc, dest: PublicKey, amount: u128) -> StateBlock {
    let b = devnet.genesis_send(dest, amount).unwrap();
    rpc.process_ok(&b).await;
    b
}

/// Funds `key`'s account with a genesis send and a signed open; returns (send, open).
pub async fn fund_and_open(
    devnet: &Devnet,
    rpc: &Rpc,
    key: &PrivateKey,
    amount: u128,
) -> (StateBlock, StateBlock) {
    let send = genesis_send(devnet, rpc, key.public_key(), amount).await;
    let open = blocks::open(key, send.hash(), amount);
    rpc.process_ok(&open).await;
    (send, open)
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(devnet: &Devnet) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(devnet.ws_url())
        .await
        .unwrap();
    ws
}

pub async fn ws_send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON text message, or None after `timeout`.
pub async fn ws_next(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("websocket error: {e}"),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Subscribes to confirmations with `options` (None: no options key) and waits for the ack.
pub async fn ws_subscribe(devnet: &Devnet, options: Option<Value>) -> Ws {
    let mut ws = ws_connect(devnet).await;
    let mut req = json!({"action": "subscribe", "topic": "confirmation", "ack": true, "id": "t"});
    if let Some(o) = options {
        req["options"] = o;
    }
    ws_send(&mut ws, req).await;
    let ack = ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ack["ack"], "subscribe");
    assert_eq!(ack["id"], "t");
    ws
}

fn vectors_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors")
}

/// Loads a vector file; a missing file fails the test loudly.
pub fn load_vectors(name: &str) -> Value {
    let path = format!("{}/{name}", vectors_dir());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("vector file {path} is required but cannot be read: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("vector file {path} is not JSON: {e}"))
}

/// A block from nano-vectors.json by id.
pub fn vector_block(id: &str) -> Value {
    let v = load_vectors("nano-vectors.json");
    v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("vector {id} missing from nano-vectors.json"))
        .clone()
}
