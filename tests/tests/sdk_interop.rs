//! Interop with the official x402 SDKs, pinned in xtask/src/sdk.rs (`cargo xtask test` installs
//! them and sets `NANOGATE_SDK_PYTHON` / `NANOGATE_SDK_TYPESCRIPT`; `cargo xtask sdk` does it
//! alone):
//!
//! - the official Python SDK client (`x402HttpxClient`) and TypeScript SDK client
//!   (`@x402/fetch`) with nanogate's Nano schemes (sdk/) pay nanogate routes behind real Envoy +
//!   filter + sidecar + devnet: one whose offers carry the dev work threshold, and one where the
//!   sidecar attaches the work (`attachWork`);
//! - the official Python SDK's FastAPI middleware with `x402-nano-exact`, and the TypeScript
//!   SDK's Express middleware with nanogate's server scheme, use a facilitator-only sidecar (no
//!   filter secrets) as their facilitator, with seller-side work, and the same SDK's client
//!   pays them.

use nanogate_devnet::ledger::Body;
use nanogate_protocol::nano::{PrivateKey, StateBlock};
use nanogate_protocol::x402::{decode_header, encode_header, MAX_HEADER_BYTES};
use nanogate_tests::envoy;
use nanogate_tests::ports::free_port;
use nanogate_tests::sidecar::{SidecarProcess, SidecarSettings};
use nanogate_tests::stack::{Stack, StackConfig, Wallet, HOST, NETWORK, PRICE_RAW};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The dev network's send threshold: what the devnet's nodes require of a send.
const DEV_SEND_THRESHOLD: &str = "ffc0000000000000";
const FACILITATOR_TOKEN: &str = "interop-facilitator-token-0123456789";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The venv Python with the pinned SDK: `$NANOGATE_SDK_PYTHON`, else `sdk/python/.venv`.
/// Panics (failing the test) with the way to install it.
fn python() -> PathBuf {
    let path = std::env::var_os("NANOGATE_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("sdk/python/.venv/bin/python"));
    assert!(
        path.exists(),
        "the pinned Python SDK is not installed at {} (run `cargo xtask sdk`, or set \
         NANOGATE_SDK_PYTHON)",
        path.display()
    );
    path
}

/// `sdk/typescript` built, with the pinned SDK in its `node_modules`:
/// `$NANOGATE_SDK_TYPESCRIPT`, else the repository's. Panics with the way to install it.
fn typescript() -> PathBuf {
    let dir = std::env::var_os("NANOGATE_SDK_TYPESCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("sdk/typescript"));
    for needed in ["dist/index.js", "node_modules/@x402/fetch/package.json"] {
        assert!(
            dir.join(needed).exists(),
            "the TypeScript SDK scheme is not built/installed at {} (run `cargo xtask sdk`, or \
             set NANOGATE_SDK_TYPESCRIPT)",
            dir.display()
        );
    }
    dir
}

/// Which official SDK client pays.
#[derive(Debug, Clone, Copy)]
enum Sdk {
    Python,
    TypeScript,
}

fn client_cmd(sdk: Sdk) -> Command {
    match sdk {
        Sdk::Python => python_cmd("client.py"),
        Sdk::TypeScript => {
            let mut cmd = Command::new("node");
            cmd.arg(typescript().join("interop/client.mjs"))
                .env("NANOGATE_NETWORK", NETWORK);
            cmd
        }
    }
}

fn python_cmd(script: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("sdk/python/interop").join(script))
        .env("PYTHONPATH", repo().join("sdk/python/src"))
        .env("NANOGATE_NETWORK", NETWORK);
    cmd
}

/// What the client script saw: the final status, body and decoded `PAYMENT-RESPONSE`.
#[derive(Debug)]
struct Paid {
    status: u64,
    body: String,
    receipt: Value,
}

/// Pays `url` with an official SDK client and nanogate's scheme, as `wallet`.
async fn sdk_pays(sdk: Sdk, url: &str, host: Option<&str>, wallet: &Wallet, rpc: &str) -> Paid {
    let mut cmd = client_cmd(sdk);
    cmd.arg(url)
        .env("NANOGATE_PAYER_KEY", wallet.key.to_hex())
        .env("NANOGATE_RPC_URL", rpc)
        .env("NANOGATE_MAX_RAW", PRICE_RAW.to_string());
    if let Some(h) = host {
        cmd.env("NANOGATE_HOST", h);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("client task")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{sdk:?} client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{sdk:?} client printed no JSON ({e}):\n{stdout}\n{stderr}"));
    Paid {
        status: v["status"].as_u64().unwrap_or(0),
        body: v["body"].as_str().unwrap_or_default().to_owned(),
        receipt: v["paymentResponse"].clone(),
    }
}

/// The block the ledger holds under `hash` (the payment as processed).
fn ledger_block(stack: &Stack, hash: &str) -> StateBlock {
    let hash = nanogate_protocol::nano::BlockHash::from_hex(hash).expect("hash");
    let body = stack
        .ledger()
        .read(|l| l.block(&hash).map(|e| e.body.clone()));
    match body {
        Some(Body::State(b)) => b,
        other => panic!(
            "the ledger holds no state block {}: {other:?}",
            hash.to_hex()
        ),
    }
}

/// A header's JSON.
fn decoded(header: &str) -> Value {
    decode_header(header, MAX_HEADER_BYTES).expect("a valid x402 header")
}

/// The demo bootstrap plus: offers carrying the dev work threshold, and `/paid-work/`, whose
/// sidecar attaches work.
async fn with_work_routes(stack: &mut Stack) {
    let gate = stack.gate_mut(0);
    gate.bootstrap = envoy::edit_plugin_config(&gate.bootstrap, |c| {
        c["workThreshold"] = json!(DEV_SEND_THRESHOLD);
        let routes = c["routes"].as_array_mut().expect("routes");
        routes.insert(
            0,
            json!({"name": "paid-work", "path": {"prefix": "/paid-work/"}, "price": "0.001",
                   "attachWork": true}),
        );
    })
    .expect("plugin configuration edits");
    gate.restart_envoy().await;
    // The new filter VM answers 402 once it holds a challenge key.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = stack.get("/paid-work/x", &[]).await;
        if r.status == 402 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no 402 after the restart: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn python_sdk_client_pays_nanogate_routes_with_and_without_seller_work() {
    sdk_client_pays_nanogate_routes(Sdk::Python).await;
}

#[tokio::test]
async fn typescript_sdk_client_pays_nanogate_routes_with_and_without_seller_work() {
    sdk_client_pays_nanogate_routes(Sdk::TypeScript).await;
}

async fn sdk_client_pays_nanogate_routes(sdk: Sdk) {
    let mut stack = Stack::start(StackConfig::default()).await;
    with_work_routes(&mut stack).await;
    let rpc = stack.devnet.rpc_url();

    // The offers say what the client needs.
    let c = stack.challenge(0, "/paid/report").await;
    assert_eq!(
        c.offer()["extra"]["workThreshold"],
        DEV_SEND_THRESHOLD,
        "{}",
        c.offer()
    );
    assert!(c.offer()["extra"].get("work").is_none());
    let c = stack.challenge(0, "/paid-work/report").await;
    assert_eq!(c.offer()["extra"]["work"], "optional", "{}", c.offer());

    // The client makes its own work at the offered (dev) threshold: the devnet's node would
    // refuse to make mainnet work, which is what a client without the threshold asks for.
    let wallet = stack.wallet();
    let paid = sdk_pays(sdk, &stack.url("/paid/report"), Some(HOST), &wallet, &rpc).await;
    assert_eq!(paid.status, 200, "{paid:?}");
    assert_eq!(paid.receipt["success"], true, "{paid:?}");
    let hash = paid.receipt["transaction"].as_str().expect("transaction");
    assert!(ledger_block(&stack, hash).work != 0);
    assert_eq!(stack.upstream_hits("/paid/report"), 1);

    // `attachWork`: the client sends no work; the sidecar attaches it after every other check.
    let wallet = stack.wallet();
    let paid = sdk_pays(
        sdk,
        &stack.url("/paid-work/report"),
        Some(HOST),
        &wallet,
        &rpc,
    )
    .await;
    assert_eq!(paid.status, 200, "{paid:?}");
    assert_eq!(paid.receipt["success"], true, "{paid:?}");
    let block = ledger_block(&stack, paid.receipt["transaction"].as_str().unwrap());
    assert_eq!(block.account, wallet.account());
    assert!(block.work_difficulty() >= u64::from_str_radix(DEV_SEND_THRESHOLD, 16).unwrap());
    assert_eq!(stack.upstream_hits("/paid-work/report"), 1);
    assert!(paid.body.contains("paid-work"), "{}", paid.body);
}

/// A facilitator-only sidecar on the stack's devnet: no filter secret, no challenge secret.
async fn facilitator_sidecar(stack: &Stack, payee: &str) -> SidecarProcess {
    let settings = SidecarSettings {
        listen_port: free_port(),
        network: NETWORK.into(),
        node_network: "dev".into(),
        filter_secret: String::new(),
        challenge_secret: String::new(),
        rpc: vec![stack.devnet.rpc_url()],
        ws: vec![stack.devnet.ws_url()],
        database_url: format!("sqlite://{}", stack.dir().join("facilitator.db").display()),
        postgres_schema: None,
        max_wait_secs: stack.config.max_wait_secs,
        rpc_timeout_ms: 2_000,
        rpc_retries: 1,
        log: "info".into(),
    };
    let env = vec![
        ("NANOGATE_FACILITATOR_ONLY".into(), "true".into()),
        (
            "NANOGATE_FACILITATOR_TOKEN".into(),
            FACILITATOR_TOKEN.into(),
        ),
        ("NANOGATE_ALLOW_UNBOUND".into(), "true".into()),
        ("NANOGATE_PAY_TO".into(), payee.into()),
        ("NANOGATE_FACILITATOR_ATTACH_WORK".into(), "true".into()),
    ];
    SidecarProcess::start_with_env(settings, &stack.dir().join("facilitator"), env)
        .await
        .unwrap_or_else(|e| panic!("facilitator-only sidecar: {e:#}"))
}

/// A resource server on an official SDK (FastAPI or Express), killed on drop.
struct SdkServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for SdkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sdk_server(sdk: Sdk, facilitator: &str, payee: &str, log: PathBuf) -> SdkServer {
    let port = free_port();
    let log_file = std::fs::File::create(&log).expect("server log");
    let mut cmd = match sdk {
        Sdk::Python => python_cmd("server.py"),
        Sdk::TypeScript => {
            let mut cmd = Command::new("node");
            cmd.arg(typescript().join("interop/server.mjs"))
                .env("NANOGATE_NETWORK", NETWORK);
            cmd
        }
    };
    let child = cmd
        .env("NANOGATE_FACILITATOR_URL", facilitator)
        .env("NANOGATE_FACILITATOR_TOKEN", FACILITATOR_TOKEN)
        .env("NANOGATE_PAY_TO", payee)
        .env("NANOGATE_PRICE_RAW", PRICE_RAW.to_string())
        .env("NANOGATE_PORT", port.to_string())
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .spawn()
        .expect("the SDK server starts");
    let mut server = SdkServer { child, port };
    let url = format!("http://127.0.0.1:{port}/healthz");
    // Only a bound against hanging: importing the SDK (pydantic, FastAPI) on a loaded machine
    // takes a while, and the server asks the facilitator's /supported before it listens.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = reqwest::get(&url).await {
            if r.status() == 200 {
                return server;
            }
        }
        let exited = server.child.try_wait().ok().flatten();
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            exited.is_none(),
            "{sdk:?} server exited ({exited:?}):\n{log_text}"
        );
        assert!(
            Instant::now() < deadline,
            "{sdk:?} server not up:\n{log_text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn python_sdk_server_uses_a_facilitator_only_sidecar() {
    sdk_server_uses_a_facilitator_only_sidecar(Sdk::Python).await;
}

#[tokio::test]
async fn typescript_sdk_server_uses_a_facilitator_only_sidecar() {
    sdk_server_uses_a_facilitator_only_sidecar(Sdk::TypeScript).await;
}

/// `sdk`'s resource server (Python: FastAPI middleware + `x402-nano-exact`; TypeScript:
/// `@x402/express` + nanogate's server scheme) on a facilitator-only sidecar, paid by the
/// same SDK's client with nanogate's client scheme.
async fn sdk_server_uses_a_facilitator_only_sidecar(sdk: Sdk) {
    let stack = Stack::start(StackConfig::default()).await;
    let payee = PrivateKey::from_seed(&rand::random::<[u8; 32]>(), 0)
        .public_key()
        .to_address();
    let facilitator = facilitator_sidecar(&stack, &payee).await;
    let server = sdk_server(
        sdk,
        &facilitator.base_url(),
        &payee,
        stack.dir().join(format!("{sdk:?}-server.log")),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/paid", server.port);

    // Unpaid: the SDK's 402 offers what the sidecar's /supported said (the server schemes copy
    // extra.work and extra.workThreshold from it).
    let r = reqwest::get(&url).await.expect("unpaid request");
    assert_eq!(r.status(), 402);
    let header = r
        .headers()
        .get("payment-required")
        .expect("PAYMENT-REQUIRED")
        .to_str()
        .unwrap()
        .to_owned();
    let required = decoded(&header);
    let extra = &required["accepts"][0]["extra"];
    assert_eq!(extra["workThreshold"], DEV_SEND_THRESHOLD, "{required}");
    assert_eq!(extra["work"], "optional", "{required}");

    // Paid by the SDK client with nanogate's scheme: no work from the client, the
    // facilitator attaches it, verifies and settles through the devnet.
    let wallet = stack.wallet();
    let paid = sdk_pays(sdk, &url, None, &wallet, &stack.devnet.rpc_url()).await;
    assert_eq!(paid.status, 200, "{paid:?}\n{}", facilitator.log());
    assert_eq!(paid.receipt["success"], true, "{paid:?}");
    let block = ledger_block(&stack, paid.receipt["transaction"].as_str().unwrap());
    assert_eq!(block.account, wallet.account());
    assert_eq!(block.link_as_key().to_address(), payee);
    assert!(block.work_difficulty() >= u64::from_str_radix(DEV_SEND_THRESHOLD, 16).unwrap());
    assert!(paid.body.contains("paid"), "{}", paid.body);

    // A refusal reaches the SDK as a reason, not as a transport failure: the same payment
    // again is a fresh 402 naming it.
    let r = reqwest::Client::new()
        .get(&url)
        .header(
            "payment-signature",
            encode_header(&json!({
                "x402Version": 2,
                "resource": required["resource"],
                "accepted": required["accepts"][0],
                "payload": {"block": block.to_json()},
            })),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let again = decoded(r.headers()["payment-required"].to_str().unwrap());
    assert!(
        matches!(
            again["error"].as_str(),
            Some("already_spent" | "duplicate_settlement")
        ),
        "{again}"
    );
}
