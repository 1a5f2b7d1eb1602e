//! The Markdown report: one table per part, then the performance targets of docs/design.md
//! (`#performance-targets`) as met or missed.

use crate::facts::{utc, Facts};
use crate::spent::SpentResult;
use crate::stats::LatencyRun;
use crate::wrk::WrkResult;
use crate::Plan;
use std::fmt::Write;
use std::time::Duration;

pub struct EnvoyRow {
    pub case: String,
    /// The cases this one is compared with (label, req/s), the nearest first.
    pub baselines: Vec<(&'static str, f64)>,
    pub r: WrkResult,
    /// Envoy's own CPU time per request (user + system, all its threads).
    pub cpu_us: Option<f64>,
}

impl EnvoyRow {
    pub fn new(
        case: &str,
        baselines: Vec<(&'static str, f64)>,
        (r, cpu_us): (WrkResult, Option<f64>),
    ) -> EnvoyRow {
        EnvoyRow {
            case: case.into(),
            baselines,
            r,
            cpu_us,
        }
    }

    /// Throughput as a fraction of case `label`'s.
    fn ratio_to(&self, label: &str) -> Option<f64> {
        self.baselines
            .iter()
            .find(|(l, _)| *l == label)
            .map(|&(_, b)| if b > 0.0 { self.r.rps / b } else { 0.0 })
    }
}

pub struct PaidRow {
    pub case: String,
    pub workers: usize,
    pub delay_ms: Option<u64>,
    /// The sidecar's store: "SQLite" or "PostgreSQL".
    pub backend: &'static str,
    pub run: LatencyRun,
    /// CPU time per paid request of each process.
    pub cpu: String,
    /// Mean durations from the sidecar's metrics over the run.
    pub breakdown: String,
}

/// Means of every `*_seconds` histogram and the confirmation push/poll counters that moved
/// between two scrapes of the sidecar's `/metrics`, per payment.
pub fn breakdown(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    payments: u64,
) -> String {
    let diff =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let per = payments.max(1) as f64;
    let mut parts = Vec::new();
    for k in after.keys().filter(|k| k.contains("_seconds_sum")) {
        let count = diff(&k.replace("_seconds_sum", "_seconds_count"));
        if count <= 0.0 {
            continue;
        }
        let name = k
            .replace("nanogate_", "")
            .replace("_seconds_sum", "")
            .replace(['{', '}', '"', ','], " ")
            .replace("op=", "")
            .replace("action=", "")
            .replace("node=", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        parts.push(format!(
            "{name} {:.2} ms ×{:.1}",
            diff(k) / count * 1000.0,
            count / per
        ));
    }
    for k in after
        .keys()
        .filter(|k| k.contains("confirmation_pushes") || k.contains("confirmation_polls"))
    {
        let name = k.replace("nanogate_", "").replace("_total", "");
        parts.push(format!("{name} {:.0}", diff(k)));
    }
    parts.join("; ")
}

/// The honest payer quiet and under a flood (`flood.rs`).
pub struct FloodRow {
    pub quiet: LatencyRun,
    pub flooded: LatencyRun,
    pub flood: crate::flood::FloodStats,
    /// The sidecar's refusals during the flooded run, by reason.
    pub refusals: String,
}

impl FloodRow {
    fn ratio(a: Duration, b: Duration) -> f64 {
        a.as_secs_f64() / b.as_secs_f64().max(1e-9)
    }
}

/// One memory sample during the paced paid load.
#[derive(Debug, Clone)]
pub struct MemorySample {
    pub at_secs: u64,
    pub sidecar_rss: u64,
    pub envoy_rss: u64,
    /// Envoy's `server.memory_allocated` (its own heap; V8's wasm memory is mapped apart).
    pub envoy_allocated: u64,
}

/// Memory across a paced paid load.
pub struct MemoryRow {
    pub backend: &'static str,
    pub secs: u64,
    pub paid: u64,
    pub failure: Option<String>,
    pub samples: Vec<MemorySample>,
    /// Envoy's wasm gauges and counters at the last sample.
    pub wasm_stats: String,
}

impl MemoryRow {
    /// How a series moved after warm-up: the mean of the last third against the mean of the
    /// middle third (the first third is warm-up). `(ratio, flat)`: flat = within 10 %.
    pub fn trend(&self, pick: impl Fn(&MemorySample) -> u64) -> Option<(f64, bool)> {
        let n = self.samples.len();
        if n < 3 {
            return None;
        }
        let mean = |s: &[MemorySample]| {
            s.iter().map(|x| pick(x) as f64).sum::<f64>() / s.len().max(1) as f64
        };
        let third = n / 3;
        let middle = mean(&self.samples[third..2 * third]);
        let last = mean(&self.samples[2 * third..]);
        let ratio = last / middle.max(1.0);
        Some((ratio, ratio <= 1.10))
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub struct Report {
    pub plan: Plan,
    pub facts: Facts,
    pub started: u64,
    pub envoy: Vec<EnvoyRow>,
    /// The 402 path step by step (`--only steps`): floor variants and filter builds.
    pub steps: Vec<EnvoyRow>,
    pub paid: Vec<PaidRow>,
    pub verify: Option<LatencyRun>,
    pub flood: Option<FloodRow>,
    pub spent: Vec<SpentResult>,
    pub memory: Vec<MemoryRow>,
    pub passes: Option<crate::passes::PassesResult>,
    pub micro: Vec<(String, Option<f64>)>,
    /// Envoy CPU per paid vs free request, measured alike (`crate::paidcpu`).
    pub paid_cpu: Option<crate::paidcpu::PaidCpuRow>,
    pub notes: Vec<String>,
    /// `--only` parts, when the run measured only some.
    pub only: Option<String>,
    /// Wall time per part of this run (the `--quick` target is about the whole).
    pub laps: Laps,
}

/// Wall time of each part of a run, in the order they ran.
pub struct Laps {
    last: std::time::Instant,
    pub parts: Vec<(&'static str, Duration)>,
}

impl Laps {
    fn new() -> Laps {
        Laps {
            last: std::time::Instant::now(),
            parts: Vec::new(),
        }
    }

    /// Ends the part running since the previous lap (or the start) under `name`.
    pub fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.parts.push((name, now - self.last));
        self.last = now;
    }

    /// `cargo xtask bench` runs the criterion benchmarks before this driver and passes their
    /// wall time in `NANOGATE_BENCH_MICRO_SECS`; with it, the total is the whole command's
    /// time once built.
    fn markdown(&self) -> (Duration, String) {
        let micro = std::env::var("NANOGATE_BENCH_MICRO_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map(Duration::from_secs_f64);
        let parts = micro
            .map(|d| ("criterion benchmarks", d))
            .into_iter()
            .chain(self.parts.iter().copied());
        let mut total = Duration::ZERO;
        let mut text = String::new();
        for (name, d) in parts {
            total += d;
            let sep = if text.is_empty() { "" } else { ", " };
            let _ = write!(text, "{sep}{name} {:.0} s", d.as_secs_f64());
        }
        (total, text)
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn signed_ms(v: f64) -> String {
    format!("{v:+.2} ms")
}

pub fn int(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ns(v: f64) -> String {
    if v >= 1_000.0 {
        format!("{:.2} µs", v / 1_000.0)
    } else {
        format!("{v:.1} ns")
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

impl Report {
    pub fn new(plan: Plan, facts: Facts, started: u64) -> Report {
        Report {
            plan,
            facts,
            started,
            envoy: Vec::new(),
            steps: Vec::new(),
            paid: Vec::new(),
            verify: None,
            flood: None,
            spent: Vec::new(),
            memory: Vec::new(),
            passes: None,
            micro: Vec::new(),
            paid_cpu: None,
            notes: Vec::new(),
            only: None,
            laps: Laps::new(),
        }
    }

    /// Added latency beyond the ledger's delay: (p50, p99) in ms.
    fn added(row: &PaidRow) -> Option<(f64, f64)> {
        let d = row.delay_ms? as f64;
        Some((
            row.run.p50.as_secs_f64() * 1000.0 - d,
            row.run.p99.as_secs_f64() * 1000.0 - d,
        ))
    }

    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let f = &self.facts;
        let (date, time) = utc(self.started);
        let mut s = String::new();
        let cmd = format!(
            "cargo xtask bench{}{}",
            if p.quick { " --quick" } else { "" },
            self.only
                .as_ref()
                .map(|o| format!(" --only {o}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "# nanogate benchmarks, {date} {time} UTC{}\n",
            if p.quick { " (quick)" } else { "" }
        );
        let _ = writeln!(s, "Command: `{cmd}` · commit {}\n", f.git);
        let (total, parts) = self.laps.markdown();
        let _ = writeln!(
            s,
            "Run time once built: {:.1} min ({parts}).\n",
            total.as_secs_f64() / 60.0
        );
        let _ = writeln!(
            s,
            "Machine: {} × {} · {} memory · load average at start {} · Linux {} · {} · {} (`--concurrency 1`) · {}{}\n",
            f.nproc,
            f.cpu,
            f.memory,
            f.loadavg,
            f.kernel,
            f.rustc,
            f.envoy,
            f.wrk,
            self.spent
                .iter()
                .map(|r| format!(" · {}", r.version))
                .collect::<String>()
        );
        let _ = writeln!(
            s,
            "Everything runs on loopback and shares the same {} cores, nothing pinned: the load \
             generator (wrk, or this driver's own client), Envoy, the upstream (in the driver), \
             the sidecar and the devnet. Ratios compare cases of this one run; absolute numbers \
             move with the machine.{}\n",
            f.nproc,
            if p.quick {
                format!(
                    " Quick mode: shorter runs ({} s per wrk case, {} s per paid case), the \
                     spent set at {} entries instead of 10,000,000, and neither the 402 path \
                     step by step nor the 200 ms ledger (both context, not targets).",
                    p.wrk_secs,
                    p.paid_secs,
                    int(p.spent_large as f64)
                )
            } else {
                String::new()
            }
        );

        if !self.steps.is_empty() {
            let _ = writeln!(
                s,
                "## The 402 path step by step (wrk -t1 -c{}, {} s; lowest Envoy CPU per request of {} rounds)\n",
                p.connections, p.wrk_secs, p.envoy_rounds
            );
            let _ = writeln!(
                s,
                "Filter rows name the module and its size. `target/opt3/…` is the same filter with \
                 our crates (filter, protocol) at opt-level 3 instead of \"z\"/\"s\": built by \
                 `cargo xtask bench` beside the shipped module to show what the module's size \
                 budget costs, never shipped.\n"
            );
            let _ = writeln!(
                s,
                "| case | req/s | ratio to the floor | Envoy CPU per request | beyond the floor |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            // A free-route row is compared with the pass-through floor, the rest with the 402's.
            let cpu_of = |p: &str| {
                self.steps
                    .iter()
                    .find(|r| r.case.starts_with(p))
                    .and_then(|r| r.cpu_us)
            };
            let (floor_402, floor_pass) = (
                cpu_of("floor module answering"),
                cpu_of("floor module reading"),
            );
            for r in &self.steps {
                let free =
                    r.case.contains("free route") || r.case.starts_with("floor module reading");
                let floor_cpu = if free { floor_pass } else { floor_402 };
                let cpu = r
                    .cpu_us
                    .map_or_else(|| "?".into(), |c| format!("{c:.1} µs"));
                let beyond = match (r.cpu_us, floor_cpu) {
                    (Some(c), Some(f)) => format!("{:+.1} µs", c - f),
                    _ => "?".into(),
                };
                let ratio = r
                    .ratio_to("floor")
                    .map_or_else(|| "?".into(), |x| format!("{x:.2}×"));
                let _ = writeln!(
                    s,
                    "| {} | {} | {ratio} | {cpu} | {beyond} |",
                    r.case,
                    int(r.r.rps)
                );
            }
            s.push('\n');
        }

        if !self.envoy.is_empty() {
            let _ = writeln!(
                s,
                "## Envoy and the filter (wrk -t1 -c{}, {} s after {} s warm-up; best of {} rounds in alternating order)\n",
                p.connections, p.wrk_secs, p.warm_secs, p.envoy_rounds
            );
            let _ = writeln!(
                s,
                "| case | req/s | p50 | p99 | ratio to baseline | Envoy CPU per request |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
            for r in &self.envoy {
                let ratio = if r.baselines.is_empty() {
                    "baseline".to_string()
                } else {
                    r.baselines
                        .iter()
                        .filter_map(|(l, _)| Some(format!("{:.2}× {l}", r.ratio_to(l)?)))
                        .collect::<Vec<_>>()
                        .join(" · ")
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {ratio} | {} |",
                    r.case,
                    int(r.r.rps),
                    ms(r.r.p50),
                    ms(r.r.p99),
                    r.cpu_us
                        .map_or_else(|| "?".into(), |c| format!("{c:.1} µs"))
                );
            }
            s.push('\n');
        }

        if let Some(ps) = &self.passes {
            let _ = writeln!(
                s,
                "## Prepaid passes (one Envoy, wrk -t1 -c{} with `x-nanogate-pass`, {} s after {} s warm-up, best of {} rounds; passes bought once by signed block)\n",
                p.connections, p.wrk_secs, p.warm_secs, p.envoy_rounds
            );
            let _ = writeln!(
                s,
                "| case | req/s | p50 | p99 | ratio to the free route | Envoy CPU per request |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
            for (case, m) in [
                ("free route through the filter", &ps.free),
                (
                    "time pass (`hour`), checked by the filter alone",
                    &ps.time_pass,
                ),
                (
                    "counted pass (`many`, 10⁹ requests), counted per VM and reported each second",
                    &ps.counted_pass,
                ),
            ] {
                let _ = writeln!(
                    s,
                    "| {case} | {} | {} | {} | {:.2}× | {} |",
                    int(m.r.rps),
                    ms(m.r.p50),
                    ms(m.r.p99),
                    m.r.rps / ps.free.r.rps.max(1e-9),
                    m.cpu_us
                        .map_or_else(|| "?".into(), |c| format!("{c:.1} µs"))
                );
            }
            let o = &ps.overspend;
            let _ = writeln!(
                s,
                "\nOverspend: one pass of {} requests used through two Envoys (one worker VM each, one sidecar, `passReportSecs` {}) for {} s with wrk -c{} on each: {} served of {} sent ({} req/s on the pass over both), **{} beyond the grant** ({:.1} % of it); the documented bound is min(`passReportSecs` × rate, (VMs − 1) × grant) = {}.\n",
                int(o.granted as f64),
                crate::passes::REPORT_SECS,
                o.secs,
                (p.connections / 2).max(1),
                int(o.served as f64),
                int(o.sent as f64),
                int(o.rate),
                int(o.over() as f64),
                o.over() as f64 * 100.0 / o.granted.max(1) as f64,
                int(o.bound() as f64)
            );
        }

        if !self.paid.is_empty() {
            let _ = writeln!(
                s,
                "## Paid requests end to end (Envoy + filter + sidecar + devnet; one request in \
                 flight per payer; pre-built `PAYMENT-SIGNATURE` headers, latency timed per \
                 request by the driver)\n"
            );
            let _ = writeln!(
                s,
                "| case | store | payers | req/s | p50 | p99 | added beyond ledger delay (p50 / p99) | ok / failed |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
            for r in &self.paid {
                let added = Self::added(r)
                    .map(|(a, b)| format!("{} / {}", signed_ms(a), signed_ms(b)))
                    .unwrap_or_else(|| "–".into());
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {added} | {} / {} |",
                    r.case,
                    r.backend,
                    r.workers,
                    int(r.run.rps),
                    ms(r.run.p50),
                    ms(r.run.p99),
                    r.run.ok,
                    r.run.failures
                );
            }
            let _ = writeln!(
                s,
                "\nWhere the time goes (CPU per paid request of each process; sidecar metrics: \
                 mean duration ×count per payment):\n"
            );
            for r in self.paid.iter().filter(|r| r.delay_ms.is_some()) {
                let _ = writeln!(
                    s,
                    "- {}, {} payer(s): CPU {}. {}",
                    r.case, r.workers, r.cpu, r.breakdown
                );
            }
            for r in &self.paid {
                if let Some(e) = &r.run.first_failure {
                    let _ = writeln!(s, "\nFirst failure ({}): `{}`", r.case, e.replace('`', "'"));
                }
            }
            s.push('\n');
        }

        for m in &self.memory {
            let _ = writeln!(
                s,
                "## Memory across a paced paid load ({} s, 8 payers at 25 paid requests/s each, \
                 ledger confirms at once, sidecar on {}; {} paid requests admitted{})\n",
                m.secs,
                m.backend,
                m.paid,
                m.failure
                    .as_ref()
                    .map(|f| format!(", first failure: {f}"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                s,
                "| at | sidecar RSS | Envoy RSS | Envoy `server.memory_allocated` |"
            );
            let _ = writeln!(s, "|---:|---:|---:|---:|");
            for x in &m.samples {
                let _ = writeln!(
                    s,
                    "| {} s | {} | {} | {} |",
                    x.at_secs,
                    mib(x.sidecar_rss),
                    mib(x.envoy_rss),
                    mib(x.envoy_allocated)
                );
            }
            if !m.wasm_stats.is_empty() {
                let _ = writeln!(s, "\nEnvoy's wasm stats at the end: {}.", m.wasm_stats);
            }
            s.push('\n');
        }

        if let Some(f) = &self.flood {
            let _ = writeln!(
                s,
                "## An honest payer under a flood (one payer on 127.0.0.1, ledger confirms at once; \
                 the flood: {} clients on 127.0.0.2–9, each round an unpaid request and a junk \
                 payment under its fresh challenge: wrong amount, bad signature, bad work)\n",
                crate::flood::WORKERS
            );
            let _ = writeln!(s, "| run | req/s (payer) | p50 | p99 | ok / failed |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            for (name, r) in [("quiet", &f.quiet), ("under the flood", &f.flooded)] {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} / {} |",
                    int(r.rps),
                    ms(r.p50),
                    ms(r.p99),
                    r.ok,
                    r.failures
                );
            }
            let _ = writeln!(
                s,
                "\nFlooded ÷ quiet: p50 {:.2}×, p99 {:.2}×. The flood: {} requests ({} req/s); \
                 answers 402 ×{}, 429 ×{}, 503 ×{}, 200 ×{}, other ×{}. Sidecar refusals: {}.\n",
                FloodRow::ratio(f.flooded.p50, f.quiet.p50),
                FloodRow::ratio(f.flooded.p99, f.quiet.p99),
                int(f.flood.requests as f64),
                int(f.flood.rps),
                f.flood.statuses[0],
                f.flood.statuses[1],
                f.flood.statuses[2],
                f.flood.statuses[3],
                f.flood.statuses[4],
                f.refusals
            );
            for r in [&f.quiet, &f.flooded] {
                if let Some(e) = &r.first_failure {
                    let _ = writeln!(s, "First failure: `{}`\n", e.replace('`', "'"));
                }
            }
        }

        if let Some(v) = &self.verify {
            let _ = writeln!(
                s,
                "## Sidecar verify throughput (`Engine::verify_only` in the driver against the \
                 devnet process: MAC, nonce registry, destination, signature, work, spent and \
                 fork sets, `account_info` over RPC)\n"
            );
            let _ = writeln!(
                s,
                "| concurrency | verifications/s | p50 | p99 | ok / failed |"
            );
            let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} / {} |",
                p.verify_concurrency,
                int(v.rps),
                ms(v.p50),
                ms(v.p99),
                v.ok,
                v.failures
            );
            if let Some(e) = &v.first_failure {
                let _ = writeln!(s, "\nFirst failure: `{}`", e.replace('`', "'"));
            }
            s.push('\n');
        }

        if !self.micro.is_empty() {
            let _ = writeln!(
                s,
                "## Micro-benchmarks (criterion, median; `protocol/benches/micro.rs`, and the filter's own work per request natively, without hostcalls, in `filter/benches/edge.rs`)\n"
            );
            let _ = writeln!(s, "| benchmark | time per op | ops/s (one core) |");
            let _ = writeln!(s, "|---|---:|---:|");
            for (name, v) in &self.micro {
                match v {
                    Some(v) => {
                        let _ = writeln!(s, "| {name} | {} | {} |", ns(*v), int(1e9 / v));
                    }
                    None => {
                        let _ = writeln!(s, "| {name} | not run | |");
                    }
                }
            }
            s.push('\n');
        }

        if !self.spent.is_empty() {
            let _ = writeln!(
                s,
                "## Spent set through the sidecar's `Store` (one operation at a time; insert = \
                 `consume`, one durable transaction; lookup = `spent`)\n"
            );
            let _ = writeln!(
                s,
                "| backend | entries | insert new/s (p99) | insert duplicate (refused)/s | lookup hit/s (p99) | lookup miss/s | ratio to small (insert / hit) |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
            for r in &self.spent {
                for (rates, base) in [(&r.small, None), (&r.large, Some(&r.small))] {
                    let ratio = base
                        .map(|b| {
                            format!(
                                "{:.2} / {:.2}",
                                rates.insert_per_s / b.insert_per_s.max(1e-9),
                                rates.hit_per_s / b.hit_per_s.max(1e-9)
                            )
                        })
                        .unwrap_or_else(|| "baseline".into());
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} ({}) | {} | {} ({}) | {} | {ratio} |",
                        r.backend,
                        int(rates.entries as f64),
                        int(rates.insert_per_s),
                        ms(rates.insert_p99),
                        int(rates.dup_per_s),
                        int(rates.hit_per_s),
                        ms(rates.hit_p99),
                        int(rates.miss_per_s)
                    );
                }
            }
            let fills: Vec<String> = self
                .spent
                .iter()
                .map(|r| format!("{} {:.0} s", r.backend, r.fill_secs))
                .collect();
            let _ = writeln!(
                s,
                "\nBulk fill (set-based SQL, random 256-bit keys inserted in key order, `payments` rows in state served): {}.\n",
                fills.join(", ")
            );
        }

        let _ = writeln!(s, "## Targets (docs/design.md#performance-targets)\n");
        let _ = writeln!(s, "| target | measured | result |");
        let _ = writeln!(s, "|---|---|---|");
        // Our filter against the floor module doing the same job with no work of its own:
        // (our case, floor case, target, what). Envoy's CPU per request is the fairer reading
        // when wrk and Envoy share the cores, which compresses throughput ratios.
        for (ours, floor, target, what) in [
            (
                "D.",
                "E",
                0.85,
                "unpaid 402 ≥ 0.85× the floor module's 402 throughput",
            ),
            (
                "C.",
                "F",
                0.95,
                "free route ≥ 0.95× the floor pass-through module",
            ),
        ] {
            let find = |p: &str| self.envoy.iter().find(|r| r.case.starts_with(p));
            let (Some(o), Some(fl)) = (find(ours), find(&format!("{floor}."))) else {
                continue;
            };
            let x = o.ratio_to(floor).unwrap_or(0.0);
            let cpu = match (fl.cpu_us, o.cpu_us) {
                (Some(f), Some(c)) if c > 0.0 => format!(
                    "; Envoy CPU per request {f:.1} µs floor vs {c:.1} µs ours ({:.2}×, {:+.1} µs)",
                    f / c,
                    c - f
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| {what} | {x:.2}× ({} vs {} req/s){cpu} | {} |",
                int(o.r.rps),
                int(fl.r.rps),
                met(x >= target)
            );
        }
        if let Some(ps) = &self.passes {
            let t = ps.time_pass.r.rps / ps.free.r.rps.max(1e-9);
            let c = ps.counted_pass.r.rps / ps.free.r.rps.max(1e-9);
            let _ = writeln!(
                s,
                "| requests on a pass ≥ 0.9× the free route through the filter | time pass {t:.2}×, counted pass {c:.2}× ({} and {} vs {} req/s) | {} |",
                int(ps.time_pass.r.rps),
                int(ps.counted_pass.r.rps),
                int(ps.free.r.rps),
                met(t >= 0.9 && c >= 0.9)
            );
            let o = &ps.overspend;
            let _ = writeln!(
                s,
                "| pass overspend within the documented bound (two Envoys) | {} beyond a grant of {} (bound {}) | {} |",
                int(o.over() as f64),
                int(o.granted as f64),
                int(o.bound() as f64),
                met(o.over() <= o.bound())
            );
        }
        if let Some(c) = &self.paid_cpu {
            let x = c.paid_us / c.free_us.max(1e-9);
            let _ = writeln!(
                s,
                "| Envoy CPU per paid request ≤ 2× a free proxied request (one client, one \
                 connection, a stand-in sidecar answering at once) | {:.0} µs paid vs {:.0} µs \
                 free, **{x:.2}×** ({:.0} vs {:.0} req/s; {:.2} outcomes in {:.3} report calls \
                 per paid request); the floor module making one {}-byte callout per request: \
                 {:.0} µs ({:.2}× free) | {} |",
                c.paid_us,
                c.free_us,
                c.paid_rps,
                c.free_rps,
                c.outcomes_per_paid,
                c.outcome_calls_per_paid,
                c.pay_bytes,
                c.floor_call_us,
                c.floor_call_us / c.free_us.max(1e-9),
                met(x <= 2.0)
            );
        }
        for r in self
            .paid
            .iter()
            .filter(|r| r.delay_ms.is_some() && r.workers < p.paid_many)
        {
            if let Some((a50, a99)) = Self::added(r) {
                // 1 payer: < 1 ms / < 5 ms; more: < 2 ms / < 10 ms (docs/design.md).
                let (t50, t99) = if r.workers == 1 {
                    (1.0, 5.0)
                } else {
                    (2.0, 10.0)
                };
                let _ = writeln!(
                    s,
                    "| paid adds < {t50} ms p50, < {t99} ms p99 beyond the ledger ({} ms delay, {} payers, {}) | {} p50, {} p99 | {} |",
                    r.delay_ms.unwrap_or(0),
                    r.workers,
                    r.backend,
                    signed_ms(a50),
                    signed_ms(a99),
                    met(a50 < t50 && a99 < t99)
                );
            }
        }
        let many = |backend: &str| {
            self.paid
                .iter()
                .find(|r| r.delay_ms == Some(0) && r.workers == p.paid_many && r.backend == backend)
        };
        for backend in ["SQLite", "PostgreSQL"] {
            if let Some(r) = many(backend) {
                let _ = writeln!(
                    s,
                    "| ≥ 1,000 paid requests/s (instant ledger, {} payers, {backend}) | {} /s (p50 {}, p99 {}) | {} |",
                    r.workers,
                    int(r.run.rps),
                    ms(r.run.p50),
                    ms(r.run.p99),
                    met(r.run.rps >= 1000.0 && r.run.failures == 0)
                );
            }
        }
        // PostgreSQL within 2× of SQLite: throughput, and latency at each payer count.
        let pairs: Vec<(&PaidRow, &PaidRow)> = self
            .paid
            .iter()
            .filter(|r| r.backend == "PostgreSQL" && r.delay_ms.is_some())
            .filter_map(|pg| {
                let sq = self.paid.iter().find(|r| {
                    r.backend == "SQLite" && r.delay_ms == pg.delay_ms && r.workers == pg.workers
                })?;
                Some((pg, sq))
            })
            .collect();
        if !pairs.is_empty() {
            let parts: Vec<String> = pairs
                .iter()
                .map(|(pg, sq)| {
                    format!(
                        "{} payers: {:.2}× the req/s, p50 {:.2}×",
                        pg.workers,
                        pg.run.rps / sq.run.rps.max(1e-9),
                        pg.run.p50.as_secs_f64() / sq.run.p50.as_secs_f64().max(1e-9)
                    )
                })
                .collect();
            let ok = pairs
                .iter()
                .all(|(pg, sq)| pg.run.rps * 2.0 >= sq.run.rps && pg.run.p50 <= sq.run.p50 * 2);
            let _ = writeln!(
                s,
                "| PostgreSQL within 2× of SQLite (paid, instant ledger) | {} | {} |",
                parts.join("; "),
                met(ok)
            );
        }
        for m in &self.memory {
            let describe = |what: &str, t: Option<(f64, bool)>| match t {
                Some((x, flat)) => format!(
                    "{what} {} ({x:.2}× the middle third)",
                    if flat { "flat" } else { "growing" }
                ),
                None => format!("{what}: too few samples"),
            };
            let sidecar = m.trend(|x| x.sidecar_rss);
            let envoy = m.trend(|x| x.envoy_rss);
            let last = m.samples.last();
            let _ = writeln!(
                s,
                "| memory flat over a {}-second paid load (after warm-up: last third vs middle third ≤ 1.10×) | {}; {}; at the end sidecar {} and Envoy {} | {} |",
                m.secs,
                describe("sidecar RSS", sidecar),
                describe("Envoy RSS", envoy),
                last.map_or("–".into(), |x| mib(x.sidecar_rss)),
                last.map_or("–".into(), |x| mib(x.envoy_rss)),
                met(sidecar.is_some_and(|t| t.1) && envoy.is_some_and(|t| t.1))
            );
        }
        if let Some(v) = &self.verify {
            let _ = writeln!(
                s,
                "| sidecar verifies ≥ 5,000 signed-block payments/s on 2 cores | {} /s ({:.2}× target; {} cores) | {} |",
                int(v.rps),
                v.rps / 5000.0,
                f.nproc,
                met(v.rps >= 5000.0 && v.failures == 0)
            );
        }
        for r in &self.spent {
            let ins = r.large.insert_per_s / r.small.insert_per_s.max(1e-9);
            let hit = r.large.hit_per_s / r.small.hit_per_s.max(1e-9);
            let dup = r.large.dup_per_s / r.small.dup_per_s.max(1e-9);
            let _ = writeln!(
                s,
                "| spent set O(1)-ish at 10M ({}; read as: every rate at size ≥ 0.5× the small table's) | {} entries vs {}: insert {ins:.2}×, duplicate refusal {dup:.2}×, lookup {hit:.2}×{}; RSS of the process holding the store {} at the small table, {} at size | {} |",
                r.backend,
                int(r.large.entries as f64),
                int(r.small.entries as f64),
                if r.large.entries < 10_000_000 { " (**not 10M**: quick mode)" } else { "" },
                mib(r.rss_small),
                mib(r.rss_large),
                met(ins >= 0.5 && hit >= 0.5 && dup >= 0.5)
            );
        }
        let _ = writeln!(
            s,
            "| filter module < 400 KB (409,600 bytes, as `cargo xtask test` checks) | {} bytes ({:.0} KiB, {:.2}× the limit) | {} |",
            int(f.wasm_bytes as f64),
            f.wasm_bytes as f64 / 1024.0,
            f.wasm_bytes as f64 / 409_600.0,
            met(f.wasm_bytes > 0 && f.wasm_bytes < 409_600)
        );
        let (total, parts) = self.laps.markdown();
        if p.quick && self.only.is_none() {
            let _ = writeln!(
                s,
                "| `cargo xtask bench --quick` under 5 minutes once built | {:.1} min ({parts}) | {} |",
                total.as_secs_f64() / 60.0,
                met(total < Duration::from_secs(300))
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {}", n.replace('\n', " "));
            }
        }
        s
    }
}
