//! The sidecar's verify throughput: `Engine::verify_only` (everything `/v1/pay` checks before
//! broadcasting: structure, expiry, MAC, nonce registry, destination, signature, work, spent
//! set, fork set and `account_info` over RPC) against the devnet process, in this process,
//! with many concurrent verifications. Nothing is consumed, so the same payments repeat.

use crate::paid::{chain, payer_key, PRICE};
use crate::stack::{DevnetProc, CHALLENGE_SECRET, FILTER_SECRET, NETWORK};
use crate::stats::{percentile, LatencyRun};
use anyhow::{anyhow, Context, Result};
use nanogate_protocol::contract::{Mechanism, Offer, Payee};
use nanogate_protocol::nano::PublicKey;
use nanogate_protocol::x402::PaymentRequirements;
use nanogate_sidecar::config::Config;
use nanogate_sidecar::engine::{BindingPolicy, PaymentInput};
use nanogate_sidecar::keys::ChallengeKeys;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RESOURCE: &str = "http://bench.local/paid/verify";
/// Payers 1000.. are funded for this case only.
pub const FIRST_PAYER: usize = 1000;

fn requirements(pay_to: PublicKey) -> PaymentRequirements {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let keys = ChallengeKeys::new(CHALLENGE_SECRET.as_bytes().to_vec(), 300);
    let k = keys.current(now);
    let payee = Payee::from_key(pay_to);
    let offer = Offer {
        network: NETWORK,
        pay_to: &payee,
        amount: PRICE,
        max_timeout_seconds: 120,
        resource: RESOURCE,
        mechanism: Mechanism::SignedBlock,
    };
    offer.issue(&k.key, &offer.stamp(now, rand::random(), k.key_id))
}

pub async fn run(
    devnet: &DevnetProc,
    work: &Path,
    payers: usize,
    concurrency: usize,
    duration: Duration,
    pay_to: PublicKey,
) -> Result<LatencyRun> {
    let db = work.join("verify.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let mut cfg = Config {
        network: NETWORK.into(),
        node_network: "dev".into(),
        filter_secret: Some(FILTER_SECRET.into()),
        challenge_secret: Some(CHALLENGE_SECRET.into()),
        ..Config::default()
    };
    cfg.nodes.rpc = vec![devnet.rpc_url.clone()];
    cfg.nodes.ws = vec![devnet.ws_url.clone()];
    cfg.store.database_url = format!("sqlite://{}", db.display());
    // The case re-verifies the same payments thousands of times to measure the checks; the
    // per-frontier presentation limit (a defence against exactly that) would refuse all but
    // a few. Rate 0 turns it off; the limiter is still consulted on every verification.
    cfg.limits.payer_presentations_per_sec = 0;
    let state = nanogate_sidecar::server::open_state(&cfg)
        .await
        .map_err(|e| anyhow!("sidecar state: {e}"))?;
    let engine = state.engine.clone();

    let mut inputs = Vec::with_capacity(payers);
    for i in 0..payers {
        let key = payer_key(FIRST_PAYER + i);
        let block = chain(&devnet.rpc_url, &key, pay_to, 1)
            .await?
            .pop()
            .context("one block")?;
        let req = requirements(pay_to);
        inputs.push(PaymentInput {
            resource: RESOURCE.into(),
            payment: json!({
                "x402Version": 2,
                "resource": {"url": RESOURCE},
                "accepted": req,
                "payload": {"block": block.to_json()},
                "extensions": {},
            }),
            requirements: req,
            binding: BindingPolicy::Required,
            work: Default::default(),
        });
    }
    // One check before timing: a payment that does not verify would measure a rejection path.
    if let Some(first) = inputs.first() {
        engine
            .verify_only(first)
            .await
            .map_err(|v| anyhow!("verify_only refused the benchmark payment: {v:?}"))?;
    }
    let inputs = Arc::new(inputs);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for t in 0..concurrency.max(1) {
        let engine = engine.clone();
        let inputs = inputs.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failures = 0u64;
            let mut first = None;
            let mut i = t;
            // Bounded by time and by count (no run can spin forever).
            while Instant::now() < deadline && lat.len() < 1_000_000 {
                let input = &inputs[i % inputs.len()];
                i += 1;
                let s = Instant::now();
                match engine.verify_only(input).await {
                    Ok(_) => lat.push(s.elapsed()),
                    Err(v) => {
                        failures += 1;
                        first.get_or_insert_with(|| format!("{v:?}"));
                    }
                }
            }
            (lat, failures, first)
        }));
    }
    let mut lat = Vec::new();
    let mut failures = 0;
    let mut first_failure = None;
    for t in tasks {
        let (l, f, ff) = t.await.context("verify task")?;
        lat.extend(l);
        failures += f;
        if first_failure.is_none() {
            first_failure = ff;
        }
    }
    let elapsed = started.elapsed();
    lat.sort();
    drop(state);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok(LatencyRun {
        ok: lat.len() as u64,
        failures,
        first_failure,
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
    })
}
