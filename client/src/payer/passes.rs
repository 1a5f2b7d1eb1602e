//! `--pass NAME`: request on a held pass token; when the server refuses it because it is used
//! up or expired, forget it and buy the next; keep a bought pass's token in the journal.
//!
//! Which token goes with a request: the held passes of that name for the request's origin
//! (scheme, host, port: a token is never sent to another server), locally expired ones
//! dropped, the most recently bought first. A server with several pass groups answers a token
//! of another group with `pass_wrong_group` and a 402 whose pass offer names the route's
//! group: the held pass of that group is presented next, if any, else one is bought. So each
//! request costs at most one extra round trip per group held, and a purchase only when no held
//! pass fits.

use nanogate_protocol::contract::pass::HEADER;
use nanogate_protocol::x402::{headers, SettlementResponse};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{PaidResponse, PassUse, Payer, Progress, RequestSpec};
use crate::error::PayError;
use crate::journal::{origin_of, PassEntry};
use crate::offer::parse_challenge;
use crate::pass::{action_for, issued_pass, offered_groups, refusal_of, RefusalAction};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Payer {
    /// One request under `--pass name`: on a held token if one fits, else buying the pass.
    pub(super) async fn fetch_on_pass(
        &self,
        req: &RequestSpec,
        url: &reqwest::Url,
        key: &str,
        name: &str,
    ) -> Result<PaidResponse, PayError> {
        let origin = origin_of(url);
        let now = unix_now();
        let mut held = Vec::new();
        for p in self.journal.passes(&origin, name)? {
            if p.expired(now) {
                self.journal.drop_pass(&p.journal_key(), &p.token)?;
                self.progress(Progress::Note(format!(
                    "pass `{name}` (id {}) has expired: forgetting it",
                    p.fingerprint()
                )));
            } else {
                held.push(p);
            }
        }
        let mut next = held.first().cloned();
        let mut tried: Vec<String> = Vec::new();
        loop {
            let presented = next.take();
            let header = presented.as_ref().map(|p| {
                self.progress(Progress::OnPass {
                    name: name.to_owned(),
                    id: p.fingerprint(),
                });
                tried.push(p.token.clone());
                (HEADER, p.token.clone())
            });
            let resp = self
                .send(req, header)
                .await
                .map_err(|message| PayError::Http {
                    message,
                    hash: None,
                })?;
            if resp.status != 402 {
                return Ok(match presented {
                    Some(p) => PaidResponse::on_pass(resp, PassUse::of(&p, false)),
                    None => PaidResponse::unpaid(resp),
                });
            }
            let challenge = parse_challenge(resp.header(headers::PAYMENT_REQUIRED), &resp.body)?;
            if let Some(p) = &presented {
                self.after_pass_refused(p, refusal_of(&challenge))?;
            }
            // The group this route sells the pass for decides which held token fits. If the
            // route does not sell it, buying below says what it sells instead.
            let groups = offered_groups(&challenge, name);
            next = held
                .iter()
                .find(|p| groups.contains(&p.group) && !tried.contains(&p.token))
                .cloned();
            if next.is_none() {
                return self.pay(req, url, key, challenge).await;
            }
        }
    }

    /// What a refused token means: used up or expired → forget it (the caller buys the next);
    /// another group → keep it; revoked, forged or unreadable → forget it and stop; a key the
    /// proxy lacks → keep it and stop.
    fn after_pass_refused(
        &self,
        pass: &PassEntry,
        refusal: Option<nanogate_protocol::contract::pass::PassRefusal>,
    ) -> Result<(), PayError> {
        let Some(refusal) = refusal else {
            // The 402 is not about the token (this route sells no pass, or did not read it):
            // keep it for the routes that do.
            self.progress(Progress::Note(format!(
                "the server did not take pass `{}` here (id {})",
                pass.name,
                pass.fingerprint()
            )));
            return Ok(());
        };
        let action = action_for(refusal);
        let forget = matches!(action, RefusalAction::Replace | RefusalAction::Forget);
        if forget {
            self.journal.drop_pass(&pass.journal_key(), &pass.token)?;
        }
        match action {
            RefusalAction::Replace => {
                self.progress(Progress::Note(format!(
                    "pass `{}` (id {}) is {}: buying the next",
                    pass.name,
                    pass.fingerprint(),
                    refusal.as_str()
                )));
                Ok(())
            }
            RefusalAction::OtherGroup => {
                self.progress(Progress::Note(format!(
                    "pass `{}` (id {}) is for group {}, not this route's",
                    pass.name,
                    pass.fingerprint(),
                    pass.group
                )));
                Ok(())
            }
            RefusalAction::Forget | RefusalAction::Keep => Err(PayError::PassRefused {
                name: pass.name.clone(),
                id: pass.fingerprint(),
                reason: refusal.error().to_owned(),
                forgotten: forget,
            }),
        }
    }

    /// After a paid request was served with a receipt naming our block: keeps the pass the
    /// receipt carries (forgetting the journalled payment `key`, `hash` in the same write).
    /// `None` when there is none to keep (the caller then forgets the payment alone).
    pub(super) fn keep_bought_pass(
        &self,
        req: &RequestSpec,
        key: &str,
        hash: &str,
        amount: u128,
        receipt: Option<&SettlementResponse>,
    ) -> Result<Option<PassUse>, PayError> {
        let issued = match receipt.and_then(issued_pass) {
            Some(Ok(p)) => p,
            Some(Err(why)) => {
                self.progress(Progress::Note(format!(
                    "warning: the receipt's pass cannot be kept: {why}"
                )));
                return Ok(None);
            }
            None => {
                if let Some(name) = &self.config.pass {
                    self.progress(Progress::Note(format!(
                        "warning: paid for pass `{name}` but the receipt carries no pass token"
                    )));
                }
                return Ok(None);
            }
        };
        let url = reqwest::Url::parse(&req.url)
            .map_err(|e| PayError::InvalidRequest(format!("URL `{}`: {e}", req.url)))?;
        if self.config.pass.as_deref() != Some(issued.name.as_str()) {
            self.progress(Progress::Note(format!(
                "note: the server sold pass `{}`, keeping it under that name",
                issued.name
            )));
        }
        let entry = PassEntry {
            origin: origin_of(&url),
            group: issued.group,
            name: issued.name,
            token: issued.token,
            id: Some(issued.id),
            expires_at: Some(issued.expires_at),
            requests: issued.requests.map(u64::from),
            hash: hash.to_ascii_uppercase(),
            amount_raw: amount.to_string(),
            bought_at: unix_now(),
        };
        self.journal.keep_pass(key, hash, entry.clone())?;
        self.progress(Progress::PassKept {
            name: entry.name.clone(),
            group: entry.group.clone(),
            id: entry.fingerprint(),
            expires_in: entry.expires_at.map(|e| e.saturating_sub(unix_now())),
            requests: entry.requests,
        });
        Ok(Some(PassUse::of(&entry, true)))
    }
}
