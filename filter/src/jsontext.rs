//! Hand-written JSON text: the 402 bodies and offers on the hot path are rendered by hand (no
//! serde work per request), from these pieces.

use nanogate_protocol::contract::{ASSET_XNO, SCHEME_EXACT};

/// An `exact` offer's terms up to `maxTimeoutSeconds`, in `PaymentRequirements`' field order,
/// after its opening `{`: every offer we render (the 402's, a pass's, `/.well-known/x402`'s)
/// starts with these.
pub fn push_offer_terms(
    out: &mut String,
    network: &str,
    amount_raw: u128,
    pay_to: &str,
    max_timeout_secs: u64,
) {
    out.push_str("\"scheme\":");
    push_json_str(out, SCHEME_EXACT);
    out.push_str(",\"network\":");
    push_json_str(out, network);
    out.push_str(",\"amount\":\"");
    push_num(out, amount_raw);
    out.push_str("\",\"asset\":");
    push_json_str(out, ASSET_XNO);
    out.push_str(",\"payTo\":");
    push_json_str(out, pay_to);
    out.push_str(",\"maxTimeoutSeconds\":");
    push_num(out, u128::from(max_timeout_secs));
}

/// Appends the decimal digits of `n`. By hand: every `to_string()` site would otherwise bring
/// its own copy of the formatting machinery into the module.
pub fn push_num(out: &mut String, n: u128) {
    // u64 arithmetic where the number fits (key ids, timestamps, most amounts): a u128
    // division is a library call. Larger numbers go 19 digits at a time.
    const CHUNK: u128 = 10_000_000_000_000_000_000;
    match u64::try_from(n) {
        Ok(v) => push_u64(out, v, 0),
        Err(_) => {
            push_num(out, n / CHUNK);
            push_u64(out, (n % CHUNK) as u64, 19);
        }
    }
}

/// Appends `v`'s digits, zero-padded to `width`.
fn push_u64(out: &mut String, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width);
    // Always ASCII digits.
    out.push_str(std::str::from_utf8(&buf[start..]).unwrap_or_default());
}

/// The decimal digits of `n`.
pub fn num(n: u128) -> String {
    let mut out = String::new();
    push_num(&mut out, n);
    out
}

/// `s` as a JSON string literal (quoted and escaped).
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Appends [`json_str`]`(s)`; a string with nothing to escape (the usual resource URL) is
/// quoted as is. serde_json escapes exactly `"`, `\\` and control characters.
pub fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&json_str(s));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn strings_match_serde(s in r#"\PC{0,20}|["\\\x00-\x1fa\x7fé/]{0,8}"#) {
            let mut out = String::from("x");
            push_json_str(&mut out, &s);
            proptest::prop_assert_eq!(&out[1..], serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn every_number_matches_to_string(n in proptest::prelude::any::<u128>(), small in proptest::prelude::any::<u64>()) {
            for v in [n, u128::from(small)] {
                proptest::prop_assert_eq!(num(v), v.to_string());
            }
        }
    }

    #[test]
    fn numbers_match_to_string() {
        for n in [0u128, 7, 10, 1_000_000, u128::from(u64::MAX), u128::MAX] {
            assert_eq!(num(n), n.to_string());
        }
    }
}
