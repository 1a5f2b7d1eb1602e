//! `--pass NAME` against the fixture shop's passes (tests/common/pass_shop.rs, on the wire of
//! docs/passes.md) and a real devnet: buy once, reuse until used up, buy the next; keep passes
//! of other groups; stop with the reason on a refused token; never pay for a malformed offer;
//! never print a token.
#![allow(clippy::unwrap_used)]

mod common;

use common::pass_shop::{HOUR_PRICE, THREE_PRICE};
use common::*;
use nanogate_client::{PassEntry, PayError, Payer, RequestSpec};
use nanogate_protocol::nano::RAW_PER_XNO;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn pass_payer(f: &Fixture, name: &str) -> Payer {
    let mut cfg = f.config().with_pass(name);
    cfg.max_raw = RAW_PER_XNO / 100;
    Payer::new(cfg).unwrap()
}

fn sold(f: &Fixture) -> usize {
    f.shop.state.pass_book.sold.load(Ordering::SeqCst)
}

fn held(payer: &Payer) -> Vec<PassEntry> {
    payer
        .journal()
        .all_passes()
        .unwrap()
        .into_values()
        .collect()
}

#[tokio::test]
async fn a_pass_is_bought_once_reused_until_used_up_then_the_next_is_bought() {
    let f = Fixture::start("pass-reuse").await;
    let before = f.balance();
    let payer = pass_payer(&f, "three");

    let r = payer
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(r.paid && r.receipt_matches);
    let bought = r.pass.clone().unwrap();
    assert!(bought.bought);
    assert_eq!(
        (bought.name.as_str(), bought.group.as_str()),
        ("three", "api")
    );
    assert_eq!(bought.requests, Some(3));
    assert_eq!(f.balance(), before - THREE_PRICE, "the pass price, once");
    assert_eq!(sold(&f), 1);
    // The purchase is settled: no payment left journalled, one pass kept.
    assert!(payer.journal().entries().unwrap().is_empty());
    let first = held(&payer);
    assert_eq!(first.len(), 1);

    // Three more requests, on other URLs of the group, ride on it: no payment at all.
    for path in ["/pass/b", "/pass/c?x=1", "/pass/a"] {
        let r = payer.fetch(RequestSpec::get(f.url(path))).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body_text());
        assert!(!r.paid && r.payment.is_none());
        let on = r.pass.unwrap();
        assert!(!on.bought);
        assert_eq!(on.id, first[0].fingerprint());
    }
    assert_eq!(f.balance(), before - THREE_PRICE);
    assert_eq!(f.shop.state.settlements.load(Ordering::SeqCst), 1);
    assert_eq!(f.shop.state.pass_book.served.load(Ordering::SeqCst), 3);

    // Used up: the server says `pass_exhausted`, the payer buys the next at once.
    let r = payer
        .fetch(RequestSpec::get(f.url("/pass/d")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.pass.as_ref().unwrap().bought);
    assert_eq!(sold(&f), 2);
    assert_eq!(f.balance(), before - 2 * THREE_PRICE);
    let second = held(&payer);
    assert_eq!(second.len(), 1, "the spent token is forgotten");
    assert_ne!(second[0].token, first[0].token);
    let said: Vec<String> = f.events().iter().map(ToString::to_string).collect();
    assert!(
        said.iter()
            .any(|l| l.contains("is exhausted: buying the next")),
        "{said:?}"
    );
    // Nothing the payer said shows a token.
    for p in first.iter().chain(&second) {
        assert!(said.iter().all(|l| !l.contains(&p.token)), "{said:?}");
    }
}

#[tokio::test]
async fn a_new_payer_on_the_same_journal_reuses_the_pass() {
    let f = Fixture::start("pass-reopen").await;
    let r = pass_payer(&f, "hour")
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap();
    assert!(r.pass.unwrap().bought);
    let before = f.balance();
    // A later run (a new process, as the CLI is) finds the token in the journal.
    let r = pass_payer(&f, "hour")
        .fetch(RequestSpec::get(f.url("/pass/b")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.pass.unwrap().bought);
    assert_eq!(f.balance(), before);
    assert_eq!(sold(&f), 1);
    // A different pass name on the same server is its own purchase.
    let r = pass_payer(&f, "three")
        .fetch(RequestSpec::get(f.url("/pass/c")))
        .await
        .unwrap();
    assert!(r.pass.unwrap().bought);
    assert_eq!(f.balance(), before - THREE_PRICE);
}

#[tokio::test]
async fn a_pass_of_another_group_is_kept_and_the_routes_own_is_used() {
    let f = Fixture::start("pass-groups").await;
    let payer = pass_payer(&f, "hour");
    payer
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap();
    // The api token is refused on /web/ (wrong group): the web pass is bought, api kept.
    let r = payer
        .fetch(RequestSpec::get(f.url("/web/a")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.pass.as_ref().map(|p| (p.bought, p.group.as_str())),
        Some((true, "web"))
    );
    assert_eq!(sold(&f), 2);
    let mut groups: Vec<String> = held(&payer).into_iter().map(|p| p.group).collect();
    groups.sort();
    assert_eq!(groups, ["api", "web"]);
    // Back on /pass/: the newest (web) token is refused, the api one is presented next.
    let before = f.balance();
    let r = payer
        .fetch(RequestSpec::get(f.url("/pass/b")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.pass.as_ref().map(|p| (p.bought, p.group.as_str())),
        Some((false, "api"))
    );
    assert_eq!(f.balance(), before);
    assert_eq!(sold(&f), 2);
}

#[tokio::test]
async fn a_malformed_pass_offer_is_never_paid_and_the_error_lists_what_is_offered() {
    let f = Fixture::start("pass-hostile").await;
    let before = f.balance();
    let payer = pass_payer(&f, "three");
    let e = payer
        .fetch(RequestSpec::get(f.url("/pass-bad/a")))
        .await
        .unwrap_err();
    let PayError::PassNotOffered {
        offered, skipped, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(offered.len(), 1, "{e}");
    assert!(
        offered[0].starts_with("hour (0.005 XNO, 3600 s, group api)"),
        "{e}"
    );
    assert_eq!(skipped.len(), 1, "{e}");
    assert!(skipped[0].contains("`extra.pass` is unreadable"), "{e}");
    // A pass the server does not sell at all, and a route selling none.
    let e = pass_payer(&f, "day")
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no pass `day`: the server offers three ("),
        "{e}"
    );
    let e = payer
        .fetch(RequestSpec::get(f.url("/paid")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("offers no pass here"), "{e}");
    // Over the maximum: refused before signing.
    let mut cfg = f.config().with_pass("hour");
    cfg.max_raw = HOUR_PRICE - 1;
    let e = Payer::new(cfg)
        .unwrap()
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, PayError::OverMax { price, .. } if price == HOUR_PRICE),
        "{e}"
    );
    // Nothing was paid, signed or journalled.
    assert_eq!(f.balance(), before);
    assert_eq!(f.shop.state.paid_attempts.load(Ordering::SeqCst), 0);
    assert!(payer.journal().entries().unwrap().is_empty());
    // A bad pass name is refused before anything.
    let e = Payer::new(f.config().with_pass("Hour!")).unwrap_err();
    assert!(e.to_string().contains("pass name `Hour!`"), "{e}");
}

#[tokio::test]
async fn a_revoked_or_forged_token_stops_with_its_reason_and_is_forgotten() {
    let f = Fixture::start("pass-refused").await;
    let payer = pass_payer(&f, "hour");
    payer
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap();
    let token = held(&payer)[0].token.clone();
    f.shop.state.pass_book.edit(&token, |p| p.revoked = true);
    let before = f.balance();
    let e = payer
        .fetch(RequestSpec::get(f.url("/pass/b")))
        .await
        .unwrap_err();
    let PayError::PassRefused {
        reason, forgotten, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((reason.as_str(), *forgotten), ("pass_revoked", true));
    assert!(!e.to_string().contains(&token), "{e}");
    assert_eq!(e.kind(), "pass_refused");
    assert_eq!(
        f.balance(),
        before,
        "a revoked pass is not silently replaced"
    );
    assert!(held(&payer).is_empty());
    // The next run buys a new one.
    let r = payer
        .fetch(RequestSpec::get(f.url("/pass/b")))
        .await
        .unwrap();
    assert!(r.pass.unwrap().bought);
    assert_eq!(sold(&f), 2);

    // A token mutated in the journal is refused as forged, and forgotten too.
    let mut p = held(&payer).remove(0);
    let key = p.journal_key();
    let mut chars: Vec<char> = p.token.chars().collect();
    let last = chars.len() - 3;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    p.token = chars.into_iter().collect();
    payer.journal().keep_pass("none", "00", p).unwrap();
    let e = payer
        .fetch(RequestSpec::get(f.url("/pass/c")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PayError::PassRefused { reason, .. } if reason == "pass_forged"),
        "{e:?}"
    );
    assert!(!payer.journal().all_passes().unwrap().contains_key(&key));
}

#[tokio::test]
async fn an_expired_pass_is_replaced_whether_we_or_the_server_notice() {
    let f = Fixture::start("pass-expired").await;
    let payer = pass_payer(&f, "hour");
    payer
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap();
    // The server says it expired (its clock is ahead of ours): buy the next.
    let token = held(&payer)[0].token.clone();
    f.shop.state.pass_book.edit(&token, |p| p.expires_at = 1);
    let r = payer
        .fetch(RequestSpec::get(f.url("/pass/b")))
        .await
        .unwrap();
    assert!(r.pass.unwrap().bought);
    assert_eq!(sold(&f), 2);
    // Our journal says it expired: it is not even presented.
    let mut p = held(&payer).remove(0);
    p.expires_at = Some(1);
    payer.journal().keep_pass("none", "00", p).unwrap();
    let presented = f.shop.state.pass_book.presented.load(Ordering::SeqCst);
    let r = payer
        .fetch(RequestSpec::get(f.url("/pass/c")))
        .await
        .unwrap();
    assert!(r.pass.unwrap().bought);
    assert_eq!(sold(&f), 3);
    assert_eq!(
        f.shop.state.pass_book.presented.load(Ordering::SeqCst),
        presented
    );
}

#[tokio::test]
async fn a_lost_purchase_answer_re_presents_the_block_and_gets_the_same_pass() {
    let f = Fixture::start("pass-lost").await;
    let before = f.balance();
    f.shop
        .state
        .drop_next_paid_response
        .store(true, Ordering::SeqCst);
    let mut cfg = f.config().with_pass("three");
    cfg.max_raw = RAW_PER_XNO / 100;
    cfg.http_timeout = Duration::from_secs(3);
    let payer = Payer::new(cfg).unwrap();
    let e = payer
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap_err();
    assert!(matches!(e, PayError::Http { hash: Some(_), .. }), "{e:?}");
    assert_eq!(f.balance(), before - THREE_PRICE);
    assert_eq!(payer.journal().entries().unwrap().len(), 1);
    assert!(held(&payer).is_empty());
    // The retry re-presents the journalled block: the pass it bought comes back, paid once.
    let r = payer
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.payment.as_ref().unwrap().re_presented);
    assert!(r.pass.unwrap().bought);
    assert_eq!(f.balance(), before - THREE_PRICE);
    assert_eq!(sold(&f), 1);
    assert!(payer.journal().entries().unwrap().is_empty());
    assert_eq!(held(&payer).len(), 1);
    let r = payer
        .fetch(RequestSpec::get(f.url("/pass/b")))
        .await
        .unwrap();
    assert!(!r.pass.unwrap().bought);
}

#[tokio::test]
async fn without_pass_the_single_request_is_paid_even_beside_cheaper_passes() {
    let f = Fixture::start("pass-plain").await;
    let before = f.balance();
    let r = f
        .payer()
        .fetch(RequestSpec::get(f.url("/pass/a")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.pass.is_none());
    assert_eq!(f.balance(), before - PRICE);
    assert_eq!(sold(&f), 0);
}

#[tokio::test]
async fn the_cli_buys_and_reuses_a_pass_and_never_prints_the_token() {
    let f = Fixture::start("pass-cli").await;
    let seed = nanogate_protocol::hex::encode_lower(&payer_seed());
    let run = |path: &str, extra: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_nanogate-pay"));
        c.arg(f.url(path))
            .args(["--pass", "three", "--max", "0.01"])
            .args(extra)
            .arg("--rpc")
            .arg(f.devnet.rpc_url())
            .arg("--journal")
            .arg(f.journal_path())
            .env("NANOGATE_SEED", &seed)
            .env_remove("NANOGATE_RPC")
            .env_remove("NANOGATE_JOURNAL")
            .kill_on_drop(true);
        c.output()
    };
    let out = run("/pass/a", &["--json"]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pass"]["bought"], true);
    assert_eq!(v["pass"]["requests"], 3);
    let token = f
        .shop
        .state
        .pass_book
        .passes
        .lock()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert!(
        stderr.contains("bought pass `three` for group api"),
        "{stderr}"
    );
    let out2 = run("/pass/b", &[]).await.unwrap();
    let stdout2 = String::from_utf8_lossy(&out2.stdout).into_owned();
    assert!(out2.status.success());
    assert!(
        stdout2.starts_with("HTTP 200\non pass `three` (group api, id "),
        "{stdout2}"
    );
    for text in [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        stdout2,
        String::from_utf8_lossy(&out2.stderr).into_owned(),
    ] {
        assert!(!text.contains(&token), "the token leaked: {text}");
    }
    assert_eq!(sold(&f), 1);
    // Not offered: exit 3, the offered passes listed, nothing paid.
    let out = run("/paid", &["--json"]).await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "pass_not_offered");
}
