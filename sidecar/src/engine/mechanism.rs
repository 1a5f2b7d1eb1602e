//! What every payment mechanism shares, in the order it runs. None of these steps does I/O,
//! so a payment that fails one costs no store row and no node call (invariant 11 in
//! docs/design.md):
//!
//! 1. requirements are ours (`exact`, our network, `XNO`, a positive raw amount, a payee key)
//!    → else `invalid_payment_requirements`;
//! 2. the payment decodes (protocol's `decode_payment_value`: `invalid_payload`,
//!    `invalid_x402_version`; a payload with neither a `block` nor a client-broadcast key is
//!    `invalid_payload` here, before any mechanism sees it), then the declared scheme
//!    (`invalid_scheme`) and network (`invalid_network`);
//! 3. the mechanism, by protocol's one rule on the payload's keys
//!    ([`nanogate_protocol::x402::PaymentMechanism`]): a `block` is a signed block
//!    ([`super::verify`], [`super::settle`]); a client-broadcast payload is a tagged session
//!    ([`super::tagged`]), settled through the filter API only (elsewhere
//!    `unsupported_scheme`);
//! 4. the mechanism's own checks, whose challenge binding (an honoured key, the MAC over our
//!    terms and the mechanism) is [`Engine::authenticate`].
//!
//! Another mechanism (prepaid passes, payer-signed proofs) is one more arm in
//! [`Engine::mechanism`] and its own module.

use super::{BindingPolicy, Engine, PaymentInput, Rejection};
use nanogate_protocol::challenge::ChallengeTerms;
use nanogate_protocol::challenge::{self, ChallengeError, ChallengeKey, ChallengeStamp};
use nanogate_protocol::contract::{self, Mechanism, Payee, ASSET_XNO, SCHEME_EXACT};
use nanogate_protocol::nano::parse_raw;
use nanogate_protocol::x402::payload_keys;
use nanogate_protocol::x402::{
    decode_payment_value, DecodedPayment, ErrorReason, PaymentError, PaymentRequirements,
    CLIENT_BROADCAST_KEYS,
};

/// A payment read by steps 1–2: the amount and payee we issued, and the client's payment,
/// decoded.
#[derive(Debug)]
pub(crate) struct Payment {
    pub amount: u128,
    pub payee: Payee,
    pub decoded: DecodedPayment,
}

impl Payment {
    /// The terms our MAC binds for this payment (step 1 let only our network, scheme and
    /// asset through), built by the one offer constructor.
    pub fn terms<'a>(
        &'a self,
        network: &'a str,
        resource: &'a str,
        mechanism: Mechanism,
    ) -> ChallengeTerms<'a> {
        contract::Offer {
            network,
            pay_to: &self.payee,
            amount: self.amount,
            max_timeout_seconds: 0,
            resource,
            mechanism,
        }
        .terms()
    }
}

/// Whether a settlement or a read-only probe asks: tagged sessions are only settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Probe,
    Settle,
}

/// Why a presented challenge does not bind the payment (see [`Engine::authenticate`]).
pub(crate) enum BindingFailure {
    /// The stamp's key id is not honoured.
    UnknownKey,
    /// The MAC does not cover our terms (under `key`, which the caller may try other terms
    /// with).
    NotIssued(ChallengeKey),
    /// The challenge expired as of the second it was judged at.
    Expired,
}

/// The stamp and MAC the client echoed in `accepted.extra`, else `invalid_challenge`.
pub(crate) fn read_challenge(
    req: &PaymentRequirements,
) -> Result<(ChallengeStamp, [u8; 32]), Rejection> {
    challenge::read_extra(&req.extra)
        .map_err(|e| Rejection::new(ErrorReason::InvalidChallenge, e.to_string()))
}

/// The second a challenge is judged at: now, or its last valid second once it expired (a
/// payment made in time may still be finished or redeemed; each mechanism says when).
pub(crate) fn judged_at(stamp: &ChallengeStamp, now: u64) -> u64 {
    if stamp.valid_before <= now {
        stamp.valid_before.saturating_sub(1)
    } else {
        now
    }
}

impl Engine {
    /// Steps 1 and 2 (pure).
    pub(crate) fn read_payment(&self, input: &PaymentInput) -> Result<Payment, Rejection> {
        let network = &self.cfg.network;
        let req = &input.requirements;
        let bad_req = |m: &str| Rejection::new(ErrorReason::InvalidPaymentRequirements, m);
        if req.scheme != SCHEME_EXACT {
            return Err(bad_req(&format!(
                "requirements: scheme must be `{SCHEME_EXACT}`"
            )));
        }
        if req.network != *network {
            return Err(bad_req(
                "requirements: network is not the one this sidecar settles",
            ));
        }
        if req.asset != ASSET_XNO {
            return Err(bad_req(&format!("requirements: asset must be {ASSET_XNO}")));
        }
        let amount = parse_raw(&req.amount)
            .ok()
            .filter(|a| *a > 0)
            .ok_or_else(|| bad_req("requirements: amount must be a positive raw integer"))?;
        let payee = Payee::from_address(&req.pay_to)
            .map_err(|_| bad_req("requirements: payTo is not a Nano address"))?;

        let decoded = decode_payment_value(input.payment.clone()).map_err(payment_refusal)?;
        if decoded.scheme() != SCHEME_EXACT {
            return Err(Rejection::new(
                ErrorReason::InvalidScheme,
                format!("only `{SCHEME_EXACT}` is accepted"),
            ));
        }
        if decoded.network() != network {
            return Err(Rejection::new(
                ErrorReason::InvalidNetwork,
                format!("only {network} is accepted"),
            ));
        }
        Ok(Payment {
            amount,
            payee,
            decoded,
        })
    }

    /// Step 3: the mechanism that verifies this payment.
    pub(crate) fn mechanism(
        &self,
        payment: &Payment,
        binding: BindingPolicy,
        mode: Mode,
    ) -> Result<Mechanism, Rejection> {
        // Protocol's one rule: a `block` pays a signed block, a client-broadcast payload a
        // tagged session.
        match payment.decoded.mechanism().mechanism() {
            Mechanism::SignedBlock => Ok(Mechanism::SignedBlock),
            Mechanism::TaggedSession
                if binding == BindingPolicy::Required && mode == Mode::Settle =>
            {
                Ok(Mechanism::TaggedSession)
            }
            Mechanism::TaggedSession => Err(signed_blocks_only()),
        }
    }

    /// The challenge binding every mechanism shares: the stamp's key is honoured as of
    /// [`judged_at`] (with `retired_ok`, for an expired challenge also a retired key within the
    /// redemption horizon: redemption only), and the MAC covers our `terms`.
    pub(crate) fn authenticate(
        &self,
        terms: &ChallengeTerms<'_>,
        stamp: &ChallengeStamp,
        tag: &[u8; 32],
        now: u64,
        retired_ok: bool,
    ) -> Result<(), BindingFailure> {
        let at = judged_at(stamp, now);
        let expired = stamp.valid_before <= now;
        let key = self.keys.honoured(stamp.key_id, at).or_else(|| {
            (expired && retired_ok)
                .then(|| {
                    let horizon = self.redemption_horizon_secs();
                    self.keys
                        .honoured_for_redemption(stamp.key_id, now, horizon)
                })
                .flatten()
        });
        let Some(key) = key else {
            return Err(BindingFailure::UnknownKey);
        };
        match challenge::verify(&key, terms, stamp, tag, at) {
            Ok(()) => Ok(()),
            Err(ChallengeError::Expired) => Err(BindingFailure::Expired),
            Err(_) => Err(BindingFailure::NotIssued(key)),
        }
    }
}

/// A payment of a mechanism the caller does not take.
pub(crate) fn signed_blocks_only() -> Rejection {
    Rejection::new(
        ErrorReason::UnsupportedScheme,
        "only signed-block payments are accepted",
    )
}

/// A payment that does not decode. A payload with neither a `block` nor a client-broadcast
/// key belongs to no mechanism: say which forms are accepted.
fn payment_refusal(e: PaymentError) -> Rejection {
    match e {
        PaymentError::MissingBlock => Rejection::new(
            e.reason(),
            format!(
                "payment: the payload has neither a signed `{}` nor a \
                 client-broadcast proof (one of {})",
                payload_keys::BLOCK,
                CLIENT_BROADCAST_KEYS.join(", ")
            ),
        ),
        e => Rejection::new(e.reason(), format!("payment: {e}")),
    }
}
