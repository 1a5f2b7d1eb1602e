//! The paying account: its head block (confirmed, to build on), the work threshold for the
//! offer's network, and the work itself (from the node, else computed here).

use nanogate_protocol::nano::{Network, PublicKey, WorkThresholds};
use std::time::{Duration, Instant};

use super::{Payer, Progress};
use crate::error::PayError;
use crate::offer::{expected_node_network, thresholds_for_network, Offer};
use crate::rpc::{AccountInfo, NodeVersion};

/// How long we wait for our own head block to be confirmed before signing on it anyway.
pub const FRONTIER_CONFIRMATION_WAIT: Duration = Duration::from_secs(10);

impl Payer {
    /// Everything a new send for `offer` needs: the account state to build on (`snapshot`
    /// when the caller must build on a view it already read, else our confirmed head) and the
    /// work for it. Refuses before any work when the balance cannot cover the price.
    pub(super) async fn prepare_send(
        &self,
        offer: &Offer,
        snapshot: Option<AccountInfo>,
    ) -> Result<(AccountInfo, u64), PayError> {
        let thresholds = self.thresholds(offer).await?;
        let info = match snapshot {
            Some(i) => i,
            None => self.own_account().await?,
        };
        if info.balance < offer.amount {
            return Err(PayError::InsufficientFunds {
                account: self.account.to_address(),
                balance: info.balance,
                amount: offer.amount,
            });
        }
        self.progress(Progress::Signing {
            account: self.account.to_address(),
            frontier: info.frontier.to_hex(),
        });
        let work = self.work(info.frontier.0, thresholds.send()).await?;
        Ok((info, work))
    }

    /// The send threshold: from the node's `version` when it names a network, else from the
    /// offer's network. A node on another known network than the offer is refused.
    async fn thresholds(&self, offer: &Offer) -> Result<WorkThresholds, PayError> {
        // Cached once known; a failed `version` (old node, proxy) is asked again next time.
        let version = match self.version.get() {
            Some(v) => Some(v.clone()),
            None => match self.rpc.version().await {
                Ok(v) => {
                    let _ = self.version.set(v.clone());
                    Some(v)
                }
                Err(_) => None,
            },
        };
        choose_thresholds(
            &offer.network,
            version.as_ref().and_then(NodeVersion::network),
        )
    }

    async fn work(&self, root: [u8; 32], threshold: u64) -> Result<u64, PayError> {
        let why = if self.config.local_work {
            "--local-work".to_owned()
        } else {
            match self.rpc.work_generate(&root, threshold).await {
                Ok(w) => {
                    self.progress(Progress::WorkFromNode { threshold });
                    return Ok(w);
                }
                Err(e) => e.to_string(),
            }
        };
        self.progress(Progress::WorkLocal { threshold, why });
        let start = Instant::now();
        let work = tokio::task::spawn_blocking(move || {
            nanogate_protocol::nano::work::generate(&root, threshold)
        })
        .await
        .map_err(|e| PayError::InvalidRequest(format!("work generation failed: {e}")))?;
        self.progress(Progress::WorkDone {
            elapsed: start.elapsed(),
        });
        Ok(work)
    }

    pub(super) async fn account_info(&self, account: &PublicKey) -> Result<AccountInfo, PayError> {
        self.rpc
            .account_info(account)
            .await?
            .ok_or_else(|| PayError::AccountNotOpened {
                account: account.to_address(),
            })
    }

    /// Our account, waiting a little for its head block to be confirmed: verifiers (ours
    /// included) accept a send only on a confirmed frontier.
    async fn own_account(&self) -> Result<AccountInfo, PayError> {
        let deadline = Instant::now() + FRONTIER_CONFIRMATION_WAIT;
        let mut noted = false;
        loop {
            let state = self
                .rpc
                .account_state(&self.account)
                .await?
                .ok_or_else(|| PayError::AccountNotOpened {
                    account: self.account.to_address(),
                })?;
            if state.frontier_confirmed() || Instant::now() >= deadline {
                return Ok(state.info);
            }
            if !noted {
                self.progress(Progress::Note(format!(
                    "waiting for the account's head block {} to be confirmed",
                    state.info.frontier
                )));
                noted = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The send thresholds for an offer's network given what the node says it is on: the node's
/// network wins; a known offer network that contradicts it is refused; without the node's
/// word, the offer's network decides (unknown → live).
pub fn choose_thresholds(
    offer_network: &str,
    node: Option<Network>,
) -> Result<WorkThresholds, PayError> {
    match (expected_node_network(offer_network), node) {
        (Some(want), Some(have)) if want != have => Err(PayError::NetworkMismatch {
            offer: offer_network.to_owned(),
            node: have.rpc_name().to_owned(),
        }),
        (_, Some(have)) => Ok(have.thresholds()),
        (_, None) => Ok(thresholds_for_network(offer_network)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_network_decides_thresholds_and_contradictions_are_refused() {
        use nanogate_protocol::nano::WorkThresholds as W;
        let t = |o: &str, n| choose_thresholds(o, n).ok();
        assert_eq!(t("nano:devnet", Some(Network::Dev)), Some(W::DEV));
        assert_eq!(t("nano:mainnet", Some(Network::Live)), Some(W::LIVE));
        // Unknown offer network: the node says.
        assert_eq!(t("nano:local-lab", Some(Network::Dev)), Some(W::DEV));
        // No word from the node: the offer's network, unknown → live.
        assert_eq!(t("nano:devnet", None), Some(W::DEV));
        assert_eq!(t("nano:local-lab", None), Some(W::LIVE));
        assert!(matches!(
            choose_thresholds("nano:mainnet", Some(Network::Dev)),
            Err(PayError::NetworkMismatch { .. })
        ));
        assert!(matches!(
            choose_thresholds("nano:devnet", Some(Network::Live)),
            Err(PayError::NetworkMismatch { .. })
        ));
    }
}
