//! End to end, the honest path: real Envoy 1.40 with the filter module, the real
//! `nanogate-sidecar` (SQLite), the devnet and a recording upstream. A free route passes; an
//! unpaid paid route gets a 402 for the configured price and account; the payer library and the
//! `nanogate-pay` CLI get a 200 whose PAYMENT-RESPONSE names a transaction the ledger confirmed;
//! the upstream never sees a payment header (invariants 1, 4, and the wire protocol).

use nanogate_client::{Payer, PayerConfig, RequestSpec};
use nanogate_protocol::challenge;
use nanogate_protocol::nano::{BlockHash, PublicKey};
use nanogate_tests::procs::workspace_bin;
use nanogate_tests::stack::{
    shared, Stack, StackConfig, HOST, NETWORK, PREVIEW_PRICE_RAW, PRICE_RAW,
};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static STACK: OnceLock<&'static Stack> = OnceLock::new();

fn stack() -> &'static Stack {
    shared(&STACK, || StackConfig {
        wallets: 24,
        ..StackConfig::default()
    })
}

fn payment_headers_absent(r: &nanogate_tests::upstream::Recorded) {
    for h in [
        "payment-signature",
        "x-payment",
        "payment-response",
        "x-nanogate-secret",
    ] {
        assert_eq!(r.header(h), None, "the upstream saw `{h}`: {r:?}");
    }
}

#[tokio::test]
async fn free_route_passes_without_a_challenge() {
    let s = stack();
    let before = s.upstream_hits("/paid/free");
    let r = s.get("/paid/free", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("payment-required").is_none());
    assert_eq!(s.upstream_hits("/paid/free"), before + 1);
    // Unmatched paths are not payment-gated either.
    let r = s.get("/public/index.html", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unpaid_request_gets_a_402_for_the_configured_price_and_account() {
    let s = stack();
    let r = s.get("/paid/report?format=json", &[]).await;
    assert_eq!(r.status, 402);
    let pr = r.payment_required();
    assert_eq!(pr.x402_version, 2);
    assert_eq!(pr.error.as_deref(), Some("payment_required"));
    assert_eq!(pr.resource.url, format!("http://{HOST}/paid/report"));
    assert_eq!(pr.accepts.len(), 1);
    let a = &pr.accepts[0];
    assert_eq!(a.amount, PRICE_RAW.to_string());
    assert_eq!(a.pay_to, s.payee.to_address());
    assert_eq!(
        PublicKey::from_address(&a.pay_to).expect("payTo decodes"),
        s.payee
    );
    assert_eq!(a.network, NETWORK);
    assert_eq!((a.scheme.as_str(), a.asset.as_str()), ("exact", "XNO"));
    let (stamp, _) = challenge::read_extra(&a.extra).expect("the challenge binding");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    assert!(stamp.valid_before > now && stamp.valid_before <= now + a.max_timeout_seconds + 5);
    // The fail-open preview route has its own price.
    let r = s.get("/preview/item", &[]).await;
    assert_eq!(r.status, 402);
    assert_eq!(
        r.payment_required().accepts[0].amount,
        PREVIEW_PRICE_RAW.to_string()
    );
    assert_eq!(s.upstream_hits("/paid/report"), 0, "402s never reach it");
}

#[tokio::test]
async fn payer_library_pays_once_and_gets_200_with_a_confirmed_receipt() {
    let s = stack();
    let wallet = s.wallet();
    let dir = s.dir().join("payer-lib");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cfg = PayerConfig::new(
        s.devnet.rpc_url(),
        wallet.key.clone(),
        dir.join("journal.json"),
    );
    cfg.http_timeout = Duration::from_secs(60);
    let payer = Payer::new(cfg).expect("payer");
    let balance_before = s.ledger().balance(&wallet.account());
    let t = Instant::now();
    let resp = payer
        .fetch(RequestSpec::get(s.url("/paid/library")))
        .await
        .unwrap_or_else(|e| panic!("payer: {e}\n{}", s.diagnostics()));
    eprintln!("payer library: paid request served in {:?}", t.elapsed());
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert!(resp.paid);
    assert!(resp.receipt_matches, "the receipt names our block");
    let receipt = resp.receipt.clone().expect("PAYMENT-RESPONSE");
    assert!(receipt.success);
    assert_eq!(receipt.network, NETWORK);
    assert_eq!(
        receipt.payer.as_deref(),
        Some(wallet.account().to_address().as_str())
    );
    let hash = BlockHash::from_hex(&receipt.transaction).expect("transaction is a block hash");
    assert_eq!(
        s.ledger().confirmed(&hash),
        Some(true),
        "the receipt's transaction is confirmed on the devnet"
    );
    let info = resp.payment.clone().expect("payment info");
    assert_eq!(info.amount_raw, PRICE_RAW);
    assert_eq!(
        s.ledger().balance(&wallet.account()),
        balance_before - PRICE_RAW,
        "paid exactly once"
    );
    let seen = s.upstream.requests_to("/paid/library");
    assert_eq!(seen.len(), 1, "served once");
    payment_headers_absent(&seen[0]);
}

#[tokio::test]
async fn pay_cli_pays_and_prints_a_confirmed_receipt() {
    let s = stack();
    let wallet = s.wallet();
    let dir = s.dir().join("payer-cli");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let bin = workspace_bin("nanogate-pay");
    let t = Instant::now();
    let out = tokio::process::Command::new(&bin)
        .arg(s.url("/paid/cli"))
        .args(["--json", "--rpc", &s.devnet.rpc_url(), "--index"])
        .arg(wallet.index.to_string())
        .arg("--journal")
        .arg(dir.join("journal.json"))
        .env("NANOGATE_SEED", wallet.seed_hex())
        .env_remove("NANOGATE_RPC")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("nanogate-pay finishes")
        .expect("nanogate-pay runs");
    eprintln!("nanogate-pay: paid request served in {:?}", t.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nanogate-pay failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        s.diagnostics()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["status"], 200);
    assert_eq!(v["paid"], true);
    assert_eq!(v["receipt"]["success"], true);
    assert_eq!(v["receipt"]["matchesOurBlock"], true);
    assert_eq!(v["receipt"]["network"], NETWORK);
    let tx = v["receipt"]["transaction"].as_str().expect("transaction");
    let hash = BlockHash::from_hex(tx).expect("hash");
    assert_eq!(s.ledger().confirmed(&hash), Some(true));
    assert!(stderr.contains("402:"), "progress on stderr: {stderr}");
    let seen = s.upstream.requests_to("/paid/cli");
    assert_eq!(seen.len(), 1);
    payment_headers_absent(&seen[0]);
}

#[tokio::test]
async fn honest_payment_by_header_is_admitted_and_stripped() {
    let s = stack();
    let wallet = s.wallet();
    let (header, block) = s.pay_header(0, "/paid/header", &wallet).await;
    let r = s
        .get(
            "/paid/header",
            &[("payment-signature", &header), ("x-custom", "kept")],
        )
        .await;
    eprintln!("paid request (settlement included) took {:?}", r.elapsed);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    let settlement = r.settlement().expect("PAYMENT-RESPONSE");
    assert_eq!(settlement.transaction, block.hash().to_hex());
    assert_eq!(s.ledger().confirmed(&block.hash()), Some(true));
    let seen = s.upstream.requests_to("/paid/header");
    assert_eq!(seen.len(), 1);
    payment_headers_absent(&seen[0]);
    assert_eq!(seen[0].header("x-custom"), Some("kept"));
    assert!(s.gate(0).counter("payments_admitted").await >= 1);
}

#[tokio::test]
async fn latencies_of_unpaid_and_paid_requests_are_reported() {
    // Measured and printed, not asserted (a loaded 2-core CI machine is noisy).
    let s = stack();
    let w = s.wallet();
    let mut unpaid = Vec::new();
    for _ in 0..20 {
        let r = s.get("/paid/latency", &[]).await;
        assert_eq!(r.status, 402);
        unpaid.push(r.elapsed);
    }
    let mut paid = Vec::new();
    for i in 0..5 {
        let path = format!("/paid/latency-{i}");
        let (header, block) = s.pay_header(0, &path, &w).await;
        let r = s.get(&path, &[("payment-signature", &header)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(s.ledger().confirmed(&block.hash()), Some(true));
        paid.push(r.elapsed);
    }
    unpaid.sort();
    paid.sort();
    eprintln!(
        "unpaid 402 (filter alone): p50 {:?} max {:?}; paid 200 (settlement incl. devnet \
         confirmation, {} ms delay): p50 {:?} max {:?}",
        unpaid[unpaid.len() / 2],
        unpaid[unpaid.len() - 1],
        s.devnet.confirm_delay().as_millis(),
        paid[paid.len() / 2],
        paid[paid.len() - 1]
    );
}

#[tokio::test]
async fn paid_post_reaches_the_upstream_with_its_body_intact() {
    let s = stack();
    let wallet = s.wallet();
    let dir = s.dir().join("payer-post");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let payer = Payer::new(PayerConfig::new(
        s.devnet.rpc_url(),
        wallet.key.clone(),
        dir.join("journal.json"),
    ))
    .expect("payer");
    let body = serde_json::json!({"q": "nano", "blob": "x".repeat(100_000)}).to_string();
    let resp = payer
        .fetch(
            RequestSpec::post(s.url("/paid/search"), body.clone())
                .header("content-type", "application/json"),
        )
        .await
        .unwrap_or_else(|e| panic!("payer: {e}\n{}", s.diagnostics()));
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let seen = s.upstream.requests_to("/paid/search");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, body.as_bytes(), "the body arrives intact");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    payment_headers_absent(&seen[0]);
}

#[tokio::test]
async fn concurrent_payers_are_each_served_exactly_once() {
    let s = stack();
    let n = 8;
    let mut prepared = Vec::new();
    for i in 0..n {
        let w = s.wallet();
        let path = format!("/paid/concurrent-{i}");
        let (header, block) = s.pay_header(0, &path, &w).await;
        prepared.push((w, path, header, block));
    }
    let started = Instant::now();
    let tasks: Vec<_> = prepared
        .iter()
        .map(|(_, path, header, _)| {
            let (path, header) = (path.clone(), header.clone());
            tokio::spawn(async move { s.get(&path, &[("payment-signature", &header)]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("task"));
    }
    eprintln!(
        "{n} concurrent paid requests served in {:?}",
        started.elapsed()
    );
    for ((w, path, _, block), r) in prepared.iter().zip(&replies) {
        assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), s.diagnostics());
        assert_eq!(
            r.settlement().map(|x| x.transaction),
            Some(block.hash().to_hex())
        );
        assert_eq!(s.upstream_hits(path), 1);
        assert_eq!(s.ledger().confirmed(&block.hash()), Some(true));
        let a = s.ledger().account(&w.account()).expect("open");
        assert_eq!(a.frontier, block.hash());
    }
}
