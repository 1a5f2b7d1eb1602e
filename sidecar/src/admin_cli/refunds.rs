//! The operator's `refund`, `mark-refunded`, `receivable`, `pocket` and `sweep` commands over the
//! sidecar's admin API (bearer token; docs/refunds.md): `nanogate-admin refund …`, through the
//! same [`AdminHttp`] client as every other subcommand. Exit codes are `admin_cli::exit`'s; these
//! commands may also end part-done: [`INCOMPLETE`] (7), with what was not done listed and why.

use crate::admin_cli::exit::{Result, INCOMPLETE};
use crate::admin_cli::http::AdminHttp;
use nanogate_protocol::contract::paths;
use nanogate_protocol::contract::refunds::{
    MarkRefundedRequest, PocketAnswer, ReceivableAnswer, RefundRequest, RefundRow, RefundsAnswer,
    SweepAnswer,
};
use nanogate_protocol::nano::format_xno;
use serde::Serialize;
use std::fmt::Write as _;

/// The least time a refund command waits for an answer, since a refund waits for its
/// confirmation.
pub const MIN_TIMEOUT_SECS: u64 = 120;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Refund owed payments (all of them, or the hashes given): sent by the sidecar when it
    /// holds the payee key, else one `nano:` URI per refund to pay from any wallet.
    Refund {
        /// Owed payments (block hashes); none = every owed payment.
        payments: Vec<String>,
    },
    /// Record a refund the operator's wallet sent, after the sidecar checked it on the ledger.
    MarkRefunded {
        /// The owed payment (block hash).
        payment: String,
        /// The refund's send block hash.
        block: String,
    },
    /// Receivable (not yet received) sends per payee and pool account.
    Receivable,
    /// Publish receive blocks for them (the sidecar must hold the payee key).
    Pocket,
    /// Send the pool accounts' balances, less what they still owe, to wallet.treasury.
    Sweep,
}

fn xno(raw: &str) -> String {
    raw.parse::<u128>()
        .map_or_else(|_| raw.to_owned(), |r| format!("{} XNO", format_xno(r)))
}

fn print_refunds(a: &RefundsAnswer) -> (u8, String) {
    let mut out = String::new();
    let mut incomplete = 0;
    for r in &a.refunds {
        let _ = writeln!(
            out,
            "{}  {}  {} raw ({})  to {}",
            r.payment,
            r.state,
            r.amount,
            xno(&r.amount),
            r.payer
        );
        if let Some(b) = &r.block {
            let _ = writeln!(out, "    refund block {b}");
        }
        if let Some(u) = &r.uri {
            let _ = writeln!(out, "    pay from {}: {u}", r.pay_to);
            let _ = writeln!(out, "    then: mark-refunded {} <block hash>", r.payment);
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "    not refunded: {e}");
        }
        if r.state != "refunded" && r.uri.is_none() {
            incomplete += 1;
        }
    }
    if a.refunds.is_empty() {
        out.push_str("nothing owed\n");
    }
    (if incomplete > 0 { INCOMPLETE } else { 0 }, out)
}

fn print_row(r: &RefundRow) -> String {
    format!(
        "{}  {}  {} raw ({})  by block {}\n",
        r.payment,
        r.state,
        r.amount,
        xno(&r.amount),
        r.block.as_deref().unwrap_or("-")
    )
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// Runs one command against the admin API; `json`: machine-readable output. Returns the exit
/// code (0, or [`INCOMPLETE`]) and what to print.
pub async fn run(http: &AdminHttp, command: &Command, json: bool) -> Result<(u8, String)> {
    Ok(match command {
        Command::Refund { payments } => {
            let body = RefundRequest {
                payments: payments.clone(),
            };
            let a: RefundsAnswer = http.post(paths::ADMIN_REFUNDS, &body).await?;
            let (code, text) = print_refunds(&a);
            (code, if json { to_json(&a) } else { text })
        }
        Command::MarkRefunded { payment, block } => {
            let body = MarkRefundedRequest {
                payment: payment.clone(),
                block: block.clone(),
            };
            let r: RefundRow = http.post(paths::ADMIN_REFUNDS_MARK, &body).await?;
            (0, if json { to_json(&r) } else { print_row(&r) })
        }
        Command::Receivable => {
            let a: ReceivableAnswer = http.get(paths::ADMIN_RECEIVABLE, &[]).await?;
            let text = a.accounts.iter().fold(String::new(), |mut s, r| {
                let _ = writeln!(
                    s,
                    "{}  {} raw ({})  {} sends{}",
                    r.account,
                    r.receivable,
                    xno(&r.receivable),
                    r.count,
                    if r.pocketed_here {
                        "  (pocketed by the sidecar)"
                    } else {
                        ""
                    }
                );
                s
            });
            (0, if json { to_json(&a) } else { text })
        }
        Command::Pocket => {
            let a: PocketAnswer = http.post(paths::ADMIN_POCKET, &()).await?;
            let mut text = a.received.iter().fold(String::new(), |mut s, r| {
                let _ = writeln!(
                    s,
                    "{}  received {} raw ({}) from send {}  by block {}",
                    r.account,
                    r.amount,
                    xno(&r.amount),
                    r.send,
                    r.block
                );
                s
            });
            for e in &a.errors {
                let _ = writeln!(text, "not pocketed: {e}");
            }
            let code = if a.errors.is_empty() { 0 } else { INCOMPLETE };
            (code, if json { to_json(&a) } else { text })
        }
        Command::Sweep => {
            let a: SweepAnswer = http.post(paths::ADMIN_SWEEP, &()).await?;
            let mut text = a.swept.iter().fold(String::new(), |mut s, r| {
                let _ = writeln!(
                    s,
                    "{}  sent {} raw ({}) to the treasury by block {}; kept {} raw (owed)",
                    r.account,
                    r.amount,
                    xno(&r.amount),
                    r.block,
                    r.kept
                );
                s
            });
            for e in &a.errors {
                let _ = writeln!(text, "not swept: {e}");
            }
            let code = if a.errors.is_empty() { 0 } else { INCOMPLETE };
            (code, if json { to_json(&a) } else { text })
        }
    })
}
