//! The quick money-conservation run on SQLite as part of the suite (`cargo xtask chaos --quick`
//! runs the same through the `nanogate-chaos` driver): payers pay through real Envoy, filter,
//! sidecar and devnet while faults are injected at random, then every send that reached us
//! must be served, redeemable or owed, nothing is served unpaid or twice, and nothing panics.
//! `NANOGATE_CHAOS_SEED=N` replays a schedule; the seed is printed either way.

use nanogate_tests::chaos::{self, ChaosConfig};
use nanogate_tests::stack::StoreKind;

#[test]
fn money_is_conserved_and_no_payment_buys_twice_under_random_faults() {
    let seed = std::env::var("NANOGATE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
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
