//! Issuing sessions: an unguessable id, a payee from the route's pool, a unique tagged amount
//! claimed atomically in the store, and a MAC over the terms so the filter can check a
//! presented session alone.

use super::super::{as_i64, unix_now, Engine};
use crate::store::tagged::TaggedSession;
use crate::store::StoreError;
use nanogate_protocol::challenge::{self, ChallengeStamp};
use nanogate_protocol::contract::{Mechanism, Offer, Payee};
use nanogate_protocol::hex;
use nanogate_protocol::nano::PublicKey;
use std::time::Instant;

/// A request for pre-issued sessions (the filter's `POST /v1/sessions`).
#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub count: usize,
    /// What the sessions are for: the MAC's resource (the filter's route scope, or a pass scope
    /// for a tagged route's pass pool: docs/passes.md).
    pub scope: String,
    /// The route's price in raw.
    pub price: u128,
    pub pay_to: Vec<PublicKey>,
    pub validity_secs: u64,
}

/// One issued session, as the filter puts it in a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedSession {
    pub id: String,
    pub pay_to: PublicKey,
    pub amount: u128,
    pub tag: u128,
    pub valid_before: u64,
    pub key_id: u64,
    pub mac: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The pool account for a session: deterministic in the id, uniform over the pool.
pub fn pool_index(id: &[u8; 16], pool_len: usize) -> usize {
    // The id is 128 random bits: its first 8 bytes are already uniform.
    let mut n = [0u8; 8];
    n.copy_from_slice(&id[..8]);
    if pool_len == 0 {
        0
    } else {
        (u64::from_be_bytes(n) % pool_len as u64) as usize
    }
}

/// When a session issued at `now` under the key whose period ends at `key_not_after` expires:
/// after `validity_secs`, but never later than the end of the **next** key period. A key id is
/// honoured while it is the current or the previous one, so a session clamped this way is
/// verifiable (here and by the filter) for its whole life; a longer validity would let the
/// wallet pay for a session that the key ring refuses before it expires. A session thus lives
/// at least one rotation period (`key_rotation_secs`) and at most two.
pub fn session_valid_before(
    now: u64,
    validity_secs: u64,
    key_not_after: u64,
    rotation_secs: u64,
) -> u64 {
    now.saturating_add(validity_secs)
        .min(key_not_after.saturating_add(rotation_secs))
}

impl Engine {
    /// Issues up to `req.count` sessions (fewer when the tag space of an account is crowded).
    pub async fn issue_sessions(
        &self,
        req: &SessionRequest,
    ) -> Result<Vec<IssuedSession>, IssueError> {
        let st = &self.tagged.settings;
        if req.pay_to.is_empty() || req.pay_to.len() > st.max_pool {
            return Err(IssueError::Invalid(format!(
                "payTo must list 1 to {} accounts",
                st.max_pool
            )));
        }
        if req.price == 0 || req.scope.is_empty() || req.scope.len() > 512 {
            return Err(IssueError::Invalid(
                "a positive price and a scope are required".into(),
            ));
        }
        if req.validity_secs == 0 || req.validity_secs > st.max_validity_secs {
            return Err(IssueError::Invalid(format!(
                "validity must be 1 to {} seconds",
                st.max_validity_secs
            )));
        }
        let count = req.count.min(st.max_batch);
        let now = unix_now();
        let key = self.keys.current(now);
        let valid_before = session_valid_before(
            now,
            req.validity_secs,
            key.not_after,
            self.keys.rotation_secs(),
        );
        let mut out = Vec::with_capacity(count);
        for k in &req.pay_to {
            self.watch_pool(*k);
        }
        for _ in 0..count {
            let id_bytes: [u8; 16] = rand::random();
            let pay_to = req.pay_to[pool_index(&id_bytes, req.pay_to.len())];
            let id = hex::encode_lower(&id_bytes);
            let mut issued = None;
            // A few tries: a collision means another open session holds that amount.
            for _ in 0..8 {
                let tag = u128::from(rand::random::<u64>() % st.tag_space.max(1)) + 1;
                let Some(amount) = req.price.checked_add(tag) else {
                    break;
                };
                let s = TaggedSession {
                    id: id.clone(),
                    pay_to: pay_to.to_hex(),
                    amount: amount.to_string(),
                    scope: req.scope.clone(),
                    issued_at: as_i64(now),
                    valid_before: as_i64(valid_before),
                    paid_hash: None,
                    paid_at: None,
                    consumed_hash: None,
                    keep_until: as_i64(valid_before.saturating_add(st.retention_secs)),
                };
                let t = Instant::now();
                let ok = self.store.issue_session(&s, as_i64(now)).await;
                self.metrics.store_op("issue_session", t.elapsed());
                if ok? {
                    issued = Some((amount, tag));
                    break;
                }
            }
            let Some((amount, tag)) = issued else {
                continue;
            };
            let payee = Payee::from_key(pay_to);
            let offer = Offer {
                network: &self.cfg.network,
                pay_to: &payee,
                amount,
                max_timeout_seconds: req.validity_secs,
                resource: &req.scope,
                mechanism: Mechanism::TaggedSession,
            };
            let stamp = ChallengeStamp {
                valid_before,
                nonce: id_bytes,
                key_id: key.key_id,
            };
            let mac = challenge::mac(&key.key, &offer.terms(), &stamp);
            out.push(IssuedSession {
                id,
                pay_to,
                amount,
                tag,
                valid_before,
                key_id: key.key_id,
                mac: hex::encode_lower(&mac),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_index_is_deterministic_and_spreads_over_the_pool() {
        let mut counts = [0usize; 3];
        for i in 0..3000u32 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(
                &nanogate_protocol::nano::work::difficulty(&[i as u8; 32], u64::from(i))
                    .to_be_bytes(),
            );
            let k = pool_index(&id, 3);
            assert_eq!(k, pool_index(&id, 3));
            counts[k] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        assert_eq!(pool_index(&[9; 16], 1), 0);
        assert_eq!(pool_index(&[9; 16], 0), 0);
    }

    #[test]
    fn a_session_never_outlives_the_keys_that_verify_it() {
        let keys = crate::keys::ChallengeKeys::new(b"0123456789abcdef".to_vec(), 300);
        for now in [3_000u64, 3_001, 3_150, 3_299] {
            for validity in [1u64, 299, 300, 301, 600, 3_600] {
                let k = keys.current(now);
                let vb = session_valid_before(now, validity, k.not_after, 300);
                assert!(vb <= now + validity);
                assert!(vb > now, "a session is valid for a while");
                // Its key is honoured up to its last valid second.
                assert!(
                    keys.honoured(k.key_id, vb - 1).is_some(),
                    "{now} {validity}"
                );
                // A validity of one rotation period is never shortened.
                if validity <= 300 {
                    assert_eq!(vb, now + validity);
                }
            }
        }
    }
}
