//! What the upstream saw and what the logs say: no request served without a payment, no
//! payment that bought two responses, no panic.

use crate::upstream::{Outcome, Recorded};
use std::collections::BTreeMap;

/// The header the filter adds to an admitted request: the paying block's hash
/// (`filter/src/flow.rs`, `TRANSACTION_HEADER`).
pub const TRANSACTION_HEADER: &str = "x-nanogate-transaction";

/// Findings about the upstream's requests on the paid prefixes.
#[derive(Debug, Default)]
pub struct Service {
    /// Requests that reached the upstream.
    pub reached: usize,
    /// Of which the upstream answered below 500 (a response bought).
    pub answered: usize,
    /// Reached the upstream without naming a payment.
    pub unpaid: Vec<String>,
    /// Named a transaction that is no confirmed send to our accounts of at least the price.
    pub not_a_payment: Vec<(String, String)>,
    /// Payments that bought more than one response: hash → paths.
    pub doubles: BTreeMap<String, Vec<String>>,
}

impl Service {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.unpaid.is_empty() {
            p.push(format!(
                "{} request(s) served without a payment: {:?}",
                self.unpaid.len(),
                &self.unpaid[..self.unpaid.len().min(5)]
            ));
        }
        if !self.not_a_payment.is_empty() {
            p.push(format!(
                "{} request(s) served on a transaction that paid us nothing (path, hash): {:?}",
                self.not_a_payment.len(),
                &self.not_a_payment[..self.not_a_payment.len().min(5)]
            ));
        }
        if !self.doubles.is_empty() {
            let shown: Vec<_> = self.doubles.iter().take(5).collect();
            p.push(format!(
                "{} payment(s) bought more than one response (hash → paths): {shown:?}",
                self.doubles.len()
            ));
        }
        p
    }
}

/// Checks every upstream request whose path starts with one of `prefixes` against `paid`:
/// block hash (upper case) → amount of the confirmed sends to our accounts; `min_amount` is
/// the cheapest price of those routes.
pub fn service(
    records: &[Recorded],
    prefixes: &[&str],
    paid: &BTreeMap<String, u128>,
    min_amount: u128,
) -> Service {
    let mut s = Service::default();
    let mut responses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        if !prefixes.iter().any(|p| r.path.starts_with(p)) {
            continue;
        }
        s.reached += 1;
        let Some(tx) = r.header(TRANSACTION_HEADER) else {
            s.unpaid.push(r.path.clone());
            continue;
        };
        let tx = tx.to_ascii_uppercase();
        if paid.get(&tx).is_none_or(|a| *a < min_amount) {
            s.not_a_payment.push((r.path.clone(), tx.clone()));
        }
        if matches!(r.outcome, Outcome::Answered(st) if st < 500) {
            s.answered += 1;
            responses.entry(tx).or_default().push(r.path.clone());
        }
    }
    s.doubles = responses.into_iter().filter(|(_, v)| v.len() > 1).collect();
    s
}

/// Lines of the given logs that show a panic or a wasm trap: (log name, line).
pub fn panics(logs: &[(String, String)]) -> Vec<(String, String)> {
    // A Rust panic (the sidecar, or the filter's panic hook), and V8's report of a trap in a
    // wasm callback ("Function: proxy_on_… failed: Uncaught RuntimeError: unreachable").
    const SIGNS: [&str; 3] = ["panicked", "RuntimeError", "Uncaught"];
    let mut found = Vec::new();
    for (name, text) in logs {
        for line in text.lines() {
            if SIGNS.iter().any(|s| line.contains(s)) {
                found.push((name.clone(), line.chars().take(400).collect()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, tx: Option<&str>, outcome: Outcome) -> Recorded {
        Recorded {
            method: "GET".into(),
            path: path.into(),
            headers: tx
                .map(|t| vec![(TRANSACTION_HEADER.to_owned(), t.to_owned())])
                .unwrap_or_default(),
            body: Vec::new(),
            outcome,
        }
    }

    #[test]
    fn unpaid_phantom_and_double_service_are_found_and_redemption_after_a_5xx_is_not() {
        let paid: BTreeMap<String, u128> = [("AA".to_owned(), 10), ("BB".to_owned(), 10)].into();
        let records = [
            // AA: a 503, then served once on redemption (fine).
            rec("/paid/x/1", Some("aa"), Outcome::Answered(503)),
            rec("/paid/x/1", Some("AA"), Outcome::Answered(200)),
            // BB: served twice (a double), once reset (fine).
            rec("/paid/x/2", Some("BB"), Outcome::Reset),
            rec("/paid/x/2", Some("BB"), Outcome::Answered(200)),
            rec("/paid/x/3", Some("BB"), Outcome::Answered(201)),
            // No payment at all, and a transaction that never paid us.
            rec("/paid/x/4", None, Outcome::Answered(200)),
            rec("/paid/x/5", Some("CC"), Outcome::Abandoned),
            // Other paths are not judged.
            rec("/free", None, Outcome::Answered(200)),
        ];
        let s = service(&records, &["/paid/x/"], &paid, 10);
        assert_eq!(s.reached, 7);
        assert_eq!(s.unpaid, vec!["/paid/x/4".to_owned()]);
        assert_eq!(
            s.not_a_payment,
            vec![("/paid/x/5".to_owned(), "CC".to_owned())]
        );
        assert_eq!(s.doubles.len(), 1);
        assert_eq!(s.doubles["BB"], vec!["/paid/x/2", "/paid/x/3"]);
        assert_eq!(s.problems().len(), 3);
        // A payment below the cheapest price is no payment for these routes.
        let s = service(&records[..2], &["/paid/x/"], &paid, 11);
        assert_eq!(s.not_a_payment.len(), 2);
    }

    #[test]
    fn panics_and_wasm_traps_are_found_in_logs() {
        let logs = vec![
            ("sidecar".to_owned(), "ok\nthread 'tokio-runtime-worker' panicked at src/x.rs:1:1:\n".to_owned()),
            ("envoy".to_owned(), "[error] wasm log: Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable\n".to_owned()),
            ("quiet".to_owned(), "all fine\n".to_owned()),
        ];
        let p = panics(&logs);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "sidecar");
        assert_eq!(p[1].0, "envoy");
    }
}
