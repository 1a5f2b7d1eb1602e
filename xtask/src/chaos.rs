//! `cargo xtask chaos [--quick] [--seed N] [--secs N] [--store sqlite|postgres] [--keep]`: the
//! money-conservation run. Installs what it needs (wasm target, pinned Envoy), builds the
//! filter module, the sidecar and the driver `nanogate-chaos` (`tests/src/bin/`), then runs the
//! driver with the arguments as given. The driver prints its seed first and in every failure.

use crate::setup::{self, cargo, root, run as sh};
use std::process::Command;

pub fn run(args: &[String]) -> Result<(), String> {
    setup::wasm_target()?;
    let envoy = setup::envoy()?;
    let filter_wasm = setup::filter_wasm()?;
    sh(Command::new(cargo()).current_dir(root()).args([
        "build",
        "--package",
        "nanogate-sidecar",
        "--package",
        "nanogate-tests",
        "--bins",
    ]))?;
    let bin_dir = setup::target_dir().join("debug");
    sh(Command::new(bin_dir.join("nanogate-chaos"))
        .current_dir(root())
        .args(args)
        .env("NANOGATE_ENVOY", &envoy)
        .env("NANOGATE_FILTER_WASM", &filter_wasm)
        .env("NANOGATE_BIN_DIR", &bin_dir))
    .map_err(|e| format!("{e}: the chaos run failed (its seed and report are above)"))
}
