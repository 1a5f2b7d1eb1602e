//! The operator's `refund`, `mark-refunded`, `receivable`, `pocket` and `sweep` commands over the
//! sidecar's admin API (bearer token; docs/refunds.md): `nanogate-admin refund …`. One entry,
//! [`run`], given the connection `nanogate-admin` resolved (URL, token, timeout).
//!
//! Exit codes scripts can trust: 0 done; 2 usage (or a request the sidecar refused as bad);
//! 3 token refused; 4 sidecar unreachable; 5 sidecar error or unexpected answer; 6 refused on
//! the ledger or conflicting state (`mark-refunded` of a block that is not the refund, of a
//! payment not owed); 7 some refunds not completed (listed, with why).

use nanogate_protocol::contract::paths;
use nanogate_protocol::contract::refunds::{
    MarkRefundedRequest, PocketAnswer, ReceivableAnswer, RefundRequest, RefundRow, RefundsAnswer,
    SweepAnswer,
};
use nanogate_protocol::contract::ErrorBody;
use nanogate_protocol::nano::format_xno;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

pub const USAGE: u8 = 2;
pub const AUTH: u8 = 3;
pub const UNREACHABLE: u8 = 4;
pub const SIDECAR: u8 = 5;
pub const REFUSED: u8 = 6;
pub const INCOMPLETE: u8 = 7;

/// Where the admin API is, as `nanogate-admin` resolved it from its flags and environment.
#[derive(Debug, Clone)]
pub struct Connection {
    pub url: String,
    pub token: String,
    /// Seconds to wait for each answer: at least [`MIN_TIMEOUT_SECS`], since a refund waits
    /// for its confirmation.
    pub timeout_secs: u64,
}

/// The least time a refund command waits for an answer.
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

/// What a command printed, and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    fn fail(code: u8, message: impl Into<String>) -> Outcome {
        Outcome {
            code,
            stdout: String::new(),
            stderr: message.into(),
        }
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Http {
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        post: Option<&B>,
        path: &str,
    ) -> Result<T, Outcome> {
        let url = format!("{}{path}", self.base);
        let req = match post {
            Some(body) => self.client.post(&url).json(body),
            None => self.client.get(&url),
        };
        let answer = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Outcome::fail(UNREACHABLE, format!("{url}: {e}")))?;
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| {
                Outcome::fail(SIDECAR, format!("{url}: unexpected answer ({e}): {text}"))
            });
        }
        let why = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        let code = match status {
            401 | 403 => AUTH,
            400 => USAGE,
            404 | 409 | 422 => REFUSED,
            _ => SIDECAR,
        };
        Err(Outcome::fail(code, format!("{status}: {why}")))
    }
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

/// Runs one command against the admin API; `json`: machine-readable output.
pub async fn run(conn: &Connection, command: &Command, json: bool) -> Outcome {
    if conn.token.trim().is_empty() {
        return Outcome::fail(USAGE, "no token: set NANOGATE_ADMIN_TOKEN or pass --token");
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(conn.timeout_secs.max(MIN_TIMEOUT_SECS)))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::fail(USAGE, format!("HTTP client: {e}")),
    };
    let http = Http {
        client,
        base: conn.url.trim_end_matches('/').to_owned(),
        token: conn.token.trim().to_owned(),
    };
    let done = match command {
        Command::Refund { payments } => http
            .call::<_, RefundsAnswer>(
                Some(&RefundRequest {
                    payments: payments.clone(),
                }),
                paths::ADMIN_REFUNDS,
            )
            .await
            .map(|a| {
                let (code, text) = print_refunds(&a);
                (code, if json { to_json(&a) } else { text })
            }),
        Command::MarkRefunded { payment, block } => http
            .call::<_, RefundRow>(
                Some(&MarkRefundedRequest {
                    payment: payment.clone(),
                    block: block.clone(),
                }),
                paths::ADMIN_REFUNDS_MARK,
            )
            .await
            .map(|r| (0, if json { to_json(&r) } else { print_row(&r) })),
        Command::Receivable => http
            .call::<(), ReceivableAnswer>(None, paths::ADMIN_RECEIVABLE)
            .await
            .map(|a| {
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
            }),
        Command::Pocket => http
            .call::<_, PocketAnswer>(Some(&()), paths::ADMIN_POCKET)
            .await
            .map(|a| {
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
            }),
        Command::Sweep => http
            .call::<_, SweepAnswer>(Some(&()), paths::ADMIN_SWEEP)
            .await
            .map(|a| {
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
            }),
    };
    match done {
        Ok((code, stdout)) => Outcome {
            code,
            stdout,
            stderr: String::new(),
        },
        Err(o) => o,
    }
}
