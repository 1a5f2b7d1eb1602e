//! The x402 header codec: standard padded base64 of compact UTF-8 JSON.
//!
//! We emit what every reference SDK accepts (standard alphabet, `=` padding) and accept what
//! real Nano clients send (base64url and/or no padding, as `Buffer.toString('base64url')`
//! produces). A value that mixes both alphabets is refused rather than guessed at. The size cap
//! is checked before any decoding so a header bomb costs nothing.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Header values longer than this (in bytes, before decoding) are refused (x402 vectors'
/// `max_header_bytes`; one x402 fork adopted 8 KB after an OOM finding).
pub const MAX_HEADER_BYTES: usize = 8192;

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(true)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);

/// Standard alphabet, padding optional on input, always written on output.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
/// base64url alphabet, padding optional on input.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Why a header value is not acceptable base64.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// Refused before decoding.
    #[error("header value is {len} bytes, over the {max}-byte cap")]
    TooLarge { len: usize, max: usize },
    #[error("header value is empty")]
    Empty,
    /// Both `+`/`/` and `-`/`_` appear: no honest encoder produces that.
    #[error("header value mixes the standard and URL-safe base64 alphabets")]
    MixedAlphabets,
    /// Bad character (including white space), misplaced or excess padding, impossible length
    /// or non-zero trailing bits.
    #[error("header value is not valid base64: {0}")]
    Invalid(base64::DecodeError),
}

/// Why a header could not be read as a given JSON type (for trusted-shape reads such as a
/// client reading `PAYMENT-REQUIRED`; payments use [`super::decode_payment`]).
#[derive(Debug, Error)]
pub enum HeaderDecodeError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("header JSON does not match the expected type: {0}")]
    Json(#[from] serde_json::Error),
}

/// Standard padded base64 of `bytes`.
pub fn encode_bytes(bytes: &[u8]) -> String {
    STANDARD_LENIENT.encode(bytes)
}

/// Standard padded base64 of the compact JSON of `value`, as `JSON.stringify` + `btoa` would
/// write it. Fails only if `value`'s `Serialize` impl fails (never for this module's types).
pub fn try_encode_header<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    serde_json::to_vec(value).map(|json| encode_bytes(&json))
}

/// [`try_encode_header`] for values whose serialization cannot fail, such as every wire type
/// in this module. Should a custom `Serialize` impl fail anyway, the result is `""`, which
/// every decoder refuses: failing closed beats panicking inside Envoy.
pub fn encode_header<T: Serialize + ?Sized>(value: &T) -> String {
    try_encode_header(value).unwrap_or_default()
}

/// Decodes a header value under our acceptance policy; see the module docs.
pub fn decode_header_bytes(value: &str, max_len: usize) -> Result<Vec<u8>, HeaderError> {
    if value.len() > max_len {
        return Err(HeaderError::TooLarge {
            len: value.len(),
            max: max_len,
        });
    }
    if value.is_empty() {
        return Err(HeaderError::Empty);
    }
    let (mut standard, mut url_safe) = (false, false);
    for b in value.bytes() {
        match b {
            b'+' | b'/' => standard = true,
            b'-' | b'_' => url_safe = true,
            _ => {}
        }
    }
    let engine = match (standard, url_safe) {
        (true, true) => return Err(HeaderError::MixedAlphabets),
        (false, true) => &URL_SAFE_LENIENT,
        _ => &STANDARD_LENIENT,
    };
    engine.decode(value).map_err(HeaderError::Invalid)
}

/// Decodes a header value and parses its JSON as `T`.
pub fn decode_header<T: DeserializeOwned>(
    value: &str,
    max_len: usize,
) -> Result<T, HeaderDecodeError> {
    let bytes = decode_header_bytes(value, max_len)?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_checked_before_decoding() {
        // Invalid base64 past the cap must report the size, proving nothing was decoded.
        let big = "%".repeat(MAX_HEADER_BYTES + 1);
        assert_eq!(
            decode_header_bytes(&big, MAX_HEADER_BYTES),
            Err(HeaderError::TooLarge {
                len: MAX_HEADER_BYTES + 1,
                max: MAX_HEADER_BYTES
            })
        );
        assert!(decode_header_bytes("eyJhIjoxfQ==", 11).is_err());
        assert_eq!(
            decode_header_bytes("eyJhIjoxfQ==", 12).as_deref(),
            Ok(&b"{\"a\":1}"[..])
        );
        assert!(matches!(
            decode_header_bytes("eyJhIjoxfQ==", 0),
            Err(HeaderError::TooLarge { .. })
        ));
    }

    #[test]
    fn multi_byte_characters_count_as_bytes() {
        let v = "é".repeat(5); // 10 bytes
        assert!(matches!(
            decode_header_bytes(&v, 9),
            Err(HeaderError::TooLarge { len: 10, .. })
        ));
        assert!(matches!(
            decode_header_bytes(&v, 10),
            Err(HeaderError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_the_policy_cases() {
        assert_eq!(decode_header_bytes("", 10), Err(HeaderError::Empty));
        assert_eq!(
            decode_header_bytes("ab+_", 10),
            Err(HeaderError::MixedAlphabets)
        );
        for bad in [
            " eyJhIjoxfQ==",
            "eyJhIjoxfQ== ",
            "eyJh\tIjoxfQ==",
            "eyJhIjoxfQ\r\n",
            "=",
            "==",
            "a===",
            "ab=c",
            "abcde",
            "eyJhIjoxfQ===",
            // Non-canonical: trailing bits set in the last symbol.
            "eyJhIjoxfR",
        ] {
            assert!(
                matches!(decode_header_bytes(bad, 100), Err(HeaderError::Invalid(_))),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn encodes_standard_padded_and_decodes_both_alphabets() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        let std = encode_bytes(&bytes);
        assert!(std.ends_with('=') && std.contains('+') && std.contains('/'));
        let url = std.replace('+', "-").replace('/', "_");
        let url_unpadded = url.trim_end_matches('=');
        let std_unpadded = std.trim_end_matches('=');
        for v in [std.as_str(), url.as_str(), url_unpadded, std_unpadded] {
            assert_eq!(decode_header_bytes(v, 1000).as_deref(), Ok(&bytes[..]));
        }
    }

    #[test]
    fn typed_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            a: u8,
        }
        let h = encode_header(&T { a: 12 });
        assert_eq!(h, "eyJhIjoxMn0=");
        assert_eq!(decode_header::<T>(&h, 100).ok(), Some(T { a: 12 }));
        assert!(matches!(
            decode_header::<T>("eyJiIjoxfQ", 100),
            Err(HeaderDecodeError::Json(_))
        ));
        assert!(matches!(
            decode_header::<T>("", 100),
            Err(HeaderDecodeError::Header(HeaderError::Empty))
        ));
    }

    #[test]
    fn failing_serialize_yields_empty_not_panic() {
        struct Bad;
        impl serde::Serialize for Bad {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        assert!(try_encode_header(&Bad).is_err());
        assert_eq!(encode_header(&Bad), "");
    }
}
