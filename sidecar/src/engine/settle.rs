//! Upfront settlement: claim the payer's frontier in the fork set (atomic), `process`, await
//! confirmation (WebSocket push with polling fallback, plus a `block_confirm` nudge) until
//! `min(validBefore, arrival + max_wait)`, record the payment durably in the payment ledger
//! (atomic insert-if-absent on `network:HASH`, state `admitted` with a lease of the route's
//! upstream timeout + 5 s), and only then admit.
//!
//! Failure handling keeps invariant 1 (nothing unpaid passes), 5 (no payment is lost) and 10
//! (one payment, one response); the states are described in docs/payments.md:
//! - `process` says `Old` for a block we hold the claim on: our own earlier broadcast (or the
//!   client's), settled like a fresh one; without the claim we never get here.
//! - `process` says `Fork`, or the block disappears while we wait: `fork_lost`; nothing admitted.
//! - Not confirmed in time: `block_not_confirmed`. The fork-set entry stays until the challenge
//!   expires (plus a grace), so no other block on that frontier can be paid meanwhile, and the
//!   block is tracked in the background (a `pending_settlements` row, resumed after a restart)
//!   until it confirms, when it is recorded `redeemable`, or the redemption window ends. A
//!   re-presentation meanwhile takes the claim over and admits, once.
//! - Ledger or store unavailable mid-way: the `unavailable` verdict and the same lease release,
//!   so a re-presentation can finish the job.
//! - A payment presented again is redeemed only from `redeemable` (upstream 5xx, lease over
//!   without an outcome, or the admission never reached the filter), within
//!   `redeem_window_secs` of its settlement, whatever the challenge's `validBefore` says.

use super::mechanism::{Mode, Payment};
use super::verify::{expired_challenge, Checked, Verified};
use super::{as_i64, random_hex, Admission, Engine, PayContext, PaymentInput, Rejection, Verdict};
use crate::ledger::{Confirmation, Ledger, LedgerError, ProcessOutcome};
use crate::metrics::Metrics;
use crate::store::payments::{owed, SIGNED_BLOCK};
use crate::store::{
    Claim, Consumption, ForkEntry, OwedPayment, PaymentRecord, PaymentState, PendingSettlement,
    Store,
};
use nanogate_protocol::contract::Mechanism;
use nanogate_protocol::nano::{parse_raw, StateBlock};
use nanogate_protocol::x402::{ErrorReason, SettlementResponse};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Engine {
    /// Verifies and settles one payment (the facilitator's `/settle`, tests): arrived now,
    /// with the default upstream timeout.
    pub async fn pay(&self, input: &PaymentInput) -> Verdict {
        self.pay_with(input, PayContext::now()).await
    }

    /// Verifies and settles one payment (the filter's `/v1/pay`): the shared steps, then the
    /// payment's mechanism (see [`super::mechanism`]).
    pub async fn pay_with(&self, input: &PaymentInput, ctx: PayContext) -> Verdict {
        let _guard = self.inflight.enter();
        let started = Instant::now();
        let payment = match self.read_payment(input) {
            Ok(payment) => payment,
            Err(r) => return self.reject(r),
        };
        match self.mechanism(&payment, input.binding, Mode::Settle) {
            Ok(Mechanism::SignedBlock) => {
                self.pay_signed_block(input, &payment, started, &ctx).await
            }
            Ok(Mechanism::TaggedSession) => self.pay_tagged(input, &payment, started, &ctx).await,
            Err(r) => self.reject(r),
        }
    }

    async fn pay_signed_block(
        &self,
        input: &PaymentInput,
        payment: &Payment,
        started: Instant,
        ctx: &PayContext,
    ) -> Verdict {
        match self.check(input, payment, Mode::Settle, started).await {
            Err(verdict) => verdict,
            Ok(Verified::Spent(c, rec)) => self.represent(&c, &rec, ctx).await,
            Ok(Verified::Fresh(c)) => self.settle(&c, false, ctx).await,
            Ok(Verified::TakeOver(c)) => self.settle(&c, true, ctx).await,
            Ok(Verified::Late(c)) => self.late_presentation(&c, ctx).await,
        }
    }

    /// Verifies without changing any state (the facilitator's `/verify`): `Ok(payer)`.
    pub async fn verify_only(&self, input: &PaymentInput) -> Result<String, Verdict> {
        let started = Instant::now();
        let payment = self.read_payment(input).map_err(|r| self.reject(r))?;
        self.mechanism(&payment, input.binding, Mode::Probe)
            .map_err(|r| self.reject(r))?;
        match self.check(input, &payment, Mode::Probe, started).await? {
            Verified::Fresh(c) | Verified::TakeOver(c) => Ok(c.payer.to_address()),
            Verified::Spent(c, rec) => match self.redeem_refusal(&c, &rec, super::unix_now()) {
                None => Ok(c.payer.to_address()),
                Some(r) => Err(self.reject(r.with_payer(&c.payer))),
            },
            Verified::Late(c) => Err(self.reject(expired_challenge().with_payer(&c.payer))),
        }
    }

    /// Why a recorded payment may not be redeemed now (`None` = it may). A redemption must
    /// match the recorded payment (same challenge nonce, amount, payee and resource), so it
    /// never depends on the challenge key still being honoured.
    pub(crate) fn redeem_refusal(
        &self,
        c: &Checked,
        rec: &PaymentRecord,
        now: u64,
    ) -> Option<Rejection> {
        let now = as_i64(now);
        let policy = self.cfg.redeem;
        if rec.nonce != c.nonce || rec.receipt.is_none() {
            return Some(Rejection::new(
                ErrorReason::AlreadySpent,
                "this block was already consumed",
            ));
        }
        if rec.amount != c.amount.to_string() {
            return Some(Rejection::new(
                ErrorReason::AmountMismatch,
                "this payment was recorded for another amount",
            ));
        }
        // Rows migrated from before the ledger kept payee and resource have them empty.
        if !rec.pay_to.is_empty()
            && (rec.pay_to != c.pay_to.to_address() || rec.resource != c.resource)
        {
            return Some(Rejection::new(
                ErrorReason::ResourceMismatch,
                "this payment was recorded for another payee or resource",
            ));
        }
        match rec.state {
            PaymentState::Admitted if rec.lease_until > now => Some(Rejection::new(
                ErrorReason::DuplicateSettlement,
                "this payment was admitted and its request may still be in flight",
            )),
            PaymentState::Served => Some(Rejection::new(
                ErrorReason::AlreadySpent,
                "this payment already bought a response",
            )),
            PaymentState::Owed if rec.reason.as_deref() == Some(owed::REDEMPTIONS_EXHAUSTED) => {
                Some(Rejection::new(
                    ErrorReason::AlreadySpent,
                    "this payment was redeemed as often as allowed; it is listed for a refund",
                ))
            }
            PaymentState::Owed => Some(Rejection::new(
                ErrorReason::PaymentExpired,
                "this payment can no longer buy anything; it is listed for a refund",
            )),
            // redeemable (or admitted whose lease ended: the upstream never answered)
            _ if rec.settled_at.saturating_add(policy.window_secs) <= now => Some(Rejection::new(
                ErrorReason::PaymentExpired,
                "the redemption window after settlement has passed; the payment is listed \
                     for a refund",
            )),
            _ if rec.redemptions >= policy.max_redemptions => Some(Rejection::new(
                ErrorReason::AlreadySpent,
                "this payment was redeemed as often as allowed",
            )),
            _ => None,
        }
    }

    /// A recorded payment presented again: redeem it if it is redeemable.
    pub(crate) async fn represent(
        &self,
        c: &Checked,
        rec: &PaymentRecord,
        ctx: &PayContext,
    ) -> Verdict {
        let now = super::unix_now();
        if let Some(r) = self.redeem_refusal(c, rec, now) {
            return self.reject(r.with_payer(&c.payer));
        }
        let Some(receipt) = rec.receipt.as_deref() else {
            return self.reject(
                Rejection::new(ErrorReason::AlreadySpent, "this block was already consumed")
                    .with_payer(&c.payer),
            );
        };
        // A facilitator redemption is final at once: no outcome, so no token.
        let token = (!c.final_on_consume).then(super::new_admission_token);
        let t = Instant::now();
        let redeemed = self
            .store
            .redeem_with_token(
                receipt,
                self.cfg.redeem,
                as_i64(now),
                ctx.lease_until(now),
                token.as_ref().map(|(_, hash)| hash.as_str()),
            )
            .await;
        self.metrics.store_op("redeem", t.elapsed());
        match redeemed {
            Err(e) => self.store_failed(&e),
            Ok(false) => self.reject(
                Rejection::new(
                    ErrorReason::DuplicateSettlement,
                    "this payment is being redeemed concurrently",
                )
                .with_payer(&c.payer),
            ),
            Ok(true) => {
                self.metrics.payments_redeemed.inc();
                tracing::debug!(%receipt, "redeemable payment redeemed");
                // A facilitator settlement has no outcome report: final at once.
                if c.final_on_consume {
                    if let Err(e) = self
                        .store
                        .record_outcome(receipt, 200, as_i64(now), self.cfg.redeem)
                        .await
                    {
                        tracing::warn!(error = %e, "could not finalize a facilitator redemption");
                    }
                }
                self.admit(c, receipt.to_owned(), true, token.map(|(t, _)| t))
            }
        }
    }

    /// An expired challenge whose block has neither a payment row nor a claim: if the block
    /// confirmed on the ledger (after the wait, with no tracker running), it paid in time and
    /// is recorded and admitted within the window, else recorded owed.
    async fn late_presentation(&self, c: &Checked, ctx: &PayContext) -> Verdict {
        let expired = |m: &str| {
            Rejection::new(ErrorReason::ChallengeExpired, m.to_owned()).with_payer(&c.payer)
        };
        let facts = match self.ledger.send_facts(&c.hash).await {
            Ok(Some(f)) => f,
            Ok(None) | Err(LedgerError::Node(_)) => {
                return self.reject(expired_challenge().with_payer(&c.payer))
            }
            Err(e) => return self.ledger_failed(&e),
        };
        if facts.subtype.as_deref() != Some("send")
            || facts.destination != Some(c.pay_to)
            || facts.account != c.payer
        {
            return self.reject(expired_challenge().with_payer(&c.payer));
        }
        let now = super::unix_now();
        if !facts.confirmed {
            // On the ledger, unconfirmed, and nobody tracks it (e.g. a restart lost the row):
            // track it, so that it is recorded when it confirms.
            self.track_pending(c).await;
            return self.reject(
                Rejection::new(
                    ErrorReason::BlockNotConfirmed,
                    "the block is not confirmed yet; present the same payment again later",
                )
                .with_payer(&c.payer),
            );
        }
        let window = u64::try_from(self.cfg.redeem.window_secs).unwrap_or(0);
        let seen = facts.local_timestamp;
        let in_time = seen > 0 && seen < c.valid_before.saturating_add(self.cfg.fork_grace_secs);
        let in_window = seen > 0 && seen.saturating_add(window) > now;
        let reason = if facts.amount != c.amount {
            Some("wrong_amount")
        } else if !in_time {
            Some(owed::LATE)
        } else if !in_window {
            Some(owed::REDEEM_WINDOW_PASSED)
        } else {
            None
        };
        if let Some(reason) = reason {
            let o = OwedPayment {
                spent_key: c.spent_key.clone(),
                mechanism: SIGNED_BLOCK,
                payer: c.payer.to_address(),
                pay_to: c.pay_to.to_address(),
                amount: facts.amount.to_string(),
                resource: c.resource.clone(),
                nonce: c.nonce.clone(),
                reason: reason.to_owned(),
                now: as_i64(now),
            };
            if let Err(e) = self.store.record_owed(&o).await {
                return self.store_failed(&e);
            }
            tracing::info!(hash = %c.hash, reason, "late payment recorded as owed");
            return self.reject(expired(
                "the challenge has expired and the payment cannot buy anything now; it is \
                 listed for a refund",
            ));
        }
        tracing::info!(hash = %c.hash, "payment confirmed after the wait, recorded on presentation");
        self.consume(c, Instant::now(), ctx).await
    }

    pub(crate) fn admit(
        &self,
        c: &Checked,
        receipt: String,
        redeemed: bool,
        admission_token: Option<String>,
    ) -> Verdict {
        let payer = c.payer.to_address();
        Verdict::Admit(Box::new(Admission {
            receipt,
            transaction: c.hash,
            settlement: SettlementResponse::success(
                c.hash.to_hex(),
                self.cfg.network.clone(),
                Some(payer.clone()),
            ),
            payer,
            redeemed,
            admission_token,
        }))
    }

    async fn settle(&self, c: &Checked, takeover: bool, ctx: &PayContext) -> Verdict {
        let started = Instant::now();
        let now = super::unix_now();
        // A fresh payment settles within its challenge's validity; a takeover may finish a
        // block claimed in time until the claim itself expires (validBefore + grace). Either
        // way the wait is measured from the request's arrival: the checks before it count.
        let end = if takeover {
            c.valid_before.saturating_add(self.cfg.fork_grace_secs)
        } else {
            c.valid_before
        };
        let by_challenge = Instant::now() + Duration::from_secs(end.saturating_sub(now));
        let deadline = by_challenge.min(ctx.arrived + self.cfg.max_wait);
        let wait = deadline.saturating_duration_since(Instant::now());
        let owner = self.next_owner();
        let claim = ForkEntry {
            frontier_key: c.frontier_key.clone(),
            block_hash: c.hash.to_hex(),
            nonce: c.nonce.clone(),
            owner: owner.clone(),
            // The lease outlives our wait by a little, so a crash frees it soon after.
            lease_until: as_i64(now.saturating_add(wait.as_secs()).saturating_add(2)),
            expires_at: as_i64(c.valid_before.saturating_add(self.cfg.fork_grace_secs)),
            terms: Some(c.terms()),
        };

        // 12–13. nonce binding (a fresh payment; a takeover's nonce is bound already) and
        // fork-set claim: one transaction, the first durable write.
        let bind = if takeover { None } else { self.nonce_bind(c) };
        let t = Instant::now();
        let claimed = self.store.claim(bind.as_ref(), &claim, as_i64(now)).await;
        self.metrics.store_op("claim", t.elapsed());
        match claimed {
            Err(e) => return self.store_failed(&e),
            // From its first presentation on, every send to the payee is accounted for.
            Ok(Claim::Claimed) => self.watch_payee(c.pay_to, now),
            Ok(Claim::NonceTaken) => return self.nonce_taken(c),
            Ok(Claim::FrontierTaken) => {
                let entry = self.store.fork_entry(&c.frontier_key, as_i64(now)).await;
                let same = matches!(&entry, Ok(Some(e)) if e.block_hash == claim.block_hash);
                let r = if same {
                    Rejection::new(
                        ErrorReason::DuplicateSettlement,
                        "this payment is being settled right now",
                    )
                } else {
                    Rejection::new(
                        ErrorReason::DuplicateFrontier,
                        "another payment on this frontier is in flight",
                    )
                };
                return self.reject(r.with_payer(&c.payer));
            }
        }
        tracing::debug!(hash = %c.hash, takeover, "frontier claimed; publishing");

        let verdict = self.publish_and_confirm(c, deadline).await;
        let verdict = match verdict {
            Ok(()) => self.consume(c, started, ctx).await,
            Err(v) => {
                if v.reason() == Some(ErrorReason::BlockNotConfirmed) {
                    self.track_pending(c).await;
                }
                v
            }
        };
        if !matches!(verdict, Verdict::Admit(_)) {
            let t = Instant::now();
            if let Err(e) = self
                .store
                .fork_release(&c.frontier_key, &owner, as_i64(super::unix_now()))
                .await
            {
                tracing::warn!(error = %e, "could not release a fork-set lease; it ends by itself");
            }
            self.metrics.store_op("fork_release", t.elapsed());
        }
        verdict
    }

    /// `process`, nudge, and wait for confirmation. `Err` is the final verdict.
    async fn publish_and_confirm(&self, c: &Checked, deadline: Instant) -> Result<(), Verdict> {
        let t = Instant::now();
        match self.ledger.process(&c.block).await {
            Ok(ProcessOutcome::Processed) | Ok(ProcessOutcome::Old) => {}
            Ok(ProcessOutcome::Fork) => {
                return Err(self.reject(
                    Rejection::new(
                        ErrorReason::ForkLost,
                        "another block on the same frontier is on the ledger",
                    )
                    .with_payer(&c.payer),
                ))
            }
            Ok(ProcessOutcome::GapPrevious) => {
                return Err(self.reject(
                    Rejection::new(
                        ErrorReason::StaleFrontier,
                        "the node does not know the block's previous",
                    )
                    .with_payer(&c.payer),
                ))
            }
            Ok(ProcessOutcome::Rejected(why)) => {
                return Err(self.reject(
                    Rejection::new(
                        ErrorReason::BroadcastFailed,
                        format!("the node refused the block: {why}"),
                    )
                    .with_payer(&c.payer),
                ))
            }
            Err(e) => return Err(self.ledger_failed(&e)),
        }
        // Nudge an election; the confirmation tracker also polls, so a failure is harmless.
        let ledger = self.ledger.clone();
        let hash = c.hash;
        tokio::spawn(async move {
            if let Err(e) = ledger.nudge(&hash).await {
                tracing::debug!(error = %e, "block_confirm nudge failed");
            }
        });
        match self.ledger.wait_confirmed(&c.block, deadline).await {
            Ok(Confirmation::Confirmed) => {
                self.metrics
                    .confirmation_seconds
                    .observe(t.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Confirmation::Missing) => Err(self.reject(
                Rejection::new(
                    ErrorReason::ForkLost,
                    "the block is no longer on the ledger (a conflicting block won)",
                )
                .with_payer(&c.payer),
            )),
            Ok(Confirmation::TimedOut) => Err(self.reject(
                Rejection::new(
                    ErrorReason::BlockNotConfirmed,
                    "the block was not confirmed in time; present the same payment again \
                     (it stays redeemable for a while after it confirms)",
                )
                .with_payer(&c.payer),
            )),
            Err(e) => Err(self.ledger_failed(&e)),
        }
    }

    /// Records the payment durably (`admitted`, with the request's lease; facilitator
    /// settlements `served` at once), then admits.
    async fn consume(&self, c: &Checked, started: Instant, ctx: &PayContext) -> Verdict {
        let receipt = random_hex();
        let token = (!c.final_on_consume).then(super::new_admission_token);
        let now = super::unix_now();
        let t = Instant::now();
        let consumed = self
            .store
            .consume(&Consumption {
                spent_key: c.spent_key.clone(),
                receipt: receipt.clone(),
                mechanism: SIGNED_BLOCK,
                payer: c.payer.to_address(),
                pay_to: c.pay_to.to_address(),
                amount: c.amount,
                resource: c.resource.clone(),
                nonce: c.nonce.clone(),
                now: as_i64(now),
                state: if c.final_on_consume {
                    PaymentState::Served
                } else {
                    PaymentState::Admitted
                },
                lease_until: ctx.lease_until(now),
                admission_token: token.as_ref().map(|(_, hash)| hash.clone()),
            })
            .await;
        self.metrics.store_op("consume", t.elapsed());
        match consumed {
            Err(e) => self.store_failed(&e),
            // Recorded meanwhile (the background tracker saw the confirmation first, or
            // another replica): the re-presentation rules decide.
            Ok(false) => match self.store.spent(&c.spent_key).await {
                Ok(Some(rec)) => self.represent(c, &rec, ctx).await,
                Ok(None) => self.reject(
                    Rejection::new(ErrorReason::AlreadySpent, "this block was already consumed")
                        .with_payer(&c.payer),
                ),
                Err(e) => self.store_failed(&e),
            },
            Ok(true) => {
                self.metrics.payments_settled.inc();
                self.metrics
                    .settlement_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(hash = %c.hash, "payment settled and recorded");
                self.admit(c, receipt, false, token.map(|(t, _)| t))
            }
        }
    }

    /// Keeps tracking a broadcast block that did not confirm within the wait (durably, so a
    /// restarted sidecar resumes): see [`track_confirmation`].
    pub(crate) async fn track_pending(&self, c: &Checked) {
        let now = super::unix_now();
        let window = u64::try_from(self.cfg.redeem.window_secs).unwrap_or(0);
        let p = PendingSettlement {
            spent_key: c.spent_key.clone(),
            block: c.block.to_json().to_string(),
            payer: c.payer.to_address(),
            pay_to: c.pay_to.to_address(),
            amount: c.amount.to_string(),
            resource: c.resource.clone(),
            nonce: c.nonce.clone(),
            track_until: as_i64(now.saturating_add(window)),
        };
        if let Err(e) = self.store.add_pending(&p).await {
            tracing::warn!(error = %e, hash = %c.hash, "could not record a pending settlement");
        }
        self.spawn_tracker(p);
    }

    fn spawn_tracker(&self, p: PendingSettlement) {
        tokio::spawn(track_confirmation(
            self.store.clone(),
            self.ledger.clone(),
            self.metrics.clone(),
            p,
        ));
    }

    /// Resumes tracking the blocks a previous run left pending (call once at start).
    pub async fn resume_pending(&self) -> Result<usize, crate::store::StoreError> {
        let pending = self.store.pending(as_i64(super::unix_now())).await?;
        let n = pending.len();
        for p in pending {
            self.spawn_tracker(p);
        }
        Ok(n)
    }
}

/// Follows one pending block until it confirms (recorded `redeemable`: it paid in time, the
/// payer only has to come back), disappears (a fork won: no money moved, nothing recorded) or
/// `track_until` passes (never confirmed within the window: nothing recorded; a later
/// presentation of a confirmed block is judged by `late_presentation`).
async fn track_confirmation(
    store: Arc<dyn Store>,
    ledger: Arc<dyn Ledger>,
    metrics: Arc<Metrics>,
    p: PendingSettlement,
) {
    let block = serde_json::from_str(&p.block)
        .ok()
        .and_then(|v| StateBlock::from_json(&v).ok());
    let (Some(block), Ok(amount)) = (block, parse_raw(&p.amount)) else {
        tracing::warn!(key = %p.spent_key, "unreadable pending settlement dropped");
        let _ = store.remove_pending(&p.spent_key).await;
        return;
    };
    loop {
        let now = as_i64(super::unix_now());
        if now >= p.track_until {
            tracing::info!(key = %p.spent_key, "pending block never confirmed within the window");
            let _ = store.remove_pending(&p.spent_key).await;
            return;
        }
        let slice = Duration::from_secs(u64::try_from(p.track_until - now).unwrap_or(1).min(60));
        match ledger.wait_confirmed(&block, Instant::now() + slice).await {
            Ok(Confirmation::Confirmed) => break,
            Ok(Confirmation::Missing) => {
                tracing::info!(key = %p.spent_key, "pending block lost to a fork");
                let _ = store.remove_pending(&p.spent_key).await;
                return;
            }
            Ok(Confirmation::TimedOut) => {}
            Err(e) => {
                tracing::debug!(error = %e, "tracking a pending block: ledger error");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
    let c = Consumption {
        spent_key: p.spent_key.clone(),
        receipt: random_hex(),
        mechanism: SIGNED_BLOCK,
        payer: p.payer.clone(),
        pay_to: p.pay_to.clone(),
        amount,
        resource: p.resource.clone(),
        nonce: p.nonce.clone(),
        now: as_i64(super::unix_now()),
        state: PaymentState::Redeemable,
        lease_until: 0,
        admission_token: None,
    };
    // Until it is recorded, the row keeps it tracked (a restart retries).
    match store.consume(&c).await {
        Ok(recorded) => {
            if recorded {
                metrics.payments_settled.inc();
                tracing::info!(key = %p.spent_key, "late confirmation recorded redeemable");
            }
            let _ = store.remove_pending(&p.spent_key).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, key = %p.spent_key, "could not record a late confirmation; a restart retries")
        }
    }
}
