//! The payer: request, read the 402, pay (or re-present a journalled payment), retry, read the
//! receipt.
//!
//! Retry safety (docs/x402-nano.md §5, §7), in order:
//! 1. Every signed block is journalled *before* it is sent.
//! 2. If a journal entry exists for the request and the server answers 402, the journalled
//!    payment (block and accepted offer, verbatim) is presented again; nothing new is signed.
//! 3. If the server refuses it, the ledger decides: confirmed → we paid; report the hash and
//!    stop. Published but unconfirmed → stop and retry later. Unknown to the ledger → it was
//!    never published, so a new block is signed on the frontier read *before* that check:
//!    either the frontier moved on (the old block can never be applied) or the new block
//!    forks the old one (at most one of the two can ever settle). Never twice.
//! 4. The entry is removed only after a 2xx whose receipt names our block.

use nanogate_protocol::nano::{
    format_xno, BlockHash, Network, PrivateKey, PublicKey, WorkThresholds, RAW_PER_XNO,
};
use nanogate_protocol::x402::{decode_header, headers, SettlementResponse};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

use crate::error::PayError;
use crate::journal::{journal_key, Journal, JournalEntry};
use crate::offer::{
    expected_node_network, parse_challenge, select_offer, thresholds_for_network, Challenge, Offer,
    MAX_CHALLENGE_HEADER_BYTES,
};
use crate::payment::SignedPayment;
use crate::rpc::{AccountInfo, BlockStatus, NodeRpc, NodeVersion};

mod tagged;
pub use tagged::{tagged_header, tagged_offer};

/// The devnet's (and a dev node's) default RPC address.
pub const DEFAULT_RPC_URL: &str = "http://127.0.0.1:45000";
/// How long we wait for our own head block to be confirmed before signing on it anyway.
pub const FRONTIER_CONFIRMATION_WAIT: Duration = Duration::from_secs(10);
/// Most of a 402 body we read (the challenge is a few KB).
pub const MAX_402_BODY_BYTES: usize = 1024 * 1024;
/// The default price ceiling: 0.01 XNO.
pub const DEFAULT_MAX_RAW: u128 = RAW_PER_XNO / 100;

/// Something the payer is doing, for a progress display (the CLI prints these on stderr).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A 402 arrived and this offer was chosen.
    Challenge {
        amount: u128,
        pay_to: String,
        url: String,
    },
    /// A journalled payment for this request is being presented again.
    RePresenting { hash: String, amount: u128 },
    /// About to sign a send.
    Signing { account: String, frontier: String },
    /// Work came from the node.
    WorkFromNode { threshold: u64 },
    /// The node would not generate work; computing it here.
    WorkLocal { threshold: u64, why: String },
    /// Local work finished.
    WorkDone { elapsed: Duration },
    /// Sending the paid retry.
    Paying { hash: String },
    /// The server answered 2xx with a receipt naming our block.
    Confirmed { hash: String },
    /// Anything else worth telling the user.
    Note(String),
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Challenge {
                amount,
                pay_to,
                url,
            } => write!(f, "402: {} XNO to {pay_to} for {url}", format_xno(*amount)),
            Progress::RePresenting { hash, amount } => write!(
                f,
                "re-presenting journalled payment {hash} ({} XNO) instead of paying again",
                format_xno(*amount)
            ),
            Progress::Signing { account, frontier } => {
                write!(f, "signing send from {account} (frontier {frontier})")
            }
            Progress::WorkFromNode { threshold } => {
                write!(f, "work from the node (threshold {threshold:016x})")
            }
            Progress::WorkLocal { threshold, why } => write!(
                f,
                "work: the node would not generate it ({why}); computing locally \
                 (threshold {threshold:016x})…"
            ),
            Progress::WorkDone { elapsed } => {
                write!(f, "work done in {:.1} s", elapsed.as_secs_f64())
            }
            Progress::Paying { hash } => write!(f, "paying… (block {hash})"),
            Progress::Confirmed { hash } => write!(f, "confirmed {hash}"),
            Progress::Note(s) => f.write_str(s),
        }
    }
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How a [`Payer`] pays.
#[derive(Clone)]
pub struct PayerConfig {
    /// Node RPC URL (`account_info`, `work_generate`, `block_info`, `version`).
    pub rpc_url: String,
    /// The paying account's key (e.g. `PrivateKey::from_seed(&seed, index)`).
    pub key: PrivateKey,
    /// Never pay more than this (raw).
    pub max_raw: u128,
    /// Where signed payments are journalled.
    pub journal_path: PathBuf,
    /// Timeout for each HTTP exchange with the resource server (the paid retry includes the
    /// server's wait for confirmation).
    pub http_timeout: Duration,
    /// Timeout for each node RPC call (`work_generate` may take a while on mainnet).
    pub rpc_timeout: Duration,
    /// Skip `work_generate` and always compute work locally.
    pub local_work: bool,
    /// Which offer to pay: a signed block (default) or a tagged session.
    pub mechanism: Mechanism,
    pub progress: Option<ProgressFn>,
}

/// The payment mechanism the payer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mechanism {
    /// Sign a send block; the server publishes it (the default).
    #[default]
    SignedBlock,
    /// Publish a send of the session's tagged amount ourselves and present its hash with the
    /// session id (nanogate's mechanism 2; see `payer/tagged.rs`).
    Tagged,
}

impl fmt::Debug for PayerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayerConfig")
            .field("rpc_url", &self.rpc_url)
            .field("account", &self.key.public_key().to_address())
            .field("max_raw", &self.max_raw)
            .field("journal_path", &self.journal_path)
            .field("http_timeout", &self.http_timeout)
            .field("rpc_timeout", &self.rpc_timeout)
            .field("local_work", &self.local_work)
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl PayerConfig {
    /// Defaults: 0.01 XNO maximum, 120 s HTTP timeout, 300 s RPC timeout, node work first.
    pub fn new(
        rpc_url: impl Into<String>,
        key: PrivateKey,
        journal_path: impl Into<PathBuf>,
    ) -> Self {
        PayerConfig {
            rpc_url: rpc_url.into(),
            key,
            max_raw: DEFAULT_MAX_RAW,
            journal_path: journal_path.into(),
            http_timeout: Duration::from_secs(120),
            rpc_timeout: Duration::from_secs(300),
            local_work: false,
            mechanism: Mechanism::SignedBlock,
            progress: None,
        }
    }
}

/// One HTTP request to make (and pay for if asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl RequestSpec {
    pub fn get(url: impl Into<String>) -> Self {
        RequestSpec {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        RequestSpec {
            method: "POST".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Some(body.into()),
        }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What we paid, when we paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentInfo {
    /// The block hash (upper-case hex).
    pub hash: String,
    pub amount_raw: u128,
    pub network: String,
    pub pay_to: String,
    pub payer: String,
    /// True when this was a journalled payment presented again, not a new one.
    pub re_presented: bool,
}

/// The final response.
#[derive(Debug, Clone)]
pub struct PaidResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// `PAYMENT-RESPONSE` (or `X-PAYMENT-RESPONSE`), when present and readable.
    pub receipt: Option<SettlementResponse>,
    /// A payment was presented and the server served the request (2xx) or settled it.
    pub paid: bool,
    /// The payment presented, if any.
    pub payment: Option<PaymentInfo>,
    /// Whether the receipt names our block (false when there is no receipt).
    pub receipt_matches: bool,
}

impl PaidResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct RawResponse {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn receipt(&self) -> Option<Result<SettlementResponse, String>> {
        let value = self
            .header(headers::PAYMENT_RESPONSE)
            .or_else(|| self.header(headers::X_PAYMENT_RESPONSE))?;
        Some(
            decode_header::<SettlementResponse>(value.trim(), MAX_CHALLENGE_HEADER_BYTES)
                .map_err(|e| e.to_string()),
        )
    }
}

enum Presented {
    Served(Box<PaidResponse>),
    Refused {
        reason: String,
        status: u16,
        challenge: Option<Challenge>,
    },
}

/// Pays for HTTP requests from one Nano account.
pub struct Payer {
    config: PayerConfig,
    account: PublicKey,
    rpc: NodeRpc,
    http: reqwest::Client,
    journal: Journal,
    version: OnceCell<NodeVersion>,
    /// One fetch at a time per journal key in this process, so two identical concurrent
    /// requests cannot overwrite each other's journal entry.
    in_flight: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Payments from one account are sequential: each builds on the previous one's block,
    /// which verifiers want confirmed. Held from reading the 402 to the paid answer.
    paying: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Payer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Payer {
    pub fn new(config: PayerConfig) -> Result<Self, PayError> {
        let rpc_url = reqwest::Url::parse(&config.rpc_url)
            .map_err(|e| PayError::InvalidRequest(format!("RPC URL `{}`: {e}", config.rpc_url)))?;
        check_scheme(&rpc_url)?;
        let rpc = NodeRpc::new(config.rpc_url.clone(), config.rpc_timeout)?;
        // No redirects: a payment header must never be replayed to another origin.
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PayError::InvalidRequest(e.to_string()))?;
        Ok(Payer {
            account: config.key.public_key(),
            journal: Journal::new(config.journal_path.clone()),
            rpc,
            http,
            config,
            version: OnceCell::new(),
            in_flight: std::sync::Mutex::new(HashMap::new()),
            paying: tokio::sync::Mutex::new(()),
        })
    }

    /// The paying account.
    pub fn account(&self) -> &PublicKey {
        &self.account
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn rpc(&self) -> &NodeRpc {
        &self.rpc
    }

    fn progress(&self, p: Progress) {
        if let Some(f) = &self.config.progress {
            f(&p);
        }
    }

    /// Requests `req`; on a 402, pays (or re-presents the journalled payment) and retries.
    pub async fn fetch(&self, req: RequestSpec) -> Result<PaidResponse, PayError> {
        let url = reqwest::Url::parse(&req.url)
            .map_err(|e| PayError::InvalidRequest(format!("URL `{}`: {e}", req.url)))?;
        check_scheme(&url)?;
        let method = req.method.to_ascii_uppercase();
        let body = req.body.clone().unwrap_or_default();
        let key = journal_key(&method, url.as_str(), &body);
        let slot = {
            let mut map = self
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let result = {
            let _serial = slot.lock().await;
            self.fetch_keyed(&req, &url, &key).await
        };
        {
            let mut map = self
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Ours plus the map's: nobody else is waiting, so forget the slot.
            if Arc::strong_count(&slot) == 2 {
                map.remove(&key);
            }
        }
        result
    }

    async fn fetch_keyed(
        &self,
        req: &RequestSpec,
        url: &reqwest::Url,
        key: &str,
    ) -> Result<PaidResponse, PayError> {
        let first = self
            .send(req, None)
            .await
            .map_err(|message| PayError::Http {
                message,
                hash: None,
            })?;
        if first.status != 402 {
            return Ok(PaidResponse {
                status: first.status,
                receipt: first.receipt().and_then(Result::ok),
                headers: first.headers,
                body: first.body,
                paid: false,
                payment: None,
                receipt_matches: false,
            });
        }
        let mut challenge = parse_challenge(first.header(headers::PAYMENT_REQUIRED), &first.body)?;
        let _paying = self.paying.lock().await;
        if self.config.mechanism == Mechanism::Tagged {
            return self.pay_tagged(req, url, &challenge).await;
        }
        let mut snapshot = None;
        let mut superseded = Vec::new();

        if let Some(entry) = self.journal.get(key)? {
            let payment = entry.to_payment().map_err(|why| PayError::Journal {
                path: self.journal.path().display().to_string(),
                message: format!("entry for `{key}` is unusable ({why}); inspect it by hand"),
            })?;
            let hash = payment.hash().to_hex();
            self.progress(Progress::RePresenting {
                hash: hash.clone(),
                amount: payment.amount,
            });
            let ours: Vec<String> = std::iter::once(hash.clone())
                .chain(entry.superseded.iter().cloned())
                .collect();
            match self.present(req, key, &payment, &ours, true).await? {
                Presented::Served(resp) => return Ok(*resp),
                Presented::Refused {
                    reason,
                    challenge: fresh,
                    ..
                } => {
                    let info = self.ledger_verdict(&payment, &ours, &reason).await?;
                    let moved = info.frontier != payment.block.previous;
                    if !moved && payment.block.account != self.account {
                        // A block from *this* account would not conflict with the old one,
                        // which could still be published.
                        return Err(PayError::PaymentPending {
                            hash,
                            reason: format!(
                                "{reason}; it was signed by {} and could still be published, \
                                 so paying from another account could pay twice",
                                payment.block.account
                            ),
                        });
                    }
                    self.progress(Progress::Note(if moved {
                        format!(
                            "server refused {hash} ({reason}); the ledger never saw it and the \
                             account moved on: dropping it and paying anew"
                        )
                    } else {
                        format!(
                            "server refused {hash} ({reason}); the ledger never saw it: paying \
                             anew under the new challenge, on the same frontier, so at most one \
                             block can ever settle (the same terms give the very same block)"
                        )
                    }));
                    if !moved {
                        // Still publishable by whoever holds it: remember it, so that if it
                        // ever settles we report it instead of paying a third time.
                        superseded = ours;
                    }
                    if let Some(c) = fresh {
                        challenge = c;
                    }
                    // Unmoved: build on what we read before asking about the blocks, never on
                    // a later view, which could be the old block itself. Moved: the old blocks
                    // can never apply, so a fresh (confirmed) view is safe.
                    if !moved && payment.block.account == self.account {
                        snapshot = Some(info);
                    }
                }
            }
        }
        self.pay(req, key, url, &challenge, snapshot, superseded)
            .await
    }

    /// After a refused re-presentation: reads the account, then asks the ledger about every
    /// block signed for this request. Any confirmed → we paid (error, with its hash); any
    /// published → wait (error); none → returns the account as read, to build on.
    async fn ledger_verdict(
        &self,
        payment: &SignedPayment,
        ours: &[String],
        reason: &str,
    ) -> Result<AccountInfo, PayError> {
        let info = self.account_info(&payment.block.account).await?;
        for h in ours {
            let Ok(block_hash) = BlockHash::from_hex(h) else {
                continue;
            };
            match self.rpc.block_status(&block_hash).await? {
                BlockStatus::Confirmed => {
                    return Err(PayError::PaidButRefused {
                        hash: h.clone(),
                        amount: payment.amount,
                        pay_to: payment.pay_to.clone(),
                        reason: reason.to_owned(),
                    })
                }
                BlockStatus::Unconfirmed => {
                    return Err(PayError::PaymentPending {
                        hash: h.clone(),
                        reason: reason.to_owned(),
                    })
                }
                BlockStatus::NotFound => {}
            }
        }
        Ok(info)
    }

    async fn account_info(&self, account: &PublicKey) -> Result<AccountInfo, PayError> {
        self.rpc
            .account_info(account)
            .await?
            .ok_or_else(|| PayError::AccountNotOpened {
                account: account.to_address(),
            })
    }

    /// Our account, waiting a little for its head block to be confirmed: verifiers (ours
    /// included) accept a send only on a confirmed frontier.
    async fn own_account(&self) -> Result<AccountInfo, PayError> {
        let deadline = Instant::now() + FRONTIER_CONFIRMATION_WAIT;
        let mut noted = false;
        loop {
            let state = self
                .rpc
                .account_state(&self.account)
                .await?
                .ok_or_else(|| PayError::AccountNotOpened {
                    account: self.account.to_address(),
                })?;
            if state.frontier_confirmed() || Instant::now() >= deadline {
                return Ok(state.info);
            }
            if !noted {
                self.progress(Progress::Note(format!(
                    "waiting for the account's head block {} to be confirmed",
                    state.info.frontier
                )));
                noted = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn pay(
        &self,
        req: &RequestSpec,
        key: &str,
        url: &reqwest::Url,
        challenge: &Challenge,
        snapshot: Option<AccountInfo>,
        superseded: Vec<String>,
    ) -> Result<PaidResponse, PayError> {
        let offer = match select_offer(challenge, self.config.max_raw) {
            Ok(o) => o,
            Err(e) => {
                if let Some(err) = &challenge.error {
                    self.progress(Progress::Note(format!("the server said: {err}")));
                }
                return Err(e);
            }
        };
        self.progress(Progress::Challenge {
            amount: offer.amount,
            pay_to: offer.pay_to.clone(),
            url: url.to_string(),
        });
        let thresholds = self.thresholds(&offer).await?;
        let info = match snapshot {
            Some(i) => i,
            None => self.own_account().await?,
        };
        if info.balance < offer.amount {
            return Err(PayError::InsufficientFunds {
                account: self.account.to_address(),
                balance: info.balance,
                amount: offer.amount,
            });
        }
        self.progress(Progress::Signing {
            account: self.account.to_address(),
            frontier: info.frontier.to_hex(),
        });
        let work = self.work(info.frontier.0, thresholds.send()).await?;
        let default_resource = json!({ "url": url.as_str() });
        let resource = challenge.resource.as_ref().unwrap_or(&default_resource);
        let payment = SignedPayment::new(
            challenge.version,
            &offer,
            Some(resource),
            challenge.extensions.as_ref(),
            &info,
            &self.config.key,
            work,
        )?;
        let body = req.body.as_deref().unwrap_or_default();
        let mut entry = JournalEntry::new(&req.method, url.as_str(), body, &payment);
        // Same frontier, price, payee and representative give the very same block: nothing
        // to remember then.
        let new_hash = payment.hash().to_hex();
        entry.superseded = superseded;
        entry
            .superseded
            .retain(|h| !h.eq_ignore_ascii_case(&new_hash));
        entry.superseded.dedup();
        let ours: Vec<String> = std::iter::once(payment.hash().to_hex())
            .chain(entry.superseded.iter().cloned())
            .collect();
        self.journal.put(key, entry)?;
        match self.present(req, key, &payment, &ours, false).await? {
            Presented::Served(resp) => Ok(*resp),
            Presented::Refused { reason, status, .. } => Err(PayError::Refused {
                reason,
                status,
                hash: Some(payment.hash().to_hex()),
            }),
        }
    }

    /// The send threshold: from the node's `version` when it names a network, else from the
    /// offer's network. A node on another known network than the offer is refused.
    async fn thresholds(&self, offer: &Offer) -> Result<WorkThresholds, PayError> {
        // Cached once known; a failed `version` (old node, proxy) is asked again next time.
        let version = match self.version.get() {
            Some(v) => Some(v.clone()),
            None => match self.rpc.version().await {
                Ok(v) => {
                    let _ = self.version.set(v.clone());
                    Some(v)
                }
                Err(_) => None,
            },
        };
        choose_thresholds(
            &offer.network,
            version.as_ref().and_then(NodeVersion::network),
        )
    }

    async fn work(&self, root: [u8; 32], threshold: u64) -> Result<u64, PayError> {
        let why = if self.config.local_work {
            "--local-work".to_owned()
        } else {
            match self.rpc.work_generate(&root, threshold).await {
                Ok(w) => {
                    self.progress(Progress::WorkFromNode { threshold });
                    return Ok(w);
                }
                Err(e) => e.to_string(),
            }
        };
        self.progress(Progress::WorkLocal { threshold, why });
        let start = Instant::now();
        let work = tokio::task::spawn_blocking(move || {
            nanogate_protocol::nano::work::generate(&root, threshold)
        })
        .await
        .map_err(|e| PayError::InvalidRequest(format!("work generation failed: {e}")))?;
        self.progress(Progress::WorkDone {
            elapsed: start.elapsed(),
        });
        Ok(work)
    }

    /// Sends the paid retry and sorts the answer into served / refused.
    async fn present(
        &self,
        req: &RequestSpec,
        key: &str,
        payment: &SignedPayment,
        ours: &[String],
        re_presented: bool,
    ) -> Result<Presented, PayError> {
        let hash = payment.hash().to_hex();
        if !re_presented {
            self.progress(Progress::Paying { hash: hash.clone() });
        }
        let resp = self
            .send(req, Some((payment.header_name(), payment.header_value())))
            .await
            .map_err(|message| PayError::Http {
                message,
                hash: Some(hash.clone()),
            })?;
        let receipt = resp.receipt();
        let info = PaymentInfo {
            hash: hash.clone(),
            amount_raw: payment.amount,
            network: payment.network.clone(),
            pay_to: payment.pay_to.clone(),
            payer: payment.block.account.to_address(),
            re_presented,
        };
        if resp.status == 402 || resp.status == 400 {
            let challenge =
                parse_challenge(resp.header(headers::PAYMENT_REQUIRED), &resp.body).ok();
            let reason = receipt
                .as_ref()
                .and_then(|r| r.as_ref().ok())
                .and_then(|r| {
                    r.error_message
                        .clone()
                        .map(|m| match &r.error_reason {
                            Some(code) => format!("{code}: {m}"),
                            None => m,
                        })
                        .or_else(|| r.error_reason.clone())
                })
                .or_else(|| challenge.as_ref().and_then(|c| c.error.clone()))
                .unwrap_or_else(|| format!("HTTP {} without a reason", resp.status));
            return Ok(Presented::Refused {
                reason,
                status: resp.status,
                challenge,
            });
        }
        let receipt = match receipt {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                self.progress(Progress::Note(format!("unreadable PAYMENT-RESPONSE: {e}")));
                None
            }
            None => None,
        };
        // Our block, or one it superseded on the same frontier (only one can have settled).
        let matches = receipt.as_ref().is_some_and(|r| {
            r.success && ours.iter().any(|h| r.transaction.eq_ignore_ascii_case(h))
        });
        let success = (200..300).contains(&resp.status);
        if success && matches {
            self.journal.remove(key, &hash)?;
            self.progress(Progress::Confirmed { hash: hash.clone() });
        } else if success {
            self.progress(Progress::Note(match &receipt {
                Some(r) => format!(
                    "warning: the receipt names `{}`, not our block {hash}; keeping it journalled",
                    r.transaction
                ),
                None => {
                    format!("warning: served without a PAYMENT-RESPONSE; keeping {hash} journalled")
                }
            }));
        } else {
            self.progress(Progress::Note(format!(
                "HTTP {} after paying: payment {hash} stays journalled; retrying the same \
                 request re-presents it",
                resp.status
            )));
        }
        Ok(Presented::Served(Box::new(PaidResponse {
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
            paid: success || receipt.as_ref().is_some_and(|r| r.success),
            receipt,
            payment: Some(info),
            receipt_matches: matches,
        })))
    }

    async fn send(
        &self,
        req: &RequestSpec,
        payment: Option<(&'static str, String)>,
    ) -> Result<RawResponse, String> {
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method `{}`", req.method))?;
        let mut hm = HeaderMap::new();
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| format!("invalid header name `{k}`"))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| format!("invalid value for header `{k}`"))?;
            hm.append(name, value);
        }
        if let Some((name, value)) = payment {
            let value = HeaderValue::from_str(&value)
                .map_err(|_| "unencodable payment header".to_owned())?;
            hm.insert(name, value);
        }
        let mut rb = self.http.request(method, &req.url).headers(hm);
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let resp = rb.send().await.map_err(|e| describe(&req.url, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = if status == 402 {
            // A challenge is small; do not let a hostile 402 fill memory.
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&req.url, &e))? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_402_BODY_BYTES {
                    body.truncate(MAX_402_BODY_BYTES);
                    break;
                }
            }
            body
        } else {
            resp.bytes()
                .await
                .map_err(|e| describe(&req.url, &e))?
                .to_vec()
        };
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }
}

/// The send thresholds for an offer's network given what the node says it is on: the node's
/// network wins; a known offer network that contradicts it is refused; without the node's
/// word, the offer's network decides (unknown → live).
pub fn choose_thresholds(
    offer_network: &str,
    node: Option<Network>,
) -> Result<WorkThresholds, PayError> {
    match (expected_node_network(offer_network), node) {
        (Some(want), Some(have)) if want != have => Err(PayError::NetworkMismatch {
            offer: offer_network.to_owned(),
            node: have.rpc_name().to_owned(),
        }),
        (_, Some(have)) => Ok(have.thresholds()),
        (_, None) => Ok(thresholds_for_network(offer_network)),
    }
}

/// Only `http` (and `https` when built with the `https` feature).
fn check_scheme(url: &reqwest::Url) -> Result<(), PayError> {
    match url.scheme() {
        "http" => Ok(()),
        "https" if cfg!(feature = "https") => Ok(()),
        "https" => Err(PayError::InvalidRequest(format!(
            "{url}: this build has no TLS support; rebuild with `--features https`"
        ))),
        other => Err(PayError::InvalidRequest(format!(
            "{url}: unsupported scheme `{other}` (use http or https)"
        ))),
    }
}

fn describe(url: &str, e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_timeout() {
        format!("no answer from {url} in time")
    } else if e.is_connect() {
        format!("cannot connect to {url}")
    } else {
        format!("request to {url} failed")
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The receipt as the CLI's `--json` prints it.
pub fn receipt_json(resp: &PaidResponse) -> Value {
    let Some(p) = &resp.payment else {
        return Value::Null;
    };
    let r = resp.receipt.as_ref();
    json!({
        "transaction": r.map(|r| r.transaction.clone()).filter(|t| !t.is_empty()).unwrap_or_else(|| p.hash.clone()),
        "payer": r.and_then(|r| r.payer.clone()).unwrap_or_else(|| p.payer.clone()),
        "network": r.map(|r| r.network.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| p.network.clone()),
        "amountRaw": p.amount_raw.to_string(),
        "amountXno": format_xno(p.amount_raw),
        "payTo": p.pay_to,
        "success": r.map(|r| r.success),
        "matchesOurBlock": resp.receipt_matches,
        "rePresented": p.re_presented,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_with_the_feature() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_scheme(&u("http://127.0.0.1:1/x")).is_ok());
        assert_eq!(
            check_scheme(&u("https://api.example.com/")).is_ok(),
            cfg!(feature = "https")
        );
        assert!(check_scheme(&u("ftp://x/")).is_err());
        let key = PrivateKey::from_bytes([1; 32]);
        let bad = PayerConfig::new("not a url", key.clone(), "/tmp/j.json");
        assert!(matches!(Payer::new(bad), Err(PayError::InvalidRequest(_))));
        let cfg = PayerConfig::new(DEFAULT_RPC_URL, key, "/tmp/j.json");
        assert_eq!(cfg.max_raw, RAW_PER_XNO / 100);
        // The config's Debug never shows the key.
        assert!(!format!("{cfg:?}").contains(&PrivateKey::from_bytes([1; 32]).to_hex()));
    }

    #[test]
    fn node_network_decides_thresholds_and_contradictions_are_refused() {
        use nanogate_protocol::nano::WorkThresholds as W;
        let t = |o: &str, n| choose_thresholds(o, n).ok();
        assert_eq!(t("nano:devnet", Some(Network::Dev)), Some(W::DEV));
        assert_eq!(t("nano:mainnet", Some(Network::Live)), Some(W::LIVE));
        // Unknown offer network: the node says.
        assert_eq!(t("nano:local-lab", Some(Network::Dev)), Some(W::DEV));
        // No word from the node: the offer's network, unknown → live.
        assert_eq!(t("nano:devnet", None), Some(W::DEV));
        assert_eq!(t("nano:local-lab", None), Some(W::LIVE));
        assert!(matches!(
            choose_thresholds("nano:mainnet", Some(Network::Dev)),
            Err(PayError::NetworkMismatch { .. })
        ));
        assert!(matches!(
            choose_thresholds("nano:devnet", Some(Network::Live)),
            Err(PayError::NetworkMismatch { .. })
        ));
    }

    #[test]
    fn progress_lines_read_as_documented() {
        let p = Progress::Challenge {
            amount: RAW_PER_XNO / 1000,
            pay_to: "nano_x".into(),
            url: "http://h/p".into(),
        };
        assert_eq!(p.to_string(), "402: 0.001 XNO to nano_x for http://h/p");
        let s = Progress::Signing {
            account: "nano_a".into(),
            frontier: "AB".into(),
        };
        assert_eq!(s.to_string(), "signing send from nano_a (frontier AB)");
        assert_eq!(
            Progress::Confirmed { hash: "CD".into() }.to_string(),
            "confirmed CD"
        );
    }
}
