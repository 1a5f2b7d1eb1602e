//! Wiring: build the application state from a [`Config`], and serve it with graceful shutdown
//! (stop accepting, let in-flight settlements finish, then return).

use crate::api;
use crate::config::Config;
use crate::engine::reconcile::spawn_reconciler;
use crate::engine::tagged::{spawn_watcher, TaggedSettings};
use crate::engine::work::{WorkAttacher, WorkSettings, WorkSource};
use crate::engine::{unix_now, Engine, EngineConfig};
use crate::keys::ChallengeKeys;
use crate::ledger::node_ledger::{NodeLedger, NodeMetricsBridge};
use crate::ledger::Ledger;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::node::{Confirmations, NodeClient, NodeConfig};
use crate::passes::PassKeys;
use crate::readiness::Readiness;
use crate::state::{AppState, Credentials, FacilitatorSettings, HttpSettings};
use crate::store::{self, RedeemPolicy, Retention, Store, StoreError};
use crate::wallet::pocket::spawn_pocketer;
use crate::wallet::sweep::spawn_sweeper;
use crate::wallet::{Seed, Wallet, WalletSettings, WorkSource as WalletWork};
use nanogate_protocol::nano::PublicKey;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Seed(#[from] crate::wallet::seed::SeedError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The engine settings a [`Config`] describes.
pub fn engine_config(cfg: &Config) -> Result<EngineConfig, ServerError> {
    let node_network = cfg.node_network().ok_or_else(|| {
        crate::config::ConfigError::Invalid("node_network must be live, beta, dev or test".into())
    })?;
    Ok(EngineConfig {
        network: cfg.network.clone(),
        node_network,
        max_wait: Duration::from_secs(cfg.settlement.max_wait_secs),
        fork_grace_secs: cfg.settlement.fork_grace_secs,
        redeem: RedeemPolicy {
            max_redemptions: i64::from(cfg.settlement.max_redemptions),
            window_secs: i64::try_from(cfg.settlement.redeem_window_secs).unwrap_or(i64::MAX),
        },
        retention: Retention {
            served_secs: i64::try_from(cfg.store.served_retention_secs).unwrap_or(i64::MAX),
            owed_secs: i64::try_from(cfg.store.owed_retention_secs).unwrap_or(i64::MAX),
        },
        allow_unbound: cfg.facilitator.allow_unbound,
        pay_to_allow: cfg.pay_to_keys()?,
    })
}

/// State over a given store and ledger (tests use the in-memory ledger).
pub fn state_with(
    cfg: &Config,
    store: Arc<dyn Store>,
    ledger: Arc<dyn Ledger>,
    metrics: Arc<Metrics>,
) -> Result<AppState, ServerError> {
    cfg.validate()?;
    // Without a challenge secret (facilitator only), keys come from random bytes nobody knows:
    // no MAC verifies, so every payment must pass as unbound requirements. An empty secret
    // would let anyone compute MACs and skip the unbound checks.
    let secret = match &cfg.challenge_secret {
        Some(s) => s.clone().into_bytes(),
        None => rand::random::<[u8; 32]>().to_vec(),
    };
    let keys = ChallengeKeys::new(secret.clone(), cfg.key_rotation_secs);
    let work = Arc::new(WorkAttacher::new(
        work_source(cfg, &metrics),
        WorkSettings {
            per_payer_per_min: cfg.work.per_payer_per_min,
            max_concurrent: cfg.work.max_concurrent,
        },
    ));
    let engine = Engine::new(engine_config(cfg)?, keys, store, ledger, metrics.clone())
        .with_work(work)
        .with_tagged(TaggedSettings {
            tag_space: cfg.tagged.tag_space.max(1),
            retention_secs: cfg.tagged.retention_secs,
            ..TaggedSettings::default()
        })
        .with_limits(Arc::new(Limits::new(cfg.limit_settings())));
    let request_timeout = Duration::from_secs(cfg.server.request_timeout_secs);
    Ok(AppState {
        engine: Arc::new(engine),
        metrics,
        credentials: Arc::new(Credentials {
            filter_secret: cfg.filter_secret.clone().unwrap_or_default(),
            facilitator_token: cfg.facilitator.token.clone(),
            metrics_token: cfg.metrics.token.clone(),
        }),
        challenge_max_timeout_secs: cfg.facilitator.max_timeout_seconds,
        http: HttpSettings {
            request_timeout,
            settle_timeout: request_timeout + Duration::from_secs(cfg.settlement.max_wait_secs),
            max_concurrent: cfg.server.max_concurrent_requests,
            metrics_separate: cfg.metrics_listener().is_some(),
        },
        readiness: Arc::new(Readiness::new(Duration::from_secs(
            cfg.server.ready_cache_secs,
        ))),
        facilitator: FacilitatorSettings {
            only: cfg.facilitator.only,
            issues_challenges: cfg.challenge_secret.is_some(),
            attach_work: cfg.facilitator.attach_work,
        },
        wallet: None,
        // The same master as the challenge keys (pass keys derive under their own domain):
        // random without a challenge secret, never an empty, public one.
        passes: Arc::new(PassKeys::new(secret, cfg.pass_key_rotation_secs)),
    })
}

/// Where seller-side work comes from: the configured work server, else the nodes (both
/// answer `work_generate`), bounded by `work.timeout_secs`.
fn work_source(cfg: &Config, metrics: &Arc<Metrics>) -> Arc<dyn WorkSource> {
    let rpc_urls = match &cfg.work.server {
        Some(url) => vec![url.clone()],
        None => cfg.nodes.rpc.clone(),
    };
    let node_cfg = NodeConfig {
        rpc_urls,
        call_timeout: Duration::from_millis(cfg.nodes.call_timeout_ms.max(1)),
        retries: 0,
        ..NodeConfig::default()
    };
    Arc::new(
        NodeClient::new(&node_cfg)
            .with_metrics(Arc::new(NodeMetricsBridge(metrics.clone())))
            .with_work_timeout(Duration::from_secs(cfg.work.timeout_secs)),
    )
}

/// The node client (failover) and confirmation tracker the configuration names.
pub fn node_ledger(cfg: &Config, metrics: &Arc<Metrics>) -> NodeLedger {
    let node_cfg = NodeConfig {
        rpc_urls: cfg.nodes.rpc.clone(),
        ws_urls: cfg.nodes.ws.clone(),
        call_timeout: Duration::from_millis(cfg.nodes.call_timeout_ms.max(1)),
        retries: cfg.nodes.retries,
        ..NodeConfig::default()
    };
    let client =
        NodeClient::new(&node_cfg).with_metrics(Arc::new(NodeMetricsBridge(metrics.clone())));
    let confirmations = Confirmations::spawn(cfg.nodes.ws.clone(), client.clone());
    // Known payees are watched from the start so their first confirmation arrives by push.
    for payee in cfg.pay_to_keys().unwrap_or_default() {
        confirmations.watch_account(&payee);
    }
    NodeLedger::new(client, confirmations)
}

/// The payee wallet the configuration describes (its seed already read).
fn wallet(
    cfg: &Config,
    node: &NodeLedger,
    seed: Option<Seed>,
    metrics: &Arc<Metrics>,
) -> Result<Wallet, ServerError> {
    let invalid = |m: &str| crate::config::ConfigError::Invalid(m.to_owned());
    let settings = WalletSettings {
        accounts: cfg.wallet.accounts,
        work: WalletWork::parse(&cfg.wallet.work)
            .ok_or_else(|| invalid("wallet.work must be node or local"))?,
        representative: match &cfg.wallet.representative {
            Some(r) => Some(
                PublicKey::from_address(r)
                    .map_err(|_| invalid("wallet.representative must be a nano_ address"))?,
            ),
            None => None,
        },
        thresholds: cfg
            .node_network()
            .ok_or_else(|| invalid("node_network must be live, beta, dev or test"))?
            .thresholds(),
        confirm_wait: Duration::from_secs(30),
        treasury: match &cfg.wallet.treasury {
            Some(t) => Some(
                PublicKey::from_address(t)
                    .map_err(|_| invalid("wallet.treasury must be a nano_ address"))?,
            ),
            None => None,
        },
    };
    if cfg.wallet.sweep_interval_secs > 0 && seed.is_none() {
        return Err(invalid(
            "wallet.sweep_interval_secs needs a wallet seed (wallet.seed_file or NANOGATE_WALLET_SEED)",
        )
        .into());
    }
    Ok(Wallet::new(
        node.client().clone(),
        seed,
        settings,
        metrics.clone(),
    ))
}

/// Opens the store (creating the schema) and connects the nodes. Must run inside tokio.
pub async fn open_state(cfg: &Config) -> Result<AppState, ServerError> {
    cfg.validate()?;
    // Read and check the wallet seed first: a bad one stops the start with a clear error.
    let seed = crate::wallet::seed::from_environment(cfg.wallet.seed_file.as_deref())?;
    if seed.is_some() {
        tracing::info!(
            accounts = cfg.wallet.accounts,
            "wallet seed loaded: the sidecar signs refunds and pockets payments"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let store = store::open(
        &cfg.store.database_url,
        cfg.store.postgres_schema.as_deref(),
        cfg.store.max_connections,
    )
    .await?;
    let node = node_ledger(cfg, &metrics);
    let wallet = Arc::new(wallet(cfg, &node, seed, &metrics)?);
    // Tagged sessions: follow confirmations to the pool accounts (marks sessions paid, records
    // stray payments), starting with the accounts of sessions still open.
    let confirmations = node.confirmations().subscribe();
    let resubscribed = node.confirmations().ws_status();
    let ledger: Arc<dyn Ledger> = Arc::new(node);
    let mut state = state_with(cfg, store, ledger, metrics)?;
    state.wallet = Some(wallet.clone());
    let window = Duration::from_secs(cfg.settlement.max_wait_secs.saturating_add(5));
    spawn_watcher(&state.engine, confirmations, window);
    if let Err(e) = state.engine.rewatch_open_sessions().await {
        tracing::warn!(error = %e, "could not list the accounts of open sessions");
    }
    match state.engine.store().fold_legacy_strays(&cfg.network).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            n,
            "stray payments of an older version folded into owed payments"
        ),
        Err(e) => tracing::warn!(error = %e, "could not fold legacy stray payments"),
    }
    // Blocks a previous run broadcast and was still waiting for.
    match state.engine.resume_pending().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "resumed tracking pending settlements"),
        Err(e) => tracing::warn!(error = %e, "could not list pending settlements"),
    }
    // Catch up from the ledger on what the WebSocket missed: now (a restart), after every
    // reconnect, when the watcher lagged, and periodically.
    spawn_reconciler(
        &state.engine,
        Some(resubscribed),
        Duration::from_secs(cfg.tagged.reconcile_secs),
        window,
    );
    // Refunds a previous run recorded are published again first, then pocketing runs on its
    // schedule (docs/refunds.md).
    spawn_pocketer(
        state.engine.clone(),
        wallet.clone(),
        Duration::from_secs(cfg.wallet.pocket_interval_secs),
    );
    if let (Some(treasury), true) = (
        wallet.settings().treasury,
        cfg.wallet.sweep_interval_secs > 0,
    ) {
        spawn_sweeper(
            state.engine.clone(),
            wallet,
            treasury,
            Duration::from_secs(cfg.wallet.sweep_interval_secs),
        );
    }
    Ok(state)
}

/// Every `every`, until the state is dropped: applies the time-driven payment states (lease
/// over → redeemable, window over → owed), prunes expired nonces, fork-set entries, sessions,
/// finished payments past their retention and idle rate-limit keys.
pub fn spawn_pruner(state: &AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    let engine = Arc::downgrade(&state.engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
            let cfg = engine.config();
            match engine.store().sweep(now, cfg.redeem).await {
                Ok(n) => tracing::debug!(changed = n, "payment states swept"),
                Err(e) => tracing::warn!(error = %e, "sweeping payment states failed"),
            }
            if let Err(e) = engine.store().prune_payments(now, cfg.retention).await {
                tracing::warn!(error = %e, "pruning payments failed");
            }
            match engine.store().prune(now).await {
                Ok(n) => tracing::debug!(pruned = n, "pruned expired nonces and fork entries"),
                Err(e) => tracing::warn!(error = %e, "prune failed"),
            }
            if let Err(e) = engine.store().prune_tagged(now).await {
                tracing::warn!(error = %e, "pruning tagged sessions failed");
            }
            engine.limits().prune();
            if let Some(w) = engine.work() {
                w.prune();
            }
        }
    })
}

/// `listener` with TCP_NODELAY set on every accepted socket (`axum::serve` leaves Nagle on).
/// With Nagle, a response written in more than one segment (or right after one the peer has
/// not acknowledged yet) waits for that ACK, which the peer may delay by up to 40 ms.
pub fn nodelay(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted socket");
        }
    })
}

/// Serves `/metrics` alone on `listener` (`metrics.listen`) until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    axum::serve(nodelay(listener), api::metrics_router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Serves until `shutdown` resolves, then stops accepting, lets open requests finish and
/// waits (at most `drain`) for settlements still in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), ServerError> {
    let engine = state.engine.clone();
    let app = api::router(state);
    axum::serve(nodelay(listener), app)
        .with_graceful_shutdown(shutdown)
        .await?;
    let pending = engine.inflight.count();
    if pending > 0 {
        tracing::info!(pending, "waiting for in-flight settlements");
    }
    if tokio::time::timeout(drain, engine.inflight.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            pending = engine.inflight.count(),
            "shutdown grace ended with settlements in flight; their payments stay claimed \
             and can be re-presented"
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::nodelay;
    use axum::serve::Listener;
    use tokio::net::{TcpListener, TcpStream};

    /// Every socket the sidecar accepts has Nagle off.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = nodelay(listener);
        for _ in 0..2 {
            let client = TcpStream::connect(addr).await.unwrap();
            // Whatever the client side says, the server side is what we set.
            client.set_nodelay(false).unwrap();
            let (accepted, _) = listener.accept().await;
            assert!(accepted.nodelay().unwrap());
        }
    }
}
