//! `payments`: every page of `GET /v1/admin/payments` under the given filters.

use crate::admin_cli::exit::{self, Failure, Result};
use crate::admin_cli::http::AdminHttp;
use crate::admin_cli::output::{self, Format};
use crate::calendar::civil_time;
use nanogate_protocol::contract::{paths, PaymentRow, PaymentsPage};
use nanogate_protocol::nano::{format_xno, parse_raw};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub filter: Filter,
    /// CSV out (one header line, then one line per payment) instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Filter {
    /// Only payments in this state (admitted, served, redeemable, owed, …: the sidecar checks).
    #[arg(long)]
    pub state: Option<String>,
    /// Only payments for this route (the resource or scope paid for).
    #[arg(long)]
    pub route: Option<String>,
    /// Only payments from this payer (`nano_` address).
    #[arg(long)]
    pub payer: Option<String>,
    /// Settled at or after: unix seconds or a UTC day YYYY-MM-DD.
    #[arg(long, value_parser = output::parse_time)]
    pub since: Option<i64>,
    /// Settled before: unix seconds or a UTC day YYYY-MM-DD.
    #[arg(long, value_parser = output::parse_time)]
    pub until: Option<i64>,
    /// Payments per request (1 to 1000); every page is fetched.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub page_size: i64,
}

/// Every payment matching `f`, oldest settlement first.
pub async fn fetch_all(client: &AdminHttp, f: &Filter) -> Result<Vec<PaymentRow>> {
    let mut base = output::time_query(f.since, f.until);
    for (name, v) in [
        ("state", &f.state),
        ("route", &f.route),
        ("payer", &f.payer),
    ] {
        if let Some(v) = v {
            base.push((name, v.clone()));
        }
    }
    base.push(("limit", f.page_size.to_string()));
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = base.clone();
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page: PaymentsPage = client.get(paths::ADMIN_PAYMENTS, &q).await?;
        all.extend(page.payments);
        match page.next {
            // A cursor that does not move would loop forever: refuse it.
            Some(next) if Some(&next) == cursor.as_ref() => {
                return Err(Failure::new(
                    exit::SIDECAR,
                    "the sidecar repeated a page cursor",
                ));
            }
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

/// The XNO spelling of a raw decimal amount (the raw text itself if it is not one).
pub fn xno(raw: &str) -> String {
    parse_raw(raw).map_or_else(|_| raw.to_owned(), format_xno)
}

/// The sum of raw decimal amounts.
pub fn total_raw(rows: &[PaymentRow]) -> u128 {
    rows.iter()
        .map(|r| parse_raw(&r.amount).unwrap_or(0))
        .fold(0u128, u128::saturating_add)
}

pub fn print_table(rows: &[PaymentRow]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                civil_time(r.settled_at),
                r.state.clone(),
                xno(&r.amount),
                r.route_or_dash(),
                r.payer.clone(),
                r.reason.clone().unwrap_or_default(),
                r.hash.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "SETTLED (UTC)",
            "STATE",
            "AMOUNT (XNO)",
            "ROUTE",
            "PAYER",
            "REASON",
            "HASH",
        ],
        &[false, false, true],
        &cells,
    );
}

trait RouteCell {
    fn route_or_dash(&self) -> String;
}

impl RouteCell for PaymentRow {
    fn route_or_dash(&self) -> String {
        if self.resource.is_empty() {
            "-".to_owned()
        } else {
            self.resource.clone()
        }
    }
}

const CSV_HEADER: [&str; 12] = [
    "hash",
    "state",
    "reason",
    "amount_raw",
    "amount_xno",
    "payer",
    "pay_to",
    "route",
    "mechanism",
    "settled_at",
    "updated_at",
    "redemptions",
];

fn print_csv(rows: &[PaymentRow]) -> Result<()> {
    let fail = |e: csv::Error| Failure::new(exit::SIDECAR, format!("writing CSV: {e}"));
    let mut w = csv::Writer::from_writer(std::io::stdout());
    w.write_record(CSV_HEADER).map_err(fail)?;
    for r in rows {
        w.write_record([
            r.hash.clone(),
            r.state.clone(),
            r.reason.clone().unwrap_or_default(),
            r.amount.clone(),
            xno(&r.amount),
            r.payer.clone(),
            r.pay_to.clone(),
            r.resource.clone(),
            r.mechanism.clone(),
            r.settled_at.to_string(),
            r.updated_at.to_string(),
            r.redemptions.to_string(),
        ])
        .map_err(fail)?;
    }
    w.flush()
        .map_err(|e| Failure::new(exit::SIDECAR, format!("writing CSV: {e}")))
}

pub async fn run(client: &AdminHttp, a: &Args, out: Format) -> Result<()> {
    let rows = fetch_all(client, &a.filter).await?;
    if a.csv {
        return print_csv(&rows);
    }
    match out {
        Format::Json => output::json(&rows),
        Format::Table => {
            print_table(&rows);
            println!(
                "{} payments, {} XNO ({} raw)",
                rows.len(),
                format_xno(total_raw(&rows)),
                total_raw(&rows)
            );
            Ok(())
        }
    }
}
