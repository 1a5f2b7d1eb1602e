//! `POST /v1/sessions` (tagged-amount sessions the sidecar pre-issues for the filter's pool)
//! and the tagged offer's `extra`.

use crate::hex;
use crate::nano::parse_raw;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A tagged route's scope is this prefix plus the route name: the MAC's resource for its
/// sessions (they exist before any request, so they cannot bind a URL).
pub const SCOPE_PREFIX: &str = "nanogate-route:";

/// The scope of the tagged route `route_name`.
pub fn route_scope(route_name: &str) -> String {
    [SCOPE_PREFIX, route_name].concat()
}

/// `POST /v1/sessions` body. Unknown fields are refused: a filter and a sidecar that disagree
/// on what a session is bound to must not issue sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionsRequest {
    /// How many sessions (the sidecar caps it at 64).
    pub count: usize,
    /// The route's price, raw, as a decimal string.
    pub price: String,
    /// The route's `maxTimeoutSeconds`.
    pub validity_seconds: u64,
    /// [`route_scope`] of the route, or [`super::pass::PassTerms::scope`] for the pool of one of
    /// its passes.
    pub scope: String,
    /// The payee pool (`nano_` addresses).
    pub pay_to: Vec<String>,
}

/// One pre-issued session: the offer's payee, amount and stamp (`nonce` = `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionOffer {
    /// 32 hex digits: the session id and the challenge nonce; a bearer secret.
    pub id: String,
    pub pay_to: String,
    /// Price + tag, raw (a decimal string on the wire).
    #[serde(with = "raw_string")]
    pub amount: u128,
    /// The tag alone, raw (informational; absent reads as 0).
    #[serde(default, with = "raw_string")]
    pub tag: u128,
    pub valid_before: u64,
    pub key_id: u64,
    /// 64 hex digits: the challenge MAC (`Mechanism::TaggedSession`, resource = scope).
    pub mac: String,
}

/// `/v1/sessions` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionsAnswer {
    pub sessions: Vec<SessionOffer>,
}

impl SessionOffer {
    /// The session in canonical form (lower-case hex), if it is well-formed: id and MAC the
    /// right length of hex, and a `payTo` of address characters only (it is written into
    /// JSON and HTML unescaped).
    fn checked(mut self) -> Option<SessionOffer> {
        self.id.make_ascii_lowercase();
        self.mac.make_ascii_lowercase();
        let ok = hex::decode_array::<16>(&self.id).is_ok()
            && hex::decode_array::<32>(&self.mac).is_ok()
            && !self.pay_to.is_empty()
            && self
                .pay_to
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        ok.then_some(self)
    }
}

/// The well-formed sessions of a `/v1/sessions` answer; malformed entries (or a malformed
/// answer) are skipped, not fatal.
pub fn parse_sessions(body: &[u8]) -> Vec<SessionOffer> {
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let Some(Value::Array(items)) = answer.remove("sessions") else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter(Value::is_object)
        .filter_map(|v| serde_json::from_value::<SessionOffer>(v).ok())
        .filter_map(SessionOffer::checked)
        .collect()
}

/// `extra.nanoSession` of a tagged offer: the session id and how its amount splits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NanoSession {
    pub id: String,
    #[serde(with = "raw_string")]
    pub resource_amount_raw: u128,
    #[serde(with = "raw_string")]
    pub tag_amount_raw: u128,
}

/// Raw amounts as decimal strings, read with [`parse_raw`].
mod raw_string {
    use super::*;

    pub fn serialize<S: Serializer>(n: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_raw(&s).map_err(|_| serde::de::Error::custom("not a raw amount"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_request_is_byte_for_byte_what_the_filter_renders() {
        let r = SessionsRequest {
            count: 16,
            price: "1000".into(),
            validity_seconds: 600,
            scope: route_scope("ta\"gged"),
            pay_to: vec!["nano_a".into(), "nano_b".into()],
        };
        let text = r#"{"count":16,"price":"1000","validitySeconds":600,"scope":"nanogate-route:ta\"gged","payTo":["nano_a","nano_b"]}"#;
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
        assert_eq!(serde_json::from_str::<SessionsRequest>(text).unwrap(), r);
        let extra = text.replace("{\"count\"", "{\"extra\":1,\"count\"");
        assert!(serde_json::from_str::<SessionsRequest>(&extra).is_err());
    }

    #[test]
    fn the_answer_reads_what_the_sidecar_wrote() {
        // The former `json!` form (keys sorted).
        let sent = json!({"sessions": [{"amount": "1042", "id": "00112233445566778899AABBCCDDEEFF",
            "keyId": 7, "mac": "CD".repeat(32), "payTo": "nano_x", "tag": "42", "validBefore": 50}]});
        let got = parse_sessions(sent.to_string().as_bytes());
        let want = SessionOffer {
            id: "00112233445566778899aabbccddeeff".into(),
            pay_to: "nano_x".into(),
            amount: 1042,
            tag: 42,
            valid_before: 50,
            key_id: 7,
            mac: "cd".repeat(32),
        };
        assert_eq!(got, vec![want.clone()]);
        let answer = SessionsAnswer { sessions: got };
        let mut lower = sent.clone();
        lower["sessions"][0]["id"] = json!(want.id);
        lower["sessions"][0]["mac"] = json!(want.mac);
        assert_eq!(serde_json::to_value(&answer).unwrap(), lower);
    }

    #[test]
    fn malformed_sessions_are_skipped_not_fatal() {
        assert!(parse_sessions(b"not json").is_empty());
        assert!(parse_sessions(b"[]").is_empty());
        assert!(parse_sessions(br#"{"sessions": 5}"#).is_empty());
        let ok = json!({"id": "00112233445566778899aabbccddeeff", "payTo": "nano_x",
                        "amount": "12", "validBefore": 50, "keyId": 1, "mac": "cd".repeat(32)});
        let mut bad = Vec::new();
        for (k, v) in [
            ("id", json!("short")),
            ("payTo", json!("nano x")),
            ("payTo", json!("")),
            ("amount", json!(12)),
            ("amount", json!("012")),
            ("mac", json!("cd")),
            ("validBefore", json!(-1)),
        ] {
            let mut s = ok.clone();
            s[k] = v;
            bad.push(s);
        }
        bad.push(json!([
            "00112233445566778899aabbccddeeff",
            "nano_x",
            "12",
            "0",
            50,
            1
        ]));
        bad.push(ok.clone());
        let got = parse_sessions(json!({ "sessions": bad }).to_string().as_bytes());
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].amount, got[0].tag), (12, 0));
    }

    #[test]
    fn nano_session_extra_keeps_its_names() {
        let n = NanoSession {
            id: "ab".into(),
            resource_amount_raw: 1000,
            tag_amount_raw: 42,
        };
        let text = r#"{"id":"ab","resourceAmountRaw":"1000","tagAmountRaw":"42"}"#;
        assert_eq!(serde_json::to_string(&n).unwrap(), text);
        assert_eq!(serde_json::from_str::<NanoSession>(text).unwrap(), n);
    }
}
