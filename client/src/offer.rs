//! Reading a 402 and choosing what to pay.
//!
//! Sources, in order (as x402 v2's HTTP transport has it): the `PAYMENT-REQUIRED` header (v2,
//! authoritative when present: a malformed header is an error, not a reason to trust the
//! body), else a JSON body with `x402Version: 2`, else a v1 body (`x402Version: 1`, or
//! `accepts[]` entries with `maxAmountRequired`).
//!
//! Offers are kept as the server's raw JSON so that `accepted` echoes them verbatim (the
//! filter's MAC covers fields our typed structs might normalise).

use nanogate_protocol::challenge;
use nanogate_protocol::contract::pass::EXTRA_PASS;
use nanogate_protocol::contract::{Mechanism, ASSET_XNO, SCHEME_EXACT};
use nanogate_protocol::nano::network::{X402_DEVNET, X402_MAINNET};
use nanogate_protocol::nano::{parse_raw, Network, PublicKey, WorkThresholds};
use nanogate_protocol::x402::{decode_header_bytes, payload_keys, PaymentRequirements};
use serde_json::{Map, Value};

use crate::error::PayError;

/// Largest `PAYMENT-REQUIRED` value we decode (bytes, before decoding). Servers cap what they
/// accept at 8 KB; a challenge with many offers may be larger, but not this large.
pub const MAX_CHALLENGE_HEADER_BYTES: usize = 64 * 1024;

/// `extra` keys that mark an offer for a mechanism other than a signed block (a tagged
/// session, or a proof of a block the client broadcasts itself).
pub const OTHER_MECHANISM_KEYS: &[&str] = &[
    "session",
    challenge::EXTRA_NANO_SESSION,
    "tagAmountRaw",
    payload_keys::PROOF,
];

/// `extra.mechanism` values that mean "signed block": ours, and other servers' spellings.
pub const SIGNED_BLOCK_MECHANISMS: &[&str] = &[
    Mechanism::SignedBlock.as_str(),
    "signed-block",
    "signedBlock",
    "nanoTxn",
];

/// Which x402 version a challenge speaks, which decides the retry header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChallengeVersion {
    /// Body `PaymentRequirementsResponse`; pay with `X-PAYMENT`.
    V1,
    /// `PAYMENT-REQUIRED`; pay with `PAYMENT-SIGNATURE`.
    V2,
}

/// Where the challenge was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeSource {
    Header,
    Body,
}

/// A parsed 402: the envelope plus the raw `accepts[]` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub version: ChallengeVersion,
    pub source: ChallengeSource,
    /// The server's `error`, e.g. why it refused the previous payment.
    pub error: Option<String>,
    /// v2 `resource` object, verbatim.
    pub resource: Option<Value>,
    /// v2 `extensions`, echoed back in the payment.
    pub extensions: Option<Value>,
    pub accepts: Vec<Value>,
}

/// One usable offer: the fields we act on, decoded, plus the server's JSON verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// Position in `accepts[]`.
    pub index: usize,
    pub raw: Value,
    pub scheme: String,
    pub network: String,
    pub asset: String,
    pub amount: u128,
    /// `payTo` as the server spelt it.
    pub pay_to: String,
    /// `payTo` decoded: the only destination we ever sign for.
    pub pay_to_key: PublicKey,
    pub max_timeout_seconds: Option<u64>,
}

impl Offer {
    /// The offer as protocol's typed requirements (v1 offers are mapped onto the v2 shape).
    pub fn to_requirements(&self) -> PaymentRequirements {
        let extra = self
            .raw
            .get("extra")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        PaymentRequirements {
            scheme: self.scheme.clone(),
            network: self.network.clone(),
            amount: self.amount.to_string(),
            asset: self.asset.clone(),
            pay_to: self.pay_to.clone(),
            max_timeout_seconds: self.max_timeout_seconds.unwrap_or(0),
            extra,
        }
    }

    /// The work thresholds for this offer's network.
    pub fn thresholds(&self) -> WorkThresholds {
        thresholds_for_network(&self.network)
    }
}

/// The thresholds implied by an x402 network id: `nano:devnet` → dev, `nano:beta` → beta,
/// `nano:mainnet` and anything unknown → live (the safe choice: live work is valid anywhere).
pub fn thresholds_for_network(network: &str) -> WorkThresholds {
    expected_node_network(network)
        .unwrap_or(Network::Live)
        .thresholds()
}

/// The node network (`version.network`) an x402 network id names, when we know it.
pub fn expected_node_network(network: &str) -> Option<Network> {
    match network {
        X402_DEVNET | "nano:dev" => Some(Network::Dev),
        X402_MAINNET | "nano:live" => Some(Network::Live),
        "nano:beta" => Some(Network::Beta),
        _ => None,
    }
}

fn malformed(msg: impl Into<String>) -> PayError {
    PayError::MalformedChallenge(msg.into())
}

fn version_of(obj: &Map<String, Value>) -> Option<u64> {
    obj.get("x402Version").and_then(Value::as_u64)
}

fn accepts_of(obj: &Map<String, Value>, what: &str) -> Result<Vec<Value>, PayError> {
    match obj.get("accepts") {
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(_) => Err(malformed(format!("{what}: `accepts` is not an array"))),
        None => Err(malformed(format!("{what}: no `accepts` array"))),
    }
}

fn envelope(
    obj: &Map<String, Value>,
    version: ChallengeVersion,
    source: ChallengeSource,
    what: &str,
) -> Result<Challenge, PayError> {
    let accepts = accepts_of(obj, what)?;
    let resource = match (version, obj.get("resource")) {
        (ChallengeVersion::V2, Some(r @ Value::Object(_))) => Some(r.clone()),
        _ => None,
    };
    Ok(Challenge {
        version,
        source,
        error: obj.get("error").and_then(Value::as_str).map(str::to_owned),
        resource,
        extensions: obj.get("extensions").filter(|e| e.is_object()).cloned(),
        accepts,
    })
}

/// Reads the challenge of a 402 from its `PAYMENT-REQUIRED` header value (if any) and body.
pub fn parse_challenge(header: Option<&str>, body: &[u8]) -> Result<Challenge, PayError> {
    if let Some(h) = header {
        let bytes = decode_header_bytes(h.trim(), MAX_CHALLENGE_HEADER_BYTES)
            .map_err(|e| malformed(format!("PAYMENT-REQUIRED header: {e}")))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("PAYMENT-REQUIRED header is not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| malformed("PAYMENT-REQUIRED header is not a JSON object"))?;
        let version = match version_of(obj) {
            Some(2) => ChallengeVersion::V2,
            Some(1) => ChallengeVersion::V1,
            _ => {
                return Err(malformed(
                    "PAYMENT-REQUIRED header: x402Version is not 1 or 2",
                ))
            }
        };
        return envelope(
            obj,
            version,
            ChallengeSource::Header,
            "PAYMENT-REQUIRED header",
        );
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        malformed("the 402 has no PAYMENT-REQUIRED header and its body is not x402 JSON")
    })?;
    let obj = v.as_object().ok_or_else(|| {
        malformed("the 402 has no PAYMENT-REQUIRED header and its body is not a JSON object")
    })?;
    match version_of(obj) {
        Some(2) => envelope(obj, ChallengeVersion::V2, ChallengeSource::Body, "402 body"),
        Some(1) => envelope(obj, ChallengeVersion::V1, ChallengeSource::Body, "402 body"),
        None => {
            let v1_shaped = obj
                .get("accepts")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|o| o.get("maxAmountRequired").is_some()));
            if v1_shaped {
                envelope(obj, ChallengeVersion::V1, ChallengeSource::Body, "402 body")
            } else {
                Err(malformed(
                    "the 402 has no PAYMENT-REQUIRED header and no x402 challenge in its body",
                ))
            }
        }
        Some(other) => Err(malformed(format!(
            "402 body: x402Version {other} is not supported"
        ))),
    }
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{key}` is missing or not a string"))
}

/// Decodes one `accepts[]` entry if this client can pay it; otherwise says why not.
pub fn usable_offer(index: usize, raw: &Value) -> Result<Offer, String> {
    let o = raw.as_object().ok_or("not a JSON object")?;
    let scheme = text(o, "scheme")?;
    if scheme != SCHEME_EXACT {
        return Err(format!("scheme `{scheme}` is not `{SCHEME_EXACT}`"));
    }
    let network = text(o, "network")?;
    if !network.starts_with("nano:") {
        return Err(format!("network `{network}` is not a Nano network"));
    }
    let asset = text(o, "asset")?;
    if asset != ASSET_XNO {
        return Err(format!("asset `{asset}` is not {ASSET_XNO}"));
    }
    match o.get("extra") {
        None | Some(Value::Null) => {}
        Some(Value::Object(extra)) => {
            if extra.get(EXTRA_PASS).is_some_and(|v| !v.is_null()) {
                return Err("a prepaid pass offer (buy it with --pass NAME)".into());
            }
            if let Some(k) = OTHER_MECHANISM_KEYS
                .iter()
                .find(|k| extra.get(**k).is_some_and(|v| !v.is_null()))
            {
                return Err(format!(
                    "`extra.{k}` marks another payment mechanism than a signed block"
                ));
            }
            if let Some(m) = extra
                .get(challenge::EXTRA_MECHANISM)
                .and_then(Value::as_str)
            {
                if !SIGNED_BLOCK_MECHANISMS.contains(&m) {
                    return Err(format!("mechanism `{m}` is not a signed block"));
                }
            }
        }
        Some(_) => return Err("`extra` is not an object".into()),
    }
    let amount_text = match (o.get("amount"), o.get("maxAmountRequired")) {
        (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => s.as_str(),
        _ => return Err("`amount` is missing or not a string".into()),
    };
    let amount = parse_raw(amount_text).map_err(|e| format!("amount `{amount_text}`: {e}"))?;
    if amount == 0 {
        return Err("amount is zero".into());
    }
    let pay_to = text(o, "payTo")?;
    let pay_to_key =
        PublicKey::from_address(pay_to).map_err(|e| format!("payTo `{pay_to}`: {e}"))?;
    Ok(Offer {
        index,
        raw: raw.clone(),
        scheme: scheme.to_owned(),
        network: network.to_owned(),
        asset: asset.to_owned(),
        amount,
        pay_to: pay_to.to_owned(),
        pay_to_key,
        max_timeout_seconds: o.get("maxTimeoutSeconds").and_then(Value::as_u64),
    })
}

/// Picks the cheapest usable offer, refusing when even that costs more than `max_raw`.
pub fn select_offer(challenge: &Challenge, max_raw: u128) -> Result<Offer, PayError> {
    let mut reasons = Vec::new();
    let mut usable = Vec::new();
    for (i, raw) in challenge.accepts.iter().enumerate() {
        match usable_offer(i, raw) {
            Ok(o) => usable.push(o),
            Err(why) => reasons.push(format!("accepts[{i}]: {why}")),
        }
    }
    let Some(cheapest) = usable.into_iter().min_by_key(|o| o.amount) else {
        if reasons.is_empty() {
            reasons.push("`accepts` is empty".into());
        }
        return Err(PayError::NoUsableOffer { reasons });
    };
    if cheapest.amount > max_raw {
        return Err(PayError::OverMax {
            price: cheapest.amount,
            max: max_raw,
        });
    }
    Ok(cheapest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nanogate_protocol::nano::{PrivateKey, RAW_PER_XNO};
    use nanogate_protocol::x402::encode_bytes;
    use serde_json::json;

    fn pay_to() -> String {
        PrivateKey::from_bytes([3; 32]).public_key().to_address()
    }

    fn offer(amount: &str) -> Value {
        json!({"scheme": "exact", "network": "nano:devnet", "asset": "XNO", "amount": amount,
               "payTo": pay_to(), "maxTimeoutSeconds": 60,
               "extra": {"validBefore": 1, "nonce": "00", "keyId": 1, "mac": "ab"}})
    }

    fn challenge(accepts: Vec<Value>) -> Challenge {
        Challenge {
            version: ChallengeVersion::V2,
            source: ChallengeSource::Header,
            error: None,
            resource: None,
            extensions: None,
            accepts,
        }
    }

    const MILLI: u128 = RAW_PER_XNO / 1000;

    #[test]
    fn picks_the_cheapest_usable_offer_within_max() {
        let c = challenge(vec![
            offer(&(5 * MILLI).to_string()),
            offer(&MILLI.to_string()),
            json!({"scheme": "upto", "network": "nano:devnet", "asset": "XNO", "amount": "1",
                   "payTo": pay_to()}),
        ]);
        let o = select_offer(&c, 10 * MILLI).unwrap();
        assert_eq!((o.index, o.amount), (1, MILLI));
        assert_eq!(o.raw, c.accepts[1]);
    }

    #[test]
    fn over_max_is_refused_with_the_price() {
        let c = challenge(vec![offer(&(20 * MILLI).to_string())]);
        match select_offer(&c, 10 * MILLI) {
            Err(PayError::OverMax { price, max }) => {
                assert_eq!((price, max), (20 * MILLI, 10 * MILLI))
            }
            other => panic!("{other:?}"),
        }
        // Exactly the maximum is allowed.
        assert!(select_offer(&c, 20 * MILLI).is_ok());
    }

    #[test]
    fn unusable_offers_are_skipped_with_reasons() {
        let mut session = offer("5");
        session["extra"]["session"] = json!({"id": "s1", "tag": "9"});
        let mut tagged = offer("5");
        tagged["extra"] = json!({"mechanism": "tagged"});
        let mut evm = offer("5");
        evm["network"] = json!("eip155:8453");
        let mut usdc = offer("5");
        usdc["asset"] = json!("USDC");
        let mut bad_pay_to = offer("5");
        bad_pay_to["payTo"] = json!("nano_1111");
        let mut neg = offer("5");
        neg["amount"] = json!("-5");
        let mut num = offer("5");
        num["amount"] = json!(5);
        let c = challenge(vec![
            session,
            tagged,
            evm,
            usdc,
            bad_pay_to,
            neg,
            num,
            offer("0"),
            json!("x"),
        ]);
        match select_offer(&c, u128::MAX) {
            Err(PayError::NoUsableOffer { reasons }) => {
                assert_eq!(reasons.len(), 9, "{reasons:?}");
                assert!(reasons[0].contains("extra.session"));
                assert!(reasons[1].contains("tagged"));
                assert!(reasons[2].contains("not a Nano network"));
                assert!(reasons[3].contains("USDC"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            select_offer(&challenge(vec![]), 1),
            Err(PayError::NoUsableOffer { .. })
        ));
    }

    #[test]
    fn signed_block_mechanism_marker_is_accepted() {
        let mut o = offer("5");
        o["extra"]["mechanism"] = json!("block");
        assert!(usable_offer(0, &o).is_ok());
        let mut o = offer("5");
        o["extra"] = Value::Null;
        assert!(usable_offer(0, &o).is_ok());
    }

    #[test]
    fn v1_offers_use_max_amount_required() {
        let body = json!({"x402Version": 1, "error": "X-PAYMENT header is required",
            "accepts": [{"scheme": "exact", "network": "nano:devnet", "asset": "XNO",
                         "maxAmountRequired": "7", "resource": "http://x/y", "description": "",
                         "payTo": pay_to(), "maxTimeoutSeconds": 60}]});
        let c = parse_challenge(None, body.to_string().as_bytes()).unwrap();
        assert_eq!(c.version, ChallengeVersion::V1);
        assert_eq!(select_offer(&c, 10).unwrap().amount, 7);
        // Versionless NanoGPT-style body.
        let mut nv = body.clone();
        nv.as_object_mut().unwrap().remove("x402Version");
        let c = parse_challenge(None, nv.to_string().as_bytes()).unwrap();
        assert_eq!(c.version, ChallengeVersion::V1);
    }

    #[test]
    fn header_wins_and_malformed_header_is_an_error() {
        let pr = json!({"x402Version": 2, "resource": {"url": "http://x/y"},
                        "accepts": [offer("5")], "extensions": {"e": 1}});
        let h = encode_bytes(pr.to_string().as_bytes());
        let c = parse_challenge(Some(&h), b"<html>pay me</html>").unwrap();
        assert_eq!(
            (c.version, c.source),
            (ChallengeVersion::V2, ChallengeSource::Header)
        );
        assert_eq!(c.resource, Some(json!({"url": "http://x/y"})));
        assert_eq!(c.extensions, Some(json!({"e": 1})));
        // base64url without padding is accepted too.
        let url = h.replace('+', "-").replace('/', "_");
        assert!(parse_challenge(Some(url.trim_end_matches('=')), b"").is_ok());

        let err = parse_challenge(Some("%%%not base64"), pr.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("PAYMENT-REQUIRED header"), "{err}");
        let not_json = encode_bytes(b"hello");
        assert!(parse_challenge(Some(&not_json), b"")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        // Body fallback with x402Version 2.
        let c = parse_challenge(None, pr.to_string().as_bytes()).unwrap();
        assert_eq!(
            (c.version, c.source),
            (ChallengeVersion::V2, ChallengeSource::Body)
        );
        // Nothing at all.
        assert!(matches!(
            parse_challenge(None, b"{}"),
            Err(PayError::MalformedChallenge(_))
        ));
        assert!(matches!(
            parse_challenge(None, b"payment required"),
            Err(PayError::MalformedChallenge(_))
        ));
    }

    #[test]
    fn network_implies_thresholds_unknown_is_live() {
        assert_eq!(thresholds_for_network("nano:devnet"), WorkThresholds::DEV);
        assert_eq!(thresholds_for_network("nano:mainnet"), WorkThresholds::LIVE);
        assert_eq!(
            thresholds_for_network("nano:whatever"),
            WorkThresholds::LIVE
        );
    }
}
