//! The payer: request, read the 402, pay (or re-present a journalled payment), retry, read the
//! receipt. One module per job:
//!
//! - [`config`]: how a [`Payer`] pays; [`progress`]: what it tells the user;
//! - `http`: one HTTP round trip with the resource server ([`RequestSpec`] in, raw answer out);
//! - `account`: the paying account's head block, the work threshold and the work;
//! - `signed`: a new signed block for the cheapest acceptable offer, journalled first;
//! - `present`: the paid retry, its receipt, and the journal entry's fate;
//! - `journalled`: re-presenting a journalled payment, and the ledger's word when refused;
//! - [`tagged`]: paying a tagged session by publishing our own send;
//! - `passes`: `--pass NAME`: presenting a held pass token, replacing a spent one, keeping a
//!   bought one (the client README's "Prepaid passes");
//! - `response`: what the caller gets back ([`PaidResponse`], [`receipt_json`]).
//!
//! Retry safety (the client README's "The journal: never pay twice"), in order:
//! 1. Every signed block is journalled *before* it is sent.
//! 2. If a journal entry exists for the request and the server answers 402, the journalled
//!    payment (block and accepted offer, verbatim) is presented again; nothing new is signed.
//! 3. If the server refuses it, the ledger decides: confirmed → we paid; report the hash and
//!    stop. Published but unconfirmed → stop and retry later. Unknown to the ledger → it was
//!    never published, so a new block is signed on the frontier read *before* that check:
//!    either the frontier moved on (the old block can never be applied) or the new block
//!    forks the old one (at most one of the two can ever settle). Never twice.
//! 4. The entry is removed only after a 2xx whose receipt names our block.

use nanogate_protocol::contract::pass::valid_name;
use nanogate_protocol::nano::PublicKey;
use nanogate_protocol::x402::headers;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tokio::sync::OnceCell;

use crate::error::PayError;
use crate::journal::{journal_key, Journal};
use crate::offer::{parse_challenge, Challenge};
use crate::rpc::{NodeRpc, NodeVersion};

mod account;
pub mod config;
mod http;
mod journalled;
mod passes;
mod present;
pub mod progress;
mod response;
mod signed;
pub mod tagged;

pub use account::{choose_thresholds, FRONTIER_CONFIRMATION_WAIT};
pub use config::{Mechanism, PayerConfig, DEFAULT_MAX_RAW, DEFAULT_RPC_URL};
pub use http::{RequestSpec, MAX_402_BODY_BYTES};
pub use progress::{Progress, ProgressFn};
pub use response::{receipt_json, PaidResponse, PassUse, PaymentInfo};
pub use tagged::{tagged_header, tagged_offer, tagged_pass_offer};

use http::check_scheme;
use journalled::Retried;

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
        if let Some(name) = &config.pass {
            if !valid_name(name) {
                return Err(PayError::InvalidRequest(format!(
                    "pass name `{name}`: a pass name is 1 to 32 of a-z, 0-9, `_` and `-`"
                )));
            }
        }
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

    /// One fetch, serialised per journal key: the unpaid request, then the payment the
    /// configured mechanism makes.
    async fn fetch_keyed(
        &self,
        req: &RequestSpec,
        url: &reqwest::Url,
        key: &str,
    ) -> Result<PaidResponse, PayError> {
        if let Some(name) = &self.config.pass {
            return self.fetch_on_pass(req, url, key, name).await;
        }
        let first = self
            .send(req, None)
            .await
            .map_err(|message| PayError::Http {
                message,
                hash: None,
            })?;
        if first.status != 402 {
            return Ok(PaidResponse::unpaid(first));
        }
        let challenge = parse_challenge(first.header(headers::PAYMENT_REQUIRED), &first.body)?;
        self.pay(req, url, key, challenge).await
    }

    /// Pays `challenge` with the configured mechanism (for the configured pass, if any), or
    /// re-presents the payment journalled for this request.
    async fn pay(
        &self,
        req: &RequestSpec,
        url: &reqwest::Url,
        key: &str,
        challenge: Challenge,
    ) -> Result<PaidResponse, PayError> {
        let _paying = self.paying.lock().await;
        match self.config.mechanism {
            Mechanism::TaggedSession => self.pay_tagged(req, url, key, &challenge).await,
            Mechanism::SignedBlock => {
                let anew = match self.journal.get(key)? {
                    Some(entry) => match self.re_present(req, key, entry).await? {
                        Retried::Served(resp) => return Ok(*resp),
                        Retried::PayAnew(anew) => *anew,
                    },
                    None => Default::default(),
                };
                self.pay_signed(req, key, url, challenge, anew).await
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nanogate_protocol::nano::{PrivateKey, RAW_PER_XNO};

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
}
