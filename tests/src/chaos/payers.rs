//! The payers of a chaos run. Each owns one funded account and makes a bounded series of paid
//! requests, each to its own URL, with one mechanism:
//!
//! - **signed block** through the real payer library (`nanogate_client::Payer`): a request
//!   that was not served is fetched again, and the library re-presents its journalled block
//!   (or pays anew only when the ledger proves the old block can never settle);
//! - **tagged session** as a wallet pays one: take the 402's session offer, publish a send of
//!   exactly its amount, wait for confirmation, present session + hash. A request that was not
//!   served presents the *same* session and hash again; only a send the ledger rolled back
//!   (lost to a fork: the account moved past its previous block) is replaced by a new one.
//!
//! So no request is ever paid twice, and every payment made is listed with its request.

use crate::stack::{Wallet, HOST};
use nanogate_client::{
    build_send_block, parse_challenge, tagged_header, tagged_offer, BlockStatus, NodeRpc, Offer,
    PayError, Payer, PayerConfig, Progress, RequestSpec,
};
use nanogate_protocol::nano::StateBlock;
use nanogate_protocol::x402::{decode_header, SettlementResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How a payer pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    SignedBlock,
    Tagged,
}

impl Mechanism {
    /// The route prefix its requests go to (the bootstrap's `/paid/` and `/tagged/` routes).
    pub fn prefix(self) -> &'static str {
        match self {
            Mechanism::SignedBlock => "/paid/chaos/",
            Mechanism::Tagged => "/tagged/chaos/",
        }
    }
}

/// Where the payers send their requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:<listener>` of every gate.
    pub gates: Vec<String>,
    pub rpc_url: String,
    /// Scratch space (journals).
    pub dir: PathBuf,
}

/// One request and everything that happened to it.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub payer: usize,
    pub mechanism: Mechanism,
    pub method: String,
    pub path: String,
    pub attempts: u32,
    /// The block hash whose receipt came with the 2xx that served it.
    pub served: Option<String>,
    /// Every block signed (and possibly sent) for this request, oldest first.
    pub hashes: Vec<String>,
    /// What the last attempt ended with.
    pub last: String,
    /// What the attempts ended with, oldest first (shortened), with how many times in a row.
    pub trail: Vec<(String, u32)>,
    /// The x402 reason when the last attempt's payment was refused with a 402.
    pub refused: Option<String>,
}

/// A tagged payment as a wallet remembers it.
struct TaggedPayment {
    offer: Offer,
    session: String,
    block: StateBlock,
    resource: Option<Value>,
}

/// A payer's plan and state.
pub struct ChaosPayer {
    index: usize,
    mechanism: Mechanism,
    wallet: Wallet,
    target: Target,
    rng: StdRng,
    payer: Payer,
    rpc: NodeRpc,
    http: reqwest::Client,
    /// Hashes the payer library announces, for the request in flight.
    signed: Arc<Mutex<Vec<String>>>,
    requests: Vec<RequestLog>,
    tagged: Vec<Option<TaggedPayment>>,
    /// The gate each request goes to (a signed-block request keeps its gate: the payer
    /// library journals by URL).
    gates: Vec<usize>,
}

/// Longest wait for one HTTP exchange: the filter's settlement wait plus a slow upstream.
const HTTP_TIMEOUT: Duration = Duration::from_secs(45);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChaosPayer {
    pub fn new(
        index: usize,
        mechanism: Mechanism,
        wallet: Wallet,
        target: Target,
        seed: u64,
    ) -> Result<ChaosPayer, String> {
        let signed: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&signed);
        let mut config = PayerConfig::new(
            target.rpc_url.clone(),
            wallet.key.clone(),
            target.dir.join(format!("payer-{index}.journal.json")),
        );
        config.http_timeout = HTTP_TIMEOUT;
        config.rpc_timeout = RPC_TIMEOUT;
        config.progress = Some(Arc::new(move |p: &Progress| {
            if let Progress::Paying { hash } = p {
                lock(&sink).push(hash.clone());
            }
        }));
        let payer = Payer::new(config).map_err(|e| format!("payer {index}: {e}"))?;
        let rpc = NodeRpc::new(target.rpc_url.clone(), RPC_TIMEOUT)
            .map_err(|e| format!("payer {index}: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("payer {index}: {e}"))?;
        Ok(ChaosPayer {
            index,
            mechanism,
            wallet,
            target,
            rng: StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            payer,
            rpc,
            http,
            signed,
            requests: Vec::new(),
            tagged: Vec::new(),
            gates: Vec::new(),
        })
    }

    /// Makes up to `max_requests` requests until `until`, retrying each unserved one a few
    /// times while faults go on.
    pub async fn drive(&mut self, until: Instant, max_requests: usize) {
        for n in 0..max_requests {
            if Instant::now() >= until {
                break;
            }
            let post = self.rng.gen_bool(0.3);
            let gate = self.rng.gen_range(0..self.target.gates.len());
            self.requests.push(RequestLog {
                payer: self.index,
                mechanism: self.mechanism,
                method: if post { "POST" } else { "GET" }.into(),
                path: format!("{}p{}/r{n}", self.mechanism.prefix(), self.index),
                attempts: 0,
                served: None,
                hashes: Vec::new(),
                last: String::new(),
                trail: Vec::new(),
                refused: None,
            });
            self.tagged.push(None);
            self.gates.push(gate);
            let i = self.requests.len() - 1;
            for _ in 0..3 {
                self.attempt(i).await;
                if self.requests[i].served.is_some() || Instant::now() >= until {
                    break;
                }
                let pause = self.rng.gen_range(500..2500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let think = self.rng.gen_range(50..400);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    /// Faults are lifted: retries every request not served yet until all are, or `until`.
    pub async fn settle(&mut self, until: Instant) {
        loop {
            let open: Vec<usize> = (0..self.requests.len())
                .filter(|i| self.requests[*i].served.is_none())
                .collect();
            if open.is_empty() {
                return;
            }
            for i in open {
                if Instant::now() >= until {
                    return;
                }
                self.attempt(i).await;
            }
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    pub fn into_requests(self) -> Vec<RequestLog> {
        self.requests
    }

    fn body_of(&self, i: usize) -> Option<Vec<u8>> {
        let r = &self.requests[i];
        (r.method == "POST").then(|| format!("{{\"request\":\"{}\"}}", r.path).into_bytes())
    }

    async fn attempt(&mut self, i: usize) {
        self.requests[i].attempts += 1;
        self.requests[i].refused = None;
        let last = match self.mechanism {
            Mechanism::SignedBlock => self.attempt_signed(i).await,
            Mechanism::Tagged => self.attempt_tagged(i).await,
        };
        let r = &mut self.requests[i];
        let short: String = last.chars().take(160).collect();
        // Repeats are counted, not listed: "HTTP 503 ×3".
        match r.trail.last_mut() {
            Some((prev, n)) if *prev == short => *n += 1,
            _ => r.trail.push((short, 1)),
        }
        r.last = last;
    }

    async fn attempt_signed(&mut self, i: usize) -> String {
        let r = &self.requests[i];
        let url = format!("{}{}", self.target.gates[self.gates[i]], r.path);
        let mut spec = match self.body_of(i) {
            Some(b) => RequestSpec::post(url, b),
            None => RequestSpec::get(url),
        };
        spec = spec.header("host", HOST);
        lock(&self.signed).clear();
        let result = self.payer.fetch(spec).await;
        let new: Vec<String> = std::mem::take(&mut *lock(&self.signed));
        let r = &mut self.requests[i];
        for h in new {
            if !r.hashes.contains(&h) {
                r.hashes.push(h);
            }
        }
        match result {
            Ok(resp) if (200..300).contains(&resp.status) && resp.receipt_matches => {
                r.served = resp.payment.map(|p| p.hash.to_ascii_uppercase());
                "served".into()
            }
            Ok(resp) => format!(
                "HTTP {}{}",
                resp.status,
                match (&resp.payment, resp.paid) {
                    (None, _) => " to the unpaid request",
                    (Some(_), true) => " with a receipt",
                    (Some(_), false) => " to the payment, no receipt",
                }
            ),
            // The hash is in the request's list already: keep the reason.
            Err(PayError::PaidButRefused { reason, .. }) => {
                let text = format!("confirmed, but refused: {reason}");
                // The library prefixes the x402 reason ("already_spent: message").
                let code = reason.split(':').next().unwrap_or_default().trim();
                r.refused = Some(code.to_owned());
                text
            }
            Err(PayError::PaymentPending { reason, .. }) => format!("pending: {reason}"),
            Err(e) => e.to_string(),
        }
    }

    async fn send(
        &self,
        i: usize,
        gate: usize,
        payment: Option<String>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), String> {
        let r = &self.requests[i];
        let url = format!("{}{}", self.target.gates[gate], r.path);
        let method = if r.method == "POST" {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let mut req = self.http.request(method, &url).header("host", HOST);
        if let Some(b) = self.body_of(i) {
            req = req.body(b);
        }
        if let Some(p) = payment {
            req = req.header("payment-signature", p);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Ok((status, headers, body))
    }

    /// One attempt of a tagged request: pay if nothing usable was sent for it yet, then
    /// present the payment.
    async fn attempt_tagged(&mut self, i: usize) -> String {
        let gate = self.rng.gen_range(0..self.target.gates.len());
        if self.tagged[i].is_none() {
            match self.pay_tagged(i, gate).await {
                Ok(p) => self.tagged[i] = Some(p),
                Err(why) => return why,
            }
        }
        let Some(p) = self.tagged[i].as_ref() else {
            return "no payment".into();
        };
        let hash = p.block.hash();
        match self.rpc.block_status(&hash).await {
            Err(e) => return format!("block_status: {e}"),
            Ok(BlockStatus::NotFound) => {
                let info = match self.rpc.account_info(&self.wallet.account()).await {
                    Ok(Some(info)) => info,
                    Ok(None) => return "our account is unknown to the node".into(),
                    Err(e) => return format!("account_info: {e}"),
                };
                if info.frontier != p.block.previous {
                    // Rolled back (lost to a fork) or never published and superseded: it can
                    // never settle now, so the next attempt pays anew.
                    self.tagged[i] = None;
                    return format!("send {hash} is not on the ledger and can no longer settle");
                }
                // Never published: publish the very same block again.
                return match self.process(&p.block).await {
                    Ok(()) => format!("republished {hash}"),
                    Err(e) => e,
                };
            }
            Ok(BlockStatus::Unconfirmed) => {
                let _ = self
                    .rpc
                    .call("block_confirm", json!({"hash": hash.to_hex()}))
                    .await;
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if matches!(
                        self.rpc.block_status(&hash).await,
                        Ok(BlockStatus::Confirmed)
                    ) {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return format!("send {hash} not confirmed yet");
                    }
                }
            }
            Ok(BlockStatus::Confirmed) => {}
        }
        let header = tagged_header(&p.offer, &p.session, &hash, p.resource.as_ref());
        match self.send(i, gate, Some(header)).await {
            Err(e) => e,
            Ok((status, headers, body)) => {
                let receipt = headers
                    .get("payment-response")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| decode_header::<SettlementResponse>(v, 64 * 1024).ok());
                let named = receipt.as_ref().is_some_and(|r| {
                    r.success && r.transaction.eq_ignore_ascii_case(&hash.to_hex())
                });
                if (200..300).contains(&status) && named {
                    self.requests[i].served = Some(hash.to_hex());
                    return "served".into();
                }
                let reason = headers
                    .get("payment-required")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_challenge(Some(v), &body).ok())
                    .and_then(|c| c.error);
                if status == 402 {
                    self.requests[i].refused = reason.clone();
                }
                format!("HTTP {status} {}", reason.unwrap_or_default())
            }
        }
    }

    /// Takes the 402's session offer and publishes a send of exactly its amount.
    async fn pay_tagged(&mut self, i: usize, gate: usize) -> Result<TaggedPayment, String> {
        let (status, headers, body) = self.send(i, gate, None).await?;
        if status != 402 {
            return Err(format!("HTTP {status} to an unpaid request"));
        }
        let challenge = parse_challenge(
            headers
                .get("payment-required")
                .and_then(|v| v.to_str().ok()),
            &body,
        )
        .map_err(|e| e.to_string())?;
        // An empty session pool (a fresh Envoy, a sidecar down) offers only signed blocks.
        let (offer, session) =
            tagged_offer(&challenge, u128::MAX).map_err(|e| format!("no session: {e}"))?;
        let valid_before = offer
            .raw
            .pointer("/extra/validBefore")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if valid_before <= now_unix() + 30 {
            return Err("session about to expire".into());
        }
        // As a wallet does: build on our own confirmed head block.
        let deadline = Instant::now() + Duration::from_secs(10);
        let info = loop {
            let state = self
                .rpc
                .account_state(&self.wallet.account())
                .await
                .map_err(|e| format!("account_info: {e}"))?
                .ok_or("our account is not open")?;
            if state.frontier_confirmed() || Instant::now() >= deadline {
                break state.info;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let root = info.frontier.0;
        let work = tokio::task::spawn_blocking(move || nanogate_devnet::blocks::dev_work(&root))
            .await
            .map_err(|e| format!("work: {e}"))?;
        let block = build_send_block(
            &offer.pay_to_key,
            offer.amount,
            &info,
            &self.wallet.key,
            work,
        )
        .map_err(|e| e.to_string())?;
        self.requests[i].hashes.push(block.hash().to_hex());
        // Remembered before it is sent: from here on this request is paid with this block.
        let payment = TaggedPayment {
            offer,
            session,
            block,
            resource: challenge.resource.clone(),
        };
        // Published or not (an RPC fault may hide the answer), the status check that follows
        // decides, and republishes the very same block when the ledger never saw it.
        let _ = self.process(&payment.block).await;
        Ok(payment)
    }

    async fn process(&self, block: &StateBlock) -> Result<(), String> {
        let answer = self
            .rpc
            .call(
                "process",
                json!({"json_block": "true", "subtype": "send", "block": block.to_json()}),
            )
            .await
            .map_err(|e| format!("process: {e}"))?;
        match answer.get("error").and_then(Value::as_str) {
            // Already there: fine.
            Some("Old block") | None => Ok(()),
            Some(e) => Err(format!("process {}: {e}", block.hash())),
        }
    }
}
