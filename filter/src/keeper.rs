//! Keeping the challenge key: each VM's root context runs a [`KeyKeeper`]. On configure and on
//! every tick it copies the shared key ring into its VM-local cache and, when no key is held or
//! the key's `notAfter` is near (`keys::REFRESH_LEAD_SECS`), one VM (elected by a lease in shared data) fetches
//! `GET /v1/challenge-key` and publishes the new ring to every VM.

use crate::config::Config;
use crate::host::{Level, RootHost};
use crate::keys::{self, KeyRing};
use crate::metrics::Metric;
use crate::sidecar;
use std::cell::RefCell;
use std::rc::Rc;

/// The VM-local copy of the key ring, shared by the root context with its request contexts.
pub type KeyCache = Rc<RefCell<Option<Rc<KeyRing>>>>;

pub struct KeyKeeper {
    cfg: Rc<Config>,
    cache: KeyCache,
    pending: Option<u32>,
    /// Consecutive failures, to log the first one of a streak at warn and the rest at debug.
    failures: u32,
    /// Inside [`KeyKeeper::start`].
    starting: bool,
    /// Whether this keeper holds the fetch lease.
    holds_lease: bool,
}

impl KeyKeeper {
    pub fn new(cfg: Rc<Config>, cache: KeyCache) -> KeyKeeper {
        KeyKeeper {
            cfg,
            cache,
            pending: None,
            failures: 0,
            starting: false,
            holds_lease: false,
        }
    }

    fn shared_key(&self) -> String {
        format!("{}{}", keys::SHARED_KEY_PREFIX, self.cfg.sidecar.cluster)
    }

    fn lease_key(&self) -> String {
        format!("{}{}", keys::SHARED_LEASE_PREFIX, self.cfg.sidecar.cluster)
    }

    /// Copies the shared ring into the local cache; returns it.
    pub fn sync<H: RootHost + ?Sized>(&mut self, host: &H) -> Option<KeyRing> {
        let (bytes, _) = host.shared_get(&self.shared_key());
        let ring = bytes.as_deref().and_then(KeyRing::decode);
        if let Some(ring) = ring {
            *self.cache.borrow_mut() = Some(Rc::new(ring));
        }
        self.cache.borrow().as_deref().cloned()
    }

    /// Called at configure time: every VM fetches at once, without the lease. Envoy creates
    /// short-lived VMs while loading the configuration; one that took the lease and died would
    /// block the fetch until the lease expired. A failure to even dispatch here is expected
    /// under `envoy --mode validate` (no cluster manager), so it is logged at debug only; the
    /// ticks retry and report.
    pub fn start<H: RootHost + ?Sized>(&mut self, host: &mut H) {
        self.starting = true;
        self.tick(host);
        self.starting = false;
    }

    /// Called on every tick.
    pub fn tick<H: RootHost + ?Sized>(&mut self, host: &mut H) {
        let now = host.now_unix();
        let ring = self.sync(host);
        if self.pending.is_some() || ring.as_ref().is_some_and(|r| !r.refresh_due(now)) {
            return;
        }
        if !self.starting {
            // Elect one fetcher: take the lease if it is free.
            let lease_key = self.lease_key();
            let (lease, cas) = host.shared_get(&lease_key);
            if keys::lease_held(lease.as_deref(), now) {
                return;
            }
            let timeout_secs = self.cfg.sidecar.control_timeout.as_secs().saturating_add(1);
            let until = now.saturating_add(timeout_secs);
            if !host.shared_set(&lease_key, &keys::encode_lease(until), cas) {
                return; // Another VM won.
            }
            self.holds_lease = true;
        }
        match host.dispatch(&sidecar::key_call(&self.cfg.sidecar)) {
            Ok(token) => self.pending = Some(token),
            Err(e) => {
                self.release_lease(host);
                let what = format!("cannot call cluster `{}`: {e}", self.cfg.sidecar.cluster);
                if self.starting {
                    host.log(
                        Level::Debug,
                        &format!("nanogate: key fetch at start: {what}"),
                    );
                } else {
                    self.failed(host, &what);
                }
            }
        }
    }

    /// Whether `token` is this keeper's call.
    pub fn owns(&self, token: u32) -> bool {
        self.pending == Some(token)
    }

    /// The answer to the key fetch.
    pub fn on_answer<H: RootHost + ?Sized>(
        &mut self,
        host: &mut H,
        token: u32,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) {
        if self.pending != Some(token) {
            return;
        }
        self.pending = None;
        let result = if sidecar::is_ok(status) {
            keys::parse_key_response(body.unwrap_or_default())
        } else {
            Err("the sidecar did not answer 200")
        };
        match result {
            Ok(answer) => {
                let shared_key = self.shared_key();
                // Rotate on top of what is shared now (another VM may have written since).
                for _ in 0..3 {
                    let (bytes, cas) = host.shared_get(&shared_key);
                    let old = bytes.as_deref().and_then(KeyRing::decode);
                    let mut ring = KeyRing::rotate(
                        old.as_ref(),
                        answer.current.clone(),
                        answer.not_after,
                        answer.previous.clone(),
                        answer.retired.clone(),
                    );
                    ring.pass_keys = answer.pass_keys.clone();
                    if host.shared_set(&shared_key, &ring.encode(), cas) {
                        *self.cache.borrow_mut() = Some(Rc::new(ring));
                        break;
                    }
                }
                if self.failures > 0 {
                    host.log(Level::Info, "nanogate: challenge key fetched again");
                }
                self.failures = 0;
                // Key ids are not secret; they help to follow rotations.
                host.log(
                    Level::Debug,
                    &format!("nanogate: challenge key id {}", answer.current.key_id),
                );
            }
            Err(why) => {
                let what = match status {
                    Some(s) => format!("{why} (status {s})"),
                    None => why.to_owned(),
                };
                self.failed(host, &what);
            }
        }
        self.release_lease(host);
    }

    fn release_lease<H: RootHost + ?Sized>(&mut self, host: &mut H) {
        if !std::mem::take(&mut self.holds_lease) {
            return;
        }
        let lease_key = self.lease_key();
        let (_, cas) = host.shared_get(&lease_key);
        let _ = host.shared_set(&lease_key, &keys::encode_lease(0), cas);
    }

    fn failed<H: RootHost + ?Sized>(&mut self, host: &mut H, what: &str) {
        host.count(Metric::KeyFetchErrors);
        let level = if self.failures == 0 {
            Level::Warn
        } else {
            Level::Debug
        };
        self.failures = self.failures.saturating_add(1);
        host.log(
            level,
            &format!("nanogate: challenge key fetch from the sidecar failed: {what}; paid routes answer 503 until it succeeds"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::Call;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mock {
        now: u64,
        shared: HashMap<String, (Vec<u8>, u32)>,
        calls: Vec<Call>,
        next_token: u32,
        fail_dispatch: bool,
        counts: Vec<Metric>,
        logs: Vec<(Level, String)>,
    }

    impl RootHost for Mock {
        fn now_unix(&self) -> u64 {
            self.now
        }
        fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.shared.get(key) {
                Some((v, c)) => (Some(v.clone()), Some(*c)),
                None => (None, None),
            }
        }
        fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let cur = self.shared.get(key).map(|(_, c)| *c);
            if cas.is_some() && cas != cur {
                return false;
            }
            let next = cur.unwrap_or(0) + 1;
            self.shared.insert(key.to_owned(), (value.to_vec(), next));
            true
        }
        fn dispatch(&mut self, call: &Call) -> Result<u32, String> {
            if self.fail_dispatch {
                return Err("BadArgument".into());
            }
            self.calls.push(call.clone());
            self.next_token += 1;
            Ok(self.next_token)
        }
        fn count(&mut self, metric: Metric) {
            self.counts.push(metric);
        }
        fn log(&self, _level: Level, _message: &str) {}
    }

    fn cfg() -> Rc<Config> {
        Rc::new(crate::tests_support::config())
    }

    const KEY_BODY: &[u8] =
        br#"{"keyId":7,"key":"0101010101010101010101010101010101010101010101010101010101010101","notAfter":1000}"#;

    #[test]
    fn fetches_once_publishes_and_refreshes_at_not_after() {
        let mut h = Mock {
            now: 900,
            ..Mock::default()
        };
        let cache: KeyCache = Rc::default();
        let mut k = KeyKeeper::new(cfg(), cache.clone());
        k.tick(&mut h);
        assert_eq!(h.calls.len(), 1);
        let call = &h.calls[0];
        assert!(call
            .headers
            .contains(&(":path".into(), "/v1/challenge-key".into())));
        assert!(call.headers.iter().any(|(n, _)| n == "x-nanogate-secret"));
        // A second VM sees the lease and does not fetch.
        let mut k2 = KeyKeeper::new(cfg(), Rc::default());
        k2.tick(&mut h);
        assert_eq!(h.calls.len(), 1);
        // Pending: no second call from the same VM either.
        k.tick(&mut h);
        assert_eq!(h.calls.len(), 1);
        k.on_answer(&mut h, 1, Some(200), Some(KEY_BODY));
        assert_eq!(cache.borrow().as_ref().map(|r| r.current.key_id), Some(7));
        // The other VM picks it up from shared data on its next tick, without a call.
        k2.tick(&mut h);
        assert_eq!(
            k2.cache.borrow().as_ref().map(|r| r.current.key_id),
            Some(7)
        );
        assert_eq!(h.calls.len(), 1);
        // At notAfter a refresh is due; the lease was released.
        h.now = 1000;
        k2.tick(&mut h);
        assert_eq!(h.calls.len(), 2);
        let next = br#"{"keyId":8,"key":"0202020202020202020202020202020202020202020202020202020202020202","notAfter":2000}"#;
        k2.on_answer(&mut h, 2, Some(200), Some(next));
        k.tick(&mut h);
        let ring = cache.borrow().clone().unwrap();
        assert_eq!(ring.current.key_id, 8);
        assert_eq!(ring.previous.as_ref().map(|p| p.key_id), Some(7));
    }

    #[test]
    fn every_vm_fetches_at_start_without_the_lease() {
        let mut h = Mock {
            now: 900,
            ..Mock::default()
        };
        // A VM that died holding the lease (Envoy's short-lived configuration VMs).
        let lease = format!("{}nanogate_sidecar", keys::SHARED_LEASE_PREFIX);
        h.shared_set(&lease, &keys::encode_lease(905), None);
        let mut a = KeyKeeper::new(cfg(), Rc::default());
        let mut b = KeyKeeper::new(cfg(), Rc::default());
        a.start(&mut h);
        b.start(&mut h);
        assert_eq!(h.calls.len(), 2);
        a.on_answer(&mut h, 1, Some(200), Some(KEY_BODY));
        assert!(a.cache.borrow().is_some());
        // The foreign lease was neither taken nor released.
        assert_eq!(
            h.shared_get(&lease).0,
            Some(keys::encode_lease(905).to_vec())
        );
        b.on_answer(&mut h, 2, Some(200), Some(KEY_BODY));
        assert_eq!(
            h.shared_get(&lease).0,
            Some(keys::encode_lease(905).to_vec())
        );
    }

    #[test]
    fn failures_are_counted_and_retried() {
        let mut h = Mock {
            now: 5,
            ..Mock::default()
        };
        let mut k = KeyKeeper::new(cfg(), Rc::default());
        k.tick(&mut h);
        k.on_answer(&mut h, 1, Some(503), Some(b"upstream connect error"));
        assert_eq!(h.counts, vec![Metric::KeyFetchErrors]);
        k.tick(&mut h);
        assert_eq!(h.calls.len(), 2);
        k.on_answer(&mut h, 2, Some(200), Some(b"{\"keyId\":1}"));
        assert_eq!(h.counts.len(), 2);
        h.fail_dispatch = true;
        // At start (e.g. under `envoy --mode validate`) a dispatch failure is not reported...
        k.start(&mut h);
        assert_eq!(h.counts.len(), 2);
        // ...but on a tick it is.
        k.tick(&mut h);
        assert_eq!(h.counts.len(), 3);
        assert!(k.cache.borrow().is_none());
        // A stray token is ignored.
        k.on_answer(&mut h, 99, Some(200), Some(KEY_BODY));
        assert!(k.cache.borrow().is_none());
    }

    #[test]
    fn key_material_never_reaches_the_logs() {
        let mut h = Mock::default();
        let logs: Rc<RefCell<Vec<String>>> = Rc::default();
        struct Logging<'a>(&'a mut Mock, Rc<RefCell<Vec<String>>>);
        impl RootHost for Logging<'_> {
            fn now_unix(&self) -> u64 {
                self.0.now_unix()
            }
            fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                self.0.shared_get(key)
            }
            fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
                self.0.shared_set(key, value, cas)
            }
            fn dispatch(&mut self, call: &Call) -> Result<u32, String> {
                self.0.dispatch(call)
            }
            fn count(&mut self, metric: Metric) {
                self.0.count(metric)
            }
            fn log(&self, _level: Level, message: &str) {
                self.1.borrow_mut().push(message.to_owned());
            }
        }
        let mut lh = Logging(&mut h, logs.clone());
        let mut k = KeyKeeper::new(cfg(), Rc::default());
        k.tick(&mut lh);
        k.on_answer(&mut lh, 1, Some(200), Some(KEY_BODY));
        k.tick(&mut lh);
        let bad = br#"{"keyId":7,"key":"0101010101010101010101010101010101010101010101010101010101010101"}"#;
        lh.0.now = 2000;
        k.tick(&mut lh);
        k.on_answer(&mut lh, 2, Some(200), Some(bad));
        let all = logs.borrow().join("\n");
        assert!(!all.contains("0101010101"), "{all}");
        assert!(!all.contains("0123456789abcdef"), "{all}");
        let _ = &mut h.logs;
    }
}
