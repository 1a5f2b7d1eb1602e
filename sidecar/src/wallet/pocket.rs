//! Pocketing: a Nano send stays *receivable* until the destination account publishes a
//! receive block for it. With a wallet seed the sidecar publishes those receive blocks for its
//! payee and pool accounts (on a schedule, `wallet.pocket_interval_secs`, and on
//! `POST /v1/admin/pocket`); without one it reports the receivable total per account
//! (`GET /v1/admin/receivable`, metric `nanogate_receivable_raw`).

use super::{Head, Wallet, WalletError};
use crate::engine::Engine;
use crate::metrics::AccountLabel;
use nanogate_protocol::contract::refunds::{PocketAnswer, PocketRow, ReceivableRow};
use nanogate_protocol::nano::work::BlockKind;
use nanogate_protocol::nano::{BlockHash, PublicKey};
use std::sync::Arc;
use std::time::Duration;

/// At most this many receivable sends are read per account and pass.
const PER_PASS: u64 = 1000;

impl Wallet {
    /// Confirmed receivable sends of `account`, with their amounts.
    async fn receivable_sends(
        &self,
        account: &PublicKey,
    ) -> Result<Vec<(BlockHash, u128)>, WalletError> {
        let mut out = Vec::new();
        for hash in self.node.receivable(account, PER_PASS).await? {
            if let Some(info) = self.node.block_info(&hash).await? {
                out.push((hash, info.amount));
            }
        }
        Ok(out)
    }

    fn set_receivable_metric(&self, account: &PublicKey, raw: u128) {
        // Precision loss above 2^53 raw is acceptable for a gauge; the admin API is exact.
        #[allow(clippy::cast_precision_loss)]
        self.metrics
            .receivable_raw
            .get_or_create(&AccountLabel {
                account: account.to_address(),
            })
            .set(raw as f64);
    }

    /// The receivable total of each account (refreshing the metric). Accounts the node could
    /// not answer for are left out and logged.
    pub async fn receivable(&self, accounts: &[PublicKey]) -> Vec<ReceivableRow> {
        let mut rows = Vec::with_capacity(accounts.len());
        for account in accounts {
            match self.receivable_sends(account).await {
                Ok(sends) => {
                    let total: u128 = sends.iter().map(|(_, a)| *a).sum();
                    self.set_receivable_metric(account, total);
                    rows.push(ReceivableRow {
                        account: account.to_address(),
                        receivable: total.to_string(),
                        count: sends.len() as u64,
                        pocketed_here: self.holds(account),
                    });
                }
                Err(e) => tracing::warn!(
                    account = %account.to_address(),
                    error = %e,
                    "could not read the account's receivable sends"
                ),
            }
        }
        rows
    }

    /// Publishes a receive block for every receivable send of the `accounts` whose key the
    /// sidecar holds. Refunds recorded but not yet published go first (they were built on
    /// the chains as they were).
    pub async fn pocket(&self, engine: &Engine, accounts: &[PublicKey]) -> PocketAnswer {
        let _chain = self.chain.lock().await;
        let mut answer = PocketAnswer::default();
        if let Err(e) = self.resume_refunds_locked(engine).await {
            answer
                .errors
                .push(format!("resuming recorded refunds: {e}"));
        }
        for account in accounts.iter().filter(|a| self.holds(a)) {
            match self.pocket_account_locked(account).await {
                Ok(rows) => answer.received.extend(rows),
                Err(e) => answer.errors.push(format!("{}: {e}", account.to_address())),
            }
        }
        answer
    }

    /// Receives every receivable send of one account (the chain lock held).
    pub(crate) async fn pocket_account_locked(
        &self,
        account: &PublicKey,
    ) -> Result<Vec<PocketRow>, WalletError> {
        let sends = self.receivable_sends(account).await?;
        let mut rows = Vec::with_capacity(sends.len());
        for (send, amount) in sends {
            let head: Head = self.head(account).await?;
            let balance = head
                .balance
                .checked_add(amount)
                .ok_or_else(|| WalletError::Refused("balance would overflow".into()))?;
            // Enough whatever the account's epoch (an account still at epoch 1, or a ledger
            // without epoch v2 blocks, takes the epoch 1 threshold for receives too).
            let t = self.settings.thresholds;
            let threshold = t
                .for_kind(BlockKind::Receive, true)
                .max(t.for_kind(BlockKind::Receive, false));
            let block = self.sign(account, head, balance, send.0, threshold).await?;
            self.publish(&block).await?;
            self.metrics.receives_published.inc();
            tracing::info!(
                account = %account.to_address(),
                send = %send,
                receive = %block.hash(),
                amount = %amount,
                "pocketed a receivable send"
            );
            rows.push(PocketRow {
                account: account.to_address(),
                send: send.to_hex(),
                block: block.hash().to_hex(),
                amount: amount.to_string(),
            });
        }
        self.set_receivable_metric(account, 0);
        Ok(rows)
    }
}

/// The accounts pocketing and the receivable report cover: every payee and pool account the
/// sidecar follows.
pub fn followed_accounts(engine: &Engine) -> Vec<PublicKey> {
    let mut accounts = engine.followed_accounts();
    accounts.sort_by_key(|a| a.0);
    accounts.dedup();
    accounts
}

/// Every `interval`: finishes recorded refunds, then pockets (with a seed) or refreshes the
/// receivable report (without). The first pass runs at start whatever the interval, so a
/// restart publishes the refunds a crash interrupted; with `interval` zero that first pass
/// only resumes refunds (pocketing waits for `POST /v1/admin/pocket`).
pub fn spawn_pocketer(
    engine: Arc<Engine>,
    wallet: Arc<Wallet>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if wallet.signing() && interval.is_zero() {
                if let Err(e) = wallet.resume_refunds(&engine).await {
                    tracing::warn!(error = %e, "could not resume recorded refunds");
                }
            } else if wallet.signing() {
                let accounts = followed_accounts(&engine);
                let done = wallet.pocket(&engine, &accounts).await;
                for e in &done.errors {
                    tracing::warn!(error = %e, "pocketing pass");
                }
            } else if !interval.is_zero() {
                wallet.receivable(&followed_accounts(&engine)).await;
            }
            if interval.is_zero() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    })
}
