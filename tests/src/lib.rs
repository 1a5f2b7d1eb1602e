//! Test harness for nanogate's end-to-end suites: real Envoy (spawned from the test process),
//! the real `nanogate-sidecar` binary, an in-process devnet, a recording upstream, free ports,
//! and template rendering for the bootstrap in `envoy/`. [`stack`] puts them together; the
//! `nanogate-demo` binary runs the same stack on fixed ports.
//!
//! Tools are found at `$NANOGATE_ENVOY` (else `<workspace>/.venv/bin/envoy`) and
//! `$NANOGATE_FILTER_WASM` (else `<workspace>/target/wasm32-wasip1/wasm/nanogate_filter.wasm`).
//! A missing tool fails the test with a message saying to run `cargo xtask test`; nothing is
//! skipped.

pub mod browser;
pub mod chaos;
pub mod envoy;
pub mod ports;
pub mod procs;
pub mod raw_http;
pub mod sidecar;
pub mod stack;
pub mod upstream;

use std::path::PathBuf;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Reads the test vectors shipped in `tests/vectors/`.
pub fn vectors(name: &str) -> serde_json::Value {
    let path = workspace_root().join("tests/vectors").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
