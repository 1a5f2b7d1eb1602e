//! The admin API client: base URL, the bearer token (flag, environment or file), and the
//! mapping of transport and HTTP failures onto [`exit`](crate::exit) codes.

use crate::admin_cli::exit::{self, Failure, Result};
use nanogate_protocol::contract::ErrorBody;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The sidecar's base URL (its admin listener).
    #[arg(
        long,
        env = "NANOGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8402",
        global = true
    )]
    pub url: String,
    /// The bearer token (the sidecar's `facilitator.token`). Prefer the environment or a file:
    /// a flag shows in the process list.
    #[arg(
        long,
        env = "NANOGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored).
    #[arg(
        long,
        env = "NANOGATE_ADMIN_TOKEN_FILE",
        conflicts_with = "token",
        global = true
    )]
    pub token_file: Option<PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 30, global = true)]
    pub timeout_secs: u64,
}

impl Connection {
    /// The bearer token from `--token`, `--token-file` or the environment; an empty one is a
    /// usage error.
    pub fn resolve_token(&self) -> Result<String> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => t.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?
                .trim()
                .to_owned(),
            (None, None) => String::new(),
        };
        if token.is_empty() {
            return Err(Failure::usage(
                "no token: pass --token, --token-file, or set NANOGATE_ADMIN_TOKEN",
            ));
        }
        Ok(token)
    }
}

pub struct AdminHttp {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminHttp {
    pub fn new(c: &Connection) -> Result<AdminHttp> {
        let token = c.resolve_token()?;
        let base = c.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::usage("--url must start with http:// or https://"));
        }
        if c.timeout_secs == 0 {
            return Err(Failure::usage("--timeout-secs must be at least 1"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(c.timeout_secs))
            .build()
            .map_err(|e| Failure::usage(format!("HTTP client: {e}")))?;
        Ok(AdminHttp { http, base, token })
    }

    /// `GET path?query` with the token, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        self.send(path, self.http.get(&url).query(query)).await
    }

    /// `POST path` of `body` as JSON with the token, the answer decoded as `T`.
    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        self.send(path, self.http.post(&url).json(body)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        let answer = request.bearer_auth(&self.token).send().await.map_err(|e| {
            Failure::new(
                exit::UNREACHABLE,
                format!("cannot reach the sidecar at {}: {e}", self.base),
            )
        })?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| {
            Failure::new(
                exit::UNREACHABLE,
                format!("reading the answer to {path}: {e}"),
            )
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                Failure::new(exit::SIDECAR, format!("unexpected answer to {path}: {e}"))
            });
        }
        let said = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        let code = match status.as_u16() {
            401 | 403 => exit::AUTH,
            400 => exit::USAGE,
            404 | 409 | 422 => exit::REFUSED,
            _ => exit::SIDECAR,
        };
        Err(Failure::new(code, format!("{path}: {status}: {said}")))
    }
}
