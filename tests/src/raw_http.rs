//! HTTP/1.1 requests written byte for byte: the request target and `Host` exactly as given
//! (`/paid/./x`, `/a/..;/b`, `%2F`, `api.example.com.`), which an HTTP client library would
//! normalize or refuse before sending.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status code and raw response of one request to `127.0.0.1:port` (`Connection: close`,
/// empty body). `Err` when the connection fails or no status line arrives within 15 s.
pub async fn request(
    port: u16,
    method: &str,
    target: &str,
    host: &str,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        conn.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("no status line in {text:?}"))?;
        Ok((status, text))
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| format!("{method} {target}: no answer in 15 s"))?
}
