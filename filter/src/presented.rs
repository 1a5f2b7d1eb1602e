//! Checking the offer a payment presents (echoes in `accepted`) against our own terms, before any
//! sidecar call: one check for every mechanism, which differs only in how its offer is bound
//! (`Binding`). The client's `accepted` contributes only what the binding lets it choose (a
//! tagged session's payee and amount, which the MAC then vouches for) and the stamp: validBefore,
//! nonce, keyId and the MAC.

use crate::config::{Config, PassOffer, Price, TaggedTerms};
use crate::keys::KeyRing;
use nanogate_protocol::challenge::{
    self, ChallengeError, ChallengeStamp, ChallengeTerms, Mechanism,
};
use nanogate_protocol::contract::pass::{PassTerms, EXTRA_PASS};
use nanogate_protocol::contract::{Offer, SCHEME_EXACT};
use nanogate_protocol::hex;
use nanogate_protocol::nano::{parse_raw, PublicKey};
use nanogate_protocol::x402::{ErrorReason, JsonObject, PaymentEcho, PaymentRequirements};

/// How a presented offer is bound: the mechanism, as data.
#[derive(Debug, Clone, Copy)]
enum Binding<'a> {
    /// A signed block, for this request's URL.
    SignedBlock { resource: &'a str },
    /// One of the pre-issued tagged sessions (the payer broadcast its own send) of a pool:
    /// the route's, for its scope (sessions are issued before any request, so they cannot know
    /// its URL), or a pass's, for the pass's scope.
    TaggedSession(&'a TaggedTerms),
    /// One of the route's passes, by a signed block, for the pass's scope.
    Pass(&'a PassOffer),
    // Later mechanisms (payer-signed proofs) add a variant and its arm in `offer`.
}

impl<'a> Binding<'a> {
    /// The binding a payment on this route claims, and the pass it buys: a client-broadcast
    /// payload on a tagged route presents a session; anything else a signed-block challenge.
    /// An offer that echoes `extra.pass` presents that pass of the route (a pass the route
    /// does not offer, or does not sell by tagged session, is not ours).
    fn of(
        price: &'a Price,
        resource: &'a str,
        payment: &PaymentEcho,
    ) -> Result<(Binding<'a>, Option<&'a PassOffer>), ErrorReason> {
        let tagged = payment.mechanism() == Mechanism::TaggedSession;
        if let Some(extra) = payment.accepted().and_then(|a| a.extra.get(EXTRA_PASS)) {
            let name = extra.get("name").and_then(serde_json::Value::as_str);
            let offer = price
                .passes
                .as_ref()
                .zip(name)
                .and_then(|(p, n)| p.offer(n))
                .ok_or(ErrorReason::InvalidChallenge)?;
            let binding = match &offer.tagged {
                Some(t) if tagged => Binding::TaggedSession(t),
                _ if tagged => return Err(ErrorReason::InvalidChallenge),
                _ => Binding::Pass(offer),
            };
            return Ok((binding, Some(offer)));
        }
        let binding = match &price.tagged {
            Some(t) if tagged => Binding::TaggedSession(t),
            _ => Binding::SignedBlock { resource },
        };
        Ok((binding, None))
    }

    /// Our offer as the payment presents it, or why it cannot be ours.
    fn offer(
        &self,
        network: &'a str,
        price: &'a Price,
        payment: &PaymentEcho,
        accepted: &PaymentRequirements,
    ) -> Result<Offer<'a>, ErrorReason> {
        match *self {
            Binding::SignedBlock { resource } => {
                if payment.resource().is_some_and(|r| r.url != resource) {
                    return Err(ErrorReason::ResourceMismatch);
                }
                Ok(crate::challenge::signed_block(network, price, resource))
            }
            Binding::Pass(pass) => Ok(crate::challenge::pass_offer(network, price, pass)),
            Binding::TaggedSession(t) => {
                let key = PublicKey::from_address(&accepted.pay_to)
                    .map_err(|_| ErrorReason::InvalidChallenge)?;
                let payee = t
                    .pool
                    .iter()
                    .find(|p| p.key == key)
                    .ok_or(ErrorReason::InvalidChallenge)?;
                let amount = parse_raw(&accepted.amount)
                    .ok()
                    .filter(|a| *a > t.amount_raw)
                    .ok_or(ErrorReason::InvalidChallenge)?;
                Ok(Offer {
                    network,
                    pay_to: payee,
                    amount,
                    max_timeout_seconds: price.max_timeout_secs,
                    resource: &t.scope,
                    mechanism: Mechanism::TaggedSession,
                })
            }
        }
    }
}

/// A presented offer we issued: what to forward to the sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct Presented {
    /// Our terms plus the echoed stamp.
    pub requirements: PaymentRequirements,
    /// What the sidecar binds the payment to: the URL, a tagged route's scope, or a pass's.
    pub resource: String,
    /// The pass the payment buys, if it presents a pass offer.
    pub pass: Option<PassTerms>,
}

/// Checks the offer `payment` presents on this route and URL. `Err` is the reason for a fresh
/// 402.
pub fn check(
    cfg: &Config,
    price: &Price,
    resource: &str,
    payment: &PaymentEcho,
    ring: &KeyRing,
    now: u64,
) -> Result<Presented, ErrorReason> {
    let (binding, pass) = Binding::of(price, resource, payment)?;
    let accepted = echoed_offer(payment)?;
    same_scheme_and_network(cfg, payment)?;
    let offer = binding.offer(&cfg.network, price, payment, accepted)?;
    let (stamp, tag) =
        challenge::read_extra(&accepted.extra).map_err(|_| ErrorReason::InvalidChallenge)?;
    // An authentic challenge that expired may still be finished by the sidecar (a payment made
    // in time) or be reported as late: let it decide.
    authenticate(ring, &offer.terms(), &stamp, &tag, now)?;
    Ok(Presented {
        requirements: offer.requirements(stamp_extra(&stamp, &tag)),
        resource: offer.resource.to_owned(),
        pass: pass.map(|p| p.terms.clone()),
    })
}

/// The offer the payment echoes: v1 payloads echo none, so they cannot carry our binding.
fn echoed_offer(payment: &PaymentEcho) -> Result<&PaymentRequirements, ErrorReason> {
    payment
        .accepted()
        .ok_or(ErrorReason::InvalidPaymentRequirements)
}

fn same_scheme_and_network(cfg: &Config, payment: &PaymentEcho) -> Result<(), ErrorReason> {
    if payment.scheme() != SCHEME_EXACT {
        return Err(ErrorReason::InvalidScheme);
    }
    if payment.network() != cfg.network {
        return Err(ErrorReason::InvalidNetwork);
    }
    Ok(())
}

/// Whether a presented stamp is ours for `terms`. A fresh one must verify under the current or
/// the previous key. An **expired** one that verifies under any key we hold (retired keys
/// included) is authentic too: its payment may have confirmed after the challenge expired,
/// and only the sidecar can admit it (within its redemption window) or record it as owed, so
/// it is forwarded. A retired key never vouches for a fresh challenge; forged or mutated stamps
/// and keys we no longer hold get a local 402.
fn authenticate(
    ring: &KeyRing,
    terms: &ChallengeTerms<'_>,
    stamp: &ChallengeStamp,
    tag: &[u8; 32],
    now: u64,
) -> Result<(), ErrorReason> {
    if let Some(key) = ring.for_id(stamp.key_id) {
        return match challenge::verify(&key.key, terms, stamp, tag, now) {
            Ok(()) | Err(ChallengeError::Expired) => Ok(()),
            Err(_) => Err(ErrorReason::InvalidChallenge),
        };
    }
    if let Some(key) = ring.retired(stamp.key_id) {
        return match challenge::verify(&key.key, terms, stamp, tag, now) {
            Err(ChallengeError::Expired) => Ok(()),
            Ok(()) | Err(_) => Err(ErrorReason::InvalidChallenge),
        };
    }
    if stamp.key_id < ring.current.key_id {
        // From a rotation older than any key we hold: we cannot tell it from a forgery.
        Err(ErrorReason::ChallengeExpired)
    } else {
        Err(ErrorReason::InvalidChallenge)
    }
}

/// The four stamp fields in canonical form (lower-case hex), as forwarded to the sidecar.
fn stamp_extra(stamp: &ChallengeStamp, tag: &[u8; 32]) -> JsonObject {
    let mut extra = JsonObject::new();
    extra.insert(
        challenge::EXTRA_VALID_BEFORE.into(),
        stamp.valid_before.into(),
    );
    extra.insert(
        challenge::EXTRA_NONCE.into(),
        hex::encode_lower(&stamp.nonce).into(),
    );
    extra.insert(challenge::EXTRA_KEY_ID.into(), stamp.key_id.into());
    extra.insert(challenge::EXTRA_MAC.into(), hex::encode_lower(tag).into());
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Session;
    use crate::tests_support::{paid, tagged_config, POOL_B};
    use serde_json::{json, Value};

    /// A route session offer as the sidecar would MAC it, and a payment presenting it.
    fn presented_payment(
        cfg: &Config,
        pay_to: &str,
        amount: u128,
        mac_amount: u128,
    ) -> PaymentEcho {
        session_payment(cfg, pay_to, amount, mac_amount, "nanogate-route:t", None)
    }

    /// A session the sidecar MAC'd for `scope`, offered (as the filter renders it) for the
    /// route or for `pass`, and a payment presenting it.
    fn session_payment(
        cfg: &Config,
        pay_to: &str,
        amount: u128,
        mac_amount: u128,
        scope: &str,
        pass: Option<&PassOffer>,
    ) -> PaymentEcho {
        let ring = crate::tests_support::ring(7, 10_000);
        let key = PublicKey::from_address(pay_to).expect("address");
        let stamp = ChallengeStamp {
            valid_before: 500,
            nonce: [3; 16],
            key_id: 7,
        };
        let terms = ChallengeTerms {
            network: "nano:devnet",
            scheme: nanogate_protocol::contract::SCHEME_EXACT,
            asset: nanogate_protocol::contract::ASSET_XNO,
            pay_to: key,
            amount: mac_amount,
            resource: scope,
            mechanism: Mechanism::TaggedSession,
        };
        let s = Session {
            id: hex::encode_lower(&[3; 16]),
            pay_to: pay_to.into(),
            amount,
            valid_before: 500,
            key_id: 7,
            mac: hex::encode_lower(&challenge::mac(&ring.current.key, &terms, &stamp)),
        };
        let offer: Value = serde_json::from_str(&crate::challenge::session_offer_json(
            &cfg.network,
            paid(cfg, 0),
            &s,
            pass,
        ))
        .expect("offer");
        let v = json!({"x402Version": 2, "accepted": offer,
                       "payload": {"proof": "AB".repeat(32), "sessionId": s.id}});
        let header = nanogate_protocol::x402::encode_header(&v);
        nanogate_protocol::x402::decode_payment_echo(&header, usize::MAX).expect("decodes")
    }

    #[test]
    fn tagged_retries_are_checked_locally_against_the_session_mac() {
        let cfg = tagged_config();
        let ring = crate::tests_support::ring(7, 10_000);
        let p = paid(&cfg, 0);
        let url = "http://h/t/x";
        let ok = presented_payment(&cfg, POOL_B, 1042, 1042);
        let found = check(&cfg, p, url, &ok, &ring, 100).expect("authentic");
        assert_eq!(found.resource, "nanogate-route:t");
        assert_eq!(found.requirements.amount, "1042");
        assert_eq!(found.requirements.pay_to, POOL_B);
        assert_eq!(
            found.requirements.extra.get("nonce"),
            Some(&json!(hex::encode_lower(&[3; 16])))
        );
        // An authentic but expired session still goes to the sidecar (late / grace).
        assert!(check(&cfg, p, url, &ok, &ring, 600).is_ok());
        // A mutated amount, or a payee outside the pool, is refused without the sidecar.
        let forged = presented_payment(&cfg, POOL_B, 1043, 1042);
        assert_eq!(
            check(&cfg, p, url, &forged, &ring, 100),
            Err(ErrorReason::InvalidChallenge)
        );
        let outsider = "nano_1111111111111111111111111111111111111111111111111111hifc8npp";
        let foreign = presented_payment(&cfg, outsider, 1042, 1042);
        assert_eq!(
            check(&cfg, p, url, &foreign, &ring, 100),
            Err(ErrorReason::InvalidChallenge)
        );
        // A route without `tagged` leaves it to the signed-block check.
        assert!(matches!(
            Binding::of(paid(&cfg, 1), url, &ok),
            Ok((Binding::SignedBlock { .. }, None))
        ));
        assert!(matches!(
            Binding::of(p, url, &ok),
            Ok((Binding::TaggedSession(_), None))
        ));
    }

    /// Scenario (#16): a tagged route sells its passes by tagged session too, each from a pool
    /// of its own bound to the pass scope. A payment presenting one is checked like any other
    /// offer, by the filter alone; any mutation of which pass, of its amount or of its payee,
    /// and any swap between a route session and a pass session, is refused before the sidecar.
    #[test]
    fn tagged_pass_offers_are_bound_to_their_pass_scope() {
        let route = json!({"name": "t", "path": {"prefix": "/t/"}, "priceRaw": "1000",
            "tagged": true, "payToPool": [crate::tests_support::POOL_A, POOL_B],
            "passes": [{"name": "hour", "priceRaw": "5000", "seconds": 3600},
                       {"name": "ten", "priceRaw": "9000", "requests": 10}]});
        let cfg = crate::tests_support::config_with(route.clone());
        let ring = crate::tests_support::ring(7, 10_000);
        let p = paid(&cfg, 0);
        let passes = p.passes.as_ref().expect("passes");
        let (hour, ten) = (&passes.offers[0], &passes.offers[1]);
        let url = "http://h/t/x";
        let pay = |amount, mac_amount, scope: &str, pass| {
            session_payment(&cfg, POOL_B, amount, mac_amount, scope, pass)
        };
        let ok = pay(5042, 5042, &hour.scope, Some(hour));
        let found = check(&cfg, p, url, &ok, &ring, 100).expect("authentic");
        assert_eq!(found.resource, hour.scope);
        assert_eq!(found.pass.as_ref(), Some(&hour.terms));
        assert_eq!(found.requirements.amount, "5042");
        assert_eq!(found.requirements.pay_to, POOL_B);
        let refused = [
            // Another pass named, the MAC binds this one's scope.
            pay(5042, 5042, &hour.scope, Some(ten)),
            // The amount changed.
            pay(5043, 5042, &hour.scope, Some(hour)),
            // A route session (its scope, its price) presented as a pass.
            pay(1042, 1042, "nanogate-route:t", Some(hour)),
            // A pass session presented as the single request.
            pay(5042, 5042, &hour.scope, None),
            // A session for the pass's scope at less than the pass price.
            pay(1042, 1042, &hour.scope, Some(hour)),
        ];
        for (i, bad) in refused.iter().enumerate() {
            assert_eq!(
                check(&cfg, p, url, bad, &ring, 100),
                Err(ErrorReason::InvalidChallenge),
                "case {i}"
            );
        }
        let outsider = "nano_1111111111111111111111111111111111111111111111111111hifc8npp";
        let foreign = session_payment(&cfg, outsider, 5042, 5042, &hour.scope, Some(hour));
        assert_eq!(
            check(&cfg, p, url, &foreign, &ring, 100),
            Err(ErrorReason::InvalidChallenge)
        );
        // A route that sells its passes by signed block only takes no tagged pass payment.
        let mut plain = route;
        plain["tagged"] = json!(false);
        plain.as_object_mut().map(|o| o.remove("payToPool"));
        let plain = crate::tests_support::config_with(plain);
        assert_eq!(
            check(&plain, paid(&plain, 0), url, &ok, &ring, 100),
            Err(ErrorReason::InvalidChallenge)
        );
    }
}
