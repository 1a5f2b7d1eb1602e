//! Invariant 11, unpaid traffic costs nothing durable, against the real stack (Envoy + filter +
//! sidecar + devnet, loopback only, shipped defaults): thousands of unpaid 402s and junk
//! payments (wrong amount, bad signature, bad work, and one wrong-amount block replayed under
//! fresh challenges) from several client addresses add no store row and only a bounded number
//! of node calls (the devnet's own counters), while an honest payer on another address is
//! served throughout.
//!
//! The flood goes to `/paid/`; the tagged routes' session pools are refilled on the filter's
//! timer whatever the traffic, so their tables are bounded by that upkeep, not by the flood.

use nanogate_protocol::nano::parse_raw;
use nanogate_tests::stack::{Challenge, Reply, Stack, StackConfig, Wallet, HOST, PRICE_RAW};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Unpaid requests in the flood.
const UNPAID: usize = 3000;
/// Presentations of each junk kind (each after its own fresh 402).
const JUNK_EACH: usize = 300;
/// Client addresses the flood comes from (127.0.0.1 … 127.0.0.N).
const ATTACKERS: u8 = 8;
/// Concurrent flood clients.
const WORKERS: usize = 16;
/// The honest payer's address: a loopback address of its own.
const HONEST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 200));

/// Tables of the signed-block payments: they grow by exactly one row per honest payment (the
/// nonce binding, the frontier claim and the payment ledger's row).
const PAYMENT_TABLES: [&str; 3] = ["sessions", "forks", "payments"];
/// Tables of the tagged-session pools (refilled on the filter's 1 s tick).
const POOL_TABLES: [&str; 2] = ["tagged_sessions", "tag_claims"];
/// The reconciler's cursor: one row per watched pool account, whatever the traffic.
const CURSORS: &str = "reconcile_cursors";

fn client(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

async fn get(c: &reqwest::Client, stack: &Stack, path: &str, payment: Option<&str>) -> Reply {
    let mut req = c.get(stack.url(path)).header("host", HOST);
    if let Some(p) = payment {
        req = req.header("payment-signature", p);
    }
    let t = Instant::now();
    let r = req.send().await.expect("request through Envoy");
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        elapsed: t.elapsed(),
    }
}

async fn challenge(c: &reqwest::Client, stack: &Stack, path: &str) -> Challenge {
    let r = get(c, stack, path, None).await;
    assert_eq!(r.status, 402, "unpaid {path}: {}", r.text());
    Challenge {
        required: r.payment_required(),
        raw: r.payment_required_json(),
    }
}

/// Rows in every table of the sidecar's store (sqlx's bookkeeping aside), so a table added
/// later is checked too.
async fn rows(db: &std::path::Path) -> BTreeMap<String, i64> {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .expect("open the sidecar's SQLite file");
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations'",
    )
    .fetch_all(&pool)
    .await
    .expect("list tables");
    let mut out = BTreeMap::new();
    for (t,) in tables {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM \"{t}\""))
            .fetch_one(&pool)
            .await
            .expect("count rows");
        out.insert(t, n);
    }
    let (accounts,): (i64,) = sqlx::query_as("SELECT COUNT(DISTINCT pay_to) FROM tagged_sessions")
        .fetch_one(&pool)
        .await
        .expect("count pool accounts");
    out.insert("(pool accounts)".into(), accounts);
    pool.close().await;
    out
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// One honest payment from `HONEST`: 200 with a receipt.
async fn pay_honestly(stack: &Stack, wallet: &Wallet, path: &str) -> Reply {
    let c = client(HONEST);
    let ch = challenge(&c, stack, path).await;
    let amount = parse_raw(&ch.required.accepts[0].amount).expect("amount");
    let block = stack.send_block(&wallet.key, stack.payee, amount);
    get(&c, stack, path, Some(&ch.header_for(&block))).await
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unpaid_and_junk_floods_add_no_store_row_and_bounded_node_calls() {
    let stack = Arc::new(Stack::start(StackConfig::default()).await);
    let db = stack.dir().join("gate0.db");
    let honest = stack.wallet();
    let attacker = stack.wallet();

    // Quiet baseline: what one honest payment costs the node.
    const QUIET: u64 = 3;
    let calls0 = stack.devnet.rpc_calls();
    for i in 0..QUIET {
        let r = pay_honestly(&stack, &honest, &format!("/paid/quiet{i}")).await;
        assert_eq!(r.status, 200, "quiet payment: {}", r.text());
    }
    let calls1 = stack.devnet.rpc_calls();
    let quiet_calls: u64 = delta(&calls1, &calls0).values().sum();
    let per_payment = quiet_calls.div_ceil(QUIET);

    // Junk, built once: all from the attacker's account on its current frontier.
    let wrong_amount = stack.send_block(&attacker.key, stack.payee, 2 * PRICE_RAW);
    let mut bad_signature = stack.send_block(&attacker.key, stack.payee, PRICE_RAW);
    bad_signature.signature.0[0] ^= 1;
    let mut bad_work = stack.send_block(&attacker.key, stack.payee, PRICE_RAW);
    bad_work.work = 0;
    let junk = Arc::new([wrong_amount, bad_signature, bad_work]);

    let before = rows(&db).await;
    let metrics_before = stack.gate(0).sidecar.metrics().await;
    let started = Instant::now();

    // The flood: WORKERS clients over ATTACKERS addresses; unpaid 402s and junk presentations.
    let statuses: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let jobs = UNPAID + JUNK_EACH * junk.len();
    let next = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for w in 0..WORKERS {
        let stack = stack.clone();
        let junk = junk.clone();
        let statuses = statuses.clone();
        let next = next.clone();
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (w as u8 % ATTACKERS)));
        flood.push(tokio::spawn(async move {
            let c = client(from);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= jobs {
                    return;
                }
                let path = format!("/paid/flood{}", n % 97);
                let r = if n < UNPAID {
                    get(&c, &stack, &path, None).await
                } else {
                    let block = &junk[(n - UNPAID) % junk.len()];
                    let ch = challenge(&c, &stack, &path).await;
                    statuses[0].fetch_add(1, Ordering::Relaxed);
                    get(&c, &stack, &path, Some(&ch.header_for(block))).await
                };
                let slot = match r.status {
                    402 => 0,
                    429 => 1,
                    400 => 2,
                    503 => 3,
                    200 => 4,
                    _ => 5,
                };
                statuses[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Meanwhile the honest payer keeps paying, and is served every time.
    let mut honest_paid = 0u64;
    let mut honest_ms = Vec::new();
    while flood.iter().any(|t| !t.is_finished()) || honest_paid < 5 {
        let r = pay_honestly(&stack, &honest, &format!("/paid/honest{honest_paid}")).await;
        assert_eq!(
            r.status,
            200,
            "the honest payer is served during the flood: {}\n{}",
            r.text(),
            stack.diagnostics()
        );
        honest_ms.push(r.elapsed.as_millis());
        honest_paid += 1;
    }
    for t in flood {
        t.await.expect("flood worker");
    }
    let elapsed = started.elapsed();

    let after = rows(&db).await;
    let calls2 = stack.devnet.rpc_calls();
    let flood_calls = delta(&calls2, &calls1);
    let metrics_after = stack.gate(0).sidecar.metrics().await;
    let s: Vec<u64> = statuses.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let requests = UNPAID as u64 + 2 * (JUNK_EACH * junk.len()) as u64;
    let rejected = |reason: &str| {
        let line = format!("nanogate_rejections_total{{reason=\"{reason}\"}}");
        metric(&metrics_after, &line) - metric(&metrics_before, &line)
    };

    eprintln!(
        "flood: {requests} requests in {elapsed:.1?} ({} unpaid, {} junk presentations after a fresh 402 each) \
         from {ATTACKERS} addresses; answers: 402×{} 429×{} 400×{} 503×{} 200×{} other×{}",
        UNPAID,
        JUNK_EACH * junk.len(),
        s[0],
        s[1],
        s[2],
        s[3],
        s[4],
        s[5]
    );
    eprintln!(
        "sidecar refusals: amount_mismatch {} invalid_signature {} insufficient_work {} rate_limited {}; \
         frontier-cache refusals {}",
        rejected("amount_mismatch"),
        rejected("invalid_signature"),
        rejected("insufficient_work"),
        rejected("rate_limited"),
        metric(&metrics_after, "nanogate_frontier_cache_refusals_total")
            - metric(&metrics_before, "nanogate_frontier_cache_refusals_total"),
    );
    eprintln!("honest payer: {honest_paid} payments served during the flood, ms {honest_ms:?}");
    eprintln!("store rows before {before:?}\nstore rows after  {after:?}");
    eprintln!("node calls during the flood {flood_calls:?}; a quiet payment costs ≤ {per_payment}");

    // No junk was ever served or broadcast.
    assert_eq!(s[4], 0, "no junk payment was admitted");
    assert_eq!(
        stack.upstream_hits("/paid/flood0"),
        0,
        "nothing unpaid reached the upstream"
    );
    // Store: the payment tables grew by the honest payments alone; no other table grew (no
    // owed row, no pending settlement), except the pools' upkeep and one cursor per account.
    let grew = |t: &str| after.get(t).copied().unwrap_or(0) - before.get(t).copied().unwrap_or(0);
    for t in PAYMENT_TABLES {
        assert_eq!(
            grew(t),
            honest_paid as i64,
            "{t}: one row per honest payment, none for the flood"
        );
    }
    // The pools' timer-driven upkeep: at most 16 sessions per tagged route per second.
    let upkeep_bound = 2 * 16 * (elapsed.as_secs() as i64 + 2);
    for t in POOL_TABLES {
        assert!(
            grew(t) <= upkeep_bound,
            "{t} grew by {} (> the pools' upkeep bound {upkeep_bound})",
            grew(t)
        );
    }
    assert!(
        grew(CURSORS) <= after["(pool accounts)"],
        "a cursor per pool account at most"
    );
    for t in after.keys().filter(|t| t.as_str() != "(pool accounts)") {
        let t = t.as_str();
        if !PAYMENT_TABLES.contains(&t) && !POOL_TABLES.contains(&t) && t != CURSORS {
            assert_eq!(grew(t), 0, "{t}: the flood wrote a row");
        }
    }
    // Node: junk is never broadcast, and the replayed wrong-amount block buys at most one
    // account_info per cache period (5 s); everything else is the honest payer's.
    let get = |a: &str| flood_calls.get(a).copied().unwrap_or(0);
    assert_eq!(
        get("process"),
        honest_paid,
        "only honest blocks are broadcast"
    );
    let cache_bound = elapsed.as_secs() / 5 + 2;
    assert!(
        get("account_info") <= honest_paid + cache_bound,
        "account_info {} > {honest_paid} honest + {cache_bound}",
        get("account_info")
    );
    // The rest is what the honest payments need: one nudge each, and confirmation polls
    // (one at once, then every 2 s while the push is late, within max_wait_secs).
    let max_wait = StackConfig::default().max_wait_secs;
    assert!(get("block_confirm") <= honest_paid);
    assert!(
        get("block_info") <= honest_paid * (1 + max_wait.div_ceil(2)),
        "block_info {}",
        get("block_info")
    );
    // The reconciler's passes over the watched accounts (its 30 s timer, and the pass a newly
    // known payee wakes): one `receivable` and one `account_history` per account and pass,
    // whatever the flood's size.
    let passes = elapsed.as_secs() / 30 + 2;
    let accounts = (after["(pool accounts)"] + 1) as u64;
    for a in ["receivable", "account_history"] {
        assert!(
            get(a) <= passes * accounts,
            "{a} {} > {passes} passes × {accounts} accounts",
            get(a)
        );
    }
    let others: Vec<_> = flood_calls
        .keys()
        .filter(|a| {
            ![
                "account_info",
                "process",
                "block_confirm",
                "block_info",
                "receivable",
                "account_history",
            ]
            .contains(&a.as_str())
        })
        .collect();
    assert!(others.is_empty(), "unexpected node calls {others:?}");
    // The junk reached the sidecar's checks (not only the filter's).
    assert!(rejected("invalid_signature") > 0 && rejected("insufficient_work") > 0);
    assert!(rejected("amount_mismatch") > 0);
}

/// Presents `block` under a fresh challenge from `from` until the edge answers something other
/// than a 402; returns that answer and how many 402s came first.
async fn present_until_not_402(
    stack: &Stack,
    from: IpAddr,
    block: &nanogate_protocol::nano::StateBlock,
    max: usize,
) -> (Reply, usize) {
    let c = client(from);
    for i in 0..max {
        let ch = challenge(&c, stack, "/paid/limited").await;
        let r = get(&c, stack, "/paid/limited", Some(&ch.header_for(block))).await;
        if r.status != 402 {
            return (r, i);
        }
    }
    panic!("{max} presentations from {from} were all answered 402");
}

#[tokio::test]
async fn limited_presentations_get_429_with_retry_after_at_the_edge_per_address() {
    let stack = Stack::start(StackConfig::default()).await;
    let defaults = nanogate_sidecar::config::Config::default().limits;
    let attacker = stack.wallet();

    // Per client address: junk refused by the sidecar (bad signature) from one address.
    let mut bad = stack.send_block(&attacker.key, stack.payee, PRICE_RAW);
    bad.signature.0[0] ^= 1;
    let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 50));
    let (r, refused) = present_until_not_402(&stack, a, &bad, 200).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        refused >= defaults.source_refusal_burst as usize,
        "{refused}"
    );
    assert!(r
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(body["error"], "rate_limited");
    // Another address is judged on its own: Envoy's source.address reached the sidecar.
    let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 51));
    let c = client(b);
    let ch = challenge(&c, &stack, "/paid/limited").await;
    let r = get(&c, &stack, "/paid/limited", Some(&ch.header_for(&bad))).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.reason().as_deref(), Some("invalid_signature"));

    // Per payer frontier: one valid-looking block (wrong amount) replayed from fresh addresses.
    let wrong = stack.send_block(&attacker.key, stack.payee, 2 * PRICE_RAW);
    let mut answers = Vec::new();
    for i in 0..(defaults.payer_presentation_burst as u8 + 5) {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + i));
        let c = client(from);
        let ch = challenge(&c, &stack, "/paid/limited").await;
        let r = get(&c, &stack, "/paid/limited", Some(&ch.header_for(&wrong))).await;
        answers.push(r.status);
    }
    let first_429 = answers.iter().position(|s| *s == 429);
    assert!(
        first_429.is_some_and(|i| i >= defaults.payer_presentation_burst as usize),
        "{answers:?}"
    );
    assert_eq!(stack.upstream_hits("/paid/limited"), 0);
}
