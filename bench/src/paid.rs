//! Paid signed-block requests end to end (Envoy + filter + sidecar + devnet), driven by a small
//! async client that sends pre-built `PAYMENT-SIGNATURE` headers and times each request itself.
//!
//! Before the timed phase: every payer's chain of sends is built and signed (dev work), and one
//! fresh 402 challenge per payment is fetched from Envoy, so the timed phase sends only paid
//! requests. Each worker owns one payer (a payer's sends are sequential on its frontier).

use crate::stack::rpc_call;
use crate::stats::{percentile, LatencyRun};
use anyhow::{anyhow, bail, Context, Result};
use nanogate_protocol::nano::work::generate;
use nanogate_protocol::nano::{BlockHash, Network, PrivateKey, PublicKey, Signature, StateBlock};
use nanogate_protocol::x402::{
    decode_header, encode_header, headers, PaymentRequired, MAX_HEADER_BYTES,
};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const XNO: u128 = 1_000_000_000_000_000_000_000_000_000_000;
/// The demo's `/paid/` price (0.001 XNO).
pub const PRICE: u128 = XNO / 1000;
pub const PAID_PATH: &str = "/paid/bench";

pub fn payer_key(i: usize) -> PrivateKey {
    PrivateKey::from_seed(&[0x5a; 32], i as u32)
}

pub fn payee_key() -> PrivateKey {
    PrivateKey::from_seed(&[0xa5; 32], 0)
}

struct Head {
    frontier: BlockHash,
    balance: u128,
    representative: PublicKey,
}

async fn head(rpc: &str, account: &PublicKey) -> Result<Head> {
    let v = rpc_call(
        rpc,
        json!({"action": "account_info", "account": account.to_address(), "representative": "true"}),
    )
    .await?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .ok_or_else(|| anyhow!("account_info without {k}: {v}"))
    };
    Ok(Head {
        frontier: BlockHash::from_hex(field("frontier")?).map_err(|e| anyhow!("{e}"))?,
        balance: field("balance")?.parse()?,
        representative: PublicKey::from_address(field("representative")?)
            .map_err(|e| anyhow!("{e}"))?,
    })
}

/// `n` consecutive sends of [`PRICE`] from `key` to `to`, starting at its current head.
pub async fn chain(
    rpc: &str,
    key: &PrivateKey,
    to: PublicKey,
    n: usize,
) -> Result<Vec<StateBlock>> {
    let h = head(rpc, &key.public_key()).await?;
    let threshold = Network::Dev.thresholds().send();
    let mut previous = h.frontier;
    let mut balance = h.balance;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        balance = balance
            .checked_sub(PRICE)
            .ok_or_else(|| anyhow!("payer underfunded"))?;
        let mut b = StateBlock {
            account: key.public_key(),
            previous,
            representative: h.representative,
            balance,
            link: to.0,
            signature: Signature([0; 64]),
            work: 0,
        };
        b.work = generate(&b.root(), threshold);
        b.sign(key);
        previous = b.hash();
        out.push(b);
    }
    Ok(out)
}

/// Fetches one 402 challenge per block from Envoy and builds the `PAYMENT-SIGNATURE` values.
pub async fn headers_for(base: &str, blocks: Vec<Vec<StateBlock>>) -> Result<Vec<Vec<String>>> {
    let client = reqwest::Client::new();
    let url = format!("{base}{PAID_PATH}");
    let mut tasks = Vec::new();
    for chain in blocks {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(chain.len());
            for block in chain {
                out.push(header_for(&client, &url, &block).await?);
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.context("challenge task")??);
    }
    Ok(all)
}

/// Fetches a fresh 402 challenge from `url` and builds the `PAYMENT-SIGNATURE` value paying it
/// with `block`.
async fn header_for(client: &reqwest::Client, url: &str, block: &StateBlock) -> Result<String> {
    let r = client.get(url).send().await?;
    if r.status().as_u16() != 402 {
        bail!("expected 402 from {url}, got {}", r.status());
    }
    let pr_header = r
        .headers()
        .get(headers::PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("402 without PAYMENT-REQUIRED"))?
        .to_string();
    let pr: PaymentRequired =
        decode_header(&pr_header, 64 * 1024).map_err(|e| anyhow!("PAYMENT-REQUIRED: {e}"))?;
    let offer = pr
        .accepts
        .first()
        .ok_or_else(|| anyhow!("402 with no offer"))?;
    if offer.amount != PRICE.to_string() {
        bail!("offer amount {} is not {PRICE}", offer.amount);
    }
    let payment = json!({
        "x402Version": 2,
        "resource": pr.resource,
        "accepted": offer,
        "payload": {"block": block.to_json()},
        "extensions": {},
    });
    let h = encode_header(&payment);
    if h.len() > MAX_HEADER_BYTES {
        bail!("payment header of {} bytes exceeds the cap", h.len());
    }
    Ok(h)
}

/// A paced paid load for as long as `duration`: each worker, every `interval`, fetches a fresh
/// challenge and pays it with its next block (challenges expire, so a long run cannot fetch
/// them all up front). Returns the paid requests admitted and the first failure.
pub async fn run_live(
    base: &str,
    chains: Vec<Vec<StateBlock>>,
    duration: Duration,
    interval: Duration,
) -> Result<(u64, Option<String>)> {
    let url = Arc::new(format!("{base}{PAID_PATH}"));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for chain in chains {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()?;
            let mut ok = 0u64;
            let mut tick = tokio::time::interval(interval);
            for block in chain {
                tick.tick().await;
                if Instant::now() >= deadline {
                    break;
                }
                let h = header_for(&client, &url, &block).await?;
                let r = client
                    .get(url.as_str())
                    .header(headers::PAYMENT_SIGNATURE, h)
                    .send()
                    .await?;
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                if status != 200 {
                    return Ok((ok, Some(format!("status {status}"))));
                }
                ok += 1;
            }
            Ok::<_, anyhow::Error>((ok, None))
        }));
    }
    let mut ok = 0;
    let mut failure = None;
    for t in tasks {
        let (n, f) = t.await.context("live paid worker")??;
        ok += n;
        failure = failure.or(f);
    }
    Ok((ok, failure))
}

/// Sends every worker's headers in order until `duration` ends; one request in flight per
/// worker. Latency is timed around each paid request only.
pub async fn run(base: &str, headers: Vec<Vec<String>>, duration: Duration) -> Result<LatencyRun> {
    let url = Arc::new(format!("{base}{PAID_PATH}"));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for chain in headers {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()?;
            let mut lat = Vec::with_capacity(chain.len());
            let mut failures = 0u64;
            let mut first_failure: Option<String> = None;
            for h in chain {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                let r = client
                    .get(url.as_str())
                    .header(headers::PAYMENT_SIGNATURE, h)
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let has_receipt = r.headers().contains_key(headers::PAYMENT_RESPONSE);
                        let body = r.bytes().await.unwrap_or_default();
                        if status == 200 && has_receipt {
                            Ok(())
                        } else {
                            Err(format!(
                                "status {status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            ))
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        failures += 1;
                        first_failure.get_or_insert(e);
                        // The payer's next block builds on this one: stop this worker.
                        break;
                    }
                }
            }
            Ok::<_, anyhow::Error>((lat, failures, first_failure))
        }));
    }
    let mut lat = Vec::new();
    let mut failures = 0;
    let mut first_failure = None;
    for t in tasks {
        let (l, f, ff) = t.await.context("paid worker")??;
        lat.extend(l);
        failures += f;
        if first_failure.is_none() {
            first_failure = ff;
        }
    }
    let elapsed = started.elapsed();
    lat.sort();
    Ok(LatencyRun {
        ok: lat.len() as u64,
        failures,
        first_failure,
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
    })
}

/// Same client, same concurrency, on the free route: the latency a request has anyway.
pub async fn run_free(
    base: &str,
    workers: usize,
    duration: Duration,
    max_per_worker: usize,
) -> Result<LatencyRun> {
    let url = Arc::new(format!("{base}/paid/free"));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()?;
            let mut lat = Vec::new();
            let mut failures = 0u64;
            for _ in 0..max_per_worker {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match client.get(url.as_str()).send().await {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => failures += 1,
                }
            }
            Ok::<_, anyhow::Error>((lat, failures))
        }));
    }
    let mut lat = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await.context("free worker")??;
        lat.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    lat.sort();
    Ok(LatencyRun {
        ok: lat.len() as u64,
        failures,
        first_failure: None,
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
    })
}
