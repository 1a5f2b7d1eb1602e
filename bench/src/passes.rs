//! Prepaid passes under load (docs/passes.md): requests on a pass against the free route
//! through the same filter and Envoy, and the overspend of one counted pass used through two
//! Envoys at once.
//!
//! The bench bootstrap (`wasm-filter.yaml`) sells three passes on `/passes/`: `hour` (time),
//! `many` (10⁹ requests: counted, never exhausted here) and `bound` ([`BOUND_GRANT`] requests,
//! exhausted on purpose). Each is bought once with a signed block, as a payer would.

use crate::paid::{self, PRICE};
use crate::stack::{self, EnvoyCase};
use crate::wrk::{self, WrkResult};
use crate::Plan;
use anyhow::{anyhow, bail, Context, Result};
use nanogate_protocol::contract::pass::{PassIssued, EXTENSION_PASS, HEADER};
use nanogate_protocol::nano::{PublicKey, StateBlock};
use nanogate_protocol::x402::{decode_header, encode_header, headers};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The `bound` pass's grant in `wasm-filter.yaml`.
pub const BOUND_GRANT: u64 = 20_000;
/// The filter's `passReportSecs` in `wasm-filter.yaml` (the shipped default).
pub const REPORT_SECS: u64 = 1;
const PATH: &str = "/passes/bench";
const FREE_PATH: &str = "/paid/free";

/// One wrk case: its result and Envoy's CPU per request (µs).
#[derive(Debug, Clone)]
pub struct Measured {
    pub r: WrkResult,
    pub cpu_us: Option<f64>,
}

/// One counted pass used through two Envoys (one worker VM each) until it is refused.
#[derive(Debug, Clone)]
pub struct Overspend {
    pub granted: u64,
    /// Requests answered 200 on the pass, both Envoys.
    pub served: u64,
    /// Every request sent on it (served and refused), both Envoys.
    pub sent: u64,
    pub secs: u64,
    /// Requests per second on the pass over both proxies.
    pub rate: f64,
}

impl Overspend {
    pub fn over(&self) -> u64 {
        self.served.saturating_sub(self.granted)
    }

    /// The documented bound (docs/passes.md): `passReportSecs` × the pass's request rate over
    /// every VM, and never more than `(VMs − 1) × requests`.
    pub fn bound(&self) -> u64 {
        let by_rate = (REPORT_SECS as f64 * self.rate).ceil() as u64;
        by_rate.min(self.granted) // (2 VMs − 1) × the grant
    }
}

pub struct PassesResult {
    pub free: Measured,
    pub time_pass: Measured,
    pub counted_pass: Measured,
    pub overspend: Overspend,
}

/// Buys pass `name` at `base` + [`PATH`] with `block` (which must send [`PRICE`]).
async fn buy(base: &str, name: &str, block: &StateBlock) -> Result<PassIssued> {
    let client = reqwest::Client::new();
    let url = format!("{base}{PATH}");
    let r = client.get(&url).send().await?;
    if r.status().as_u16() != 402 {
        bail!("expected 402 from {url}, got {}", r.status());
    }
    let required = r
        .headers()
        .get(headers::PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("402 without PAYMENT-REQUIRED"))?;
    let required: Value =
        decode_header(required, 64 * 1024).map_err(|e| anyhow!("PAYMENT-REQUIRED: {e}"))?;
    let offer = required["accepts"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["extra"]["pass"]["name"] == json!(name)))
        .cloned()
        .ok_or_else(|| anyhow!("no pass `{name}` offered at {url}"))?;
    if offer["amount"] != json!(PRICE.to_string()) {
        bail!("pass `{name}` costs {}, not {PRICE}", offer["amount"]);
    }
    let payment = json!({
        "x402Version": 2,
        "resource": required["resource"],
        "accepted": offer,
        "payload": {"block": block.to_json()},
        "extensions": {},
    });
    let paid = client
        .get(&url)
        .header(headers::PAYMENT_SIGNATURE, encode_header(&payment))
        .send()
        .await?;
    if paid.status().as_u16() != 200 {
        bail!(
            "buying pass `{name}`: {} {}",
            paid.status(),
            paid.text().await.unwrap_or_default()
        );
    }
    let settlement: Value = paid
        .headers()
        .get(headers::PAYMENT_RESPONSE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| decode_header(v, 64 * 1024).ok())
        .ok_or_else(|| anyhow!("pass `{name}` bought without PAYMENT-RESPONSE"))?;
    PassIssued::from_value(&settlement["extensions"][EXTENSION_PASS])
        .ok_or_else(|| anyhow!("no pass in PAYMENT-RESPONSE: {settlement}"))
}

fn header(pass: &PassIssued) -> String {
    format!("{HEADER}: {}", pass.token)
}

/// wrk against `url` (warm-up, then the timed run), with Envoy's CPU per request.
fn measure(
    plan: &Plan,
    url: &str,
    header: Option<&str>,
    envoy_pid: Option<u32>,
) -> Result<Measured> {
    wrk::run_with(url, plan.connections, plan.warm_secs, header)?;
    let before = envoy_pid.and_then(stack::cpu_secs);
    let r = wrk::run_with(url, plan.connections, plan.wrk_secs, header)?;
    let after = envoy_pid.and_then(stack::cpu_secs);
    let cpu_us = match (before, after) {
        (Some(b), Some(a)) if r.requests > 0 => Some((a - b) / r.requests as f64 * 1e6),
        _ => None,
    };
    if r.non_2xx > 0 || r.errors > 0 {
        bail!(
            "{url}: {} refusals and {} socket errors in {} requests (a pass must be served)",
            r.non_2xx,
            r.errors,
            r.requests
        );
    }
    Ok(Measured { r, cpu_us })
}

/// Both parts of the passes case against one sidecar (instant ledger).
pub async fn run(
    plan: &Plan,
    rpc: &str,
    sidecar_port: u16,
    upstream_port: u16,
    wasm: &Path,
    pay_to: PublicKey,
    pay_to_addr: &str,
) -> Result<PassesResult> {
    let config = || {
        stack::envoy_config(
            EnvoyCase::Filter,
            upstream_port,
            sidecar_port,
            wasm,
            pay_to_addr,
            None,
        )
    };
    let (yaml, ports) = config()?;
    let envoy = stack::start_envoy(&yaml, ports.admin).await;
    let base = format!("http://127.0.0.1:{}", ports.listener);
    stack::wait_status(&format!("{base}{PATH}"), 402, Duration::from_secs(20)).await?;
    let blocks = paid::chain(rpc, &paid::payer_key(0), pay_to, 3).await?;
    let hour = buy(&base, "hour", &blocks[0]).await?;
    let many = buy(&base, "many", &blocks[1]).await?;

    // Rounds in alternating order, the best of each case kept (as the Envoy cases do).
    let envoy_pid = stack::pid_with_arg(&envoy.dir().join("envoy.yaml").display().to_string());
    let cases = [
        (FREE_PATH, None),
        (PATH, Some(header(&hour))),
        (PATH, Some(header(&many))),
    ];
    let mut best: Vec<Option<Measured>> = vec![None; cases.len()];
    for round in 0..plan.envoy_rounds {
        let mut order: Vec<usize> = (0..cases.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (path, h) = cases[i].clone();
            let url = format!("{base}{path}");
            let p = plan.clone();
            eprintln!("nanogate-bench: passes: wrk {path} (pass: {})", h.is_some());
            let m = tokio::task::spawn_blocking(move || measure(&p, &url, h.as_deref(), envoy_pid))
                .await??;
            if best[i].as_ref().is_none_or(|b| m.r.rps > b.r.rps) {
                best[i] = Some(m);
            }
        }
    }
    let mut best = best.into_iter().flatten();
    let (Some(free), Some(time_pass), Some(counted_pass)) = (best.next(), best.next(), best.next())
    else {
        bail!("a passes case produced no result");
    };

    // The overspend: a second Envoy on the same sidecar, one pass, both proxies at full load.
    let (yaml_b, ports_b) = config()?;
    let envoy_b = stack::start_envoy(&yaml_b, ports_b.admin).await;
    let base_b = format!("http://127.0.0.1:{}", ports_b.listener);
    stack::wait_status(&format!("{base_b}{PATH}"), 402, Duration::from_secs(20)).await?;
    let bound = buy(&base, "bound", &blocks[2]).await?;
    let secs = plan.wrk_secs + 2;
    let conns = (plan.connections / 2).max(1);
    eprintln!(
        "nanogate-bench: passes: one pass of {BOUND_GRANT} requests through two Envoys, {secs} s"
    );
    let runs: Vec<_> = [base.clone(), base_b.clone()]
        .into_iter()
        .map(|b| {
            let h = header(&bound);
            tokio::task::spawn_blocking(move || {
                wrk::run_with(&format!("{b}{PATH}"), conns, secs, Some(&h))
            })
        })
        .collect();
    let mut served = 0;
    let mut sent = 0;
    for run in runs {
        let r = run.await.context("wrk task")??;
        if r.errors > 0 {
            bail!("overspend run: {} socket errors", r.errors);
        }
        served += r.requests - r.non_2xx;
        sent += r.requests;
    }
    drop(envoy_b);
    drop(envoy);
    if served < BOUND_GRANT {
        bail!("the pass was not spent: {served} of {BOUND_GRANT} requests served in {secs} s");
    }
    let overspend = Overspend {
        granted: BOUND_GRANT,
        served,
        sent,
        secs,
        rate: sent as f64 / secs as f64,
    };
    Ok(PassesResult {
        free,
        time_pass,
        counted_pass,
        overspend,
    })
}
