//! The rotating challenge key (docs/filter-sidecar.md): `key(k)` derived from the master
//! secret for key id `k = unix_time / rotation_secs`. Only the current and the previous key id
//! are honoured for payments. Older ("retired") keys authenticate expired challenges only, so a
//! payment settled under one can still be redeemed (docs/payments.md); they never admit a fresh
//! payment. Neither the master secret nor a derived key is ever logged.

use nanogate_protocol::challenge::{key_id_at, ChallengeKey};

pub struct ChallengeKeys {
    master: Vec<u8>,
    rotation_secs: u64,
}

impl std::fmt::Debug for ChallengeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeKeys")
            .field("master", &"<redacted>")
            .field("rotation_secs", &self.rotation_secs)
            .finish()
    }
}

/// The key the filter should use now.
#[derive(Debug, Clone)]
pub struct CurrentKey {
    pub key_id: u64,
    pub key: ChallengeKey,
    /// End of the key's period: the filter must have fetched the next key by then.
    pub not_after: u64,
}

impl ChallengeKeys {
    pub fn new(master: Vec<u8>, rotation_secs: u64) -> Self {
        ChallengeKeys {
            master,
            rotation_secs: rotation_secs.max(1),
        }
    }

    pub fn rotation_secs(&self) -> u64 {
        self.rotation_secs
    }

    pub fn current(&self, now: u64) -> CurrentKey {
        let key_id = key_id_at(now, self.rotation_secs);
        CurrentKey {
            key_id,
            key: ChallengeKey::derive(&self.master, key_id),
            not_after: key_id.saturating_add(1).saturating_mul(self.rotation_secs),
        }
    }

    /// The previous key at `now` (still honoured), if there is one.
    pub fn previous(&self, now: u64) -> Option<CurrentKey> {
        let key_id = key_id_at(now, self.rotation_secs).checked_sub(1)?;
        Some(CurrentKey {
            key_id,
            key: ChallengeKey::derive(&self.master, key_id),
            not_after: key_id.saturating_add(1).saturating_mul(self.rotation_secs),
        })
    }

    /// The key for `key_id` if it is the current or the previous one at `now`.
    pub fn honoured(&self, key_id: u64, now: u64) -> Option<ChallengeKey> {
        let current = key_id_at(now, self.rotation_secs);
        (key_id == current || key_id.checked_add(1) == Some(current))
            .then(|| ChallengeKey::derive(&self.master, key_id))
    }
}

/// At most this many retired keys are handed to the filter (about 15 with the default 300 s
/// rotation; the filter keeps 16); a very short rotation period lists only the newest ones.
pub const MAX_RETIRED_KEYS: usize = 16;

impl ChallengeKeys {
    /// The retired keys at `now`: older than the previous one, but whose period ended less
    /// than `horizon_secs` ago, so a challenge issued under one may still have a redeemable
    /// payment. Newest first, at most [`MAX_RETIRED_KEYS`].
    pub fn retired(&self, now: u64, horizon_secs: u64) -> Vec<CurrentKey> {
        let current = key_id_at(now, self.rotation_secs);
        let mut out = Vec::new();
        let mut k = current.saturating_sub(2);
        while current >= 2
            && out.len() < MAX_RETIRED_KEYS
            && self.retired_in_horizon(k, now, horizon_secs)
        {
            out.push(CurrentKey {
                key_id: k,
                key: ChallengeKey::derive(&self.master, k),
                not_after: k.saturating_add(1).saturating_mul(self.rotation_secs),
            });
            if k == 0 {
                break;
            }
            k -= 1;
        }
        out
    }

    /// The key for `key_id` if it is current, previous or retired within `horizon_secs` at
    /// `now`: for authenticating an expired challenge only.
    pub fn honoured_for_redemption(
        &self,
        key_id: u64,
        now: u64,
        horizon_secs: u64,
    ) -> Option<ChallengeKey> {
        let current = key_id_at(now, self.rotation_secs);
        (key_id <= current && self.retired_in_horizon(key_id, now, horizon_secs))
            .then(|| ChallengeKey::derive(&self.master, key_id))
    }

    fn retired_in_horizon(&self, key_id: u64, now: u64, horizon_secs: u64) -> bool {
        let end = key_id.saturating_add(1).saturating_mul(self.rotation_secs);
        end.saturating_add(horizon_secs) > now
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_current_and_previous_keys_are_honoured() {
        let k = ChallengeKeys::new(b"0123456789abcdef".to_vec(), 100);
        let cur = k.current(1_050);
        assert_eq!(cur.key_id, 10);
        assert_eq!(cur.not_after, 1_100);
        assert!(k.honoured(10, 1_050).is_some());
        assert!(k.honoured(9, 1_050).is_some());
        assert!(k.honoured(8, 1_050).is_none());
        assert!(k.honoured(11, 1_050).is_none());
        assert_eq!(k.honoured(10, 1_050), Some(cur.key));
        let prev = k.previous(1_050).unwrap();
        assert_eq!(prev.key_id, 9);
        assert_eq!(k.honoured(9, 1_050), Some(prev.key));
        assert!(k.previous(50).is_none());
        assert!(format!("{k:?}").contains("redacted"));
    }

    #[test]
    fn retired_keys_reach_back_exactly_the_horizon_and_never_forward() {
        let k = ChallengeKeys::new(b"0123456789abcdef".to_vec(), 100);
        // At 1_050 (key 10), a 250 s horizon covers keys whose period ended after 800: 8, 9, 10
        // honoured for redemption, 7 (ended at 800) not; retired lists only those older than
        // the previous key (9).
        let retired: Vec<u64> = k.retired(1_050, 250).iter().map(|r| r.key_id).collect();
        assert_eq!(retired, vec![8]);
        assert!(k.honoured_for_redemption(8, 1_050, 250).is_some());
        assert!(k.honoured_for_redemption(10, 1_050, 250).is_some());
        assert!(k.honoured_for_redemption(7, 1_050, 250).is_none());
        assert!(k.honoured_for_redemption(11, 1_050, 250).is_none());
        // Retired keys are never honoured for fresh payments.
        assert!(k.honoured(8, 1_050).is_none());
        assert!(k.retired(150, 10_000).is_empty());
        // A short rotation period: only the newest keys are listed.
        let short = ChallengeKeys::new(b"0123456789abcdef".to_vec(), 3);
        assert_eq!(short.retired(1_000_000, 4_260).len(), MAX_RETIRED_KEYS);
    }
}
