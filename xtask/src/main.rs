//! `cargo xtask <command>`: the project's automation as a small Rust program (no shell scripts
//! to rot). It installs what it needs by itself: the wasm target and the pinned Envoy.

mod bench;
mod chaos;
mod demo;
mod sdk;
mod setup;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test    install what is missing, check formatting and clippy, build the filter for
          wasm32-wasip1, and run every test in the workspace (what CI runs)
  demo    run the local demo (devnet, sidecar, upstream, Envoy on fixed ports), pay for one
          request with nanogate-pay step by step, then serve until Ctrl-C
  bench   run the benchmarks (add --quick for a run under 3 minutes)
  chaos   the money-conservation run: payers pay through the whole stack while faults are
          injected at random, then every payment must be served, redeemable or owed
          (--quick: about 2 minutes; --seed N, --secs N, --store sqlite|postgres, --keep)
  oci     build the filter and package it as an OCI image layout for Istio's WasmPlugin
          (target/oci/nanogate-filter), printing the sha256 to put in the WasmPlugin
  sdk     install the pinned official x402 SDKs (Python venv, npm ci) into sdk/'s ignored
          folders, build and test the Nano client schemes in sdk/, and print the variables
          the interop tests (tests/tests/sdk_interop.rs) read
  setup   only install what the other commands need (wasm target, pinned Envoy, and the
          pinned Python tools of the manifest tests: kubernetes-validate, jsonschema, PyYAML, and
          Debian's chromium for the paywall browser test)";

/// `cargo xtask oci`: the filter module as an OCI image layout under `target/oci/`.
fn oci(args: &[String]) -> Result<(), String> {
    if let Some(unknown) = args.first() {
        return Err(format!(
            "`cargo xtask oci` takes no arguments (got `{unknown}`)"
        ));
    }
    setup::wasm_target()?;
    let module = setup::filter_wasm()?;
    let wasm = std::fs::read(&module).map_err(|e| format!("reading {module:?}: {e}"))?;
    let version = env!("CARGO_PKG_VERSION");
    let dir = setup::root().join("target/oci/nanogate-filter");
    let layout = nanogate_xtask::oci::write_layout(&wasm, &dir, version, version)?;
    println!(
        "OCI image layout: {} (tag {}, module {} bytes)
  image (manifest) digest: {}  size {}
  module sha256:           {}

WasmPlugin fields for an oci:// URL (push the layout first, e.g.
  oras cp --from-oci-layout {}:{} <registry>/nanogate-filter:{}):
  url: oci://<registry>/nanogate-filter:{}
  sha256: {}
(for an http(s):// or file:// URL of the bare module, use sha256: {})",
        layout.dir.display(),
        layout.tag,
        layout.wasm_size,
        layout.manifest_digest,
        layout.manifest_size,
        layout.wasm_digest,
        layout.dir.display(),
        layout.tag,
        layout.tag,
        layout.tag,
        layout.manifest_sha256_hex(),
        layout.wasm_digest.trim_start_matches("sha256:"),
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("setup") => setup::all().map(|_| ()),
        Some("sdk") => sdk::install().and_then(|t| {
            sdk::test(&t)?;
            println!(
                "for the interop tests (tests/tests/sdk_interop.rs):\n  \
                 export NANOGATE_SDK_PYTHON={} NANOGATE_SDK_TYPESCRIPT={}",
                t.python.display(),
                t.typescript.display()
            );
            Ok(())
        }),
        Some("oci") => oci(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run_bench(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
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
