//! Native tests of the request flow through a mocked host: every local decision, every sidecar
//! answer, and arbitrary header bytes.

use crate::challenge::resource_url;
use crate::flow::{Flow, Next};
use crate::metrics::Metric;
use crate::tests_support::*;
use nanogate_protocol::challenge::{self, ChallengeKey, ChallengeTerms, Mechanism};
use nanogate_protocol::contract::{ASSET_XNO, SCHEME_EXACT};
use nanogate_protocol::nano::PublicKey;
use nanogate_protocol::x402::{
    decode_header, decode_payment, encode_header, ErrorReason, PaymentError, PaymentRequired,
    MAX_HEADER_BYTES,
};
use proptest::strategy::Strategy;
use serde_json::{json, Value};
use std::rc::Rc;

const NOW: u64 = 1_800_000_000;
const VECTORS: &str = include_str!("../../tests/vectors/x402-vectors.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn flow() -> Flow {
    Flow::new(Rc::new(config()))
}

fn get(path: &str) -> MockHost {
    MockHost::new(NOW).request("GET", "api.example.com", path)
}

/// Runs the request headers; returns the flow for later callbacks.
fn run(host: &mut MockHost) -> (Flow, Next) {
    let mut f = flow();
    let next = f.on_request_headers(host);
    (f, next)
}

fn payment_required_of(host: &MockHost) -> PaymentRequired {
    let header = host
        .reply_header("payment-required")
        .expect("PAYMENT-REQUIRED header");
    let pr: PaymentRequired = decode_header(&header, 64 * 1024).expect("decodes");
    let body: PaymentRequired =
        serde_json::from_slice(&host.reply().unwrap().2).expect("body is JSON");
    assert_eq!(pr, body, "header and body carry the same PaymentRequired");
    pr
}

/// A challenge as the filter issues it for `path`.
fn challenge_for(path: &str) -> PaymentRequired {
    let mut h = get(path);
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    payment_required_of(&h)
}

/// The vector's signed-block payment, answering `pr`'s offer.
fn payment_for(pr: &PaymentRequired) -> Value {
    let mut p = vectors()["payment_payload_v2"]["object"].clone();
    p["accepted"] = serde_json::to_value(&pr.accepts[0]).unwrap();
    p["resource"] = serde_json::to_value(&pr.resource).unwrap();
    p
}

fn b64(v: &Value) -> String {
    encode_header(v)
}

fn paid(path: &str, payment: &Value) -> MockHost {
    get(path).header("PAYMENT-SIGNATURE", b64(payment))
}

fn error_of(host: &MockHost) -> Option<String> {
    payment_required_of(host).error
}

#[test]
fn free_route_passes_untouched() {
    let mut h = get("/paid/health").header("payment-signature", "garbage");
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Continue);
    assert!(h.responses.is_empty() && h.calls.is_empty() && h.removed.is_empty());
    assert!(h.counts.is_empty());
}

/// Pass cookies never reach an upstream of ours, whatever the route; other cookies pass as
/// the client sent them (the header is not even rewritten).
#[test]
fn pass_cookies_are_stripped_and_other_cookies_left_alone() {
    let mut h = get("/paid/health").header("cookie", "a=1; nanogate-pass-api=tok;b=2");
    assert_eq!(run(&mut h).1, Next::Continue);
    assert_eq!(h.set, vec![("cookie".to_owned(), "a=1; b=2".to_owned())]);
    let mut h = get("/paid/health").header("cookie", "nanogate-pass-api=tok");
    run(&mut h);
    assert_eq!(h.removed, vec!["cookie".to_owned()]);
    for other in ["a=1; b=2", "nanogate-passport=1", "a=\u{ff}nanogate-pas"] {
        let mut h = get("/paid/health").header("cookie", other);
        assert_eq!(run(&mut h).1, Next::Continue);
        assert!(h.set.is_empty() && h.removed.is_empty(), "{other}");
    }
}

#[test]
fn unmatched_request_passes_untouched() {
    for path in ["/", "/public", "/paidx"] {
        let mut h = get(path);
        assert_eq!(run(&mut h).1, Next::Continue);
        assert!(h.responses.is_empty() && h.calls.is_empty());
    }
    // No :path at all (not an HTTP request we can judge).
    let mut h = MockHost::new(NOW);
    assert_eq!(run(&mut h).1, Next::Continue);
}

#[test]
fn unpaid_request_gets_a_decodable_402_without_a_sidecar_call() {
    let mut h = get("/paid/report?q=1");
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert!(h.calls.is_empty(), "no sidecar call on the 402 path");
    let (status, headers, _) = h.reply().unwrap().clone();
    assert_eq!(status, 402);
    let expose = h.reply_header("access-control-expose-headers").unwrap();
    assert!(expose.contains("PAYMENT-REQUIRED") && expose.contains("PAYMENT-RESPONSE"));
    assert_eq!(
        h.reply_header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(headers.iter().all(|(n, _)| n != "x-nanogate-secret"));
    let pr = payment_required_of(&h);
    assert_eq!(pr.x402_version, 2);
    assert_eq!(pr.error.as_deref(), Some("payment_required"));
    assert_eq!(pr.resource.url, "http://api.example.com/paid/report");
    assert_eq!(pr.resource.description.as_deref(), Some("Premium report"));
    assert_eq!(pr.resource.mime_type.as_deref(), Some("application/json"));
    assert_eq!(pr.accepts.len(), 1);
    let a = &pr.accepts[0];
    assert_eq!(
        (a.scheme.as_str(), a.network.as_str(), a.asset.as_str()),
        ("exact", "nano:devnet", "XNO")
    );
    assert_eq!(a.amount, "1000000000000000000000000000");
    assert_eq!(a.pay_to, PAY_TO);
    assert_eq!(a.max_timeout_seconds, 60);
    // The binding verifies under the key we hold, for exactly these terms.
    let (stamp, tag) = challenge::read_extra(&a.extra).unwrap();
    assert_eq!(stamp.key_id, 10);
    assert_eq!(stamp.valid_before, NOW + 60);
    let terms = ChallengeTerms {
        network: "nano:devnet",
        scheme: SCHEME_EXACT,
        asset: ASSET_XNO,
        pay_to: PublicKey::from_address(PAY_TO).unwrap(),
        amount: 1_000_000_000_000_000_000_000_000_000,
        resource: "http://api.example.com/paid/report",
        mechanism: Mechanism::SignedBlock,
    };
    assert_eq!(
        challenge::verify(&ChallengeKey([7; 32]), &terms, &stamp, &tag, NOW),
        Ok(())
    );
    assert_eq!(h.count_of(Metric::ChallengesIssued), 1);
}

#[test]
fn each_challenge_has_a_fresh_nonce() {
    let a = challenge_for("/paid/report");
    let b = challenge_for("/paid/report");
    // Same mock nonce counter start, so compare within one host instead.
    let mut h = get("/paid/report");
    run(&mut h);
    let first = payment_required_of(&h).accepts[0].extra["nonce"].clone();
    h.responses.clear();
    run(&mut h);
    let second = payment_required_of(&h).accepts[0].extra["nonce"].clone();
    assert_ne!(first, second);
    assert_eq!(a.accepts[0].extra.len(), 4);
    assert_eq!(b.accepts[0].extra.len(), 4);
}

#[test]
fn resource_url_is_scheme_host_and_path() {
    assert_eq!(
        resource_url("HTTPS", "API.example.com:8443", "/a/b?x#y"),
        "https://api.example.com:8443/a/b"
    );
    assert_eq!(resource_url("", "h", "/"), "http://h/");
}

#[test]
fn no_key_fails_closed_with_retry_after() {
    let mut h = get("/paid/report");
    h.ring = None;
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert_eq!(h.reply().unwrap().0, 503);
    assert_eq!(h.reply_header("retry-after").as_deref(), Some("3"));
    assert_eq!(h.count_of(Metric::KeyUnavailable), 1);
    // A key past its notAfter plus the grace is as good as none.
    let mut h = get("/paid/report");
    h.ring = Some(ring(10, NOW - crate::keys::ISSUE_GRACE_SECS));
    run(&mut h);
    assert_eq!(h.reply().unwrap().0, 503);
    // Within the grace it still issues.
    let mut h = get("/paid/report");
    h.ring = Some(ring(10, NOW - 1));
    run(&mut h);
    assert_eq!(h.reply().unwrap().0, 402);
}

#[test]
fn no_key_on_a_fail_open_route_passes_and_is_counted() {
    let mut h = get("/open/x").header("x-payment", "whatever");
    h.ring = None;
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Continue);
    assert!(h.responses.is_empty());
    assert_eq!(h.count_of(Metric::FailOpenPasses), 1);
    assert!(
        !h.request_headers.contains_key("x-payment"),
        "payment headers stripped"
    );
}

#[test]
fn no_randomness_fails_closed() {
    let mut h = get("/paid/report");
    h.no_random = true;
    run(&mut h);
    assert_eq!(h.reply().unwrap().0, 503);
}

#[test]
fn valid_payment_calls_the_sidecar_with_our_terms_and_pauses() {
    let pr = challenge_for("/paid/report");
    let mut payment = payment_for(&pr);
    // A client that lowers the amount or changes payTo in `accepted` changes nothing:
    // the terms sent to the sidecar are ours (invariant 2 in docs/design.md).
    payment["accepted"]["amount"] = json!("1");
    payment["accepted"]["payTo"] =
        json!("nano_1111111111111111111111111111111111111111111111111111hifc8npp");
    let mut h = paid("/paid/report", &payment);
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert!(h.responses.is_empty());
    assert_eq!(h.calls.len(), 1);
    let call = &h.calls[0];
    assert_eq!(call.cluster, "nanogate_sidecar");
    let hv = |n: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(hv(":method"), Some("POST"));
    assert_eq!(hv(":path"), Some("/v1/pay"));
    assert_eq!(hv(":authority"), Some("sidecar.local"));
    assert_eq!(hv("x-nanogate-secret"), Some(SECRET));
    assert_eq!(call.timeout, std::time::Duration::from_millis(3000));
    let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["resource"], "http://api.example.com/paid/report");
    assert_eq!(
        body["requirements"]["amount"],
        "1000000000000000000000000000"
    );
    assert_eq!(body["requirements"]["payTo"], PAY_TO);
    assert_eq!(body["requirements"]["network"], "nano:devnet");
    assert_eq!(body["requirements"]["maxTimeoutSeconds"], 60);
    assert_eq!(
        body["requirements"]["extra"],
        serde_json::to_value(&pr.accepts[0].extra).unwrap()
    );
    // The payment goes as the client sent it (the sidecar decodes it itself), byte for byte.
    assert_eq!(body["paymentHeader"], b64(&payment));
    assert!(
        body.get("payment").is_none(),
        "one form of the payment only"
    );
}

#[test]
fn a_payment_in_x_payment_is_forwarded_as_that_header_was_sent() {
    let pr = challenge_for("/paid/report");
    // The URL-safe alphabet, as some clients write it: forwarded unchanged all the same.
    let header = b64(&payment_for(&pr)).replace('+', "-").replace('/', "_");
    let mut h = get("/paid/report").header("x-payment", header.clone());
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert_eq!(h.calls.len(), 1);
    let body: Value = serde_json::from_slice(h.calls[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(body["paymentHeader"], header);
}

fn admitted(path: &str) -> (Flow, MockHost) {
    let pr = challenge_for(path);
    let mut h = paid(path, &payment_for(&pr)).header("x-payment", "also-sent");
    let (mut f, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    let body = format!(
        r#"{{"verdict":"admit","receipt":"rcpt-1","transaction":"{TX}","payer":"nano_x","paymentResponse":"eyJzdWNjZXNzIjp0cnVlfQ=="}}"#
    );
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(body.as_bytes()));
    (f, h)
}

/// The block hash of [`admitted`]'s verdict.
const TX: &str = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF";

#[test]
fn admitted_request_tells_the_upstream_which_transaction_paid_for_it() {
    let (_, h) = admitted("/paid/report");
    assert_eq!(
        h.request_headers
            .get("x-nanogate-transaction")
            .map(Vec::as_slice),
        Some(TX.as_bytes())
    );
    assert_eq!(
        h.set,
        vec![("x-nanogate-transaction".to_owned(), TX.to_owned())]
    );
}

#[test]
fn client_cannot_name_a_transaction_to_the_upstream_of_a_paid_route() {
    // Fail-open pass: forwarded unpaid, without the client's claim.
    let mut h = get("/open/x").header("x-nanogate-transaction", TX);
    h.ring = None;
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Continue);
    assert!(!h.request_headers.contains_key("x-nanogate-transaction"));
    // Admitted with a verdict that names no transaction: the client's value is gone too.
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr)).header("x-nanogate-transaction", TX);
    let (mut f, _) = run(&mut h);
    let body = br#"{"verdict":"admit","receipt":"r"}"#;
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(body));
    assert_eq!(h.resumed, 1);
    assert!(!h.request_headers.contains_key("x-nanogate-transaction"));
    // A free route is left alone.
    let mut h = get("/paid/health").header("x-nanogate-transaction", TX);
    run(&mut h);
    assert!(h.removed.is_empty());
}

/// The host reads the upstream's status only when the flow needs it: never after a 402 (a
/// hostcall saved on the hot path), once for an admitted request.
#[test]
fn only_an_admitted_request_wants_the_response_status() {
    let mut h = get("/paid/report");
    let (f, _) = run(&mut h);
    assert_eq!(h.responses.len(), 1);
    assert!(!f.wants_response_status());
    let (mut f, mut h) = admitted("/paid/report");
    assert!(f.wants_response_status());
    f.on_response_headers(&mut h, Some(200));
    assert!(!f.wants_response_status());
}

#[test]
fn admitted_payment_is_forwarded_without_payment_headers_and_gets_a_receipt() {
    let (mut f, mut h) = admitted("/paid/report");
    assert_eq!(h.resumed, 1);
    assert!(h.responses.is_empty());
    assert!(!h.request_headers.contains_key("payment-signature"));
    assert!(!h.request_headers.contains_key("x-payment"));
    assert_eq!(h.count_of(Metric::PaymentsAdmitted), 1);
    f.on_response_headers(&mut h, Some(200));
    assert!(h
        .response_headers_added
        .contains(&("PAYMENT-RESPONSE".into(), "eyJzdWNjZXNzIjp0cnVlfQ==".into())));
    assert!(h
        .response_headers_added
        .iter()
        .any(|(n, v)| n == "access-control-expose-headers" && v.contains("PAYMENT-RESPONSE")));
    // Served: the outcome waits in the VM's queue for its batch.
    assert!(h.detached.is_empty());
    assert_eq!(
        queued(&h),
        vec![json!({"receipt": "rcpt-1", "status": 200})]
    );
    // Reported once only.
    f.on_response_headers(&mut h, Some(200));
    f.on_done(&mut h);
    assert_eq!(queued(&h).len(), 1);
    assert!(h.detached.is_empty());
}

/// The outcomes waiting in the mock VM's queue, as the sidecar would read them.
fn queued(h: &MockHost) -> Vec<Value> {
    let q = h.outcomes.as_ref().unwrap().borrow();
    q.iter().map(|o| serde_json::to_value(o).unwrap()).collect()
}

/// The JSON body and path of a dispatched call.
fn sent(call: &crate::sidecar::Call) -> (Value, String) {
    let path = call.headers.iter().find(|(n, _)| n == ":path").unwrap();
    (
        serde_json::from_slice(call.body.as_deref().unwrap()).unwrap(),
        path.1.clone(),
    )
}

/// Admits a request on `h`'s queue with receipt `r{n}` and token `{n:064x}`, then lets the
/// upstream answer `status`.
fn served_on(queue: &std::rc::Rc<crate::outcomes::Queue>, n: u32, status: u32) -> MockHost {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    h.outcomes = Some(std::rc::Rc::clone(queue));
    let (mut f, _) = run(&mut h);
    let body = json!({"verdict": "admit", "receipt": format!("r{n}"),
                      "admissionToken": format!("{n:064x}")});
    f.on_sidecar_answer(
        &mut h,
        41,
        Some(200),
        Some(b"1"),
        Some(&body.to_string().into_bytes()),
    );
    assert_eq!(h.resumed, 1);
    f.on_response_headers(&mut h, Some(status));
    h
}

/// #15: served outcomes wait in the VM's queue, each with its own admission's token; a failure
/// (≥ 500) is reported at once, alone, so the payer's retry finds its payment redeemable.
#[test]
fn served_outcomes_wait_with_their_own_tokens_and_failures_go_at_once() {
    use nanogate_protocol::contract::MAX_OUTCOME_BATCH;
    let queue: std::rc::Rc<crate::outcomes::Queue> = Default::default();
    let max = MAX_OUTCOME_BATCH as u32;
    for n in 1..=max + 1 {
        let h = served_on(&queue, n, if n.is_multiple_of(2) { 200 } else { 404 });
        assert!(h.detached.is_empty(), "outcome {n} waits for the tick");
        assert_eq!(h.count_of(Metric::OutcomesReported), 1);
    }
    let failed = served_on(&queue, 1000, 502);
    assert_eq!(failed.detached.len(), 1);
    let (body, path) = sent(&failed.detached[0]);
    assert_eq!(path, "/v1/outcome");
    assert_eq!(
        body,
        json!({"receipt": "r1000", "status": 502, "admissionToken": format!("{:064x}", 1000)})
    );
    let waiting = queued_of(&queue);
    assert_eq!(waiting.len(), MAX_OUTCOME_BATCH + 1);
    for (i, e) in waiting.iter().enumerate() {
        let n = i as u32 + 1;
        assert_eq!(e["receipt"], format!("r{n}"));
        assert_eq!(e["admissionToken"], format!("{n:064x}"));
        assert_eq!(e["status"], if n.is_multiple_of(2) { 200 } else { 404 });
    }
}

fn queued_of(queue: &crate::outcomes::Queue) -> Vec<Value> {
    queue
        .borrow()
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

/// #15: what is queued goes on the root's tick, and nothing when nothing is queued.
#[test]
fn queued_outcomes_go_on_the_tick() {
    struct Root(Vec<crate::sidecar::Call>, Vec<Metric>, bool);
    impl crate::host::RootHost for Root {
        fn now_unix(&self) -> u64 {
            NOW
        }
        fn shared_get(&self, _: &str) -> (Option<Vec<u8>>, Option<u32>) {
            (None, None)
        }
        fn shared_set(&mut self, _: &str, _: &[u8], _: Option<u32>) -> bool {
            false
        }
        fn dispatch(&mut self, call: &crate::sidecar::Call) -> Result<u32, String> {
            if self.2 {
                return Err("BadArgument".into());
            }
            self.0.push(call.clone());
            Ok(7)
        }
        fn count(&mut self, metric: Metric) {
            self.1.push(metric);
        }
        fn log(&self, _: crate::host::Level, _: &str) {}
    }
    let queue: std::rc::Rc<crate::outcomes::Queue> = Default::default();
    let cfg = config();
    let mut root = Root(Vec::new(), Vec::new(), false);
    assert!(crate::outcomes::flush(&queue, &cfg.sidecar, &mut root).is_empty());
    assert!(root.0.is_empty(), "no call without outcomes");
    served_on(&queue, 1, 200);
    served_on(&queue, 2, 0);
    let sent_batches = crate::outcomes::flush(&queue, &cfg.sidecar, &mut root);
    assert_eq!((root.0.len(), sent_batches.len()), (1, 1));
    let (body, path) = sent(&root.0[0]);
    assert_eq!(path, "/v1/outcomes");
    assert_eq!(
        body,
        json!({"outcomes": [
            {"receipt": "r1", "status": 200, "admissionToken": format!("{:064x}", 1)},
            {"receipt": "r2", "status": 0, "admissionToken": format!("{:064x}", 2)}]})
    );
    assert!(queue.borrow().is_empty());
    // The sidecar did not take it (an error, a timeout): it waits for the next tick again,
    // ahead of what was served since.
    served_on(&queue, 3, 200);
    let (_, batch) = sent_batches.into_iter().next().unwrap();
    crate::outcomes::answered(&queue, batch, false, &mut root);
    let receipts: Vec<Value> = queued_of(&queue)
        .iter()
        .map(|e| e["receipt"].clone())
        .collect();
    assert_eq!(receipts, vec![json!("r1"), json!("r2"), json!("r3")]);
    assert_eq!(root.1, vec![Metric::OutcomeErrors]);
    // Taken: nothing comes back.
    let again = crate::outcomes::flush(&queue, &cfg.sidecar, &mut root);
    let (_, batch) = again.into_iter().next().unwrap();
    crate::outcomes::answered(&queue, batch, true, &mut root);
    assert!(queue.borrow().is_empty());
    // More than a batch's worth goes in several calls of at most MAX_OUTCOME_BATCH.
    let max = nanogate_protocol::contract::MAX_OUTCOME_BATCH as u32;
    for n in 1..=max + 1 {
        served_on(&queue, n, 200);
    }
    root.0.clear();
    let batches = crate::outcomes::flush(&queue, &cfg.sidecar, &mut root);
    let sizes: Vec<usize> = batches.iter().map(|(_, b)| b.len()).collect();
    assert_eq!(sizes, vec![max as usize, 1]);
    // A batch that cannot be sent at all is counted (its payments' leases then decide).
    served_on(&queue, 3, 200);
    root.2 = true;
    root.1.clear();
    assert!(crate::outcomes::flush(&queue, &cfg.sidecar, &mut root).is_empty());
    assert_eq!(root.1, vec![Metric::OutcomeErrors]);
}

/// #19: the admission token from the verdict goes back to the sidecar with the outcome, and
/// nowhere else: not to the upstream, not to the client.
#[test]
fn admission_token_returns_with_the_outcome_only() {
    let token = "5a".repeat(32);
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    let (mut f, _) = run(&mut h);
    let body = json!({"verdict": "admit", "receipt": "r9", "admissionToken": token,
                      "paymentResponse": "eyJ9"});
    f.on_sidecar_answer(
        &mut h,
        41,
        Some(200),
        Some(b"1"),
        Some(&body.to_string().into_bytes()),
    );
    assert_eq!(h.resumed, 1);
    f.on_response_headers(&mut h, Some(503));
    let out: Value = serde_json::from_slice(h.detached[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(
        out,
        json!({"receipt": "r9", "status": 503, "admissionToken": token})
    );
    let leaked = |v: &[u8]| String::from_utf8_lossy(v).contains(&token);
    assert!(!h.request_headers.values().any(|v| leaked(v)), "upstream");
    assert!(!h.set.iter().any(|(_, v)| leaked(v.as_bytes())), "upstream");
    assert!(
        !h.response_headers_added
            .iter()
            .any(|(_, v)| leaked(v.as_bytes())),
        "client"
    );
    // A stream that ends before the response headers reports 0 (queued), with the token too.
    let mut h = paid("/paid/report", &payment_for(&pr));
    let (mut f, _) = run(&mut h);
    f.on_sidecar_answer(
        &mut h,
        41,
        Some(200),
        Some(b"1"),
        Some(&body.to_string().into_bytes()),
    );
    f.on_done(&mut h);
    assert_eq!(
        queued(&h),
        vec![json!({"receipt": "r9", "status": 0, "admissionToken": token})]
    );
}

#[test]
fn v1_header_also_gets_the_v1_receipt_header() {
    let pr = challenge_for("/paid/report");
    let mut h = get("/paid/report").header("X-PAYMENT", b64(&payment_for(&pr)));
    let (mut f, _) = run(&mut h);
    let body = br#"{"verdict":"admit","receipt":"r","paymentResponse":"eA=="}"#;
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(body));
    f.on_response_headers(&mut h, Some(201));
    assert!(h
        .response_headers_added
        .contains(&("X-PAYMENT-RESPONSE".into(), "eA==".into())));
    assert!(!h.request_headers.contains_key("x-payment"));
}

#[test]
fn upstream_failure_and_reset_are_reported() {
    let (mut f, mut h) = admitted("/paid/report");
    f.on_response_headers(&mut h, Some(503));
    let out: Value = serde_json::from_slice(h.detached[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(out["status"], 503);
    // No response headers at all (reset): status 0 at the end of the stream, in the queue.
    let (mut f, mut h) = admitted("/paid/report");
    f.on_done(&mut h);
    assert_eq!(queued(&h)[0]["status"], 0);
    // A host without a queue reports every outcome at once.
    let (mut f, mut h) = admitted("/paid/report");
    h.outcomes = None;
    f.on_response_headers(&mut h, Some(200));
    assert_eq!(
        sent(&h.detached[0]),
        (
            json!({"receipt": "rcpt-1", "status": 200}),
            "/v1/outcome".into()
        )
    );
    // A failed report is counted, not fatal.
    let (mut f, mut h) = admitted("/paid/report");
    h.dispatch_fails = true;
    f.on_response_headers(&mut h, Some(503));
    assert_eq!(h.count_of(Metric::OutcomeErrors), 1);
}

#[test]
fn sidecar_reject_is_a_fresh_402_with_the_reason() {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    let (mut f, _) = run(&mut h);
    let body = br#"{"verdict":"reject","reason":"already_spent","message":"m","status":402}"#;
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(body));
    assert_eq!(h.reply().unwrap().0, 402);
    assert_eq!(error_of(&h).as_deref(), Some("already_spent"));
    assert_eq!(h.count_of(Metric::Rejected(ErrorReason::AlreadySpent)), 1);
    assert_eq!(h.count_of(Metric::ChallengesIssued), 1);
    assert_eq!(h.resumed, 0);
    // 400 for malformed payloads, unknown reasons counted apart.
    let mut h = paid("/paid/report", &payment_for(&pr));
    let (mut f, _) = run(&mut h);
    let body = br#"{"verdict":"reject","reason":"something_new","status":400}"#;
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(body));
    assert_eq!(h.reply().unwrap().0, 400);
    assert_eq!(error_of(&h).as_deref(), Some("something_new"));
    assert_eq!(h.count_of(Metric::RejectedOther), 1);
}

#[test]
fn the_client_address_goes_to_the_sidecar_for_its_per_source_limit() {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    h.source = Some("203.0.113.7:41234".into());
    let (_f, _) = run(&mut h);
    let body = pay_body(&h);
    assert_eq!(body["source"], "203.0.113.7:41234");
    // Unknown address: no field (the sidecar then applies no per-source limit).
    let mut h = paid("/paid/report", &payment_for(&pr));
    let (_f, _) = run(&mut h);
    let body = pay_body(&h);
    assert!(body.get("source").is_none());
}

#[test]
fn a_rate_limited_presentation_is_429_with_retry_after_and_no_fresh_challenge() {
    for route in ["/paid/report", "/open/x"] {
        let pr = challenge_for(route);
        let mut h = paid(route, &payment_for(&pr));
        let (mut f, next) = run(&mut h);
        assert_eq!(next, Next::Pause, "{route}");
        let body = br#"{"verdict":"reject","reason":"rate_limited","message":"m","status":429,"retryAfter":7}"#;
        f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(body));
        assert_eq!(h.reply().unwrap().0, 429, "{route}");
        assert_eq!(h.reply_header("retry-after").as_deref(), Some("7"));
        assert!(h.reply_header("payment-required").is_none());
        assert_eq!(h.count_of(Metric::Rejected(ErrorReason::RateLimited)), 1);
        assert_eq!(h.count_of(Metric::ChallengesIssued), 0);
        assert_eq!(h.resumed, 0, "never forwarded, even on a fail-open route");
    }
}

#[test]
fn sidecar_unavailable_timeout_or_garbage_is_503_on_closed_routes() {
    type Case<'a> = (Option<u32>, Option<&'a [u8]>, &'a [u8], Metric, &'a str);
    let cases: Vec<Case> = vec![
        (
            Some(200),
            Some(b"1"),
            br#"{"verdict":"unavailable","reason":"ledger_unavailable","retryAfter":9}"#,
            Metric::SidecarUnavailable,
            "9",
        ),
        (
            Some(504),
            None,
            b"upstream request timeout",
            Metric::SidecarTimeouts,
            "3",
        ),
        (
            Some(503),
            None,
            b"upstream connect error",
            Metric::SidecarErrors,
            "3",
        ),
        (
            Some(200),
            None,
            br#"{"verdict":"admit","receipt":"r"}"#,
            Metric::SidecarErrors,
            "3",
        ),
        (
            Some(200),
            Some(b"1"),
            b"not json",
            Metric::SidecarErrors,
            "3",
        ),
        (None, None, b"", Metric::SidecarErrors, "3"),
    ];
    for (status, verdict, body, metric, retry) in cases {
        let pr = challenge_for("/paid/report");
        let mut h = paid("/paid/report", &payment_for(&pr));
        let (mut f, _) = run(&mut h);
        f.on_sidecar_answer(&mut h, 41, status, verdict, Some(body));
        assert_eq!(h.reply().map(|r| r.0), Some(503), "{status:?}");
        assert_eq!(h.reply_header("retry-after").as_deref(), Some(retry));
        assert_eq!(h.count_of(metric), 1);
        assert_eq!(h.resumed, 0);
        assert_eq!(h.count_of(Metric::PaymentsAdmitted), 0);
    }
}

#[test]
fn sidecar_unreachable_on_a_fail_open_route_passes_counted_and_stripped() {
    let pr = challenge_for("/open/thing");
    let mut h = paid("/open/thing", &payment_for(&pr));
    let (mut f, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    f.on_sidecar_answer(&mut h, 41, Some(503), None, Some(b"upstream connect error"));
    assert!(h.responses.is_empty());
    assert_eq!(h.resumed, 1);
    assert_eq!(h.count_of(Metric::FailOpenPasses), 1);
    assert_eq!(h.count_of(Metric::SidecarErrors), 1);
    assert!(!h.request_headers.contains_key("payment-signature"));
    // No receipt and no outcome for an unpaid pass.
    f.on_response_headers(&mut h, Some(200));
    assert!(h.detached.is_empty() && h.response_headers_added.is_empty());
}

#[test]
fn dispatch_failure_is_503_or_a_fail_open_pass() {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    h.dispatch_fails = true;
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert_eq!(h.reply().unwrap().0, 503);
    assert_eq!(h.count_of(Metric::SidecarErrors), 1);
    let pr = challenge_for("/open/x");
    let mut h = paid("/open/x", &payment_for(&pr));
    h.dispatch_fails = true;
    assert_eq!(run(&mut h).1, Next::Continue);
    assert_eq!(h.count_of(Metric::FailOpenPasses), 1);
}

#[test]
fn stray_or_late_answers_are_ignored() {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    let (mut f, _) = run(&mut h);
    let admit = br#"{"verdict":"admit","receipt":"r"}"#;
    f.on_sidecar_answer(&mut h, 999, Some(200), Some(b"1"), Some(admit));
    assert_eq!(h.resumed, 0);
    assert!(h.responses.is_empty());
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(admit));
    assert_eq!(h.resumed, 1);
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(admit));
    assert_eq!(h.resumed, 1);
    // A flow that never paused ignores answers too.
    let mut h = get("/paid/report");
    let (mut f, _) = run(&mut h);
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(admit));
    assert_eq!(h.resumed, 0);
}

#[test]
fn every_malformed_vector_gets_its_suggested_status_and_reason() {
    let v = vectors();
    let pr = challenge_for("/paid/report");
    for m in v["malformed"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let mut h =
            get("/paid/report").header("payment-signature", m["header_value"].as_str().unwrap());
        let (_, next) = run(&mut h);
        assert_eq!(next, Next::Pause, "{id}");
        // The filter reads no further than `payload`'s keys: a broken block is the sidecar's
        // to refuse (see `a_broken_block_under_our_challenge_is_refused_by_the_sidecar`).
        let block_only = matches!(
            decode_payment(m["header_value"].as_str().unwrap(), MAX_HEADER_BYTES),
            Err(PaymentError::Block(_))
        );
        match m["expected_category"].as_str().unwrap() {
            // Well-formed as far as the filter reads, but the vector's challenge is not one we
            // issued (or v1 echoes none): refused here.
            c if c == "ok" || block_only => {
                assert_eq!(h.reply().unwrap().0, 402, "{id}");
                let e = error_of(&h).unwrap();
                assert!(
                    e == "invalid_challenge"
                        || e == "invalid_payment_requirements"
                        || e == "resource_mismatch",
                    "{id}: {e}"
                );
                assert!(h.calls.is_empty(), "{id}");
            }
            _ => {
                assert_eq!(
                    u64::from(h.reply().unwrap().0),
                    m["suggested_status"].as_u64().unwrap(),
                    "{id}"
                );
                assert_eq!(
                    error_of(&h).as_deref(),
                    m["suggested_error_reason"].as_str(),
                    "{id}"
                );
                assert!(
                    h.calls.is_empty(),
                    "{id}: no sidecar call for a malformed payment"
                );
                // The 400 still carries a fresh challenge for the client to retry with.
                assert_eq!(payment_required_of(&h).accepts.len(), 1, "{id}");
            }
        }
    }
    let _ = pr;
}

/// The filter checks the offer a payment echoes, not its block: a malformed block under a
/// challenge we issued goes to the sidecar, which decodes the whole payment and refuses it as
/// `invalid_payload` (400), and the client gets that reason with a fresh challenge. Under a
/// challenge we did not issue, it never leaves the filter.
#[test]
fn a_broken_block_under_our_challenge_is_refused_by_the_sidecar() {
    let pr = challenge_for("/paid/report");
    let mut broken = payment_for(&pr);
    broken["payload"]["block"]["signature"] = json!("zz");
    let header = b64(&broken);
    assert!(matches!(
        decode_payment(&header, MAX_HEADER_BYTES),
        Err(PaymentError::Block(_))
    ));
    let mut h = get("/paid/report").header("payment-signature", header.as_str());
    let (mut f, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert_eq!(h.calls.len(), 1, "the sidecar judges the block");
    let (body, _) = sent(&h.calls[0]);
    assert_eq!(body["paymentHeader"], json!(header), "forwarded as sent");
    let answer =
        br#"{"verdict":"reject","reason":"invalid_payload","message":"payment: payload.block: signature","status":400}"#;
    f.on_sidecar_answer(&mut h, 41, Some(200), Some(b"1"), Some(answer));
    assert_eq!(h.reply().unwrap().0, 400);
    assert_eq!(error_of(&h).as_deref(), Some("invalid_payload"));
    assert_eq!(payment_required_of(&h).accepts.len(), 1);
    assert_eq!(h.resumed, 0);
    // The same block under a forged MAC: refused here, nothing sent.
    broken["accepted"]["extra"]["mac"] = json!("00".repeat(32));
    let mut h = paid("/paid/report", &broken);
    run(&mut h);
    assert!(h.calls.is_empty());
    assert_eq!(h.reply().unwrap().0, 402);
    assert_eq!(error_of(&h).as_deref(), Some("invalid_challenge"));
}

#[test]
fn oversized_and_non_utf8_headers_are_refused_before_decoding() {
    let big = "A".repeat(MAX_HEADER_BYTES + 1);
    let mut h = get("/paid/report").header("payment-signature", big);
    run(&mut h);
    assert_eq!(h.reply().unwrap().0, 400);
    assert_eq!(error_of(&h).as_deref(), Some("invalid_payload"));
    let mut h = get("/paid/report").header("payment-signature", [0xff, 0xfe, 0x41]);
    run(&mut h);
    assert_eq!(h.reply().unwrap().0, 400);
    let mut h = get("/paid/report").header("payment-signature", "");
    run(&mut h);
    assert_eq!(h.reply().unwrap().0, 400);
}

#[test]
fn v1_payment_without_an_echoed_offer_cannot_match_a_challenge() {
    let v1 = vectors()["payment_payload_v1"]["object"].clone();
    let mut h = get("/paid/report").header("x-payment", b64(&v1));
    run(&mut h);
    assert_eq!(h.reply().unwrap().0, 402);
    assert_eq!(
        error_of(&h).as_deref(),
        Some("invalid_payment_requirements")
    );
    assert!(h.calls.is_empty());
}

/// Runs a payment answering `/paid/report`'s challenge after `mutate`; returns the 402 error.
fn local_refusal(path: &str, mutate: impl FnOnce(&mut Value), now: u64) -> Option<String> {
    let pr = challenge_for("/paid/report");
    let mut p = payment_for(&pr);
    mutate(&mut p);
    let mut h = paid(path, &p);
    h.now = now;
    run(&mut h);
    assert!(h.calls.is_empty(), "refused without a sidecar call");
    assert_eq!(h.reply().map(|r| r.0), Some(402));
    assert_eq!(
        payment_required_of(&h).accepts.len(),
        1,
        "a fresh challenge"
    );
    error_of(&h)
}

#[test]
fn forged_mutated_and_cross_route_challenges_are_refused_locally() {
    let flip = |p: &mut Value| {
        let mac = p["accepted"]["extra"]["mac"].as_str().unwrap().to_owned();
        let flipped = match mac.strip_prefix('0') {
            Some(rest) => format!("1{rest}"),
            None => format!("0{}", &mac[1..]),
        };
        p["accepted"]["extra"]["mac"] = json!(flipped);
    };
    assert_eq!(
        local_refusal("/paid/report", flip, NOW).as_deref(),
        Some("invalid_challenge")
    );
    let later = |p: &mut Value| {
        let vb = p["accepted"]["extra"]["validBefore"].as_u64().unwrap();
        p["accepted"]["extra"]["validBefore"] = json!(vb + 3600);
    };
    assert_eq!(
        local_refusal("/paid/report", later, NOW).as_deref(),
        Some("invalid_challenge")
    );
    let no_extra = |p: &mut Value| p["accepted"]["extra"] = json!({});
    assert_eq!(
        local_refusal("/paid/report", no_extra, NOW).as_deref(),
        Some("invalid_challenge")
    );
    // Another route's challenge: the echoed resource gives it away; without it the MAC does.
    assert_eq!(
        local_refusal("/paid/other", |_| {}, NOW).as_deref(),
        Some("resource_mismatch")
    );
    let strip_resource = |p: &mut Value| {
        p.as_object_mut().unwrap().remove("resource");
    };
    assert_eq!(
        local_refusal("/paid/other", strip_resource, NOW).as_deref(),
        Some("invalid_challenge")
    );
    let net = |p: &mut Value| p["accepted"]["network"] = json!("nano:mainnet");
    assert_eq!(
        local_refusal("/paid/report", net, NOW).as_deref(),
        Some("invalid_network")
    );
    let scheme = |p: &mut Value| p["accepted"]["scheme"] = json!("upto");
    assert_eq!(
        local_refusal("/paid/report", scheme, NOW).as_deref(),
        Some("invalid_scheme")
    );
    let old_key = |p: &mut Value| p["accepted"]["extra"]["keyId"] = json!(3);
    assert_eq!(
        local_refusal("/paid/report", old_key, NOW).as_deref(),
        Some("challenge_expired")
    );
    let future_key = |p: &mut Value| p["accepted"]["extra"]["keyId"] = json!(11);
    assert_eq!(
        local_refusal("/paid/report", future_key, NOW).as_deref(),
        Some("invalid_challenge")
    );
}

/// The `/v1/pay` body of the one sidecar call `h` made.
fn pay_body(h: &MockHost) -> Value {
    assert_eq!(h.calls.len(), 1, "one /v1/pay call");
    serde_json::from_slice(h.calls[0].body.as_deref().unwrap_or_default()).unwrap()
}

/// Scenario: the payer's block confirms only after its challenge expired. Answering 402
/// locally would make the payment impossible to present; the sidecar alone can admit it
/// (within its redemption window) or record it as owed.
#[test]
fn an_authentic_expired_challenge_is_forwarded_to_the_sidecar() {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    h.now = NOW + 300;
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert!(h.responses.is_empty(), "no local 402");
    let body = pay_body(&h);
    assert_eq!(
        body["requirements"]["extra"],
        serde_json::to_value(&pr.accepts[0].extra).unwrap(),
        "the stamp as issued"
    );
    assert_eq!(body["resource"], "http://api.example.com/paid/report");
}

/// The hostile side of the same rule: an expired stamp is forwarded only when its MAC is ours.
#[test]
fn an_expired_challenge_with_a_forged_or_mutated_stamp_gets_a_local_402() {
    let late = NOW + 61;
    let flip = |p: &mut Value| {
        let mac = p["accepted"]["extra"]["mac"].as_str().unwrap().to_owned();
        let c = if mac.starts_with('0') { "1" } else { "0" };
        p["accepted"]["extra"]["mac"] = json!(format!("{c}{}", &mac[1..]));
    };
    assert_eq!(
        local_refusal("/paid/report", flip, late).as_deref(),
        Some("invalid_challenge")
    );
    let earlier = |p: &mut Value| {
        let vb = p["accepted"]["extra"]["validBefore"].as_u64().unwrap();
        p["accepted"]["extra"]["validBefore"] = json!(vb - 1);
    };
    assert_eq!(
        local_refusal("/paid/report", earlier, late).as_deref(),
        Some("invalid_challenge")
    );
    let other_nonce = |p: &mut Value| p["accepted"]["extra"]["nonce"] = json!("00".repeat(16));
    assert_eq!(
        local_refusal("/paid/report", other_nonce, late).as_deref(),
        Some("invalid_challenge")
    );
    // Another route's expired challenge.
    let strip_resource = |p: &mut Value| {
        p.as_object_mut().unwrap().remove("resource");
    };
    assert_eq!(
        local_refusal("/paid/other", strip_resource, late).as_deref(),
        Some("invalid_challenge")
    );
    // A key older than any we hold cannot be told from a forgery.
    let old_key = |p: &mut Value| p["accepted"]["extra"]["keyId"] = json!(3);
    assert_eq!(
        local_refusal("/paid/report", old_key, late).as_deref(),
        Some("challenge_expired")
    );
}

/// `retired` keys from `/v1/challenge-key` authenticate expired challenges only: a challenge
/// signed with a retired key that has not expired was not issued by this system in the
/// retired key's period (or is replayed from a leaked key) and is refused locally.
#[test]
fn retired_keys_are_parsed_and_used_only_for_expired_challenges() {
    // Issued under key 10 (`[7; 32]`), presented after two rotations.
    let pr = challenge_for("/paid/report");
    let answer = crate::keys::parse_key_response(
        json!({
            "keyId": 12, "key": "0c".repeat(32), "notAfter": NOW + 900,
            "previous": {"keyId": 11, "key": "0b".repeat(32)},
            "retired": [{"keyId": 10, "key": "07".repeat(32)}, {"keyId": 9, "key": "zz"}, "junk"]
        })
        .to_string()
        .as_bytes(),
    )
    .expect("parses, skipping malformed retired entries");
    assert_eq!(answer.retired.len(), 1);
    let ring = crate::keys::KeyRing::rotate(
        None,
        answer.current,
        answer.not_after,
        answer.previous,
        answer.retired,
    );
    let ring = crate::keys::KeyRing::decode(&ring.encode()).expect("shared-data round trip");
    assert_eq!(
        ring.retired(10).map(|k| k.key.clone()),
        Some(ChallengeKey([7; 32]))
    );
    assert!(
        ring.for_id(10).is_none(),
        "retired keys are not honoured keys"
    );

    // Expired: forwarded.
    let mut h = paid("/paid/report", &payment_for(&pr));
    h.now = NOW + 60;
    h.ring = Some(ring.clone());
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert_eq!(pay_body(&h)["requirements"]["extra"]["keyId"], 10);

    // Not expired, yet under a retired key: refused without a sidecar call.
    let mut h = paid("/paid/report", &payment_for(&pr));
    h.now = NOW + 59;
    h.ring = Some(ring.clone());
    run(&mut h);
    assert!(h.calls.is_empty());
    assert_eq!(error_of(&h).as_deref(), Some("invalid_challenge"));

    // Without the retired key the same expired challenge cannot be authenticated.
    let mut bare = ring;
    bare.retired.clear();
    let mut h = paid("/paid/report", &payment_for(&pr));
    h.now = NOW + 60;
    h.ring = Some(bare);
    run(&mut h);
    assert!(h.calls.is_empty());
    assert_eq!(error_of(&h).as_deref(), Some("challenge_expired"));

    // Absent `retired` is empty.
    let plain = crate::keys::parse_key_response(
        json!({"keyId": 12, "key": "0c".repeat(32), "notAfter": 1})
            .to_string()
            .as_bytes(),
    )
    .expect("parses");
    assert!(plain.retired.is_empty());
}

#[test]
fn the_route_upstream_timeout_goes_to_the_sidecar() {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    run(&mut h);
    assert_eq!(pay_body(&h)["upstreamTimeoutMs"], 15_000, "Envoy's default");
    let mut cfg = config_json();
    cfg["routes"][1]["upstreamTimeoutMs"] = json!(90_000);
    let cfg = crate::config::parse(cfg.to_string().as_bytes()).expect("config");
    let mut h = paid("/paid/report", &payment_for(&pr));
    Flow::new(Rc::new(cfg)).on_request_headers(&mut h);
    assert_eq!(pay_body(&h)["upstreamTimeoutMs"], 90_000);
    for bad in [json!(0), json!(3_600_001), json!("15000")] {
        let mut cfg = config_json();
        cfg["routes"][1]["upstreamTimeoutMs"] = bad;
        let e = crate::config::parse(cfg.to_string().as_bytes()).expect_err("refused");
        assert!(e.to_string().contains("upstreamTimeoutMs"), "{e}");
    }
    let mut cfg = config_json();
    cfg["routes"][0]["upstreamTimeoutMs"] = json!(1000);
    assert!(
        crate::config::parse(cfg.to_string().as_bytes()).is_err(),
        "free route"
    );
}

#[test]
fn local_rejections_are_counted_by_reason() {
    let mut h = get("/paid/report").header("payment-signature", "%%%");
    run(&mut h);
    assert_eq!(h.count_of(Metric::Rejected(ErrorReason::InvalidPayload)), 1);
    assert_eq!(h.count_of(Metric::ChallengesIssued), 1);
}

#[test]
fn challenge_from_the_previous_key_is_still_honoured() {
    // Issue under key 10, then rotate: 10 becomes previous.
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    let mut r = ring(11, NOW + 600);
    r.previous = Some(crate::keys::IdKey {
        key_id: 10,
        key: ChallengeKey([7; 32]),
    });
    h.ring = Some(r);
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert_eq!(h.calls.len(), 1);
}

#[test]
fn payment_signature_wins_over_x_payment() {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr)).header("x-payment", "%%%garbage");
    let (_, next) = run(&mut h);
    assert_eq!(next, Next::Pause);
    assert_eq!(h.calls.len(), 1);
}

#[test]
fn the_secret_never_reaches_clients_or_logs() {
    let pr = challenge_for("/paid/report");
    let mut h = paid("/paid/report", &payment_for(&pr));
    let (mut f, _) = run(&mut h);
    f.on_sidecar_answer(&mut h, 41, Some(503), None, None);
    let mut h2 = get("/paid/report").header("payment-signature", "%%");
    run(&mut h2);
    for host in [&h, &h2] {
        for (_, headers, body) in &host.responses {
            assert!(!String::from_utf8_lossy(body).contains(SECRET));
            assert!(headers.iter().all(|(_, v)| !v.contains(SECRET)));
        }
        assert!(host.logs.borrow().iter().all(|l| !l.contains(SECRET)));
    }
}

/// After the request headers the request is either passing (Continue, no reply, no call) or
/// paused with exactly one reply or exactly one sidecar call in flight (a request left paused
/// with neither hangs until Envoy's stream timeout).
fn assert_no_hang(h: &MockHost, next: Next) {
    match next {
        Next::Continue => assert!(h.responses.is_empty() && h.calls.is_empty()),
        Next::Pause => assert_eq!(h.responses.len() + h.calls.len(), 1),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_payment_header_bytes_never_panic_or_hang(
        sig in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..600)),
        xpay in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..600)),
        path in proptest::sample::select(vec!["/paid/report", "/open/x", "/paid/health", "/nope"]),
    ) {
        let mut h = get(path);
        if let Some(s) = sig { h = h.header("payment-signature", s); }
        if let Some(x) = xpay { h = h.header("x-payment", x); }
        let (mut f, next) = run(&mut h);
        assert_no_hang(&h, next);
        f.on_response_headers(&mut h, Some(200));
        f.on_done(&mut h);
    }

    #[test]
    fn arbitrary_base64_json_payments_never_panic_or_hang(
        extra in proptest::collection::btree_map("[a-zA-Z]{1,10}", proptest::prelude::any::<u64>().prop_map(Value::from), 0..5),
        nonce in "[0-9a-fA-F]{0,40}",
        mac in "[0-9a-fA-Z]{0,70}",
        key_id in proptest::prelude::any::<u64>(),
        valid_before in proptest::prelude::any::<u64>(),
        drop_field in proptest::sample::select(vec!["", "accepted", "payload", "resource", "x402Version"]),
    ) {
        let pr = challenge_for("/paid/report");
        let mut p = payment_for(&pr);
        let mut e: serde_json::Map<String, Value> = extra.into_iter().collect();
        e.insert("nonce".into(), json!(nonce));
        e.insert("mac".into(), json!(mac));
        e.insert("keyId".into(), json!(key_id));
        e.insert("validBefore".into(), json!(valid_before));
        p["accepted"]["extra"] = Value::Object(e);
        if !drop_field.is_empty() {
            p.as_object_mut().unwrap().remove(drop_field);
        }
        let mut h = paid("/paid/report", &p);
        let (_, next) = run(&mut h);
        assert_no_hang(&h, next);
        // Random stamps never verify: nothing reaches the sidecar.
        proptest::prop_assert!(h.calls.is_empty());
    }

    #[test]
    fn arbitrary_sidecar_answers_always_end_the_pause(
        status in proptest::option::of(0u32..600),
        verdict in proptest::option::of(proptest::sample::select(vec![&b"1"[..], b"0", b""])),
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        open in proptest::prelude::any::<bool>(),
    ) {
        let path = if open { "/open/x" } else { "/paid/report" };
        let pr = challenge_for(path);
        let mut h = paid(path, &payment_for(&pr));
        let (mut f, next) = run(&mut h);
        proptest::prop_assert_eq!(next, Next::Pause);
        f.on_sidecar_answer(&mut h, 41, status, verdict, Some(&body));
        proptest::prop_assert_eq!(h.responses.len() as u32 + h.resumed, 1);
    }

    #[test]
    fn arbitrary_request_lines_never_panic(
        method in proptest::collection::vec(proptest::num::u8::ANY, 0..10),
        authority in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        path in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
        scheme in proptest::collection::vec(proptest::num::u8::ANY, 0..8),
    ) {
        let mut h = MockHost::new(NOW);
        h.request_headers.insert(":method".into(), method);
        h.request_headers.insert(":authority".into(), authority);
        h.request_headers.insert(":path".into(), path);
        h.request_headers.insert(":scheme".into(), scheme);
        let (_, next) = run(&mut h);
        assert_no_hang(&h, next);
    }
}

#[test]
#[ignore = "timing probe: cargo test -p nanogate-filter --release -- --ignored --nocapture"]
fn timing_probe_unpaid_402() {
    let cfg = Rc::new(config());
    let mut h = get("/paid/report");
    let n = 100_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let mut f = Flow::new(cfg.clone());
        f.on_request_headers(&mut h);
        h.responses.clear();
        h.counts.clear();
    }
    println!("402 path: {:?}/req", t.elapsed() / n);
    let key = ChallengeKey([7; 32]);
    let terms = ChallengeTerms {
        network: "nano:devnet",
        scheme: SCHEME_EXACT,
        asset: ASSET_XNO,
        pay_to: PublicKey([1; 32]),
        amount: 5,
        resource: "http://api.example.com/paid/report",
        mechanism: Mechanism::SignedBlock,
    };
    let stamp = challenge::ChallengeStamp {
        valid_before: 1,
        nonce: [1; 16],
        key_id: 1,
    };
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(challenge::mac(&key, &terms, &stamp));
    }
    println!("mac: {:?}/req", t.elapsed() / n);
    let pr = challenge_for("/paid/report");
    let t = std::time::Instant::now();
    for _ in 0..n {
        let body = serde_json::to_vec(&pr).unwrap();
        std::hint::black_box(nanogate_protocol::x402::encode_bytes(&body));
    }
    println!("serialize+base64: {:?}/req", t.elapsed() / n);
    let routes = &cfg.routes;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(crate::router::find(
            routes,
            "GET",
            "api.example.com",
            "/paid/report",
        ));
    }
    println!("router::find: {:?}/req", t.elapsed() / n);
    let crate::config::RouteKind::Paid(price) = &routes[1].kind else {
        panic!()
    };
    let r = ring(10, NOW + 600);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(crate::challenge::payment_required(
            &cfg,
            price,
            "http://api.example.com/paid/report",
            &r.current,
            NOW,
            [1; 16],
            Some(ErrorReason::PaymentRequired),
        ));
    }
    println!("payment_required build: {:?}/req", t.elapsed() / n);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(r.clone());
    }
    println!("ring clone: {:?}/req", t.elapsed() / n);
}
