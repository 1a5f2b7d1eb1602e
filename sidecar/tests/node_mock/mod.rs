//! Tiny in-test Nano node mocks (RPC over axum, WebSocket over axum) for the node module tests.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use nanogate_protocol::nano::network::DEV_GENESIS_PRIVATE_KEY;
use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey, Signature, StateBlock};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// What the mock RPC answers.
pub enum Reply {
    Json(Value),
    Status(u16, String),
    Text(String),
    /// Never answer (until the client gives up).
    Hang,
}

type Handler = dyn Fn(&Value) -> Reply + Send + Sync;

#[derive(Clone)]
struct RpcState {
    handler: Arc<Handler>,
    hits: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Value>>>,
}

pub struct MockRpc {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockRpc {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> Option<Value> {
        self.requests.lock().unwrap().last().cloned()
    }
}

impl Drop for MockRpc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn rpc_handler(State(st): State<RpcState>, body: String) -> Response {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    st.requests.lock().unwrap().push(req.clone());
    match (st.handler)(&req) {
        Reply::Json(v) => Json(v).into_response(),
        Reply::Status(code, text) => (StatusCode::from_u16(code).unwrap(), text).into_response(),
        Reply::Text(t) => (StatusCode::OK, t).into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

/// Starts a mock RPC node on a free loopback port.
pub async fn mock_rpc(handler: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> MockRpc {
    let st = RpcState {
        handler: Arc::new(handler),
        hits: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new()
        .route("/", post(rpc_handler))
        .with_state(st.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    MockRpc {
        url,
        hits: st.hits,
        requests: st.requests,
        task,
    }
}

/// A loopback URL where nothing listens (connection refused).
pub async fn closed_port(scheme: &str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("{scheme}://{addr}")
}

pub fn genesis_key() -> PrivateKey {
    PrivateKey::from_hex(DEV_GENESIS_PRIVATE_KEY).unwrap()
}

/// A signed send from `key` on `previous` (work not meaningful: mocks do not check it).
pub fn send_block(
    key: &PrivateKey,
    previous: BlockHash,
    balance: u128,
    to: PublicKey,
) -> StateBlock {
    let mut b = StateBlock {
        account: key.public_key(),
        previous,
        representative: key.public_key(),
        balance,
        link: to.0,
        signature: Signature([0; 64]),
        work: 0x9e37_79b9_a067_dd42,
    };
    b.sign(key);
    b
}

pub fn merchant() -> PublicKey {
    PrivateKey::from_bytes([7; 32]).public_key()
}

/// nano-node's `block_info` answer for `block` (RsNano style: upper-case work).
pub fn block_info_json(block: &StateBlock, confirmed: bool) -> Value {
    let mut contents = block.to_json();
    contents["work"] = json!(format!("{:016X}", block.work));
    json!({
        "block_account": block.account.to_address(),
        "amount": "1000",
        "balance": block.balance.to_string(),
        "height": "2",
        "local_timestamp": "1795630013",
        "successor": "0000000000000000000000000000000000000000000000000000000000000000",
        "confirmed": if confirmed { "true" } else { "false" },
        "contents": contents,
        "subtype": "send",
    })
}

/// A `confirmation` topic push for `block`, shaped like the recorded RsNano message.
pub fn confirmation_push(block: &StateBlock, ty: &str) -> String {
    let mut b = block.to_json();
    b["subtype"] = json!("send");
    json!({
        "topic": "confirmation",
        "time": "1795630013504",
        "message": {
            "account": block.account.to_address(),
            "amount": "1000",
            "hash": block.hash().to_hex(),
            "confirmation_type": ty,
            "block": b,
            "sideband": {"height": "2", "local_timestamp": "1795630013"},
        }
    })
    .to_string()
}

/// A mock WebSocket node: acks subscriptions, records every client message, pushes what the
/// test sends, and drops every connection on demand.
pub struct MockWs {
    pub url: String,
    push: broadcast::Sender<String>,
    kill: watch::Sender<u64>,
    pub received: Arc<Mutex<Vec<Value>>>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct WsState {
    push: broadcast::Sender<String>,
    kill: watch::Sender<u64>,
    received: Arc<Mutex<Vec<Value>>>,
    connections: Arc<AtomicUsize>,
}

impl MockWs {
    /// Sends a text frame to every connected client.
    pub fn push(&self, text: String) {
        let _ = self.push.send(text);
    }

    /// Drops every open connection abruptly.
    pub fn drop_connections(&self) {
        self.kill.send_modify(|k| *k += 1);
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Client messages with this `action`.
    pub fn actions(&self, action: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|v| v["action"] == action)
            .collect()
    }

    /// Waits until `n` connections were accepted (or panics after `timeout`).
    pub async fn wait_connections(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connections() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} WebSocket connections",
                self.connections()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for MockWs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ws_session(mut socket: WebSocket, st: WsState) {
    st.connections.fetch_add(1, Ordering::SeqCst);
    let mut push = st.push.subscribe();
    let mut kill = st.kill.subscribe();
    kill.borrow_and_update();
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                st.received.lock().unwrap().push(v.clone());
                if v["ack"] == json!(true) {
                    let ack = json!({"ack": v["action"], "time": "1795630013363", "id": v["id"]});
                    if socket.send(Message::text(ack.to_string())).await.is_err() {
                        return;
                    }
                }
            }
            p = push.recv() => {
                let Ok(p) = p else { return };
                if socket.send(Message::text(p)).await.is_err() {
                    return;
                }
            }
            _ = kill.changed() => return,
        }
    }
}

async fn ws_upgrade(State(st): State<WsState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| ws_session(socket, st))
}

pub async fn mock_ws() -> MockWs {
    let st = WsState {
        push: broadcast::channel(64).0,
        kill: watch::channel(0).0,
        received: Arc::new(Mutex::new(Vec::new())),
        connections: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/", any(ws_upgrade))
        .with_state(st.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    MockWs {
        url,
        push: st.push,
        kill: st.kill,
        received: st.received,
        connections: st.connections,
        task,
    }
}
