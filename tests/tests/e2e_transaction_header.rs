//! End to end through real Envoy: the upstream learns which payment bought a request from
//! `x-nanogate-transaction`, which only the filter sets. A client cannot name a transaction
//! to the upstream of a paid route, neither next to an honest payment nor on a fail-open pass.

use nanogate_tests::stack::{Stack, StackConfig};

/// A block hash the client makes up.
const FORGED: &str = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";

#[tokio::test]
async fn the_upstream_sees_the_paying_transaction_and_never_a_clients_claim() {
    let mut s = Stack::start(StackConfig {
        wallets: 1,
        ..StackConfig::default()
    })
    .await;
    let w = s.wallet();

    // An honest payment, sent with a forged claim next to it: the upstream sees the block
    // that paid, once.
    let path = "/paid/which-transaction";
    let (header, block) = s.pay_header(0, path, &w).await;
    let r = s
        .get(
            path,
            &[
                ("payment-signature", &header),
                ("x-nanogate-transaction", FORGED),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.diagnostics());
    let seen = s.upstream.requests_to(path);
    assert_eq!(seen.len(), 1);
    let claims: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|(n, _)| n == "x-nanogate-transaction")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(claims, vec![block.hash().to_hex().as_str()]);

    // A free route is not ours to police: the header passes as sent.
    let r = s
        .get("/paid/free", &[("x-nanogate-transaction", FORGED)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.upstream.requests_to("/paid/free")[0].header("x-nanogate-transaction"),
        Some(FORGED)
    );

    // A fail-open pass (the sidecar is down) reaches the upstream unpaid, without the claim.
    s.gate_mut(0).sidecar.kill();
    let preview = "/preview/which-transaction";
    let r = s.get(preview, &[("x-nanogate-transaction", FORGED)]).await;
    // An unpaid request gets its 402 from the filter alone, sidecar or not; a payment header
    // makes the filter ask the sidecar, which is down: the fail-open pass.
    assert_eq!(r.status, 402, "{}", r.text());
    let c = s.challenge(0, preview).await;
    let preview_block = s.send_block(&w.key, s.payee, nanogate_tests::stack::PREVIEW_PRICE_RAW);
    let r = s
        .get(
            preview,
            &[
                ("payment-signature", &c.header_for(&preview_block)),
                ("x-nanogate-transaction", FORGED),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.upstream.requests_to(preview);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-nanogate-transaction"), None);
    assert_eq!(s.gate(0).counter("fail_open_passes").await, 1);
}
