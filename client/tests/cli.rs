//! The `nanogate-pay` binary: JSON and human output, exit codes, refusing over --max.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::process::Output;
use std::sync::atomic::Ordering;

async fn run(f: &Fixture, args: &[&str]) -> Output {
    let seed = nanogate_protocol::hex::encode_lower(&payer_seed());
    tokio::process::Command::new(env!("CARGO_BIN_EXE_nanogate-pay"))
        .args(args)
        .arg("--rpc")
        .arg(f.devnet.rpc_url())
        .arg("--journal")
        .arg(f.journal_path())
        .env("NANOGATE_SEED", seed)
        .env_remove("NANOGATE_RPC")
        .env_remove("NANOGATE_JOURNAL")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn json_output_has_status_body_receipt_and_paid() {
    let f = Fixture::start("cli-json").await;
    let before = f.balance();
    let out = run(&f, &[&f.url("/paid"), "--json"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["paid"], true);
    assert!(v["body"].as_str().unwrap().contains("paid content"));
    assert_eq!(v["receipt"]["amountXno"], "0.001");
    assert_eq!(v["receipt"]["amountRaw"], PRICE.to_string());
    assert_eq!(v["receipt"]["network"], NETWORK);
    assert_eq!(v["receipt"]["payer"], payer_key().public_key().to_address());
    assert_eq!(v["receipt"]["transaction"].as_str().unwrap().len(), 64);
    assert_eq!(f.balance(), before - PRICE);
    // Progress went to stderr.
    assert!(stderr.contains("402: 0.001 XNO to nano_"), "{stderr}");
    assert!(stderr.contains("signing send from nano_"), "{stderr}");
    assert!(stderr.contains("paying"), "{stderr}");
    assert!(stderr.contains("confirmed"), "{stderr}");
}

#[tokio::test]
async fn human_output_and_v1() {
    let f = Fixture::start("cli-human").await;
    let out = run(&f, &[&f.url("/v1")]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("HTTP 200\n"), "{stdout}");
    assert!(stdout.contains("paid 0.001 XNO to nano_"), "{stdout}");
    assert!(stdout.contains("transaction "), "{stdout}");
    assert!(stdout.contains("paid content"), "{stdout}");
}

#[tokio::test]
async fn over_max_exits_3_and_explains_without_signing() {
    let f = Fixture::start("cli-max").await;
    let before = f.balance();
    let out = run(&f, &[&f.url("/paid"), "--max", "0.0005", "--json"]).await;
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to pay 0.001 XNO"), "{stderr}");
    assert!(stderr.contains("0.0005 XNO"), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["paid"], false);
    assert_eq!(v["error"]["kind"], "over_max");
    assert!(!stderr.contains("signing"), "{stderr}");
    assert!(!f.journal_path().exists());
    assert_eq!(f.shop.state.paid_attempts.load(Ordering::SeqCst), 0);
    assert_eq!(f.balance(), before);
}

#[tokio::test]
async fn missing_seed_is_a_usage_error() {
    let f = Fixture::start("cli-noseed").await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nanogate-pay"))
        .arg(f.url("/paid"))
        .env_remove("NANOGATE_SEED")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NANOGATE_SEED"));
}
