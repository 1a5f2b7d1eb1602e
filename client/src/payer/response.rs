//! What the caller gets back: the final response, the payment presented, and the receipt.

use nanogate_protocol::nano::format_xno;
use nanogate_protocol::x402::SettlementResponse;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::http::RawResponse;
use crate::journal::PassEntry;

/// What we paid, when we paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentInfo {
    /// The block hash (upper-case hex).
    pub hash: String,
    pub amount_raw: u128,
    pub network: String,
    pub pay_to: String,
    pub payer: String,
    /// True when this was a journalled payment presented again, not a new one.
    pub re_presented: bool,
}

/// The prepaid pass a request went on (`--pass`): bought with it, or presented. Never holds
/// the token itself, only its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassUse {
    pub name: String,
    pub group: String,
    /// The pass's fingerprint ([`crate::PassEntry::fingerprint`]: its id), never the token.
    pub id: String,
    /// Unix seconds, when known.
    pub expires_at: Option<u64>,
    /// Requests granted, for a counted pass.
    pub requests: Option<u64>,
    /// True when this request bought it; false when a held pass was presented.
    pub bought: bool,
}

impl PassUse {
    pub fn of(entry: &PassEntry, bought: bool) -> Self {
        PassUse {
            name: entry.name.clone(),
            group: entry.group.clone(),
            id: entry.fingerprint(),
            expires_at: entry.expires_at,
            requests: entry.requests,
            bought,
        }
    }

    /// As `--json` prints it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "group": self.group,
            "id": self.id,
            "expiresAt": self.expires_at,
            "requests": self.requests,
            "bought": self.bought,
        })
    }
}

/// The final response.
#[derive(Debug, Clone)]
pub struct PaidResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// `PAYMENT-RESPONSE` (or `X-PAYMENT-RESPONSE`), when present and readable.
    pub receipt: Option<SettlementResponse>,
    /// A payment was presented and the server served the request (2xx) or settled it.
    pub paid: bool,
    /// The payment presented, if any.
    pub payment: Option<PaymentInfo>,
    /// Whether the receipt names our block (false when there is no receipt).
    pub receipt_matches: bool,
    /// The pass this request bought or went on (`--pass`).
    pub pass: Option<PassUse>,
}

impl PaidResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// An answer to a request that carried no payment (anything but a 402).
    pub(super) fn unpaid(resp: RawResponse) -> Self {
        PaidResponse {
            status: resp.status,
            receipt: resp.receipt().and_then(Result::ok),
            headers: resp.headers,
            body: resp.body,
            paid: false,
            payment: None,
            receipt_matches: false,
            pass: None,
        }
    }

    /// An answer to a request that carried a pass token (anything but a refusal).
    pub(super) fn on_pass(resp: RawResponse, pass: PassUse) -> Self {
        PaidResponse {
            pass: Some(pass),
            ..PaidResponse::unpaid(resp)
        }
    }

    /// The answer to a paid retry the server did not refuse.
    pub(super) fn paid(
        resp: RawResponse,
        receipt: Option<SettlementResponse>,
        payment: PaymentInfo,
        receipt_matches: bool,
    ) -> Self {
        PaidResponse {
            paid: resp.is_success() || receipt.as_ref().is_some_and(|r| r.success),
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
            receipt,
            payment: Some(payment),
            receipt_matches,
            pass: None,
        }
    }
}

/// Whether a receipt reports success for one of `ours` (block hashes, any case).
pub(super) fn names_ours(receipt: Option<&SettlementResponse>, ours: &[String]) -> bool {
    receipt.is_some_and(|r| r.success && ours.iter().any(|h| r.transaction.eq_ignore_ascii_case(h)))
}

/// The receipt as the CLI's `--json` prints it.
pub fn receipt_json(resp: &PaidResponse) -> Value {
    let Some(p) = &resp.payment else {
        return Value::Null;
    };
    let r = resp.receipt.as_ref();
    json!({
        "transaction": r.map(|r| r.transaction.clone()).filter(|t| !t.is_empty()).unwrap_or_else(|| p.hash.clone()),
        "payer": r.and_then(|r| r.payer.clone()).unwrap_or_else(|| p.payer.clone()),
        "network": r.map(|r| r.network.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| p.network.clone()),
        "amountRaw": p.amount_raw.to_string(),
        "amountXno": format_xno(p.amount_raw),
        "payTo": p.pay_to,
        "success": r.map(|r| r.success),
        "matchesOurBlock": resp.receipt_matches,
        "rePresented": p.re_presented,
    })
}
