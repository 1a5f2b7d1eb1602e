//! Micro-benchmarks (criterion) of the hot primitives: block hashing, signature verification,
//! work validation, `PAYMENT-SIGNATURE` decoding and the challenge MAC check.
//!
//! `cargo bench -p nanogate-protocol --bench micro` (add `-- --quick` for a short pass);
//! `cargo xtask bench` runs it and reads `target/criterion/<name>/new/estimates.json` into its
//! table. Benchmark names are flat (`block_hash`, …) so that path stays simple.

use criterion::{criterion_group, criterion_main, Criterion};
use nanogate_protocol::challenge::{self, ChallengeKey, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::nano::work::difficulty;
use nanogate_protocol::nano::{BlockHash, Network, PrivateKey, Signature, StateBlock};
use nanogate_protocol::x402::{decode_payment, encode_header, MAX_HEADER_BYTES};
use serde_json::json;
use std::hint::black_box;

/// A signed send with dev-threshold work (found by a plain search: ~128 tries).
fn sample_block() -> StateBlock {
    let payer = PrivateKey::from_seed(&[7; 32], 0);
    let payee = PrivateKey::from_seed(&[8; 32], 0).public_key();
    let mut b = StateBlock {
        account: payer.public_key(),
        previous: BlockHash([3; 32]),
        representative: payer.public_key(),
        balance: 1_000_000_000_000_000_000_000_000_000,
        link: payee.0,
        signature: Signature([0; 64]),
        work: 0,
    };
    let threshold = Network::Dev.thresholds().send();
    let root = b.root();
    b.work = (0u64..)
        .find(|w| difficulty(&root, *w) >= threshold)
        .unwrap_or_default();
    b.sign(&payer);
    b
}

fn terms(block: &StateBlock) -> ChallengeTerms<'static> {
    ChallengeTerms {
        network: "nano:devnet",
        scheme: "exact",
        asset: "XNO",
        pay_to: block.link_as_key(),
        amount: 1_000_000_000_000_000_000_000_000_000,
        resource: "http://api.example.com/paid/report",
        mechanism: Mechanism::SignedBlock,
    }
}

fn benches(c: &mut Criterion) {
    let block = sample_block();
    let threshold = Network::Dev.thresholds().send();
    assert!(block.signature_valid() && block.work_difficulty() >= threshold);

    c.bench_function("block_hash", |b| b.iter(|| black_box(&block).hash()));
    c.bench_function("signature_verify", |b| {
        b.iter(|| black_box(&block).signature_valid())
    });
    c.bench_function("work_validate", |b| {
        b.iter(|| black_box(&block).work_difficulty() >= threshold)
    });

    let key = ChallengeKey::derive(b"bench-master-secret-0123456789", 1);
    let stamp = ChallengeStamp {
        valid_before: 4_000_000_000,
        nonce: [5; 16],
        key_id: 1,
    };
    let t = terms(&block);
    let extra = challenge::extra(&key, &t, &stamp);
    let payment = json!({
        "x402Version": 2,
        "resource": {"url": t.resource},
        "accepted": {
            "scheme": "exact", "network": t.network, "amount": t.amount.to_string(),
            "asset": "XNO", "payTo": t.pay_to.to_address(), "maxTimeoutSeconds": 120,
            "extra": extra,
        },
        "payload": {"block": block.to_json()},
        "extensions": {},
    });
    let header = encode_header(&payment);
    assert!(decode_payment(&header, MAX_HEADER_BYTES).is_ok());
    c.bench_function("header_decode_payment", |b| {
        b.iter(|| decode_payment(black_box(&header), MAX_HEADER_BYTES).is_ok())
    });

    let tag = challenge::mac(&key, &t, &stamp);
    c.bench_function("challenge_mac_verify", |b| {
        b.iter(|| challenge::verify(&key, black_box(&t), &stamp, &tag, 1).is_ok())
    });
}

criterion_group!(micro, benches);
criterion_main!(micro);
