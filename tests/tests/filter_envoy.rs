//! The filter in real Envoy 1.40, against a fake sidecar that implements
//! `docs/filter-sidecar.md` (challenge key, `/v1/pay` answering on demand, `/v1/outcome` and
//! `/v1/outcomes` recording) and a recording upstream. The real sidecar + devnet suite lives elsewhere.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nanogate_protocol::challenge::{self, ChallengeKey, ChallengeTerms, Mechanism};
use nanogate_protocol::nano::{parse_raw, PublicKey};
use nanogate_protocol::x402::{decode_header, encode_header, PaymentRequired, SettlementResponse};
use nanogate_tests::envoy::{self, Envoy};
use nanogate_tests::ports::{bind_local, free_port};
use nanogate_tests::upstream::Upstream;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "test-secret-0123456789abcdef";
const NETWORK: &str = "nano:devnet";
const MASTER: &[u8] = b"fake sidecar master secret for filter tests";
const KEY_ID: u64 = 42;
const SIDECAR_TIMEOUT_MS: u64 = 1500;
/// The payee of the conformance vectors' signed send.
const PAY_TO: &str = "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc";
/// 0.001 XNO, the demo bootstrap's `/paid/` price.
const PAID_PRICE_RAW: &str = "1000000000000000000000000000";

// ---------------------------------------------------------------------------------------------
// Fake sidecar
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum PayMode {
    Admit,
    Reject(&'static str, u16),
    Unavailable(u32),
    Slow,
    NoVerdictHeader,
}

#[derive(Default)]
struct FakeState {
    mode: Mutex<Option<PayMode>>,
    /// Key id served, and seconds from now to its `notAfter` (defaults: KEY_ID, one hour).
    key: Mutex<Option<(u64, u64)>>,
    pays: Mutex<Vec<Value>>,
    outcomes: Mutex<Vec<Value>>,
    key_fetches: Mutex<u32>,
    unauthorized: Mutex<u32>,
    /// `POST /v1/sessions` bodies.
    session_requests: Mutex<Vec<Value>>,
}

struct FakeSidecar {
    port: u16,
    state: Arc<FakeState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeSidecar {
    async fn start() -> FakeSidecar {
        let (listener, addr) = bind_local().await;
        let state = Arc::new(FakeState::default());
        *lock(&state.mode) = Some(PayMode::Admit);
        let app = axum::Router::new()
            .route("/v1/challenge-key", get(challenge_key))
            .route("/v1/pay", post(pay))
            .route("/v1/outcome", post(outcome))
            .route("/v1/outcomes", post(outcome_batch))
            .route("/v1/sessions", post(sessions))
            .with_state(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeSidecar {
            port: addr.port(),
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn set_key(&self, key_id: u64, lifetime_secs: u64) {
        *lock(&self.state.key) = Some((key_id, lifetime_secs));
    }

    fn set_mode(&self, mode: PayMode) {
        *lock(&self.state.mode) = Some(mode);
    }

    fn pays(&self) -> Vec<Value> {
        lock(&self.state.pays).clone()
    }

    fn outcomes(&self) -> Vec<Value> {
        lock(&self.state.outcomes).clone()
    }

    /// Takes the sidecar down: listener closed, idle connections closed.
    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    let ok = headers
        .get("x-nanogate-secret")
        .is_some_and(|v| v.as_bytes() == SECRET.as_bytes());
    if !ok {
        *lock(&state.unauthorized) += 1;
    }
    ok
}

async fn challenge_key(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    *lock(&state.key_fetches) += 1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (key_id, lifetime) = lock(&state.key).unwrap_or((KEY_ID, 3600));
    let key = ChallengeKey::derive(MASTER, key_id);
    axum::Json(json!({"keyId": key_id, "key": key.to_hex(), "notAfter": now + lifetime}))
        .into_response()
}

fn verdict(body: Value) -> Response {
    (
        StatusCode::OK,
        [
            ("x-nanogate-verdict", "1"),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Re-checks the challenge binding from the terms the filter sent, as the real sidecar does.
fn binding_verifies(body: &Value) -> bool {
    let r = &body["requirements"];
    let (Some(extra), Some(resource), Some(pay_to), Some(amount)) = (
        r["extra"].as_object(),
        body["resource"].as_str(),
        r["payTo"]
            .as_str()
            .and_then(|a| PublicKey::from_address(a).ok()),
        r["amount"].as_str().and_then(|a| parse_raw(a).ok()),
    ) else {
        return false;
    };
    let Ok((stamp, tag)) = challenge::read_extra(extra) else {
        return false;
    };
    let terms = ChallengeTerms {
        network: r["network"].as_str().unwrap_or(""),
        scheme: r["scheme"].as_str().unwrap_or(""),
        asset: r["asset"].as_str().unwrap_or(""),
        pay_to,
        amount,
        resource,
        mechanism: Mechanism::SignedBlock,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    challenge::verify(
        &ChallengeKey::derive(MASTER, stamp.key_id),
        &terms,
        &stamp,
        &tag,
        now,
    )
    .is_ok()
}

/// The fake sidecar's admission token for its `n`th `/v1/pay` (hex, as the real one's).
fn admission_token(n: usize) -> String {
    format!("{n:064x}")
}

async fn pay(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&state.pays).push(body.clone());
    if !binding_verifies(&body) {
        return verdict(json!({"verdict": "reject", "reason": "invalid_challenge", "status": 402}));
    }
    let mode = lock(&state.mode).clone().unwrap_or(PayMode::Admit);
    match mode {
        PayMode::Admit => {
            let n = lock(&state.pays).len();
            let receipt = format!("receipt-{n}");
            let settlement = SettlementResponse::success(
                "0D0E28DD87213CFE3C09390D74556439563FFA1337CAE23EE90ACD5A8B1AA7D3".into(),
                NETWORK.into(),
                Some("nano_3e3j5tkog48pnny9dmfzj1r16pg8t1e76dz5tmac6iq689wyjfpiij4txtdo".into()),
            );
            verdict(json!({
                "verdict": "admit", "receipt": receipt,
                "transaction": settlement.transaction, "payer": settlement.payer,
                "paymentResponse": encode_header(&settlement),
                "admissionToken": admission_token(n),
            }))
        }
        PayMode::Reject(reason, status) => verdict(
            json!({"verdict": "reject", "reason": reason, "message": "fake says no", "status": status}),
        ),
        PayMode::Unavailable(retry) => verdict(json!({
            "verdict": "unavailable", "reason": "ledger_unavailable",
            "message": "no node", "retryAfter": retry
        })),
        PayMode::Slow => {
            tokio::time::sleep(Duration::from_millis(SIDECAR_TIMEOUT_MS + 1500)).await;
            verdict(json!({"verdict": "admit", "receipt": "late"}))
        }
        PayMode::NoVerdictHeader => (
            StatusCode::OK,
            json!({"verdict": "admit", "receipt": "forged"}).to_string(),
        )
            .into_response(),
    }
}

/// Issues `count` sessions as the real sidecar does (payee `payTo[0]`, amount = price + a
/// small tag, MAC'd for the scope with `Mechanism::TaggedSession`).
async fn sessions(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&state.session_requests).push(req.clone());
    let (Some(price), Some(pay_to), Some(scope), Some(validity), Some(count)) = (
        req["price"].as_str().and_then(|p| parse_raw(p).ok()),
        req["payTo"][0]
            .as_str()
            .and_then(|a| PublicKey::from_address(a).ok()),
        req["scope"].as_str(),
        req["validitySeconds"].as_u64(),
        req["count"].as_u64(),
    ) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (key_id, _) = lock(&state.key).unwrap_or((KEY_ID, 3600));
    let key = ChallengeKey::derive(MASTER, key_id);
    let out: Vec<Value> = (0..count)
        .map(|_| {
            let id: [u8; 16] = rand::random();
            let tag = u128::from(rand::random::<u8>()) + 1;
            let stamp = challenge::ChallengeStamp {
                valid_before: now + validity,
                nonce: id,
                key_id,
            };
            let terms = ChallengeTerms {
                network: NETWORK,
                scheme: "exact",
                asset: "XNO",
                pay_to,
                amount: price + tag,
                resource: scope,
                mechanism: Mechanism::TaggedSession,
            };
            json!({
                "id": nanogate_protocol::hex::encode_lower(&id), "payTo": pay_to.to_address(),
                "amount": (price + tag).to_string(), "tag": tag.to_string(),
                "validBefore": now + validity, "keyId": key_id,
                "mac": nanogate_protocol::hex::encode_lower(&challenge::mac(&key, &terms, &stamp)),
            })
        })
        .collect();
    axum::Json(json!({ "sessions": out })).into_response()
}

async fn outcome(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&state.outcomes).push(body);
    axum::Json(json!({"ok": true})).into_response()
}

/// A VM's batch: each entry is recorded as a single report would be.
async fn outcome_batch(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let entries = body["outcomes"].as_array().cloned().unwrap_or_default();
    lock(&state.outcomes).extend(entries);
    axum::Json(json!({"recorded": 0, "notAdmitted": 0, "refused": 0})).into_response()
}

// ---------------------------------------------------------------------------------------------
// Test stand: Envoy + filter + fake sidecar + upstream
// ---------------------------------------------------------------------------------------------

struct Stand {
    envoy: Envoy,
    upstream: Upstream,
    sidecar: FakeSidecar,
    listener: u16,
    http: reqwest::Client,
}

fn bootstrap(listener: u16, admin: u16, upstream: u16, sidecar: u16) -> String {
    envoy::render(
        &envoy::template("envoy.yaml"),
        &[
            ("LISTENER_PORT", listener.to_string()),
            ("ADMIN_PORT", admin.to_string()),
            ("UPSTREAM_PORT", upstream.to_string()),
            ("SIDECAR_PORT", sidecar.to_string()),
            ("FILTER_WASM", envoy::filter_wasm().display().to_string()),
            ("SIDECAR_TIMEOUT_MS", SIDECAR_TIMEOUT_MS.to_string()),
            ("NETWORK", NETWORK.to_owned()),
            ("PAY_TO", PAY_TO.to_owned()),
        ],
    )
    .expect("envoy.yaml renders")
}

/// Envoy with the filter secret in its environment, as the shipped bootstraps expect.
async fn start_envoy(config: &str, admin: u16) -> Envoy {
    Envoy::start_with_env(config, admin, &[(envoy::FILTER_SECRET_ENV, SECRET)]).await
}

impl Stand {
    async fn start() -> Stand {
        Stand::start_with(|_| {}).await
    }

    /// Starts the stand after `prepare` has set up the fake sidecar.
    async fn start_with(prepare: impl FnOnce(&FakeSidecar)) -> Stand {
        let upstream = Upstream::start().await;
        let sidecar = FakeSidecar::start().await;
        prepare(&sidecar);
        let (listener, admin) = (free_port(), free_port());
        let config = bootstrap(listener, admin, upstream.port, sidecar.port);
        let envoy = start_envoy(&config, admin).await;
        let stand = Stand {
            envoy,
            upstream,
            sidecar,
            listener,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client"),
        };
        stand.wait_for_key().await;
        stand
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listener)
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.send().await.expect("request through envoy")
    }

    /// Paid routes answer 503 until the filter holds the challenge key.
    async fn wait_for_key(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get("/paid/warmup", &[]).await;
            if r.status() == 402 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "filter never got the challenge key (last status {}):\n{}",
                r.status(),
                self.envoy.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A fresh 402 challenge for `path`.
    async fn challenge(&self, path: &str) -> PaymentRequired {
        let r = self.get(path, &[]).await;
        assert_eq!(r.status(), 402);
        payment_required(r).await.0
    }

    /// A PAYMENT-SIGNATURE value answering `path`'s challenge with the vectors' signed send.
    async fn payment_for(&self, path: &str) -> String {
        payment_answering(&self.challenge(path).await)
    }

    async fn counter(&self, name: &str) -> u64 {
        self.envoy
            .counter(&format!("wasmcustom.nanogate_{name}"))
            .await
    }

    /// Waits until the fake sidecar recorded `n` outcomes.
    async fn outcomes(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let o = self.sidecar.outcomes();
            if o.len() >= n || Instant::now() > deadline {
                return o;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A PAYMENT-SIGNATURE value answering `pr`'s offer with the vectors' signed send.
fn payment_answering(pr: &PaymentRequired) -> String {
    let mut payment =
        nanogate_tests::vectors("x402-vectors.json")["payment_payload_v2"]["object"].clone();
    payment["accepted"] = serde_json::to_value(&pr.accepts[0]).expect("accepts[0]");
    payment["resource"] = serde_json::to_value(&pr.resource).expect("resource");
    encode_header(&payment)
}

/// Decodes a 402's PAYMENT-REQUIRED header and checks the body carries the same JSON.
async fn payment_required(r: reqwest::Response) -> (PaymentRequired, HeaderMap) {
    let headers = r.headers().clone();
    let header = headers
        .get("payment-required")
        .and_then(|v| v.to_str().ok())
        .expect("PAYMENT-REQUIRED header")
        .to_owned();
    let body = r.bytes().await.expect("body");
    let from_header: PaymentRequired = decode_header(&header, 64 * 1024).expect("header decodes");
    let from_body: PaymentRequired = serde_json::from_slice(&body).expect("body is the JSON");
    assert_eq!(
        from_header, from_body,
        "header and body carry the same PaymentRequired"
    );
    (from_header, headers)
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn demo_bootstrap_passes_envoy_validate() {
    let ok = bootstrap(free_port(), free_port(), free_port(), free_port());
    if let Err(out) = envoy::validate(&ok) {
        panic!("envoy --mode validate refused envoy/envoy.yaml:\n{out}");
    }
}

#[test]
fn invalid_plugin_configuration_stops_envoy_with_one_clear_line() {
    let good = bootstrap(free_port(), free_port(), free_port(), free_port());
    let bad = good.replacen("\"price\": \"0.001\"", "\"price\": \"0.001 XNO\"", 1);
    assert_ne!(good, bad);
    let out = envoy::validate(&bad).expect_err("a bad price must not validate");
    assert!(
        out.contains("nanogate: invalid plugin configuration: routes[1].price"),
        "{out}"
    );
    let unknown = good.replacen("\"retryAfterSeconds\"", "\"retryAfterSecs\"", 1);
    let out = envoy::validate(&unknown).expect_err("an unknown setting must not validate");
    assert!(out.contains("retryAfterSecs: unknown setting"), "{out}");
    assert!(!out.contains(SECRET), "the secret never appears in logs");
}

#[tokio::test]
async fn free_and_unmatched_routes_pass_untouched() {
    let s = Stand::start().await;
    let pays_before = s.sidecar.pays().len();
    for path in ["/paid/free", "/public/page", "/"] {
        let r = s
            .get(path, &[("payment-signature", "kept-on-free-routes")])
            .await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(&r, "payment-required").is_none());
    }
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|r| r.header("payment-signature") == Some("kept-on-free-routes")));
    assert_eq!(s.sidecar.pays().len(), pays_before, "no sidecar call");
}

#[tokio::test]
async fn unpaid_request_gets_a_decodable_402_for_the_configured_price_without_a_sidecar_call() {
    let s = Stand::start().await;
    let issued_before = s.counter("challenges_issued").await;
    let r = s.get("/paid/report?x=1", &[]).await;
    assert_eq!(r.status(), 402);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    let expose = header(&r, "access-control-expose-headers").unwrap_or_default();
    assert!(expose.contains("PAYMENT-REQUIRED") && expose.contains("PAYMENT-RESPONSE"));
    let (pr, _) = payment_required(r).await;
    assert_eq!(pr.x402_version, 2);
    assert_eq!(
        pr.resource.url,
        format!("http://127.0.0.1:{}/paid/report", s.listener)
    );
    assert_eq!(
        pr.resource.description.as_deref(),
        Some("Paid demo resource")
    );
    let a = &pr.accepts[0];
    assert_eq!(a.amount, PAID_PRICE_RAW);
    assert_eq!(a.pay_to, PAY_TO);
    assert_eq!(a.network, NETWORK);
    assert_eq!((a.scheme.as_str(), a.asset.as_str()), ("exact", "XNO"));
    let (stamp, _) = challenge::read_extra(&a.extra).expect("challenge binding in extra");
    assert_eq!(stamp.key_id, KEY_ID);
    assert!(
        s.sidecar.pays().is_empty(),
        "no /v1/pay call on the 402 path"
    );
    assert!(s.upstream.requests().is_empty());
    assert_eq!(*lock(&s.sidecar.state.unauthorized), 0);
    // The filter adds its 402s to the counter once per tick (1 s), not per request.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.counter("challenges_issued").await <= issued_before {
        assert!(Instant::now() < deadline, "challenges_issued never moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn paid_request_is_admitted_forwarded_without_payment_headers_and_receipted() {
    let s = Stand::start().await;
    let payment = s.payment_for("/paid/report").await;
    let r = s
        .get(
            "/paid/report",
            &[("PAYMENT-SIGNATURE", &payment), ("X-PAYMENT", &payment)],
        )
        .await;
    assert_eq!(r.status(), 200);
    let receipt = header(&r, "payment-response").expect("PAYMENT-RESPONSE");
    let settlement: SettlementResponse = decode_header(&receipt, 8192).expect("receipt decodes");
    assert!(settlement.success);
    assert_eq!(settlement.network, NETWORK);
    assert!(header(&r, "access-control-expose-headers")
        .unwrap_or_default()
        .contains("PAYMENT-RESPONSE"));
    // The upstream saw the request, but not the payment.
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/paid/report");
    assert_eq!(seen[0].header("payment-signature"), None);
    assert_eq!(seen[0].header("x-payment"), None);
    // The sidecar got our terms and the payment.
    let pays = s.sidecar.pays();
    assert_eq!(pays.len(), 1);
    assert_eq!(pays[0]["requirements"]["amount"], PAID_PRICE_RAW);
    assert_eq!(pays[0]["requirements"]["payTo"], PAY_TO);
    // The payment header as the client sent it, decoded by the sidecar.
    assert_eq!(pays[0]["paymentHeader"], payment.as_str());
    let forwarded = nanogate_protocol::x402::decode_payment_json(
        pays[0]["paymentHeader"].as_str().unwrap_or_default(),
        nanogate_protocol::x402::MAX_HEADER_BYTES,
    )
    .expect("the forwarded header decodes");
    assert_eq!(forwarded["payload"]["block"]["type"], "state");
    // The outcome is reported after the response, with the admission's token, which
    // reached neither the upstream nor the client.
    let outcomes = s.outcomes(1).await;
    assert_eq!(
        outcomes,
        vec![json!({"receipt": "receipt-1", "status": 200, "admissionToken": admission_token(1)})]
    );
    let token = admission_token(1);
    assert!(!seen[0].headers.iter().any(|(_, v)| v.contains(&token)));
    assert!(!r
        .headers()
        .values()
        .any(|v| v.to_str().unwrap_or("").contains(&token)));
    assert_eq!(s.counter("payments_admitted").await, 1);
    assert_eq!(s.counter("outcomes_reported").await, 1);
}

/// The shipped bootstrap takes the filter secret from Envoy's environment: the sidecar gets it
/// (the fake sidecar answers only with it, so a payment goes through), and neither the
/// bootstrap nor Envoy's admin `/config_dump` ever holds it.
#[tokio::test]
async fn secret_from_the_environment_pays_and_never_shows_in_the_config_dump() {
    let s = Stand::start().await;
    let payment = s.payment_for("/paid/env-secret").await;
    let r = s
        .get("/paid/env-secret", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.sidecar.pays().len(), 1);
    let dump = s.envoy.config_dump().await;
    assert!(
        dump.contains("secretEnv"),
        "the plugin config is in the dump"
    );
    assert!(dump.contains(envoy::FILTER_SECRET_ENV));
    assert!(
        !dump.contains(SECRET),
        "the filter secret is in /config_dump"
    );
    let on_disk = std::fs::read_to_string(s.envoy.dir().join("envoy.yaml")).expect("bootstrap");
    assert!(
        !on_disk.contains(SECRET),
        "the filter secret is in the bootstrap"
    );
    // No warning about a literal secret: the shipped configuration does not have one.
    assert!(!s.envoy.log().contains("sidecar.secret is written"));
}

#[tokio::test]
async fn upstream_failure_is_reported_as_the_outcome() {
    let s = Stand::start().await;
    let payment = s.payment_for("/paid/status/503").await;
    let r = s
        .get("/paid/status/503", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 503);
    let outcomes = s.outcomes(1).await;
    assert_eq!(
        outcomes,
        vec![json!({"receipt": "receipt-1", "status": 503, "admissionToken": admission_token(1)})]
    );
}

#[tokio::test]
async fn sidecar_reject_is_a_402_with_the_reason() {
    let s = Stand::start().await;
    s.sidecar.set_mode(PayMode::Reject("already_spent", 402));
    let payment = s.payment_for("/paid/report").await;
    let r = s
        .get("/paid/report", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 402);
    let (pr, _) = payment_required(r).await;
    assert_eq!(pr.error.as_deref(), Some("already_spent"));
    assert_eq!(pr.accepts.len(), 1, "with a fresh challenge");
    assert!(s.upstream.requests().is_empty());
    assert_eq!(s.counter("rejected_already_spent").await, 1);
}

#[tokio::test]
async fn malformed_and_forged_payments_are_refused_without_a_sidecar_call() {
    let s = Stand::start().await;
    let r = s
        .get("/paid/report", &[("payment-signature", "%%%not base64%%%")])
        .await;
    assert_eq!(r.status(), 400);
    let (pr, _) = payment_required(r).await;
    assert_eq!(pr.error.as_deref(), Some("invalid_payload"));
    let big = "A".repeat(9000);
    let r = s.get("/paid/report", &[("payment-signature", &big)]).await;
    assert_eq!(r.status(), 400);
    // A challenge for another route.
    let other = s.payment_for("/paid/other").await;
    let r = s
        .get("/paid/report", &[("payment-signature", &other)])
        .await;
    assert_eq!(r.status(), 402);
    assert_eq!(
        payment_required(r).await.0.error.as_deref(),
        Some("resource_mismatch")
    );
    assert!(s.sidecar.pays().is_empty());
    assert!(s.upstream.requests().is_empty());
    assert_eq!(s.counter("rejected_invalid_payload").await, 2);
}

#[tokio::test]
async fn sidecar_down_is_503_with_retry_after() {
    let mut s = Stand::start().await;
    let payment = s.payment_for("/paid/report").await;
    s.sidecar.stop().await;
    let r = s
        .get("/paid/report", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("2"));
    assert!(s.upstream.requests().is_empty());
    assert!(s.counter("sidecar_errors").await >= 1);
    // Unpaid requests still get their 402 from the filter alone.
    assert_eq!(s.get("/paid/report", &[]).await.status(), 402);
}

#[tokio::test]
async fn fail_open_route_with_the_sidecar_down_passes_and_is_counted() {
    let mut s = Stand::start().await;
    let payment = s.payment_for("/preview/item").await;
    s.sidecar.stop().await;
    let r = s
        .get("/preview/item", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "payment-response").is_none());
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("payment-signature"),
        None,
        "stripped even when passing"
    );
    assert_eq!(s.counter("fail_open_passes").await, 1);
    // The fail-closed route on the same Envoy still refuses.
    let payment = s.payment_for("/paid/report").await;
    let r = s
        .get("/paid/report", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn slow_sidecar_times_out_into_503() {
    let s = Stand::start().await;
    s.sidecar.set_mode(PayMode::Slow);
    let payment = s.payment_for("/paid/report").await;
    let started = Instant::now();
    let r = s
        .get("/paid/report", &[("payment-signature", &payment)])
        .await;
    let elapsed = started.elapsed();
    eprintln!("503 after {elapsed:?} (sidecar timeout {SIDECAR_TIMEOUT_MS} ms)");
    assert_eq!(r.status(), 503);
    // The counter says why; the elapsed time only rules out an immediate 503. Envoy arms the
    // callout timer from its loop's cached clock, so it may fire a few ms before the full
    // timeout as the client measures it: allow that slack, no more.
    assert_eq!(s.counter("sidecar_timeouts").await, 1);
    assert!(elapsed >= Duration::from_millis(SIDECAR_TIMEOUT_MS - 100));
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn unavailable_verdict_or_missing_verdict_header_is_503() {
    let s = Stand::start().await;
    s.sidecar.set_mode(PayMode::Unavailable(7));
    let payment = s.payment_for("/paid/report").await;
    let r = s
        .get("/paid/report", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("7"));
    // 200 without `x-nanogate-verdict: 1` is never a verdict.
    s.sidecar.set_mode(PayMode::NoVerdictHeader);
    let payment = s.payment_for("/paid/report").await;
    let r = s
        .get("/paid/report", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 503);
    assert!(s.upstream.requests().is_empty());
    assert_eq!(s.counter("sidecar_unavailable").await, 1);
}

#[tokio::test]
async fn x_payment_header_alone_is_admitted_with_the_v1_receipt_header() {
    let s = Stand::start().await;
    let payment = s.payment_for("/paid/report").await;
    let r = s.get("/paid/report", &[("X-PAYMENT", &payment)]).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "payment-response").is_some());
    assert!(header(&r, "x-payment-response").is_some());
    assert_eq!(s.upstream.requests()[0].header("x-payment"), None);
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_the_previous_key_still_verifies() {
    // A short-lived first key, so the filter refreshes within seconds.
    let s = Stand::start_with(|sidecar| sidecar.set_key(KEY_ID, 12)).await;
    let old = s.challenge("/paid/report").await;
    assert_eq!(
        challenge::read_extra(&old.accepts[0].extra)
            .unwrap()
            .0
            .key_id,
        KEY_ID
    );
    s.sidecar.set_key(KEY_ID + 1, 3600);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pr = s.challenge("/paid/report").await;
        if challenge::read_extra(&pr.accepts[0].extra)
            .unwrap()
            .0
            .key_id
            == KEY_ID + 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the filter never picked up the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A challenge issued under the previous key is still honoured...
    let r = s
        .get(
            "/paid/report",
            &[("payment-signature", &payment_answering(&old))],
        )
        .await;
    assert_eq!(r.status(), 200);
    // ...and so is one under the new key.
    let payment = s.payment_for("/paid/report").await;
    let r = s
        .get("/paid/report", &[("payment-signature", &payment)])
        .await;
    assert_eq!(r.status(), 200);
    // One fetcher at a time (lease), about one fetch a second around the rotation at most.
    let fetches = *lock(&s.sidecar.state.key_fetches);
    assert!(fetches <= 20, "{fetches} key fetches");
}

/// Sends a request line verbatim (HTTP clients resolve `..` before sending) and returns the
/// status code.
async fn raw_status(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to envoy");
    let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn other_spellings_of_a_paid_path_are_still_paid() {
    let s = Stand::start().await;
    for path in [
        "/public/../paid/report",
        "/public/%2E%2E/paid/report",
        "//paid//report",
        "/paid%2Freport",
        "/%70aid/report",
        "/./paid/report",
    ] {
        assert_eq!(raw_status(s.listener, path).await, 402, "{path}");
    }
    assert!(
        s.upstream.requests().is_empty(),
        "nothing unpaid reached the upstream"
    );
}

/// Two listeners whose nanogate filters share one `vm_id` (so one shared-data space) but have
/// different plugin configurations: a tagged route named `tagged` at index 0 in both, priced
/// `price_a` / `price_b` raw, paying `PAY_TO` / `pay_to_b`.
fn two_configs_bootstrap(
    listeners: (u16, u16),
    admin: u16,
    upstream: u16,
    sidecar: u16,
    prices: (u128, u128),
    pay_to_b: &str,
) -> String {
    let listener = |name: &str, port: u16, price: u128, pay_to: &str| {
        format!(
            r#"
  - name: {name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: upstream
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: nanogate
                root_id: nanogate
                vm_config:
                  vm_id: nanogate
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "{wasm}" }} }}
                  environment_variables: {{ host_env_keys: ["NANOGATE_FILTER_SECRET"] }}
                failure_policy: FAIL_CLOSED
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    {{"sidecar": {{"cluster": "nanogate_sidecar", "authority": "nanogate-sidecar",
                                  "timeoutMs": {SIDECAR_TIMEOUT_MS}, "secretEnv": "NANOGATE_FILTER_SECRET"}},
                     "network": "{NETWORK}", "payTo": "{pay_to}",
                     "routes": [{{"name": "tagged", "path": {{"prefix": "/tagged/"}},
                                 "priceRaw": "{price}", "tagged": true, "maxTimeoutSeconds": 120}}]}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#,
            wasm = envoy::filter_wasm().display(),
        )
    };
    let cluster = |name: &str, port: u16| {
        format!(
            r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}"#
        )
    };
    format!(
        "admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}\n\
         static_resources:\n  listeners:{}{}\n  clusters:{}{}\n",
        listener("a", listeners.0, prices.0, PAY_TO),
        listener("b", listeners.1, prices.1, pay_to_b),
        cluster("upstream", upstream),
        cluster("nanogate_sidecar", sidecar),
    )
}

/// The tagged offer of a 402 from `port`, waiting (bounded) for that configuration's pool.
async fn tagged_offer_at(http: &reqwest::Client, port: u16, envoy: &Envoy) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .get(format!("http://127.0.0.1:{port}/tagged/x"))
            .send()
            .await
            .expect("request through envoy");
        if r.status() == 402 {
            let (pr, _) = payment_required(r).await;
            if let Some(o) = pr
                .accepts
                .iter()
                .find(|a| a.extra.get("mechanism").and_then(Value::as_str) == Some("tagged"))
            {
                return serde_json::to_value(o).expect("offer");
            }
        }
        assert!(
            Instant::now() < deadline,
            "no tagged offer on port {port}:\n{}",
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Scenario 6 of #12, in real Envoy: two plugin configurations on one `vm_id` share shared
/// data. Each must offer only sessions issued for its own terms (its price and payee): a
/// session of the other configuration would be paid, then refused by this one's filter.
#[tokio::test]
async fn two_plugin_configurations_on_one_vm_id_never_offer_each_others_sessions() {
    const PAY_TO_B: &str = "nano_18gmu6engqhgtjnppqam181o5nfhj4sdtgyhy36dan3jr9spt84rzwmktafc";
    let (price_a, price_b) = (1_000u128, 1_000_000u128);
    let upstream = Upstream::start().await;
    let sidecar = FakeSidecar::start().await;
    let (a, b, admin) = (free_port(), free_port(), free_port());
    let config = two_configs_bootstrap(
        (a, b),
        admin,
        upstream.port,
        sidecar.port,
        (price_a, price_b),
        PAY_TO_B,
    );
    let envoy = start_envoy(&config, admin).await;
    let http = reqwest::Client::new();
    // A's pool first, so that B would find it already full if the pools were shared.
    let offer_a = tagged_offer_at(&http, a, &envoy).await;
    let offer_b = tagged_offer_at(&http, b, &envoy).await;
    for _ in 0..5 {
        for (port, price, pay_to) in [(a, price_a, PAY_TO), (b, price_b, PAY_TO_B)] {
            let o = tagged_offer_at(&http, port, &envoy).await;
            let amount = o["amount"]
                .as_str()
                .and_then(|x| parse_raw(x).ok())
                .unwrap_or(0);
            assert!(
                amount > price && amount <= price + 256,
                "port {port} offers a session of another configuration: {o}"
            );
            assert_eq!(o["payTo"], pay_to, "{o}");
            assert_eq!(
                o["extra"]["nanoSession"]["resourceAmountRaw"],
                price.to_string()
            );
        }
    }
    assert_ne!(offer_a["extra"]["nonce"], offer_b["extra"]["nonce"]);
    // Each configuration asked for its own sessions.
    let asked: Vec<String> = lock(&sidecar.state.session_requests)
        .iter()
        .filter_map(|r| r["price"].as_str().map(str::to_owned))
        .collect();
    assert!(asked.contains(&price_a.to_string()), "{asked:?}");
    assert!(asked.contains(&price_b.to_string()), "{asked:?}");
}
