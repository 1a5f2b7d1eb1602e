//! What the payment engine needs from the Nano network, as a small object-safe trait.
//!
//! The production implementation ([`node_ledger::NodeLedger`]) adapts the node module's RPC client with
//! failover and its confirmation tracker (WebSocket push, polling fallback). [`fake::FakeLedger`]
//! is an in-memory ledger for unit tests and benchmarks.

pub mod fake;
pub mod node_ledger;

use nanogate_protocol::nano::{BlockHash, PublicKey, StateBlock};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;
use thiserror::Error;

pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LedgerError {
    /// No node could be reached (all down or refusing): the "ledger unavailable" verdict.
    #[error("no Nano node is reachable: {0}")]
    Unavailable(String),
    /// A node answered something we could not use.
    #[error("Nano node error: {0}")]
    Node(String),
}

/// The payer's account as the ledger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// Head block, confirmed or not.
    pub frontier: BlockHash,
    /// Balance at `frontier` (includes unconfirmed blocks, as nano-node reports it).
    pub balance: u128,
    /// Head of the confirmed part of the chain, when the node reports it.
    pub confirmed_frontier: Option<BlockHash>,
}

/// What `process` said about a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessOutcome {
    /// Newly accepted and being voted on.
    Processed,
    /// The node already has this exact block.
    Old,
    /// Another block already builds on the same `previous`.
    Fork,
    /// `previous` is not on the ledger (or not the head).
    GapPrevious,
    /// Any other refusal (bad signature, work, balance…), with the node's words.
    Rejected(String),
}

/// The end of a wait for confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    Confirmed,
    /// The block is not on the ledger (lost a fork, or dropped).
    Missing,
    /// Still unconfirmed at the deadline.
    TimedOut,
}

/// What the tagged-amount mechanism needs to know about a block the client broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFacts {
    /// The account whose chain holds the block (the payer of a send).
    pub account: PublicKey,
    /// `send`, `receive`, …
    pub subtype: Option<String>,
    /// For a send: `link` read as a key.
    pub destination: Option<PublicKey>,
    /// Absolute balance change.
    pub amount: u128,
    pub confirmed: bool,
    /// When the node first saw the block (unix seconds; 0 = unknown).
    pub local_timestamp: u64,
    /// The block itself, to wait for its confirmation.
    pub block: Option<StateBlock>,
}

pub trait Ledger: Send + Sync + 'static {
    /// The node's network name (`live`, `beta`, `dev`, `test`) from `version`.
    fn network(&self) -> LedgerFuture<'_, String>;

    /// `account_info`; `None` for an account that was never opened.
    fn account_state<'a>(
        &'a self,
        account: &'a PublicKey,
    ) -> LedgerFuture<'a, Option<AccountState>>;

    /// `block_info`: `None` if unknown, else whether it is confirmed.
    fn block_confirmed<'a>(&'a self, hash: &'a BlockHash) -> LedgerFuture<'a, Option<bool>>;

    /// `process` (publish) a signed send block.
    fn process<'a>(&'a self, block: &'a StateBlock) -> LedgerFuture<'a, ProcessOutcome>;

    /// `block_confirm`: ask the node to start an election. Best effort.
    fn nudge<'a>(&'a self, hash: &'a BlockHash) -> LedgerFuture<'a, ()>;

    /// Waits until `block` is confirmed, disappears (a conflicting block won), or `deadline`
    /// passes.
    fn wait_confirmed<'a>(
        &'a self,
        block: &'a StateBlock,
        deadline: Instant,
    ) -> LedgerFuture<'a, Confirmation>;

    /// `block_info` as [`SendFacts`]; `None` if the node does not know the block. Ledgers
    /// without it refuse (the tagged mechanism then fails closed).
    fn send_facts<'a>(&'a self, _hash: &'a BlockHash) -> LedgerFuture<'a, Option<SendFacts>> {
        Box::pin(async { Err(LedgerError::Node("send_facts is not supported".into())) })
    }

    /// Follow confirmations of sends to `account` (a tagged-session payee). Best effort.
    fn watch_payee(&self, _account: &PublicKey) {}

    /// Confirmed sends to `account` not received yet (`receivable`), at most `count`. Used to
    /// catch up on sends the confirmation push missed; ledgers without it refuse.
    fn receivable_sends<'a>(
        &'a self,
        _account: &'a PublicKey,
        _count: u64,
    ) -> LedgerFuture<'a, Vec<BlockHash>> {
        Box::pin(async { Err(LedgerError::Node("receivable is not supported".into())) })
    }

    /// A page of `account`'s own chain (`account_history`, raw): from `head` towards the
    /// frontier when `forward` (from the open block when `head` is `None`), else from `head`
    /// (the frontier when `None`) towards the open block. `None` when `head` is not on the
    /// chain (rolled back). Ledgers without it refuse.
    fn chain_page<'a>(
        &'a self,
        _account: &'a PublicKey,
        _head: Option<&'a BlockHash>,
        _forward: bool,
        _count: u64,
    ) -> LedgerFuture<'a, Option<crate::node::HistoryPage>> {
        Box::pin(async { Err(LedgerError::Node("account_history is not supported".into())) })
    }
}
