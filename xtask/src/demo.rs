//! `cargo xtask demo`: installs what is missing (the wasm target, the pinned Envoy), builds the
//! filter module and the binaries the demo runs (`nanogate-sidecar`, `nanogate-admin`,
//! `nanogate-pay`, `nanogate-demo`), then *becomes* `nanogate-demo` (exec), so Ctrl-C reaches the process that
//! owns Envoy, the sidecar, the upstream and the devnet, and it stops all of them.

use crate::setup::{self, cargo, root, run as sh};
use std::process::Command;

pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(unknown) = args.first() {
        return Err(format!(
            "`cargo xtask demo` takes no arguments (got `{unknown}`)"
        ));
    }
    setup::wasm_target()?;
    let envoy = setup::envoy()?;
    let filter_wasm = setup::filter_wasm()?;
    sh(Command::new(cargo()).current_dir(root()).args([
        "build",
        "--package",
        "nanogate-sidecar",
        "--package",
        "nanogate-client",
        "--package",
        "nanogate-tests",
        "--bins",
    ]))?;
    let bin_dir = setup::target_dir().join("debug");
    let demo = bin_dir.join("nanogate-demo");
    if !demo.exists() {
        return Err(format!("the build did not produce {}", demo.display()));
    }
    let mut cmd = Command::new(&demo);
    cmd.current_dir(root())
        .env("NANOGATE_ENVOY", &envoy)
        .env("NANOGATE_FILTER_WASM", &filter_wasm)
        .env("NANOGATE_BIN_DIR", &bin_dir);
    eprintln!("xtask: $ {}", demo.display());
    exec(cmd)
}

#[cfg(unix)]
fn exec(mut cmd: Command) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    // Only returns on failure.
    let e = cmd.exec();
    Err(format!("could not start the demo: {e}"))
}

#[cfg(not(unix))]
fn exec(mut cmd: Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("could not start the demo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the demo failed ({status})"))
    }
}
