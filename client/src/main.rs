//! `nanogate-pay`: request a URL, pay its x402 402 in Nano, print the answer and the receipt.

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Parser;
use nanogate_client::{
    receipt_json, Mechanism, PaidResponse, PassUse, PayError, Payer, PayerConfig, Progress,
    RequestSpec, DEFAULT_RPC_URL,
};
use nanogate_protocol::contract::ASSET_XNO;
use nanogate_protocol::nano::{format_xno, parse_xno, PrivateKey};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit codes (documented in client/README.md).
const EXIT_ERROR: u8 = 1;
const EXIT_NOT_PAYING: u8 = 3;
const EXIT_HTTP_STATUS: u8 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "nanogate-pay",
    version,
    about = "Request a URL and pay its x402 (HTTP 402) challenge in Nano (XNO)",
    after_help = "The wallet seed (64 hex) comes from $NANOGATE_SEED or --seed-file.\n\
                  Progress goes to stderr; the status, receipt and body to stdout.\n\
                  Exit codes: 0 = 2xx, 1 = error, 2 = usage, 3 = refused to pay \
                  (over --max, no usable offer, pass not offered), 4 = final status not 2xx."
)]
struct Cli {
    /// The URL to request.
    url: String,
    /// HTTP method (default GET, or POST with -d).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<String>,
    /// Request body; `@FILE` reads it from a file.
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    data: Option<String>,
    /// Extra request header, `'Name: value'` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "K: V")]
    headers: Vec<String>,
    /// Never pay more than this many XNO.
    #[arg(long, value_name = ASSET_XNO, default_value = "0.01")]
    max: String,
    /// Nano node RPC URL.
    #[arg(long, env = "NANOGATE_RPC", default_value = DEFAULT_RPC_URL, value_name = "URL")]
    rpc: String,
    /// File holding the wallet seed (64 hex); overrides $NANOGATE_SEED.
    #[arg(long, value_name = "FILE")]
    seed_file: Option<PathBuf>,
    /// Account index in the wallet seed.
    #[arg(long, default_value_t = 0, value_name = "N")]
    index: u32,
    /// Journal file [default: $NANOGATE_JOURNAL, $XDG_STATE_HOME/nanogate/journal.json or
    /// ~/.local/state/nanogate/journal.json].
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    /// Compute proof of work locally instead of asking the node first.
    #[arg(long)]
    local_work: bool,
    /// Payment mechanism: `block` (sign a send the server publishes) or `tagged` (publish a
    /// send of the session's tagged amount ourselves, then present its hash with the session).
    #[arg(
        long,
        value_name = "block|tagged",
        default_value = Mechanism::SignedBlock.as_str(),
        value_parser = PossibleValuesParser::new(Mechanism::ALL.map(Mechanism::as_str))
            .try_map(|name| name.parse::<Mechanism>()),
    )]
    mechanism: Mechanism,
    /// Pay with the prepaid pass NAME: buy it when the 402 offers it (within --max), keep its
    /// token in the journal and present it on later requests to the same server until it is
    /// used up or expires, then buy the next.
    #[arg(long, value_name = "NAME")]
    pass: Option<String>,
    /// Seconds to wait for each HTTP answer (the paid retry includes settlement).
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
    /// Print one JSON object on stdout (for scripts).
    #[arg(long)]
    json: bool,
}

fn read_seed(cli: &Cli) -> Result<[u8; 32]> {
    let (text, source) = match &cli.seed_file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("reading seed file {}", path.display()))?,
            format!("seed file {}", path.display()),
        ),
        None => match std::env::var("NANOGATE_SEED") {
            Ok(s) if !s.trim().is_empty() => (s, "$NANOGATE_SEED".to_owned()),
            _ => bail!("no wallet: set NANOGATE_SEED (64 hex characters) or pass --seed-file"),
        },
    };
    // Never echo the seed, even partially, in the error.
    nanogate_protocol::hex::decode_array::<32>(text.trim())
        .map_err(|_| anyhow::anyhow!("{source} is not 64 hex characters"))
}

fn parse_header(h: &str) -> Result<(String, String)> {
    let Some((k, v)) = h.split_once(':') else {
        bail!("header `{h}` is not `Name: value`");
    };
    let k = k.trim();
    if k.is_empty() {
        bail!("header `{h}` has an empty name");
    }
    Ok((k.to_owned(), v.trim().to_owned()))
}

fn build_request(cli: &Cli) -> Result<RequestSpec> {
    let body = match &cli.data {
        Some(d) => Some(match d.strip_prefix('@') {
            Some(path) => {
                std::fs::read(path).with_context(|| format!("reading body from {path}"))?
            }
            None => d.clone().into_bytes(),
        }),
        None => None,
    };
    let method = cli
        .method
        .clone()
        .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.to_owned());
    let headers = cli
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    Ok(RequestSpec {
        method,
        url: cli.url.clone(),
        headers,
        body,
    })
}

fn print_human(resp: &PaidResponse) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "HTTP {}", resp.status)?;
    if let Some(p) = &resp.pass {
        let grant = p
            .requests
            .map(|r| format!(", {r} requests"))
            .unwrap_or_default();
        writeln!(
            out,
            "{} pass `{}` (group {}, id {}{grant})",
            if p.bought { "bought" } else { "on" },
            p.name,
            p.group,
            p.id
        )?;
    }
    if let Some(p) = &resp.payment {
        let receipt = receipt_json(resp);
        let tx = receipt["transaction"].as_str().unwrap_or(&p.hash);
        let verb = if resp.paid { "paid" } else { "presented" };
        writeln!(
            out,
            "{verb} {} XNO to {}{} — transaction {tx} (network {}, payer {})",
            format_xno(p.amount_raw),
            p.pay_to,
            if p.re_presented {
                " (journalled payment re-presented)"
            } else {
                ""
            },
            receipt["network"].as_str().unwrap_or(&p.network),
            receipt["payer"].as_str().unwrap_or(&p.payer),
        )?;
        if resp.receipt.is_none() {
            writeln!(out, "warning: no PAYMENT-RESPONSE receipt in the answer")?;
        } else if !resp.receipt_matches {
            writeln!(
                out,
                "warning: the receipt does not name our block {}",
                p.hash
            )?;
        }
    }
    writeln!(out)?;
    out.write_all(&resp.body)?;
    if !resp.body.ends_with(b"\n") && !resp.body.is_empty() {
        writeln!(out)?;
    }
    Ok(())
}

fn print_json(value: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_out = cli.json;
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            let pay = e.downcast_ref::<PayError>();
            if json_out {
                let _ = print_json(&json!({
                    "status": null,
                    "paid": false,
                    "body": null,
                    "receipt": null,
                    "pass": null,
                    "error": {
                        "kind": pay.map(PayError::kind).unwrap_or("usage"),
                        "message": format!("{e:#}"),
                        "hash": pay.and_then(PayError::block_hash),
                    },
                }));
            }
            eprintln!("nanogate-pay: {e:#}");
            let not_paying = matches!(
                pay,
                Some(
                    PayError::OverMax { .. }
                        | PayError::NoUsableOffer { .. }
                        | PayError::PassNotOffered { .. }
                )
            );
            ExitCode::from(if not_paying {
                EXIT_NOT_PAYING
            } else {
                EXIT_ERROR
            })
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let max_raw = parse_xno(cli.max.trim())
        .map_err(|e| anyhow::anyhow!("--max `{}`: {e} (give XNO, e.g. 0.01)", cli.max))?;
    let seed = read_seed(&cli)?;
    let key = PrivateKey::from_seed(&seed, cli.index);
    let journal = match cli
        .journal
        .clone()
        .or_else(nanogate_client::Journal::default_path)
    {
        Some(p) => p,
        None => bail!(
            "no journal location: set HOME, XDG_STATE_HOME or NANOGATE_JOURNAL, or pass --journal"
        ),
    };
    let req = build_request(&cli)?;
    let mut config = PayerConfig::new(cli.rpc.clone(), key, journal);
    config.max_raw = max_raw;
    config.local_work = cli.local_work;
    config.mechanism = cli.mechanism;
    config.http_timeout = Duration::from_secs(cli.timeout.max(1));
    if let Some(name) = &cli.pass {
        config = config.with_pass(name.clone());
    }
    config.progress = Some(Arc::new(|p: &Progress| eprintln!("{p}")));
    let payer = Payer::new(config)?;
    let resp = payer.fetch(req).await?;
    if cli.json {
        print_json(&json!({
            "status": resp.status,
            "paid": resp.paid,
            "body": resp.body_text(),
            "receipt": receipt_json(&resp),
            "pass": resp.pass.as_ref().map(PassUse::to_json),
        }))?;
    } else {
        print_human(&resp)?;
    }
    Ok(if (200..300).contains(&resp.status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_HTTP_STATUS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_reject() {
        assert_eq!(
            parse_header("Accept:  text/plain ").ok(),
            Some(("Accept".into(), "text/plain".into()))
        );
        assert!(parse_header("NoColon").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn method_defaults_to_post_with_data() {
        let cli = Cli::parse_from(["nanogate-pay", "http://x/", "-d", "a=1"]);
        let r = build_request(&cli).ok();
        assert_eq!(r.map(|r| r.method), Some("POST".to_owned()));
        let cli = Cli::parse_from(["nanogate-pay", "http://x/", "-X", "put", "-H", "A: b"]);
        let r = build_request(&cli).ok();
        assert_eq!(r.as_ref().map(|r| r.method.as_str()), Some("put"));
        assert_eq!(r.map(|r| r.headers), Some(vec![("A".into(), "b".into())]));
    }
}
