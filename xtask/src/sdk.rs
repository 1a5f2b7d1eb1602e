//! The Nano client schemes for the official x402 SDKs (`sdk/python`, `sdk/typescript`): their
//! pinned dependencies, installed into git-ignored folders (`sdk/python/.venv`,
//! `sdk/typescript/node_modules`), their own tests, and the paths the interop tests
//! (tests/tests/sdk_interop.rs) run them from.

use crate::setup::{root, run};
use std::path::PathBuf;
use std::process::Command;

/// The official Python SDK and what the interop tests run it with, every package pinned
/// (`pip freeze` of a fresh install, so a new release of a dependency cannot change the run).
pub const PYTHON_PINS: &[&str] = &[
    "x402==2.25.0",
    "x402-nano-exact==0.1.2",
    "fastapi==0.165.0",
    "uvicorn==0.55.0",
    "httpx==0.29.0",
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "certifi==2026.10.19.post1",
    "click==8.5.1",
    "h11==0.16.0",
    "httpcore==1.0.9",
    "idna==3.21",
    "nest-asyncio==1.6.0",
    "opentelemetry-api==1.45.3",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "starlette==1.10.0",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
];

/// Where the SDK tools live once [`install`] ran.
pub struct SdkTools {
    /// The venv's Python, with [`PYTHON_PINS`] and `sdk/python/src` importable.
    pub python: PathBuf,
    /// `sdk/typescript`, built (`dist/`) with its locked `node_modules`.
    pub typescript: PathBuf,
}

fn python_dir() -> PathBuf {
    root().join("sdk/python")
}

fn typescript_dir() -> PathBuf {
    root().join("sdk/typescript")
}

/// Installs both SDKs' pinned dependencies when missing or stale, and builds the TypeScript
/// package.
pub fn install() -> Result<SdkTools, String> {
    let python = python_venv()?;
    let typescript = typescript_dir();
    // `npm ci` installs exactly package-lock.json; it is skipped when the lock is unchanged.
    let lock = std::fs::read(typescript.join("package-lock.json"))
        .map_err(|e| format!("sdk/typescript/package-lock.json: {e}"))?;
    let marker = typescript.join("node_modules/.nanogate-lock");
    if std::fs::read(&marker).ok().as_deref() != Some(&lock[..]) {
        run(Command::new("npm")
            .current_dir(&typescript)
            .args(["ci", "--no-audit", "--no-fund"]))?;
        std::fs::write(&marker, &lock).map_err(|e| format!("writing {marker:?}: {e}"))?;
    }
    run(Command::new("npm")
        .current_dir(&typescript)
        .args(["run", "build"]))?;
    Ok(SdkTools { python, typescript })
}

/// `sdk/python/.venv` with [`PYTHON_PINS`]; returns its Python.
fn python_venv() -> Result<PathBuf, String> {
    let venv = python_dir().join(".venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".nanogate-pins");
    let want = PYTHON_PINS.join(" ");
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == want) && python.exists() {
        return Ok(python);
    }
    if !python.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_PINS))?;
    std::fs::write(&marker, &want).map_err(|e| format!("writing {marker:?}: {e}"))?;
    Ok(python)
}

/// The packages' own tests (against tests/vectors/).
pub fn test(tools: &SdkTools) -> Result<(), String> {
    run(Command::new(&tools.python)
        .current_dir(python_dir())
        .env("PYTHONPATH", python_dir().join("src"))
        .args(["-m", "unittest", "discover", "-s", "tests", "-v"]))?;
    run(Command::new("npm")
        .current_dir(&tools.typescript)
        .args(["test"]))
}
