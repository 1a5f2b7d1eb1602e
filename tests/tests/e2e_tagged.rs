//! End to end, tagged sessions (session-bound tagged amounts): real Envoy with the filter, the
//! real sidecar, the devnet. The payer broadcasts its own send (as any wallet would) and
//! presents the session and the block hash. A tagged payment is admitted once; its hash never
//! buys another session; an amount off by one raw is refused and reported as a stray payment;
//! a send made before its session was issued is refused; two sessions open at once on one
//! account get different amounts; the 402 itself never waits for the sidecar.

use nanogate_protocol::nano::{parse_raw, BlockHash, PublicKey};
use nanogate_protocol::x402::{encode_header, PaymentRequirements};
use nanogate_tests::stack::{shared, Stack, StackConfig, Wallet, PRICE_RAW};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

static STACK: OnceLock<&'static Stack> = OnceLock::new();

fn config() -> StackConfig {
    StackConfig {
        sidecar_env: vec![("NANOGATE_FACILITATOR_TOKEN".into(), ADMIN_TOKEN.into())],
        ..StackConfig::default()
    }
}

fn stack() -> &'static Stack {
    shared(&STACK, config)
}

/// The tagged offer of a 402, waiting (bounded) for the filter's pool to be filled.
async fn tagged_offer(s: &Stack, path: &str) -> PaymentRequirements {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.get(path, &[]).await;
        assert_eq!(r.status, 402, "{}", r.text());
        let pr = r.payment_required();
        if let Some(o) = pr
            .accepts
            .iter()
            .find(|a| a.extra.get("mechanism").and_then(Value::as_str) == Some("tagged"))
        {
            return o.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no tagged offer on {path} within 30 s:\n{}",
            s.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn session_id(o: &PaymentRequirements) -> String {
    o.extra
        .get("nonce")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn amount(o: &PaymentRequirements) -> u128 {
    parse_raw(&o.amount).expect("amount")
}

fn pay_to(o: &PaymentRequirements) -> PublicKey {
    PublicKey::from_address(&o.pay_to).expect("payTo")
}

/// A wallet's own broadcast of `amount` to `to`, confirmed.
async fn broadcast(s: &Stack, w: &Wallet, to: PublicKey, amount: u128) -> BlockHash {
    let block = s.send_block(&w.key, to, amount);
    let hash = s
        .ledger()
        .process(&block)
        .expect("the devnet accepts the send");
    assert!(s.confirmed(&hash, Duration::from_secs(10)).await);
    hash
}

fn header(o: &PaymentRequirements, proof: Option<&BlockHash>) -> String {
    let mut payload = json!({"sessionId": session_id(o)});
    if let Some(h) = proof {
        payload["proof"] = json!(h.to_hex());
    }
    encode_header(&json!({"x402Version": 2, "accepted": o, "payload": payload}))
}

async fn strays(s: &Stack) -> Vec<Value> {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/admin/stray", s.gate(0).sidecar.base_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin listing");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["stray"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn the_402_offers_a_tagged_session_next_to_the_signed_block() {
    let s = stack();
    let o = tagged_offer(s, "/tagged/report").await;
    let r = s.get("/tagged/report", &[]).await;
    let pr = r.payment_required();
    assert_eq!(
        pr.accepts[0].amount,
        PRICE_RAW.to_string(),
        "signed block first"
    );
    assert!(pr.accepts[0].extra.get("mechanism").is_none());
    let tag = amount(&o) - PRICE_RAW;
    assert!(
        tag > 0 && tag < 1_000_000_000_000,
        "the tag sits in the lowest raw digits"
    );
    assert_eq!(pay_to(&o), s.payee);
    assert_eq!(session_id(&o).len(), 32, "128-bit session ids");
    assert_eq!(
        o.extra["nanoSession"]["tagAmountRaw"],
        json!(tag.to_string())
    );
    // A paid route without `tagged` offers the signed block only.
    let r = s.get("/paid/report", &[]).await;
    assert_eq!(r.payment_required().accepts.len(), 1);
}

#[tokio::test]
async fn two_sessions_open_at_once_on_one_account_get_different_amounts() {
    let s = stack();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let o = tagged_offer(s, "/tagged/a").await;
        assert_eq!(pay_to(&o), s.payee);
        assert!(
            seen.insert(amount(&o)),
            "two open sessions share {}",
            o.amount
        );
    }
}

#[tokio::test]
async fn a_tagged_payment_is_admitted_once_and_its_hash_never_buys_another_session() {
    let s = stack();
    let w = s.wallet();
    let o = tagged_offer(s, "/tagged/once").await;
    let hash = broadcast(s, &w, pay_to(&o), amount(&o)).await;
    let before = s.upstream_hits("/tagged/once");
    let r = s
        .get(
            "/tagged/once",
            &[("payment-signature", &header(&o, Some(&hash)))],
        )
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    let settlement = r.settlement().expect("PAYMENT-RESPONSE");
    assert_eq!(settlement.transaction, hash.to_hex());
    assert_eq!(s.upstream_hits("/tagged/once"), before + 1);

    // The same presentation again: served once only.
    let r = s
        .get(
            "/tagged/once",
            &[("payment-signature", &header(&o, Some(&hash)))],
        )
        .await;
    assert_eq!(r.status, 402);
    assert!(
        matches!(
            r.reason().as_deref(),
            Some("already_spent" | "duplicate_settlement")
        ),
        "{:?}",
        r.reason()
    );
    // The same hash with another session: refused by the spent set.
    let other = tagged_offer(s, "/tagged/once").await;
    let r = s
        .get(
            "/tagged/once",
            &[("payment-signature", &header(&other, Some(&hash)))],
        )
        .await;
    assert_eq!(r.status, 402);
    assert_eq!(r.reason().as_deref(), Some("already_spent"));
    assert_eq!(s.upstream_hits("/tagged/once"), before + 1);
}

#[tokio::test]
async fn an_amount_off_by_one_raw_is_refused_and_reported() {
    let s = stack();
    let w = s.wallet();
    let o = tagged_offer(s, "/tagged/off-by-one").await;
    let hash = broadcast(s, &w, pay_to(&o), amount(&o) - 1).await;
    let r = s
        .get(
            "/tagged/off-by-one",
            &[("payment-signature", &header(&o, Some(&hash)))],
        )
        .await;
    assert_eq!(r.status, 402);
    assert_eq!(r.reason().as_deref(), Some("amount_mismatch"));
    assert_eq!(s.upstream_hits("/tagged/off-by-one"), 0);
    let list = strays(s).await;
    let e = list
        .iter()
        .find(|e| e["hash"] == json!(hash.to_hex()))
        .expect("the stray payment is listed");
    assert_eq!(e["reason"], "wrong_amount");
    assert_eq!(e["sessionId"], json!(session_id(&o)));
    let metrics = reqwest::get(format!("{}/metrics", s.gate(0).sidecar.base_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("nanogate_stray_payments_total{reason=\"wrong_amount\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn forged_tagged_offers_are_refused_by_the_filter_alone() {
    let s = stack();
    let o = tagged_offer(s, "/tagged/forged").await;
    let mut forged = o.clone();
    forged.amount = PRICE_RAW.saturating_add(1).to_string();
    let r = s
        .get(
            "/tagged/forged",
            &[(
                "payment-signature",
                &header(&forged, Some(&BlockHash([7; 32]))),
            )],
        )
        .await;
    assert_eq!(r.status, 402);
    assert_eq!(r.reason().as_deref(), Some("invalid_challenge"));
    assert!(s.gate(0).counter("rejected_invalid_challenge").await >= 1);
}

#[tokio::test]
async fn a_payment_made_before_its_session_was_issued_is_refused() {
    // One tag per account and price: the next session on `/tagged-short/` (4 s sessions) gets
    // the very same amount as the last, once that one has expired.
    let mut cfg = config();
    cfg.sidecar_env
        .push(("NANOGATE_TAG_SPACE".into(), "1".into()));
    let s = Stack::start(cfg).await;
    let w = s.wallet();
    let first = tagged_offer(&s, "/tagged-short/x").await;
    let hash = broadcast(&s, &w, pay_to(&first), amount(&first)).await;
    let first_vb = first.extra["validBefore"].as_u64().unwrap_or(0);
    // The next offer with the same amount is a session issued after `first` expired.
    let deadline = Instant::now() + Duration::from_secs(40);
    let second = loop {
        let o = tagged_offer(&s, "/tagged-short/x").await;
        if session_id(&o) != session_id(&first) {
            break o;
        }
        assert!(Instant::now() < deadline, "no second session");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(second.amount, first.amount);
    assert!(second.extra["validBefore"].as_u64().unwrap_or(0) > first_vb);
    let r = s
        .get(
            "/tagged-short/x",
            &[("payment-signature", &header(&second, Some(&hash)))],
        )
        .await;
    assert_eq!(r.status, 402, "{}", r.text());
    // The send paid `first` (its exact amount, within its validity): the watcher listed it for
    // that session (redeemable), so it is spent for any other session. Had it matched no session
    // when it was made, the answer is `payment_too_early` and a `too_early` stray.
    assert!(
        matches!(
            r.reason().as_deref(),
            Some("payment_too_early" | "already_spent")
        ),
        "{}",
        r.text()
    );
    assert_eq!(s.upstream_hits("/tagged-short/x"), 0);
    // Either way the send is accounted for, never lost.
    let listed = reqwest::Client::new()
        .get(format!(
            "{}/v1/admin/payments?limit=1000",
            s.gate(0).sidecar.base_url()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin listing");
    let listed: Value = listed.json().await.expect("json");
    let state = listed["payments"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["hash"] == json!(hash.to_hex())))
        .map(|p| p["state"].clone());
    assert!(
        matches!(
            state.as_ref().and_then(Value::as_str),
            Some("redeemable" | "owed")
        ),
        "the send is listed redeemable (for `first`) or owed: {state:?}"
    );
}

#[tokio::test]
async fn nanogate_pay_pays_a_tagged_session_by_broadcasting_its_own_send() {
    let s = stack();
    let w = s.wallet();
    // Let the pool fill first (the CLI takes whatever the first 402 offers).
    tagged_offer(s, "/tagged/cli").await;
    let dir = std::env::temp_dir().join(format!(
        "nanogate-e2e-tagged-cli-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let out = tokio::process::Command::new(nanogate_tests::procs::workspace_bin("nanogate-pay"))
        .arg(s.url("/tagged/cli"))
        .args([
            "--json",
            "--mechanism",
            "tagged",
            "--rpc",
            &s.devnet.rpc_url(),
        ])
        .args(["--index", &w.index.to_string()])
        .arg("--journal")
        .arg(dir.join("journal.json"))
        .env("NANOGATE_SEED", w.seed_hex())
        .env_remove("NANOGATE_RPC")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("nanogate-pay finishes")
        .expect("nanogate-pay runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nanogate-pay failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        s.diagnostics()
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["status"], 200);
    assert_eq!(v["paid"], true);
    assert_eq!(v["receipt"]["matchesOurBlock"], true);
    let paid: u128 = v["receipt"]["amountRaw"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    assert!(paid > PRICE_RAW, "the tagged amount: {v}");
    assert!(stderr.contains("tagged session"), "{stderr}");
    assert_eq!(s.upstream_hits("/tagged/cli"), 1);
}

#[tokio::test]
async fn the_402_with_its_tagged_offer_needs_no_sidecar() {
    let mut s = Stack::start(config()).await;
    // Once the pool holds sessions, the sidecar is not needed to offer them.
    tagged_offer(&s, "/tagged/warm").await;
    s.gate_mut(0).sidecar.kill();
    for path in ["/tagged/a", "/tagged/b", "/tagged/c"] {
        let r = s.get(path, &[]).await;
        assert_eq!(r.status, 402, "{}", r.text());
        let pr = r.payment_required();
        assert!(
            pr.accepts
                .iter()
                .any(|a| a.extra.get("mechanism").and_then(Value::as_str) == Some("tagged")),
            "{path}: no tagged offer with the sidecar down"
        );
    }
}
