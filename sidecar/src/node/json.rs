//! Tolerant readers for nano-node / RsNano JSON answers. Nothing here panics on node data.

use super::{AccountInfo, BlockInfo, NodeError, VersionInfo};
use nanogate_protocol::nano::{parse_raw, BlockHash, PublicKey, StateBlock};
use serde_json::{Map, Value};

pub(crate) type Obj = Map<String, Value>;

fn bad(what: &str, detail: impl std::fmt::Display) -> NodeError {
    NodeError::Protocol(format!("{what}: {detail}"))
}

/// The string form of a scalar: nodes print numbers as strings, but accept real numbers too.
fn scalar(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        _ => None,
    }
}

pub(crate) fn as_u128(v: &Value) -> Option<u128> {
    parse_raw(scalar(v)?.trim()).ok()
}

pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    let s = scalar(v)?;
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `"true"`, `"false"`, `"1"`, `"0"` or a JSON boolean.
pub(crate) fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_u64().and_then(|n| match n {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        }),
        _ => None,
    }
}

pub(crate) fn as_hash(v: &Value) -> Option<BlockHash> {
    BlockHash::from_hex(v.as_str()?.trim()).ok()
}

/// A `nano_`/`xrb_` address or 64 hex characters.
pub(crate) fn as_account(v: &Value) -> Option<PublicKey> {
    let s = v.as_str()?.trim();
    if s.starts_with("nano_") || s.starts_with("xrb_") {
        PublicKey::from_address(s).ok()
    } else {
        PublicKey::from_hex(s).ok()
    }
}

/// Work or difficulty: 16 hex digits (nano-node), or a decimal u64 (RsNano's `difficulty`).
pub(crate) fn as_work_value(v: &Value) -> Option<u64> {
    let s = scalar(v)?;
    let s = s.trim();
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return nanogate_protocol::nano::work::work_from_hex(s).ok();
    }
    as_u64(&Value::String(s.to_owned()))
}

/// nano-node writes empty lists and objects as `""`; RsNano as `[]` / `{}`.
pub(crate) fn is_empty_collection(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// A field that is absent, `null` or `""` counts as absent.
pub(crate) fn field<'a>(obj: &'a Obj, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !is_empty_collection(v))
}

pub(crate) fn req<'a, T>(
    obj: &'a Obj,
    name: &str,
    parse: impl Fn(&'a Value) -> Option<T>,
) -> Result<T, NodeError> {
    let v = field(obj, name).ok_or_else(|| bad(name, "missing"))?;
    parse(v).ok_or_else(|| bad(name, format!("unparseable value {}", short(v))))
}

pub(crate) fn opt<'a, T>(
    obj: &'a Obj,
    name: &str,
    parse: impl Fn(&'a Value) -> Option<T>,
) -> Option<T> {
    field(obj, name).and_then(parse)
}

/// A short rendering of node data for error messages and logs.
pub(crate) fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 120 {
        s
    } else {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// The `error` member of an answer, if any (a string; nano.to also sends numbers).
pub(crate) fn error_of(obj: &Obj) -> Option<String> {
    match obj.get("error")? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => {
            let msg = obj.get("message").and_then(Value::as_str).unwrap_or("");
            Some(format!("{} {msg}", short(other)).trim().to_owned())
        }
    }
}

pub(crate) fn parse_version(obj: &Obj) -> Result<VersionInfo, NodeError> {
    let text = |name: &str| opt(obj, name, |v| scalar(v).map(|s| s.into_owned()));
    Ok(VersionInfo {
        network: req(obj, "network", |v| v.as_str().map(str::to_owned))?,
        network_identifier: opt(obj, "network_identifier", as_hash),
        node_vendor: text("node_vendor").unwrap_or_default(),
        rpc_version: text("rpc_version"),
        protocol_version: text("protocol_version"),
    })
}

pub(crate) fn parse_account_info(obj: &Obj) -> Result<AccountInfo, NodeError> {
    Ok(AccountInfo {
        frontier: req(obj, "frontier", as_hash)?,
        balance: req(obj, "balance", as_u128)?,
        confirmed_frontier: opt(obj, "confirmed_frontier", as_hash)
            .or_else(|| opt(obj, "confirmation_height_frontier", as_hash)),
        confirmed_balance: opt(obj, "confirmed_balance", as_u128),
        confirmed_height: opt(obj, "confirmed_height", as_u64)
            .or_else(|| opt(obj, "confirmation_height", as_u64)),
        representative: opt(obj, "representative", as_account),
        block_count: opt(obj, "block_count", as_u64).unwrap_or(0),
    })
}

/// A state block in node JSON; `None` for legacy blocks or anything unparseable.
pub(crate) fn state_block(v: &Value) -> Option<StateBlock> {
    let obj = v.as_object()?;
    if obj.get("type").and_then(Value::as_str) != Some("state") {
        return None;
    }
    StateBlock::from_json(v).ok()
}

pub(crate) fn parse_block_info(hash: &BlockHash, obj: &Obj) -> Result<BlockInfo, NodeError> {
    let contents = match obj.get("contents") {
        // Without `json_block` nano-node sends the block as a JSON string.
        Some(Value::String(s)) if !s.is_empty() => serde_json::from_str::<Value>(s)
            .ok()
            .as_ref()
            .and_then(state_block),
        Some(v) => state_block(v),
        None => None,
    };
    if let Some(block) = &contents {
        if block.hash() != *hash {
            return Err(bad(
                "contents",
                format!("block hashes to {} instead of {hash}", block.hash()),
            ));
        }
    }
    let account = opt(obj, "block_account", as_account)
        .or_else(|| contents.as_ref().map(|b| b.account))
        .ok_or_else(|| bad("block_account", "missing"))?;
    let balance = opt(obj, "balance", as_u128)
        .or_else(|| contents.as_ref().map(|b| b.balance))
        .ok_or_else(|| bad("balance", "missing"))?;
    let successor = opt(obj, "successor", as_hash).filter(|h| !h.is_zero());
    Ok(BlockInfo {
        hash: *hash,
        account,
        amount: opt(obj, "amount", as_u128).unwrap_or(0),
        balance,
        height: opt(obj, "height", as_u64).unwrap_or(0),
        confirmed: opt(obj, "confirmed", as_bool).unwrap_or(false),
        subtype: opt(obj, "subtype", |v| v.as_str().map(str::to_owned)).or_else(|| {
            obj.get("contents")
                .and_then(|c| c.get("subtype"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        }),
        contents,
        local_timestamp: opt(obj, "local_timestamp", as_u64).unwrap_or(0),
        successor,
    })
}

/// `receivable` with `source`: `{"blocks": {"<hash>": {"amount", "source"}}}`; plain and
/// threshold shapes (`["<hash>"]`, `{"<hash>": "<amount>"}`) give the hashes too. Empty lists
/// come as `""` (nano-node) or `[]`/`{}` (RsNano).
pub(crate) fn parse_receivable(obj: &Obj) -> Result<Vec<BlockHash>, NodeError> {
    let Some(blocks) = field(obj, "blocks") else {
        return Ok(Vec::new());
    };
    let hashes: Vec<BlockHash> = match blocks {
        Value::Object(m) => m
            .keys()
            .filter_map(|k| as_hash(&Value::from(k.as_str())))
            .collect(),
        Value::Array(a) => a.iter().filter_map(as_hash).collect(),
        other => return Err(bad("blocks", format!("unexpected {}", short(other)))),
    };
    Ok(hashes)
}

/// One block of an account's own chain, from `account_history` with `raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBlock {
    pub hash: BlockHash,
    pub height: u64,
    /// `send`, `receive`, `change`, `epoch`, `open` (legacy), as the node names it.
    pub subtype: Option<String>,
    /// For a receive: the send it received (the state block's `link`).
    pub link: Option<BlockHash>,
    pub local_timestamp: u64,
}

/// A page of `account_history`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    pub blocks: Vec<ChainBlock>,
    /// Where the next page starts (`next` when walking with `reverse`, else `previous`).
    pub next: Option<BlockHash>,
}

pub(crate) fn parse_history(obj: &Obj, reverse: bool) -> Result<HistoryPage, NodeError> {
    let entries = match field(obj, "history") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => return Err(bad("history", format!("unexpected {}", short(other)))),
    };
    let mut blocks = Vec::with_capacity(entries.len());
    for e in &entries {
        let Some(o) = e.as_object() else {
            return Err(bad("history", "an entry is not an object"));
        };
        blocks.push(ChainBlock {
            hash: req(o, "hash", as_hash)?,
            height: opt(o, "height", as_u64).unwrap_or(0),
            subtype: opt(o, "subtype", |v| v.as_str().map(str::to_owned))
                .or_else(|| opt(o, "type", |v| v.as_str().map(str::to_owned))),
            link: opt(o, "link", as_hash).filter(|h| !h.is_zero()),
            local_timestamp: opt(o, "local_timestamp", as_u64).unwrap_or(0),
        });
    }
    let next = opt(obj, if reverse { "next" } else { "previous" }, as_hash);
    Ok(HistoryPage { blocks, next })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn receivable_shapes_all_give_hashes() {
        let h = "AB".repeat(32);
        for v in [
            json!({"blocks": {h.clone(): {"amount": "5", "source": "nano_x"}}}),
            json!({"blocks": {h.clone(): "5"}}),
            json!({"blocks": [h.clone()]}),
        ] {
            let got = parse_receivable(v.as_object().unwrap_or(&Obj::new())).unwrap();
            assert_eq!(got, vec![BlockHash::from_hex(&h).unwrap()]);
        }
        for empty in [
            json!({"blocks": ""}),
            json!({"blocks": []}),
            json!({"blocks": {}}),
            json!({}),
        ] {
            assert!(parse_receivable(empty.as_object().unwrap_or(&Obj::new()))
                .unwrap()
                .is_empty());
        }
        assert!(parse_receivable(json!({"blocks": 5}).as_object().unwrap_or(&Obj::new())).is_err());
    }

    #[test]
    fn raw_history_entries_carry_hash_link_and_paging() {
        let send = "CD".repeat(32);
        let v = json!({"account": "nano_x", "history": [
            {"type": "state", "subtype": "receive", "hash": "AB".repeat(32), "link": send,
             "height": "3", "local_timestamp": "1700000000", "amount": "5"},
            {"type": "state", "subtype": "change", "hash": "EF".repeat(32), "link": "0".repeat(64),
             "height": "2", "local_timestamp": "1699999999"}
        ], "next": "12".repeat(32)});
        let page = parse_history(v.as_object().unwrap_or(&Obj::new()), true).unwrap();
        assert_eq!(page.blocks.len(), 2);
        assert_eq!(page.blocks[0].subtype.as_deref(), Some("receive"));
        assert_eq!(page.blocks[0].link, BlockHash::from_hex(&send).ok());
        assert_eq!(page.blocks[0].height, 3);
        assert_eq!(page.blocks[1].link, None, "a zero link is no link");
        assert_eq!(page.next, BlockHash::from_hex(&"12".repeat(32)).ok());
        let last = json!({"account": "nano_x", "history": ""});
        assert_eq!(
            parse_history(last.as_object().unwrap_or(&Obj::new()), true).unwrap(),
            HistoryPage::default()
        );
        let bad = json!({"history": [{"height": "1"}]});
        assert!(parse_history(bad.as_object().unwrap_or(&Obj::new()), true).is_err());
    }

    #[test]
    fn scalars_tolerate_node_spellings() {
        assert_eq!(as_u64(&json!("12")), Some(12));
        assert_eq!(as_u64(&json!(12)), Some(12));
        assert_eq!(as_u64(&json!("-1")), None);
        assert_eq!(as_u64(&json!("")), None);
        assert_eq!(as_bool(&json!("true")), Some(true));
        assert_eq!(as_bool(&json!("0")), Some(false));
        assert_eq!(as_bool(&json!(true)), Some(true));
        assert_eq!(as_bool(&json!("yes")), None);
        assert_eq!(
            as_work_value(&json!("18437121615789254959")),
            Some(18437121615789254959)
        );
        assert_eq!(
            as_work_value(&json!("fffffff93c41ec94")),
            Some(0xfffffff93c41ec94)
        );
        assert_eq!(
            as_work_value(&json!("FFFFFFF93C41EC94")),
            Some(0xfffffff93c41ec94)
        );
        assert!(is_empty_collection(&json!("")));
        assert!(is_empty_collection(&json!([])));
        assert!(!is_empty_collection(&json!("x")));
    }

    #[test]
    fn error_member_variants() {
        let o = json!({"error": "Block not found"});
        assert_eq!(
            error_of(o.as_object().unwrap_or(&Obj::new())).as_deref(),
            Some("Block not found")
        );
        let o = json!({"error": 429, "message": "slow down"});
        assert_eq!(
            error_of(o.as_object().unwrap_or(&Obj::new())).as_deref(),
            Some("429 slow down")
        );
    }
}
