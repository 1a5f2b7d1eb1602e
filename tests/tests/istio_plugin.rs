//! The shipped WasmPlugins' `pluginConfig`, loaded into real Envoy 1.40 the way Istio delivers
//! it, so the manifests cannot drift from what works:
//!
//! - the wasm filter gets `root_id` = `pluginName`, `failure_policy` from `failStrategy`, and the
//!   `pluginConfig` as a JSON `StringValue` (what Istio sends; a Struct's whole numbers print as
//!   integers in protobuf JSON, as here);
//! - the sidecar is reached through a static cluster literally named like Istio's
//!   `outbound|8402||nanogate-sidecar.nanogate.svc.cluster.local`, taken from the manifest;
//! - behind it runs the real `nanogate-sidecar` on a devnet, and the payment is a real signed
//!   send: unpaid → 402 with the manifest's price, paid → 200 with a receipt.
//!
//! Only what an operator must fill in is replaced: `payTo` (shipped as a placeholder that is
//! not an address — and the first test shows Envoy refuses to start on it) and `network` (`nano:devnet` for the devnet). Routes, hosts, prices, cluster, authority and
//! timeouts are the shipped ones. The filter secret is never in the plugin configuration: as in
//! Istio, the proxy's environment holds it and `vmConfig.env` passes it into the wasm VM.

mod istio_support;

use istio_support::*;
use nanogate_devnet::{Confirm, Devnet, DevnetConfig};
use nanogate_protocol::nano::{parse_raw, PrivateKey, PublicKey};
use nanogate_tests::envoy::{self, Envoy};
use nanogate_tests::ports::free_port;
use nanogate_tests::sidecar::{SidecarProcess, SidecarSettings};
use nanogate_tests::stack::{signed_block, Challenge, Reply, XNO};
use nanogate_tests::upstream::Upstream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TEST_SECRET: &str = "istio-test-filter-secret-0123456789";
const CHALLENGE_SECRET: &str = "istio-test-challenge-master-secret-0123";
const NETWORK: &str = "nano:devnet";

/// A WasmPlugin's spec, read from the shipped file.
fn plugin(file: &str) -> Value {
    manifest(file)["spec"].clone()
}

/// The `pluginConfig` with the operator's values put in.
fn filled_in(spec: &Value, pay_to: &PublicKey) -> Value {
    let mut c = spec["pluginConfig"].clone();
    c["payTo"] = json!(pay_to.to_address());
    c["network"] = json!(NETWORK);
    c
}

/// Istio's FailStrategy → Envoy's `failure_policy`.
fn failure_policy(spec: &Value) -> &'static str {
    match spec["failStrategy"].as_str() {
        None | Some("FAIL_CLOSE") => "FAIL_CLOSED",
        Some("FAIL_OPEN") => "FAIL_OPEN",
        Some("FAIL_RELOAD") => "FAIL_RELOAD",
        Some(other) => panic!("unknown failStrategy {other}"),
    }
}

fn static_cluster(name: &str, port: u16, connect_timeout: &str) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}
            }}}]}]
        }
    })
}

/// Istio's `vmConfig.env` → Envoy's `vm_config.environment_variables` (HOST: the proxy's own
/// variable, INLINE: the value given).
fn environment_variables(spec: &Value) -> Value {
    let mut host = vec![];
    let mut inline = serde_json::Map::new();
    for e in spec["vmConfig"]["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name");
        match e["valueFrom"].as_str() {
            Some("HOST") => host.push(json!(name)),
            _ => {
                inline.insert(name.to_owned(), e["value"].clone());
            }
        }
    }
    json!({"host_env_keys": host, "key_values": inline})
}

/// An Envoy bootstrap (JSON, which Envoy reads as YAML) that loads the filter as Istio would
/// for `spec`, with `config` as the plugin configuration and the sidecar cluster named
/// `sidecar_cluster` pointing at `sidecar_port`.
fn bootstrap(
    name: &str,
    spec: &Value,
    config: &Value,
    sidecar_cluster: &str,
    ports: (u16, u16, u16, u16),
) -> String {
    let (listener, admin, upstream, sidecar) = ports;
    let root_id = spec["pluginName"].as_str().expect("pluginName");
    let wasm = json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": root_id,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": envoy::filter_wasm().display().to_string()}},
                    "environment_variables": environment_variables(spec)
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string()
                },
                "failure_policy": failure_policy(spec)
            }
        }
    });
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "istio-like",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "istio_like",
                        // Istio's meshConfig.pathNormalization DECODE_AND_MERGE_SLASHES, which
                        // docs/istio.md asks for.
                        "normalize_path": true,
                        "merge_slashes": true,
                        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
                        "route_config": {"name": "r", "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "upstream", "timeout": "30s"}}]
                        }]},
                        "http_filters": [
                            wasm,
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": [
                static_cluster("upstream", upstream, "1s"),
                static_cluster(sidecar_cluster, sidecar, "0.25s")
            ]
        }
    })
    .to_string()
}

fn cluster_of(spec: &Value) -> String {
    spec["pluginConfig"]["sidecar"]["cluster"]
        .as_str()
        .expect("sidecar.cluster")
        .to_owned()
}

async fn request(
    listener: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client
        .request(method, format!("http://127.0.0.1:{listener}{path}"))
        .header("host", host);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let t = Instant::now();
    let r = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Reply {
        status,
        headers,
        body,
        elapsed: t.elapsed(),
    }
}

/// Starts Envoy on fresh loopback ports, `make(listener, admin)` giving the bootstrap. Tries up
/// to three times with new ports when Envoy exits before it is ready: on a busy machine another
/// process can take a port between `free_port()` and Envoy's bind.
async fn start_envoy(make: impl Fn(u16, u16) -> String) -> (Envoy, u16) {
    let mut last = String::new();
    for _ in 0..3 {
        let (listener, admin) = (free_port(), free_port());
        let yaml = make(listener, admin);
        match tokio::spawn(async move {
            Envoy::start_with_env(&yaml, admin, &[(envoy::FILTER_SECRET_ENV, TEST_SECRET)]).await
        })
        .await
        {
            Ok(envoy) => return (envoy, listener),
            Err(e) => last = e.to_string(),
        }
    }
    panic!("envoy did not start in three attempts (see the panics above): {last}");
}

/// Waits until the filter holds a challenge key (paid routes answer 503 before).
async fn wait_for_402(envoy: &Envoy, listener: u16, host: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request(listener, "GET", host, path, &[]).await;
        if r.status == 402 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no 402 on {host}{path} (last {} {}):\n{}",
            r.status,
            r.text(),
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn shipped_placeholder_pay_to_stops_envoy_until_the_operator_sets_it() {
    for file in WASMPLUGINS {
        let spec = plugin(file);
        let as_shipped = spec["pluginConfig"].clone();
        let ports = (free_port(), free_port(), free_port(), free_port());
        let yaml = bootstrap(file, &spec, &as_shipped, &cluster_of(&spec), ports);
        let out = envoy::validate(&yaml).expect_err("the placeholder payTo must not load");
        assert!(
            out.contains("nanogate: invalid plugin configuration: payTo"),
            "{file}:\n{out}"
        );
        // With a payee filled in, the rest of the shipped configuration loads.
        let payee = PrivateKey::from_seed(&[7; 32], 0).public_key();
        let yaml = bootstrap(
            file,
            &spec,
            &filled_in(&spec, &payee),
            &cluster_of(&spec),
            ports,
        );
        if let Err(out) = envoy::validate(&yaml) {
            panic!("{file}: envoy --mode validate refused the filled-in config:\n{out}");
        }
    }
}

#[tokio::test]
async fn a_plain_cluster_name_does_not_reach_the_sidecar_so_paid_routes_fail_closed() {
    // Negative control: the filter really calls the cluster named in the manifest. With the
    // sidecar under any other name (here the plain demo name) it never gets a challenge key.
    let spec = plugin("wasmplugin-gateway.yaml");
    let payee = PrivateKey::from_seed(&[8; 32], 0).public_key();
    let upstream = Upstream::start().await;
    let config = filled_in(&spec, &payee);
    let (envoy, listener) = start_envoy(|listener, admin| {
        bootstrap(
            "plain-cluster",
            &spec,
            &config,
            "nanogate_sidecar",
            (listener, admin, upstream.port, free_port()),
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = request(listener, "GET", "api.example.com", "/v1/reports/q3", &[]).await;
    assert_eq!(r.status, 503, "{}\n{}", r.text(), envoy.log());
    assert!(r.header("retry-after").is_some());
    assert!(upstream.requests().is_empty());
    // What docs/istio.md tells operators to look for: paid requests without a key are counted
    // at once, and the filter's retries of the key fetch (every tick) are counted as failures.
    assert!(envoy.counter("wasmcustom.nanogate_key_unavailable").await >= 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while envoy.counter("wasmcustom.nanogate_key_fetch_errors").await == 0 {
        assert!(
            Instant::now() < deadline,
            "no key fetch error counted:\n{}",
            envoy.stats("nanogate_key").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A real payment for the 402 in `reply`: a signed send from `payer` on its devnet frontier.
fn pay(devnet: &Devnet, payer: &PrivateKey, payee: &PublicKey, reply: &Reply) -> (String, String) {
    let challenge = Challenge {
        required: reply.payment_required(),
        raw: reply.payment_required_json(),
    };
    let amount = parse_raw(&challenge.required.accepts[0].amount).expect("amount");
    let a = devnet
        .ledger()
        .account(&payer.public_key())
        .expect("payer funded");
    let block = signed_block(
        payer,
        a.frontier,
        a.representative,
        a.balance - amount,
        payee.0,
    );
    (challenge.header_for(&block), block.hash().to_hex())
}

#[tokio::test]
async fn shipped_plugin_configs_charge_in_envoy_through_the_istio_cluster_name() {
    let dir = std::env::temp_dir().join(format!(
        "nanogate-istio-plugin-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let payer = PrivateKey::from_seed(&rand::random::<[u8; 32]>(), 0);
    let payee = PrivateKey::from_seed(&rand::random::<[u8; 32]>(), 0).public_key();
    let mut dcfg = DevnetConfig::local();
    dcfg.confirm = Confirm::AfterMs(100);
    dcfg.fund = vec![(payer.public_key(), XNO)];
    let devnet = Devnet::start(dcfg).await.expect("devnet");
    let upstream = Upstream::start().await;
    let sidecar_port = free_port();
    let sidecar = SidecarProcess::start(
        SidecarSettings {
            listen_port: sidecar_port,
            network: NETWORK.into(),
            node_network: "dev".into(),
            filter_secret: TEST_SECRET.into(),
            challenge_secret: CHALLENGE_SECRET.into(),
            rpc: vec![devnet.rpc_url()],
            ws: vec![devnet.ws_url()],
            database_url: format!("sqlite://{}", dir.join("istio.db").display()),
            postgres_schema: None,
            max_wait_secs: 5,
            rpc_timeout_ms: 2_000,
            rpc_retries: 1,
            log: "info".into(),
        },
        &dir,
    )
    .await
    .unwrap_or_else(|e| panic!("sidecar: {e:#}"));

    // --- The ingress gateway plugin ------------------------------------------------------
    let gw = plugin("wasmplugin-gateway.yaml");
    let cluster = cluster_of(&gw);
    assert_eq!(
        cluster,
        istio_cluster_name(8402, "nanogate-sidecar", "nanogate")
    );
    let config = filled_in(&gw, &payee);
    let (envoy, listener) = start_envoy(|listener, admin| {
        bootstrap(
            "istio-system.nanogate-gateway",
            &gw,
            &config,
            &cluster,
            (listener, admin, upstream.port, sidecar_port),
        )
    })
    .await;
    let host = "api.example.com";
    wait_for_402(&envoy, listener, host, "/v1/reports/warmup").await;

    // Free exemption inside the paid prefix, and other hosts, pass untouched.
    let r = request(listener, "GET", host, "/v1/reports/index", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(listener, "GET", "other.example.com", "/v1/reports/q3", &[]).await;
    assert_eq!(r.status, 200, "routes are scoped to api.example.com");

    // Unpaid: 402 with the manifest's terms.
    let unpaid = request(listener, "GET", host, "/v1/reports/q3", &[]).await;
    assert_eq!(unpaid.status, 402, "{}", unpaid.text());
    let pr = unpaid.payment_required();
    let offer = &pr.accepts[0];
    assert_eq!(
        offer.amount,
        (XNO / 1000).to_string(),
        "price \"0.001\" XNO"
    );
    assert_eq!(offer.pay_to, payee.to_address());
    assert_eq!(offer.network, NETWORK);
    assert_eq!(pr.resource.url, "http://api.example.com/v1/reports/q3");
    assert_eq!(pr.resource.description.as_deref(), Some("One report"));
    // Route hosts ignore the port of the request's authority.
    let with_port = request(
        listener,
        "GET",
        "api.example.com:8443",
        "/v1/reports/q3",
        &[],
    )
    .await;
    assert_eq!(with_port.status, 402);
    // A spelling the upstream would normalize is priced like the canonical path.
    let sneaky = request(listener, "GET", host, "//v1/reports/%71%33", &[]).await;
    assert_eq!(sneaky.status, 402, "{}", sneaky.text());
    let search = request(listener, "GET", host, "/v1/search/nano", &[]).await;
    assert_eq!(search.status, 402);
    assert_eq!(
        search.payment_required().accepts[0].amount,
        (XNO / 10_000).to_string(),
        "priceRaw of the regex route"
    );

    // Paid: a real signed send, settled by the real sidecar on the devnet.
    let before = upstream.requests().len();
    let (header, hash) = pay(&devnet, &payer, &payee, &unpaid);
    let paid = request(
        listener,
        "GET",
        host,
        "/v1/reports/q3",
        &[("payment-signature", &header)],
    )
    .await;
    assert_eq!(
        paid.status,
        200,
        "{}\n--- envoy ---\n{}\n--- sidecar ---\n{}",
        paid.text(),
        envoy.log(),
        sidecar.log()
    );
    let receipt = paid.settlement().expect("PAYMENT-RESPONSE");
    assert!(receipt.success);
    assert_eq!(
        receipt.transaction.to_ascii_uppercase(),
        hash.to_ascii_uppercase()
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), before + 1);
    let last = seen.last().expect("forwarded");
    assert_eq!(last.path, "/v1/reports/q3");
    assert_eq!(last.header("payment-signature"), None, "payment stripped");
    // The secret reached the sidecar from the proxy's environment and is in no config dump.
    let dump = envoy.config_dump().await;
    assert!(
        dump.contains("secretEnv"),
        "the plugin configuration is dumped"
    );
    assert!(
        !dump.contains(TEST_SECRET),
        "the filter secret is in /config_dump"
    );
    // The same payment does not buy a second response.
    let again = request(
        listener,
        "GET",
        host,
        "/v1/reports/q3",
        &[("payment-signature", &header)],
    )
    .await;
    assert_eq!(again.status, 402, "{}", again.text());
    drop(envoy);

    // --- The workload sidecar plugin (same sidecar, its own routes) -----------------------
    let wl = plugin("wasmplugin-workload.yaml");
    assert_eq!(cluster_of(&wl), cluster);
    let config = filled_in(&wl, &payee);
    let (envoy, listener) = start_envoy(|listener, admin| {
        bootstrap(
            "istio-system.nanogate-workload",
            &wl,
            &config,
            &cluster,
            (listener, admin, upstream.port, sidecar_port),
        )
    })
    .await;
    let host = "reports.shop.svc.cluster.local:8080";
    wait_for_402(&envoy, listener, host, "/paid/warmup").await;
    let r = request(listener, "GET", host, "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    let unpaid = request(listener, "GET", host, "/paid/item", &[]).await;
    assert_eq!(unpaid.status, 402);
    let (header, _) = pay(&devnet, &payer, &payee, &unpaid);
    let paid = request(
        listener,
        "GET",
        host,
        "/paid/item",
        &[("payment-signature", &header)],
    )
    .await;
    assert_eq!(paid.status, 200, "{}\n{}", paid.text(), sidecar.log());
    assert!(paid.settlement().is_some_and(|s| s.success));

    drop(envoy);
    drop(sidecar);
    let _ = std::fs::remove_dir_all(&dir);
}
