//! Challenge binding: how the filter issues 402 challenges without calling the sidecar, yet the
//! sidecar accepts payments only against challenges this system issued.
//!
//! The sidecar derives a short-lived key per key id (`key_id = unix_time / rotation_secs`) from
//! its configured master secret and hands the current one to the filter. The filter puts
//! `validBefore`, a random `nonce`, the `keyId` and a MAC in the challenge's `extra`; the MAC is
//! keyed BLAKE2b-256 over every field the payment must honour (network, scheme, asset, payTo,
//! amount, resource, expiry, nonce, mechanism). On the retry, anyone holding the key recomputes
//! the MAC from *its own* copy of the route's terms and the request's URL, so a mutated amount,
//! a forged or foreign challenge, or one issued for another route fails the comparison. The
//! client's echoed `accepted` is never trusted for anything but the nonce, expiry and MAC.

use crate::hex;
use crate::nano::PublicKey;
use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::Blake2bMac;
use thiserror::Error;

/// Domain separation for the MAC input; bump the suffix to change the encoding.
const MAC_DOMAIN: &[u8] = b"nanogate-challenge-v1";
const KEY_DOMAIN: &[u8] = b"nanogate-challenge-key-v1";

/// `extra` keys carried by every nanogate challenge.
pub const EXTRA_VALID_BEFORE: &str = "validBefore";
pub const EXTRA_NONCE: &str = "nonce";
pub const EXTRA_KEY_ID: &str = "keyId";
pub const EXTRA_MAC: &str = "mac";
/// `extra` key naming the mechanism of an offer other than a signed block
/// ([`Mechanism::as_str`]).
pub const EXTRA_MECHANISM: &str = "mechanism";
/// `extra` key of a tagged offer's session ([`crate::contract::NanoSession`]).
pub const EXTRA_NANO_SESSION: &str = "nanoSession";
/// `extra` key of the resource URL in requirements issued by the facilitator's `/v1/challenge`.
pub const EXTRA_RESOURCE: &str = "resource";

/// The mechanism an offer is issued for, bound into the MAC (defined with the contract).
pub use crate::contract::Mechanism;

/// A 32-byte challenge key, as derived by the sidecar and held by the filter. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ChallengeKey(pub [u8; 32]);

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey(<redacted>)")
    }
}

/// On the wire (`/v1/challenge-key`): 64 hex digits. Errors never quote the value.
impl serde::Serialize for ChallengeKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ChallengeKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ChallengeKey::from_hex(&s)
            .map_err(|_| serde::de::Error::custom("challenge key is not 64 hex digits"))
    }
}

impl ChallengeKey {
    /// The key for `key_id`, derived from the sidecar's master secret (any length ≥ 16 bytes
    /// is sensible; the caller enforces its policy).
    pub fn derive(master: &[u8], key_id: u64) -> ChallengeKey {
        ChallengeKey(keyed_hash(master, &[KEY_DOMAIN, &key_id.to_be_bytes()]))
    }

    pub fn from_hex(s: &str) -> Result<Self, hex::HexError> {
        hex::decode_array(s).map(ChallengeKey)
    }

    pub fn to_hex(&self) -> String {
        hex::encode_lower(&self.0)
    }
}

/// The key id in force at `unix_secs` for a rotation period of `rotation_secs` (≥ 1).
pub fn key_id_at(unix_secs: u64, rotation_secs: u64) -> u64 {
    unix_secs / rotation_secs.max(1)
}

/// Everything a challenge commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeTerms<'a> {
    pub network: &'a str,
    pub scheme: &'a str,
    pub asset: &'a str,
    pub pay_to: PublicKey,
    pub amount: u128,
    /// The URL the challenge was issued for (`ResourceInfo.url`).
    pub resource: &'a str,
    pub mechanism: Mechanism,
}

/// The per-challenge values the filter chooses and the client echoes in `accepted.extra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeStamp {
    pub valid_before: u64,
    pub nonce: [u8; 16],
    pub key_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChallengeError {
    #[error("challenge field `{0}` is missing or has the wrong type")]
    Missing(&'static str),
    #[error("challenge field `{0}` is malformed")]
    Malformed(&'static str),
    #[error("challenge MAC does not match what this system issued")]
    BadMac,
    #[error("challenge expired")]
    Expired,
    #[error("challenge key is not current")]
    UnknownKey,
}

pub(crate) fn keyed_hash(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // BLAKE2b accepts keys of 1..=64 bytes; hash longer or empty secrets down to 32 bytes first.
    let owned;
    let key = if key.is_empty() || key.len() > 64 {
        owned = crate::nano::blake2b_256(&[key]);
        &owned[..]
    } else {
        key
    };
    let Ok(mut mac) = Blake2bMac::<U32>::new_from_slice(key) else {
        // Unreachable: the length was checked above. Fall back to an unkeyed hash that can
        // never equal a keyed one in practice rather than panicking.
        return crate::nano::blake2b_256(parts);
    };
    for p in parts {
        mac.update(&(p.len() as u32).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The MAC over `terms` and `stamp` under `key`: the keyed BLAKE2b of the length-prefixed
/// parts, in the order [`MacPrefix`] absorbs them (the one place that order is written).
pub fn mac(key: &ChallengeKey, terms: &ChallengeTerms<'_>, stamp: &ChallengeStamp) -> [u8; 32] {
    match MacPrefix::new(key, terms) {
        Some(prefix) => prefix.finish(terms, stamp),
        // Unreachable (a challenge key is 32 bytes, a valid BLAKE2b key length). Still a value
        // no one without the key can compute, never a constant a forger could present.
        None => {
            crate::nano::blake2b_256(&[MAC_DOMAIN, &key.0, terms.resource.as_bytes(), &stamp.nonce])
        }
    }
}

/// A challenge MAC hashed as far as the terms a route fixes (domain, network, scheme, asset,
/// payee, amount) under one key; [`MacPrefix::finish`] adds the per-challenge rest. Gives the
/// same bytes as [`mac`] (tested) with one BLAKE2b block less per challenge: the filter keeps
/// one per route and key for its 402s.
#[derive(Clone)]
pub struct MacPrefix {
    key: ChallengeKey,
    state: Blake2bMac<U32>,
}

impl std::fmt::Debug for MacPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacPrefix(<redacted>)")
    }
}

fn absorb(state: &mut Blake2bMac<U32>, part: &[u8]) {
    state.update(&(part.len() as u32).to_be_bytes());
    state.update(part);
}

impl MacPrefix {
    /// The state after `key` and the fixed parts of `terms`.
    pub fn new(key: &ChallengeKey, terms: &ChallengeTerms<'_>) -> Option<MacPrefix> {
        let mut state = Blake2bMac::<U32>::new_from_slice(&key.0).ok()?;
        for part in [
            MAC_DOMAIN,
            terms.network.as_bytes(),
            terms.scheme.as_bytes(),
            terms.asset.as_bytes(),
            &terms.pay_to.0,
            &terms.amount.to_be_bytes(),
        ] {
            absorb(&mut state, part);
        }
        Some(MacPrefix {
            key: key.clone(),
            state,
        })
    }

    /// Whether this prefix was computed under `key` (the caller keeps one per set of fixed
    /// terms; the key rotates).
    pub fn is_for(&self, key: &ChallengeKey) -> bool {
        self.key == *key
    }

    /// The MAC of `terms` and `stamp`, whose fixed terms must be the ones this prefix hashed.
    pub fn finish(&self, terms: &ChallengeTerms<'_>, stamp: &ChallengeStamp) -> [u8; 32] {
        let mut state = self.state.clone();
        for part in [
            terms.resource.as_bytes(),
            terms.mechanism.as_str().as_bytes(),
            &stamp.valid_before.to_be_bytes(),
            &stamp.nonce,
            &stamp.key_id.to_be_bytes(),
        ] {
            absorb(&mut state, part);
        }
        state.finalize().into_bytes().into()
    }
}

/// Builds the `extra` object of a challenge.
pub fn extra(
    key: &ChallengeKey,
    terms: &ChallengeTerms<'_>,
    stamp: &ChallengeStamp,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert(EXTRA_VALID_BEFORE.into(), stamp.valid_before.into());
    m.insert(EXTRA_NONCE.into(), hex::encode_lower(&stamp.nonce).into());
    m.insert(EXTRA_KEY_ID.into(), stamp.key_id.into());
    m.insert(
        EXTRA_MAC.into(),
        hex::encode_lower(&mac(key, terms, stamp)).into(),
    );
    m
}

/// Reads the stamp and MAC a client echoed back in `accepted.extra`.
pub fn read_extra(
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<(ChallengeStamp, [u8; 32]), ChallengeError> {
    let valid_before = extra
        .get(EXTRA_VALID_BEFORE)
        .and_then(serde_json::Value::as_u64)
        .ok_or(ChallengeError::Missing(EXTRA_VALID_BEFORE))?;
    let key_id = extra
        .get(EXTRA_KEY_ID)
        .and_then(serde_json::Value::as_u64)
        .ok_or(ChallengeError::Missing(EXTRA_KEY_ID))?;
    let nonce = extra
        .get(EXTRA_NONCE)
        .and_then(serde_json::Value::as_str)
        .ok_or(ChallengeError::Missing(EXTRA_NONCE))?;
    let nonce =
        hex::decode_array::<16>(nonce).map_err(|_| ChallengeError::Malformed(EXTRA_NONCE))?;
    let tag = extra
        .get(EXTRA_MAC)
        .and_then(serde_json::Value::as_str)
        .ok_or(ChallengeError::Missing(EXTRA_MAC))?;
    let tag = hex::decode_array::<32>(tag).map_err(|_| ChallengeError::Malformed(EXTRA_MAC))?;
    Ok((
        ChallengeStamp {
            valid_before,
            nonce,
            key_id,
        },
        tag,
    ))
}

/// Checks a presented challenge against our own terms: MAC first (constant time), then expiry.
/// Key-id policy (which ids are still honoured) is the caller's, since only it knows the clock
/// and the rotation period.
pub fn verify(
    key: &ChallengeKey,
    terms: &ChallengeTerms<'_>,
    stamp: &ChallengeStamp,
    presented_mac: &[u8; 32],
    now_unix: u64,
) -> Result<(), ChallengeError> {
    let expected = mac(key, terms, stamp);
    if !constant_time_eq(&expected, presented_mac) {
        return Err(ChallengeError::BadMac);
    }
    if stamp.valid_before <= now_unix {
        return Err(ChallengeError::Expired);
    }
    Ok(())
}

pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn terms(amount: u128, resource: &str) -> ChallengeTerms<'_> {
        ChallengeTerms {
            network: "nano:devnet",
            scheme: "exact",
            asset: "XNO",
            pay_to: PublicKey([9; 32]),
            amount,
            resource,
            mechanism: Mechanism::SignedBlock,
        }
    }

    const STAMP: ChallengeStamp = ChallengeStamp {
        valid_before: 1_000,
        nonce: [1; 16],
        key_id: 7,
    };

    proptest::proptest! {
        /// The filter's cached prefix gives exactly the MAC the sidecar computes in one go.
        #[test]
        fn prefix_then_finish_is_the_mac(
            key in proptest::prelude::any::<[u8; 32]>(),
            network in ".{0,40}",
            amount in proptest::prelude::any::<u128>(),
            resources in proptest::collection::vec(".{0,200}", 1..4),
            tagged in proptest::prelude::any::<bool>(),
            valid_before in proptest::prelude::any::<u64>(),
            nonce in proptest::prelude::any::<[u8; 16]>(),
            key_id in proptest::prelude::any::<u64>(),
        ) {
            let key = ChallengeKey(key);
            let stamp = ChallengeStamp { valid_before, nonce, key_id };
            let mechanism = if tagged { Mechanism::TaggedSession } else { Mechanism::SignedBlock };
            let fixed = ChallengeTerms { network: &network, mechanism, ..terms(amount, "") };
            let prefix = MacPrefix::new(&key, &fixed).unwrap();
            proptest::prop_assert!(prefix.is_for(&key));
            proptest::prop_assert!(!prefix.is_for(&ChallengeKey([key.0[0] ^ 1; 32])) || key.0.iter().all(|b| *b == key.0[0] ^ 1));
            // One prefix serves many challenges; each is the keyed hash of the parts in the
            // documented order (spelled out here independently of `MacPrefix`).
            for resource in &resources {
                let t = ChallengeTerms { resource, ..fixed.clone() };
                let reference = keyed_hash(&key.0, &[
                    MAC_DOMAIN, t.network.as_bytes(), t.scheme.as_bytes(), t.asset.as_bytes(),
                    &t.pay_to.0, &t.amount.to_be_bytes(), t.resource.as_bytes(),
                    t.mechanism.as_str().as_bytes(), &stamp.valid_before.to_be_bytes(),
                    &stamp.nonce, &stamp.key_id.to_be_bytes(),
                ]);
                proptest::prop_assert_eq!(prefix.finish(&t, &stamp), mac(&key, &t, &stamp));
                proptest::prop_assert_eq!(mac(&key, &t, &stamp), reference);
            }
        }
    }

    #[test]
    fn issued_challenge_verifies_and_round_trips_through_extra() {
        let key = ChallengeKey::derive(b"master secret for tests", 7);
        let t = terms(5, "http://h/paid");
        let extra = extra(&key, &t, &STAMP);
        let (stamp, tag) = read_extra(&extra).unwrap();
        assert_eq!(stamp, STAMP);
        assert_eq!(verify(&key, &t, &stamp, &tag, 999), Ok(()));
    }

    #[test]
    fn mutated_amount_resource_mechanism_or_key_is_forged() {
        let key = ChallengeKey::derive(b"master secret for tests", 7);
        let tag = mac(&key, &terms(5, "http://h/paid"), &STAMP);
        let wrong_amount = terms(4, "http://h/paid");
        let other_route = terms(5, "http://h/other");
        let mut other_mech = terms(5, "http://h/paid");
        other_mech.mechanism = Mechanism::TaggedSession;
        for t in [wrong_amount, other_route, other_mech] {
            assert_eq!(
                verify(&key, &t, &STAMP, &tag, 0),
                Err(ChallengeError::BadMac)
            );
        }
        let other_key = ChallengeKey::derive(b"master secret for tests", 8);
        let t = terms(5, "http://h/paid");
        assert_eq!(
            verify(&other_key, &t, &STAMP, &tag, 0),
            Err(ChallengeError::BadMac)
        );
        let mut later = STAMP;
        later.valid_before += 1;
        assert_eq!(
            verify(&key, &t, &later, &tag, 0),
            Err(ChallengeError::BadMac)
        );
    }

    #[test]
    fn expired_challenge_is_refused() {
        let key = ChallengeKey::derive(b"k", 7);
        let t = terms(5, "r");
        let tag = mac(&key, &t, &STAMP);
        assert_eq!(
            verify(&key, &t, &STAMP, &tag, 1_000),
            Err(ChallengeError::Expired)
        );
    }

    #[test]
    fn malformed_extra_is_a_clear_error() {
        let mut m = serde_json::Map::new();
        assert_eq!(
            read_extra(&m),
            Err(ChallengeError::Missing(EXTRA_VALID_BEFORE))
        );
        m.insert(EXTRA_VALID_BEFORE.into(), 5.into());
        m.insert(EXTRA_KEY_ID.into(), 1.into());
        m.insert(EXTRA_NONCE.into(), "zz".into());
        assert_eq!(read_extra(&m), Err(ChallengeError::Malformed(EXTRA_NONCE)));
    }
}
