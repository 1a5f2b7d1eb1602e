//! Replays the request side of the recorded RsNano dev-node session
//! (`tests/vectors/rsnano-dev-transcript.json`) against the devnet and compares the answers:
//! the same keys and JSON types everywhere, and the same values where they are deterministic
//! (hashes, amounts, heights, confirmation flags, errors, …). Where nano-node C++ (which the
//! devnet follows) differs from the recorded RsNano node, the difference is listed in
//! `EXCEPTIONS` below and in `devnet/README.md`.

use crate::common::*;
use nanogate_devnet::Confirm;
use nanogate_protocol::nano::BlockHash;
use serde_json::{json, Value};
use std::time::Duration;

/// Keys whose values are deterministic and must match (hex case-insensitively).
const VALUE_KEYS: &[&str] = &[
    "hash",
    "error",
    "block_account",
    "amount",
    "balance",
    "height",
    "successor",
    "confirmed",
    "frontier",
    "open_block",
    "representative_block",
    "subtype",
    "link",
    "link_as_account",
    "previous",
    "representative",
    "account",
    "signature",
    "type",
    "receive_hash",
    "source_account",
    "exists",
    "started",
    "valid_all",
    "valid_receive",
    "network",
    "network_identifier",
    "rpc_version",
    "protocol_version",
    "work",
    "source",
    "opened",
    "block_count",
    "confirmed_height",
    "confirmed_frontier",
    "confirmed_balance",
    "confirmed_representative",
    "pending",
    "receivable",
    "confirmed_pending",
    "confirmed_receivable",
    "weight",
    "account_version",
    "confirmation_type",
    "cemented",
    "unchecked",
    "topic",
    "ack",
    "id",
    "genesis_block",
    "peer_count",
    "blocks",
];

/// What the devnet does instead of what RsNano recorded.
enum Diff {
    /// The devnet answers exactly this (nano-node's behaviour) instead.
    Answer(Value),
    /// RsNano printed these keys; nano-node (and the devnet) does not.
    Absent(&'static [&'static str]),
    /// Same shape; the values are not deterministic (generated work).
    ShapeOnly,
}

/// Documented differences, by (run, label). Keep in sync with devnet/README.md.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    ("run1", "telemetry", "RsNano signs telemetry (`signature`, `node_id`); the devnet has no node identity"),
    ("run1", "account_info", "with include_confirmed nano-node prints confirmed_height/confirmed_frontier only; RsNano adds confirmation_height"),
    ("run1", "account_info payee", "same as account_info"),
    ("run1", "wallet_create", "the devnet has no wallets: it always votes as if the genesis key were in one"),
    ("run1", "wallet_add", "no wallets (see wallet_create)"),
    ("run1", "pending (deprecated alias)", "nano-node still accepts `pending` (adds \"deprecated\":\"1\"); RsNano answers HTTP 422"),
    ("run1", "work_generate", "work is a search result (values differ); RsNano prints difficulty in decimal, nano-node in hex"),
    ("run1", "work_validate", "RsNano prints \"valid\": null without `difficulty`; nano-node omits the key"),
    ("run1", "unknown action", "nano-node answers HTTP 200 {\"error\":\"Unknown command\"}; RsNano HTTP 422 plain text"),
    ("run2", "process send with JSON boolean json_block", "nano-node accepts JSON booleans; RsNano answers HTTP 422, so the devnet processes the block here"),
    ("run2", "process send (no voting key in wallet)", "follows from the previous exception: the block is already in the devnet's ledger"),
    ("run2", "wallet_create", "no wallets"),
    ("run2", "wallet_add", "no wallets; the replay resumes confirming here instead (the key was what let RsNano vote)"),
];

fn diff_for(run: &str, label: &str, send_hash: &str) -> Option<Diff> {
    Some(match (run, label) {
        (_, "telemetry") => Diff::Absent(&["signature", "node_id"]),
        (_, "account_info") | (_, "account_info payee") => Diff::Absent(&["confirmation_height"]),
        (_, "wallet_create") | (_, "wallet_add") | (_, "unknown action") => {
            Diff::Answer(json!({"error": "Unknown command"}))
        }
        (_, "pending (deprecated alias)") => Diff::Answer(json!({"blocks": "", "deprecated": "1"})),
        (_, "work_validate") => Diff::Absent(&["valid"]),
        (_, "work_generate") => Diff::ShapeOnly,
        ("run2", "process send with JSON boolean json_block") => {
            Diff::Answer(json!({ "hash": send_hash }))
        }
        ("run2", "process send (no voting key in wallet)") => {
            Diff::Answer(json!({"error": "Old block"}))
        }
        _ => return None,
    })
}

fn is_empty_list(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Compares `actual` with the recorded `expected`; collects mismatches as strings.
fn compare(
    expected: &Value,
    actual: &Value,
    path: &str,
    absent: &[&str],
    values: bool,
    out: &mut Vec<String>,
) {
    // nano-node prints empty lists as ""; RsNano as [] or {}.
    if is_empty_list(expected) && is_empty_list(actual) {
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys() {
                if !a.contains_key(k) && !absent.contains(&k.as_str()) {
                    out.push(format!("{path}: missing key {k}"));
                }
            }
            for k in a.keys() {
                if !e.contains_key(k) {
                    out.push(format!("{path}: extra key {k}"));
                }
            }
            for (k, ev) in e {
                if let Some(av) = a.get(k) {
                    let p = format!("{path}.{k}");
                    if let (Value::String(es), Value::String(as_)) = (ev, av) {
                        if values
                            && VALUE_KEYS.contains(&k.as_str())
                            && !es.eq_ignore_ascii_case(as_)
                        {
                            out.push(format!("{p}: expected {es:?}, got {as_:?}"));
                        }
                    } else {
                        compare(ev, av, &p, absent, values, out);
                    }
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!(
                    "{path}: {} entries expected, {} got",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                if let (Value::String(es), Value::String(as_)) = (ev, av) {
                    if values && !es.eq_ignore_ascii_case(as_) {
                        out.push(format!("{path}[{i}]: expected {es:?}, got {as_:?}"));
                    }
                } else {
                    compare(ev, av, &format!("{path}[{i}]"), absent, values, out);
                }
            }
        }
        (Value::String(_), Value::String(_)) => {}
        (Value::Null, _) => {}
        _ => out.push(format!("{path}: expected {expected}, got {actual}")),
    }
}

async fn replay(run: &str, entries: &[Value], confirm: Confirm, send_hash: &str) -> usize {
    let d = start_with(confirm).await;
    let rpc = Rpc::new(&d);
    let mut ws: Option<Ws> = None;
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for e in entries {
        let label = e["label"].as_str().unwrap();
        let Some(req) = e.get("request").filter(|r| !r.is_null()) else {
            if label == "ws messages" {
                let ws = ws.as_mut().expect("ws subscribe recorded first");
                for (i, expected) in e["response"].as_array().unwrap().iter().enumerate() {
                    let got = ws_next(ws, Duration::from_secs(5))
                        .await
                        .unwrap_or_else(|| panic!("{run}: ws message {i} missing"));
                    compare(
                        expected,
                        &got,
                        &format!("{run}/ws message {i}"),
                        &[],
                        true,
                        &mut mismatches,
                    );
                    compared += 1;
                }
            }
            continue;
        };
        let got = if label.starts_with("ws ") {
            let sock = match ws.as_mut() {
                Some(s) => s,
                None => ws.insert(ws_connect(&d).await),
            };
            ws_send(sock, req.clone()).await;
            ws_next(sock, Duration::from_secs(5)).await.unwrap()
        } else {
            // The recorded calls that read a confirmed state were made after confirmation.
            if label.contains("(confirmed)") || label == "poll" {
                let h = BlockHash::from_hex(req["hash"].as_str().unwrap()).unwrap();
                assert!(
                    d.ledger().wait_confirmed(&h, Duration::from_secs(5)).await,
                    "{label}"
                );
            }
            if run == "run2" && label == "wallet_add" {
                d.faults().set_confirming(true);
            }
            rpc.call(req.clone()).await
        };
        compared += 1;
        let path = format!("{run}/{label}");
        match diff_for(run, label, send_hash) {
            Some(Diff::Answer(v)) => assert_eq!(got, v, "{path}: documented devnet answer"),
            Some(Diff::Absent(keys)) => {
                compare(&e["response"], &got, &path, keys, true, &mut mismatches)
            }
            Some(Diff::ShapeOnly) => {
                compare(&e["response"], &got, &path, &[], false, &mut mismatches)
            }
            None => {
                assert_eq!(
                    e["http_status"].as_u64().unwrap_or(200),
                    200,
                    "{path}: undocumented non-200"
                );
                compare(&e["response"], &got, &path, &[], true, &mut mismatches);
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{run} mismatches:\n{}",
        mismatches.join("\n")
    );
    d.shutdown().await;
    compared
}

#[tokio::test]
async fn replay_recorded_rsnano_session() {
    let t = load_vectors("rsnano-dev-transcript.json");
    let send_hash = t["synthetic_chain"]["send_hash"]
        .as_str()
        .unwrap()
        .to_string();
    // Every label the exception list names exists in the transcript.
    for (run, label, why) in EXCEPTIONS {
        assert!(!why.is_empty());
        assert!(
            t[*run]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["label"] == *label),
            "exception {run}/{label} names no recorded exchange"
        );
    }
    // Run 1: the genesis key was in a wallet, so blocks confirmed ~0.2 s after process.
    let n1 = replay(
        "run1",
        t["run1"].as_array().unwrap(),
        Confirm::AfterMs(200),
        &send_hash,
    )
    .await;
    // Run 2: no voting key until wallet_add.
    let n2 = replay(
        "run2",
        t["run2"].as_array().unwrap(),
        Confirm::Never,
        &send_hash,
    )
    .await;
    println!(
        "transcript replay: {} exchanges compared, {} documented exceptions",
        n1 + n2,
        EXCEPTIONS.len()
    );
}
