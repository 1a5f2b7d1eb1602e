//! Building and encoding the payment: a state send block on the payer's frontier, wrapped in a
//! v2 `PaymentPayload` (`PAYMENT-SIGNATURE`) or a v1 `X-PAYMENT` object.
//!
//! The block's destination is always `payTo` decoded to a public key; the representative stays
//! the account's current one; the new balance is exactly the old one minus the price.

use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey, Signature, StateBlock};
use nanogate_protocol::x402::{
    encode_bytes, headers, PaymentPayload, PaymentRequirements, ResourceInfo, X402_VERSION_1,
    X402_VERSION_2,
};
use serde_json::{json, Map, Value};

use crate::error::PayError;
use crate::offer::{ChallengeVersion, Offer};
use crate::rpc::AccountInfo;

/// A signed send of `amount` raw from `key`'s account to `pay_to`, on top of `account`.
pub fn build_send_block(
    pay_to: &PublicKey,
    amount: u128,
    account: &AccountInfo,
    key: &PrivateKey,
    work: u64,
) -> Result<StateBlock, PayError> {
    let me = key.public_key();
    let balance =
        account
            .balance
            .checked_sub(amount)
            .ok_or_else(|| PayError::InsufficientFunds {
                account: me.to_address(),
                balance: account.balance,
                amount,
            })?;
    let mut block = StateBlock {
        account: me,
        previous: account.frontier,
        representative: account.representative,
        balance,
        link: pay_to.0,
        signature: Signature([0; 64]),
        work,
    };
    block.sign(key);
    Ok(block)
}

/// The typed v2 payment for `offer`: what a hostile test mutates before encoding it with
/// `nanogate_protocol::x402::encode_header`. The destination comes from `offer.pay_to`
/// (decoded; an undecodable one is refused) and the price from `offer.amount`.
pub fn build_payment(
    offer: &PaymentRequirements,
    resource: Option<ResourceInfo>,
    account: &AccountInfo,
    key: &PrivateKey,
    work: u64,
) -> Result<PaymentPayload, PayError> {
    let pay_to = PublicKey::from_address(&offer.pay_to).map_err(|e| PayError::NoUsableOffer {
        reasons: vec![format!("payTo `{}`: {e}", offer.pay_to)],
    })?;
    let amount =
        nanogate_protocol::nano::parse_raw(&offer.amount).map_err(|e| PayError::NoUsableOffer {
            reasons: vec![format!("amount `{}`: {e}", offer.amount)],
        })?;
    let block = build_send_block(&pay_to, amount, account, key, work)?;
    Ok(PaymentPayload {
        x402_version: X402_VERSION_2,
        resource,
        accepted: offer.clone(),
        payload: json!({ "block": block.to_json() }),
        extensions: None,
    })
}

/// The v2 wire object: `accepted` is the server's offer JSON verbatim, `resource` and
/// `extensions` are echoed as the server sent them.
pub fn payment_json_v2(
    offer_raw: &Value,
    resource: Option<&Value>,
    extensions: Option<&Value>,
    block: &StateBlock,
) -> Value {
    let mut o = Map::new();
    o.insert("x402Version".into(), json!(X402_VERSION_2));
    if let Some(r) = resource {
        o.insert("resource".into(), r.clone());
    }
    o.insert("accepted".into(), offer_raw.clone());
    o.insert("payload".into(), json!({ "block": block.to_json() }));
    if let Some(e) = extensions {
        o.insert("extensions".into(), e.clone());
    }
    Value::Object(o)
}

/// The v1 `X-PAYMENT` object.
pub fn payment_json_v1(scheme: &str, network: &str, block: &StateBlock) -> Value {
    json!({
        "x402Version": X402_VERSION_1,
        "scheme": scheme,
        "network": network,
        "payload": { "block": block.to_json() },
    })
}

/// A signed payment, ready to send (and to journal).
#[derive(Debug, Clone, PartialEq)]
pub struct SignedPayment {
    pub version: ChallengeVersion,
    pub block: StateBlock,
    /// The payment object as sent (base64 of its compact JSON goes in the header).
    pub json: Value,
    pub amount: u128,
    pub network: String,
    pub pay_to: String,
}

impl SignedPayment {
    /// Signs a send for `offer` and wraps it for the challenge's version.
    pub fn new(
        version: ChallengeVersion,
        offer: &Offer,
        resource: Option<&Value>,
        extensions: Option<&Value>,
        account: &AccountInfo,
        key: &PrivateKey,
        work: u64,
    ) -> Result<Self, PayError> {
        let block = build_send_block(&offer.pay_to_key, offer.amount, account, key, work)?;
        let json = match version {
            ChallengeVersion::V2 => payment_json_v2(&offer.raw, resource, extensions, &block),
            ChallengeVersion::V1 => payment_json_v1(&offer.scheme, &offer.network, &block),
        };
        Ok(SignedPayment {
            version,
            block,
            json,
            amount: offer.amount,
            network: offer.network.clone(),
            pay_to: offer.pay_to.clone(),
        })
    }

    pub fn hash(&self) -> BlockHash {
        self.block.hash()
    }

    /// `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).
    pub fn header_name(&self) -> &'static str {
        header_name(self.version)
    }

    /// Standard padded base64 of the compact JSON.
    pub fn header_value(&self) -> String {
        encode_bytes(self.json.to_string().as_bytes())
    }
}

/// The retry header for a challenge version.
pub fn header_name(version: ChallengeVersion) -> &'static str {
    match version {
        ChallengeVersion::V2 => headers::PAYMENT_SIGNATURE,
        ChallengeVersion::V1 => headers::X_PAYMENT,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::offer::usable_offer;
    use nanogate_protocol::x402::{decode_payment, X402Version, MAX_HEADER_BYTES};

    fn key() -> PrivateKey {
        PrivateKey::from_bytes([1; 32])
    }

    fn account() -> AccountInfo {
        AccountInfo {
            frontier: BlockHash([9; 32]),
            balance: 1_000,
            representative: PrivateKey::from_bytes([2; 32]).public_key(),
        }
    }

    fn offer_json() -> Value {
        json!({"scheme": "exact", "network": "nano:devnet", "asset": "XNO", "amount": "300",
               "payTo": PrivateKey::from_bytes([3; 32]).public_key().to_address(),
               "maxTimeoutSeconds": 60,
               "extra": {"validBefore": 1700000000u64, "nonce": "ab", "keyId": 7, "mac": "cd",
                         "zFuture": [1, 2]}, "futureField": true})
    }

    #[test]
    fn send_block_decrements_exactly_and_keeps_representative() {
        let o = usable_offer(0, &offer_json()).unwrap();
        let b = build_send_block(&o.pay_to_key, 300, &account(), &key(), 42).unwrap();
        assert_eq!(b.balance, 700);
        assert_eq!(b.previous, account().frontier);
        assert_eq!(b.representative, account().representative);
        assert_eq!(b.link, o.pay_to_key.0);
        assert_eq!(b.account, key().public_key());
        assert_eq!(b.work, 42);
        assert!(b.signature_valid());
    }

    #[test]
    fn insufficient_balance_is_refused() {
        let o = usable_offer(0, &offer_json()).unwrap();
        let e = build_send_block(&o.pay_to_key, 1_001, &account(), &key(), 0).unwrap_err();
        assert!(matches!(
            e,
            PayError::InsufficientFunds {
                balance: 1_000,
                amount: 1_001,
                ..
            }
        ));
        // Spending everything is allowed.
        assert_eq!(
            build_send_block(&o.pay_to_key, 1_000, &account(), &key(), 0)
                .unwrap()
                .balance,
            0
        );
    }

    #[test]
    fn v2_payment_echoes_the_offer_verbatim_and_decodes() {
        let raw = offer_json();
        let o = usable_offer(0, &raw).unwrap();
        let resource = json!({"url": "http://127.0.0.1/paid", "mimeType": "text/plain"});
        let p = SignedPayment::new(
            ChallengeVersion::V2,
            &o,
            Some(&resource),
            None,
            &account(),
            &key(),
            5,
        )
        .unwrap();
        assert_eq!(p.header_name(), "PAYMENT-SIGNATURE");
        assert_eq!(p.json["accepted"], raw);
        assert_eq!(p.json["resource"], resource);
        assert_eq!(
            p.json["payload"]["block"]["link_as_account"],
            json!(o.pay_to)
        );
        let d = decode_payment(&p.header_value(), MAX_HEADER_BYTES).unwrap();
        assert_eq!(d.version(), X402Version::V2);
        assert_eq!(d.signed_block().unwrap(), &p.block);
        assert!(!p.header_value().contains(['-', '_']));
    }

    #[test]
    fn v1_payment_uses_x_payment() {
        let o = usable_offer(0, &offer_json()).unwrap();
        let p = SignedPayment::new(ChallengeVersion::V1, &o, None, None, &account(), &key(), 5)
            .unwrap();
        assert_eq!(p.header_name(), "X-PAYMENT");
        let d = decode_payment(&p.header_value(), MAX_HEADER_BYTES).unwrap();
        assert_eq!(d.version(), X402Version::V1);
        assert_eq!((d.scheme(), d.network()), ("exact", "nano:devnet"));
    }

    #[test]
    fn typed_build_payment_matches() {
        let o = usable_offer(0, &offer_json()).unwrap();
        let req = o.to_requirements();
        let p = build_payment(&req, None, &account(), &key(), 5).unwrap();
        assert_eq!(p.accepted, req);
        let b = StateBlock::from_json(&p.payload["block"]).unwrap();
        assert_eq!(b.balance, 700);
        let mut bad = req.clone();
        bad.pay_to = "nano_1".into();
        assert!(build_payment(&bad, None, &account(), &key(), 5).is_err());
    }
}
