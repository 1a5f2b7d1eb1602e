//! Issuing 402 challenges with `nanogate_protocol::challenge`: an [`Offer`] is what a payer is
//! asked to pay and what the challenge's MAC binds, so an offer can later be checked without a
//! sidecar call ([`crate::presented`]). The terms always come from our route configuration and
//! the request URL (or, for a tagged session, from the sidecar that issued it).

use crate::config::{Config, Payee, Price};
use crate::jsontext::{num, push_num};
use crate::keys::IdKey;
use crate::pool::Session;
use crate::template::{ASSET, SCHEME};
use nanogate_protocol::challenge::{self, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::x402::{
    ErrorReason, JsonObject, PaymentRequired, PaymentRequirements, ResourceInfo,
};

/// The resource URL a challenge is bound to: `scheme://authority/path`, lower-cased scheme and
/// authority, with the canonical path (no query string or fragment; see
/// [`crate::routes::canonical_path`]).
pub fn resource_url(scheme: &str, authority: &str, path: &str) -> String {
    let scheme = if scheme.is_empty() { "http" } else { scheme };
    format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase(),
        crate::routes::canonical_path(path)
    )
}

/// One offer: `amount` raw to `payee`, bound to `resource` (a URL, or a tagged route's scope)
/// under `mechanism`.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    pub mechanism: Mechanism,
    pub payee: &'a Payee,
    pub amount: u128,
    pub resource: &'a str,
    pub max_timeout_secs: u64,
}

impl<'a> Offer<'a> {
    /// The signed-block offer of a paid route for `resource`.
    pub fn signed_block(price: &'a Price, resource: &'a str) -> Offer<'a> {
        Offer {
            mechanism: Mechanism::SignedBlock,
            payee: &price.pay_to,
            amount: price.amount_raw,
            resource,
            max_timeout_secs: price.max_timeout_secs,
        }
    }

    /// What the challenge MAC binds.
    pub fn terms(&self, network: &'a str) -> ChallengeTerms<'a> {
        ChallengeTerms {
            network,
            scheme: SCHEME,
            asset: ASSET,
            pay_to: self.payee.key,
            amount: self.amount,
            resource: self.resource,
            mechanism: self.mechanism,
        }
    }

    /// The `accepts[]` entry, with the given `extra`.
    pub fn requirements(&self, network: &str, extra: JsonObject) -> PaymentRequirements {
        PaymentRequirements {
            scheme: SCHEME.to_owned(),
            network: network.to_owned(),
            amount: num(self.amount),
            asset: ASSET.to_owned(),
            pay_to: self.payee.address.clone(),
            max_timeout_seconds: self.max_timeout_secs,
            extra,
        }
    }
}

fn stamp(price: &Price, key: &IdKey, now: u64, nonce: [u8; 16]) -> ChallengeStamp {
    ChallengeStamp {
        valid_before: now.saturating_add(price.max_timeout_secs),
        nonce,
        key_id: key.key_id,
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
    let offer = Offer::signed_block(price, resource);
    let stamp = stamp(price, key, now, nonce);
    let extra = challenge::extra(&key.key, &offer.terms(&cfg.network), &stamp);
    let mut pr = PaymentRequired::new(
        None,
        ResourceInfo {
            url: resource.to_owned(),
            description: price.description.clone(),
            mime_type: price.mime_type.clone(),
        },
        vec![offer.requirements(&cfg.network, extra)],
    );
    pr.error = reason.map(|r| r.as_str().to_owned());
    pr
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
    let stamp = stamp(price, key, now, nonce);
    let terms = Offer::signed_block(price, resource).terms(&cfg.network);
    let tag = challenge::mac(&key.key, &terms, &stamp);
    price.template.render(resource, &stamp, &tag, error)
}

/// The `accepts[]` entry offering a pre-issued tagged `session` for `price`, as JSON text
/// (rendered by hand like the signed-block template: every part is a number, hex, a checked
/// address or the validated CAIP-2 network id, so nothing needs escaping).
pub fn session_offer_json(network: &str, price: &Price, session: &Session) -> String {
    let mut o = String::with_capacity(512);
    o.push_str("{\"scheme\":\"");
    o.push_str(SCHEME);
    o.push_str("\",\"network\":\"");
    o.push_str(network);
    o.push_str("\",\"amount\":\"");
    push_num(&mut o, session.amount);
    o.push_str("\",\"asset\":\"");
    o.push_str(ASSET);
    o.push_str("\",\"payTo\":\"");
    o.push_str(&session.pay_to);
    o.push_str("\",\"maxTimeoutSeconds\":");
    push_num(&mut o, u128::from(price.max_timeout_secs));
    o.push_str(",\"extra\":{\"keyId\":");
    push_num(&mut o, u128::from(session.key_id));
    o.push_str(",\"mac\":\"");
    o.push_str(&session.mac);
    o.push_str("\",\"mechanism\":\"tagged\",\"nanoSession\":{\"id\":\"");
    o.push_str(&session.id);
    o.push_str("\",\"resourceAmountRaw\":\"");
    push_num(&mut o, price.amount_raw);
    o.push_str("\",\"tagAmountRaw\":\"");
    push_num(&mut o, session.amount.saturating_sub(price.amount_raw));
    o.push_str("\"},\"nonce\":\"");
    o.push_str(&session.id);
    o.push_str("\",\"validBefore\":");
    push_num(&mut o, u128::from(session.valid_before));
    o.push_str("}}");
    o
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
            network in "[a-z]{3,8}:[a-zA-Z0-9_-]{1,12}",
            price in 1u128..u128::MAX,
            timeout in 1u64..3600,
            resource in ".{0,60}",
            error in proptest::option::of("[a-z_\"]{1,20}"),
            key_id in proptest::prelude::any::<u64>(),
            now in proptest::prelude::any::<u64>(),
            nonce in proptest::prelude::any::<[u8; 16]>(),
            key in proptest::prelude::any::<[u8; 32]>(),
        ) {
            let mut route = json!({"path": {"prefix": "/p/"}, "priceRaw": price.to_string(), "maxTimeoutSeconds": timeout});
            if let Some(d) = &description { route["description"] = json!(d); }
            if let Some(m) = &mime { route["mimeType"] = json!(m); }
            let cfg = json!({
                "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
                "network": network,
                "payTo": "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc",
                "routes": [route]
            });
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
}
