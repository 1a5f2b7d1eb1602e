//! Catching up from the ledger. The tagged watcher learns of sends by WebSocket push, and a
//! push can be missed: the connection drops, the node restarts, the watcher falls behind, or
//! the sidecar itself is down. The reconciler walks each watched pool account on the node and
//! feeds every confirmed send to it into the **same** handler the push uses
//! ([`super::tagged::handle_confirmed_send`]), so a send made during a gap is matched to its
//! session or recorded as stray like any other.
//!
//! Two views cover every send to an account:
//! * `receivable`: sends not received yet (the payee's wallet has not pocketed them);
//! * the account's own chain (`account_history`, raw): each `receive`/`open` block names the
//!   send it received in `link`. It is read from a per-account cursor kept in the store
//!   (`reconcile_cursors`), so a restart resumes where the last pass stopped.
//!
//! Sends first seen before the account's `since` (set when we start following the account,
//! minus the longest session validity) predate everything we issued for it and are ignored.
//! Passes run at start, after every WebSocket (re)subscription, when the watcher lagged, and
//! every `tagged.reconcile_secs`. The handler is idempotent (a session paid by the same block
//! stays paid; a stray is recorded once per block), so feeding a send twice is harmless; a
//! bounded set of the hashes already fed avoids re-reading them on every pass.

use super::tagged::handle_confirmed_send;
use super::{as_i64, unix_now, Engine};
use crate::ledger::LedgerError;
use crate::node::ConfirmedBlock;
use crate::store::cursor::ReconcileCursor;
use crate::store::StoreError;
use nanogate_protocol::nano::{BlockHash, PublicKey};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// Blocks per `account_history` page.
const PAGE: u64 = 100;
/// Pages read per account and pass (the cursor resumes the rest next pass).
const MAX_PAGES: usize = 20;
/// Most `receivable` hashes looked at per account and pass.
const MAX_RECEIVABLE: u64 = 1_000;
/// Hashes remembered as fed; the set is cleared when full (feeding again is harmless).
const SEEN_CAP: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`Reconciler::feed`] did with a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fed {
    /// Handed to the handler.
    Yes,
    /// Already fed, unknown to the node, not a send to this account, or too old.
    No,
    /// Not confirmed yet: look again next pass.
    NotYet,
}

/// What one pass did (for logs and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub accounts: usize,
    /// Confirmed sends handed to the handler.
    pub fed: usize,
    pub errors: usize,
}

/// The reconciler and its memory between passes. It holds the engine weakly: it stops
/// mattering when the engine is dropped.
pub struct Reconciler {
    engine: Weak<Engine>,
    settle_window: Duration,
    seen: Mutex<HashSet<BlockHash>>,
}

impl Reconciler {
    pub fn new(engine: &Arc<Engine>, settle_window: Duration) -> Self {
        Reconciler {
            engine: Arc::downgrade(engine),
            settle_window,
            seen: Mutex::default(),
        }
    }

    fn seen(&self, hash: &BlockHash) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(hash)
    }

    fn remember(&self, hash: BlockHash) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= SEEN_CAP {
            seen.clear();
        }
        seen.insert(hash);
    }

    /// One pass over every watched pool account.
    pub async fn pass(&self) -> PassReport {
        let mut report = PassReport::default();
        let Some(engine) = self.engine.upgrade() else {
            return report;
        };
        for account in engine.tagged().watched_accounts() {
            report.accounts += 1;
            match self.account(&engine, &account).await {
                Ok(n) => report.fed += n,
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(account = %account.to_address(), error = %e,
                        "reconciling a pool account failed; retried next pass");
                }
            }
        }
        if report.fed > 0 {
            tracing::info!(
                accounts = report.accounts,
                fed = report.fed,
                "caught up on sends from the ledger"
            );
        }
        report
    }

    /// Catches up on one account; returns how many sends were fed to the handler.
    async fn account(
        &self,
        engine: &Arc<Engine>,
        account: &PublicKey,
    ) -> Result<usize, ReconcileError> {
        let store = engine.store();
        let key = account.to_hex();
        let now = unix_now();
        let cursor = match store.cursor(&key).await? {
            Some(c) => c,
            None => {
                let since = now.saturating_sub(engine.tagged().settings.max_validity_secs);
                let c = ReconcileCursor {
                    account: key.clone(),
                    head: None,
                    since: as_i64(since),
                };
                store.init_cursor(&c, as_i64(now)).await?;
                store.cursor(&key).await?.unwrap_or(c)
            }
        };
        let mut fed = self.chain(engine, account, &cursor).await?;
        for hash in engine
            .ledger
            .receivable_sends(account, MAX_RECEIVABLE)
            .await?
        {
            fed += usize::from(self.feed(engine, account, hash, cursor.since).await? == Fed::Yes);
        }
        Ok(fed)
    }

    /// The account's own chain from the cursor: the sends its receives pocketed.
    async fn chain(
        &self,
        engine: &Arc<Engine>,
        account: &PublicKey,
        cursor: &ReconcileCursor,
    ) -> Result<usize, ReconcileError> {
        let store = engine.store();
        let ledger = &engine.ledger;
        let head = cursor
            .head
            .as_deref()
            .and_then(|h| BlockHash::from_hex(h).ok());
        let mut fed = 0;
        if let Some(head) = head {
            // Forward from the cursor, a page at a time, moving the cursor after each page.
            let mut from = head;
            for _ in 0..MAX_PAGES {
                let Some(page) = ledger.chain_page(account, Some(&from), true, PAGE).await? else {
                    // The cursor's block left the chain (rolled back): start again from `since`.
                    store
                        .advance_cursor(&cursor.account, None, as_i64(unix_now()))
                        .await?;
                    return Ok(fed);
                };
                let mut last = from;
                let mut blocked = false;
                for b in page.blocks.iter().filter(|b| b.hash != from) {
                    if let Some(send) = received(b) {
                        match self.feed(engine, account, send, cursor.since).await? {
                            Fed::Yes => fed += 1,
                            Fed::No => {}
                            // The cursor stays before it until its send is confirmed.
                            Fed::NotYet => {
                                blocked = true;
                                break;
                            }
                        }
                    }
                    last = b.hash;
                }
                if last != from {
                    store
                        .advance_cursor(&cursor.account, Some(&last.to_hex()), as_i64(unix_now()))
                        .await?;
                }
                match page.next {
                    Some(_) if !blocked => from = last,
                    _ => break,
                }
            }
            return Ok(fed);
        }
        // No cursor yet: walk back from the frontier to `since` (at most MAX_PAGES pages: an
        // older busy history is not ours to judge), then handle oldest first.
        let mut blocks = Vec::new();
        let mut from: Option<BlockHash> = None;
        'pages: for _ in 0..MAX_PAGES {
            let Some(page) = ledger
                .chain_page(account, from.as_ref(), false, PAGE)
                .await?
            else {
                break;
            };
            for b in page.blocks {
                if b.local_timestamp != 0 && as_i64(b.local_timestamp) < cursor.since {
                    break 'pages;
                }
                blocks.push(b);
            }
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        // Oldest first; the cursor ends on the last block handled (before an unconfirmed one).
        let mut last = None;
        for b in blocks.iter().rev() {
            if let Some(send) = received(b) {
                match self.feed(engine, account, send, cursor.since).await? {
                    Fed::Yes => fed += 1,
                    Fed::No => {}
                    Fed::NotYet => break,
                }
            }
            last = Some(b.hash);
        }
        if let Some(l) = last {
            store
                .advance_cursor(&cursor.account, Some(&l.to_hex()), as_i64(unix_now()))
                .await?;
        }
        Ok(fed)
    }

    /// Hands a confirmed send to `account` to the handler, once.
    async fn feed(
        &self,
        engine: &Arc<Engine>,
        account: &PublicKey,
        hash: BlockHash,
        since: i64,
    ) -> Result<Fed, ReconcileError> {
        if self.seen(&hash) {
            return Ok(Fed::No);
        }
        let Some(facts) = engine.ledger.send_facts(&hash).await? else {
            return Ok(Fed::No);
        };
        if !facts.confirmed {
            return Ok(Fed::NotYet);
        }
        self.remember(hash);
        let is_ours = facts.subtype.as_deref() == Some("send")
            && facts.destination == Some(*account)
            && (facts.local_timestamp == 0 || as_i64(facts.local_timestamp) >= since);
        let Some(block) = facts.block.filter(|_| is_ours) else {
            return Ok(Fed::No);
        };
        let cb = ConfirmedBlock {
            hash,
            account: facts.account,
            amount: facts.amount,
            height: None,
            block: Some(block),
            subtype: facts.subtype,
            confirmation_type: Some("reconciled".into()),
            local_timestamp: (facts.local_timestamp > 0).then_some(facts.local_timestamp),
            time_ms: None,
        };
        handle_confirmed_send(engine, cb, self.settle_window).await;
        Ok(Fed::Yes)
    }
}

/// For a block that received a send (a state `receive` or `open`): that send's hash.
fn received(b: &crate::node::ChainBlock) -> Option<BlockHash> {
    match b.subtype.as_deref() {
        Some("receive") | Some("open") => b.link,
        _ => None,
    }
}

/// Runs passes until the engine is dropped: at once, then whenever `resubscribed` reports a
/// new WebSocket subscription, the watcher asks (it lagged), or `every` has passed.
pub fn spawn_reconciler(
    engine: &Arc<Engine>,
    mut resubscribed: Option<tokio::sync::watch::Receiver<crate::node::WsStatus>>,
    every: Duration,
    settle_window: Duration,
) -> tokio::task::JoinHandle<()> {
    let reconciler = Reconciler::new(engine, settle_window);
    let requested = engine.tagged().reconcile_signal();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut epoch = resubscribed.as_ref().map_or(0, |r| r.borrow().epoch);
        loop {
            if reconciler.engine.strong_count() == 0 {
                return;
            }
            reconciler.pass().await;
            // Wait for the next reason to look.
            loop {
                let ws = async {
                    match resubscribed.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => break,
                    () = requested.notified() => break,
                    alive = ws => {
                        if !alive {
                            resubscribed = None;
                            continue;
                        }
                        let now = resubscribed.as_ref().map_or(epoch, |r| r.borrow().epoch);
                        if now != epoch {
                            epoch = now;
                            break;
                        }
                    }
                }
            }
        }
    })
}
