//! Issuing 402 challenges: a `contract::Offer` is what a payer is asked to pay and what the
//! challenge's MAC binds, so an offer can later be checked without a sidecar call
//! ([`crate::presented`]). The terms always come from our route configuration and
//! the request URL (or, for a tagged session, from the sidecar that issued it).

use crate::config::{Config, PassOffer, Price};
use crate::jsontext::{push_json_str, push_num, push_offer_terms};
use crate::keys::IdKey;
use crate::pool::Session;
use nanogate_protocol::challenge::{ChallengeStamp, Mechanism};
use nanogate_protocol::contract::facilitator::work;
use nanogate_protocol::contract::pass::{PassTerms, EXTRA_PASS};
use nanogate_protocol::contract::Offer;
use nanogate_protocol::hex;
use nanogate_protocol::x402::{ErrorReason, PaymentRequired, PaymentRequirements, ResourceInfo};

/// The resource URL a challenge is bound to: `scheme://authority/path`, lower-cased scheme and
/// authority, with the canonical path (no query string or fragment; see
/// [`crate::routes::canonical_path`]).
pub fn resource_url(scheme: &str, authority: &str, path: &str) -> String {
    resource_url_of_canonical(scheme, authority, &crate::routes::canonical_path(path))
}

/// [`resource_url`] for a path already in canonical form.
pub fn resource_url_of_canonical(scheme: &str, authority: &str, path: &str) -> String {
    let scheme = if scheme.is_empty() { "http" } else { scheme };
    // Pushed, not `format!`ted: this runs on every 402, and the formatting machinery cost as
    // much as the rest of the URL's work.
    let mut url = String::with_capacity(scheme.len() + 3 + authority.len() + path.len());
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(authority);
    url.make_ascii_lowercase();
    url.push_str(path);
    url
}

/// The signed-block offer of a paid route for `resource`.
pub fn signed_block<'a>(network: &'a str, price: &'a Price, resource: &'a str) -> Offer<'a> {
    Offer {
        network,
        pay_to: &price.pay_to,
        amount: price.amount_raw,
        max_timeout_seconds: price.max_timeout_secs,
        resource,
        mechanism: Mechanism::SignedBlock,
    }
}

/// A fresh challenge for `resource`, signed with `key`, valid for the route's
/// `maxTimeoutSeconds` from `now` (the serde reference of [`render_challenge`]).
pub fn payment_required(
    cfg: &Config,
    price: &Price,
    resource: &str,
    key: &IdKey,
    now: u64,
    nonce: [u8; 16],
    reason: Option<ErrorReason>,
) -> PaymentRequired {
    let offer = signed_block(&cfg.network, price, resource);
    let stamp = offer.stamp(now, nonce, key.key_id);
    let mut accepted = offer.issue(&key.key, &stamp);
    if price.work.attached {
        accepted
            .extra
            .insert(work::EXTRA_WORK.into(), work::OPTIONAL.into());
    }
    if let Some(t) = price.work.threshold {
        accepted.extra.insert(
            work::EXTRA_WORK_THRESHOLD.into(),
            work::threshold_hex(t).into(),
        );
    }
    let mut pr = PaymentRequired::new(
        None,
        ResourceInfo {
            url: resource.to_owned(),
            description: price.description.clone(),
            mime_type: price.mime_type.clone(),
        },
        vec![accepted],
    );
    pr.accepts
        .extend(pass_requirements(&cfg.network, price, key, now, nonce));
    pr.error = reason.map(|r| r.as_str().to_owned());
    pr.extensions = price.discovery.as_ref().map(|d| d.extensions.clone());
    pr
}

/// The signed-block offer of one of the route's passes: the pass price, bound to the pass's
/// scope (docs/passes.md).
pub fn pass_offer<'a>(network: &'a str, price: &'a Price, pass: &'a PassOffer) -> Offer<'a> {
    Offer {
        network,
        pay_to: &price.pay_to,
        amount: pass.amount_raw,
        max_timeout_seconds: price.max_timeout_secs,
        resource: &pass.scope,
        mechanism: Mechanism::SignedBlock,
    }
}

/// The stamp of the route's `i`-th pass offer: the request's nonce with its last byte changed
/// by the offer's position, so each offer has its own.
fn pass_stamp(
    offer: &Offer<'_>,
    i: usize,
    key: &IdKey,
    now: u64,
    nonce: [u8; 16],
) -> ChallengeStamp {
    let mut n = nonce;
    n[15] ^= u8::try_from(i + 1).unwrap_or(u8::MAX);
    offer.stamp(now, n, key.key_id)
}

/// The `accepts[]` entries of the route's passes (the serde reference of
/// [`push_pass_offers`]), each with its own nonce and `extra.pass`.
pub fn pass_requirements(
    network: &str,
    price: &Price,
    key: &IdKey,
    now: u64,
    nonce: [u8; 16],
) -> Vec<PaymentRequirements> {
    let Some(passes) = &price.passes else {
        return Vec::new();
    };
    passes
        .offers
        .iter()
        .enumerate()
        .map(|(i, pass)| {
            let offer = pass_offer(network, price, pass);
            let stamp = pass_stamp(&offer, i, key, now, nonce);
            let mut req = offer.issue(&key.key, &stamp);
            req.extra.insert(
                EXTRA_PASS.into(),
                serde_json::to_value(&pass.terms).unwrap_or_default(),
            );
            req
        })
        .collect()
}

/// Appends the route's pass offers to `out` (each preceded by a comma) as JSON text: the same
/// bytes as serializing [`pass_requirements`] (tested), without serde on the 402 path.
fn push_pass_offers(
    out: &mut String,
    network: &str,
    price: &Price,
    key: &IdKey,
    now: u64,
    nonce: [u8; 16],
) {
    let Some(passes) = &price.passes else {
        return;
    };
    for (i, pass) in passes.offers.iter().enumerate() {
        let offer = pass_offer(network, price, pass);
        let stamp = pass_stamp(&offer, i, key, now, nonce);
        let tag = nanogate_protocol::challenge::mac(&key.key, &offer.terms(), &stamp);
        out.push_str(",{");
        push_offer_terms(
            out,
            network,
            pass.amount_raw,
            &price.pay_to.address,
            price.max_timeout_secs,
        );
        // Keys in serde_json's (sorted) order, in `extra` and in `pass` (a `Value` there).
        out.push_str(",\"extra\":{\"keyId\":");
        push_num(out, u128::from(stamp.key_id));
        out.push_str(",\"mac\":\"");
        hex::push_lower(out, &tag);
        out.push_str("\",\"nonce\":\"");
        hex::push_lower(out, &stamp.nonce);
        out.push_str("\",\"pass\":");
        push_pass_terms(out, &pass.terms);
        out.push_str(",\"validBefore\":");
        push_num(out, u128::from(stamp.valid_before));
        out.push_str("}}");
    }
}

/// `extra.pass` as JSON text: keys in serde_json's (sorted) order, as `PassTerms` serializes
/// through a `Value` (tested).
fn push_pass_terms(out: &mut String, terms: &PassTerms) {
    out.push_str("{\"group\":");
    push_json_str(out, &terms.group);
    out.push_str(",\"name\":");
    push_json_str(out, &terms.name);
    if let Some(r) = terms.requests {
        out.push_str(",\"requests\":");
        push_num(out, u128::from(r));
    }
    out.push_str(",\"seconds\":");
    push_num(out, u128::from(terms.seconds));
    out.push('}');
}

/// A fresh challenge for `resource` signed with `key` at `now`, as JSON bytes, from the route's
/// pre-rendered template: the same bytes as serializing [`payment_required`].
pub fn render_challenge(
    cfg: &Config,
    price: &Price,
    resource: &str,
    key: &IdKey,
    now: u64,
    nonce: [u8; 16],
    error: Option<&str>,
) -> Vec<u8> {
    let offer = signed_block(&cfg.network, price, resource);
    let stamp = offer.stamp(now, nonce, key.key_id);
    let tag = price.template.mac(&key.key, &offer.terms(), &stamp);
    let mut body = price.template.render(resource, &stamp, &tag, error);
    // Pass offers follow the single request's (the template ends with `]}`: the accepts
    // array, then the object).
    if price.passes.is_some() && body.ends_with(b"]}") {
        let mut passes = String::with_capacity(512);
        push_pass_offers(&mut passes, &cfg.network, price, key, now, nonce);
        body.truncate(body.len() - 2);
        body.extend_from_slice(passes.as_bytes());
        body.extend_from_slice(b"]}");
    }
    body
}

/// The `accepts[]` entry offering a pre-issued tagged `session` for `price`, or for `pass`
/// of its route, as JSON text. Its MAC came from the sidecar (`Mechanism::TaggedSession`,
/// resource = the route's scope, or the pass's); `extra` also says the mechanism, how the
/// amount splits into price and tag, and for a pass what it grants (`extra.pass`). Rendered by
/// hand like the rest of the 402 (keys in serde_json's sorted order, tested); the session's
/// id, MAC (hex) and payee (address characters) were checked when the pool took it.
pub fn session_offer_json(
    network: &str,
    price: &Price,
    session: &Session,
    pass: Option<&PassOffer>,
) -> String {
    let base = pass.map_or(price.amount_raw, |p| p.amount_raw);
    let mut out = String::with_capacity(480);
    out.push('{');
    push_offer_terms(
        &mut out,
        network,
        session.amount,
        &session.pay_to,
        price.max_timeout_secs,
    );
    out.push_str(",\"extra\":{\"keyId\":");
    push_num(&mut out, u128::from(session.key_id));
    out.push_str(",\"mac\":\"");
    out.push_str(&session.mac);
    out.push_str("\",\"mechanism\":\"tagged\",\"nanoSession\":{\"id\":\"");
    out.push_str(&session.id);
    out.push_str("\",\"resourceAmountRaw\":\"");
    push_num(&mut out, base);
    out.push_str("\",\"tagAmountRaw\":\"");
    push_num(&mut out, session.amount.saturating_sub(base));
    out.push_str("\"},\"nonce\":\"");
    out.push_str(&session.id);
    out.push('"');
    if let Some(p) = pass {
        out.push_str(",\"pass\":");
        push_pass_terms(&mut out, &p.terms);
    }
    out.push_str(",\"validBefore\":");
    push_num(&mut out, u128::from(session.valid_before));
    out.push_str("}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteKind;
    use nanogate_protocol::challenge::ChallengeKey;
    use serde_json::json;

    proptest::proptest! {
        /// The template renders byte for byte what serde writes for the same challenge.
        #[test]
        fn template_matches_serde(
            description in proptest::option::of(".{0,20}"),
            mime in proptest::option::of("[a-z/+\"\\\\]{0,12}"),
            network in "nano:[a-zA-Z0-9_-]{1,12}",
            price in 1u128..u128::MAX,
            timeout in 1u64..3600,
            resource in ".{0,60}",
            error in proptest::option::of("[a-z_\"]{1,20}"),
            key_id in proptest::prelude::any::<u64>(),
            now in proptest::prelude::any::<u64>(),
            nonce in proptest::prelude::any::<[u8; 16]>(),
            key in proptest::prelude::any::<[u8; 32]>(),
            attach_work in proptest::prelude::any::<bool>(),
            threshold in proptest::option::of(proptest::prelude::any::<u64>()),
            example in proptest::option::of(".{0,20}"),
        ) {
            let mut route = json!({"path": {"prefix": "/p/"}, "priceRaw": price.to_string(), "maxTimeoutSeconds": timeout});
            if let Some(d) = &description { route["description"] = json!(d); }
            if let Some(e) = &example {
                route["discovery"] = json!({
                    "input": {"method": "get", "queryParams": {"q": e}},
                    "output": {"type": "json", "example": {"z": e, "a": [1, e]}},
                });
            }
            if let Some(m) = &mime { route["mimeType"] = json!(m); }
            if attach_work { route["attachWork"] = json!(true); }
            let mut cfg = json!({
                "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
                "network": network,
                "payTo": "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc",
                "routes": [route]
            });
            if let Some(t) = threshold { cfg["workThreshold"] = json!(format!("{t:016x}")); }
            let cfg = crate::config::parse(cfg.to_string().as_bytes()).unwrap();
            let RouteKind::Paid(p) = &cfg.routes[0].kind else { panic!("paid") };
            let key = IdKey { key_id, key: ChallengeKey(key) };
            let reference = {
                let mut pr = payment_required(&cfg, p, &resource, &key, now, nonce, None);
                pr.error = error.clone();
                serde_json::to_vec(&pr).unwrap()
            };
            let rendered = render_challenge(&cfg, p, &resource, &key, now, nonce, error.as_deref());
            proptest::prop_assert_eq!(String::from_utf8(rendered).unwrap(), String::from_utf8(reference).unwrap());
        }
    }

    /// Pass offers are rendered after the single request's, as serde writes them, each with
    /// its own nonce and a MAC over its scope.
    #[test]
    fn pass_offers_render_like_serde_and_bind_their_scope() {
        let cfg = crate::config::parse(
            json!({
                "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
                "network": "nano:devnet",
                "payTo": "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc",
                "routes": [{"path": {"prefix": "/p/"}, "priceRaw": "10",
                            "passes": [{"name": "hour", "priceRaw": "100", "seconds": 3600},
                                       {"name": "ten", "priceRaw": "50", "requests": 10}],
                            "passGroup": "api"}]
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let RouteKind::Paid(p) = &cfg.routes[0].kind else {
            panic!("paid")
        };
        let key = IdKey {
            key_id: 5,
            key: ChallengeKey([4; 32]),
        };
        let pr = payment_required(&cfg, p, "http://h/p/x", &key, 100, [1; 16], None);
        let rendered = render_challenge(&cfg, p, "http://h/p/x", &key, 100, [1; 16], None);
        assert_eq!(
            String::from_utf8(rendered).unwrap(),
            serde_json::to_string(&pr).unwrap()
        );
        assert_eq!(pr.accepts.len(), 3);
        let hour = &pr.accepts[1];
        assert_eq!(hour.amount, "100");
        assert_eq!(
            hour.extra["pass"],
            json!({"name": "hour", "group": "api", "seconds": 3600})
        );
        assert_eq!(
            pr.accepts[2].extra["pass"],
            json!({"name": "ten", "group": "api", "seconds": 2_592_000, "requests": 10})
        );
        let (stamp, tag) = nanogate_protocol::challenge::read_extra(&hour.extra).unwrap();
        let passes = p.passes.as_ref().unwrap();
        let terms = pass_offer(&cfg.network, p, &passes.offers[0]).terms();
        assert_eq!(terms.resource, "nanogate-pass:api:hour:3600:0");
        assert!(nanogate_protocol::challenge::verify(&key.key, &terms, &stamp, &tag, 101).is_ok());
        assert_ne!(pr.accepts[1].extra["nonce"], pr.accepts[2].extra["nonce"]);
    }

    /// The route's cached MAC prefix follows key rotation (and a key replaced under the same
    /// id, as after a sidecar restart with a new master secret).
    #[test]
    fn rendered_challenges_follow_the_key() {
        let cfg = crate::tests_support::config();
        let p = crate::tests_support::paid(&cfg, 1);
        let keys = [
            IdKey {
                key_id: 1,
                key: ChallengeKey([1; 32]),
            },
            IdKey {
                key_id: 2,
                key: ChallengeKey([2; 32]),
            },
            IdKey {
                key_id: 2,
                key: ChallengeKey([3; 32]),
            },
            IdKey {
                key_id: 1,
                key: ChallengeKey([1; 32]),
            },
        ];
        for (i, key) in keys.iter().enumerate() {
            let resource = format!("http://h/paid/{i}");
            let want = serde_json::to_vec(&payment_required(
                &cfg,
                p,
                &resource,
                key,
                100,
                [i as u8; 16],
                None,
            ))
            .unwrap();
            let got = render_challenge(&cfg, p, &resource, key, 100, [i as u8; 16], None);
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap(),
                "key {i}"
            );
        }
    }

    /// The tagged offer is exactly what it was when it was rendered by hand (clients and the
    /// paywall read it; its key order is serde_json's sorted map order).
    #[test]
    fn the_tagged_offer_keeps_its_wire_form() {
        let cfg = crate::tests_support::tagged_config();
        let p = crate::tests_support::paid(&cfg, 0);
        let s = Session {
            id: "00112233445566778899aabbccddeeff".into(),
            pay_to: crate::tests_support::POOL_B.into(),
            amount: 1042,
            valid_before: 500,
            key_id: 7,
            mac: "ab".repeat(32),
        };
        let want = format!(
            "{{\"scheme\":\"exact\",\"network\":\"nano:devnet\",\"amount\":\"1042\",\"asset\":\"XNO\",\
             \"payTo\":\"{}\",\"maxTimeoutSeconds\":60,\"extra\":{{\"keyId\":7,\"mac\":\"{}\",\
             \"mechanism\":\"tagged\",\"nanoSession\":{{\"id\":\"{}\",\"resourceAmountRaw\":\"1000\",\
             \"tagAmountRaw\":\"42\"}},\"nonce\":\"{}\",\"validBefore\":500}}}}",
            s.pay_to, s.mac, s.id, s.id
        );
        assert_eq!(session_offer_json(&cfg.network, p, &s, None), want);
        assert_eq!(session_offer_serde(&cfg.network, p, &s, None), want);
        // A pass's session: its price, and `extra.pass` as `PassTerms` serializes.
        let cfg = crate::tests_support::config_with(serde_json::json!({"name": "t",
            "path": {"prefix": "/t/"}, "priceRaw": "1000", "tagged": true,
            "passes": [{"name": "hour", "priceRaw": "5000", "seconds": 3600},
                       {"name": "ten", "priceRaw": "9000", "requests": 10}]}));
        let p = crate::tests_support::paid(&cfg, 0);
        for pass in &p.passes.as_ref().unwrap().offers {
            let s = Session {
                amount: pass.amount_raw + 42,
                ..s.clone()
            };
            let got = session_offer_json(&cfg.network, p, &s, Some(pass));
            assert_eq!(got, session_offer_serde(&cfg.network, p, &s, Some(pass)));
            let v: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert_eq!(v["extra"]["nanoSession"]["tagAmountRaw"], "42");
            assert_eq!(
                v["extra"]["pass"],
                serde_json::to_value(&pass.terms).unwrap()
            );
        }
    }

    /// The serde reference of [`session_offer_json`].
    fn session_offer_serde(
        network: &str,
        price: &Price,
        session: &Session,
        pass: Option<&PassOffer>,
    ) -> String {
        use crate::jsontext::num;
        use nanogate_protocol::challenge::{
            EXTRA_KEY_ID, EXTRA_MAC, EXTRA_MECHANISM, EXTRA_NANO_SESSION, EXTRA_NONCE,
            EXTRA_VALID_BEFORE,
        };
        use nanogate_protocol::contract::{NanoSession, ASSET_XNO, SCHEME_EXACT};
        use nanogate_protocol::x402::JsonObject;
        let base = pass.map_or(price.amount_raw, |p| p.amount_raw);
        let nano_session = NanoSession {
            id: session.id.clone(),
            resource_amount_raw: base,
            tag_amount_raw: session.amount - base,
        };
        let mut extra = JsonObject::new();
        extra.insert(EXTRA_KEY_ID.into(), session.key_id.into());
        extra.insert(EXTRA_MAC.into(), session.mac.clone().into());
        extra.insert(
            EXTRA_MECHANISM.into(),
            Mechanism::TaggedSession.as_str().into(),
        );
        extra.insert(
            EXTRA_NANO_SESSION.into(),
            serde_json::to_value(nano_session).unwrap(),
        );
        extra.insert(EXTRA_NONCE.into(), session.id.clone().into());
        if let Some(p) = pass {
            extra.insert(EXTRA_PASS.into(), serde_json::to_value(&p.terms).unwrap());
        }
        extra.insert(EXTRA_VALID_BEFORE.into(), session.valid_before.into());
        let offer = PaymentRequirements {
            scheme: SCHEME_EXACT.to_owned(),
            network: network.to_owned(),
            amount: num(session.amount),
            asset: ASSET_XNO.to_owned(),
            pay_to: session.pay_to.clone(),
            max_timeout_seconds: price.max_timeout_secs,
            extra,
        };
        serde_json::to_string(&offer).unwrap()
    }
}
