//! x402 v1 wire types: the 402 body (`PaymentRequirementsResponse`) and the `X-PAYMENT` retry.
//!
//! v1 matters for Nano only through clients that still pay with `X-PAYMENT` (feeless402 sends
//! both headers); the v2 `PAYMENT-REQUIRED` header stays authoritative.

use super::types::{JsonObject, PaymentRequirements, X402_VERSION_1};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A v1 offer: the resource description lives in each requirement, and the price is
/// `maxAmountRequired`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    pub scheme: String,
    pub network: String,
    /// Atomic units (raw for Nano) as a decimal string.
    pub max_amount_required: String,
    /// The resource URL.
    pub resource: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub asset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<JsonObject>,
}

impl PaymentRequirementsV1 {
    /// The v2 form of this offer (`maxAmountRequired` becomes `amount`; the resource and its
    /// description move out of the requirement, into v2's `ResourceInfo`).
    pub fn to_v2(&self) -> PaymentRequirements {
        PaymentRequirements {
            scheme: self.scheme.clone(),
            network: self.network.clone(),
            amount: self.max_amount_required.clone(),
            asset: self.asset.clone(),
            pay_to: self.pay_to.clone(),
            max_timeout_seconds: self.max_timeout_seconds,
            extra: self.extra.clone().unwrap_or_default(),
        }
    }
}

/// The v1 402 body. `error` is required in v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u32,
    pub error: String,
    pub accepts: Vec<PaymentRequirementsV1>,
}

impl PaymentRequiredV1 {
    pub fn new(error: String, accepts: Vec<PaymentRequirementsV1>) -> Self {
        PaymentRequiredV1 {
            x402_version: X402_VERSION_1,
            error,
            accepts,
        }
    }
}

/// The v1 `X-PAYMENT` header: the chosen scheme and network sit at the top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub x402_version: u32,
    pub scheme: String,
    pub network: String,
    pub payload: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_requirements_use_v1_field_names_and_skip_absent_options() {
        let r = PaymentRequirementsV1 {
            scheme: "exact".into(),
            network: "nano:devnet".into(),
            max_amount_required: "5".into(),
            resource: "https://a/b".into(),
            description: "d".into(),
            mime_type: None,
            output_schema: None,
            pay_to: "nano_x".into(),
            max_timeout_seconds: 60,
            asset: "XNO".into(),
            extra: None,
        };
        let body = PaymentRequiredV1::new("X-PAYMENT header is required".into(), vec![r]);
        assert_eq!(
            serde_json::to_string(&body).expect("serialize"),
            r#"{"x402Version":1,"error":"X-PAYMENT header is required","accepts":[{"scheme":"exact","network":"nano:devnet","maxAmountRequired":"5","resource":"https://a/b","description":"d","payTo":"nano_x","maxTimeoutSeconds":60,"asset":"XNO"}]}"#
        );
        let v2 = body.accepts[0].to_v2();
        assert_eq!(
            (v2.amount.as_str(), v2.pay_to.as_str(), v2.extra.is_empty()),
            ("5", "nano_x", true)
        );
        let back: PaymentRequiredV1 =
            serde_json::from_str(&serde_json::to_string(&body).expect("serialize"))
                .expect("round trip");
        assert_eq!(back, body);
    }

    #[test]
    fn v1_payload_tolerates_unknown_fields() {
        let p: PaymentPayloadV1 = serde_json::from_value(json!({
            "x402Version": 1, "scheme": "exact", "network": "nano:devnet",
            "payload": {"block": {}}, "accepted": {"ignored": true}
        }))
        .expect("tolerant");
        assert_eq!(p.scheme, "exact");
    }
}
