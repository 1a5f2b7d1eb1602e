//! The proxy-wasm layer: translates Envoy callbacks into calls on the core modules and the
//! core's [`Host`](crate::host::Host) / [`RootHost`](crate::host::RootHost) requests into
//! hostcalls. Hostcalls are used through `proxy_wasm::hostcalls` (which return `Result`), not
//! the SDK's trait helpers, which `unwrap()` and would trap the VM on a host error.

pub mod headers;
pub mod http_context;
pub mod root_context;

use crate::config::Config;
use crate::host::Level;
use crate::keeper::KeyCache;
use crate::metrics::Metric;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};
use std::rc::Rc;

/// What a VM's root context shares with its request contexts.
pub struct VmShared {
    pub cfg: Rc<Config>,
    pub cache: KeyCache,
    pub metrics: Metrics,
    pub root_id: u32,
    pub nonces: std::cell::RefCell<NoncePool>,
    /// This VM's pass counts and refusals (docs/passes.md).
    pub passes: Rc<std::cell::RefCell<crate::passbook::PassBook>>,
    /// This VM's served outcomes waiting for their batch (sent on the tick or when full).
    pub outcomes: Rc<crate::outcomes::Queue>,
}

/// Challenge nonces drawn from the host's random source a batch at a time: one hostcall per
/// [`NoncePool::BATCH`] bytes instead of one per 402. Nonces need to be unique and
/// unguessable, not secret (each is published in its challenge), so holding some in the VM's
/// memory ahead of use is harmless.
#[derive(Debug, Default)]
pub struct NoncePool {
    bytes: Vec<u8>,
}

impl NoncePool {
    /// Bytes fetched per refill: 64 nonces.
    pub const BATCH: usize = 1024;

    /// The next nonce, refilling through `fill` (which reports success) when empty.
    pub fn take(&mut self, fill: impl FnOnce(&mut [u8]) -> bool) -> Option<[u8; 16]> {
        if self.bytes.len() < 16 {
            let mut batch = vec![0u8; Self::BATCH];
            if !fill(&mut batch) {
                return None;
            }
            self.bytes = batch;
        }
        let at = self.bytes.len() - 16;
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(self.bytes.get(at..)?);
        self.bytes.truncate(at);
        Some(nonce)
    }
}

/// Metric ids, defined once per VM.
#[derive(Default)]
pub struct Metrics {
    ids: Vec<Option<u32>>,
    pub log: LogGate,
    /// Challenges issued since the last tick: the 402 path's only counter is added to Envoy's
    /// once per tick ([`Metrics::flush`]) rather than with a hostcall per 402.
    challenges: std::cell::Cell<u64>,
}

impl Metrics {
    pub fn define() -> Metrics {
        let ids = Metric::all()
            .into_iter()
            .map(|m| hostcalls::define_metric(MetricType::Counter, &m.name()).ok())
            .collect();
        Metrics {
            ids,
            log: LogGate::from_host(),
            challenges: std::cell::Cell::new(0),
        }
    }

    pub fn count(&self, metric: Metric) {
        if metric == Metric::ChallengesIssued {
            self.challenges.set(self.challenges.get() + 1);
        } else {
            self.add(metric, 1);
        }
    }

    /// Adds what was counted since the last tick to Envoy's counters (on every tick).
    pub fn flush(&self) {
        let n = self.challenges.replace(0);
        if n > 0 {
            self.add(Metric::ChallengesIssued, n);
        }
    }

    fn add(&self, metric: Metric, n: u64) {
        if let Some(Some(id)) = self.ids.get(metric.index()) {
            let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// The host's log level for this plugin (re-read on every tick, so `/logging` changes apply):
/// logs below it are never formatted.
pub struct LogGate {
    min: std::cell::Cell<Level>,
}

impl Default for LogGate {
    fn default() -> Self {
        LogGate {
            min: std::cell::Cell::new(Level::Info),
        }
    }
}

impl LogGate {
    pub fn from_host() -> LogGate {
        let gate = LogGate::default();
        gate.refresh();
        gate
    }

    pub fn refresh(&self) {
        let min = match hostcalls::get_log_level() {
            Ok(LogLevel::Trace | LogLevel::Debug) => Level::Debug,
            Ok(LogLevel::Info) => Level::Info,
            Ok(LogLevel::Warn) => Level::Warn,
            Ok(LogLevel::Error | LogLevel::Critical) => Level::Error,
            Err(_) => Level::Info,
        };
        self.min.set(min);
    }

    pub fn enabled(&self, level: Level) -> bool {
        level >= self.min.get()
    }

    pub fn log(&self, level: Level, message: &str) {
        if self.enabled(level) {
            log(level, message);
        }
    }
}

/// Logs unconditionally (the host filters again).
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    let _ = hostcalls::log(level, message);
}

/// Current unix time in seconds (0 if the host cannot tell, which makes keys look stale:
/// fail closed).
pub fn now_unix() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Proxy-wasm shared data (one store per plugin, shared by every VM on every worker).
pub struct HostShared;

impl crate::pool::SharedData for HostShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

/// `dispatch_http_call` for a core [`Call`](crate::sidecar::Call).
pub fn dispatch(call: &crate::sidecar::Call) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    hostcalls::dispatch_http_call(
        &call.cluster,
        headers,
        call.body.as_deref(),
        vec![],
        call.timeout,
    )
    .map_err(|s| format!("{s:?}"))
}

/// The status of an HTTP call's answer.
pub fn call_status() -> Option<u32> {
    hostcalls::get_map_value(
        proxy_wasm::types::MapType::HttpCallResponseHeaders,
        ":status",
    )
    .ok()
    .flatten()
    .and_then(|s| s.trim().parse().ok())
}

/// The body of an HTTP call's answer, capped.
pub fn call_body(size: usize) -> Option<Vec<u8>> {
    let size = size.min(nanogate_protocol::contract::MAX_ANSWER_BYTES);
    if size == 0 {
        return None;
    }
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
}

/// Logs the filter's version, once per VM (at its first `on_vm_start`).
pub fn log_version_once() {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log(Level::Info, &version_line());
    }
}

fn version_line() -> String {
    ["nanogate: filter ", env!("CARGO_PKG_VERSION"), " starting"].concat()
}

/// Makes a panic leave a message: the module aborts on panic (a trap that takes the VM, and
/// every request on its worker, down), and without a hook Envoy only reports the trap.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(
            LogLevel::Critical,
            &panic_line(info.payload(), info.location()),
        );
    }));
}

/// The one log line a panic leaves: where, and its message.
fn panic_line(
    payload: &(dyn std::any::Any + Send),
    location: Option<&std::panic::Location<'_>>,
) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    match location {
        Some(l) => format!(
            "nanogate: panic at {}:{}:{}: {message}",
            l.file(),
            l.line(),
            l.column()
        ),
        None => format!("nanogate: panic: {message}"),
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    install_panic_hook();
    proxy_wasm::set_root_context(|context_id| Box::new(root_context::Root::new(context_id)));
}}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_come_a_batch_per_refill_and_never_repeat() {
        let mut pool = NoncePool::default();
        let mut refills = 0u8;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(NoncePool::BATCH / 16) * 3 {
            let nonce = pool.take(|batch| {
                refills += 1;
                // Distinct per position and refill, like real random bytes would be.
                for (k, chunk) in batch.chunks_mut(16).enumerate() {
                    chunk[0] = k as u8;
                    chunk[1] = refills;
                }
                true
            });
            assert!(seen.insert((refills, nonce.unwrap())));
        }
        assert_eq!(refills, 3);
        // No randomness, no nonce (the flow then answers 503).
        assert_eq!(NoncePool::default().take(|_| false), None);
    }

    #[test]
    fn a_panic_leaves_its_location_and_message() {
        let here = std::panic::Location::caller();
        let line = panic_line(&"index out of bounds", Some(here));
        assert_eq!(
            line,
            format!(
                "nanogate: panic at {}:{}:{}: index out of bounds",
                here.file(),
                here.line(),
                here.column()
            )
        );
        let formatted: String = format!("bad value {}", 7);
        assert_eq!(panic_line(&formatted, None), "nanogate: panic: bad value 7");
        assert_eq!(panic_line(&42u8, None), "nanogate: panic: (no message)");
        // What std hands the hook: the message of a real panic.
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_line(caught.as_ref(), None), "nanogate: panic: boom 1");
    }

    #[test]
    fn the_version_line_names_the_crate_version() {
        assert_eq!(
            version_line(),
            format!("nanogate: filter {} starting", env!("CARGO_PKG_VERSION"))
        );
    }
}
