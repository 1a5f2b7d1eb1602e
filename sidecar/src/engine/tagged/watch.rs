//! Following pool and signed-block payee accounts: every confirmed send to one is judged once,
//! whether the WebSocket pushed it or the reconciler found it on the ledger.

use super::super::{as_i64, random_hex, unix_now, Engine};
use crate::node::ConfirmedBlock;
use crate::store::payments::{SIGNED_BLOCK, TAGGED};
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
    pub async fn on_confirmed_send(&self, cb: &ConfirmedBlock) -> Option<BlockHash> {
        let dest = cb.destination()?;
        let pool = self.tagged.is_watched(&dest);
        if !pool && !self.tagged.is_payee(&dest) {
            return None;
        }
        let now = unix_now();
        let hash = cb.hash.to_hex();
        let spent_key = format!("{}:{}", self.cfg.network, hash);
        // Our own signed-block broadcasts are claimed before they are published: never a
        // session's payment, never stray.
        match self.store.is_signed_block(&spent_key, &hash).await {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watcher: store error");
                return None;
            }
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
        let s = match found {
            Err(e) => {
                tracing::warn!(error = %e, "watcher: store error");
                return None;
            }
            Ok(None) => return Some(cb.hash),
            Ok(Some(s)) => s,
        };
        if s.consumed_hash.as_deref() == Some(hash.as_str())
            || s.paid_hash.as_deref() == Some(hash.as_str())
        {
            return None;
        }
        // Judged by when the node first saw the send, not when we hear of it: a send caught up
        // from the ledger after a gap was still made in time if the node saw it in time.
        let first_seen = cb
            .local_timestamp
            .filter(|t| *t > 0)
            .unwrap_or(now)
            .min(now);
        let reason = if as_i64(first_seen) < s.issued_at {
            "too_early"
        } else if s.valid_before <= as_i64(first_seen) {
            "late"
        } else if s.paid_hash.is_some() || s.consumed_hash.is_some() {
            "session_used"
        } else {
            // Settled, not served yet: listed `redeemable` at once, so the send is accounted
            // for even if its payer never presents it; its first presentation takes the row
            // over (see `pay_tagged`).
            let paid = Consumption {
                spent_key: spent_key.clone(),
                receipt: random_hex(),
                mechanism: TAGGED,
                payer: cb.account.to_address(),
                pay_to: dest.to_address(),
                amount: cb.amount,
                resource: s.scope.clone(),
                nonce: Some(s.id.clone()),
                now: as_i64(first_seen),
                state: PaymentState::Redeemable,
                lease_until: 0,
            };
            match self.store.mark_session_paid(&paid, &s.id, &hash).await {
                Ok(true) => {
                    tracing::debug!(session = %s.id, %hash, "session paid");
                    return None;
                }
                Ok(false) => {
                    // Another replica's watcher may have matched this very block.
                    let same = matches!(
                        self.store.session(&s.id).await,
                        Ok(Some(ref now)) if now.paid_hash.as_deref() == Some(hash.as_str())
                            || now.consumed_hash.as_deref() == Some(hash.as_str())
                    );
                    if same {
                        return None;
                    }
                    "session_used"
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watcher: store error");
                    return None;
                }
            }
        };
        let stray = Self::stray(&cb.hash, &dest, cb.amount, &cb.account, reason, Some(&s.id));
        self.record_stray(stray).await;
        None
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

/// The one place a confirmed send to a pool or signed-block payee account is judged, whether the WebSocket pushed
/// it or the reconciler found it on the ledger ([`crate::engine::reconcile`]): it marks the matching
/// session paid or records a stray payment; a send matching no session (and any send to a
/// signed-block payee that is not our payment) is judged after `settle_window` (it may be a
/// signed-block payment still being presented or recorded).
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
