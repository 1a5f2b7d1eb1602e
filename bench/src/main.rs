//! `nanogate-bench`: the driver behind `cargo xtask bench [--quick]`.
//!
//! Starts the stack on loopback from release binaries (devnet, sidecar), a minimal upstream in
//! this process and real Envoy per case; drives it with wrk and with its own async client for
//! paid requests; measures the sidecar's verify throughput and the spent set at size; reads the
//! criterion micro-benchmarks; prints a Markdown table and writes it to
//! `target/bench/<timestamp>.md` and `target/bench/latest.md`. Every run is bounded in time
//! and count, and everything it starts stops with it.
//!
//! Usage: `nanogate-bench [--quick] [--only envoy,steps,passes,paidcpu,paid,memory,flood,verify,spent,micro] [--pg-url URL]`.
//! Envoy and the filter module are found as the test harness finds them (`NANOGATE_ENVOY`,
//! `NANOGATE_FILTER_WASM`, else `.venv/` and the `wasm` profile output).

mod facts;
mod flood;
mod paid;
mod paidcpu;
mod passes;
mod report;
mod spent;
mod stack;
mod stats;
mod verify;
mod wrk;

use anyhow::{bail, Context, Result};
use report::{EnvoyRow, FloodRow, PaidRow, Report};
use stack::{EnvoyCase, Upstream};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub envoy_rounds: usize,
    pub wrk_secs: u64,
    pub warm_secs: u64,
    pub connections: u32,
    pub paid_workers: usize,
    /// Payers of the throughput case (instant ledger).
    pub paid_many: usize,
    pub paid_secs: u64,
    /// The paced paid load memory is sampled across, and how often.
    pub memory_secs: u64,
    pub memory_samples: u64,
    /// Served payments in the memory case's store before the load (see `memory_case`).
    pub memory_fill: u64,
    pub verify_payers: usize,
    pub verify_concurrency: usize,
    pub verify_secs: u64,
    pub spent_small: u64,
    pub spent_large: u64,
    pub spent_ops: usize,
    pub spent_budget: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        let mut plan = Plan::preset(quick);
        // For experiments: e.g. NANOGATE_BENCH_SPENT_ENTRIES=1000000.
        if let Some(n) = std::env::var("NANOGATE_BENCH_SPENT_ENTRIES")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            plan.spent_large = n;
        }
        // A memory run of another length, e.g. to see where RSS levels off: the samples keep
        // their count, so they are spread over the run.
        if let Some(n) = std::env::var("NANOGATE_BENCH_MEMORY_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            plan.memory_secs = n;
        }
        // More rounds of the Envoy cases on a busy machine: e.g. NANOGATE_BENCH_ROUNDS=4.
        if let Some(n) = std::env::var("NANOGATE_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            plan.envoy_rounds = n;
        }
        plan
    }

    fn preset(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                envoy_rounds: 2,
                wrk_secs: 3,
                warm_secs: 1,
                connections: 32,
                paid_workers: 8,
                paid_many: 64,
                paid_secs: 4,
                memory_secs: 30,
                memory_samples: 10,
                memory_fill: 100_000,
                verify_payers: 64,
                verify_concurrency: 64,
                verify_secs: 5,
                spent_small: 10_000,
                spent_large: 100_000,
                spent_ops: 300,
                spent_budget: Duration::from_secs(1),
            }
        } else {
            Plan {
                quick,
                envoy_rounds: 2,
                wrk_secs: 10,
                warm_secs: 2,
                connections: 32,
                paid_workers: 8,
                paid_many: 64,
                paid_secs: 15,
                memory_secs: 600,
                memory_samples: 20,
                memory_fill: 1_000_000,
                verify_payers: 64,
                verify_concurrency: 64,
                verify_secs: 10,
                spent_small: 10_000,
                spent_large: 10_000_000,
                spent_ops: 2_000,
                spent_budget: Duration::from_secs(5),
            }
        }
    }
}

struct Args {
    quick: bool,
    only: Option<Vec<String>>,
    pg_url: String,
}

fn args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        only: None,
        pg_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--only" => {
                let v = it.next().context("--only needs a list")?;
                a.only = Some(v.split(',').map(str::to_string).collect());
            }
            "--pg-url" => a.pg_url = it.next().context("--pg-url needs a URL")?,
            "-h" | "--help" => {
                println!(
                    "usage: nanogate-bench [--quick] [--only envoy,steps,passes,paidcpu,paid,memory,flood,verify,spent,micro] \
                     [--pg-url URL]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let plan = Plan::new(args.quick);
    // `--quick` keeps to the targets: the step-by-step profile of the 402 path (a diagnosis,
    // not a target) runs in the full run or when named with `--only`.
    let wants = |s: &str| match &args.only {
        Some(o) => o.iter().any(|x| x == s),
        None => !(args.quick && s == "steps"),
    };
    let root = nanogate_tests::workspace_root();
    // Where cargo writes (criterion's estimates included): `$CARGO_TARGET_DIR`, else target/.
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    let out_dir = root.join("target/bench");
    let work = out_dir.join(format!("work-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("mkdir {work:?}"))?;
    let bin_dir: PathBuf = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .context("binary directory")?;
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let envoy_bin = nanogate_tests::envoy::envoy_binary();
    let wasm = nanogate_tests::envoy::filter_wasm();
    let mut report = Report::new(
        plan.clone(),
        facts::collect(&envoy_bin, &wasm, &root),
        started,
    );

    report.only = args.only.as_ref().map(|o| o.join(","));
    let result = measure(&plan, &args, &wants, &work, &bin_dir, &wasm, &mut report).await;
    if let Err(e) = &result {
        report.notes.push(format!("run aborted: {e:#}"));
    }
    if wants("micro") {
        report.micro = [
            "block_hash",
            "signature_verify",
            "work_validate",
            "header_decode_payment",
            "challenge_mac_verify",
            "filter_402",
            "filter_free_route",
            "filter_paid_presented",
        ]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                facts::criterion_median_ns(&target_dir.join("criterion"), n),
            )
        })
        .collect();
    }
    let text = report.markdown();
    println!("{text}");
    let (date, time) = facts::utc(started);
    let stamp = format!("{date}T{}Z", time.replace(':', ""));
    let file = out_dir.join(format!(
        "{stamp}{}.md",
        if plan.quick { "-quick" } else { "" }
    ));
    std::fs::write(&file, &text).with_context(|| format!("write {file:?}"))?;
    std::fs::write(out_dir.join("latest.md"), &text)?;
    eprintln!("nanogate-bench: wrote {} and latest.md", file.display());
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn measure(
    plan: &Plan,
    args: &Args,
    wants: &dyn Fn(&str) -> bool,
    work: &std::path::Path,
    bin_dir: &std::path::Path,
    wasm: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    let pay_to = paid::payee_key().public_key();
    let pay_to_addr = pay_to.to_address();
    if wants("paidcpu") {
        eprintln!("nanogate-bench: Envoy CPU per paid vs free request (stand-in sidecar)");
        let upstream = Upstream::start()?;
        report.paid_cpu = Some(paidcpu::measure(plan, &upstream, wasm, &pay_to_addr).await?);
        report.laps.lap("paidcpu");
    }
    let needs_stack = [
        "envoy", "steps", "passes", "paid", "memory", "flood", "verify",
    ]
    .iter()
    .any(|p| wants(p));
    if needs_stack {
        for bin in ["nanogate-devnet", "nanogate-sidecar"] {
            if !bin_dir.join(bin).exists() {
                bail!("{bin} not found next to this binary in {bin_dir:?}: build it with `cargo build --release -p {bin}` (cargo xtask bench does)");
            }
        }
        if std::process::Command::new("wrk")
            .arg("-v")
            .output()
            .is_err()
        {
            bail!("wrk is not installed (`cargo xtask bench` installs it with apt-get)");
        }
        let upstream = Upstream::start()?;
        let mut payers: Vec<_> = (0..plan.paid_many.max(plan.paid_workers))
            .map(|i| paid::payer_key(i).public_key())
            .collect();
        payers.extend(
            (0..plan.verify_payers).map(|i| paid::payer_key(verify::FIRST_PAYER + i).public_key()),
        );
        payers.push(paid::payer_key(flood::ATTACKER).public_key());
        let fund = paid::XNO * 100;
        eprintln!("nanogate-bench: starting devnet (confirm 0 ms) and sidecar");
        let devnet0 = stack::start_devnet(bin_dir, work, 0, &payers, fund).await?;
        let sidecar0 = stack::start_sidecar(bin_dir, work, &devnet0).await?;
        report.laps.lap("stack start");

        // The floor module answers with our filter's own 402, byte for byte: captured once
        // from a filter Envoy (each 402 has a fresh nonce; any one stands for all).
        let floor = if wants("envoy") || wants("steps") {
            let (yaml, ports) = stack::envoy_config(
                EnvoyCase::Filter,
                upstream.port,
                sidecar0.port,
                wasm,
                &pay_to_addr,
                None,
            )?;
            let envoy = stack::start_envoy(&yaml, ports.admin).await;
            let url = format!("http://127.0.0.1:{}{}", ports.listener, paid::PAID_PATH);
            stack::wait_status(&url, 402, Duration::from_secs(20)).await?;
            let reply = stack::capture_reply(&url).await?;
            drop(envoy);
            Some(stack::Floor {
                wasm: stack::floor_wasm()?,
                reply,
            })
        } else {
            None
        };
        if let (true, Some(floor)) = (wants("envoy"), &floor) {
            // Rounds in alternating order, best throughput of each case kept: other load on
            // the shared machine then hurts one round, not the comparison.
            let cases = [
                (EnvoyCase::Direct, "/", 200),
                (EnvoyCase::Proxy, "/", 200),
                (EnvoyCase::Filter, "/paid/free", 200),
                (EnvoyCase::Filter, paid::PAID_PATH, 402),
                (EnvoyCase::FloorReply, paid::PAID_PATH, 402),
                (EnvoyCase::FloorPass, "/paid/free", 200),
            ];
            let mut best: Vec<Option<(wrk::WrkResult, Option<f64>)>> = vec![None; cases.len()];
            for round in 0..plan.envoy_rounds {
                let order: Vec<usize> = if round % 2 == 0 {
                    (0..cases.len()).collect()
                } else {
                    (0..cases.len()).rev().collect()
                };
                for i in order {
                    let (case, path, want) = cases[i];
                    let (yaml, ports) = stack::envoy_config(
                        case,
                        upstream.port,
                        sidecar0.port,
                        wasm,
                        &pay_to_addr,
                        Some(floor),
                    )?;
                    let r = wrk_case(plan, case, path, want, &yaml, &ports).await?;
                    if best[i].as_ref().is_none_or(|b| r.0.rps > b.0.rps) {
                        best[i] = Some(r);
                    }
                }
            }
            let mut best = best.into_iter().flatten();
            let (Some(direct), Some(proxy), Some(free), Some(unpaid), Some(floor402), Some(pass)) = (
                best.next(),
                best.next(),
                best.next(),
                best.next(),
                best.next(),
                best.next(),
            ) else {
                bail!("an Envoy case produced no result");
            };
            let (a, b, e, f) = (
                ("A", direct.0.rps),
                ("B", proxy.0.rps),
                ("E", floor402.0.rps),
                ("F", pass.0.rps),
            );
            report.envoy = vec![
                EnvoyRow::new("A. Envoy alone, direct response", vec![], direct),
                EnvoyRow::new("B. Envoy alone, proxy to upstream", vec![], proxy),
                EnvoyRow::new("C. Envoy + filter, free route (proxied)", vec![f, b], free),
                EnvoyRow::new("D. Envoy + filter, unpaid → 402", vec![e, a], unpaid),
                EnvoyRow::new(
                    "E. Envoy + floor module answering the same 402 bytes",
                    vec![a],
                    floor402,
                ),
                EnvoyRow::new(
                    "F. Envoy + floor module reading one header (proxied)",
                    vec![b],
                    pass,
                ),
            ];
            report.laps.lap("envoy");
        }

        if let (true, Some(floor)) = (wants("steps"), &floor) {
            report.steps =
                steps_case(plan, &upstream, &sidecar0, wasm, &pay_to_addr, floor).await?;
            report.laps.lap("steps");
        }

        if wants("passes") {
            report.passes = Some(
                passes::run(
                    plan,
                    &devnet0.rpc_url,
                    sidecar0.port,
                    upstream.port,
                    wasm,
                    pay_to,
                    &pay_to_addr,
                )
                .await?,
            );
            report.laps.lap("passes");
        }

        if wants("paid") {
            for workers in [1, plan.paid_workers, plan.paid_many] {
                if !paid_selected("sqlite", workers) {
                    continue;
                }
                let rows = paid_case(
                    plan,
                    workers,
                    &devnet0,
                    &sidecar0,
                    &upstream,
                    wasm,
                    pay_to,
                    &pay_to_addr,
                    workers != plan.paid_many,
                )
                .await?;
                report.paid.extend(rows);
            }
            report.laps.lap("paid (SQLite)");
        }
        // The same cases with the sidecar on PostgreSQL (a schema of its own, dropped after).
        if wants("paid") && paid_selected("postgres", 0) {
            eprintln!("nanogate-bench: sidecar on PostgreSQL ({})", args.pg_url);
            match stack::start_sidecar_on(
                bin_dir,
                work,
                &devnet0,
                &stack::SidecarDb::Postgres(args.pg_url.clone()),
            )
            .await
            {
                Ok(pg) => {
                    for workers in [1, plan.paid_workers, plan.paid_many] {
                        if !paid_selected("postgres", workers) {
                            continue;
                        }
                        match paid_case(
                            plan,
                            workers,
                            &devnet0,
                            &pg,
                            &upstream,
                            wasm,
                            pay_to,
                            &pay_to_addr,
                            false,
                        )
                        .await
                        {
                            Ok(rows) => report.paid.extend(rows),
                            Err(e) => report
                                .notes
                                .push(format!("PostgreSQL paid case ({workers} payers): {e:#}")),
                        }
                    }
                    pg.cleanup().await;
                }
                Err(e) => report
                    .notes
                    .push(format!("PostgreSQL sidecar not started: {e:#}")),
            }
            report.laps.lap("paid (PostgreSQL)");
        }

        if wants("memory") {
            report.memory.push(
                memory_case(
                    plan,
                    bin_dir,
                    work,
                    &devnet0,
                    &upstream,
                    wasm,
                    pay_to,
                    &pay_to_addr,
                )
                .await?,
            );
            report.laps.lap("memory");
        }

        if wants("flood") {
            report.flood = Some(
                flood_case(
                    plan,
                    &devnet0,
                    &sidecar0,
                    &upstream,
                    wasm,
                    pay_to,
                    &pay_to_addr,
                )
                .await?,
            );
            report.laps.lap("flood");
        }

        if wants("verify") {
            eprintln!("nanogate-bench: sidecar verify throughput");
            report.verify = Some(
                verify::run(
                    &devnet0,
                    work,
                    plan.verify_payers,
                    plan.verify_concurrency,
                    Duration::from_secs(plan.verify_secs),
                    pay_to,
                )
                .await?,
            );
            report.laps.lap("verify");
        }
        drop(sidecar0);
        drop(devnet0);

        // The 200 ms ledger is context, not a target: `--quick` runs it only when
        // `NANOGATE_BENCH_PAID_STORES` names it.
        let delayed = paid_selected("delayed", 0)
            && (!plan.quick || std::env::var("NANOGATE_BENCH_PAID_STORES").is_ok());
        if wants("paid") && delayed {
            eprintln!("nanogate-bench: starting devnet (confirm 200 ms) and sidecar");
            let devnet200 = stack::start_devnet(bin_dir, work, 200, &payers, fund).await?;
            let sidecar200 = stack::start_sidecar(bin_dir, work, &devnet200).await?;
            for workers in [1, plan.paid_workers] {
                if !paid_selected("delayed", workers) {
                    continue;
                }
                let rows = paid_case(
                    plan,
                    workers,
                    &devnet200,
                    &sidecar200,
                    &upstream,
                    wasm,
                    pay_to,
                    &pay_to_addr,
                    false,
                )
                .await?;
                report.paid.extend(rows);
            }
            report.laps.lap("paid (200 ms ledger)");
        }
    }

    if wants("spent") {
        eprintln!(
            "nanogate-bench: spent set in SQLite at {} entries",
            plan.spent_large
        );
        match spent::sqlite(
            work,
            plan.spent_small,
            plan.spent_large,
            plan.spent_ops,
            plan.spent_budget,
        )
        .await
        {
            Ok(r) => report.spent.push(r),
            Err(e) => report
                .notes
                .push(format!("SQLite spent set not measured: {e:#}")),
        }
        eprintln!(
            "nanogate-bench: spent set in PostgreSQL at {} entries",
            plan.spent_large
        );
        match spent::postgres(
            &args.pg_url,
            plan.spent_small,
            plan.spent_large,
            plan.spent_ops,
            plan.spent_budget,
        )
        .await
        {
            Ok(r) => report.spent.push(r),
            Err(e) => report
                .notes
                .push(format!("PostgreSQL spent set not measured: {e:#}")),
        }
        report.laps.lap("spent");
    }
    Ok(())
}

/// The 402 path priced step by step (`--only steps`): the floor module answering our 402
/// with each hostcall our filter makes on that path added alone, then all of them, against
/// the filter's own 402 (and, for experiments, other builds of the filter module listed in
/// `NANOGATE_BENCH_FILTER_ALT`, comma-separated paths). Rounds in alternating order; each
/// case keeps its lowest Envoy CPU per request, the figure the steps are compared by.
/// One case of [`steps_case`]: a label, what Envoy runs (the module, and the floor's
/// configuration for a floor case), the path requested and the status it must answer.
type StepCase = (
    String,
    EnvoyCase,
    PathBuf,
    Option<stack::Floor>,
    &'static str,
    u16,
);

async fn steps_case(
    plan: &Plan,
    upstream: &Upstream,
    sidecar: &stack::SidecarProc,
    wasm: &std::path::Path,
    pay_to_addr: &str,
    floor: &stack::Floor,
) -> Result<Vec<EnvoyRow>> {
    const STEPS: [&str; 6] = [
        "",
        "headers",
        "time",
        "metric",
        "random",
        "headers time metric",
    ];
    let alt: Vec<PathBuf> = std::env::var("NANOGATE_BENCH_FILTER_ALT")
        .map(|v| {
            v.split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let mut cases: Vec<StepCase> = STEPS
        .iter()
        .map(|steps| {
            let (_, rest) = floor.reply.split_once('\n').unwrap_or((&floor.reply, ""));
            let reply = format!("reply 402 {steps}\n{rest}");
            let label = if steps.is_empty() {
                "floor module answering the 402".to_string()
            } else {
                format!("floor + {}", steps.replace(' ', " + "))
            };
            let f = stack::Floor {
                wasm: floor.wasm.clone(),
                reply,
            };
            let path = paid::PAID_PATH;
            (
                label,
                EnvoyCase::FloorReply,
                wasm.to_path_buf(),
                Some(f),
                path,
                402,
            )
        })
        .collect();
    // The free route too, for each build: what a 402-path change costs every other request.
    cases.push((
        "floor module reading one header (proxied)".into(),
        EnvoyCase::FloorPass,
        wasm.to_path_buf(),
        Some(floor.clone()),
        "/paid/free",
        200,
    ));
    for a in std::iter::once(wasm.to_path_buf()).chain(alt) {
        for (what, path, want) in [
            ("402", paid::PAID_PATH, 402),
            ("free route", "/paid/free", 200),
        ] {
            let label = format!("filter {what} ({})", module_label(&a));
            cases.push((label, EnvoyCase::Filter, a.clone(), None, path, want));
        }
    }
    let mut best: Vec<Option<(wrk::WrkResult, Option<f64>)>> = vec![None; cases.len()];
    for round in 0..plan.envoy_rounds {
        let mut order: Vec<usize> = (0..cases.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (_, case, module, f, path, want) = &cases[i];
            let (yaml, ports) = stack::envoy_config(
                *case,
                upstream.port,
                sidecar.port,
                module,
                pay_to_addr,
                f.as_ref(),
            )?;
            let r = wrk_case(plan, *case, path, *want, &yaml, &ports).await?;
            let cpu = |x: &(wrk::WrkResult, Option<f64>)| x.1.unwrap_or(f64::MAX);
            if best[i].as_ref().is_none_or(|b| cpu(&r) < cpu(b)) {
                best[i] = Some(r);
            }
        }
    }
    // Each row against its floor: the 402 floor, or the pass-through floor for a free route.
    let rps = |i: usize| best[i].as_ref().map_or(0.0, |b| b.0.rps);
    let (floor_402, floor_pass) = (rps(0), rps(STEPS.len()));
    Ok(cases
        .iter()
        .zip(best)
        .filter_map(|((label, .., want), b)| {
            let floor = if *want == 402 { floor_402 } else { floor_pass };
            Some(EnvoyRow::new(label, vec![("floor", floor)], b?))
        })
        .collect())
}

/// A filter module as a steps row names it: its path from the workspace root and its size.
fn module_label(module: &std::path::Path) -> String {
    let root = nanogate_tests::workspace_root();
    let shown = module.strip_prefix(&root).unwrap_or(module);
    match std::fs::metadata(module) {
        Ok(m) => format!("{}, {} bytes", shown.display(), report::int(m.len() as f64)),
        Err(_) => shown.display().to_string(),
    }
}

async fn wrk_case(
    plan: &Plan,
    case: EnvoyCase,
    path: &str,
    want: u16,
    yaml: &str,
    ports: &stack::EnvoyPorts,
) -> Result<(wrk::WrkResult, Option<f64>)> {
    let envoy = stack::start_envoy(yaml, ports.admin).await;
    let url = format!("http://127.0.0.1:{}{path}", ports.listener);
    stack::wait_status(&url, want, Duration::from_secs(20)).await?;
    eprintln!("nanogate-bench: wrk {case:?} {path} (expect {want})");
    let url2 = url.clone();
    let (c, warm, secs) = (plan.connections, plan.warm_secs, plan.wrk_secs);
    let envoy_pid = stack::pid_with_arg(&envoy.dir().join("envoy.yaml").display().to_string());
    let (r, cpu) = tokio::task::spawn_blocking(move || {
        wrk::run(&url2, c, warm)?;
        let before = envoy_pid.and_then(stack::cpu_secs);
        let r = wrk::run(&url2, c, secs)?;
        let after = envoy_pid.and_then(stack::cpu_secs);
        let cpu = match (before, after) {
            (Some(b), Some(a)) if r.requests > 0 => Some((a - b) / r.requests as f64 * 1e6),
            _ => None,
        };
        Ok::<_, anyhow::Error>((r, cpu))
    })
    .await??;
    // Every answer must have been the expected one: a run of 503s would measure nothing.
    let bad = if want == 200 {
        r.non_2xx
    } else {
        r.requests.saturating_sub(r.non_2xx)
    };
    if bad > 0 || r.errors > 0 {
        bail!(
            "{case:?} {path}: {bad} unexpected statuses and {} socket errors in {} requests\n{}",
            r.errors,
            r.requests,
            envoy.log()
        );
    }
    drop(envoy);
    Ok((r, cpu))
}

/// For experiments on the paid cases alone: `NANOGATE_BENCH_PAID_STORES` (a comma list of
/// `sqlite`, `postgres`, `delayed` = the 200 ms ledger) and `NANOGATE_BENCH_PAID_PAYERS` (a
/// comma list of payer counts) narrow which run; unset, all of them do. `workers` 0 asks about
/// the store alone.
fn paid_selected(store: &str, workers: usize) -> bool {
    let listed = |var: &str, item: &str| {
        std::env::var(var)
            .map(|v| v.split(',').any(|x| x.trim() == item))
            .unwrap_or(true)
    };
    listed("NANOGATE_BENCH_PAID_STORES", store)
        && (workers == 0 || listed("NANOGATE_BENCH_PAID_PAYERS", &workers.to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn paid_case(
    plan: &Plan,
    workers: usize,
    devnet: &stack::DevnetProc,
    sidecar: &stack::SidecarProc,
    upstream: &Upstream,
    wasm: &std::path::Path,
    pay_to: nanogate_protocol::nano::PublicKey,
    pay_to_addr: &str,
    with_free_baseline: bool,
) -> Result<Vec<PaidRow>> {
    let (yaml, ports) = stack::envoy_config(
        EnvoyCase::Filter,
        upstream.port,
        sidecar.port,
        wasm,
        pay_to_addr,
        None,
    )?;
    let envoy = stack::start_envoy(&yaml, ports.admin).await;
    let base = format!("http://127.0.0.1:{}", ports.listener);
    stack::wait_status(
        &format!("{base}{}", paid::PAID_PATH),
        402,
        Duration::from_secs(20),
    )
    .await?;
    let secs = plan.paid_secs;
    let per_worker = if devnet.confirm_ms == 0 {
        // Enough for ~600 paid requests/s over the run (1,500/s for the throughput case); a
        // faster run ends early (counted).
        let rate = if workers >= plan.paid_many { 1500 } else { 600 };
        (secs as usize * rate) / workers + 20
    } else {
        // One request per (delay + slack) per worker at most.
        (secs * 1000 / devnet.confirm_ms.max(1)) as usize + 5
    };
    eprintln!(
        "nanogate-bench: paid (confirm {} ms): building {workers} × {per_worker} signed blocks and challenges",
        devnet.confirm_ms
    );
    // A few untimed paid requests per payer first: V8 compiles (and tiers up) the filter's
    // paid path on first use, which would otherwise be charged to the timed requests.
    let warm = if devnet.confirm_ms == 0 {
        (240 / workers).clamp(3, 30)
    } else {
        3
    };
    let mut chains = Vec::new();
    for w in 0..workers {
        chains.push(
            paid::chain(
                &devnet.rpc_url,
                &paid::payer_key(w),
                pay_to,
                per_worker + warm,
            )
            .await?,
        );
    }
    let mut headers = paid::headers_for(&base, chains).await?;
    let warm_headers: Vec<Vec<String>> = headers
        .iter_mut()
        .map(|h| h.drain(..warm.min(h.len())).collect())
        .collect();
    let warmup = paid::run(&base, warm_headers, Duration::from_secs(20)).await?;
    if warmup.failures > 0 {
        bail!(
            "paid warm-up failed (confirm {} ms): {}",
            devnet.confirm_ms,
            warmup.first_failure.unwrap_or_default()
        );
    }
    let mut rows = Vec::new();
    if with_free_baseline {
        let free =
            paid::run_free(&base, workers, Duration::from_secs(secs.min(3)), 100_000).await?;
        rows.push(PaidRow {
            case: "free route through the filter (same client)".into(),
            workers,
            delay_ms: None,
            backend: sidecar.backend,
            run: free,
            cpu: String::new(),
            breakdown: String::new(),
        });
    }
    eprintln!(
        "nanogate-bench: paid (confirm {} ms, {workers} payers): {secs} s",
        devnet.confirm_ms
    );
    let metrics_url = format!("http://127.0.0.1:{}/metrics", sidecar.port);
    let envoy_pid = stack::pid_with_arg(&envoy.dir().join("envoy.yaml").display().to_string());
    let pids = [
        ("Envoy", envoy_pid),
        ("sidecar", Some(sidecar.proc.pid())),
        ("devnet", Some(devnet.proc.pid())),
    ];
    let cpu_before: Vec<Option<f64>> = pids
        .iter()
        .map(|(_, p)| p.and_then(stack::cpu_secs))
        .collect();
    let m_before = stack::metrics(&metrics_url).await;
    let run = paid::run(&base, headers, Duration::from_secs(secs)).await?;
    // Let the filter's outcome reports land before reading the counters.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m_after = stack::metrics(&metrics_url).await;
    let cpu: Vec<String> = pids
        .iter()
        .zip(&cpu_before)
        .filter_map(|((name, pid), before)| {
            let after = pid.and_then(stack::cpu_secs)?;
            let per = (after - (*before)?) / (run.ok.max(1) as f64) * 1e6;
            Some(format!("{name} {per:.0} µs"))
        })
        .collect();
    if run.ok == 0 {
        bail!(
            "no paid request succeeded (confirm {} ms): {}\n{}",
            devnet.confirm_ms,
            run.first_failure.clone().unwrap_or_default(),
            envoy.log()
        );
    }
    let breakdown = report::breakdown(&m_before, &m_after, run.ok);
    rows.push(PaidRow {
        case: format!(
            "paid signed block, ledger confirms after {} ms, {}",
            devnet.confirm_ms, sidecar.backend
        ),
        workers,
        delay_ms: Some(devnet.confirm_ms),
        backend: sidecar.backend,
        run,
        cpu: cpu.join(", "),
        breakdown,
    });
    drop(envoy);
    Ok(rows)
}

/// Memory across a paced paid load (`plan.memory_secs`, the instant ledger): the sidecar's
/// RSS, Envoy's RSS (the wasm VMs' linear memory and V8's heap live in it) and Envoy's own
/// allocator and wasm gauges from its admin `/stats`, sampled `plan.memory_samples` times.
///
/// The sidecar is one of its own, on a store already holding `plan.memory_fill` served
/// payments. SQLite's page cache (2 MiB per connection: the writer and up to 8 readers) fills
/// only as the tables outgrow it, and from an empty store that took the whole 10 minutes: in a
/// heap profile of that run, the page cache was all of the sidecar's heap growth after the
/// first 3½ minutes (3.3 → 8.9 MB between 210 s and 650 s; everything else flat). A sidecar at
/// this rate with the default 7-day retention holds ~120 M payments, so an empty store is the
/// warm-up, not the steady state this case is after.
#[allow(clippy::too_many_arguments)]
async fn memory_case(
    plan: &Plan,
    bin_dir: &std::path::Path,
    work: &std::path::Path,
    devnet: &stack::DevnetProc,
    upstream: &Upstream,
    wasm: &std::path::Path,
    pay_to: nanogate_protocol::nano::PublicKey,
    pay_to_addr: &str,
) -> Result<report::MemoryRow> {
    eprintln!(
        "nanogate-bench: memory: a sidecar of its own on a store of {} payments",
        plan.memory_fill
    );
    let sidecar = &stack::start_sidecar_on(
        bin_dir,
        work,
        devnet,
        &stack::SidecarDb::SqliteFilled(plan.memory_fill),
    )
    .await?;
    let (yaml, ports) = stack::envoy_config(
        EnvoyCase::Filter,
        upstream.port,
        sidecar.port,
        wasm,
        pay_to_addr,
        None,
    )?;
    let envoy = stack::start_envoy(&yaml, ports.admin).await;
    let base = format!("http://127.0.0.1:{}", ports.listener);
    stack::wait_status(
        &format!("{base}{}", paid::PAID_PATH),
        402,
        Duration::from_secs(20),
    )
    .await?;
    // 8 payers, 25 paid requests/s each: 200/s, steady enough for memory to settle.
    let workers = plan.paid_workers;
    let interval = Duration::from_millis(40);
    let per_worker = (plan.memory_secs * 25) as usize + 10;
    eprintln!(
        "nanogate-bench: memory: building {workers} × {per_worker} blocks, then {} s of paced paid load",
        plan.memory_secs
    );
    let mut chains = Vec::new();
    for w in 0..workers {
        chains.push(paid::chain(&devnet.rpc_url, &paid::payer_key(w), pay_to, per_worker).await?);
    }
    let envoy_pid = stack::pid_with_arg(&envoy.dir().join("envoy.yaml").display().to_string());
    let sidecar_pid = sidecar.proc.pid();
    let duration = Duration::from_secs(plan.memory_secs);
    let load = {
        let base = base.clone();
        tokio::spawn(async move { paid::run_live(&base, chains, duration, interval).await })
    };
    let every = Duration::from_secs(plan.memory_secs / plan.memory_samples.max(1));
    let started = std::time::Instant::now();
    let mut samples = Vec::new();
    let mut wasm_stats = std::collections::BTreeMap::new();
    for _ in 0..plan.memory_samples {
        tokio::time::sleep(every).await;
        let stats = stack::envoy_stats(ports.admin, &["wasm", "server.memory"]).await;
        samples.push(report::MemorySample {
            at_secs: started.elapsed().as_secs(),
            sidecar_rss: stack::rss_bytes(sidecar_pid).unwrap_or(0),
            envoy_rss: envoy_pid.and_then(stack::rss_bytes).unwrap_or(0),
            envoy_allocated: stats.get("server.memory_allocated").copied().unwrap_or(0.0) as u64,
        });
        wasm_stats = stats;
    }
    let (paid_ok, failure) = load.await.context("memory load")??;
    drop(envoy);
    Ok(report::MemoryRow {
        backend: sidecar.backend,
        secs: plan.memory_secs,
        paid: paid_ok,
        failure,
        samples,
        wasm_stats: wasm_stats
            .into_iter()
            .filter(|(k, _)| k.contains("wasm"))
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// One honest payer, quiet then under a flood of unpaid and junk traffic (`flood.rs`).
async fn flood_case(
    plan: &Plan,
    devnet: &stack::DevnetProc,
    sidecar: &stack::SidecarProc,
    upstream: &Upstream,
    wasm: &std::path::Path,
    pay_to: nanogate_protocol::nano::PublicKey,
    pay_to_addr: &str,
) -> Result<FloodRow> {
    let (yaml, ports) = stack::envoy_config(
        EnvoyCase::Filter,
        upstream.port,
        sidecar.port,
        wasm,
        pay_to_addr,
        None,
    )?;
    let envoy = stack::start_envoy(&yaml, ports.admin).await;
    let base = format!("http://127.0.0.1:{}", ports.listener);
    stack::wait_status(
        &format!("{base}{}", paid::PAID_PATH),
        402,
        Duration::from_secs(20),
    )
    .await?;
    let secs = plan.paid_secs;
    let per_run = (secs as usize * 300) + 20;
    let warm = 30;
    eprintln!("nanogate-bench: flood: building {per_run} signed blocks and challenges per run");
    let payer = paid::payer_key(0);
    let mut chain = paid::chain(&devnet.rpc_url, &payer, pay_to, warm + per_run).await?;
    let quiet_blocks = chain.split_off(warm);
    let mut headers = paid::headers_for(&base, vec![chain, quiet_blocks]).await?;
    let quiet_headers = headers.pop().unwrap_or_default();
    let warm_headers = headers.pop().unwrap_or_default();
    let warmup = paid::run(&base, vec![warm_headers], Duration::from_secs(20)).await?;
    if warmup.failures > 0 {
        bail!(
            "flood warm-up failed: {}",
            warmup.first_failure.unwrap_or_default()
        );
    }
    eprintln!("nanogate-bench: flood: honest payer quiet, {secs} s");
    let quiet = paid::run(&base, vec![quiet_headers], Duration::from_secs(secs)).await?;
    // The flooded run's chain starts where the quiet run stopped, and its challenges are as
    // fresh as the quiet ones were.
    let flooded_blocks = paid::chain(&devnet.rpc_url, &payer, pay_to, per_run).await?;
    let flooded_headers = paid::headers_for(&base, vec![flooded_blocks])
        .await?
        .pop()
        .unwrap_or_default();
    let junk = std::sync::Arc::new(
        flood::junk(&devnet.rpc_url, &paid::payer_key(flood::ATTACKER), pay_to).await?,
    );
    let metrics_url = format!("http://127.0.0.1:{}/metrics", sidecar.port);
    let m_before = stack::metrics(&metrics_url).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = {
        let (base, stop) = (base.clone(), stop.clone());
        tokio::spawn(async move { flood::run(&base, junk, stop).await })
    };
    // Let the flood reach its pace before timing the payer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("nanogate-bench: flood: honest payer under the flood, {secs} s");
    let flooded = paid::run(&base, vec![flooded_headers], Duration::from_secs(secs)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let stats = flooding.await.context("flood task")??;
    let flooded = flooded?;
    let m_after = stack::metrics(&metrics_url).await;
    let diff =
        |k: &str| m_after.get(k).copied().unwrap_or(0.0) - m_before.get(k).copied().unwrap_or(0.0);
    let refusals = [
        "amount_mismatch",
        "invalid_signature",
        "insufficient_work",
        "rate_limited",
    ]
    .iter()
    .map(|r| {
        let n = diff(&format!("nanogate_rejections_total{{reason=\"{r}\"}}"));
        format!("{r} {n:.0}")
    })
    .collect::<Vec<_>>()
    .join(", ");
    drop(envoy);
    Ok(FloodRow {
        quiet,
        flooded,
        flood: stats,
        refusals: format!(
            "{refusals}; answered from the frontier cache {:.0}",
            diff("nanogate_frontier_cache_refusals_total")
        ),
    })
}
