//! `nanogate-devnet`: a Nano dev ledger that speaks nano-node's RPC and WebSocket JSON and
//! enforces its block rules. The embedded ledger for the demo and every end-to-end test.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use nanogate_devnet::{Devnet, DevnetConfig};
//! let devnet = Devnet::start(DevnetConfig::local()).await?;
//! println!("RPC at {}, WebSocket at {}", devnet.rpc_url(), devnet.ws_url());
//! devnet.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `devnet/README.md` for the RPC actions, fault injection, the state file and
//! where this ledger knowingly differs from nano-node and from the recorded RsNano node.

pub mod blocks;
pub mod faults;
pub mod ledger;
mod rpc;
mod state;
mod ws;

pub use blocks::genesis_key;
pub use faults::{Faults, FaultsRequest, ForkRequest, RpcMode, WsMode};
pub use ledger::{genesis_account, genesis_hash, Ledger, PrecheckError, ProcessError};

use anyhow::Context;
use nanogate_protocol::nano::{BlockHash, PublicKey, Signature, StateBlock};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// When processed blocks are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// After this many milliseconds (a dev node with the genesis key votes in ~0.2 s).
    AfterMs(u64),
    /// Never (until `Faults::set_confirming(true)`, which then uses a 100 ms delay).
    Never,
}

impl Default for Confirm {
    fn default() -> Self {
        Confirm::AfterMs(100)
    }
}

/// How to start a devnet.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    pub rpc_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub confirm: Confirm,
    /// Accounts to fund from genesis at start: a send plus an open of the account (the open
    /// carries no valid signature, as the devnet lacks the account's key; see README).
    pub fund: Vec<(PublicKey, u128)>,
    /// Keep the ledger in this JSON file across restarts (written after every change).
    pub state_file: Option<PathBuf>,
}

impl DevnetConfig {
    /// Loopback, free ports, confirmation after 100 ms, no funding, no state file.
    pub fn local() -> Self {
        DevnetConfig {
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            confirm: Confirm::default(),
            fund: Vec::new(),
            state_file: None,
        }
    }
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self::local()
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// `listener` with TCP_NODELAY on every accepted socket, as a node's servers should: the
/// WebSocket pushes are small writes the subscriber never answers, so with Nagle on a push
/// waits for the ACK of the one before, which the subscriber delays by up to 40 ms.
pub(crate) fn nodelay(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One confirmation as the WebSocket `confirmation` topic announces it.
#[derive(Debug, Clone)]
pub struct ConfirmationEvent {
    pub time_ms: u64,
    pub account: PublicKey,
    /// For sends: the destination (the filter also matches it).
    pub destination: Option<PublicKey>,
    pub amount: u128,
    pub hash: BlockHash,
    /// `active_quorum`, `inactive` (cemented as a dependency) or `active_confirmation_height`.
    pub confirmation_type: &'static str,
    /// Block JSON with `subtype`.
    pub block: Value,
    pub height: u64,
    pub local_timestamp: u64,
    pub election_duration_ms: u64,
    pub tally: u128,
    pub voters: u32,
}

/// State shared by the servers and the confirmation scheduler.
pub(crate) struct Shared {
    ledger: Mutex<Ledger>,
    pub(crate) events: broadcast::Sender<Arc<ConfirmationEvent>>,
    pub(crate) faults: Faults,
    pub(crate) delay: Duration,
    state_file: Option<PathBuf>,
    persist_lock: Mutex<()>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) history: Mutex<VecDeque<Value>>,
    pub(crate) started_ms: u64,
    /// RPC requests answered, by action (`GET /admin/stats`, [`Devnet::rpc_calls`]).
    pub(crate) rpc_calls: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one RPC request for `action`.
    pub(crate) fn count_rpc(&self, action: &str) {
        let mut calls = self
            .rpc_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match calls.get_mut(action) {
            Some(n) => *n += 1,
            None => {
                calls.insert(action.to_owned(), 1);
            }
        }
    }

    /// RPC requests answered so far, by action.
    pub(crate) fn rpc_counts(&self) -> BTreeMap<String, u64> {
        self.rpc_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Processes a block (ledger rules only; the RPC layer runs its pre-checks first) and
    /// schedules the confirmation of everything added.
    pub(crate) fn process(self: &Arc<Self>, block: &StateBlock) -> Result<BlockHash, ProcessError> {
        let signature_valid = block.signature_valid();
        let mut l = self.lock();
        let hash = l.process_checked(block, now_ms(), signature_valid)?;
        self.persist(l);
        self.schedule(hash, self.delay);
        Ok(hash)
    }

    /// Confirms `hash` after `delay` unless confirming is off then (resuming rescans).
    pub(crate) fn schedule(self: &Arc<Self>, hash: BlockHash, delay: Duration) {
        if !self.faults.confirming() {
            return;
        }
        let me = Arc::clone(self);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // A zero delay confirms at once: `sleep` would round it up to the timer's next
            // millisecond tick.
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
            if me.faults.confirming() {
                me.confirm_now(hash);
            }
        });
    }

    /// The election for `hash` ends now: it is cemented, unless a fork rule makes a competitor
    /// win (the block is rolled back and the competitor cemented instead).
    pub(crate) fn confirm_now(self: &Arc<Self>, hash: BlockHash) {
        let now = now_ms();
        let mut l = self.lock();
        let Some(entry) = l.block(&hash).cloned() else {
            return;
        };
        if l.is_confirmed(&hash) {
            return;
        }
        let mut target = hash;
        if let Some(competitor) = self
            .faults
            .take_fork(&entry.previous, &entry.account, &hash)
        {
            let removed = l.rollback(hash);
            tracing::info!(processed = %hash, competitor = %competitor.hash(), rolled_back = removed.len(), "fork injected: competitor wins");
            match l.process(&competitor, now) {
                Ok(_) => target = competitor.hash(),
                Err(e) => {
                    tracing::warn!(error = %e, "fork competitor refused by the ledger");
                    drop(l);
                    self.persist(self.lock());
                    return;
                }
            }
        }
        let cemented = l.confirm(target);
        let hashes: Vec<BlockHash> = cemented.iter().map(|c| c.hash).collect();
        let added = l.drain_unchecked(&hashes, now);
        let events: Vec<ConfirmationEvent> = cemented
            .iter()
            .filter_map(|c| {
                let ty = if c.target {
                    "active_quorum"
                } else {
                    "inactive"
                };
                event_for(&l, &c.hash, ty, now)
            })
            .collect();
        self.persist(l);
        for ev in events {
            self.announce(ev);
        }
        for h in added {
            self.schedule(h, self.delay);
        }
    }

    /// block_confirm on a block already confirmed: announce it again.
    pub(crate) fn reannounce(&self, hash: &BlockHash) {
        let l = self.lock();
        let ev = event_for(&l, hash, "active_confirmation_height", now_ms());
        drop(l);
        if let Some(mut ev) = ev {
            ev.election_duration_ms = 0;
            ev.tally = 0;
            ev.voters = 0;
            self.announce(ev);
        }
    }

    fn announce(&self, ev: ConfirmationEvent) {
        {
            let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            if h.len() >= 2048 {
                h.pop_front();
            }
            h.push_back(serde_json::json!({
                "hash": ev.hash.to_hex(),
                "duration": ev.election_duration_ms.to_string(),
                "time": ev.time_ms.to_string(),
                "tally": ev.tally.to_string(),
                "final": ev.tally.to_string(),
                "blocks": "1",
                "voters": ev.voters.to_string(),
                "request_count": "0",
            }));
        }
        tracing::debug!(hash = %ev.hash, ty = ev.confirmation_type, "confirmed");
        // No subscribers is fine.
        let _ = self.events.send(Arc::new(ev));
    }

    /// Saves the ledger (if a state file is configured): snapshot under the ledger lock, then
    /// write (temp file + rename) under the persist lock so writes land in ledger order.
    pub(crate) fn persist(&self, ledger: MutexGuard<'_, Ledger>) {
        let Some(path) = &self.state_file else {
            return;
        };
        let _p = self
            .persist_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let snapshot = state::snapshot(&ledger);
        drop(ledger);
        if let Err(e) = state::write_atomic(path, &snapshot) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the state file");
        }
    }
}

fn event_for(
    l: &Ledger,
    hash: &BlockHash,
    ty: &'static str,
    now: u64,
) -> Option<ConfirmationEvent> {
    let e = l.block(hash)?;
    let mut block = e.contents_json();
    if let Some(obj) = block.as_object_mut() {
        obj.insert("subtype".into(), Value::from(e.subtype.as_str()));
    }
    Some(ConfirmationEvent {
        time_ms: now,
        account: e.account,
        destination: e.destination,
        amount: e.amount,
        hash: *hash,
        confirmation_type: ty,
        block,
        height: e.height,
        local_timestamp: e.local_timestamp,
        election_duration_ms: now.saturating_sub(e.processed_ms),
        tally: ledger::GENESIS_AMOUNT,
        voters: 1,
    })
}

/// A running devnet. Dropping it (or `shutdown`) stops its servers and tasks.
pub struct Devnet {
    shared: Arc<Shared>,
    rpc_addr: SocketAddr,
    ws_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Read access to a running devnet's ledger (and direct processing, bypassing HTTP).
#[derive(Clone)]
pub struct LedgerHandle {
    shared: Arc<Shared>,
}

/// A summary of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSnapshot {
    pub frontier: BlockHash,
    pub balance: u128,
    pub block_count: u64,
    pub representative: PublicKey,
    pub confirmed_height: u64,
    pub confirmed_frontier: BlockHash,
    pub confirmed_balance: u128,
}

impl LedgerHandle {
    /// Runs `f` with the ledger locked (keep it short).
    pub fn read<R>(&self, f: impl FnOnce(&Ledger) -> R) -> R {
        f(&self.shared.lock())
    }

    /// Whether the block is confirmed; None if the ledger does not hold it.
    pub fn confirmed(&self, hash: &BlockHash) -> Option<bool> {
        self.shared.lock().confirmed(hash)
    }

    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.shared.lock().contains(hash)
    }

    pub fn account(&self, account: &PublicKey) -> Option<AccountSnapshot> {
        let l = self.shared.lock();
        let a = l.account(account)?;
        Some(AccountSnapshot {
            frontier: a.head,
            balance: a.balance,
            block_count: a.block_count,
            representative: a.representative,
            confirmed_height: a.confirmation_height,
            confirmed_frontier: a.confirmed_frontier,
            confirmed_balance: l.confirmed_balance(account),
        })
    }

    pub fn frontier(&self, account: &PublicKey) -> Option<BlockHash> {
        self.shared.lock().frontier(account)
    }

    pub fn balance(&self, account: &PublicKey) -> u128 {
        self.shared.lock().balance(account)
    }

    pub fn block_count(&self) -> u64 {
        self.shared.lock().block_count()
    }

    /// Processes a block through the ledger rules (no RPC pre-checks), scheduling its
    /// confirmation like `process` does.
    pub fn process(&self, block: &StateBlock) -> Result<BlockHash, ProcessError> {
        self.shared.process(block)
    }

    /// Waits until the block is confirmed (true) or the timeout passes (false).
    pub async fn wait_confirmed(&self, hash: &BlockHash, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.confirmed(hash) == Some(true) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Devnet {
    /// Binds both ports, loads the state file (if any), funds accounts and starts serving.
    pub async fn start(cfg: DevnetConfig) -> anyhow::Result<Devnet> {
        let (confirming, delay_ms) = match cfg.confirm {
            Confirm::AfterMs(ms) => (true, ms),
            Confirm::Never => (false, 100),
        };
        let (mut ledger, loaded) = match &cfg.state_file {
            Some(path) if path.exists() => (state::load(path)?, true),
            _ => (Ledger::new(), false),
        };
        for (account, amount) in &cfg.fund {
            if ledger.account(account).is_some() {
                tracing::info!(account = %account.to_address(), "already open; not funded again");
                continue;
            }
            fund(&mut ledger, account, *amount)
                .with_context(|| format!("funding {}", account.to_address()))?;
        }
        let rpc_listener = TcpListener::bind(cfg.rpc_addr)
            .await
            .with_context(|| format!("binding RPC {}", cfg.rpc_addr))?;
        let ws_listener = TcpListener::bind(cfg.ws_addr)
            .await
            .with_context(|| format!("binding WebSocket {}", cfg.ws_addr))?;
        let rpc_addr = rpc_listener.local_addr()?;
        let ws_addr = ws_listener.local_addr()?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            ledger: Mutex::new(ledger),
            events: broadcast::channel(4096).0,
            faults: Faults::new(confirming),
            delay: Duration::from_millis(delay_ms),
            state_file: cfg.state_file.clone(),
            persist_lock: Mutex::new(()),
            shutdown: shutdown_rx,
            history: Mutex::new(VecDeque::new()),
            started_ms: now_ms(),
            rpc_calls: Mutex::new(BTreeMap::new()),
        });
        shared.persist(shared.lock());

        let tasks = vec![
            tokio::spawn(rpc::serve(Arc::clone(&shared), rpc_listener, rpc_addr)),
            tokio::spawn(ws::serve(Arc::clone(&shared), ws_listener)),
            tokio::spawn(resume_on_confirming(Arc::clone(&shared))),
        ];
        if loaded && confirming {
            let pending = shared.lock().unconfirmed();
            for h in pending {
                shared.schedule(h, shared.delay);
            }
        }
        tracing::info!(rpc = %rpc_addr, ws = %ws_addr, "devnet started");
        Ok(Devnet {
            shared,
            rpc_addr,
            ws_addr,
            shutdown_tx,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.rpc_addr)
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.ws_addr)
    }

    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The fault switches (cheap clone).
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Read access to the ledger.
    pub fn ledger(&self) -> LedgerHandle {
        LedgerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// RPC requests answered so far, by action (`account_info`, `process`, …): what the
    /// sidecars cost the node. Also `GET /admin/stats` on either port.
    pub fn rpc_calls(&self) -> BTreeMap<String, u64> {
        self.shared.rpc_counts()
    }

    /// The configured confirmation delay.
    pub fn confirm_delay(&self) -> Duration {
        self.shared.delay
    }

    /// Builds (does not process) a signed send of `amount` from genesis to `destination` on the
    /// current genesis frontier, with dev work.
    pub fn genesis_send(&self, destination: PublicKey, amount: u128) -> anyhow::Result<StateBlock> {
        let g = genesis_account();
        let (frontier, balance) = {
            let l = self.shared.lock();
            let a = l.account(&g).context("genesis account missing")?;
            (a.head, a.balance)
        };
        anyhow::ensure!(amount <= balance, "genesis balance too low");
        Ok(blocks::send(
            &genesis_key(),
            frontier,
            balance,
            destination,
            amount,
        ))
    }

    /// Stops the servers and tasks and waits for them.
    pub async fn shutdown(mut self) {
        self.shutdown_tx.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Sends `amount` from genesis to `account` and opens it (unsigned open), both confirmed.
fn fund(ledger: &mut Ledger, account: &PublicKey, amount: u128) -> anyhow::Result<()> {
    let g = genesis_account();
    anyhow::ensure!(*account != g, "cannot fund the genesis account");
    anyhow::ensure!(!account.is_zero(), "cannot fund the burn account");
    let (frontier, balance) = {
        let a = ledger.account(&g).context("genesis account missing")?;
        (a.head, a.balance)
    };
    anyhow::ensure!(amount > 0 && amount <= balance, "bad amount {amount}");
    let send = blocks::send(&genesis_key(), frontier, balance, *account, amount);
    let now = now_ms();
    ledger
        .process(&send, now)
        .map_err(|e| anyhow::anyhow!("fund send: {e}"))?;
    let mut open = StateBlock {
        account: *account,
        previous: BlockHash::ZERO,
        representative: g,
        balance: amount,
        link: send.hash().0,
        signature: Signature([0; 64]),
        work: 0,
    };
    open.work = blocks::dev_work(&open.root());
    ledger
        .process_with(&open, now, true)
        .map_err(|e| anyhow::anyhow!("fund open: {e}"))?;
    ledger.confirm(open.hash());
    Ok(())
}

/// When confirming is switched back on, every unconfirmed block gets an election.
async fn resume_on_confirming(shared: Arc<Shared>) {
    let mut rx = shared.faults.watch_confirming();
    let mut shutdown = shared.shutdown.clone();
    let mut was = *rx.borrow_and_update();
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = crate::stopped(&mut shutdown) => return,
        }
        let now = *rx.borrow_and_update();
        if now && !was {
            let pending = shared.lock().unconfirmed();
            for h in pending {
                shared.schedule(h, shared.delay);
            }
        }
        was = now;
    }
}
