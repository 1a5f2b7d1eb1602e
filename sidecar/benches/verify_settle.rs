//! Verify throughput and settle latency of the sidecar against an in-process devnet.
//!
//! `cargo bench -p nanogate-sidecar --bench verify_settle` runs the full measurement (`cargo
//! xtask bench` measures verify throughput in its own driver, `bench/`, alongside the Envoy
//! cases); under `cargo test --benches` it runs a small smoke pass. It
//! prints its numbers and asserts nothing about time (shared CI machines are noisy).
//!
//! No criterion: a plain `harness = false` binary keeps the shared 2-core build lean, and what
//! we measure is dominated by RPC round trips to the devnet, so criterion's statistics on
//! nanosecond-scale closures would add little. Knobs: `NANOGATE_BENCH_VERIFY_OPS`,
//! `NANOGATE_BENCH_CONCURRENCY`, `NANOGATE_BENCH_SETTLES`.
//!
//! - verify: `Engine::verify_only` (structure, expiry, MAC, nonce registry read, destination,
//!   signature, work, spent set, fork set, `account_info` over HTTP to the devnet), many
//!   concurrent tasks, reported in verifications per second.
//! - settle: `POST /v1/pay` over HTTP, one payment at a time, with the devnet confirming
//!   immediately (0 ms), so the latency is the sidecar's own cost plus `process`, the
//!   WebSocket push and the store's durable commits; reported as p50/p90/p99.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use nanogate_devnet::Confirm;
use nanogate_protocol::nano::{BlockHash, PrivateKey, StateBlock};
use nanogate_sidecar::engine::{BindingPolicy, PaymentInput};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `n` consecutive sends of PRICE from `payer` starting at its head, built ahead of time.
fn chain(
    payer: &PrivateKey,
    mut previous: BlockHash,
    mut balance: u128,
    n: usize,
) -> Vec<StateBlock> {
    (0..n)
        .map(|_| {
            balance -= PRICE;
            let b = send_block(payer, previous, balance, payee());
            previous = b.hash();
            b
        })
        .collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let verify_ops = env_usize("NANOGATE_BENCH_VERIFY_OPS", if full { 20_000 } else { 200 });
    let concurrency = env_usize("NANOGATE_BENCH_CONCURRENCY", 64);
    let settles = env_usize("NANOGATE_BENCH_SETTLES", if full { 300 } else { 10 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(verify_ops, concurrency, settles));
}

async fn run(verify_ops: usize, concurrency: usize, settles: usize) {
    let payers: Vec<PrivateKey> = (0..concurrency.clamp(1, 200) as u8)
        .map(|i| key(i.wrapping_add(1)))
        .collect();
    let refs: Vec<&PrivateKey> = payers.iter().collect();
    let devnet = devnet(&refs, Confirm::AfterMs(0)).await;
    let db = Db::sqlite();
    let cfg = devnet_config(&devnet, &db);
    let sidecar = Sidecar::start(&cfg).await;
    let engine = sidecar.state.engine.clone();

    // --- verify throughput ---
    let inputs: Arc<Vec<PaymentInput>> = Arc::new(
        payers
            .iter()
            .map(|p| {
                let req = challenge();
                let block = good_block(&devnet, p, PRICE, payee());
                PaymentInput {
                    resource: RESOURCE.into(),
                    payment: payment(&req, &block),
                    requirements: req,
                    binding: BindingPolicy::Required,
                    work: Default::default(),
                }
            })
            .collect(),
    );
    let started = Instant::now();
    let per_task = verify_ops.div_ceil(concurrency.max(1));
    let mut tasks = Vec::new();
    for t in 0..concurrency.max(1) {
        let engine = engine.clone();
        let inputs = inputs.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for i in 0..per_task {
                let input = &inputs[(t + i) % inputs.len()];
                if engine.verify_only(input).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    let elapsed = started.elapsed();
    let total = per_task * concurrency.max(1);
    println!(
        "verify: {total} verifications ({ok} valid) in {elapsed:.2?} with {concurrency} tasks: {:.0} verifications/s",
        total as f64 / elapsed.as_secs_f64()
    );

    // --- settle latency (devnet confirms at once) ---
    let payer = &payers[0];
    let (frontier, balance) = head(&devnet, payer);
    let blocks = chain(payer, frontier, balance, settles);
    let mut lat = Vec::with_capacity(settles);
    let mut admitted = 0;
    for block in &blocks {
        let req = challenge();
        let p = payment(&req, block);
        let t = Instant::now();
        let v = sidecar.pay(&req, &p).await;
        lat.push(t.elapsed());
        if verdict(&v) == "admit" {
            admitted += 1;
        } else {
            println!("settle: unexpected verdict {v}");
        }
    }
    lat.sort();
    let m = engine.metrics();
    let conf_mean = m.encode();
    let conf = conf_mean
        .lines()
        .filter(|l| {
            l.starts_with("nanogate_confirmation_seconds_sum")
                || l.starts_with("nanogate_confirmation_seconds_count")
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "settle: {admitted}/{settles} admitted over HTTP /v1/pay; latency p50 {:.2?}, p90 {:.2?}, p99 {:.2?}, max {:.2?} \
         (devnet confirmation delay 0 ms; confirmation wait inside: {conf})",
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
    );
    sidecar.stop().await;
    devnet.shutdown().await;
    db.cleanup().await;
}
