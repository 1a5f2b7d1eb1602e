//! [`Ledger`] over the node module: [`NodeClient`] (RPC with failover) and [`Confirmations`]
//! (WebSocket push with polling fallback and a `block_confirm` nudge).

use super::{
    AccountState, Confirmation, Ledger, LedgerError, LedgerFuture, ProcessOutcome, SendFacts,
};
use crate::metrics::Metrics;
use crate::node::{
    Confirmations, LedgerRejection, NodeClient, NodeError, NodeMetrics, ProcessResult, WaitOutcome,
};
use nanogate_protocol::nano::{BlockHash, PublicKey, StateBlock};
use std::sync::Arc;
use std::time::Instant;

pub struct NodeLedger {
    client: NodeClient,
    confirmations: Confirmations,
}

impl NodeLedger {
    /// Wraps a client and a tracker built over it.
    pub fn new(client: NodeClient, confirmations: Confirmations) -> Self {
        NodeLedger {
            client,
            confirmations,
        }
    }

    /// The node client (the wallet publishes its blocks through it).
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    pub fn confirmations(&self) -> &Confirmations {
        &self.confirmations
    }
}

fn map_err(e: NodeError) -> LedgerError {
    if e.is_unavailable() {
        LedgerError::Unavailable(e.to_string())
    } else {
        LedgerError::Node(e.to_string())
    }
}

/// A node label for metrics: `host:port` only, so a URL's credentials or path never leak.
pub fn node_label(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    host.to_owned()
}

/// Feeds the node module's per-node observations into our metrics.
pub struct NodeMetricsBridge(pub Arc<Metrics>);

impl NodeMetrics for NodeMetricsBridge {
    fn on_rpc_error(&self, node_url: &str, _action: &str) {
        self.0.rpc_error(&node_label(node_url));
    }

    fn on_rpc_latency(&self, action: &str, secs: f64) {
        self.0
            .rpc_seconds
            .get_or_create(&crate::metrics::OpLabel {
                op: action.to_owned(),
            })
            .observe(secs);
    }

    fn on_ws_confirmation(&self) {
        self.0.confirmation_pushes.inc();
    }

    fn on_confirmation_poll(&self) {
        self.0.confirmation_polls.inc();
    }
}

impl Ledger for NodeLedger {
    fn network(&self) -> LedgerFuture<'_, String> {
        Box::pin(async move {
            let v = self.client.version().await.map_err(map_err)?;
            Ok(v.network)
        })
    }

    fn account_state<'a>(
        &'a self,
        account: &'a PublicKey,
    ) -> LedgerFuture<'a, Option<AccountState>> {
        Box::pin(async move {
            let info = self.client.account_info(account).await.map_err(map_err)?;
            Ok(info.map(|i| AccountState {
                frontier: i.frontier,
                balance: i.balance,
                confirmed_frontier: i.confirmed_frontier,
            }))
        })
    }

    fn block_confirmed<'a>(&'a self, hash: &'a BlockHash) -> LedgerFuture<'a, Option<bool>> {
        Box::pin(async move {
            let info = self.client.block_info(hash).await.map_err(map_err)?;
            Ok(info.map(|b| b.confirmed))
        })
    }

    fn process<'a>(&'a self, block: &'a StateBlock) -> LedgerFuture<'a, ProcessOutcome> {
        Box::pin(async move {
            // Watch the payee so the confirmation push for this send reaches us.
            self.confirmations.watch_account(&block.link_as_key());
            let r = self
                .client
                .process_or_resolve(block)
                .await
                .map_err(map_err)?;
            Ok(match r {
                ProcessResult::Processed(_) => ProcessOutcome::Processed,
                ProcessResult::Rejected(LedgerRejection::OldBlock) => ProcessOutcome::Old,
                ProcessResult::Rejected(LedgerRejection::Fork) => ProcessOutcome::Fork,
                ProcessResult::Rejected(LedgerRejection::GapPrevious) => {
                    ProcessOutcome::GapPrevious
                }
                ProcessResult::Rejected(other) => ProcessOutcome::Rejected(format!("{other:?}")),
            })
        })
    }

    fn nudge<'a>(&'a self, hash: &'a BlockHash) -> LedgerFuture<'a, ()> {
        Box::pin(async move { self.client.block_confirm(hash).await.map_err(map_err) })
    }

    fn send_facts<'a>(&'a self, hash: &'a BlockHash) -> LedgerFuture<'a, Option<SendFacts>> {
        Box::pin(async move {
            let info = self.client.block_info(hash).await.map_err(map_err)?;
            Ok(info.map(|b| SendFacts {
                account: b.account,
                destination: match (&b.contents, b.subtype.as_deref()) {
                    (Some(block), Some("send")) => Some(block.link_as_key()),
                    _ => None,
                },
                subtype: b.subtype,
                amount: b.amount,
                confirmed: b.confirmed,
                local_timestamp: b.local_timestamp,
                block: b.contents,
            }))
        })
    }

    fn watch_payee(&self, account: &PublicKey) {
        self.confirmations.watch_account(account);
    }

    fn receivable_sends<'a>(
        &'a self,
        account: &'a PublicKey,
        count: u64,
    ) -> LedgerFuture<'a, Vec<BlockHash>> {
        Box::pin(async move {
            self.client
                .receivable(account, count)
                .await
                .map_err(map_err)
        })
    }

    fn chain_page<'a>(
        &'a self,
        account: &'a PublicKey,
        head: Option<&'a BlockHash>,
        forward: bool,
        count: u64,
    ) -> LedgerFuture<'a, Option<crate::node::HistoryPage>> {
        Box::pin(async move {
            self.client
                .account_history(account, head, forward, count)
                .await
                .map_err(map_err)
        })
    }

    fn wait_confirmed<'a>(
        &'a self,
        block: &'a StateBlock,
        deadline: Instant,
    ) -> LedgerFuture<'a, Confirmation> {
        Box::pin(async move {
            let r = self
                .confirmations
                .wait_block_confirmed(block, deadline)
                .await
                .map_err(map_err)?;
            Ok(match r {
                WaitOutcome::Confirmed(info) if info.hash == block.hash() => {
                    Confirmation::Confirmed
                }
                WaitOutcome::Confirmed(_) | WaitOutcome::Missing => Confirmation::Missing,
                WaitOutcome::TimedOut => Confirmation::TimedOut,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::node_label;

    #[test]
    fn node_labels_drop_credentials_and_paths() {
        assert_eq!(
            node_label("http://user:pw@node.example:7076/rpc?x=1"),
            "node.example:7076"
        );
        assert_eq!(node_label("http://127.0.0.1:7076"), "127.0.0.1:7076");
    }
}
