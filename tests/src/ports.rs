//! Free local ports.

use std::net::{SocketAddr, TcpListener};

/// A port that was free a moment ago on 127.0.0.1 (for processes we do not control, such as
/// Envoy; our own servers bind port 0 directly instead).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A bound tokio listener on 127.0.0.1 with an OS-chosen port.
pub async fn bind_local() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    (listener, addr)
}
