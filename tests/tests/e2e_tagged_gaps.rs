//! End to end, tagged sessions under faults (real Envoy with the filter, the real sidecar, the
//! devnet), each with its own stack because they break it on purpose:
//! * issue #12 scenario 4: a tagged payment sent while the node's WebSocket is down, or while
//!   the sidecar is killed, is still admitted when presented, and a send matching no session is
//!   listed as stray: the sidecar catches up from the ledger, not only from pushes;
//! * issue #13: a flood of unpaid requests on a tagged route drains the session pool, never
//!   the store: the sessions the sidecar issues stay within the route's budget.

use nanogate_devnet::WsMode;
use nanogate_protocol::nano::{parse_raw, BlockHash, PublicKey};
use nanogate_protocol::x402::{encode_header, PaymentRequirements};
use nanogate_tests::stack::{Stack, StackConfig, Wallet, PRICE_RAW};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

async fn start() -> Stack {
    Stack::start(StackConfig {
        sidecar_env: vec![("NANOGATE_FACILITATOR_TOKEN".into(), ADMIN_TOKEN.into())],
        wallets: 2,
        ..StackConfig::default()
    })
    .await
}

/// The tagged offer of a 402, waiting (bounded) for the filter's pool to be filled.
async fn tagged_offer(s: &Stack, path: &str) -> PaymentRequirements {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.get(path, &[]).await;
        assert_eq!(r.status, 402, "{}", r.text());
        if let Some(o) = r
            .payment_required()
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

fn amount(o: &PaymentRequirements) -> u128 {
    parse_raw(&o.amount).expect("amount")
}

fn pay_to(o: &PaymentRequirements) -> PublicKey {
    PublicKey::from_address(&o.pay_to).expect("payTo")
}

/// A wallet's own broadcast (as any wallet app would), confirmed on the ledger.
async fn broadcast(s: &Stack, w: &Wallet, to: PublicKey, amount: u128) -> BlockHash {
    let block = s.send_block(&w.key, to, amount);
    let hash = s
        .ledger()
        .process(&block)
        .expect("the devnet accepts the send");
    assert!(s.confirmed(&hash, Duration::from_secs(10)).await);
    hash
}

/// The session alone, as the browser paywall presents it: only a sidecar that matched the
/// send to the session can admit it.
fn session_header(o: &PaymentRequirements) -> String {
    let id = o.extra.get("nonce").and_then(Value::as_str).unwrap_or("");
    encode_header(&json!({"x402Version": 2, "accepted": o, "payload": {"sessionId": id}}))
}

/// Presents until served (bounded); returns the last status and body.
async fn served_within(s: &Stack, path: &str, header: &str, limit: Duration) -> (u16, String) {
    let deadline = Instant::now() + limit;
    loop {
        let r = s.get(path, &[("payment-signature", header)]).await;
        if r.status == 200 || Instant::now() >= deadline {
            return (r.status, r.text());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn stray_reason(s: &Stack, hash: &BlockHash) -> Option<String> {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/admin/stray", s.gate(0).sidecar.base_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["stray"]
        .as_array()?
        .iter()
        .find(|x| x["hash"].as_str() == Some(hash.to_hex().as_str()))
        .and_then(|x| x["reason"].as_str().map(str::to_owned))
}

async fn listed_as_stray_within(s: &Stack, hash: &BlockHash, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(r) = stray_reason(s, hash).await {
            return Some(r);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn tagged_payments_sent_during_a_websocket_gap_or_a_sidecar_crash_are_not_lost() {
    let mut s = start().await;
    let w = s.wallet();

    // The node's WebSocket goes down: confirmations happen, no push reaches the sidecar.
    let offer = tagged_offer(&s, "/tagged/ws-gap").await;
    s.devnet.faults().set_ws(WsMode::Down);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paid = broadcast(&s, &w, pay_to(&offer), amount(&offer)).await;
    let unmatched = broadcast(&s, &w, s.payee, PRICE_RAW + 7).await;
    s.devnet.faults().set_ws(WsMode::Normal);
    let (status, body) = served_within(
        &s,
        "/tagged/ws-gap",
        &session_header(&offer),
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", s.diagnostics());
    assert_eq!(s.upstream_hits("/tagged/ws-gap"), 1);
    assert_eq!(
        stray_reason(&s, &paid).await,
        None,
        "the paid send bought its session"
    );

    // The sidecar is killed; the wallet pays meanwhile; the sidecar comes back.
    let offer = tagged_offer(&s, "/tagged/crash").await;
    s.gate_mut(0).sidecar.kill();
    let paid = broadcast(&s, &w, pay_to(&offer), amount(&offer)).await;
    let unmatched_in_crash = broadcast(&s, &w, s.payee, PRICE_RAW + 11).await;
    s.gate_mut(0)
        .sidecar
        .restart()
        .await
        .expect("sidecar restarts");
    let (status, body) = served_within(
        &s,
        "/tagged/crash",
        &session_header(&offer),
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", s.diagnostics());
    assert_eq!(s.upstream_hits("/tagged/crash"), 1);
    assert_eq!(stray_reason(&s, &paid).await, None);

    // Sends that match no session are listed, not forgotten.
    for hash in [unmatched, unmatched_in_crash] {
        assert_eq!(
            listed_as_stray_within(&s, &hash, Duration::from_secs(45))
                .await
                .as_deref(),
            Some("unmatched"),
            "{hash}\n{}",
            s.diagnostics()
        );
    }
}

/// Rows of the `/tagged/` route (scope `nanogate-route:tagged`) in the sidecar store's
/// `tagged_sessions` table (the SQLite file of gate 0). Other tagged routes refill on their own.
async fn sessions_stored(s: &Stack) -> u64 {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", s.dir().join("gate0.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the sidecar's store read-only");
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tagged_sessions WHERE scope = 'nanogate-route:tagged'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count sessions");
    u64::try_from(n).unwrap_or(0)
}

/// Issue #13: thousands of unpaid 402s on a tagged route. Every 402 pops a session, so the
/// sessions the filter asks for must be bounded by the route's budget (128 per window of
/// `maxTimeoutSeconds`, 300 s on `/tagged/`), not by the unpaid rate; the 402 keeps its
/// signed-block offer throughout.
#[tokio::test]
async fn a_flood_of_unpaid_requests_drains_the_session_pool_not_the_store() {
    const BUDGET: u64 = 128;
    const WINDOW: u64 = 300;
    const FLOOD: Duration = Duration::from_secs(20);
    let s = start().await;
    tagged_offer(&s, "/tagged/flood").await;
    // Keep the flood inside one budget window.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    if now() % WINDOW > WINDOW - FLOOD.as_secs() - 5 {
        tokio::time::sleep(Duration::from_secs(WINDOW - now() % WINDOW + 1)).await;
    }
    let window = now() / WINDOW;
    let before = sessions_stored(&s).await;
    let stop = Instant::now() + FLOOD;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = s.url("/tagged/flood");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut n, mut tagged, mut signed_block) = (0u64, 0u64, 0u64);
            while Instant::now() < stop {
                let Ok(r) = client.get(&url).send().await else {
                    continue;
                };
                assert_eq!(r.status(), 402);
                let body: Value = r.json().await.unwrap_or_default();
                let accepts = body["accepts"].as_array().cloned().unwrap_or_default();
                n += 1;
                signed_block += u64::from(
                    accepts
                        .first()
                        .is_some_and(|a| a["amount"] == json!(PRICE_RAW.to_string())),
                );
                tagged += u64::from(accepts.len() == 2);
            }
            (n, tagged, signed_block)
        }));
    }
    let (mut requests, mut tagged, mut signed_block) = (0, 0, 0);
    for t in tasks {
        let (n, tg, sb) = t.await.expect("flood task");
        requests += n;
        tagged += tg;
        signed_block += sb;
    }
    // Let a refill in flight land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored = sessions_stored(&s).await.saturating_sub(before);
    eprintln!(
        "flood: {requests} unpaid requests in {FLOOD:?}, {tagged} with a tagged offer, \
         {stored} session rows created in the store (budget {BUDGET} per {WINDOW} s)"
    );
    assert!(requests >= 2_000, "a flood: {requests} requests");
    assert_eq!(
        signed_block, requests,
        "every 402 keeps its signed-block offer"
    );
    assert_eq!(
        now() / WINDOW,
        window,
        "the flood stayed in one budget window"
    );
    assert!(
        stored <= BUDGET,
        "{stored} sessions stored during the flood; the budget is {BUDGET} per window"
    );
    assert!(
        tagged <= BUDGET + 64,
        "tagged offers come from the budget (and the pool before it)"
    );
}
