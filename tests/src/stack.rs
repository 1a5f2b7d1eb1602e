//! The whole system on loopback, owned by the test (or demo) process: a devnet (in-process), a
//! recording upstream, and one or more *gates* — a real `nanogate-sidecar` process plus a real
//! Envoy running the filter module in front of the upstream. Gates share the devnet, the
//! upstream, the secrets and (with PostgreSQL) the store, as replicas do. Everything is torn down
//! on drop; child processes also die with the thread that started them (PDEATHSIG).
//!
//! ```no_run
//! # async fn demo() {
//! use nanogate_tests::stack::{Stack, StackConfig};
//! let stack = Stack::start(StackConfig::default()).await;
//! let wallet = stack.wallet();                     // a funded payer account
//! let (header, block) = stack.pay_header(0, "/paid/report", &wallet).await;
//! let reply = stack.get("/paid/report", &[("payment-signature", &header)]).await;
//! assert_eq!(reply.status, 200);
//! # }
//! ```

use crate::envoy::{self, Envoy};
use crate::ports::free_port;
use crate::sidecar::{SidecarProcess, SidecarSettings};
use crate::upstream::Upstream;
use nanogate_devnet::{Confirm, Devnet, DevnetConfig, LedgerHandle};
use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey, StateBlock};
use nanogate_protocol::x402::{decode_header, encode_header, PaymentRequired, SettlementResponse};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// x402 network id of every stack.
pub const NETWORK: &str = "nano:devnet";
/// Shared secret between the filter and the sidecars (test-only).
pub const FILTER_SECRET: &str = "e2e-filter-secret-0123456789abcdef";
/// Challenge master secret shared by every sidecar of a stack (test-only).
pub const CHALLENGE_SECRET: &str = "e2e-challenge-master-secret-0123456789";
/// One XNO in raw.
pub const XNO: u128 = 1_000_000_000_000_000_000_000_000_000_000;
/// The bootstrap's `/paid/` price: 0.001 XNO.
pub const PRICE_RAW: u128 = XNO / 1000;
/// The bootstrap's fail-open `/preview/` price.
pub const PREVIEW_PRICE_RAW: u128 = 1000;
/// The `Host` every [`Stack::get`] sends, so that replicas issue challenges for the same
/// resource URL (`http://api.nanogate.test/...`).
pub const HOST: &str = "api.nanogate.test";
/// The sidecar's challenge key rotation (its default).
pub const KEY_ROTATION_SECS: u64 = 300;

/// Where the sidecars keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One SQLite file (one gate).
    Sqlite,
    /// A fresh schema in `$DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
    /// shared by every gate of the stack, dropped afterwards.
    Postgres,
}

/// Fixed ports (the demo); tests use free ports.
#[derive(Debug, Clone, Copy)]
pub struct FixedPorts {
    pub listener: u16,
    pub admin: u16,
    pub sidecar: u16,
    pub rpc: u16,
    pub ws: u16,
    pub upstream: u16,
}

/// How to build a stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub store: StoreKind,
    /// Envoy + sidecar pairs.
    pub gates: usize,
    /// The sidecars' bound on waiting for confirmation (`settlement.max_wait_secs`).
    pub max_wait_secs: u64,
    /// Put an unreachable node before the devnet in every sidecar's node list (failover).
    pub dead_node_first: bool,
    /// The sidecars' retries of a failed node call (`nodes.retries`; the shipped default is 2).
    pub rpc_retries: u32,
    /// Funded payer accounts handed out by [`Stack::wallet`].
    pub wallets: u32,
    pub wallet_balance: u128,
    /// Extra accounts to fund at start (the demo wallet).
    pub fund: Vec<(PublicKey, u128)>,
    /// Who gets paid (`payTo` of every route).
    pub payee: PublicKey,
    pub ports: Option<FixedPorts>,
    /// Devnet confirmation delay.
    pub confirm_ms: u64,
    /// The sidecars' challenge key rotation period.
    pub key_rotation_secs: u64,
    /// The filter's `sidecar.timeoutMs` (default: `max_wait_secs` + 10 s).
    pub sidecar_timeout_ms: Option<u64>,
    /// More `NANOGATE_*` settings for every sidecar, e.g. `NANOGATE_REDEEM_WINDOW_SECS`.
    pub sidecar_env: Vec<(String, String)>,
    /// The sidecars' log filter.
    pub sidecar_log: String,
    /// Scratch directory (configs, logs, SQLite); a fresh temporary one when `None`.
    pub dir: Option<PathBuf>,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            store: StoreKind::Sqlite,
            gates: 1,
            max_wait_secs: 5,
            dead_node_first: false,
            rpc_retries: 1,
            wallets: 16,
            wallet_balance: XNO,
            fund: Vec::new(),
            payee: PrivateKey::from_seed(&rand::random::<[u8; 32]>(), 0).public_key(),
            ports: None,
            confirm_ms: 100,
            key_rotation_secs: KEY_ROTATION_SECS,
            sidecar_timeout_ms: None,
            sidecar_env: Vec::new(),
            sidecar_log: std::env::var("NANOGATE_E2E_SIDECAR_LOG")
                .unwrap_or_else(|_| "info".into()),
            dir: None,
        }
    }
}

/// A funded payer: the seed and index the `nanogate-pay` CLI takes, and the key.
#[derive(Clone)]
pub struct Wallet {
    pub seed: [u8; 32],
    pub index: u32,
    pub key: PrivateKey,
}

impl Wallet {
    pub fn account(&self) -> PublicKey {
        self.key.public_key()
    }

    pub fn seed_hex(&self) -> String {
        nanogate_protocol::hex::encode_upper(&self.seed)
    }
}

/// One Envoy + sidecar pair.
pub struct Gate {
    /// Dropped first: nothing reaches the sidecar after Envoy is gone.
    pub envoy: Envoy,
    pub sidecar: SidecarProcess,
    pub listener: u16,
    /// The rendered bootstrap and its admin port (for restarts).
    pub bootstrap: String,
    pub admin: u16,
}

impl Gate {
    /// Stops this gate's Envoy and starts a fresh one on the same bootstrap (a new filter VM
    /// that holds no challenge key until it fetches one).
    pub async fn restart_envoy(&mut self) {
        // Only one Envoy may own the ports: stop the old one before the new one binds.
        self.envoy.stop();
        self.envoy = start_envoy(&self.bootstrap, self.admin).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listener)
    }

    /// A filter counter from Envoy's `/stats` (`nanogate_<name>`).
    pub async fn counter(&self, name: &str) -> u64 {
        self.envoy
            .counter(&format!("wasmcustom.nanogate_{name}"))
            .await
    }
}

/// One HTTP answer, read completely.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `PAYMENT-REQUIRED` header decoded; panics unless the body carries the same JSON.
    pub fn payment_required(&self) -> PaymentRequired {
        let header = self
            .header("payment-required")
            .unwrap_or_else(|| panic!("no PAYMENT-REQUIRED on a {}: {}", self.status, self.text()));
        let from_header: PaymentRequired =
            decode_header(&header, 64 * 1024).expect("PAYMENT-REQUIRED decodes");
        let from_body: PaymentRequired =
            serde_json::from_slice(&self.body).expect("the body is the PaymentRequired JSON");
        assert_eq!(from_header, from_body, "header and body agree");
        from_header
    }

    /// The decoded `PAYMENT-REQUIRED` JSON, verbatim (what a client echoes).
    pub fn payment_required_json(&self) -> Value {
        let header = self.header("payment-required").expect("PAYMENT-REQUIRED");
        decode_header(&header, 64 * 1024).expect("PAYMENT-REQUIRED decodes")
    }

    /// The x402 `error` of a 402/400 answer.
    pub fn reason(&self) -> Option<String> {
        self.header("payment-required")?;
        self.payment_required().error
    }

    /// The `PAYMENT-RESPONSE` receipt, decoded.
    pub fn settlement(&self) -> Option<SettlementResponse> {
        let h = self.header("payment-response")?;
        decode_header(&h, 64 * 1024).ok()
    }
}

/// A 402 challenge as a client sees it.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub required: PaymentRequired,
    /// The decoded JSON, verbatim.
    pub raw: Value,
}

impl Challenge {
    /// `accepts[0]` verbatim.
    pub fn offer(&self) -> Value {
        self.raw["accepts"][0].clone()
    }

    /// A v2 payment answering this challenge with `block` (offer and resource echoed verbatim).
    pub fn payment(&self, block: &StateBlock) -> Value {
        nanogate_client::payment::payment_json_v2(
            &self.offer(),
            self.raw.get("resource"),
            self.raw.get("extensions"),
            block,
        )
    }

    /// The `PAYMENT-SIGNATURE` value for `block`.
    pub fn header_for(&self, block: &StateBlock) -> String {
        encode_header(&self.payment(block))
    }
}

enum StoreHandle {
    Sqlite,
    Postgres { url: String, schema: String },
}

/// The running system.
pub struct Stack {
    /// Dropped first (Envoy, then the sidecar of each gate).
    pub gates: Vec<Gate>,
    pub upstream: Upstream,
    pub devnet: Devnet,
    pub payee: PublicKey,
    pub config: StackConfig,
    seed: [u8; 32],
    next_wallet: AtomicU32,
    store: StoreHandle,
    dir: PathBuf,
    remove_dir: bool,
    /// Serialises building blocks for one account where a test wants it.
    pub lock: tokio::sync::Mutex<()>,
}

/// `$DATABASE_URL`, else the CI default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn pid_alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

/// `nanogate-e2e-<pid>-…` and `nanogate-envoy-<pid>-…` scratch directories left by test
/// processes that no longer run (a shared stack is never dropped).
fn sweep_scratch_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("nanogate-e2e-")
            .or_else(|| name.strip_prefix("nanogate-envoy-"))
        else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| p != std::process::id() && !pid_alive(p)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

async fn pg_connect(url: &str) -> sqlx::PgPool {
    match tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url),
    )
    .await
    {
        Ok(Ok(pool)) => pool,
        Ok(Err(e)) => panic!(
            "PostgreSQL at {url} is not reachable ({e}); the end-to-end tests need it \
             (set DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)"
        ),
        Err(_) => panic!("PostgreSQL at {url}: connection timed out"),
    }
}

/// Drops `ng_e2e_<pid>_…` schemas of test processes that no longer run (a killed run cannot
/// clean up after itself).
async fn sweep_schemas(pool: &sqlx::PgPool) {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT schema_name::text FROM information_schema.schemata \
         WHERE schema_name LIKE 'ng\\_e2e\\_%'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    for (name,) in names {
        let pid = name
            .strip_prefix("ng_e2e_")
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| p != std::process::id() && !pid_alive(p)) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(pool)
                .await;
        }
    }
}

fn drop_schema_blocking(url: String, schema: String) {
    // Drop runs outside any particular runtime: use a short-lived one on its own thread.
    let t = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(Ok(pool)) = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&url),
            )
            .await
            else {
                return;
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&pool),
            )
            .await;
            pool.close().await;
        });
    });
    let _ = t.join();
}

/// A signed state block with work at the dev network's send threshold (what the sidecar
/// demands of a payment): the devnet's own builder.
pub use nanogate_devnet::blocks::state_block as signed_block;

static STACKS: AtomicU32 = AtomicU32::new(0);

/// The demo bootstrap `envoy/envoy.yaml`, rendered.
#[allow(clippy::too_many_arguments)]
pub fn bootstrap(
    listener: u16,
    admin: u16,
    upstream: u16,
    sidecar: u16,
    sidecar_timeout_ms: u64,
    pay_to: &PublicKey,
) -> String {
    envoy::render(
        &envoy::template("envoy.yaml"),
        &[
            ("LISTENER_PORT", listener.to_string()),
            ("ADMIN_PORT", admin.to_string()),
            ("UPSTREAM_PORT", upstream.to_string()),
            ("SIDECAR_PORT", sidecar.to_string()),
            ("FILTER_WASM", envoy::filter_wasm().display().to_string()),
            ("SIDECAR_TIMEOUT_MS", sidecar_timeout_ms.to_string()),
            ("NETWORK", NETWORK.to_owned()),
            ("PAY_TO", pay_to.to_address()),
        ],
    )
    .expect("envoy/envoy.yaml renders")
}

/// Envoy on a rendered [`bootstrap`], with the filter secret in its environment (the
/// bootstrap names the variable; the value is in no file).
pub async fn start_envoy(bootstrap: &str, admin: u16) -> Envoy {
    Envoy::start_with_env(
        bootstrap,
        admin,
        &[(envoy::FILTER_SECRET_ENV, FILTER_SECRET)],
    )
    .await
}

impl Stack {
    /// Starts everything and waits until every gate answers a paid route with a 402 (the
    /// filter holds a challenge key). Panics with the relevant logs when something does not
    /// come up.
    pub async fn start(config: StackConfig) -> Stack {
        // Fail fast, with the instructions, when the tools are missing.
        let _ = envoy::envoy_binary();
        let _ = envoy::filter_wasm();
        let _ = crate::procs::workspace_bin("nanogate-sidecar");
        let started = Instant::now();
        sweep_scratch_dirs();
        let n = STACKS.fetch_add(1, Ordering::Relaxed);
        let (dir, remove_dir) = match &config.dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "nanogate-e2e-{}-{n}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                )),
                true,
            ),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));

        // Devnet with the wallet pool funded (confirmed at start).
        let seed: [u8; 32] = rand::random();
        let mut dcfg = DevnetConfig::local();
        if let Some(p) = config.ports {
            dcfg.rpc_addr = ([127, 0, 0, 1], p.rpc).into();
            dcfg.ws_addr = ([127, 0, 0, 1], p.ws).into();
        }
        dcfg.confirm = Confirm::AfterMs(config.confirm_ms);
        dcfg.fund = (0..config.wallets)
            .map(|i| {
                (
                    PrivateKey::from_seed(&seed, i).public_key(),
                    config.wallet_balance,
                )
            })
            .chain(config.fund.iter().copied())
            .collect();
        let devnet = Devnet::start(dcfg).await.expect("devnet starts");

        let upstream = match config.ports {
            Some(p) => Upstream::start_on(([127, 0, 0, 1], p.upstream).into())
                .await
                .unwrap_or_else(|e| panic!("upstream on port {}: {e}", p.upstream)),
            None => Upstream::start().await,
        };

        let store = match config.store {
            StoreKind::Sqlite => StoreHandle::Sqlite,
            StoreKind::Postgres => {
                let url = database_url();
                let pool = pg_connect(&url).await;
                sweep_schemas(&pool).await;
                pool.close().await;
                StoreHandle::Postgres {
                    url,
                    schema: format!(
                        "ng_e2e_{}_{n}_{:08x}",
                        std::process::id(),
                        rand::random::<u32>()
                    ),
                }
            }
        };

        let mut rpc = vec![devnet.rpc_url()];
        let mut ws = vec![devnet.ws_url()];
        if config.dead_node_first {
            // A port nothing listens on: connection refused at once.
            let dead = free_port();
            rpc.insert(0, format!("http://127.0.0.1:{dead}"));
            ws.insert(0, format!("ws://127.0.0.1:{dead}"));
        }
        let sidecar_timeout_ms = config
            .sidecar_timeout_ms
            .unwrap_or((config.max_wait_secs + 10) * 1000);
        let mut gates = Vec::new();
        for g in 0..config.gates.max(1) {
            let (listener, admin, sidecar_port) = match config.ports {
                Some(p) if g == 0 => (p.listener, p.admin, p.sidecar),
                _ => (free_port(), free_port(), free_port()),
            };
            let (database_url, postgres_schema) = match &store {
                StoreHandle::Sqlite => (
                    format!("sqlite://{}", dir.join(format!("gate{g}.db")).display()),
                    None,
                ),
                StoreHandle::Postgres { url, schema } => (url.clone(), Some(schema.clone())),
            };
            let settings = SidecarSettings {
                listen_port: sidecar_port,
                network: NETWORK.into(),
                node_network: "dev".into(),
                filter_secret: FILTER_SECRET.into(),
                challenge_secret: CHALLENGE_SECRET.into(),
                rpc: rpc.clone(),
                ws: ws.clone(),
                database_url,
                postgres_schema,
                max_wait_secs: config.max_wait_secs,
                rpc_timeout_ms: 2_000,
                rpc_retries: config.rpc_retries,
                log: config.sidecar_log.clone(),
            };
            let mut env = vec![(
                "NANOGATE_KEY_ROTATION_SECS".to_owned(),
                config.key_rotation_secs.to_string(),
            )];
            env.extend(config.sidecar_env.iter().cloned());
            let sidecar = SidecarProcess::start_with_env(settings, &dir, env)
                .await
                .unwrap_or_else(|e| panic!("sidecar {g}: {e:#}"));
            let yaml = bootstrap(
                listener,
                admin,
                upstream.port,
                sidecar_port,
                sidecar_timeout_ms,
                &config.payee,
            );
            let envoy = start_envoy(&yaml, admin).await;
            gates.push(Gate {
                envoy,
                sidecar,
                listener,
                bootstrap: yaml,
                admin,
            });
        }
        let stack = Stack {
            gates,
            upstream,
            devnet,
            payee: config.payee,
            config,
            seed,
            next_wallet: AtomicU32::new(0),
            store,
            dir,
            remove_dir,
            lock: tokio::sync::Mutex::new(()),
        };
        for g in 0..stack.gates.len() {
            stack.wait_for_key(g).await;
        }
        eprintln!(
            "stack up in {:?}: {} gate(s), store {:?}, devnet {}",
            started.elapsed(),
            stack.gates.len(),
            stack.config.store,
            stack.devnet.rpc_url()
        );
        stack
    }

    /// Paid routes answer 503 until the filter holds the challenge key.
    async fn wait_for_key(&self, gate: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get_via(gate, "/paid/warmup", &[]).await;
            if r.status == 402 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gate {gate}: the filter never got a challenge key (last status {}):\n{}",
                r.status,
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn gate(&self, i: usize) -> &Gate {
        &self.gates[i]
    }

    pub fn gate_mut(&mut self, i: usize) -> &mut Gate {
        &mut self.gates[i]
    }

    /// `http://127.0.0.1:<gate 0 listener><path>`
    pub fn url(&self, path: &str) -> String {
        self.gates[0].url(path)
    }

    /// The resource URL challenges name for `path` (requests carry `Host: api.nanogate.test`).
    pub fn resource(path: &str) -> String {
        format!("http://{HOST}{path}")
    }

    pub fn ledger(&self) -> LedgerHandle {
        self.devnet.ledger()
    }

    /// The next funded payer account (each test uses its own, so frontiers never collide).
    pub fn wallet(&self) -> Wallet {
        let index = self.next_wallet.fetch_add(1, Ordering::Relaxed);
        assert!(
            index < self.config.wallets,
            "all {} funded wallets are used: raise StackConfig::wallets",
            self.config.wallets
        );
        Wallet {
            seed: self.seed,
            index,
            key: PrivateKey::from_seed(&self.seed, index),
        }
    }

    /// A GET through gate 0 with `Host: api.nanogate.test`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.get_via(0, path, headers).await
    }

    /// A GET through `gate` with `Host: api.nanogate.test` (unless `headers` name a host).
    pub async fn get_via(&self, gate: usize, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request_via(gate, "GET", path, headers).await
    }

    pub async fn request_via(
        &self,
        gate: usize,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        // A client per request: tests run on their own runtimes, a pooled connection must not
        // outlive the runtime that opened it.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(self.config.max_wait_secs + 60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client.request(method, self.gates[gate].url(path));
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            req = req.header("host", HOST);
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let t = Instant::now();
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {path} through gate {gate}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Reply {
            status,
            headers,
            body,
            elapsed: t.elapsed(),
        }
    }

    /// A fresh 402 challenge for `path` at `gate`.
    pub async fn challenge(&self, gate: usize, path: &str) -> Challenge {
        let r = self.get_via(gate, path, &[]).await;
        assert_eq!(r.status, 402, "unpaid {path}: {}", r.text());
        Challenge {
            required: r.payment_required(),
            raw: r.payment_required_json(),
        }
    }

    /// A send of `amount` from `key` to `to`, signed on the account's current frontier and
    /// balance (dev work). Not processed.
    pub fn send_block(&self, key: &PrivateKey, to: PublicKey, amount: u128) -> StateBlock {
        let a = self
            .ledger()
            .account(&key.public_key())
            .expect("the payer's account is open");
        signed_block(
            key,
            a.frontier,
            a.representative,
            a.balance.saturating_sub(amount),
            to.0,
        )
    }

    /// A state block from `key` on its current frontier with an arbitrary new balance and link.
    pub fn block_with(&self, key: &PrivateKey, balance: u128, link: [u8; 32]) -> StateBlock {
        let a = self
            .ledger()
            .account(&key.public_key())
            .expect("the payer's account is open");
        signed_block(key, a.frontier, a.representative, balance, link)
    }

    /// A challenge for `path` at `gate` and an honest payment for it from `wallet`:
    /// `(PAYMENT-SIGNATURE value, block)`.
    pub async fn pay_header(
        &self,
        gate: usize,
        path: &str,
        wallet: &Wallet,
    ) -> (String, StateBlock) {
        let c = self.challenge(gate, path).await;
        let amount = nanogate_protocol::nano::parse_raw(&c.required.accepts[0].amount)
            .expect("amount parses");
        let block = self.send_block(&wallet.key, self.payee, amount);
        (c.header_for(&block), block)
    }

    /// Whether the devnet holds `hash` confirmed (waits up to `timeout` for it).
    pub async fn confirmed(&self, hash: &BlockHash, timeout: Duration) -> bool {
        self.ledger().wait_confirmed(hash, timeout).await
    }

    /// Requests the upstream saw for `path` (query ignored).
    pub fn upstream_hits(&self, path: &str) -> usize {
        self.upstream.requests_to(path).len()
    }

    /// The scratch directory (configs, logs, SQLite files).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The tail of every log, for failure messages.
    pub fn diagnostics(&self) -> String {
        fn tail(s: &str, n: usize) -> String {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        let mut out = String::new();
        for (i, g) in self.gates.iter().enumerate() {
            out.push_str(&format!(
                "--- gate {i} envoy log (tail) ---\n{}\n--- gate {i} sidecar log (tail) ---\n{}\n",
                tail(&g.envoy.log(), 40),
                tail(&g.sidecar.log(), 40)
            ));
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.gates.clear();
        if let StoreHandle::Postgres { url, schema } = &self.store {
            drop_schema_blocking(url.clone(), schema.clone());
        }
        if self.remove_dir && std::env::var_os("NANOGATE_KEEP_E2E_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A stack shared by every test of one test binary: started once on a thread of its own (with
/// its own runtime, so it outlives each test's runtime) and never dropped; its processes die
/// with the test process (PDEATHSIG) and its leftovers are swept by the next run.
pub fn shared(
    cell: &'static OnceLock<&'static Stack>,
    config: impl FnOnce() -> StackConfig + Send + 'static,
) -> &'static Stack {
    static STARTING: Mutex<()> = Mutex::new(());
    if let Some(s) = cell.get() {
        return s;
    }
    let _g = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = cell.get() {
        return s;
    }
    let (tx, rx) = std::sync::mpsc::channel::<&'static Stack>();
    std::thread::Builder::new()
        .name("e2e-stack".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("stack runtime");
            rt.block_on(async move {
                let stack: &'static Stack = Box::leak(Box::new(Stack::start(config()).await));
                let _ = tx.send(stack);
                std::future::pending::<()>().await;
            });
        })
        .expect("spawn the stack thread");
    let stack = rx
        .recv()
        .expect("the shared stack failed to start (see the panic above)");
    let _ = cell.set(stack);
    stack
}
