//! Paying with a new signed block: the cheapest acceptable offer, a send built on our head,
//! journalled *before* it is sent, then presented.

use serde_json::json;

use super::journalled::PayAnew;
use super::present::Presented;
use super::{PaidResponse, Payer, Progress, RequestSpec};
use crate::error::PayError;
use crate::journal::JournalEntry;
use crate::offer::{select_offer, Challenge, Offer};
use crate::pass::{select_pass, signed_pass_offer};
use crate::payment::SignedPayment;

impl Payer {
    /// Signs, journals and presents a new block for `challenge` (or for the fresher challenge
    /// of a refused re-presentation, building on what it says).
    pub(super) async fn pay_signed(
        &self,
        req: &RequestSpec,
        key: &str,
        url: &reqwest::Url,
        challenge: Challenge,
        anew: PayAnew,
    ) -> Result<PaidResponse, PayError> {
        let challenge = anew.challenge.unwrap_or(challenge);
        let offer = self.choose_offer(&challenge, url)?;
        let (info, work) = self.prepare_send(&offer, anew.snapshot).await?;
        let default_resource = json!({ "url": url.as_str() });
        let resource = challenge.resource.as_ref().unwrap_or(&default_resource);
        let payment = SignedPayment::new(
            challenge.version,
            &offer,
            Some(resource),
            challenge.extensions.as_ref(),
            &info,
            &self.config.key,
            work,
        )?;
        let ours = self.journal_new(req, key, url, &payment, anew.superseded)?;
        match self.present(req, key, &payment, &ours, false).await? {
            Presented::Served(resp) => Ok(*resp),
            Presented::Refused { reason, status, .. } => Err(PayError::Refused {
                reason,
                status,
                hash: Some(payment.hash().to_hex()),
            }),
        }
    }

    /// The configured pass's offer, else the cheapest offer, within the price ceiling; on
    /// none, passes on what the server said.
    fn choose_offer(&self, challenge: &Challenge, url: &reqwest::Url) -> Result<Offer, PayError> {
        let chosen = match &self.config.pass {
            Some(name) => {
                select_pass(challenge, name, self.config.max_raw, signed_pass_offer).map(|p| {
                    self.progress(Progress::Note(format!("buying pass {}", p.describe())));
                    p.offer
                })
            }
            None => select_offer(challenge, self.config.max_raw),
        };
        let offer = chosen.inspect_err(|_| {
            if let Some(err) = &challenge.error {
                self.progress(Progress::Note(format!("the server said: {err}")));
            }
        })?;
        self.progress(Progress::Challenge {
            amount: offer.amount,
            pay_to: offer.pay_to.clone(),
            url: url.to_string(),
        });
        Ok(offer)
    }

    /// Journals `payment` (with the blocks it supersedes) before it is sent; returns every
    /// hash a receipt may name for this request.
    fn journal_new(
        &self,
        req: &RequestSpec,
        key: &str,
        url: &reqwest::Url,
        payment: &SignedPayment,
        mut superseded: Vec<String>,
    ) -> Result<Vec<String>, PayError> {
        let body = req.body.as_deref().unwrap_or_default();
        let mut entry = JournalEntry::new(&req.method, url.as_str(), body, payment);
        // Same frontier, price, payee and representative give the very same block: nothing
        // to remember then.
        let new_hash = payment.hash().to_hex();
        superseded.retain(|h| !h.eq_ignore_ascii_case(&new_hash));
        superseded.dedup();
        entry.superseded = superseded;
        let ours = std::iter::once(new_hash)
            .chain(entry.superseded.iter().cloned())
            .collect();
        self.journal.put(key, entry)?;
        Ok(ours)
    }
}
