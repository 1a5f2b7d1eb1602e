//! Refunds of owed payments (docs/refunds.md).
//!
//! With a wallet seed, each owed payment is paid back by a send from its payee account to its
//! payer, exactly once: the send is built and signed, then **recorded** with the payment's move
//! to `refunding` (one transaction), and only then published. A crash after the record leaves
//! the payment `refunding` with the exact block; the next start publishes that same block again
//! (same hash: the ledger takes an identical block once) before any other block on the
//! account, and records `refunded` once it is confirmed. A payment that is not `owed` any more
//! is never refunded again.
//!
//! Without a seed (or for a payee the seed does not cover) the answer carries a `nano:` URI per
//! refund; the operator pays it from any wallet holding the payee account and reports the
//! block (`mark-refunded`), which is checked on the ledger before it is recorded.

use super::{Wallet, WalletError};
use crate::engine::{as_i64, unix_now, Engine};
use crate::error::ApiError;
use crate::store::refunds::Refund;
use crate::store::{PaymentQuery, PaymentRecord, PaymentState};
use nanogate_protocol::contract::refunds::{refund_uri, RefundRow, RefundsAnswer};
use nanogate_protocol::nano::{BlockHash, PublicKey, StateBlock};

/// Owed payments listed per store query when every owed payment is refunded.
const PAGE: i64 = 500;

fn row(p: &PaymentRecord, state: PaymentState, block: Option<String>) -> RefundRow {
    RefundRow {
        payment: p.hash().to_owned(),
        payer: p.payer.clone(),
        pay_to: p.pay_to.clone(),
        amount: p.amount.clone(),
        state: state.as_str().to_owned(),
        block,
        uri: None,
        error: None,
    }
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "refunds: store unavailable");
    ApiError::Unavailable("store".into())
}

impl Wallet {
    /// The payments a refund call names: `hashes`, or every owed payment when empty.
    async fn payments_to_refund(
        &self,
        engine: &Engine,
        hashes: &[String],
    ) -> Result<Vec<PaymentRecord>, ApiError> {
        let store = engine.store();
        let now = as_i64(unix_now());
        // Time-driven states as they are now: a window that just ended makes a payment owed.
        if let Err(e) = store.sweep(now, engine.config().redeem).await {
            tracing::debug!(error = %e, "sweep before refunding failed");
        }
        let mut out = Vec::new();
        if hashes.is_empty() {
            let mut after = None;
            loop {
                let page = store
                    .payments(&PaymentQuery {
                        state: Some(PaymentState::Owed),
                        after: after.clone(),
                        limit: PAGE,
                        ..PaymentQuery::default()
                    })
                    .await
                    .map_err(store_err)?;
                let full = page.len() == usize::try_from(PAGE).unwrap_or(usize::MAX);
                after = page.last().map(|p| (p.settled_at, p.spent_key.clone()));
                out.extend(page);
                if !full {
                    return Ok(out);
                }
            }
        }
        for h in hashes {
            let hash = BlockHash::from_hex(h.trim())
                .map_err(|_| ApiError::BadRequest(format!("{h} is not a block hash")))?;
            let key = format!("{}:{}", engine.config().network, hash.to_hex());
            let p = store
                .spent(&key)
                .await
                .map_err(store_err)?
                .ok_or_else(|| ApiError::NotFound(format!("no payment {}", hash.to_hex())))?;
            out.push(p);
        }
        Ok(out)
    }

    /// `POST /v1/admin/refunds`: refunds the named owed payments (all when none is named).
    pub async fn refund(
        &self,
        engine: &Engine,
        hashes: &[String],
    ) -> Result<RefundsAnswer, ApiError> {
        let payments = self.payments_to_refund(engine, hashes).await?;
        let _chain = self.chain.lock().await;
        if self.signing() {
            if let Err(e) = self.resume_refunds_locked(engine).await {
                tracing::warn!(error = %e, "could not resume recorded refunds");
            }
        }
        let mut rows = Vec::with_capacity(payments.len());
        for p in &payments {
            rows.push(self.refund_one_locked(engine, p).await?);
        }
        Ok(RefundsAnswer {
            signing: self.signing(),
            refunds: rows,
        })
    }

    async fn refund_one_locked(
        &self,
        engine: &Engine,
        p: &PaymentRecord,
    ) -> Result<RefundRow, ApiError> {
        let store = engine.store();
        // Re-read: the resume pass above may just have finished it.
        let p = store
            .spent(&p.spent_key)
            .await
            .map_err(store_err)?
            .unwrap_or_else(|| p.clone());
        let existing = store.refund(&p.spent_key).await.map_err(store_err)?;
        if p.state != PaymentState::Owed {
            let mut r = row(&p, p.state, existing.map(|r| r.block_hash));
            if !matches!(p.state, PaymentState::Refunding | PaymentState::Refunded) {
                r.error = Some(format!("the payment is {}, not owed", p.state.as_str()));
            }
            return Ok(r);
        }
        let (Ok(payer), Ok(payee), Ok(amount)) = (
            PublicKey::from_address(&p.payer),
            PublicKey::from_address(&p.pay_to),
            p.amount.parse::<u128>(),
        ) else {
            let mut r = row(&p, PaymentState::Owed, None);
            r.error = Some("the payment's payer, payee or amount is not recorded".into());
            return Ok(r);
        };
        let mut r = row(&p, PaymentState::Owed, None);
        if let Some(why) = self.cannot_sign(&payee) {
            r.uri = Some(refund_uri(&p.payer, &p.amount));
            if self.signing() {
                r.error = Some(why);
            }
            return Ok(r);
        }
        match self
            .send_refund_locked(engine, &p, payee, payer, amount)
            .await
        {
            Ok((state, block)) => {
                r.state = state.as_str().to_owned();
                r.block = Some(block);
            }
            Err((state, block, e)) => {
                tracing::warn!(payment = %p.hash(), error = %e, "refund not completed");
                r.state = state.as_str().to_owned();
                r.block = block;
                r.error = Some(e.to_string());
            }
        }
        Ok(r)
    }

    /// Builds, records, publishes and confirms one refund. On failure: the state the payment
    /// is left in, its recorded block if any, and why.
    async fn send_refund_locked(
        &self,
        engine: &Engine,
        p: &PaymentRecord,
        payee: PublicKey,
        payer: PublicKey,
        amount: u128,
    ) -> Result<(PaymentState, String), (PaymentState, Option<String>, WalletError)> {
        let owed = |e: WalletError| (PaymentState::Owed, None, e);
        let mut head = self.head(&payee).await.map_err(owed)?;
        if head.balance < amount {
            // What the payer sent may still be receivable: pocket the account first.
            self.pocket_account_locked(&payee).await.map_err(owed)?;
            head = self.head(&payee).await.map_err(owed)?;
        }
        if head.balance < amount {
            return Err(owed(WalletError::Refused(format!(
                "the payee account holds {} raw, less than the {amount} raw to refund",
                head.balance
            ))));
        }
        let threshold = self.settings.thresholds.send();
        let block = self
            .sign(&payee, head, head.balance - amount, payer.0, threshold)
            .await
            .map_err(owed)?;
        let hash = block.hash().to_hex();
        let intent = Refund {
            spent_key: p.spent_key.clone(),
            block_hash: hash.clone(),
            block: Some(block.to_json().to_string()),
            source: p.pay_to.clone(),
            destination: p.payer.clone(),
            amount: p.amount.clone(),
            created_at: as_i64(unix_now()),
            confirmed_at: None,
        };
        let store = engine.store();
        let recorded = store
            .begin_refund(&intent, as_i64(unix_now()))
            .await
            .map_err(|e| owed(e.into()))?;
        if !recorded {
            return Err(owed(WalletError::Refused(
                "the payment stopped being owed before its refund was recorded".into(),
            )));
        }
        self.metrics.refunds_signed.inc();
        tracing::info!(payment = %p.hash(), refund = %hash, amount = %p.amount,
            payer = %p.payer, "refund recorded; publishing");
        self.publish_recorded(engine, &p.spent_key, &block)
            .await
            .map(|state| (state, hash.clone()))
            .map_err(|e| (PaymentState::Refunding, Some(hash), e))
    }

    /// Publishes a recorded refund's block and records `refunded` once it is confirmed.
    /// `Refunding` when it is published but not confirmed within the wait (the background
    /// pass finishes it).
    async fn publish_recorded(
        &self,
        engine: &Engine,
        spent_key: &str,
        block: &StateBlock,
    ) -> Result<PaymentState, WalletError> {
        self.publish(block).await?;
        if !self.wait_confirmed(&block.hash()).await? {
            return Ok(PaymentState::Refunding);
        }
        engine
            .store()
            .finish_refund(spent_key, as_i64(unix_now()))
            .await?;
        tracing::info!(refund = %block.hash(), "refund confirmed");
        Ok(PaymentState::Refunded)
    }

    /// Publishes again every refund recorded but not confirmed (the very block recorded), and
    /// records those confirmed since. Returns how many were finished.
    pub async fn resume_refunds(&self, engine: &Engine) -> Result<usize, WalletError> {
        let _chain = self.chain.lock().await;
        self.resume_refunds_locked(engine).await
    }

    pub(crate) async fn resume_refunds_locked(
        &self,
        engine: &Engine,
    ) -> Result<usize, WalletError> {
        let mut finished = 0;
        for r in engine.store().refunds_in_flight().await? {
            let Some(text) = r.block.as_deref() else {
                continue;
            };
            let block = serde_json::from_str(text)
                .ok()
                .and_then(|v| StateBlock::from_json(&v).ok());
            let Some(block) = block else {
                tracing::error!(refund = %r.block_hash, "recorded refund block unreadable");
                continue;
            };
            match self.publish_recorded(engine, &r.spent_key, &block).await {
                Ok(PaymentState::Refunded) => finished += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    refund = %r.block_hash,
                    error = %e,
                    "recorded refund not published yet; kept for the next pass"
                ),
            }
        }
        if finished > 0 {
            tracing::info!(finished, "recorded refunds confirmed");
        }
        Ok(finished)
    }

    /// `POST /v1/admin/refunds/mark`: records that the operator's wallet refunded `payment`
    /// with the send `block`, after checking on the ledger that it is a confirmed send from the
    /// payment's payee to its payer of exactly the owed amount.
    pub async fn mark_refunded(
        &self,
        engine: &Engine,
        payment: &str,
        block: &str,
    ) -> Result<RefundRow, ApiError> {
        let store = engine.store();
        let payment = BlockHash::from_hex(payment.trim())
            .map_err(|_| ApiError::BadRequest("payment must be a block hash".into()))?;
        let block = BlockHash::from_hex(block.trim())
            .map_err(|_| ApiError::BadRequest("block must be a block hash".into()))?;
        let key = format!("{}:{}", engine.config().network, payment.to_hex());
        let p = store
            .spent(&key)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::NotFound(format!("no payment {}", payment.to_hex())))?;
        let existing = store.refund(&key).await.map_err(store_err)?;
        match (p.state, &existing) {
            (PaymentState::Owed, _) => {}
            (PaymentState::Refunded, Some(r)) if r.block_hash == block.to_hex() => {
                return Ok(row(&p, p.state, Some(r.block_hash.clone())));
            }
            (PaymentState::Refunded | PaymentState::Refunding, Some(r)) => {
                return Err(ApiError::Conflict(format!(
                    "the payment is already {} by block {}",
                    p.state.as_str(),
                    r.block_hash
                )))
            }
            (state, _) => {
                return Err(ApiError::Conflict(format!(
                    "the payment is {}, not owed",
                    state.as_str()
                )))
            }
        }
        if let Some(other) = store
            .refund_by_block(&block.to_hex())
            .await
            .map_err(store_err)?
        {
            let paid = other
                .spent_key
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            return Err(ApiError::Conflict(format!(
                "block {} already refunds payment {paid}",
                block.to_hex()
            )));
        }
        let info = self
            .node
            .block_info(&block)
            .await
            .map_err(|e| ApiError::Unavailable(format!("node: {e}")))?
            .ok_or_else(|| {
                ApiError::Refused(format!("block {} is not on the ledger", block.to_hex()))
            })?;
        if info.subtype.as_deref() != Some("send") {
            return Err(ApiError::Refused(format!(
                "block {} is a {}, not a send",
                block.to_hex(),
                info.subtype.as_deref().unwrap_or("legacy block")
            )));
        }
        if info.account.to_address() != p.pay_to {
            return Err(ApiError::Refused(format!(
                "block {} is sent from {}, not from the payee account {}",
                block.to_hex(),
                info.account.to_address(),
                p.pay_to
            )));
        }
        let destination = info.contents.as_ref().map(StateBlock::link_as_key);
        if destination.map(|d| d.to_address()).as_deref() != Some(p.payer.as_str()) {
            return Err(ApiError::Refused(format!(
                "block {} sends to {}, not to the payer {}",
                block.to_hex(),
                destination.map_or_else(|| "an unknown account".into(), |d| d.to_address()),
                p.payer
            )));
        }
        if info.amount.to_string() != p.amount {
            return Err(ApiError::Refused(format!(
                "block {} sends {} raw, the payment owed is {} raw",
                block.to_hex(),
                info.amount,
                p.amount
            )));
        }
        if !info.confirmed {
            return Err(ApiError::Refused(format!(
                "block {} is not confirmed yet: mark it again once it is",
                block.to_hex()
            )));
        }
        let refund = Refund {
            spent_key: key.clone(),
            block_hash: block.to_hex(),
            block: None,
            source: p.pay_to.clone(),
            destination: p.payer.clone(),
            amount: p.amount.clone(),
            created_at: as_i64(unix_now()),
            confirmed_at: None,
        };
        if !store
            .record_wallet_refund(&refund, as_i64(unix_now()))
            .await
            .map_err(store_err)?
        {
            return Err(ApiError::Conflict(
                "the payment stopped being owed, or the block already refunds another".into(),
            ));
        }
        tracing::info!(payment = %payment, refund = %block, "refund from the operator's wallet recorded");
        Ok(row(&p, PaymentState::Refunded, Some(block.to_hex())))
    }
}
