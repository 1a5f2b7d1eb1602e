//! The browser paywall in headless Chromium (Debian's `/usr/bin/chromium`, installed by
//! `cargo xtask test`): a browser navigating to a tagged route gets the self-contained 402 page;
//! it renders, its QR code (drawn by the page's own encoder) decodes to the `nano:` payment URI
//! it shows; after a devnet payment of exactly that amount to that account, the page reaches
//! the resource by itself. Driven over the DevTools protocol ([`nanogate_tests::browser`]).

use nanogate_protocol::nano::PublicKey;
use nanogate_tests::browser::{Browser, Page};
use nanogate_tests::stack::{Stack, StackConfig};
use serde_json::{json, Value};
use std::time::Duration;

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
    if let Err(html) = page
        .navigate_until(
            &url,
            "document.body && document.body.getAttribute('data-state')",
            &json!("waiting"),
            Duration::from_secs(30),
        )
        .await
    {
        panic!("the paywall never rendered: {html}\n{}", s.diagnostics());
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
