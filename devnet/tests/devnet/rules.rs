//! Every `process` rule and error string, and the order nano-node checks them in:
//! RPC pre-checks (subtype, entry work), then the ledger: old block, bad signature, burn
//! account, fork/gap previous, gap source, unreceivable, balance mismatch, insufficient work.

use crate::common::*;
use nanogate_devnet::blocks::{self, state_block};
use nanogate_devnet::ledger::{EPOCH_V1_LINK, THRESHOLDS};
use nanogate_devnet::{genesis_account, genesis_hash, genesis_key};
use nanogate_protocol::nano::work::difficulty;
use nanogate_protocol::nano::{BlockHash, PublicKey, Signature, StateBlock};
use serde_json::{json, Value};
use std::time::Duration;

/// Replaces the work with one whose difficulty satisfies `pred` (work is not signed).
fn with_work(mut b: StateBlock, pred: impl Fn(u64) -> bool) -> StateBlock {
    let root = b.root();
    b.work = (1u64..).find(|w| pred(difficulty(&root, *w))).unwrap();
    b
}

/// Work below the RPC entry threshold (min of the three dev thresholds).
fn weak(b: StateBlock) -> StateBlock {
    with_work(b, |d| d < THRESHOLDS.entry())
}

/// Work that passes the entry check but not the epoch_1 threshold every block needs.
fn almost(b: StateBlock) -> StateBlock {
    with_work(b, |d| d >= THRESHOLDS.entry() && d < THRESHOLDS.epoch_1)
}

/// Signs a block of the all-zero (burn) account. Its key is a small-order point, so a zero
/// secret scalar verifies whenever k·A is the identity (k ≡ 0 mod 4): try a few nonces.
fn forge_burn_signature(b: &mut StateBlock) {
    use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&[0; 32]).unwrap();
    for i in 0..=255u8 {
        let esk = ExpandedSecretKey {
            scalar: curve25519_dalek::Scalar::ZERO,
            hash_prefix: [i; 32],
        };
        let sig = raw_sign::<blake2::Blake2b512>(&esk, &b.hash().0, &vk);
        b.signature = Signature(sig.to_bytes());
        if b.signature_valid() {
            return;
        }
    }
    panic!("could not forge a burn-account signature");
}

fn unsigned(mut b: StateBlock) -> StateBlock {
    b.signature = Signature([0; 64]);
    b
}

#[tokio::test]
async fn old_block() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let send = genesis_send(&d, &rpc, key(1).public_key(), XNO).await;
    assert_eq!(rpc.process_err(&send, None).await, "Old block");
}

#[tokio::test]
async fn old_block_is_checked_before_the_signature() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let send = genesis_send(&d, &rpc, key(1).public_key(), XNO).await;
    // The signature is not hashed: same hash, so "Old block" wins.
    assert_eq!(rpc.process_err(&unsigned(send), None).await, "Old block");
}

#[tokio::test]
async fn bad_signature() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let send = d.genesis_send(key(1).public_key(), XNO).unwrap();
    assert_eq!(
        rpc.process_err(&unsigned(send.clone()), None).await,
        "Bad signature"
    );
    // Signed by the wrong key.
    let mut wrong = send.clone();
    wrong.sign(&key(9));
    assert_eq!(rpc.process_err(&wrong, None).await, "Bad signature");
    // Tampered after signing.
    let mut tampered = send;
    tampered.balance -= 1;
    assert_eq!(rpc.process_err(&tampered, None).await, "Bad signature");
}

#[tokio::test]
async fn burn_account_cannot_be_opened() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    // Sending to the burn account is fine (that is how XNO is burnt).
    let send = genesis_send(&d, &rpc, PublicKey::ZERO, XNO).await;
    let mut open = StateBlock {
        account: PublicKey::ZERO,
        previous: BlockHash::ZERO,
        representative: genesis_account(),
        balance: XNO,
        link: send.hash().0,
        // Another block's signature: not valid for this block.
        signature: send.signature,
        work: blocks::dev_work(&[0; 32]),
    };
    // Without a valid signature the signature rule comes first.
    assert_eq!(rpc.process_err(&open, None).await, "Bad signature");
    forge_burn_signature(&mut open);
    assert_eq!(
        rpc.process_err(&open, None).await,
        "Block attempts to open the burn account"
    );
    // Burn comes before the gap rules.
    let mut gap = open.clone();
    gap.previous = BlockHash([0xab; 32]);
    gap.work = blocks::dev_work(&gap.root());
    forge_burn_signature(&mut gap);
    assert_eq!(
        rpc.process_err(&gap, None).await,
        "Block attempts to open the burn account"
    );
}

#[tokio::test]
async fn gap_previous() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let g = genesis_key();
    // Existing account, unknown previous.
    let b = state_block(
        &g,
        BlockHash([0xab; 32]),
        genesis_account(),
        5,
        key(1).public_key().0,
    );
    assert_eq!(rpc.process_err(&b, None).await, "Gap previous block");
    // Unopened account, non-zero previous.
    let b = state_block(
        &key(2),
        BlockHash([0xcd; 32]),
        genesis_account(),
        5,
        [1; 32],
    );
    assert_eq!(rpc.process_err(&b, None).await, "Gap previous block");
    // With a subtype the RPC pre-check answers it first, even with weak work.
    let b = weak(state_block(
        &g,
        BlockHash([0xab; 32]),
        genesis_account(),
        5,
        [1; 32],
    ));
    assert_eq!(
        rpc.process_err(&b, Some("send")).await,
        "Gap previous block"
    );
}

#[tokio::test]
async fn fork() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let a = key(1);
    let (send, _open) = fund_and_open(&d, &rpc, &a, 10 * XNO).await;
    // Existing account, previous = 0 (a second open).
    let second_open = blocks::open(&a, send.hash(), 10 * XNO);
    let mut second_open = second_open;
    second_open.representative = a.public_key();
    second_open.sign(&a);
    assert_eq!(rpc.process_err(&second_open, None).await, "Fork");
    // Previous known but not the head (a competing genesis send on the genesis block).
    let g = genesis_key();
    let competing = blocks::send(&g, genesis_hash(), u128::MAX, key(3).public_key(), XNO);
    assert_eq!(rpc.process_err(&competing, None).await, "Fork");
    // Fork is found before gap source: a receive of an unknown block on an old previous.
    let b = state_block(&g, genesis_hash(), genesis_account(), u128::MAX, [0xee; 32]);
    assert_eq!(rpc.process_err(&b, None).await, "Fork");
}

#[tokio::test]
async fn gap_source() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    // Open of an unknown send.
    let open = blocks::open(&key(1), BlockHash([0x42; 32]), XNO);
    assert_eq!(rpc.process_err(&open, None).await, "Gap source block");
    // Open with link zero.
    let open = state_block(&key(2), BlockHash::ZERO, genesis_account(), 0, [0; 32]);
    assert_eq!(rpc.process_err(&open, None).await, "Gap source block");
    // Receive (existing account) of an unknown send.
    let a = key(3);
    let (_s, open) = fund_and_open(&d, &rpc, &a, XNO).await;
    let recv = blocks::receive(&a, open.hash(), XNO, BlockHash([0x43; 32]), XNO);
    assert_eq!(rpc.process_err(&recv, None).await, "Gap source block");
}

#[tokio::test]
async fn unreceivable() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let a = key(1);
    let (send, open) = fund_and_open(&d, &rpc, &a, XNO).await;
    // Receiving it again.
    let again = blocks::receive(&a, open.hash(), XNO, send.hash(), XNO);
    assert_eq!(rpc.process_err(&again, None).await, "Unreceivable");
    // Someone else receiving a send not addressed to them (with the wrong amount too:
    // unreceivable is checked before the amount).
    let b = key(2);
    let steal = blocks::open(&b, send.hash(), 2 * XNO);
    assert_eq!(rpc.process_err(&steal, None).await, "Unreceivable");
}

#[tokio::test]
async fn balance_and_amount_delta_mismatch() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let a = key(1);
    let send = genesis_send(&d, &rpc, a.public_key(), 5 * XNO).await;
    // Open claiming one raw more than was sent.
    let greedy = blocks::open(&a, send.hash(), 5 * XNO + 1);
    assert_eq!(
        rpc.process_err(&greedy, None).await,
        "Balance and amount delta do not match"
    );
    // ... or less.
    let modest = blocks::open(&a, send.hash(), XNO);
    assert_eq!(
        rpc.process_err(&modest, None).await,
        "Balance and amount delta do not match"
    );
    let open = blocks::open(&a, send.hash(), 5 * XNO);
    rpc.process_ok(&open).await;
    // A change (link 0) that increases the balance.
    let change = state_block(&a, open.hash(), key(7).public_key(), 6 * XNO, [0; 32]);
    assert_eq!(
        rpc.process_err(&change, None).await,
        "Balance and amount delta do not match"
    );
    // The mismatch is found before insufficient work.
    let send2 = genesis_send(&d, &rpc, key(2).public_key(), 2 * XNO).await;
    let greedy_weak = almost(blocks::open(&key(2), send2.hash(), XNO));
    assert_eq!(
        rpc.process_err(&greedy_weak, None).await,
        "Balance and amount delta do not match"
    );
    // A valid change is accepted.
    let change = blocks::change(&a, open.hash(), 5 * XNO, key(7).public_key());
    rpc.process_ok(&change).await;
}

#[tokio::test]
async fn insufficient_work_and_entry_threshold() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let send = d.genesis_send(key(1).public_key(), XNO).unwrap();
    // Passes the entry check (min threshold f000…) but not epoch_1 (fe00…).
    assert_eq!(
        rpc.process_err(&almost(send.clone()), None).await,
        "Block work is insufficient"
    );
    // Below the entry threshold: refused before the ledger.
    assert_eq!(
        rpc.process_err(&weak(send.clone()), None).await,
        "Block work is less than threshold"
    );
    // The entry check comes before "Old block" too.
    rpc.process_ok(&send).await;
    assert_eq!(
        rpc.process_err(&weak(send.clone()), None).await,
        "Block work is less than threshold"
    );
    // Insufficient work is the ledger's last rule: unreceivable wins over it.
    let a = key(2);
    let steal = almost(blocks::open(&a, send.hash(), XNO));
    assert_eq!(rpc.process_err(&steal, None).await, "Unreceivable");
}

#[tokio::test]
async fn subtype_prechecks() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let a = key(1);
    let send = d.genesis_send(a.public_key(), XNO).unwrap();
    // A send posted as a receive.
    assert_eq!(
        rpc.process_err(&send, Some("receive")).await,
        "Invalid block balance for given subtype"
    );
    // The subtype pre-check runs before the entry work check.
    assert_eq!(
        rpc.process_err(&weak(send.clone()), Some("change")).await,
        "Invalid block balance for given subtype"
    );
    assert_eq!(
        rpc.process_err(&send, Some("bogus")).await,
        "Invalid block subtype"
    );
    let v = rpc.process(&send, Some("send")).await;
    assert_eq!(v["hash"], send.hash().to_hex());
    // Re-posting it with subtype send masks "Old block" (as the recorded node did).
    assert_eq!(
        rpc.process_err(&send, Some("send")).await,
        "Invalid block balance for given subtype"
    );
    // An open posted as a send.
    let open = blocks::open(&a, send.hash(), XNO);
    assert_eq!(
        rpc.process_err(&open, Some("send")).await,
        "Invalid block balance for given subtype"
    );
    // subtype open with a non-zero previous.
    let g = genesis_key();
    let s2 = d.genesis_send(key(2).public_key(), XNO).unwrap();
    assert_eq!(
        rpc.process_err(&s2, Some("open")).await,
        "Invalid previous block for given subtype"
    );
    // subtype change with previous zero (and an unchanged zero balance).
    let zero_open = state_block(&key(3), BlockHash::ZERO, genesis_account(), 0, [0; 32]);
    assert_eq!(
        rpc.process_err(&zero_open, Some("change")).await,
        "Invalid previous block for given subtype"
    );
    // subtype epoch without an epoch link.
    let frontier = d.ledger().frontier(&genesis_account()).unwrap();
    let bal = d.ledger().balance(&genesis_account());
    let change = blocks::change(&g, frontier, bal, key(4).public_key());
    assert_eq!(
        rpc.process_err(&change, Some("epoch")).await,
        "Invalid epoch link"
    );
    // Matching subtypes pass.
    assert_eq!(
        rpc.process(&open, Some("open")).await["hash"],
        open.hash().to_hex()
    );
    assert_eq!(
        rpc.process(&change, Some("change")).await["hash"],
        change.hash().to_hex()
    );
}

#[tokio::test]
async fn epoch_blocks_are_not_supported() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let g = genesis_key();
    let b = state_block(
        &g,
        genesis_hash(),
        genesis_account(),
        u128::MAX,
        EPOCH_V1_LINK,
    );
    assert_eq!(rpc.process_err(&b, None).await, "Error processing block");
}

#[tokio::test]
async fn malformed_requests() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    assert_eq!(
        rpc.raw("{not json").await,
        (200, r#"{"error":"Unable to parse JSON"}"#.into())
    );
    assert_eq!(
        rpc.call(json!({"no_action": 1})).await["error"],
        "Unable to parse JSON"
    );
    assert_eq!(
        rpc.call(json!({"action": "frobnicate"})).await["error"],
        "Unknown command"
    );
    let send = d.genesis_send(key(1).public_key(), XNO).unwrap();
    let mut missing = send.to_json();
    missing.as_object_mut().unwrap().remove("work");
    let v = rpc
        .call(json!({"action": "process", "json_block": "true", "block": missing}))
        .await;
    assert_eq!(v["error"], "Block is invalid");
    let legacy = json!({"type": "send", "previous": genesis_hash().to_hex()});
    let v = rpc
        .call(json!({"action": "process", "json_block": "true", "block": legacy}))
        .await;
    assert_eq!(v["error"], "Block is invalid");
    let v = rpc
        .call(json!({"action": "process", "block": "{ not a block"}))
        .await;
    assert_eq!(v["error"], "Block is invalid");
    let v = rpc
        .call(json!({"action": "block_info", "hash": "xyz"}))
        .await;
    assert_eq!(v["error"], "Invalid block hash");
    let v = rpc
        .call(json!({"action": "account_info", "account": "nano_1bad"}))
        .await;
    assert_eq!(v["error"], "Bad account number");
    let v = rpc.call(json!({"action": "block_info"})).await;
    assert_eq!(v["error"], "Unable to parse JSON");
}

#[tokio::test]
async fn accepted_spellings() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    // Block as a JSON string (json_block absent), JSON boolean flags, link as an address.
    let s1 = d.genesis_send(key(1).public_key(), XNO).unwrap();
    let v = rpc
        .call(json!({"action": "process", "block": s1.to_json().to_string()}))
        .await;
    assert_eq!(v["hash"], s1.hash().to_hex());
    let s2 = d.genesis_send(key(2).public_key(), XNO).unwrap();
    let mut j = s2.to_json();
    j["link"] = Value::from(key(2).public_key().to_address());
    let v = rpc
        .call(json!({"action": "process", "json_block": true, "block": j}))
        .await;
    assert_eq!(v["hash"], s2.hash().to_hex());
    let v = rpc
        .call(json!({"action": "block_info", "json_block": true, "hash": s2.hash().to_hex()}))
        .await;
    assert!(v["contents"].is_object());
    let v = rpc
        .call(json!({"action": "block_info", "hash": s2.hash().to_hex()}))
        .await;
    assert!(
        v["contents"].is_string(),
        "without json_block contents is a string"
    );
    // async process answers "started".
    let s3 = d.genesis_send(key(3).public_key(), XNO).unwrap();
    let v = rpc
        .call(json!({"action": "process", "json_block": "true", "async": "true", "block": s3.to_json()}))
        .await;
    assert_eq!(v, json!({"started": "1"}));
    assert!(d.ledger().contains(&s3.hash()));
}

#[tokio::test]
async fn gap_blocks_wait_as_unchecked_until_the_dependency_confirms() {
    let d = start().await;
    let rpc = Rpc::new(&d);
    let a = key(1);
    let send = d.genesis_send(a.public_key(), XNO).unwrap();
    let open = blocks::open(&a, send.hash(), XNO);
    assert_eq!(rpc.process_err(&open, None).await, "Gap source block");
    let count = rpc.call(json!({"action": "block_count"})).await;
    assert_eq!(count["unchecked"], "1");
    rpc.process_ok(&send).await;
    assert!(
        rpc.wait_confirmed(&open.hash(), Duration::from_secs(5))
            .await
    );
    assert_eq!(rpc.process_err(&open, None).await, "Old block");
    let count = rpc.call(json!({"action": "block_count"})).await;
    assert_eq!(count["unchecked"], "0");
    assert_eq!(count["count"], "3");
}
