//! Account addresses: `nano_` (or legacy `xrb_`) + 52 base32 characters of the public key with
//! four zero pad bits in front + 8 characters of the reversed BLAKE2b-40 checksum.

use super::blake2b_40;
use thiserror::Error;

const ALPHABET: &[u8; 32] = b"13456789abcdefghijkmnopqrstuwxyz";

/// Why an address was refused, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("address must start with nano_ or xrb_")]
    BadPrefix,
    #[error("address must have 60 characters after the prefix")]
    BadLength,
    #[error("address has a character outside the Nano base32 alphabet")]
    BadChar,
    #[error("address sets one of the four pad bits")]
    PadBits,
    #[error("address checksum does not match")]
    BadChecksum,
}

impl AddressError {
    /// Stable machine-readable name (matches the conformance vectors' `reason`).
    pub fn code(self) -> &'static str {
        match self {
            AddressError::BadPrefix => "bad_prefix",
            AddressError::BadLength => "bad_length",
            AddressError::BadChar => "bad_char",
            AddressError::PadBits => "pad_bits",
            AddressError::BadChecksum => "bad_checksum",
        }
    }
}

fn checksum(key: &[u8; 32]) -> [u8; 5] {
    let mut c = blake2b_40(key);
    c.reverse();
    c
}

/// Appends `bits` (most significant first, a multiple of 5 long) as base32 characters.
fn push_base32(out: &mut String, bytes: &[u8], pad_bits: usize) {
    let total = pad_bits + bytes.len() * 8;
    let bit = |i: usize| -> u8 {
        if i < pad_bits {
            0
        } else {
            let j = i - pad_bits;
            (bytes[j / 8] >> (7 - j % 8)) & 1
        }
    };
    for chunk in 0..total / 5 {
        let mut v = 0u8;
        for k in 0..5 {
            v = (v << 1) | bit(chunk * 5 + k);
        }
        out.push(ALPHABET[v as usize] as char);
    }
}

pub fn encode(key: &[u8; 32]) -> String {
    let mut s = String::with_capacity(65);
    s.push_str("nano_");
    push_base32(&mut s, key, 4);
    push_base32(&mut s, &checksum(key), 0);
    s
}

fn symbol(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Decodes base32 symbols into `N` bytes after skipping `pad_bits` leading bits; returns the
/// skipped bits so the caller can insist they are zero.
fn decode_bits<const N: usize>(symbols: &[u8], pad_bits: usize) -> ([u8; N], u8) {
    let mut out = [0u8; N];
    let mut pad = 0u8;
    for (i, &v) in symbols.iter().enumerate() {
        for k in 0..5 {
            let b = (v >> (4 - k)) & 1;
            let pos = i * 5 + k;
            if pos < pad_bits {
                pad = (pad << 1) | b;
            } else {
                let j = pos - pad_bits;
                out[j / 8] |= b << (7 - j % 8);
            }
        }
    }
    (out, pad)
}

pub fn decode(s: &str) -> Result<[u8; 32], AddressError> {
    let body = s
        .strip_prefix("nano_")
        .or_else(|| s.strip_prefix("xrb_"))
        .ok_or(AddressError::BadPrefix)?;
    if body.len() != 60 {
        return Err(AddressError::BadLength);
    }
    let mut symbols = [0u8; 60];
    for (slot, c) in symbols.iter_mut().zip(body.bytes()) {
        *slot = symbol(c).ok_or(AddressError::BadChar)?;
    }
    let (key, pad) = decode_bits::<32>(&symbols[..52], 4);
    if pad != 0 {
        return Err(AddressError::PadBits);
    }
    let (check, _) = decode_bits::<5>(&symbols[52..], 0);
    if check != checksum(&key) {
        return Err(AddressError::BadChecksum);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_account_round_trips() {
        let a = encode(&[0; 32]);
        assert_eq!(
            a,
            "nano_1111111111111111111111111111111111111111111111111111hifc8npp"
        );
        assert_eq!(decode(&a), Ok([0; 32]));
    }
}
