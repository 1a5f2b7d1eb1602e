//! Every way paying for a request can fail, typed so callers (the CLI, the end-to-end tests)
//! can tell "we refused to pay" from "the server refused our payment" from "the ledger is
//! unreachable".

use nanogate_protocol::nano::format_xno;
use thiserror::Error;

use crate::rpc::RpcError;

/// Why [`crate::Payer::fetch`] did not produce a response.
#[derive(Debug, Error)]
pub enum PayError {
    /// The cheapest usable offer costs more than the configured maximum. Nothing was signed.
    #[error(
        "refusing to pay {} XNO: over the maximum of {} XNO (raise it with --max)",
        format_xno(*price),
        format_xno(*max)
    )]
    OverMax { price: u128, max: u128 },

    /// The 402 offered nothing this client can pay (signed Nano send, `exact`, XNO).
    #[error("no usable offer in the 402: {}", reasons.join("; "))]
    NoUsableOffer { reasons: Vec<String> },

    /// `--pass NAME`: the 402 offers no pass of that name. Nothing was signed.
    #[error("{}", pass_not_offered(name, offered, skipped))]
    PassNotOffered {
        name: String,
        /// The passes that are offered, described (`hour (0.01 XNO, 3600 s, group api)`).
        offered: Vec<String>,
        /// Pass offers skipped as malformed or unpayable, with why.
        skipped: Vec<String>,
    },

    /// The server refused a pass token we held for a reason that no new purchase fixes on
    /// its own (revoked, forged, unreadable, or minted under a key the proxy lacks).
    #[error(
        "the server refused pass `{name}` (id {id}): {reason}{}",
        if *forgotten { "; it is removed from the journal, and the next run buys a new one" }
        else { "; it stays in the journal (try again shortly)" }
    )]
    PassRefused {
        name: String,
        /// The pass's fingerprint ([`crate::PassEntry::fingerprint`]), never the token.
        id: String,
        reason: String,
        /// Whether the token was dropped from the journal.
        forgotten: bool,
    },

    /// The 402 could not be read at all (bad base64, bad JSON, no challenge anywhere).
    #[error("malformed 402 challenge: {0}")]
    MalformedChallenge(String),

    /// The payer's account has no blocks yet.
    #[error("account {account} is not opened on the ledger (no funds): receive a payment first")]
    AccountNotOpened { account: String },

    /// The payer's balance cannot cover the price.
    #[error(
        "insufficient funds in {account}: balance {} XNO, price {} XNO",
        format_xno(*balance),
        format_xno(*amount)
    )]
    InsufficientFunds {
        account: String,
        balance: u128,
        amount: u128,
    },

    /// The node we would pay through is on another network than the offer.
    #[error(
        "network mismatch: the offer is for {offer}, but the node at the RPC URL is on `{node}`"
    )]
    NetworkMismatch { offer: String, node: String },

    /// A node RPC call failed (unreachable, refused, or an answer we cannot read).
    #[error("ledger: {0}")]
    Ledger(#[from] RpcError),

    /// The server refused our payment (and, for a fresh payment, nothing on the ledger says
    /// it was spent). The payment stays journalled: the next attempt re-presents it and asks
    /// the ledger what happened.
    #[error("the server refused the payment{}: {reason}", hash_suffix(hash))]
    Refused {
        reason: String,
        status: u16,
        hash: Option<String>,
    },

    /// The journalled block is confirmed on the ledger (we paid) but the server refuses it.
    /// We do not pay twice: take the hash to the operator.
    #[error(
        "already paid: block {hash} ({} XNO to {pay_to}) is confirmed on the ledger, but the \
         server refuses it ({reason}); not paying again — show this hash to the operator",
        format_xno(*amount)
    )]
    PaidButRefused {
        hash: String,
        amount: u128,
        pay_to: String,
        reason: String,
    },

    /// The journalled block is on the ledger but not confirmed yet: paying anew could pay
    /// twice, so we stop and let the caller retry later.
    #[error(
        "block {hash} is published but not yet confirmed and the server refuses it ({reason}); \
         not paying again — retry later"
    )]
    PaymentPending { hash: String, reason: String },

    /// The request (or the paid retry) got no complete answer. A signed payment stays
    /// journalled, so retrying re-presents it instead of paying again.
    #[error("HTTP: {message}{}", journal_note(hash))]
    Http {
        message: String,
        /// The journalled block, when the failure happened after we signed.
        hash: Option<String>,
    },

    /// The journal file could not be read or written.
    #[error("journal {path}: {message}")]
    Journal { path: String, message: String },

    /// The request itself is unusable (bad URL, header or method).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

fn pass_not_offered(name: &str, offered: &[String], skipped: &[String]) -> String {
    let mut m = if offered.is_empty() {
        format!("no pass `{name}`: the server offers no pass here")
    } else {
        format!("no pass `{name}`: the server offers {}", offered.join(", "))
    };
    if !skipped.is_empty() {
        m.push_str(&format!(" (skipped: {})", skipped.join("; ")));
    }
    m
}

fn hash_suffix(hash: &Option<String>) -> String {
    hash.as_ref()
        .map(|h| format!(" (block {h})"))
        .unwrap_or_default()
}

fn journal_note(hash: &Option<String>) -> String {
    hash.as_ref()
        .map(|h| {
            format!(
                " — payment {h} is journalled; retry the same request to re-present it \
                 (it will not be paid twice)"
            )
        })
        .unwrap_or_default()
}

impl PayError {
    /// A short stable name, for `--json` output and scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            PayError::OverMax { .. } => "over_max",
            PayError::NoUsableOffer { .. } => "no_usable_offer",
            PayError::PassNotOffered { .. } => "pass_not_offered",
            PayError::PassRefused { .. } => "pass_refused",
            PayError::MalformedChallenge(_) => "malformed_challenge",
            PayError::AccountNotOpened { .. } => "account_not_opened",
            PayError::InsufficientFunds { .. } => "insufficient_funds",
            PayError::NetworkMismatch { .. } => "network_mismatch",
            PayError::Ledger(_) => "ledger",
            PayError::Refused { .. } => "refused",
            PayError::PaidButRefused { .. } => "paid_but_refused",
            PayError::PaymentPending { .. } => "payment_pending",
            PayError::Http { .. } => "http",
            PayError::Journal { .. } => "journal",
            PayError::InvalidRequest(_) => "invalid_request",
        }
    }

    /// The block hash this error is about, if a payment was signed.
    pub fn block_hash(&self) -> Option<&str> {
        match self {
            PayError::PaidButRefused { hash, .. } | PayError::PaymentPending { hash, .. } => {
                Some(hash)
            }
            PayError::Refused { hash, .. } | PayError::Http { hash, .. } => hash.as_deref(),
            _ => None,
        }
    }
}
