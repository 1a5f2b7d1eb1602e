//! A presented tagged session, checked without I/O once the shared steps passed
//! ([`crate::engine::mechanism`]): the payload names the session and, optionally, its send;
//! the offer's MAC binds the session's terms.

use super::super::mechanism::{self, BindingFailure, Payment};
use super::super::{Engine, PaymentInput, Rejection};
use nanogate_protocol::contract::Mechanism;
use nanogate_protocol::hex;
use nanogate_protocol::nano::{BlockHash, PublicKey};
use nanogate_protocol::x402::payload_keys::{PROOF, SESSION_ID};
use nanogate_protocol::x402::{ErrorReason, JsonObject};
use serde_json::Value;

/// What the presented payment claims, after the payload and MAC checks.
pub(super) struct Presented {
    pub session_id: String,
    pub pay_to: PublicKey,
    pub amount: u128,
    pub valid_before: u64,
    pub proof: Option<BlockHash>,
}

impl Engine {
    /// The payload, then the session's binding. Pure. An expired session still passes here
    /// (judged as of its last valid second): a payment made in time may be finished later.
    pub(super) fn presented_session(
        &self,
        input: &PaymentInput,
        payment: &Payment,
        now: u64,
    ) -> Result<Presented, Rejection> {
        let payload = payment.decoded.payload();
        let proof = read_proof(payload)?;
        let req = &input.requirements;
        let (stamp, tag) = mechanism::read_challenge(req)?;
        let session_id = hex::encode_lower(&stamp.nonce);
        if let Some(claimed) = payload.get(SESSION_ID) {
            let claimed = claimed.as_str().map(str::to_ascii_lowercase);
            if claimed.as_deref() != Some(session_id.as_str()) {
                return Err(Rejection::new(
                    ErrorReason::SessionMismatch,
                    "payload.sessionId is not the session of the accepted offer",
                ));
            }
        }
        let terms = payment.terms(&self.cfg.network, &input.resource, Mechanism::TaggedSession);
        self.authenticate(&terms, &stamp, &tag, now, false)
            .map_err(|f| {
                let message = match f {
                    BindingFailure::UnknownKey => "session key id is neither current nor previous",
                    BindingFailure::NotIssued(_) | BindingFailure::Expired => {
                        "the session was not issued by this system for these terms"
                    }
                };
                Rejection::new(ErrorReason::InvalidChallenge, message)
            })?;
        Ok(Presented {
            session_id,
            pay_to: payment.payee.key,
            amount: payment.amount,
            valid_before: stamp.valid_before,
            proof,
        })
    }
}

/// The send the payload names (`proof`), if any. A client-broadcast payload that names no
/// session either (a NOMS `blockHash` proof) is not a tagged session.
fn read_proof(payload: &JsonObject) -> Result<Option<BlockHash>, Rejection> {
    if !payload.contains_key(SESSION_ID) && !payload.contains_key(PROOF) {
        return Err(Rejection::new(
            ErrorReason::UnsupportedScheme,
            "proof payments (blockHash + signature) are not accepted; present a tagged session",
        ));
    }
    match payload.get(PROOF) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| BlockHash::from_hex(s).ok())
            .map(Some)
            .ok_or_else(|| {
                Rejection::new(
                    ErrorReason::InvalidPayload,
                    "payload.proof must be a 64-hex block hash",
                )
            }),
    }
}
