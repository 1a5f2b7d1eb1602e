//! Test helpers: a reference configuration and a recording mock of the [`Host`].

use crate::config::{self, Config, Price, RouteKind};
use crate::host::{Host, Level};
use crate::keys::{IdKey, KeyRing};
use crate::metrics::Metric;
use crate::pool::SharedData;
use crate::sidecar::Call;
use nanogate_protocol::challenge::ChallengeKey;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

pub const PAY_TO: &str = "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc";
pub const SECRET: &str = "0123456789abcdef-test-secret";

pub fn config_json() -> Value {
    json!({
        "sidecar": {"cluster": "nanogate_sidecar", "authority": "sidecar.local", "secret": SECRET, "timeoutMs": 3000},
        "network": "nano:devnet",
        "payTo": PAY_TO,
        "retryAfterSeconds": 3,
        "routes": [
            {"name": "health", "path": {"exact": "/paid/health"}, "free": true},
            {"name": "report", "path": {"prefix": "/paid/"}, "price": "0.001",
             "description": "Premium report", "mimeType": "application/json", "maxTimeoutSeconds": 60},
            {"name": "open", "path": {"prefix": "/open/"}, "priceRaw": "1000", "failureMode": "open"}
        ]
    })
}

pub fn config() -> Config {
    config::parse(config_json().to_string().as_bytes()).expect("test config parses")
}

pub fn ring(key_id: u64, not_after: u64) -> KeyRing {
    KeyRing {
        current: IdKey {
            key_id,
            key: ChallengeKey([7; 32]),
        },
        not_after,
        previous: Some(IdKey {
            key_id: key_id.saturating_sub(1),
            key: ChallengeKey([6; 32]),
        }),
        pass_keys: Vec::new(),
        retired: Vec::new(),
    }
}

/// A local reply: status, headers, body.
pub type Reply = (u32, Vec<(String, String)>, Vec<u8>);

/// Everything a [`Flow`](crate::flow::Flow) did to its host.
#[derive(Debug, Default)]
pub struct MockHost {
    pub now: u64,
    pub request_headers: BTreeMap<String, Vec<u8>>,
    pub ring: Option<KeyRing>,
    pub no_random: bool,
    pub nonce_counter: u8,
    pub dispatch_fails: bool,
    pub calls: Vec<Call>,
    pub detached: Vec<Call>,
    pub responses: Vec<Reply>,
    pub response_headers_added: Vec<(String, String)>,
    pub removed: Vec<String>,
    /// Request headers set for the upstream, in order.
    pub set: Vec<(String, String)>,
    pub resumed: u32,
    pub counts: Vec<Metric>,
    pub logs: std::cell::RefCell<Vec<String>>,
    /// What `source_address` answers.
    pub source: Option<String>,
    /// Shared data: the tagged routes' session pools.
    pub shared: MemShared,
    /// The VM's outcome queue (`None`: a host without one, which reports at once).
    pub outcomes: Option<std::rc::Rc<crate::outcomes::Queue>>,
}

impl MockHost {
    pub fn new(now: u64) -> MockHost {
        MockHost {
            now,
            ring: Some(ring(10, now + 600)),
            outcomes: Some(Default::default()),
            ..MockHost::default()
        }
    }

    pub fn request(mut self, method: &str, authority: &str, path: &str) -> MockHost {
        self.request_headers
            .insert(":method".into(), method.as_bytes().to_vec());
        self.request_headers
            .insert(":authority".into(), authority.as_bytes().to_vec());
        self.request_headers
            .insert(":path".into(), path.as_bytes().to_vec());
        self.request_headers
            .insert(":scheme".into(), b"http".to_vec());
        self
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> MockHost {
        self.request_headers
            .insert(name.to_ascii_lowercase(), value.as_ref().to_vec());
        self
    }

    pub fn count_of(&self, m: Metric) -> usize {
        self.counts.iter().filter(|&&c| c == m).count()
    }

    /// The one local reply, if any.
    pub fn reply(&self) -> Option<&Reply> {
        assert!(self.responses.len() <= 1, "more than one local reply");
        self.responses.first()
    }

    pub fn reply_header(&self, name: &str) -> Option<String> {
        self.reply().and_then(|(_, h, _)| {
            h.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        })
    }
}

impl Host for MockHost {
    fn now_unix(&self) -> u64 {
        self.now
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.request_headers
            .get(&name.to_ascii_lowercase())
            .cloned()
    }
    fn remove_request_header(&mut self, name: &str) {
        self.request_headers.remove(&name.to_ascii_lowercase());
        self.removed.push(name.to_owned());
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.request_headers
            .insert(name.to_ascii_lowercase(), value.as_bytes().to_vec());
        self.set.push((name.to_owned(), value.to_owned()));
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        self.response_headers_added
            .push((name.to_owned(), value.to_owned()));
    }
    fn key_ring(&mut self) -> Option<std::rc::Rc<KeyRing>> {
        self.ring.clone().map(std::rc::Rc::new)
    }
    fn source_address(&self) -> Option<String> {
        self.source.clone()
    }
    fn pop_session(
        &mut self,
        pool_key: &str,
        now: u64,
        min_left: u64,
        ring: &KeyRing,
    ) -> Option<crate::pool::Session> {
        crate::pool::pop(&mut self.shared, pool_key, now, min_left, ring)
    }
    fn outcome_queue(&self) -> Option<std::rc::Rc<crate::outcomes::Queue>> {
        self.outcomes.clone()
    }
    fn random_nonce(&mut self) -> Option<[u8; 16]> {
        if self.no_random {
            return None;
        }
        self.nonce_counter = self.nonce_counter.wrapping_add(1);
        Some([self.nonce_counter; 16])
    }
    fn dispatch(&mut self, call: &Call) -> Result<u32, String> {
        if self.dispatch_fails {
            return Err("BadArgument".into());
        }
        self.calls.push(call.clone());
        Ok(40 + self.calls.len() as u32)
    }
    fn dispatch_detached(&mut self, call: &Call) -> Result<(), String> {
        if self.dispatch_fails {
            return Err("BadArgument".into());
        }
        self.detached.push(call.clone());
        Ok(())
    }
    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.responses.push((
            status,
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body.to_vec(),
        ));
    }
    fn resume_request(&mut self) {
        self.resumed += 1;
    }
    fn count(&mut self, metric: Metric) {
        self.counts.push(metric);
    }
    fn log_enabled(&self, _level: Level) -> bool {
        true
    }
    fn log(&self, _level: Level, message: &str) {
        self.logs.borrow_mut().push(message.to_owned());
    }
}

/// Shared data in memory, with compare-and-swap like proxy-wasm's.
#[derive(Debug, Default)]
pub struct MemShared {
    map: HashMap<String, (Vec<u8>, u32)>,
    /// Fail this many coming writes as if another VM had written in between.
    pub fail_next: usize,
}

impl SharedData for MemShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.map.get(key) {
            Some((v, c)) => (Some(v.clone()), Some(*c)),
            None => (None, None),
        }
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        if self.fail_next > 0 {
            self.fail_next -= 1;
            // Someone else wrote in between.
            let e = self.map.entry(key.into()).or_default();
            e.1 += 1;
            return false;
        }
        let cur = self.map.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != cur {
            return false;
        }
        let next = cur.unwrap_or(0) + 1;
        self.map.insert(key.into(), (value.to_vec(), next));
        true
    }
}

pub const POOL_A: &str = "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc";
pub const POOL_B: &str = "nano_18gmu6engqhgtjnppqam181o5nfhj4sdtgyhy36dan3jr9spt84rzwmktafc";

/// A tagged route `t` over a pool of two payees, and a plain paid route `p`.
pub fn tagged_config() -> Config {
    let cfg = json!({
        "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
        "network": "nano:devnet",
        "payTo": POOL_A,
        "routes": [
            {"name": "t", "path": {"prefix": "/t/"}, "priceRaw": "1000", "tagged": true,
             "payToPool": [POOL_A, POOL_B], "maxTimeoutSeconds": 60},
            {"name": "p", "path": {"prefix": "/p/"}, "priceRaw": "1000"}
        ]
    });
    config::parse(cfg.to_string().as_bytes()).expect("config")
}

/// A configuration with the one route `route`.
pub fn config_with(route: Value) -> Config {
    let cfg = json!({
        "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
        "network": "nano:devnet", "payTo": POOL_A, "routes": [route]
    });
    config::parse(cfg.to_string().as_bytes()).expect("config")
}

/// The price of paid route `i`.
pub fn paid(cfg: &Config, i: usize) -> &Price {
    match &cfg.routes[i].kind {
        RouteKind::Paid(p) => p,
        RouteKind::Free => panic!("route {i} is free"),
    }
}
