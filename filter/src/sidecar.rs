//! Messages to and from the sidecar (`docs/filter-sidecar.md`): the `/v1/pay` and
//! `/v1/outcome` bodies, and how an answer becomes a verdict. Only an HTTP 200 carrying
//! `x-nanogate-verdict: 1` and a well-formed verdict counts; Envoy synthesizes 503/504 for
//! transport failures, and those must never read as a verdict.

use crate::config::SidecarConfig;
use nanogate_protocol::x402::{DecodedPayment, ErrorReason, PaymentRequirements, MAX_HEADER_BYTES};
use serde_json::{json, Value};
use std::time::Duration;

pub const PATH_PAY: &str = "/v1/pay";
pub const PATH_OUTCOME: &str = "/v1/outcome";
pub const PATH_CHALLENGE_KEY: &str = "/v1/challenge-key";
pub const SECRET_HEADER: &str = "x-nanogate-secret";
pub const VERDICT_HEADER: &str = "x-nanogate-verdict";
/// Largest sidecar answer the filter reads.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Longest admission token we keep and return with the outcome (hex digits).
pub const MAX_ADMISSION_TOKEN_LEN: usize = 128;
/// Longest receipt id we accept and echo back.
const MAX_RECEIPT_LEN: usize = 256;

/// An HTTP call to the sidecar, ready for `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl Call {
    pub fn new(
        sidecar: &SidecarConfig,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Call {
        let mut headers = vec![
            (":method".to_owned(), method.to_owned()),
            (":path".to_owned(), path.to_owned()),
            (":authority".to_owned(), sidecar.authority.clone()),
            (":scheme".to_owned(), "http".to_owned()),
            (SECRET_HEADER.to_owned(), sidecar.secret.clone()),
        ];
        if body.is_some() {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
        }
        Call {
            cluster: sidecar.cluster.clone(),
            headers,
            body,
            timeout,
        }
    }
}

/// `GET /v1/challenge-key`.
pub fn key_call(sidecar: &SidecarConfig) -> Call {
    Call::new(
        sidecar,
        "GET",
        PATH_CHALLENGE_KEY,
        None,
        sidecar.control_timeout,
    )
}

/// `POST /v1/pay` with the terms we rebuilt (plus the echoed stamp), the decoded payment and
/// the route's upstream timeout (how long an admitted request may be in flight) and the client's
/// address (for the sidecar's per-source limit).
pub fn pay_call(
    sidecar: &SidecarConfig,
    resource: &str,
    requirements: &PaymentRequirements,
    payment: &DecodedPayment,
    upstream_timeout_ms: u64,
    source: Option<&str>,
) -> Call {
    let payment_json = match payment.to_payload_v2(None) {
        Some(p) => serde_json::to_value(p).unwrap_or(Value::Null),
        None => serde_json::to_value(payment.to_payload_v1()).unwrap_or(Value::Null),
    };
    let mut body = json!({
        "resource": resource,
        "requirements": requirements,
        "payment": payment_json,
        "upstreamTimeoutMs": upstream_timeout_ms,
    });
    if let Some(s) = source {
        body["source"] = Value::from(s);
    }
    Call::new(
        sidecar,
        "POST",
        PATH_PAY,
        Some(body.to_string().into_bytes()),
        sidecar.pay_timeout,
    )
}

/// `POST /v1/outcome`: the upstream's status for a receipt (`0` = timeout or reset), with the
/// admission's token from the verdict (the sidecar records the outcome only with it).
pub fn outcome_call(
    sidecar: &SidecarConfig,
    receipt: &str,
    status: u32,
    admission_token: Option<&str>,
) -> Call {
    let mut body = json!({"receipt": receipt, "status": status});
    if let Some(t) = admission_token {
        body["admissionToken"] = json!(t);
    }
    Call::new(
        sidecar,
        "POST",
        PATH_OUTCOME,
        Some(body.to_string().into_bytes()),
        sidecar.control_timeout,
    )
}

/// What the sidecar decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Admit {
        receipt: String,
        /// Value for `PAYMENT-RESPONSE` (base64 `SettlementResponse`).
        payment_response: Option<String>,
        /// The paying block's hash (64 hex digits), for the upstream's
        /// `x-nanogate-transaction`; `None` when absent or malformed.
        transaction: Option<String>,
        /// This admission's token, returned with the outcome and never sent anywhere else (not
        /// to the client, not to the upstream); `None` when absent or malformed.
        admission_token: Option<String>,
    },
    Reject {
        /// The wire reason (one of ours, or any other snake_case string the sidecar sent).
        reason: String,
        /// 402 (default) or 400.
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
pub enum Answer {
    Verdict(Verdict),
    /// Envoy's synthesized 504: the call timed out.
    Timeout,
    /// Anything else: unreachable, wrong status, no verdict header, unreadable body.
    Error(String),
}

/// A reason string safe to echo in a header and body: `[a-z0-9_]{1,64}`.
fn safe_reason(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A value safe to put in a response header: base64 (either alphabet), bounded.
fn safe_header_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HEADER_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// Interprets the sidecar's answer to `/v1/pay`.
pub fn interpret(
    status: Option<u32>,
    verdict_header: Option<&[u8]>,
    body: Option<&[u8]>,
) -> Answer {
    match status {
        Some(200) => {}
        Some(504) if verdict_header.is_none() => return Answer::Timeout,
        Some(s) => return Answer::Error(format!("status {s}")),
        None => return Answer::Error("no status".into()),
    }
    if verdict_header.map(<[u8]>::trim_ascii) != Some(b"1") {
        return Answer::Error("no verdict header".into());
    }
    let Some(body) = body else {
        return Answer::Error("empty body".into());
    };
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Answer::Error("body is not JSON".into());
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    match text("verdict") {
        Some("admit") => {
            let Some(receipt) =
                text("receipt").filter(|r| !r.is_empty() && r.len() <= MAX_RECEIPT_LEN)
            else {
                return Answer::Error("admit without a receipt".into());
            };
            let payment_response = match text("paymentResponse") {
                Some(p) if safe_header_value(p) => Some(p.to_owned()),
                Some(_) => return Answer::Error("paymentResponse is not base64".into()),
                None => None,
            };
            let transaction = text("transaction")
                .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_owned);
            let admission_token = text("admissionToken")
                .filter(|t| {
                    (1..=MAX_ADMISSION_TOKEN_LEN).contains(&t.len())
                        && t.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .map(str::to_owned);
            Answer::Verdict(Verdict::Admit {
                receipt: receipt.to_owned(),
                payment_response,
                transaction,
                admission_token,
            })
        }
        Some("reject") if v.get("status").and_then(Value::as_u64) == Some(429) => {
            let retry_after = v
                .get("retryAfter")
                .and_then(Value::as_u64)
                .filter(|s| (1..=3600).contains(s))
                .map_or(1, |s| s as u32);
            Answer::Verdict(Verdict::Limited { retry_after })
        }
        Some("reject") => {
            let reason = match text("reason") {
                Some(r) if safe_reason(r) => r.to_owned(),
                _ => ErrorReason::InvalidPayload.as_str().to_owned(),
            };
            let status = match v.get("status").and_then(Value::as_u64) {
                Some(400) => 400,
                _ => 402,
            };
            Answer::Verdict(Verdict::Reject { reason, status })
        }
        Some("unavailable") => {
            let reason = match text("reason") {
                Some(r) if safe_reason(r) => r.to_owned(),
                _ => ErrorReason::UnexpectedVerifyError.as_str().to_owned(),
            };
            let retry_after = v
                .get("retryAfter")
                .and_then(Value::as_u64)
                .filter(|s| (1..=3600).contains(s))
                .map(|s| s as u32);
            Answer::Verdict(Verdict::Unavailable {
                reason,
                retry_after,
            })
        }
        _ => Answer::Error("unknown verdict".into()),
    }
}

/// Whether an outcome or key answer is a real sidecar answer (200 + verdict marker is not
/// required there; 200 from the sidecar's own handler is).
pub fn is_ok(status: Option<u32>) -> bool {
    status == Some(200)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Option<&[u8]> = Some(b"1");

    fn ans(body: &str) -> Answer {
        interpret(Some(200), V, Some(body.as_bytes()))
    }

    #[test]
    fn admit_reject_unavailable() {
        assert_eq!(
            ans(r#"{"verdict":"admit","receipt":"r1","paymentResponse":"eyJhIjoxfQ=="}"#),
            Answer::Verdict(Verdict::Admit {
                receipt: "r1".into(),
                payment_response: Some("eyJhIjoxfQ==".into()),
                transaction: None,
                admission_token: None,
            })
        );
        let tx = "AB".repeat(32);
        assert_eq!(
            ans(&format!(
                r#"{{"verdict":"admit","receipt":"r1","transaction":"{tx}"}}"#
            )),
            Answer::Verdict(Verdict::Admit {
                receipt: "r1".into(),
                payment_response: None,
                transaction: Some(tx),
                admission_token: None,
            })
        );
        // A transaction that is not a block hash never reaches a header.
        for bad in ["AB", "x\r\nX-Evil: 1", &"ZZ".repeat(32)] {
            let body = json!({"verdict": "admit", "receipt": "r1", "transaction": bad});
            assert_eq!(
                ans(&body.to_string()),
                Answer::Verdict(Verdict::Admit {
                    receipt: "r1".into(),
                    payment_response: None,
                    transaction: None,
                    admission_token: None,
                })
            );
        }
        // The admission token is kept when it is hex, dropped otherwise.
        let token = "ab".repeat(32);
        for (given, kept) in [
            (json!(token), Some(token.clone())),
            (json!("not hex"), None),
            (json!("a".repeat(129)), None),
            (json!(7), None),
        ] {
            let body = json!({"verdict": "admit", "receipt": "r1", "admissionToken": given});
            assert_eq!(
                ans(&body.to_string()),
                Answer::Verdict(Verdict::Admit {
                    receipt: "r1".into(),
                    payment_response: None,
                    transaction: None,
                    admission_token: kept,
                })
            );
        }
        assert_eq!(
            ans(r#"{"verdict":"reject","reason":"already_spent","message":"m","status":402}"#),
            Answer::Verdict(Verdict::Reject {
                reason: "already_spent".into(),
                status: 402
            })
        );
        assert_eq!(
            ans(r#"{"verdict":"reject","reason":"invalid_payload","status":400}"#),
            Answer::Verdict(Verdict::Reject {
                reason: "invalid_payload".into(),
                status: 400
            })
        );
        assert_eq!(
            ans(r#"{"verdict":"unavailable","reason":"ledger_unavailable","retryAfter":7}"#),
            Answer::Verdict(Verdict::Unavailable {
                reason: "ledger_unavailable".into(),
                retry_after: Some(7)
            })
        );
    }

    #[test]
    fn a_429_reject_is_limited_with_a_bounded_retry_after() {
        assert_eq!(
            ans(
                r#"{"verdict":"reject","reason":"rate_limited","message":"m","status":429,"retryAfter":7}"#
            ),
            Answer::Verdict(Verdict::Limited { retry_after: 7 })
        );
        for bad in ["0", "99999", "\"x\"", "null"] {
            let body = format!(
                r#"{{"verdict":"reject","reason":"rate_limited","status":429,"retryAfter":{bad}}}"#
            );
            assert_eq!(
                ans(&body),
                Answer::Verdict(Verdict::Limited { retry_after: 1 })
            );
        }
    }

    #[test]
    fn envoy_synthesized_answers_are_never_verdicts() {
        let body = Some(&br#"{"verdict":"admit","receipt":"r"}"#[..]);
        assert_eq!(interpret(Some(504), None, body), Answer::Timeout);
        assert!(matches!(interpret(Some(503), None, body), Answer::Error(_)));
        assert!(matches!(interpret(Some(200), None, body), Answer::Error(_)));
        assert!(matches!(
            interpret(Some(200), Some(b"0"), body),
            Answer::Error(_)
        ));
        assert!(matches!(interpret(None, V, body), Answer::Error(_)));
        assert!(matches!(interpret(Some(401), V, body), Answer::Error(_)));
    }

    #[test]
    fn malformed_verdicts_are_errors_or_sanitized() {
        for b in [
            "",
            "nope",
            "{}",
            r#"{"verdict":"admit"}"#,
            r#"{"verdict":"admit","receipt":""}"#,
            r#"{"verdict":"admit","receipt":"r","paymentResponse":"a\r\nX-Evil: 1"}"#,
            r#"{"verdict":"maybe"}"#,
        ] {
            assert!(matches!(ans(b), Answer::Error(_)), "{b}");
        }
        assert_eq!(
            ans(r#"{"verdict":"reject","reason":"Bad Reason\r\n","status":500}"#),
            Answer::Verdict(Verdict::Reject {
                reason: "invalid_payload".into(),
                status: 402
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_answers_never_panic(status in proptest::option::of(0u32..1000),
                                         hdr in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..4)),
                                         body in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..200))) {
            let _ = interpret(status, hdr.as_deref(), body.as_deref());
        }
    }
}
