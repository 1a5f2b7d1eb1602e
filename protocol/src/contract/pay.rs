//! `POST /v1/pay` and `POST /v1/outcome`: the bodies, and how the filter reads a verdict.
//!
//! Only an HTTP 200 carrying `x-nanogate-verdict: 1` and a well-formed verdict counts
//! ([`read_pay_answer`]); Envoy synthesizes 503/504 for transport failures, and those must
//! never read as a verdict. Everything the filter copies from a verdict into its own response
//! (reason, `PAYMENT-RESPONSE`, `Retry-After`, the transaction header) is checked here first.

use super::pass::{PassIssued, PassTerms};
use crate::x402::{
    decode_payment_json, ErrorReason, PaymentError, PaymentRequirements, MAX_HEADER_BYTES,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Longest receipt id the filter accepts and echoes back.
pub const MAX_RECEIPT_LEN: usize = 256;
/// Longest admission token the filter keeps and returns with the outcome (hex digits).
pub const MAX_ADMISSION_TOKEN_LEN: usize = 128;
/// Bounds of a `retryAfter` the filter copies into `Retry-After` (seconds).
pub const RETRY_AFTER_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;

/// `POST /v1/pay` body: the terms the filter rebuilt from its configuration (plus the stamp
/// the client echoed), the payment, and what the sidecar needs to hold the admission.
///
/// The payment comes in exactly one of two forms ([`PayRequest::payment_json`] reads either):
/// `paymentHeader`, the client's header value exactly as received (what the filter sends: it
/// has decoded the header already to check the challenge, and forwarding the bytes it was given
/// costs nothing, where re-encoding the decoded payment was over a third of its work on a paid
/// request), or `payment`, the decoded JSON (for other callers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayRequest {
    /// The request URL the challenge was bound to (a tagged route: its scope).
    pub resource: String,
    pub requirements: PaymentRequirements,
    /// The decoded payment: the v2 `PaymentPayload` JSON, or the v1 `X-PAYMENT` JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Value>,
    /// The `PAYMENT-SIGNATURE` (or `X-PAYMENT`) header value as the client sent it: base64 of
    /// the payment's JSON, at most [`MAX_HEADER_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_header: Option<String>,
    /// The route's upstream timeout: how long an admitted request may be in flight (absent:
    /// Envoy's default, 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    /// The client's address as Envoy reports it (`ip` or `ip:port`), for the per-source limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The route attaches work a block lacks (its offers say `extra.work: "optional"`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub attach_work: bool,
    /// Set when the payment buys a pass: the offer's terms, rebuilt by the filter from its own
    /// configuration (`resource` is then [`PassTerms::scope`] of these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<PassTerms>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why a [`PayRequest`] carries no readable payment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaySourceError {
    #[error("the body needs `paymentHeader` (the client's header value) or `payment` (its JSON)")]
    Missing,
    #[error("the body has both `paymentHeader` and `payment`; send one")]
    Both,
    #[error("paymentHeader: {0}")]
    Header(PaymentError),
}

impl PaySourceError {
    /// The reason a verdict refusing this body gives.
    pub fn reason(&self) -> ErrorReason {
        match self {
            PaySourceError::Header(e) => e.reason(),
            PaySourceError::Missing | PaySourceError::Both => ErrorReason::InvalidPayload,
        }
    }
}

impl PayRequest {
    /// The payment's JSON, taken out of whichever form it came in: a `paymentHeader` is decoded
    /// under the same cap and rules as the header itself ([`decode_payment_json`]), so a
    /// forwarded header is read exactly as the filter read it.
    pub fn payment_json(&mut self) -> Result<Value, PaySourceError> {
        match (self.payment_header.take(), self.payment.take()) {
            (Some(header), None) => {
                decode_payment_json(&header, MAX_HEADER_BYTES).map_err(PaySourceError::Header)
            }
            (None, Some(payment)) => Ok(payment),
            (Some(_), Some(_)) => Err(PaySourceError::Both),
            (None, None) => Err(PaySourceError::Missing),
        }
    }
}

/// `verdict` of a [`VerdictBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    Admit,
    Reject,
    Unavailable,
}

/// The `/v1/pay` answer as it is on the wire. Build it with [`VerdictBody::admit`],
/// [`VerdictBody::reject`] or [`VerdictBody::unavailable`]; read it with [`read_pay_answer`].
///
/// Reading is lenient field by field, as the filter always was: a field of the wrong type
/// reads as absent (and [`VerdictBody::check`] then falls back or refuses), never as a parse
/// error of the whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerdictBody {
    #[serde(default, deserialize_with = "lenient_kind")]
    pub verdict: Option<VerdictKind>,
    /// Admit: opaque id the filter reports the outcome under.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub receipt: Option<String>,
    /// Admit: the paying block's hash (64 hex digits).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub transaction: Option<String>,
    /// Admit: the payer's `nano_` address.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub payer: Option<String>,
    /// Admit: the `PAYMENT-RESPONSE` header value (base64 `SettlementResponse`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub payment_response: Option<String>,
    /// Admit: this admission's token (hex). The filter keeps it in the request's context and
    /// returns it with the outcome only; the sidecar records an outcome only with the token of
    /// the payment's current admission.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub admission_token: Option<String>,
    /// Admit, when the payment bought a pass: the pass (its token also in `paymentResponse`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_pass"
    )]
    pub pass: Option<PassIssued>,
    /// Admit: this admits a payment again after a failed upstream call.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_bool"
    )]
    pub redeemed: Option<bool>,
    /// Reject, unavailable: an [`ErrorReason`] wire string.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub reason: Option<String>,
    /// Reject, unavailable: human text, never copied into a response by the filter.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub message: Option<String>,
    /// Reject: 402 (pay again), 400 (malformed payment) or 429 (`rate_limited`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u16"
    )]
    pub status: Option<u16>,
    /// Reject with 429, unavailable: seconds for `Retry-After`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub retry_after: Option<u64>,
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn lenient_pass<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PassIssued>, D::Error> {
    Ok(PassIssued::from_value(&Value::deserialize(d)?))
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(d)?.as_u64())
}

fn lenient_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(Value::deserialize(d)?
        .as_u64()
        .and_then(|n| u16::try_from(n).ok()))
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Value::deserialize(d)?.as_bool())
}

fn lenient_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<VerdictKind>, D::Error> {
    Ok(match Value::deserialize(d)?.as_str() {
        Some("admit") => Some(VerdictKind::Admit),
        Some("reject") => Some(VerdictKind::Reject),
        Some("unavailable") => Some(VerdictKind::Unavailable),
        _ => None,
    })
}

impl VerdictBody {
    pub fn admit(
        receipt: String,
        transaction: String,
        payer: String,
        payment_response: String,
        redeemed: bool,
        admission_token: Option<String>,
    ) -> Self {
        VerdictBody {
            verdict: Some(VerdictKind::Admit),
            receipt: Some(receipt),
            transaction: Some(transaction),
            payer: Some(payer),
            payment_response: Some(payment_response),
            redeemed: Some(redeemed),
            admission_token,
            ..VerdictBody::default()
        }
    }

    /// `retry_after` only with status 429.
    pub fn reject(
        reason: ErrorReason,
        message: String,
        status: u16,
        retry_after: Option<u64>,
    ) -> Self {
        VerdictBody {
            verdict: Some(VerdictKind::Reject),
            reason: Some(reason.as_str().to_owned()),
            message: Some(message),
            status: Some(status),
            retry_after,
            ..VerdictBody::default()
        }
    }

    pub fn unavailable(reason: ErrorReason, message: String, retry_after: u64) -> Self {
        VerdictBody {
            verdict: Some(VerdictKind::Unavailable),
            reason: Some(reason.as_str().to_owned()),
            message: Some(message),
            retry_after: Some(retry_after),
            ..VerdictBody::default()
        }
    }

    /// Reads an answer body: a JSON object, each field leniently (see the type's docs).
    pub fn parse(body: &[u8]) -> Option<VerdictBody> {
        match serde_json::from_slice::<Value>(body).ok()? {
            // Objects only: serde would also read a struct from a JSON array, by position.
            v @ Value::Object(_) => serde_json::from_value(v).ok(),
            _ => Some(VerdictBody::default()),
        }
    }

    /// What the filter may act on, every value it copies into a response checked:
    /// * admit needs a receipt of 1..=[`MAX_RECEIPT_LEN`] bytes and a `paymentResponse`, if
    ///   any, that is [`safe_header_value`]; a `transaction` that is not a 64-digit hex hash,
    ///   and an `admissionToken` that is not 1..=[`MAX_ADMISSION_TOKEN_LEN`] hex digits, are
    ///   dropped;
    /// * a reject with status 429 is [`Verdict::Limited`], `retryAfter` outside
    ///   [`RETRY_AFTER_RANGE`] reads as 1;
    /// * other rejects are 400 or 402 (anything but 400), their reason [`safe_reason`] or
    ///   `invalid_payload`;
    /// * unavailable keeps a [`safe_reason`] or says `unexpected_verify_error`, and a
    ///   `retryAfter` within [`RETRY_AFTER_RANGE`].
    pub fn check(&self) -> Result<Verdict, &'static str> {
        let reason_or = |fallback: ErrorReason| match self.reason.as_deref() {
            Some(r) if safe_reason(r) => r.to_owned(),
            _ => fallback.as_str().to_owned(),
        };
        let bounded_retry = self
            .retry_after
            .filter(|s| RETRY_AFTER_RANGE.contains(s))
            .and_then(|s| u32::try_from(s).ok());
        match self.verdict {
            Some(VerdictKind::Admit) => {
                let receipt = self
                    .receipt
                    .as_deref()
                    .filter(|r| !r.is_empty() && r.len() <= MAX_RECEIPT_LEN)
                    .ok_or("admit without a receipt")?;
                let payment_response = match self.payment_response.as_deref() {
                    Some(p) if safe_header_value(p) => Some(p.to_owned()),
                    Some(_) => return Err("paymentResponse is not base64"),
                    None => None,
                };
                let transaction = self
                    .transaction
                    .as_deref()
                    .filter(|t| is_block_hash(t))
                    .map(str::to_owned);
                let admission_token = self
                    .admission_token
                    .as_deref()
                    .filter(|t| is_admission_token(t))
                    .map(str::to_owned);
                let pass = match &self.pass {
                    Some(p) if p.is_safe() => Some(p.clone()),
                    Some(_) => return Err("pass is malformed"),
                    None => None,
                };
                Ok(Verdict::Admit {
                    receipt: receipt.to_owned(),
                    payment_response,
                    transaction,
                    admission_token,
                    pass,
                })
            }
            Some(VerdictKind::Reject) if self.status == Some(429) => Ok(Verdict::Limited {
                retry_after: bounded_retry.unwrap_or(1),
            }),
            Some(VerdictKind::Reject) => Ok(Verdict::Reject {
                reason: reason_or(ErrorReason::InvalidPayload),
                status: if self.status == Some(400) { 400 } else { 402 },
            }),
            Some(VerdictKind::Unavailable) => Ok(Verdict::Unavailable {
                reason: reason_or(ErrorReason::UnexpectedVerifyError),
                retry_after: bounded_retry,
            }),
            None => Err("unknown verdict"),
        }
    }
}

/// What the sidecar decided, checked: every string here is safe to put in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Admit {
        receipt: String,
        /// Value for `PAYMENT-RESPONSE` (base64 `SettlementResponse`).
        payment_response: Option<String>,
        /// The paying block's hash (64 hex digits), for `x-nanogate-transaction`; `None` when
        /// absent or malformed.
        transaction: Option<String>,
        /// This admission's token, returned with the outcome and never sent anywhere else (not
        /// to the client, not to the upstream); `None` when absent or malformed.
        admission_token: Option<String>,
        /// The pass this payment bought ([`PassIssued::is_safe`]; a verdict with an unsafe
        /// one is refused whole).
        pass: Option<PassIssued>,
    },
    Reject {
        /// The wire reason (one of ours, or any other snake_case string the sidecar sent).
        reason: String,
        /// 402 or 400.
        status: u32,
    },
    Unavailable {
        reason: String,
        retry_after: Option<u32>,
    },
    /// Too many presentations from this client or on this payer's frontier (`rate_limited`):
    /// answered 429 with `Retry-After`.
    Limited { retry_after: u32 },
}

/// The answer to a `/v1/pay` call as the filter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayAnswer {
    Verdict(Verdict),
    /// Envoy's synthesized 504: the call timed out.
    Timeout,
    /// Anything else: unreachable, wrong status, no verdict header, unreadable body.
    Error(String),
}

/// Interprets the HTTP answer to a `/v1/pay` call: its status, its `x-nanogate-verdict`
/// header and its body.
pub fn read_pay_answer(
    status: Option<u32>,
    verdict_header: Option<&[u8]>,
    body: Option<&[u8]>,
) -> PayAnswer {
    match status {
        Some(200) => {}
        Some(504) if verdict_header.is_none() => return PayAnswer::Timeout,
        Some(s) => return PayAnswer::Error(format!("status {s}")),
        None => return PayAnswer::Error("no status".into()),
    }
    if verdict_header.map(<[u8]>::trim_ascii) != Some(super::headers::VERDICT_MARKER.as_bytes()) {
        return PayAnswer::Error("no verdict header".into());
    }
    let Some(body) = body else {
        return PayAnswer::Error("empty body".into());
    };
    let Some(v) = VerdictBody::parse(body) else {
        return PayAnswer::Error("body is not JSON".into());
    };
    match v.check() {
        Ok(verdict) => PayAnswer::Verdict(verdict),
        Err(e) => PayAnswer::Error(e.into()),
    }
}

/// A reason string safe to echo in a header and body: `[a-z0-9_]{1,64}`.
pub fn safe_reason(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A value safe to put in a response header: base64 (either alphabet), at most
/// [`MAX_HEADER_BYTES`].
pub fn safe_header_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HEADER_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// An admission token the filter keeps: 1..=[`MAX_ADMISSION_TOKEN_LEN`] hex digits (the sidecar
/// writes 64).
pub fn is_admission_token(s: &str) -> bool {
    (1..=MAX_ADMISSION_TOKEN_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A block hash as the sidecar writes it: 64 hex digits.
pub fn is_block_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `POST /v1/outcome` body: the upstream's status for an admitted request (Envoy's own 503/504
/// for an upstream reset or timeout included; `0` = the client reset first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeRequest {
    pub receipt: String,
    pub status: u16,
    /// The token of the admission this outcome is for (from its verdict); without the current
    /// admission's token the sidecar refuses the report (403) and records nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_token: Option<String>,
}

/// `/v1/outcome` answer: `recorded` is false for a receipt that was already settled or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeAnswer {
    pub ok: bool,
    pub recorded: bool,
}

/// Most outcomes one [`OutcomeBatch`] may carry (a VM sends its batch when it is this full, or
/// on its next tick); the sidecar refuses a longer one whole.
pub const MAX_OUTCOME_BATCH: usize = 64;

/// `POST /v1/outcomes` body: a filter VM's outcomes since its last batch, each with the token
/// of its own admission (an entry without its admission's current token records nothing,
/// whatever the others carry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeBatch {
    pub outcomes: Vec<OutcomeRequest>,
}

/// `/v1/outcomes` answer: how many entries were recorded, were not (or no longer) admitted,
/// and were refused for their token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeBatchAnswer {
    pub recorded: u32,
    pub not_admitted: u32,
    pub refused: u32,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const V: Option<&[u8]> = Some(b"1");

    fn ans(body: &str) -> PayAnswer {
        read_pay_answer(Some(200), V, Some(body.as_bytes()))
    }

    #[test]
    fn pay_request_reads_what_the_filter_sends_and_writes_it_back() {
        // As the filter's `json!` wrote it (keys sorted).
        let sent = r#"{"payment":{"x402Version":2,"accepted":{},"payload":{"proof":"AB"}},"requirements":{"scheme":"exact","network":"nano:devnet","amount":"5","asset":"XNO","payTo":"nano_x","maxTimeoutSeconds":60,"extra":{"keyId":1,"mac":"m","nonce":"n","validBefore":9}},"resource":"http://h/p","source":"203.0.113.7:41234","upstreamTimeoutMs":15000}"#;
        let r: PayRequest = serde_json::from_str(sent).unwrap();
        assert_eq!(r.resource, "http://h/p");
        assert_eq!(r.requirements.amount, "5");
        assert_eq!(r.upstream_timeout_ms, Some(15_000));
        assert_eq!(r.source.as_deref(), Some("203.0.113.7:41234"));
        let again: Value = serde_json::to_value(&r).unwrap();
        assert_eq!(again, serde_json::from_str::<Value>(sent).unwrap());
        // Optional fields are optional; unknown ones are ignored.
        let r: PayRequest = serde_json::from_value(json!({
            "resource": "r", "payment": {}, "future": 1,
            "requirements": {"scheme": "exact", "network": "n", "amount": "1", "asset": "XNO",
                             "payTo": "p", "maxTimeoutSeconds": 1}
        }))
        .unwrap();
        assert_eq!((r.upstream_timeout_ms, r.source.as_deref()), (None, None));
        assert_eq!(r.payment, Some(json!({})));
        assert_eq!(
            serde_json::to_value(&r)
                .unwrap()
                .as_object()
                .map(|o| o.len()),
            Some(3)
        );
    }

    fn with_payment(payment: Option<Value>, payment_header: Option<String>) -> PayRequest {
        PayRequest {
            resource: "r".into(),
            requirements: serde_json::from_value(json!({"scheme": "exact", "network": "n",
                "amount": "1", "asset": "XNO", "payTo": "p", "maxTimeoutSeconds": 1}))
            .unwrap(),
            payment,
            payment_header,
            upstream_timeout_ms: None,
            source: None,
            attach_work: false,
            pass: None,
        }
    }

    #[test]
    fn a_forwarded_header_that_is_mutated_oversized_or_doubled_is_refused_with_its_reason() {
        use crate::x402::encode_header;
        let payment = json!({"x402Version": 2, "accepted": {}, "payload": {"proof": "AB"}});
        let header = encode_header(&payment);
        // Oversized: refused by size before any decoding, whatever the bytes are.
        let huge = "%".repeat(MAX_HEADER_BYTES + 1);
        let e = with_payment(None, Some(huge)).payment_json().unwrap_err();
        assert!(
            matches!(
                e,
                PaySourceError::Header(PaymentError::HeaderTooLarge { .. })
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("paymentHeader: payment header is "),
            "{e}"
        );
        assert_eq!(e.reason(), ErrorReason::InvalidPayload);
        // Mutated: a byte outside base64, both alphabets mixed, base64 of something not JSON.
        let mut bad_char = header.clone();
        bad_char.replace_range(4..5, "*");
        let mixed = format!("{}-+", &header[..header.len() - 4]);
        let not_json = crate::x402::encode_bytes(b"{\"x402Version\": 2, ");
        for (bad, category) in [
            (bad_char, "not_base64"),
            (mixed, "not_base64"),
            (not_json, "not_json"),
            (String::new(), "not_base64"),
        ] {
            let e = with_payment(None, Some(bad.clone()))
                .payment_json()
                .unwrap_err();
            let PaySourceError::Header(inner) = &e else {
                panic!("{bad:?}: {e}")
            };
            assert_eq!(inner.category(), category, "{bad:?}: {e}");
            assert_eq!(e.reason(), ErrorReason::InvalidPayload);
        }
        // Both forms, or neither: the body is ambiguous or empty, never guessed at.
        let e = with_payment(Some(payment.clone()), Some(header.clone()))
            .payment_json()
            .unwrap_err();
        assert_eq!(e, PaySourceError::Both);
        assert_eq!(
            with_payment(None, None).payment_json(),
            Err(PaySourceError::Missing)
        );
        // The genuine header reads as the JSON it encodes, as does the decoded form.
        assert_eq!(
            with_payment(None, Some(header)).payment_json(),
            Ok(payment.clone())
        );
        assert_eq!(
            with_payment(Some(payment.clone()), None).payment_json(),
            Ok(payment)
        );
    }

    #[test]
    fn verdicts_serialize_as_the_sidecar_always_wrote_them() {
        let tx = "AB".repeat(32);
        let admit = VerdictBody::admit(
            "r1".into(),
            tx.clone(),
            "nano_p".into(),
            "eyJ9".into(),
            false,
            None,
        );
        // The former `json!` form.
        let old = json!({"verdict": "admit", "receipt": "r1", "transaction": tx, "payer": "nano_p",
                         "paymentResponse": "eyJ9", "redeemed": false});
        assert_eq!(serde_json::to_value(&admit).unwrap(), old);
        assert_eq!(serde_json::from_value::<VerdictBody>(old).unwrap(), admit);

        let reject = VerdictBody::reject(ErrorReason::AlreadySpent, "m".into(), 402, None);
        let old =
            json!({"verdict": "reject", "reason": "already_spent", "message": "m", "status": 402});
        assert_eq!(serde_json::to_value(&reject).unwrap(), old);
        let limited = VerdictBody::reject(ErrorReason::RateLimited, "m".into(), 429, Some(5));
        let old = json!({"verdict": "reject", "reason": "rate_limited", "message": "m",
                         "status": 429, "retryAfter": 5});
        assert_eq!(serde_json::to_value(&limited).unwrap(), old);
        let unavailable = VerdictBody::unavailable(ErrorReason::LedgerUnavailable, "m".into(), 2);
        let old = json!({"verdict": "unavailable", "reason": "ledger_unavailable",
                         "message": "m", "retryAfter": 2});
        assert_eq!(serde_json::to_value(&unavailable).unwrap(), old);

        for (body, verdict) in [
            (
                admit,
                Verdict::Admit {
                    receipt: "r1".into(),
                    payment_response: Some("eyJ9".into()),
                    transaction: Some("AB".repeat(32)),
                    admission_token: None,
                    pass: None,
                },
            ),
            (
                reject,
                Verdict::Reject {
                    reason: "already_spent".into(),
                    status: 402,
                },
            ),
            (limited, Verdict::Limited { retry_after: 5 }),
            (
                unavailable,
                Verdict::Unavailable {
                    reason: "ledger_unavailable".into(),
                    retry_after: Some(2),
                },
            ),
        ] {
            assert_eq!(
                ans(&serde_json::to_string(&body).unwrap()),
                PayAnswer::Verdict(verdict)
            );
        }
    }

    #[test]
    fn admit_reject_unavailable() {
        assert_eq!(
            ans(r#"{"verdict":"admit","receipt":"r1","paymentResponse":"eyJhIjoxfQ=="}"#),
            PayAnswer::Verdict(Verdict::Admit {
                receipt: "r1".into(),
                payment_response: Some("eyJhIjoxfQ==".into()),
                transaction: None,
                admission_token: None,
                pass: None,
            })
        );
        // A transaction that is not a block hash never reaches a header.
        for bad in [
            json!("AB"),
            json!("x\r\nX-Evil: 1"),
            json!("ZZ".repeat(32)),
            json!(5),
        ] {
            let body = json!({"verdict": "admit", "receipt": "r1", "transaction": bad});
            assert_eq!(
                ans(&body.to_string()),
                PayAnswer::Verdict(Verdict::Admit {
                    receipt: "r1".into(),
                    payment_response: None,
                    transaction: None,
                    admission_token: None,
                    pass: None,
                })
            );
        }
        // The admission token is kept when it is hex, dropped otherwise.
        let token = "ab".repeat(32);
        for (given, kept) in [
            (json!(token), Some(token.clone())),
            (json!("not hex"), None),
            (json!("a".repeat(129)), None),
            (json!(""), None),
            (json!(7), None),
        ] {
            let body = json!({"verdict": "admit", "receipt": "r1", "admissionToken": given});
            assert_eq!(
                ans(&body.to_string()),
                PayAnswer::Verdict(Verdict::Admit {
                    receipt: "r1".into(),
                    payment_response: None,
                    transaction: None,
                    admission_token: kept,
                    pass: None,
                })
            );
        }
        assert_eq!(
            ans(r#"{"verdict":"reject","reason":"invalid_payload","status":400}"#),
            PayAnswer::Verdict(Verdict::Reject {
                reason: "invalid_payload".into(),
                status: 400
            })
        );
        assert_eq!(
            ans(r#"{"verdict":"unavailable","reason":"ledger_unavailable","retryAfter":7}"#),
            PayAnswer::Verdict(Verdict::Unavailable {
                reason: "ledger_unavailable".into(),
                retry_after: Some(7)
            })
        );
        assert_eq!(
            ans(r#"{"verdict":"unavailable","reason":7,"retryAfter":0}"#),
            PayAnswer::Verdict(Verdict::Unavailable {
                reason: "unexpected_verify_error".into(),
                retry_after: None
            })
        );
    }

    #[test]
    fn a_429_reject_is_limited_with_a_bounded_retry_after() {
        for bad in ["0", "99999", "\"x\"", "null", "-1", "1.5"] {
            let body = format!(
                r#"{{"verdict":"reject","reason":"rate_limited","status":429,"retryAfter":{bad}}}"#
            );
            assert_eq!(
                ans(&body),
                PayAnswer::Verdict(Verdict::Limited { retry_after: 1 })
            );
        }
        assert_eq!(
            ans(r#"{"verdict":"reject","status":429,"retryAfter":3600}"#),
            PayAnswer::Verdict(Verdict::Limited { retry_after: 3600 })
        );
    }

    #[test]
    fn envoy_synthesized_answers_are_never_verdicts() {
        let body = Some(&br#"{"verdict":"admit","receipt":"r"}"#[..]);
        assert_eq!(read_pay_answer(Some(504), None, body), PayAnswer::Timeout);
        assert!(matches!(
            read_pay_answer(Some(503), None, body),
            PayAnswer::Error(_)
        ));
        assert!(matches!(
            read_pay_answer(Some(200), None, body),
            PayAnswer::Error(_)
        ));
        assert!(matches!(
            read_pay_answer(Some(200), Some(b"0"), body),
            PayAnswer::Error(_)
        ));
        assert_eq!(
            read_pay_answer(Some(200), Some(b" 1 "), body),
            PayAnswer::Verdict(Verdict::Admit {
                receipt: "r".into(),
                payment_response: None,
                transaction: None,
                admission_token: None,
                pass: None,
            })
        );
        assert!(matches!(
            read_pay_answer(None, V, body),
            PayAnswer::Error(_)
        ));
        assert!(matches!(
            read_pay_answer(Some(401), V, body),
            PayAnswer::Error(_)
        ));
        assert!(matches!(
            read_pay_answer(Some(200), V, None),
            PayAnswer::Error(_)
        ));
    }

    #[test]
    fn malformed_verdicts_are_errors_or_sanitized() {
        let long_receipt = format!(r#"{{"verdict":"admit","receipt":"{}"}}"#, "r".repeat(257));
        for b in [
            "",
            "nope",
            "{}",
            "[]",
            r#"["admit","r"]"#,
            r#"{"verdict":"admit"}"#,
            r#"{"verdict":"admit","receipt":""}"#,
            r#"{"verdict":"admit","receipt":5}"#,
            long_receipt.as_str(),
            r#"{"verdict":"admit","receipt":"r","paymentResponse":"a\r\nX-Evil: 1"}"#,
            r#"{"verdict":"maybe"}"#,
            r#"{"verdict":1}"#,
        ] {
            assert!(matches!(ans(b), PayAnswer::Error(_)), "{b}");
        }
        assert_eq!(
            ans(r#"{"verdict":"reject","reason":"Bad Reason\r\n","status":500}"#),
            PayAnswer::Verdict(Verdict::Reject {
                reason: "invalid_payload".into(),
                status: 402
            })
        );
        assert_eq!(
            ans(r#"{"verdict":"reject","reason":"x","status":"400"}"#),
            PayAnswer::Verdict(Verdict::Reject {
                reason: "x".into(),
                status: 402
            })
        );
    }

    #[test]
    fn helpers_draw_the_lines_the_filter_relies_on() {
        assert!(safe_reason("a_b_9") && safe_reason(&"a".repeat(64)));
        assert!(!safe_reason("") && !safe_reason(&"a".repeat(65)) && !safe_reason("A"));
        assert!(
            safe_header_value("ab+/=-_9") && !safe_header_value("") && !safe_header_value("a b")
        );
        assert!(!safe_header_value(&"a".repeat(MAX_HEADER_BYTES + 1)));
        assert!(is_block_hash(&"aF".repeat(32)) && !is_block_hash(&"a".repeat(63)));
    }

    #[test]
    fn admission_token_travels_in_the_admit_verdict_and_is_checked() {
        let token = "0f".repeat(32);
        let body = VerdictBody::admit(
            "r".into(),
            "AB".repeat(32),
            "nano_x".into(),
            "eyJ9".into(),
            false,
            Some(token.clone()),
        );
        let wire = serde_json::to_value(&body).unwrap();
        assert_eq!(wire["admissionToken"], token.as_str());
        let read = VerdictBody::parse(wire.to_string().as_bytes()).unwrap();
        assert!(matches!(
            read.check(),
            Ok(Verdict::Admit { admission_token: Some(ref t), .. }) if *t == token
        ));
        for bad in [json!("not hex"), json!("a".repeat(129)), json!(5)] {
            let mut w = wire.clone();
            w["admissionToken"] = bad;
            let read = VerdictBody::parse(w.to_string().as_bytes()).unwrap();
            assert!(matches!(
                read.check(),
                Ok(Verdict::Admit {
                    admission_token: None,
                    pass: None,
                    ..
                })
            ));
        }
    }

    #[test]
    fn outcome_batches_carry_each_entry_with_its_own_token() {
        let wire = r#"{"outcomes":[{"receipt":"a","status":200,"admissionToken":"ab"},{"receipt":"b","status":0}]}"#;
        let b: OutcomeBatch = serde_json::from_str(wire).unwrap();
        assert_eq!(b.outcomes.len(), 2);
        assert_eq!(b.outcomes[0].admission_token.as_deref(), Some("ab"));
        assert_eq!(b.outcomes[1].admission_token, None);
        assert_eq!(serde_json::to_string(&b).unwrap(), wire);
        let a = OutcomeBatchAnswer {
            recorded: 1,
            not_admitted: 0,
            refused: 1,
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"recorded":1,"notAdmitted":0,"refused":1}"#
        );
    }

    #[test]
    fn outcome_bodies_keep_their_shape() {
        let o: OutcomeRequest = serde_json::from_str(r#"{"receipt":"r","status":0}"#).unwrap();
        assert_eq!(
            o,
            OutcomeRequest {
                receipt: "r".into(),
                status: 0,
                admission_token: None,
            }
        );
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"receipt":"r","status":0}"#
        );
        let with_token = r#"{"receipt":"r","status":503,"admissionToken":"ab"}"#;
        let o: OutcomeRequest = serde_json::from_str(with_token).unwrap();
        assert_eq!(o.admission_token.as_deref(), Some("ab"));
        assert_eq!(serde_json::to_string(&o).unwrap(), with_token);
        assert!(
            serde_json::from_str::<OutcomeRequest>(r#"{"receipt":"r","status":70000}"#).is_err()
        );
        let a = OutcomeAnswer {
            ok: true,
            recorded: false,
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"ok":true,"recorded":false}"#
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_answers_never_panic(status in proptest::option::of(0u32..1000),
                                         hdr in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..4)),
                                         body in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..200))) {
            let _ = read_pay_answer(status, hdr.as_deref(), body.as_deref());
        }
    }
}
