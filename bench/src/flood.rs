//! What a flood of unpaid and junk traffic costs an honest payer: the paid case with one
//! payer, timed once quiet and once while other loopback addresses (127.0.0.2–9, so the
//! sidecar's per-source limit sees them apart from the payer on 127.0.0.1) request paid
//! routes without paying and present junk payments under fresh challenges: a wrong-amount
//! block (valid work and signature), a bad signature, bad work.

use crate::paid::{self, PAID_PATH, PRICE};
use anyhow::{anyhow, Result};
use nanogate_protocol::nano::{PrivateKey, PublicKey, StateBlock};
use nanogate_protocol::x402::{decode_header, encode_header, headers, PaymentRequired};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The account the junk comes from (funded with the others).
pub const ATTACKER: usize = 900;
/// Flood clients, spread over 8 loopback addresses.
pub const WORKERS: usize = 16;

/// What the flood sent and got.
#[derive(Debug, Clone, Default)]
pub struct FloodStats {
    pub requests: u64,
    pub rps: f64,
    /// Answers: 402, 429, 503, 200, anything else.
    pub statuses: [u64; 5],
}

/// Three junk payments from `key`'s current head: wrong amount, bad signature, bad work.
pub async fn junk(rpc: &str, key: &PrivateKey, to: PublicKey) -> Result<Vec<StateBlock>> {
    let good = paid::chain(rpc, key, to, 1)
        .await?
        .pop()
        .ok_or_else(|| anyhow!("no block"))?;
    let mut wrong_amount = good.clone();
    wrong_amount.balance -= PRICE;
    wrong_amount.sign(key);
    let mut bad_signature = good.clone();
    bad_signature.signature.0[0] ^= 1;
    let mut bad_work = good;
    bad_work.work = 0;
    Ok(vec![wrong_amount, bad_signature, bad_work])
}

fn payment_header(pr: &PaymentRequired, block: &StateBlock) -> Result<String> {
    let offer = pr
        .accepts
        .first()
        .ok_or_else(|| anyhow!("402 with no offer"))?;
    Ok(encode_header(&json!({
        "x402Version": 2,
        "resource": pr.resource,
        "accepted": offer,
        "payload": {"block": block.to_json()},
        "extensions": {},
    })))
}

fn slot(status: u16) -> usize {
    match status {
        402 => 0,
        429 => 1,
        503 => 2,
        200 => 3,
        _ => 4,
    }
}

/// Floods `base` until `stop` is set: each round an unpaid request (its 402 is the challenge)
/// and a junk payment presented under it.
pub async fn run(
    base: &str,
    junk: Arc<Vec<StateBlock>>,
    stop: Arc<AtomicBool>,
) -> Result<FloodStats> {
    let url = Arc::new(format!("{base}{PAID_PATH}"));
    let counts: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (url, junk, stop, counts) = (url.clone(), junk.clone(), stop.clone(), counts.clone());
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (w % 8) as u8));
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .local_address(from)
                .timeout(Duration::from_secs(30))
                .build()?;
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let r = client.get(url.as_str()).send().await?;
                let status = r.status().as_u16();
                counts[slot(status)].fetch_add(1, Ordering::Relaxed);
                let pr = r
                    .headers()
                    .get(headers::PAYMENT_REQUIRED)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|h| decode_header::<PaymentRequired>(h, 64 * 1024).ok());
                let _ = r.bytes().await;
                let Some(pr) = pr else {
                    continue;
                };
                let h = payment_header(&pr, &junk[i % junk.len()])?;
                i += 1;
                let r = client
                    .get(url.as_str())
                    .header(headers::PAYMENT_SIGNATURE, h)
                    .send()
                    .await?;
                counts[slot(r.status().as_u16())].fetch_add(1, Ordering::Relaxed);
                let _ = r.bytes().await;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let statuses: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let requests = statuses.iter().sum();
    Ok(FloodStats {
        requests,
        rps: requests as f64 / started.elapsed().as_secs_f64(),
        statuses: [
            statuses[0],
            statuses[1],
            statuses[2],
            statuses[3],
            statuses[4],
        ],
    })
}
