//! The paid retry of a signed block: send it, sort the answer into served or refused, and
//! decide the journal entry's fate (removed only after a 2xx whose receipt names our block).

use nanogate_protocol::x402::{headers, SettlementResponse};

use super::http::RawResponse;
use super::response::names_ours;
use super::{PaidResponse, PassUse, Payer, PaymentInfo, Progress, RequestSpec};
use crate::error::PayError;
use crate::offer::{parse_challenge, Challenge};
use crate::payment::SignedPayment;

/// How the server took a presented payment.
pub(super) enum Presented {
    /// Anything but a refusal: the answer, whatever its status.
    Served(Box<PaidResponse>),
    /// A 402 or 400: why, and the fresh challenge when it came with one.
    Refused {
        reason: String,
        status: u16,
        challenge: Option<Challenge>,
    },
}

impl Payer {
    /// Sends the paid retry and sorts the answer into served / refused. `ours` are the hashes
    /// a receipt may name (the payment's, and any it superseded on the same frontier).
    pub(super) async fn present(
        &self,
        req: &RequestSpec,
        key: &str,
        payment: &SignedPayment,
        ours: &[String],
        re_presented: bool,
    ) -> Result<Presented, PayError> {
        let hash = payment.hash().to_hex();
        if !re_presented {
            self.progress(Progress::Paying { hash: hash.clone() });
        }
        let resp = self
            .send(req, Some((payment.header_name(), payment.header_value())))
            .await
            .map_err(|message| PayError::Http {
                message,
                hash: Some(hash.clone()),
            })?;
        let receipt = resp.receipt();
        if resp.is_refusal() {
            return Ok(refusal(&resp, receipt));
        }
        let receipt = self.readable(receipt);
        let matches = names_ours(receipt.as_ref(), ours);
        let pass = self.settle_journal(
            req,
            key,
            &hash,
            payment.amount,
            &resp,
            receipt.as_ref(),
            matches,
        )?;
        let info = PaymentInfo {
            hash,
            amount_raw: payment.amount,
            network: payment.network.clone(),
            pay_to: payment.pay_to.clone(),
            payer: payment.block.account.to_address(),
            re_presented,
        };
        let mut paid = PaidResponse::paid(resp, receipt, info, matches);
        paid.pass = pass;
        Ok(Presented::Served(Box::new(paid)))
    }

    /// The receipt, or a note saying why it could not be read.
    fn readable(
        &self,
        receipt: Option<Result<SettlementResponse, String>>,
    ) -> Option<SettlementResponse> {
        match receipt {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                self.progress(Progress::Note(format!("unreadable PAYMENT-RESPONSE: {e}")));
                None
            }
            None => None,
        }
    }

    /// Forgets the journal entry once served with a receipt naming our block (keeping the
    /// pass it bought, in the same write); otherwise keeps it (so that retrying re-presents
    /// it) and says why.
    #[allow(clippy::too_many_arguments)]
    fn settle_journal(
        &self,
        req: &RequestSpec,
        key: &str,
        hash: &str,
        amount: u128,
        resp: &RawResponse,
        receipt: Option<&SettlementResponse>,
        matches: bool,
    ) -> Result<Option<PassUse>, PayError> {
        let note = match (resp.is_success(), receipt) {
            (true, _) if matches => {
                self.progress(Progress::Confirmed {
                    hash: hash.to_owned(),
                });
                let pass = self.keep_bought_pass(req, key, hash, amount, receipt)?;
                if pass.is_none() {
                    self.journal.remove(key, hash)?;
                }
                return Ok(pass);
            }
            (true, Some(r)) => format!(
                "warning: the receipt names `{}`, not our block {hash}; keeping it journalled",
                r.transaction
            ),
            (true, None) => {
                format!("warning: served without a PAYMENT-RESPONSE; keeping {hash} journalled")
            }
            (false, _) => format!(
                "HTTP {} after paying: payment {hash} stays journalled; retrying the same \
                 request re-presents it",
                resp.status
            ),
        };
        self.progress(Progress::Note(note));
        Ok(None)
    }
}

/// A refused payment: the receipt's reason (`code: message`), else the fresh challenge's
/// `error`, else the status.
fn refusal(resp: &RawResponse, receipt: Option<Result<SettlementResponse, String>>) -> Presented {
    let challenge = parse_challenge(resp.header(headers::PAYMENT_REQUIRED), &resp.body).ok();
    let reason = receipt
        .and_then(Result::ok)
        .and_then(|r| match (r.error_message, r.error_reason) {
            (Some(m), Some(code)) => Some(format!("{code}: {m}")),
            (Some(m), None) => Some(m),
            (None, code) => code,
        })
        .or_else(|| challenge.as_ref().and_then(|c| c.error.clone()))
        .unwrap_or_else(|| format!("HTTP {} without a reason", resp.status));
    Presented::Refused {
        reason,
        status: resp.status,
        challenge,
    }
}
