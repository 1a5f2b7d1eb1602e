//! Sends to our accounts that bought nothing: recorded `owed` once per block, counted, listed.

use super::super::{as_i64, unix_now, Engine};
use crate::store::payments::TAGGED;
use crate::store::tagged::StrayPayment;
use crate::store::OwedPayment;
use nanogate_protocol::nano::{BlockHash, PublicKey};

impl Engine {
    /// Records a stray payment as `owed` (once per block) and counts it.
    pub async fn record_stray(&self, s: StrayPayment) {
        self.record_unmatched(s, TAGGED).await;
    }

    /// Records a send to one of our accounts that bought nothing as `owed` under `mechanism`
    /// (once per block), unless it is a signed-block payment of ours, and counts it.
    pub(super) async fn record_unmatched(&self, s: StrayPayment, mechanism: &'static str) {
        let reason = s.reason.clone();
        let spent_key = format!("{}:{}", self.cfg.network, s.hash);
        // A signed-block payment is accounted for by its own row (or claim): never stray.
        match self.store.is_signed_block(&spent_key, &s.hash).await {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not check a stray payment");
                return;
            }
        }
        let o = OwedPayment {
            spent_key,
            mechanism,
            payer: s.payer.clone(),
            pay_to: s.pay_to.clone(),
            amount: s.amount.clone(),
            resource: String::new(),
            nonce: s.session_id.clone(),
            reason: s.reason.clone(),
            now: s.seen_at,
        };
        match self.store.record_owed(&o).await {
            Ok(true) => {
                self.metrics
                    .stray_payments
                    .get_or_create(&crate::metrics::ReasonLabel { reason })
                    .inc();
                tracing::info!(hash = %s.hash, reason = %s.reason, "stray payment recorded");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not record a stray payment"),
        }
    }

    /// Records a presented block as stray when the ledger shows it is a send to `pay_to` (a
    /// block that pays someone else is none of our business).
    pub(super) async fn report_presented_stray(
        &self,
        hash: &BlockHash,
        pay_to: &PublicKey,
        reason: &str,
        session: &str,
    ) {
        if let Ok(Some(f)) = self.ledger.send_facts(hash).await {
            if f.destination == Some(*pay_to) {
                let s = Self::stray(hash, pay_to, f.amount, &f.account, reason, Some(session));
                self.record_stray(s).await;
            }
        }
    }

    pub(super) fn stray(
        hash: &BlockHash,
        pay_to: &PublicKey,
        amount: u128,
        payer: &PublicKey,
        reason: &str,
        session: Option<&str>,
    ) -> StrayPayment {
        StrayPayment {
            hash: hash.to_hex(),
            pay_to: pay_to.to_address(),
            amount: amount.to_string(),
            payer: payer.to_address(),
            reason: reason.to_owned(),
            session_id: session.map(str::to_owned),
            seen_at: as_i64(unix_now()),
        }
    }
}
