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
    format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase(),
        crate::routes::canonical_path(path)
    )
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
    let key = match ring.for_id(stamp.key_id) {
        Some(k) => k,
        // An id older than the ones we hold is a challenge from a past rotation.
        None if stamp.key_id < ring.current.key_id => return Err(ErrorReason::ChallengeExpired),
        None => return Err(ErrorReason::InvalidChallenge),
    };
    match challenge::verify(&key.key, &terms(cfg, price, resource), &stamp, &tag, now) {
        Ok(()) => Ok(stamp_extra(&stamp, &tag)),
        Err(ChallengeError::Expired) => Err(ErrorReason::ChallengeExpired),
        Err(_) => Err(ErrorReason::InvalidChallenge),
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
