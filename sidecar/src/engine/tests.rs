//! Engine unit tests against the in-memory ledger (cases the devnet cannot stage easily).

use super::*;
use crate::ledger::fake::FakeLedger;
use crate::store::sqlite::SqliteStore;
use crate::store::{Consumption, ForkEntry, PaymentState};
use nanogate_protocol::challenge::ChallengeStamp;
use nanogate_protocol::contract::{Mechanism, Offer, Payee};
use nanogate_protocol::nano::{PrivateKey, Signature, StateBlock};
use serde_json::json;

const SECRET: &[u8] = b"unit-test-master-secret-0123456789";
const PRICE: u128 = 1_000;
const URL: &str = "http://t/paid";

struct Fixture {
    engine: Engine,
    ledger: Arc<FakeLedger>,
    payer: PrivateKey,
    payee: PublicKey,
    path: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", self.path.display()));
        }
    }
}

async fn fixture(allow_unbound: bool) -> Fixture {
    fixture_with(allow_unbound, Limits::default()).await
}

async fn fixture_with(allow_unbound: bool, limits: Limits) -> Fixture {
    let path = std::env::temp_dir().join(format!("nanogate_engine_{}.db", random_hex()));
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()), 4)
        .await
        .expect("store");
    let ledger = Arc::new(FakeLedger::new());
    let payer = PrivateKey::from_seed(&[1; 32], 0);
    let payee = PrivateKey::from_seed(&[2; 32], 0).public_key();
    ledger.open(payer.public_key(), BlockHash([5; 32]), 10 * PRICE);
    let cfg = EngineConfig {
        network: "nano:devnet".into(),
        node_network: Network::Dev,
        max_wait: Duration::from_secs(1),
        fork_grace_secs: 60,
        redeem: RedeemPolicy {
            max_redemptions: 1,
            window_secs: 600,
        },
        retention: Retention {
            served_secs: 30 * 86_400,
            owed_secs: 90 * 86_400,
        },
        allow_unbound,
        pay_to_allow: vec![payee],
    };
    let engine = Engine::new(
        cfg,
        ChallengeKeys::new(SECRET.to_vec(), 300),
        Arc::new(store),
        ledger.clone(),
        Arc::new(Metrics::new()),
    )
    .with_limits(Arc::new(limits));
    Fixture {
        engine,
        ledger,
        payer,
        payee,
        path,
    }
}

impl Fixture {
    fn requirements(&self, valid_for: u64) -> PaymentRequirements {
        let now = unix_now();
        self.requirements_issued(now, now + valid_for, PRICE)
    }

    /// A challenge the filter issued at `issued` (with that time's key), valid until
    /// `valid_before`, for `amount`.
    fn requirements_issued(
        &self,
        issued: u64,
        valid_before: u64,
        amount: u128,
    ) -> PaymentRequirements {
        let valid_for = valid_before.saturating_sub(issued);
        let key = self.engine.keys.current(issued);
        let stamp = ChallengeStamp {
            valid_before,
            nonce: rand::random(),
            key_id: key.key_id,
        };
        let payee = Payee::from_key(self.payee);
        Offer {
            network: "nano:devnet",
            pay_to: &payee,
            amount,
            max_timeout_seconds: valid_for,
            resource: URL,
            mechanism: Mechanism::SignedBlock,
        }
        .issue(&key.key, &stamp)
    }

    fn block(&self) -> StateBlock {
        let mut b = StateBlock {
            account: self.payer.public_key(),
            previous: BlockHash([5; 32]),
            representative: self.payer.public_key(),
            balance: 9 * PRICE,
            link: self.payee.0,
            signature: Signature([0; 64]),
            work: 0,
        };
        b.work =
            nanogate_protocol::nano::work::generate(&b.root(), Network::Dev.thresholds().send());
        b.sign(&self.payer);
        b
    }

    fn input(
        &self,
        req: PaymentRequirements,
        block: &StateBlock,
        binding: BindingPolicy,
    ) -> PaymentInput {
        PaymentInput {
            resource: URL.into(),
            payment: json!({"x402Version": 2, "accepted": req, "payload": {"block": block.to_json()}}),
            requirements: req,
            binding,
            work: Default::default(),
        }
    }
}

#[tokio::test]
async fn node_refusal_is_broadcast_failed_and_frees_the_lease() {
    let f = fixture(false).await;
    f.ledger
        .refuse_with(Some("Balance and amount delta do not match"));
    let req = f.requirements(60);
    let block = f.block();
    let input = f.input(req, &block, BindingPolicy::Required);
    let v = f.engine.pay(&input).await;
    assert_eq!(v.reason(), Some(ErrorReason::BroadcastFailed), "{v:?}");
    // The lease ended: presenting the same payment again (node fixed) settles it.
    f.ledger.refuse_with(None);
    let v = f.engine.pay(&input).await;
    assert!(matches!(v, Verdict::Admit(_)), "{v:?}");
}

#[tokio::test]
async fn crashed_replica_claim_is_taken_over_after_its_lease() {
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let nonce = req.extra["nonce"].as_str().map(str::to_owned);
    // Another replica claimed this very block under this challenge, broadcast it, and died.
    let now = as_i64(unix_now());
    let dead = ForkEntry {
        frontier_key: format!(
            "nano:devnet:{}:{}",
            block.account.to_hex(),
            block.previous.to_hex()
        ),
        block_hash: block.hash().to_hex(),
        nonce,
        owner: "dead-replica".into(),
        lease_until: now - 1,
        expires_at: now + 100,
        terms: Some(format!("{PRICE}|{}|{URL}", f.payee.to_hex())),
    };
    assert!(f
        .engine
        .store
        .fork_claim(&dead, now - 10)
        .await
        .expect("claim"));
    f.ledger
        .process(&block)
        .await
        .expect("processed by the dead replica");
    let v = f
        .engine
        .pay(&f.input(req, &block, BindingPolicy::Required))
        .await;
    assert!(matches!(v, Verdict::Admit(_)), "{v:?}");
}

#[tokio::test]
async fn live_claim_of_the_same_block_is_duplicate_settlement() {
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let now = as_i64(unix_now());
    let live = ForkEntry {
        frontier_key: format!(
            "nano:devnet:{}:{}",
            block.account.to_hex(),
            block.previous.to_hex()
        ),
        block_hash: block.hash().to_hex(),
        nonce: req.extra["nonce"].as_str().map(str::to_owned),
        owner: "busy-replica".into(),
        lease_until: now + 30,
        expires_at: now + 100,
        terms: None,
    };
    assert!(f.engine.store.fork_claim(&live, now).await.expect("claim"));
    let v = f
        .engine
        .pay(&f.input(req, &block, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::DuplicateSettlement), "{v:?}");
    assert_eq!(f.ledger.process_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn conflicting_block_winning_during_the_wait_is_fork_lost() {
    let f = fixture(false).await;
    f.ledger.set_auto_confirm(false);
    let req = f.requirements(60);
    let block = f.block();
    let ledger = f.ledger.clone();
    let account = block.account;
    let previous = block.previous;
    let racer = tokio::spawn(async move {
        while ledger.process_calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ledger.fork_wins(account, previous, BlockHash([6; 32]), 9 * PRICE);
    });
    let v = f
        .engine
        .pay(&f.input(req, &block, BindingPolicy::Required))
        .await;
    racer.await.expect("racer");
    assert_eq!(v.reason(), Some(ErrorReason::ForkLost), "{v:?}");
}

#[tokio::test]
async fn expired_unbound_requirements_are_payment_expired() {
    let f = fixture(true).await;
    let mut req = f.requirements(60);
    req.extra = serde_json::Map::new();
    req.extra
        .insert("validBefore".into(), json!(unix_now() - 1));
    let block = f.block();
    let v = f
        .engine
        .pay(&f.input(req, &block, BindingPolicy::Facilitator))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::PaymentExpired), "{v:?}");
}

#[tokio::test]
async fn verify_only_changes_nothing() {
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let input = f.input(req, &block, BindingPolicy::Required);
    for _ in 0..3 {
        assert!(f.engine.verify_only(&input).await.is_ok());
    }
    assert_eq!(f.ledger.process_calls.load(Ordering::SeqCst), 0);
    let nonce = input.requirements.extra["nonce"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        f.engine.store.nonce_binding(nonce).await.expect("store"),
        None
    );
    assert!(matches!(f.engine.pay(&input).await, Verdict::Admit(_)));
}

#[tokio::test]
async fn ledger_down_is_unavailable_not_a_rejection() {
    let f = fixture(false).await;
    f.ledger.set_down(true);
    let req = f.requirements(60);
    let v = f
        .engine
        .pay(&f.input(req, &f.block(), BindingPolicy::Required))
        .await;
    assert!(
        matches!(v, Verdict::Unavailable(ref r) if r.reason == ErrorReason::LedgerUnavailable),
        "{v:?}"
    );
}

// ---- The payment ledger's rules (docs/payments.md) ----

impl Fixture {
    fn spent_key(&self, block: &StateBlock) -> String {
        format!("nano:devnet:{}", block.hash().to_hex())
    }

    /// Records `block` as paid under `req` directly in the store, in `state`, settled `ago`
    /// seconds ago: a state the scenario reached earlier (no need to wait for it).
    async fn record(
        &self,
        req: &PaymentRequirements,
        block: &StateBlock,
        state: PaymentState,
        settled_ago: i64,
        lease_until: i64,
    ) -> String {
        let receipt = random_hex();
        let now = as_i64(unix_now());
        let recorded = self
            .engine
            .store
            .consume(&Consumption {
                spent_key: self.spent_key(block),
                receipt: receipt.clone(),
                mechanism: crate::store::payments::SIGNED_BLOCK,
                payer: self.payer.public_key().to_address(),
                pay_to: self.payee.to_address(),
                amount: PRICE,
                resource: URL.into(),
                nonce: req.extra["nonce"].as_str().map(str::to_owned),
                now: now - settled_ago,
                state,
                lease_until,
                admission_token: None,
            })
            .await
            .expect("store");
        assert!(recorded);
        receipt
    }

    /// The payer presented `block` under `req` while it was valid (the nonce is bound to it).
    async fn bind_in_time(&self, req: &PaymentRequirements, block: &StateBlock) {
        let nonce = req.extra["nonce"].as_str().expect("nonce");
        let bound = self
            .engine
            .store
            .bind_nonce(nonce, &self.spent_key(block), as_i64(unix_now()) + 600)
            .await
            .expect("store");
        assert_eq!(bound, crate::store::NonceBinding::Fresh);
    }

    async fn state_of(&self, block: &StateBlock) -> Option<PaymentState> {
        self.engine
            .store
            .spent(&self.spent_key(block))
            .await
            .expect("store")
            .map(|r| r.state)
    }
}

#[tokio::test]
async fn redeemable_payment_is_redeemed_after_its_challenge_expired_within_the_window() {
    // The payment settled after the filter stopped waiting (recorded redeemable);
    // the payer comes back 5 minutes later, long after the challenge's validBefore and the
    // fork grace, under a key older than the previous one. It is served, once.
    let f = fixture(false).await;
    let now = unix_now();
    let req = f.requirements_issued(now - 420, now - 300, PRICE);
    let block = f.block();
    f.record(&req, &block, PaymentState::Redeemable, 290, 0)
        .await;
    let input = f.input(req, &block, BindingPolicy::Required);
    let v = f.engine.pay(&input).await;
    assert!(matches!(v, Verdict::Admit(ref a) if a.redeemed), "{v:?}");
    assert_eq!(f.state_of(&block).await, Some(PaymentState::Admitted));
    // The redemption holds the payment until its outcome: no second response meanwhile.
    let again = f.engine.pay(&input).await;
    assert_eq!(
        again.reason(),
        Some(ErrorReason::DuplicateSettlement),
        "{again:?}"
    );
    assert_eq!(f.ledger.process_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redeemable_payment_past_the_window_is_refused_and_swept_to_owed() {
    let f = fixture(false).await;
    let now = unix_now();
    let req = f.requirements_issued(now - 720, now - 660, PRICE);
    let block = f.block();
    f.record(&req, &block, PaymentState::Redeemable, 601, 0)
        .await;
    let v = f
        .engine
        .pay(&f.input(req, &block, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::PaymentExpired), "{v:?}");
    f.engine
        .store
        .sweep(as_i64(unix_now()), f.engine.config().redeem)
        .await
        .expect("sweep");
    let rec = f
        .engine
        .store
        .spent(&f.spent_key(&block))
        .await
        .expect("store")
        .expect("row");
    assert_eq!(rec.state, PaymentState::Owed);
    assert_eq!(rec.reason.as_deref(), Some("redeem_window_passed"));
}

#[tokio::test]
async fn admitted_payment_is_not_redeemable_while_a_slow_upstream_may_still_run() {
    // Admitted 130 s ago for a route whose upstream timeout is 300 s, no outcome
    // yet. The old rule counted "no outcome after 120 s" as a failure and redeemed it for a
    // second, concurrent request.
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let now = as_i64(unix_now());
    f.record(&req, &block, PaymentState::Admitted, 130, now - 130 + 305)
        .await;
    let v = f
        .engine
        .pay(&f.input(req, &block, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::DuplicateSettlement), "{v:?}");
}

#[tokio::test]
async fn admission_whose_lease_ended_without_an_outcome_is_redeemable() {
    // The upstream never answered within its timeout (and no outcome came): redeem.
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let now = as_i64(unix_now());
    f.record(&req, &block, PaymentState::Admitted, 30, now - 1)
        .await;
    let v = f
        .engine
        .pay(&f.input(req, &block, BindingPolicy::Required))
        .await;
    assert!(matches!(v, Verdict::Admit(ref a) if a.redeemed), "{v:?}");
}

#[tokio::test]
async fn lease_follows_the_routes_upstream_timeout() {
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let ctx = PayContext::with_upstream_timeout_ms(Some(300_000));
    let v = f
        .engine
        .pay_with(&f.input(req, &block, BindingPolicy::Required), ctx)
        .await;
    assert!(matches!(v, Verdict::Admit(_)), "{v:?}");
    let rec = f
        .engine
        .store
        .spent(&f.spent_key(&block))
        .await
        .expect("store")
        .expect("row");
    assert_eq!(rec.state, PaymentState::Admitted);
    assert!(rec.lease_until >= rec.settled_at + 305, "{rec:?}");
    // Absent, Envoy's default route timeout (15 s) + 5 s.
    assert_eq!(
        PayContext::with_upstream_timeout_ms(None).lease_until(1_000),
        1_020
    );
}

#[tokio::test]
async fn client_reset_before_response_headers_never_buys_a_second_run() {
    // Status 0 (the client reset before the response headers) means the upstream
    // may have run the request: served, never redeemable.
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let input = f.input(req, &block, BindingPolicy::Required);
    let Verdict::Admit(a) = f.engine.pay(&input).await else {
        panic!("admitted")
    };
    assert_eq!(
        f.engine
            .record_outcome(&a.receipt, 0, a.admission_token.as_deref())
            .await
            .expect("store"),
        OutcomeReport::Recorded
    );
    assert_eq!(f.state_of(&block).await, Some(PaymentState::Served));
    let v = f.engine.pay(&input).await;
    assert_eq!(v.reason(), Some(ErrorReason::AlreadySpent), "{v:?}");
}

#[tokio::test]
async fn upstream_5xx_makes_the_payment_redeemable_once() {
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let input = f.input(req, &block, BindingPolicy::Required);
    let Verdict::Admit(a) = f.engine.pay(&input).await else {
        panic!("admitted")
    };
    assert_eq!(
        f.engine
            .record_outcome(&a.receipt, 504, a.admission_token.as_deref())
            .await
            .expect("store"),
        OutcomeReport::Recorded
    );
    assert_eq!(f.state_of(&block).await, Some(PaymentState::Redeemable));
    let v = f.engine.pay(&input).await;
    let Verdict::Admit(r) = &v else {
        panic!("redeemed: {v:?}")
    };
    assert!(r.redeemed && r.receipt == a.receipt, "{v:?}");
    // The redemption is a new admission: the first one's token no longer reports.
    assert_ne!(r.admission_token, a.admission_token);
    assert_eq!(
        f.engine
            .record_outcome(&a.receipt, 502, a.admission_token.as_deref())
            .await
            .expect("store"),
        OutcomeReport::Refused("stale_token")
    );
    assert_eq!(
        f.engine
            .record_outcome(&a.receipt, 200, r.admission_token.as_deref())
            .await
            .expect("store"),
        OutcomeReport::Recorded
    );
    assert_eq!(f.state_of(&block).await, Some(PaymentState::Served));
    // A late duplicate report changes nothing.
    assert_eq!(
        f.engine
            .record_outcome(&a.receipt, 502, r.admission_token.as_deref())
            .await
            .expect("store"),
        OutcomeReport::NotAdmitted
    );
    let v = f.engine.pay(&input).await;
    assert_eq!(v.reason(), Some(ErrorReason::AlreadySpent), "{v:?}");
}

#[tokio::test]
async fn undelivered_admission_is_redeemable() {
    // The settlement finished after the filter stopped waiting.
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    let input = f.input(req, &block, BindingPolicy::Required);
    let Verdict::Admit(a) = f.engine.pay(&input).await else {
        panic!("admitted")
    };
    f.engine.undelivered(&a.receipt).await;
    assert_eq!(f.state_of(&block).await, Some(PaymentState::Redeemable));
    let v = f.engine.pay(&input).await;
    assert!(matches!(v, Verdict::Admit(ref r) if r.redeemed), "{v:?}");
}

#[tokio::test]
async fn block_confirmed_after_the_wait_is_tracked_and_recorded_redeemable() {
    // The wait ends (block_not_confirmed), the block confirms later; the sidecar
    // kept tracking it and records it redeemable without any re-presentation.
    let f = fixture(false).await;
    f.ledger.set_auto_confirm(false);
    let req = f.requirements(60);
    let block = f.block();
    let input = f.input(req, &block, BindingPolicy::Required);
    let v = f.engine.pay(&input).await;
    assert_eq!(v.reason(), Some(ErrorReason::BlockNotConfirmed), "{v:?}");
    assert_eq!(f.state_of(&block).await, None);
    let pending = f.engine.store.pending(0).await.expect("store");
    assert_eq!(pending.len(), 1);
    f.ledger.confirm(&block.hash());
    // The tracker records the payment, then drops its pending row: wait for both.
    for _ in 0..200 {
        if f.state_of(&block).await.is_some()
            && f.engine.store.pending(0).await.expect("store").is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.state_of(&block).await, Some(PaymentState::Redeemable));
    assert!(f.engine.store.pending(0).await.expect("store").is_empty());
    let v = f.engine.pay(&input).await;
    assert!(matches!(v, Verdict::Admit(ref r) if r.redeemed), "{v:?}");
    assert_eq!(f.ledger.process_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn block_confirmed_after_its_challenge_expired_is_recorded_and_admitted_in_the_window() {
    // Nothing recorded (the tracker was not running), the block confirmed on the
    // ledger; presented under its challenge 100 s after validBefore (past the fork grace).
    let f = fixture(false).await;
    let now = unix_now();
    let req = f.requirements_issued(now - 220, now - 100, PRICE);
    let block = f.block();
    f.bind_in_time(&req, &block).await;
    f.ledger.process(&block).await.expect("processed");
    f.ledger.set_seen_at(&block.hash(), now - 110);
    let input = f.input(req, &block, BindingPolicy::Required);
    let v = f.engine.pay(&input).await;
    assert!(matches!(v, Verdict::Admit(ref a) if !a.redeemed), "{v:?}");
    assert_eq!(f.state_of(&block).await, Some(PaymentState::Admitted));
    let v = f.engine.pay(&input).await;
    assert_eq!(v.reason(), Some(ErrorReason::DuplicateSettlement), "{v:?}");
}

#[tokio::test]
async fn block_confirmed_late_and_presented_after_the_window_is_recorded_owed() {
    let f = fixture(false).await;
    let now = unix_now();
    let req = f.requirements_issued(now - 900, now - 800, PRICE);
    let block = f.block();
    f.bind_in_time(&req, &block).await;
    f.ledger.process(&block).await.expect("processed");
    f.ledger.set_seen_at(&block.hash(), now - 805);
    let v = f
        .engine
        .pay(&f.input(req, &block, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::ChallengeExpired), "{v:?}");
    let rec = f
        .engine
        .store
        .spent(&f.spent_key(&block))
        .await
        .expect("store")
        .expect("owed row");
    assert_eq!(rec.state, PaymentState::Owed);
    assert_eq!(rec.reason.as_deref(), Some("redeem_window_passed"));
    assert_eq!(rec.amount, PRICE.to_string());
}

#[tokio::test]
async fn expired_challenge_never_pays_for_a_block_that_is_not_on_the_ledger() {
    let f = fixture(false).await;
    let now = unix_now();
    let req = f.requirements_issued(now - 220, now - 100, PRICE);
    let v = f
        .engine
        .pay(&f.input(req, &f.block(), BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::ChallengeExpired), "{v:?}");
    assert_eq!(f.ledger.process_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redemption_must_present_the_recorded_terms() {
    // A recorded redeemable payment presented under a genuine challenge for another amount
    // with the same nonce is impossible; with another resource's challenge the nonce differs.
    let f = fixture(false).await;
    let req = f.requirements(60);
    let block = f.block();
    f.record(&req, &block, PaymentState::Redeemable, 10, 0)
        .await;
    let other = f.requirements(60);
    let v = f
        .engine
        .pay(&f.input(other, &block, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::AlreadySpent), "{v:?}");
}

#[tokio::test]
async fn unbound_takeover_with_a_different_amount_is_refused() {
    // With allow_unbound, a block claimed (and broadcast) for a cheap resource
    // timed out; presenting it again for an expensive one must not take the claim over: the
    // takeover skips the ledger checks, so it would buy the expensive resource for the cheap
    // price.
    let f = fixture(true).await;
    f.ledger.set_auto_confirm(false);
    let now = unix_now();
    let unbound = |amount: u128| {
        let mut r = f.requirements_issued(now, now + 60, amount);
        r.extra = serde_json::Map::new();
        r.extra.insert("validBefore".into(), json!(now + 60));
        r
    };
    let block = f.block();
    let cheap = f.input(unbound(PRICE), &block, BindingPolicy::Facilitator);
    let v = f.engine.pay(&cheap).await;
    assert_eq!(v.reason(), Some(ErrorReason::BlockNotConfirmed), "{v:?}");
    f.ledger.confirm(&block.hash());
    let dear = f.input(unbound(2 * PRICE), &block, BindingPolicy::Facilitator);
    let v = f.engine.pay(&dear).await;
    assert_eq!(v.reason(), Some(ErrorReason::AmountMismatch), "{v:?}");
}

#[tokio::test]
async fn confirmed_block_of_another_payer_cannot_be_claimed_under_an_expired_challenge() {
    // An observer sees a confirmed payment on the ledger (its payer presented it in time, the
    // confirmation came late) and presents it under its own authentic but expired challenge
    // for the same terms. It buys nothing, records nothing, and the payer's own presentation
    // is still served.
    let f = fixture(false).await;
    let now = unix_now();
    let payers = f.requirements_issued(now - 220, now - 100, PRICE);
    let observers = f.requirements_issued(now - 200, now - 90, PRICE);
    let block = f.block();
    f.bind_in_time(&payers, &block).await;
    f.ledger.process(&block).await.expect("processed");
    f.ledger.set_seen_at(&block.hash(), now - 110);
    let stolen = f
        .engine
        .pay(&f.input(observers, &block, BindingPolicy::Required))
        .await;
    assert_eq!(
        stolen.reason(),
        Some(ErrorReason::ChallengeExpired),
        "{stolen:?}"
    );
    assert_eq!(f.state_of(&block).await, None);
    let v = f
        .engine
        .pay(&f.input(payers, &block, BindingPolicy::Required))
        .await;
    assert!(matches!(v, Verdict::Admit(_)), "{v:?}");
}

impl Fixture {
    /// A send from the payer on `previous` leaving `balance`, to `link`, with send work (or
    /// none) and signed by `signer`.
    fn block_with(
        &self,
        previous: BlockHash,
        balance: u128,
        link: [u8; 32],
        work: bool,
        signer: &PrivateKey,
    ) -> StateBlock {
        let mut b = StateBlock {
            account: self.payer.public_key(),
            previous,
            representative: self.payer.public_key(),
            balance,
            link,
            signature: Signature([0; 64]),
            work: 0,
        };
        if work {
            b.work = nanogate_protocol::nano::work::generate(
                &b.root(),
                Network::Dev.thresholds().send(),
            );
        }
        b.sign(signer);
        b
    }

    /// Rows in every table of the store.
    async fn rows(&self) -> i64 {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}", self.path.display()))
            .await
            .expect("open the store file");
        // Every table but sqlx's own bookkeeping: a new table is counted without a change here.
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations'",
        )
        .fetch_all(&pool)
        .await
        .expect("list tables");
        let mut total = 0;
        for (t,) in tables {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM \"{t}\""))
                .fetch_one(&pool)
                .await
                .expect("count");
            total += n;
        }
        pool.close().await;
        total
    }

    fn account_calls(&self) -> u64 {
        self.ledger.account_calls.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn junk_payments_under_fresh_challenges_cost_no_store_row_and_no_node_call() {
    let f = fixture(false).await;
    let stranger = PrivateKey::from_seed(&[9; 32], 0);
    let head = BlockHash([5; 32]);
    let cases = [
        (
            f.block_with(head, 9 * PRICE, [7; 32], true, &f.payer),
            ErrorReason::WrongDestination,
        ),
        (
            f.block_with(head, 9 * PRICE, f.payee.0, true, &stranger),
            ErrorReason::InvalidSignature,
        ),
        (
            f.block_with(head, 9 * PRICE, f.payee.0, false, &f.payer),
            ErrorReason::InsufficientWork,
        ),
    ];
    for (block, reason) in &cases {
        for _ in 0..20 {
            let v = f
                .engine
                .pay(&f.input(f.requirements(60), block, BindingPolicy::Required))
                .await;
            assert_eq!(v.reason(), Some(*reason), "{v:?}");
        }
    }
    assert_eq!(
        f.rows().await,
        0,
        "no store row for a locally refused payment"
    );
    assert_eq!(f.account_calls(), 0, "no node call either");
}

#[tokio::test]
async fn wrong_amount_block_replayed_under_fresh_challenges_buys_one_node_call() {
    let f = fixture(false).await;
    // Valid signature and work, on the payer's frontier, but it pays twice the price.
    let block = f.block_with(BlockHash([5; 32]), 8 * PRICE, f.payee.0, true, &f.payer);
    for _ in 0..50 {
        let v = f
            .engine
            .pay(&f.input(f.requirements(60), &block, BindingPolicy::Required))
            .await;
        assert_eq!(v.reason(), Some(ErrorReason::AmountMismatch), "{v:?}");
    }
    assert_eq!(
        f.account_calls(),
        1,
        "later presentations are refused from the cache"
    );
    assert_eq!(f.rows().await, 0);
    assert_eq!(f.engine.metrics.frontier_cache_refusals.get(), 49);
}

#[tokio::test]
async fn the_frontier_cache_never_fails_a_valid_payment() {
    let f = fixture(false).await;
    let head = BlockHash([5; 32]);
    // A wrong amount on the head fills the cache with the head's state.
    let wrong = f.block_with(head, 8 * PRICE, f.payee.0, true, &f.payer);
    let v = f
        .engine
        .pay(&f.input(f.requirements(60), &wrong, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::AmountMismatch));
    // The right amount on the same head still goes to the node and is admitted.
    let first = f.block_with(head, 9 * PRICE, f.payee.0, true, &f.payer);
    let v = f
        .engine
        .pay(&f.input(f.requirements(60), &first, BindingPolicy::Required))
        .await;
    assert!(matches!(v, Verdict::Admit(_)), "{v:?}");
    // The cache still holds the old head; the next payment builds on the new one and is
    // admitted too (a block off the cached frontier always asks the node).
    let second = f.block_with(first.hash(), 8 * PRICE, f.payee.0, true, &f.payer);
    let v = f
        .engine
        .pay(&f.input(f.requirements(60), &second, BindingPolicy::Required))
        .await;
    assert!(matches!(v, Verdict::Admit(_)), "{v:?}");
    // And a wrong amount on the new head is refused from the new answer.
    let wrong2 = f.block_with(second.hash(), 6 * PRICE, f.payee.0, true, &f.payer);
    let v = f
        .engine
        .pay(&f.input(f.requirements(60), &wrong2, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::AmountMismatch));
}

#[tokio::test]
async fn a_refused_payment_leaves_its_challenge_usable_for_a_corrected_block() {
    let f = fixture(false).await;
    let req = f.requirements(60);
    let wrong = f.block_with(BlockHash([5; 32]), 8 * PRICE, f.payee.0, true, &f.payer);
    let v = f
        .engine
        .pay(&f.input(req.clone(), &wrong, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::AmountMismatch));
    let v = f
        .engine
        .pay(&f.input(req.clone(), &f.block(), BindingPolicy::Required))
        .await;
    assert!(matches!(v, Verdict::Admit(_)), "{v:?}");
    // Once bound, the challenge buys nothing else.
    let other = f.block_with(f.block().hash(), 8 * PRICE, f.payee.0, true, &f.payer);
    let v = f
        .engine
        .pay(&f.input(req, &other, BindingPolicy::Required))
        .await;
    assert_eq!(v.reason(), Some(ErrorReason::InvalidChallenge), "{v:?}");
}

#[tokio::test]
async fn one_block_replayed_past_its_frontier_limit_is_rate_limited() {
    let limits = crate::limits::Limits::new(crate::limits::LimitSettings {
        source_refusals: crate::limits::Rate {
            per_sec: 0,
            burst: 0,
        },
        payer_presentations: crate::limits::Rate {
            per_sec: 2,
            burst: 10,
        },
    });
    let f = fixture_with(false, limits).await;
    let engine = &f.engine;
    let block = f.block_with(BlockHash([5; 32]), 8 * PRICE, f.payee.0, true, &f.payer);
    let mut limited = 0;
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let v = engine
            .pay(&f.input(f.requirements(60), &block, BindingPolicy::Required))
            .await;
        match v {
            Verdict::Reject(r) if r.reason == ErrorReason::RateLimited => {
                assert_eq!(r.status, 429);
                assert!(r.retry_after.is_some_and(|s| s >= 1));
                limited += 1;
            }
            other => assert_eq!(other.reason(), Some(ErrorReason::AmountMismatch)),
        }
    }
    // Every presentation past the burst is limited, except those the budget (2/s) refilled
    // while the loop ran: a count that holds on a loaded machine too.
    let elapsed = started.elapsed();
    let refilled = (2.0 * elapsed.as_secs_f64()).ceil() as usize;
    let least = 20usize.saturating_sub(refilled + 1);
    assert!(
        limited >= least,
        "{limited} of 30 limited in {elapsed:?} (at least {least})"
    );
}

#[tokio::test]
async fn concurrent_replays_of_a_wrong_amount_block_share_one_node_call() {
    let f = fixture(false).await;
    let block = f.block_with(BlockHash([5; 32]), 8 * PRICE, f.payee.0, true, &f.payer);
    let inputs: Vec<_> = (0..20)
        .map(|_| f.input(f.requirements(60), &block, BindingPolicy::Required))
        .collect();
    let verdicts = futures_util::future::join_all(inputs.iter().map(|i| f.engine.pay(i))).await;
    for v in &verdicts {
        assert_eq!(v.reason(), Some(ErrorReason::AmountMismatch), "{v:?}");
    }
    assert_eq!(f.account_calls(), 1);
}
