//! Nano (XNO) primitives: keys, addresses, state blocks, Ed25519-Blake2b signatures, proof of
//! work, raw amounts and NOMS off-chain messages. Facts and vectors: `tests/vectors/README.md`.

pub mod address;
pub mod amount;
pub mod block;
pub mod keys;
pub mod network;
pub mod noms;
pub mod work;

pub use address::AddressError;
pub use amount::{format_xno, parse_raw, parse_xno, AmountError, RAW_PER_XNO};
pub use block::{BlockError, BlockHash, StateBlock};
pub use keys::{PrivateKey, PublicKey, Signature};
pub use network::Network;
pub use work::WorkThresholds;

use blake2::digest::consts::{U32, U5, U8};
use blake2::{Blake2b, Digest};

/// BLAKE2b-256 of the concatenated parts.
pub fn blake2b_256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub(crate) fn blake2b_64(parts: &[&[u8]]) -> [u8; 8] {
    let mut h = Blake2b::<U8>::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub(crate) fn blake2b_40(data: &[u8]) -> [u8; 5] {
    let mut h = Blake2b::<U5>::new();
    h.update(data);
    h.finalize().into()
}
