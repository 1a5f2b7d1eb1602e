//! A paid route's challenge JSON, pre-rendered around the parts that change per request (error,
//! resource URL, stamp, MAC), so the 402 path does no serde work. [`ChallengeTemplate::render`]
//! writes exactly the bytes serde writes for the same `PaymentRequired` (tested in
//! [`crate::challenge`]).

use crate::config::Price;
use crate::jsontext::{json_str, push_json_str, push_num, push_offer_terms};
use nanogate_protocol::challenge::{
    ChallengeKey, ChallengeStamp, ChallengeTerms, MacPrefix, EXTRA_KEY_ID,
};
use nanogate_protocol::contract::facilitator::work as work_extra;
use nanogate_protocol::hex;
use std::cell::RefCell;

/// The pre-rendered parts of one route's challenge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChallengeTemplate {
    /// `,"description":…,"mimeType":…}` closing `resource`.
    resource_tail: String,
    /// `,"accepts":[{…,"extra":{"keyId":`
    accepts_head: String,
    /// The work fields that close `extra` (`,"work":"optional","workThreshold":"…"`), or "".
    extra_tail: String,
    /// What follows the last `accepts` entry: `]`, the route's `extensions` if any, `}`.
    closing: String,
    /// The route's MAC prefix under the last key used (the VM is single-threaded).
    mac: MacCache,
}

/// The route's last [`MacPrefix`]: part of the template's state, not of its value (two
/// templates with the same text are equal whatever they cached).
#[derive(Debug, Clone, Default)]
struct MacCache(RefCell<Option<MacPrefix>>);

impl PartialEq for MacCache {
    fn eq(&self, _: &MacCache) -> bool {
        true
    }
}

impl Eq for MacCache {}

/// What an offer tells a client about the block's proof of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkTerms {
    /// `extra.workThreshold`: the send threshold of the nodes' network.
    pub threshold: Option<u64>,
    /// `extra.work: "optional"`: the sidecar attaches work for this route.
    pub attached: bool,
}

impl ChallengeTemplate {
    /// The template of a route's signed-block offer on `network`: its price and payee, the
    /// resource's description and type, the work terms and the bazaar extension, all from
    /// `price`.
    pub fn new(network: &str, price: &Price) -> ChallengeTemplate {
        let (amount_raw, pay_to, max_timeout_secs) = (
            price.amount_raw,
            price.pay_to.address.as_str(),
            price.max_timeout_secs,
        );
        let (description, mime_type, work) = (
            price.description.as_deref(),
            price.mime_type.as_deref(),
            price.work,
        );
        let extensions = price.discovery.as_ref().map(|d| d.text.as_str());
        let mut resource_tail = String::new();
        if let Some(d) = description {
            resource_tail.push_str(",\"description\":");
            resource_tail.push_str(&json_str(d));
        }
        if let Some(m) = mime_type {
            resource_tail.push_str(",\"mimeType\":");
            resource_tail.push_str(&json_str(m));
        }
        resource_tail.push('}');
        let mut h = String::with_capacity(256);
        h.push_str(",\"accepts\":[{");
        push_offer_terms(&mut h, network, amount_raw, pay_to, max_timeout_secs);
        h.push_str(",\"extra\":{\"");
        h.push_str(EXTRA_KEY_ID);
        h.push_str("\":");
        // After `validBefore`, keeping serde_json's sorted order ("work" < "workThreshold").
        let mut extra_tail = String::new();
        if work.attached {
            extra_tail.push_str(",\"");
            extra_tail.push_str(work_extra::EXTRA_WORK);
            extra_tail.push_str("\":");
            extra_tail.push_str(&json_str(work_extra::OPTIONAL));
        }
        if let Some(t) = work.threshold {
            extra_tail.push_str(",\"");
            extra_tail.push_str(work_extra::EXTRA_WORK_THRESHOLD);
            extra_tail.push_str("\":");
            extra_tail.push_str(&json_str(&work_extra::threshold_hex(t)));
        }
        let mut closing = String::from("]");
        if let Some(e) = extensions {
            // After `accepts`: the field order of `PaymentRequired`, as serde writes it.
            closing.push_str(",\"extensions\":");
            closing.push_str(e);
        }
        closing.push('}');
        ChallengeTemplate {
            resource_tail,
            accepts_head: h,
            extra_tail,
            closing,
            mac: MacCache::default(),
        }
    }

    /// What a rendered challenge ends with after its last `accepts` entry (where another offer
    /// is spliced in).
    pub fn closing(&self) -> &str {
        &self.closing
    }

    /// The challenge MAC of `terms` (this route's) and `stamp` under `key`: the same bytes as
    /// `challenge::mac`, from the route's cached prefix while the key stays the same.
    pub fn mac(
        &self,
        key: &ChallengeKey,
        terms: &ChallengeTerms<'_>,
        stamp: &ChallengeStamp,
    ) -> [u8; 32] {
        let mut cache = self.mac.0.borrow_mut();
        if !cache.as_ref().is_some_and(|p| p.is_for(key)) {
            *cache = MacPrefix::new(key, terms);
        }
        match cache.as_ref() {
            Some(prefix) => prefix.finish(terms, stamp),
            None => nanogate_protocol::challenge::mac(key, terms, stamp),
        }
    }

    /// The challenge for `resource` with `stamp` and its MAC `tag`, as JSON bytes.
    pub fn render(
        &self,
        resource: &str,
        stamp: &ChallengeStamp,
        tag: &[u8; 32],
        error: Option<&str>,
    ) -> Vec<u8> {
        let mut out = String::with_capacity(
            96 + resource.len()
                + self.resource_tail.len()
                + self.accepts_head.len()
                + self.closing.len()
                + 160,
        );
        out.push_str("{\"x402Version\":2");
        if let Some(e) = error {
            out.push_str(",\"error\":");
            push_json_str(&mut out, e);
        }
        out.push_str(",\"resource\":{\"url\":");
        push_json_str(&mut out, resource);
        out.push_str(&self.resource_tail);
        out.push_str(&self.accepts_head);
        // `extra` keys in serde_json's (sorted) order: keyId, mac, nonce, validBefore.
        push_num(&mut out, u128::from(stamp.key_id));
        out.push_str(",\"mac\":\"");
        hex::push_lower(&mut out, tag);
        out.push_str("\",\"nonce\":\"");
        hex::push_lower(&mut out, &stamp.nonce);
        out.push_str("\",\"validBefore\":");
        push_num(&mut out, u128::from(stamp.valid_before));
        out.push_str(&self.extra_tail);
        out.push_str("}}");
        out.push_str(&self.closing);
        out.into_bytes()
    }
}
