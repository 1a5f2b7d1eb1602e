//! End to end with two replicas: two Envoy + sidecar pairs sharing one PostgreSQL schema, the
//! challenge secret, the devnet and the upstream (invariant 8: replicas agree). Requests carry
//! the same `Host`, so both replicas issue challenges for the same resource URL.

use nanogate_client::{Payer, PayerConfig, RequestSpec};
use nanogate_protocol::nano::BlockHash;
use nanogate_tests::stack::{
    shared, signed_block, Reply, Stack, StackConfig, StoreKind, PRICE_RAW,
};
use std::sync::OnceLock;

static STACK: OnceLock<&'static Stack> = OnceLock::new();

fn stack() -> &'static Stack {
    shared(&STACK, || StackConfig {
        store: StoreKind::Postgres,
        gates: 2,
        wallets: 8,
        ..StackConfig::default()
    })
}

#[tokio::test]
async fn replay_across_replicas_admits_once() {
    let s = stack();
    let w = s.wallet();
    let path = "/paid/replicas-concurrent";
    let (header, block) = s.pay_header(0, path, &w).await;
    let balance = s.ledger().balance(&w.account());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let header = header.clone();
            tokio::spawn(async move {
                s.get_via(i % 2, path, &[("payment-signature", &header)])
                    .await
            })
        })
        .collect();
    let mut replies: Vec<(usize, Reply)> = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        replies.push((i % 2, h.await.expect("request task")));
    }
    let summary: Vec<(usize, u16, Option<String>)> = replies
        .iter()
        .map(|(g, r)| (*g, r.status, r.reason()))
        .collect();
    eprintln!("replay across replicas: {summary:?}");
    let admitted = replies.iter().filter(|(_, r)| r.status == 200).count();
    assert_eq!(admitted, 1, "exactly one admission: {summary:?}");
    for (_, r) in replies.iter().filter(|(_, r)| r.status != 200) {
        assert_eq!(r.status, 402, "{}", r.text());
        // (`stale_frontier`: see e2e_hostile's concurrent replay.)
        assert!(matches!(
            r.reason().as_deref(),
            Some(
                "already_spent" | "duplicate_settlement" | "duplicate_frontier" | "stale_frontier"
            )
        ));
    }
    assert_eq!(s.upstream_hits(path), 1);
    assert_eq!(s.ledger().confirmed(&block.hash()), Some(true));
    assert_eq!(s.ledger().balance(&w.account()), balance - PRICE_RAW);
}

#[tokio::test]
async fn sequential_replay_on_the_other_replica_is_refused() {
    let s = stack();
    let w = s.wallet();
    let path = "/paid/replicas-sequential";
    let (header, block) = s.pay_header(0, path, &w).await;
    let r = s.get_via(0, path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    let r = s.get_via(1, path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 402, "{}", r.text());
    assert!(matches!(
        r.reason().as_deref(),
        Some("already_spent" | "duplicate_settlement")
    ));
    // Under a fresh challenge from the other replica.
    let c = s.challenge(1, path).await;
    let r = s
        .get_via(1, path, &[("payment-signature", &c.header_for(&block))])
        .await;
    assert_eq!(r.status, 402);
    assert_eq!(r.reason().as_deref(), Some("already_spent"));
    assert_eq!(s.upstream_hits(path), 1);
}

#[tokio::test]
async fn challenge_from_one_replica_is_paid_at_the_other() {
    let s = stack();
    let w = s.wallet();
    let path = "/paid/replicas-cross";
    let (header, block) = s.pay_header(0, path, &w).await;
    let r = s.get_via(1, path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(
        r.settlement().map(|x| x.transaction),
        Some(block.hash().to_hex())
    );
    assert_eq!(s.upstream_hits(path), 1);
}

#[tokio::test]
async fn payer_library_pays_through_a_postgres_replica() {
    let s = stack();
    let w = s.wallet();
    let dir = s.dir().join("pg-payer");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let payer = Payer::new(PayerConfig::new(
        s.devnet.rpc_url(),
        w.key.clone(),
        dir.join("journal.json"),
    ))
    .expect("payer");
    let resp = payer
        .fetch(RequestSpec::get(s.gate(1).url("/paid/pg-library")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.diagnostics()));
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let tx = resp.receipt.expect("receipt").transaction;
    let hash = BlockHash::from_hex(&tx).expect("hash");
    assert_eq!(s.ledger().confirmed(&hash), Some(true));
    let seen = s.upstream.requests_to("/paid/pg-library");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("payment-signature"), None);
}

#[tokio::test]
async fn double_spend_of_one_frontier_across_replicas_buys_one_request() {
    let s = stack();
    let w = s.wallet();
    let a = s.ledger().account(&w.account()).expect("open");
    // Two different payments on the same frontier (they differ in representative), each for
    // its own resource, presented at the same time to different replicas.
    let ca = s.challenge(0, "/paid/double-a").await;
    let cb = s.challenge(1, "/paid/double-b").await;
    let other_rep = nanogate_protocol::nano::PrivateKey::from_seed(&[0x42; 32], 0).public_key();
    let block_a = signed_block(
        &w.key,
        a.frontier,
        a.representative,
        a.balance - PRICE_RAW,
        s.payee.0,
    );
    let block_b = signed_block(
        &w.key,
        a.frontier,
        other_rep,
        a.balance - PRICE_RAW,
        s.payee.0,
    );
    assert_ne!(block_a.hash(), block_b.hash());
    let (ha, hb) = (ca.header_for(&block_a), cb.header_for(&block_b));
    let ta = tokio::spawn(async move {
        s.get_via(0, "/paid/double-a", &[("payment-signature", &ha)])
            .await
    });
    let tb = tokio::spawn(async move {
        s.get_via(1, "/paid/double-b", &[("payment-signature", &hb)])
            .await
    });
    let (ra, rb) = (ta.await.expect("a"), tb.await.expect("b"));
    eprintln!(
        "double spend: a {} {:?}, b {} {:?}",
        ra.status,
        ra.reason(),
        rb.status,
        rb.reason()
    );
    let served = s.upstream_hits("/paid/double-a") + s.upstream_hits("/paid/double-b");
    assert_eq!(
        served, 1,
        "one frontier must buy exactly one request: a {} b {}",
        ra.status, rb.status
    );
    assert_eq!(
        [ra.status, rb.status]
            .iter()
            .filter(|st| **st == 200)
            .count(),
        served
    );
    assert_eq!(
        s.ledger().balance(&w.account()),
        a.balance - PRICE_RAW,
        "one debit"
    );
}
