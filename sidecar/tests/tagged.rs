//! Tagged sessions against the in-process devnet: issuing with unique amounts, the watcher
//! marking sessions paid, admission once, and every refusal that must be recorded as a stray
//! payment.

mod common;

use common::*;
use nanogate_devnet::{Confirm, Devnet};
use nanogate_protocol::challenge::{self, ChallengeStamp, ChallengeTerms, Mechanism};
use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey};
use nanogate_protocol::x402::PaymentRequirements;
use nanogate_sidecar::keys::ChallengeKeys;
use serde_json::{json, Value};
use std::time::Duration;

const SCOPE: &str = "nanogate-route:tagged";

fn pool() -> Vec<PublicKey> {
    vec![payee(), key(201).public_key()]
}

async fn issue(sc: &Sidecar, count: usize, pool: &[PublicKey], validity: u64) -> Vec<Value> {
    let r = http()
        .post(format!("{}{}", sc.base, paths::SESSIONS))
        .header(headers::SECRET, FILTER_SECRET)
        .json(&json!({
            "count": count, "scope": SCOPE, "price": PRICE.to_string(),
            "payTo": pool.iter().map(|k| k.to_address()).collect::<Vec<_>>(),
            "validitySeconds": validity,
        }))
        .send()
        .await
        .expect("sessions");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["sessions"].as_array().cloned().unwrap_or_default()
}

fn requirements(s: &Value) -> PaymentRequirements {
    let mut extra = serde_json::Map::new();
    extra.insert("validBefore".into(), s["validBefore"].clone());
    extra.insert("nonce".into(), s["id"].clone());
    extra.insert("keyId".into(), s["keyId"].clone());
    extra.insert("mac".into(), s["mac"].clone());
    PaymentRequirements {
        scheme: SCHEME_EXACT.into(),
        network: NETWORK.into(),
        amount: s["amount"].as_str().unwrap_or("").into(),
        asset: ASSET_XNO.into(),
        pay_to: s["payTo"].as_str().unwrap_or("").into(),
        max_timeout_seconds: 60,
        extra,
    }
}

async fn present(sc: &Sidecar, s: &Value, proof: Option<&BlockHash>) -> Value {
    let req = requirements(s);
    let mut payload = json!({"sessionId": s["id"]});
    if let Some(h) = proof {
        payload["proof"] = json!(h.to_hex());
    }
    let payment = json!({"x402Version": 2, "accepted": req, "payload": payload});
    pay_at(&sc.base, SCOPE, &req, &payment).await
}

fn amount(s: &Value) -> u128 {
    s["amount"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

fn pay_to(s: &Value) -> PublicKey {
    PublicKey::from_address(s["payTo"].as_str().unwrap_or("")).expect("payTo")
}

/// The client broadcasts its own send (as a wallet would) and waits for confirmation.
async fn broadcast(d: &Devnet, payer: &PrivateKey, to: PublicKey, amount: u128) -> BlockHash {
    let block = good_block(d, payer, amount, to);
    let hash = d.ledger().process(&block).expect("devnet accepts the send");
    assert!(
        d.ledger()
            .wait_confirmed(&hash, Duration::from_secs(10))
            .await
    );
    hash
}

async fn strays(sc: &Sidecar) -> Vec<Value> {
    let r = http()
        .get(format!("{}{}", sc.base, paths::ADMIN_STRAY))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("stray");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["stray"].as_array().cloned().unwrap_or_default()
}

async fn metrics(sc: &Sidecar) -> String {
    http()
        .get(format!("{}{}", sc.base, paths::METRICS))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default()
}

async fn setup(payers: &[&PrivateKey], tag_space: u64) -> (Devnet, Db, Sidecar) {
    let d = devnet(payers, Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let mut cfg = devnet_config(&d, &db);
    cfg.tagged.tag_space = tag_space;
    let sc = Sidecar::start(&cfg).await;
    (d, db, sc)
}

#[tokio::test]
async fn open_sessions_on_one_account_get_distinct_amounts_spread_over_the_pool() {
    let (_d, _db, sc) = setup(&[], 999_999_999_999).await;
    let sessions = issue(&sc, 24, &pool(), 60).await;
    assert_eq!(sessions.len(), 24);
    let mut seen = std::collections::HashSet::new();
    for s in &sessions {
        let a = amount(s);
        assert!(
            a > PRICE && a - PRICE <= 999_999_999_999,
            "tag in the low digits: {a}"
        );
        assert!(
            seen.insert((pay_to(s), a)),
            "two open sessions share an amount"
        );
        assert_eq!(s["id"].as_str().map(str::len), Some(32), "128-bit ids");
    }
    let on_first = sessions.iter().filter(|s| pay_to(s) == payee()).count();
    assert!(on_first > 0 && on_first < 24, "both pool accounts are used");

    // A tiny tag space: one account holds at most that many open sessions.
    let (_d2, _db2, small) = setup(&[], 3).await;
    let s = issue(&small, 10, &[payee()], 60).await;
    assert_eq!(s.len(), 3, "only 3 distinct tags exist");
    let amounts: std::collections::HashSet<u128> = s.iter().map(amount).collect();
    assert_eq!(amounts.len(), 3);

    // Only the filter may ask.
    let r = http()
        .post(format!("{}{}", sc.base, paths::SESSIONS))
        .json(&json!({"count": 1, "scope": SCOPE, "price": "1", "payTo": [payee().to_address()], "validitySeconds": 5}))
        .send()
        .await
        .expect("sessions");
    assert_eq!(r.status(), 401);
}

/// Scenario: a route asks for sessions longer than two key periods (an hour, at the default
/// 300 s rotation). Were they issued as asked, the wallet could pay a session that the key
/// ring no longer verifies. Each session must end while its key is still honoured.
#[tokio::test]
async fn sessions_longer_than_the_key_periods_end_while_their_key_is_honoured() {
    let (_d, _db, sc) = setup(&[], 999_999_999_999).await;
    let before = now();
    let sessions = issue(&sc, 8, &pool(), 3_600).await;
    let after = now();
    assert_eq!(sessions.len(), 8);
    let keys = ChallengeKeys::new(CHALLENGE_SECRET.as_bytes().to_vec(), 300);
    for s in &sessions {
        let vb = s["validBefore"].as_u64().expect("validBefore");
        let key_id = s["keyId"].as_u64().expect("keyId");
        assert!(
            keys.honoured(key_id, vb - 1).is_some(),
            "session key {key_id} is no longer honoured at its last valid second {}",
            vb - 1
        );
        assert!(vb <= before + 3_600 + 1, "never longer than asked");
        assert!(vb >= before + 300, "at least one key period of validity");
        assert!(vb <= after + 600, "at most two key periods");
    }
    // A validity of one key period is issued as asked.
    let short = issue(&sc, 2, &pool(), 300).await;
    for s in &short {
        let vb = s["validBefore"].as_u64().expect("validBefore");
        assert!(vb >= before + 300 && vb <= now() + 300, "{vb}");
    }
}

#[tokio::test]
async fn tagged_payment_is_admitted_once_and_its_hash_never_buys_another_session() {
    let payer = key(1);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = issue(&sc, 2, &[payee()], 60).await;
    let (s1, s2) = (&s[0], &s[1]);
    let hash = broadcast(&d, &payer, pay_to(s1), amount(s1)).await;

    let v = present(&sc, s1, Some(&hash)).await;
    assert_admit(&v);
    assert_eq!(v["transaction"].as_str(), Some(hash.to_hex().as_str()));
    // Presented again while its request is in flight: not a second response.
    assert_reject(&present(&sc, s1, Some(&hash)).await, "duplicate_settlement");
    // The same block with another session: the spent set (shared with signed blocks) refuses.
    assert_reject(&present(&sc, s2, Some(&hash)).await, "already_spent");
}

#[tokio::test]
async fn the_watcher_marks_a_session_paid_so_the_session_alone_redeems_it() {
    let payer = key(2);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = &issue(&sc, 1, &[payee()], 60).await[0];
    assert_reject(&present(&sc, s, None).await, "block_not_confirmed");
    broadcast(&d, &payer, pay_to(s), amount(s)).await;
    // The push reaches the watcher shortly after confirmation.
    let mut v = Value::Null;
    for _ in 0..100 {
        v = present(&sc, s, None).await;
        if verdict(&v) == "admit" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_admit(&v);
}

/// The listing row of `hash` in `/v1/admin/payments`.
async fn payment_row(sc: &Sidecar, hash: &BlockHash) -> Option<Value> {
    let r = http()
        .get(format!("{}{}?limit=1000", sc.base, paths::ADMIN_PAYMENTS))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("payments");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["payments"]
        .as_array()?
        .iter()
        .find(|p| p["hash"].as_str() == Some(hash.to_hex().as_str()))
        .cloned()
}

/// Chaos seed 1001: a wallet paid its session, the watcher matched the send, and the payer was
/// never heard from again (its presentations were rate limited). The send reached us, so it
/// is listed (`redeemable`: settled, not served) before anyone presents it, and its first
/// presentation is still served as a first use, not as a redemption.
#[tokio::test]
async fn a_session_paid_but_never_presented_is_listed_redeemable_and_still_buys_its_request() {
    let payer = key(4);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = &issue(&sc, 1, &[payee()], 60).await[0];
    let hash = broadcast(&d, &payer, pay_to(s), amount(s)).await;
    let mut listed = None;
    for _ in 0..100 {
        listed = payment_row(&sc, &hash).await;
        if listed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = listed.expect("the matched send is listed before any presentation");
    assert_eq!(row["state"], "redeemable", "{row}");
    assert_eq!(row["mechanism"], TAGGED, "{row}");
    assert_eq!(row["amount"].as_str(), Some(amount(s).to_string().as_str()));
    assert_eq!(
        row["payer"].as_str(),
        Some(payer.public_key().to_address().as_str())
    );

    let v = present(&sc, s, None).await;
    assert_admit(&v);
    assert_eq!(v["transaction"].as_str(), Some(hash.to_hex().as_str()));
    let row = payment_row(&sc, &hash).await.expect("listed");
    assert_eq!(row["state"], "admitted", "{row}");
    assert_eq!(
        row["redemptions"], 0,
        "the first use is not a redemption: {row}"
    );
    // Once: presented again while its request is in flight.
    assert_reject(&present(&sc, s, None).await, "duplicate_settlement");
    // Served: final.
    sc.outcome(v["receipt"].as_str().unwrap_or(""), 200).await;
    assert_eq!(
        payment_row(&sc, &hash).await.expect("listed")["state"],
        "served"
    );
    assert_reject(&present(&sc, s, None).await, "already_spent");
}

#[tokio::test]
async fn an_amount_off_by_one_raw_is_refused_and_reported() {
    let payer = key(3);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = &issue(&sc, 1, &[payee()], 60).await[0];
    let hash = broadcast(&d, &payer, pay_to(s), amount(s) - 1).await;
    assert_reject(&present(&sc, s, Some(&hash)).await, "amount_mismatch");
    let list = strays(&sc).await;
    let entry = list
        .iter()
        .find(|e| e["hash"] == json!(hash.to_hex()))
        .expect("the wrong amount is listed");
    assert_eq!(entry["reason"], "wrong_amount");
    assert_eq!(entry["amount"], json!((amount(s) - 1).to_string()));
    assert!(metrics(&sc)
        .await
        .contains("nanogate_stray_payments_total{reason=\"wrong_amount\"} 1"));
    // The admin listing needs the bearer token.
    let r = http()
        .get(format!("{}{}", sc.base, paths::ADMIN_STRAY))
        .send()
        .await
        .expect("stray");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_payment_made_before_its_session_was_issued_is_refused() {
    let payer = key(4);
    // One tag: every session on the account gets the amount price + 1.
    let (d, _db, sc) = setup(&[&payer], 1).await;
    // Sent before any session with that amount exists (a session the watcher matched in time
    // is that session's payment instead: see the test below about never presenting one).
    let hash = broadcast(&d, &payer, payee(), PRICE + 1).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let s = &issue(&sc, 1, &[payee()], 30).await[0];
    assert_eq!(amount(s), PRICE + 1);
    assert_reject(&present(&sc, s, Some(&hash)).await, "payment_too_early");
    let list = strays(&sc).await;
    assert!(list
        .iter()
        .any(|e| e["hash"] == json!(hash.to_hex()) && e["reason"] == "too_early"));
}

#[tokio::test]
async fn unknown_forged_and_mismatched_sessions_are_refused() {
    let payer = key(5);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = &issue(&sc, 1, &[payee()], 60).await[0];
    let hash = broadcast(&d, &payer, pay_to(s), amount(s)).await;

    // A different sessionId in the payload than the MAC-bound one.
    let req = requirements(s);
    let payment = json!({"x402Version": 2, "accepted": req,
        "payload": {"sessionId": "00".repeat(16), "proof": hash.to_hex()}});
    assert_reject(
        &pay_at(&sc.base, SCOPE, &req, &payment).await,
        "session_mismatch",
    );

    // A mutated amount breaks the MAC.
    let mut forged = requirements(s);
    forged.amount = (amount(s) + 1).to_string();
    let payment =
        json!({"x402Version": 2, "accepted": forged, "payload": {"proof": hash.to_hex()}});
    assert_reject(
        &pay_at(&sc.base, SCOPE, &forged, &payment).await,
        "invalid_challenge",
    );

    // A genuinely MAC-bound session this system never stored.
    let keys = ChallengeKeys::new(CHALLENGE_SECRET.as_bytes().to_vec(), 300);
    let k = keys.current(now());
    let nonce: [u8; 16] = rand::random();
    let stamp = ChallengeStamp {
        valid_before: now() + 60,
        nonce,
        key_id: k.key_id,
    };
    let terms = ChallengeTerms {
        network: NETWORK,
        scheme: SCHEME_EXACT,
        asset: ASSET_XNO,
        pay_to: payee(),
        amount: amount(s),
        resource: SCOPE,
        mechanism: Mechanism::TaggedSession,
    };
    let mut unknown = requirements(s);
    unknown.extra = challenge::extra(&k.key, &terms, &stamp);
    // A send that paid no session, presented under it, is reported. (`hash` paid `s`: the
    // watcher lists it for `s`, never as stray.)
    let other = broadcast(&d, &payer, payee(), amount(s) + 3).await;
    let payment =
        json!({"x402Version": 2, "accepted": unknown, "payload": {"proof": other.to_hex()}});
    assert_reject(
        &pay_at(&sc.base, SCOPE, &unknown, &payment).await,
        "unknown_session",
    );
    assert!(strays(&sc)
        .await
        .iter()
        .any(|e| e["hash"] == json!(other.to_hex()) && e["reason"] == "unknown_session"));
    let payment =
        json!({"x402Version": 2, "accepted": unknown, "payload": {"proof": hash.to_hex()}});
    assert_reject(
        &pay_at(&sc.base, SCOPE, &unknown, &payment).await,
        "unknown_session",
    );

    // A session for another scope (route).
    let v = present_at(&sc, s, "nanogate-route:other", &hash).await;
    assert_reject(&v, "invalid_challenge");

    // The honest presentation still works after all that.
    assert_admit(&present(&sc, s, Some(&hash)).await);
    // A block that finally bought its session is no longer listed as stray.
    assert!(!strays(&sc)
        .await
        .iter()
        .any(|e| e["hash"] == json!(hash.to_hex())));
}

/// Hostile: a payload with neither a `block` nor any client-broadcast key, under a genuine
/// session offer. The sidecar used to route every block-less payload to the tagged mechanism
/// while protocol's decoder knows no mechanism for it: it is refused as malformed (400) before
/// any mechanism runs, names the accepted forms, and leaves the session payable.
#[tokio::test]
async fn a_payload_of_no_mechanism_is_malformed_not_a_tagged_session() {
    let payer = key(15);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = &issue(&sc, 1, &[payee()], 60).await[0];
    let hash = broadcast(&d, &payer, pay_to(s), amount(s)).await;
    let req = requirements(s);
    for payload in [
        json!({}),
        json!({"session": s["id"]}),
        json!({"hash": hash.to_hex(), "tag": "1"}),
    ] {
        let payment = json!({"x402Version": 2, "accepted": req, "payload": payload});
        let v = pay_at(&sc.base, SCOPE, &req, &payment).await;
        assert_reject(&v, "invalid_payload");
        assert_eq!(v["status"], json!(400), "{v}");
        let message = v["message"].as_str().unwrap_or("");
        assert!(
            message.contains("block") && message.contains("proof") && message.contains("sessionId"),
            "the refusal names the accepted forms: {v}"
        );
    }
    assert_admit(&present(&sc, s, Some(&hash)).await);
}

async fn present_at(sc: &Sidecar, s: &Value, scope: &str, hash: &BlockHash) -> Value {
    let req = requirements(s);
    let payment = json!({"x402Version": 2, "accepted": req, "payload": {"proof": hash.to_hex()}});
    pay_at(&sc.base, scope, &req, &payment).await
}

#[tokio::test]
async fn a_send_matching_no_session_is_reported_as_unmatched() {
    let payer = key(6);
    let d = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let mut cfg = devnet_config(&d, &db);
    cfg.settlement.max_wait_secs = 1;
    let sc = Sidecar::start(&cfg).await;
    let s = &issue(&sc, 1, &[payee()], 60).await[0];
    // Wait for the watcher's subscription, then pay an amount no session has.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hash = broadcast(&d, &payer, pay_to(s), PRICE / 2).await;
    let mut found = false;
    for _ in 0..200 {
        if strays(&sc)
            .await
            .iter()
            .any(|e| e["hash"] == json!(hash.to_hex()) && e["reason"] == "unmatched")
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the unmatched send is listed");
}

#[tokio::test]
async fn replicas_on_postgres_never_share_an_amount_and_admit_a_tagged_payment_once() {
    let payer = key(7);
    let d = devnet(&[&payer], Confirm::AfterMs(20)).await;
    let db = Db::postgres();
    let mut cfg = devnet_config(&d, &db);
    cfg.tagged.tag_space = 5;
    let a = Sidecar::start(&cfg).await;
    let b = Sidecar::start(&cfg).await;
    // Both replicas issue at once from the same 5 tags of one account.
    let one = [payee()];
    let (x, y) = tokio::join!(issue(&a, 4, &one, 60), issue(&b, 4, &one, 60));
    let all: Vec<Value> = x.into_iter().chain(y).collect();
    assert!(
        all.len() <= 5,
        "at most one open session per tag: {}",
        all.len()
    );
    let amounts: std::collections::HashSet<u128> = all.iter().map(amount).collect();
    assert_eq!(
        amounts.len(),
        all.len(),
        "no two open sessions share an amount"
    );

    // The same tagged payment presented to both replicas at once is admitted exactly once.
    let s = &all[0];
    let hash = broadcast(&d, &payer, pay_to(s), amount(s)).await;
    let (va, vb) = tokio::join!(present(&a, s, Some(&hash)), present(&b, s, Some(&hash)));
    let admits = [&va, &vb].iter().filter(|v| verdict(v) == "admit").count();
    assert_eq!(admits, 1, "{va}\n{vb}");
    // Neither replica reports the admitted payment (or the watchers' race) as stray.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for sc in [&a, &b] {
        assert!(!strays(sc)
            .await
            .iter()
            .any(|e| e["hash"] == json!(hash.to_hex())));
    }
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

/// Presents `s` without a proof until admitted (the watcher or the reconciler must have
/// matched the send), at most `secs` seconds.
async fn admitted_within(sc: &Sidecar, s: &Value, secs: u64) -> Value {
    let mut v = Value::Null;
    for _ in 0..secs * 5 {
        v = present(sc, s, None).await;
        if verdict(&v) == "admit" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    v
}

/// Scenario 4: the node's WebSocket is down while a wallet pays a session (the push is never
/// sent). Once the sidecar reconnects it catches up from the ledger: the session alone (no
/// proof, as the browser paywall presents it) is admitted, and a send matching no session is
/// listed as stray rather than forgotten.
#[tokio::test]
async fn a_payment_sent_while_the_websocket_is_down_is_caught_up_from_the_ledger() {
    use nanogate_devnet::WsMode;
    let payer = key(20);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = &issue(&sc, 1, &[payee()], 300).await[0];
    d.faults().set_ws(WsMode::Down);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hash = broadcast(&d, &payer, pay_to(s), amount(s)).await;
    let stray = broadcast(&d, &payer, payee(), amount(s) + 7).await;
    d.faults().set_ws(WsMode::Normal);
    let v = admitted_within(&sc, s, 20).await;
    assert_admit(&v);
    assert_eq!(v["transaction"].as_str(), Some(hash.to_hex().as_str()));
    // The unmatched send is judged after the settle window (max_wait_secs + 5).
    let mut listed = false;
    for _ in 0..60 {
        if strays(&sc).await.iter().any(|x| {
            x["hash"].as_str() == Some(stray.to_hex().as_str()) && x["reason"] == "unmatched"
        }) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        listed,
        "the unmatched send is listed: {:?}",
        strays(&sc).await
    );
}

/// Scenario 4 across a restart: the sidecar is stopped while two sessions are paid; the
/// payee's wallet pockets one of the sends meanwhile (so only the account's own chain shows
/// it, read from the stored cursor), the other stays receivable. The new process catches up
/// on both and admits both sessions.
#[tokio::test]
async fn payments_sent_while_the_sidecar_is_stopped_are_admitted_after_the_restart() {
    let payer = key(21);
    let wallet = key(200); // the payee's own wallet (payee() is its account)
    let d = devnet(&[&payer], Confirm::AfterMs(20)).await;
    // The payee account exists before the sidecar follows it.
    let first = broadcast(&d, &payer, payee(), 1).await;
    let open = nanogate_devnet::blocks::open(&wallet, first, 1);
    let open_hash = d.ledger().process(&open).expect("open");
    assert!(
        d.ledger()
            .wait_confirmed(&open_hash, Duration::from_secs(10))
            .await
    );

    let db = Db::sqlite();
    let cfg = devnet_config(&d, &db);
    let sc = Sidecar::start(&cfg).await;
    let s = issue(&sc, 2, &[payee()], 300).await;
    // Following the account starts with a pass that sets its cursor at the frontier.
    let store = sc.state.engine.store().clone();
    let mut head = None;
    for _ in 0..50 {
        head = store
            .cursor(&payee().to_hex())
            .await
            .ok()
            .flatten()
            .and_then(|c| c.head);
        if head.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(head, Some(open_hash.to_hex()), "cursor at the frontier");
    sc.stop().await;

    let h1 = broadcast(&d, &payer, pay_to(&s[0]), amount(&s[0])).await;
    let h2 = broadcast(&d, &payer, pay_to(&s[1]), amount(&s[1])).await;
    let recv = nanogate_devnet::blocks::receive(&wallet, open_hash, 1, h2, amount(&s[1]));
    let recv_hash = d.ledger().process(&recv).expect("receive");
    assert!(
        d.ledger()
            .wait_confirmed(&recv_hash, Duration::from_secs(10))
            .await
    );

    let sc = Sidecar::start(&cfg).await;
    for (s, h) in [(&s[0], h1), (&s[1], h2)] {
        let v = admitted_within(&sc, s, 20).await;
        assert_admit(&v);
        assert_eq!(v["transaction"].as_str(), Some(h.to_hex().as_str()));
    }
    let head = store_head(&sc).await;
    assert_eq!(
        head,
        Some(recv_hash.to_hex()),
        "the cursor moved past the receive"
    );
}

async fn store_head(sc: &Sidecar) -> Option<String> {
    sc.state
        .engine
        .store()
        .cursor(&payee().to_hex())
        .await
        .ok()
        .flatten()
        .and_then(|c| c.head)
}

#[tokio::test]
async fn a_signed_block_payment_never_buys_a_tagged_session_with_the_same_amount() {
    // Scenario 7: a signed-block route priced exactly at an open session's amount on the same
    // payee. The signed block we broadcast must never be consumed by that session (its holder
    // presenting the hash as proof), even while the block is still being settled.
    let payer = key(8);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = &issue(&sc, 1, &[payee()], 60).await[0];
    let req = challenge_for(RESOURCE, amount(s), pay_to(s), 60);
    let block = good_block(&d, &payer, amount(s), pay_to(s));
    let p = payment(&req, &block);
    d.faults().set_confirming(false);
    assert_reject(&sc.pay(&req, &p).await, "block_not_confirmed");
    d.faults().set_confirming(true);
    assert!(
        d.ledger()
            .wait_confirmed(&block.hash(), Duration::from_secs(10))
            .await
    );
    let v = present(&sc, s, Some(&block.hash())).await;
    assert_eq!(
        verdict(&v),
        "reject",
        "the session took a signed-block payment: {v}"
    );
    // The signed-block payer is served with the payment it made, once.
    assert_admit(&sc.pay(&req, &p).await);
    assert_reject(&sc.pay(&req, &p).await, "duplicate_settlement");
    assert!(
        !strays(&sc)
            .await
            .iter()
            .any(|e| e["hash"] == json!(block.hash().to_hex())),
        "a signed-block payment is not stray"
    );
}

#[tokio::test]
async fn a_signed_block_in_flight_presented_as_a_session_proof_is_not_recorded_and_still_pays() {
    // A session holder presents someone's signed-block payment, still unconfirmed, as the
    // proof of its session. It must neither buy the session nor be recorded owed (which would
    // take the payment's row and strand the signed-block payer).
    let payer = key(9);
    let (d, _db, sc) = setup(&[&payer], 999_999_999_999).await;
    let s = &issue(&sc, 1, &[payee()], 60).await[0];
    let req = challenge();
    let block = good_block(&d, &payer, PRICE, payee());
    let p = payment(&req, &block);
    d.faults().set_confirming(false);
    assert_reject(&sc.pay(&req, &p).await, "block_not_confirmed");
    let v = present(&sc, s, Some(&block.hash())).await;
    assert_eq!(verdict(&v), "reject", "{v}");
    d.faults().set_confirming(true);
    assert!(
        d.ledger()
            .wait_confirmed(&block.hash(), Duration::from_secs(10))
            .await
    );
    assert_admit(&sc.pay(&req, &p).await);
    assert!(!strays(&sc)
        .await
        .iter()
        .any(|e| e["hash"] == json!(block.hash().to_hex())));
}
