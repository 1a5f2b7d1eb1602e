//! The WebSocket server: nano-node's `confirmation` topic (subscribe with filters, update,
//! unsubscribe, ping, acks) plus the `/admin/faults` route.

use crate::rpc::{admin_get, admin_post, admin_stats};
use crate::{now_ms, ConfirmationEvent, Shared, WsMode};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use nanogate_protocol::nano::PublicKey;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let app = Router::new()
        .route("/admin/faults", get(admin_get).post(admin_post))
        .route("/admin/stats", get(admin_stats))
        .fallback(get(upgrade))
        .with_state(Arc::clone(&shared));
    let mut shutdown = shared.shutdown.clone();
    let signal = async move {
        crate::stopped(&mut shutdown).await;
    };
    if let Err(e) = axum::serve(crate::nodelay(listener), app)
        .with_graceful_shutdown(signal)
        .await
    {
        tracing::error!(error = %e, "WebSocket server stopped");
    }
}

async fn upgrade(ws: WebSocketUpgrade, State(shared): State<Arc<Shared>>) -> Response {
    if shared.faults.ws_mode() == WsMode::Down {
        return (StatusCode::SERVICE_UNAVAILABLE, "websocket down (fault)").into_response();
    }
    ws.on_upgrade(move |socket| session(socket, shared))
}

/// Reads a boolean option the way nano-node does: JSON booleans or "true"/"false" strings.
fn opt_bool(o: &Map<String, Value>, k: &str, default: bool) -> bool {
    match o.get(k) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => match s.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => default,
        },
        _ => default,
    }
}

fn accounts_of(v: Option<&Value>) -> Vec<PublicKey> {
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|a| PublicKey::from_address(a.as_str()?).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One subscriber's `confirmation` subscription.
#[derive(Debug, Default)]
struct Subscription {
    /// None: no account filtering. Some(set): only blocks whose account (or, for sends, the
    /// destination) is in the set.
    accounts: Option<HashSet<PublicKey>>,
    /// An empty `options` object: an empty filter, nothing is sent.
    nothing: bool,
    confirmation_type: String,
    include_block: bool,
    include_election_info: bool,
    include_sideband_info: bool,
}

impl Subscription {
    fn from_options(options: Option<&Value>) -> Self {
        let mut s = Subscription {
            confirmation_type: "all".into(),
            include_block: true,
            ..Default::default()
        };
        let Some(o) = options.and_then(Value::as_object) else {
            return s;
        };
        if o.is_empty() {
            s.nothing = true;
            return s;
        }
        s.include_block = opt_bool(o, "include_block", true);
        s.include_election_info = opt_bool(o, "include_election_info", false);
        s.include_sideband_info = opt_bool(o, "include_sideband_info", false);
        if let Some(t) = o.get("confirmation_type").and_then(Value::as_str) {
            s.confirmation_type = t.to_string();
        }
        // The devnet has no wallets, so `all_local_accounts` adds no account.
        if o.contains_key("accounts") || o.contains_key("all_local_accounts") {
            s.accounts = Some(accounts_of(o.get("accounts")).into_iter().collect());
        }
        s
    }

    fn update(&mut self, options: Option<&Value>) {
        let Some(o) = options.and_then(Value::as_object) else {
            return;
        };
        let add = accounts_of(o.get("accounts_add"));
        let del = accounts_of(o.get("accounts_del"));
        if o.contains_key("accounts_add") || o.contains_key("accounts_del") {
            self.nothing = false;
            let set = self.accounts.get_or_insert_with(HashSet::new);
            set.extend(add);
            for a in del {
                set.remove(&a);
            }
        }
    }

    fn wants(&self, ev: &ConfirmationEvent) -> bool {
        if self.nothing {
            return false;
        }
        let type_ok = match self.confirmation_type.as_str() {
            "all" => true,
            "active" => ev.confirmation_type.starts_with("active"),
            t => t == ev.confirmation_type,
        };
        let account_ok = match &self.accounts {
            None => true,
            Some(set) => {
                set.contains(&ev.account) || ev.destination.is_some_and(|d| set.contains(&d))
            }
        };
        type_ok && account_ok
    }

    fn message(&self, ev: &ConfirmationEvent) -> Value {
        let mut m = json!({
            "account": ev.account.to_address(),
            "amount": ev.amount.to_string(),
            "hash": ev.hash.to_hex(),
            "confirmation_type": ev.confirmation_type,
        });
        if self.include_election_info {
            m["election_info"] = json!({
                "duration": ev.election_duration_ms.to_string(),
                "time": ev.time_ms.to_string(),
                "tally": ev.tally.to_string(),
                "final": ev.tally.to_string(),
                "blocks": "1",
                "voters": ev.voters.to_string(),
                "request_count": "0",
            });
        }
        if self.include_block {
            m["block"] = ev.block.clone();
        }
        if self.include_sideband_info {
            m["sideband"] = json!({
                "height": ev.height.to_string(),
                "local_timestamp": ev.local_timestamp.to_string(),
            });
        }
        json!({ "topic": "confirmation", "time": ev.time_ms.to_string(), "message": m })
    }
}

fn ack(action: &str, id: Option<&Value>) -> Value {
    let mut a = json!({ "ack": action, "time": now_ms().to_string() });
    if let Some(id) = id {
        a["id"] = id.clone();
    }
    a
}

/// Handles one text frame; returns the reply to send, if any.
fn on_message(text: &str, sub: &mut Option<Subscription>) -> Option<Value> {
    let Ok(Value::Object(req)) = serde_json::from_str::<Value>(text) else {
        tracing::debug!("websocket: unparseable message ignored");
        return None;
    };
    let action = req.get("action").and_then(Value::as_str).unwrap_or("");
    let topic = req.get("topic").and_then(Value::as_str).unwrap_or("");
    let wants_ack = opt_bool(&req, "ack", false);
    let id = req.get("id");
    let reply = match action {
        "ping" => return Some(ack("pong", id)),
        "subscribe" => {
            if topic == "confirmation" {
                *sub = Some(Subscription::from_options(req.get("options")));
            }
            ack("subscribe", id)
        }
        "update" => {
            if topic == "confirmation" {
                if let Some(s) = sub.as_mut() {
                    s.update(req.get("options"));
                }
            }
            ack("update", id)
        }
        "unsubscribe" => {
            if topic == "confirmation" {
                *sub = None;
            }
            ack("unsubscribe", id)
        }
        _ => return None,
    };
    wants_ack.then_some(reply)
}

async fn session(mut socket: WebSocket, shared: Arc<Shared>) {
    let mut events = shared.events.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let mut ws_mode = shared.faults.watch_ws();
    let mut drops = shared.faults.watch_ws_drops();
    drops.borrow_and_update();
    let mut sub: Option<Subscription> = None;
    loop {
        if *ws_mode.borrow_and_update() == WsMode::Down {
            // The fault drops the connection without a close frame, as a crashed node would.
            return;
        }
        tokio::select! {
            changed = ws_mode.changed() => if changed.is_err() { return },
            // An injected network drop: no close frame, the connection just ends.
            _ = drops.changed() => return,
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                if let Some(reply) = on_message(&text, &mut sub) {
                    if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
            ev = events.recv() => {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "websocket subscriber lagged; confirmations dropped");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                let Some(s) = sub.as_ref().filter(|s| s.wants(&ev)) else { continue };
                let text = s.message(&ev).to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            _ = crate::stopped(&mut shutdown) => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}
