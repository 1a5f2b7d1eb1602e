//! Shared, I/O-free building blocks of nanogate: Nano (XNO) primitives, the x402 wire format,
//! the challenge binding that lets the filter issue challenges the sidecar can trust, and the
//! filter ↔ sidecar contract ([`contract`]).
//!
//! Everything here builds for `wasm32-wasip1` (the filter) and natively (sidecar, devnet,
//! client), so both ends agree byte for byte.

pub mod challenge;
pub mod contract;
pub mod hex;
pub mod nano;
pub mod x402;
