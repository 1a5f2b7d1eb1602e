//! `cargo xtask <command>`: the project's automation as a small Rust program (no shell scripts
//! to rot). It installs what it needs by itself: the wasm target and the pinned Envoy.

mod setup;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test    install what is missing, check formatting and clippy, build the filter for
          wasm32-wasip1, and run every test in the workspace (what CI runs)
  demo    run the local demo (devnet, sidecar, upstream, Envoy) and pay for one request
  bench   run the benchmarks (add --quick for a run under 3 minutes)
  setup   only install what the other commands need (wasm target, pinned Envoy)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("setup") => setup::all().map(|_| ()),
        Some("demo") => Err(
            "the demo is not built yet: `cargo xtask demo` will start devnet, sidecar, an \
             upstream and Envoy once the end-to-end work lands (see the README)"
                .to_string(),
        ),
        Some("bench") => Err("benchmarks are not built yet (see the README)".to_string()),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
