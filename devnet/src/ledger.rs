//! The ledger: blocks, accounts, the pending (receivable) table and confirmation heights, with
//! nano-node's state-block rules (`ledger_processor::state_block_impl`) in nano-node's order.
//!
//! Pure and synchronous: the server wraps one `Ledger` in a mutex, so every `process` is atomic.

use nanogate_protocol::nano::network::{
    DEV_GENESIS_ACCOUNT, DEV_GENESIS_SIGNATURE, DEV_GENESIS_WORK,
};
use nanogate_protocol::nano::work::{work_to_hex, BlockKind, WorkThresholds};
use nanogate_protocol::nano::{block::legacy_open_hash, BlockHash, PublicKey, StateBlock};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

/// The dev genesis balance: 2^128 − 1 raw.
pub const GENESIS_AMOUNT: u128 = u128::MAX;

/// The thresholds this ledger applies. A fresh dev ledger has no epoch blocks, so every block
/// is held to `epoch_1`; the RPC entry check uses the minimum of the three.
pub const THRESHOLDS: WorkThresholds = WorkThresholds::DEV;

/// "epoch v1 block" and "epoch v2 block", zero padded: links that mark epoch blocks.
pub const EPOCH_V1_LINK: [u8; 32] = *b"epoch v1 block\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
pub const EPOCH_V2_LINK: [u8; 32] = *b"epoch v2 block\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// At most this many blocks wait in the unchecked table for a missing dependency.
const UNCHECKED_MAX: usize = 4096;

/// Why `process` refused a block, with nano-node's RPC error strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProcessError {
    #[error("Old block")]
    Old,
    #[error("Bad signature")]
    BadSignature,
    #[error("Block attempts to open the burn account")]
    BurnAccount,
    #[error("Gap previous block")]
    GapPrevious,
    #[error("Fork")]
    Fork,
    #[error("Gap source block")]
    GapSource,
    #[error("Unreceivable")]
    Unreceivable,
    #[error("Balance and amount delta do not match")]
    BalanceMismatch,
    #[error("Block work is insufficient")]
    InsufficientWork,
    /// Epoch blocks are not supported by this simulator.
    #[error("Error processing block")]
    Other,
}

/// The RPC `process` pre-checks that run before the ledger (nano-node `json_handler::process`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PrecheckError {
    #[error("Gap previous block")]
    GapPrevious,
    #[error("Invalid block subtype")]
    InvalidSubtype,
    #[error("Invalid block balance for given subtype")]
    InvalidSubtypeBalance,
    #[error("Invalid previous block for given subtype")]
    InvalidSubtypePrevious,
    #[error("Invalid epoch link")]
    InvalidEpochLink,
    #[error("Block work is less than threshold")]
    WorkLow,
}

/// What a block did, as block_info's `subtype` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subtype {
    Send,
    Receive,
    Change,
    /// The legacy genesis open block (no `subtype` key in RPC output).
    LegacyOpen,
}

impl Subtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Subtype::Send => "send",
            Subtype::Receive => "receive",
            Subtype::Change => "change",
            Subtype::LegacyOpen => "open",
        }
    }
}

/// The stored block: the dev genesis legacy open, or a state block.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one genesis entry; boxing every state block buys nothing
pub enum Body {
    GenesisOpen,
    State(StateBlock),
}

/// One block with its sideband (what nano-node keeps beside a block).
#[derive(Debug, Clone)]
pub struct BlockEntry {
    pub hash: BlockHash,
    pub body: Body,
    pub account: PublicKey,
    pub previous: BlockHash,
    pub representative: PublicKey,
    pub height: u64,
    pub balance: u128,
    /// Absolute balance delta (the genesis amount for the genesis block).
    pub amount: u128,
    pub subtype: Subtype,
    /// Seconds since the epoch when the block was added (0 for genesis).
    pub local_timestamp: u64,
    /// Milliseconds since the epoch when the block was added (for election durations).
    pub processed_ms: u64,
    pub successor: BlockHash,
    /// Receives: the sending account.
    pub source_account: Option<PublicKey>,
    /// Receives: the send being received.
    pub source_hash: Option<BlockHash>,
    /// Sends: the destination.
    pub destination: Option<PublicKey>,
    /// Sends: the block that received it, once received.
    pub receive_hash: Option<BlockHash>,
    /// Inserted by `--fund` without the account's signature (the devnet has no key for it).
    pub synthetic: bool,
}

impl BlockEntry {
    /// nano-node's JSON form of the block (`contents` in block_info).
    pub fn contents_json(&self) -> Value {
        match &self.body {
            Body::State(b) => b.to_json(),
            Body::GenesisOpen => {
                let genesis = genesis_account();
                json!({
                    "type": "open",
                    "source": genesis.to_hex(),
                    "representative": genesis.to_address(),
                    "account": genesis.to_address(),
                    "work": work_to_hex(DEV_GENESIS_WORK),
                    "signature": DEV_GENESIS_SIGNATURE,
                })
            }
        }
    }

    pub fn state(&self) -> Option<&StateBlock> {
        match &self.body {
            Body::State(b) => Some(b),
            Body::GenesisOpen => None,
        }
    }
}

/// An account's row (nano-node `account_info` plus `confirmation_height_info`).
#[derive(Debug, Clone)]
pub struct AccountInfo {
    pub head: BlockHash,
    pub open_block: BlockHash,
    pub balance: u128,
    pub representative: PublicKey,
    pub block_count: u64,
    pub modified_timestamp: u64,
    pub confirmation_height: u64,
    pub confirmed_frontier: BlockHash,
    /// Block hashes by height − 1.
    pub chain: Vec<BlockHash>,
}

/// A receivable entry: pending table value for key (destination, send hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub source: PublicKey,
    pub amount: u128,
}

/// One block newly cemented by `confirm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cemented {
    pub hash: BlockHash,
    /// True for the block whose election was asked for; false for dependencies cemented with it.
    pub target: bool,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    blocks: HashMap<BlockHash, BlockEntry>,
    accounts: HashMap<PublicKey, AccountInfo>,
    pending: BTreeMap<(PublicKey, BlockHash), Pending>,
    /// Blocks waiting for a missing previous or source, keyed by that hash.
    unchecked: HashMap<BlockHash, Vec<StateBlock>>,
    unchecked_count: usize,
    /// Non-genesis blocks in the order they were added (for the state file).
    order: Vec<BlockHash>,
    cemented_count: u64,
}

pub fn genesis_account() -> PublicKey {
    PublicKey::from_address(DEV_GENESIS_ACCOUNT).unwrap_or_default()
}

pub fn genesis_hash() -> BlockHash {
    let g = genesis_account();
    legacy_open_hash(&g.0, &g, &g)
}

pub fn is_epoch_link(link: &[u8; 32]) -> bool {
    *link == EPOCH_V1_LINK || *link == EPOCH_V2_LINK
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// A fresh dev ledger holding only the (confirmed) dev genesis block.
    pub fn new() -> Self {
        let g = genesis_account();
        let gh = genesis_hash();
        let mut blocks = HashMap::new();
        blocks.insert(
            gh,
            BlockEntry {
                hash: gh,
                body: Body::GenesisOpen,
                account: g,
                previous: BlockHash::ZERO,
                representative: g,
                height: 1,
                balance: GENESIS_AMOUNT,
                amount: GENESIS_AMOUNT,
                subtype: Subtype::LegacyOpen,
                local_timestamp: 0,
                processed_ms: 0,
                successor: BlockHash::ZERO,
                source_account: None,
                source_hash: None,
                destination: None,
                receive_hash: None,
                synthetic: false,
            },
        );
        let mut accounts = HashMap::new();
        accounts.insert(
            g,
            AccountInfo {
                head: gh,
                open_block: gh,
                balance: GENESIS_AMOUNT,
                representative: g,
                block_count: 1,
                modified_timestamp: 0,
                confirmation_height: 1,
                confirmed_frontier: gh,
                chain: vec![gh],
            },
        );
        Ledger {
            blocks,
            accounts,
            pending: BTreeMap::new(),
            unchecked: HashMap::new(),
            unchecked_count: 0,
            order: Vec::new(),
            cemented_count: 1,
        }
    }

    // ----- queries -----

    pub fn block(&self, hash: &BlockHash) -> Option<&BlockEntry> {
        self.blocks.get(hash)
    }

    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.blocks.contains_key(hash)
    }

    pub fn account(&self, account: &PublicKey) -> Option<&AccountInfo> {
        self.accounts.get(account)
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&PublicKey, &AccountInfo)> {
        self.accounts.iter()
    }

    /// Whether the block is cemented (None if unknown).
    pub fn confirmed(&self, hash: &BlockHash) -> Option<bool> {
        let e = self.blocks.get(hash)?;
        let info = self.accounts.get(&e.account)?;
        Some(info.confirmation_height >= e.height)
    }

    pub fn is_confirmed(&self, hash: &BlockHash) -> bool {
        self.confirmed(hash).unwrap_or(false)
    }

    pub fn balance(&self, account: &PublicKey) -> u128 {
        self.accounts.get(account).map_or(0, |a| a.balance)
    }

    pub fn frontier(&self, account: &PublicKey) -> Option<BlockHash> {
        self.accounts.get(account).map(|a| a.head)
    }

    /// Balance as of the confirmed frontier (0 when nothing is confirmed).
    pub fn confirmed_balance(&self, account: &PublicKey) -> u128 {
        self.accounts
            .get(account)
            .and_then(|a| self.blocks.get(&a.confirmed_frontier))
            .map_or(0, |e| e.balance)
    }

    pub fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    pub fn cemented_count(&self) -> u64 {
        self.cemented_count
    }

    pub fn unchecked_count(&self) -> u64 {
        self.unchecked_count as u64
    }

    pub fn pending_get(&self, destination: &PublicKey, send: &BlockHash) -> Option<Pending> {
        self.pending.get(&(*destination, *send)).copied()
    }

    /// Receivable entries of `account` in key (hash) order.
    pub fn receivable(&self, account: &PublicKey) -> Vec<(BlockHash, Pending)> {
        self.pending
            .range((*account, BlockHash::ZERO)..=(*account, BlockHash([0xff; 32])))
            .map(|((_, h), p)| (*h, *p))
            .collect()
    }

    /// Sum of receivable amounts, optionally only of confirmed sends.
    pub fn receivable_sum(&self, account: &PublicKey, only_confirmed: bool) -> u128 {
        self.receivable(account)
            .iter()
            .filter(|(h, _)| !only_confirmed || self.is_confirmed(h))
            .fold(0u128, |s, (_, p)| s.saturating_add(p.amount))
    }

    /// Voting weight delegated to `rep` (sum of balances of accounts naming it).
    pub fn weight(&self, rep: &PublicKey) -> u128 {
        self.accounts
            .values()
            .filter(|a| a.representative == *rep)
            .fold(0u128, |s, a| s.saturating_add(a.balance))
    }

    /// Every unconfirmed block, in the order they were added.
    pub fn unconfirmed(&self) -> Vec<BlockHash> {
        self.order
            .iter()
            .filter(|h| !self.is_confirmed(h))
            .copied()
            .collect()
    }

    /// Non-genesis blocks in the order they were added.
    pub fn order(&self) -> &[BlockHash] {
        &self.order
    }

    // ----- RPC pre-checks -----

    /// nano-node's `process` `subtype` pre-check, against the account's current balance.
    pub fn check_subtype(&self, block: &StateBlock, subtype: &str) -> Result<(), PrecheckError> {
        if !block.previous.is_zero() && !self.blocks.contains_key(&block.previous) {
            return Err(PrecheckError::GapPrevious);
        }
        let balance = self.balance(&block.account);
        match subtype {
            "send" if balance <= block.balance => Err(PrecheckError::InvalidSubtypeBalance),
            "send" => Ok(()),
            "receive" if balance > block.balance => Err(PrecheckError::InvalidSubtypeBalance),
            "receive" => Ok(()),
            "open" if !block.previous.is_zero() => Err(PrecheckError::InvalidSubtypePrevious),
            "open" => Ok(()),
            "change" if balance != block.balance => Err(PrecheckError::InvalidSubtypeBalance),
            "change" if block.previous.is_zero() => Err(PrecheckError::InvalidSubtypePrevious),
            "change" => Ok(()),
            "epoch" if balance != block.balance => Err(PrecheckError::InvalidSubtypeBalance),
            "epoch" if !is_epoch_link(&block.link) => Err(PrecheckError::InvalidEpochLink),
            "epoch" => Ok(()),
            _ => Err(PrecheckError::InvalidSubtype),
        }
    }

    /// The RPC entry work check: work below the cheapest threshold of any block.
    pub fn check_entry_work(block: &StateBlock) -> Result<(), PrecheckError> {
        if block.work_difficulty() < THRESHOLDS.entry() {
            Err(PrecheckError::WorkLow)
        } else {
            Ok(())
        }
    }

    // ----- processing -----

    /// Applies `block` under nano-node's ledger rules and returns its hash. A block refused
    /// with a gap is kept as unchecked and applied once its dependency is confirmed (see
    /// `drain_unchecked`), as the recorded node did.
    pub fn process(&mut self, block: &StateBlock, now_ms: u64) -> Result<BlockHash, ProcessError> {
        let signature_valid = block.signature_valid();
        self.process_checked(block, now_ms, signature_valid)
    }

    /// Like `process`, with the signature verdict computed by the caller (so the costly
    /// verification can run outside the ledger lock). The rule order is unchanged.
    pub fn process_checked(
        &mut self,
        block: &StateBlock,
        now_ms: u64,
        signature_valid: bool,
    ) -> Result<BlockHash, ProcessError> {
        self.run(block, now_ms, signature_valid, false)
    }

    /// Like `process`, but skips the signature check (for `--fund` opens and state-file replay).
    pub(crate) fn process_with(
        &mut self,
        block: &StateBlock,
        now_ms: u64,
        trusted: bool,
    ) -> Result<BlockHash, ProcessError> {
        let signature_valid = block.signature_valid();
        self.run(block, now_ms, signature_valid, trusted)
    }

    fn run(
        &mut self,
        block: &StateBlock,
        now_ms: u64,
        signature_valid: bool,
        trusted: bool,
    ) -> Result<BlockHash, ProcessError> {
        match self.apply(block, now_ms, signature_valid, trusted) {
            Ok(hash) => Ok(hash),
            Err((err, Some(dependency))) => {
                self.add_unchecked(dependency, block.clone());
                Err(err)
            }
            Err((err, None)) => Err(err),
        }
    }

    fn add_unchecked(&mut self, dependency: BlockHash, block: StateBlock) {
        if self.unchecked_count >= UNCHECKED_MAX {
            return;
        }
        let list = self.unchecked.entry(dependency).or_default();
        let hash = block.hash();
        if !list.iter().any(|b| b.hash() == hash) {
            list.push(block);
            self.unchecked_count += 1;
        }
    }

    /// Applies the unchecked blocks that were waiting for any of `arrived` (and, in turn, for
    /// those). Returns the hashes added.
    pub fn drain_unchecked(&mut self, arrived: &[BlockHash], now_ms: u64) -> Vec<BlockHash> {
        let mut added = Vec::new();
        let mut queue = arrived.to_vec();
        while let Some(dep) = queue.pop() {
            let Some(waiting) = self.unchecked.remove(&dep) else {
                continue;
            };
            self.unchecked_count = self.unchecked_count.saturating_sub(waiting.len());
            for b in waiting {
                let signature_valid = b.signature_valid();
                match self.apply(&b, now_ms, signature_valid, false) {
                    Ok(h) => {
                        added.push(h);
                        queue.push(h);
                    }
                    Err((_, Some(next_dep))) => self.add_unchecked(next_dep, b),
                    Err((_, None)) => {}
                }
            }
        }
        added
    }

    /// One block through `state_block_impl`. The error carries the missing dependency for gaps.
    fn apply(
        &mut self,
        block: &StateBlock,
        now_ms: u64,
        signature_valid: bool,
        trusted: bool,
    ) -> Result<BlockHash, (ProcessError, Option<BlockHash>)> {
        let hash = block.hash();
        if self.blocks.contains_key(&hash) {
            return Err((ProcessError::Old, None));
        }
        if !trusted && !signature_valid {
            return Err((ProcessError::BadSignature, None));
        }
        if block.account.is_zero() {
            return Err((ProcessError::BurnAccount, None));
        }
        let (is_send, amount) = match self.accounts.get(&block.account) {
            Some(info) => {
                if block.previous.is_zero() {
                    return Err((ProcessError::Fork, None));
                }
                if !self.blocks.contains_key(&block.previous) {
                    return Err((ProcessError::GapPrevious, Some(block.previous)));
                }
                let is_send = block.balance < info.balance;
                let amount = if is_send {
                    info.balance - block.balance
                } else {
                    block.balance - info.balance
                };
                if block.previous != info.head {
                    return Err((ProcessError::Fork, None));
                }
                (is_send, amount)
            }
            None => {
                if !block.previous.is_zero() {
                    return Err((ProcessError::GapPrevious, Some(block.previous)));
                }
                if block.link == [0; 32] {
                    return Err((ProcessError::GapSource, None));
                }
                (false, block.balance)
            }
        };
        if !is_send && is_epoch_link(&block.link) && amount == 0 {
            return Err((ProcessError::Other, None));
        }
        let mut source: Option<(BlockHash, Pending)> = None;
        if !is_send {
            if block.link != [0; 32] {
                let src = BlockHash(block.link);
                if !self.blocks.contains_key(&src) {
                    return Err((ProcessError::GapSource, Some(src)));
                }
                let Some(p) = self.pending.get(&(block.account, src)).copied() else {
                    return Err((ProcessError::Unreceivable, None));
                };
                if amount != p.amount {
                    return Err((ProcessError::BalanceMismatch, None));
                }
                source = Some((src, p));
            } else if amount != 0 {
                return Err((ProcessError::BalanceMismatch, None));
            }
        }
        let kind = if is_send {
            BlockKind::Send
        } else if source.is_some() {
            BlockKind::Receive
        } else {
            BlockKind::Change
        };
        if block.work_difficulty() < THRESHOLDS.for_kind(kind, false) {
            return Err((ProcessError::InsufficientWork, None));
        }

        // Apply.
        let subtype = match kind {
            BlockKind::Send => Subtype::Send,
            BlockKind::Change => Subtype::Change,
            _ => Subtype::Receive,
        };
        let now_s = now_ms / 1000;
        let height = self
            .accounts
            .get(&block.account)
            .map_or(1, |a| a.block_count + 1);
        let destination = is_send.then(|| block.link_as_key());
        if let Some(dest) = destination {
            self.pending.insert(
                (dest, hash),
                Pending {
                    source: block.account,
                    amount,
                },
            );
        }
        if let Some((src, _)) = source {
            self.pending.remove(&(block.account, src));
            if let Some(s) = self.blocks.get_mut(&src) {
                s.receive_hash = Some(hash);
            }
        }
        if let Some(prev) = self.blocks.get_mut(&block.previous) {
            prev.successor = hash;
        }
        self.blocks.insert(
            hash,
            BlockEntry {
                hash,
                body: Body::State(block.clone()),
                account: block.account,
                previous: block.previous,
                representative: block.representative,
                height,
                balance: block.balance,
                amount,
                subtype,
                local_timestamp: now_s,
                processed_ms: now_ms,
                successor: BlockHash::ZERO,
                source_account: source.map(|(_, p)| p.source),
                source_hash: source.map(|(h, _)| h),
                destination,
                receive_hash: None,
                synthetic: !signature_valid,
            },
        );
        let info = self
            .accounts
            .entry(block.account)
            .or_insert_with(|| AccountInfo {
                head: hash,
                open_block: hash,
                balance: 0,
                representative: block.representative,
                block_count: 0,
                modified_timestamp: now_s,
                confirmation_height: 0,
                confirmed_frontier: BlockHash::ZERO,
                chain: Vec::new(),
            });
        info.head = hash;
        info.balance = block.balance;
        info.representative = block.representative;
        info.block_count = height;
        info.modified_timestamp = now_s;
        info.chain.push(hash);
        self.order.push(hash);
        Ok(hash)
    }

    // ----- confirmation -----

    /// Cements `target` and everything it depends on (its account's earlier blocks and the
    /// sources of receives among them). Returns the newly cemented blocks in cementing order.
    pub fn confirm(&mut self, target: BlockHash) -> Vec<Cemented> {
        let mut out = Vec::new();
        let mut stack = vec![target];
        while let Some(&h) = stack.last() {
            let Some(e) = self.blocks.get(&h) else {
                stack.pop();
                continue;
            };
            let (account, height) = (e.account, e.height);
            let Some(info) = self.accounts.get(&account) else {
                stack.pop();
                continue;
            };
            if info.confirmation_height >= height {
                stack.pop();
                continue;
            }
            let from = info.confirmation_height;
            let todo: Vec<BlockHash> = info
                .chain
                .iter()
                .skip(from as usize)
                .take((height - from) as usize)
                .copied()
                .collect();
            let mut blocked = false;
            for bh in todo {
                if let Some(src) = self.blocks.get(&bh).and_then(|b| b.source_hash) {
                    if !self.is_confirmed(&src) && self.blocks.contains_key(&src) {
                        stack.push(src);
                        blocked = true;
                        break;
                    }
                }
                if let Some(info) = self.accounts.get_mut(&account) {
                    info.confirmation_height += 1;
                    info.confirmed_frontier = bh;
                }
                self.cemented_count += 1;
                out.push(Cemented {
                    hash: bh,
                    target: bh == target,
                });
            }
            if !blocked {
                stack.pop();
            }
        }
        out
    }

    // ----- rollback -----

    /// Removes `target`, every later block of its account, and (recursively) every receive of
    /// a send being removed. Returns the removed hashes. The genesis block is never removed.
    pub fn rollback(&mut self, target: BlockHash) -> Vec<BlockHash> {
        let mut removed = Vec::new();
        self.rollback_into(target, &mut removed);
        removed
    }

    fn rollback_into(&mut self, target: BlockHash, removed: &mut Vec<BlockHash>) {
        let Some(e) = self.blocks.get(&target) else {
            return;
        };
        if matches!(e.body, Body::GenesisOpen) {
            return;
        }
        let (account, height) = (e.account, e.height);
        while let Some(head) = self
            .accounts
            .get(&account)
            .filter(|a| a.block_count >= height)
            .map(|a| a.head)
        {
            if !self.rollback_head(head, removed) {
                break;
            }
        }
    }

    fn rollback_head(&mut self, head: BlockHash, removed: &mut Vec<BlockHash>) -> bool {
        let Some(e) = self.blocks.get(&head).cloned() else {
            return false;
        };
        if matches!(e.body, Body::GenesisOpen) {
            return false;
        }
        if let Some(dest) = e.destination {
            if self.pending.remove(&(dest, head)).is_none() {
                if let Some(r) = e.receive_hash {
                    self.rollback_into(r, removed);
                }
                self.pending.remove(&(dest, head));
            }
        }
        if let (Some(src), Some(src_account)) = (e.source_hash, e.source_account) {
            self.pending.insert(
                (e.account, src),
                Pending {
                    source: src_account,
                    amount: e.amount,
                },
            );
            if let Some(s) = self.blocks.get_mut(&src) {
                s.receive_hash = None;
            }
        }
        let was_confirmed = self.is_confirmed(&head);
        self.blocks.remove(&head);
        if was_confirmed {
            self.cemented_count = self.cemented_count.saturating_sub(1);
        }
        self.order.retain(|h| *h != head);
        let prev = e.previous;
        let prev_entry = self
            .blocks
            .get_mut(&prev)
            .map(|p| {
                p.successor = BlockHash::ZERO;
                (p.balance, p.representative)
            })
            .filter(|_| !prev.is_zero());
        match prev_entry {
            None => {
                self.accounts.remove(&e.account);
            }
            Some((balance, rep)) => {
                if let Some(info) = self.accounts.get_mut(&e.account) {
                    info.chain.pop();
                    info.head = prev;
                    info.balance = balance;
                    info.representative = rep;
                    info.block_count = info.chain.len() as u64;
                    if info.confirmation_height > info.block_count {
                        info.confirmation_height = info.block_count;
                        info.confirmed_frontier = prev;
                    }
                }
            }
        }
        removed.push(head);
        true
    }
}
