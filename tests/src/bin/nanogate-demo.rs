//! `nanogate-demo` (run it with `cargo xtask demo`): the whole system on fixed local ports — a
//! devnet with a funded demo wallet, the sidecar, a small upstream and Envoy with the filter —
//! then one request paid with the real `nanogate-pay`, step by step, then the commands to try
//! next. Serves until Ctrl-C, which stops every process it started.
//!
//! Test hooks: `NANOGATE_DEMO_PORTS` (see [`ports`]) and `NANOGATE_DEMO_DIR` (scratch directory,
//! default `target/nanogate-demo`).
//!
//! Needs `NANOGATE_ENVOY` and `NANOGATE_FILTER_WASM` (or `.venv/bin/envoy` and the filter built
//! with profile `wasm`), and `nanogate-sidecar` and `nanogate-pay` built next to it: `cargo
//! xtask demo` does all of that.

use nanogate_protocol::challenge;
use nanogate_protocol::nano::{format_xno, BlockHash, PrivateKey, PublicKey};
use nanogate_tests::procs::{die_with_parent, workspace_bin};
use nanogate_tests::stack::{FixedPorts, Stack, StackConfig, StoreKind, XNO};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

/// The demo wallet's seed. PUBLIC and for the local devnet only: never send real XNO to an
/// account derived from it.
const DEMO_SEED: &str = "D3E40000D3E40000D3E40000D3E40000D3E40000D3E40000D3E40000D3E40000";
/// The demo payee's seed (public too; the devnet never needs its key).
const PAYEE_SEED: [u8; 32] = [0x5E; 32];
/// The sidecar's admin (bearer) token in the demo: PUBLIC, for this local demo only.
const DEMO_ADMIN_TOKEN: &str = "demo-admin-token-not-secret";

const DEFAULT_PORTS: FixedPorts = FixedPorts {
    listener: 10000,
    admin: 9901,
    sidecar: 8402,
    rpc: 45000,
    ws: 47000,
    upstream: 8080,
};

/// The fixed ports, or `$NANOGATE_DEMO_PORTS` = `listener,admin,sidecar,rpc,ws,upstream` (the
/// demo's own test runs it on free ports that way).
fn ports() -> FixedPorts {
    let parsed: Option<Vec<u16>> = std::env::var("NANOGATE_DEMO_PORTS")
        .ok()
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).collect());
    match parsed.as_deref() {
        Some(&[listener, admin, sidecar, rpc, ws, upstream]) => FixedPorts {
            listener,
            admin,
            sidecar,
            rpc,
            ws,
            upstream,
        },
        _ => DEFAULT_PORTS,
    }
}

fn bold(s: &str) -> String {
    if std::env::var_os("NO_COLOR").is_some() {
        s.to_owned()
    } else {
        format!("\x1b[1m{s}\x1b[0m")
    }
}

fn step(n: u32, title: &str) {
    println!("\n{}", bold(&format!("── step {n}: {title}")));
}

fn demo_key() -> PrivateKey {
    let seed = nanogate_protocol::hex::decode_array::<32>(DEMO_SEED).unwrap_or([0; 32]);
    PrivateKey::from_seed(&seed, 0)
}

/// Every fixed port must be free, or the demo says which one is taken.
fn check_ports() -> Result<(), String> {
    let wanted = [
        (ports().listener, "Envoy listener"),
        (ports().admin, "Envoy admin"),
        (ports().sidecar, "sidecar"),
        (ports().rpc, "devnet RPC"),
        (ports().ws, "devnet WebSocket"),
        (ports().upstream, "upstream"),
    ];
    let busy: Vec<String> = wanted
        .iter()
        .filter(|(p, _)| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
        .map(|(p, what)| format!("127.0.0.1:{p} ({what})"))
        .collect();
    if busy.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "port(s) in use: {}. Is another demo running? Stop it (Ctrl-C) or free the port(s).",
            busy.join(", ")
        ))
    }
}

async fn start() -> Stack {
    let dir = std::env::var_os("NANOGATE_DEMO_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| nanogate_tests::workspace_root().join("target/nanogate-demo"));
    let _ = std::fs::remove_dir_all(&dir);
    let payee = PrivateKey::from_seed(&PAYEE_SEED, 0).public_key();
    Stack::start(StackConfig {
        store: StoreKind::Sqlite,
        gates: 1,
        max_wait_secs: 10,
        wallets: 0,
        fund: vec![(demo_key().public_key(), 10 * XNO)],
        payee,
        ports: Some(ports()),
        sidecar_log: std::env::var("NANOGATE_DEMO_SIDECAR_LOG").unwrap_or_else(|_| "info".into()),
        sidecar_env: vec![(
            "NANOGATE_FACILITATOR_TOKEN".to_owned(),
            DEMO_ADMIN_TOKEN.to_owned(),
        )],
        dir: Some(dir),
        ..StackConfig::default()
    })
    .await
}

/// Step 1: the unpaid request and its challenge.
async fn show_challenge(url: &str) -> Result<(), String> {
    println!("$ curl -i {url}");
    let r = reqwest::get(url).await.map_err(|e| e.to_string())?;
    let status = r.status();
    let header = r
        .headers()
        .get("payment-required")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    println!("HTTP {status}");
    let Some(header) = header else {
        return Err(format!(
            "expected a 402 with PAYMENT-REQUIRED, got {status}"
        ));
    };
    let shown = if header.len() > 72 {
        format!("{}…", &header[..72])
    } else {
        header.clone()
    };
    println!("PAYMENT-REQUIRED: {shown}");
    let pr: nanogate_protocol::x402::PaymentRequired =
        nanogate_protocol::x402::decode_header(&header, 64 * 1024).map_err(|e| e.to_string())?;
    let a = pr.accepts.first().ok_or("no offer in the 402")?;
    let raw = nanogate_protocol::nano::parse_raw(&a.amount).map_err(|e| e.to_string())?;
    println!("decoded (base64 JSON, x402 v{}):", pr.x402_version);
    println!("  resource     {}", pr.resource.url);
    println!(
        "  price        {} XNO ({} raw), scheme {}, asset {}",
        format_xno(raw),
        a.amount,
        a.scheme,
        a.asset
    );
    println!("  pay to       {}", a.pay_to);
    println!("  network      {}", a.network);
    if let Ok((stamp, _)) = challenge::read_extra(&a.extra) {
        println!(
            "  challenge    nonce {} valid for {} s, bound by a MAC under key #{}",
            nanogate_protocol::hex::encode_lower(&stamp.nonce),
            a.max_timeout_seconds,
            stamp.key_id
        );
    }
    Ok(())
}

/// Step 2: `nanogate-pay`, its progress streamed as it happens.
async fn pay(url: &str, stack: &Stack) -> Result<String, String> {
    let bin = workspace_bin("nanogate-pay");
    let journal = stack.dir().join("journal.json");
    println!(
        "$ NANOGATE_SEED=<demo seed> {} {url} --journal {}",
        bin.display(),
        journal.display()
    );
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg(url)
        .arg("--rpc")
        .arg(stack.devnet.rpc_url())
        .arg("--journal")
        .arg(&journal)
        .env("NANOGATE_SEED", DEMO_SEED)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("  nanogate-pay │ {line}");
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .map_err(|_| "nanogate-pay did not finish within 120 s".to_string())?
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("  (paid request answered in {:?})", started.elapsed());
    if !out.status.success() {
        return Err(format!("nanogate-pay failed ({}):\n{stdout}", out.status));
    }
    Ok(stdout)
}

/// Step 3: the ledger's view of the payment.
async fn show_confirmation(stack: &Stack, payer: &PublicKey) -> Result<BlockHash, String> {
    let ledger = stack.ledger();
    let a = ledger
        .account(payer)
        .ok_or("the demo account is not open")?;
    let hash = a.frontier;
    let confirmed = ledger.wait_confirmed(&hash, Duration::from_secs(10)).await;
    let (amount, dest, height) = ledger.read(|l| {
        l.block(&hash)
            .map(|b| (b.amount, b.destination, b.height))
            .unwrap_or((0, None, 0))
    });
    println!(
        "block {hash} ({}): send of {} XNO from {} to {}, height {height}",
        if confirmed {
            "CONFIRMED"
        } else {
            "not confirmed"
        },
        format_xno(amount),
        payer.to_address(),
        dest.map(|d| d.to_address()).unwrap_or_default(),
    );
    println!(
        "demo wallet balance now {} XNO",
        format_xno(ledger.balance(payer))
    );
    if !confirmed {
        return Err("the payment is not confirmed on the devnet".into());
    }
    Ok(hash)
}

fn next_steps(stack: &Stack) {
    let pay = workspace_bin("nanogate-pay");
    let base = format!("http://127.0.0.1:{}", ports().listener);
    println!("\n{}", bold("── try it yourself (the demo keeps serving)"));
    println!(
        "  curl -i {base}/paid/report                  # 402 + PAYMENT-REQUIRED (base64 JSON)"
    );
    println!(
        "  curl -i {base}/paid/free                    # a free route: straight to the upstream"
    );
    let rpc = if ports().rpc == DEFAULT_PORTS.rpc {
        String::new()
    } else {
        format!(" --rpc http://127.0.0.1:{}", ports().rpc)
    };
    println!(
        "  NANOGATE_SEED={DEMO_SEED} \\\n    {} {base}/paid/report{rpc}",
        pay.display()
    );
    println!(
        "  NANOGATE_SEED={DEMO_SEED} \\\n    {} --pass three {base}/passes/report{rpc}   # buys a 3-request pass (docs/passes.md)",
        pay.display()
    );
    println!(
        "  NANOGATE_SEED={DEMO_SEED} \\\n    {} --pass three {base}/passes-too/x{rpc}    # rides on it: no payment, no sidecar call",
        pay.display()
    );
    println!("  {} --help", pay.display());
    println!(
        "  open {base}/tagged/report in a browser        # the paywall: QR code for any Nano wallet"
    );
    println!(
        "  open {base}/tagged-passes/report in a browser # the paywall selling passes (cookie)"
    );
    println!(
        "  curl -s 'http://127.0.0.1:{}/stats?filter=wasmcustom'   # filter counters",
        ports().admin
    );
    println!(
        "  curl -s http://127.0.0.1:{}/metrics               # sidecar metrics",
        ports().sidecar
    );
    let admin = workspace_bin("nanogate-admin");
    let sidecar = format!("http://127.0.0.1:{}", ports().sidecar);
    println!("\n{}", bold("── operate it (docs/operate.md)"));
    println!("  export NANOGATE_ADMIN_URL={sidecar} NANOGATE_ADMIN_TOKEN={DEMO_ADMIN_TOKEN}");
    println!(
        "  {} payments                # every payment and its state",
        admin.display()
    );
    println!(
        "  {} revenue --by route      # earned per route, XNO and raw",
        admin.display()
    );
    println!(
        "  {} owed                    # what is owed back, per payer",
        admin.display()
    );
    println!("  {} payments --csv > payments.csv", admin.display());
    println!(
        "  {} passes                  # prepaid passes sold on /passes/ (revoke ID revokes one)",
        admin.display()
    );
    println!(
        "  {} refund                  # owed payments back to their payers (docs/refunds.md)",
        admin.display()
    );
    println!("  dashboard: {sidecar}/dashboard#token={DEMO_ADMIN_TOKEN}");
    println!(
        "\n  The demo seed and admin token above are PUBLIC and for this local devnet only; never use\n  them for real XNO."
    );
    println!("  Logs and configs: {}", stack.dir().display());
    println!(
        "  Envoy log: {}",
        stack.gate(0).envoy.dir().join("envoy.log").display()
    );
    println!("\nPress Ctrl-C to stop everything.");
}

async fn walkthrough(stack: &Stack) -> Result<(), String> {
    let payer = demo_key().public_key();
    let url = format!("http://127.0.0.1:{}/paid/report", ports().listener);
    step(1, "an unpaid request gets a 402 challenge from the filter");
    show_challenge(&url).await?;
    step(
        2,
        "nanogate-pay signs a Nano send for the price and retries",
    );
    let stdout = pay(&url, stack).await?;
    step(
        3,
        "the sidecar settled it on the ledger before anything was served",
    );
    let hash = show_confirmation(stack, &payer).await?;
    step(4, "200 with the receipt (PAYMENT-RESPONSE)");
    for line in stdout.lines() {
        println!("  {line}");
    }
    if !stdout.contains(&hash.to_hex()) {
        return Err(format!("the receipt does not name block {hash}"));
    }
    let seen = stack.upstream.requests_to("/paid/report");
    let leaked = seen
        .iter()
        .any(|r| r.header("payment-signature").is_some() || r.header("x-payment").is_some());
    println!(
        "the upstream saw {} request(s) to /paid/report, {} payment header",
        seen.len(),
        if leaked { "WITH a" } else { "without any" }
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        _ => {
            eprintln!("nanogate-demo: cannot install signal handlers");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stop = async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    };
    tokio::pin!(stop);

    println!(
        "{}",
        bold("nanogate demo: x402 payments in Nano at the Envoy edge")
    );
    if let Err(e) = check_ports() {
        eprintln!("nanogate-demo: {e}");
        return std::process::ExitCode::FAILURE;
    }
    println!("starting: devnet, sidecar, upstream, Envoy with the filter …");
    let t = Instant::now();
    let stack = tokio::select! {
        s = start() => s,
        _ = &mut stop => {
            println!("\nstopped during start-up");
            return std::process::ExitCode::SUCCESS;
        }
    };
    let payer = demo_key().public_key();
    println!("ready in {:.1} s:", t.elapsed().as_secs_f64());
    println!(
        "  devnet        RPC {}  WebSocket {}",
        stack.devnet.rpc_url(),
        stack.devnet.ws_url()
    );
    println!(
        "  demo wallet   {} funded with {} XNO (seed index 0)",
        payer.to_address(),
        format_xno(stack.ledger().balance(&payer))
    );
    println!(
        "  sidecar       {} (SQLite in {}, pid {})",
        stack.gate(0).sidecar.base_url(),
        stack.dir().display(),
        stack
            .gate(0)
            .sidecar
            .pid()
            .map(|p| p.to_string())
            .unwrap_or_default()
    );
    println!("  upstream      http://127.0.0.1:{}", ports().upstream);
    println!(
        "  Envoy         http://127.0.0.1:{} (admin http://127.0.0.1:{}, pid {})",
        ports().listener,
        ports().admin,
        stack.gate(0).envoy.pid()
    );
    println!(
        "  routes        /paid/* 0.001 XNO · /tagged/* 0.001 XNO, also payable from any Nano \
         wallet (browser paywall) · /preview/* 1000 raw (fail-open) · /paid/free and everything \
         else free"
    );
    println!("  payee         {}", stack.payee.to_address());

    let result = tokio::select! {
        r = walkthrough(&stack) => r,
        _ = &mut stop => {
            println!("\nstopping …");
            drop(stack);
            println!("stopped: Envoy, sidecar, upstream and devnet");
            return std::process::ExitCode::SUCCESS;
        }
    };
    if let Err(e) = result {
        eprintln!("\nnanogate-demo: {e}\n{}", stack.diagnostics());
        drop(stack);
        return std::process::ExitCode::FAILURE;
    }
    next_steps(&stack);
    (&mut stop).await;
    println!("\nstopping …");
    drop(stack);
    println!("stopped: Envoy, sidecar, upstream and devnet");
    std::process::ExitCode::SUCCESS
}
