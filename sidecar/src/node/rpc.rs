//! The RPC client: failover across nodes, bounded retries for idempotent calls, quirk-tolerant
//! parsing and typed outcomes.

use super::json::{self, HistoryPage, Obj};
use super::{
    redact_url, AccountInfo, BlockInfo, LedgerRejection, NodeConfig, NodeError, NodeMetrics,
    ProcessResult, VersionInfo,
};
use nanogate_protocol::nano::work::difficulty as work_difficulty;
use nanogate_protocol::nano::{BlockHash, PublicKey, StateBlock};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Largest RPC answer we read (a hostile or broken node must not exhaust memory).
const MAX_BODY: usize = 4 << 20;

/// A Nano RPC client over one or more nodes. Cheap to clone; clones share the "last healthy
/// node" memory.
#[derive(Clone)]
pub struct NodeClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    nodes: Vec<String>,
    /// `redact_url` of each node, for logs and errors.
    labels: Vec<String>,
    /// Index of the node that last gave a usable answer: every call starts there.
    preferred: Arc<AtomicUsize>,
    call_timeout: Duration,
    work_timeout: Duration,
    retries: u32,
    backoff: Duration,
    metrics: Option<Arc<dyn NodeMetrics>>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("nodes", &self.inner.labels)
            .field("call_timeout", &self.inner.call_timeout)
            .finish_non_exhaustive()
    }
}

/// Whether a call may be repeated (same node or another) without changing its outcome.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idempotent,
    /// Sent once; moved to the next node only if the connection could not be made.
    Once,
}

/// One failed attempt on one node.
struct AttemptError {
    /// Nothing reached the node: safe to send elsewhere even for `process`.
    not_sent: bool,
    detail: String,
}

impl NodeClient {
    pub fn new(cfg: &NodeConfig) -> Self {
        // Connection failures must surface quickly so failover is fast; the per-request
        // timeout bounds the whole exchange.
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.call_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!("reqwest client builder failed ({e}); using defaults");
                reqwest::Client::new()
            });
        Self {
            inner: Arc::new(Inner {
                http,
                nodes: cfg.rpc_urls.clone(),
                labels: cfg.rpc_urls.iter().map(|u| redact_url(u)).collect(),
                preferred: Arc::new(AtomicUsize::new(0)),
                call_timeout: cfg.call_timeout,
                work_timeout: cfg.call_timeout.max(Duration::from_secs(30)),
                retries: cfg.retries,
                backoff: cfg.backoff,
                metrics: None,
            }),
        }
    }

    fn rebuild(&self, f: impl FnOnce(&mut Inner)) -> Self {
        let i = &self.inner;
        let mut inner = Inner {
            http: i.http.clone(),
            nodes: i.nodes.clone(),
            labels: i.labels.clone(),
            preferred: i.preferred.clone(),
            call_timeout: i.call_timeout,
            work_timeout: i.work_timeout,
            retries: i.retries,
            backoff: i.backoff,
            metrics: i.metrics.clone(),
        };
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The same client reporting per-node errors and latencies to `metrics`.
    pub fn with_metrics(&self, metrics: Arc<dyn NodeMetrics>) -> Self {
        self.rebuild(|i| i.metrics = Some(metrics))
    }

    /// The same client with a different bound for `work_generate` (default: the larger of
    /// `call_timeout` and 30 s, since real work takes seconds).
    pub fn with_work_timeout(&self, timeout: Duration) -> Self {
        self.rebuild(|i| i.work_timeout = timeout)
    }

    /// The configured RPC endpoints.
    pub fn nodes(&self) -> &[String] {
        &self.inner.nodes
    }

    pub(crate) fn metrics(&self) -> Option<&Arc<dyn NodeMetrics>> {
        self.inner.metrics.as_ref()
    }

    /// `version`: network name and identifier for the network guard.
    pub async fn version(&self) -> Result<VersionInfo, NodeError> {
        let obj = self
            .call("version", json!({"action": "version"}), Mode::Idempotent)
            .await?;
        if let Some(e) = json::error_of(&obj) {
            return Err(NodeError::Node(e));
        }
        json::parse_version(&obj)
    }

    /// `account_info`; `Ok(None)` for an account that is not opened ("Account not found").
    pub async fn account_info(
        &self,
        account: &PublicKey,
    ) -> Result<Option<AccountInfo>, NodeError> {
        let body = json!({
            "action": "account_info",
            "account": account.to_address(),
            "representative": "true",
            "include_confirmed": "true",
        });
        let obj = self.call("account_info", body, Mode::Idempotent).await?;
        if let Some(e) = json::error_of(&obj) {
            return if e.trim().eq_ignore_ascii_case("Account not found") {
                Ok(None)
            } else {
                Err(NodeError::Node(e))
            };
        }
        json::parse_account_info(&obj).map(Some)
    }

    /// `block_info`; `Ok(None)` for a hash the node does not know ("Block not found").
    pub async fn block_info(&self, hash: &BlockHash) -> Result<Option<BlockInfo>, NodeError> {
        let body = json!({
            "action": "block_info",
            "json_block": "true",
            "hash": hash.to_hex(),
        });
        let obj = self.call("block_info", body, Mode::Idempotent).await?;
        if let Some(e) = json::error_of(&obj) {
            return if e.trim().eq_ignore_ascii_case("Block not found") {
                Ok(None)
            } else {
                Err(NodeError::Node(e))
            };
        }
        json::parse_block_info(hash, &obj).map(Some)
    }

    /// Publishes a state block. Sent **without** `subtype`, so that `Old block` and `Fork`
    /// are reported as such rather than masked by the subtype pre-check.
    ///
    /// The block goes to one node; it is re-sent to the next node only if the connection could
    /// not be made at all. Any other failure (timeout, non-200, unreadable answer) returns an
    /// error although the node may have applied the block: resolve with
    /// [`block_info`](Self::block_info) (see [`process_or_resolve`](Self::process_or_resolve)).
    pub async fn process(&self, block: &StateBlock) -> Result<ProcessResult, NodeError> {
        let body = json!({
            "action": "process",
            "json_block": "true",
            "block": block.to_json(),
        });
        let obj = self.call("process", body, Mode::Once).await?;
        if let Some(e) = json::error_of(&obj) {
            return Ok(ProcessResult::Rejected(LedgerRejection::from_message(&e)));
        }
        let hash = json::req(&obj, "hash", json::as_hash)?;
        let ours = block.hash();
        if hash != ours {
            return Err(NodeError::Protocol(format!(
                "process answered hash {hash} for block {ours}"
            )));
        }
        Ok(ProcessResult::Processed(hash))
    }

    /// [`process`](Self::process), and when its outcome is unknown (any error) or `Old block`,
    /// asks `block_info` whether the ledger holds the block: present → `Processed(hash)`.
    /// When the block is absent after an unknown outcome, the original error is returned (it
    /// may still arrive later; the caller treats the payment as not settled).
    pub async fn process_or_resolve(&self, block: &StateBlock) -> Result<ProcessResult, NodeError> {
        let hash = block.hash();
        let outcome = self.process(block).await;
        match outcome {
            Ok(ProcessResult::Rejected(LedgerRejection::OldBlock)) => {
                match self.block_info(&hash).await? {
                    Some(_) => Ok(ProcessResult::Processed(hash)),
                    None => Ok(ProcessResult::Rejected(LedgerRejection::OldBlock)),
                }
            }
            Ok(other) => Ok(other),
            Err(err) => {
                debug!(%hash, error = %err, "process outcome unknown; resolving with block_info");
                match self.block_info(&hash).await {
                    Ok(Some(_)) => Ok(ProcessResult::Processed(hash)),
                    Ok(None) | Err(_) => Err(err),
                }
            }
        }
    }

    /// `block_confirm`: asks the node to (re)start an election, or to re-announce a block that
    /// is already confirmed.
    pub async fn block_confirm(&self, hash: &BlockHash) -> Result<(), NodeError> {
        let body = json!({"action": "block_confirm", "hash": hash.to_hex()});
        let obj = self.call("block_confirm", body, Mode::Idempotent).await?;
        if let Some(e) = json::error_of(&obj) {
            return Err(NodeError::Node(e));
        }
        Ok(())
    }

    /// `work_generate` (a control action) for `root` at `difficulty`. The returned work is
    /// checked locally against the requested difficulty.
    pub async fn work_generate(&self, root: &[u8; 32], difficulty: u64) -> Result<u64, NodeError> {
        let body = json!({
            "action": "work_generate",
            "hash": nanogate_protocol::hex::encode_upper(root),
            "difficulty": format!("{difficulty:016x}"),
        });
        let obj = self.call("work_generate", body, Mode::Idempotent).await?;
        if let Some(e) = json::error_of(&obj) {
            return Err(NodeError::Node(e));
        }
        let work = json::req(&obj, "work", json::as_work_value)?;
        let reached = work_difficulty(root, work);
        if reached < difficulty {
            return Err(NodeError::Protocol(format!(
                "work_generate returned work {work:016x} reaching {reached:016x} < {difficulty:016x}"
            )));
        }
        if let Some(reported) = json::opt(&obj, "difficulty", json::as_work_value) {
            if reported != reached {
                debug!(
                    reported,
                    reached, "work_generate difficulty differs from local value"
                );
            }
        }
        Ok(work)
    }

    /// `receivable` of `account` (confirmed sends not yet received), at most `count` hashes.
    pub async fn receivable(
        &self,
        account: &PublicKey,
        count: u64,
    ) -> Result<Vec<BlockHash>, NodeError> {
        let body = json!({
            "action": "receivable",
            "account": account.to_address(),
            "count": count.to_string(),
            "source": "true",
            "include_only_confirmed": "true",
        });
        let obj = self.call("receivable", body, Mode::Idempotent).await?;
        if let Some(e) = json::error_of(&obj) {
            return if e.trim().eq_ignore_ascii_case("Account not found") {
                Ok(Vec::new())
            } else {
                Err(NodeError::Node(e))
            };
        }
        json::parse_receivable(&obj)
    }

    /// One page of `account_history` (`raw`, so every block of the chain with its `link`):
    /// from `head` towards the open block, or with `reverse` from `head` (the open block when
    /// `None`) towards the frontier. `Ok(None)` when `head` is not (or no longer) on the
    /// account's chain.
    pub async fn account_history(
        &self,
        account: &PublicKey,
        head: Option<&BlockHash>,
        reverse: bool,
        count: u64,
    ) -> Result<Option<HistoryPage>, NodeError> {
        let mut body = json!({
            "action": "account_history",
            "account": account.to_address(),
            "count": count.to_string(),
            "raw": "true",
            "reverse": if reverse { "true" } else { "false" },
        });
        if let Some(h) = head {
            body["head"] = json!(h.to_hex());
        }
        let obj = self.call("account_history", body, Mode::Idempotent).await?;
        if let Some(e) = json::error_of(&obj) {
            let e_l = e.trim().to_ascii_lowercase();
            return if e_l == "block not found" {
                Ok(None)
            } else if e_l == "account not found" {
                Ok(Some(HistoryPage::default()))
            } else {
                Err(NodeError::Node(e))
            };
        }
        json::parse_history(&obj, reverse).map(Some)
    }

    /// Any other action, with failover and retries (the action must be idempotent). Returns
    /// the answer object as is, including an `error` member.
    pub async fn raw_call(&self, body: Value) -> Result<Obj, NodeError> {
        let action = body
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        self.call(&action, body, Mode::Idempotent).await
    }

    /// Sends `body` with failover. Returns the first usable JSON object answer.
    async fn call(&self, action: &str, body: Value, mode: Mode) -> Result<Obj, NodeError> {
        let inner = &self.inner;
        let n = inner.nodes.len();
        if n == 0 {
            return Err(NodeError::Unavailable {
                tried: 0,
                last: "no RPC node configured".into(),
            });
        }
        let rounds = match mode {
            Mode::Idempotent => inner.retries.saturating_add(1),
            Mode::Once => 1,
        };
        let timeout = if action == "work_generate" {
            inner.work_timeout
        } else {
            inner.call_timeout
        };
        let mut tried = 0usize;
        let mut last = String::new();
        let mut backoff = inner.backoff;
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            let start = inner.preferred.load(Ordering::Relaxed) % n;
            for k in 0..n {
                let idx = (start + k) % n;
                let (Some(url), Some(label)) = (inner.nodes.get(idx), inner.labels.get(idx)) else {
                    continue;
                };
                tried += 1;
                let t0 = Instant::now();
                match self.attempt(url, &body, timeout).await {
                    Ok(obj) => {
                        let secs = t0.elapsed().as_secs_f64();
                        debug!(node = %label, action, secs, "rpc ok");
                        if let Some(m) = &inner.metrics {
                            m.on_rpc_latency(action, secs);
                        }
                        inner.preferred.store(idx, Ordering::Relaxed);
                        return Ok(obj);
                    }
                    Err(e) => {
                        debug!(node = %label, action, error = %e.detail, "rpc attempt failed");
                        if let Some(m) = &inner.metrics {
                            m.on_rpc_error(url, action);
                        }
                        last = format!("{label}: {}", e.detail);
                        if mode == Mode::Once && !e.not_sent {
                            // The node may have applied it: never re-send elsewhere.
                            return Err(NodeError::Unavailable { tried, last });
                        }
                    }
                }
            }
        }
        Err(NodeError::Unavailable { tried, last })
    }

    async fn attempt(
        &self,
        url: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Obj, AttemptError> {
        let sent = |detail: String| AttemptError {
            not_sent: false,
            detail,
        };
        let resp = self
            .inner
            .http
            .post(url)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| AttemptError {
                // A connect error (refused, unreachable, connect timeout) means no byte of the
                // request reached the node.
                not_sent: e.is_connect(),
                detail: describe(&e),
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(sent(format!("HTTP {status}")));
        }
        if resp.content_length().is_some_and(|l| l > MAX_BODY as u64) {
            return Err(sent("answer too large".into()));
        }
        let bytes = read_capped(resp).await.map_err(sent)?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| sent(format!("HTTP 200 with a non-JSON body ({e})")))?;
        match value {
            Value::Object(obj) => Ok(obj),
            other => Err(sent(format!(
                "HTTP 200 with a non-object JSON body {}",
                json::short(&other)
            ))),
        }
    }
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_BODY {
                    return Err("answer too large".into());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(describe(&e)),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect failed"
    } else if e.is_body() || e.is_decode() {
        "bad body"
    } else {
        "request failed"
    };
    // The source chain says "connection refused" etc. without echoing the request.
    let mut detail = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
