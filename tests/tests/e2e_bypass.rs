//! The bypass matrix, in real Envoy with the real sidecar: every spelling an upstream may serve
//! as a paid path (letter case, `;` parameters, trailing slash and dot segments, `//`, percent
//! encodings, `..`), with every Host spelling and every method, against each route kind (prefix,
//! exact, regex, host-scoped). None may reach the upstream unpaid: each answer is a 402 and the
//! recording upstream sees nothing. The spellings are data: a new one is one line in
//! [`PATH_SPELLINGS`] or [`HOST_SPELLINGS`].
//!
//! The routes are the demo bootstrap's own (`envoy/envoy.yaml`: the `/paid/` prefix with its
//! `/paid/free` exemption) plus the ones in [`extra_routes`]. The matrix runs twice: behind the
//! demo's Envoy, which normalizes paths itself, and behind the same Envoy with normalization
//! off, where the filter's own canonicalization is all there is. Requests go out byte for byte
//! ([`raw_http`]), so no client library rewrites a spelling first.

use futures_util::future::join_all;
use nanogate_devnet::{Confirm, Devnet, DevnetConfig};
use nanogate_protocol::nano::{parse_raw, PrivateKey, PublicKey};
use nanogate_tests::envoy::{self, Envoy};
use nanogate_tests::ports::free_port;
use nanogate_tests::raw_http;
use nanogate_tests::sidecar::{SidecarProcess, SidecarSettings};
use nanogate_tests::stack::{self, CHALLENGE_SECRET, FILTER_SECRET, NETWORK};
use nanogate_tests::stack::{signed_block, Challenge};
use nanogate_tests::upstream::Upstream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Every method a paid route must price (the shipped routes list no `methods`).
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A paid path of each route kind, as written in its route, and the Host it is served on.
const PAID_TARGETS: &[(&str, &str, &str)] = &[
    // (route kind, path, host)
    ("prefix /paid/ (demo)", "/paid/report", "demo.test"),
    ("exact /report/annual", "/report/annual", "demo.test"),
    ("regex /items/[0-9]+", "/items/42", "demo.test"),
    (
        "host api.example.com, prefix /hosted/",
        "/hosted/report",
        "api.example.com",
    ),
    (
        "host *.example.com, exact /account/balance",
        "/account/balance",
        "eu.example.com",
    ),
];

/// Routes added after the demo's own.
fn extra_routes() -> Vec<Value> {
    vec![
        json!({"name": "status", "path": {"exact": "/status"}, "free": true}),
        json!({"name": "annual", "path": {"exact": "/report/annual"}, "price": "0.001"}),
        json!({"name": "items", "path": {"regex": "/items/[0-9]+"}, "price": "0.001"}),
        json!({"name": "hosted", "host": "api.example.com", "path": {"prefix": "/hosted/"},
               "price": "0.001"}),
        json!({"name": "account", "host": "*.example.com", "path": {"exact": "/account/balance"},
               "price": "0.001"}),
    ]
}

/// A named rewrite of a path or a Host. Paths are always `/first/.../last`, two segments or more.
type Spelling = (&'static str, fn(&str) -> String);

const PATH_SPELLINGS: &[Spelling] = &[
    ("as written", |p| p.to_owned()),
    ("upper case", |p| p.to_ascii_uppercase()),
    ("mixed case", |p| alternate_case(p)),
    ("capitalized segments", |p| map_segments(p, capitalize)),
    (";param on the first segment", |p| {
        map_first_segment(p, |s| format!("{s};x"))
    }),
    (";param on the last segment", |p| {
        format!("{p};jsessionid=1")
    }),
    (";params on every segment", |p| {
        map_segments(p, |s| format!("{s};v=1;w"))
    }),
    ("empty ;param", |p| format!("{p};")),
    ("upper case with ;params", |p| {
        map_segments(&p.to_ascii_uppercase(), |s| format!("{s};a"))
    }),
    ("Tomcat ..; from a free directory", |p| {
        format!("/public/..;{p}")
    }),
    ("trailing slash", |p| format!("{p}/")),
    ("trailing /.", |p| format!("{p}/.")),
    ("trailing /./", |p| format!("{p}/./")),
    ("trailing /.;x", |p| format!("{p}/.;x")),
    ("inner /./", |p| before_last_segment(p, "/.")),
    ("leading //", |p| format!("/{p}")),
    ("inner //", |p| before_last_segment(p, "/")),
    ("trailing //", |p| format!("{p}//")),
    ("percent-encoded letter", |p| encode_first_letter(p)),
    ("percent-encoded upper-case letter", |p| {
        encode_first_letter(&p.to_ascii_uppercase())
    }),
    ("%2F for a slash", |p| last_slash(p, "%2F")),
    ("%2f for a slash", |p| last_slash(p, "%2f")),
    ("%5C for a slash", |p| last_slash(p, "%5C")),
    (".. from a free directory", |p| format!("/public/..{p}")),
    ("%2e%2e from a free directory", |p| {
        format!("/public/%2e%2e{p}")
    }),
    (".. inside", |p| before_last_segment(p, "/x/..")),
    ("query string", |p| format!("{p}?free=1")),
    ("all at once", |p| {
        format!(
            "/{}/./",
            map_segments(&alternate_case(p), |s| format!("{s};q"))
        )
    }),
];

/// Spellings of a Host.
const HOST_SPELLINGS: &[Spelling] = &[
    ("as written", |h| h.to_owned()),
    ("upper case", |h| h.to_ascii_uppercase()),
    ("trailing dot", |h| format!("{h}.")),
    ("port", |h| format!("{h}:8080")),
    ("trailing dot and port", |h| format!("{h}.:80")),
    ("mixed case, trailing dot", |h| {
        format!("{}.", alternate_case(h))
    }),
];

fn alternate_case(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn capitalize(seg: &str) -> String {
    let mut c = seg.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn map_segments(p: &str, f: impl Fn(&str) -> String) -> String {
    p.split('/')
        .map(|s| if s.is_empty() { String::new() } else { f(s) })
        .collect::<Vec<_>>()
        .join("/")
}

fn map_first_segment(p: &str, f: impl Fn(&str) -> String) -> String {
    let (first, rest) = p[1..].split_once('/').expect("two segments");
    format!("/{}/{rest}", f(first))
}

/// `/a/b` → `/a{insert}/b`.
fn before_last_segment(p: &str, insert: &str) -> String {
    let cut = p.rfind('/').expect("a slash");
    format!("{}{insert}{}", &p[..cut], &p[cut..])
}

/// `/a/b` → `/a{slash}b`.
fn last_slash(p: &str, slash: &str) -> String {
    let cut = p.rfind('/').expect("a slash");
    format!("{}{slash}{}", &p[..cut], &p[cut + 1..])
}

/// `/paid/x` → `/%70aid/x`.
fn encode_first_letter(p: &str) -> String {
    let b = p.as_bytes()[1];
    format!("/%{b:02X}{}", &p[2..])
}

/// Envoy + filter (the demo bootstrap with [`extra_routes`]), the real sidecar on a devnet, and
/// a recording upstream.
struct Stand {
    envoy: Envoy,
    listener: u16,
    upstream: Upstream,
    sidecar: SidecarProcess,
    devnet: Devnet,
    /// A funded account, and who the routes pay.
    payer: PrivateKey,
    payee: PublicKey,
    dir: std::path::PathBuf,
}

impl Stand {
    /// `normalizing`: the demo's Envoy path normalization as shipped; otherwise turned off.
    async fn start(normalizing: bool) -> Stand {
        let dir = std::env::temp_dir().join(format!(
            "nanogate-bypass-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let payer = PrivateKey::from_seed(&rand::random::<[u8; 32]>(), 0);
        let mut dcfg = DevnetConfig::local();
        dcfg.confirm = Confirm::AfterMs(100);
        dcfg.fund = vec![(payer.public_key(), stack::XNO)];
        let devnet = Devnet::start(dcfg).await.expect("devnet");
        let upstream = Upstream::start().await;
        let sidecar_port = free_port();
        let sidecar = SidecarProcess::start(
            SidecarSettings {
                listen_port: sidecar_port,
                network: NETWORK.into(),
                node_network: "dev".into(),
                filter_secret: FILTER_SECRET.into(),
                challenge_secret: CHALLENGE_SECRET.into(),
                rpc: vec![devnet.rpc_url()],
                ws: vec![devnet.ws_url()],
                database_url: format!("sqlite://{}", dir.join("bypass.db").display()),
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
        let payee = PrivateKey::from_seed(&rand::random::<[u8; 32]>(), 0).public_key();
        let (listener, admin) = (free_port(), free_port());
        let demo = stack::bootstrap(listener, admin, upstream.port, sidecar_port, 15_000, &payee);
        let mut yaml = envoy::edit_plugin_config(&demo, |c| {
            let routes = c["routes"].as_array_mut().expect("the demo's routes");
            routes.extend(extra_routes());
        })
        .expect("the demo bootstrap has a plugin configuration");
        if !normalizing {
            for (on, off) in [
                ("normalize_path: true", "normalize_path: false"),
                ("merge_slashes: true", "merge_slashes: false"),
                (
                    "path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD",
                    "path_with_escaped_slashes_action: KEEP_UNCHANGED",
                ),
            ] {
                assert!(yaml.contains(on), "the demo bootstrap sets {on}");
                yaml = yaml.replace(on, off);
            }
        }
        let envoy = stack::start_envoy(&yaml, admin).await;
        let stand = Stand {
            envoy,
            listener,
            upstream,
            sidecar,
            devnet,
            payer,
            payee,
            dir,
        };
        stand.wait_for_key().await;
        stand
    }

    /// Paid routes answer 503 until the filter holds a challenge key.
    async fn wait_for_key(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = raw_http::request(self.listener, "GET", "/paid/warmup", "demo.test").await;
            if matches!(r, Ok((402, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no challenge key (last {r:?}):\n{}\n{}",
                self.envoy.log(),
                self.sidecar.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends every `(label, method, target, host)`, 32 at a time; the statuses in order.
    async fn send_all(&self, cases: &[(String, &str, String, String)]) -> Vec<u16> {
        let mut statuses = Vec::with_capacity(cases.len());
        for chunk in cases.chunks(32) {
            let answers = join_all(
                chunk
                    .iter()
                    .map(|(label, method, target, host)| async move {
                        raw_http::request(self.listener, method, target, host)
                            .await
                            .unwrap_or_else(|e| panic!("{label}: {e}"))
                            .0
                    }),
            )
            .await;
            statuses.extend(answers);
        }
        statuses
    }
}

impl Drop for Stand {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every path spelling × Host spelling × method against every paid target.
fn paid_matrix() -> Vec<(String, &'static str, String, String)> {
    let mut cases = Vec::new();
    for (kind, path, host) in PAID_TARGETS {
        for (pname, pspell) in PATH_SPELLINGS {
            for (hname, hspell) in HOST_SPELLINGS {
                for method in METHODS {
                    let (target, host) = (pspell(path), hspell(host));
                    cases.push((
                        format!("{kind}: {pname}, host {hname}: {method} {target} (Host {host})"),
                        method,
                        target,
                        host,
                    ));
                }
            }
        }
    }
    cases
}

async fn assert_no_spelling_passes_unpaid(normalizing: bool) {
    let s = Stand::start(normalizing).await;
    let cases = paid_matrix();
    let started = Instant::now();
    let statuses = s.send_all(&cases).await;
    let wrong: Vec<String> = cases
        .iter()
        .zip(&statuses)
        .filter(|(_, status)| **status != 402)
        .map(|((label, ..), status)| format!("{status} ← {label}"))
        .collect();
    let reached: Vec<String> = s
        .upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    eprintln!(
        "bypass matrix (Envoy normalization {}): {} requests in {:?}, {} not 402, {} reached the upstream",
        if normalizing { "on" } else { "off" },
        cases.len(),
        started.elapsed(),
        wrong.len(),
        reached.len()
    );
    assert!(
        reached.is_empty(),
        "reached the upstream unpaid: {reached:#?}"
    );
    assert!(wrong.is_empty(), "not answered 402: {wrong:#?}");
}

#[tokio::test]
async fn no_spelling_of_a_paid_route_reaches_the_upstream_unpaid() {
    assert_no_spelling_passes_unpaid(true).await;
}

#[tokio::test]
async fn no_spelling_passes_unpaid_even_when_envoy_does_not_normalize_paths() {
    assert_no_spelling_passes_unpaid(false).await;
}

/// What must still pass: free routes and unpriced paths, in the spellings the rule leaves free
/// (anything that no form of the path makes a paid route's).
const FREE_CASES: &[(&str, &str, &str)] = &[
    // (method, target, host)
    ("GET", "/paid/free", "demo.test"),
    ("POST", "/paid/free", "demo.test"),
    ("GET", "/paid/free?x=1", "demo.test"),
    // Without its parameter it is the exemption; as written it is no route's.
    ("GET", "/paid;x/free", "demo.test"),
    ("GET", "/status", "demo.test"),
    ("OPTIONS", "/status", "demo.test"),
    ("DELETE", "/status?x", "demo.test"),
    ("GET", "/status;v=1", "demo.test"),
    ("GET", "/STATUS", "demo.test"),
    ("GET", "/status/", "demo.test"),
    ("GET", "/paidx", "demo.test"),
    ("GET", "/unpriced/paid/report", "demo.test"),
    ("GET", "/items/abc", "demo.test"),
    ("GET", "/items/42/more", "demo.test"),
    ("GET", "/report/annual/2024", "demo.test"),
    ("GET", "/report/annualx", "demo.test"),
    ("GET", "/report/annual%3Bx", "demo.test"),
    ("GET", "/hosted/report", "other.example.com"),
    ("GET", "/hosted/report", "api.example.com.evil.test"),
    ("GET", "/account/balance", "example.com"),
];

/// Spellings of an exemption that fall to the paid prefix around it: a 402 even where the
/// upstream would serve the free resource, the price of never widening an exemption.
const EXEMPTION_SPELLINGS_PRICED: &[&str] = &[
    "/paid/free/",
    "/paid/free/.",
    "/PAID/FREE",
    "/paid/Free",
    "/paid/free;x",
];

#[tokio::test]
async fn free_routes_and_unpriced_paths_still_pass_and_exemptions_are_exact() {
    let s = Stand::start(false).await;
    let cases: Vec<(String, &str, String, String)> = FREE_CASES
        .iter()
        .map(|(m, t, h)| {
            (
                format!("{m} {t} (Host {h})"),
                *m,
                t.to_string(),
                h.to_string(),
            )
        })
        .collect();
    let statuses = s.send_all(&cases).await;
    for ((label, ..), status) in cases.iter().zip(&statuses) {
        assert_eq!(*status, 200, "{label} should pass");
    }
    assert_eq!(
        s.upstream.requests().len(),
        cases.len(),
        "each free request reached the upstream once"
    );

    let before = s.upstream.requests().len();
    let priced: Vec<(String, &str, String, String)> = EXEMPTION_SPELLINGS_PRICED
        .iter()
        .flat_map(|t| {
            METHODS.map(|m| (format!("{m} {t}"), m, t.to_string(), "demo.test".to_owned()))
        })
        .collect();
    let statuses = s.send_all(&priced).await;
    for ((label, ..), status) in priced.iter().zip(&statuses) {
        assert_eq!(*status, 402, "{label}");
    }
    assert_eq!(s.upstream.requests().len(), before, "nothing priced passed");
}

/// A spelled-out path is paid like the route it reaches, and the admitted request reaches the
/// upstream exactly as it was sent: the rewrites are for matching only.
#[tokio::test]
async fn a_paid_spelling_is_admitted_and_forwarded_as_written() {
    let s = Stand::start(true).await;
    let (target, host) = ("/PAID;v=1/Report", "demo.test");
    let (status, response) = raw_http::request(s.listener, "POST", target, host)
        .await
        .expect("unpaid request");
    assert_eq!(status, 402, "{response}");
    let raw: Value = serde_json::from_str(raw_http::body(&response)).expect("402 body is JSON");
    let challenge = Challenge {
        required: serde_json::from_value(raw.clone()).expect("PaymentRequired"),
        raw,
    };
    assert_eq!(
        challenge.required.resource.url,
        format!("http://{host}{target}")
    );
    let amount = parse_raw(&challenge.required.accepts[0].amount).expect("amount");
    assert_eq!(amount, stack::PRICE_RAW, "the /paid/ price");
    let account = s
        .devnet
        .ledger()
        .account(&s.payer.public_key())
        .expect("payer funded");
    let block = signed_block(
        &s.payer,
        account.frontier,
        account.representative,
        account.balance - amount,
        s.payee.0,
    );
    let header = challenge.header_for(&block);
    let (status, response) = raw_http::request_with(
        s.listener,
        "POST",
        target,
        host,
        &[("payment-signature", &header)],
    )
    .await
    .expect("paid request");
    assert_eq!(status, 200, "{response}\n{}", s.sidecar.log());
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", target)
    );
    assert_eq!(seen[0].header("payment-signature"), None);
}
