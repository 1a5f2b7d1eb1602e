//! A recording upstream: answers every request and keeps its method, path, headers, body and
//! what became of it, so tests can assert what reached the protected service (e.g. that
//! payment headers were stripped, or that one payment bought one response). A path ending in
//! `/status/<code>` (e.g. `/paid/status/503`) answers with that status;
//! [`Upstream::fail_next`] makes the next request to one path fail once; [`Upstream::set_fault`]
//! makes every request misbehave until it is lifted: slow, a connection reset before any
//! answer, or a given status. A path with a `/delay/<ms>/` segment (e.g.
//! `/paid/delay/3000/x`) answers after that many milliseconds (a slow upstream).

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// What became of one request at the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler is still working on it.
    Running,
    /// The handler answered with this status.
    Answered(u16),
    /// An injected reset: the connection was closed before any answer.
    Reset,
    /// The peer (Envoy) went away before the handler answered: nothing was answered.
    Abandoned,
}

/// One request as the upstream saw it. Header names are lower case.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub outcome: Outcome,
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

/// A misbehaviour applied to every request while it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Wait this long before answering.
    Slow(Duration),
    /// Close the connection without answering.
    Reset,
    /// Answer this status (e.g. 503).
    Status(u16),
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Recorded>>,
    /// (path, status): the next request to `path` answers `status`, once.
    fail_next: Mutex<Vec<(String, u16)>>,
    fault: Mutex<Fault>,
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
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(listener))
    }

    fn serve(listener: TcpListener) -> Upstream {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let log = Log::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(log.clone())
            .into_make_service_with_connect_info::<Killer>();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(KillableListener(listener), app)
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

    /// Every request from now on misbehaves as `fault` says (`Fault::None` lifts it).
    pub fn set_fault(&self, fault: Fault) {
        if let Ok(mut f) = self.log.fault.lock() {
            *f = fault;
        }
    }

    pub fn fault(&self) -> Fault {
        self.log.fault.lock().map(|f| *f).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Marks the request abandoned unless the handler finished it (the future is dropped when the
/// peer goes away first).
struct Finish {
    log: Log,
    index: usize,
    outcome: Option<Outcome>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Outcome::Abandoned);
        if let Ok(mut l) = self.log.log.lock() {
            if let Some(r) = l.get_mut(self.index) {
                r.outcome = outcome;
            }
        }
    }
}

async fn handle(
    State(log): State<Log>,
    ConnectInfo(killer): ConnectInfo<Killer>,
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
        outcome: Outcome::Running,
    };
    let index = match log.log.lock() {
        Ok(mut l) => {
            l.push(rec);
            l.len() - 1
        }
        Err(_) => usize::MAX,
    };
    let mut finish = Finish {
        log: log.clone(),
        index,
        outcome: None,
    };
    let fault = log.fault.lock().map(|f| *f).unwrap_or_default();
    let injected = log.fail_next.lock().ok().and_then(|mut f| {
        let i = f.iter().position(|(p, _)| *p == path)?;
        Some(f.remove(i).1)
    });
    let mut status = injected.or_else(|| {
        path.rsplit_once("/status/")
            .and_then(|(_, s)| s.parse::<u16>().ok())
    });
    match fault {
        Fault::None => {}
        Fault::Slow(d) => tokio::time::sleep(d).await,
        Fault::Reset => {
            killer.kill();
            finish.outcome = Some(Outcome::Reset);
            // Never written: the connection fails on the first write and hyper drops it.
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Fault::Status(s) => status = status.or(Some(s)),
    }
    let status = status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(ms) = path
        .split_once("/delay/")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    finish.outcome = Some(Outcome::Answered(status.as_u16()));
    let body = serde_json::json!({"upstream": true, "path": path}).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

/// A TCP listener whose connections can be cut from a handler ([`Killer`]).
struct KillableListener(TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = Listener::accept(&mut self.0).await;
        (
            KillableStream {
                inner: io,
                killed: Arc::new(AtomicBool::new(false)),
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Listener::local_addr(&self.0)
    }
}

/// A connection that fails every read and write once killed, so hyper closes it without
/// answering.
struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

fn reset_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset")
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.killed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.killed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.killed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The kill switch of the connection a request came on.
#[derive(Clone)]
struct Killer(Arc<AtomicBool>);

impl Killer {
    fn kill(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, KillableListener>> for Killer {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        Killer(Arc::clone(&stream.io().killed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16, path: &str) -> Result<u16, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let r = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    #[tokio::test]
    async fn faults_answer_as_set_and_every_request_records_its_outcome() {
        let up = Upstream::start().await;
        assert_eq!(get(up.port, "/a").await.ok(), Some(200));
        up.set_fault(Fault::Status(503));
        assert_eq!(get(up.port, "/b").await.ok(), Some(503));
        up.set_fault(Fault::Reset);
        let reset = get(up.port, "/c").await;
        assert!(reset.is_err(), "a reset answers nothing: {reset:?}");
        up.set_fault(Fault::Slow(Duration::from_millis(300)));
        // A client that gives up first leaves the request abandoned.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(50))
            .build()
            .expect("client");
        let gave_up = client
            .get(format!("http://127.0.0.1:{}/d", up.port))
            .send()
            .await;
        assert!(gave_up.is_err());
        assert_eq!(get(up.port, "/e").await.ok(), Some(200));
        up.set_fault(Fault::None);
        assert_eq!(up.fault(), Fault::None);
        // The abandoned handler is dropped once hyper notices the closed connection.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let outcomes = loop {
            let o: Vec<(String, Outcome)> = up
                .requests()
                .into_iter()
                .map(|r| (r.path, r.outcome))
                .collect();
            if o.iter().all(|(_, x)| *x != Outcome::Running) || std::time::Instant::now() > deadline
            {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            outcomes,
            vec![
                ("/a".to_owned(), Outcome::Answered(200)),
                ("/b".to_owned(), Outcome::Answered(503)),
                ("/c".to_owned(), Outcome::Reset),
                ("/d".to_owned(), Outcome::Abandoned),
                ("/e".to_owned(), Outcome::Answered(200)),
            ]
        );
    }
}
