//! The payee wallet (docs/refunds.md): with a seed configured ([`seed`]), the sidecar signs
//! blocks on its payee and pool accounts — refunds of owed payments ([`refund`]) and receive
//! blocks for what was sent to them ([`pocket`]); without one it signs nothing, hands out
//! `nano:` URIs for the operator's wallet and checks what that wallet sent.
//!
//! Every block on our accounts is built under one lock ([`Wallet::chain`]) on the account's
//! current frontier, so the sidecar never forks its own chains. Proof of work comes from the
//! node's `work_generate` or from this machine's cores (`wallet.work`).

pub mod pocket;
pub mod refund;
pub mod seed;
pub mod sweep;

use crate::metrics::Metrics;
use crate::node::{LedgerRejection, NodeClient, NodeError, ProcessResult};
use nanogate_protocol::nano::{
    BlockHash, PrivateKey, PublicKey, Signature, StateBlock, WorkThresholds,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

pub use seed::Seed;

/// Where proof of work comes from (`wallet.work`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkSource {
    /// The node's `work_generate` (a node with work peers or a GPU).
    Node,
    /// This machine's cores.
    Local,
}

impl WorkSource {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "node" => Some(WorkSource::Node),
            "local" => Some(WorkSource::Local),
            _ => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum WalletError {
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the node refused the block: {0:?}")]
    Rejected(LedgerRejection),
    #[error("{0}")]
    Refused(String),
}

/// The settings of [`Wallet`] (`[wallet]` in the configuration).
#[derive(Debug, Clone)]
pub struct WalletSettings {
    pub accounts: u32,
    pub work: WorkSource,
    pub representative: Option<PublicKey>,
    pub thresholds: WorkThresholds,
    /// Where pool accounts are swept (`wallet.treasury`).
    pub treasury: Option<PublicKey>,
    /// How long a published block is waited for before the call returns (the sidecar keeps
    /// following it in the background).
    pub confirm_wait: Duration,
}

pub struct Wallet {
    node: NodeClient,
    seed: Option<Seed>,
    /// The seed's accounts `0..accounts`, by public key.
    index: HashMap<PublicKey, u32>,
    settings: WalletSettings,
    metrics: Arc<Metrics>,
    /// Held while a block is built and published on any of our accounts.
    chain: tokio::sync::Mutex<()>,
}

/// An account's chain head, as a new block builds on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub previous: BlockHash,
    pub balance: u128,
    pub representative: PublicKey,
}

impl Wallet {
    pub fn new(
        node: NodeClient,
        seed: Option<Seed>,
        settings: WalletSettings,
        metrics: Arc<Metrics>,
    ) -> Wallet {
        let index = match &seed {
            Some(s) => (0..settings.accounts)
                .map(|i| (s.key(i).public_key(), i))
                .collect(),
            None => HashMap::new(),
        };
        Wallet {
            node,
            seed,
            index,
            settings,
            metrics,
            chain: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a seed is configured (the sidecar signs refunds and receives).
    pub fn signing(&self) -> bool {
        self.seed.is_some()
    }

    pub fn settings(&self) -> &WalletSettings {
        &self.settings
    }

    pub fn node(&self) -> &NodeClient {
        &self.node
    }

    /// Whether the sidecar holds `account`'s key.
    pub fn holds(&self, account: &PublicKey) -> bool {
        self.index.contains_key(account)
    }

    fn key_for(&self, account: &PublicKey) -> Option<PrivateKey> {
        let i = *self.index.get(account)?;
        self.seed.as_ref().map(|s| s.key(i))
    }

    /// Why the sidecar cannot sign for `account` (`None`: it can).
    pub fn cannot_sign(&self, account: &PublicKey) -> Option<String> {
        if !self.signing() {
            return Some("no wallet seed configured".into());
        }
        if !self.holds(account) {
            return Some(format!(
                "{} is not among the first {} accounts of the wallet seed (wallet.accounts)",
                account.to_address(),
                self.settings.accounts
            ));
        }
        None
    }

    pub(crate) async fn head(&self, account: &PublicKey) -> Result<Head, WalletError> {
        let rep = self.settings.representative.unwrap_or(*account);
        Ok(match self.node.account_info(account).await? {
            Some(info) => Head {
                previous: info.frontier,
                balance: info.balance,
                representative: info.representative.unwrap_or(rep),
            },
            None => Head {
                previous: BlockHash::ZERO,
                balance: 0,
                representative: rep,
            },
        })
    }

    /// A signed state block on `head` of `account` with a new `balance` and `link`, its work
    /// reaching `threshold`. `None` when the sidecar does not hold the account's key.
    pub(crate) async fn sign(
        &self,
        account: &PublicKey,
        head: Head,
        balance: u128,
        link: [u8; 32],
        threshold: u64,
    ) -> Result<StateBlock, WalletError> {
        let key = self
            .key_for(account)
            .ok_or_else(|| WalletError::Refused(self.cannot_sign(account).unwrap_or_default()))?;
        // The work root: the previous block, or the account for its first (open) block.
        let root = if head.previous.is_zero() {
            account.0
        } else {
            head.previous.0
        };
        let work = match self.settings.work {
            WorkSource::Node => self.node.work_generate(&root, threshold).await?,
            WorkSource::Local => tokio::task::spawn_blocking(move || {
                nanogate_protocol::nano::work::generate(&root, threshold)
            })
            .await
            .map_err(|e| WalletError::Refused(format!("local work generation failed: {e}")))?,
        };
        let mut block = StateBlock {
            account: *account,
            previous: head.previous,
            representative: head.representative,
            balance,
            link,
            signature: Signature([0; 64]),
            work,
        };
        block.sign(&key);
        Ok(block)
    }

    /// Publishes `block` (an identical block already on the ledger counts as published).
    pub(crate) async fn publish(&self, block: &StateBlock) -> Result<(), WalletError> {
        match self.node.process_or_resolve(block).await? {
            ProcessResult::Processed(_) => Ok(()),
            ProcessResult::Rejected(r) => Err(WalletError::Rejected(r)),
        }
    }

    /// Waits (bounded by `settings.confirm_wait`) until `hash` is confirmed. `false`: not yet.
    pub(crate) async fn wait_confirmed(&self, hash: &BlockHash) -> Result<bool, WalletError> {
        let deadline = Instant::now() + self.settings.confirm_wait;
        let mut asked = false;
        loop {
            if let Some(info) = self.node.block_info(hash).await? {
                if info.confirmed {
                    return Ok(true);
                }
                if !asked {
                    // Start an election in case the node has not (harmless otherwise).
                    let _ = self.node.block_confirm(hash).await;
                    asked = true;
                }
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
