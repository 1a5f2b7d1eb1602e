//! The claim before a broadcast (`Store::claim`: nonce binding and fork-set claim in one
//! transaction) and the hot writes' group commit, on SQLite and PostgreSQL: both rows or
//! neither, exactly one winner among concurrent claimers of one nonce or one frontier, and a
//! caller abandoned at any point (its future dropped, its task aborted) leaves either the whole
//! claim or nothing, and a consumption at most once.
//!
//! PostgreSQL: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test); every test
//! works in its own schema and drops it at the end.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_sidecar::store::payments::SIGNED_BLOCK;
use nanogate_sidecar::store::{
    self, Claim, Consumption, ForkEntry, NonceBind, OwedPayment, PaymentState, Store,
};
use std::sync::Arc;
use std::time::Duration;

async fn open(db: &Db) -> Arc<dyn Store> {
    store::open(&db.url(), db.schema().as_deref(), 8)
        .await
        .expect("store opens")
}

const NOW: i64 = 1_000;

fn bind(nonce: &str, payment: &str) -> NonceBind {
    NonceBind {
        nonce: nonce.into(),
        payment_key: payment.into(),
        expires_at: NOW + 600,
    }
}

fn entry(frontier: &str, block: &str, nonce: &str) -> ForkEntry {
    ForkEntry {
        frontier_key: frontier.into(),
        block_hash: block.into(),
        nonce: Some(nonce.into()),
        owner: format!("owner-{block}"),
        lease_until: NOW + 30,
        expires_at: NOW + 300,
        terms: Some("1|payee|/r".into()),
    }
}

fn consumption(key: &str, receipt: &str) -> Consumption {
    Consumption {
        spent_key: key.into(),
        receipt: receipt.into(),
        mechanism: SIGNED_BLOCK,
        payer: "nano_payer".into(),
        pay_to: "nano_payee".into(),
        amount: 1,
        resource: "/r".into(),
        nonce: None,
        now: NOW,
        state: PaymentState::Admitted,
        lease_until: NOW + 30,
        admission_token: None,
    }
}

async fn both_or_neither(db: Db) {
    let s = open(&db).await;
    // A fresh claim binds the nonce and claims the frontier.
    let won = s
        .claim(Some(&bind("n1", "P1")), &entry("F1", "P1", "n1"), NOW)
        .await
        .unwrap();
    assert_eq!(won, Claim::Claimed);
    assert_eq!(s.nonce_binding("n1").await.unwrap().as_deref(), Some("P1"));
    assert!(s.fork_entry("F1", NOW).await.unwrap().is_some());
    // The same nonce for another payment: refused, and its frontier stays unclaimed.
    let r = s
        .claim(Some(&bind("n1", "P2")), &entry("F2", "P2", "n1"), NOW)
        .await
        .unwrap();
    assert_eq!(r, Claim::NonceTaken);
    assert!(s.fork_entry("F2", NOW).await.unwrap().is_none());
    // Another block on a claimed frontier: refused, and its nonce stays unbound.
    let r = s
        .claim(Some(&bind("n3", "P3")), &entry("F1", "P3", "n3"), NOW)
        .await
        .unwrap();
    assert_eq!(r, Claim::FrontierTaken);
    assert_eq!(s.nonce_binding("n3").await.unwrap(), None);
    assert_eq!(
        s.fork_entry("F1", NOW).await.unwrap().unwrap().block_hash,
        "P1"
    );
    // The same payment presented again after its lease ended takes the claim over.
    let r = s
        .claim(Some(&bind("n1", "P1")), &entry("F1", "P1", "n1"), NOW + 31)
        .await
        .unwrap();
    assert_eq!(r, Claim::Claimed);
    db.cleanup().await;
}

#[tokio::test]
async fn claim_is_both_rows_or_neither_sqlite() {
    both_or_neither(Db::sqlite()).await;
}

#[tokio::test]
async fn claim_is_both_rows_or_neither_postgres() {
    both_or_neither(Db::postgres()).await;
}

/// 32 claimers of one nonce (each its own payment and frontier), then 32 of one frontier (each
/// its own nonce), spread over two stores on one database: one winner each time, and no loser
/// leaves a row.
async fn one_winner(db: Db) {
    let stores = [open(&db).await, open(&db).await];
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let (p, f) = (format!("NP{i}"), format!("NF{i}"));
            let r = s
                .claim(Some(&bind("shared", &p)), &entry(&f, &p, "shared"), NOW)
                .await
                .unwrap();
            (i, r)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert!(matches!(r, Claim::Claimed | Claim::NonceTaken), "{r:?}");
        if r == Claim::Claimed {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "one nonce, one winner: {winners:?}");
    let w = winners[0];
    let s = &stores[0];
    assert_eq!(
        s.nonce_binding("shared").await.unwrap(),
        Some(format!("NP{w}"))
    );
    for i in 0..32 {
        let claimed = s
            .fork_entry(&format!("NF{i}"), NOW)
            .await
            .unwrap()
            .is_some();
        assert_eq!(claimed, i == w, "frontier NF{i}");
    }

    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let (p, n) = (format!("FP{i}"), format!("fn{i}"));
            let r = s
                .claim(Some(&bind(&n, &p)), &entry("FSHARED", &p, &n), NOW)
                .await
                .unwrap();
            (i, r)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert!(matches!(r, Claim::Claimed | Claim::FrontierTaken), "{r:?}");
        if r == Claim::Claimed {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "one frontier, one winner: {winners:?}");
    let w = winners[0];
    let held = s.fork_entry("FSHARED", NOW).await.unwrap().unwrap();
    assert_eq!(held.block_hash, format!("FP{w}"));
    for i in 0..32 {
        let bound = s.nonce_binding(&format!("fn{i}")).await.unwrap();
        assert_eq!(bound.is_some(), i == w, "nonce fn{i}: {bound:?}");
    }
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_claimers_have_one_winner_sqlite() {
    one_winner(Db::sqlite()).await;
}

#[tokio::test]
async fn concurrent_claimers_have_one_winner_postgres() {
    one_winner(Db::postgres()).await;
}

/// Claims and consumptions abandoned at every stage (tasks aborted, or futures dropped by a
/// timeout, anywhere within twice the time a whole attempt takes), then the store closed and opened again: every nonce
/// binding has its frontier claim and the other way round, and each payment is recorded at
/// most once, with a receipt of one of its own attempts.
async fn abandoned_writes(db: Db) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("abandoned writes seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let s = open(&db).await;
    // How long a whole attempt takes on this store and machine (all connections warm): the
    // abandonment points are spread over twice that.
    let t = std::time::Instant::now();
    let mut warm = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        warm.push(tokio::spawn(async move {
            let (p, n, f) = (format!("W{i}"), format!("wn{i}"), format!("WF{i}"));
            s.claim(Some(&bind(&n, &p)), &entry(&f, &p, &n), NOW)
                .await
                .unwrap();
            s.consume(&consumption(&p, &format!("w{i}"))).await.unwrap();
        }));
    }
    for w in warm {
        w.await.unwrap();
    }
    let span = (t.elapsed().as_micros() as u64 * 2).max(1_000);
    const N: usize = 64;
    let mut tasks = Vec::new();
    for i in 0..N {
        let s2 = s.clone();
        // Somewhere between before the claim and after both consumptions.
        let after = Duration::from_micros(next() % span);
        let by_timeout = next() % 2 == 0;
        let attempt = async move {
            let (p, n, f) = (format!("AP{i}"), format!("an{i}"), format!("AF{i}"));
            let r = s2.claim(Some(&bind(&n, &p)), &entry(&f, &p, &n), NOW).await;
            if matches!(r, Ok(Claim::Claimed)) {
                // Two attempts to record it (a re-presentation racing the first).
                let (ca, cb) = (
                    consumption(&p, &format!("r{i}a")),
                    consumption(&p, &format!("r{i}b")),
                );
                let (a, b) = tokio::join!(s2.consume(&ca), s2.consume(&cb));
                assert!(
                    !(a.as_ref().is_ok_and(|x| *x) && b.as_ref().is_ok_and(|x| *x)),
                    "both consumptions of {p} inserted"
                );
            }
        };
        if by_timeout {
            tasks.push(tokio::spawn(async move {
                let _ = tokio::time::timeout(after, attempt).await;
            }));
        } else {
            let h = tokio::spawn(attempt);
            let abort = h.abort_handle();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(after).await;
                abort.abort();
                if let Err(e) = h.await {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Whatever was in flight finishes or not; then a "restart".
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let s = open(&db).await;
    let mut claimed = 0;
    let mut recorded = 0;
    for i in 0..N {
        let (p, n, f) = (format!("AP{i}"), format!("an{i}"), format!("AF{i}"));
        let bound = s.nonce_binding(&n).await.unwrap();
        let fork = s.fork_entry(&f, NOW).await.unwrap();
        assert_eq!(
            bound.is_some(),
            fork.is_some(),
            "claim {i} half made: nonce {bound:?}, fork {fork:?} (seed {seed})"
        );
        claimed += usize::from(fork.is_some());
        if let Some(rec) = s.spent(&p).await.unwrap() {
            assert!(
                fork.is_some(),
                "{p} recorded without its claim (seed {seed})"
            );
            let r = rec.receipt.unwrap();
            assert!(r == format!("r{i}a") || r == format!("r{i}b"), "{r}");
            recorded += 1;
        }
    }
    println!("{claimed} claims and {recorded} payments survived of {N}");
    db.cleanup().await;
}

#[tokio::test]
async fn abandoned_claims_leave_all_or_nothing_sqlite() {
    abandoned_writes(Db::sqlite()).await;
}

#[tokio::test]
async fn abandoned_claims_leave_all_or_nothing_postgres() {
    abandoned_writes(Db::postgres()).await;
}

/// Many hot writes at once share commits (SQLite's writer task): each still hears its own
/// answer, a duplicate among them is refused alone and the others land.
async fn grouped_writes(db: Db) {
    let s = open(&db).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        // Every tenth key is written twice.
        let key = format!("G{}", if i % 10 == 9 { i - 1 } else { i });
        tasks.push(tokio::spawn(async move {
            s.consume(&consumption(&key, &format!("g{i}")))
                .await
                .unwrap()
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += usize::from(t.await.unwrap());
    }
    assert_eq!(inserted, 180);
    let totals = s.payment_totals().await.unwrap();
    let admitted: u64 = totals
        .iter()
        .filter(|t| t.state == PaymentState::Admitted)
        .map(|t| t.count)
        .sum();
    assert_eq!(admitted, 180);
    db.cleanup().await;
}

#[tokio::test]
async fn grouped_writes_answer_each_sqlite() {
    grouped_writes(Db::sqlite()).await;
}

#[tokio::test]
async fn grouped_writes_answer_each_postgres() {
    grouped_writes(Db::postgres()).await;
}

/// Rows in `table` of the test's database (its schema on PostgreSQL).
async fn rows(db: &Db, table: &str) -> i64 {
    let q = format!("SELECT COUNT(*) FROM {table}");
    match db.schema() {
        None => {
            let pool = sqlx::SqlitePool::connect(&db.url()).await.unwrap();
            let n = sqlx::query_scalar(&q).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Some(schema) => {
            let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
            let q = format!("SELECT COUNT(*) FROM {schema}.{table}");
            let n = sqlx::query_scalar(&q).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

/// Every refused claim leaves the tables as they were, including one refused for a payment
/// whose nonce is already bound to it (that binding is not the refused call's to undo), and
/// hostile text is stored as given.
async fn refusals_leave_no_rows(db: Db) {
    let s = open(&db).await;
    let tricky = "n'); DELETE FROM sessions; --";
    let r = s
        .claim(Some(&bind(tricky, "P1")), &entry("F1", "P1", tricky), NOW)
        .await
        .unwrap();
    assert_eq!(r, Claim::Claimed);
    assert_eq!(
        s.nonce_binding(tricky).await.unwrap().as_deref(),
        Some("P1")
    );
    let before = (rows(&db, "sessions").await, rows(&db, "forks").await);
    assert_eq!(before, (1, 1));
    let mut no_nonce = entry("F1", "P9", "x");
    no_nonce.nonce = None;
    let mut other_terms = entry("F1", "P1", tricky);
    other_terms.terms = Some("2|payee|/r".into());
    let refused = [
        // The nonce bound to another payment, on a free frontier.
        (
            Some(bind(tricky, "P2")),
            entry("F2", "P2", tricky),
            NOW,
            Claim::NonceTaken,
        ),
        // A fresh nonce, another block on the claimed frontier.
        (
            Some(bind("n3", "P3")),
            entry("F1", "P3", "n3"),
            NOW,
            Claim::FrontierTaken,
        ),
        // No nonce (a takeover), another block.
        (None, no_nonce, NOW + 31, Claim::FrontierTaken),
        // The same payment again while its lease runs.
        (
            Some(bind(tricky, "P1")),
            entry("F1", "P1", tricky),
            NOW,
            Claim::FrontierTaken,
        ),
        // The same payment for other terms after the lease.
        (
            Some(bind(tricky, "P1")),
            other_terms,
            NOW + 31,
            Claim::FrontierTaken,
        ),
    ];
    for (i, (nonce, e, now, want)) in refused.iter().enumerate() {
        let r = s.claim(nonce.as_ref(), e, *now).await.unwrap();
        assert_eq!(r, *want, "claim {i}");
        let after = (rows(&db, "sessions").await, rows(&db, "forks").await);
        assert_eq!(after, before, "claim {i} left rows");
        assert_eq!(
            s.nonce_binding(tricky).await.unwrap().as_deref(),
            Some("P1"),
            "claim {i} undid a binding it did not make"
        );
        let held = s.fork_entry("F1", NOW).await.unwrap().unwrap();
        assert_eq!(
            (held.block_hash.as_str(), held.owner.as_str()),
            ("P1", "owner-P1")
        );
    }
    assert_eq!(s.fork_entry("F2", NOW).await.unwrap(), None);
    // A claim without a nonce on both sides is taken over after its lease (NULL = NULL).
    let mut bare = entry("F4", "P4", "x");
    bare.nonce = None;
    assert_eq!(s.claim(None, &bare, NOW).await.unwrap(), Claim::Claimed);
    bare.owner = "second".into();
    assert_eq!(
        s.claim(None, &bare, NOW).await.unwrap(),
        Claim::FrontierTaken
    );
    assert_eq!(
        s.claim(None, &bare, NOW + 31).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        s.fork_entry("F4", NOW).await.unwrap().unwrap().owner,
        "second"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn refused_claims_leave_no_rows_sqlite() {
    refusals_leave_no_rows(Db::sqlite()).await;
}

#[tokio::test]
async fn refused_claims_leave_no_rows_postgres() {
    refusals_leave_no_rows(Db::postgres()).await;
}

/// The very same payment (one nonce, one block on one frontier, one set of terms) claimed by
/// 32 attempts over two stores on one database: exactly one owns it, the binding is its, and
/// recording the payment from every attempt inserts it once.
async fn same_payment_claimed_once(db: Db) {
    let stores = [open(&db).await, open(&db).await];
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut e = entry("SAME", "PSAME", "nsame");
            e.owner = format!("attempt-{i}");
            let r = s
                .claim(Some(&bind("nsame", "PSAME")), &e, NOW)
                .await
                .unwrap();
            (i, r)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert!(matches!(r, Claim::Claimed | Claim::FrontierTaken), "{r:?}");
        if r == Claim::Claimed {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "one payment, one claim: {winners:?}");
    let s = &stores[1];
    let held = s.fork_entry("SAME", NOW).await.unwrap().unwrap();
    assert_eq!(held.owner, format!("attempt-{}", winners[0]));
    assert_eq!(
        s.nonce_binding("nsame").await.unwrap().as_deref(),
        Some("PSAME")
    );
    assert_eq!(
        (rows(&db, "sessions").await, rows(&db, "forks").await),
        (1, 1)
    );
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            s.consume(&consumption("PSAME", &format!("same{i}")))
                .await
                .unwrap()
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += usize::from(t.await.unwrap());
    }
    assert_eq!(inserted, 1);
    db.cleanup().await;
}

#[tokio::test]
async fn same_payment_racing_on_two_stores_is_claimed_once_sqlite() {
    same_payment_claimed_once(Db::sqlite()).await;
}

#[tokio::test]
async fn same_payment_racing_on_two_stores_is_claimed_once_postgres() {
    same_payment_claimed_once(Db::postgres()).await;
}

/// `Store::presentation` answers what the three single reads answer, whatever is (not) there:
/// no rows, rows of other keys, an expired fork-set entry, a payment without a receipt, no
/// nonce while sessions hold rows.
async fn presentation_is_the_three_reads(db: Db) {
    let s = open(&db).await;
    let check = |nonce: Option<&'static str>, key: &'static str, frontier: &'static str, now| {
        let s = s.clone();
        async move {
            let p = s.presentation(nonce, key, frontier, now).await.unwrap();
            let bound = match nonce {
                Some(n) => s.nonce_binding(n).await.unwrap(),
                None => None,
            };
            assert_eq!(p.nonce_binding, bound, "{nonce:?}");
            assert_eq!(p.payment, s.spent(key).await.unwrap(), "{key}");
            assert_eq!(
                p.fork,
                s.fork_entry(frontier, now).await.unwrap(),
                "{frontier}"
            );
            p
        }
    };
    let empty = check(Some("n1"), "K1", "F1", NOW).await;
    assert_eq!(empty, Default::default());
    s.claim(Some(&bind("n1", "K1")), &entry("F1", "K1", "n1"), NOW)
        .await
        .unwrap();
    let claimed = check(Some("n1"), "K1", "F1", NOW).await;
    assert_eq!(claimed.nonce_binding.as_deref(), Some("K1"));
    assert!(claimed.fork.is_some() && claimed.payment.is_none());
    assert!(s.consume(&consumption("K1", "r1")).await.unwrap());
    let all = check(Some("n1"), "K1", "F1", NOW).await;
    assert_eq!(all.payment.unwrap().receipt.as_deref(), Some("r1"));
    // Expired claim, no nonce, other keys.
    let late = check(None, "K1", "F1", NOW + 300).await;
    assert_eq!((late.nonce_binding, late.fork), (None, None));
    check(Some("n2"), "K2", "F2", NOW).await;
    check(Some(""), "", "", NOW).await;
    // An owed payment has no receipt.
    let owed = OwedPayment {
        spent_key: "K3".into(),
        mechanism: SIGNED_BLOCK,
        payer: "nano_payer".into(),
        pay_to: "nano_payee".into(),
        amount: "1".into(),
        resource: "/r".into(),
        nonce: None,
        reason: "late".into(),
        now: NOW,
    };
    assert!(s.record_owed(&owed).await.unwrap());
    let p = check(Some("n1"), "K3", "F1", NOW).await;
    assert_eq!(p.payment.unwrap().receipt, None);
    db.cleanup().await;
}

#[tokio::test]
async fn presentation_is_the_three_reads_sqlite() {
    presentation_is_the_three_reads(Db::sqlite()).await;
}

#[tokio::test]
async fn presentation_is_the_three_reads_postgres() {
    presentation_is_the_three_reads(Db::postgres()).await;
}
