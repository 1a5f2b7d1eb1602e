//! A tagged route's pool of pre-issued sessions in proxy-wasm shared data: one line per session
//! under the route's key (`TaggedTerms::key`), taken ([`pop`]) by a 402 and refilled ([`push`])
//! by [`crate::refill`], both with compare-and-swap, since every worker's VM shares the store
//! ([`SharedData`]).

use crate::config::Price;
use crate::jsontext::push_num;
use crate::keys::KeyRing;

/// Shared-data access, as both the root and the request contexts have it.
pub trait SharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Compare-and-set; `false` on a CAS mismatch or failure.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Most sessions kept per route.
pub const MAX_POOL: usize = 64;

/// A pre-issued session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// 32 lower-hex characters: the session id and the challenge nonce.
    pub id: String,
    pub pay_to: String,
    pub amount: u128,
    pub valid_before: u64,
    pub key_id: u64,
    pub mac: String,
}

impl Session {
    /// The session's line in the pool: `<id> <payTo> <amount> <validBefore> <keyId> <mac>`.
    fn line(&self, out: &mut String) {
        out.push_str(&self.id);
        out.push(' ');
        out.push_str(&self.pay_to);
        out.push(' ');
        push_num(out, self.amount);
        out.push(' ');
        push_num(out, u128::from(self.valid_before));
        out.push(' ');
        push_num(out, u128::from(self.key_id));
        out.push(' ');
        out.push_str(&self.mac);
        out.push('\n');
    }

    fn parse_line(line: &str) -> Option<Session> {
        let mut it = line.split(' ');
        let s = Session {
            id: it.next()?.to_owned(),
            pay_to: it.next()?.to_owned(),
            amount: it.next()?.parse().ok()?,
            valid_before: it.next()?.parse().ok()?,
            key_id: it.next()?.parse().ok()?,
            mac: it.next()?.to_owned(),
        };
        (s.id.len() == 32 && s.mac.len() == 64).then_some(s)
    }
}

/// The sessions of a pool value that still have `min_left` seconds of validity at `now`.
pub fn decode_pool(bytes: &[u8], now: u64, min_left: u64) -> Vec<Session> {
    std::str::from_utf8(bytes)
        .unwrap_or("")
        .lines()
        .filter_map(Session::parse_line)
        .filter(|s| s.valid_before >= now.saturating_add(min_left))
        .collect()
}

fn encode_pool(sessions: &[Session]) -> Vec<u8> {
    let mut out = String::with_capacity(sessions.len() * 180);
    for s in sessions {
        s.line(&mut out);
    }
    out.into_bytes()
}

/// How long a pooled session must still be valid to be handed out: half the route's validity.
pub fn min_left(price: &Price) -> u64 {
    (price.max_timeout_secs / 2).max(1)
}

/// Takes one usable session from the pool, with CAS retries. Stale sessions, and sessions
/// whose key `ring` no longer holds (the payer could pay, but this filter would refuse the
/// presentation), are dropped on the way.
pub fn pop(
    sh: &mut dyn SharedData,
    key: &str,
    now: u64,
    min_left: u64,
    ring: &KeyRing,
) -> Option<Session> {
    for _ in 0..4 {
        let (bytes, cas) = sh.get(key);
        let mut sessions = decode_pool(bytes.as_deref().unwrap_or_default(), now, min_left);
        sessions.retain(|s| ring.for_id(s.key_id).is_some());
        if sessions.is_empty() {
            if bytes.is_some_and(|b| !b.is_empty()) {
                let _ = sh.set(key, b"", cas);
            }
            return None;
        }
        let first = sessions.remove(0);
        if sh.set(key, &encode_pool(&sessions), cas) {
            return Some(first);
        }
    }
    None
}

/// Adds sessions to the pool (deduplicated, capped), with CAS retries.
pub fn push(sh: &mut dyn SharedData, key: &str, new: &[Session], now: u64, min_left: u64) -> bool {
    for _ in 0..4 {
        let (bytes, cas) = sh.get(key);
        let mut sessions = decode_pool(bytes.as_deref().unwrap_or_default(), now, min_left);
        for s in new {
            if s.valid_before >= now.saturating_add(min_left)
                && !sessions.iter().any(|o| o.id == s.id)
            {
                sessions.push(s.clone());
            }
        }
        sessions.truncate(MAX_POOL);
        if sh.set(key, &encode_pool(&sessions), cas) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::MemShared;

    fn session(n: u8, valid_before: u64) -> Session {
        Session {
            id: format!("{:032x}", n),
            pay_to: "nano_1abc".into(),
            amount: 1000 + u128::from(n),
            valid_before,
            key_id: 7,
            mac: "ab".repeat(32),
        }
    }

    #[test]
    fn pool_pops_each_session_once_and_drops_stale_ones() {
        let mut m = MemShared::default();
        let fresh: Vec<Session> = (1..=3).map(|n| session(n, 1_000)).collect();
        assert!(push(&mut m, "k", &fresh, 100, 10));
        assert!(push(
            &mut m,
            "k",
            &[session(1, 1_000), session(9, 105)],
            100,
            10
        ));
        // Duplicate id 1 ignored; session 9 has less than 10 s left.
        let mut got = Vec::new();
        m.fail_next = 1;
        let ring = crate::tests_support::ring(7, 10_000);
        while let Some(s) = pop(&mut m, "k", 100, 10, &ring) {
            got.push(s.id);
        }
        assert_eq!(got.len(), 3);
        got.dedup();
        assert_eq!(got.len(), 3);
        assert_eq!(pop(&mut m, "k", 100, 10, &ring), None);
        // Past their validity, pooled sessions are never handed out.
        assert!(push(&mut m, "k", &fresh, 100, 10));
        assert_eq!(pop(&mut m, "k", 995, 10, &ring), None);
        // Nor sessions whose key this filter no longer holds (it would refuse them after
        // the payer paid): they are dropped from the pool.
        assert!(push(&mut m, "k", &fresh, 100, 10));
        let rotated = crate::tests_support::ring(9, 10_000);
        assert_eq!(pop(&mut m, "k", 100, 10, &rotated), None);
        assert_eq!(pop(&mut m, "k", 100, 10, &ring), None, "dropped, not kept");
    }

    #[test]
    fn garbage_in_shared_data_is_ignored() {
        assert!(decode_pool(b"\xff\xfe garbage\n1 2 3", 0, 0).is_empty());
        let s = vec![session(1, 50), session(2, 60)];
        assert_eq!(decode_pool(&encode_pool(&s), 0, 0), s);
    }
}
