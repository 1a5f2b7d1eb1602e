//! Parsing a payment header (`PAYMENT-SIGNATURE` v2 or `X-PAYMENT` v1) from untrusted input
//! into a [`DecodedPayment`], with every failure sorted into one category.
//!
//! Checks run in this order, and the first failure wins (the `malformed[]` conformance
//! vectors pin it): `header_too_large`, `not_base64`, `not_json` (including not UTF-8),
//! `not_object`, `wrong_x402_version`, `missing_accepted`, `missing_payload`,
//! `bad_envelope_field` (ours: a malformed optional `resource` or `extensions`),
//! `block_missing_fields`, `bad_block_field`, `bad_hex_field`.
//!
//! **Mechanism rule.** `payload` is parsed as a signed block when it has a `block` key. If it
//! has no `block` but one of [`CLIENT_BROADCAST_KEYS`], it is a client-broadcast payment (a
//! proof or tagged-session payload) and is left for the sidecar to interpret. Otherwise the
//! payment is refused as `block_missing_fields`, because the signed block is the only
//! mechanism every Nano x402 client speaks.
//!
//! Decoding proves only that the payment is well-formed. Whether it pays what we issued is the
//! sidecar's job, using the challenge we issued, never `accepted`.

use super::header::{decode_header_bytes, HeaderError};
use super::reason::ErrorReason;
use super::types::{JsonObject, PaymentPayload, PaymentRequirements, ResourceInfo, X402_VERSION_2};
use super::v1::PaymentPayloadV1;
use crate::nano::{BlockError, StateBlock};
use serde_json::Value;
use thiserror::Error;

/// `payload` keys, as x402 Nano clients write them.
pub mod payload_keys {
    /// The signed send block (we broadcast it).
    pub const BLOCK: &str = "block";
    /// The hash of a send the client broadcast (x402.Nano rev 6–7 tagged session).
    pub const PROOF: &str = "proof";
    /// The hash of a send the client broadcast (rev 8 NOMS proof).
    pub const BLOCK_HASH: &str = "blockHash";
    /// The tagged session a client-broadcast payment pays.
    pub const SESSION_ID: &str = "sessionId";
}

/// `payload` keys that mark a payment the client broadcast itself.
pub const CLIENT_BROADCAST_KEYS: &[&str] = &[
    payload_keys::PROOF,
    payload_keys::BLOCK_HASH,
    payload_keys::SESSION_ID,
];

/// Whether `payload` is a client-broadcast payment: no `block`, and one of
/// [`CLIENT_BROADCAST_KEYS`] (the mechanism rule in the module docs).
pub fn is_client_broadcast(payload: &JsonObject) -> bool {
    !payload.contains_key(payload_keys::BLOCK)
        && CLIENT_BROADCAST_KEYS
            .iter()
            .any(|k| payload.contains_key(*k))
}

/// Longest error detail we keep: details may quote the attacker's input and end up in logs.
const MAX_DETAIL: usize = 160;

pub(super) fn detail(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if s.len() > MAX_DETAIL {
        let cut = (0..=MAX_DETAIL)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Why a payment header was refused. Every variant is a client error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PaymentError {
    #[error("payment header is {len} bytes, over the {max}-byte cap")]
    HeaderTooLarge { len: usize, max: usize },
    #[error("payment header is not base64: {0}")]
    NotBase64(HeaderError),
    #[error("payment header does not decode to UTF-8")]
    NotUtf8,
    #[error("payment header is not JSON: {0}")]
    NotJson(String),
    #[error("payment is not a JSON object")]
    NotObject,
    #[error("x402Version must be the JSON number 1 or 2")]
    WrongVersion,
    /// v2 without an `accepted` object, or v1 without string `scheme` and `network` (the v1
    /// form of the chosen offer).
    #[error("payment lacks the accepted offer: {0}")]
    MissingAccepted(String),
    #[error("`accepted` is malformed: {0}")]
    InvalidAccepted(String),
    #[error("payment has no `payload` object")]
    MissingPayload,
    #[error("payment field `{field}` is malformed: {detail}")]
    BadEnvelopeField { field: &'static str, detail: String },
    /// `payload` carries neither `block` nor another known mechanism.
    #[error("payload has no `block`")]
    MissingBlock,
    #[error("payload.block: {0}")]
    Block(BlockError),
}

impl PaymentError {
    /// The conformance vectors' `expected_category`: a stable name for metrics and tests.
    pub fn category(&self) -> &'static str {
        match self {
            PaymentError::HeaderTooLarge { .. } => "header_too_large",
            PaymentError::NotBase64(_) => "not_base64",
            PaymentError::NotUtf8 | PaymentError::NotJson(_) => "not_json",
            PaymentError::NotObject => "not_object",
            PaymentError::WrongVersion => "wrong_x402_version",
            PaymentError::MissingAccepted(_) | PaymentError::InvalidAccepted(_) => {
                "missing_accepted"
            }
            PaymentError::MissingPayload => "missing_payload",
            PaymentError::BadEnvelopeField { .. } => "bad_envelope_field",
            PaymentError::MissingBlock => "block_missing_fields",
            PaymentError::Block(e) => match e {
                BlockError::Missing(_) => "block_missing_fields",
                BlockError::NotObject | BlockError::Invalid { .. } => "bad_block_field",
                BlockError::BadHex { .. } => "bad_hex_field",
            },
        }
    }

    /// Malformed input is a 400, as the spec's HTTP transport says.
    pub fn http_status(&self) -> u16 {
        400
    }

    /// The x402 reason to report: only the version has its own spec code.
    pub fn reason(&self) -> ErrorReason {
        match self {
            PaymentError::WrongVersion => ErrorReason::InvalidX402Version,
            _ => ErrorReason::InvalidPayload,
        }
    }

    pub(super) fn from_header(e: HeaderError) -> Self {
        match e {
            HeaderError::TooLarge { len, max } => PaymentError::HeaderTooLarge { len, max },
            other => PaymentError::NotBase64(other),
        }
    }
}

/// The x402 protocol version a payment was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum X402Version {
    /// `X-PAYMENT`: `scheme`/`network` at top level.
    V1,
    /// `PAYMENT-SIGNATURE`: the chosen offer echoed as `accepted`.
    V2,
}

impl X402Version {
    pub fn as_u32(self) -> u32 {
        match self {
            X402Version::V1 => 1,
            X402Version::V2 => 2,
        }
    }
}

/// How the payment pays, judged from the keys of `payload` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentMechanism {
    /// `payload.block`: a signed send we broadcast. Parsed, not yet verified. Boxed so the
    /// other variants stay small.
    SignedBlock(Box<StateBlock>),
    /// The client broadcast its own block and names it (`proof` or `blockHash`); the sidecar
    /// validates the rest of `payload`.
    ClientBroadcast,
}

impl PaymentMechanism {
    /// The offer mechanism this payload form pays: a signed block, or (the only
    /// client-broadcast mechanism so far) a tagged session.
    pub fn mechanism(&self) -> crate::contract::Mechanism {
        match self {
            PaymentMechanism::SignedBlock(_) => crate::contract::Mechanism::SignedBlock,
            PaymentMechanism::ClientBroadcast => crate::contract::Mechanism::TaggedSession,
        }
    }
}

/// A well-formed payment. Fields are read-only so the parsed block always matches `payload`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPayment {
    version: X402Version,
    scheme: String,
    network: String,
    accepted: Option<PaymentRequirements>,
    resource: Option<ResourceInfo>,
    extensions: Option<JsonObject>,
    payload: JsonObject,
    mechanism: PaymentMechanism,
}

impl DecodedPayment {
    pub fn version(&self) -> X402Version {
        self.version
    }

    /// The scheme the client chose: `accepted.scheme` (v2) or the top-level `scheme` (v1).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The network the client chose: `accepted.network` (v2) or the top-level `network` (v1).
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

    /// v2 `extensions`, when the client sent them (e.g. `payment-identifier`).
    pub fn extensions(&self) -> Option<&JsonObject> {
        self.extensions.as_ref()
    }

    /// The raw scheme-specific `payload` object.
    pub fn payload(&self) -> &JsonObject {
        &self.payload
    }

    pub fn mechanism(&self) -> &PaymentMechanism {
        &self.mechanism
    }

    /// The signed block, or `MissingBlock` (category `block_missing_fields`) when the payment
    /// uses another mechanism: what a route that accepts only signed blocks calls.
    pub fn signed_block(&self) -> Result<&StateBlock, PaymentError> {
        match &self.mechanism {
            PaymentMechanism::SignedBlock(block) => Ok(block),
            PaymentMechanism::ClientBroadcast => Err(PaymentError::MissingBlock),
        }
    }

    /// The v2 `PaymentPayload` this payment is, or the v2 form of a v1 payment when the
    /// caller supplies the offer it matched (v1 payloads do not echo one).
    pub fn to_payload_v2(
        &self,
        offer_for_v1: Option<&PaymentRequirements>,
    ) -> Option<PaymentPayload> {
        let accepted = self.accepted.as_ref().or(offer_for_v1)?.clone();
        Some(PaymentPayload {
            x402_version: X402_VERSION_2,
            resource: self.resource.clone(),
            accepted,
            payload: Value::Object(self.payload.clone()),
            extensions: self.extensions.clone(),
        })
    }

    /// The v1 `X-PAYMENT` form (scheme and network at top level).
    pub fn to_payload_v1(&self) -> PaymentPayloadV1 {
        PaymentPayloadV1 {
            x402_version: 1,
            scheme: self.scheme.clone(),
            network: self.network.clone(),
            payload: Value::Object(self.payload.clone()),
        }
    }
}

/// Decodes and categorizes a `PAYMENT-SIGNATURE` or `X-PAYMENT` header value. The version is
/// read from the JSON, so either header may carry either form. `max_len` is normally
/// [`super::MAX_HEADER_BYTES`].
pub fn decode_payment(header_value: &str, max_len: usize) -> Result<DecodedPayment, PaymentError> {
    decode_payment_value(decode_payment_json(header_value, max_len)?)
}

/// The header half of [`decode_payment`]: the capped base64 of a payment header to its JSON,
/// not yet checked as a payment (the sidecar reads a header the filter forwarded this way, then
/// decodes the JSON as any other payment).
pub fn decode_payment_json(header_value: &str, max_len: usize) -> Result<Value, PaymentError> {
    let bytes = decode_header_bytes(header_value, max_len).map_err(PaymentError::from_header)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| PaymentError::NotUtf8)?;
    serde_json::from_str(text).map_err(|e| PaymentError::NotJson(detail(&e)))
}

/// The JSON half of [`decode_payment`], for payments that arrive in a body (the facilitator's
/// `paymentPayload`).
pub fn decode_payment_value(value: Value) -> Result<DecodedPayment, PaymentError> {
    let Value::Object(mut obj) = value else {
        return Err(PaymentError::NotObject);
    };
    let version = match obj.get("x402Version").and_then(Value::as_u64) {
        Some(1) => X402Version::V1,
        Some(2) => X402Version::V2,
        _ => return Err(PaymentError::WrongVersion),
    };

    let (scheme, network, accepted) = match version {
        X402Version::V2 => {
            let accepted = match obj.remove("accepted") {
                Some(v @ Value::Object(_)) => serde_json::from_value::<PaymentRequirements>(v)
                    .map_err(|e| PaymentError::InvalidAccepted(detail(&e)))?,
                _ => {
                    return Err(PaymentError::MissingAccepted(
                        "`accepted` is missing or not an object".into(),
                    ))
                }
            };
            (
                accepted.scheme.clone(),
                accepted.network.clone(),
                Some(accepted),
            )
        }
        X402Version::V1 => {
            let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_owned);
            match (text("scheme"), text("network")) {
                (Some(scheme), Some(network)) => (scheme, network, None),
                _ => {
                    return Err(PaymentError::MissingAccepted(
                        "v1 payment needs string `scheme` and `network`".into(),
                    ))
                }
            }
        }
    };

    let payload = match obj.remove("payload") {
        Some(Value::Object(p)) => p,
        _ => return Err(PaymentError::MissingPayload),
    };

    // v1 has no resource or extensions; anything under those names there is ignored.
    let (resource, extensions) = match version {
        X402Version::V2 => (
            optional_field::<ResourceInfo>(&mut obj, "resource")?,
            optional_field::<JsonObject>(&mut obj, "extensions")?,
        ),
        X402Version::V1 => (None, None),
    };

    let mechanism = match payload.get(payload_keys::BLOCK) {
        Some(block) => PaymentMechanism::SignedBlock(Box::new(
            StateBlock::from_json(block).map_err(PaymentError::Block)?,
        )),
        None if is_client_broadcast(&payload) => PaymentMechanism::ClientBroadcast,
        None => return Err(PaymentError::MissingBlock),
    };

    Ok(DecodedPayment {
        version,
        scheme,
        network,
        accepted,
        resource,
        extensions,
        payload,
        mechanism,
    })
}

/// An optional envelope field: absent or `null` is `None`; present but malformed is refused.
fn optional_field<T: serde::de::DeserializeOwned>(
    obj: &mut JsonObject,
    field: &'static str,
) -> Result<Option<T>, PaymentError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            serde_json::from_value(v)
                .map(Some)
                .map_err(|e| PaymentError::BadEnvelopeField {
                    field,
                    detail: detail(&e),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nano::{BlockHash, PrivateKey, PublicKey, Signature};
    use crate::x402::header::{encode_header, MAX_HEADER_BYTES};
    use serde_json::json;

    fn signed_block() -> StateBlock {
        let key = PrivateKey::from_bytes([7; 32]);
        let mut b = StateBlock {
            account: key.public_key(),
            previous: BlockHash([1; 32]),
            representative: key.public_key(),
            balance: 1000,
            link: PrivateKey::from_bytes([9; 32]).public_key().0,
            signature: Signature([0; 64]),
            work: 0x1234,
        };
        b.sign(&key);
        b
    }

    fn accepted() -> Value {
        json!({
            "scheme": "exact", "network": "nano:devnet", "amount": "5", "asset": "XNO",
            "payTo": PublicKey(signed_block().link).to_address(), "maxTimeoutSeconds": 120, "extra": {}
        })
    }

    fn v2(payload: Value) -> Value {
        json!({"x402Version": 2, "accepted": accepted(), "payload": payload})
    }

    fn decode(v: &Value) -> Result<DecodedPayment, PaymentError> {
        decode_payment(&encode_header(v), MAX_HEADER_BYTES)
    }

    #[test]
    fn v2_signed_block_decodes_and_round_trips() {
        let block = signed_block();
        let p = decode(&v2(json!({"block": block.to_json()}))).expect("valid");
        assert_eq!(p.version(), X402Version::V2);
        assert_eq!((p.scheme(), p.network()), ("exact", "nano:devnet"));
        assert_eq!(p.signed_block(), Ok(&block));
        assert!(p
            .signed_block()
            .map(StateBlock::signature_valid)
            .unwrap_or(false));
        let typed = p.to_payload_v2(None).expect("v2 has accepted");
        let again = decode(&serde_json::to_value(&typed).expect("to_value")).expect("re-decode");
        assert_eq!(again, p);
        assert_eq!(p.to_payload_v1().scheme, "exact");
    }

    #[test]
    fn v1_needs_scheme_and_network_but_not_accepted() {
        let block = signed_block().to_json();
        let ok = json!({"x402Version": 1, "scheme": "exact", "network": "nano:devnet",
                        "payload": {"block": block}});
        let p = decode(&ok).expect("v1");
        assert_eq!(p.version(), X402Version::V1);
        assert!(p.accepted().is_none() && p.resource().is_none());
        let req: PaymentRequirements = serde_json::from_value(accepted()).expect("req");
        assert_eq!(p.to_payload_v2(Some(&req)).map(|x| x.accepted), Some(req));
        assert_eq!(p.to_payload_v2(None), None);
        for missing in ["scheme", "network"] {
            let mut v = ok.clone();
            v.as_object_mut().map(|o| o.remove(missing));
            let e = decode(&v).expect_err("must fail");
            assert_eq!(e.category(), "missing_accepted");
        }
        let mut v = ok.clone();
        v.as_object_mut()
            .map(|o| o.insert("scheme".into(), json!(7)));
        assert_eq!(
            decode(&v).map_err(|e| e.category()),
            Err("missing_accepted")
        );
    }

    #[test]
    fn version_must_be_the_integer_1_or_2() {
        for ver in [
            json!(2.0),
            json!(0),
            json!(-2),
            json!(3),
            json!(null),
            json!(true),
            json!([2]),
        ] {
            let mut v = v2(json!({"block": signed_block().to_json()}));
            v.as_object_mut()
                .map(|o| o.insert("x402Version".into(), ver.clone()));
            let e = decode(&v).expect_err("must fail");
            assert_eq!(e, PaymentError::WrongVersion, "{ver}");
            assert_eq!(e.reason(), ErrorReason::InvalidX402Version);
        }
    }

    #[test]
    fn malformed_accepted_is_missing_accepted() {
        let mut acc = accepted();
        acc.as_object_mut()
            .map(|o| o.insert("amount".into(), json!(5)));
        let v = json!({"x402Version": 2, "accepted": acc, "payload": {}});
        let e = decode(&v).expect_err("amount must be a string");
        assert!(matches!(e, PaymentError::InvalidAccepted(_)));
        assert_eq!(e.category(), "missing_accepted");
        assert_eq!(e.reason(), ErrorReason::InvalidPayload);
    }

    #[test]
    fn payload_must_be_an_object() {
        for p in [json!(null), json!("block"), json!([]), json!(1)] {
            assert_eq!(decode(&v2(p)), Err(PaymentError::MissingPayload));
        }
    }

    #[test]
    fn malformed_resource_or_extensions_are_refused_null_is_absent() {
        let mut v = v2(json!({"block": signed_block().to_json()}));
        v.as_object_mut()
            .map(|o| o.insert("resource".into(), json!("https://x")));
        let e = decode(&v).expect_err("resource must be an object");
        assert_eq!(e.category(), "bad_envelope_field");
        assert_eq!(e.http_status(), 400);

        let mut v = v2(json!({"block": signed_block().to_json()}));
        v.as_object_mut()
            .map(|o| o.insert("extensions".into(), json!([])));
        assert_eq!(
            decode(&v).map_err(|e| e.category()),
            Err("bad_envelope_field")
        );

        let mut v = v2(json!({"block": signed_block().to_json()}));
        if let Some(o) = v.as_object_mut() {
            o.insert("resource".into(), Value::Null);
            o.insert(
                "extensions".into(),
                json!({"payment-identifier": {"info": {"id": "pay_1"}}}),
            );
        }
        let p = decode(&v).expect("valid");
        assert!(p.resource().is_none());
        assert!(p
            .extensions()
            .is_some_and(|e| e.contains_key("payment-identifier")));
    }

    #[test]
    fn client_broadcast_payloads_are_representable_without_a_block() {
        for key in CLIENT_BROADCAST_KEYS {
            let p = decode(&v2(json!({ *key: "AB".repeat(32) }))).expect("other mechanism");
            assert_eq!(p.mechanism(), &PaymentMechanism::ClientBroadcast);
            let e = p.signed_block().expect_err("no block");
            assert_eq!(e.category(), "block_missing_fields");
        }
        // `block` wins over other keys, so a broken block cannot hide behind `proof`.
        let v = v2(json!({"proof": "AB", "block": {"type": "state"}}));
        assert_eq!(
            decode(&v).map_err(|e| e.category()),
            Err("block_missing_fields")
        );
        // Unknown keys alone are not a mechanism.
        let v = v2(json!({"sessionTag": 1}));
        assert_eq!(decode(&v), Err(PaymentError::MissingBlock));
    }

    #[test]
    fn block_errors_map_to_their_categories() {
        let mut block = signed_block().to_json();
        block
            .as_object_mut()
            .map(|o| o.insert("work".into(), json!("zz")));
        assert_eq!(
            decode(&v2(json!({ "block": block }))).map_err(|e| e.category()),
            Err("bad_hex_field")
        );
        assert_eq!(
            decode(&v2(json!({"block": "not an object"}))).map_err(|e| e.category()),
            Err("bad_block_field")
        );
        assert_eq!(
            decode(&v2(json!({"block": {}}))).map_err(|e| e.category()),
            Err("block_missing_fields")
        );
    }

    #[test]
    fn errors_before_json_keep_their_categories() {
        let cases: [(&str, &str); 4] = [
            ("", "not_base64"),
            ("ab+_", "not_base64"),
            ("//79", "not_json"),     // 0xFF 0xFE 0xFD
            ("bnVsbA", "not_object"), // "null"
        ];
        for (h, cat) in cases {
            let e = decode_payment(h, MAX_HEADER_BYTES).expect_err(h);
            assert_eq!(e.category(), cat, "{h}");
            assert_eq!(e.http_status(), 400);
            assert_eq!(e.reason(), ErrorReason::InvalidPayload);
        }
        assert_eq!(
            decode_payment("eyJhIjoxfQ==", 4).map_err(|e| e.category()),
            Err("header_too_large")
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        let deep = format!("{}{}", "[".repeat(6000), "]".repeat(6000));
        let header = crate::x402::header::encode_bytes(deep.as_bytes());
        assert_eq!(
            decode_payment(&header, usize::MAX).map_err(|e| e.category()),
            Err("not_json")
        );
    }

    #[test]
    fn long_error_details_are_truncated() {
        let mut acc = accepted();
        acc.as_object_mut()
            .map(|o| o.insert("maxTimeoutSeconds".into(), json!("é".repeat(2000))));
        let v = json!({"x402Version": 2, "accepted": acc, "payload": {}});
        let e = decode(&v).expect_err("timeout must be a number");
        assert!(matches!(e, PaymentError::InvalidAccepted(_)));
        assert!(e.to_string().len() < MAX_DETAIL + 64, "{e}");
    }
}
