//! The WebSocket task: one `confirmation` subscription at a time, with failover across the
//! configured endpoints, reconnection with backoff, and resubscription with the current
//! account set after any drop.

use super::confirm::{Cmd, ConfirmTimings, ConfirmedBlock, Hub};
use super::json::{as_u64, short};
use super::redact_url;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc::{error::TryRecvError, UnboundedReceiver};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info};

const SUBSCRIPTION_ID: &str = "nanogate-confirmation";

enum End {
    /// Every handle is gone: stop.
    Closed,
    /// The connection failed or dropped; `subscribed` says whether it had been working.
    Dropped { subscribed: bool, reason: String },
}

/// What one incoming frame was.
enum Incoming {
    Ack(String),
    Other,
    Close,
}

pub(crate) async fn run(
    urls: Vec<String>,
    hub: Arc<Hub>,
    mut cmds: UnboundedReceiver<Cmd>,
    t: ConfirmTimings,
) {
    if urls.is_empty() {
        debug!("no WebSocket endpoint configured: confirmations rely on polling");
        while cmds.recv().await.is_some() {}
        return;
    }
    let n = urls.len();
    let mut start = 0usize;
    let mut backoff = t.reconnect_min;
    loop {
        let mut had_subscription = false;
        for k in 0..n {
            let idx = (start + k) % n;
            let Some(url) = urls.get(idx) else {
                continue;
            };
            match session(url, &hub, &mut cmds, &t).await {
                End::Closed => {
                    hub.set_status(url, false);
                    return;
                }
                End::Dropped { subscribed, reason } => {
                    hub.set_status(url, false);
                    if subscribed {
                        info!(ws = %redact_url(url), %reason, "confirmation WebSocket lost; reconnecting");
                        had_subscription = true;
                        start = idx;
                        break;
                    }
                    debug!(ws = %redact_url(url), %reason, "confirmation WebSocket unavailable");
                }
            }
        }
        if had_subscription {
            backoff = t.reconnect_min;
        }
        // Pause, still draining commands (the account set itself lives in the hub).
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                cmd = cmds.recv() => if cmd.is_none() { return },
            }
        }
        if !had_subscription {
            backoff = backoff.saturating_mul(2).min(t.reconnect_max);
        }
    }
}

fn dropped(subscribed: bool, reason: impl std::fmt::Display) -> End {
    End::Dropped {
        subscribed,
        reason: reason.to_string(),
    }
}

/// Sends the ACK for what was just read now rather than after Linux's delayed-ACK timer (up
/// to 40 ms). We never answer a push, so nothing carries that ACK; a node whose WebSocket
/// server leaves Nagle on holds its next push until it comes, and confirmations then queue
/// behind each other under load. (Not sticky: the kernel may go back to delaying, hence
/// after every read.)
fn ack_now(
    ws: &tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    #[cfg(target_os = "linux")]
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
    }
}

async fn session(
    url: &str,
    hub: &Hub,
    cmds: &mut UnboundedReceiver<Cmd>,
    t: &ConfirmTimings,
) -> End {
    let mut ws = match tokio::time::timeout(
        t.connect_timeout,
        // Nagle off: our subscribe and update messages go out at once.
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return dropped(false, e),
        Err(_) => return dropped(false, "connect timeout"),
    };
    // Queued commands are covered by the snapshot taken just after.
    loop {
        match cmds.try_recv() {
            Ok(_) => {}
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => return End::Closed,
        }
    }
    let accounts: Vec<String> = hub.accounts().iter().map(|a| a.to_address()).collect();
    // JSON booleans in options: RsNano drops the connection on "true" strings there.
    let subscribe = json!({
        "action": "subscribe",
        "topic": "confirmation",
        "ack": true,
        "id": SUBSCRIPTION_ID,
        "options": {
            "accounts": accounts,
            "include_block": true,
            "include_sideband_info": true,
            "include_election_info": false,
        },
    });
    if let Err(e) = ws.send(Message::text(subscribe.to_string())).await {
        return dropped(false, e);
    }
    let ack_deadline = Instant::now() + t.connect_timeout;
    loop {
        match tokio::time::timeout_at(ack_deadline, ws.next()).await {
            Err(_) => return dropped(false, "no subscribe ack"),
            Ok(None) => return dropped(false, "closed before the subscribe ack"),
            Ok(Some(Err(e))) => return dropped(false, e),
            Ok(Some(Ok(msg))) => match incoming(msg, hub) {
                Incoming::Ack(a) if a == "subscribe" => break,
                Incoming::Close => return dropped(false, "closed before the subscribe ack"),
                _ => {}
            },
        }
    }
    debug!(ws = %redact_url(url), accounts = accounts.len(), "subscribed to confirmations");
    hub.set_status(url, true);

    let mut ping = tokio::time::interval_at(Instant::now() + t.ping_interval, t.ping_interval);
    let mut last_rx = Instant::now();
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                None => return dropped(true, "closed by the node"),
                Some(Err(e)) => return dropped(true, e),
                Some(Ok(m)) => {
                    last_rx = Instant::now();
                    ack_now(&ws);
                    if let Incoming::Close = incoming(m, hub) {
                        return dropped(true, "close frame");
                    }
                }
            },
            cmd = cmds.recv() => {
                let Some(first) = cmd else {
                    let _ = ws.close(None).await;
                    return End::Closed;
                };
                let mut add = Vec::new();
                let mut del = Vec::new();
                let mut next = Some(first);
                while let Some(c) = next {
                    match c {
                        Cmd::Add(a) => add.push(a.to_address()),
                        Cmd::Remove(a) => del.push(a.to_address()),
                    }
                    next = cmds.try_recv().ok();
                }
                let mut options = serde_json::Map::new();
                if !add.is_empty() {
                    options.insert("accounts_add".into(), json!(add));
                }
                if !del.is_empty() {
                    options.insert("accounts_del".into(), json!(del));
                }
                let update = json!({
                    "action": "update",
                    "topic": "confirmation",
                    "ack": true,
                    "id": SUBSCRIPTION_ID,
                    "options": options,
                });
                debug!(ws = %redact_url(url), added = add.len(), removed = del.len(), "updating the account filter");
                if let Err(e) = ws.send(Message::text(update.to_string())).await {
                    return dropped(true, e);
                }
            },
            _ = ping.tick() => {
                if last_rx.elapsed() > t.ping_interval.saturating_mul(3) {
                    return dropped(true, "silent connection");
                }
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    return dropped(true, e);
                }
            },
        }
    }
}

/// Handles one frame: confirmations go to the hub; acks are reported.
fn incoming(msg: Message, hub: &Hub) -> Incoming {
    let text = match &msg {
        Message::Text(t) => t.as_str(),
        Message::Binary(b) => match std::str::from_utf8(b) {
            Ok(s) => s,
            Err(_) => return Incoming::Other,
        },
        Message::Close(_) => return Incoming::Close,
        _ => return Incoming::Other,
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        debug!("non-JSON WebSocket message ignored");
        return Incoming::Other;
    };
    if let Some(ack) = value.get("ack").and_then(Value::as_str) {
        return Incoming::Ack(ack.to_owned());
    }
    if let Some(err) = value.get("error") {
        debug!(error = %short(err), "WebSocket error message");
        return Incoming::Other;
    }
    if value.get("topic").and_then(Value::as_str) != Some("confirmation") {
        return Incoming::Other;
    }
    let Some(message) = value.get("message") else {
        return Incoming::Other;
    };
    match ConfirmedBlock::from_message(message) {
        Some(mut cb) => {
            cb.time_ms = value.get("time").and_then(as_u64);
            hub.on_confirmation(cb);
        }
        None => debug!(message = %short(message), "unusable confirmation message ignored"),
    }
    Incoming::Other
}
