//! Envoy's CPU per paid request against a free one, measured alike (`--only paidcpu`): one
//! client on one connection (`wrk -c1`), the filter Envoy alone on its core's share, in front of
//! this process's upstream and a stand-in sidecar that answers at once (a key, an admission for
//! any payment, outcomes recorded), so that only Envoy's side of a paid request is measured:
//! the client's exchange, the `/v1/pay` callout, the upstream's exchange and the outcome report.
//! The same payment header (a challenge of this filter answered with the conformance
//! vectors' signed send) is replayed on every request; the stand-in admits it each time.

use crate::stack::{self, EnvoyCase, Upstream};
use crate::wrk::{self, WrkResult};
use crate::Plan;
use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanogate_protocol::contract::{headers, paths, VerdictBody};
use nanogate_protocol::x402::{
    decode_header, encode_header, headers as x402_headers, PaymentRequired,
};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Envoy CPU per request (µs) of each case, the least disturbed of the rounds.
#[derive(Debug, Clone, Default)]
pub struct PaidCpuRow {
    pub paid_us: f64,
    pub free_us: f64,
    pub paid_rps: f64,
    pub free_rps: f64,
    /// Outcomes the stand-in received per paid request, and the calls that carried them.
    pub outcomes_per_paid: f64,
    pub outcome_calls_per_paid: f64,
    /// The floor module making one `/v1/pay`-sized callout per request, then proxying: what
    /// any filter that asks a service once per request costs Envoy.
    pub floor_call_us: f64,
    /// Bytes of our `/v1/pay` body (the floor sends as many).
    pub pay_bytes: u64,
}

#[derive(Default)]
struct Seen {
    pay_bytes: AtomicU64,
    outcomes: AtomicU64,
    outcome_calls: AtomicU64,
}

/// The stand-in sidecar: answers every filter endpoint at once, after reading the body (an
/// answer before the body makes Envoy close the connection, and every call would then open
/// one).
async fn stand_in(seen: Arc<Seen>, uri: Uri, body: Bytes) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match uri.path() {
        paths::CHALLENGE_KEY => Json(json!({
            "keyId": 42, "key": "ab".repeat(32), "notAfter": now + 3600
        }))
        .into_response(),
        paths::PAY => {
            seen.pay_bytes.store(body.len() as u64, Ordering::Relaxed);
            let v = VerdictBody::admit(
                "r-bench".into(),
                "CD".repeat(32),
                "nano_payer".into(),
                encode_header(&json!({"success": true, "transaction": "CD".repeat(32),
                                      "network": stack::NETWORK, "payer": "nano_payer"})),
                false,
                Some("ef".repeat(32)),
            );
            let mut r = Json(v).into_response();
            r.headers_mut().insert(
                HeaderName::from_static(headers::VERDICT),
                HeaderValue::from_static(headers::VERDICT_MARKER),
            );
            r
        }
        p => {
            // An outcome report, alone or batched: count the outcomes it carries.
            let n = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .map_or(0, |v| match v.get("outcomes") {
                    Some(list) => list.as_array().map_or(0, Vec::len) as u64,
                    None => u64::from(v.get("receipt").is_some()),
                });
            if p == paths::OUTCOME || p == paths::OUTCOMES {
                seen.outcomes.fetch_add(n, Ordering::Relaxed);
                seen.outcome_calls.fetch_add(1, Ordering::Relaxed);
            }
            Json(json!({"ok": true, "recorded": n > 0})).into_response()
        }
    }
}

/// A PAYMENT-SIGNATURE value answering `url`'s 402 with the vectors' signed send.
async fn payment_for(url: &str) -> Result<String> {
    let r = reqwest::get(url).await.context("GET for the 402")?;
    if r.status().as_u16() != 402 {
        bail!("{url} answered {} instead of 402", r.status());
    }
    let header = r
        .headers()
        .get(x402_headers::PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok())
        .context("the 402's payment header")?
        .to_owned();
    let pr: PaymentRequired =
        decode_header(&header, 64 * 1024).map_err(|e| anyhow::anyhow!("402 header: {e:?}"))?;
    let mut payment =
        nanogate_tests::vectors("x402-vectors.json")["payment_payload_v2"]["object"].clone();
    payment["accepted"] = serde_json::to_value(&pr.accepts[0])?;
    payment["resource"] = serde_json::to_value(&pr.resource)?;
    Ok(encode_header(&payment))
}

/// One wrk run of `secs` after a warm-up: Envoy CPU per request (µs), and the outcomes (and
/// calls carrying them) the stand-in received during the run.
async fn one_case(
    url: &str,
    header: Option<String>,
    envoy_pid: u32,
    (warm, secs): (u64, u64),
    seen: &Arc<Seen>,
) -> Result<(WrkResult, f64, f64, f64)> {
    let (url2, seen2) = (url.to_owned(), Arc::clone(seen));
    let (r, cpu, before) = tokio::task::spawn_blocking(move || {
        wrk::run_with(&url2, 1, warm, header.as_deref())?;
        // The warm-up's last outcomes land first (the filter flushes on its 1 s tick).
        std::thread::sleep(Duration::from_millis(1500));
        let seen_before = (
            seen2.outcomes.load(Ordering::Relaxed),
            seen2.outcome_calls.load(Ordering::Relaxed),
        );
        let before = stack::cpu_secs(envoy_pid).context("Envoy CPU")?;
        let r = wrk::run_with(&url2, 1, secs, header.as_deref())?;
        let after = stack::cpu_secs(envoy_pid).context("Envoy CPU")?;
        let cpu = (after - before) / r.requests.max(1) as f64 * 1e6;
        Ok::<(WrkResult, f64, (u64, u64)), anyhow::Error>((r, cpu, seen_before))
    })
    .await??;
    if r.non_2xx > 0 || r.errors > 0 || r.requests == 0 {
        bail!(
            "{url}: {} non-2xx and {} socket errors in {} requests",
            r.non_2xx,
            r.errors,
            r.requests
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = r.requests as f64;
    let outcomes = (seen.outcomes.load(Ordering::Relaxed) - before.0) as f64 / n;
    let calls = (seen.outcome_calls.load(Ordering::Relaxed) - before.1) as f64 / n;
    Ok((r, cpu, outcomes, calls))
}

pub async fn measure(
    plan: &Plan,
    upstream: &Upstream,
    wasm: &std::path::Path,
    pay_to_addr: &str,
) -> Result<PaidCpuRow> {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sidecar_port = listener.local_addr()?.port();
    let app = {
        let seen = Arc::clone(&seen);
        axum::Router::new()
            .fallback(move |uri: Uri, body: Bytes| stand_in(Arc::clone(&seen), uri, body))
    };
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (yaml, ports) = stack::envoy_config(
        EnvoyCase::Filter,
        upstream.port,
        sidecar_port,
        wasm,
        pay_to_addr,
        None,
    )?;
    let envoy = stack::start_envoy(&yaml, ports.admin).await;
    let base = format!("http://127.0.0.1:{}", ports.listener);
    let paid_url = format!("{base}{}", crate::paid::PAID_PATH);
    let free_url = format!("{base}/paid/free");
    stack::wait_status(&paid_url, 402, Duration::from_secs(20)).await?;
    let envoy_pid = stack::pid_with_arg(&envoy.dir().join("envoy.yaml").display().to_string())
        .context("Envoy's pid")?;
    // One paid request tells the size of our `/v1/pay` body, which the floor then sends.
    let header = payment_for(&paid_url).await?;
    let r = reqwest::Client::new()
        .get(&paid_url)
        .header(x402_headers::PAYMENT_SIGNATURE, &header)
        .send()
        .await?;
    if r.status().as_u16() != 200 {
        bail!(
            "a paid request through the stand-in answered {}",
            r.status()
        );
    }
    let pay_bytes = seen.pay_bytes.load(Ordering::Relaxed);
    let floor = stack::Floor {
        wasm: stack::floor_wasm()?,
        // The headers our filter's `/v1/pay` carries (`sidecar::Call::new`).
        reply: format!(
            "call nanogate_sidecar {pay_bytes}\n:method: POST\n:path: {}\n:authority: \
             nanogate-sidecar\n:scheme: http\n{}: {}\ncontent-type: application/json",
            paths::PAY,
            headers::SECRET,
            stack::FILTER_SECRET
        ),
    };
    let (floor_yaml, floor_ports) = stack::envoy_config(
        EnvoyCase::FloorReply,
        upstream.port,
        sidecar_port,
        wasm,
        pay_to_addr,
        Some(&floor),
    )?;
    let floor_envoy = stack::start_envoy(&floor_yaml, floor_ports.admin).await;
    let floor_url = format!("http://127.0.0.1:{}/paid/free", floor_ports.listener);
    stack::wait_status(&floor_url, 200, Duration::from_secs(20)).await?;
    let floor_pid =
        stack::pid_with_arg(&floor_envoy.dir().join("envoy.yaml").display().to_string())
            .context("the floor Envoy's pid")?;
    let times = (plan.warm_secs, plan.wrk_secs);
    let mut row = PaidCpuRow {
        paid_us: f64::MAX,
        free_us: f64::MAX,
        floor_call_us: f64::MAX,
        pay_bytes,
        ..PaidCpuRow::default()
    };
    // Alternating order, the least CPU per request of each case kept: other load on the
    // shared machine then hurts one round, not the comparison.
    for round in 0..plan.envoy_rounds.max(2) {
        let mut cases = [0, 1, 2];
        if round % 2 == 1 {
            cases.reverse();
        }
        for case in cases {
            match case {
                0 => {
                    // A fresh challenge per round (each is valid for the route's 120 s).
                    let header = format!(
                        "{}: {}",
                        x402_headers::PAYMENT_SIGNATURE,
                        payment_for(&paid_url).await?
                    );
                    let (r, cpu, outcomes, calls) =
                        one_case(&paid_url, Some(header), envoy_pid, times, &seen).await?;
                    if cpu < row.paid_us {
                        row.paid_us = cpu;
                        row.paid_rps = r.rps;
                        row.outcomes_per_paid = outcomes;
                        row.outcome_calls_per_paid = calls;
                    }
                }
                1 => {
                    let (r, cpu, ..) = one_case(&free_url, None, envoy_pid, times, &seen).await?;
                    if cpu < row.free_us {
                        row.free_us = cpu;
                        row.free_rps = r.rps;
                    }
                }
                _ => {
                    let (_, cpu, ..) = one_case(&floor_url, None, floor_pid, times, &seen).await?;
                    row.floor_call_us = row.floor_call_us.min(cpu);
                }
            }
        }
    }
    drop(floor_envoy);
    drop(envoy);
    server.abort();
    Ok(row)
}
