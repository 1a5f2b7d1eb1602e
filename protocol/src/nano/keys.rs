//! Keys and signatures: Ed25519 with BLAKE2b-512 in place of SHA-512, over a 32-byte hash.
//!
//! Verification follows nano-node (ed25519-donna): a signature whose S is not reduced but has
//! its top three bits clear is accepted (`legacy_compatibility`), so we never refuse a block the
//! network accepts.

use super::{address, blake2b_256};
use crate::hex;
use blake2::{Blake2b512, Digest};
use ed25519_dalek::hazmat::{raw_sign, raw_verify, ExpandedSecretKey};
use ed25519_dalek::VerifyingKey;
use std::fmt;

/// An account's public key: the identity that addresses encode and `link` carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PublicKey(pub [u8; 32]);

/// A 64-byte Ed25519-Blake2b signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

/// A 32-byte private key. Its `Debug` never prints the key.
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl PublicKey {
    pub const ZERO: PublicKey = PublicKey([0; 32]);

    pub fn from_hex(s: &str) -> Result<Self, hex::HexError> {
        hex::decode_array(s).map(PublicKey)
    }

    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.0)
    }

    /// Parses a `nano_` or `xrb_` address.
    pub fn from_address(s: &str) -> Result<Self, address::AddressError> {
        address::decode(s).map(PublicKey)
    }

    /// The `nano_` address of this key.
    pub fn to_address(&self) -> String {
        address::encode(&self.0)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }

    /// Verifies `signature` over `message` (for blocks, the 32-byte hash).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let Ok(vk) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        raw_verify::<Blake2b512>(&vk, message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_address())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_address())
    }
}

impl Signature {
    pub fn from_hex(s: &str) -> Result<Self, hex::HexError> {
        hex::decode_array(s).map(Signature)
    }

    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl PrivateKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(bytes)
    }

    pub fn from_hex(s: &str) -> Result<Self, hex::HexError> {
        hex::decode_array(s).map(PrivateKey)
    }

    /// The key at `index` of a wallet seed: BLAKE2b-256(seed ‖ index as u32 big-endian).
    pub fn from_seed(seed: &[u8; 32], index: u32) -> Self {
        PrivateKey(blake2b_256(&[seed, &index.to_be_bytes()]))
    }

    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.0)
    }

    fn expanded(&self) -> ExpandedSecretKey {
        let h: [u8; 64] = Blake2b512::digest(self.0).into();
        ExpandedSecretKey::from_bytes(&h)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(VerifyingKey::from(&self.expanded()).to_bytes())
    }

    /// Deterministic Ed25519-Blake2b signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        let esk = self.expanded();
        let vk = VerifyingKey::from(&esk);
        Signature(raw_sign::<Blake2b512>(&esk, message, &vk).to_bytes())
    }
}

/// The key's bytes are wiped when it is dropped (a payee key the sidecar signs refunds with).
impl Drop for PrivateKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_address())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PublicKey::from_address(&s).map_err(serde::de::Error::custom)
    }
}
