//! Configuration: built-in defaults, then the TOML file (`--config FILE`), then environment
//! variables (`NANOGATE_*`) and command-line flags (flags win over the environment). Every
//! option is listed in `--help` and in sidecar/README.md.

use clap::Parser;
use nanogate_protocol::contract::pass::MAX_PASS_SECONDS;
use nanogate_protocol::contract::{check_network, network};
use nanogate_protocol::nano::{Network, PublicKey};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration, as read from TOML (every field optional there).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Loopback unless you mean otherwise (invariant 9).
    pub listen: SocketAddr,
    /// The x402 network id payments name (`nano:mainnet`; e.g. `nano:devnet` locally).
    pub network: String,
    /// The Nano network of the nodes (`live`, `beta`, `dev`, `test`): checked against the
    /// node's `version` by /readyz and selects the send work threshold.
    pub node_network: String,
    /// Shared secret the filter sends in `x-nanogate-secret`. Required.
    pub filter_secret: Option<String>,
    /// Master secret from which challenge keys are derived; shared by every replica and at
    /// least 16 bytes. Required.
    pub challenge_secret: Option<String>,
    /// Challenge key rotation period in seconds (keep it ≥ the routes' maxTimeoutSeconds).
    pub key_rotation_secs: u64,
    /// Pass key rotation period in seconds (docs/passes.md): new pass tokens are minted under
    /// the current pass key; older ones stay valid until their pass expires.
    pub pass_key_rotation_secs: u64,
    /// Seconds to wait for in-flight settlements at shutdown.
    pub shutdown_grace_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `nanogate_sidecar=debug`.
    pub log: String,
    pub nodes: NodesConfig,
    pub store: StoreConfig,
    pub settlement: SettlementConfig,
    pub facilitator: FacilitatorConfig,
    pub tagged: TaggedConfig,
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
}

/// Where `/metrics` is served, and whether it needs a token.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A listener of its own for `/metrics` (then not on `listen`). Unset: `/metrics` is on
    /// `listen` when that is loopback or a token is set, else on [`DEFAULT_METRICS_LISTEN`].
    pub listen: Option<SocketAddr>,
    /// `Authorization: Bearer <token>` required for `/metrics` (≥ 16 bytes).
    pub token: Option<String>,
}

/// Default pass key rotation: one day.
pub const DEFAULT_PASS_KEY_ROTATION_SECS: u64 = 86_400;

/// Where `/metrics` goes when the API listens beyond loopback and nothing else is said.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9402);

/// How the HTTP server protects itself.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Time limit of one request (body included), seconds. Settlements (`/v1/pay`, `/settle`)
    /// get `settlement.max_wait_secs` more.
    pub request_timeout_secs: u64,
    /// Requests handled at once (health, readiness and metrics excepted); beyond it, 503 with
    /// `Retry-After` at once.
    pub max_concurrent_requests: usize,
    /// `/readyz` probes the store and the node at most once per this many seconds.
    pub ready_cache_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            request_timeout_secs: 5,
            max_concurrent_requests: 512,
            ready_cache_secs: 2,
        }
    }
}

/// Limits on payment presentations (see `limits.rs`); a rate of 0 turns a limit off.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Refused presentations per second per source IP (the client address the filter forwards).
    pub source_refusals_per_sec: u32,
    /// Refused presentations a source may make at once before it is limited.
    pub source_refusal_burst: u32,
    /// Presentations per second per payer frontier (the block's account and previous).
    pub payer_presentations_per_sec: u32,
    /// Presentations on one payer frontier at once before it is limited.
    pub payer_presentation_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            source_refusals_per_sec: 5,
            source_refusal_burst: 50,
            payer_presentations_per_sec: 2,
            payer_presentation_burst: 10,
        }
    }
}

/// Tagged-amount sessions (docs/filter-sidecar.md, "Tagged-amount sessions").
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaggedConfig {
    /// Tags are drawn from 1..=tag_space raw (the lowest raw digits of the amount).
    pub tag_space: u64,
    /// How long expired sessions are kept so that late payments are recognized.
    pub retention_secs: u64,
    /// How often the pool and signed-block payee accounts are reconciled against the ledger
    /// (besides at start, on every WebSocket reconnect and when the watcher fell behind).
    pub reconcile_secs: u64,
}

impl Default for TaggedConfig {
    fn default() -> Self {
        TaggedConfig {
            tag_space: 999_999_999_999,
            retention_secs: 86_400,
            reconcile_secs: 30,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodesConfig {
    /// Node RPC URLs, tried in order with failover.
    pub rpc: Vec<String>,
    /// Node WebSocket URLs for confirmation pushes.
    pub ws: Vec<String>,
    /// Bound on one RPC call to one node, in milliseconds.
    pub call_timeout_ms: u64,
    /// Extra passes over all nodes for idempotent calls when every node failed.
    pub retries: u32,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (default) or `postgres://USER@HOST:PORT/DB`.
    pub database_url: String,
    /// PostgreSQL only: keep the tables in this schema (created if missing).
    pub postgres_schema: Option<String>,
    pub max_connections: u32,
    /// How often expired sessions, fork-set entries and finished payments are pruned, and
    /// time-driven payment states applied (seconds).
    pub prune_interval_secs: u64,
    /// How long `served` payments are kept after their last change (replay protection does
    /// not depend on them once the redemption horizon has passed; docs/payments.md).
    pub served_retention_secs: u64,
    /// How long `owed` payments are kept after their last change: until the operator refunds.
    pub owed_retention_secs: u64,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementConfig {
    /// Upper bound on the wait for confirmation (the challenge's validBefore also bounds it).
    pub max_wait_secs: u64,
    /// How long fork-set entries and nonces outlive their challenge's validBefore.
    pub fork_grace_secs: u64,
    /// How many times a payment may be redeemed again after failed upstream calls.
    pub max_redemptions: u32,
    /// Seconds after its settlement during which a payment that was not served stays
    /// redeemable (whatever its challenge's validBefore says); afterwards it is owed.
    pub redeem_window_secs: u64,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FacilitatorConfig {
    /// Bearer token for /verify, /settle and /v1/challenge. Without it those endpoints answer
    /// 401 (the facilitator API is off).
    pub token: Option<String>,
    /// Accept requirements that carry no nanogate MAC (from any x402 resource server).
    pub allow_unbound: bool,
    /// Payees (nano_ addresses) allowed for unbound requirements and for /v1/challenge
    /// (empty: /v1/challenge issues for any payee; unbound requirements are refused).
    pub pay_to: Vec<String>,
    /// maxTimeoutSeconds written into challenges issued by /v1/challenge.
    pub max_timeout_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8402)),
            network: network::MAINNET.into(),
            node_network: "live".into(),
            filter_secret: None,
            challenge_secret: None,
            key_rotation_secs: 300,
            pass_key_rotation_secs: DEFAULT_PASS_KEY_ROTATION_SECS,
            shutdown_grace_secs: 30,
            log: "info".into(),
            nodes: NodesConfig::default(),
            store: StoreConfig::default(),
            settlement: SettlementConfig::default(),
            facilitator: FacilitatorConfig::default(),
            tagged: TaggedConfig::default(),
            server: ServerConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for NodesConfig {
    fn default() -> Self {
        NodesConfig {
            rpc: vec!["http://127.0.0.1:7076".into()],
            ws: vec!["ws://127.0.0.1:7078".into()],
            call_timeout_ms: 2_000,
            retries: 2,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            database_url: "sqlite://nanogate.db".into(),
            postgres_schema: None,
            max_connections: 8,
            prune_interval_secs: 60,
            served_retention_secs: 7 * 86_400,
            owed_retention_secs: 90 * 86_400,
        }
    }
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            max_wait_secs: 8,
            fork_grace_secs: 60,
            max_redemptions: 2,
            redeem_window_secs: 600,
        }
    }
}

impl Default for FacilitatorConfig {
    fn default() -> Self {
        FacilitatorConfig {
            token: None,
            allow_unbound: false,
            pay_to: Vec::new(),
            max_timeout_seconds: 120,
        }
    }
}

/// Command line. Every flag also reads the environment variable shown in `--help`.
#[derive(Debug, Parser)]
#[command(
    name = "nanogate-sidecar",
    version,
    about = "nanogate sidecar: verifies and settles x402 payments in Nano for the Envoy filter",
    long_about = "nanogate sidecar: verifies and settles x402 payments in Nano (XNO) for the \
                  Envoy filter, and serves the x402 facilitator API.\n\nSettings come from the \
                  built-in defaults, then --config FILE (TOML), then NANOGATE_* environment \
                  variables and flags. Pass secrets through the environment, not flags."
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "NANOGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8402].
    #[arg(long, env = "NANOGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// x402 network id, e.g. nano:mainnet or nano:devnet [default: nano:mainnet].
    #[arg(long, env = "NANOGATE_NETWORK")]
    pub network: Option<String>,
    /// Nano network of the nodes: live, beta, dev or test [default: live].
    #[arg(long, env = "NANOGATE_NODE_NETWORK")]
    pub node_network: Option<String>,
    /// Shared secret the filter sends in x-nanogate-secret (required).
    #[arg(long, env = "NANOGATE_FILTER_SECRET", hide_env_values = true)]
    pub filter_secret: Option<String>,
    /// Master secret for challenge keys, ≥ 16 bytes, same on every replica (required).
    #[arg(long, env = "NANOGATE_CHALLENGE_SECRET", hide_env_values = true)]
    pub challenge_secret: Option<String>,
    /// Challenge key rotation period in seconds [default: 300].
    #[arg(long, env = "NANOGATE_KEY_ROTATION_SECS")]
    pub key_rotation_secs: Option<u64>,
    /// Pass key rotation period in seconds, 60 to 2678400 [default: 86400].
    #[arg(long, env = "NANOGATE_PASS_KEY_ROTATION_SECS")]
    pub pass_key_rotation_secs: Option<u64>,
    /// Node RPC URLs, comma-separated, tried in order [default: http://127.0.0.1:7076].
    #[arg(long, env = "NANOGATE_RPC_URLS", value_delimiter = ',')]
    pub rpc_urls: Option<Vec<String>>,
    /// Node WebSocket URLs, comma-separated [default: ws://127.0.0.1:7078].
    #[arg(long, env = "NANOGATE_WS_URLS", value_delimiter = ',')]
    pub ws_urls: Option<Vec<String>>,
    /// Bound on one RPC call to one node, in ms [default: 2000].
    #[arg(long, env = "NANOGATE_RPC_TIMEOUT_MS")]
    pub rpc_timeout_ms: Option<u64>,
    /// Extra passes over all nodes when all failed [default: 2].
    #[arg(long, env = "NANOGATE_RPC_RETRIES")]
    pub rpc_retries: Option<u32>,
    /// sqlite://PATH or postgres://… [default: sqlite://nanogate.db].
    #[arg(long, env = "NANOGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL schema for the tables (created if missing).
    #[arg(long, env = "NANOGATE_POSTGRES_SCHEMA")]
    pub postgres_schema: Option<String>,
    /// Store connection pool size [default: 8].
    #[arg(long, env = "NANOGATE_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Prune interval for expired nonces, fork-set entries and finished payments, seconds [default: 60].
    #[arg(long, env = "NANOGATE_PRUNE_INTERVAL_SECS")]
    pub prune_interval_secs: Option<u64>,
    /// Seconds served payments are kept [default: 604800 (7 days); > the redemption horizon].
    #[arg(long, env = "NANOGATE_SERVED_RETENTION_SECS")]
    pub served_retention_secs: Option<u64>,
    /// Seconds owed payments are kept for refunds [default: 7776000 (90 days)].
    #[arg(long, env = "NANOGATE_OWED_RETENTION_SECS")]
    pub owed_retention_secs: Option<u64>,
    /// Upper bound on the wait for confirmation, seconds [default: 8; keep it under the filter's sidecar.timeoutMs].
    #[arg(long, env = "NANOGATE_MAX_WAIT_SECS")]
    pub max_wait_secs: Option<u64>,
    /// How long fork-set entries outlive their challenge, seconds [default: 60].
    #[arg(long, env = "NANOGATE_FORK_GRACE_SECS")]
    pub fork_grace_secs: Option<u64>,
    /// Re-redemptions allowed after failed upstream calls [default: 2].
    #[arg(long, env = "NANOGATE_MAX_REDEMPTIONS")]
    pub max_redemptions: Option<u32>,
    /// Seconds after settlement a payment not served stays redeemable [default: 600].
    #[arg(long, env = "NANOGATE_REDEEM_WINDOW_SECS")]
    pub redeem_window_secs: Option<u64>,
    /// Bearer token for the facilitator API and /v1/challenge (off without one).
    #[arg(long, env = "NANOGATE_FACILITATOR_TOKEN", hide_env_values = true)]
    pub facilitator_token: Option<String>,
    /// Accept facilitator requirements without a nanogate MAC [default: false].
    #[arg(long, env = "NANOGATE_ALLOW_UNBOUND")]
    pub allow_unbound: Option<bool>,
    /// Allowed payees (nano_ addresses), comma-separated.
    #[arg(long, env = "NANOGATE_PAY_TO", value_delimiter = ',')]
    pub pay_to: Option<Vec<String>>,
    /// maxTimeoutSeconds of challenges issued by /v1/challenge [default: 120].
    #[arg(long, env = "NANOGATE_CHALLENGE_MAX_TIMEOUT_SECS")]
    pub challenge_max_timeout_secs: Option<u64>,
    /// Seconds to drain in-flight settlements at shutdown [default: 30].
    #[arg(long, env = "NANOGATE_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Log filter, e.g. info or nanogate_sidecar=debug [default: info].
    #[arg(long, env = "NANOGATE_LOG")]
    pub log: Option<String>,
    /// Tagged sessions: tags are drawn from 1..=N raw [default: 999999999999].
    #[arg(long, env = "NANOGATE_TAG_SPACE")]
    pub tag_space: Option<u64>,
    /// Tagged sessions: seconds expired sessions are kept to recognize late payments [default: 86400].
    #[arg(long, env = "NANOGATE_SESSION_RETENTION_SECS")]
    pub session_retention_secs: Option<u64>,
    /// Tagged sessions: seconds between reconciliations of the pool and payee accounts against the
    /// ledger (catching up on sends the WebSocket missed; also at start and on reconnect)
    /// [default: 30].
    #[arg(long, env = "NANOGATE_RECONCILE_SECS")]
    pub reconcile_secs: Option<u64>,
    /// Time limit of one request, body included, seconds; settlements get max_wait_secs more [default: 5].
    #[arg(long, env = "NANOGATE_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Requests handled at once; beyond it, 503 + Retry-After at once [default: 512].
    #[arg(long, env = "NANOGATE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// /readyz probes the store and the node at most once per N seconds [default: 2].
    #[arg(long, env = "NANOGATE_READY_CACHE_SECS")]
    pub ready_cache_secs: Option<u64>,
    /// Refused payment presentations per second per source IP; 0 = no limit [default: 5].
    #[arg(long, env = "NANOGATE_SOURCE_REFUSALS_PER_SEC")]
    pub source_refusals_per_sec: Option<u32>,
    /// Refused presentations a source may make at once before 429 [default: 50].
    #[arg(long, env = "NANOGATE_SOURCE_REFUSAL_BURST")]
    pub source_refusal_burst: Option<u32>,
    /// Presentations per second per payer frontier (account + previous); 0 = no limit [default: 2].
    #[arg(long, env = "NANOGATE_PAYER_PRESENTATIONS_PER_SEC")]
    pub payer_presentations_per_sec: Option<u32>,
    /// Presentations on one payer frontier at once before 429 [default: 10].
    #[arg(long, env = "NANOGATE_PAYER_PRESENTATION_BURST")]
    pub payer_presentation_burst: Option<u32>,
    /// A separate listener for /metrics [default: on --listen if that is loopback or a metrics
    /// token is set, else 127.0.0.1:9402].
    #[arg(long, env = "NANOGATE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token required for /metrics, ≥ 16 bytes (off without one).
    #[arg(long, env = "NANOGATE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

impl Config {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Defaults, then the file named by `cli.config`, then the environment and flags.
    pub fn load(cli: Cli) -> Result<Self, ConfigError> {
        let mut c = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text)?
            }
            None => Config::default(),
        };
        set(&mut c.listen, cli.listen);
        set(&mut c.network, cli.network);
        set(&mut c.node_network, cli.node_network);
        if cli.filter_secret.is_some() {
            c.filter_secret = cli.filter_secret;
        }
        if cli.challenge_secret.is_some() {
            c.challenge_secret = cli.challenge_secret;
        }
        set(&mut c.key_rotation_secs, cli.key_rotation_secs);
        set(&mut c.pass_key_rotation_secs, cli.pass_key_rotation_secs);
        set(&mut c.nodes.rpc, cli.rpc_urls);
        set(&mut c.nodes.ws, cli.ws_urls);
        set(&mut c.nodes.call_timeout_ms, cli.rpc_timeout_ms);
        set(&mut c.nodes.retries, cli.rpc_retries);
        set(&mut c.store.database_url, cli.database_url);
        if cli.postgres_schema.is_some() {
            c.store.postgres_schema = cli.postgres_schema;
        }
        set(&mut c.store.max_connections, cli.db_max_connections);
        set(&mut c.store.prune_interval_secs, cli.prune_interval_secs);
        set(&mut c.settlement.max_wait_secs, cli.max_wait_secs);
        set(&mut c.settlement.fork_grace_secs, cli.fork_grace_secs);
        set(&mut c.settlement.max_redemptions, cli.max_redemptions);
        set(&mut c.settlement.redeem_window_secs, cli.redeem_window_secs);
        set(
            &mut c.store.served_retention_secs,
            cli.served_retention_secs,
        );
        set(&mut c.store.owed_retention_secs, cli.owed_retention_secs);
        if cli.facilitator_token.is_some() {
            c.facilitator.token = cli.facilitator_token;
        }
        set(&mut c.facilitator.allow_unbound, cli.allow_unbound);
        set(&mut c.facilitator.pay_to, cli.pay_to);
        set(
            &mut c.facilitator.max_timeout_seconds,
            cli.challenge_max_timeout_secs,
        );
        set(&mut c.shutdown_grace_secs, cli.shutdown_grace_secs);
        set(&mut c.log, cli.log);
        set(&mut c.tagged.tag_space, cli.tag_space);
        set(&mut c.tagged.retention_secs, cli.session_retention_secs);
        set(&mut c.tagged.reconcile_secs, cli.reconcile_secs);
        set(&mut c.server.request_timeout_secs, cli.request_timeout_secs);
        set(
            &mut c.server.max_concurrent_requests,
            cli.max_concurrent_requests,
        );
        set(&mut c.server.ready_cache_secs, cli.ready_cache_secs);
        set(
            &mut c.limits.source_refusals_per_sec,
            cli.source_refusals_per_sec,
        );
        set(&mut c.limits.source_refusal_burst, cli.source_refusal_burst);
        set(
            &mut c.limits.payer_presentations_per_sec,
            cli.payer_presentations_per_sec,
        );
        set(
            &mut c.limits.payer_presentation_burst,
            cli.payer_presentation_burst,
        );
        if cli.metrics_listen.is_some() {
            c.metrics.listen = cli.metrics_listen;
        }
        if cli.metrics_token.is_some() {
            c.metrics.token = cli.metrics_token;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks what the sidecar cannot run without. Messages never echo secret values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        match &self.filter_secret {
            Some(s) if s.len() >= 16 => {}
            _ => return bad("filter_secret (NANOGATE_FILTER_SECRET) must be set, ≥ 16 bytes"),
        }
        match &self.challenge_secret {
            Some(s) if s.len() >= 16 => {}
            _ => {
                return bad("challenge_secret (NANOGATE_CHALLENGE_SECRET) must be set, ≥ 16 bytes")
            }
        }
        if let Some(t) = &self.facilitator.token {
            if t.len() < 16 {
                return bad("facilitator.token must be ≥ 16 bytes");
            }
        }
        if self.metrics.token.as_ref().is_some_and(|t| t.len() < 16) {
            return bad("metrics.token (NANOGATE_METRICS_TOKEN) must be ≥ 16 bytes");
        }
        if self.metrics_listener() == Some(self.listen) {
            return bad("metrics.listen must differ from listen");
        }
        if self.node_network().is_none() {
            return bad("node_network must be live, beta, dev or test");
        }
        if let Err(e) = check_network(&self.network) {
            return bad(&format!("network: {e}"));
        }
        if self.network == network::MAINNET && self.node_network != "live" {
            return bad("network nano:mainnet needs node_network = live");
        }
        if self.nodes.rpc.is_empty() {
            return bad("at least one node RPC URL is required");
        }
        if self.key_rotation_secs == 0 || self.settlement.max_wait_secs == 0 {
            return bad("key_rotation_secs and settlement.max_wait_secs must be > 0");
        }
        if !(60..=MAX_PASS_SECONDS).contains(&self.pass_key_rotation_secs) {
            return Err(ConfigError::Invalid(format!(
                "pass_key_rotation_secs (NANOGATE_PASS_KEY_ROTATION_SECS) must be 60 to \
                 {MAX_PASS_SECONDS} (the longest pass)"
            )));
        }
        if self.pay_to_keys().is_err() {
            return bad("facilitator.pay_to holds an invalid nano_ address");
        }
        if self.settlement.redeem_window_secs == 0 || self.settlement.redeem_window_secs > 86_400 {
            return bad("settlement.redeem_window_secs must be 1 to 86400");
        }
        // A served row may only be forgotten once no presentation of it can be judged as
        // "confirmed but never recorded" any more (docs/payments.md, Retention).
        let horizon = self.redemption_horizon_secs();
        if self.store.served_retention_secs <= horizon {
            return Err(ConfigError::Invalid(format!(
                "store.served_retention_secs must exceed the redemption horizon \
                 (3600 + fork_grace_secs + redeem_window_secs = {horizon} s)"
            )));
        }
        if self.store.owed_retention_secs < self.store.served_retention_secs {
            return bad("store.owed_retention_secs must be ≥ store.served_retention_secs");
        }
        if !(1..=3_600).contains(&self.tagged.reconcile_secs) {
            return bad("tagged.reconcile_secs must be 1 to 3600");
        }
        if !(1..=3_600).contains(&self.server.request_timeout_secs) {
            return bad("server.request_timeout_secs must be 1..=3600");
        }
        if !(1..=1_000_000).contains(&self.server.max_concurrent_requests) {
            return bad("server.max_concurrent_requests must be 1..=1000000");
        }
        if self.server.ready_cache_secs > 300 {
            return bad("server.ready_cache_secs must be ≤ 300");
        }
        let l = &self.limits;
        if (l.source_refusals_per_sec > 0 && l.source_refusal_burst == 0)
            || (l.payer_presentations_per_sec > 0 && l.payer_presentation_burst == 0)
        {
            return bad(
                "limits: a burst must be ≥ 1 when its rate is on (rate 0 turns a limit off)",
            );
        }
        Ok(())
    }

    /// The separate listener `/metrics` is served on, or `None`: on `listen`. Metrics stay off
    /// the network unless asked for: beside a loopback API, behind a token, or where
    /// `metrics.listen` says.
    pub fn metrics_listener(&self) -> Option<SocketAddr> {
        match self.metrics.listen {
            Some(a) => Some(a),
            None if self.listen.ip().is_loopback() || self.metrics.token.is_some() => None,
            None => Some(DEFAULT_METRICS_LISTEN),
        }
    }

    /// How long after a challenge's key period a payment made under it can still be redeemed
    /// or recorded: the longest challenge validity, the fork grace and the redemption window.
    pub fn redemption_horizon_secs(&self) -> u64 {
        3_600u64
            .saturating_add(self.settlement.fork_grace_secs)
            .saturating_add(self.settlement.redeem_window_secs)
    }

    /// The presentation limits these settings describe.
    pub fn limit_settings(&self) -> crate::limits::LimitSettings {
        use crate::limits::Rate;
        let l = &self.limits;
        crate::limits::LimitSettings {
            source_refusals: Rate {
                per_sec: l.source_refusals_per_sec,
                burst: l.source_refusal_burst,
            },
            payer_presentations: Rate {
                per_sec: l.payer_presentations_per_sec,
                burst: l.payer_presentation_burst,
            },
        }
    }

    pub fn node_network(&self) -> Option<Network> {
        Network::from_rpc_name(&self.node_network)
    }

    pub fn pay_to_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        self.facilitator
            .pay_to
            .iter()
            .map(|a| {
                PublicKey::from_address(a)
                    .map_err(|e| ConfigError::Invalid(format!("pay_to {a}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c = Config::from_toml(
            "network = \"nano:devnet\"\nnode_network = \"dev\"\n[settlement]\nmax_redemptions = 5\n",
        )
        .unwrap();
        assert_eq!(c.network, "nano:devnet");
        assert_eq!(c.settlement.max_redemptions, 5);
        assert_eq!(c.settlement.max_wait_secs, 8);
        assert_eq!(c.listen.ip().to_string(), "127.0.0.1");
        assert!(Config::from_toml("nope = 1").is_err());
    }

    #[test]
    fn missing_secrets_are_refused_without_echoing_values() {
        let mut c = Config::default();
        assert!(c.validate().is_err());
        c.filter_secret = Some("short".into());
        c.challenge_secret = Some("0123456789abcdef".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(!e.contains("short"));
        c.filter_secret = Some("0123456789abcdef".into());
        c.validate().unwrap();
    }

    #[test]
    fn retention_shorter_than_the_redemption_horizon_is_refused() {
        let mut c = Config {
            filter_secret: Some("0123456789abcdef".into()),
            challenge_secret: Some("0123456789abcdef".into()),
            ..Config::default()
        };
        assert_eq!(c.settlement.redeem_window_secs, 600);
        c.store.served_retention_secs = 3_600;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("redemption horizon"));
        c.store.served_retention_secs = 86_400;
        c.validate().unwrap();
        c.settlement.redeem_window_secs = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn server_and_limit_settings_are_validated() {
        let ok = |t: &str| {
            let mut c = Config::from_toml(t).unwrap();
            c.filter_secret = Some("0123456789abcdef".into());
            c.challenge_secret = Some("0123456789abcdef".into());
            c.validate()
        };
        assert!(ok("").is_ok());
        assert!(ok("[server]\nrequest_timeout_secs = 0\n").is_err());
        assert!(ok("[server]\nmax_concurrent_requests = 0\n").is_err());
        assert!(ok("[limits]\nsource_refusal_burst = 0\n").is_err());
        assert!(ok("[limits]\nsource_refusals_per_sec = 0\nsource_refusal_burst = 0\n").is_ok());
        assert!(Config::from_toml("[limits]\nnope = 1\n").is_err());
    }
}
