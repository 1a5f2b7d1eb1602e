//! Prepaid passes, the sidecar's half (docs/passes.md): the pass keys, recording a bought pass
//! and minting its token, and the filters' usage reports.

use crate::engine::Admission;
use crate::store::passes::{NewPass, PassRecord};
use crate::store::{Store, StoreError};
use nanogate_protocol::contract::pass::{
    pass_key_id_at, published_key_ids, PassCount, PassIssued, PassKey, PassKeyEntry, PassTerms,
    PassToken, PassUsageAnswer, PassUsageRequest, EXTENSION_PASS, MAX_USAGE_ENTRIES,
};
use nanogate_protocol::hex;
use nanogate_protocol::x402::SettlementResponse;

/// The pass keys, derived from the challenge secret (under their own domain). Never logged.
pub struct PassKeys {
    master: Vec<u8>,
    rotation_secs: u64,
}

impl std::fmt::Debug for PassKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassKeys")
            .field("master", &"<redacted>")
            .field("rotation_secs", &self.rotation_secs)
            .finish()
    }
}

impl PassKeys {
    pub fn new(master: Vec<u8>, rotation_secs: u64) -> PassKeys {
        PassKeys {
            master,
            rotation_secs: rotation_secs.max(1),
        }
    }

    /// The keys `/v1/challenge-key` lists at `now`, newest first.
    pub fn published(&self, now: u64) -> Vec<PassKeyEntry> {
        published_key_ids(now, self.rotation_secs)
            .into_iter()
            .map(|key_id| PassKeyEntry {
                key_id,
                key: PassKey::derive(&self.master, key_id),
            })
            .collect()
    }

    /// The token of a recorded pass, under the key it was minted with.
    fn token(&self, r: &NewPass) -> Result<String, StoreError> {
        let bad = || StoreError::Query("a recorded pass has an unreadable field".into());
        let key_id = u64::try_from(r.key_id).map_err(|_| bad())?;
        let token = PassToken {
            key_id,
            id: hex::decode_array::<16>(&r.id).map_err(|_| bad())?,
            expires_at: u64::try_from(r.expires_at).map_err(|_| bad())?,
            requests: r
                .requests_granted
                .map_or(Ok(0), u32::try_from)
                .map_err(|_| bad())?,
            group: r.group.clone(),
        };
        Ok(token.mint(&PassKey::derive(&self.master, key_id)))
    }

    /// Records the pass `terms` that `admission` paid for (once per payment: a redemption gets
    /// the same pass) and returns it with its token.
    pub async fn issue(
        &self,
        store: &dyn Store,
        terms: &PassTerms,
        admission: &Admission,
        now: u64,
    ) -> Result<PassIssued, StoreError> {
        let tx = admission.transaction.to_hex();
        let new = NewPass {
            id: hex::encode_lower(&rand::random::<[u8; 16]>()),
            payment: format!("{}:{tx}", admission.settlement.network),
            name: terms.name.clone(),
            group: terms.group.clone(),
            payer: admission.payer.clone(),
            transaction: tx,
            key_id: as_i64(pass_key_id_at(now, self.rotation_secs)),
            created_at: as_i64(now),
            expires_at: as_i64(now.saturating_add(terms.seconds)),
            requests_granted: terms.requests.map(i64::from),
        };
        let r: PassRecord = store.record_pass(&new).await?;
        Ok(PassIssued {
            token: self.token(&r.pass)?,
            id: r.pass.id.clone(),
            name: r.pass.name.clone(),
            group: r.pass.group.clone(),
            expires_at: u64::try_from(r.pass.expires_at).unwrap_or(0),
            requests: r.pass.requests_granted.and_then(|n| u32::try_from(n).ok()),
        })
    }
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `PAYMENT-RESPONSE` with the bought pass in `extensions.pass`.
pub fn with_pass(settlement: &SettlementResponse, pass: &PassIssued) -> SettlementResponse {
    let mut s = settlement.clone();
    let ext = s.extensions.get_or_insert_with(Default::default);
    ext.insert(
        EXTENSION_PASS.into(),
        serde_json::to_value(pass).unwrap_or_default(),
    );
    s
}

/// Applies one VM's usage report: records each running total and answers the passes' totals
/// and the passes to refuse, with how many requests the report added (for the metrics).
/// Malformed ids and zero counts are skipped; unknown ids are not in `totals`. The caller has
/// checked `report.vm` (`contract::pass::is_vm_id`).
pub async fn report_usage(
    store: &dyn Store,
    report: &PassUsageRequest,
    now: u64,
) -> Result<(PassUsageAnswer, u64), StoreError> {
    let now = as_i64(now);
    let mut totals = Vec::new();
    let mut added = 0u64;
    for c in report.counts.iter().take(MAX_USAGE_ENTRIES) {
        let id = c.id.to_ascii_lowercase();
        if hex::decode_array::<16>(&id).is_err() || c.seen == 0 {
            continue;
        }
        if let Some((total, more)) = store
            .add_pass_usage(&id, &report.vm, as_i64(c.seen), now)
            .await?
        {
            added += u64::try_from(more).unwrap_or(0);
            totals.push(PassCount {
                id,
                used: u64::try_from(total).unwrap_or(0),
            });
        }
    }
    let (exhausted, revoked) = store.refused_passes(now, MAX_USAGE_ENTRIES as i64).await?;
    Ok((
        PassUsageAnswer {
            totals,
            exhausted,
            revoked,
        },
        added,
    ))
}
