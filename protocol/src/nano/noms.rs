//! NOMS off-chain messages (OpenRai ORIS-001): a signed statement that can never be a block.
//! payload = "\x18Nano Off-chain Message:\n" ‖ u32 BE byte length ‖ UTF-8 message;
//! digest = BLAKE2b-256(payload); signature = Ed25519-Blake2b over the digest.

use super::{blake2b_256, PrivateKey, PublicKey, Signature};

const MAGIC: &[u8] = b"\x18Nano Off-chain Message:\n";

/// The bytes that are hashed. Messages longer than u32::MAX bytes cannot be expressed.
pub fn payload(message: &str) -> Option<Vec<u8>> {
    let len = u32::try_from(message.len()).ok()?;
    let mut p = Vec::with_capacity(MAGIC.len() + 4 + message.len());
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    Some(p)
}

pub fn digest(message: &str) -> Option<[u8; 32]> {
    payload(message).map(|p| blake2b_256(&[&p]))
}

pub fn sign(key: &PrivateKey, message: &str) -> Option<Signature> {
    digest(message).map(|d| key.sign(&d))
}

pub fn verify(key: &PublicKey, message: &str, signature: &Signature) -> bool {
    digest(message).is_some_and(|d| key.verify(&d, signature))
}
