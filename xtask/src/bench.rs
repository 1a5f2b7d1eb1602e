//! `cargo xtask bench [--quick]`: installs what the benchmarks need (wasm target, pinned Envoy,
//! wrk from Debian when missing), builds the filter module and the release binaries, runs the
//! criterion micro-benchmarks, then the driver `nanogate-bench` (bench/), which starts the
//! stack on loopback, measures every case and writes `target/bench/<timestamp>.md` and
//! `target/bench/latest.md`. Other arguments (`--only envoy,steps,passes,paidcpu,paid,memory,flood,verify,spent,micro`,
//! `--pg-url URL`) are passed to the driver.

use crate::setup::{self, cargo, root, run};
use std::process::Command;

/// wrk from Debian's packages (we run as root on the project's machines).
fn wrk() -> Result<(), String> {
    if Command::new("wrk").arg("-v").output().is_ok() {
        return Ok(());
    }
    setup::apt_install("wrk")
}

pub fn run_bench(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).cloned().unwrap_or_default());
    let wants = |case: &str| {
        only.as_ref()
            .is_none_or(|l| l.split(',').any(|x| x == case))
    };
    let micro = wants("micro");
    // The 402 step by step runs in the full run or with `--only steps` (the driver's rule).
    let steps = wants("steps") && !(quick && only.is_none());
    setup::wasm_target()?;
    let envoy = setup::envoy()?;
    let wasm = setup::filter_wasm()?;
    // Beside the shipped module, the same filter at opt-level 3 (over the size budget): what
    // the budget costs the 402 path and the free route, measured in the same run.
    let mut alt = std::env::var("NANOGATE_BENCH_FILTER_ALT").unwrap_or_default();
    if steps {
        let opt3 = setup::filter_wasm_opt3()?;
        alt = [alt.as_str(), &opt3.display().to_string()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(",");
    }
    wrk()?;
    // The floor module the filter is measured against (bench/floor; never shipped).
    run(Command::new(cargo()).current_dir(root()).args([
        "build",
        "--package",
        "nanogate-floor",
        "--target",
        "wasm32-wasip1",
        "--profile",
        "wasm",
    ]))?;
    let floor = setup::target_dir().join("wasm32-wasip1/wasm/nanogate_floor.wasm");
    run(Command::new(cargo()).current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "nanogate-bench",
        "--package",
        "nanogate-sidecar",
        "--package",
        "nanogate-devnet",
    ]))?;
    // The criterion runs count toward the run's time once built (the driver reports it), but
    // `cargo bench` first compiles the bench targets, which is building: build them first.
    if micro {
        // The primitives (protocol) and the filter's own work per request (filter).
        for (package, bench) in [("nanogate-protocol", "micro"), ("nanogate-filter", "edge")] {
            run(Command::new(cargo()).current_dir(root()).args([
                "bench",
                "--package",
                package,
                "--bench",
                bench,
                "--no-run",
            ]))?;
        }
    }
    let started = std::time::Instant::now();
    if micro {
        for (package, bench) in [("nanogate-protocol", "micro"), ("nanogate-filter", "edge")] {
            let mut cmd = Command::new(cargo());
            cmd.current_dir(root())
                .args(["bench", "--package", package, "--bench", bench, "--"]);
            if quick {
                cmd.args(["--quick", "--noplot"]);
            } else {
                cmd.args(["--noplot", "--warm-up-time", "1", "--measurement-time", "3"]);
            }
            run(&mut cmd)?;
        }
    }
    run(
        Command::new(setup::target_dir().join("release/nanogate-bench"))
            .current_dir(root())
            .args(args)
            .env("NANOGATE_ENVOY", envoy)
            .env("NANOGATE_FILTER_WASM", wasm)
            .env("NANOGATE_FLOOR_WASM", floor)
            .env("NANOGATE_BENCH_FILTER_ALT", alt)
            .env(
                "NANOGATE_BENCH_MICRO_SECS",
                started.elapsed().as_secs_f64().to_string(),
            ),
    )
}
