//! Operating nanogate (docs/operate.md), end to end: real Envoy with the filter, the real
//! sidecar (SQLite), the devnet and a recording upstream, shipped settlement defaults. A
//! scripted set of payments — served, redeemed after a failed upstream, left redeemable, and
//! owed once every redemption failed — shows up with matching figures in `nanogate-admin
//! payments`, `revenue` and `owed` (table, JSON, CSV), in the admin API, and in the dashboard
//! page rendered by headless Chromium, which shows nothing without the token.

use nanogate_protocol::nano::{BlockHash, PublicKey};
use nanogate_tests::browser::{Browser, Page};
use nanogate_tests::procs::workspace_bin;
use nanogate_tests::stack::{Stack, StackConfig, PRICE_RAW};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "e2e-operate-admin-token-0123456789";

/// What the script left in the ledger: hash → (state, route path).
struct Script {
    payments: BTreeMap<String, (&'static str, &'static str)>,
}

impl Script {
    fn raw_of(&self, state: &str) -> u128 {
        self.count_of(state) as u128 * PRICE_RAW
    }

    fn count_of(&self, state: &str) -> usize {
        self.payments.values().filter(|(s, _)| *s == state).count()
    }
}

/// Presents `header` once more until the answer is not "still in flight" (bounded).
async fn present(s: &Stack, path: &str, header: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.get(path, &[("payment-signature", header)]).await;
        // A 503 here is the upstream's own answer (the script's failures): only a settlement
        // still in flight is retried.
        let in_flight = r.status == 402
            && matches!(
                r.reason().as_deref(),
                Some("duplicate_settlement" | "duplicate_frontier")
            );
        if !in_flight || Instant::now() > deadline {
            return r.status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn row_state(s: &Stack, hash: &BlockHash) -> Option<String> {
    let v: Value = admin_get(s, "/v1/admin/payments?limit=1000").await.ok()?;
    v["payments"]
        .as_array()?
        .iter()
        .find(|p| p["hash"] == json!(hash.to_hex()))
        .and_then(|p| p["state"].as_str().map(str::to_owned))
}

async fn wait_state(s: &Stack, hash: &BlockHash, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = row_state(s, hash).await;
        if now.as_deref() == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never became {state}: {now:?}\n{}",
            hash.to_hex(),
            s.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn admin_get(s: &Stack, path_and_query: &str) -> Result<Value, String> {
    let r = reqwest::Client::new()
        .get(format!("{}{path_and_query}", s.gate(0).sidecar.base_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("{path_and_query}: {}", r.status()));
    }
    r.json().await.map_err(|e| e.to_string())
}

/// Served twice on one route and once on another (after a failed first try: redeemed), left
/// redeemable once, and owed once (the upstream failed on every redemption).
async fn run_script(s: &Stack) -> Script {
    let w = s.wallet();
    let mut payments = BTreeMap::new();
    for path in ["/paid/op/alpha", "/paid/op/alpha"] {
        let (header, block) = s.pay_header(0, path, &w).await;
        assert_eq!(present(s, path, &header).await, 200, "{}", s.diagnostics());
        wait_state(s, &block.hash(), "served").await;
        payments.insert(block.hash().to_hex(), ("served", path));
    }
    // Redeemed: the upstream fails once, the same payment is presented again and served.
    let path = "/paid/op/beta";
    let (header, block) = s.pay_header(0, path, &w).await;
    s.upstream.fail_next(path, 503);
    assert_eq!(present(s, path, &header).await, 503);
    wait_state(s, &block.hash(), "redeemable").await;
    assert_eq!(present(s, path, &header).await, 200, "{}", s.diagnostics());
    wait_state(s, &block.hash(), "served").await;
    payments.insert(block.hash().to_hex(), ("served", path));
    // Left redeemable: the upstream failed, the payer has not come back (yet).
    let path = "/paid/op/gamma";
    let (header, block) = s.pay_header(0, path, &w).await;
    s.upstream.fail_next(path, 503);
    assert_eq!(present(s, path, &header).await, 503);
    wait_state(s, &block.hash(), "redeemable").await;
    payments.insert(block.hash().to_hex(), ("redeemable", path));
    // Owed: the upstream fails on the first try and on both redemptions (the shipped
    // `settlement.max_redemptions` is 2).
    let path = "/paid/op/status/503";
    let (header, block) = s.pay_header(0, path, &w).await;
    for _ in 0..3 {
        assert_eq!(present(s, path, &header).await, 503);
    }
    wait_state(s, &block.hash(), "owed").await;
    payments.insert(block.hash().to_hex(), ("owed", path));
    Script { payments }
}

fn admin(s: &Stack, args: &[&str]) -> Output {
    Command::new(workspace_bin("nanogate-admin"))
        .args(args)
        .env("NANOGATE_ADMIN_URL", s.gate(0).sidecar.base_url())
        .env("NANOGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("NANOGATE_ADMIN_TOKEN_FILE")
        .output()
        .expect("nanogate-admin runs")
}

fn admin_json(s: &Stack, args: &[&str]) -> Value {
    let out = admin(s, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nanogate-admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nanogate-admin {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn raw(v: &Value) -> u128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a raw amount: {v}"))
}

fn route(path: &str) -> String {
    Stack::resource(path)
}

fn check_cli(s: &Stack, script: &Script) {
    // payments: every page (page size 1 forces one request per payment), JSON.
    let listed = admin_json(s, &["--json", "payments", "--page-size", "1"]);
    let listed = listed.as_array().expect("a JSON array");
    let by_hash: BTreeMap<String, &Value> = listed
        .iter()
        .map(|p| (p["hash"].as_str().unwrap_or_default().to_owned(), p))
        .collect();
    for (hash, (state, path)) in &script.payments {
        let p = by_hash
            .get(hash)
            .unwrap_or_else(|| panic!("{hash} not listed"));
        assert_eq!(p["state"], json!(state), "{p}");
        assert_eq!(p["resource"], json!(route(path)), "{p}");
        assert_eq!(raw(&p["amount"]), PRICE_RAW);
    }
    assert_eq!(
        listed.len(),
        script.payments.len(),
        "only the script's payments"
    );
    let owed = admin_json(s, &["payments", "--state", "owed", "--json"]);
    assert_eq!(owed.as_array().map(Vec::len), Some(script.count_of("owed")));

    // CSV: a header and one line per payment, amounts in raw and XNO.
    let out = admin(s, &["payments", "--csv", "--page-size", "2"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "hash,state,reason,amount_raw,amount_xno,payer,pay_to,route,mechanism,settled_at,\
             updated_at,redemptions"
        )
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), script.payments.len(), "{text}");
    for (hash, (state, _)) in &script.payments {
        let line = rows
            .iter()
            .find(|l| l.starts_with(hash.as_str()))
            .unwrap_or_else(|| panic!("{hash} not in the CSV:\n{text}"));
        assert!(line.starts_with(&format!("{hash},{state},")), "{line}");
        assert!(line.contains(&format!(",{PRICE_RAW},0.001,")), "{line}");
    }

    // revenue: served payments per route, and the total, in raw and XNO.
    let rev = admin_json(s, &["revenue", "--by", "route", "--json"]);
    assert_eq!(rev["state"], json!("served"));
    assert_eq!(raw(&rev["raw"]), script.raw_of("served"), "{rev}");
    assert_eq!(rev["count"], json!(script.count_of("served")));
    let mut expect: BTreeMap<String, u128> = BTreeMap::new();
    for (state, path) in script.payments.values() {
        if *state == "served" {
            *expect.entry(route(path)).or_default() += PRICE_RAW;
        }
    }
    let got: BTreeMap<String, u128> = rev["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            assert!(r.get("day").is_none() && r.get("payTo").is_none(), "{r}");
            (
                r["route"].as_str().unwrap_or_default().to_owned(),
                raw(&r["raw"]),
            )
        })
        .collect();
    assert_eq!(got, expect);
    // Per payee and per day: one payee, one day (the script ran in well under a day; a run
    // crossing midnight UTC would show two day rows that still add up).
    let by_payee = admin_json(s, &["revenue", "--by", "payee", "--json"]);
    let payee_rows = by_payee["rows"].as_array().expect("rows");
    assert_eq!(payee_rows.len(), 1, "{by_payee}");
    assert_eq!(
        payee_rows[0]["payTo"],
        json!(s.payee.to_address()),
        "{by_payee}"
    );
    assert_eq!(raw(&payee_rows[0]["raw"]), script.raw_of("served"));
    let by_day = admin_json(s, &["revenue", "--by", "day", "--json"]);
    let day_sum: u128 = by_day["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| raw(&r["raw"]))
        .sum();
    assert_eq!(day_sum, script.raw_of("served"));
    let owed_rev = admin_json(s, &["revenue", "--state", "owed", "--json"]);
    assert_eq!(raw(&owed_rev["raw"]), script.raw_of("owed"));
    // A window that excludes everything.
    let empty = admin_json(s, &["revenue", "--until", "2000-01-01", "--json"]);
    assert_eq!(empty["count"], json!(0));

    // owed: the payments and the total per payer.
    let owed = admin_json(s, &["owed", "--json"]);
    assert_eq!(owed["count"], json!(script.count_of("owed")));
    assert_eq!(raw(&owed["raw"]), script.raw_of("owed"));
    let payers = owed["payers"].as_array().expect("payers");
    assert_eq!(payers.len(), 1);
    assert!(PublicKey::from_address(payers[0]["payer"].as_str().unwrap_or("")).is_ok());

    // Tables for people: the totals line says the same.
    let out = admin(s, &["revenue"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "total (served): {} payments, {} XNO",
            script.count_of("served"),
            nanogate_protocol::nano::format_xno(script.raw_of("served"))
        )),
        "{text}"
    );
    assert!(text.contains(&route("/paid/op/alpha")), "{text}");
}

fn check_exit_codes(s: &Stack) {
    let code = |cmd: &mut Command| cmd.output().expect("runs").status.code();
    let bin = workspace_bin("nanogate-admin");
    let base = s.gate(0).sidecar.base_url();
    // A wrong token: 3, and the error names the refusal.
    let out = Command::new(&bin)
        .args([
            "--url",
            &base,
            "--token",
            "wrong-token-0123456789",
            "revenue",
        ])
        .env_remove("NANOGATE_ADMIN_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // No token at all: usage (2), before any request.
    assert_eq!(
        code(
            Command::new(&bin)
                .args(["--url", &base, "owed"])
                .env_remove("NANOGATE_ADMIN_TOKEN")
                .env_remove("NANOGATE_ADMIN_TOKEN_FILE")
        ),
        Some(2)
    );
    // A bad option: usage (2).
    assert_eq!(
        code(Command::new(&bin).args([
            "--url",
            &base,
            "--token",
            ADMIN_TOKEN,
            "payments",
            "--since",
            "yesterday"
        ])),
        Some(2)
    );
    // A state the sidecar does not know: it answers 400, usage (2).
    assert_eq!(
        code(Command::new(&bin).args([
            "--url",
            &base,
            "--token",
            ADMIN_TOKEN,
            "payments",
            "--state",
            "lost"
        ])),
        Some(2)
    );
    // Nothing listening: unreachable (4). Port 9 (discard) is closed on the test machine's
    // loopback unless something serves it; a freshly bound and dropped port is surer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    assert_eq!(
        code(Command::new(&bin).args([
            "--url",
            &format!("http://{closed}"),
            "--token",
            ADMIN_TOKEN,
            "payments"
        ])),
        Some(4)
    );
    // The token from a file.
    let file = s.dir().join("admin-token");
    std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).expect("token file");
    let out = Command::new(&bin)
        .args(["--url", &base, "owed", "--json"])
        .env_remove("NANOGATE_ADMIN_TOKEN")
        .env("NANOGATE_ADMIN_TOKEN_FILE", &file)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn navigate(page: &mut Page, url: &str) {
    // A new document each time (a change of fragment alone would not reload the page).
    page.call("Page.navigate", json!({"url": "about:blank"}))
        .await;
    page.call("Page.navigate", json!({"url": url})).await;
}

async fn body_state(page: &mut Page, want: &str) -> bool {
    page.wait_for(
        "document.body && document.body.dataset.state",
        &json!(want),
        Duration::from_secs(20),
    )
    .await
}

async fn check_dashboard(s: &Stack, script: &Script) {
    let mut browser = Browser::start();
    let port = browser.port().await;
    let mut page = Page::open(port).await;
    let dashboard = format!("{}/dashboard", s.gate(0).sidecar.base_url());
    let figures = "document.querySelectorAll('#revenue tbody tr, #recent tbody tr, \
                   #owed tbody tr, #totals tbody tr').length";

    // No token: the page asks for one and shows no figure.
    navigate(&mut page, &dashboard).await;
    assert!(
        body_state(&mut page, "login").await,
        "{}",
        page.eval("document.body.outerHTML").await
    );
    assert_eq!(page.eval(figures).await, json!(0));
    // A wrong token: refused by the API, still no figure, and the token is forgotten.
    navigate(
        &mut page,
        &format!("{dashboard}#token=wrong-token-0123456789"),
    )
    .await;
    assert!(
        body_state(&mut page, "refused").await,
        "{}",
        page.eval("document.body.outerHTML").await
    );
    assert_eq!(page.eval(figures).await, json!(0));
    assert_eq!(
        page.eval("location.hash").await,
        json!(""),
        "the token leaves the address bar"
    );

    // The right token, in the fragment.
    navigate(&mut page, &format!("{dashboard}#token={ADMIN_TOKEN}")).await;
    assert!(
        body_state(&mut page, "ready").await,
        "{}\n{}",
        page.eval("document.body.outerHTML").await,
        s.diagnostics()
    );
    assert_eq!(page.eval("location.hash").await, json!(""));

    // Revenue per route and its total match the admin API.
    let api = admin_get(s, "/v1/admin/revenue").await.expect("revenue");
    let total = page
        .eval("document.getElementById('revenue-total').dataset.raw")
        .await;
    assert_eq!(raw(&total), raw(&api["raw"]));
    assert_eq!(raw(&total), script.raw_of("served"));
    let per_route = page
        .eval(
            "Object.fromEntries([...document.querySelectorAll('#revenue tbody tr')]\
             .map(tr => [tr.dataset.route, tr.dataset.raw]))",
        )
        .await;
    let mut expect = serde_json::Map::new();
    for (state, path) in script.payments.values() {
        if *state == "served" {
            let e = expect.entry(route(path)).or_insert(json!("0"));
            *e = json!((raw(e) + PRICE_RAW).to_string());
        }
    }
    assert_eq!(per_route, Value::Object(expect));
    // The chart draws each route's revenue: its bars add up to the same figures.
    let charted = page
        .eval(
            "[...document.querySelectorAll('#chart rect')].reduce((a, r) => \
             (a + BigInt(r.dataset.raw)), 0n).toString()",
        )
        .await;
    assert_eq!(raw(&charted), script.raw_of("served"));

    // Recent payments with their states; owed payments and their total.
    let recent = page
        .eval(
            "Object.fromEntries([...document.querySelectorAll('#recent tbody tr')]\
             .map(tr => [tr.dataset.hash, tr.dataset.state]))",
        )
        .await;
    let want: serde_json::Map<String, Value> = script
        .payments
        .iter()
        .map(|(h, (st, _))| (h.clone(), json!(st)))
        .collect();
    assert_eq!(recent, Value::Object(want));
    let owed = page
        .eval("document.getElementById('owed-total').dataset.raw")
        .await;
    assert_eq!(raw(&owed), script.raw_of("owed"));
    // Per-state totals, pools and health as the overview says.
    let overview = admin_get(s, "/v1/admin/overview").await.expect("overview");
    for t in overview["payments"].as_array().expect("payments") {
        let st = t["state"].as_str().unwrap_or_default();
        let shown = page
            .eval(&format!(
                "document.querySelector('#totals tr[data-state=\"{st}\"]').dataset.raw"
            ))
            .await;
        assert_eq!(shown, t["raw"], "{st}");
    }
    assert_eq!(
        page.eval("document.getElementById('health-store').dataset.up")
            .await,
        json!("true")
    );
    assert_eq!(
        page.eval("document.getElementById('health-node').dataset.up")
            .await,
        json!("true")
    );
    assert_eq!(
        page.eval("document.getElementById('pools').dataset.accounts")
            .await,
        json!(overview["pools"]["accountsInUse"].to_string())
    );
}

#[tokio::test]
async fn scripted_payments_show_up_alike_in_the_cli_the_api_and_the_dashboard() {
    let s = Stack::start(StackConfig {
        max_wait_secs: 8,
        sidecar_timeout_ms: Some(10_000),
        wallets: 1,
        sidecar_env: vec![(
            "NANOGATE_FACILITATOR_TOKEN".to_owned(),
            ADMIN_TOKEN.to_owned(),
        )],
        ..StackConfig::default()
    })
    .await;
    let script = run_script(&s).await;
    assert_eq!(script.count_of("served"), 3);
    check_cli(&s, &script);
    check_exit_codes(&s);
    check_dashboard(&s, &script).await;
    // The admin API refuses every figure without the token; the page itself holds none.
    let base = s.gate(0).sidecar.base_url();
    for path in [
        "/v1/admin/revenue",
        "/v1/admin/overview",
        "/v1/admin/payments",
    ] {
        let r = reqwest::get(format!("{base}{path}")).await.expect("answer");
        assert_eq!(r.status(), 401, "{path}");
    }
    let page = reqwest::get(format!("{base}/dashboard"))
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(!html.contains(ADMIN_TOKEN));
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(
            !html.contains(external),
            "the page loads nothing from elsewhere: {external}"
        );
    }
}
