//! `nanogate-admin`: the operator's command line over the sidecar's admin API (bearer token).
//! The subcommands live in `nanogate_sidecar::admin_cli`, one module each; docs/operate.md is
//! the manual, and the exit codes are `admin_cli::exit`'s.
//!
//! A binary of its own rather than a `nanogate-sidecar admin` subcommand: the server's flags
//! and environment (`NANOGATE_*`, read by `Config::load`) stay exactly the server's, and the
//! admin tool needs none of the server's configuration, only a URL and a token, so it runs
//! anywhere that reaches the admin listener.

use clap::{Parser, Subcommand};
use nanogate_sidecar::admin_cli::{http, output, owed, passes, payments, refunds, revenue};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "nanogate-admin",
    version,
    about = "Operate a nanogate sidecar: payments, revenue, owed payments, passes, refunds and pocketing",
    after_help = "Exit codes: 0 ok, 2 usage (or refused by the sidecar as a bad request), \
                  3 token refused, 4 sidecar unreachable, 5 sidecar error or unexpected answer, \
                  6 refused (no such pass or payment, on the ledger, or by its state), 7 some refunds not completed."
)]
struct Cli {
    #[command(flatten)]
    conn: http::Connection,
    /// JSON out (for scripts) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List payments (every page), as a table, JSON or CSV.
    Payments(payments::Args),
    /// Revenue per route, payee account and day, in XNO and raw.
    Revenue(revenue::Args),
    /// Payments owed back to their payers, with the total per payer.
    Owed(owed::Args),
    /// Prepaid passes sold (every page), with their use and state.
    Passes(passes::Args),
    /// Revoke a pass: the filters refuse it from their next usage report on.
    Revoke(passes::RevokeArgs),
    /// Refunds and pocketing: refund, mark-refunded, receivable, pocket, sweep.
    #[command(flatten)]
    Refunds(refunds::Command),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut conn = cli.conn.clone();
    if let Command::Refunds(_) = &cli.command {
        // A refund waits for its confirmation on the ledger.
        conn.timeout_secs = conn.timeout_secs.max(refunds::MIN_TIMEOUT_SECS);
    }
    let client = match http::AdminHttp::new(&conn) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let out = output::Format::new(cli.json);
    let done = match &cli.command {
        Command::Payments(a) => payments::run(&client, a, out).await,
        Command::Revenue(a) => revenue::run(&client, a, out).await,
        Command::Owed(a) => owed::run(&client, a, out).await,
        Command::Passes(a) => passes::run(&client, a, out).await,
        Command::Revoke(a) => passes::revoke(&client, a, out).await,
        Command::Refunds(c) => match refunds::run(&client, c, cli.json).await {
            Ok((code, text)) => {
                // What was done is printed even when some of it was not (code 7).
                let _ = std::io::stdout().write_all(text.as_bytes());
                return ExitCode::from(code);
            }
            Err(e) => Err(e),
        },
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
