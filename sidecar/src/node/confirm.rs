//! Confirmation tracking: WebSocket pushes first, `block_info` polling as the fallback.
//!
//! A background task ([`super::ws`]) keeps one WebSocket subscription to the `confirmation`
//! topic, filtered on the watched accounts (the filter matches a block's account *or* its
//! destination, so watching the merchant catches incoming sends). Every push is de-duplicated
//! by hash, handed to the waiters of that hash, and broadcast to [`Confirmations::subscribe`]
//! receivers.
//!
//! [`Confirmations::wait_confirmed`] registers its waiter *before* it looks at the ledger, so a
//! push that lands between the check and the wait is not lost. It then answers:
//! * `Confirmed` as soon as the push arrives (no sleeping on the latency path), or when a poll
//!   finds the block cemented;
//! * `Missing` when the block vanished after having been seen (rolled back: it lost a fork),
//!   or when a different block on the same root was confirmed;
//! * `TimedOut` at the deadline.
//!
//! Polling: `block_info` right away, then every `fast_poll` (250 ms) while the WebSocket is
//! down and every `safety_poll` (2 s) while it is up (pushes are not guaranteed), and once more
//! right after every reconnect. A `block_confirm` nudge goes out `nudge_after` (500 ms) after
//! the start if the block is still unconfirmed.

use super::json::{self, as_account, as_hash, as_u128, as_u64, opt};
use super::{ws, BlockInfo, NodeClient, NodeError, NodeMetrics};
use nanogate_protocol::nano::{BlockHash, PublicKey, StateBlock};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::debug;

/// How many confirmed hashes are remembered for de-duplication and late waiters.
const RECENT_CAP: usize = 16_384;
/// Capacity of the [`Confirmations::subscribe`] channel (slow receivers see `Lagged`).
const BROADCAST_CAP: usize = 4_096;

/// One confirmation push from the node (first sighting only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmedBlock {
    pub hash: BlockHash,
    /// The account whose chain holds the block.
    pub account: PublicKey,
    /// Absolute balance change.
    pub amount: u128,
    /// The block, when it is a state block (its hash was checked against `hash`).
    pub block: Option<StateBlock>,
    /// `send`, `receive`, `change`, `epoch`.
    pub subtype: Option<String>,
    /// `active_quorum`, `active_confirmation_height`, `inactive`.
    pub confirmation_type: Option<String>,
    /// From the sideband, when the node includes it.
    pub height: Option<u64>,
    pub local_timestamp: Option<u64>,
    /// The node's message time (unix ms).
    pub time_ms: Option<u64>,
}

impl ConfirmedBlock {
    /// For a send: the destination account (`link` read as a key, never `link_as_account`).
    pub fn destination(&self) -> Option<PublicKey> {
        match (&self.block, self.subtype.as_deref()) {
            (Some(b), Some("send")) => Some(b.link_as_key()),
            _ => None,
        }
    }

    /// The work root of the block: competing blocks share it.
    pub fn root(&self) -> Option<[u8; 32]> {
        self.block.as_ref().map(StateBlock::root)
    }

    /// The same facts as `block_info` would give for a confirmed block, when the push carried
    /// the block itself.
    pub fn to_block_info(&self) -> Option<BlockInfo> {
        let block = self.block.clone()?;
        Some(BlockInfo {
            hash: self.hash,
            account: self.account,
            amount: self.amount,
            balance: block.balance,
            height: self.height.unwrap_or(0),
            confirmed: true,
            subtype: self.subtype.clone(),
            contents: Some(block),
            local_timestamp: self.local_timestamp.unwrap_or(0),
            successor: None,
        })
    }

    /// Parses the `message` of a `confirmation` topic push. `None` if it is unusable or
    /// inconsistent (a block that does not hash to `hash`).
    pub(crate) fn from_message(msg: &Value) -> Option<Self> {
        let obj = msg.as_object()?;
        let hash = opt(obj, "hash", as_hash)?;
        let block_v = obj.get("block");
        let block = block_v.and_then(json::state_block);
        if let Some(b) = &block {
            if b.hash() != hash {
                debug!(%hash, computed = %b.hash(), "confirmation push with a mismatching block; ignored");
                return None;
            }
        }
        let account =
            opt(obj, "account", as_account).or_else(|| block.as_ref().map(|b| b.account))?;
        let sideband = obj.get("sideband").and_then(Value::as_object);
        Some(ConfirmedBlock {
            hash,
            account,
            amount: opt(obj, "amount", as_u128).unwrap_or(0),
            subtype: block_v
                .and_then(|b| b.get("subtype"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            block,
            confirmation_type: obj
                .get("confirmation_type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            height: sideband.and_then(|s| opt(s, "height", as_u64)),
            local_timestamp: sideband.and_then(|s| opt(s, "local_timestamp", as_u64)),
            time_ms: None,
        })
    }
}

/// How a wait ended.
// Returned once per wait, never stored in bulk: boxing would only cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    Confirmed(BlockInfo),
    /// The block is not (or no longer) on the ledger: it lost a fork or was dropped.
    Missing,
    /// Not confirmed by the deadline (the block may still confirm later).
    TimedOut,
}

/// Timings of the tracker. The defaults suit a real node; tests may shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmTimings {
    /// Poll interval while no WebSocket is subscribed.
    pub fast_poll: Duration,
    /// Safety poll interval while the WebSocket is up.
    pub safety_poll: Duration,
    /// When to send a `block_confirm` nudge if still unconfirmed.
    pub nudge_after: Duration,
    /// Reconnect backoff: first pause, doubling up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// WebSocket connect + subscribe-ack bound.
    pub connect_timeout: Duration,
    /// WebSocket ping interval; a connection silent for three intervals is dropped.
    pub ping_interval: Duration,
}

impl Default for ConfirmTimings {
    fn default() -> Self {
        Self {
            fast_poll: Duration::from_millis(250),
            safety_poll: Duration::from_secs(2),
            nudge_after: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(10),
        }
    }
}

/// The WebSocket state seen by waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WsStatus {
    /// Subscribed (ack received) on a live connection.
    pub connected: bool,
    /// Incremented at every successful (re)subscription.
    pub epoch: u64,
}

enum Signal {
    Confirmed(Box<ConfirmedBlock>),
    /// A different block on the same root was confirmed.
    Forked(BlockHash),
}

struct Waiter {
    id: u64,
    hash: BlockHash,
    tx: mpsc::Sender<Signal>,
}

struct HubState {
    accounts: BTreeSet<PublicKey>,
    waiters: HashMap<BlockHash, Vec<(u64, mpsc::Sender<Signal>)>>,
    root_waiters: HashMap<[u8; 32], Vec<Waiter>>,
    /// Boxed: a hash map keeps up to twice as many buckets as entries, and a bucket holding
    /// the block itself is ~450 bytes (14.7 MiB at RECENT_CAP in a heap profile; ~8.5 boxed).
    recent: HashMap<BlockHash, Box<ConfirmedBlock>>,
    recent_roots: HashMap<[u8; 32], BlockHash>,
    order: VecDeque<(BlockHash, Option<[u8; 32]>)>,
    next_id: u64,
}

impl Default for HubState {
    /// The recent-confirmation collections are made at their full size: they fill within a
    /// minute or two of steady traffic anyway, and growing them by doubling copied each one
    /// into a table twice the size (a transient 1.5×, and freed tables left in the heap).
    fn default() -> Self {
        HubState {
            accounts: BTreeSet::new(),
            waiters: HashMap::new(),
            root_waiters: HashMap::new(),
            recent: HashMap::with_capacity(RECENT_CAP),
            recent_roots: HashMap::with_capacity(RECENT_CAP),
            order: VecDeque::with_capacity(RECENT_CAP),
            next_id: 0,
        }
    }
}

/// State shared by the handle, the waiters and the WebSocket task.
pub(crate) struct Hub {
    state: Mutex<HubState>,
    events: broadcast::Sender<ConfirmedBlock>,
    status: watch::Sender<WsStatus>,
    metrics: Option<Arc<dyn NodeMetrics>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Current account filter.
    pub(crate) fn accounts(&self) -> Vec<PublicKey> {
        self.lock().accounts.iter().copied().collect()
    }

    pub(crate) fn set_status(&self, url: &str, connected: bool) {
        let mut changed = false;
        self.status.send_modify(|s| {
            changed = s.connected != connected;
            if connected {
                s.epoch = s.epoch.wrapping_add(1);
            }
            s.connected = connected;
        });
        if changed {
            if let Some(m) = &self.metrics {
                m.on_ws_state(url, connected);
            }
        }
    }

    /// Handles one confirmation push: de-duplicate, wake waiters, broadcast.
    pub(crate) fn on_confirmation(&self, cb: ConfirmedBlock) {
        let root = cb.root();
        {
            let mut st = self.lock();
            if st.recent.contains_key(&cb.hash) {
                debug!(hash = %cb.hash, "duplicate confirmation push");
                return;
            }
            // Oldest out before the new one in: never more than RECENT_CAP entries, so the
            // collections never grow past the capacity they were made with.
            while st.order.len() >= RECENT_CAP {
                let Some((old, old_root)) = st.order.pop_front() else {
                    break;
                };
                st.recent.remove(&old);
                if let Some(r) = old_root {
                    if st.recent_roots.get(&r) == Some(&old) {
                        st.recent_roots.remove(&r);
                    }
                }
            }
            st.recent.insert(cb.hash, Box::new(cb.clone()));
            st.order.push_back((cb.hash, root));
            if let Some(r) = root {
                st.recent_roots.insert(r, cb.hash);
            }
            if let Some(ws) = st.waiters.get(&cb.hash) {
                for (_, tx) in ws {
                    let _ = tx.try_send(Signal::Confirmed(Box::new(cb.clone())));
                }
            }
            if let Some(r) = root {
                if let Some(ws) = st.root_waiters.get(&r) {
                    for w in ws.iter().filter(|w| w.hash != cb.hash) {
                        let _ = w.tx.try_send(Signal::Forked(cb.hash));
                    }
                }
            }
        }
        if let Some(m) = &self.metrics {
            m.on_ws_confirmation();
        }
        debug!(hash = %cb.hash, ty = ?cb.confirmation_type, "confirmation push");
        // No receivers is fine.
        let _ = self.events.send(cb);
    }

    /// Registers a waiter for `hash`; returns its guard and the push if it already came.
    fn register(
        self: &Arc<Self>,
        hash: BlockHash,
        tx: mpsc::Sender<Signal>,
    ) -> (WaiterGuard, Option<ConfirmedBlock>) {
        let mut st = self.lock();
        st.next_id = st.next_id.wrapping_add(1);
        let id = st.next_id;
        st.waiters.entry(hash).or_default().push((id, tx.clone()));
        let early = st.recent.get(&hash).map(|b| ConfirmedBlock::clone(b));
        drop(st);
        (
            WaiterGuard {
                hub: Arc::clone(self),
                id,
                hash,
                root: None,
                tx,
            },
            early,
        )
    }
}

/// Removes a waiter's registrations when its wait ends or is cancelled.
struct WaiterGuard {
    hub: Arc<Hub>,
    id: u64,
    hash: BlockHash,
    root: Option<[u8; 32]>,
    tx: mpsc::Sender<Signal>,
}

impl WaiterGuard {
    /// Also listens for confirmations of competitors on `root`. Returns the competitor if one
    /// was already confirmed.
    fn watch_root(&mut self, root: [u8; 32]) -> Option<BlockHash> {
        if self.root.is_some() {
            return None;
        }
        self.root = Some(root);
        let mut st = self.hub.lock();
        st.root_waiters.entry(root).or_default().push(Waiter {
            id: self.id,
            hash: self.hash,
            tx: self.tx.clone(),
        });
        st.recent_roots
            .get(&root)
            .copied()
            .filter(|h| *h != self.hash)
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        if let Some(v) = st.waiters.get_mut(&self.hash) {
            v.retain(|(id, _)| *id != self.id);
            if v.is_empty() {
                st.waiters.remove(&self.hash);
            }
        }
        if let Some(root) = self.root {
            if let Some(v) = st.root_waiters.get_mut(&root) {
                v.retain(|w| w.id != self.id);
                if v.is_empty() {
                    st.root_waiters.remove(&root);
                }
            }
        }
    }
}

pub(crate) enum Cmd {
    Add(PublicKey),
    Remove(PublicKey),
}

struct Handle {
    hub: Arc<Hub>,
    node: NodeClient,
    cmds: mpsc::UnboundedSender<Cmd>,
    timings: ConfirmTimings,
    task: tokio::task::AbortHandle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Confirmation tracker. Cheap to clone; the background task stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Confirmations {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Confirmations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmations")
            .field("ws_connected", &self.ws_connected())
            .finish_non_exhaustive()
    }
}

impl Confirmations {
    /// Starts the WebSocket task (within the current tokio runtime). With no `ws_urls`, every
    /// wait relies on polling.
    pub fn spawn(ws_urls: Vec<String>, node: NodeClient) -> Self {
        Self::spawn_with(ws_urls, node, ConfirmTimings::default())
    }

    /// [`spawn`](Self::spawn) with explicit timings.
    pub fn spawn_with(ws_urls: Vec<String>, node: NodeClient, timings: ConfirmTimings) -> Self {
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState::default()),
            events: broadcast::channel(BROADCAST_CAP).0,
            status: watch::channel(WsStatus::default()).0,
            metrics: node.metrics().cloned(),
        });
        let (cmds, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(ws::run(ws_urls, Arc::clone(&hub), rx, timings)).abort_handle();
        Self {
            inner: Arc::new(Handle {
                hub,
                node,
                cmds,
                timings,
                task,
            }),
        }
    }

    /// Adds `account` to the subscription filter (sent as `accounts_add` when connected; part
    /// of every (re)subscription from now on).
    pub fn watch_account(&self, account: &PublicKey) {
        let new = self.inner.hub.lock().accounts.insert(*account);
        if new {
            let _ = self.inner.cmds.send(Cmd::Add(*account));
        }
    }

    /// Removes `account` from the filter.
    pub fn unwatch_account(&self, account: &PublicKey) {
        let had = self.inner.hub.lock().accounts.remove(account);
        if had {
            let _ = self.inner.cmds.send(Cmd::Remove(*account));
        }
    }

    /// The accounts currently watched.
    pub fn watched_accounts(&self) -> Vec<PublicKey> {
        self.inner.hub.accounts()
    }

    /// Whether a WebSocket subscription is live right now.
    pub fn ws_connected(&self) -> bool {
        self.inner.hub.status.borrow().connected
    }

    /// Resolves when the WebSocket is subscribed (or after `timeout`); returns whether it is.
    pub async fn wait_ws_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.hub.status.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The WebSocket state; `epoch` grows at every (re)subscription, after which pushes missed
    /// during the gap must be caught up from the ledger.
    pub fn ws_status(&self) -> watch::Receiver<WsStatus> {
        self.inner.hub.status.subscribe()
    }

    /// Every confirmation seen on the WebSocket (first sighting of each hash).
    pub fn subscribe(&self) -> broadcast::Receiver<ConfirmedBlock> {
        self.inner.hub.events.subscribe()
    }

    /// Waits until `hash` is confirmed, vanishes, or `deadline` passes. Errors only when the
    /// ledger could not be reached at all (no RPC answer and no WebSocket) until the deadline.
    pub async fn wait_confirmed(
        &self,
        hash: &BlockHash,
        deadline: Instant,
    ) -> Result<WaitOutcome, NodeError> {
        self.wait_inner(*hash, None, deadline).await
    }

    /// [`wait_confirmed`](Self::wait_confirmed) for a block we hold: fork detection through a
    /// competitor's confirmation starts immediately, without waiting for `block_info`.
    pub async fn wait_block_confirmed(
        &self,
        block: &StateBlock,
        deadline: Instant,
    ) -> Result<WaitOutcome, NodeError> {
        self.wait_inner(block.hash(), Some(block.root()), deadline)
            .await
    }

    async fn wait_inner(
        &self,
        hash: BlockHash,
        root: Option<[u8; 32]>,
        deadline: Instant,
    ) -> Result<WaitOutcome, NodeError> {
        let h = &self.inner;
        let t = h.timings;
        let deadline = tokio::time::Instant::from_std(deadline);
        let start = tokio::time::Instant::now();
        // Register first, then look: nothing can slip between the two.
        let (tx, mut rx) = mpsc::channel(8);
        let (mut guard, early) = h.hub.register(hash, tx);
        if let Some(cb) = early {
            return self.confirmed_from_push(cb).await;
        }
        if let Some(root) = root {
            if let Some(other) = guard.watch_root(root) {
                debug!(%hash, competitor = %other, "competitor already confirmed");
                return Ok(WaitOutcome::Missing);
            }
        }
        let mut status_rx = h.hub.status.subscribe();
        let mut status = *status_rx.borrow_and_update();
        let mut status_open = true;
        let mut reached = status.connected;
        let mut seen = false;
        let mut missing_strikes = 0u32;
        let mut last_err: Option<NodeError> = None;
        let mut nudged = false;
        let nudge_at = start + t.nudge_after;
        let mut next_poll = start;

        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            if now >= next_poll {
                if let Some(m) = h.node.metrics() {
                    m.on_confirmation_poll();
                }
                // A push must win over a slow poll: race them.
                let polled = tokio::select! {
                    biased;
                    sig = rx.recv() => match sig {
                        Some(sig) => return self.on_signal(&hash, sig).await,
                        None => None,
                    },
                    r = tokio::time::timeout_at(
                        deadline,
                        self.poll(
                            &hash,
                            &mut guard,
                            &mut seen,
                            &mut missing_strikes,
                            &mut reached,
                            &mut last_err,
                        ),
                    ) => r.unwrap_or(None),
                };
                if let Some(outcome) = polled {
                    return Ok(outcome);
                }
                let interval = if missing_strikes > 0 || !status.connected {
                    t.fast_poll
                } else {
                    t.safety_poll
                };
                next_poll = tokio::time::Instant::now() + interval;
            }
            tokio::select! {
                biased;
                sig = rx.recv() => if let Some(sig) = sig {
                    return self.on_signal(&hash, sig).await;
                },
                changed = status_rx.changed(), if status_open => {
                    if changed.is_err() {
                        status_open = false;
                        status.connected = false;
                        next_poll = next_poll.min(tokio::time::Instant::now() + t.fast_poll);
                    } else {
                        let new = *status_rx.borrow_and_update();
                        if new.connected {
                            reached = true;
                        }
                        if new.connected && new.epoch != status.epoch {
                            // (Re)subscribed: pushes may have been missed meanwhile.
                            next_poll = tokio::time::Instant::now();
                        } else if !new.connected {
                            next_poll = next_poll.min(tokio::time::Instant::now() + t.fast_poll);
                        }
                        status = new;
                    }
                },
                _ = tokio::time::sleep_until(nudge_at), if !nudged => {
                    nudged = true;
                    let node = h.node.clone();
                    tokio::spawn(async move {
                        if let Err(e) = node.block_confirm(&hash).await {
                            debug!(%hash, error = %e, "block_confirm nudge failed");
                        }
                    });
                },
                _ = tokio::time::sleep_until(next_poll.min(deadline)) => {},
            }
        }
        match (reached, last_err) {
            (false, Some(e)) => Err(e),
            _ => Ok(WaitOutcome::TimedOut),
        }
    }

    async fn poll(
        &self,
        hash: &BlockHash,
        guard: &mut WaiterGuard,
        seen: &mut bool,
        missing_strikes: &mut u32,
        reached: &mut bool,
        last_err: &mut Option<NodeError>,
    ) -> Option<WaitOutcome> {
        match self.inner.node.block_info(hash).await {
            Ok(Some(info)) => {
                *reached = true;
                *missing_strikes = 0;
                if info.confirmed {
                    return Some(WaitOutcome::Confirmed(info));
                }
                *seen = true;
                if let Some(root) = info.contents.as_ref().map(StateBlock::root) {
                    if let Some(other) = guard.watch_root(root) {
                        debug!(%hash, competitor = %other, "competitor already confirmed");
                        return Some(WaitOutcome::Missing);
                    }
                }
                None
            }
            Ok(None) => {
                *reached = true;
                if *seen {
                    // Seen before, gone now: rolled back. Ask twice, in case a failover
                    // landed on a node that has not received it yet.
                    *missing_strikes += 1;
                    if *missing_strikes >= 2 {
                        return Some(WaitOutcome::Missing);
                    }
                }
                None
            }
            Err(e) => {
                debug!(%hash, error = %e, "block_info poll failed");
                *last_err = Some(e);
                None
            }
        }
    }

    async fn on_signal(&self, hash: &BlockHash, sig: Signal) -> Result<WaitOutcome, NodeError> {
        match sig {
            Signal::Confirmed(cb) => self.confirmed_from_push(*cb).await,
            Signal::Forked(other) => {
                debug!(%hash, competitor = %other, "competitor confirmed");
                Ok(WaitOutcome::Missing)
            }
        }
    }

    async fn confirmed_from_push(&self, cb: ConfirmedBlock) -> Result<WaitOutcome, NodeError> {
        if let Some(info) = cb.to_block_info() {
            return Ok(WaitOutcome::Confirmed(info));
        }
        // A push without the block (legacy block, or `include_block` off): ask the node.
        match self.inner.node.block_info(&cb.hash).await? {
            Some(mut info) => {
                info.confirmed = true;
                Ok(WaitOutcome::Confirmed(info))
            }
            None => Ok(WaitOutcome::Missing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::new(HubState::default()),
            events: broadcast::channel(BROADCAST_CAP).0,
            status: watch::channel(WsStatus::default()).0,
            metrics: None,
        })
    }

    fn push(n: u32) -> ConfirmedBlock {
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&n.to_be_bytes());
        ConfirmedBlock {
            hash: BlockHash(hash),
            account: PublicKey([7; 32]),
            amount: 1,
            block: None,
            subtype: Some("send".into()),
            confirmation_type: None,
            height: None,
            local_timestamp: None,
            time_ms: None,
        }
    }

    #[test]
    fn the_recent_set_stays_at_its_cap_and_forgets_the_oldest() {
        let hub = hub();
        let total = RECENT_CAP as u32 + 100;
        for n in 0..total {
            hub.on_confirmation(push(n));
            // A repeated push is a duplicate, not a second entry.
            hub.on_confirmation(push(n));
        }
        let (recent_cap, order_cap) = {
            let st = hub.lock();
            assert_eq!(st.recent.len(), RECENT_CAP);
            assert_eq!(st.order.len(), RECENT_CAP);
            (st.recent.capacity(), st.order.capacity())
        };
        // Made at full size, never grown past it (a map's capacity also counts down with
        // the tombstones of removed entries).
        let fresh = HubState::default();
        assert!(fresh.recent.capacity() >= RECENT_CAP);
        assert!(recent_cap <= fresh.recent.capacity());
        assert_eq!(order_cap, fresh.order.capacity());
        let (tx, _rx) = mpsc::channel(1);
        // The oldest 100 are forgotten; the newest is still there for a late waiter.
        let (_g, early) = hub.register(push(99).hash, tx.clone());
        assert_eq!(early, None);
        let (_g, early) = hub.register(push(total - 1).hash, tx);
        assert_eq!(early, Some(push(total - 1)));
    }
}
