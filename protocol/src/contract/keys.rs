//! `GET /v1/challenge-key`: the keys the filter issues and checks challenges with.

use super::pass::{PassKey, PassKeyEntry, MAX_PASS_KEYS};
use crate::challenge::ChallengeKey;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Most retired keys the sidecar lists and the filter keeps.
pub const MAX_RETIRED_KEYS: usize = 16;

/// A key and its id, as listed under `previous` and `retired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEntry {
    pub key_id: u64,
    /// 64 hex digits on the wire; never logged.
    pub key: ChallengeKey,
}

/// The answer to `GET /v1/challenge-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeKeyAnswer {
    /// The key to issue with now.
    pub key_id: u64,
    pub key: ChallengeKey,
    /// When the filter must have fetched the next key (unix seconds: the end of the period).
    pub not_after: u64,
    /// The key of the period before, still honoured for fresh payments; only the id just
    /// before `keyId` is valid here.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_or_null"
    )]
    pub previous: Option<KeyEntry>,
    /// Older keys (newest first) that only authenticate **expired** challenges. Read
    /// leniently: absent or malformed is empty, malformed entries are skipped.
    #[serde(default, deserialize_with = "lenient_entries")]
    pub retired: Vec<KeyEntry>,
    /// The pass keys ([`super::pass::published_key_ids`]), newest first: the first mints, all
    /// verify. Read leniently like `retired`; absent (a sidecar before passes) is none, and
    /// then every pass token is refused (`unknown_key`).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient_pass_keys"
    )]
    pub pass_keys: Vec<PassKeyEntry>,
}

/// `null` or an object (serde alone would also read a key entry from an array, by position).
fn object_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyEntry>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v @ Value::Object(_) => serde_json::from_value(v)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("previous is malformed")),
        _ => Err(serde::de::Error::custom("previous is not an object")),
    }
}

fn lenient_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<KeyEntry>, D::Error> {
    let Value::Array(items) = Value::deserialize(d)? else {
        return Ok(Vec::new());
    };
    Ok(items
        .into_iter()
        .filter(Value::is_object)
        .filter_map(|e| serde_json::from_value(e).ok())
        .collect())
}

fn lenient_pass_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PassKeyEntry>, D::Error> {
    // Read as challenge key entries (the same shape): one deserializer in the filter module,
    // not two.
    Ok(lenient_entries(d)?
        .into_iter()
        .take(MAX_PASS_KEYS)
        .map(|e| PassKeyEntry {
            key_id: e.key_id,
            key: PassKey(e.key.0),
        })
        .collect())
}

impl ChallengeKeyAnswer {
    /// Reads and checks an answer body. The error never quotes the body (it holds keys).
    /// `previous` must be the id just before `keyId`; `retired` keeps at most
    /// [`MAX_RETIRED_KEYS`] entries older than `keyId`.
    pub fn parse(body: &[u8]) -> Result<ChallengeKeyAnswer, &'static str> {
        let v: Value = serde_json::from_slice(body).map_err(|_| "body is not JSON")?;
        if !v.is_object() {
            return Err("body is not a JSON object");
        }
        let mut answer: ChallengeKeyAnswer = serde_json::from_value(v)
            .map_err(|_| "keyId, key or notAfter missing or malformed, or previous malformed")?;
        if let Some(p) = &answer.previous {
            if p.key_id.checked_add(1) != Some(answer.key_id) {
                return Err("previous.keyId is not the id before keyId");
            }
        }
        let current = answer.key_id;
        answer.retired.retain(|k| k.key_id < current);
        answer.retired.truncate(MAX_RETIRED_KEYS);
        Ok(answer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const K1: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const K2: &str = "0202020202020202020202020202020202020202020202020202020202020202";

    fn entry(id: u64, b: u8) -> KeyEntry {
        KeyEntry {
            key_id: id,
            key: ChallengeKey([b; 32]),
        }
    }

    #[test]
    fn reads_and_writes_what_the_sidecar_always_sent() {
        let sent = json!({"keyId": 7, "key": K1, "notAfter": 99,
                          "previous": {"keyId": 6, "key": K2},
                          "retired": [{"keyId": 5, "key": K2}]});
        let a = ChallengeKeyAnswer::parse(sent.to_string().as_bytes()).unwrap();
        assert_eq!(
            a,
            ChallengeKeyAnswer {
                key_id: 7,
                key: ChallengeKey([1; 32]),
                not_after: 99,
                previous: Some(entry(6, 2)),
                retired: vec![entry(5, 2)],
                pass_keys: Vec::new(),
            }
        );
        assert_eq!(serde_json::to_value(&a).unwrap(), sent);
        let bare = ChallengeKeyAnswer {
            previous: None,
            retired: Vec::new(),
            ..a
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            format!(r#"{{"keyId":7,"key":"{K1}","notAfter":99,"retired":[]}}"#)
        );
        let minimal = format!(r#"{{"keyId":7,"key":"{K1}","notAfter":99,"previous":null}}"#);
        assert_eq!(ChallengeKeyAnswer::parse(minimal.as_bytes()), Ok(bare));
    }

    #[test]
    fn previous_must_be_the_id_before_and_retired_is_lenient() {
        let wrong_prev = json!({"keyId": 7, "key": K1, "notAfter": 99,
                                "previous": {"keyId": 5, "key": K2}});
        assert!(ChallengeKeyAnswer::parse(wrong_prev.to_string().as_bytes()).is_err());
        for prev in [json!([6, K2]), json!(6), json!({"keyId": 6})] {
            let body = json!({"keyId": 7, "key": K1, "notAfter": 99, "previous": prev});
            assert!(ChallengeKeyAnswer::parse(body.to_string().as_bytes()).is_err());
        }
        let mut retired: Vec<Value> = (0..20).map(|i| json!({"keyId": i, "key": K2})).collect();
        retired.insert(0, json!({"keyId": 9, "key": K2}));
        retired.insert(0, json!({"keyId": 1, "key": "zz"}));
        retired.insert(0, json!([1, K2]));
        let body = json!({"keyId": 7, "key": K1, "notAfter": 99, "retired": retired});
        let a = ChallengeKeyAnswer::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(a.retired, (0..7).map(|i| entry(i, 2)).collect::<Vec<_>>());
        let body = json!({"keyId": 7, "key": K1, "notAfter": 99, "retired": "nope"});
        assert!(ChallengeKeyAnswer::parse(body.to_string().as_bytes())
            .unwrap()
            .retired
            .is_empty());
    }

    #[test]
    fn errors_never_quote_the_key() {
        let bad = br#"{"keyId":7,"key":"secretsecret","notAfter":99}"#;
        let e = ChallengeKeyAnswer::parse(bad).unwrap_err();
        assert!(!e.contains("secret"));
        for b in [
            &b""[..],
            b"{}",
            b"[]",
            br#"{"keyId":-1,"key":"00","notAfter":1}"#,
        ] {
            assert!(ChallengeKeyAnswer::parse(b).is_err());
        }
        let shown = format!("{:?}", entry(1, 0xab));
        assert!(!shown.contains("ab") && !shown.contains("AB"), "{shown}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let _ = ChallengeKeyAnswer::parse(&bytes);
        }
    }
}
