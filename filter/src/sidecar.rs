//! Messages to and from the sidecar, as [`nanogate_protocol::contract`] types: the calls
//! (`/v1/challenge-key`, `/v1/pay`, `/v1/outcome`, `/v1/outcomes`, `/v1/sessions`) and how their answers are
//! read. A `/v1/pay` answer counts only as a verdict the contract's
//! [`read_pay_answer`](contract::read_pay_answer) accepts (HTTP 200 with
//! `x-nanogate-verdict: 1`): Envoy synthesizes 503/504 for transport failures, and those must
//! never read as a verdict.

use crate::config::{Config, Price, SidecarConfig, TaggedTerms, SESSION_BATCH};
use crate::pool::Session;
use crate::presented::Presented;
use nanogate_protocol::contract::pass::PassUsageRequest;
use nanogate_protocol::contract::{
    self, headers, paths, OutcomeBatch, OutcomeRequest, PayRequest, SessionOffer, SessionsRequest,
};
use nanogate_protocol::x402::plain_run;
use std::time::Duration;

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
            (headers::SECRET.to_owned(), sidecar.secret.clone()),
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
        paths::CHALLENGE_KEY,
        None,
        sidecar.control_timeout,
    )
}

/// `POST /v1/pay` with the terms we rebuilt (plus the echoed stamp), the payment header as the
/// client sent it (the sidecar decodes it itself: cheaper than re-encoding what we decoded),
/// the route's upstream timeout (how long an admitted request may be in flight) and the
/// client's address (for the sidecar's per-source limit).
/// The route's `attachWork` goes along, and a pass purchase names the pass's terms.
pub fn pay_call(
    sidecar: &SidecarConfig,
    price: &Price,
    offer: &Presented,
    payment_header: String,
    source: Option<&str>,
) -> Call {
    let mut body = PayRequest {
        resource: offer.resource.clone(),
        requirements: offer.requirements.clone(),
        payment: None,
        payment_header: None,
        upstream_timeout_ms: Some(price.upstream_timeout_ms),
        source: source.map(str::to_owned),
        attach_work: price.work.attached,
        pass: offer.pass.clone(),
    };
    // The header (most of the body) goes in as it is, not through serde_json's escaping, which
    // checks it character by character: a value the filter decoded is base64, which JSON does
    // not escape (checked eight bytes at a time). Anything else goes through serde.
    let json = if plain_run(payment_header.as_bytes()) == payment_header.len() {
        let mut json = serde_json::to_vec(&body).unwrap_or_default();
        if json.pop() == Some(b'}') {
            json.extend_from_slice(b",\"paymentHeader\":\"");
            json.extend_from_slice(payment_header.as_bytes());
            json.extend_from_slice(b"\"}");
        }
        json
    } else {
        body.payment_header = Some(payment_header);
        serde_json::to_vec(&body).unwrap_or_default()
    };
    Call::new(sidecar, "POST", paths::PAY, Some(json), sidecar.pay_timeout)
}

/// `POST /v1/passes/usage`: this VM's pass counts since its last report.
pub fn usage_call(sidecar: &SidecarConfig, report: &PassUsageRequest) -> Call {
    Call::new(
        sidecar,
        "POST",
        paths::PASS_USAGE,
        Some(serde_json::to_vec(report).unwrap_or_default()),
        sidecar.control_timeout,
    )
}

/// `POST /v1/outcome`: the upstream's status for a receipt (`0` = the client reset), with the
/// admission's token from the verdict (the sidecar records the outcome only with it).
pub fn outcome_call(sidecar: &SidecarConfig, outcome: &OutcomeRequest) -> Call {
    Call::new(
        sidecar,
        "POST",
        paths::OUTCOME,
        Some(serde_json::to_vec(outcome).unwrap_or_default()),
        sidecar.control_timeout,
    )
}

/// `POST /v1/outcomes`: a VM's queued outcomes, each with its own admission's token.
pub fn outcomes_call(sidecar: &SidecarConfig, batch: &OutcomeBatch) -> Call {
    Call::new(
        sidecar,
        "POST",
        paths::OUTCOMES,
        Some(serde_json::to_vec(batch).unwrap_or_default()),
        sidecar.control_timeout,
    )
}

/// `POST /v1/sessions`: a batch of sessions for one pool of a tagged route (its own, at its
/// price, or a pass's, at the pass price and bound to the pass scope).
pub fn sessions_call(cfg: &Config, price: &Price, t: &TaggedTerms) -> Call {
    let body = SessionsRequest {
        count: SESSION_BATCH,
        price: crate::jsontext::num(t.amount_raw),
        validity_seconds: price.max_timeout_secs,
        scope: t.scope.clone(),
        pay_to: t.pool.iter().map(|p| p.address.clone()).collect(),
    };
    Call::new(
        &cfg.sidecar,
        "POST",
        paths::SESSIONS,
        Some(serde_json::to_vec(&body).unwrap_or_default()),
        cfg.sidecar.control_timeout,
    )
}

/// The well-formed sessions of a `/v1/sessions` answer, as pool entries.
pub fn parse_sessions(body: &[u8]) -> Vec<Session> {
    contract::parse_sessions(body)
        .into_iter()
        .map(|s: SessionOffer| Session {
            id: s.id,
            pay_to: s.pay_to,
            amount: s.amount,
            valid_before: s.valid_before,
            key_id: s.key_id,
            mac: s.mac,
        })
        .collect()
}

/// Whether an outcome or key answer is a real sidecar answer (200 + verdict marker is not
/// required there; 200 from the sidecar's own handler is).
pub fn is_ok(status: Option<u32>) -> bool {
    status == Some(200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The body with the header written in by hand is the contract's `PayRequest`, the same as
    /// serde writes it; a header with characters JSON escapes goes through serde.
    #[test]
    fn the_pay_body_is_the_contract_type_whatever_the_header() {
        let cfg = crate::tests_support::config();
        let price = crate::tests_support::paid(&cfg, 1);
        let offer = Presented {
            requirements: serde_json::from_value(json!({"scheme": "exact",
                "network": "nano:devnet", "amount": "5", "asset": "XNO", "payTo": "nano_x",
                "maxTimeoutSeconds": 60, "extra": {"nonce": "ab"}}))
            .expect("requirements"),
            resource: "http://h/p".into(),
            pass: None,
        };
        for header in ["eyJhIjoxfQ==", "ab+/_-09", "", "a\"b\\c\u{1}é", "x\"}"] {
            let call = pay_call(
                &cfg.sidecar,
                price,
                &offer,
                header.into(),
                Some("1.2.3.4:5"),
            );
            let sent: PayRequest =
                serde_json::from_slice(call.body.as_deref().unwrap_or_default()).expect("JSON");
            assert_eq!(sent.payment_header.as_deref(), Some(header), "{header:?}");
            assert_eq!(sent.requirements, offer.requirements);
            assert_eq!(sent.resource, offer.resource);
            assert_eq!(sent.source.as_deref(), Some("1.2.3.4:5"));
            assert_eq!(sent.upstream_timeout_ms, Some(price.upstream_timeout_ms));
            let typed = PayRequest {
                payment_header: Some(header.into()),
                ..sent.clone()
            };
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(
                    call.body.as_deref().unwrap_or_default()
                )
                .expect("JSON"),
                serde_json::to_value(&typed).expect("value"),
                "{header:?}"
            );
        }
    }

    #[test]
    fn malformed_sessions_are_dropped() {
        assert!(parse_sessions(b"not json").is_empty());
        let body = json!({"sessions": [
            {"id": "00112233445566778899aabbccddeeff", "payTo": "nano_x", "amount": "12",
             "validBefore": 50, "keyId": 1, "mac": "cd".repeat(32)},
            {"id": "short", "payTo": "nano_x", "amount": "12", "validBefore": 50, "keyId": 1, "mac": "cd"},
            {"id": "00112233445566778899aabbccddeeff", "payTo": "nano x", "amount": "12",
             "validBefore": 50, "keyId": 1, "mac": "cd".repeat(32)}
        ]});
        let s = parse_sessions(body.to_string().as_bytes());
        assert_eq!(s.len(), 1);
        // What the answer gave, the pool keeps.
        let mut shared = crate::tests_support::MemShared::default();
        assert!(crate::pool::push(&mut shared, "k", &s, 0, 0));
        let (bytes, _) = crate::pool::SharedData::get(&shared, "k");
        assert_eq!(
            crate::pool::decode_pool(&bytes.unwrap_or_default(), 0, 0),
            s
        );
    }
}
