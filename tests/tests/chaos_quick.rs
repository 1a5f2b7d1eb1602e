//! The quick money-conservation run on SQLite as part of the suite (`cargo xtask chaos --quick`
//! runs the same through the `nanogate-chaos` driver): payers pay through real Envoy, filter,
//! sidecar and devnet while faults are injected at random, then every send that reached us
//! must be served, redeemable or owed, nothing is served unpaid or twice, and nothing panics.
//! The suite replays a fixed schedule (seed 42); `NANOGATE_CHAOS_SEED=N` runs another one.

use nanogate_tests::chaos::{self, ChaosConfig};
use nanogate_tests::stack::StoreKind;

/// The schedule the suite replays (11 faults in 45 s: sidecar kills, an Envoy restart, a fork,
/// upstream slow and reset, a WebSocket outage, devnet latency, stopped confirmation).
const DEFAULT_SEED: u64 = 42;

#[test]
fn money_is_conserved_and_no_payment_buys_twice_under_random_faults() {
    // A fixed schedule by default, so a red suite always replays: exploring new schedules is
    // `cargo xtask chaos` (a random seed, printed), whose failing seeds become this one's
    // regression cases through NANOGATE_CHAOS_SEED.
    let seed = std::env::var("NANOGATE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let cfg = ChaosConfig::quick(seed, StoreKind::Sqlite);
    eprintln!("chaos: seed {seed} (reproduce: {})", cfg.command());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let verdict = runtime
        .block_on(chaos::run(&cfg))
        .unwrap_or_else(|e| panic!("chaos (seed {seed}): the stack could not be run: {e}"));
    eprint!("{}", verdict.report);
    assert!(
        verdict.passed(),
        "chaos FAILED (seed {seed}; reproduce: {}; logs in {}):\n{}",
        cfg.command(),
        verdict.dir.display(),
        verdict.failures.join("\n")
    );
}

/// The payers' retry machinery on its own: each mechanism's first presentation meets an
/// upstream 503, and the retry presents the very same payment (no second send) and is served.
#[test]
fn chaos_payers_re_present_the_same_payment_after_an_upstream_failure() {
    use nanogate_tests::chaos::payers::{ChaosPayer, Mechanism, Target};
    use nanogate_tests::stack::{Stack, StackConfig};
    use std::time::{Duration, Instant};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let s = Stack::start(StackConfig {
            wallets: 2,
            ..StackConfig::default()
        })
        .await;
        let target = Target {
            gates: vec![format!("http://127.0.0.1:{}", s.gates[0].listener)],
            rpc_url: s.devnet.rpc_url(),
            dir: s.dir().to_path_buf(),
        };
        for (i, mechanism) in [Mechanism::SignedBlock, Mechanism::Tagged]
            .into_iter()
            .enumerate()
        {
            let wallet = s.wallet();
            let before = s.ledger().balance(&wallet.account());
            let path = format!("{}p{i}/r0", mechanism.prefix());
            s.upstream.fail_next(&path, 503);
            let mut payer =
                ChaosPayer::new(i, mechanism, wallet.clone(), target.clone(), 7).expect("payer");
            payer
                .drive(Instant::now() + Duration::from_secs(60), 1)
                .await;
            let log = payer.into_requests();
            assert_eq!(log.len(), 1);
            let r = &log[0];
            assert_eq!(r.path, path);
            assert_eq!(r.hashes.len(), 1, "{mechanism:?}: one payment: {r:?}");
            assert_eq!(
                r.served.as_deref(),
                Some(r.hashes[0].as_str()),
                "{mechanism:?}: served on the retry: {r:?}\n{}",
                s.diagnostics()
            );
            assert!(r.attempts >= 2, "{r:?}");
            let seen: Vec<(Option<String>, nanogate_tests::upstream::Outcome)> = s
                .upstream
                .requests_to(&path)
                .iter()
                .map(|x| {
                    (
                        x.header("x-nanogate-transaction").map(str::to_owned),
                        x.outcome,
                    )
                })
                .collect();
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(
                seen.iter()
                    .all(|(tx, _)| tx.as_deref() == Some(r.hashes[0].as_str())),
                "both upstream requests name the one payment: {seen:?}"
            );
            let spent = before - s.ledger().balance(&wallet.account());
            assert!(
                spent > 0 && spent < 2 * nanogate_tests::stack::PRICE_RAW,
                "{mechanism:?}: paid once ({spent} raw)"
            );
        }
    });
}
