//! End to end, refunds of owed payments and pocketing (docs/refunds.md): the real sidecar
//! (SQLite or PostgreSQL) with Envoy and the filter in front, the devnet, and the operator's
//! `nanogate-admin` command line, with the shipped settings (8 s settlement wait, a 60 s
//! pocketing interval, work from the node). An owed payment is produced as an operator meets
//! one: a payer sends straight to the payee account instead of paying through the gate, and the
//! sidecar lists it `owed` (`unmatched`) once the settle window has passed.

use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey};
use nanogate_tests::procs::workspace_bin;
use nanogate_tests::stack::{Stack, StackConfig, StoreKind, Wallet, PRICE_RAW, XNO};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// A stack whose routes pay `payee`, followed from the start (`NANOGATE_PAY_TO`); with
/// `seed`, the sidecar holds the payee's key (`NANOGATE_WALLET_SEED`).
fn config(payee: PublicKey, seed: Option<&[u8; 32]>, store: StoreKind) -> StackConfig {
    let mut env = vec![
        (
            "NANOGATE_FACILITATOR_TOKEN".to_owned(),
            ADMIN_TOKEN.to_owned(),
        ),
        ("NANOGATE_PAY_TO".to_owned(), payee.to_address()),
    ];
    if let Some(seed) = seed {
        env.push((
            "NANOGATE_WALLET_SEED".to_owned(),
            nanogate_protocol::hex::encode_upper(seed),
        ));
    }
    StackConfig {
        store,
        max_wait_secs: 8,
        sidecar_timeout_ms: Some(10_000),
        wallets: 4,
        payee,
        sidecar_env: env,
        ..StackConfig::default()
    }
}

/// `nanogate-admin ARGS` against gate 0's sidecar: (exit code, stdout, stderr).
async fn cli(s: &Stack, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(workspace_bin("nanogate-admin"))
        .args(args)
        .env("NANOGATE_ADMIN_URL", s.gate(0).sidecar.base_url())
        .env("NANOGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("nanogate-admin runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let r = (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    );
    eprintln!("nanogate-admin {args:?} → {}\n{}{}", r.0, r.1, r.2);
    r
}

async fn payment_row(s: &Stack, hash: &BlockHash) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v1/admin/payments?limit=1000",
            s.gate(0).sidecar.base_url()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["payments"]
        .as_array()?
        .iter()
        .find(|p| p["hash"] == json!(hash.to_hex()))
        .cloned()
}

async fn wait_for_state(s: &Stack, hash: &BlockHash, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let row = payment_row(s, hash).await;
        if row.as_ref().map(|r| &r["state"]) == Some(&json!(state)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "payment {hash} never became {state}: {row:?}\n{}",
            s.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `w` sends `amount` straight to the payee (not through the gate): confirmed, then listed
/// owed by the sidecar.
async fn owed_payment(s: &Stack, w: &Wallet, amount: u128) -> BlockHash {
    let hash = send(s, &w.key, s.payee, amount).await;
    wait_for_state(s, &hash, "owed", Duration::from_secs(90)).await;
    hash
}

/// A confirmed send of `amount` from `key`'s account to `to`.
async fn send(s: &Stack, key: &PrivateKey, to: PublicKey, amount: u128) -> BlockHash {
    let block = s.send_block(key, to, amount);
    let hash = s
        .ledger()
        .process(&block)
        .expect("the devnet takes the send");
    assert!(s.confirmed(&hash, Duration::from_secs(20)).await);
    hash
}

/// Blocks on `from`'s chain whose link is `to` (its sends to `to`).
fn sends(s: &Stack, from: PublicKey, to: PublicKey) -> Vec<BlockHash> {
    s.ledger().read(|l| {
        l.order()
            .iter()
            .filter(|h| {
                l.block(h)
                    .and_then(|e| e.state())
                    .is_some_and(|b| b.account == from && b.link == to.0)
            })
            .copied()
            .collect()
    })
}

/// What `payer` can receive from `from`: (send, amount).
fn receivable_from(s: &Stack, payer: PublicKey, from: PublicKey) -> Vec<(BlockHash, u128)> {
    s.ledger().read(|l| {
        l.receivable(&payer)
            .into_iter()
            .filter(|(_, p)| p.source == from)
            .map(|(h, p)| (h, p.amount))
            .collect()
    })
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn refund_with_the_payee_key_pays_each_owed_amount_back_exactly_once() {
    // PostgreSQL: the refund states and the refunds table on the replicas' backend.
    let seed: [u8; 32] = rand::random();
    let payee = PrivateKey::from_seed(&seed, 0).public_key();
    let s = Stack::start(config(payee, Some(&seed), StoreKind::Postgres)).await;
    let (w1, w2) = (s.wallet(), s.wallet());
    let a1 = PRICE_RAW + 17;
    let a2 = 3 * PRICE_RAW;
    let p1 = owed_payment(&s, &w1, a1).await;
    let p2 = owed_payment(&s, &w2, a2).await;
    // The payee account holds nothing yet: both sends are receivable. The refund pockets them
    // first, then sends each amount back.
    let (code, out, _) = cli(&s, &["refund"]).await;
    assert_eq!(code, 0, "{out}\n{}", s.diagnostics());
    assert_eq!(out.matches("  refunded  ").count(), 2, "{out}");
    for (p, w, amount) in [(p1, &w1, a1), (p2, &w2, a2)] {
        wait_for_state(&s, &p, "refunded", Duration::from_secs(5)).await;
        let back = sends(&s, payee, w.account());
        assert_eq!(back.len(), 1, "one refund send to the payer");
        assert_eq!(
            receivable_from(&s, w.account(), payee),
            vec![(back[0], amount)],
            "the payer's balance shows the refund (receivable, exact amount)"
        );
        assert!(s.confirmed(&back[0], Duration::from_secs(1)).await);
    }
    // Again, by hash and for all: nothing is sent twice.
    let (code, out, _) = cli(&s, &["refund", &p1.to_hex()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("refunded"), "{out}");
    let (code, out, _) = cli(&s, &["refund"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing owed"), "{out}");
    assert_eq!(sends(&s, payee, w1.account()).len(), 1);
    assert_eq!(sends(&s, payee, w2.account()).len(), 1);
    let m = s.gate(0).sidecar.metrics().await;
    // Gauges refresh from the store at most every 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut m = m;
    while metric(&m, "nanogate_payments{state=\"refunded\"}") != Some(2.0) {
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        m = s.gate(0).sidecar.metrics().await;
    }
    assert_eq!(
        metric(&m, "nanogate_refunds_signed_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "nanogate_payments{state=\"owed\"}"),
        Some(0.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_refund_whose_sidecar_is_killed_after_recording_it_is_sent_once_after_restart() {
    let seed: [u8; 32] = rand::random();
    let payee = PrivateKey::from_seed(&seed, 0).public_key();
    let mut s = Stack::start(config(payee, Some(&seed), StoreKind::Sqlite)).await;
    let w = s.wallet();
    let amount = 2 * PRICE_RAW + 5;
    let p = owed_payment(&s, &w, amount).await;
    // Every node call now takes 1.5 s (under the 2 s call timeout): the refund's publication
    // is still on its way when the sidecar is killed, right after the refund is recorded.
    s.devnet.faults().set_latency(Duration::from_millis(1_500));
    let mut refund = tokio::process::Command::new(workspace_bin("nanogate-admin"))
        .arg("refund")
        .env("NANOGATE_ADMIN_URL", s.gate(0).sidecar.base_url())
        .env("NANOGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .kill_on_drop(true)
        .spawn()
        .expect("nanogate-admin starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let row = payment_row(&s, &p).await;
        if row.as_ref().map(|r| &r["state"]) == Some(&json!("refunding")) {
            break;
        }
        assert!(Instant::now() < deadline, "never refunding: {row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.gate_mut(0).sidecar.kill();
    let _ = refund.kill().await;
    let before = sends(&s, payee, w.account());
    eprintln!(
        "killed with the refund recorded; its send was {} the ledger",
        if before.is_empty() {
            "not yet on"
        } else {
            "already on"
        }
    );
    s.devnet.faults().set_latency(Duration::ZERO);
    s.gate_mut(0)
        .sidecar
        .restart()
        .await
        .expect("the sidecar restarts");
    // The restart publishes the very block it recorded, and records the refund confirmed.
    wait_for_state(&s, &p, "refunded", Duration::from_secs(90)).await;
    let after = sends(&s, payee, w.account());
    assert_eq!(after.len(), 1, "exactly one refund send: {after:?}");
    if let Some(b) = before.first() {
        assert_eq!(*b, after[0], "the same block, not a new one");
    }
    assert_eq!(
        receivable_from(&s, w.account(), payee),
        vec![(after[0], amount)]
    );
    // Asking again sends nothing, and names the block recorded before the kill: the one on
    // the ledger.
    let (code, out, _) = cli(&s, &["refund", &p.to_hex()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("refund block {}", after[0].to_hex())),
        "{out}"
    );
    assert_eq!(sends(&s, payee, w.account()).len(), 1);
}

#[tokio::test]
async fn without_a_key_the_printed_uri_is_paid_from_a_wallet_and_checked_on_the_ledger() {
    // The operator's wallet holds the payee account (funded); the sidecar holds no key.
    let seed: [u8; 32] = rand::random();
    let payee_key = PrivateKey::from_seed(&seed, 0);
    let payee = payee_key.public_key();
    let mut cfg = config(payee, None, StoreKind::Sqlite);
    cfg.fund = vec![(payee, XNO)];
    let s = Stack::start(cfg).await;
    let (w, other) = (s.wallet(), s.wallet());
    let amount = PRICE_RAW + 42;
    let p = owed_payment(&s, &w, amount).await;

    let (code, out, _) = cli(&s, &["refund"]).await;
    assert_eq!(code, 0, "{out}");
    // The URI printed under this payment's line (the stack's own funding may be owed too).
    let ours = out
        .find(&p.to_hex())
        .unwrap_or_else(|| panic!("{} not listed in {out}", p.to_hex()));
    let uri = out[ours..]
        .split_whitespace()
        .find(|t| t.starts_with("nano:"))
        .unwrap_or_else(|| panic!("no nano: URI in {out}"))
        .to_owned();
    assert_eq!(
        uri,
        format!("nano:{}?amount={amount}", w.account().to_address())
    );
    assert!(
        out.contains(&format!("mark-refunded {}", p.to_hex())),
        "{out}"
    );
    assert!(sends(&s, payee, w.account()).is_empty(), "nothing sent");
    wait_for_state(&s, &p, "owed", Duration::from_secs(1)).await;

    // Blocks that are not this refund are refused, each with its reason.
    let short = send(&s, &payee_key, w.account(), amount - 1).await;
    let elsewhere = send(&s, &payee_key, other.account(), amount).await;
    let not_payee = send(&s, &other.key, w.account(), amount).await;
    for (block, why) in [
        (short, "the payment owed is"),
        (elsewhere, "not to the payer"),
        (not_payee, "not from the payee account"),
        (BlockHash([7; 32]), "not on the ledger"),
    ] {
        let (code, _, err) = cli(&s, &["mark-refunded", &p.to_hex(), &block.to_hex()]).await;
        assert_eq!(code, 6, "{block} refused: {err}");
        assert!(err.contains(why), "{block}: {err}");
    }
    wait_for_state(&s, &p, "owed", Duration::from_secs(1)).await;

    // Pay the URI from the payee's wallet, then mark it.
    let (to, raw) = uri
        .trim_start_matches("nano:")
        .split_once("?amount=")
        .expect("nano:ADDRESS?amount=RAW");
    let to = PublicKey::from_address(to).expect("address");
    let raw: u128 = raw.parse().expect("raw");
    let paid = send(&s, &payee_key, to, raw).await;
    let (code, out, _) = cli(&s, &["mark-refunded", &p.to_hex(), &paid.to_hex()]).await;
    assert_eq!(code, 0, "{out}");
    wait_for_state(&s, &p, "refunded", Duration::from_secs(1)).await;
    // Marking it again with the same block is a no-op; with another one, refused.
    let (code, _, _) = cli(&s, &["mark-refunded", &p.to_hex(), &paid.to_hex()]).await;
    assert_eq!(code, 0);
    let (code, _, err) = cli(&s, &["mark-refunded", &p.to_hex(), &short.to_hex()]).await;
    assert_eq!(code, 6);
    assert!(err.contains("already refunded"), "{err}");

    // Without a key: pocketing is refused, the receivable total per account is reported.
    let (code, _, err) = cli(&s, &["pocket"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("no wallet seed"), "{err}");
    let (code, out, _) = cli(&s, &["--json", "receivable"]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json");
    let row = v["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["account"] == json!(payee.to_address())))
        .cloned()
        .unwrap_or_else(|| panic!("payee not listed: {out}"));
    assert_eq!(row["receivable"], json!(amount.to_string()), "{out}");
    assert_eq!(row["count"], json!(1));
    assert_eq!(row["pocketedHere"], json!(false));
    let m = s.gate(0).sidecar.metrics().await;
    #[allow(clippy::cast_precision_loss)]
    let expected = amount as f64;
    assert_eq!(
        metric(
            &m,
            &format!(
                "nanogate_receivable_raw{{account=\"{}\"}}",
                payee.to_address()
            )
        ),
        Some(expected),
        "{m}"
    );
}

#[tokio::test]
async fn pocketing_turns_every_receivable_send_into_a_receive() {
    let seed: [u8; 32] = rand::random();
    let payee = PrivateKey::from_seed(&seed, 0).public_key();
    let s = Stack::start(config(payee, Some(&seed), StoreKind::Sqlite)).await;
    let mut sent = Vec::new();
    for (i, w) in [s.wallet(), s.wallet(), s.wallet()].iter().enumerate() {
        sent.push(send(&s, &w.key, payee, PRICE_RAW * (i as u128 + 1)).await);
    }
    assert_eq!(s.ledger().read(|l| l.receivable(&payee).len()), 3);
    let (code, out, _) = cli(&s, &["pocket"]).await;
    assert_eq!(code, 0, "{out}\n{}", s.diagnostics());
    // (The scheduled pass may have taken some first: the ledger is what counts.)
    let receives: Vec<BlockHash> = s.ledger().read(|l| {
        l.order()
            .iter()
            .filter(|h| {
                l.block(h)
                    .and_then(|e| e.state())
                    .is_some_and(|b| b.account == payee && sent.iter().any(|x| x.0 == b.link))
            })
            .copied()
            .collect()
    });
    assert_eq!(receives.len(), 3, "one receive per send");
    for r in &receives {
        assert!(s.confirmed(r, Duration::from_secs(20)).await);
    }
    assert!(s.ledger().read(|l| l.receivable(&payee).is_empty()));
    assert_eq!(s.ledger().balance(&payee), 6 * PRICE_RAW);
    let (code, out, _) = cli(&s, &["--json", "receivable"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"receivable\": \"0\""), "{out}");
    assert!(out.contains("\"pocketedHere\": true"), "{out}");
}

#[tokio::test]
async fn sweeping_sends_a_pool_balance_less_what_it_owes_to_the_treasury() {
    let seed: [u8; 32] = rand::random();
    let payee = PrivateKey::from_seed(&seed, 0).public_key();
    let treasury = PrivateKey::from_seed(&rand::random::<[u8; 32]>(), 0).public_key();
    let mut cfg = config(payee, Some(&seed), StoreKind::Sqlite);
    cfg.sidecar_env
        .push(("NANOGATE_WALLET_TREASURY".to_owned(), treasury.to_address()));
    let s = Stack::start(cfg).await;
    // The payee becomes the tagged routes' pool account once a session is issued for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.get("/tagged/sweep", &[]).await;
        let tagged = r
            .payment_required()
            .accepts
            .iter()
            .any(|a| a.extra.get("mechanism").and_then(Value::as_str) == Some("tagged"));
        if tagged {
            break;
        }
        assert!(Instant::now() < deadline, "no tagged offer: {}", r.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One payment served through the gate, one owed.
    let w = s.wallet();
    let (header, _) = s.pay_header(0, "/paid/sweep", &w).await;
    let r = s
        .get("/paid/sweep", &[("payment-signature", &header)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let owed = 5 * PRICE_RAW + 9;
    let w2 = s.wallet();
    let p = owed_payment(&s, &w2, owed).await;

    let (code, out, _) = cli(&s, &["sweep"]).await;
    assert_eq!(code, 0, "{out}\n{}", s.diagnostics());
    let to_treasury = receivable_from(&s, treasury, payee);
    assert_eq!(to_treasury.len(), 1, "one sweep: {to_treasury:?}");
    assert_eq!(
        to_treasury[0].1, PRICE_RAW,
        "the served payment, not the owed one"
    );
    assert!(
        s.confirmed(&to_treasury[0].0, Duration::from_secs(20))
            .await
    );
    assert_eq!(s.ledger().balance(&payee), owed, "what is owed stays");
    // Nothing more to sweep; the owed payment is still refunded from the account.
    let (code, _, _) = cli(&s, &["sweep"]).await;
    assert_eq!(code, 0);
    assert_eq!(receivable_from(&s, treasury, payee).len(), 1);
    let (code, out, _) = cli(&s, &["refund"]).await;
    assert_eq!(code, 0, "{out}");
    wait_for_state(&s, &p, "refunded", Duration::from_secs(5)).await;
    assert_eq!(s.ledger().balance(&payee), 0);
}
