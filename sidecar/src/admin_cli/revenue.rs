//! `revenue`: `GET /v1/admin/revenue` (summed per day, route and payee in the store), shown per
//! any combination of those keys, in XNO and raw.

use crate::admin_cli::exit::{self, Failure, Result};
use crate::admin_cli::http::AdminHttp;
use crate::admin_cli::output::{self, Format};
use nanogate_protocol::contract::{paths, RevenueAnswer};
use nanogate_protocol::nano::{format_xno, parse_raw};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Key {
    Day,
    Route,
    Payee,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Group by these keys (comma-separated; default: day,route,payee).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub by: Vec<Key>,
    /// Sum payments in this state (revenue proper is `served`: they bought a response).
    #[arg(long, default_value = "served")]
    pub state: String,
    /// Settled at or after: unix seconds or a UTC day YYYY-MM-DD.
    #[arg(long, value_parser = output::parse_time)]
    pub since: Option<i64>,
    /// Settled before: unix seconds or a UTC day YYYY-MM-DD.
    #[arg(long, value_parser = output::parse_time)]
    pub until: Option<i64>,
}

/// One output row: the chosen keys (others `None`), count and sum.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pay_to: Option<String>,
    count: u64,
    raw: String,
    xno: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Revenue {
    state: String,
    rows: Vec<Row>,
    count: u64,
    raw: String,
    xno: String,
}

type GroupKey = (Option<String>, Option<String>, Option<String>);

fn regroup(answer: &RevenueAnswer, keys: &[Key]) -> Result<Vec<Row>> {
    let mut groups: BTreeMap<GroupKey, (u64, u128)> = BTreeMap::new();
    for r in &answer.rows {
        let raw = parse_raw(&r.raw).map_err(|_| {
            Failure::new(
                exit::SIDECAR,
                format!("the sidecar sent a bad raw amount {:?}", r.raw),
            )
        })?;
        let key = (
            keys.contains(&Key::Day).then(|| r.day.clone()),
            keys.contains(&Key::Route).then(|| r.route.clone()),
            keys.contains(&Key::Payee).then(|| r.pay_to.clone()),
        );
        let e = groups.entry(key).or_default();
        e.0 += r.count;
        e.1 = e.1.saturating_add(raw);
    }
    Ok(groups
        .into_iter()
        .map(|((day, route, pay_to), (count, raw))| Row {
            day,
            route,
            pay_to,
            count,
            raw: raw.to_string(),
            xno: format_xno(raw),
        })
        .collect())
}

pub async fn run(client: &AdminHttp, a: &Args, out: Format) -> Result<()> {
    let mut q = output::time_query(a.since, a.until);
    q.push(("state", a.state.clone()));
    let answer: RevenueAnswer = client.get(paths::ADMIN_REVENUE, &q).await?;
    let mut keys = if a.by.is_empty() {
        vec![Key::Day, Key::Route, Key::Payee]
    } else {
        a.by.clone()
    };
    keys.sort();
    keys.dedup();
    let revenue = Revenue {
        rows: regroup(&answer, &keys)?,
        state: answer.state,
        count: answer.count,
        raw: answer.raw,
        xno: answer.xno,
    };
    match out {
        Format::Json => output::json(&revenue),
        Format::Table => {
            let mut headers = Vec::new();
            for k in &keys {
                headers.push(match k {
                    Key::Day => "DAY (UTC)",
                    Key::Route => "ROUTE",
                    Key::Payee => "PAYEE",
                });
            }
            let first_number = headers.len();
            headers.extend(["PAYMENTS", "AMOUNT (XNO)", "RAW"]);
            let right: Vec<bool> = (0..headers.len()).map(|i| i >= first_number).collect();
            let cells: Vec<Vec<String>> = revenue
                .rows
                .iter()
                .map(|r| {
                    let mut c: Vec<String> = [&r.day, &r.route, &r.pay_to]
                        .into_iter()
                        .flatten()
                        .cloned()
                        .collect();
                    c.extend([r.count.to_string(), r.xno.clone(), r.raw.clone()]);
                    c
                })
                .collect();
            output::table(&headers, &right, &cells);
            println!(
                "total ({}): {} payments, {} XNO ({} raw)",
                revenue.state, revenue.count, revenue.xno, revenue.raw
            );
            Ok(())
        }
    }
}
