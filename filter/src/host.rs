//! What the filter's core asks of its host: [`Host`] for a request, [`RootHost`] for the root
//! context. Envoy implements them through proxy-wasm ([`crate::wasm`]); the tests through mocks.

use crate::keys::KeyRing;
use crate::metrics::Metric;
use crate::passbook::PassBook;
use crate::pool::Session;
use crate::sidecar::Call;
use std::cell::RefCell;
use std::rc::Rc;

/// Log levels the core uses (per-request messages are debug only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// What the filter can ask of its host (Envoy through proxy-wasm, or a test mock).
pub trait Host {
    /// Unix time in seconds.
    fn now_unix(&self) -> u64;
    /// A request header's raw value (`:method`, `:path`, … included).
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    fn remove_request_header(&mut self, name: &str);
    /// Sets (replaces) a header of the request forwarded upstream.
    fn set_request_header(&mut self, name: &str, value: &str);
    /// Adds a header to the upstream's response (from the response-headers callback).
    fn add_response_header(&mut self, name: &str, value: &str);
    /// The challenge keys held by this VM, if any.
    fn key_ring(&mut self) -> Option<Rc<KeyRing>>;
    /// 16 random bytes, or `None` when no randomness is available.
    fn random_nonce(&mut self) -> Option<[u8; 16]>;
    /// Takes one pre-issued tagged session from the pool at `pool_key` (shared data) that is
    /// valid for at least `min_left` more seconds and signed with a key `ring` holds. Hosts
    /// without a pool have none.
    fn pop_session(
        &mut self,
        _pool_key: &str,
        _now: u64,
        _min_left: u64,
        _ring: &KeyRing,
    ) -> Option<Session> {
        None
    }
    /// This VM's pass book (docs/passes.md); hosts without one count nothing and refuse no
    /// pass the sidecar listed.
    fn pass_book(&self) -> Option<Rc<RefCell<PassBook>>> {
        None
    }
    /// This VM's queue of served outcomes waiting for their batch ([`crate::outcomes`]);
    /// hosts without one report every outcome at once.
    fn outcome_queue(&self) -> Option<Rc<crate::outcomes::Queue>> {
        None
    }
    /// The client's address as Envoy sees it (`source.address`, `ip:port`), if known.
    fn source_address(&self) -> Option<String> {
        None
    }
    /// Dispatches a call whose answer comes back to this request; returns its token.
    fn dispatch(&mut self, call: &Call) -> Result<u32, String>;
    /// Dispatches a call that must outlive this request (its answer is only counted).
    fn dispatch_detached(&mut self, call: &Call) -> Result<(), String>;
    /// A local reply; the request is not forwarded.
    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Continues a paused request.
    fn resume_request(&mut self);
    fn count(&mut self, metric: Metric);
    fn log_enabled(&self, level: Level) -> bool;
    fn log(&self, level: Level, message: &str);
}

/// What a root context can ask of its host.
pub trait RootHost {
    fn now_unix(&self) -> u64;
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Compare-and-set write; `false` on a CAS mismatch or any failure.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    fn dispatch(&mut self, call: &Call) -> Result<u32, String>;
    fn count(&mut self, metric: Metric);
    fn log(&self, level: Level, message: &str);
}
