//! `nanogate-sidecar`: see `--help` and sidecar/README.md.

use anyhow::Context;
use clap::Parser;
use nanogate_sidecar::config::{Cli, Config};
use nanogate_sidecar::{build_info, server};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested: no new connections; draining");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli).context("configuration")?;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cfg.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    tracing::info!(
        version = build_info::VERSION,
        commit = build_info::COMMIT.unwrap_or("unknown"),
        profile = build_info::PROFILE,
        "nanogate sidecar starting"
    );
    let state = server::open_state(&cfg)
        .await
        .context("starting the sidecar")?;
    let _pruner = server::spawn_pruner(&state, Duration::from_secs(cfg.store.prune_interval_secs));
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    if let Some(addr) = cfg.metrics_listener() {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        tracing::info!(metrics = %addr, "serving /metrics on its own listener");
        // Ends with the process; it holds no settlement to drain.
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) =
                server::serve_metrics(metrics, state, std::future::pending::<()>()).await
            {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    tracing::info!(
        listen = %cfg.listen,
        network = %cfg.network,
        store = state.engine.store().kind(),
        nodes = cfg.nodes.rpc.len(),
        "nanogate sidecar ready"
    );
    server::serve(
        listener,
        state,
        shutdown_signal(),
        Duration::from_secs(cfg.shutdown_grace_secs),
    )
    .await
    .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
