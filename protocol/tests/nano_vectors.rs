//! Every vector in tests/vectors/nano-vectors.json, checked against our Nano primitives.
//! A missing vector file fails the suite: these tests never skip.
#![allow(clippy::unwrap_used)]

use nanogate_protocol::hex;
use nanogate_protocol::nano::{
    amount, block, noms, work, AmountError, BlockHash, PrivateKey, PublicKey, Signature,
    StateBlock, WorkThresholds,
};
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/nano-vectors.json"
);

fn vectors() -> Value {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("conformance vectors missing at {VECTORS}: {e}"));
    serde_json::from_str(&text).expect("nano-vectors.json is valid JSON")
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    let l = v[key].as_array().unwrap_or_else(|| panic!("`{key}` list"));
    assert!(!l.is_empty(), "`{key}` is empty");
    l
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: `{key}` missing", v["id"]))
}

fn hex_u64(v: &str) -> u64 {
    u64::from_str_radix(v, 16).expect("hex u64")
}

#[test]
fn keys_derive_public_key_and_address() {
    let v = vectors();
    let keys = list(&v, "keys");
    for k in keys {
        let id = s(k, "id");
        let private = PrivateKey::from_hex(s(k, "private_key")).unwrap();
        if let (Some(seed), Some(index)) = (k["seed"].as_str(), k["index"].as_u64()) {
            let seed = hex::decode_array::<32>(seed).unwrap();
            let derived = PrivateKey::from_seed(&seed, index as u32);
            assert_eq!(derived.to_hex(), private.to_hex(), "{id}: seed derivation");
        }
        let public = private.public_key();
        assert_eq!(
            public,
            PublicKey::from_hex(s(k, "public_key")).unwrap(),
            "{id}: public key"
        );
        assert_eq!(public.to_address(), s(k, "address"), "{id}: address");
        assert_eq!(
            PublicKey::from_address(s(k, "address")),
            Ok(public),
            "{id}: decode"
        );
        if let Some(legacy) = k["address_in_source"].as_str() {
            assert_eq!(
                PublicKey::from_address(legacy),
                Ok(public),
                "{id}: legacy spelling"
            );
        }
    }
    let aliases = list(&v, "aliases");
    for a in aliases {
        let key = PublicKey::from_hex(s(a, "public_key")).unwrap();
        assert_eq!(PublicKey::from_address(s(a, "xrb_address")), Ok(key));
        assert_eq!(PublicKey::from_address(s(a, "nano_address")), Ok(key));
        assert_eq!(key.to_address(), s(a, "nano_address"));
    }
    let public = list(&v, "public_addresses");
    for p in public {
        let key = PublicKey::from_hex(s(p, "public_key")).unwrap();
        assert_eq!(key.to_address(), s(p, "address"), "{}", p["id"]);
    }
    println!(
        "nano vectors: {} keys, {} aliases, {} public addresses checked",
        keys.len(),
        aliases.len(),
        public.len()
    );
}

#[test]
fn invalid_addresses_are_refused_for_the_stated_reason() {
    let v = vectors();
    let bad = list(&v, "addresses_invalid");
    for a in bad {
        let err = PublicKey::from_address(s(a, "address")).expect_err(s(a, "id"));
        assert_eq!(err.code(), s(a, "reason"), "{}", a["id"]);
    }
    println!("nano vectors: {} invalid addresses checked", bad.len());
}

#[test]
fn blocks_hash_sign_and_verify() {
    let v = vectors();
    let blocks = list(&v, "blocks");
    let mut state = 0;
    for b in blocks {
        let id = s(b, "id");
        let json = &b["block"];
        let expected_hash = BlockHash::from_hex(s(b, "hash")).unwrap();
        if json["type"] == "open" {
            // The dev genesis: a legacy open block (no preamble).
            let source = hex::decode_array::<32>(s(json, "source")).unwrap();
            let rep = PublicKey::from_address(s(json, "representative")).unwrap();
            let account = PublicKey::from_address(s(json, "account")).unwrap();
            let hash = block::legacy_open_hash(&source, &rep, &account);
            assert_eq!(hash, expected_hash, "{id}: legacy hash");
            let sig = Signature::from_hex(s(json, "signature")).unwrap();
            assert_eq!(
                account.verify(&hash.0, &sig),
                b["signature_valid"] == true,
                "{id}"
            );
            let w = work::work_from_hex(s(json, "work")).unwrap();
            let root = hex::decode_array::<32>(s(b, "root")).unwrap();
            assert_eq!(
                work::difficulty(&root, w),
                hex_u64(s(b, "work_value")),
                "{id}"
            );
            continue;
        }
        let blk = StateBlock::from_json(json).unwrap_or_else(|e| panic!("{id}: {e}"));
        state += 1;
        assert_eq!(blk.hash(), expected_hash, "{id}: hash");
        if let Some(input) = b["hash_input_hex"].as_str() {
            assert_eq!(
                hex::encode_lower(&blk.hash_input()),
                input.to_lowercase(),
                "{id}"
            );
        }
        assert_eq!(
            blk.signature_valid(),
            b["signature_valid"].as_bool().unwrap(),
            "{id}: signature verdict"
        );
        assert_eq!(
            hex::encode_upper(&blk.root()),
            s(b, "root").to_uppercase(),
            "{id}: root"
        );
        assert_eq!(
            blk.work_difficulty(),
            hex_u64(s(b, "work_value")),
            "{id}: work value"
        );
        if let Some(matches) = b["link_as_account_matches_link"].as_bool() {
            let claimed = PublicKey::from_address(s(json, "link_as_account")).unwrap();
            assert_eq!(
                claimed == blk.link_as_key(),
                matches,
                "{id}: link_as_account"
            );
        }
        if let (Some(key), Some(sig)) = (
            b["private_key"].as_str(),
            b["signature_from_private_key"].as_str(),
        ) {
            let key = PrivateKey::from_hex(key).unwrap();
            let mut resigned = blk.clone();
            resigned.sign(&key);
            assert_eq!(
                resigned.signature,
                Signature::from_hex(sig).unwrap(),
                "{id}: re-sign"
            );
        }
        // Serialising and parsing again gives the same block.
        assert_eq!(
            StateBlock::from_json(&blk.to_json()).unwrap(),
            blk,
            "{id}: JSON round trip"
        );
    }
    assert!(state > 0);
    println!(
        "nano vectors: {} blocks checked ({state} state blocks)",
        blocks.len()
    );
}

#[test]
fn work_values_and_thresholds() {
    let v = vectors();
    let works = list(&v, "work");
    let live = WorkThresholds::LIVE;
    let dev = WorkThresholds::DEV;
    for w in works {
        let id = s(w, "id");
        let root = hex::decode_array::<32>(s(w, "root")).unwrap();
        let value = work::work_from_hex(s(w, "work")).unwrap();
        let d = work::difficulty(&root, value);
        assert_eq!(d, hex_u64(s(w, "difficulty")), "{id}: difficulty");
        let checks = [
            ("meets_mainnet_send", live.epoch_2),
            ("meets_mainnet_receive", live.epoch_2_receive),
            ("meets_mainnet_epoch_1", live.epoch_1),
            ("meets_dev_send", dev.epoch_2),
            ("meets_dev_receive", dev.epoch_2_receive),
            ("meets_dev_epoch_1", dev.epoch_1),
        ];
        for (key, threshold) in checks {
            if let Some(expected) = w[key].as_bool() {
                assert_eq!(d >= threshold, expected, "{id}: {key}");
            }
        }
    }
    let t = &v["thresholds"];
    for (name, ours) in [
        ("live", live),
        ("beta", WorkThresholds::BETA),
        ("dev", dev),
        ("test", live),
    ] {
        let n = &t[name];
        assert_eq!(ours.epoch_1, hex_u64(s(n, "epoch_1")), "{name} epoch_1");
        assert_eq!(ours.epoch_2, hex_u64(s(n, "epoch_2")), "{name} epoch_2");
        assert_eq!(
            ours.epoch_2_receive,
            hex_u64(s(n, "epoch_2_receive")),
            "{name}"
        );
        assert_eq!(ours.entry(), hex_u64(s(n, "entry")), "{name} entry");
        assert_eq!(
            ours.for_kind(work::BlockKind::Send, true),
            hex_u64(s(n, "send"))
        );
        assert_eq!(
            ours.for_kind(work::BlockKind::Open, true),
            hex_u64(s(n, "open"))
        );
        assert_eq!(
            ours.for_kind(work::BlockKind::Receive, false),
            hex_u64(s(n, "any_kind_epoch_0_or_1_account"))
        );
    }
    println!(
        "nano vectors: {} work values and 4 threshold tables checked",
        works.len()
    );
}

#[test]
fn networks_match_our_constants() {
    use nanogate_protocol::nano::network::*;
    let v = vectors();
    let n = &v["networks"];
    assert_eq!(s(&n["live"], "genesis_hash"), LIVE_GENESIS_HASH);
    assert_eq!(s(&n["dev"], "genesis_hash"), DEV_GENESIS_HASH);
    assert_eq!(s(&n["dev"], "genesis_account"), DEV_GENESIS_ACCOUNT);
    assert_eq!(s(&n["dev"], "genesis_private_key"), DEV_GENESIS_PRIVATE_KEY);
    assert_eq!(s(&n["dev"], "x402_network"), X402_DEVNET);
    assert_eq!(s(&n["live"], "x402_network"), X402_MAINNET);
    let key = PrivateKey::from_hex(DEV_GENESIS_PRIVATE_KEY).unwrap();
    assert_eq!(key.public_key().to_address(), DEV_GENESIS_ACCOUNT);
    assert_eq!(
        amount::parse_raw(s(&n["dev"], "genesis_balance")),
        Ok(u128::MAX)
    );
    println!("nano vectors: 2 networks checked");
}

#[test]
fn amounts_parse_format_and_refuse() {
    let v = vectors();
    let a = &v["amounts"];
    let valid = list(a, "valid");
    for x in valid {
        let raw = amount::parse_raw(s(x, "raw")).unwrap();
        assert_eq!(amount::parse_xno(s(x, "xno")), Ok(raw), "{}", x["id"]);
        assert_eq!(
            amount::format_xno(raw),
            s(x, "xno"),
            "{}: canonical",
            x["id"]
        );
        for alt in x["also_accepted_xno"].as_array().into_iter().flatten() {
            assert_eq!(amount::parse_xno(alt.as_str().unwrap()), Ok(raw), "{alt}");
        }
    }
    let code = |r: Result<u128, AmountError>| r.map_err(AmountError::code);
    let bad_xno = list(a, "invalid_xno");
    for x in bad_xno {
        assert_eq!(
            code(amount::parse_xno(s(x, "input"))),
            Err(s(x, "error")),
            "{}",
            x["id"]
        );
    }
    let bad_raw = list(a, "invalid_raw");
    for x in bad_raw {
        assert_eq!(
            code(amount::parse_raw(s(x, "input"))),
            Err(s(x, "error")),
            "{}",
            x["id"]
        );
    }
    println!(
        "nano vectors: {} valid amounts, {} invalid XNO, {} invalid raw checked",
        valid.len(),
        bad_xno.len(),
        bad_raw.len()
    );
}

#[test]
fn noms_messages_digest_sign_and_verify() {
    let v = vectors();
    let all = list(&v, "noms");
    for n in all {
        let id = s(n, "id");
        let message = s(n, "message");
        assert_eq!(
            hex::encode_lower(&noms::payload(message).unwrap()),
            s(n, "payload_hex").to_lowercase(),
            "{id}: payload"
        );
        assert_eq!(
            hex::encode_lower(&noms::digest(message).unwrap()),
            s(n, "digest").to_lowercase(),
            "{id}: digest"
        );
        let key = PublicKey::from_hex(s(n, "public_key")).unwrap();
        assert_eq!(PublicKey::from_address(s(n, "account")), Ok(key), "{id}");
        let sig = Signature::from_hex(s(n, "signature")).unwrap();
        assert_eq!(
            noms::verify(&key, message, &sig),
            n["signature_valid"].as_bool().unwrap(),
            "{id}: verdict"
        );
        let private = PrivateKey::from_hex(s(n, "private_key")).unwrap();
        let own = n["signature_from_private_key"]
            .as_str()
            .unwrap_or_else(|| s(n, "signature"));
        assert_eq!(
            noms::sign(&private, message).unwrap(),
            Signature::from_hex(own).unwrap(),
            "{id}: deterministic signature"
        );
    }
    println!("nano vectors: {} NOMS messages checked", all.len());
}
