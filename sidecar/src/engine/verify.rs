//! Verification of a signed block, cheap checks first and durable work last: every check that
//! needs no I/O runs before any store access or node call, and the only write (the nonce
//! binding) comes after every check, so a payment that fails a local check costs no store row
//! and no node call. In this order (each failure has its own reason):
//!
//! 1. structure: the steps every mechanism shares ([`super::mechanism`]: requirements,
//!    payment, mechanism);
//! 2. expiry: `validBefore` > now → else `challenge_expired`; for settlement, an expired
//!    challenge may still redeem the payment recorded for it (step 9), finish the block it
//!    claimed in time (step 10) or record a block that confirmed after the wait
//!    (docs/payments.md); nothing else;
//! 3. challenge binding ([`Engine::authenticate`]): key id current or previous (for an expired
//!    challenge, also a retired key within the redemption horizon), MAC over the caller's terms
//!    → else `invalid_challenge` (`resource_mismatch` when the stamp is a genuine challenge for
//!    another resource); unbound facilitator requirements instead need `allow_unbound` and an
//!    allowed payee;
//! 4. destination: `link` decoded as a key equals the payee key → else `wrong_destination`;
//! 5. signature over the block hash by `account` → else `invalid_signature`;
//! 6. work ≥ the node network's send threshold → else `insufficient_work`, unless the payment's
//!    [`WorkPolicy`] lets the seller attach work: then the work is replaced after step 11, once
//!    every other check passed ([`super::work`]; settlement only, `/verify` reads nothing);
//! 7. presentations per payer frontier (account + previous, see [`crate::limits`]) → else
//!    `rate_limited` (status 429, `retryAfter`);
//! 8. nonce registry (read): the nonce is bound to another payment → `invalid_challenge`;
//! 9. payment ledger: recorded before → re-presentation rules (redeem a `redeemable` payment
//!    within the window, `duplicate_settlement` while `admitted`, else `already_spent`);
//! 10. fork set peek: the same block under the same challenge and the same terms whose earlier
//!     attempt ended (timed out, crashed) is taken over without ledger checks (they passed
//!     before the claim); the same block under another challenge → `duplicate_settlement`,
//!     under other terms → `amount_mismatch` / `resource_mismatch`;
//! 11. `account_info` (refusals it proves are answered from a short cache, see
//!     [`super::frontier_cache`]): `previous` == frontier == confirmed frontier → else
//!     `stale_frontier`; balance − block.balance == amount exactly → else `amount_mismatch`;
//! 12. (settle) nonce binding: the nonce is bound to this payment at its first presentation
//!     that passed every check; another payment won it → `invalid_challenge`;
//! 13. (settle) fork set claim → else `duplicate_frontier` (another block) or
//!     `duplicate_settlement` (the same block in flight).
//!
//! Steps 8–10 (store reads) run concurrently with step 11 (`account_info`, skipped for an
//! expired challenge); their findings are judged in the order above. Steps 12 and 13 are one
//! transaction ([`crate::store::Store::claim`], made in `settle`): both or neither.

use super::mechanism::{self, BindingFailure, Mode, Payment};
use super::work::{WorkPolicy, WorkRefusal};
use super::{as_i64, BindingPolicy, Engine, PaymentInput, Rejection, Verdict};
use crate::ledger::AccountState;
use crate::store::{ForkEntry, NonceBind, PaymentRecord};
use nanogate_protocol::challenge::{ChallengeKey, ChallengeStamp, ChallengeTerms};
use nanogate_protocol::challenge::{EXTRA_MAC, EXTRA_RESOURCE, EXTRA_VALID_BEFORE};
use nanogate_protocol::contract::Mechanism;
use nanogate_protocol::hex;
use nanogate_protocol::nano::{parse_raw, BlockHash, PublicKey, StateBlock};
use nanogate_protocol::x402::ErrorReason;
use serde_json::Value;
use std::time::Instant;

/// Everything later steps need, taken from what we issued (never the client's copy).
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub block: StateBlock,
    pub hash: BlockHash,
    pub payer: PublicKey,
    pub amount: u128,
    pub pay_to: PublicKey,
    /// The resource the requirements were issued for (the MAC's resource when bound).
    pub resource: String,
    /// The challenge nonce (lower hex), `None` for unbound facilitator requirements.
    pub nonce: Option<String>,
    pub valid_before: u64,
    /// `network:HASH`.
    pub spent_key: String,
    /// `network:ACCOUNT:PREVIOUS`.
    pub frontier_key: String,
    /// Settled through the facilitator API: final at once, never redeemed again.
    pub final_on_consume: bool,
    /// The challenge expired: only redeeming the payment recorded for it, finishing a block it
    /// already claimed (a takeover) or recording one that confirmed late is allowed.
    pub expired: bool,
    /// The block's work is below the threshold and the seller attaches its own before the
    /// block is processed (step 6).
    pub needs_work: bool,
}

impl Checked {
    /// What a fork-set claim records and a takeover must match (a block claimed for a cheap
    /// resource must never finish an expensive one).
    pub fn terms(&self) -> String {
        format!("{}|{}|{}", self.amount, self.pay_to.to_hex(), self.resource)
    }
}

/// What verification concluded.
#[derive(Debug)]
pub(crate) enum Verified {
    /// A new payment that passed every check: claim, process, confirm.
    Fresh(Checked),
    /// The same block under the same challenge, whose earlier attempt ended without a
    /// verdict (timed out or crashed): take over the claim and settle it.
    TakeOver(Checked),
    /// A settled payment presented again.
    Spent(Checked, Box<PaymentRecord>),
    /// An expired challenge with neither a recorded payment nor a claim: the block may have
    /// confirmed after the sidecar stopped waiting (see `Engine::late_presentation`).
    Late(Checked),
}

/// Step 10's finding: a claim on this very block that has ended may be taken over.
enum ForkPeek {
    Free,
    TakeOver,
}

/// `challenge_expired`, said the same way by every path that refuses an expired challenge.
pub(crate) fn expired_challenge() -> Rejection {
    Rejection::new(ErrorReason::ChallengeExpired, "the challenge has expired")
}

/// Why a claim made for `claimed` terms may not be taken over by `c` (`None` = it may).
fn takeover_refusal(claimed: &str, c: &Checked) -> Option<Rejection> {
    if claimed == c.terms() {
        return None;
    }
    let amount = claimed.split('|').next().unwrap_or("");
    Some(if amount != c.amount.to_string() {
        Rejection::new(
            ErrorReason::AmountMismatch,
            "this block was claimed for another amount",
        )
    } else {
        Rejection::new(
            ErrorReason::ResourceMismatch,
            "this block was claimed for another payee or resource",
        )
    })
}

impl Engine {
    /// Steps 2–3 after the shared steps: expiry, challenge binding. Pure: no I/O.
    /// With `grace`, an expired challenge whose key is within the redemption horizon passes
    /// with `expired = true` (see [`Checked::expired`]).
    pub(crate) fn precheck(
        &self,
        input: &PaymentInput,
        payment: &Payment,
        now: u64,
        grace: bool,
    ) -> Result<Checked, Rejection> {
        let block = payment
            .decoded
            .signed_block()
            .map_err(|_| mechanism::signed_blocks_only())?;
        let req = &input.requirements;
        let bound = input.binding == BindingPolicy::Required || req.extra.contains_key(EXTRA_MAC);
        let (nonce, valid_before, expired) = if bound {
            self.bound_challenge(input, payment, now, grace)?
        } else {
            self.unbound_validity(input, payment, now)?
        };
        let network = &self.cfg.network;
        let resource = self.bound_resource(input, payment).to_owned();
        let block = block.clone();
        let hash = block.hash();
        Ok(Checked {
            spent_key: format!("{network}:{}", hash.to_hex()),
            frontier_key: format!(
                "{network}:{}:{}",
                block.account.to_hex(),
                block.previous.to_hex()
            ),
            payer: block.account,
            block,
            hash,
            amount: payment.amount,
            pay_to: payment.payee.key,
            resource,
            nonce,
            valid_before,
            final_on_consume: input.binding == BindingPolicy::Facilitator,
            expired,
            needs_work: false,
        })
    }

    /// Steps 2–3 for requirements with our MAC: `(nonce, validBefore, expired)`.
    fn bound_challenge(
        &self,
        input: &PaymentInput,
        payment: &Payment,
        now: u64,
        grace: bool,
    ) -> Result<(Option<String>, u64, bool), Rejection> {
        let req = &input.requirements;
        let (stamp, tag) = mechanism::read_challenge(req)?;
        // 2. expiry
        let expired = stamp.valid_before <= now;
        if expired && !grace {
            return Err(expired_challenge());
        }
        // 3. binding (an expired challenge may be older than the previous key: retired keys
        // authenticate it, for redemption only)
        let resource = self.bound_resource(input, payment);
        let terms = payment.terms(&self.cfg.network, resource, Mechanism::SignedBlock);
        match self.authenticate(&terms, &stamp, &tag, now, true) {
            Ok(()) => {}
            Err(BindingFailure::UnknownKey) => {
                return Err(Rejection::new(
                    ErrorReason::InvalidChallenge,
                    "challenge key id is neither current nor previous",
                ))
            }
            Err(BindingFailure::Expired) => return Err(expired_challenge()),
            Err(BindingFailure::NotIssued(key)) => {
                let at = mechanism::judged_at(&stamp, now);
                return Err(self.mac_failure(&key, payment, &stamp, &tag, resource, at));
            }
        }
        Ok((
            Some(hex::encode_lower(&stamp.nonce)),
            stamp.valid_before,
            expired,
        ))
    }

    /// Steps 2–3 for facilitator requirements without a MAC: allowed by configuration for an
    /// allowed payee, until `extra.validBefore` (or `maxTimeoutSeconds` from now).
    fn unbound_validity(
        &self,
        input: &PaymentInput,
        payment: &Payment,
        now: u64,
    ) -> Result<(Option<String>, u64, bool), Rejection> {
        let cfg = &self.cfg;
        let req = &input.requirements;
        let bad_req = |m: &str| Rejection::new(ErrorReason::InvalidPaymentRequirements, m);
        if !cfg.allow_unbound {
            return Err(bad_req(
                "requirements carry no nanogate challenge and unbound requirements are not allowed",
            ));
        }
        if !cfg.pay_to_allow.contains(&payment.payee.key) {
            return Err(bad_req("requirements: payTo is not in the allow-list"));
        }
        let valid_before = match req.extra.get(EXTRA_VALID_BEFORE).and_then(Value::as_u64) {
            Some(vb) => vb,
            None => now.saturating_add(req.max_timeout_seconds.max(1)),
        };
        if valid_before <= now {
            return Err(Rejection::new(
                ErrorReason::PaymentExpired,
                "the requirements have expired",
            ));
        }
        Ok((None, valid_before, false))
    }

    /// The resource URL the MAC covers: the caller's; for the facilitator API a MAC-protected
    /// `extra.resource` (set by `/v1/challenge`) wins over the client's `resource.url`.
    fn bound_resource<'a>(&self, input: &'a PaymentInput, payment: &'a Payment) -> &'a str {
        if input.binding == BindingPolicy::Facilitator {
            if let Some(r) = input
                .requirements
                .extra
                .get(EXTRA_RESOURCE)
                .and_then(Value::as_str)
            {
                return r;
            }
            if input.resource.is_empty() {
                return payment.decoded.resource().map_or("", |r| r.url.as_str());
            }
        }
        &input.resource
    }

    /// A MAC that fails over our terms may still be a genuine challenge for another resource
    /// (cross-route replay): check the client's copy to tell `resource_mismatch` apart.
    fn mac_failure(
        &self,
        key: &ChallengeKey,
        payment: &Payment,
        stamp: &ChallengeStamp,
        tag: &[u8; 32],
        resource: &str,
        now: u64,
    ) -> Rejection {
        let genuine_elsewhere = (|| {
            let acc = payment.decoded.accepted()?;
            let url = payment.decoded.resource()?.url.as_str();
            if url == resource {
                return None;
            }
            let terms = ChallengeTerms {
                network: &acc.network,
                scheme: &acc.scheme,
                asset: &acc.asset,
                pay_to: PublicKey::from_address(&acc.pay_to).ok()?,
                amount: parse_raw(&acc.amount).ok()?,
                resource: url,
                mechanism: Mechanism::SignedBlock,
            };
            nanogate_protocol::challenge::verify(key, &terms, stamp, tag, now).ok()
        })();
        if genuine_elsewhere.is_some() {
            Rejection::new(
                ErrorReason::ResourceMismatch,
                "the challenge was issued for another resource",
            )
        } else {
            Rejection::new(
                ErrorReason::InvalidChallenge,
                "the challenge was not issued by this system for these terms",
            )
        }
    }

    /// Steps 4–6: destination, signature, work. Pure. Work below the threshold passes (with
    /// `needs_work` set) when the seller attaches work for this payment.
    pub(crate) fn block_checks(&self, c: &mut Checked, work: WorkPolicy) -> Result<(), Rejection> {
        if c.block.link_as_key() != c.pay_to {
            return Err(Rejection::new(
                ErrorReason::WrongDestination,
                "the send's link is not the payee's key",
            ));
        }
        if !c.block.signature_valid() {
            return Err(Rejection::new(
                ErrorReason::InvalidSignature,
                "the block signature does not verify",
            ));
        }
        if c.block.work_difficulty() < self.cfg.node_network.thresholds().send() {
            if work == WorkPolicy::Attach && self.work.is_some() {
                c.needs_work = true;
                return Ok(());
            }
            return Err(Rejection::new(
                ErrorReason::InsufficientWork,
                "the block's work is below the send threshold",
            ));
        }
        Ok(())
    }

    /// Steps 2–12 of a signed block whose shared steps passed (`offer`). `Err` is the final
    /// verdict.
    pub(crate) async fn check(
        &self,
        input: &PaymentInput,
        payment: &Payment,
        mode: Mode,
        started: Instant,
    ) -> Result<Verified, Verdict> {
        let now = super::unix_now();
        // 2–3: expiry, challenge binding (no I/O)
        let mut c = self
            .precheck(input, payment, now, mode == Mode::Settle)
            .map_err(|r| self.reject(r))?;
        // 4–6: destination, signature, work (no I/O)
        self.block_checks(&mut c, input.work)
            .map_err(|r| self.reject(r.with_payer(&c.payer)))?;
        self.frontier_presentations(&c)?;
        // 8–10 (one store read, `Store::presentation`: the nonce's binding, the payment's
        // row, the frontier's claim; step 9 is the row) and 11 (`account_info`) overlap: the
        // node call does not depend on the read, and its answer is only used when the read
        // found a fresh payment. An expired challenge never reaches step 11, so it makes no
        // node call.
        let reads = async {
            let t = Instant::now();
            let read = self
                .store
                .presentation(
                    c.nonce.as_deref(),
                    &c.spent_key,
                    &c.frontier_key,
                    as_i64(now),
                )
                .await;
            self.metrics.store_op("presentation", t.elapsed());
            read
        };
        let account = async {
            if c.expired {
                None
            } else {
                Some(self.account_checks(&c).await)
            }
        };
        let (read, account) = tokio::join!(reads, account);
        let read = read.map_err(|e| self.store_failed(&e))?;
        let bound_here = self.nonce_not_taken(&c, read.nonce_binding)?;
        if let Some(rec) = read.payment {
            return Ok(Verified::Spent(c, Box::new(rec)));
        }
        if let ForkPeek::TakeOver = self.fork_peek(&c, mode, now, read.fork)? {
            self.attach_work(&mut c, mode).await?;
            self.metrics
                .verify_seconds
                .observe(started.elapsed().as_secs_f64());
            return Ok(Verified::TakeOver(c));
        }
        // An expired challenge: no recorded payment, no claim to finish (above). Only a block
        // presented under this challenge in time may be recorded now: anyone can see a
        // confirmed block on the ledger and present it under another expired challenge.
        let Some(account) = account else {
            if bound_here {
                return Ok(Verified::Late(c));
            }
            return Err(self.reject(expired_challenge().with_payer(&c.payer)));
        };
        // 11. account_info
        account.map_err(|r| match r {
            AccountRefusal::Ledger(e) => self.ledger_failed(&e),
            AccountRefusal::Reject(r) => self.reject(r.with_payer(&c.payer)),
        })?;
        self.attach_work(&mut c, mode).await?;
        self.metrics
            .verify_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Verified::Fresh(c))
    }

    /// Step 6's deferred half: the seller's work for a block that passed every other check
    /// (settlement only: `/verify` changes nothing and costs no work).
    async fn attach_work(&self, c: &mut Checked, mode: Mode) -> Result<(), Verdict> {
        let (true, Mode::Settle, Some(work)) = (c.needs_work, mode, &self.work) else {
            return Ok(());
        };
        let threshold = self.cfg.node_network.thresholds().send();
        match work.attach(&c.payer, &c.block.previous.0, threshold).await {
            Ok(w) => {
                c.block.work = w;
                c.needs_work = false;
                tracing::debug!(hash = %c.hash.to_hex(), "work attached by the seller");
                Ok(())
            }
            Err(WorkRefusal::Busy { retry_after, why }) => {
                Err(self.reject(Rejection::rate_limited(retry_after, why).with_payer(&c.payer)))
            }
            Err(WorkRefusal::Unavailable(e)) => {
                tracing::warn!(error = %e, "work generation failed");
                Err(self.unavailable("work source"))
            }
        }
    }

    /// Step 7: presentations per payer frontier (the signature proved both).
    fn frontier_presentations(&self, c: &Checked) -> Result<(), Verdict> {
        match self.limits.payer_presented(&c.payer, &c.block.previous) {
            Ok(()) => Ok(()),
            Err(wait) => Err(self.reject(
                Rejection::rate_limited(
                    wait.0,
                    "too many presentations of payments on this payer's frontier",
                )
                .with_payer(&c.payer),
            )),
        }
    }

    /// Step 8: the nonce registry (read only; bound at step 12): `true` when the nonce is
    /// bound to this very payment. A binding is kept for the redemption window after the fork
    /// grace: it is what proves, for a block that confirmed late and was never recorded, that
    /// it was presented under this very challenge while the challenge was valid. An expired
    /// challenge binds nothing; its recorded payment (step 9) or its claim (step 10) is
    /// matched on the nonce.
    fn nonce_not_taken(&self, c: &Checked, bound: Option<String>) -> Result<bool, Verdict> {
        if c.nonce.is_none() {
            return Ok(false);
        }
        match bound {
            Some(k) if k != c.spent_key => Err(self.nonce_taken(c)),
            bound => Ok(bound.is_some()),
        }
    }

    /// Step 10: the fork set's claim on the payer's frontier (`entry`, if any).
    fn fork_peek(
        &self,
        c: &Checked,
        mode: Mode,
        now: u64,
        entry: Option<ForkEntry>,
    ) -> Result<ForkPeek, Verdict> {
        let Some(e) = entry else {
            return Ok(ForkPeek::Free);
        };
        let refuse = |r: Rejection| Err(self.reject(r.with_payer(&c.payer)));
        if e.block_hash == c.hash.to_hex() {
            if e.nonce != c.nonce {
                return refuse(Rejection::new(
                    ErrorReason::DuplicateSettlement,
                    "this block is being settled under another challenge",
                ));
            }
            if let Some(r) = e.terms.as_deref().and_then(|t| takeover_refusal(t, c)) {
                return refuse(r);
            }
            if e.lease_until > as_i64(now) {
                return refuse(Rejection::new(
                    ErrorReason::DuplicateSettlement,
                    "this payment is being settled right now",
                ));
            }
            return Ok(ForkPeek::TakeOver);
        }
        if mode == Mode::Probe && !c.expired {
            return refuse(Rejection::new(
                ErrorReason::DuplicateFrontier,
                "another payment on this frontier is in flight",
            ));
        }
        Ok(ForkPeek::Free)
    }

    /// Step 12's binding (made with the fork-set claim, in one transaction): kept for the
    /// redemption window after the fork grace (see [`Engine::nonce_not_taken`]).
    pub(crate) fn nonce_bind(&self, c: &Checked) -> Option<NonceBind> {
        let nonce = c.nonce.clone()?;
        let keep = self
            .cfg
            .fork_grace_secs
            .saturating_add(u64::try_from(self.cfg.redeem.window_secs).unwrap_or(0));
        Some(NonceBind {
            nonce,
            payment_key: c.spent_key.clone(),
            expires_at: as_i64(c.valid_before.saturating_add(keep)),
        })
    }

    pub(crate) fn nonce_taken(&self, c: &Checked) -> Verdict {
        self.reject(
            Rejection::new(
                ErrorReason::InvalidChallenge,
                "this challenge was already used for another payment",
            )
            .with_payer(&c.payer),
        )
    }

    /// Step 11: the block against the payer's account. A refusal that the cached answer
    /// proves for good (see [`super::frontier_cache`]) costs no node call.
    async fn account_checks(&self, c: &Checked) -> Result<(), AccountRefusal> {
        self.cached_refusal(c)?;
        // Concurrent presentations for one account wait for one answer, then look again.
        let _turn = self.frontiers.lookup_turn(&c.payer).await;
        self.cached_refusal(c)?;
        let state = self
            .ledger
            .account_state(&c.payer)
            .await
            .map_err(AccountRefusal::Ledger)?;
        let Some(state) = state else {
            return Err(AccountRefusal::Reject(Rejection::new(
                ErrorReason::StaleFrontier,
                "the payer's account is not open on the ledger",
            )));
        };
        let judged = judge_account(c, &state);
        // Only a refusal's input is kept: a payment that passes is about to move the head,
        // and a later block on the old head must hear `stale_frontier` from the node.
        match judged {
            Ok(()) => self.frontiers.forget(&c.payer),
            Err(_) => self.frontiers.put(c.payer, state),
        }
        judged.map_err(AccountRefusal::Reject)
    }
}

impl Engine {
    /// A refusal a recent `account_info` answer proves for good (see [`super::frontier_cache`]).
    fn cached_refusal(&self, c: &Checked) -> Result<(), AccountRefusal> {
        let Some(cached) = self.frontiers.get(&c.payer) else {
            return Ok(());
        };
        match judge_account(c, &cached) {
            Err(r)
                if r.reason == ErrorReason::DuplicateSettlement
                    || r.reason == ErrorReason::AmountMismatch =>
            {
                self.metrics.frontier_cache_refusals.inc();
                Err(AccountRefusal::Reject(r))
            }
            _ => Ok(()),
        }
    }
}

enum AccountRefusal {
    Ledger(crate::ledger::LedgerError),
    Reject(Rejection),
}

/// The block against an account state. The order matters to the cache: `amount_mismatch` is
/// only reached for a block on the confirmed frontier, whose balance never changes.
fn judge_account(c: &Checked, state: &AccountState) -> Result<(), Rejection> {
    // The ledger already holds this very block: another presentation of it settled (or is
    // settling) meanwhile, or someone published it. Either way it buys nothing here: a
    // block already public could be a copied one. Name that, not a stale frontier.
    if state.frontier == c.hash || state.confirmed_frontier == Some(c.hash) {
        return Err(Rejection::new(
            ErrorReason::DuplicateSettlement,
            "this block is already on the ledger (settled by another presentation, or published)",
        ));
    }
    let confirmed_head = state.confirmed_frontier.unwrap_or(state.frontier);
    if c.block.previous != state.frontier || confirmed_head != state.frontier {
        return Err(Rejection::new(
            ErrorReason::StaleFrontier,
            "the block does not build on the payer's confirmed frontier",
        ));
    }
    if state.balance.checked_sub(c.block.balance) != Some(c.amount) {
        return Err(Rejection::new(
            ErrorReason::AmountMismatch,
            "the balance decrement is not exactly the issued amount",
        ));
    }
    Ok(())
}
