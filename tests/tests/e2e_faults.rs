//! End to end under faults: a ledger that never confirms, a fork confirmed instead of the
//! payment, the sidecar down, every Nano node down, and an upstream that fails after the payment
//! settled. Each test owns its stack (faults are global to a stack).
//! Invariants 1 (nothing unpaid passes), 4 (settle before serving), 5 (no payment is lost) and
//! 6 (fail closed, visibly).

use nanogate_client::{Payer, PayerConfig, RequestSpec};
use nanogate_devnet::RpcMode;
use nanogate_protocol::nano::{PrivateKey, PublicKey};
use nanogate_tests::stack::{
    signed_block, Reply, Stack, StackConfig, PREVIEW_PRICE_RAW, PRICE_RAW,
};
use std::time::{Duration, Instant};

fn attacker() -> PublicKey {
    PrivateKey::from_seed(&[0xA7; 32], 1).public_key()
}

/// Presents `header` until the answer is no longer "still in progress" (the outcome of the
/// previous admission is reported after the response, asynchronously), at most `limit`.
async fn present_until_settled(s: &Stack, path: &str, header: &str, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let r = s.get(path, &[("payment-signature", header)]).await;
        let busy = r.status == 402
            && matches!(
                r.reason().as_deref(),
                Some("duplicate_settlement" | "duplicate_frontier")
            );
        if !busy || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn unconfirmed_payment_is_refused_within_the_window_and_redeemable_after_confirmation() {
    let s = Stack::start(StackConfig {
        max_wait_secs: 3,
        wallets: 2,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    let path = "/paid/never-confirmed";
    let (header, block) = s.pay_header(0, path, &w).await;
    s.devnet.faults().set_confirming(false);
    let r = s.get(path, &[("payment-signature", &header)]).await;
    eprintln!(
        "unconfirmed payment answered in {:?} (sidecar max wait 3 s, challenge window 120 s)",
        r.elapsed
    );
    assert_eq!(r.status, 402, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(r.reason().as_deref(), Some("block_not_confirmed"));
    assert!(
        r.elapsed < Duration::from_secs(120),
        "answered within the challenge's window"
    );
    assert_eq!(s.upstream_hits(path), 0, "nothing unconfirmed is served");
    assert_eq!(
        s.ledger().confirmed(&block.hash()),
        Some(false),
        "broadcast, not confirmed"
    );
    // Presenting it again while the ledger still does not confirm: still nothing.
    let r = present_until_settled(&s, path, &header, Duration::from_secs(15)).await;
    assert_eq!(r.status, 402);
    assert_eq!(s.upstream_hits(path), 0);

    // The ledger recovers; the same payment (same challenge) now buys the request, once.
    s.devnet.faults().set_confirming(true);
    assert!(s.confirmed(&block.hash(), Duration::from_secs(20)).await);
    let r = present_until_settled(&s, path, &header, Duration::from_secs(30)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(
        r.settlement().map(|x| x.transaction),
        Some(block.hash().to_hex())
    );
    assert_eq!(s.upstream_hits(path), 1);
    let r = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 402);
    assert_eq!(s.upstream_hits(path), 1, "and only once");
}

#[tokio::test]
async fn fork_confirmed_instead_of_the_payment_buys_nothing() {
    let s = Stack::start(StackConfig {
        wallets: 2,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    let path = "/paid/forked";
    let c = s.challenge(0, path).await;
    let a = s.ledger().account(&w.account()).expect("open");
    let payment = s.send_block(&w.key, s.payee, PRICE_RAW);
    // The competitor spends the same frontier elsewhere; the ledger confirms it instead.
    let competitor = signed_block(
        &w.key,
        a.frontier,
        a.representative,
        a.balance - PRICE_RAW,
        attacker().0,
    );
    assert_ne!(competitor.hash(), payment.hash());
    s.devnet
        .faults()
        .fork_instead(a.frontier, competitor.clone());
    let header = c.header_for(&payment);
    let r = s.get(path, &[("payment-signature", &header)]).await;
    eprintln!("forked payment answered in {:?}", r.elapsed);
    assert_eq!(r.status, 402, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(r.reason().as_deref(), Some("fork_lost"));
    assert!(r.header("payment-response").is_none());
    assert_eq!(s.upstream_hits(path), 0);
    assert!(
        s.confirmed(&competitor.hash(), Duration::from_secs(10))
            .await
    );
    assert!(
        !s.ledger().contains(&payment.hash()),
        "the payment was rolled back"
    );
    // Presenting it again buys nothing either.
    let r = present_until_settled(&s, path, &header, Duration::from_secs(15)).await;
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(s.upstream_hits(path), 0);
}

#[tokio::test]
async fn sidecar_down_fails_closed_and_a_fail_open_route_passes_counted() {
    let mut s = Stack::start(StackConfig {
        wallets: 2,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    // Admitted before the crash: the spent set must survive it.
    let before = "/paid/before-crash";
    let (paid_before, _) = s.pay_header(0, before, &w).await;
    let r = s.get(before, &[("payment-signature", &paid_before)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let path = "/paid/sidecar-down";
    let (header, block) = s.pay_header(0, path, &w).await;
    let preview = "/preview/sidecar-down";
    let pc = s.challenge(0, preview).await;
    let preview_block = s.send_block(&w.key, s.payee, PREVIEW_PRICE_RAW);
    let passes_before = s.gate(0).counter("fail_open_passes").await;

    s.gate_mut(0).sidecar.kill();
    let r = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "503 carries Retry-After");
    assert_eq!(s.upstream_hits(path), 0, "fail closed");
    assert!(!s.ledger().contains(&block.hash()));
    // Unpaid requests still get their 402 from the filter alone.
    assert_eq!(s.get(path, &[]).await.status, 402);

    // The fail-open route passes, stripped, and is counted in Envoy's /stats.
    let r = s
        .get(
            preview,
            &[("payment-signature", &pc.header_for(&preview_block))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.upstream.requests_to(preview);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("payment-signature"), None);
    let passes = s.gate(0).counter("fail_open_passes").await;
    eprintln!("fail-open passes: {passes_before} -> {passes}");
    assert_eq!(passes, passes_before + 1, "every fail-open pass is counted");

    // The sidecar comes back: the payment that was refused meanwhile still buys the request.
    s.gate_mut(0)
        .sidecar
        .restart()
        .await
        .expect("sidecar restarts");
    let r = present_until_settled(&s, path, &header, Duration::from_secs(20)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(s.upstream_hits(path), 1);
    // And what was consumed before the crash stays consumed.
    let r = present_until_settled(&s, before, &paid_before, Duration::from_secs(20)).await;
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(r.reason().as_deref(), Some("already_spent"));
    assert_eq!(s.upstream_hits(before), 1);
}

#[tokio::test]
async fn every_nano_node_down_is_503_and_the_payment_survives() {
    let s = Stack::start(StackConfig {
        dead_node_first: true,
        wallets: 2,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    // One dead node first in the list: failover to the devnet pays.
    let (header, _) = s.pay_header(0, "/paid/failover", &w).await;
    let r = s
        .get("/paid/failover", &[("payment-signature", &header)])
        .await;
    assert_eq!(r.status, 200, "failover: {}\n{}", r.text(), s.diagnostics());

    // Now every node is down.
    let path = "/paid/nodes-down";
    let (header, block) = s.pay_header(0, path, &w).await;
    s.devnet.faults().set_rpc(RpcMode::Refuse);
    let r = s.get(path, &[("payment-signature", &header)]).await;
    eprintln!("every node down: answered in {:?}", r.elapsed);
    s.devnet.faults().set_rpc(RpcMode::Normal);
    assert_eq!(r.status, 503, "{}\n{}", r.text(), s.diagnostics());
    assert!(r.header("retry-after").is_some());
    assert_eq!(s.upstream_hits(path), 0);
    assert!(!s.ledger().contains(&block.hash()));
    // Nodes back: the same payment is settled, once.
    let r = present_until_settled(&s, path, &header, Duration::from_secs(20)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(s.upstream_hits(path), 1);
    // Every RPC answering HTTP 500 is "down" too.
    let path = "/paid/nodes-failing";
    let (header, _) = s.pay_header(0, path, &w).await;
    s.devnet.faults().set_rpc(RpcMode::Fail);
    let r = s.get(path, &[("payment-signature", &header)]).await;
    s.devnet.faults().set_rpc(RpcMode::Normal);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(s.upstream_hits(path), 0);
}

#[tokio::test]
async fn upstream_failure_then_re_presentation_is_served_once() {
    let s = Stack::start(StackConfig {
        wallets: 2,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    let path = "/paid/flaky";
    let (header, block) = s.pay_header(0, path, &w).await;
    let balance = s.ledger().balance(&w.account());
    s.upstream.fail_next(path, 500);
    let r = s.get(path, &[("payment-signature", &header)]).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(s.upstream_hits(path), 1);
    assert_eq!(s.ledger().confirmed(&block.hash()), Some(true), "settled");
    // The same payment again: redeemed, served.
    let r = present_until_settled(&s, path, &header, Duration::from_secs(20)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(
        r.settlement().map(|x| x.transaction),
        Some(block.hash().to_hex())
    );
    assert_eq!(s.upstream_hits(path), 2);
    // And never again after a success.
    let r = present_until_settled(&s, path, &header, Duration::from_secs(20)).await;
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(r.reason().as_deref(), Some("already_spent"));
    assert_eq!(s.upstream_hits(path), 2, "served once after the failure");
    assert_eq!(
        s.ledger().balance(&w.account()),
        balance - PRICE_RAW,
        "paid once"
    );

    // The payer library does the same by itself: its journal re-presents the block.
    let path = "/paid/flaky-lib";
    let dir = s.dir().join("flaky-lib");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let payer = Payer::new(PayerConfig::new(
        s.devnet.rpc_url(),
        w.key.clone(),
        dir.join("journal.json"),
    ))
    .expect("payer");
    let balance = s.ledger().balance(&w.account());
    s.upstream.fail_next(path, 503);
    let first = payer
        .fetch(RequestSpec::get(s.url(path)))
        .await
        .expect("first fetch");
    assert_eq!(first.status, 503);
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let r = payer.fetch(RequestSpec::get(s.url(path))).await;
        match r {
            Ok(r) if r.status == 200 || Instant::now() > deadline => break r,
            _ if Instant::now() > deadline => panic!("second fetch: {r:?}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    assert_eq!(second.status, 200, "{}", second.body_text());
    assert!(second.payment.as_ref().is_some_and(|p| p.re_presented));
    assert_eq!(s.upstream_hits(path), 2);
    assert_eq!(
        s.ledger().balance(&w.account()),
        balance - PRICE_RAW,
        "the library paid once"
    );
}

#[tokio::test]
async fn payments_keep_working_across_challenge_key_rotations() {
    // A 3-second key period: the filter must keep fetching keys, and a challenge issued just
    // before a rotation must still be honoured just after it (current and previous keys).
    let s = Stack::start(StackConfig {
        key_rotation_secs: 3,
        wallets: 1,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    let started = Instant::now();
    let mut key_ids = std::collections::BTreeSet::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let path = format!("/paid/rotation-{n}");
        let c = s.challenge(0, &path).await;
        let stamp = nanogate_protocol::challenge::read_extra(&c.required.accepts[0].extra)
            .expect("stamp")
            .0;
        key_ids.insert(stamp.key_id);
        let block = s.send_block(&w.key, s.payee, PRICE_RAW);
        // Present it a little later, across a rotation now and then.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = s
            .get(&path, &[("payment-signature", &c.header_for(&block))])
            .await;
        assert_eq!(
            r.status,
            200,
            "payment {n} (key {}): {}\n{}",
            stamp.key_id,
            r.text(),
            s.diagnostics()
        );
        assert!(s.confirmed(&block.hash(), Duration::from_secs(10)).await);
        n += 1;
    }
    eprintln!("{n} payments across key ids {key_ids:?}");
    assert!(
        key_ids.len() >= 3,
        "challenges used several keys: {key_ids:?}"
    );
}

#[tokio::test]
async fn filter_timeout_during_settlement_loses_no_payment() {
    // The ledger confirms after 3 s, the filter gives the sidecar 1.5 s: the payer gets a 503
    // while the sidecar goes on settling. The same payment must later buy the request (once),
    // never a second payment (invariant 5).
    let s = Stack::start(StackConfig {
        confirm_ms: 3_000,
        max_wait_secs: 10,
        sidecar_timeout_ms: Some(1_500),
        wallets: 1,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    let path = "/paid/slow-ledger";
    let (header, block) = s.pay_header(0, path, &w).await;
    let balance = s.ledger().balance(&w.account());
    let r = s.get(path, &[("payment-signature", &header)]).await;
    eprintln!(
        "slow ledger: first answer {} after {:?}",
        r.status, r.elapsed
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(s.upstream_hits(path), 0);
    assert!(s.confirmed(&block.hash(), Duration::from_secs(20)).await);
    let t = Instant::now();
    let r = present_until_settled(&s, path, &header, Duration::from_secs(30)).await;
    eprintln!(
        "slow ledger: re-presentation {} after {:?} more ({:?})",
        r.status,
        t.elapsed(),
        r.reason()
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    assert_eq!(s.upstream_hits(path), 1);
    assert_eq!(
        s.ledger().balance(&w.account()),
        balance - PRICE_RAW,
        "paid once"
    );
}

#[tokio::test]
async fn filter_without_a_challenge_key_fails_closed_until_the_sidecar_answers() {
    let mut s = Stack::start(StackConfig {
        wallets: 1,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    // Envoy (re)starts while the sidecar is down: its filter holds no challenge key.
    s.gate_mut(0).sidecar.kill();
    s.gate_mut(0).restart_envoy().await;
    let r = s.get("/paid/no-key", &[]).await;
    assert_eq!(r.status, 503, "no key, no challenge: {}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(r.header("payment-required").is_none());
    assert_eq!(s.upstream_hits("/paid/no-key"), 0);
    // A fail-open route passes, counted.
    let r = s.get("/preview/no-key", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.gate(0).counter("fail_open_passes").await, 1);
    assert!(s.gate(0).counter("key_unavailable").await >= 1);
    // The sidecar comes up: the filter fetches a key by itself and paid routes work again.
    s.gate_mut(0)
        .sidecar
        .restart()
        .await
        .expect("sidecar restarts");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.get("/paid/no-key", &[]).await;
        if r.status == 402 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the filter never fetched a key: {} {}\n{}",
            r.status,
            r.text(),
            s.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (header, _) = s.pay_header(0, "/paid/no-key", &w).await;
    let r = s
        .get("/paid/no-key", &[("payment-signature", &header)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.upstream_hits("/paid/no-key"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_shutdown_finishes_the_payment_in_flight() {
    // A rolling restart: SIGTERM reaches the sidecar while it waits for a confirmation (2 s);
    // it stops accepting, but settles what it holds, and the payer is served.
    let mut s = Stack::start(StackConfig {
        confirm_ms: 2_000,
        max_wait_secs: 10,
        wallets: 1,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    let path = "/paid/in-flight";
    let (header, block) = s.pay_header(0, path, &w).await;
    let url = s.url(path);
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .header("host", nanogate_tests::stack::HOST)
            .header("payment-signature", header)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t = Instant::now();
    let sidecar = &mut s.gate_mut(0).sidecar;
    tokio::task::block_in_place(|| sidecar.terminate(Duration::from_secs(20)));
    eprintln!("sidecar drained and exited in {:?}", t.elapsed());
    let status = request.await.expect("task").expect("answer");
    assert_eq!(status, 200, "the payment in flight was settled and served");
    assert_eq!(s.upstream_hits(path), 1);
    assert_eq!(s.ledger().confirmed(&block.hash()), Some(true));
}

/// A filter that starts after a key rotation must still accept a genuine, unexpired challenge
/// issued under the previous key (by another replica, or by itself before a restart): the
/// sidecar hands out the previous key with the current one, as it still honours it.
#[tokio::test]
async fn restarted_filter_honours_challenges_issued_under_the_previous_key() {
    let rotation = 8;
    let mut s = Stack::start(StackConfig {
        key_rotation_secs: rotation,
        wallets: 1,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();
    let path = "/paid/previous-key";
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    // Wait for the start of a key period, so a challenge, a rotation and a restart all fit in
    // the window in which the sidecar still honours the challenge's key as the previous one.
    while now() % rotation != 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(rotation * 1000 - 2_000)).await;
    let c = s.challenge(0, path).await;
    let stamp = nanogate_protocol::challenge::read_extra(&c.required.accepts[0].extra)
        .expect("stamp")
        .0;
    let block = s.send_block(&w.key, s.payee, PRICE_RAW);
    // The rotation passes; then this Envoy restarts (a new filter VM: it fetches one key).
    while now() / rotation == stamp.key_id {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.gate_mut(0).restart_envoy().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get("/paid/warmup", &[]).await.status != 402 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        now() / rotation,
        stamp.key_id + 1,
        "still within the next period (the sidecar honours the previous key)"
    );
    let r = s
        .get(path, &[("payment-signature", &c.header_for(&block))])
        .await;
    assert_eq!(
        r.status,
        200,
        "a genuine challenge under the previous key (id {}) was refused: {:?} {}",
        stamp.key_id,
        r.reason(),
        r.text()
    );
}
