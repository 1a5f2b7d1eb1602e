//! What an offer is: its mechanism, its payee, and the one constructor from which both the
//! challenge MAC's input and the `accepts[]` entry come.

use super::{ASSET_XNO, SCHEME_EXACT};
use crate::challenge::{self, ChallengeKey, ChallengeStamp, ChallengeTerms};
use crate::nano::{AddressError, PublicKey};
use crate::x402::{JsonObject, PaymentRequirements};
use std::fmt;
use std::str::FromStr;

/// How an offer is paid. Bound into the challenge MAC, so a challenge issued for one mechanism
/// cannot be redeemed through another; written as `extra.mechanism` on offers other than the
/// signed-block default. (A payment's *payload* form is [`crate::x402::PaymentMechanism`];
/// its [`mechanism`](crate::x402::PaymentMechanism::mechanism) says which of these it pays.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// The client signs a send block; the sidecar broadcasts it.
    SignedBlock,
    /// The client broadcasts a send of a session-unique tagged amount.
    TaggedSession,
}

/// A string that names no [`Mechanism`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownMechanism;

impl fmt::Display for UnknownMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a nanogate payment mechanism")
    }
}

impl std::error::Error for UnknownMechanism {}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::SignedBlock, Mechanism::TaggedSession];

    /// The name in the MAC input and in `extra.mechanism`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mechanism::SignedBlock => "block",
            Mechanism::TaggedSession => "tagged",
        }
    }

    /// The name in the payment ledger's `mechanism` column (and the admin API).
    pub const fn ledger_name(self) -> &'static str {
        match self {
            Mechanism::SignedBlock => "signed_block",
            Mechanism::TaggedSession => "tagged",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mechanism {
    type Err = UnknownMechanism;

    /// Reads [`Mechanism::as_str`] names only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or(UnknownMechanism)
    }
}

/// A payee: its public key (what the MAC binds) and its canonical `nano_` address (what
/// `payTo` says). Build it with [`Payee::from_key`] or [`Payee::from_address`] so the two agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payee {
    pub key: PublicKey,
    pub address: String,
}

impl Payee {
    pub fn from_key(key: PublicKey) -> Payee {
        Payee {
            address: key.to_address(),
            key,
        }
    }

    /// Parses `nano_`/`xrb_` addresses; `address` is the canonical `nano_` form.
    pub fn from_address(s: &str) -> Result<Payee, AddressError> {
        PublicKey::from_address(s).map(Payee::from_key)
    }
}

/// One offer's terms. [`Offer::terms`] is what the challenge MAC covers and
/// [`Offer::requirements`] the `accepts[]` entry: both come from these fields, so an offer
/// cannot advertise one thing and bind another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer<'a> {
    /// x402 network id (see [`super::network`]).
    pub network: &'a str,
    pub pay_to: &'a Payee,
    /// Raw.
    pub amount: u128,
    /// How long a challenge for this offer stays valid, and `maxTimeoutSeconds`.
    pub max_timeout_seconds: u64,
    /// What the MAC binds as the resource: the request URL, or a tagged route's scope.
    pub resource: &'a str,
    pub mechanism: Mechanism,
}

impl<'a> Offer<'a> {
    /// The MAC input.
    pub fn terms(&self) -> ChallengeTerms<'a> {
        ChallengeTerms {
            network: self.network,
            scheme: SCHEME_EXACT,
            asset: ASSET_XNO,
            pay_to: self.pay_to.key,
            amount: self.amount,
            resource: self.resource,
            mechanism: self.mechanism,
        }
    }

    /// A fresh stamp: valid for `max_timeout_seconds` from `now`.
    pub fn stamp(&self, now: u64, nonce: [u8; 16], key_id: u64) -> ChallengeStamp {
        ChallengeStamp {
            valid_before: now.saturating_add(self.max_timeout_seconds),
            nonce,
            key_id,
        }
    }

    /// The `accepts[]` entry with the given `extra`.
    pub fn requirements(&self, extra: JsonObject) -> PaymentRequirements {
        PaymentRequirements {
            scheme: SCHEME_EXACT.to_owned(),
            network: self.network.to_owned(),
            amount: self.amount.to_string(),
            asset: ASSET_XNO.to_owned(),
            pay_to: self.pay_to.address.clone(),
            max_timeout_seconds: self.max_timeout_seconds,
            extra,
        }
    }

    /// The `accepts[]` entry of a challenge: `extra` carries the stamp and its MAC under `key`.
    pub fn issue(&self, key: &ChallengeKey, stamp: &ChallengeStamp) -> PaymentRequirements {
        self.requirements(challenge::extra(key, &self.terms(), stamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip_and_are_the_wire_names() {
        for m in Mechanism::ALL {
            assert_eq!(m.as_str().parse::<Mechanism>(), Ok(m));
        }
        assert_eq!(Mechanism::SignedBlock.as_str(), "block");
        assert_eq!(Mechanism::TaggedSession.as_str(), "tagged");
        assert_eq!(Mechanism::SignedBlock.ledger_name(), "signed_block");
        assert_eq!(Mechanism::TaggedSession.ledger_name(), "tagged");
        assert_eq!("signed_block".parse::<Mechanism>(), Err(UnknownMechanism));
    }

    #[test]
    fn an_issued_offer_verifies_against_its_own_terms() {
        let payee = Payee::from_key(PublicKey([9; 32]));
        assert_eq!(Payee::from_address(&payee.address), Ok(payee.clone()));
        let offer = Offer {
            network: "nano:devnet",
            pay_to: &payee,
            amount: 1_000,
            max_timeout_seconds: 60,
            resource: "http://h/paid",
            mechanism: Mechanism::SignedBlock,
        };
        let key = ChallengeKey::derive(b"master secret for tests", 7);
        let stamp = offer.stamp(100, [1; 16], 7);
        assert_eq!(stamp.valid_before, 160);
        let req = offer.issue(&key, &stamp);
        let expected = serde_json::json!({
            "scheme": "exact", "network": "nano:devnet", "amount": "1000", "asset": "XNO",
            "payTo": payee.address, "maxTimeoutSeconds": 60,
            "extra": {"validBefore": 160, "nonce": "01".repeat(16), "keyId": 7,
                      "mac": crate::hex::encode_lower(&challenge::mac(&key, &offer.terms(), &stamp))}
        });
        assert_eq!(serde_json::to_value(&req).ok(), Some(expected));
        let read = challenge::read_extra(&req.extra);
        let Ok((read_stamp, tag)) = read else {
            panic!("extra reads back: {read:?}")
        };
        assert_eq!(
            challenge::verify(&key, &offer.terms(), &read_stamp, &tag, 159),
            Ok(())
        );
        let other = Offer {
            mechanism: Mechanism::TaggedSession,
            ..offer
        };
        assert!(challenge::verify(&key, &other.terms(), &read_stamp, &tag, 159).is_err());
    }
}
