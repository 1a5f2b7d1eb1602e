//! Integration tests of the devnet through its RPC and WebSocket ports.

mod chain_ws;
mod common;
mod concurrency;
mod faults;
mod rules;
mod state;
mod transcript;
