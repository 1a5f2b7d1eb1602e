//! x402 conformance: the header codec, the v2/v1 samples carrying a signed dev-network send,
//! the settlement receipts and every malformed header in `tests/vectors/x402-vectors.json`.
//! A missing vector file fails the tests; it never skips them.

use nanogate_protocol::nano::{parse_raw, BlockHash, PrivateKey, PublicKey, StateBlock};
use nanogate_protocol::x402::{
    decode_header, decode_header_bytes, decode_payment, decode_payment_echo, encode_bytes,
    encode_header, DecodedPayment, ErrorReason, PaymentError, PaymentMechanism, PaymentPayload,
    PaymentPayloadV1, PaymentRequired, SettlementResponse, X402Version, MAX_HEADER_BYTES,
};
use proptest::prelude::*;
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/x402-vectors.json"
);

fn vectors() -> Value {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| {
        panic!("x402 conformance vectors are required but {VECTORS} could not be read: {e}")
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{VECTORS} is not JSON: {e}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("vector field `{key}` missing or not a string in {v}"))
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("vector array `{key}` missing"))
}

#[test]
fn max_header_bytes_matches_vectors() {
    let v = vectors();
    assert_eq!(
        v["max_header_bytes"].as_u64(),
        Some(MAX_HEADER_BYTES as u64)
    );
}

#[test]
fn base64_vectors_follow_acceptance_policy() {
    let v = vectors();
    let mut n = 0;
    for case in arr(&v, "base64") {
        let id = s(case, "id");
        let input = s(case, "input");
        let accept = case["accept"].as_bool().expect("accept is a bool");
        let got = decode_header_bytes(input, MAX_HEADER_BYTES);
        if accept {
            let bytes = got.unwrap_or_else(|e| panic!("{id}: expected accept, got {e}"));
            let text = String::from_utf8(bytes.clone()).expect("decoded vectors are UTF-8");
            assert_eq!(text, s(case, "decoded_utf8"), "{id}");
            // What we emit is always the standard padded form, which we accept too.
            let emitted = encode_bytes(&bytes);
            assert_eq!(
                decode_header_bytes(&emitted, MAX_HEADER_BYTES).ok(),
                Some(bytes)
            );
            if !input.contains(['-', '_']) && input.len().is_multiple_of(4) {
                assert_eq!(
                    emitted, input,
                    "{id}: standard padded input re-encodes exactly"
                );
            }
        } else {
            assert!(got.is_err(), "{id}: expected reject, got {got:?}");
        }
        n += 1;
    }
    println!("x402 vectors: {n} base64 checked");
    assert!(n > 0);
}

#[test]
fn payment_required_encodes_byte_for_byte() {
    let v = vectors();
    let pr = &v["payment_required"];
    let object = &pr["object"];
    let header = s(pr, "header_value");
    let typed: PaymentRequired =
        serde_json::from_value(object.clone()).expect("PaymentRequired parses");
    assert_eq!(encode_header(&typed), header);
    let back: PaymentRequired = decode_header(header, MAX_HEADER_BYTES).expect("decodes");
    assert_eq!(back, typed);
    assert_eq!(serde_json::to_value(&back).expect("to_value"), *object);
    assert_eq!(back.x402_version, 2);
    assert_eq!(back.accepts.len(), 1);
    println!("x402 vectors: 1 payment_required checked");
}

struct Expect<'a> {
    name: &'static str,
    version: X402Version,
    ledger: &'a Value,
}

fn check_payment(v: &Value, e: &Expect<'_>) -> DecodedPayment {
    let sample = &v[e.name];
    let header = s(sample, "header_value");
    let object = &sample["object"];
    let ledger = e.ledger;
    let name = e.name;

    let p = decode_payment(header, MAX_HEADER_BYTES)
        .unwrap_or_else(|err| panic!("{name}: {err} ({})", err.category()));
    assert_eq!(p.version(), e.version, "{name}");
    assert_eq!(
        p.payload(),
        object["payload"].as_object().expect("payload object")
    );

    let block: &StateBlock = p.signed_block().expect("signed-block mechanism");
    assert!(matches!(p.mechanism(), PaymentMechanism::SignedBlock(_)));
    assert_eq!(
        block.hash(),
        BlockHash::from_hex(s(ledger, "block_hash")).expect("hash hex"),
        "{name}: block hash"
    );
    assert_eq!(
        block.signature_valid(),
        ledger["signature_valid"]
            .as_bool()
            .expect("signature_valid"),
        "{name}"
    );
    assert!(block.signature_valid(), "{name}: signature verifies");

    // The payee: compare keys, never address strings.
    let merchant = PublicKey::from_hex(s(ledger, "pay_to_public_key")).expect("merchant key");
    assert_eq!(
        block.link_as_key(),
        merchant,
        "{name}: link is the merchant key"
    );
    assert_eq!(
        PublicKey::from_address(s(ledger, "pay_to")).expect("pay_to address"),
        merchant
    );
    let merchant_sk = PrivateKey::from_hex(s(ledger, "pay_to_private_key")).expect("sk");
    assert_eq!(merchant_sk.public_key(), merchant);
    let payer_sk = PrivateKey::from_hex(s(ledger, "payer_private_key")).expect("sk");
    assert_eq!(payer_sk.public_key(), block.account);
    assert_eq!(
        block.account,
        PublicKey::from_address(s(ledger, "payer_account")).expect("payer")
    );

    // The exact decrement and the frontier the send builds on.
    assert_eq!(
        block.previous,
        BlockHash::from_hex(s(ledger, "payer_frontier_before")).expect("frontier")
    );
    let before = parse_raw(s(ledger, "payer_balance_before")).expect("before");
    let after = parse_raw(s(ledger, "payer_balance_after")).expect("after");
    let amount = parse_raw(s(ledger, "amount")).expect("amount");
    assert_eq!(block.balance, after);
    assert_eq!(before.checked_sub(block.balance), Some(amount));
    assert_eq!(
        format!("{:016x}", block.work_difficulty()),
        s(ledger, "work_difficulty").to_ascii_lowercase()
    );
    assert_eq!(
        block.root(),
        BlockHash::from_hex(s(ledger, "work_root")).expect("root").0
    );

    if let Some(accepted) = p.accepted() {
        assert_eq!(
            PublicKey::from_address(&accepted.pay_to).ok(),
            Some(merchant),
            "{name}: accepted.payTo"
        );
        assert_eq!(parse_raw(&accepted.amount).ok(), Some(amount));
    }
    p
}

#[test]
fn payment_payload_vectors_decode_and_verify() {
    let v = vectors();
    let v2_ledger = &v["payment_payload_v2"]["ledger_assumptions"];
    let cases = [
        Expect {
            name: "payment_payload_v2",
            version: X402Version::V2,
            ledger: v2_ledger,
        },
        Expect {
            name: "payment_payload_v2_after_v9",
            version: X402Version::V2,
            ledger: &v["payment_payload_v2_after_v9"]["ledger_assumptions"],
        },
        // The v1 sample carries the same block as payment_payload_v2.
        Expect {
            name: "payment_payload_v1",
            version: X402Version::V1,
            ledger: v2_ledger,
        },
    ];
    let mut n = 0;
    for e in &cases {
        let p = check_payment(&v, e);
        let object = &v[e.name]["object"];
        match e.version {
            X402Version::V2 => {
                let typed: PaymentPayload =
                    serde_json::from_value(object.clone()).expect("typed v2");
                assert_eq!(p.accepted(), Some(&typed.accepted));
                assert_eq!(p.resource(), typed.resource.as_ref());
                assert_eq!(p.to_payload_v2(None), Some(typed));
                assert_eq!(p.scheme(), "exact");
            }
            X402Version::V1 => {
                let typed: PaymentPayloadV1 =
                    serde_json::from_value(object.clone()).expect("typed v1");
                assert_eq!((p.scheme(), p.network()), (&*typed.scheme, &*typed.network));
                assert_eq!(p.to_payload_v1(), typed);
                assert!(p.accepted().is_none());
            }
        }
        n += 1;
    }
    println!("x402 vectors: {n} payment payloads checked");
    assert!(n > 0);
}

#[test]
fn settlement_responses_encode_byte_for_byte() {
    let v = vectors();
    let mut n = 0;
    for key in ["success", "failure"] {
        let case = &v["settlement_response"][key];
        let header = s(case, "header_value");
        let typed: SettlementResponse =
            serde_json::from_value(case["object"].clone()).expect("SettlementResponse parses");
        assert_eq!(encode_header(&typed), header, "{key}");
        let back: SettlementResponse = decode_header(header, MAX_HEADER_BYTES).expect("decodes");
        assert_eq!(back, typed);
        assert_eq!(
            serde_json::to_value(&back).expect("to_value"),
            case["object"]
        );
        assert_eq!(back.success, key == "success");
        n += 1;
    }
    // Our constructors reproduce the vectors too.
    let failure: SettlementResponse = decode_header(
        s(&v["settlement_response"]["failure"], "header_value"),
        MAX_HEADER_BYTES,
    )
    .expect("decodes");
    assert_eq!(failure.reason(), Some(ErrorReason::InvalidTransactionState));
    let rebuilt = SettlementResponse::failure(
        ErrorReason::InvalidTransactionState,
        failure.network.clone(),
        failure.payer.clone(),
    );
    assert_eq!(rebuilt, failure);
    let success: SettlementResponse = decode_header(
        s(&v["settlement_response"]["success"], "header_value"),
        MAX_HEADER_BYTES,
    )
    .expect("decodes");
    let rebuilt = SettlementResponse::success(
        success.transaction.clone(),
        success.network.clone(),
        success.payer.clone(),
    );
    assert_eq!(
        encode_header(&rebuilt),
        s(&v["settlement_response"]["success"], "header_value")
    );
    println!("x402 vectors: {n} settlement responses checked");
    assert!(n > 0);
}

#[test]
fn malformed_headers_get_their_category_status_and_reason() {
    let v = vectors();
    let cap = v["max_header_bytes"]
        .as_u64()
        .and_then(|c| usize::try_from(c).ok())
        .expect("max_header_bytes");
    let mut n = 0;
    for case in arr(&v, "malformed") {
        let id = s(case, "id");
        let expected = s(case, "expected_category");
        let got = decode_payment(s(case, "header_value"), cap);
        assert_echo_agrees(s(case, "header_value"), cap);
        match (&got, expected) {
            (Ok(p), "ok") => {
                assert_eq!(case["suggested_status"].as_u64(), Some(200), "{id}");
                assert!(p.signed_block().is_ok(), "{id}");
            }
            (Err(e), _) => {
                assert_eq!(e.category(), expected, "{id}: {e}");
                assert_eq!(
                    u64::from(e.http_status()),
                    case["suggested_status"].as_u64().expect("status"),
                    "{id}"
                );
                assert_eq!(
                    Some(e.reason().as_str()),
                    case["suggested_error_reason"].as_str(),
                    "{id}"
                );
            }
            (Ok(_), _) => panic!("{id}: accepted, expected {expected}"),
        }
        n += 1;
    }
    println!("x402 vectors: {n} malformed headers checked");
    assert!(n > 0);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9_:]{0,70}".prop_map(Value::String),
        Just(Value::from(1)),
        Just(Value::from(2)),
        Just(Value::from("state")),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let keys = prop_oneof![
            Just("x402Version".to_string()),
            Just("accepted".to_string()),
            Just("payload".to_string()),
            Just("block".to_string()),
            Just("scheme".to_string()),
            Just("network".to_string()),
            Just("resource".to_string()),
            Just("extensions".to_string()),
            Just("proof".to_string()),
            Just("type".to_string()),
            Just("balance".to_string()),
            "[a-z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The decoded JSON of the valid v2 sample, read once for the mutation proptest.
fn valid_payment_json() -> &'static [u8] {
    static JSON: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let v = vectors();
        let header = s(&v["payment_payload_v2"], "header_value");
        decode_header_bytes(header, MAX_HEADER_BYTES).expect("valid vector")
    })
}

/// Any categorized failure must be a 400 with a category from the documented list.
fn assert_well_formed_error(r: &Result<DecodedPayment, PaymentError>) {
    if let Err(e) = r {
        assert_eq!(e.http_status(), 400);
        assert!([
            "header_too_large",
            "not_base64",
            "not_json",
            "not_object",
            "wrong_x402_version",
            "missing_accepted",
            "missing_payload",
            "bad_envelope_field",
            "block_missing_fields",
            "bad_block_field",
            "bad_hex_field",
        ]
        .contains(&e.category()));
        let _ = e.to_string();
    }
}

/// The proxy's partial read ([`decode_payment_echo`]) against the full decode: the same
/// envelope when both accept, the same category when the full decode refuses before `payload`,
/// and no check of the block's contents (left to the sidecar).
fn assert_echo_agrees(header: &str, cap: usize) {
    let full = decode_payment(header, cap);
    let echo = decode_payment_echo(header, cap);
    match (&full, &echo) {
        (Ok(p), Ok(e)) => {
            assert_eq!(e.version(), p.version());
            assert_eq!((e.scheme(), e.network()), (p.scheme(), p.network()));
            assert_eq!(e.accepted(), p.accepted());
            assert_eq!(e.resource(), p.resource());
            assert_eq!(e.mechanism(), p.mechanism().mechanism());
        }
        (Err(PaymentError::Block(_)), Ok(e)) => {
            assert_eq!(
                e.mechanism(),
                nanogate_protocol::contract::Mechanism::SignedBlock
            );
        }
        (Err(f), Err(e)) => {
            assert_eq!(e.category(), f.category(), "{e} / {f}");
            assert_eq!(e.reason(), f.reason());
        }
        _ => panic!("full decode {full:?}, echo {echo:?}"),
    }
}

#[test]
fn the_echo_reads_only_the_envelope_and_the_payload_keys() {
    let v = vectors();
    let header = s(&v["payment_payload_v2"], "header_value");
    let mut json: Value =
        serde_json::from_slice(&decode_header_bytes(header, MAX_HEADER_BYTES).expect("b64"))
            .expect("json");
    let full = decode_payment(header, MAX_HEADER_BYTES).expect("valid");
    // A broken block is the sidecar's to refuse; the echo still names the mechanism.
    json["payload"]["block"]["account"] = Value::from("nano_1");
    let broken = encode_header(&json);
    assert!(matches!(
        decode_payment(&broken, MAX_HEADER_BYTES),
        Err(PaymentError::Block(_))
    ));
    let echo = decode_payment_echo(&broken, MAX_HEADER_BYTES).expect("envelope is fine");
    assert_eq!(echo.accepted(), full.accepted());
    assert_eq!(
        echo.mechanism(),
        nanogate_protocol::contract::Mechanism::SignedBlock
    );
    // Repeated top-level keys keep the last, as the full decode does.
    let text = String::from_utf8(decode_header_bytes(header, MAX_HEADER_BYTES).expect("b64"))
        .expect("utf-8");
    let doubled = format!("{{\"accepted\":7,{}", &text[1..]);
    assert_echo_agrees(&encode_bytes(doubled.as_bytes()), MAX_HEADER_BYTES);
    assert!(decode_payment_echo(&encode_bytes(doubled.as_bytes()), MAX_HEADER_BYTES).is_ok());
    // Refusals before the payload keep the full decode's categories.
    for (what, mutate) in [
        (
            "version",
            Box::new(|j: &mut Value| j["x402Version"] = Value::from(3)) as Box<dyn Fn(&mut Value)>,
        ),
        (
            "accepted",
            Box::new(|j: &mut Value| j["accepted"] = Value::from("x")),
        ),
        (
            "amount",
            Box::new(|j: &mut Value| j["accepted"]["amount"] = Value::from(5)),
        ),
        (
            "payload",
            Box::new(|j: &mut Value| j["payload"] = Value::Null),
        ),
        (
            "resource",
            Box::new(|j: &mut Value| j["resource"] = Value::from("x")),
        ),
        (
            "extensions",
            Box::new(|j: &mut Value| j["extensions"] = Value::from(1)),
        ),
        (
            "mechanism",
            Box::new(|j: &mut Value| j["payload"] = serde_json::json!({"x": 1})),
        ),
    ] {
        let mut j: Value = serde_json::from_str(&text).expect("json");
        mutate(&mut j);
        let h = encode_header(&j);
        assert!(decode_payment_echo(&h, MAX_HEADER_BYTES).is_err(), "{what}");
        assert_echo_agrees(&h, MAX_HEADER_BYTES);
    }
    // Not JSON anywhere, the skipped payload included, is still `not_json`.
    let cut = format!("{}}}", &text[..text.len() - 40]);
    assert_eq!(
        decode_payment_echo(&encode_bytes(cut.as_bytes()), MAX_HEADER_BYTES)
            .map_err(|e| e.category()),
        Err("not_json")
    );
}

proptest! {
    // No regression files: this target has no lib.rs for proptest to sit them beside.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decode_payment_never_panics_on_strings(s in any::<String>()) {
        assert_well_formed_error(&decode_payment(&s, MAX_HEADER_BYTES));
        assert_echo_agrees(&s, MAX_HEADER_BYTES);
    }

    #[test]
    fn decode_payment_never_panics_on_base64_alphabet(s in "[A-Za-z0-9+/_=-]{0,64}") {
        assert_well_formed_error(&decode_payment(&s, MAX_HEADER_BYTES));
        assert_echo_agrees(&s, MAX_HEADER_BYTES);
    }

    #[test]
    fn decode_payment_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        assert_well_formed_error(&decode_payment(&encode_bytes(&bytes), MAX_HEADER_BYTES));
        assert_echo_agrees(&encode_bytes(&bytes), MAX_HEADER_BYTES);
    }

    #[test]
    fn decode_payment_never_panics_on_json(v in json_value()) {
        assert_well_formed_error(&decode_payment(&encode_header(&v), MAX_HEADER_BYTES));
        assert_echo_agrees(&encode_header(&v), MAX_HEADER_BYTES);
    }

    #[test]
    fn decode_payment_never_panics_on_mutated_vector(
        idx in 0usize..4096, byte in any::<u8>(), cap in 0usize..10_000
    ) {
        let mut json = valid_payment_json().to_vec();
        let at = idx % json.len().max(1);
        if let Some(slot) = json.get_mut(at) {
            *slot = byte;
        }
        assert_well_formed_error(&decode_payment(&encode_bytes(&json), cap));
        assert_echo_agrees(&encode_bytes(&json), cap);
    }
}
