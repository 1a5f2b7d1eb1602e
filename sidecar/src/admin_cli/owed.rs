//! `owed`: the payments owed back to their payers (state `owed`), with their total, and the
//! total per payer: what a refund has to send.

use crate::admin_cli::exit::Result;
use crate::admin_cli::http::AdminHttp;
use crate::admin_cli::output::{self, Format};
use crate::admin_cli::payments::{self, Filter};
use nanogate_protocol::contract::PaymentRow;
use nanogate_protocol::nano::{format_xno, parse_raw};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only payments from this payer (`nano_` address).
    #[arg(long)]
    pub payer: Option<String>,
    /// Only payments for this route.
    #[arg(long)]
    pub route: Option<String>,
    /// Settled at or after: unix seconds or a UTC day YYYY-MM-DD.
    #[arg(long, value_parser = output::parse_time)]
    pub since: Option<i64>,
    /// Settled before: unix seconds or a UTC day YYYY-MM-DD.
    #[arg(long, value_parser = output::parse_time)]
    pub until: Option<i64>,
}

/// What one payer is owed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PayerTotal {
    payer: String,
    count: u64,
    raw: String,
    xno: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Owed {
    payments: Vec<PaymentRow>,
    payers: Vec<PayerTotal>,
    count: u64,
    raw: String,
    xno: String,
}

fn per_payer(rows: &[PaymentRow]) -> Vec<PayerTotal> {
    let mut by: BTreeMap<&str, (u64, u128)> = BTreeMap::new();
    for r in rows {
        let e = by.entry(r.payer.as_str()).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(parse_raw(&r.amount).unwrap_or(0));
    }
    by.into_iter()
        .map(|(payer, (count, raw))| PayerTotal {
            payer: payer.to_owned(),
            count,
            raw: raw.to_string(),
            xno: format_xno(raw),
        })
        .collect()
}

pub async fn run(client: &AdminHttp, a: &Args, out: Format) -> Result<()> {
    let filter = Filter {
        state: Some("owed".to_owned()),
        route: a.route.clone(),
        payer: a.payer.clone(),
        since: a.since,
        until: a.until,
        page_size: 500,
    };
    let rows = payments::fetch_all(client, &filter).await?;
    let raw = payments::total_raw(&rows);
    let owed = Owed {
        payers: per_payer(&rows),
        count: u64::try_from(rows.len()).unwrap_or(u64::MAX),
        raw: raw.to_string(),
        xno: format_xno(raw),
        payments: rows,
    };
    match out {
        Format::Json => output::json(&owed),
        Format::Table => {
            payments::print_table(&owed.payments);
            println!();
            let cells: Vec<Vec<String>> = owed
                .payers
                .iter()
                .map(|p| {
                    vec![
                        p.payer.clone(),
                        p.count.to_string(),
                        p.xno.clone(),
                        p.raw.clone(),
                    ]
                })
                .collect();
            output::table(
                &["PAYER", "PAYMENTS", "XNO OWED", "RAW"],
                &[false, true, true, true],
                &cells,
            );
            println!(
                "{} owed payments, {} XNO ({} raw)",
                owed.count, owed.xno, owed.raw
            );
            Ok(())
        }
    }
}
