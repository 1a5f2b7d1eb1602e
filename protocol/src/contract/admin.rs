//! The operator's API: `GET /v1/admin/payments` (bearer token), one page of the payment ledger;
//! `GET /readyz`; and the error body every sidecar endpoint answers with outside a verdict.

use serde::{Deserialize, Serialize};

/// One payment of the ledger, as `GET /v1/admin/payments` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRow {
    /// The block hash.
    pub hash: String,
    /// `nano_` address.
    pub payer: String,
    /// `nano_` address (empty for rows from before the ledger kept it).
    pub pay_to: String,
    /// Raw, decimal.
    pub amount: String,
    /// `admitted`, `served`, `redeemable` or `owed`.
    pub state: String,
    /// Why it is owed (or otherwise annotated); `null` when nothing to say.
    pub reason: Option<String>,
    /// [`super::Mechanism::ledger_name`].
    pub mechanism: String,
    /// The resource (signed block) or route scope (tagged) it was paid for.
    pub resource: String,
    /// Unix seconds.
    pub settled_at: i64,
    pub updated_at: i64,
    pub redemptions: i64,
}

/// `GET /v1/admin/payments` answer: oldest settlement first; `next` is the cursor of the next
/// page, `null` at the end.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PaymentsPage {
    pub payments: Vec<PaymentRow>,
    pub next: Option<String>,
}

/// One (day, route, payee) group of `GET /v1/admin/revenue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevenueRow {
    /// UTC day of the settlements, `YYYY-MM-DD`.
    pub day: String,
    /// The resource (signed block) or route scope (tagged) paid for.
    pub route: String,
    /// `nano_` address (empty for rows from before the ledger kept it).
    pub pay_to: String,
    pub count: u64,
    /// Raw, decimal.
    pub raw: String,
    /// The same amount in XNO (decimal, exact).
    pub xno: String,
}

/// `GET /v1/admin/revenue?state=&since=&until=` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevenueAnswer {
    /// The state summed (`served` unless asked otherwise).
    pub state: String,
    /// Ordered by day, route, payee.
    pub rows: Vec<RevenueRow>,
    /// Count and raw sum of every row.
    pub count: u64,
    pub raw: String,
    pub xno: String,
}

/// Count and sum of the payments in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateTotalRow {
    pub state: String,
    pub count: u64,
    pub raw: String,
    pub xno: String,
}

/// Tagged-session pool usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    /// Pool accounts with at least one session still open.
    pub accounts_in_use: u64,
}

/// `GET /v1/admin/overview` answer: what the dashboard's header shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// The sidecar's network (`nano:…`).
    pub network: String,
    /// `sqlite` or `postgres`.
    pub store_kind: String,
    /// Readiness as `/readyz` reports it.
    pub health: ReadyBody,
    /// Per state (states without payments left out).
    pub payments: Vec<StateTotalRow>,
    pub pools: PoolUsage,
    /// Unix seconds at the sidecar.
    pub now: i64,
}

/// `GET /readyz` answer (200 when `ready`, else 503): which dependency answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyBody {
    pub ready: bool,
    /// The store answered.
    pub store: bool,
    /// A node answered `version` with the configured network.
    pub ledger: bool,
}

/// The body of a sidecar error answer (401, 400, 403, 503, …): human text, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_reads_and_writes_as_the_sidecar_always_wrote_it() {
        let sent = json!({"payments": [{"hash": "AB", "payer": "nano_p", "payTo": "nano_q",
            "amount": "1", "state": "owed", "reason": null, "mechanism": "tagged",
            "resource": "r", "settledAt": 1, "updatedAt": 2, "redemptions": 0}], "next": null});
        let page: PaymentsPage = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(page.payments[0].pay_to, "nano_q");
        assert_eq!(serde_json::to_value(&page).unwrap(), sent);
        let r = ReadyBody {
            ready: false,
            store: true,
            ledger: false,
        };
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            json!({"ready": false, "store": true, "ledger": false})
        );
        let e = ErrorBody {
            error: "missing or wrong credential".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":"missing or wrong credential"}"#
        );
    }
}
