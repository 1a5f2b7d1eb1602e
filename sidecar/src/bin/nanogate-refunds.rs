//! `nanogate-refunds`: refunds of owed payments and pocketing, from the command line
//! (docs/refunds.md). The commands live in the library (`refund_cli`) so the admin command
//! line can carry them as subcommands too.

use clap::Parser;
use nanogate_sidecar::refund_cli::{self, Command, Connection};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "nanogate-refunds",
    version,
    about = "Refund owed payments and pocket receivable sends through a nanogate sidecar",
    after_help = "Exit codes: 0 done, 2 usage, 3 token refused, 4 sidecar unreachable, \
                  5 sidecar error, 6 refused (ledger check or state), 7 some not completed."
)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    /// JSON out (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = refund_cli::run(&cli.conn, &cli.command, cli.json).await;
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    if !out.stderr.is_empty() {
        eprintln!("nanogate-refunds: {}", out.stderr);
    }
    ExitCode::from(out.code)
}
