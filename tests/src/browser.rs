//! Headless Chromium (Debian's `/usr/bin/chromium`, installed by `cargo xtask test`) driven
//! over the DevTools protocol by a minimal client on tokio-tungstenite: loopback only, every
//! wait bounded. Used by the paywall and dashboard browser tests.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium with its own profile directory, killed and removed on drop.
pub struct Browser {
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
    pub fn start() -> Browser {
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
    pub async fn port(&mut self) -> u16 {
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
pub struct Page {
    ws: Ws,
    next: u64,
}

impl Page {
    pub async fn open(port: u16) -> Page {
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

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
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
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Loads `url` again and again (each time waiting up to 5 s) until `expr` evaluates to
    /// `want`, for at most `timeout`: a page the filter answers from pools that fill on its first
    /// ticks. Returns the page's HTML when it never does, for the failure message.
    pub async fn navigate_until(
        &mut self,
        url: &str,
        expr: &str,
        want: &Value,
        timeout: Duration,
    ) -> Result<(), Value> {
        let deadline = Instant::now() + timeout;
        loop {
            self.call("Page.navigate", json!({ "url": url })).await;
            if self.wait_for(expr, want, Duration::from_secs(5)).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.eval("document.documentElement.outerHTML").await);
            }
        }
    }

    /// Waits until `expr` evaluates to `want` (bounded).
    pub async fn wait_for(&mut self, expr: &str, want: &Value, timeout: Duration) -> bool {
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
