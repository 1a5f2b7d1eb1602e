//! `passes` and `revoke`: the prepaid passes sold (docs/passes.md), every page of them, and
//! revoking one (the filters refuse it from their next usage report on).

use crate::admin_cli::exit::{Failure, Result};
use crate::admin_cli::http::AdminHttp;
use crate::admin_cli::output::{self, Format};
use crate::calendar::civil_time;
use nanogate_protocol::contract::pass::{PassRevokeRequest, PassRow, PassesPage};
use nanogate_protocol::contract::paths;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only passes of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only passes in this state: active, expired, exhausted or revoked.
    #[arg(long)]
    pub state: Option<String>,
    /// Passes asked for per page (1–1000).
    #[arg(long, default_value_t = 500)]
    pub page_size: u32,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The pass id (32 hex digits, as `passes` lists it).
    pub id: String,
}

/// Every pass matching `a`, newest first, following the cursor through every page.
pub async fn fetch_all(client: &AdminHttp, a: &Args) -> Result<Vec<PassRow>> {
    if !(1..=1000).contains(&a.page_size) {
        return Err(Failure::usage("--page-size must be 1 to 1000"));
    }
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", a.page_size.to_string())];
        for (k, v) in [("group", &a.group), ("state", &a.state), ("after", &after)] {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        let page: PassesPage = client.get(paths::ADMIN_PASSES, &query).await?;
        rows.extend(page.passes);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(rows),
        }
    }
}

pub async fn run(client: &AdminHttp, a: &Args, out: Format) -> Result<()> {
    let rows = fetch_all(client, a).await?;
    match out {
        Format::Json => output::json(&rows),
        Format::Table => {
            print_table(&rows);
            println!("{} passes", rows.len());
            Ok(())
        }
    }
}

pub async fn revoke(client: &AdminHttp, a: &RevokeArgs, out: Format) -> Result<()> {
    let body = PassRevokeRequest { id: a.id.clone() };
    let row: PassRow = client.post(paths::ADMIN_PASSES_REVOKE, &body).await?;
    match out {
        Format::Json => output::json(&row),
        Format::Table => {
            print_table(std::slice::from_ref(&row));
            Ok(())
        }
    }
}

fn print_table(rows: &[PassRow]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|p| {
            let used = match p.requests_granted {
                Some(granted) => format!("{}/{granted}", p.requests_used),
                None => "time".to_owned(),
            };
            vec![
                civil_time(p.created_at),
                civil_time(p.expires_at),
                p.state.clone(),
                p.group.clone(),
                p.name.clone(),
                used,
                p.payer.clone(),
                p.id.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "BOUGHT (UTC)",
            "EXPIRES (UTC)",
            "STATE",
            "GROUP",
            "PASS",
            "USED",
            "PAYER",
            "ID",
        ],
        &[false, false, false, false, false, true],
        &cells,
    );
}
