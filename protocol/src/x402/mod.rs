//! x402 v1 and v2 wire types, the header codec and the error reasons.
//!
//! No I/O and no panics on input: the filter runs this inside Envoy, where a panic takes down
//! the VM for every request. Conformance vectors:
//! `tests/vectors/` (see its README).

mod echo;
mod header;
mod payment;
mod reason;
mod types;
mod v1;

pub use echo::{decode_payment_echo, plain_run, PaymentEcho};
pub use header::{
    decode_header, decode_header_bytes, encode_bytes, encode_header, try_encode_header,
    HeaderDecodeError, HeaderError, MAX_HEADER_BYTES,
};
pub use payment::{
    decode_payment, decode_payment_json, decode_payment_value, is_client_broadcast, payload_keys,
    DecodedPayment, PaymentError, PaymentMechanism, X402Version, CLIENT_BROADCAST_KEYS,
};
pub use reason::{ErrorReason, UnknownErrorReason};
pub use types::{
    FacilitatorRequest, JsonObject, PaymentPayload, PaymentRequired, PaymentRequirements,
    ResourceInfo, SettleRequest, SettleResponse, SettlementResponse, SupportedKind,
    SupportedResponse, VerifyRequest, VerifyResponse, X402_VERSION_1, X402_VERSION_2,
};
pub use v1::{PaymentPayloadV1, PaymentRequiredV1, PaymentRequirementsV1};

/// HTTP header names as the x402 transport specs spell them. HTTP/2 lower-cases names and
/// Envoy matches them case-insensitively.
pub mod headers {
    /// v2 challenge, on the 402.
    pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
    /// v2 payment, on the retry.
    pub const PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
    /// v2 receipt, on the reply.
    pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
    /// v1 payment, on the retry.
    pub const X_PAYMENT: &str = "X-PAYMENT";
    /// v1 receipt, on the reply.
    pub const X_PAYMENT_RESPONSE: &str = "X-PAYMENT-RESPONSE";
}
