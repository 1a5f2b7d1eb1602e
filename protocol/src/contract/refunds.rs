//! The operator's refund and pocketing API (bearer token; docs/refunds.md): paying owed
//! payments back, recording a refund the operator's wallet sent, and receiving what was sent
//! to the payee and pool accounts.

use serde::{Deserialize, Serialize};

/// `POST /v1/admin/refunds` body: which owed payments to refund (block hashes); empty = every
/// owed payment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RefundRequest {
    #[serde(default)]
    pub payments: Vec<String>,
}

/// What happened to one payment's refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRow {
    /// The owed payment (its block hash).
    pub payment: String,
    /// `nano_` address the refund goes to (the payer).
    pub payer: String,
    /// `nano_` address it is sent from (the payee).
    pub pay_to: String,
    /// Raw, decimal.
    pub amount: String,
    /// The payment's state after the call: `refunded` (confirmed), `refunding` (signed,
    /// recorded and published; confirmation pending: the sidecar finishes it), `owed` (nothing
    /// sent: pay `uri` from a wallet holding the payee account, then mark it refunded).
    pub state: String,
    /// The refund's send block, once one exists.
    pub block: Option<String>,
    /// `nano:<payer>?amount=<raw>` for any wallet, when the sidecar did not send it.
    pub uri: Option<String>,
    /// Why it was not refunded now (`null` when it was).
    pub error: Option<String>,
}

/// `POST /v1/admin/refunds` answer. `signing`: the sidecar holds a payee key and sends the
/// refunds itself; otherwise every row carries a `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RefundsAnswer {
    pub signing: bool,
    pub refunds: Vec<RefundRow>,
}

/// `POST /v1/admin/refunds/mark` body: the owed payment and the block hash of the send the
/// operator's wallet made. The sidecar checks the block on the ledger before recording it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkRefundedRequest {
    pub payment: String,
    pub block: String,
}

/// One account's receivable sends (confirmed, not yet received).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivableRow {
    /// `nano_` address (a payee or pool account the sidecar follows).
    pub account: String,
    /// Raw, decimal.
    pub receivable: String,
    /// How many sends.
    pub count: u64,
    /// The sidecar holds this account's key (and pockets it).
    pub pocketed_here: bool,
}

/// `GET /v1/admin/receivable` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReceivableAnswer {
    pub accounts: Vec<ReceivableRow>,
}

/// `POST /v1/admin/pocket` answer: the receive blocks published, per account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PocketAnswer {
    pub received: Vec<PocketRow>,
    /// Accounts that could not be pocketed, with the reason.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PocketRow {
    pub account: String,
    /// The send received.
    pub send: String,
    /// The receive (or open) block published.
    pub block: String,
    /// Raw, decimal.
    pub amount: String,
}

/// `POST /v1/admin/sweep` answer: what each pool account sent to the treasury.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SweepAnswer {
    pub swept: Vec<SweepRow>,
    /// Accounts not swept, with the reason.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRow {
    pub account: String,
    /// The send to the treasury.
    pub block: String,
    /// Raw sent, decimal.
    pub amount: String,
    /// Raw left in the account: what it still owes (its refunds).
    pub kept: String,
}

/// The `nano:` URI any wallet pays: the payer's address and the amount in raw.
pub fn refund_uri(payer: &str, amount_raw: &str) -> String {
    format!("nano:{payer}?amount={amount_raw}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_read_and_write_in_camel_case() {
        let r: RefundRequest = serde_json::from_value(json!({})).unwrap();
        assert!(r.payments.is_empty());
        let row = RefundRow {
            payment: "AB".into(),
            payer: "nano_p".into(),
            pay_to: "nano_q".into(),
            amount: "5".into(),
            state: "owed".into(),
            block: None,
            uri: Some(refund_uri("nano_p", "5")),
            error: None,
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            json!({"payment": "AB", "payer": "nano_p", "payTo": "nano_q", "amount": "5",
                   "state": "owed", "block": null, "uri": "nano:nano_p?amount=5", "error": null})
        );
    }
}
