//! End to end, every payment accounted for (docs/payments.md): real Envoy with the filter, the
//! real sidecar (SQLite), the devnet and a recording upstream, with the shipped settlement
//! defaults (8 s wait, 10 s filter timeout, 600 s redemption window) and Envoy's default route
//! timeout (15 s). Each test names the scenario of issue #12 it defends.

use nanogate_protocol::nano::{BlockHash, PublicKey};
use nanogate_protocol::x402::{encode_header, PaymentRequirements};
use nanogate_tests::stack::{Reply, Stack, StackConfig, HOST, NETWORK, PRICE_RAW};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// The shipped defaults: the sidecar waits 8 s, the filter gives it 10 s.
fn shipped(wallets: u32) -> StackConfig {
    StackConfig {
        max_wait_secs: 8,
        sidecar_timeout_ms: Some(10_000),
        wallets,
        sidecar_env: vec![(
            "NANOGATE_FACILITATOR_TOKEN".to_owned(),
            ADMIN_TOKEN.to_owned(),
        )],
        ..StackConfig::default()
    }
}

/// The payment ledger's row for `hash`, as operators see it.
async fn payment_row(s: &Stack, hash: &BlockHash) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v1/admin/payments?limit=1000",
            s.gate(0).sidecar.base_url()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["payments"]
        .as_array()?
        .iter()
        .find(|p| p["hash"] == json!(hash.to_hex()))
        .cloned()
}

async fn wait_for_state(s: &Stack, hash: &BlockHash, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let row = payment_row(s, hash).await;
        if row.as_ref().map(|r| &r["state"]) == Some(&json!(state)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "payment never became {state}: {row:?}\n{}",
            s.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Presents `header` until the answer is no longer "still in flight" (bounded).
async fn present_until_settled(s: &Stack, path: &str, header: &str, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let r = s.get(path, &[("payment-signature", header)]).await;
        let busy = r.status == 503
            || (r.status == 402
                && matches!(
                    r.reason().as_deref(),
                    Some("duplicate_settlement" | "duplicate_frontier")
                ));
        if !busy || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn confirmation_after_the_filter_stopped_waiting_is_served_once_on_retry() {
    // Scenario 1. The node is slow at first: `account_info` times out twice (2 s call timeout,
    // 2 retries, the shipped defaults) and answers on the third try, 4 s in; the ledger then
    // confirms 6.5 s after the broadcast. Before, the 8 s wait started after the checks, the
    // settlement finished after the filter had given up (503 at 10 s), and every retry got
    // `duplicate_settlement` for 120 s, then `challenge_expired`. Now the wait ends 8 s after
    // arrival, the sidecar keeps tracking the block, records it redeemable when it confirms,
    // and the payer's retry is served, once, with the same payment.
    let mut cfg = StackConfig {
        confirm_ms: 6_500,
        ..shipped(1)
    };
    cfg.sidecar_env
        .push(("NANOGATE_RPC_RETRIES".to_owned(), "2".to_owned()));
    let s = Stack::start(cfg).await;
    let w = s.wallet();
    let path = "/paid/late-confirmation";
    let (header, block) = s.pay_header(0, path, &w).await;
    let balance = s.ledger().balance(&w.account());
    let faults = s.devnet.faults();
    faults.set_latency(Duration::from_millis(2_500));
    let recover = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        faults.set_latency(Duration::ZERO);
    });
    let r = s.get(path, &[("payment-signature", &header)]).await;
    recover.await.expect("latency reset");
    eprintln!(
        "late confirmation: first answer {} {:?} after {:?}",
        r.status,
        r.reason(),
        r.elapsed
    );
    assert_ne!(r.status, 200, "{}", r.text());
    assert_eq!(s.upstream_hits(path), 0);
    assert!(s.confirmed(&block.hash(), Duration::from_secs(30)).await);
    let r = present_until_settled(&s, path, &header, Duration::from_secs(60)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(s.upstream_hits(path), 1);
    wait_for_state(&s, &block.hash(), "served", Duration::from_secs(10)).await;
    let again = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(again.status, 402);
    assert_eq!(again.reason().as_deref(), Some("already_spent"));
    assert_eq!(s.upstream_hits(path), 1, "one payment, one response");
    assert_eq!(
        s.ledger().balance(&w.account()),
        balance - PRICE_RAW,
        "paid once"
    );
}

#[tokio::test]
async fn client_reset_before_response_headers_never_buys_a_second_run() {
    // Scenario 3. The upstream takes 3 s; the client gives up after 1 s (before the response
    // headers). The upstream ran the request, so the payment is served: presenting it again
    // must not run it a second time (before: status 0 counted as an upstream failure and the
    // same payment bought up to three runs).
    let s = Stack::start(shipped(1)).await;
    let w = s.wallet();
    let path = "/paid/delay/3000/side-effect";
    let (header, block) = s.pay_header(0, path, &w).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client")
        .get(s.url(path))
        .header("host", HOST)
        .header("payment-signature", &header)
        .send()
        .await;
    assert!(impatient.is_err(), "the client reset before the headers");
    assert_eq!(s.upstream_hits(path), 1, "the upstream got the request");
    // Give the filter time to report the reset (its stream ends), then present again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = present_until_settled(&s, path, &header, Duration::from_secs(30)).await;
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(r.reason().as_deref(), Some("already_spent"));
    // Let any run finish, then count: exactly one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.upstream_hits(path), 1, "one payment, one run");
    let row = payment_row(&s, &block.hash()).await.expect("row");
    assert_eq!(row["state"], "served");
}

#[tokio::test]
async fn payment_is_not_redeemable_while_its_request_is_in_flight_only_after_the_504() {
    // Scenario 3. The upstream is slower than the route's (default, 15 s) timeout. While the
    // first request is in flight, the same payment buys nothing; Envoy's 504 makes it
    // redeemable, and the retry is served.
    let s = Stack::start(shipped(1)).await;
    let w = s.wallet();
    let path = "/paid/delay/20000/slow";
    let (header, block) = s.pay_header(0, path, &w).await;
    let url = s.url(path);
    let first_header = header.clone();
    let first = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .header("host", HOST)
            .header("payment-signature", first_header)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    wait_for_state(&s, &block.hash(), "admitted", Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let r = s.get(path, &[("payment-signature", &header)]).await;
        assert_eq!(r.status, 402, "in flight: {}", r.text());
        assert_eq!(r.reason().as_deref(), Some("duplicate_settlement"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(first.await.expect("first request").ok(), Some(504));
    wait_for_state(&s, &block.hash(), "redeemable", Duration::from_secs(10)).await;
    // The retry is admitted (and is slow too: Envoy answers 504 again after 15 s).
    let r = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.header("payment-response").is_some(),
        "admitted with the same payment"
    );
    let row = payment_row(&s, &block.hash()).await.expect("row");
    assert_eq!(row["redemptions"], 1);
}

fn tagged_header(o: &PaymentRequirements, proof: &BlockHash) -> String {
    let session = o.extra.get("nonce").cloned().unwrap_or(Value::Null);
    encode_header(&json!({"x402Version": 2, "accepted": o,
        "payload": {"sessionId": session, "proof": proof.to_hex()}}))
}

#[tokio::test]
async fn a_signed_block_payment_is_never_taken_by_a_tagged_session() {
    // Scenario 7. A signed-block payment to the shared payee is still being settled (the ledger
    // stopped confirming); a tagged session's holder presents its hash as the session's proof.
    // The session gets nothing, the payment is not listed as stray or owed, and its payer is
    // served once the ledger confirms.
    let s = Stack::start(shipped(2)).await;
    let w = s.wallet();
    let path = "/paid/shared-payee";
    let (header, block) = s.pay_header(0, path, &w).await;
    s.devnet.faults().set_confirming(false);
    let r = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(
        r.reason().as_deref(),
        Some("block_not_confirmed"),
        "{}",
        r.text()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let offer = loop {
        let r = s.get("/tagged/steal", &[]).await;
        let pr = r.payment_required();
        if let Some(o) = pr
            .accepts
            .iter()
            .find(|a| a.extra.get("mechanism").and_then(Value::as_str) == Some("tagged"))
        {
            break o.clone();
        }
        assert!(Instant::now() < deadline, "no tagged offer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        PublicKey::from_address(&offer.pay_to).ok(),
        Some(s.payee),
        "the session shares the signed-block payee"
    );
    let r = s
        .get(
            "/tagged/steal",
            &[("payment-signature", &tagged_header(&offer, &block.hash()))],
        )
        .await;
    assert_ne!(
        r.status, 200,
        "a session bought with a signed-block payment"
    );
    assert_eq!(s.upstream_hits("/tagged/steal"), 0);
    s.devnet.faults().set_confirming(true);
    assert!(s.confirmed(&block.hash(), Duration::from_secs(20)).await);
    let r = present_until_settled(&s, path, &header, Duration::from_secs(30)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    // Served: its outcome lands with the filter VM's next batch.
    wait_for_state(&s, &block.hash(), "served", Duration::from_secs(5)).await;
    let row = payment_row(&s, &block.hash()).await.expect("row");
    assert_eq!(row["mechanism"], "signed_block");
}

#[tokio::test]
async fn unbound_takeover_for_a_dearer_resource_is_refused() {
    // Scenario 7, through the running sidecar's facilitator API with `allow_unbound = true`: a
    // block settled for a cheap resource timed out (the ledger stopped confirming); presenting
    // it again for a dearer one must not take the claim over (which skips the ledger checks).
    let payee = s_payee();
    let mut cfg = shipped(1);
    cfg.sidecar_env.extend([
        ("NANOGATE_ALLOW_UNBOUND".to_owned(), "true".to_owned()),
        ("NANOGATE_PAY_TO".to_owned(), payee.to_address()),
    ]);
    cfg.payee = payee;
    let s = Stack::start(cfg).await;
    let w = s.wallet();
    let block = s.send_block(&w.key, s.payee, PRICE_RAW);
    let settle = |amount: u128| {
        let requirements = json!({
            "scheme": "exact", "network": NETWORK, "amount": amount.to_string(),
            "asset": "XNO", "payTo": s.payee.to_address(), "maxTimeoutSeconds": 120,
            "extra": {}
        });
        let body = json!({
            "x402Version": 2,
            "paymentRequirements": requirements,
            "paymentPayload": {"x402Version": 2, "accepted": requirements,
                "resource": {"url": "http://api.test/unbound"},
                "payload": {"block": block.to_json()}},
        });
        let url = format!("{}/settle", s.gate(0).sidecar.base_url());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .expect("settle");
            r.json::<Value>().await.expect("json")
        }
    };
    s.devnet.faults().set_confirming(false);
    let cheap = settle(PRICE_RAW).await;
    assert_eq!(cheap["success"], false, "{cheap}");
    s.devnet.faults().set_confirming(true);
    assert!(s.confirmed(&block.hash(), Duration::from_secs(20)).await);
    let dear = settle(2 * PRICE_RAW).await;
    assert_eq!(
        dear["success"], false,
        "a cheap block bought a dear resource: {dear}"
    );
    assert_eq!(
        dear["errorReason"]
            .as_str()
            .map(|r| r.contains("amount_mismatch")),
        Some(true),
        "{dear}"
    );
}

/// The stack's default payee works as an allowed facilitator payee.
fn s_payee() -> PublicKey {
    StackConfig::default().payee
}

#[tokio::test]
async fn payment_confirmed_after_its_challenge_expired_is_served_once_within_the_window() {
    // The one slow test here (about 3 minutes): it waits out the real 120 s challenge validity
    // and the 60 s fork grace. Scenarios 1 and 2: the ledger stops confirming, the wait ends
    // (`block_not_confirmed`); the ledger confirms only after the challenge's validBefore and the
    // fork grace. The sidecar tracked the block and recorded it redeemable; the payer presents
    // the same payment (expired challenge, forwarded by the filter) and is served, once.
    let s = Stack::start(shipped(1)).await;
    let w = s.wallet();
    let path = "/paid/confirmed-after-expiry";
    let (header, block) = s.pay_header(0, path, &w).await;
    let balance = s.ledger().balance(&w.account());
    s.devnet.faults().set_confirming(false);
    let r = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(
        r.reason().as_deref(),
        Some("block_not_confirmed"),
        "{}",
        r.text()
    );
    tokio::time::sleep(Duration::from_secs(120 + 60 + 5)).await;
    s.devnet.faults().set_confirming(true);
    assert!(s.confirmed(&block.hash(), Duration::from_secs(20)).await);
    let r = present_until_settled(&s, path, &header, Duration::from_secs(30)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    let row = payment_row(&s, &block.hash()).await.expect("row");
    assert!(row["settledAt"].as_u64().is_some(), "{row}");
    let again = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(again.status, 402);
    assert_eq!(s.upstream_hits(path), 1);
    assert_eq!(s.ledger().balance(&w.account()), balance - PRICE_RAW);
}

#[tokio::test]
async fn payment_is_not_redeemable_while_a_request_slower_than_two_minutes_runs() {
    // Scenario 3, the slow way (about 2.5 minutes): the demo's `/slow/` route lets the upstream
    // run for up to 3 minutes (Envoy route timeout 180 s, filter `upstreamTimeoutMs` 180000;
    // challenges valid 300 s). 130 s into the first request, past the old 120 s "no outcome
    // means failed" grace and with the challenge still valid, the same payment must still buy
    // nothing: the request may still be running.
    let s = Stack::start(shipped(1)).await;
    let w = s.wallet();
    let path = "/slow/delay/150000/report";
    let (header, block) = s.pay_header(0, path, &w).await;
    let url = s.url(path);
    let first_header = header.clone();
    let first = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .header("host", HOST)
            .header("payment-signature", first_header)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.upstream_hits(path) == 0 {
        assert!(
            Instant::now() < deadline,
            "never forwarded:\n{}",
            s.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(130)).await;
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        s.get(path, &[("payment-signature", &header)]),
    )
    .await
    .expect("the re-presentation answers at once (it must not be forwarded)");
    assert_eq!(second.status, 402, "{}", second.text());
    assert_eq!(second.reason().as_deref(), Some("duplicate_settlement"));
    assert_eq!(first.await.expect("first request").ok(), Some(200));
    wait_for_state(&s, &block.hash(), "served", Duration::from_secs(10)).await;
    assert_eq!(s.upstream_hits(path), 1, "one payment, one response");
}

/// The sidecar's count of authenticated filter calls to `path`.
async fn filter_calls(s: &Stack, path: &str) -> f64 {
    let m = s.gate(0).sidecar.metrics().await;
    let needle = format!("nanogate_filter_calls_total{{path=\"{path}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn served_outcomes_land_through_the_batch_and_failures_are_reported_at_once() {
    // Issue #15. A served request's outcome waits in its filter VM's queue and lands with the
    // VM's next batch (`/v1/outcomes`, on the 1 s tick): the payment becomes `served` without a
    // callout of its own. An upstream failure is reported alone, at once (`/v1/outcome`), so
    // the payer's retry is served with the same payment, and that retry's outcome is batched.
    let s = Stack::start(shipped(2)).await;
    let w = s.wallet();
    let path = "/paid/batched";
    let (header, block) = s.pay_header(0, path, &w).await;
    let r = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    wait_for_state(&s, &block.hash(), "served", Duration::from_secs(5)).await;
    assert_eq!(filter_calls(&s, "/v1/outcome").await, 0.0);
    assert!(filter_calls(&s, "/v1/outcomes").await >= 1.0);
    let again = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(again.reason().as_deref(), Some("already_spent"));

    let w = s.wallet();
    let path = "/paid/flaky";
    s.upstream.fail_next(path, 502);
    let (header, block) = s.pay_header(0, path, &w).await;
    let r = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let r = present_until_settled(&s, path, &header, Duration::from_secs(5)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(filter_calls(&s, "/v1/outcome").await, 1.0, "the 502, alone");
    wait_for_state(&s, &block.hash(), "served", Duration::from_secs(5)).await;
    assert_eq!(s.upstream_hits(path), 2, "the failure, then the redemption");
}
