//! Strict fixed-length hex, case-insensitive on input, upper case on output (as nano-node
//! prints keys, hashes and signatures).

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HexError {
    #[error("expected {expected} hex characters, got {got}")]
    Length { expected: usize, got: usize },
    #[error("not a hex character at position {0}")]
    Char(usize),
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes exactly `2 * N` hex characters.
pub fn decode_array<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            got: bytes.len(),
        });
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(HexError::Char(2 * i))?;
        let lo = nibble(pair[1]).ok_or(HexError::Char(2 * i + 1))?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

/// Decodes any even-length hex string.
pub fn decode_vec(s: &str) -> Result<Vec<u8>, HexError> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(HexError::Length {
            expected: bytes.len() + 1,
            got: bytes.len(),
        });
    }
    bytes
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            let hi = nibble(pair[0]).ok_or(HexError::Char(2 * i))?;
            let lo = nibble(pair[1]).ok_or(HexError::Char(2 * i + 1))?;
            Ok((hi << 4) | lo)
        })
        .collect()
}

const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";

fn encode_with(bytes: &[u8], table: &[u8; 16]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_with(&mut out, bytes, table);
    out
}

fn push_with(out: &mut String, bytes: &[u8], table: &[u8; 16]) {
    // Through a byte buffer, not `String::push`, which re-encodes each char as UTF-8: that made
    // hex a tenth of the filter's work per 402 (the MAC and nonce of every challenge).
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(buf.len() / 2) {
        let mut i = 0;
        for b in chunk {
            buf[i] = table[(b >> 4) as usize];
            buf[i + 1] = table[(b & 0x0f) as usize];
            i += 2;
        }
        // Always ASCII: both tables are.
        out.push_str(std::str::from_utf8(&buf[..i]).unwrap_or_default());
    }
}

/// Appends the lower-case hex of `bytes` to `out` (no intermediate string).
pub fn push_lower(out: &mut String, bytes: &[u8]) {
    push_with(out, bytes, LOWER)
}

pub fn encode_upper(bytes: &[u8]) -> String {
    encode_with(bytes, UPPER)
}

pub fn encode_lower(bytes: &[u8]) -> String {
    encode_with(bytes, LOWER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        assert_eq!(decode_array::<2>("aBcD"), Ok([0xab, 0xcd]));
        assert_eq!(encode_upper(&[0xab, 0x01]), "AB01");
        assert_eq!(encode_lower(&[0xab, 0x01]), "ab01");
        let long: Vec<u8> = (0..=255).collect();
        let mut pushed = String::from("x");
        push_lower(&mut pushed, &long);
        assert_eq!(pushed.len(), 1 + 512);
        assert_eq!(&pushed[1..], encode_lower(&long));
        assert!(pushed.ends_with("fdfeff") && pushed.starts_with("x000102"));
        assert!(matches!(
            decode_array::<2>("abc"),
            Err(HexError::Length { .. })
        ));
        assert_eq!(decode_array::<2>("0xab"), Err(HexError::Char(1)));
        assert_eq!(decode_vec("zz"), Err(HexError::Char(0)));
    }
}
