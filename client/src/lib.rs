//! nanogate-client: pay for HTTP APIs that answer x402 `402 Payment Required` with Nano (XNO).
//!
//! [`Payer::fetch`] requests a URL; on a 402 it picks a usable offer (`exact`, `XNO`, a
//! `nano:` network, the signed-block mechanism), refuses anything over the configured maximum,
//! signs a send block on the payer's frontier (work from the node, or computed locally),
//! journals it, retries with `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1), and returns the
//! response with its `PAYMENT-RESPONSE` receipt. A retry after a lost response re-presents the
//! journalled block instead of paying twice (see [`payer`]).
//!
//! Lower-level pieces ([`build_payment`], [`build_send_block`], [`select_offer`],
//! [`parse_challenge`]) are public so hostile tests can craft and mutate payments.

pub mod error;
pub mod journal;
pub mod offer;
pub mod pass;
pub mod payer;
pub mod payment;
pub mod rpc;

pub use error::PayError;
pub use journal::{journal_key, origin_of, Journal, JournalEntry, PassEntry};
pub use offer::{
    parse_challenge, select_offer, thresholds_for_network, usable_offer, Challenge,
    ChallengeVersion, Offer,
};
pub use payer::{
    choose_thresholds, receipt_json, tagged_header, tagged_offer, tagged_pass_offer, Mechanism,
    PaidResponse, PassUse, Payer, PayerConfig, PaymentInfo, Progress, ProgressFn, RequestSpec,
    DEFAULT_MAX_RAW, DEFAULT_RPC_URL,
};
pub use payment::{build_payment, build_send_block, SignedPayment};
pub use rpc::{AccountInfo, AccountState, BlockStatus, NodeRpc, RpcError};
