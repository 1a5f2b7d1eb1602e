//! The RPC server: nano-node's JSON (numbers as strings, "true"/"false", empty lists as "",
//! errors as {"error": …} with HTTP 200), the `/admin/faults` route, and the fault hooks.

use crate::faults::{FaultsRequest, RpcMode};
use crate::ledger::{BlockEntry, Body, Ledger, Subtype, GENESIS_AMOUNT, THRESHOLDS};
use crate::{now_ms, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use nanogate_protocol::nano::network::DEV_GENESIS_HASH;
use nanogate_protocol::nano::work::{difficulty, generate, work_from_hex, work_to_hex};
use nanogate_protocol::nano::{parse_raw, BlockHash, PublicKey, StateBlock};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// An RPC error message (answered as `{"error": msg}` with HTTP 200).
#[derive(Debug)]
pub(crate) struct RpcError(String);

impl<T: std::fmt::Display> From<T> for RpcError {
    fn from(m: T) -> Self {
        RpcError(m.to_string())
    }
}

type Res = Result<Value, RpcError>;

const PARSE: &str = "Unable to parse JSON";

/// Serves RPC on `listener` until shutdown, closing the port while the mode is `Refuse` and
/// binding `addr` again afterwards.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, addr: SocketAddr) {
    let app = router(Arc::clone(&shared));
    let mut mode = shared.faults.watch_rpc();
    let mut shutdown = shared.shutdown.clone();
    let mut listener = Some(listener);
    loop {
        if *shutdown.borrow() {
            return;
        }
        if *mode.borrow_and_update() == RpcMode::Refuse {
            listener = None;
            tokio::select! {
                _ = mode.wait_for(|m| *m != RpcMode::Refuse) => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot bind the RPC port again; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut m2 = shared.faults.watch_rpc();
        let mut s2 = shared.shutdown.clone();
        let signal = async move {
            tokio::select! {
                _ = m2.wait_for(|m| *m == RpcMode::Refuse) => {}
                _ = crate::stopped(&mut s2) => {}
            }
        };
        if let Err(e) = axum::serve(crate::nodelay(l), app.clone())
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::error!(error = %e, "RPC server stopped");
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/admin/faults", get(admin_get).post(admin_post))
        .route("/admin/stats", get(admin_stats))
        .fallback(rpc_entry)
        .with_state(shared)
}

pub(crate) async fn admin_get(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(s.faults.status_json())
}

/// `{"rpc": {"<action>": <requests answered>, …}}`.
pub(crate) async fn admin_stats(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "rpc": s.rpc_counts() }))
}

pub(crate) async fn admin_post(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: FaultsRequest = if body.iter().all(u8::is_ascii_whitespace) {
        FaultsRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "error": e.to_string() })),
                )
                    .into_response()
            }
        }
    };
    s.faults.apply(req);
    Json(s.faults.status_json()).into_response()
}

async fn rpc_entry(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let latency = s.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if s.faults.rpc_mode() == RpcMode::Fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected RPC failure").into_response();
    }
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(req)) => match req.get("action").and_then(Value::as_str) {
            Some(action) => {
                let action = action.to_string();
                tracing::debug!(%action, "rpc");
                s.count_rpc(&action);
                handle(&s, &action, Req(&req)).await
            }
            None => Err(RpcError::from(PARSE)),
        },
        _ => Err(RpcError::from(PARSE)),
    };
    Json(answer.unwrap_or_else(|e| json!({ "error": e.0 }))).into_response()
}

/// Request accessors with nano-node's leniency: strings, numbers and booleans all read as text.
#[derive(Clone, Copy)]
struct Req<'a>(&'a Map<String, Value>);

impl Req<'_> {
    fn text(&self, k: &str) -> Option<String> {
        match self.0.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    /// `"true"`/`"false"`, `"1"`/`"0"` or JSON booleans; anything else is the default.
    fn flag(&self, k: &str, default: bool) -> bool {
        match self.0.get(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => match s.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => default,
            },
            _ => default,
        }
    }

    fn required(&self, k: &str) -> Result<String, RpcError> {
        self.text(k).ok_or_else(|| RpcError::from(PARSE))
    }

    fn account(&self, k: &str) -> Result<PublicKey, RpcError> {
        parse_account(&self.required(k)?)
    }

    fn hash(&self, k: &str) -> Result<BlockHash, RpcError> {
        BlockHash::from_hex(&self.required(k)?).map_err(|_| RpcError::from("Invalid block hash"))
    }

    fn count(&self, default: u64) -> Result<u64, RpcError> {
        match self.text("count") {
            None => Ok(default),
            Some(t) => match t.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err("Invalid count".into()),
            },
        }
    }

    fn offset(&self) -> Result<u64, RpcError> {
        match self.text("offset") {
            None => Ok(0),
            Some(t) => t.parse::<u64>().map_err(|_| "Invalid offset".into()),
        }
    }

    fn threshold(&self) -> Result<u128, RpcError> {
        match self.text("threshold") {
            None => Ok(0),
            Some(t) => parse_raw(&t).map_err(|_| "Bad threshold number".into()),
        }
    }

    fn list(&self, k: &str) -> Result<Vec<String>, RpcError> {
        match self.0.get(k) {
            Some(Value::Array(items)) => Ok(items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()),
            // nano-node's property tree prints an empty list as "".
            Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
            _ => Err(PARSE.into()),
        }
    }
}

fn parse_account(s: &str) -> Result<PublicKey, RpcError> {
    PublicKey::from_address(s).map_err(|_| RpcError::from("Bad account number"))
}

/// nano-node prints an empty list or object as "".
fn or_empty(v: Value) -> Value {
    match &v {
        Value::Array(a) if a.is_empty() => Value::from(""),
        Value::Object(o) if o.is_empty() => Value::from(""),
        _ => v,
    }
}

fn tf(b: bool) -> Value {
    Value::from(if b { "true" } else { "false" })
}

fn one_zero(b: bool) -> Value {
    Value::from(if b { "1" } else { "0" })
}

async fn handle(s: &Arc<Shared>, action: &str, r: Req<'_>) -> Res {
    match action {
        "version" => Ok(version()),
        "block_count" => {
            let l = s.lock();
            Ok(json!({
                "count": l.block_count().to_string(),
                "unchecked": l.unchecked_count().to_string(),
                "cemented": l.cemented_count().to_string(),
            }))
        }
        "account_info" => account_info(&s.lock(), r),
        "account_balance" => account_balance(&s.lock(), r),
        "account_block_count" => {
            let a = r.account("account")?;
            let l = s.lock();
            let info = l.account(&a).ok_or("Account not found")?;
            Ok(json!({ "block_count": info.block_count.to_string() }))
        }
        "account_representative" => {
            let a = r.account("account")?;
            let l = s.lock();
            let info = l.account(&a).ok_or("Account not found")?;
            Ok(json!({ "representative": info.representative.to_address() }))
        }
        "account_weight" => {
            let a = r.account("account")?;
            Ok(json!({ "weight": s.lock().weight(&a).to_string() }))
        }
        "block_account" => {
            let h = r.hash("hash")?;
            let l = s.lock();
            let e = l.block(&h).ok_or("Block not found")?;
            Ok(json!({ "account": e.account.to_address() }))
        }
        "block_info" => {
            let h = r.hash("hash")?;
            let l = s.lock();
            let e = l.block(&h).ok_or("Block not found")?;
            Ok(block_info_json(&l, e, r))
        }
        "blocks_info" => blocks_info(&s.lock(), r),
        "process" => process(s, r),
        "receivable" | "pending" => {
            let mut v = receivable(&s.lock(), r)?;
            if action == "pending" {
                v["deprecated"] = Value::from("1");
            }
            Ok(v)
        }
        "accounts_receivable" | "accounts_pending" => {
            let mut v = accounts_receivable(&s.lock(), r)?;
            if action == "accounts_pending" {
                v["deprecated"] = Value::from("1");
            }
            Ok(v)
        }
        "receivable_exists" | "pending_exists" => {
            let h = r.hash("hash")?;
            let only_confirmed = r.flag("include_only_confirmed", true);
            let l = s.lock();
            let e = l.block(&h).ok_or("Block not found")?;
            let exists = e.destination.and_then(|d| l.pending_get(&d, &h)).is_some()
                && (!only_confirmed || l.is_confirmed(&h));
            let mut v = json!({ "exists": one_zero(exists) });
            if action == "pending_exists" {
                v["deprecated"] = Value::from("1");
            }
            Ok(v)
        }
        "block_confirm" => {
            let h = r.hash("hash")?;
            let confirmed = s.lock().confirmed(&h).ok_or("Block not found")?;
            if confirmed {
                s.reannounce(&h);
            } else {
                s.schedule(h, s.delay);
            }
            Ok(json!({ "started": "1" }))
        }
        "work_generate" => work_generate(r).await,
        "work_validate" => work_validate(r),
        "account_history" => account_history(&s.lock(), r),
        "telemetry" => Ok(telemetry(s)),
        "confirmation_history" => {
            let filter = match r.text("hash") {
                Some(t) => Some(
                    BlockHash::from_hex(&t).map_err(|_| RpcError::from("Invalid block hash"))?,
                ),
                None => None,
            };
            let h = s
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let list: Vec<Value> = h
                .iter()
                .filter(|c| filter.is_none_or(|f| c["hash"].as_str() == Some(f.to_hex().as_str())))
                .cloned()
                .collect();
            let count = list.len() as u64;
            let total: u64 = list
                .iter()
                .filter_map(|c| c["duration"].as_str()?.parse::<u64>().ok())
                .sum();
            Ok(json!({
                "confirmation_stats": {
                    "count": count.to_string(),
                    "average": total.checked_div(count).unwrap_or(0).to_string(),
                },
                "confirmations": or_empty(Value::Array(list)),
            }))
        }
        _ => Err("Unknown command".into()),
    }
}

fn version() -> Value {
    json!({
        "rpc_version": "1",
        "store_version": "24",
        "protocol_version": "21",
        "node_vendor": concat!("nanogate-devnet ", env!("CARGO_PKG_VERSION")),
        "store_vendor": "in-memory",
        "network": "dev",
        "network_identifier": DEV_GENESIS_HASH,
        "build_info": concat!("nanogate-devnet ", env!("CARGO_PKG_VERSION")),
    })
}

fn telemetry(s: &Shared) -> Value {
    let l = s.lock();
    let now = now_ms();
    json!({
        "block_count": l.block_count().to_string(),
        "cemented_count": l.cemented_count().to_string(),
        "unchecked_count": l.unchecked_count().to_string(),
        "account_count": l.accounts().count().to_string(),
        "bandwidth_cap": "10485760",
        "uptime": (now.saturating_sub(s.started_ms) / 1000).to_string(),
        "peer_count": "0",
        "protocol_version": "21",
        "genesis_block": DEV_GENESIS_HASH,
        "major_version": "28",
        "minor_version": "2",
        "patch_version": "0",
        "pre_release_version": "0",
        "maker": "0",
        "timestamp": now.to_string(),
        "active_difficulty": work_to_hex(THRESHOLDS.epoch_2),
    })
}

fn account_info(l: &Ledger, r: Req<'_>) -> Res {
    let account = r.account("account")?;
    let include_confirmed = r.flag("include_confirmed", false);
    let info = l.account(&account).ok_or("Account not found")?;
    let mut o = Map::new();
    let put = |o: &mut Map<String, Value>, k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    put(&mut o, "frontier", info.head.to_hex().into());
    put(&mut o, "open_block", info.open_block.to_hex().into());
    put(&mut o, "representative_block", info.head.to_hex().into());
    put(&mut o, "balance", info.balance.to_string().into());
    let confirmed_block = l.block(&info.confirmed_frontier);
    if include_confirmed {
        let cb = confirmed_block.map_or(0, |e| e.balance);
        put(&mut o, "confirmed_balance", cb.to_string().into());
    }
    put(
        &mut o,
        "modified_timestamp",
        info.modified_timestamp.to_string().into(),
    );
    put(&mut o, "block_count", info.block_count.to_string().into());
    put(&mut o, "account_version", "0".into());
    let cf = info.confirmed_frontier.to_hex();
    if include_confirmed {
        put(
            &mut o,
            "confirmed_height",
            info.confirmation_height.to_string().into(),
        );
        put(&mut o, "confirmed_frontier", cf.into());
    } else {
        put(
            &mut o,
            "confirmation_height",
            info.confirmation_height.to_string().into(),
        );
        put(&mut o, "confirmation_height_frontier", cf.into());
    }
    if r.flag("representative", false) {
        put(
            &mut o,
            "representative",
            info.representative.to_address().into(),
        );
        if include_confirmed {
            let rep = confirmed_block.map_or(PublicKey::ZERO, |e| e.representative);
            put(&mut o, "confirmed_representative", rep.to_address().into());
        }
    }
    if r.flag("weight", false) {
        put(&mut o, "weight", l.weight(&account).to_string().into());
    }
    if r.flag("receivable", false) || r.flag("pending", false) {
        let sum = l.receivable_sum(&account, false).to_string();
        put(&mut o, "pending", sum.clone().into());
        put(&mut o, "receivable", sum.into());
        if include_confirmed {
            let sum = l.receivable_sum(&account, true).to_string();
            put(&mut o, "confirmed_pending", sum.clone().into());
            put(&mut o, "confirmed_receivable", sum.into());
        }
    }
    Ok(Value::Object(o))
}

fn account_balance(l: &Ledger, r: Req<'_>) -> Res {
    let account = r.account("account")?;
    let only_confirmed = r.flag("include_only_confirmed", true);
    let balance = if only_confirmed {
        l.confirmed_balance(&account)
    } else {
        l.balance(&account)
    };
    let receivable = l.receivable_sum(&account, only_confirmed).to_string();
    Ok(json!({
        "balance": balance.to_string(),
        "pending": receivable,
        "receivable": receivable,
    }))
}

/// The block_info object (also each entry of blocks_info).
fn block_info_json(l: &Ledger, e: &BlockEntry, r: Req<'_>) -> Value {
    let contents = e.contents_json();
    let contents = if r.flag("json_block", false) {
        contents
    } else {
        Value::from(serde_json::to_string_pretty(&contents).unwrap_or_default())
    };
    let mut o = json!({
        "block_account": e.account.to_address(),
        "amount": e.amount.to_string(),
        "balance": e.balance.to_string(),
        "height": e.height.to_string(),
        "local_timestamp": e.local_timestamp.to_string(),
        "successor": e.successor.to_hex(),
        "confirmed": tf(l.is_confirmed(&e.hash)),
        "contents": contents,
    });
    if matches!(e.body, Body::State(_)) {
        o["subtype"] = Value::from(e.subtype.as_str());
    }
    if r.flag("include_linked_account", false) {
        let linked = match e.subtype {
            Subtype::Send => e.destination,
            Subtype::Receive => e.source_account,
            _ => None,
        };
        o["linked_account"] = linked.map_or(Value::from("0"), |a| a.to_address().into());
    }
    o
}

fn blocks_info(l: &Ledger, r: Req<'_>) -> Res {
    let hashes = r.list("hashes")?;
    let include_not_found = r.flag("include_not_found", false);
    let want_receivable = r.flag("receivable", false) || r.flag("pending", false);
    let want_receive_hash = r.flag("receive_hash", false);
    let want_source = r.flag("source", false);
    let mut blocks = Map::new();
    let mut not_found = Vec::new();
    for t in hashes {
        let h = BlockHash::from_hex(&t).map_err(|_| RpcError::from("Bad hash number"))?;
        let Some(e) = l.block(&h) else {
            if include_not_found {
                not_found.push(Value::from(t));
                continue;
            }
            return Err("Block not found".into());
        };
        let mut o = block_info_json(l, e, r);
        if want_receivable {
            let exists = e.destination.and_then(|d| l.pending_get(&d, &h)).is_some();
            o["receivable"] = one_zero(exists);
            o["pending"] = one_zero(exists);
        }
        if want_receive_hash {
            o["receive_hash"] = Value::from(e.receive_hash.unwrap_or(BlockHash::ZERO).to_hex());
        }
        if want_source {
            o["source_account"] = e
                .source_account
                .map_or(Value::from("0"), |a| a.to_address().into());
        }
        blocks.insert(h.to_hex(), o);
    }
    let mut out = json!({ "blocks": or_empty(Value::Object(blocks)) });
    if include_not_found {
        out["blocks_not_found"] = or_empty(Value::Array(not_found));
    }
    Ok(out)
}

fn process(s: &Arc<Shared>, r: Req<'_>) -> Res {
    let block_value = match r.0.get("block") {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::String(text)) => {
            serde_json::from_str::<Value>(text).map_err(|_| RpcError::from("Block is invalid"))?
        }
        Some(_) => return Err("Block is invalid".into()),
        None => return Err(PARSE.into()),
    };
    let block =
        StateBlock::from_json(&block_value).map_err(|_| RpcError::from("Block is invalid"))?;
    let subtype = r.text("subtype").filter(|t| !t.is_empty());
    let is_async = r.flag("async", false);
    let hash = s.process_rpc(&block, subtype.as_deref(), is_async)?;
    if is_async {
        return Ok(json!({ "started": "1" }));
    }
    Ok(json!({ "hash": hash.to_hex() }))
}

/// One account's receivable list in the shape the flags ask for; `None` when empty.
fn receivable_for(l: &Ledger, account: &PublicKey, r: Req<'_>) -> Result<Value, RpcError> {
    let count = r.count(u64::MAX)?;
    let offset = r.offset()?;
    let threshold = r.threshold()?;
    let source = r.flag("source", false);
    let min_version = r.flag("min_version", false);
    let only_confirmed = r.flag("include_only_confirmed", true);
    let sorting = r.flag("sorting", false);
    let simple = threshold == 0 && !source && !min_version && !sorting;
    let mut entries: Vec<_> = l
        .receivable(account)
        .into_iter()
        .filter(|(h, p)| p.amount >= threshold && (!only_confirmed || l.is_confirmed(h)))
        .collect();
    if sorting {
        entries.sort_by_key(|e| std::cmp::Reverse(e.1.amount));
    }
    let entries = entries
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(count).unwrap_or(usize::MAX));
    if simple {
        return Ok(Value::Array(
            entries.map(|(h, _)| Value::from(h.to_hex())).collect(),
        ));
    }
    let mut m = Map::new();
    for (h, p) in entries {
        let v = if source || min_version {
            let mut o = json!({ "amount": p.amount.to_string() });
            if source {
                o["source"] = Value::from(p.source.to_address());
            }
            if min_version {
                o["min_version"] = Value::from("0");
            }
            o
        } else {
            Value::from(p.amount.to_string())
        };
        m.insert(h.to_hex(), v);
    }
    Ok(Value::Object(m))
}

fn receivable(l: &Ledger, r: Req<'_>) -> Res {
    let account = r.account("account")?;
    let blocks = receivable_for(l, &account, r)?;
    Ok(json!({ "blocks": or_empty(blocks) }))
}

fn accounts_receivable(l: &Ledger, r: Req<'_>) -> Res {
    let accounts = r.list("accounts")?;
    let mut out = Map::new();
    for a in accounts {
        let key = parse_account(&a)?;
        let v = receivable_for(l, &key, r)?;
        let empty = match &v {
            Value::Array(x) => x.is_empty(),
            Value::Object(x) => x.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(key.to_address(), v);
        }
    }
    Ok(json!({ "blocks": or_empty(Value::Object(out)) }))
}

/// nano-node `to_multiplier`: how many times harder than `base`.
fn to_multiplier(difficulty: u64, base: u64) -> f64 {
    (u64::MAX - base) as f64 / (u64::MAX - difficulty).max(1) as f64
}

fn from_multiplier(multiplier: f64, base: u64) -> u64 {
    let reverse = (u64::MAX - base) as f64 / multiplier;
    u64::MAX.saturating_sub(reverse as u64)
}

fn parse_difficulty(r: Req<'_>, base: u64) -> Result<Option<u64>, RpcError> {
    if let Some(t) = r.text("difficulty") {
        return work_from_hex(&format!("{t:0>16}"))
            .map(Some)
            .map_err(|_| "Bad difficulty".into());
    }
    if let Some(t) = r.text("multiplier") {
        let m: f64 = t.parse().map_err(|_| RpcError::from("Bad multiplier"))?;
        if !(m.is_finite() && m > 0.0) {
            return Err("Bad multiplier".into());
        }
        return Ok(Some(from_multiplier(m, base)));
    }
    Ok(None)
}

async fn work_generate(r: Req<'_>) -> Res {
    let hash = r.hash("hash")?;
    let base = THRESHOLDS.epoch_2.max(THRESHOLDS.epoch_1);
    let target = parse_difficulty(r, base)?.unwrap_or(base);
    if target < THRESHOLDS.entry() || target > from_multiplier(64.0, base) {
        return Err("Difficulty above config limit or below publish threshold".into());
    }
    let root = hash.0;
    let work = tokio::task::spawn_blocking(move || generate(&root, target))
        .await
        .map_err(|_| RpcError::from("Work generation cancellation or failure"))?;
    let d = difficulty(&root, work);
    Ok(json!({
        "work": work_to_hex(work),
        "difficulty": work_to_hex(d),
        "multiplier": to_multiplier(d, base).to_string(),
        "hash": hash.to_hex(),
    }))
}

fn work_validate(r: Req<'_>) -> Res {
    let work = work_from_hex(&r.required("work")?).map_err(|_| RpcError::from("Bad work"))?;
    let hash = r.hash("hash")?;
    let base = THRESHOLDS.epoch_2.max(THRESHOLDS.epoch_1);
    let wanted = parse_difficulty(r, base)?;
    let d = difficulty(&hash.0, work);
    let mut o = json!({
        "valid_all": one_zero(d >= base),
        "valid_receive": one_zero(d >= THRESHOLDS.epoch_2_receive),
        "difficulty": work_to_hex(d),
        "multiplier": to_multiplier(d, base).to_string(),
    });
    if let Some(w) = wanted {
        o["valid"] = one_zero(d >= w);
    }
    Ok(o)
}

fn history_entry(l: &Ledger, e: &BlockEntry, raw: bool) -> Option<Value> {
    let mut o = Map::new();
    match &e.body {
        Body::GenesisOpen => {
            if raw {
                let c = e.contents_json();
                o.insert("type".into(), "open".into());
                for k in ["representative", "source", "work", "signature"] {
                    o.insert(k.into(), c[k].clone());
                }
                o.insert("opened".into(), e.account.to_address().into());
            } else {
                o.insert("type".into(), "receive".into());
            }
            o.insert("account".into(), e.account.to_address().into());
            o.insert("amount".into(), GENESIS_AMOUNT.to_string().into());
        }
        Body::State(b) => {
            if raw {
                o.insert("type".into(), "state".into());
                o.insert(
                    "representative".into(),
                    b.representative.to_address().into(),
                );
                o.insert("link".into(), BlockHash(b.link).to_hex().into());
                o.insert("balance".into(), b.balance.to_string().into());
                o.insert("previous".into(), b.previous.to_hex().into());
                o.insert("subtype".into(), e.subtype.as_str().into());
                o.insert("work".into(), work_to_hex(b.work).into());
                o.insert("signature".into(), b.signature.to_hex().into());
            }
            let counterpart = match e.subtype {
                Subtype::Send => e.destination,
                Subtype::Receive => e.source_account,
                _ if raw => None,
                _ => return None,
            };
            if !raw {
                o.insert("type".into(), e.subtype.as_str().into());
            }
            if let Some(c) = counterpart {
                o.insert("account".into(), c.to_address().into());
            }
            o.insert("amount".into(), e.amount.to_string().into());
        }
    }
    o.insert(
        "local_timestamp".into(),
        e.local_timestamp.to_string().into(),
    );
    o.insert("height".into(), e.height.to_string().into());
    o.insert("hash".into(), e.hash.to_hex().into());
    o.insert("confirmed".into(), tf(l.is_confirmed(&e.hash)));
    Some(Value::Object(o))
}

fn account_history(l: &Ledger, r: Req<'_>) -> Res {
    let account = r.account("account")?;
    let count = r.count(u64::MAX)?;
    if !r.has("count") {
        return Err(PARSE.into());
    }
    let mut offset = r.offset()?;
    let raw = r.flag("raw", false);
    let reverse = r.flag("reverse", false);
    let info = l.account(&account);
    let start = match r.text("head") {
        Some(t) => {
            let h = BlockHash::from_hex(&t).map_err(|_| RpcError::from("Invalid block hash"))?;
            let e = l.block(&h).ok_or("Block not found")?;
            if e.account != account {
                return Err("Block not found".into());
            }
            Some(h)
        }
        None => info.map(|i| if reverse { i.open_block } else { i.head }),
    };
    let mut history = Vec::new();
    let mut cursor = start.unwrap_or(BlockHash::ZERO);
    while !cursor.is_zero() && (history.len() as u64) < count {
        let Some(e) = l.block(&cursor) else {
            break;
        };
        if let Some(entry) = history_entry(l, e, raw) {
            if offset > 0 {
                offset -= 1;
            } else {
                history.push(entry);
            }
        }
        cursor = if reverse { e.successor } else { e.previous };
    }
    let mut out = json!({
        "account": account.to_address(),
        "history": or_empty(Value::Array(history)),
    });
    if !cursor.is_zero() {
        out[if reverse { "next" } else { "previous" }] = Value::from(cursor.to_hex());
    }
    Ok(out)
}

impl Shared {
    /// `process` as the RPC runs it, atomically: subtype pre-check, entry work check, ledger.
    pub(crate) fn process_rpc(
        self: &Arc<Self>,
        block: &StateBlock,
        subtype: Option<&str>,
        is_async: bool,
    ) -> Result<BlockHash, RpcError> {
        // Verify outside the lock; the verdict is applied in nano-node's rule order inside.
        let signature_valid = block.signature_valid();
        let mut l = self.lock();
        if let Some(st) = subtype {
            l.check_subtype(block, st)?;
        }
        Ledger::check_entry_work(block)?;
        let hash = match l.process_checked(block, now_ms(), signature_valid) {
            Ok(hash) => hash,
            // An async process answers "started" whatever the ledger says.
            Err(_) if is_async => return Ok(block.hash()),
            Err(e) => return Err(e.into()),
        };
        self.persist(l);
        self.schedule(hash, self.delay);
        Ok(hash)
    }
}
