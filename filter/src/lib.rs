//! nanogate's Envoy filter: x402 (HTTP 402) challenges and payment admission settled in Nano.
//!
//! The decisions live in plain modules that run natively in tests ([`config`], [`routes`] + [`canonical`],
//! [`challenge`], [`flow`], [`keeper`], [`sidecar`]); [`wasm`] only translates between them and
//! proxy-wasm (Kuadrant wasm-shim style). The filter never panics on input: a panic would trap
//! the VM that serves every request on its worker.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod canonical;
pub mod challenge;
pub mod config;
pub mod flow;
pub mod keeper;
pub mod keys;
pub mod metrics;
pub mod pathre;
pub mod paywall;
pub mod routes;
pub mod sidecar;
pub mod tagged;
pub mod wasm;

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod tests_support;
