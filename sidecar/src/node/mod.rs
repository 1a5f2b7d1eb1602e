//! Access to Nano nodes: an RPC client with failover ([`NodeClient`]) and confirmation tracking
//! over the node WebSocket with a polling fallback ([`Confirmations`]).
//!
//! Everything here speaks nano-node's documented RPC and WebSocket JSON and tolerates
//! its quirks and RsNano's differences: numbers as decimal strings, `""` for empty lists,
//! booleans printed as `"true"`/`"1"`, hex in either case, `confirmed_frontier` missing on
//! older nodes (falls back to `confirmation_height_frontier`), RsNano's decimal `difficulty`.
//! Requests always send booleans as the strings `"true"`/`"false"` (RsNano rejects JSON
//! booleans in RPC) and WebSocket options as JSON booleans (RsNano drops the connection on
//! strings there).
//!
//! # Failure semantics
//!
//! * [`NodeError::Unavailable`]: no configured node gave a usable answer (refused, timed out,
//!   non-200, non-JSON). The engine maps it to "ledger unavailable" (503 + `Retry-After`).
//! * [`NodeError::Node`]: a node answered `{"error": …}` where that is not a normal outcome.
//! * [`NodeError::Protocol`]: a node answered JSON we cannot make sense of.
//!
//! # `process` is not blindly retried
//!
//! Re-posting a block that a node already applied answers `"Old block"`, so a retry would turn
//! a success into an apparent rejection. [`NodeClient::process`] therefore sends the block to
//! one node and moves on to the next only when the connection could not be made (nothing was
//! sent). After a timeout, a non-200 or an unreadable answer the block may or may not have been
//! applied: `process` returns an error and **the caller resolves the truth with
//! [`NodeClient::block_info`]** on the block's hash (present → it was processed; absent → it
//! was not, or not yet). [`NodeClient::process_or_resolve`] does exactly that. Likewise a
//! [`LedgerRejection::OldBlock`] answer means "already in the ledger", which the caller
//! confirms with `block_info`.

mod confirm;
mod json;
mod rpc;
mod ws;

pub use confirm::{ConfirmTimings, Confirmations, ConfirmedBlock, WaitOutcome, WsStatus};
pub use json::{ChainBlock, HistoryPage};
pub use rpc::NodeClient;

use nanogate_protocol::nano::{BlockHash, Network, PublicKey, StateBlock};
use std::time::Duration;
use thiserror::Error;

/// Where the nodes are and how patiently to talk to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// RPC endpoints, tried in order (starting from the last one that answered).
    pub rpc_urls: Vec<String>,
    /// WebSocket endpoints for confirmation pushes, tried in order.
    pub ws_urls: Vec<String>,
    /// Bound on one HTTP call to one node (connect + request + response). Default 2 s.
    pub call_timeout: Duration,
    /// Extra passes over all nodes for idempotent calls when every node failed. Default 2.
    pub retries: u32,
    /// Pause before the first extra pass, doubling after each. Default 50 ms.
    pub backoff: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            rpc_urls: Vec::new(),
            ws_urls: Vec::new(),
            call_timeout: Duration::from_secs(2),
            retries: 2,
            backoff: Duration::from_millis(50),
        }
    }
}

impl NodeConfig {
    /// One RPC and one WebSocket endpoint with default timings.
    pub fn single(rpc_url: impl Into<String>, ws_url: impl Into<String>) -> Self {
        Self {
            rpc_urls: vec![rpc_url.into()],
            ws_urls: vec![ws_url.into()],
            ..Self::default()
        }
    }
}

/// `scheme://host:port` of a node URL, for logs and error messages: credentials, paths and
/// query strings (where some providers put API keys) are dropped.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() {
        host.to_owned()
    } else {
        format!("{scheme}://{host}")
    }
}

/// Why a node call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeError {
    /// Every node was tried and none gave a usable answer: "ledger unavailable". `last` names
    /// the last node by [`redact_url`] only.
    #[error("no Nano node available ({tried} attempts; last: {last})")]
    Unavailable { tried: usize, last: String },
    /// A node answered `{"error": …}` where that is not a normal outcome.
    #[error("Nano node error: {0}")]
    Node(String),
    /// A node answered something we could not parse.
    #[error("unexpected answer from Nano node: {0}")]
    Protocol(String),
}

impl NodeError {
    /// Whether the caller should answer "ledger unavailable" (503) rather than reject.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, NodeError::Unavailable { .. })
    }
}

/// Per-node observations for the engine to map onto its metrics. Implementations must be cheap
/// and must not block: they are called on the request path. URLs are passed as configured:
/// label them with [`redact_url`] (or coarser) before they reach a metric.
pub trait NodeMetrics: Send + Sync + 'static {
    /// A call to `node_url` failed (refused, timed out, non-200, non-JSON); failover follows.
    fn on_rpc_error(&self, node_url: &str, action: &str);
    /// A call completed with a usable answer after `secs` seconds (that node's attempt only).
    fn on_rpc_latency(&self, action: &str, secs: f64);
    /// The confirmation WebSocket to `ws_url` is subscribed (`true`) or was lost (`false`).
    fn on_ws_state(&self, _ws_url: &str, _connected: bool) {}
    /// A confirmation push arrived (after de-duplication).
    fn on_ws_confirmation(&self) {}
    /// `wait_confirmed` fell back to a `block_info` poll.
    fn on_confirmation_poll(&self) {}
}

/// `version`: enough to guard against talking to the wrong network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// `live`, `beta`, `dev` or `test`.
    pub network: String,
    /// The genesis hash of the node's network (absent on very old nodes).
    pub network_identifier: Option<BlockHash>,
    /// e.g. `Nano V28.2` or `RsNano 2.0`.
    pub node_vendor: String,
    pub rpc_version: Option<String>,
    pub protocol_version: Option<String>,
}

impl VersionInfo {
    /// Whether this node is on `network`: the name matches and, where the network has a known
    /// genesis, so does `network_identifier`.
    pub fn is_network(&self, network: Network) -> bool {
        if self.network != network.rpc_name() {
            return false;
        }
        match network.genesis_hash() {
            Some(genesis) => match (self.network_identifier, BlockHash::from_hex(genesis)) {
                (Some(id), Ok(expected)) => id == expected,
                _ => false,
            },
            None => true,
        }
    }
}

/// `account_info` of an opened account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Head block, confirmed or not.
    pub frontier: BlockHash,
    /// Balance including unconfirmed blocks.
    pub balance: u128,
    /// Head of the confirmed part of the chain (`confirmed_frontier`, falling back to
    /// `confirmation_height_frontier`).
    pub confirmed_frontier: Option<BlockHash>,
    pub confirmed_balance: Option<u128>,
    /// Confirmed height (`confirmed_height`, falling back to `confirmation_height`).
    pub confirmed_height: Option<u64>,
    pub representative: Option<PublicKey>,
    pub block_count: u64,
}

/// `block_info` of a block the node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    pub hash: BlockHash,
    /// The account whose chain holds the block (`block_account`).
    pub account: PublicKey,
    /// Absolute balance change made by the block.
    pub amount: u128,
    /// Account balance after the block.
    pub balance: u128,
    pub height: u64,
    /// Cemented: final, can no longer be rolled back.
    pub confirmed: bool,
    /// `send`, `receive`, `change`, `epoch` (state blocks only).
    pub subtype: Option<String>,
    /// The block itself, when it is a state block.
    pub contents: Option<StateBlock>,
    /// When the node saw the block (unix seconds; 0 when unknown).
    pub local_timestamp: u64,
    /// Next block on the chain; `None` for the frontier.
    pub successor: Option<BlockHash>,
}

/// What the ledger did with a published block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessResult {
    /// Added to the node's ledger (not yet confirmed).
    Processed(BlockHash),
    /// The node refused it.
    Rejected(LedgerRejection),
}

/// nano-node's `process` error strings (`nano/lib/errors.cpp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerRejection {
    /// `Old block`: already in the ledger (confirm with `block_info`).
    OldBlock,
    /// `Fork`: another block already builds on the same previous.
    Fork,
    /// `Bad signature`.
    BadSignature,
    /// `Gap previous block`: the node does not know `previous` (yet); not final.
    GapPrevious,
    /// `Gap source block`: the node does not know the source send (yet); not final.
    GapSource,
    /// `Block work is less than threshold` / `Block work is insufficient`.
    InsufficientWork,
    /// `Balance and amount delta do not match`.
    BalanceMismatch,
    /// `Unreceivable`: nothing receivable for this source.
    Unreceivable,
    /// Any other message, verbatim.
    Other(String),
}

impl LedgerRejection {
    /// Maps a node's `error` string (case and surrounding space ignored).
    pub fn from_message(message: &str) -> Self {
        let m = message.trim().to_ascii_lowercase();
        match m.as_str() {
            "old block" => Self::OldBlock,
            "fork" => Self::Fork,
            "bad signature" => Self::BadSignature,
            "gap previous block" => Self::GapPrevious,
            "gap source block" => Self::GapSource,
            "block work is less than threshold" | "block work is insufficient" => {
                Self::InsufficientWork
            }
            "balance and amount delta do not match" => Self::BalanceMismatch,
            "unreceivable" => Self::Unreceivable,
            _ => Self::Other(message.trim().to_owned()),
        }
    }

    /// Gap errors may resolve by themselves once the missing block arrives (the node keeps the
    /// block as unchecked): not a final verdict on the block.
    pub fn is_gap(&self) -> bool {
        matches!(self, Self::GapPrevious | Self::GapSource)
    }
}
