//! The filter's own work per request on its hot paths, natively (criterion): an unpaid request
//! answered with a 402 (route match, resource URL, MAC, JSON, base64), a request on a free
//! route (route match only), and a paid request up to its `/v1/pay` call (decode the payment,
//! authenticate its challenge, build the call). The host is a minimal in-memory one, so this measures the
//! filter's code without Envoy's hostcalls; `cargo xtask bench` puts both beside the Envoy cases
//! that include them (rows C and D).
//!
//! `cargo bench -p nanogate-filter --bench edge` (add `-- --quick` for a short pass). For an
//! instruction profile per function, run the bench binary under
//! `valgrind --tool=callgrind` with `--bench --profile-time 5 filter_402`.

use criterion::{criterion_group, criterion_main, Criterion};
use nanogate_filter::config;
use nanogate_filter::flow::{Flow, Next};
use nanogate_filter::host::{Host, Level};
use nanogate_filter::keys::{IdKey, KeyRing};
use nanogate_filter::metrics::Metric;
use nanogate_filter::sidecar::Call;
use nanogate_protocol::challenge::ChallengeKey;
use nanogate_protocol::nano::{BlockHash, PublicKey, Signature, StateBlock};
use nanogate_protocol::x402::{encode_header, PaymentRequired};
use serde_json::json;
use std::hint::black_box;
use std::rc::Rc;

const CONFIG: &str = r#"{
  "sidecar": {"cluster": "nanogate_sidecar", "authority": "nanogate-sidecar", "timeoutMs": 10000,
              "secret": "0123456789abcdef0123456789abcdef"},
  "network": "nano:devnet",
  "payTo": "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc",
  "routes": [
    {"name": "free", "path": {"exact": "/paid/free"}, "free": true},
    {"name": "paid", "path": {"prefix": "/paid/"}, "price": "0.001",
     "description": "Paid demo resource", "mimeType": "application/json", "maxTimeoutSeconds": 120}
  ]
}"#;

/// What Envoy would hand the filter: the request headers, a clock, a key, randomness.
struct Bench {
    headers: Vec<(String, Vec<u8>)>,
    ring: Rc<KeyRing>,
    nonce: u8,
    sent: usize,
    /// The last local reply's body, and how many calls were dispatched.
    body: Vec<u8>,
    calls: usize,
}

impl Host for Bench {
    fn now_unix(&self) -> u64 {
        1_800_000_000
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    fn remove_request_header(&mut self, _: &str) {}
    fn set_request_header(&mut self, _: &str, _: &str) {}
    fn add_response_header(&mut self, _: &str, _: &str) {}
    fn key_ring(&mut self) -> Option<Rc<KeyRing>> {
        Some(Rc::clone(&self.ring))
    }
    fn random_nonce(&mut self) -> Option<[u8; 16]> {
        self.nonce = self.nonce.wrapping_add(1);
        Some([self.nonce; 16])
    }
    fn dispatch(&mut self, _: &Call) -> Result<u32, String> {
        self.calls += 1;
        Ok(1)
    }
    fn dispatch_detached(&mut self, _: &Call) -> Result<(), String> {
        Ok(())
    }
    fn send_response(&mut self, _: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.sent += headers.len() + body.len();
        self.body = body.to_vec();
    }
    fn resume_request(&mut self) {}
    fn count(&mut self, _: Metric) {}
    fn log_enabled(&self, _: Level) -> bool {
        false
    }
    fn log(&self, _: Level, _: &str) {}
}

fn host(path: &str) -> Bench {
    let headers = [
        (":authority", "127.0.0.1:10000"),
        (":path", path),
        (":method", "GET"),
        (":scheme", "http"),
        ("user-agent", "wrk"),
    ];
    Bench {
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        ring: Rc::new(KeyRing {
            current: IdKey {
                key_id: 10,
                key: ChallengeKey([7; 32]),
            },
            not_after: 1_900_000_000,
            previous: None,
            retired: Vec::new(),
            pass_keys: Vec::new(),
        }),
        nonce: 0,
        sent: 0,
        body: Vec::new(),
        calls: 0,
    }
}

/// A `PAYMENT-SIGNATURE` answering the 402 the filter gave `unpaid` (the filter checks the
/// payment's shape and its challenge; the block's signature and work are the sidecar's job).
fn payment_for(unpaid: &Bench) -> String {
    let pr: PaymentRequired = serde_json::from_slice(&unpaid.body).expect("a 402 body");
    let block = StateBlock {
        account: PublicKey([1; 32]),
        previous: BlockHash([2; 32]),
        representative: PublicKey([1; 32]),
        balance: 1_000_000,
        link: [3; 32],
        signature: Signature([4; 64]),
        work: 5,
    };
    encode_header(&json!({
        "x402Version": 2,
        "resource": pr.resource,
        "accepted": pr.accepts[0],
        "payload": {"block": block.to_json()},
    }))
}

fn edge(c: &mut Criterion) {
    let cfg = Rc::new(config::parse(CONFIG.as_bytes()).expect("the bench configuration parses"));
    let mut unpaid = host("/paid/report?id=42");
    c.bench_function("filter_402", |b| {
        b.iter(|| {
            let mut flow = Flow::new(Rc::clone(&cfg));
            assert_eq!(flow.on_request_headers(black_box(&mut unpaid)), Next::Pause);
        })
    });
    // A 402 of our own to answer (made here: a filtered run may skip the 402 case).
    let mut issued = host("/paid/report?id=42");
    Flow::new(Rc::clone(&cfg)).on_request_headers(&mut issued);
    let mut paid = host("/paid/report?id=42");
    paid.headers.push((
        "payment-signature".into(),
        payment_for(&issued).into_bytes(),
    ));
    c.bench_function("filter_paid_presented", |b| {
        b.iter(|| {
            let mut flow = Flow::new(Rc::clone(&cfg));
            assert_eq!(flow.on_request_headers(black_box(&mut paid)), Next::Pause);
        })
    });
    assert!(paid.calls > 0, "the payment went to the sidecar");
    let mut free = host("/paid/free");
    c.bench_function("filter_free_route", |b| {
        b.iter(|| {
            let mut flow = Flow::new(Rc::clone(&cfg));
            assert_eq!(
                flow.on_request_headers(black_box(&mut free)),
                Next::Continue
            );
        })
    });
}

criterion_group!(benches, edge);
criterion_main!(benches);
