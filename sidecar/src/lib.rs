//! nanogate sidecar: the payment authority behind the Envoy filter. It issues challenge keys,
//! verifies and settles x402 signed-block payments in Nano (XNO), keeps the session registry,
//! fork set and the payment ledger (docs/payments.md) in a durable store, and serves the filter API, the x402
//! facilitator API, health, readiness and metrics. See sidecar/README.md.

pub mod admin_cli;
pub mod api;
pub mod build_info;
pub mod calendar;
pub mod config;
pub mod engine;
pub mod error;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod passes;
pub mod readiness;
pub mod server;
pub mod state;
pub mod store;
pub mod wallet;
