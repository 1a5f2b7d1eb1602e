//! Fault injection: a cheap clone handle shared by the servers, the confirmation scheduler, the
//! library user and the `/admin/faults` route.

use nanogate_protocol::nano::{BlockHash, PublicKey, StateBlock};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// How the RPC port behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpcMode {
    /// Answer as a node would.
    #[default]
    Normal,
    /// Stop listening: new connections get "connection refused".
    Refuse,
    /// Answer every RPC request with HTTP 500.
    Fail,
}

/// How the WebSocket port behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WsMode {
    /// Serve subscriptions.
    #[default]
    Normal,
    /// Close every open WebSocket and refuse new ones (HTTP 503 on the upgrade), as a node
    /// whose WebSocket server is down: confirmations happen, nobody hears of them.
    Down,
}

#[derive(Debug)]
struct Inner {
    rpc: watch::Sender<RpcMode>,
    ws: watch::Sender<WsMode>,
    /// Bumped to end every open WebSocket session at once (reconnects are accepted).
    ws_drops: watch::Sender<u64>,
    confirming: watch::Sender<bool>,
    latency: Mutex<Duration>,
    /// (previous, competitor): when a block on `previous` is confirmed, the competitor wins.
    forks: Mutex<Vec<(BlockHash, StateBlock)>>,
}

/// Fault switches for tests. Cloning is cheap; all clones share the same switches.
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl Faults {
    pub(crate) fn new(confirming: bool) -> Self {
        Faults {
            inner: Arc::new(Inner {
                rpc: watch::channel(RpcMode::Normal).0,
                ws: watch::channel(WsMode::Normal).0,
                ws_drops: watch::channel(0).0,
                confirming: watch::channel(confirming).0,
                latency: Mutex::new(Duration::ZERO),
                forks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Normal, refuse connections, or fail every RPC with HTTP 500.
    pub fn set_rpc(&self, mode: RpcMode) {
        self.inner.rpc.send_replace(mode);
    }

    pub fn rpc_mode(&self) -> RpcMode {
        *self.inner.rpc.borrow()
    }

    pub(crate) fn watch_rpc(&self) -> watch::Receiver<RpcMode> {
        self.inner.rpc.subscribe()
    }

    /// WebSocket up (normal) or down (open connections closed, new ones refused).
    pub fn set_ws(&self, mode: WsMode) {
        self.inner.ws.send_replace(mode);
    }

    pub fn ws_mode(&self) -> WsMode {
        *self.inner.ws.borrow()
    }

    pub(crate) fn watch_ws(&self) -> watch::Receiver<WsMode> {
        self.inner.ws.subscribe()
    }

    /// Ends every open WebSocket session now, without a close frame, as a dropped network
    /// connection would; unlike [`WsMode::Down`], reconnecting works at once. Returns how many
    /// drops were requested so far.
    pub fn drop_websockets(&self) -> u64 {
        let mut n = 0;
        self.inner.ws_drops.send_modify(|d| {
            *d += 1;
            n = *d;
        });
        n
    }

    pub(crate) fn watch_ws_drops(&self) -> watch::Receiver<u64> {
        self.inner.ws_drops.subscribe()
    }

    /// Delay added before every RPC answer.
    pub fn set_latency(&self, latency: Duration) {
        *self
            .inner
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = latency;
    }

    pub fn latency(&self) -> Duration {
        *self
            .inner
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stop (false) or resume (true) confirming. On resume every unconfirmed block is
    /// confirmed after the configured delay, as a node that regains quorum would.
    pub fn set_confirming(&self, confirming: bool) {
        self.inner.confirming.send_replace(confirming);
    }

    pub fn confirming(&self) -> bool {
        *self.inner.confirming.borrow()
    }

    pub(crate) fn watch_confirming(&self) -> watch::Receiver<bool> {
        self.inner.confirming.subscribe()
    }

    /// When a block on `previous` is processed, `process` still answers success, but at
    /// confirmation time `competitor` wins: the processed block is rolled back (block_info
    /// answers "Block not found") and the competitor is confirmed and announced. For an
    /// account's first block pass `BlockHash::ZERO`; the competitor's account then selects it.
    /// Each rule fires once.
    pub fn fork_instead(&self, previous: BlockHash, competitor: StateBlock) {
        self.inner
            .forks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((previous, competitor));
    }

    /// Pending fork rules.
    pub fn forks(&self) -> Vec<(BlockHash, StateBlock)> {
        self.inner
            .forks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn clear_forks(&self) {
        self.inner
            .forks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Back to normal: RPC and WebSocket normal, no latency, confirming on, no fork rules.
    pub fn reset(&self) {
        self.set_rpc(RpcMode::Normal);
        self.set_ws(WsMode::Normal);
        self.set_latency(Duration::ZERO);
        self.set_confirming(true);
        self.clear_forks();
    }

    /// Takes the rule that applies to a block on `previous` of `account` (competitor differs).
    pub(crate) fn take_fork(
        &self,
        previous: &BlockHash,
        account: &PublicKey,
        processed: &BlockHash,
    ) -> Option<StateBlock> {
        let mut forks = self
            .inner
            .forks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let i = forks.iter().position(|(p, c)| {
            p == previous
                && (!previous.is_zero() || c.account == *account)
                && c.hash() != *processed
        })?;
        Some(forks.remove(i).1)
    }
}

/// The `/admin/faults` request body: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsRequest {
    pub rpc: Option<RpcMode>,
    pub ws: Option<WsMode>,
    #[serde(default)]
    pub drop_websockets: bool,
    pub latency_ms: Option<u64>,
    pub confirming: Option<bool>,
    pub fork_instead: Option<ForkRequest>,
    #[serde(default)]
    pub clear_forks: bool,
    #[serde(default)]
    pub reset: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    pub previous: BlockHash,
    pub competitor: StateBlock,
}

impl Faults {
    /// Applies an admin request (in field order: reset, rpc, ws, drop_websockets, latency,
    /// confirming, forks).
    pub fn apply(&self, req: FaultsRequest) {
        if req.reset {
            self.reset();
        }
        if let Some(mode) = req.rpc {
            self.set_rpc(mode);
        }
        if let Some(mode) = req.ws {
            self.set_ws(mode);
        }
        if req.drop_websockets {
            self.drop_websockets();
        }
        if let Some(ms) = req.latency_ms {
            self.set_latency(Duration::from_millis(ms));
        }
        if let Some(c) = req.confirming {
            self.set_confirming(c);
        }
        if req.clear_forks {
            self.clear_forks();
        }
        if let Some(f) = req.fork_instead {
            self.fork_instead(f.previous, f.competitor);
        }
    }

    /// The current switches as JSON (the admin route's answer).
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rpc": self.rpc_mode(),
            "ws": self.ws_mode(),
            "websocket_drops": *self.inner.ws_drops.borrow(),
            "latency_ms": self.latency().as_millis() as u64,
            "confirming": self.confirming(),
            "forks": self.forks().iter().map(|(p, c)| serde_json::json!({
                "previous": p.to_hex(),
                "competitor": c.to_json(),
            })).collect::<Vec<_>>(),
        })
    }
}
