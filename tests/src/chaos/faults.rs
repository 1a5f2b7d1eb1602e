//! The fault schedule of a chaos run: one fault at a time, drawn from a seeded RNG, each held
//! for a random while and then lifted, with quiet gaps between them.

use crate::stack::{signed_block, Stack, Wallet, PRICE_RAW};
use crate::upstream::Fault as UpstreamFault;
use nanogate_devnet::WsMode;
use nanogate_protocol::nano::PublicKey;
use rand::rngs::StdRng;
use rand::Rng;
use std::time::{Duration, Instant};

/// Every kind of fault the run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Every node RPC answer is delayed.
    DevnetLatency,
    /// Every WebSocket subscriber is cut off (they reconnect at once).
    WebSocketDrop,
    /// Subscribers are cut off and cannot reconnect for a while.
    WebSocketOutage,
    /// The ledger stops confirming, then resumes (everything pending confirms).
    StoppedConfirmation,
    /// A payer's next block loses to a competitor on the same frontier, paying our account or
    /// another one.
    Fork,
    /// A sidecar is SIGKILLed, stays down a moment and restarts on its store.
    SidecarKill,
    /// An Envoy is killed and started again (a fresh filter VM).
    EnvoyRestart,
    /// The upstream answers late.
    UpstreamSlow,
    /// The upstream closes connections without answering.
    UpstreamReset,
    /// The upstream answers 5xx.
    Upstream5xx,
}

pub const ALL: [Kind; 10] = [
    Kind::DevnetLatency,
    Kind::WebSocketDrop,
    Kind::WebSocketOutage,
    Kind::StoppedConfirmation,
    Kind::Fork,
    Kind::SidecarKill,
    Kind::EnvoyRestart,
    Kind::UpstreamSlow,
    Kind::UpstreamReset,
    Kind::Upstream5xx,
];

/// One injected fault, for the report.
#[derive(Debug, Clone)]
pub struct Injected {
    pub at: Duration,
    pub kind: Kind,
    pub detail: String,
}

/// What the injector needs besides the stack.
pub struct Context<'a> {
    /// The payers' accounts (forks build competitors on their frontiers).
    pub wallets: &'a [Wallet],
    /// Where a fork's competitor sends when it does not pay us.
    pub elsewhere: PublicKey,
    /// Envoy logs of instances that were restarted (their scratch directory goes with them).
    pub envoy_logs: &'a mut Vec<(String, String)>,
    /// Admissions counted by filters that were restarted (their counters go with them).
    pub admitted_before_restarts: &'a mut u64,
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo..hi))
}

/// Injects faults until `until`; returns what it did. An error means the stack could not be
/// brought back (a process did not restart).
pub async fn inject(
    stack: &mut Stack,
    rng: &mut StdRng,
    until: Instant,
    cx: &mut Context<'_>,
) -> Result<Vec<Injected>, String> {
    let start = Instant::now();
    let mut done = Vec::new();
    // Let the payers get going first.
    tokio::time::sleep(ms(rng, 1000, 3000)).await;
    while Instant::now() + Duration::from_secs(1) < until {
        let kind = ALL[rng.gen_range(0..ALL.len())];
        let at = start.elapsed();
        let hold = ms(rng, 1000, 6000).min(until.saturating_duration_since(Instant::now()));
        let detail = one(stack, rng, kind, hold, cx).await?;
        eprintln!("chaos: {:>6.1} s  {kind:?}: {detail}", at.as_secs_f64());
        done.push(Injected { at, kind, detail });
        let quiet = ms(rng, 500, 3000);
        tokio::time::sleep(quiet.min(until.saturating_duration_since(Instant::now()))).await;
    }
    Ok(done)
}

async fn one(
    stack: &mut Stack,
    rng: &mut StdRng,
    kind: Kind,
    hold: Duration,
    cx: &mut Context<'_>,
) -> Result<String, String> {
    let faults = stack.devnet.faults();
    let gate = rng.gen_range(0..stack.gates.len());
    Ok(match kind {
        Kind::DevnetLatency => {
            let d = ms(rng, 200, 2500);
            faults.set_latency(d);
            tokio::time::sleep(hold).await;
            faults.set_latency(Duration::ZERO);
            format!("{d:?} per RPC for {hold:?}")
        }
        Kind::WebSocketDrop => {
            faults.drop_websockets();
            "every subscriber cut off".into()
        }
        Kind::WebSocketOutage => {
            // Down: open sessions end and reconnects are refused until it is lifted.
            faults.set_ws(WsMode::Down);
            tokio::time::sleep(hold).await;
            faults.set_ws(WsMode::Normal);
            format!("cut off, reconnects refused for {hold:?}")
        }
        Kind::StoppedConfirmation => {
            faults.set_confirming(false);
            tokio::time::sleep(hold).await;
            faults.set_confirming(true);
            format!("no confirmations for {hold:?}")
        }
        Kind::Fork => {
            let w = &cx.wallets[rng.gen_range(0..cx.wallets.len())];
            let Some(a) = stack.ledger().account(&w.account()) else {
                return Ok("payer account not open: skipped".into());
            };
            let pays_us = rng.gen_bool(0.5);
            let to = if pays_us { stack.payee } else { cx.elsewhere };
            let competitor = signed_block(
                &w.key,
                a.frontier,
                a.representative,
                a.balance.saturating_sub(PRICE_RAW),
                to.0,
            );
            faults.fork_instead(a.frontier, competitor.clone());
            format!(
                "payer {} on {}: competitor {} pays {}",
                w.index,
                a.frontier,
                competitor.hash(),
                if pays_us { "our payee" } else { "elsewhere" }
            )
        }
        Kind::SidecarKill => {
            let g = &mut stack.gates[gate];
            g.sidecar.kill();
            let down = ms(rng, 200, 3000);
            tokio::time::sleep(down).await;
            g.sidecar
                .restart()
                .await
                .map_err(|e| format!("sidecar {gate} did not restart: {e:#}"))?;
            format!("gate {gate}: SIGKILL, down {down:?}, restarted")
        }
        Kind::EnvoyRestart => {
            let g = &mut stack.gates[gate];
            cx.envoy_logs.push((
                format!("gate {gate} envoy (before a restart)"),
                g.envoy.log(),
            ));
            *cx.admitted_before_restarts += g.counter("payments_admitted").await;
            g.restart_envoy().await;
            format!("gate {gate}: Envoy killed and started again")
        }
        Kind::UpstreamSlow => {
            let d = ms(rng, 500, 8000);
            stack.upstream.set_fault(UpstreamFault::Slow(d));
            tokio::time::sleep(hold).await;
            stack.upstream.set_fault(UpstreamFault::None);
            format!("answers after {d:?} for {hold:?}")
        }
        Kind::UpstreamReset => {
            stack.upstream.set_fault(UpstreamFault::Reset);
            tokio::time::sleep(hold).await;
            stack.upstream.set_fault(UpstreamFault::None);
            format!("resets for {hold:?}")
        }
        Kind::Upstream5xx => {
            let status = [500, 502, 503][rng.gen_range(0..3)];
            stack.upstream.set_fault(UpstreamFault::Status(status));
            tokio::time::sleep(hold).await;
            stack.upstream.set_fault(UpstreamFault::None);
            format!("answers {status} for {hold:?}")
        }
    })
}

/// Lifts every fault and makes sure every process runs. Returns how many fork rules never
/// fired (their payer had moved on, or stopped paying, before building on that frontier).
pub async fn lift_all(stack: &mut Stack) -> Result<usize, String> {
    let unfired = stack.devnet.faults().forks().len();
    stack.devnet.faults().reset();
    stack.upstream.set_fault(UpstreamFault::None);
    for (i, g) in stack.gates.iter_mut().enumerate() {
        if !g.sidecar.running() {
            g.sidecar
                .restart()
                .await
                .map_err(|e| format!("sidecar {i} did not restart: {e:#}"))?;
        }
    }
    Ok(unfired)
}
