//! Mechanism 2: session-bound tagged amounts (x402.Nano rev 5–7, without their weaknesses).
//!
//! * **Issuing** ([`Engine::issue_sessions`]): a session has an unguessable id (128 random
//!   bits, also the challenge nonce), a payee drawn deterministically from the route's pool
//!   (the id's first 8 bytes mod n), and `amount = price + tag` with a random tag in `1..=tag_space`
//!   (the lowest raw digits). The store claims `(payTo, amount)` atomically, so no two open
//!   sessions of one account share an amount, across replicas. Each session comes with a MAC
//!   over its terms (`Mechanism::TaggedSession`, resource = the route scope), so the filter can
//!   check a presented session without asking us.
//! * **Watching** ([`spawn_watcher`]): confirmations of sends to pool accounts arrive by
//!   WebSocket; a send of exactly an open session's amount, first seen after the session was
//!   issued, marks the session paid at once. Anything else sent to a pool account that buys
//!   nothing is a *stray payment*: recorded `owed` in the payment ledger, counted, listed. A
//!   send the fork set (or the ledger) knows as a signed-block payment is never matched to a
//!   session: we claim the frontier before we broadcast, so the watcher always sees the claim
//!   first, and a signed-block price that happens to equal a session's amount on a shared
//!   payee can never be consumed by that session. Signed-block payee accounts are followed
//!   the same way ([`Engine::watch_payee`]): a send to one that is not a signed-block payment
//!   of ours is recorded `owed` (`unmatched`, under `signed_block`) after the settle window.
//! * **Admitting** ([`Engine::pay_tagged`]): the client presents the session (MAC-bound) and,
//!   optionally, the block hash. We admit only a confirmed send to the session's account of
//!   exactly its amount, first seen (node `local_timestamp`, fail closed when 0) no earlier
//!   than the session's issue, within its validity, never consumed before. Consumption marks
//!   the session used and records `network:HASH` in the one payment ledger shared with signed
//!   blocks (`admitted`, with the request's lease), in one transaction.

use super::verify::Checked;
use super::{as_i64, random_hex, unix_now, Engine, PayContext, PaymentInput, Rejection, Verdict};
use crate::ledger::Confirmation;
use crate::node::ConfirmedBlock;
use crate::store::payments::{SIGNED_BLOCK, TAGGED};
use crate::store::tagged::{StrayPayment, TaggedConsume, TaggedSession};
use crate::store::{Consumption, OwedPayment, PaymentState, StoreError};
use nanogate_protocol::challenge::{self, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::hex;
use nanogate_protocol::nano::{parse_raw, BlockHash, PublicKey, Signature, StateBlock};
use nanogate_protocol::x402::{decode_payment_value, ErrorReason, PaymentMechanism};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// `payload` key: the session id (optional; the MAC-bound nonce is authoritative).
pub const PAYLOAD_SESSION_ID: &str = "sessionId";
/// `payload` key: the hash of the client's send (x402.Nano rev 6–7 `proof`).
pub const PAYLOAD_PROOF: &str = "proof";

/// Settings of the mechanism.
#[derive(Debug, Clone)]
pub struct TaggedSettings {
    /// Tags are drawn from `1..=tag_space` raw.
    pub tag_space: u64,
    /// How long sessions are kept after they expire (late payments are still recognized).
    pub retention_secs: u64,
    /// Most sessions per `/v1/sessions` call.
    pub max_batch: usize,
    /// Most accounts in a payee pool.
    pub max_pool: usize,
    /// Longest session validity.
    pub max_validity_secs: u64,
}

impl Default for TaggedSettings {
    fn default() -> Self {
        TaggedSettings {
            tag_space: 999_999_999_999,
            retention_secs: 86_400,
            max_batch: 64,
            max_pool: 64,
            max_validity_secs: 3_600,
        }
    }
}

/// Mutable state of the mechanism inside the engine.
#[derive(Debug, Default)]
pub struct TaggedState {
    pub settings: TaggedSettings,
    /// Pool accounts whose confirmations we follow.
    watched: Mutex<HashSet<PublicKey>>,
    /// Signed-block payee accounts we follow too, each with the unix time we first knew it:
    /// sends to them that are not our signed-block payments are recorded owed.
    payees: Mutex<HashMap<PublicKey, u64>>,
    /// Wakes the reconciler early (the watcher fell behind the confirmation stream).
    reconcile: Arc<tokio::sync::Notify>,
}

impl TaggedState {
    pub fn new(settings: TaggedSettings) -> Self {
        TaggedState {
            settings,
            watched: Mutex::default(),
            payees: Mutex::default(),
            reconcile: Arc::default(),
        }
    }

    /// The signed-block payee accounts followed now, with the time each was first known.
    pub fn payee_accounts(&self) -> Vec<(PublicKey, u64)> {
        self.payees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, t)| (*k, *t))
            .collect()
    }

    fn is_payee(&self, key: &PublicKey) -> bool {
        self.payees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    /// `true` when `key` was not a known payee before (an earlier `since` is kept).
    fn know_payee(&self, key: PublicKey, since: u64) -> bool {
        let mut payees = self.payees.lock().unwrap_or_else(PoisonError::into_inner);
        match payees.get_mut(&key) {
            Some(t) => {
                *t = (*t).min(since);
                false
            }
            None => {
                payees.insert(key, since);
                true
            }
        }
    }

    /// The pool accounts followed now.
    pub fn watched_accounts(&self) -> Vec<PublicKey> {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Asks the reconciler for a pass now.
    pub fn request_reconcile(&self) {
        self.reconcile.notify_one();
    }

    /// What [`Self::request_reconcile`] wakes (held by the reconciler without the engine).
    pub(crate) fn reconcile_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.reconcile)
    }

    fn is_watched(&self, key: &PublicKey) -> bool {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// `true` when `key` was not watched before.
    fn watch(&self, key: PublicKey) -> bool {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key)
    }
}

/// A request for pre-issued sessions (the filter's `POST /v1/sessions`).
#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub count: usize,
    /// What the sessions are for: the MAC's resource (the filter's route scope).
    pub scope: String,
    /// The route's price in raw.
    pub price: u128,
    pub pay_to: Vec<PublicKey>,
    pub validity_secs: u64,
}

/// One issued session, as the filter puts it in a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedSession {
    pub id: String,
    pub pay_to: PublicKey,
    pub amount: u128,
    pub tag: u128,
    pub valid_before: u64,
    pub key_id: u64,
    pub mac: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The pool account for a session: deterministic in the id, uniform over the pool.
pub fn pool_index(id: &[u8; 16], pool_len: usize) -> usize {
    // The id is 128 random bits: its first 8 bytes are already uniform.
    let mut n = [0u8; 8];
    n.copy_from_slice(&id[..8]);
    if pool_len == 0 {
        0
    } else {
        (u64::from_be_bytes(n) % pool_len as u64) as usize
    }
}

/// When a session issued at `now` under the key whose period ends at `key_not_after` expires:
/// after `validity_secs`, but never later than the end of the **next** key period. A key id is
/// honoured while it is the current or the previous one, so a session clamped this way is
/// verifiable (here and by the filter) for its whole life; a longer validity would let the
/// wallet pay for a session that the key ring refuses before it expires. A session thus lives
/// at least one rotation period (`key_rotation_secs`) and at most two.
pub fn session_valid_before(
    now: u64,
    validity_secs: u64,
    key_not_after: u64,
    rotation_secs: u64,
) -> u64 {
    now.saturating_add(validity_secs)
        .min(key_not_after.saturating_add(rotation_secs))
}

fn reject(reason: ErrorReason, msg: impl Into<String>) -> Rejection {
    Rejection::new(reason, msg)
}

/// Whether a payment goes through this mechanism: a payload without `block`.
pub fn is_client_broadcast(payment: &Value) -> bool {
    payment
        .get("payload")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.contains_key("block"))
}

/// What the presented payment claims, after structure and MAC checks.
struct Presented {
    session_id: String,
    pay_to: PublicKey,
    amount: u128,
    valid_before: u64,
    proof: Option<BlockHash>,
}

impl Engine {
    pub fn tagged(&self) -> &TaggedState {
        &self.tagged
    }

    pub(crate) fn watch_pool(&self, key: PublicKey) {
        if self.tagged.watch(key) {
            self.ledger.watch_payee(&key);
            // A first pass over the new account sets its reconciliation cursor now.
            self.tagged.request_reconcile();
        }
    }

    /// Follows a signed-block payee account (at its first presentation, from the payment
    /// ledger, or from the facilitator's `pay_to` list): WebSocket confirmations and the
    /// reconciler's passes then cover it. `since`: sends first seen earlier are not ours to
    /// judge (used when the account gets its reconciliation cursor).
    pub(crate) fn watch_payee(&self, key: PublicKey, since: u64) {
        if self.tagged.know_payee(key, since) {
            self.ledger.watch_payee(&key);
            self.tagged.request_reconcile();
        }
    }

    /// Follows every signed-block payee the store and the configuration know (at start, and
    /// on each WebSocket resubscription: another replica may have learnt new ones).
    pub async fn rewatch_payees(&self) -> Result<usize, StoreError> {
        let now = unix_now();
        let mut n = 0;
        for key in self.cfg.pay_to_allow.clone() {
            self.watch_payee(key, now);
            n += 1;
        }
        for (address, since) in self.store.signed_block_payees(as_i64(now)).await? {
            if let Ok(k) = PublicKey::from_address(&address) {
                self.watch_payee(k, u64::try_from(since).unwrap_or(now).min(now));
                n += 1;
            }
        }
        Ok(n)
    }

    /// Watches the accounts of sessions still open, or expired within the retention (after a
    /// restart: a send made in time for one of them may still have to be caught up).
    pub async fn rewatch_open_sessions(&self) -> Result<usize, StoreError> {
        let since = unix_now().saturating_sub(self.tagged.settings.retention_secs);
        let accounts = self.store.open_session_accounts(as_i64(since)).await?;
        let mut n = 0;
        for a in accounts {
            if let Ok(k) = PublicKey::from_hex(&a) {
                self.watch_pool(k);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Issues up to `req.count` sessions (fewer when the tag space of an account is crowded).
    pub async fn issue_sessions(
        &self,
        req: &SessionRequest,
    ) -> Result<Vec<IssuedSession>, IssueError> {
        let st = &self.tagged.settings;
        if req.pay_to.is_empty() || req.pay_to.len() > st.max_pool {
            return Err(IssueError::Invalid(format!(
                "payTo must list 1 to {} accounts",
                st.max_pool
            )));
        }
        if req.price == 0 || req.scope.is_empty() || req.scope.len() > 512 {
            return Err(IssueError::Invalid(
                "a positive price and a scope are required".into(),
            ));
        }
        if req.validity_secs == 0 || req.validity_secs > st.max_validity_secs {
            return Err(IssueError::Invalid(format!(
                "validity must be 1 to {} seconds",
                st.max_validity_secs
            )));
        }
        let count = req.count.min(st.max_batch);
        let now = unix_now();
        let key = self.keys.current(now);
        let valid_before = session_valid_before(
            now,
            req.validity_secs,
            key.not_after,
            self.keys.rotation_secs(),
        );
        let mut out = Vec::with_capacity(count);
        for k in &req.pay_to {
            self.watch_pool(*k);
        }
        for _ in 0..count {
            let id_bytes: [u8; 16] = rand::random();
            let pay_to = req.pay_to[pool_index(&id_bytes, req.pay_to.len())];
            let id = hex::encode_lower(&id_bytes);
            let mut issued = None;
            // A few tries: a collision means another open session holds that amount.
            for _ in 0..8 {
                let tag = u128::from(rand::random::<u64>() % st.tag_space.max(1)) + 1;
                let Some(amount) = req.price.checked_add(tag) else {
                    break;
                };
                let s = TaggedSession {
                    id: id.clone(),
                    pay_to: pay_to.to_hex(),
                    amount: amount.to_string(),
                    scope: req.scope.clone(),
                    issued_at: as_i64(now),
                    valid_before: as_i64(valid_before),
                    paid_hash: None,
                    paid_at: None,
                    consumed_hash: None,
                    keep_until: as_i64(valid_before.saturating_add(st.retention_secs)),
                };
                let t = Instant::now();
                let ok = self.store.issue_session(&s, as_i64(now)).await;
                self.metrics.store_op("issue_session", t.elapsed());
                if ok? {
                    issued = Some((amount, tag));
                    break;
                }
            }
            let Some((amount, tag)) = issued else {
                continue;
            };
            let terms = ChallengeTerms {
                network: &self.cfg.network,
                scheme: "exact",
                asset: "XNO",
                pay_to,
                amount,
                resource: &req.scope,
                mechanism: Mechanism::TaggedSession,
            };
            let stamp = ChallengeStamp {
                valid_before,
                nonce: id_bytes,
                key_id: key.key_id,
            };
            let mac = challenge::mac(&key.key, &terms, &stamp);
            out.push(IssuedSession {
                id,
                pay_to,
                amount,
                tag,
                valid_before,
                key_id: key.key_id,
                mac: hex::encode_lower(&mac),
            });
        }
        Ok(out)
    }

    /// Structure, payload and MAC. Pure.
    fn tagged_precheck(&self, input: &PaymentInput, now: u64) -> Result<Presented, Rejection> {
        let cfg = &self.cfg;
        let req = &input.requirements;
        let bad_req = |m: &str| reject(ErrorReason::InvalidPaymentRequirements, m);
        if req.scheme != "exact" || req.network != cfg.network || req.asset != "XNO" {
            return Err(bad_req(
                "requirements: exact, XNO on this sidecar's network only",
            ));
        }
        let amount = parse_raw(&req.amount)
            .ok()
            .filter(|a| *a > 0)
            .ok_or_else(|| bad_req("requirements: amount must be a positive raw integer"))?;
        let pay_to = PublicKey::from_address(&req.pay_to)
            .map_err(|_| bad_req("requirements: payTo is not a Nano address"))?;
        let decoded = decode_payment_value(input.payment.clone())
            .map_err(|e| reject(e.reason(), format!("payment: {e}")))?;
        if decoded.scheme() != "exact" {
            return Err(reject(
                ErrorReason::InvalidScheme,
                "only `exact` is accepted",
            ));
        }
        if decoded.network() != cfg.network {
            return Err(reject(
                ErrorReason::InvalidNetwork,
                format!("only {} is accepted", cfg.network),
            ));
        }
        if !matches!(decoded.mechanism(), PaymentMechanism::ClientBroadcast) {
            return Err(reject(
                ErrorReason::InvalidPayload,
                "a tagged-session payment carries no block",
            ));
        }
        let payload = decoded.payload();
        let has_session = payload.contains_key(PAYLOAD_SESSION_ID);
        if !has_session && !payload.contains_key(PAYLOAD_PROOF) {
            return Err(reject(
                ErrorReason::UnsupportedScheme,
                "proof payments (blockHash + signature) are not accepted; present a tagged session",
            ));
        }
        let proof = match payload.get(PAYLOAD_PROOF) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| BlockHash::from_hex(s).ok())
                    .ok_or_else(|| {
                        reject(
                            ErrorReason::InvalidPayload,
                            "payload.proof must be a 64-hex block hash",
                        )
                    })?,
            ),
        };
        let (stamp, tag) = challenge::read_extra(&req.extra)
            .map_err(|e| reject(ErrorReason::InvalidChallenge, e.to_string()))?;
        let session_id = hex::encode_lower(&stamp.nonce);
        if has_session {
            let claimed = payload.get(PAYLOAD_SESSION_ID).and_then(Value::as_str);
            if claimed.map(str::to_ascii_lowercase).as_deref() != Some(session_id.as_str()) {
                return Err(reject(
                    ErrorReason::SessionMismatch,
                    "payload.sessionId is not the session of the accepted offer",
                ));
            }
        }
        // Judge the binding as of the last valid second when the session has expired (a
        // payment made in time may still be finished, below).
        let at = if stamp.valid_before <= now {
            stamp.valid_before.saturating_sub(1)
        } else {
            now
        };
        let key = self.keys.honoured(stamp.key_id, at).ok_or_else(|| {
            reject(
                ErrorReason::InvalidChallenge,
                "session key id is neither current nor previous",
            )
        })?;
        let terms = ChallengeTerms {
            network: &req.network,
            scheme: &req.scheme,
            asset: &req.asset,
            pay_to,
            amount,
            resource: &input.resource,
            mechanism: Mechanism::TaggedSession,
        };
        challenge::verify(&key, &terms, &stamp, &tag, at).map_err(|_| {
            reject(
                ErrorReason::InvalidChallenge,
                "the session was not issued by this system for these terms",
            )
        })?;
        Ok(Presented {
            session_id,
            pay_to,
            amount,
            valid_before: stamp.valid_before,
            proof,
        })
    }

    /// Records a stray payment as `owed` (once per block) and counts it.
    pub async fn record_stray(&self, s: StrayPayment) {
        self.record_unmatched(s, TAGGED).await;
    }

    /// Records a send to one of our accounts that bought nothing as `owed` under `mechanism`
    /// (once per block), unless it is a signed-block payment of ours, and counts it.
    async fn record_unmatched(&self, s: StrayPayment, mechanism: &'static str) {
        let reason = s.reason.clone();
        let spent_key = format!("{}:{}", self.cfg.network, s.hash);
        // A signed-block payment is accounted for by its own row (or claim): never stray.
        match self.store.is_signed_block(&spent_key, &s.hash).await {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not check a stray payment");
                return;
            }
        }
        let o = OwedPayment {
            spent_key,
            mechanism,
            payer: s.payer.clone(),
            pay_to: s.pay_to.clone(),
            amount: s.amount.clone(),
            resource: String::new(),
            nonce: s.session_id.clone(),
            reason: s.reason.clone(),
            now: s.seen_at,
        };
        match self.store.record_owed(&o).await {
            Ok(true) => {
                self.metrics
                    .stray_payments
                    .get_or_create(&crate::metrics::ReasonLabel { reason })
                    .inc();
                tracing::info!(hash = %s.hash, reason = %s.reason, "stray payment recorded");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not record a stray payment"),
        }
    }

    /// Records a presented block as stray when the ledger shows it is a send to `pay_to` (a
    /// block that pays someone else is none of our business).
    async fn report_presented_stray(
        &self,
        hash: &BlockHash,
        pay_to: &PublicKey,
        reason: &str,
        session: &str,
    ) {
        if let Ok(Some(f)) = self.ledger.send_facts(hash).await {
            if f.destination == Some(*pay_to) {
                let s = Self::stray(hash, pay_to, f.amount, &f.account, reason, Some(session));
                self.record_stray(s).await;
            }
        }
    }

    fn stray(
        hash: &BlockHash,
        pay_to: &PublicKey,
        amount: u128,
        payer: &PublicKey,
        reason: &str,
        session: Option<&str>,
    ) -> StrayPayment {
        StrayPayment {
            hash: hash.to_hex(),
            pay_to: pay_to.to_address(),
            amount: amount.to_string(),
            payer: payer.to_address(),
            reason: reason.to_owned(),
            session_id: session.map(str::to_owned),
            seen_at: as_i64(unix_now()),
        }
    }

    /// Verifies and settles a tagged-session payment (see the module docs).
    pub(crate) async fn pay_tagged(&self, input: &PaymentInput, ctx: &PayContext) -> Verdict {
        let started = Instant::now();
        let now = unix_now();
        let p = match self.tagged_precheck(input, now) {
            Ok(p) => p,
            Err(r) => return self.reject(r),
        };
        let session = match self.store.session(&p.session_id).await {
            Err(e) => return self.store_failed(&e),
            Ok(Some(s)) => s,
            Ok(None) => {
                // A payment for a session we no longer know still gets reported.
                if let Some(hash) = p.proof {
                    self.report_presented_stray(&hash, &p.pay_to, "unknown_session", &p.session_id)
                        .await;
                }
                return self.reject(reject(
                    ErrorReason::UnknownSession,
                    "this session is unknown (never issued, or forgotten)",
                ));
            }
        };
        if session.pay_to != p.pay_to.to_hex()
            || session.amount != p.amount.to_string()
            || session.scope != input.resource
        {
            return self.reject(reject(
                ErrorReason::SessionMismatch,
                "the offer does not match the session's terms",
            ));
        }
        let paid_hash = session
            .paid_hash
            .as_deref()
            .and_then(|h| BlockHash::from_hex(h).ok());
        let Some(hash) = p.proof.or(paid_hash) else {
            return self.reject(reject(
                ErrorReason::BlockNotConfirmed,
                "no confirmed payment for this session yet",
            ));
        };
        let spent_key = format!("{}:{}", self.cfg.network, hash.to_hex());

        // A consumed block: the redemption rules of signed blocks (same spent set).
        let mut matched_unused = false;
        match self.store.spent(&spent_key).await {
            Err(e) => return self.store_failed(&e),
            // A send recorded owed by this mechanism (e.g. presented with the wrong session
            // first) may still buy its own session: the consumption below takes the row over.
            Ok(Some(rec)) if rec.state == PaymentState::Owed && rec.mechanism == TAGGED => {}
            // The watcher matched it to this session and listed it redeemable; this is its
            // first use (the session was never consumed), within the redemption window.
            Ok(Some(rec))
                if rec.state == PaymentState::Redeemable
                    && rec.mechanism == TAGGED
                    && rec.redemptions == 0
                    && rec.nonce.as_deref() == Some(p.session_id.as_str())
                    && session.consumed_hash.is_none()
                    && rec.settled_at.saturating_add(self.cfg.redeem.window_secs) > as_i64(now) =>
            {
                matched_unused = true;
            }
            Ok(Some(rec)) => {
                let payer = PublicKey::from_address(&rec.payer).unwrap_or(p.pay_to);
                let c = self.checked(&p, hash, payer, spent_key, &input.resource);
                return self.represent(&c, &rec, ctx).await;
            }
            Ok(None) => {}
        }

        // A signed-block payment (claimed in the fork set, tracked, or recorded) never buys a
        // session, even while it is still being settled, and is never recorded owed here (that
        // would block its own settlement).
        match self.store.is_signed_block(&spent_key, &hash.to_hex()).await {
            Err(e) => return self.store_failed(&e),
            Ok(true) => {
                return self.reject(reject(
                    ErrorReason::AlreadySpent,
                    "this block is a signed-block payment",
                ))
            }
            Ok(false) => {}
        }

        // Validity: presented before validBefore, or paid (matched by the watcher) in time and
        // finished within the grace, or, once the watcher listed it redeemable, within the
        // redemption window after its settlement (like any redeemable payment).
        let vb = session.valid_before;
        let paid_in_time = paid_hash == Some(hash) && session.paid_at.is_some_and(|t| t < vb);
        let expired = vb <= as_i64(now);
        let in_grace = as_i64(now) < vb.saturating_add(as_i64(self.cfg.fork_grace_secs));
        if expired && !(paid_in_time && (in_grace || matched_unused)) {
            self.report_presented_stray(&hash, &p.pay_to, "late", &p.session_id)
                .await;
            return self.reject(reject(
                ErrorReason::ChallengeExpired,
                "the session has expired",
            ));
        }

        // The ledger's view of the block.
        let facts = match self.ledger.send_facts(&hash).await {
            Err(e) => return self.ledger_failed(&e),
            Ok(None) => {
                return self.reject(reject(
                    ErrorReason::BlockNotConfirmed,
                    "the node does not know this block (yet)",
                ))
            }
            Ok(Some(f)) => f,
        };
        if facts.subtype.as_deref() != Some("send") || facts.destination != Some(p.pay_to) {
            return self.reject(reject(
                ErrorReason::WrongDestination,
                "the block is not a send to the session's account",
            ));
        }
        if facts.amount != p.amount {
            let s = Self::stray(
                &hash,
                &p.pay_to,
                facts.amount,
                &facts.account,
                "wrong_amount",
                Some(&p.session_id),
            );
            self.record_stray(s).await;
            return self.reject(
                reject(
                    ErrorReason::AmountMismatch,
                    "the send is not exactly the session's amount",
                )
                .with_payer(&facts.account),
            );
        }
        // First seen after the session was issued; an unknown time fails closed.
        if facts.local_timestamp == 0 || as_i64(facts.local_timestamp) < session.issued_at {
            let s = Self::stray(
                &hash,
                &p.pay_to,
                facts.amount,
                &facts.account,
                "too_early",
                Some(&p.session_id),
            );
            self.record_stray(s).await;
            return self.reject(
                reject(
                    ErrorReason::PaymentTooEarly,
                    "the send was made before this session was issued",
                )
                .with_payer(&facts.account),
            );
        }
        if !facts.confirmed {
            let Some(block) = facts.block.as_ref() else {
                return self.reject(reject(
                    ErrorReason::BlockNotConfirmed,
                    "the block is not confirmed",
                ));
            };
            let end = u64::try_from(vb.saturating_add(as_i64(self.cfg.fork_grace_secs)))
                .unwrap_or(0)
                .saturating_sub(now);
            // Measured from the request's arrival, like a signed block's wait.
            let deadline =
                (Instant::now() + Duration::from_secs(end)).min(ctx.arrived + self.cfg.max_wait);
            match self.ledger.wait_confirmed(block, deadline).await {
                Ok(Confirmation::Confirmed) => {}
                Ok(Confirmation::Missing) => {
                    return self.reject(reject(
                        ErrorReason::ForkLost,
                        "the block is no longer on the ledger",
                    ))
                }
                Ok(Confirmation::TimedOut) => {
                    return self.reject(reject(
                        ErrorReason::BlockNotConfirmed,
                        "the block was not confirmed in time; present it again",
                    ))
                }
                Err(e) => return self.ledger_failed(&e),
            }
        }

        let receipt = random_hex();
        let (token, token_hash) = super::new_admission_token();
        let at = unix_now();
        let c = Consumption {
            spent_key: spent_key.clone(),
            receipt: receipt.clone(),
            mechanism: TAGGED,
            payer: facts.account.to_address(),
            pay_to: p.pay_to.to_address(),
            amount: p.amount,
            resource: input.resource.clone(),
            nonce: Some(p.session_id.clone()),
            now: as_i64(at),
            state: PaymentState::Admitted,
            lease_until: ctx.lease_until(at),
            admission_token: Some(token_hash),
        };
        let t = Instant::now();
        let consumed = self
            .store
            .consume_tagged(&c, &p.session_id, &hash.to_hex())
            .await;
        self.metrics.store_op("consume_tagged", t.elapsed());
        match consumed {
            Err(e) => self.store_failed(&e),
            Ok(TaggedConsume::Spent) => self.reject(
                reject(ErrorReason::AlreadySpent, "this block was already consumed")
                    .with_payer(&facts.account),
            ),
            Ok(TaggedConsume::SessionUsed) => {
                // Another replica (or request) may have consumed it with this very block.
                let same = matches!(
                    self.store.session(&p.session_id).await,
                    Ok(Some(ref s)) if s.consumed_hash.as_deref() == Some(hash.to_hex().as_str())
                );
                if same {
                    return self.reject(
                        reject(
                            ErrorReason::DuplicateSettlement,
                            "this payment was just admitted for this session",
                        )
                        .with_payer(&facts.account),
                    );
                }
                let s = Self::stray(
                    &hash,
                    &p.pay_to,
                    facts.amount,
                    &facts.account,
                    "session_used",
                    Some(&p.session_id),
                );
                self.record_stray(s).await;
                self.reject(
                    reject(
                        ErrorReason::AlreadySpent,
                        "this session was already used by another payment",
                    )
                    .with_payer(&facts.account),
                )
            }
            Ok(TaggedConsume::Consumed) => {
                self.metrics.payments_settled.inc();
                self.metrics
                    .settlement_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(%hash, session = %p.session_id, "tagged payment consumed");
                let c = self.checked(&p, hash, facts.account, spent_key, &input.resource);
                self.admit(&c, receipt, false, Some(token))
            }
        }
    }

    /// The [`Checked`] the shared admission and redemption code reads (hash, payer, nonce).
    /// The block is a placeholder: the client broadcast its own, we never publish it.
    fn checked(
        &self,
        p: &Presented,
        hash: BlockHash,
        payer: PublicKey,
        spent_key: String,
        resource: &str,
    ) -> Checked {
        Checked {
            block: StateBlock {
                account: payer,
                previous: BlockHash([0; 32]),
                representative: payer,
                balance: 0,
                link: p.pay_to.0,
                signature: Signature([0; 64]),
                work: 0,
            },
            hash,
            payer,
            amount: p.amount,
            pay_to: p.pay_to,
            resource: resource.to_owned(),
            nonce: Some(p.session_id.clone()),
            valid_before: p.valid_before,
            spent_key,
            frontier_key: String::new(),
            final_on_consume: false,
            expired: false,
        }
    }

    /// A confirmation push: mark the matching session paid, or record a stray payment.
    /// `Some(hash)` asks the caller to re-check later whether it was a signed-block payment.
    pub async fn on_confirmed_send(&self, cb: &ConfirmedBlock) -> Option<BlockHash> {
        let dest = cb.destination()?;
        let pool = self.tagged.is_watched(&dest);
        if !pool && !self.tagged.is_payee(&dest) {
            return None;
        }
        let now = unix_now();
        let hash = cb.hash.to_hex();
        let spent_key = format!("{}:{}", self.cfg.network, hash);
        // Our own signed-block broadcasts are claimed before they are published: never a
        // session's payment, never stray.
        match self.store.is_signed_block(&spent_key, &hash).await {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watcher: store error");
                return None;
            }
        }
        if !pool {
            // A signed-block payee only: anything but our own payment is owed, judged after
            // the settle window (a presentation in flight claims its block first).
            return Some(cb.hash);
        }
        let found = self
            .store
            .session_by_amount(&dest.to_hex(), &cb.amount.to_string())
            .await;
        let s = match found {
            Err(e) => {
                tracing::warn!(error = %e, "watcher: store error");
                return None;
            }
            Ok(None) => return Some(cb.hash),
            Ok(Some(s)) => s,
        };
        if s.consumed_hash.as_deref() == Some(hash.as_str())
            || s.paid_hash.as_deref() == Some(hash.as_str())
        {
            return None;
        }
        // Judged by when the node first saw the send, not when we hear of it: a send caught up
        // from the ledger after a gap was still made in time if the node saw it in time.
        let first_seen = cb
            .local_timestamp
            .filter(|t| *t > 0)
            .unwrap_or(now)
            .min(now);
        let reason = if as_i64(first_seen) < s.issued_at {
            "too_early"
        } else if s.valid_before <= as_i64(first_seen) {
            "late"
        } else if s.paid_hash.is_some() || s.consumed_hash.is_some() {
            "session_used"
        } else {
            // Settled, not served yet: listed `redeemable` at once, so the send is accounted
            // for even if its payer never presents it; its first presentation takes the row
            // over (see `pay_tagged`).
            let paid = Consumption {
                spent_key: spent_key.clone(),
                receipt: random_hex(),
                mechanism: TAGGED,
                payer: cb.account.to_address(),
                pay_to: dest.to_address(),
                amount: cb.amount,
                resource: s.scope.clone(),
                nonce: Some(s.id.clone()),
                now: as_i64(first_seen),
                state: PaymentState::Redeemable,
                lease_until: 0,
                admission_token: None,
            };
            match self.store.mark_session_paid(&paid, &s.id, &hash).await {
                Ok(true) => {
                    tracing::debug!(session = %s.id, %hash, "session paid");
                    return None;
                }
                Ok(false) => {
                    // Another replica's watcher may have matched this very block.
                    let same = matches!(
                        self.store.session(&s.id).await,
                        Ok(Some(ref now)) if now.paid_hash.as_deref() == Some(hash.as_str())
                            || now.consumed_hash.as_deref() == Some(hash.as_str())
                    );
                    if same {
                        return None;
                    }
                    "session_used"
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watcher: store error");
                    return None;
                }
            }
        };
        let stray = Self::stray(&cb.hash, &dest, cb.amount, &cb.account, reason, Some(&s.id));
        self.record_stray(stray).await;
        None
    }

    /// A send to a pool account that matched no session, or to a signed-block payee account:
    /// unless it was recorded meanwhile (or is a signed-block payment), it is owed
    /// (`unmatched`).
    async fn unmatched_later(&self, cb: &ConfirmedBlock) {
        let key = format!("{}:{}", self.cfg.network, cb.hash.to_hex());
        let known = match self.store.spent(&key).await {
            Ok(Some(_)) => Ok(true),
            Ok(None) => self.store.is_signed_block(&key, &cb.hash.to_hex()).await,
            Err(e) => Err(e),
        };
        match known {
            Ok(true) => {}
            Ok(false) => {
                if let Some(dest) = cb.destination() {
                    let s = Self::stray(&cb.hash, &dest, cb.amount, &cb.account, "unmatched", None);
                    // Listed under the mechanism the account serves.
                    let mechanism = if self.tagged.is_watched(&dest) {
                        TAGGED
                    } else {
                        SIGNED_BLOCK
                    };
                    self.record_unmatched(s, mechanism).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "watcher: store error"),
        }
    }
}

/// The one place a confirmed send to a pool or signed-block payee account is judged, whether the WebSocket pushed
/// it or the reconciler found it on the ledger ([`super::reconcile`]): it marks the matching
/// session paid or records a stray payment; a send matching no session (and any send to a
/// signed-block payee that is not our payment) is judged after `settle_window` (it may be a
/// signed-block payment still being presented or recorded).
pub async fn handle_confirmed_send(
    engine: &Arc<Engine>,
    cb: ConfirmedBlock,
    settle_window: Duration,
) {
    if engine.on_confirmed_send(&cb).await.is_some() {
        let engine = Arc::downgrade(engine);
        tokio::spawn(async move {
            tokio::time::sleep(settle_window).await;
            if let Some(e) = engine.upgrade() {
                e.unmatched_later(&cb).await;
            }
        });
    }
}

/// Follows confirmations and hands sends to pool accounts to [`handle_confirmed_send`], until
/// the engine is dropped. A receiver that fell behind asks the reconciler to catch up.
pub fn spawn_watcher(
    engine: &Arc<Engine>,
    mut rx: tokio::sync::broadcast::Receiver<ConfirmedBlock>,
    settle_window: Duration,
) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        loop {
            let cb = match rx.recv().await {
                Ok(cb) => cb,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "watcher lagged behind confirmations; reconciling"
                    );
                    if let Some(engine) = weak.upgrade() {
                        engine.tagged.request_reconcile();
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(engine) = weak.upgrade() else {
                return;
            };
            handle_confirmed_send(&engine, cb, settle_window).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pool_index_is_deterministic_and_spreads_over_the_pool() {
        let mut counts = [0usize; 3];
        for i in 0..3000u32 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(
                &nanogate_protocol::nano::work::difficulty(&[i as u8; 32], u64::from(i))
                    .to_be_bytes(),
            );
            let k = pool_index(&id, 3);
            assert_eq!(k, pool_index(&id, 3));
            counts[k] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        assert_eq!(pool_index(&[9; 16], 1), 0);
        assert_eq!(pool_index(&[9; 16], 0), 0);
    }

    #[test]
    fn a_session_never_outlives_the_keys_that_verify_it() {
        let keys = crate::keys::ChallengeKeys::new(b"0123456789abcdef".to_vec(), 300);
        for now in [3_000u64, 3_001, 3_150, 3_299] {
            for validity in [1u64, 299, 300, 301, 600, 3_600] {
                let k = keys.current(now);
                let vb = session_valid_before(now, validity, k.not_after, 300);
                assert!(vb <= now + validity);
                assert!(vb > now, "a session is valid for a while");
                // Its key is honoured up to its last valid second.
                assert!(
                    keys.honoured(k.key_id, vb - 1).is_some(),
                    "{now} {validity}"
                );
                // A validity of one rotation period is never shortened.
                if validity <= 300 {
                    assert_eq!(vb, now + validity);
                }
            }
        }
    }

    #[test]
    fn only_payloads_without_a_block_are_client_broadcast() {
        assert!(is_client_broadcast(&json!({"payload": {"proof": "AB"}})));
        assert!(is_client_broadcast(&json!({"payload": {"sessionId": "x"}})));
        assert!(!is_client_broadcast(
            &json!({"payload": {"block": {}, "proof": "AB"}})
        ));
        assert!(!is_client_broadcast(&json!({"payload": "x"})));
        assert!(!is_client_broadcast(&json!({})));
    }
}
