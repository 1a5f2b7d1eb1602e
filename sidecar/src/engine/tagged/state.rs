//! The tagged-session mechanism's settings and the accounts it follows.

use nanogate_protocol::nano::PublicKey;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

/// Settings of the mechanism.
#[derive(Debug, Clone)]
pub struct TaggedSettings {
    /// Tags are drawn from `1..=tag_space` raw.
    pub tag_space: u64,
    /// How long sessions are kept after they expire (late payments are still recognized).
    pub retention_secs: u64,
    /// Most sessions per `/v1/sessions` call.
    pub max_batch: usize,
    /// Most accounts in a payee pool.
    pub max_pool: usize,
    /// Longest session validity.
    pub max_validity_secs: u64,
}

impl Default for TaggedSettings {
    fn default() -> Self {
        TaggedSettings {
            tag_space: 999_999_999_999,
            retention_secs: 86_400,
            max_batch: 64,
            max_pool: 64,
            max_validity_secs: 3_600,
        }
    }
}

/// Mutable state of the mechanism inside the engine.
#[derive(Debug, Default)]
pub struct TaggedState {
    pub settings: TaggedSettings,
    /// Pool accounts whose confirmations we follow.
    watched: Mutex<HashSet<PublicKey>>,
    /// Signed-block payee accounts we follow too, each with the unix time we first knew it:
    /// sends to them that are not our signed-block payments are recorded owed.
    payees: Mutex<HashMap<PublicKey, u64>>,
    /// Wakes the reconciler early (the watcher fell behind the confirmation stream).
    reconcile: Arc<tokio::sync::Notify>,
}

impl TaggedState {
    pub fn new(settings: TaggedSettings) -> Self {
        TaggedState {
            settings,
            watched: Mutex::default(),
            payees: Mutex::default(),
            reconcile: Arc::default(),
        }
    }

    /// The signed-block payee accounts followed now, with the time each was first known.
    pub fn payee_accounts(&self) -> Vec<(PublicKey, u64)> {
        self.payees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, t)| (*k, *t))
            .collect()
    }

    pub(super) fn is_payee(&self, key: &PublicKey) -> bool {
        self.payees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    /// `true` when `key` was not a known payee before (an earlier `since` is kept).
    pub(super) fn know_payee(&self, key: PublicKey, since: u64) -> bool {
        let mut payees = self.payees.lock().unwrap_or_else(PoisonError::into_inner);
        match payees.get_mut(&key) {
            Some(t) => {
                *t = (*t).min(since);
                false
            }
            None => {
                payees.insert(key, since);
                true
            }
        }
    }

    /// The pool accounts followed now.
    pub fn watched_accounts(&self) -> Vec<PublicKey> {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Asks the reconciler for a pass now.
    pub fn request_reconcile(&self) {
        self.reconcile.notify_one();
    }

    /// What [`Self::request_reconcile`] wakes (held by the reconciler without the engine).
    pub(crate) fn reconcile_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.reconcile)
    }

    pub(super) fn is_watched(&self, key: &PublicKey) -> bool {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// `true` when `key` was not watched before.
    pub(super) fn watch(&self, key: PublicKey) -> bool {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key)
    }
}
