//! `/metrics` stays off the network unless asked for (#19): beside a loopback API it is served
//! there; with a token it needs `Authorization: Bearer`; with `metrics.listen` it is on that
//! listener only; and an API listening on the network without either moves it to loopback.

mod common;

use common::*;
use nanogate_devnet::Confirm;
use nanogate_sidecar::config::{Config, DEFAULT_METRICS_LISTEN};
use nanogate_sidecar::server;
use std::net::SocketAddr;

const METRICS_TOKEN: &str = "test-metrics-token-0123456789";

async fn status(url: &str, token: Option<&str>) -> u16 {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("answers").status().as_u16()
}

#[test]
fn metrics_are_on_loopback_unless_configured_otherwise() {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("address");
    let with = |listen: &str, metrics_listen: Option<&str>, token: bool| Config {
        listen: addr(listen),
        metrics: nanogate_sidecar::config::MetricsConfig {
            listen: metrics_listen.map(addr),
            token: token.then(|| METRICS_TOKEN.to_owned()),
        },
        ..Config::default()
    };
    // A loopback API keeps /metrics with it.
    assert_eq!(with("127.0.0.1:8402", None, false).metrics_listener(), None);
    // An API on the network: /metrics goes to loopback, unless a token guards it.
    assert_eq!(
        with("0.0.0.0:8402", None, false).metrics_listener(),
        Some(DEFAULT_METRICS_LISTEN)
    );
    assert!(DEFAULT_METRICS_LISTEN.ip().is_loopback());
    assert_eq!(with("0.0.0.0:8402", None, true).metrics_listener(), None);
    // Said explicitly: there, whatever else.
    assert_eq!(
        with("0.0.0.0:8402", Some("10.0.0.1:9500"), true).metrics_listener(),
        Some(addr("10.0.0.1:9500"))
    );
    // Checked like the other settings.
    let mut c = with("127.0.0.1:8402", Some("127.0.0.1:8402"), false);
    c.filter_secret = Some(FILTER_SECRET.into());
    c.challenge_secret = Some(CHALLENGE_SECRET.into());
    let e = c.validate().expect_err("same address refused").to_string();
    assert!(e.contains("metrics.listen"), "{e}");
    c.metrics.listen = None;
    c.metrics.token = Some("short".into());
    let e = c.validate().expect_err("short token refused").to_string();
    assert!(e.contains("metrics.token") && !e.contains("short"), "{e}");
}

#[tokio::test]
async fn metrics_token_is_required_when_set() {
    let devnet = devnet(&[], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let mut cfg = devnet_config(&devnet, &db);
    cfg.metrics.token = Some(METRICS_TOKEN.into());
    let sc = Sidecar::start(&cfg).await;
    let url = format!("{}/metrics", sc.base);
    assert_eq!(status(&url, None).await, 401);
    assert_eq!(
        status(&url, Some("wrong-metrics-token-0123456789")).await,
        401
    );
    assert_eq!(status(&url, Some(METRICS_TOKEN)).await, 200);
    let text = http()
        .get(&url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("nanogate_auth_failures_total{api=\"metrics\"} 2"),
        "{text}"
    );
    assert!(!text.contains(METRICS_TOKEN));
    // Health and readiness stay open.
    assert_eq!(status(&format!("{}/healthz", sc.base), None).await, 200);
    sc.stop().await;
    devnet.shutdown().await;
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_api_listener() {
    let devnet = devnet(&[], Confirm::AfterMs(20)).await;
    let db = Db::sqlite();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_addr = metrics_listener.local_addr().expect("addr");
    let mut cfg = devnet_config(&devnet, &db);
    cfg.metrics.listen = Some(metrics_addr);
    let sc = Sidecar::start(&cfg).await;
    let task = tokio::spawn(server::serve_metrics(
        metrics_listener,
        sc.state.clone(),
        std::future::pending::<()>(),
    ));
    assert_eq!(status(&format!("{}/metrics", sc.base), None).await, 404);
    assert_eq!(status(&format!("{}/healthz", sc.base), None).await, 200);
    let on_own = format!("http://{metrics_addr}/metrics");
    assert_eq!(status(&on_own, None).await, 200);
    // Only /metrics there: the APIs are not reachable through the metrics listener.
    assert_eq!(
        status(&format!("http://{metrics_addr}/v1/challenge-key"), None).await,
        404
    );
    task.abort();
    sc.stop().await;
    devnet.shutdown().await;
}
