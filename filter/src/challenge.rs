//! Building 402 challenges and checking the challenge a payment echoes, with
//! `nanogate_protocol::challenge` (see `docs/filter-sidecar.md`, "Challenges without a sidecar
//! call"). The terms always come from our route configuration and the request URL; the client's
//! `accepted` contributes only validBefore, nonce, keyId and the MAC.

use crate::config::{Config, Price};
use crate::keys::{IdKey, KeyRing};
use nanogate_protocol::challenge::{
    self, ChallengeError, ChallengeStamp, ChallengeTerms, Mechanism,
};
use nanogate_protocol::hex;
use nanogate_protocol::x402::{
    DecodedPayment, ErrorReason, JsonObject, PaymentRequired, PaymentRequirements, ResourceInfo,
};

pub const SCHEME: &str = "exact";
pub const ASSET: &str = "XNO";
/// The filter issues signed-block challenges; later mechanisms get their own entries.
pub const MECHANISM: Mechanism = Mechanism::SignedBlock;

/// The resource URL a challenge is bound to: `scheme://authority/path`, lower-cased scheme and
/// authority, with the canonical path (no query string or fragment; see
/// [`crate::routes::canonical_path`]).
pub fn resource_url(scheme: &str, authority: &str, path: &str) -> String {
    let scheme = if scheme.is_empty() { "http" } else { scheme };
    let path = crate::routes::canonical_path(path);
    // Pushed, not `format!`ted: this runs on every 402, and the formatting machinery cost as
    // much as the rest of the URL's work.
    let mut url = String::with_capacity(scheme.len() + 3 + authority.len() + path.len());
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(authority);
    url.make_ascii_lowercase();
    url.push_str(&path);
    url
}

fn terms<'a>(cfg: &'a Config, price: &'a Price, resource: &'a str) -> ChallengeTerms<'a> {
    ChallengeTerms {
        network: &cfg.network,
        scheme: SCHEME,
        asset: ASSET,
        pay_to: price.pay_to.key,
        amount: price.amount_raw,
        resource,
        mechanism: MECHANISM,
    }
}

/// The `accepts[]` entry for `price` with the given `extra`.
pub fn requirements(cfg: &Config, price: &Price, extra: JsonObject) -> PaymentRequirements {
    PaymentRequirements {
        scheme: SCHEME.to_owned(),
        network: cfg.network.clone(),
        amount: price.amount_raw.to_string(),
        asset: ASSET.to_owned(),
        pay_to: price.pay_to.address.clone(),
        max_timeout_seconds: price.max_timeout_secs,
        extra,
    }
}

/// A fresh challenge for `resource`, signed with `key`, valid for the route's
/// `maxTimeoutSeconds` from `now`.
pub fn payment_required(
    cfg: &Config,
    price: &Price,
    resource: &str,
    key: &IdKey,
    now: u64,
    nonce: [u8; 16],
    reason: Option<ErrorReason>,
) -> PaymentRequired {
    let stamp = ChallengeStamp {
        valid_before: now.saturating_add(price.max_timeout_secs),
        nonce,
        key_id: key.key_id,
    };
    let extra = challenge::extra(&key.key, &terms(cfg, price, resource), &stamp);
    let mut pr = PaymentRequired::new(
        None,
        ResourceInfo {
            url: resource.to_owned(),
            description: price.description.clone(),
            mime_type: price.mime_type.clone(),
        },
        vec![requirements(cfg, price, extra)],
    );
    pr.error = reason.map(|r| r.as_str().to_owned());
    pr
}

/// Checks the challenge a payment echoes against our own terms for this route and URL.
/// `Ok` carries the stamp's `extra` to forward to the sidecar; `Err` is the reason for a fresh
/// 402.
pub fn check_presented(
    cfg: &Config,
    price: &Price,
    resource: &str,
    payment: &DecodedPayment,
    ring: &KeyRing,
    now: u64,
) -> Result<JsonObject, ErrorReason> {
    // v1 payloads echo no offer, so they cannot carry our challenge binding.
    let accepted = payment
        .accepted()
        .ok_or(ErrorReason::InvalidPaymentRequirements)?;
    if payment.scheme() != SCHEME {
        return Err(ErrorReason::InvalidScheme);
    }
    if payment.network() != cfg.network {
        return Err(ErrorReason::InvalidNetwork);
    }
    if let Some(r) = payment.resource() {
        if r.url != resource {
            return Err(ErrorReason::ResourceMismatch);
        }
    }
    let (stamp, tag) =
        challenge::read_extra(&accepted.extra).map_err(|_| ErrorReason::InvalidChallenge)?;
    authenticate(ring, &terms(cfg, price, resource), &stamp, &tag, now)?;
    Ok(stamp_extra(&stamp, &tag))
}

/// Whether a presented stamp is ours for `terms`. A fresh one must verify under the current or
/// the previous key. An **expired** one that verifies under any key we hold (retired keys
/// included) is authentic too: its payment may have confirmed after the challenge expired,
/// and only the sidecar can admit it (within its redemption window) or record it as owed, so
/// it is forwarded. A retired key never vouches for a fresh challenge; forged or mutated stamps
/// and keys we no longer hold get a local 402.
pub(crate) fn authenticate(
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
pub(crate) fn stamp_extra(stamp: &ChallengeStamp, tag: &[u8; 32]) -> JsonObject {
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

/// A paid route's challenge JSON, pre-rendered around the parts that change per request
/// (error, resource URL, stamp, MAC), so the 402 path does no serde work. Renders exactly the
/// bytes `serde_json::to_vec(&payment_required(..))` would (tested).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChallengeTemplate {
    /// `,"description":…,"mimeType":…}` closing `resource`.
    resource_tail: String,
    /// `,"accepts":[{…,"extra":{"keyId":`
    accepts_head: String,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

impl ChallengeTemplate {
    pub fn new(network: &str, price: &Price) -> ChallengeTemplate {
        let mut resource_tail = String::new();
        if let Some(d) = &price.description {
            resource_tail.push_str(",\"description\":");
            resource_tail.push_str(&json_str(d));
        }
        if let Some(m) = &price.mime_type {
            resource_tail.push_str(",\"mimeType\":");
            resource_tail.push_str(&json_str(m));
        }
        resource_tail.push('}');
        let accepts_head = format!(
            ",\"accepts\":[{{\"scheme\":{},\"network\":{},\"amount\":\"{}\",\"asset\":{},\"payTo\":{},\"maxTimeoutSeconds\":{},\"extra\":{{\"{}\":",
            json_str(SCHEME),
            json_str(network),
            price.amount_raw,
            json_str(ASSET),
            json_str(&price.pay_to.address),
            price.max_timeout_secs,
            challenge::EXTRA_KEY_ID,
        );
        ChallengeTemplate {
            resource_tail,
            accepts_head,
        }
    }
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
    let stamp = ChallengeStamp {
        valid_before: now.saturating_add(price.max_timeout_secs),
        nonce,
        key_id: key.key_id,
    };
    let tag = challenge::mac(&key.key, &terms(cfg, price, resource), &stamp);
    let t = &price.template;
    let mut out = String::with_capacity(
        96 + resource.len() + t.resource_tail.len() + t.accepts_head.len() + 160,
    );
    out.push_str("{\"x402Version\":2");
    if let Some(e) = error {
        out.push_str(",\"error\":");
        out.push_str(&json_str(e));
    }
    out.push_str(",\"resource\":{\"url\":");
    out.push_str(&json_str(resource));
    out.push_str(&t.resource_tail);
    out.push_str(&t.accepts_head);
    // `extra` keys in serde_json's (sorted) order: keyId, mac, nonce, validBefore.
    out.push_str(&stamp.key_id.to_string());
    out.push_str(",\"mac\":\"");
    hex::push_lower(&mut out, &tag);
    out.push_str("\",\"nonce\":\"");
    hex::push_lower(&mut out, &stamp.nonce);
    out.push_str("\",\"validBefore\":");
    out.push_str(&stamp.valid_before.to_string());
    out.push_str("}}]}");
    out.into_bytes()
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
