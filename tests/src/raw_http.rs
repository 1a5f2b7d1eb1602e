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
    request_with(port, method, target, host, &[]).await
}

/// [`request`] with more header lines.
pub async fn request_with(
    port: u16,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
             Connection: close\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        // Read until the response is complete rather than to EOF: Envoy holds a closing
        // connection open for its delayed-close timeout (1 s) waiting for the client.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if response_complete(&raw, method == "HEAD") {
                break;
            }
            let n = conn
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
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

/// Whether `raw` holds a whole response: the head, and `Content-Length` bytes of body (none for
/// a HEAD). Without a `Content-Length` the response ends at EOF.
fn response_complete(raw: &[u8], head_request: bool) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        _ if head_request => true,
        Some(n) => raw.len() >= end + 4 + n,
        None => false,
    }
}

/// The body of a raw response (after the head).
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}
