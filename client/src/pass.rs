//! Prepaid passes on the payer's side (`--pass NAME`, docs/passes.md for the wire): finding
//! the named pass among a 402's offers, reading why a presented token was refused, and reading
//! the bought pass out of the receipt.
//!
//! A pass offer is an ordinary `accepts[]` entry plus `extra.pass` ([`PassTerms`]); it is paid
//! like any other offer (the entry echoed verbatim in `accepted`). Plain payments never take
//! one ([`crate::offer::usable_offer`] skips them): buying a pass by accident would spend its
//! price on one request.

use nanogate_protocol::contract::pass::{
    PassIssued, PassRefusal, PassTerms, EXTENSION_PASS, EXTRA_PASS,
};
use nanogate_protocol::nano::format_xno;
use nanogate_protocol::x402::SettlementResponse;
use serde_json::Value;

use crate::error::PayError;
use crate::offer::{usable_offer, Challenge, Offer};

/// One pass offer of a 402: the offer to pay and what it grants.
#[derive(Debug, Clone, PartialEq)]
pub struct PassOffer {
    pub offer: Offer,
    pub terms: PassTerms,
}

impl PassOffer {
    /// `hour (0.01 XNO, 3600 s)` or `hundred (0.05 XNO, 100 requests within 2592000 s)`.
    pub fn describe(&self) -> String {
        let grant = match self.terms.requests {
            Some(r) => format!("{r} requests within {} s", self.terms.seconds),
            None => format!("{} s", self.terms.seconds),
        };
        format!(
            "{} ({} XNO, {grant}, group {})",
            self.terms.name,
            format_xno(self.offer.amount),
            self.terms.group
        )
    }
}

/// Whether an `accepts[]` entry is a pass offer (has `extra.pass`, well-formed or not).
pub fn is_pass_offer(raw: &Value) -> bool {
    raw.get("extra")
        .and_then(|e| e.get(EXTRA_PASS))
        .is_some_and(|p| !p.is_null())
}

/// The terms of a pass offer, checked; the reason when they are unreadable.
pub fn pass_terms(raw: &Value) -> Result<PassTerms, String> {
    let p = raw
        .get("extra")
        .and_then(|e| e.get(EXTRA_PASS))
        .ok_or("no `extra.pass`")?;
    let terms: PassTerms = serde_json::from_value(p.clone())
        .map_err(|e| format!("`extra.pass` is unreadable: {e}"))?;
    terms.check().map_err(|e| format!("`extra.pass`: {e}"))?;
    Ok(terms)
}

/// The groups `challenge` sells the pass `name` for (any mechanism; malformed offers left out).
pub fn offered_groups(challenge: &Challenge, name: &str) -> Vec<String> {
    let mut groups: Vec<String> = challenge
        .accepts
        .iter()
        .filter_map(|raw| pass_terms(raw).ok())
        .filter(|t| t.name == name)
        .map(|t| t.group)
        .collect();
    groups.dedup();
    groups
}

/// Every pass offer of `challenge` payable by the mechanism `accept` judges (a signed block:
/// [`signed_pass_offer`]), and why each other pass offer was skipped.
fn pass_offers(
    challenge: &Challenge,
    accept: impl Fn(usize, &Value) -> Result<Offer, String>,
) -> (Vec<PassOffer>, Vec<String>) {
    let mut offers = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in challenge.accepts.iter().enumerate() {
        if !is_pass_offer(raw) {
            continue;
        }
        match pass_terms(raw).and_then(|terms| {
            Ok(PassOffer {
                offer: accept(i, raw)?,
                terms,
            })
        }) {
            Ok(p) => offers.push(p),
            Err(why) => skipped.push(format!("accepts[{i}]: {why}")),
        }
    }
    (offers, skipped)
}

/// A pass offer payable by a signed block: judged like any offer without its `extra.pass`.
pub fn signed_pass_offer(index: usize, raw: &Value) -> Result<Offer, String> {
    let mut plain = raw.clone();
    if let Some(e) = plain.get_mut("extra").and_then(Value::as_object_mut) {
        e.remove(EXTRA_PASS);
    }
    let mut offer = usable_offer(index, &plain)?;
    offer.raw = raw.clone();
    Ok(offer)
}

/// The pass `name` among `challenge`'s offers payable by `accept`, within `max_raw`. Not
/// offered → [`PayError::PassNotOffered`], listing what is (and why malformed offers were
/// skipped); over the maximum → [`PayError::OverMax`]. Two offers of one name (a server should
/// not send them) → the cheapest.
pub fn select_pass(
    challenge: &Challenge,
    name: &str,
    max_raw: u128,
    accept: impl Fn(usize, &Value) -> Result<Offer, String>,
) -> Result<PassOffer, PayError> {
    let (offers, skipped) = pass_offers(challenge, accept);
    let Some(chosen) = offers
        .iter()
        .filter(|p| p.terms.name == name)
        .min_by_key(|p| p.offer.amount)
        .cloned()
    else {
        return Err(PayError::PassNotOffered {
            name: name.to_owned(),
            offered: offers.iter().map(PassOffer::describe).collect(),
            skipped,
        });
    };
    if chosen.offer.amount > max_raw {
        return Err(PayError::OverMax {
            price: chosen.offer.amount,
            max: max_raw,
        });
    }
    Ok(chosen)
}

/// Why a presented token was refused, from the 402's `error` (`pass_<reason>`); `None` when
/// the refusal is not about a pass (e.g. the route sells none, so the token was not read).
pub fn refusal_of(challenge: &Challenge) -> Option<PassRefusal> {
    let error = challenge.error.as_deref()?;
    PassRefusal::ALL.into_iter().find(|r| r.error() == error)
}

/// What a refusal means for the token: drop it and buy the next, drop it and stop, or keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalAction {
    /// Used up or out of time: the normal end of a pass. Buy the next.
    Replace,
    /// For another group of the same server: keep it; look for the group's own pass.
    OtherGroup,
    /// The token can never be accepted again (revoked, mutated, unreadable): forget it and
    /// tell the user, rather than silently paying again.
    Forget,
    /// Minted under a key this proxy does not hold yet: keep it and tell the user (a proxy
    /// that has not fetched the newest keys will).
    Keep,
}

pub fn action_for(refusal: PassRefusal) -> RefusalAction {
    match refusal {
        PassRefusal::Exhausted | PassRefusal::Expired => RefusalAction::Replace,
        PassRefusal::WrongGroup => RefusalAction::OtherGroup,
        PassRefusal::Revoked | PassRefusal::Forged | PassRefusal::Malformed => {
            RefusalAction::Forget
        }
        PassRefusal::UnknownKey => RefusalAction::Keep,
    }
}

/// The pass a receipt carries (`extensions.pass`): `None` when there is none; an error when
/// there is one we cannot keep (unreadable, or a token unsafe to send back in a header).
pub fn issued_pass(receipt: &SettlementResponse) -> Option<Result<PassIssued, String>> {
    let v = receipt.extensions.as_ref()?.get(EXTENSION_PASS)?;
    Some(
        serde_json::from_value::<PassIssued>(v.clone())
            .map_err(|e| format!("unreadable `extensions.{EXTENSION_PASS}`: {e}"))
            .and_then(|p| {
                if p.is_safe() {
                    Ok(p)
                } else {
                    Err("the pass token or its names are not safe to present".to_owned())
                }
            }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::offer::{select_offer, ChallengeSource, ChallengeVersion};
    use nanogate_protocol::nano::{PrivateKey, RAW_PER_XNO};
    use serde_json::json;

    fn pay_to() -> String {
        PrivateKey::from_bytes([3; 32]).public_key().to_address()
    }

    fn offer(amount: u128, pass: Option<Value>) -> Value {
        let mut extra = json!({"validBefore": 1, "nonce": "00", "keyId": 1, "mac": "ab"});
        if let Some(p) = pass {
            extra["pass"] = p;
        }
        json!({"scheme": "exact", "network": "nano:devnet", "asset": "XNO",
               "amount": amount.to_string(), "payTo": pay_to(), "maxTimeoutSeconds": 60,
               "extra": extra})
    }

    fn challenge(accepts: Vec<Value>, error: Option<&str>) -> Challenge {
        Challenge {
            version: ChallengeVersion::V2,
            source: ChallengeSource::Header,
            error: error.map(str::to_owned),
            resource: None,
            extensions: None,
            accepts,
        }
    }

    const MILLI: u128 = RAW_PER_XNO / 1000;

    fn offers() -> Vec<Value> {
        vec![
            offer(MILLI, None),
            offer(
                10 * MILLI,
                Some(json!({"name": "hour", "group": "api", "seconds": 3600})),
            ),
            offer(
                50 * MILLI,
                Some(
                    json!({"name": "hundred", "group": "api", "seconds": 2_592_000,
                            "requests": 100}),
                ),
            ),
        ]
    }

    #[test]
    fn the_named_pass_is_chosen_and_kept_verbatim() {
        let c = challenge(offers(), None);
        let p = select_pass(&c, "hundred", RAW_PER_XNO, signed_pass_offer).unwrap();
        assert_eq!(p.offer.index, 2);
        assert_eq!(p.offer.amount, 50 * MILLI);
        assert_eq!(
            p.offer.raw, c.accepts[2],
            "echoed verbatim, extra.pass included"
        );
        assert_eq!(p.terms.requests, Some(100));
        assert_eq!(p.terms.group, "api");
        let h = select_pass(&c, "hour", RAW_PER_XNO, signed_pass_offer).unwrap();
        assert_eq!((h.offer.index, h.terms.requests), (1, None));
    }

    #[test]
    fn a_plain_payment_never_buys_a_pass() {
        // Even when a pass is the cheapest offer.
        let mut accepts = offers();
        accepts[1] = offer(
            MILLI / 2,
            Some(json!({"name": "hour", "group": "api", "seconds": 3600})),
        );
        let o = select_offer(&challenge(accepts.clone(), None), RAW_PER_XNO).unwrap();
        assert_eq!(o.index, 0);
        // Only passes on offer: nothing usable, and the reason says so.
        let e = select_offer(&challenge(accepts[1..].to_vec(), None), RAW_PER_XNO).unwrap_err();
        assert!(e.to_string().contains("--pass"), "{e}");
    }

    #[test]
    fn a_pass_not_offered_lists_what_is() {
        let e = select_pass(
            &challenge(offers(), None),
            "day",
            RAW_PER_XNO,
            signed_pass_offer,
        )
        .unwrap_err();
        let PayError::PassNotOffered { name, offered, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(name, "day");
        assert_eq!(offered.len(), 2);
        let msg = e.to_string();
        assert!(msg.contains("hour (0.01 XNO, 3600 s, group api)"), "{msg}");
        assert!(
            msg.contains("hundred (0.05 XNO, 100 requests within 2592000 s"),
            "{msg}"
        );
        // A route without passes says so.
        let e = select_pass(
            &challenge(vec![offer(MILLI, None)], None),
            "hour",
            RAW_PER_XNO,
            signed_pass_offer,
        )
        .unwrap_err();
        assert!(e.to_string().contains("offers no pass"), "{e}");
        assert_eq!(e.kind(), "pass_not_offered");
    }

    #[test]
    fn hostile_pass_offers_are_skipped_with_reasons_never_paid() {
        let bad = [
            json!("hour"),
            json!({"name": "hour", "group": "api"}),
            json!({"name": "hour", "group": "api", "seconds": -1}),
            json!({"name": "hour", "group": "api", "seconds": 0}),
            json!({"name": "hour", "group": "api", "seconds": 99_999_999}),
            json!({"name": "hour", "group": "api", "seconds": 60, "requests": 0}),
            json!({"name": "HOUR", "group": "api", "seconds": 60}),
            json!({"name": "hour", "group": "a;b", "seconds": 60}),
            json!({"name": "hour", "group": "api", "seconds": 60, "grant": "all"}),
        ];
        for p in bad {
            let c = challenge(
                vec![offer(MILLI, None), offer(MILLI, Some(p.clone()))],
                None,
            );
            let e = select_pass(&c, "hour", RAW_PER_XNO, signed_pass_offer).unwrap_err();
            let PayError::PassNotOffered {
                offered, skipped, ..
            } = &e
            else {
                panic!("{p}: {e:?}")
            };
            assert!(offered.is_empty(), "{p}");
            assert_eq!(skipped.len(), 1, "{p}");
            assert!(
                skipped[0].starts_with("accepts[1]: `extra.pass`"),
                "{p}: {skipped:?}"
            );
        }
        // Well-formed terms on an offer we cannot pay (another asset) are skipped too.
        let mut o = offer(
            MILLI,
            Some(json!({"name": "hour", "group": "api", "seconds": 60})),
        );
        o["asset"] = json!("USDC");
        let e = select_pass(
            &challenge(vec![o], None),
            "hour",
            RAW_PER_XNO,
            signed_pass_offer,
        )
        .unwrap_err();
        assert!(e.to_string().contains("asset `USDC`"), "{e}");
    }

    #[test]
    fn a_pass_over_the_maximum_is_refused_before_signing() {
        let e = select_pass(
            &challenge(offers(), None),
            "hundred",
            10 * MILLI,
            signed_pass_offer,
        )
        .unwrap_err();
        assert!(matches!(e, PayError::OverMax { price, .. } if price == 50 * MILLI));
    }

    #[test]
    fn refusals_map_to_what_the_payer_does() {
        for r in PassRefusal::ALL {
            let c = challenge(offers(), Some(r.error()));
            assert_eq!(refusal_of(&c), Some(r));
        }
        assert_eq!(
            refusal_of(&challenge(offers(), Some("payment_required"))),
            None
        );
        assert_eq!(refusal_of(&challenge(offers(), Some("pass_bogus"))), None);
        assert_eq!(refusal_of(&challenge(offers(), None)), None);
        assert_eq!(action_for(PassRefusal::Exhausted), RefusalAction::Replace);
        assert_eq!(action_for(PassRefusal::Expired), RefusalAction::Replace);
        assert_eq!(
            action_for(PassRefusal::WrongGroup),
            RefusalAction::OtherGroup
        );
        assert_eq!(action_for(PassRefusal::Revoked), RefusalAction::Forget);
        assert_eq!(action_for(PassRefusal::Forged), RefusalAction::Forget);
        assert_eq!(action_for(PassRefusal::UnknownKey), RefusalAction::Keep);
    }

    #[test]
    fn the_bought_pass_is_read_from_the_receipt_and_checked() {
        let mut r = SettlementResponse::success("AB".into(), "nano:devnet".into(), None);
        assert!(issued_pass(&r).is_none());
        let issued = json!({"token": "AQAAAAAAAAAB-_x", "id": "00".repeat(16), "name": "hour",
                            "group": "api", "expiresAt": 99});
        r.extensions = Some(serde_json::Map::from_iter([(
            "pass".to_owned(),
            issued.clone(),
        )]));
        let p = issued_pass(&r).unwrap().unwrap();
        assert_eq!(
            (p.name.as_str(), p.expires_at, p.requests),
            ("hour", 99, None)
        );
        // A token that would smuggle a header, or no token at all, is not kept.
        let mut evil = issued.clone();
        evil["token"] = json!("abc\r\nx-evil: 1");
        r.extensions = Some(serde_json::Map::from_iter([("pass".to_owned(), evil)]));
        assert!(issued_pass(&r).unwrap().is_err());
        r.extensions = Some(serde_json::Map::from_iter([(
            "pass".to_owned(),
            json!({"name": "hour"}),
        )]));
        assert!(issued_pass(&r).unwrap().is_err());
    }
}
