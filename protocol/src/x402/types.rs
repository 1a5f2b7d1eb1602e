//! x402 v2 wire types and the facilitator API bodies.
//!
//! Field order is the serialization order and follows the spec and `@x402/core`, so our headers
//! match the conformance vectors byte for byte. Unknown fields are ignored on input (clients such
//! as feeless402 add top-level extras); optional fields are omitted when `None`.

use super::reason::ErrorReason;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A JSON object, as used for `extra` and `extensions`.
pub type JsonObject = Map<String, Value>;

/// The x402 version the v2 types carry.
pub const X402_VERSION_2: u32 = 2;
/// The x402 version the v1 types carry.
pub const X402_VERSION_1: u32 = 1;

/// Reads `extra` leniently: absent or `null` become `{}` (the TS SDK always sends an object,
/// other clients sometimes `null`), anything else must be an object.
fn object_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<JsonObject, D::Error> {
    Ok(Option::<JsonObject>::deserialize(d)?.unwrap_or_default())
}

/// The resource a payment buys (v2; in v1 these were fields of each requirement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One offer in `accepts[]`, echoed back by the client as `accepted`.
///
/// Never trust the client's echo: amount, payee, network and expiry come from what we issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    /// CAIP-2 network id, e.g. `nano:mainnet`.
    pub network: String,
    /// Atomic units (raw for Nano) as a decimal string; parse with `nano::parse_raw`.
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    /// Scheme-specific data; always serialized (as `{}` when empty) because the SDK's matcher
    /// treats a missing `extra` as different from `{}`.
    #[serde(default, deserialize_with = "object_or_null")]
    pub extra: JsonObject,
}

/// The `PAYMENT-REQUIRED` header (and the 402 body): what a route costs and how to pay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: ResourceInfo,
    pub accepts: Vec<PaymentRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<JsonObject>,
}

impl PaymentRequired {
    /// A v2 challenge whose `error` is the wire string of `reason`.
    pub fn new(
        reason: Option<ErrorReason>,
        resource: ResourceInfo,
        accepts: Vec<PaymentRequirements>,
    ) -> Self {
        PaymentRequired {
            x402_version: X402_VERSION_2,
            error: reason.map(|r| r.as_str().to_owned()),
            resource,
            accepts,
            extensions: None,
        }
    }
}

/// The `PAYMENT-SIGNATURE` header (v2). Prefer [`super::decode_payment`] for untrusted input:
/// it categorizes failures and validates the scheme-specific `payload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    pub accepted: PaymentRequirements,
    /// Scheme-specific object, e.g. `{"block": {...}}` for a signed Nano send.
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<JsonObject>,
}

/// The `PAYMENT-RESPONSE` header (v2; `X-PAYMENT-RESPONSE` in v1) and the `/settle` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementResponse {
    pub success: bool,
    /// Kept as a string: reasons are open in x402 and other facilitators use their own.
    /// Parse with `str::parse::<ErrorReason>()` when you need ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// The block hash on success, `""` on failure.
    pub transaction: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<JsonObject>,
}

/// The facilitator's `/settle` answer is the same object as the receipt header.
pub type SettleResponse = SettlementResponse;

impl SettlementResponse {
    /// A successful receipt: `transaction` is the settled block hash.
    pub fn success(transaction: String, network: String, payer: Option<String>) -> Self {
        SettlementResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer,
            transaction,
            network,
            amount: None,
            extensions: None,
        }
    }

    /// A failed settlement: `transaction` is `""` as the spec requires.
    pub fn failure(reason: ErrorReason, network: String, payer: Option<String>) -> Self {
        SettlementResponse {
            success: false,
            error_reason: Some(reason.as_str().to_owned()),
            error_message: None,
            payer,
            transaction: String::new(),
            network,
            amount: None,
            extensions: None,
        }
    }

    /// `errorReason` as one of ours; `None` when absent or unknown to nanogate.
    pub fn reason(&self) -> Option<ErrorReason> {
        self.error_reason.as_deref().and_then(|s| s.parse().ok())
    }
}

/// The facilitator's `/verify` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    /// Kept as a string for the same reason as [`SettlementResponse::error_reason`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<JsonObject>,
}

impl VerifyResponse {
    pub fn valid(payer: Option<String>) -> Self {
        VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer,
            extensions: None,
        }
    }

    pub fn invalid(reason: ErrorReason, payer: Option<String>) -> Self {
        VerifyResponse {
            is_valid: false,
            invalid_reason: Some(reason.as_str().to_owned()),
            invalid_message: None,
            payer,
            extensions: None,
        }
    }

    /// `invalidReason` as one of ours; `None` when absent or unknown to nanogate.
    pub fn reason(&self) -> Option<ErrorReason> {
        self.invalid_reason.as_deref().and_then(|s| s.parse().ok())
    }
}

/// Body of `POST /verify` and `POST /settle`. Generic so the same shape carries v1 payloads
/// and requirements (`FacilitatorRequest<PaymentPayloadV1, PaymentRequirementsV1>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest<P = PaymentPayload, R = PaymentRequirements> {
    pub x402_version: u32,
    pub payment_payload: P,
    pub payment_requirements: R,
}

/// `POST /verify` body.
pub type VerifyRequest<P = PaymentPayload, R = PaymentRequirements> = FacilitatorRequest<P, R>;
/// `POST /settle` body.
pub type SettleRequest<P = PaymentPayload, R = PaymentRequirements> = FacilitatorRequest<P, R>;

/// One `(version, scheme, network)` a facilitator supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: u32,
    pub scheme: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<JsonObject>,
}

/// `GET /supported`. `extensions` and `signers` are required in v2 and always written; they
/// default to empty on input because v1 facilitators send only `kinds`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    pub kinds: Vec<SupportedKind>,
    #[serde(default)]
    pub extensions: Vec<String>,
    /// CAIP-2 pattern (e.g. `nano:*`) → signer addresses. Nano facilitators hold no signers.
    #[serde(default)]
    pub signers: BTreeMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn requirements() -> PaymentRequirements {
        PaymentRequirements {
            scheme: "exact".into(),
            network: "nano:devnet".into(),
            amount: "1000".into(),
            asset: "XNO".into(),
            pay_to: "nano_x".into(),
            max_timeout_seconds: 120,
            extra: JsonObject::new(),
        }
    }

    #[test]
    fn empty_extra_is_written_as_object_and_none_fields_are_skipped() {
        let s = serde_json::to_string(&requirements()).expect("serialize");
        assert_eq!(
            s,
            r#"{"scheme":"exact","network":"nano:devnet","amount":"1000","asset":"XNO","payTo":"nano_x","maxTimeoutSeconds":120,"extra":{}}"#
        );
        let pr = PaymentRequired::new(
            None,
            ResourceInfo {
                url: "https://a/b".into(),
                description: None,
                mime_type: None,
            },
            vec![],
        );
        assert_eq!(
            serde_json::to_string(&pr).expect("serialize"),
            r#"{"x402Version":2,"resource":{"url":"https://a/b"},"accepts":[]}"#
        );
    }

    #[test]
    fn missing_or_null_extra_reads_as_empty_but_other_types_are_refused() {
        let mut v = serde_json::to_value(requirements()).expect("to_value");
        v.as_object_mut().map(|o| o.remove("extra"));
        let r: PaymentRequirements = serde_json::from_value(v.clone()).expect("missing extra");
        assert!(r.extra.is_empty());
        v.as_object_mut()
            .map(|o| o.insert("extra".into(), Value::Null));
        let r: PaymentRequirements = serde_json::from_value(v.clone()).expect("null extra");
        assert!(r.extra.is_empty());
        v.as_object_mut()
            .map(|o| o.insert("extra".into(), json!([1])));
        assert!(serde_json::from_value::<PaymentRequirements>(v).is_err());
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let v = json!({
            "scheme": "exact", "network": "nano:devnet", "amount": "1", "asset": "XNO",
            "payTo": "nano_x", "maxTimeoutSeconds": 5, "extra": {"k": 1}, "future": true
        });
        let r: PaymentRequirements = serde_json::from_value(v).expect("tolerant");
        assert_eq!(r.extra.get("k"), Some(&json!(1)));
    }

    #[test]
    fn negative_or_fractional_timeouts_are_refused() {
        for t in [json!(-1), json!(1.5), json!("120")] {
            let v = json!({
                "scheme": "exact", "network": "n", "amount": "1", "asset": "XNO",
                "payTo": "p", "maxTimeoutSeconds": t
            });
            assert!(serde_json::from_value::<PaymentRequirements>(v).is_err());
        }
    }

    #[test]
    fn settlement_and_verify_helpers_use_the_reason_wire_strings() {
        let f =
            SettlementResponse::failure(ErrorReason::BlockNotConfirmed, "nano:devnet".into(), None);
        assert_eq!(
            serde_json::to_string(&f).expect("serialize"),
            r#"{"success":false,"errorReason":"block_not_confirmed","transaction":"","network":"nano:devnet"}"#
        );
        assert_eq!(f.reason(), Some(ErrorReason::BlockNotConfirmed));
        let other = SettlementResponse {
            error_reason: Some("error_nano_rpc".into()),
            ..f
        };
        assert_eq!(other.reason(), None);

        let v = VerifyResponse::invalid(ErrorReason::StaleFrontier, Some("nano_p".into()));
        assert_eq!(
            serde_json::to_string(&v).expect("serialize"),
            r#"{"isValid":false,"invalidReason":"stale_frontier","payer":"nano_p"}"#
        );
        assert_eq!(v.reason(), Some(ErrorReason::StaleFrontier));
        assert_eq!(
            serde_json::to_string(&VerifyResponse::valid(None)).expect("serialize"),
            r#"{"isValid":true}"#
        );
        let s = SettlementResponse::success("AB".into(), "nano:devnet".into(), None);
        assert!(s.success && s.reason().is_none());
    }

    #[test]
    fn facilitator_request_uses_spec_field_names() {
        let req: VerifyRequest = FacilitatorRequest {
            x402_version: 2,
            payment_payload: PaymentPayload {
                x402_version: 2,
                resource: None,
                accepted: requirements(),
                payload: json!({"block": {}}),
                extensions: Some(JsonObject::new()),
            },
            payment_requirements: requirements(),
        };
        let v = serde_json::to_value(&req).expect("to_value");
        let obj = v.as_object().expect("object");
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["paymentPayload", "paymentRequirements", "x402Version"]
        );
        let back: SettleRequest = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, req);
    }

    #[test]
    fn supported_response_always_writes_extensions_and_signers() {
        let s = SupportedResponse {
            kinds: vec![SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: "nano:mainnet".into(),
                extra: None,
            }],
            ..SupportedResponse::default()
        };
        assert_eq!(
            serde_json::to_string(&s).expect("serialize"),
            r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"nano:mainnet"}],"extensions":[],"signers":{}}"#
        );
        let v1_only: SupportedResponse = serde_json::from_str(
            r#"{"kinds":[{"x402Version":1,"scheme":"exact","network":"base"}]}"#,
        )
        .expect("v1 facilitator answer");
        assert_eq!(v1_only.kinds.len(), 1);
        assert!(v1_only.signers.is_empty());
    }
}
