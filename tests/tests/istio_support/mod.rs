//! Shared by the Istio test files: the shipped manifests in `envoy/istio/`, read with the
//! project venv's PyYAML (installed by `cargo xtask test`/`setup`, pinned in xtask/src/setup.rs).
//!
//! Why PyYAML and not a Rust YAML crate: the same venv already has to provide
//! kubernetes-validate and jsonschema for these tests, PyYAML comes with it, and it reads YAML
//! the way Kubernetes tooling does (YAML 1.1 scalars), so no new crate enters the shared build.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const RUN_XTASK: &str =
    "run `cargo xtask test` (or `cargo xtask setup`): it installs kubernetes-validate, jsonschema \
     and PyYAML into .venv next to Envoy";

/// `envoy/istio/`.
pub fn istio_dir() -> PathBuf {
    nanogate_tests::workspace_root().join("envoy/istio")
}

/// The venv's Python. Fails the test with instructions when it is missing.
pub fn python() -> PathBuf {
    let p = nanogate_tests::workspace_root().join(".venv/bin/python");
    assert!(p.exists(), "{} not found: {RUN_XTASK}", p.display());
    p
}

/// A console script of the venv (e.g. `kubernetes-validate`).
pub fn venv_bin(name: &str) -> PathBuf {
    let p = nanogate_tests::workspace_root()
        .join(".venv/bin")
        .join(name);
    assert!(p.exists(), "{} not found: {RUN_XTASK}", p.display());
    p
}

/// Runs a Python snippet in the venv with `args`; returns stdout, or panics with stderr.
pub fn run_python(code: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the venv python: {e} ({RUN_XTASK})"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python failed ({}): {stderr}\nif a module is missing: {RUN_XTASK}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const YAML_TO_JSON: &str = "import json, sys, yaml\n\
text = open(sys.argv[1], encoding='utf-8').read()\n\
docs = [d for d in yaml.safe_load_all(text) if d is not None]\n\
json.dump(docs, sys.stdout)\n";

/// Every YAML document of `path`, as JSON values.
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = run_python(YAML_TO_JSON, &[&path.display().to_string()]);
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(docs)) => docs,
        other => panic!("{}: unexpected YAML conversion: {other:?}", path.display()),
    }
}

/// The single YAML document of `envoy/istio/<name>`.
pub fn manifest(name: &str) -> Value {
    let path = istio_dir().join(name);
    let mut docs = yaml_docs(&path);
    assert_eq!(docs.len(), 1, "{} holds one object", path.display());
    docs.remove(0)
}

/// The shipped WasmPlugins: (file, object).
pub const WASMPLUGINS: [&str; 2] = ["wasmplugin-gateway.yaml", "wasmplugin-workload.yaml"];

/// The placeholders the operator must replace (docs/istio.md), as shipped.
pub const PAY_TO_PLACEHOLDER: &str = "nano_REPLACE_with_your_nano_account";
pub const SECRET_PLACEHOLDER: &str = "REPLACE-with-the-filter-secret";
/// Matches no image, so Istio refuses the module until the operator sets the real digest.
pub const SHA256_PLACEHOLDER: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Istio's name for the outbound cluster of a Service port: `outbound|PORT||HOST`.
pub fn istio_cluster_name(port: u64, service: &str, namespace: &str) -> String {
    format!("outbound|{port}||{service}.{namespace}.svc.cluster.local")
}
