//! nanogate's Envoy filter: x402 (HTTP 402) challenges and payment admission settled in Nano.
//!
//! The decisions live in plain modules that run natively in tests; [`wasm`] only translates
//! between them and proxy-wasm (through the [`host`] traits), and nothing below [`flow`] imports
//! it. Bottom up:
//!
//! - codecs and settings: [`jsontext`], [`pathre`], [`canonical`], [`routes`] (matchers),
//!   [`template`] (the pre-rendered 402), [`keys`], [`metrics`], [`config`];
//! - offers: [`challenge`] issues them, [`presented`] checks the one a payment echoes;
//! - sessions of tagged routes: [`pool`] (in shared data), [`refill`] (from the sidecar);
//! - the sidecar exchange: [`sidecar`]; keeping the challenge key: [`keeper`]; outcome reports,
//!   batched per VM: [`outcomes`];
//! - prepaid passes: [`passbook`] (checked and counted at the edge, reported on the tick);
//! - a request: [`router`] picks the route, [`flow`] decides, [`respond`] sends local replies
//!   ([`paywall`] for browsers).
//!
//! The filter never panics on input: a panic would trap the VM that serves every request on
//! its worker.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// The workspace's `unwrap_used` lint holds for the module; tests may unwrap (the lib target
// is linted without `cfg(test)`, so this relaxes test code only).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod canonical;
pub mod challenge;
pub mod config;
pub mod discovery;
pub mod flow;
pub mod host;
pub mod jsontext;
pub mod keeper;
pub mod keys;
pub mod metrics;
pub mod outcomes;
pub mod passbook;
pub mod pathre;
pub mod paywall;
pub mod pool;
pub mod presented;
pub mod refill;
pub mod respond;
pub mod router;
pub mod routes;
pub mod sidecar;
pub mod template;
pub mod wasm;
pub mod well_known;

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod tests_support;
