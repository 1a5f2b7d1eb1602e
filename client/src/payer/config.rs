//! How a [`Payer`](super::Payer) pays: node, key, price ceiling, journal, timeouts, mechanism.

use nanogate_protocol::nano::{PrivateKey, RAW_PER_XNO};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::ProgressFn;

/// Which offer the payer takes: a signed block (the default) or a tagged session (a send of
/// the session's tagged amount that we publish ourselves; see [`super::tagged`]).
pub use nanogate_protocol::contract::Mechanism;

/// The devnet's (and a dev node's) default RPC address.
pub const DEFAULT_RPC_URL: &str = "http://127.0.0.1:45000";
/// The default price ceiling: 0.01 XNO.
pub const DEFAULT_MAX_RAW: u128 = RAW_PER_XNO / 100;

/// How a [`Payer`](super::Payer) pays.
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
    /// Buy and reuse this prepaid pass (`--pass NAME`) instead of paying each request; see
    /// [`PayerConfig::with_pass`].
    pub pass: Option<String>,
    pub progress: Option<ProgressFn>,
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
            .field("pass", &self.pass)
            .finish_non_exhaustive()
    }
}

impl PayerConfig {
    /// Defaults: 0.01 XNO maximum, 120 s HTTP timeout, 300 s RPC timeout, node work first,
    /// signed blocks.
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
            pass: None,
            progress: None,
        }
    }

    /// Pay with the prepaid pass `name` (`[a-z0-9_-]{1,32}`, checked by
    /// [`Payer::new`](super::Payer::new)): when a 402 offers it, buy it (within `max_raw`),
    /// keep its token in the journal and present it on later requests to the same server
    /// until it is used up or expires, then buy the next.
    pub fn with_pass(mut self, name: impl Into<String>) -> Self {
        self.pass = Some(name.into());
        self
    }
}
