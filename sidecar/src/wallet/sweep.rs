//! Sweeping: with a wallet seed and `wallet.treasury`, the pool accounts' balances are sent to
//! one treasury account (every `wallet.sweep_interval_secs`, off by default, and on
//! `POST /v1/admin/sweep`). What is still owed from an account stays in it, so its refunds can
//! be paid; an account with a refund recorded but not yet on the ledger is left alone (a block
//! built on its frontier now would fork that refund).

use super::{Wallet, WalletError};
use crate::engine::Engine;
use crate::store::{PaymentQuery, PaymentState};
use nanogate_protocol::contract::refunds::{SweepAnswer, SweepRow};
use nanogate_protocol::nano::PublicKey;
use std::sync::Arc;
use std::time::Duration;

impl Wallet {
    /// Raw owed from `account` (payments `owed` whose payee it is).
    async fn owed_from(&self, engine: &Engine, account: &PublicKey) -> Result<u128, WalletError> {
        let address = account.to_address();
        let mut total: u128 = 0;
        let mut after = None;
        loop {
            let page = engine
                .store()
                .payments(&PaymentQuery {
                    state: Some(PaymentState::Owed),
                    after: after.clone(),
                    limit: 500,
                    ..PaymentQuery::default()
                })
                .await?;
            for p in page.iter().filter(|p| p.pay_to == address) {
                total = total.saturating_add(p.amount.parse::<u128>().unwrap_or(0));
            }
            if page.len() < 500 {
                return Ok(total);
            }
            after = page.last().map(|p| (p.settled_at, p.spent_key.clone()));
        }
    }

    /// Pockets each pool account the sidecar holds the key of and sends its balance, less
    /// what it still owes, to `treasury`.
    pub async fn sweep(&self, engine: &Engine, treasury: PublicKey) -> SweepAnswer {
        let _chain = self.chain.lock().await;
        let mut answer = SweepAnswer::default();
        if let Err(e) = self.resume_refunds_locked(engine).await {
            answer
                .errors
                .push(format!("resuming recorded refunds: {e}"));
        }
        let mut pools = engine.pool_accounts();
        pools.sort_by_key(|a| a.0);
        pools.dedup();
        for account in pools.iter().filter(|a| self.holds(a) && **a != treasury) {
            match self.sweep_account_locked(engine, account, treasury).await {
                Ok(Some(row)) => answer.swept.push(row),
                Ok(None) => {}
                Err(e) => answer.errors.push(format!("{}: {e}", account.to_address())),
            }
        }
        answer
    }

    async fn sweep_account_locked(
        &self,
        engine: &Engine,
        account: &PublicKey,
        treasury: PublicKey,
    ) -> Result<Option<SweepRow>, WalletError> {
        let address = account.to_address();
        let in_flight = engine.store().refunds_in_flight().await?;
        if in_flight.iter().any(|r| r.source == address) {
            return Err(WalletError::Refused(
                "a refund from it is recorded but not confirmed yet; swept next time".into(),
            ));
        }
        self.pocket_account_locked(account).await?;
        let keep = self.owed_from(engine, account).await?;
        let head = self.head(account).await?;
        if head.balance <= keep {
            return Ok(None);
        }
        let amount = head.balance - keep;
        let threshold = self.settings.thresholds.send();
        let block = self
            .sign(account, head, keep, treasury.0, threshold)
            .await?;
        self.publish(&block).await?;
        tracing::info!(account = %address, amount = %amount, kept = %keep,
            block = %block.hash(), "pool account swept into the treasury");
        Ok(Some(SweepRow {
            account: address,
            block: block.hash().to_hex(),
            amount: amount.to_string(),
            kept: keep.to_string(),
        }))
    }
}

/// Sweeps every `interval` (the first sweep one interval after start).
pub fn spawn_sweeper(
    engine: Arc<Engine>,
    wallet: Arc<Wallet>,
    treasury: PublicKey,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let done = wallet.sweep(&engine, treasury).await;
            for e in &done.errors {
                tracing::warn!(error = %e, "sweeping pass");
            }
        }
    })
}
