//! An in-memory ledger with nano-node's `process` outcomes, for unit tests and benchmarks.
//! Not a Nano implementation: it keeps one chain head per account and nothing else.

use super::{
    AccountState, Confirmation, Ledger, LedgerError, LedgerFuture, ProcessOutcome, SendFacts,
};
use nanogate_protocol::nano::{BlockHash, PublicKey, StateBlock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
struct Account {
    frontier: BlockHash,
    balance: u128,
    confirmed_frontier: BlockHash,
}

#[derive(Debug, Clone)]
struct Block {
    previous: BlockHash,
    account: PublicKey,
    confirmed: bool,
    /// The processed block (none for account heads opened by the test).
    state: Option<StateBlock>,
    /// When the ledger first saw it (unix seconds).
    seen_at: u64,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<PublicKey, Account>,
    blocks: HashMap<BlockHash, Block>,
    /// Balances at each block, so a head can roll back when a fork wins.
    balances: HashMap<BlockHash, u128>,
}

/// See the module docs. Confirms processed blocks at once unless [`FakeLedger::set_auto_confirm`]
/// turned that off.
pub struct FakeLedger {
    inner: Mutex<Inner>,
    auto_confirm: AtomicBool,
    down: AtomicBool,
    changed: Notify,
    /// How many `process` calls reached the ledger.
    pub process_calls: AtomicU64,
    /// How many `account_info` calls reached the ledger.
    pub account_calls: AtomicU64,
    /// When set, `process` refuses every block with this message.
    refuse: Mutex<Option<String>>,
}

impl Default for FakeLedger {
    fn default() -> Self {
        FakeLedger {
            inner: Mutex::default(),
            auto_confirm: AtomicBool::new(true),
            down: AtomicBool::new(false),
            changed: Notify::new(),
            process_calls: AtomicU64::new(0),
            account_calls: AtomicU64::new(0),
            refuse: Mutex::new(None),
        }
    }
}

impl FakeLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `account` with `balance` raw at a confirmed head `frontier`.
    pub fn open(&self, account: PublicKey, frontier: BlockHash, balance: u128) {
        let mut g = self.lock();
        g.accounts.insert(
            account,
            Account {
                frontier,
                balance,
                confirmed_frontier: frontier,
            },
        );
        g.balances.insert(frontier, balance);
        g.blocks.insert(
            frontier,
            Block {
                previous: BlockHash::ZERO,
                account,
                confirmed: true,
                state: None,
                seen_at: 0,
            },
        );
    }

    /// Makes `process` refuse every block with `message` (None: back to normal).
    pub fn refuse_with(&self, message: Option<&str>) {
        *self.refuse.lock().unwrap_or_else(|p| p.into_inner()) = message.map(str::to_owned);
    }

    pub fn set_auto_confirm(&self, on: bool) {
        self.auto_confirm.store(on, Ordering::SeqCst);
    }

    /// Every call fails with [`LedgerError::Unavailable`] while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Confirms a processed block (and its account's head up to it).
    pub fn confirm(&self, hash: &BlockHash) {
        let mut g = self.lock();
        let account = match g.blocks.get_mut(hash) {
            Some(b) => {
                b.confirmed = true;
                b.account
            }
            None => return,
        };
        if let Some(a) = g.accounts.get_mut(&account) {
            a.confirmed_frontier = *hash;
        }
        drop(g);
        self.changed.notify_waiters();
    }

    /// A conflicting block on the same `previous` wins the election: it replaces `loser` (if
    /// processed) and is confirmed with the balance `balance`.
    pub fn fork_wins(
        &self,
        account: PublicKey,
        previous: BlockHash,
        winner: BlockHash,
        balance: u128,
    ) {
        let mut g = self.lock();
        g.blocks
            .retain(|_, b| !(b.account == account && b.previous == previous));
        g.blocks.insert(
            winner,
            Block {
                previous,
                account,
                confirmed: true,
                state: None,
                seen_at: 0,
            },
        );
        g.balances.insert(winner, balance);
        g.accounts.insert(
            account,
            Account {
                frontier: winner,
                balance,
                confirmed_frontier: winner,
            },
        );
        drop(g);
        self.changed.notify_waiters();
    }

    /// Pretends the ledger first saw `hash` at `unix_secs` (a block that sat unconfirmed).
    pub fn set_seen_at(&self, hash: &BlockHash, unix_secs: u64) {
        if let Some(b) = self.lock().blocks.get_mut(hash) {
            b.seen_at = unix_secs;
        }
    }

    fn check_up(&self) -> Result<(), LedgerError> {
        if self.down.load(Ordering::SeqCst) {
            Err(LedgerError::Unavailable("fake ledger is down".into()))
        } else {
            Ok(())
        }
    }

    fn status(&self, hash: &BlockHash) -> Option<bool> {
        self.lock().blocks.get(hash).map(|b| b.confirmed)
    }
}

impl Ledger for FakeLedger {
    fn network(&self) -> LedgerFuture<'_, String> {
        Box::pin(async move {
            self.check_up()?;
            Ok("dev".to_owned())
        })
    }

    fn account_state<'a>(
        &'a self,
        account: &'a PublicKey,
    ) -> LedgerFuture<'a, Option<AccountState>> {
        Box::pin(async move {
            self.account_calls.fetch_add(1, Ordering::SeqCst);
            self.check_up()?;
            Ok(self.lock().accounts.get(account).map(|a| AccountState {
                frontier: a.frontier,
                balance: a.balance,
                confirmed_frontier: Some(a.confirmed_frontier),
            }))
        })
    }

    fn block_confirmed<'a>(&'a self, hash: &'a BlockHash) -> LedgerFuture<'a, Option<bool>> {
        Box::pin(async move {
            self.check_up()?;
            Ok(self.status(hash))
        })
    }

    fn process<'a>(&'a self, block: &'a StateBlock) -> LedgerFuture<'a, ProcessOutcome> {
        Box::pin(async move {
            self.check_up()?;
            self.process_calls.fetch_add(1, Ordering::SeqCst);
            let hash = block.hash();
            let auto = self.auto_confirm.load(Ordering::SeqCst);
            if let Some(m) = self
                .refuse
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Ok(ProcessOutcome::Rejected(m));
            }
            let mut g = self.lock();
            if g.blocks.contains_key(&hash) {
                return Ok(ProcessOutcome::Old);
            }
            let Some(acct) = g.accounts.get(&block.account).cloned() else {
                return Ok(ProcessOutcome::GapPrevious);
            };
            if acct.frontier != block.previous {
                let forked = g
                    .blocks
                    .values()
                    .any(|b| b.account == block.account && b.previous == block.previous);
                return Ok(if forked {
                    ProcessOutcome::Fork
                } else {
                    ProcessOutcome::GapPrevious
                });
            }
            if !block.signature_valid() {
                return Ok(ProcessOutcome::Rejected("Bad signature".into()));
            }
            if block.balance > acct.balance {
                return Ok(ProcessOutcome::Rejected("Negative spend".into()));
            }
            g.blocks.insert(
                hash,
                Block {
                    previous: block.previous,
                    account: block.account,
                    confirmed: auto,
                    state: Some(block.clone()),
                    seen_at: crate::engine::unix_now(),
                },
            );
            g.balances.insert(hash, block.balance);
            g.accounts.insert(
                block.account,
                Account {
                    frontier: hash,
                    balance: block.balance,
                    confirmed_frontier: if auto { hash } else { acct.confirmed_frontier },
                },
            );
            drop(g);
            self.changed.notify_waiters();
            Ok(ProcessOutcome::Processed)
        })
    }

    fn send_facts<'a>(&'a self, hash: &'a BlockHash) -> LedgerFuture<'a, Option<SendFacts>> {
        Box::pin(async move {
            self.check_up()?;
            let g = self.lock();
            let Some(b) = g.blocks.get(hash) else {
                return Ok(None);
            };
            let Some(state) = b.state.clone() else {
                return Ok(None);
            };
            let before = g.balances.get(&b.previous).copied().unwrap_or(0);
            let send = before >= state.balance;
            Ok(Some(SendFacts {
                account: b.account,
                subtype: Some(if send { "send" } else { "receive" }.to_owned()),
                destination: send.then(|| state.link_as_key()),
                amount: before.abs_diff(state.balance),
                confirmed: b.confirmed,
                local_timestamp: b.seen_at,
                block: Some(state),
            }))
        })
    }

    fn nudge<'a>(&'a self, _hash: &'a BlockHash) -> LedgerFuture<'a, ()> {
        Box::pin(async move { self.check_up() })
    }

    fn wait_confirmed<'a>(
        &'a self,
        block: &'a StateBlock,
        deadline: Instant,
    ) -> LedgerFuture<'a, Confirmation> {
        Box::pin(async move {
            let hash = &block.hash();
            loop {
                let changed = self.changed.notified();
                self.check_up()?;
                match self.status(hash) {
                    Some(true) => return Ok(Confirmation::Confirmed),
                    None => return Ok(Confirmation::Missing),
                    Some(false) => {}
                }
                let deadline = tokio::time::Instant::from_std(deadline);
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Ok(Confirmation::TimedOut);
                }
            }
        })
    }
}
