//! The Nano networks we know: their genesis, work thresholds and x402 network ids.

use super::work::WorkThresholds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    Live,
    Beta,
    Dev,
    Test,
}

impl Network {
    /// The name nano-node's `version` RPC reports in `network`.
    pub fn rpc_name(self) -> &'static str {
        match self {
            Network::Live => "live",
            Network::Beta => "beta",
            Network::Dev => "dev",
            Network::Test => "test",
        }
    }

    pub fn from_rpc_name(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Network::Live),
            "beta" => Some(Network::Beta),
            "dev" => Some(Network::Dev),
            "test" => Some(Network::Test),
            _ => None,
        }
    }

    pub fn thresholds(self) -> WorkThresholds {
        match self {
            Network::Live | Network::Test => WorkThresholds::LIVE,
            Network::Beta => WorkThresholds::BETA,
            Network::Dev => WorkThresholds::DEV,
        }
    }

    /// The genesis block hash, which the node reports as `network_identifier`.
    pub fn genesis_hash(self) -> Option<&'static str> {
        match self {
            Network::Live => Some(LIVE_GENESIS_HASH),
            Network::Dev => Some(DEV_GENESIS_HASH),
            Network::Beta | Network::Test => None,
        }
    }
}

pub const LIVE_GENESIS_HASH: &str =
    "991CF190094C00F0B68E2E5F75F6BEE95A2E0BD93CEAA4A6734DB9F19B728948";
pub const DEV_GENESIS_HASH: &str =
    "04270D7F11C4B2B472F2854C5A59F2A7E84226CE9ED799DE75744BD7D85FC9D9";
/// Public knowledge, valid on the dev network only: never fund it elsewhere.
pub const DEV_GENESIS_PRIVATE_KEY: &str =
    "34F0A37AAD20F4A260F0A5B3CB3D7FB50673212263E58A380BC10474BB039CE4";
pub const DEV_GENESIS_ACCOUNT: &str =
    "nano_3e3j5tkog48pnny9dmfzj1r16pg8t1e76dz5tmac6iq689wyjfpiij4txtdo";
/// Work of the dev genesis (legacy open) block.
pub const DEV_GENESIS_WORK: u64 = 0x7b42a00ee91d5810;
/// The dev genesis signature (over the legacy open hash).
pub const DEV_GENESIS_SIGNATURE: &str = "ECDA914373A2F0CA1296475BAEE40500A7F0A7AD72A5A80C81D7FAB7F6C802B2CC7DB50F5DD0FB25B2EF11761FA7344A158DD5A700B21BD47DE5BD0F63153A02";

/// x402 CAIP-2 id for mainnet (OpenRai ORIS-006).
pub const X402_MAINNET: &str = "nano:mainnet";
/// This project's non-standard id for a local dev ledger.
pub const X402_DEVNET: &str = "nano:devnet";
