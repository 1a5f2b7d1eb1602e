//! Money conservation: every send that reached one of our accounts on the ledger is in exactly
//! one payment state (`served`, `redeemable` or `owed`; none left `admitted`), to the raw.
//!
//! The sidecar's payment ledger is read through [`fetch_payments`] (`GET /v1/admin/payments`,
//! paged) and [`parse_page`]: the only places that know the API's field names.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// One payment as the sidecar's payment ledger lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    /// Block hash, upper-case hex.
    pub hash: String,
    pub payer: String,
    pub pay_to: String,
    pub amount: u128,
    /// `admitted`, `served`, `redeemable` or `owed`.
    pub state: String,
    pub reason: Option<String>,
    pub mechanism: Option<String>,
    pub resource: Option<String>,
}

impl PaymentRow {
    /// What it paid for, for messages.
    pub fn resource_or_mechanism(&self) -> &str {
        self.resource
            .as_deref()
            .or(self.mechanism.as_deref())
            .unwrap_or("?")
    }
}

/// The states a payment may end in.
pub const FINAL_STATES: [&str; 3] = ["served", "redeemable", "owed"];

#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "GET {url} answered HTTP {status}: {body}{hint}",
        hint = if *status == 404 { " (the sidecar has no payment ledger API: every payment's state cannot be read)" } else { "" }
    )]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the payments page is not what was expected: {0}")]
    Shape(String),
    #[error("the payments API pages more than {0} times (a cursor loop?)")]
    TooManyPages(usize),
}

/// One page of `GET /v1/admin/payments`: its rows and the cursor of the next page.
pub fn parse_page(page: &Value) -> Result<(Vec<PaymentRow>, Option<String>), AccountingError> {
    let rows = page
        .get("payments")
        .and_then(Value::as_array)
        .ok_or_else(|| AccountingError::Shape("no `payments` array".into()))?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
        let need = |k: &str| {
            text(k).ok_or_else(|| AccountingError::Shape(format!("payments[{i}] has no `{k}`")))
        };
        let amount = need("amount")?;
        out.push(PaymentRow {
            hash: need("hash")?.to_ascii_uppercase(),
            payer: text("payer").unwrap_or_default(),
            pay_to: need("payTo")?,
            amount: amount.parse().map_err(|_| {
                AccountingError::Shape(format!("payments[{i}].amount `{amount}` is not raw"))
            })?,
            state: need("state")?,
            reason: text("reason"),
            mechanism: text("mechanism"),
            resource: text("resource"),
        });
    }
    let next = match page.get("next") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.is_empty() => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(other) => return Err(AccountingError::Shape(format!("`next` is {other}"))),
    };
    Ok((out, next))
}

/// Every payment the sidecar at `base` (e.g. `http://127.0.0.1:8402`) knows, all pages.
pub async fn fetch_payments(base: &str, token: &str) -> Result<Vec<PaymentRow>, AccountingError> {
    const MAX_PAGES: usize = 1000;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|source| AccountingError::Http {
            url: base.to_owned(),
            source,
        })?;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let url = format!("{base}/v1/admin/payments");
        let mut req = client
            .get(&url)
            .bearer_auth(token)
            .query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let resp = req.send().await.map_err(|source| AccountingError::Http {
            url: url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|source| AccountingError::Http {
            url: url.clone(),
            source,
        })?;
        if status != 200 {
            let body: String = body.chars().take(300).collect();
            return Err(AccountingError::Status { url, status, body });
        }
        let page: Value = serde_json::from_str(&body)
            .map_err(|e| AccountingError::Shape(format!("not JSON: {e}")))?;
        let (rows, next) = parse_page(&page)?;
        all.extend(rows);
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok(all),
        }
    }
    Err(AccountingError::TooManyPages(MAX_PAGES))
}

/// A confirmed send that reached one of our accounts, from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSend {
    pub hash: String,
    pub amount: u128,
    pub from: String,
}

/// Count and raw sum per state.
pub type Totals = BTreeMap<String, (usize, u128)>;

/// What the comparison of the ledger with the payment ledger found.
#[derive(Debug, Default)]
pub struct Conservation {
    pub ledger_count: usize,
    pub ledger_raw: u128,
    pub by_state: Totals,
    /// On the ledger, missing from the payment ledger (lost payments).
    pub missing: Vec<LedgerSend>,
    /// In the payment ledger, not a confirmed send to our accounts on the ledger.
    pub unknown: Vec<PaymentRow>,
    /// Listed more than once.
    pub duplicates: Vec<String>,
    /// Listed with another amount than the ledger's.
    pub amount_mismatches: Vec<(String, u128, u128)>,
    /// In a state other than the final ones (e.g. still `admitted`).
    pub not_final: Vec<PaymentRow>,
}

impl Conservation {
    /// served + redeemable + owed, raw.
    pub fn accounted_raw(&self) -> u128 {
        FINAL_STATES
            .iter()
            .filter_map(|s| self.by_state.get(*s))
            .map(|(_, raw)| *raw)
            .sum()
    }

    pub fn holds(&self) -> bool {
        self.missing.is_empty()
            && self.unknown.is_empty()
            && self.duplicates.is_empty()
            && self.amount_mismatches.is_empty()
            && self.not_final.is_empty()
            && self.accounted_raw() == self.ledger_raw
    }

    /// Human lines saying what does not add up (empty when it holds).
    pub fn problems(&self) -> Vec<String> {
        fn few<T: std::fmt::Debug>(v: &[T]) -> String {
            let shown: Vec<String> = v.iter().take(5).map(|x| format!("{x:?}")).collect();
            let more = v.len().saturating_sub(5);
            if more > 0 {
                format!("{} … and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            }
        }
        let mut p = Vec::new();
        if self.accounted_raw() != self.ledger_raw {
            p.push(format!(
                "ledger sends {} raw ≠ served + redeemable + owed {} raw",
                self.ledger_raw,
                self.accounted_raw()
            ));
        }
        if !self.missing.is_empty() {
            p.push(format!(
                "{} send(s) on the ledger are in no payment state: {}",
                self.missing.len(),
                few(&self.missing)
            ));
        }
        if !self.not_final.is_empty() {
            p.push(format!(
                "{} payment(s) not in a final state: {}",
                self.not_final.len(),
                few(&self.not_final)
            ));
        }
        if !self.unknown.is_empty() {
            p.push(format!(
                "{} listed payment(s) are no confirmed send to our accounts: {}",
                self.unknown.len(),
                few(&self.unknown)
            ));
        }
        if !self.duplicates.is_empty() {
            p.push(format!(
                "{} payment(s) listed twice: {}",
                self.duplicates.len(),
                few(&self.duplicates)
            ));
        }
        if !self.amount_mismatches.is_empty() {
            p.push(format!(
                "{} payment(s) listed with another amount (hash, listed, ledger): {}",
                self.amount_mismatches.len(),
                few(&self.amount_mismatches)
            ));
        }
        p
    }
}

/// Compares the ledger's sends to our accounts with the payment ledger's rows.
pub fn conservation(sends: &[LedgerSend], rows: &[PaymentRow]) -> Conservation {
    let mut c = Conservation {
        ledger_count: sends.len(),
        ledger_raw: sends.iter().map(|s| s.amount).sum(),
        ..Conservation::default()
    };
    let on_ledger: BTreeMap<String, &LedgerSend> = sends
        .iter()
        .map(|s| (s.hash.to_ascii_uppercase(), s))
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        let e = c.by_state.entry(r.state.clone()).or_default();
        e.0 += 1;
        e.1 += r.amount;
        *seen.entry(r.hash.clone()).or_default() += 1;
        if !FINAL_STATES.contains(&r.state.as_str()) {
            c.not_final.push(r.clone());
        }
        match on_ledger.get(&r.hash) {
            None => c.unknown.push(r.clone()),
            Some(s) if s.amount != r.amount => {
                c.amount_mismatches
                    .push((r.hash.clone(), r.amount, s.amount))
            }
            Some(_) => {}
        }
    }
    c.duplicates = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(h, _)| h.clone())
        .collect();
    c.missing = on_ledger
        .iter()
        .filter(|(h, _)| !seen.contains_key(*h))
        .map(|(_, s)| (*s).clone())
        .collect();
    c
}

/// `nanogate_payments{state="…"}` (count) and `nanogate_payments_raw{state="…"}` (raw sum)
/// from Prometheus text: state → (count, raw). Gauges are floats, so a raw sum beyond 2^53 is
/// rounded: compare with [`gauges_agree`].
pub fn metric_totals(text: &str) -> BTreeMap<String, (f64, f64)> {
    let mut t: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let (raw, rest) = if let Some(r) = line.strip_prefix("nanogate_payments_raw{") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("nanogate_payments{") {
            (false, r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Some(state) = labels.split(',').find_map(|l| {
            l.trim()
                .strip_prefix("state=\"")
                .and_then(|s| s.strip_suffix('"'))
        }) else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let e = t.entry(state.to_owned()).or_default();
        if raw {
            e.1 = v;
        } else {
            e.0 = v;
        }
    }
    t
}

/// Whether the gauges say what the payments list says: counts exactly, raw sums to within
/// float rounding. A state with nothing in it may be absent from either side or zero.
pub fn gauges_agree(gauges: &BTreeMap<String, (f64, f64)>, listed: &Totals) -> bool {
    let states: std::collections::BTreeSet<&String> = gauges.keys().chain(listed.keys()).collect();
    states.into_iter().all(|s| {
        let (gc, gr) = gauges.get(s).copied().unwrap_or_default();
        let (lc, lr) = listed.get(s).copied().unwrap_or_default();
        let lr = lr as f64;
        gc == lc as f64 && (gr - lr).abs() <= (lr.abs() * 1e-9).max(0.5)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(hash: &str, amount: u128, state: &str) -> PaymentRow {
        PaymentRow {
            hash: hash.into(),
            payer: "nano_payer".into(),
            pay_to: "nano_payee".into(),
            amount,
            state: state.into(),
            reason: None,
            mechanism: Some("signed_block".into()),
            resource: None,
        }
    }

    fn send(hash: &str, amount: u128) -> LedgerSend {
        LedgerSend {
            hash: hash.into(),
            amount,
            from: "nano_payer".into(),
        }
    }

    #[test]
    fn every_send_in_one_final_state_conserves_money() {
        let sends = [send("A1", 5), send("B2", 7), send("C3", 11)];
        let rows = [
            row("A1", 5, "served"),
            row("B2", 7, "redeemable"),
            row("C3", 11, "owed"),
        ];
        let c = conservation(&sends, &rows);
        assert!(c.holds(), "{:?}", c.problems());
        assert_eq!(c.ledger_raw, 23);
        assert_eq!(c.accounted_raw(), 23);
        assert_eq!(c.by_state["owed"], (1, 11));
    }

    #[test]
    fn a_lost_payment_an_admitted_one_and_a_phantom_are_each_reported() {
        let sends = [send("A1", 5), send("B2", 7), send("C3", 11)];
        // C3 is in no state, B2 is stuck admitted, D4 never reached us, A1 twice.
        let rows = [
            row("A1", 5, "served"),
            row("A1", 5, "redeemable"),
            row("B2", 7, "admitted"),
            row("D4", 3, "owed"),
        ];
        let c = conservation(&sends, &rows);
        assert!(!c.holds());
        assert_eq!(c.missing, vec![send("C3", 11)]);
        assert_eq!(c.not_final.len(), 1);
        assert_eq!(c.unknown.len(), 1);
        assert_eq!(c.duplicates, vec!["A1".to_owned()]);
        let text = c.problems().join("\n");
        assert!(text.contains("ledger sends 23 raw"), "{text}");
        assert!(text.contains("C3"), "{text}");
        // A wrong amount alone breaks it too, even when the sums happen to agree.
        let c = conservation(
            &[send("A1", 5), send("B2", 7)],
            &[row("A1", 6, "served"), row("B2", 6, "owed")],
        );
        assert_eq!(c.amount_mismatches.len(), 2);
        assert!(!c.holds());
    }

    #[test]
    fn pages_parse_and_malformed_pages_are_errors() {
        let page = json!({"payments": [{"hash": "ab12", "payer": "nano_p", "payTo": "nano_q",
            "amount": "1000000000000000000000000000", "state": "owed", "reason": "late",
            "mechanism": "tagged", "resource": "r", "settledAt": 1, "updatedAt": 2,
            "redemptions": 0}], "next": "c1"});
        let (rows, next) = parse_page(&page).expect("parses");
        assert_eq!(rows[0].hash, "AB12");
        assert_eq!(rows[0].amount, 1_000_000_000_000_000_000_000_000_000);
        assert_eq!(rows[0].reason.as_deref(), Some("late"));
        assert_eq!(next.as_deref(), Some("c1"));
        assert_eq!(
            parse_page(&json!({"payments": [], "next": null}))
                .unwrap()
                .1,
            None
        );
        for bad in [
            json!({}),
            json!({"payments": [{"hash": "a", "payTo": "q", "amount": "1.5", "state": "owed"}]}),
            json!({"payments": [{"payTo": "q", "amount": "1", "state": "owed"}]}),
            json!({"payments": [], "next": 5}),
        ] {
            assert!(parse_page(&bad).is_err(), "{bad}");
        }
    }

    /// A tiny stand-in for the sidecar's admin endpoint: two pages behind a bearer token.
    async fn fake_sidecar() -> (String, tokio::task::JoinHandle<()>) {
        use axum::extract::Query;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        use std::collections::HashMap;
        async fn payments(
            headers: HeaderMap,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            if headers.get("authorization").and_then(|v| v.to_str().ok())
                != Some("Bearer admin-token-0123456789")
            {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let p = |h: &str, s: &str| {
                json!({"hash": h, "payer": "nano_p", "payTo": "nano_q", "amount": "5",
                       "state": s, "mechanism": "signed_block"})
            };
            let page = match q.get("cursor").map(String::as_str) {
                None => json!({"payments": [p("A1", "served")], "next": "page2"}),
                Some("page2") => json!({"payments": [p("B2", "owed")], "next": null}),
                Some(_) => return StatusCode::BAD_REQUEST.into_response(),
            };
            axum::Json(page).into_response()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/v1/admin/payments", axum::routing::get(payments));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn fetch_follows_the_cursor_and_names_a_missing_api() {
        let (base, task) = fake_sidecar().await;
        let rows = fetch_payments(&base, "admin-token-0123456789")
            .await
            .expect("two pages");
        let got: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.hash.as_str(), r.state.as_str()))
            .collect();
        assert_eq!(got, vec![("A1", "served"), ("B2", "owed")]);
        let err = fetch_payments(&base, "wrong-token").await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        // A sidecar without the API: a clear message, not a silent zero.
        let err = fetch_payments(&format!("{base}/nowhere"), "admin-token-0123456789")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no payment ledger API"), "{err}");
        task.abort();
    }

    #[test]
    fn metric_gauges_read_per_state_and_agree_within_float_rounding() {
        let text = "# HELP nanogate_payments payments per state\n\
            nanogate_payments{state=\"served\"} 3\n\
            nanogate_payments_raw{state=\"served\"} 3e27\n\
            nanogate_payments{state=\"owed\"} 1\n\
            nanogate_payments_raw{state=\"owed\"} 42\n\
            nanogate_payments{state=\"admitted\"} 0\n\
            nanogate_payments_total 9\n";
        let g = metric_totals(text);
        assert_eq!(g["served"], (3.0, 3e27));
        assert_eq!(g["owed"], (1.0, 42.0));
        assert_eq!(g.len(), 3);
        let mut listed = Totals::new();
        listed.insert("served".into(), (3, 3_000_000_000_000_000_000_000_000_017));
        listed.insert("owed".into(), (1, 42));
        assert!(gauges_agree(&g, &listed));
        listed.insert("owed".into(), (1, 43));
        assert!(!gauges_agree(&g, &listed));
        listed.insert("owed".into(), (2, 42));
        assert!(!gauges_agree(&g, &listed));
        listed.insert("owed".into(), (1, 42));
        listed.insert("redeemable".into(), (1, 5));
        assert!(!gauges_agree(&g, &listed), "a state the gauges miss");
    }
}
