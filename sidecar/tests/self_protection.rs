//! The sidecar protects itself: credentials before bodies, time limits that slow clients
//! cannot stretch, a concurrency limit that sheds with 503, presentation limits answered 429,
//! and a readiness probe that unauthenticated traffic cannot turn into store or node load.
//! Every test runs the shipped defaults (`[server]` and `[limits]` are not touched).

mod common;

use common::*;
use nanogate_devnet::Confirm;
use nanogate_protocol::contract::paths;
use nanogate_sidecar::api::{self, Credential, Verb};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Env {
    devnet: nanogate_devnet::Devnet,
    sidecar: Sidecar,
    _db: Db,
}

async fn env(payers: &[&nanogate_protocol::nano::PrivateKey]) -> Env {
    let devnet = devnet(payers, Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let sidecar = Sidecar::start(&devnet_config(&devnet, &db)).await;
    Env {
        devnet,
        sidecar,
        _db: db,
    }
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Sends a request head announcing a body of `len` bytes (and none of it yet).
async fn head_only(base: &str, path: &str, secret: &str, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr(base)).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: sidecar\r\n{}: {secret}\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\n\r\n",
        headers::SECRET
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s
}

/// The status line's code, read within `within` (None: no answer in time).
async fn status_within(s: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(within, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ').nth(1)?.parse().ok()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(base: &str) -> String {
    http()
        .get(format!("{base}{}", paths::METRICS))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test]
async fn a_wrong_secret_is_refused_before_the_body_is_read() {
    let e = env(&[]).await;
    // The body never comes: only a check on the headers can answer.
    let mut s = head_only(&e.sidecar.base, paths::PAY, "wrong-secret-0123456789", 4096).await;
    assert_eq!(
        status_within(&mut s, Duration::from_secs(3)).await,
        Some(401),
        "refused on the headers, without waiting for the body"
    );
    let mut s = head_only(&e.sidecar.base, paths::OUTCOME, "", 100).await;
    assert_eq!(
        status_within(&mut s, Duration::from_secs(3)).await,
        Some(401)
    );
    e.sidecar.stop().await;
}

/// Every route of every group (`api::groups`, what the server serves) sits behind its group's
/// credential: none, a wrong one, or the other API's one gets 401, before the body is read; the
/// right one gets through. Public routes need none. And every path of the contract is served.
#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_credential() {
    let e = env(&[]).await;
    let secret = |v: &str| Some(("x-nanogate-secret", v.to_owned()));
    let bearer = |v: &str| Some(("authorization", format!("Bearer {v}")));
    let mut served = Vec::new();
    for group in api::groups(&e.sidecar.state) {
        let (wrong, right) = match group.credential {
            Credential::FilterSecret => (
                vec![
                    None,
                    secret("wrong-secret-0123456789"),
                    bearer(TOKEN),
                    bearer(FILTER_SECRET),
                ],
                secret(FILTER_SECRET),
            ),
            Credential::Bearer => (
                vec![
                    None,
                    bearer("wrong-token-0123456789"),
                    bearer(FILTER_SECRET),
                    secret(FILTER_SECRET),
                ],
                bearer(TOKEN),
            ),
            // No metrics token in this set-up: open like the public routes (the token's own
            // checks are in metrics_access.rs).
            Credential::Public | Credential::Metrics => (vec![], None),
        };
        for &(verb, path) in &group.routes {
            served.push(path);
            let send = |credential: Option<(&'static str, String)>| {
                let mut r = http().request(verb.method(), format!("{}{path}", e.sidecar.base));
                if let Some((name, value)) = credential {
                    r = r.header(name, value);
                }
                if verb == Verb::Post {
                    r = r.json(&json!({}));
                }
                async move { r.send().await.expect("answer").status().as_u16() }
            };
            for credential in &wrong {
                let shown = credential.as_ref().map(|(n, _)| *n);
                assert_eq!(send(credential.clone()).await, 401, "{path} with {shown:?}");
            }
            let status = send(right.clone()).await;
            assert!(
                ![401, 404, 405].contains(&status),
                "{path} with its credential: {status}"
            );
            if verb == Verb::Post && group.credential != Credential::Public {
                let mut s = head_only(&e.sidecar.base, path, "wrong-secret-0123456789", 4096).await;
                assert_eq!(
                    status_within(&mut s, Duration::from_secs(3)).await,
                    Some(401),
                    "{path}: refused on the headers"
                );
            }
        }
    }
    for path in paths::ALL {
        assert!(served.contains(path), "{path} is not served");
    }
    e.sidecar.stop().await;
}

#[tokio::test]
async fn a_slow_body_does_not_hold_a_slot_past_the_request_time_limit() {
    let e = env(&[]).await;
    let mut s = head_only(&e.sidecar.base, paths::OUTCOME, FILTER_SECRET, 200).await;
    // One byte a second: the body would take minutes.
    let trickle = async {
        for _ in 0..60 {
            if s.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), trickle).await;
    assert_eq!(
        status_within(&mut s, Duration::from_secs(30)).await,
        Some(408),
        "the request's time limit covers reading its body"
    );
    let m = metrics(&e.sidecar.base).await;
    assert_eq!(metric(&m, "nanogate_requests_timed_out_total"), 1.0, "{m}");
    e.sidecar.stop().await;
}

#[tokio::test]
async fn a_full_server_sheds_new_requests_with_503_and_retry_after_then_recovers() {
    let e = env(&[]).await;
    let limit = nanogate_sidecar::config::Config::default()
        .server
        .max_concurrent_requests;
    // Fill every slot with an authenticated request whose body never completes.
    let mut held = Vec::with_capacity(limit);
    for _ in 0..limit {
        held.push(head_only(&e.sidecar.base, paths::OUTCOME, FILTER_SECRET, 64).await);
    }
    let key = || {
        http()
            .get(format!("{}{}", e.sidecar.base, paths::CHALLENGE_KEY))
            .header(headers::SECRET, FILTER_SECRET)
            .send()
    };
    let mut shed = None;
    for _ in 0..200 {
        let r = key().await.expect("challenge-key");
        if r.status() == 503 {
            shed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shed = shed.expect("a full server answers 503");
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Health and metrics stay outside the limit.
    let r = http()
        .get(format!("{}{}", e.sidecar.base, paths::HEALTHZ))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    // The held requests end at their time limit and free their slots.
    for s in &mut held {
        assert_eq!(status_within(s, Duration::from_secs(30)).await, Some(408));
    }
    let r = key().await.expect("challenge-key");
    assert_eq!(r.status(), 200, "slots are free again");
    let m = metrics(&e.sidecar.base).await;
    assert!(metric(&m, "nanogate_requests_shed_total") >= 1.0, "{m}");
    e.sidecar.stop().await;
}

async fn pay_from(base: &str, source: &str, payment_body: serde_json::Value) -> serde_json::Value {
    let mut body = payment_body;
    body["source"] = json!(source);
    http()
        .post(format!("{base}{}", paths::PAY))
        .header(headers::SECRET, FILTER_SECRET)
        .json(&body)
        .send()
        .await
        .expect("pay")
        .json()
        .await
        .expect("verdict")
}

#[tokio::test]
async fn a_source_sending_junk_is_answered_429_and_other_sources_are_not() {
    let payer = key(41);
    let e = env(&[&payer]).await;
    let burst = nanogate_sidecar::config::Config::default()
        .limits
        .source_refusal_burst;
    // Junk: a block paying someone else, each under a fresh valid challenge.
    let (frontier, balance) = head(&e.devnet, &payer);
    let junk = send_block(&payer, frontier, balance - PRICE, key(42).public_key());
    let body = || {
        let req = challenge();
        json!({"resource": RESOURCE, "requirements": req, "payment": payment(&req, &junk)})
    };
    let attacker = "203.0.113.9:40000";
    let mut limited = None;
    for i in 0..(burst as usize + 10) {
        let v = pay_from(&e.sidecar.base, attacker, body()).await;
        if reason(&v) == "rate_limited" {
            limited = Some((i, v));
            break;
        }
        assert_reject(&v, "wrong_destination");
    }
    let (i, v) = limited.expect("the source is limited after its refusal burst");
    assert!(i >= burst as usize, "not before the burst ({i})");
    assert_eq!(v["status"], 429, "{v}");
    assert!(v["retryAfter"].as_u64().is_some_and(|s| s >= 1), "{v}");
    // Another client is judged on its own.
    let v = pay_from(&e.sidecar.base, "198.51.100.20:1234", body()).await;
    assert_reject(&v, "wrong_destination");
    // And an honest payment from it is admitted.
    let req = challenge();
    let good = good_block(&e.devnet, &payer, PRICE, payee());
    let v = pay_from(
        &e.sidecar.base,
        "198.51.100.20:1234",
        json!({"resource": RESOURCE, "requirements": req, "payment": payment(&req, &good)}),
    )
    .await;
    assert_admit(&v);
    e.sidecar.stop().await;
}

#[tokio::test]
async fn one_block_presented_past_its_frontier_limit_is_answered_429() {
    let payer = key(43);
    let e = env(&[&payer]).await;
    let limits = nanogate_sidecar::config::Config::default().limits;
    let (burst, per_sec) = (
        limits.payer_presentation_burst,
        limits.payer_presentations_per_sec,
    );
    let (frontier, balance) = head(&e.devnet, &payer);
    // Valid work and signature, wrong amount, replayed under fresh challenges (no source).
    let wrong = send_block(&payer, frontier, balance - 2 * PRICE, payee());
    let mut limited = 0;
    let started = std::time::Instant::now();
    for i in 0..(burst + 10) {
        let req = challenge();
        let v = e.sidecar.pay(&req, &payment(&req, &wrong)).await;
        match reason(&v) {
            "rate_limited" => {
                assert!(i >= burst, "not before the burst ({i})");
                assert_eq!(v["status"], 429, "{v}");
                limited += 1;
            }
            _ => assert_reject(&v, "amount_mismatch"),
        }
    }
    // The budget refills slowly (payer_presentations_per_sec): every presentation past the
    // burst is cut off but those refilled while the loop ran (so this holds under load too).
    let elapsed = started.elapsed();
    let refilled = (f64::from(per_sec) * elapsed.as_secs_f64()).ceil() as u32;
    let least = 10u32.saturating_sub(refilled + 1);
    assert!(
        limited >= least,
        "{limited} limited in {elapsed:?} (at least {least})"
    );
    let calls = e.devnet.rpc_calls();
    assert_eq!(
        calls.get("account_info").copied().unwrap_or(0),
        1,
        "one node call for the whole replay: {calls:?}"
    );
    e.sidecar.stop().await;
}

#[tokio::test]
async fn readyz_floods_do_not_reach_the_store_or_the_node_per_request() {
    let e = env(&[]).await;
    let before = e.devnet.rpc_calls().get("version").copied().unwrap_or(0);
    let mut ready = 0;
    for _ in 0..200 {
        let r = http()
            .get(format!("{}{}", e.sidecar.base, paths::READYZ))
            .send()
            .await
            .expect("readyz");
        if r.status() == 200 {
            ready += 1;
        }
    }
    assert_eq!(ready, 200);
    let version_calls = e.devnet.rpc_calls().get("version").copied().unwrap_or(0) - before;
    let m = metrics(&e.sidecar.base).await;
    let probes = metric(&m, "nanogate_readiness_probes_total");
    let pings = metric(&m, "nanogate_store_seconds_count{op=\"ping\"}");
    eprintln!(
        "200 /readyz: {version_calls} node version calls, {probes} probes, {pings} store pings"
    );
    // A probe at most every ready_cache_secs (2 s) while the loop runs.
    assert!(
        version_calls <= 5,
        "{version_calls} node calls for 200 /readyz"
    );
    assert!(pings <= 5.0, "{pings} store pings for 200 /readyz");
    assert_eq!(probes, pings);
    e.sidecar.stop().await;
}
