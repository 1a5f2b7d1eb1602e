//! The replies the filter sends itself: 402/400 challenges (JSON, or the paywall page for a
//! browser on a tagged route), 429 and 503.

use crate::config::{Price, TaggedTerms};
use crate::host::Host;
use crate::keys::KeyRing;
use crate::metrics::Metric;
use crate::paywall::PassChoice;
use crate::pool::{min_left, Session};
use nanogate_protocol::x402::{encode_bytes, headers, ErrorReason, PaymentRequired, ResourceInfo};

/// Headers a browser client may read on our responses.
pub const EXPOSE: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";

/// What a fresh challenge is sent with.
pub struct Challenge<'a> {
    pub price: &'a Price,
    pub resource: &'a str,
    /// The signed-block challenge, rendered by [`crate::challenge::render_challenge`].
    pub body: Vec<u8>,
    pub status: u32,
    pub now: u64,
    pub ring: &'a KeyRing,
}

/// Sends a 402/400 challenge: adds the tagged offers of the route's pools when there are
/// (its own session, and one per pass it sells; never while the request already carries a
/// payment: a rejected retry is not a new customer), and answers a browser with the paywall
/// page.
pub fn send_challenge<H: Host + ?Sized>(host: &mut H, network: &str, mut c: Challenge<'_>) {
    let session = match c.price.tagged.as_deref() {
        Some(t) if !has_payment(host) => take_session(host, &c, t),
        _ => None,
    };
    let mut passes = Vec::new();
    if session.is_some() {
        for p in c.price.passes.iter().flat_map(|p| p.offers.iter()) {
            if let Some(s) = p.tagged.as_deref().and_then(|t| take_session(host, &c, t)) {
                let offer = crate::challenge::session_offer_json(network, c.price, &s, Some(p));
                passes.push((p, offer, s));
            }
        }
    }
    let Some(session) = session else {
        send_payment_required_json(host, &c.body, c.status);
        return;
    };
    let offer = crate::challenge::session_offer_json(network, c.price, &session, None);
    let mut body = std::mem::take(&mut c.body);
    // The template ends with the accepts array's `]`, the extensions if any, then `}`.
    let closing = c.price.template.closing().as_bytes();
    if body.ends_with(closing) {
        body.truncate(body.len() - closing.len());
        for o in std::iter::once(&offer).chain(passes.iter().map(|p| &p.1)) {
            body.push(b',');
            body.extend_from_slice(o.as_bytes());
        }
        body.extend_from_slice(closing);
    }
    if wants_html(host) {
        let choices: Vec<PassChoice<'_>> = passes
            .iter()
            .map(|(p, offer, session)| PassChoice {
                terms: &p.terms,
                offer,
                session,
            })
            .collect();
        let page =
            crate::paywall::page_with_passes(c.price, c.resource, &offer, &session, &choices);
        send_paywall(host, &c, &body, &page);
    } else {
        send_payment_required_json(host, &body, c.status);
    }
}

/// A session from one of a tagged route's pools.
fn take_session<H: Host + ?Sized>(
    host: &mut H,
    c: &Challenge<'_>,
    t: &TaggedTerms,
) -> Option<Session> {
    let s = host.pop_session(&t.key, c.now, min_left(c.price), c.ring);
    if s.is_none() {
        host.count(Metric::SessionPoolEmpty);
    }
    s
}

fn has_payment<H: Host + ?Sized>(host: &H) -> bool {
    host.request_header(headers::PAYMENT_SIGNATURE).is_some()
        || host.request_header(headers::X_PAYMENT).is_some()
}

fn wants_html<H: Host + ?Sized>(host: &H) -> bool {
    host.request_header("accept")
        .is_some_and(|a| prefers_html(&a))
}

/// Whether the client would rather read HTML than JSON: a browser navigating lists
/// `text/html` first (API clients send `application/json`, `*/*` or nothing).
pub fn prefers_html(accept: &[u8]) -> bool {
    accept
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"text/html"))
}

fn send_paywall<H: Host + ?Sized>(host: &mut H, c: &Challenge<'_>, body: &[u8], page: &str) {
    let header = encode_bytes(body);
    host.send_response(
        c.status,
        &[
            (headers::PAYMENT_REQUIRED, &header),
            ("content-type", "text/html; charset=utf-8"),
            ("access-control-expose-headers", EXPOSE),
            ("cache-control", "no-store"),
            (
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'",
            ),
        ],
        page.as_bytes(),
    );
}

/// A 402/400 that says why but offers nothing (no key to issue a challenge with).
pub fn send_reason_only<H: Host + ?Sized>(
    host: &mut H,
    price: &Price,
    resource: &str,
    reason: String,
    status: u32,
) {
    let info = ResourceInfo {
        url: resource.to_owned(),
        description: price.description.clone(),
        mime_type: price.mime_type.clone(),
    };
    let pr = PaymentRequired {
        error: Some(reason),
        ..PaymentRequired::new(None, info, vec![])
    };
    let body = serde_json::to_vec(&pr).unwrap_or_default();
    send_payment_required_json(host, &body, status);
}

/// The 402/400 for a serialized `PaymentRequired`: the header is the base64 of exactly the
/// body's bytes.
pub fn send_payment_required_json<H: Host + ?Sized>(host: &mut H, body: &[u8], status: u32) {
    let header = encode_bytes(body);
    host.send_response(
        status,
        &[
            (headers::PAYMENT_REQUIRED, &header),
            ("content-type", "application/json"),
            ("access-control-expose-headers", EXPOSE),
            ("cache-control", "no-store"),
        ],
        body,
    );
}

/// 429 + `Retry-After`: too many presentations; no fresh challenge (it would only feed the
/// flood).
pub fn send_limited<H: Host + ?Sized>(host: &mut H, retry_after: u32) {
    let retry = retry_after.to_string();
    host.send_response(
        429,
        &[
            ("retry-after", &retry),
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        br#"{"error":"rate_limited","message":"too many payment attempts; retry after Retry-After seconds"}"#,
    );
}

/// 503 + `Retry-After`: payments cannot be decided now.
pub fn send_unavailable<H: Host + ?Sized>(host: &mut H, reason: ErrorReason, retry_after: u32) {
    let retry = retry_after.to_string();
    let body = serde_json::json!({
        "error": reason.as_str(),
        "message": "payment verification is temporarily unavailable; retry later",
    })
    .to_string();
    host.send_response(
        503,
        &[
            ("retry-after", &retry),
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        body.as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_prefer_html_api_clients_do_not() {
        assert!(prefers_html(
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(prefers_html(b"TEXT/HTML"));
        assert!(!prefers_html(b"application/json"));
        assert!(!prefers_html(b"*/*"));
        assert!(!prefers_html(b"application/json, text/html"));
        assert!(!prefers_html(b"text/h"));
    }

    use crate::config::TaggedTerms;
    use crate::flow::{Flow, Next};
    use crate::pool::Session;
    use crate::tests_support::{config_with, paid, MockHost, POOL_B};
    use nanogate_protocol::challenge::{self, ChallengeStamp, Mechanism};
    use nanogate_protocol::contract::Offer;
    use nanogate_protocol::hex;
    use nanogate_protocol::x402::encode_header;
    use serde_json::{json, Value};
    use std::rc::Rc;

    const NOW: u64 = 1_800_000_000;

    /// Session `n` of pool `t`, MAC'd as the sidecar does (under the mock host's key).
    fn session(t: &TaggedTerms, n: u8) -> Session {
        let host = MockHost::new(NOW);
        let key = &host.ring.as_ref().expect("ring").current;
        let payee = &t.pool[0];
        let amount = t.amount_raw + u128::from(n);
        let offer = Offer {
            network: "nano:devnet",
            pay_to: payee,
            amount,
            max_timeout_seconds: 600,
            resource: &t.scope,
            mechanism: Mechanism::TaggedSession,
        };
        let stamp = ChallengeStamp {
            valid_before: NOW + 600,
            nonce: [n; 16],
            key_id: key.key_id,
        };
        Session {
            id: hex::encode_lower(&[n; 16]),
            pay_to: payee.address.clone(),
            amount,
            valid_before: stamp.valid_before,
            key_id: key.key_id,
            mac: hex::encode_lower(&challenge::mac(&key.key, &offer.terms(), &stamp)),
        }
    }

    /// Scenario (#16): a tagged route selling two passes, its pools filled. The 402 offers
    /// the single request and each pass by tagged session; the browser's 402 is the paywall
    /// with both passes; and presenting a pass's session goes to the sidecar as that pass's
    /// purchase (its terms, its scope), with no other call.
    #[test]
    fn a_tagged_402_sells_each_pass_by_its_own_session() {
        let cfg = Rc::new(config_with(json!({"name": "t", "path": {"prefix": "/t/"},
            "priceRaw": "1000", "tagged": true, "payToPool": [POOL_B], "maxTimeoutSeconds": 600,
            "passes": [{"name": "hour", "priceRaw": "5000", "seconds": 3600},
                       {"name": "ten", "priceRaw": "9000", "requests": 10}]})));
        let p = paid(&cfg, 0);
        let fill = |host: &mut MockHost| {
            for (i, t) in p.pools().enumerate() {
                let sessions = [session(t, 10 + i as u8)];
                assert!(crate::pool::push(
                    &mut host.shared,
                    &t.key,
                    &sessions,
                    NOW,
                    0
                ));
            }
        };
        let mut host = MockHost::new(NOW).request("GET", "h", "/t/x");
        fill(&mut host);
        let next = Flow::new(Rc::clone(&cfg)).on_request_headers(&mut host);
        assert_eq!(next, Next::Pause);
        let (status, _, body) = host.reply().expect("a 402").clone();
        assert_eq!(status, 402);
        let pr: Value = serde_json::from_slice(&body).expect("JSON");
        let tagged: Vec<&Value> = pr["accepts"]
            .as_array()
            .expect("accepts")
            .iter()
            .filter(|o| o["extra"]["mechanism"] == "tagged")
            .collect();
        assert_eq!(tagged.len(), 3, "{pr}");
        assert!(tagged[0]["extra"].get("pass").is_none());
        for (o, (name, price)) in tagged[1..].iter().zip([("hour", 5000u32), ("ten", 9000)]) {
            assert_eq!(o["extra"]["pass"]["name"], name);
            assert_eq!(
                o["extra"]["nanoSession"]["resourceAmountRaw"],
                price.to_string()
            );
            assert_eq!(o["payTo"], POOL_B);
        }

        // A browser gets the paywall, with both passes as options.
        let mut host = MockHost::new(NOW)
            .request("GET", "h", "/t/x")
            .header("accept", "text/html");
        fill(&mut host);
        Flow::new(Rc::clone(&cfg)).on_request_headers(&mut host);
        let page = String::from_utf8(host.reply().expect("page").2.clone()).expect("UTF-8");
        assert!(page.contains("\"passes\":["), "pass options");
        assert!(page.contains("\"name\":\"hour\"") && page.contains("\"name\":\"ten\""));

        // Paying the `hour` session: forwarded as that pass's purchase.
        let hour = tagged[1].clone();
        let payment = json!({"x402Version": 2, "accepted": hour,
            "payload": {"sessionId": hour["extra"]["nonce"], "proof": "AB".repeat(32)}});
        let mut host = MockHost::new(NOW)
            .request("GET", "h", "/t/x")
            .header("payment-signature", encode_header(&payment));
        let next = Flow::new(Rc::clone(&cfg)).on_request_headers(&mut host);
        assert_eq!(next, Next::Pause);
        assert!(host.responses.is_empty(), "no local reply");
        assert_eq!(host.calls.len(), 1);
        let sent: Value =
            serde_json::from_slice(host.calls[0].body.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(sent["resource"], "nanogate-pass:t:hour:3600:0");
        assert_eq!(
            sent["pass"],
            json!({"name": "hour", "group": "t", "seconds": 3600})
        );
        assert_eq!(sent["requirements"]["amount"], hour["amount"]);
    }
}
