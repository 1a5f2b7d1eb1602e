//! A payment header read only as far as a proxy needs to find the challenge it answers: the
//! envelope, the echoed offer (`accepted`) and which mechanism `payload` uses, without decoding
//! `payload` itself. The filter checks the echoed offer against its MAC before any sidecar call;
//! the sidecar decodes the whole header again ([`super::decode_payment`]) and refuses a
//! malformed block with the same `invalid_payload` (400) the filter used to answer locally.
//! A full decode costs the filter most of its paid-path work (every field copied into a JSON
//! tree, the block's three addresses checksummed) for values it never reads.
//!
//! The document's syntax is checked by a small scanner that builds nothing (serde's own
//! skipping would bring a second, typed instance of serde_json's parser into the filter
//! module); the members read are then parsed as `serde_json::Value`, as everywhere else in the
//! module. The checks and their order are [`super::decode_payment`]'s (the module docs of
//! `payment`) up to `bad_envelope_field`, then the mechanism rule on `payload`'s keys only.
//! Every refusal here is one the full decode makes too, with the same category, except for JSON
//! that only serde_json's value parser refuses (a number beyond `f64`, an unpaired surrogate
//! escape): in a skipped value (the payload, unknown members) the sidecar refuses it (the same
//! 400 `invalid_payload`), in a member read here it is `not_json` after the checks before it.
//! No honest encoder writes either.

use super::header::decode_header_bytes;
use super::payment::{detail, payload_keys, PaymentError, X402Version, CLIENT_BROADCAST_KEYS};
use super::types::{PaymentRequirements, ResourceInfo};
use crate::contract::Mechanism;
use serde_json::Value;

/// What a payment header says about the offer it answers (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentEcho {
    version: X402Version,
    scheme: String,
    network: String,
    accepted: Option<PaymentRequirements>,
    resource: Option<ResourceInfo>,
    mechanism: Mechanism,
}

impl PaymentEcho {
    pub fn version(&self) -> X402Version {
        self.version
    }

    /// `accepted.scheme` (v2) or the top-level `scheme` (v1).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `accepted.network` (v2) or the top-level `network` (v1).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The offer the client echoed (v2 only). Use it to find the challenge, never to price it.
    pub fn accepted(&self) -> Option<&PaymentRequirements> {
        self.accepted.as_ref()
    }

    /// v2 `resource`, when the client sent one.
    pub fn resource(&self) -> Option<&ResourceInfo> {
        self.resource.as_ref()
    }

    /// The mechanism the payload's keys name (a `block` is a signed block, a client-broadcast
    /// key a tagged session): the one rule of [`super::PaymentMechanism`].
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }
}

/// Reads a `PAYMENT-SIGNATURE` or `X-PAYMENT` header value as far as its echoed offer (see the
/// module docs). `max_len` is normally [`super::MAX_HEADER_BYTES`].
pub fn decode_payment_echo(
    header_value: &str,
    max_len: usize,
) -> Result<PaymentEcho, PaymentError> {
    let bytes = decode_header_bytes(header_value, max_len).map_err(PaymentError::from_header)?;
    std::str::from_utf8(&bytes).map_err(|_| PaymentError::NotUtf8)?;
    let top = document(&bytes).ok_or_else(|| PaymentError::NotJson("not one JSON value".into()))?;
    let Some(members) = top else {
        return Err(PaymentError::NotObject);
    };
    let mut env = Envelope::default();
    for (key, value) in members {
        let slot = match key_text(key).as_deref() {
            Some("x402Version") => &mut env.version,
            Some("accepted") => &mut env.accepted,
            Some("payload") => &mut env.payload,
            Some("resource") => &mut env.resource,
            Some("extensions") => &mut env.extensions,
            Some("scheme") => &mut env.scheme,
            Some("network") => &mut env.network,
            _ => continue,
        };
        // The last of repeated keys wins, as in a `serde_json::Value`.
        *slot = Some(value);
    }
    // JSON writes the integers 1 and 2 one way only (`2.0` and `2e0` are floats, which the
    // full decode's `as_u64` refuses too).
    let version = match env.version {
        Some(b"1") => X402Version::V1,
        Some(b"2") => X402Version::V2,
        _ => return Err(PaymentError::WrongVersion),
    };
    let parse = |raw: &[u8]| {
        serde_json::from_slice::<Value>(raw).map_err(|e| PaymentError::NotJson(detail(&e)))
    };
    let (scheme, network, accepted) = match version {
        X402Version::V2 => {
            let Some(raw) = env.accepted.filter(|r| r.starts_with(b"{")) else {
                return Err(PaymentError::MissingAccepted(
                    "`accepted` is missing or not an object".into(),
                ));
            };
            let accepted: PaymentRequirements = serde_json::from_value(parse(raw)?)
                .map_err(|e| PaymentError::InvalidAccepted(detail(&e)))?;
            (
                accepted.scheme.clone(),
                accepted.network.clone(),
                Some(accepted),
            )
        }
        X402Version::V1 => {
            let text = |raw: Option<&[u8]>| match raw.map(parse).transpose()? {
                Some(Value::String(s)) => Ok(Some(s)),
                _ => Ok(None),
            };
            match (text(env.scheme)?, text(env.network)?) {
                (Some(scheme), Some(network)) => (scheme, network, None),
                _ => {
                    return Err(PaymentError::MissingAccepted(
                        "v1 payment needs string `scheme` and `network`".into(),
                    ))
                }
            }
        }
    };
    let Some(payload) = env.payload.filter(|r| r.starts_with(b"{")) else {
        return Err(PaymentError::MissingPayload);
    };
    // v1 has no resource or extensions; anything under those names there is ignored.
    let resource = match version {
        X402Version::V2 => {
            let resource = match env.resource.filter(|r| *r != b"null") {
                None => None,
                Some(raw) => Some(serde_json::from_value::<ResourceInfo>(parse(raw)?).map_err(
                    |e| PaymentError::BadEnvelopeField {
                        field: "resource",
                        detail: detail(&e),
                    },
                )?),
            };
            if env
                .extensions
                .is_some_and(|r| r != b"null" && !r.starts_with(b"{"))
            {
                return Err(PaymentError::BadEnvelopeField {
                    field: "extensions",
                    detail: "expected an object".into(),
                });
            }
            resource
        }
        X402Version::V1 => None,
    };
    // Only the payload's keys: the mechanism rule.
    let (mut block, mut client_broadcast) = (false, false);
    for (key, _) in document(payload).flatten().unwrap_or_default() {
        match key_text(key).as_deref() {
            Some(payload_keys::BLOCK) => block = true,
            Some(k) if CLIENT_BROADCAST_KEYS.contains(&k) => client_broadcast = true,
            _ => {}
        }
    }
    let mechanism = if block {
        Mechanism::SignedBlock
    } else if client_broadcast {
        Mechanism::TaggedSession
    } else {
        return Err(PaymentError::MissingBlock);
    };
    Ok(PaymentEcho {
        version,
        scheme,
        network,
        accepted,
        resource,
        mechanism,
    })
}

/// The top-level members we read, as raw JSON text.
#[derive(Default)]
struct Envelope<'a> {
    version: Option<&'a [u8]>,
    accepted: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    resource: Option<&'a [u8]>,
    extensions: Option<&'a [u8]>,
    scheme: Option<&'a [u8]>,
    network: Option<&'a [u8]>,
}

/// A key's text (its JSON string, quotes included): as written unless it has escapes, which
/// serde_json undoes.
fn key_text(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let inner = raw.get(1..raw.len().checked_sub(1)?)?;
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner).ok().map(Into::into);
    }
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::String(s)) => Some(s.into()),
        _ => None,
    }
}

/// One object member: the key's JSON string (quotes included) and the value's text.
type Member<'a> = (&'a [u8], &'a [u8]);

/// Checks that `text` (valid UTF-8) is one JSON value, with serde_json's grammar and nesting
/// limit: `None` if it is not; `Some(None)` for a value other than an object; the members of an
/// object, in order.
fn document(text: &[u8]) -> Option<Option<Vec<Member<'_>>>> {
    let mut s = Scanner { text, at: 0 };
    s.space();
    let members = if s.peek() == Some(b'{') {
        let mut members = Vec::new();
        s.object(DEPTH, Some(&mut members))?;
        Some(members)
    } else {
        s.value(DEPTH)?;
        None
    };
    s.space();
    (s.at == text.len()).then_some(members)
}

/// serde_json's recursion limit: at most 127 nested arrays and objects.
const DEPTH: u8 = 128;

struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: u8) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth, None),
            b'[' => self.array(depth),
            b'"' => self.string(),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number(),
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        let end = self.at + w.len();
        (self.text.get(self.at..end)? == w).then(|| self.at = end)
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            (self.digits() > 0).then_some(())?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            (self.digits() > 0).then_some(())?;
        }
        // serde_json refuses a digit right after a leading zero (`01`).
        (!matches!(self.peek(), Some(b'0'..=b'9'))).then_some(())
    }

    /// A string: no control characters, only JSON's escapes (the text is already UTF-8).
    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.at += plain_run(self.text.get(self.at..)?);
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let hex = self.text.get(self.at..self.at + 4)?;
                        hex.iter().all(u8::is_ascii_hexdigit).then_some(())?;
                        self.at += 4;
                    }
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    fn array(&mut self, depth: u8) -> Option<()> {
        let depth = depth.checked_sub(1).filter(|d| *d > 0)?;
        self.eat(b'[')?;
        self.space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.space();
            self.value(depth)?;
            self.space();
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// An object; its members are collected into `members` when given.
    fn object(&mut self, depth: u8, mut members: Option<&mut Vec<Member<'a>>>) -> Option<()> {
        let depth = depth.checked_sub(1).filter(|d| *d > 0)?;
        self.eat(b'{')?;
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.space();
            let key = self.at;
            self.string()?;
            let key = &self.text[key..self.at];
            self.space();
            self.eat(b':')?;
            self.space();
            let value = self.at;
            self.value(depth)?;
            if let Some(m) = members.as_deref_mut() {
                m.push((key, &self.text[value..self.at]));
            }
            self.space();
            match self.next()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }
}

/// How many bytes from the start of `bytes` can stand in a JSON string as they are (not `"`,
/// `\\` or a control character). Most of a payment is long runs of them (hex, base32, base64),
/// so they are skipped eight at a time: a byte of `w` is below `n` (`n` ≤ 0x80) exactly when
/// `(w - n·ONES) & !w & HIGH` has its high bit (the classic SWAR test; borrows only ever flag
/// bytes above a flagged one, so "none flagged" is exact).
pub fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(chunk);
        if below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20)
            != 0
        {
            break;
        }
        at += 8;
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(text: &str) -> bool {
        document(text.as_bytes()).is_some()
    }

    /// The scanner against serde_json's value parser, on the corners of the grammar.
    #[test]
    fn the_scanner_accepts_what_serde_json_accepts() {
        let cases = [
            "{}",
            " { \"a\" : [ 1 , -0.5e+3 , true , false , null , \"\\u00e9\\n\" ] } ",
            "[]",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "01",
            "-",
            "1.",
            "1.e5",
            "1e",
            "1e+",
            "-0",
            "0.0e0",
            ".5",
            "+1",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"tab\there\"",
            "\"é\"",
            "tru",
            "nulll",
            "1 2",
            "",
            "   ",
            "{\"a\":{\"b\":[{}]}}",
            "[\"unterminated]",
            "\"\\\"\"",
        ];
        for text in cases {
            assert_eq!(
                valid(text),
                serde_json::from_str::<Value>(text).is_ok(),
                "{text:?}"
            );
        }
        // The nesting limit, both sides of it, in arrays and objects.
        for depth in [126, 127, 128, 129] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            for text in [arrays, objects] {
                assert_eq!(
                    valid(&text),
                    serde_json::from_str::<Value>(&text).is_ok(),
                    "depth {depth}"
                );
            }
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!valid(&deep), "refused without exhausting the stack");
    }

    #[test]
    fn plain_runs_stop_at_the_first_byte_a_string_cannot_hold() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for at in 0..20 {
                let mut text = vec![b'a'; 20];
                text[at] = special;
                // Neighbours that a sloppy word test could confuse with the special byte.
                if at + 1 < 20 {
                    text[at + 1] = 0x80;
                }
                assert_eq!(plain_run(&text), at, "{special:#x} at {at}");
            }
        }
        for plain in [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff] {
            assert_eq!(plain_run(&[plain; 19]), 19, "{plain:#x}");
        }
        assert_eq!(plain_run(b""), 0);
    }

    proptest::proptest! {
        #[test]
        fn plain_run_is_the_first_special_byte(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let expected = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len());
            proptest::prop_assert_eq!(plain_run(&bytes), expected);
        }

        /// Never stricter than serde_json, and laxer only on numbers beyond `f64`.
        #[test]
        fn the_scanner_agrees_with_serde_json_on_junk(
            text in r#"[\[\]{}",:0-9eE+. tfalsenu\\-]{0,24}"#
        ) {
            match serde_json::from_str::<Value>(&text) {
                Ok(_) => proptest::prop_assert!(valid(&text), "{:?}", text),
                Err(e) if e.to_string().contains("number out of range") => {}
                Err(e) => proptest::prop_assert!(!valid(&text), "{:?}: {}", text, e),
            }
        }
    }

    #[test]
    fn members_are_the_top_level_ones_in_order() {
        let text = br#"{"a":{"b":1},"c":[2,{"d":3}],"a":"x\"y"}"#;
        let members = document(text).flatten().expect("an object");
        let shown: Vec<(&str, &str)> = members
            .iter()
            .map(|(k, v)| {
                (
                    std::str::from_utf8(k).expect("UTF-8"),
                    std::str::from_utf8(v).expect("UTF-8"),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("\"a\"", "{\"b\":1}"),
                ("\"c\"", "[2,{\"d\":3}]"),
                ("\"a\"", "\"x\\\"y\"")
            ]
        );
        assert_eq!(document(b"[1]"), Some(None));
        assert_eq!(key_text(b"\"acc\\u0065pted\"").as_deref(), Some("accepted"));
    }
}
