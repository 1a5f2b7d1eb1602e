//! Following pool and signed-block payee accounts: every confirmed send to one is judged once,
//! whether the WebSocket pushed it or the reconciler found it on the ledger.

use super::super::{as_i64, random_hex, unix_now, Engine};
use crate::node::ConfirmedBlock;
use crate::store::payments::{SIGNED_BLOCK, TAGGED};
use crate::store::tagged::TaggedSession;
use crate::store::{Consumption, PaymentState, StoreError};
use nanogate_protocol::nano::{BlockHash, PublicKey};
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    pub(crate) fn watch_pool(&self, key: PublicKey) {
        if self.tagged.watch(key) {
            self.ledger.watch_payee(&key);
            // A first pass over the new account sets its reconciliation cursor now.
            self.tagged.request_reconcile();
        }
    }

    /// Follows a signed-block payee account (at its first presentation, from the payment
    /// ledger, or from the facilitator's `pay_to` list): WebSocket confirmations and the
    /// reconciler's passes then cover it. `since`: sends first seen earlier are not ours to
    /// judge (used when the account gets its reconciliation cursor).
    pub(crate) fn watch_payee(&self, key: PublicKey, since: u64) {
        if self.tagged.know_payee(key, since) {
            self.ledger.watch_payee(&key);
            self.tagged.request_reconcile();
        }
    }

    /// Follows every signed-block payee the store and the configuration know (at start, and
    /// on each WebSocket resubscription: another replica may have learnt new ones).
    pub async fn rewatch_payees(&self) -> Result<usize, StoreError> {
        let now = unix_now();
        let mut n = 0;
        for key in self.cfg.pay_to_allow.clone() {
            self.watch_payee(key, now);
            n += 1;
        }
        for (address, since) in self.store.signed_block_payees(as_i64(now)).await? {
            if let Ok(k) = PublicKey::from_address(&address) {
                self.watch_payee(k, u64::try_from(since).unwrap_or(now).min(now));
                n += 1;
            }
        }
        Ok(n)
    }

    /// Watches the accounts of sessions still open, or expired within the retention (after a
    /// restart: a send made in time for one of them may still have to be caught up).
    pub async fn rewatch_open_sessions(&self) -> Result<usize, StoreError> {
        let since = unix_now().saturating_sub(self.tagged.settings.retention_secs);
        let accounts = self.store.open_session_accounts(as_i64(since)).await?;
        let mut n = 0;
        for a in accounts {
            if let Ok(k) = PublicKey::from_hex(&a) {
                self.watch_pool(k);
                n += 1;
            }
        }
        Ok(n)
    }

    /// A confirmation push: mark the matching session paid, or record a stray payment.
    /// `Some(hash)` asks the caller to re-check later whether it was a signed-block payment.
    /// A store error ends the judgement (logged).
    pub async fn on_confirmed_send(&self, cb: &ConfirmedBlock) -> Option<BlockHash> {
        let dest = cb.destination()?;
        let pool = self.tagged.is_watched(&dest);
        if !pool && !self.tagged.is_payee(&dest) {
            return None;
        }
        let hash = cb.hash.to_hex();
        let spent_key = format!("{}:{}", self.cfg.network, hash);
        // Our own signed-block broadcasts are claimed before they are published: never a
        // session's payment, never stray.
        if watcher_store(self.store.is_signed_block(&spent_key, &hash).await)? {
            return None;
        }
        if !pool {
            // A signed-block payee only: anything but our own payment is owed, judged after
            // the settle window (a presentation in flight claims its block first).
            return Some(cb.hash);
        }
        let found = self
            .store
            .session_by_amount(&dest.to_hex(), &cb.amount.to_string())
            .await;
        let Some(s) = watcher_store(found)? else {
            return Some(cb.hash);
        };
        if pays(&s, &hash) {
            return None;
        }
        let seen = first_seen(cb);
        let reason = match session_refusal(seen, &s) {
            Some(reason) => reason,
            None => self.mark_paid(cb, dest, &s, spent_key, seen).await?,
        };
        let stray = Self::stray(&cb.hash, &dest, cb.amount, &cb.account, reason, Some(&s.id));
        self.record_stray(stray).await;
        None
    }

    /// Marks the session paid by this send. Settled, not served yet: listed `redeemable` at
    /// once, so the send is accounted for even if its payer never presents it; its first
    /// presentation takes the row over (see `pay_tagged`). `None`: nothing more to do;
    /// `Some(reason)`: the send is stray.
    async fn mark_paid(
        &self,
        cb: &ConfirmedBlock,
        dest: PublicKey,
        s: &TaggedSession,
        spent_key: String,
        seen: u64,
    ) -> Option<&'static str> {
        let hash = cb.hash.to_hex();
        let paid = Consumption {
            spent_key,
            receipt: random_hex(),
            mechanism: TAGGED,
            payer: cb.account.to_address(),
            pay_to: dest.to_address(),
            amount: cb.amount,
            resource: s.scope.clone(),
            nonce: Some(s.id.clone()),
            now: as_i64(seen),
            state: PaymentState::Redeemable,
            lease_until: 0,
            admission_token: None,
        };
        if watcher_store(self.store.mark_session_paid(&paid, &s.id, &hash).await)? {
            tracing::debug!(session = %s.id, %hash, "session paid");
            return None;
        }
        // Another replica's watcher may have matched this very block.
        let same = matches!(self.store.session(&s.id).await, Ok(Some(ref now)) if pays(now, &hash));
        if same {
            None
        } else {
            Some("session_used")
        }
    }

    /// A send to a pool account that matched no session, or to a signed-block payee account:
    /// unless it was recorded meanwhile (or is a signed-block payment), it is owed
    /// (`unmatched`).
    async fn unmatched_later(&self, cb: &ConfirmedBlock) {
        let key = format!("{}:{}", self.cfg.network, cb.hash.to_hex());
        let known = match self.store.spent(&key).await {
            Ok(Some(_)) => Ok(true),
            Ok(None) => self.store.is_signed_block(&key, &cb.hash.to_hex()).await,
            Err(e) => Err(e),
        };
        match known {
            Ok(true) => {}
            Ok(false) => {
                if let Some(dest) = cb.destination() {
                    let s = Self::stray(&cb.hash, &dest, cb.amount, &cb.account, "unmatched", None);
                    // Listed under the mechanism the account serves.
                    let mechanism = if self.tagged.is_watched(&dest) {
                        TAGGED
                    } else {
                        SIGNED_BLOCK
                    };
                    self.record_unmatched(s, mechanism).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "watcher: store error"),
        }
    }
}

/// The one place a confirmed send to a pool or signed-block payee account is judged, whether
/// the WebSocket pushed it or the reconciler found it on the ledger
/// ([`crate::engine::reconcile`]): it marks the matching session paid or records a stray
/// payment; a send matching no session (and any send to a signed-block payee that is not our
/// payment) is judged after `settle_window` (it may be a signed-block payment still being
/// presented or recorded).
pub async fn handle_confirmed_send(
    engine: &Arc<Engine>,
    cb: ConfirmedBlock,
    settle_window: Duration,
) {
    if engine.on_confirmed_send(&cb).await.is_some() {
        let engine = Arc::downgrade(engine);
        tokio::spawn(async move {
            tokio::time::sleep(settle_window).await;
            if let Some(e) = engine.upgrade() {
                e.unmatched_later(&cb).await;
            }
        });
    }
}

/// Follows confirmations and hands sends to pool accounts to [`handle_confirmed_send`], until
/// the engine is dropped. A receiver that fell behind asks the reconciler to catch up.
pub fn spawn_watcher(
    engine: &Arc<Engine>,
    mut rx: tokio::sync::broadcast::Receiver<ConfirmedBlock>,
    settle_window: Duration,
) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        loop {
            let cb = match rx.recv().await {
                Ok(cb) => cb,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "watcher lagged behind confirmations; reconciling"
                    );
                    if let Some(engine) = weak.upgrade() {
                        engine.tagged.request_reconcile();
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(engine) = weak.upgrade() else {
                return;
            };
            handle_confirmed_send(&engine, cb, settle_window).await;
        }
    })
}

/// The watcher's store reads: an error is logged and ends the judgement (`None`).
fn watcher_store<T>(r: Result<T, StoreError>) -> Option<T> {
    r.map_err(|e| tracing::warn!(error = %e, "watcher: store error"))
        .ok()
}

/// Whether the session is already paid or consumed by the send `hash`.
fn pays(s: &TaggedSession, hash: &str) -> bool {
    s.consumed_hash.as_deref() == Some(hash) || s.paid_hash.as_deref() == Some(hash)
}

/// When the node first saw the send, not when we hear of it: a send caught up from the
/// ledger after a gap was still made in time if the node saw it in time.
fn first_seen(cb: &ConfirmedBlock) -> u64 {
    let now = unix_now();
    cb.local_timestamp
        .filter(|t| *t > 0)
        .unwrap_or(now)
        .min(now)
}

/// Why a send of exactly a session's amount, first seen at `seen`, cannot pay it (`None`: it
/// does).
fn session_refusal(seen: u64, s: &TaggedSession) -> Option<&'static str> {
    let seen = as_i64(seen);
    if seen < s.issued_at {
        Some("too_early")
    } else if s.valid_before <= seen {
        Some("late")
    } else if s.paid_hash.is_some() || s.consumed_hash.is_some() {
        Some("session_used")
    } else {
        None
    }
}
