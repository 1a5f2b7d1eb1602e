//! Re-presenting a journalled payment (retry rules 2 and 3 in [`super`]): nothing new is
//! signed until the ledger has said the old block can never settle.

use nanogate_protocol::nano::BlockHash;

use super::present::Presented;
use super::{PaidResponse, Payer, Progress, RequestSpec};
use crate::error::PayError;
use crate::journal::JournalEntry;
use crate::offer::Challenge;
use crate::payment::SignedPayment;
use crate::rpc::{AccountInfo, BlockStatus};

/// How to pay anew after a refused re-presentation (all empty when nothing was journalled).
#[derive(Debug, Default)]
pub(super) struct PayAnew {
    /// The challenge the refusal came with, when readable: pay under it.
    pub challenge: Option<Challenge>,
    /// The account as read *before* asking the ledger about our blocks: build on it.
    pub snapshot: Option<AccountInfo>,
    /// Blocks signed for this request that could still settle.
    pub superseded: Vec<String>,
}

/// What re-presenting came to.
pub(super) enum Retried {
    Served(Box<PaidResponse>),
    PayAnew(Box<PayAnew>),
}

impl Payer {
    /// Presents the journalled payment for this request again; if the server refuses it,
    /// asks the ledger whether paying anew is safe.
    pub(super) async fn re_present(
        &self,
        req: &RequestSpec,
        key: &str,
        entry: JournalEntry,
    ) -> Result<Retried, PayError> {
        let payment = entry.to_payment().map_err(|why| PayError::Journal {
            path: self.journal.path().display().to_string(),
            message: format!("entry for `{key}` is unusable ({why}); inspect it by hand"),
        })?;
        self.progress(Progress::RePresenting {
            hash: payment.hash().to_hex(),
            amount: payment.amount,
        });
        let ours: Vec<String> = std::iter::once(payment.hash().to_hex())
            .chain(entry.superseded)
            .collect();
        match self.present(req, key, &payment, &ours, true).await? {
            Presented::Served(resp) => Ok(Retried::Served(resp)),
            Presented::Refused {
                reason, challenge, ..
            } => self
                .after_refusal(&payment, ours, &reason, challenge)
                .await
                .map(|anew| Retried::PayAnew(Box::new(anew))),
        }
    }

    /// Rule 3: the ledger decides. Confirmed or published → an error naming the block; never
    /// published → pay anew, on a view that keeps at most one of our blocks able to settle.
    async fn after_refusal(
        &self,
        payment: &SignedPayment,
        ours: Vec<String>,
        reason: &str,
        challenge: Option<Challenge>,
    ) -> Result<PayAnew, PayError> {
        let hash = payment.hash().to_hex();
        let info = self.ledger_verdict(payment, &ours, reason).await?;
        let moved = info.frontier != payment.block.previous;
        if moved {
            self.progress(Progress::Note(format!(
                "server refused {hash} ({reason}); the ledger never saw it and the account \
                 moved on: dropping it and paying anew"
            )));
            // The old blocks can never apply: a fresh (confirmed) view is safe.
            return Ok(PayAnew {
                challenge,
                ..PayAnew::default()
            });
        }
        if payment.block.account != self.account {
            // A block from *this* account would not conflict with the old one, which could
            // still be published.
            return Err(PayError::PaymentPending {
                hash,
                reason: format!(
                    "{reason}; it was signed by {} and could still be published, so paying \
                     from another account could pay twice",
                    payment.block.account
                ),
            });
        }
        self.progress(Progress::Note(format!(
            "server refused {hash} ({reason}); the ledger never saw it: paying anew under the \
             new challenge, on the same frontier, so at most one block can ever settle (the \
             same terms give the very same block)"
        )));
        // Still publishable by whoever holds it: remember it, so that if it ever settles we
        // report it instead of paying a third time. Build on what we read before asking about
        // the blocks, never on a later view, which could be the old block itself.
        Ok(PayAnew {
            challenge,
            snapshot: Some(info),
            superseded: ours,
        })
    }

    /// After a refused re-presentation: reads the account, then asks the ledger about every
    /// block signed for this request. Any confirmed → we paid (error, with its hash); any
    /// published → wait (error); none → returns the account as read, to build on.
    async fn ledger_verdict(
        &self,
        payment: &SignedPayment,
        ours: &[String],
        reason: &str,
    ) -> Result<AccountInfo, PayError> {
        let info = self.account_info(&payment.block.account).await?;
        for h in ours {
            let Ok(block_hash) = BlockHash::from_hex(h) else {
                continue;
            };
            match self.rpc.block_status(&block_hash).await? {
                BlockStatus::Confirmed => {
                    return Err(PayError::PaidButRefused {
                        hash: h.clone(),
                        amount: payment.amount,
                        pay_to: payment.pay_to.clone(),
                        reason: reason.to_owned(),
                    })
                }
                BlockStatus::Unconfirmed => {
                    return Err(PayError::PaymentPending {
                        hash: h.clone(),
                        reason: reason.to_owned(),
                    })
                }
                BlockStatus::NotFound => {}
            }
        }
        Ok(info)
    }
}
