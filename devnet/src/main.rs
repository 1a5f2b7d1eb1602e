//! `nanogate-devnet`: run the dev ledger as a process (for the demo and manual testing).

use anyhow::Context;
use clap::Parser;
use nanogate_devnet::{Confirm, Devnet, DevnetConfig};
use nanogate_protocol::nano::{parse_raw, PublicKey};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A Nano dev ledger speaking nano-node's RPC and WebSocket JSON.
#[derive(Debug, Parser)]
#[command(name = "nanogate-devnet", version)]
struct Args {
    /// RPC listen address (POST JSON; also /admin/faults).
    #[arg(long, default_value = "127.0.0.1:45000")]
    rpc: SocketAddr,
    /// WebSocket listen address (confirmation topic; also /admin/faults).
    #[arg(long, default_value = "127.0.0.1:47000")]
    ws: SocketAddr,
    /// Confirm processed blocks after this many milliseconds.
    #[arg(long, default_value_t = 100, conflicts_with = "never_confirm")]
    confirm_after_ms: u64,
    /// Never confirm (until POST /admin/faults {"confirming": true}).
    #[arg(long)]
    never_confirm: bool,
    /// Fund an account from genesis at start: nano_ADDRESS=RAW (repeatable).
    #[arg(long, value_parser = parse_fund)]
    fund: Vec<(PublicKey, u128)>,
    /// Keep the ledger in this JSON file across restarts.
    #[arg(long)]
    state: Option<PathBuf>,
}

fn parse_fund(s: &str) -> Result<(PublicKey, u128), String> {
    let (addr, raw) = s
        .split_once('=')
        .ok_or_else(|| format!("expected nano_ADDRESS=RAW, got {s:?}"))?;
    let key = PublicKey::from_address(addr).map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let raw = parse_raw(raw).map_err(|e| format!("bad raw amount {raw:?}: {e}"))?;
    Ok((key, raw))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let cfg = DevnetConfig {
        rpc_addr: args.rpc,
        ws_addr: args.ws,
        confirm: if args.never_confirm {
            Confirm::Never
        } else {
            Confirm::AfterMs(args.confirm_after_ms)
        },
        fund: args.fund,
        state_file: args.state,
    };
    let devnet = Devnet::start(cfg).await.context("starting the devnet")?;
    println!("RPC {}  WebSocket {}", devnet.rpc_url(), devnet.ws_url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("stopping");
    devnet.shutdown().await;
    Ok(())
}
