//! Prepaid passes: pay once, then many requests checked by the filter alone (prose:
//! `docs/passes.md`).
//!
//! * The offer: a paid route's 402 lists each pass as its own `accepts[]` entry whose
//!   `extra.pass` is a [`PassTerms`]; its challenge MAC binds [`PassTerms::scope`] as the
//!   resource, so the name, group, lifetime and request count are as authentic as the price.
//!   A tagged route also lists each pass as a tagged session issued for that scope.
//! * The purchase: the filter sends the terms in [`super::PayRequest::pass`]; the sidecar records
//!   the pass and answers a [`PassIssued`] (in the verdict and in `PAYMENT-RESPONSE`'s
//!   `extensions.pass`); the filter adds a cookie ([`set_cookie`]).
//! * The use: a [`PassToken`] in the [`HEADER`] header or the [`cookie_name`] cookie, MAC'd under
//!   a [`PassKey`] the sidecar hands out with the challenge keys
//!   ([`super::ChallengeKeyAnswer::pass_keys`]).
//! * The count: [`PassUsageRequest`] → [`PassUsageAnswer`] on `POST /v1/passes/usage`.
//! * The operator: [`PassRow`], [`PassesPage`], [`PassRevokeRequest`].

use crate::challenge::{constant_time_eq, keyed_hash};
use crate::hex;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::fmt;

/// The request header a payer presents a pass token in.
pub const HEADER: &str = "x-nanogate-pass";
/// A pass cookie is named this prefix plus its group ([`cookie_name`]).
pub const COOKIE_PREFIX: &str = "nanogate-pass-";
/// `accepts[].extra` key of a pass offer ([`PassTerms`]).
pub const EXTRA_PASS: &str = "pass";
/// `PAYMENT-RESPONSE` `extensions` key of a bought pass ([`PassIssued`]).
pub const EXTENSION_PASS: &str = "pass";
/// A pass offer's MAC resource is this prefix plus its terms ([`PassTerms::scope`]).
pub const SCOPE_PREFIX: &str = "nanogate-pass:";

/// Longest pass or group name; names are `[a-z0-9_-]{1,32}` ([`valid_name`]).
pub const MAX_NAME_LEN: usize = 32;
/// Longest lifetime of any pass (31 days): pass keys are published this far back.
pub const MAX_PASS_SECONDS: u64 = 31 * 86_400;
/// Lifetime of a request-count pass whose offer names no `seconds` (30 days).
pub const DEFAULT_REQUEST_PASS_SECONDS: u64 = 30 * 86_400;
/// Most requests one pass may grant.
pub const MAX_PASS_REQUESTS: u32 = 1_000_000_000;
/// Most pass keys the sidecar lists and the filter keeps.
pub const MAX_PASS_KEYS: usize = 64;
/// Most counts in one usage report, and most ids in each refused list of its answer.
pub const MAX_USAGE_ENTRIES: usize = 1024;

const TOKEN_VERSION: u8 = 1;
const TOKEN_DOMAIN: &[u8] = b"nanogate-pass-v1";
const KEY_DOMAIN: &[u8] = b"nanogate-pass-key-v1";
/// version, key id, pass id, expiry, requests, group length.
const TOKEN_HEAD: usize = 1 + 8 + 16 + 8 + 4 + 1;
const TOKEN_MAC: usize = 32;
/// Longest token, base64url without padding.
pub const MAX_TOKEN_LEN: usize = (TOKEN_HEAD + MAX_NAME_LEN + TOKEN_MAC).div_ceil(3) * 4;

/// A pass or group name: `[a-z0-9_-]{1,32}` (it is written into cookie names and JSON unescaped).
pub fn valid_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The cookie carrying a pass of `group`.
pub fn cookie_name(group: &str) -> String {
    [COOKIE_PREFIX, group].concat()
}

/// The `Set-Cookie` value for a bought pass: `HttpOnly`, `SameSite=Lax`, `Path=path`,
/// `Max-Age` until the pass expires, and `Secure` unless `secure` is false (the filter sets it
/// false only for plain HTTP to a loopback host).
pub fn set_cookie(group: &str, token: &str, path: &str, max_age: u64, secure: bool) -> String {
    let mut c = format!(
        "{}={token}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax",
        cookie_name(group)
    );
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// What a pass offer grants (`extra.pass` of its `accepts[]` entry, and
/// [`super::PayRequest::pass`]): `seconds` is always its lifetime; `requests`, when present,
/// limits it to that many requests within the lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassTerms {
    pub name: String,
    pub group: String,
    pub seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
}

impl PassTerms {
    /// Names valid, `seconds` within 1..=[`MAX_PASS_SECONDS`], `requests` within
    /// 1..=[`MAX_PASS_REQUESTS`].
    pub fn check(&self) -> Result<(), &'static str> {
        if !valid_name(&self.name) {
            return Err("pass name is not [a-z0-9_-]{1,32}");
        }
        if !valid_name(&self.group) {
            return Err("pass group is not [a-z0-9_-]{1,32}");
        }
        if !(1..=MAX_PASS_SECONDS).contains(&self.seconds) {
            return Err("pass seconds out of range");
        }
        if self
            .requests
            .is_some_and(|r| !(1..=MAX_PASS_REQUESTS).contains(&r))
        {
            return Err("pass requests out of range");
        }
        Ok(())
    }

    /// The challenge MAC's resource for this offer:
    /// `nanogate-pass:<group>:<name>:<seconds>:<requests or 0>`.
    pub fn scope(&self) -> String {
        format!(
            "{SCOPE_PREFIX}{}:{}:{}:{}",
            self.group,
            self.name,
            self.seconds,
            self.requests.unwrap_or(0)
        )
    }
}

/// A 32-byte pass key: tokens are MAC'd under it. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PassKey(pub [u8; 32]);

impl fmt::Debug for PassKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PassKey(<redacted>)")
    }
}

impl Serialize for PassKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_lower(&self.0))
    }
}

impl<'de> Deserialize<'de> for PassKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode_array(&s)
            .map(PassKey)
            .map_err(|_| serde::de::Error::custom("pass key is not 64 hex digits"))
    }
}

impl PassKey {
    /// The pass key for `key_id`, derived from the sidecar's master secret (the challenge
    /// secret, under its own domain: a pass key never equals a challenge key).
    pub fn derive(master: &[u8], key_id: u64) -> PassKey {
        PassKey(keyed_hash(master, &[KEY_DOMAIN, &key_id.to_be_bytes()]))
    }
}

/// A pass key and its id (`passKeys[]` of `/v1/challenge-key`, newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassKeyEntry {
    pub key_id: u64,
    pub key: PassKey,
}

/// The pass key id that mints at `now`.
pub fn pass_key_id_at(now: u64, rotation_secs: u64) -> u64 {
    now / rotation_secs.max(1)
}

/// The pass key ids the sidecar publishes at `now`, newest first, at most [`MAX_PASS_KEYS`]:
/// the next one (so a filter that fetched its keys during the previous period already holds
/// the key a fresh token is minted under), the current one ([`pass_key_id_at`]) and every
/// older one a live pass may have been minted under (back to `now - MAX_PASS_SECONDS`).
pub fn published_key_ids(now: u64, rotation_secs: u64) -> Vec<u64> {
    let r = rotation_secs.max(1);
    let next = pass_key_id_at(now, r).saturating_add(1);
    let oldest = now.saturating_sub(MAX_PASS_SECONDS) / r;
    (oldest..=next).rev().take(MAX_PASS_KEYS).collect()
}

/// A pass token's contents. On the wire (base64url, no padding) it is:
///
/// | bytes | field |
/// |---|---|
/// | 1 | version, `1` |
/// | 8 | key id (big-endian) |
/// | 16 | pass id |
/// | 8 | expiry, unix seconds (big-endian) |
/// | 4 | requests granted (big-endian; `0`: a time pass, not counted) |
/// | 1 | group length *g* |
/// | *g* | group |
/// | 32 | keyed BLAKE2b-256 under the pass key, over `nanogate-pass-v1` and every byte above |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassToken {
    pub key_id: u64,
    pub id: [u8; 16],
    pub expires_at: u64,
    /// `0`: not counted.
    pub requests: u32,
    pub group: String,
}

/// Why a presented pass is refused: the filter's stats name and, prefixed `pass_`, the 402's
/// `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassRefusal {
    /// Not base64url, the wrong length or version, or a group that is not a name.
    Malformed,
    /// The MAC does not match (mutated, or minted under another secret).
    Forged,
    /// Minted under a key this filter does not hold (too old, or not yet fetched).
    UnknownKey,
    Expired,
    /// Valid, but for another group than the route's.
    WrongGroup,
    /// Its requests are used up.
    Exhausted,
    /// The operator revoked it.
    Revoked,
}

impl PassRefusal {
    pub const ALL: [PassRefusal; 7] = [
        PassRefusal::Malformed,
        PassRefusal::Forged,
        PassRefusal::UnknownKey,
        PassRefusal::Expired,
        PassRefusal::WrongGroup,
        PassRefusal::Exhausted,
        PassRefusal::Revoked,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PassRefusal::Malformed => "malformed",
            PassRefusal::Forged => "forged",
            PassRefusal::UnknownKey => "unknown_key",
            PassRefusal::Expired => "expired",
            PassRefusal::WrongGroup => "wrong_group",
            PassRefusal::Exhausted => "exhausted",
            PassRefusal::Revoked => "revoked",
        }
    }

    /// The 402's `error` when this refusal ends in a new offer.
    pub const fn error(self) -> &'static str {
        match self {
            PassRefusal::Malformed => "pass_malformed",
            PassRefusal::Forged => "pass_forged",
            PassRefusal::UnknownKey => "pass_unknown_key",
            PassRefusal::Expired => "pass_expired",
            PassRefusal::WrongGroup => "pass_wrong_group",
            PassRefusal::Exhausted => "pass_exhausted",
            PassRefusal::Revoked => "pass_revoked",
        }
    }
}

impl PassToken {
    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(TOKEN_HEAD + self.group.len() + TOKEN_MAC);
        b.push(TOKEN_VERSION);
        b.extend_from_slice(&self.key_id.to_be_bytes());
        b.extend_from_slice(&self.id);
        b.extend_from_slice(&self.expires_at.to_be_bytes());
        b.extend_from_slice(&self.requests.to_be_bytes());
        // A group longer than 255 bytes is never minted (names are checked); saturate anyway.
        b.push(u8::try_from(self.group.len()).unwrap_or(u8::MAX));
        b.extend_from_slice(self.group.as_bytes());
        b
    }

    /// The token text under `key` (which must be the key of `self.key_id`).
    pub fn mint(&self, key: &PassKey) -> String {
        let mut b = self.body();
        let mac = keyed_hash(&key.0, &[TOKEN_DOMAIN, &b]);
        b.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Reads and authenticates a token: `key_for` gives the pass key of an id the caller
    /// holds. Expiry, group, count and revocation are the caller's to check.
    pub fn open<'k>(
        text: &str,
        key_for: impl FnOnce(u64) -> Option<&'k PassKey>,
    ) -> Result<PassToken, PassRefusal> {
        if text.is_empty() || text.len() > MAX_TOKEN_LEN {
            return Err(PassRefusal::Malformed);
        }
        let b = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| PassRefusal::Malformed)?;
        if b.len() < TOKEN_HEAD + 1 + TOKEN_MAC || b[0] != TOKEN_VERSION {
            return Err(PassRefusal::Malformed);
        }
        let g = usize::from(b[TOKEN_HEAD - 1]);
        if b.len() != TOKEN_HEAD + g + TOKEN_MAC {
            return Err(PassRefusal::Malformed);
        }
        let (body, tag) = b.split_at(TOKEN_HEAD + g);
        let be8 = |at: usize| -> u64 {
            let mut a = [0u8; 8];
            a.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(a)
        };
        let key_id = be8(1);
        let mut id = [0u8; 16];
        id.copy_from_slice(&body[9..25]);
        let expires_at = be8(25);
        let mut r = [0u8; 4];
        r.copy_from_slice(&body[33..37]);
        let group = std::str::from_utf8(&body[TOKEN_HEAD..])
            .ok()
            .filter(|s| valid_name(s))
            .ok_or(PassRefusal::Malformed)?;
        let key = key_for(key_id).ok_or(PassRefusal::UnknownKey)?;
        let mut presented = [0u8; 32];
        presented.copy_from_slice(tag);
        if !constant_time_eq(&keyed_hash(&key.0, &[TOKEN_DOMAIN, body]), &presented) {
            return Err(PassRefusal::Forged);
        }
        Ok(PassToken {
            key_id,
            id,
            expires_at,
            requests: u32::from_be_bytes(r),
            group: group.to_owned(),
        })
    }

    /// The pass id as the sidecar and the admin API write it: 32 lower-case hex digits.
    pub fn id_hex(&self) -> String {
        hex::encode_lower(&self.id)
    }
}

/// A bought pass: `pass` of the `/v1/pay` admit verdict, and `extensions.pass` of
/// `PAYMENT-RESPONSE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassIssued {
    /// The [`PassToken`] text: present it in [`HEADER`] (or the cookie).
    pub token: String,
    /// 32 hex digits.
    pub id: String,
    pub name: String,
    pub group: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// Requests granted; absent for a time pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
}

impl PassIssued {
    /// Whether the filter may copy it into a response: a token of base64url characters at
    /// most [`MAX_TOKEN_LEN`] long (it goes into a cookie unquoted), a valid group and name.
    pub fn is_safe(&self) -> bool {
        (1..=MAX_TOKEN_LEN).contains(&self.token.len())
            && self
                .token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && valid_name(&self.group)
            && valid_name(&self.name)
    }
}

/// A counted pass's authoritative total (`totals[]` of a usage answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassCount {
    /// 32 hex digits.
    pub id: String,
    pub used: u64,
}

/// One VM's requests on one counted pass since that VM started (`counts[]` of a usage report):
/// cumulative, so a report sent again after its answer was lost is applied once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassSeen {
    /// 32 hex digits.
    pub id: String,
    pub seen: u64,
}

/// `POST /v1/passes/usage` body, sent by each filter VM on its tick (also with no counts, to
/// learn refused ids): `vm` names the reporting VM (random, drawn when it starts: 16 hex
/// digits), and each of at most [`MAX_USAGE_ENTRIES`] counts is that VM's total on the pass.
/// The sidecar keeps the highest total per (pass, VM) and a pass's count is their sum.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassUsageRequest {
    pub vm: String,
    pub counts: Vec<PassSeen>,
}

/// Whether `vm` names a reporting VM: 16 hex digits.
pub fn is_vm_id(vm: &str) -> bool {
    hex::decode_array::<8>(vm).is_ok()
}

/// The answer to `POST /v1/passes/usage`: the authoritative total of every pass reported, and
/// the ids of unexpired passes the filter must refuse from now on (each list at most
/// [`MAX_USAGE_ENTRIES`], newest first).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassUsageAnswer {
    pub totals: Vec<PassCount>,
    pub exhausted: Vec<String>,
    pub revoked: Vec<String>,
}

fn is_pass_id(s: &str) -> bool {
    hex::decode_array::<16>(s).is_ok()
}

/// The well-formed pass ids of a JSON array, lower-cased, at most [`MAX_USAGE_ENTRIES`].
fn ids_of(v: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_str)
        .filter(|s| is_pass_id(s))
        .map(str::to_ascii_lowercase)
        .take(MAX_USAGE_ENTRIES)
        .collect()
}

impl PassUsageAnswer {
    /// Reads an answer leniently: a malformed answer is empty, malformed entries are skipped.
    /// Walked by hand over a `Value` (no derived deserializer in the filter module).
    pub fn parse(body: &[u8]) -> PassUsageAnswer {
        let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
            return PassUsageAnswer::default();
        };
        let totals = match o.get("totals") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|t| {
                    let id = t.get("id")?.as_str().filter(|s| is_pass_id(s))?;
                    Some(PassCount {
                        id: id.to_ascii_lowercase(),
                        used: t.get("used")?.as_u64()?,
                    })
                })
                .take(MAX_USAGE_ENTRIES)
                .collect(),
            _ => Vec::new(),
        };
        PassUsageAnswer {
            totals,
            exhausted: ids_of(o.get("exhausted")),
            revoked: ids_of(o.get("revoked")),
        }
    }
}

impl PassIssued {
    /// Reads a pass from a verdict's `pass` (by hand: no derived deserializer in the filter
    /// module); `None` when it is not an object with a string token, id, name and group and a
    /// whole `expiresAt`.
    pub fn from_value(v: &Value) -> Option<PassIssued> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(PassIssued {
            token: s("token")?,
            id: s("id")?,
            name: s("name")?,
            group: s("group")?,
            expires_at: v.get("expiresAt")?.as_u64()?,
            requests: v
                .get("requests")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
        })
    }
}

/// One pass, as `GET /v1/admin/passes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassRow {
    pub id: String,
    pub name: String,
    pub group: String,
    /// `nano_` address.
    pub payer: String,
    /// The paying block's hash.
    pub transaction: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    /// Absent for a time pass.
    pub requests_granted: Option<u32>,
    /// Requests reported so far (counted passes).
    pub requests_used: i64,
    pub revoked_at: Option<i64>,
    /// `active`, `expired`, `exhausted` or `revoked`.
    pub state: String,
}

/// `GET /v1/admin/passes` answer (query: `group`, `state`, `limit`, `after`): newest first;
/// `next` is the `after` cursor of the next page, `null` at the end.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PassesPage {
    pub passes: Vec<PassRow>,
    pub next: Option<String>,
}

/// `POST /v1/admin/passes/revoke` body; the answer is the revoked [`PassRow`] (404 with an
/// `ErrorBody` for an unknown id). Revoking twice keeps the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassRevokeRequest {
    pub id: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token() -> PassToken {
        PassToken {
            key_id: 20_000,
            id: [7; 16],
            expires_at: 1_700_003_600,
            requests: 100,
            group: "api".into(),
        }
    }

    #[test]
    fn a_minted_token_opens_under_its_key_only() {
        let key = PassKey::derive(b"master secret for tests", 20_000);
        let text = token().mint(&key);
        assert!(text.len() <= MAX_TOKEN_LEN, "{}", text.len());
        assert_eq!(
            PassToken::open(&text, |id| (id == 20_000).then_some(&key)),
            Ok(token())
        );
        let other = PassKey::derive(b"another deployment's secret", 20_000);
        assert_eq!(
            PassToken::open(&text, |_| Some(&other)),
            Err(PassRefusal::Forged)
        );
        assert_eq!(
            PassToken::open(&text, |_| None),
            Err(PassRefusal::UnknownKey)
        );
        assert_ne!(
            PassKey::derive(b"master secret for tests", 20_000).0,
            crate::challenge::ChallengeKey::derive(b"master secret for tests", 20_000).0
        );
    }

    #[test]
    fn mutated_or_truncated_tokens_are_refused() {
        let key = PassKey::derive(b"master secret for tests", 20_000);
        let text = token().mint(&key);
        let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
        for i in 0..raw.len() {
            let mut m = raw.clone();
            m[i] ^= 1;
            let got = PassToken::open(&URL_SAFE_NO_PAD.encode(&m), |_| Some(&key));
            assert!(got.is_err(), "byte {i}");
        }
        for n in 0..text.len() {
            assert!(PassToken::open(&text[..n], |_| Some(&key)).is_err(), "{n}");
        }
        for bad in [
            "",
            "!!!!",
            &format!("{text}A"),
            &"A".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(PassToken::open(bad, |_| Some(&key)).is_err());
        }
    }

    #[test]
    fn terms_scope_and_extra_shape() {
        let t = PassTerms {
            name: "hundred".into(),
            group: "api".into(),
            seconds: DEFAULT_REQUEST_PASS_SECONDS,
            requests: Some(100),
        };
        assert_eq!(t.check(), Ok(()));
        assert_eq!(t.scope(), "nanogate-pass:api:hundred:2592000:100");
        let text = r#"{"name":"hundred","group":"api","seconds":2592000,"requests":100}"#;
        assert_eq!(serde_json::to_string(&t).unwrap(), text);
        assert_eq!(serde_json::from_str::<PassTerms>(text).unwrap(), t);
        let hour = PassTerms {
            name: "hour".into(),
            seconds: 3600,
            requests: None,
            ..t.clone()
        };
        assert_eq!(
            serde_json::to_value(&hour).unwrap(),
            json!({"name": "hour", "group": "api", "seconds": 3600})
        );
        for bad in [
            PassTerms {
                name: "Hour".into(),
                ..hour.clone()
            },
            PassTerms {
                group: "".into(),
                ..hour.clone()
            },
            PassTerms {
                seconds: 0,
                ..hour.clone()
            },
            PassTerms {
                seconds: MAX_PASS_SECONDS + 1,
                ..hour.clone()
            },
            PassTerms {
                requests: Some(0),
                ..hour.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(
            set_cookie("api", "tok", "/api", 60, true),
            "nanogate-pass-api=tok; Path=/api; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(!set_cookie("api", "tok", "/", 60, false).contains("Secure"));
    }

    #[test]
    fn published_keys_cover_the_longest_pass() {
        let ids = published_key_ids(MAX_PASS_SECONDS + 86_400 * 10, 86_400);
        assert_eq!(ids.first(), Some(&42));
        assert_eq!(ids.last(), Some(&10));
        assert!(published_key_ids(u64::MAX, 1).len() == MAX_PASS_KEYS);
    }

    #[test]
    fn usage_answer_is_read_leniently() {
        let id = "ab".repeat(16);
        let body = json!({"totals": [{"id": id.to_uppercase(), "used": 5}, {"id": "x", "used": 1}, 7],
                          "exhausted": [id, "nope", 3], "revoked": "nope"});
        let a = PassUsageAnswer::parse(body.to_string().as_bytes());
        assert_eq!(
            a.totals,
            vec![PassCount {
                id: id.clone(),
                used: 5
            }]
        );
        assert_eq!(a.exhausted, vec![id]);
        assert!(a.revoked.is_empty());
        assert_eq!(PassUsageAnswer::parse(b"[]"), PassUsageAnswer::default());
        assert_eq!(
            serde_json::to_string(&PassUsageRequest::default()).unwrap(),
            r#"{"vm":"","counts":[]}"#
        );
        // A report of per-report deltas (`used`, before cumulative counts) is not a report:
        // a sidecar must never add a VM's running total as if it were new requests.
        assert!(serde_json::from_str::<PassUsageRequest>(
            r#"{"counts":[{"id":"abababababababababababababababab","used":3}]}"#
        )
        .is_err());
        assert!(is_vm_id("0123456789abcdef") && !is_vm_id("0123") && !is_vm_id(""));
    }

    #[test]
    fn refusal_names_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in PassRefusal::ALL {
            assert!(seen.insert(r.as_str()));
            assert_eq!(r.error(), format!("pass_{}", r.as_str()));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let key = PassKey([1; 32]);
            let _ = PassToken::open(&s, |_| Some(&key));
        }
    }
}
