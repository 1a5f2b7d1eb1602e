//! The browser paywall in headless Chromium (Debian's `/usr/bin/chromium`, installed by
//! `cargo xtask test`): a browser navigating to a tagged route gets the self-contained 402 page;
//! it renders, its QR code (drawn by the page's own encoder) decodes to the `nano:` payment URI
//! it shows; after a devnet payment of exactly that amount to that account, the page reaches
//! the resource by itself. Driven over the DevTools protocol (a minimal client on
//! tokio-tungstenite); loopback only, every wait bounded.

use futures_util::{SinkExt, StreamExt};
use nanogate_protocol::nano::PublicKey;
use nanogate_tests::stack::{Stack, StackConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium with its own profile directory, killed and removed on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run `cargo xtask test` (its setup installs Debian's chromium), \
             or `apt-get install -y chromium`"
        );
        let profile = std::env::temp_dir().join(format!(
            "nanogate-chromium-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        Browser { child, profile }
    }

    /// The DevTools port Chromium chose (`DevToolsActivePort` in the profile).
    async fn port(&mut self) -> u16 {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Some(p) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                    return p;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromium exited early: {status}");
            }
            assert!(Instant::now() < deadline, "chromium did not open DevTools");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools session on one page target.
struct Page {
    ws: Ws,
    next: u64,
}

impl Page {
    async fn open(port: u16) -> Page {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let list: Option<Value> =
                match reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
            let found = list.as_ref().and_then(Value::as_array).and_then(|a| {
                a.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                    .map(str::to_owned)
            });
            if let Some(u) = found {
                break u;
            }
            assert!(Instant::now() < deadline, "no page target in chromium");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("DevTools WebSocket");
        Page { ws, next: 1 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::Text(msg.into()))
            .await
            .expect("DevTools send");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("DevTools: no answer to {method}"));
            let Some(Ok(Message::Text(text))) = next else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates an expression in the page and returns its JSON value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Waits until `expr` evaluates to `want` (bounded).
    async fn wait_for(&mut self, expr: &str, want: &Value, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if &self.eval(expr).await == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

/// The QR code on the page's canvas, decoded.
fn decode_qr(width: usize, bits: &str) -> String {
    let bits = bits.as_bytes();
    let height = bits.len() / width.max(1);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        if bits[y * width + x] == b'1' {
            0
        } else {
            255
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code on the canvas");
    let (_, content) = grids[0].decode().expect("the QR code decodes");
    content
}

#[tokio::test]
async fn the_paywall_renders_its_qr_code_and_loads_the_resource_after_a_devnet_payment() {
    let mut browser = Browser::start();
    let s = Stack::start(StackConfig::default()).await;
    let w = s.wallet();
    let port = browser.port().await;
    let mut page = Page::open(port).await;

    // The filter's session pool fills on its first ticks: navigate until the paywall shows.
    let url = s.url("/tagged/browser");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        page.call("Page.navigate", json!({"url": url})).await;
        if page
            .wait_for(
                "document.body && document.body.getAttribute('data-state')",
                &json!("waiting"),
                Duration::from_secs(5),
            )
            .await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the paywall never rendered: {}\n{}",
            page.eval("document.documentElement.outerHTML").await,
            s.diagnostics()
        );
    }

    // What the page shows.
    let uri = page
        .eval("document.getElementById('uri').getAttribute('href')")
        .await;
    let uri = uri.as_str().expect("payment URI").to_owned();
    let account = page
        .eval("document.getElementById('account').textContent")
        .await;
    let raw = page
        .eval("document.getElementById('amount').getAttribute('data-raw')")
        .await;
    let amount: u128 = raw.as_str().and_then(|r| r.parse().ok()).expect("amount");
    let account = account.as_str().expect("account").to_owned();
    assert_eq!(uri, format!("nano:{account}?amount={amount}"));
    assert_eq!(PublicKey::from_address(&account).ok(), Some(s.payee));
    let shown = page
        .eval("document.getElementById('amount').textContent")
        .await;
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.starts_with("0.001000") && t.ends_with(" XNO")),
        "{shown}"
    );
    // Self-contained: nothing is loaded from anywhere.
    let external = page
        .eval("document.querySelectorAll('[src],link[href]').length")
        .await;
    assert_eq!(external, json!(0));

    // The QR code encodes exactly the URI.
    let qr = page
        .eval(
            "(() => { const c = document.getElementById('qr'); \
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
              let s = ''; for (let i = 0; i < d.length; i += 4) s += d[i] < 128 ? '1' : '0'; \
              return [c.width, s]; })()",
        )
        .await;
    let width = qr[0].as_u64().expect("canvas width") as usize;
    let bits = qr[1].as_str().expect("canvas pixels");
    assert_eq!(decode_qr(width, bits), uri);

    // A wallet pays the URI: exactly that amount to that account, broadcast by itself.
    let block = s.send_block(&w.key, s.payee, amount);
    let hash = s
        .ledger()
        .process(&block)
        .expect("the devnet accepts the send");
    assert!(s.confirmed(&hash, Duration::from_secs(10)).await);

    // The page notices and loads the resource with its session.
    let loaded = page
        .wait_for(
            "document.body && document.body.getAttribute('data-state') === 'paid' && \
             !!document.getElementById('nanogate-resource')",
            &json!(true),
            Duration::from_secs(60),
        )
        .await;
    assert!(
        loaded,
        "the page did not reach the resource: {}\n{}",
        page.eval("document.documentElement.outerHTML").await,
        s.diagnostics()
    );
    let body = page
        .eval("document.getElementById('nanogate-resource').textContent")
        .await;
    let body: Value = serde_json::from_str(body.as_str().unwrap_or("")).expect("upstream JSON");
    assert_eq!(body["upstream"], json!(true));
    assert_eq!(body["path"], json!("/tagged/browser"));
    assert_eq!(s.upstream_hits("/tagged/browser"), 1);
    drop(page);
    drop(browser);
}
