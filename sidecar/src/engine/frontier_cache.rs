//! What the node said about payers' accounts (`account_info`), kept a few seconds, so that one
//! bad block replayed under fresh challenges cannot buy a node call per presentation.
//!
//! The cache only ever answers with a refusal that no newer answer could turn into an
//! admission, so it can never make a valid payment fail:
//! - the block is the cached frontier (it is on the ledger already): a block on the ledger is
//!   never a new payment, whatever happened since;
//! - the block builds on the cached, confirmed frontier and its decrement is not the amount:
//!   the balance at a confirmed block never changes, so neither does the decrement.
//!
//! Everything else (the block does not build on the cached frontier: the cache may be behind;
//! the cached answer would pass) asks the node again. Only answers that refused a payment are
//! kept: one that passed is about to move the payer's head.

use crate::ledger::AccountState;
use lru::LruCache;
use nanogate_protocol::nano::PublicKey;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer is used. Short: a cached refusal stays true for good, so this only
/// bounds how stale a reason may be, not whether the refusal is right.
pub const TTL: Duration = Duration::from_secs(5);
/// Accounts remembered at most (least recently used first out): ~100 bytes each.
pub const CAPACITY: usize = 10_000;

type Turn = Arc<tokio::sync::Mutex<()>>;

pub struct FrontierCache {
    ttl: Duration,
    entries: Mutex<LruCache<PublicKey, (Instant, AccountState)>>,
    /// One node lookup per account at a time: concurrent presentations of one block wait
    /// for the first answer instead of each asking the node.
    lookups: Mutex<HashMap<PublicKey, Turn>>,
}

/// The right to ask the node about one account; see [`FrontierCache::lookup_turn`].
pub struct LookupTurn<'a> {
    cache: &'a FrontierCache,
    account: PublicKey,
    turn: Turn,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LookupTurn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut lookups = self.cache.lookups();
        // Only the map and this turn hold it: nobody waits, forget it.
        if Arc::strong_count(&self.turn) == 2 {
            lookups.remove(&self.account);
        }
    }
}

impl Default for FrontierCache {
    fn default() -> Self {
        Self::new(CAPACITY, TTL)
    }
}

impl FrontierCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        FrontierCache {
            ttl,
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            lookups: Mutex::new(HashMap::new()),
        }
    }

    fn lookups(&self) -> std::sync::MutexGuard<'_, HashMap<PublicKey, Turn>> {
        self.lookups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this account's turn to ask the node (check the cache again once it comes).
    pub async fn lookup_turn(&self, account: &PublicKey) -> LookupTurn<'_> {
        let turn = self.lookups().entry(*account).or_default().clone();
        let guard = Arc::clone(&turn).lock_owned().await;
        LookupTurn {
            cache: self,
            account: *account,
            turn,
            guard: Some(guard),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<PublicKey, (Instant, AccountState)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account's state as the node last said it, if that answer is recent.
    pub fn get(&self, account: &PublicKey) -> Option<AccountState> {
        let mut entries = self.lock();
        match entries.get(account) {
            Some((at, state)) if at.elapsed() < self.ttl => Some(state.clone()),
            Some(_) => {
                entries.pop(account);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, account: PublicKey, state: AccountState) {
        self.lock().put(account, (Instant::now(), state));
    }

    pub fn forget(&self, account: &PublicKey) {
        self.lock().pop(account);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanogate_protocol::nano::BlockHash;

    fn state(f: u8) -> AccountState {
        AccountState {
            frontier: BlockHash([f; 32]),
            balance: 10,
            confirmed_frontier: Some(BlockHash([f; 32])),
        }
    }

    #[tokio::test]
    async fn lookups_of_one_account_take_turns_and_are_forgotten_after() {
        let c = Arc::new(FrontierCache::default());
        let a = PublicKey([1; 32]);
        let first = c.lookup_turn(&a).await;
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            let _t = c2.lookup_turn(&a).await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the second lookup waits for the first"
        );
        let _other = c.lookup_turn(&PublicKey([2; 32])).await;
        drop(first);
        waiter.await.expect("second turn");
        drop(_other);
        assert!(c.lookups().is_empty());
    }

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let c = FrontierCache::new(2, Duration::from_millis(50));
        c.put(PublicKey([1; 32]), state(1));
        c.put(PublicKey([2; 32]), state(2));
        c.put(PublicKey([3; 32]), state(3));
        assert_eq!(c.len(), 2);
        assert!(
            c.get(&PublicKey([1; 32])).is_none(),
            "least recently used out"
        );
        assert_eq!(c.get(&PublicKey([3; 32])), Some(state(3)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get(&PublicKey([3; 32])).is_none(), "expired");
    }
}
