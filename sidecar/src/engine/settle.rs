//! Upfront settlement: claim the payer's frontier in the fork set (atomic), `process`, await
//! confirmation (WebSocket push with polling fallback, plus a `block_confirm` nudge) until
//! `min(validBefore, now + max_wait)`, record the consumption durably (atomic insert-if-absent
//! on `network:HASH`), and only then admit.
//!
//! Failure handling keeps invariant 1 (nothing unpaid passes) and invariant 5 (no payment is
//! lost):
//! - `process` says `Old` for a block we hold the claim on: our own earlier broadcast (or the
//!   client's), settled like a fresh one; without the claim we never get here.
//! - `process` says `Fork`, or the block disappears while we wait: `fork_lost`; nothing admitted.
//! - Not confirmed in time: `block_not_confirmed`. The fork-set entry stays until the challenge
//!   expires (plus a grace), so no other block on that frontier can be paid meanwhile, but our
//!   lease ends: if the block confirms later, re-presenting the same payment under the same
//!   challenge takes the claim over, skips the ledger checks that already passed, sees the
//!   confirmation and admits, once.
//! - Ledger or store unavailable mid-way: the `unavailable` verdict and the same lease release,
//!   so a re-presentation can finish the job.

use super::verify::{Checked, Mode, Verified};
use super::{as_i64, random_hex, Admission, Engine, PaymentInput, Rejection, Verdict};
use crate::ledger::{Confirmation, ProcessOutcome};
use crate::store::{Consumption, ForkEntry, SpentRecord};
use nanogate_protocol::x402::{ErrorReason, SettlementResponse};
use std::time::{Duration, Instant};

impl Engine {
    /// Verifies and settles one payment (the filter's `/v1/pay`, the facilitator's `/settle`).
    pub async fn pay(&self, input: &PaymentInput) -> Verdict {
        let _guard = self.inflight.enter();
        if input.binding == super::BindingPolicy::Required
            && super::tagged::is_client_broadcast(&input.payment)
        {
            return self.pay_tagged(input).await;
        }
        let verified = match self.check(input, Mode::Settle).await {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        match verified {
            Verified::Spent(c, rec) => self.represent(&c, &rec).await,
            Verified::Fresh(c) => self.settle(&c, false).await,
            Verified::TakeOver(c) => self.settle(&c, true).await,
        }
    }

    /// Verifies without changing any state (the facilitator's `/verify`): `Ok(payer)`.
    pub async fn verify_only(&self, input: &PaymentInput) -> Result<String, Verdict> {
        match self.check(input, Mode::Probe).await? {
            Verified::Fresh(c) | Verified::TakeOver(c) => Ok(c.payer.to_address()),
            Verified::Spent(c, rec) => match self.redeem_refusal(&c, &rec, super::unix_now()) {
                None => Ok(c.payer.to_address()),
                Some(r) => Err(self.reject(r.with_payer(&c.payer))),
            },
        }
    }

    /// Why a consumed payment may not be redeemed now (`None` = it may).
    pub(crate) fn redeem_refusal(
        &self,
        c: &Checked,
        rec: &SpentRecord,
        now: u64,
    ) -> Option<Rejection> {
        let now = as_i64(now);
        let policy = self.cfg.redeem;
        if rec.nonce != c.nonce {
            return Some(Rejection::new(
                ErrorReason::AlreadySpent,
                "this block was already consumed",
            ));
        }
        match rec.outcome {
            None if rec.admitted_at > now - policy.outcome_grace_secs => Some(Rejection::new(
                ErrorReason::DuplicateSettlement,
                "this payment was admitted and its request is still in progress",
            )),
            Some(s) if s > 0 && s < 500 => Some(Rejection::new(
                ErrorReason::AlreadySpent,
                "this payment was already used for a successful request",
            )),
            _ if rec.redemptions >= policy.max_redemptions => Some(Rejection::new(
                ErrorReason::AlreadySpent,
                "this payment was redeemed as often as allowed",
            )),
            _ if rec.valid_before <= now => Some(Rejection::new(
                ErrorReason::ChallengeExpired,
                "the payment's validity window has passed",
            )),
            _ => None,
        }
    }

    /// A consumed payment presented again: redeem it if its last upstream call failed.
    pub(crate) async fn represent(&self, c: &Checked, rec: &SpentRecord) -> Verdict {
        let now = super::unix_now();
        if let Some(r) = self.redeem_refusal(c, rec, now) {
            return self.reject(r.with_payer(&c.payer));
        }
        let t = Instant::now();
        let redeemed = self
            .store
            .redeem(&rec.receipt, self.cfg.redeem, as_i64(now))
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
                tracing::debug!(receipt = %rec.receipt, "payment redeemed after a failed upstream call");
                self.admit(c, rec.receipt.clone(), true)
            }
        }
    }

    pub(crate) fn admit(&self, c: &Checked, receipt: String, redeemed: bool) -> Verdict {
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
        }))
    }

    async fn settle(&self, c: &Checked, takeover: bool) -> Verdict {
        let started = Instant::now();
        let now = super::unix_now();
        // A fresh payment settles within its challenge's validity; a takeover may finish a
        // block claimed in time until the claim itself expires (validBefore + grace).
        let end = if takeover {
            c.valid_before.saturating_add(self.cfg.fork_grace_secs)
        } else {
            c.valid_before
        };
        let wait = Duration::from_secs(end.saturating_sub(now)).min(self.cfg.max_wait);
        let deadline = Instant::now() + wait;
        let owner = self.next_owner();
        let claim = ForkEntry {
            frontier_key: c.frontier_key.clone(),
            block_hash: c.hash.to_hex(),
            nonce: c.nonce.clone(),
            owner: owner.clone(),
            // The lease outlives our wait by a little, so a crash frees it soon after.
            lease_until: as_i64(now.saturating_add(wait.as_secs()).saturating_add(2)),
            expires_at: as_i64(c.valid_before.saturating_add(self.cfg.fork_grace_secs)),
        };

        // 11. fork-set claim (atomic)
        let t = Instant::now();
        let claimed = self.store.fork_claim(&claim, as_i64(now)).await;
        self.metrics.store_op("fork_claim", t.elapsed());
        match claimed {
            Err(e) => return self.store_failed(&e),
            Ok(true) => {}
            Ok(false) => {
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
            Ok(()) => self.consume(c, started).await,
            Err(v) => v,
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
                     while the challenge is valid",
                )
                .with_payer(&c.payer),
            )),
            Err(e) => Err(self.ledger_failed(&e)),
        }
    }

    /// Records the consumption durably, then admits.
    async fn consume(&self, c: &Checked, started: Instant) -> Verdict {
        let receipt = random_hex();
        let t = Instant::now();
        let consumed = self
            .store
            .consume(&Consumption {
                spent_key: c.spent_key.clone(),
                receipt: receipt.clone(),
                payer: c.payer.to_address(),
                amount: c.amount,
                nonce: c.nonce.clone(),
                now: as_i64(super::unix_now()),
                valid_before: as_i64(c.valid_before),
                outcome: c.final_on_consume.then_some(200),
            })
            .await;
        self.metrics.store_op("consume", t.elapsed());
        match consumed {
            Err(e) => self.store_failed(&e),
            Ok(false) => self.reject(
                Rejection::new(ErrorReason::AlreadySpent, "this block was already consumed")
                    .with_payer(&c.payer),
            ),
            Ok(true) => {
                self.metrics.payments_settled.inc();
                self.metrics
                    .settlement_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(hash = %c.hash, "payment settled and consumed");
                self.admit(c, receipt, false)
            }
        }
    }
}
