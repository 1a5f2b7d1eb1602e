//! The money-conservation run (`cargo xtask chaos`): payers pay for requests through the real
//! stack while faults are injected at random from a seeded RNG; then every fault is lifted,
//! every payer retries what it was not served, and the run checks that
//!
//! 1. every send that reached our accounts on the ledger is in exactly one payment state —
//!    served, redeemable or owed, none still admitted — and the sums agree to the raw
//!    ([`accounting`], read from the sidecar's `GET /v1/admin/payments` and `/metrics`);
//! 2. no request reached the upstream without a payment ([`checks::service`]);
//! 3. no payment bought two responses (each paying hash answered below 500 at most once);
//! 4. no sidecar or Envoy log shows a panic or a wasm trap.
//!
//! The seed fixes the fault schedule, the payers' choices and the gates they use; the
//! interleaving with real processes still varies from run to run.

pub mod accounting;
pub mod checks;
pub mod faults;
pub mod payers;

use crate::stack::{Stack, StackConfig, StoreKind, PRICE_RAW, XNO};
use nanogate_protocol::nano::PrivateKey;
use payers::{ChaosPayer, Mechanism, RequestLog, Target};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The sidecars' facilitator/admin bearer token in a chaos run.
pub const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789abcdef";

/// How long and how hard to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    pub store: StoreKind,
    /// How long payers pay while faults are injected.
    pub fault_secs: u64,
    /// How long payers may retry once faults are lifted.
    pub settle_secs: u64,
    pub payers: usize,
    /// Requests per payer at most.
    pub max_requests: usize,
    /// Keep the scratch directory (logs, stores) even when every check passes.
    pub keep_dir: bool,
}

impl ChaosConfig {
    /// About two minutes in all, start-up included.
    pub fn quick(seed: u64, store: StoreKind) -> ChaosConfig {
        ChaosConfig {
            seed,
            store,
            fault_secs: 45,
            settle_secs: 50,
            payers: 4,
            max_requests: 40,
            keep_dir: false,
        }
    }

    /// Ten minutes of faults.
    pub fn full(seed: u64, store: StoreKind) -> ChaosConfig {
        ChaosConfig {
            seed,
            store,
            fault_secs: 600,
            settle_secs: 180,
            payers: 8,
            max_requests: 600,
            keep_dir: false,
        }
    }

    /// The command that runs this configuration again.
    pub fn command(&self) -> String {
        format!(
            "cargo xtask chaos --seed {} --secs {} --store {}",
            self.seed,
            self.fault_secs,
            match self.store {
                StoreKind::Sqlite => "sqlite",
                StoreKind::Postgres => "postgres",
            }
        )
    }
}

/// The run's findings: the report printed, and every failed check.
#[derive(Debug)]
pub struct Verdict {
    pub report: String,
    pub failures: Vec<String>,
    /// Scratch directory with every log (kept when a check failed).
    pub dir: PathBuf,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs the whole thing. `Err` only when the stack itself could not be run (a process that
/// would not start again); check failures are in the [`Verdict`].
pub async fn run(cfg: &ChaosConfig) -> Result<Verdict, String> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let dir = std::env::temp_dir().join(format!(
        "nanogate-chaos-{}-{}",
        std::process::id(),
        cfg.seed
    ));
    let gates = match cfg.store {
        StoreKind::Sqlite => 1,
        StoreKind::Postgres => 2,
    };
    // The shipped defaults for everything a fault is about: the sidecar's 8 s wait and node
    // retries, the filter's 10 s timeout, the key period, the outcome and redemption rules.
    let mut stack = Stack::start(StackConfig {
        store: cfg.store,
        gates,
        max_wait_secs: 8,
        sidecar_timeout_ms: Some(10_000),
        rpc_retries: 2,
        wallets: cfg.payers as u32,
        wallet_balance: XNO,
        sidecar_env: vec![(
            "NANOGATE_FACILITATOR_TOKEN".to_owned(),
            ADMIN_TOKEN.to_owned(),
        )],
        dir: Some(dir.clone()),
        ..StackConfig::default()
    })
    .await;
    let startup = started.elapsed();
    let wallets: Vec<_> = (0..cfg.payers).map(|_| stack.wallet()).collect();
    let target = Target {
        gates: stack
            .gates
            .iter()
            .map(|g| format!("http://127.0.0.1:{}", g.listener))
            .collect(),
        rpc_url: stack.devnet.rpc_url(),
        dir: dir.clone(),
    };

    // Payers: half sign blocks, half pay tagged sessions.
    let drive_until = Instant::now() + Duration::from_secs(cfg.fault_secs);
    let (settle_tx, settle_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let mut tasks = Vec::new();
    for (i, w) in wallets.iter().enumerate() {
        let mechanism = if i % 2 == 0 {
            Mechanism::SignedBlock
        } else {
            Mechanism::Tagged
        };
        let mut payer = ChaosPayer::new(i, mechanism, w.clone(), target.clone(), cfg.seed)?;
        let max = cfg.max_requests;
        let mut settle = settle_rx.clone();
        tasks.push(tokio::spawn(async move {
            payer.drive(drive_until, max).await;
            let until = settle.wait_for(Option::is_some).await.ok().and_then(|u| *u);
            if let Some(until) = until {
                payer.settle(until).await;
            }
            payer.into_requests()
        }));
    }

    // Faults until the drive phase ends.
    let mut envoy_logs = Vec::new();
    let mut admitted: u64 = 0;
    let elsewhere = PrivateKey::from_seed(&[0xC4; 32], 0).public_key();
    let injected = {
        let mut cx = faults::Context {
            wallets: &wallets,
            elsewhere,
            envoy_logs: &mut envoy_logs,
            admitted_before_restarts: &mut admitted,
        };
        faults::inject(&mut stack, &mut rng, drive_until, &mut cx).await
    };
    let injected = match injected {
        Ok(i) => i,
        Err(e) => return Err(format!("{e}\n{}", stack.diagnostics())),
    };
    let unfired_forks = faults::lift_all(&mut stack).await?;
    // Everything published confirms once the ledger is healthy again.
    let ledger = stack.ledger();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ledger.read(|l| l.unconfirmed().is_empty()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settle_until = Instant::now() + Duration::from_secs(cfg.settle_secs);
    let _ = settle_tx.send(Some(settle_until));
    let mut requests: Vec<RequestLog> = Vec::new();
    for t in tasks {
        requests.extend(t.await.map_err(|e| format!("a payer task failed: {e}"))?);
    }
    // Outcome reports and any reconciliation get a moment after the last response.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut report = String::new();
    let mut failures = Vec::new();
    let _ = writeln!(
        report,
        "chaos: seed {} · store {:?} · {} gate(s) · {} payers · {} s of faults · start-up {:.1} s",
        cfg.seed,
        cfg.store,
        stack.gates.len(),
        cfg.payers,
        cfg.fault_secs,
        startup.as_secs_f64()
    );
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for f in &injected {
        *by_kind.entry(format!("{:?}", f.kind)).or_default() += 1;
    }
    let _ = writeln!(
        report,
        "faults injected: {} {by_kind:?} ({unfired_forks} fork rule(s) never fired)",
        injected.len()
    );
    summarize_requests(&mut report, &requests);

    // 1. Conservation, against the ledger.
    let payee = stack.payee;
    let unconfirmed = ledger.read(|l| l.unconfirmed().len());
    let sends: Vec<accounting::LedgerSend> = ledger.read(|l| {
        l.receivable(&payee)
            .into_iter()
            .filter(|(h, _)| l.is_confirmed(h))
            .map(|(h, p)| accounting::LedgerSend {
                hash: h.to_hex(),
                amount: p.amount,
                from: p.source.to_address(),
            })
            .collect()
    });
    let paid: BTreeMap<String, u128> = sends.iter().map(|s| (s.hash.clone(), s.amount)).collect();
    let ledger_raw: u128 = sends.iter().map(|s| s.amount).sum();
    let _ = writeln!(
        report,
        "ledger: {} confirmed send(s) to our accounts, {ledger_raw} raw ({unconfirmed} block(s) still unconfirmed)",
        sends.len()
    );
    let records = stack.upstream.requests();
    let base = stack.gates[0].sidecar.base_url();
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    match accounting::fetch_payments(&base, ADMIN_TOKEN).await {
        Err(e) => {
            let _ = writeln!(report, "payments API: {e}");
            failures.push(format!("conservation cannot be checked: {e}"));
        }
        Ok(rows) => {
            let c = accounting::conservation(&sends, &rows);
            let _ = writeln!(
                report,
                "payments API: {} row(s); per state (count, raw): {:?}; served + redeemable + owed = {} raw",
                rows.len(),
                c.by_state,
                c.accounted_raw()
            );
            for p in c.problems() {
                failures.push(format!("conservation: {p}"));
            }
            // What the payer of each lost payment went through.
            for lost in c.missing.iter().take(10) {
                for r in requests.iter().filter(|r| r.hashes.contains(&lost.hash)) {
                    let _ = writeln!(
                        report,
                        "  lost: {} ({} {}): {}",
                        lost.hash,
                        r.method,
                        r.path,
                        trail_text(r)
                    );
                }
            }
            failures.extend(redeemable_but_refused(&rows, &requests));
            failures.extend(served_without_a_response(&rows, &records));
            listed = rows.into_iter().map(|r| (r.hash, r.state)).collect();
            // The gauges say the same as the list.
            let metrics = stack.gates[0].sidecar.metrics().await;
            let gauges = accounting::metric_totals(&metrics);
            if !accounting::gauges_agree(&gauges, &c.by_state) {
                failures.push(format!(
                    "metrics: nanogate_payments{{state}}/nanogate_payments_raw{{state}} say {gauges:?}, \
                     the payments API {:?}",
                    c.by_state
                ));
            }
        }
    }

    // What became of each payment a payer holds without being served.
    for r in requests.iter().filter(|r| r.served.is_none()) {
        for h in &r.hashes {
            let seen: Vec<String> = records
                .iter()
                .filter(|x| {
                    x.header(checks::TRANSACTION_HEADER)
                        .is_some_and(|t| t.eq_ignore_ascii_case(h))
                })
                .map(|x| format!("{:?}", x.outcome))
                .collect();
            let listing = match (listed.get(h), paid.contains_key(h)) {
                (Some(state), _) => state.as_str(),
                (None, true) => "nowhere",
                (None, false) => "nowhere (never a confirmed send to us)",
            };
            let _ = writeln!(
                report,
                "  unserved {} {}: {h} listed {listing}, upstream saw it {seen:?}",
                r.method, r.path
            );
        }
    }

    // 2 and 3. What the upstream saw.
    let service = checks::service(
        &records,
        &[Mechanism::SignedBlock.prefix(), Mechanism::Tagged.prefix()],
        &paid,
        PRICE_RAW,
    );
    for g in &stack.gates {
        admitted += g.counter("payments_admitted").await;
    }
    let _ = writeln!(
        report,
        "upstream: {} request(s) on paid routes, {} answered below 500; the filters admitted {admitted}",
        service.reached, service.answered
    );
    failures.extend(service.problems());
    for hash in service.doubles.keys() {
        for r in requests.iter().filter(|r| r.hashes.contains(hash)) {
            let _ = writeln!(
                report,
                "  bought twice: {hash} ({} {}, listed {}): {}",
                r.method,
                r.path,
                listed.get(hash).map_or("nowhere", String::as_str),
                trail_text(r)
            );
        }
    }
    // Every request on a paid route that reached the upstream was admitted first (the
    // payers' paths have no fail-open route).
    if service.reached as u64 > admitted {
        failures.push(format!(
            "the upstream saw {} request(s) on paid routes, but the filters admitted only {admitted}",
            service.reached
        ));
    }

    // Never paid twice for one request: at most one of its blocks settled.
    let twice: Vec<&RequestLog> = requests
        .iter()
        .filter(|r| r.hashes.iter().filter(|h| ledger_has(&ledger, h)).count() > 1)
        .collect();
    if !twice.is_empty() {
        failures.push(format!(
            "{} request(s) paid twice on the ledger: {:?}",
            twice.len(),
            twice.iter().take(3).collect::<Vec<_>>()
        ));
    }

    // 4. Panics in any log, restarted processes included.
    let mut logs = envoy_logs;
    for (i, g) in stack.gates.iter().enumerate() {
        logs.push((format!("gate {i} envoy"), g.envoy.log()));
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("sidecar-") && name.ends_with(".log") {
                logs.push((name, std::fs::read_to_string(e.path()).unwrap_or_default()));
            }
        }
    }
    let panics = checks::panics(&logs);
    let _ = writeln!(
        report,
        "logs: {} scanned, {} panic/trap line(s)",
        logs.len(),
        panics.len()
    );
    for (name, line) in panics.iter().take(5) {
        failures.push(format!("panic in {name}: {line}"));
    }
    let _ = writeln!(
        report,
        "took {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    let passed = failures.is_empty();
    if !passed {
        // Envoy's own directories go with it: keep its logs next to the sidecars'.
        for (i, (name, text)) in logs.iter().enumerate() {
            if name.contains("envoy") {
                let _ = std::fs::write(dir.join(format!("envoy-{i}.log")), text);
            }
        }
    }
    drop(stack);
    if passed && !cfg.keep_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Verdict {
        report,
        failures,
        dir,
    })
}

/// A payment listed `redeemable` must be: a payer whose last re-presentation of it was refused
/// (other than "the first use is still in flight") holds a payment that buys nothing.
fn redeemable_but_refused(rows: &[accounting::PaymentRow], requests: &[RequestLog]) -> Vec<String> {
    let redeemable: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.state == "redeemable")
        .map(|r| r.hash.as_str())
        .collect();
    requests
        .iter()
        .filter(|r| r.served.is_none())
        .filter_map(|r| {
            let reason = r.refused.as_deref()?;
            if reason == "duplicate_settlement" {
                return None;
            }
            let hash = r.hashes.iter().find(|h| redeemable.contains(h.as_str()))?;
            Some(format!(
                "payment {hash} is listed redeemable, but presenting it again for {} {} is refused ({reason})",
                r.method, r.path
            ))
        })
        .collect()
}

/// A payment listed `served` bought a response: the upstream answered it below 500 at least
/// once. (The payers never reset their own requests, so no "client gave up" serves here.)
fn served_without_a_response(
    rows: &[accounting::PaymentRow],
    records: &[crate::upstream::Recorded],
) -> Vec<String> {
    let answered: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| matches!(r.outcome, crate::upstream::Outcome::Answered(s) if s < 500))
        .filter_map(|r| r.header(checks::TRANSACTION_HEADER))
        .map(str::to_ascii_uppercase)
        .collect();
    rows.iter()
        .filter(|r| r.state == "served" && !answered.contains(&r.hash))
        .map(|r| {
            format!(
                "payment {} ({}) is listed served, but the upstream never answered it below 500",
                r.hash,
                r.resource_or_mechanism()
            )
        })
        .collect()
}

/// A request's answers, oldest first: "HTTP 503 ×3 → served".
fn trail_text(r: &RequestLog) -> String {
    r.trail
        .iter()
        .map(|(t, n)| {
            if *n > 1 {
                format!("{t} ×{n}")
            } else {
                t.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

fn ledger_has(ledger: &nanogate_devnet::LedgerHandle, hash: &str) -> bool {
    nanogate_protocol::nano::BlockHash::from_hex(hash)
        .is_ok_and(|h| ledger.confirmed(&h) == Some(true))
}

fn summarize_requests(report: &mut String, requests: &[RequestLog]) {
    for m in [Mechanism::SignedBlock, Mechanism::Tagged] {
        let of: Vec<&RequestLog> = requests.iter().filter(|r| r.mechanism == m).collect();
        let served = of.iter().filter(|r| r.served.is_some()).count();
        let paid_unserved: Vec<&&RequestLog> = of
            .iter()
            .filter(|r| r.served.is_none() && !r.hashes.is_empty())
            .collect();
        let unpaid = of.len() - served - paid_unserved.len();
        let attempts: u32 = of.iter().map(|r| r.attempts).sum();
        let _ = writeln!(
            report,
            "{m:?} requests: {} ({attempts} attempts): served {served}, paid but not served {}, never paid {unpaid}",
            of.len(),
            paid_unserved.len()
        );
        let mut why: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &paid_unserved {
            *why.entry(r.last.as_str()).or_default() += 1;
        }
        for (last, n) in why.iter().take(8) {
            let short: String = last.chars().take(400).collect();
            let _ = writeln!(report, "  not served ×{n}: {short}");
        }
        for r in paid_unserved.iter().take(5) {
            let _ = writeln!(
                report,
                "  {} {} paid with {:?}: {}",
                r.method,
                r.path,
                r.hashes,
                trail_text(r)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(hash: &str, refused: Option<&str>, served: bool) -> RequestLog {
        RequestLog {
            payer: 0,
            mechanism: Mechanism::SignedBlock,
            method: "GET".into(),
            path: "/paid/chaos/p0/r0".into(),
            attempts: 3,
            served: served.then(|| hash.to_owned()),
            hashes: vec![hash.to_owned()],
            last: String::new(),
            trail: Vec::new(),
            refused: refused.map(str::to_owned),
        }
    }

    fn row(hash: &str, state: &str) -> accounting::PaymentRow {
        accounting::PaymentRow {
            hash: hash.into(),
            payer: String::new(),
            pay_to: String::new(),
            amount: 1,
            state: state.into(),
            reason: None,
            mechanism: None,
            resource: None,
        }
    }

    #[test]
    fn a_redeemable_payment_that_its_payer_cannot_redeem_is_a_failure() {
        let rows = [
            row("AA", "redeemable"),
            row("BB", "owed"),
            row("CC", "redeemable"),
        ];
        let requests = [
            request("AA", Some("already_spent"), false),
            // Owed: refusing it is right.
            request("BB", Some("already_spent"), false),
            // Still in flight elsewhere: not a refusal.
            request("CC", Some("duplicate_settlement"), false),
        ];
        let f = redeemable_but_refused(&rows, &requests);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].contains("AA") && f[0].contains("already_spent"),
            "{f:?}"
        );
        assert!(redeemable_but_refused(&rows, &[request("AA", None, false)]).is_empty());
    }

    #[test]
    fn a_payment_listed_served_without_any_upstream_answer_is_a_failure() {
        use crate::upstream::{Outcome, Recorded};
        let rec = |tx: &str, outcome| Recorded {
            method: "GET".into(),
            path: "/paid/chaos/p0/r0".into(),
            headers: vec![(checks::TRANSACTION_HEADER.to_owned(), tx.to_owned())],
            body: Vec::new(),
            outcome,
        };
        let rows = [
            row("AA", "served"),
            row("BB", "served"),
            row("CC", "redeemable"),
        ];
        let records = [
            rec("aa", Outcome::Answered(200)),
            rec("BB", Outcome::Answered(503)),
            rec("BB", Outcome::Reset),
        ];
        let f = served_without_a_response(&rows, &records);
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("BB"), "{f:?}");
    }
}
