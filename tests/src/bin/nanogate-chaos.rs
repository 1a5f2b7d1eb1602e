//! `nanogate-chaos`: the money-conservation run (see `nanogate_tests::chaos`), run by
//! `cargo xtask chaos`. Prints the seed first and in every failure; exits 1 when a check
//! fails, 2 when the stack could not be run.
//!
//! ```text
//! nanogate-chaos [--quick] [--seed N] [--secs N] [--store sqlite|postgres] [--keep]
//! ```

use nanogate_tests::chaos::{self, ChaosConfig};
use nanogate_tests::stack::StoreKind;
use std::process::ExitCode;

const USAGE: &str =
    "usage: nanogate-chaos [--quick] [--seed N] [--secs N] [--store sqlite|postgres] [--keep]

  --quick          about two minutes in all (45 s of faults, 4 payers); default: 10 minutes
                   of faults with 8 payers
  --seed N         the seed of the fault schedule and the payers' choices (default: random;
                   printed either way)
  --secs N         seconds of faults (overrides the default of --quick or the full run)
  --store KIND     sqlite (one sidecar, the default) or postgres (two sidecar replicas, each
                   behind its own Envoy, on $DATABASE_URL)
  --keep           keep the scratch directory (logs, stores) even when every check passes";

struct Args {
    quick: bool,
    seed: Option<u64>,
    secs: Option<u64>,
    store: StoreKind,
    keep: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        seed: None,
        secs: None,
        store: StoreKind::Sqlite,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--keep" => a.keep = true,
            "--seed" => {
                let v = value("--seed")?;
                a.seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed `{v}`: not a number"))?,
                );
            }
            "--secs" => {
                let v = value("--secs")?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--secs `{v}`: not a number"))?;
                if !(5..=86_400).contains(&n) {
                    return Err(format!("--secs {n}: between 5 and 86400"));
                }
                a.secs = Some(n);
            }
            "--store" => {
                a.store = match value("--store")?.as_str() {
                    "sqlite" => StoreKind::Sqlite,
                    "postgres" => StoreKind::Postgres,
                    other => return Err(format!("--store `{other}`: sqlite or postgres")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("nanogate-chaos: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let seed = a.seed.unwrap_or_else(rand::random);
    let mut cfg = if a.quick {
        ChaosConfig::quick(seed, a.store)
    } else {
        ChaosConfig::full(seed, a.store)
    };
    if let Some(s) = a.secs {
        cfg.fault_secs = s;
    }
    cfg.keep_dir = a.keep;
    println!("chaos: seed {seed} (reproduce: {})", cfg.command());
    // A panic anywhere in the run still names the seed.
    let default_hook = std::panic::take_hook();
    let command = cfg.command();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("chaos: FAILED with a panic (seed {seed}; reproduce: {command})");
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nanogate-chaos: no runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(chaos::run(&cfg)) {
        Err(e) => {
            eprintln!(
                "chaos: the stack could not be run (seed {seed}; reproduce: {}):\n{e}",
                cfg.command()
            );
            ExitCode::from(2)
        }
        Ok(v) => {
            print!("{}", v.report);
            if v.passed() {
                println!("chaos: PASSED (seed {seed})");
                ExitCode::SUCCESS
            } else {
                for f in &v.failures {
                    println!("FAILED: {f}");
                }
                println!(
                    "chaos: FAILED (seed {seed}; reproduce: {}); logs in {}",
                    cfg.command(),
                    v.dir.display()
                );
                ExitCode::from(1)
            }
        }
    }
}
