//! Integration tests of the devnet through its RPC and WebSocket ports.

mod common;
mod rules;
