//! End to end, the payer's side of prepaid passes (docs/passes.md, client/README.md's
//! "Prepaid passes"): real Envoy with the filter, the real sidecar, the devnet and a recording
//! upstream, on the demo bootstrap's `/passes/` group (`three`: three requests, `hour`: an
//! hour, 0.002 XNO each) and `/other-passes/` (its own `hour`). `nanogate-pay --pass` buys
//! once, rides the pass with no payment and no sidecar call, and buys the next when the filter
//! says the pass is exhausted (by signed block, and by tagged session on the tagged
//! `/tagged-passes/`); the library keeps passes of two groups apart.

use nanogate_client::{Payer, PayerConfig, RequestSpec};
use nanogate_protocol::contract::pass::HEADER;
use nanogate_protocol::nano::{PrivateKey, PublicKey};
use nanogate_tests::procs::workspace_bin;
use nanogate_tests::stack::{Stack, StackConfig, Wallet, XNO};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The demo bootstrap's pass price (both passes of `/passes/`).
const PASS_PRICE: u128 = XNO / 500;

/// A stack with the shipped pass settings; settlement may wait longer than the default test
/// stack's 5 s on a loaded machine (this file is about passes, not settlement time).
fn config() -> StackConfig {
    StackConfig {
        max_wait_secs: 30,
        ..StackConfig::default()
    }
}

/// The sidecar's count of authenticated filter calls to `path` (`/v1/pay`, `/v1/outcome`).
async fn filter_calls(s: &Stack, path: &str) -> f64 {
    let m = s.gate(0).sidecar.metrics().await;
    let needle = format!("nanogate_filter_calls_total{{path=\"{path}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The wallet's balance and how many blocks its account has (each payment is one send).
fn ledger_view(s: &Stack, account: &PublicKey) -> (u128, u64) {
    let a = s.ledger().account(account).expect("the wallet is opened");
    (a.balance, a.block_count)
}

/// Runs `nanogate-pay --pass NAME --max 0.01 --json URL` as `wallet`, journal in `dir`.
async fn pay_cli(
    s: &Stack,
    wallet: &Wallet,
    dir: &Path,
    pass: &str,
    path: &str,
) -> (Value, String) {
    pay_cli_with(s, wallet, dir, pass, path, &[]).await
}

/// [`pay_cli`] with `extra` arguments.
async fn pay_cli_with(
    s: &Stack,
    wallet: &Wallet,
    dir: &Path,
    pass: &str,
    path: &str,
    extra: &[&str],
) -> (Value, String) {
    let out = tokio::process::Command::new(workspace_bin("nanogate-pay"))
        .arg(s.url(path))
        .args(["--pass", pass, "--max", "0.01", "--json", "--rpc"])
        .arg(s.devnet.rpc_url())
        .args(extra)
        .arg("--index")
        .arg(wallet.index.to_string())
        .arg("--journal")
        .arg(dir.join("journal.json"))
        .env("NANOGATE_SEED", wallet.seed_hex())
        .env_remove("NANOGATE_RPC")
        .env_remove("NANOGATE_JOURNAL")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("nanogate-pay finishes")
        .expect("nanogate-pay runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "nanogate-pay --pass {pass} {path} failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        s.diagnostics()
    );
    (
        serde_json::from_str(stdout.trim()).expect("one JSON object"),
        stderr,
    )
}

#[tokio::test]
async fn nanogate_pay_buys_a_pass_once_rides_it_then_buys_the_next_when_exhausted() {
    let s = Stack::start(config()).await;
    let wallet = s.wallet();
    let dir = s.dir().join("pass-cli");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (balance0, blocks0) = ledger_view(&s, &wallet.account());

    // The first request buys `three`: one send of the pass price, and it is served.
    let (v, stderr) = pay_cli(&s, &wallet, &dir, "three", "/passes/cli-buy").await;
    assert_eq!(v["status"], 200);
    assert_eq!(v["paid"], true);
    assert_eq!(v["pass"]["bought"], true, "{v}");
    assert_eq!(v["pass"]["group"], "passes");
    assert_eq!(v["pass"]["requests"], 3);
    assert!(
        stderr.contains("bought pass `three` for group passes"),
        "{stderr}"
    );
    assert_eq!(
        ledger_view(&s, &wallet.account()),
        (balance0 - PASS_PRICE, blocks0 + 1)
    );
    let id = v["pass"]["id"].as_str().expect("pass id").to_owned();

    // The next three ride on it, across the group's routes: no send, no sidecar call.
    let pays = filter_calls(&s, "/v1/pay").await;
    let outcomes = filter_calls(&s, "/v1/outcome").await;
    for path in ["/passes/cli-1", "/passes-too/cli-2", "/passes/cli-3"] {
        let (v, stderr) = pay_cli(&s, &wallet, &dir, "three", path).await;
        assert_eq!(v["status"], 200, "{path}: {v}\n{stderr}");
        assert_eq!(v["paid"], false, "{path}: {v}");
        assert_eq!(v["pass"]["bought"], false, "{path}: {v}");
        assert_eq!(v["pass"]["id"], id.as_str());
        assert!(stderr.contains("presenting pass `three`"), "{stderr}");
        let seen = s.upstream.requests_to(path);
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(
            seen[0].header(HEADER),
            None,
            "the token never reaches the upstream"
        );
    }
    assert_eq!(
        ledger_view(&s, &wallet.account()),
        (balance0 - PASS_PRICE, blocks0 + 1),
        "one send for four requests"
    );
    assert_eq!(filter_calls(&s, "/v1/pay").await, pays);
    assert_eq!(filter_calls(&s, "/v1/outcome").await, outcomes);
    assert!(s.gate(0).counter("pass_served").await >= 3);

    // The fourth is refused as exhausted by the filter: the payer buys the next at once.
    let (v, stderr) = pay_cli(&s, &wallet, &dir, "three", "/passes/cli-4").await;
    assert_eq!(v["status"], 200, "{v}\n{stderr}");
    assert_eq!(v["pass"]["bought"], true, "{v}\n{stderr}");
    assert_ne!(v["pass"]["id"], id.as_str());
    assert!(stderr.contains("is exhausted: buying the next"), "{stderr}");
    assert_eq!(
        ledger_view(&s, &wallet.account()),
        (balance0 - 2 * PASS_PRICE, blocks0 + 2)
    );
    assert!(s.gate(0).counter("pass_refused_exhausted").await >= 1);
    // The journal holds the new token only, and nothing printed it.
    let journal = std::fs::read_to_string(dir.join("journal.json")).expect("journal");
    let j: Value = serde_json::from_str(&journal).expect("journal JSON");
    let passes = j["passes"].as_object().expect("passes");
    assert_eq!(passes.len(), 1);
    let token = passes.values().next().expect("a pass")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(!stderr.contains(&token) && !v.to_string().contains(&token));
}

/// `nanogate-pay --mechanism tagged --pass hour` on the tagged `/tagged-passes/`: it buys the
/// pass by broadcasting the session's exact amount itself, then rides it with no send and no
/// sidecar call.
#[tokio::test]
async fn nanogate_pay_buys_a_pass_by_tagged_session_then_rides_it() {
    let s = Stack::start(config()).await;
    let wallet = s.wallet();
    let dir = s.dir().join("pass-cli-tagged");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The route's pass pools fill on the filter's first ticks.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pr = s
            .get("/tagged-passes/wait", &[])
            .await
            .payment_required_json();
        let offered = pr["accepts"].as_array().is_some_and(|a| {
            a.iter().any(|o| {
                o["extra"]["mechanism"] == "tagged" && o["extra"]["pass"]["name"] == "hour"
            })
        });
        if offered {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tagged pass offer: {pr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (balance0, blocks0) = ledger_view(&s, &wallet.account());
    let tagged = ["--mechanism", "tagged"];
    let (v, stderr) =
        pay_cli_with(&s, &wallet, &dir, "hour", "/tagged-passes/cli-buy", &tagged).await;
    assert_eq!(v["status"], 200, "{v}\n{stderr}");
    assert_eq!(v["paid"], true);
    assert_eq!(v["pass"]["bought"], true, "{v}");
    assert_eq!(v["pass"]["group"], "tagged-passes");
    let (balance1, blocks1) = ledger_view(&s, &wallet.account());
    let spent = balance0 - balance1;
    assert_eq!(blocks1, blocks0 + 1, "one send");
    assert!(
        spent > PASS_PRICE && spent - PASS_PRICE < PASS_PRICE,
        "the pass price plus the session's tag: {spent}"
    );
    let id = v["pass"]["id"].as_str().expect("pass id").to_owned();

    let pays = filter_calls(&s, "/v1/pay").await;
    for path in ["/tagged-passes/cli-1", "/tagged-passes/cli-2"] {
        let (v, stderr) = pay_cli_with(&s, &wallet, &dir, "hour", path, &tagged).await;
        assert_eq!(v["status"], 200, "{path}: {v}\n{stderr}");
        assert_eq!(v["paid"], false, "{path}: {v}");
        assert_eq!(v["pass"]["id"], id.as_str());
        assert_eq!(s.upstream.requests_to(path).len(), 1, "{path}");
    }
    assert_eq!(ledger_view(&s, &wallet.account()), (balance1, blocks1));
    assert_eq!(filter_calls(&s, "/v1/pay").await, pays);
}

#[tokio::test]
async fn the_library_keeps_one_pass_per_group_and_presents_the_routes_own() {
    let s = Stack::start(config()).await;
    let wallet = s.wallet();
    let key = PrivateKey::from_seed(&wallet.seed, wallet.index);
    let journal = s.dir().join("pass-lib").join("journal.json");
    let mut config = PayerConfig::new(s.devnet.rpc_url(), key, journal).with_pass("hour");
    config.max_raw = XNO / 100;
    let payer = Payer::new(config).expect("payer");
    let get = |path: &str| payer.fetch(RequestSpec::get(s.url(path)));

    let r = get("/passes/lib-0").await.expect("buys");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(r
        .pass
        .as_ref()
        .is_some_and(|p| p.bought && p.group == "passes"));
    let (balance, blocks) = ledger_view(&s, &wallet.account());
    let pays = filter_calls(&s, "/v1/pay").await;
    for i in 1..=10 {
        let r = get(&format!("/passes/lib-{i}")).await.expect("on the pass");
        assert_eq!(r.status, 200);
        assert!(r.pass.as_ref().is_some_and(|p| !p.bought), "request {i}");
    }
    assert_eq!(ledger_view(&s, &wallet.account()), (balance, blocks));
    assert_eq!(filter_calls(&s, "/v1/pay").await, pays);

    // Another group's route refuses the token (wrong group): its own pass is bought and kept
    // beside the first.
    let r = get("/other-passes/lib")
        .await
        .expect("buys the other group's");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let other = r.pass.clone().expect("a pass");
    assert!(other.bought);
    assert_ne!(other.group, "passes");
    assert_eq!(
        ledger_view(&s, &wallet.account()),
        (balance - PASS_PRICE, blocks + 1)
    );
    assert_eq!(payer.journal().all_passes().expect("journal").len(), 2);
    // Back on the first group: the newest token (the other group's) is refused, the group's
    // own goes next. No purchase.
    let r = get("/passes/lib-back").await.expect("on the first pass");
    assert_eq!(r.status, 200);
    assert!(r
        .pass
        .as_ref()
        .is_some_and(|p| !p.bought && p.group == "passes"));
    assert_eq!(
        ledger_view(&s, &wallet.account()),
        (balance - PASS_PRICE, blocks + 1)
    );
    assert!(s.gate(0).counter("pass_refused_wrong_group").await >= 1);
}
