//! One HTTP round trip with the resource server: the request to make, the raw answer, its
//! receipt header. No redirects are followed (see [`Payer::new`]); a 402 body is read only up
//! to [`MAX_402_BODY_BYTES`].

use nanogate_protocol::x402::{decode_header, headers, SettlementResponse};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::Payer;
use crate::error::PayError;
use crate::offer::MAX_CHALLENGE_HEADER_BYTES;

/// Most of a 402 body we read (the challenge is a few KB).
pub const MAX_402_BODY_BYTES: usize = 1024 * 1024;

/// One HTTP request to make (and pay for if asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl RequestSpec {
    pub fn get(url: impl Into<String>) -> Self {
        RequestSpec {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        RequestSpec {
            method: "POST".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Some(body.into()),
        }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// An answer as it came, before we make sense of it.
pub(super) struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `PAYMENT-RESPONSE` (or `X-PAYMENT-RESPONSE`), decoded, when present.
    pub fn receipt(&self) -> Option<Result<SettlementResponse, String>> {
        let value = self
            .header(headers::PAYMENT_RESPONSE)
            .or_else(|| self.header(headers::X_PAYMENT_RESPONSE))?;
        Some(
            decode_header::<SettlementResponse>(value.trim(), MAX_CHALLENGE_HEADER_BYTES)
                .map_err(|e| e.to_string()),
        )
    }

    /// The server refused the payment (or said it needs one).
    pub fn is_refusal(&self) -> bool {
        self.status == 402 || self.status == 400
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Payer {
    /// Sends `req`, with a payment header when given; the error is a sentence for the user.
    pub(super) async fn send(
        &self,
        req: &RequestSpec,
        payment: Option<(&'static str, String)>,
    ) -> Result<RawResponse, String> {
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method `{}`", req.method))?;
        let mut hm = HeaderMap::new();
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| format!("invalid header name `{k}`"))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| format!("invalid value for header `{k}`"))?;
            hm.append(name, value);
        }
        if let Some((name, value)) = payment {
            let value = HeaderValue::from_str(&value)
                .map_err(|_| "unencodable payment header".to_owned())?;
            hm.insert(name, value);
        }
        let mut rb = self.http.request(method, &req.url).headers(hm);
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let resp = rb.send().await.map_err(|e| describe(&req.url, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = if status == 402 {
            read_capped(resp, &req.url).await?
        } else {
            resp.bytes()
                .await
                .map_err(|e| describe(&req.url, &e))?
                .to_vec()
        };
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }
}

/// A challenge is small; do not let a hostile 402 fill memory.
async fn read_capped(mut resp: reqwest::Response, url: &str) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(url, &e))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_402_BODY_BYTES {
            body.truncate(MAX_402_BODY_BYTES);
            break;
        }
    }
    Ok(body)
}

/// Only `http` (and `https` when built with the `https` feature).
pub(super) fn check_scheme(url: &reqwest::Url) -> Result<(), PayError> {
    match url.scheme() {
        "http" => Ok(()),
        "https" if cfg!(feature = "https") => Ok(()),
        "https" => Err(PayError::InvalidRequest(format!(
            "{url}: this build has no TLS support; rebuild with `--features https`"
        ))),
        other => Err(PayError::InvalidRequest(format!(
            "{url}: unsupported scheme `{other}` (use http or https)"
        ))),
    }
}

/// A transport error as one line: what failed, then every cause.
fn describe(url: &str, e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_timeout() {
        format!("no answer from {url} in time")
    } else if e.is_connect() {
        format!("cannot connect to {url}")
    } else {
        format!("request to {url} failed")
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
