//! Request context: hands each callback to the core [`Flow`] with a [`Host`] over hostcalls.

use super::headers::Headers;
use super::VmShared;
use crate::flow::{Flow, Next};
use crate::host::{Host, Level};
use crate::keys::{self, KeyRing};
use crate::metrics::Metric;
use crate::sidecar::Call;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;

pub struct Http {
    context_id: u32,
    shared: Option<Rc<VmShared>>,
    flow: Option<Flow>,
}

impl Http {
    pub fn new(context_id: u32, shared: Option<Rc<VmShared>>) -> Http {
        let flow = shared.as_ref().map(|s| Flow::new(Rc::clone(&s.cfg)));
        Http {
            context_id,
            shared,
            flow,
        }
    }

    fn parts(&mut self) -> Option<(&mut Flow, WasmHost<'_>)> {
        let shared = self.shared.as_deref()?;
        let flow = self.flow.as_mut()?;
        Some((
            flow,
            WasmHost {
                shared,
                context_id: self.context_id,
                headers: std::cell::OnceCell::new(),
                now: std::cell::OnceCell::new(),
            },
        ))
    }
}

/// [`Host`] over hostcalls for one request.
struct WasmHost<'a> {
    shared: &'a VmShared,
    context_id: u32,
    /// All request headers, fetched with one hostcall on first use (cheaper than one hostcall
    /// per header on the 402 path, which reads nine) and searched in place.
    headers: std::cell::OnceCell<Headers>,
    /// The time, read once per callback (the flow and the key ring both ask on the 402 path).
    now: std::cell::OnceCell<u64>,
}

impl Host for WasmHost<'_> {
    fn now_unix(&self) -> u64 {
        *self.now.get_or_init(super::now_unix)
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .get_or_init(Headers::fetch)
            .get(name)
            .map(<[u8]>::to_vec)
    }

    fn remove_request_header(&mut self, name: &str) {
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
        if let Some(headers) = self.headers.get_mut() {
            headers.edit(name, None);
        }
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
        if let Some(headers) = self.headers.get_mut() {
            headers.edit(name, Some(value.as_bytes()));
        }
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn key_ring(&mut self) -> Option<Rc<KeyRing>> {
        let now = self.now_unix();
        let cached = self.shared.cache.borrow().clone();
        if let Some(ring) = cached.filter(|r| r.issuing(now).is_some()) {
            return Some(ring);
        }
        // The root syncs once per tick; between ticks read the shared copy directly.
        let key = format!(
            "{}{}",
            keys::SHARED_KEY_PREFIX,
            self.shared.cfg.sidecar.cluster
        );
        let (bytes, _) = hostcalls::get_shared_data(&key).ok()?;
        let ring = Rc::new(KeyRing::decode(&bytes?)?);
        *self.shared.cache.borrow_mut() = Some(Rc::clone(&ring));
        Some(ring)
    }

    fn pass_book(&self) -> Option<Rc<std::cell::RefCell<crate::passbook::PassBook>>> {
        Some(Rc::clone(&self.shared.passes))
    }

    fn pop_session(
        &mut self,
        pool_key: &str,
        now: u64,
        min_left: u64,
        ring: &KeyRing,
    ) -> Option<crate::pool::Session> {
        crate::pool::pop(&mut super::HostShared, pool_key, now, min_left, ring)
    }

    fn source_address(&self) -> Option<String> {
        // The downstream peer, or the client Envoy derived from x-forwarded-for when its
        // connection manager is told to trust it (use_remote_address, xff_num_trusted_hops).
        let bytes = hostcalls::get_property(vec!["source", "address"]).ok()??;
        String::from_utf8(bytes).ok()
    }

    fn random_nonce(&mut self) -> Option<[u8; 16]> {
        self.shared
            .nonces
            .borrow_mut()
            .take(|batch| getrandom::getrandom(batch).is_ok())
    }

    fn dispatch(&mut self, call: &Call) -> Result<u32, String> {
        super::dispatch(call)
    }

    fn dispatch_detached(&mut self, call: &Call) -> Result<(), String> {
        // Make the call on behalf of the root context so that it survives this stream: Envoy
        // cancels a context's pending calls when the context goes away.
        let switched = hostcalls::set_effective_context(self.shared.root_id).is_ok();
        let result = super::dispatch(call);
        if switched {
            let _ = hostcalls::set_effective_context(self.context_id);
        }
        result.map(|_| ())
    }

    fn outcome_queue(&self) -> Option<Rc<crate::outcomes::Queue>> {
        Some(Rc::clone(&self.shared.outcomes))
    }

    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let _ = hostcalls::send_http_response(status, headers.to_vec(), Some(body));
    }

    fn resume_request(&mut self) {
        let _ = hostcalls::resume_http_request();
    }

    fn count(&mut self, metric: Metric) {
        self.shared.metrics.count(metric);
    }

    fn log_enabled(&self, level: Level) -> bool {
        self.shared.metrics.log.enabled(level)
    }

    fn log(&self, level: Level, message: &str) {
        self.shared.metrics.log.log(level, message);
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some((flow, mut host)) = self.parts() else {
            return;
        };
        let status = super::call_status();
        let verdict = hostcalls::get_map_value_bytes(
            MapType::HttpCallResponseHeaders,
            nanogate_protocol::contract::headers::VERDICT,
        )
        .ok()
        .flatten();
        let body = super::call_body(body_size);
        flow.on_sidecar_answer(
            &mut host,
            token_id,
            status,
            verdict.as_deref(),
            body.as_deref(),
        );
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.parts() {
            Some((flow, mut host)) => match flow.on_request_headers(&mut host) {
                Next::Continue => Action::Continue,
                Next::Pause => Action::Pause,
            },
            None => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some((flow, mut host)) = self.parts().filter(|(f, _)| f.wants_response_status()) {
            let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
                .ok()
                .flatten()
                .and_then(|s| s.trim().parse().ok());
            flow.on_response_headers(&mut host, status);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some((flow, mut host)) = self.parts() {
            flow.on_done(&mut host);
        }
    }
}
