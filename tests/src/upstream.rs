//! A recording upstream: answers every request and keeps its method, path, headers and body so
//! tests can assert what reached the protected service (e.g. that payment headers were
//! stripped). A path ending in `/status/<code>` (e.g. `/paid/status/503`) answers with that
//! status; [`Upstream::fail_next`] makes the next request to one path fail once. A path with a
//! `/delay/<ms>/` segment (e.g. `/paid/delay/3000/x`) answers after that many milliseconds (a
//! slow upstream).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// One request as the upstream saw it. Header names are lower case.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Recorded>>,
    /// (path, status): the next request to `path` answers `status`, once.
    fail_next: Mutex<Vec<(String, u16)>>,
}

type Log = Arc<Shared>;

pub struct Upstream {
    pub port: u16,
    log: Log,
    stop: Option<oneshot::Sender<()>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let (listener, _) = crate::ports::bind_local().await;
        Self::serve(listener)
    }

    /// On a fixed address (the demo's upstream on 127.0.0.1:8080).
    pub async fn start_on(addr: std::net::SocketAddr) -> std::io::Result<Upstream> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Ok(Self::serve(listener))
    }

    fn serve(listener: tokio::net::TcpListener) -> Upstream {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let log = Log::default();
        let app = axum::Router::new().fallback(handle).with_state(log.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Upstream {
            port: addr.port(),
            log,
            stop: Some(stop),
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The requests so far whose path (without the query) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }

    /// The next request to `path` (without the query) answers `status`, once.
    pub fn fail_next(&self, path: &str, status: u16) {
        if let Ok(mut f) = self.log.fail_next.lock() {
            f.push((path.to_owned(), status));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn handle(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let rec = Recorded {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| path.clone(), |p| p.to_string()),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    if let Ok(mut l) = log.log.lock() {
        l.push(rec);
    }
    let injected = log.fail_next.lock().ok().and_then(|mut f| {
        let i = f.iter().position(|(p, _)| *p == path)?;
        Some(f.remove(i).1)
    });
    let status = injected
        .or_else(|| {
            path.rsplit_once("/status/")
                .and_then(|(_, s)| s.parse::<u16>().ok())
        })
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(ms) = path
        .split_once("/delay/")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let body = serde_json::json!({"upstream": true, "path": path}).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}
