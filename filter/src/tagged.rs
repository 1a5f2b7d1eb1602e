//! Mechanism 2 in the filter: tagged-amount sessions, offered from a pool of sessions the
//! sidecar pre-issued, so an unpaid request still gets its 402 without a sidecar call.
//!
//! * The root context keeps, per tagged route, a pool of sessions in proxy-wasm shared data
//!   (`nanogate.sessions.v2.<hash of the route's session terms>`, one line per session). On each tick, a VM that finds
//!   fewer than [`LOW_WATER`] usable sessions takes a short lease and asks the sidecar for a
//!   batch (`POST /v1/sessions`); the answer is merged into the pool with compare-and-swap.
//! * A 402 pops one session (CAS) and adds a second `accepts[]` entry for it. An empty pool
//!   simply leaves the entry out: the signed-block offer is always there.
//! * A retry carrying a client-broadcast payload (`proof` and/or `sessionId`) is checked here
//!   against the session's MAC (`Mechanism::TaggedSession`, resource = the route scope, payee
//!   from the route's pool, amount as issued), then forwarded to the sidecar, which alone knows
//!   whether the session was paid.
//! * A browser (Accept prefers `text/html`) gets the paywall page ([`crate::paywall`]).

use crate::config::{Config, Payee, Price};
use crate::flow::{Host, Level};
use crate::keeper::RootHost;
use crate::keys::KeyRing;
use crate::metrics::Metric;
use crate::sidecar::{self, Call};
use nanogate_protocol::challenge::{self, ChallengeTerms, Mechanism};
use nanogate_protocol::hex;
use nanogate_protocol::nano::{parse_raw, PublicKey};
use nanogate_protocol::x402::{DecodedPayment, ErrorReason, PaymentMechanism, PaymentRequirements};
use serde_json::Value;
use std::rc::Rc;

pub const POOL_KEY_PREFIX: &str = "nanogate.sessions.v2.";
pub const SCOPE_PREFIX: &str = "nanogate-route:";
pub const PATH_SESSIONS: &str = "/v1/sessions";
/// `extra.mechanism` of the tagged offer.
pub const MECHANISM_NAME: &str = "tagged";
/// Refill below this many usable sessions.
pub const LOW_WATER: usize = 8;
/// Sessions asked for per refill.
pub const BATCH: usize = 16;
/// Most sessions kept per route.
pub const MAX_POOL: usize = 64;
/// A refill lease older than this is taken over (the holder's call timed out or its VM died).
const LEASE_SECS: u64 = 5;
/// Default `sessionBudget`: sessions a route may request per window of `maxTimeoutSeconds`.
/// Without demand a pool needs about `2 × BATCH` per window (its sessions are handed out only
/// during the first half of their validity); the rest serves honest tagged payers.
pub const DEFAULT_BUDGET: u64 = 128;
/// Largest `sessionBudget`.
pub const MAX_BUDGET: u64 = 65_536;

/// A route's tagged-amount settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedTerms {
    /// Payees the sidecar spreads sessions over.
    pub pool: Vec<Payee>,
    /// The MAC's resource: `nanogate-route:<route name>` (sessions are pre-issued, so they
    /// cannot know the request URL; the price and payees are per route anyway).
    pub scope: String,
    /// Shared-data key of the route's session pool.
    pub key: String,
    /// Shared-data key of its refill lease.
    pub lease: String,
    /// Shared-data key of its refill budget: `<window> <sessions requested in it>`.
    pub budget_key: String,
    /// Most sessions requested per window of `maxTimeoutSeconds` (`sessionBudget`).
    pub budget: u64,
}

impl TaggedTerms {
    /// The route's terms. Its pool lives under a key derived from everything a session is
    /// bound to (sidecar cluster, network, scope, price, validity, payees): two plugin
    /// configurations in one VM id share shared data, and must only share a pool when each
    /// would accept the other's sessions.
    pub fn new(
        route_name: &str,
        pool: Vec<Payee>,
        cluster: &str,
        network: &str,
        price: &Price,
        budget: u64,
    ) -> Self {
        let scope = [SCOPE_PREFIX, route_name].concat();
        let key = pool_key(cluster, network, &scope, price, &pool);
        TaggedTerms {
            pool,
            scope,
            lease: [&key, ".lease"].concat(),
            budget_key: [&key, ".budget"].concat(),
            key,
            budget,
        }
    }
}

/// `nanogate.sessions.v2.<16 hex>`: the namespace of a route's pool in shared data.
fn pool_key(cluster: &str, network: &str, scope: &str, price: &Price, pool: &[Payee]) -> String {
    let mut terms = Vec::with_capacity(128 + pool.len() * 32);
    for field in [cluster, network, scope] {
        terms.extend_from_slice(&(field.len() as u64).to_be_bytes());
        terms.extend_from_slice(field.as_bytes());
    }
    terms.extend_from_slice(&price.amount_raw.to_be_bytes());
    terms.extend_from_slice(&price.max_timeout_secs.to_be_bytes());
    for p in pool {
        terms.extend_from_slice(&p.key.0);
    }
    let digest = nanogate_protocol::nano::blake2b_256(&[&terms]);
    let mut key = String::with_capacity(POOL_KEY_PREFIX.len() + 16);
    key.push_str(POOL_KEY_PREFIX);
    key.push_str(&hex::encode_lower(&digest[..8]));
    key
}

/// A pre-issued session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// 32 lower-hex characters: the session id and the challenge nonce.
    pub id: String,
    pub pay_to: String,
    pub amount: u128,
    pub valid_before: u64,
    pub key_id: u64,
    pub mac: String,
}

impl Session {
    fn line(&self, out: &mut String) {
        out.push_str(&self.id);
        out.push(' ');
        out.push_str(&self.pay_to);
        out.push(' ');
        push_num(out, self.amount);
        out.push(' ');
        push_num(out, u128::from(self.valid_before));
        out.push(' ');
        push_num(out, u128::from(self.key_id));
        out.push(' ');
        out.push_str(&self.mac);
        out.push('\n');
    }

    fn parse_line(line: &str) -> Option<Session> {
        let mut it = line.split(' ');
        let s = Session {
            id: it.next()?.to_owned(),
            pay_to: it.next()?.to_owned(),
            amount: it.next()?.parse().ok()?,
            valid_before: it.next()?.parse().ok()?,
            key_id: it.next()?.parse().ok()?,
            mac: it.next()?.to_owned(),
        };
        (s.id.len() == 32 && s.mac.len() == 64).then_some(s)
    }

    fn from_json(v: &Value) -> Option<Session> {
        let s = Session {
            id: v.get("id")?.as_str()?.to_ascii_lowercase(),
            pay_to: v.get("payTo")?.as_str()?.to_owned(),
            amount: parse_raw(v.get("amount")?.as_str()?).ok()?,
            valid_before: v.get("validBefore")?.as_u64()?,
            key_id: v.get("keyId")?.as_u64()?,
            mac: v.get("mac")?.as_str()?.to_ascii_lowercase(),
        };
        let ok = hex::decode_array::<16>(&s.id).is_ok()
            && hex::decode_array::<32>(&s.mac).is_ok()
            && !s.pay_to.is_empty()
            && s.pay_to
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        ok.then_some(s)
    }

    /// The `accepts[]` entry offering this session for `price`, as JSON text (rendered by
    /// hand like the signed-block template: every part is a number, hex, a checked address or
    /// the validated CAIP-2 network id, so nothing needs escaping).
    pub fn offer_json(&self, cfg: &Config, price: &Price) -> String {
        let mut o = String::with_capacity(512);
        o.push_str("{\"scheme\":\"exact\",\"network\":\"");
        o.push_str(&cfg.network);
        o.push_str("\",\"amount\":\"");
        push_num(&mut o, self.amount);
        o.push_str("\",\"asset\":\"XNO\",\"payTo\":\"");
        o.push_str(&self.pay_to);
        o.push_str("\",\"maxTimeoutSeconds\":");
        push_num(&mut o, u128::from(price.max_timeout_secs));
        o.push_str(",\"extra\":{\"keyId\":");
        push_num(&mut o, u128::from(self.key_id));
        o.push_str(",\"mac\":\"");
        o.push_str(&self.mac);
        o.push_str("\",\"mechanism\":\"tagged\",\"nanoSession\":{\"id\":\"");
        o.push_str(&self.id);
        o.push_str("\",\"resourceAmountRaw\":\"");
        push_num(&mut o, price.amount_raw);
        o.push_str("\",\"tagAmountRaw\":\"");
        push_num(&mut o, self.amount.saturating_sub(price.amount_raw));
        o.push_str("\"},\"nonce\":\"");
        o.push_str(&self.id);
        o.push_str("\",\"validBefore\":");
        push_num(&mut o, u128::from(self.valid_before));
        o.push_str("}}");
        o
    }
}

/// Appends the decimal digits of `n`. By hand: every `to_string()` site would otherwise bring
/// its own copy of the formatting machinery into the module.
pub(crate) fn push_num(out: &mut String, mut n: u128) {
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// The sessions of a pool value that still have `min_left` seconds of validity at `now`.
pub fn decode_pool(bytes: &[u8], now: u64, min_left: u64) -> Vec<Session> {
    std::str::from_utf8(bytes)
        .unwrap_or("")
        .lines()
        .filter_map(Session::parse_line)
        .filter(|s| s.valid_before >= now.saturating_add(min_left))
        .collect()
}

fn encode_pool(sessions: &[Session]) -> Vec<u8> {
    let mut out = String::with_capacity(sessions.len() * 180);
    for s in sessions {
        s.line(&mut out);
    }
    out.into_bytes()
}

/// How long a pooled session must still be valid to be handed out: half the route's validity.
pub fn min_left(price: &Price) -> u64 {
    (price.max_timeout_secs / 2).max(1)
}

/// Shared-data access, as both the root and the request contexts have it.
pub trait SharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Compare-and-set; `false` on a CAS mismatch or failure.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Takes one usable session from the pool, with CAS retries. Stale sessions, and sessions
/// whose key `ring` no longer holds (the payer could pay, but this filter would refuse the
/// presentation), are dropped on the way.
pub fn pop(
    sh: &mut dyn SharedData,
    key: &str,
    now: u64,
    min_left: u64,
    ring: &KeyRing,
) -> Option<Session> {
    for _ in 0..4 {
        let (bytes, cas) = sh.get(key);
        let mut sessions = decode_pool(bytes.as_deref().unwrap_or_default(), now, min_left);
        sessions.retain(|s| ring.for_id(s.key_id).is_some());
        if sessions.is_empty() {
            if bytes.is_some_and(|b| !b.is_empty()) {
                let _ = sh.set(key, b"", cas);
            }
            return None;
        }
        let first = sessions.remove(0);
        if sh.set(key, &encode_pool(&sessions), cas) {
            return Some(first);
        }
    }
    None
}

/// Adds sessions to the pool (deduplicated, capped), with CAS retries.
pub fn push(sh: &mut dyn SharedData, key: &str, new: &[Session], now: u64, min_left: u64) -> bool {
    for _ in 0..4 {
        let (bytes, cas) = sh.get(key);
        let mut sessions = decode_pool(bytes.as_deref().unwrap_or_default(), now, min_left);
        for s in new {
            if s.valid_before >= now.saturating_add(min_left)
                && !sessions.iter().any(|o| o.id == s.id)
            {
                sessions.push(s.clone());
            }
        }
        sessions.truncate(MAX_POOL);
        if sh.set(key, &encode_pool(&sessions), cas) {
            return true;
        }
    }
    false
}

struct RootShared<'a, H: RootHost + ?Sized>(&'a mut H);

impl<H: RootHost + ?Sized> SharedData for RootShared<'_, H> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.0.shared_get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.0.shared_set(key, value, cas)
    }
}

/// `POST /v1/sessions` for a tagged route.
pub fn sessions_call(cfg: &Config, price: &Price, t: &TaggedTerms) -> Call {
    // Scope: `nanogate-route:` + the route name, which may need JSON escaping.
    let scope = serde_json::to_string(&t.scope).unwrap_or_else(|_| "\"\"".into());
    let mut body = String::with_capacity(256);
    body.push_str("{\"count\":");
    push_num(&mut body, BATCH as u128);
    body.push_str(",\"price\":\"");
    push_num(&mut body, price.amount_raw);
    body.push_str("\",\"validitySeconds\":");
    push_num(&mut body, u128::from(price.max_timeout_secs));
    body.push_str(",\"scope\":");
    body.push_str(&scope);
    body.push_str(",\"payTo\":[");
    for (i, p) in t.pool.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // Canonical nano_ addresses: base32 and `_` only.
        body.push('"');
        body.push_str(&p.address);
        body.push('"');
    }
    body.push_str("]}");
    Call::new(
        &cfg.sidecar,
        "POST",
        PATH_SESSIONS,
        Some(body.into_bytes()),
        cfg.sidecar.control_timeout,
    )
}

/// The sessions of a `/v1/sessions` answer.
pub fn parse_sessions(body: &[u8]) -> Vec<Session> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("sessions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Session::from_json).collect())
        })
        .unwrap_or_default()
}

/// Sessions already requested in `window`, from the budget value `<window> <count>`.
fn budget_used(value: Option<&[u8]>, window: u64) -> u64 {
    let text = value
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("");
    let mut it = text.split(' ');
    match (
        it.next().and_then(|w| w.parse::<u64>().ok()),
        it.next().and_then(|c| c.parse::<u64>().ok()),
    ) {
        (Some(w), Some(c)) if w == window => c,
        _ => 0,
    }
}

/// The root context's pool keeper: refills the pools of tagged routes, within each route's
/// budget of `sessionBudget` sessions per window of `maxTimeoutSeconds`.
pub struct PoolKeeper {
    cfg: Rc<Config>,
    /// In-flight refills: (call token, route index).
    pending: Vec<(u32, usize)>,
}

impl PoolKeeper {
    pub fn new(cfg: Rc<Config>) -> PoolKeeper {
        PoolKeeper {
            cfg,
            pending: Vec::new(),
        }
    }

    pub fn owns(&self, token: u32) -> bool {
        self.pending.iter().any(|(t, _)| *t == token)
    }

    /// Starts a refill for every tagged route whose pool runs low (one VM at a time).
    pub fn tick<H: RootHost + ?Sized>(&mut self, host: &mut H) {
        let now = host.now_unix();
        let cfg = Rc::clone(&self.cfg);
        for (i, route) in cfg.routes.iter().enumerate() {
            let crate::config::RouteKind::Paid(price) = &route.kind else {
                continue;
            };
            let Some(t) = &price.tagged else { continue };
            if self.pending.iter().any(|(_, r)| *r == i) {
                continue;
            }
            let (bytes, _) = host.shared_get(&t.key);
            let have = decode_pool(bytes.as_deref().unwrap_or_default(), now, min_left(price));
            if have.len() >= LOW_WATER {
                continue;
            }
            // The budget: a flood of 402s drains the pool, never the store. Checked before
            // the lease so an exhausted route costs one shared-data read per tick.
            let window = now / price.max_timeout_secs.max(1);
            let (budget, budget_cas) = host.shared_get(&t.budget_key);
            let used = budget_used(budget.as_deref(), window);
            if used.saturating_add(BATCH as u64) > t.budget {
                continue;
            }
            // The lease: one VM refills at a time.
            let lease_key = &t.lease;
            let (lease, cas) = host.shared_get(lease_key);
            let held_since = lease
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if held_since.saturating_add(LEASE_SECS) > now {
                continue;
            }
            let mut stamp = String::new();
            push_num(&mut stamp, u128::from(now));
            if !host.shared_set(lease_key, stamp.as_bytes(), cas) {
                continue;
            }
            let mut spent = String::new();
            push_num(&mut spent, u128::from(window));
            spent.push(' ');
            push_num(&mut spent, u128::from(used.saturating_add(BATCH as u64)));
            if !host.shared_set(&t.budget_key, spent.as_bytes(), budget_cas) {
                let _ = host.shared_set(lease_key, b"0", None);
                continue;
            }
            match host.dispatch(&sessions_call(&cfg, price, t)) {
                Ok(token) => self.pending.push((token, i)),
                Err(_) => {
                    host.count(Metric::SidecarErrors);
                    host.log(
                        Level::Debug,
                        "nanogate: session refill could not be dispatched",
                    );
                    let _ = host.shared_set(lease_key, b"0", None);
                }
            }
        }
    }

    /// A `/v1/sessions` answer: merge it into the route's pool and release the lease.
    pub fn on_answer<H: RootHost + ?Sized>(
        &mut self,
        host: &mut H,
        token: u32,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) {
        let Some(pos) = self.pending.iter().position(|(t, _)| *t == token) else {
            return;
        };
        let (_, route) = self.pending.swap_remove(pos);
        let cfg = Rc::clone(&self.cfg);
        let Some(crate::config::RouteKind::Paid(price)) = cfg.routes.get(route).map(|r| &r.kind)
        else {
            return;
        };
        let Some(t) = &price.tagged else { return };
        let now = host.now_unix();
        if sidecar::is_ok(status) {
            let sessions = parse_sessions(body.unwrap_or_default());
            push(
                &mut RootShared(host),
                &t.key,
                &sessions,
                now,
                min_left(price),
            );
        } else {
            host.count(Metric::SidecarErrors);
            host.log(
                Level::Debug,
                "nanogate: the sidecar did not issue sessions (status not 200)",
            );
        }
        let _ = host.shared_set(&t.lease, b"0", None);
    }
}

/// A client-broadcast payment on a tagged route: `None` when this is not one (the caller
/// checks it as a signed-block payment); else the requirements to forward (our terms plus the
/// echoed stamp) and the scope the sidecar must bind them to, or the reason for a fresh 402.
pub fn presented(
    cfg: &Config,
    price: &Price,
    payment: &DecodedPayment,
    ring: &KeyRing,
    now: u64,
) -> Option<Result<(PaymentRequirements, String), ErrorReason>> {
    let t = price.tagged.as_ref()?;
    if !matches!(payment.mechanism(), PaymentMechanism::ClientBroadcast) {
        return None;
    }
    Some(check_presented(cfg, price, t, payment, ring, now))
}

fn check_presented(
    cfg: &Config,
    price: &Price,
    t: &TaggedTerms,
    payment: &DecodedPayment,
    ring: &KeyRing,
    now: u64,
) -> Result<(PaymentRequirements, String), ErrorReason> {
    let accepted = payment
        .accepted()
        .ok_or(ErrorReason::InvalidPaymentRequirements)?;
    if payment.scheme() != crate::challenge::SCHEME {
        return Err(ErrorReason::InvalidScheme);
    }
    if payment.network() != cfg.network {
        return Err(ErrorReason::InvalidNetwork);
    }
    let key =
        PublicKey::from_address(&accepted.pay_to).map_err(|_| ErrorReason::InvalidChallenge)?;
    let payee = t
        .pool
        .iter()
        .find(|p| p.key == key)
        .ok_or(ErrorReason::InvalidChallenge)?;
    let amount = parse_raw(&accepted.amount)
        .ok()
        .filter(|a| *a > price.amount_raw)
        .ok_or(ErrorReason::InvalidChallenge)?;
    let (stamp, tag) =
        challenge::read_extra(&accepted.extra).map_err(|_| ErrorReason::InvalidChallenge)?;
    let terms = ChallengeTerms {
        network: &cfg.network,
        scheme: crate::challenge::SCHEME,
        asset: crate::challenge::ASSET,
        pay_to: payee.key,
        amount,
        resource: &t.scope,
        mechanism: Mechanism::TaggedSession,
    };
    // An authentic session that expired may still be finished by the sidecar (a payment
    // made in time) or be reported as late: let it decide.
    crate::challenge::authenticate(ring, &terms, &stamp, &tag, now)?;
    let requirements = PaymentRequirements {
        scheme: crate::challenge::SCHEME.to_owned(),
        network: cfg.network.clone(),
        amount: {
            let mut a = String::new();
            push_num(&mut a, amount);
            a
        },
        asset: crate::challenge::ASSET.to_owned(),
        pay_to: payee.address.clone(),
        max_timeout_seconds: price.max_timeout_secs,
        extra: crate::challenge::stamp_extra(&stamp, &tag),
    };
    Ok((requirements, t.scope.clone()))
}

/// Whether the client would rather read HTML than JSON: a browser navigating lists
/// `text/html` first (API clients send `application/json`, `*/*` or nothing).
pub fn prefers_html(accept: &[u8]) -> bool {
    accept
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"text/html"))
}

fn has_payment<H: Host + ?Sized>(host: &H) -> bool {
    host.request_header("payment-signature").is_some() || host.request_header("x-payment").is_some()
}

/// Sends a 402/400 whose JSON challenge is `body` (rendered by [`crate::challenge`]): adds a
/// tagged offer from the route's pool when there is one (never while the request already
/// carries a payment: a rejected retry is not a new customer), and answers a browser with the
/// paywall page.
#[allow(clippy::too_many_arguments)]
pub fn send_challenge<H: Host + ?Sized>(
    host: &mut H,
    cfg: &Config,
    price: &Price,
    resource: &str,
    mut body: Vec<u8>,
    status: u32,
    now: u64,
    ring: &KeyRing,
) {
    // Only tagged routes look further (the plain 402 path stays as it was).
    let session = match &price.tagged {
        Some(t) if !has_payment(host) => {
            let s = host.pop_session(&t.key, now, min_left(price), ring);
            if s.is_none() {
                host.count(Metric::SessionPoolEmpty);
            }
            s
        }
        _ => None,
    };
    let Some(session) = session else {
        crate::flow::send_payment_required_json(host, &body, status);
        return;
    };
    let offer = session.offer_json(cfg, price);
    // The template ends with `]}`: the accepts array, then the object.
    if body.ends_with(b"]}") {
        body.truncate(body.len() - 2);
        body.push(b',');
        body.extend_from_slice(offer.as_bytes());
        body.extend_from_slice(b"]}");
    }
    let html = host
        .request_header("accept")
        .map(|a| prefers_html(&a))
        .unwrap_or(false);
    if html {
        let header = nanogate_protocol::x402::encode_bytes(&body);
        let page = crate::paywall::page(price, resource, &offer, &session);
        host.send_response(
            status,
            &[
                ("payment-required", &header),
                ("content-type", "text/html; charset=utf-8"),
                ("access-control-expose-headers", crate::flow::EXPOSE),
                ("cache-control", "no-store"),
                (
                    "content-security-policy",
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'",
                ),
            ],
            page.as_bytes(),
        );
    } else {
        crate::flow::send_payment_required_json(host, &body, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanogate_protocol::challenge::ChallengeStamp;
    use serde_json::json;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem {
        map: HashMap<String, (Vec<u8>, u32)>,
        fail_next: usize,
    }

    impl SharedData for Mem {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.map.get(key) {
                Some((v, c)) => (Some(v.clone()), Some(*c)),
                None => (None, None),
            }
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            if self.fail_next > 0 {
                self.fail_next -= 1;
                // Someone else wrote in between.
                let e = self.map.entry(key.into()).or_default();
                e.1 += 1;
                return false;
            }
            let cur = self.map.get(key).map(|(_, c)| *c);
            if cas.is_some() && cas != cur {
                return false;
            }
            let next = cur.unwrap_or(0) + 1;
            self.map.insert(key.into(), (value.to_vec(), next));
            true
        }
    }

    fn session(n: u8, valid_before: u64) -> Session {
        Session {
            id: format!("{:032x}", n),
            pay_to: "nano_1abc".into(),
            amount: 1000 + u128::from(n),
            valid_before,
            key_id: 7,
            mac: "ab".repeat(32),
        }
    }

    #[test]
    fn pool_pops_each_session_once_and_drops_stale_ones() {
        let mut m = Mem::default();
        let fresh: Vec<Session> = (1..=3).map(|n| session(n, 1_000)).collect();
        assert!(push(&mut m, "k", &fresh, 100, 10));
        assert!(push(
            &mut m,
            "k",
            &[session(1, 1_000), session(9, 105)],
            100,
            10
        ));
        // Duplicate id 1 ignored; session 9 has less than 10 s left.
        let mut got = Vec::new();
        m.fail_next = 1;
        let ring = crate::tests_support::ring(7, 10_000);
        while let Some(s) = pop(&mut m, "k", 100, 10, &ring) {
            got.push(s.id);
        }
        assert_eq!(got.len(), 3);
        got.dedup();
        assert_eq!(got.len(), 3);
        assert_eq!(pop(&mut m, "k", 100, 10, &ring), None);
        // Past their validity, pooled sessions are never handed out.
        assert!(push(&mut m, "k", &fresh, 100, 10));
        assert_eq!(pop(&mut m, "k", 995, 10, &ring), None);
        // Nor sessions whose key this filter no longer holds (it would refuse them after
        // the payer paid): they are dropped from the pool.
        assert!(push(&mut m, "k", &fresh, 100, 10));
        let rotated = crate::tests_support::ring(9, 10_000);
        assert_eq!(pop(&mut m, "k", 100, 10, &rotated), None);
        assert_eq!(pop(&mut m, "k", 100, 10, &ring), None, "dropped, not kept");
    }

    #[test]
    fn garbage_in_shared_data_or_answers_is_ignored() {
        assert!(decode_pool(b"\xff\xfe garbage\n1 2 3", 0, 0).is_empty());
        assert!(parse_sessions(b"not json").is_empty());
        let body = json!({"sessions": [
            {"id": "00112233445566778899aabbccddeeff", "payTo": "nano_x", "amount": "12",
             "validBefore": 50, "keyId": 1, "mac": "cd".repeat(32)},
            {"id": "short", "payTo": "nano_x", "amount": "12", "validBefore": 50, "keyId": 1, "mac": "cd"},
            {"id": "00112233445566778899aabbccddeeff", "payTo": "nano x", "amount": "12",
             "validBefore": 50, "keyId": 1, "mac": "cd".repeat(32)}
        ]});
        let s = parse_sessions(body.to_string().as_bytes());
        assert_eq!(s.len(), 1);
        assert_eq!(decode_pool(&encode_pool(&s), 0, 0), s);
    }

    const POOL_A: &str = "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc";
    const POOL_B: &str = "nano_18gmu6engqhgtjnppqam181o5nfhj4sdtgyhy36dan3jr9spt84rzwmktafc";

    fn tagged_config() -> Config {
        let cfg = json!({
            "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
            "network": "nano:devnet",
            "payTo": POOL_A,
            "routes": [
                {"name": "t", "path": {"prefix": "/t/"}, "priceRaw": "1000", "tagged": true,
                 "payToPool": [POOL_A, POOL_B], "maxTimeoutSeconds": 60},
                {"name": "p", "path": {"prefix": "/p/"}, "priceRaw": "1000"}
            ]
        });
        crate::config::parse(cfg.to_string().as_bytes()).expect("config")
    }

    fn price(cfg: &Config, i: usize) -> &Price {
        match &cfg.routes[i].kind {
            crate::config::RouteKind::Paid(p) => p,
            crate::config::RouteKind::Free => panic!("paid route"),
        }
    }

    /// A session offer as the sidecar would MAC it, and a payment presenting it.
    fn presented_payment(
        cfg: &Config,
        pay_to: &str,
        amount: u128,
        mac_amount: u128,
    ) -> DecodedPayment {
        let ring = crate::tests_support::ring(7, 10_000);
        let key = PublicKey::from_address(pay_to).expect("address");
        let stamp = ChallengeStamp {
            valid_before: 500,
            nonce: [3; 16],
            key_id: 7,
        };
        let terms = ChallengeTerms {
            network: "nano:devnet",
            scheme: "exact",
            asset: "XNO",
            pay_to: key,
            amount: mac_amount,
            resource: "nanogate-route:t",
            mechanism: Mechanism::TaggedSession,
        };
        let s = Session {
            id: hex::encode_lower(&[3; 16]),
            pay_to: pay_to.into(),
            amount,
            valid_before: 500,
            key_id: 7,
            mac: hex::encode_lower(&challenge::mac(&ring.current.key, &terms, &stamp)),
        };
        let offer: Value = serde_json::from_str(&s.offer_json(cfg, price(cfg, 0))).expect("offer");
        let v = json!({"x402Version": 2, "accepted": offer,
                       "payload": {"proof": "AB".repeat(32), "sessionId": s.id}});
        nanogate_protocol::x402::decode_payment_value(v).expect("decodes")
    }

    #[test]
    fn tagged_retries_are_checked_locally_against_the_session_mac() {
        let cfg = tagged_config();
        let ring = crate::tests_support::ring(7, 10_000);
        let p = price(&cfg, 0);
        let ok = presented_payment(&cfg, POOL_B, 1042, 1042);
        let (req, scope) = presented(&cfg, p, &ok, &ring, 100)
            .expect("tagged")
            .expect("authentic");
        assert_eq!(scope, "nanogate-route:t");
        assert_eq!(req.amount, "1042");
        assert_eq!(req.pay_to, POOL_B);
        assert_eq!(
            req.extra.get("nonce"),
            Some(&json!(hex::encode_lower(&[3; 16])))
        );
        // An authentic but expired session still goes to the sidecar (late / grace).
        assert!(matches!(presented(&cfg, p, &ok, &ring, 600), Some(Ok(_))));
        // A mutated amount, or a payee outside the pool, is refused without the sidecar.
        let forged = presented_payment(&cfg, POOL_B, 1043, 1042);
        assert_eq!(
            presented(&cfg, p, &forged, &ring, 100).map(|r| r.map(|_| ())),
            Some(Err(ErrorReason::InvalidChallenge))
        );
        let outsider = "nano_1111111111111111111111111111111111111111111111111111hifc8npp";
        let foreign = presented_payment(&cfg, outsider, 1042, 1042);
        assert_eq!(
            presented(&cfg, p, &foreign, &ring, 100).map(|r| r.map(|_| ())),
            Some(Err(ErrorReason::InvalidChallenge))
        );
        // A route without `tagged` leaves it to the signed-block check.
        assert!(presented(&cfg, price(&cfg, 1), &ok, &ring, 100).is_none());
    }

    #[test]
    fn tagged_settings_are_validated() {
        let cfg = tagged_config();
        let t = price(&cfg, 0).tagged.as_ref().expect("tagged");
        assert_eq!(t.pool.len(), 2);
        assert!(t.key.starts_with("nanogate.sessions.v2."), "{}", t.key);
        assert_eq!(t.key.len(), POOL_KEY_PREFIX.len() + 16);
        assert!(price(&cfg, 1).tagged.is_none());
        let bad = |route: Value| {
            let v = json!({
                "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
                "network": "nano:devnet", "payTo": POOL_A, "routes": [route]
            });
            crate::config::parse(v.to_string().as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = bad(json!({"path": {"prefix": "/x/"}, "priceRaw": "1", "payToPool": [POOL_A]}));
        assert!(e.contains("payToPool"), "{e}");
        let e = bad(json!({"path": {"prefix": "/x/"}, "free": true, "tagged": true}));
        assert!(e.contains("tagged"), "{e}");
        let e = bad(
            json!({"path": {"prefix": "/x/"}, "priceRaw": "1", "tagged": true, "payToPool": []}),
        );
        assert!(e.contains("payToPool"), "{e}");
        let e = bad(
            json!({"path": {"prefix": "/x/"}, "priceRaw": "1", "tagged": true, "payToPool": ["nano_x"]}),
        );
        assert!(e.contains("payToPool[0]"), "{e}");
    }

    /// A root host over shared data that records the refill calls.
    #[derive(Default)]
    struct Root {
        now: u64,
        shared: Mem,
        calls: Vec<Call>,
    }

    impl RootHost for Root {
        fn now_unix(&self) -> u64 {
            self.now
        }
        fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.shared.get(key)
        }
        fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            self.shared.set(key, value, cas)
        }
        fn dispatch(&mut self, call: &Call) -> Result<u32, String> {
            self.calls.push(call.clone());
            Ok(self.calls.len() as u32)
        }
        fn count(&mut self, _metric: Metric) {}
        fn log(&self, _level: Level, _message: &str) {}
    }

    /// The sidecar's answer to refill call `token`: `count` fresh sessions to `pay_to`.
    fn answer(token: u32, count: u32, pay_to: &str, valid_before: u64) -> Vec<u8> {
        let sessions: Vec<Value> = (0..count)
            .map(|i| {
                json!({"id": format!("{:016x}{:016x}", token, i), "payTo": pay_to,
                       "amount": "1001", "validBefore": valid_before, "keyId": 7,
                       "mac": "ab".repeat(32)})
            })
            .collect();
        json!({ "sessions": sessions }).to_string().into_bytes()
    }

    fn config_with(route: Value) -> Config {
        let cfg = json!({
            "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
            "network": "nano:devnet", "payTo": POOL_A, "routes": [route]
        });
        crate::config::parse(cfg.to_string().as_bytes()).expect("config")
    }

    /// Scenario: two plugin configurations in one `vm_id` (one shared-data space) each have a
    /// tagged route at index 0, with different prices. Neither may offer the other's
    /// sessions: the payer would pay, and the filter that checks the presentation would refuse.
    #[test]
    fn two_configurations_on_one_vm_never_offer_each_others_sessions() {
        let a = Rc::new(config_with(
            json!({"name": "tagged", "path": {"prefix": "/t/"},
            "priceRaw": "1000", "tagged": true, "maxTimeoutSeconds": 600}),
        ));
        let b = Rc::new(config_with(
            json!({"name": "tagged", "path": {"prefix": "/t/"},
            "priceRaw": "2000", "tagged": true, "payToPool": [POOL_B], "maxTimeoutSeconds": 600}),
        ));
        let ring = crate::tests_support::ring(7, 10_000);
        let mut h = Root {
            now: 1_000,
            ..Root::default()
        };
        let mut ka = PoolKeeper::new(Rc::clone(&a));
        ka.tick(&mut h);
        assert_eq!(h.calls.len(), 1);
        ka.on_answer(
            &mut h,
            1,
            Some(200),
            Some(&answer(1, BATCH as u32, POOL_A, 1_600)),
        );
        let (pa, pb) = (price(&a, 0), price(&b, 0));
        let (ta, tb) = (
            pa.tagged.as_ref().expect("tagged"),
            pb.tagged.as_ref().expect("tagged"),
        );
        assert_ne!(ta.key, tb.key, "pools are namespaced per configuration");
        // B's pool is its own: empty until B's own refill, which B therefore starts.
        assert_eq!(
            pop(&mut h.shared, &tb.key, 1_000, min_left(pb), &ring),
            None
        );
        let mut kb = PoolKeeper::new(Rc::clone(&b));
        kb.tick(&mut h);
        assert_eq!(h.calls.len(), 2, "B refills its own pool");
        let body: Value =
            serde_json::from_slice(h.calls[1].body.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(body["price"], "2000");
        kb.on_answer(&mut h, 2, Some(200), Some(&answer(2, 3, POOL_B, 1_600)));
        let got = pop(&mut h.shared, &tb.key, 1_000, min_left(pb), &ring).expect("B's session");
        assert_eq!(got.pay_to, POOL_B);
        // A's pool still holds all of A's sessions.
        let (bytes, _) = h.shared.get(&ta.key);
        assert_eq!(
            decode_pool(&bytes.unwrap_or_default(), 1_000, 0).len(),
            BATCH
        );
        // Identical session terms may share a pool (each accepts the other's sessions).
        let a2 = config_with(json!({"name": "tagged", "path": {"prefix": "/other/"},
            "priceRaw": "1000", "tagged": true, "maxTimeoutSeconds": 600}));
        assert_eq!(price(&a2, 0).tagged.as_ref().map(|t| &t.key), Some(&ta.key));
    }

    /// Scenario (#13): a flood of unpaid requests on a tagged route. Each 402 pops a session;
    /// refills must stay within the route's budget per validity window, so the flood drains
    /// the pool, never the store.
    #[test]
    fn a_flood_of_402s_triggers_at_most_the_budgeted_refills() {
        let cfg = Rc::new(config_with(
            json!({"name": "tagged", "path": {"prefix": "/t/"},
            "priceRaw": "1000", "tagged": true, "maxTimeoutSeconds": 600}),
        ));
        let p = price(&cfg, 0);
        let t = p.tagged.as_ref().expect("tagged");
        assert_eq!(t.budget, DEFAULT_BUDGET);
        let ring = crate::tests_support::ring(7, 10_000);
        let start = 6_000; // a window boundary (600 s windows)
        let mut h = Root {
            now: start,
            ..Root::default()
        };
        let mut k = PoolKeeper::new(Rc::clone(&cfg));
        let (mut offered, mut requests) = (0u64, 0u64);
        // Two windows, one tick a second, 20 unpaid requests between ticks: 24 000 402s.
        for second in 0..1_200u64 {
            h.now = start + second;
            let before = h.calls.len();
            k.tick(&mut h);
            if h.calls.len() > before {
                let token = h.calls.len() as u32;
                let vb = h.now + 600;
                k.on_answer(
                    &mut h,
                    token,
                    Some(200),
                    Some(&answer(token, BATCH as u32, POOL_A, vb)),
                );
            }
            for _ in 0..20 {
                requests += 1;
                if pop(&mut h.shared, &t.key, h.now, min_left(p), &ring).is_some() {
                    offered += 1;
                }
            }
        }
        let asked: u64 = h
            .calls
            .iter()
            .map(|c| {
                let v: Value = serde_json::from_slice(c.body.as_deref().unwrap_or_default())
                    .unwrap_or_default();
                v["count"].as_u64().unwrap_or(0)
            })
            .sum();
        assert_eq!(requests, 24_000);
        assert!(
            asked <= 2 * DEFAULT_BUDGET,
            "{asked} sessions requested in two windows (budget {DEFAULT_BUDGET} per window)"
        );
        assert!(h.calls.len() as u64 <= 2 * DEFAULT_BUDGET / BATCH as u64);
        // The budget was used, not starved: the pool was refilled in each window.
        assert!(offered >= DEFAULT_BUDGET, "{offered} tagged offers");
    }

    #[test]
    fn the_session_budget_is_validated() {
        let ok = config_with(
            json!({"path": {"prefix": "/t/"}, "priceRaw": "1", "tagged": true,
            "sessionBudget": 1024}),
        );
        assert_eq!(price(&ok, 0).tagged.as_ref().map(|t| t.budget), Some(1024));
        for (route, what) in [
            (
                json!({"path": {"prefix": "/t/"}, "priceRaw": "1", "tagged": true, "sessionBudget": 15}),
                "sessionBudget",
            ),
            (
                json!({"path": {"prefix": "/t/"}, "priceRaw": "1", "tagged": true, "sessionBudget": 65_537}),
                "sessionBudget",
            ),
            (
                json!({"path": {"prefix": "/t/"}, "priceRaw": "1", "sessionBudget": 64}),
                "sessionBudget",
            ),
        ] {
            let v = json!({
                "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
                "network": "nano:devnet", "payTo": POOL_A, "routes": [route]
            });
            let e = crate::config::parse(v.to_string().as_bytes()).expect_err("refused");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    #[test]
    fn browsers_prefer_html_api_clients_do_not() {
        assert!(prefers_html(
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(prefers_html(b"TEXT/HTML"));
        assert!(!prefers_html(b"application/json"));
        assert!(!prefers_html(b"*/*"));
        assert!(!prefers_html(b"application/json, text/html"));
        assert!(!prefers_html(b"text/h"));
    }
}
