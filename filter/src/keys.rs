//! The challenge key as the filter holds it: fetched from the sidecar by a root context,
//! shared between VMs through proxy-wasm shared data, read by request contexts.
//!
//! The sidecar honours the current and the previous key id, so the filter keeps the previous
//! key too (to check challenges issued just before a rotation) and keeps issuing with a key
//! for [`ISSUE_GRACE_SECS`] past its `notAfter` while the next fetch is retried.

use nanogate_protocol::challenge::ChallengeKey;
use nanogate_protocol::contract::pass::{PassKey, PassKeyEntry, MAX_PASS_KEYS};
use nanogate_protocol::contract::{ChallengeKeyAnswer, KeyEntry, MAX_RETIRED_KEYS};

/// How long past `notAfter` a key may still sign new challenges while the refresh is retried.
/// The sidecar still honours it as the previous key for a whole rotation period.
pub const ISSUE_GRACE_SECS: u64 = 30;

/// Refreshing starts this long before `notAfter` (and repeats every tick until a key with a
/// later `notAfter` arrives), so a sidecar that hands out the next key early is picked up in
/// time, and one that does not is polled at most once a second around the rotation.
pub const REFRESH_LEAD_SECS: u64 = 10;

/// Shared-data key prefix; the cluster name follows, so two plugins that use different
/// sidecars in one VM id do not mix their keys. (v2: the ring carries retired keys; v3: and
/// the pass keys.)
pub const SHARED_KEY_PREFIX: &str = "nanogate.challenge_key.v3.";

/// Most retired keys a filter keeps (the sidecar decides which; extra ones are ignored).
pub const MAX_RETIRED: usize = MAX_RETIRED_KEYS;

/// The lease that elects one VM to fetch (value: the lease's expiry, u64 BE).
pub const SHARED_LEASE_PREFIX: &str = "nanogate.challenge_key_lease.v1.";

const CODEC_VERSION: u8 = 3;

/// One key and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdKey {
    pub key_id: u64,
    pub key: ChallengeKey,
}

/// The keys a filter holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    pub current: IdKey,
    /// When the filter must have fetched the next key (end of the current key's period).
    pub not_after: u64,
    pub previous: Option<IdKey>,
    /// Older keys the sidecar lists as `retired`: they only authenticate **expired**
    /// challenges (whose payment the sidecar may still admit or record), never a fresh one.
    pub retired: Vec<IdKey>,
    /// The pass keys the sidecar listed with the last fetch (docs/passes.md): they verify pass
    /// tokens. Never logged.
    pub pass_keys: Vec<PassKeyEntry>,
}

impl KeyRing {
    /// The pass key of `key_id`, if held.
    pub fn pass_key(&self, key_id: u64) -> Option<&PassKey> {
        self.pass_keys
            .iter()
            .find(|k| k.key_id == key_id)
            .map(|k| &k.key)
    }

    /// The key to sign new challenges with, unless it has gone stale.
    pub fn issuing(&self, now: u64) -> Option<&IdKey> {
        (now < self.not_after.saturating_add(ISSUE_GRACE_SECS)).then_some(&self.current)
    }

    /// The key for a presented key id, if we still hold it.
    pub fn for_id(&self, key_id: u64) -> Option<&IdKey> {
        if self.current.key_id == key_id {
            return Some(&self.current);
        }
        self.previous.as_ref().filter(|p| p.key_id == key_id)
    }

    /// A retired key by id (only for challenges that have expired).
    pub fn retired(&self, key_id: u64) -> Option<&IdKey> {
        self.retired.iter().find(|k| k.key_id == key_id)
    }

    /// Whether a refresh is due.
    pub fn refresh_due(&self, now: u64) -> bool {
        now.saturating_add(REFRESH_LEAD_SECS) >= self.not_after
    }

    /// The ring after a fetch: the fetched key becomes current, the old current becomes
    /// previous when the id changed.
    /// `fetched_previous` (what the sidecar says it still honours) fills in when this ring
    /// has no older key of its own, e.g. in a filter started just after a rotation.
    /// `retired` is taken as the sidecar sent it (it alone knows how long it still admits
    /// late payments), minus anything not older than the honoured keys.
    pub fn rotate(
        old: Option<&KeyRing>,
        fetched: IdKey,
        not_after: u64,
        fetched_previous: Option<IdKey>,
        mut retired: Vec<IdKey>,
    ) -> KeyRing {
        let previous = match old {
            Some(o) if o.current.key_id != fetched.key_id => Some(o.current.clone()),
            Some(o) => o.previous.clone(),
            None => None,
        }
        .filter(|p| p.key_id.checked_add(1) == Some(fetched.key_id))
        .or(fetched_previous);
        let oldest_honoured = previous.as_ref().map_or(fetched.key_id, |p| p.key_id);
        retired.retain(|k| k.key_id < oldest_honoured);
        retired.truncate(MAX_RETIRED);
        KeyRing {
            current: fetched,
            not_after,
            previous,
            retired,
            pass_keys: Vec::new(),
        }
    }

    /// Compact binary form for shared data: version, current (id, key), notAfter, whether a
    /// previous key follows (0/1) and it, the number of retired keys and they (id, key), then
    /// the pass keys (id, key) to the end.
    pub fn encode(&self) -> Vec<u8> {
        let n = 1 + self.retired.len() + self.pass_keys.len();
        let mut out = Vec::with_capacity(1 + 48 + 2 + 40 * n);
        out.push(CODEC_VERSION);
        out.extend_from_slice(&self.current.key_id.to_be_bytes());
        out.extend_from_slice(&self.current.key.0);
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out.push(u8::from(self.previous.is_some()));
        if let Some(k) = &self.previous {
            out.extend_from_slice(&k.key_id.to_be_bytes());
            out.extend_from_slice(&k.key.0);
        }
        // At most MAX_RETIRED (16): fits a byte.
        out.push(u8::try_from(self.retired.len()).unwrap_or(u8::MAX));
        for k in &self.retired {
            out.extend_from_slice(&k.key_id.to_be_bytes());
            out.extend_from_slice(&k.key.0);
        }
        for k in &self.pass_keys {
            out.extend_from_slice(&k.key_id.to_be_bytes());
            out.extend_from_slice(&k.key.0);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<KeyRing> {
        let (&version, rest) = bytes.split_first()?;
        if version != CODEC_VERSION {
            return None;
        }
        let (current, rest) = read_id_key(rest)?;
        let (not_after, rest) = read_u64(rest)?;
        let (&has_previous, mut rest) = rest.split_first()?;
        let previous = match has_previous {
            0 => None,
            1 => {
                let (p, r) = read_id_key(rest)?;
                rest = r;
                Some(p)
            }
            _ => return None,
        };
        let (&n_retired, mut rest) = rest.split_first()?;
        if usize::from(n_retired) > MAX_RETIRED {
            return None;
        }
        let mut retired = Vec::with_capacity(usize::from(n_retired));
        for _ in 0..n_retired {
            let (k, r) = read_id_key(rest)?;
            retired.push(k);
            rest = r;
        }
        if rest.len() % 40 != 0 || rest.len() / 40 > MAX_PASS_KEYS {
            return None;
        }
        let mut pass_keys = Vec::with_capacity(rest.len() / 40);
        while !rest.is_empty() {
            let (k, r) = read_id_key(rest)?;
            pass_keys.push(PassKeyEntry {
                key_id: k.key_id,
                key: PassKey(k.key.0),
            });
            rest = r;
        }
        Some(KeyRing {
            current,
            not_after,
            previous,
            retired,
            pass_keys,
        })
    }
}

fn read_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = b.split_at_checked(8)?;
    Some((u64::from_be_bytes(head.try_into().ok()?), rest))
}

fn read_id_key(b: &[u8]) -> Option<(IdKey, &[u8])> {
    let (key_id, rest) = read_u64(b)?;
    let (key, rest) = rest.split_at_checked(32)?;
    Some((
        IdKey {
            key_id,
            key: ChallengeKey(key.try_into().ok()?),
        },
        rest,
    ))
}

/// Reads `GET /v1/challenge-key`'s body ([`ChallengeKeyAnswer::parse`]: the previous key
/// only with the id just before the current one, at most [`MAX_RETIRED`] retired keys older
/// than it). The error never quotes the key.
pub fn parse_key_response(body: &[u8]) -> Result<KeyAnswer, &'static str> {
    let a = ChallengeKeyAnswer::parse(body)?;
    let id_key = |e: KeyEntry| IdKey {
        key_id: e.key_id,
        key: e.key,
    };
    Ok(KeyAnswer {
        current: IdKey {
            key_id: a.key_id,
            key: a.key,
        },
        not_after: a.not_after,
        previous: a.previous.map(id_key),
        retired: a.retired.into_iter().map(id_key).collect(),
        pass_keys: a.pass_keys,
    })
}

/// What `GET /v1/challenge-key` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAnswer {
    pub current: IdKey,
    pub not_after: u64,
    pub previous: Option<IdKey>,
    /// Keys only for authenticating expired challenges.
    pub retired: Vec<IdKey>,
    pub pass_keys: Vec<PassKeyEntry>,
}

/// Lease value: its expiry in unix seconds.
pub fn encode_lease(until: u64) -> [u8; 8] {
    until.to_be_bytes()
}

/// Whether a lease (as stored) is still held at `now`. Unreadable leases are free.
pub fn lease_held(bytes: Option<&[u8]>, now: u64) -> bool {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .is_some_and(|b| u64::from_be_bytes(b) > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idk(id: u64, b: u8) -> IdKey {
        IdKey {
            key_id: id,
            key: ChallengeKey([b; 32]),
        }
    }

    #[test]
    fn ring_round_trips_with_and_without_previous() {
        let r1 = KeyRing::rotate(None, idk(5, 1), 100, None, vec![]);
        assert_eq!(KeyRing::decode(&r1.encode()), Some(r1.clone()));
        let r2 = KeyRing::rotate(Some(&r1), idk(6, 2), 200, None, vec![]);
        assert_eq!(r2.previous, Some(idk(5, 1)));
        assert_eq!(KeyRing::decode(&r2.encode()), Some(r2.clone()));
        let mut r4 = KeyRing::rotate(Some(&r2), idk(7, 3), 300, None, vec![idk(4, 4), idk(3, 5)]);
        r4.pass_keys = vec![PassKeyEntry {
            key_id: 9,
            key: PassKey([6; 32]),
        }];
        assert_eq!(KeyRing::decode(&r4.encode()), Some(r4.clone()));
        assert_eq!(r4.pass_key(9), Some(&PassKey([6; 32])));
        assert_eq!(r4.pass_key(8), None);
        // Same id again: previous is kept, not replaced by the same key.
        let r3 = KeyRing::rotate(Some(&r2), idk(6, 2), 210, None, vec![]);
        assert_eq!(r3.previous, Some(idk(5, 1)));
        assert_eq!(r3.for_id(5), Some(&idk(5, 1)));
        assert_eq!(r3.for_id(6), Some(&idk(6, 2)));
        assert_eq!(r3.for_id(4), None);
    }

    #[test]
    fn a_filter_started_after_a_rotation_takes_the_previous_key_from_the_sidecar() {
        let fresh = KeyRing::rotate(None, idk(6, 2), 200, Some(idk(5, 1)), vec![]);
        assert_eq!(fresh.for_id(5), Some(&idk(5, 1)));
        // Its own older key wins only when it is the one just before; a skipped period's key
        // (no longer honoured) gives way to what the sidecar sent.
        let old = KeyRing::rotate(None, idk(3, 9), 100, None, vec![]);
        let next = KeyRing::rotate(Some(&old), idk(6, 2), 200, Some(idk(5, 1)), vec![]);
        assert_eq!(next.previous, Some(idk(5, 1)));
    }

    #[test]
    fn stale_key_stops_issuing_after_the_grace() {
        let r = KeyRing::rotate(None, idk(5, 1), 100, None, vec![]);
        assert!(!r.refresh_due(100 - REFRESH_LEAD_SECS - 1));
        assert!(r.refresh_due(100 - REFRESH_LEAD_SECS));
        assert!(r.refresh_due(100));
        assert!(r.issuing(100 + ISSUE_GRACE_SECS - 1).is_some());
        assert!(r.issuing(100 + ISSUE_GRACE_SECS).is_none());
        let far = KeyRing::rotate(None, idk(5, 1), u64::MAX, None, vec![]);
        assert!(far.issuing(u64::MAX - 1).is_some());
    }

    #[test]
    fn key_response_parses_and_errors_do_not_quote_the_key() {
        let body = br#"{"keyId":7,"key":"0101010101010101010101010101010101010101010101010101010101010101","notAfter":99}"#;
        let a = parse_key_response(body).unwrap();
        assert_eq!((a.current.key_id, a.not_after, a.previous), (7, 99, None));
        assert_eq!(a.current.key, ChallengeKey([1; 32]));
        let with_prev = br#"{"keyId":7,"key":"0101010101010101010101010101010101010101010101010101010101010101","notAfter":99,"previous":{"keyId":6,"key":"0202020202020202020202020202020202020202020202020202020202020202"}}"#;
        let a = parse_key_response(with_prev).unwrap();
        assert_eq!(a.previous, Some(idk(6, 2)));
        let wrong_prev = br#"{"keyId":7,"key":"0101010101010101010101010101010101010101010101010101010101010101","notAfter":99,"previous":{"keyId":5,"key":"0202020202020202020202020202020202020202020202020202020202020202"}}"#;
        assert!(parse_key_response(wrong_prev).is_err());
        let bad = br#"{"keyId":7,"key":"secretsecret","notAfter":99}"#;
        let e = parse_key_response(bad).unwrap_err();
        assert!(!e.contains("secret"));
        for b in [
            &b""[..],
            b"{}",
            b"[]",
            br#"{"keyId":-1,"key":"00","notAfter":1}"#,
        ] {
            assert!(parse_key_response(b).is_err());
        }
    }

    #[test]
    fn leases() {
        assert!(!lease_held(None, 5));
        assert!(!lease_held(Some(&encode_lease(5)), 5));
        assert!(lease_held(Some(&encode_lease(6)), 5));
        assert!(!lease_held(Some(b"junk"), 5));
    }

    proptest::proptest! {
        #[test]
        fn decode_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let _ = KeyRing::decode(&bytes);
            let _ = parse_key_response(&bytes);
        }
    }
}
