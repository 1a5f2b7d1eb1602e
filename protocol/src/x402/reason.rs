//! Every x402 error reason string nanogate emits, defined once.
//!
//! The filter puts these in `PAYMENT-REQUIRED.error`, the sidecar in `VerifyResponse.invalidReason`
//! and `SettlementResponse.errorReason`. The spec's codes come first; the Nano ones follow the
//! spec's snake_case style without a chain prefix, since the network id already says "nano".

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A string that is not one of [`ErrorReason`]'s wire names. Reasons are open strings in x402,
/// so callers reading other parties' responses should keep the raw string when this happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("not an x402 error reason nanogate knows")]
pub struct UnknownErrorReason;

macro_rules! error_reasons {
    ($($(#[$doc:meta])* $variant:ident => $wire:literal,)+) => {
        /// An x402 error reason: `as_str()` is the wire string, and serde reads and writes it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorReason {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorReason {
            /// Every reason, in declaration order (for tests and documentation).
            pub const ALL: &'static [ErrorReason] = &[$(ErrorReason::$variant,)+];

            /// The exact wire string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorReason::$variant => $wire,)+
                }
            }
        }

        impl FromStr for ErrorReason {
            type Err = UnknownErrorReason;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok(ErrorReason::$variant),)+
                    _ => Err(UnknownErrorReason),
                }
            }
        }
    };
}

error_reasons! {
    // --- x402 specification (v2 §9) and the legacy SDK list ---
    /// The payer's balance cannot cover the amount.
    InsufficientFunds => "insufficient_funds",
    /// The payment names a network this route does not accept.
    InvalidNetwork => "invalid_network",
    /// The payment header or body is malformed (bad base64, JSON, shape or block fields).
    InvalidPayload => "invalid_payload",
    /// The requirements the client echoed are not ones we issued or are malformed.
    InvalidPaymentRequirements => "invalid_payment_requirements",
    /// The payment names a scheme other than the one offered.
    InvalidScheme => "invalid_scheme",
    /// The scheme is well-formed but not one this server supports.
    UnsupportedScheme => "unsupported_scheme",
    /// `x402Version` is missing or not a version we speak (1 or 2).
    InvalidX402Version => "invalid_x402_version",
    /// The ledger state does not allow the transaction (generic settlement failure).
    InvalidTransactionState => "invalid_transaction_state",
    /// Verification failed for an internal reason; the payment itself may be fine.
    UnexpectedVerifyError => "unexpected_verify_error",
    /// Settlement failed for an internal reason; the payment itself may be fine.
    UnexpectedSettleError => "unexpected_settle_error",
    /// The payment's validity window has passed.
    PaymentExpired => "payment_expired",
    /// This payment was already settled (replayed).
    DuplicateSettlement => "duplicate_settlement",

    // --- nanogate: challenge binding ---
    /// The challenge binding does not verify: forged, altered, or not issued by us.
    InvalidChallenge => "invalid_challenge",
    /// The challenge we issued has expired.
    ChallengeExpired => "challenge_expired",
    /// The challenge was issued for another route or resource.
    ResourceMismatch => "resource_mismatch",

    // --- nanogate: signed-block payments ---
    /// The send's `link` is not the issued payee's public key.
    WrongDestination => "wrong_destination",
    /// The block's signature does not verify against its account.
    InvalidSignature => "invalid_signature",
    /// The block's proof of work is below the send threshold.
    InsufficientWork => "insufficient_work",
    /// The block does not build on the payer's current frontier.
    StaleFrontier => "stale_frontier",
    /// The balance decrement differs from the issued amount (under- or over-payment).
    AmountMismatch => "amount_mismatch",
    /// Another attempt on the same `previous` is already in flight.
    DuplicateFrontier => "duplicate_frontier",
    /// The block or proof was already consumed by an earlier request.
    AlreadySpent => "already_spent",
    /// The block was not confirmed within the confirmation timeout.
    BlockNotConfirmed => "block_not_confirmed",
    /// A conflicting block won the election for this `previous`.
    ForkLost => "fork_lost",
    /// No node accepted the block for broadcast.
    BroadcastFailed => "broadcast_failed",
    /// No Nano node could be reached to verify or settle.
    LedgerUnavailable => "ledger_unavailable",

    // --- nanogate: transport ---
    /// No payment was presented: the plain challenge.
    PaymentRequired => "payment_required",
    /// A payment header exceeds the size cap and was not decoded.
    HeaderTooLarge => "header_too_large",
    /// Too many payment presentations from one source or payer: retry after `Retry-After`.
    RateLimited => "rate_limited",

    // --- nanogate: later mechanisms (tagged sessions, proofs) ---
    /// The payment names a session we never issued or that was forgotten.
    UnknownSession => "unknown_session",
    /// The payment's session does not match the block's amount, payee or route.
    SessionMismatch => "session_mismatch",
    /// The payment proves a block confirmed before its challenge was issued.
    PaymentTooEarly => "payment_too_early",
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom("unknown x402 error reason"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_reason_round_trips_through_str_display_and_serde() {
        for &r in ErrorReason::ALL {
            assert_eq!(r.as_str().parse::<ErrorReason>(), Ok(r));
            assert_eq!(r.to_string(), r.as_str());
            let json = serde_json::to_string(&r).expect("serialize");
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<ErrorReason>(&json).ok(), Some(r));
        }
    }

    #[test]
    fn wire_strings_are_unique_snake_case() {
        let mut seen = BTreeSet::new();
        for &r in ErrorReason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "duplicate wire string {s}");
            assert!(
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{s} is not snake_case"
            );
            assert!(!s.starts_with("nano_"), "{s} carries a chain prefix");
        }
        assert_eq!(seen.len(), 32);
    }

    #[test]
    fn spec_codes_are_spelled_as_the_spec() {
        let spec = [
            "insufficient_funds",
            "invalid_network",
            "invalid_payload",
            "invalid_payment_requirements",
            "invalid_scheme",
            "unsupported_scheme",
            "invalid_x402_version",
            "invalid_transaction_state",
            "unexpected_verify_error",
            "unexpected_settle_error",
            "payment_expired",
            "duplicate_settlement",
        ];
        for s in spec {
            assert!(s.parse::<ErrorReason>().is_ok(), "{s}");
        }
    }

    #[test]
    fn unknown_strings_are_rejected_not_guessed() {
        for s in [
            "",
            "INVALID_PAYLOAD",
            "invalid_payload ",
            "error_invalid_block",
        ] {
            assert_eq!(s.parse::<ErrorReason>(), Err(UnknownErrorReason));
        }
        assert!(serde_json::from_str::<ErrorReason>("\"nope\"").is_err());
        assert!(serde_json::from_str::<ErrorReason>("3").is_err());
    }
}
