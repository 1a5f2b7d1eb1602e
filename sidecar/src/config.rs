//! Configuration: built-in defaults, then the TOML file (`--config FILE`), then environment
//! variables (`NANOGATE_*`) and command-line flags (flags win over the environment). Every
//! option is listed in `--help` and in sidecar/README.md.

use clap::Parser;
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
    /// Seconds to wait for in-flight settlements at shutdown.
    pub shutdown_grace_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `nanogate_sidecar=debug`.
    pub log: String,
    pub nodes: NodesConfig,
    pub store: StoreConfig,
    pub settlement: SettlementConfig,
    pub facilitator: FacilitatorConfig,
    pub tagged: TaggedConfig,
}

/// Tagged-amount sessions (mechanism 2).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaggedConfig {
    /// Tags are drawn from 1..=tag_space raw (the lowest raw digits of the amount).
    pub tag_space: u64,
    /// How long expired sessions are kept so that late payments are recognized.
    pub retention_secs: u64,
    /// How often the pool accounts are reconciled against the ledger (besides at start, on
    /// every WebSocket reconnect and when the watcher fell behind).
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
    /// How often expired sessions and fork-set entries are pruned (seconds).
    pub prune_interval_secs: u64,
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
    /// Seconds after an admission without an outcome report when the upstream call counts as
    /// failed (a crashed filter must not strand the payment).
    pub outcome_grace_secs: u64,
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
            network: "nano:mainnet".into(),
            node_network: "live".into(),
            filter_secret: None,
            challenge_secret: None,
            key_rotation_secs: 300,
            shutdown_grace_secs: 30,
            log: "info".into(),
            nodes: NodesConfig::default(),
            store: StoreConfig::default(),
            settlement: SettlementConfig::default(),
            facilitator: FacilitatorConfig::default(),
            tagged: TaggedConfig::default(),
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
        }
    }
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            max_wait_secs: 8,
            fork_grace_secs: 60,
            max_redemptions: 2,
            outcome_grace_secs: 120,
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
    /// Prune interval for expired nonces and fork-set entries, seconds [default: 60].
    #[arg(long, env = "NANOGATE_PRUNE_INTERVAL_SECS")]
    pub prune_interval_secs: Option<u64>,
    /// Upper bound on the wait for confirmation, seconds [default: 8; keep it under the filter's sidecar.timeoutMs].
    #[arg(long, env = "NANOGATE_MAX_WAIT_SECS")]
    pub max_wait_secs: Option<u64>,
    /// How long fork-set entries outlive their challenge, seconds [default: 60].
    #[arg(long, env = "NANOGATE_FORK_GRACE_SECS")]
    pub fork_grace_secs: Option<u64>,
    /// Re-redemptions allowed after failed upstream calls [default: 2].
    #[arg(long, env = "NANOGATE_MAX_REDEMPTIONS")]
    pub max_redemptions: Option<u32>,
    /// Seconds without an outcome report before the upstream call counts as failed [default: 120].
    #[arg(long, env = "NANOGATE_OUTCOME_GRACE_SECS")]
    pub outcome_grace_secs: Option<u64>,
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
    /// Tagged sessions: seconds between reconciliations of the pool accounts against the
    /// ledger (catching up on sends the WebSocket missed; also at start and on reconnect)
    /// [default: 30].
    #[arg(long, env = "NANOGATE_RECONCILE_SECS")]
    pub reconcile_secs: Option<u64>,
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
        set(&mut c.settlement.outcome_grace_secs, cli.outcome_grace_secs);
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
        if self.node_network().is_none() {
            return bad("node_network must be live, beta, dev or test");
        }
        if !self.network.starts_with("nano:") {
            return bad("network must be a nano: CAIP-2 id, e.g. nano:mainnet");
        }
        if self.network == "nano:mainnet" && self.node_network != "live" {
            return bad("network nano:mainnet needs node_network = live");
        }
        if self.nodes.rpc.is_empty() {
            return bad("at least one node RPC URL is required");
        }
        if self.key_rotation_secs == 0 || self.settlement.max_wait_secs == 0 {
            return bad("key_rotation_secs and settlement.max_wait_secs must be > 0");
        }
        if self.pay_to_keys().is_err() {
            return bad("facilitator.pay_to holds an invalid nano_ address");
        }
        if !(1..=3_600).contains(&self.tagged.reconcile_secs) {
            return bad("tagged.reconcile_secs must be 1 to 3600");
        }
        Ok(())
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
}
