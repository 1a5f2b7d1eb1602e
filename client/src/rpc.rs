//! The few node RPC calls a payer needs (`account_info`, `work_generate`, `block_info`,
//! `version`), tolerant of nano-node's and RsNano's differences: errors arrive as
//! `{"error": …}` with HTTP 200, booleans are strings, hex case varies.

use nanogate_protocol::nano::work::{difficulty, work_from_hex};
use nanogate_protocol::nano::{parse_raw, BlockHash, Network, PublicKey};
use serde_json::{json, Value};
use std::time::Duration;
use thiserror::Error;

/// Longest node-supplied text we repeat in an error.
const MAX_DETAIL: usize = 200;

/// Why an RPC call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RpcError {
    #[error("node unreachable at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("node answered HTTP {status} to `{action}`: {body}")]
    Status {
        action: &'static str,
        status: u16,
        body: String,
    },
    #[error("node refused `{action}`: {message}")]
    Node {
        action: &'static str,
        message: String,
    },
    #[error("node answer to `{action}` is unreadable: {message}")]
    BadAnswer {
        action: &'static str,
        message: String,
    },
}

/// What `account_info` says about the payer: everything a send block builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub frontier: BlockHash,
    pub balance: u128,
    pub representative: PublicKey,
}

/// [`AccountInfo`] plus what the node says is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub info: AccountInfo,
    /// `None` when the node does not report it.
    pub confirmed_frontier: Option<BlockHash>,
}

impl AccountState {
    /// Whether the head block is cemented (unknown counts as yes).
    pub fn frontier_confirmed(&self) -> bool {
        self.confirmed_frontier
            .is_none_or(|c| c == self.info.frontier)
    }
}

/// What `block_info` says about one of our blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// The ledger has never seen it (or pruned it: we treat that as unknown).
    NotFound,
    /// Published, not cemented yet.
    Unconfirmed,
    /// Cemented: the money moved.
    Confirmed,
}

/// `version`: which network the node is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersion {
    /// `network` as the node prints it (`live`, `beta`, `dev`, `test`).
    pub network: String,
    pub vendor: Option<String>,
}

impl NodeVersion {
    pub fn network(&self) -> Option<Network> {
        Network::from_rpc_name(&self.network)
    }
}

/// A small JSON-RPC client for one node.
#[derive(Debug, Clone)]
pub struct NodeRpc {
    url: String,
    http: reqwest::Client,
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_DETAIL {
        return s.to_owned();
    }
    let mut cut = MAX_DETAIL;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

fn str_field<'a>(v: &'a Value, action: &'static str, key: &str) -> Result<&'a str, RpcError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::BadAnswer {
            action,
            message: format!("`{key}` is missing or not a string"),
        })
}

fn bad(action: &'static str, message: impl std::fmt::Display) -> RpcError {
    RpcError::BadAnswer {
        action,
        message: clip(&message.to_string()),
    }
}

impl NodeRpc {
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<Self, RpcError> {
        let url = url.into();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RpcError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(NodeRpc { url, http })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Posts `body` and returns the JSON answer, turning `{"error": …}` into [`RpcError::Node`].
    pub async fn call(&self, action: &'static str, mut body: Value) -> Result<Value, RpcError> {
        if let Some(obj) = body.as_object_mut() {
            obj.insert("action".into(), Value::String(action.into()));
        }
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| RpcError::Unreachable {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| RpcError::Unreachable {
            url: self.url.clone(),
            message: e.to_string(),
        })?;
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            return Err(RpcError::Status {
                action,
                status: status.as_u16(),
                body: clip(text.trim()),
            });
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(action, e))?;
        if let Some(err) = value.get("error") {
            let message = err
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| err.to_string());
            return Err(RpcError::Node {
                action,
                message: clip(&message),
            });
        }
        if !value.is_object() {
            return Err(bad(action, "not a JSON object"));
        }
        Ok(value)
    }

    /// `account_info` for `account`. `Ok(None)` when the account is not opened.
    pub async fn account_info(&self, account: &PublicKey) -> Result<Option<AccountInfo>, RpcError> {
        Ok(self.account_state(account).await?.map(|s| s.info))
    }

    /// `account_info` plus the confirmed frontier, when the node reports it
    /// (`confirmed_frontier`, or `confirmation_height_frontier` on older nodes).
    pub async fn account_state(
        &self,
        account: &PublicKey,
    ) -> Result<Option<AccountState>, RpcError> {
        const A: &str = "account_info";
        let answer = self
            .call(
                A,
                json!({"account": account.to_address(), "representative": "true",
                       "include_confirmed": "true"}),
            )
            .await;
        let v = match answer {
            Err(RpcError::Node { message, .. }) if message.contains("Account not found") => {
                return Ok(None)
            }
            other => other?,
        };
        let frontier = BlockHash::from_hex(str_field(&v, A, "frontier")?)
            .map_err(|e| bad(A, format!("frontier: {e}")))?;
        let balance =
            parse_raw(str_field(&v, A, "balance")?).map_err(|e| bad(A, format!("balance: {e}")))?;
        let representative = PublicKey::from_address(str_field(&v, A, "representative")?)
            .map_err(|e| bad(A, format!("representative: {e}")))?;
        let confirmed_frontier = ["confirmed_frontier", "confirmation_height_frontier"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .and_then(|h| BlockHash::from_hex(h).ok());
        Ok(Some(AccountState {
            info: AccountInfo {
                frontier,
                balance,
                representative,
            },
            confirmed_frontier,
        }))
    }

    /// `work_generate` on `root` for `threshold`. The answer is checked locally: work that
    /// does not reach the threshold is an error, never used.
    pub async fn work_generate(&self, root: &[u8; 32], threshold: u64) -> Result<u64, RpcError> {
        const A: &str = "work_generate";
        let v = self
            .call(
                A,
                json!({
                    "hash": nanogate_protocol::hex::encode_upper(root),
                    "difficulty": format!("{threshold:016x}"),
                }),
            )
            .await?;
        let work =
            work_from_hex(str_field(&v, A, "work")?).map_err(|e| bad(A, format!("work: {e}")))?;
        if difficulty(root, work) < threshold {
            return Err(bad(A, "returned work does not reach the threshold"));
        }
        Ok(work)
    }

    /// `block_info`: whether the ledger knows `hash` and whether it is confirmed.
    pub async fn block_status(&self, hash: &BlockHash) -> Result<BlockStatus, RpcError> {
        const A: &str = "block_info";
        let answer = self
            .call(A, json!({"hash": hash.to_hex(), "json_block": "true"}))
            .await;
        let v = match answer {
            Err(RpcError::Node { message, .. }) if message.contains("not found") => {
                return Ok(BlockStatus::NotFound)
            }
            other => other?,
        };
        match v.get("confirmed") {
            Some(Value::String(s)) if s == "true" || s == "1" => Ok(BlockStatus::Confirmed),
            Some(Value::Bool(true)) => Ok(BlockStatus::Confirmed),
            Some(Value::String(s)) if s == "false" || s == "0" => Ok(BlockStatus::Unconfirmed),
            Some(Value::Bool(false)) => Ok(BlockStatus::Unconfirmed),
            _ => Err(bad(A, "`confirmed` is missing or not a boolean")),
        }
    }

    /// `version`: the node's network.
    pub async fn version(&self) -> Result<NodeVersion, RpcError> {
        const A: &str = "version";
        let v = self.call(A, json!({})).await?;
        Ok(NodeVersion {
            network: str_field(&v, A, "network")?.to_owned(),
            vendor: v
                .get("node_vendor")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}
