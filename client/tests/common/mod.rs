//! Test fixture: a devnet ledger, a small axum "resource server" (the shop) that issues real
//! nanogate challenges and settles signed blocks through the devnet's RPC, and an optional
//! RPC proxy that refuses `work_generate` like a node without RPC control.
#![allow(clippy::unwrap_used, dead_code)]

pub mod pass_shop;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use nanogate_client::{
    journal_key, usable_offer, AccountInfo, ChallengeVersion, JournalEntry, Payer, PayerConfig,
    Progress, SignedPayment,
};
use nanogate_devnet::{Devnet, DevnetConfig, LedgerHandle};
use nanogate_protocol::challenge::{self, ChallengeKey, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::nano::{PrivateKey, PublicKey, WorkThresholds, RAW_PER_XNO};
use nanogate_protocol::x402::{
    decode_payment, encode_header, ErrorReason, PaymentRequired, PaymentRequiredV1,
    PaymentRequirements, PaymentRequirementsV1, ResourceInfo, SettlementResponse, X402Version,
    MAX_HEADER_BYTES,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const NETWORK: &str = "nano:devnet";
/// 0.001 XNO.
pub const PRICE: u128 = RAW_PER_XNO / 1000;
/// What the payer starts with: 1 XNO.
pub const FUNDED: u128 = RAW_PER_XNO;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn payer_seed() -> [u8; 32] {
    [0x42; 32]
}

pub fn payer_key() -> PrivateKey {
    PrivateKey::from_seed(&payer_seed(), 0)
}

pub struct ShopState {
    pub ledger: LedgerHandle,
    pub rpc_url: String,
    pub http: reqwest::Client,
    pub key: ChallengeKey,
    pub pay_to: PublicKey,
    pub base: String,
    nonce: AtomicU64,
    pub settled: Mutex<HashSet<String>>,
    /// Settle the next paid request, then never answer it (a lost response).
    pub drop_next_paid_response: AtomicBool,
    /// Settle the next paid request, then answer 502 (the upstream failed).
    pub fail_next_paid_response: AtomicBool,
    /// Refuse a payment we already settled instead of serving it again.
    pub refuse_re_presentation: AtomicBool,
    /// Paid requests seen (any outcome).
    pub paid_attempts: AtomicUsize,
    /// Blocks published and confirmed.
    pub settlements: AtomicUsize,
    /// The last payment header's name and decoded JSON.
    pub last_payment: Mutex<Option<(String, Value)>>,
    /// The last `accepts[0]` we issued, as JSON.
    pub last_offer: Mutex<Option<Value>>,
    /// Prepaid passes (`/pass/`, `/web/`, `/pass-bad/`).
    pub pass_book: pass_shop::PassBook,
}

pub struct Shop {
    pub addr: SocketAddr,
    pub state: Arc<ShopState>,
}

impl Shop {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn reply(status: StatusCode, headers: Vec<(&'static str, String)>, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    for (k, v) in headers {
        r.headers_mut().insert(k, v.parse().unwrap());
    }
    r
}

fn price_of(path: &str) -> u128 {
    match path {
        "/expensive" => RAW_PER_XNO,
        _ => PRICE,
    }
}

impl ShopState {
    fn terms<'a>(&self, resource: &'a str, amount: u128) -> ChallengeTerms<'a> {
        ChallengeTerms {
            network: NETWORK,
            scheme: "exact",
            asset: "XNO",
            pay_to: self.pay_to,
            amount,
            resource,
            mechanism: Mechanism::SignedBlock,
        }
    }

    /// A v2 402 with a MAC-bound challenge, in the header and the body.
    fn challenge_v2(&self, resource: &str, amount: u128, reason: Option<ErrorReason>) -> Response {
        let n = self.nonce.fetch_add(1, Ordering::SeqCst);
        let mut nonce = [0u8; 16];
        nonce[8..].copy_from_slice(&n.to_be_bytes());
        let stamp = ChallengeStamp {
            valid_before: now() + 120,
            nonce,
            key_id: 1,
        };
        let extra = challenge::extra(&self.key, &self.terms(resource, amount), &stamp);
        let offer = PaymentRequirements {
            scheme: "exact".into(),
            network: NETWORK.into(),
            amount: amount.to_string(),
            asset: "XNO".into(),
            pay_to: self.pay_to.to_address(),
            max_timeout_seconds: 30,
            extra,
        };
        *self.last_offer.lock().unwrap() = Some(serde_json::to_value(&offer).unwrap());
        let pr = PaymentRequired::new(
            reason,
            ResourceInfo {
                url: resource.into(),
                description: Some("a paid report".into()),
                mime_type: Some("text/plain".into()),
            },
            vec![offer],
        );
        reply(
            StatusCode::PAYMENT_REQUIRED,
            vec![("PAYMENT-REQUIRED", encode_header(&pr))],
            serde_json::to_value(&pr).unwrap(),
        )
    }

    fn challenge_v1(&self, resource: &str, error: &str) -> Response {
        let offer = PaymentRequirementsV1 {
            scheme: "exact".into(),
            network: NETWORK.into(),
            max_amount_required: PRICE.to_string(),
            resource: resource.into(),
            description: "a v1 paid report".into(),
            mime_type: None,
            output_schema: None,
            pay_to: self.pay_to.to_address(),
            max_timeout_seconds: 30,
            asset: "XNO".into(),
            extra: None,
        };
        let body = PaymentRequiredV1::new(error.into(), vec![offer]);
        reply(
            StatusCode::PAYMENT_REQUIRED,
            vec![],
            serde_json::to_value(&body).unwrap(),
        )
    }

    /// Checks the block against the ledger and our terms, publishes it and waits for
    /// confirmation. Ok(hash) when settled (or already settled by us).
    async fn settle(
        &self,
        header: &str,
        amount: u128,
        want: X402Version,
    ) -> Result<(String, String, bool), ErrorReason> {
        let p = decode_payment(header, MAX_HEADER_BYTES).map_err(|e| e.reason())?;
        if p.version() != want {
            return Err(ErrorReason::InvalidX402Version);
        }
        if p.network() != NETWORK || p.scheme() != "exact" {
            return Err(ErrorReason::InvalidNetwork);
        }
        let block = p.signed_block().map_err(|_| ErrorReason::InvalidPayload)?;
        if !block.signature_valid() {
            return Err(ErrorReason::InvalidSignature);
        }
        if block.link_as_key() != self.pay_to {
            return Err(ErrorReason::WrongDestination);
        }
        if block.work_difficulty() < WorkThresholds::DEV.send() {
            return Err(ErrorReason::InsufficientWork);
        }
        let hash = block.hash().to_hex();
        let payer = block.account.to_address();
        if self.settled.lock().unwrap().contains(&hash) {
            if self.refuse_re_presentation.load(Ordering::SeqCst) {
                return Err(ErrorReason::DuplicateSettlement);
            }
            return Ok((hash, payer, true));
        }
        let acct = self
            .ledger
            .account(&block.account)
            .ok_or(ErrorReason::InsufficientFunds)?;
        if acct.frontier != block.previous {
            return Err(ErrorReason::StaleFrontier);
        }
        if acct.balance.checked_sub(block.balance) != Some(amount) {
            return Err(ErrorReason::AmountMismatch);
        }
        let answer: Value = self
            .http
            .post(&self.rpc_url)
            .json(
                &json!({"action": "process", "json_block": "true", "subtype": "send",
                          "block": block.to_json()}),
            )
            .send()
            .await
            .map_err(|_| ErrorReason::LedgerUnavailable)?
            .json()
            .await
            .map_err(|_| ErrorReason::LedgerUnavailable)?;
        if answer.get("hash").is_none() {
            return Err(ErrorReason::BroadcastFailed);
        }
        if !self
            .ledger
            .wait_confirmed(&block.hash(), Duration::from_secs(20))
            .await
        {
            return Err(ErrorReason::BlockNotConfirmed);
        }
        self.settled.lock().unwrap().insert(hash.clone());
        self.settlements.fetch_add(1, Ordering::SeqCst);
        Ok((hash, payer, false))
    }

    async fn served(&self, hash: String, payer: String, resource: &str, v1: bool) -> Response {
        if self.drop_next_paid_response.swap(false, Ordering::SeqCst) {
            // Settled, but the answer never comes: the client's timeout fires first.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if self.fail_next_paid_response.swap(false, Ordering::SeqCst) {
            return reply(
                StatusCode::BAD_GATEWAY,
                vec![],
                json!({"error": "upstream failed"}),
            );
        }
        let receipt = SettlementResponse::success(hash, NETWORK.into(), Some(payer));
        let name = if v1 {
            "X-PAYMENT-RESPONSE"
        } else {
            "PAYMENT-RESPONSE"
        };
        reply(
            StatusCode::OK,
            vec![(name, encode_header(&receipt))],
            json!({"report": format!("paid content for {resource}")}),
        )
    }
}

async fn shop_handler(
    State(s): State<Arc<ShopState>>,
    uri: Uri,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let resource = format!(
        "{}{}",
        s.base,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(group) = pass_shop::group_of(&path) {
        return pass_shop::handle(&s, &path, group, &resource, &headers).await;
    }
    match path.as_str() {
        "/free" => reply(StatusCode::OK, vec![], json!({"free": true})),
        "/bad-b64" => reply(
            StatusCode::PAYMENT_REQUIRED,
            vec![("PAYMENT-REQUIRED", "%%%not-base64%%%".into())],
            json!({}),
        ),
        "/mainnet" => {
            let pr = json!({"x402Version": 2, "resource": {"url": resource},
                "accepts": [{"scheme": "exact", "network": "nano:mainnet", "asset": "XNO",
                             "amount": PRICE.to_string(), "payTo": s.pay_to.to_address(),
                             "maxTimeoutSeconds": 60, "extra": {}}]});
            reply(
                StatusCode::PAYMENT_REQUIRED,
                vec![("PAYMENT-REQUIRED", encode_header(&pr))],
                json!({}),
            )
        }
        "/no-offer" => {
            let pr = json!({"x402Version": 2, "resource": {"url": resource},
                "accepts": [{"scheme": "exact", "network": "eip155:8453", "asset": "USDC",
                             "amount": "1000", "payTo": "0xabc", "maxTimeoutSeconds": 60},
                            {"scheme": "exact", "network": NETWORK, "asset": "XNO",
                             "amount": "1000", "payTo": s.pay_to.to_address(),
                             "maxTimeoutSeconds": 60, "extra": {"session": {"id": "s"}}}]});
            reply(
                StatusCode::PAYMENT_REQUIRED,
                vec![("PAYMENT-REQUIRED", encode_header(&pr))],
                json!({}),
            )
        }
        "/v1" => match header("x-payment") {
            None => s.challenge_v1(&resource, "X-PAYMENT header is required"),
            Some(h) => {
                s.paid_attempts.fetch_add(1, Ordering::SeqCst);
                record(&s, "X-PAYMENT", &h);
                match s.settle(&h, PRICE, X402Version::V1).await {
                    Ok((hash, payer, _)) => s.served(hash, payer, &resource, true).await,
                    Err(r) => s.challenge_v1(&resource, r.as_str()),
                }
            }
        },
        _ => {
            let amount = price_of(&path);
            match header("payment-signature") {
                None if path == "/body-only" => {
                    // v2 challenge in the body only, as some servers do.
                    let mut r = s.challenge_v2(&resource, amount, None);
                    r.headers_mut().remove("PAYMENT-REQUIRED");
                    r
                }
                None => s.challenge_v2(&resource, amount, None),
                Some(h) => {
                    s.paid_attempts.fetch_add(1, Ordering::SeqCst);
                    record(&s, "PAYMENT-SIGNATURE", &h);
                    // Rebuild the terms from our own route and URL; only the stamp comes
                    // from the client (as the filter does).
                    let stamp_ok = decode_payment(&h, MAX_HEADER_BYTES)
                        .ok()
                        .and_then(|p| p.accepted().cloned())
                        .and_then(|a| challenge::read_extra(&a.extra).ok())
                        .is_some_and(|(stamp, mac)| {
                            challenge::verify(
                                &s.key,
                                &s.terms(&resource, amount),
                                &stamp,
                                &mac,
                                now(),
                            )
                            .is_ok()
                        });
                    if !stamp_ok {
                        return s.challenge_v2(
                            &resource,
                            amount,
                            Some(ErrorReason::InvalidChallenge),
                        );
                    }
                    match s.settle(&h, amount, X402Version::V2).await {
                        Ok((hash, payer, _)) => s.served(hash, payer, &resource, false).await,
                        Err(r) => s.challenge_v2(&resource, amount, Some(r)),
                    }
                }
            }
        }
    }
}

fn record(s: &ShopState, name: &str, header: &str) {
    let bytes = nanogate_protocol::x402::decode_header_bytes(header, MAX_HEADER_BYTES).unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    *s.last_payment.lock().unwrap() = Some((name.to_owned(), v));
}

pub async fn start_shop(devnet: &Devnet) -> Shop {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(ShopState {
        ledger: devnet.ledger(),
        rpc_url: devnet.rpc_url(),
        http: reqwest::Client::new(),
        key: ChallengeKey::derive(b"test master secret 0123456789", 1),
        pay_to: PrivateKey::from_bytes([0x77; 32]).public_key(),
        base: format!("http://{addr}"),
        nonce: AtomicU64::new(1),
        settled: Mutex::new(HashSet::new()),
        drop_next_paid_response: AtomicBool::new(false),
        fail_next_paid_response: AtomicBool::new(false),
        refuse_re_presentation: AtomicBool::new(false),
        paid_attempts: AtomicUsize::new(0),
        settlements: AtomicUsize::new(0),
        last_payment: Mutex::new(None),
        last_offer: Mutex::new(None),
        pass_book: Default::default(),
    });
    let app = Router::new()
        .fallback(any(shop_handler))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Shop { addr, state }
}

/// An RPC proxy in front of the devnet that refuses `work_generate` the way a node without
/// RPC control does, and counts the refusals.
pub async fn start_no_control_rpc(devnet_rpc: String) -> (String, Arc<AtomicUsize>) {
    let refused = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = (devnet_rpc, Arc::clone(&refused), reqwest::Client::new());
    let app = Router::new()
        .route(
            "/",
            post(
                |State((url, refused, http)): State<(
                    String,
                    Arc<AtomicUsize>,
                    reqwest::Client,
                )>,
                 Json(body): Json<Value>| async move {
                    if body["action"] == "work_generate" {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return Json(json!({"error": "RPC control is disabled"}));
                    }
                    let v: Value = http
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    Json(v)
                },
            ),
        )
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/"), refused)
}

pub struct Fixture {
    pub devnet: Devnet,
    pub shop: Shop,
    pub dir: PathBuf,
    pub events: Arc<Mutex<Vec<Progress>>>,
}

impl Fixture {
    pub async fn start(name: &str) -> Fixture {
        let devnet = Devnet::start(DevnetConfig {
            fund: vec![(payer_key().public_key(), FUNDED)],
            ..DevnetConfig::local()
        })
        .await
        .unwrap();
        let shop = start_shop(&devnet).await;
        let dir = std::env::temp_dir().join(format!(
            "nanogate-client-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Fixture {
            devnet,
            shop,
            dir,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.json")
    }

    pub fn config(&self) -> PayerConfig {
        let mut c = PayerConfig::new(self.devnet.rpc_url(), payer_key(), self.journal_path());
        c.http_timeout = Duration::from_secs(30);
        c.rpc_timeout = Duration::from_secs(30);
        let events = Arc::clone(&self.events);
        c.progress = Some(Arc::new(move |p: &Progress| {
            events.lock().unwrap().push(p.clone())
        }));
        c
    }

    pub fn payer(&self) -> Payer {
        Payer::new(self.config()).unwrap()
    }

    pub fn balance(&self) -> u128 {
        self.devnet.ledger().balance(&payer_key().public_key())
    }

    pub fn events(&self) -> Vec<Progress> {
        self.events.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        self.shop.url(path)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Journals, for `GET url`, a payment signed on the payer's current frontier whose challenge
/// MAC is fake: the shop refuses it (invalid_challenge) without publishing it.
pub fn journal_unpublishable(f: &Fixture, payer: &Payer, url: &str) -> SignedPayment {
    let key = payer_key();
    let acct = f.devnet.ledger().account(&key.public_key()).unwrap();
    let info = AccountInfo {
        frontier: acct.frontier,
        balance: acct.balance,
        representative: acct.representative,
    };
    let raw = json!({"scheme": "exact", "network": NETWORK, "asset": "XNO",
        "amount": PRICE.to_string(), "payTo": f.shop.state.pay_to.to_address(),
        "maxTimeoutSeconds": 30,
        "extra": {"validBefore": 1, "nonce": "00000000000000000000000000000000", "keyId": 1,
                  "mac": "00".repeat(32)}});
    let offer = usable_offer(0, &raw).unwrap();
    let work =
        nanogate_protocol::nano::work::generate(&info.frontier.0, WorkThresholds::DEV.send());
    let p =
        SignedPayment::new(ChallengeVersion::V2, &offer, None, None, &info, &key, work).unwrap();
    payer
        .journal()
        .put(
            &journal_key("GET", url, b""),
            JournalEntry::new("GET", url, b"", &p),
        )
        .unwrap();
    p
}
