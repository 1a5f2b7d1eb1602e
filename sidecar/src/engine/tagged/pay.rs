//! Admitting a presented tagged session: a confirmed send to the session's account of exactly
//! its amount, first seen after the session was issued, within its validity, never consumed
//! before. Each step below either passes or ends the payment with its verdict.

use super::super::mechanism::Payment;
use super::super::verify::Checked;
use super::super::{
    as_i64, new_admission_token, random_hex, unix_now, Engine, PayContext, PaymentInput,
};
use super::super::{Rejection, Verdict};
use super::presented::Presented;
use crate::ledger::{Confirmation, SendFacts};
use crate::store::payments::TAGGED;
use crate::store::tagged::{TaggedConsume, TaggedSession};
use crate::store::{Consumption, PaymentRecord, PaymentState};
use nanogate_protocol::nano::{BlockHash, PublicKey, Signature, StateBlock};
use nanogate_protocol::x402::ErrorReason;
use std::time::{Duration, Instant};

/// What the payment ledger already holds for the presented block.
enum Recorded {
    /// Nothing, or a send this mechanism recorded owed (e.g. presented with the wrong session
    /// first): it may still buy its own session, the consumption takes the row over.
    Nothing,
    /// The watcher matched it to this session and listed it redeemable; this is its first use.
    MatchedUnused,
    /// A payment recorded before: the redemption rules of signed blocks decide.
    Before(Box<PaymentRecord>),
}

/// One presentation: the session as presented, and the send that pays it.
struct Presentation<'a> {
    input: &'a PaymentInput,
    p: Presented,
    session: TaggedSession,
    hash: BlockHash,
    spent_key: String,
    now: u64,
}

impl Engine {
    /// Verifies and settles a tagged-session payment whose shared steps passed (see the
    /// module docs).
    pub(crate) async fn pay_tagged(
        &self,
        input: &PaymentInput,
        payment: &Payment,
        started: Instant,
        ctx: &PayContext,
    ) -> Verdict {
        match self.try_pay_tagged(input, payment, started, ctx).await {
            Ok(v) | Err(v) => v,
        }
    }

    async fn try_pay_tagged(
        &self,
        input: &PaymentInput,
        payment: &Payment,
        started: Instant,
        ctx: &PayContext,
    ) -> Result<Verdict, Verdict> {
        let now = unix_now();
        let p = self
            .presented_session(input, payment, now)
            .map_err(|r| self.reject(r))?;
        let session = self.known_session(&p, &input.resource).await?;
        let hash = self.paying_block(&p, &session)?;
        let pr = Presentation {
            input,
            spent_key: format!("{}:{}", self.cfg.network, hash.to_hex()),
            p,
            session,
            hash,
            now,
        };
        let matched_unused = match self.recorded_tagged(&pr).await? {
            Recorded::Nothing => false,
            Recorded::MatchedUnused => true,
            Recorded::Before(rec) => {
                let payer = PublicKey::from_address(&rec.payer).unwrap_or(pr.p.pay_to);
                return Ok(self.represent(&self.checked(&pr, payer), &rec, ctx).await);
            }
        };
        self.not_a_signed_block(&pr).await?;
        self.within_validity(&pr, matched_unused).await?;
        let facts = self.send_paying_session(&pr).await?;
        self.confirmed_in_time(&pr, &facts, ctx).await?;
        Ok(self.consume_session(&pr, &facts, started, ctx).await)
    }

    /// The session the offer binds, as issued: unknown → `unknown_session` (a payment for a
    /// session we no longer know still gets reported), other terms → `session_mismatch`.
    async fn known_session(&self, p: &Presented, resource: &str) -> Result<TaggedSession, Verdict> {
        let session = match self.store.session(&p.session_id).await {
            Err(e) => return Err(self.store_failed(&e)),
            Ok(Some(s)) => s,
            Ok(None) => {
                if let Some(hash) = p.proof {
                    self.report_presented_stray(&hash, &p.pay_to, "unknown_session", &p.session_id)
                        .await;
                }
                return Err(self.reject(Rejection::new(
                    ErrorReason::UnknownSession,
                    "this session is unknown (never issued, or forgotten)",
                )));
            }
        };
        if session.pay_to != p.pay_to.to_hex()
            || session.amount != p.amount.to_string()
            || session.scope != resource
        {
            return Err(self.reject(Rejection::new(
                ErrorReason::SessionMismatch,
                "the offer does not match the session's terms",
            )));
        }
        Ok(session)
    }

    /// The send presented (`proof`), else the one the watcher matched to the session.
    fn paying_block(&self, p: &Presented, session: &TaggedSession) -> Result<BlockHash, Verdict> {
        p.proof.or(paid_hash(session)).ok_or_else(|| {
            self.reject(Rejection::new(
                ErrorReason::BlockNotConfirmed,
                "no confirmed payment for this session yet",
            ))
        })
    }

    /// A block consumed before follows the redemption rules of signed blocks (same spent set).
    async fn recorded_tagged(&self, pr: &Presentation<'_>) -> Result<Recorded, Verdict> {
        let rec = match self.store.spent(&pr.spent_key).await {
            Err(e) => return Err(self.store_failed(&e)),
            Ok(None) => return Ok(Recorded::Nothing),
            Ok(Some(rec)) => rec,
        };
        if rec.state == PaymentState::Owed && rec.mechanism == TAGGED {
            return Ok(Recorded::Nothing);
        }
        // Matched by the watcher and listed redeemable, never consumed, within the window.
        if rec.state == PaymentState::Redeemable
            && rec.mechanism == TAGGED
            && rec.redemptions == 0
            && rec.nonce.as_deref() == Some(pr.p.session_id.as_str())
            && pr.session.consumed_hash.is_none()
            && rec.settled_at.saturating_add(self.cfg.redeem.window_secs) > as_i64(pr.now)
        {
            return Ok(Recorded::MatchedUnused);
        }
        Ok(Recorded::Before(Box::new(rec)))
    }

    /// A signed-block payment (claimed in the fork set, tracked, or recorded) never buys a
    /// session, even while it is still being settled, and is never recorded owed here (that
    /// would block its own settlement).
    async fn not_a_signed_block(&self, pr: &Presentation<'_>) -> Result<(), Verdict> {
        match self
            .store
            .is_signed_block(&pr.spent_key, &pr.hash.to_hex())
            .await
        {
            Err(e) => Err(self.store_failed(&e)),
            Ok(true) => Err(self.reject(Rejection::new(
                ErrorReason::AlreadySpent,
                "this block is a signed-block payment",
            ))),
            Ok(false) => Ok(()),
        }
    }

    /// Presented before `validBefore`, or paid (matched by the watcher) in time and finished
    /// within the grace, or, once the watcher listed it redeemable, within the redemption
    /// window after its settlement (like any redeemable payment).
    async fn within_validity(
        &self,
        pr: &Presentation<'_>,
        matched_unused: bool,
    ) -> Result<(), Verdict> {
        let vb = pr.session.valid_before;
        let now = as_i64(pr.now);
        let paid_in_time =
            paid_hash(&pr.session) == Some(pr.hash) && pr.session.paid_at.is_some_and(|t| t < vb);
        let expired = vb <= now;
        let in_grace = now < vb.saturating_add(as_i64(self.cfg.fork_grace_secs));
        if expired && !(paid_in_time && (in_grace || matched_unused)) {
            self.report_presented_stray(&pr.hash, &pr.p.pay_to, "late", &pr.p.session_id)
                .await;
            return Err(self.reject(Rejection::new(
                ErrorReason::ChallengeExpired,
                "the session has expired",
            )));
        }
        Ok(())
    }

    /// The ledger's view of the block: a send to the session's account of exactly its amount,
    /// first seen after the session was issued (an unknown time fails closed). A send to the
    /// account that fails is recorded stray.
    async fn send_paying_session(&self, pr: &Presentation<'_>) -> Result<SendFacts, Verdict> {
        let p = &pr.p;
        let facts = match self.ledger.send_facts(&pr.hash).await {
            Err(e) => return Err(self.ledger_failed(&e)),
            Ok(None) => {
                return Err(self.reject(Rejection::new(
                    ErrorReason::BlockNotConfirmed,
                    "the node does not know this block (yet)",
                )))
            }
            Ok(Some(f)) => f,
        };
        if facts.subtype.as_deref() != Some("send") || facts.destination != Some(p.pay_to) {
            return Err(self.reject(Rejection::new(
                ErrorReason::WrongDestination,
                "the block is not a send to the session's account",
            )));
        }
        let refusal = if facts.amount != p.amount {
            Some((
                "wrong_amount",
                Rejection::new(
                    ErrorReason::AmountMismatch,
                    "the send is not exactly the session's amount",
                ),
            ))
        } else if facts.local_timestamp == 0 || as_i64(facts.local_timestamp) < pr.session.issued_at
        {
            Some((
                "too_early",
                Rejection::new(
                    ErrorReason::PaymentTooEarly,
                    "the send was made before this session was issued",
                ),
            ))
        } else {
            None
        };
        if let Some((reason, r)) = refusal {
            let s = Self::stray(
                &pr.hash,
                &p.pay_to,
                facts.amount,
                &facts.account,
                reason,
                Some(&p.session_id),
            );
            self.record_stray(s).await;
            return Err(self.reject(r.with_payer(&facts.account)));
        }
        Ok(facts)
    }

    /// An unconfirmed send is awaited until the session's validity plus the grace, measured
    /// from the request's arrival like a signed block's wait.
    async fn confirmed_in_time(
        &self,
        pr: &Presentation<'_>,
        facts: &SendFacts,
        ctx: &PayContext,
    ) -> Result<(), Verdict> {
        if facts.confirmed {
            return Ok(());
        }
        let Some(block) = facts.block.as_ref() else {
            return Err(self.reject(Rejection::new(
                ErrorReason::BlockNotConfirmed,
                "the block is not confirmed",
            )));
        };
        let end = u64::try_from(
            pr.session
                .valid_before
                .saturating_add(as_i64(self.cfg.fork_grace_secs)),
        )
        .unwrap_or(0)
        .saturating_sub(pr.now);
        let deadline =
            (Instant::now() + Duration::from_secs(end)).min(ctx.arrived + self.cfg.max_wait);
        match self.ledger.wait_confirmed(block, deadline).await {
            Ok(Confirmation::Confirmed) => Ok(()),
            Ok(Confirmation::Missing) => Err(self.reject(Rejection::new(
                ErrorReason::ForkLost,
                "the block is no longer on the ledger",
            ))),
            Ok(Confirmation::TimedOut) => Err(self.reject(Rejection::new(
                ErrorReason::BlockNotConfirmed,
                "the block was not confirmed in time; present it again",
            ))),
            Err(e) => Err(self.ledger_failed(&e)),
        }
    }

    /// Marks the session used and records the payment `admitted` in one transaction, then
    /// admits; a session used by another block records this one stray.
    async fn consume_session(
        &self,
        pr: &Presentation<'_>,
        facts: &SendFacts,
        started: Instant,
        ctx: &PayContext,
    ) -> Verdict {
        let p = &pr.p;
        let receipt = random_hex();
        let (token, token_hash) = new_admission_token();
        let at = unix_now();
        let c = Consumption {
            spent_key: pr.spent_key.clone(),
            receipt: receipt.clone(),
            mechanism: TAGGED,
            payer: facts.account.to_address(),
            pay_to: p.pay_to.to_address(),
            amount: p.amount,
            resource: pr.input.resource.clone(),
            nonce: Some(p.session_id.clone()),
            now: as_i64(at),
            state: PaymentState::Admitted,
            lease_until: ctx.lease_until(at),
            admission_token: Some(token_hash),
        };
        let hash = pr.hash.to_hex();
        let t = Instant::now();
        let consumed = self.store.consume_tagged(&c, &p.session_id, &hash).await;
        self.metrics.store_op("consume_tagged", t.elapsed());
        let refuse = |reason, message: &str| {
            self.reject(Rejection::new(reason, message).with_payer(&facts.account))
        };
        match consumed {
            Err(e) => self.store_failed(&e),
            Ok(TaggedConsume::Spent) => {
                refuse(ErrorReason::AlreadySpent, "this block was already consumed")
            }
            Ok(TaggedConsume::SessionUsed) => {
                // Another replica (or request) may have consumed it with this very block.
                let same = matches!(
                    self.store.session(&p.session_id).await,
                    Ok(Some(ref s)) if s.consumed_hash.as_deref() == Some(hash.as_str())
                );
                if same {
                    return refuse(
                        ErrorReason::DuplicateSettlement,
                        "this payment was just admitted for this session",
                    );
                }
                let s = Self::stray(
                    &pr.hash,
                    &p.pay_to,
                    facts.amount,
                    &facts.account,
                    "session_used",
                    Some(&p.session_id),
                );
                self.record_stray(s).await;
                refuse(
                    ErrorReason::AlreadySpent,
                    "this session was already used by another payment",
                )
            }
            Ok(TaggedConsume::Consumed) => {
                self.metrics.payments_settled.inc();
                self.metrics
                    .settlement_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(%hash, session = %p.session_id, "tagged payment consumed");
                self.admit(
                    &self.checked(pr, facts.account),
                    receipt,
                    false,
                    Some(token),
                )
            }
        }
    }

    /// The [`Checked`] the shared admission and redemption code reads (hash, payer, nonce).
    /// The block is a placeholder: the client broadcast its own, we never publish it.
    fn checked(&self, pr: &Presentation<'_>, payer: PublicKey) -> Checked {
        let p = &pr.p;
        Checked {
            block: StateBlock {
                account: payer,
                previous: BlockHash([0; 32]),
                representative: payer,
                balance: 0,
                link: p.pay_to.0,
                signature: Signature([0; 64]),
                work: 0,
            },
            hash: pr.hash,
            payer,
            amount: p.amount,
            pay_to: p.pay_to,
            resource: pr.input.resource.clone(),
            nonce: Some(p.session_id.clone()),
            valid_before: p.valid_before,
            spent_key: pr.spent_key.clone(),
            frontier_key: String::new(),
            final_on_consume: false,
            expired: false,
            needs_work: false,
        }
    }
}

/// The send the watcher matched to the session, if any.
fn paid_hash(session: &TaggedSession) -> Option<BlockHash> {
    session
        .paid_hash
        .as_deref()
        .and_then(|h| BlockHash::from_hex(h).ok())
}
