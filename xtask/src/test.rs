//! `cargo xtask test`: everything CI checks, in the order a developer wants to hear about it.

use crate::setup::{self, cargo, root, run as sh};
use std::process::Command;

/// The filter module must stay under this size (docs/design.md#performance-targets).
const MAX_FILTER_BYTES: u64 = 400 * 1024;

pub fn run_all() -> Result<(), String> {
    sh(Command::new(cargo())
        .current_dir(root())
        .args(["fmt", "--all", "--", "--check"]))
    .map_err(|e| format!("{e}: run `cargo fmt --all`"))?;
    sh(Command::new(cargo()).current_dir(root()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let tools = setup::all()?;
    let size = std::fs::metadata(&tools.filter_wasm)
        .map_err(|e| format!("{:?}: {e}", tools.filter_wasm))?
        .len();
    eprintln!("xtask: filter module {size} bytes (limit {MAX_FILTER_BYTES})");
    if size > MAX_FILTER_BYTES {
        return Err(format!(
            "the filter module is {size} bytes, over the {MAX_FILTER_BYTES}-byte limit"
        ));
    }
    // The protocol crate must also build for the filter's target on its own.
    sh(Command::new(cargo()).current_dir(root()).args([
        "build",
        "--package",
        "nanogate-protocol",
        "--target",
        setup::WASM_TARGET,
        "--release",
    ]))?;
    // The conformance suites first, showing how many vectors each checked.
    sh(Command::new(cargo()).current_dir(root()).args([
        "test",
        "--package",
        "nanogate-protocol",
        "--test",
        "nano_vectors",
        "--test",
        "x402_vectors",
        "--",
        "--show-output",
    ]))?;
    // The Nano client schemes for the official x402 SDKs, and the pinned SDKs the interop
    // tests run them with.
    let sdk = crate::sdk::install()?;
    crate::sdk::test(&sdk)?;
    // The end-to-end suite runs the workspace's binaries (`nanogate-sidecar`, `nanogate-pay`)
    // as processes: build them explicitly rather than rely on which packages have tests.
    sh(Command::new(cargo())
        .current_dir(root())
        .args(["build", "--workspace", "--bins"]))?;
    sh(Command::new(cargo())
        .current_dir(root())
        .args(["test", "--workspace"])
        .env("NANOGATE_ENVOY", &tools.envoy)
        .env("NANOGATE_FILTER_WASM", &tools.filter_wasm)
        .env("NANOGATE_SDK_PYTHON", &sdk.python)
        .env("NANOGATE_SDK_TYPESCRIPT", &sdk.typescript))
}

pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(unknown) = args.first() {
        return Err(format!(
            "`cargo xtask test` takes no arguments (got `{unknown}`)"
        ));
    }
    run_all()
}
