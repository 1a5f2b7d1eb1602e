//! Pass usage reports in the store (docs/passes.md, migration 0009), on SQLite and PostgreSQL
//! alike: each filter VM reports its running total per pass, so a report repeated after its
//! answer was lost counts once, a pass's total is the sum over its VMs, and it is exhausted
//! when that reaches its grant.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nanogate_sidecar::store::passes::{NewPass, PassQuery};
use nanogate_sidecar::store::{self, Store};
use std::sync::Arc;

async fn open(db: &Db) -> Arc<dyn Store> {
    store::open(&db.url(), db.schema().as_deref(), 8)
        .await
        .expect("store opens")
}

async fn pass(s: &Arc<dyn Store>, n: u8, granted: i64) -> String {
    let id = format!("{n:02x}").repeat(16);
    s.record_pass(&NewPass {
        id: id.clone(),
        payment: format!("nano:devnet:PASS{n}"),
        name: "hundred".into(),
        group: "api".into(),
        payer: "nano_payer".into(),
        transaction: format!("PASS{n}"),
        key_id: 1,
        created_at: 1_000,
        expires_at: 1_000_000,
        requests_granted: Some(granted),
    })
    .await
    .unwrap();
    id
}

const VM_A: &str = "00000000000000aa";
const VM_B: &str = "00000000000000bb";

async fn a_repeated_report_counts_once_and_vms_add_up(db: Db) {
    let s = open(&db).await;
    let id = pass(&s, 1, 10).await;
    assert_eq!(
        s.add_pass_usage(&id, VM_A, 3, 2_000).await.unwrap(),
        Some((3, 3))
    );
    // The same report again (its answer was lost): nothing more.
    assert_eq!(
        s.add_pass_usage(&id, VM_A, 3, 2_001).await.unwrap(),
        Some((3, 0))
    );
    // A late, lower total of the same VM never lowers the count.
    assert_eq!(
        s.add_pass_usage(&id, VM_A, 2, 2_002).await.unwrap(),
        Some((3, 0))
    );
    assert_eq!(
        s.add_pass_usage(&id, VM_B, 4, 2_003).await.unwrap(),
        Some((7, 4))
    );
    assert_eq!(
        s.add_pass_usage(&id, VM_A, 5, 2_004).await.unwrap(),
        Some((9, 2))
    );
    assert!(s.refused_passes(3_000, 10).await.unwrap().0.is_empty());
    assert_eq!(
        s.add_pass_usage(&id, VM_B, 5, 2_005).await.unwrap(),
        Some((10, 1))
    );
    let (exhausted, revoked) = s.refused_passes(3_000, 10).await.unwrap();
    assert_eq!((exhausted, revoked.len()), (vec![id.clone()], 0));
    assert_eq!(
        s.add_pass_usage(&"ee".repeat(16), VM_A, 1, 2_006)
            .await
            .unwrap(),
        None,
        "an unknown pass"
    );
    db.cleanup().await;
}

/// Many VMs report on one pass at once: the total is exactly the sum of their totals (no
/// report computes the sum from a set another is changing).
async fn concurrent_reports_sum_exactly(db: Db) {
    let s = open(&db).await;
    let id = pass(&s, 2, 1_000_000).await;
    let seed = now();
    eprintln!("concurrent_reports_sum_exactly: seed {seed}");
    let mut tasks = Vec::new();
    let mut want = 0;
    for vm in 0..16u64 {
        let seen = (seed.wrapping_mul(vm + 7) % 50 + 1) as i64;
        want += seen;
        let (s, id) = (s.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let vm = format!("{vm:016x}");
            for n in 1..=seen {
                s.add_pass_usage(&id, &vm, n, 2_000).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Read as the operator sees it, not through another report (which would sum afresh).
    let rows = s
        .list_passes(&PassQuery {
            group: None,
            state: None,
            limit: 10,
            before: None,
            now: 2_000,
        })
        .await
        .unwrap();
    let row = rows.iter().find(|r| r.pass.id == id).unwrap();
    assert_eq!(row.requests_used, want);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_a_repeated_report_counts_once_and_vms_add_up() {
    a_repeated_report_counts_once_and_vms_add_up(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_a_repeated_report_counts_once_and_vms_add_up() {
    a_repeated_report_counts_once_and_vms_add_up(Db::postgres()).await;
}

#[tokio::test]
async fn sqlite_concurrent_reports_sum_exactly() {
    concurrent_reports_sum_exactly(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_concurrent_reports_sum_exactly() {
    concurrent_reports_sum_exactly(Db::postgres()).await;
}
