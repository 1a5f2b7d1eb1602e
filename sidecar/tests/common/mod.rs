//! Shared test harness: a devnet in-process on free ports, a sidecar served on a free port over
//! a SQLite temp file or a unique PostgreSQL schema, and payment builders.
#![allow(dead_code)]

use nanogate_devnet::{Confirm, Devnet, DevnetConfig};
use nanogate_protocol::challenge::{self, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::nano::work::generate;
use nanogate_protocol::nano::{BlockHash, Network, PrivateKey, PublicKey, Signature, StateBlock};
use nanogate_protocol::x402::PaymentRequirements;
use nanogate_sidecar::config::Config;
use nanogate_sidecar::keys::ChallengeKeys;
use nanogate_sidecar::server;
use nanogate_sidecar::state::AppState;
use nanogate_sidecar::store::postgres::PgStore;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

// The wire names every test binary reads from protocol (each uses a subset, like the
// helpers in this file).
#[allow(unused_imports)]
pub use nanogate_protocol::contract::{headers, paths, ASSET_XNO, SCHEME_EXACT};
#[allow(unused_imports)]
pub use nanogate_sidecar::store::payments::{SIGNED_BLOCK, TAGGED};

pub const FILTER_SECRET: &str = "test-filter-secret-0123456789";
pub const CHALLENGE_SECRET: &str = "test-challenge-master-secret-0123456789";
pub const TOKEN: &str = "test-facilitator-token-0123456789";
pub const NETWORK: &str = "nano:devnet";
pub const XNO: u128 = 1_000_000_000_000_000_000_000_000_000_000;
pub const PRICE: u128 = XNO / 1000;
pub const RESOURCE: &str = "http://api.test/paid/report";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        nanogate_protocol::hex::encode_lower(&rand::random::<[u8; 6]>())
    )
}

pub fn key(n: u8) -> PrivateKey {
    PrivateKey::from_seed(&[n; 32], 0)
}

pub fn payee() -> PublicKey {
    key(200).public_key()
}

/// A devnet with `payers` funded with 1 XNO each.
pub async fn devnet(payers: &[&PrivateKey], confirm: Confirm) -> Devnet {
    let mut cfg = DevnetConfig::local();
    cfg.confirm = confirm;
    cfg.fund = payers.iter().map(|k| (k.public_key(), XNO)).collect();
    Devnet::start(cfg).await.expect("devnet starts")
}

/// Where a test's sidecar keeps its state; removed on drop.
pub enum Db {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Db {
    pub fn sqlite() -> Db {
        Db::Sqlite(std::env::temp_dir().join(format!("{}.db", unique("nanogate_sidecar_test"))))
    }

    pub fn postgres() -> Db {
        Db::Postgres {
            url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            schema: unique("ng_test"),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(p) => format!("sqlite://{}", p.display()),
            Db::Postgres { url, .. } => url.clone(),
        }
    }

    pub fn schema(&self) -> Option<String> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres { schema, .. } => Some(schema.clone()),
        }
    }

    pub async fn cleanup(&self) {
        match self {
            Db::Sqlite(p) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
                }
            }
            Db::Postgres { url, schema } => {
                let _ = PgStore::drop_schema(url, schema).await;
            }
        }
    }
}

impl Drop for Db {
    /// Removes SQLite files even when a test panics (PostgreSQL schemas need `cleanup`).
    fn drop(&mut self) {
        if let Db::Sqlite(p) = self {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
            }
        }
    }
}

pub fn config(rpc: Vec<String>, ws: Vec<String>, db: &Db) -> Config {
    let mut c = Config {
        network: NETWORK.into(),
        node_network: "dev".into(),
        filter_secret: Some(FILTER_SECRET.into()),
        challenge_secret: Some(CHALLENGE_SECRET.into()),
        ..Config::default()
    };
    c.facilitator.token = Some(TOKEN.into());
    c.nodes.rpc = rpc;
    c.nodes.ws = ws;
    c.nodes.call_timeout_ms = 1_000;
    c.nodes.retries = 0;
    c.store.database_url = db.url();
    c.store.postgres_schema = db.schema();
    c.settlement.max_wait_secs = 5;
    c
}

pub fn devnet_config(d: &Devnet, db: &Db) -> Config {
    config(vec![d.rpc_url()], vec![d.ws_url()], db)
}

/// A sidecar served on a free loopback port.
pub struct Sidecar {
    pub base: String,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sidecar {
    pub async fn start(cfg: &Config) -> Sidecar {
        let state = server::open_state(cfg).await.expect("sidecar state");
        Self::serve(state).await
    }

    pub async fn serve(state: AppState) -> Sidecar {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = state.clone();
        let task = tokio::spawn(async move {
            let _ = server::serve(
                listener,
                s,
                async move {
                    let _ = rx.await;
                },
                Duration::from_secs(10),
            )
            .await;
        });
        Sidecar {
            base,
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful stop: waits for in-flight settlements.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub async fn pay(&self, requirements: &PaymentRequirements, payment: &Value) -> Value {
        pay_at(&self.base, RESOURCE, requirements, payment).await
    }

    /// Reports an outcome as the filter does: with the token of the receipt's latest admission
    /// made through [`pay_at`].
    pub async fn outcome(&self, receipt: &str, status: u16) -> Value {
        let token = admission_tokens()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(receipt)
            .cloned();
        self.outcome_with(receipt, status, token.as_deref()).await.1
    }

    /// `POST /v1/outcome` with the given admission token (or none): (HTTP status, body).
    pub async fn outcome_with(
        &self,
        receipt: &str,
        status: u16,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut body = json!({"receipt": receipt, "status": status});
        if let Some(t) = token {
            body["admissionToken"] = json!(t);
        }
        let resp = http()
            .post(format!("{}{}", self.base, paths::OUTCOME))
            .header(headers::SECRET, FILTER_SECRET)
            .json(&body)
            .send()
            .await
            .expect("outcome");
        let code = resp.status().as_u16();
        (code, resp.json().await.expect("outcome json"))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub async fn pay_at(
    base: &str,
    resource: &str,
    requirements: &PaymentRequirements,
    payment: &Value,
) -> Value {
    let resp = http()
        .post(format!("{base}{}", paths::PAY))
        .header(headers::SECRET, FILTER_SECRET)
        .json(&json!({"resource": resource, "requirements": requirements, "payment": payment}))
        .send()
        .await
        .expect("pay");
    assert_eq!(resp.status(), 200, "verdicts are always HTTP 200");
    assert_eq!(
        resp.headers().get(headers::VERDICT).map(|v| v.as_bytes()),
        Some(headers::VERDICT_MARKER.as_bytes())
    );
    let v: Value = resp.json().await.expect("verdict json");
    if let (Some(r), Some(t)) = (v["receipt"].as_str(), v["admissionToken"].as_str()) {
        admission_tokens()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(r.to_owned(), t.to_owned());
    }
    v
}

/// The admission token of each receipt's latest admission seen by [`pay_at`] (what the filter
/// keeps in the request's context).
fn admission_tokens() -> &'static std::sync::Mutex<std::collections::HashMap<String, String>> {
    static TOKENS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, String>>,
    > = std::sync::OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// Requirements as the filter issues them: terms from its route config, stamp + MAC in extra.
pub fn challenge_for(
    resource: &str,
    amount: u128,
    pay_to: PublicKey,
    valid_for: u64,
) -> PaymentRequirements {
    let keys = ChallengeKeys::new(CHALLENGE_SECRET.as_bytes().to_vec(), 300);
    let now = now();
    let k = keys.current(now);
    let stamp = ChallengeStamp {
        valid_before: now + valid_for,
        nonce: rand::random(),
        key_id: k.key_id,
    };
    let terms = ChallengeTerms {
        network: NETWORK,
        scheme: SCHEME_EXACT,
        asset: ASSET_XNO,
        pay_to,
        amount,
        resource,
        mechanism: Mechanism::SignedBlock,
    };
    PaymentRequirements {
        scheme: SCHEME_EXACT.into(),
        network: NETWORK.into(),
        amount: amount.to_string(),
        asset: ASSET_XNO.into(),
        pay_to: pay_to.to_address(),
        max_timeout_seconds: valid_for,
        extra: challenge::extra(&k.key, &terms, &stamp),
    }
}

pub fn challenge() -> PaymentRequirements {
    challenge_for(RESOURCE, PRICE, payee(), 60)
}

/// Work at the dev network's send threshold (what the sidecar requires).
pub fn send_work(root: &[u8; 32]) -> u64 {
    generate(root, Network::Dev.thresholds().send())
}

/// A signed send from `payer` on `previous` leaving `balance_after`, paying `to`.
pub fn send_block(
    payer: &PrivateKey,
    previous: BlockHash,
    balance_after: u128,
    to: PublicKey,
) -> StateBlock {
    let mut b = StateBlock {
        account: payer.public_key(),
        previous,
        representative: payer.public_key(),
        balance: balance_after,
        link: to.0,
        signature: Signature([0; 64]),
        work: 0,
    };
    b.work = send_work(&b.root());
    b.sign(payer);
    b
}

/// The payer's current frontier and balance on the devnet.
pub fn head(d: &Devnet, payer: &PrivateKey) -> (BlockHash, u128) {
    let a = d
        .ledger()
        .account(&payer.public_key())
        .expect("payer account");
    (a.frontier, a.balance)
}

/// A correct payment of `amount` to `to` from `payer`'s current head.
pub fn good_block(d: &Devnet, payer: &PrivateKey, amount: u128, to: PublicKey) -> StateBlock {
    let (frontier, balance) = head(d, payer);
    send_block(payer, frontier, balance - amount, to)
}

/// A v2 PaymentPayload carrying `block`, echoing `requirements` as `accepted`.
pub fn payment(requirements: &PaymentRequirements, block: &StateBlock) -> Value {
    json!({
        "x402Version": 2,
        "resource": {"url": RESOURCE},
        "accepted": requirements,
        "payload": {"block": block.to_json()},
        "extensions": {},
    })
}

pub fn verdict(v: &Value) -> &str {
    v["verdict"].as_str().unwrap_or("?")
}

pub fn reason(v: &Value) -> &str {
    v["reason"].as_str().unwrap_or("")
}

pub fn assert_admit(v: &Value) {
    assert_eq!(verdict(v), "admit", "expected admit, got {v}");
}

pub fn assert_reject(v: &Value, want: &str) {
    assert_eq!(verdict(v), "reject", "expected reject {want}, got {v}");
    assert_eq!(reason(v), want, "{v}");
}
