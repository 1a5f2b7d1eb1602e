//! Catching up from the ledger. The tagged watcher learns of sends by WebSocket push, and a
//! push can be missed: the connection drops, the node restarts, the watcher falls behind, or
//! the sidecar itself is down. The reconciler walks each watched pool account and each
//! signed-block payee account on the node and feeds every confirmed send to it into the
//! **same** handler the push uses ([`super::tagged::handle_confirmed_send`]), so a send made
//! during a gap is matched to its session, left to the settlement path (a signed-block payment
//! of ours), or recorded owed like any other.
//!
//! Signed-block payees are the distinct `pay_to` of the payment ledger and of pending
//! settlements, the facilitator's `pay_to` list (read at start and on every WebSocket
//! resubscription), and each payee at its first presentation (when its block is claimed).
//!
//! Two views cover every send to an account:
//! * `receivable`: sends not received yet (the payee's wallet has not pocketed them);
//! * the account's own chain (`account_history`, raw): each `receive`/`open` block names the
//!   send it received in `link`. It is read from a per-account cursor kept in the store
//!   (`reconcile_cursors`), so a restart resumes where the last pass stopped.
//!
//! Sends first seen before the account's `since` predate everything we issued for it and are
//! ignored: for a pool account, when we started following it minus the longest session
//! validity; for a payee account, when the sidecar first knew it (its first recorded payment
//! or presentation, or the first pass that read it from the configuration). The account's
//! older history is not ours to judge.
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

    /// Follows every signed-block payee the store and the configuration know (payees first
    /// presented from now on are followed at their presentation).
    pub async fn rewatch_payees(&self) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        if let Err(e) = engine.rewatch_payees().await {
            tracing::warn!(error = %e, "could not list the signed-block payee accounts");
        }
    }

    /// One pass over every watched pool and signed-block payee account.
    pub async fn pass(&self) -> PassReport {
        let mut report = PassReport::default();
        let Some(engine) = self.engine.upgrade() else {
            return report;
        };
        let now = unix_now();
        let pools = engine.tagged().watched_accounts();
        // A pool account's sends count from the longest session validity back (a session
        // issued before we followed it may be paid); a payee's only from when we first knew it.
        let pool_since = now.saturating_sub(engine.tagged().settings.max_validity_secs);
        let payees = engine
            .tagged()
            .payee_accounts()
            .into_iter()
            .filter(|(k, _)| !pools.contains(k));
        let accounts: Vec<(PublicKey, u64)> = pools
            .iter()
            .map(|k| (*k, pool_since))
            .chain(payees)
            .collect();
        for (account, since) in accounts {
            report.accounts += 1;
            match self.account(&engine, &account, since).await {
                Ok(n) => report.fed += n,
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(account = %account.to_address(), error = %e,
                        "reconciling an account failed; retried next pass");
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
    /// `since`: where a new cursor starts (an existing one keeps its own).
    async fn account(
        &self,
        engine: &Arc<Engine>,
        account: &PublicKey,
        since: u64,
    ) -> Result<usize, ReconcileError> {
        let store = engine.store();
        let key = account.to_hex();
        let now = unix_now();
        let cursor = match store.cursor(&key).await? {
            Some(c) => c,
            None => {
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
        let mut rewatch = true;
        loop {
            if reconciler.engine.strong_count() == 0 {
                return;
            }
            if std::mem::take(&mut rewatch) {
                reconciler.rewatch_payees().await;
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
                            rewatch = true;
                            break;
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::keys::ChallengeKeys;
    use crate::ledger::{
        AccountState, Confirmation, Ledger, LedgerFuture, ProcessOutcome, SendFacts,
    };
    use crate::metrics::Metrics;
    use crate::node::{ChainBlock, HistoryPage};
    use crate::store::sqlite::SqliteStore;
    use crate::store::RedeemPolicy;
    use nanogate_protocol::nano::{Network, Signature, StateBlock};
    use std::collections::HashMap;

    /// A ledger that serves one pool account's chain, its receivable sends and the sends'
    /// facts from memory; everything else is unused here.
    #[derive(Default)]
    struct Scripted {
        /// The pool account's chain, oldest first.
        chain: Mutex<Vec<ChainBlock>>,
        receivable: Mutex<Vec<BlockHash>>,
        sends: Mutex<HashMap<BlockHash, SendFacts>>,
    }

    fn unused<'a, T: Send + 'a>() -> LedgerFuture<'a, T> {
        Box::pin(async { Err(LedgerError::Node("unused".into())) })
    }

    impl Ledger for Scripted {
        fn network(&self) -> LedgerFuture<'_, String> {
            unused()
        }
        fn account_state<'a>(&'a self, _: &'a PublicKey) -> LedgerFuture<'a, Option<AccountState>> {
            unused()
        }
        fn block_confirmed<'a>(&'a self, _: &'a BlockHash) -> LedgerFuture<'a, Option<bool>> {
            unused()
        }
        fn process<'a>(&'a self, _: &'a StateBlock) -> LedgerFuture<'a, ProcessOutcome> {
            unused()
        }
        fn nudge<'a>(&'a self, _: &'a BlockHash) -> LedgerFuture<'a, ()> {
            unused()
        }
        fn wait_confirmed<'a>(
            &'a self,
            _: &'a StateBlock,
            _: std::time::Instant,
        ) -> LedgerFuture<'a, Confirmation> {
            unused()
        }
        fn send_facts<'a>(&'a self, hash: &'a BlockHash) -> LedgerFuture<'a, Option<SendFacts>> {
            let f = self
                .sends
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(hash)
                .cloned();
            Box::pin(async move { Ok(f) })
        }
        fn receivable_sends<'a>(
            &'a self,
            _: &'a PublicKey,
            _: u64,
        ) -> LedgerFuture<'a, Vec<BlockHash>> {
            let r = self
                .receivable
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            Box::pin(async move { Ok(r) })
        }
        fn chain_page<'a>(
            &'a self,
            _: &'a PublicKey,
            head: Option<&'a BlockHash>,
            forward: bool,
            count: u64,
        ) -> LedgerFuture<'a, Option<HistoryPage>> {
            let chain = self
                .chain
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let n = usize::try_from(count).unwrap_or(usize::MAX);
            let page = (|| {
                let at = match head {
                    Some(h) => chain.iter().position(|b| b.hash == *h)?,
                    None if forward => 0,
                    None => chain.len().checked_sub(1)?,
                };
                Some(if forward {
                    let blocks: Vec<ChainBlock> = chain.iter().skip(at).take(n).cloned().collect();
                    HistoryPage {
                        next: chain.get(at + blocks.len()).map(|b| b.hash),
                        blocks,
                    }
                } else {
                    let blocks: Vec<ChainBlock> =
                        chain[..=at].iter().rev().take(n).cloned().collect();
                    let next = (at + 1)
                        .checked_sub(blocks.len() + 1)
                        .map(|i| chain[i].hash);
                    HistoryPage { next, blocks }
                })
            })();
            let page = match (head, page) {
                (None, None) => Some(HistoryPage::default()),
                (_, p) => p,
            };
            Box::pin(async move { Ok(page) })
        }
    }

    const POOL: PublicKey = PublicKey([9; 32]);
    const PAYER: PublicKey = PublicKey([8; 32]);

    fn hash(n: u8) -> BlockHash {
        BlockHash([n; 32])
    }

    impl Scripted {
        /// A confirmed (or not) send of `amount` to the pool, first seen at `at`.
        fn send(&self, n: u8, amount: u128, at: u64, confirmed: bool) -> BlockHash {
            let block = StateBlock {
                account: PAYER,
                previous: BlockHash([0; 32]),
                representative: PAYER,
                balance: 0,
                link: POOL.0,
                signature: Signature([0; 64]),
                work: 0,
            };
            let facts = SendFacts {
                account: PAYER,
                subtype: Some("send".into()),
                destination: Some(POOL),
                amount,
                confirmed,
                local_timestamp: at,
                block: Some(block),
            };
            self.sends
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(hash(n), facts);
            hash(n)
        }

        /// The pool's wallet pockets send `source` (block `n` on its chain).
        fn receive(&self, n: u8, source: BlockHash, at: u64) {
            self.chain
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ChainBlock {
                    hash: hash(n),
                    height: 0,
                    subtype: Some("receive".into()),
                    link: Some(source),
                    local_timestamp: at,
                });
        }
    }

    async fn engine(ledger: Arc<Scripted>, pool: bool) -> (Arc<Engine>, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "nanogate_reconcile_{}.db",
            super::super::random_hex()
        ));
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()), 4)
            .await
            .expect("store");
        let cfg = EngineConfig {
            network: "nano:devnet".into(),
            node_network: Network::Dev,
            max_wait: Duration::from_secs(1),
            fork_grace_secs: 60,
            redeem: RedeemPolicy {
                max_redemptions: 1,
                window_secs: 600,
            },
            retention: crate::store::Retention {
                served_secs: 30 * 86_400,
                owed_secs: 90 * 86_400,
            },
            allow_unbound: false,
            pay_to_allow: vec![],
        };
        let e = Engine::new(
            cfg,
            ChallengeKeys::new(b"reconcile-test-secret-0123456789".to_vec(), 300),
            Arc::new(store),
            ledger,
            Arc::new(Metrics::new()),
        );
        if pool {
            e.watch_pool(POOL);
        } else {
            e.watch_payee(POOL, unix_now() - 60);
        }
        (Arc::new(e), path)
    }

    /// The hashes recorded as stray (every send here matches no session: `unmatched`).
    async fn strays(e: &Engine, want: usize) -> Vec<String> {
        for _ in 0..100 {
            let s: Vec<String> = e
                .store()
                .strays(100)
                .await
                .expect("strays")
                .into_iter()
                .map(|s| s.hash)
                .collect();
            if s.len() >= want {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        e.store()
            .strays(100)
            .await
            .expect("strays")
            .into_iter()
            .map(|s| s.hash)
            .collect()
    }

    /// The hashes of every owed payment (any mechanism).
    async fn owed(e: &Engine, want: usize) -> Vec<String> {
        let q = crate::store::PaymentQuery {
            state: Some(crate::store::PaymentState::Owed),
            resource: None,
            payer: None,
            since: None,
            until: None,
            after: None,
            limit: 100,
        };
        let mut got = Vec::new();
        for _ in 0..100 {
            got = e
                .store()
                .payments(&q)
                .await
                .expect("payments")
                .iter()
                .map(|p| p.hash().to_owned())
                .collect();
            if got.len() >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        got
    }

    #[tokio::test]
    async fn missed_sends_are_fed_once_and_the_cursor_waits_for_unconfirmed_ones() {
        let ledger = Arc::new(Scripted::default());
        let now = unix_now();
        // Before we followed the account (older than the longest session): not ours to judge.
        let ancient = ledger.send(1, 5, now - 7_200, true);
        ledger.receive(11, ancient, now - 7_200);
        let pocketed = ledger.send(2, 6, now - 10, true);
        ledger.receive(12, pocketed, now - 10);
        let pending = ledger.send(3, 7, now - 5, true);
        ledger
            .receivable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pending);
        let (e, path) = engine(ledger.clone(), true).await;
        let r = Reconciler::new(&e, Duration::ZERO);

        let report = r.pass().await;
        assert_eq!((report.accounts, report.fed, report.errors), (1, 2, 0));
        let mut got = strays(&e, 2).await;
        got.sort();
        assert_eq!(got, vec![pocketed.to_hex(), pending.to_hex()]);
        let cursor = e
            .store()
            .cursor(&POOL.to_hex())
            .await
            .expect("cursor")
            .expect("set");
        assert_eq!(
            cursor.head,
            Some(hash(12).to_hex()),
            "cursor at the frontier"
        );

        // Fed once: a second pass feeds nothing new.
        assert_eq!(r.pass().await.fed, 0);

        // The wallet pockets a send that is not confirmed yet: the cursor stays before it.
        let late = ledger.send(4, 8, now, false);
        ledger.receive(13, late, now);
        let after = ledger.send(5, 9, now, true);
        ledger.receive(14, after, now);
        assert_eq!(r.pass().await.fed, 0);
        let cursor = e
            .store()
            .cursor(&POOL.to_hex())
            .await
            .expect("cursor")
            .expect("set");
        assert_eq!(
            cursor.head,
            Some(hash(12).to_hex()),
            "not past the unconfirmed send"
        );
        ledger
            .sends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&late)
            .expect("late")
            .confirmed = true;
        assert_eq!(r.pass().await.fed, 2);
        let cursor = e
            .store()
            .cursor(&POOL.to_hex())
            .await
            .expect("cursor")
            .expect("set");
        assert_eq!(cursor.head, Some(hash(14).to_hex()));
        assert_eq!(strays(&e, 4).await.len(), 4);
        assert!(!strays(&e, 4).await.contains(&ancient.to_hex()));

        // The cursor's block leaves the chain (a rollback): it is reset, then rebuilt.
        ledger
            .chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|b| b.hash != hash(14));
        r.pass().await;
        let cursor = e
            .store()
            .cursor(&POOL.to_hex())
            .await
            .expect("cursor")
            .expect("set");
        assert_eq!(cursor.head, None, "reset after a rollback");
        r.pass().await;
        let cursor = e
            .store()
            .cursor(&POOL.to_hex())
            .await
            .expect("cursor")
            .expect("set");
        assert_eq!(cursor.head, Some(hash(13).to_hex()));
        drop(e);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    }

    #[tokio::test]
    async fn sends_to_a_signed_block_payee_that_are_not_our_payments_are_owed() {
        // POOL is a signed-block payee here (no session account), known since a minute ago.
        let ledger = Arc::new(Scripted::default());
        let now = unix_now();
        // Before the sidecar knew the account: its older history is not ours to judge.
        let older = ledger.send(1, 5, now - 3_600, true);
        ledger.receive(11, older, now - 3_600);
        // Someone paid the account directly (pocketed by its wallet, and one still receivable).
        let direct = ledger.send(2, 6, now - 10, true);
        ledger.receive(12, direct, now - 10);
        let ours = ledger.send(3, 7, now - 5, true);
        let receivable = ledger.send(4, 8, now - 5, true);
        ledger
            .receivable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([ours, receivable]);
        let (e, path) = engine(ledger.clone(), false).await;
        // `ours` is a signed-block payment being settled: claimed in the fork set.
        let claim = crate::store::ForkEntry {
            frontier_key: format!("nano:devnet:{}:{}", PAYER.to_hex(), hash(0).to_hex()),
            block_hash: ours.to_hex(),
            nonce: None,
            owner: "settler".into(),
            lease_until: as_i64(now + 60),
            expires_at: as_i64(now + 120),
            terms: None,
        };
        assert!(e
            .store()
            .fork_claim(&claim, as_i64(now))
            .await
            .expect("claim"));
        let r = Reconciler::new(&e, Duration::ZERO);
        let report = r.pass().await;
        assert_eq!((report.accounts, report.errors), (1, 0));
        let mut got = owed(&e, 2).await;
        got.sort();
        assert_eq!(got, vec![direct.to_hex(), receivable.to_hex()]);
        for h in [direct, receivable] {
            let row = e
                .store()
                .spent(&format!("nano:devnet:{}", h.to_hex()))
                .await
                .expect("store")
                .expect("row");
            assert_eq!(
                (row.mechanism.as_str(), row.state, row.reason.as_deref()),
                (
                    crate::store::payments::SIGNED_BLOCK,
                    crate::store::PaymentState::Owed,
                    Some("unmatched")
                )
            );
        }
        let cursor = e
            .store()
            .cursor(&POOL.to_hex())
            .await
            .expect("cursor")
            .expect("set");
        assert_eq!(
            cursor.since,
            as_i64(now - 60),
            "since the account was known"
        );
        drop(e);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    }
}
